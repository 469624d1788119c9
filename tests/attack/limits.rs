//! Findings 6, 7 and 8: numbers that wrapped, slow bodies and idle
//! connections that held the server, and forwarded headers read from the
//! wrong end (`docs/security.md`: "Input-derived numbers never wrap",
//! "Slow bodies and connection floods", "Forwarded headers").
//!
//! Timeouts are shortened through the environment; waits are bounded
//! generously (a server that never closes fails the test after a minute)
//! and nothing asserts how long anything took.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use berth_testkit::server::{header, http, TestServer};
use serde_json::Value;

pub(crate) const ADMIN_PW: &str = "attack-admin-pw-1";
/// `Basic base64("admin:attack-admin-pw-1")`.
pub(crate) const ADMIN_BASIC: &str = "Basic YWRtaW46YXR0YWNrLWFkbWluLXB3LTE=";

/// How long a test waits for the server to close a connection it should
/// close: far beyond the shortened timeouts, so only a server that keeps
/// the connection fails.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(60);

pub(crate) fn start(data: &Path, extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
    ];
    env.extend_from_slice(extra);
    TestServer::start(data, &env)
}

pub(crate) fn digest_of(data: &[u8]) -> String {
    berth_testkit::sha256(data).as_str().to_owned()
}

/// Starts an upload session in `library/app` as admin; its path.
fn new_session(addr: SocketAddr) -> String {
    let (st, h, body) = http(
        addr,
        "POST",
        "/v2/library/app/blobs/uploads/",
        &[("Authorization", ADMIN_BASIC)],
        b"",
    );
    assert_eq!(st, 202, "{}", String::from_utf8_lossy(&body));
    header(&h, "location").expect("Location").to_owned()
}

/// Error code of a spec JSON error body.
pub(crate) fn code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    v["errors"][0]["code"].as_str().unwrap_or("").to_owned()
}

/// Pushes `data` through the session at `loc` (one PATCH, then PUT) and
/// checks it reads back: the session is intact.
fn finish_upload(addr: SocketAddr, loc: &str, data: &[u8]) {
    let auth = [("Authorization", ADMIN_BASIC)];
    let (st, h, body) = http(addr, "GET", loc, &auth, b"");
    assert_eq!(st, 204, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "range"), Some("0-0"), "nothing was acknowledged");
    let (st, h, body) = http(addr, "PATCH", loc, &auth, data);
    assert_eq!(st, 202, "{}", String::from_utf8_lossy(&body));
    let expected = format!("0-{}", data.len() - 1);
    assert_eq!(header(&h, "range"), Some(expected.as_str()));
    let digest = digest_of(data);
    let (st, _, body) = http(addr, "PUT", &format!("{loc}?digest={digest}"), &auth, b"");
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    let (st, _, body) = http(
        addr,
        "GET",
        &format!("/v2/library/app/blobs/{digest}"),
        &auth,
        b"",
    );
    assert_eq!((st, body.as_slice()), (200, data));
}

#[test]
fn robot_duration_that_would_wrap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &[]);
    let robot = |name: &str, duration: &str| {
        let body = format!(
            r#"{{"name":"{name}","duration":{duration},"level":"project","permissions":[{{"kind":"project","namespace":"library","access":[{{"resource":"repository","action":"pull"}}]}}]}}"#
        );
        http(
            server.addr,
            "POST",
            "/api/v2.0/robots",
            &[
                ("Authorization", ADMIN_BASIC),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    };
    // 213503982335 days in milliseconds wraps u64 to about half a day.
    for (name, duration) in [("wrap", "213503982335"), ("max", "9223372036854775807")] {
        let (st, _, body) = robot(name, duration);
        assert_eq!(
            (st, code(&body).as_str()),
            (400, "BAD_REQUEST"),
            "duration {duration}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Nothing was created; a sane duration still works.
    let (st, _, body) = http(
        server.addr,
        "GET",
        "/api/v2.0/robots",
        &[("Authorization", ADMIN_BASIC)],
        b"",
    );
    assert_eq!(st, 200);
    let robots: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(robots.as_array().map(Vec::len), Some(0), "{robots}");
    let (st, _, body) = robot("ok", "30");
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    let created: Value = serde_json::from_slice(&body).unwrap();
    let in_29_days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 29 * 86_400;
    assert!(
        created["expires_at"].as_u64().unwrap() > in_29_days,
        "{created}"
    );
}

#[test]
fn content_range_that_would_wrap_is_refused_and_the_session_survives() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &[]);
    let loc = new_session(server.addr);
    // 0-(2^64-1) is 2^64 bytes: wrapped, it matched an empty body.
    for (range, body) in [
        ("0-18446744073709551615", &b""[..]),
        ("bytes=0-18446744073709551615", &b""[..]),
        // last before first
        ("5-2", &b"abcd"[..]),
    ] {
        let (st, h, resp) = http(
            server.addr,
            "PATCH",
            &loc,
            &[("Authorization", ADMIN_BASIC), ("Content-Range", range)],
            body,
        );
        assert_eq!(
            (st, code(&resp).as_str()),
            (416, "RANGE_INVALID"),
            "{range}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert_eq!(header(&h, "range"), Some("0-0"), "{range}");
        assert_eq!(header(&h, "location"), Some(loc.as_str()), "{range}");
    }
    // The completing PUT refuses it the same way.
    let digest = digest_of(b"");
    let (st, _, resp) = http(
        server.addr,
        "PUT",
        &format!("{loc}?digest={digest}"),
        &[
            ("Authorization", ADMIN_BASIC),
            ("Content-Range", "0-18446744073709551615"),
        ],
        b"",
    );
    assert_eq!(
        (st, code(&resp).as_str()),
        (416, "RANGE_INVALID"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    finish_upload(server.addr, &loc, b"the session is intact");
}

/// Sends `head` (a request announcing `Content-Length: 60000`) and two
/// bytes of body, then waits for the server to close the connection.
/// Returns what the server answered before closing.
fn stall(addr: SocketAddr, head: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
    // One write: the server has every byte sent when it gives up, so its
    // close is a FIN after the answer, not a reset that could drop it.
    s.write_all(format!("{head}ab").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the server kept a stalled body's connection open ({e}); it answered {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn stalled_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir.path().join("data"),
        &[("BERTH_BODY_READ_TIMEOUT_SECONDS", "2")],
    );
    let addr = server.addr;

    // The token service reads its form before it can authenticate.
    let answer = stall(
        addr,
        &format!(
            "POST /service/token HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    // Robot creation authenticates first: an anonymous caller is answered
    // at once, without the server waiting on its body.
    let answer = stall(
        addr,
        &format!(
            "POST /api/v2.0/robots HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");

    // A stalled chunk: cut off, nothing acknowledged, and the session is
    // not left busy.
    let loc = new_session(addr);
    let answer = stall(
        addr,
        &format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {ADMIN_BASIC}\r\n\
             Content-Length: 60000\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    finish_upload(addr, &loc, b"after the stalled chunk");
    // And the server serves everyone else.
    let (st, _, _) = http(addr, "GET", "/v2/", &[("Authorization", ADMIN_BASIC)], b"");
    assert_eq!(st, 200);
}

/// Waits for the server to close `s` (EOF or reset); panics if it does not
/// within [`CLOSE_WAIT`].
pub(crate) fn assert_closed_by_server(mut s: TcpStream, what: &str) {
    s.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // e.g. a 408 before the close
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the server kept {what} open: {e}"),
        }
    }
}

#[test]
fn silent_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir.path().join("data"),
        &[("BERTH_HEADER_READ_TIMEOUT_SECONDS", "2")],
    );
    // Nothing at all (before hyper knows HTTP/1 from h2).
    let silent = TcpStream::connect(server.addr).unwrap();
    // Half a request head.
    let mut half = TcpStream::connect(server.addr).unwrap();
    half.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    // A partial h2 preface.
    let mut preface = TcpStream::connect(server.addr).unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    assert_closed_by_server(silent, "a connection that sent nothing");
    assert_closed_by_server(half, "a connection with half a request head");
    assert_closed_by_server(preface, "a connection with half an h2 preface");
    let (st, _, _) = http(server.addr, "GET", "/v2/", &[], b"");
    assert_eq!(st, 401);
}

#[test]
fn connection_limit_holds_and_frees() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir.path().join("data"),
        &[
            ("BERTH_MAX_CONNECTIONS", "4"),
            // Held connections stay held until the test closes them.
            ("BERTH_HEADER_READ_TIMEOUT_SECONDS", "600"),
        ],
    );
    let addr = server.addr;
    // Four connections, each with one answered request: the server has
    // accepted every one of them and they stay open (keep-alive).
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
        s.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 401");
        held.push(s);
    }
    // More connections than allowed: the kernel completes them, berth
    // does not serve them while the four are open.
    let mut extra = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        extra.push(s);
    }
    // Not answered yet. (A server without the limit answers in
    // milliseconds; a second of silence is the evidence, not a timing.)
    let probe = &mut extra[0];
    probe
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 12];
    match probe.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a connection beyond BERTH_MAX_CONNECTIONS was served: {other:?}"),
    }
    // Close the held ones: the waiting connections are served.
    drop(held);
    for mut s in extra {
        s.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 401"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    // And so is everyone after them.
    for _ in 0..8 {
        let (st, _, _) = http(addr, "GET", "/v2/", &[("Authorization", ADMIN_BASIC)], b"");
        assert_eq!(st, 200);
    }
}

#[test]
fn appending_proxy_decides_the_realm_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir.path().join("data"),
        &[("BERTH_TRUSTED_PROXIES", "127.0.0.1/32")],
    );
    // The client sent `X-Forwarded-Host: evil.example`; the trusted proxy
    // appended the host the client really reached.
    let (st, h, _) = http(
        server.addr,
        "GET",
        "/v2/",
        &[
            ("X-Forwarded-Host", "evil.example, real.example"),
            ("X-Forwarded-Proto", "http, https"),
        ],
        b"",
    );
    assert_eq!(st, 401);
    assert_eq!(
        header(&h, "www-authenticate"),
        Some("Bearer realm=\"https://real.example/service/token\",service=\"berth-registry\"")
    );
    // The same rule for upload Locations.
    let (st, h, _) = http(
        server.addr,
        "POST",
        "/v2/library/app/blobs/uploads/",
        &[
            ("Authorization", ADMIN_BASIC),
            ("X-Forwarded-Host", "evil.example, real.example"),
            ("X-Forwarded-Proto", "http, https"),
        ],
        b"",
    );
    assert_eq!(st, 202);
    let loc = header(&h, "location").unwrap();
    assert!(
        loc.starts_with("https://real.example/v2/library/app/blobs/uploads/"),
        "{loc}"
    );
    // Forwarded (RFC 7239): the element the proxy appended for the client.
    let (_, h, _) = http(
        server.addr,
        "GET",
        "/v2/",
        &[(
            "Forwarded",
            "for=127.0.0.1;host=evil.example;proto=http, for=192.0.2.10;host=real.example;proto=https",
        )],
        b"",
    );
    assert_eq!(
        header(&h, "www-authenticate"),
        Some("Bearer realm=\"https://real.example/service/token\",service=\"berth-registry\"")
    );
}
