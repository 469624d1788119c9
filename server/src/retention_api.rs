//! Harbor's tag retention API:
//!
//! ```text
//! GET    /api/v2.0/retentions/metadatas                   templates and selectors   (signed in)
//! POST   /api/v2.0/retentions                             RetentionPolicy → 201     (project admin)
//! GET|PUT|DELETE /api/v2.0/retentions/{id}                one policy                (project admin)
//! POST   /api/v2.0/retentions/{id}/executions             {"dry_run":bool} → 201 with Location
//! GET    /api/v2.0/retentions/{id}/executions             runs, newest first, paged
//! PATCH  /api/v2.0/retentions/{id}/executions/{eid}       {"action":"stop"}
//! GET    /api/v2.0/retentions/{id}/executions/{eid}/tasks one task per repository, paged
//! GET    …/executions/{eid}/tasks/{tid}                   the task's log (text/plain table)
//! ```
//!
//! A project has at most one policy (`scope: {"level":"project","ref":
//! <project id>}`); its id is the project's `metadata.retention_id`. Rules
//! follow Harbor's shapes (`template`, `params`, `tag_selectors` with
//! `extras: "{\"untagged\":true}"`, `scope_selectors.repository`); the
//! engine decides what a run keeps (`engine/src/retention.rs`). Scheduled
//! runs follow the policy's six-field cron (`trigger.settings.cron`, UTC)
//! on every node that is not read-only: the engine lets one run of a
//! policy run at a time, so in a cluster the other nodes' attempts are
//! refused and logged.
//!
//! The path names no project, so the handlers check the caller against
//! the policy's project: a project it cannot see is `404` (policy ids are
//! not to be probed), one it does not administer `403`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use berth_engine::records::{
    now_ms, RetentionPolicyRecord, RetentionRuleRecord, RetentionRunRecord, RetentionTaskRecord,
};
use berth_engine::retention::{self, LEASE_MS, TEMPLATES};
use berth_wire::harbor::{RetentionPolicyReq, RetentionRunReq, RetentionStopReq, SelectorReq};
use chrono::Utc;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::accounts_api::parse_id;
use crate::admin::{created, not_found, ok_json, read_json, time};
use crate::auth::{self, Guard, Principal};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, empty, App, Body};
use crate::immutable_api::{bad, selector};
use crate::limits::RequestBody;
use crate::registries_api::paged_with;
use crate::router::Query;

/// A retention endpoint (ids as given in the path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Metadata,
    Create,
    Get(&'a str),
    Update(&'a str),
    Delete(&'a str),
    Run(&'a str),
    Runs(&'a str),
    Stop(&'a str, &'a str),
    Tasks(&'a str, &'a str),
    TaskLog(&'a str, &'a str, &'a str),
}

/// The route table's rows under `retentions` (`segs` starts with it).
/// Every endpoint needs a signed-in caller; the handlers check the
/// policy's project.
pub fn resolve<'a>(
    method: &Method,
    segs: &[&'a str],
) -> Result<(Endpoint<'a>, Guard<'a>), ApiError> {
    use Endpoint as E;
    let e = match (segs, method) {
        (["retentions", "metadatas"], &Method::GET) => E::Metadata,
        (["retentions"], &Method::POST) => E::Create,
        (["retentions", id], &Method::GET) => E::Get(id),
        (["retentions", id], &Method::PUT) => E::Update(id),
        (["retentions", id], &Method::DELETE) => E::Delete(id),
        (["retentions", id, "executions"], &Method::POST) => E::Run(id),
        (["retentions", id, "executions"], &Method::GET) => E::Runs(id),
        (["retentions", id, "executions", eid], &Method::PATCH) => E::Stop(id, eid),
        (["retentions", id, "executions", eid, "tasks"], &Method::GET) => E::Tasks(id, eid),
        (["retentions", id, "executions", eid, "tasks", tid], &Method::GET) => {
            E::TaskLog(id, eid, tid)
        }
        (["retentions", "metadatas"], _) => return Err(ApiError::method_not_allowed("GET")),
        (["retentions"], _) => return Err(ApiError::method_not_allowed("POST")),
        (["retentions", _], _) => return Err(ApiError::method_not_allowed("GET, PUT, DELETE")),
        (["retentions", _, "executions"], _) => {
            return Err(ApiError::method_not_allowed("GET, POST"))
        }
        (["retentions", _, "executions", _], _) => {
            return Err(ApiError::method_not_allowed("PATCH"))
        }
        (["retentions", _, "executions", _, "tasks", ..], _) => {
            return Err(ApiError::method_not_allowed("GET"))
        }
        _ => {
            return Err(ApiError::new(
                Code::RouteUnknown,
                format!("no endpoint at /api/v2.0/{}", segs.join("/")),
            ))
        }
    };
    Ok((e, Guard::SignedIn))
}

/// The server's retention state: the stop switches of its running runs,
/// and the scheduler's bell.
#[derive(Default)]
pub struct Retention {
    stops: Mutex<HashMap<u64, Arc<AtomicBool>>>,
    wake: Arc<tokio::sync::Notify>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs an endpoint for the signed-in caller.
pub async fn handle(
    app: &Arc<App>,
    endpoint: Endpoint<'_>,
    caller: &Principal,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    use Endpoint as E;
    match endpoint {
        E::Metadata => ok_json(&metadata()),
        E::Create => {
            let req: RetentionPolicyReq = read_json(body).await?;
            let (project_id, project) = scope_project(app, &req)?;
            let missing = || not_found(format!("project {project_id} not found"));
            auth::check_admin_of_visible(app, parts, caller, &project, missing)?;
            let (rules, cron) = policy_of(req)?;
            let now = now_ms();
            let rec = RetentionPolicyRecord {
                project,
                rules,
                cron,
                created_ms: now,
                updated_ms: now,
            };
            let id = blocking(app, move |e| e.create_retention_policy(rec)).await??;
            app.retention.wake.notify_one();
            Ok(created(format!("/api/v2.0/retentions/{id}")))
        }
        E::Get(id) => {
            let (id, p) = policy_for(app, caller, parts, id)?;
            ok_json(&policy_json(app, id, &p)?)
        }
        E::Update(id) => {
            let (id, p) = policy_for(app, caller, parts, id)?;
            let req: RetentionPolicyReq = read_json(body).await?;
            if let Some((_, other)) = scope_project(app, &req)
                .ok()
                .filter(|(_, o)| *o != p.project)
            {
                return Err(bad(format!(
                    "a policy stays with its project {} (scope names {other})",
                    p.project
                )));
            }
            let (rules, cron) = policy_of(req)?;
            blocking(app, move |e| e.update_retention_policy(id, rules, cron)).await??;
            app.retention.wake.notify_one();
            Ok(empty(StatusCode::OK))
        }
        E::Delete(id) => {
            let (id, _) = policy_for(app, caller, parts, id)?;
            blocking(app, move |e| e.delete_retention_policy(id)).await??;
            app.retention.wake.notify_one();
            Ok(empty(StatusCode::OK))
        }
        E::Run(id) => {
            let (id, p) = policy_for(app, caller, parts, id)?;
            let req: RetentionRunReq = read_json(body).await?;
            let run = start(app, (id, p.project), "MANUAL", req.dry_run, caller.name()).await?;
            Ok(created(format!(
                "/api/v2.0/retentions/{id}/executions/{run}"
            )))
        }
        E::Runs(id) => {
            let (id, _) = policy_for(app, caller, parts, id)?;
            let runs = blocking(app, move |e| e.retention_runs(id)).await??;
            let query = Query(parts.uri.query().unwrap_or(""));
            let path = format!("/api/v2.0/retentions/{id}/executions");
            paged_with(query, &path, &runs, |(rid, r)| Ok(run_json(*rid, r)))
        }
        E::Stop(id, eid) => {
            let (_, run_id, run) = run_for(app, caller, parts, id, eid)?;
            let req: RetentionStopReq = read_json(body).await?;
            if req.action != "stop" {
                return Err(bad(format!("action {:?} is not stop", req.action)));
            }
            if run.end_ms.is_some() {
                return Err(ApiError::new(
                    Code::PreconditionFailed,
                    format!("execution {run_id} has ended ({})", run.status),
                ));
            }
            match lock(&app.retention.stops).get(&run_id) {
                Some(stop) => stop.store(true, Ordering::Relaxed),
                None => {
                    return Err(ApiError::new(
                        Code::Conflict,
                        format!("execution {run_id} runs on another node: stop it there"),
                    ))
                }
            }
            Ok(empty(StatusCode::OK))
        }
        E::Tasks(id, eid) => {
            let (policy, run_id, run) = run_for(app, caller, parts, id, eid)?;
            let query = Query(parts.uri.query().unwrap_or(""));
            let path = format!("/api/v2.0/retentions/{policy}/executions/{run_id}/tasks");
            let tasks: Vec<(usize, &RetentionTaskRecord)> = run.tasks.iter().enumerate().collect();
            paged_with(query, &path, &tasks, |(i, t)| {
                Ok(task_json(*i as u64 + 1, run_id, &run, t))
            })
        }
        E::TaskLog(id, eid, tid) => {
            let (_, run_id, run) = run_for(app, caller, parts, id, eid)?;
            let n = parse_id(tid, "task")?;
            let task = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| run.tasks.get(i))
                .ok_or_else(|| not_found(format!("task {n} of execution {run_id} not found")))?;
            Ok(crate::http::json(
                task_log(&run, task).into_bytes(),
                "text/plain; charset=utf-8",
            ))
        }
    }
}

/// Policy `id` if the caller administers its project (see the module
/// docs for `404` and `403`).
fn policy_for(
    app: &App,
    caller: &Principal,
    parts: &Parts,
    id: &str,
) -> Result<(u64, RetentionPolicyRecord), ApiError> {
    let n = parse_id(id, "retention policy")?;
    let missing = || not_found(format!("retention policy {id} not found"));
    let Some(p) = app.engine.retention_policy(n)? else {
        return Err(missing());
    };
    auth::check_admin_of_visible(app, parts, caller, &p.project, missing)?;
    Ok((n, p))
}

/// Run `eid` of policy `id`, for an administrator of its project.
fn run_for(
    app: &App,
    caller: &Principal,
    parts: &Parts,
    id: &str,
    eid: &str,
) -> Result<(u64, u64, RetentionRunRecord), ApiError> {
    let (policy, _) = policy_for(app, caller, parts, id)?;
    let run_id = parse_id(eid, "execution")?;
    match app.engine.retention_run(run_id)? {
        Some(run) if run.policy_id == policy => Ok((policy, run_id, run)),
        _ => Err(not_found(format!(
            "execution {eid} of retention policy {policy} not found"
        ))),
    }
}

/// The project a policy's `scope` names (`{"level":"project","ref":<id>}`):
/// its id and name.
fn scope_project(app: &App, req: &RetentionPolicyReq) -> Result<(u64, String), ApiError> {
    let Some(scope) = &req.scope else {
        return Err(bad(
            "give scope {\"level\":\"project\",\"ref\":<project id>}".into(),
        ));
    };
    if scope.level.as_deref().is_some_and(|l| l != "project") {
        return Err(bad("scope level must be project".into()));
    }
    let id = match &scope.reference {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| bad("scope ref must be a project id".into()))?;
    app.engine
        .projects()?
        .into_iter()
        .find(|(_, p)| p.id == id)
        .map(|(name, _)| (id, name))
        .ok_or_else(|| not_found(format!("project {id} not found")))
}

/// The rules and cron of a policy as given.
fn policy_of(req: RetentionPolicyReq) -> Result<(Vec<RetentionRuleRecord>, String), ApiError> {
    if req.algorithm.as_deref().is_some_and(|a| a != "or") {
        return Err(bad("algorithm must be or".into()));
    }
    let rules = req
        .rules
        .into_iter()
        .map(|r| {
            if r.action.as_deref().is_some_and(|a| a != "retain") {
                return Err(bad("rule action must be retain".into()));
            }
            let takes = TEMPLATES
                .iter()
                .find(|(t, _)| *t == r.template)
                .is_some_and(|(_, takes)| *takes);
            let n = if takes {
                match r.params.get(&r.template) {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.parse().ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    bad(format!(
                        "rule {} needs params {{\"{}\": <number>}}",
                        r.template, r.template
                    ))
                })?
            } else {
                0
            };
            let repos = r
                .scope_selectors
                .get("repository")
                .map(Vec::as_slice)
                .unwrap_or_default();
            Ok(RetentionRuleRecord {
                disabled: r.disabled,
                n,
                untagged: untagged(&r.tag_selectors)?,
                tags: selector("tag", &r.tag_selectors, ("matches", "excludes"))?,
                repos: selector("repository", repos, ("repoMatches", "repoExcludes"))?,
                template: r.template,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let cron = match req.trigger {
        None => String::new(),
        Some(t) => {
            if t.kind.as_deref().is_some_and(|k| k != "Schedule") {
                return Err(bad("trigger kind must be Schedule".into()));
            }
            let cron = t.settings.and_then(|s| s.cron).unwrap_or_default();
            let cron = cron.trim().to_owned();
            if !cron.is_empty() {
                cron::Schedule::from_str(&cron).map_err(|e| bad(format!("cron {cron:?}: {e}")))?;
            }
            cron
        }
    };
    Ok((rules, cron))
}

/// Whether the tag selector's `extras` (`{"untagged":true}`) includes
/// untagged artifacts.
fn untagged(list: &[SelectorReq]) -> Result<bool, ApiError> {
    let Some(extras) = list.first().and_then(|s| s.extras.as_deref()) else {
        return Ok(false);
    };
    if extras.trim().is_empty() {
        return Ok(false);
    }
    let v: Value = serde_json::from_str(extras)
        .map_err(|e| bad(format!("tag selector extras {extras:?}: {e}")))?;
    match v.get("untagged") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(
            "tag selector extras untagged must be true or false".into()
        )),
    }
}

/// Harbor's `RetentionMetadata`: what rules may say.
fn metadata() -> Value {
    let text = |t: &str| match t {
        "latestPushedK" => "retain the most recently pushed # artifacts",
        "latestPulledN" => "retain the most recently pulled # artifacts",
        "nDaysSinceLastPush" => "retain the artifacts pushed within the last # days",
        "nDaysSinceLastPull" => "retain the artifacts pulled within the last # days",
        _ => "retain always",
    };
    let templates: Vec<Value> = TEMPLATES
        .iter()
        .map(|(t, takes)| {
            let params = if *takes {
                let unit = if t.starts_with("nDays") {
                    "days"
                } else {
                    "count"
                };
                json!([{"type": "int", "unit": unit, "required": true}])
            } else {
                json!([])
            };
            json!({"rule_template": t, "display_text": text(t), "action": "retain",
                   "params": params})
        })
        .collect();
    json!({
        "templates": templates,
        "scope_selectors": [{"display_text": "Repositories", "kind": "doublestar",
                             "decorations": ["repoMatches", "repoExcludes"]}],
        "tag_selectors": [{"display_text": "Tags", "kind": "doublestar",
                           "decorations": ["matches", "excludes"]}],
    })
}

/// A policy in Harbor's `RetentionPolicy` shape.
fn policy_json(app: &App, id: u64, p: &RetentionPolicyRecord) -> Result<Value, ApiError> {
    let project_id = app.engine.project(&p.project)?.map_or(0, |r| r.id);
    let sel = |pattern: &str, excludes: bool, (m, x): (&str, &str)| {
        json!({"kind": "doublestar", "decoration": if excludes { x } else { m },
               "pattern": pattern})
    };
    let rules: Vec<Value> = p
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut tag = sel(&r.tags.pattern, r.tags.excludes, ("matches", "excludes"));
            tag["extras"] = json!(json!({"untagged": r.untagged}).to_string());
            let params = if r.template == "always" {
                json!({})
            } else {
                json!({ r.template.as_str(): r.n })
            };
            json!({
                "id": i + 1,
                "priority": 0,
                "disabled": r.disabled,
                "action": "retain",
                "template": r.template,
                "params": params,
                "tag_selectors": [tag],
                "scope_selectors": {"repository": [sel(&r.repos.pattern, r.repos.excludes,
                                                       ("repoMatches", "repoExcludes"))]},
            })
        })
        .collect();
    Ok(json!({
        "id": id,
        "algorithm": "or",
        "rules": rules,
        "trigger": {"kind": "Schedule", "settings": {"cron": p.cron}, "references": {}},
        "scope": {"level": "project", "ref": project_id},
    }))
}

/// A run in Harbor's `RetentionExecution` shape.
fn run_json(id: u64, r: &RetentionRunRecord) -> Value {
    json!({
        "id": id,
        "policy_id": r.policy_id,
        "start_time": time(r.start_ms),
        "end_time": r.end_ms.map(time),
        "status": r.status,
        "trigger": r.trigger,
        "dry_run": r.dry_run,
    })
}

/// A task in Harbor's `RetentionExecutionTask` shape.
fn task_json(id: u64, run_id: u64, run: &RetentionRunRecord, t: &RetentionTaskRecord) -> Value {
    json!({
        "id": id,
        "execution_id": run_id,
        "repository": t.repository,
        "job_id": format!("{run_id}-{id}"),
        "status": t.status,
        "status_code": if t.status == "Succeed" { 3 } else { 4 },
        "status_revision": 0,
        "start_time": time(run.start_ms),
        "end_time": run.end_ms.map(time),
        "total": t.total,
        "retained": t.retained,
    })
}

/// A task's log: one line per artifact, as Harbor's table has it.
fn task_log(run: &RetentionRunRecord, t: &RetentionTaskRecord) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let dry = if run.dry_run { " (dry run)" } else { "" };
    let _ = writeln!(
        out,
        "{}{dry}: {} artifacts, {} retained",
        t.repository, t.total, t.retained
    );
    let _ = writeln!(
        out,
        "{:<72}  {:<30}  {:<6}  {:<20}  {:<20}  Detail",
        "Digest", "Tags", "Action", "PushedTime", "PulledTime"
    );
    for i in &t.items {
        let tags = if i.tags.is_empty() {
            "<none>".to_owned()
        } else {
            i.tags.join(",")
        };
        let pulled = if i.pull_ms == 0 {
            "-".to_owned()
        } else {
            time(i.pull_ms)
        };
        let _ = writeln!(
            out,
            "{:<72}  {:<30}  {:<6}  {:<20}  {:<20}  {}",
            i.digest,
            tags,
            i.action,
            time(i.push_ms),
            pulled,
            i.detail
        );
    }
    out
}

/// Starts a run of policy `policy_id` in a task of its own; its id.
/// `409` while the policy runs (here or on another node).
pub async fn start(
    app: &Arc<App>,
    (policy_id, project): (u64, String),
    trigger: &'static str,
    dry_run: bool,
    who: &str,
) -> Result<u64, ApiError> {
    if app.read_only {
        return Err(ApiError::new(
            Code::Unsupported,
            "the registry is in read-only mode",
        ));
    }
    if !app.delete_enabled && !dry_run {
        return Err(ApiError::new(
            Code::Unsupported,
            "deletes are disabled on this registry: only a dry run can run",
        ));
    }
    let run = blocking(app, move |e| {
        e.begin_retention_run(policy_id, trigger, dry_run)
    })
    .await??;
    let stop = Arc::new(AtomicBool::new(false));
    lock(&app.retention.stops).insert(run, stop.clone());
    let (app2, who) = (app.clone(), who.to_owned());
    tokio::spawn(async move {
        let app = app2;
        let outcome = execute(&app, policy_id, run, dry_run, stop).await;
        let (status, detail, tasks) = match outcome {
            Ok((tasks, false)) => {
                let failed = tasks.iter().any(|t| t.status != "Succeed");
                (
                    if failed { "Failed" } else { "Succeed" },
                    String::new(),
                    tasks,
                )
            }
            Ok((tasks, true)) => ("Stopped", "stopped on request".to_owned(), tasks),
            Err(e) => ("Failed", e, Vec::new()),
        };
        let (mut total, mut retained, mut deleted) = (0, 0, Vec::new());
        for t in &tasks {
            total += t.total;
            retained += t.retained;
            for i in t
                .items
                .iter()
                .filter(|i| !dry_run && i.action == retention::DELETE)
            {
                let resource = format!("{}@{}", t.repository, i.digest);
                app.audit
                    .record(&who, "artifact", resource.clone(), "delete");
                deleted.push(match i.tags.is_empty() {
                    true => resource,
                    false => format!("{}:{}", t.repository, i.tags.join(",")),
                });
            }
        }
        let ended = blocking(&app, move |e| {
            e.end_retention_run(run, status, detail, tasks)
        });
        let failure = match ended.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = failure {
            tracing::warn!(target: "berth::retention", run, error, "run end not recorded");
        }
        lock(&app.retention.stops).remove(&run);
        if !dry_run {
            let result = if status == "Succeed" {
                "SUCCESS"
            } else {
                "FAILURE"
            };
            let counts = (total, retained);
            crate::webhooks::retention_finished(
                &app, &project, policy_id, counts, result, &deleted,
            )
            .await;
        }
        tracing::info!(target: "berth::retention", run, policy = policy_id, status, "run ended");
    });
    Ok(run)
}

/// Plans run `run` of policy `policy_id` and, unless a dry run, carries
/// it out, renewing the run's lease as it goes. The tasks, and whether it
/// was stopped.
async fn execute(
    app: &Arc<App>,
    policy_id: u64,
    run: u64,
    dry_run: bool,
    stop: Arc<AtomicBool>,
) -> Result<(Vec<RetentionTaskRecord>, bool), String> {
    blocking(app, move |e| {
        let policy = e
            .retention_policy(policy_id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("retention policy {policy_id} was deleted"))?;
        let plan = e
            .plan_retention(&policy.project, &policy.rules, now_ms())
            .map_err(|e| e.to_string())?;
        if dry_run {
            return Ok((plan.tasks, false));
        }
        let last_beat = std::cell::Cell::new(now_ms());
        let (done, stopped) = e
            .apply_retention(plan, || {
                if stop.load(Ordering::Relaxed) {
                    return true;
                }
                if now_ms().saturating_sub(last_beat.get()) >= LEASE_MS / 4 {
                    last_beat.set(now_ms());
                    // Another node took the run for abandoned: stop.
                    return !e.beat_retention_run(run).unwrap_or(false);
                }
                false
            })
            .map_err(|e| e.to_string())?;
        Ok((done.tasks, stopped))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Marks the runs a crash interrupted (single node; see
/// `Engine::abandon_retention_runs`), then fires each policy with a cron
/// at its times (UTC), re-reading the policies every minute or when they
/// change. It holds the server only while it works.
pub async fn schedule(server: Weak<App>) {
    const RESCAN: Duration = Duration::from_secs(60);
    if let Some(app) = server.upgrade() {
        if !app.engine.is_cluster() {
            match blocking(&app, |e| e.abandon_retention_runs()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::warn!(target: "berth::retention", runs = n,
                    "runs interrupted by the last stop marked Failed"),
                Ok(Err(e)) => tracing::warn!(target: "berth::retention", error = %e,
                    "interrupted runs not marked"),
                Err(e) => tracing::warn!(target: "berth::retention", error = %e,
                    "interrupted runs not marked"),
            }
        }
    }
    let mut clock = crate::cron_clock::CronClock::default();
    loop {
        let Some(app) = server.upgrade() else { return };
        let policies = match blocking(&app, |e| e.retention_policies()).await {
            Ok(Ok(p)) => p,
            _ => Vec::new(),
        };
        let scheduled = policies
            .iter()
            .filter(|(_, p)| !p.cron.is_empty())
            .map(|(id, p)| (*id, p.cron.as_str()));
        let (due, wait) = clock.due(Utc::now(), scheduled);
        for (id, p) in policies.iter().filter(|(id, _)| due.contains(id)) {
            let policy = (*id, p.project.clone());
            if let Err(e) = start(&app, policy, "SCHEDULE", false, "retention-schedule").await {
                tracing::warn!(target: "berth::retention", policy = id, error = %e,
                    "scheduled run not started");
            }
        }
        let wait = wait.unwrap_or(RESCAN).min(RESCAN);
        let wake = app.retention.wake.clone();
        drop(app);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = resolve(&Method::GET, &["retentions", "metadatas"]);
        assert!(
            matches!(r, Ok((Endpoint::Metadata, _))),
            "{:?}",
            r.err().map(|e| e.detail)
        );
        let r = crate::admin::resolve(
            crate::router::TableConfig {
                auth: true,
                self_registration: false,
            },
            &Method::GET,
            "retentions/metadatas",
        );
        assert!(r.is_ok(), "{:?}", r.err().map(|e| e.detail));
    }
}
