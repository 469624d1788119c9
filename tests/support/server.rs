//! A real `berth serve` process for end-to-end tests, and a raw HTTP/1.1
//! client small enough to show exactly what goes on the wire.
//!
//! [`TestServer`] owns the child process: it picks a free port, waits until
//! the server answers `GET /v2/` with 200, can `kill -9` it and restart it on
//! the same port and data directory (the crash tests), and kills it on drop.
//! The server's stderr is drained by a background thread into a buffer that
//! every panic message includes, so a failing test shows what the server said.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::bin_path;

/// How long a start or restart may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeout of each read and write of [`http`].
const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A `berth serve` child process listening on `addr` with data in `data_dir`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    child: Child,
    /// Extra environment for every (re)start, e.g. `RUST_LOG`.
    extra_env: Vec<(String, String)>,
    /// Everything the server wrote to stderr, across restarts. Appended by one
    /// drain thread per process (the thread ends at EOF, i.e. when the process
    /// dies); read by panic messages and [`TestServer::stderr`]. A mutex
    /// because a drain thread and the test thread share it.
    stderr: Arc<Mutex<String>>,
}

impl TestServer {
    /// Starts `berth serve` on a free port of 127.0.0.1 with `data_dir` and
    /// `extra_env` (e.g. `BERTH_AUTH_ENABLED`), and returns once it answers
    /// `GET /v2/` with 200 (401 with auth enabled). Panics (with the server's
    /// stderr) if it exits or is not ready within 30 s.
    pub fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> TestServer {
        let extra_env: Vec<(String, String)> = extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let stderr = Arc::new(Mutex::new(String::new()));
        // Another process may take the port between our probe and the
        // server's bind; then the server exits and we try another port.
        let mut last_failure = String::new();
        for _ in 0..3 {
            let addr = free_port();
            match spawn_ready(addr, data_dir, &extra_env, &stderr) {
                Ok(child) => {
                    return TestServer {
                        addr,
                        data_dir: data_dir.to_path_buf(),
                        child,
                        extra_env,
                        stderr,
                    }
                }
                Err(e) => last_failure = e,
            }
        }
        panic!(
            "berth serve (data {}) did not start: {last_failure}\n--- server stderr ---\n{}",
            data_dir.display(),
            lock(&stderr)
        );
    }

    /// `host:port` of the server, as registry clients want it
    /// (e.g. `docker://{url}/proj/app:v1`).
    pub fn url(&self) -> String {
        self.addr.to_string()
    }

    /// The server process id (for resource measurements such as RSS).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has written to stderr so far (all restarts).
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// The server's stderr once `ready` holds for it, or as it is after
    /// 10 s. A line the server wrote before answering may still be in the
    /// pipe when the answer arrives: the reader thread copies it a moment
    /// later.
    pub fn stderr_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.stderr();
            if ready(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (no shutdown code runs) and reaps it.
    pub fn kill9(&mut self) {
        // `kill` fails only if the process was already reaped; `wait` is what
        // guarantees the process is gone (its locks and port released).
        let _ = self.child.kill();
        if let Err(e) = self.child.wait() {
            panic!("waiting for killed berth serve: {e}");
        }
    }

    /// Stops the server with SIGTERM (graceful shutdown: in-flight requests
    /// finish, the engine closes) and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        match self.child.wait() {
            Ok(s) => s,
            Err(e) => panic!("waiting for berth serve to stop: {e}"),
        }
    }

    /// Starts the server again on the same port and data directory (after
    /// [`TestServer::kill9`]; kills the running process first if there is
    /// one). Retries while the old port is still held, up to 30 s.
    pub fn restart(&mut self) {
        self.kill9();
        lock(&self.stderr).push_str("--- restart ---\n");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match spawn_ready(self.addr, &self.data_dir, &self.extra_env, &self.stderr) {
                Ok(child) => {
                    self.child = child;
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    lock(&self.stderr).push_str(&format!("(restart attempt failed: {e})\n"));
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!(
                    "berth serve on {} (data {}) did not restart: {e}\n--- server stderr ---\n{}",
                    self.addr,
                    self.data_dir.display(),
                    self.stderr()
                ),
            }
        }
    }

    /// Panics with the server's stderr if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "berth serve on {} exited unexpectedly ({status})\n--- server stderr ---\n{}",
                self.addr,
                self.stderr()
            );
        }
    }
}

/// skopeo's global flags in every test: no signature policy file, and a
/// bound on each command.
pub const SKOPEO_GLOBAL: &[&str] = &["--insecure-policy", "--command-timeout", "300s"];

/// Runs `skopeo` with [`SKOPEO_GLOBAL`] and `args`; panics (with skopeo's
/// and the server's stderr) unless it succeeds; returns its stdout.
pub fn skopeo_ok(server: &TestServer, args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(SKOPEO_GLOBAL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running skopeo (is it installed?): {e}"));
    if !out.status.success() {
        panic!(
            "skopeo {} failed ({})\n--- skopeo stderr ---\n{}\n--- server stderr ---\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            server.stderr()
        );
    }
    out.stdout
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lock(m: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    // A drain thread cannot panic while holding the lock, but don't let a
    // poisoned log hide the real failure either.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local address of probe listener")
}

/// Spawns `berth serve` on `addr` and waits until it has printed its
/// "listening on" line and answers `GET /v2/` with 200. On failure the child is
/// killed and reaped, and the error says why (its stderr is in `log`).
fn spawn_ready(
    addr: SocketAddr,
    data_dir: &Path,
    extra_env: &[(String, String)],
    log: &Arc<Mutex<String>>,
) -> Result<Child, String> {
    let bin = bin_path("berth");
    let mut cmd = Command::new(&bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", bin.display()))?;

    // The drain thread keeps the pipe empty (a chatty server must never block
    // on a full pipe) and ends at EOF, when the process exits.
    let listening = Arc::new(Mutex::new(false));
    let pipe = child.stderr.take().expect("stderr was piped");
    {
        let log = Arc::clone(log);
        let listening = Arc::clone(&listening);
        thread::spawn(move || {
            let mut lines = BufReader::new(pipe);
            let mut line = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line.contains("listening on") {
                            *listening.lock().unwrap_or_else(|p| p.into_inner()) = true;
                        }
                        lock(&log).push_str(&line);
                    }
                }
            }
        });
    }

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "berth serve on {addr} exited during startup ({status})"
            ));
        }
        let said_listening = *listening.lock().unwrap_or_else(|p| p.into_inner());
        // With native TLS the plain-HTTP probe cannot answer; a server that
        // said it listens and accepts connections is ready.
        let tls = extra_env.iter().any(|(k, _)| k == "BERTH_TLS_CERT");
        let answers = if tls {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        } else {
            v2_ok(addr)
        };
        if said_listening && answers {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "berth serve on {addr} not ready after {START_TIMEOUT:?} \
                 (printed \"listening on\": {said_listening})"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `GET /v2/` on `addr` answers 200 (or 401: a server with auth
/// enabled challenges anonymous callers there).
fn v2_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok()
        && (buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.1 401"))
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`):
/// returns the status, the response headers in order (names as sent), and the
/// body (de-chunked if the response is chunked; empty for HEAD).
///
/// `Host` and `Content-Length` are added unless `headers` has them. Panics on
/// I/O errors or an unparsable response, naming the request.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let what = format!("{method} http://{addr}{path}");
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    s.set_read_timeout(Some(HTTP_IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(HTTP_IO_TIMEOUT)))
        .unwrap_or_else(|e| panic!("{what}: setting socket timeouts: {e}"));

    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("content-length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .unwrap_or_else(|e| panic!("{what}: sending request: {e}"));

    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{what}: reading response: {e}"));
    parse_response(&raw).unwrap_or_else(|e| {
        panic!(
            "{what}: {e}; response starts {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(512)])
        )
    })
}

/// The value of the first header called `name` (case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

type Response = (u16, Vec<(String, String)>, Vec<u8>);

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of response head")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| format!("head not UTF-8: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let rest = &raw[end + 4..];
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok((status, headers, body))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not terminated")?;
        let size_line = std::str::from_utf8(&rest[..eol]).map_err(|e| e.to_string())?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| format!("bad chunk size {size_line:?}: {e}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(format!("truncated chunk of {size} bytes"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Pushes `data` as a blob of `repo` with a POST and a PUT (the two-step
/// monolithic upload every registry supports); returns its digest.
pub fn push_blob(addr: SocketAddr, repo: &str, data: &[u8]) -> String {
    let d = crate::oci_layout::sha256_digest(data);
    let path = format!("/v2/{repo}/blobs/uploads/");
    let (status, headers, _) = http(addr, "POST", &path, &[], b"");
    assert_eq!(status, 202, "POST {path}");
    let loc = header(&headers, "location").expect("location").to_owned();
    let path = loc.split_once("://").map_or(loc.as_str(), |(_, rest)| {
        rest.find('/').map_or(rest, |i| &rest[i..])
    });
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _, body) = http(addr, "PUT", &format!("{path}{sep}digest={d}"), &[], data);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    d
}

/// Pushes OCI image manifest `body` to `repo` under `reference`; returns
/// its digest as the registry answered it.
pub fn push_manifest(addr: SocketAddr, repo: &str, reference: &str, body: &[u8]) -> String {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let (st, h, b) = http(
        addr,
        "PUT",
        &path,
        &[("Content-Type", crate::oci_layout::MEDIA_TYPE_MANIFEST)],
        body,
    );
    assert_eq!(st, 201, "PUT {path}: {}", String::from_utf8_lossy(&b));
    header(&h, "Docker-Content-Digest")
        .expect("Docker-Content-Digest")
        .to_owned()
}

/// An image manifest over `config` and `layer` (digest, size), told apart
/// from its siblings by `n`.
pub fn image_manifest(config: &(String, usize), layer: &(String, usize), n: u32) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci_layout::MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config.0, "size": config.1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer.0, "size": layer.1}],
        "annotations": {"n": n.to_string()},
    }))
    .expect("manifest JSON")
}

/// skopeo with no berth server to blame (the other registry's side): its
/// stdout; panics with its stderr if it fails.
/// The manifest `server` serves for `image` (`repo:tag`), as bytes
/// (`skopeo inspect --raw` with `creds`, `user:password`).
pub fn skopeo_raw(server: &TestServer, creds: &str, image: &str) -> Vec<u8> {
    let remote = format!("docker://{}/{image}", server.url());
    skopeo_ok(
        server,
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            creds,
            "--raw",
            &remote,
        ],
    )
}

/// A JSON API call with `Authorization: auth` (a null `body` sends none):
/// status, headers and the body as JSON (null when it is not).
pub fn api_json(
    addr: SocketAddr,
    auth: &str,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, Vec<(String, String)>, serde_json::Value) {
    let raw = match body {
        serde_json::Value::Null => Vec::new(),
        b => serde_json::to_vec(b).expect("json"),
    };
    let (st, h, b) = http(
        addr,
        method,
        path,
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        &raw,
    );
    (
        st,
        h,
        serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
    )
}

pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(SKOPEO_GLOBAL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let (st, h, b) =
            parse_response(b"HTTP/1.1 202 Accepted\r\nRange: 0-9\r\nContent-Length: 3\r\n\r\nabc")
                .unwrap();
        assert_eq!(st, 202);
        assert_eq!(header(&h, "range"), Some("0-9"));
        assert_eq!(b, b"abc");

        let (st, _, b) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(st, 200);
        assert_eq!(b, b"abcde");
    }
}
