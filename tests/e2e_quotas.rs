//! End to end: project quotas through Harbor's API, with skopeo pushing
//! into a real `berth` with auth on. Usage counts a blob once per project
//! (shared layers across repositories) and again in another project; a push
//! over the limit is refused with `403 DENIED` and Harbor's quota message
//! and leaves no new blob in the store; only system administrators set
//! limits; deleting and collecting garbage brings usage down; fsck agrees.

use std::path::Path;

use berth_testkit::chart_tgz;
use berth_testkit::distribution::basic;
use berth_testkit::oci_layout;
use berth_testkit::server::{api_json, http, skopeo_ok, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "quota-admin-pw";

fn push(server: &TestServer, layout: &Path, tag: &str, dest: &str) -> std::process::Output {
    std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("admin:{ADMIN_PW}"),
            "--preserve-digests",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{}/{dest}", server.url()),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running skopeo")
}

fn push_ok(server: &TestServer, layout: &Path, tag: &str, dest: &str) {
    let out = push(server, layout, tag, dest);
    assert!(
        out.status.success(),
        "skopeo push to {dest}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
}

/// The bytes of the blobs (config and layers) of `image` in `layout`.
fn blob_bytes(layout: &Path, image: &oci_layout::Image) -> u64 {
    image
        .blob_digests()
        .iter()
        .map(|d| {
            let hex = d.trim_start_matches("sha256:");
            std::fs::metadata(layout.join("blobs/sha256").join(hex))
                .expect("blob in layout")
                .len()
        })
        .sum()
}

/// Every blob file the store holds.
fn stored_blobs(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let root = data.join("blobs/sha256");
    if let Ok(shards) = std::fs::read_dir(&root) {
        for shard in shards.flatten() {
            for f in std::fs::read_dir(shard.path()).expect("shard").flatten() {
                out.push(f.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn quota_of(server: &TestServer, admin: &str, project_id: u64) -> Value {
    let (st, h, list) = api_json(
        server.addr,
        admin,
        "GET",
        &format!("/api/v2.0/quotas?reference=project&reference_id={project_id}"),
        &Value::Null,
    );
    assert_eq!(st, 200, "{list}");
    assert_eq!(
        berth_testkit::server::header(&h, "x-total-count"),
        Some("1")
    );
    list[0].clone()
}

fn project_id(server: &TestServer, admin: &str, name: &str) -> u64 {
    let (st, _, p) = api_json(
        server.addr,
        admin,
        "GET",
        &format!("/api/v2.0/projects/{name}"),
        &Value::Null,
    );
    assert_eq!(st, 200);
    p["project_id"].as_u64().expect("project_id")
}

#[test]
fn quotas_count_shared_blobs_once_and_refuse_pushes_over_the_limit() {
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    let env = [
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
    ];
    let mut server = TestServer::start(&data, &env);
    let admin = basic("admin", ADMIN_PW);
    let api = |cred: &str, method: &str, path: &str, body: &Value| {
        api_json(server.addr, cred, method, path, body)
    };

    // A user who administers a project may not set its limit.
    let (st, _, _) = api(
        &admin,
        "POST",
        "/api/v2.0/users",
        &json!({"username": "lead", "password": "lead-password"}),
    );
    assert_eq!(st, 201);
    let lead = basic("lead", "lead-password");
    let (st, _, err) = api(
        &lead,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "mine", "storage_limit": 1}),
    );
    assert_eq!(st, 403, "{err}");
    assert_eq!(err["errors"][0]["code"], "DENIED");
    let (st, _, _) = api(
        &lead,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "mine"}),
    );
    assert_eq!(st, 201);
    let (st, _, err) = api(
        &lead,
        "PUT",
        "/api/v2.0/projects/mine",
        &json!({"storage_limit": -1}),
    );
    assert_eq!(st, 403, "{err}");
    let mine = project_id(&server, &admin, "mine");
    let (st, _, _) = api(
        &lead,
        "GET",
        &format!("/api/v2.0/quotas/{mine}"),
        &Value::Null,
    );
    assert_eq!(st, 403, "quotas are the system administrator's");
    let (st, _, _) = api(
        &lead,
        "PUT",
        &format!("/api/v2.0/quotas/{mine}"),
        &json!({"hard": {"storage": -1}}),
    );
    assert_eq!(st, 403);

    // Two images sharing nothing; one pushed into two repositories of
    // "team" and into "other".
    let layouts = work.path().join("layouts");
    let small = layouts.join("small");
    let big = layouts.join("big");
    let small_img = oci_layout::write_image(&small, "v1", "quota-small", &[30_000, 50_000]);
    let big_img = oci_layout::write_image(&big, "v1", "quota-big", &[200_000]);
    let small_bytes = blob_bytes(&small, &small_img);
    let big_bytes = blob_bytes(&big, &big_img);
    let limit = small_bytes + big_bytes / 2;
    let (st, _, err) = api(
        &admin,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "team", "storage_limit": limit}),
    );
    assert_eq!(st, 201, "{err}");
    let (st, _, _) = api(
        &admin,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "other"}),
    );
    assert_eq!(st, 201);
    let team = project_id(&server, &admin, "team");
    let other = project_id(&server, &admin, "other");
    let q = quota_of(&server, &admin, team);
    assert_eq!(q["id"], team);
    assert_eq!(q["ref"]["name"], "team");
    assert_eq!(q["hard"], json!({"storage": limit}));
    assert_eq!(q["used"], json!({"storage": 0}));
    assert_eq!(
        quota_of(&server, &admin, other)["hard"],
        json!({"storage": -1})
    );

    push_ok(&server, &small, "v1", "team/app:v1");
    push_ok(&server, &small, "v1", "team/sub/copy:v1");
    push_ok(&server, &small, "v1", "other/app:v1");
    assert_eq!(
        quota_of(&server, &admin, team)["used"],
        json!({"storage": small_bytes}),
        "shared blobs count once per project"
    );
    assert_eq!(
        quota_of(&server, &admin, other)["used"],
        json!({"storage": small_bytes}),
        "and again in another project"
    );
    let (st, _, summary) = api(
        &admin,
        "GET",
        "/api/v2.0/projects/team/summary",
        &Value::Null,
    );
    assert_eq!(st, 200);
    assert_eq!(summary["repo_count"], 2);
    assert_eq!(summary["quota"]["hard"]["storage"], limit);
    assert_eq!(summary["quota"]["used"]["storage"], small_bytes);

    // Over the limit: skopeo's push fails on the quota, nothing new is
    // stored; the same image goes into the unlimited project.
    let before = stored_blobs(&data);
    let out = push(&server, &big, "v1", "team/big:v1");
    assert!(!out.status.success(), "a push over quota succeeded");
    // skopeo prints its own text for a 403 `DENIED`; the message is
    // checked on the raw answer below.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("denied"), "{stderr}");
    assert_eq!(
        stored_blobs(&data),
        before,
        "the refused push stored a blob"
    );
    // The refusal as the registry API answers it.
    let layer = std::fs::read(
        big.join("blobs/sha256")
            .join(big_img.layer_digests[0].trim_start_matches("sha256:")),
    )
    .expect("layer");
    let (st, _, body) = http(
        server.addr,
        "POST",
        &format!(
            "/v2/team/big/blobs/uploads/?digest={}",
            big_img.layer_digests[0]
        ),
        &[("Authorization", &admin)],
        &layer,
    );
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    let err: Value = serde_json::from_slice(&body).expect("error JSON");
    assert_eq!(err["errors"][0]["code"], "DENIED");
    let msg = err["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("will exceed the configured upper limit"),
        "{msg}"
    );
    assert_eq!(stored_blobs(&data), before);
    // A chart over the limit: refused the same way, on the chart API.
    let (st, _, _) = api(
        &admin,
        "PUT",
        &format!("/api/v2.0/quotas/{team}"),
        &json!({"hard": {"storage": small_bytes}}),
    );
    assert_eq!(st, 200);
    let (st, _, body) = http(
        server.addr,
        "POST",
        "/api/chartrepo/team/charts",
        &[("Authorization", &admin)],
        &chart_tgz("app", "1.0.0"),
    );
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(stored_blobs(&data), before);
    // Into the unlimited project, and mounted from there: the mount adds
    // the bytes to "team", so it is refused too.
    push_ok(&server, &big, "v1", "other/big:v1");
    let (st, _, _) = http(
        server.addr,
        "POST",
        &format!(
            "/v2/team/big/blobs/uploads/?mount={}&from=other/big",
            big_img.layer_digests[0]
        ),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(st, 403, "a mount over quota");
    // Raised, the same push goes through.
    let (st, _, _) = api(
        &admin,
        "PUT",
        &format!("/api/v2.0/quotas/{team}"),
        &json!({"hard": {"storage": -1}}),
    );
    assert_eq!(st, 200);
    push_ok(&server, &big, "v1", "team/big:v1");
    assert_eq!(
        quota_of(&server, &admin, team)["used"]["storage"],
        small_bytes + big_bytes
    );
    // Bad requests.
    for body in [
        json!({"hard": {"storage": -5}}),
        json!({"hard": {"count": 3}}),
        json!({"hard": {}}),
        json!({"soft": 1}),
    ] {
        let (st, _, err) = api(&admin, "PUT", &format!("/api/v2.0/quotas/{team}"), &body);
        assert_eq!(st, 400, "{body}: {err}");
        assert_eq!(err["errors"][0]["code"], "BAD_REQUEST", "{err}");
    }
    let (st, _, _) = api(&admin, "GET", "/api/v2.0/quotas/999", &Value::Null);
    assert_eq!(st, 404);
    let (st, h, all) = api(
        &admin,
        "GET",
        "/api/v2.0/quotas?sort=-used.storage&page_size=1",
        &Value::Null,
    );
    assert_eq!(st, 200);
    // library (created at first start), mine, team, other.
    assert_eq!(
        berth_testkit::server::header(&h, "x-total-count"),
        Some("4")
    );
    assert_eq!(all[0]["used"]["storage"], small_bytes + big_bytes, "{all}");

    // Deleted and collected: usage comes down.
    for repo in ["app", "sub%252Fcopy", "big"] {
        let (st, _, err) = api(
            &admin,
            "DELETE",
            &format!("/api/v2.0/projects/team/repositories/{repo}"),
            &Value::Null,
        );
        assert_eq!(st, 200, "{repo}: {err}");
    }
    assert_eq!(
        quota_of(&server, &admin, team)["used"]["storage"],
        0,
        "a deleted repository's links go with it"
    );
    server.stop();
    let (code, out, err) = berth_testkit::berthctl(&data, &["gc", "--grace-seconds", "0"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = berth_testkit::berthctl(&data, &["fsck"]);
    assert_eq!(code, 0, "fsck: {out}{err}");
    server.restart();
    assert_eq!(quota_of(&server, &admin, team)["used"]["storage"], 0);
    assert_eq!(
        quota_of(&server, &admin, other)["used"]["storage"],
        small_bytes + big_bytes
    );
    skopeo_ok(
        &server,
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("admin:{ADMIN_PW}"),
            &format!("docker://{}/other/big:v1", server.url()),
        ],
    );
}
