//! Harbor's garbage-collection API over the engine's online GC.
//!
//! ```text
//! POST /api/v2.0/system/gc/schedule   {"schedule":{"type":"Manual"},
//!                                      "parameters":{"delete_untagged":true,"dry_run":false}}
//!                                     → 201, Location: /api/v2.0/system/gc/<id>
//! GET  /api/v2.0/system/gc            recent runs, newest first (Harbor's GCHistory fields)
//! GET  /api/v2.0/system/gc/<id>       one run
//! GET  /api/v2.0/system/gc/schedule   the periodic schedule (BERTH_GC_INTERVAL_SECONDS)
//! ```
//!
//! Only `Manual` schedules are accepted over the API: the periodic online GC
//! is configured with `BERTH_GC_INTERVAL_SECONDS` / `BERTH_GC_GRACE_SECONDS`.

use crate::limits::RequestBody;
use berth_engine::{GcOptions, GcRun, GcRunKind, GcRunStatus};
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Method, Response, StatusCode};

use crate::http::{App, Body};
use crate::time::rfc3339_ms;
use berth_wire::harbor::ScheduleRequest;

const PREFIX: &str = "/api/v2.0/system/gc";
const MAX_BODY: usize = 64 << 10;

/// True if `path` belongs to this API.
pub fn owns(path: &str) -> bool {
    path == PREFIX || path.starts_with("/api/v2.0/system/gc/")
}

/// Harbor-style error: `{"errors":[{"code":…,"message":…}]}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    let mut res = crate::http::json(body.to_string().into_bytes(), "application/json");
    *res.status_mut() = status;
    res
}

/// Dispatches a request under [`PREFIX`]. The caller has checked that it
/// comes from a system administrator (`auth::require_admin` in the router):
/// Harbor allows GC to system admins only, reads included.
pub async fn dispatch(app: &App, method: &Method, path: &str, body: RequestBody) -> Response<Body> {
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    match (method, rest) {
        (&Method::POST, "/schedule") => {
            if app.read_only {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNSUPPORTED",
                    "the registry is in read-only mode",
                );
            }
            schedule(app, body).await
        }
        (&Method::GET, "/schedule") => {
            let (kind, secs) = match app.gc_interval {
                Some(i) => ("Custom", i.as_secs()),
                None => ("None", 0),
            };
            let body = serde_json::json!({
                "schedule": {"type": kind, "interval_seconds": secs},
                "parameters": {"grace_seconds": app.gc_grace.as_secs(), "delete_untagged": false},
            });
            crate::http::json(body.to_string().into_bytes(), "application/json")
        }
        (&Method::GET, "" | "/") => {
            let runs = app.engine.gc_runs();
            let list: Vec<_> = runs.iter().rev().map(run_json).collect();
            let mut res = crate::http::json(
                serde_json::Value::Array(list).to_string().into_bytes(),
                "application/json",
            );
            if let Ok(v) = HeaderValue::from_str(&runs.len().to_string()) {
                res.headers_mut().insert("x-total-count", v);
            }
            res
        }
        (&Method::GET, id) => {
            let run = id
                .strip_prefix('/')
                .and_then(|id| id.parse::<u64>().ok())
                .and_then(|id| app.engine.gc_runs().into_iter().find(|r| r.id == id));
            match run {
                Some(r) => {
                    crate::http::json(run_json(&r).to_string().into_bytes(), "application/json")
                }
                None => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such GC run"),
            }
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "method not allowed",
        ),
    }
}

async fn schedule(app: &App, body: RequestBody) -> Response<Body> {
    let bytes = match read(body).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let req: ScheduleRequest = if bytes.is_empty() {
        ScheduleRequest::default()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    &format!("invalid GC schedule: {e}"),
                )
            }
        }
    };
    match req.schedule.as_ref().map(|s| s.kind.as_str()) {
        Some("Manual") => {}
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!(
                    "schedule type {:?} is not supported here: only {{\"schedule\":{{\"type\":\"Manual\"}}}}; \
                     periodic GC is set with BERTH_GC_INTERVAL_SECONDS",
                    other.unwrap_or("(none)")
                ),
            )
        }
    }
    let opts = GcOptions {
        grace: app.gc_grace,
        delete_untagged: req.parameters.delete_untagged,
        dry_run: req.parameters.dry_run,
        upload_ttl: Some(app.upload_ttl),
    };
    let r = crate::http::blocking(app, move |e| e.schedule_gc(opts)).await;
    match r {
        Ok(Ok(id)) => {
            let mut res = crate::http::empty(StatusCode::CREATED);
            if let Ok(v) = HeaderValue::from_str(&format!("{PREFIX}/{id}")) {
                res.headers_mut().insert(LOCATION, v);
            }
            res
        }
        Ok(Err(e)) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            &e.to_string(),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "scheduling GC failed",
        ),
    }
}

async fn read(mut body: RequestBody) -> Result<Vec<u8>, Response<Body>> {
    use http_body_util::BodyExt;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("reading the request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "BAD_REQUEST",
                    "request body too large",
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
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
