//! Pull-based replication, Harbor's shapes (`docs/proxy-cache.md`,
//! "Replication"): a policy names a source registry (`registries_api.rs`),
//! repository and tag filters, a destination namespace and a trigger —
//! manual, or a six-field cron — and each run copies what is missing,
//! by digest, through the proxy cache's copy (`proxy_cache::cache_manifest`:
//! an index's children and every blob first, then the manifest and tag in
//! one batch).
//!
//! ```text
//! GET    /api/v2.0/replication/policies        policies, paged          (admin)
//! POST   /api/v2.0/replication/policies        ReplicationPolicy → 201  (admin)
//! GET|PUT|DELETE /api/v2.0/replication/policies/{id}                    (admin)
//! POST   /api/v2.0/replication/executions      {"policy_id"} → 201      (admin)
//! GET    /api/v2.0/replication/executions[?policy_id=N]  runs, newest first (admin)
//! GET    /api/v2.0/replication/executions/{id}                          (admin)
//! ```
//!
//! A run lists the source's catalog (unless the repository filter names
//! one repository: registries like Docker Hub have no catalog), then each
//! matching repository's tags; a tag whose destination already holds the
//! same digest costs one `GET` of the manifest and nothing else. Runs are
//! kept in memory (the last [`KEEP_RUNS`]); a policy runs once at a time,
//! on one node of a cluster ([`berth_engine::registries::RunLock`]).

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use berth_engine::records::{now_ms, PolicyRecord, RegistryRecord};
use berth_engine::{AccountError, Reference, RepoName, Tag};
use berth_wire::harbor::{ExecutionReq, PolicyReq};
use berth_wire::pattern::glob;
use chrono::Utc;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::admin::{created, not_found, ok_json, read_json, time};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, empty, App, Body};
use crate::limits::RequestBody;
use crate::router::Query;

/// Runs kept for the executions API.
pub const KEEP_RUNS: usize = 500;
/// Most repositories and tags one run lists.
const MAX_LISTED: usize = 100_000;
/// How often the scheduler re-reads the policies.
const RESCAN: Duration = Duration::from_secs(30);

/// An endpoint, as routed (ids as sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    ListPolicies,
    CreatePolicy,
    GetPolicy(&'a str),
    UpdatePolicy(&'a str),
    DeletePolicy(&'a str),
    ListExecutions,
    StartExecution,
    GetExecution(&'a str),
}

/// The admin API's rows for `replication/…` (`segs` after the prefix).
pub fn resolve<'a>(method: &Method, segs: &[&'a str]) -> Result<Endpoint<'a>, ApiError> {
    use Endpoint as E;
    Ok(match (segs, method) {
        (["replication", "policies"], &Method::GET) => E::ListPolicies,
        (["replication", "policies"], &Method::POST) => E::CreatePolicy,
        (["replication", "policies", id], &Method::GET) => E::GetPolicy(id),
        (["replication", "policies", id], &Method::PUT) => E::UpdatePolicy(id),
        (["replication", "policies", id], &Method::DELETE) => E::DeletePolicy(id),
        (["replication", "executions"], &Method::GET) => E::ListExecutions,
        (["replication", "executions"], &Method::POST) => E::StartExecution,
        (["replication", "executions", id], &Method::GET) => E::GetExecution(id),
        (["replication", "policies" | "executions"], _) => {
            return Err(ApiError::method_not_allowed("GET, POST"))
        }
        (["replication", "policies", _], _) => {
            return Err(ApiError::method_not_allowed("GET, PUT, DELETE"))
        }
        (["replication", "executions", _], _) => return Err(ApiError::method_not_allowed("GET")),
        _ => {
            return Err(ApiError::new(
                Code::RouteUnknown,
                format!("no endpoint at /api/v2.0/{}", segs.join("/")),
            ))
        }
    })
}

/// Runs an endpoint (admitted as a system administrator).
pub async fn handle(
    app: &Arc<App>,
    endpoint: Endpoint<'_>,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    use Endpoint as E;
    match endpoint {
        E::ListPolicies => list_policies(app, parts).await,
        E::CreatePolicy => create_policy(app, body).await,
        E::GetPolicy(id) => get_policy(app, id).await,
        E::UpdatePolicy(id) => update_policy(app, id, body).await,
        E::DeletePolicy(id) => delete_policy(app, id).await,
        E::ListExecutions => list_executions(app, parts),
        E::StartExecution => {
            let req: ExecutionReq = read_json(body).await?;
            let id = start(app, req.policy_id, "manual").await?;
            Ok(created(format!("/api/v2.0/replication/executions/{id}")))
        }
        E::GetExecution(id) => {
            let id: u64 = parse_id(id)?;
            let runs = lock(&app.replication.runs);
            match runs.iter().find(|r| r.id == id) {
                Some(r) => ok_json(&r.json()),
                None => Err(not_found(format!("execution {id} not found"))),
            }
        }
    }
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::new(Code::BadRequest, format!("id {id:?} is not a number")))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn invalid(what: &str, reason: impl Into<String>) -> AccountError {
    AccountError::Invalid {
        what: what.to_owned(),
        reason: reason.into(),
    }
}

/// Applies a request to `p` (all of it at creation; what it names on
/// update) and checks what only the request can say.
fn apply(p: &mut PolicyRecord, req: PolicyReq) -> Result<(), AccountError> {
    if let Some(n) = req.name {
        p.name = n;
    }
    if let Some(d) = req.description {
        p.description = d;
    }
    if let Some(r) = req.src_registry {
        p.registry_id = r.id;
    }
    if req.dest_registry.is_some_and(|r| r.id != 0) {
        return Err(invalid(
            "dest_registry",
            "berth replicates pull-based only: give src_registry and leave dest_registry out",
        ));
    }
    if req.deletion == Some(true) {
        return Err(invalid("deletion", "deletions are not replicated"));
    }
    if let Some(ns) = req.dest_namespace {
        if !ns.is_empty() {
            berth_engine::accounts::valid_project_name(&ns)?;
        }
        p.dest_namespace = ns;
    }
    if let Some(n) = req.dest_namespace_replace_count {
        if n < -1 {
            return Err(invalid("dest_namespace_replace_count", "give -1 or more"));
        }
        p.dest_namespace_replace_count = n;
    }
    if let Some(filters) = req.filters {
        (p.repos, p.tags) = (String::new(), String::new());
        for f in filters {
            if f.decoration.as_deref().is_some_and(|d| d != "matches") {
                return Err(invalid("filters", "only matching filters (no excludes)"));
            }
            let value = f.value.as_str().unwrap_or_default().to_owned();
            match f.kind.as_str() {
                "name" => p.repos = value,
                "tag" => p.tags = value,
                "resource" if value.is_empty() || value == "image" || value == "artifact" => {}
                other => {
                    return Err(invalid(
                        &format!("filter type {other:?}"),
                        "berth filters by name, tag and resource image",
                    ))
                }
            }
        }
    }
    if let Some(t) = req.trigger {
        p.cron = match t.kind.as_str() {
            "manual" => String::new(),
            "scheduled" => {
                let cron = t.trigger_settings.and_then(|s| s.cron).unwrap_or_default();
                cron::Schedule::from_str(&cron)
                    .map_err(|e| invalid(&format!("cron {cron:?}"), e.to_string()))?;
                cron
            }
            other => {
                return Err(invalid(
                    &format!("trigger type {other:?}"),
                    "give manual or scheduled",
                ))
            }
        };
    }
    if let Some(e) = req.enabled {
        p.enabled = e;
    }
    if let Some(o) = req.overwrite {
        p.overwrite = o;
    }
    Ok(())
}

/// A policy as Harbor shows it; `src` its registry, read with it.
fn policy_json(id: u64, p: &PolicyRecord, src: Option<&RegistryRecord>) -> Value {
    let src = src
        .map(|r| json!({"id": p.registry_id, "name": r.name, "type": r.kind, "url": r.url}))
        .unwrap_or_else(|| json!({"id": p.registry_id}));
    let mut filters = Vec::new();
    if !p.repos.is_empty() {
        filters.push(json!({"type": "name", "value": p.repos}));
    }
    if !p.tags.is_empty() {
        filters.push(json!({"type": "tag", "value": p.tags}));
    }
    let trigger = if p.cron.is_empty() {
        json!({"type": "manual", "trigger_settings": {"cron": ""}})
    } else {
        json!({"type": "scheduled", "trigger_settings": {"cron": p.cron}})
    };
    json!({
        "id": id,
        "name": p.name,
        "description": p.description,
        "src_registry": src,
        "dest_registry": {"id": 0, "name": "Local", "type": "harbor"},
        "dest_namespace": p.dest_namespace,
        "dest_namespace_replace_count": p.dest_namespace_replace_count,
        "filters": filters,
        "trigger": trigger,
        "deletion": false,
        "override": p.overwrite,
        "enabled": p.enabled,
        "speed": 0,
        "copy_by_chunk": false,
        "creation_time": time(p.created_ms),
        "update_time": time(p.updated_ms),
    })
}

async fn list_policies(app: &App, parts: &Parts) -> Result<Response<Body>, ApiError> {
    let query = Query(parts.uri.query().unwrap_or(""));
    let name = query.get("name").map(|n| n.into_owned());
    // Policies and their registries in one trip to the blocking pool.
    let (all, registries) = blocking(app, |e| -> Result<_, ApiError> {
        let registries: HashMap<u64, RegistryRecord> = e.registries()?.into_iter().collect();
        Ok((e.policies()?, registries))
    })
    .await??;
    let items = all
        .iter()
        .filter(|(_, p)| name.as_deref().is_none_or(|n| p.name.contains(n)))
        .map(|(id, p)| policy_json(*id, p, registries.get(&p.registry_id)))
        .collect();
    crate::registries_api::paged(query, "/api/v2.0/replication/policies", items)
}

async fn create_policy(app: &Arc<App>, body: RequestBody) -> Result<Response<Body>, ApiError> {
    let req: PolicyReq = read_json(body).await?;
    let mut p = PolicyRecord {
        name: String::new(),
        description: String::new(),
        registry_id: 0,
        repos: String::new(),
        tags: String::new(),
        dest_namespace: String::new(),
        dest_namespace_replace_count: -1,
        cron: String::new(),
        overwrite: false,
        enabled: true,
        created_ms: 0,
        updated_ms: 0,
    };
    apply(&mut p, req)?;
    let id = blocking(app, move |e| e.create_policy(p)).await??;
    app.replication.wake.notify_one();
    Ok(created(format!("/api/v2.0/replication/policies/{id}")))
}

async fn get_policy(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    let found = blocking(app, move |e| -> Result<_, ApiError> {
        let Some(p) = e.policy(id)? else {
            return Ok(None);
        };
        let src = e.registry(p.registry_id)?;
        Ok(Some((p, src)))
    })
    .await??;
    match found {
        Some((p, src)) => ok_json(&policy_json(id, &p, src.as_ref())),
        None => Err(not_found(format!("replication policy {id} not found"))),
    }
}

async fn update_policy(
    app: &Arc<App>,
    id: &str,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    let req: PolicyReq = read_json(body).await?;
    blocking(app, move |e| e.update_policy(id, |p| apply(p, req))).await??;
    app.replication.wake.notify_one();
    Ok(empty(StatusCode::OK))
}

async fn delete_policy(app: &Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    if !blocking(app, move |e| e.delete_policy(id)).await?? {
        return Err(not_found(format!("replication policy {id} not found")));
    }
    app.replication.wake.notify_one();
    Ok(empty(StatusCode::OK))
}

fn list_executions(app: &App, parts: &Parts) -> Result<Response<Body>, ApiError> {
    let query = Query(parts.uri.query().unwrap_or(""));
    let policy = match query.get("policy_id") {
        Some(p) => Some(parse_id(&p)?),
        None => None,
    };
    let items = lock(&app.replication.runs)
        .iter()
        .rev()
        .filter(|r| policy.is_none_or(|p| r.policy_id == p))
        .map(Run::json)
        .collect();
    crate::registries_api::paged(query, "/api/v2.0/replication/executions", items)
}

/// The server's replication state: its runs, and the scheduler's bell.
#[derive(Default)]
pub struct Replication {
    runs: Mutex<VecDeque<Run>>,
    next_id: AtomicU64,
    /// Rung when policies change, so the scheduler re-reads them.
    wake: Arc<tokio::sync::Notify>,
}

/// One execution of a policy.
#[derive(Clone, Debug)]
struct Run {
    id: u64,
    policy_id: u64,
    trigger: &'static str,
    /// `InProgress`, `Succeed`, `Failed`.
    status: &'static str,
    status_text: String,
    start_ms: u64,
    end_ms: Option<u64>,
    total: u64,
    succeed: u64,
    failed: u64,
}

impl Run {
    fn json(&self) -> Value {
        let in_progress = self
            .total
            .saturating_sub(self.succeed)
            .saturating_sub(self.failed);
        json!({
            "id": self.id,
            "policy_id": self.policy_id,
            "status": self.status,
            "status_text": self.status_text,
            "trigger": self.trigger,
            "total": self.total,
            "succeed": self.succeed,
            "failed": self.failed,
            "in_progress": if self.end_ms.is_some() { 0 } else { in_progress },
            "stopped": 0,
            "start_time": time(self.start_ms),
            "end_time": self.end_ms.map(time),
        })
    }
}

impl Replication {
    fn update(&self, id: u64, f: impl FnOnce(&mut Run)) {
        if let Some(r) = lock(&self.runs).iter_mut().find(|r| r.id == id) {
            f(r);
        }
    }

    fn running(&self, policy: u64) -> bool {
        lock(&self.runs)
            .iter()
            .any(|r| r.policy_id == policy && r.end_ms.is_none())
    }
}

/// Starts a run of policy `policy_id` in a task of its own; its id.
/// `409` while the policy runs here already.
pub async fn start(app: &Arc<App>, policy_id: u64, trigger: &'static str) -> Result<u64, ApiError> {
    if app.read_only {
        return Err(ApiError::new(
            Code::Unsupported,
            "the registry is in read-only mode",
        ));
    }
    let Some(policy) = blocking(app, move |e| e.policy(policy_id)).await?? else {
        return Err(not_found(format!(
            "replication policy {policy_id} not found"
        )));
    };
    let r = &app.replication;
    let id = {
        let mut runs = lock(&r.runs);
        if runs
            .iter()
            .any(|x| x.policy_id == policy_id && x.end_ms.is_none())
        {
            return Err(ApiError::new(
                Code::Conflict,
                format!("replication policy {policy_id} is running"),
            ));
        }
        let id = r.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        runs.push_back(Run {
            id,
            policy_id,
            trigger,
            status: "InProgress",
            status_text: String::new(),
            start_ms: now_ms(),
            end_ms: None,
            total: 0,
            succeed: 0,
            failed: 0,
        });
        while runs.len() > KEEP_RUNS {
            runs.pop_front();
        }
        id
    };
    let app = app.clone();
    tokio::spawn(async move {
        let result = run(&app, id, policy_id, &policy).await;
        app.replication.update(id, |r| {
            r.end_ms = Some(now_ms());
            match result {
                Ok(()) if r.failed == 0 => r.status = "Succeed",
                Ok(()) => {
                    r.status = "Failed";
                    r.status_text = format!("{} of {} tags failed", r.failed, r.total);
                }
                Err(e) => {
                    r.status = "Failed";
                    r.status_text = e;
                }
            }
        });
        tracing::info!(target: "berth::replication", run = id, policy = policy_id, "run ended");
    });
    Ok(id)
}

/// The destination of source repository `src` under `p`.
fn destination(p: &PolicyRecord, src: &str) -> Result<RepoName, String> {
    let name = if p.dest_namespace.is_empty() {
        src.to_owned()
    } else {
        let parts: Vec<&str> = src.split('/').collect();
        let drop = match p.dest_namespace_replace_count {
            -1 => usize::from(parts.len() > 1),
            n => (n as usize).min(parts.len().saturating_sub(1)),
        };
        format!("{}/{}", p.dest_namespace, parts[drop..].join("/"))
    };
    RepoName::parse(&name).map_err(|e| format!("{src} → {name}: {e}"))
}

async fn run(app: &Arc<App>, id: u64, policy_id: u64, p: &PolicyRecord) -> Result<(), String> {
    let _held = match blocking(app, move |e| e.try_run_lock(policy_id)).await {
        Ok(Ok(Some(l))) => l,
        Ok(Ok(None)) => return Err("running on another node".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(e.to_string()),
    };
    let up = crate::proxy_cache::upstream(app, p.registry_id)
        .await
        .map_err(|e| e.to_string())?;
    let literal = !p.repos.is_empty() && !p.repos.contains(['*', '?', '{']);
    let repos = if literal {
        vec![p.repos.clone()]
    } else {
        let all = up.catalog(MAX_LISTED).await.map_err(|e| e.to_string())?;
        all.into_iter()
            .filter(|r| p.repos.is_empty() || glob(&p.repos, r))
            .collect()
    };
    let mut projects: HashMap<String, ()> = HashMap::new();
    for src in repos {
        let dest = match destination(p, &src) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(target: "berth::replication", run = id, error = %e, "skipped");
                continue;
            }
        };
        if projects.insert(dest.project().to_owned(), ()).is_none() {
            // Harbor creates the destination project (private) when missing.
            let project = dest.project().to_owned();
            let made = blocking(app, move |e| e.create_project(&project, false, None)).await;
            if let Ok(Err(e)) = made {
                if !matches!(e, AccountError::Exists { .. }) {
                    return Err(e.to_string());
                }
            }
        }
        let tags = up.tags(&src, MAX_LISTED).await.map_err(|e| e.to_string())?;
        let tags: Vec<String> = tags
            .into_iter()
            .filter(|t| p.tags.is_empty() || glob(&p.tags, t))
            .collect();
        app.replication.update(id, |r| r.total += tags.len() as u64);
        for tag in tags {
            let outcome = copy_tag(app, &up, p, &src, &dest, &tag).await;
            if let Err(e) = &outcome {
                tracing::warn!(target: "berth::replication", run = id, %src, %tag, error = %e,
                    "tag not copied");
            }
            app.replication.update(id, |r| match outcome {
                Ok(()) => r.succeed += 1,
                Err(_) => r.failed += 1,
            });
        }
    }
    Ok(())
}

/// Copies `src:tag` to `dest:tag` unless it is there with the same digest
/// (or, without `override`, there at all).
async fn copy_tag(
    app: &Arc<App>,
    up: &Arc<crate::upstream::Upstream>,
    p: &PolicyRecord,
    src: &str,
    dest: &RepoName,
    tag: &str,
) -> Result<(), String> {
    let t = Tag::parse(tag).map_err(|e| e.to_string())?;
    let fetched = up
        .manifest(src, tag)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{src}:{tag} is gone upstream"))?;
    let held = app
        .engine
        .get_manifest_async(dest, &Reference::Tag(t.clone()))
        .await
        .map_err(|e| e.to_string())?;
    match held {
        Some(m) if m.digest == fetched.digest => return Ok(()),
        Some(_) if !p.overwrite => return Ok(()),
        _ => {}
    }
    crate::proxy_cache::cache_manifest(app, up, src, dest.clone(), Some(t), fetched).await
}

/// The scheduler: fires each enabled scheduled policy at its cron's times
/// (UTC), re-reading the policies every [`RESCAN`] or when they change.
/// It holds the server only while it works: once the server has shut
/// down (its last `Arc` gone), it ends.
pub async fn schedule(server: Weak<App>) {
    let mut clock = crate::cron_clock::CronClock::default();
    loop {
        let Some(app) = server.upgrade() else { return };
        let policies = match blocking(&app, |e| e.policies()).await {
            Ok(Ok(p)) => p,
            _ => Vec::new(),
        };
        let scheduled = policies
            .iter()
            .filter(|(_, p)| p.enabled && !p.cron.is_empty())
            .map(|(id, p)| (*id, p.cron.as_str()));
        let (due, wait) = clock.due(Utc::now(), scheduled);
        for id in due {
            if !app.replication.running(id) {
                if let Err(e) = start(&app, id, "scheduled").await {
                    tracing::warn!(target: "berth::replication", policy = id, error = %e,
                        "scheduled run not started");
                }
            }
        }
        let wait = wait.unwrap_or(RESCAN).min(RESCAN);
        let wake = app.replication.wake.clone();
        drop(app);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}
