//! berth's content-addressed storage engine.
//!
//! The engine owns everything that is persisted: blob bytes (through a
//! [`store::BlobStore`]), and the RocksDB index of blobs, repository links,
//! manifests, tags, referrers, upload sessions, the chart repository index,
//! and accounts, projects and their members (see [`keys`] for the keyspace,
//! [`records`] for the values, `index.rs` for the only code that touches
//! RocksDB; [`accounts`] for the permission model, [`token`] for the bearer token
//! format). It knows nothing of HTTP or of OCI's JSON wire formats: the
//! server parses requests into the typed arguments taken here.
//!
//! Entry point: [`Engine::open`]. Every mutating operation is one atomic,
//! synced RocksDB batch; see `docs/design.md` for the commit protocol.

pub mod account_admin;
pub mod accounts;
pub mod artifacts;
pub mod backup;
/// The OCI digest grammar and hashers (crate `berth-formats`).
pub use berth_formats::digest;
pub mod durable;
pub mod store;

pub mod audit;
mod blobs;
pub mod charts;
pub mod cluster;
pub mod directory;
mod engine;
mod error;
pub mod fsck;
pub mod gc;
pub mod host;
pub mod immutable;
mod index;
pub mod quotas;
pub mod retention;
pub mod webhooks;
pub use index::pg::DbStats;
pub use index::DatabaseConfig;
pub mod keys;
mod manifests;
pub mod metrics;
mod runtime;
use berth_formats::names;
pub mod records;
pub mod registries;
mod sessions;
pub mod tags;
pub mod usergroups;
/// Bearer tokens (crate `berth-formats`).
pub use berth_formats::pattern;
pub use berth_formats::token;
mod uploads;
mod workers;

pub use accounts::{Account, AccountError, Action, Actions, AdminSetup, NewRobot, Role, UserCheck};
pub use charts::{ChartEntry, ChartId, ChartIndexDelta, ChartVersion, ChartWrite};
pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use directory::DirectoryUser;
pub use engine::{
    Engine, EngineConfig, IndexStats, DEFAULT_MAX_PER_PROJECT, DEFAULT_MAX_UPLOADS_PER_OWNER,
};
pub use error::{BlobError, ManifestError, NameError, StorageError, UploadError};
pub use gc::{GcOptions, GcReport, GcRun, GcRunKind, GcRunStatus};
pub use manifests::{Manifest, ManifestPut, Referrer};
pub use metrics::EngineMetrics;
pub use names::{Reference, RepoName, Tag};
pub use records::{BlobInfo, ChartBlob, ChartRecord, ChartRepoRecord, CHART_CHANGES_KEPT};
pub use store::{BlobData, BlobStore, PutMode, PutOutcome, Staged, StoreError};
pub use tags::{CatalogFrom, Page};
pub use uploads::valid_upload_id;
pub use uploads::{UploadStatus, UploadWriter};
