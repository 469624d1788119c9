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
//!   listings). Blobs written by one function are deleted before it returns,
//!   so the functions can run in any order on one store.
//! - `scratch` is a writable directory for staging `put_file` sources when
//!   the store has no [`BlobStore::tmp_dir`].
//!
//! Some checks deliberately store bytes under a digest they do not hash to,
//! to observe whether a put replaced content; they rely on the trait's
//! contract that stores do not re-hash.

use std::fs::{self, File};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use super::{BlobStore, PutMode, PutOutcome, StoreError};
use crate::digest::{Algorithm, Digest};

/// Runs every check below, in order.
pub fn run_all(store: &dyn BlobStore, scratch: &Path) {
    missing_blob(store);
    roundtrip(store, scratch);
    ranges(store);
    stat_reports_size(store);
    create_only_keeps_existing(store, scratch);
    overwrite_replaces(store, scratch);
    data_survives_overwrite_and_delete(store);
    delete_then_not_found(store);
    put_file_removes_src(store, scratch);
    concurrent_put_file_converges(store, scratch);
    list_returns_exactly_what_was_put(store, scratch);
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
/// through both `put_bytes` and `put_file`, with every algorithm.
pub fn roundtrip(store: &dyn BlobStore, scratch: &Path) {
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
        let src = stage(store, scratch, "roundtrip", &data);
        assert_eq!(
            put_file(store, &d, &src, PutMode::CreateOnly),
            PutOutcome::Stored,
            "{name}: put_file of new {len}-byte blob {d}"
        );
        expect_bytes(store, &d, None, &data, "get after put_file");
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
/// content untouched, via `put_bytes` and `put_file` (whose src is removed).
pub fn create_only_keeps_existing(store: &dyn BlobStore, scratch: &Path) {
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

    let src = stage(store, scratch, "create-only", &impostor);
    assert_eq!(
        put_file(store, &d, &src, PutMode::CreateOnly),
        PutOutcome::AlreadyPresent,
        "{name}: put_file CreateOnly over existing {d}"
    );
    expect_bytes(
        store,
        &d,
        None,
        &original,
        "get after put_file CreateOnly on existing",
    );
    assert!(
        !src.exists(),
        "{name}: put_file AlreadyPresent left src {} behind",
        src.display()
    );
    delete(store, &d);
}

/// `Overwrite` replaces an existing blob (and stores an absent one), via
/// `put_bytes` and `put_file`; always returns Stored.
pub fn overwrite_replaces(store: &dyn BlobStore, scratch: &Path) {
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

    let src = stage(store, scratch, "overwrite", &third);
    assert_eq!(
        put_file(store, &d, &src, PutMode::Overwrite),
        PutOutcome::Stored,
        "{name}: put_file Overwrite of existing {d}"
    );
    expect_bytes(store, &d, None, &third, "get after put_file Overwrite");
    assert!(
        !src.exists(),
        "{name}: put_file Overwrite left src {} behind",
        src.display()
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

/// `put_file` removes its source on success, whatever the outcome.
pub fn put_file_removes_src(store: &dyn BlobStore, scratch: &Path) {
    let name = store.name();
    let data = content("removes src", 2048);
    let d = Digest::of(Algorithm::Sha256, &data);
    for (mode, want) in [
        (PutMode::CreateOnly, PutOutcome::Stored),
        (PutMode::CreateOnly, PutOutcome::AlreadyPresent),
        (PutMode::Overwrite, PutOutcome::Stored),
    ] {
        let src = stage(store, scratch, "removes-src", &data);
        assert_eq!(
            put_file(store, &d, &src, mode),
            want,
            "{name}: put_file {mode:?} of {d}"
        );
        assert!(
            !src.exists(),
            "{name}: put_file {mode:?} ({want:?}) of {d} left src {} behind",
            src.display()
        );
        expect_bytes(store, &d, None, &data, "get after put_file");
    }
    delete(store, &d);
}

/// Four threads `put_file` the same content at once: with `CreateOnly`
/// exactly one is Stored and the rest AlreadyPresent; with `Overwrite` all
/// are Stored. Either way no error, one readable copy, and no src left.
pub fn concurrent_put_file_converges(store: &dyn BlobStore, scratch: &Path) {
    const THREADS: usize = 4;
    let name = store.name();
    let data = content("concurrent", 256 * 1024 + 3);
    let d = Digest::of(Algorithm::Sha256, &data);
    for mode in [PutMode::CreateOnly, PutMode::Overwrite] {
        let srcs: Vec<PathBuf> = (0..THREADS)
            .map(|_| stage(store, scratch, "concurrent", &data))
            .collect();
        let barrier = Barrier::new(THREADS);
        let outcomes: Vec<PutOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = srcs
                .iter()
                .map(|src| {
                    let (d, barrier) = (&d, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        store.put_file(d, src, mode)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(e)) => panic!("{name}: concurrent put_file {mode:?} of {d}: {e}"),
                    Err(_) => {
                        panic!("{name}: concurrent put_file {mode:?} of {d}: thread panicked")
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
            "{name}: concurrent put_file {mode:?} of {d}: outcomes {outcomes:?}"
        );
        for src in &srcs {
            assert!(
                !src.exists(),
                "{name}: concurrent put_file left src {} behind",
                src.display()
            );
        }
        expect_bytes(store, &d, None, &data, "get after concurrent put_file");
        let listed = list(store).into_iter().filter(|x| *x == d).count();
        assert_eq!(
            listed, 1,
            "{name}: {d} listed {listed} times after concurrent put_file"
        );
    }
    delete(store, &d);
}

/// `list` returns exactly the blobs stored — none missing, none extra, no
/// temp files — before and after puts and deletes.
pub fn list_returns_exactly_what_was_put(store: &dyn BlobStore, scratch: &Path) {
    let name = store.name();
    let before = list(store);
    let mut put = Vec::new();
    for (i, alg) in Algorithm::ALL.into_iter().enumerate() {
        for j in 0..3 {
            let data = content(&format!("list {i} {j}"), i * 100 + j);
            let d = Digest::of(alg, &data);
            if j == 0 {
                let src = stage(store, scratch, "list", &data);
                put_file(store, &d, &src, PutMode::CreateOnly);
            } else {
                put_bytes(store, &d, &data, PutMode::CreateOnly);
            }
            put.push(d);
        }
    }
    // A staged file that was never put must not show up.
    let stray = stage(store, scratch, "list-stray", b"not a blob");

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
    let _ = fs::remove_file(stray);
}

// ---- helpers ----

/// Deterministic pseudo-random bytes, distinct per `tag`.
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

/// Writes and fsyncs a `put_file` source in the store's tmp dir, else in `scratch`.
fn stage(store: &dyn BlobStore, scratch: &Path, label: &str, data: &[u8]) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = store.tmp_dir().unwrap_or(scratch);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("testsuite-{}-{label}-{n}", std::process::id()));
    let mut f = File::create(&path)
        .unwrap_or_else(|e| panic!("testsuite: create source file {}: {e}", path.display()));
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .unwrap_or_else(|e| panic!("testsuite: write source file {}: {e}", path.display()));
    path
}

fn put_bytes(store: &dyn BlobStore, d: &Digest, data: &[u8], mode: PutMode) -> PutOutcome {
    store
        .put_bytes(d, data, mode)
        .unwrap_or_else(|e| panic!("{}: put_bytes {mode:?} of {d}: {e}", store.name()))
}

fn put_file(store: &dyn BlobStore, d: &Digest, src: &Path, mode: PutMode) -> PutOutcome {
    store
        .put_file(d, src, mode)
        .unwrap_or_else(|e| panic!("{}: put_file {mode:?} of {d}: {e}", store.name()))
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
