//! What other users of the host can see of a data directory: nothing.
//!
//! The data directory holds password hashes and robot secret hashes (in the
//! index) and the token signing key (`<data>/token.key`, see
//! [`crate::Engine::token_signing_key`]); whoever reads the key can sign a
//! token for any account. Three mechanisms keep them to the account that
//! runs berth:
//!
//! - [`private_umask`]: both binaries (`berth`, `berthctl`) set the process
//!   umask to `0o077` before anything else, so every file and directory they
//!   create — RocksDB's files, blobs, upload files, journals — is `0600` /
//!   `0700` whatever the caller's umask was.
//! - [`prepare_data_dir`]: the data directory itself is created `0700`
//!   explicitly (not through the umask), by the engine and by library users
//!   alike; an empty directory given for a new data directory loses its
//!   group and other bits before anything is stored in it.
//! - [`check_private`]: [`crate::Engine::open`] refuses a data directory
//!   (and the token key file) that group or others may read, write or
//!   traverse, unless the operator said so
//!   ([`crate::EngineConfig::allow_open_data_dir`], `BERTH_ALLOW_OPEN_DATA_DIR=true`).
//!   A `0700` directory makes everything below it unreachable to other
//!   users, whatever the modes of files an older berth created there.
//!
//! Unix only.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::durable::{create_dir_all_durable, fsync_dir};
use crate::error::StorageError;

/// The environment variable (and, lowercased, the flag) that lets berth
/// open a data directory other users can read.
pub const ALLOW_OPEN_ENV: &str = "BERTH_ALLOW_OPEN_DATA_DIR";

/// Mode bits that let anyone but the owner in.
const OTHERS: u32 = 0o077;

/// Sets the process umask to `0o077`: files and directories created from
/// now on are the owner's only. Call it first thing in `main`, before any
/// thread starts (the umask is per process).
pub fn private_umask() {
    // SAFETY: umask(2) cannot fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Makes `dir` a private data directory before anything is stored in it:
/// creates it (and missing parents, durably) with mode `0700` if it does
/// not exist; if it exists but holds no data directory yet (`fresh`: the
/// operator or a test made an empty directory for berth), takes group and
/// other bits off it. An existing data directory is left as it is:
/// [`check_private`] judges it.
pub(crate) fn prepare_data_dir(dir: &Path, fresh: bool) -> io::Result<()> {
    if dir.is_dir() {
        if fresh {
            let mode = fs::metadata(dir)?.permissions().mode() & 0o7777;
            if mode & OTHERS != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(mode & !OTHERS)).map_err(
                    |e| io::Error::new(e.kind(), format!("{}: chmod: {e}", dir.display())),
                )?;
            }
        }
        return Ok(());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_dir_all_durable(parent)?;
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("{}: create directory: {e}", dir.display()),
            ))
        }
    }
    fsync_dir(parent)
}

/// What lives at a checked path, for the refusal message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarded {
    /// The data directory: the index (password hashes) and everything else.
    DataDir,
    /// The token signing key file.
    TokenKey,
}

impl Guarded {
    fn what(self) -> &'static str {
        match self {
            Guarded::DataDir => "its index (password hashes) and the token signing key",
            Guarded::TokenKey => "the token signing key",
        }
    }

    fn fix(self) -> &'static str {
        match self {
            Guarded::DataDir => "chmod 700",
            Guarded::TokenKey => "chmod 600",
        }
    }
}

/// Refuses `path` if group or others have any permission on it, unless
/// `allow_open`. The error reads
/// `<path>: mode 0755 lets other users read …; chmod 700 it or set BERTH_ALLOW_OPEN_DATA_DIR=true`.
pub(crate) fn check_private(
    path: &Path,
    guarded: Guarded,
    allow_open: bool,
) -> Result<(), StorageError> {
    let meta = fs::metadata(path).map_err(StorageError::io("stat", path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & OTHERS == 0 {
        return Ok(());
    }
    if allow_open {
        tracing::warn!(path = %path.display(), mode = %format!("{mode:04o}"),
            "other users of this host can read {} ({ALLOW_OPEN_ENV}=true)", guarded.what());
        return Ok(());
    }
    Err(StorageError::OpenToOthers {
        path: path.to_path_buf(),
        mode,
        what: guarded.what(),
        fix: guarded.fix(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn data_dir_is_created_private_and_open_ones_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("a/b/data");
        prepare_data_dir(&data, true).unwrap();
        assert_eq!(mode(&data), 0o700);
        check_private(&data, Guarded::DataDir, false).unwrap();

        // An empty directory made for berth is made private...
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        prepare_data_dir(&data, true).unwrap();
        assert_eq!(mode(&data), 0o700);
        // ...an existing data directory is left alone, and judged.
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        prepare_data_dir(&data, false).unwrap();
        assert_eq!(mode(&data), 0o755);
        let e = check_private(&data, Guarded::DataDir, false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("mode 0755 lets other users read"), "{msg}");
        assert!(msg.contains("chmod 700"), "{msg}");
        assert!(msg.contains(ALLOW_OPEN_ENV), "{msg}");
        assert!(msg.contains(&*data.to_string_lossy()), "{msg}");
        check_private(&data, Guarded::DataDir, true).unwrap();

        // Traversal alone is enough to reach files by name.
        fs::set_permissions(&data, fs::Permissions::from_mode(0o711)).unwrap();
        assert!(check_private(&data, Guarded::DataDir, false).is_err());

        let key = data.join("token.key");
        fs::write(&key, b"x").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        let msg = check_private(&key, Guarded::TokenKey, false)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("mode 0640") && msg.contains("chmod 600"),
            "{msg}"
        );
    }
}
