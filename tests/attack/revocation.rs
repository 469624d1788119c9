//! Revocation is immediate (issue "Day-2 operations", `docs/security.md`,
//! "Revocation takes effect on the next request"): after a password
//! change, a robot secret refresh, a disabled robot or a deleted account
//! is acknowledged, the old credential fails on the very next request —
//! Basic (even while the server's verified-credential cache holds it), an
//! access token and a refresh token issued before the change. And the
//! day-2 endpoints themselves refuse callers who may not use them.
//!
//! The cast is `tokens.rs`'s: `dev` (developer in private `team`, which
//! holds `team/app:v1`), `guest`, `mallory` (no membership).

use serde_json::{json, Value};

use super::tokens::{basic, pw, registry, Cred, Registry};

const SERVICE: &str = "berth-registry";
const READ: &str = "/v2/team/app/tags/list";

impl Registry {
    fn api(&self, method: &str, path: &str, cred: &Cred, body: &Value) -> super::Resp {
        let raw = match body {
            Value::Null => Vec::new(),
            b => b.to_string().into_bytes(),
        };
        self.send(method, path, cred, &raw)
    }

    /// A refresh token for `user:password` (`grant_type=password`,
    /// `access_type=offline`).
    fn refresh_token(&self, user: &str, password: &str) -> String {
        let form = format!(
            "grant_type=password&service={SERVICE}&username={user}&password={password}\
             &access_type=offline&scope=repository:team/app:pull"
        );
        let r = self.send("POST", "/service/token", &Cred::None, form.as_bytes());
        r.expect(200);
        r.json()["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned()
    }

    /// The status of a refresh with `rt`.
    fn refresh_status(&self, rt: &str) -> u16 {
        let form = format!(
            "grant_type=refresh_token&service={SERVICE}&refresh_token={rt}\
             &scope=repository:team/app:pull"
        );
        self.send("POST", "/service/token", &Cred::None, form.as_bytes())
            .status
    }

    fn user_id(&self, cred: &Cred) -> u64 {
        let r = self.api("GET", "/api/v2.0/users/current", cred, &Value::Null);
        r.expect(200);
        r.json()["user_id"].as_u64().expect("user_id")
    }

    fn read_status(&self, cred: &Cred) -> u16 {
        self.send("GET", READ, cred, b"").status
    }
}

#[test]
fn revocation_a_password_change_ends_the_old_password_and_its_tokens_at_once() {
    let r = registry();
    let old = pw("dev");
    // Verified once, so the server's credential cache holds the pair.
    assert_eq!(r.read_status(&old), 200);
    let token = Cred::Bearer(r.token(&old, &["repository:team/app:pull"]));
    assert_eq!(r.read_status(&token), 200);
    let rt = r.refresh_token("dev", "dev-password");
    assert_eq!(r.refresh_status(&rt), 200);
    let id = r.user_id(&old);
    let path = format!("/api/v2.0/users/{id}/password");

    // One's own password needs the old one.
    let wrong = json!({"old_password": "not-it", "new_password": "dev-password-2"});
    r.api("PUT", &path, &old, &wrong).expect(403);
    assert_eq!(r.read_status(&old), 200, "a refused change changes nothing");
    let change = json!({"old_password": "dev-password", "new_password": "dev-password-2"});
    r.api("PUT", &path, &old, &change).expect(200);

    assert_eq!(
        r.read_status(&old),
        401,
        "the old password, cached until now"
    );
    assert_eq!(
        r.read_status(&token),
        401,
        "a token issued on the old password"
    );
    assert_eq!(r.refresh_status(&rt), 401, "a refresh token issued on it");
    let new = basic("dev", "dev-password-2");
    assert_eq!(r.read_status(&new), 200);
    let token = Cred::Bearer(r.token(&new, &["repository:team/app:pull"]));
    assert_eq!(r.read_status(&token), 200);

    // An administrator resets it without the old one: the same again.
    r.api(
        "PUT",
        &path,
        &pw("admin"),
        &json!({"new_password": "dev-password-3"}),
    )
    .expect(200);
    assert_eq!(r.read_status(&new), 401);
    assert_eq!(r.read_status(&token), 401);
    assert_eq!(r.read_status(&basic("dev", "dev-password-3")), 200);
}

#[test]
fn revocation_robot_refresh_disable_and_delete_take_effect_on_the_next_request() {
    let r = registry();
    let admin = pw("admin");
    let created = r.api(
        "POST",
        "/api/v2.0/robots",
        &admin,
        &json!({"name": "ci", "duration": -1, "level": "project", "permissions": [{
            "kind": "project", "namespace": "team",
            "access": [{"resource": "repository", "action": "pull"}]}]}),
    );
    created.expect(201);
    let id = created.json()["id"].as_u64().expect("id");
    let name = created.json()["name"].as_str().expect("name").to_owned();
    let secret = created.json()["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let old = basic(&name, &secret);
    assert_eq!(r.read_status(&old), 200);
    let token = Cred::Bearer(r.token(&old, &["repository:team/app:pull"]));
    assert_eq!(r.read_status(&token), 200);
    let path = format!("/api/v2.0/robots/{id}");

    // Refresh: the new secret is shown once; the old one and its token end.
    let fresh = r.api("PATCH", &path, &admin, &json!({}));
    fresh.expect(200);
    let secret2 = fresh.json()["secret"].as_str().expect("secret").to_owned();
    assert_ne!(secret2, secret);
    assert_eq!(r.read_status(&old), 401);
    assert_eq!(r.read_status(&token), 401);
    let new = basic(&name, &secret2);
    assert_eq!(r.read_status(&new), 200);
    let token = Cred::Bearer(r.token(&new, &["repository:team/app:pull"]));
    let got = r.api("GET", &path, &admin, &Value::Null);
    got.expect(200);
    assert_eq!(got.json()["disable"], false);
    assert!(got.json().get("secret").is_none(), "never shown again");

    // Disabled: refused, its token too; enabled: back.
    r.api("PUT", &path, &admin, &json!({"disable": true}))
        .expect(200);
    assert_eq!(r.read_status(&new), 401);
    assert_eq!(r.read_status(&token), 401);
    r.api("PUT", &path, &admin, &json!({"disable": false}))
        .expect(200);
    assert_eq!(r.read_status(&new), 200);

    // Its permissions change with the next request too.
    r.api(
        "PUT",
        &path,
        &admin,
        &json!({"permissions": [{"kind": "project", "namespace": "team",
            "access": [{"resource": "repository", "action": "push"}]}]}),
    )
    .expect(200);
    assert_eq!(r.read_status(&new), 403, "push only: no pull any more");
    r.api(
        "PUT",
        &path,
        &admin,
        &json!({"permissions": [{"kind": "project", "namespace": "other",
            "access": [{"resource": "repository", "action": "pull"}]}]}),
    )
    .expect(400);

    r.api("DELETE", &path, &admin, &Value::Null).expect(200);
    assert_eq!(r.read_status(&new), 401);
    r.api("GET", &path, &admin, &Value::Null).expect(404);
}

#[test]
fn revocation_a_deleted_user_is_refused_at_once_and_loses_their_memberships() {
    let r = registry();
    let dev = pw("dev");
    assert_eq!(r.read_status(&dev), 200);
    let token = Cred::Bearer(r.token(&dev, &["repository:team/app:pull"]));
    let id = r.user_id(&dev);
    let admin = pw("admin");
    r.api(
        "DELETE",
        &format!("/api/v2.0/users/{id}"),
        &admin,
        &Value::Null,
    )
    .expect(200);
    assert_eq!(r.read_status(&dev), 401);
    assert_eq!(r.read_status(&token), 401);
    let members = r.api(
        "GET",
        "/api/v2.0/projects/team/members",
        &admin,
        &Value::Null,
    );
    members.expect(200);
    let names: Vec<Value> = members
        .json()
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["entity_name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("admin"), json!("guest")],
        "team's creator and guest"
    );
    // A new account of the same name is a new account: no old membership
    // and no old token comes back with it.
    r.api(
        "POST",
        "/api/v2.0/users",
        &admin,
        &json!({"username": "dev", "password": "dev-password"}),
    )
    .expect(201);
    assert_eq!(r.read_status(&dev), 403);
    assert_eq!(r.read_status(&token), 401);
}

#[test]
fn revocation_day2_endpoints_refuse_those_who_may_not_use_them() {
    let r = registry();
    let (admin, dev, guest, mallory) = (pw("admin"), pw("dev"), pw("guest"), pw("mallory"));
    let dev_id = r.user_id(&dev);
    let user = format!("/api/v2.0/users/{dev_id}");
    // Another user's record is not even there for mallory.
    r.api("GET", &user, &mallory, &Value::Null).expect(404);
    r.api("PUT", &user, &mallory, &json!({"email": "m@evil"}))
        .expect(404);
    r.api(
        "PUT",
        &format!("{user}/password"),
        &mallory,
        &json!({"new_password": "owned-by-mallory"}),
    )
    .expect(404);
    r.api("DELETE", &user, &mallory, &Value::Null).expect(403);
    let mallory_id = r.user_id(&mallory);
    r.api(
        "PUT",
        &format!("/api/v2.0/users/{mallory_id}/sysadmin"),
        &mallory,
        &json!({"sysadmin_flag": true}),
    )
    .expect(403);
    // A user edits their own profile; the administrator anyone's.
    r.api("PUT", &user, &dev, &json!({"email": "dev@example.org"}))
        .expect(200);
    let got = r.api("GET", &user, &admin, &Value::Null);
    got.expect(200);
    assert_eq!(got.json()["email"], "dev@example.org");
    // Project deletion and member changes: project administrators only.
    r.api("DELETE", "/api/v2.0/projects/team", &dev, &Value::Null)
        .expect(403);
    let refused = r.api("DELETE", "/api/v2.0/projects/team", &mallory, &Value::Null);
    refused.expect(403);
    assert!(refused
        .text()
        .contains("does not exist or mallory may not see it"));
    let members = r.api(
        "GET",
        "/api/v2.0/projects/team/members",
        &admin,
        &Value::Null,
    );
    let guest_mid = members
        .json()
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["entity_name"] == "guest")
        .and_then(|m| m["id"].as_u64())
        .expect("guest's membership");
    let mpath = format!("/api/v2.0/projects/team/members/{guest_mid}");
    r.api("PUT", &mpath, &guest, &json!({"role_id": 1}))
        .expect(403);
    r.api("GET", &mpath, &mallory, &Value::Null).expect(404);
    r.api("GET", &mpath, &guest, &Value::Null).expect(200);
    // A robot of team is team's administrators' business.
    let created = r.api(
        "POST",
        "/api/v2.0/robots",
        &admin,
        &json!({"name": "ci", "permissions": [{"kind": "project", "namespace": "team",
            "access": [{"resource": "repository", "action": "pull"}]}]}),
    );
    created.expect(201);
    let rpath = format!("/api/v2.0/robots/{}", created.json()["id"]);
    r.api("PATCH", &rpath, &dev, &json!({})).expect(403);
    r.api("PATCH", &rpath, &mallory, &json!({})).expect(404);
    r.api("DELETE", &rpath, &mallory, &Value::Null).expect(404);

    // A project holding repositories is not deleted (Harbor's 412); an
    // empty one is, with its robots and members.
    r.api("DELETE", "/api/v2.0/projects/team", &admin, &Value::Null)
        .expect(412);
    assert_eq!(r.read_status(&dev), 200);
    r.api(
        "POST",
        "/api/v2.0/projects",
        &mallory,
        &json!({"project_name": "scratch"}),
    )
    .expect(201);
    r.api(
        "DELETE",
        "/api/v2.0/projects/scratch",
        &mallory,
        &Value::Null,
    )
    .expect(200);
    r.api("GET", "/api/v2.0/projects/scratch", &admin, &Value::Null)
        .expect(404);
}
