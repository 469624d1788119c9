//! One route table (issue #10, problem 6: "charts are a second server";
//! `docs/security.md`, "Every route is checked in one place").
//!
//! The chart repository, the Harbor-shaped API and the GC API used to run
//! their own checks: the chart handlers authorized from a task-local
//! caller (an `authorize` that ran where the task-local was not set, such
//! as inside a blocking closure, answered `500`), read-only and delete
//! policies were re-implemented per family, and a refusal's body depended
//! on which piece of code refused (a wrong password on a chart path got
//! the registry's JSON, the GC API's `405` had no `Allow`, the Harbor API
//! answered with the registry's body). Now every route's guard, policies
//! and error surface are declared in one table and applied before any
//! handler runs, which gets the admitted caller as an argument.
//!
//! - members upload and delete charts as their roles allow: `201`, `403`,
//!   `200`, never `500`, and a refused write changes nothing;
//! - every surface answers refusals in its own shape: ChartMuseum's
//!   `{"error"}` on chart paths (wrong password and bearer tokens
//!   included), Harbor's `{"errors":[{"code","message"}]}` on
//!   `/api/v2.0`, the registry's on `/v2`; `405` carries `Allow` everywhere.

use berth_testkit::server::{header, http, TestServer};
use serde_json::{json, Value};

use super::{basic, chart_tgz, Resp};

const ADMIN_PW: &str = "routes-admin-pw";

struct Registry {
    server: TestServer,
    _dir: tempfile::TempDir,
}

fn pw(user: &str) -> Option<String> {
    Some(match user {
        "admin" => basic("admin", ADMIN_PW),
        user => basic(user, &format!("{user}-password")),
    })
}

impl Registry {
    fn send(&self, method: &str, path: &str, auth: Option<String>, body: &[u8]) -> Resp {
        let mut headers = vec![("Content-Type", "application/json")];
        let auth = auth.unwrap_or_default();
        if !auth.is_empty() {
            headers.push(("Authorization", auth.as_str()));
        }
        let (status, headers, body) = http(self.server.addr, method, path, &headers, body);
        Resp {
            what: format!("{method} {path}"),
            status,
            headers,
            body,
        }
    }

    /// The chart versions of `team` as its developer sees them.
    fn charts(&self) -> Value {
        let r = self.send("GET", "/api/chartrepo/team/charts", pw("dev"), b"");
        r.expect(200);
        r.json()
    }
}

/// A private project `team` with a developer, a guest and a maintainer.
fn registry() -> Registry {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
        ],
    );
    let r = Registry { server, _dir: dir };
    for user in ["dev", "guest", "keeper"] {
        let body = json!({"username": user, "password": format!("{user}-password")});
        r.send(
            "POST",
            "/api/v2.0/users",
            pw("admin"),
            body.to_string().as_bytes(),
        )
        .expect(201);
    }
    r.send(
        "POST",
        "/api/v2.0/projects",
        pw("admin"),
        br#"{"project_name":"team","metadata":{"public":"false"}}"#,
    )
    .expect(201);
    for (user, role) in [("dev", 2), ("guest", 3), ("keeper", 4)] {
        let body = json!({"role_id": role, "member_user": {"username": user}});
        r.send(
            "POST",
            "/api/v2.0/projects/team/members",
            pw("admin"),
            body.to_string().as_bytes(),
        )
        .expect(201);
    }
    r
}

/// Chart writes by members, through both layouts: what their roles allow,
/// answered as the chart API answers, and never a `500` (the permission
/// is checked once, before the handler, on the caller it is handed — not
/// from ambient state inside the engine call).
#[test]
fn routes_chart_writes_by_members_are_checked_before_any_handler() {
    let r = registry();
    let tgz = chart_tgz("app", "1.0.0");
    for upload in ["/api/chartrepo/team/charts", "/api/team/charts"] {
        // The guest may read, not push; anonymous callers are challenged.
        let msg = r.send("POST", upload, pw("guest"), &tgz).chart_error(403);
        assert!(msg.contains("team"), "{msg}");
        let anon = r.send("POST", upload, None, &tgz);
        anon.chart_error(401);
        assert_eq!(
            header(&anon.headers, "www-authenticate"),
            Some("Basic realm=\"berth\"")
        );
    }
    assert_eq!(r.charts(), json!({}), "refused uploads stored nothing");

    // The developer uploads (chart, then its provenance file).
    let up = r.send("POST", "/api/chartrepo/team/charts", pw("dev"), &tgz);
    up.expect(201);
    assert_eq!(up.json(), json!({"saved": true}));
    let again = r.send("POST", "/api/team/charts", pw("dev"), &tgz);
    let msg = again.chart_error(409);
    assert!(msg.contains("app-1.0.0") && msg.contains("force"), "{msg}");
    let stored = r.charts();
    assert_eq!(stored["app"][0]["version"], "1.0.0", "{stored}");

    // Deletes need maintainer: developer and guest get 403 and change
    // nothing; the maintainer deletes.
    for (who, path) in [
        ("dev", "/api/chartrepo/team/charts/app/1.0.0"),
        ("guest", "/api/team/charts/app"),
    ] {
        let msg = r.send("DELETE", path, pw(who), b"").chart_error(403);
        assert!(msg.contains(who), "{msg}");
    }
    assert_eq!(r.charts(), stored);
    r.send("DELETE", "/api/team/charts/app/1.0.0", pw("keeper"), b"")
        .expect(200);
    assert_eq!(r.charts(), json!({}));
}

/// Every surface answers a refusal in its own error shape, whichever check
/// refused: the authentication, the guard or the method.
#[test]
fn routes_every_surface_refuses_in_its_own_error_shape() {
    let r = registry();

    // Chart paths: a wrong password and a registry token are refused
    // before any handler, in ChartMuseum's shape, with the Basic challenge
    // helm answers.
    let token = {
        let t = r.send(
            "GET",
            "/service/token?service=berth-registry&scope=repository:team/app:pull,push",
            pw("dev"),
            b"",
        );
        t.expect(200);
        t.json()["token"].as_str().expect("token").to_owned()
    };
    for (auth, why) in [
        (Some(basic("dev", "wrong-password")), "wrong password"),
        (Some(format!("Bearer {token}")), "registry token"),
    ] {
        for path in ["/chartrepo/team/index.yaml", "/api/chartrepo/team/charts"] {
            let res = r.send("GET", path, auth.clone(), b"");
            res.chart_error(401);
            assert_eq!(
                header(&res.headers, "www-authenticate"),
                Some("Basic realm=\"berth\""),
                "{why}: {path}"
            );
        }
    }

    // The Harbor-shaped API: Harbor's body, the message saying why.
    let body = json!({"role_id": 2, "member_user": {"username": "guest"}});
    let msg = r
        .send(
            "POST",
            "/api/v2.0/projects/team/members",
            pw("dev"),
            body.to_string().as_bytes(),
        )
        .harbor_error(403, "DENIED");
    assert!(msg.contains("team"), "{msg}");
    let msg = r
        .send("GET", "/api/v2.0/system/gc", pw("dev"), b"")
        .harbor_error(403, "DENIED");
    assert!(msg.contains("administrator"), "{msg}");
    r.send("GET", "/api/v2.0/nothing", pw("dev"), b"")
        .harbor_error(404, "UNSUPPORTED");

    // 405 says what is allowed, on every surface.
    for (path, allow) in [
        ("/api/v2.0/system/gc/schedule", "GET, POST"),
        ("/api/v2.0/projects", "GET, POST"),
        ("/chartrepo/team/index.yaml", "GET, HEAD"),
        ("/v2/team/app/tags/list", "GET"),
        ("/metrics", "GET, HEAD"),
    ] {
        let res = r.send("PATCH", path, pw("admin"), b"");
        res.expect(405);
        assert_eq!(header(&res.headers, "allow"), Some(allow), "{path}");
    }
    r.send("PATCH", "/api/v2.0/system/gc/schedule", pw("admin"), b"")
        .harbor_error(405, "UNSUPPORTED");
    r.send("PATCH", "/chartrepo/team/index.yaml", pw("admin"), b"")
        .chart_error(405);

    // The registry API keeps the distribution spec's body.
    let res = r.send("DELETE", "/v2/team/app/manifests/v1", pw("dev"), b"");
    res.expect(403);
    let v = res.json();
    assert_eq!(v["errors"][0]["code"], "DENIED", "{v}");
    assert!(v["errors"][0]["detail"].as_str().is_some(), "{v}");
}
