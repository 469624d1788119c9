//! Cluster mode end to end: several `berth serve` processes on one
//! PostgreSQL index (`BERTH_DATABASE_URL`, a schema of their own) and one
//! Ceph RGW bucket prefix. What one node acknowledges, every other node
//! answers at once: an image pushed with skopeo to one node pulls bit for
//! bit from the others, a tag moved on one node is never stale on the
//! others, a delete is a 404 everywhere at once, a node whose data
//! directory is wiped serves everything again. And a node that loses its
//! database answers 503 with the OCI error body (no 500, no panic) and
//! heals by itself when the database is back.
//!
//! Needs what `scripts/test.sh` starts: the S3 server (`S3_*`) and
//! PostgreSQL (`BERTH_TEST_DATABASE_URL`); `skopeo` on PATH; the `berth`
//! binary built.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;

use berth_engine::store::s3::TestTransport;
use berth_engine::DatabaseConfig;
use berth_testkit::haproxy::{free_port, Haproxy};
use berth_testkit::oci_layout::{self, sha256_digest, MEDIA_TYPE_MANIFEST};
use berth_testkit::server::{
    header, http, image_manifest, push_blob, push_manifest, skopeo_ok, TestServer,
};
use berth_testkit::tcp_proxy::TcpProxy;

/// The database of the test run, or the test is skipped (see
/// `DatabaseConfig::for_test`: the test command makes it required).
fn database() -> Option<DatabaseConfig> {
    let db = DatabaseConfig::for_test();
    if db.is_none() {
        eprintln!("BERTH_TEST_DATABASE_URL is not set: cluster tests skipped");
    }
    db
}

/// Environment of a cluster node: the S3 settings `s3` and the database.
fn node_env(s3: &[(String, String)], db: &DatabaseConfig, url: &str) -> Vec<(String, String)> {
    let mut env = s3.to_vec();
    env.push(("BERTH_DATABASE_URL".into(), url.to_owned()));
    env.push(("BERTH_DATABASE_SCHEMA".into(), db.schema.clone()));
    env
}

/// Cluster nodes `names` with data directories under `dir`, on `env`.
fn start_nodes(dir: &Path, names: &[&str], env: &[(String, String)]) -> Vec<TestServer> {
    names.iter().map(|n| start(&dir.join(n), env)).collect()
}

fn start(data: &Path, env: &[(String, String)]) -> TestServer {
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start(data, &refs)
}

fn put_blob(node: &TestServer, repo: &str, body: &[u8]) -> String {
    push_blob(node.addr, repo, body)
}

fn put_manifest(node: &TestServer, repo: &str, reference: &str, body: &[u8]) -> String {
    push_manifest(node.addr, repo, reference, body)
}

/// Pushes the OCI layout `src` (tag `v1`, every platform) with skopeo to
/// `image` (`repo:tag`) at the registry address `registry` (`node`'s, or a
/// proxy's in front of it: a failure shows `node`'s log).
fn push_image(node: &TestServer, registry: &str, src: &Path, image: &str) {
    skopeo_ok(
        node,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{registry}/{image}"),
        ],
    );
}

/// Pulls `image` (`repo:tag`, every platform) from `node` with skopeo into
/// the OCI layout `into`; every blob must equal the one in `src`.
fn pull_and_compare(
    node: &TestServer,
    image: &str,
    src: &Path,
    index: &oci_layout::ImageIndex,
    into: &Path,
) {
    pull_and_compare_from(node, &node.url(), image, src, index, into);
}

/// [`pull_and_compare`] through the registry address `via` (a proxy in
/// front of `node`, whose log a failure shows).
fn pull_and_compare_from(
    node: &TestServer,
    via: &str,
    image: &str,
    src: &Path,
    index: &oci_layout::ImageIndex,
    into: &Path,
) {
    skopeo_ok(
        node,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{via}/{image}"),
            &format!("oci:{}:v1", into.display()),
        ],
    );
    for m in &index.images {
        for d in m.blob_digests() {
            assert!(
                oci_layout::read_blob(src, &d) == oci_layout::read_blob(into, &d),
                "blob {d} of {image} pulled through {via} differs from the one pushed"
            );
        }
    }
}

/// Status and `Docker-Content-Digest` of a manifest HEAD.
fn head_manifest(node: &TestServer, repo: &str, reference: &str) -> (u16, Option<String>) {
    let (st, h, _) = http(
        node.addr,
        "HEAD",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", MEDIA_TYPE_MANIFEST)],
        b"",
    );
    (st, header(&h, "Docker-Content-Digest").map(str::to_owned))
}

#[test]
fn every_node_serves_what_any_node_acknowledged() {
    let Some(db) = database() else { return };
    let (s3, _bucket) =
        berth_testkit::s3_server_env(TestTransport::Http, "berth-e2e", "s3", 8 << 20);
    let env = node_env(&s3, &db, &db.url);
    let dirs = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_nodes(dirs.path(), &["a", "b", "c"], &env);

    // A multi-arch image pushed to node a pulls bit for bit from b and c.
    let src = dirs.path().join("src");
    let index = oci_layout::write_multi_arch(&src, "v1", "cluster", 300_000);
    push_image(&nodes[0], &nodes[0].url(), &src, "proj/multi:v1");
    for node in &nodes[1..] {
        let raw = skopeo_ok(
            node,
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{}/proj/multi:v1", node.url()),
            ],
        );
        assert_eq!(
            raw,
            index.index,
            "node {} serves other index bytes",
            node.url()
        );
    }
    pull_and_compare(
        &nodes[2],
        "proj/multi:v1",
        &src,
        &index,
        &dirs.path().join("pulled"),
    );

    // A tag moved 100 times on a: b and c never answer the old digest.
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec();
    let layer = b"cluster layer".to_vec();
    let c = (put_blob(&nodes[0], "proj/moving", &config), config.len());
    let l = (put_blob(&nodes[0], "proj/moving", &layer), layer.len());
    let mut stale = Vec::new();
    let mut last = String::new();
    for n in 0..100 {
        let d = put_manifest(
            &nodes[0],
            "proj/moving",
            "latest",
            &image_manifest(&c, &l, n),
        );
        last.clone_from(&d);
        for node in &nodes[1..] {
            let (st, got) = head_manifest(node, "proj/moving", "latest");
            if st != 200 || got.as_deref() != Some(d.as_str()) {
                stale.push((n, node.url(), st, got));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale answers after a tag move: {stale:?}"
    );

    // A delete on b is a 404 on a and c at once.
    let (st, _, _) = http(
        nodes[1].addr,
        "DELETE",
        "/v2/proj/moving/manifests/latest",
        &[],
        b"",
    );
    assert_eq!(st, 202, "tag delete on node b");
    for node in [&nodes[0], &nodes[2]] {
        assert_eq!(
            head_manifest(node, "proj/moving", "latest").0,
            404,
            "node {}",
            node.url()
        );
    }
    // So is a manifest deleted by digest on b while a and c read it by
    // digest without pause (what a node may keep for a moment: the delete
    // is acknowledged only once no node can still use a copy it read
    // before the commit).
    for node in [&nodes[0], &nodes[2]] {
        assert_eq!(head_manifest(node, "proj/moving", &last).0, 200);
    }
    let reading = std::sync::atomic::AtomicBool::new(true);
    let path = format!("/v2/proj/moving/manifests/{last}");
    std::thread::scope(|s| {
        for node in [&nodes[0], &nodes[2]] {
            let (reading, last) = (&reading, &last);
            s.spawn(move || {
                while reading.load(std::sync::atomic::Ordering::Relaxed) {
                    head_manifest(node, "proj/moving", last);
                }
            });
        }
        let (st, _, _) = http(nodes[1].addr, "DELETE", &path, &[], b"");
        reading.store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(st, 202, "manifest delete on node b");
    });
    for node in [&nodes[0], &nodes[2]] {
        assert_eq!(
            head_manifest(node, "proj/moving", &last).0,
            404,
            "node {}",
            node.url()
        );
    }

    // Node b's data directory is only a cache: wiped, it serves everything.
    nodes[1].kill9();
    std::fs::remove_dir_all(&nodes[1].data_dir).expect("wipe node b");
    nodes[1].restart();
    let again = dirs.path().join("again");
    skopeo_ok(
        &nodes[1],
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/proj/multi:v1", nodes[1].url()),
            &format!("oci:{}:v1", again.display()),
        ],
    );
    assert_eq!(
        oci_layout::read_blob(&again, &index.shared_layer_digest),
        oci_layout::read_blob(&src, &index.shared_layer_digest),
        "node b after the wipe"
    );
    for node in &mut nodes {
        node.assert_running();
    }

    // berthctl works online against the database and the bucket (its data
    // directory is its own cache): stats, GC while the nodes serve, fsck.
    let tool = dirs.path().join("tool");
    let (code, out, err) = berth_testkit::berthctl_with(&tool, &["stats"], &env);
    assert_eq!(code, 0, "berthctl stats: {err}");
    assert!(
        out.contains("tags       1"),
        "one tag is left (proj/multi:v1):\n{out}"
    );
    let (code, out, err) = berth_testkit::berthctl_with(
        &tool,
        &["gc", "--grace-seconds", "0", "--delete-untagged"],
        &env,
    );
    assert_eq!(code, 0, "berthctl gc in cluster mode: {out}{err}");
    let (code, out, err) = berth_testkit::berthctl_with(&tool, &["fsck", "--verify-blobs"], &env);
    assert_eq!(code, 0, "berthctl fsck in cluster mode: {out}{err}");
    assert!(!out.contains("note:"), "{out}");
    for node in &nodes {
        let raw = skopeo_ok(
            node,
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{}/proj/multi:v1", node.url()),
            ],
        );
        assert_eq!(raw, index.index, "node {} after GC", node.url());
    }
}

#[test]
fn a_node_without_its_database_answers_503_and_heals() {
    let Some(db) = database() else { return };
    let (s3, _bucket) =
        berth_testkit::s3_server_env(TestTransport::Http, "berth-e2e", "s3", 8 << 20);
    let url = url::Url::parse(&db.url).expect("database URL");
    let target = (url.host_str().expect("host"), url.port().unwrap_or(5432))
        .to_socket_addrs()
        .expect("resolve database")
        .next()
        .expect("database address");
    let proxy = TcpProxy::start(target);
    let mut via = url.clone();
    via.set_port(Some(proxy.addr.port())).expect("port");
    let env = node_env(&s3, &db, via.as_str());
    let dirs = tempfile::tempdir().expect("tempdir");
    let mut node = start(&dirs.path().join("n"), &env);

    let config = b"{}".to_vec();
    let layer = b"outage layer".to_vec();
    let c = (put_blob(&node, "proj/app", &config), config.len());
    let l = (put_blob(&node, "proj/app", &layer), layer.len());
    let before = put_manifest(&node, "proj/app", "v1", &image_manifest(&c, &l, 1));

    proxy.cut();
    let reads_and_writes: [(&str, String, Vec<u8>); 3] = [
        ("GET", "/v2/proj/app/manifests/v1".into(), Vec::new()),
        (
            "PUT",
            "/v2/proj/app/manifests/v2".into(),
            image_manifest(&c, &l, 2),
        ),
        ("GET", "/v2/proj/app/tags/list".into(), Vec::new()),
    ];
    for (method, path, body) in &reads_and_writes {
        let (st, h, b) = http(
            node.addr,
            method,
            path,
            &[("Content-Type", MEDIA_TYPE_MANIFEST)],
            body,
        );
        assert_eq!(
            st,
            503,
            "{method} {path} without the database: {}",
            String::from_utf8_lossy(&b)
        );
        let v: serde_json::Value = serde_json::from_slice(&b).expect("OCI error JSON");
        assert_eq!(
            v["errors"][0]["code"], "UNAVAILABLE",
            "{method} {path}: {v}"
        );
        assert_eq!(header(&h, "Retry-After"), Some("1"));
    }
    node.assert_running();

    proxy.restore();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (st, d) = head_manifest(&node, "proj/app", "v1");
        if st == 200 {
            assert_eq!(d.as_deref(), Some(before.as_str()), "v1 after the outage");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery: {st}\n{}",
            node.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Nothing of the refused PUT was written; a new one goes through.
    assert_eq!(head_manifest(&node, "proj/app", "v2").0, 404);
    put_manifest(&node, "proj/app", "v2", &image_manifest(&c, &l, 2));
    let log = node.stderr();
    assert!(!log.contains("panicked"), "the node panicked:\n{log}");
}

/// PATCHes `chunk` at `at` to upload `location` through `node`; the
/// acknowledged end (from `Range: 0-<last>`).
fn patch(node: &TestServer, location: &str, at: usize, chunk: &[u8]) -> u64 {
    let range = format!("{at}-{}", at + chunk.len() - 1);
    let (st, h, b) = http(
        node.addr,
        "PATCH",
        location,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        chunk,
    );
    assert_eq!(
        st,
        202,
        "PATCH {range} on {}: {}",
        node.url(),
        String::from_utf8_lossy(&b)
    );
    acknowledged(&h)
}

/// The end of `Range: 0-<last>`, as a byte count.
fn acknowledged(h: &[(String, String)]) -> u64 {
    let range = header(h, "Range").expect("Range header");
    let last: u64 = range
        .strip_prefix("0-")
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("Range {range:?}"));
    last + 1
}

/// A chunked upload whose POST, PATCHes and PUT each reach another node,
/// with chunks from 1 byte to 6 MiB; a node killed in the middle of a
/// PATCH loses nothing acknowledged, and another node goes on with the
/// session. Then skopeo pushes and pulls a multi-arch image through haproxy
/// balancing every request round-robin over the three nodes.
#[test]
fn an_upload_moves_between_nodes() {
    let Some(db) = database() else { return };
    let (s3, bucket) =
        berth_testkit::s3_server_env(TestTransport::Http, "berth-e2e", "s3", 8 << 20);
    let env = node_env(&s3, &db, &db.url);
    let dirs = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_nodes(dirs.path(), &["a", "b", "c"], &env);

    let sizes = [1024, 6 << 20, 1, 3 << 20, 7];
    let total: usize = sizes.iter().sum::<usize>() + 10;
    let data = berth_testkit::content("moving upload", total);
    let digest = sha256_digest(&data);
    let (st, h, b) = http(
        nodes[0].addr,
        "POST",
        "/v2/proj/moved/blobs/uploads/",
        &[],
        b"",
    );
    assert_eq!(st, 202, "POST: {}", String::from_utf8_lossy(&b));
    let location = header(&h, "Location").expect("Location").to_owned();
    let location = location
        .find("/v2/")
        .map_or(location.clone(), |i| location[i..].to_owned());
    let mut at = 0;
    for (i, n) in sizes.iter().enumerate() {
        let end = patch(&nodes[(i + 1) % 3], &location, at, &data[at..at + n]);
        at += n;
        assert_eq!(end, at as u64, "acknowledged offset after chunk {i}");
    }

    // Node b dies in the middle of a PATCH: what it had not acknowledged
    // is gone, what was acknowledged is everywhere.
    let mut stream = TcpStream::connect(nodes[1].addr).expect("connect to node b");
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: {at}-{}\r\nContent-Length: {}\r\n\r\n",
        nodes[1].url(),
        at + (4 << 20) - 1,
        4 << 20
    );
    stream.write_all(head.as_bytes()).expect("PATCH head");
    stream
        .write_all(&berth_testkit::content("never acknowledged", 1 << 20))
        .expect("part of the PATCH body");
    std::thread::sleep(std::time::Duration::from_millis(300));
    nodes[1].kill9();
    drop(stream);
    let (st, h, _) = http(nodes[2].addr, "GET", &location, &[], b"");
    assert_eq!(st, 204, "upload status on node c after b died");
    assert_eq!(acknowledged(&h), at as u64, "durable offset after the kill");
    nodes[1].restart();

    // The last bytes come with the PUT, on node c; node b serves the blob.
    let (st, _, b) = http(
        nodes[2].addr,
        "PUT",
        &format!("{location}?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        &data[at..],
    );
    assert_eq!(st, 201, "PUT on node c: {}", String::from_utf8_lossy(&b));
    let (st, _, got) = http(
        nodes[1].addr,
        "GET",
        &format!("/v2/proj/moved/blobs/{digest}"),
        &[],
        b"",
    );
    assert_eq!(st, 200);
    assert!(got == data, "the blob differs from what was uploaded");
    let (st, _, _) = http(nodes[0].addr, "GET", &location, &[], b"");
    assert_eq!(st, 404, "the completed session is gone everywhere");
    assert_eq!(
        bucket.segment_keys().expect("list segments"),
        Vec::<String>::new(),
        "segments left in the bucket"
    );

    // skopeo through haproxy, every request to the next node.
    let port = free_port();
    let servers: String = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("  server n{i} {}\n", n.addr))
        .collect();
    let _haproxy = Haproxy::start(
        dirs.path(),
        port,
        &format!(
            "global\n  maxconn 256\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
             backend be\n  balance roundrobin\n{servers}"
        ),
    );
    let via = format!("127.0.0.1:{port}");
    let src = dirs.path().join("src");
    let index = oci_layout::write_multi_arch(&src, "v1", "round robin", 9 << 20);
    push_image(&nodes[0], &via, &src, "proj/rr:v1");
    pull_and_compare_from(
        &nodes[0],
        &via,
        "proj/rr:v1",
        &src,
        &index,
        &dirs.path().join("pulled"),
    );
    for (i, node) in nodes.iter().enumerate() {
        pull_and_compare(
            node,
            "proj/rr:v1",
            &src,
            &index,
            &dirs.path().join(format!("from-{i}")),
        );
    }

    assert_eq!(
        bucket.segment_keys().expect("list segments"),
        Vec::<String>::new(),
        "segments left in the bucket after the push"
    );

    // A node SIGKILLed in the middle of a push through haproxy: the push
    // may fail; retried once the node is back, it succeeds, and every
    // node serves the image bit for bit.
    let killed_src = dirs.path().join("killed-src");
    let killed = oci_layout::write_multi_arch(&killed_src, "v1", "killed push", 9 << 20);
    let push = std::process::Command::new("skopeo")
        .args(berth_testkit::server::SKOPEO_GLOBAL)
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", killed_src.display()),
            &format!("docker://{via}/proj/killed:v1"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("running skopeo");
    std::thread::sleep(std::time::Duration::from_millis(400));
    nodes[1].kill9();
    let first = push.wait_with_output().expect("skopeo push");
    eprintln!("push cut by a node's SIGKILL exited {}", first.status);
    nodes[1].restart();
    push_image(&nodes[0], &via, &killed_src, "proj/killed:v1");
    for (i, node) in nodes.iter().enumerate() {
        pull_and_compare(
            node,
            "proj/killed:v1",
            &killed_src,
            &killed,
            &dirs.path().join(format!("killed-from-{i}")),
        );
    }
    for node in &mut nodes {
        node.assert_running();
    }
}

/// Moving in: a single node (local disk, RocksDB) with an image and an
/// upload in progress is stopped and imported into an empty cluster; two
/// cluster nodes then serve the image bit for bit, fsck is clean online,
/// and a second import into the now non-empty database is refused.
#[test]
fn a_single_node_moves_into_a_cluster() {
    let Some(db) = database() else { return };
    let (s3, bucket) =
        berth_testkit::s3_server_env(TestTransport::Http, "berth-e2e", "s3", 8 << 20);
    let env = node_env(&s3, &db, &db.url);
    let dirs = tempfile::tempdir().expect("tempdir");
    let single_dir = dirs.path().join("single");
    let mut single = TestServer::start(&single_dir, &[]);
    let src = dirs.path().join("src");
    let index = oci_layout::write_multi_arch(&src, "v1", "moving in", 200_000);
    push_image(&single, &single.url(), &src, "proj/moved:v1");
    let (st, _, _) = http(
        single.addr,
        "POST",
        "/v2/proj/moved/blobs/uploads/",
        &[],
        b"",
    );
    assert_eq!(st, 202, "an upload left in progress");
    assert!(single.stop().success());

    let (code, out, err) = berth_testkit::berthctl_with(&single_dir, &["cluster", "import"], &env);
    assert_eq!(code, 0, "berthctl cluster import: {out}{err}");
    assert!(
        out.contains("1 upload session(s) in progress were not imported"),
        "{out}"
    );
    assert!(
        !bucket.list_sizes().expect("list the bucket").is_empty(),
        "no blob reached the bucket"
    );

    let nodes = start_nodes(dirs.path(), &["a", "b"], &env);
    pull_and_compare(
        &nodes[1],
        "proj/moved:v1",
        &src,
        &index,
        &dirs.path().join("pulled"),
    );
    let tool = dirs.path().join("tool");
    let (code, out, err) = berth_testkit::berthctl_with(&tool, &["fsck", "--verify-blobs"], &env);
    assert_eq!(code, 0, "fsck after the import: {out}{err}");
    assert!(!out.contains("note:"), "{out}");

    let (code, out, err) = berth_testkit::berthctl_with(&single_dir, &["cluster", "import"], &env);
    assert_ne!(
        code, 0,
        "a second import went into a serving cluster: {out}"
    );
    assert!(err.contains("not empty"), "{err}");
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

#[test]
fn tokens_and_accounts_of_one_node_hold_on_every_node() {
    let Some(db) = database() else { return };
    let (s3, _bucket) =
        berth_testkit::s3_server_env(TestTransport::Http, "berth-e2e", "s3", 8 << 20);
    let mut env = node_env(&s3, &db, &db.url);
    env.push(("BERTH_AUTH_ENABLED".into(), "true".into()));
    env.push(("BERTH_ADMIN_PASSWORD".into(), "cluster-admin-pw".into()));
    let dirs = tempfile::tempdir().expect("tempdir");
    let a = start(&dirs.path().join("a"), &env);
    let b = start(&dirs.path().join("b"), &env);
    let admin = basic("admin", "cluster-admin-pw");

    // A token node a issues opens node b.
    let (st, _, body) = http(
        a.addr,
        "GET",
        "/service/token?service=berth-registry&scope=repository:proj/app:pull,push",
        &[("Authorization", admin.as_str())],
        b"",
    );
    assert_eq!(
        st,
        200,
        "token from node a: {}",
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body).expect("token JSON");
    let token = v["token"].as_str().expect("token field");
    let bearer = format!("Bearer {token}");
    let (st, _, _) = http(
        b.addr,
        "GET",
        "/v2/",
        &[("Authorization", bearer.as_str())],
        b"",
    );
    assert_eq!(st, 200, "node b refuses node a's token");
    let forged = format!("Bearer {}x", &token[..token.len() - 1]);
    let (st, _, _) = http(
        b.addr,
        "GET",
        "/v2/",
        &[("Authorization", forged.as_str())],
        b"",
    );
    assert_eq!(st, 401, "node b accepts an altered token");

    // A user created through node a signs in on node b at once.
    let user = serde_json::json!({"username": "dev1", "email": "dev1@example.com",
        "realname": "Dev One", "password": "Dev1-password"});
    let (st, _, body) = http(
        a.addr,
        "POST",
        "/api/v2.0/users",
        &[
            ("Authorization", admin.as_str()),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(&user).expect("JSON"),
    );
    assert_eq!(
        st,
        201,
        "create user on node a: {}",
        String::from_utf8_lossy(&body)
    );
    let dev = basic("dev1", "Dev1-password");
    let (st, _, _) = http(
        b.addr,
        "GET",
        "/v2/",
        &[("Authorization", dev.as_str())],
        b"",
    );
    assert_eq!(st, 200, "node b does not know the user node a created");
}
