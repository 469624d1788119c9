//! The engine handle: opening the data directory, the index, shared state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::digest::Digest;
use crate::error::StorageError;
use crate::gc::GcDigests;
use crate::host::{self, Guarded};
use crate::index::{Batch, Committed, DatabaseConfig, Index, IndexTxn, Prefetched, ReadAhead};
use crate::keys::{
    self, BlobKey, Cf, FormatKey, GcCandidateKey, GcCandidatesBuiltKey, TiersLocatedKey,
    WholeFamily,
};
use crate::manifests::{LinkCache, ManifestCache, LINK_LEASE_WAIT};
use crate::metrics::EngineMetrics;
use crate::records::{BlobRecord, BlobState, Empty, FormatVersion, Marker, Tier};
use crate::store::{open_backend, Backend, BlobStore, Located, StoreError};
use crate::uploads::Session;
use crate::workers::Workers;

/// Default of [`EngineConfig::max_uploads_per_owner`]: far more than any
/// client keeps open (docker and skopeo push a few layers at a time), few
/// enough that one account cannot fill the disk with idle sessions before
/// they expire.
pub const DEFAULT_MAX_UPLOADS_PER_OWNER: u64 = 256;

/// Default of [`EngineConfig::max_members_per_project`] and
/// [`EngineConfig::max_robots_per_project`]: far more than a team has,
/// few enough that one project admin cannot grow the index without bound
/// (memberships may name users who do not exist yet).
pub const DEFAULT_MAX_PER_PROJECT: u64 = 1000;

/// How to open an engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// Root of everything persisted: `LOCK.berth` (the directory's lock),
    /// `index/` (RocksDB) and `blobs/` (local store, with the staged bytes
    /// of upload sessions in `blobs/staging/`, unless `store` is given).
    pub data_dir: PathBuf,
    /// The blob store; `None` opens the one `backend` names
    /// ([`crate::store::open_backend`]).
    pub store: Option<Arc<dyn BlobStore>>,
    /// The storage backend (`local`, `s3`, `tiered`) when `store` is `None`.
    pub backend: Backend,
    /// Cluster mode: the index of record lives in this PostgreSQL database
    /// instead of `index/` (`None`: RocksDB, the single-node default).
    pub database: Option<DatabaseConfig>,
    /// Upload sessions untouched this long are expired by a background worker.
    pub upload_ttl: Duration,
    /// How often the background worker looks for expired uploads.
    pub expiry_interval: Duration,
    /// Open upload sessions one owner may hold at once (sessions begun
    /// with [`Engine::begin_upload_as`]); one more is
    /// [`crate::UploadError::TooMany`]. Sessions without an owner are not
    /// counted.
    pub max_uploads_per_owner: u64,
    /// Memberships one project may hold; one more (a new user, not a new
    /// role for a member) is [`crate::AccountError::Limit`].
    pub max_members_per_project: u64,
    /// Robots one project may hold; one more is
    /// [`crate::AccountError::Limit`].
    pub max_robots_per_project: u64,
    /// Online GC: run every this often on the worker thread (`None`: off).
    pub gc_interval: Option<Duration>,
    /// Online GC: unreferenced blobs touched more recently are kept.
    pub gc_grace: Duration,
    /// Counters for `/metrics`, shared with the blob store if it counts too.
    pub metrics: Arc<EngineMetrics>,
    /// Open a data directory (or token key file) that other users of the
    /// host may read; refused by default (see `host.rs`,
    /// `BERTH_ALLOW_OPEN_DATA_DIR`).
    pub allow_open_data_dir: bool,
    /// Test hook called at GC's decision points (see [`crate::gc::GcPoint`]).
    /// Exists only with the `test-hooks` feature, which only tests enable:
    /// the server and berthctl build without it (`cargo build --release
    /// --bins`), so no production code can name it.
    #[cfg(any(test, feature = "test-hooks"))]
    pub gc_hook: Option<crate::gc::GcHook>,
}

impl EngineConfig {
    /// Defaults for a data directory: local backend, 24 h upload expiry.
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            store: None,
            backend: Backend::local(),
            database: None,
            upload_ttl: Duration::from_secs(24 * 3600),
            expiry_interval: Duration::from_secs(600),
            max_uploads_per_owner: DEFAULT_MAX_UPLOADS_PER_OWNER,
            max_members_per_project: DEFAULT_MAX_PER_PROJECT,
            max_robots_per_project: DEFAULT_MAX_PER_PROJECT,
            gc_interval: None,
            gc_grace: Duration::from_secs(3600),
            metrics: Arc::new(EngineMetrics::default()),
            allow_open_data_dir: false,
            #[cfg(any(test, feature = "test-hooks"))]
            gc_hook: None,
        }
    }
}

/// Counts of index entries, for tools and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub blobs: u64,
    pub links: u64,
    pub manifests: u64,
    pub tags: u64,
    pub uploads: u64,
    pub repos: u64,
}

/// The storage engine. Cheap to share behind an `Arc`; every method is
/// synchronous and may block on disk I/O, so async callers run them on a
/// blocking-capable thread.
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    /// Background workers; dropped (and joined) before `inner` is released.
    pub(crate) workers: Workers,
}

/// State shared by the engine and its background workers.
pub(crate) struct Inner {
    /// The index; every read and write of it goes through `index.rs`.
    pub(crate) index: Index,
    /// The data directory's lock (`<data>/LOCK.berth`, `flock`ed
    /// exclusively), taken before anything in the directory is touched and
    /// held as long as the engine: the store, the workers and the index all
    /// end before it is released. Never read; kept for its lifetime.
    _lock: DataDirLock,
    pub(crate) store: Arc<dyn BlobStore>,
    pub(crate) config: EngineConfig,
    /// Serializes every read-modify-write of the index (refcounts, tag
    /// moves, upload offsets) so each batch is computed from a state no one
    /// else is changing. Held for the batch build and its synced write only;
    /// readers never take it. Lifetime: the engine's.
    write_lock: Mutex<()>,
    /// Set by the first failed fsync or index write. After that the engine
    /// refuses writes until reopened: a failed fsync is never retried blindly.
    poisoned: AtomicBool,
    poison_reason: Mutex<String>,
    /// Group commit: the highest sequence number whose WAL record is synced.
    /// Held while syncing, so concurrent committers queue on it and find
    /// their batch already covered. Lifetime: the engine's.
    synced_seq: Mutex<u64>,
    /// In-memory state of open upload sessions (hasher, busy flag), keyed by
    /// upload id. Created on first use after open, so it holds only sessions
    /// touched since; dropped when a session completes, is cancelled or
    /// expires. The durable truth is the `uploads` column family.
    pub(crate) sessions: Mutex<HashMap<String, Arc<Mutex<Session>>>>,
    /// Open upload sessions per owner (records with a non-empty `owner`),
    /// the admission count of [`EngineConfig::max_uploads_per_owner`].
    /// Built from the `uploads` records at open, taken before a session's
    /// record is written and given back after the batch removing it; the
    /// records stay the durable truth. Lifetime: the engine's.
    pub(crate) upload_owners: Mutex<HashMap<String, u64>>,
    /// Which digests GC is deleting and which an upload is committing, so
    /// neither steps on the other (see `gc.rs`). Lifetime: the engine's.
    pub(crate) gc_digests: GcDigests,
    /// Storage reserved by upload completions in flight, by project
    /// (`quotas.rs`). Lifetime: the engine's.
    pub(crate) reserved: crate::quotas::Reservations,
    /// Held for a whole GC run: one run at a time. Lifetime: the engine's.
    pub(crate) gc_run: Mutex<()>,
    /// The GC runs (`gc_runs` ids) this engine has queued or runs, so the
    /// history can tell them from runs a stop cut off. Lifetime: the
    /// engine's.
    pub(crate) gc_running: Mutex<std::collections::HashSet<u64>>,
    pub(crate) metrics: Arc<EngineMetrics>,
    /// The sending side of the tier channel the store reports moves on
    /// ([`crate::store::BlobStore::watch_tiers`]); the engine sends too,
    /// when a commit could not locate its blob. The tier worker
    /// (`workers.rs`) owns the receiver. Lifetime: the engine's.
    pub(crate) tier_moves: crossbeam_channel::Sender<Digest>,
    /// Manifest bodies read, by digest (immutable; see [`ManifestCache`]).
    pub(crate) manifest_cache: ManifestCache,
    /// Cluster mode: repository entries read by digest, each usable for
    /// a moment after its read began (see [`LinkCache`]).
    pub(crate) link_cache: LinkCache,
}

impl Engine {
    /// Opens (creating if needed) the engine in `config.data_dir`. Recovery
    /// runs here: staged uploads are cut back to their durable offsets and
    /// sessions whose staged bytes are gone are dropped. The blob store is
    /// never walked.
    ///
    /// A new data directory is created `0700` (an existing empty one is made
    /// `0700`); an existing data directory that other users of the host may
    /// enter, or a token key file they may read, is refused with
    /// [`StorageError::OpenToOthers`] unless `config.allow_open_data_dir`.
    ///
    /// IMPORTANT, the order: the data directory's lock first (after only
    /// creating the directory and reading modes), then the store (which
    /// cleans its temp files and starts background threads) and the index.
    /// A second process on the same directory gets [`StorageError::Locked`]
    /// naming the lock file and has changed nothing.
    pub fn open(config: EngineConfig) -> Result<Engine, StorageError> {
        let data = &config.data_dir;
        // A directory without an index holds no data directory yet.
        let fresh = !data.join("index").exists();
        host::prepare_data_dir(data, fresh).map_err(StorageError::io("create data dir", data))?;
        host::check_private(data, Guarded::DataDir, config.allow_open_data_dir)?;
        let key_file = data.join(crate::accounts::TOKEN_KEY_FILE);
        if key_file.exists() {
            host::check_private(&key_file, Guarded::TokenKey, config.allow_open_data_dir)?;
        }
        let lock = DataDirLock::acquire(data)?;
        let store: Arc<dyn BlobStore> = match &config.store {
            Some(s) => s.clone(),
            None => open_backend(data, &config.backend)?,
        };
        let index = match &config.database {
            None => Index::open_rocks(&data.join("index"))?,
            Some(db) => Index::open_pg(db)?,
        };
        // Tier reports: the store sends, the tier worker applies them.
        let (tier_moves, tier_rx) = crossbeam_channel::unbounded();
        store.watch_tiers(tier_moves.clone());
        let inner = Arc::new(Inner {
            index,
            _lock: lock,
            store,
            config: config.clone(),
            write_lock: Mutex::new(()),
            poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(String::new()),
            synced_seq: Mutex::new(0),
            sessions: Mutex::new(HashMap::new()),
            upload_owners: Mutex::new(HashMap::new()),
            gc_digests: GcDigests::default(),
            reserved: Default::default(),
            gc_run: Mutex::new(()),
            gc_running: Mutex::new(std::collections::HashSet::new()),
            metrics: config.metrics.clone(),
            tier_moves,
            manifest_cache: ManifestCache::new(),
            link_cache: LinkCache::new(),
        });
        inner.check_format()?;
        inner.build_gc_candidates()?;
        inner.count_usage()?;
        let locate_tiers = inner.tiers_to_locate()?;
        inner.recover_uploads()?;
        let workers = Workers::start(inner.clone(), tier_rx, locate_tiers);
        Ok(Engine { inner, workers })
    }

    /// The blob store holding blob bytes.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.inner.store
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// The engine's counters (GC, uploads, tiering) for `/metrics`.
    pub fn metrics(&self) -> &Arc<EngineMetrics> {
        &self.inner.metrics
    }

    /// The database figures of cluster mode (`None` on RocksDB), for
    /// `/metrics`.
    pub fn database_stats(&self) -> Option<crate::DbStats> {
        self.inner.index.db_stats()
    }

    /// Whether the index of record is cluster mode's shared database.
    pub fn is_cluster(&self) -> bool {
        self.inner.index.is_shared()
    }

    /// Number of open upload sessions (a scan of the `uploads` family:
    /// cheap, sessions are few).
    pub fn open_uploads(&self) -> Result<u64, StorageError> {
        self.inner.index.count(Cf::Uploads)
    }

    /// Counts entries per column family (a full index scan: tools only).
    pub fn stats(&self) -> Result<IndexStats, StorageError> {
        let i = &self.inner;
        Ok(IndexStats {
            blobs: i.index.count(Cf::Blobs)?,
            links: i.index.count(Cf::Links)?,
            manifests: i.index.count(Cf::Manifests)?,
            tags: i.index.count(Cf::Tags)?,
            uploads: i.index.count(Cf::Uploads)?,
            repos: i.index.count(Cf::Repos)?,
        })
    }
}

/// The engine's write lock, held from [`Inner::lock`] to [`Inner::commit`]
/// (or drop, which writes nothing): the engine's mutex and the index's part
/// of the lock (a PostgreSQL transaction in cluster mode). IMPORTANT: `txn`
/// is declared first, so a dropped guard ends the transaction before the
/// next thread of this node may begin one.
pub(crate) struct WriteGuard<'a> {
    txn: IndexTxn<'a>,
    _local: MutexGuard<'a, ()>,
}

impl Inner {
    /// Applies `batch` under `guard` without waiting for the WAL sync
    /// (RocksDB: in the kernel, made durable by the next synced commit;
    /// PostgreSQL: committed, durable at once).
    pub(crate) fn commit_unsynced(
        &self,
        guard: WriteGuard<'_>,
        mut batch: Batch,
    ) -> Result<(), StorageError> {
        self.settle_usage(&mut batch)?;
        let WriteGuard { txn, _local } = guard;
        let r = self.index.commit(txn, batch).map(drop);
        if self.index.is_shared() {
            r
        } else {
            self.poison_on_err(r)
        }
    }
}

/// Name of the data directory's lock file.
pub const LOCK_FILE: &str = "LOCK.berth";

/// An exclusive `flock(2)` on `<data>/LOCK.berth`: one engine per data
/// directory. The kernel drops it when the file is closed or the process
/// dies (SIGKILL included), so a stale lock never needs cleaning up.
pub(crate) struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock without waiting; [`StorageError::Locked`] if another
    /// process (or another engine in this one) holds it.
    pub(crate) fn acquire(data: &Path) -> Result<DataDirLock, StorageError> {
        use std::os::unix::io::AsRawFd;
        let path = data.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StorageError::io("open data directory lock", &path))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                StorageError::Locked { path }
            } else {
                StorageError::io("lock data directory", &path)(e)
            });
        }
        Ok(DataDirLock { _file: file })
    }
}

/// A clean close leaves no write-ahead log to replay: the memtables are
/// flushed to (synced) table files, so the next open is quick however much
/// was written since the last flush (replaying a WAL of a few hundred
/// thousand commits took seconds; `BENCHMARKS.md`, GC section). Runs when
/// the last handle goes: after the workers are joined. Skipped after a
/// failed fsync (nothing more is written then); a crash replays the WAL at
/// open, which is what it is for.
impl Drop for Inner {
    fn drop(&mut self) {
        if self.poisoned.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self.index.flush_all() {
            tracing::warn!(error = %e, "flushing the index at close");
        }
    }
}

impl Inner {
    /// Makes blob `d`'s record say where the store holds it now (the tier
    /// worker, on a store's report). The store is asked first, outside the
    /// lock (it may ask the bucket); a move after that is reported again,
    /// so the last report applied is the store's last word. IMPORTANT: the
    /// record is read under the write lock, after any commit that wrote it
    /// with an older answer. Records GC is deleting, and blobs the store no
    /// longer has, are left alone (fsck reports the latter).
    /// Where the store holds `d`, as the index records it. In cluster mode
    /// a node's local copy is its own cache, not shared state: the index
    /// records what every node sees, the bucket (`Both` is `Remote`).
    pub(crate) fn locate(&self, d: &Digest) -> Result<Option<Located>, StoreError> {
        let located = self.store.locate(d)?;
        Ok(match located {
            Some(l) if self.index.is_shared() && l.tier == Tier::Both => Some(Located {
                tier: Tier::Remote,
                ..l
            }),
            other => other,
        })
    }

    /// The tier hint a read of a blob recorded at `tier` gives the store:
    /// in cluster mode the local cache is tried first whatever the index
    /// says (it is this node's), then the bucket.
    pub(crate) fn read_hint(&self, tier: Tier) -> Tier {
        if self.index.is_shared() {
            Tier::Both
        } else {
            tier
        }
    }

    pub(crate) fn sync_tier(&self, d: &Digest) -> Result<(), StorageError> {
        let Some(located) = self.locate(d).map_err(|e| self.store_err(e))? else {
            return Ok(());
        };
        let g = self.lock()?;
        let Some(mut rec) = self.index.get(&BlobKey(d.clone()))? else {
            return Ok(());
        };
        if rec.state == BlobState::Deleting || rec.tier == located.tier {
            return Ok(());
        }
        rec.tier = located.tier;
        let mut b = Batch::default();
        self.put_blob_record(&mut b, d, &rec);
        self.commit(g, b)
    }

    /// Puts blob record `rec` of `d` into `batch`, with its `gc_candidates`
    /// entry: present exactly when the refcount is 0. IMPORTANT: every
    /// write of a blob record goes through here, so the candidates index
    /// changes in the same batch as the count it mirrors.
    pub(crate) fn put_blob_record(&self, batch: &mut Batch, d: &Digest, rec: &BlobRecord) {
        batch.put(&BlobKey(d.clone()), rec);
        let candidate = GcCandidateKey(d.clone());
        if rec.refcount == 0 {
            batch.put(&candidate, &Empty);
        } else {
            batch.delete(&candidate);
        }
    }

    /// Whether the blob records' tiers still have to be located once (an
    /// index written before tiers were kept: every record says `local`).
    /// An index without blobs has nothing to locate and is marked at once.
    fn tiers_to_locate(&self) -> Result<bool, StorageError> {
        if self.index.contains(&TiersLocatedKey)? {
            return Ok(false);
        }
        if self.index.scan_keys(BlobKey::all()).next().is_some() {
            return Ok(true);
        }
        self.mark_tiers_located()?;
        Ok(false)
    }

    /// Records that every blob record's tier was located.
    pub(crate) fn mark_tiers_located(&self) -> Result<(), StorageError> {
        let g = self.lock()?;
        let mut b = Batch::default();
        b.put(&TiersLocatedKey, &Marker);
        self.commit(g, b)
    }

    /// Locates every blob record's tier in the store once ([`Inner::sync_tier`]
    /// each), for an index written before tiers were kept; then marks the
    /// index so later opens skip it. Runs on the tier worker, never on the
    /// open path; `stop` ends it early (unmarked: the next open starts
    /// over). Returns whether it finished.
    pub(crate) fn locate_all_tiers(&self, stop: &dyn Fn() -> bool) -> Result<bool, StorageError> {
        let mut n = 0u64;
        for r in self.index.scan_keys(BlobKey::all()) {
            if stop() {
                return Ok(false);
            }
            let d = match r {
                Ok(BlobKey(d)) => d,
                Err(StorageError::CorruptKey(_)) => continue, // fsck reports it
                Err(e) => return Err(e),
            };
            self.sync_tier(&d)?;
            n += 1;
        }
        self.mark_tiers_located()?;
        tracing::info!(blobs = n, "located the tier of every blob record");
        Ok(true)
    }

    /// Builds `gc_candidates` from `blobs` once, for an index written before
    /// the family existed (a fresh index has nothing to scan). Later opens
    /// find the marker in `meta` and skip this.
    fn build_gc_candidates(&self) -> Result<(), StorageError> {
        if self.index.contains(&GcCandidatesBuiltKey)? {
            return Ok(());
        }
        let g = self.lock()?;
        let mut b = Batch::default();
        let mut n = 0u64;
        for r in self.index.scan(BlobKey::all()) {
            let (BlobKey(d), rec) = r?;
            if rec.refcount == 0 {
                b.put(&GcCandidateKey(d), &Empty);
                n += 1;
            }
        }
        b.put(&GcCandidatesBuiltKey, &Marker);
        self.commit(g, b)?;
        if n > 0 {
            tracing::info!(candidates = n, "built the GC candidates index");
        }
        Ok(())
    }

    /// Takes the index write lock, refusing if the engine is poisoned:
    /// this engine's mutex, then the index's part (in cluster mode, the
    /// cluster-wide lock, so at most one connection per node waits for it).
    pub(crate) fn lock(&self) -> Result<WriteGuard<'_>, StorageError> {
        self.check_poison()?;
        let local = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.index.begin()?;
        Ok(WriteGuard { txn, _local: local })
    }

    /// [`Inner::lock`], with `reads` made once it is held
    /// ([`Index::begin_reading`]: in cluster mode, in the same round trip).
    pub(crate) fn lock_reading(
        &self,
        reads: ReadAhead,
    ) -> Result<(WriteGuard<'_>, Prefetched), StorageError> {
        self.check_poison()?;
        let local = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (txn, prefetched) = self.index.begin_reading(reads)?;
        Ok((WriteGuard { txn, _local: local }, prefetched))
    }

    pub(crate) fn check_poison(&self) -> Result<(), StorageError> {
        if self.poisoned.load(Ordering::Acquire) {
            let reason = self
                .poison_reason
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            return Err(StorageError::Poisoned(reason));
        }
        Ok(())
    }

    /// Records a durability failure: every later write is refused.
    pub(crate) fn poison(&self, e: &StorageError) {
        if let Ok(mut r) = self.poison_reason.lock() {
            if r.is_empty() {
                *r = e.to_string();
            }
        }
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(error = %e, "durability failure: engine refuses further writes until reopened");
    }

    /// Passes `r` through, poisoning the engine if it is an error.
    pub(crate) fn poison_on_err<T>(&self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &r {
            self.poison(e);
        }
        r
    }

    /// Writes a batch durably, with group commit, then releases the write
    /// lock `guard` that was held while the batch was computed.
    ///
    /// IMPORTANT, the order: (1) the batch is applied under the lock without
    /// a WAL sync, so the next lock holder computes from the new state and
    /// WAL order equals lock order; (2) the lock is released; (3) the WAL is
    /// synced up to this batch's sequence number. Concurrent committers wait
    /// on one sync: whoever syncs covers every batch written before it. A
    /// batch is visible to readers from (1) but acknowledged (this returns)
    /// only after (3); a crash can lose a visible, unacknowledged batch and
    /// never an acknowledged one, and the WAL keeps a prefix of lock order.
    /// Any failure poisons the engine.
    ///
    /// In cluster mode the batch is committed in the lock's transaction,
    /// durable when that returns; a failure there does not poison (the
    /// database, not this process, decides what is durable, and the next
    /// lock reads its answer).
    ///
    /// IMPORTANT: in cluster mode a batch removing a manifest from a
    /// repository is acknowledged only once no node can still serve the
    /// entry it read before the commit ([`Inner::wait_link_leases`]); the
    /// write lock is free meanwhile.
    pub(crate) fn commit(&self, guard: WriteGuard<'_>, batch: Batch) -> Result<(), StorageError> {
        let unlinks = batch.deletes(Cf::RepoManifests);
        self.commit_unleased(guard, batch)?;
        if unlinks {
            self.wait_link_leases();
        }
        Ok(())
    }

    /// [`Inner::commit`] without the wait for link leases: for a caller
    /// that commits many removals and waits once
    /// ([`Inner::wait_link_leases`]) before it reports them (GC).
    pub(crate) fn commit_unleased(
        &self,
        guard: WriteGuard<'_>,
        mut batch: Batch,
    ) -> Result<(), StorageError> {
        // Derived from the batch's `links` changes, in the batch
        // (`quotas.rs`); a refusal writes nothing and poisons nothing.
        self.settle_usage(&mut batch)?;
        let WriteGuard { txn, _local } = guard;
        let seq = match self.index.commit(txn, batch) {
            Ok(Committed::Durable) => {
                EngineMetrics::add(&self.metrics.index_commits, 1);
                return Ok(());
            }
            Ok(Committed::Logged(seq)) => seq,
            Err(e) => {
                if !self.index.is_shared() {
                    self.poison(&e);
                }
                return Err(e);
            }
        };
        EngineMetrics::add(&self.metrics.index_commits, 1);
        drop(_local);
        let mut synced = self.synced_seq.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= seq {
            return Ok(()); // another committer's sync covered this batch
        }
        self.check_poison()?;
        let r = self.index.sync_wal();
        *synced = self.poison_on_err(r)?;
        Ok(())
    }

    /// Cluster mode: waits until every node's copy of a repository entry
    /// read before now has expired ([`LINK_LEASE_WAIT`]; see
    /// [`crate::manifests::LinkCache`]). Nothing in single-node mode, whose
    /// reads are never cached.
    pub(crate) fn wait_link_leases(&self) {
        if self.index.is_shared() {
            std::thread::sleep(LINK_LEASE_WAIT);
        }
    }

    fn check_format(&self) -> Result<(), StorageError> {
        match self.index.get(&FormatKey)? {
            Some(FormatVersion(v)) if v == keys::FORMAT_VERSION => Ok(()),
            Some(FormatVersion(v)) => Err(StorageError::Corrupt {
                what: FormatKey.to_string(),
                detail: format!(
                    "index format {v} is not the supported version {}",
                    keys::FORMAT_VERSION
                ),
            }),
            None => {
                let g = self.lock()?;
                let mut b = Batch::default();
                b.put(&FormatKey, &FormatVersion(keys::FORMAT_VERSION));
                self.commit(g, b)
            }
        }
    }
}
