//! Store-owned staging: the bytes of a blob being written, before it is
//! published under its digest.
//!
//! A caller (the engine's upload sessions) asks the store for a staged
//! writer under an id of its choosing ([`BlobStore::stage`]), writes and
//! syncs it across as many requests and restarts as it likes
//! ([`BlobStore::open_staged`]), then hands it back with the digest
//! ([`BlobStore::commit`]) or gives it up ([`BlobStore::abort`]). After a
//! crash the caller asks the store which ids are staged
//! ([`BlobStore::staged_ids`]) instead of guessing from file names.
//!
//! IMPORTANT, the invariant this module exists for: a staged file is never
//! a second name of a published blob. Publishing moves the staged file's
//! only name into the store (`renameat2(RENAME_NOREPLACE)`), so in normal
//! operation the staging name is gone the moment the blob name exists. A
//! crash can still leave both names (directory entries reach the disk
//! independently, see `docs/design.md`); [`StagingDir::open_existing`]
//! then sees a link count above one, removes the staging name without
//! touching the bytes, and reports the staged id gone. So neither
//! recovery's truncation nor a writer's `write_at` can reach the bytes of a
//! published blob.
//!
//! [`BlobStore::stage`]: super::BlobStore::stage
//! [`BlobStore::open_staged`]: super::BlobStore::open_staged
//! [`BlobStore::commit`]: super::BlobStore::commit
//! [`BlobStore::abort`]: super::BlobStore::abort
//! [`BlobStore::staged_ids`]: super::BlobStore::staged_ids

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::fs::{Fs, FsFile};
use super::StoreError;

/// Whether `id` may name a staged blob: 1 to 64 characters of `[0-9a-z_-]`
/// (so it is a safe file name and never contains the sidecar's `.`).
pub fn valid_staged_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-' || b == b'_')
}

/// A blob being written into a store's staging area. Obtained from
/// `stage`/`open_staged` of a [`super::BlobStore`], given back to the same
/// store's `commit`. Writes are not durable until [`Staged::sync`].
pub struct Staged {
    id: String,
    body: Body,
}

/// Where a staged blob's bytes are.
pub(crate) enum Body {
    /// A file in a [`StagingDir`] (local, s3, tiered).
    File {
        file: Box<dyn FsFile>,
        path: PathBuf,
    },
    /// A buffer of the [`super::MemoryStore`], shared with its staging map.
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl Staged {
    pub(crate) fn new(id: &str, body: Body) -> Staged {
        Staged {
            id: id.to_owned(),
            body,
        }
    }

    /// The id it is staged under.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn body(&self) -> &Body {
        &self.body
    }

    /// The file's path, for a file-backed staged blob.
    pub(crate) fn path(&self) -> Option<&Path> {
        match &self.body {
            Body::File { path, .. } => Some(path),
            Body::Memory(_) => None,
        }
    }

    fn err(&self, op: &'static str, e: io::Error) -> StoreError {
        match &self.body {
            Body::File { path, .. } => StoreError::io(op, path, e),
            Body::Memory(_) => StoreError::io(op, Path::new(&format!("memory:{}", self.id)), e),
        }
    }

    /// Writes all of `data` at `offset` (not durable until [`Staged::sync`]).
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<(), StoreError> {
        match &self.body {
            Body::File { file, .. } => file
                .write_at(data, offset)
                .map_err(|e| self.err("write staged blob", e)),
            Body::Memory(buf) => {
                let mut b = buf.lock().unwrap_or_else(PoisonError::into_inner);
                let start = usize::try_from(offset).map_err(|_| {
                    self.err("write staged blob", io::ErrorKind::FileTooLarge.into())
                })?;
                let end = start.checked_add(data.len()).ok_or_else(|| {
                    self.err("write staged blob", io::ErrorKind::FileTooLarge.into())
                })?;
                if b.len() < end {
                    b.resize(end, 0);
                }
                b[start..end].copy_from_slice(data);
                Ok(())
            }
        }
    }

    /// Fills `buf` with the bytes at `offset`; an error if they are not there.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StoreError> {
        match &self.body {
            Body::File { file, .. } => file
                .read_at(buf, offset)
                .map_err(|e| self.err("read staged blob", e)),
            Body::Memory(m) => {
                let b = m.lock().unwrap_or_else(PoisonError::into_inner);
                let range = usize::try_from(offset)
                    .ok()
                    .and_then(|s| Some(s..s.checked_add(buf.len())?))
                    .filter(|r| r.end <= b.len());
                match range {
                    Some(r) => {
                        buf.copy_from_slice(&b[r]);
                        Ok(())
                    }
                    None => Err(self.err("read staged blob", io::ErrorKind::UnexpectedEof.into())),
                }
            }
        }
    }

    /// Number of bytes staged (durable or not).
    pub fn len(&self) -> Result<u64, StoreError> {
        match &self.body {
            Body::File { file, .. } => file.size().map_err(|e| self.err("stat staged blob", e)),
            Body::Memory(m) => Ok(m.lock().unwrap_or_else(PoisonError::into_inner).len() as u64),
        }
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Cuts the staged bytes back to `len` (dropping an unacknowledged
    /// tail). Never grows: a `len` past the end is an error.
    pub fn truncate(&self, len: u64) -> Result<(), StoreError> {
        let have = self.len()?;
        if len > have {
            return Err(self.err(
                "truncate staged blob",
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("holds {have} bytes, cannot cut back to {len}"),
                ),
            ));
        }
        if len == have {
            return Ok(());
        }
        match &self.body {
            Body::File { file, .. } => file
                .set_len(len)
                .map_err(|e| self.err("truncate staged blob", e)),
            Body::Memory(m) => {
                m.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .truncate(len as usize);
                Ok(())
            }
        }
    }

    /// Makes the staged bytes and length durable. A failure is a sync
    /// failure ([`StoreError::is_sync_failure`]).
    pub fn sync(&self) -> Result<(), StoreError> {
        match &self.body {
            Body::File { file, .. } => file.sync().map_err(|e| self.err("sync staged blob", e)),
            Body::Memory(_) => Ok(()),
        }
    }
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("id", &self.id)
            .field("path", &self.path())
            .finish()
    }
}

/// A directory of staged files: `<dir>/<id>`, with sidecars
/// `<dir>/<id>.<suffix>` that a store layered on top keeps about a staged
/// id (the S3 multipart state). The one place these paths are built.
pub(crate) struct StagingDir {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
}

impl StagingDir {
    /// Opens (creating durably) the staging directory `dir`. Nothing in it
    /// is removed: staged ids outlive restarts until committed or aborted.
    pub(crate) fn open(dir: PathBuf, fs: Arc<dyn Fs>) -> Result<StagingDir, StoreError> {
        fs.create_dir_all(&dir)
            .map_err(|e| StoreError::io("create staging directory", &dir, e))?;
        Ok(StagingDir { dir, fs })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn checked(&self, id: &str) -> Result<PathBuf, StoreError> {
        if !valid_staged_id(id) {
            return Err(StoreError::io(
                "name staged blob",
                &self.dir,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid staged id {id:?}"),
                ),
            ));
        }
        Ok(self.dir.join(id))
    }

    /// The path of sidecar `suffix` (e.g. `"s3mpu"`) of staged `id`.
    pub(crate) fn sidecar(&self, id: &str, suffix: &str) -> Result<PathBuf, StoreError> {
        Ok(self.checked(id)?.with_extension(suffix))
    }

    /// Creates staged `id`, empty; its name is durable on return.
    pub(crate) fn create(&self, id: &str) -> Result<Staged, StoreError> {
        let path = self.checked(id)?;
        let file = self
            .fs
            .create_new(&path)
            .map_err(|e| StoreError::io("create staged blob", &path, e))?;
        // IMPORTANT: the file and its name are durable before the caller
        // records the id anywhere.
        file.sync()
            .map_err(|e| StoreError::io("sync staged blob", &path, e))?;
        self.sync_dir()?;
        Ok(Staged::new(id, Body::File { file, path }))
    }

    /// Reopens staged `id`; `None` if it is not staged.
    ///
    /// IMPORTANT: a staged file with a second name is what a crash during
    /// a commit leaves (the published blob and its staging name, see the
    /// module docs). Its staging name is removed, durably, without touching
    /// the bytes, and the id reported gone.
    pub(crate) fn open_existing(&self, id: &str) -> Result<Option<Staged>, StoreError> {
        let path = self.checked(id)?;
        let file = match self.fs.open_rw(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open staged blob", &path, e)),
        };
        let links = file
            .nlink()
            .map_err(|e| StoreError::io("stat staged blob", &path, e))?;
        if links > 1 {
            tracing::warn!(path = %path.display(), links,
                "staged blob is also a published blob (a commit was interrupted); \
                 removing the staging name, keeping the blob");
            drop(file);
            self.remove(id)?;
            return Ok(None);
        }
        Ok(Some(Staged::new(id, Body::File { file, path })))
    }

    /// Every staged id, sorted. Sidecars and foreign names are skipped.
    pub(crate) fn ids(&self) -> Result<Vec<String>, StoreError> {
        let names = self
            .fs
            .read_dir(&self.dir)
            .map_err(|e| StoreError::io("list staging directory", &self.dir, e))?;
        let mut ids: Vec<String> = names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| valid_staged_id(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes staged `id` and its sidecars, durably. Absent is fine. Only
    /// unlinks: never truncates or writes, whatever the file is.
    pub(crate) fn remove(&self, id: &str) -> Result<(), StoreError> {
        let path = self.checked(id)?;
        let prefix = format!("{id}.");
        let names = self
            .fs
            .read_dir(&self.dir)
            .map_err(|e| StoreError::io("list staging directory", &self.dir, e))?;
        let sidecars = names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .map(|n| self.dir.join(n));
        for p in std::iter::once(path).chain(sidecars) {
            match self.fs.remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove staged blob", &p, e)),
            }
        }
        self.sync_dir()
    }

    /// Makes the directory's entries durable (after a staged file was
    /// moved out of it by a commit).
    pub(crate) fn sync_dir(&self) -> Result<(), StoreError> {
        self.fs
            .fsync_dir(&self.dir)
            .map_err(|e| StoreError::io("sync directory", &self.dir, e))
    }
}
