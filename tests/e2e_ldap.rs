//! End to end: LDAP authentication (Harbor's `ldap_auth` mode,
//! `docs/auth.md`, "LDAP") of the real `berth` binary against a real
//! OpenLDAP `slapd` that each test starts on a free port in a temp dir of
//! its own, from a generated `slapd.conf` (no system service, nothing
//! owned by root), loaded with `ldapadd` and changed with `ldapmodify` and
//! `ldapdelete` while berth runs.
//!
//! The directory (`dc=example,dc=org`): `cn=search` (the search DN);
//! `alice` (in `admins` and `devs`), `bob` (no group), `carol` (in
//! `devs`); groups `admins` and `devs` (`groupOfNames`). Groups reach berth
//! through the `memberOf` overlay (the default membership attribute) or,
//! in the last test, through a group search on a slapd without it.
//!
//! slapd and the LDAP tools are Debian's `slapd` and `ldap-utils`
//! (`scripts/install-deps.sh`). Without them every test here fails, saying
//! so, unless `BERTH_TEST_LDAP_OPTIONAL` is set (then they pass, skipped,
//! with a note on stderr).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::distribution::basic;
use berth_testkit::server::{api_json, header, http, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "ldap-test-admin-pw";
const SUFFIX: &str = "dc=example,dc=org";
const ROOT_DN: &str = "cn=root,dc=example,dc=org";
const ROOT_PW: &str = "root-secret";
const SEARCH_DN: &str = "cn=search,dc=example,dc=org";
const SEARCH_PW: &str = "search-secret";
const ADMINS: &str = "cn=admins,ou=groups,dc=example,dc=org";
const DEVS: &str = "cn=devs,ou=groups,dc=example,dc=org";
const SERVICE: &str = "berth-registry";

fn user_dn(uid: &str) -> String {
    format!("uid={uid},ou=people,{SUFFIX}")
}

/// The password of directory user `uid`.
fn pw(uid: &str) -> String {
    format!("{uid}-ldap-secret")
}

/// A slapd of the test's own, stopped (and its directory removed) on drop.
struct Slapd {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

/// Where Debian puts a program of `ldap-utils`/`slapd` (`/usr/sbin` is not
/// on every user's `PATH`).
fn program(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Whether slapd and the LDAP tools are here; if not, panics (the tests
/// need them), or with `BERTH_TEST_LDAP_OPTIONAL` set returns false.
fn ldap_available() -> bool {
    let missing: Vec<&str> = ["slapd", "ldapadd", "ldapmodify", "ldapdelete"]
        .into_iter()
        .filter(|p| program(p).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "LDAP tests need {} (Debian packages slapd and ldap-utils: run scripts/install-deps.sh)",
        missing.join(", ")
    );
    if std::env::var_os("BERTH_TEST_LDAP_OPTIONAL").is_some() {
        eprintln!("skipped: {msg}; BERTH_TEST_LDAP_OPTIONAL is set");
        return false;
    }
    panic!("{msg}; set BERTH_TEST_LDAP_OPTIONAL=1 to skip them");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

const DATA: &str = "\
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: cn=search,dc=example,dc=org
objectClass: person
cn: search
sn: search
userPassword: search-secret

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice Liddell
sn: Liddell
mail: alice@example.org
userPassword: alice-ldap-secret

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Builder
mail: bob@example.org
userPassword: bob-ldap-secret

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: Singer
mail: carol@example.org
userPassword: carol-ldap-secret

dn: cn=admins,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: admins
member: cn=search,dc=example,dc=org
member: uid=alice,ou=people,dc=example,dc=org

dn: cn=devs,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: devs
member: cn=search,dc=example,dc=org
member: uid=alice,ou=people,dc=example,dc=org
member: uid=carol,ou=people,dc=example,dc=org
";

impl Slapd {
    /// Starts slapd on a free port of 127.0.0.1, with the `memberof`
    /// overlay if `memberof`, and loads the directory above. Only bound
    /// users may read; passwords may only be bound with.
    fn start(memberof: bool) -> Slapd {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).expect("db dir");
        let overlay = if memberof {
            "overlay memberof\nmemberof-group-oc groupOfNames\nmemberof-member-ad member\n\
             memberof-memberof-ad memberOf\nmemberof-refint TRUE\n"
        } else {
            ""
        };
        let module = if memberof {
            "moduleload memberof\n"
        } else {
            ""
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {pid}\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             {module}\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PW}\n\
             directory {db}\n\
             {overlay}\
             access to attrs=userPassword by anonymous auth by self write by * none\n\
             access to * by users read by * none\n",
            pid = dir.path().join("slapd.pid").display(),
            db = db.display(),
        );
        let conf_path = dir.path().join("slapd.conf");
        std::fs::write(&conf_path, conf).expect("slapd.conf");
        let slapd = program("slapd").expect("slapd");
        for _ in 0..3 {
            let port = free_port();
            let url = format!("ldap://127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path().join("slapd.log")).expect("slapd.log");
            // `-d 0`: stay in the foreground (the child is the server).
            let mut child = Command::new(&slapd)
                .arg("-f")
                .arg(&conf_path)
                .arg("-h")
                .arg(format!("{url}/"))
                .args(["-d", "0"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting slapd");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if up {
                let s = Slapd { child, url, dir };
                s.tool("ldapadd", &[], DATA);
                return s;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "slapd did not start: {}",
            std::fs::read_to_string(dir.path().join("slapd.log")).unwrap_or_default()
        );
    }

    /// Runs an LDAP tool as the root DN with `input` (LDIF) on stdin.
    fn tool(&self, name: &str, args: &[&str], input: &str) {
        use std::io::Write as _;
        let mut child = Command::new(program(name).expect(name))
            .args(["-x", "-H", self.url.as_str(), "-D", ROOT_DN, "-w", ROOT_PW])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("LDIF to the tool");
        let out = child.wait_with_output().expect(name);
        assert!(
            out.status.success(),
            "{name} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Takes `uid` out of group `group`.
    fn remove_from_group(&self, group: &str, uid: &str) {
        let ldif = format!(
            "dn: {group}\nchangetype: modify\ndelete: member\nmember: {}\n",
            user_dn(uid)
        );
        self.tool("ldapmodify", &[], &ldif);
    }

    fn delete(&self, dn: &str) {
        self.tool("ldapdelete", &[dn], "");
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// berth in `ldap_auth` mode on `slapd`, plus `extra` settings.
fn berth(slapd: &Slapd, data: &Path, extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
        ("BERTH_AUTH_MODE", "ldap_auth"),
        ("BERTH_LDAP_URL", slapd.url.as_str()),
        ("BERTH_LDAP_SEARCH_DN", SEARCH_DN),
        ("BERTH_LDAP_SEARCH_PASSWORD", SEARCH_PW),
        ("BERTH_LDAP_BASE_DN", "ou=people,dc=example,dc=org"),
        ("BERTH_LDAP_FILTER", "(objectClass=inetOrgPerson)"),
        ("BERTH_LDAP_UID", "uid"),
        ("BERTH_LDAP_GROUP_ADMIN_DN", ADMINS),
        ("RUST_LOG", "info"),
    ];
    env.extend_from_slice(extra);
    TestServer::start(data, &env)
}

fn api(s: &TestServer, auth: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let (st, _, v) = api_json(s.addr, auth, method, path, body);
    (st, v)
}

fn status(s: &TestServer, auth: &str, method: &str, path: &str) -> u16 {
    http(s.addr, method, path, &[("Authorization", auth)], b"").0
}

/// A token from `GET /service/token` with Basic `auth` for `scope`.
fn token_get(s: &TestServer, auth: &str, scope: &str) -> (u16, String) {
    let (st, _, body) = http(
        s.addr,
        "GET",
        &format!("/service/token?service={SERVICE}&scope={scope}"),
        &[("Authorization", auth)],
        b"",
    );
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (st, v["token"].as_str().unwrap_or_default().to_owned())
}

/// The OAuth2 password grant (`docker login`'s), with a refresh token.
fn token_post(s: &TestServer, user: &str, password: &str, scope: &str) -> (u16, Value) {
    let form = format!(
        "grant_type=password&service={SERVICE}&username={user}&password={password}\
         &access_type=offline&scope={scope}"
    );
    let (st, _, body) = http(
        s.addr,
        "POST",
        "/service/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    (st, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn refresh(s: &TestServer, rt: &str, scope: &str) -> u16 {
    let form =
        format!("grant_type=refresh_token&service={SERVICE}&refresh_token={rt}&scope={scope}");
    http(s.addr, "POST", "/service/token", &[], form.as_bytes()).0
}

/// The status of a monolithic blob push (`POST` then `PUT ?digest=`) to
/// `repo` with `auth`: the `POST`'s when it is refused, else the `PUT`'s.
fn push_status(s: &TestServer, auth: &str, repo: &str, data: &[u8]) -> u16 {
    let d = berth_testkit::oci_layout::sha256_digest(data);
    let path = format!("/v2/{repo}/blobs/uploads/");
    let (st, h, _) = http(s.addr, "POST", &path, &[("Authorization", auth)], b"");
    if st != 202 {
        return st;
    }
    let loc = header(&h, "location").expect("location").to_owned();
    let loc = loc.split_once("://").map_or(loc.as_str(), |(_, rest)| {
        rest.find('/').map_or(rest, |i| &rest[i..])
    });
    let sep = if loc.contains('?') { '&' } else { '?' };
    http(
        s.addr,
        "PUT",
        &format!("{loc}{sep}digest={d}"),
        &[("Authorization", auth)],
        data,
    )
    .0
}

fn admin() -> String {
    basic("admin", ADMIN_PW)
}

#[test]
fn ldap_login_by_basic_and_token_and_what_is_refused() {
    if !ldap_available() {
        return;
    }
    let slapd = Slapd::start(true);
    let dir = tempfile::tempdir().expect("temp dir");
    let s = berth(
        &slapd,
        &dir.path().join("data"),
        &[("BERTH_MAX_FAILED_LOGINS", "0")],
    );
    let bob = basic("bob", &pw("bob"));

    // Basic on /v2/ and the admin API; the first login onboards bob with
    // the directory's email and name.
    assert_eq!(status(&s, &bob, "GET", "/v2/"), 200);
    let (st, me) = api(&s, &bob, "GET", "/api/v2.0/users/current", &Value::Null);
    assert_eq!(st, 200, "{me}");
    assert_eq!(me["username"], "bob");
    assert_eq!(me["email"], "bob@example.org");
    assert_eq!(me["realname"], "Bob");
    assert_eq!(me["sysadmin_flag"], false);

    // The token endpoint: Basic on GET, the password grant on POST.
    let (st, t) = token_get(&s, &bob, "repository:library/x:pull");
    assert_eq!(st, 200);
    assert_eq!(status(&s, &format!("Bearer {t}"), "GET", "/v2/"), 200);
    let (st, v) = token_post(&s, "bob", &pw("bob"), "repository:library/x:pull");
    assert_eq!(st, 200, "{v}");
    assert!(v["refresh_token"].is_string());

    // Wrong and empty passwords.
    let wrong = basic("bob", "not-the-password");
    assert_eq!(status(&s, &wrong, "GET", "/v2/"), 401);
    assert_eq!(token_get(&s, &wrong, "repository:library/x:pull").0, 401);
    assert_eq!(
        token_post(&s, "bob", "nope", "repository:library/x:pull").0,
        401
    );
    assert_eq!(
        status(&s, &basic("bob", ""), "GET", "/v2/"),
        401,
        "empty password"
    );
    assert_eq!(
        token_post(&s, "bob", "", "repository:library/x:pull").0,
        401
    );
    assert_eq!(
        status(&s, &basic("nobody", "whatever-1"), "GET", "/v2/"),
        401
    );

    // Filter injection: names that would match bob's (or every) entry if
    // they reached the filter unescaped, with bob's password.
    for name in ["*", "b*", ")(uid=*", "bob)(|(uid=*", "*)(objectClass=*"] {
        let injected = basic(name, &pw("bob"));
        assert_eq!(status(&s, &injected, "GET", "/v2/"), 401, "name {name:?}");
        assert_eq!(
            token_get(&s, &injected, "repository:library/x:pull").0,
            401,
            "name {name:?}"
        );
    }

    // The password is the directory's: a local change is refused.
    let id = me["user_id"].as_u64().expect("user_id");
    let (st, v) = api(
        &s,
        &bob,
        "PUT",
        &format!("/api/v2.0/users/{id}/password"),
        &json!({"old_password": pw("bob"), "new_password": "local-password-1"}),
    );
    assert_eq!(st, 403, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("LDAP"),
        "{v}"
    );
    // Users are the directory's: none is created here.
    let (st, v) = api(
        &s,
        &admin(),
        "POST",
        "/api/v2.0/users",
        &json!({"username": "dan", "password": "dan-password-1"}),
    );
    assert_eq!(st, 403, "{v}");

    // admin (and robots) stay local.
    assert_eq!(status(&s, &admin(), "GET", "/api/v2.0/users"), 200);
    assert_eq!(
        status(&s, &basic("admin", "wrong-password"), "GET", "/v2/"),
        401
    );
}

#[test]
fn ldap_groups_give_admin_and_project_roles_and_follow_the_directory() {
    if !ldap_available() {
        return;
    }
    let slapd = Slapd::start(true);
    let dir = tempfile::tempdir().expect("temp dir");
    let s = berth(&slapd, &dir.path().join("data"), &[]);
    groups_follow_the_directory(&slapd, &s);
}

/// The same, with groups from a group search (`member=<user DN>` under
/// the group base DN) on a slapd without the memberOf overlay.
#[test]
fn ldap_groups_by_group_search_without_memberof() {
    if !ldap_available() {
        return;
    }
    let slapd = Slapd::start(false);
    let dir = tempfile::tempdir().expect("temp dir");
    let s = berth(
        &slapd,
        &dir.path().join("data"),
        &[
            ("BERTH_LDAP_GROUP_BASE_DN", "ou=groups,dc=example,dc=org"),
            (
                "BERTH_LDAP_GROUP_SEARCH_FILTER",
                "(objectClass=groupOfNames)",
            ),
        ],
    );
    groups_follow_the_directory(&slapd, &s);
}

fn groups_follow_the_directory(slapd: &Slapd, s: &TestServer) {
    let alice = basic("alice", &pw("alice"));
    let carol = basic("carol", &pw("carol"));
    let bob = basic("bob", &pw("bob"));

    // alice is in the admin group: a system administrator.
    let (st, v) = api(s, &alice, "GET", "/api/v2.0/users", &Value::Null);
    assert_eq!(st, 200, "{v}");
    let (st, me) = api(s, &alice, "GET", "/api/v2.0/users/current", &Value::Null);
    assert_eq!(st, 200);
    assert_eq!(me["sysadmin_flag"], true);
    assert_eq!(status(s, &carol, "GET", "/api/v2.0/users"), 403);

    // A private project (the local admin's, so that no LDAP user is its
    // member by creating it); alice, an administrator through her group,
    // makes the devs group its developer (Harbor's member_group,
    // group_type 1), the DN spelled differently.
    let (st, v) = api(
        s,
        &admin(),
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "team", "metadata": {"public": "false"}}),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = api(
        s,
        &alice,
        "POST",
        "/api/v2.0/projects/team/members",
        &json!({"role_id": 2, "member_group": {"group_type": 1,
                "ldap_group_dn": "CN=Devs, OU=Groups, DC=example, DC=org"}}),
    );
    assert_eq!(st, 201, "{v}");
    // Bad member requests, in Harbor's error shape.
    for bad in [
        json!({"role_id": 2, "member_group": {"group_type": 2, "group_name": "x"}}),
        json!({"role_id": 2, "member_group": {"group_type": 1}}),
        json!({"role_id": 2, "member_group": {"group_type": 1, "ldap_group_dn": "devs"}}),
        json!({"role_id": 2}),
    ] {
        let (st, v) = api(s, &alice, "POST", "/api/v2.0/projects/team/members", &bad);
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(v["errors"][0]["message"].is_string(), "{v}");
    }
    let (st, members) = api(
        s,
        &alice,
        "GET",
        "/api/v2.0/projects/team/members",
        &Value::Null,
    );
    assert_eq!(st, 200);
    let group = members
        .as_array()
        .and_then(|m| m.iter().find(|m| m["entity_type"] == "g"))
        .cloned()
        .unwrap_or_else(|| panic!("no group member in {members}"));
    assert_eq!(group["entity_name"], DEVS);
    assert_eq!(group["role_id"], 2);

    // carol (in devs) pushes and pulls there; bob (in no group) does not
    // see the project.
    assert_eq!(push_status(s, &carol, "team/app", b"carol's layer"), 201);
    let blob = berth_testkit::oci_layout::sha256_digest(b"carol's layer");
    assert_eq!(
        status(s, &carol, "GET", &format!("/v2/team/app/blobs/{blob}")),
        200
    );
    assert_eq!(
        status(s, &bob, "GET", &format!("/v2/team/app/blobs/{blob}")),
        403
    );
    let (st, t) = token_get(s, &carol, "repository:team/app:pull,push");
    assert_eq!(st, 200);
    let claims = token_access(&t);
    assert!(
        claims.contains("push"),
        "carol's token grants push: {claims}"
    );
    assert_eq!(push_status(s, &bob, "team/app", b"bob's layer"), 403);
    let (_, t) = token_get(s, &bob, "repository:team/app:pull,push");
    assert!(!token_access(&t).contains("push"));
    // Members of the group see the member list.
    assert_eq!(
        status(s, &carol, "GET", "/api/v2.0/projects/team/members"),
        200
    );

    // Out of the admin group in the directory: alice's next login is not
    // an administrator's.
    slapd.remove_from_group(ADMINS, "alice");
    assert_eq!(status(s, &alice, "GET", "/api/v2.0/users"), 403);
    let (_, me) = api(s, &alice, "GET", "/api/v2.0/users/current", &Value::Null);
    assert_eq!(me["sysadmin_flag"], false);
    // Still a developer of team through devs.
    assert_eq!(push_status(s, &alice, "team/app", b"alice's layer"), 201);

    // Out of devs: carol's next request may not push, and her next token
    // does not grant it.
    slapd.remove_from_group(DEVS, "carol");
    assert_eq!(
        push_status(s, &carol, "team/app", b"carol's second layer"),
        403
    );
    let (_, t) = token_get(s, &carol, "repository:team/app:pull,push");
    assert!(!token_access(&t).contains("push"));

    // The group's membership removed in berth: alice loses the role.
    let mid = group["id"].as_u64().expect("member id");
    let (st, v) = api(
        s,
        &admin(),
        "DELETE",
        &format!("/api/v2.0/projects/team/members/{mid}"),
        &Value::Null,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        push_status(s, &alice, "team/app", b"alice's second layer"),
        403
    );
}

/// The `access` claim of a token, as text (the claims are not checked
/// here: the registry did when it signed them).
fn token_access(token: &str) -> String {
    use base64::Engine as _;
    let claims = token.split('.').nth(1).unwrap_or_default();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    v["access"].to_string()
}

#[test]
fn ldap_a_user_deleted_in_the_directory_fails_on_the_next_request() {
    if !ldap_available() {
        return;
    }
    let slapd = Slapd::start(true);
    let dir = tempfile::tempdir().expect("temp dir");
    let s = berth(&slapd, &dir.path().join("data"), &[]);
    let bob = basic("bob", &pw("bob"));
    assert_eq!(status(&s, &bob, "GET", "/v2/"), 200);
    let (st, v) = token_post(&s, "bob", &pw("bob"), "repository:library/x:pull");
    assert_eq!(st, 200, "{v}");
    let rt = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    assert_eq!(refresh(&s, &rt, "repository:library/x:pull"), 200);

    slapd.delete(&user_dn("bob"));
    assert_eq!(
        status(&s, &bob, "GET", "/v2/"),
        401,
        "Basic, the very next request"
    );
    assert_eq!(token_get(&s, &bob, "repository:library/x:pull").0, 401);
    assert_eq!(
        refresh(&s, &rt, "repository:library/x:pull"),
        401,
        "a refresh token asks the directory"
    );

    // A password changed in the directory: the old one fails at once.
    let carol = basic("carol", &pw("carol"));
    assert_eq!(status(&s, &carol, "GET", "/v2/"), 200);
    let ldif = format!(
        "dn: {}\nchangetype: modify\nreplace: userPassword\nuserPassword: carol-new-secret\n",
        user_dn("carol")
    );
    slapd.tool("ldapmodify", &[], &ldif);
    assert_eq!(status(&s, &carol, "GET", "/v2/"), 401);
    assert_eq!(
        status(&s, &basic("carol", "carol-new-secret"), "GET", "/v2/"),
        200
    );
}

// ---- the LDAP and user group API (Harbor's /ldap/…, /usergroups) ----------

/// berth on `slapd` with groups also searched under `ou=groups` (so
/// `/ldap/groups/search` has a base).
fn berth_with_group_base(slapd: &Slapd, data: &Path) -> TestServer {
    berth(
        slapd,
        data,
        &[
            ("BERTH_LDAP_GROUP_BASE_DN", "ou=groups,dc=example,dc=org"),
            (
                "BERTH_LDAP_GROUP_SEARCH_FILTER",
                "(objectClass=groupOfNames)",
            ),
        ],
    )
}

/// `value` percent-encoded for a query string.
fn q(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The status of a request without credentials.
fn anonymous(s: &TestServer, method: &str, path: &str) -> u16 {
    http(s.addr, method, path, &[], b"").0
}

/// A request with a raw (not necessarily JSON) body.
fn raw(s: &TestServer, auth: &str, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (st, _, b) = http(
        s.addr,
        method,
        path,
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// The `field` values of a JSON array, as strings.
fn column(v: &Value, field: &str) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x[field].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Harbor's error shape with a message.
fn harbor_error(v: &Value) -> bool {
    v["errors"][0]["code"].is_string() && v["errors"][0]["message"].is_string()
}

#[test]
fn ldap_api_ping_search_and_import() {
    if !ldap_available() {
        return;
    }
    let slapd = Slapd::start(true);
    let dir = tempfile::tempdir().expect("temp dir");
    let s = berth_with_group_base(&slapd, &dir.path().join("data"));
    let carol = basic("carol", &pw("carol"));
    // carol signs in (onboarded), and is no administrator.
    assert_eq!(status(&s, &carol, "GET", "/v2/"), 200);

    // Only system administrators; no credentials: 401.
    for (method, path) in [
        ("POST", "/api/v2.0/ldap/ping"),
        ("GET", "/api/v2.0/ldap/users/search?username=bob"),
        ("POST", "/api/v2.0/ldap/users/import"),
        ("GET", "/api/v2.0/ldap/groups/search?groupname=devs"),
    ] {
        assert_eq!(anonymous(&s, method, path), 401, "{method} {path}");
        let (st, v) = api(&s, &carol, method, path, &json!({"ldap_uid_list": ["bob"]}));
        assert_eq!(st, 403, "{method} {path}: {v}");
        assert!(harbor_error(&v), "{v}");
    }
    assert_eq!(
        status(&s, &admin(), "GET", "/api/v2.0/ldap/ping"),
        405,
        "ping is a POST"
    );

    // Ping: the running configuration (no body, or fields the same).
    for body in [&b""[..], b"{}", b"{\"ldap_search_password\":\"\"}"] {
        let (st, v) = raw(&s, &admin(), "POST", "/api/v2.0/ldap/ping", body);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["success"], true, "{v}");
        assert!(v["message"].is_string(), "{v}");
    }
    let (st, v) = api(
        &s,
        &admin(),
        "POST",
        "/api/v2.0/ldap/ping",
        &json!({"ldap_url": slapd.url, "ldap_search_dn": SEARCH_DN, "ldap_scope": 1,
                "ldap_connection_timeout": 3, "ldap_verify_cert": true}),
    );
    assert_eq!((st, &v["success"]), (200, &json!(true)), "{v}");
    // A wrong password, and a directory that is not there: success false.
    let (st, v) = api(
        &s,
        &admin(),
        "POST",
        "/api/v2.0/ldap/ping",
        &json!({"ldap_search_password": "not-the-password"}),
    );
    assert_eq!((st, &v["success"]), (200, &json!(false)), "{v}");
    assert!(!v["message"].as_str().unwrap_or("").is_empty(), "{v}");
    let closed = format!("ldap://127.0.0.1:{}", free_port());
    let (st, v) = api(
        &s,
        &admin(),
        "POST",
        "/api/v2.0/ldap/ping",
        &json!({"ldap_url": closed, "ldap_search_password": "x", "ldap_connection_timeout": 2}),
    );
    assert_eq!((st, &v["success"]), (200, &json!(false)), "{v}");

    // The configured search password goes nowhere else: a listener of
    // the caller's choosing, or another DN on the same directory, gets
    // a 400 asking for a password, and the listener no connection.
    let trap = TcpListener::bind("127.0.0.1:0").expect("listener");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_url = format!("ldap://{}", trap.local_addr().expect("address"));
    for body in [
        json!({"ldap_url": trap_url}),
        json!({"ldap_url": trap_url, "ldap_search_password": ""}),
        json!({"ldap_search_dn": user_dn("alice")}),
        json!({"ldap_verify_cert": false}),
    ] {
        let (st, v) = api(&s, &admin(), "POST", "/api/v2.0/ldap/ping", &body);
        assert_eq!(st, 400, "{body}: {v}");
        assert!(harbor_error(&v), "{v}");
    }
    assert!(
        trap.accept().is_err(),
        "berth connected to the caller's host with the configured password"
    );
    // Bad bodies.
    for body in [
        &b"not json"[..],
        b"{\"ldap_scope\":7}",
        b"{\"ldap_url\":\"http://x\"}",
        b"{\"ldap_connection_timeout\":-5}",
        b"{\"ldap_verify_cert\":\"yes\"}",
    ] {
        let (st, v) = raw(&s, &admin(), "POST", "/api/v2.0/ldap/ping", body);
        assert_eq!(st, 400, "{}: {v}", String::from_utf8_lossy(body));
    }

    // User search: exact, escaped; empty is every user entry.
    let search = |name: &str| {
        let path = format!("/api/v2.0/ldap/users/search?username={}", q(name));
        let (st, v) = api(&s, &admin(), "GET", &path, &Value::Null);
        assert_eq!(st, 200, "{name:?}: {v}");
        v
    };
    assert_eq!(
        search("alice"),
        json!([{"username": "alice", "realname": "Alice Liddell", "email": "alice@example.org"}])
    );
    let mut all = column(&search(""), "username");
    all.sort();
    assert_eq!(all, ["alice", "bob", "carol"]);
    for injected in ["*", "*)(uid=*", "a*", "bob)(|(uid=*", "*)(objectClass=*"] {
        assert_eq!(search(injected), json!([]), "{injected:?}");
    }
    assert_eq!(search("nobody"), json!([]));

    // Group search under the group base DN.
    let groups = |query: &str| {
        let (st, v) = api(
            &s,
            &admin(),
            "GET",
            &format!("/api/v2.0/ldap/groups/search?{query}"),
            &Value::Null,
        );
        (st, v)
    };
    let (st, v) = groups("groupname=devs");
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!([{"group_name": "devs", "group_type": 1, "ldap_group_dn": DEVS}])
    );
    let (_, v) = groups("groupname=");
    let mut names = column(&v, "group_name");
    names.sort();
    assert_eq!(names, ["admins", "devs"]);
    let (_, v) = groups(&format!("groupname={}", q("*)(cn=*")));
    assert_eq!(v, json!([]));
    let (_, v) = groups(&format!("groupdn={}", q(ADMINS)));
    assert_eq!(column(&v, "group_name"), ["admins"]);
    let (_, v) = groups(&format!(
        "groupdn={}",
        q("cn=nope,ou=groups,dc=example,dc=org")
    ));
    assert_eq!(v, json!([]));
    for outside in [
        user_dn("bob"),
        "cn=x\\,ou=groups,dc=example,dc=org".to_owned(),
        "devs".to_owned(),
    ] {
        let (st, v) = groups(&format!("groupdn={}", q(&outside)));
        assert_eq!(st, 400, "{outside}: {v}");
    }

    // Import: bob is onboarded without a login; the failures are listed.
    let (st, _, body) = http(
        s.addr,
        "POST",
        "/api/v2.0/ldap/users/import",
        &[("Authorization", &admin())],
        br#"{"ldap_uid_list":["bob","nobody","carol","*","admin"]}"#,
    );
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(st, 404, "{v}");
    assert_eq!(
        v,
        json!([
            {"uid": "nobody", "error": "unknown_user"},
            {"uid": "carol", "error": "duplicate_user"},
            {"uid": "*", "error": "unknown_user"},
            {"uid": "admin", "error": "unknown_user"},
        ])
    );
    let (st, users) = api(
        &s,
        &admin(),
        "GET",
        "/api/v2.0/users?q=username=bob",
        &Value::Null,
    );
    assert_eq!(st, 200);
    assert_eq!(users[0]["email"], "bob@example.org", "{users}");
    assert_eq!(users[0]["realname"], "Bob");
    // Again: a duplicate, and nothing changes.
    let (st, v) = api(
        &s,
        &admin(),
        "POST",
        "/api/v2.0/ldap/users/import",
        &json!({"ldap_uid_list": ["bob"]}),
    );
    assert_eq!(
        (st, v),
        (404, json!([{"uid": "bob", "error": "duplicate_user"}]))
    );
    // All imported: 200.
    let (st, _, body) = http(
        s.addr,
        "POST",
        "/api/v2.0/ldap/users/import",
        &[("Authorization", &admin())],
        br#"{"ldap_uid_list":["alice"]}"#,
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    // bob, imported, signs in as the same user.
    let (st, me) = api(
        &s,
        &basic("bob", &pw("bob")),
        "GET",
        "/api/v2.0/users/current",
        &Value::Null,
    );
    assert_eq!(st, 200);
    assert_eq!(me["user_id"], users[0]["user_id"]);
    for body in [
        &b"{}"[..],
        b"{\"ldap_uid_list\":[]}",
        b"{\"ldap_uid_list\":\"bob\"}",
        b"[",
    ] {
        let (st, v) = raw(&s, &admin(), "POST", "/api/v2.0/ldap/users/import", body);
        assert_eq!(st, 400, "{}: {v}", String::from_utf8_lossy(body));
        assert!(harbor_error(&v), "{v}");
    }
    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let (st, _) = api(
        &s,
        &admin(),
        "POST",
        "/api/v2.0/ldap/users/import",
        &json!({ "ldap_uid_list": many }),
    );
    assert_eq!(st, 400, "at most 100 uids");

    // A search of everything is capped at 100 entries.
    let ldif: String = (0..105)
        .map(|i| {
            format!(
                "dn: uid=user{i},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: user{i}\n\
                 cn: User {i}\nsn: U\n\n"
            )
        })
        .collect();
    slapd.tool("ldapadd", &[], &ldif);
    assert_eq!(search("").as_array().map(Vec::len), Some(100));
    assert_eq!(column(&search("user104"), "username"), ["user104"]);
}

#[test]
fn ldap_user_groups_and_members_by_group_id() {
    if !ldap_available() {
        return;
    }
    let slapd = Slapd::start(true);
    let dir = tempfile::tempdir().expect("temp dir");
    let s = berth_with_group_base(&slapd, &dir.path().join("data"));
    let bob = basic("bob", &pw("bob"));
    assert_eq!(status(&s, &bob, "GET", "/v2/"), 200);

    // Create: 201 with Location; the DN is kept normalized.
    let (st, h, v) = api_json(
        s.addr,
        &admin(),
        "POST",
        "/api/v2.0/usergroups",
        &json!({"group_name": "developers", "group_type": 1,
                "ldap_group_dn": "CN=Devs, OU=Groups, DC=example, DC=org"}),
    );
    assert_eq!(st, 201, "{v}");
    let location = header(&h, "location").expect("Location").to_owned();
    let devs: u64 = location
        .strip_prefix("/api/v2.0/usergroups/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("Location {location}"));
    let (st, g) = api(&s, &admin(), "GET", &location, &Value::Null);
    assert_eq!(st, 200);
    assert_eq!(
        g,
        json!({"id": devs, "group_name": "developers", "group_type": 1, "ldap_group_dn": DEVS})
    );
    // The same DN in another spelling: 409; other types and bad DNs: 400.
    let (st, v) = api(
        &s,
        &admin(),
        "POST",
        "/api/v2.0/usergroups",
        &json!({"group_name": "again", "group_type": 1, "ldap_group_dn": DEVS.to_uppercase()}),
    );
    assert_eq!(st, 409, "{v}");
    assert!(harbor_error(&v), "{v}");
    for bad in [
        json!({"group_name": "x", "group_type": 2, "ldap_group_dn": "cn=x,dc=example,dc=org"}),
        json!({"group_name": "x", "group_type": 3}),
        json!({"group_name": "x", "group_type": 1}),
        json!({"group_name": "x", "group_type": 1, "ldap_group_dn": "devs"}),
        json!({"group_name": "x", "group_type": 1, "ldap_group_dn": "cn=a\u{0}b,dc=x"}),
        json!({"group_name": "x", "group_type": "ldap", "ldap_group_dn": "cn=x,dc=x"}),
    ] {
        let (st, v) = api(&s, &admin(), "POST", "/api/v2.0/usergroups", &bad);
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(harbor_error(&v), "{v}");
    }
    let (st, _) = raw(&s, &admin(), "POST", "/api/v2.0/usergroups", b"{");
    assert_eq!(st, 400);
    // Without a name, the DN's first value names the group.
    let mut ids = vec![devs];
    for dn in [
        ADMINS,
        "cn=g1,ou=groups,dc=example,dc=org",
        "cn=g2,ou=groups,dc=example,dc=org",
    ] {
        let (st, h, v) = api_json(
            s.addr,
            &admin(),
            "POST",
            "/api/v2.0/usergroups",
            &json!({"group_type": 1, "ldap_group_dn": dn}),
        );
        assert_eq!(st, 201, "{v}");
        let loc = header(&h, "location").unwrap_or_default();
        ids.push(
            loc.rsplit('/')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0),
        );
    }
    let (_, g) = api(
        &s,
        &admin(),
        "GET",
        &format!("/api/v2.0/usergroups/{}", ids[1]),
        &Value::Null,
    );
    assert_eq!(g["group_name"], "admins");

    // List: paged in id order, with X-Total-Count and Link; filters.
    let (st, h, v) = api_json(
        s.addr,
        &admin(),
        "GET",
        "/api/v2.0/usergroups?page=1&page_size=3",
        &Value::Null,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(header(&h, "x-total-count"), Some("4"));
    assert!(
        header(&h, "link").is_some_and(|l| l.contains("rel=\"next\"")),
        "{h:?}"
    );
    let got: Vec<u64> = v
        .as_array()
        .map(|a| a.iter().filter_map(|g| g["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(got, ids[..3]);
    let (_, h, v) = api_json(
        s.addr,
        &admin(),
        "GET",
        "/api/v2.0/usergroups?page=2&page_size=3",
        &Value::Null,
    );
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    assert!(header(&h, "link").is_some_and(|l| l.contains("rel=\"prev\"")));
    let (_, v) = api(
        &s,
        &admin(),
        "GET",
        &format!(
            "/api/v2.0/usergroups?ldap_group_dn={}",
            q(&DEVS.to_uppercase())
        ),
        &Value::Null,
    );
    assert_eq!(column(&v, "group_name"), ["developers"]);
    let (_, v) = api(
        &s,
        &admin(),
        "GET",
        "/api/v2.0/usergroups?group_name=G",
        &Value::Null,
    );
    assert_eq!(column(&v, "group_name"), ["g1", "g2"]);

    // Search by name: any signed-in user, no DNs, paged.
    let (st, h, v) = api_json(
        s.addr,
        &bob,
        "GET",
        "/api/v2.0/usergroups/search?groupname=dev",
        &Value::Null,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!([{"id": devs, "group_name": "developers", "group_type": 1}])
    );
    assert_eq!(header(&h, "x-total-count"), Some("1"));
    let (st, _) = api(&s, &bob, "GET", "/api/v2.0/usergroups/search", &Value::Null);
    assert_eq!(st, 400, "groupname is required");
    assert_eq!(
        anonymous(&s, "GET", "/api/v2.0/usergroups/search?groupname=dev"),
        401
    );

    // Everything else is a system administrator's.
    let one = format!("/api/v2.0/usergroups/{devs}");
    for (method, path) in [
        ("GET", "/api/v2.0/usergroups"),
        ("POST", "/api/v2.0/usergroups"),
        ("GET", one.as_str()),
        ("PUT", one.as_str()),
        ("DELETE", one.as_str()),
    ] {
        assert_eq!(anonymous(&s, method, path), 401, "{method} {path}");
        let (st, v) = api(&s, &bob, method, path, &json!({"group_name": "mine"}));
        assert_eq!(st, 403, "{method} {path}: {v}");
    }

    // Get: unknown 404, not an id 400. Put: renames only.
    assert_eq!(
        status(&s, &admin(), "GET", "/api/v2.0/usergroups/99999"),
        404
    );
    assert_eq!(status(&s, &admin(), "GET", "/api/v2.0/usergroups/abc"), 400);
    let (st, v) = api(
        &s,
        &admin(),
        "PUT",
        &one,
        &json!({"group_name": "devs", "ldap_group_dn": "cn=other,dc=example,dc=org"}),
    );
    assert_eq!(st, 200, "{v}");
    let (_, g) = api(&s, &admin(), "GET", &one, &Value::Null);
    assert_eq!(
        (&g["group_name"], &g["ldap_group_dn"]),
        (&json!("devs"), &json!(DEVS))
    );
    for bad in [
        json!({}),
        json!({"group_name": ""}),
        json!({"group_name": 5}),
    ] {
        let (st, v) = api(&s, &admin(), "PUT", &one, &bad);
        assert_eq!(st, 400, "{bad}: {v}");
    }
    let (st, _) = api(
        &s,
        &admin(),
        "PUT",
        "/api/v2.0/usergroups/99999",
        &json!({"group_name": "x"}),
    );
    assert_eq!(st, 404);

    // carol, imported (never signed in), gets developer in a private
    // project through the group's id, and signs in with that role.
    let (st, _, _) = http(
        s.addr,
        "POST",
        "/api/v2.0/ldap/users/import",
        &[("Authorization", &admin())],
        br#"{"ldap_uid_list":["carol"]}"#,
    );
    assert_eq!(st, 200);
    let (st, v) = api(
        &s,
        &admin(),
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "team", "metadata": {"public": "false"}}),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = api(
        &s,
        &admin(),
        "POST",
        "/api/v2.0/projects/team/members",
        &json!({"role_id": 2, "member_group": {"id": devs}}),
    );
    assert_eq!(st, 201, "{v}");
    for bad in [
        json!({"role_id": 2, "member_group": {"id": 99999}}),
        json!({"role_id": 2, "member_group": {"id": devs, "group_type": 2}}),
        json!({"role_id": 2, "member_group": {"id": 0}}),
    ] {
        let (st, v) = api(
            &s,
            &admin(),
            "POST",
            "/api/v2.0/projects/team/members",
            &bad,
        );
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(harbor_error(&v), "{v}");
    }
    let (_, members) = api(
        &s,
        &admin(),
        "GET",
        "/api/v2.0/projects/team/members",
        &Value::Null,
    );
    let group_members: Vec<&Value> = members
        .as_array()
        .map(|m| m.iter().filter(|m| m["entity_type"] == "g").collect())
        .unwrap_or_default();
    assert_eq!(group_members.len(), 1, "{members}");
    assert_eq!(group_members[0]["entity_name"], DEVS);
    assert_eq!(group_members[0]["role_id"], 2);
    let carol = basic("carol", &pw("carol"));
    assert_eq!(push_status(&s, &carol, "team/app", b"carol's layer"), 201);
    let (_, t) = token_get(&s, &carol, "repository:team/app:pull,push");
    assert!(token_access(&t).contains("push"));
    // bob is in no group: nothing.
    assert_eq!(push_status(&s, &bob, "team/app", b"bob's layer"), 403);

    // Deleting the group takes its memberships along: carol loses the
    // role at her next request.
    let (st, v) = api(&s, &admin(), "DELETE", &one, &Value::Null);
    assert_eq!(st, 200, "{v}");
    assert_eq!(status(&s, &admin(), "GET", &one), 404);
    assert_eq!(status(&s, &admin(), "DELETE", &one), 404);
    let (_, members) = api(
        &s,
        &admin(),
        "GET",
        "/api/v2.0/projects/team/members",
        &Value::Null,
    );
    assert!(
        members
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["entity_type"] != "g")),
        "{members}"
    );
    assert_eq!(
        push_status(&s, &carol, "team/app", b"carol's second layer"),
        403
    );
    let (_, h, _) = api_json(
        s.addr,
        &admin(),
        "GET",
        "/api/v2.0/usergroups",
        &Value::Null,
    );
    assert_eq!(header(&h, "x-total-count"), Some("3"));
}
