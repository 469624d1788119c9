//! Manifest JSON: media type selection, validation, and extraction of what
//! the engine must know ([`ParsedManifest`]): referenced blobs and child
//! manifests, subject, artifact type, annotations.
//!
//! Accepted media types: OCI image manifest and index, Docker schema 2
//! manifest and manifest list. The type is the request's `Content-Type`
//! (parameters ignored); when that is absent or generic
//! (`application/json`, `application/octet-stream`) it is the body's
//! `mediaType`; when that is absent too, an object with `manifests` is an
//! OCI index and anything else an OCI image manifest. A `Content-Type`
//! that contradicts the body's `mediaType` is `MANIFEST_INVALID`; a type
//! berth does not store is `415 UNSUPPORTED`.
//!
//! Ambiguous bodies are `MANIFEST_INVALID`: an image manifest with a
//! `manifests` field, an index with `config` or `layers`. Such a body would
//! reference different things depending on the `Content-Type` it came with
//! (the OCI image-spec v1.0.2 advisory on `mediaType` handling,
//! GHSA-77vh-xpmg-72qh); CNCF distribution refuses it the same way since
//! v2.8.0 (`validateManifest` in `manifest/ocischema/manifest.go`,
//! `validateIndex` in `manifest/manifestlist/manifestlist.go`). The engine
//! adds the rule that makes the question moot for stored bytes: one digest
//! has one record, and a PUT under another media type is refused.
//!
//! Layers with non-empty `urls` (foreign / non-distributable) are not
//! required to be in the registry and are left out of `blobs`.
//!
//! The result is a [`ParsedManifest`]; the server moves it into the
//! engine's `ManifestPut` and maps [`ManifestParseError`] to its OCI code.

use std::collections::BTreeMap;

use berth_formats::Digest;
use serde::Deserialize;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifests larger than this are refused with `413` (the spec asks
/// registries to accept at least 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// What a pushed manifest references, as its JSON says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedManifest {
    /// The media type it is stored under (see the module docs).
    pub media_type: String,
    /// The bytes exactly as pushed.
    pub body: Vec<u8>,
    /// Blobs referenced (config, layers), foreign layers left out, in order.
    pub blobs: Vec<Digest>,
    /// The size each descriptor of `blobs` declares (one per digest).
    pub blob_sizes: BTreeMap<Digest, u64>,
    /// Child manifests (an index's `manifests`).
    pub manifests: Vec<Digest>,
    /// The `subject` descriptor's digest.
    pub subject: Option<Digest>,
    /// `artifactType`, or the config media type for image manifests.
    pub artifact_type: Option<String>,
    /// `annotations`.
    pub annotations: BTreeMap<String, String>,
}

/// Why a manifest body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestParseError {
    /// Not a valid manifest of its type: `MANIFEST_INVALID`.
    #[error("{0}")]
    Invalid(String),
    /// A media type berth does not store: `415 UNSUPPORTED`.
    #[error("{0}")]
    UnsupportedMediaType(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Config plus layers.
    Image,
    /// A list of manifests.
    Index,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    schema_version: Option<u64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

/// Adds a referenced blob and the size its descriptor declares.
fn add_blob(put: &mut ParsedManifest, digest: Digest, size: u64) -> Result<(), ManifestParseError> {
    match put.blob_sizes.insert(digest.clone(), size) {
        Some(other) if other != size => Err(invalid(format!(
            "blob {digest} is declared with sizes {other} and {size}"
        ))),
        _ => {
            put.blobs.push(digest);
            Ok(())
        }
    }
}

/// Longest error detail: details quote the client's bytes (a media type,
/// a serde_json message quoting a string value), which end up in logs and
/// error bodies; a 4 MiB string is not echoed back whole.
pub const MAX_DETAIL_LEN: usize = 1024;

/// `detail`, cut to [`MAX_DETAIL_LEN`] bytes (at a character boundary)
/// with a marker if longer.
fn cut(mut detail: String) -> String {
    if detail.len() > MAX_DETAIL_LEN {
        let total = detail.len();
        let mut end = MAX_DETAIL_LEN;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        detail.push_str(&format!("…({total} bytes total)"));
    }
    detail
}

fn invalid(detail: impl Into<String>) -> ManifestParseError {
    ManifestParseError::Invalid(cut(detail.into()))
}

/// The media type of a `Content-Type` header value, or `None` if it says
/// nothing useful.
fn specific_type(content_type: Option<&str>) -> Option<&str> {
    let t = content_type?.split(';').next()?.trim();
    match t {
        "" | "application/json" | "application/octet-stream" | "*/*" => None,
        t => Some(t),
    }
}

fn digest_of(d: &Descriptor, field: &str) -> Result<Digest, ManifestParseError> {
    Digest::parse(&d.digest).map_err(|e| invalid(format!("{field}: {e}")))
}

/// Parses and validates a pushed manifest. `body` is kept byte for byte.
pub fn parse(
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<ParsedManifest, ManifestParseError> {
    let doc: Doc =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("not a manifest: {e}")))?;
    let header_type = specific_type(content_type);
    if let (Some(h), Some(b)) = (header_type, doc.media_type.as_deref()) {
        if h != b {
            return Err(invalid(format!(
                "Content-Type {h} does not match the manifest's mediaType {b}"
            )));
        }
    }
    let media_type = match (header_type, doc.media_type.as_deref()) {
        (Some(t), _) | (None, Some(t)) => t.to_owned(),
        (None, None) if doc.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    let Some(kind) = kind_of(&media_type) else {
        return Err(ManifestParseError::UnsupportedMediaType(cut(format!(
            "manifest media type {media_type:?} is not supported"
        ))));
    };
    if doc.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }

    let mut put = ParsedManifest {
        media_type,
        annotations: doc.annotations.unwrap_or_default(),
        ..ParsedManifest::default()
    };
    match kind {
        Kind::Image if doc.manifests.is_some() => {
            return Err(invalid(format!(
                "a {} cannot have manifests (expected a manifest, found an index)",
                put.media_type
            )))
        }
        Kind::Index if doc.config.is_some() || doc.layers.is_some() => {
            return Err(invalid(format!(
                "a {} cannot have a config or layers (expected an index, found a manifest)",
                put.media_type
            )))
        }
        Kind::Image => {
            let config = doc
                .config
                .ok_or_else(|| invalid("an image manifest needs a config"))?;
            let layers = doc
                .layers
                .ok_or_else(|| invalid("an image manifest needs layers"))?;
            put.blobs.reserve(layers.len() + 1);
            add_blob(&mut put, digest_of(&config, "config")?, config.size)?;
            for (i, layer) in layers.iter().enumerate() {
                let digest = digest_of(layer, &format!("layers[{i}]"))?;
                let foreign = layer.urls.as_ref().is_some_and(|u| !u.is_empty());
                if !foreign {
                    add_blob(&mut put, digest, layer.size)?;
                }
            }
            put.artifact_type = doc
                .artifact_type
                .filter(|t| !t.is_empty())
                .or(Some(config.media_type));
        }
        Kind::Index => {
            let manifests = doc
                .manifests
                .ok_or_else(|| invalid("an index needs manifests"))?;
            put.manifests.reserve(manifests.len());
            for (i, m) in manifests.iter().enumerate() {
                put.manifests
                    .push(digest_of(m, &format!("manifests[{i}]"))?);
            }
            put.artifact_type = doc.artifact_type.filter(|t| !t.is_empty());
        }
    }
    if let Some(subject) = &doc.subject {
        put.subject = Some(digest_of(subject, "subject")?);
    }
    put.body = body;
    Ok(put)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"l","digest":"{}","size":3}},
                      {{"mediaType":"f","digest":"{}","size":4,"urls":["https://x/y"]}}]{extra}}}"#,
            d('a'),
            d('b'),
            d('c')
        )
        .into_bytes()
    }

    #[test]
    fn image_manifest() {
        let put = parse(Some(OCI_MANIFEST), image("")).unwrap();
        assert_eq!(put.media_type, OCI_MANIFEST);
        let blobs: Vec<_> = put.blobs.iter().map(|b| b.to_string()).collect();
        assert_eq!(blobs, [d('a'), d('b')], "foreign layer skipped");
        assert_eq!(
            put.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(put.subject.is_none());
    }

    #[test]
    fn artifact_type_subject_annotations() {
        let extra = format!(
            r#","artifactType":"application/x.sbom","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}},"annotations":{{"k":"v"}}"#,
            d('e')
        );
        let put = parse(None, image(&extra)).unwrap();
        assert_eq!(put.artifact_type.as_deref(), Some("application/x.sbom"));
        assert_eq!(put.subject.map(|s| s.to_string()), Some(d('e')));
        assert_eq!(put.annotations.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn media_type_selection() {
        // Generic Content-Type: the body decides.
        assert_eq!(
            parse(Some("application/json"), image(""))
                .unwrap()
                .media_type,
            OCI_MANIFEST
        );
        // Parameters are ignored.
        let ct = format!("{OCI_MANIFEST}; charset=utf-8");
        assert!(parse(Some(&ct), image("")).is_ok());
        // Contradiction.
        let e = parse(Some(DOCKER_MANIFEST), image("")).unwrap_err();
        assert!(matches!(e, ManifestParseError::Invalid(_)));
        // Unknown type.
        let e = parse(
            Some("application/vnd.example+json"),
            br#"{"schemaVersion":2}"#.to_vec(),
        )
        .unwrap_err();
        assert!(matches!(e, ManifestParseError::UnsupportedMediaType(_)));
        // Neither header nor field: inferred.
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}}]}}"#,
            d('f')
        );
        let put = parse(None, idx.into_bytes()).unwrap();
        assert_eq!(put.media_type, OCI_INDEX);
        assert_eq!(put.manifests.len(), 1);
        assert_eq!(put.artifact_type, None);
    }

    /// A body that is both an image manifest and an index is refused under
    /// either reading, whatever the `Content-Type` (distribution's
    /// `validateManifest` / `validateIndex`).
    #[test]
    fn ambiguous_bodies_are_refused() {
        let both = format!(
            r#"{{"schemaVersion":2,
            "config":{{"mediaType":"c","digest":"{}","size":2}},
            "layers":[{{"mediaType":"l","digest":"{}","size":3}}],
            "manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}}]}}"#,
            d('a'),
            d('b'),
            d('c')
        );
        for ct in [
            None,
            Some(OCI_MANIFEST),
            Some(OCI_INDEX),
            Some(DOCKER_MANIFEST),
            Some(DOCKER_LIST),
        ] {
            let e = parse(ct, both.clone().into_bytes()).unwrap_err();
            assert!(matches!(e, ManifestParseError::Invalid(_)), "{ct:?}");
        }
        let index_with_layers = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","layers":[],
            "manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}}]}}"#,
            d('c')
        );
        let e = parse(None, index_with_layers.into_bytes()).unwrap_err();
        assert!(matches!(e, ManifestParseError::Invalid(_)));
        // `null` is absence, as in distribution.
        let put = parse(Some(OCI_MANIFEST), image(r#","manifests":null"#)).unwrap();
        assert_eq!(put.blobs.len(), 2);
    }

    #[test]
    fn invalid_manifests() {
        let cases: Vec<Vec<u8>> = vec![
            b"not json".to_vec(),
            b"[]".to_vec(),
            format!(r#"{{"schemaVersion":1,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"c","digest":"{}","size":1}},"layers":[]}}"#, d('a')).into_bytes(),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#).into_bytes(),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"c","digest":"sha256:xyz","size":1}},"layers":[]}}"#).into_bytes(),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"c","digest":"{}","size":-1}},"layers":[]}}"#, d('a')).into_bytes(),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#).into_bytes(),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"c","digest":"{}","size":1}},"layers":[],"annotations":{{"k":1}}}}"#, d('a')).into_bytes(),
        ];
        for body in cases {
            let text = String::from_utf8_lossy(&body).into_owned();
            let e = parse(None, body).unwrap_err();
            assert!(matches!(e, ManifestParseError::Invalid(_)), "{text}");
        }
    }

    /// Details quote client strings; they are cut, whatever the body holds.
    #[test]
    fn error_details_are_bounded() {
        let long = "é".repeat(1 << 20);
        let bodies = [
            format!(r#"{{"schemaVersion":"{long}"}}"#),
            format!(r#"{{"schemaVersion":2,"mediaType":"{long}"}}"#),
            format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"sha256:{long}","size":1}},"layers":[]}}"#
            ),
        ];
        for body in bodies {
            let e = parse(None, body.into_bytes()).unwrap_err();
            let detail = e.to_string();
            assert!(
                detail.len() <= MAX_DETAIL_LEN + 40,
                "{} bytes",
                detail.len()
            );
            assert!(detail.contains("bytes total"), "{detail:.80}");
        }
        let ct = format!("application/{long}");
        let e = parse(Some(&ct), br#"{"schemaVersion":2}"#.to_vec()).unwrap_err();
        assert!(e.to_string().len() <= MAX_DETAIL_LEN + 40);
    }
}
