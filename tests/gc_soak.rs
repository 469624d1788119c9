//! Soak: pushers and deleters against a real `berth serve` whose online GC
//! runs every second with no grace window, plus manual GC runs through
//! Harbor's API in a loop. Afterwards every tagged image pulls with correct
//! digests, `berthctl fsck --verify-blobs` on the stopped data directory is
//! clean, and the store holds exactly the referenced blobs.
//!
//! The same soak on three cluster nodes (one PostgreSQL index, one RGW
//! bucket), every node running GC every second (a second of grace): each push spreads its
//! requests over the nodes (a blob's POST, PATCH and PUT on three different
//! ones), so dedup onto a blob another node's GC is deleting is exercised
//! across processes. Afterwards the bucket holds exactly the referenced
//! blobs and `berthctl fsck --verify-blobs`, online, is clean.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_testkit::server::{header, http, TestServer};
use berth_testkit::{content, sha256};
use serde_json::Value;

const SOAK: Duration = Duration::from_secs(10);
const REPOS: [&str; 2] = ["soak/app", "soak/lib"];
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The shared layer pool: pushes pick from it, so layers are shared between
/// images and repositories and keep turning garbage and live again.
fn layer(i: usize) -> Vec<u8> {
    content(&format!("soak-layer-{i}"), 1000 + (i * 7919) % 150_000)
}

/// Uploads `data`: monolithic (`POST …/blobs/uploads/?digest=`) on one
/// node; on several, POST, PATCH and PUT each on the next node. Returns
/// the last status.
fn upload(nodes: &[SocketAddr], turn: usize, repo: &str, data: &[u8]) -> u16 {
    let d = sha256(data);
    let node = |k: usize| nodes[(turn + k) % nodes.len()];
    if nodes.len() == 1 {
        return http(
            node(0),
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        )
        .0;
    }
    let (status, h, _) = http(
        node(0),
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(status, 202, "POST upload to {repo}");
    let location = header(&h, "location").expect("Location").to_owned();
    let path = location
        .find("/v2/")
        .map_or(location.clone(), |i| location[i..].to_owned());
    let (status, _, _) = http(
        node(1),
        "PATCH",
        &path,
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(status, 202, "PATCH upload to {repo}");
    http(node(2), "PUT", &format!("{path}?digest={d}"), &[], b"").0
}

fn blob_known(addr: SocketAddr, repo: &str, data: &[u8]) -> bool {
    let d = sha256(data);
    http(addr, "HEAD", &format!("/v2/{repo}/blobs/{d}"), &[], b"").0 == 200
}

fn manifest_body(config: &[u8], layers: &[Vec<u8>]) -> Vec<u8> {
    let desc = |mt: &str, b: &[u8]| serde_json::json!({"mediaType": mt, "digest": sha256(b).to_string(), "size": b.len()});
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

/// Pushes one image as a client does: HEAD each blob, upload the missing,
/// PUT the manifest; when GC took a blob in between (grace 0), the
/// manifest PUT fails with MANIFEST_BLOB_UNKNOWN and the push is retried
/// uploading everything. Returns true once acknowledged.
fn push(
    nodes: &[SocketAddr],
    turn: usize,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[Vec<u8>],
) -> bool {
    let body = manifest_body(config, layers);
    for attempt in 0..8 {
        for (k, b) in std::iter::once(config)
            .chain(layers.iter().map(|l| l.as_slice()))
            .enumerate()
        {
            if attempt > 0 || !blob_known(nodes[(turn + k) % nodes.len()], repo, b) {
                let s = upload(nodes, turn + k, repo, b);
                assert_eq!(s, 201, "upload to {repo}");
            }
        }
        let (status, _, resp) = http(
            nodes[(turn + attempt) % nodes.len()],
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", MANIFEST)],
            &body,
        );
        match status {
            201 => return true,
            400 if String::from_utf8_lossy(&resp).contains("MANIFEST_BLOB_UNKNOWN") => continue,
            _ => panic!(
                "manifest PUT {repo}:{tag}: {status} {}",
                String::from_utf8_lossy(&resp)
            ),
        }
    }
    false
}

fn tags(addr: SocketAddr, repo: &str) -> Vec<String> {
    let (status, _, body) = http(addr, "GET", &format!("/v2/{repo}/tags/list"), &[], b"");
    if status != 200 {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Pulls `repo:tag`, checking every digest; returns the blob digests.
fn pull(addr: SocketAddr, repo: &str, tag: &str) -> Vec<String> {
    let (status, h, body) = http(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", MANIFEST)],
        b"",
    );
    assert_eq!(status, 200, "pull manifest {repo}:{tag}");
    let d = sha256(&body).to_string();
    assert_eq!(header(&h, "docker-content-digest"), Some(d.as_str()));
    let m: Value = serde_json::from_slice(&body).expect("manifest json");
    let mut digests = Vec::new();
    let descs = std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten());
    for desc in descs {
        let bd = desc["digest"].as_str().expect("digest").to_owned();
        let (status, _, blob) = http(addr, "GET", &format!("/v2/{repo}/blobs/{bd}"), &[], b"");
        assert_eq!(status, 200, "pull blob {bd} of {repo}:{tag}");
        assert_eq!(sha256(&blob).to_string(), bd, "content of {bd}");
        assert_eq!(Some(blob.len() as u64), desc["size"].as_u64());
        digests.push(bd);
    }
    digests
}

fn stored_blobs(data: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = data.join("blobs").join("sha256");
    for shard in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.insert(format!("sha256:{}", f.file_name().to_string_lossy()));
        }
    }
    out
}

/// Runs a manual GC through the API and waits until it is done.
fn manual_gc(addr: SocketAddr, params: &str) -> Value {
    let body = format!("{{\"schedule\":{{\"type\":\"Manual\"}},\"parameters\":{params}}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, h, resp) = http(
            addr,
            "POST",
            "/api/v2.0/system/gc/schedule",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        if status == 201 {
            let loc = header(&h, "location").expect("Location").to_owned();
            loop {
                let (status, _, run) = http(addr, "GET", &loc, &[], b"");
                assert_eq!(status, 200);
                let run: Value = serde_json::from_slice(&run).expect("run json");
                match run["job_status"].as_str() {
                    Some("Success") => return run,
                    Some("Error") => panic!("gc run failed: {run}"),
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
                assert!(Instant::now() < deadline, "gc run did not finish");
            }
        }
        assert_eq!(status, 429, "{}", String::from_utf8_lossy(&resp));
        if Instant::now() > deadline {
            let (_, _, list) = http(addr, "GET", "/api/v2.0/system/gc", &[], b"");
            let list = String::from_utf8_lossy(&list);
            panic!(
                "gc never scheduled; history: {}",
                &list[..list.len().min(3000)]
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a soak left: pushes and deletes acknowledged, the blobs of the
/// images still tagged, their number, and the last GC run.
struct Soaked {
    pushed: u64,
    deleted: u64,
    referenced: BTreeSet<String>,
    images: usize,
    run: Value,
}

/// Runs the soak against `servers` (see the module docs); the last GC run
/// (with untagged manifests) goes to the first, after the others stopped.
/// At least `min_pushes` pushes must get through: with no grace window,
/// GC takes a push's blobs before its manifest whenever a run falls in
/// between, and a push over three nodes is several times longer.
/// With a grace window of `grace` the last run is followed by one more
/// once that window is over (the blobs of the manifests it deleted were
/// touched by the deletion).
fn soak(servers: &mut [TestServer], min_pushes: u64, grace: Duration) -> Soaked {
    let nodes: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let addr = nodes[0];
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let deleted = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for p in 0..3usize {
        let (stop, pushed, nodes) = (stop.clone(), pushed.clone(), nodes.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let repo = REPOS[(p + i) % REPOS.len()];
                let layers: Vec<Vec<u8>> =
                    (0..2).map(|k| layer((p * 5 + i * 3 + k) % 12)).collect();
                let config = format!("{{\"pusher\":{p},\"push\":{i}}}").into_bytes();
                if push(
                    &nodes,
                    p + i,
                    repo,
                    &format!("p{p}-{}", i % 4),
                    &config,
                    &layers,
                ) {
                    pushed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in 0..2usize {
        let (stop, deleted, nodes) = (stop.clone(), deleted.clone(), nodes.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let addr = nodes[(t + i) % nodes.len()];
                std::thread::sleep(Duration::from_millis(150));
                let repo = REPOS[(t + i) % REPOS.len()];
                let list = tags(addr, repo);
                let Some(tag) = list.get(i % list.len().max(1)) else {
                    continue;
                };
                if i.is_multiple_of(2) {
                    // Delete the tag only: its manifest turns untagged.
                    let s = http(
                        addr,
                        "DELETE",
                        &format!("/v2/{repo}/manifests/{tag}"),
                        &[],
                        b"",
                    )
                    .0;
                    if s == 202 {
                        deleted.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let (s, h, _) = http(
                    addr,
                    "HEAD",
                    &format!("/v2/{repo}/manifests/{tag}"),
                    &[("Accept", MANIFEST)],
                    b"",
                );
                if s != 200 {
                    continue;
                }
                let Some(d) = header(&h, "docker-content-digest").map(str::to_owned) else {
                    continue;
                };
                let s = http(
                    addr,
                    "DELETE",
                    &format!("/v2/{repo}/manifests/{d}"),
                    &[],
                    b"",
                )
                .0;
                if s == 202 {
                    deleted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    {
        // Manual GC runs in a loop on top of the 1 s schedule.
        let (stop, nodes) = (stop.clone(), nodes.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (s, _, _) = http(
                    nodes[i % nodes.len()],
                    "POST",
                    "/api/v2.0/system/gc/schedule",
                    &[("Content-Type", "application/json")],
                    br#"{"schedule":{"type":"Manual"}}"#,
                );
                assert!(s == 201 || s == 429, "gc schedule: {s}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }
    let start = Instant::now();
    while start.elapsed() < SOAK {
        std::thread::sleep(Duration::from_millis(200));
        for server in servers.iter_mut() {
            server.assert_running();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("soak thread");
    }
    let pushed = pushed.load(Ordering::Relaxed);
    let deleted = deleted.load(Ordering::Relaxed);
    assert!(
        pushed >= min_pushes && deleted > 0,
        "pushed {pushed}, deleted {deleted}; server logs:\n{}",
        servers
            .iter()
            .map(|s| s.stderr())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );

    // Everything still tagged pulls with correct digests.
    let mut referenced = BTreeSet::new();
    let mut images = 0;
    for repo in REPOS {
        for tag in tags(addr, repo) {
            referenced.extend(pull(addr, repo, &tag));
            images += 1;
        }
    }
    assert!(images > 0);

    // A last run that also drops untagged manifests: afterwards the store
    // holds exactly the blobs of tagged images. The other nodes stop
    // first, so no run of theirs holds the cluster's GC.
    for server in servers[1..].iter_mut() {
        let status = server.stop();
        assert!(status.success(), "server exit: {status}");
    }
    let mut run = manual_gc(addr, r#"{"delete_untagged":true}"#);
    if !grace.is_zero() {
        std::thread::sleep(grace + Duration::from_millis(200));
        run = manual_gc(addr, "{}");
    }
    let (status, _, list) = http(addr, "GET", "/api/v2.0/system/gc", &[], b"");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_slice(&list).expect("history");
    assert!(list.as_array().is_some_and(|a| a.len() > 2), "{list}");
    let (status, _, metrics) = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    };
    assert!(metric("berth_gc_runs_total ") > 2, "{metrics}");
    assert!(metric("berth_gc_blobs_reclaimed_total ") > 0, "{metrics}");
    assert!(metrics.contains("berth_http_requests_total{method=\"PUT\",status=\"2xx\"}"));
    for repo in REPOS {
        for tag in tags(addr, repo) {
            pull(addr, repo, &tag);
        }
    }
    let status = servers[0].stop();
    assert!(status.success(), "server exit: {status}");
    Soaked {
        pushed,
        deleted,
        referenced,
        images,
        run,
    }
}

/// fsck's report is clean: no finding, no note.
fn assert_fsck_clean(code: i32, out: &str, err: &str) {
    assert_eq!(code, 0, "fsck: {out}{err}");
    assert!(!out.contains("note:"), "{out}");
}

#[test]
fn pushers_and_deleters_against_online_gc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut servers = [TestServer::start(
        &data,
        &[
            ("BERTH_GC_INTERVAL_SECONDS", "1"),
            ("BERTH_GC_GRACE_SECONDS", "0"),
            ("RUST_LOG", "warn"),
        ],
    )];
    let Soaked {
        pushed,
        deleted,
        referenced,
        images,
        run,
    } = soak(&mut servers, 10, Duration::ZERO);

    let (code, out, err) = berth_testkit::berthctl(&data, &["fsck", "--verify-blobs"]);
    assert_fsck_clean(code, &out, &err);

    // The same check in-process, on the engine this tree built.
    let report = berth_testkit::open_engine(&data)
        .fsck(berth_engine::fsck::FsckOptions { verify_blobs: true })
        .expect("fsck");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert!(report.unindexed_blobs.is_empty() && report.interrupted_deletions.is_empty());

    let stored = stored_blobs(&data);
    assert_eq!(
        stored, referenced,
        "store holds exactly the referenced blobs"
    );
    eprintln!(
        "soak: {pushed} pushes, {deleted} deletes, {images} tagged images, {} blobs stored; last run {}",
        stored.len(),
        run["report"]
    );
}

#[test]
fn pushers_and_deleters_against_online_gc_on_three_cluster_nodes() {
    let Some(db) = berth_engine::DatabaseConfig::for_test() else {
        eprintln!("BERTH_TEST_DATABASE_URL is not set: cluster soak skipped");
        return;
    };
    let (s3, bucket) = berth_testkit::s3_server_env(
        berth_engine::store::s3::TestTransport::Http,
        "berth-e2e",
        "s3",
        8 << 20,
    );
    let mut env: Vec<(String, String)> = s3;
    env.push(("BERTH_DATABASE_URL".into(), db.url.clone()));
    env.push(("BERTH_DATABASE_SCHEMA".into(), db.schema.clone()));
    let mut server_env = env.clone();
    server_env.extend([
        ("BERTH_GC_INTERVAL_SECONDS".into(), "1".into()),
        // A push over three nodes takes longer than a GC interval: a
        // second of grace lets pushes through while every run still takes
        // blobs that dedup may land on at that moment.
        ("BERTH_GC_GRACE_SECONDS".into(), "1".into()),
        ("RUST_LOG".into(), "warn".into()),
    ]);
    let refs: Vec<(&str, &str)> = server_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut servers: Vec<TestServer> = ["a", "b", "c"]
        .iter()
        .map(|n| TestServer::start(&dir.path().join(n), &refs))
        .collect();
    let Soaked {
        pushed,
        deleted,
        referenced,
        images,
        run,
    } = soak(&mut servers, 5, Duration::from_secs(1));

    let (code, out, err) =
        berth_testkit::berthctl_with(&dir.path().join("tool"), &["fsck", "--verify-blobs"], &env);
    assert_fsck_clean(code, &out, &err);
    let stored: BTreeSet<String> = bucket
        .list_sizes()
        .expect("list the bucket")
        .into_iter()
        .map(|(d, _)| d.to_string())
        .collect();
    assert_eq!(
        stored, referenced,
        "the bucket holds exactly the referenced blobs"
    );
    assert!(
        bucket.segment_keys().expect("list segments").is_empty(),
        "upload segments left in the bucket"
    );
    eprintln!(
        "cluster soak: {pushed} pushes, {deleted} deletes, {images} tagged images, {} blobs stored; last run {}",
        stored.len(),
        run["report"]
    );
}
