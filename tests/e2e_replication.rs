//! End to end: pull-based replication policies (Harbor's
//! `/api/v2.0/replication/…`) from the real CNCF distribution 2.8.2 with
//! htpasswd auth, fed by skopeo, into berth with auth on. A manual run
//! copies what the filters select into the destination namespace (the
//! project created), bit for bit; a second run copies no blob; a tag moved
//! upstream is moved by the next run; a scheduled policy runs on its cron;
//! malformed policies are refused with Harbor's errors.

use std::time::{Duration, Instant};

use berth_testkit::distribution::{basic, AuthDistribution, PASSWORD, USER};
use berth_testkit::oci_layout;
use berth_testkit::server::{api_json, header, http, skopeo_ok, skopeo_raw, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "replication-admin-pw";

fn api(
    server: &TestServer,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let admin = basic("admin", ADMIN_PW);
    let (st, h, v) = api_json(server.addr, &admin, method, path, body);
    (st, header(&h, "location").map(str::to_owned), v)
}

fn raw(server: &TestServer, image: &str) -> Vec<u8> {
    skopeo_raw(server, &format!("admin:{ADMIN_PW}"), image)
}

/// Runs policy `id` and waits for the run to end; the run.
fn run(server: &TestServer, policy: u64) -> Value {
    let (st, location, body) = api(
        server,
        "POST",
        "/api/v2.0/replication/executions",
        &json!({"policy_id": policy}),
    );
    assert_eq!(st, 201, "{body}");
    wait_run(server, &location.expect("execution location"))
}

fn wait_run(server: &TestServer, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (st, _, run) = api(server, "GET", path, &Value::Null);
        assert_eq!(st, 200, "{run}");
        if run["status"] != "InProgress" {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run did not end: {run}\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn blob_gets(up: &AuthDistribution) -> usize {
    up.log()
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
        .count()
}

#[test]
fn a_policy_replicates_what_it_selects_once_and_on_its_schedule() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let up_dir = w.join("upstream");
    std::fs::create_dir_all(&up_dir).expect("dir");
    let up = AuthDistribution::start(&up_dir);
    let single = w.join("single");
    let image = oci_layout::write_image(&single, "v1", "repl/app", &[200_000, 3_000]);
    let multi = w.join("multi");
    let index = oci_layout::write_multi_arch(&multi, "m", "repl/multi", 80_000);
    up.push(&single, "v1", "team/app:v1");
    up.push(&single, "v1", "team/app:latest");
    up.push(&multi, "m", "team/sub/multi:m");
    up.push(&single, "v1", "other/x:v1");

    let server = TestServer::start(
        &w.join("berth"),
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
        ],
    );
    let reg = json!({"name": "source", "type": "docker-registry", "url": up.url(),
        "credential": {"type": "basic", "access_key": USER, "access_secret": PASSWORD}});
    let (st, location, _) = api(&server, "POST", "/api/v2.0/registries", &reg);
    assert_eq!(st, 201);
    let registry: u64 = location
        .and_then(|l| l.rsplit('/').next().and_then(|i| i.parse().ok()))
        .expect("registry id");

    // Refused: push-based, unknown filter types, a bad cron, no registry.
    let good = json!({
        "name": "mirror", "src_registry": {"id": registry}, "dest_namespace": "mirror",
        "dest_namespace_replace_count": 1,
        "filters": [{"type": "name", "value": "team/**"}, {"type": "tag", "value": "{v*,m}"}],
        "trigger": {"type": "manual"}, "override": true, "enabled": true,
    });
    for (field, value) in [
        ("dest_registry", json!({"id": 7})),
        ("filters", json!([{"type": "label", "value": "x"}])),
        (
            "trigger",
            json!({"type": "scheduled", "trigger_settings": {"cron": "every day"}}),
        ),
        ("src_registry", json!({"id": 999})),
        ("dest_namespace", json!("Not A Project")),
    ] {
        let mut bad = good.clone();
        bad[field] = value;
        let (st, _, body) = api(&server, "POST", "/api/v2.0/replication/policies", &bad);
        assert_eq!(
            (st, body["errors"][0]["code"].as_str()),
            (400, Some("BAD_REQUEST")),
            "{field}: {body}"
        );
    }
    let (st, location, body) = api(&server, "POST", "/api/v2.0/replication/policies", &good);
    assert_eq!(st, 201, "{body}");
    let policy_path = location.expect("policy location");
    let policy: u64 = policy_path
        .rsplit('/')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("id");
    let (st, _, _) = api(&server, "POST", "/api/v2.0/replication/policies", &good);
    assert_eq!(st, 409);
    let (st, _, shown) = api(&server, "GET", &policy_path, &Value::Null);
    assert_eq!(st, 200);
    assert_eq!(shown["src_registry"]["id"], json!(registry));
    assert_eq!(shown["trigger"]["type"], json!("manual"));
    assert_eq!(shown["filters"][1]["value"], json!("{v*,m}"));
    let (st, _, body) = api(
        &server,
        "DELETE",
        &format!("/api/v2.0/registries/{registry}"),
        &Value::Null,
    );
    assert_eq!(st, 412, "{body}");
    let (st, _, _) = api(
        &server,
        "POST",
        "/api/v2.0/replication/executions",
        &json!({"policy_id": 999}),
    );
    assert_eq!(st, 404);

    // A manual run: team/** with tags v* or m, under mirror/ (one level
    // replaced), bit for bit; other/x stays behind.
    let r = run(&server, policy);
    assert_eq!(r["status"], json!("Succeed"), "{r}");
    assert_eq!(
        (r["total"].as_u64(), r["succeed"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    assert_eq!(raw(&server, "mirror/app:v1"), image.manifest);
    assert_eq!(raw(&server, "mirror/sub/multi:m"), index.index);
    let pulled = w.join("pulled");
    let remote = format!("docker://{}/mirror/sub/multi:m", server.url());
    let dest = format!("oci:{}:m", pulled.display());
    let creds = format!("admin:{ADMIN_PW}");
    skopeo_ok(
        &server,
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
    for d in index.blob_digests() {
        assert!(
            oci_layout::read_blob(&pulled, &d) == oci_layout::read_blob(&multi, &d),
            "blob {d}"
        );
    }
    let admin = basic("admin", ADMIN_PW);
    for (path, want) in [
        ("/v2/mirror/app/manifests/latest", 404),
        ("/v2/mirror/x/manifests/v1", 404),
        ("/api/v2.0/projects/mirror", 200),
    ] {
        let (st, _, _) = http(server.addr, "GET", path, &[("Authorization", &admin)], b"");
        assert_eq!(st, want, "{path}");
    }

    // Again: nothing new, no blob fetched.
    let before = blob_gets(&up);
    let r = run(&server, policy);
    assert_eq!(r["status"], json!("Succeed"), "{r}");
    assert_eq!(blob_gets(&up), before, "a second run fetched blobs");

    // A tag moved upstream moves here with the next run.
    let moved = w.join("moved");
    let moved_image = oci_layout::write_image(&moved, "v1", "repl/moved", &[40_000]);
    up.push(&moved, "v1", "team/app:v1");
    let r = run(&server, policy);
    assert_eq!(r["status"], json!("Succeed"), "{r}");
    assert_eq!(raw(&server, "mirror/app:v1"), moved_image.manifest);

    // Scheduled every second: a run with trigger "scheduled" comes.
    let every_second =
        json!({"trigger": {"type": "scheduled", "trigger_settings": {"cron": "* * * * * *"}}});
    let (st, _, body) = api(&server, "PUT", &policy_path, &every_second);
    assert_eq!(st, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let scheduled = loop {
        let path = format!("/api/v2.0/replication/executions?policy_id={policy}");
        let (_, _, runs) = api(&server, "GET", &path, &Value::Null);
        let found = runs
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["trigger"] == "scheduled")
            .cloned();
        if let Some(r) = found {
            break r;
        }
        assert!(Instant::now() < deadline, "no scheduled run: {runs}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let done = wait_run(
        &server,
        &format!("/api/v2.0/replication/executions/{}", scheduled["id"]),
    );
    assert_eq!(done["status"], json!("Succeed"), "{done}");
    let (st, _, _) = api(
        &server,
        "PUT",
        &policy_path,
        &json!({"trigger": {"type": "manual"}}),
    );
    assert_eq!(st, 200);
    let (st, _, _) = api(&server, "DELETE", &policy_path, &Value::Null);
    assert_eq!(st, 200);
    let (st, _, _) = api(&server, "GET", &policy_path, &Value::Null);
    assert_eq!(st, 404);
}
