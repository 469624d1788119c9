//! `berthctl` as a real process on real data directories.

use std::process::Command;

use berth_engine::{Algorithm, Digest, RepoName};
use berth_testkit::{berthctl, bin_path, open_engine};

#[test]
fn fsck_is_clean_then_reports_a_lost_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = b"some layer bytes".to_vec();
    let d = Digest::of(Algorithm::Sha256, &data);
    {
        let e = open_engine(dir.path());
        e.put_blob(&RepoName::parse("p/a").expect("repo"), &d, &data)
            .expect("put");
    }
    let (code, out, err) = berthctl(dir.path(), &["fsck", "--verify-blobs"]);
    assert_eq!(code, 0, "clean fsck failed: {out}{err}");
    assert!(out.contains("checked 1 blobs"), "{out}");

    let (code, out, _) = berthctl(dir.path(), &["stats"]);
    assert_eq!(code, 0);
    assert!(out.contains("blobs      1"), "{out}");

    let path = dir
        .path()
        .join("blobs/sha256")
        .join(&d.hex()[..2])
        .join(d.hex());
    std::fs::remove_file(&path).expect("remove blob file");
    let (code, out, _) = berthctl(dir.path(), &["fsck"]);
    assert_eq!(code, 1, "fsck must fail on a lost blob: {out}");
    assert!(out.contains(&format!("blob {d}: missing")), "{out}");
}

#[test]
fn refuses_a_data_dir_held_by_a_running_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _held = open_engine(dir.path());
    let (code, _, err) = berthctl(dir.path(), &["stats"]);
    assert_eq!(code, 2);
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains("hint: stop the berth server"), "{err}");
}

#[test]
fn refuses_a_directory_without_an_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = berthctl(dir.path(), &["fsck"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("berthctl: "), "{err}");
    assert!(
        !dir.path().join("index").exists(),
        "fsck must not create a data dir"
    );
}

fn berthctl_stdin(data: &std::path::Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(bin_path("berthctl"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run berthctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn accounts_offline_user_project_member_robot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (code, out, err) = berthctl_stdin(d, &["user", "add", "alice"], "alice-password\n");
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = berthctl_stdin(d, &["user", "add", "bob"], "short\n");
    assert_eq!(code, 1, "a short password is refused");
    assert!(err.contains("password"), "{err}");
    berthctl_stdin(d, &["user", "add", "bob"], "bob-password\n");
    let (code, out, err) = berthctl(d, &["project", "add", "team", "--owner", "alice"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = berthctl(d, &["member", "add", "team", "bob", "--role", "developer"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = berthctl(d, &["member", "add", "team", "bob", "--role", "owner"]);
    assert_eq!(code, 2, "{err}");
    // Proxy cache projects: the upstream registered once, reused by URL.
    let (code, out, err) = berthctl(
        d,
        &[
            "project",
            "add",
            "hub",
            "--public",
            "--proxy",
            "http://127.0.0.1:5999/",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("a proxy cache of"), "{out}");
    let (code, out, err) = berthctl(
        d,
        &["project", "add", "hub2", "--proxy", "http://127.0.0.1:5999"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = berthctl(d, &["project", "add", "bad", "--proxy", "ftp://x"]);
    assert_ne!(code, 0, "a URL that is not http(s) is refused");
    assert!(err.contains("URL"), "{err}");
    let (code, out, err) = berthctl(d, &["robot", "add", "team", "ci", "--actions", "pull,push"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("robot$team+ci"), "{out}");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret "))
        .expect("secret printed")
        .to_owned();

    let e = open_engine(d);
    let bob = e
        .authenticate("bob", "bob-password")
        .expect("auth")
        .expect("bob");
    assert_eq!(
        e.permissions(&bob, "team").expect("perms"),
        berth_engine::Role::Developer.actions()
    );
    let registries = e.registries().expect("registries");
    assert_eq!(registries.len(), 1, "{registries:?}");
    let (id, rec) = &registries[0];
    assert_eq!(rec.url, "http://127.0.0.1:5999");
    for p in ["hub", "hub2"] {
        assert_eq!(
            e.project(p).expect("project").expect(p).registry_id,
            Some(*id)
        );
    }
    assert!(e.project("bad").expect("project").is_none());
    let robot = e
        .authenticate("robot$team+ci", &secret)
        .expect("auth")
        .expect("robot");
    assert!(e
        .permissions(&robot, "team")
        .expect("perms")
        .contains(berth_engine::Action::Push));
    // While an engine holds the directory, berthctl refuses.
    let (code, _, err) = berthctl(d, &["project", "add", "other"]);
    assert_eq!(code, 2);
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn gc_collects_unreferenced_blobs_and_repair_removes_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = b"an unreferenced layer".to_vec();
    let d = Digest::of(Algorithm::Sha256, &data);
    let orphan = b"bytes whose index commit never happened".to_vec();
    let od = Digest::of(Algorithm::Sha256, &orphan);
    {
        let e = open_engine(dir.path());
        e.put_blob(&RepoName::parse("p/a").expect("repo"), &d, &data)
            .expect("put");
        // A store file without a record, as a crash between put and commit leaves.
        e.store()
            .put_bytes(&od, &orphan, berth_engine::PutMode::CreateOnly)
            .expect("orphan");
    }
    let (code, out, err) = berthctl(dir.path(), &["gc", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("would delete 1 blob(s)"), "{out}");
    let (code, out, _) = berthctl(dir.path(), &["gc", "--grace-seconds", "3600"]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted 0 blob(s)"), "{out}");
    let (code, out, _) = berthctl(dir.path(), &["gc"]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted 1 blob(s), 21 bytes"), "{out}");

    let (code, out, _) = berthctl(dir.path(), &["fsck"]);
    assert_eq!(code, 0, "an orphan file is a note, not a finding: {out}");
    assert!(
        out.contains(&format!("note: blob {od} is stored but not indexed")),
        "{out}"
    );
    let (code, out, _) = berthctl(dir.path(), &["fsck", "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("repaired: deleted unindexed store file of {od}")),
        "{out}"
    );
    let (code, out, _) = berthctl(dir.path(), &["fsck", "--verify-blobs"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("note:"), "{out}");
}

/// `berthctl` pointed at a live server's data directory is refused before
/// it touches anything (the lock is taken before the store is opened, which
/// would empty the store's temp directory), the message names the lock file,
/// and an upload session the server had open completes afterwards.
#[test]
fn berthctl_against_a_live_server_names_the_lock_and_changes_nothing() {
    use berth_testkit::server::{header, http, TestServer};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]);
    let blob = berth_testkit::content("live-lock", 300_000);
    let d = berth_testkit::sha256(&blob);

    // An upload session with half the bytes acknowledged.
    let (status, headers, _) = http(server.addr, "POST", "/v2/p/live/blobs/uploads/", &[], b"");
    assert_eq!(status, 202, "{}", server.stderr());
    let location = header(&headers, "location").expect("Location").to_owned();
    let path = location
        .strip_prefix(&format!("http://{}", server.addr))
        .unwrap_or(&location)
        .to_owned();
    let half = blob.len() / 2;
    let range = format!("0-{}", half - 1);
    let (status, headers, _) = http(
        server.addr,
        "PATCH",
        &path,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        &blob[..half],
    );
    assert_eq!(status, 202, "PATCH: {}", server.stderr());
    let path = header(&headers, "location")
        .map(|l| {
            l.strip_prefix(&format!("http://{}", server.addr))
                .unwrap_or(l)
                .to_owned()
        })
        .unwrap_or(path);
    let staging = dir.path().join("blobs/staging");
    let staged_before: Vec<_> = std::fs::read_dir(&staging)
        .expect("staging dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(staged_before.len(), 1, "{staged_before:?}");

    for args in [&["stats"][..], &["fsck"], &["gc"], &["expire-uploads"]] {
        let (code, out, err) = berthctl(dir.path(), args);
        assert_ne!(
            code, 0,
            "berthctl {args:?} ran against a live server: {out}{err}"
        );
        assert!(
            err.contains("LOCK.berth"),
            "berthctl {args:?}: message does not name the lock: {err}"
        );
    }
    let staged_after: Vec<_> = std::fs::read_dir(&staging)
        .expect("staging dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        staged_after, staged_before,
        "berthctl changed the staging area"
    );

    // The session completes, and the blob reads back bit for bit.
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _, body) = http(
        server.addr,
        "PUT",
        &format!("{path}{sep}digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        &blob[half..],
    );
    assert_eq!(
        status,
        201,
        "PUT: {} {}",
        String::from_utf8_lossy(&body),
        server.stderr()
    );
    let (status, _, got) = http(
        server.addr,
        "GET",
        &format!("/v2/p/live/blobs/{d}"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    assert!(got == blob, "blob read back differs");
}

/// berthctl reads the server's storage settings (environment, then the
/// `BERTH_CONFIG` file) through the engine's settings module: a bucket the
/// settings leave incomplete is refused with the server's message, before
/// the data directory is opened.
#[test]
fn reads_the_servers_storage_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open_engine(dir.path()));
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(bin_path("berthctl"))
            .args(["stats", "--data-dir"])
            .arg(dir.path())
            .envs(env.iter().copied())
            .output()
            .expect("run berthctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[("BERTH_STORAGE_BACKEND", "s3")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "storage backend s3 needs s3_endpoint (env BERTH_S3_ENDPOINT, config key s3_endpoint)"
        ),
        "{err}"
    );
    let (code, err) = run(&[("BERTH_STORAGE_BACKEND", "ceph")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown storage backend"), "{err}");

    // The config file: its storage keys count, the server's others are
    // ignored; the environment wins over it.
    let config = dir.path().join("berth.json");
    std::fs::write(
        &config,
        r#"{"listen":"0.0.0.0:1","storage_backend":"tiered","s3_endpoint":"http://127.0.0.1:1"}"#,
    )
    .expect("write config");
    let path = config.to_str().expect("utf-8 path");
    let (code, err) = run(&[("BERTH_CONFIG", path)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("storage backend tiered needs s3_bucket"),
        "{err}"
    );
    let (code, err) = run(&[("BERTH_CONFIG", path), ("BERTH_STORAGE_BACKEND", "local")]);
    assert_eq!(code, 0, "{err}");
}
