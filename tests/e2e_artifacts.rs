//! End to end: Harbor's repository and artifact API over what skopeo
//! pushed into berth with auth on — a single image, a multi-arch index and
//! an artifact referring to the image. Listings, paging, one artifact by
//! tag and by digest, tags added (then pulled by skopeo) and removed, an
//! artifact and a repository deleted; who may do what; read-only mode.

use berth_testkit::distribution::basic;
use berth_testkit::oci_layout;
use berth_testkit::server::{api_json, header, http, skopeo_ok, skopeo_raw, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "artifacts-admin-pw";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn api(
    server: &TestServer,
    cred: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, Vec<(String, String)>, Value) {
    api_json(server.addr, cred, method, path, body)
}

fn push(server: &TestServer, layout: &std::path::Path, tag: &str, dest: &str) {
    let creds = format!("admin:{ADMIN_PW}");
    skopeo_ok(
        server,
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            "--preserve-digests",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{}/{dest}", server.url()),
        ],
    );
}

#[test]
fn repositories_and_artifacts_through_harbors_api() {
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    let env = [
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
    ];
    let mut server = TestServer::start(&data, &env);
    let admin = basic("admin", ADMIN_PW);
    let (st, _, _) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "team", "metadata": {"public": "false"}}),
    );
    assert_eq!(st, 201);
    for (user, role) in [("dev", 2), ("guest", 3)] {
        let (st, _, _) = api(
            &server,
            &admin,
            "POST",
            "/api/v2.0/users",
            &json!({"username": user, "password": format!("{user}-password")}),
        );
        assert_eq!(st, 201);
        let (st, _, _) = api(
            &server,
            &admin,
            "POST",
            "/api/v2.0/projects/team/members",
            &json!({"role_id": role, "member_user": {"username": user}}),
        );
        assert_eq!(st, 201);
    }
    let layouts = work.path().join("layouts");
    let image = oci_layout::write_image(&layouts.join("single"), "v1", "art-single", &[3000, 5000]);
    let index = oci_layout::write_multi_arch(&layouts.join("multi"), "m1", "art-multi", 4000);
    push(&server, &layouts.join("single"), "v1", "team/app:v1");
    push(&server, &layouts.join("multi"), "m1", "team/sub/multi:m1");
    // An artifact referring to the image (a signature-like accessory).
    let sig = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len()},
    });
    let (st, h, _) = http(server.addr, "POST", "/v2/team/app/blobs/uploads/?digest=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        &[("Authorization", &admin)], b"{}");
    assert_eq!(st, 201, "{h:?}");
    let sig_bytes = serde_json::to_vec(&sig).expect("json");
    let (st, h, _) = http(
        server.addr,
        "PUT",
        "/v2/team/app/manifests/sig",
        &[("Authorization", &admin), ("Content-Type", OCI_MANIFEST)],
        &sig_bytes,
    );
    assert_eq!(st, 201, "{h:?}");
    let sig_digest = header(&h, "docker-content-digest")
        .expect("digest")
        .to_owned();
    // Untag it: an accessory is listed with its subject, not on its own.
    let (st, _, _) = http(
        server.addr,
        "DELETE",
        "/v2/team/app/manifests/sig",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(st, 202);

    // Repositories, paged.
    let guest = basic("guest", "guest-password");
    let (st, h, repos) = api(
        &server,
        &guest,
        "GET",
        "/api/v2.0/projects/team/repositories?page_size=1",
        &Value::Null,
    );
    assert_eq!(st, 200, "{repos}");
    assert_eq!(header(&h, "x-total-count"), Some("2"));
    assert!(header(&h, "link").is_some_and(|l| l.contains("rel=\"next\"")));
    assert_eq!(repos[0]["name"], "team/app");
    assert_eq!(repos[0]["artifact_count"], 1, "{repos}");
    // Its size: both manifests (the image and its accessory), the image's
    // config and layers, and the accessory's empty blob once although it
    // is the accessory's config and layer both.
    let m: Value = serde_json::from_slice(&image.manifest).expect("manifest");
    let blobs: u64 = std::iter::once(&m["config"])
        .chain(m["layers"].as_array().expect("layers"))
        .map(|d| d["size"].as_u64().expect("size"))
        .sum();
    let size = image.manifest.len() as u64 + blobs + sig_bytes.len() as u64 + 2;
    assert_eq!(repos[0]["size"], size, "{repos}");
    let (_, _, repos) = api(
        &server,
        &guest,
        "GET",
        "/api/v2.0/projects/team/repositories?q=name%3D~multi",
        &Value::Null,
    );
    assert_eq!(repos.as_array().map(Vec::len), Some(1), "{repos}");
    assert_eq!(repos[0]["name"], "team/sub/multi");
    // A filtered listing's links keep the filter (as Harbor's do), so a
    // script that follows them stays in it.
    let (st, h, repos) = api(
        &server,
        &guest,
        "GET",
        "/api/v2.0/projects/team/repositories?q=name%3D~team&page_size=1",
        &Value::Null,
    );
    assert_eq!(
        (st, header(&h, "x-total-count")),
        (200, Some("2")),
        "{repos}"
    );
    assert_eq!(
        header(&h, "link"),
        Some("</api/v2.0/projects/team/repositories?q=name%3D~team&page=2&page_size=1>; rel=\"next\"")
    );
    let (st, _, one) = api(
        &server,
        &guest,
        "GET",
        "/api/v2.0/projects/team/repositories/sub%252Fmulti",
        &Value::Null,
    );
    assert_eq!(
        (st, one["artifact_count"].clone()),
        (200, json!(1)),
        "{one}"
    );

    // Artifacts: the image with its tag and accessory; the index with its children.
    let (st, _, arts) = api(
        &server,
        &guest,
        "GET",
        "/api/v2.0/projects/team/repositories/app/artifacts",
        &Value::Null,
    );
    assert_eq!(st, 200, "{arts}");
    let arts = arts.as_array().expect("artifacts").clone();
    assert_eq!(arts.len(), 1, "{arts:?}");
    let a = &arts[0];
    assert_eq!(a["digest"], image.manifest_digest.as_str());
    assert_eq!(a["type"], "IMAGE");
    assert_eq!(a["manifest_media_type"], OCI_MANIFEST);
    assert_eq!(a["tags"][0]["name"], "v1");
    assert_eq!(a["accessories"][0]["digest"], sig_digest.as_str());
    assert!(a["size"].as_u64().expect("size") > 8000, "{a}");
    let (st, _, m) = api(
        &server,
        &guest,
        "GET",
        "/api/v2.0/projects/team/repositories/sub%252Fmulti/artifacts/m1",
        &Value::Null,
    );
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["digest"], index.index_digest.as_str());
    let children: std::collections::BTreeSet<String> = m["references"]
        .as_array()
        .expect("refs")
        .iter()
        .filter_map(|r| r["child_digest"].as_str().map(str::to_owned))
        .collect();
    let want: std::collections::BTreeSet<String> = index
        .images
        .iter()
        .map(|i| i.manifest_digest.clone())
        .collect();
    assert_eq!(children, want);
    let by_digest = format!(
        "/api/v2.0/projects/team/repositories/app/artifacts/{}",
        image.manifest_digest
    );
    let (st, _, same) = api(&server, &guest, "GET", &by_digest, &Value::Null);
    assert_eq!(
        (st, same["digest"].clone()),
        (200, json!(image.manifest_digest))
    );
    let (st, _, _) = api(
        &server,
        &guest,
        "GET",
        "/api/v2.0/projects/team/repositories/app/artifacts/nope",
        &Value::Null,
    );
    assert_eq!(st, 404);

    // Who may: a guest reads but neither tags nor deletes; an outsider sees nothing.
    let tags = format!("{by_digest}/tags");
    let (st, _, _) = api(&server, &guest, "POST", &tags, &json!({"name": "stable"}));
    assert_eq!(st, 403);
    let (st, _, _) = api(&server, &guest, "DELETE", &by_digest, &Value::Null);
    assert_eq!(st, 403);
    let (st, _, _) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/users",
        &json!({"username": "eve", "password": "eve-password"}),
    );
    assert_eq!(st, 201);
    let eve = basic("eve", "eve-password");
    let (st, _, _) = api(
        &server,
        &eve,
        "GET",
        "/api/v2.0/projects/team/repositories",
        &Value::Null,
    );
    assert_eq!(st, 403);

    // A developer adds a tag; skopeo pulls it, bit for bit.
    let dev = basic("dev", "dev-password");
    let (st, _, body) = api(&server, &dev, "POST", &tags, &json!({"name": "stable"}));
    assert_eq!(st, 201, "{body}");
    let (st, _, _) = api(&server, &dev, "POST", &tags, &json!({"name": "Bad Tag!"}));
    assert_eq!(st, 400);
    assert_eq!(
        skopeo_raw(&server, &format!("admin:{ADMIN_PW}"), "team/app:stable"),
        image.manifest
    );
    let (_, _, a) = api(&server, &guest, "GET", &by_digest, &Value::Null);
    let names: Vec<&str> = a["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["stable", "v1"]);

    // Pulls are counted in batches: the pull above shows within a flush.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let repo_path = "/api/v2.0/projects/team/repositories/app";
        let (_, _, one) = api(&server, &guest, "GET", repo_path, &Value::Null);
        let (_, _, a) = api(&server, &guest, "GET", &by_digest, &Value::Null);
        if one["pull_count"].as_u64().unwrap_or(0) >= 1 {
            assert_ne!(a["pull_time"], "0001-01-01T00:00:00.000Z", "{a}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pull never counted: {one}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // Read-only: every write refused, nothing changed.
    server.stop();
    let ro: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("BERTH_READ_ONLY", "true")])
        .collect();
    let server = TestServer::start(&data, &ro);
    let (st, _, _) = api(
        &server,
        &admin,
        "DELETE",
        &format!("{by_digest}/tags/stable"),
        &Value::Null,
    );
    assert_eq!(st, 405);
    let (st, _, _) = api(
        &server,
        &admin,
        "DELETE",
        "/api/v2.0/projects/team/repositories/app",
        &Value::Null,
    );
    assert_eq!(st, 405);
    drop(server);
    let server = TestServer::start(&data, &env);

    // Tag removed (the artifact stays); the artifact deleted; the repository deleted.
    let (st, _, _) = api(
        &server,
        &admin,
        "DELETE",
        &format!("{by_digest}/tags/stable"),
        &Value::Null,
    );
    assert_eq!(st, 200);
    let (st, _, _) = api(
        &server,
        &admin,
        "DELETE",
        &format!("{by_digest}/tags/stable"),
        &Value::Null,
    );
    assert_eq!(st, 404);
    let (st, _, _) = api(&server, &admin, "DELETE", &by_digest, &Value::Null);
    assert_eq!(st, 200);
    let (st, _, _) = http(
        server.addr,
        "GET",
        "/v2/team/app/manifests/v1",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(st, 404);
    let (st, _, _) = api(
        &server,
        &admin,
        "DELETE",
        "/api/v2.0/projects/team/repositories/sub%252Fmulti",
        &Value::Null,
    );
    assert_eq!(st, 200);
    let (_, h, repos) = api(
        &server,
        &admin,
        "GET",
        "/api/v2.0/projects/team/repositories",
        &Value::Null,
    );
    assert_eq!(header(&h, "x-total-count"), Some("1"), "{repos}");
    let (_, _, catalog) = api(&server, &admin, "GET", "/v2/_catalog", &Value::Null);
    assert!(!catalog.to_string().contains("multi"), "{catalog}");
    // Now empty of manifests, the project can go once its last repository does.
    let (st, _, _) = api(
        &server,
        &admin,
        "DELETE",
        "/api/v2.0/projects/team/repositories/app",
        &Value::Null,
    );
    assert_eq!(st, 200, "the accessory was still there");
    let (st, _, body) = api(
        &server,
        &admin,
        "DELETE",
        "/api/v2.0/projects/team",
        &Value::Null,
    );
    assert_eq!(st, 200, "{body}");
}

/// Tag immutability rules (Harbor's `immutabletagrules`): a covered tag is
/// neither moved by a push (skopeo's fails with 412) nor deleted by any
/// route, nor is its manifest; other tags move freely; a disabled rule
/// stops holding.
#[test]
fn immutable_tags_cannot_be_moved_or_deleted_by_any_route() {
    let work = tempfile::tempdir().expect("tempdir");
    let env = [
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
    ];
    let server = TestServer::start(&work.path().join("data"), &env);
    let admin = basic("admin", ADMIN_PW);
    let (st, _, _) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "team"}),
    );
    assert_eq!(st, 201);
    let rules = "/api/v2.0/projects/team/immutabletagrules";
    let rule = |decoration: &str, pattern: &str| {
        json!({"disabled": false, "action": "immutable", "template": "immutable_template",
            "tag_selectors": [{"kind": "doublestar", "decoration": decoration, "pattern": pattern}],
            "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}]}})
    };
    for bad in [
        rule("sometimes", "v*"),
        json!({"tag_selectors": [], "scope_selectors": {}}),
        rule("matches", ""),
    ] {
        let (st, _, body) = api(&server, &admin, "POST", rules, &bad);
        assert_eq!(st, 400, "{bad}: {body}");
    }
    let (st, h, _) = api(&server, &admin, "POST", rules, &rule("matches", "v*"));
    assert_eq!(st, 201);
    let location = header(&h, "location").expect("location").to_owned();
    let (st, h, listed) = api(&server, &admin, "GET", rules, &Value::Null);
    assert_eq!(
        (st, header(&h, "x-total-count")),
        (200, Some("1")),
        "{listed}"
    );
    assert_eq!(listed[0]["tag_selectors"][0]["pattern"], "v*");

    let layouts = work.path().join("layouts");
    let a = oci_layout::write_image(&layouts.join("a"), "x", "imm-a", &[2000]);
    let b = oci_layout::write_image(&layouts.join("b"), "x", "imm-b", &[2000]);
    push(&server, &layouts.join("a"), "x", "team/app:v1");
    push(&server, &layouts.join("a"), "x", "team/app:latest");
    // Moving v1 fails; moving latest does not; re-pushing v1's own manifest is no move.
    let creds = format!("admin:{ADMIN_PW}");
    let out = std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
        ])
        .arg(format!("oci:{}:x", layouts.join("b").display()))
        .arg(format!("docker://{}/team/app:v1", server.url()))
        .output()
        .expect("skopeo");
    assert!(
        !out.status.success(),
        "a push over an immutable tag succeeded"
    );
    assert_eq!(skopeo_raw(&server, &creds, "team/app:v1"), a.manifest);
    push(&server, &layouts.join("b"), "x", "team/app:latest");
    assert_eq!(skopeo_raw(&server, &creds, "team/app:latest"), b.manifest);
    push(&server, &layouts.join("a"), "x", "team/app:v1");
    let (st, _, _) = http(
        server.addr,
        "PUT",
        "/v2/team/app/manifests/v1",
        &[("Authorization", &admin), ("Content-Type", OCI_MANIFEST)],
        &b.manifest,
    );
    assert_eq!(st, 412, "the registry API's own answer");

    // No route deletes it, nor its manifest, nor its repository.
    let by_digest = format!(
        "/api/v2.0/projects/team/repositories/app/artifacts/{}",
        a.manifest_digest
    );
    for (method, path) in [
        ("DELETE", "/v2/team/app/manifests/v1".to_owned()),
        (
            "DELETE",
            format!("/v2/team/app/manifests/{}", a.manifest_digest),
        ),
        ("DELETE", format!("{by_digest}/tags/v1")),
        ("DELETE", by_digest.clone()),
        (
            "DELETE",
            "/api/v2.0/projects/team/repositories/app".to_owned(),
        ),
    ] {
        let (st, _, body) = http(
            server.addr,
            method,
            &path,
            &[("Authorization", &admin)],
            b"",
        );
        assert_eq!(
            st,
            412,
            "{method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(skopeo_raw(&server, &creds, "team/app:v1"), a.manifest);
    assert_eq!(
        skopeo_raw(&server, &creds, "team/app:latest"),
        b.manifest,
        "the refused repository delete deleted nothing"
    );

    // Disabled, the rule holds nothing: v1 moves, then is deleted.
    let mut off = rule("matches", "v*");
    off["disabled"] = json!(true);
    let (st, _, _) = api(&server, &admin, "PUT", &location, &off);
    assert_eq!(st, 200);
    push(&server, &layouts.join("b"), "x", "team/app:v1");
    assert_eq!(skopeo_raw(&server, &creds, "team/app:v1"), b.manifest);
    let (st, _, _) = http(
        server.addr,
        "DELETE",
        "/v2/team/app/manifests/v1",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(st, 202);
    let (st, _, _) = api(&server, &admin, "DELETE", &location, &Value::Null);
    assert_eq!(st, 200);
    let (_, h, _) = api(&server, &admin, "GET", rules, &Value::Null);
    assert_eq!(header(&h, "x-total-count"), Some("0"));
}
