//! Online garbage collection, driven by the reference counts the engine
//! keeps. See `docs/gc.md` for the algorithm, the race argument and the
//! crash points; this is the code.
//!
//! A run, top to bottom:
//! 1. `delete_untagged` (option): delete manifests with no tag, no parent
//!    index and no present subject, repeating while that frees more (an
//!    index's children, a deleted subject's referrers).
//! 2. Expire abandoned upload sessions.
//! 3. Mark: scan `gc_candidates` (blobs whose refcount is 0 — the scan costs
//!    what the garbage costs, not what the store holds); under the write
//!    lock, set every one untouched for the grace window to `Marked`. Any
//!    later touch (upload completion, mount, link, HEAD, manifest reference)
//!    sets it `Active` again.
//! 4. Sweep, one blob at a time: under the lock, re-check (still `Marked`,
//!    refcount 0, not pinned by an upload in flight) and commit `Deleting`
//!    while claiming the digest; unlink the store file; under the lock,
//!    remove the record, its candidate entry and its links; release the
//!    claim. A record is never removed before its file.
//!
//! Across nodes (cluster mode, a shared index) the in-memory pins and
//! claims of [`GcDigests`] see one process only; what every node sees is
//! in the index, ordered by its write lock: an upload (or chart upload)
//! writes a pin (`pins`: digest, holder) with its `publishing` note before
//! it looks for the blob, and removes it in the batch that ends it; GC
//! claims no pinned digest, and its claim is the `Deleting` state with the
//! claim time in `touched_ms`. A pin is not taken while another node's
//! claim is live ([`CLAIM_LEASE`]): the upload waits. A GC deletes nothing
//! past [`DELETE_DEADLINE`] of its claim, so once the lease is over an
//! upload may put the bytes back and revive the record, and GC's removal
//! of the entries re-checks its claim first. One GC run at a time in the
//! cluster (`Index::try_exclusive`). See `docs/gc.md`.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::engine::{Engine, Inner};
use crate::error::StorageError;
use crate::index::Batch;
use crate::keys::{
    BlobKey, BlobRepoKey, CorruptKey, GcCandidateKey, GcRunKey, IdKind, LinkKey, PinKey,
    RepoManifestKey, UploadKey, WholeFamily,
};
use crate::metrics::EngineMetrics;
use crate::records::{self, BlobRecord, BlobState, GcRunRecord, Seq};

/// Cluster mode: a GC claim (a `Deleting` record, its `touched_ms` the
/// claim time) older than this is abandoned: its run died or stalled and
/// fenced itself off ([`DELETE_DEADLINE`]); an upload may then put the
/// bytes back and revive the record.
pub(crate) const CLAIM_LEASE: Duration = Duration::from_secs(300);
/// A run deletes no blob whose claim is older than this: half the lease,
/// so a store delete still in flight (a request and its retries end within
/// a minute) lands before any upload may put the bytes back.
const DELETE_DEADLINE: Duration = Duration::from_secs(150);
/// A pin older than this was left by a holder that died: ignored by GC's
/// claims, and removed by its runs.
const PIN_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often a pin waiting on a live claim looks again.
const PIN_RETRY: Duration = Duration::from_millis(100);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Marks are committed in batches of this many blobs.
const MARK_BATCH: usize = 1024;
/// Blobs deleted per sweep step (two commits per step).
const SWEEP_BATCH: usize = 256;
/// Runs kept in the history.
const HISTORY: usize = 50;
/// Untagged-deletion rounds per run (each round can free the next level).
const UNTAGGED_ROUNDS: usize = 16;

/// What a GC run does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcOptions {
    /// Unreferenced blobs touched within this window are kept.
    pub grace: Duration,
    /// Also delete manifests that have no tag, no parent index and are not
    /// accessories (referrers of a present subject).
    pub delete_untagged: bool,
    /// Report what would be deleted; change nothing.
    pub dry_run: bool,
    /// Expire upload sessions untouched this long (`None`: leave them).
    pub upload_ttl: Option<Duration>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            delete_untagged: false,
            dry_run: false,
            upload_ttl: None,
        }
    }
}

/// What a GC run did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GcReport {
    pub dry_run: bool,
    /// Untagged manifests deleted (per repository).
    pub manifests_deleted: u64,
    /// Upload sessions expired.
    pub uploads_expired: u64,
    /// Entries of the candidates index scanned.
    pub candidates: u64,
    /// Candidates kept because they were touched within the grace window.
    pub in_grace: u64,
    /// Blobs marked in this run.
    pub marked: u64,
    /// Marked blobs kept because they were touched after the mark.
    pub kept_touched: u64,
    /// Blobs deleted, their bytes, and the repository links removed with them.
    pub blobs_deleted: u64,
    pub bytes_reclaimed: u64,
    pub links_removed: u64,
}

/// Where a GC run is, for the test hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcPoint {
    /// The marks of this run are committed; nothing deleted yet.
    Marked,
    /// `digest` is committed `Deleting` and claimed; its file still exists.
    Deleting,
    /// `digest`'s file is unlinked; its record still exists.
    Unlinked,
}

/// Test hook: called at each [`GcPoint`] without the write lock held.
/// Returning `false` aborts the run there (as a crash would, except that
/// in-memory claims are released). Only with the `test-hooks` feature.
#[cfg(any(test, feature = "test-hooks"))]
pub type GcHook = std::sync::Arc<dyn Fn(GcPoint, Option<&Digest>) -> bool + Send + Sync>;

/// Progress callback: phase name, items done.
pub type Progress<'a> = &'a dyn Fn(&'static str, u64);

/// How a run was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcRunKind {
    /// Requested through the API.
    Manual,
    /// The periodic online GC.
    Scheduled,
    /// Called directly (berthctl, tests).
    Direct,
}

/// Where a run stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcRunStatus {
    Pending,
    Running,
    Success,
    Error(String),
}

/// One entry of the GC history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcRun {
    pub id: u64,
    pub kind: GcRunKind,
    pub options: GcOptions,
    pub status: GcRunStatus,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub report: Option<GcReport>,
}

impl GcRunKind {
    fn name(self) -> &'static str {
        match self {
            GcRunKind::Manual => "Manual",
            GcRunKind::Scheduled => "Scheduled",
            GcRunKind::Direct => "Direct",
        }
    }
}

/// A run as stored in `gc_runs`.
fn gc_run_record(r: &GcRun) -> GcRunRecord {
    let (status, error) = match &r.status {
        GcRunStatus::Pending => ("Pending", String::new()),
        GcRunStatus::Running => ("Running", String::new()),
        GcRunStatus::Success => ("Success", String::new()),
        GcRunStatus::Error(e) => ("Error", e.clone()),
    };
    GcRunRecord {
        kind: r.kind.name().to_owned(),
        grace_ms: ms(r.options.grace),
        delete_untagged: r.options.delete_untagged,
        dry_run: r.options.dry_run,
        upload_ttl_ms: r.options.upload_ttl.map(ms),
        status: status.to_owned(),
        error,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        report: r.report.clone(),
    }
}

/// A stored run; `alive` says whether a `Pending` or `Running` one may
/// still be going (else it was cut off by a stop of its process).
fn gc_run_of(id: u64, rec: GcRunRecord, alive: bool) -> GcRun {
    let kind = match rec.kind.as_str() {
        "Manual" => GcRunKind::Manual,
        "Scheduled" => GcRunKind::Scheduled,
        _ => GcRunKind::Direct,
    };
    let status = match rec.status.as_str() {
        "Success" => GcRunStatus::Success,
        "Pending" if alive => GcRunStatus::Pending,
        "Running" if alive => GcRunStatus::Running,
        "Pending" | "Running" => {
            GcRunStatus::Error("interrupted: the process stopped during the run".into())
        }
        _ => GcRunStatus::Error(rec.error),
    };
    GcRun {
        id,
        kind,
        options: GcOptions {
            grace: Duration::from_millis(rec.grace_ms),
            delete_untagged: rec.delete_untagged,
            dry_run: rec.dry_run,
            upload_ttl: rec.upload_ttl_ms.map(Duration::from_millis),
        },
        status,
        created_ms: rec.created_ms,
        updated_ms: rec.updated_ms,
        report: rec.report,
    }
}

/// Digests GC is deleting, and digests uploads are committing.
///
/// IMPORTANT, the rule that makes dedup safe against GC: GC claims a digest
/// (under the index write lock, before committing `Deleting`) only if no
/// upload has it pinned; an upload pins a digest (waiting while it is
/// claimed) before it looks at the index or the store, and unpins after its
/// commit. So while an upload may find the store file "already there" and
/// keep it, nobody unlinks that file. Owned by `Inner`; a mutex over two
/// small sets (held for a lookup, never across I/O), a condvar that wakes
/// pinners when a claim is released.
#[derive(Default)]
pub(crate) struct GcDigests {
    state: Mutex<DigestSets>,
    released: Condvar,
}

#[derive(Default)]
struct DigestSets {
    pinned: HashMap<Digest, usize>,
    claimed: HashSet<Digest>,
}

/// Unpins its digest when dropped.
pub(crate) struct Pin<'a> {
    owner: &'a GcDigests,
    digest: Digest,
}

impl GcDigests {
    fn sets(&self) -> std::sync::MutexGuard<'_, DigestSets> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `d`, first waiting until no GC deletion of it is in flight.
    pub(crate) fn pin(&self, d: &Digest) -> Pin<'_> {
        let mut s = self.sets();
        while s.claimed.contains(d) {
            s = self.released.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        *s.pinned.entry(d.clone()).or_default() += 1;
        Pin {
            owner: self,
            digest: d.clone(),
        }
    }

    /// Claims `d` for deletion unless an upload has it pinned (or it is
    /// already claimed).
    fn claim(&self, d: &Digest) -> bool {
        let mut s = self.sets();
        if s.pinned.contains_key(d) || s.claimed.contains(d) {
            return false;
        }
        s.claimed.insert(d.clone());
        true
    }

    fn release(&self, d: &Digest) {
        self.sets().claimed.remove(d);
        self.released.notify_all();
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut s = self.owner.sets();
        if let Some(n) = s.pinned.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                s.pinned.remove(&self.digest);
            }
        }
    }
}

/// Releases a claim when dropped (early returns, errors, aborts).
struct Claim<'a> {
    owner: &'a GcDigests,
    digest: &'a Digest,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.owner.release(self.digest);
    }
}

#[cfg(any(test, feature = "test-hooks"))]
fn aborted() -> StorageError {
    StorageError::Io {
        op: "gc",
        path: Default::default(),
        source: std::io::Error::other("run aborted by the test hook"),
    }
}

/// A `gc_candidates` entry to tidy away: no zero-refcount blob record
/// behind it, or a key that is not a digest at all.
enum Stale {
    Entry(GcCandidateKey),
    Corrupt(CorruptKey),
}

impl Inner {
    /// Removes, in `batch`, blob `d`'s record, its candidate entry and its
    /// links in every repository (found through `blob_repos`); returns how
    /// many links. IMPORTANT: only once the blob's store file is gone.
    /// Used by GC's sweep and fsck's repair of an interrupted deletion.
    pub(crate) fn remove_blob_entries(
        &self,
        batch: &mut Batch,
        d: &Digest,
    ) -> Result<u64, StorageError> {
        batch.delete(&BlobKey(d.clone()));
        batch.delete(&GcCandidateKey(d.clone()));
        let mut links = 0;
        for r in self.index.scan_keys(BlobRepoKey::of_blob(d)) {
            match r {
                Ok(reverse) => {
                    batch.delete(&LinkKey(reverse.1.clone(), d.clone()));
                    batch.delete(&reverse);
                    links += 1;
                }
                // Under this blob's prefix but naming no repository: it
                // mirrors no link, and goes with the blob.
                Err(StorageError::CorruptKey(k)) => {
                    tracing::warn!(key = %k, blob = %d, "removing a corrupt reverse link");
                    batch.delete_corrupt(&k);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(links)
    }

    #[cfg(any(test, feature = "test-hooks"))]
    fn hook(&self, point: GcPoint, d: Option<&Digest>) -> Result<(), StorageError> {
        match &self.config.gc_hook {
            Some(h) if !h(point, d) => Err(aborted()),
            _ => Ok(()),
        }
    }

    /// Without the `test-hooks` feature there is no hook: nothing to call.
    #[cfg(not(any(test, feature = "test-hooks")))]
    #[inline(always)]
    fn hook(&self, _point: GcPoint, _d: Option<&Digest>) -> Result<(), StorageError> {
        Ok(())
    }

    /// One GC run (see the module docs). One run at a time per engine.
    pub(crate) fn gc(
        &self,
        opts: &GcOptions,
        progress: Progress<'_>,
    ) -> Result<GcReport, StorageError> {
        let _run = self.gc_run.lock().unwrap_or_else(|p| p.into_inner());
        // One run at a time in the cluster (every process on the index).
        let _exclusive = match opts.dry_run {
            true => None,
            false => Some(self.index.try_exclusive("gc")?.ok_or_else(|| {
                StorageError::Busy("a GC run is in progress on another node".to_owned())
            })?),
        };
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        if opts.delete_untagged {
            self.gc_untagged(opts, &mut report, progress)?;
        }
        if let (Some(ttl), false) = (opts.upload_ttl, opts.dry_run) {
            report.uploads_expired = self.expire_uploads(ttl)? as u64;
        }
        if !opts.dry_run {
            self.remove_stale_pins()?;
            if self.index.is_shared() {
                self.sweep_segments()?;
            }
        }
        let cutoff = records::now_ms()
            .saturating_sub(u64::try_from(opts.grace.as_millis()).unwrap_or(u64::MAX));
        let eligible = |r: &BlobRecord| {
            r.refcount == 0 && r.touched_ms <= cutoff && r.state != BlobState::Deleting
        };

        // Mark: the candidates, read without the lock, then re-checked.
        let mut to_mark: Vec<(Digest, u64)> = Vec::new();
        let mut resume: Vec<Digest> = Vec::new();
        let mut stale: Vec<Stale> = Vec::new();
        for r in self.index.scan_keys(GcCandidateKey::all()) {
            report.candidates += 1;
            if report.candidates.is_multiple_of(4096) {
                progress("scan candidates", report.candidates);
            }
            let GcCandidateKey(d) = match r {
                Ok(k) => k,
                Err(StorageError::CorruptKey(k)) => {
                    tracing::warn!(key = %k, "removing a corrupt GC candidate entry");
                    stale.push(Stale::Corrupt(k));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self.index.get(&BlobKey(d.clone()))? {
                Some(rec) if rec.refcount == 0 && rec.state == BlobState::Deleting => {
                    resume.push(d) // a deletion a crash interrupted
                }
                Some(rec) if eligible(&rec) => to_mark.push((d, rec.size)),
                Some(rec) if rec.refcount == 0 => report.in_grace += 1,
                _ => stale.push(Stale::Entry(GcCandidateKey(d))),
            }
        }
        progress("scan candidates", report.candidates);
        if opts.dry_run {
            report.blobs_deleted = (to_mark.len() + resume.len()) as u64;
            report.bytes_reclaimed = to_mark.iter().map(|(_, s)| s).sum();
            return Ok(report);
        }
        if !stale.is_empty() {
            // Entries without a zero-refcount record: harmless, tidied.
            // IMPORTANT: re-checked under the lock, since a blob may have
            // reached refcount 0 (and its entry been written) after the scan.
            let g = self.lock()?;
            let mut b = Batch::default();
            for k in &stale {
                match k {
                    Stale::Entry(k) => {
                        let rec = self.index.get(&BlobKey(k.0.clone()))?;
                        if rec.is_none_or(|r| r.refcount != 0) {
                            b.delete(k);
                        }
                    }
                    Stale::Corrupt(k) => b.delete_corrupt(k),
                }
            }
            self.commit(g, b)?;
        }
        let mut marked: Vec<Digest> = Vec::with_capacity(to_mark.len());
        for chunk in to_mark.chunks(MARK_BATCH) {
            let g = self.lock()?;
            let mut b = Batch::default();
            for (d, _) in chunk {
                if let Some(mut rec) = self.index.get(&BlobKey(d.clone()))? {
                    if eligible(&rec) {
                        rec.state = BlobState::Marked;
                        self.put_blob_record(&mut b, d, &rec);
                        marked.push(d.clone());
                    }
                }
            }
            self.commit(g, b)?;
            progress("mark", marked.len() as u64);
        }
        report.marked = marked.len() as u64;
        self.hook(GcPoint::Marked, None)?;

        // Sweep.
        resume.extend(marked);
        let mut done = 0u64;
        for chunk in resume.chunks(SWEEP_BATCH) {
            self.gc_delete(chunk, cutoff, &mut report)?;
            done += chunk.len() as u64;
            progress("sweep", done);
        }
        Ok(report)
    }

    /// Deletes marked (or crash-interrupted) blobs that are still garbage,
    /// a batch at a time: one commit for the `Deleting` states, the unlinks,
    /// one commit for the removals.
    fn gc_delete(
        &self,
        ds: &[Digest],
        cutoff: u64,
        report: &mut GcReport,
    ) -> Result<(), StorageError> {
        // 1. Decide under the lock, claim, commit Deleting (at `now`, the
        //    claim time every node reads).
        let mut claimed: Vec<(Claim<'_>, u64)> = Vec::with_capacity(ds.len());
        let now = records::now_ms();
        {
            let g = self.lock()?;
            let mut b = Batch::default();
            for d in ds {
                let Some(mut rec) = self.index.get(&BlobKey(d.clone()))? else {
                    continue;
                };
                let garbage = rec.refcount == 0
                    && match rec.state {
                        BlobState::Marked => rec.touched_ms <= cutoff,
                        BlobState::Deleting => true,
                        BlobState::Active => false,
                    };
                // IMPORTANT: an upload of these bytes in flight, on any
                // node, has the digest pinned; then the blob is about to be
                // used: kept.
                if !garbage || self.pinned(d, now)? || !self.gc_digests.claim(d) {
                    report.kept_touched += 1;
                    continue;
                }
                claimed.push((
                    Claim {
                        owner: &self.gc_digests,
                        digest: d,
                    },
                    rec.size,
                ));
                rec.state = BlobState::Deleting;
                rec.touched_ms = now;
                self.put_blob_record(&mut b, d, &rec);
            }
            self.commit(g, b)?;
        }
        // IMPORTANT: a backup that took its snapshot before these claims
        // is linking the blobs it holds live; deleting now could take one
        // from under it (`backup.rs`). The claims stay for the next run.
        if let Some(pid) = self.backup_hold() {
            return Err(StorageError::Busy(format!(
                "GC paused: a backup (pid {pid}) is reading the data directory; the next run deletes what this one claimed"
            )));
        }
        let deadline = Instant::now() + DELETE_DEADLINE;
        // 2. Unlink the files (durably), outside the lock: S3 deletes are slow.
        let mut existed = Vec::with_capacity(claimed.len());
        for (c, _) in &claimed {
            self.hook(GcPoint::Deleting, Some(c.digest))?;
            if self.index.is_shared() && Instant::now() > deadline {
                // Past it, an upload may revive a claimed blob once the
                // lease ends: delete nothing more. The claims left are
                // resumed by the next run, or revived.
                return Err(StorageError::Busy(format!(
                    "GC stopped: its claims outlived the {} s deletion deadline; run it again",
                    DELETE_DEADLINE.as_secs()
                )));
            }
            match self.store.delete(c.digest) {
                Ok(e) => existed.push(e),
                Err(e) => {
                    let sync = e.is_sync_failure();
                    let e = StorageError::from(e);
                    if sync {
                        self.poison(&e);
                    }
                    return Err(e);
                }
            }
            self.hook(GcPoint::Unlinked, Some(c.digest))?;
        }
        // 3. Remove the records, their candidate entries and their links.
        {
            let g = self.lock()?;
            let mut b = Batch::default();
            for (c, _) in &claimed {
                // Still this run's claim: nobody revived it (only possible
                // once the lease is over, see the module docs).
                let ours = self
                    .index
                    .get(&BlobKey(c.digest.clone()))?
                    .is_some_and(|r| r.state == BlobState::Deleting && r.touched_ms == now);
                if ours {
                    report.links_removed += self.remove_blob_entries(&mut b, c.digest)?;
                }
            }
            self.commit(g, b)?;
        }
        for ((_, size), existed) in claimed.iter().zip(existed) {
            report.blobs_deleted += 1;
            if existed {
                report.bytes_reclaimed += size;
            }
        }
        // Claims are released here, after the records are gone.
        drop(claimed);
        Ok(())
    }

    /// Whether `rec` is claimed by a GC run that may still delete its
    /// bytes, as far as the index says: cluster mode only (on one node the
    /// in-memory claims of [`GcDigests`] say it, and pins wait on them).
    pub(crate) fn claim_is_live(&self, rec: &BlobRecord, now: u64) -> bool {
        self.index.is_shared()
            && rec.state == BlobState::Deleting
            && now < rec.touched_ms.saturating_add(ms(CLAIM_LEASE))
    }

    /// The process id of a backup reading this data directory, if one
    /// runs (single node: a cluster's index is backed up by PostgreSQL's
    /// own tools).
    fn backup_hold(&self) -> Option<u32> {
        if self.index.is_shared() {
            return None;
        }
        crate::backup::live_hold(&self.config.data_dir)
    }

    /// Whether an upload or chart upload on any node has `d` pinned.
    fn pinned(&self, d: &Digest, now: u64) -> Result<bool, StorageError> {
        for r in self.index.scan(PinKey::of_digest(d)) {
            let (_, Seq(at)) = r?;
            if now < at.saturating_add(ms(PIN_TTL)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Commits pins of `ds` for `holder` (with whatever `more` adds to the
    /// batch), so no GC run on any node claims them until the batch that
    /// ends the holder's work removes them. While a run on another node has
    /// a live claim on one of them, waits (the claim ends within
    /// [`CLAIM_LEASE`]). Not synced: a holder that dies loses nothing
    /// acknowledged, and its pins would only keep garbage a while.
    pub(crate) fn commit_pins(
        &self,
        ds: &[&Digest],
        holder: &str,
        more: impl Fn(&mut Batch) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let give_up = Instant::now() + CLAIM_LEASE + Duration::from_secs(1);
        loop {
            let g = self.lock()?;
            let now = records::now_ms();
            let mut b = Batch::default();
            let mut claimed = None;
            for d in ds {
                match self.index.get(&BlobKey((*d).clone()))? {
                    Some(rec) if self.claim_is_live(&rec, now) => {
                        claimed = Some(*d);
                        break;
                    }
                    _ => b.put(&PinKey((*d).clone(), holder.to_owned()), &Seq(now)),
                }
            }
            let Some(d) = claimed else {
                more(&mut b)?;
                return self.commit_unsynced(g, b);
            };
            drop(g);
            if Instant::now() > give_up {
                return Err(StorageError::Busy(format!(
                    "blob {d} is being deleted by GC"
                )));
            }
            std::thread::sleep(PIN_RETRY);
        }
    }

    /// Cluster mode: removes the upload segments of sessions that are gone
    /// (a node died between a completion's commit point and its removal of
    /// the segments, or a cut request's segment was never recorded). Safe
    /// against sessions in flight: a segment is only written for a session
    /// whose record exists, and a write that finds its record gone drops its
    /// own segment. Costs a listing of the uploads in progress.
    fn sweep_segments(&self) -> Result<(), StorageError> {
        let mut swept = 0u64;
        for id in self
            .store
            .segment_uploads()
            .map_err(|e| self.store_err(e))?
        {
            if crate::uploads::valid_upload_id(&id)
                && !self.index.contains(&UploadKey(id.clone()))?
            {
                self.store
                    .drop_segments(&id, None)
                    .map_err(|e| self.store_err(e))?;
                swept += 1;
            }
        }
        if swept > 0 {
            tracing::info!(
                uploads = swept,
                "removed the segments of ended upload sessions"
            );
        }
        Ok(())
    }

    /// Removes pins older than [`PIN_TTL`] (their holders died).
    fn remove_stale_pins(&self) -> Result<(), StorageError> {
        let cutoff = records::now_ms().saturating_sub(ms(PIN_TTL));
        let mut stale = Vec::new();
        for r in self.index.scan(PinKey::all()) {
            let (k, Seq(at)) = r?;
            if at <= cutoff {
                stale.push(k);
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        let g = self.lock()?;
        let mut b = Batch::default();
        for k in &stale {
            b.delete(k);
        }
        self.commit(g, b)
    }

    /// Deletes untagged manifests (see [`GcOptions::delete_untagged`]).
    fn gc_untagged(
        &self,
        opts: &GcOptions,
        report: &mut GcReport,
        progress: Progress<'_>,
    ) -> Result<(), StorageError> {
        for _ in 0..UNTAGGED_ROUNDS {
            let mut victims = Vec::new();
            for r in self.index.scan(RepoManifestKey::all()) {
                let (RepoManifestKey(repo, d), rec) = r?;
                if rec.tags == 0 && rec.parents == 0 && !self.is_accessory(&repo, &d)? {
                    victims.push((repo, d));
                }
            }
            if victims.is_empty() {
                break;
            }
            if opts.dry_run {
                report.manifests_deleted += victims.len() as u64;
                break;
            }
            let mut deleted = 0;
            for (repo, d) in &victims {
                let gone = match self.delete_manifest(repo, d, crate::manifests::DeleteIf::Untagged)
                {
                    Ok(gone) => gone,
                    Err(crate::error::ManifestError::Storage(e)) => return Err(e),
                    // Untagged only: no tag, so no immutable one, is in
                    // the way; nothing else is refused.
                    Err(_) => false,
                };
                if gone {
                    deleted += 1;
                }
            }
            report.manifests_deleted += deleted;
            progress("delete untagged manifests", report.manifests_deleted);
            if deleted == 0 {
                break;
            }
        }
        if report.manifests_deleted > 0 && !opts.dry_run {
            self.wait_link_leases();
        }
        Ok(())
    }

    /// Runs GC and records it in the history and metrics.
    pub(crate) fn run_gc(
        &self,
        id: u64,
        opts: &GcOptions,
        progress: Progress<'_>,
    ) -> Result<GcReport, StorageError> {
        self.update_gc_run(id, GcRunStatus::Running, None);
        let r = self.gc(opts, progress);
        let m = &self.metrics;
        EngineMetrics::add(&m.gc_runs, 1);
        match &r {
            Ok(report) => {
                if !report.dry_run {
                    EngineMetrics::add(&m.gc_blobs_reclaimed, report.blobs_deleted);
                    EngineMetrics::add(&m.gc_bytes_reclaimed, report.bytes_reclaimed);
                    EngineMetrics::add(&m.gc_manifests_deleted, report.manifests_deleted);
                }
                if report.blobs_deleted + report.manifests_deleted > 0 {
                    tracing::info!(?report, "gc run done");
                }
                self.update_gc_run(id, GcRunStatus::Success, Some(report.clone()));
            }
            Err(e @ StorageError::Busy(_)) => {
                tracing::info!(error = %e, "gc run skipped");
                self.update_gc_run(id, GcRunStatus::Error(e.to_string()), None);
            }
            Err(e) => {
                EngineMetrics::add(&m.gc_failures, 1);
                tracing::warn!(error = %e, "gc run failed");
                self.update_gc_run(id, GcRunStatus::Error(e.to_string()), None);
            }
        }
        r
    }

    /// Adds a pending run to the history (`gc_runs`, the newest
    /// [`HISTORY`] kept); returns its id.
    pub(crate) fn new_gc_run(&self, kind: GcRunKind, opts: GcOptions) -> Result<u64, StorageError> {
        let g = self.lock()?;
        let mut b = Batch::default();
        let id = self.next_id(&mut b, IdKind::GcRun)?;
        let now = records::now_ms();
        let run = GcRun {
            id,
            kind,
            options: opts,
            status: GcRunStatus::Pending,
            created_ms: now,
            updated_ms: now,
            report: None,
        };
        b.put(&GcRunKey(id), &gc_run_record(&run));
        for k in self.index.scan_keys(GcRunKey::all()).skip(HISTORY - 1) {
            b.delete(&k?);
        }
        // IMPORTANT: held before the record is visible, so no reader sees
        // it `Pending` and not held (which reads as cut off by a stop).
        self.gc_held().insert(id);
        if let Err(e) = self.commit_unsynced(g, b) {
            self.gc_held().remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// The ids of the runs this process has queued or runs.
    fn gc_held(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.gc_running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records run `id`'s new status. The history is not data: a failure
    /// to record it is logged, and the run goes on.
    fn update_gc_run(&self, id: u64, status: GcRunStatus, report: Option<GcReport>) {
        // IMPORTANT: an ended run stops being held only after its end is
        // written, so no reader sees it `Running` and not held (which
        // reads as cut off by a stop).
        let ended = matches!(status, GcRunStatus::Success | GcRunStatus::Error(_));
        let write = || -> Result<(), StorageError> {
            let g = self.lock()?;
            let Some(rec) = self.index.get(&GcRunKey(id))? else {
                return Ok(());
            };
            let mut run = gc_run_of(id, rec, true);
            run.status = status;
            run.updated_ms = records::now_ms();
            if report.is_some() {
                run.report = report;
            }
            let mut b = Batch::default();
            b.put(&GcRunKey(id), &gc_run_record(&run));
            self.commit_unsynced(g, b)
        };
        if let Err(e) = write() {
            tracing::warn!(run = id, error = %e, "gc history not recorded");
        }
        if ended {
            self.gc_held().remove(&id);
        }
    }

    /// The history, oldest first. A run this process does not hold that is
    /// still `Pending` or `Running` was cut off by a stop, unless another
    /// node of a cluster runs it.
    fn gc_history(&self) -> Result<Vec<GcRun>, StorageError> {
        let shared = self.index.is_shared();
        let mut runs = Vec::new();
        for r in self.index.scan(GcRunKey::all()).take(HISTORY) {
            let (GcRunKey(id), rec) = r?;
            let alive = shared || self.gc_held().contains(&id);
            runs.push(gc_run_of(id, rec, alive));
        }
        runs.reverse();
        Ok(runs)
    }

    /// The options of the periodic online GC.
    pub(crate) fn scheduled_gc_options(&self) -> GcOptions {
        GcOptions {
            grace: self.config.gc_grace,
            delete_untagged: false,
            dry_run: false,
            upload_ttl: Some(self.config.upload_ttl),
        }
    }
}

impl Engine {
    /// Runs GC now on this thread and returns what it did. Safe while the
    /// engine serves requests (see the module docs); one run at a time.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport, StorageError> {
        self.gc_with_progress(opts, &|_, _| {})
    }

    /// [`Engine::gc`], reporting progress (phase, items done) as it goes.
    pub fn gc_with_progress(
        &self,
        opts: &GcOptions,
        progress: Progress<'_>,
    ) -> Result<GcReport, StorageError> {
        let id = self.inner.new_gc_run(GcRunKind::Direct, opts.clone())?;
        self.inner.run_gc(id, opts, progress)
    }

    /// Queues a GC run on the engine's worker thread and returns its id at
    /// once; [`Engine::gc_runs`] shows how it goes.
    pub fn schedule_gc(&self, opts: GcOptions) -> Result<u64, StorageError> {
        let id = self.inner.new_gc_run(GcRunKind::Manual, opts.clone())?;
        if let Err(e) = self.workers.run_gc(id, opts) {
            self.inner
                .update_gc_run(id, GcRunStatus::Error(e.clone()), None);
            return Err(StorageError::Io {
                op: "schedule gc",
                path: self.data_dir().to_path_buf(),
                source: std::io::Error::other(e),
            });
        }
        Ok(id)
    }

    /// Recent GC runs (up to 50), oldest first.
    pub fn gc_runs(&self) -> Result<Vec<GcRun>, StorageError> {
        self.inner.gc_history()
    }

    /// The default options of the periodic online GC of this engine.
    pub fn gc_defaults(&self) -> GcOptions {
        self.inner.scheduled_gc_options()
    }
}
