//! Online backup and restore of a single node's data directory
//! (`berthctl backup`, `berthctl restore`; `docs/backup.md`).
//!
//! A backup is taken while `berth serve` runs on the directory, without
//! stopping it or taking its lock:
//! 1. **Hold.** `<data>/backup.hold` names the backing-up process. A GC run
//!    that finds a live hold after committing its claims deletes nothing
//!    (`Inner::backup_hold`, `gc.rs`): its claims are resumed by the next
//!    run.
//! 2. **Snapshot.** The index is opened as a RocksDB secondary instance and
//!    caught up with the server's WAL once: every read sees that one point,
//!    batch-atomic (a batch is one WAL record). Its entries are written into
//!    a fresh RocksDB, `<out>/index-<ms>/`, except upload sessions and pins
//!    (an upload in flight is not part of any image; its client retries).
//!    A blob GC had claimed (`Deleting`) keeps its record and links but not
//!    its bytes: the restored directory's first GC finishes the deletion.
//! 3. **Blobs.** Every blob the snapshot records (not `Deleting`) is
//!    hard-linked from the store into `<out>/blobs/` (the store's layout),
//!    or copied where a link cannot be made (another filesystem); one that
//!    is there already (an earlier backup into `out`) is not touched. The
//!    hold makes this race-free: a blob the snapshot holds live had
//!    refcount > 0 at the snapshot, so GC can claim it only after the
//!    snapshot, after the hold was written, and then sees the hold.
//! 4. **Commit.** `<out>/backup.json` (written atomically, last) names the
//!    new index; older index directories and blobs no longer referenced are
//!    removed after it. A backup killed before that leaves the previous one
//!    whole.
//!
//! With the `s3` backend only the index is copied; `backup.json` records
//! the bucket that holds the bytes.
//!
//! Restore copies the index (RocksDB appends to its files, so they are
//! never shared with the backup) and links (or copies) the blobs into a
//! new data directory; blob files are never written in place, so sharing
//! their inodes is safe.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::durable::{create_dir_all_durable, fsync_dir, fsync_file, write_file_durable};
use crate::error::StorageError;
use crate::index::{Batch, Index, IndexTxn};
use crate::keys::{BlobKey, Cf, Key, WholeFamily};
use crate::records::{BlobRecord, BlobState, Record};
use crate::store::{Backend, BackendKind};

/// The hold file in a data directory while a backup reads it.
pub const HOLD_FILE: &str = "backup.hold";
/// A backup's description, in its root; written last.
pub const MANIFEST_FILE: &str = "backup.json";
/// The format of [`BackupManifest`].
const FORMAT: u32 = 1;
/// Entries written per batch into the backup's index.
const LOAD_CHUNK: usize = 1000;

/// What `backup.json` says.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupManifest {
    pub format: u32,
    /// Milliseconds since the Unix epoch at the snapshot.
    pub taken_ms: u64,
    /// The index directory, relative to the backup's root.
    pub index: String,
    /// `local` (the blobs are in `blobs/`) or `s3` (in `bucket`).
    pub backend: String,
    /// The bucket that holds the bytes (`s3`): endpoint, bucket, root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketRef>,
    pub entries: u64,
    pub blobs: u64,
    pub bytes: u64,
}

/// Where an `s3` backup's bytes are (credentials are not kept).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BucketRef {
    pub endpoint: String,
    pub bucket: String,
    pub root: String,
}

/// What a backup did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupReport {
    pub manifest: BackupManifest,
    /// Blobs new in `out`: hard-linked, and copied (with their bytes).
    pub blobs_linked: u64,
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Blobs `out` held already (an earlier backup).
    pub blobs_present: u64,
    /// Blobs of earlier backups no longer referenced, removed.
    pub blobs_pruned: u64,
}

/// Progress callback: phase name, items done.
pub type Progress<'a> = &'a dyn Fn(&'static str, u64);

/// Backs up data directory `data` (served or not) into `out`; see the
/// module docs. `backend` is the directory's storage backend.
pub fn backup(
    data: &Path,
    out: &Path,
    backend: &Backend,
    progress: Progress<'_>,
) -> Result<BackupReport, StorageError> {
    let bucket = match backend.kind {
        BackendKind::Local => None,
        BackendKind::S3 => backend.s3.as_ref().map(|s| BucketRef {
            endpoint: s.endpoint.clone(),
            bucket: s.bucket.clone(),
            root: s.root.clone(),
        }),
        BackendKind::Tiered => {
            return Err(StorageError::Unsupported(
                "backup of a tiered data directory is not supported yet (its blobs move between the disk and the bucket while it runs)".into(),
            ))
        }
    };
    if !data.join("index").is_dir() {
        return Err(StorageError::Unsupported(format!(
            "{}: not a berth data directory (no index/)",
            data.display()
        )));
    }
    let existed = out.exists();
    crate::host::prepare_data_dir(out, !out.join(MANIFEST_FILE).exists())
        .map_err(StorageError::io("create backup directory", out))?;
    let canonical = |p: &Path| fs::canonicalize(p).map_err(StorageError::io("resolve", p));
    let (data_real, out_real) = (canonical(data)?, canonical(out)?);
    if out_real.starts_with(&data_real) || data_real.starts_with(&out_real) {
        if !existed {
            let _ = fs::remove_dir(out);
        }
        return Err(StorageError::Unsupported(format!(
            "{}: a backup goes outside the data directory {}",
            out.display(),
            data.display()
        )));
    }
    let hold = Hold::take(data)?;
    let taken_ms = crate::records::now_ms();
    let index_name = format!("index-{taken_ms}");
    let secondary = out.join(format!(".secondary-{}", std::process::id()));
    let _ = fs::remove_dir_all(&secondary);
    let mut report = BackupReport::default();
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    let entries = {
        let source = Index::open_rocks_secondary(&data.join("index"), &secondary)?;
        let dest = Index::open_rocks(&out.join(&index_name))?;
        let n = copy_index(&source, &dest, &mut blobs, progress)?;
        dest.flush_all()?;
        n
    };

    let mut bytes = 0;
    let mut keep = HashSet::with_capacity(blobs.len());
    for (d, size) in &blobs {
        bytes += size;
        let rel = crate::store::blob_relative_path(d);
        if bucket.is_none() {
            link_blob(&data.join("blobs"), out, &rel, *size, &mut report)?;
            progress(
                "blobs",
                report.blobs_linked + report.blobs_copied + report.blobs_present,
            );
        }
        keep.insert(rel);
    }
    drop(hold);
    // The token signing key: tokens issued before the backup stay valid
    // after a restore.
    let key = data.join(crate::accounts::TOKEN_KEY_FILE);
    if key.exists() {
        let bytes = fs::read(&key).map_err(StorageError::io("read", &key))?;
        let to = out.join(crate::accounts::TOKEN_KEY_FILE);
        crate::durable::write_private_file_durable(&to, &bytes)
            .map_err(StorageError::io("write", &to))?;
    }
    let manifest = BackupManifest {
        format: FORMAT,
        taken_ms,
        index: index_name.clone(),
        backend: if bucket.is_some() { "s3" } else { "local" }.to_owned(),
        bucket,
        entries,
        blobs: blobs.len() as u64,
        bytes,
    };
    let path = out.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    write_file_durable(&path, &json).map_err(StorageError::io("write", &path))?;

    // The previous backup is replaced: its index and unreferenced blobs go.
    for e in read_dir(out)? {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("index-") && name != index_name {
            fs::remove_dir_all(e.path()).map_err(StorageError::io("remove", &e.path()))?;
        }
    }
    report.blobs_pruned = prune_blobs(&out.join("blobs"), &keep)?;
    // This backup's scratch, and any a killed one left.
    for e in read_dir(out)? {
        if e.file_name().to_string_lossy().starts_with(".secondary-") {
            fs::remove_dir_all(e.path()).map_err(StorageError::io("remove", &e.path()))?;
        }
    }
    report.manifest = manifest;
    Ok(report)
}

/// Copies every entry of `source` but upload sessions and pins into
/// `dest`; collects the blobs to keep. Returns the entries copied.
fn copy_index(
    source: &Index,
    dest: &Index,
    blobs: &mut Vec<(Digest, u64)>,
    progress: Progress<'_>,
) -> Result<u64, StorageError> {
    let mut entries = 0;
    let mut batch = Batch::default();
    let mut pending = 0;
    for cf in Cf::ALL {
        for r in source.entries(cf) {
            let (k, v) = r?;
            match Key::decode(cf, &k) {
                Ok(Key::Upload(_)) | Ok(Key::Pin(_)) => continue,
                Ok(Key::Blob(key)) => {
                    let rec = BlobRecord::decode(&v).map_err(|detail| StorageError::Corrupt {
                        what: format!("{cf} entry {}", key.0),
                        detail,
                    })?;
                    // A blob GC had claimed (refcount 0) keeps its record,
                    // and the links it still has, without its bytes: after
                    // a restore the next GC finishes the deletion, as after
                    // a crash.
                    if rec.state != BlobState::Deleting {
                        blobs.push((key.0, rec.size));
                    }
                }
                _ => {}
            }
            batch.put_raw(cf, &k, &v);
            entries += 1;
            pending += 1;
            if pending == LOAD_CHUNK {
                dest.commit(IndexTxn::Local, std::mem::take(&mut batch))?;
                pending = 0;
                progress("index entries", entries);
            }
        }
    }
    dest.commit(IndexTxn::Local, batch)?;
    dest.sync_wal()?;
    progress("index entries", entries);
    Ok(entries)
}

/// Makes `<out>/blobs/<rel>` the blob at `<store>/<rel>`: present already,
/// or a hard link, or a durable copy.
fn link_blob(
    store: &Path,
    out: &Path,
    rel: &Path,
    size: u64,
    report: &mut BackupReport,
) -> Result<(), StorageError> {
    let from = store.join(rel);
    let to = out.join("blobs").join(rel);
    if fs::metadata(&to).is_ok_and(|m| m.len() == size) {
        report.blobs_present += 1;
        return Ok(());
    }
    let dir = parent(&to);
    create_dir_all_durable(dir).map_err(StorageError::io("create", dir))?;
    let _ = fs::remove_file(&to); // a torn copy of a killed backup
    if place(&from, &to, size).map_err(|e| missing_or_io(e, &from))? {
        report.blobs_linked += 1;
    } else {
        report.blobs_copied += 1;
        report.bytes_copied += size;
    }
    fsync_dir(dir).map_err(StorageError::io("fsync", dir))?;
    Ok(())
}

/// Hard-links `from` to `to`, or copies it (durably, through a temp file)
/// where the filesystem refuses the link. True if linked.
fn place(from: &Path, to: &Path, size: u64) -> io::Result<bool> {
    match fs::hard_link(from, to) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
        Err(_) => {} // another filesystem, or links not allowed: copy
    }
    let tmp = to.with_extension("tmp");
    let copied = fs::copy(from, &tmp)?;
    if copied != size {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::other(format!(
            "{}: {copied} bytes, the index says {size}",
            from.display()
        )));
    }
    fsync_file(&fs::File::open(&tmp)?, &tmp)?;
    fs::rename(&tmp, to)?;
    Ok(false)
}

/// Removes the blob files below `root` whose relative path is not in
/// `keep`; returns how many.
fn prune_blobs(root: &Path, keep: &HashSet<PathBuf>) -> Result<u64, StorageError> {
    let mut pruned = 0;
    if !root.is_dir() {
        return Ok(0);
    }
    for alg in read_dir(root)? {
        for shard in read_dir(&alg.path())? {
            for f in read_dir(&shard.path())? {
                let path = f.path();
                let rel = path.strip_prefix(root).unwrap_or(&path);
                if !keep.contains(rel) {
                    fs::remove_file(&path).map_err(StorageError::io("remove", &path))?;
                    pruned += 1;
                }
            }
        }
    }
    Ok(pruned)
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    pub manifest: BackupManifest,
    pub blobs_linked: u64,
    pub blobs_copied: u64,
}

/// Makes `data` (missing or empty) a data directory holding backup `from`;
/// see the module docs. The caller opens it and checks it (`fsck`).
pub fn restore(from: &Path, data: &Path) -> Result<RestoreReport, StorageError> {
    let manifest = read_manifest(from)?;
    if data.exists()
        && fs::read_dir(data)
            .map_err(StorageError::io("read", data))?
            .next()
            .is_some()
    {
        return Err(StorageError::Unsupported(format!(
            "{}: not empty; a restore goes into a new data directory",
            data.display()
        )));
    }
    crate::host::prepare_data_dir(data, true).map_err(StorageError::io("create", data))?;
    let index = from.join(&manifest.index);
    let to = data.join("index");
    create_dir_all_durable(&to).map_err(StorageError::io("create", &to))?;
    for e in read_dir(&index)? {
        let dest = to.join(e.file_name());
        fs::copy(e.path(), &dest).map_err(StorageError::io("copy", &e.path()))?;
        fsync_file(
            &fs::File::open(&dest).map_err(StorageError::io("open", &dest))?,
            &dest,
        )
        .map_err(StorageError::io("fsync", &dest))?;
    }
    fsync_dir(&to).map_err(StorageError::io("fsync", &to))?;
    let mut report = RestoreReport {
        manifest,
        blobs_linked: 0,
        blobs_copied: 0,
    };
    if report.manifest.bucket.is_none() {
        // The blobs the index records (a killed backup may have left others).
        let index = Index::open_rocks(&to)?;
        for r in index.scan(BlobKey::all()) {
            let (BlobKey(d), rec) = r?;
            if rec.state == BlobState::Deleting {
                continue; // claimed by GC at the snapshot: not backed up
            }
            let rel = crate::store::blob_relative_path(&d);
            let (src, dest) = (from.join("blobs").join(&rel), data.join("blobs").join(&rel));
            let dir = parent(&dest);
            create_dir_all_durable(dir).map_err(StorageError::io("create", dir))?;
            if place(&src, &dest, rec.size).map_err(|e| missing_or_io(e, &src))? {
                report.blobs_linked += 1;
            } else {
                report.blobs_copied += 1;
            }
            fsync_dir(dir).map_err(StorageError::io("fsync", dir))?;
        }
    }
    let key = from.join(crate::accounts::TOKEN_KEY_FILE);
    if key.exists() {
        let bytes = fs::read(&key).map_err(StorageError::io("read", &key))?;
        let to = data.join(crate::accounts::TOKEN_KEY_FILE);
        crate::durable::write_private_file_durable(&to, &bytes)
            .map_err(StorageError::io("write", &to))?;
    }
    Ok(report)
}

/// Reads a backup's `backup.json`.
pub fn read_manifest(from: &Path) -> Result<BackupManifest, StorageError> {
    let path = from.join(MANIFEST_FILE);
    let bytes = fs::read(&path).map_err(StorageError::io("read", &path))?;
    let m: BackupManifest = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
        what: path.display().to_string(),
        detail: e.to_string(),
    })?;
    // A name this module wrote: nothing outside the backup is read.
    let plain = m
        .index
        .strip_prefix("index-")
        .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()));
    if !plain {
        return Err(StorageError::Corrupt {
            what: path.display().to_string(),
            detail: format!("index {:?} is not an index directory of a backup", m.index),
        });
    }
    if m.format != FORMAT {
        return Err(StorageError::Unsupported(format!(
            "{}: backup format {} (this berth reads {FORMAT})",
            path.display(),
            m.format
        )));
    }
    Ok(m)
}

/// `<data>/backup.hold` while a backup reads the directory: the process id
/// of the backup. Removed on drop; one left by a killed backup names a
/// process that is gone, and is ignored ([`live_hold`]).
struct Hold(PathBuf);

impl Hold {
    fn take(data: &Path) -> Result<Hold, StorageError> {
        if let Some(pid) = live_hold(data) {
            return Err(StorageError::Busy(format!(
                "another backup (pid {pid}) is reading {}",
                data.display()
            )));
        }
        let path = data.join(HOLD_FILE);
        let body = format!("{}\n", std::process::id());
        write_file_durable(&path, body.as_bytes()).map_err(StorageError::io("write", &path))?;
        Ok(Hold(path))
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The process id of a live backup holding data directory `data`, if any.
pub(crate) fn live_hold(data: &Path) -> Option<u32> {
    let body = fs::read_to_string(data.join(HOLD_FILE)).ok()?;
    let pid: u32 = body.trim().parse().ok()?;
    let pid_t = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid_t, 0) };
    let alive = r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then_some(pid)
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, StorageError> {
    let mut v = fs::read_dir(dir)
        .map_err(StorageError::io("read", dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(StorageError::io("read", dir))?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("."))
}

fn missing_or_io(e: io::Error, from: &Path) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        StorageError::Corrupt {
            what: from.display().to_string(),
            detail: "a blob the index records is missing".into(),
        }
    } else {
        StorageError::io("back up blob", from)(e)
    }
}
