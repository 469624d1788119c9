//! A crash-simulating filesystem for the store tests, in the style of
//! redb's crash-consistency backend: beside the live state it keeps the
//! durable image — what `fsync` made durable — and can "crash" to it.
//!
//! The model (conservative: every image it produces is one a real Linux
//! filesystem could leave, and more):
//! - A file's contents and length are durable as of its last
//!   [`FsFile::sync`]; unsynced writes may or may not have reached the disk.
//! - A directory's entries (create, link, rename, unlink) are durable as of
//!   its last [`Fs::fsync_dir`], independently per directory: a rename
//!   between two directories can reach the disk on one side and not the
//!   other, so after a crash the file may have both names, or none.
//! - Directories themselves are created durably ([`Fs::create_dir_all`] is
//!   durable by contract).
//!
//! While recording ([`SimFs::record`]), every mutating call is a crash
//! point; [`SimFs::crash_images`] turns each into the filesystems a crash
//! there could leave: every combination of "durable" or "live" for each
//! directory and each file with unsynced changes (capped, see there). A
//! test reopens the store on each image, runs recovery and checks its
//! invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::fs::{FileMeta, Fs, FsFile};

/// The simulated filesystem. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct SimFs {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Crash points recorded since [`SimFs::record`]; `None` when not recording.
    log: Mutex<Option<Vec<State>>>,
}

#[derive(Clone, Default)]
struct State {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
}

#[derive(Clone, Default, PartialEq)]
struct Dir {
    live: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Clone, Default, PartialEq)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: not found", p.display()),
    )
}

fn split(p: &Path) -> io::Result<(PathBuf, OsString)> {
    match (p.parent(), p.file_name()) {
        (Some(d), Some(n)) => Ok((d.to_path_buf(), n.to_os_string())),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name")),
    }
}

impl State {
    fn lookup(&self, p: &Path) -> io::Result<u64> {
        let (d, n) = split(p)?;
        self.dirs
            .get(&d)
            .and_then(|dir| dir.live.get(&n).copied())
            .ok_or_else(|| not_found(p))
    }

    fn dir_mut(&mut self, d: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(d).ok_or_else(|| not_found(d))
    }

    fn nlink(&self, ino: u64) -> u64 {
        self.dirs
            .values()
            .map(|d| d.live.values().filter(|i| **i == ino).count() as u64)
            .sum()
    }

    fn exists(&self, p: &Path) -> bool {
        self.dirs.contains_key(p) || self.lookup(p).is_ok()
    }

    /// The image of a crash: `live_dirs` and `live_inodes` keep their live
    /// state, everything else falls back to the durable one.
    fn crashed(&self, live_dirs: &BTreeSet<PathBuf>, live_inodes: &BTreeSet<u64>) -> State {
        let mut s = self.clone();
        for (p, d) in s.dirs.iter_mut() {
            let keep = if live_dirs.contains(p) {
                d.live.clone()
            } else {
                d.durable.clone()
            };
            d.live = keep.clone();
            d.durable = keep;
        }
        for (ino, i) in s.inodes.iter_mut() {
            let keep = if live_inodes.contains(ino) {
                i.live.clone()
            } else {
                i.durable.clone()
            };
            i.live = keep.clone();
            i.durable = keep;
        }
        let referenced: BTreeSet<u64> = s
            .dirs
            .values()
            .flat_map(|d| d.live.values().copied())
            .collect();
        s.inodes.retain(|ino, _| referenced.contains(ino));
        s
    }
}

impl SimFs {
    /// An empty filesystem (with `/`).
    pub fn new() -> SimFs {
        let fs = SimFs::default();
        fs.lock().dirs.insert(PathBuf::from("/"), Dir::default());
        fs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a mutation, then records the state as a crash point.
    fn mutate<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.lock();
        let r = f(&mut s)?;
        // Lock order: state, then log.
        let mut log = self
            .inner
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = log.as_mut() {
            log.push(s.clone());
        }
        Ok(r)
    }

    /// Starts recording crash points (the current state is the first).
    pub fn record(&self) {
        let now = self.lock().clone();
        *self
            .inner
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(vec![now]);
    }

    /// Number of crash points recorded so far: the index the next one
    /// will get.
    pub fn crash_points(&self) -> usize {
        self.inner
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, Vec::len)
    }

    /// Every filesystem a crash at a recorded point could leave: for each
    /// point, each combination of durable/live per directory and per file
    /// with unsynced changes. Above 10 such objects per point, the
    /// combinations are all-durable, all-live and every single flip from
    /// either. Each image comes with the index of its crash point (0 is
    /// the state when recording started; point `i` follows the `i`th
    /// mutating call). Recording stops.
    pub fn crash_images(&self) -> Vec<(usize, SimFs)> {
        let log = self
            .inner
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        let mut out = Vec::new();
        for (point, s) in log.into_iter().enumerate() {
            let dirs: Vec<PathBuf> = s
                .dirs
                .iter()
                .filter(|(_, d)| d.live != d.durable)
                .map(|(p, _)| p.clone())
                .collect();
            let inodes: Vec<u64> = s
                .inodes
                .iter()
                .filter(|(_, i)| i.live != i.durable)
                .map(|(n, _)| *n)
                .collect();
            let n = dirs.len() + inodes.len();
            let masks: Vec<u64> = if n <= 10 {
                (0..(1u64 << n)).collect()
            } else {
                let all = (1u64 << n) - 1;
                let mut m = vec![0, all];
                for b in 0..n {
                    m.push(1 << b);
                    m.push(all ^ (1 << b));
                }
                m
            };
            for mask in masks {
                let live_dirs = dirs
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| mask & (1 << b) != 0)
                    .map(|(_, p)| p.clone())
                    .collect();
                let live_inodes = inodes
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| mask & (1 << (b + dirs.len())) != 0)
                    .map(|(_, i)| *i)
                    .collect();
                let img = SimFs::default();
                *img.lock() = s.crashed(&live_dirs, &live_inodes);
                out.push((point, img));
            }
        }
        out
    }

    /// The contents of the file at `path`, if there is one.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let ino = s.lookup(path).ok()?;
        s.inodes.get(&ino).map(|i| i.live.clone())
    }
}

/// An open simulated file: an inode, valid even after its names are gone.
struct SimFile {
    fs: SimFs,
    ino: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inode) -> io::Result<T>) -> io::Result<T> {
        let ino = self.ino;
        self.fs.mutate(|s| {
            let i = s
                .inodes
                .get_mut(&ino)
                .ok_or_else(|| io::Error::other("stale inode"))?;
            f(i)
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Inode) -> T) -> io::Result<T> {
        let s = self.fs.lock();
        s.inodes
            .get(&self.ino)
            .map(f)
            .ok_or_else(|| io::Error::other("stale inode"))
    }
}

impl FsFile for SimFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|i| {
            let start = offset as usize;
            let end = start + buf.len();
            if i.live.len() < end {
                i.live.resize(end, 0);
            }
            i.live[start..end].copy_from_slice(buf);
            Ok(())
        })
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read(|i| {
            let start = offset as usize;
            match i.live.get(start..start + buf.len()) {
                Some(b) => {
                    buf.copy_from_slice(b);
                    Ok(())
                }
                None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            }
        })?
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|i| {
            i.live.resize(len as usize, 0);
            Ok(())
        })
    }
    fn size(&self) -> io::Result<u64> {
        self.read(|i| i.live.len() as u64)
    }
    fn nlink(&self) -> io::Result<u64> {
        Ok(self.fs.lock().nlink(self.ino))
    }
    fn sync(&self) -> io::Result<()> {
        self.with(|i| {
            i.durable = i.live.clone();
            Ok(())
        })
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.mutate(|s| {
            for a in dir.ancestors() {
                if a.as_os_str().is_empty() {
                    continue;
                }
                if s.lookup(a).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{}: exists and is not a directory", a.display()),
                    ));
                }
                s.dirs.entry(a.to_path_buf()).or_default();
            }
            Ok(())
        })
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let (d, n) = split(path)?;
        let ino = self.mutate(|s| {
            if s.exists(path) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            s.next_ino += 1;
            let ino = s.next_ino;
            s.dir_mut(&d)?.live.insert(n, ino);
            s.inodes.insert(ino, Inode::default());
            Ok(ino)
        })?;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
        }))
    }
    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let ino = self.lock().lookup(path)?;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
        }))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.open_rw(path)
    }
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (d, n) = split(to)?;
        self.mutate(|s| {
            let ino = s.lookup(from)?;
            if s.exists(to) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            s.dir_mut(&d)?.live.insert(n, ino);
            Ok(())
        })
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let ((fd, fnm), (td, tn)) = (split(from)?, split(to)?);
        self.mutate(|s| {
            let ino = s.lookup(from)?;
            s.dir_mut(&td)?;
            s.dir_mut(&fd)?.live.remove(&fnm);
            s.dir_mut(&td)?.live.insert(tn, ino);
            Ok(())
        })
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        let ((fd, fnm), (td, tn)) = (split(from)?, split(to)?);
        self.mutate(|s| {
            let ino = s.lookup(from)?;
            if s.exists(to) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            s.dir_mut(&td)?;
            s.dir_mut(&fd)?.live.remove(&fnm);
            s.dir_mut(&td)?.live.insert(tn, ino);
            Ok(())
        })
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (d, n) = split(path)?;
        self.mutate(|s| match s.dir_mut(&d)?.live.remove(&n) {
            Some(_) => Ok(()),
            None => Err(not_found(path)),
        })
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.mutate(|s| {
            let gone: Vec<PathBuf> = s
                .dirs
                .keys()
                .filter(|p| p.starts_with(path))
                .cloned()
                .collect();
            if gone.is_empty() {
                return Err(not_found(path));
            }
            for p in gone {
                s.dirs.remove(&p);
            }
            Ok(())
        })
    }
    fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        self.mutate(|s| {
            let d = s.dir_mut(dir)?;
            d.durable = d.live.clone();
            Ok(())
        })
    }
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let s = self.lock();
        let d = s.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        let mut names: Vec<OsString> = d.live.keys().cloned().collect();
        for p in s.dirs.keys() {
            if p.parent() == Some(dir) {
                if let Some(n) = p.file_name() {
                    names.push(n.to_os_string());
                }
            }
        }
        Ok(names)
    }
    fn metadata(&self, path: &Path) -> io::Result<Option<FileMeta>> {
        let s = self.lock();
        if s.dirs.contains_key(path) {
            return Ok(Some(FileMeta {
                len: 0,
                is_file: false,
                is_dir: true,
                nlink: 1,
            }));
        }
        match s.lookup(path) {
            Ok(ino) => Ok(Some(FileMeta {
                len: s.inodes.get(&ino).map_or(0, |i| i.live.len() as u64),
                is_file: true,
                is_dir: false,
                nlink: s.nlink(ino),
            })),
            Err(_) => Ok(None),
        }
    }
}
