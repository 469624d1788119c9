//! Chart repository benchmarks (criterion), for issue #4's targets with
//! 20,000 chart versions in one project (200 charts × 100 versions, each
//! with ~700 bytes of realistic Chart.yaml metadata):
//!
//! - `charts/index_update`: one chart version's commit through the engine
//!   (its manifest, tag, chart index entry and generation bump in one synced
//!   batch; the blobs are stored beforehand, untimed): the index update of
//!   an upload.
//! - then a real `berth` process serves the data directory:
//!   `charts/get_index_unchanged` (plain), `…_gzip`, `…_304`
//!   (`If-None-Match`): `GET /chartrepo/bench/index.yaml` over HTTP/1.1;
//!   `charts/oci_push_manifest`: a Helm chart manifest PUT (index update
//!   included) over HTTP; `charts/get_index_after_change`: the first GET
//!   after a push (the changed chart's entry re-rendered, the others
//!   spliced in), `…_gzip` the same with `Accept-Encoding: gzip`.
//! - `…_discard`: the same GETs through a client that reads the body into
//!   one reused buffer and drops it (as `curl -o /dev/null`), so the
//!   figure is the server's and the socket's, not the test kit client's
//!   copies of a 22 MB body.
//! - The server's resident memory (VmRSS, VmHWM) is printed at the end.
//!
//! Run (see BENCHMARKS.md): `cargo build --release --workspace --bins` then
//! `cargo bench --workspace --bench charts`. Under `cargo test
//! --all-targets` it runs once over 200 versions.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use berth_engine::{
    Algorithm, ChartBlob, ChartEntry, ChartWrite, Digest, Engine, ManifestPut, RepoName,
};
use berth_testkit::open_engine;
use berth_testkit::server::{header, http, TestServer};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

const PROJECT: &str = "bench";
const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const VERSIONS_PER_CHART: usize = 100;

/// True under `cargo bench`; `cargo test --all-targets` runs each benchmark
/// once without `--bench`.
fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn sha256(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

/// Chart.yaml metadata as Helm's JSON, about 700 bytes.
fn metadata(name: &str, version: &str) -> String {
    json!({
        "name": name,
        "home": format!("https://example.com/charts/{name}"),
        "sources": [format!("https://github.com/example/{name}")],
        "version": version,
        "description": format!("A Helm chart for {name}: deploys the {name} service with sensible defaults, autoscaling and monitoring"),
        "keywords": ["web", "service", name],
        "maintainers": [
            {"name": "Platform Team", "email": "platform@example.com", "url": "https://example.com/team"},
            {"name": "Ada Lovelace", "email": "ada@example.com"}
        ],
        "icon": format!("https://example.com/icons/{name}.png"),
        "apiVersion": "v2",
        "appVersion": format!("{version}-app"),
        "annotations": {"artifacthub.io/license": "Apache-2.0", "artifacthub.io/prerelease": "false"},
        "kubeVersion": ">=1.22.0-0",
        "dependencies": [{"name": "redis", "version": "17.x.x", "repository": "https://charts.example.com", "condition": "redis.enabled"}],
        "type": "application"
    })
    .to_string()
}

fn chart_name(k: usize) -> String {
    format!("service-{k:03}")
}

fn version(i: usize) -> String {
    format!("{}.{}.{}", i / 50, (i / 5) % 10, i % 5)
}

/// The manifest of a chart version, as the chart API stores it.
fn manifest(name: &str, version: &str, config: &str, tgz: &ChartBlob) -> ManifestPut {
    let cfg = sha256(config.as_bytes());
    let body = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": cfg.as_str(), "size": config.len()},
        "layers": [{"mediaType": HELM_CHART, "digest": tgz.digest.as_str(), "size": tgz.size}],
        "annotations": {"org.opencontainers.image.title": name, "org.opencontainers.image.version": version},
    });
    ManifestPut {
        media_type: OCI_MANIFEST.into(),
        body: serde_json::to_vec(&body).expect("json"),
        blobs: vec![cfg, tgz.digest.clone()],
        artifact_type: Some(HELM_CONFIG.into()),
        chart: Some(ChartEntry {
            name: name.into(),
            version: version.into(),
            metadata: config.into(),
            chart: tgz.clone(),
            prov: None,
            write: ChartWrite::Create,
        }),
        ..ManifestPut::default()
    }
}

/// Stores chart `k`'s archive blob in its repository; returns it.
fn chart_blob(e: &Engine, k: usize) -> (RepoName, ChartBlob) {
    let repo = RepoName::parse(&format!("{PROJECT}/{}", chart_name(k))).expect("repo");
    let tgz = format!("not really a tgz for chart {k}").into_bytes();
    let d = sha256(&tgz);
    e.put_blob(&repo, &d, &tgz).expect("put tgz");
    (
        repo,
        ChartBlob {
            digest: d,
            size: tgz.len() as u64,
        },
    )
}

/// Adds version `i` of chart `k`: config blob, then the manifest put.
fn add_version(e: &Engine, repo: &RepoName, tgz: &ChartBlob, k: usize, i: usize) -> Duration {
    let name = chart_name(k);
    let v = version(i);
    let config = metadata(&name, &v);
    e.put_blob(repo, &sha256(config.as_bytes()), config.as_bytes())
        .expect("put config");
    let put = manifest(&name, &v, &config, tgz);
    let start = Instant::now();
    e.put_manifest(repo, put).expect("put chart manifest");
    start.elapsed()
}

/// One GET over a fresh connection; the body is read and dropped.
/// Returns the status and the body's length.
fn get_discard(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, usize) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut buf = vec![0u8; 256 << 10];
    let mut head: Vec<u8> = Vec::new();
    let mut body: Option<usize> = None;
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        match body.as_mut() {
            Some(len) => *len += n,
            None => {
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    body = Some(head.len() - end - 4);
                    head.truncate(end);
                }
            }
        }
    }
    let status = std::str::from_utf8(&head)
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, body.expect("end of head"))
}

fn charts(c: &mut Criterion) {
    let total = if benchmarking() { 20_000 } else { 200 };
    let charts = total / VERSIONS_PER_CHART;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    // Populate through the engine, two writers (group commit shares fsyncs).
    let started = Instant::now();
    let engine = open_engine(&data);
    std::thread::scope(|s| {
        for half in 0..2 {
            let e = &engine;
            s.spawn(move || {
                for k in (half..charts).step_by(2) {
                    let (repo, tgz) = chart_blob(e, k);
                    for i in 0..VERSIONS_PER_CHART {
                        add_version(e, &repo, &tgz, k, i);
                    }
                }
            });
        }
    });
    let project = RepoName::parse(PROJECT).expect("project");
    let state = engine
        .chart_repo(&project)
        .expect("chart repo")
        .expect("charts");
    assert_eq!(state.versions as usize, total);
    eprintln!(
        "populated {total} chart versions in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut group = c.benchmark_group("charts");
    group.sample_size(if benchmarking() { 50 } else { 10 });
    // Engine: one upload's index update in the full project.
    let (repo, tgz) = chart_blob(&engine, charts);
    let mut next = 0usize;
    group.bench_function("index_update", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                t += add_version(&engine, &repo, &tgz, charts, next);
                next += 1;
            }
            t
        })
    });
    drop(engine);

    // HTTP: a real server on the same data.
    let server = TestServer::start(&data, &[]);
    let addr = server.addr;
    let path = format!("/chartrepo/{PROJECT}/index.yaml");
    let t = Instant::now();
    let (status, headers, body) = http(addr, "GET", &path, &[], b"");
    assert_eq!(status, 200);
    eprintln!(
        "first GET (render of {} versions, {} bytes): {:.1} ms",
        total + next,
        body.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    let etag = header(&headers, "etag").expect("etag").to_owned();
    group.bench_function("get_index_unchanged", |b| {
        b.iter(|| {
            let (status, _, body) = http(addr, "GET", &path, &[], b"");
            assert_eq!(status, 200);
            body.len()
        })
    });
    http(addr, "GET", &path, &[("Accept-Encoding", "gzip")], b"");
    group.bench_function("get_index_unchanged_gzip", |b| {
        b.iter(|| {
            let (status, _, body) = http(addr, "GET", &path, &[("Accept-Encoding", "gzip")], b"");
            assert_eq!(status, 200);
            body.len()
        })
    });
    group.bench_function("get_index_unchanged_discard", |b| {
        b.iter(|| {
            let (status, len) = get_discard(addr, &path, &[]);
            assert_eq!(status, 200);
            len
        })
    });
    group.bench_function("get_index_304", |b| {
        b.iter(|| {
            let (status, _, _) = http(addr, "GET", &path, &[("If-None-Match", &etag)], b"");
            assert_eq!(status, 304);
        })
    });

    // A Helm push over HTTP (the OCI hook indexes it), then the first GET.
    let k = charts + 1;
    let name = chart_name(k);
    let repo = format!("{PROJECT}/{name}");
    let tgz = b"another chart archive".to_vec();
    let tgz_digest = sha256(&tgz);
    let (status, _, _) = http(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={tgz_digest}"),
        &[],
        &tgz,
    );
    assert_eq!(status, 201);
    let mut i = 0usize;
    let push = |i: usize| -> Duration {
        let v = version(i);
        let config = metadata(&name, &v);
        let cfg = sha256(config.as_bytes());
        let (status, _, _) = http(
            addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={cfg}"),
            &[],
            config.as_bytes(),
        );
        assert_eq!(status, 201);
        let put = manifest(
            &name,
            &v,
            &config,
            &ChartBlob {
                digest: tgz_digest.clone(),
                size: tgz.len() as u64,
            },
        );
        let t = Instant::now();
        let (status, _, _) = http(
            addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{v}"),
            &[("Content-Type", OCI_MANIFEST)],
            &put.body,
        );
        let d = t.elapsed();
        assert_eq!(status, 201);
        d
    };
    group.bench_function("oci_push_manifest", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    i += 1;
                    push(i)
                })
                .sum()
        })
    });
    group.sample_size(10);
    group.bench_function("get_index_after_change", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                i += 1;
                push(i);
                let start = Instant::now();
                let (status, _, _) = http(addr, "GET", &path, &[], b"");
                t += start.elapsed();
                assert_eq!(status, 200);
            }
            t
        })
    });
    for (name, headers) in [
        ("get_index_after_change_discard", &[][..]),
        (
            "get_index_after_change_gzip_discard",
            &[("Accept-Encoding", "gzip")][..],
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    i += 1;
                    push(i);
                    let start = Instant::now();
                    let (status, _) = get_discard(addr, &path, headers);
                    t += start.elapsed();
                    assert_eq!(status, 200);
                }
                t
            })
        });
    }
    group.finish();

    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap_or_default();
    for line in status.lines() {
        if line.starts_with("VmRSS") || line.starts_with("VmHWM") {
            eprintln!("berth server {line}");
        }
    }
}

criterion_group!(benches, charts);
criterion_main!(benches);
