//! Backup and restore at the engine's level: a snapshot taken from a
//! running engine (another RocksDB instance on its index, as `berthctl
//! backup` opens it) restores what was committed before it and nothing
//! after; GC deletes nothing while a live backup holds the directory.

use std::time::Duration;

use berth_engine::backup::{self, HOLD_FILE};
use berth_engine::fsck::FsckOptions;
use berth_engine::store::Backend;
use berth_engine::{
    Engine, EngineConfig, GcOptions, ManifestPut, Reference, RepoName, StorageError, Tag,
};
use berth_testkit::{content, sha256};

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).expect("repo")
}

fn put_image(e: &Engine, r: &RepoName, seed: &str, tag: &str) -> berth_engine::Digest {
    let layer = content(seed, 20_000);
    let d = sha256(&layer);
    e.put_blob(r, &d, &layer).expect("blob");
    let body = format!("{{\"seed\":\"{seed}\",\"layers\":[\"{d}\"]}}");
    e.put_manifest(
        r,
        ManifestPut {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: body.into_bytes(),
            blobs: vec![d.clone()],
            tags: vec![Tag::parse(tag).expect("tag")],
            ..ManifestPut::default()
        },
    )
    .expect("manifest");
    d
}

/// Deletes the manifest `tag` names, making its layer garbage.
fn delete_tagged(e: &Engine, r: &RepoName, tag: &str) {
    let m = e
        .get_manifest(r, &Reference::Tag(Tag::parse(tag).expect("tag")))
        .expect("get")
        .expect("present")
        .digest;
    assert!(e.delete_manifest(r, &m).expect("delete"));
}

fn gc_now() -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    }
}

fn tagged(e: &Engine, r: &RepoName, tag: &str) -> bool {
    e.get_manifest(r, &Reference::Tag(Tag::parse(tag).expect("tag")))
        .expect("get")
        .is_some()
}

#[test]
fn a_backup_of_a_running_engine_restores_what_was_committed_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = dir.path().join("backup");
    let e = Engine::open(EngineConfig::new(&data)).expect("open");
    let r = repo("p/app");
    let before = put_image(&e, &r, "before", "v1");

    let report = backup::backup(&data, &out, &Backend::local(), &|_, _| {}).expect("backup");
    assert_eq!(report.manifest.blobs, 1);
    assert_eq!(report.blobs_linked + report.blobs_copied, 1);
    put_image(&e, &r, "after", "v2");

    let restored = dir.path().join("restored");
    let rr = backup::restore(&out, &restored).expect("restore");
    assert_eq!(rr.blobs_linked + rr.blobs_copied, 1);
    let second = Engine::open(EngineConfig::new(&restored)).expect("open restored");
    assert!(tagged(&second, &r, "v1"));
    assert!(!tagged(&second, &r, "v2"), "written after the snapshot");
    let (_, bytes) = second.read_blob(&r, &before, None).expect("read");
    assert_eq!(bytes.as_ref(), content("before", 20_000).as_slice());
    let f = second
        .fsck(FsckOptions { verify_blobs: true })
        .expect("fsck");
    assert!(f.findings.is_empty(), "{:?}", f.findings);

    // Into the same directory again: the first blob is there already.
    let again = backup::backup(&data, &out, &Backend::local(), &|_, _| {}).expect("backup");
    assert_eq!((again.blobs_present, again.manifest.blobs), (1, 2));
    // A restore wants a new directory.
    assert!(backup::restore(&out, &restored).is_err());
}

#[test]
fn gc_deletes_nothing_while_a_live_backup_holds_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let e = Engine::open(EngineConfig::new(&data)).expect("open");
    let r = repo("p/app");
    let d = put_image(&e, &r, "victim", "v1");
    delete_tagged(&e, &r, "v1");
    let now = gc_now();

    // This process is alive: its id in the hold is a running backup.
    let hold = data.join(HOLD_FILE);
    std::fs::write(&hold, format!("{}\n", std::process::id())).expect("hold");
    match e.gc(&now) {
        Err(StorageError::Busy(m)) => assert!(m.contains("backup"), "{m}"),
        other => panic!("GC under a live hold: {other:?}"),
    }
    assert!(
        e.store().stat(&d).expect("stat").is_some(),
        "the blob's bytes stay"
    );

    // A hold whose process is gone (a killed backup) is ignored, and the
    // next run finishes the claim.
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("wait");
    std::fs::write(&hold, format!("{dead}\n")).expect("hold");
    let rep = e.gc(&now).expect("gc");
    assert_eq!(rep.blobs_deleted, 1);
    assert!(e.store().stat(&d).expect("stat").is_none());
    let f = e.fsck(FsckOptions::default()).expect("fsck");
    assert!(f.findings.is_empty(), "{:?}", f.findings);
}

#[test]
fn a_backup_naming_an_index_outside_itself_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("backup");
    std::fs::create_dir_all(&out).expect("dir");
    for index in ["../../etc", "index-../x", "index-", "/tmp/index-1"] {
        let json = format!(
            r#"{{"format":1,"taken_ms":1,"index":"{index}","backend":"local","entries":0,"blobs":0,"bytes":0}}"#
        );
        std::fs::write(out.join(backup::MANIFEST_FILE), json).expect("manifest");
        let restored = dir.path().join("restored");
        match backup::restore(&out, &restored) {
            Err(StorageError::Corrupt { detail, .. }) => {
                assert!(detail.contains("index"), "{detail}")
            }
            other => panic!("{index}: {other:?}"),
        }
        assert!(!restored.exists(), "{index}: nothing restored");
    }
}

#[test]
fn a_backup_into_the_data_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let e = Engine::open(EngineConfig::new(&data)).expect("open");
    put_image(&e, &repo("p/app"), "x", "v1");
    let inside = data.join("backup");
    match backup::backup(&data, &inside, &Backend::local(), &|_, _| {}) {
        Err(StorageError::Unsupported(m)) => assert!(m.contains("outside"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!inside.exists());
}

/// A snapshot taken while GC holds a claim (its hold check passed): the
/// claimed blob's record and links come along without its bytes, and the
/// restored directory is clean; its first GC finishes the deletion.
#[test]
fn a_backup_during_a_gc_deletion_restores_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = dir.path().join("backup");
    let once = std::sync::Mutex::new(false);
    let (hook_data, hook_out) = (data.clone(), out.clone());
    let hook: berth_engine::gc::GcHook = std::sync::Arc::new(move |p, _| {
        let mut done = once.lock().expect("once");
        if p == berth_engine::gc::GcPoint::Deleting && !*done {
            *done = true;
            backup::backup(&hook_data, &hook_out, &Backend::local(), &|_, _| {})
                .expect("backup during the deletion");
        }
        true
    });
    let mut c = EngineConfig::new(&data);
    c.gc_hook = Some(hook);
    let e = Engine::open(c).expect("open");
    let r = repo("p/app");
    put_image(&e, &r, "kept", "v1");
    let victim = put_image(&e, &r, "victim", "v2");
    delete_tagged(&e, &r, "v2");
    let now = gc_now();
    assert_eq!(e.gc(&now).expect("gc").blobs_deleted, 1);

    let restored = dir.path().join("restored");
    backup::restore(&out, &restored).expect("restore");
    let second = Engine::open(EngineConfig::new(&restored)).expect("open restored");
    assert!(tagged(&second, &r, "v1"));
    let f = second
        .fsck(FsckOptions { verify_blobs: true })
        .expect("fsck");
    assert!(f.findings.is_empty(), "{:?}", f.findings);
    assert_eq!(f.interrupted_deletions, vec![victim]);
    second.gc(&now).expect("gc on the restored directory");
    let f = second
        .fsck(FsckOptions { verify_blobs: true })
        .expect("fsck");
    assert!(
        f.findings.is_empty() && f.interrupted_deletions.is_empty(),
        "{f:?}"
    );
}
