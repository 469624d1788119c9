//! Manifest JSON parsing, from `berth_wire::manifest` (the parser lives
//! there, beside its fuzz target); here its result becomes the engine's
//! [`ManifestPut`] and its refusals OCI error codes.

use berth_engine::ManifestPut;
use berth_wire::manifest::{ManifestParseError, ParsedManifest};

use crate::errors::{ApiError, Code};

pub use berth_wire::manifest::{MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST};

/// Parses and validates a pushed manifest. `body` is kept byte for byte.
pub fn parse(content_type: Option<&str>, body: Vec<u8>) -> Result<ManifestPut, ApiError> {
    let ParsedManifest {
        media_type,
        body,
        blobs,
        blob_sizes,
        manifests,
        subject,
        artifact_type,
        annotations,
    } = berth_wire::manifest::parse(content_type, body).map_err(|e| match e {
        ManifestParseError::Invalid(detail) => ApiError::new(Code::ManifestInvalid, detail),
        ManifestParseError::UnsupportedMediaType(detail) => {
            ApiError::new(Code::UnsupportedMediaType, detail)
        }
    })?;
    Ok(ManifestPut {
        media_type,
        body,
        blobs,
        blob_sizes,
        manifests,
        subject,
        artifact_type,
        annotations,
        ..ManifestPut::default()
    })
}
