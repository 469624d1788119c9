//! The file operations of the local blob store, behind one small trait.
//!
//! [`LocalStore`](super::LocalStore) and the staging areas
//! ([`StagingDir`](super::staging::StagingDir)) make every create, write,
//! fsync, link, rename and unlink through an [`Fs`], so the crash-simulating
//! filesystem ([`super::simfs::SimFs`]) can stand in for the real one
//! ([`RealFs`]) and "crash" the store at any step to what fsync made
//! durable. Reads of published blobs map the real file
//! ([`FsFile::as_std`]); the simulated filesystem reads into a buffer.
//!
//! Durability vocabulary, the same in both implementations: file contents
//! (and length) are durable after [`FsFile::sync`]; a directory entry
//! created, renamed, linked or removed is durable after [`Fs::fsync_dir`] of
//! its directory; [`Fs::create_dir_all`] is durable on return.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// What [`Fs::metadata`] reports about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// Length in bytes (0 for directories).
    pub len: u64,
    /// Whether it is a regular file.
    pub is_file: bool,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Number of names of the file (hard links).
    pub nlink: u64,
}

/// An open file.
pub trait FsFile: Send + Sync {
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file is shorter.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Sets the length (truncates or extends with zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The current length.
    fn size(&self) -> io::Result<u64>;
    /// The number of names the file has now.
    fn nlink(&self) -> io::Result<u64>;
    /// Makes contents and length durable. A failure is a sync failure
    /// ([`crate::durable::is_sync_failure`]).
    fn sync(&self) -> io::Result<()>;
    /// The real file, for memory maps and `sendfile`; `None` when simulated.
    fn as_std(&self) -> Option<&File> {
        None
    }
}

/// The filesystem operations the local store makes. See the module docs.
pub trait Fs: Send + Sync + 'static {
    /// `mkdir -p`, durable on return.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new file (`O_CREAT | O_EXCL`), open for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for reading and writing.
    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// `link(2)`: a second name for `from`; `AlreadyExists` if `to` exists.
    fn link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `rename(2)`: atomically replaces `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `renameat2(RENAME_NOREPLACE)`: atomically moves `from` to `to`
    /// unless `to` exists (`AlreadyExists`, nothing changes).
    /// `Unsupported` where the filesystem lacks it.
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `unlink(2)`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// `rm -r` of a directory (temp leftovers only).
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` durable. A failure of the fsync itself is
    /// a sync failure ([`crate::durable::is_sync_failure`]).
    fn fsync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Names in `dir`, unsorted; `NotFound` if it does not exist.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// What `path` is, or `None` if it does not exist.
    fn metadata(&self, path: &Path) -> io::Result<Option<FileMeta>>;
}

/// The real filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

/// A real open file.
struct RealFile {
    file: File,
    /// For error messages.
    path: std::path::PathBuf,
}

impl FsFile for RealFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn nlink(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.nlink())
    }
    fn sync(&self) -> io::Result<()> {
        crate::durable::fsync_file(&self.file, &self.path)
    }
    fn as_std(&self) -> Option<&File> {
        Some(&self.file)
    }
}

fn real(file: File, path: &Path) -> Box<dyn FsFile> {
    Box::new(RealFile {
        file,
        path: path.to_path_buf(),
    })
}

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        crate::durable::create_dir_all_durable(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(real(f, path))
    }
    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(real(f, path))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(real(File::open(path)?, path))
    }
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::hard_link(from, to)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: two NUL-terminated paths that outlive the call.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
                Err(io::Error::new(io::ErrorKind::Unsupported, e))
            }
            _ => Err(e),
        }
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        crate::durable::fsync_dir(dir)
    }
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }
    fn metadata(&self, path: &Path) -> io::Result<Option<FileMeta>> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(FileMeta {
                len: m.len(),
                is_file: m.is_file(),
                is_dir: m.is_dir(),
                nlink: m.nlink(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}
