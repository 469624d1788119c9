//! Pull counts and pull times (Harbor's repository `pull_count`, an
//! artifact's `pull_time`), kept off the read path: a manifest `GET` adds
//! one to an in-memory tally — one map update under a mutex, no index
//! access, no write — and a task adds the tally to the index every
//! [`FLUSH`] in one unsynced batch (`Engine::add_pulls`).
//!
//! What a crash can cost is stated: the tally since the last flush (at
//! most [`FLUSH`] of pulls) and the last unsynced batch. Counts are
//! statistics; nothing else depends on them. At most [`MAX_PENDING`]
//! manifests are tallied between flushes; pulls of others in the same
//! interval are not counted (and counted in the log).

use std::sync::{Mutex, Weak};
use std::time::Duration;

use berth_engine::artifacts::PullCounts;
use berth_engine::{Digest, RepoName};

use crate::http::{blocking, App};

/// How often the tally goes to the index.
pub const FLUSH: Duration = Duration::from_secs(5);

/// Manifests tallied between two flushes, at most.
pub const MAX_PENDING: usize = 100_000;

/// The tally since the last flush.
#[derive(Default)]
pub struct Pulls {
    pending: Mutex<(PullCounts, u64)>,
}

impl Pulls {
    fn lock(&self) -> std::sync::MutexGuard<'_, (PullCounts, u64)> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one pull of `digest` from `repo`, now.
    pub fn record(&self, repo: &RepoName, digest: &Digest) {
        let now = berth_engine::records::now_ms();
        let mut g = self.lock();
        let (counts, dropped) = &mut *g;
        let key = (repo.clone(), digest.clone());
        if let Some((n, last)) = counts.get_mut(&key) {
            *n += 1;
            *last = now;
        } else if counts.len() < MAX_PENDING {
            counts.insert(key, (1, now));
        } else {
            *dropped += 1;
        }
    }

    /// The tally, emptied, and how many pulls went uncounted.
    fn take(&self) -> (PullCounts, u64) {
        std::mem::take(&mut *self.lock())
    }
}

/// Adds the tally to the index.
pub async fn flush(app: &App) {
    let (counts, dropped) = app.pulls.take();
    if dropped > 0 {
        tracing::warn!(target: "berth::pulls", dropped, "pulls not counted: too many manifests tallied between flushes");
    }
    if counts.is_empty() {
        return;
    }
    match blocking(app, move |e| e.add_pulls(&counts)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(target: "berth::pulls", error = %e, "pull counts not recorded")
        }
        Err(e) => tracing::warn!(target: "berth::pulls", error = %e, "pull counts not recorded"),
    }
}

/// Flushes every [`FLUSH`] while the server lives (it holds the server
/// only while it flushes).
pub async fn flush_loop(server: Weak<App>) {
    loop {
        tokio::time::sleep(FLUSH).await;
        let Some(app) = server.upgrade() else { return };
        flush(&app).await;
    }
}
