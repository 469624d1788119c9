//! Choosing and opening the blob store a configuration names
//! (`BERTH_STORAGE_BACKEND=local|s3|tiered`).
//!
//! Paths under the data directory (built only here):
//!
//! ```text
//! <data>/blobs/   LocalStore: the store itself (local), or the read cache (s3)
//!                 or hot tier (tiered) in front of the bucket
//! <data>/tier/    TieredStore journal and staging (s3, tiered)
//! ```

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use super::{BlobStore, LocalStore, S3Config, S3Store, StoreError, TierMode, TieredStore};

/// Which storage backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// Blobs on local disk only.
    #[default]
    Local,
    /// Every blob in the bucket before it is acknowledged; local disk is a
    /// read cache.
    S3,
    /// Blobs written locally, copied to the bucket in the background,
    /// evicted locally above the cache budget.
    Tiered,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::S3 => "s3",
            BackendKind::Tiered => "tiered",
        }
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(BackendKind::Local),
            "s3" => Ok(BackendKind::S3),
            "tiered" => Ok(BackendKind::Tiered),
            other => Err(format!(
                "unknown storage backend {other:?} (expected local, s3 or tiered)"
            )),
        }
    }
}

/// A storage backend configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub kind: BackendKind,
    /// The bucket; required for `s3` and `tiered`.
    pub s3: Option<S3Config>,
    /// Local cache budget in bytes for `s3` and `tiered` (`BERTH_CACHE_MAX_BYTES`).
    pub cache_max_bytes: u64,
}

/// Default local cache budget: 10 GiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 10 << 30;

impl Backend {
    /// The local backend.
    pub fn local() -> Backend {
        Backend {
            kind: BackendKind::Local,
            s3: None,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }
}

/// Opens the blob store `backend` names for data directory `data_dir`.
pub fn open_backend(data_dir: &Path, backend: &Backend) -> Result<Arc<dyn BlobStore>, StoreError> {
    let local = LocalStore::open(&data_dir.join("blobs"))?;
    let mode = match backend.kind {
        BackendKind::Local => return Ok(Arc::new(local)),
        BackendKind::S3 => TierMode::WriteThrough,
        BackendKind::Tiered => TierMode::WriteBack,
    };
    let Some(s3) = backend.s3.clone() else {
        return Err(StoreError::Remote {
            op: "configure storage backend",
            key: backend.kind.name().to_owned(),
            message: "the s3 and tiered backends need an S3 bucket (BERTH_S3_ENDPOINT, \
                      BERTH_S3_BUCKET, BERTH_S3_ACCESS_KEY, BERTH_S3_SECRET_KEY)"
                .to_owned(),
        });
    };
    let remote = S3Store::open(s3)?;
    let max = if backend.cache_max_bytes == 0 {
        DEFAULT_CACHE_MAX_BYTES
    } else {
        backend.cache_max_bytes
    };
    Ok(Arc::new(TieredStore::open(
        local,
        remote,
        mode,
        &data_dir.join("tier"),
        max,
    )?))
}
