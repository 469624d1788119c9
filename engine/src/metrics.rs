//! Counters the engine (and its blob stores) keep for `/metrics`.
//!
//! One [`EngineMetrics`] per engine, shared through an `Arc`: the engine
//! config carries it so a blob store built before the engine opens (the
//! tiered store) can count into the same instance. Plain relaxed atomics:
//! each counter is independent and only ever read for reporting. The server
//! renders them in the Prometheus text format; the engine knows no format.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters (Prometheus counters) of one engine.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Completed GC runs (including dry runs), and those that failed.
    pub gc_runs: AtomicU64,
    pub gc_failures: AtomicU64,
    /// Blobs and bytes GC removed from the store.
    pub gc_blobs_reclaimed: AtomicU64,
    pub gc_bytes_reclaimed: AtomicU64,
    /// Untagged manifests GC deleted.
    pub gc_manifests_deleted: AtomicU64,
    /// Upload sessions expired (by GC or the expiry worker).
    pub uploads_expired: AtomicU64,
    /// Index batches committed (each one atomic write, synced with its
    /// group): how many commit points an operation has.
    pub index_commits: AtomicU64,
}

impl EngineMetrics {
    /// Adds `n` to `counter` (relaxed: counters are independent).
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
