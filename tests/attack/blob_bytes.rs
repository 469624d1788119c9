//! Blob bytes never cross blobs (`docs/security.md`).
//!
//! Finding: the zero-copy path looked each outgoing buffer up by address in
//! a global registry whose entries did not own their maps. A chunk could
//! unmap its blob before its registration went, another request could map
//! a different blob at the reused address and join the stale entry, and
//! that response went out with `sendfile(2)` from the first blob's file:
//! a tenant pulling her own blobs could receive another project's bytes.
//!
//! The attack: the victim's private blobs and the attacker's own blobs, of
//! the same sizes (so maps reuse each other's addresses), pulled at the
//! same time on many connections; every byte the attacker receives must be
//! her own blob's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use berth_testkit::keepalive::Conn;
use berth_testkit::server::{http, TestServer};
use berth_testkit::{content, sha256};

use super::basic;

const ADMIN_PW: &str = "attack-admin-password";
const MIB: usize = 1 << 20;

fn call(server: &TestServer, method: &str, path: &str, who: &str, body: &[u8]) -> u16 {
    let (status, _, res) = http(
        server.addr,
        method,
        path,
        &[("Authorization", who), ("Content-Type", "application/json")],
        body,
    );
    assert!(
        status < 300,
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&res)
    );
    status
}

fn push(server: &TestServer, who: &str, repo: &str, data: &[u8]) -> String {
    let d = sha256(data).to_string();
    let (status, _, body) = http(
        server.addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[
            ("Authorization", who),
            ("Content-Type", "application/octet-stream"),
        ],
        data,
    );
    assert_eq!(status, 201, "push {d}: {}", String::from_utf8_lossy(&body));
    d
}

#[test]
fn a_tenant_pulling_her_blobs_never_receives_another_projects_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
        ],
    );
    let admin = basic("admin", ADMIN_PW);
    call(
        &server,
        "POST",
        "/api/v2.0/users",
        &admin,
        br#"{"username":"mallory","password":"mallory-password"}"#,
    );
    let mallory = basic("mallory", "mallory-password");
    call(
        &server,
        "POST",
        "/api/v2.0/projects",
        &admin,
        br#"{"project_name":"victim","metadata":{"public":"false"}}"#,
    );
    call(
        &server,
        "POST",
        "/api/v2.0/projects",
        &mallory,
        br#"{"project_name":"mal","metadata":{"public":"false"}}"#,
    );
    let sizes = [MIB + 1, 4 * MIB + 7, 6 * MIB + 99];
    let blob = |owner: &str, i: usize| content(&format!("{owner} {i}"), sizes[i % sizes.len()]);
    let victim: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..6)
            .map(|i| {
                let data = blob("victim", i);
                (push(&server, &admin, "victim/app", &data), data)
            })
            .collect(),
    );
    let own: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..6)
            .map(|i| {
                let data = blob("mallory", i);
                (push(&server, &mallory, "mal/app", &data), data)
            })
            .collect(),
    );
    // The victim's blobs stay private to her.
    let (status, _, _) = http(
        server.addr,
        "GET",
        &format!("/v2/victim/app/blobs/{}", victim[0].0),
        &[("Authorization", &mallory)],
        b"",
    );
    assert_eq!(status, 403);

    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // The victim's pulls: maps of her blobs come and go all the time.
    let pullers: Vec<_> = (0..4)
        .map(|c| {
            let (victim, admin, stop) = (victim.clone(), admin.clone(), stop.clone());
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let (d, data) = &victim[i % victim.len()];
                    let res = conn.request(
                        "GET",
                        &format!("/v2/victim/app/blobs/{d}"),
                        &[("Authorization", &admin)],
                    );
                    assert_eq!(res.status, 200);
                    assert!(res.body == *data, "the victim got other bytes for {d}");
                    i += 1;
                }
            })
        })
        .collect();
    // The attacker's pulls of her own blobs, whole and ranged.
    let attackers: Vec<_> = (0..8)
        .map(|c| {
            let (own, victim, mallory) = (own.clone(), victim.clone(), mallory.clone());
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                for r in 0..80 {
                    let (d, data) = &own[(c * 5 + r) % own.len()];
                    let path = format!("/v2/mal/app/blobs/{d}");
                    let (got, want) = if r % 2 == 0 {
                        let res = conn.request("GET", &path, &[("Authorization", &mallory)]);
                        assert_eq!(res.status, 200);
                        (res.body, &data[..])
                    } else {
                        let a = (r * 7919) % (data.len() / 2);
                        let range = format!("bytes={a}-");
                        let res = conn.request(
                            "GET",
                            &path,
                            &[("Authorization", &mallory), ("Range", &range)],
                        );
                        assert_eq!(res.status, 206);
                        (res.body, &data[a..])
                    };
                    if got != want {
                        let leaked = victim.iter().any(|(_, v)| {
                            got.len() >= 4096
                                && v.windows(4096).step_by(4096).any(|w| got.starts_with(w))
                        });
                        panic!(
                            "connection {c} request {r}: {} bytes that are not blob {d}'s \
                             (victim bytes: {leaked})",
                            got.len()
                        );
                    }
                }
            })
        })
        .collect();
    let mut failed = Vec::new();
    for a in attackers {
        if let Err(e) = a.join() {
            failed.push(e);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in pullers {
        if let Err(e) = p.join() {
            failed.push(e);
        }
    }
    assert!(
        failed.is_empty(),
        "{} connections failed\n--- server stderr ---\n{}",
        failed.len(),
        server.stderr()
    );
}
