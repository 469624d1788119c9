//! The Helm chart repository end to end: a real berth server started
//! in-process on 127.0.0.1:0, real chart archives built here (flate2 +
//! tar), uploads through Harbor's and ChartMuseum's paths (multipart and
//! raw bodies), `index.yaml` checked field by field against Helm's
//! `pkg/repo` rules, downloads checked by digest, and the OCI view of the
//! same charts through the registry API and skopeo.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;

use berth_engine::{Algorithm, Digest};
use berth_server::{Config, ServeError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
const HELM_PROV: &str = "application/vnd.cncf.helm.chart.provenance.v1.prov";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

// ---- harness -----------------------------------------------------------------

struct Server {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    async fn start_with(f: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::new(dir.path().join("data"));
        f(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(berth_server::serve(config, listener, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            _dir: dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("serve task").expect("serve");
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body))).expect("request");
        let res = sender.send_request(req).await.expect("send");
        let (parts, body) = res.into_parts();
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes().to_vec(),
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], Vec::new()).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", path, headers, Vec::new()).await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, &[], Vec::new()).await
    }

    /// Uploads a chart (and provenance) as `multipart/form-data`.
    async fn upload_form(&self, path: &str, fields: &[(&str, &[u8])]) -> Resp {
        let boundary = "berth-test-boundary-7d1f";
        let mut body = Vec::new();
        for (name, data) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let ct = format!("multipart/form-data; boundary={boundary}");
        self.send("POST", path, &[("content-type", &ct)], body)
            .await
    }

    /// Uploads a raw body.
    async fn upload_raw(&self, path: &str, data: &[u8]) -> Resp {
        self.send(
            "POST",
            path,
            &[("content-type", "application/octet-stream")],
            data.to_vec(),
        )
        .await
    }

    async fn index(&self, path: &str) -> (Resp, Value) {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let v: Value = serde_yaml::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{path} is not YAML ({e}):\n{}", r.text()));
        (r, v)
    }

    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = sha256(data);
        let r = self
            .send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status, 201, "push blob: {}", r.text());
        d
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// ChartMuseum's error body: `{"error": "…"}`; returns the message.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "status; body {}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {}", self.text()))
            .to_owned()
    }
}

fn sha256(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

// ---- chart archives ------------------------------------------------------------

/// A Chart.yaml using every field Helm knows.
fn full_chart_yaml(name: &str, version: &str, description: &str) -> String {
    format!(
        r#"apiVersion: v2
name: {name}
version: {version}
kubeVersion: ">=1.22.0-0"
description: "{description}"
type: application
keywords:
  - web
  - "yes"
home: https://example.com/{name}
sources:
  - https://github.com/example/{name}
dependencies:
  - name: redis
    version: "~17.0"
    repository: https://charts.example.com
    condition: redis.enabled
    tags: [cache]
    alias: cache
    import-values:
      - child: a
        parent: b
maintainers:
  - name: Ada
    email: ada@example.com
    url: https://example.com/ada
icon: https://example.com/{name}.png
appVersion: "1.16.0"
deprecated: true
condition: web.enabled
tags: web,frontend
annotations:
  artifacthub.io/license: Apache-2.0
  "true": "on"
unknownField: dropped
"#
    )
}

/// Chart.yaml fields as Helm's JSON (what index.yaml entries must hold).
fn full_chart_json(name: &str, version: &str, description: &str) -> Value {
    json!({
        "apiVersion": "v2",
        "name": name,
        "version": version,
        "kubeVersion": ">=1.22.0-0",
        "description": description,
        "type": "application",
        "keywords": ["web", "yes"],
        "home": format!("https://example.com/{name}"),
        "sources": [format!("https://github.com/example/{name}")],
        "dependencies": [{
            "name": "redis", "version": "~17.0", "repository": "https://charts.example.com",
            "condition": "redis.enabled", "tags": ["cache"], "alias": "cache",
            "import-values": [{"child": "a", "parent": "b"}]
        }],
        "maintainers": [{"name": "Ada", "email": "ada@example.com", "url": "https://example.com/ada"}],
        "icon": format!("https://example.com/{name}.png"),
        "appVersion": "1.16.0",
        "deprecated": true,
        "condition": "web.enabled",
        "tags": "web,frontend",
        "annotations": {"artifacthub.io/license": "Apache-2.0", "true": "on"},
    })
}

/// A gzip'd tar of `files` (path, bytes), as `helm package` writes it.
fn tgz(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        // The name is written raw (the tar crate refuses `..`, which the
        // hostile-archive cases need).
        let name = &mut h.as_old_mut().name;
        assert!(path.len() < name.len(), "test paths are short");
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data.as_slice()).expect("tar append");
    }
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

fn chart(name: &str, version: &str, description: &str) -> Vec<u8> {
    tgz(&[
        (
            format!("{name}/Chart.yaml"),
            full_chart_yaml(name, version, description).into_bytes(),
        ),
        (format!("{name}/values.yaml"), b"replicas: 1\n".to_vec()),
        (
            format!("{name}/templates/deployment.yaml"),
            b"kind: Deployment\n".to_vec(),
        ),
    ])
}

fn prov(name: &str, version: &str, tgz: &[u8]) -> Vec<u8> {
    format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\napiVersion: v2\nname: {name}\nversion: {version}\n\n...\nfiles:\n  {name}-{version}.tgz: {}\n-----BEGIN PGP SIGNATURE-----\n\nwsBcBAEBCgAQBQJ\n-----END PGP SIGNATURE-----\n",
        sha256(tgz)
    )
    .into_bytes()
}

fn is_rfc3339(s: &str) -> bool {
    // 2026-11-26T07:33:27.123Z
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z')
}

fn versions_of(index: &Value, chart: &str) -> Vec<String> {
    index["entries"][chart]
        .as_array()
        .unwrap_or_else(|| panic!("no entry {chart} in {index}"))
        .iter()
        .map(|v| v["version"].as_str().expect("version").to_owned())
        .collect()
}

fn entry<'a>(index: &'a Value, chart: &str, version: &str) -> &'a Value {
    index["entries"][chart]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["version"] == version))
        .unwrap_or_else(|| panic!("no {chart} {version} in {index}"))
}

// ---- tests -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_through_both_layouts_and_index_follows_helm_rules() {
    let s = Server::start().await;
    assert_eq!(
        s.get("/api/chartrepo/health").await.json(),
        json!({"healthy": true})
    );
    assert_eq!(s.get("/health").await.json(), json!({"healthy": true}));

    // An empty project serves an empty, valid index.
    let (_, empty) = s.index("/chartrepo/lib/index.yaml").await;
    assert_eq!(empty["apiVersion"], "v1");
    assert_eq!(empty["entries"], json!({}));

    let v1 = chart("demo", "1.0.0", "first");
    let v1_prov = prov("demo", "1.0.0", &v1);
    let v110 = chart("demo", "1.10.0", "second");
    let rc = chart("demo", "2.0.0-rc.1+build.5", "rc");
    let other = chart("other-chart", "0.1.0", "other");

    // Harbor path, multipart with provenance.
    let r = s
        .upload_form(
            "/api/chartrepo/lib/charts",
            &[("chart", &v1), ("prov", &v1_prov)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!({"saved": true}));
    // ChartMuseum path, raw body.
    let r = s.upload_raw("/api/lib/charts", &v110).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // ChartMuseum path, multipart without provenance.
    let r = s.upload_form("/api/lib/charts", &[("chart", &rc)]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.upload_raw("/api/chartrepo/lib/charts", &other).await;
    assert_eq!(r.status, 201, "{}", r.text());

    let (harbor, index) = s.index("/chartrepo/lib/index.yaml").await;
    let (museum, _) = s.index("/lib/index.yaml").await;
    assert_eq!(harbor.body, museum.body, "one index, two layouts");
    assert_eq!(harbor.header("content-type"), Some("application/x-yaml"));

    assert_eq!(index["apiVersion"], "v1");
    assert!(is_rfc3339(index["generated"].as_str().expect("generated")));
    let names: Vec<_> = index["entries"]
        .as_object()
        .expect("entries")
        .keys()
        .cloned()
        .collect();
    assert_eq!(names, ["demo", "other-chart"]);
    // Newest SemVer first (1.10.0 > 1.0.0 numerically, not lexically).
    assert_eq!(
        versions_of(&index, "demo"),
        ["2.0.0-rc.1+build.5", "1.10.0", "1.0.0"]
    );
    for (version, desc, bytes) in [
        ("1.0.0", "first", &v1),
        ("1.10.0", "second", &v110),
        ("2.0.0-rc.1+build.5", "rc", &rc),
    ] {
        let e = entry(&index, "demo", version);
        let want = full_chart_json("demo", version, desc);
        for (k, v) in want.as_object().expect("object") {
            assert_eq!(&e[k], v, "{version}: field {k}");
        }
        assert!(
            e.get("unknownField").is_none(),
            "unknown Chart.yaml keys are dropped"
        );
        assert_eq!(e["urls"], json!([format!("charts/demo-{version}.tgz")]));
        assert!(is_rfc3339(e["created"].as_str().expect("created")), "{e}");
        assert_eq!(e["digest"], sha256(bytes).hex());
        // Only Helm's fields: metadata + urls, created, digest.
        let extra: Vec<_> = e
            .as_object()
            .expect("object")
            .keys()
            .filter(|k| want.get(k.as_str()).is_none())
            .cloned()
            .collect();
        assert_eq!(extra, ["created", "digest", "urls"]);

        // Download through both layouts, relative to the repository URL.
        for repo in ["/chartrepo/lib/", "/lib/"] {
            let url = format!("{repo}{}", e["urls"][0].as_str().expect("url"));
            let r = s.get(&url).await;
            assert_eq!(r.status, 200, "{url}: {}", r.text());
            assert_eq!(sha256(&r.body).hex(), e["digest"], "{url}");
            assert_eq!(&r.body, bytes);
        }
    }
    let r = s.get("/chartrepo/lib/charts/demo-1.0.0.tgz.prov").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, v1_prov);
    assert_eq!(sha256(&r.body), sha256(&v1_prov));
    s.get("/lib/charts/demo-1.10.0.tgz.prov").await.error(404);
    s.get("/lib/charts/demo-9.9.9.tgz").await.error(404);
    s.get("/lib/charts/nonsense.zip").await.error(404);

    // Caching: ETag and Last-Modified, 304s, gzip.
    let etag = harbor.header("etag").expect("etag").to_owned();
    let modified = harbor
        .header("last-modified")
        .expect("last-modified")
        .to_owned();
    let r = s
        .get_with("/chartrepo/lib/index.yaml", &[("if-none-match", &etag)])
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = s
        .get_with("/lib/index.yaml", &[("if-modified-since", &modified)])
        .await;
    assert_eq!(r.status, 304);
    let r = s
        .get_with(
            "/chartrepo/lib/index.yaml",
            &[("accept-encoding", "gzip, br")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut plain)
        .expect("gunzip");
    assert_eq!(plain, harbor.body);

    // Harbor's all-projects index: entries project/name, URLs project/charts/….
    let r = s
        .upload_raw("/api/apps/charts", &chart("web", "3.0.0", "w"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (_, global) = s.index("/chartrepo/index.yaml").await;
    assert_eq!(versions_of(&global, "lib/demo").len(), 3);
    assert_eq!(
        entry(&global, "apps/web", "3.0.0")["urls"],
        json!(["apps/charts/web-3.0.0.tgz"])
    );
    let r = s.get("/chartrepo/apps/charts/web-3.0.0.tgz").await;
    assert_eq!(r.status, 200);

    // The API views.
    let all = s.get("/api/lib/charts").await.json();
    assert_eq!(all["demo"].as_array().map(Vec::len), Some(3));
    assert_eq!(all["other-chart"][0]["version"], "0.1.0");
    let demo = s.get("/api/chartrepo/lib/charts/demo").await.json();
    assert_eq!(demo[0]["version"], "2.0.0-rc.1+build.5");
    let one = s.get("/api/lib/charts/demo/1.10.0").await.json();
    assert_eq!(one["digest"], sha256(&v110).hex());
    assert_eq!(one["description"], "second");
    let latest = s.get("/api/chartrepo/lib/charts/demo/latest").await.json();
    assert_eq!(latest["version"], "2.0.0-rc.1+build.5");
    s.get("/api/lib/charts/nope").await.error(404);
    s.get("/api/lib/charts/demo/9.9.9").await.error(404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reupload_conflicts_unless_forced_or_configured() {
    let s = Server::start().await;
    let a = chart("demo", "1.0.0", "original");
    assert_eq!(s.upload_raw("/api/lib/charts", &a).await.status, 201);
    let (before, _) = s.index("/lib/index.yaml").await;

    let msg = s.upload_raw("/api/lib/charts", &a).await.error(409);
    assert!(
        msg.contains("demo-1.0.0") && msg.contains("exists"),
        "{msg}"
    );
    let b = chart("demo", "1.0.0", "replaced");
    let msg = s
        .upload_form("/api/chartrepo/lib/charts", &[("chart", &b)])
        .await
        .error(409);
    assert!(msg.contains("force"), "{msg}");
    let (after, _) = s.index("/lib/index.yaml").await;
    assert_eq!(before.body, after.body, "a refused upload changes nothing");

    let r = s.upload_raw("/api/lib/charts?force", &b).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (r, index) = s.index("/lib/index.yaml").await;
    assert_ne!(r.header("etag"), before.header("etag"));
    let e = entry(&index, "demo", "1.0.0");
    assert_eq!(e["description"], "replaced");
    assert_eq!(e["digest"], sha256(&b).hex());
    assert_eq!(s.get("/lib/charts/demo-1.0.0.tgz").await.body, b);
    // The OCI view was replaced too: one manifest, pointing at the new tgz.
    let m = s.get("/v2/lib/demo/manifests/1.0.0").await.json();
    assert_eq!(m["layers"][0]["digest"], sha256(&b).to_string());
    s.stop().await;

    // Overwrite allowed by configuration.
    let s = Server::start_with(|c| c.chart_allow_overwrite = true).await;
    assert_eq!(s.upload_raw("/api/lib/charts", &a).await.status, 201);
    assert_eq!(s.upload_raw("/api/lib/charts", &b).await.status, 201);
    let (_, index) = s.index("/lib/index.yaml").await;
    assert_eq!(entry(&index, "demo", "1.0.0")["description"], "replaced");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_version_and_all_versions() {
    let s = Server::start().await;
    for v in ["1.0.0", "1.1.0", "2.0.0"] {
        let r = s.upload_raw("/api/lib/charts", &chart("demo", v, v)).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    assert_eq!(
        s.upload_raw("/api/lib/charts", &chart("keep", "0.1.0", "k"))
            .await
            .status,
        201
    );
    let r = s.delete("/api/chartrepo/lib/charts/demo/1.1.0").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"deleted": true}));
    let (_, index) = s.index("/chartrepo/lib/index.yaml").await;
    assert_eq!(versions_of(&index, "demo"), ["2.0.0", "1.0.0"]);
    s.get("/lib/charts/demo-1.1.0.tgz").await.error(404);
    // Its OCI manifest went in the same batch.
    assert_eq!(s.get("/v2/lib/demo/manifests/1.1.0").await.status, 404);
    s.delete("/api/lib/charts/demo/1.1.0").await.error(404);

    let r = s.delete("/api/lib/charts/demo").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, index) = s.index("/lib/index.yaml").await;
    assert!(index["entries"].get("demo").is_none(), "{index}");
    assert_eq!(versions_of(&index, "keep"), ["0.1.0"]);
    for v in ["1.0.0", "2.0.0"] {
        assert_eq!(
            s.get(&format!("/v2/lib/demo/manifests/{v}")).await.status,
            404
        );
    }
    s.delete("/api/lib/charts/demo").await.error(404);
    s.stop().await;

    let s = Server::start_with(|c| c.delete_enabled = false).await;
    s.delete("/api/lib/charts/demo").await.error(405);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_charts_are_400_and_change_nothing() {
    let s = Server::start_with(|c| {
        c.chart_limits.max_unpacked_bytes = 64 << 10;
        c.chart_limits.max_entries = 50;
    })
    .await;
    assert_eq!(
        s.upload_raw("/api/lib/charts", &chart("good", "1.0.0", "g"))
            .await
            .status,
        201
    );
    let (before, _) = s.index("/lib/index.yaml").await;

    let yaml = |name: &str, version: &str| {
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n").into_bytes()
    };
    let mut bomb = String::from(
        "apiVersion: v2\nname: bomb\nversion: 1.0.0\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..9 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str("keywords: *a8\n");
    let many: Vec<(String, Vec<u8>)> =
        std::iter::once(("many/Chart.yaml".to_owned(), yaml("many", "1.0.0")))
            .chain((0..60).map(|i| (format!("many/f{i}"), Vec::new())))
            .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not gzip", b"just some text".to_vec(), "gzip"),
        (
            "gzip but not tar",
            {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&[7u8; 1000]).expect("gzip");
                gz.finish().expect("gzip")
            },
            "",
        ),
        (
            "no Chart.yaml",
            tgz(&[("x/values.yaml".into(), b"a: 1".to_vec())]),
            "no x/Chart.yaml",
        ),
        (
            "name/dir mismatch",
            tgz(&[("other/Chart.yaml".into(), yaml("demo", "1.0.0"))]),
            "top-level directory",
        ),
        (
            "a version Helm refuses (1.0 it accepts: 1.0.0)",
            tgz(&[("demo/Chart.yaml".into(), yaml("demo", "1.0.0.1"))]),
            "not a version Helm accepts",
        ),
        (
            "bad name",
            tgz(&[("Demo/Chart.yaml".into(), yaml("Demo", "1.0.0"))]),
            "name",
        ),
        (
            "oversized",
            tgz(&[
                ("big/Chart.yaml".into(), yaml("big", "1.0.0")),
                ("big/blob".into(), vec![0u8; 1 << 20]),
            ]),
            "expands to more than",
        ),
        ("too many entries", tgz(&many), "more than 50 entries"),
        (
            "alias bomb",
            tgz(&[("bomb/Chart.yaml".into(), bomb.into_bytes())]),
            "Chart.yaml",
        ),
        (
            "path escape",
            tgz(&[
                ("esc/Chart.yaml".into(), yaml("esc", "1.0.0")),
                ("esc/../../etc/x".into(), Vec::new()),
            ]),
            "unsafe",
        ),
    ];
    for (what, data, want) in cases {
        for path in ["/api/lib/charts", "/api/chartrepo/lib/charts"] {
            let msg = s.upload_raw(path, &data).await.error(400);
            assert!(
                msg.contains(want),
                "{what}: {msg:?} should mention {want:?}"
            );
            let msg = s.upload_form(path, &[("chart", &data)]).await.error(400);
            assert!(msg.contains(want), "{what}: {msg:?}");
        }
    }
    // A provenance file for another chart is refused too.
    let demo = chart("demo", "1.0.0", "d");
    let wrong = prov("good", "1.0.0", &demo);
    let msg = s
        .upload_form("/api/lib/charts", &[("chart", &demo), ("prov", &wrong)])
        .await
        .error(400);
    assert!(msg.contains("provenance"), "{msg}");
    let msg = s
        .upload_form("/api/lib/charts", &[("nothing", b"x")])
        .await
        .error(400);
    assert!(msg.contains("chart"), "{msg}");

    let (after, _) = s.index("/lib/index.yaml").await;
    assert_eq!(before.body, after.body, "nothing changed");
    assert_eq!(before.header("etag"), after.header("etag"));
    for repo in ["demo", "big", "many", "bomb", "esc", "x", "other"] {
        let r = s.get(&format!("/v2/lib/{repo}/tags/list")).await;
        assert_eq!(r.status, 404, "{repo}: nothing stored: {}", r.text());
    }
    s.stop().await;
}

async fn skopeo_inspect_raw(addr: SocketAddr, image: &str) -> Vec<u8> {
    let reference = format!("docker://{addr}/{image}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("skopeo")
            .args(["inspect", "--raw", &reference, "--tls-verify=false"])
            .output()
    })
    .await
    .expect("join")
    .expect("running skopeo (is it installed? scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "skopeo inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_chart_is_an_oci_artifact_with_the_same_blob() {
    let s = Server::start().await;
    let tgz = chart("demo", "1.2.3+build.7", "oci view");
    let p = prov("demo", "1.2.3+build.7", &tgz);
    let r = s
        .upload_form("/api/lib/charts", &[("chart", &tgz), ("prov", &p)])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    // `+` is `_` in the tag, as Helm does.
    let r = s.get("/v2/lib/demo/manifests/1.2.3_build.7").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
    let manifest_bytes = r.body.clone();
    let m = r.json();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["config"]["mediaType"], HELM_CONFIG);
    assert_eq!(m["layers"][0]["mediaType"], HELM_CHART);
    assert_eq!(m["layers"][0]["digest"], sha256(&tgz).to_string());
    assert_eq!(m["layers"][0]["size"], tgz.len());
    assert_eq!(m["layers"][1]["mediaType"], HELM_PROV);
    assert_eq!(m["layers"][1]["digest"], sha256(&p).to_string());
    assert_eq!(m["annotations"]["org.opencontainers.image.title"], "demo");

    // The config is Chart.yaml's metadata as Helm's JSON.
    let cfg = s
        .get(&format!(
            "/v2/lib/demo/blobs/{}",
            m["config"]["digest"].as_str().expect("digest")
        ))
        .await;
    assert_eq!(cfg.status, 200);
    assert_eq!(sha256(&cfg.body).to_string(), m["config"]["digest"]);
    let cfg: Value = serde_json::from_slice(&cfg.body).expect("config JSON");
    assert_eq!(cfg, full_chart_json("demo", "1.2.3+build.7", "oci view"));

    // One blob, two views: the layer is the chart file, byte for byte.
    let layer = s.get(&format!("/v2/lib/demo/blobs/{}", sha256(&tgz))).await;
    assert_eq!(layer.body, tgz);
    let file = s.get("/chartrepo/lib/charts/demo-1.2.3+build.7.tgz").await;
    assert_eq!(file.body, tgz);
    let (_, index) = s.index("/lib/index.yaml").await;
    assert_eq!(
        entry(&index, "demo", "1.2.3+build.7")["digest"],
        sha256(&tgz).hex()
    );

    // skopeo sees the same manifest.
    let raw = skopeo_inspect_raw(s.addr, "lib/demo:1.2.3_build.7").await;
    assert_eq!(raw, manifest_bytes);

    // Deleting the OCI manifest removes the chart from the index.
    let digest = sha256(&manifest_bytes);
    let r = s.delete(&format!("/v2/lib/demo/manifests/{digest}")).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let (_, index) = s.index("/lib/index.yaml").await;
    assert!(index["entries"].get("demo").is_none(), "{index}");
    s.get("/lib/charts/demo-1.2.3+build.7.tgz").await.error(404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_uploaded_later_joins_chart_and_manifest() {
    let s = Server::start().await;
    let tgz = chart("demo", "0.3.0", "p");
    assert_eq!(
        s.upload_raw("/api/chartrepo/lib/charts", &tgz).await.status,
        201
    );
    let before = s.get("/v2/lib/demo/manifests/0.3.0").await.json();
    assert_eq!(before["layers"].as_array().map(Vec::len), Some(1));

    let p = prov("demo", "0.3.0", &tgz);
    s.upload_raw("/api/lib/prov", &prov("demo", "9.9.9", &tgz))
        .await
        .error(404);
    let r = s
        .upload_form("/api/chartrepo/lib/prov", &[("prov", &p)])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.get("/lib/charts/demo-0.3.0.tgz.prov").await.body, p);
    let after = s.get("/v2/lib/demo/manifests/0.3.0").await.json();
    assert_eq!(after["layers"][1]["digest"], sha256(&p).to_string());
    assert_eq!(after["layers"][0], before["layers"][0], "same chart blob");
    s.upload_raw("/api/lib/prov", &p).await.error(409);
    assert_eq!(
        s.upload_raw("/api/lib/prov?force=true", &p).await.status,
        201
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_push_over_oci_appears_in_the_index() {
    let s = Server::start().await;
    // What `helm push demo-0.9.0.tgz oci://HOST/lib` sends: config and
    // chart blobs, then a manifest tagged with the version.
    let tgz = chart("demo", "0.9.0", "pushed");
    let config = serde_json::to_vec(&full_chart_json("demo", "0.9.0", "pushed")).expect("json");
    let cfg = s.push_blob("lib/demo", &config).await;
    let layer = s.push_blob("lib/demo", &tgz).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": cfg.to_string(), "size": config.len()},
        "layers": [{"mediaType": HELM_CHART, "digest": layer.to_string(), "size": tgz.len()}],
        "annotations": {"org.opencontainers.image.title": "demo", "org.opencontainers.image.version": "0.9.0"}
    }))
    .expect("json");
    let r = s
        .send(
            "PUT",
            "/v2/lib/demo/manifests/0.9.0",
            &[("content-type", OCI_MANIFEST)],
            manifest.clone(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    let (_, index) = s.index("/chartrepo/lib/index.yaml").await;
    let e = entry(&index, "demo", "0.9.0");
    assert_eq!(e["digest"], sha256(&tgz).hex());
    assert_eq!(e["description"], "pushed");
    assert_eq!(e["urls"], json!(["charts/demo-0.9.0.tgz"]));
    assert_eq!(s.get("/lib/charts/demo-0.9.0.tgz").await.body, tgz);
    // A chart-API upload of the same version conflicts with the OCI one.
    s.upload_raw("/api/lib/charts", &tgz).await.error(409);

    // Deleting the tag removes it from the index; re-tagging brings it back.
    let r = s.delete("/v2/lib/demo/manifests/0.9.0").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let (_, index) = s.index("/lib/index.yaml").await;
    assert!(index["entries"].get("demo").is_none(), "{index}");
    let r = s
        .send(
            "PUT",
            "/v2/lib/demo/manifests/0.9.0",
            &[("content-type", OCI_MANIFEST)],
            manifest.clone(),
        )
        .await;
    assert_eq!(r.status, 201);
    let (_, index) = s.index("/lib/index.yaml").await;
    assert_eq!(versions_of(&index, "demo"), ["0.9.0"]);

    // A non-chart manifest moved onto the version tag takes the chart out.
    let other_cfg = s.push_blob("lib/demo", b"{}").await;
    let image = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": other_cfg.to_string(), "size": 2},
        "layers": []
    }))
    .expect("json");
    let r = s
        .send(
            "PUT",
            "/v2/lib/demo/manifests/0.9.0",
            &[("content-type", OCI_MANIFEST)],
            image,
        )
        .await;
    assert_eq!(r.status, 201);
    let (_, index) = s.index("/lib/index.yaml").await;
    assert!(index["entries"].get("demo").is_none(), "{index}");

    // Pushed elsewhere (not project/name, or another tag): a plain artifact.
    let r = s
        .send(
            "PUT",
            "/v2/lib/demo/manifests/latest",
            &[("content-type", OCI_MANIFEST)],
            manifest,
        )
        .await;
    assert_eq!(r.status, 201);
    let (_, index) = s.index("/lib/index.yaml").await;
    assert!(index["entries"].get("demo").is_none(), "{index}");
    s.stop().await;
}
