//! GC and fsck over a large index, and startup time with it.
//!
//! For each garbage fraction (1% and 10%): load N blobs through the real
//! write path (`Engine::put_blob`: upload session, staged bytes, digest
//! check, store commit, synced index batch; live blobs then referenced by
//! untagged manifests of 100 blobs through `Engine::put_manifest`), on
//! `LOADERS` threads so group commit shares the syncs as concurrent pushes
//! do; close, then measure
//! - `open`: `Engine::open` to ready (what the server does before serving);
//! - `gc`: one run with grace 0 (scans `gc_candidates`, marks, sweeps,
//!   unlinking each garbage blob's file);
//! - `gc (nothing to do)`: a second run right after;
//! - `fsck`: the full check without `--verify-blobs`.
//!
//! Each figure is the median of `REPS` fresh loads. Run:
//! `cargo bench --bench gc` (N = `BERTH_BENCH_BLOBS`, default 100,000;
//! `BERTH_BENCH_DIR` for where the data directories go, default the temp
//! dir). Under `cargo test --all-targets` (no `--bench` argument) it runs
//! once with 2,000 blobs as a smoke test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_engine::fsck::FsckOptions;
use berth_engine::{Algorithm, Digest, Engine, EngineConfig, GcOptions, ManifestPut, RepoName};

/// Blobs referenced by each manifest.
const PER_MANIFEST: usize = 100;
/// Threads loading at once.
const LOADERS: u64 = 8;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pushes `n` blobs of 64 bytes into `repo`, one in every `garbage_every`
/// left unreferenced, the rest referenced by untagged manifests.
fn load(e: &Engine, repo: &RepoName, n: u64, garbage_every: u64) {
    let manifests = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..LOADERS {
            let manifests = &manifests;
            s.spawn(move || {
                let mut live: Vec<Digest> = Vec::with_capacity(PER_MANIFEST);
                let flush = |live: &mut Vec<Digest>| {
                    let m = manifests.fetch_add(1, Ordering::Relaxed);
                    let body = format!(
                        "{{\"bench\":{m},\"layers\":[{}]}}",
                        live.iter()
                            .map(|d| format!("\"{d}\""))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    e.put_manifest(
                        repo,
                        ManifestPut {
                            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                            body: body.into_bytes(),
                            blobs: std::mem::take(live),
                            ..ManifestPut::default()
                        },
                    )
                    .expect("put manifest");
                };
                for i in (t..n).step_by(LOADERS as usize) {
                    let data = format!("{i:064}").into_bytes();
                    let d = Digest::of(Algorithm::Sha256, &data);
                    e.put_blob(repo, &d, &data).expect("put blob");
                    if garbage_every > 0 && i % garbage_every == 0 {
                        continue;
                    }
                    live.push(d);
                    if live.len() == PER_MANIFEST {
                        flush(&mut live);
                    }
                }
                if !live.is_empty() {
                    flush(&mut live);
                }
            });
        }
    });
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = if bench {
        env_number("BERTH_BENCH_BLOBS", 100_000)
    } else {
        2_000
    };
    let reps = if bench {
        env_number("BERTH_BENCH_REPS", 3)
    } else {
        1
    };
    let base = std::env::var_os("BERTH_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let repo = RepoName::parse("bench/gc").expect("repo");
    println!("gc bench: {n} blobs, {reps} rep(s) per fraction");
    println!("| garbage | blobs deleted | load | open (ready) | gc | gc (nothing to do) | fsck |");
    println!("|---|---|---|---|---|---|---|");
    for (label, every) in [("1%", 100u64), ("10%", 10)] {
        let (mut loads, mut open, mut gc, mut gc2, mut fsck) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut deleted = 0;
        for _ in 0..reps {
            let dir = tempfile::tempdir_in(&base).expect("tempdir");
            {
                let t = Instant::now();
                let e = Engine::open(EngineConfig::new(dir.path())).expect("open");
                load(&e, &repo, n, every);
                loads.push(t.elapsed());
            }
            let t = Instant::now();
            let e = Engine::open(EngineConfig::new(dir.path())).expect("reopen");
            open.push(t.elapsed());
            let opts = GcOptions {
                grace: Duration::ZERO,
                ..GcOptions::default()
            };
            let t = Instant::now();
            let r = e.gc(&opts).expect("gc");
            gc.push(t.elapsed());
            deleted = r.blobs_deleted;
            assert_eq!(r.blobs_deleted, n.div_ceil(every));
            let t = Instant::now();
            let r2 = e.gc(&opts).expect("gc again");
            gc2.push(t.elapsed());
            assert_eq!(r2.blobs_deleted, 0);
            let t = Instant::now();
            let f = e.fsck(FsckOptions::default()).expect("fsck");
            fsck.push(t.elapsed());
            assert!(f.findings.is_empty(), "{:?}", f.findings);
        }
        println!(
            "| {label} | {deleted} | {} | {} | {} | {} | {} |",
            ms(median(loads)),
            ms(median(open)),
            ms(median(gc)),
            ms(median(gc2)),
            ms(median(fsck)),
        );
    }
}
