//! SIGKILL during online GC. A child process pushes images (blobs, then a
//! tagged manifest; every other image is untagged again, turning its blobs
//! into garbage) while a second thread runs GC with no grace window in a
//! tight loop; it prints `REF <repo> <tag> <digest>…` once a tagged
//! manifest is acknowledged. The parent kills it at a random moment,
//! reopens: fsck finds nothing (interrupted deletions and orphan files are
//! notes, not findings), every acknowledged tagged image's blobs read back
//! with the right hash; `fsck_repair` then leaves a clean check. Repeated on
//! the same data directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_engine::fsck::FsckOptions;
use berth_engine::{Digest, GcOptions, ManifestPut, Reference, RepoName, Tag};
use berth_testkit::{content, open_engine, sha256};

const CHILD_ENV: &str = "BERTH_GC_CRASH_CHILD";
const ROUNDS: usize = 8;

fn layer(i: usize) -> Vec<u8> {
    content(&format!("gc-crash-layer-{i}"), 500 + (i * 4099) % 60_000)
}

fn child(dir: &Path, round: usize) {
    let engine = Arc::new(open_engine(dir));
    let stop = Arc::new(AtomicBool::new(false));
    let gc = {
        let (e, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = e.gc(&GcOptions {
                    grace: Duration::ZERO,
                    delete_untagged: true,
                    ..GcOptions::default()
                });
            }
        })
    };
    let repo = RepoName::parse("crash/gc").expect("repo");
    let out = std::io::stdout();
    for i in 0..400usize {
        let layers: Vec<usize> = vec![(round * 7 + i) % 16, (round * 3 + i * 5) % 16];
        let mut blobs = Vec::new();
        for &l in &layers {
            let data = layer(l);
            let d = sha256(&data);
            engine.put_blob(&repo, &d, &data).expect("put blob");
            blobs.push(d);
        }
        let tag = Tag::parse(&format!("r{round}-i{i}")).expect("tag");
        let body = format!("{{\"round\":{round},\"i\":{i},\"layers\":{layers:?}}}").into_bytes();
        let put = ManifestPut {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body,
            blobs: blobs.clone(),
            tags: vec![tag.clone()],
            ..ManifestPut::default()
        };
        let Ok(md) = engine.put_manifest(&repo, put) else {
            continue; // GC took a blob first: a failed push, retried next time
        };
        if i.is_multiple_of(2) {
            engine.delete_tag(&repo, &tag).expect("untag");
            let _ = md;
            continue;
        }
        let mut o = out.lock();
        let ds: Vec<String> = blobs.iter().map(|d| d.to_string()).collect();
        writeln!(o, "REF {tag} {}", ds.join(" ")).expect("stdout");
        o.flush().expect("flush");
    }
    stop.store(true, Ordering::Relaxed);
    gc.join().expect("gc thread");
}

#[test]
fn gc_crash_child_entry() {
    // Runs only as the child of `sigkill_during_gc_loses_no_referenced_blob`.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let round = std::env::var("BERTH_GC_CRASH_ROUND")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        child(Path::new(&dir), round);
    }
}

#[test]
fn sigkill_during_gc_loses_no_referenced_blob() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = RepoName::parse("crash/gc").expect("repo");
    let mut acked: BTreeMap<String, Vec<Digest>> = BTreeMap::new();
    let mut seed = u64::from_le_bytes(
        sha256(b"gc-crash").as_str().as_bytes()[7..15]
            .try_into()
            .expect("8 bytes"),
    );
    for round in 0..ROUNDS {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let kill_after = Duration::from_millis(300 + (seed >> 33) % 1500);
        let exe = std::env::current_exe().expect("test exe");
        let mut c = Command::new(exe)
            .args([
                "--exact",
                "gc_crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("BERTH_GC_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = c.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        let deadline = Instant::now() + kill_after;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill(); // SIGKILL
        c.wait().expect("reap child");
        for line in reader.join().expect("reader") {
            let mut parts = line.split_whitespace();
            if parts.next() == Some("REF") {
                let tag = parts.next().expect("tag").to_owned();
                let ds = parts.map(|d| Digest::parse(d).expect("digest")).collect();
                acked.insert(tag, ds);
            }
        }

        let e = open_engine(dir.path());
        let report = e.fsck(FsckOptions { verify_blobs: true }).expect("fsck");
        assert!(
            report.findings.is_empty(),
            "round {round}: {:?}",
            report.findings
        );
        for (tag, ds) in &acked {
            let m = e
                .get_manifest(&repo, &Reference::Tag(Tag::parse(tag).expect("tag")))
                .expect("get")
                .unwrap_or_else(|| panic!("round {round}: acknowledged image {tag} lost"));
            assert!(!m.body.is_empty());
            for d in ds {
                let (_, data) = e
                    .read_blob(&repo, d, None)
                    .unwrap_or_else(|err| panic!("round {round}: {tag} blob {d}: {err}"));
                assert_eq!(&sha256(data.as_ref()), d);
            }
        }
        let (_, repaired) = e.fsck_repair(FsckOptions::default()).expect("repair");
        let after = e.fsck(FsckOptions::default()).expect("fsck after repair");
        assert!(
            after.findings.is_empty() && after.unindexed_blobs.is_empty(),
            "{after:?}"
        );
        assert!(after.interrupted_deletions.is_empty(), "{repaired:?}");
    }
    assert!(!acked.is_empty(), "the child acknowledged nothing");
}
