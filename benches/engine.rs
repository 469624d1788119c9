//! Engine benchmarks (criterion).
//!
//! - `commit/<size>`: a full blob commit through the engine (begin upload,
//!   write, fsync, record offset, verify sha256, durable rename into the
//!   store, one synced index batch), next to `raw/<size>`: the same bytes
//!   written to a file, fsync'd, renamed (with a directory fsync) and
//!   sha256-hashed, in the same run. Each iteration commits new content.
//! - `index/stat_blob` and `index/get_manifest`: lookups per second against
//!   an index holding 10,000 linked blobs and 10,000 tagged manifests.
//!
//! Run: `cargo bench --bench engine` (see BENCHMARKS.md).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use berth_engine::{Algorithm, Digest, ManifestPut, Reference, RepoName, Tag};
use berth_testkit::{content, open_engine};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

const SIZES: [(usize, &str); 3] = [(4 << 10, "4KiB"), (1 << 20, "1MiB"), (64 << 20, "64MiB")];

/// Makes the buffer's content unique for iteration `i`.
fn stamp(buf: &mut [u8], i: u64) {
    buf[..8].copy_from_slice(&i.to_le_bytes());
}

fn raw_commit(dir: &Path, i: u64, data: &[u8]) -> Digest {
    let tmp = dir.join(format!("tmp-{i}"));
    let mut f = File::create(&tmp).expect("create");
    f.write_all(data).expect("write");
    let digest = Digest::of(Algorithm::Sha256, data);
    f.sync_data().expect("fsync");
    let dst = dir.join(digest.hex());
    std::fs::rename(&tmp, &dst).expect("rename");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
    digest
}

fn commits(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open_engine(&dir.path().join("engine"));
    let raw_dir = dir.path().join("raw");
    std::fs::create_dir_all(&raw_dir).expect("raw dir");
    let repo = RepoName::parse("bench/commit").expect("repo");
    let mut i = 0u64;
    for (size, label) in SIZES {
        if size >= 64 << 20 {
            group.sample_size(10);
        }
        group.throughput(Throughput::Bytes(size as u64));
        let mut data = content(label, size);
        // The client-side digest is computed in the untimed setup; the
        // engine hashes the bytes itself while committing.
        group.bench_function(BenchmarkId::new("engine", label), |b| {
            b.iter_batched(
                || {
                    i += 1;
                    stamp(&mut data, i);
                    (data.clone(), Digest::of(Algorithm::Sha256, &data))
                },
                |(bytes, d)| engine.put_blob(&repo, &d, &bytes).expect("put_blob"),
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("raw", label), |b| {
            b.iter(|| {
                i += 1;
                stamp(&mut data, i);
                raw_commit(&raw_dir, i, &data)
            })
        });
    }
    group.finish();
}

/// True under `cargo bench`; `cargo test --all-targets` runs each benchmark
/// once without `--bench`, where a small index keeps the test run short.
fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn lookups(c: &mut Criterion) {
    let n: usize = if benchmarking() { 10_000 } else { 100 };
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open_engine(dir.path());
    let repo = RepoName::parse("bench/index").expect("repo");
    let mut digests = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    for i in 0..n {
        let data = format!("blob {i}").into_bytes();
        let d = Digest::of(Algorithm::Sha256, &data);
        engine.put_blob(&repo, &d, &data).expect("put_blob");
        let tag = Tag::parse(&format!("t{i}")).expect("tag");
        engine
            .put_manifest(
                &repo,
                ManifestPut {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    body: format!("{{\"layers\":[\"{d}\"]}}").into_bytes(),
                    blobs: vec![d.clone()],
                    tags: vec![tag.clone()],
                    ..Default::default()
                },
            )
            .expect("put_manifest");
        digests.push(d);
        tags.push(Reference::Tag(tag));
    }
    let mut group = c.benchmark_group("index");
    group.throughput(Throughput::Elements(1));
    let mut k = 0usize;
    group.bench_function("stat_blob", |b| {
        b.iter(|| {
            k = (k + 7919) % n;
            engine.stat_blob(&repo, &digests[k]).expect("stat")
        })
    });
    group.bench_function("get_manifest", |b| {
        b.iter(|| {
            k = (k + 7919) % n;
            engine.get_manifest(&repo, &tags[k]).expect("get")
        })
    });
    group.finish();
}

criterion_group!(benches, commits, lookups);
criterion_main!(benches);
