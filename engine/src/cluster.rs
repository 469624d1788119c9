//! Moving in: a stopped single node's index and blobs into an empty cluster
//! (`berthctl cluster import`, `docs/cluster.md`).
//!
//! Top to bottom:
//! 1. The cluster database must be empty (every family of its schema): an
//!    import never merges into a registry that is already serving.
//! 2. Every blob the index records goes into the cluster's store, unless it
//!    is there at its size already (a node that ran on the same bucket):
//!    streamed from the node's store into a staged blob of the target,
//!    hashed on the way (a blob that does not hash to its digest is
//!    refused, naming it), then committed (`CreateOnly`). Safe to repeat.
//! 3. Every entry of every family, in one PostgreSQL transaction holding
//!    the cluster's write lock, loaded in chunks: a killed import commits
//!    nothing, and running it again starts from an empty database. Not
//!    copied: upload sessions (their bytes are staged on the node; clients
//!    upload again), pins (none without a running server), the legacy
//!    token seed. Blob records are recorded in the bucket (`Remote`).

use crate::digest::{Digest, Hasher};
use crate::engine::Engine;
use crate::error::StorageError;
use crate::index::{Batch, DatabaseConfig, Index};
use crate::keys::{BlobKey, Cf, Key, MetaKey, WholeFamily};
use crate::records::{BlobRecord, Record, Tier};
use crate::store::{BlobStore, PutMode};

/// Entries written per statement of the load.
const LOAD_CHUNK: usize = 1000;
/// Bytes copied per read from the node's store.
const COPY_CHUNK: u64 = 8 << 20;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterImport {
    /// Index entries written into the cluster database.
    pub entries: u64,
    /// Blobs copied into the cluster's store, and their bytes.
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Blobs the cluster's store held already.
    pub blobs_present: u64,
    /// Upload sessions left behind (their clients upload again).
    pub uploads_skipped: u64,
}

/// Progress callback: phase name, items done.
pub type Progress<'a> = &'a dyn Fn(&'static str, u64);

impl Engine {
    /// Copies this engine's index (a single node's, opened on its stopped
    /// data directory) into the empty cluster database `db`, and every
    /// blob it records into `target`, the cluster's store. See the module
    /// docs.
    pub fn import_into_cluster(
        &self,
        db: &DatabaseConfig,
        target: &dyn BlobStore,
        progress: Progress<'_>,
    ) -> Result<ClusterImport, StorageError> {
        let inner = &self.inner;
        if inner.index.is_shared() {
            return Err(StorageError::Unsupported(
                "the source of an import is a single node's data directory, not a cluster".into(),
            ));
        }
        let dest = Index::open_pg(db)?;
        for cf in Cf::ALL {
            let n = dest.count(cf)?;
            if n > 0 {
                return Err(StorageError::Unsupported(format!(
                    "the cluster database (schema {}) is not empty: {n} entries in {cf}; an import goes into an empty one",
                    db.schema
                )));
            }
        }
        let mut report = ClusterImport::default();

        for r in inner.index.scan(BlobKey::all()) {
            let (BlobKey(d), rec) = r?;
            match target.stat(&d)? {
                Some(size) if size == rec.size => report.blobs_present += 1,
                _ => {
                    copy_blob(inner.store.as_ref(), target, &d, rec.size)?;
                    report.blobs_copied += 1;
                    report.bytes_copied += rec.size;
                }
            }
            progress("blobs", report.blobs_copied + report.blobs_present);
        }

        let mut txn = dest.begin()?;
        let mut rows = Vec::with_capacity(LOAD_CHUNK);
        for cf in Cf::ALL {
            for r in inner.index.entries(cf) {
                let (k, v) = r?;
                let value = match Key::decode(cf, &k) {
                    Ok(Key::Upload(_)) => {
                        report.uploads_skipped += 1;
                        continue;
                    }
                    Ok(Key::Pin(_)) | Ok(Key::Meta(MetaKey::TokenSeed)) => continue,
                    Ok(Key::Blob(_)) => {
                        let mut rec =
                            BlobRecord::decode(&v).map_err(|detail| StorageError::Corrupt {
                                what: format!("{cf} entry {}", hex::encode(&k)),
                                detail,
                            })?;
                        rec.tier = Tier::Remote;
                        rec.encode()
                    }
                    // Copied as they are, corrupt ones included: fsck on
                    // the cluster reports them as it did on the node.
                    _ => v.into_vec(),
                };
                rows.push((cf, k.into_vec(), value));
                report.entries += 1;
                if rows.len() == LOAD_CHUNK {
                    dest.load(&mut txn, std::mem::take(&mut rows))?;
                    progress("index entries", report.entries);
                }
            }
        }
        if !rows.is_empty() {
            dest.load(&mut txn, rows)?;
        }
        dest.commit(txn, Batch::default())?;
        progress("index entries", report.entries);
        Ok(report)
    }
}

/// Copies blob `d` of `size` bytes from `from` to `to` through a staged
/// blob of `to`, verifying its digest on the way.
fn copy_blob(
    from: &dyn BlobStore,
    to: &dyn BlobStore,
    d: &Digest,
    size: u64,
) -> Result<(), StorageError> {
    let id = format!("import-{}", &d.hex()[..32]);
    to.abort(&id)?;
    let staged = to.stage(&id)?;
    let mut hasher = Hasher::new(d.algorithm());
    let mut at = 0u64;
    while at < size {
        let end = (at + COPY_CHUNK).min(size);
        let data = from.get(d, Some(at..end))?;
        hasher.update(data.as_ref());
        staged.write_at(data.as_ref(), at)?;
        at = end;
    }
    let actual = hasher.finalize();
    if &actual != d {
        drop(staged);
        to.abort(&id)?;
        return Err(StorageError::Corrupt {
            what: format!("blob {d}"),
            detail: format!("the node's copy hashes to {actual}; not imported"),
        });
    }
    to.commit(staged, d, PutMode::CreateOnly)?;
    Ok(())
}
