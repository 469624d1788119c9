//! End to end against a real Ceph RGW: a `berth serve` process with
//! `BERTH_STORAGE_BACKEND=s3` and `=tiered`, pushed to and pulled from with
//! skopeo. Covers a layer above the multipart threshold, kill -9 + restart,
//! and a pull after the local cache is wiped (served from the bucket).
//!
//! And the same bucket over HTTPS: the server and `berthctl
//! s3-abort-uploads` against RGW behind a TLS-terminating haproxy whose
//! certificate a private CA signed, trusted through `BERTH_S3_CA_FILE`.
//!
//! Needs the S3 server and TLS front `scripts/test.sh` starts
//! (`S3_ENDPOINT`, `S3_HTTPS_ENDPOINT`, `S3_CA_FILE`, …; the tests fail,
//! naming the fix, without them), `skopeo` on PATH and the `berth` and
//! `berthctl` binaries built.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_engine::store::s3::TestTransport;
use berth_engine::store::S3Store;
use berth_engine::{BlobStore, Digest};
use berth_testkit::oci_layout::{self, Image};
use berth_testkit::server::{http, skopeo_ok, TestServer};

const MIB: usize = 1 << 20;
/// Multipart threshold the servers run with: the big layer is above it.
const THRESHOLD: usize = 8 * MIB;

fn copy(server: &TestServer, src: &str, dest: &str) {
    skopeo_ok(
        server,
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--preserve-digests",
            "--dest-oci-accept-uncompressed-layers",
            src,
            dest,
        ],
    );
}

fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// Pulls `repo:tag` into a fresh layout and checks manifest and every blob
/// byte for byte against the layout `src` it was pushed from.
fn assert_pull_matches(server: &TestServer, src: &Path, tag: &str, repo: &str, image: &Image) {
    let remote = format!("docker://{}/{repo}:{tag}", server.url());
    let raw = skopeo_ok(server, &["inspect", "--tls-verify=false", "--raw", &remote]);
    assert_eq!(
        raw, image.manifest,
        "registry serves other manifest bytes for {remote}"
    );
    let out = tempfile::tempdir().expect("tempdir");
    let pulled = out.path().join("layout");
    copy(server, &remote, &oci_ref(&pulled, tag));
    let desc = oci_layout::tagged_descriptor(&pulled, tag);
    assert_eq!(desc["digest"], image.manifest_digest.as_str());
    for d in image.blob_digests() {
        let a = oci_layout::read_blob(src, &d);
        let b = oci_layout::read_blob(&pulled, &d);
        assert!(
            a == b,
            "blob {d}: pulled {} bytes differ from the {} pushed",
            b.len(),
            a.len()
        );
    }
}

/// Server environment for `backend` on a fresh root prefix of the test
/// bucket; also returns a client on the same prefix.
fn s3_env(backend: &str) -> (Vec<(String, String)>, S3Store) {
    s3_env_over(TestTransport::Http, backend)
}

/// [`s3_env`] with the bucket reached over `transport`.
fn s3_env_over(transport: TestTransport, backend: &str) -> (Vec<(String, String)>, S3Store) {
    berth_testkit::s3_server_env(transport, "berth-e2e", backend, THRESHOLD)
}

fn digests(image: &Image) -> BTreeSet<Digest> {
    image
        .blob_digests()
        .iter()
        .map(|d| Digest::parse(d).expect("digest"))
        .collect()
}

/// The blobs of `image` that are not (yet) in the bucket.
fn missing_in_bucket(bucket: &S3Store, image: &Image) -> Vec<Digest> {
    digests(image)
        .into_iter()
        .filter(|d| bucket.stat(d).expect("stat in bucket").is_none())
        .collect()
}

fn run_backend(backend: &str) {
    let (env, bucket) = s3_env(backend);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dirs = tempfile::tempdir().expect("tempdir");
    let data = dirs.path().join("data");
    let src = dirs.path().join("src");
    let image = oci_layout::write_image(&src, "v1", backend, &[1000, THRESHOLD + 3 * MIB + 17]);
    let mut server = TestServer::start(&data, &env_refs);

    copy(
        &server,
        &oci_ref(&src, "v1"),
        &format!("docker://{}/proj/app:v1", server.url()),
    );
    if backend == "s3" {
        // Write-through: acknowledged means in the bucket.
        assert_eq!(
            missing_in_bucket(&bucket, &image),
            vec![],
            "s3: acknowledged blobs not in the bucket"
        );
    }
    assert_pull_matches(&server, &src, "v1", "proj/app", &image);

    // kill -9 right after the push: the tiered journal resumes the copies.
    server.kill9();
    server.restart();
    assert_pull_matches(&server, &src, "v1", "proj/app", &image);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing = missing_in_bucket(&bucket, &image);
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: blobs never reached the bucket: {missing:?}\n--- server stderr ---\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The big layer went up as a multipart upload: nothing left staged.
    let leftovers: Vec<_> = std::fs::read_dir(data.join("blobs/staging"))
        .expect("staging dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "{backend}: upload files left behind: {leftovers:?}"
    );

    // Wipe the local cache: every blob now comes from the bucket.
    server.kill9();
    std::fs::remove_dir_all(data.join("blobs")).expect("wipe local blobs");
    server.restart();
    assert_pull_matches(&server, &src, "v1", "proj/app", &image);
    assert!(
        data.join("blobs/sha256").is_dir(),
        "{backend}: the pull did not fill the local cache"
    );
    // /metrics counts the reads that went to the bucket.
    let addr = server.url().parse().expect("addr");
    let (status, _, body) = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let misses: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("berth_tier_misses_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no berth_tier_misses_total in {text}"));
    assert!(
        misses > 0,
        "{backend}: reads from the bucket not counted: {text}"
    );
}

#[test]
fn s3_backend_push_kill9_wipe_cache_pull() {
    run_backend("s3");
}

#[test]
fn tiered_backend_push_kill9_wipe_cache_pull() {
    run_backend("tiered");
}

/// Blobs only in the bucket are streamed to the client while the cache
/// fills (`BlobData::Stream`), on the async path: several connections pull
/// remote-only blobs at once while others keep asking small questions, and
/// every body hashes to its digest.
#[test]
fn remote_only_blobs_stream_to_concurrent_connections() {
    use berth_testkit::keepalive::Conn;
    let (env, _bucket) = s3_env("s3");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = TestServer::start(&data, &env);
    let blobs: Vec<(String, Vec<u8>)> = [2 * MIB + 3, 5 * MIB, 9 * MIB + 1]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let bytes = berth_testkit::content(&format!("remote {i}"), len);
            let d = berth_testkit::sha256(&bytes).to_string();
            let (status, _, body) = http(
                server.addr,
                "POST",
                &format!("/v2/proj/remote/blobs/uploads/?digest={d}"),
                &[],
                &bytes,
            );
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            (d, bytes)
        })
        .collect();
    server.kill9();
    std::fs::remove_dir_all(data.join("blobs")).expect("wipe local blobs");
    server.restart();
    let addr = server.addr;
    let blobs = std::sync::Arc::new(blobs);
    let pullers: Vec<_> = (0..6)
        .map(|c| {
            let blobs = blobs.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let (d, bytes) = &blobs[c % blobs.len()];
                let res = conn.request("GET", &format!("/v2/proj/remote/blobs/{d}"), &[]);
                assert_eq!(res.status, 200);
                assert_eq!(res.body.len(), bytes.len());
                assert!(res.body == *bytes, "connection {c}: not the bytes of {d}");
            })
        })
        .collect();
    let mut conn = Conn::open(addr);
    for _ in 0..20 {
        assert_eq!(conn.request("GET", "/v2/", &[]).status, 200);
    }
    for p in pullers {
        p.join()
            .unwrap_or_else(|_| panic!("a pull failed\n{}", server.stderr()));
    }
}

/// The `s3` backend with the bucket behind TLS and a private CA
/// (`BERTH_S3_ENDPOINT=https://…`, `BERTH_S3_CA_FILE`): a blob above the
/// multipart threshold is in the bucket when its upload is acknowledged,
/// and after kill -9 and a wiped cache it is served from the bucket.
#[test]
fn s3_backend_over_https_with_a_private_ca() {
    let (env, bucket) = s3_env_over(TestTransport::Https, "s3");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert!(env.contains(&("BERTH_S3_ENDPOINT", bucket.config().endpoint.as_str())));
    assert!(bucket.config().endpoint.starts_with("https://"));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = TestServer::start(&data, &env);
    let bytes = berth_testkit::content("over https", THRESHOLD + 2 * MIB + 5);
    let d = berth_testkit::sha256(&bytes);
    let (status, _, body) = http(
        server.addr,
        "POST",
        &format!("/v2/proj/tls/blobs/uploads/?digest={d}"),
        &[],
        &bytes,
    );
    assert_eq!(
        status,
        201,
        "{}\n--- server stderr ---\n{}",
        String::from_utf8_lossy(&body),
        server.stderr()
    );
    assert_eq!(
        bucket.stat(&d).expect("stat in bucket"),
        Some(bytes.len() as u64),
        "write-through: acknowledged means in the bucket"
    );
    assert!(
        bucket.multipart_uploads().expect("list").is_empty(),
        "the multipart upload was completed, not left behind"
    );
    server.kill9();
    std::fs::remove_dir_all(data.join("blobs")).expect("wipe local blobs");
    server.restart();
    let (status, _, body) = http(
        server.addr,
        "GET",
        &format!("/v2/proj/tls/blobs/{d}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{}", server.stderr());
    assert!(body == bytes, "the blob read back from the bucket differs");
}

/// `berthctl s3-abort-uploads` over HTTPS: it trusts the private CA given
/// with `--s3-ca-file` and fails, naming the certificate, without it.
#[test]
fn s3_abort_uploads_over_https() {
    let (_, bucket) = s3_env_over(TestTransport::Https, "sweep");
    let c = bucket.config();
    let ca = c.ca_file.clone().expect("ca file");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca.display().to_string();
    let mut args = vec![
        "s3-abort-uploads",
        "--older-than-seconds",
        "0",
        "--s3-endpoint",
        &c.endpoint,
        "--s3-region",
        &c.region,
        "--s3-bucket",
        &c.bucket,
        "--s3-access-key",
        &c.access_key,
        "--s3-secret-key",
        &c.secret_key,
        "--s3-root",
        &c.root,
    ];
    let (code, out, err) = berth_testkit::berthctl(dir.path(), &args);
    assert_ne!(code, 0, "succeeded without the CA: {out}");
    assert!(
        err.contains("list multipart uploads") && err.contains("certificate"),
        "the error names the call and the cause: {err}"
    );
    args.extend(["--s3-ca-file", ca.as_str()]);
    let (code, out, err) = berth_testkit::berthctl(dir.path(), &args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("aborted 0 stale multipart upload(s)"), "{out}");
}
