//! Engine API behaviour: bad input is refused with typed errors and leaves
//! the store unchanged; dedup; concurrent identical uploads; mounts;
//! expiry; poisoning.

use std::sync::Arc;
use std::time::Duration;

use berth_engine::fsck::FsckOptions;
use berth_engine::{
    Algorithm, Digest, Engine, EngineConfig, ManifestError, ManifestPut, Reference, RepoName, Tag,
    UploadError,
};

std::thread_local! {
    /// The PostgreSQL index the running test uses (set by its
    /// `on_postgres` twin for the test's thread), or `None` for RocksDB.
    static DATABASE: std::cell::RefCell<Option<berth_engine::DatabaseConfig>> =
        const { std::cell::RefCell::new(None) };
}

/// The config of an engine on `dir`, with the index the test runs on.
fn config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.database = DATABASE.with(|d| d.borrow().clone());
    c
}

fn engine(dir: &std::path::Path) -> Engine {
    Engine::open(config(dir)).expect("open engine")
}

/// Runs `test` with its engines' index in PostgreSQL (a fresh schema of
/// `BERTH_TEST_DATABASE_URL`); nothing to run without one.
fn with_postgres(test: fn()) {
    let Some(db) = berth_engine::DatabaseConfig::for_test() else {
        eprintln!("BERTH_TEST_DATABASE_URL is not set: skipped on PostgreSQL");
        return;
    };
    DATABASE.with(|d| *d.borrow_mut() = Some(db));
    test();
}

/// Every test below also runs with the index in PostgreSQL: the engine's
/// operations are one core over both backends.
macro_rules! on_postgres_too {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(#[test]
            fn $name() {
                super::with_postgres(super::$name)
            })*
        }
    };
}

on_postgres_too!(
    malformed_names_and_digests_are_typed_errors,
    wrong_offset_size_and_digest_leave_store_unchanged,
    one_writer_per_session,
    dedup_and_mounts_are_metadata_only,
    concurrent_identical_uploads_converge_on_one_copy,
    manifests_require_their_blobs_and_count_references,
    referrers_are_listed_and_filtered,
    pagination_of_tags_and_catalog,
    abandoned_uploads_expire,
    second_open_of_a_held_data_dir_is_refused,
    a_failed_fsync_poisons_the_engine_until_reopened,
    chart_index_follows_manifests_and_tags_in_the_same_batches,
    concurrent_appends_never_lose_an_acknowledged_chunk,
    upload_sessions_are_bounded_per_owner,
    one_digest_one_media_type_and_one_reference_list,
    quotas_count_a_blob_once_per_project_and_refuse_before_storing,
    retention_deletes_what_no_rule_keeps_and_nothing_that_changed,
    retention_runs_are_one_at_a_time_and_a_dead_run_ends,
    gc_history_survives_a_restart,
    user_groups_are_records_by_id_and_take_their_memberships_along,
    console_sessions_survive_restarts_and_expired_ones_go,
);

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).expect("repo")
}

fn sha(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

/// Everything observable about the index, for "unchanged" assertions.
fn snapshot(e: &Engine) -> String {
    format!(
        "{:?} {:?}",
        e.stats().expect("stats"),
        e.store().list().expect("list")
    )
}

fn assert_clean(e: &Engine) {
    let r = e.fsck(FsckOptions { verify_blobs: true }).expect("fsck");
    assert!(r.findings.is_empty(), "fsck: {:?}", r.findings);
}

#[test]
fn malformed_names_and_digests_are_typed_errors() {
    for bad in [
        "",
        "sha256",
        "sha256:",
        "sha256:abc",
        "SHA256:00",
        "sha256:XYZ",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
    }
    let upper = format!("sha256:{}", "A".repeat(64));
    assert!(Digest::parse(&upper).is_err());
    assert!(RepoName::parse("Upper/case").is_err());
    assert!(Tag::parse("-bad").is_err());
    assert!(Reference::parse("sha256:zz").is_err());
}

#[test]
fn wrong_offset_size_and_digest_leave_store_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let r = repo("p/a");
    let data = b"hello world".to_vec();
    let d = sha(&data);
    e.put_blob(&r, &d, &data).expect("seed blob");

    let st = e.begin_upload(&r, Algorithm::Sha256).expect("begin");
    let mut w = e.upload_writer(&r, &st.id, Some(0)).expect("writer");
    w.write(b"abc").expect("write");
    assert_eq!(w.commit().expect("commit").offset, 3);
    let before = snapshot(&e);

    // Out-of-order and overlapping appends.
    for off in [0, 2, 4, 100] {
        match e.upload_writer(&r, &st.id, Some(off)) {
            Err(UploadError::OffsetMismatch {
                expected: 3, got, ..
            }) => assert_eq!(got, off),
            other => panic!("offset {off}: {:?}", other.map(|w| w.offset())),
        }
    }
    // Wrong size, then wrong digest: refused, session intact.
    let err = e
        .complete_upload(&r, &st.id, &sha(b"abc"), Some(4))
        .unwrap_err();
    assert!(
        matches!(
            err,
            UploadError::SizeMismatch {
                expected: 4,
                actual: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = e
        .complete_upload(&r, &st.id, &sha(b"abd"), None)
        .unwrap_err();
    assert!(matches!(err, UploadError::DigestMismatch { .. }), "{err}");
    // A different algorithm is re-hashed, and still verified.
    let err = e
        .complete_upload(&r, &st.id, &Digest::of(Algorithm::Blake3, b"abd"), None)
        .unwrap_err();
    assert!(matches!(err, UploadError::DigestMismatch { .. }), "{err}");
    // Unknown and malformed upload ids, and another repository's upload.
    for (rr, id) in [
        (&r, "nope"),
        (&r, "0123456789abcdef0123456789abcdef"),
        (&repo("p/b"), st.id.as_str()),
    ] {
        let err = e.upload_status(rr, id).unwrap_err();
        assert!(matches!(err, UploadError::NotFound { .. }), "{err}");
    }
    // Unacknowledged bytes of a dropped writer are not kept.
    let mut w = e.upload_writer(&r, &st.id, Some(3)).expect("writer");
    w.write(b"garbage").expect("write");
    drop(w);
    assert_eq!(e.upload_status(&r, &st.id).expect("status").offset, 3);
    assert_eq!(snapshot(&e), before, "refused requests changed the store");

    // The session still completes correctly.
    let info = e
        .complete_upload(&r, &st.id, &Digest::of(Algorithm::Blake3, b"abc"), Some(3))
        .expect("complete with blake3");
    assert_eq!(info.size, 3);
    let (_, bytes) = e.read_blob(&r, &info.digest, None).expect("read");
    assert_eq!(bytes.as_ref(), b"abc");
    let (_, bytes) = e.read_blob(&r, &d, Some(6..11)).expect("range");
    assert_eq!(bytes.as_ref(), b"world");
    assert!(e.read_blob(&r, &d, Some(6..12)).is_err());
    assert_clean(&e);
}

#[test]
fn one_writer_per_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let r = repo("p/a");
    let st = e.begin_upload(&r, Algorithm::Sha256).expect("begin");
    let w = e.upload_writer(&r, &st.id, Some(0)).expect("writer");
    assert!(matches!(
        e.upload_writer(&r, &st.id, None),
        Err(UploadError::Busy { .. })
    ));
    drop(w);
    assert!(e.upload_writer(&r, &st.id, None).is_ok());
}

#[test]
fn dedup_and_mounts_are_metadata_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let data = vec![7u8; 100_000];
    let d = sha(&data);
    e.put_blob(&repo("p/a"), &d, &data).expect("put a");
    e.put_blob(&repo("p/b"), &d, &data).expect("put b (dedup)");
    assert_eq!(e.store().list().expect("list").len(), 1, "one stored copy");
    assert!(e
        .mount_blob(&repo("q/c"), &d, Some(&repo("p/zz")))
        .expect("mount")
        .is_none());
    assert!(e.stat_blob(&repo("q/c"), &d).expect("stat").is_none());
    assert!(e
        .mount_blob(&repo("q/c"), &d, Some(&repo("p/a")))
        .expect("mount")
        .is_some());
    assert!(e
        .mount_blob(&repo("q/d"), &d, None)
        .expect("anonymous mount")
        .is_some());
    let rec = e.blob_record(&d).expect("record").expect("present");
    assert_eq!(rec.links, 4);
    assert_eq!(e.store().list().expect("list").len(), 1);
    assert_clean(&e);
}

#[test]
fn concurrent_identical_uploads_converge_on_one_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Arc::new(engine(dir.path()));
    let data = Arc::new(vec![42u8; 2_000_000]);
    let d = sha(&data);
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (e, data, d) = (e.clone(), data.clone(), d.clone());
            std::thread::spawn(move || e.put_blob(&repo(&format!("c/r{}", i % 3)), &d, &data))
        })
        .collect();
    for t in threads {
        t.join().expect("thread").expect("concurrent upload");
    }
    assert_eq!(e.store().list().expect("list"), vec![d.clone()]);
    assert_eq!(
        e.blob_record(&d).expect("record").expect("present").links,
        3
    );
    assert_eq!(e.stats().expect("stats").uploads, 0);
    assert_clean(&e);
}

#[test]
fn manifests_require_their_blobs_and_count_references() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let r = repo("p/m");
    let layer = b"layer".to_vec();
    let ld = sha(&layer);
    let put = |blobs: Vec<Digest>, body: &str, tags: &[&str]| ManifestPut {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: body.as_bytes().to_vec(),
        blobs,
        tags: tags.iter().map(|t| Tag::parse(t).expect("tag")).collect(),
        ..Default::default()
    };
    let before = snapshot(&e);
    let err = e
        .put_manifest(&r, put(vec![ld.clone()], "{\"a\":1}", &["v1"]))
        .unwrap_err();
    assert!(matches!(err, ManifestError::BlobUnknown { .. }), "{err}");
    assert_eq!(snapshot(&e), before);
    let wrong = ManifestPut {
        digest: Some(sha(b"other")),
        ..put(vec![], "{}", &[])
    };
    assert!(matches!(
        e.put_manifest(&r, wrong),
        Err(ManifestError::DigestMismatch { .. })
    ));

    e.put_blob(&r, &ld, &layer).expect("layer");
    let m1 = e
        .put_manifest(&r, put(vec![ld.clone()], "{\"a\":1}", &["v1", "latest"]))
        .expect("m1");
    let m2 = e
        .put_manifest(
            &r,
            put(vec![ld.clone(), ld.clone()], "{\"a\":2}", &["latest"]),
        )
        .expect("m2");
    assert_eq!(e.blob_record(&ld).expect("rec").expect("rec").refcount, 2);
    let index = ManifestPut {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        body: b"{\"index\":true}".to_vec(),
        manifests: vec![m1.clone(), m2.clone()],
        ..Default::default()
    };
    let idx = e.put_manifest(&r, index).expect("index");
    assert_eq!(
        e.repo_manifest_record(&r, &m1)
            .expect("rec")
            .expect("rec")
            .parents,
        1
    );
    let got = e
        .get_manifest(&r, &Reference::Tag(Tag::parse("latest").expect("tag")))
        .expect("get")
        .expect("latest");
    assert_eq!(got.digest, m2);
    assert!(e.delete_manifest(&r, &m2).expect("delete"));
    assert!(e
        .get_manifest(&r, &Reference::Tag(Tag::parse("latest").expect("tag")))
        .expect("get")
        .is_none());
    assert_eq!(
        e.list_tags(&r, None, 10).expect("tags").items,
        vec!["v1".to_string()]
    );
    assert_eq!(e.blob_record(&ld).expect("rec").expect("rec").refcount, 1);
    assert!(e.delete_manifest(&r, &idx).expect("delete index"));
    assert_eq!(
        e.repo_manifest_record(&r, &m1)
            .expect("rec")
            .expect("rec")
            .parents,
        0
    );
    assert_clean(&e);
}

#[test]
fn referrers_are_listed_and_filtered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let r = repo("p/ref");
    let subject = sha(b"subject manifest");
    for (i, at) in ["application/sbom", "application/sig", "application/sbom"]
        .iter()
        .enumerate()
    {
        e.put_manifest(
            &r,
            ManifestPut {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                body: format!("{{\"n\":{i}}}").into_bytes(),
                subject: Some(subject.clone()),
                artifact_type: Some(at.to_string()),
                ..Default::default()
            },
        )
        .expect("referrer");
    }
    assert_eq!(e.referrers(&r, &subject, None).expect("all").len(), 3);
    assert_eq!(
        e.referrers(&r, &subject, Some("application/sbom"))
            .expect("filtered")
            .len(),
        2
    );
    assert!(e
        .referrers(&repo("p/other"), &subject, None)
        .expect("other repo")
        .is_empty());
    // Bounded pages: at most `limit` keys read per page (filtered-out ones
    // too), resumed after the last digest read, every referrer once.
    let all: Vec<String> = e
        .referrers(&r, &subject, None)
        .expect("all")
        .iter()
        .map(|x| x.digest.to_string())
        .collect();
    for (filter, want) in [(None, 3), (Some("application/sbom"), 2)] {
        let mut got = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let (page, next) = e
                .referrers_page(&r, &subject, filter, after.as_ref(), 1)
                .expect("page");
            pages += 1;
            assert!(page.len() <= 1);
            got.extend(page.into_iter().map(|x| x.digest.to_string()));
            match next {
                Some(d) => after = Some(d),
                None => break,
            }
        }
        assert_eq!(got.len(), want, "{filter:?}");
        assert!(got.iter().all(|d| all.contains(d)));
        assert!(pages >= 3, "{filter:?}: {pages} pages");
    }
    assert_clean(&e);
}

#[test]
fn pagination_of_tags_and_catalog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let r = repo("p/tags");
    let body = b"{}".to_vec();
    let tags = ["a", "b", "c", "d"];
    e.put_manifest(
        &r,
        ManifestPut {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body,
            tags: tags.iter().map(|t| Tag::parse(t).expect("tag")).collect(),
            ..Default::default()
        },
    )
    .expect("put");
    let p = e.list_tags(&r, None, 2).expect("page 1");
    assert_eq!(
        (p.items.clone(), p.more),
        (vec!["a".into(), "b".into()], true)
    );
    let p = e.list_tags(&r, Some("b"), 2).expect("page 2");
    assert_eq!(
        (p.items.clone(), p.more),
        (vec!["c".into(), "d".into()], false)
    );
    assert!(e
        .list_tags(&r, Some("z"), 2)
        .expect("past end")
        .items
        .is_empty());
    assert!(e.list_tags(&r, None, 0).expect("n=0").items.is_empty());
    e.put_blob(&repo("p/tags2"), &sha(b"x"), b"x")
        .expect("blob");
    let c = e.catalog(Some("p/tags"), 10).expect("catalog");
    assert_eq!(c.items, vec!["p/tags2".to_string()]);
}

#[test]
fn abandoned_uploads_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let r = repo("p/x");
    let st = e.begin_upload(&r, Algorithm::Sha256).expect("begin");
    assert_eq!(
        e.expire_uploads(Duration::from_secs(3600)).expect("expire"),
        0
    );
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        e.expire_uploads(Duration::from_millis(1)).expect("expire"),
        1
    );
    assert!(e.upload_status(&r, &st.id).is_err());
    assert!(!dir.path().join("blobs/staging").join(&st.id).exists());
}

#[test]
fn second_open_of_a_held_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _e = engine(dir.path());
    let err = Engine::open(config(dir.path()))
        .err()
        .expect("second open refused");
    assert!(
        matches!(err, berth_engine::StorageError::Locked { .. }),
        "{err}"
    );
}

/// A store whose Nth `commit` fails as a failed fsync would: a real
/// `fsync` error (EINVAL from fsyncing a character device), tagged by the
/// durability helpers exactly as a failing disk's would be.
struct FailingStore {
    inner: berth_engine::store::LocalStore,
    puts_left: std::sync::atomic::AtomicUsize,
}

impl berth_engine::BlobStore for FailingStore {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn stage(&self, id: &str) -> Result<berth_engine::Staged, berth_engine::StoreError> {
        self.inner.stage(id)
    }
    fn open_staged(
        &self,
        id: &str,
    ) -> Result<Option<berth_engine::Staged>, berth_engine::StoreError> {
        self.inner.open_staged(id)
    }
    fn staged_ids(&self) -> Result<Vec<String>, berth_engine::StoreError> {
        self.inner.staged_ids()
    }
    fn abort(&self, id: &str) -> Result<(), berth_engine::StoreError> {
        self.inner.abort(id)
    }
    fn commit(
        &self,
        staged: berth_engine::Staged,
        digest: &Digest,
        mode: berth_engine::PutMode,
    ) -> Result<berth_engine::PutOutcome, berth_engine::StoreError> {
        use std::sync::atomic::Ordering;
        if self.puts_left.fetch_sub(1, Ordering::SeqCst) == 0 {
            let dev = std::path::Path::new("/dev/null");
            let file = std::fs::File::open(dev).expect("open /dev/null");
            let source =
                berth_engine::durable::fsync_file(&file, dev).expect_err("fsync of a device fails");
            return Err(berth_engine::StoreError::Io {
                op: "store file",
                path: std::path::PathBuf::from(staged.id()),
                source,
            });
        }
        self.inner.commit(staged, digest, mode)
    }
    fn put_bytes(
        &self,
        digest: &Digest,
        data: &[u8],
        mode: berth_engine::PutMode,
    ) -> Result<berth_engine::PutOutcome, berth_engine::StoreError> {
        self.inner.put_bytes(digest, data, mode)
    }
    fn get(
        &self,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<berth_engine::BlobData, berth_engine::StoreError> {
        self.inner.get(digest, range)
    }
    fn stat(&self, digest: &Digest) -> Result<Option<u64>, berth_engine::StoreError> {
        self.inner.stat(digest)
    }
    fn delete(&self, digest: &Digest) -> Result<bool, berth_engine::StoreError> {
        self.inner.delete(digest)
    }
    fn list(&self) -> Result<Vec<Digest>, berth_engine::StoreError> {
        self.inner.list()
    }
}

#[test]
fn a_failed_fsync_poisons_the_engine_until_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = repo("p/poison");
    let (a, b) = (b"first blob".to_vec(), b"second blob".to_vec());
    {
        let store = FailingStore {
            inner: berth_engine::store::LocalStore::open(&dir.path().join("blobs")).expect("store"),
            puts_left: std::sync::atomic::AtomicUsize::new(1),
        };
        let mut config = config(dir.path());
        config.store = Some(Arc::new(store));
        let e = Engine::open(config).expect("open");
        e.put_blob(&r, &sha(&a), &a).expect("first put succeeds");
        let err = e.put_blob(&r, &sha(&b), &b).unwrap_err();
        assert!(err.to_string().contains("fsync"), "{err}");
        // Every later write is refused, reads go on.
        let err = e.begin_upload(&r, Algorithm::Sha256).unwrap_err();
        assert!(
            matches!(
                err,
                UploadError::Storage(berth_engine::StorageError::Poisoned(_))
            ),
            "{err}"
        );
        assert!(e.stat_blob(&r, &sha(&a)).expect("stat").is_some());
        assert!(e.stat_blob(&r, &sha(&b)).expect("stat").is_none());
    }
    // Reopened on a healthy store, the engine writes again and kept the
    // acknowledged blob.
    let e = engine(dir.path());
    assert!(e.stat_blob(&r, &sha(&a)).expect("stat").is_some());
    e.put_blob(&r, &sha(&b), &b).expect("put after reopen");
    assert_clean(&e);
}

/// A chart version's manifest put with its chart entry.
fn chart_put(
    e: &Engine,
    r: &RepoName,
    version: &str,
    description: &str,
    write: berth_engine::ChartWrite,
) -> ManifestPut {
    let name = r.as_str().split('/').nth(1).expect("project/name");
    let config =
        format!(r#"{{"name":"{name}","version":"{version}","description":"{description}"}}"#);
    let tgz = format!("tgz of {name} {version}").into_bytes();
    let (c, t) = (sha(config.as_bytes()), sha(&tgz));
    e.put_blob(r, &c, config.as_bytes()).expect("config");
    e.put_blob(r, &t, &tgz).expect("tgz");
    ManifestPut {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: format!(r#"{{"config":"{c}","layers":["{t}"]}}"#).into_bytes(),
        blobs: vec![c, t.clone()],
        chart: Some(berth_engine::ChartEntry {
            name: name.into(),
            version: version.into(),
            metadata: config,
            chart: berth_engine::ChartBlob {
                digest: t,
                size: tgz.len() as u64,
            },
            prov: None,
            write,
        }),
        ..ManifestPut::default()
    }
}

#[test]
fn chart_index_follows_manifests_and_tags_in_the_same_batches() {
    use berth_engine::{ChartId, ChartWrite};
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let project = repo("lib");
    let r = repo("lib/demo");
    let id = ChartId::parse("lib", "demo", "1.0.0+b.1").expect("id");
    let generation = |e: &Engine| {
        e.chart_repo(&project)
            .expect("repo")
            .map(|s| (s.generation, s.versions))
    };

    let first = e
        .put_manifest(
            &r,
            chart_put(&e, &r, "1.0.0+b.1", "one", ChartWrite::Create),
        )
        .expect("put chart");
    assert_eq!(
        e.get_chart(&id).expect("get").expect("indexed").manifest,
        first
    );
    assert_eq!(generation(&e), Some((1, 1)));
    // The version tag (with `_` for `+`) was added in the same batch.
    let tag = Reference::Tag(Tag::parse("1.0.0_b.1").expect("tag"));
    assert_eq!(
        e.get_manifest(&r, &tag)
            .expect("get")
            .expect("tagged")
            .digest,
        first
    );
    assert_clean(&e);

    // Create refuses an existing version and changes nothing.
    let again = chart_put(&e, &r, "1.0.0+b.1", "two", ChartWrite::Create);
    assert!(matches!(
        e.put_manifest(&r, again),
        Err(ManifestError::ChartExists { .. })
    ));
    assert_eq!(generation(&e), Some((1, 1)));

    // Replace swaps the manifest; the old one leaves the repository.
    let second = e
        .put_manifest(
            &r,
            chart_put(&e, &r, "1.0.0+b.1", "two", ChartWrite::Replace),
        )
        .expect("replace");
    assert_ne!(first, second);
    assert!(e
        .get_manifest(&r, &Reference::Digest(first))
        .expect("get")
        .is_none());
    assert_eq!(
        e.get_chart(&id).expect("get").expect("indexed").manifest,
        second
    );
    assert_eq!(generation(&e), Some((2, 1)));
    assert_clean(&e);

    // A tag delete takes the version out of the index; the manifest stays.
    assert!(e
        .delete_tag(&r, &Tag::parse("1.0.0_b.1").expect("tag"))
        .expect("untag"));
    assert!(e.get_chart(&id).expect("get").is_none());
    assert_eq!(generation(&e), Some((3, 0)));
    assert_clean(&e);

    // Re-tagging (an OCI push that follows) brings it back; a manifest
    // delete takes it out again.
    let d = e
        .put_manifest(
            &r,
            chart_put(&e, &r, "1.0.0+b.1", "two", ChartWrite::Follow),
        )
        .expect("follow");
    assert_eq!(d, second);
    assert_eq!(generation(&e), Some((4, 1)));
    assert!(e.delete_manifest(&r, &d).expect("delete"));
    assert!(e.get_chart(&id).expect("get").is_none());
    assert_eq!(generation(&e), Some((5, 0)));
    assert_clean(&e);

    // A plain manifest moved onto the version tag un-indexes the chart.
    e.put_manifest(&r, chart_put(&e, &r, "2.0.0", "x", ChartWrite::Create))
        .expect("put 2.0.0");
    let plain = b"plain".to_vec();
    let pd = sha(&plain);
    e.put_blob(&r, &pd, &plain).expect("blob");
    e.put_manifest(
        &r,
        ManifestPut {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: format!(r#"{{"config":"{pd}"}}"#).into_bytes(),
            blobs: vec![pd],
            tags: vec![Tag::parse("2.0.0").expect("tag")],
            ..ManifestPut::default()
        },
    )
    .expect("plain over tag");
    assert!(e.list_charts(&project, None).expect("list").is_empty());
    assert_clean(&e);

    // Chart API deletes: one version, then all, manifests included.
    for v in ["3.0.0", "3.1.0", "4.0.0"] {
        e.put_manifest(&r, chart_put(&e, &r, v, v, ChartWrite::Create))
            .expect("put");
    }
    assert_eq!(
        e.delete_charts(&project, "demo", Some("3.1.0"))
            .expect("delete"),
        1
    );
    let left: Vec<_> = e
        .list_charts(&project, Some("demo"))
        .expect("list")
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(left, ["3.0.0", "4.0.0"]);
    assert_eq!(
        e.delete_charts(&project, "demo", None).expect("delete all"),
        2
    );
    assert_eq!(
        e.delete_charts(&project, "demo", None).expect("none left"),
        0
    );
    let tags = e.list_tags(&r, None, 100).expect("tags");
    assert!(
        !tags
            .items
            .iter()
            .any(|t| t.starts_with('3') || t.starts_with('4')),
        "{tags:?}"
    );
    assert_eq!(generation(&e).map(|g| g.1), Some(0));
    assert_clean(&e);

    // A chart must live in project/name.
    let wrong = repo("lib/other");
    let put = chart_put(&e, &r, "5.0.0", "x", ChartWrite::Create);
    assert!(matches!(
        e.put_manifest(&wrong, put),
        Err(ManifestError::ChartInvalid { .. })
    ));
}

/// Finding 12 of the security review: the durable offset must be read
/// after the writer holds the session. Threads race appends without an
/// offset (a PATCH without `Content-Range`), retrying while the session is
/// busy. Every acknowledged append must start where the previous one
/// ended, and the session must end up holding exactly the acknowledged
/// bytes in acknowledgment order: a writer that read the offset before a
/// concurrent commit would truncate that acknowledged chunk away.
#[test]
fn concurrent_appends_never_lose_an_acknowledged_chunk() {
    const THREADS: usize = 4;
    const APPENDS: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Arc::new(engine(dir.path()));
    let r = repo("race/chunks");
    let id = e.begin_upload(&r, Algorithm::Sha256).expect("begin").id;
    // (start, end, chunk) of every acknowledged append, as the engine said.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(u64, u64, Vec<u8>)>::new()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (e, r, id, acked) = (e.clone(), r.clone(), id.clone(), acked.clone());
            std::thread::spawn(move || {
                for i in 0..APPENDS {
                    let chunk = format!("[thread {t} chunk {i}]").into_bytes();
                    loop {
                        match e.upload_writer(&r, &id, None) {
                            Ok(mut w) => {
                                let start = w.offset();
                                w.write(&chunk).expect("write");
                                let status = w.commit().expect("commit");
                                acked
                                    .lock()
                                    .expect("acked")
                                    .push((start, status.offset, chunk));
                                break;
                            }
                            Err(UploadError::Busy { .. }) => std::thread::yield_now(),
                            Err(err) => panic!("thread {t}: {err}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("appender panicked");
    }
    let mut acked = acked.lock().expect("acked").clone();
    acked.sort_by_key(|(start, _, _)| *start);
    let mut want = Vec::new();
    for (start, end, chunk) in &acked {
        assert_eq!(
            *start,
            want.len() as u64,
            "an append started at {start}, not where the acknowledged bytes end"
        );
        assert_eq!(*end, start + chunk.len() as u64);
        want.extend_from_slice(chunk);
    }
    assert_eq!(acked.len(), THREADS * APPENDS);
    let status = e.upload_status(&r, &id).expect("status");
    assert_eq!(status.offset, want.len() as u64, "durable offset");
    let info = e
        .complete_upload(&r, &id, &sha(&want), Some(want.len() as u64))
        .expect("the acknowledged bytes, in order, are the blob");
    let (_, bytes) = e.read_blob(&r, &info.digest, None).expect("read");
    assert_eq!(bytes.as_ref(), &want[..]);
    assert_clean(&e);
}

/// Open sessions are bounded per owner; completing, cancelling or expiring
/// one frees its slot, other owners and ownerless sessions are not
/// affected, and the count survives a reopen.
#[test]
fn upload_sessions_are_bounded_per_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    config.max_uploads_per_owner = 3;
    let e = Engine::open(config.clone()).expect("open");
    let r = repo("bound/sessions");
    let ids: Vec<String> = (0..3)
        .map(|_| {
            e.begin_upload_as(&r, Algorithm::Sha256, "alice")
                .expect("begin")
                .id
        })
        .collect();
    let refused = e.begin_upload_as(&r, Algorithm::Sha256, "alice");
    assert!(
        matches!(refused, Err(UploadError::TooMany { limit: 3, .. })),
        "{refused:?}"
    );
    e.begin_upload_as(&r, Algorithm::Sha256, "bob")
        .expect("another owner");
    e.begin_upload(&r, Algorithm::Sha256).expect("ownerless");
    // A refused begin left nothing behind: 3 + bob + ownerless.
    assert_eq!(e.stats().expect("stats").uploads, 5);

    e.cancel_upload(&r, &ids[0]).expect("cancel");
    let again = e
        .begin_upload_as(&r, Algorithm::Sha256, "alice")
        .expect("slot freed by cancel")
        .id;
    let data = b"bounded".to_vec();
    let mut w = e.upload_writer(&r, &ids[1], Some(0)).expect("writer");
    w.write(&data).expect("write");
    w.complete(&sha(&data), None).expect("complete");
    e.begin_upload_as(&r, Algorithm::Sha256, "alice")
        .expect("slot freed by completion");
    assert!(matches!(
        e.begin_upload_as(&r, Algorithm::Sha256, "alice"),
        Err(UploadError::TooMany { .. })
    ));
    drop(e);

    // Reopen: the count is rebuilt from the records.
    let e = Engine::open(config).expect("reopen");
    assert!(matches!(
        e.begin_upload_as(&r, Algorithm::Sha256, "alice"),
        Err(UploadError::TooMany { .. })
    ));
    e.cancel_upload(&r, &again).expect("cancel");
    e.begin_upload_as(&r, Algorithm::Sha256, "alice")
        .expect("slot freed after reopen");
    // Expiry takes sessions updated before now.
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(e.expire_uploads(Duration::ZERO).expect("expire"), 5);
    for _ in 0..3 {
        e.begin_upload_as(&r, Algorithm::Sha256, "alice")
            .expect("slots freed by expiry");
    }
    assert_clean(&e);
}

/// Finding 1 of the security review, at the engine: one digest has one
/// record and one parse. The same bytes pushed under another media type
/// (another reading of the body) are refused wherever they are pushed, and
/// a delete releases exactly what the put counted.
#[test]
fn one_digest_one_media_type_and_one_reference_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let (victim, attacker) = (repo("library/app"), repo("evil/app"));
    let layer = b"victim layer".to_vec();
    let ld = sha(&layer);
    e.put_blob(&victim, &ld, &layer).expect("victim layer");
    e.mount_blob(&attacker, &ld, Some(&victim))
        .expect("mount")
        .expect("mounted");
    let child_body = b"{\"child\":1}".to_vec();
    let child = e
        .put_manifest(
            &attacker,
            ManifestPut {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                body: child_body,
                ..ManifestPut::default()
            },
        )
        .expect("child");
    let body = b"{\"ambiguous\":true}".to_vec();
    let as_image = ManifestPut {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: body.clone(),
        blobs: vec![ld.clone()],
        ..ManifestPut::default()
    };
    let as_index = ManifestPut {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        body: body.clone(),
        manifests: vec![child.clone()],
        ..ManifestPut::default()
    };
    let d = e.put_manifest(&attacker, as_image.clone()).expect("image");
    assert_eq!(e.blob_record(&ld).expect("rec").expect("rec").refcount, 1);
    let media_type = |r: &RepoName| {
        e.get_manifest(r, &Reference::Digest(d.clone()))
            .expect("get")
            .map(|m| m.media_type)
    };
    // Read once: the node now holds the body.
    assert_eq!(
        media_type(&attacker).as_deref(),
        Some(as_image.media_type.as_str())
    );
    let before = snapshot(&e);
    for r in [&attacker, &victim] {
        let res = e.put_manifest(r, as_index.clone());
        assert!(
            matches!(res, Err(ManifestError::MediaTypeConflict { .. })),
            "{res:?}"
        );
    }
    assert_eq!(snapshot(&e), before, "a refused put changes nothing");
    // The same reading elsewhere counts the record's list, and each delete
    // releases exactly that.
    e.put_manifest(&victim, as_image)
        .expect("same type in another repo");
    assert_eq!(e.blob_record(&ld).expect("rec").expect("rec").refcount, 2);
    assert!(e.delete_manifest(&attacker, &d).expect("delete"));
    assert_eq!(e.blob_record(&ld).expect("rec").expect("rec").refcount, 1);
    assert!(e.delete_manifest(&victim, &d).expect("delete"));
    assert_eq!(e.blob_record(&ld).expect("rec").expect("rec").refcount, 0);
    assert_eq!(media_type(&attacker), None, "deleted, whatever is cached");
    // Once no repository holds the bytes, a new first put decides again,
    // and reads serve the new reading, not the one read before.
    e.put_manifest(&attacker, as_index.clone())
        .expect("index now");
    assert_eq!(
        media_type(&attacker).as_deref(),
        Some(as_index.media_type.as_str())
    );
    assert_eq!(e.blob_record(&ld).expect("rec").expect("rec").refcount, 0);
    assert_eq!(
        e.repo_manifest_record(&attacker, &child)
            .expect("rm")
            .expect("rm")
            .parents,
        1
    );
    assert_clean(&e);
}

/// Cluster mode: a tag PUT of a stored manifest — a new tag, a moved tag,
/// an unchanged tag — is two database calls: the write lock with every
/// read the request names, then the batch with its COMMIT. Each is one
/// round trip, made under the cluster's write lock.
#[test]
fn a_tag_put_is_two_database_calls_in_cluster_mode() {
    let Some(db) = berth_engine::DatabaseConfig::for_test() else {
        eprintln!("BERTH_TEST_DATABASE_URL is not set: skipped");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = EngineConfig::new(dir.path());
    c.database = Some(db);
    let e = Engine::open(c).expect("open engine");
    let r = repo("p/t");
    let layer = b"tagged layer".to_vec();
    let ld = sha(&layer);
    e.put_blob(&r, &ld, &layer).expect("layer");
    let put = |body: &str, tags: &[&str]| ManifestPut {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: body.as_bytes().to_vec(),
        blobs: vec![ld.clone()],
        tags: tags.iter().map(|t| Tag::parse(t).expect("tag")).collect(),
        ..Default::default()
    };
    let m1 = e.put_manifest(&r, put("{\"a\":1}", &["one"])).expect("m1");
    let m2 = e.put_manifest(&r, put("{\"a\":2}", &["two"])).expect("m2");
    let calls = || e.database_stats().expect("cluster mode").calls;
    for (body, tag, target) in [
        ("{\"a\":1}", "new", &m1), // a new tag
        ("{\"a\":2}", "new", &m2), // moved to another manifest
        ("{\"a\":2}", "new", &m2), // unchanged
        ("{\"a\":1}", "two", &m1), // moved off a manifest with no tag left
    ] {
        let before = calls();
        assert_eq!(&e.put_manifest(&r, put(body, &[tag])).expect("put"), target);
        assert_eq!(calls() - before, 2, "database calls of a PUT of tag {tag}");
        let t = Reference::parse(tag).expect("tag");
        let got = e.get_manifest(&r, &t).expect("get").expect("tagged");
        assert_eq!(&got.digest, target);
    }
    assert_clean(&e);
}

/// Usage counts each blob once per project, whichever repositories link
/// it and however (upload, mount); another project counts it again; a
/// push over the limit is refused before the store holds its bytes, and a
/// mount over it writes nothing; unlinks and GC bring usage down; fsck
/// agrees throughout.
#[test]
fn quotas_count_a_blob_once_per_project_and_refuse_before_storing() {
    use berth_engine::gc::GcOptions;
    use berth_engine::StorageError;
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    e.create_project_with("p", false, None, None, Some(250_000))
        .expect("project p");
    e.create_project("q", false, None).expect("project q");
    let used = |p: &str| {
        let q = e.quota(p).expect("quota").expect("project");
        (q.used.bytes, q.used.blobs)
    };
    let a = vec![1u8; 100_000];
    let b = vec![2u8; 100_000];
    let c = vec![3u8; 100_000];
    let (da, db, dc) = (sha(&a), sha(&b), sha(&c));
    e.put_blob(&repo("p/one"), &da, &a).expect("a into p/one");
    e.put_blob(&repo("p/two"), &da, &a).expect("a into p/two");
    e.mount_blob(&repo("p/three"), &da, Some(&repo("p/one")))
        .expect("mount")
        .expect("mounted");
    assert_eq!(used("p"), (100_000, 1), "one blob, three repositories");
    e.put_blob(&repo("q/x"), &da, &a).expect("a into q/x");
    assert_eq!(used("q"), (100_000, 1), "another project counts it again");
    e.put_blob(&repo("p/one"), &db, &b).expect("b into p/one");
    assert_eq!(used("p"), (200_000, 2));
    assert_clean(&e);

    // Over the limit: refused before the bytes are stored.
    let stored = e.store().list().expect("list");
    let before = snapshot(&e);
    match e.put_blob(&repo("p/two"), &dc, &c) {
        Err(UploadError::Storage(StorageError::QuotaExceeded {
            project,
            adding,
            used,
            limit,
        })) => {
            assert_eq!(
                (project.as_str(), adding, used, limit),
                ("p", 100_000, 200_000, 250_000)
            );
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(
        e.store().list().expect("list"),
        stored,
        "no new blob stored"
    );
    assert!(!e.blob_exists(&dc).expect("exists"));
    assert_eq!(snapshot(&e), before);
    // A blob the project holds already adds nothing: accepted.
    e.put_blob(&repo("p/four"), &db, &b)
        .expect("b again, in p/four");
    assert_eq!(used("p"), (200_000, 2));
    // A mount from another project adds its bytes: refused at the commit.
    e.put_blob(&repo("q/x"), &dc, &c).expect("c into q/x");
    assert!(matches!(
        e.mount_blob(&repo("p/one"), &dc, Some(&repo("q/x"))),
        Err(berth_engine::BlobError::Storage(
            StorageError::QuotaExceeded { .. }
        ))
    ));
    assert!(e.stat_blob(&repo("p/one"), &dc).expect("stat").is_none());
    assert_eq!(used("p"), (200_000, 2));

    // Unlinks: usage drops once the last repository of the project lets
    // the blob go.
    e.unlink_blob(&repo("p/one"), &db).expect("unlink");
    assert_eq!(used("p"), (200_000, 2), "p/four still links b");
    e.unlink_blob(&repo("p/four"), &db).expect("unlink");
    assert_eq!(used("p"), (100_000, 1));
    // Raising the limit lets the push through.
    e.set_storage_limit("p", None).expect("unlimited");
    e.put_blob(&repo("p/two"), &dc, &c).expect("c into p/two");
    assert_eq!(used("p"), (200_000, 2));
    assert_clean(&e);
    // GC frees unreferenced blobs and their links: usage follows.
    e.gc(&GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    })
    .expect("gc");
    assert_eq!(used("p"), (0, 0));
    assert_eq!(used("q"), (0, 0));
    assert_clean(&e);
}

fn retention_rule(
    template: &str,
    n: u64,
    repos: &str,
    tags: &str,
) -> berth_engine::records::RetentionRuleRecord {
    use berth_engine::records::{RetentionRuleRecord, Selector};
    RetentionRuleRecord {
        disabled: false,
        template: template.into(),
        n,
        repos: Selector {
            pattern: repos.into(),
            excludes: false,
        },
        tags: Selector {
            pattern: tags.into(),
            excludes: false,
        },
        untagged: false,
    }
}

/// Retention keeps what some rule keeps and deletes the rest of the
/// repositories its rules cover; an artifact re-tagged after the plan, or
/// held by an immutability rule, is kept; a dry run deletes nothing.
#[test]
fn retention_deletes_what_no_rule_keeps_and_nothing_that_changed() {
    use berth_engine::immutable::RuleSpec;
    use berth_engine::records::Selector;
    use berth_engine::retention::{DELETE, KEPT, RETAIN};
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    e.create_project("p", false, None).expect("project");
    let (app, other) = (repo("p/app"), repo("p/other"));
    let layer = b"retention layer".to_vec();
    let ld = sha(&layer);
    let mut digests = Vec::new();
    for (r, body, tags) in [
        (&app, "1", vec!["v1"]),
        (&app, "2", vec!["v2"]),
        (&app, "3", vec!["v3", "stable"]),
        (&app, "4", vec!["v4"]),
        (&app, "5", vec![]),
        (&other, "6", vec!["v1"]),
    ] {
        e.put_blob(r, &ld, &layer).expect("layer");
        let put = ManifestPut {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: format!("{{\"n\":{body}}}").into_bytes(),
            blobs: vec![ld.clone()],
            tags: tags.iter().map(|t| Tag::parse(t).expect("tag")).collect(),
            ..Default::default()
        };
        digests.push(e.put_manifest(r, put).expect("manifest"));
        // Push times differ.
        std::thread::sleep(Duration::from_millis(3));
    }
    let rules = vec![
        retention_rule("latestPushedK", 1, "app", "v*"),
        retention_rule("always", 0, "app", "stable"),
    ];
    let plan = e
        .plan_retention("p", &rules, berth_engine::records::now_ms())
        .expect("plan");
    assert_eq!(plan.tasks.len(), 1, "p/other is not covered");
    let task = &plan.tasks[0];
    assert_eq!(
        (task.repository.as_str(), task.total, task.retained),
        ("p/app", 5, 2)
    );
    let action = |t: &berth_engine::records::RetentionTaskRecord, d: &Digest| {
        t.items
            .iter()
            .find(|i| i.digest == d.to_string())
            .expect("item")
            .action
            .clone()
    };
    assert_eq!(action(task, &digests[3]), RETAIN, "v4: the latest v*");
    assert_eq!(action(task, &digests[2]), RETAIN, "stable");
    for d in [&digests[0], &digests[1], &digests[4]] {
        assert_eq!(action(task, d), DELETE);
    }
    assert_eq!(plan.deletions(), 3);

    // Between plan and apply: v2 is tagged again, v1 becomes immutable.
    let again = ManifestPut {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: b"{\"n\":2}".to_vec(),
        blobs: vec![ld.clone()],
        tags: vec![Tag::parse("hotfix").expect("tag")],
        ..Default::default()
    };
    assert_eq!(
        e.put_manifest(&app, again).expect("tag v2 again"),
        digests[1]
    );
    e.create_immutable_rule(
        "p",
        RuleSpec {
            disabled: false,
            repos: Selector {
                pattern: "**".into(),
                excludes: false,
            },
            tags: Selector {
                pattern: "v1".into(),
                excludes: false,
            },
        },
    )
    .expect("immutable rule");
    let (done, stopped) = e.apply_retention(plan, || false).expect("apply");
    assert!(!stopped);
    let task = &done.tasks[0];
    assert_eq!(action(task, &digests[0]), KEPT, "immutable v1");
    assert_eq!(action(task, &digests[1]), KEPT, "re-tagged after the plan");
    assert_eq!(action(task, &digests[4]), DELETE, "the untagged one went");
    assert_eq!(task.status, "Succeed");
    assert_eq!(task.retained, 4);
    for (i, present) in [(0, true), (1, true), (2, true), (3, true), (4, false)] {
        let held = e
            .repo_manifest_record(&app, &digests[i])
            .expect("read")
            .is_some();
        assert_eq!(held, present, "manifest {i}");
    }
    assert!(e
        .repo_manifest_record(&other, &digests[5])
        .expect("read")
        .is_some());

    // A dry run plans only.
    let before = snapshot(&e);
    let plan = e
        .plan_retention(
            "p",
            &[retention_rule("latestPushedK", 1, "**", "**")],
            berth_engine::records::now_ms(),
        )
        .expect("plan");
    assert!(plan.deletions() > 0);
    assert_eq!(snapshot(&e), before);
    assert_clean(&e);
}

/// One run of a policy at a time; a run whose node stopped beating is
/// ended by the next run; runs left running at a restart end as Failed;
/// deleting the policy deletes its runs.
#[test]
fn retention_runs_are_one_at_a_time_and_a_dead_run_ends() {
    use berth_engine::records::RetentionPolicyRecord;
    use berth_engine::{AccountError, StorageError};
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    e.create_project("p", false, None).expect("project");
    let rec = RetentionPolicyRecord {
        project: "p".into(),
        rules: vec![retention_rule("latestPushedK", 3, "**", "**")],
        cron: String::new(),
        created_ms: 1,
        updated_ms: 1,
    };
    let id = e.create_retention_policy(rec.clone()).expect("policy");
    assert!(
        matches!(
            e.create_retention_policy(rec.clone()),
            Err(AccountError::Storage(StorageError::Conflict(_)))
        ),
        "one policy per project"
    );
    let bad = RetentionPolicyRecord {
        project: "nope".into(),
        ..rec.clone()
    };
    assert!(matches!(
        e.create_retention_policy(bad),
        Err(AccountError::NotFound { .. })
    ));
    assert_eq!(
        e.retention_policy_of("p").expect("read").map(|(i, _)| i),
        Some(id)
    );

    let run = e.begin_retention_run(id, "MANUAL", true).expect("run");
    assert!(matches!(
        e.begin_retention_run(id, "MANUAL", true),
        Err(AccountError::Storage(StorageError::Conflict(_)))
    ));
    assert!(e.beat_retention_run(run).expect("beat"));
    e.end_retention_run(run, "Succeed", String::new(), Vec::new())
        .expect("end");
    assert!(
        !e.beat_retention_run(run).expect("beat"),
        "an ended run beats no more"
    );

    let second = e
        .begin_retention_run(id, "SCHEDULE", false)
        .expect("second");
    drop(e);
    let e = engine(dir.path());
    assert_eq!(e.abandon_retention_runs().expect("abandon"), 1);
    let r = e.retention_run(second).expect("read").expect("run");
    assert_eq!((r.status.as_str(), r.end_ms.is_some()), ("Failed", true));
    let runs = e.retention_runs(id).expect("runs");
    assert_eq!(
        runs.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![second, run]
    );
    assert!(e.delete_retention_policy(id).expect("delete"));
    assert!(e.retention_runs(id).expect("runs").is_empty());
    assert!(e.retention_run(run).expect("read").is_none());
    assert!(!e.delete_retention_policy(id).expect("again"));
}

/// The GC history is in the index: runs and their reports survive a
/// restart, and the newest 50 are kept.
#[test]
fn gc_history_survives_a_restart() {
    use berth_engine::gc::GcOptions;
    use berth_engine::GcRunStatus;
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path());
    let report = e.gc(&GcOptions::default()).expect("gc");
    let runs = e.gc_runs().expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, GcRunStatus::Success);
    assert_eq!(runs[0].report.as_ref(), Some(&report));
    drop(e);
    let e = engine(dir.path());
    assert_eq!(e.gc_runs().expect("runs"), runs, "the same after a restart");
    for _ in 0..55 {
        e.gc(&GcOptions::default()).expect("gc");
    }
    let runs = e.gc_runs().expect("runs");
    assert_eq!(runs.len(), 50);
    assert!(runs.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert!(runs.iter().all(|r| r.status == GcRunStatus::Success));
}

/// User groups (Harbor's `/usergroups`): records by id with a unique,
/// normalized DN; renamed in place; deleted with every project membership
/// of their DN in one batch; their ids survive a restart.
#[test]
fn user_groups_are_records_by_id_and_take_their_memberships_along() {
    use berth_engine::{AccountError, Role};
    let dir = tempfile::tempdir().expect("tempdir");
    let (devs, ops) = {
        let e = engine(dir.path());
        e.create_project("a", false, None).expect("project a");
        e.create_project("b", false, None).expect("project b");
        let devs = e
            .create_user_group("devs", "CN=Devs, OU=Groups,DC=x")
            .expect("devs");
        let ops = e.create_user_group("ops", "cn=ops,dc=x").expect("ops");
        assert_ne!(devs, ops);
        let rec = e.user_group(devs).expect("read").expect("devs is there");
        assert_eq!(rec.name, "devs");
        assert_eq!(rec.group_type, berth_engine::usergroups::LDAP_GROUP);
        assert_eq!(rec.ldap_dn, "cn=devs,ou=groups,dc=x");
        // One group per DN, whatever its spelling; bad names and DNs.
        for (name, dn) in [
            ("again", "cn=devs,ou=groups,dc=x"),
            ("x", "cn=DEVS , ou=groups,dc=x"),
        ] {
            assert!(
                matches!(
                    e.create_user_group(name, dn),
                    Err(AccountError::Exists { .. })
                ),
                "{dn}"
            );
        }
        for (name, dn) in [
            ("", "cn=y,dc=x"),
            ("a\nb", "cn=y,dc=x"),
            ("y", "devs"),
            ("y", ""),
        ] {
            assert!(
                matches!(
                    e.create_user_group(name, dn),
                    Err(AccountError::Invalid { .. })
                ),
                "{name:?} {dn:?}"
            );
        }
        let long = "n".repeat(berth_engine::usergroups::MAX_GROUP_NAME + 1);
        assert!(e.create_user_group(&long, "cn=y,dc=x").is_err());
        assert_eq!(
            e.user_group_by_dn("cn=Ops,DC=x")
                .expect("read")
                .map(|(id, _)| id),
            Some(ops)
        );
        // Renaming changes the name only.
        let renamed = e.rename_user_group(devs, "developers").expect("rename");
        assert_eq!(renamed.name, "developers");
        assert_eq!(renamed.ldap_dn, rec.ldap_dn);
        assert!(matches!(
            e.rename_user_group(999, "x"),
            Err(AccountError::NotFound { .. })
        ));
        assert!(e.rename_user_group(devs, " ").is_err());

        // The DN's memberships in two projects (one given in another
        // spelling) go with the group; the other group's stay.
        e.set_group_member("a", &rec.ldap_dn, Role::Developer)
            .expect("a");
        e.set_group_member("b", "cn=devs,OU=groups,dc=x", Role::Guest)
            .expect("b");
        e.set_group_member("b", "cn=ops,dc=x", Role::Maintainer)
            .expect("ops in b");
        let mut gone = e.delete_user_group(devs).expect("delete");
        gone.sort();
        assert_eq!(gone, ["a", "b"]);
        assert!(e.group_members("a").expect("a").is_empty());
        let left: Vec<String> = e
            .group_members("b")
            .expect("b")
            .into_iter()
            .map(|(dn, _)| dn)
            .collect();
        assert_eq!(left, ["cn=ops,dc=x"]);
        assert_eq!(e.user_group(devs).expect("read"), None);
        assert!(matches!(
            e.delete_user_group(devs),
            Err(AccountError::NotFound { .. })
        ));
        // The DN is free again.
        let devs = e
            .create_user_group("devs", "cn=devs,ou=groups,dc=x")
            .expect("devs again");
        assert_clean(&e);
        (devs, ops)
    };
    // Reopened: the groups are there, in id order, and ids go on.
    let e = engine(dir.path());
    let ids: Vec<u64> = e
        .user_groups()
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [ops, devs]);
    let next = e.create_user_group("qa", "cn=qa,dc=x").expect("qa");
    assert!(next > devs);
    assert_clean(&e);
}

/// Console sessions are records by the cookie's hash: they survive a
/// restart, end when deleted, and a sign-in purges expired ones.
#[test]
fn console_sessions_survive_restarts_and_expired_ones_go() {
    use berth_engine::records::{now_ms, SessionRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = |user: &str, expires_ms| SessionRecord {
        user: user.into(),
        crd: "stamp".into(),
        csrf: "csrf".into(),
        created_ms: 1,
        expires_ms,
    };
    let (live, old) = ("a".repeat(64), "b".repeat(64));
    {
        let e = engine(dir.path());
        e.create_session(&old, rec("ann", 1))
            .expect("expired session");
        assert_eq!(e.session(&old).expect("read"), Some(rec("ann", 1)));
        e.create_session(&live, rec("bob", now_ms() + 60_000))
            .expect("session");
        assert_eq!(
            e.session(&old).expect("read"),
            None,
            "a sign-in purges expired sessions"
        );
    }
    let e = engine(dir.path());
    let got = e.session(&live).expect("read").expect("after a restart");
    assert_eq!(got.user, "bob");
    assert!(e.end_session(&live).expect("end"));
    assert!(!e.end_session(&live).expect("end again"));
    assert_eq!(e.session(&live).expect("read"), None);
}
