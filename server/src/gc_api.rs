//! Harbor's garbage-collection API over the engine's online GC.
//!
//! ```text
//! POST /api/v2.0/system/gc/schedule   {"schedule":{"type":"Manual"},
//!                                      "parameters":{"delete_untagged":true,"dry_run":false}}
//!                                     → 201, Location: /api/v2.0/system/gc/<id>
//! GET  /api/v2.0/system/gc            the last 50 runs, newest first, paged (Harbor's GCHistory)
//! GET  /api/v2.0/system/gc/<id>       one run
//! GET  /api/v2.0/system/gc/<id>/log   its log, text/plain (what it did, step by step)
//! GET  /api/v2.0/system/gc/schedule   the periodic schedule (BERTH_GC_INTERVAL_SECONDS)
//! ```
//!
//! Only `Manual` schedules are accepted over the API: the periodic online GC
//! is configured with `BERTH_GC_INTERVAL_SECONDS` / `BERTH_GC_GRACE_SECONDS`.

use crate::limits::RequestBody;
use berth_engine::{GcOptions, GcRun, GcRunKind, GcRunStatus};
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Method, Response, StatusCode};

use crate::errors::{ApiError, Code};
use crate::http::{read_small_body, App, Body};
use crate::time::rfc3339_ms;
use berth_wire::harbor::ScheduleRequest;

const PREFIX: &str = "/api/v2.0/system/gc";
const MAX_BODY: usize = 64 << 10;

/// True if `path` belongs to this API.
pub fn owns(path: &str) -> bool {
    path == PREFIX || path.starts_with("/api/v2.0/system/gc/")
}

/// A GC API endpoint, as routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `POST …/schedule`: start a manual run.
    Schedule,
    /// `GET …/schedule`.
    GetSchedule,
    /// `GET /api/v2.0/system/gc`.
    Runs,
    /// `GET …/<id>` (as sent: an id that is not a number is not found).
    Run(&'a str),
    /// `GET …/<id>/log`.
    Log(&'a str),
}

/// The route table's rows for [`PREFIX`]: the endpoint and whether it
/// writes (refused in read-only mode). Every one is for system
/// administrators (Harbor allows GC to them only, reads included).
pub fn resolve<'a>(method: &Method, path: &'a str) -> Result<(Endpoint<'a>, bool), ApiError> {
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    match (method, rest) {
        (&Method::POST, "/schedule") => Ok((Endpoint::Schedule, true)),
        (&Method::GET, "/schedule") => Ok((Endpoint::GetSchedule, false)),
        (_, "/schedule") => Err(ApiError::method_not_allowed("GET, POST")),
        (&Method::GET, "" | "/") => Ok((Endpoint::Runs, false)),
        (&Method::GET, id) => {
            let id = id.strip_prefix('/').unwrap_or(id);
            match id.strip_suffix("/log") {
                Some(run) => Ok((Endpoint::Log(run), false)),
                None => Ok((Endpoint::Run(id), false)),
            }
        }
        _ => Err(ApiError::method_not_allowed("GET")),
    }
}

/// Runs a GC API endpoint for an admitted administrator.
pub async fn handle(
    app: &App,
    endpoint: Endpoint<'_>,
    query: crate::router::Query<'_>,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    match endpoint {
        Endpoint::Schedule => schedule(app, body).await,
        Endpoint::GetSchedule => {
            let (kind, secs) = match app.gc_interval {
                Some(i) => ("Custom", i.as_secs()),
                None => ("None", 0),
            };
            let body = serde_json::json!({
                "schedule": {"type": kind, "interval_seconds": secs},
                "parameters": {"grace_seconds": app.gc_grace.as_secs(), "delete_untagged": false},
            });
            Ok(crate::http::json(
                body.to_string().into_bytes(),
                "application/json",
            ))
        }
        Endpoint::Runs => {
            let mut runs = app.engine.gc_runs()?;
            runs.reverse();
            crate::registries_api::paged_with(query, PREFIX, &runs, |r| Ok(run_json(r)))
        }
        Endpoint::Run(id) => Ok(crate::http::json(
            run_json(&find(app, id)?).to_string().into_bytes(),
            "application/json",
        )),
        Endpoint::Log(id) => Ok(crate::http::json(
            run_log(&find(app, id)?).into_bytes(),
            "text/plain; charset=utf-8",
        )),
    }
}

fn find(app: &App, id: &str) -> Result<GcRun, ApiError> {
    let missing = || ApiError::new(Code::NotFound, format!("no GC run {id:?}"));
    let n = id.parse::<u64>().map_err(|_| missing())?;
    app.engine
        .gc_runs()?
        .into_iter()
        .find(|r| r.id == n)
        .ok_or_else(missing)
}

/// A run's log, as Harbor's job log reads: one timestamped line per step.
fn run_log(r: &GcRun) -> String {
    let at = |ms: u64| rfc3339_ms(ms);
    let mut out = format!(
        "{} [INFO] garbage collection {} ({:?}): grace {} s, delete_untagged {}, dry_run {}\n",
        at(r.created_ms),
        r.id,
        r.kind,
        r.options.grace.as_secs(),
        r.options.delete_untagged,
        r.options.dry_run,
    );
    if let Some(p) = &r.report {
        let verb = if p.dry_run { "would delete" } else { "deleted" };
        for line in [
            format!("untagged manifests {verb}: {}", p.manifests_deleted),
            format!("upload sessions expired: {}", p.uploads_expired),
            format!(
                "candidates scanned: {} ({} within the grace window)",
                p.candidates, p.in_grace
            ),
            format!(
                "blobs marked: {} ({} kept: touched after the mark)",
                p.marked, p.kept_touched
            ),
            format!(
                "blobs {verb}: {}, {} bytes, {} repository links",
                p.blobs_deleted, p.bytes_reclaimed, p.links_removed
            ),
        ] {
            out.push_str(&format!("{} [INFO] {line}\n", at(r.updated_ms)));
        }
    }
    let end = match &r.status {
        GcRunStatus::Pending => "[INFO] pending".to_owned(),
        GcRunStatus::Running => "[INFO] running".to_owned(),
        GcRunStatus::Success => "[INFO] finished: success".to_owned(),
        GcRunStatus::Error(e) => format!("[ERROR] failed: {e}"),
    };
    out.push_str(&format!("{} {end}\n", at(r.updated_ms)));
    out
}

async fn schedule(app: &App, body: RequestBody) -> Result<Response<Body>, ApiError> {
    let bytes = read_small_body(body, MAX_BODY).await?;
    let req: ScheduleRequest = if bytes.is_empty() {
        ScheduleRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(Code::BadRequest, format!("invalid GC schedule: {e}")))?
    };
    match req.schedule.as_ref().map(|s| s.kind.as_str()) {
        Some("Manual") => {}
        other => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!(
                    "schedule type {:?} is not supported here: only {{\"schedule\":{{\"type\":\"Manual\"}}}}; \
                     periodic GC is set with BERTH_GC_INTERVAL_SECONDS",
                    other.unwrap_or("(none)")
                ),
            ))
        }
    }
    let opts = GcOptions {
        grace: app.gc_grace,
        delete_untagged: req.parameters.delete_untagged,
        dry_run: req.parameters.dry_run,
        upload_ttl: Some(app.upload_ttl),
    };
    let id = crate::http::blocking(app, move |e| e.schedule_gc(opts))
        .await?
        .map_err(|e| ApiError::new(Code::TooManyRequests, e.to_string()))?;
    let mut res = crate::http::empty(StatusCode::CREATED);
    if let Ok(v) = HeaderValue::from_str(&format!("{PREFIX}/{id}")) {
        res.headers_mut().insert(LOCATION, v);
    }
    Ok(res)
}

/// One run in Harbor's `GCHistory` shape, with berth's report added.
fn run_json(r: &GcRun) -> serde_json::Value {
    let (status, error) = match &r.status {
        GcRunStatus::Pending => ("Pending", None),
        GcRunStatus::Running => ("Running", None),
        GcRunStatus::Success => ("Success", None),
        GcRunStatus::Error(e) => ("Error", Some(e.clone())),
    };
    let (kind, schedule) = match r.kind {
        GcRunKind::Scheduled => ("SCHEDULE", "Custom"),
        GcRunKind::Manual | GcRunKind::Direct => ("MANUAL", "Manual"),
    };
    let params = serde_json::json!({
        "delete_untagged": r.options.delete_untagged,
        "dry_run": r.options.dry_run,
        "grace_seconds": r.options.grace.as_secs(),
    });
    let report = r.report.as_ref().map(|p| {
        serde_json::json!({
            "manifests_deleted": p.manifests_deleted,
            "uploads_expired": p.uploads_expired,
            "candidates": p.candidates,
            "in_grace": p.in_grace,
            "marked": p.marked,
            "kept_touched": p.kept_touched,
            "blobs_deleted": p.blobs_deleted,
            "bytes_reclaimed": p.bytes_reclaimed,
            "links_removed": p.links_removed,
        })
    });
    serde_json::json!({
        "id": r.id,
        "job_name": "GARBAGE_COLLECTION",
        "job_kind": kind,
        "job_parameters": params.to_string(),
        "job_status": status,
        "deleted": false,
        "creation_time": rfc3339_ms(r.created_ms),
        "update_time": rfc3339_ms(r.updated_ms),
        "schedule": {"type": schedule},
        "error": error,
        "report": report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owns_only_its_paths() {
        assert!(owns("/api/v2.0/system/gc"));
        assert!(owns("/api/v2.0/system/gc/schedule"));
        assert!(!owns("/api/v2.0/system/gcx"));
        assert!(!owns("/v2/api/v2.0/system/gc"));
    }
}
