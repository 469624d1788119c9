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

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use berth_engine::artifacts::PullCounts;
use berth_engine::{Digest, RepoName};

use crate::http::{blocking, App};

/// How often the tally goes to the index.
pub const FLUSH: Duration = Duration::from_secs(5);

/// Manifests tallied between two flushes, at most.
pub const MAX_PENDING: usize = 100_000;

/// The tally since the last flush: by repository, then manifest, so a
/// pull of a manifest already tallied looks up borrowed names and
/// allocates nothing.
#[derive(Default)]
pub struct Pulls {
    pending: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    counts: HashMap<RepoName, HashMap<Digest, (u64, u64)>>,
    manifests: usize,
    dropped: u64,
}

impl Pulls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one pull of `digest` from `repo`, now.
    pub fn record(&self, repo: &RepoName, digest: &Digest) {
        let now = berth_engine::records::now_ms();
        let mut g = self.lock();
        let t = &mut *g;
        if let Some((n, last)) = t.counts.get_mut(repo).and_then(|m| m.get_mut(digest)) {
            *n += 1;
            *last = now;
        } else if t.manifests < MAX_PENDING {
            t.manifests += 1;
            t.counts
                .entry(repo.clone())
                .or_default()
                .insert(digest.clone(), (1, now));
        } else {
            t.dropped += 1;
        }
    }

    /// The tally, emptied, and how many pulls went uncounted.
    fn take(&self) -> (PullCounts, u64) {
        let t = std::mem::take(&mut *self.lock());
        let counts = t
            .counts
            .into_iter()
            .flat_map(|(repo, m)| m.into_iter().map(move |(d, c)| ((repo.clone(), d), c)))
            .collect();
        (counts, t.dropped)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_adds_up_and_empties() {
        let p = Pulls::default();
        let (a, b) = (
            RepoName::parse("p/a").unwrap(),
            RepoName::parse("p/b").unwrap(),
        );
        let d = Digest::of(berth_engine::Algorithm::Sha256, b"m");
        for _ in 0..3 {
            p.record(&a, &d);
        }
        p.record(&b, &d);
        let (counts, dropped) = p.take();
        assert_eq!(dropped, 0);
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[&(a.clone(), d.clone())].0, 3);
        assert_eq!(counts[&(b, d.clone())].0, 1);
        assert!(p.take().0.is_empty(), "taken once");
        p.record(&a, &d);
        assert_eq!(p.take().0[&(a, d)].0, 1);
    }
}
