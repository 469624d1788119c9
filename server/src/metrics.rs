//! `GET /metrics`: Prometheus text exposition format 0.0.4, written by hand.
//!
//! Request counters live here ([`ServerMetrics`], owned by `App`, updated by
//! the request loop); GC, upload and tier counters live in the engine
//! ([`berth_engine::EngineMetrics`], shared with the blob store) and are
//! read at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_engine::EngineMetrics;
use hyper::{Method, Response};

use crate::http::{App, Body};

const METHODS: [&str; 8] = [
    "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "OTHER",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Request counters of one server. Relaxed atomics: independent counters,
/// only read for reporting. Lifetime: the server's.
#[derive(Default)]
pub struct ServerMetrics {
    /// The last [`HISTORY`] samples, oldest first, taken every
    /// [`SAMPLE_EVERY`] by [`sample_loop`] for the console's plots. A mutex:
    /// one writer every 30 s, readers copy it out.
    history: std::sync::Mutex<std::collections::VecDeque<Sample>>,
    requests: [[AtomicU64; 5]; 8],
    /// Request body bytes received (upload PATCH/PUT, manifest PUT).
    pub bytes_in: AtomicU64,
    /// Response body bytes sent.
    pub bytes_out: AtomicU64,
    /// Connections holding a permit (see `limits.rs`).
    pub connections_open: AtomicU64,
    /// 1 while every permit is taken and new connections wait to be
    /// accepted, else 0.
    pub connections_waiting: AtomicU64,
    /// Times the accept loop found every permit taken.
    pub connection_limit_reached: AtomicU64,
}

impl ServerMetrics {
    /// Counts one answered request.
    pub fn request(&self, method: &Method, status: u16, body_bytes: u64) {
        let m = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        let c = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[m][c].fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(body_bytes, Ordering::Relaxed);
    }

    /// Counts received request body bytes.
    pub fn received(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Every request answered so far.
    fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The samples kept, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.iter().copied().collect()
    }
}

/// Samples kept: two hours at [`SAMPLE_EVERY`].
pub const HISTORY: usize = 240;

/// How often [`sample_loop`] samples.
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The counters and gauges at one moment, for plots.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub at_ms: u64,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections: u64,
    /// Bytes the projects hold (each blob once per project), summed.
    pub stored: u64,
}

/// Samples the counters every [`SAMPLE_EVERY`] into the server's history
/// (and once at start), until the server is gone.
pub async fn sample_loop(app: std::sync::Weak<App>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        let stored = crate::http::blocking(&app, |e| e.quotas())
            .await
            .ok()
            .and_then(Result::ok)
            .map_or(0, |qs| qs.iter().map(|q| q.used.bytes).sum());
        let m = &app.metrics;
        let s = Sample {
            at_ms: berth_engine::records::now_ms(),
            requests: m.requests_total(),
            bytes_in: m.bytes_in.load(Ordering::Relaxed),
            bytes_out: m.bytes_out.load(Ordering::Relaxed),
            connections: m.connections_open.load(Ordering::Relaxed),
            stored,
        };
        let mut h = m.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(s);
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Renders every metric.
pub fn render(app: &App, uploads_open: Option<u64>) -> String {
    let mut out = String::with_capacity(4096);
    let s = &app.metrics;
    family(
        &mut out,
        "berth_http_requests_total",
        "counter",
        "HTTP requests answered, by method and status class.",
    );
    for (mi, m) in METHODS.iter().enumerate() {
        for (ci, c) in CLASSES.iter().enumerate() {
            let v = s.requests[mi][ci].load(Ordering::Relaxed);
            if v > 0 {
                let _ = writeln!(
                    out,
                    "berth_http_requests_total{{method=\"{m}\",status=\"{c}\"}} {v}"
                );
            }
        }
    }
    sample(
        &mut out,
        "berth_http_received_bytes_total",
        "counter",
        "Request body bytes received.",
        s.bytes_in.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "berth_http_sent_bytes_total",
        "counter",
        "Response body bytes sent.",
        s.bytes_out.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "berth_connections_open",
        "gauge",
        "Connections open (each holds one of BERTH_MAX_CONNECTIONS).",
        s.connections_open.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "berth_connections_waiting",
        "gauge",
        "1 while every connection permit is taken and new connections wait to be accepted.",
        s.connections_waiting.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "berth_connection_limit_reached_total",
        "counter",
        "Times every connection permit was taken when the server went to accept.",
        s.connection_limit_reached.load(Ordering::Relaxed),
    );
    let e = app.engine.metrics();
    let g = EngineMetrics::get;
    let engine: [(&str, &str, u64); 7] = [
        (
            "berth_gc_runs_total",
            "GC runs completed (including dry runs).",
            g(&e.gc_runs),
        ),
        (
            "berth_gc_failures_total",
            "GC runs that failed.",
            g(&e.gc_failures),
        ),
        (
            "berth_gc_blobs_reclaimed_total",
            "Blobs GC deleted.",
            g(&e.gc_blobs_reclaimed),
        ),
        (
            "berth_gc_bytes_reclaimed_total",
            "Bytes of blobs GC deleted.",
            g(&e.gc_bytes_reclaimed),
        ),
        (
            "berth_gc_manifests_deleted_total",
            "Untagged manifests GC deleted.",
            g(&e.gc_manifests_deleted),
        ),
        (
            "berth_uploads_expired_total",
            "Abandoned upload sessions expired.",
            g(&e.uploads_expired),
        ),
        (
            "berth_index_commits_total",
            "Index batches committed (each atomic and synced).",
            g(&e.index_commits),
        ),
    ];
    for (name, help, v) in engine {
        sample(&mut out, name, "counter", help, v);
    }
    if let Some(d) = app.engine.database_stats() {
        let db: [(&str, &str, &str, u64); 7] = [
            (
                "berth_database_calls_total",
                "counter",
                "Calls this node made to the cluster database.",
                d.calls,
            ),
            (
                "berth_database_errors_total",
                "counter",
                "Database calls that failed or timed out.",
                d.errors,
            ),
            (
                "berth_database_latency_microseconds_total",
                "counter",
                "Sum of the database calls' latencies, waits for a pooled connection included (divide by calls for the mean).",
                d.latency_us,
            ),
            (
                "berth_database_pool_connections",
                "gauge",
                "Database connections this node holds open.",
                d.pool_size,
            ),
            (
                "berth_database_pool_idle",
                "gauge",
                "Open database connections idle in the pool.",
                d.pool_idle,
            ),
            (
                "berth_database_pool_waiting",
                "gauge",
                "Callers waiting for a pooled database connection.",
                d.pool_waiting,
            ),
            (
                "berth_database_pool_max",
                "gauge",
                "Database connections this node may open.",
                d.pool_max,
            ),
        ];
        for (name, kind, help, v) in db {
            sample(&mut out, name, kind, help, v);
        }
    }
    if let Some(t) = app.engine.store().tier_stats() {
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let tier: [(&str, &str, &str, u64); 8] = [
            (
                "berth_tier_hits_total",
                "counter",
                "Blob reads served by the local tier.",
                g(&t.hits),
            ),
            (
                "berth_tier_misses_total",
                "counter",
                "Blob reads fetched from the bucket.",
                g(&t.misses),
            ),
            (
                "berth_tier_uploaded_bytes_total",
                "counter",
                "Bytes copied to the bucket.",
                g(&t.bytes_uploaded),
            ),
            (
                "berth_tier_downloaded_bytes_total",
                "counter",
                "Bytes fetched from the bucket into the local cache.",
                g(&t.bytes_downloaded),
            ),
            (
                "berth_tier_evicted_bytes_total",
                "counter",
                "Bytes of local copies evicted.",
                g(&t.bytes_evicted),
            ),
            (
                "berth_tier_evictions_total",
                "counter",
                "Local copies evicted.",
                g(&t.evictions),
            ),
            (
                "berth_tier_pending_uploads",
                "gauge",
                "Blobs waiting to be copied to the bucket.",
                g(&t.pending_uploads),
            ),
            (
                "berth_tier_cached_bytes",
                "gauge",
                "Bytes of local copies in the cache.",
                g(&t.cached_bytes),
            ),
        ];
        for (name, kind, help, v) in tier {
            sample(&mut out, name, kind, help, v);
        }
    }
    if let Some(n) = uploads_open {
        sample(
            &mut out,
            "berth_upload_sessions_open",
            "gauge",
            "Upload sessions open (durable, not completed or cancelled).",
            n,
        );
    }
    out
}

/// `GET /metrics`.
pub async fn get(app: &App) -> Response<Body> {
    let uploads = crate::http::blocking(app, |e| e.open_uploads().ok())
        .await
        .ok()
        .flatten();
    let mut res = crate::http::json(
        render(app, uploads).into_bytes(),
        "text/plain; version=0.0.4; charset=utf-8",
    );
    *res.status_mut() = hyper::StatusCode::OK;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_method_and_class() {
        let m = ServerMetrics::default();
        m.request(&Method::GET, 200, 10);
        m.request(&Method::GET, 404, 5);
        m.request(&Method::from_bytes(b"BREW").unwrap(), 503, 0);
        assert_eq!(m.requests[0][1].load(Ordering::Relaxed), 1);
        assert_eq!(m.requests[0][3].load(Ordering::Relaxed), 1);
        assert_eq!(m.requests[7][4].load(Ordering::Relaxed), 1);
        assert_eq!(m.bytes_out.load(Ordering::Relaxed), 15);
    }
}
