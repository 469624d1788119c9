//! Blob GETs under concurrency, end to end: a real `berth` process serves
//! many distinct blobs (4 bytes to 9 MiB, most over one 4 MiB chunk) to
//! many keep-alive connections at once, whole and in ranges, while every
//! response's map is dropped and new maps land at the addresses old ones
//! had. Every body must be exactly the bytes asked for: a whole body hashes
//! to its digest, a range equals that slice of the blob.
//!
//! This is the test of `server/src/sendfile.rs`'s soundness: a chunk that
//! went out with `sendfile(2)` from the wrong file (another blob mapped at
//! a reused address) would fail it.

use std::sync::Arc;
use std::thread;

use berth_testkit::keepalive::Conn;
use berth_testkit::server::{http, TestServer};
use berth_testkit::{content, sha256};

const MIB: usize = 1 << 20;
const SIZES: [usize; 8] = [
    4,
    4096,
    MIB - 1,
    MIB + 1,
    3 * MIB + 17,
    4 * MIB,
    4 * MIB + 5,
    9 * MIB + 333,
];

/// Monolithic upload; returns the digest.
fn push(server: &TestServer, repo: &str, data: &[u8]) -> String {
    let d = sha256(data).to_string();
    let (status, _, body) = http(
        server.addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(status, 201, "push {d}: {}", String::from_utf8_lossy(&body));
    d
}

/// A tiny deterministic generator (xorshift), one per connection.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn concurrent_full_and_ranged_blob_gets_return_exactly_their_bytes() {
    const BLOBS: usize = 24;
    const CONNECTIONS: usize = 12;
    const REQUESTS: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let blobs: Arc<Vec<(String, String, Vec<u8>)>> = Arc::new(
        (0..BLOBS)
            .map(|i| {
                let repo = format!("conc/r{}", i % 3);
                let data = content(&format!("blob {i}"), SIZES[i % SIZES.len()]);
                let d = push(&server, &repo, &data);
                (repo, d, data)
            })
            .collect(),
    );
    let addr = server.addr;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let blobs = blobs.clone();
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1));
                let mut conn = Conn::open(addr);
                let mut bytes = 0usize;
                for r in 0..REQUESTS {
                    let (repo, d, data) = &blobs[rng.below(BLOBS)];
                    let path = format!("/v2/{repo}/blobs/{d}");
                    let what = format!("connection {c} request {r}: GET {path}");
                    if rng.below(3) == 0 || data.len() < 2 {
                        let res = conn.request("GET", &path, &[]);
                        assert_eq!(res.status, 200, "{what}");
                        assert_eq!(res.header("docker-content-digest"), Some(d.as_str()));
                        assert_eq!(res.body.len(), data.len(), "{what}: length");
                        assert_eq!(&sha256(&res.body).to_string(), d, "{what}: digest");
                        bytes += res.body.len();
                    } else {
                        // A range that often crosses a chunk boundary.
                        let a = rng.below(data.len() - 1);
                        let b = a + rng.below((data.len() - a).min(6 * MIB));
                        let range = format!("bytes={a}-{b}");
                        let res = conn.request("GET", &path, &[("Range", &range)]);
                        assert_eq!(res.status, 206, "{what} {range}");
                        assert_eq!(
                            res.header("content-range"),
                            Some(format!("bytes {a}-{b}/{}", data.len()).as_str()),
                            "{what} {range}"
                        );
                        assert!(
                            res.body == data[a..=b],
                            "{what} {range}: not the blob's bytes (got {} bytes)",
                            res.body.len()
                        );
                        bytes += res.body.len();
                    }
                }
                bytes
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.join().unwrap_or_else(|_| {
            panic!(
                "a connection failed\n--- server stderr ---\n{}",
                server.stderr()
            )
        });
    }
    assert!(total > 0);
}
