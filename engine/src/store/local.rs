//! [`LocalStore`]: blobs as files on a local filesystem.
//!
//! On-disk layout (this module is the only code that builds or parses these
//! paths; see `blob_path`):
//!
//! ```text
//! <root>/
//! ├── tmp/                          temp files of in-flight puts, and files
//! │   └── put-<32 hex>              callers stage for put_file; emptied on open
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
//! Anything else under `<root>` (the index, upload sessions, …) belongs to
//! other modules and is ignored here.
//!
//! Write protocol: bytes go to a file outside the shard directories (in
//! `tmp/`, or the caller's own file for `put_file`), which is fsync'd, then
//! moved into place — `link(2)` for `CreateOnly` (fails atomically if the blob
//! exists, unlike `rename`), `rename(2)` for `Overwrite` — and the shard
//! directory is fsync'd. A blob file therefore either does not exist or is
//! complete and durable; blob files are never modified in place, which is what
//! makes serving them from memory maps sound. A crash can leave only temp
//! files behind, and `open` deletes them.
//!
//! A failed fsync poisons the store: puts and deletes are refused until it is
//! reopened (reads continue), because a retried fsync can report success for
//! data the kernel already dropped.
//!
//! One process per root: `open` empties `tmp/`, which would destroy another
//! live process's in-flight puts (the index's lock serializes berth processes).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::{check_range, BlobData, BlobStore, PutMode, PutOutcome, StoreError};
use crate::digest::{Algorithm, Digest};
use crate::durable::{create_dir_all_durable, durable_rename, fsync_dir, fsync_file, random_hex};

/// Name of the temp directory under the root.
const TMP_DIR: &str = "tmp";

/// Shard directories per algorithm: every value of the first two hex chars.
const SHARDS_PER_ALGORITHM: usize = 256;

/// A blob store on a local filesystem. See the module docs for the layout and
/// write protocol.
pub struct LocalStore {
    root: PathBuf,
    tmp: PathBuf,
    /// One flag per `(algorithm, shard)`: set once this process has made the
    /// shard directory and its ancestors durable. Owned by the store, lives as
    /// long as it; atomics because puts run concurrently and the flag only
    /// ever goes false -> true (a redundant second fsync is harmless).
    shard_durable: Box<[AtomicBool]>,
    /// Set (once, with the error message) when an fsync fails; from then on
    /// every put and delete is refused. Never cleared: recovery is reopening.
    sync_failed: OnceLock<String>,
}

impl LocalStore {
    /// Opens (creating if needed, durably) the store rooted at `root`, and
    /// deletes everything left in `<root>/tmp` — temp files of puts torn by a
    /// crash, which were never visible as blobs. Logs how many were removed.
    pub fn open(root: &Path) -> Result<LocalStore, StoreError> {
        let tmp = root.join(TMP_DIR);
        create_dir_all_durable(&tmp)
            .map_err(|e| StoreError::io("create store directory", &tmp, e))?;
        let removed = clear_dir(&tmp)?;
        if removed > 0 {
            tracing::info!(
                dir = %tmp.display(),
                removed,
                "blob store: removed leftover temp files of interrupted writes"
            );
        }
        let shard_durable = (0..Algorithm::ALL.len() * SHARDS_PER_ALGORITHM)
            .map(|_| AtomicBool::new(false))
            .collect();
        Ok(LocalStore {
            root: root.to_path_buf(),
            tmp,
            shard_durable,
            sync_failed: OnceLock::new(),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<algorithm>/<first two hex chars>/<hex>` — the only place blob
    /// paths are built.
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    /// The path of blob `digest`'s file, whether or not it exists (for the
    /// tiered store, which hard-links it to stage an upload).
    pub(crate) fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.blob_path(digest)
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
            fs::create_dir_all(&shard_dir)
                .map_err(|e| StoreError::io("create shard directory", &shard_dir, e))?;
            fsync_dir(&alg_dir).map_err(|e| StoreError::io("sync directory", &alg_dir, e))?;
            fsync_dir(&self.root).map_err(|e| StoreError::io("sync directory", &self.root, e))?;
            flag.store(true, Ordering::Release);
        }
        Ok(shard_dir)
    }

    /// Moves the fsync'd file `src` into place as blob `digest` (the write
    /// path shared by `put_file` and `put_bytes`). On `Ok`, `src` is gone.
    fn place(&self, digest: &Digest, src: &Path, mode: PutMode) -> Result<PutOutcome, StoreError> {
        let shard_dir = self.durable_shard_dir(digest)?;
        let dst = self.blob_path(digest);
        match mode {
            PutMode::Overwrite => {
                // Atomic replace; fsyncs the shard directory (and src's).
                durable_rename(src, &dst).map_err(|e| StoreError::io("store file", src, e))?;
                Ok(PutOutcome::Stored)
            }
            PutMode::CreateOnly => {
                // IMPORTANT: link(2), not rename(2): it fails with EEXIST if
                // the blob exists, so exactly one concurrent put wins and an
                // existing blob is never touched.
                let outcome = match fs::hard_link(src, &dst) {
                    Ok(()) => PutOutcome::Stored,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        PutOutcome::AlreadyPresent
                    }
                    Err(e) => {
                        let e = io::Error::new(e.kind(), format!("link to {}: {e}", dst.display()));
                        return Err(StoreError::io("store file", src, e));
                    }
                };
                // IMPORTANT: fsync even when the blob was already present: a
                // concurrent put may have linked it and not fsync'd yet, and
                // we must not report a blob that a crash could still lose.
                fsync_dir(&shard_dir)
                    .map_err(|e| StoreError::io("sync directory", &shard_dir, e))?;
                // Not fsync'd: a src that reappears after a crash is an
                // orphan for its creator's recovery to clean up (tmp/ is
                // emptied on open).
                fs::remove_file(src)
                    .map_err(|e| StoreError::io("remove stored source file", src, e))?;
                Ok(outcome)
            }
        }
    }

    /// `put_bytes`: write a temp file, then `place` it.
    fn store_bytes(
        &self,
        digest: &Digest,
        data: &[u8],
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let dst = self.blob_path(digest);
        if mode == PutMode::CreateOnly && dst.exists() {
            // Fast path: skip writing data we would throw away. Same
            // durability rule as in `place`: the existing blob's entry may not
            // be fsync'd yet.
            let shard_dir = self.durable_shard_dir(digest)?;
            fsync_dir(&shard_dir).map_err(|e| StoreError::io("sync directory", &shard_dir, e))?;
            return Ok(PutOutcome::AlreadyPresent);
        }
        let tmp = self.write_temp(data)?;
        let result = self.place(digest, &tmp, mode);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// `delete`: unlink, then fsync the shard directory.
    fn remove(&self, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("delete blob file", &path, e)),
        }
        // The path has a parent: it is <root>/<alg>/<shard>/<hex>.
        if let Some(shard_dir) = path.parent() {
            fsync_dir(shard_dir).map_err(|e| StoreError::io("sync directory", shard_dir, e))?;
        }
        Ok(true)
    }

    /// Writes `data` to a new fsync'd temp file in `tmp/` and returns its path.
    fn write_temp(&self, data: &[u8]) -> Result<PathBuf, StoreError> {
        let name = random_hex(16).map_err(|e| StoreError::io("name temp file", &self.tmp, e))?;
        let path = self.tmp.join(format!("put-{name}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("create temp file", &path, e))?;
        let result = file.write_all(data).and_then(|()| fsync_file(&file, &path));
        match result {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(StoreError::io("write temp file", &path, e))
            }
        }
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
}

impl BlobStore for LocalStore {
    fn name(&self) -> &'static str {
        "local"
    }

    fn put_file(
        &self,
        digest: &Digest,
        src: &Path,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        self.write_op(|| self.place(digest, src, mode))
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
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    digest: digest.clone(),
                })
            }
            Err(e) => return Err(StoreError::io("open blob file", &path, e)),
        };
        let size = file
            .metadata()
            .map_err(|e| StoreError::io("stat blob file", &path, e))?
            .len();
        if size == 0 {
            // Zero-length files cannot be mapped.
            let (start, end) = check_range(digest, 0, range)?;
            return Ok(BlobData::Shared {
                buf: Arc::from(Vec::new()),
                start,
                end,
            });
        }
        // SAFETY: the mapping is read-only and blob files are never modified
        // or truncated in place (module docs: writes rename or link a new
        // file, deletes unlink), so the mapped bytes cannot change under us.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| StoreError::io("map blob file", &path, e))?;
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
        match fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("stat blob file", &path, e)),
        }
    }

    fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.write_op(|| self.remove(digest))
    }

    fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let mut out = Vec::new();
        for alg in Algorithm::ALL {
            let alg_dir = self.root.join(alg.name());
            for shard in read_dir_if_exists(&alg_dir)? {
                let shard_name = shard.file_name();
                let shard_path = shard.path();
                let prefix = match shard_name.to_str() {
                    Some(p) if is_shard_name(p) && shard_path.is_dir() => p,
                    _ => {
                        tracing::warn!(path = %shard_path.display(), "blob store: skipping unexpected entry");
                        continue;
                    }
                };
                for blob in read_dir_if_exists(&shard_path)? {
                    let path = blob.path();
                    let digest = blob
                        .file_name()
                        .to_str()
                        .and_then(|hex| Digest::from_parts(alg, hex).ok())
                        .filter(|d| d.hex().starts_with(prefix));
                    match digest {
                        Some(d) if path.is_file() => out.push(d),
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

    fn tmp_dir(&self) -> Option<&Path> {
        Some(&self.tmp)
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

/// Entries of `dir`, or none if it does not exist.
fn read_dir_if_exists(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("read directory", dir, e)),
    };
    entries
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| StoreError::io("read directory", dir, e))
}

/// Deletes everything in `dir`; returns how many entries were removed.
fn clear_dir(dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    for entry in read_dir_if_exists(dir)? {
        let path = entry.path();
        let result = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
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

    #[test]
    fn shared_suite() {
        let root = tempfile::tempdir().expect("tempdir");
        let scratch = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(&root.path().join("blobs")).expect("open store");
        testsuite::run_all(&store, scratch.path());
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
