//! End to end: the web console's security rules, over plain HTTP against a
//! real `berth serve` (auth on), no browser. A session cookie changes
//! nothing through the API without the page's CSRF token or from another
//! site; sign-in forms from another site are refused; the cookie is
//! `HttpOnly; SameSite=Lax` (no `Secure` on plain http) and never
//! authenticates `/v2`; signing out and a password change make it
//! worthless; a guest sees no administration and a non-member no private
//! project; every page carries a Content-Security-Policy without
//! `unsafe-inline`; `next=` never leads to another site; values from users
//! are shown escaped.

use std::net::SocketAddr;

use berth_testkit::distribution::basic;
use berth_testkit::server::{api_json, header, http, skopeo_ok, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "console-sec-admin-pw";

/// A value that must never reach a page unescaped.
const SCRIPT: &str = "<script>alert(1)</script>";

fn start(work: &tempfile::TempDir) -> TestServer {
    TestServer::start(
        &work.path().join("data"),
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
        ],
    )
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `application/x-www-form-urlencoded` value encoding.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// `POST /console/login` with `extra` headers.
fn login_post(
    addr: SocketAddr,
    user: &str,
    pw: &str,
    next: &str,
    extra: &[(&str, &str)],
) -> Response {
    let body = form_body(&[("principal", user), ("password", pw), ("next", next)]);
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    headers.extend_from_slice(extra);
    http(addr, "POST", "/console/login", &headers, body.as_bytes())
}

/// The `berth_session` cookie a response set (the value), if any.
fn set_cookie_value(headers: &[(String, String)]) -> Option<String> {
    let sc = header(headers, "set-cookie")?;
    let v = sc.strip_prefix("berth_session=")?.split(';').next()?;
    Some(v.to_owned())
}

/// Signs in (as a browser would: same-origin); the `Cookie` header value.
fn sign_in(addr: SocketAddr, user: &str, pw: &str) -> String {
    let (st, h, b) = login_post(addr, user, pw, "", &[("Sec-Fetch-Site", "same-origin")]);
    assert_eq!(
        st,
        303,
        "sign-in of {user}: {}",
        String::from_utf8_lossy(&b)
    );
    let v = set_cookie_value(&h).expect("a session cookie");
    assert!(!v.is_empty());
    format!("berth_session={v}")
}

/// `GET path` with the session cookie: status, headers, body as text.
fn page(addr: SocketAddr, cookie: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    let (st, h, b) = http(addr, "GET", path, &[("Cookie", cookie)], b"");
    (st, h, String::from_utf8_lossy(&b).into_owned())
}

/// The CSRF token of the session's pages (`<meta name="csrf-token">`).
fn csrf_of(addr: SocketAddr, cookie: &str) -> String {
    let (st, _, html) = page(addr, cookie, "/console/projects");
    assert_eq!(st, 200, "{html}");
    let marker = "name=\"csrf-token\" content=\"";
    let start = html.find(marker).expect("a csrf-token meta") + marker.len();
    let len = html[start..].find('"').expect("end of the token");
    html[start..start + len].to_owned()
}

/// A JSON API call with the session cookie and `extra` headers.
fn api_cookie(
    addr: SocketAddr,
    cookie: &str,
    method: &str,
    path: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let raw = match body {
        Value::Null => Vec::new(),
        b => serde_json::to_vec(b).expect("json"),
    };
    let mut headers = vec![("Cookie", cookie), ("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    let (st, _, b) = http(addr, method, path, &headers, &raw);
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn project_exists(addr: SocketAddr, name: &str) -> bool {
    let admin = basic("admin", ADMIN_PW);
    let (st, _, _) = api_json(
        addr,
        &admin,
        "GET",
        &format!("/api/v2.0/projects/{name}"),
        &Value::Null,
    );
    st == 200
}

fn create_user(server: &TestServer, name: &str, pw: &str, extra: Value) -> u64 {
    let admin = basic("admin", ADMIN_PW);
    let mut body =
        json!({"username": name, "password": pw, "email": format!("{name}@example.com")});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (st, _, err) = api_json(server.addr, &admin, "POST", "/api/v2.0/users", &body);
    assert_eq!(st, 201, "creating {name}: {err}");
    let (st, _, list) = api_json(
        server.addr,
        &admin,
        "GET",
        &format!("/api/v2.0/users?username={name}"),
        &Value::Null,
    );
    assert_eq!(st, 200);
    list.as_array()
        .into_iter()
        .flatten()
        .find(|u| u["username"] == name)
        .and_then(|u| u["user_id"].as_u64())
        .unwrap_or_else(|| panic!("user {name} listed: {list}"))
}

#[test]
fn csrf_cross_site_cookie_flags_and_redirects() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = start(&work);
    let addr = server.addr;

    // The cookie: HttpOnly, SameSite=Lax, Path=/, and no Secure on http.
    let (st, h, _) = login_post(addr, "admin", ADMIN_PW, "", &[]);
    assert_eq!(st, 303);
    let sc = header(&h, "set-cookie").expect("Set-Cookie").to_owned();
    let attrs: Vec<String> = sc
        .split(';')
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attrs.iter().any(|a| a == "httponly"), "{sc}");
    assert!(attrs.iter().any(|a| a == "samesite=lax"), "{sc}");
    assert!(attrs.iter().any(|a| a == "path=/"), "{sc}");
    assert!(!attrs.iter().any(|a| a == "secure"), "{sc}");

    let cookie = sign_in(addr, "admin", ADMIN_PW);
    let csrf = csrf_of(addr, &cookie);
    assert_eq!(csrf.len(), 43, "{csrf}");
    let create = |name: &str, extra: &[(&str, &str)]| {
        api_cookie(
            addr,
            &cookie,
            "POST",
            "/api/v2.0/projects",
            &json!({"project_name": name}),
            extra,
        )
    };

    // Without the token, with a wrong one, or from another site: 403, and
    // nothing is created.
    let wrong: String = csrf.chars().rev().collect();
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        ("no-token", vec![]),
        ("wrong-token", vec![("X-CSRF-Token", wrong.as_str())]),
        ("empty-token", vec![("X-CSRF-Token", "")]),
        (
            "cross-site",
            vec![
                ("X-CSRF-Token", csrf.as_str()),
                ("Sec-Fetch-Site", "cross-site"),
            ],
        ),
    ];
    for (name, extra) in &cases {
        let (st, body) = create(name, extra);
        assert_eq!(st, 403, "{name}: {body}");
        assert!(!project_exists(addr, name), "{name} was created");
    }
    let (st, body) = create(
        "same-site",
        &[("X-CSRF-Token", &csrf), ("Sec-Fetch-Site", "same-site")],
    );
    assert_eq!(st, 403, "a sibling site is another site: {body}");
    assert!(!project_exists(addr, "same-site"));
    // The same request with the token from this origin goes through: the
    // refusals above were the token's and the site's.
    let (st, body) = create(
        "with-token",
        &[("X-CSRF-Token", &csrf), ("Sec-Fetch-Site", "same-origin")],
    );
    assert_eq!(st, 201, "{body}");
    assert!(project_exists(addr, "with-token"));
    // A delete without the token leaves the project.
    let (st, _) = api_cookie(
        addr,
        &cookie,
        "DELETE",
        "/api/v2.0/projects/with-token",
        &Value::Null,
        &[],
    );
    assert_eq!(st, 403);
    assert!(project_exists(addr, "with-token"));
    // Reads need no token.
    let (st, _) = api_cookie(
        addr,
        &cookie,
        "GET",
        "/api/v2.0/projects/with-token",
        &Value::Null,
        &[],
    );
    assert_eq!(st, 200);

    // The session never authenticates the registry API.
    for path in ["/v2/", "/v2/with-token/app/tags/list"] {
        let (st, _, _) = http(addr, "GET", path, &[("Cookie", &cookie)], b"");
        assert_eq!(st, 401, "GET {path} with the session cookie");
    }

    // A sign-in form posted from another site: refused, no cookie.
    let evil = [
        vec![("Origin", "http://evil.example")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ];
    for extra in &evil {
        let (st, h, _) = login_post(addr, "admin", ADMIN_PW, "", extra);
        assert_eq!(st, 403, "{extra:?}");
        assert_eq!(set_cookie_value(&h), None, "{extra:?} got a session");
    }
    let own = format!("http://{addr}");
    let (st, h, _) = login_post(addr, "admin", ADMIN_PW, "", &[("Origin", own.as_str())]);
    assert_eq!(st, 303, "this site's own origin");
    assert!(set_cookie_value(&h).is_some());

    // next=: a console path is followed; anything else goes to projects.
    let (st, h, _) = login_post(addr, "admin", ADMIN_PW, "/console/admin/gc", &[]);
    assert_eq!(st, 303);
    assert_eq!(header(&h, "location"), Some("/console/admin/gc"));
    for next in [
        "//evil.example",
        "https://evil.example",
        "http://evil.example/console/projects",
        "/console//evil.example",
        "/\\evil.example",
        "/console/../..//evil.example",
        "javascript:alert(1)",
    ] {
        let (st, h, _) = login_post(addr, "admin", ADMIN_PW, next, &[]);
        assert_eq!(st, 303, "next={next}");
        let to = header(&h, "location").unwrap_or_default();
        assert_eq!(to, "/console/projects", "next={next} led to {to}");
        // The sign-in page does not carry it in its form either.
        let (_, _, html) = http(
            addr,
            "GET",
            &format!("/console/login?next={}", encode(next)),
            &[],
            b"",
        );
        let html = String::from_utf8_lossy(&html);
        assert!(
            !html.contains("evil.example"),
            "next={next} is in the form: {html}"
        );
    }
}

#[test]
fn sign_out_and_password_change_end_the_session() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = start(&work);
    let addr = server.addr;
    let dev_id = create_user(&server, "dev", "dev-password-1", json!({}));

    let cookie = sign_in(addr, "dev", "dev-password-1");
    let csrf = csrf_of(addr, &cookie);
    let (st, me) = api_cookie(
        addr,
        &cookie,
        "GET",
        "/api/v2.0/users/current",
        &Value::Null,
        &[],
    );
    assert_eq!(st, 200);
    assert_eq!(me["username"], "dev", "{me}");

    // Signing out needs the page's token.
    let (st, _, _) = http(
        addr,
        "POST",
        "/console/logout",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"csrf=nope",
    );
    assert_eq!(st, 403);
    let (st, _, _) = page(addr, &cookie, "/console/projects");
    assert_eq!(st, 200, "a refused sign-out ended the session");

    let body = form_body(&[("csrf", &csrf)]);
    let (st, h, _) = http(
        addr,
        "POST",
        "/console/logout",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    );
    assert_eq!(st, 303);
    assert_eq!(header(&h, "location"), Some("/console/login"));
    assert_eq!(
        set_cookie_value(&h).as_deref(),
        Some(""),
        "the cookie is cleared"
    );
    // The old cookie, replayed: the login page, and anonymous in the API.
    let (st, h, _) = page(addr, &cookie, "/console/projects");
    assert_eq!(st, 303);
    let to = header(&h, "location").unwrap_or_default();
    assert!(to.starts_with("/console/login"), "{to}");
    let (st, me) = api_cookie(
        addr,
        &cookie,
        "GET",
        "/api/v2.0/users/current",
        &Value::Null,
        &[],
    );
    assert_eq!(st, 401, "{me}");
    let (st, _) = api_cookie(
        addr,
        &cookie,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "after-logout"}),
        &[("X-CSRF-Token", &csrf)],
    );
    assert_eq!(st, 401);
    assert!(!project_exists(addr, "after-logout"));

    // A password change by the admin revokes a live session at once.
    let cookie = sign_in(addr, "dev", "dev-password-1");
    let (st, _, _) = page(addr, &cookie, "/console/projects");
    assert_eq!(st, 200);
    let admin = basic("admin", ADMIN_PW);
    let (st, _, err) = api_json(
        addr,
        &admin,
        "PUT",
        &format!("/api/v2.0/users/{dev_id}/password"),
        &json!({"new_password": "dev-password-2"}),
    );
    assert_eq!(st, 200, "{err}");
    let (st, h, _) = page(addr, &cookie, "/console/projects");
    assert_eq!(st, 303);
    assert!(header(&h, "location")
        .unwrap_or_default()
        .starts_with("/console/login"));
    let (st, _) = api_cookie(
        addr,
        &cookie,
        "GET",
        "/api/v2.0/users/current",
        &Value::Null,
        &[],
    );
    assert_eq!(st, 401);
    // The new password signs in.
    let cookie = sign_in(addr, "dev", "dev-password-2");
    let (st, _, _) = page(addr, &cookie, "/console/projects");
    assert_eq!(st, 200);
}

/// Users `gus` (a guest of `team`, realname `<script>…`) and `stranger`;
/// projects `team` and `secret` (private), each holding `app:v1`; the
/// image's digest.
fn team_and_secret(server: &TestServer, work: &tempfile::TempDir) -> String {
    let addr = server.addr;
    let admin = basic("admin", ADMIN_PW);
    create_user(server, "gus", "gus-password-1", json!({"realname": SCRIPT}));
    create_user(server, "stranger", "stranger-password-1", json!({}));
    for name in ["team", "secret"] {
        let (st, _, err) = api_json(
            addr,
            &admin,
            "POST",
            "/api/v2.0/projects",
            &json!({"project_name": name}),
        );
        assert_eq!(st, 201, "{err}");
    }
    let (st, _, err) = api_json(
        addr,
        &admin,
        "POST",
        "/api/v2.0/projects/team/members",
        &json!({"role_id": 3, "member_user": {"username": "gus"}}),
    );
    assert_eq!(st, 201, "{err}");
    let layout = work.path().join("layout");
    let image = berth_testkit::oci_layout::write_image(&layout, "v1", "console-sec", &[1000]);
    for dest in ["team/app:v1", "secret/app:v1"] {
        skopeo_ok(
            server,
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                &format!("admin:{ADMIN_PW}"),
                "--preserve-digests",
                &format!("oci:{}:v1", layout.display()),
                &format!("docker://{}/{dest}", server.url()),
            ],
        );
    }
    image.manifest_digest
}

/// A private project's pages are `404` for a non-member, as the project
/// page is (and as for a project that does not exist): no page tells a
/// stranger that the project is there.
#[test]
fn private_project_pages_are_not_found_for_non_members() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = start(&work);
    let addr = server.addr;
    let digest = &team_and_secret(&server, &work);
    // A private project is not there for a non-member.
    let stranger = sign_in(addr, "stranger", "stranger-password-1");
    for path in [
        "/console/project?name=secret".to_owned(),
        "/console/project?name=secret&tab=charts".to_owned(),
        "/console/repository?name=secret/app".to_owned(),
        format!("/console/artifact?name=secret/app&digest={digest}"),
    ] {
        let (st, _, html) = page(addr, &stranger, &path);
        assert_eq!(st, 404, "{path} for a non-member: {html}");
        assert!(!html.contains(digest.as_str()), "{path} shows the digest");
    }
    let (_, _, html) = page(addr, &stranger, "/console/projects");
    assert!(
        !html.contains("project?name=secret"),
        "the project list shows secret"
    );

    for path in [
        "/console/project?name=nosuch".to_owned(),
        "/console/repository?name=nosuch/app".to_owned(),
        format!("/console/artifact?name=nosuch/app&digest={digest}"),
    ] {
        let (st, _, html) = page(addr, &stranger, &path);
        assert_eq!(st, 404, "{path}: {html}");
    }
}

#[test]
fn guests_non_members_headers_and_escaping() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = start(&work);
    let addr = server.addr;
    let digest = &team_and_secret(&server, &work);
    let script = SCRIPT;

    // A guest: the member project's pages, no administration.
    let gus = sign_in(addr, "gus", "gus-password-1");
    for path in [
        "/console/projects".to_owned(),
        "/console/project?name=team".to_owned(),
        "/console/repository?name=team/app".to_owned(),
        format!("/console/artifact?name=team/app&digest={digest}"),
    ] {
        let (st, _, html) = page(addr, &gus, &path);
        assert_eq!(st, 200, "{path}: {html}");
        for admin_only in [
            "/console/admin/users",
            "/console/admin/gc",
            "/console/audit",
            "Garbage collection",
        ] {
            assert!(
                !html.contains(admin_only),
                "{path} shows {admin_only} to a guest"
            );
        }
    }
    let (_, _, html) = page(addr, &gus, "/console/project?name=team");
    for tab in [
        "tab=members",
        "tab=robots",
        "tab=logs",
        "tab=retention",
        "tab=webhooks",
        "Set quota",
        "class=\"settings\"",
    ] {
        assert!(!html.contains(tab), "a guest sees {tab}");
    }
    let (_, _, html) = page(addr, &gus, "/console/repository?name=team/app");
    assert!(
        !html.contains("Delete tag"),
        "a guest may delete tags: {html}"
    );
    for path in [
        "/console/admin/users",
        "/console/admin/gc",
        "/console/admin/metrics",
        "/console/audit",
        "/console/project?name=team&tab=robots",
        "/console/project?name=team&tab=retention",
        "/console/project?name=team&tab=webhooks",
    ] {
        let (st, _, _) = page(addr, &gus, path);
        assert_eq!(st, 404, "{path} for a guest");
    }

    // Every page, and an error page, has a CSP without unsafe-inline and
    // no inline script or style for it to allow.
    let root = sign_in(addr, "admin", ADMIN_PW);
    // The admin's session reads no private repository through /v2: the
    // catalog is the anonymous one, and a private repository's tags 401.
    let (st, _, b) = http(addr, "GET", "/v2/_catalog", &[("Cookie", &root)], b"");
    let listed = String::from_utf8_lossy(&b);
    assert!(st == 401 || !listed.contains("secret/app"), "{st} {listed}");
    for path in ["/v2/secret/app/tags/list", "/v2/team/app/manifests/v1"] {
        let (st, _, _) = http(addr, "GET", path, &[("Cookie", &root)], b"");
        assert_eq!(st, 401, "GET {path} with the admin's session cookie");
    }
    let pages = [
        "/console/login".to_owned(),
        "/console/projects".to_owned(),
        "/console/project?name=team".to_owned(),
        "/console/project?name=team&tab=charts".to_owned(),
        "/console/project?name=team&tab=members".to_owned(),
        "/console/project?name=team&tab=robots".to_owned(),
        "/console/project?name=team&tab=logs".to_owned(),
        "/console/project?name=team&tab=retention".to_owned(),
        "/console/project?name=team&tab=webhooks".to_owned(),
        "/console/repository?name=team/app".to_owned(),
        format!("/console/artifact?name=team/app&digest={digest}"),
        "/console/audit".to_owned(),
        "/console/admin/users".to_owned(),
        "/console/admin/gc".to_owned(),
        "/console/admin/metrics".to_owned(),
        "/console/no-such-page".to_owned(),
    ];
    for path in &pages {
        let cookie = if path == "/console/login" {
            ""
        } else {
            root.as_str()
        };
        let (st, h, html) = page(addr, cookie, path);
        let want = if path.contains("no-such") { 404 } else { 200 };
        assert_eq!(st, want, "{path}: {html}");
        let csp = header(&h, "content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP"));
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(
            header(&h, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap_or(0)];
            assert!(tag.contains(" src="), "{path}: inline script {tag}");
        }
        assert!(
            !html.contains(" style=\""),
            "{path}: an inline style the CSP blocks"
        );
        assert!(
            !html.contains("<style"),
            "{path}: an inline style sheet the CSP blocks"
        );
    }

    // Values from users, shown escaped: a failed sign-in's user name in
    // the audit log, a search, a page path, a user's name and realname.
    let (st, _, _) = login_post(addr, script, "whatever", "", &[]);
    assert_eq!(st, 401);
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";
    let probes = [
        "/console/audit".to_owned(),
        format!("/console/projects?q={}", encode(script)),
        format!("/console/{}", encode(script)),
        format!("/console/project?name={}", encode(script)),
        format!("/console/repository?name=team/{}", encode(script)),
        "/console/admin/users".to_owned(),
    ];
    for path in &probes {
        let (_, _, html) = page(addr, &root, path);
        assert!(
            !html.contains(script),
            "{path} shows {script} unescaped:\n{html}"
        );
    }
    let (_, _, html) = page(addr, &root, "/console/audit");
    assert!(
        html.contains(escaped),
        "the failed sign-in is not in the audit log:\n{html}"
    );
    let (_, _, html) = page(
        addr,
        &root,
        &format!("/console/projects?q={}", encode(script)),
    );
    assert!(
        html.contains("&lt;script&gt;"),
        "the search is not shown back:\n{html}"
    );
}

/// Behind a proxy that serves the console at `BERTH_EXTERNAL_URL`'s path
/// and strips it: every URL a page or a redirect gives the browser starts
/// with that path, and the script is told it for its API calls; the
/// registry API stays at the root.
#[test]
fn the_console_under_the_external_urls_path() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(
        &work.path().join("data"),
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
            ("BERTH_EXTERNAL_URL", "https://tools.example/registry/"),
        ],
    );
    let addr = server.addr;
    // Redirects start with the path; the external URL being authoritative,
    // they are made absolute on it as every other `Location` is.
    let (st, h, _) = http(addr, "GET", "/", &[], b"");
    assert_eq!(st, 303);
    assert_eq!(
        header(&h, "location"),
        Some("https://tools.example/registry/console/projects")
    );
    let (st, h, _) = login_post(addr, "admin", ADMIN_PW, "/console/admin/gc", &[]);
    assert_eq!(st, 303);
    assert_eq!(
        header(&h, "location"),
        Some("https://tools.example/registry/console/admin/gc")
    );
    let cookie = set_cookie_value(&h).expect("a session cookie");
    assert!(
        h.iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.contains("; Secure")),
        "https external URL: a Secure cookie"
    );
    let cookie = format!("berth_session={cookie}");
    let (st, _, html) = page(addr, &cookie, "/console/projects");
    assert_eq!(st, 200, "{html}");
    assert!(
        html.contains("name=\"berth-base\" content=\"/registry\""),
        "{html}"
    );
    for attr in ["href=\"/", "action=\"/", "src=\"/"] {
        for (i, _) in html.match_indices(attr) {
            let url = &html[i + attr.len() - 1..];
            assert!(
                url.starts_with("/registry/"),
                "{}",
                &url[..url.len().min(60)]
            );
        }
    }
    assert!(
        html.contains("href=\"/registry/console/project?name=library\""),
        "{html}"
    );
    // A robot's secret signs in to the registry, not the console.
    let admin = basic("admin", ADMIN_PW);
    let robot = json!({"name": "ci", "level": "project", "duration": -1,
        "permissions": [{"kind": "project", "namespace": "library",
                         "access": [{"resource": "repository", "action": "pull"}]}]});
    let (st, _, made) = api_json(addr, &admin, "POST", "/api/v2.0/robots", &robot);
    assert_eq!(st, 201, "{made}");
    let (name, secret) = (
        made["name"].as_str().expect("robot name"),
        made["secret"].as_str().expect("robot secret"),
    );
    let (st, h, _) = login_post(addr, name, secret, "", &[]);
    assert_eq!(st, 403);
    assert!(set_cookie_value(&h).is_none(), "no session for a robot");
    // The proxy strips the path: berth itself answers at the root.
    let (st, _, _) = http(
        addr,
        "GET",
        "/registry/console/projects",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_ne!(st, 200, "nothing is served under the path itself");
}
