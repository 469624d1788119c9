//! The OCI distribution API end to end: a real berth server started
//! in-process on 127.0.0.1:0 over a temporary data directory, spoken to over
//! HTTP/1.1 (and h2c) with hyper's client.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use berth_engine::{Algorithm, Digest};
use berth_server::sendfile::SENT_ZERO_COPY;
use berth_server::{Config, ServeError};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper::{HeaderMap, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

// ---- harness -----------------------------------------------------------------

/// A running server; dropping it without [`Server::stop`] aborts it.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

/// A data directory that outlives server restarts.
struct Data {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Data {
    fn new() -> Data {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data");
        Data { _dir: dir, path }
    }
}

impl Server {
    async fn start(data: &Data) -> Server {
        Server::start_with(data.path.clone(), |_| {}).await
    }

    async fn start_with(data_dir: PathBuf, f: impl FnOnce(&mut Config)) -> Server {
        let mut config = Config::new(data_dir);
        f(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(berth_server::serve(config, listener, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful shutdown; returns what `serve` returned.
    async fn stop(mut self) -> Result<(), ServeError> {
        self.signal_stop();
        self.join().await
    }

    /// Sends the shutdown signal without waiting.
    fn signal_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `serve` to return.
    async fn join(mut self) -> Result<(), ServeError> {
        self.task.take().expect("task").await.expect("serve task")
    }

    fn req(&self, method: &str, path: &str) -> Req {
        Req {
            addr: self.addr,
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: TestBody::Chunks {
                chunks: VecDeque::new(),
                exact: true,
            },
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.req("GET", path).send().await
    }

    async fn head(&self, path: &str) -> Resp {
        self.req("HEAD", path).send().await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.req("DELETE", path).send().await
    }

    /// Pushes `data` monolithically; returns its digest.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::of(Algorithm::Sha256, data);
        let r = self
            .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(data)
            .send()
            .await;
        assert_eq!(r.status, 201, "push blob: {}", r.text());
        pushed_sizes().insert(d.to_string(), data.len() as u64);
        d
    }

    /// Pushes a manifest; returns the response.
    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Resp {
        self.req("PUT", &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body)
            .send()
            .await
    }

    /// Pushes a config and a layer and an image manifest over them (by tag
    /// if given, else by digest); returns the manifest's bytes and digest.
    async fn push_image(&self, repo: &str, tag: Option<&str>, seed: &str) -> (Vec<u8>, Digest) {
        let config = self
            .push_blob(repo, format!("{{\"seed\":\"{seed}\"}}").as_bytes())
            .await;
        let layer = self
            .push_blob(repo, format!("layer {seed}").as_bytes())
            .await;
        let body = image_manifest(&config, &[&layer], None);
        let digest = Digest::of(Algorithm::Sha256, &body);
        let reference = tag.map_or_else(|| digest.to_string(), str::to_owned);
        let r = self
            .put_manifest(repo, &reference, OCI_MANIFEST, &body)
            .await;
        assert_eq!(r.status, 201, "push image: {}", r.text());
        (body, digest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// A request being built.
struct Req {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: TestBody,
}

impl Req {
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    fn body(mut self, b: &[u8]) -> Self {
        self.body = TestBody::Chunks {
            chunks: VecDeque::from([Bytes::copy_from_slice(b)]),
            exact: true,
        };
        self
    }

    /// A body sent as several chunks with chunked transfer encoding.
    fn streamed(mut self, parts: &[&[u8]]) -> Self {
        self.body = TestBody::Chunks {
            chunks: parts.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
            exact: false,
        };
        self
    }

    /// A chunked body whose chunks arrive from `rx` while the request runs.
    fn channel(mut self, rx: mpsc::Receiver<Bytes>) -> Self {
        self.body = TestBody::Channel(rx);
        self
    }

    fn request(self) -> Request<TestBody> {
        let mut b = Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str())
            .header("host", "localhost");
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(self.body).expect("request")
    }

    async fn send(self) -> Resp {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let res = sender.send_request(self.request()).await.expect("send");
        Resp::read(res).await
    }

    async fn send_h2(self) -> Resp {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let mut req = self.request();
        *req.uri_mut() = format!("http://localhost{}", req.uri())
            .parse()
            .expect("uri");
        req.headers_mut().remove("host");
        let res = sender.send_request(req).await.expect("send");
        Resp::read(res).await
    }
}

/// A request body: a few chunks, with or without an exact length, or
/// chunks fed through a channel while the request is in flight.
enum TestBody {
    Chunks {
        chunks: VecDeque<Bytes>,
        exact: bool,
    },
    Channel(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            TestBody::Chunks { chunks, .. } => {
                Poll::Ready(chunks.pop_front().map(|b| Ok(Frame::data(b))))
            }
            TestBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            TestBody::Chunks { chunks, exact } => *exact && chunks.is_empty(),
            TestBody::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TestBody::Chunks {
                chunks,
                exact: true,
            } => SizeHint::with_exact(chunks.iter().map(|c| c.len() as u64).sum()),
            _ => SizeHint::default(),
        }
    }
}

/// A response, read whole.
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    async fn read(res: hyper::Response<hyper::body::Incoming>) -> Resp {
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes().to_vec();
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts the spec's error body and returns its (first) code.
    fn error_code(&self) -> String {
        let v = self.json();
        let e = &v["errors"][0];
        assert!(e["message"].is_string(), "error without message: {v}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        e["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {v}"))
            .to_owned()
    }

    /// Asserts status and error code together.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status; body {}", self.text());
        assert_eq!(self.error_code(), code, "code; body {}", self.text());
    }
}

/// Sizes of the blobs pushed by [`Server::push_blob`], so manifests built
/// by [`image_manifest`] declare the sizes the registry checks.
fn pushed_sizes() -> std::sync::MutexGuard<'static, std::collections::BTreeMap<String, u64>> {
    static SIZES: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    SIZES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A declared size: the pushed blob's, or 10 for blobs never pushed.
fn size_of(d: &Digest) -> u64 {
    pushed_sizes().get(&d.to_string()).copied().unwrap_or(10)
}

fn image_manifest(config: &Digest, layers: &[&Digest], extra: Option<Value>) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "digest": config.to_string(), "size": size_of(config)},
        "layers": layers.iter().map(|l| json!({"mediaType": LAYER_TYPE, "digest": l.to_string(), "size": size_of(l)})).collect::<Vec<_>>(),
    });
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    serde_json::to_vec(&m).expect("json")
}

fn index_manifest(media_type: &str, child_type: &str, children: &[&Digest]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": children.iter().map(|c| json!({"mediaType": child_type, "digest": c.to_string(), "size": 100})).collect::<Vec<_>>(),
    }))
    .expect("json")
}

fn sha256(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

// ---- base, request ids, routing ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_endpoint_and_request_ids() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let r = s.get("/v2/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({}));
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let generated = r.header("x-request-id").expect("request id").to_owned();
    let r2 = s.get("/v2").await;
    assert_eq!(r2.status, 200);
    assert_ne!(
        r2.header("x-request-id"),
        Some(generated.as_str()),
        "ids are unique"
    );

    let r = s
        .req("GET", "/v2/")
        .header("x-request-id", "abc-123")
        .send()
        .await;
    assert_eq!(
        r.header("x-request-id"),
        Some("abc-123"),
        "a client id is echoed"
    );
    let r = s.head("/v2/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_wrong_methods_bad_names_and_digests() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let good = sha256(b"x");

    let r = s.get("/v3/").await;
    r.assert_error(404, "UNSUPPORTED");
    let r = s.get("/v2/repo/nonsense/x").await;
    r.assert_error(404, "UNSUPPORTED");

    let r = s.req("POST", "/v2/repo/tags/list").send().await;
    r.assert_error(405, "UNSUPPORTED");
    assert_eq!(r.header("allow"), Some("GET"));
    let r = s
        .req("PATCH", &format!("/v2/repo/manifests/{good}"))
        .send()
        .await;
    r.assert_error(405, "UNSUPPORTED");
    let r = s.get("/v2/repo/blobs/uploads/").await;
    r.assert_error(405, "UNSUPPORTED");
    assert_eq!(r.header("allow"), Some("POST"));

    for name in ["UPPER", "a..b", "a/", "-a", "a__-b"] {
        let r = s.get(&format!("/v2/{name}/tags/list")).await;
        r.assert_error(400, "NAME_INVALID");
    }
    let r = s.get(&format!("/v2/Bad/blobs/{good}")).await;
    r.assert_error(400, "NAME_INVALID");
    let r = s.req("POST", "/v2/Bad/blobs/uploads/").send().await;
    r.assert_error(400, "NAME_INVALID");

    for digest in [
        "sha256:abc",
        "sha256:ZZZZ",
        "nocolon",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        let r = s.get(&format!("/v2/repo/blobs/{digest}")).await;
        r.assert_error(400, "DIGEST_INVALID");
    }
    // A manifest reference that is neither a tag nor a digest names no
    // manifest (distribution's router, conformance `.INVALID_MANIFEST_NAME`).
    for reference in ["sha256:nothex", ".INVALID_MANIFEST_NAME", "-bad", "md5:abc"] {
        let r = s.get(&format!("/v2/repo/manifests/{reference}")).await;
        r.assert_error(404, "MANIFEST_UNKNOWN");
        let r = s.head(&format!("/v2/repo/manifests/{reference}")).await;
        assert_eq!(r.status, 404, "HEAD {reference}");
        assert!(r.body.is_empty());
    }
    let r = s.get("/v2/repo/referrers/sha256:short").await;
    r.assert_error(400, "DIGEST_INVALID");
    let r = s
        .req(
            "POST",
            &format!("/v2/repo/blobs/uploads/?digest=sha256:{}", "0".repeat(63)),
        )
        .body(b"x")
        .send()
        .await;
    r.assert_error(400, "DIGEST_INVALID");

    // Percent-encoded digests are decoded.
    s.push_blob("repo", b"x").await;
    let encoded = good.to_string().replace(':', "%3A");
    let r = s.get(&format!("/v2/repo/blobs/{encoded}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"x");
}

// ---- blobs --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolithic_uploads() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let blob = b"hello, berth";
    let d = sha256(blob);

    // Single POST.
    let r = s
        .req("POST", &format!("/v2/a/b/blobs/uploads/?digest={d}"))
        .body(blob)
        .send()
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/a/b/blobs/{d}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));

    let r = s.get(&format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, blob);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        r.header("content-length"),
        Some(blob.len().to_string().as_str())
    );

    let r = s.head(&format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length"),
        Some(blob.len().to_string().as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));

    // Not readable in another repository.
    s.get(&format!("/v2/other/blobs/{d}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    let r = s.head(&format!("/v2/other/blobs/{d}")).await;
    assert_eq!(r.status, 404);

    // POST then PUT.
    let blob2 = b"second blob";
    let d2 = sha256(blob2);
    let r = s.req("POST", "/v2/a/b/blobs/uploads/").send().await;
    assert_eq!(r.status, 202);
    let loc = r.header("location").expect("location").to_owned();
    assert!(loc.starts_with("/v2/a/b/blobs/uploads/"), "{loc}");
    assert_eq!(r.header("range"), Some("0-0"));
    let uuid = r.header("docker-upload-uuid").expect("uuid");
    assert!(loc.ends_with(uuid));
    let r = s
        .req("PUT", &format!("{loc}?digest={d2}"))
        .body(blob2)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/a/b/blobs/{d2}").as_str())
    );
    assert_eq!(s.get(&format!("/v2/a/b/blobs/{d2}")).await.body, blob2);
    // The session is gone.
    s.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");

    // A monolithic POST whose digest does not match stores nothing.
    let wrong = sha256(b"something else");
    let r = s
        .req("POST", &format!("/v2/a/b/blobs/uploads/?digest={wrong}"))
        .body(blob)
        .send()
        .await;
    r.assert_error(400, "DIGEST_INVALID");
    s.head(&format!("/v2/a/b/blobs/{wrong}")).await;
    assert_eq!(s.head(&format!("/v2/a/b/blobs/{wrong}")).await.status, 404);

    // An empty blob.
    let empty = sha256(b"");
    let r = s
        .req("POST", &format!("/v2/a/b/blobs/uploads/?digest={empty}"))
        .send()
        .await;
    assert_eq!(r.status, 201);
    let r = s.get(&format!("/v2/a/b/blobs/{empty}")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_and_out_of_order_chunks() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let blob: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let d = sha256(&blob);
    let (c1, rest) = blob.split_at(1000);
    let (c2, c3) = rest.split_at(1000);

    let r = s
        .req("POST", "/v2/chunky/blobs/uploads/")
        .header("content-length", "0")
        .send()
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("oci-chunk-min-length"), Some("1048576"));
    let loc = r.header("location").expect("location").to_owned();
    let uuid = r.header("docker-upload-uuid").expect("uuid").to_owned();

    let r = s
        .req("PATCH", &loc)
        .header("content-range", "0-999")
        .body(c1)
        .send()
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.header("range"), Some("0-999"));
    assert_eq!(r.header("docker-upload-uuid"), Some(uuid.as_str()));
    let loc = r.header("location").expect("location").to_owned();

    // Out of order: starts past the end, or re-sends the first chunk.
    for cr in ["2000-2999", "0-999", "500-1499"] {
        let (a, b): (u64, u64) = {
            let (a, b) = cr.split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let body = &blob[a as usize..=b as usize];
        let r = s
            .req("PATCH", &loc)
            .header("content-range", cr)
            .body(body)
            .send()
            .await;
        r.assert_error(416, "RANGE_INVALID");
        assert_eq!(r.header("range"), Some("0-999"), "{cr}");
        assert_eq!(r.header("location"), Some(loc.as_str()));
    }

    // Status.
    let r = s.get(&loc).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("range"), Some("0-999"));
    assert_eq!(r.header("location"), Some(loc.as_str()));
    assert_eq!(r.header("docker-upload-uuid"), Some(uuid.as_str()));

    // A chunk without Content-Range appends, here streamed in pieces.
    let (c2a, c2b) = c2.split_at(300);
    let r = s.req("PATCH", &loc).streamed(&[c2a, c2b]).send().await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.header("range"), Some("0-1999"));

    // Content-Range that disagrees with Content-Length; malformed ranges.
    let r = s
        .req("PATCH", &loc)
        .header("content-range", "2000-2009")
        .body(&c3[..5])
        .send()
        .await;
    r.assert_error(400, "SIZE_INVALID");
    let r = s
        .req("PATCH", &loc)
        .header("content-range", "2000-2009")
        .streamed(&[&c3[..5]])
        .send()
        .await;
    r.assert_error(400, "SIZE_INVALID");
    let r = s
        .req("PATCH", &loc)
        .header("content-range", "banana")
        .body(c3)
        .send()
        .await;
    r.assert_error(400, "BLOB_UPLOAD_INVALID");
    assert_eq!(
        s.get(&loc).await.header("range"),
        Some("0-1999"),
        "failed chunks change nothing"
    );

    // The last chunk comes with the closing PUT.
    let r = s
        .req("PUT", &format!("{loc}?digest={d}"))
        .header("content-range", "2000-2999")
        .body(c3)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(s.get(&format!("/v2/chunky/blobs/{d}")).await.body, blob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_streamed_chunk_and_completion_without_body() {
    let data = Data::new();
    let s = Server::start(&data).await;
    // Larger than the server's write batch, in odd pieces.
    let blob: Vec<u8> = (0..3_500_000u32)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    let d = sha256(&blob);
    let r = s.req("POST", "/v2/big/blobs/uploads/").send().await;
    let loc = r.header("location").expect("location").to_owned();
    let pieces: Vec<&[u8]> = blob.chunks(777_777).collect();
    let r = s.req("PATCH", &loc).streamed(&pieces).send().await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        r.header("range"),
        Some(format!("0-{}", blob.len() - 1).as_str())
    );
    // A large chunk at the wrong offset gets a clean 416, not a reset.
    let r = s
        .req("PATCH", &loc)
        .header("content-range", &format!("0-{}", blob.len() - 1))
        .body(&blob)
        .send()
        .await;
    r.assert_error(416, "RANGE_INVALID");
    assert_eq!(
        r.header("range"),
        Some(format!("0-{}", blob.len() - 1).as_str())
    );
    let r = s.req("PUT", &format!("{loc}?digest={d}")).send().await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.get(&format!("/v2/big/blobs/{d}")).await;
    assert_eq!(r.body.len(), blob.len());
    assert!(r.body == blob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_keeps_the_session() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let r = s.req("POST", "/v2/r/blobs/uploads/").send().await;
    let loc = r.header("location").expect("location").to_owned();
    let r = s
        .req("PATCH", &loc)
        .header("content-range", "0-4")
        .body(b"12345")
        .send()
        .await;
    assert_eq!(r.status, 202);
    let wrong = sha256(b"not these bytes");
    let r = s.req("PUT", &format!("{loc}?digest={wrong}")).send().await;
    r.assert_error(400, "DIGEST_INVALID");
    assert_eq!(s.head(&format!("/v2/r/blobs/{wrong}")).await.status, 404);
    // Missing and malformed digests.
    s.req("PUT", &loc)
        .send()
        .await
        .assert_error(400, "DIGEST_INVALID");
    s.req("PUT", &format!("{loc}?digest=sha256:zz"))
        .send()
        .await
        .assert_error(400, "DIGEST_INVALID");
    // The session is intact and completes with the right digest.
    let r = s.get(&loc).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("range"), Some("0-4"));
    let right = sha256(b"12345");
    let r = s.req("PUT", &format!("{loc}?digest={right}")).send().await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_and_blake3_uploads() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let blob = b"hashed another way";

    // sha512, chunked, declared with digest-algorithm.
    let d512 = Digest::of(Algorithm::Sha512, blob);
    assert!(d512.as_str().starts_with("sha512:"));
    let r = s
        .req("POST", "/v2/algos/blobs/uploads/?digest-algorithm=sha512")
        .send()
        .await;
    assert_eq!(r.status, 202);
    let loc = r.header("location").expect("location").to_owned();
    let r = s
        .req("PATCH", &loc)
        .header("content-range", "0-5")
        .body(&blob[..6])
        .send()
        .await;
    assert_eq!(r.status, 202);
    let r = s
        .req("PUT", &format!("{loc}?digest={d512}"))
        .body(&blob[6..])
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(d512.as_str()));
    assert_eq!(s.get(&format!("/v2/algos/blobs/{d512}")).await.body, blob);

    // blake3, monolithic.
    let db3 = Digest::of(Algorithm::Blake3, blob);
    let r = s
        .req("POST", &format!("/v2/algos/blobs/uploads/?digest={db3}"))
        .body(blob)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.get(&format!("/v2/algos/blobs/{db3}")).await.body, blob);

    // blake3 declared up front.
    let r = s
        .req("POST", "/v2/algos/blobs/uploads/?digest-algorithm=blake3")
        .send()
        .await;
    assert_eq!(r.status, 202);

    // sha512 named only at the end of a default (sha256) session.
    let other = b"late algorithm";
    let dl = Digest::of(Algorithm::Sha512, other);
    let r = s.req("POST", "/v2/algos/blobs/uploads/").send().await;
    let loc = r.header("location").expect("location").to_owned();
    let r = s
        .req("PUT", &format!("{loc}?digest={dl}"))
        .body(other)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    // Unsupported algorithms.
    let r = s
        .req("POST", "/v2/algos/blobs/uploads/?digest-algorithm=md5")
        .send()
        .await;
    r.assert_error(400, "DIGEST_INVALID");
    let r = s
        .req("POST", "/v2/algos/blobs/uploads/?digest-algorithm=sha384")
        .send()
        .await;
    r.assert_error(400, "DIGEST_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repository_mounts() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let d = s.push_blob("src/repo", b"shared layer").await;

    // With from.
    let r = s
        .req(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
        )
        .send()
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/dst/blobs/{d}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(
        s.get(&format!("/v2/dst/blobs/{d}")).await.body,
        b"shared layer"
    );

    // From a repository without the blob: a new session instead.
    let r = s
        .req(
            "POST",
            &format!("/v2/dst2/blobs/uploads/?mount={d}&from=empty/repo"),
        )
        .send()
        .await;
    assert_eq!(r.status, 202);
    assert!(r
        .header("location")
        .expect("location")
        .starts_with("/v2/dst2/blobs/uploads/"));
    assert_eq!(s.head(&format!("/v2/dst2/blobs/{d}")).await.status, 404);

    // Without from: mounted if stored anywhere.
    let r = s
        .req("POST", &format!("/v2/dst3/blobs/uploads/?mount={d}"))
        .send()
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(s.head(&format!("/v2/dst3/blobs/{d}")).await.status, 200);

    // An unknown blob: a new session.
    let unknown = sha256(b"never pushed");
    let r = s
        .req("POST", &format!("/v2/dst4/blobs/uploads/?mount={unknown}"))
        .send()
        .await;
    assert_eq!(r.status, 202);
    assert!(r.header("docker-upload-uuid").is_some());

    // A malformed mount digest.
    let r = s
        .req(
            "POST",
            "/v2/dst5/blobs/uploads/?mount=sha256:nope&from=src/repo",
        )
        .send()
        .await;
    r.assert_error(400, "DIGEST_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_unknown_uploads() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let r = s.req("POST", "/v2/c/blobs/uploads/").send().await;
    let loc = r.header("location").expect("location").to_owned();
    let r = s.req("PATCH", &loc).body(b"partial").send().await;
    assert_eq!(r.status, 202);
    let r = s.delete(&loc).await;
    assert_eq!(r.status, 204);
    s.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.delete(&loc)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.req("PATCH", &loc)
        .body(b"x")
        .send()
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");

    let fake = format!("/v2/c/blobs/uploads/{}", "0".repeat(32));
    s.get(&fake).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.get("/v2/c/blobs/uploads/not-an-id")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");

    // A session belongs to its repository.
    let r = s.req("POST", "/v2/c/blobs/uploads/").send().await;
    let id = r.header("docker-upload-uuid").expect("uuid").to_owned();
    s.get(&format!("/v2/other/blobs/uploads/{id}"))
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

/// Blobs over 4 MiB are streamed in chunks; every byte and the length must
/// come through exactly, whole and for ranges crossing chunk boundaries.
#[tokio::test]
async fn large_blobs_stream_in_chunks() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let blob: Vec<u8> = (0..9_000_000u32).map(|i| (i % 253) as u8).collect();
    let d = s.push_blob("big", &blob).await;
    let path = format!("/v2/big/blobs/{d}");
    let zero_copy_before = SENT_ZERO_COPY.load(Ordering::Relaxed);
    let r = s.req("GET", &path).send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("9000000"));
    assert!(r.body == blob, "streamed body differs");
    let r = s
        .req("GET", &path)
        .header("range", "bytes=4194000-8400000")
        .send()
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-length"), Some("4206001"));
    assert!(
        r.body[..] == blob[4_194_000..=8_400_000],
        "ranged body differs"
    );
    // Both bodies left through sendfile(2), not copied out of the map.
    let zero_copy = SENT_ZERO_COPY.load(Ordering::Relaxed) - zero_copy_before;
    assert!(
        zero_copy >= 9_000_000 + 4_206_001,
        "sent zero-copy: {zero_copy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let blob = b"0123456789abcdefghij"; // 20 bytes
    let d = s.push_blob("ranges", blob).await;
    let path = format!("/v2/ranges/blobs/{d}");

    let cases = [
        ("bytes=0-3", "bytes 0-3/20", &blob[0..4]),
        ("bytes=5-", "bytes 5-19/20", &blob[5..]),
        ("bytes=-3", "bytes 17-19/20", &blob[17..]),
        ("bytes=18-100", "bytes 18-19/20", &blob[18..]),
        ("bytes=-50", "bytes 0-19/20", &blob[..]),
    ];
    for (range, content_range, expect) in cases {
        let r = s.req("GET", &path).header("range", range).send().await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
        assert_eq!(r.body, expect, "{range}");
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    }

    for range in ["bytes=20-", "bytes=25-30", "bytes=-0"] {
        let r = s.req("GET", &path).header("range", range).send().await;
        r.assert_error(416, "RANGE_INVALID");
        assert_eq!(r.header("content-range"), Some("bytes */20"), "{range}");
    }
    for range in ["bytes=abc", "bytes=5-2", "bytes=1-x", "bytes="] {
        let r = s.req("GET", &path).header("range", range).send().await;
        r.assert_error(416, "RANGE_INVALID");
        assert_eq!(r.header("content-range"), Some("bytes */20"), "{range}");
    }
    // Ignored: several ranges, other units; and HEAD.
    for range in ["bytes=0-1,4-5", "items=0-1"] {
        let r = s.req("GET", &path).header("range", range).send().await;
        assert_eq!(r.status, 200, "{range}");
        assert_eq!(r.body, blob);
    }
    let r = s
        .req("HEAD", &path)
        .header("range", "bytes=0-1")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("20"));
    // Unknown blob with a range: still 404.
    let r = s
        .req("GET", &format!("/v2/ranges/blobs/{}", sha256(b"nope")))
        .header("range", "bytes=0-1")
        .send()
        .await;
    r.assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_delete() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let d = s.push_blob("del", b"to be deleted").await;
    let path = format!("/v2/del/blobs/{d}");
    let r = s.delete(&path).await;
    assert_eq!(r.status, 202);
    s.get(&path).await.assert_error(404, "BLOB_UNKNOWN");
    s.delete(&path).await.assert_error(404, "BLOB_UNKNOWN");
    s.delete("/v2/del/blobs/sha256:bad")
        .await
        .assert_error(400, "DIGEST_INVALID");
}

// ---- manifests ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_of_each_media_type() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let repo = "lib/app";

    // OCI image manifest by tag.
    let (body, digest) = s.push_image(repo, Some("v1"), "oci").await;
    for reference in ["v1".to_owned(), digest.to_string()] {
        let r = s.get(&format!("/v2/{repo}/manifests/{reference}")).await;
        assert_eq!(r.status, 200, "{reference}");
        assert_eq!(r.body, body);
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        let r = s.head(&format!("/v2/{repo}/manifests/{reference}")).await;
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    }

    // Docker schema 2 manifest, with a foreign layer that is not pushed.
    let config = s.push_blob(repo, b"{\"docker\":true}").await;
    let layer = s.push_blob(repo, b"docker layer").await;
    let foreign = sha256(b"windows base layer, hosted elsewhere");
    let docker = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config.to_string(), "size": 15},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": foreign.to_string(), "size": 99, "urls": ["https://example.com/layer"]},
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer.to_string(), "size": 12},
        ],
    }))
    .unwrap();
    let r = s
        .put_manifest(repo, "docker", DOCKER_MANIFEST, &docker)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let docker_digest = sha256(&docker);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(docker_digest.as_str())
    );
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/{repo}/manifests/{docker_digest}").as_str())
    );
    assert!(r.header("oci-subject").is_none());
    let r = s.get(&format!("/v2/{repo}/manifests/docker")).await;
    assert_eq!(r.header("content-type"), Some(DOCKER_MANIFEST));
    assert_eq!(r.body, docker);

    // OCI index over both.
    let index = index_manifest(OCI_INDEX, OCI_MANIFEST, &[&digest, &docker_digest]);
    let r = s.put_manifest(repo, "multi", OCI_INDEX, &index).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.get(&format!("/v2/{repo}/manifests/multi")).await;
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.body, index);

    // Docker manifest list.
    let list = index_manifest(DOCKER_LIST, DOCKER_MANIFEST, &[&docker_digest]);
    let r = s.put_manifest(repo, "list", DOCKER_LIST, &list).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        s.get(&format!("/v2/{repo}/manifests/list"))
            .await
            .header("content-type"),
        Some(DOCKER_LIST)
    );

    // Without Content-Type the body's mediaType decides.
    let r = s
        .req("PUT", &format!("/v2/{repo}/manifests/untyped"))
        .body(&body)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.get(&format!("/v2/{repo}/manifests/untyped")).await;
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));

    // Unknown manifests.
    s.get(&format!("/v2/{repo}/manifests/nope"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    s.get(&format!("/v2/{repo}/manifests/{}", sha256(b"?")))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        s.head(&format!("/v2/{repo}/manifests/nope")).await.status,
        404
    );
    s.get("/v2/no/such/repo/manifests/v1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let repo = "bad";
    let config = s.push_blob(repo, b"{}").await;
    let layer = s.push_blob(repo, b"layer").await;
    let missing = sha256(b"never uploaded");

    // Missing blob.
    let m = image_manifest(&config, &[&layer, &missing], None);
    let r = s.put_manifest(repo, "t", OCI_MANIFEST, &m).await;
    r.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    // A blob in another repository only does not count.
    let elsewhere = s.push_blob("elsewhere", b"elsewhere").await;
    let m = image_manifest(&config, &[&elsewhere], None);
    s.put_manifest(repo, "t", OCI_MANIFEST, &m)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");

    // A descriptor size that is not the stored blob's size.
    let mut wrong_size: Value =
        serde_json::from_slice(&image_manifest(&config, &[&layer], None)).unwrap();
    wrong_size["layers"][0]["size"] = json!(6);
    let r = s
        .put_manifest(
            repo,
            "t",
            OCI_MANIFEST,
            &serde_json::to_vec(&wrong_size).unwrap(),
        )
        .await;
    r.assert_error(400, "MANIFEST_INVALID");
    assert!(r.text().contains("size 6"), "{}", r.text());
    // The same blob declared with two sizes.
    let mut two_sizes: Value =
        serde_json::from_slice(&image_manifest(&config, &[&layer, &layer], None)).unwrap();
    two_sizes["layers"][1]["size"] = json!(99);
    s.put_manifest(
        repo,
        "t",
        OCI_MANIFEST,
        &serde_json::to_vec(&two_sizes).unwrap(),
    )
    .await
    .assert_error(400, "MANIFEST_INVALID");

    // Index with a missing child.
    let idx = index_manifest(OCI_INDEX, OCI_MANIFEST, &[&missing]);
    s.put_manifest(repo, "t", OCI_INDEX, &idx)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");

    // Content-Type contradicting mediaType.
    let good = image_manifest(&config, &[&layer], None);
    s.put_manifest(repo, "t", DOCKER_MANIFEST, &good)
        .await
        .assert_error(400, "MANIFEST_INVALID");
    // Unsupported type.
    let r = s
        .put_manifest(
            repo,
            "t",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            b"{\"schemaVersion\":1}",
        )
        .await;
    r.assert_error(415, "UNSUPPORTED");
    // Not JSON; wrong schemaVersion; bad descriptor digest.
    s.put_manifest(repo, "t", OCI_MANIFEST, b"{nope")
        .await
        .assert_error(400, "MANIFEST_INVALID");
    let v1 = serde_json::to_vec(&json!({"schemaVersion": 1, "mediaType": OCI_MANIFEST, "config": {"mediaType": "c", "digest": config.to_string(), "size": 2}, "layers": []})).unwrap();
    s.put_manifest(repo, "t", OCI_MANIFEST, &v1)
        .await
        .assert_error(400, "MANIFEST_INVALID");
    let bad_digest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": "c", "digest": "sha256:xyz", "size": 2}, "layers": []})).unwrap();
    s.put_manifest(repo, "t", OCI_MANIFEST, &bad_digest)
        .await
        .assert_error(400, "MANIFEST_INVALID");

    // Digest reference that does not match the body.
    let r = s
        .put_manifest(repo, &missing.to_string(), OCI_MANIFEST, &good)
        .await;
    r.assert_error(400, "DIGEST_INVALID");
    // Invalid tag reference: a PUT says so.
    s.put_manifest(repo, "-bad", OCI_MANIFEST, &good)
        .await
        .assert_error(400, "TAG_INVALID");
    s.put_manifest(repo, ".INVALID_MANIFEST_NAME", OCI_MANIFEST, &good)
        .await
        .assert_error(400, "TAG_INVALID");

    // Nothing of the above was stored.
    s.get(&format!("/v2/{repo}/manifests/t"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_size_limit() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let repo = "big";
    let config = s.push_blob(repo, b"{}").await;
    // Exactly 4 MiB: accepted.
    let base = image_manifest(&config, &[], Some(json!({"annotations": {"pad": ""}})));
    let pad = (4 << 20) - base.len();
    let big = image_manifest(
        &config,
        &[],
        Some(json!({"annotations": {"pad": "x".repeat(pad)}})),
    );
    assert_eq!(big.len(), 4 << 20);
    let r = s.put_manifest(repo, "max", OCI_MANIFEST, &big).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        s.get(&format!("/v2/{repo}/manifests/max")).await.body.len(),
        4 << 20
    );

    // One byte more: 413, by Content-Length or while streaming.
    let too_big = image_manifest(
        &config,
        &[],
        Some(json!({"annotations": {"pad": "x".repeat(pad + 1)}})),
    );
    let r = s.put_manifest(repo, "over", OCI_MANIFEST, &too_big).await;
    r.assert_error(413, "SIZE_INVALID");
    let (a, b) = too_big.split_at(1 << 20);
    let r = s
        .req("PUT", &format!("/v2/{repo}/manifests/over"))
        .header("content-type", OCI_MANIFEST)
        .streamed(&[a, b])
        .send()
        .await;
    r.assert_error(413, "SIZE_INVALID");
    s.get(&format!("/v2/{repo}/manifests/over"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_by_digest_with_tags() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let repo = "multi/tag";
    let config = s.push_blob(repo, b"{\"a\":1}").await;
    let m = image_manifest(&config, &[], None);
    let d = sha256(&m);
    let r = s
        .req(
            "PUT",
            &format!("/v2/{repo}/manifests/{d}?tag=1.0&tag=latest&tag=1.0"),
        )
        .header("content-type", OCI_MANIFEST)
        .body(&m)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header_all("oci-tag"), ["1.0", "latest"]);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let tags = s.get(&format!("/v2/{repo}/tags/list")).await.json();
    assert_eq!(tags, json!({"name": repo, "tags": ["1.0", "latest"]}));
    assert_eq!(s.get(&format!("/v2/{repo}/manifests/latest")).await.body, m);

    // An invalid tag parameter stores nothing.
    let m2 = image_manifest(&config, &[], Some(json!({"annotations": {"n": "2"}})));
    let d2 = sha256(&m2);
    let r = s
        .req("PUT", &format!("/v2/{repo}/manifests/{d2}?tag=ok&tag=-bad"))
        .header("content-type", OCI_MANIFEST)
        .body(&m2)
        .send()
        .await;
    r.assert_error(400, "TAG_INVALID");
    assert_eq!(
        s.head(&format!("/v2/{repo}/manifests/{d2}")).await.status,
        404
    );

    // By sha512 digest.
    let d512 = Digest::of(Algorithm::Sha512, &m2);
    let r = s
        .put_manifest(repo, &d512.to_string(), OCI_MANIFEST, &m2)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(d512.as_str()));
    assert_eq!(
        s.get(&format!("/v2/{repo}/manifests/{d512}")).await.body,
        m2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_and_oci_subject() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let repo = "refs";
    let (_, subject) = s.push_image(repo, Some("app"), "subject").await;
    let empty = s.push_blob(repo, b"{}").await;
    let sbom_blob = s.push_blob(repo, b"sbom contents").await;

    let subject_desc =
        json!({"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": 123});
    let sbom = image_manifest(
        &empty,
        &[&sbom_blob],
        Some(
            json!({"artifactType": "application/vnd.example.sbom.v1", "subject": subject_desc, "annotations": {"org.example.kind": "sbom"}}),
        ),
    );
    let r = s
        .put_manifest(repo, &sha256(&sbom).to_string(), OCI_MANIFEST, &sbom)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("oci-subject"), Some(subject.as_str()));

    // A signature whose artifact type comes from its config media type.
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.signature.v1", "digest": empty.to_string(), "size": 2},
        "layers": [], "subject": subject_desc,
    }))
    .unwrap();
    let r = s
        .put_manifest(repo, &sha256(&sig).to_string(), OCI_MANIFEST, &sig)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("oci-subject"), Some(subject.as_str()));

    let r = s.get(&format!("/v2/{repo}/referrers/{subject}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert!(r.header("oci-filters-applied").is_none());
    let index = r.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 2);
    let find = |t: &str| {
        manifests
            .iter()
            .find(|m| m["artifactType"] == t)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let sbom_desc = find("application/vnd.example.sbom.v1");
    assert_eq!(sbom_desc["digest"], sha256(&sbom).to_string());
    assert_eq!(sbom_desc["size"], sbom.len());
    assert_eq!(sbom_desc["mediaType"], OCI_MANIFEST);
    assert_eq!(
        sbom_desc["annotations"],
        json!({"org.example.kind": "sbom"})
    );
    let sig_desc = find("application/vnd.example.signature.v1");
    assert_eq!(sig_desc["digest"], sha256(&sig).to_string());

    // Filtered.
    let r = s
        .get(&format!(
            "/v2/{repo}/referrers/{subject}?artifactType=application/vnd.example.sbom.v1"
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let m = r.json()["manifests"].as_array().expect("manifests").clone();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["digest"], sha256(&sbom).to_string());
    // Percent-encoded filter value.
    let r = s
        .get(&format!(
            "/v2/{repo}/referrers/{subject}?artifactType=application%2Fvnd.example.signature.v1"
        ))
        .await;
    assert_eq!(r.json()["manifests"].as_array().map(Vec::len), Some(1));
    let r = s
        .get(&format!(
            "/v2/{repo}/referrers/{subject}?artifactType=application/none"
        ))
        .await;
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(r.json()["manifests"], json!([]));

    // Unknown subject and unknown repository: 200 with an empty index.
    let r = s
        .get(&format!("/v2/{repo}/referrers/{}", sha256(b"unknown")))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"], json!([]));
    let r = s.get(&format!("/v2/nobody/here/referrers/{subject}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"], json!([]));

    // A referrer may be pushed before its subject exists.
    let later = sha256(b"subject pushed later");
    let early = image_manifest(
        &empty,
        &[],
        Some(
            json!({"subject": {"mediaType": OCI_MANIFEST, "digest": later.to_string(), "size": 1}}),
        ),
    );
    let r = s.put_manifest(repo, "early", OCI_MANIFEST, &early).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.get(&format!("/v2/{repo}/referrers/{later}")).await;
    let m = r.json()["manifests"].as_array().expect("manifests").clone();
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0]["artifactType"],
        "application/vnd.oci.image.config.v1+json"
    );

    // Deleting a referrer removes it from the list.
    let r = s
        .delete(&format!("/v2/{repo}/manifests/{}", sha256(&sig)))
        .await;
    assert_eq!(r.status, 202);
    let r = s.get(&format!("/v2/{repo}/referrers/{subject}")).await;
    assert_eq!(r.json()["manifests"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_delete_by_tag_and_digest() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let repo = "deletes";
    let (body, digest) = s.push_image(repo, Some("keep"), "d").await;
    let r = s.put_manifest(repo, "drop", OCI_MANIFEST, &body).await;
    assert_eq!(r.status, 201);

    // By tag: the tag goes, the manifest stays.
    let r = s.delete(&format!("/v2/{repo}/manifests/drop")).await;
    assert_eq!(r.status, 202);
    s.get(&format!("/v2/{repo}/manifests/drop"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        s.get(&format!("/v2/{repo}/manifests/{digest}"))
            .await
            .status,
        200
    );
    s.delete(&format!("/v2/{repo}/manifests/drop"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");

    // By digest: the manifest and its remaining tags go.
    let r = s.delete(&format!("/v2/{repo}/manifests/{digest}")).await;
    assert_eq!(r.status, 202);
    s.get(&format!("/v2/{repo}/manifests/{digest}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    s.get(&format!("/v2/{repo}/manifests/keep"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        s.get(&format!("/v2/{repo}/tags/list")).await.json()["tags"],
        json!([])
    );
    s.delete(&format!("/v2/{repo}/manifests/{digest}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

// ---- listings -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_pagination() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let repo = "paged/repo";
    let (body, _) = s.push_image(repo, Some("b"), "p").await;
    for tag in ["d", "a", "C", "c", "e"] {
        assert_eq!(
            s.put_manifest(repo, tag, OCI_MANIFEST, &body).await.status,
            201
        );
    }
    let all = json!(["C", "a", "b", "c", "d", "e"]); // byte order
    let r = s.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), json!({"name": repo, "tags": all}));
    assert!(r.header("link").is_none());

    // Follow Link headers two at a time.
    let mut url = format!("/v2/{repo}/tags/list?n=2");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = s.get(&url).await;
        assert_eq!(r.status, 200);
        let tags = r.json()["tags"].as_array().expect("tags").clone();
        assert!(tags.len() <= 2);
        seen.extend(tags);
        pages += 1;
        match r.header("link") {
            Some(link) => {
                assert!(link.ends_with(">; rel=\"next\""), "{link}");
                url = link
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .expect("url")
                    .to_owned();
                assert!(url.contains("n=2"), "{url}");
            }
            None => break,
        }
    }
    assert_eq!(Value::Array(seen), all);
    assert_eq!(pages, 3);

    let r = s.get(&format!("/v2/{repo}/tags/list?n=2&last=b")).await;
    assert_eq!(r.json()["tags"], json!(["c", "d"]));
    assert_eq!(
        r.header("link"),
        Some(format!("</v2/{repo}/tags/list?last=d&n=2>; rel=\"next\"").as_str())
    );
    // last past the end.
    let r = s.get(&format!("/v2/{repo}/tags/list?last=zzz")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tags"], json!([]));
    assert!(r.header("link").is_none());
    // last alone, n alone, n larger than the list.
    assert_eq!(
        s.get(&format!("/v2/{repo}/tags/list?last=c")).await.json()["tags"],
        json!(["d", "e"])
    );
    let r = s.get(&format!("/v2/{repo}/tags/list?n=100")).await;
    assert_eq!(r.json()["tags"], all);
    assert!(r.header("link").is_none());
    // n=0: empty, no Link.
    let r = s.get(&format!("/v2/{repo}/tags/list?n=0")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"name": repo, "tags": []}));
    assert!(r.header("link").is_none());
    // Invalid n.
    for n in ["-1", "abc", "1.5", ""] {
        let r = s.get(&format!("/v2/{repo}/tags/list?n={n}")).await;
        assert_eq!(r.status, 400, "n={n}");
        assert!(!r.error_code().is_empty());
    }
    // Unknown repository.
    s.get("/v2/never/pushed/tags/list")
        .await
        .assert_error(404, "NAME_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_pagination() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let r = s.get("/v2/_catalog").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"repositories": []}));
    for repo in ["b/x", "a", "c/y/z", "a/b"] {
        s.push_blob(repo, repo.as_bytes()).await;
    }
    let all = json!(["a", "a/b", "b/x", "c/y/z"]);
    assert_eq!(
        s.get("/v2/_catalog").await.json(),
        json!({"repositories": all})
    );
    let r = s.get("/v2/_catalog?n=3").await;
    assert_eq!(r.json()["repositories"], json!(["a", "a/b", "b/x"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/_catalog?last=b/x&n=3>; rel=\"next\"")
    );
    let r = s.get("/v2/_catalog?n=3&last=b/x").await;
    assert_eq!(r.json()["repositories"], json!(["c/y/z"]));
    assert!(r.header("link").is_none());
    let r = s.get("/v2/_catalog?n=0").await;
    assert_eq!(r.json()["repositories"], json!([]));
    assert!(r.header("link").is_none());
    assert_eq!(
        s.get("/v2/_catalog?last=zz").await.json()["repositories"],
        json!([])
    );
    let r = s.get("/v2/_catalog?n=x").await;
    assert_eq!(r.status, 400);
    assert!(!r.error_code().is_empty());
    let r = s.req("POST", "/v2/_catalog").send().await;
    r.assert_error(405, "UNSUPPORTED");
}

// ---- modes, protocols, lifecycle -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let (body, digest) = s.push_image("ro", Some("v1"), "ro").await;
    let blob = s.push_blob("ro", b"ro blob").await;
    s.stop().await.expect("clean stop");

    let s = Server::start_with(data.path.clone(), |c| c.read_only = true).await;
    // Reads work.
    assert_eq!(s.get("/v2/ro/manifests/v1").await.body, body);
    assert_eq!(
        s.get(&format!("/v2/ro/blobs/{blob}")).await.body,
        b"ro blob"
    );
    assert_eq!(s.get("/v2/ro/tags/list").await.status, 200);
    // Writes are 405 UNSUPPORTED.
    s.req("POST", "/v2/ro/blobs/uploads/")
        .send()
        .await
        .assert_error(405, "UNSUPPORTED");
    let d = sha256(b"new");
    s.req("POST", &format!("/v2/ro/blobs/uploads/?digest={d}"))
        .body(b"new")
        .send()
        .await
        .assert_error(405, "UNSUPPORTED");
    s.req(
        "POST",
        &format!("/v2/ro2/blobs/uploads/?mount={blob}&from=ro"),
    )
    .send()
    .await
    .assert_error(405, "UNSUPPORTED");
    s.put_manifest("ro", "v2", OCI_MANIFEST, &body)
        .await
        .assert_error(405, "UNSUPPORTED");
    s.delete("/v2/ro/manifests/v1")
        .await
        .assert_error(405, "UNSUPPORTED");
    s.delete(&format!("/v2/ro/manifests/{digest}"))
        .await
        .assert_error(405, "UNSUPPORTED");
    s.delete(&format!("/v2/ro/blobs/{blob}"))
        .await
        .assert_error(405, "UNSUPPORTED");
    s.req("PATCH", &format!("/v2/ro/blobs/uploads/{}", "a".repeat(32)))
        .body(b"x")
        .send()
        .await
        .assert_error(405, "UNSUPPORTED");
    // Nothing changed.
    assert_eq!(s.get("/v2/ro/manifests/v1").await.status, 200);
    assert_eq!(s.get("/v2/ro/manifests/v2").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_disabled() {
    let data = Data::new();
    let s = Server::start_with(data.path.clone(), |c| c.delete_enabled = false).await;
    let (_, digest) = s.push_image("nodel", Some("v1"), "nd").await;
    let blob = s.push_blob("nodel", b"kept").await;
    s.delete("/v2/nodel/manifests/v1")
        .await
        .assert_error(405, "UNSUPPORTED");
    s.delete(&format!("/v2/nodel/manifests/{digest}"))
        .await
        .assert_error(405, "UNSUPPORTED");
    s.delete(&format!("/v2/nodel/blobs/{blob}"))
        .await
        .assert_error(405, "UNSUPPORTED");
    assert_eq!(s.get("/v2/nodel/manifests/v1").await.status, 200);
    assert_eq!(s.get(&format!("/v2/nodel/blobs/{blob}")).await.status, 200);
    // Pushes and upload cancels still work.
    let r = s.req("POST", "/v2/nodel/blobs/uploads/").send().await;
    assert_eq!(r.status, 202);
    let loc = r.header("location").expect("location").to_owned();
    assert_eq!(s.delete(&loc).await.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let d = s.push_blob("h2", b"over http/2").await;
    let r = s.req("GET", "/v2/").send_h2().await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let r = s.req("GET", &format!("/v2/h2/blobs/{d}")).send_h2().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"over http/2");
    let r = s.req("HEAD", &format!("/v2/h2/blobs/{d}")).send_h2().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("11"));
    let d2 = sha256(b"pushed over h2");
    let r = s
        .req("POST", &format!("/v2/h2/blobs/uploads/?digest={d2}"))
        .body(b"pushed over h2")
        .send_h2()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_content_and_resumes_uploads() {
    let data = Data::new();
    let s = Server::start(&data).await;
    let (body, _) = s.push_image("life", Some("v1"), "l").await;
    let blob = b"resumable upload across a restart";
    let d = sha256(blob);
    let r = s.req("POST", "/v2/life/blobs/uploads/").send().await;
    let loc = r.header("location").expect("location").to_owned();
    let r = s
        .req("PATCH", &loc)
        .header("content-range", "0-9")
        .body(&blob[..10])
        .send()
        .await;
    assert_eq!(r.status, 202);
    s.stop().await.expect("clean stop");

    let s = Server::start(&data).await;
    assert_eq!(s.get("/v2/life/manifests/v1").await.body, body);
    let r = s.get(&loc).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("range"), Some("0-9"));
    let r = s
        .req("PUT", &format!("{loc}?digest={d}"))
        .header("content-range", &format!("10-{}", blob.len() - 1))
        .body(&blob[10..])
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.get(&format!("/v2/life/blobs/{d}")).await.body, blob);
    s.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_fails_cleanly_on_a_locked_data_dir() {
    let data = Data::new();
    let s = Server::start(&data).await;
    assert_eq!(s.get("/v2/").await.status, 200);
    // A second server on the same data directory cannot open the index.
    let second = Server::start(&data).await;
    let err = second.stop().await.expect_err("second server must fail");
    assert!(err.to_string().contains("berth:"), "{err}");
    assert_eq!(s.get("/v2/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let data = Data::new();
    let mut s = Server::start(&data).await;
    let r = s.req("POST", "/v2/grace/blobs/uploads/").send().await;
    let loc = r.header("location").expect("location").to_owned();

    // A PATCH whose body is still arriving when the shutdown signal comes.
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let patch = tokio::spawn(s.req("PATCH", &loc).channel(rx).send());
    tx.send(Bytes::from_static(b"first half, "))
        .await
        .expect("send");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    s.signal_stop();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // No new connections are accepted...
    assert!(
        TcpStream::connect(s.addr).await.is_err(),
        "listener still open"
    );
    // ...but the in-flight request completes and is acknowledged.
    tx.send(Bytes::from_static(b"second half"))
        .await
        .expect("send");
    drop(tx);
    let r = patch.await.expect("patch task");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.header("range"), Some("0-22"));
    s.join().await.expect("clean stop");

    // The acknowledged bytes survived.
    let s = Server::start(&data).await;
    let r = s.get(&loc).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("range"), Some("0-22"));
    let d = sha256(b"first half, second half");
    let r = s.req("PUT", &format!("{loc}?digest={d}")).send().await;
    assert_eq!(r.status, 201, "{}", r.text());
}
