//! Accounts, tokens and the external-URL rule, end to end against a real
//! in-process server: every check here must fail closed.
//!
//! Accounts are made with the engine before the server starts (the server
//! then holds the data directory), which also hands the tests the server's
//! token key, so they can forge tokens that differ from valid ones in one
//! claim only.

use std::net::SocketAddr;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use berth_engine::token::{Access, Claims, TokenKey};
use berth_engine::{Action, Actions, Algorithm, Digest, Engine, EngineConfig, Role};
use berth_server::config::Secret;
use berth_server::proxy::Cidr;
use berth_server::{Config, ServeError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ADMIN_PW: &str = "admin-password-1";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ISS: &str = "berth-token-service";
const SERVICE: &str = "berth-registry";

struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(data: &Path, f: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config::new(data);
    config.auth.enabled = true;
    config.auth.admin_password = Some(Secret(ADMIN_PW.into()));
    f(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(berth_server::serve(config, listener, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        _stop: tx,
        task,
    }
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
    #[track_caller]
    fn expect(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code().as_str()),
            (status, code),
            "body {}",
            String::from_utf8_lossy(&self.body)
        );
    }
}

/// Credentials for a request.
#[derive(Clone)]
enum Cred {
    None,
    Basic(String, String),
    Bearer(String),
}

fn basic(u: &str, p: &str) -> Cred {
    Cred::Basic(u.into(), p.into())
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cred: &Cred,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    match cred {
        Cred::None => {}
        Cred::Basic(u, p) => {
            b = b.header(
                "authorization",
                format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))),
            )
        }
        Cred::Bearer(t) => b = b.header("authorization", format!("Bearer {t}")),
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

fn sha256(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

/// Pushes a config, a layer and a manifest tagged `v1`; returns the layer
/// digest and the manifest digest.
async fn push_image(addr: SocketAddr, cred: &Cred, repo: &str, seed: &str) -> (Digest, Digest) {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let layer = format!("layer {seed}").into_bytes();
    for blob in [&config, &layer] {
        let d = sha256(blob);
        let r = send(
            addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            cred,
            &[],
            blob,
        )
        .await;
        assert_eq!(r.status, 201, "push blob to {repo}");
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(&layer).to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let r = send(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/v1"),
        cred,
        &[("content-type", OCI_MANIFEST)],
        &manifest,
    )
    .await;
    assert_eq!(r.status, 201, "push manifest to {repo}");
    (sha256(&layer), sha256(&manifest))
}

/// The world every security test runs in. Projects: `priv` (private) and
/// `pub` (public). Users: alice (developer of priv), gus (guest of priv),
/// mia (maintainer of priv), mallory (nothing; owns project `mal`).
/// Robot `robot$pub+ci` may pull and push in pub only.
struct World {
    _dir: tempfile::TempDir,
    key: TokenKey,
    robot_secret: String,
    server: Server,
    /// Each user's credential stamp, for tokens signed by the tests.
    stamps: std::collections::HashMap<String, String>,
}

impl World {
    /// `c` bound to its subject's credential, as the token service binds
    /// the tokens it issues.
    fn stamped(&self, mut c: Claims) -> Claims {
        c.crd = self.stamps.get(&c.sub).cloned().unwrap_or_default();
        c
    }
}

async fn world(f: impl FnOnce(&mut Config)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (key, robot_secret, stamps) = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            let e = Engine::open(EngineConfig::new(&data)).unwrap();
            e.ensure_admin(Some(ADMIN_PW)).unwrap();
            for u in ["alice", "gus", "mia", "mallory"] {
                e.create_user(u, &format!("{u}-password"), false, "", "")
                    .unwrap();
            }
            e.create_project("priv", false, None).unwrap();
            e.create_project("pub", true, None).unwrap();
            e.create_project("mal", false, Some("mallory")).unwrap();
            e.set_member("priv", "alice", Role::Developer).unwrap();
            e.set_member("priv", "gus", Role::Guest).unwrap();
            e.set_member("priv", "mia", Role::Maintainer).unwrap();
            let robot = e
                .create_robot(
                    "pub",
                    "ci",
                    Actions::of(&[Action::Pull, Action::Push]),
                    None,
                    "",
                )
                .unwrap();
            let stamps = ["alice", "gus", "mia", "mallory"]
                .iter()
                .map(|u| (u.to_string(), e.credential_stamp(u).unwrap().unwrap()))
                .collect();
            (e.token_signing_key().unwrap(), robot.secret, stamps)
        })
        .await
        .unwrap()
    };
    let server = start(&data, f).await;
    World {
        _dir: dir,
        key,
        robot_secret,
        server,
        stamps,
    }
}

fn pw(u: &str) -> Cred {
    basic(u, &format!("{u}-password"))
}

async fn token(addr: SocketAddr, cred: &Cred, scopes: &[&str]) -> (String, Value) {
    let mut q = format!("/service/token?service={SERVICE}");
    for s in scopes {
        q.push_str(&format!("&scope={s}"));
    }
    let r = send(addr, "GET", &q, cred, &[], b"").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    (v["token"].as_str().unwrap().to_owned(), v)
}

fn claims_now(sub: &str, repo: &str, actions: &[&str]) -> Claims {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Claims {
        iss: ISS.into(),
        sub: sub.into(),
        aud: SERVICE.into(),
        exp: now + 300,
        nbf: now,
        iat: now,
        jti: "t".into(),
        access: vec![Access {
            kind: "repository".into(),
            name: repo.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }],
        crd: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_challenges_and_the_token_flow() {
    let w = world(|_| {}).await;
    let a = w.server.addr;
    let admin = basic("admin", ADMIN_PW);
    push_image(a, &admin, "pub/app", "p").await;

    // /v2/ without credentials: the challenge docker login needs.
    let r = send(a, "GET", "/v2/", &Cred::None, &[], b"").await;
    r.expect(401, "UNAUTHORIZED");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"http://localhost/service/token\",service=\"berth-registry\"")
    );
    // Basic straight on /v2/, and a token from the token service.
    assert_eq!(
        send(a, "GET", "/v2/", &pw("alice"), &[], b"").await.status,
        200
    );
    send(
        a,
        "GET",
        "/v2/",
        &basic("alice", "wrong-password"),
        &[],
        b"",
    )
    .await
    .expect(401, "UNAUTHORIZED");
    let (t, v) = token(a, &pw("alice"), &["repository:priv/app:pull,push"]).await;
    assert_eq!(v["expires_in"], 300);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        send(a, "GET", "/v2/", &Cred::Bearer(t.clone()), &[], b"")
            .await
            .status,
        200
    );
    // The token grants what was asked and allowed, in its claims.
    let claims = w
        .key
        .verify(&t, ISS, SERVICE, claims_now("", "", &[]).iat)
        .unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.access[0].actions, ["pull", "push"]);
    let r = send(
        a,
        "POST",
        "/v2/priv/app/blobs/uploads/",
        &Cred::Bearer(t),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 202);

    // Anonymous pull of a public project, directly and with an anonymous token.
    assert_eq!(
        send(a, "GET", "/v2/pub/app/manifests/v1", &Cred::None, &[], b"")
            .await
            .status,
        200
    );
    let (anon, _) = token(a, &Cred::None, &["repository:pub/app:pull,push"]).await;
    let c = w.key.verify(&anon, ISS, SERVICE, claims.iat).unwrap();
    assert_eq!(c.sub, "");
    assert_eq!(c.access[0].actions, ["pull"], "anonymous never gets push");
    assert_eq!(
        send(
            a,
            "GET",
            "/v2/pub/app/tags/list",
            &Cred::Bearer(anon.clone()),
            &[],
            b""
        )
        .await
        .status,
        200
    );
    // Any valid token passes the version check, an anonymous one included
    // (clients ping /v2/ with it before pulling).
    assert_eq!(
        send(a, "GET", "/v2/", &Cred::Bearer(anon), &[], b"")
            .await
            .status,
        200
    );

    // Refresh tokens: GET offline_token, then the OAuth2 POST grant.
    let r = send(
        a,
        "GET",
        &format!(
            "/service/token?service={SERVICE}&offline_token=true&scope=repository:priv/app:pull"
        ),
        &pw("alice"),
        &[],
        b"",
    )
    .await;
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    // A refresh token is not an access token.
    send(a, "GET", "/v2/", &Cred::Bearer(refresh.clone()), &[], b"")
        .await
        .expect(401, "UNAUTHORIZED");
    let form = format!(
        "grant_type=refresh_token&service={SERVICE}&client_id=docker&refresh_token={refresh}&scope=repository%3Apriv%2Fapp%3Apull"
    );
    let r = send(
        a,
        "POST",
        "/service/token",
        &Cred::None,
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["scope"], "repository:priv/app:pull");
    let form = format!(
        "grant_type=password&service={SERVICE}&client_id=docker&username=alice&password=wrong-password"
    );
    let r = send(
        a,
        "POST",
        "/service/token",
        &Cred::None,
        &[],
        form.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 401);
    // A token for another service is refused.
    let r = send(
        a,
        "GET",
        "/service/token?service=other",
        &pw("alice"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_private_projects_are_invisible_to_non_members() {
    let w = world(|_| {}).await;
    let a = w.server.addr;
    let admin = basic("admin", ADMIN_PW);
    let (layer, manifest) = push_image(a, &admin, "priv/app", "secret").await;
    push_image(a, &admin, "pub/app", "open").await;
    let mallory = pw("mallory");

    for path in [
        "/v2/priv/app/manifests/v1".to_owned(),
        "/v2/priv/app/tags/list".to_owned(),
        format!("/v2/priv/app/referrers/{manifest}"),
        format!("/v2/priv/app/blobs/{layer}"),
    ] {
        // Anonymous: a challenge naming the pull scope.
        let r = send(a, "GET", &path, &Cred::None, &[], b"").await;
        r.expect(401, "UNAUTHORIZED");
        assert!(r
            .header("www-authenticate")
            .unwrap()
            .contains("scope=\"repository:priv/app:pull\""));
        // A signed-in non-member: denied, with Basic ...
        send(a, "GET", &path, &mallory, &[], b"")
            .await
            .expect(403, "DENIED");
        // ... and her token grants nothing there.
        let (t, v) = token(a, &mallory, &["repository:priv/app:pull"]).await;
        assert_eq!(v["token"].as_str().map(|t| !t.is_empty()), Some(true));
        let c = w
            .key
            .verify(&t, ISS, SERVICE, claims_now("", "", &[]).iat)
            .unwrap();
        assert!(c.access.is_empty(), "{c:?}");
        let r = send(a, "GET", &path, &Cred::Bearer(t), &[], b"").await;
        r.expect(401, "UNAUTHORIZED");
        assert!(r
            .header("www-authenticate")
            .unwrap()
            .contains("insufficient_scope"));
        // Members read.
        assert_eq!(
            send(a, "GET", &path, &pw("gus"), &[], b"").await.status,
            200,
            "{path}"
        );
    }

    // The catalog lists what the caller may read, nothing else.
    let cat = |c: Cred| async move {
        send(a, "GET", "/v2/_catalog", &c, &[], b"").await.json()["repositories"].clone()
    };
    assert_eq!(cat(Cred::None).await, json!(["pub/app"]));
    assert_eq!(cat(mallory.clone()).await, json!(["pub/app"]));
    assert_eq!(cat(pw("gus")).await, json!(["priv/app", "pub/app"]));
    assert_eq!(cat(admin.clone()).await, json!(["priv/app", "pub/app"]));
    let r = send(a, "GET", "/v2/_catalog?n=1", &Cred::None, &[], b"").await;
    assert_eq!(r.json()["repositories"], json!(["pub/app"]));
    assert_eq!(
        r.header("link"),
        None,
        "no next page for the only visible repo"
    );

    // Mounting from a repository she cannot read: a normal upload instead.
    for q in [
        format!("mount={layer}&from=priv/app"),
        format!("mount={layer}"),
    ] {
        let r = send(
            a,
            "POST",
            &format!("/v2/mal/loot/blobs/uploads/?{q}"),
            &mallory,
            &[],
            b"",
        )
        .await;
        assert_eq!(r.status, 202, "{q}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.header("docker-upload-uuid").is_some());
    }
    let r = send(
        a,
        "HEAD",
        &format!("/v2/mal/loot/blobs/{layer}"),
        &mallory,
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 404, "the blob must not leak into mal/loot");
    // A member mounting from what she reads: metadata only, 201.
    let r = send(
        a,
        "POST",
        &format!("/v2/priv/copy/blobs/uploads/?mount={layer}&from=priv/app"),
        &pw("alice"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 201);

    // The admin API hides the project too.
    let r = send(a, "GET", "/api/v2.0/projects/priv", &mallory, &[], b"").await;
    assert_eq!(r.status, 404);
    let names: Vec<Value> = send(a, "GET", "/api/v2.0/projects", &mallory, &[], b"")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert!(!names.contains(&json!("priv")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_forged_and_misused_tokens_are_refused() {
    let w = world(|_| {}).await;
    let a = w.server.addr;
    push_image(a, &basic("admin", ADMIN_PW), "priv/app", "x").await;
    let get = |t: String| async move {
        send(
            a,
            "GET",
            "/v2/priv/app/tags/list",
            &Cred::Bearer(t),
            &[],
            b"",
        )
        .await
    };
    // The control: a token made like the forgeries below, but valid.
    let good = w.stamped(claims_now("alice", "priv/app", &["pull"]));
    assert_eq!(get(w.key.sign(&good)).await.status, 200);

    // Token for repository A used on B (and on another action).
    let (t, _) = token(a, &pw("alice"), &["repository:priv/app:pull"]).await;
    let r = send(
        a,
        "GET",
        "/v2/priv/other/tags/list",
        &Cred::Bearer(t.clone()),
        &[],
        b"",
    )
    .await;
    r.expect(401, "UNAUTHORIZED");
    let r = send(
        a,
        "POST",
        "/v2/priv/app/blobs/uploads/",
        &Cred::Bearer(t),
        &[],
        b"",
    )
    .await;
    r.expect(401, "UNAUTHORIZED");

    let mut forgeries: Vec<(&str, String)> = Vec::new();
    forgeries.push(("another key", TokenKey::generate().sign(&good)));
    let mut c = good.clone();
    c.exp = c.iat - 1;
    c.nbf = c.iat - 600;
    forgeries.push(("expired", w.key.sign(&c)));
    let mut c = good.clone();
    c.nbf = c.iat + 3600;
    c.exp = c.iat + 7200;
    forgeries.push(("not yet valid", w.key.sign(&c)));
    let mut c = good.clone();
    c.aud = "another-registry".into();
    forgeries.push(("wrong aud", w.key.sign(&c)));
    let mut c = good.clone();
    c.aud = format!("{SERVICE}#refresh");
    forgeries.push(("refresh audience", w.key.sign(&c)));
    let mut c = good.clone();
    c.iss = "someone-else".into();
    forgeries.push(("wrong iss", w.key.sign(&c)));
    // Tampered payload: a guest's valid token with the claims rewritten.
    let guest = w
        .key
        .sign(&w.stamped(claims_now("gus", "priv/other", &["pull"])));
    let parts: Vec<&str> = guest.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    forgeries.push((
        "tampered payload",
        format!("{}.{payload}.{}", parts[0], parts[2]),
    ));
    let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    forgeries.push(("alg none", format!("{none}.{payload}.")));
    forgeries.push(("garbage", "not-a-token".into()));
    for (what, t) in forgeries {
        let r = get(t).await;
        assert_eq!(r.status, 401, "{what}");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("invalid_token"),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_roles_and_robots_are_enforced() {
    let w = world(|_| {}).await;
    let a = w.server.addr;
    let (_, manifest) = push_image(a, &basic("admin", ADMIN_PW), "priv/app", "r").await;
    let delete = format!("/v2/priv/app/manifests/{manifest}");

    // Guest pushing: denied with Basic; a token asking for push gets pull only.
    send(
        a,
        "POST",
        "/v2/priv/app/blobs/uploads/",
        &pw("gus"),
        &[],
        b"",
    )
    .await
    .expect(403, "DENIED");
    let (t, _) = token(a, &pw("gus"), &["repository:priv/app:pull,push"]).await;
    let c = w
        .key
        .verify(&t, ISS, SERVICE, claims_now("", "", &[]).iat)
        .unwrap();
    assert_eq!(c.access[0].actions, ["pull"]);
    send(
        a,
        "POST",
        "/v2/priv/app/blobs/uploads/",
        &Cred::Bearer(t),
        &[],
        b"",
    )
    .await
    .expect(401, "UNAUTHORIZED");
    // Developer pushing yes, deleting no; maintainer deleting yes.
    assert_eq!(
        send(
            a,
            "POST",
            "/v2/priv/app/blobs/uploads/",
            &pw("alice"),
            &[],
            b""
        )
        .await
        .status,
        202
    );
    send(a, "DELETE", &delete, &pw("alice"), &[], b"")
        .await
        .expect(403, "DENIED");
    let (t, _) = token(a, &pw("alice"), &["repository:priv/app:delete,*"]).await;
    let c = w
        .key
        .verify(&t, ISS, SERVICE, claims_now("", "", &[]).iat)
        .unwrap();
    assert!(c.access.is_empty(), "{c:?}");
    assert_eq!(
        send(a, "DELETE", &delete, &pw("mia"), &[], b"")
            .await
            .status,
        202
    );

    // The robot works in its project and nowhere else.
    let robot = basic("robot$pub+ci", &w.robot_secret);
    assert_eq!(
        send(a, "POST", "/v2/pub/app/blobs/uploads/", &robot, &[], b"")
            .await
            .status,
        202
    );
    send(a, "POST", "/v2/priv/app/blobs/uploads/", &robot, &[], b"")
        .await
        .expect(403, "DENIED");
    send(a, "GET", "/v2/priv/app/tags/list", &robot, &[], b"")
        .await
        .expect(403, "DENIED");
    send(a, "DELETE", "/v2/pub/app/manifests/v1", &robot, &[], b"")
        .await
        .expect(403, "DENIED");
    let (t, _) = token(
        a,
        &robot,
        &["repository:priv/app:pull,push", "repository:pub/x:push"],
    )
    .await;
    let c = w
        .key
        .verify(&t, ISS, SERVICE, claims_now("", "", &[]).iat)
        .unwrap();
    assert_eq!(c.access.len(), 1, "{c:?}");
    assert_eq!(c.access[0].name, "pub/x");
    send(a, "GET", "/v2/", &basic("robot$pub+ci", "0000"), &[], b"")
        .await
        .expect(401, "UNAUTHORIZED");

    // Admin API: members only by project admins, users only by admins.
    let body = br#"{"role_id":1,"member_user":{"username":"mallory"}}"#;
    send(
        a,
        "POST",
        "/api/v2.0/projects/priv/members",
        &pw("alice"),
        &[],
        body,
    )
    .await
    .expect(403, "DENIED");
    send(a, "GET", "/api/v2.0/users", &pw("alice"), &[], b"")
        .await
        .expect(403, "DENIED");
    let r = send(
        a,
        "POST",
        "/api/v2.0/users",
        &Cred::None,
        &[],
        br#"{"username":"eve","password":"eve-password"}"#,
    )
    .await;
    assert_eq!(r.status, 401, "no self-registration by default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_forwarded_headers_count_only_from_trusted_proxies() {
    let fwd = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "registry.example.com"),
    ];
    // The test client is 127.0.0.1: not in 10.0.0.0/8.
    let w = world(|c| c.proxy.trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()]).await;
    let a = w.server.addr;
    let r = send(a, "GET", "/v2/", &Cred::None, &fwd, b"").await;
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"http://localhost/service/token\",service=\"berth-registry\"")
    );
    let r = send(
        a,
        "POST",
        "/v2/pub/app/blobs/uploads/",
        &pw("alice"),
        &fwd,
        b"",
    )
    .await;
    // alice is not in pub: 403, but first check a push that works.
    assert_eq!(r.status, 403);
    let r = send(
        a,
        "POST",
        "/v2/priv/app/blobs/uploads/",
        &pw("alice"),
        &fwd,
        b"",
    )
    .await;
    assert_eq!(r.status, 202);
    assert!(r
        .header("location")
        .unwrap()
        .starts_with("/v2/priv/app/blobs/uploads/"));
    drop(w);

    // Trusted: the realm and every Location follow the proxy.
    let w = world(|c| c.proxy.trusted = vec![Cidr::parse("127.0.0.1/32").unwrap()]).await;
    let a = w.server.addr;
    let r = send(a, "GET", "/v2/", &Cred::None, &fwd, b"").await;
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"https://registry.example.com/service/token\",service=\"berth-registry\"")
    );
    let r = send(
        a,
        "POST",
        "/v2/priv/app/blobs/uploads/",
        &pw("alice"),
        &fwd,
        b"",
    )
    .await;
    assert!(r
        .header("location")
        .unwrap()
        .starts_with("https://registry.example.com/v2/priv/app/blobs/uploads/"));
    // An appending proxy: the client's own values stand left of what the
    // proxy appended, and only the proxy's (the last) count, for the realm,
    // the Location and the rate-limited address alike.
    let appended = [
        ("x-forwarded-proto", "http, https"),
        ("x-forwarded-host", "evil.example, registry.example.com"),
        ("x-forwarded-for", "10.9.9.9, 198.51.100.7"),
    ];
    let r = send(a, "GET", "/v2/", &Cred::None, &appended, b"").await;
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"https://registry.example.com/service/token\",service=\"berth-registry\"")
    );
    let r = send(
        a,
        "POST",
        "/v2/priv/app/blobs/uploads/",
        &pw("alice"),
        &appended,
        b"",
    )
    .await;
    assert!(r
        .header("location")
        .unwrap()
        .starts_with("https://registry.example.com/v2/priv/app/blobs/uploads/"));
    let forwarded = [(
        "forwarded",
        "for=192.0.2.1;host=evil.example;proto=http, for=198.51.100.7;host=registry.example.com;proto=https",
    )];
    let r = send(a, "GET", "/v2/", &Cred::None, &forwarded, b"").await;
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"https://registry.example.com/service/token\",service=\"berth-registry\"")
    );
    drop(w);

    // The external URL beats any header.
    let w = world(|c| {
        c.proxy.trusted = vec![Cidr::parse("127.0.0.1/32").unwrap()];
        c.proxy.external_url = Some("https://reg.internal:8443".into());
    })
    .await;
    let r = send(w.server.addr, "GET", "/v2/", &Cred::None, &fwd, b"").await;
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer realm=\"https://reg.internal:8443/service/token\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failed_logins_are_rate_limited_per_source() {
    let w = world(|c| c.auth.max_failed_logins = 3).await;
    let a = w.server.addr;
    for _ in 0..3 {
        send(a, "GET", "/v2/", &basic("alice", "guess-guess"), &[], b"")
            .await
            .expect(401, "UNAUTHORIZED");
    }
    // Now even the right password is refused from this address, on /v2/
    // and on the token service.
    let r = send(a, "GET", "/v2/", &pw("alice"), &[], b"").await;
    r.expect(429, "TOOMANYREQUESTS");
    assert!(r.header("retry-after").is_some());
    let r = send(
        a,
        "GET",
        "/service/token?service=berth-registry",
        &pw("alice"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 429);
    // Tokens already issued keep working: the limit is on password checks.
    let t = w
        .key
        .sign(&w.stamped(claims_now("alice", "priv/app", &["pull"])));
    assert_eq!(
        send(a, "GET", "/v2/", &Cred::Bearer(t), &[], b"")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refuses_to_start_without_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("data"));
    config.auth.enabled = true;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = berth_server::serve(config, listener, async {}).await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("BERTH_ADMIN_PASSWORD"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_admin_api_creates_projects_users_members_and_robots() {
    let w = world(|_| {}).await;
    let a = w.server.addr;
    let admin = basic("admin", ADMIN_PW);
    let r = send(
        a,
        "POST",
        "/api/v2.0/users",
        &admin,
        &[],
        br#"{"username":"bob","password":"bob-password","email":"b@x"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    assert!(r
        .header("location")
        .unwrap()
        .starts_with("/api/v2.0/users/"));
    let r = send(
        a,
        "POST",
        "/api/v2.0/users",
        &admin,
        &[],
        br#"{"username":"bob","password":"bob-password"}"#,
    )
    .await;
    r.expect(409, "CONFLICT");
    // bob creates a project (everyone may by default) and is its admin.
    let r = send(
        a,
        "POST",
        "/api/v2.0/projects",
        &pw("bob"),
        &[],
        br#"{"project_name":"bobs","metadata":{"public":"false"}}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = send(
        a,
        "POST",
        "/api/v2.0/projects/bobs/members",
        &pw("bob"),
        &[],
        br#"{"role_id":3,"member_user":{"username":"alice"}}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let members = send(
        a,
        "GET",
        "/api/v2.0/projects/bobs/members",
        &pw("alice"),
        &[],
        b"",
    )
    .await
    .json();
    let roles: Vec<(String, u64)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["entity_name"].as_str().unwrap().to_owned(),
                m["role_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(roles, [("alice".to_owned(), 3), ("bob".to_owned(), 1)]);
    // A robot, its secret shown once, usable at once.
    let r = send(
        a,
        "POST",
        "/api/v2.0/robots",
        &pw("bob"),
        &[],
        br#"{"name":"ci","duration":30,"level":"project","permissions":[{"kind":"project","namespace":"bobs","access":[{"resource":"repository","action":"push"},{"resource":"repository","action":"pull"}]}]}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["name"], "robot$bobs+ci");
    let secret = v["secret"].as_str().unwrap();
    assert!(v["expires_at"].as_i64().unwrap() > 0);
    let robot = basic("robot$bobs+ci", secret);
    assert_eq!(
        send(a, "POST", "/v2/bobs/app/blobs/uploads/", &robot, &[], b"")
            .await
            .status,
        202
    );
    // alice (guest) may not create robots there.
    let r = send(
        a,
        "POST",
        "/api/v2.0/robots",
        &pw("alice"),
        &[],
        br#"{"name":"x","permissions":[{"kind":"project","namespace":"bobs","access":[{"action":"pull"}]}]}"#,
    )
    .await;
    r.expect(403, "DENIED");
    // The robot list never shows secrets.
    let list = send(a, "GET", "/api/v2.0/robots", &admin, &[], b"").await;
    assert!(!String::from_utf8_lossy(&list.body).contains(secret));
    let users = send(a, "GET", "/api/v2.0/users", &admin, &[], b"")
        .await
        .json();
    assert!(!users.to_string().contains("argon2"), "{users}");
}

/// A minimal chart archive: `NAME/Chart.yaml` only.
fn chart_tgz(name: &str, version: &str) -> Vec<u8> {
    use std::io::Write as _;
    let yaml = format!("apiVersion: v2\nname: {name}\nversion: {version}\n");
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(yaml.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, format!("{name}/Chart.yaml"), yaml.as_bytes())
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_chart_paths_follow_project_permissions() {
    let w = world(|_| {}).await;
    let a = w.server.addr;
    let index = "/chartrepo/priv/index.yaml";

    // Anonymous on a private project: a Basic challenge (helm repo add
    // --username/--password answers it); a non-member: 403.
    let r = send(a, "GET", index, &Cred::None, &[], b"").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"berth\""));
    assert_eq!(
        send(a, "GET", index, &pw("mallory"), &[], b"").await.status,
        403
    );
    // Wrong password: 401, never the index.
    assert_eq!(
        send(a, "GET", index, &basic("gus", "nope"), &[], b"")
            .await
            .status,
        401
    );

    // Push needs developer: the guest is refused, the developer uploads.
    let tgz = chart_tgz("app", "1.0.0");
    let upload = "/api/chartrepo/priv/charts";
    assert_eq!(
        send(a, "POST", upload, &pw("gus"), &[], &tgz).await.status,
        403
    );
    assert_eq!(
        send(a, "POST", upload, &Cred::None, &[], &tgz).await.status,
        401
    );
    let r = send(a, "POST", upload, &pw("alice"), &[], &tgz).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    // Members read the index and the archive; ChartMuseum paths too.
    for path in [
        index,
        "/chartrepo/priv/charts/app-1.0.0.tgz",
        "/priv/index.yaml",
    ] {
        let r = send(a, "GET", path, &pw("gus"), &[], b"").await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            send(a, "GET", path, &Cred::None, &[], b"").await.status,
            401,
            "{path}"
        );
    }

    // Delete needs maintainer.
    let version = "/api/chartrepo/priv/charts/app/1.0.0";
    assert_eq!(
        send(a, "DELETE", version, &pw("alice"), &[], b"")
            .await
            .status,
        403
    );
    assert_eq!(
        send(a, "DELETE", version, &pw("mia"), &[], b"")
            .await
            .status,
        200
    );

    // A public project's index is open to anonymous callers; the global
    // index lists only what the caller may read.
    let r = send(
        a,
        "POST",
        "/api/chartrepo/pub/charts",
        &basic("admin", ADMIN_PW),
        &[],
        &chart_tgz("web", "2.0.0"),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        send(a, "GET", "/chartrepo/pub/index.yaml", &Cred::None, &[], b"")
            .await
            .status,
        200
    );
    let r = send(
        a,
        "POST",
        upload,
        &pw("alice"),
        &[],
        &chart_tgz("hidden", "1.0.0"),
    )
    .await;
    assert_eq!(r.status, 201);
    let all = send(a, "GET", "/chartrepo/index.yaml", &pw("mallory"), &[], b"").await;
    assert_eq!(all.status, 200);
    let text = String::from_utf8_lossy(&all.body);
    assert!(text.contains("pub/web"), "{text}");
    assert!(!text.contains("hidden"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_gc_api_is_for_admins_only() {
    let w = world(|_| {}).await;
    let a = w.server.addr;
    let schedule = "/api/v2.0/system/gc/schedule";
    let manual = br#"{"schedule":{"type":"Manual"}}"#;
    let json = [("content-type", "application/json")];
    assert_eq!(
        send(a, "POST", schedule, &Cred::None, &json, manual)
            .await
            .status,
        401
    );
    assert_eq!(
        send(a, "POST", schedule, &pw("mia"), &json, manual)
            .await
            .status,
        403
    );
    assert_eq!(
        send(a, "GET", "/api/v2.0/system/gc", &pw("alice"), &[], b"")
            .await
            .status,
        403
    );
    let admin = basic("admin", ADMIN_PW);
    let r = send(a, "POST", schedule, &admin, &json, manual).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        send(a, "GET", "/api/v2.0/system/gc", &admin, &[], b"")
            .await
            .status,
        200
    );
}
