//! SIGKILL of the real `berth` binary while blobs are pushed (single POST
//! and POST+PUT, some POST+PATCH+PUT), at random moments, at least 25
//! times on one data directory. After each restart every blob that was in
//! flight at the kill is pushed again, and every blob of the cycle reads
//! back bit for bit; at the end every blob of every cycle reads back and
//! `berthctl fsck --verify-blobs` is clean.
//!
//! What it guards: a kill between the store commit of an upload and its
//! index batch leaves the staged bytes' session behind; recovery must not
//! cut back a file that is also a published blob (issue #10, problem 1),
//! and the re-push must not index a damaged blob.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_engine::Digest;
use berth_testkit::server::{http, TestServer};
use berth_testkit::{berthctl, content, sha256};

const CYCLES: usize = 28;
const PUSHERS: usize = 3;
const REPO: &str = "kill/staging";

/// A small PRNG (xorshift64*) seeded from the OS, printed for reruns.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = match std::env::var("BERTH_KILL_SEED") {
            Ok(s) => s.parse().expect("BERTH_KILL_SEED is a number"),
            Err(_) => {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).expect("random seed");
                u64::from_le_bytes(b) | 1
            }
        };
        eprintln!("staging_kill: seed {seed} (BERTH_KILL_SEED to rerun)");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One request that may fail (the server may be killed mid-request):
/// status and `Location`, or the I/O error.
fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Option<String>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || {
        let start: String = text.chars().take(200).collect();
        std::io::Error::other(format!("bad response {start:?}"))
    };
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let location = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .map(|l| match l.find("/v2/") {
            Some(i) => l[i..].to_owned(),
            None => l,
        });
    Ok((status, location))
}

fn with_digest(path: &str, d: &Digest) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}digest={d}")
}

/// Pushes `blob` one of three ways; `Ok(true)` once acknowledged (201).
fn push(addr: SocketAddr, how: u64, blob: &[u8]) -> std::io::Result<bool> {
    let d = sha256(blob);
    let start = format!("/v2/{REPO}/blobs/uploads/");
    match how % 3 {
        // Single POST.
        0 => Ok(try_http(addr, "POST", &with_digest(&start, &d), &[], blob)?.0 == 201),
        // POST, then PUT with the body.
        1 => {
            let (s, loc) = try_http(addr, "POST", &start, &[], b"")?;
            let Some(loc) = loc.filter(|_| s == 202) else {
                return Ok(false);
            };
            Ok(try_http(addr, "PUT", &with_digest(&loc, &d), &[], blob)?.0 == 201)
        }
        // POST, PATCH half, PUT the rest.
        _ => {
            let (s, loc) = try_http(addr, "POST", &start, &[], b"")?;
            let Some(loc) = loc.filter(|_| s == 202) else {
                return Ok(false);
            };
            let half = blob.len() / 2;
            let range = format!("0-{}", half.saturating_sub(1));
            let (s, loc2) = try_http(
                addr,
                "PATCH",
                &loc,
                &[("Content-Range", &range)],
                &blob[..half],
            )?;
            if s != 202 {
                return Ok(false);
            }
            let loc = loc2.unwrap_or(loc);
            Ok(try_http(addr, "PUT", &with_digest(&loc, &d), &[], &blob[half..])?.0 == 201)
        }
    }
}

fn blob(cycle: usize, pusher: usize, i: usize, len: u64) -> Vec<u8> {
    content(&format!("staging-kill-{cycle}-{pusher}-{i}"), len as usize)
}

fn read_back(server: &TestServer, blob: &[u8], what: &str) {
    let d = sha256(blob);
    let (status, _, got) = http(
        server.addr,
        "GET",
        &format!("/v2/{REPO}/blobs/{d}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{what}: GET {d}\n{}", server.stderr());
    assert!(
        got == blob,
        "{what}: {d} read back {} bytes that differ from the {} pushed",
        got.len(),
        blob.len()
    );
}

/// A blob whose push started this cycle, and whether it was acknowledged.
type Push = (Vec<u8>, bool);
#[test]
fn sigkill_while_pushing_loses_and_damages_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(dir.path(), &[]);
    let mut rng = Rng::new();
    // Every blob pushed (acknowledged or re-pushed): checked at the end.
    let mut all: Vec<Vec<u8>> = Vec::new();
    let mut kills_mid_push = 0;
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let pushed: Arc<Mutex<Vec<Push>>> = Arc::default();
        let threads: Vec<_> = (0..PUSHERS)
            .map(|p| {
                let (stop, pushed, addr) = (stop.clone(), pushed.clone(), server.addr);
                let mut rng = Rng(rng.next() | 1);
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let len = 1 + rng.below(400_000);
                        let b = blob(cycle, p, i, len);
                        let at = {
                            let mut v = pushed.lock().expect("lock");
                            v.push((b.clone(), false));
                            v.len() - 1
                        };
                        match push(addr, rng.next(), &b) {
                            Ok(true) => pushed.lock().expect("lock")[at].1 = true,
                            Ok(false) => {}
                            Err(_) => break, // killed
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30 + rng.below(400)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("pusher thread");
        }
        server.restart();
        let pushed = std::mem::take(&mut *pushed.lock().expect("lock"));
        let in_flight: Vec<&Vec<u8>> = pushed.iter().filter(|(_, a)| !a).map(|(b, _)| b).collect();
        if !in_flight.is_empty() {
            kills_mid_push += 1;
        }
        // Every blob in flight at the kill is pushed again, as a client
        // would; a single POST (the re-push of stored bytes dedups).
        for b in &in_flight {
            let d = sha256(b);
            let (status, _, body) = http(
                server.addr,
                "POST",
                &format!("/v2/{REPO}/blobs/uploads/?digest={d}"),
                &[("Content-Type", "application/octet-stream")],
                b,
            );
            assert_eq!(
                status,
                201,
                "cycle {cycle}: re-push of {d}: {}\n{}",
                String::from_utf8_lossy(&body),
                server.stderr()
            );
        }
        for (b, _) in &pushed {
            read_back(&server, b, &format!("cycle {cycle}"));
        }
        eprintln!(
            "cycle {cycle}: {} pushes, {} in flight at the kill",
            pushed.len(),
            in_flight.len()
        );
        all.extend(pushed.into_iter().map(|(b, _)| b));
    }
    assert!(
        kills_mid_push >= CYCLES / 2,
        "only {kills_mid_push} of {CYCLES} kills hit a push in flight"
    );
    for b in &all {
        read_back(&server, b, "end");
    }
    server.stop();
    let (code, stdout, stderr) = berthctl(dir.path(), &["fsck", "--verify-blobs"]);
    let text = format!("{stdout}{stderr}");
    assert_eq!(code, 0, "fsck --verify-blobs: {text}");
    eprintln!("{text}");
}
