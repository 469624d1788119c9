//! [`LocalStore`]: blobs as files on a local filesystem.
//!
//! On-disk layout (this module is the only code that builds or parses these
//! paths; see `blob_path`; `staging.rs` builds the names inside `staging/`):
//!
//! ```text
//! <root>/
//! ├── tmp/                          temp files of in-flight puts; emptied on open
//! │   └── put-<32 hex>
//! ├── staging/                      staged blobs (BlobStore::stage), kept across
//! │   ├── <id>                      restarts until committed or aborted
//! │   └── <id>.s3mpu                S3 multipart state of a staged blob (tiered)
//! ├── sha256/                       one directory per algorithm, created lazily
//! │   ├── 00/                       shard: first two hex chars of the digest
//! │   │   └── 00a1…                 the blob; file name = full hex (64 chars)
//! │   └── e3/
//! │       └── e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
//! ├── sha512/
//! │   └── cf/cf83e135…              128 hex chars
//! └── blake3/
//!     └── af/af1349b9…              64 hex chars
//! ```
//!
//! Anything else under `<root>` (the index, …) belongs to other modules and
//! is ignored here.
//!
//! Write protocol (`publish`): bytes go to a file outside the shard
//! directories (`tmp/` for `put_bytes`, `staging/<id>` for a staged blob),
//! which is fsync'd, then its only name is moved into place —
//! `renameat2(RENAME_NOREPLACE)` for `CreateOnly` (fails atomically if the
//! blob exists), `rename(2)` for `Overwrite` — and the shard directory and
//! the source directory are fsync'd. A blob file therefore either does not
//! exist or is complete and durable, and it has no other name: blob files
//! are never modified in place, which is what makes serving them from memory
//! maps sound. A crash can leave temp files (deleted on open) and a staged
//! file that also carries a blob's name (its staging name is removed when
//! it is next opened, see `staging.rs`; the crash analysis is in
//! `docs/design.md`).
//!
//! Every file operation goes through an [`Fs`]: the real filesystem, or the
//! crash-simulating [`super::simfs::SimFs`] in tests.
//!
//! A failed fsync poisons the store: puts and deletes are refused until it is
//! reopened (reads continue), because a retried fsync can report success for
//! data the kernel already dropped.
//!
//! One process per root: `open` empties `tmp/`, which would destroy another
//! live process's in-flight puts; the engine takes the data directory's lock
//! before it opens the store.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::fs::{Fs, RealFs};
use super::staging::{Staged, StagingDir};
use super::{check_range, BlobData, BlobStore, PutMode, PutOutcome, StoreError};
use crate::digest::{Algorithm, Digest};
use crate::durable::random_hex;

/// Name of the temp directory under the root.
const TMP_DIR: &str = "tmp";

/// Name of the staging directory under the root.
const STAGING_DIR: &str = "staging";

/// Shard directories per algorithm: every value of the first two hex chars.
const SHARDS_PER_ALGORITHM: usize = 256;

/// A blob store on a local filesystem. See the module docs for the layout and
/// write protocol.
pub struct LocalStore {
    root: PathBuf,
    tmp: PathBuf,
    /// Staged blobs (`<root>/staging`); kept across restarts.
    staging: StagingDir,
    /// Every file operation goes through here: the real filesystem, or the
    /// crash-simulating one in tests.
    fs: Arc<dyn Fs>,
    /// One flag per `(algorithm, shard)`: set once this process has made the
    /// shard directory and its ancestors durable. Owned by the store, lives as
    /// long as it; atomics because puts run concurrently and the flag only
    /// ever goes false -> true (a redundant second fsync is harmless).
    shard_durable: Box<[AtomicBool]>,
    /// Set (once, with the error message) when an fsync fails; from then on
    /// every put and delete is refused. Never cleared: recovery is reopening.
    sync_failed: OnceLock<String>,
}

/// Where blob `digest` lives below a local store's root:
/// `<algorithm>/<first two hex chars>/<hex>` (also the layout of a backup's
/// `blobs/`, `berthctl backup`).
pub(crate) fn blob_relative_path(digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    Path::new(digest.algorithm().name())
        .join(&hex[..2])
        .join(hex)
}

impl LocalStore {
    /// Opens (creating if needed, durably) the store rooted at `root`, and
    /// deletes everything left in `<root>/tmp` — temp files of puts torn by a
    /// crash, which were never visible as blobs. Logs how many were removed.
    /// Staged blobs (`<root>/staging`) are kept.
    pub fn open(root: &Path) -> Result<LocalStore, StoreError> {
        LocalStore::open_with_fs(root, Arc::new(RealFs))
    }

    /// [`LocalStore::open`] on the filesystem `fs` (the crash-simulating
    /// one in tests; memory maps need [`RealFs`]).
    pub fn open_with_fs(root: &Path, fs: Arc<dyn Fs>) -> Result<LocalStore, StoreError> {
        let tmp = root.join(TMP_DIR);
        fs.create_dir_all(&tmp)
            .map_err(|e| StoreError::io("create store directory", &tmp, e))?;
        let removed = clear_dir(fs.as_ref(), &tmp)?;
        if removed > 0 {
            tracing::info!(
                dir = %tmp.display(),
                removed,
                "blob store: removed leftover temp files of interrupted writes"
            );
        }
        let staging = StagingDir::open(root.join(STAGING_DIR), fs.clone())?;
        let shard_durable = (0..Algorithm::ALL.len() * SHARDS_PER_ALGORITHM)
            .map(|_| AtomicBool::new(false))
            .collect();
        Ok(LocalStore {
            root: root.to_path_buf(),
            tmp,
            staging,
            fs,
            shard_durable,
            sync_failed: OnceLock::new(),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The temp directory, for files [`LocalStore::put_file`] takes (the
    /// tiered store's downloads). Emptied on open.
    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// `<root>/<algorithm>/<first two hex chars>/<hex>`
    /// ([`blob_relative_path`], the only place blob paths are built).
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(blob_relative_path(digest))
    }

    /// The path of blob `digest`'s file, whether or not it exists (for the
    /// tiered store, which hard-links it to stage an upload).
    pub(crate) fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.blob_path(digest)
    }

    /// The path of sidecar `suffix` of staged `id` (the tiered store keeps
    /// the S3 multipart state of a staged blob there); removed with the
    /// staged id by [`BlobStore::abort`].
    pub(crate) fn staging_sidecar(&self, id: &str, suffix: &str) -> Result<PathBuf, StoreError> {
        self.staging.sidecar(id, suffix)
    }

    /// Makes sure the shard directory of `digest` exists and is durable, and
    /// returns it.
    ///
    /// IMPORTANT: a blob must not be reported stored while the directory
    /// entries leading to it may still be lost in a crash. Creating the
    /// directory durably is not enough: one that a concurrent put just
    /// created (and has not fsync'd yet) looks present here. So the first put
    /// into each shard in this process fsyncs the chain itself, once (the
    /// root's own entry was made durable by `open`).
    fn durable_shard_dir(&self, digest: &Digest) -> Result<PathBuf, StoreError> {
        let hex = digest.hex();
        let alg_dir = self.root.join(digest.algorithm().name());
        let shard_dir = alg_dir.join(&hex[..2]);
        let flag = &self.shard_durable[shard_index(digest)];
        if !flag.load(Ordering::Acquire) {
            self.fs
                .create_dir_all(&shard_dir)
                .map_err(|e| StoreError::io("create shard directory", &shard_dir, e))?;
            self.sync_dir(&alg_dir)?;
            self.sync_dir(&self.root)?;
            flag.store(true, Ordering::Release);
        }
        Ok(shard_dir)
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), StoreError> {
        self.fs
            .fsync_dir(dir)
            .map_err(|e| StoreError::io("sync directory", dir, e))
    }

    /// Publishes the fsync'd file `src` (in `tmp/` or `staging/`) as blob
    /// `digest`: the write path shared by every put. On `Ok`, `src` is gone,
    /// durably.
    ///
    /// 1. The shard directory is durable.
    /// 2. `CreateOnly`: `renameat2(RENAME_NOREPLACE)` moves `src`'s only
    ///    name to the blob path, atomically, unless the blob exists
    ///    (`AlreadyPresent`: `src` is unlinked). IMPORTANT: not `link(2)`:
    ///    a link leaves `src` a second name of the published blob until it
    ///    is unlinked, and whoever owns `src` could truncate the blob
    ///    through it. Filesystems without `RENAME_NOREPLACE` fall back to
    ///    link + unlink (still safe: see `StagingDir::open_existing`).
    ///    `Overwrite`: `rename(2)`, atomically replacing the blob.
    /// 3. fsync the shard directory (the blob's name is durable), even when
    ///    the blob was already present: a concurrent put may have moved it
    ///    there and not fsync'd yet.
    /// 4. fsync `src`'s directory, so its old name does not come back.
    fn publish(
        &self,
        digest: &Digest,
        src: &Path,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let shard_dir = self.durable_shard_dir(digest)?;
        let dst = self.blob_path(digest);
        let moved = |e: io::Error| {
            let e = io::Error::new(e.kind(), format!("move to {}: {e}", dst.display()));
            StoreError::io("store file", src, e)
        };
        let outcome = match mode {
            PutMode::Overwrite => {
                self.fs.rename(src, &dst).map_err(moved)?;
                PutOutcome::Stored
            }
            PutMode::CreateOnly => match self.fs.rename_noreplace(src, &dst) {
                Ok(()) => PutOutcome::Stored,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.unlink(src)?;
                    PutOutcome::AlreadyPresent
                }
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    let outcome = match self.fs.link(src, &dst) {
                        Ok(()) => PutOutcome::Stored,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            PutOutcome::AlreadyPresent
                        }
                        Err(e) => return Err(moved(e)),
                    };
                    self.unlink(src)?;
                    outcome
                }
                Err(e) => return Err(moved(e)),
            },
        };
        self.sync_dir(&shard_dir)?;
        if let Some(src_dir) = src.parent() {
            self.sync_dir(src_dir)?;
        }
        Ok(outcome)
    }

    fn unlink(&self, path: &Path) -> Result<(), StoreError> {
        self.fs
            .remove_file(path)
            .map_err(|e| StoreError::io("remove stored source file", path, e))
    }

    /// Stores the fsync'd file `src` (in [`LocalStore::tmp_dir`]) as blob
    /// `digest`, taking it: on `Ok` it is gone. For the tiered store's
    /// downloads; uploads go through [`BlobStore::stage`].
    pub(crate) fn put_file(
        &self,
        digest: &Digest,
        src: &Path,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        self.write_op(|| self.publish(digest, src, mode))
    }

    /// `put_bytes`: write a temp file, then publish it.
    fn store_bytes(
        &self,
        digest: &Digest,
        data: &[u8],
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let dst = self.blob_path(digest);
        if mode == PutMode::CreateOnly && self.exists(&dst)? {
            // Fast path: skip writing data we would throw away. Same
            // durability rule as in `publish`: the existing blob's entry may
            // not be fsync'd yet.
            let shard_dir = self.durable_shard_dir(digest)?;
            self.sync_dir(&shard_dir)?;
            return Ok(PutOutcome::AlreadyPresent);
        }
        let tmp = self.write_temp(data)?;
        let result = self.publish(digest, &tmp, mode);
        if result.is_err() {
            let _ = self.fs.remove_file(&tmp);
        }
        result
    }

    fn exists(&self, path: &Path) -> Result<bool, StoreError> {
        self.fs
            .metadata(path)
            .map(|m| m.is_some())
            .map_err(|e| StoreError::io("stat", path, e))
    }

    /// `delete`: unlink, then fsync the shard directory.
    fn remove(&self, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.blob_path(digest);
        match self.fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("delete blob file", &path, e)),
        }
        // The path has a parent: it is <root>/<alg>/<shard>/<hex>.
        if let Some(shard_dir) = path.parent() {
            self.sync_dir(shard_dir)?;
        }
        Ok(true)
    }

    /// Writes `data` to a new fsync'd temp file in `tmp/` and returns its path.
    fn write_temp(&self, data: &[u8]) -> Result<PathBuf, StoreError> {
        let name = random_hex(16).map_err(|e| StoreError::io("name temp file", &self.tmp, e))?;
        let path = self.tmp.join(format!("put-{name}"));
        let file = self
            .fs
            .create_new(&path)
            .map_err(|e| StoreError::io("create temp file", &path, e))?;
        let result = file.write_at(data, 0).and_then(|()| file.sync());
        match result {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = self.fs.remove_file(&path);
                Err(StoreError::io("write temp file", &path, e))
            }
        }
    }

    /// The file of `staged`, if this store staged it.
    pub(crate) fn staged_path(&self, staged: &Staged) -> Result<PathBuf, StoreError> {
        match staged.path() {
            Some(p) if p.parent() == Some(self.staging.dir()) => Ok(p.to_path_buf()),
            _ => Err(StoreError::io(
                "commit staged blob",
                self.staging.dir(),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} was not staged by this store", staged.id()),
                ),
            )),
        }
    }

    /// `commit`: sync the staged file, then publish it.
    fn commit_staged(
        &self,
        staged: Staged,
        digest: &Digest,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let src = self.staged_path(&staged)?;
        // IMPORTANT: nothing is published before its bytes are durable.
        staged.sync()?;
        drop(staged);
        self.publish(digest, &src, mode)
    }

    /// Runs the write `op` unless an earlier fsync failed; poisons the store
    /// if `op` fails in an fsync.
    fn write_op<T>(&self, op: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        if let Some(first) = self.sync_failed.get() {
            return Err(StoreError::Io {
                op: "refusing write after an earlier failed fsync (reopen the store)",
                path: self.root.clone(),
                source: io::Error::other(first.clone()),
            });
        }
        let result = op();
        if let Err(e) = &result {
            if e.is_sync_failure() && self.sync_failed.set(e.to_string()).is_ok() {
                tracing::error!(root = %self.root.display(), error = %e,
                    "blob store: fsync failed; refusing further writes until reopened");
            }
        }
        result
    }

    /// The names in `dir`, or none if it does not exist.
    fn names(&self, dir: &Path) -> Result<Vec<String>, StoreError> {
        read_dir_if_exists(self.fs.as_ref(), dir)
    }
}

impl BlobStore for LocalStore {
    fn name(&self) -> &'static str {
        "local"
    }

    fn stage(&self, id: &str) -> Result<Staged, StoreError> {
        self.write_op(|| self.staging.create(id))
    }

    fn open_staged(&self, id: &str) -> Result<Option<Staged>, StoreError> {
        self.staging.open_existing(id)
    }

    fn staged_ids(&self) -> Result<Vec<String>, StoreError> {
        self.staging.ids()
    }

    fn commit(
        &self,
        staged: Staged,
        digest: &Digest,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        self.write_op(|| self.commit_staged(staged, digest, mode))
    }

    fn abort(&self, id: &str) -> Result<(), StoreError> {
        self.write_op(|| self.staging.remove(id))
    }

    fn put_bytes(
        &self,
        digest: &Digest,
        data: &[u8],
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        self.write_op(|| self.store_bytes(digest, data, mode))
    }

    fn get(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobData, StoreError> {
        let path = self.blob_path(digest);
        let file = match self.fs.open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    digest: digest.clone(),
                })
            }
            Err(e) => return Err(StoreError::io("open blob file", &path, e)),
        };
        let size = file
            .size()
            .map_err(|e| StoreError::io("stat blob file", &path, e))?;
        let std_file = match file.as_std() {
            Some(f) if size > 0 => f,
            _ => {
                // Zero-length files cannot be mapped; simulated files are read.
                let mut buf = vec![0u8; size as usize];
                file.read_at(&mut buf, 0)
                    .map_err(|e| StoreError::io("read blob file", &path, e))?;
                let (start, end) = check_range(digest, buf.len(), range)?;
                return Ok(BlobData::Shared {
                    buf: Arc::from(buf),
                    start,
                    end,
                });
            }
        };
        // SAFETY: the mapping is read-only and blob files are never modified
        // or truncated in place (module docs: writes rename a new file into
        // place, deletes unlink, and no published blob has a second name a
        // writer could reach — see `staging.rs`), so the mapped bytes cannot
        // change under us.
        let map = unsafe { memmap2::Mmap::map(std_file) }
            .map_err(|e| StoreError::io("map blob file", &path, e))?;
        let file = std_file
            .try_clone()
            .map_err(|e| StoreError::io("open blob file", &path, e))?;
        let (start, end) = check_range(digest, map.len(), range)?;
        Ok(BlobData::Mapped {
            map: Arc::new(map),
            file: Arc::new(file),
            start,
            end,
        })
    }

    fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(digest);
        self.fs
            .metadata(&path)
            .map(|m| m.map(|m| m.len))
            .map_err(|e| StoreError::io("stat blob file", &path, e))
    }

    fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.write_op(|| self.remove(digest))
    }

    fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let mut out = Vec::new();
        let is = |p: &Path, dir: bool| -> Result<bool, StoreError> {
            let m = self
                .fs
                .metadata(p)
                .map_err(|e| StoreError::io("stat", p, e))?;
            Ok(m.is_some_and(|m| if dir { m.is_dir } else { m.is_file }))
        };
        for alg in Algorithm::ALL {
            let alg_dir = self.root.join(alg.name());
            for shard_name in self.names(&alg_dir)? {
                let shard_path = alg_dir.join(&shard_name);
                if !is_shard_name(&shard_name) || !is(&shard_path, true)? {
                    tracing::warn!(path = %shard_path.display(), "blob store: skipping unexpected entry");
                    continue;
                }
                for name in self.names(&shard_path)? {
                    let path = shard_path.join(&name);
                    let digest = Digest::from_parts(alg, &name)
                        .ok()
                        .filter(|d| d.hex().starts_with(&shard_name));
                    match digest {
                        Some(d) if is(&path, false)? => out.push(d),
                        _ => {
                            tracing::warn!(path = %path.display(), "blob store: skipping unexpected entry")
                        }
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("root", &self.root)
            .finish()
    }
}

/// Index of `digest`'s shard in `LocalStore::shard_durable`.
fn shard_index(digest: &Digest) -> usize {
    let alg = match digest.algorithm() {
        Algorithm::Sha256 => 0,
        Algorithm::Sha512 => 1,
        Algorithm::Blake3 => 2,
    };
    // Digest hex is validated lowercase hex, so this cannot fail; 0 would only
    // cost a redundant fsync.
    let shard = u8::from_str_radix(&digest.hex()[..2], 16).unwrap_or(0);
    alg * SHARDS_PER_ALGORITHM + usize::from(shard)
}

/// Whether `name` is a shard directory name: two lowercase hex chars.
fn is_shard_name(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Names in `dir` (non-UTF-8 names skipped), or none if it does not exist.
fn read_dir_if_exists(fs: &dyn Fs, dir: &Path) -> Result<Vec<String>, StoreError> {
    match fs.read_dir(dir) {
        Ok(names) => Ok(names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::io("read directory", dir, e)),
    }
}

/// Deletes everything in `dir`; returns how many entries were removed.
fn clear_dir(fs: &dyn Fs, dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    for name in read_dir_if_exists(fs, dir)? {
        let path = dir.join(name);
        let is_dir = fs
            .metadata(&path)
            .map_err(|e| StoreError::io("stat leftover temp file", &path, e))?
            .is_some_and(|m| m.is_dir);
        let result = if is_dir {
            fs.remove_dir_all(&path)
        } else {
            fs.remove_file(&path)
        };
        result.map_err(|e| StoreError::io("remove leftover temp file", &path, e))?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testsuite;
    use std::fs;

    #[test]
    fn shared_suite() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(&root.path().join("blobs")).expect("open store");
        testsuite::run_all(&store);
    }

    #[test]
    fn layout_is_alg_shard_hex() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(root.path()).expect("open store");
        for alg in Algorithm::ALL {
            let d = Digest::of(alg, b"abc");
            store
                .put_bytes(&d, b"abc", PutMode::CreateOnly)
                .expect("put");
            let want = root
                .path()
                .join(alg.name())
                .join(&d.hex()[..2])
                .join(d.hex());
            assert_eq!(fs::read(&want).expect("blob file at layout path"), b"abc");
        }
        // Pinned: changing the layout breaks existing stores.
        let pinned = "sha256/ba/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(root.path().join(pinned).is_file(), "no blob at {pinned}");
    }

    #[test]
    fn reopen_cleans_tmp_and_keeps_blobs() {
        let root = tempfile::tempdir().expect("tempdir");
        let d = Digest::of(Algorithm::Sha256, b"survivor");
        {
            let store = LocalStore::open(root.path()).expect("open store");
            store
                .put_bytes(&d, b"survivor", PutMode::CreateOnly)
                .expect("put");
        }
        // Simulate torn writes: a partial temp file and a staged directory.
        fs::write(root.path().join("tmp/put-0123abcd"), b"partial").expect("write leftover");
        fs::create_dir_all(root.path().join("tmp/staged/sub")).expect("mkdir leftover");

        let store = LocalStore::open(root.path()).expect("reopen store");
        let left: Vec<_> = fs::read_dir(root.path().join("tmp"))
            .expect("read tmp")
            .collect();
        assert!(left.is_empty(), "tmp not emptied on open: {left:?}");
        assert_eq!(
            store.get(&d, None).expect("get after reopen").as_ref(),
            b"survivor"
        );
        assert_eq!(store.list().expect("list"), vec![d]);
    }

    #[test]
    fn list_skips_foreign_entries() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(root.path()).expect("open store");
        let d = Digest::of(Algorithm::Blake3, b"x");
        store.put_bytes(&d, b"x", PutMode::CreateOnly).expect("put");
        let shard = root.path().join("blake3").join(&d.hex()[..2]);
        // Wrong shard for its name, not hex, a stray dir, and foreign top-level dirs.
        let other = Digest::of(Algorithm::Blake3, b"y");
        assert_ne!(other.hex()[..2], d.hex()[..2]);
        fs::write(shard.join(other.hex()), b"y").expect("write misplaced");
        fs::write(shard.join("notes.txt"), b"").expect("write stray");
        fs::create_dir(root.path().join("blake3/zz")).expect("mkdir stray");
        fs::create_dir(root.path().join("uploads")).expect("mkdir foreign");
        fs::write(root.path().join("uploads/session"), b"").expect("write foreign");
        assert_eq!(store.list().expect("list"), vec![d]);
    }

    #[test]
    fn put_file_error_names_source() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(root.path()).expect("open store");
        let d = Digest::of(Algorithm::Sha256, b"gone");
        let src = root.path().join("tmp/does-not-exist");
        for mode in [PutMode::CreateOnly, PutMode::Overwrite] {
            let err = store.put_file(&d, &src, mode).expect_err("missing source");
            assert!(err.to_string().contains("does-not-exist"), "{err}");
        }
        assert_eq!(store.stat(&d).expect("stat"), None);
    }

    /// What a crash during a commit can leave on disk: the staged file
    /// still named in `staging/` and already the published blob. Reopening
    /// it must not hand the blob's bytes to a writer: the staging name goes,
    /// the blob stays whole.
    #[test]
    fn a_staged_file_that_is_also_a_blob_is_never_handed_out() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = b"published through a crash".to_vec();
        let d = Digest::of(Algorithm::Sha256, &data);
        {
            let store = LocalStore::open(root.path()).expect("open store");
            let s = store.stage("crashed").expect("stage");
            s.write_at(&data, 0).expect("write");
            s.sync().expect("sync");
        }
        let staged = root.path().join("staging/crashed");
        let blob = root.path().join("sha256").join(&d.hex()[..2]).join(d.hex());
        fs::create_dir_all(blob.parent().expect("shard")).expect("mkdir shard");
        fs::hard_link(&staged, &blob).expect("link, as the crash left it");

        let store = LocalStore::open(root.path()).expect("reopen store");
        assert_eq!(store.staged_ids().expect("ids"), vec!["crashed".to_owned()]);
        assert!(
            store.open_staged("crashed").expect("open staged").is_none(),
            "an alias of a published blob was handed out as a staged blob"
        );
        assert!(!staged.exists(), "the staging name was kept");
        assert!(store.staged_ids().expect("ids").is_empty());
        assert_eq!(store.get(&d, None).expect("get").as_ref(), &data[..]);
    }

    #[test]
    fn commit_leaves_the_blob_one_name() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(root.path()).expect("open store");
        let data = b"one name only".to_vec();
        let d = Digest::of(Algorithm::Sha256, &data);
        let s = store.stage("single").expect("stage");
        s.write_at(&data, 0).expect("write");
        assert_eq!(
            store.commit(s, &d, PutMode::CreateOnly).expect("commit"),
            PutOutcome::Stored
        );
        let blob = root.path().join("sha256").join(&d.hex()[..2]).join(d.hex());
        assert_eq!(fs::metadata(&blob).expect("blob").nlink(), 1);
        assert!(!root.path().join("staging/single").exists());
    }

    #[test]
    fn failed_fsync_refuses_writes_until_reopen() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(root.path()).expect("open store");
        let kept = Digest::of(Algorithm::Sha256, b"kept");
        store
            .put_bytes(&kept, b"kept", PutMode::CreateOnly)
            .expect("put");

        // An ordinary error does not poison.
        let plain = store.write_op(|| -> Result<(), StoreError> {
            Err(StoreError::io(
                "x",
                root.path(),
                io::Error::other("not a sync failure"),
            ))
        });
        assert!(!plain.expect_err("error passes through").is_sync_failure());
        store
            .put_bytes(&kept, b"kept", PutMode::Overwrite)
            .expect("still writable");

        let eio =
            crate::durable::sync_failed(root.path(), "fsync directory", io::Error::other("EIO"));
        let failed = store.write_op(|| -> Result<(), StoreError> {
            Err(StoreError::io("sync directory", root.path(), eio))
        });
        assert!(failed.expect_err("error passes through").is_sync_failure());

        let other = Digest::of(Algorithm::Sha256, b"other");
        let err = store
            .put_bytes(&other, b"other", PutMode::CreateOnly)
            .expect_err("refused");
        assert!(err.to_string().contains("earlier failed fsync"), "{err}");
        assert!(
            err.to_string().contains("EIO"),
            "refusal names the first failure: {err}"
        );
        store.delete(&kept).expect_err("delete refused");
        assert_eq!(
            store.get(&kept, None).expect("reads continue").as_ref(),
            b"kept"
        );

        drop(store);
        let store = LocalStore::open(root.path()).expect("reopen store");
        store
            .put_bytes(&other, b"other", PutMode::CreateOnly)
            .expect("writable after reopen");
    }
}
