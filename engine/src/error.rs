//! Error types, one enum per area, all wrapping the shared [`StorageError`].
//!
//! Every message names the object it is about (digest, repository, upload
//! id, path). The server maps these to OCI error codes in one table.

use std::path::PathBuf;

use crate::digest::{Digest, DigestError};
pub use crate::names::NameError;
use crate::store::StoreError;

/// A failure of the storage underneath: index, blob store or file system.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("index: {op}: {source}")]
    Index {
        op: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    /// The PostgreSQL index of cluster mode failed or did not answer:
    /// nothing of the operation was committed (or, for a lost COMMIT
    /// answer, all of it). The server answers 503; service resumes when
    /// the database answers again.
    #[error("database: {op}: {message}")]
    Database { op: &'static str, message: String },
    /// What this configuration does not do (yet), and why.
    #[error("{0}")]
    Unsupported(String),
    /// Another process holds what the operation needs for now (a GC run
    /// on another node, a GC claim on a digest); nothing was done, and the
    /// same request later succeeds. The server answers 503.
    #[error("busy: {0}")]
    Busy(String),
    #[error("blob store: {0}")]
    Store(#[from] StoreError),
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An index value (or a cross reference between records) does not
    /// hold what it must; `what` names the key.
    #[error("index record {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    /// An index key does not decode as a key of its column family.
    #[error(transparent)]
    CorruptKey(#[from] crate::keys::CorruptKey),
    /// A derived count would go below zero or past `u64::MAX`: the index
    /// already disagrees with what the count counts. The batch is refused
    /// (nothing is written); `berthctl fsck` reports the count and
    /// `fsck --repair` recomputes it. See [`crate::records::Count`].
    #[error("{what}: {count} would go {direction} (the index disagrees with what it counts; run `berthctl fsck`)")]
    Count {
        what: String,
        count: &'static str,
        direction: &'static str,
    },
    /// The change conflicts with what is stored (a name taken); nothing
    /// was written. The server answers 409.
    #[error("{0}")]
    Conflict(String),
    /// The batch would take a project's storage past its limit
    /// (`quotas.rs`); nothing was written. Harbor's wording.
    #[error("quota exceeded: adding {adding} bytes of storage to project {project}, which when updated to current usage of {used} bytes will exceed the configured upper limit of {limit} bytes")]
    QuotaExceeded {
        project: String,
        adding: u64,
        used: u64,
        limit: u64,
    },
    #[error(
        "the engine refuses writes after an earlier durability failure ({0}); reopen it to recover"
    )]
    Poisoned(String),
    /// Another process holds the data directory's lock file
    /// (`<data>/LOCK.berth`): the directory is in use.
    #[error("data directory in use by another process: lock {path} is held", path = .path.display())]
    Locked { path: PathBuf },
    /// The data directory or the token key file is open to other users of
    /// the host (see `host.rs`).
    #[error(
        "{path}: mode {mode:04o} lets other users read {what}; {fix} it or set {env}=true",
        path = .path.display(),
        env = crate::host::ALLOW_OPEN_ENV
    )]
    OpenToOthers {
        path: PathBuf,
        mode: u32,
        what: &'static str,
        fix: &'static str,
    },
}

/// Blob reads, links and mounts.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {digest} is not known in repository {repo}")]
    NotFound { repo: String, digest: Digest },
    #[error("range {start}-{end} is outside blob {digest} of {size} bytes")]
    RangeNotSatisfiable {
        digest: Digest,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Upload sessions.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload {id} is not known in repository {repo}")]
    NotFound { repo: String, id: String },
    #[error("upload {id}: append at offset {got} refused, the upload holds {expected} bytes")]
    OffsetMismatch { id: String, expected: u64, got: u64 },
    #[error("upload {id} is being written by another request")]
    Busy { id: String },
    #[error("{owner} already holds {limit} open upload sessions; finish or cancel one first")]
    TooMany { owner: String, limit: u64 },
    #[error("upload {id}: content hashes to {actual}, not the claimed {expected}")]
    DigestMismatch {
        id: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("upload {id}: content is {actual} bytes, not the claimed {expected}")]
    SizeMismatch {
        id: String,
        expected: u64,
        actual: u64,
    },
    #[error("upload {id}: {source}")]
    Digest {
        id: String,
        #[source]
        source: DigestError,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Manifests, tags and referrers.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {reference} is not known in repository {repo}")]
    NotFound { repo: String, reference: String },
    #[error("manifest in {repo} references blob {digest}, which is not in the repository")]
    BlobUnknown { repo: String, digest: Digest },
    #[error("manifest in {repo} references manifest {digest}, which is not in the repository")]
    ChildUnknown { repo: String, digest: Digest },
    #[error(
        "manifest declares blob {digest} with size {declared}, but it is stored with size {stored}"
    )]
    SizeMismatch {
        digest: Digest,
        declared: u64,
        stored: u64,
    },
    #[error("manifest content hashes to {actual}, not the claimed {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(
        "manifest {digest} is stored as {stored}; the same bytes cannot be stored as {pushed}"
    )]
    MediaTypeConflict {
        digest: Digest,
        stored: String,
        pushed: String,
    },
    #[error("chart {chart} already exists in project {project}")]
    ChartExists { project: String, chart: String },
    /// A tag an enabled immutability rule of the project covers: it can
    /// be neither moved nor deleted (Harbor's `412`).
    #[error("tag {tag} of {repo} is immutable (rule {rule} of its project): it cannot be moved or deleted")]
    TagImmutable {
        repo: String,
        tag: String,
        rule: u64,
    },
    #[error("chart {chart} cannot be stored in repository {repo}: {reason}")]
    ChartInvalid {
        repo: String,
        chart: String,
        reason: String,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<StoreError> for BlobError {
    fn from(e: StoreError) -> Self {
        BlobError::Storage(StorageError::Store(e))
    }
}

impl From<StoreError> for UploadError {
    fn from(e: StoreError) -> Self {
        UploadError::Storage(StorageError::Store(e))
    }
}

impl StorageError {
    pub(crate) fn index(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StorageError {
        move |source| StorageError::Index { op, source }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io { op, path, source }
    }
}
