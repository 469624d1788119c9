//! Write-ahead upload sessions and the blob commit path.
//!
//! A session is a blob staged in the blob store under the upload id
//! ([`crate::store::BlobStore::stage`]) plus an `uploads` record holding the
//! durable offset. The engine never builds a path for it: the store owns
//! what it stages. The staged blob and the record are durable before the id
//! is returned; each acknowledged append has synced the staged bytes and
//! durably recorded the new offset; completion verifies size and digest,
//! commits the staged blob into the store and commits blob + link + session
//! removal in one batch. See `docs/design.md` for the crash analysis.
//!
//! Hash state: the durable prefix `[0, offset)` *is* the resumable hash
//! state. While the process lives the running hasher is kept in memory
//! ([`Session`]); after a restart the first writer re-derives it by hashing
//! the prefix once.
//!
//! Cluster mode (a shared index): a session's requests may reach any node,
//! so nothing of it may live on one. Each request's bytes are staged
//! locally as a buffer only; the acknowledgement stores them in the
//! store's shared staging as a new segment (`BlobStore::put_segment`) and
//! records the segment list and the hasher's state (`Hasher::state`) in
//! the session record, in one commit that checks the record is still the
//! one the writer started from (a second node writing the same session at
//! once loses with an offset mismatch and its segment is dropped). A last
//! segment under `MIN_SEGMENT` is reopened by the next writer and replaced
//! by a longer one, so every segment but the last is big enough for the
//! bucket to compose them as multipart parts; completion composes them
//! into the blob inside the bucket (`BlobStore::compose`). The layout and
//! the resumable hash follow CNCF distribution's S3 uploads
//! (`_uploads/<id>/data` and its hash states), the session state lives in
//! the index of record instead of beside the bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::digest::{Algorithm, Digest, Hasher};
use crate::engine::{Engine, Inner};
use crate::error::{StorageError, UploadError};
use crate::index::Batch;
use crate::keys::{BlobKey, BlobRepoKey, LinkKey, PinKey, RepoKey, UploadKey, WholeFamily};
use crate::names::RepoName;
use crate::records::{
    self, BlobInfo, BlobRecord, BlobState, Count, Empty, LinkRecord, RepoRecord, Segment, Tier,
    UploadRecord,
};
use crate::store::{PutMode, Staged, StoreError, MIN_SEGMENT};

/// Writes at least this large hash on a second thread while writing.
const PARALLEL_HASH_MIN: usize = 1 << 20;

/// Where an upload stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    /// The session id: 32 lowercase hex characters.
    pub id: String,
    /// Bytes durably received; the next append must start here.
    pub offset: u64,
}

/// In-memory companion of a durable session (see the module docs).
pub(crate) struct Session {
    /// A writer holds the session; a second concurrent writer is refused.
    busy: bool,
    /// Running hash of the first `hashed` bytes, when known.
    hasher: Option<(Hasher, u64)>,
}

/// True if `id` has the form of an upload id (so callers can reject
/// garbage before touching the index).
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Inner {
    /// A new random id of the upload id form (32 lowercase hex): upload
    /// sessions, and the holders of pins.
    pub(crate) fn fresh_id(&self) -> Result<String, StorageError> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| StorageError::Io {
            op: "generate an id",
            path: self.config.data_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(hex::encode(raw))
    }

    fn upload_record(&self, repo: &RepoName, id: &str) -> Result<UploadRecord, UploadError> {
        let not_found = || UploadError::NotFound {
            repo: repo.to_string(),
            id: id.to_owned(),
        };
        if !valid_upload_id(id) {
            return Err(not_found());
        }
        match self.index.get(&UploadKey(id.to_owned()))? {
            Some(r) if r.repo == repo.as_str() => Ok(r),
            _ => Err(not_found()),
        }
    }

    fn session(&self, id: &str) -> Arc<Mutex<Session>> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Session {
                    busy: false,
                    hasher: None,
                }))
            })
            .clone()
    }

    fn forget_session(&self, id: &str) {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }

    /// Takes one of `owner`'s session slots, refusing the one past
    /// [`crate::EngineConfig::max_uploads_per_owner`]. The slot goes back
    /// when the returned guard drops, unless [`UploadSlot::keep`] said the
    /// session's record was committed (then the batch that removes the
    /// record gives it back, through [`Inner::release_upload_slot`]).
    fn take_upload_slot(&self, owner: &str) -> Result<UploadSlot<'_>, UploadError> {
        if !owner.is_empty() {
            let limit = self.config.max_uploads_per_owner;
            let mut map = self.upload_owners.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(owner.to_owned()).or_default();
            if *n >= limit {
                return Err(UploadError::TooMany {
                    owner: owner.to_owned(),
                    limit,
                });
            }
            *n += 1;
        }
        Ok(UploadSlot {
            inner: self,
            owner: owner.to_owned(),
            kept: false,
        })
    }

    /// Gives back the slot of a session of `owner` whose record a committed
    /// batch removed.
    pub(crate) fn release_upload_slot(&self, owner: &str) {
        if owner.is_empty() {
            return;
        }
        let mut map = self.upload_owners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(owner);
            }
        }
    }

    /// A store error; a failed sync in it poisons the engine.
    pub(crate) fn store_err(&self, e: StoreError) -> StorageError {
        let sync_failure = e.is_sync_failure();
        let e = StorageError::from(e);
        if sync_failure {
            self.poison(&e);
        }
        e
    }

    /// Startup recovery of upload sessions, deciding by the store's staged
    /// ids: cut every session's staged blob back to its durable offset
    /// (dropping unacknowledged tails), drop records whose staged blob is
    /// gone (or shorter than the offset), whose key is not an upload id or
    /// whose value does not decode,
    /// and abort staged ids that have no record. IMPORTANT: the store never hands out a staged blob that is
    /// also a published one (`open_staged`), so the cut can only shorten
    /// bytes no blob owns.
    pub(crate) fn recover_uploads(&self) -> Result<(), StorageError> {
        if self.index.is_shared() {
            return self.recover_shared_uploads();
        }
        let mut live = std::collections::HashSet::new();
        let mut owners: HashMap<String, u64> = HashMap::new();
        let mut dead = Vec::new();
        let mut corrupt = Vec::new();
        let mut published = Vec::new();
        for r in self.index.scan_keys(UploadKey::all()) {
            let key = match r {
                Ok(key) => key,
                // Not an upload id: it names no staged blob, like a
                // record whose staged blob is gone.
                Err(StorageError::CorruptKey(k)) => {
                    tracing::warn!(key = %k, "upload record under a corrupt key; dropping it");
                    corrupt.push(k);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let rec = match self.index.get(&key) {
                Ok(Some(rec)) => rec,
                Ok(None) => continue,
                // A session whose record does not decode cannot be resumed
                // or completed: dropped, its staged bytes aborted below.
                Err(StorageError::Corrupt { what, detail }) => {
                    tracing::warn!(key = %what, %detail, "upload record is corrupt; dropping the session");
                    dead.push(key.0);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let UploadKey(id) = key;
            let Some(staged) = self.store.open_staged(&id).map_err(|e| self.store_err(e))? else {
                if self.index.is_shared() {
                    // Cluster mode: a session not staged here is another
                    // node's, maybe completing right now; only it may
                    // finish or drop it. (One this node published before a
                    // crash was never acknowledged: expiry removes it and
                    // the client uploads again.)
                    continue;
                }
                if let Some(d) = self.published_by_crash(&rec)? {
                    published.push((id, rec, d));
                    continue;
                }
                tracing::warn!(upload = %id, "staged upload missing; dropping session");
                dead.push(id);
                continue;
            };
            let len = staged.len().map_err(|e| self.store_err(e))?;
            if len > rec.offset {
                tracing::info!(upload = %id, durable = rec.offset, len, "truncating unacknowledged upload tail");
                staged
                    .truncate(rec.offset)
                    .and_then(|()| staged.sync())
                    .map_err(|e| self.store_err(e))?;
            } else if len < rec.offset {
                tracing::warn!(upload = %id, durable = rec.offset, len, "staged upload shorter than its durable offset; dropping session");
                dead.push(id);
                continue;
            }
            if !rec.owner.is_empty() {
                *owners.entry(rec.owner).or_default() += 1;
            }
            live.insert(id);
        }
        *self.upload_owners.lock().unwrap_or_else(|p| p.into_inner()) = owners;
        for (id, rec, digest) in published {
            self.finish_published(&id, &rec, &digest)?;
        }
        if !dead.is_empty() || !corrupt.is_empty() {
            let _g = self.lock()?;
            let mut b = Batch::default();
            for id in dead {
                b.delete(&UploadKey(id));
            }
            for k in &corrupt {
                b.delete_corrupt(k);
            }
            self.commit(_g, b)?;
        }
        for id in self.store.staged_ids().map_err(|e| self.store_err(e))? {
            if !live.contains(&id) {
                tracing::info!(upload = %id, "aborting a staged upload without a session record");
                if let Err(e) = self.store.abort(&id) {
                    tracing::warn!(upload = %id, error = %e, "aborting a staged upload");
                }
            }
        }
        Ok(())
    }

    /// Cluster mode: what is staged on this node under an upload id is the
    /// buffer of a request a crash cut, never acknowledged (acknowledged
    /// bytes are segments in the shared staging, named in the records,
    /// which every node may go on with): every such buffer is aborted, and
    /// no record is touched. The per-owner session counts start from the
    /// cluster's records (the bound then counts this node's begins and
    /// completions: per node, seeded from every node's sessions).
    fn recover_shared_uploads(&self) -> Result<(), StorageError> {
        let mut owners: HashMap<String, u64> = HashMap::new();
        for r in self.index.scan(UploadKey::all()) {
            match r {
                Ok((_, rec)) if !rec.owner.is_empty() => *owners.entry(rec.owner).or_default() += 1,
                Ok(_) | Err(StorageError::CorruptKey(_)) | Err(StorageError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        *self.upload_owners.lock().unwrap_or_else(|p| p.into_inner()) = owners;
        for id in self.store.staged_ids().map_err(|e| self.store_err(e))? {
            if valid_upload_id(&id) {
                if let Err(e) = self.store.abort(&id) {
                    tracing::warn!(upload = %id, error = %e, "aborting an unacknowledged upload buffer");
                }
            }
        }
        Ok(())
    }

    /// The blob a crash left published for session `rec` whose staged blob
    /// is gone: the digest its record notes as `publishing`, if the store
    /// holds it at the session's full size (its content was verified
    /// against that digest before the note was written).
    fn published_by_crash(&self, rec: &UploadRecord) -> Result<Option<Digest>, StorageError> {
        let Some(d) = &rec.publishing else {
            return Ok(None);
        };
        if RepoName::parse(&rec.repo).is_err() {
            return Ok(None);
        }
        let size = self.store.stat(d).map_err(|e| self.store_err(e))?;
        Ok((size == Some(rec.offset)).then(|| d.clone()))
    }

    /// Finishes the completion of upload `id` that a crash cut between
    /// the store's publish and the commit point: the blob is linked in the
    /// session's repository and the session removed, in one batch, as
    /// `commit_blob` would have. Runs at open, before GC can start.
    fn finish_published(
        &self,
        id: &str,
        rec: &UploadRecord,
        digest: &Digest,
    ) -> Result<(), StorageError> {
        let repo = RepoName::parse(&rec.repo).map_err(|e| StorageError::Corrupt {
            what: UploadKey(id.to_owned()).to_string(),
            detail: e.to_string(),
        })?;
        let g = self.lock()?;
        let now = records::now_ms();
        let existing = self.index.get(&BlobKey(digest.clone()))?;
        let mut blob = self.blob_record_to_link(digest, existing, rec.offset, now)?;
        let mut batch = Batch::default();
        self.link_into(&mut batch, &repo, digest, &mut blob, now)?;
        self.put_blob_record(&mut batch, digest, &blob);
        batch.delete(&UploadKey(id.to_owned()));
        batch.delete(&PinKey(digest.clone(), id.to_owned()));
        // Its quota was checked before the crash; a limit lowered since
        // must not stop the engine from opening.
        batch.allow_over_quota();
        self.commit(g, batch)?;
        tracing::info!(upload = %id, %repo, blob = %digest, "finished an upload completion cut by a crash");
        Ok(())
    }

    /// Expires sessions not updated for `ttl` and not being written.
    pub(crate) fn expire_uploads(&self, ttl: Duration) -> Result<usize, StorageError> {
        let cutoff =
            records::now_ms().saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let mut expired = Vec::new();
        for r in self.index.scan(UploadKey::all()) {
            let (UploadKey(id), rec) = r?;
            if rec.updated_ms < cutoff {
                expired.push((id, rec));
            }
        }
        let mut n = 0;
        for (id, rec) in expired {
            if let Ok(repo) = RepoName::parse(&rec.repo) {
                match self.cancel(&repo, &id) {
                    Ok(()) => n += 1,
                    Err(UploadError::Busy { .. }) | Err(UploadError::NotFound { .. }) => {}
                    Err(UploadError::Storage(e)) => return Err(e),
                    Err(e) => tracing::warn!(upload = %id, error = %e, "expiring upload"),
                }
            }
        }
        if n > 0 {
            tracing::info!(count = n, "expired abandoned upload sessions");
            crate::metrics::EngineMetrics::add(&self.metrics.uploads_expired, n as u64);
        }
        Ok(n)
    }

    fn cancel(&self, repo: &RepoName, id: &str) -> Result<(), UploadError> {
        let rec = self.upload_record(repo, id)?;
        let session = self.session(id);
        let s = session.lock().unwrap_or_else(|p| p.into_inner());
        if s.busy {
            return Err(UploadError::Busy { id: id.to_owned() });
        }
        {
            let _g = self.lock()?;
            let mut b = Batch::default();
            b.delete(&UploadKey(id.to_owned()));
            if let Some(d) = &rec.publishing {
                b.delete(&PinKey(d.clone(), id.to_owned()));
            }
            self.commit(_g, b)?;
        }
        self.release_upload_slot(&rec.owner);
        drop(s);
        self.forget_session(id);
        // A failure leaves an orphan staged id, aborted by the next open.
        if let Err(e) = self.store.abort(id) {
            tracing::warn!(upload = %id, error = %e, "aborting the staged blob of a cancelled session");
        }
        if self.index.is_shared() {
            // Those recorded, and any a cut request left unrecorded.
            self.drop_segments(id, None);
        }
        Ok(())
    }

    /// Removes upload `id`'s segment `name`, or all of them (best effort:
    /// one left behind is garbage no record names, logged).
    fn drop_segments(&self, id: &str, name: Option<&str>) {
        if let Err(e) = self.store.drop_segments(id, name) {
            tracing::warn!(upload = %id, error = %e, "removing upload segments");
        }
    }

    /// Adds `digest` to `repo` in `batch`: link, reverse link, repository
    /// record, and the blob record's link count and touch time. IMPORTANT:
    /// the caller holds the write lock and writes `rec` into the batch.
    pub(crate) fn link_into(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        digest: &Digest,
        rec: &mut BlobRecord,
        now: u64,
    ) -> Result<(), StorageError> {
        rec.touched_ms = now;
        rec.state = BlobState::Active;
        let link = LinkKey(repo.clone(), digest.clone());
        if !self.index.contains(&link)? {
            Count::Links.up(&mut rec.links, || format!("blob {digest}"))?;
            batch.put(&link, &LinkRecord { created_ms: now });
            batch.put(&BlobRepoKey(digest.clone(), repo.clone()), &Empty);
        }
        self.ensure_repo(batch, repo, now)?;
        Ok(())
    }
}

impl Inner {
    /// The record a blob of `size` bytes, just stored or found in the
    /// store, is linked with: the stored one, or a new record when there is
    /// none, saying where the store holds the bytes now. A stored record of
    /// another size is an index that disagrees with the content address:
    /// refused (nothing is written), so its counts are never replaced by a
    /// fresh record's zeros. Call under the write lock: a move the store
    /// makes after its answer here is applied by the tier worker after the
    /// caller's batch (it reads the record under the lock too); unanswered
    /// (a failed HEAD), the worker asks again.
    pub(crate) fn blob_record_to_link(
        &self,
        digest: &Digest,
        existing: Option<BlobRecord>,
        size: u64,
        now: u64,
    ) -> Result<BlobRecord, StorageError> {
        let mut rec = match existing {
            Some(r) if r.size == size => r,
            Some(r) => {
                return Err(StorageError::Corrupt {
                    what: format!("blob {digest}"),
                    detail: format!("recorded size {} but the content is {size} bytes", r.size),
                })
            }
            None => BlobRecord {
                size,
                tier: Tier::Local,
                refcount: 0,
                links: 0,
                state: BlobState::Active,
                created_ms: now,
                touched_ms: now,
            },
        };
        match self.locate(digest) {
            Ok(Some(located)) => rec.tier = located.tier,
            Ok(None) | Err(_) => {
                let _ = self.tier_moves.send(digest.clone());
            }
        }
        Ok(rec)
    }

    pub(crate) fn ensure_repo(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        now: u64,
    ) -> Result<(), StorageError> {
        let key = RepoKey(repo.clone());
        if !self.index.contains(&key)? {
            batch.put(&key, &RepoRecord { created_ms: now });
        }
        Ok(())
    }

    /// Publishes `source` in the blob store as `digest`; a failed fsync
    /// there poisons the engine.
    fn store_commit(&self, digest: &Digest, source: BlobSource) -> Result<(), StorageError> {
        match source {
            BlobSource::Staged(staged) => self.store.commit(staged, digest, PutMode::CreateOnly),
            BlobSource::Segments { upload, segments } => {
                self.store
                    .compose(&upload, &segments, digest, PutMode::CreateOnly)
            }
        }
        .map(|_| ())
        .map_err(|e| self.store_err(e))
    }

    /// Stores `data` (which hashes to `digest`) in the blob store, unless
    /// it is there already; a failed fsync there poisons the engine. The
    /// caller pins `digest` and indexes it in a later batch.
    pub(crate) fn store_bytes(&self, digest: &Digest, data: &[u8]) -> Result<(), StorageError> {
        self.store
            .put_bytes(digest, data, PutMode::CreateOnly)
            .map(|_| ())
            .map_err(|e| self.store_err(e))
    }

    /// Writes `publishing: digest` into upload `id`'s record. Written, not
    /// synced: a kill keeps it (the WAL write is in the kernel before the
    /// store publishes), and the commit point's sync makes it durable with
    /// the rest. A power loss between the store's publish and the commit
    /// point can lose the note but keep the published file: recovery then
    /// drops the session (its completion was never acknowledged; the
    /// client uploads again, and the orphan file is reused or collected by
    /// `fsck --repair`).
    ///
    /// The same batch pins `digest` for the upload (`Inner::commit_pins`),
    /// so no GC run on any node claims it until the completion's commit
    /// point removes the pin; while one has a live claim on it, this waits.
    fn note_publishing(&self, id: &str, digest: &Digest) -> Result<(), StorageError> {
        let key = UploadKey(id.to_owned());
        self.commit_pins(&[digest], id, |b| {
            if let Some(mut rec) = self.index.get(&key)? {
                rec.publishing = Some(digest.clone());
                b.put(&key, &rec);
            }
            Ok(())
        })
    }

    /// Commits the verified, staged content of upload `staged.id()` as blob
    /// `digest` linked in `repo`, removing the upload session in the same
    /// batch.
    ///
    /// The write path, top to bottom:
    /// 0. Reserve the blob's size against the project's quota (refused
    ///    over it: nothing is stored).
    /// 1. Pin the digest against GC (waiting first if GC is deleting it right
    ///    now). IMPORTANT: while pinned, GC starts no deletion of this
    ///    digest, so a store file found "already there" stays there. Note
    ///    the digest in the upload record (`publishing`) before the store
    ///    can take the staged blob: a crash after publishing and before the
    ///    commit point leaves the record without its staged blob, and
    ///    recovery finishes the completion from the note.
    /// 2. Outside the lock, if the index does not already hold the blob live,
    ///    the store commits the staged blob (CreateOnly: a concurrent
    ///    identical upload that got there first wins, and ours is dropped). Store puts can
    ///    be slow (S3), so they stay outside the lock. Never while the record
    ///    is `Deleting` (a deletion left by a crash): that file may be gone.
    /// 3. Under the lock, re-read the blob record. If it vanished or is a
    ///    leftover `Deleting` record and we skipped the put, put now (pinned:
    ///    nobody unlinks it any more); a leftover record becomes Active again.
    /// 4. One synced batch: blob record (with the tier the store locates
    ///    the bytes in), link, reverse link, repository record, upload
    ///    record removal. This is the commit point.
    /// 5. Abort the staged blob if the store did not take it; unpin.
    pub(crate) fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        source: BlobSource,
    ) -> Result<BlobInfo, StorageError> {
        let upload_id = source.upload_id().to_owned();
        // Cluster mode: the segments to remove after the commit point.
        let segments: Option<Vec<String>> = match &source {
            BlobSource::Segments { segments, .. } => {
                Some(segments.iter().map(|s| s.name.clone()).collect())
            }
            BlobSource::Staged(_) => None,
        };
        let mut staged = Some(source);
        self.check_poison()?;
        let _pin = self.gc_digests.pin(digest);
        let key = BlobKey(digest.clone());
        let live = |r: &Option<BlobRecord>| {
            r.as_ref()
                .is_some_and(|r| r.size == size && r.state != BlobState::Deleting)
        };
        // A push over the project's quota is refused here, before the
        // store holds its bytes (`quotas.rs`); the commit checks again.
        let _reserved = self.reserve_quota(repo, digest, size)?;
        self.note_publishing(&upload_id, digest)?;
        let first = self.index.get(&key)?;
        let deleting =
            |r: &Option<BlobRecord>| r.as_ref().is_some_and(|r| r.state == BlobState::Deleting);
        if !live(&first) && !deleting(&first) {
            if let Some(s) = staged.take() {
                self.store_commit(digest, s)?;
            }
        }
        let _g = self.lock()?;
        let now = records::now_ms();
        let existing = self.index.get(&key)?;
        if !live(&existing) {
            if let Some(s) = staged.take() {
                self.store_commit(digest, s)?;
            }
        }
        let mut rec = self.blob_record_to_link(digest, existing, size, now)?;
        let mut batch = Batch::default();
        // link_into sets the state Active: a Marked blob is kept, a leftover
        // Deleting record is revived (its file was just put back).
        self.link_into(&mut batch, repo, digest, &mut rec, now)?;
        self.put_blob_record(&mut batch, digest, &rec);
        let mut owner = String::new();
        let ukey = UploadKey(upload_id.clone());
        if let Some(up) = self.index.get(&ukey)? {
            owner = up.owner;
        }
        batch.delete(&ukey);
        batch.delete(&PinKey(digest.clone(), upload_id.clone()));
        // IMPORTANT: the commit point. Before it the blob may sit in the
        // store unindexed (fsck reports it; a later commit reuses it).
        self.commit(_g, batch)?;
        self.release_upload_slot(&owner);
        if let Some(names) = segments {
            // The segments are in the blob now, or the blob was there. By
            // name (no listing); one a cut request left unrecorded goes
            // with GC's sweep of ended sessions.
            for name in &names {
                self.drop_segments(&upload_id, Some(name));
            }
        } else if staged.take().is_some() {
            // The blob was already stored: drop our copy. A failure leaves
            // an orphan staged id, aborted by the next open.
            if let Err(e) = self.store.abort(&upload_id) {
                tracing::warn!(upload = %upload_id, error = %e, "aborting the staged copy of a stored blob");
            }
        }
        Ok(BlobInfo {
            digest: digest.clone(),
            size,
        })
    }
}

impl Engine {
    /// Starts an upload session in `repo`, hashing with `algorithm` as bytes
    /// arrive. The session is durable before this returns. It has no owner
    /// and counts against no bound (engine-internal and tool uploads).
    pub fn begin_upload(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
    ) -> Result<UploadStatus, UploadError> {
        self.begin_upload_as(repo, algorithm, "")
    }

    /// [`Engine::begin_upload`] for `owner` (the server's key for the
    /// principal): refused with [`UploadError::TooMany`] while `owner`
    /// holds [`crate::EngineConfig::max_uploads_per_owner`] open sessions.
    /// A session holds its slot until it completes, is cancelled or expires.
    pub fn begin_upload_as(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
        owner: &str,
    ) -> Result<UploadStatus, UploadError> {
        let inner = &self.inner;
        inner.check_poison()?;
        let slot = inner.take_upload_slot(owner)?;
        let id = inner.fresh_id()?;
        // IMPORTANT: the staged blob exists durably before the record names
        // it, so recovery never sees a record without its staged blob. (In
        // cluster mode a record names segments, none yet.)
        if !inner.index.is_shared() {
            drop(inner.store.stage(&id).map_err(|e| inner.store_err(e))?);
        }
        let hasher = Hasher::new(algorithm);
        let now = records::now_ms();
        let rec = UploadRecord {
            repo: repo.to_string(),
            algorithm,
            offset: 0,
            owner: owner.to_owned(),
            created_ms: now,
            updated_ms: now,
            publishing: None,
            segments: Vec::new(),
            hash_state: None,
        };
        {
            let _g = inner.lock()?;
            let mut b = Batch::default();
            b.put(&UploadKey(id.clone()), &rec);
            if let Err(e) = inner.commit(_g, b) {
                // The staged id without a record would be aborted at the
                // next open; abort it now.
                let _ = inner.store.abort(&id);
                return Err(e.into());
            }
        }
        slot.keep();
        let session = inner.session(&id);
        session.lock().unwrap_or_else(|p| p.into_inner()).hasher = Some((hasher, 0));
        Ok(UploadStatus { id, offset: 0 })
    }

    /// The durable state of an upload.
    pub fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadStatus, UploadError> {
        let rec = self.inner.upload_record(repo, id)?;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset: rec.offset,
        })
    }

    /// Opens a writer appending to upload `id`. With `offset` given, it
    /// must equal the durable offset (out-of-order and overlapping appends
    /// are refused). Only one writer per session at a time.
    pub fn upload_writer(
        &self,
        repo: &RepoName,
        id: &str,
        offset: Option<u64>,
    ) -> Result<UploadWriter, UploadError> {
        let inner = &self.inner;
        inner.check_poison()?;
        // An unknown id is refused before it gets a session entry.
        let algorithm = inner.upload_record(repo, id)?.algorithm;
        let session = inner.session(id);
        let cached = {
            let mut s = session.lock().unwrap_or_else(|p| p.into_inner());
            if s.busy {
                return Err(UploadError::Busy { id: id.to_owned() });
            }
            s.busy = true;
            s.hasher.clone()
        };
        // From here the writer's drop releases the session on every error.
        let mut writer = UploadWriter {
            inner: inner.clone(),
            repo: repo.clone(),
            id: id.to_owned(),
            session,
            holds: true,
            staged: None,
            base: 0,
            start: 0,
            pos: 0,
            hasher: Hasher::new(algorithm),
            segments: None,
        };
        // IMPORTANT: the durable offset is read only now that this writer
        // holds the session. Read before, it could predate the commit of a
        // writer that released the session in between, and the truncation
        // below would cut that acknowledged chunk off (finding 12 of the
        // security review). Commits update the record before they release
        // the session, so this read sees every acknowledged byte.
        let rec = match inner.upload_record(repo, id) {
            Ok(rec) => rec,
            Err(e) => {
                // Completed or cancelled in between: no session to keep.
                drop(writer);
                inner.forget_session(id);
                return Err(e);
            }
        };
        if let Some(o) = offset {
            if o != rec.offset {
                return Err(UploadError::OffsetMismatch {
                    id: id.to_owned(),
                    expected: rec.offset,
                    got: o,
                });
            }
        }
        writer.start = rec.offset;
        writer.pos = rec.offset;
        if inner.index.is_shared() {
            writer.open_shared(&rec, cached)?;
            return Ok(writer);
        }
        // The store hands out only a staged blob that no published blob
        // shares bytes with, so the cut below cannot damage one.
        let Some(staged) = inner
            .store
            .open_staged(id)
            .map_err(|e| inner.store_err(e))?
        else {
            // Its bytes are gone (recovery drops such sessions at open; this
            // is one lost since): the session cannot go on.
            tracing::warn!(upload = %id, "staged upload missing; dropping session");
            let _g = inner.lock()?;
            let mut b = Batch::default();
            b.delete(&UploadKey(id.to_owned()));
            inner.commit(_g, b)?;
            inner.release_upload_slot(&rec.owner);
            return Err(UploadError::NotFound {
                repo: repo.to_string(),
                id: id.to_owned(),
            });
        };
        // Drop any unacknowledged tail left by a failed earlier request.
        staged
            .truncate(rec.offset)
            .map_err(|e| inner.store_err(e))?;
        writer.hasher = match cached {
            Some((h, n)) if n == rec.offset && h.algorithm() == rec.algorithm => h,
            _ => hash_prefix(&staged, rec.algorithm, rec.offset)?,
        };
        writer.staged = Some(staged);
        Ok(writer)
    }

    /// Completes upload `id` with no further bytes.
    pub fn complete_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<BlobInfo, UploadError> {
        self.upload_writer(repo, id, None)?.complete(digest, size)
    }

    /// Cancels upload `id`, removing its record and file.
    pub fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<(), UploadError> {
        self.inner.cancel(repo, id)
    }

    /// Expires upload sessions untouched for `ttl` now (the background worker
    /// does this periodically). Returns how many were expired.
    pub fn expire_uploads(&self, ttl: Duration) -> Result<usize, StorageError> {
        self.inner.expire_uploads(ttl)
    }

    /// Stores `data` as blob `digest` in `repo` in one call (monolithic
    /// upload), verifying the digest first.
    pub fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        data: &[u8],
    ) -> Result<BlobInfo, UploadError> {
        let status = self.begin_upload(repo, digest.algorithm())?;
        let mut w = self.upload_writer(repo, &status.id, Some(0))?;
        w.write(data)?;
        let r = w.complete(digest, Some(data.len() as u64));
        if r.is_err() {
            let _ = self.cancel_upload(repo, &status.id);
        }
        r
    }
}

/// Hashes the first `len` staged bytes.
fn hash_prefix(staged: &Staged, alg: Algorithm, len: u64) -> Result<Hasher, StorageError> {
    let mut h = Hasher::new(alg);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        staged
            .read_at(&mut buf[..n], at)
            .map_err(|e| StorageError::Corrupt {
                what: format!("uploads/{}", staged.id()),
                detail: format!("staged blob shorter than its durable offset {len}: {e}"),
            })?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h)
}

/// Hashes the bytes of `segments` of upload `id` with `alg`, in order.
fn hash_segments(
    inner: &Inner,
    id: &str,
    segments: &[Segment],
    alg: Algorithm,
) -> Result<Hasher, StorageError> {
    let mut h = Hasher::new(alg);
    for s in segments {
        inner
            .store
            .read_segment(id, &s.name, &mut |chunk| {
                h.update(chunk);
                Ok(())
            })
            .map_err(|e| inner.store_err(e))?;
    }
    Ok(h)
}

/// One owner's session slot between [`Inner::take_upload_slot`] and the
/// commit of the session's record; dropped before that, it goes back.
struct UploadSlot<'a> {
    inner: &'a Inner,
    owner: String,
    kept: bool,
}

impl UploadSlot<'_> {
    /// The record is committed: the slot now belongs to the session.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.inner.release_upload_slot(&self.owner);
        }
    }
}

/// Appends bytes to one upload session. Bytes written are not acknowledged
/// until [`UploadWriter::commit`] or [`UploadWriter::complete`] returns Ok;
/// dropping a writer abandons them (the next writer truncates them away).
/// `Send`, so it may be held across an async body read.
pub struct UploadWriter {
    inner: Arc<Inner>,
    repo: RepoName,
    id: String,
    session: Arc<Mutex<Session>>,
    /// True while this writer holds the session's busy flag. IMPORTANT:
    /// the flag is cleared once, by whoever clears `holds` first (commit,
    /// complete or drop): a writer that cleared it again on drop, after a
    /// commit had released it, would clear the flag of the next writer and
    /// let a third one in on the same offset.
    holds: bool,
    /// The session's staged blob (in cluster mode this request's buffer);
    /// `None` once a write failed or it was handed to the commit.
    staged: Option<Staged>,
    /// The upload offset of `staged`'s first byte: 0 on one node; in
    /// cluster mode the durable offset, or the start of a short last
    /// segment reopened into the buffer.
    base: u64,
    start: u64,
    pos: u64,
    hasher: Hasher,
    /// Cluster mode: the segments of the record this writer started from.
    segments: Option<SharedTail>,
}

/// What a cluster-mode writer started from: the record's segments, and
/// their last one when it is short: reopened into the buffer when the
/// first bytes arrive (a request with none reads nothing back), then
/// replaced by the writer's own segment.
struct SharedTail {
    segments: Vec<Segment>,
    short: Option<Segment>,
    reopened: bool,
}

impl SharedTail {
    /// The short tail this writer's segment replaces, once reopened.
    fn replaced(&self) -> Option<&Segment> {
        self.short.as_ref().filter(|_| self.reopened)
    }
}

/// What `commit_blob` publishes: a staged blob, or (cluster mode) an
/// upload's segments in the shared staging.
pub(crate) enum BlobSource {
    Staged(Staged),
    Segments {
        upload: String,
        segments: Vec<Segment>,
    },
}

impl BlobSource {
    fn upload_id(&self) -> &str {
        match self {
            BlobSource::Staged(s) => s.id(),
            BlobSource::Segments { upload, .. } => upload,
        }
    }
}

impl UploadWriter {
    /// The offset the next byte is written at.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// The upload id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Writes `data` at the current offset (not yet durable).
    pub fn write(&mut self, data: &[u8]) -> Result<(), UploadError> {
        self.write_all(&[data])
    }

    /// Writes `chunks` back to back at the current offset (not yet
    /// durable). When they add up to 1 MiB or more they are hashed on a
    /// second thread while this one writes, so the cost is max(hash, write)
    /// rather than their sum.
    pub fn write_all<B: AsRef<[u8]> + Sync>(&mut self, chunks: &[B]) -> Result<(), UploadError> {
        if self.pos == self.start && chunks.iter().any(|c| !c.as_ref().is_empty()) {
            self.reopen_tail()?;
        }
        let staged = self.staged.as_ref().ok_or_else(|| UploadError::Busy {
            id: self.id.clone(),
        })?;
        let len: usize = chunks.iter().map(|c| c.as_ref().len()).sum();
        let end = u64::try_from(len)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .ok_or_else(|| {
                UploadError::Storage(StorageError::Corrupt {
                    what: format!("uploads/{}", self.id),
                    detail: "upload size overflows".to_owned(),
                })
            })?;
        let base = self.base;
        let write_at = |mut pos: u64| -> Result<(), StoreError> {
            // pos >= base: the writer only moves forward from it.
            pos -= base;
            for c in chunks {
                staged.write_at(c.as_ref(), pos)?;
                pos += c.as_ref().len() as u64;
            }
            Ok(())
        };
        let pos = self.pos;
        let written = if len >= PARALLEL_HASH_MIN {
            let hasher = &mut self.hasher;
            std::thread::scope(|s| {
                s.spawn(|| chunks.iter().for_each(|c| hasher.update(c.as_ref())));
                write_at(pos)
            })
        } else {
            write_at(pos).map(|()| chunks.iter().for_each(|c| self.hasher.update(c.as_ref())))
        };
        if let Err(e) = written {
            // The hasher may now be ahead of the file: this writer is done.
            // The session's cached hasher still matches its durable offset.
            self.staged = None;
            return Err(StorageError::from(e).into());
        }
        self.pos = end;
        Ok(())
    }

    /// Cluster mode: prepares this writer on `rec`, read under the
    /// session: a fresh local buffer (whatever this node had staged for the
    /// session is an unacknowledged leftover; a short last segment is read
    /// into it with the first bytes, [`UploadWriter::reopen_tail`]), and
    /// the hasher at the durable offset (from the record's state, this
    /// node's cache, or the segments hashed again).
    fn open_shared(
        &mut self,
        rec: &UploadRecord,
        cached: Option<(Hasher, u64)>,
    ) -> Result<(), UploadError> {
        let inner = self.inner.clone();
        inner
            .store
            .abort(&self.id)
            .map_err(|e| inner.store_err(e))?;
        let buffer = inner
            .store
            .stage(&self.id)
            .map_err(|e| inner.store_err(e))?;
        self.base = rec.offset;
        self.staged = Some(buffer);
        let resumed = rec
            .hash_state
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|state| Hasher::resume(rec.algorithm, &state));
        self.hasher = match (resumed, cached) {
            (Some(h), _) => h,
            (None, Some((h, n))) if n == rec.offset && h.algorithm() == rec.algorithm => h,
            _ if rec.offset == 0 => Hasher::new(rec.algorithm),
            _ => hash_segments(&inner, &self.id, &rec.segments, rec.algorithm)?,
        };
        self.segments = Some(SharedTail {
            segments: rec.segments.clone(),
            short: rec
                .segments
                .last()
                .filter(|s| s.size() < MIN_SEGMENT)
                .cloned(),
            reopened: false,
        });
        Ok(())
    }

    /// Cluster mode, before the first bytes: reads a short last segment
    /// back into the empty buffer, which then starts at that segment's
    /// start (see [`SharedTail`]).
    fn reopen_tail(&mut self) -> Result<(), UploadError> {
        let Some(tail) = self.segments.as_mut() else {
            return Ok(());
        };
        let (Some(last), false) = (&tail.short, tail.reopened) else {
            return Ok(());
        };
        let buffer = self.staged.as_ref().ok_or_else(|| UploadError::Busy {
            id: self.id.clone(),
        })?;
        let inner = &self.inner;
        let mut at = 0u64;
        inner
            .store
            .read_segment(&self.id, &last.name, &mut |chunk| {
                buffer.write_at(chunk, at)?;
                at += chunk.len() as u64;
                Ok(())
            })
            .map_err(|e| inner.store_err(e))?;
        if at != last.size() || last.end != self.start {
            return Err(StorageError::Corrupt {
                what: UploadKey(self.id.clone()).to_string(),
                detail: format!(
                    "segment {} holds {at} bytes, recorded as [{}, {}) of {}",
                    last.name, last.start, last.end, self.start
                ),
            }
            .into());
        }
        self.base = last.start;
        tail.reopened = true;
        Ok(())
    }

    /// Cluster mode: stores the buffer, when it holds bytes past the
    /// durable offset, as a new segment in the shared staging; the record's
    /// segment list with it (the reopened short tail replaced), and the
    /// tail it replaces. `None` on one node, or with nothing new.
    #[allow(clippy::type_complexity)]
    fn put_segment(&mut self) -> Result<Option<(Vec<Segment>, Option<Segment>)>, UploadError> {
        let Some(tail) = &self.segments else {
            return Ok(None);
        };
        if self.pos == self.start {
            return Ok(None);
        }
        let buffer = self.staged.take().ok_or_else(|| UploadError::Busy {
            id: self.id.clone(),
        })?;
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|e| StorageError::Io {
            op: "name an upload segment",
            path: self.inner.config.data_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let name = hex::encode(raw);
        self.inner
            .store
            .put_segment(&self.id, &name, buffer)
            .map_err(|e| self.inner.store_err(e))?;
        let mut segments = tail.segments.clone();
        if tail.reopened {
            segments.pop();
        }
        segments.push(Segment {
            name,
            start: self.base,
            end: self.pos,
        });
        Ok(Some((segments, tail.replaced().cloned())))
    }

    fn sync(&self) -> Result<(), StorageError> {
        if self.pos == self.start {
            return Ok(());
        }
        let r = match &self.staged {
            Some(s) => s.sync().map_err(StorageError::from),
            None => Ok(()),
        };
        self.inner.poison_on_err(r)
    }

    /// Makes the bytes written durable and records the new offset; returns
    /// the acknowledged status.
    pub fn commit(mut self) -> Result<UploadStatus, UploadError> {
        self.sync()?;
        let inner = self.inner.clone();
        let shared = self.put_segment()?;
        let committed = (|| {
            let _g = inner.lock()?;
            let key = UploadKey(self.id.clone());
            let mut rec = inner
                .index
                .get(&key)?
                .ok_or_else(|| UploadError::NotFound {
                    repo: self.repo.to_string(),
                    id: self.id.clone(),
                })?;
            if let (Some(tail), Some((segments, _))) = (&self.segments, &shared) {
                // Another node acknowledged bytes of this session since
                // this writer started: its bytes win, ours are refused.
                if rec.offset != self.start || rec.segments != tail.segments {
                    return Err(UploadError::OffsetMismatch {
                        id: self.id.clone(),
                        expected: rec.offset,
                        got: self.start,
                    });
                }
                rec.segments = segments.clone();
                rec.hash_state = self.hasher.state().map(hex::encode);
            }
            rec.offset = self.pos;
            rec.updated_ms = records::now_ms();
            let mut b = Batch::default();
            // A completion that failed after its note: its pin goes too.
            if let Some(d) = rec.publishing.take() {
                b.delete(&PinKey(d, self.id.clone()));
            }
            b.put(&key, &rec);
            inner.commit(_g, b)?;
            Ok(())
        })();
        if let Some((segments, replaced)) = &shared {
            match (&committed, segments.last()) {
                // The short tail this writer reopened is in its segment now.
                (Ok(()), _) => {
                    if let Some(old) = replaced {
                        inner.drop_segments(&self.id, Some(&old.name));
                    }
                }
                (Err(_), Some(new)) => inner.drop_segments(&self.id, Some(&new.name)),
                (Err(_), None) => {}
            }
        }
        committed?;
        let status = UploadStatus {
            id: self.id.clone(),
            offset: self.pos,
        };
        let hasher = self.hasher.clone();
        self.release(Some((hasher, self.pos)));
        Ok(status)
    }

    /// Verifies the content (size if given, and digest) and commits it as a
    /// blob linked in the upload's repository, ending the session. On a
    /// mismatch nothing changes: the session keeps its durable offset.
    pub fn complete(mut self, digest: &Digest, size: Option<u64>) -> Result<BlobInfo, UploadError> {
        if let Some(expected) = size {
            if expected != self.pos {
                return Err(UploadError::SizeMismatch {
                    id: self.id.clone(),
                    expected,
                    actual: self.pos,
                });
            }
        }
        self.sync()?;
        // Cluster mode, with acknowledged segments: this request's bytes
        // join them and the bucket composes the blob. (Without, the whole
        // upload is in the buffer, published as on one node.)
        let recorded = match &self.segments {
            Some(tail) if !tail.segments.is_empty() => Some(tail.segments.clone()),
            _ => None,
        };
        // The short tail this request reopened is in its new segment: it
        // goes too once the blob is committed.
        let mut replaced = None;
        let segments = match recorded {
            Some(recorded) => Some(match self.put_segment()? {
                Some((segments, tail)) => {
                    replaced = tail;
                    segments
                }
                None => recorded,
            }),
            None => None,
        };
        let actual = if digest.algorithm() == self.hasher.algorithm() {
            self.hasher.clone().finalize()
        } else if let Some(segments) = &segments {
            hash_segments(&self.inner, &self.id, segments, digest.algorithm())?.finalize()
        } else {
            let staged = self.staged.as_ref().ok_or_else(|| UploadError::Busy {
                id: self.id.clone(),
            })?;
            hash_prefix(staged, digest.algorithm(), self.pos)?.finalize()
        };
        if &actual != digest {
            return Err(UploadError::DigestMismatch {
                id: self.id.clone(),
                expected: digest.clone(),
                actual,
            });
        }
        let source = match segments {
            Some(segments) => {
                // The buffer is in a segment now, or held nothing.
                if let Some(buffer) = self.staged.take() {
                    drop(buffer);
                    let _ = self.inner.store.abort(&self.id);
                }
                BlobSource::Segments {
                    upload: self.id.clone(),
                    segments,
                }
            }
            None => BlobSource::Staged(self.staged.take().ok_or_else(|| UploadError::Busy {
                id: self.id.clone(),
            })?),
        };
        let info = self
            .inner
            .commit_blob(&self.repo, digest, self.pos, source)?;
        if let Some(tail) = replaced {
            self.inner.drop_segments(&self.id, Some(&tail.name));
        }
        self.release(None);
        self.inner.forget_session(&self.id);
        Ok(info)
    }

    /// Gives the session back (once), caching `hasher` if given.
    fn release(&mut self, hasher: Option<(Hasher, u64)>) {
        if !self.holds {
            return;
        }
        // Cluster mode: the buffer goes while the session is still held,
        // so it can never be the next writer's.
        if self.segments.is_some() {
            if let Some(buffer) = self.staged.take() {
                drop(buffer);
                if let Err(e) = self.inner.store.abort(&self.id) {
                    tracing::warn!(upload = %self.id, error = %e, "aborting an upload buffer");
                }
            }
        }
        self.holds = false;
        {
            let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
            s.busy = false;
            if hasher.is_some() {
                s.hasher = hasher;
            }
        }
        if self.segments.is_some() {
            // Cluster mode: the next request of the session may reach
            // another node, which completes it: this node would never
            // forget the entry. Dropped unless another writer of this node
            // holds it (its clone is taken under the map's lock, as this
            // count is read).
            let mut map = self
                .inner
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if Arc::strong_count(&self.session) == 2 {
                map.remove(&self.id);
            }
        }
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        // Unacknowledged bytes are abandoned; the cached hasher stays valid
        // for the durable offset because it was only replaced on commit.
        self.release(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::fsck::FsckOptions;

    /// Runs an upload up to what `commit_blob` does before its commit
    /// point (the note, when `note`, then the store's publish), then stops
    /// as a kill would; returns the upload id.
    fn cut_after_publishing(dir: &std::path::Path, data: &[u8], d: &Digest, note: bool) -> String {
        let e = Engine::open(EngineConfig::new(dir)).expect("open");
        let repo = RepoName::parse("p/r").expect("repo");
        let id = e.begin_upload(&repo, Algorithm::Sha256).expect("begin").id;
        let mut w = e.upload_writer(&repo, &id, Some(0)).expect("writer");
        w.write(data).expect("write");
        w.commit().expect("append");
        let staged = e
            .inner
            .store
            .open_staged(&id)
            .expect("open")
            .expect("staged");
        if note {
            e.inner.note_publishing(&id, d).expect("note");
        }
        e.inner
            .store_commit(d, BlobSource::Staged(staged))
            .expect("publish");
        id
    }

    #[test]
    fn a_completion_cut_after_publishing_is_finished_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = RepoName::parse("p/r").expect("repo");
        let data = b"cut between publish and commit".to_vec();
        let d = Digest::of(Algorithm::Sha256, &data);
        let id = cut_after_publishing(dir.path(), &data, &d, true);
        let e = Engine::open(EngineConfig::new(dir.path())).expect("reopen");
        assert!(matches!(
            e.upload_status(&repo, &id),
            Err(UploadError::NotFound { .. })
        ));
        let (info, got) = e.read_blob(&repo, &d, None).expect("the blob is linked");
        assert_eq!(info.size, data.len() as u64);
        assert_eq!(got.as_ref(), data.as_slice());
        let report = e.fsck(FsckOptions::default()).expect("fsck");
        assert!(report.findings.is_empty(), "{:?}", report.findings);
    }

    /// Without the note (a power loss took it), the session is dropped and
    /// the published file is unindexed (fsck lists it, repair removes it):
    /// nothing is linked that was not verified and noted.
    #[test]
    fn without_the_note_the_session_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = RepoName::parse("p/r").expect("repo");
        let data = b"published, never noted".to_vec();
        let d = Digest::of(Algorithm::Sha256, &data);
        let id = cut_after_publishing(dir.path(), &data, &d, false);
        let e = Engine::open(EngineConfig::new(dir.path())).expect("reopen");
        assert!(e.upload_status(&repo, &id).is_err());
        assert!(e.stat_blob(&repo, &d).expect("stat").is_none());
        let report = e.fsck(FsckOptions::default()).expect("fsck");
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.unindexed_blobs, [d]);
    }
}
