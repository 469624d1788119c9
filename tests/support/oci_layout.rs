//! Writes OCI image layouts (image-spec `image-layout.md`) that tools such as
//! skopeo read through their `oci:DIR:TAG` transport:
//!
//! ```text
//! DIR/
//! ├── oci-layout            {"imageLayoutVersion":"1.0.0"}
//! ├── index.json            one descriptor per tag, tag in the
//! │                         org.opencontainers.image.ref.name annotation
//! └── blobs/sha256/<hex>    manifests, indexes, configs and layers
//! ```
//!
//! Content is deterministic (from [`crate::content`]) so a test can recompute
//! and compare every byte it gets back. Layers are valid uncompressed tar
//! archives (`application/vnd.oci.image.layer.v1.tar`) holding one file; the
//! config's `rootfs.diff_ids` are the layers' own digests, as they must be
//! for uncompressed layers. Because the layers are uncompressed, copy them with
//! `--preserve-digests` or tools will compress them (changing every digest).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Annotation that names a tag in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A single-platform image written to a layout.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<hex>` of `manifest`.
    pub manifest_digest: String,
    /// The manifest bytes exactly as written.
    pub manifest: Vec<u8>,
    pub config_digest: String,
    /// In manifest order.
    pub layer_digests: Vec<String>,
    pub architecture: String,
}

impl Image {
    /// The config and layer digests (not the manifest), without duplicates.
    pub fn blob_digests(&self) -> BTreeSet<String> {
        std::iter::once(self.config_digest.clone())
            .chain(self.layer_digests.iter().cloned())
            .collect()
    }
}

/// A multi-platform image index written to a layout.
#[derive(Debug, Clone)]
pub struct ImageIndex {
    /// `sha256:<hex>` of `index`.
    pub index_digest: String,
    /// The index bytes exactly as written.
    pub index: Vec<u8>,
    /// One image per platform, in index order.
    pub images: Vec<Image>,
    /// The layer every platform's image starts with.
    pub shared_layer_digest: String,
}

impl ImageIndex {
    /// Every config and layer digest of every platform, without duplicates.
    pub fn blob_digests(&self) -> BTreeSet<String> {
        self.images.iter().flat_map(Image::blob_digests).collect()
    }

    /// The index and every platform manifest digest.
    pub fn manifest_digests(&self) -> BTreeSet<String> {
        std::iter::once(self.index_digest.clone())
            .chain(self.images.iter().map(|i| i.manifest_digest.clone()))
            .collect()
    }
}

/// Writes a linux/amd64 image tagged `tag` into the layout at `dir` (created
/// if needed; other tags kept): one layer per entry of `layer_sizes`, each a
/// tar archive holding `layer_sizes[i]` bytes of `content("{seed}/layer{i}")`.
pub fn write_image(dir: &Path, tag: &str, seed: &str, layer_sizes: &[usize]) -> Image {
    init_layout(dir);
    let layers: Vec<Vec<u8>> = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let name = format!("{seed}/layer{i}");
            tar_with_one_file(&format!("layer{i}.bin"), &crate::content(&name, len))
        })
        .collect();
    let image = write_platform_image(dir, "amd64", &layers);
    add_to_index(dir, tag, MEDIA_TYPE_MANIFEST, &image.manifest);
    image
}

/// Writes an image index tagged `tag` into the layout at `dir`: linux/amd64
/// and linux/arm64 images, each with its own config and two layers of
/// `layer_size` bytes — a first layer shared by both platforms, then one of
/// its own.
pub fn write_multi_arch(dir: &Path, tag: &str, seed: &str, layer_size: usize) -> ImageIndex {
    init_layout(dir);
    let shared = tar_with_one_file(
        "base.bin",
        &crate::content(&format!("{seed}/shared"), layer_size),
    );
    let mut images = Vec::new();
    let mut descriptors = Vec::new();
    for arch in ["amd64", "arm64"] {
        let own = tar_with_one_file(
            &format!("{arch}.bin"),
            &crate::content(&format!("{seed}/{arch}"), layer_size),
        );
        let image = write_platform_image(dir, arch, &[shared.clone(), own]);
        descriptors.push(json!({
            "mediaType": MEDIA_TYPE_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
        images.push(image);
    }
    let index = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": descriptors,
    }));
    let index_digest = write_blob(dir, &index);
    add_to_index(dir, tag, MEDIA_TYPE_INDEX, &index);
    ImageIndex {
        index_digest,
        index,
        shared_layer_digest: sha256_digest(&shared),
        images,
    }
}

/// Path of the blob file for `digest` (`sha256:<hex>`) in the layout at `dir`.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    dir.join("blobs").join("sha256").join(hex)
}

/// The bytes of blob `digest` in the layout at `dir`.
pub fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let p = blob_path(dir, digest);
    fs::read(&p).unwrap_or_else(|e| panic!("reading blob {digest} at {}: {e}", p.display()))
}

/// The descriptor `index.json` of the layout at `dir` has for `tag`.
pub fn tagged_descriptor(dir: &Path, tag: &str) -> Value {
    let index = read_json(&dir.join("index.json"));
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["annotations"][REF_NAME] == tag)
        .cloned()
        .unwrap_or_else(|| panic!("no tag {tag} in {}/index.json: {index}", dir.display()))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A ustar archive holding one regular file `name` with `data`, followed by
/// the two zero blocks that end an archive.
pub fn tar_with_one_file(name: &str, data: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar name too long: {name}");
    let mut header = [0u8; 512];
    let mut put = |offset: usize, field: &[u8]| {
        header[offset..offset + field.len()].copy_from_slice(field);
    };
    put(0, name.as_bytes());
    put(100, b"0000644\0"); // mode
    put(108, b"0000000\0"); // uid
    put(116, b"0000000\0"); // gid
    put(124, format!("{:011o}\0", data.len()).as_bytes()); // size
    put(136, b"00000000000\0"); // mtime: the epoch, for reproducibility
    put(156, b"0"); // typeflag: regular file
    put(257, b"ustar\0");
    put(263, b"00");
    // The checksum is computed with its own field read as eight spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());

    let padded = data.len().div_ceil(512) * 512;
    let mut out = Vec::with_capacity(512 + padded + 1024);
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out.resize(512 + padded + 1024, 0);
    out
}

/// Writes the config, layers and manifest of one linux image; returns it.
fn write_platform_image(dir: &Path, arch: &str, layers: &[Vec<u8>]) -> Image {
    let layer_digests: Vec<String> = layers.iter().map(|l| write_blob(dir, l)).collect();
    let config = to_bytes(&json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }));
    let config_digest = write_blob(dir, &config);
    let layer_descriptors: Vec<Value> = layers
        .iter()
        .zip(&layer_digests)
        .map(|(l, d)| json!({"mediaType": MEDIA_TYPE_LAYER_TAR, "digest": d, "size": l.len()}))
        .collect();
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layer_descriptors,
    }));
    let manifest_digest = write_blob(dir, &manifest);
    Image {
        manifest_digest,
        manifest,
        config_digest,
        layer_digests,
        architecture: arch.to_string(),
    }
}

/// Creates `dir/oci-layout`, `dir/blobs/sha256/` and an empty `index.json`
/// unless they exist.
fn init_layout(dir: &Path) {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("creating {}: {e}", blobs.display()));
    write_file(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    let index = dir.join("index.json");
    if !index.exists() {
        write_file(
            &index,
            &to_bytes(&json!({"schemaVersion": 2, "manifests": []})),
        );
    }
}

/// Stores `data` as a blob of the layout; returns its digest.
fn write_blob(dir: &Path, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    write_file(&blob_path(dir, &digest), data);
    digest
}

/// Points `tag` in the layout's `index.json` at the manifest (or index)
/// `body`, replacing an earlier descriptor of the same tag.
fn add_to_index(dir: &Path, tag: &str, media_type: &str, body: &[u8]) {
    let path = dir.join("index.json");
    let mut index = read_json(&path);
    let manifests = index["manifests"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("{}: manifests is not an array", path.display()));
    manifests.retain(|d| d["annotations"][REF_NAME] != tag);
    manifests.push(json!({
        "mediaType": media_type,
        "digest": sha256_digest(body),
        "size": body.len(),
        "annotations": {REF_NAME: tag},
    }));
    write_file(&path, &to_bytes(&index));
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn write_file(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializing JSON value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_header_checksum_and_padding() {
        let t = tar_with_one_file("a.bin", b"hello");
        assert_eq!(t.len(), 512 + 512 + 1024);
        let stored = std::str::from_utf8(&t[148..154]).unwrap();
        let mut h = t[..512].to_vec();
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
        assert_eq!(&t[512..517], b"hello");
        assert!(t[517..].iter().all(|&b| b == 0));
    }

    #[test]
    fn layout_is_self_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let img = write_image(dir.path(), "v1", "t", &[10, 600]);
        let idx = write_multi_arch(dir.path(), "multi", "t", 100);
        assert_eq!(
            tagged_descriptor(dir.path(), "v1")["digest"],
            img.manifest_digest
        );
        assert_eq!(
            tagged_descriptor(dir.path(), "multi")["digest"],
            idx.index_digest
        );
        for d in img.blob_digests().iter().chain(&idx.blob_digests()) {
            assert_eq!(&sha256_digest(&read_blob(dir.path(), d)), d);
        }
        // two configs, one shared layer, one own layer per platform
        assert_eq!(idx.blob_digests().len(), 5);
        let m: Value =
            serde_json::from_slice(&read_blob(dir.path(), &img.manifest_digest)).unwrap();
        assert_eq!(m["layers"].as_array().unwrap().len(), 2);
    }
}
