//! End to end: tag retention through Harbor's `/retentions` API on what
//! skopeo pushed into a real `berth` with auth on. A dry run lists what
//! would go and deletes nothing; a run deletes what no rule keeps (an
//! immutable tag stays, repositories no rule covers are untouched), and
//! skopeo then fails to pull what went; runs, tasks and task logs are in
//! the history; a cron fires a scheduled run; who may do what; bad
//! policies are `400`.

use std::time::{Duration, Instant};

use berth_testkit::distribution::basic;
use berth_testkit::oci_layout;
use berth_testkit::server::{api_json, header, http, skopeo_ok, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "retention-admin-pw";

fn push(server: &TestServer, layout: &std::path::Path, dest: &str) {
    let creds = format!("admin:{ADMIN_PW}");
    skopeo_ok(
        server,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            "--preserve-digests",
            &format!("oci:{}:x", layout.display()),
            &format!("docker://{}/{dest}", server.url()),
        ],
    );
}

/// Whether skopeo can read `image` (`repo:tag` or `repo@digest`).
fn pullable(server: &TestServer, image: &str) -> bool {
    std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
        ])
        .args(["--creds", &format!("admin:{ADMIN_PW}")])
        .arg(format!("docker://{}/{image}", server.url()))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running skopeo")
        .status
        .success()
}

fn rule(template: &str, n: Option<u64>, repos: &str, tags: &str, untagged: bool) -> Value {
    let params = match n {
        Some(n) => json!({ template: n }),
        None => json!({}),
    };
    json!({
        "disabled": false, "action": "retain", "template": template, "params": params,
        "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": tags,
                           "extras": json!({"untagged": untagged}).to_string()}],
        "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches",
                                            "pattern": repos}]},
    })
}

/// Waits for execution `location` to end; its JSON.
fn ended(server: &TestServer, cred: &str, policy: u64, run: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, _, list) = api_json(
            server.addr,
            cred,
            "GET",
            &format!("/api/v2.0/retentions/{policy}/executions"),
            &Value::Null,
        );
        assert_eq!(st, 200, "{list}");
        let found = list
            .as_array()
            .and_then(|l| l.iter().find(|r| r["id"] == run))
            .cloned()
            .expect("the run is listed");
        if found["status"] != "Running" {
            return found;
        }
        assert!(Instant::now() < deadline, "run {run} did not end: {found}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_id(location: &str) -> u64 {
    location
        .rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("execution id in Location")
}

#[test]
fn retention_keeps_what_rules_keep_and_deletes_the_rest() {
    let work = tempfile::tempdir().expect("tempdir");
    let env = [
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
    ];
    let server = TestServer::start(&work.path().join("data"), &env);
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
    let (_, _, project) = api(&admin, "GET", "/api/v2.0/projects/team", &Value::Null);
    let project_id = project["project_id"].as_u64().expect("project_id");
    assert!(project["metadata"].get("retention_id").is_none());
    for (user, role) in [("lead", 1), ("dev", 2)] {
        let (st, _, _) = api(
            &admin,
            "POST",
            "/api/v2.0/users",
            &json!({"username": user, "password": format!("{user}-password")}),
        );
        assert_eq!(st, 201);
        let (st, _, _) = api(
            &admin,
            "POST",
            "/api/v2.0/projects/team/members",
            &json!({"role_id": role, "member_user": {"username": user}}),
        );
        assert_eq!(st, 201);
    }
    let (st, _, _) = api(
        &admin,
        "POST",
        "/api/v2.0/users",
        &json!({"username": "eve", "password": "eve-password"}),
    );
    assert_eq!(st, 201);
    let (lead, dev, eve) = (
        basic("lead", "lead-password"),
        basic("dev", "dev-password"),
        basic("eve", "eve-password"),
    );

    // team/app: v1..v4 pushed in order, dev-1, and one left untagged;
    // team/other: old.
    let layouts = work.path().join("layouts");
    let mut digest = std::collections::HashMap::new();
    for name in ["v1", "v2", "v3", "v4", "dev-1", "untagged", "old"] {
        let dir = layouts.join(name);
        let image = oci_layout::write_image(&dir, "x", &format!("ret-{name}"), &[1500]);
        let dest = match name {
            "old" => "team/other:old".to_owned(),
            "untagged" => "team/app:gone".to_owned(),
            tag => format!("team/app:{tag}"),
        };
        push(&server, &dir, &dest);
        digest.insert(name, image.manifest_digest.clone());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, _, _) = http(
        server.addr,
        "DELETE",
        &format!(
            "/api/v2.0/projects/team/repositories/app/artifacts/{}/tags/gone",
            digest["untagged"]
        ),
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(st, 200);
    // v1 is immutable.
    let (st, _, _) = api(
        &admin,
        "POST",
        "/api/v2.0/projects/team/immutabletagrules",
        &json!({"disabled": false, "action": "immutable", "template": "immutable_template",
                "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "v1"}],
                "scope_selectors": {"repository": [{"kind": "doublestar",
                    "decoration": "repoMatches", "pattern": "**"}]}}),
    );
    assert_eq!(st, 201);

    // Metadata: Harbor's five templates.
    let (st, _, meta) = api(&dev, "GET", "/api/v2.0/retentions/metadatas", &Value::Null);
    assert_eq!(st, 200);
    assert_eq!(
        meta["templates"].as_array().map(Vec::len),
        Some(5),
        "{meta}"
    );

    // Keep the latest two v* and every dev-*, in app only.
    let policy = json!({
        "algorithm": "or",
        "rules": [rule("latestPushedK", Some(2), "app", "v*", false),
                  rule("always", None, "app", "dev-*", false)],
        "trigger": {"kind": "Schedule", "settings": {"cron": ""}},
        "scope": {"level": "project", "ref": project_id},
    });
    // Bad policies.
    let mut bad_cases = Vec::new();
    for (path, value) in [
        ("/rules/0/template", json!("keepSome")),
        ("/rules/0/params", json!({})),
        ("/rules/0/params", json!({"latestPushedK": 0})),
        ("/rules/0/action", json!("delete")),
        ("/rules/0/tag_selectors/0/extras", json!("{not json")),
        ("/rules/0/tag_selectors/0/decoration", json!("sometimes")),
        ("/trigger/settings/cron", json!("every day")),
        ("/algorithm", json!("and")),
        ("/scope", json!({"level": "project", "ref": "x"})),
    ] {
        let mut p = policy.clone();
        *p.pointer_mut(path).expect("path") = value;
        bad_cases.push(p);
    }
    for bad in bad_cases {
        let (st, _, body) = api(&lead, "POST", "/api/v2.0/retentions", &bad);
        assert_eq!(st, 400, "{bad}: {body}");
        assert!(body["errors"][0]["message"].is_string(), "{body}");
    }
    let mut elsewhere = policy.clone();
    elsewhere["scope"]["ref"] = json!(9999);
    let (st, _, _) = api(&lead, "POST", "/api/v2.0/retentions", &elsewhere);
    assert_eq!(st, 404);
    // Only the project's administrators create it; to an outsider, the
    // private project's id is as missing as 9999 (ids are not probed).
    for (who, status) in [(&dev, 403), (&eve, 404)] {
        let (st, _, body) = api(who, "POST", "/api/v2.0/retentions", &policy);
        assert_eq!(st, status, "{body}");
    }
    let (st, h, _) = api(&lead, "POST", "/api/v2.0/retentions", &policy);
    assert_eq!(st, 201);
    let location = header(&h, "location").expect("location").to_owned();
    let id: u64 = location
        .rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let (st, _, _) = api(&lead, "POST", "/api/v2.0/retentions", &policy);
    assert_eq!(st, 409, "one policy per project");
    let (_, _, project) = api(&lead, "GET", "/api/v2.0/projects/team", &Value::Null);
    assert_eq!(project["metadata"]["retention_id"], json!(id.to_string()));
    let (st, _, got) = api(&lead, "GET", &location, &Value::Null);
    assert_eq!(st, 200);
    assert_eq!(got["scope"]["ref"], json!(project_id));
    assert_eq!(got["rules"][0]["params"]["latestPushedK"], json!(2));
    assert_eq!(got["rules"][1]["template"], "always");
    // Outsiders cannot see it; members who are not admins may not.
    assert_eq!(api(&eve, "GET", &location, &Value::Null).0, 404);
    assert_eq!(api(&dev, "GET", &location, &Value::Null).0, 403);
    assert_eq!(
        api(&dev, "POST", &format!("{location}/executions"), &json!({})).0,
        403
    );
    assert_eq!(api(&eve, "DELETE", &location, &Value::Null).0, 404);

    // A dry run: what would go, nothing gone.
    let (st, h, _) = api(
        &lead,
        "POST",
        &format!("{location}/executions"),
        &json!({"dry_run": true}),
    );
    assert_eq!(st, 201);
    let dry = run_id(header(&h, "location").expect("location"));
    let run = ended(&server, &lead, id, dry);
    assert_eq!(
        (run["status"].as_str(), run["dry_run"].as_bool()),
        (Some("Succeed"), Some(true)),
        "{run}"
    );
    let (st, _, tasks) = api(
        &lead,
        "GET",
        &format!("{location}/executions/{dry}/tasks"),
        &Value::Null,
    );
    assert_eq!(st, 200);
    assert_eq!(
        tasks.as_array().map(Vec::len),
        Some(1),
        "only team/app is covered: {tasks}"
    );
    assert_eq!(tasks[0]["repository"], "team/app");
    assert_eq!(
        (tasks[0]["total"].as_u64(), tasks[0]["retained"].as_u64()),
        (Some(6), Some(3))
    );
    let (st, _, log) = http(
        server.addr,
        "GET",
        &format!("{location}/executions/{dry}/tasks/1"),
        &[("Authorization", &lead)],
        b"",
    );
    assert_eq!(st, 200);
    let log = String::from_utf8_lossy(&log).into_owned();
    for (name, action) in [
        ("v1", "DEL"),
        ("v2", "DEL"),
        ("v3", "RETAIN"),
        ("v4", "RETAIN"),
        ("dev-1", "RETAIN"),
        ("untagged", "DEL"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&digest[name]))
            .expect("line");
        assert!(line.contains(&format!(" {action} ")), "{name}: {line}");
    }
    for name in ["v1", "v2", "untagged"] {
        assert!(
            pullable(&server, &format!("team/app@{}", digest[name])),
            "dry run deleted {name}"
        );
    }

    // The run: v2 and the untagged one go; v1 is immutable and stays;
    // team/other is not covered.
    let (st, h, _) = api(&lead, "POST", &format!("{location}/executions"), &json!({}));
    assert_eq!(st, 201);
    let real = run_id(header(&h, "location").expect("location"));
    let run = ended(&server, &lead, id, real);
    assert_eq!(
        (run["status"].as_str(), run["trigger"].as_str()),
        (Some("Succeed"), Some("MANUAL")),
        "{run}"
    );
    for (image, present) in [
        ("team/app:v1", true),
        ("team/app:v2", false),
        ("team/app:v3", true),
        ("team/app:v4", true),
        ("team/app:dev-1", true),
        ("team/other:old", true),
    ] {
        assert_eq!(pullable(&server, image), present, "{image}");
    }
    assert!(!pullable(
        &server,
        &format!("team/app@{}", digest["untagged"])
    ));
    let (_, _, tasks) = api(
        &lead,
        "GET",
        &format!("{location}/executions/{real}/tasks"),
        &Value::Null,
    );
    assert_eq!(
        (tasks[0]["total"].as_u64(), tasks[0]["retained"].as_u64()),
        (Some(6), Some(4))
    );
    let (_, _, log) = http(
        server.addr,
        "GET",
        &format!("{location}/executions/{real}/tasks/1"),
        &[("Authorization", &lead)],
        b"",
    );
    let log = String::from_utf8_lossy(&log).into_owned();
    let v1 = log
        .lines()
        .find(|l| l.contains(&digest["v1"]))
        .expect("v1 line");
    assert!(v1.contains(" KEPT ") && v1.contains("immutab"), "{v1}");
    // The deletions are in the audit log, under the caller's name.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, logs) = api(
            &admin,
            "GET",
            "/api/v2.0/audit-logs?q=operation=delete",
            &Value::Null,
        );
        let found = logs.as_array().into_iter().flatten().any(|l| {
            l["username"] == "lead"
                && l["resource"]
                    .as_str()
                    .is_some_and(|r| r.contains(&digest["v2"]))
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no audit entry for the deletion: {logs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stopping an ended run: 412. Another policy's run ids are 404.
    let (st, _, _) = api(
        &lead,
        "PATCH",
        &format!("{location}/executions/{real}"),
        &json!({"action": "stop"}),
    );
    assert_eq!(st, 412);
    let (st, _, _) = api(
        &lead,
        "GET",
        &format!("{location}/executions/99/tasks"),
        &Value::Null,
    );
    assert_eq!(st, 404);

    // A schedule: every second; a SCHEDULE run appears, and the schedule
    // is taken away again.
    let mut scheduled = policy.clone();
    scheduled["trigger"]["settings"]["cron"] = json!("* * * * * *");
    let (st, _, _) = api(&lead, "PUT", &location, &scheduled);
    assert_eq!(st, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, runs) = api(
            &lead,
            "GET",
            &format!("{location}/executions"),
            &Value::Null,
        );
        if runs
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["trigger"] == "SCHEDULE" && r["status"] == "Succeed")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled run: {runs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (st, _, _) = api(&lead, "PUT", &location, &policy);
    assert_eq!(st, 200);
    let (_, h, _) = api(
        &lead,
        "GET",
        &format!("{location}/executions?page_size=1"),
        &Value::Null,
    );
    assert_eq!(
        header(&h, "x-total-count").map(|n| n.parse::<u64>().unwrap_or(0) >= 3),
        Some(true)
    );
    assert!(header(&h, "link").is_some_and(|l| l.contains("rel=\"next\"")));

    // Deleting the policy takes its runs with it.
    let (st, _, _) = api(&lead, "DELETE", &location, &Value::Null);
    assert_eq!(st, 200);
    assert_eq!(api(&lead, "GET", &location, &Value::Null).0, 404);
    let (_, _, project) = api(&lead, "GET", "/api/v2.0/projects/team", &Value::Null);
    assert!(project["metadata"].get("retention_id").is_none());
}
