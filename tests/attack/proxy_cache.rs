//! Proxy cache projects (`docs/proxy-cache.md`), attacked from both sides.
//!
//! - A caller who may pull from a public proxy cache project asks it for
//!   the digest of a blob that lives only in another, private project:
//!   berth holds those bytes, but must not link them into the proxy
//!   project unless the upstream confirms it has the blob there.
//! - A lying upstream: a manifest whose bytes do not hash to the digest it
//!   announces, a blob whose bytes do not hash to the digest asked for.
//!   Nothing it serves is stored, and no client reads the blob's bytes to
//!   a clean end.
//! - Pushes into a proxy cache project, by every write route.
//! - Registries and proxy cache projects by someone who is not a system
//!   administrator.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use berth_testkit::server::{http, TestServer};
use berth_testkit::{berthctl, content, sha256};
use serde_json::json;

use super::{basic, chart_tgz, Resp};

const ADMIN_PW: &str = "proxy-attack-admin-pw";

/// A registry that serves what `answer` says for each request path
/// (`None`: 404), `/v2/` answering 200. One thread, one request per
/// connection.
fn fake_upstream(
    answer: impl Fn(&str) -> Option<(Vec<(String, String)>, Vec<u8>)> + Send + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") {
                match conn.read(&mut byte) {
                    Ok(1) => buf.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&buf).into_owned();
            let mut words = head.split_whitespace();
            let method = words.next().unwrap_or_default().to_owned();
            let path = words.next().unwrap_or_default().to_owned();
            let (status, headers, body) = match (path.as_str(), answer(&path)) {
                ("/v2/", _) => ("200 OK", Vec::new(), b"{}".to_vec()),
                (_, Some((h, b))) => ("200 OK", h, b),
                (_, None) => ("404 Not Found", Vec::new(), b"{\"errors\":[]}".to_vec()),
            };
            let mut out = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            let _ = conn.write_all(out.as_bytes());
            if method != "HEAD" {
                let _ = conn.write_all(&body);
            }
        }
    });
    format!("http://{addr}")
}

struct Setup {
    server: TestServer,
    dir: tempfile::TempDir,
    admin: String,
}

impl Setup {
    /// berth with auth on, user `mallory` (no role anywhere), and public
    /// proxy cache project `hub` of `upstream`.
    fn new(upstream: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = TestServer::start(
            &dir.path().join("data"),
            &[
                ("BERTH_AUTH_ENABLED", "true"),
                ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
            ],
        );
        let s = Setup {
            server,
            dir,
            admin: basic("admin", ADMIN_PW),
        };
        let body = json!({"username": "mallory", "password": "mallory-password"});
        s.send(
            "POST",
            "/api/v2.0/users",
            &s.admin,
            &body.to_string().into_bytes(),
        )
        .expect(201);
        let reg = json!({"name": "up", "type": "docker-registry", "url": upstream});
        let r = s.send(
            "POST",
            "/api/v2.0/registries",
            &s.admin,
            &reg.to_string().into_bytes(),
        );
        r.expect(201);
        let id: u64 = r
            .header("location")
            .and_then(|l| l.rsplit('/').next())
            .and_then(|i| i.parse().ok())
            .expect("registry id");
        let p = json!({"project_name": "hub", "registry_id": id, "metadata": {"public": "true"}});
        s.send(
            "POST",
            "/api/v2.0/projects",
            &s.admin,
            &p.to_string().into_bytes(),
        )
        .expect(201);
        s
    }

    fn send(&self, method: &str, path: &str, who: &str, body: &[u8]) -> Resp {
        let (status, headers, body) = http(
            self.server.addr,
            method,
            path,
            &[("Authorization", who), ("Content-Type", "application/json")],
            body,
        );
        Resp {
            what: format!("{method} {path}"),
            status,
            headers,
            body,
        }
    }
}

fn mallory() -> String {
    basic("mallory", "mallory-password")
}

#[test]
fn a_proxy_cache_project_reveals_no_blob_of_another_project() {
    // The upstream has nothing at all.
    let s = Setup::new(&fake_upstream(|_| None));
    let p = json!({"project_name": "secret", "metadata": {"public": "false"}});
    s.send(
        "POST",
        "/api/v2.0/projects",
        &s.admin,
        &p.to_string().into_bytes(),
    )
    .expect(201);
    let private = content("the victim's private layer", 50_000);
    let d = sha256(&private).to_string();
    let (st, _, _) = http(
        s.server.addr,
        "POST",
        &format!("/v2/secret/app/blobs/uploads/?digest={d}"),
        &[("Authorization", &s.admin)],
        &private,
    );
    assert_eq!(st, 201);
    for method in ["GET", "HEAD"] {
        let r = s.send(
            method,
            &format!("/v2/hub/any/thing/blobs/{d}"),
            &mallory(),
            b"",
        );
        assert_eq!(r.status, 404, "{}: {}", r.what, r.text());
        assert!(
            r.body.is_empty() || !r.text().contains("victim"),
            "{}",
            r.text()
        );
    }
    // Nor was it linked into the proxy project on the way.
    let r = s.send(
        "GET",
        &format!("/v2/hub/any/thing/blobs/{d}"),
        &s.admin,
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn a_lying_upstream_gets_nothing_stored_and_no_clean_read() {
    let honest = content("what the digest names", 3 << 20);
    let d = sha256(&honest).to_string();
    let mut lie = honest.clone();
    let last = lie.len() - 1;
    lie[last] ^= 1; // one bit, in the last chunk
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#.to_vec();
    let announced = sha256(b"some other manifest").to_string();
    let blob_path = format!("/v2/app/blobs/{d}");
    let upstream = fake_upstream(move |path| {
        if path == blob_path {
            return Some((Vec::new(), lie.clone()));
        }
        (path == "/v2/app/manifests/t").then(|| {
            (
                vec![
                    (
                        "Content-Type".to_owned(),
                        "application/vnd.oci.image.manifest.v1+json".to_owned(),
                    ),
                    ("Docker-Content-Digest".to_owned(), announced.clone()),
                ],
                manifest.clone(),
            )
        })
    });
    let s = Setup::new(&upstream);

    // The manifest does not hash to what the upstream announced.
    let r = s.send("GET", "/v2/hub/app/manifests/t", &mallory(), b"");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("do not hash"), "{}", r.text());

    // The blob: the answer announces its length, but the connection ends
    // before the last bytes (held back until verified, and they failed).
    for _ in 0..2 {
        let mut conn = TcpStream::connect(s.server.addr).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let req = format!(
            "GET /v2/hub/app/blobs/{d} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            mallory()
        );
        conn.write_all(req.as_bytes()).expect("send");
        let mut raw = Vec::new();
        let _ = conn.read_to_end(&mut raw);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", honest.len())),
            "{head}"
        );
        let body = &raw[split..];
        assert!(
            body.len() < honest.len(),
            "a clean read of bytes that failed their digest"
        );
        assert!(honest.starts_with(body));
    }

    // Nothing of it was stored: the index is sound and holds no blob.
    let mut server = s.server;
    server.stop();
    let data = s.dir.path().join("data");
    let (code, out, err) = berthctl(&data, &["fsck"]);
    assert_eq!(code, 0, "fsck\n{out}\n{err}");
    let (code, out, err) = berthctl(&data, &["stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l.split_whitespace().eq(["blobs", "0"])),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["manifests", "0"])),
        "{out}"
    );
}

#[test]
fn a_proxy_cache_project_takes_no_push_and_only_admins_make_one() {
    let s = Setup::new(&fake_upstream(|_| None));
    let p = json!({"project_name": "own", "metadata": {"public": "false"}});
    s.send(
        "POST",
        "/api/v2.0/projects",
        &s.admin,
        &p.to_string().into_bytes(),
    )
    .expect(201);
    let data = content("a layer", 1000);
    let d = sha256(&data).to_string();
    let (st, _, _) = http(
        s.server.addr,
        "POST",
        &format!("/v2/own/app/blobs/uploads/?digest={d}"),
        &[("Authorization", &s.admin)],
        &data,
    );
    assert_eq!(st, 201);
    // Even the administrator pushes nothing into a proxy cache.
    for (method, path, body) in [
        ("POST", "/v2/hub/app/blobs/uploads/".to_owned(), Vec::new()),
        (
            "POST",
            format!("/v2/hub/app/blobs/uploads/?digest={d}"),
            data.clone(),
        ),
        (
            "POST",
            format!("/v2/hub/app/blobs/uploads/?mount={d}&from=own/app"),
            Vec::new(),
        ),
        ("PUT", "/v2/hub/app/manifests/v1".to_owned(), b"{}".to_vec()),
        (
            "POST",
            "/api/chartrepo/hub/charts".to_owned(),
            chart_tgz("c", "1.0.0"),
        ),
    ] {
        let r = s.send(method, &path, &s.admin, &body);
        assert_eq!(r.status, 403, "{}: {}", r.what, r.text());
        assert!(r.text().contains("proxy cache"), "{}: {}", r.what, r.text());
    }
    // Registries and proxy cache projects are administrators' alone.
    let reg = json!({"name": "mine", "type": "docker-registry", "url": "http://127.0.0.1:9"});
    let body = reg.to_string().into_bytes();
    s.send("POST", "/api/v2.0/registries", &mallory(), &body)
        .harbor_error(403, "DENIED");
    s.send("GET", "/api/v2.0/registries", &mallory(), b"")
        .harbor_error(403, "DENIED");
    s.send("GET", "/api/v2.0/registries/1", &mallory(), b"")
        .harbor_error(403, "DENIED");
    s.send(
        "POST",
        "/api/v2.0/registries/ping",
        &mallory(),
        br#"{"id":1}"#,
    )
    .harbor_error(403, "DENIED");
    let p = json!({"project_name": "mine", "registry_id": 1});
    s.send(
        "POST",
        "/api/v2.0/projects",
        &mallory(),
        &p.to_string().into_bytes(),
    )
    .harbor_error(403, "DENIED");
}
