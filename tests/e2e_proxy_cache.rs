//! End to end: a proxy cache project (Harbor 2.x's "proxy cache") of the
//! real CNCF distribution 2.8.2 (Debian's `docker-registry`) with htpasswd
//! auth, fed by skopeo. The upstream is registered through Harbor's
//! `/api/v2.0/registries`, the project created with its `registry_id`;
//! skopeo pulls through berth bit for bit; the cache fills; concurrent
//! misses of one blob reach the upstream once; with the upstream stopped
//! the cached tags still pull; a tag moved upstream is followed after the
//! revalidation time; pushes to the project are refused.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_testkit::berthctl;
use berth_testkit::distribution::{basic, AuthDistribution, PASSWORD, USER};
use berth_testkit::oci_layout::{self, ImageIndex};
use berth_testkit::server::{api_json, header, http, skopeo_ok, skopeo_raw, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "proxy-cache-admin-pw";

fn api(
    server: &TestServer,
    auth: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, Vec<(String, String)>, Value) {
    api_json(server.addr, auth, method, path, body)
}

/// Copies `image` (every platform) from berth into a new OCI layout.
fn pull(server: &TestServer, image: &str, to: &Path) {
    let remote = format!("docker://{}/{image}", server.url());
    let dest = format!("oci:{}:t", to.display());
    let creds = format!("admin:{ADMIN_PW}");
    skopeo_ok(
        server,
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            "--preserve-digests",
            &remote,
            &dest,
        ],
    );
}

/// The manifest berth serves for `image`, as bytes.
fn raw(server: &TestServer, image: &str) -> Vec<u8> {
    skopeo_raw(server, &format!("admin:{ADMIN_PW}"), image)
}

fn same_blobs(pulled: &Path, source: &Path, digests: impl IntoIterator<Item = String>) {
    for d in digests {
        assert!(
            oci_layout::read_blob(pulled, &d) == oci_layout::read_blob(source, &d),
            "blob {d} bit for bit"
        );
    }
}

/// Waits (up to a minute) until `repo` lists `tag` in berth: the cache
/// fills in the background.
fn wait_cached(server: &TestServer, admin: &str, repo: &str, tag: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, _, body) = http(
            server.addr,
            "GET",
            &format!("/v2/{repo}/tags/list"),
            &[("Authorization", admin)],
            b"",
        );
        let tags: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if st == 200
            && tags["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&json!(tag)))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{repo}:{tag} was not cached: {st} {tags}\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_proxy_cache_project_pulls_through_serves_offline_and_follows_moved_tags() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let up_dir = w.join("upstream");
    std::fs::create_dir_all(&up_dir).expect("upstream dir");
    let mut up = AuthDistribution::start(&up_dir);
    let port = up.addr.port();

    let single = w.join("single");
    let image = oci_layout::write_image(&single, "v1", "proxy/app", &[300_000, 4_000]);
    let multi = w.join("multi");
    let index: ImageIndex = oci_layout::write_multi_arch(&multi, "v2", "proxy/multi", 100_000);
    let big = w.join("big");
    let big_image = oci_layout::write_image(&big, "1", "proxy/big", &[6 << 20]);
    up.push(&single, "v1", "team/app:v1");
    up.push(&multi, "v2", "team/multi:v2");
    up.push(&big, "1", "team/big:1");

    let data = w.join("berth");
    let mut server = TestServer::start(
        &data,
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
            ("BERTH_PROXY_REVALIDATE_SECONDS", "1"),
        ],
    );
    let admin = basic("admin", ADMIN_PW);

    // ---- the registries API, Harbor's shapes --------------------------------
    let reg = json!({
        "name": "upstream", "type": "docker-registry", "url": up.url(),
        "credential": {"type": "basic", "access_key": USER, "access_secret": PASSWORD},
        "insecure": false, "description": "distribution with htpasswd",
    });
    let (st, h, body) = api(&server, &admin, "POST", "/api/v2.0/registries", &reg);
    assert_eq!(st, 201, "{body}");
    let location = header(&h, "location").expect("location").to_owned();
    let id: u64 = location
        .rsplit('/')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("registry id in Location");
    let (st, _, body) = api(&server, &admin, "POST", "/api/v2.0/registries", &reg);
    assert_eq!(
        (st, body["errors"][0]["code"].as_str()),
        (409, Some("CONFLICT"))
    );
    let mut bad = reg.clone();
    bad["name"] = json!("ecr");
    bad["type"] = json!("aws-ecr");
    let (st, _, _) = api(&server, &admin, "POST", "/api/v2.0/registries", &bad);
    assert_eq!(st, 400);
    let (st, h, list) = api(&server, &admin, "GET", "/api/v2.0/registries", &Value::Null);
    assert_eq!(st, 200);
    assert_eq!(header(&h, "x-total-count"), Some("1"));
    let listed = &list[0];
    assert_eq!(listed["id"], json!(id));
    assert_eq!(listed["name"], json!("upstream"));
    assert_eq!(listed["type"], json!("docker-registry"));
    assert_eq!(listed["url"], json!(up.url()));
    assert_eq!(listed["credential"]["access_key"], json!(USER));
    assert_eq!(listed["credential"]["access_secret"], json!("*****"));
    let (_, _, none) = api(
        &server,
        &admin,
        "GET",
        "/api/v2.0/registries?q=name=~nomatch",
        &Value::Null,
    );
    assert_eq!(none, json!([]));
    let (st, _, one) = api(&server, &admin, "GET", &location, &Value::Null);
    assert_eq!((st, &one), (200, listed));
    let ping = |body: Value| api(&server, &admin, "POST", "/api/v2.0/registries/ping", &body).0;
    assert_eq!(ping(json!({"id": id})), 200);
    assert_eq!(ping(json!({"id": id, "access_secret": "wrong"})), 400);
    assert_eq!(
        ping(json!({"type": "docker-registry", "url": "http://127.0.0.1:1"})),
        400
    );
    // The secret is write-only, and an update that leaves it out keeps it.
    let (st, _, _) = api(
        &server,
        &admin,
        "PUT",
        &location,
        &json!({"description": "up"}),
    );
    assert_eq!(st, 200);
    assert_eq!(ping(json!({"id": id})), 200);

    // Registries and proxy cache projects are administrators' business.
    let (st, _, _) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/users",
        &json!({"username": "bob", "password": "bob-password-1", "email": "b@x", "realname": "Bob"}),
    );
    assert_eq!(st, 201);
    let bob = basic("bob", "bob-password-1");
    let (st, _, _) = api(&server, &bob, "GET", "/api/v2.0/registries", &Value::Null);
    assert_eq!(st, 403);
    let proxy_project =
        json!({"project_name": "hub", "registry_id": id, "metadata": {"public": "true"}});
    let (st, _, _) = api(&server, &bob, "POST", "/api/v2.0/projects", &proxy_project);
    assert_eq!(st, 403);
    let (st, _, _) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "nowhere", "registry_id": 999}),
    );
    assert_eq!(st, 400);
    let (st, _, body) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/projects",
        &proxy_project,
    );
    assert_eq!(st, 201, "{body}");
    let (_, _, project) = api(
        &server,
        &admin,
        "GET",
        "/api/v2.0/projects/hub",
        &Value::Null,
    );
    assert_eq!(project["registry_id"], json!(id));
    let (st, _, body) = api(&server, &admin, "DELETE", &location, &Value::Null);
    assert_eq!(
        (st, body["errors"][0]["code"].as_str()),
        (412, Some("PRECONDITION"))
    );

    // ---- first pulls: through to the upstream --------------------------------
    let pulled = w.join("pulled-app");
    pull(&server, "hub/team/app:v1", &pulled);
    same_blobs(&pulled, &single, image.blob_digests());
    assert_eq!(raw(&server, "hub/team/app:v1"), image.manifest);
    assert_eq!(raw(&server, "hub/team/multi:v2"), index.index);
    let pulled = w.join("pulled-multi");
    pull(&server, "hub/team/multi:v2", &pulled);
    same_blobs(&pulled, &multi, index.blob_digests());
    wait_cached(&server, &admin, "hub/team/app", "v1");
    wait_cached(&server, &admin, "hub/team/multi", "v2");

    // Pushes are refused, to the registry API and the chart API alike.
    let (st, _, body) = http(
        server.addr,
        "POST",
        "/v2/hub/team/app/blobs/uploads/",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("proxy cache"));

    // ---- concurrent misses of one blob: one upstream fetch ------------------
    let layer = big_image.layer_digests[0].clone();
    let expected = oci_layout::read_blob(&big, &layer);
    let path = format!("/v2/hub/team/big/blobs/{layer}");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| http(server.addr, "GET", &path, &[("Authorization", &admin)], b"")))
            .collect();
        for h in handles {
            let (st, _, body) = h.join().expect("client");
            assert_eq!(st, 200);
            assert!(body == expected, "the blob bit for bit");
        }
    });
    let fetches = up
        .log()
        .lines()
        .filter(|l| {
            l.contains(&format!("\"GET /v2/team/big/blobs/{layer} ")) && l.contains("\" 200 ")
        })
        .count();
    assert_eq!(fetches, 1, "the upstream served the blob {fetches} times");

    // ---- the upstream stopped: the cache serves what it holds ---------------
    up.stop();
    std::thread::sleep(Duration::from_millis(1500)); // past the revalidation time
    let pulled = w.join("offline-app");
    pull(&server, "hub/team/app:v1", &pulled);
    same_blobs(&pulled, &single, image.blob_digests());
    let pulled = w.join("offline-multi");
    pull(&server, "hub/team/multi:v2", &pulled);
    same_blobs(&pulled, &multi, index.blob_digests());
    assert_eq!(raw(&server, "hub/team/multi:v2"), index.index);
    // What was never pulled is not there, and says why.
    let (st, _, body) = http(
        server.addr,
        "GET",
        "/v2/hub/team/never/manifests/v1",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&body));

    // ---- a tag moved upstream is followed after the revalidation time -------
    let up = AuthDistribution::start_on(&up_dir, port);
    let moved = w.join("moved");
    let moved_image = oci_layout::write_image(&moved, "v1", "proxy/moved", &[50_000]);
    up.push(&moved, "v1", "team/app:v1");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(raw(&server, "hub/team/app:v1"), moved_image.manifest);
    let pulled = w.join("moved-app");
    pull(&server, "hub/team/app:v1", &pulled);
    same_blobs(&pulled, &moved, moved_image.blob_digests());
    wait_cached(&server, &admin, "hub/team/app", "v1");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, h, _) = http(
            server.addr,
            "HEAD",
            "/v2/hub/team/app/manifests/v1",
            &[("Authorization", &admin)],
            b"",
        );
        if header(&h, "docker-content-digest") == Some(moved_image.manifest_digest.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "the moved tag was not cached");
        std::thread::sleep(Duration::from_millis(100));
    }

    // What the cache stored is sound.
    server.stop();
    let (code, out, err) = berthctl(&data, &["fsck"]);
    assert_eq!(code, 0, "fsck\n{out}\n{err}");
}
