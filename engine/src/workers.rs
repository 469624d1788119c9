//! Background work on worker threads, never on a caller's async path.
//!
//! One ticker thread sends periodic jobs (upload expiry; online GC when
//! `gc_interval` is set) into a crossbeam channel; one worker thread runs
//! them against the engine's shared state, one at a time. Requested GC runs
//! ([`crate::Engine::schedule_gc`]) go through the same channel. Both
//! threads stop when the engine is dropped: the `Workers` drop guard closes
//! the shutdown channel (waking the ticker at once) and joins the threads,
//! so no job outlives the engine. A GC run in progress finishes first (each
//! of its steps is a committed state, so a kill instead is safe too).
//!
//! A third thread, the tier worker, applies the blob store's tier reports
//! ([`crate::store::BlobStore::watch_tiers`]) to the blob records.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, never, select, tick, Receiver, Sender};

use crate::digest::Digest;
use crate::engine::Inner;
use crate::gc::{GcOptions, GcRunKind};

/// A unit of background work.
enum Job {
    ExpireUploads,
    /// The periodic online GC.
    ScheduledGc,
    /// A requested GC run, already in the history as `id`.
    Gc {
        id: u64,
        opts: GcOptions,
    },
}

/// Owns the background threads; dropping it stops and joins them.
pub(crate) struct Workers {
    shutdown: Option<Sender<()>>,
    /// Requested jobs (GC runs). Bounded: requests beyond it are refused.
    jobs: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// `locate_tiers`: the tier worker first locates every blob record's
    /// tier once (an index from before tiers were kept).
    pub(crate) fn start(
        inner: Arc<Inner>,
        tier_moves: Receiver<Digest>,
        locate_tiers: bool,
    ) -> Workers {
        let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
        // Jobs: bounded so a slow worker makes the ticker skip, not pile up.
        let (job_tx, job_rx) = bounded::<Job>(16);
        let interval = inner.config.expiry_interval;
        let gc_interval = inner.config.gc_interval;
        let ticker = {
            let shutdown_rx = shutdown_rx.clone();
            let job_tx = job_tx.clone();
            std::thread::Builder::new()
                .name("berth-ticker".into())
                .spawn(move || run_ticker(interval, gc_interval, job_tx, shutdown_rx))
        };
        let tier = {
            let (inner, shutdown_rx) = (inner.clone(), shutdown_rx.clone());
            std::thread::Builder::new()
                .name("berth-tier-index".into())
                .spawn(move || run_tier_worker(inner, tier_moves, shutdown_rx, locate_tiers))
        };
        let worker = std::thread::Builder::new()
            .name("berth-worker".into())
            .spawn(move || run_worker(inner, job_rx, shutdown_rx));
        let threads = [ticker, worker, tier]
            .into_iter()
            .filter_map(|t| match t {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::error!(error = %e, "starting background thread");
                    None
                }
            })
            .collect();
        Workers {
            shutdown: Some(shutdown_tx),
            jobs: job_tx,
            threads,
        }
    }

    /// Queues GC run `id` on the worker thread.
    pub(crate) fn run_gc(&self, id: u64, opts: GcOptions) -> Result<(), String> {
        self.jobs
            .try_send(Job::Gc { id, opts })
            .map_err(|_| "too many GC runs queued; try again when they are done".to_owned())
    }
}

fn run_ticker(
    interval: std::time::Duration,
    gc_interval: Option<std::time::Duration>,
    jobs: Sender<Job>,
    shutdown: Receiver<()>,
) {
    let ticks = tick(interval);
    let gc_ticks = match gc_interval {
        Some(i) if !i.is_zero() => tick(i),
        _ => never(),
    };
    loop {
        select! {
            recv(ticks) -> _ => { let _ = jobs.try_send(Job::ExpireUploads); }
            recv(gc_ticks) -> _ => { let _ = jobs.try_send(Job::ScheduledGc); }
            recv(shutdown) -> _ => return,
        }
    }
}

fn run_worker(inner: Arc<Inner>, jobs: Receiver<Job>, shutdown: Receiver<()>) {
    loop {
        select! {
            recv(jobs) -> job => match job {
                Ok(Job::ExpireUploads) => {
                    if let Err(e) = inner.expire_uploads(inner.config.upload_ttl) {
                        tracing::warn!(error = %e, "expiring uploads");
                    }
                }
                Ok(Job::ScheduledGc) => {
                    let opts = inner.scheduled_gc_options();
                    match inner.new_gc_run(GcRunKind::Scheduled, opts.clone()) {
                        Ok(id) => {
                            let _ = inner.run_gc(id, &opts, &|_, _| {});
                        }
                        Err(e) => tracing::warn!(error = %e, "scheduled gc not started"),
                    }
                }
                Ok(Job::Gc { id, opts }) => {
                    let _ = inner.run_gc(id, &opts, &|_, _| {});
                }
                Err(_) => return,
            },
            recv(shutdown) -> _ => return,
        }
    }
}

/// Applies the store's tier reports to the blob records, one at a time, in
/// the order sent. Its own thread: a report may wait for the bucket (a
/// HEAD) and must not queue behind a GC run. Reports still queued at
/// shutdown are dropped: the records they would fix are a hint that reads
/// survive, and fsck finds and `--repair` fixes them.
///
/// First, when asked, it locates every record's tier once
/// ([`Inner::locate_all_tiers`]); reports queue meanwhile.
fn run_tier_worker(
    inner: Arc<Inner>,
    moves: Receiver<Digest>,
    shutdown: Receiver<()>,
    locate_tiers: bool,
) {
    if locate_tiers {
        let stop = || {
            matches!(
                shutdown.try_recv(),
                Err(crossbeam_channel::TryRecvError::Disconnected)
            )
        };
        if let Err(e) = inner.locate_all_tiers(&stop) {
            tracing::warn!(error = %e, "locating the blob records' tiers (retried at the next open)");
        }
    }
    loop {
        select! {
            recv(moves) -> d => match d {
                Ok(d) => {
                    if let Err(e) = inner.sync_tier(&d) {
                        tracing::warn!(digest = %d, error = %e, "updating a blob's tier");
                    }
                }
                Err(_) => return,
            },
            recv(shutdown) -> _ => return,
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
