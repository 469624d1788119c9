//! Secrets on the host and at the login door (security review findings 3,
//! 4 and 5; `docs/security.md`, "Secrets stay secret on the host", "Auth
//! off means no accounts; the admin password is never ignored", "Login
//! floods cannot exhaust memory or lock out the right password").
//!
//! - a fresh data directory is the owner's only, the token signing key is
//!   in its own `0600` file and never in the index's files;
//! - berth (and berthctl) refuse a data directory other users may read;
//! - with auth off the account API is closed, and at an auth-on start a
//!   configured admin password replaces one someone else set;
//! - a flood of logins cannot take the server's memory, concurrent wrong
//!   passwords cannot pass the failed-login budget, and another account's
//!   right password from the same address still works;
//! - no password, robot secret, token or key reaches the server's log.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_testkit::server::{http, TestServer};
use berth_testkit::{berthctl, bin_path, open_engine};
use serde_json::Value;

use super::basic;

const ADMIN_PW: &str = "operator-admin-password";

fn auth_env(admin_pw: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BERTH_AUTH_ENABLED", "true".into()),
        ("BERTH_ADMIN_PASSWORD", admin_pw.into()),
    ]
}

fn start(data: &Path, env: &[(&str, String)]) -> TestServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestServer::start(data, &env)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under `dir` (directories first), recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = entry.expect("dir entry").path();
        out.push(p.clone());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

/// `berth serve` on `data` that is expected to refuse to start: its exit
/// status and stderr.
fn berth_refusing(data: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(bin_path("berth"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn berth");
    // A server that does start would never exit: give it a bounded while.
    for _ in 0..300 {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.success(), err);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("berth serve on {} did not refuse to start", data.display());
}

#[test]
fn a_fresh_data_dir_is_private_and_the_key_never_enters_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut s = start(&data, &auth_env(ADMIN_PW));
    // A token signed now must verify under the key file after a restart.
    let (st, _, body) = http(
        s.addr,
        "GET",
        "/service/token?service=berth-registry&scope=repository:library/app:pull",
        &[("Authorization", &basic("admin", ADMIN_PW))],
        b"",
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let token: Value = serde_json::from_slice(&body).expect("token JSON");
    let token = token["token"].as_str().expect("token").to_owned();
    s.restart();
    s.stop();

    assert_eq!(mode(&data), 0o700, "the data directory");
    for p in walk(&data) {
        let m = mode(&p);
        assert_eq!(
            m & 0o077,
            0,
            "{} is mode {m:04o}: open to other users\n{}",
            p.display(),
            s.stderr()
        );
    }
    let key_file = data.join("token.key");
    assert_eq!(mode(&key_file), 0o600);
    let seed: [u8; 32] = std::fs::read(&key_file)
        .expect("read token.key")
        .try_into()
        .expect("32 bytes");
    let key = berth_engine::token::TokenKey::from_seed(&seed);
    key.verify(
        &token,
        "berth-token-service",
        "berth-registry",
        berth_engine::records::now_ms() / 1000,
    )
    .expect("the key file holds the key that signs tokens");
    assert_eq!(
        files_containing(&data.join("index"), &seed),
        Vec::<PathBuf>::new(),
        "the signing key's seed is in the index's files"
    );
}

#[test]
fn an_open_data_dir_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // An empty directory made for berth (0755 under the usual umask) is
    // made private before anything is stored in it.
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut s = TestServer::start(&data, &[]);
    s.stop();
    assert_eq!(mode(&data), 0o700);

    // A data directory left open (as the release with the finding made
    // them) is refused.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut before = walk(&data);
    before.sort();
    let (ok, err) = berth_refusing(&data, &[]);
    assert!(!ok, "berth started on a 0755 data directory");
    assert!(err.contains("mode 0755 lets other users read"), "{err}");
    assert!(err.contains("chmod 700"), "{err}");
    assert!(err.contains("BERTH_ALLOW_OPEN_DATA_DIR=true"), "{err}");
    let mut after = walk(&data);
    after.sort();
    assert_eq!(after, before, "nothing changed in the refused directory");
    assert_eq!(
        mode(&data),
        0o755,
        "and its mode is the operator's to change"
    );
    let (code, _, err) = berthctl(&data, &["project", "add", "team"]);
    assert_ne!(code, 0);
    assert!(err.contains("mode 0755 lets other users read"), "{err}");

    // The operator's override.
    let mut s = TestServer::start(&data, &[("BERTH_ALLOW_OPEN_DATA_DIR", "true")]);
    s.stop();
    assert!(s.stderr().contains("other users of this host can read"));

    // A token key file others may read is refused too.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let key_file = data.join("token.key");
    assert_eq!(mode(&key_file), 0o600);
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (ok, err) = berth_refusing(&data, &[]);
    assert!(!ok);
    assert!(err.contains("token.key: mode 0644"), "{err}");
}

#[test]
fn with_auth_off_the_account_api_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start(dir.path(), &[]);
    let attempts: [(&str, &str, &str); 6] = [
        (
            "POST",
            "/api/v2.0/users",
            r#"{"username":"admin","password":"attacker-password","sysadmin_flag":true}"#,
        ),
        ("GET", "/api/v2.0/users", ""),
        (
            "POST",
            "/api/v2.0/projects",
            r#"{"project_name":"team","metadata":{"public":"false"}}"#,
        ),
        (
            "POST",
            "/api/v2.0/projects/library/members",
            r#"{"role_id":1,"member_user":{"username":"mallory"}}"#,
        ),
        (
            "POST",
            "/api/v2.0/robots",
            r#"{"name":"ci","permissions":[{"kind":"project","namespace":"library","access":[{"resource":"repository","action":"push"}]}]}"#,
        ),
        ("GET", "/api/v2.0/projects", ""),
    ];
    for (method, path, body) in attempts {
        let (st, _, b) = http(
            s.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(st, 403, "{method} {path}: {}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).expect("Harbor error JSON");
        assert_eq!(v["errors"][0]["code"], "DENIED", "{v}");
        assert!(
            v["errors"][0]["detail"]
                .as_str()
                .or(v["errors"][0]["message"].as_str())
                .is_some_and(|m| m.contains("auth is off")),
            "{v}"
        );
    }
    drop(s);
    // Nothing was stored.
    let e = open_engine(dir.path());
    assert!(e.users().expect("users").is_empty());
    assert!(e.project("team").expect("project").is_none());
    assert!(e.robots().expect("robots").is_empty());
}

#[test]
fn the_configured_admin_password_is_never_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    {
        // What an anonymous caller could leave behind with auth off on the
        // release with the finding: an `admin` with their password (not
        // even a system administrator), and no `library`.
        let e = open_engine(&data);
        e.create_user("admin", "attacker-password", false, "", "")
            .expect("create admin");
    }
    let s = start(&data, &auth_env(ADMIN_PW));
    let v2 = |user: &str, pw: &str| {
        http(
            s.addr,
            "GET",
            "/v2/",
            &[("Authorization", &basic(user, pw))],
            b"",
        )
        .0
    };
    assert_eq!(v2("admin", ADMIN_PW), 200, "{}", s.stderr());
    assert_eq!(v2("admin", "attacker-password"), 401);
    let (st, _, b) = http(
        s.addr,
        "GET",
        "/api/v2.0/projects/library",
        &[("Authorization", &basic("admin", ADMIN_PW))],
        b"",
    );
    assert_eq!(st, 200, "library exists: {}", String::from_utf8_lossy(&b));
    let (st, _, b) = http(
        s.addr,
        "GET",
        "/api/v2.0/users/current",
        &[("Authorization", &basic("admin", ADMIN_PW))],
        b"",
    );
    assert_eq!(st, 200);
    let me: Value = serde_json::from_slice(&b).expect("JSON");
    assert_eq!(me["sysadmin_flag"], true, "{me}");
    let log = s.stderr_when(|log| {
        log.contains("BERTH_ADMIN_PASSWORD differs from the stored password of admin")
    });
    assert!(
        log.contains("BERTH_ADMIN_PASSWORD differs from the stored password of admin"),
        "the change is logged loudly:\n{log}"
    );
    assert!(!log.contains(ADMIN_PW) && !log.contains("attacker-password"));
}

/// A TCP connection to `to` from source address `from` (any 127.x.y.z
/// works on Linux's loopback).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor this function owns until
    // it hands it to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let src = sin(from, 0);
        let r = libc::bind(fd, &src as *const _ as *const libc::sockaddr, len);
        assert_eq!(r, 0, "bind {from}: {}", std::io::Error::last_os_error());
        let SocketAddr::V4(to4) = to else {
            panic!("IPv4 server address expected")
        };
        let dst = sin(*to4.ip(), to4.port());
        let r = libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len);
        assert_eq!(r, 0, "connect {to}: {}", std::io::Error::last_os_error());
        stream
    }
}

/// `GET /v2/` with Basic credentials from source address `from`: the status.
fn v2_from(from: Ipv4Addr, to: SocketAddr, user: &str, pw: &str) -> u16 {
    let mut s = connect_from(from, to);
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let req = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {to}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        basic(user, pw)
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let head = String::from_utf8_lossy(&raw[..raw.len().min(12)]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response {head:?}"))
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_login_flood_keeps_memory_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), &auth_env(ADMIN_PW));
    let addr = s.addr;
    // 150 unknown users from 150 addresses: no limiter budget is reached,
    // every one costs a full argon2id verification (19 MiB while it runs).
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..150u32)
            .map(|i| {
                scope.spawn(move || {
                    let from = Ipv4Addr::new(127, 10, (i / 200) as u8, (i % 200 + 1) as u8);
                    v2_from(from, addr, &format!("nobody{i}"), "guess-password")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    assert!(
        statuses.iter().all(|&st| st == 401 || st == 429),
        "only refusals: {statuses:?}"
    );
    assert!(statuses.contains(&401), "some were verified: {statuses:?}");
    let hwm_mib = vm_hwm_kib(s.pid()) / 1024;
    eprintln!("peak RSS after the flood: {hwm_mib} MiB");
    // Slots × 19 MiB plus the server's own: far below 256 MiB. (150
    // verifications at once took 2.9 GiB; an allocator keeping the freed
    // buffers, ~350 MiB.)
    assert!(
        hwm_mib < 256,
        "peak RSS {hwm_mib} MiB under a login flood\n{}",
        s.stderr()
    );
    // And the server still serves the right password.
    assert_eq!(
        http(
            addr,
            "GET",
            "/v2/",
            &[("Authorization", &basic("admin", ADMIN_PW))],
            b""
        )
        .0,
        200
    );
}

#[test]
fn concurrent_wrong_passwords_stay_within_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = auth_env(ADMIN_PW);
    env.push(("BERTH_MAX_FAILED_LOGINS", "10".into()));
    let s = start(dir.path(), &env);
    let admin = basic("admin", ADMIN_PW);
    for user in ["alice", "bob"] {
        let body = format!(r#"{{"username":"{user}","password":"{user}-password"}}"#);
        let (st, _, b) = http(
            s.addr,
            "POST",
            "/api/v2.0/users",
            &[
                ("Authorization", &admin),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    }
    let addr = s.addr;
    let from = Ipv4Addr::new(127, 0, 0, 1);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64)
            .map(|i| scope.spawn(move || v2_from(from, addr, "alice", &format!("guess-{i:04}"))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let verdicts = statuses.iter().filter(|&&st| st != 429).count();
    assert!(
        statuses.iter().all(|&st| st == 401 || st == 429),
        "{statuses:?}"
    );
    assert!(
        (1..=10).contains(&verdicts),
        "{verdicts} wrong passwords were verified past a limit of 10: {statuses:?}"
    );
    // alice's own budget is spent, from this address...
    assert_eq!(v2_from(from, addr, "alice", "alice-password"), 429);
    // ...but another account from the same address signs in.
    assert_eq!(v2_from(from, addr, "bob", "bob-password"), 200);
    assert_eq!(v2_from(from, addr, "admin", ADMIN_PW), 200);
    // And alice from elsewhere.
    assert_eq!(
        v2_from(Ipv4Addr::new(127, 0, 0, 2), addr, "alice", "alice-password"),
        200
    );
}

#[test]
fn secrets_never_reach_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut env = auth_env(ADMIN_PW);
    // Everything berth and its libraries log.
    env.push(("RUST_LOG", "trace".into()));
    let s = start(&data, &env);
    let admin = basic("admin", ADMIN_PW);
    let wrong = "wrong-password-that-must-not-be-logged";
    assert_eq!(
        http(
            s.addr,
            "GET",
            "/v2/",
            &[("Authorization", &basic("admin", wrong))],
            b""
        )
        .0,
        401
    );
    let (st, _, b) = http(
        s.addr,
        "POST",
        "/api/v2.0/robots",
        &[
            ("Authorization", &admin),
            ("Content-Type", "application/json"),
        ],
        br#"{"name":"ci","permissions":[{"kind":"project","namespace":"library","access":[{"resource":"repository","action":"pull"}]}]}"#,
    );
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    let robot: Value = serde_json::from_slice(&b).expect("robot JSON");
    let robot_name = robot["name"].as_str().expect("name").to_owned();
    let robot_secret = robot["secret"].as_str().expect("secret").to_owned();
    let (st, _, b) = http(
        s.addr,
        "GET",
        "/service/token?service=berth-registry&scope=repository:library/app:pull&offline_token=true",
        &[("Authorization", &basic(&robot_name, &robot_secret))],
        b"",
    );
    assert_eq!(st, 200);
    let t: Value = serde_json::from_slice(&b).expect("token JSON");
    let token = t["token"].as_str().expect("token").to_owned();
    let refresh = t["refresh_token"].as_str().expect("refresh").to_owned();
    let (st, _, _) = http(
        s.addr,
        "GET",
        "/v2/library/app/tags/list",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert!(st == 200 || st == 404, "{st}");
    // The OAuth2 password grant carries the password in the body.
    let form = format!(
        "grant_type=password&service=berth-registry&username=admin&password={ADMIN_PW}&scope=repository:library/app:pull"
    );
    let (st, _, b) = http(
        s.addr,
        "POST",
        "/service/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let t: Value = serde_json::from_slice(&b).expect("token JSON");
    let grant_token = t["access_token"].as_str().expect("token").to_owned();

    let log = s.stderr_when(|log| log.contains("failed login") && log.contains("berth::access"));
    drop(s);
    let seed = std::fs::read(data.join("token.key")).expect("token.key");
    assert!(
        log.contains("failed login") && log.contains("berth::access"),
        "the log is captured:\n{log}"
    );
    let forms = [
        ("admin password", ADMIN_PW.to_owned()),
        ("admin Basic header", admin.clone()),
        ("wrong password", wrong.to_owned()),
        ("robot secret", robot_secret.clone()),
        ("robot Basic header", basic(&robot_name, &robot_secret)),
        ("token", token.clone()),
        ("refresh token", refresh),
        ("password-grant token", grant_token),
        ("signing key (hex)", hex::encode(&seed)),
        ("signing key (base64)", STANDARD.encode(&seed)),
    ];
    for (what, secret) in forms {
        assert!(!log.contains(&secret), "the {what} is in the log");
    }
    // Token signatures alone identify a token too.
    let sig = token.rsplit('.').next().expect("signature");
    assert!(!log.contains(sig), "a token signature is in the log");
}
