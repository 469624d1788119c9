//! Shared helpers for berth's end-to-end tests, crash tests and benchmarks.
//! Lives under `tests/` because only tests and benches use it.

pub mod keepalive;
pub mod oci_layout;
pub mod server;

use std::path::{Path, PathBuf};

use berth_engine::{Algorithm, Digest, Engine, EngineConfig};

/// Deterministic pseudo-random content of `len` bytes for `seed` (blake3 XOF),
/// so a crashed child and the checking parent agree on what a blob holds.
pub fn content(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut xof = blake3::Hasher::new().update(seed.as_bytes()).finalize_xof();
    xof.fill(&mut out);
    out
}

/// The sha256 digest of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

/// Opens an engine on `dir` with default settings.
pub fn open_engine(dir: &Path) -> Engine {
    match Engine::open(EngineConfig::new(dir)) {
        Ok(e) => e,
        Err(e) => panic!("opening engine at {}: {e}", dir.display()),
    }
}

/// Runs `berthctl ARGS… --data-dir DATA` to completion: its exit code (-1
/// when killed by a signal), stdout and stderr.
pub fn berthctl(data: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin_path("berthctl"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run berthctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A self-signed certificate for 127.0.0.1 and localhost, made by
/// `openssl req -x509` in `dir`: (`cert.pem`, `key.pem`).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req -x509: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Path of a workspace binary (`berth`, `berthctl`) built by `cargo build --bins`,
/// or in `$BERTH_BIN_DIR` when set (e.g. a copy taken right after a release
/// build, when several worktrees share one target directory).
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        assert!(p.exists(), "{} not found (BERTH_BIN_DIR)", p.display());
        return p;
    }
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives under target/<profile>/deps");
    let p = profile_dir.join(name);
    assert!(
        p.exists(),
        "{} not built; run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}
