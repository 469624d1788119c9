//! End to end: project webhooks from a real `berth` (auth on) to a local
//! receiver, driven by skopeo pushes and pulls — Harbor's payload and
//! CloudEvents, the `Authorization` header and the body's HMAC signature,
//! the delivery history, who may manage policies — and an event queued by
//! a push whose answer came back just before berth was SIGKILLed, with
//! the receiver down: delivered after the restart.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_testkit::distribution::basic;
use berth_testkit::oci_layout;
use berth_testkit::server::{api_json, header, skopeo_ok, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "hooks-admin-pw";
const SECRET: &str = "Bearer hook-secret";

/// One request the receiver got: lower-cased headers and the body.
type Received = (HashMap<String, String>, Vec<u8>);

/// An HTTP receiver on `listener` that answers `200` to every request and
/// keeps them.
fn receiver(listener: TcpListener) -> Arc<Mutex<Vec<Received>>> {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut headers = HashMap::new();
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            keep.lock().expect("lock").push((headers, body));
        }
    });
    got
}

/// Waits until the receiver holds an event that `pred` accepts.
fn wait_for(
    got: &Arc<Mutex<Vec<Received>>>,
    what: &str,
    pred: impl Fn(&Received) -> bool,
) -> Received {
    let start = Instant::now();
    loop {
        if let Some(r) = got.lock().expect("lock").iter().find(|r| pred(r)) {
            return r.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {what} delivered; got {:?}",
            got.lock()
                .expect("lock")
                .iter()
                .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn body(r: &Received) -> Value {
    serde_json::from_slice(&r.1).expect("JSON body")
}

fn push(server: &TestServer, layout: &std::path::Path, dest: &str) {
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

#[test]
fn webhooks_are_delivered_signed_and_survive_a_kill() {
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    let env = [
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
        ("BERTH_WEBHOOK_ALLOW_PRIVATE", "true"),
    ];
    let mut server = TestServer::start(&data, &env);
    let admin = basic("admin", ADMIN_PW);
    let api = |server: &TestServer, cred: &str, method: &str, path: &str, body: &Value| {
        api_json(server.addr, cred, method, path, body)
    };
    let (st, _, _) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "team"}),
    );
    assert_eq!(st, 201);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = receiver(listener);
    let (st, h, err) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/projects/team/webhook/policies",
        &json!({
            "name": "ci",
            "event_types": ["PUSH_ARTIFACT", "PULL_ARTIFACT", "DELETE_ARTIFACT"],
            "targets": [
                {"type": "http", "address": format!("http://{addr}/hook"), "auth_header": SECRET},
                {"type": "http", "address": format!("http://{addr}/ce"), "payload_format": "CloudEvents"},
            ],
        }),
    );
    assert_eq!(st, 201, "{err}");
    let policy_path = header(&h, "location").expect("location").to_owned();
    let policy_id = policy_path.rsplit('/').next().expect("id").to_owned();
    let (st, _, policy) = api(&server, &admin, "GET", &policy_path, &Value::Null);
    assert_eq!(st, 200);
    assert_eq!(policy["name"], "ci");
    assert_eq!(policy["targets"][0]["auth_header"], "*****", "{policy}");
    assert_eq!(policy["enabled"], true);
    // Bad policies and callers.
    for bad in [
        json!({"name": "x", "event_types": ["NOPE"], "targets": [{"address": "http://h/"}]}),
        json!({"name": "x", "event_types": ["PUSH_ARTIFACT"], "targets": [{"address": "ftp://h/"}]}),
        json!({"name": "x", "event_types": ["PUSH_ARTIFACT"], "targets": []}),
    ] {
        let (st, _, err) = api(
            &server,
            &admin,
            "POST",
            "/api/v2.0/projects/team/webhook/policies",
            &bad,
        );
        assert_eq!(st, 400, "{bad}: {err}");
    }
    let (st, _, _) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/projects/team/webhook/policies",
        &json!({"name": "ci", "event_types": ["PUSH_ARTIFACT"], "targets": [{"address": "http://h/"}]}),
    );
    assert_eq!(st, 409, "one name per project");
    // A project holds at most 50 policies (every event reads them all).
    let (st, _, _) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "many"}),
    );
    assert_eq!(st, 201);
    let many = |i: usize| {
        api(
            &server,
            &admin,
            "POST",
            "/api/v2.0/projects/many/webhook/policies",
            &json!({"name": format!("p{i}"), "enabled": false, "event_types": ["PUSH_ARTIFACT"],
                    "targets": [{"address": "http://h/"}]}),
        )
    };
    for i in 0..50 {
        assert_eq!(many(i).0, 201, "policy {i}");
    }
    let (st, _, err) = many(50);
    assert_eq!(st, 409, "{err}");
    assert!(err.to_string().contains("the most it may"), "{err}");
    let (st, _, _) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/users",
        &json!({"username": "dev", "password": "dev-password"}),
    );
    assert_eq!(st, 201);
    let (st, _, _) = api(
        &server,
        &admin,
        "POST",
        "/api/v2.0/projects/team/members",
        &json!({"role_id": 2, "member_user": {"username": "dev"}}),
    );
    assert_eq!(st, 201);
    let (st, _, _) = api(
        &server,
        &basic("dev", "dev-password"),
        "GET",
        "/api/v2.0/projects/team/webhook/policies",
        &Value::Null,
    );
    assert_eq!(st, 403, "policies are the project administrator's");

    // A push: Harbor's payload, signed; and CloudEvents.
    let layout = work.path().join("layout");
    let image = oci_layout::write_image(&layout, "v1", "hooks", &[1500]);
    push(&server, &layout, "team/app:v1");
    let hook = wait_for(&got, "PUSH_ARTIFACT", |(h, b)| {
        h.get("authorization").is_some() && String::from_utf8_lossy(b).contains("PUSH_ARTIFACT")
    });
    assert_eq!(hook.0["authorization"], SECRET);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let sig = hook.0["x-berth-signature-256"]
        .trim_start_matches("sha256=")
        .to_owned();
    ring::hmac::verify(&key, &hook.1, &hex::decode(sig).expect("hex")).expect("signature verifies");
    let v = body(&hook);
    assert_eq!(v["type"], "PUSH_ARTIFACT");
    assert_eq!(v["operator"], "admin");
    assert_eq!(v["event_data"]["repository"]["repo_full_name"], "team/app");
    assert_eq!(v["event_data"]["repository"]["namespace"], "team");
    assert_eq!(v["event_data"]["resources"][0]["tag"], "v1");
    assert_eq!(
        v["event_data"]["resources"][0]["digest"],
        image.manifest_digest.as_str()
    );
    let ce = wait_for(&got, "a CloudEvent", |(h, _)| {
        h.get("content-type").map(String::as_str) == Some("application/cloudevents+json")
    });
    let v = body(&ce);
    assert_eq!(v["specversion"], "1.0");
    assert_eq!(v["type"], "harbor.artifact.pushed");
    assert_eq!(v["data"]["repository"]["repo_full_name"], "team/app");
    assert!(!ce.0.contains_key("authorization"));

    // A pull.
    skopeo_ok(
        &server,
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("admin:{ADMIN_PW}"),
            &format!("docker://{}/team/app:v1", server.url()),
        ],
    );
    wait_for(&got, "PULL_ARTIFACT", |(_, b)| {
        String::from_utf8_lossy(b).contains("PULL_ARTIFACT")
    });

    // The receiver goes away; a push is answered; berth is killed at once.
    // The event was in the queue before the answer: delivered after the
    // restart, once the receiver is back.
    drop(got);
    let down = TcpListener::bind("127.0.0.1:0").expect("bind");
    let down_addr = down.local_addr().expect("addr");
    drop(down);
    let (st, _, err) = api(
        &server,
        &admin,
        "PUT",
        &policy_path,
        &json!({
            "name": "ci",
            "event_types": ["PUSH_ARTIFACT"],
            "targets": [{"address": format!("http://{down_addr}/hook"), "auth_header": SECRET}],
        }),
    );
    assert_eq!(st, 200, "{err}");
    let layout2 = work.path().join("layout2");
    oci_layout::write_image(&layout2, "v1", "hooks-two", &[1700]);
    push(&server, &layout2, "team/app:v2");
    server.kill9();
    let back = TcpListener::bind(down_addr).expect("the receiver's address again");
    let got = receiver(back);
    server.restart();
    let hook = wait_for(&got, "the push queued before the kill", |(_, b)| {
        let s = String::from_utf8_lossy(b);
        s.contains("PUSH_ARTIFACT") && s.contains("team/app:v2")
    });
    assert_eq!(hook.0["authorization"], SECRET);

    // The delivery history: successes, and the attempts that failed
    // while the receiver was down (if the deliverer got to one first).
    let (st, h, jobs) = api(
        &server,
        &admin,
        "GET",
        &format!("/api/v2.0/projects/team/webhook/jobs?policy_id={policy_id}&page_size=100"),
        &Value::Null,
    );
    assert_eq!(st, 200, "{jobs}");
    assert!(header(&h, "x-total-count").is_some());
    let jobs = jobs.as_array().expect("array");
    assert!(
        jobs.iter()
            .any(|j| j["status"] == "Success" && j["event_type"] == "PUSH_ARTIFACT"),
        "{jobs:?}"
    );
    let id: u64 = policy_id.parse().expect("numeric id");
    assert!(jobs.iter().all(|j| j["policy_id"] == id));
    let (st, _, events) = api(
        &server,
        &admin,
        "GET",
        "/api/v2.0/projects/team/webhook/events",
        &Value::Null,
    );
    assert_eq!(st, 200);
    assert!(events["event_type"]
        .as_array()
        .is_some_and(|a| a.len() == 7 && a.iter().any(|t| t == "TAG_RETENTION")));
    // Deleted with its history.
    let (st, _, _) = api(&server, &admin, "DELETE", &policy_path, &Value::Null);
    assert_eq!(st, 200);
    let (st, _, _) = api(&server, &admin, "GET", &policy_path, &Value::Null);
    assert_eq!(st, 404);
}
