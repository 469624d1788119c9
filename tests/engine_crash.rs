//! Crash safety by killing real processes.
//!
//! The parent re-runs this test binary as a child (`BERTH_CRASH_CHILD=dir`)
//! that drives uploads, appends, commits and manifest puts against an engine
//! in `dir`, printing a line to stdout after each acknowledged operation.
//! The parent SIGKILLs the child at a random moment, reopens the engine and
//! checks: every acknowledged commit is present with bytes hashing to its
//! digest; every acknowledged upload offset is durable and can be resumed to
//! completion; no blob is visible whose content is incomplete or wrong.
//! Then it repeats on the same data directory, many times.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_engine::fsck::FsckOptions;
use berth_engine::{Algorithm, Digest, ManifestPut, Reference, RepoName, Tag};
use berth_testkit::{content, open_engine, sha256};

const CHILD_ENV: &str = "BERTH_CRASH_CHILD";
const ROUNDS: usize = 25;

/// Size of the content of upload `seed`: a mix of tiny and multi-chunk blobs.
fn size_of(seed: &str) -> usize {
    let h = sha256(seed.as_bytes());
    let b = u16::from_str_radix(&h.hex()[..4], 16).unwrap_or(0) as usize;
    match b % 4 {
        0 => b % 97,
        1 => 4096 + b,
        2 => 300_000 + b * 7,
        _ => 2_000_000 + b * 31,
    }
}

const CHUNK: usize = 128 * 1024;

/// The child's workload. Never returns normally while the parent wants it
/// killed: it loops until killed or until `limit` uploads are done.
fn child(dir: &Path, round: usize) {
    let engine = open_engine(dir);
    let out = std::io::stdout();
    let say = |line: String| {
        let mut o = out.lock();
        writeln!(o, "{line}").expect("stdout");
        o.flush().expect("flush stdout");
    };
    let repo = RepoName::parse(&format!("crash/r{}", round % 3)).expect("repo");
    for i in 0.. {
        let seed = format!("round{round}-blob{i}");
        let data = content(&seed, size_of(&seed));
        let digest = sha256(&data);
        let st = engine
            .begin_upload(&repo, Algorithm::Sha256)
            .expect("begin");
        say(format!("BEGIN {repo} {} {seed}", st.id));
        let mut offset = 0;
        for chunk in data.chunks(CHUNK) {
            let mut w = engine
                .upload_writer(&repo, &st.id, Some(offset))
                .expect("writer");
            w.write(chunk).expect("write");
            let s = w.commit().expect("commit append");
            offset = s.offset;
            say(format!("APPEND {} {offset}", st.id));
        }
        // Leave every third upload open for the parent to resume.
        if i % 3 == 2 {
            continue;
        }
        let info = engine
            .complete_upload(&repo, &st.id, &digest, Some(data.len() as u64))
            .expect("complete");
        say(format!(
            "COMMIT {repo} {} {} {}",
            st.id, info.digest, info.size
        ));
        if i % 2 == 0 {
            let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
            let cdigest = sha256(&config);
            engine
                .put_blob(&repo, &cdigest, &config)
                .expect("config blob");
            let body = format!(
                "{{\"schemaVersion\":2,\"config\":\"{cdigest}\",\"layers\":[\"{digest}\"]}}"
            );
            // Unique per round: a tag moved by a commit whose ack was lost to the
            // kill would otherwise contradict an older acknowledged value.
            let tag = Tag::parse(&format!("t{round}-{i}")).expect("tag");
            let m = engine
                .put_manifest(
                    &repo,
                    ManifestPut {
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        body: body.into_bytes(),
                        blobs: vec![cdigest, digest.clone()],
                        tags: vec![tag.clone()],
                        ..Default::default()
                    },
                )
                .expect("manifest");
            say(format!("MANIFEST {repo} {m} {tag}"));
        }
    }
}

#[test]
fn crash_child_entry() {
    // Runs only when spawned by `kill_at_random_points`.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let round = std::env::var("BERTH_CRASH_ROUND")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        child(Path::new(&dir), round);
    }
}

#[derive(Default)]
struct Acked {
    /// upload id -> (repo, seed, acknowledged offset)
    uploads: HashMap<String, (String, String, u64)>,
    /// (repo, digest) -> size
    commits: BTreeMap<(String, String), u64>,
    /// (repo, tag) -> manifest digest
    manifests: BTreeMap<(String, String), String>,
}

impl Acked {
    fn record(&mut self, line: &str) {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["BEGIN", repo, id, seed] => {
                self.uploads
                    .insert(id.to_string(), (repo.to_string(), seed.to_string(), 0));
            }
            ["APPEND", id, off] => {
                if let Some(u) = self.uploads.get_mut(*id) {
                    u.2 = off.parse().expect("offset");
                }
            }
            ["COMMIT", repo, id, digest, size] => {
                self.commits.insert(
                    (repo.to_string(), digest.to_string()),
                    size.parse().expect("size"),
                );
                self.uploads.remove(*id);
            }
            ["MANIFEST", repo, digest, tag] => {
                self.manifests
                    .insert((repo.to_string(), tag.to_string()), digest.to_string());
            }
            _ => panic!("unexpected child line {line:?}"),
        }
    }
}

fn run_child(dir: &Path, round: usize, kill_after: Duration, acked: &mut Acked) {
    let exe = std::env::current_exe().expect("test exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env("BERTH_CRASH_ROUND", round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + kill_after;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(line) => record_line(acked, &line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // SIGKILL: no destructors, no flushes, no graceful anything.
    child.kill().expect("kill child");
    child.wait().expect("reap child");
    reader.join().expect("reader thread");
    // Lines written before the kill were acknowledged.
    for line in rx.try_iter() {
        record_line(acked, &line);
    }
}

fn record_line(acked: &mut Acked, line: &str) {
    // libtest prints its own lines ("running 1 test", ...); ours are uppercase verbs.
    if line.starts_with(|c: char| c.is_ascii_uppercase())
        && ["BEGIN ", "APPEND ", "COMMIT ", "MANIFEST "]
            .iter()
            .any(|p| line.starts_with(p))
    {
        acked.record(line);
    }
}

fn verify(dir: &Path, acked: &mut Acked) {
    let engine = open_engine(dir);
    let report = engine
        .fsck(FsckOptions { verify_blobs: true })
        .expect("fsck");
    assert!(
        report.findings.is_empty(),
        "fsck after crash: {:?}",
        report.findings
    );
    for ((repo, digest), size) in &acked.commits {
        let repo = RepoName::parse(repo).expect("repo");
        let digest = Digest::parse(digest).expect("digest");
        let (info, data) = engine
            .read_blob(&repo, &digest, None)
            .unwrap_or_else(|e| panic!("acknowledged blob {digest} in {repo} lost: {e}"));
        assert_eq!(info.size, *size, "size of {digest}");
        assert_eq!(sha256(data.as_ref()), digest, "bytes of {digest} corrupted");
    }
    for ((repo, tag), digest) in &acked.manifests {
        let repo = RepoName::parse(repo).expect("repo");
        let m = engine
            .get_manifest(&repo, &Reference::Tag(Tag::parse(tag).expect("tag")))
            .expect("get manifest")
            .unwrap_or_else(|| panic!("acknowledged manifest {repo}:{tag} lost"));
        assert_eq!(m.digest.to_string(), *digest);
    }
    // Every blob the store holds and the index knows is complete and correct:
    // nothing partial ever becomes visible.
    for d in engine.store().list().expect("list store") {
        if let Some(rec) = engine.blob_record(&d).expect("blob record") {
            let data = engine.store().get(&d, None).expect("read stored blob");
            assert_eq!(data.len() as u64, rec.size, "stored size of {d}");
            assert_eq!(
                Digest::of(d.algorithm(), data.as_ref()),
                d,
                "stored bytes of {d}"
            );
        }
    }
    // Every acknowledged upload offset is durable and resumable to completion.
    let open: Vec<(String, (String, String, u64))> = acked.uploads.drain().collect();
    for (id, (repo, seed, off)) in open {
        let repo = RepoName::parse(&repo).expect("repo");
        let data = content(&seed, size_of(&seed));
        let digest = sha256(&data);
        let status = match engine.upload_status(&repo, &id) {
            Ok(s) => s,
            Err(e) => {
                // Completed just before the kill, its COMMIT line unsent: then
                // the blob must be there.
                let info = engine
                    .stat_blob(&repo, &digest)
                    .expect("stat")
                    .unwrap_or_else(|| panic!("acknowledged upload {id} (offset {off}) lost: {e}"));
                acked
                    .commits
                    .insert((repo.to_string(), digest.to_string()), info.size);
                continue;
            }
        };
        assert!(
            status.offset >= off,
            "upload {id}: durable offset {} behind acknowledged {off}",
            status.offset
        );
        let mut w = engine
            .upload_writer(&repo, &id, Some(status.offset))
            .expect("resume writer");
        w.write(&data[status.offset as usize..])
            .expect("resume write");
        let info = w
            .complete(&digest, Some(data.len() as u64))
            .unwrap_or_else(|e| panic!("resuming upload {id}: {e}"));
        acked
            .commits
            .insert((repo.to_string(), info.digest.to_string()), info.size);
    }
}

#[test]
fn kill_at_random_points() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = Acked::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..ROUNDS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = Duration::from_millis(30 + rng % 400);
        run_child(dir.path(), round, kill_after, &mut acked);
        verify(dir.path(), &mut acked);
    }
    eprintln!(
        "{ROUNDS} kills: {} acknowledged commits, {} manifests verified",
        acked.commits.len(),
        acked.manifests.len()
    );
    assert!(
        acked.commits.len() > ROUNDS,
        "the children acknowledged too little work to test anything ({} commits)",
        acked.commits.len()
    );
}
