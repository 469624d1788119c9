//! End to end: a real `berth serve` process driven by real skopeo (and, where
//! the exact wire exchange matters, by raw HTTP/1.1).
//!
//! Images come from OCI layouts written by `berth_testkit::oci_layout`; their
//! layers are uncompressed, so every copy runs with `--preserve-digests` (else
//! skopeo would gzip them and change every digest). Each test has its own data
//! directory and its own server. Needs `skopeo` on PATH and the `berth` binary
//! built (`cargo build --workspace --bins`).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use berth_testkit::oci_layout::{self, Image, ImageIndex};
use berth_testkit::server::{header, http, skopeo_ok, TestServer, SKOPEO_GLOBAL};

const MIB: usize = 1 << 20;

/// Flags every skopeo run gets: no signature policy (the registry is a local
/// test server) and a bound on how long a wedged server can stall a test.
/// `skopeo copy` between a layout and the plain-HTTP test registry, digests
/// kept bit for bit.
const COPY: &[&str] = &[
    "copy",
    "--src-tls-verify=false",
    "--dest-tls-verify=false",
    "--preserve-digests",
    "--dest-oci-accept-uncompressed-layers",
];

/// Runs skopeo with `args`; returns its output whatever the exit status.
fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(SKOPEO_GLOBAL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running skopeo (is it installed?): {e}"))
}

fn copy(server: &TestServer, extra: &[&str], src: &str, dest: &str) {
    let mut args = COPY.to_vec();
    args.extend_from_slice(extra);
    args.extend_from_slice(&[src, dest]);
    skopeo_ok(server, &args);
}

/// `skopeo inspect --raw`: the manifest bytes exactly as the registry serves them.
fn inspect_raw(server: &TestServer, image: &str) -> Vec<u8> {
    skopeo_ok(server, &["inspect", "--tls-verify=false", "--raw", image])
}

fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

fn docker_ref(server: &TestServer, repo_and_tag: &str) -> String {
    format!("docker://{}/{repo_and_tag}", server.url())
}

/// Asserts that the layout `got` tags `tag` with `top_digest` and holds every
/// blob in `digests` byte for byte as the layout `want` does.
fn assert_same_blobs(
    want: &Path,
    got: &Path,
    tag: &str,
    top_digest: &str,
    digests: &BTreeSet<String>,
) {
    let descriptor = oci_layout::tagged_descriptor(got, tag);
    assert_eq!(
        descriptor["digest"],
        top_digest,
        "pulled layout {} tags {tag} with another manifest",
        got.display()
    );
    for d in digests {
        let a = oci_layout::read_blob(want, d);
        let b = oci_layout::read_blob(got, d);
        assert!(
            a == b,
            "blob {d}: pulled {} bytes differ from the {} pushed",
            b.len(),
            a.len()
        );
    }
}

/// Digests of everything a single image consists of: manifest, config, layers.
fn all_digests(image: &Image) -> BTreeSet<String> {
    let mut d = image.blob_digests();
    d.insert(image.manifest_digest.clone());
    d
}

fn all_index_digests(index: &ImageIndex) -> BTreeSet<String> {
    let mut d = index.blob_digests();
    d.extend(index.manifest_digests());
    d
}

/// Pushes `image` (tag `tag` of the layout `src`) to `repo:tag`, then checks
/// the registry serves the exact manifest bytes and a pull of it gives back
/// every blob byte for byte.
fn push_and_verify(server: &TestServer, src: &Path, tag: &str, repo: &str, image: &Image) {
    let remote = docker_ref(server, &format!("{repo}:{tag}"));
    copy(server, &[], &oci_ref(src, tag), &remote);
    assert_pull_matches(server, src, tag, repo, image);
}

fn assert_pull_matches(server: &TestServer, src: &Path, tag: &str, repo: &str, image: &Image) {
    let remote = docker_ref(server, &format!("{repo}:{tag}"));
    assert_eq!(
        inspect_raw(server, &remote),
        image.manifest,
        "registry serves other manifest bytes for {remote}"
    );
    let out = tempfile::tempdir().unwrap();
    let pulled = out.path().join("layout");
    copy(server, &[], &remote, &oci_ref(&pulled, tag));
    assert_same_blobs(
        src,
        &pulled,
        tag,
        &image.manifest_digest,
        &all_digests(image),
    );
}

/// The layouts the test kit writes are ones skopeo reads and copies without
/// changing a byte (no server involved), so a failure of the tests below is
/// about the registry, not the fixtures.
#[test]
fn skopeo_copies_test_layouts_unchanged() {
    let dirs = tempfile::tempdir().unwrap();
    let src = dirs.path().join("src");
    let image = oci_layout::write_image(&src, "v1", "layout", &[100, 5000]);
    let index = oci_layout::write_multi_arch(&src, "multi", "layout", 2000);
    let out = dirs.path().join("out");
    for (tag, extra) in [("v1", &[][..]), ("multi", &["--all"][..])] {
        let mut args = vec!["copy", "--preserve-digests"];
        args.extend_from_slice(extra);
        let (from, to) = (oci_ref(&src, tag), oci_ref(&out, tag));
        args.extend_from_slice(&[&from, &to]);
        let result = skopeo(&args);
        assert!(
            result.status.success(),
            "skopeo {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    assert_same_blobs(
        &src,
        &out,
        "v1",
        &image.manifest_digest,
        &all_digests(&image),
    );
    assert_same_blobs(
        &src,
        &out,
        "multi",
        &index.index_digest,
        &all_index_digests(&index),
    );
    let info: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", &oci_ref(&src, "v1")]).stdout)
            .expect("skopeo inspect of the layout prints JSON");
    assert_eq!(
        info["Layers"],
        serde_json::json!(image.layer_digests),
        "{info}"
    );
}

#[test]
fn single_image_push_inspect_pull_round_trips_bit_for_bit() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let layouts = tempfile::tempdir().unwrap();
    let src = layouts.path().join("src");
    let image = oci_layout::write_image(&src, "v1", "single", &[1000, 300_000, 2 * MIB + 7]);

    let remote = docker_ref(&server, "proj/app:v1");
    copy(&server, &[], &oci_ref(&src, "v1"), &remote);

    // The manifest comes back exactly as pushed, so its digest is preserved.
    let raw = inspect_raw(&server, &remote);
    assert_eq!(
        oci_layout::sha256_digest(&raw),
        image.manifest_digest,
        "manifest digest changed: served {}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(raw, image.manifest);

    // The same manifest by digest.
    let by_digest = docker_ref(&server, &format!("proj/app@{}", image.manifest_digest));
    assert_eq!(inspect_raw(&server, &by_digest), image.manifest);

    // Plain inspect reads the config and lists the tags.
    let info: serde_json::Value = serde_json::from_slice(&skopeo_ok(
        &server,
        &["inspect", "--tls-verify=false", &remote],
    ))
    .expect("skopeo inspect prints JSON");
    assert_eq!(info["Digest"], image.manifest_digest.as_str(), "{info}");
    assert_eq!(info["Architecture"], "amd64", "{info}");
    assert_eq!(info["Os"], "linux", "{info}");
    assert_eq!(
        info["Layers"],
        serde_json::json!(image.layer_digests),
        "{info}"
    );
    assert_eq!(info["RepoTags"], serde_json::json!(["v1"]), "{info}");

    // Pull back into a fresh layout: every blob byte for byte.
    let pulled = layouts.path().join("pulled");
    copy(&server, &[], &remote, &oci_ref(&pulled, "v1"));
    assert_same_blobs(
        &src,
        &pulled,
        "v1",
        &image.manifest_digest,
        &all_digests(&image),
    );
}

#[test]
fn multi_arch_index_push_pull_round_trips_bit_for_bit() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let layouts = tempfile::tempdir().unwrap();
    let src = layouts.path().join("src");
    let index = oci_layout::write_multi_arch(&src, "multi", "multi", 512 * 1024);

    let remote = docker_ref(&server, "proj/multi:v1");
    copy(&server, &["--all"], &oci_ref(&src, "multi"), &remote);

    assert_eq!(
        inspect_raw(&server, &remote),
        index.index,
        "registry serves other index bytes"
    );
    for image in &index.images {
        let by_digest = docker_ref(&server, &format!("proj/multi@{}", image.manifest_digest));
        assert_eq!(
            inspect_raw(&server, &by_digest),
            image.manifest,
            "{} manifest by digest",
            image.architecture
        );
        // Platform selection goes through the index to the child manifest.
        let info: serde_json::Value = serde_json::from_slice(&skopeo_ok(
            &server,
            &[
                "--override-arch",
                &image.architecture,
                "--override-os",
                "linux",
                "inspect",
                "--tls-verify=false",
                "--no-tags",
                &remote,
            ],
        ))
        .expect("skopeo inspect prints JSON");
        assert_eq!(info["Architecture"], image.architecture.as_str(), "{info}");
        assert_eq!(
            info["Layers"],
            serde_json::json!(image.layer_digests),
            "{info}"
        );
    }

    let pulled = layouts.path().join("pulled");
    copy(&server, &["--all"], &remote, &oci_ref(&pulled, "v1"));
    assert_same_blobs(
        &src,
        &pulled,
        "v1",
        &index.index_digest,
        &all_index_digests(&index),
    );
}

#[test]
fn deleted_manifest_is_unknown_afterwards() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let layouts = tempfile::tempdir().unwrap();
    let src = layouts.path().join("src");
    let image = oci_layout::write_image(&src, "v1", "delete", &[4096, 70_000]);
    push_and_verify(&server, &src, "v1", "proj/app", &image);

    let remote = docker_ref(&server, "proj/app:v1");
    skopeo_ok(&server, &["delete", "--tls-verify=false", &remote]);

    for reference in [
        remote.clone(),
        docker_ref(&server, &format!("proj/app@{}", image.manifest_digest)),
    ] {
        let out = skopeo(&["inspect", "--tls-verify=false", "--raw", &reference]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "inspect of deleted {reference} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.to_lowercase().contains("manifest unknown"),
            "inspect of deleted {reference} failed, but not with manifest unknown: {stderr}"
        );
    }
    let path = format!("/v2/proj/app/manifests/{}", image.manifest_digest);
    let (status, _, body) = http(server.addr, "GET", &path, &[], b"");
    assert_eq!(
        status,
        404,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    let err: serde_json::Value = serde_json::from_slice(&body).expect("OCI error body is JSON");
    assert_eq!(err["errors"][0]["code"], "MANIFEST_UNKNOWN", "{err}");
}

/// The path (and query) of an upload `Location`, which may be absolute.
fn location_path(location: &str) -> String {
    match location.strip_prefix("http://") {
        Some(rest) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
        None => location.to_string(),
    }
}

/// The inclusive end of a `Range: 0-<end>` upload status header.
fn range_end(range: &str) -> u64 {
    let r = range.trim_start_matches("bytes=");
    let (start, end) = r
        .split_once('-')
        .unwrap_or_else(|| panic!("bad Range {range:?}"));
    assert_eq!(start, "0", "upload Range {range:?} does not start at 0");
    end.parse()
        .unwrap_or_else(|e| panic!("bad Range {range:?}: {e}"))
}

/// Total length of the files in `dir` (0 if it does not exist).
fn files_len(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn chunked_upload_resumes_after_kill9_at_acknowledged_offset() {
    let data = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(data.path(), &[]);
    let blob = berth_testkit::content("crash/chunked", 8 * MIB + 123);
    let digest = oci_layout::sha256_digest(&blob);
    let (first, second) = blob.split_at(3 * MIB);
    let (second, third) = second.split_at(3 * MIB);

    let (status, h, body) = http(
        server.addr,
        "POST",
        "/v2/proj/crash/blobs/uploads/",
        &[],
        b"",
    );
    assert_eq!(
        status,
        202,
        "POST upload: {}",
        String::from_utf8_lossy(&body)
    );
    let upload = location_path(header(&h, "location").expect("POST upload gives a Location"));

    // Chunk 1, acknowledged.
    let range = format!("0-{}", first.len() - 1);
    let (status, h, body) = http(
        server.addr,
        "PATCH",
        &upload,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        first,
    );
    assert_eq!(
        status,
        202,
        "PATCH {range}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        range_end(header(&h, "range").expect("PATCH gives a Range")),
        first.len() as u64 - 1
    );
    let upload = header(&h, "location").map_or(upload, location_path);

    // Chunk 2, torn: the server gets part of the body, never acknowledges it.
    let mut torn = TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "PATCH {upload} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: {}-{}\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        first.len(),
        first.len() + second.len() - 1,
        second.len()
    );
    torn.write_all(head.as_bytes()).unwrap();
    torn.write_all(&second[..second.len() / 2]).unwrap();
    torn.flush().unwrap();
    // Give the server a chance to write some of the torn bytes to the upload
    // file (if it streams), so the kill leaves a torn tail to truncate.
    let uploads_dir = data.path().join("blobs/staging");
    let deadline = Instant::now() + Duration::from_secs(5);
    while files_len(&uploads_dir) <= first.len() as u64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "upload files hold {} bytes at the kill ({} acknowledged)",
        files_len(&uploads_dir),
        first.len()
    );
    server.kill9();
    drop(torn);
    server.restart();

    // The session survived, at exactly the acknowledged offset.
    let (status, h, body) = http(server.addr, "GET", &upload, &[], b"");
    assert_eq!(
        status,
        204,
        "GET upload status after restart: {}",
        String::from_utf8_lossy(&body)
    );
    let range = header(&h, "range").expect("upload status gives a Range");
    assert_eq!(
        range_end(range),
        first.len() as u64 - 1,
        "after kill -9 the upload must resume at the acknowledged offset"
    );

    // The rest, then complete.
    let rest = [second, third].concat();
    let range = format!("{}-{}", first.len(), blob.len() - 1);
    let (status, h, body) = http(
        server.addr,
        "PATCH",
        &upload,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        &rest,
    );
    assert_eq!(
        status,
        202,
        "PATCH {range}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        range_end(header(&h, "range").expect("PATCH gives a Range")),
        blob.len() as u64 - 1
    );
    let upload = header(&h, "location").map_or(upload, location_path);

    let sep = if upload.contains('?') { '&' } else { '?' };
    let put = format!("{upload}{sep}digest={digest}");
    let (status, h, body) = http(server.addr, "PUT", &put, &[], b"");
    assert_eq!(status, 201, "PUT {put}: {}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "docker-content-digest"), Some(digest.as_str()));

    let path = format!("/v2/proj/crash/blobs/{digest}");
    let (status, _, got) = http(server.addr, "GET", &path, &[], b"");
    assert_eq!(status, 200, "GET {path}");
    assert_eq!(got.len(), blob.len(), "GET {path}: length");
    assert_eq!(
        oci_layout::sha256_digest(&got),
        digest,
        "GET {path}: content"
    );

    // Completed means durable: it survives another kill.
    server.kill9();
    server.restart();
    let (status, h, _) = http(server.addr, "HEAD", &path, &[], b"");
    assert_eq!(status, 200, "HEAD {path} after second restart");
    assert_eq!(
        header(&h, "content-length"),
        Some(blob.len().to_string().as_str())
    );
}

/// Polls until `dir` holds upload bytes or `push` has exited; says which.
fn wait_for_upload_bytes(dir: &Path, push: &mut std::process::Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if files_len(dir) > 0 {
            return true;
        }
        if matches!(push.try_wait(), Ok(Some(_))) {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn acknowledged_push_survives_kill9_and_interrupted_push_completes_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(data.path(), &[]);
    let layouts = tempfile::tempdir().unwrap();
    let src = layouts.path().join("src");
    let small = oci_layout::write_image(&src, "small", "crash/small", &[10_000, 200_000]);
    let big = oci_layout::write_image(&src, "big", "crash/big", &[8 * MIB, 8 * MIB, 8 * MIB]);

    // Acknowledged before the kill: must be complete after it.
    push_and_verify(&server, &src, "small", "proj/small", &small);
    server.kill9();
    server.restart();
    assert_pull_matches(&server, &src, "small", "proj/small", &small);

    // Kill the server while skopeo streams the big image's layers.
    let mut push = Command::new("skopeo")
        .args(SKOPEO_GLOBAL)
        .args(COPY)
        .arg(oci_ref(&src, "big"))
        .arg(docker_ref(&server, "proj/big:v1"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning skopeo");
    let mid_upload = wait_for_upload_bytes(&data.path().join("blobs/staging"), &mut push);
    server.kill9();
    let interrupted = push.wait_with_output().expect("waiting for skopeo");
    eprintln!(
        "killed {} an upload; interrupted push {}: {}",
        if mid_upload { "during" } else { "not during" },
        interrupted.status,
        String::from_utf8_lossy(&interrupted.stderr)
    );
    server.restart();

    // The small image is untouched; the big push completes on retry.
    assert_pull_matches(&server, &src, "small", "proj/small", &small);
    push_and_verify(&server, &src, "big", "proj/big", &big);

    // And both survive one more kill.
    server.kill9();
    server.restart();
    assert_pull_matches(&server, &src, "small", "proj/small", &small);
    assert_pull_matches(&server, &src, "big", "proj/big", &big);
}

/// Names of the files under `DATA/blobs/sha256` (any depth), sorted; a blob
/// stored twice shows up twice.
fn stored_blob_files(data: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.map(|e| e.expect("reading blob store directory")) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&data.join("blobs").join("sha256"), &mut out);
    out.sort();
    out
}

/// Total bytes of the regular files under `dir`, except under `skip`.
fn tree_len(dir: &Path, skip: &[&Path]) -> u64 {
    if skip.contains(&dir) {
        return 0;
    }
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.map(|e| e.expect("reading data directory"))
        .map(|e| {
            let p: PathBuf = e.path();
            let m = fs::symlink_metadata(&p).expect("stat in data directory");
            if m.is_dir() {
                tree_len(&p, skip)
            } else if m.is_file() && !skip.contains(&p.as_path()) {
                m.len()
            } else {
                0
            }
        })
        .sum()
}

#[test]
fn same_image_in_two_repositories_is_stored_once() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let layouts = tempfile::tempdir().unwrap();
    let src = layouts.path().join("src");
    let image = oci_layout::write_image(&src, "v1", "dedup", &[MIB, 3 * MIB + 1]);
    let index = oci_layout::write_multi_arch(&src, "multi", "dedup-multi", MIB);

    push_and_verify(&server, &src, "v1", "proj/a", &image);
    push_and_verify(&server, &src, "v1", "other/b", &image);
    copy(
        &server,
        &["--all"],
        &oci_ref(&src, "multi"),
        &docker_ref(&server, "proj/multi:v1"),
    );

    let mut expected: BTreeSet<String> = image.blob_digests();
    expected.extend(index.blob_digests());
    let expected_hex: Vec<String> = expected
        .iter()
        .map(|d| d.trim_start_matches("sha256:").to_string())
        .collect();
    // One file per distinct config and layer: the second repository and the
    // layer both platforms share added no copies.
    assert_eq!(
        stored_blob_files(data.path()),
        expected_hex,
        "files under blobs/sha256 are not exactly one per distinct blob"
    );

    // No other copy anywhere in the data directory (upload files included);
    // the index (manifests and records) and the token signing key are
    // excluded.
    let expected_bytes: u64 = expected
        .iter()
        .map(|d| oci_layout::read_blob(&src, d).len() as u64)
        .sum();
    assert_eq!(
        tree_len(
            data.path(),
            &[&data.path().join("index"), &data.path().join("token.key")]
        ),
        expected_bytes,
        "bytes stored outside the index are not exactly the distinct blobs' bytes"
    );

    // Both repositories still serve the image.
    assert_pull_matches(&server, &src, "v1", "proj/a", &image);
    assert_pull_matches(&server, &src, "v1", "other/b", &image);
}
