//! The shared blob store test suite: every [`BlobStore`] backend must pass it.
//!
//! Not `cfg(test)`: other crates and later backends (S3, tiered) call these
//! functions from their own tests, like object_store's `integration.rs`.
//! Each function panics with a message naming the store, the step and the
//! digest when the store misbehaves.
//!
//! Rules for callers:
//! - Give each run a store no one else is writing to, and run the functions
//!   sequentially ([`list_returns_exactly_what_was_put`] compares whole
//!   listings). Blobs written and ids staged by one function are deleted
//!   before it returns, so the functions can run in any order on one store,
//!   and [`store_is_empty`] holds after each.
//!
//! Some checks deliberately store bytes under a digest they do not hash to,
//! to observe whether a put replaced content; they rely on the trait's
//! contract that stores do not re-hash.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use super::{BlobStore, PutMode, PutOutcome, Staged, StoreError};
use crate::digest::{Algorithm, Digest};

/// Runs every check below, in order, then checks the store is empty.
pub fn run_all(store: &dyn BlobStore) {
    missing_blob(store);
    roundtrip(store);
    ranges(store);
    stat_reports_size(store);
    create_only_keeps_existing(store);
    overwrite_replaces(store);
    data_survives_overwrite_and_delete(store);
    delete_then_not_found(store);
    commit_removes_staged(store);
    staged_writes_read_back(store);
    staged_is_never_an_alias(store);
    abort_after_partial_write_leaves_nothing(store);
    concurrent_commit_converges(store);
    list_returns_exactly_what_was_put(store);
    segments_compose_into_a_blob(store);
    store_is_empty(store);
}

/// Nothing is stored and nothing staged (after the checks, which clean up).
pub fn store_is_empty(store: &dyn BlobStore) {
    let name = store.name();
    assert_eq!(
        list(store),
        Vec::<Digest>::new(),
        "{name}: blobs left at the end"
    );
    assert_eq!(
        staged_ids(store),
        Vec::<String>::new(),
        "{name}: staged ids left at the end"
    );
}

/// A staged blob reads back what was written (out of order, overwritten,
/// cut back), `open_staged` finds it, and `truncate` never grows it.
pub fn staged_writes_read_back(store: &dyn BlobStore) {
    let name = store.name();
    let id = new_id("readback");
    let s = store
        .stage(&id)
        .unwrap_or_else(|e| panic!("{name}: stage {id}: {e}"));
    assert_eq!(
        s.len().expect("len"),
        0,
        "{name}: new staged {id} not empty"
    );
    let data = content("staged readback", 10_000);
    s.write_at(&data[5000..], 5000).expect("write tail");
    s.write_at(&data[..5000], 0).expect("write head");
    s.sync().expect("sync");
    assert_eq!(s.len().expect("len"), 10_000, "{name}: staged {id} length");
    drop(s);
    assert!(
        staged_ids(store).contains(&id),
        "{name}: staged_ids lacks {id}"
    );
    let s = store
        .open_staged(&id)
        .unwrap_or_else(|e| panic!("{name}: open_staged {id}: {e}"))
        .unwrap_or_else(|| panic!("{name}: open_staged {id}: not found"));
    let mut buf = vec![0u8; 10_000];
    s.read_at(&mut buf, 0).expect("read back");
    assert!(buf == data, "{name}: staged {id} reads back other bytes");
    s.truncate(4000).expect("cut back");
    assert_eq!(
        s.len().expect("len"),
        4000,
        "{name}: staged {id} after truncate"
    );
    assert!(
        s.truncate(4001).is_err(),
        "{name}: truncate grew staged {id}"
    );
    let mut past = [0u8; 1];
    assert!(
        s.read_at(&mut past, 4000).is_err(),
        "{name}: read past the end of staged {id}"
    );
    drop(s);
    abort(store, &id);
    assert!(
        store.open_staged(&id).expect("open_staged").is_none(),
        "{name}: {id} still staged after abort"
    );
}

/// After a commit, a new staged blob under the same id is a new file:
/// writing, cutting back and aborting it never reaches the published blob
/// (the staging name is not a second name of the blob).
pub fn staged_is_never_an_alias(store: &dyn BlobStore) {
    let name = store.name();
    let data = content("alias", 20_000);
    let d = Digest::of(Algorithm::Sha256, &data);
    let id = new_id("alias");
    for mode in [PutMode::CreateOnly, PutMode::Overwrite] {
        let s = stage_with(store, &id, &data);
        commit(store, s, &d, mode);
        assert!(
            store.open_staged(&id).expect("open_staged").is_none(),
            "{name}: {id} still staged after commit {mode:?}"
        );
        let s = store
            .stage(&id)
            .unwrap_or_else(|e| panic!("{name}: stage {id} again after commit: {e}"));
        assert_eq!(
            s.len().expect("len"),
            0,
            "{name}: restaged {id} holds the committed bytes"
        );
        s.write_at(b"garbage", 0).expect("write");
        s.truncate(3).expect("truncate");
        s.sync().expect("sync");
        drop(s);
        abort(store, &id);
        expect_bytes(
            store,
            &d,
            None,
            &data,
            "get after restaging and aborting its id",
        );
    }
    delete(store, &d);
}

/// Abort after a partial, synced write leaves nothing: no staged id, no
/// blob, nothing listed.
pub fn abort_after_partial_write_leaves_nothing(store: &dyn BlobStore) {
    let name = store.name();
    let before = list(store);
    let id = new_id("partial");
    let data = content("partial", 7 << 20);
    let s = stage_with(store, &id, &data[..3 << 20]);
    drop(s);
    abort(store, &id);
    abort(store, &id); // absent is fine
    assert!(
        !staged_ids(store).contains(&id),
        "{name}: {id} staged after abort"
    );
    assert!(
        store.open_staged(&id).expect("open_staged").is_none(),
        "{name}: open_staged {id} after abort"
    );
    let d = Digest::of(Algorithm::Sha256, &data);
    assert_eq!(stat(store, &d), None, "{name}: aborted {d} stored");
    assert_eq!(
        list(store),
        before,
        "{name}: list changed by an aborted stage"
    );
}

/// `get`, `stat` and `delete` of a blob never stored: NotFound, None, false.
pub fn missing_blob(store: &dyn BlobStore) {
    let name = store.name();
    let d = Digest::of(Algorithm::Sha256, b"testsuite: never stored");
    expect_not_found(store, &d, "get of a never-stored blob");
    assert_eq!(stat(store, &d), None, "{name}: stat of never-stored {d}");
    let existed = store
        .delete(&d)
        .unwrap_or_else(|e| panic!("{name}: delete of never-stored {d}: {e}"));
    assert!(!existed, "{name}: delete of never-stored {d} returned true");
}

/// Put then get returns the same bytes, for 0 B, 1 B, 4 KiB and 1 MiB + 7,
/// through both `put_bytes` and `commit`, with every algorithm.
pub fn roundtrip(store: &dyn BlobStore) {
    let name = store.name();
    let mut stored = Vec::new();
    for (i, len) in [0, 1, 4096, (1 << 20) + 7].into_iter().enumerate() {
        // Different algorithms for the two puts, so even equal (empty)
        // contents get distinct digests.
        let alg = Algorithm::ALL[i % Algorithm::ALL.len()];
        let file_alg = Algorithm::ALL[(i + 1) % Algorithm::ALL.len()];

        let data = content(&format!("roundtrip bytes {len}"), len);
        let d = Digest::of(alg, &data);
        assert_eq!(
            put_bytes(store, &d, &data, PutMode::CreateOnly),
            PutOutcome::Stored,
            "{name}: put_bytes of new {len}-byte blob {d}"
        );
        expect_bytes(store, &d, None, &data, "get after put_bytes");
        stored.push(d);

        let data = content(&format!("roundtrip file {len}"), len);
        let d = Digest::of(file_alg, &data);
        let src = stage_with(store, &new_id("roundtrip"), &data);
        assert_eq!(
            commit(store, src, &d, PutMode::CreateOnly),
            PutOutcome::Stored,
            "{name}: commit of new {len}-byte blob {d}"
        );
        expect_bytes(store, &d, None, &data, "get after commit");
        stored.push(d);
    }
    for d in &stored {
        assert!(
            delete(store, d),
            "{name}: delete of stored {d} returned false"
        );
    }
}

/// Ranged gets: full, prefix, suffix, middle, empty at the end; a range
/// past the end, or with start > end, is RangeNotSatisfiable.
pub fn ranges(store: &dyn BlobStore) {
    let name = store.name();
    let data = content("ranges", 10_000);
    let d = Digest::of(Algorithm::Sha256, &data);
    put_bytes(store, &d, &data, PutMode::CreateOnly);
    let n = data.len() as u64;
    for r in [
        0..n,
        0..1,
        0..4096,
        n - 1..n,
        4095..4097,
        1234..5678,
        n..n,
        0..0,
        17..17,
    ] {
        let want = &data[r.start as usize..r.end as usize];
        expect_bytes(store, &d, Some(r.clone()), want, "ranged get");
    }
    #[allow(clippy::reversed_empty_ranges)] // start > end is one of the cases
    let bad_ranges = [
        0..n + 1,
        n..n + 1,
        n + 1..n + 1,
        5..4,
        u64::MAX - 1..u64::MAX,
    ];
    for r in bad_ranges {
        match store.get(&d, Some(r.clone())) {
            Err(StoreError::RangeNotSatisfiable { digest, size }) => {
                assert_eq!(digest, d, "{name}: RangeNotSatisfiable names the wrong digest");
                assert_eq!(size, n, "{name}: RangeNotSatisfiable for {d} reports wrong size");
            }
            other => panic!(
                "{name}: get {d} range {r:?} of {n} bytes: expected RangeNotSatisfiable, got {other:?}"
            ),
        }
    }
    // Empty blob: only 0..0 is satisfiable.
    let empty = Digest::of(Algorithm::Sha512, b"");
    put_bytes(store, &empty, b"", PutMode::CreateOnly);
    expect_bytes(store, &empty, Some(0..0), b"", "ranged get of empty blob");
    assert!(
        matches!(
            store.get(&empty, Some(0..1)),
            Err(StoreError::RangeNotSatisfiable { size: 0, .. })
        ),
        "{name}: get {empty} range 0..1 of empty blob must be RangeNotSatisfiable"
    );
    delete(store, &d);
    delete(store, &empty);
}

/// `stat` returns the size of stored blobs (including 0) and None after delete.
pub fn stat_reports_size(store: &dyn BlobStore) {
    let name = store.name();
    for len in [0, 1, 12_345] {
        let data = content("stat", len);
        let d = Digest::of(Algorithm::Blake3, &data);
        put_bytes(store, &d, &data, PutMode::CreateOnly);
        assert_eq!(
            stat(store, &d),
            Some(len as u64),
            "{name}: stat of {len}-byte blob {d}"
        );
        delete(store, &d);
        assert_eq!(stat(store, &d), None, "{name}: stat of deleted blob {d}");
    }
}

/// `CreateOnly` on an existing blob returns AlreadyPresent and leaves its
/// content untouched, via `put_bytes` and `commit` (whose staged id is removed).
pub fn create_only_keeps_existing(store: &dyn BlobStore) {
    let name = store.name();
    let original = content("create-only original", 5000);
    let impostor = content("create-only impostor", 3000);
    let d = Digest::of(Algorithm::Sha256, &original);
    assert_eq!(
        put_bytes(store, &d, &original, PutMode::CreateOnly),
        PutOutcome::Stored
    );

    assert_eq!(
        put_bytes(store, &d, &impostor, PutMode::CreateOnly),
        PutOutcome::AlreadyPresent,
        "{name}: put_bytes CreateOnly over existing {d}"
    );
    expect_bytes(
        store,
        &d,
        None,
        &original,
        "get after put_bytes CreateOnly on existing",
    );

    let id = new_id("create-only");
    let src = stage_with(store, &id, &impostor);
    assert_eq!(
        commit(store, src, &d, PutMode::CreateOnly),
        PutOutcome::AlreadyPresent,
        "{name}: commit CreateOnly over existing {d}"
    );
    expect_bytes(
        store,
        &d,
        None,
        &original,
        "get after commit CreateOnly on existing",
    );
    assert!(
        !staged_ids(store).contains(&id),
        "{name}: commit AlreadyPresent left staged {id} behind"
    );
    delete(store, &d);
}

/// `Overwrite` replaces an existing blob (and stores an absent one), via
/// `put_bytes` and `commit`; always returns Stored.
pub fn overwrite_replaces(store: &dyn BlobStore) {
    let name = store.name();
    let first = content("overwrite first", 7000);
    let second = content("overwrite second", 100);
    let third = content("overwrite third", 9000);
    let d = Digest::of(Algorithm::Sha512, &first);
    assert_eq!(
        put_bytes(store, &d, &first, PutMode::Overwrite),
        PutOutcome::Stored,
        "{name}: put_bytes Overwrite of absent {d}"
    );
    expect_bytes(
        store,
        &d,
        None,
        &first,
        "get after Overwrite of absent blob",
    );
    assert_eq!(
        put_bytes(store, &d, &second, PutMode::Overwrite),
        PutOutcome::Stored,
        "{name}: put_bytes Overwrite of existing {d}"
    );
    expect_bytes(store, &d, None, &second, "get after put_bytes Overwrite");
    assert_eq!(
        stat(store, &d),
        Some(second.len() as u64),
        "{name}: stat after Overwrite of {d}"
    );

    let id = new_id("overwrite");
    let src = stage_with(store, &id, &third);
    assert_eq!(
        commit(store, src, &d, PutMode::Overwrite),
        PutOutcome::Stored,
        "{name}: commit Overwrite of existing {d}"
    );
    expect_bytes(store, &d, None, &third, "get after commit Overwrite");
    assert!(
        !staged_ids(store).contains(&id),
        "{name}: commit Overwrite left staged {id} behind"
    );
    delete(store, &d);
}

/// Data handed out by `get` keeps its bytes after the blob is overwritten or
/// deleted (the trait's snapshot guarantee; for LocalStore, mapped files).
pub fn data_survives_overwrite_and_delete(store: &dyn BlobStore) {
    let name = store.name();
    let old = content("snapshot old", 64 * 1024);
    let new = content("snapshot new", 10);
    let d = Digest::of(Algorithm::Sha256, &old);
    put_bytes(store, &d, &old, PutMode::CreateOnly);
    let before = get(store, &d, None);
    let part = get(store, &d, Some(100..200));
    put_bytes(store, &d, &new, PutMode::Overwrite);
    assert!(
        before.as_ref() == old.as_slice(),
        "{name}: data of {d} changed after Overwrite"
    );
    delete(store, &d);
    assert!(
        before.as_ref() == old.as_slice(),
        "{name}: data of {d} changed after delete"
    );
    assert!(
        part.as_ref() == &old[100..200],
        "{name}: ranged data of {d} changed after delete"
    );
}

/// `delete` returns true then false; `get` after delete is NotFound and the
/// blob can be stored again.
pub fn delete_then_not_found(store: &dyn BlobStore) {
    let name = store.name();
    let data = content("delete", 300);
    let d = Digest::of(Algorithm::Blake3, &data);
    put_bytes(store, &d, &data, PutMode::CreateOnly);
    assert!(
        delete(store, &d),
        "{name}: first delete of stored {d} returned false"
    );
    assert!(
        !delete(store, &d),
        "{name}: second delete of {d} returned true"
    );
    expect_not_found(store, &d, "get after delete");
    assert_eq!(
        put_bytes(store, &d, &data, PutMode::CreateOnly),
        PutOutcome::Stored,
        "{name}: CreateOnly put of deleted {d}"
    );
    expect_bytes(store, &d, None, &data, "get after re-put of deleted blob");
    delete(store, &d);
}

/// `commit` removes the staged id on success, whatever the outcome.
pub fn commit_removes_staged(store: &dyn BlobStore) {
    let name = store.name();
    let data = content("removes staged", 2048);
    let d = Digest::of(Algorithm::Sha256, &data);
    for (mode, want) in [
        (PutMode::CreateOnly, PutOutcome::Stored),
        (PutMode::CreateOnly, PutOutcome::AlreadyPresent),
        (PutMode::Overwrite, PutOutcome::Stored),
    ] {
        let id = new_id("removes-staged");
        let src = stage_with(store, &id, &data);
        assert_eq!(
            commit(store, src, &d, mode),
            want,
            "{name}: commit {mode:?} of {d}"
        );
        assert!(
            !staged_ids(store).contains(&id) && store.open_staged(&id).expect("open").is_none(),
            "{name}: commit {mode:?} ({want:?}) of {d} left staged {id} behind"
        );
        expect_bytes(store, &d, None, &data, "get after commit");
    }
    delete(store, &d);
}

/// Four threads commit the same content at once: with `CreateOnly`
/// exactly one is Stored and the rest AlreadyPresent (a multipart S3
/// commit may report Stored more than once, see `s3.rs`); with `Overwrite`
/// all are Stored. Either way no error, one readable copy, nothing staged.
pub fn concurrent_commit_converges(store: &dyn BlobStore) {
    const THREADS: usize = 4;
    let name = store.name();
    let data = content("concurrent", 256 * 1024 + 3);
    let d = Digest::of(Algorithm::Sha256, &data);
    for mode in [PutMode::CreateOnly, PutMode::Overwrite] {
        let srcs: Vec<Staged> = (0..THREADS)
            .map(|_| stage_with(store, &new_id("concurrent"), &data))
            .collect();
        let barrier = Barrier::new(THREADS);
        let outcomes: Vec<PutOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = srcs
                .into_iter()
                .map(|src| {
                    let (d, barrier) = (&d, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        store.commit(src, d, mode)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(e)) => panic!("{name}: concurrent commit {mode:?} of {d}: {e}"),
                    Err(_) => {
                        panic!("{name}: concurrent commit {mode:?} of {d}: thread panicked")
                    }
                })
                .collect()
        });
        let stored = outcomes
            .iter()
            .filter(|o| **o == PutOutcome::Stored)
            .count();
        let want = match mode {
            PutMode::CreateOnly => 1,
            PutMode::Overwrite => THREADS,
        };
        assert_eq!(
            stored, want,
            "{name}: concurrent commit {mode:?} of {d}: outcomes {outcomes:?}"
        );
        assert_eq!(
            staged_ids(store),
            Vec::<String>::new(),
            "{name}: concurrent commit left staged ids behind"
        );
        expect_bytes(store, &d, None, &data, "get after concurrent commit");
        let listed = list(store).into_iter().filter(|x| *x == d).count();
        assert_eq!(
            listed, 1,
            "{name}: {d} listed {listed} times after concurrent commit"
        );
    }
    delete(store, &d);
}

/// `list` returns exactly the blobs stored — none missing, none extra, no
/// temp files — before and after puts and deletes.
pub fn list_returns_exactly_what_was_put(store: &dyn BlobStore) {
    let name = store.name();
    let before = list(store);
    let mut put = Vec::new();
    for (i, alg) in Algorithm::ALL.into_iter().enumerate() {
        for j in 0..3 {
            let data = content(&format!("list {i} {j}"), i * 100 + j);
            let d = Digest::of(alg, &data);
            if j == 0 {
                let src = stage_with(store, &new_id("list"), &data);
                commit(store, src, &d, PutMode::CreateOnly);
            } else {
                put_bytes(store, &d, &data, PutMode::CreateOnly);
            }
            put.push(d);
        }
    }
    // A staged blob that was never committed must not show up.
    let stray = new_id("list-stray");
    drop(stage_with(store, &stray, b"not a blob"));

    let mut want = before.clone();
    want.extend(put.iter().cloned());
    want.sort();
    want.dedup();
    assert_eq!(
        list(store),
        want,
        "{name}: list after putting {} blobs",
        put.len()
    );

    for d in &put {
        delete(store, d);
    }
    assert_eq!(
        list(store),
        before,
        "{name}: list after deleting what was put"
    );
    abort(store, &stray);
}

// ---- helpers ----

/// Deterministic pseudo-random bytes, distinct per `tag`.
/// Shared staging: segments put from staged buffers read back, compose
/// into one blob in order (several, as multipart parts in a bucket; one,
/// as a copy), leave nothing staged, and are dropped one or all at once.
pub fn segments_compose_into_a_blob(store: &dyn BlobStore) {
    let name = store.name();
    let upload = new_id("seg");
    let min = super::MIN_SEGMENT as usize;
    let parts = [
        ("a1", content("seg-a", min + 3)),
        ("b2", content("seg-b", min)),
        ("c3", content("seg-c", 17)),
    ];
    let mut segments = Vec::new();
    let mut at = 0u64;
    for (seg, data) in &parts {
        let buffer = stage_with(store, &new_id("buf"), data);
        store
            .put_segment(&upload, seg, buffer)
            .unwrap_or_else(|e| panic!("{name}: put segment {seg}: {e}"));
        let end = at + data.len() as u64;
        segments.push(super::Segment {
            name: (*seg).to_owned(),
            start: at,
            end,
        });
        at = end;
    }
    let read = |seg: &str| -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        store.read_segment(&upload, seg, &mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    };
    assert_eq!(
        read("b2").unwrap_or_else(|e| panic!("{name}: read segment: {e}")),
        parts[1].1,
        "{name}: segment reads back"
    );
    let all: Vec<u8> = parts.iter().flat_map(|(_, d)| d.clone()).collect();
    let d = Digest::of(Algorithm::Sha256, &all);
    let compose = |segs: &[super::Segment], d: &Digest| {
        store
            .compose(&upload, segs, d, PutMode::CreateOnly)
            .unwrap_or_else(|e| panic!("{name}: compose {d}: {e}"))
    };
    assert_eq!(
        compose(&segments, &d),
        PutOutcome::Stored,
        "{name}: composed"
    );
    expect_bytes(store, &d, None, &all, "composed from three segments");
    assert_eq!(
        compose(&segments, &d),
        PutOutcome::AlreadyPresent,
        "{name}: CreateOnly compose of a stored blob"
    );
    let one = Digest::of(Algorithm::Sha256, &parts[1].1);
    compose(&segments[1..2], &one);
    expect_bytes(store, &one, None, &parts[1].1, "composed from one segment");
    store
        .drop_segments(&upload, Some("a1"))
        .unwrap_or_else(|e| panic!("{name}: drop one segment: {e}"));
    assert!(read("a1").is_err(), "{name}: a dropped segment reads");
    assert!(read("c3").is_ok(), "{name}: dropping one dropped another");
    store
        .drop_segments(&upload, None)
        .unwrap_or_else(|e| panic!("{name}: drop all segments: {e}"));
    assert!(
        read("b2").is_err(),
        "{name}: segments left after dropping all"
    );
    delete(store, &d);
    delete(store, &one);
}

fn content(tag: &str, len: usize) -> Vec<u8> {
    let seed = Digest::of(Algorithm::Sha256, tag.as_bytes());
    let mut x = u64::from_str_radix(&seed.hex()[..16], 16).unwrap_or(1) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A fresh staged id for this process.
fn new_id(label: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("suite-{label}-{}-{n}", std::process::id())
}

/// Stages `data` under `id`, synced.
fn stage_with(store: &dyn BlobStore, id: &str, data: &[u8]) -> Staged {
    let name = store.name();
    let s = store
        .stage(id)
        .unwrap_or_else(|e| panic!("{name}: stage {id}: {e}"));
    s.write_at(data, 0)
        .and_then(|()| s.sync())
        .unwrap_or_else(|e| panic!("{name}: write staged {id}: {e}"));
    s
}

fn commit(store: &dyn BlobStore, s: Staged, d: &Digest, mode: PutMode) -> PutOutcome {
    let id = s.id().to_owned();
    store
        .commit(s, d, mode)
        .unwrap_or_else(|e| panic!("{}: commit {mode:?} of {id} as {d}: {e}", store.name()))
}

fn abort(store: &dyn BlobStore, id: &str) {
    store
        .abort(id)
        .unwrap_or_else(|e| panic!("{}: abort {id}: {e}", store.name()))
}

fn staged_ids(store: &dyn BlobStore) -> Vec<String> {
    store
        .staged_ids()
        .unwrap_or_else(|e| panic!("{}: staged_ids: {e}", store.name()))
}

fn put_bytes(store: &dyn BlobStore, d: &Digest, data: &[u8], mode: PutMode) -> PutOutcome {
    store
        .put_bytes(d, data, mode)
        .unwrap_or_else(|e| panic!("{}: put_bytes {mode:?} of {d}: {e}", store.name()))
}

fn get(store: &dyn BlobStore, d: &Digest, range: Option<Range<u64>>) -> super::BlobData {
    store
        .get(d, range.clone())
        .unwrap_or_else(|e| panic!("{}: get {d} range {range:?}: {e}", store.name()))
}

fn stat(store: &dyn BlobStore, d: &Digest) -> Option<u64> {
    store
        .stat(d)
        .unwrap_or_else(|e| panic!("{}: stat {d}: {e}", store.name()))
}

fn delete(store: &dyn BlobStore, d: &Digest) -> bool {
    store
        .delete(d)
        .unwrap_or_else(|e| panic!("{}: delete {d}: {e}", store.name()))
}

fn list(store: &dyn BlobStore) -> Vec<Digest> {
    store
        .list()
        .unwrap_or_else(|e| panic!("{}: list: {e}", store.name()))
}

fn expect_bytes(
    store: &dyn BlobStore,
    d: &Digest,
    range: Option<Range<u64>>,
    want: &[u8],
    step: &str,
) {
    let got = get(store, d, range.clone());
    assert_eq!(
        got.len(),
        want.len(),
        "{}: {step}: {d} range {range:?}: wrong length",
        store.name()
    );
    // Compare without dumping megabytes into the panic message.
    if got.as_ref() != want {
        let at = got
            .as_ref()
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{}: {step}: {d} range {range:?}: bytes differ at offset {at}",
            store.name()
        );
    }
}

fn expect_not_found(store: &dyn BlobStore, d: &Digest, step: &str) {
    match store.get(d, None) {
        Err(StoreError::NotFound { digest }) if digest == *d => {}
        other => panic!(
            "{}: {step}: {d}: expected NotFound, got {other:?}",
            store.name()
        ),
    }
}
