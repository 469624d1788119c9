//! Background work on worker threads, never on a caller's async path.
//!
//! One ticker thread sends periodic jobs into a crossbeam channel; one
//! worker thread runs them against the engine's shared state. Both stop when
//! the engine is dropped: the `Workers` drop guard closes the shutdown
//! channel (waking the ticker at once) and joins the threads, so no job
//! outlives the engine.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, select, tick, Receiver, Sender};

use crate::engine::Inner;

/// A unit of background work.
enum Job {
    ExpireUploads,
}

/// Owns the background threads; dropping it stops and joins them.
pub(crate) struct Workers {
    shutdown: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(crate) fn start(inner: Arc<Inner>) -> Workers {
        let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
        // Jobs: bounded so a slow worker makes the ticker skip, not pile up.
        let (job_tx, job_rx) = bounded::<Job>(4);
        let interval = inner.config.expiry_interval;
        let ticker = {
            let shutdown_rx = shutdown_rx.clone();
            std::thread::Builder::new()
                .name("berth-ticker".into())
                .spawn(move || run_ticker(interval, job_tx, shutdown_rx))
        };
        let worker = std::thread::Builder::new()
            .name("berth-worker".into())
            .spawn(move || run_worker(inner, job_rx, shutdown_rx));
        let threads = [ticker, worker]
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
            threads,
        }
    }
}

fn run_ticker(interval: std::time::Duration, jobs: Sender<Job>, shutdown: Receiver<()>) {
    let ticks = tick(interval);
    loop {
        select! {
            recv(ticks) -> _ => { let _ = jobs.try_send(Job::ExpireUploads); }
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
