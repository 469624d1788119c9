//! End to end: `berthctl import distribution` reads a storage tree written
//! by the real CNCF distribution 2.8.2 (Debian's `docker-registry`, started
//! by `../shared/bench/start-distribution.sh`), fed by skopeo; berth then
//! serves every tag bit for bit. Damage in the tree (a blob whose bytes no
//! longer hash to its digest, a dangling tag) is reported, not imported; an
//! import killed halfway and run again finishes the job.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_engine::store::s3::TestTransport;
use berth_engine::store::S3Config;
use berth_testkit::haproxy::free_port;
use berth_testkit::oci_layout::{self, sha256_digest, MEDIA_TYPE_MANIFEST};
use berth_testkit::server::{http, push_blob, push_manifest, skopeo, skopeo_ok, TestServer};
use berth_testkit::{berthctl, berthctl_with, bin_path, s3_server_env};
use serde_json::{json, Value};

/// The reference registry on a filesystem root, stopped on drop.
struct Distribution {
    port: u16,
    root: PathBuf,
    script_dir: PathBuf,
    /// The process, when the test started it itself ([`Distribution::start_s3`]).
    child: std::sync::Mutex<Option<std::process::Child>>,
}

impl Distribution {
    fn start(root: &Path) -> Distribution {
        let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench");
        let port = free_port();
        let out = Command::new("bash")
            .arg(script_dir.join("start-distribution.sh"))
            .arg(port.to_string())
            .arg(root)
            .stdin(Stdio::null())
            .output()
            .expect("run start-distribution.sh");
        assert!(
            out.status.success(),
            "start-distribution.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Distribution {
            port,
            root: root.to_owned(),
            script_dir,
            child: std::sync::Mutex::new(None),
        }
    }

    /// The reference registry with its S3 driver on `c`'s bucket, objects
    /// below `c.root` (its `rootdirectory`); config and log beside `dir`,
    /// as `start-distribution.sh` keeps them.
    fn start_s3(dir: &Path, c: &S3Config) -> Distribution {
        let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench");
        std::fs::create_dir_all(dir).expect("dist dir");
        let port = free_port();
        let conf = dir.with_extension("yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  s3:\n    region: {}\n    regionendpoint: {}\n    bucket: {}\n\
                 \x20   accesskey: {}\n    secretkey: {}\n    secure: false\n    v4auth: true\n\
                 \x20   rootdirectory: /{}\n  delete:\n    enabled: true\n  redirect:\n    disable: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                c.region, c.endpoint, c.bucket, c.access_key, c.secret_key, c.root
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.with_extension("log")).expect("log");
        // distribution's S3 driver cannot load a CA bundle named by the
        // environment over its own HTTP transport (it panics at start).
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("run docker-registry");
        let d = Distribution {
            port,
            root: dir.to_owned(),
            script_dir,
            child: std::sync::Mutex::new(Some(child)),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(d.addr()).is_ok() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry on S3 not answering: {}",
            std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
        );
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn stop(&self) {
        let child = self.child.lock().map(|mut c| c.take()).unwrap_or(None);
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
            return;
        }
        let _ = Command::new("bash")
            .arg(self.script_dir.join("stop-distribution.sh"))
            .arg(self.port.to_string())
            .arg(&self.root)
            .output();
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.stop();
    }
}

const COPY: &[&str] = &[
    "copy",
    "--all",
    "--src-tls-verify=false",
    "--dest-tls-verify=false",
    "--preserve-digests",
    "--dest-oci-accept-uncompressed-layers",
];

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, _, body) = http(addr, "GET", path, &[], b"");
    assert_eq!(status, 200, "GET {path}");
    serde_json::from_slice(&body).expect("json")
}

fn tags(addr: SocketAddr, repo: &str) -> BTreeSet<String> {
    let v = get_json(addr, &format!("/v2/{repo}/tags/list"));
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `skopeo inspect --raw` of `image` on a registry.
fn raw_manifest(image: &str) -> Vec<u8> {
    skopeo(&["inspect", "--tls-verify=false", "--raw", image])
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    root.join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// What the source holds, read from distribution before it is stopped.
struct Source {
    catalog: BTreeSet<String>,
    tags: Vec<(String, BTreeSet<String>)>,
    /// (repo:tag, manifest bytes as distribution serves them).
    manifests: Vec<(String, Vec<u8>)>,
}

fn read_source(dist: &Distribution, repos: &[&str]) -> Source {
    let addr = dist.addr();
    let catalog = get_json(addr, "/v2/_catalog")["repositories"]
        .as_array()
        .expect("catalog")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let mut tag_lists = Vec::new();
    let mut manifests = Vec::new();
    for repo in repos {
        let t = tags(addr, repo);
        for tag in &t {
            let image = format!("docker://{addr}/{repo}:{tag}");
            manifests.push((format!("{repo}:{tag}"), raw_manifest(&image)));
        }
        tag_lists.push((repo.to_string(), t));
    }
    Source {
        catalog,
        tags: tag_lists,
        manifests,
    }
}

/// What [`push_set`] pushed to a distribution instance.
struct Pushed {
    layouts: PathBuf,
    image: oci_layout::Image,
    index: oci_layout::ImageIndex,
    /// The image whose one layer the test damages.
    hurt: oci_layout::Image,
    referrer_digest: String,
    source: Source,
}

/// Pushes to `dist`, then reads back what it serves: a single image under
/// two tags, a multi-arch index, an artifact whose subject is the single
/// image, and a victim whose layer the test damages.
fn push_set(dist: &Distribution, layouts: &Path) -> Pushed {
    let addr = dist.addr();
    let single = layouts.join("single");
    let image = oci_layout::write_image(&single, "v1", "import/single", &[300_000, 5_000]);
    let multi = layouts.join("multi");
    let index = oci_layout::write_multi_arch(&multi, "v2", "import/multi", 200_000);
    let victim = layouts.join("victim");
    let hurt = oci_layout::write_image(&victim, "v1", "import/victim", &[70_000]);
    let push = |layout: &Path, tag: &str, dest: &str| {
        let src = format!("oci:{}:{tag}", layout.display());
        let dest = format!("docker://{addr}/{dest}");
        let mut args = COPY.to_vec();
        args.extend_from_slice(&[&src, &dest]);
        skopeo(&args);
    };
    push(&single, "v1", "team/app:v1");
    push(&single, "v1", "team/app:stable");
    push(&multi, "v2", "team/multi:v2");
    push(&victim, "v1", "victim/app:v1");
    let empty = push_blob(addr, "team/app", b"{}");
    let sbom = push_blob(addr, "team/app", b"an sbom");
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sbom, "size": 7}],
        "subject": {"mediaType": MEDIA_TYPE_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len()},
    }))
    .expect("json");
    let referrer_digest = sha256_digest(&referrer);
    push_manifest(addr, "team/app", &referrer_digest, &referrer);
    let source = read_source(dist, &["team/app", "team/multi"]);
    Pushed {
        layouts: layouts.to_owned(),
        image,
        index,
        hurt,
        referrer_digest,
        source,
    }
}

/// The damaged victim layer and the dangling tag are reported (the blob
/// named by `damaged_path`), the import's exit code is 1, a second run
/// copies nothing, fsck is clean, and berth serves what distribution
/// served, bit for bit (the victim's manifest stayed out). Berth runs with
/// `env` too. The first run's report.
fn check_import(
    data: &Path,
    from: &str,
    env: &[(String, String)],
    damaged_path: &str,
    p: &Pushed,
) -> Value {
    let (code, out, err) = berthctl_with(data, &["import", "distribution", "--from", from], env);
    assert_eq!(code, 1, "problems make exit code 1\n{out}\n{err}");
    assert!(out.contains("is damaged"), "{out}");
    assert!(out.contains("dangling tag ghost"), "{out}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(data.join("import-report.json")).expect("report"))
            .expect("report json");
    let problems = report["problems"].as_array().expect("problems");
    assert!(
        problems
            .iter()
            .any(|p| p["path"].as_str() == Some(damaged_path)),
        "the damaged blob is named by its path {damaged_path}: {report}"
    );
    let first = report.clone();
    // A second run finds everything in place and copies nothing.
    let (_, again, _) = berthctl_with(data, &["import", "distribution", "--from", from], env);
    let rerun: Value =
        serde_json::from_slice(&std::fs::read(data.join("import-report.json")).expect("report"))
            .expect("report json");
    assert_eq!(rerun["blobs_copied"], 0, "{again}");
    assert_eq!(rerun["bytes_copied"], 0, "{again}");
    let (code, out, err) = berthctl_with(data, &["fsck", "--verify-blobs"], env);
    assert_eq!(code, 0, "fsck after import\n{out}\n{err}");

    let server_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = TestServer::start(data, &server_env);
    let berth: SocketAddr = server.url().parse().expect("addr");
    let catalog: BTreeSet<String> = get_json(berth, "/v2/_catalog")["repositories"]
        .as_array()
        .expect("catalog")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    // The victim's repository holds its intact config blob, as in
    // distribution; its manifest, whose layer is damaged, stayed out.
    assert_eq!(catalog, p.source.catalog);
    assert!(tags(berth, "victim/app").is_empty());
    for (repo, want) in &p.source.tags {
        assert_eq!(&tags(berth, repo), want, "tags of {repo}");
    }
    for (image, bytes) in &p.source.manifests {
        let got = raw_manifest(&format!("docker://{}/{image}", server.url()));
        assert_eq!(&got, bytes, "manifest of {image}");
    }
    let pulled = data.with_extension("pulled");
    for (image, tag, blobs, layout) in [
        ("team/app:v1", "v1", p.image.blob_digests(), "single"),
        ("team/multi:v2", "v2", p.index.blob_digests(), "multi"),
    ] {
        let dest = format!("oci:{}:{tag}", pulled.display());
        let src = format!("docker://{}/{image}", server.url());
        let mut args = COPY.to_vec();
        args.extend_from_slice(&[&src, &dest]);
        skopeo_ok(&server, &args);
        for d in blobs {
            assert_eq!(
                oci_layout::read_blob(&pulled, &d),
                oci_layout::read_blob(&p.layouts.join(layout), &d),
                "blob {d} of {image}"
            );
        }
    }
    // The artifact came across as a referrer of its subject.
    let referrers = get_json(
        berth,
        &format!("/v2/team/app/referrers/{}", p.image.manifest_digest),
    );
    let listed: Vec<&str> = referrers["manifests"]
        .as_array()
        .expect("referrers")
        .iter()
        .filter_map(|m| m["digest"].as_str())
        .collect();
    assert_eq!(listed, vec![p.referrer_digest.as_str()]);
    first
}

#[test]
fn a_distribution_tree_imports_bit_for_bit_with_its_damage_reported() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("dist");
    let dist = Distribution::start(&root);
    let pushed = push_set(&dist, &work.path().join("layouts"));
    dist.stop();

    // The damage: the victim's layer loses a byte; a tag names a manifest
    // the repository does not have.
    let layer = blob_path(&root, &pushed.hurt.layer_digests[0]);
    let mut bytes = std::fs::read(&layer).expect("victim layer");
    bytes[1000] ^= 0xff;
    std::fs::write(&layer, bytes).expect("damage");
    let ghost = root.join("docker/registry/v2/repositories/team/app/_manifests/tags/ghost/current");
    std::fs::create_dir_all(&ghost).expect("ghost tag");
    let nowhere = sha256_digest(b"no such manifest");
    std::fs::write(ghost.join("link"), &nowhere).expect("ghost link");

    // An import killed early, then run to the end.
    let data = work.path().join("berth");
    let mut killed = Command::new(bin_path("berthctl"))
        .args(["import", "distribution", "--from"])
        .arg(&root)
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berthctl");
    std::thread::sleep(Duration::from_millis(150));
    let _ = killed.kill();
    let _ = killed.wait();
    let from = root.to_string_lossy().into_owned();
    let report = check_import(&data, &from, &[], &layer.to_string_lossy(), &pushed);
    assert_eq!(report["blobs_copied_in_bucket"], 0, "{report}");
}

/// The same set, pushed to distribution with its S3 driver on the tests'
/// Ceph RGW, imports from the bucket (`--from s3://BUCKET/ROOT`, the
/// endpoint and credentials from `BERTH_S3_*`) into a berth on local disk;
/// problems name their objects by `s3://` address.
#[test]
fn a_distribution_bucket_imports_bit_for_bit_with_its_damage_reported() {
    let work = tempfile::tempdir().expect("tempdir");
    let (env, bucket) = s3_server_env(TestTransport::Http, "berth-import", "dist", 8 << 20);
    let c = bucket.config().clone();
    let dist = Distribution::start_s3(&work.path().join("dist"), &c);
    let pushed = push_set(&dist, &work.path().join("layouts"));
    dist.stop();

    let v2 = format!("{}/docker/registry/v2", c.root);
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let layer = hex(&pushed.hurt.layer_digests[0]);
    let layer_key = format!("{v2}/blobs/sha256/{}/{layer}/data", &layer[..2]);
    let mut bytes = Vec::new();
    let rel = layer_key
        .strip_prefix(&format!("{}/", c.root))
        .expect("below the root");
    bucket
        .read_object(rel, |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })
        .expect("read victim layer")
        .expect("victim layer in the bucket");
    bytes[1000] ^= 0xff;
    s3_put(&c, &layer_key, &bytes);
    let nowhere = sha256_digest(b"no such manifest");
    let ghost = format!("{v2}/repositories/team/app/_manifests/tags/ghost/current/link");
    s3_put(&c, &ghost, nowhere.as_bytes());

    // berth on local disk; the bucket reached with the BERTH_S3_* settings.
    let env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k != "BERTH_STORAGE_BACKEND" && k != "BERTH_S3_ROOT")
        .collect();
    let data = work.path().join("berth");
    let from = format!("s3://{}/{}", c.bucket, c.root);
    let damaged = format!("s3://{}/{layer_key}", c.bucket);
    let report = check_import(&data, &from, &env, &damaged, &pushed);
    assert_eq!(report["blobs_copied_in_bucket"], 0, "{report}");

    // berth keeping its blobs in the same bucket (another root): every
    // blob is read once to verify it and copied inside the bucket; the
    // damaged one is caught by that read and nothing of it is stored.
    let mut own = env.clone();
    own.push(("BERTH_STORAGE_BACKEND".into(), "s3".into()));
    own.push(("BERTH_S3_ROOT".into(), format!("{}-berth", c.root)));
    let report = check_import(
        &work.path().join("berth-s3"),
        &from,
        &own,
        &damaged,
        &pushed,
    );
    let copied = report["blobs_copied"].as_u64().expect("blobs_copied");
    assert!(copied > 0, "{report}");
    assert_eq!(
        report["blobs_copied_in_bucket"].as_u64(),
        Some(copied),
        "{report}"
    );

    // A bucket prefix with no tree is refused, naming what is missing.
    let (code, _, err) = berthctl_with(
        &work.path().join("other"),
        &[
            "import",
            "distribution",
            "--from",
            &format!("s3://{}/nothing-here", c.bucket),
        ],
        &env,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a distribution storage root"), "{err}");
}

/// PUTs `body` at `key` of `c`'s bucket (SigV4 by curl, as an operator or
/// another program would write it).
fn s3_put(c: &S3Config, key: &str, body: &[u8]) {
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), body).expect("write body");
    let out = Command::new("curl")
        .args(["-sS", "-f", "-X", "PUT", "--aws-sigv4"])
        .arg(format!("aws:amz:{}:s3", c.region))
        .arg("-H")
        .arg(format!("x-amz-content-sha256: {}", sha256_hex(body)))
        .arg("--user")
        .arg(format!("{}:{}", c.access_key, c.secret_key))
        .arg("--data-binary")
        .arg(format!("@{}", file.path().display()))
        .arg(format!("{}/{}/{key}", c.endpoint, c.bucket))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "PUT {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256_hex(body: &[u8]) -> String {
    sha256_digest(body).trim_start_matches("sha256:").to_owned()
}

/// ChartMuseum's storage as Harbor keeps it (`<project>/<name>-<version>.tgz`)
/// comes in as chart uploads would: served by the chart repository with the
/// very archives; a broken archive and a chart outside any project are
/// reported; a second run finds everything in place.
#[test]
fn chartmuseum_storage_imports_into_the_chart_repository() {
    let work = tempfile::tempdir().expect("tempdir");
    let from = work.path().join("chart_storage");
    std::fs::create_dir_all(from.join("team")).expect("project dir");
    let charts = [("web", "1.0.0"), ("web", "1.1.0"), ("db", "0.3.1")];
    for (name, version) in charts {
        let path = from.join(format!("team/{name}-{version}.tgz"));
        std::fs::write(path, berth_testkit::chart_tgz(name, version)).expect("chart");
    }
    std::fs::write(from.join("team/broken-1.0.0.tgz"), b"not gzip").expect("broken");
    std::fs::write(
        from.join("loose-1.0.0.tgz"),
        berth_testkit::chart_tgz("loose", "1.0.0"),
    )
    .expect("loose");
    std::fs::write(from.join("team/index-cache.yaml"), b"apiVersion: v1\n").expect("cache");

    let data = work.path().join("berth");
    let src = from.to_string_lossy().into_owned();
    let (code, out, err) = berthctl(&data, &["import", "chartmuseum", "--from", &src]);
    assert_eq!(code, 1, "problems make exit code 1\n{out}\n{err}");
    assert!(out.contains("broken-1.0.0.tgz"), "{out}");
    assert!(out.contains("outside any project"), "{out}");
    assert!(
        out.contains("imported 3 chart versions in 1 projects"),
        "{out}"
    );
    let (_, out, _) = berthctl(
        &data,
        &["import", "chartmuseum", "--from", &src, "--project", "team"],
    );
    assert!(
        out.contains("imported 1 chart versions"),
        "the loose chart, into team: {out}"
    );
    assert!(out.contains("3 already present"), "{out}");

    let server = TestServer::start(&data, &[]);
    let addr: SocketAddr = server.url().parse().expect("addr");
    let (status, _, index) = http(addr, "GET", "/chartrepo/team/index.yaml", &[], b"");
    assert_eq!(status, 200);
    let index = String::from_utf8_lossy(&index);
    for name in ["web", "db", "loose"] {
        assert!(index.contains(&format!("  {name}:")), "{name} in {index}");
    }
    for (name, version) in charts {
        let path = format!("/chartrepo/team/charts/{name}-{version}.tgz");
        let (status, _, body) = http(addr, "GET", &path, &[], b"");
        assert_eq!(status, 200, "{path}");
        let stored = std::fs::read(from.join(format!("team/{name}-{version}.tgz"))).expect("src");
        assert_eq!(body, stored, "{path} bit for bit");
    }
}
