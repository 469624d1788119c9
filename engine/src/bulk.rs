//! Bulk loading of synthetic index entries, for benchmarks only.
//!
//! Populating a million blobs through synced commits takes hours; this
//! writes the same records (blob records, links, candidates, manifests that
//! reference the live blobs) in large **unsynced** batches and flushes once
//! at the end. No blob bytes are stored: the store holds no files for these
//! digests. Never used by the server or berthctl.

use std::collections::BTreeMap;

use crate::digest::{Algorithm, Digest};
use crate::engine::Engine;
use crate::error::StorageError;
use crate::index::Batch;
use crate::keys::{BlobRepoKey, BodyKey, LinkKey, ManifestKey, RepoKey, RepoManifestKey};
use crate::names::RepoName;
use crate::records::{
    BlobRecord, BlobState, Empty, LinkRecord, ManifestBody, ManifestRecord, RepoManifestRecord,
    RepoRecord, Tier,
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
        let mut b = Batch::default();
        let mut live: Vec<Digest> = Vec::new();
        let mut manifests = 0u64;
        let flush_manifest = |b: &mut Batch, live: &mut Vec<Digest>, m: u64| {
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
            b.put(&ManifestKey(md.clone()), &rec);
            b.put(&BodyKey(md.clone()), &ManifestBody(body));
            b.put(
                &RepoManifestKey(repo.clone(), md),
                &RepoManifestRecord {
                    created_ms: touched_ms,
                    tags: 0,
                    parents: 0,
                },
            );
        };
        b.put(
            &RepoKey(repo.clone()),
            &RepoRecord {
                created_ms: touched_ms,
            },
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
            b.put(
                &LinkKey(repo.clone(), d.clone()),
                &LinkRecord {
                    created_ms: touched_ms,
                },
            );
            b.put(&BlobRepoKey(d.clone(), repo.clone()), &Empty);
            if !garbage {
                live.push(d);
                if live.len() == PER_MANIFEST {
                    flush_manifest(&mut b, &mut live, manifests);
                    manifests += 1;
                }
            }
            if b.len() >= BATCH {
                inner.index.write_unlogged(std::mem::take(&mut b))?;
            }
        }
        if !live.is_empty() {
            flush_manifest(&mut b, &mut live, manifests);
        }
        inner.index.write_unlogged(b)?;
        inner.index.flush_all()
    }
}
