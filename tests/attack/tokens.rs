//! Token scope, project isolation and user enumeration (security review
//! findings 2, 9, 10 and 11; `docs/security.md`, "A bearer token grants
//! exactly its access claim" and "Users cannot be enumerated").
//!
//! One registry per test, with auth on and this cast, made through the
//! admin API as an operator would:
//!
//! ```text
//! admin     system administrator
//! dev       developer in `team` (private); pushed team/app:v1 and chart app-1.0.0
//! guest     guest in `team`
//! mallory   no membership anywhere (but, like anyone, may create projects)
//! ```
//!
//! Every attack is made twice where it can be: with Basic credentials and
//! with a token from berth's own token service. After each table the victim's
//! view is checked again: nothing stored may have changed.

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_testkit::server::{http, TestServer};
use serde_json::{json, Value};

use super::{chart_tgz, Resp};

const ADMIN_PW: &str = "admin-password-1";
const SERVICE: &str = "berth-registry";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Credentials of a request.
#[derive(Clone)]
pub(super) enum Cred {
    None,
    Basic(String),
    Bearer(String),
}

pub(super) fn basic(user: &str, password: &str) -> Cred {
    Cred::Basic(STANDARD.encode(format!("{user}:{password}")))
}

pub(super) fn pw(user: &str) -> Cred {
    if user == "admin" {
        basic("admin", ADMIN_PW)
    } else {
        basic(user, &format!("{user}-password"))
    }
}

pub(super) struct Registry {
    server: TestServer,
    _dir: tempfile::TempDir,
    /// team/app:v1's layer and manifest digests.
    layer: String,
    manifest: String,
}

impl Registry {
    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub(super) fn send(&self, method: &str, path: &str, cred: &Cred, body: &[u8]) -> Resp {
        self.send_with(method, path, cred, &[], body)
    }

    fn send_with(
        &self,
        method: &str,
        path: &str,
        cred: &Cred,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let auth = match cred {
            Cred::None => None,
            Cred::Basic(b) => Some(format!("Basic {b}")),
            Cred::Bearer(t) => Some(format!("Bearer {t}")),
        };
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let (status, headers, body) = http(self.addr(), method, path, &headers, body);
        Resp {
            what: format!("{method} {path}"),
            status,
            headers,
            body,
        }
    }

    /// A token from berth's token service for `scopes`, asked with `cred`.
    pub(super) fn token(&self, cred: &Cred, scopes: &[&str]) -> String {
        let mut q = format!("/service/token?service={SERVICE}");
        for s in scopes {
            q.push_str(&format!("&scope={s}"));
        }
        let r = self.send("GET", &q, cred, b"");
        r.expect(200);
        r.json()["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {}", r.text()))
            .to_owned()
    }

    /// Pushes a one-layer image as `repo:tag`; returns (layer, manifest).
    pub(super) fn push_image(
        &self,
        cred: &Cred,
        repo: &str,
        tag: &str,
        seed: &str,
    ) -> (String, String) {
        let layer = berth_testkit::content(seed, 2048);
        let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
        let (ld, cd) = (
            self.push_blob(cred, repo, &layer),
            self.push_blob(cred, repo, &config),
        );
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": ld, "size": layer.len()}],
        }))
        .unwrap();
        self.send_with(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            cred,
            &[("Content-Type", OCI_MANIFEST)],
            &manifest,
        )
        .expect(201);
        (ld, berth_testkit::sha256(&manifest).to_string())
    }

    fn push_blob(&self, cred: &Cred, repo: &str, data: &[u8]) -> String {
        let digest = berth_testkit::sha256(data).to_string();
        let r = self.send("POST", &format!("/v2/{repo}/blobs/uploads/"), cred, b"");
        r.expect(202);
        let loc = r.header("location").expect("upload Location").to_owned();
        let sep = if loc.contains('?') { '&' } else { '?' };
        self.send("PUT", &format!("{loc}{sep}digest={digest}"), cred, data)
            .expect(201);
        digest
    }

    /// Starts an upload session in `repo` as `cred`; returns its path.
    fn start_session(&self, cred: &Cred, repo: &str) -> String {
        let r = self.send("POST", &format!("/v2/{repo}/blobs/uploads/"), cred, b"");
        r.expect(202);
        let loc = r.header("location").expect("upload Location").to_owned();
        loc.split('?').next().unwrap_or(&loc).to_owned()
    }

    /// What the victims own, as they see it: compared before and after
    /// each table of attacks.
    fn victim_view(&self) -> Value {
        let admin = pw("admin");
        let dev = pw("dev");
        let tags = self.send("GET", "/v2/team/app/tags/list", &dev, b"");
        tags.expect(200);
        let manifest = self.send("GET", "/v2/team/app/manifests/v1", &dev, b"");
        manifest.expect(200);
        let charts = self.send("GET", "/api/chartrepo/team/charts", &dev, b"");
        charts.expect(200);
        let project = self.send("GET", "/api/v2.0/projects/team", &admin, b"");
        project.expect(200);
        let members = self.send("GET", "/api/v2.0/projects/team/members", &admin, b"");
        members.expect(200);
        let users = self.send("GET", "/api/v2.0/users", &admin, b"");
        users.expect(200);
        let robots = self.send("GET", "/api/v2.0/robots", &admin, b"");
        robots.expect(200);
        let gc = self.send("GET", "/api/v2.0/system/gc", &admin, b"");
        gc.expect(200);
        let names = |v: Value, key: &str| -> Vec<Value> {
            v.as_array()
                .map(|a| a.iter().map(|x| x[key].clone()).collect())
                .unwrap_or_default()
        };
        json!({
            "tags": tags.json()["tags"],
            "manifest": berth_testkit::sha256(&manifest.body).to_string(),
            "charts": charts.json(),
            "public": project.json()["metadata"]["public"],
            "members": members.json().as_array().map(|m| m.iter()
                .map(|x| json!([x["entity_name"], x["role_id"]])).collect::<Vec<_>>()),
            "users": names(users.json(), "username"),
            "robots": names(robots.json(), "name"),
            "gc_runs": gc.json().as_array().map_or(0, Vec::len),
        })
    }
}

/// A registry with auth on and the cast of the module docs.
pub(super) fn registry() -> Registry {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
            ("RUST_LOG", "info"),
        ],
    );
    let mut r = Registry {
        server,
        _dir: dir,
        layer: String::new(),
        manifest: String::new(),
    };
    let admin = pw("admin");
    for user in ["dev", "guest", "mallory"] {
        let body = json!({"username": user, "password": format!("{user}-password")});
        r.send(
            "POST",
            "/api/v2.0/users",
            &admin,
            body.to_string().as_bytes(),
        )
        .expect(201);
    }
    r.send(
        "POST",
        "/api/v2.0/projects",
        &admin,
        br#"{"project_name":"team","metadata":{"public":"false"}}"#,
    )
    .expect(201);
    for (user, role) in [("dev", 2), ("guest", 3)] {
        let body = json!({"role_id": role, "member_user": {"username": user}});
        r.send(
            "POST",
            "/api/v2.0/projects/team/members",
            &admin,
            body.to_string().as_bytes(),
        )
        .expect(201);
    }
    let (layer, manifest) = r.push_image(&pw("dev"), "team/app", "v1", "team-secret");
    r.layer = layer;
    r.manifest = manifest;
    r.send(
        "POST",
        "/api/chartrepo/team/charts",
        &pw("dev"),
        &chart_tgz("app", "1.0.0"),
    )
    .expect(201);
    r
}

/// Finding 2, first reproduction: an administrator's token scoped to
/// `repository:library/nothing:pull` created a system administrator.
#[test]
fn tokens_an_admin_token_for_one_repository_cannot_create_a_user() {
    let r = registry();
    let before = r.victim_view();
    let t = Cred::Bearer(r.token(&pw("admin"), &["repository:library/nothing:pull"]));
    let eve = br#"{"username":"eve","password":"eve-password","sysadmin_flag":true}"#;
    let res = r.send("POST", "/api/v2.0/users", &t, eve);
    res.expect(401);
    assert_eq!(res.challenge(), "Basic realm=\"berth\"", "{}", res.text());
    assert!(res.text().contains("/v2/ only"), "{}", res.text());
    r.send("GET", "/v2/", &basic("eve", "eve-password"), b"")
        .expect(401);
    assert_eq!(r.victim_view(), before);
}

/// Finding 2, second reproduction: a developer's token for another
/// repository uploaded a chart to a private project.
#[test]
fn tokens_a_developer_token_for_another_repository_cannot_upload_a_chart() {
    let r = registry();
    let before = r.victim_view();
    let dev = pw("dev");
    for scopes in [
        &["repository:library/other:pull"][..],
        &["repository:team/app:pull,push"][..],
    ] {
        let t = Cred::Bearer(r.token(&dev, scopes));
        for path in ["/api/chartrepo/team/charts", "/api/team/charts"] {
            let res = r.send("POST", path, &t, &chart_tgz("evil", "6.6.6"));
            res.expect(401);
            assert_eq!(res.challenge(), "Basic realm=\"berth\"");
        }
    }
    assert_eq!(r.victim_view(), before);
    let index = r.send("GET", "/chartrepo/team/index.yaml", &dev, b"");
    assert!(
        !index.expect(200).text().contains("evil"),
        "{}",
        index.text()
    );
}

/// A token grants exactly its claim, on every route family. The token is
/// the administrator's — whose account may do anything — scoped to pulling
/// one repository: any route that consulted the account would let it in.
#[test]
fn tokens_a_token_grants_exactly_its_scope_on_every_route_family() {
    let r = registry();
    let (layer, manifest) = (r.layer.clone(), r.manifest.clone());
    let t = Cred::Bearer(r.token(&pw("admin"), &["repository:team/app:pull"]));

    // What the claim grants.
    for (method, path) in [
        ("GET", "/v2/".to_owned()),
        ("GET", "/v2/team/app/manifests/v1".to_owned()),
        ("HEAD", format!("/v2/team/app/manifests/{manifest}")),
        ("GET", format!("/v2/team/app/blobs/{layer}")),
        ("HEAD", format!("/v2/team/app/blobs/{layer}")),
        ("GET", "/v2/team/app/tags/list".to_owned()),
        ("GET", format!("/v2/team/app/referrers/{manifest}")),
    ] {
        r.send(method, &path, &t, b"").expect(200);
    }

    // Everything else: the registry's routes answer insufficient_scope
    // with the scope to ask for; the others refuse the token outright.
    let before = r.victim_view();
    let session = r.start_session(&pw("admin"), "team/app");
    let tgz = chart_tgz("evil", "6.6.6");
    let user = br#"{"username":"eve","password":"eve-password","sysadmin_flag":true}"#.to_vec();
    let member = br#"{"role_id":1,"member_user":{"username":"mallory"}}"#.to_vec();
    let robot = br#"{"name":"x","permissions":[{"kind":"project","namespace":"team","access":[{"action":"pull"},{"action":"push"}]}]}"#.to_vec();
    let gc = br#"{"schedule":{"type":"Manual"}}"#.to_vec();
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        // OCI: other actions on the same repository, other repositories.
        (
            "POST",
            "/v2/team/app/blobs/uploads/".into(),
            vec![],
            "repository:team/app:pull,push",
        ),
        (
            "GET",
            session.clone(),
            vec![],
            "repository:team/app:pull,push",
        ),
        (
            "PATCH",
            session.clone(),
            b"x".to_vec(),
            "repository:team/app:pull,push",
        ),
        ("DELETE", session, vec![], "repository:team/app:pull,push"),
        (
            "PUT",
            "/v2/team/app/manifests/v2".into(),
            vec![],
            "repository:team/app:pull,push",
        ),
        (
            "DELETE",
            format!("/v2/team/app/manifests/{manifest}"),
            vec![],
            "repository:team/app:delete",
        ),
        (
            "DELETE",
            format!("/v2/team/app/blobs/{layer}"),
            vec![],
            "repository:team/app:delete",
        ),
        (
            "GET",
            "/v2/team/other/tags/list".into(),
            vec![],
            "repository:team/other:pull",
        ),
        (
            "GET",
            "/v2/team/app2/manifests/v1".into(),
            vec![],
            "repository:team/app2:pull",
        ),
        (
            "POST",
            "/v2/library/x/blobs/uploads/".into(),
            vec![],
            "repository:library/x:pull,push",
        ),
        ("GET", "/v2/_catalog".into(), vec![], "registry:catalog:*"),
        // Charts: Harbor's and ChartMuseum's paths.
        ("GET", "/chartrepo/index.yaml".into(), vec![], ""),
        ("GET", "/chartrepo/team/index.yaml".into(), vec![], ""),
        (
            "GET",
            "/chartrepo/team/charts/app-1.0.0.tgz".into(),
            vec![],
            "",
        ),
        ("GET", "/api/chartrepo/team/charts".into(), vec![], ""),
        (
            "GET",
            "/api/chartrepo/team/charts/app/1.0.0".into(),
            vec![],
            "",
        ),
        ("POST", "/api/chartrepo/team/charts".into(), tgz.clone(), ""),
        (
            "DELETE",
            "/api/chartrepo/team/charts/app/1.0.0".into(),
            vec![],
            "",
        ),
        (
            "DELETE",
            "/api/chartrepo/team/charts/app".into(),
            vec![],
            "",
        ),
        ("GET", "/team/index.yaml".into(), vec![], ""),
        ("POST", "/api/team/charts".into(), tgz, ""),
        // The admin API.
        ("GET", "/api/v2.0/projects".into(), vec![], ""),
        (
            "POST",
            "/api/v2.0/projects".into(),
            br#"{"project_name":"tok"}"#.to_vec(),
            "",
        ),
        ("GET", "/api/v2.0/projects/team".into(), vec![], ""),
        (
            "PUT",
            "/api/v2.0/projects/team".into(),
            br#"{"metadata":{"public":"true"}}"#.to_vec(),
            "",
        ),
        ("GET", "/api/v2.0/projects/team/members".into(), vec![], ""),
        ("POST", "/api/v2.0/projects/team/members".into(), member, ""),
        ("GET", "/api/v2.0/users".into(), vec![], ""),
        ("POST", "/api/v2.0/users".into(), user, ""),
        ("GET", "/api/v2.0/users/current".into(), vec![], ""),
        ("GET", "/api/v2.0/robots".into(), vec![], ""),
        ("POST", "/api/v2.0/robots".into(), robot, ""),
        // The GC API.
        ("POST", "/api/v2.0/system/gc/schedule".into(), gc, ""),
        ("GET", "/api/v2.0/system/gc".into(), vec![], ""),
        ("GET", "/api/v2.0/system/gc/schedule".into(), vec![], ""),
    ];
    for (method, path, body, scope) in &cases {
        let res = r.send(method, path, &t, body);
        res.expect(401);
        if scope.is_empty() {
            assert_eq!(res.challenge(), "Basic realm=\"berth\"", "{method} {path}");
        } else {
            let c = res.challenge();
            assert!(c.starts_with("Bearer realm="), "{method} {path}: {c}");
            assert!(
                c.contains("error=\"insufficient_scope\""),
                "{method} {path}: {c}"
            );
            assert!(
                c.contains(&format!("scope=\"{scope}\"")),
                "{method} {path}: {c}"
            );
        }
    }
    assert_eq!(r.victim_view(), before);
    assert_eq!(
        r.send("GET", "/api/v2.0/projects/tok", &pw("admin"), b"")
            .status,
        404
    );

    // The catalog with its claim lists what the token's subject may read.
    let c = Cred::Bearer(r.token(&pw("admin"), &["registry:catalog:*"]));
    let list = r.send("GET", "/v2/_catalog", &c, b"");
    assert_eq!(list.expect(200).json()["repositories"], json!(["team/app"]));
    // ... and nothing else.
    r.send("GET", "/v2/team/app/tags/list", &c, b"").expect(401);
    r.send("GET", "/api/v2.0/projects", &c, b"").expect(401);
}

/// A non-member cannot read or write another project's private content
/// through any route family, with Basic credentials (403, or 404 where
/// the admin API hides the project) or with tokens (401: the token service
/// grants nothing there).
#[test]
fn tokens_a_non_member_cannot_reach_another_projects_private_content() {
    let r = registry();
    let (layer, manifest) = (r.layer.clone(), r.manifest.clone());
    let mallory = pw("mallory");
    // Her own project, to mount into and push to.
    r.send(
        "POST",
        "/api/v2.0/projects",
        &mallory,
        br#"{"project_name":"mal","metadata":{"public":"false"}}"#,
    )
    .expect(201);
    let token = Cred::Bearer(r.token(
        &mallory,
        &[
            "repository:team/app:pull,push,delete,*",
            "repository:mal/loot:pull,push",
            "registry:catalog:*",
        ],
    ));
    let before = r.victim_view();
    let session = r.start_session(&pw("dev"), "team/app");
    let tgz = chart_tgz("evil", "6.6.6");
    let robot = br#"{"name":"x","permissions":[{"kind":"project","namespace":"team","access":[{"action":"pull"}]}]}"#.to_vec();
    let member = br#"{"role_id":1,"member_user":{"username":"mallory"}}"#.to_vec();
    // (method, path, body, status with Basic, with her token)
    let cases: Vec<(&str, String, Vec<u8>, u16, u16)> = vec![
        ("GET", "/v2/team/app/manifests/v1".into(), vec![], 403, 401),
        (
            "HEAD",
            format!("/v2/team/app/manifests/{manifest}"),
            vec![],
            403,
            401,
        ),
        (
            "GET",
            format!("/v2/team/app/blobs/{layer}"),
            vec![],
            403,
            401,
        ),
        (
            "HEAD",
            format!("/v2/team/app/blobs/{layer}"),
            vec![],
            403,
            401,
        ),
        ("GET", "/v2/team/app/tags/list".into(), vec![], 403, 401),
        (
            "GET",
            format!("/v2/team/app/referrers/{manifest}"),
            vec![],
            403,
            401,
        ),
        (
            "POST",
            "/v2/team/app/blobs/uploads/".into(),
            vec![],
            403,
            401,
        ),
        ("GET", session.clone(), vec![], 403, 401),
        ("PATCH", session.clone(), b"x".to_vec(), 403, 401),
        ("PUT", format!("{session}?digest={layer}"), vec![], 403, 401),
        ("DELETE", session, vec![], 403, 401),
        ("PUT", "/v2/team/app/manifests/v1".into(), vec![], 403, 401),
        (
            "DELETE",
            format!("/v2/team/app/manifests/{manifest}"),
            vec![],
            403,
            401,
        ),
        (
            "DELETE",
            format!("/v2/team/app/blobs/{layer}"),
            vec![],
            403,
            401,
        ),
        ("GET", "/chartrepo/team/index.yaml".into(), vec![], 403, 401),
        (
            "GET",
            "/chartrepo/team/charts/app-1.0.0.tgz".into(),
            vec![],
            403,
            401,
        ),
        ("GET", "/api/chartrepo/team/charts".into(), vec![], 403, 401),
        (
            "GET",
            "/api/chartrepo/team/charts/app/1.0.0".into(),
            vec![],
            403,
            401,
        ),
        (
            "POST",
            "/api/chartrepo/team/charts".into(),
            tgz.clone(),
            403,
            401,
        ),
        (
            "DELETE",
            "/api/chartrepo/team/charts/app/1.0.0".into(),
            vec![],
            403,
            401,
        ),
        ("GET", "/team/index.yaml".into(), vec![], 403, 401),
        ("POST", "/api/team/charts".into(), tgz, 403, 401),
        ("GET", "/api/v2.0/projects/team".into(), vec![], 404, 401),
        (
            "PUT",
            "/api/v2.0/projects/team".into(),
            br#"{"metadata":{"public":"true"}}"#.to_vec(),
            403,
            401,
        ),
        (
            "GET",
            "/api/v2.0/projects/team/members".into(),
            vec![],
            404,
            401,
        ),
        (
            "POST",
            "/api/v2.0/projects/team/members".into(),
            member,
            403,
            401,
        ),
        ("POST", "/api/v2.0/robots".into(), robot, 403, 401),
    ];
    for (method, path, body, with_basic, with_token) in &cases {
        r.send(method, path, &mallory, body).expect(*with_basic);
        r.send(method, path, &token, body).expect(*with_token);
    }

    // Listings leave the project out.
    for cred in [&mallory, &token] {
        let cat = r.send("GET", "/v2/_catalog", cred, b"");
        let repos = cat.expect(200).json()["repositories"].clone();
        assert!(!repos.to_string().contains("team/"), "{repos}");
    }
    let all = r.send("GET", "/chartrepo/index.yaml", &mallory, b"");
    assert!(
        !all.expect(200).text().contains("team/app"),
        "{}",
        all.text()
    );
    let projects = r.send("GET", "/api/v2.0/projects", &mallory, b"");
    assert!(!projects.expect(200).text().contains("\"team\""));

    // A mount from the private repository is a plain upload session, and
    // the blob never appears in hers.
    for cred in [&mallory, &token] {
        let res = r.send(
            "POST",
            &format!("/v2/mal/loot/blobs/uploads/?mount={layer}&from=team/app"),
            cred,
            b"",
        );
        res.expect(202);
        r.send("HEAD", &format!("/v2/mal/loot/blobs/{layer}"), cred, b"")
            .expect(404);
    }
    assert_eq!(r.victim_view(), before);
}

/// Finding 10: `GET /v2/` accepts any valid token berth issued — an
/// anonymous one (`sub:""`, `access:[]`) and a repository-scoped one — so
/// a client that pings it before pulling anonymously gets through.
#[test]
fn tokens_any_valid_token_passes_the_version_check() {
    let r = registry();
    r.push_image(&pw("admin"), "library/hello", "v1", "public");
    let anonymous = Cred::Bearer(r.token(&Cred::None, &[]));
    let anonymous_scoped = Cred::Bearer(r.token(&Cred::None, &["repository:library/hello:pull"]));
    let scoped = Cred::Bearer(r.token(&pw("dev"), &["repository:team/app:pull"]));
    let unrelated = Cred::Bearer(r.token(&pw("guest"), &["repository:nosuch/x:push"]));
    for (what, t) in [
        ("anonymous, no access", &anonymous),
        ("anonymous, public pull", &anonymous_scoped),
        ("repository-scoped", &scoped),
        ("granted nothing", &unrelated),
    ] {
        let res = r.send("GET", "/v2/", t, b"");
        assert_eq!(res.status, 200, "{what}: {}", res.text());
    }
    // The anonymous client then pulls.
    r.send(
        "GET",
        "/v2/library/hello/manifests/v1",
        &anonymous_scoped,
        b"",
    )
    .expect(200);
    // Still: no credentials is the challenge docker login needs, and a
    // token that does not verify is refused.
    let res = r.send("GET", "/v2/", &Cred::None, b"");
    res.expect(401);
    assert!(
        res.challenge().starts_with("Bearer realm="),
        "{}",
        res.challenge()
    );
    let res = r.send("GET", "/v2/", &Cred::Bearer("not.a.token".into()), b"");
    res.expect(401);
    assert!(res.challenge().contains("error=\"invalid_token\""));
}

/// Finding 11: a token the token service could not fill says why, in the
/// challenge's `error_description`, in the error body, and in the token
/// service's log — without telling a caller whether a private project it
/// cannot see exists.
#[test]
fn tokens_denials_on_the_token_path_say_why() {
    let r = registry();
    let push = |cred: &Cred, repo: &str| {
        let t = Cred::Bearer(r.token(cred, &[&format!("repository:{repo}:pull,push")]));
        let res = r.send("POST", &format!("/v2/{repo}/blobs/uploads/"), &t, b"");
        res.expect(401);
        assert!(res.challenge().contains("error=\"insufficient_scope\""));
        let description = res
            .error_description()
            .unwrap_or_else(|| panic!("no error_description: {}", res.challenge()))
            .to_owned();
        let detail = res.json()["errors"][0]["detail"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert_eq!(detail, description, "the body says it too");
        description
    };

    // The admin pushing to a project that does not exist: Basic and token
    // say the same.
    let basic = r.send("POST", "/v2/otherproj/x/blobs/uploads/", &pw("admin"), b"");
    basic.expect(403);
    assert!(
        basic.text().contains("project otherproj does not exist"),
        "{}",
        basic.text()
    );
    assert_eq!(
        push(&pw("admin"), "otherproj/x"),
        "project otherproj does not exist"
    );

    // A guest lacks push, in a project she sees.
    assert_eq!(
        push(&pw("guest"), "team/app"),
        "guest may not push in project team"
    );

    // A non-member is told the same about a private project and a missing one.
    let private = push(&pw("mallory"), "team/app");
    let missing = push(&pw("mallory"), "nosuch/app");
    assert_eq!(
        private,
        "project team does not exist or mallory may not see it"
    );
    assert_eq!(missing.replace("nosuch", "team"), private);

    // A token narrower than its account: ask for the scope.
    let t = Cred::Bearer(r.token(&pw("dev"), &["repository:team/app:pull"]));
    let res = r.send("POST", "/v2/team/app/blobs/uploads/", &t, b"");
    res.expect(401);
    assert_eq!(
        res.error_description(),
        Some("the token does not grant repository:team/app:pull,push; request a token for it")
    );

    // The token service logged each refusal with its reason.
    let reasons = [
        "project otherproj does not exist",
        "guest may not push in project team",
        "project nosuch does not exist or mallory may not see it",
    ];
    let logged = |log: &str, reason: &str| {
        log.lines()
            .any(|l| l.contains("scope not granted in full") && l.contains(reason))
    };
    let log = r
        .server
        .stderr_when(|log| reasons.iter().all(|reason| logged(log, reason)));
    for reason in reasons {
        assert!(logged(&log, reason), "no log line with {reason:?}:\n{log}");
    }
}

/// Finding 9: whether a user exists is not told to callers who cannot list
/// users — not by the member API (anyone may create a project and so
/// become a project admin), not by member lists of public projects, not by
/// logins.
#[test]
fn tokens_user_names_cannot_be_enumerated() {
    let r = registry();
    let mallory = pw("mallory");
    r.send(
        "POST",
        "/api/v2.0/projects",
        &mallory,
        br#"{"project_name":"mal","metadata":{"public":"false"}}"#,
    )
    .expect(201);
    let add = |cred: &Cred, project: &str, user: &str| {
        let body = json!({"role_id": 3, "member_user": {"username": user}});
        r.send(
            "POST",
            &format!("/api/v2.0/projects/{project}/members"),
            cred,
            body.to_string().as_bytes(),
        )
    };
    let existing = add(&mallory, "mal", "dev");
    let unknown = add(&mallory, "mal", "nosuchuser");
    assert_eq!(
        (existing.status, existing.text()),
        (unknown.status, unknown.text()),
        "an existing and an unknown user must look alike"
    );
    assert_eq!(existing.status, 201);
    // Administrators, who may list users anyway, are told.
    let res = add(&pw("admin"), "team", "nosuchuser");
    res.expect(400);
    assert!(
        res.text().contains("user nosuchuser does not exist"),
        "{}",
        res.text()
    );
    // The recorded name grants nothing to anyone meanwhile.
    r.send(
        "GET",
        "/v2/",
        &basic("nosuchuser", "nosuchuser-password"),
        b"",
    )
    .expect(401);

    // A public project's member list is for its members.
    r.send(
        "POST",
        "/api/v2.0/projects",
        &pw("admin"),
        br#"{"project_name":"open","metadata":{"public":"true"}}"#,
    )
    .expect(201);
    add(&pw("admin"), "open", "dev").expect(201);
    let res = r.send("GET", "/api/v2.0/projects/open/members", &mallory, b"");
    res.expect(403);
    assert!(!res.text().contains("dev"), "{}", res.text());
    r.send("GET", "/api/v2.0/projects/open/members", &pw("dev"), b"")
        .expect(200);

    // Logins: an unknown user and a wrong password answer alike.
    let token_service = format!("/service/token?service={SERVICE}");
    for path in ["/v2/", "/api/v2.0/users/current", token_service.as_str()] {
        let unknown = r.send("GET", path, &basic("nosuchuser", "some-password"), b"");
        let wrong = r.send("GET", path, &basic("dev", "some-password"), b"");
        assert_eq!(unknown.status, 401, "{path}");
        assert_eq!(
            (
                unknown.status,
                unknown.text(),
                unknown.challenge().to_owned()
            ),
            (wrong.status, wrong.text(), wrong.challenge().to_owned()),
            "{path}"
        );
    }
}
