//! The audit log: every push, pull, delete, failed sign-in and change made
//! through the admin API, as Harbor's `GET /api/v2.0/audit-logs` shows it.
//!
//! ```text
//! GET /api/v2.0/audit-logs              paged, newest first; q= with operation,
//!                                       resource, resource_type, username (k=v,
//!                                       k=~substring, k={a b}), op_time=[from~to]
//!                                       ("YYYY-MM-DD HH:MM:SS", UTC)       (admin)
//! GET /api/v2.0/projects/{p}/logs       the same, for the project's resources
//!                                       (project admin)
//! ```
//!
//! What is recorded is decided in one place ([`after`], called by the
//! router for every answered request with the entry it resolved and the
//! caller it admitted), so no handler records or forgets to. Failed
//! sign-ins are recorded where passwords are checked (`auth.rs`).
//!
//! Entries are queued in memory (at most [`MAX_PENDING`]) and appended
//! every [`FLUSH`] in one batch (`Engine::append_audit`), off the request
//! path; a graceful stop flushes the queue. What a crash can cost is
//! stated: the entries of the last [`FLUSH`] (Harbor also records its
//! audit log after the operation, asynchronously). Entries older than
//! `BERTH_AUDIT_RETENTION_DAYS` are purged hourly.

use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use berth_engine::records::{now_ms, AuditRecord};
use hyper::http::request::Parts;
use hyper::{Method, Response};
use serde_json::{json, Value};

use crate::admin::time;
use crate::errors::{ApiError, Code};
use crate::http::{blocking, App, Body};
use crate::registries_api::paged_with;
use crate::router::{Endpoint, Entry, Query};

/// How often the queue goes to the index.
pub const FLUSH: Duration = Duration::from_secs(1);

/// Entries queued between two flushes, at most; more are counted and
/// logged, not kept.
pub const MAX_PENDING: usize = 100_000;

/// How often old entries are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Entries not yet in the index.
#[derive(Default)]
pub struct AuditQueue {
    pending: Mutex<(Vec<AuditRecord>, u64)>,
}

impl AuditQueue {
    /// Queues one entry, now.
    pub fn record(&self, username: &str, resource_type: &str, resource: String, operation: &str) {
        let entry = AuditRecord {
            username: if username.is_empty() {
                "anonymous".to_owned()
            } else {
                username.to_owned()
            },
            resource,
            resource_type: resource_type.to_owned(),
            operation: operation.to_owned(),
            op_ms: now_ms(),
        };
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if g.0.len() < MAX_PENDING {
            g.0.push(entry);
        } else {
            g.1 += 1;
        }
    }

    fn take(&self) -> (Vec<AuditRecord>, u64) {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Whether [`after`] may record a request to `entry` by `method` (so the
/// router keeps the caller's name for it).
pub fn records(entry: &Entry<'_>, method: &Method) -> bool {
    match entry.endpoint {
        Endpoint::GetManifest { .. } => method == Method::GET,
        Endpoint::PutManifest { .. }
        | Endpoint::DeleteManifest { .. }
        | Endpoint::DeleteBlob { .. }
        | Endpoint::Chart(crate::charts::Endpoint::Upload { .. })
        | Endpoint::Chart(crate::charts::Endpoint::Delete { .. }) => true,
        Endpoint::Admin(_) | Endpoint::Gc(_) => {
            matches!(
                *method,
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            )
        }
        _ => false,
    }
}

/// Records what an answered request did, if it changed or pulled
/// something ([`records`]), as `who` (the admitted caller's name).
pub fn after(app: &App, entry: &Entry<'_>, parts: &Parts, who: &str, res: &Response<Body>) {
    if !res.status().is_success() {
        return;
    }
    let method = &parts.method;
    let artifact = |name: &str, reference: &str| {
        if reference.contains(':') {
            format!("{name}@{reference}")
        } else {
            format!("{name}:{reference}")
        }
    };
    let (kind, resource, op) = match entry.endpoint {
        Endpoint::GetManifest { name, reference } if method == Method::GET => {
            ("artifact", artifact(name, reference), "pull")
        }
        Endpoint::PutManifest { name, reference } => {
            ("artifact", artifact(name, reference), "create")
        }
        Endpoint::DeleteManifest { name, reference } => {
            ("artifact", artifact(name, reference), "delete")
        }
        Endpoint::DeleteBlob { name, digest } => ("blob", format!("{name}@{digest}"), "delete"),
        Endpoint::Chart(crate::charts::Endpoint::Upload { project, .. }) => {
            ("chart", format!("{project}/charts"), "create")
        }
        Endpoint::Chart(crate::charts::Endpoint::Delete {
            project,
            name,
            version,
        }) => {
            let what = match version {
                Some(v) => format!("{project}/{name}:{v}"),
                None => format!("{project}/{name}"),
            };
            ("chart", what, "delete")
        }
        Endpoint::Admin(_) | Endpoint::Gc(_) => {
            let op = match *method {
                Method::POST => "create",
                Method::PUT | Method::PATCH => "update",
                Method::DELETE => "delete",
                _ => return,
            };
            // What was made, where the answer says (a created user's id);
            // else the path.
            let path = res
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| parts.uri.path());
            let rest = path.trim_start_matches("/api/v2.0/").to_owned();
            (resource_type(&rest), rest, op)
        }
        _ => return,
    };
    app.audit.record(who, kind, resource, op);
}

/// The kind of what an admin API path names: its last collection.
fn resource_type(path: &str) -> &'static str {
    let mut kind = "system";
    for seg in path.split('/') {
        kind = match seg {
            "projects" => "project",
            "members" => "member",
            "repositories" => "repository",
            "artifacts" => "artifact",
            "tags" => "tag",
            "immutabletagrules" => "immutable_rule",
            "users" => "user",
            "password" => "user",
            "sysadmin" => "user",
            "robots" => "robot",
            "quotas" => "quota",
            "registries" => "registry",
            "replication" => "replication",
            "gc" => "gc",
            "retentions" => "retention",
            "executions" => "retention_execution",
            "usergroups" => "user_group",
            _ => continue,
        };
    }
    kind
}

/// Appends the queue to the index.
pub async fn flush(app: &App) {
    let (entries, dropped) = app.audit.take();
    if dropped > 0 {
        tracing::warn!(target: "berth::audit", dropped, "audit entries not kept: too many queued between flushes");
    }
    if entries.is_empty() {
        return;
    }
    let n = entries.len();
    match blocking(app, move |e| e.append_audit(entries)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(target: "berth::audit", error = %e, entries = n, "audit entries not recorded")
        }
        Err(e) => {
            tracing::warn!(target: "berth::audit", error = %e, entries = n, "audit entries not recorded")
        }
    }
}

/// Flushes every [`FLUSH`] and purges every [`PURGE_EVERY`] while the
/// server lives (it holds the server only while it works).
pub async fn flush_loop(server: Weak<App>, retention: Option<Duration>) {
    let mut purged: Option<Instant> = None;
    loop {
        tokio::time::sleep(FLUSH).await;
        let Some(app) = server.upgrade() else { return };
        flush(&app).await;
        if let Some(keep) = retention {
            if purged.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                purged = Some(Instant::now());
                let before =
                    now_ms().saturating_sub(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
                match blocking(&app, move |e| e.purge_audit(before)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => {
                        tracing::info!(target: "berth::audit", purged = n, "old audit entries purged")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(target: "berth::audit", error = %e, "audit purge failed")
                    }
                    Err(e) => {
                        tracing::warn!(target: "berth::audit", error = %e, "audit purge failed")
                    }
                }
            }
        }
    }
}

/// One condition of Harbor's `q`.
enum Cond {
    Exact(String, String),
    Fuzzy(String, String),
    AnyOf(String, Vec<String>),
    Range(u64, u64),
}

/// Parses Harbor's query `q` for the audit log.
fn conditions(q: &str) -> Result<Vec<Cond>, ApiError> {
    let bad = |why: String| ApiError::new(Code::BadRequest, format!("q: {why}"));
    let mut out = Vec::new();
    for part in q.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not key=value")))?;
        if !matches!(
            k,
            "operation" | "resource" | "resource_type" | "username" | "op_time"
        ) {
            return Err(bad(format!(
                "unknown key {k:?} (operation, resource, resource_type, username, op_time)"
            )));
        }
        if k == "op_time" {
            let range = v
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .ok_or_else(|| bad("op_time takes [from~to]".into()))?;
            let (from, to) = range
                .split_once('~')
                .ok_or_else(|| bad("op_time takes [from~to]".into()))?;
            let at = |s: &str, default: u64| -> Result<u64, ApiError> {
                if s.trim().is_empty() {
                    return Ok(default);
                }
                crate::time::parse_datetime(s.trim())
                    .map(|secs| secs.saturating_mul(1000))
                    .ok_or_else(|| bad(format!("{s:?} is not YYYY-MM-DD HH:MM:SS")))
            };
            // The upper bound takes its whole second.
            out.push(Cond::Range(at(from, 0)?, at(to, u64::MAX - 999)? + 999));
        } else if let Some(sub) = v.strip_prefix('~') {
            out.push(Cond::Fuzzy(k.to_owned(), sub.to_owned()));
        } else if let Some(set) = v.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let values = set.split_whitespace().map(str::to_owned).collect();
            out.push(Cond::AnyOf(k.to_owned(), values));
        } else {
            out.push(Cond::Exact(k.to_owned(), v.to_owned()));
        }
    }
    Ok(out)
}

fn field<'a>(r: &'a AuditRecord, k: &str) -> &'a str {
    match k {
        "operation" => &r.operation,
        "resource" => &r.resource,
        "resource_type" => &r.resource_type,
        _ => &r.username,
    }
}

fn matches(r: &AuditRecord, conds: &[Cond]) -> bool {
    conds.iter().all(|c| match c {
        Cond::Exact(k, v) => field(r, k) == v,
        Cond::Fuzzy(k, v) => field(r, k).contains(v.as_str()),
        Cond::AnyOf(k, vs) => vs.iter().any(|v| field(r, k) == v),
        Cond::Range(from, to) => (*from..=*to).contains(&r.op_ms),
    })
}

/// `GET /audit-logs` (all projects) or `GET /projects/{p}/logs`.
pub async fn list(
    app: &App,
    parts: &Parts,
    project: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let query = Query(parts.uri.query().unwrap_or(""));
    let conds = conditions(&query.get("q").unwrap_or_default())?;
    if let Some(sort) = query.get("sort") {
        if sort != "-op_time" && sort != "op_time" {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("cannot sort the audit log by {sort:?} (op_time, -op_time)"),
            ));
        }
    }
    let oldest_first = query.get("sort").as_deref() == Some("op_time");
    // What the queue holds is visible too: a caller reads their own
    // change back at once.
    flush(app).await;
    // A project's resources: its repositories and charts (`p/…`) and its
    // admin API paths (`projects/p`, `projects/p/…`).
    let scope = project.map(|p| (format!("{p}/"), format!("projects/{p}")));
    let in_project = move |r: &AuditRecord| match &scope {
        None => true,
        Some((repos, api)) => {
            let res = r.resource.as_str();
            res.starts_with(repos.as_str())
                || res == api
                || res
                    .strip_prefix(api.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        }
    };
    let mut logs = blocking(app, move |e| {
        e.audit_logs(|r| in_project(r) && matches(r, &conds))
    })
    .await??;
    if oldest_first {
        logs.reverse();
    }
    let path = match project {
        Some(p) => format!("/api/v2.0/projects/{p}/logs"),
        None => "/api/v2.0/audit-logs".to_owned(),
    };
    paged_with(query, &path, &logs, |(id, r)| Ok(log_json(*id, r)))
}

/// Harbor's `AuditLog`.
fn log_json(id: u64, r: &AuditRecord) -> Value {
    json!({
        "id": id,
        "username": r.username,
        "resource": r.resource,
        "resource_type": r.resource_type,
        "operation": r.operation,
        "op_time": time(r.op_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(op: &str, resource: &str, ms: u64) -> AuditRecord {
        AuditRecord {
            username: "alice".into(),
            resource: resource.into(),
            resource_type: "artifact".into(),
            operation: op.into(),
            op_ms: ms,
        }
    }

    #[test]
    fn harbors_query_syntax_selects_entries() {
        let r = rec("create", "team/app:v1", 1_614_834_367_500);
        let sel = |q: &str| matches(&r, &conditions(q).expect(q));
        assert!(sel(""));
        assert!(sel("operation=create"));
        assert!(!sel("operation=delete"));
        assert!(sel("operation={delete create}"));
        assert!(sel("resource=~team/"));
        assert!(!sel("resource=~other/"));
        assert!(sel("resource_type=artifact,username=alice"));
        assert!(sel("op_time=[2021-03-04 05:06:07~2021-03-04 05:06:07]"));
        assert!(sel("op_time=[2021-03-04 00:00:00~]"));
        assert!(!sel("op_time=[2021-03-05 00:00:00~2021-03-06 00:00:00]"));
        for bad in ["nope=1", "operation", "op_time=2021", "op_time=[x~y]"] {
            assert!(conditions(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn admin_paths_name_their_resource_type() {
        assert_eq!(resource_type("projects/p"), "project");
        assert_eq!(resource_type("projects/p/members/3"), "member");
        assert_eq!(
            resource_type("projects/p/repositories/a/artifacts/v1/tags"),
            "tag"
        );
        assert_eq!(resource_type("users/4/password"), "user");
        assert_eq!(resource_type("quotas/2"), "quota");
        assert_eq!(resource_type("system/gc/schedule"), "gc");
    }
}
