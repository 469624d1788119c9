//! Bulk loading of synthetic index entries, for benchmarks only.
//!
//! Populating a million blobs through synced commits takes hours; this
//! writes the same records (blob records, links, candidates, manifests that
//! reference the live blobs) in large **unsynced** batches and flushes once
//! at the end. No blob bytes are stored: the store holds no files for these
//! digests. Never used by the server or berthctl.

use std::collections::BTreeMap;

use rocksdb::{WriteBatch, WriteOptions};

use crate::digest::{Algorithm, Digest};
use crate::engine::Engine;
use crate::error::StorageError;
use crate::keys;
use crate::names::RepoName;
use crate::records::{
    self, BlobRecord, BlobState, LinkRecord, ManifestRecord, RepoManifestRecord, RepoRecord, Tier,
};

/// Blobs referenced by each synthetic manifest.
const PER_MANIFEST: usize = 100;
const BATCH: usize = 20_000;

impl Engine {
    /// Loads `n` synthetic blobs into `repo` (digest = sha256 of the index),
    /// one in every `garbage_every` unreferenced (GC candidates, touched at
    /// `touched_ms`), the rest referenced by synthetic untagged manifests of
    /// 100 blobs each. Unsynced batches, one flush at the end. Benchmarks
    /// only (see the module docs).
    #[doc(hidden)]
    pub fn bench_bulk_load(
        &self,
        repo: &RepoName,
        n: u64,
        garbage_every: u64,
        touched_ms: u64,
    ) -> Result<(), StorageError> {
        let inner = &self.inner;
        let _g = inner.lock()?;
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        wo.disable_wal(true);
        let mut b = WriteBatch::default();
        let mut live: Vec<Digest> = Vec::new();
        let mut manifests = 0u64;
        let flush_manifest = |b: &mut WriteBatch, live: &mut Vec<Digest>, m: u64| {
            let body = format!("{{\"bench\":{m}}}").into_bytes();
            let md = Digest::of(Algorithm::Sha256, &body);
            let rec = ManifestRecord {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: body.len() as u64,
                subject: None,
                artifact_type: None,
                annotations: BTreeMap::new(),
                blobs: std::mem::take(live),
                manifests: Vec::new(),
                repos: 1,
                created_ms: touched_ms,
            };
            b.put_cf(
                inner.cf(keys::CF_MANIFESTS),
                keys::digest_key(&md),
                records::encode(&rec),
            );
            b.put_cf(inner.cf(keys::CF_BODIES), keys::digest_key(&md), &body);
            b.put_cf(
                inner.cf(keys::CF_REPO_MANIFESTS),
                keys::repo_manifest_key(repo, &md),
                records::encode(&RepoManifestRecord {
                    created_ms: touched_ms,
                    tags: 0,
                    parents: 0,
                }),
            );
        };
        b.put_cf(
            inner.cf(keys::CF_REPOS),
            keys::repo_key(repo),
            records::encode(&RepoRecord {
                created_ms: touched_ms,
            }),
        );
        for i in 0..n {
            let d = Digest::of(Algorithm::Sha256, &i.to_le_bytes());
            let garbage = garbage_every > 0 && i.is_multiple_of(garbage_every);
            let rec = BlobRecord {
                size: 1000,
                tier: Tier::Local,
                refcount: u64::from(!garbage),
                links: 1,
                state: BlobState::Active,
                created_ms: touched_ms,
                touched_ms,
            };
            inner.put_blob_record(&mut b, &d, &rec);
            b.put_cf(
                inner.cf(keys::CF_LINKS),
                keys::link_key(repo, &d),
                records::encode(&LinkRecord {
                    created_ms: touched_ms,
                }),
            );
            b.put_cf(
                inner.cf(keys::CF_BLOB_REPOS),
                keys::blob_repo_key(&d, repo),
                b"",
            );
            if !garbage {
                live.push(d);
                if live.len() == PER_MANIFEST {
                    flush_manifest(&mut b, &mut live, manifests);
                    manifests += 1;
                }
            }
            if b.len() >= BATCH {
                let full = std::mem::take(&mut b);
                inner
                    .db
                    .write_opt(full, &wo)
                    .map_err(StorageError::index("bulk write"))?;
            }
        }
        if !live.is_empty() {
            flush_manifest(&mut b, &mut live, manifests);
        }
        inner
            .db
            .write_opt(b, &wo)
            .map_err(StorageError::index("bulk write"))?;
        for name in keys::ALL_CFS {
            inner
                .db
                .flush_cf(inner.cf(name))
                .map_err(StorageError::index("bulk flush"))?;
        }
        Ok(())
    }
}
