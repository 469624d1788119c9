//! End to end: the audit log through Harbor's API, over what skopeo and an
//! API client did to a real `berth` with auth on — a push, a pull, a tag
//! deleted, a failed sign-in, account changes — with Harbor's query
//! syntax, paging, the project view, who may read it, and entries kept
//! across a restart.

use berth_testkit::distribution::basic;
use berth_testkit::oci_layout;
use berth_testkit::server::{api_json, header, http, skopeo_ok, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "audit-admin-pw";

/// The audit log entries `path` lists, as (username, operation,
/// resource_type, resource), newest first.
fn entries(server: &TestServer, cred: &str, path: &str) -> Vec<(String, String, String, String)> {
    let (st, _, v) = api_json(server.addr, cred, "GET", path, &Value::Null);
    assert_eq!(st, 200, "{path}: {v}");
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            assert!(
                e["id"].as_u64().is_some() && e["op_time"].as_str().is_some(),
                "{e}"
            );
            (
                s("username"),
                s("operation"),
                s("resource_type"),
                s("resource"),
            )
        })
        .collect()
}

fn has(
    list: &[(String, String, String, String)],
    user: &str,
    op: &str,
    kind: &str,
    resource: &str,
) -> bool {
    list.iter()
        .any(|(u, o, k, r)| u == user && o == op && k == kind && r == resource)
}

#[test]
fn the_audit_log_records_pushes_pulls_deletes_and_account_changes() {
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
    let (st, _, _) = api(
        &admin,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "team"}),
    );
    assert_eq!(st, 201);
    let (st, h, _) = api(
        &admin,
        "POST",
        "/api/v2.0/users",
        &json!({"username": "dev", "password": "dev-password"}),
    );
    assert_eq!(st, 201);
    let user_path = header(&h, "location").expect("location").to_owned();
    let (st, _, _) = api(
        &admin,
        "POST",
        "/api/v2.0/projects/team/members",
        &json!({"role_id": 2, "member_user": {"username": "dev"}}),
    );
    assert_eq!(st, 201);

    // A push and a pull by the developer, through skopeo.
    let layout = work.path().join("layout");
    let image = oci_layout::write_image(&layout, "v1", "audit", &[2000]);
    skopeo_ok(
        &server,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "dev:dev-password",
            "--preserve-digests",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{}/team/app:v1", server.url()),
        ],
    );
    let pulled = work.path().join("pulled");
    skopeo_ok(
        &server,
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            "dev:dev-password",
            &format!("docker://{}/team/app:v1", server.url()),
            &format!("oci:{}:v1", pulled.display()),
        ],
    );
    // A failed sign-in, an account change, a tag removed.
    let (st, _, _) = http(
        server.addr,
        "GET",
        "/v2/",
        &[("Authorization", &basic("dev", "wrong-password"))],
        b"",
    );
    assert_eq!(st, 401);
    let (st, _, _) = api(
        &admin,
        "PUT",
        &user_path,
        &json!({"email": "dev@example.com", "realname": "Dev"}),
    );
    assert_eq!(st, 200);
    let (st, _, err) = api(
        &admin,
        "DELETE",
        &format!(
            "/api/v2.0/projects/team/repositories/app/artifacts/{}",
            image.manifest_digest
        ),
        &Value::Null,
    );
    assert_eq!(st, 200, "{err}");

    let user_res = user_path.trim_start_matches("/api/v2.0/");
    let all = entries(&server, &admin, "/api/v2.0/audit-logs?page_size=100");
    assert!(
        has(&all, "dev", "create", "artifact", "team/app:v1"),
        "{all:#?}"
    );
    assert!(
        has(&all, "dev", "pull", "artifact", "team/app:v1"),
        "{all:#?}"
    );
    assert!(
        has(&all, "dev", "login_failure", "user", "users/dev"),
        "{all:#?}"
    );
    assert!(has(&all, "admin", "update", "user", user_res), "{all:#?}");
    assert!(has(&all, "admin", "create", "user", user_res), "{all:#?}");
    assert!(
        has(&all, "admin", "create", "project", "projects/1")
            || all
                .iter()
                .any(|(u, o, k, _)| u == "admin" && o == "create" && k == "project"),
        "{all:#?}"
    );
    assert!(
        has(
            &all,
            "admin",
            "delete",
            "artifact",
            &format!(
                "projects/team/repositories/app/artifacts/{}",
                image.manifest_digest
            )
        ),
        "{all:#?}"
    );
    // Newest first: the delete is the last thing done.
    assert_eq!(all[0].1, "delete", "{all:#?}");
    // Oldest first when asked.
    let oldest = entries(
        &server,
        &admin,
        "/api/v2.0/audit-logs?sort=op_time&page_size=1",
    );
    assert_eq!(oldest[0].1, "create");

    // Harbor's query syntax.
    let pulls = entries(&server, &admin, "/api/v2.0/audit-logs?q=operation%3Dpull");
    assert!(
        !pulls.is_empty() && pulls.iter().all(|e| e.1 == "pull"),
        "{pulls:?}"
    );
    let set = entries(
        &server,
        &admin,
        "/api/v2.0/audit-logs?q=operation%3D%7Bpull%20login_failure%7D,username%3Ddev&page_size=100",
    );
    assert!(set
        .iter()
        .all(|e| e.0 == "dev" && (e.1 == "pull" || e.1 == "login_failure")));
    assert!(set.iter().any(|e| e.1 == "login_failure"), "{set:?}");
    let fuzzy = entries(
        &server,
        &admin,
        "/api/v2.0/audit-logs?q=resource%3D~team/app&page_size=100",
    );
    assert!(fuzzy.iter().all(|e| e.3.contains("team/app")) && fuzzy.len() >= 2);
    let none = entries(
        &server,
        &admin,
        "/api/v2.0/audit-logs?q=op_time%3D%5B2000-01-01%2000:00:00~2000-12-31%2023:59:59%5D",
    );
    assert!(none.is_empty(), "{none:?}");
    let (st, _, err) = api(
        &admin,
        "GET",
        "/api/v2.0/audit-logs?q=colour%3Dred",
        &Value::Null,
    );
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["errors"][0]["code"], "BAD_REQUEST");
    // Paging.
    let (st, h, page) = api(
        &admin,
        "GET",
        "/api/v2.0/audit-logs?page=2&page_size=2",
        &Value::Null,
    );
    assert_eq!(st, 200);
    assert_eq!(page.as_array().map(Vec::len), Some(2));
    let total: usize = header(&h, "x-total-count")
        .expect("total")
        .parse()
        .expect("number");
    assert_eq!(total, all.len());
    assert!(header(&h, "link").is_some_and(|l| l.contains("rel=\"next\"")));

    // The project's view holds its resources only; the developer (not
    // its administrator) reads neither view.
    let team = entries(
        &server,
        &admin,
        "/api/v2.0/projects/team/logs?page_size=100",
    );
    assert!(team.iter().any(|e| e.1 == "pull"));
    assert!(team.iter().all(|e| e.3.contains("team")), "{team:?}");
    let dev = basic("dev", "dev-password");
    for path in ["/api/v2.0/audit-logs", "/api/v2.0/projects/team/logs"] {
        let (st, _, _) = api(&dev, "GET", path, &Value::Null);
        assert_eq!(st, 403, "{path}");
    }

    // Kept across a restart (a graceful stop flushes what is queued).
    let (st, _, _) = api(&admin, "DELETE", &user_path, &Value::Null);
    assert_eq!(st, 200);
    server.stop();
    server.restart();
    let after = entries(&server, &admin, "/api/v2.0/audit-logs?page_size=100");
    assert!(
        has(&after, "admin", "delete", "user", user_res),
        "{after:#?}"
    );
    assert!(after.len() > all.len());
}
