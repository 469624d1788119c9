//! Online GC against concurrent use: deterministic interleavings through
//! GC's test hook, and a multi-threaded stress run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_engine::fsck::FsckOptions;
use berth_engine::gc::{GcHook, GcPoint};
use berth_engine::{
    Digest, Engine, EngineConfig, GcOptions, ManifestError, ManifestPut, Reference, RepoName, Tag,
};
use berth_testkit::{content, sha256};

/// Something a GC hook runs once.
type Action = Box<dyn Fn() + Send>;

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).expect("repo")
}

fn tag(s: &str) -> Tag {
    Tag::parse(s).expect("tag")
}

fn now_opts() -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    }
}

fn open_with_hook(dir: &std::path::Path, hook: Option<GcHook>) -> Engine {
    let mut c = EngineConfig::new(dir);
    c.gc_hook = hook;
    Engine::open(c).expect("open engine")
}

fn manifest(blobs: &[&Digest], tags: &[&str], salt: &str) -> ManifestPut {
    let body = format!(
        "{{\"salt\":\"{salt}\",\"layers\":[{}]}}",
        blobs
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    ManifestPut {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: body.into_bytes(),
        blobs: blobs.iter().map(|d| (*d).clone()).collect(),
        tags: tags.iter().map(|t| tag(t)).collect(),
        ..ManifestPut::default()
    }
}

fn assert_clean(e: &Engine) {
    let report = e.fsck(FsckOptions { verify_blobs: true }).expect("fsck");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

fn assert_readable(e: &Engine, r: &RepoName, d: &Digest, data: &[u8]) {
    let (_, bytes) = e.read_blob(r, d, None).expect("read blob");
    assert_eq!(bytes.as_ref(), data, "{d} in {r}");
}

#[test]
fn sweeps_unreferenced_blobs_after_the_grace_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open_with_hook(dir.path(), None);
    let r = repo("p/app");
    let (a, b) = (content("a", 5000), content("b", 7000));
    let (da, db) = (sha256(&a), sha256(&b));
    e.put_blob(&r, &da, &a).expect("put a");
    e.put_blob(&r, &db, &b).expect("put b");
    e.put_manifest(&r, manifest(&[&da], &["v1"], "m"))
        .expect("manifest");

    // Within the grace window nothing goes.
    let rep = e.gc(&GcOptions::default()).expect("gc");
    assert_eq!((rep.candidates, rep.in_grace, rep.blobs_deleted), (1, 1, 0));
    assert!(e.stat_blob(&r, &db).expect("stat").is_some());

    let dry = e
        .gc(&GcOptions {
            dry_run: true,
            ..now_opts()
        })
        .expect("dry gc");
    assert_eq!((dry.blobs_deleted, dry.bytes_reclaimed), (1, 7000));
    assert!(e.stat_blob(&r, &db).expect("stat").is_some());

    let rep = e.gc(&now_opts()).expect("gc");
    assert_eq!(rep.blobs_deleted, 1);
    assert_eq!(rep.bytes_reclaimed, 7000);
    assert_eq!(rep.links_removed, 1);
    assert!(e.stat_blob(&r, &db).expect("stat").is_none());
    assert!(e.blob_record(&db).expect("record").is_none());
    assert_eq!(e.store().stat(&db).expect("store stat"), None);
    assert_readable(&e, &r, &da, &a);
    assert_clean(&e);

    // Deleting the manifest makes its layer garbage.
    let md = e
        .get_manifest(&r, &Reference::Tag(tag("v1")))
        .expect("get")
        .expect("present")
        .digest;
    assert!(e.delete_manifest(&r, &md).expect("delete"));
    let rep = e.gc(&now_opts()).expect("gc");
    assert_eq!(rep.blobs_deleted, 1);
    assert_eq!(e.store().list().expect("list"), Vec::<Digest>::new());
    assert_clean(&e);
    assert_eq!(e.metrics().gc_blobs_reclaimed.load(Ordering::Relaxed), 2);
}

/// Every kind of touch between the mark and the delete keeps the blob.
#[test]
fn a_touch_after_the_mark_keeps_the_blob() {
    type Touch = fn(&Engine, &RepoName, &Digest, &[u8]);
    let touches: [(&str, Touch); 5] = [
        ("head", |e, r, d, _| {
            assert!(e.stat_blob(r, d).expect("stat").is_some());
        }),
        ("upload", |e, r, d, data| {
            e.put_blob(r, d, data).expect("re-upload");
        }),
        ("mount", |e, _, d, _| {
            e.mount_blob(&repo("p/other"), d, None)
                .expect("mount")
                .expect("mounted");
        }),
        ("cross-mount", |e, r, d, _| {
            e.mount_blob(&repo("p/third"), d, Some(r))
                .expect("mount")
                .expect("mounted");
        }),
        ("reference", |e, r, d, _| {
            e.put_manifest(r, manifest(&[d], &["ref"], "touch"))
                .expect("manifest");
        }),
    ];
    for (name, touch) in touches {
        let dir = tempfile::tempdir().expect("tempdir");
        let slot: Arc<Mutex<Option<Action>>> = Arc::new(Mutex::new(None));
        let hook_slot = slot.clone();
        let hook: GcHook = Arc::new(move |p, _| {
            if p == GcPoint::Marked {
                if let Some(f) = hook_slot.lock().expect("slot").take() {
                    f();
                }
            }
            true
        });
        let e = Arc::new(open_with_hook(dir.path(), Some(hook)));
        let r = repo("p/app");
        let data = content(name, 3000);
        let d = sha256(&data);
        e.put_blob(&r, &d, &data).expect("put");
        {
            let (e, r, d, data) = (e.clone(), r.clone(), d.clone(), data.clone());
            *slot.lock().expect("slot") = Some(Box::new(move || touch(&e, &r, &d, &data)));
        }
        let rep = e.gc(&now_opts()).expect("gc");
        assert_eq!(
            (rep.marked, rep.kept_touched, rep.blobs_deleted),
            (1, 1, 0),
            "{name}"
        );
        assert_readable(&e, &r, &d, &data);
        assert_clean(&e);
    }
}

/// The window between `Deleting` and the record's removal: an upload of the
/// same bytes must not dedup onto the file GC is unlinking. It waits for the
/// deletion, then stores the bytes anew.
#[test]
fn an_upload_racing_the_unlink_waits_and_rewrites() {
    for point in [GcPoint::Deleting, GcPoint::Unlinked] {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = repo("p/app");
        let data = content("race", 50_000);
        let d = sha256(&data);
        let engine: Arc<Mutex<Option<Arc<Engine>>>> = Arc::new(Mutex::new(None));
        let uploader: Arc<Mutex<Option<std::thread::JoinHandle<()>>>> = Arc::new(Mutex::new(None));
        let (he, hu, hr, hd, hdata) = (
            engine.clone(),
            uploader.clone(),
            r.clone(),
            d.clone(),
            data.clone(),
        );
        let hook: GcHook = Arc::new(move |p, _| {
            if p == point {
                let e = he.lock().expect("engine").clone().expect("engine set");
                let (r, d, data) = (hr.clone(), hd.clone(), hdata.clone());
                let t = std::thread::spawn(move || {
                    e.put_blob(&r, &d, &data).expect("upload during deletion");
                });
                // The upload must block on GC's claim, not finish onto the
                // file being unlinked.
                std::thread::sleep(Duration::from_millis(300));
                assert!(!t.is_finished(), "upload did not wait for the deletion");
                *hu.lock().expect("uploader") = Some(t);
            }
            true
        });
        let e = Arc::new(open_with_hook(dir.path(), Some(hook)));
        *engine.lock().expect("engine") = Some(e.clone());
        e.put_blob(&r, &d, &data).expect("put");
        let rep = e.gc(&now_opts()).expect("gc");
        assert_eq!(rep.blobs_deleted, 1, "{point:?}");
        uploader
            .lock()
            .expect("uploader")
            .take()
            .expect("uploader started")
            .join()
            .expect("uploader ok");
        assert_readable(&e, &r, &d, &data);
        assert_clean(&e);
        *engine.lock().expect("engine") = None;
    }
}

/// The same race across cluster nodes: two engines on one PostgreSQL
/// index and one store, GC on the first, the upload of the same bytes on
/// the second, whose in-memory pins the first never sees. The upload waits
/// on the claim recorded in the index (it neither dedups onto the blob
/// being unlinked nor revives it early), then stores the bytes again.
#[test]
fn an_upload_on_another_node_racing_the_unlink_waits_and_rewrites() {
    let Some(db) = berth_engine::DatabaseConfig::for_test() else {
        eprintln!("BERTH_TEST_DATABASE_URL is not set: skipped");
        return;
    };
    for point in [GcPoint::Deleting, GcPoint::Unlinked] {
        let db = berth_engine::DatabaseConfig {
            schema: format!("{}_{}", db.schema, point as u8),
            ..db.clone()
        };
        let dirs = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn berth_engine::store::BlobStore> =
            Arc::new(berth_engine::store::MemoryStore::new());
        let open = |name: &str, hook: Option<GcHook>| {
            let mut c = EngineConfig::new(dirs.path().join(name));
            c.database = Some(db.clone());
            c.store = Some(store.clone());
            c.gc_hook = hook;
            Arc::new(Engine::open(c).expect("open engine"))
        };
        let r = repo("p/app");
        let data = content("cross-node race", 50_000);
        let d = sha256(&data);
        let other = open("b", None);
        let uploader: Arc<Mutex<Option<std::thread::JoinHandle<()>>>> = Arc::new(Mutex::new(None));
        let (hu, ho, hr, hd, hdata) = (
            uploader.clone(),
            other.clone(),
            repo("p/other"),
            d.clone(),
            data.clone(),
        );
        let hook: GcHook = Arc::new(move |p, _| {
            if p == point {
                let (e, r, d, data) = (ho.clone(), hr.clone(), hd.clone(), hdata.clone());
                let t = std::thread::spawn(move || {
                    e.put_blob(&r, &d, &data)
                        .expect("upload on the other node during deletion");
                });
                std::thread::sleep(Duration::from_millis(300));
                assert!(
                    !t.is_finished(),
                    "the other node's upload did not wait for the deletion"
                );
                *hu.lock().expect("uploader") = Some(t);
            }
            true
        });
        let gc_node = open("a", Some(hook));
        gc_node.put_blob(&r, &d, &data).expect("put");
        let rep = gc_node.gc(&now_opts()).expect("gc");
        assert_eq!(rep.blobs_deleted, 1, "{point:?}");
        uploader
            .lock()
            .expect("uploader")
            .take()
            .expect("uploader started")
            .join()
            .expect("uploader ok");
        assert_readable(&other, &repo("p/other"), &d, &data);
        assert_readable(&gc_node, &repo("p/other"), &d, &data);
        assert_clean(&gc_node);
    }
}

/// In cluster mode a GC run removes the segments of upload sessions that
/// are gone (a node that died between a completion's commit point and its
/// removal of the segments leaves them), and keeps those of a session in
/// progress.
#[test]
fn gc_removes_the_segments_of_ended_sessions_only() {
    let Some(db) = berth_engine::DatabaseConfig::for_test() else {
        eprintln!("BERTH_TEST_DATABASE_URL is not set: skipped");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn berth_engine::store::BlobStore> =
        Arc::new(berth_engine::store::MemoryStore::new());
    let mut c = EngineConfig::new(dir.path());
    c.database = Some(db);
    c.store = Some(store.clone());
    let e = Engine::open(c).expect("open engine");
    let r = repo("p/app");
    let live = e
        .begin_upload(&r, berth_engine::Algorithm::Sha256)
        .expect("begin")
        .id;
    let mut w = e.upload_writer(&r, &live, Some(0)).expect("writer");
    w.write(b"acknowledged bytes").expect("write");
    w.commit().expect("append");
    let ended = "0123456789abcdef0123456789abcdef";
    let buffer = store.stage("buffer").expect("stage");
    buffer.write_at(b"left behind", 0).expect("write");
    store
        .put_segment(ended, "0011223344556677", buffer)
        .expect("segment of an ended session");
    assert_eq!(
        store.segment_uploads().expect("segment uploads").len(),
        2,
        "the live session's segment and the ended one's"
    );
    e.gc(&now_opts()).expect("gc");
    assert_eq!(
        store.segment_uploads().expect("segment uploads"),
        vec![live.clone()],
        "only the live session's segments remain"
    );
    assert_eq!(e.upload_status(&r, &live).expect("status").offset, 18);
}

/// A run cut short after committing `Deleting` (as by a crash) leaves a
/// record readers do not see; an upload of the same bytes revives it, and
/// otherwise the next run finishes the deletion.
#[test]
fn interrupted_deletions_are_invisible_then_revived_or_finished() {
    for point in [GcPoint::Deleting, GcPoint::Unlinked] {
        for revive in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let armed = Arc::new(AtomicBool::new(true));
            let a2 = armed.clone();
            let hook: GcHook =
                Arc::new(move |p, _| !(p == point && a2.swap(false, Ordering::SeqCst)));
            let e = open_with_hook(dir.path(), Some(hook));
            let r = repo("p/app");
            let data = content("leftover", 9000);
            let d = sha256(&data);
            e.put_blob(&r, &d, &data).expect("put");
            assert!(e.gc(&now_opts()).is_err(), "hook aborts the run");
            assert!(e.stat_blob(&r, &d).expect("stat").is_none(), "{point:?}");
            assert!(!e.blob_exists(&d).expect("exists"));
            assert!(matches!(
                e.put_manifest(&r, manifest(&[&d], &["x"], "y")),
                Err(ManifestError::BlobUnknown { .. })
            ));
            assert_clean(&e);
            if revive {
                e.put_blob(&r, &d, &data).expect("re-upload");
                assert_readable(&e, &r, &d, &data);
                e.put_manifest(&r, manifest(&[&d], &["x"], "y"))
                    .expect("manifest");
                assert_eq!(e.gc(&now_opts()).expect("gc").blobs_deleted, 0);
                assert_readable(&e, &r, &d, &data);
            } else {
                let rep = e.gc(&now_opts()).expect("gc");
                assert_eq!(rep.blobs_deleted, 1);
                assert!(e.blob_record(&d).expect("record").is_none());
                assert_eq!(e.store().list().expect("list"), Vec::<Digest>::new());
            }
            assert_clean(&e);
        }
    }
}

#[test]
fn delete_untagged_keeps_tagged_children_and_accessories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open_with_hook(dir.path(), None);
    let r = repo("p/app");
    let layers: Vec<(Vec<u8>, Digest)> = (0..4)
        .map(|i| {
            let c = content(&format!("l{i}"), 1000 + i);
            let d = sha256(&c);
            e.put_blob(&r, &d, &c).expect("put");
            (c, d)
        })
        .collect();
    let tagged = e
        .put_manifest(&r, manifest(&[&layers[0].1], &["v1"], "tagged"))
        .expect("tagged");
    let untagged = e
        .put_manifest(&r, manifest(&[&layers[1].1], &[], "untagged"))
        .expect("untagged");
    // A signature of the tagged image: an accessory, kept.
    let mut sig = manifest(&[&layers[2].1], &[], "sig");
    sig.subject = Some(tagged.clone());
    let sig = e.put_manifest(&r, sig).expect("sig");
    // An untagged index whose child is untagged too: both go, in one run.
    let child = e
        .put_manifest(&r, manifest(&[&layers[3].1], &[], "child"))
        .expect("child");
    let index = e
        .put_manifest(
            &r,
            ManifestPut {
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                body: format!("{{\"manifests\":[\"{child}\"]}}").into_bytes(),
                manifests: vec![child.clone()],
                ..ManifestPut::default()
            },
        )
        .expect("index");

    let dry = e
        .gc(&GcOptions {
            delete_untagged: true,
            dry_run: true,
            ..now_opts()
        })
        .expect("dry");
    assert_eq!(
        dry.manifests_deleted, 2,
        "untagged and the index (child has a parent)"
    );

    let rep = e
        .gc(&GcOptions {
            delete_untagged: true,
            ..now_opts()
        })
        .expect("gc");
    assert_eq!(rep.manifests_deleted, 3);
    let present = |d: &Digest| {
        e.get_manifest(&r, &Reference::Digest(d.clone()))
            .expect("get")
            .is_some()
    };
    assert!(present(&tagged) && present(&sig));
    assert!(!present(&untagged) && !present(&index) && !present(&child));
    assert_eq!(rep.blobs_deleted, 2, "layers of untagged and child");
    assert_readable(&e, &r, &layers[0].1, &layers[0].0);
    assert_readable(&e, &r, &layers[2].1, &layers[2].0);
    assert_clean(&e);
}

/// Pushers, mounters and HEADs of a few shared digests against a tight GC
/// loop with no grace. Afterwards every tagged manifest's blobs read back
/// with the right hash and fsck is clean.
#[test]
fn stress_uploads_mounts_heads_against_a_tight_gc_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Arc::new(open_with_hook(dir.path(), None));
    let pool: Arc<Vec<(Vec<u8>, Digest)>> = Arc::new(
        (0..6)
            .map(|i| {
                let c = content(&format!("shared{i}"), 2000 + i * 997);
                let d = sha256(&c);
                (c, d)
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let lost_races = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..4usize {
        let (e, pool, stop, acked, lost) = (
            e.clone(),
            pool.clone(),
            stop.clone(),
            acked.clone(),
            lost_races.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let r = repo(&format!("stress/t{t}"));
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (data, d) = &pool[i % pool.len()];
                // Mounters try a metadata-only mount first, as clients do.
                let have = t % 2 == 1 && e.mount_blob(&r, d, None).expect("mount").is_some();
                if !have {
                    e.put_blob(&r, d, data).expect("upload");
                }
                let _ = e.stat_blob(&r, d).expect("head");
                let tag_name = format!("s{}", i % 5);
                match e.put_manifest(&r, manifest(&[d], &[&tag_name], &format!("{t}-{i}"))) {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    // GC took the blob between upload and manifest (grace
                    // 0): the client's push fails and it retries.
                    Err(ManifestError::BlobUnknown { .. }) => {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => panic!("manifest: {err}"),
                }
                // Untag now and then so blobs turn into garbage.
                if i.is_multiple_of(3) {
                    if let Some(m) = e
                        .get_manifest(&r, &Reference::Tag(tag(&tag_name)))
                        .expect("get")
                    {
                        e.delete_manifest(&r, &m.digest).expect("delete");
                    }
                }
            }
        }));
    }
    let gc = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0u64;
            let mut deleted = 0u64;
            while !stop.load(Ordering::Relaxed) {
                deleted += e.gc(&now_opts()).expect("gc").blobs_deleted;
                runs += 1;
            }
            (runs, deleted)
        })
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("worker");
    }
    let (runs, deleted) = gc.join().expect("gc thread");
    eprintln!(
        "stress: {} manifests acked, {} lost races, {runs} gc runs, {deleted} blobs deleted",
        acked.load(Ordering::Relaxed),
        lost_races.load(Ordering::Relaxed)
    );
    assert!(acked.load(Ordering::Relaxed) > 0 && runs > 0);
    let mut checked = 0;
    for t in 0..4 {
        let r = repo(&format!("stress/t{t}"));
        for name in e.list_tags(&r, None, 100).expect("tags").items {
            let m = e
                .get_manifest(&r, &Reference::Tag(tag(&name)))
                .expect("get")
                .expect("tagged manifest");
            let rec = e
                .manifest_record(&m.digest)
                .expect("record")
                .expect("present");
            for d in rec.blobs {
                let (data, _) = pool.iter().find(|(_, pd)| *pd == d).expect("pool blob");
                assert_readable(&e, &r, &d, data);
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
    assert_clean(&e);
}

/// The GC hook is a test hook: it exists only with berth-engine's
/// `test-hooks` feature, which only the root package's dev-dependency
/// turns on. Feature unification may compile it into a `berth` built with
/// `--all-targets`, so this checks the other half: no production source
/// (server, berthctl) names the hook or turns the feature on, and both
/// build without it (a release `--bins` build has no such field).
#[test]
fn production_code_sets_no_test_hook() {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs" || x == "toml") {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for part in ["server", "tools"] {
        sources(&root.join(part), &mut files);
    }
    assert!(files.len() > 10, "found too few sources: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        for word in ["gc_hook", "GcHook", "test-hooks", "test_hooks"] {
            assert!(
                !text.contains(word),
                "{} names {word}: test hooks stay out of production code",
                f.display()
            );
        }
    }
}
