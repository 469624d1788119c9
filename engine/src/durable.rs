//! Durability helpers, so that no call site can forget an fsync.
//!
//! On Linux (ext4, xfs, btrfs) a file's *contents* and its *name* are made
//! durable separately: `fsync(file)` persists the data and inode, but the
//! directory entry created by `open(O_CREAT)`, `rename`, `link`, `mkdir` or
//! removed by `unlink` lives in the parent directory and is only persisted by
//! `fsync(parent directory)`. Forgetting the second fsync is the classic way a
//! "committed" file vanishes (or an old version reappears) after power loss.
//! Each helper here exists for one such step:
//!
//! - [`fsync_dir`]: persist the entries of one directory (after create,
//!   rename, link or unlink in it).
//! - [`durable_rename`]: the atomic-replace step of write-temp-then-rename;
//!   the rename is only durable once the destination's parent (and the
//!   source's, if it differs, so the old name does not reappear) is fsync'd.
//! - [`create_dir_all_durable`]: `mkdir -p` whose new directories survive a
//!   crash — otherwise a file fsync'd and renamed into a new directory can be
//!   lost together with the directory entry of that directory.
//! - [`write_file_durable`]: write-temp, fsync, rename, fsync-dir as one call,
//!   for small files that must be replaced all-or-nothing;
//!   [`write_private_file_durable`] the same for a secret (mode `0600` from
//!   the temp file's creation on, whatever the umask).
//! - [`fsync_file`]: fsync a file's contents, with an error that
//!   [`is_sync_failure`] recognizes.
//!
//! Callers must fsync file *contents* themselves (e.g. with [`fsync_file`])
//! before [`durable_rename`]; these helpers never fsync a file they did not
//! write.
//!
//! Errors keep the original [`io::ErrorKind`] and prefix the message with the
//! path and the step that failed (`"/data/tmp: fsync directory: …"`). A failed
//! fsync must not be retried blindly: the kernel may have dropped the dirty
//! pages and cleared the error, so a retry can "succeed" for data that is
//! gone. [`is_sync_failure`] tells such errors apart from ordinary ones
//! (missing file, permissions) so callers can refuse further writes until
//! reopened.
//!
//! Unix only: directories are fsync'd by opening them read-only.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Fsyncs directory `dir`, making creations, renames and removals of its
/// entries durable. A failure of the fsync itself (not of opening `dir`) is
/// recognized by [`is_sync_failure`].
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    let d = File::open(dir).map_err(|e| annotate(dir, "open directory to fsync it", e))?;
    d.sync_all()
        .map_err(|e| sync_failed(dir, "fsync directory", e))
}

/// Fsyncs the contents of `file` (opened from `path`, which is only used in
/// the error message). A failure is recognized by [`is_sync_failure`].
pub fn fsync_file(file: &File, path: &Path) -> io::Result<()> {
    file.sync_all()
        .map_err(|e| sync_failed(path, "fsync file", e))
}

/// Whether `e` is a failed fsync from this module (possibly via a helper
/// such as [`durable_rename`]). After one, the durability of recent writes is
/// unknown and the caller must stop writing until it is reopened.
pub fn is_sync_failure(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SyncFailed>())
}

/// Renames `from` to `to` (atomically replacing `to` if it exists), then
/// fsyncs the parent directory of `to`, and the parent of `from` if that is a
/// different directory.
///
/// Both paths must be on the same filesystem. The contents of `from` must
/// already have been fsync'd by the caller. After `Ok`, a crash leaves `to`
/// with the new contents and `from` absent. After `Err`, the rename may or may
/// not have happened (and may not be durable).
pub fn durable_rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("rename {} -> {}: {e}", from.display(), to.display()),
        )
    })?;
    let to_parent = parent_dir(to);
    fsync_dir(to_parent)?;
    let from_parent = parent_dir(from);
    if from_parent != to_parent {
        fsync_dir(from_parent)?;
    }
    Ok(())
}

/// Creates `dir` and any missing ancestors, fsyncing the parent of every
/// directory that was missing, so the whole chain survives a crash.
///
/// Idempotent and safe against concurrent callers creating the same
/// directories: a directory that another caller created after we found it
/// missing is treated as new (its parent is still fsync'd here, since the
/// other caller may not have done so yet). Errors if a component exists but is
/// not a directory.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    // Walk up to the first existing ancestor, remembering what is missing.
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match fs::metadata(cur) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{}: exists and is not a directory", cur.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur);
                match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => cur = p,
                    // Relative path whose first component is missing: its
                    // parent is the current directory, which exists.
                    Some(_) => break,
                    None => break,
                }
            }
            Err(e) => return Err(annotate(cur, "stat", e)),
        }
    }
    // Create top-down; fsync each new directory's parent.
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(annotate(d, "create directory", e)),
        }
        fsync_dir(parent_dir(d))?;
    }
    Ok(())
}

/// Atomically replaces (or creates) `path` with `bytes`, durably.
///
/// Writes a sibling temp file (`.<name>.tmp-<random>` in the same directory),
/// fsyncs it, then [`durable_rename`]s it over `path`. Readers see either the
/// old or the new contents, never a mix; after `Ok`, the new contents survive
/// a crash. On error the temp file is removed (best effort). The parent
/// directory must exist. Meant for small metadata files; blobs go through the
/// blob store.
pub fn write_file_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file_durable_mode(path, bytes, 0o666)
}

/// [`write_file_durable`] for a secret: the temp file is created with mode
/// `0600`, so no other user can open it at any point (the umask can only
/// remove bits).
pub fn write_private_file_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file_durable_mode(path, bytes, 0o600)
}

fn write_file_durable_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp-");
    tmp_name.push(random_hex(8)?);
    let tmp = parent_dir(path).join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| annotate(&tmp, "create temp file", e))?;
        file.write_all(bytes)
            .map_err(|e| annotate(&tmp, "write temp file", e))?;
        fsync_file(&file, &tmp)?;
        drop(file);
        durable_rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `n` random bytes from the OS, hex-encoded (for unique temp file names).
pub(crate) fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    Ok(hex::encode(buf))
}

/// The directory containing `path` (`.` for a bare relative file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Prefixes `e`'s message with `path` and the step that failed, keeping its kind.
fn annotate(path: &Path, step: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {step}: {e}", path.display()))
}

/// Like [`annotate`], and marks the error as a failed fsync.
pub(crate) fn sync_failed(path: &Path, step: &str, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        SyncFailed(format!("{}: {step}: {e}", path.display())),
    )
}

/// The inner error of a failed fsync; its message is the annotated one.
#[derive(Debug)]
struct SyncFailed(String);

impl std::fmt::Display for SyncFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SyncFailed {}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_file_durable_creates_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("meta.json");
        write_file_durable(&p, b"one").expect("first write");
        assert_eq!(fs::read(&p).expect("read"), b"one");
        write_file_durable(&p, b"two, longer").expect("replace");
        assert_eq!(fs::read(&p).expect("read"), b"two, longer");
        write_file_durable(&p, b"").expect("empty");
        assert_eq!(fs::read(&p).expect("read"), b"");
        assert_eq!(names(dir.path()), vec!["meta.json".to_string()]);
    }

    #[test]
    fn write_private_file_durable_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("secret");
        write_private_file_durable(&p, b"k").expect("write");
        let mode = fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&p).expect("read"), b"k");
        assert_eq!(names(dir.path()), vec!["secret".to_string()]);
    }

    #[test]
    fn write_file_durable_missing_parent_names_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("nope").join("f");
        let err = write_file_durable(&p, b"x").expect_err("parent missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn durable_rename_across_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::create_dir(&a).expect("mkdir a");
        fs::create_dir(&b).expect("mkdir b");
        fs::write(a.join("f"), b"new").expect("write");
        fs::write(b.join("f"), b"old").expect("write");
        durable_rename(&a.join("f"), &b.join("f")).expect("rename");
        assert!(!a.join("f").exists());
        assert_eq!(fs::read(b.join("f")).expect("read"), b"new");

        let err = durable_rename(&a.join("f"), &b.join("g")).expect_err("source gone");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("rename"), "{err}");
        assert!(
            err.to_string().contains(&*a.join("f").to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn create_dir_all_durable_nested_idempotent_and_rejects_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("x/y/z");
        create_dir_all_durable(&deep).expect("create");
        assert!(deep.is_dir());
        create_dir_all_durable(&deep).expect("idempotent");
        create_dir_all_durable(dir.path()).expect("existing root");

        let file = dir.path().join("file");
        fs::write(&file, b"").expect("write");
        for p in [file.clone(), file.join("sub")] {
            let err = create_dir_all_durable(&p).expect_err("file in the way");
            assert_eq!(err.kind(), io::ErrorKind::NotADirectory, "{err}");
            assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
        }
    }

    #[test]
    fn create_dir_all_durable_concurrent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("p/q/r/s");
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| create_dir_all_durable(&deep).expect("concurrent create"));
            }
        });
        assert!(deep.is_dir());
    }

    #[test]
    fn fsync_dir_missing_names_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        fsync_dir(dir.path()).expect("fsync existing dir");
        let missing = dir.path().join("missing");
        let err = fsync_dir(&missing).expect_err("missing dir");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("missing: open directory"), "{err}");
        assert!(
            !is_sync_failure(&err),
            "a missing directory is not a failed fsync"
        );

        let tagged = sync_failed(&missing, "fsync directory", io::Error::other("EIO"));
        assert!(is_sync_failure(&tagged));
        assert_eq!(
            tagged.to_string(),
            format!("{}: fsync directory: EIO", missing.display())
        );
        assert!(!is_sync_failure(&io::Error::other("plain")));
    }
}
