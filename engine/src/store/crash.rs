//! Crash tests of the local store's staging and commit on the
//! crash-simulating filesystem ([`SimFs`]): every step of a commit is a
//! crash point, every crash image is reopened, recovered and checked.
//!
//! Recovery and the client's retry are what the engine does
//! (`Inner::recover_uploads`, then a new upload of the same bytes): the
//! session record of the upload (in the index, not on this filesystem)
//! survives every crash before the commit's index batch, so recovery cuts
//! the staged blob back to the session's durable offset if the store still
//! has it, and aborts every other staged id.
//!
//! The invariants checked on every image:
//! 1. Every stored blob's bytes hash to its digest (no truncated or
//!    rewritten blob), before and after the retry.
//! 2. A commit that returned `Ok` before the crash point is still there.
//! 3. After the retry the blob is stored with its bytes, a blob stored
//!    before the upload is untouched, and nothing is left staged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fs::Fs;
use super::simfs::SimFs;
use super::{BlobStore, LocalStore, PutMode};
use crate::digest::{Algorithm, Digest};

const ROOT: &str = "/data/blobs";
const ID: &str = "0123456789abcdef0123456789abcdef";

fn blob_path(d: &Digest) -> PathBuf {
    Path::new(ROOT)
        .join(d.algorithm().name())
        .join(&d.hex()[..2])
        .join(d.hex())
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Every blob file on `fs` whose bytes do not hash to its name.
fn damaged(fs: &SimFs, store: &LocalStore) -> Vec<String> {
    let mut bad = Vec::new();
    for d in store.list().expect("list") {
        let bytes = fs.read(&blob_path(&d)).unwrap_or_default();
        if Digest::of(d.algorithm(), &bytes) != d {
            bad.push(format!("{d}: {} bytes that hash otherwise", bytes.len()));
        }
    }
    bad
}

/// A scenario's upload: `len` bytes of which `offset` were acknowledged
/// (0 for a single POST or POST+PUT, more after PATCHes), committed with
/// `mode`; `present` stores the same bytes first (a re-push).
struct Upload {
    len: usize,
    offset: usize,
    mode: PutMode,
    present: bool,
}

/// What the engine's recovery does, then the client's retry (a new upload
/// of the same bytes), on a store reopened on a crash image.
fn recover_and_retry(store: &LocalStore, offset: u64, bytes: &[u8], d: &Digest) {
    // Inner::recover_uploads: the session record of ID survives.
    let mut live = false;
    if let Some(s) = store.open_staged(ID).expect("open staged") {
        let len = s.len().expect("len");
        if len >= offset {
            s.truncate(offset).expect("truncate");
            s.sync().expect("sync");
            live = true;
        }
    }
    for id in store.staged_ids().expect("staged ids") {
        if id != ID || !live {
            store.abort(&id).expect("abort orphan");
        }
    }
    // The client retries with a new upload.
    let s = store.stage("retry").expect("stage retry");
    s.write_at(bytes, 0).expect("write retry");
    s.sync().expect("sync retry");
    store
        .commit(s, d, PutMode::CreateOnly)
        .expect("commit retry");
    // The abandoned session expires.
    store.abort(ID).expect("expire session");
}

fn run(u: &Upload) -> (usize, usize) {
    let fs = SimFs::new();
    let bytes = data(u.len, 7);
    let d = Digest::of(Algorithm::Sha256, &bytes);
    let other = data(3000, 99);
    let od = Digest::of(Algorithm::Sha256, &other);
    {
        let store = LocalStore::open_with_fs(Path::new(ROOT), Arc::new(fs.clone())).expect("open");
        store
            .put_bytes(&od, &other, PutMode::CreateOnly)
            .expect("put other");
        if u.present {
            store
                .put_bytes(&d, &bytes, PutMode::CreateOnly)
                .expect("put present");
        }
        let s = store.stage(ID).expect("stage");
        s.write_at(&bytes[..u.offset], 0).expect("write acked");
        s.sync().expect("sync acked");
        // From here on the session record says `offset` is durable.
        fs.record();
        s.write_at(&bytes[u.offset..], u.offset as u64)
            .expect("write rest");
        s.sync().expect("sync rest");
        store.commit(s, &d, u.mode).expect("commit");
    }
    let acked_at = fs.crash_points();
    let images = fs.crash_images();
    let n = images.len();
    for (point, img) in images {
        let store = LocalStore::open_with_fs(Path::new(ROOT), Arc::new(img.clone()))
            .unwrap_or_else(|e| panic!("reopen at crash point {point}: {e}"));
        let bad = damaged(&img, &store);
        assert!(
            bad.is_empty(),
            "crash point {point}: damaged after crash: {bad:?}"
        );
        if point + 1 >= acked_at || u.present {
            assert_eq!(
                img.read(&blob_path(&d)).as_deref(),
                Some(&bytes[..]),
                "crash point {point}: acknowledged blob {d} lost"
            );
        }
        recover_and_retry(&store, u.offset as u64, &bytes, &d);
        let bad = damaged(&img, &store);
        assert!(
            bad.is_empty(),
            "crash point {point}: damaged after recovery: {bad:?}"
        );
        assert_eq!(
            img.read(&blob_path(&d)).as_deref(),
            Some(&bytes[..]),
            "crash point {point}: blob {d} after the retry"
        );
        assert_eq!(
            img.read(&blob_path(&od)).as_deref(),
            Some(&other[..]),
            "crash point {point}: earlier blob {od}"
        );
        assert_eq!(
            store.staged_ids().expect("ids"),
            Vec::<String>::new(),
            "crash point {point}: left staged"
        );
    }
    (acked_at, n)
}

#[test]
fn staged_commit_survives_a_crash_at_every_step() {
    let cases = [
        // Single POST / POST+PUT: nothing acknowledged before the commit.
        (0, PutMode::CreateOnly, false),
        // POST+PATCH+PUT: part acknowledged.
        (2500, PutMode::CreateOnly, false),
        // All acknowledged, then PUT without a body.
        (5000, PutMode::CreateOnly, false),
        // A re-push of stored bytes.
        (0, PutMode::CreateOnly, true),
        (0, PutMode::Overwrite, false),
        (0, PutMode::Overwrite, true),
    ];
    for (offset, mode, present) in cases {
        let u = Upload {
            len: 5000,
            offset,
            mode,
            present,
        };
        let (points, images) = run(&u);
        assert!(
            points >= 4,
            "too few crash points ({points}) to mean anything"
        );
        eprintln!(
            "offset {offset} {mode:?} present={present}: {points} crash points, {images} images"
        );
    }
}

/// The protocol before store-owned staging (an upload file the engine
/// owned, `link(2)` into the store, an unlink that was not made durable,
/// recovery truncating the upload file to the session's durable offset),
/// written against the same [`Fs`]: the simulator finds the crash that
/// truncates a published blob (issue #10, problem 1). Kept so the test
/// above is known to see this class of bug.
#[test]
fn the_old_link_protocol_truncates_a_published_blob() {
    let fs = SimFs::new();
    let bytes = data(5000, 7);
    let d = Digest::of(Algorithm::Sha256, &bytes);
    let uploads = Path::new("/data/uploads");
    let upload = uploads.join(ID);
    let store = LocalStore::open_with_fs(Path::new(ROOT), Arc::new(fs.clone())).expect("open");
    fs.create_dir_all(uploads).expect("mkdir uploads");
    // begin_upload + a single POST: file durable, session offset 0.
    let f = fs.create_new(&upload).expect("create upload");
    fs.fsync_dir(uploads).expect("fsync uploads");
    fs.record();
    f.write_at(&bytes, 0).expect("write");
    f.sync().expect("sync");
    // The old LocalStore::place, CreateOnly.
    let shard = blob_path(&d).parent().expect("shard").to_path_buf();
    fs.create_dir_all(&shard).expect("mkdir shard");
    fs.link(&upload, &blob_path(&d)).expect("link");
    fs.fsync_dir(&shard).expect("fsync shard");
    fs.remove_file(&upload).expect("unlink, not made durable");
    drop(store);

    let mut found = Vec::new();
    for (point, img) in fs.crash_images() {
        // The old recover_uploads: the session record survives; truncate
        // its file to the durable offset, 0.
        if let Ok(f) = img.open_rw(&upload) {
            if f.size().expect("len") > 0 {
                f.set_len(0).expect("truncate");
                f.sync().expect("sync");
            }
        }
        let store =
            LocalStore::open_with_fs(Path::new(ROOT), Arc::new(img.clone())).expect("reopen");
        let bad = damaged(&img, &store);
        if !bad.is_empty() {
            found.push(format!("crash point {point}: {bad:?}"));
        }
    }
    assert!(
        !found.is_empty(),
        "the simulator no longer finds the truncation through a hard link"
    );
    eprintln!("old protocol, found: {found:?}");
}
