//! Shared helpers for berth's end-to-end tests, crash tests and benchmarks.
//! Lives under `tests/` because only tests and benches use it.

pub mod distribution;
pub mod haproxy;
pub mod keepalive;
pub mod oci_layout;
pub mod server;
pub mod tcp_proxy;

use std::path::{Path, PathBuf};

use berth_engine::{Algorithm, DatabaseConfig, Digest, Engine, EngineConfig};

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
    open_engine_on(dir, None)
}

/// Opens an engine on `dir` with default settings and its index in `db`
/// (PostgreSQL) or, for `None`, in `dir` (RocksDB).
pub fn open_engine_on(dir: &Path, db: Option<&DatabaseConfig>) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.database = db.cloned();
    match Engine::open(config) {
        Ok(e) => e,
        Err(e) => panic!("opening engine at {}: {e}", dir.display()),
    }
}

/// The index backends a test of the engine's core runs on: RocksDB, and
/// PostgreSQL (a fresh schema) when `BERTH_TEST_DATABASE_URL` names one
/// (see `DatabaseConfig::for_test`).
pub fn index_backends() -> Vec<Option<DatabaseConfig>> {
    let mut v = vec![None];
    if let Some(db) = DatabaseConfig::for_test() {
        v.push(Some(db));
    }
    v
}

/// `berth serve` environment for storage `backend` (`s3`, `tiered`) on a
/// fresh root prefix of the test bucket `bucket` (created if missing; the
/// S3 server `scripts/test.sh` starts), with `multipart_threshold`; and a
/// client on the same prefix, to look into the bucket.
pub fn s3_server_env(
    transport: berth_engine::store::s3::TestTransport,
    bucket: &str,
    backend: &str,
    multipart_threshold: usize,
) -> (Vec<(String, String)>, berth_engine::store::S3Store) {
    let mut c = berth_engine::store::S3Config::from_test_env_over(transport, bucket);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    c.root = format!("{backend}-{}-{nanos:x}", std::process::id());
    let mut env = vec![
        ("BERTH_STORAGE_BACKEND", backend.to_owned()),
        ("BERTH_S3_ENDPOINT", c.endpoint.clone()),
        ("BERTH_S3_REGION", c.region.clone()),
        ("BERTH_S3_BUCKET", c.bucket.clone()),
        ("BERTH_S3_ACCESS_KEY", c.access_key.clone()),
        ("BERTH_S3_SECRET_KEY", c.secret_key.clone()),
        ("BERTH_S3_ROOT", c.root.clone()),
        (
            "BERTH_S3_MULTIPART_THRESHOLD",
            multipart_threshold.to_string(),
        ),
    ];
    if let Some(ca) = &c.ca_file {
        env.push(("BERTH_S3_CA_FILE", ca.display().to_string()));
    }
    let env = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let store =
        berth_engine::store::S3Store::open(c).unwrap_or_else(|e| panic!("open S3 client: {e}"));
    (env, store)
}

/// Runs `berthctl ARGS… --data-dir DATA` to completion: its exit code (-1
/// when killed by a signal), stdout and stderr.
pub fn berthctl(data: &Path, args: &[&str]) -> (i32, String, String) {
    berthctl_with(data, args, &[])
}

/// [`berthctl`] with `env` added to its environment.
pub fn berthctl_with(
    data: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> (i32, String, String) {
    let out = std::process::Command::new(bin_path("berthctl"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().map(|(k, v)| (k, v)))
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

/// A minimal chart archive: `NAME/Chart.yaml` only.
pub fn chart_tgz(name: &str, version: &str) -> Vec<u8> {
    use std::io::Write as _;
    let yaml = format!("apiVersion: v2\nname: {name}\nversion: {version}\n");
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(yaml.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, format!("{name}/Chart.yaml"), yaml.as_bytes())
        .expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().expect("tar")).expect("gzip");
    gz.finish().expect("gzip")
}
