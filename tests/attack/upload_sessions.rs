//! Finding 12: upload sessions were unbounded per user until their 24 h
//! expiry, so one account could hold any number of session records and
//! files. Now each account (or, unauthenticated, each repository) holds at
//! most `BERTH_MAX_UPLOADS_PER_USER` open sessions; one more is `429
//! TOOMANYREQUESTS`, other accounts are not affected, and finishing or
//! cancelling a session frees its slot. The other half of the finding (a
//! PATCH racing a commit) is an engine ordering, tested in
//! `engine/tests/api.rs` (`concurrent_appends_never_lose_an_acknowledged_chunk`).
//! See `docs/security.md`, "Upload sessions".

use berth_testkit::server::{header, http, TestServer};
use serde_json::{json, Value};

use super::basic;

const ADMIN_PW: &str = "attack-admin-pw";
const LIMIT: usize = 4;

fn post_json(s: &TestServer, auth: &str, path: &str, body: Value) {
    let (st, _, b) = http(
        s.addr,
        "POST",
        path,
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(st, 201, "POST {path}: {}", String::from_utf8_lossy(&b));
}

/// `POST /v2/<repo>/blobs/uploads/` as `auth`: status, Location, body.
fn start(s: &TestServer, auth: &str, repo: &str) -> (u16, Option<String>, Vec<u8>) {
    let (st, h, b) = http(
        s.addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[("Authorization", auth)],
        b"",
    );
    (st, header(&h, "location").map(str::to_owned), b)
}

#[test]
fn one_account_cannot_hold_unbounded_upload_sessions() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let limit = LIMIT.to_string();
    let s = TestServer::start(
        &tmp.path().join("data"),
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
            ("BERTH_MAX_UPLOADS_PER_USER", limit.as_str()),
        ],
    );
    let admin = basic("admin", ADMIN_PW);
    for user in ["mallory", "alice"] {
        post_json(
            &s,
            &admin,
            "/api/v2.0/users",
            json!({"username": user, "password": format!("{user}-pw-123")}),
        );
        post_json(
            &s,
            &admin,
            "/api/v2.0/projects",
            json!({"project_name": user, "metadata": {"public": "false"}}),
        );
        post_json(
            &s,
            &admin,
            &format!("/api/v2.0/projects/{user}/members"),
            json!({"role_id": 2, "member_user": {"username": user}}),
        );
    }
    let mallory = basic("mallory", "mallory-pw-123");
    let alice = basic("alice", "alice-pw-123");

    // The bound holds across repositories: it is the account's.
    let mut sessions = Vec::new();
    for i in 0..LIMIT {
        let (st, loc, b) = start(&s, &mallory, &format!("mallory/r{}", i % 2));
        assert_eq!(st, 202, "session {i}: {}", String::from_utf8_lossy(&b));
        sessions.push(loc.expect("Location"));
    }
    let (st, _, b) = start(&s, &mallory, "mallory/r9");
    assert_eq!(
        st,
        429,
        "one past the bound: {}",
        String::from_utf8_lossy(&b)
    );
    let v: Value = serde_json::from_slice(&b).expect("OCI error JSON");
    assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS", "{v}");

    // Another account is not affected.
    let (st, _, b) = start(&s, &alice, "alice/r");
    assert_eq!(st, 202, "alice: {}", String::from_utf8_lossy(&b));

    // Cancelling one frees its slot, and only one.
    let cancel = sessions.pop().expect("a session");
    let path = cancel
        .split_once("/v2/")
        .map(|(_, p)| format!("/v2/{p}"))
        .expect("Location path");
    let (st, _, b) = http(
        s.addr,
        "DELETE",
        &path,
        &[("Authorization", mallory.as_str())],
        b"",
    );
    assert_eq!(st, 204, "cancel: {}", String::from_utf8_lossy(&b));
    let (st, _, _) = start(&s, &mallory, "mallory/r0");
    assert_eq!(st, 202, "a cancelled session's slot is free again");
    let (st, _, _) = start(&s, &mallory, "mallory/r0");
    assert_eq!(st, 429, "still bounded");
}
