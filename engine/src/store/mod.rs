//! Blob stores: where blob bytes live, keyed by digest.
//!
//! A blob store is a dumb, durable map `Digest -> bytes`. It knows nothing of
//! repositories, links, reference counts or GC state — the index owns those
//! and is the source of truth; a blob present in a store but absent from the
//! index is garbage, never visible to clients.
//!
//! Backends: [`LocalStore`] (filesystem, sharded by digest, memory-mapped
//! reads), [`S3Store`] (an S3-compatible bucket: Ceph RGW, MinIO, AWS),
//! [`TieredStore`] (a local cache in front of an [`S3Store`], write-through
//! for the `s3` backend, write-back for `tiered`) and [`MemoryStore`]
//! (tests, benchmarks). Every backend passes the shared suite in
//! [`testsuite`]. [`open_backend`] builds the one a configuration names.
//!
//! Stores trust their callers on content: `put_bytes` and `commit` do not
//! re-hash. The
//! engine verifies digests before calling them (DESIGN: "digests are always
//! verified before a blob becomes visible").

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
pub use crate::records::{Segment, Tier};

mod backend;
#[cfg(test)]
mod crash;
pub mod fs;
mod local;
mod memory;
pub mod s3;
pub mod settings;
pub mod simfs;
mod staging;
pub mod testsuite;
mod tiered;

pub use backend::{open_backend, Backend, BackendKind, DEFAULT_CACHE_MAX_BYTES};
pub(crate) use local::blob_relative_path;
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use s3::{S3Config, S3Store};
pub use settings::StorageSettings;
pub use staging::{valid_staged_id, Staged};
pub use tiered::{TierMode, TierStats, TieredStore};

/// A blob store backend.
///
/// All methods are blocking (call them from worker threads or
/// `spawn_blocking`, never on the async request path) and may be called
/// concurrently from many threads.
///
/// Visibility and atomicity, common to all backends:
/// - A blob becomes visible to `get`/`stat`/`list` all at once when `put_bytes`
///   or `commit` returns `Ok` — never partially written, never before the
///   data is durable.
/// - The store owns what it stages: a staged blob is written only through
///   its [`Staged`] handle, and never shares bytes with a published blob.
/// - `Overwrite` replaces a blob atomically: a concurrent `get` sees the old
///   or the new bytes, never a mix. A `BlobData` already handed out keeps the
///   bytes it was created with, even across overwrite or delete.
/// - `CreateOnly` is exclusive: among concurrent `CreateOnly` puts of one
///   digest, exactly one returns [`PutOutcome::Stored`]; the rest return
///   [`PutOutcome::AlreadyPresent`] and change nothing.
/// - A failed fsync is reported as an error for which
///   [`StoreError::is_sync_failure`] is true; [`LocalStore`] then refuses
///   all further puts and deletes until reopened.
pub trait BlobStore: Send + Sync + 'static {
    /// Short backend name for logs and metrics (`"local"`, `"memory"`, …).
    fn name(&self) -> &'static str;

    /// Creates staged blob `id` (see `staging.rs`), empty: the caller
    /// writes it with [`Staged::write_at`], makes it durable with
    /// [`Staged::sync`], and hands it to [`BlobStore::commit`] or gives it up
    /// with [`BlobStore::abort`]. The staged id exists durably when this
    /// returns and survives restarts ([`BlobStore::open_staged`],
    /// [`BlobStore::staged_ids`]). `id` must satisfy [`valid_staged_id`]
    /// and not be staged already.
    ///
    /// Backends: [`LocalStore`] a file in `<root>/staging`; [`S3Store`] a
    /// file in its local staging directory, uploaded at commit;
    /// [`TieredStore`] its local store's; [`MemoryStore`] a buffer (not
    /// durable).
    fn stage(&self, id: &str) -> Result<Staged, StoreError>;

    /// Reopens staged blob `id` (after a restart, or for the next request
    /// of an upload); `None` if it is not staged. IMPORTANT: a staged blob
    /// never shares bytes with a published blob: one that a crash left as a
    /// second name of a published blob is dropped here (the blob is kept)
    /// and reported as `None`.
    fn open_staged(&self, id: &str) -> Result<Option<Staged>, StoreError>;

    /// Every staged id, sorted: what recovery compares with its records.
    fn staged_ids(&self) -> Result<Vec<String>, StoreError>;

    /// Publishes `staged` as blob `digest`: syncs it, then makes it visible
    /// all at once. After `Ok` the blob is durably readable and the staged
    /// id no longer exists — with [`PutMode::CreateOnly`] on an existing
    /// blob, the existing bytes are left untouched, the staged bytes are
    /// dropped and [`PutOutcome::AlreadyPresent`] is returned. With
    /// [`PutMode::Overwrite`] an existing blob is replaced atomically. After
    /// `Err` the staged id may still exist (reopen it or abort it).
    ///
    /// The caller verified that the staged bytes hash to `digest`; the store
    /// does not re-hash. [`LocalStore`] moves the staged file into place in
    /// O(1) (`renameat2(RENAME_NOREPLACE)`); [`S3Store`] uploads it
    /// (multipart, resumable across crashes: the upload id and part ETags
    /// are kept in the staging area with the staged id).
    fn commit(
        &self,
        staged: Staged,
        digest: &Digest,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError>;

    /// Gives up staged blob `id`: removes it and whatever the store keeps
    /// for it ([`S3Store`] aborts its multipart upload). Absent is fine.
    /// Never touches a published blob.
    fn abort(&self, id: &str) -> Result<(), StoreError>;

    /// Stores `data` as blob `digest`. Same visibility, durability and mode
    /// semantics as [`BlobStore::commit`]; `data` must hash to `digest`.
    ///
    /// [`LocalStore`] writes a temp file in its tmp dir, fsyncs it and
    /// durably renames it into place.
    fn put_bytes(
        &self,
        digest: &Digest,
        data: &[u8],
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError>;

    /// Reads blob `digest`, or the byte `range` of it (`None` = whole blob).
    ///
    /// A range must satisfy `start <= end <= size`, else
    /// [`StoreError::RangeNotSatisfiable`]; an empty range at the end
    /// (`size..size`) is valid and yields no bytes. A missing blob is
    /// [`StoreError::NotFound`].
    ///
    /// The returned [`BlobData`] is a stable snapshot: it is unaffected by a
    /// later overwrite or delete of the blob. [`LocalStore`] memory-maps the
    /// file (no copy); [`MemoryStore`] shares its buffer.
    fn get(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobData, StoreError>;

    /// The size in bytes of blob `digest`, or `None` if it is not stored.
    fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;

    /// Removes blob `digest`; returns whether it existed.
    ///
    /// After `Ok` the removal is durable ([`LocalStore`] fsyncs the shard
    /// directory). Deciding *whether* a blob may be deleted is the GC's job,
    /// via the index; the store deletes unconditionally.
    fn delete(&self, digest: &Digest) -> Result<bool, StoreError>;

    /// Every stored digest, sorted, found by walking storage.
    ///
    /// For fsck and offline tools only: it is O(stored blobs) and startup
    /// never calls it (the index is the source of truth). Temp files and
    /// entries that are not blobs are skipped; blobs being put concurrently
    /// may or may not be included.
    fn list(&self) -> Result<Vec<Digest>, StoreError>;

    /// Shared staging, for upload sessions whose requests reach several
    /// cluster nodes (`docs/cluster.md`): keeps the bytes of local staged
    /// blob `staged` as segment `name` of upload `upload`, where every
    /// store over the same bytes reads them ([`BlobStore::read_segment`])
    /// and composes them into a blob ([`BlobStore::compose`]). Durable when
    /// this returns `Ok`; the staged id is gone then. `name` must satisfy
    /// [`valid_staged_id`] and be new for the upload: a segment is never
    /// overwritten, so two nodes racing on one session never write each
    /// other's bytes.
    ///
    /// [`S3Store`] (and a write-through [`TieredStore`]): an object
    /// `<root>uploads/<upload>/<name>` of the bucket. The default keeps the
    /// segment as staged id `<upload>-<name>` in the store itself: one host
    /// only (the engine's tests of cluster mode on a local store).
    fn put_segment(&self, upload: &str, name: &str, staged: Staged) -> Result<(), StoreError> {
        let seg = self.stage(&segment_id(upload, name)?)?;
        let copied = copy_staged(&staged, &seg).and_then(|()| seg.sync());
        drop(seg);
        if let Err(e) = copied {
            let _ = self.abort(&segment_id(upload, name)?);
            return Err(e);
        }
        let id = staged.id().to_owned();
        drop(staged);
        self.abort(&id)
    }

    /// Streams segment `name` of upload `upload` to `on_chunk`; returns its
    /// size. A missing segment is an error.
    fn read_segment(
        &self,
        upload: &str,
        name: &str,
        on_chunk: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let id = segment_id(upload, name)?;
        let seg = self.open_staged(&id)?.ok_or_else(|| StoreError::Remote {
            op: "read upload segment",
            key: id.clone(),
            message: "no such segment".to_owned(),
        })?;
        read_staged(&seg, on_chunk)
    }

    /// Publishes the concatenation of `segments` of upload `upload`, in
    /// order, as blob `digest` (the caller verified the bytes hash to it):
    /// the same visibility, durability and `mode` as
    /// [`BlobStore::commit`]. The segments stay (see
    /// [`BlobStore::drop_segments`]). [`S3Store`] composes them inside
    /// the bucket (CopyObject, or UploadPartCopy for several: every segment
    /// but the last must then be at least [`MIN_SEGMENT`] bytes); the
    /// default copies them into a staged blob and commits that.
    fn compose(
        &self,
        upload: &str,
        segments: &[Segment],
        digest: &Digest,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let id = segment_id(upload, "compose")?;
        self.abort(&id)?;
        let out = self.stage(&id)?;
        let mut at = 0u64;
        let copied = segments.iter().try_for_each(|s| {
            self.read_segment(upload, &s.name, &mut |chunk| {
                out.write_at(chunk, at)?;
                at += chunk.len() as u64;
                Ok(())
            })
            .map(drop)
        });
        if let Err(e) = copied {
            drop(out);
            let _ = self.abort(&id);
            return Err(e);
        }
        self.commit(out, digest, mode)
    }

    /// Every upload that has segments, sorted: what GC compares with the
    /// session records (a segment whose session is gone is garbage).
    fn segment_uploads(&self) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = self
            .staged_ids()?
            .into_iter()
            .filter_map(|id| id.split_once('-').map(|(upload, _)| upload.to_owned()))
            .collect();
        ids.dedup();
        Ok(ids)
    }

    /// Removes segment `name` of upload `upload` (absent is fine), or with
    /// `None` every segment of the upload.
    fn drop_segments(&self, upload: &str, name: Option<&str>) -> Result<(), StoreError> {
        if let Some(name) = name {
            return self.abort(&segment_id(upload, name)?);
        }
        let prefix = format!("{upload}-");
        for id in self.staged_ids()? {
            if id.starts_with(&prefix) {
                self.abort(&id)?;
            }
        }
        Ok(())
    }

    /// Tier counters (cache hits, misses, bytes uploaded, evicted) of a
    /// tiered store, for `/metrics`; `None` for single-tier stores.
    fn tier_stats(&self) -> Option<&TierStats> {
        None
    }

    /// Where blob `digest`'s bytes are now, and their size; `None` if it is
    /// not stored. What the index's [`Tier`] of the blob must say (the
    /// engine writes it at commit and on every [`TierMoves`] report; fsck
    /// compares the two).
    ///
    /// Backends: [`LocalStore`] and [`MemoryStore`] `Local` (the default,
    /// from `stat`); [`S3Store`] `Remote`; [`TieredStore`] `Local` for a
    /// local copy not yet in the bucket (write-back journal), `Both` for a
    /// local copy of a blob in the bucket, `Remote` when only the bucket
    /// has it (one HEAD request; otherwise local calls only).
    fn locate(&self, digest: &Digest) -> Result<Option<Located>, StoreError> {
        Ok(self.stat(digest)?.map(|size| Located {
            tier: Tier::Local,
            size,
        }))
    }

    /// The bucket this store keeps its blobs in, if it keeps them in one
    /// ([`S3Store`] itself, a [`TieredStore`]'s remote tier): what copies
    /// inside the bucket go through (`Engine::copy_from_bucket`).
    fn bucket(&self) -> Option<&S3Store> {
        None
    }

    /// Gives the store the channel on which it reports every digest whose
    /// [`BlobStore::locate`] answer it changed on its own, after the change
    /// (a background copy to the bucket, an eviction, a read-through fill).
    /// The engine's tier worker receives it and rewrites the blob record's
    /// tier; a store never writes the index. A later call replaces the
    /// channel. Default: ignored (single-tier stores never move bytes).
    fn watch_tiers(&self, moves: TierMoves) {
        let _ = moves;
    }

    /// [`BlobStore::get`], told where the index last saw the bytes: a
    /// [`TieredStore`] reads a `Remote` blob straight from the bucket,
    /// without trying the local store first. A stale `at` costs time, never
    /// the read: the store falls back to looking everywhere.
    fn get_at(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
        at: Tier,
    ) -> Result<BlobData, StoreError> {
        let _ = at;
        self.get(digest, range)
    }
}

/// Smallest segment of a shared upload that is not its last: S3's
/// smallest multipart part, so the bucket composes segments as parts.
pub const MIN_SEGMENT: u64 = 5 << 20;

/// The staged id the default shared staging keeps segment `name` of
/// upload `upload` under.
pub(crate) fn segment_id(upload: &str, name: &str) -> Result<String, StoreError> {
    let id = format!("{upload}-{name}");
    if valid_staged_id(upload) && valid_staged_id(name) && valid_staged_id(&id) {
        Ok(id)
    } else {
        Err(StoreError::Remote {
            op: "name upload segment",
            key: id,
            message: "not a valid segment name".to_owned(),
        })
    }
}

/// Streams all of `staged` to `on_chunk`, 1 MiB at a time; returns its size.
pub(crate) fn read_staged(
    staged: &Staged,
    on_chunk: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let len = staged.len()?;
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        staged.read_at(&mut buf[..n], at)?;
        on_chunk(&buf[..n])?;
        at += n as u64;
    }
    Ok(len)
}

fn copy_staged(from: &Staged, to: &Staged) -> Result<(), StoreError> {
    let mut at = 0u64;
    read_staged(from, &mut |chunk| {
        to.write_at(chunk, at)?;
        at += chunk.len() as u64;
        Ok(())
    })
    .map(drop)
}

/// Where a store holds a blob ([`BlobStore::locate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    pub tier: Tier,
    pub size: u64,
}

/// The channel on which a store reports digests whose tier it changed
/// ([`BlobStore::watch_tiers`]). Unbounded: a report is a digest, sent by
/// the store's background threads, never waiting on the engine.
pub type TierMoves = crossbeam_channel::Sender<Digest>;

/// Conditional-write mode for `put_bytes` and `commit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Store only if the digest is absent; an existing blob is left untouched
    /// (returns [`PutOutcome::AlreadyPresent`]). The normal mode: content is
    /// immutable, so a re-push of existing content is a no-op.
    CreateOnly,
    /// Store, atomically replacing any existing blob (e.g. repair of a blob
    /// that failed scrub). Always returns [`PutOutcome::Stored`].
    Overwrite,
}

/// What a successful `put_bytes` or `commit` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The bytes given were stored.
    Stored,
    /// [`PutMode::CreateOnly`] found the blob already stored; nothing changed.
    AlreadyPresent,
}

/// Blob bytes handed out for serving, without copying.
///
/// Cheap to move; owns what keeps the bytes alive, so it is
/// `Send + Sync + 'static` and can become a `bytes::Bytes` via
/// `Bytes::from_owner`. Invariant for both variants: `start <= end <=` the
/// length of the underlying map or buffer; the bytes are `[start, end)`.
pub enum BlobData {
    /// A read-only memory map of a blob file ([`LocalStore`]). Sound because
    /// the store never modifies a blob file in place: writes rename a new
    /// file over the name and deletes unlink, both of which leave an existing
    /// mapping intact.
    Mapped {
        /// The whole file's mapping.
        map: Arc<memmap2::Mmap>,
        /// The mapped file, kept open so the bytes can also be sent with
        /// `sendfile(2)` (see [`BlobData::mapped_file`]).
        file: Arc<std::fs::File>,
        /// First byte served.
        start: usize,
        /// One past the last byte served.
        end: usize,
    },
    /// A shared in-memory buffer ([`MemoryStore`], [`S3Store`], and empty
    /// files, which cannot be mapped).
    Shared {
        /// The whole blob.
        buf: Arc<[u8]>,
        /// First byte served.
        start: usize,
        /// One past the last byte served.
        end: usize,
    },
    /// A blob still arriving in a local file ([`TieredStore`] reading a
    /// blob that is only in the bucket: the bytes are served while they are
    /// downloaded into the cache). [`BlobData::into_async_chunks`] yields
    /// each chunk once it has arrived without blocking a thread: what an
    /// async sender uses. [`BlobData::into_chunks`] blocks the calling
    /// thread until each chunk has arrived and `as_ref` until the whole blob
    /// has: call those only where blocking is allowed (a blocking-pool or
    /// engine thread, never an async worker). If the download fails, the
    /// chunks stop early (a short body, which HTTP clients detect through
    /// Content-Length).
    Stream {
        /// The file being filled and its progress.
        src: Arc<StreamSource>,
        /// First byte served.
        start: usize,
        /// One past the last byte served.
        end: usize,
    },
}

/// A file being filled by a download, shared by the downloader and the
/// [`BlobData::Stream`] values reading it.
///
/// The downloader appends to the file (never rewrites), then reports
/// progress with [`StreamSource::advance`] and the end with
/// [`StreamSource::finish`]; readers `pread` only bytes below the reported
/// progress, so they never see unwritten bytes. The file handle stays valid
/// when the cache later renames or deletes the path.
pub struct StreamSource {
    file: std::fs::File,
    size: u64,
    /// (bytes written, final error if the download failed). Lifetime: as
    /// long as any reader. On every change the condvar wakes blocked
    /// readers and `arrivals` async ones (tokio's `Notify`: a waiter that
    /// registered before checking the state cannot miss a change).
    state: std::sync::Mutex<(u64, Option<String>)>,
    changed: std::sync::Condvar,
    arrivals: tokio::sync::Notify,
    /// The whole file mapped, once complete (for `as_ref`).
    map: std::sync::OnceLock<Option<memmap2::Mmap>>,
}

impl StreamSource {
    /// A source for a file (opened for reading) that will hold `size` bytes.
    pub(crate) fn new(file: std::fs::File, size: u64) -> StreamSource {
        StreamSource {
            file,
            size,
            state: std::sync::Mutex::new((0, None)),
            changed: std::sync::Condvar::new(),
            arrivals: tokio::sync::Notify::new(),
            map: std::sync::OnceLock::new(),
        }
    }

    /// The downloader wrote bytes up to `written`.
    pub(crate) fn advance(&self, written: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = written;
        self.changed.notify_all();
        self.arrivals.notify_waiters();
    }

    /// The download ended: `Ok` with every byte written, or failed.
    pub(crate) fn finish(&self, result: Result<(), String>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => s.0 = self.size,
            Err(e) => s.1 = Some(e),
        }
        self.changed.notify_all();
        self.arrivals.notify_waiters();
    }

    /// Whether bytes `[0, end)` are written: `Some(true)`, `Some(false)` if
    /// the download failed first, `None` while they are still arriving.
    fn arrival(&self, end: u64) -> Option<bool> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.0 >= end {
            Some(true)
        } else if s.1.is_some() {
            Some(false)
        } else {
            None
        }
    }

    /// Blocks the calling thread until bytes `[0, end)` are written; false
    /// if the download failed. Never call it on an async worker (see
    /// [`StreamSource::arrived`]).
    fn wait_for(&self, end: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if s.0 >= end {
                return true;
            }
            if s.1.is_some() {
                return false;
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits, without blocking the thread, until bytes `[0, end)` are
    /// written; false if the download failed.
    async fn arrived(&self, end: u64) -> bool {
        loop {
            // IMPORTANT: register interest before checking, so a change
            // between the check and the await still wakes this waiter.
            let notified = self.arrivals.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(done) = self.arrival(end) {
                return done;
            }
            notified.await;
        }
    }

    /// Bytes `[start, end)`, once written; `None` if the download failed.
    fn read(&self, start: usize, end: usize) -> Option<Arc<[u8]>> {
        use std::os::unix::fs::FileExt;
        if !self.wait_for(end as u64) {
            return None;
        }
        let mut buf = vec![0u8; end - start];
        self.file.read_exact_at(&mut buf, start as u64).ok()?;
        Some(Arc::from(buf))
    }

    /// The whole blob, once complete (empty if the download failed).
    fn whole(&self) -> &[u8] {
        let map = self.map.get_or_init(|| {
            if self.size == 0 || !self.wait_for(self.size) {
                return None;
            }
            // SAFETY: the file is complete and never written again (see
            // the type's docs); the mapping is read-only.
            unsafe { memmap2::Mmap::map(&self.file) }.ok()
        });
        map.as_deref().unwrap_or(&[])
    }
}

impl BlobData {
    /// Number of bytes served.
    pub fn len(&self) -> usize {
        match self {
            BlobData::Mapped { start, end, .. }
            | BlobData::Shared { start, end, .. }
            | BlobData::Stream { start, end, .. } => end - start,
        }
    }

    /// Whether no bytes are served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For mapped bytes: the file and its whole mapping, which starts at
    /// file offset 0. A byte at address `p` inside the map is at file
    /// offset `p - map.as_ptr()`, which lets a sender hand the kernel the
    /// file range instead of copying the mapped bytes (`sendfile(2)`).
    pub fn mapped_file(&self) -> Option<(&Arc<std::fs::File>, &Arc<memmap2::Mmap>)> {
        match self {
            BlobData::Mapped { map, file, .. } => Some((file, map)),
            BlobData::Shared { .. } | BlobData::Stream { .. } => None,
        }
    }

    /// The chunks of [`BlobData::into_chunks`] as a stream that never
    /// blocks its thread: mapped and shared bytes are ready at once; a blob
    /// still arriving ([`BlobData::Stream`]) yields each chunk once the
    /// download has reached it (an async wait) and reads it from the cache
    /// file on tokio's blocking pool. Must be polled inside a tokio runtime.
    pub fn into_async_chunks(
        self,
        chunk: usize,
    ) -> impl futures::Stream<Item = BlobData> + Send + 'static {
        use futures::future::Either;
        let chunk = chunk.max(1);
        let arriving = match &self {
            BlobData::Stream { src, start, end } => Some((src.clone(), *start, *end)),
            BlobData::Mapped { .. } | BlobData::Shared { .. } => None,
        };
        let Some((src, start, end)) = arriving else {
            return Either::Left(futures::stream::iter(self.into_chunks(chunk)));
        };
        Either::Right(futures::stream::unfold(start, move |s| {
            let src = src.clone();
            async move {
                if s >= end {
                    return None;
                }
                let e = s.saturating_add(chunk).min(end);
                if !src.arrived(e as u64).await {
                    return None;
                }
                // The bytes are written: the read does not wait, but it is
                // file I/O, so it runs on the blocking pool.
                let buf = tokio::task::spawn_blocking(move || src.read(s, e))
                    .await
                    .ok()??;
                let next = BlobData::Shared {
                    end: buf.len(),
                    buf,
                    start: 0,
                };
                Some((next, e))
            }
        }))
    }

    /// Copies the bytes into a new `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_ref().to_vec()
    }

    /// Splits the bytes into consecutive chunks of at most `chunk` bytes,
    /// for streaming a large blob. A mapped chunk hands its pages back to
    /// the kernel when dropped (`madvise(MADV_DONTNEED)` on its range), so
    /// a process serving many large blobs keeps resident only the chunks in
    /// flight, not every mapped blob; the bytes stay in the page cache.
    pub fn into_chunks(self, chunk: usize) -> impl Iterator<Item = BlobData> + Send {
        let chunk = chunk.max(1);
        let (start, end) = match &self {
            BlobData::Mapped { start, end, .. }
            | BlobData::Shared { start, end, .. }
            | BlobData::Stream { start, end, .. } => (*start, *end),
        };
        let mut failed = false;
        (start..end).step_by(chunk).map_while(move |s| {
            let e = (s + chunk).min(end);
            if failed {
                return None;
            }
            Some(match &self {
                BlobData::Mapped { map, file, .. } => BlobData::Mapped {
                    map: map.clone(),
                    file: file.clone(),
                    start: s,
                    end: e,
                },
                BlobData::Shared { buf, .. } => BlobData::Shared {
                    buf: buf.clone(),
                    start: s,
                    end: e,
                },
                // A streamed chunk is read once it has arrived; the stream
                // stops at the first byte that never will.
                BlobData::Stream { src, .. } => match src.read(s, e) {
                    Some(buf) => BlobData::Shared {
                        end: buf.len(),
                        buf,
                        start: 0,
                    },
                    None => {
                        failed = true;
                        return None;
                    }
                },
            })
        })
    }
}

impl Drop for BlobData {
    fn drop(&mut self) {
        // Only chunks release pages: a whole-blob BlobData is usually the
        // last user of its map anyway, and unmapping frees it.
        if let BlobData::Mapped {
            map, start, end, ..
        } = self
        {
            if Arc::strong_count(map) > 1 && *end > *start {
                // SAFETY: the map is a read-only, shared mapping of a file
                // that is never modified in place (see the variant's docs).
                // MADV_DONTNEED on such a mapping only drops this process's
                // page table entries; a later access, by any holder of the
                // map, faults the same bytes back in from the page cache.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        *start,
                        *end - *start,
                    )
                };
            }
        }
    }
}

impl AsRef<[u8]> for BlobData {
    fn as_ref(&self) -> &[u8] {
        match self {
            BlobData::Mapped {
                map, start, end, ..
            } => &map[*start..*end],
            BlobData::Shared { buf, start, end } => &buf[*start..*end],
            BlobData::Stream { src, start, end } => src.whole().get(*start..*end).unwrap_or(&[]),
        }
    }
}

impl fmt::Debug for BlobData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, start, end) = match self {
            BlobData::Mapped { start, end, .. } => ("Mapped", start, end),
            BlobData::Shared { start, end, .. } => ("Shared", start, end),
            BlobData::Stream { start, end, .. } => ("Stream", start, end),
        };
        write!(f, "BlobData::{kind}({start}..{end}, {} bytes)", end - start)
    }
}

/// A blob store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The blob is not stored.
    #[error("blob {digest} not found in blob store")]
    NotFound {
        /// The blob asked for.
        digest: Digest,
    },
    /// The requested byte range does not lie within the blob.
    #[error("byte range not satisfiable for blob {digest} of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob asked for.
        digest: Digest,
        /// Its actual size.
        size: u64,
    },
    /// A request to a remote (S3) store failed.
    #[error("{op} {key}: {message}")]
    Remote {
        /// What the store was doing, e.g. `"put object"`.
        op: &'static str,
        /// The object (`s3://bucket/key`) or bucket it was doing it on.
        key: String,
        /// The client's error.
        message: String,
    },
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What the store was doing, e.g. `"map blob file"`.
        op: &'static str,
        /// The file or directory it was doing it on.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether this is a failed fsync (see [`crate::durable::is_sync_failure`]):
    /// the durability of recent writes is unknown, and the engine must stop
    /// writing until reopened.
    pub fn is_sync_failure(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if crate::durable::is_sync_failure(source))
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks `range` against a blob of `size` bytes; returns `[start, end)`.
/// `size` is the length of an in-memory map or buffer, so it fits in `usize`.
fn check_range(
    digest: &Digest,
    size: usize,
    range: Option<Range<u64>>,
) -> Result<(usize, usize), StoreError> {
    let Some(r) = range else {
        return Ok((0, size));
    };
    // `size as u64` is lossless; after the check, start and end fit in usize.
    if r.start <= r.end && r.end <= size as u64 {
        Ok((r.start as usize, r.end as usize))
    } else {
        Err(StoreError::RangeNotSatisfiable {
            digest: digest.clone(),
            size: size as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn blob_data_is_send_sync_static() {
        fn assert_send_sync_static<T: Send + Sync + 'static>() {}
        assert_send_sync_static::<BlobData>();
        assert_send_sync_static::<StoreError>();
    }

    #[test]
    fn blob_data_slices_and_debug_hides_contents() {
        let buf: Arc<[u8]> = Arc::from(&b"hello world"[..]);
        let d = BlobData::Shared {
            buf,
            start: 6,
            end: 11,
        };
        assert_eq!(d.as_ref(), b"world");
        assert_eq!(d.len(), 5);
        assert!(!d.is_empty());
        assert_eq!(d.to_vec(), b"world".to_vec());
        assert_eq!(format!("{d:?}"), "BlobData::Shared(6..11, 5 bytes)");
    }

    /// The chunks of a blob still arriving never block the thread that
    /// polls them: one single-threaded runtime both feeds the download
    /// (as the tier's fill thread would) and reads the chunks, so a reader
    /// that blocked its thread would wait forever for bytes its own thread
    /// has to write.
    #[test]
    fn arriving_chunks_never_block_the_polling_thread() {
        use futures::StreamExt;
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fill");
        let mut wfile = std::fs::File::create(&path).expect("create");
        let rfile = std::fs::File::open(&path).expect("open");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let src = Arc::new(StreamSource::new(rfile, bytes.len() as u64));
        let data = BlobData::Stream {
            src: src.clone(),
            start: 0,
            end: bytes.len(),
        };
        let expected = bytes.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // The runtime runs on a thread of its own so that a reader that
        // blocks shows up as no answer, not as a hung test.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let got = rt.block_on(async move {
                let writer = tokio::spawn(async move {
                    for (i, part) in bytes.chunks(7_000).enumerate() {
                        wfile.write_all(part).expect("write");
                        src.advance(((i + 1) * 7_000).min(bytes.len()) as u64);
                        tokio::task::yield_now().await;
                    }
                    src.finish(Ok(()));
                });
                let mut got = Vec::new();
                let mut chunks = std::pin::pin!(data.into_async_chunks(10_000));
                while let Some(c) = chunks.next().await {
                    got.extend_from_slice(c.as_ref());
                }
                writer.await.expect("writer");
                got
            });
            let _ = done_tx.send(got);
        });
        let got = done_rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the reader blocked the runtime's only thread");
        assert_eq!(got, expected);
    }

    #[test]
    fn a_failed_download_ends_the_async_chunks_early() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fill");
        std::fs::write(&path, [1u8; 5_000]).expect("write");
        let src = Arc::new(StreamSource::new(
            std::fs::File::open(&path).expect("open"),
            20_000,
        ));
        src.advance(5_000);
        src.finish(Err("bucket went away".into()));
        let data = BlobData::Stream {
            src,
            start: 0,
            end: 20_000,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let got: Vec<usize> = rt.block_on(
            data.into_async_chunks(4_000)
                .map(|c| c.len())
                .collect::<Vec<_>>(),
        );
        assert_eq!(got, vec![4_000], "only the chunk that arrived whole");
    }

    #[test]
    fn check_range_bounds() {
        let d = Digest::of(Algorithm::Sha256, b"");
        assert_eq!(check_range(&d, 10, None).expect("full"), (0, 10));
        assert_eq!(check_range(&d, 10, Some(0..10)).expect("all"), (0, 10));
        assert_eq!(check_range(&d, 10, Some(10..10)).expect("end"), (10, 10));
        assert_eq!(check_range(&d, 0, Some(0..0)).expect("empty"), (0, 0));
        #[allow(clippy::reversed_empty_ranges)] // start > end is one of the cases
        let bad_ranges = [0..11, 11..11, 5..4, u64::MAX..u64::MAX];
        for bad in bad_ranges {
            match check_range(&d, 10, Some(bad.clone())) {
                Err(StoreError::RangeNotSatisfiable { size: 10, .. }) => {}
                other => panic!("range {bad:?} of 10: expected RangeNotSatisfiable, got {other:?}"),
            }
        }
    }

    #[test]
    fn error_messages_name_subject() {
        let d = Digest::of(Algorithm::Sha256, b"");
        let e = StoreError::NotFound { digest: d.clone() };
        assert!(e.to_string().contains(d.as_str()), "{e}");
        let e = StoreError::io(
            "open blob file",
            Path::new("/x/y"),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(e.to_string().starts_with("open blob file /x/y: "), "{e}");
    }
}
