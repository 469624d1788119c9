//! End to end behind a TLS-terminating proxy: haproxy (Debian) serves
//! `https://127.0.0.1:PORT` with a self-signed certificate made by
//! `openssl req -x509` and forwards plain HTTP to a real `berth serve`
//! with auth enabled. `skopeo login` and `skopeo copy` (push and pull) must
//! work through it, the certificate verified (`--cert-dir` holding it as
//! `ca.crt`), in three setups:
//!
//! 1. haproxy sets `X-Forwarded-Proto: https`, berth trusts 127.0.0.1;
//! 2. haproxy sends no `X-Forwarded-Proto` but RFC 7239 `Forwarded: proto=https`;
//! 3. haproxy sends no forwarding header at all; `BERTH_EXTERNAL_URL` is set.
//!
//! And the control: without any of them berth announces an `http://` realm
//! — the rule working as documented, not a guess.
//!
//! Needs `haproxy`, `openssl` and `skopeo` on PATH (scripts/install-deps.sh).

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_testkit::haproxy::{free_port, Haproxy};
use berth_testkit::oci_layout;
use berth_testkit::server::{header, http, TestServer};

const ADMIN_PW: &str = "proxy-admin-pw";

/// A self-signed certificate for 127.0.0.1 and localhost: `cert.pem`,
/// `key.pem`, haproxy's `combined.pem`, and `certs/ca.crt` for skopeo.
fn make_cert(dir: &Path) -> PathBuf {
    berth_testkit::self_signed_cert(dir);
    let cert = fs::read(dir.join("cert.pem")).unwrap();
    let key = fs::read(dir.join("key.pem")).unwrap();
    fs::write(dir.join("combined.pem"), [cert.clone(), key].concat()).unwrap();
    let certs = dir.join("certs");
    fs::create_dir_all(&certs).unwrap();
    fs::write(certs.join("ca.crt"), cert).unwrap();
    certs
}

/// haproxy terminating TLS on `port` in front of `backend`; `frontend`
/// lines go into its frontend section (forwarding options, headers).
fn haproxy(dir: &Path, port: u16, backend: SocketAddr, frontend: &str) -> Haproxy {
    let cfg = format!(
        "global\n  maxconn 256\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n\
         frontend fe\n  bind 127.0.0.1:{port} ssl crt {}\n{frontend}  default_backend be\n\
         backend be\n  server berth {backend}\n",
        dir.join("combined.pem").display()
    );
    Haproxy::start(dir, port, &cfg)
}

fn skopeo(args: &[&str], stdin: Option<&str>, server: &TestServer) {
    let mut child = Command::new("skopeo")
        .args(["--insecure-policy", "--command-timeout", "300s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running skopeo (is it installed?)");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {} failed\n{}\n--- server ---\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
}

/// Login, push, pull back through `https://127.0.0.1:{proxy}`.
fn login_push_pull(server: &TestServer, proxy: u16, dir: &Path, certs: &Path, case: &str) {
    let reg = format!("127.0.0.1:{proxy}");
    let authfile = dir.join(format!("auth-{case}.json"));
    let authfile = authfile.to_str().unwrap();
    let certs = certs.to_str().unwrap();
    skopeo(
        &[
            "login",
            "--authfile",
            authfile,
            "--cert-dir",
            certs,
            "--tls-verify=true",
            "-u",
            "admin",
            "--password-stdin",
            &reg,
        ],
        Some(ADMIN_PW),
        server,
    );
    let src = dir.join(format!("src-{case}"));
    let image = oci_layout::write_image(&src, "v1", case, &[100, 70_000]);
    let remote = format!("docker://{reg}/library/{case}:v1");
    let common = ["copy", "--authfile", authfile, "--preserve-digests"];
    let mut push = common.to_vec();
    push.extend([
        "--dest-cert-dir",
        certs,
        "--dest-tls-verify=true",
        "--dest-oci-accept-uncompressed-layers",
    ]);
    let src_ref = format!("oci:{}:v1", src.display());
    push.extend([src_ref.as_str(), remote.as_str()]);
    skopeo(&push, None, server);
    let back = dir.join(format!("back-{case}"));
    let back_ref = format!("oci:{}:v1", back.display());
    let mut pull = common.to_vec();
    pull.extend([
        "--src-cert-dir",
        certs,
        "--src-tls-verify=true",
        remote.as_str(),
        back_ref.as_str(),
    ]);
    skopeo(&pull, None, server);
    assert_eq!(
        oci_layout::tagged_descriptor(&back, "v1")["digest"],
        image.manifest_digest.as_str(),
        "{case}: pulled another manifest"
    );
    for d in image.blob_digests() {
        assert_eq!(
            oci_layout::read_blob(&back, &d),
            oci_layout::read_blob(&src, &d),
            "{case}: blob {d}"
        );
    }
}

fn start_berth(data: &Path, env: &[(&str, &str)]) -> TestServer {
    let mut all = vec![
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
    ];
    all.extend_from_slice(env);
    TestServer::start(data, &all)
}

#[test]
fn skopeo_through_haproxy_terminating_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = make_cert(dir);

    // 1. X-Forwarded-Proto from a trusted proxy.
    let server = start_berth(
        &dir.join("d1"),
        &[("BERTH_TRUSTED_PROXIES", "127.0.0.1/32")],
    );
    let proxy = haproxy(
        dir,
        free_port(),
        server.addr,
        "  option forwardfor\n  http-request set-header X-Forwarded-Proto https\n",
    );
    login_push_pull(&server, proxy.port, dir, &certs, "xfp");
    drop((proxy, server));

    // 2. No X-Forwarded-Proto: the standard Forwarded header instead.
    let server = start_berth(&dir.join("d2"), &[("BERTH_TRUSTED_PROXIES", "127.0.0.0/8")]);
    let proxy = haproxy(
        dir,
        free_port(),
        server.addr,
        "  option forwardfor\n  http-request set-header Forwarded proto=https;host=%[req.hdr(host)]\n",
    );
    login_push_pull(&server, proxy.port, dir, &certs, "forwarded");
    drop((proxy, server));

    // 3. No forwarding header at all: BERTH_EXTERNAL_URL. The proxy port
    // must be known before berth starts, so pick it first.
    let data = dir.join("d3");
    let port = free_port();
    let external = format!("https://127.0.0.1:{port}");
    let server = start_berth(&data, &[("BERTH_EXTERNAL_URL", external.as_str())]);
    let cfg_proxy = haproxy(dir, port, server.addr, "");
    login_push_pull(&server, cfg_proxy.port, dir, &certs, "external");
    // The upload Location is absolute on the external URL.
    let (status, h, _) = http(
        server.addr,
        "POST",
        "/v2/library/loc/blobs/uploads/",
        &[(
            "Authorization",
            &format!("Basic {}", b64(&format!("admin:{ADMIN_PW}"))),
        )],
        b"",
    );
    assert_eq!(status, 202);
    assert!(
        header(&h, "location")
            .unwrap()
            .starts_with(&format!("{external}/v2/library/loc/blobs/uploads/")),
        "{h:?}"
    );
    drop((cfg_proxy, server));

    // Control: no header, no external URL, untrusted proxy headers: the
    // realm is berth's own view (http), as the rule says.
    let server = start_berth(&dir.join("d4"), &[]);
    let (status, h, _) = http(
        server.addr,
        "GET",
        "/v2/",
        &[("X-Forwarded-Proto", "https"), ("Host", "reg.example")],
        b"",
    );
    assert_eq!(status, 401);
    assert_eq!(
        header(&h, "www-authenticate"),
        Some("Bearer realm=\"http://reg.example/service/token\",service=\"berth-registry\"")
    );
}

/// Standard base64 (for a Basic header), small and local to the test.
fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Native TLS (`BERTH_TLS_CERT`/`BERTH_TLS_KEY`, rustls): the same login,
/// push and pull straight against berth's own `https://` port, the
/// certificate verified; plain HTTP on that port gets no answer.
#[test]
fn skopeo_against_native_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = make_cert(dir);
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let server = start_berth(
        &dir.join("data"),
        &[
            ("BERTH_TLS_CERT", cert.to_str().unwrap()),
            ("BERTH_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    login_push_pull(&server, server.addr.port(), dir, &certs, "native");
    assert!(
        std::panic::catch_unwind(|| http(server.addr, "GET", "/v2/", &[], b"")).is_err(),
        "plain HTTP must not be served on the TLS port"
    );
}
