//! [`TieredStore`]: a local [`LocalStore`] in front of an [`S3Store`].
//!
//! Two modes, the `s3` and `tiered` storage backends:
//!
//! - [`TierMode::WriteThrough`] (`s3`): a put reaches the bucket before it
//!   returns; the local store is only a read cache, filled on a miss and
//!   trimmed to the size budget. Losing the local disk loses nothing.
//! - [`TierMode::WriteBack`] (`tiered`): a put returns once the blob is
//!   durable locally (the local store's durability) and a durable journal
//!   entry says it still has to be copied; a background thread copies it to
//!   the bucket and then clears the entry. Local copies already in the
//!   bucket are evicted, least recently used first, above the budget.
//!
//! On-disk layout under the tier directory (`<data>/tier`; this module is the
//! only code that builds these paths):
//!
//! ```text
//! <tier>/pending/<alg>-<hex>     journal: blob not yet in the bucket; content
//!                                "c" (create-only) or "o" (overwrite)
//! <tier>/staging/<alg>-<hex>     hard link of the local blob being copied up
//!                                (read only, never written), with its
//!                                multipart sidecar (<…>.s3mpu)
//! ```
//!
//! Staged blobs ([`BlobStore::stage`]) are the local store's
//! (`<data>/blobs/staging/<id>`); a write-through commit keeps the S3
//! multipart state of its upload beside the staged file
//! (`<id>.s3mpu`), so a commit interrupted by a crash resumes the same
//! upload and `abort` aborts it.
//!
//! IMPORTANT, write-back ordering: the journal entry is durable *before* the
//! local put, so a crash between the two leaves an entry without a blob
//! (dropped by the uploader) and never a local-only blob without an entry.
//! A restart resumes copying from the journal alone, without walking the
//! store; a staged multipart upload resumes from its sidecar.
//!
//! Reads: a local hit is served from the memory map. A whole-blob miss of
//! at least 1 MiB returns a [`BlobData::Stream`] at once: a thread downloads
//! the blob into a temp file of the local store and the caller reads each
//! chunk as soon as it has arrived, so the client receives bytes while the
//! cache fills; the finished file is then placed in the local store. Smaller
//! and ranged misses download the whole blob first, then serve it locally.
//!
//! Eviction uses an in-memory LRU of the local copies. At open it is filled
//! by one walk of the local cache directory on the background thread (not on
//! the open path); until that walk finishes, older copies are not yet
//! candidates. Only copies [`BlobStore::locate`] calls `Both` (no journal
//! entry, no upload in flight) are evicted.
//!
//! Tiers: every move this store makes on its own — a background copy to
//! the bucket (`Local` → `Both`), an eviction (`Both` → `Remote`), a
//! read-through fill (`Remote` → `Both`) — is reported, after the move, as
//! the digest on the channel the engine gave [`BlobStore::watch_tiers`];
//! the engine re-asks `locate` and rewrites the blob record. This store
//! never touches the index. [`BlobStore::get_at`] with `Remote` skips the
//! local attempt.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::s3::MULTIPART_SUFFIX;
use super::staging::Staged;
use super::{
    BlobData, BlobStore, LocalStore, Located, PutMode, PutOutcome, S3Store, StoreError,
    StreamSource, Tier, TierMoves,
};

/// Whole-blob reads of remote-only blobs at least this large are streamed
/// to the caller while they are downloaded into the cache; smaller ones are
/// downloaded first.
const STREAM_MIN: u64 = 1 << 20;
use crate::digest::{Algorithm, Digest};
use crate::durable::{create_dir_all_durable, fsync_dir, random_hex, write_file_durable};

/// How a [`TieredStore`] writes. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierMode {
    /// Bucket first, then the local cache (the `s3` backend).
    WriteThrough,
    /// Local first, bucket in the background (the `tiered` backend).
    WriteBack,
}

/// Tier counters, readable lock-free by `/metrics`
/// (`engine.store().tier_stats()`). Monotonic except the gauges.
#[derive(Debug, Default)]
pub struct TierStats {
    /// Reads served from the local copy.
    pub hits: AtomicU64,
    /// Reads that had to fetch from the bucket.
    pub misses: AtomicU64,
    /// Bytes copied to the bucket (write-through puts and background copies).
    pub bytes_uploaded: AtomicU64,
    /// Bytes fetched from the bucket into the cache.
    pub bytes_downloaded: AtomicU64,
    /// Bytes of local copies evicted.
    pub bytes_evicted: AtomicU64,
    /// Local copies evicted.
    pub evictions: AtomicU64,
    /// Gauge: blobs waiting to be copied to the bucket (write-back).
    pub pending_uploads: AtomicU64,
    /// Gauge: bytes of local copies tracked by the LRU.
    pub cached_bytes: AtomicU64,
}

/// A local cache in front of a bucket. See the module docs.
pub struct TieredStore {
    inner: Arc<Inner>,
    /// The background thread (journal uploads, LRU fill, eviction). Stopped
    /// and joined on drop through `inner.stop` + `inner.wake`.
    worker: Option<JoinHandle<()>>,
}

struct Inner {
    local: LocalStore,
    remote: S3Store,
    mode: TierMode,
    /// Cache budget in bytes; above it, evictable copies are deleted.
    max_bytes: u64,
    pending_dir: PathBuf,
    staging_dir: PathBuf,
    /// Write-back state; see [`Pending`]. `wake` is signalled when an entry
    /// is added, an upload finishes, or the store is dropped.
    pending: Mutex<Pending>,
    wake: Condvar,
    lru: Mutex<Lru>,
    stats: TierStats,
    stop: AtomicBool,
    /// Where tier changes are reported ([`BlobStore::watch_tiers`]): set
    /// by the engine at open, read by every thread that moves bytes.
    moves: Mutex<Option<TierMoves>>,
}

/// Blobs not yet in the bucket (mirrors the journal) and uploads in flight.
#[derive(Default)]
struct Pending {
    /// Digest → (generation, mode). A delete removes the entry; a later put
    /// adds a new generation, so an upload that started before the delete
    /// does not clear the new entry.
    entries: HashMap<Digest, (u64, PutMode)>,
    next_gen: u64,
    /// Digests being uploaded right now; `delete` waits for them.
    inflight: std::collections::HashSet<Digest>,
}

/// Least-recently-used order of local copies.
#[derive(Default)]
struct Lru {
    /// Digest → (size, tick of last use).
    entries: HashMap<Digest, (u64, u64)>,
    /// Tick → digest, oldest first.
    order: BTreeMap<u64, Digest>,
    tick: u64,
    total: u64,
}

impl Lru {
    fn touch(&mut self, d: &Digest, size: u64) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((old_size, old_tick)) = self.entries.insert(d.clone(), (size, tick)) {
            self.order.remove(&old_tick);
            self.total -= old_size;
        }
        self.order.insert(tick, d.clone());
        self.total += size;
    }

    /// Adds `d` as least recently used unless already tracked (initial walk).
    fn add_old(&mut self, d: &Digest, size: u64) {
        if self.entries.contains_key(d) {
            return;
        }
        // Ticks below any live one: use the lowest free tick under the minimum.
        let tick = self.order.keys().next().map_or(0, |t| t.saturating_sub(1));
        if self.order.contains_key(&tick) {
            return self.touch(d, size);
        }
        self.entries.insert(d.clone(), (size, tick));
        self.order.insert(tick, d.clone());
        self.total += size;
    }

    fn remove(&mut self, d: &Digest) {
        if let Some((size, tick)) = self.entries.remove(d) {
            self.order.remove(&tick);
            self.total -= size;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TieredStore {
    /// Opens a tiered store: `local` is the cache (or hot tier), `remote`
    /// the bucket, `tier_dir` holds the journal and staging area,
    /// `max_bytes` the local budget. Starts the background thread, which
    /// resumes copying whatever the journal lists.
    pub fn open(
        local: LocalStore,
        remote: S3Store,
        mode: TierMode,
        tier_dir: &Path,
        max_bytes: u64,
    ) -> Result<TieredStore, StoreError> {
        let pending_dir = tier_dir.join("pending");
        let staging_dir = tier_dir.join("staging");
        for d in [&pending_dir, &staging_dir] {
            create_dir_all_durable(d).map_err(|e| StoreError::io("create tier directory", d, e))?;
        }
        let mut pending = Pending::default();
        for entry in read_dir(&pending_dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(d) = parse_entry_name(&name) else {
                // Temp files of write_file_durable, torn by a crash.
                let _ = fs::remove_file(entry.path());
                continue;
            };
            let mode = match fs::read(entry.path()) {
                Ok(b) if b == b"o" => PutMode::Overwrite,
                _ => PutMode::CreateOnly,
            };
            pending.next_gen += 1;
            pending.entries.insert(d, (pending.next_gen, mode));
        }
        if !pending.entries.is_empty() {
            tracing::info!(
                count = pending.entries.len(),
                "tier: resuming copies to the bucket from the journal"
            );
        }
        let stats = TierStats::default();
        stats
            .pending_uploads
            .store(pending.entries.len() as u64, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            local,
            remote,
            mode,
            max_bytes,
            pending_dir,
            staging_dir,
            pending: Mutex::new(pending),
            wake: Condvar::new(),
            lru: Mutex::new(Lru::default()),
            stats,
            stop: AtomicBool::new(false),
            moves: Mutex::new(None),
        });
        inner.clean_staging()?;
        let worker_inner = inner.clone();
        let worker = std::thread::Builder::new()
            .name("berth-tier".into())
            .spawn(move || worker_inner.run())
            .map_err(|e| StoreError::io("start tier thread", tier_dir, e))?;
        Ok(TieredStore {
            inner,
            worker: Some(worker),
        })
    }

    /// The mode this store writes in.
    pub fn mode(&self) -> TierMode {
        self.inner.mode
    }

    /// The local cache.
    pub fn local(&self) -> &LocalStore {
        &self.inner.local
    }

    /// The bucket.
    pub fn remote(&self) -> &S3Store {
        &self.inner.remote
    }

    /// Blocks until the write-back journal is empty (every blob is in the
    /// bucket) or `timeout` passes; returns whether it is empty.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut p = lock(&self.inner.pending);
        while !p.entries.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            p = self
                .inner
                .wake
                .wait_timeout(p, left.min(Duration::from_millis(200)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl Drop for TieredStore {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Inner {
    fn entry_path(&self, d: &Digest) -> PathBuf {
        self.pending_dir.join(entry_name(d))
    }

    fn staging_path(&self, d: &Digest) -> PathBuf {
        self.staging_dir.join(entry_name(d))
    }

    /// Reports that `d`'s tier changed (after the change: whoever receives
    /// it and asks [`BlobStore::locate`] sees the new place).
    fn moved(&self, d: &Digest) {
        if let Some(tx) = lock(&self.moves).as_ref() {
            // The engine is gone (or going): nobody to tell.
            let _ = tx.send(d.clone());
        }
    }

    /// Whether `d` is journaled, i.e. its local copy is not yet known to be
    /// in the bucket (write-back only).
    fn pending(&self, d: &Digest) -> bool {
        lock(&self.pending).entries.contains_key(d)
    }

    /// The multipart sidecar of a staged copy-up (`<staged>.s3mpu`).
    fn staging_sidecar(&self, d: &Digest) -> PathBuf {
        self.staging_dir
            .join(format!("{}.{MULTIPART_SUFFIX}", entry_name(d)))
    }

    /// Removes staged files whose blob is no longer pending (aborting their
    /// multipart uploads).
    fn clean_staging(&self) -> Result<(), StoreError> {
        let p = lock(&self.pending);
        let suffix = format!(".{MULTIPART_SUFFIX}");
        for entry in read_dir(&self.staging_dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let base = name.trim_end_matches(&suffix);
            let keep = parse_entry_name(base).is_some_and(|d| p.entries.contains_key(&d));
            if !keep {
                if name.ends_with(&suffix) {
                    self.remote.abort_recorded(&entry.path())?;
                } else {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Write-back step 1: makes the journal entry for `d` durable. The
    /// uploader does not see it until [`Inner::journal_register`], which the
    /// caller runs once the local copy exists.
    fn journal_write(&self, d: &Digest, mode: PutMode) -> Result<(), StoreError> {
        let path = self.entry_path(d);
        let body: &[u8] = if mode == PutMode::Overwrite {
            b"o"
        } else {
            b"c"
        };
        write_file_durable(&path, body).map_err(|e| StoreError::io("write tier journal", &path, e))
    }

    /// Write-back step 3: hands the journaled, locally stored `d` to the uploader.
    fn journal_register(&self, d: &Digest, mode: PutMode) {
        let mut p = lock(&self.pending);
        p.next_gen += 1;
        let gen = p.next_gen;
        let mode = match p.entries.get(d) {
            Some((_, PutMode::Overwrite)) => PutMode::Overwrite,
            _ => mode,
        };
        p.entries.insert(d.clone(), (gen, mode));
        self.stats
            .pending_uploads
            .store(p.entries.len() as u64, Ordering::Relaxed);
        drop(p);
        self.wake.notify_all();
    }

    /// Write-back put: journal, local put, register (see the module docs).
    fn put_back(
        &self,
        d: &Digest,
        mode: PutMode,
        size: u64,
        put: impl FnOnce() -> Result<PutOutcome, StoreError>,
    ) -> Result<PutOutcome, StoreError> {
        // IMPORTANT: the journal entry is durable before the local copy.
        self.journal_write(d, mode)?;
        match put() {
            Ok(outcome) => {
                self.journal_register(d, mode);
                self.cached(d, size);
                self.evict();
                Ok(outcome)
            }
            Err(e) => {
                let p = lock(&self.pending);
                if !p.entries.contains_key(d) {
                    let _ = fs::remove_file(self.entry_path(d));
                }
                Err(e)
            }
        }
    }

    /// Removes `d`'s journal entry (under the pending lock held by the caller).
    fn journal_remove(&self, p: &mut Pending, d: &Digest) {
        if p.entries.remove(d).is_some() {
            let path = self.entry_path(d);
            // Not fsync'd: an entry that reappears after a crash only costs
            // a create-only upload that finds the object present.
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "tier: removing journal entry");
                }
            }
        }
        self.stats
            .pending_uploads
            .store(p.entries.len() as u64, Ordering::Relaxed);
    }

    /// Write-through: `digest` (`size` bytes) is now in the bucket. Counts
    /// the upload and caches the local copy `put` writes. The cache is
    /// optional; if `put` fails, no older local copy may stay behind.
    fn cache_uploaded(
        &self,
        digest: &Digest,
        size: u64,
        put: impl FnOnce() -> Result<PutOutcome, StoreError>,
    ) {
        self.stats.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
        match put() {
            Ok(_) => {
                self.cached(digest, size);
                self.evict();
            }
            Err(e) => {
                lock(&self.lru).remove(digest);
                let _ = self.local.delete(digest);
                self.moved(digest);
                tracing::warn!(digest = %digest, error = %e, "tier: caching an uploaded blob failed");
            }
        }
    }

    fn cached(&self, d: &Digest, size: u64) {
        let mut lru = lock(&self.lru);
        lru.touch(d, size);
        self.stats.cached_bytes.store(lru.total, Ordering::Relaxed);
    }

    /// Evicts least recently used local copies that are in the bucket until
    /// the cache is within budget.
    fn evict(&self) {
        loop {
            let victim = {
                let mut lru = lock(&self.lru);
                if lru.total <= self.max_bytes {
                    return;
                }
                let p = lock(&self.pending);
                let found = lru
                    .order
                    .values()
                    .find(|d| !p.entries.contains_key(*d) && !p.inflight.contains(*d))
                    .cloned();
                drop(p);
                let Some(d) = found else {
                    return; // everything local is still pending upload
                };
                let size = lru.entries.get(&d).map_or(0, |e| e.0);
                lru.remove(&d);
                self.stats.cached_bytes.store(lru.total, Ordering::Relaxed);
                (d, size)
            };
            let (d, size) = victim;
            // IMPORTANT: a copy is evicted only when no journal entry says it
            // is missing from the bucket (checked above under the lock; a
            // concurrent put of the same digest re-adds it to the cache).
            match self.local.delete(&d) {
                Ok(true) => {
                    self.stats.bytes_evicted.fetch_add(size, Ordering::Relaxed);
                    self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                    // Both → Remote.
                    self.moved(&d);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(digest = %d, error = %e, "tier: evicting local copy failed");
                    return;
                }
            }
        }
    }

    /// Fetches `d` from the bucket into the local cache.
    fn fill(&self, d: &Digest) -> Result<(), StoreError> {
        let tmp_dir = self.local.tmp_dir();
        let name = random_hex(16).map_err(|e| StoreError::io("name cache file", tmp_dir, e))?;
        let tmp = tmp_dir.join(format!("fill-{name}"));
        let r = self.remote.download_to(d, &tmp).and_then(|size| {
            self.local.put_file(d, &tmp, PutMode::CreateOnly)?;
            Ok(size)
        });
        match r {
            Ok(size) => {
                self.stats
                    .bytes_downloaded
                    .fetch_add(size, Ordering::Relaxed);
                self.cached(d, size);
                // Remote → Both.
                self.moved(d);
                self.evict();
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Starts downloading `d` (`size` bytes) into the cache on a thread of
    /// its own and returns a [`BlobData::Stream`] that serves the bytes as
    /// they arrive. The finished file is placed in the local store.
    fn stream_fill(this: &Arc<Inner>, d: &Digest, size: u64) -> Result<BlobData, StoreError> {
        use std::io::Write;
        let tmp_dir = this.local.tmp_dir();
        let name = random_hex(16).map_err(|e| StoreError::io("name cache file", tmp_dir, e))?;
        let tmp = tmp_dir.join(format!("fill-{name}"));
        let mut wfile =
            fs::File::create(&tmp).map_err(|e| StoreError::io("create cache file", &tmp, e))?;
        let rfile = fs::File::open(&tmp).map_err(|e| StoreError::io("open cache file", &tmp, e))?;
        let src = Arc::new(StreamSource::new(rfile, size));
        let (inner, source, digest) = (this.clone(), src.clone(), d.clone());
        let spawned = std::thread::Builder::new()
            .name("berth-tier-fill".into())
            .spawn(move || {
                let mut written = 0u64;
                let r = inner
                    .remote
                    .download_with(&digest, |chunk| {
                        wfile
                            .write_all(chunk)
                            .map_err(|e| StoreError::io("write cache file", &tmp, e))?;
                        written += chunk.len() as u64;
                        source.advance(written.min(size));
                        Ok(())
                    })
                    .and_then(|n| {
                        if n != size {
                            return Err(StoreError::Remote {
                                op: "read through cache",
                                key: digest.to_string(),
                                message: format!("got {n} bytes, the bucket said {size}"),
                            });
                        }
                        crate::durable::fsync_file(&wfile, &tmp)
                            .map_err(|e| StoreError::io("write cache file", &tmp, e))?;
                        inner.local.put_file(&digest, &tmp, PutMode::CreateOnly)?;
                        Ok(n)
                    });
                match r {
                    Ok(n) => {
                        source.finish(Ok(()));
                        inner.stats.bytes_downloaded.fetch_add(n, Ordering::Relaxed);
                        inner.cached(&digest, n);
                        // Remote → Both.
                        inner.moved(&digest);
                        inner.evict();
                    }
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        tracing::warn!(digest = %digest, error = %e, "tier: read-through download failed");
                        source.finish(Err(e.to_string()));
                    }
                }
            });
        if let Err(e) = spawned {
            return Err(StoreError::io("start read-through thread", tmp_dir, e));
        }
        Ok(BlobData::Stream {
            src,
            start: 0,
            end: size as usize,
        })
    }

    /// The background thread: fill the LRU from the cache directory, then
    /// copy journal entries to the bucket until stopped.
    fn run(self: Arc<Self>) {
        match self.local.list() {
            Ok(all) => {
                for d in all {
                    if let Ok(Some(size)) = self.local.stat(&d) {
                        lock(&self.lru).add_old(&d, size);
                    }
                }
                let total = lock(&self.lru).total;
                self.stats.cached_bytes.store(total, Ordering::Relaxed);
                self.evict();
            }
            Err(e) => tracing::warn!(error = %e, "tier: listing the local cache"),
        }
        let mut backoff = Duration::from_millis(100);
        while !self.stop.load(Ordering::Acquire) {
            // Pick one pending blob not in flight.
            let next = {
                let mut p = lock(&self.pending);
                let found = p
                    .entries
                    .iter()
                    .find(|(d, _)| !p.inflight.contains(*d))
                    .map(|(d, (gen, mode))| (d.clone(), *gen, *mode));
                match found {
                    Some((d, gen, mode)) => {
                        p.inflight.insert(d.clone());
                        Some((d, gen, mode))
                    }
                    None => {
                        let _ = self
                            .wake
                            .wait_timeout(p, Duration::from_secs(1))
                            .unwrap_or_else(PoisonError::into_inner);
                        None
                    }
                }
            };
            let Some((d, gen, mode)) = next else { continue };
            let r = self.copy_up(&d, mode);
            let mut p = lock(&self.pending);
            p.inflight.remove(&d);
            match r {
                Ok(()) => {
                    let copied = p.entries.get(&d).is_some_and(|(g, _)| *g == gen);
                    if copied {
                        self.journal_remove(&mut p, &d);
                    }
                    backoff = Duration::from_millis(100);
                    drop(p);
                    self.wake.notify_all();
                    if copied {
                        // Local → Both.
                        self.moved(&d);
                    }
                    self.evict();
                }
                Err(e) => {
                    drop(p);
                    self.wake.notify_all();
                    tracing::warn!(digest = %d, error = %e, retry_in = ?backoff, "tier: copy to bucket failed");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Copies local blob `d` to the bucket through a staged hard link (so a
    /// multipart upload can resume from its sidecar after a restart).
    fn copy_up(&self, d: &Digest, mode: PutMode) -> Result<(), StoreError> {
        let staged = self.staging_path(d);
        if !staged.exists() {
            match fs::hard_link(self.local.blob_file(d), &staged) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Journaled but never stored locally (crash between the
                    // two), or deleted since: nothing to copy.
                    tracing::info!(digest = %d, "tier: journaled blob has no local copy; dropping entry");
                    return Ok(());
                }
                Err(e) => return Err(StoreError::io("stage blob for upload", &staged, e)),
            }
            fsync_dir(&self.staging_dir)
                .map_err(|e| StoreError::io("sync directory", &self.staging_dir, e))?;
        }
        let size = fs::metadata(&staged).map(|m| m.len()).unwrap_or(0);
        let outcome = self
            .remote
            .upload_file(d, &staged, &self.staging_sidecar(d), mode)?;
        fs::remove_file(&staged)
            .or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| StoreError::io("remove staged upload", &staged, e))?;
        if outcome == PutOutcome::Stored {
            self.stats.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl BlobStore for TieredStore {
    fn name(&self) -> &'static str {
        match self.inner.mode {
            TierMode::WriteThrough => "s3+cache",
            TierMode::WriteBack => "tiered",
        }
    }

    fn stage(&self, id: &str) -> Result<Staged, StoreError> {
        self.inner.local.stage(id)
    }

    fn open_staged(&self, id: &str) -> Result<Option<Staged>, StoreError> {
        self.inner.local.open_staged(id)
    }

    fn staged_ids(&self) -> Result<Vec<String>, StoreError> {
        self.inner.local.staged_ids()
    }

    fn commit(
        &self,
        staged: Staged,
        digest: &Digest,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let i = &self.inner;
        let size = staged.len()?;
        match i.mode {
            TierMode::WriteThrough => {
                let id = staged.id().to_owned();
                let src = i.local.staged_path(&staged)?;
                staged.sync()?;
                // The multipart state lives with the staged id, so a commit
                // interrupted by a crash resumes the same upload.
                let sidecar = i.local.staging_sidecar(&id, MULTIPART_SUFFIX)?;
                // IMPORTANT: the bucket first; the cache only ever holds
                // bytes the bucket has.
                let outcome = i.remote.upload_file(digest, &src, &sidecar, mode)?;
                if outcome == PutOutcome::Stored {
                    // The blob is safe in the bucket; the cache is optional.
                    i.cache_uploaded(digest, size, || {
                        i.local.commit(staged, digest, PutMode::Overwrite)
                    });
                } else {
                    drop(staged);
                }
                i.local.abort(&id)?;
                Ok(outcome)
            }
            TierMode::WriteBack => {
                i.put_back(digest, mode, size, || i.local.commit(staged, digest, mode))
            }
        }
    }

    fn abort(&self, id: &str) -> Result<(), StoreError> {
        let i = &self.inner;
        i.remote
            .abort_recorded(&i.local.staging_sidecar(id, MULTIPART_SUFFIX)?)?;
        i.local.abort(id)
    }

    /// Segments live in the bucket, where every node reads them.
    fn put_segment(&self, upload: &str, name: &str, staged: Staged) -> Result<(), StoreError> {
        let i = &self.inner;
        let id = staged.id().to_owned();
        let src = i.local.staged_path(&staged)?;
        staged.sync()?;
        let sidecar = i.local.staging_sidecar(&id, MULTIPART_SUFFIX)?;
        i.remote.put_segment_file(upload, name, &src, &sidecar)?;
        drop(staged);
        i.local.abort(&id)
    }

    fn read_segment(
        &self,
        upload: &str,
        name: &str,
        on_chunk: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        self.inner.remote.read_segment(upload, name, on_chunk)
    }

    /// Composed in the bucket; the cache fills on the first read.
    fn compose(
        &self,
        upload: &str,
        segments: &[super::Segment],
        digest: &Digest,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.remote.compose(upload, segments, digest, mode)
    }

    fn segment_uploads(&self) -> Result<Vec<String>, StoreError> {
        self.inner.remote.segment_uploads()
    }

    fn drop_segments(&self, upload: &str, name: Option<&str>) -> Result<(), StoreError> {
        self.inner.remote.drop_segments(upload, name)
    }

    fn put_bytes(
        &self,
        digest: &Digest,
        data: &[u8],
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let i = &self.inner;
        let size = data.len() as u64;
        match i.mode {
            TierMode::WriteThrough => {
                let outcome = i.remote.put_bytes(digest, data, mode)?;
                if outcome == PutOutcome::Stored {
                    i.cache_uploaded(digest, size, || {
                        i.local.put_bytes(digest, data, PutMode::Overwrite)
                    });
                }
                Ok(outcome)
            }
            TierMode::WriteBack => {
                i.put_back(digest, mode, size, || i.local.put_bytes(digest, data, mode))
            }
        }
    }

    fn get(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobData, StoreError> {
        let i = &self.inner;
        match i.local.get(digest, range.clone()) {
            Ok(data) => {
                i.stats.hits.fetch_add(1, Ordering::Relaxed);
                if let Ok(Some(size)) = i.local.stat(digest) {
                    i.cached(digest, size);
                }
                return Ok(data);
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.get_remote(digest, range)
    }

    fn get_at(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
        at: Tier,
    ) -> Result<BlobData, StoreError> {
        // The index says only the bucket has it: go there, unless the LRU
        // knows a local copy (filled since, its report not yet applied).
        if at == Tier::Remote && !lock(&self.inner.lru).entries.contains_key(digest) {
            match self.get_remote(digest, range.clone()) {
                // The index is behind (e.g. a record from before tiers
                // were kept): look everywhere.
                Err(StoreError::NotFound { .. }) => {}
                other => return other,
            }
        }
        self.get(digest, range)
    }

    fn bucket(&self) -> Option<&S3Store> {
        Some(&self.inner.remote)
    }

    fn locate(&self, digest: &Digest) -> Result<Option<Located>, StoreError> {
        let i = &self.inner;
        if let Some(size) = i.local.stat(digest)? {
            // IMPORTANT: a local copy without a journal entry is in the
            // bucket: write-through caches only what the bucket has, and
            // write-back journals before the local put and clears the
            // entry only after the copy.
            let tier = if i.pending(digest) {
                Tier::Local
            } else {
                Tier::Both
            };
            return Ok(Some(Located { tier, size }));
        }
        Ok(i.remote.stat(digest)?.map(|size| Located {
            tier: Tier::Remote,
            size,
        }))
    }

    fn watch_tiers(&self, moves: TierMoves) {
        *lock(&self.inner.moves) = Some(moves);
    }

    fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match self.inner.local.stat(digest)? {
            Some(n) => Ok(Some(n)),
            None => self.inner.remote.stat(digest),
        }
    }

    fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        let i = &self.inner;
        {
            // Drop the journal entry, then wait out an upload in flight so
            // the bucket copy it makes is deleted below.
            let mut p = lock(&i.pending);
            i.journal_remove(&mut p, digest);
            let _ = fs::remove_file(i.entry_path(digest));
            while p.inflight.contains(digest) {
                p = i.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
            }
        }
        lock(&i.lru).remove(digest);
        let local = i.local.delete(digest)?;
        let remote = i.remote.delete(digest)?;
        Ok(local || remote)
    }

    fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let i = &self.inner;
        let mut all = i.remote.list()?;
        if i.mode == TierMode::WriteBack {
            all.extend(i.local.list()?);
            all.sort();
            all.dedup();
        }
        Ok(all)
    }

    fn tier_stats(&self) -> Option<&TierStats> {
        Some(&self.inner.stats)
    }
}

impl TieredStore {
    /// A read of `digest` that the local store does not have: from the
    /// bucket, filling the local cache (a whole blob of at least
    /// [`STREAM_MIN`] streams to the caller while it fills).
    fn get_remote(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobData, StoreError> {
        let i = &self.inner;
        i.stats.misses.fetch_add(1, Ordering::Relaxed);
        if range.is_none() {
            let size = i.remote.stat(digest)?.ok_or_else(|| StoreError::NotFound {
                digest: digest.clone(),
            })?;
            if size >= STREAM_MIN {
                return Inner::stream_fill(&self.inner, digest, size);
            }
        }
        i.fill(digest)?;
        match i.local.get(digest, range.clone()) {
            // Evicted again in between (a tiny budget): read the bucket.
            Err(StoreError::NotFound { .. }) => i.remote.get(digest, range),
            other => other,
        }
    }
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStore")
            .field("mode", &self.inner.mode)
            .field("local", &self.inner.local)
            .field("remote", &self.inner.remote)
            .field("max_bytes", &self.inner.max_bytes)
            .finish()
    }
}

/// `<alg>-<hex>`: journal and staging file name of a digest.
fn entry_name(d: &Digest) -> String {
    format!("{}-{}", d.algorithm().name(), d.hex())
}

fn parse_entry_name(name: &str) -> Option<Digest> {
    let (alg, hex) = name.split_once('-')?;
    Digest::from_parts(alg.parse::<Algorithm>().ok()?, hex).ok()
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    fs::read_dir(dir)
        .and_then(|it| it.collect::<io::Result<Vec<_>>>())
        .map_err(|e| StoreError::io("read directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::s3::TestTransport;
    use crate::store::{testsuite, S3Config};

    fn open(mode: TierMode, dir: &Path, root: &str, max_bytes: u64) -> TieredStore {
        open_over(TestTransport::Http, mode, dir, root, max_bytes)
    }

    fn open_over(
        transport: TestTransport,
        mode: TierMode,
        dir: &Path,
        root: &str,
        max_bytes: u64,
    ) -> TieredStore {
        let mut c = S3Config::from_test_env_over(transport, "berth-test");
        c.root = root.to_owned();
        c.multipart_threshold = 6 << 20;
        c.part_size = 5 << 20;
        let remote = S3Store::open(c).expect("open S3 store");
        let local = LocalStore::open(&dir.join("blobs")).expect("open local");
        TieredStore::open(local, remote, mode, &dir.join("tier"), max_bytes).expect("open tiered")
    }

    fn root(label: &str) -> String {
        format!("{label}-{}", random_hex(6).expect("random"))
    }

    #[test]
    fn tiered_write_through_shared_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(TierMode::WriteThrough, dir.path(), &root("wt"), 1 << 30);
        testsuite::run_all(&store);
    }

    /// The `s3` backend's store with the bucket behind TLS and a private CA.
    #[test]
    fn tiered_write_through_shared_suite_over_https() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_over(
            TestTransport::Https,
            TierMode::WriteThrough,
            dir.path(),
            &root("wt-tls"),
            1 << 30,
        );
        testsuite::run_all(&store);
    }

    #[test]
    fn tiered_write_back_shared_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(TierMode::WriteBack, dir.path(), &root("wb"), 1 << 30);
        testsuite::run_all(&store);
    }

    #[test]
    fn tiered_tiny_cache_shared_suite() {
        // A budget of one byte: every read after a put is a miss served
        // through the cache.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(TierMode::WriteThrough, dir.path(), &root("tiny"), 1);
        testsuite::run_all(&store);
    }

    #[test]
    fn remote_only_blob_streams_while_the_cache_fills() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(TierMode::WriteThrough, dir.path(), &root("stream"), 1 << 30);
        let data: Vec<u8> = (0..(5u32 << 20) + 11).map(|i| (i % 253) as u8).collect();
        let d = Digest::of(Algorithm::Sha256, &data);
        // In the bucket only, as after a wiped or evicted cache.
        store
            .remote()
            .put_bytes(&d, &data, PutMode::CreateOnly)
            .expect("put remote");
        let got = store.get(&d, None).expect("get");
        assert!(matches!(got, BlobData::Stream { .. }), "{got:?}");
        assert_eq!(got.len(), data.len());
        let mut joined = Vec::new();
        for c in got.into_chunks(1 << 20) {
            joined.extend_from_slice(c.as_ref());
        }
        assert!(joined == data, "streamed bytes differ");
        // as_ref of a streamed blob waits for the whole of it.
        let again = store.get(&d, None).expect("get");
        assert!(again.as_ref() == data.as_slice());
        // The fill lands in the local store: soon a hit.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.local().stat(&d).expect("stat").is_none() {
            assert!(std::time::Instant::now() < deadline, "cache never filled");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(matches!(
            store.get(&d, None).expect("get"),
            BlobData::Mapped { .. }
        ));
        let s = store.tier_stats().expect("stats");
        assert!(s.misses.load(Ordering::Relaxed) >= 1 && s.hits.load(Ordering::Relaxed) >= 1);
        store.delete(&d).expect("delete");
    }

    /// An engine over `store`, its index in `dir/engine`.
    fn engine_over(store: &Arc<TieredStore>, dir: &Path) -> crate::Engine {
        let shared: Arc<dyn BlobStore> = store.clone();
        let mut c = crate::EngineConfig::new(dir.join("engine"));
        c.store = Some(shared);
        crate::Engine::open(c).expect("open engine")
    }

    fn tier_of(e: &crate::Engine, d: &Digest) -> Tier {
        e.blob_record(d).expect("read record").expect("record").tier
    }

    /// Waits for background work (copies, evictions, the engine's tier
    /// worker) until `done`; fails after a minute naming `what`.
    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_fsck_clean(e: &crate::Engine) {
        let r = e.fsck(crate::fsck::FsckOptions::default()).expect("fsck");
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn write_through_blob_records_follow_the_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(
            TierMode::WriteThrough,
            dir.path(),
            &root("tiers-wt"),
            1 << 30,
        ));
        let e = engine_over(&store, dir.path());
        let repo = crate::RepoName::parse("tiers/wt").expect("repo");
        let data = vec![7u8; 200_000];
        let d = Digest::of(Algorithm::Sha256, &data);
        e.put_blob(&repo, &d, &data).expect("put");
        // In the bucket before the put returned, and cached.
        assert_eq!(tier_of(&e, &d), Tier::Both);
        assert_fsck_clean(&e);

        // The cache loses its copy behind the engine's back: fsck sees the
        // record say more than the store has, and repair makes it true.
        assert!(store.local().delete(&d).expect("delete local copy"));
        let r = e.fsck(crate::fsck::FsckOptions::default()).expect("fsck");
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(
            r.findings[0].problem,
            "index says its bytes are local and in the bucket, the s3+cache store holds them in the bucket only"
        );
        let (_, fixed) = e
            .fsck_repair(crate::fsck::FsckOptions::default())
            .expect("repair");
        assert_eq!(
            fixed.actions,
            [format!("blob {d}: tier in the bucket only")]
        );
        assert_eq!(tier_of(&e, &d), Tier::Remote);
        assert_fsck_clean(&e);

        // A read of a remote-only blob fills the cache; the store reports
        // the move and the record follows.
        let (_, got) = e.read_blob(&repo, &d, None).expect("read");
        assert!(got.as_ref() == data.as_slice(), "bytes differ");
        wait_for("the record says Both after the fill", || {
            tier_of(&e, &d) == Tier::Both
        });
        assert_fsck_clean(&e);
        drop(e);
        store.delete(&d).expect("delete");
    }

    #[test]
    fn records_from_before_tiers_are_located_once_in_the_background() {
        use crate::keys::TiersLocatedKey;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(
            TierMode::WriteThrough,
            dir.path(),
            &root("tiers-old"),
            1 << 30,
        ));
        let repo = crate::RepoName::parse("tiers/old").expect("repo");
        let data = vec![3u8; 100_000];
        let d = Digest::of(Algorithm::Sha256, &data);
        {
            let e = engine_over(&store, dir.path());
            e.put_blob(&repo, &d, &data).expect("put");
            // What the code before tiers were kept wrote: `local`, no marker.
            let i = &e.inner;
            let mut rec = e.blob_record(&d).expect("read").expect("record");
            rec.tier = Tier::Local;
            let g = i.lock().expect("lock");
            let mut b = crate::index::Batch::default();
            i.put_blob_record(&mut b, &d, &rec);
            b.delete(&TiersLocatedKey);
            i.commit(g, b).expect("commit");
        }
        let e = engine_over(&store, dir.path());
        wait_for("the old record is located", || {
            tier_of(&e, &d) == Tier::Both
        });
        wait_for("the index is marked", || {
            e.inner.index.contains(&TiersLocatedKey).expect("read meta")
        });
        assert_fsck_clean(&e);
        drop(e);
        store.delete(&d).expect("delete");
    }

    #[test]
    fn write_back_blob_records_follow_copies_and_evictions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(
            TierMode::WriteBack,
            dir.path(),
            &root("tiers-wb"),
            700_000,
        ));
        let e = engine_over(&store, dir.path());
        let repo = crate::RepoName::parse("tiers/wb").expect("repo");
        let blobs: Vec<(Digest, Vec<u8>)> = (0..4u8)
            .map(|n| {
                let data = vec![n; 300_000];
                (Digest::of(Algorithm::Sha256, &data), data)
            })
            .collect();
        for (d, data) in &blobs {
            e.put_blob(&repo, d, data).expect("put");
            // Durable locally; in the bucket only once the background copy
            // is done (it may already be).
            let t = tier_of(&e, d);
            assert!(t == Tier::Local || t == Tier::Both, "{d}: {t:?}");
        }
        assert!(store.flush(Duration::from_secs(60)), "journal not drained");
        // Every copy is in the bucket; the budget holds two of the four
        // locally: the records say so once the reports are applied.
        let records_match_the_store = || {
            blobs.iter().all(|(d, _)| {
                let at = store.locate(d).expect("locate").expect("stored").tier;
                tier_of(&e, d) == at
            })
        };
        wait_for("records match the store", records_match_the_store);
        let tiers: Vec<Tier> = blobs.iter().map(|(d, _)| tier_of(&e, d)).collect();
        assert!(!tiers.contains(&Tier::Local), "{tiers:?}");
        assert!(tiers.contains(&Tier::Remote), "nothing evicted: {tiers:?}");
        assert!(tiers.contains(&Tier::Both), "nothing cached: {tiers:?}");
        assert_fsck_clean(&e);

        // A read of an evicted blob goes to the bucket and refills it.
        let (d, data) = blobs
            .iter()
            .find(|(d, _)| tier_of(&e, d) == Tier::Remote)
            .expect("an evicted blob");
        let misses = store
            .tier_stats()
            .expect("stats")
            .misses
            .load(Ordering::Relaxed);
        let (_, got) = e.read_blob(&repo, d, None).expect("read");
        assert!(got.as_ref() == data.as_slice(), "bytes differ");
        assert!(
            store
                .tier_stats()
                .expect("stats")
                .misses
                .load(Ordering::Relaxed)
                > misses
        );
        wait_for("the read blob is Both", || tier_of(&e, d) == Tier::Both);
        wait_for("records match the store", records_match_the_store);
        assert_fsck_clean(&e);
        drop(e);
        for (d, _) in &blobs {
            store.delete(d).expect("delete");
        }
    }

    #[test]
    fn write_back_copies_evicts_and_reads_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = root("wbe");
        let blobs: Vec<(Digest, Vec<u8>)> = (0..4u8)
            .map(|n| {
                let data = vec![n; 300_000];
                (Digest::of(Algorithm::Sha256, &data), data)
            })
            .collect();
        {
            let store = open(TierMode::WriteBack, dir.path(), &r, 700_000);
            for (d, data) in &blobs {
                store.put_bytes(d, data, PutMode::CreateOnly).expect("put");
            }
            assert!(store.flush(Duration::from_secs(60)), "journal not drained");
            for (d, _) in &blobs {
                assert!(
                    store.remote().stat(d).expect("remote stat").is_some(),
                    "{d} not in bucket"
                );
            }
            // Eviction ran after the copies: within budget now.
            let s = store.tier_stats().expect("stats");
            assert!(s.cached_bytes.load(Ordering::Relaxed) <= 700_000);
            assert!(s.bytes_evicted.load(Ordering::Relaxed) >= 600_000);
            for (d, data) in &blobs {
                let got = store.get(d, None).expect("get");
                assert!(got.as_ref() == data.as_slice(), "{d} bytes differ");
            }
            assert!(
                s.misses.load(Ordering::Relaxed) >= 2,
                "evicted blobs were misses"
            );
        }
        // Journal survives a restart: write an entry by hand for a blob in
        // the local store only, as a crash before the copy leaves it.
        let data = b"after restart".to_vec();
        let d = Digest::of(Algorithm::Sha256, &data);
        {
            let local = LocalStore::open(&dir.path().join("blobs")).expect("local");
            local
                .put_bytes(&d, &data, PutMode::CreateOnly)
                .expect("put local");
            fs::write(dir.path().join("tier/pending").join(entry_name(&d)), b"c").expect("journal");
        }
        let store = open(TierMode::WriteBack, dir.path(), &r, 700_000);
        assert!(
            store.flush(Duration::from_secs(60)),
            "journal not drained after restart"
        );
        assert_eq!(
            store.remote().stat(&d).expect("stat"),
            Some(data.len() as u64)
        );
        for (d, _) in &blobs {
            store.delete(d).expect("delete");
        }
        store.delete(&d).expect("delete");
    }

    /// `Engine::copy_from_bucket`: an object of another tree in the same
    /// bucket becomes a linked blob by one read and a copy inside the
    /// bucket (only in the bucket: tier `Remote`); damaged bytes and a
    /// missing object store nothing; a source rewritten between the read
    /// and the copy is refused by the bucket (the ETag condition).
    #[test]
    fn blobs_are_copied_from_another_tree_in_the_bucket_only_as_verified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(
            TierMode::WriteThrough,
            dir.path(),
            &root("adopt"),
            1 << 30,
        ));
        let mut c = store.remote().config().clone();
        c.root = root("adopt-foreign");
        let foreign = S3Store::open(c).expect("open foreign tree");
        let key_of = |d: &Digest| {
            format!(
                "{}/{}/{}/{}",
                foreign.config().root,
                d.algorithm().name(),
                &d.hex()[..2],
                d.hex()
            )
        };
        let e = engine_over(&store, dir.path());
        let repo = crate::RepoName::parse("adopt/app").expect("repo");

        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(Algorithm::Sha256, &data);
        foreign
            .put_bytes(&d, &data, PutMode::CreateOnly)
            .expect("put foreign");
        let info = e
            .copy_from_bucket(&repo, &d, &key_of(&d))
            .expect("copy")
            .expect("found");
        assert_eq!(info.size, data.len() as u64);
        assert_eq!(tier_of(&e, &d), Tier::Remote);
        assert_eq!(store.local().stat(&d).expect("stat"), None);
        let (_, got) = e.read_blob(&repo, &d, None).expect("read");
        assert!(got.as_ref() == data.as_slice());

        // Bytes that hash to another digest: nothing stored or linked.
        let claimed = Digest::of(Algorithm::Sha256, b"what the tree claims");
        foreign
            .put_bytes(&claimed, b"what the tree holds", PutMode::CreateOnly)
            .expect("put damaged");
        let err = e
            .copy_from_bucket(&repo, &claimed, &key_of(&claimed))
            .expect_err("damaged");
        assert!(
            matches!(err, crate::UploadError::DigestMismatch { .. }),
            "{err}"
        );
        assert_eq!(store.remote().stat(&claimed).expect("stat"), None);
        assert!(e.stat_blob(&repo, &claimed).expect("stat").is_none());

        // No such object.
        let absent = Digest::of(Algorithm::Sha256, b"absent");
        assert!(e
            .copy_from_bucket(&repo, &absent, &key_of(&absent))
            .expect("copy")
            .is_none());

        // Rewritten after it was read: the copy is refused, nothing stored.
        let first = b"the bytes read".to_vec();
        let d1 = Digest::of(Algorithm::Sha256, &first);
        foreign
            .put_bytes(&d1, &first, PutMode::CreateOnly)
            .expect("put");
        let version = store
            .remote()
            .read_version(&key_of(&d1), u64::MAX, |_| Ok(()))
            .expect("read")
            .expect("there");
        foreign
            .put_bytes(&d1, b"other bytes, written since", PutMode::Overwrite)
            .expect("rewrite");
        let refused = store.remote().copy_version(&key_of(&d1), &version, &d1);
        let refused = refused.expect_err("the ETag condition held").to_string();
        assert!(refused.contains("PreconditionFailed"), "{refused}");
        assert_eq!(store.remote().stat(&d1).expect("stat"), None);

        assert_fsck_clean(&e);
        drop(e);
        for x in [&d, &claimed, &d1] {
            foreign.delete(x).expect("delete foreign");
        }
        store.delete(&d).expect("delete");
    }
}
