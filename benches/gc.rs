//! GC and fsck over a large index, and startup time with it.
//!
//! For each garbage fraction (1% and 10%): bulk-load N synthetic blobs
//! (`Engine::bench_bulk_load`: unsynced batches, no blob files; live blobs
//! referenced by synthetic manifests of 100 blobs), close, then measure
//! - `open`: `Engine::open` to ready (what the server does before serving);
//! - `gc`: one run with grace 0 (scans `gc_candidates`, marks, sweeps);
//! - `gc (nothing to do)`: a second run right after;
//! - `fsck`: the full check without `--verify-blobs`.
//!
//! Each figure is the median of `REPS` fresh loads. Run:
//! `cargo bench --bench gc` (N = `BERTH_BENCH_BLOBS`, default 1,000,000).
//! Under `cargo test --all-targets` (no `--bench` argument) it runs once
//! with 2,000 blobs as a smoke test.

use std::time::{Duration, Instant};

use berth_engine::fsck::FsckOptions;
use berth_engine::{Engine, EngineConfig, GcOptions, RepoName};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: u64 = if bench {
        std::env::var("BERTH_BENCH_BLOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    } else {
        2_000
    };
    let reps: usize = if bench {
        std::env::var("BERTH_BENCH_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
    } else {
        1
    };
    let repo = RepoName::parse("bench/gc").expect("repo");
    println!("gc bench: {n} blobs, {reps} rep(s) per fraction");
    println!("| garbage | blobs deleted | load | open (ready) | gc | gc (nothing to do) | fsck |");
    println!("|---|---|---|---|---|---|---|");
    for (label, every) in [("1%", 100u64), ("10%", 10)] {
        let (mut load, mut open, mut gc, mut gc2, mut fsck) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut deleted = 0;
        for _ in 0..reps {
            let dir = tempfile::tempdir().expect("tempdir");
            {
                let t = Instant::now();
                let e = Engine::open(EngineConfig::new(dir.path())).expect("open");
                e.bench_bulk_load(&repo, n, every, 1).expect("bulk load");
                load.push(t.elapsed());
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
            // The synthetic blobs have no files: the only findings allowed
            // are "missing from the store".
            assert!(f
                .findings
                .iter()
                .all(|x| x.problem.contains("missing from")));
        }
        println!(
            "| {label} | {deleted} | {} | {} | {} | {} | {} |",
            ms(median(load)),
            ms(median(open)),
            ms(median(gc)),
            ms(median(gc2)),
            ms(median(fsck)),
        );
    }
}
