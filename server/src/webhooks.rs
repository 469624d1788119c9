//! Project webhooks, as Harbor has them:
//!
//! ```text
//! GET|POST   /api/v2.0/projects/{p}/webhook/policies        paged; WebhookPolicy   (project admin)
//! GET|PUT|DELETE /api/v2.0/projects/{p}/webhook/policies/{id}
//! GET        /api/v2.0/projects/{p}/webhook/jobs?policy_id=  delivery history, newest first
//! GET        /api/v2.0/projects/{p}/webhook/events           the event types berth sends
//! ```
//!
//! Events: `PUSH_ARTIFACT`, `PULL_ARTIFACT`, `DELETE_ARTIFACT`,
//! `UPLOAD_CHART`, `DELETE_CHART`, `QUOTA_EXCEED`, `TAG_RETENTION` (a
//! retention run ended: [`retention_finished`]), with Harbor's payload
//! (`{"type","occur_at","operator","event_data"}`) or, per target,
//! CloudEvents 1.0 in structured mode (`application/cloudevents+json`,
//! types `harbor.artifact.pushed`, …).
//!
//! Durability: the router hands every answered request here ([`after`],
//! [`refused`] for a push over quota); an event for a project with a
//! matching enabled policy is put into the index's delivery queue by a
//! synced batch *before the answer is sent* (`Engine::enqueue_webhooks`),
//! so a crash after the client heard "done" loses no event. The deliverer
//! ([`deliver_loop`]) sends due events oldest first, retries failures with
//! exponential backoff (2 s … 256 s, `MAX_ATTEMPTS` tries), and records
//! every attempt in the delivery history. Delivery is at least once.
//!
//! Signing: a target's `auth_header` is sent as `Authorization` (Harbor's
//! way), and is the key of an HMAC-SHA256 of the exact body, sent as
//! `X-Berth-Signature-256: sha256=<hex>`, so a receiver can check the body
//! came from berth unchanged.
//!
//! Targets: `http(s)://` only. A project administrator chooses where
//! berth connects, so loopback, private, link-local and other
//! non-global addresses are refused (at delivery, after resolving the
//! name, and the connection goes to the address checked) unless
//! `BERTH_WEBHOOK_ALLOW_PRIVATE=true`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{RwLock, Weak};
use std::time::{Duration, Instant};

use berth_engine::records::{now_ms, WebhookEventRecord, WebhookPolicyRecord, WebhookTarget};
use berth_engine::webhooks::Attempt;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts_api::parse_id;
use crate::admin::{created, not_found, ok_json, read_json, time};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, empty, App, Body, HDR_CONTENT_DIGEST};
use crate::limits::RequestBody;
use crate::registries_api::paged_with;
use crate::router::{Endpoint as Route, Entry, Query};

/// The event types berth sends.
pub const EVENT_TYPES: [&str; 7] = [
    "PUSH_ARTIFACT",
    "PULL_ARTIFACT",
    "DELETE_ARTIFACT",
    "UPLOAD_CHART",
    "DELETE_CHART",
    "QUOTA_EXCEED",
    "TAG_RETENTION",
];

/// How long a node trusts its copy of the policies (another node's change
/// is seen within this; this node's at once).
const POLICY_TTL: Duration = Duration::from_secs(5);

/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A project's policies, by id.
type Policies = Vec<(u64, WebhookPolicyRecord)>;

/// The policies by project, as last read.
#[derive(Default)]
pub struct Webhooks {
    cache: RwLock<Option<(Instant, HashMap<String, Policies>)>>,
    /// Wakes the deliverer when an event was queued.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// Loopback and private targets allowed (`BERTH_WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
}

impl Webhooks {
    pub fn new(allow_private: bool) -> Webhooks {
        Webhooks {
            allow_private,
            ..Webhooks::default()
        }
    }

    fn forget(&self) {
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The enabled policies of `project` that take `event`.
async fn policies_for(app: &App, project: &str, event: &str) -> Result<Policies, ApiError> {
    let fresh = {
        let g = app.webhooks.cache.read().unwrap_or_else(|p| p.into_inner());
        g.as_ref()
            .filter(|(at, _)| at.elapsed() < POLICY_TTL)
            .map(|(_, m)| m.get(project).cloned().unwrap_or_default())
    };
    let list = match fresh {
        Some(l) => l,
        None => {
            let all = blocking(app, |e| e.webhook_policies(None)).await??;
            let mut by_project: HashMap<String, Policies> = HashMap::new();
            for (id, p) in all {
                by_project
                    .entry(p.project.clone())
                    .or_default()
                    .push((id, p));
            }
            let l = by_project.get(project).cloned().unwrap_or_default();
            *app.webhooks
                .cache
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), by_project));
            l
        }
    };
    Ok(list
        .into_iter()
        .filter(|(_, p)| p.enabled && p.event_types.iter().any(|t| t == event))
        .collect())
}

/// What an event is about: its project, repository and resources.
struct About {
    project: String,
    repo_name: String,
    resources: Vec<Value>,
    details: Option<String>,
}

/// Queues the event a successful request caused, if any policy takes it,
/// before the answer goes out. `who` is the caller's name. A request to a
/// project without policies costs one map lookup.
pub async fn after(
    app: &App,
    entry: &Entry<'_>,
    parts: &Parts,
    who: &str,
    (status, headers): (StatusCode, &hyper::HeaderMap),
) {
    if !status.is_success() {
        return;
    }
    let (event, name) = match entry.endpoint {
        Route::PutManifest { name, .. } => ("PUSH_ARTIFACT", name),
        Route::GetManifest { name, .. } if parts.method == Method::GET => ("PULL_ARTIFACT", name),
        Route::DeleteManifest { name, .. } => ("DELETE_ARTIFACT", name),
        Route::Chart(crate::charts::Endpoint::Upload { project, .. }) => ("UPLOAD_CHART", project),
        Route::Chart(crate::charts::Endpoint::Delete { project, .. }) => ("DELETE_CHART", project),
        _ => return,
    };
    let project = name.split('/').next().unwrap_or(name);
    let policies = match policies_for(app, project, event).await {
        Ok(p) if p.is_empty() => return,
        Ok(p) => p,
        Err(e) => {
            tracing::error!(target: "berth::webhooks", event, project, error = ?e.detail, "reading webhook policies");
            return;
        }
    };
    let host = external_host(app, parts);
    let digest = headers
        .get(HDR_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let about = match entry.endpoint {
        Route::PutManifest { name, reference }
        | Route::GetManifest { name, reference }
        | Route::DeleteManifest { name, reference } => {
            let (tag, digest) = if reference.contains(':') {
                (None, Some(reference.to_owned()))
            } else {
                (Some(reference.to_owned()), digest)
            };
            let url = match &tag {
                Some(t) => format!("{host}/{name}:{t}"),
                None => format!("{host}/{name}@{reference}"),
            };
            About {
                project: project.to_owned(),
                repo_name: name.split_once('/').map_or("", |(_, r)| r).to_owned(),
                resources: vec![json!({"digest": digest, "tag": tag, "resource_url": url})],
                details: None,
            }
        }
        Route::Chart(crate::charts::Endpoint::Delete { name, version, .. }) => About {
            project: project.to_owned(),
            repo_name: name.to_owned(),
            resources: vec![json!({
                "tag": version,
                "resource_url": format!("{host}/chartrepo/{project}/charts/{name}-{}.tgz", version.unwrap_or("*")),
            })],
            details: None,
        },
        _ => About {
            project: project.to_owned(),
            repo_name: String::new(),
            resources: Vec::new(),
            details: None,
        },
    };
    fire(app, event, who, about, policies).await;
}

/// Queues `QUOTA_EXCEED` for a push to `entry` refused over quota.
pub async fn refused(app: &App, entry: &Entry<'_>, who: &str, err: &ApiError) {
    if err.code != Code::QuotaExceeded {
        return;
    }
    let name = match entry.endpoint {
        Route::StartUpload { name }
        | Route::CompleteUpload { name, .. }
        | Route::PutManifest { name, .. } => name,
        Route::Chart(crate::charts::Endpoint::Upload { project, .. }) => project,
        _ => return,
    };
    let (project, rest) = name.split_once('/').unwrap_or((name, ""));
    let policies = match policies_for(app, project, "QUOTA_EXCEED").await {
        Ok(p) if p.is_empty() => return,
        Ok(p) => p,
        Err(_) => return,
    };
    let about = About {
        project: project.to_owned(),
        repo_name: rest.to_owned(),
        resources: Vec::new(),
        details: err.detail.as_deref().map(str::to_owned),
    };
    fire(app, "QUOTA_EXCEED", who, about, policies).await;
}

/// Whether a request to `entry` can cause an event (so the router keeps
/// the caller's name for it).
pub fn may_fire(entry: &Entry<'_>) -> bool {
    matches!(
        entry.endpoint,
        Route::PutManifest { .. }
            | Route::GetManifest { .. }
            | Route::DeleteManifest { .. }
            | Route::StartUpload { .. }
            | Route::CompleteUpload { .. }
            | Route::Chart(crate::charts::Endpoint::Upload { .. })
            | Route::Chart(crate::charts::Endpoint::Delete { .. })
    )
}

/// Queues `event` for every target of `policies`, synced.
async fn fire(app: &App, event: &str, who: &str, about: About, policies: Policies) {
    let public = app
        .engine
        .project(&about.project)
        .ok()
        .flatten()
        .is_some_and(|p| p.public);
    let now = now_ms();
    let full = if about.repo_name.is_empty() {
        about.project.clone()
    } else {
        format!("{}/{}", about.project, about.repo_name)
    };
    let mut data = json!({
        "resources": about.resources,
        "repository": {
            "date_created": now / 1000,
            "name": about.repo_name,
            "namespace": about.project,
            "repo_full_name": full,
            "repo_type": if public { "public" } else { "private" },
        },
    });
    if let Some(d) = &about.details {
        data["custom_attributes"] = json!({"Details": d});
    }
    queue(app, event, who, &data, policies).await;
}

/// Queues `TAG_RETENTION` for a retention run of `project`'s policy
/// `policy_id` that ended with `result` (`SUCCESS`, `FAILURE`), having
/// deleted `deleted` (`repo:tags` or `repo@digest`).
pub async fn retention_finished(
    app: &App,
    project: &str,
    policy_id: u64,
    (total, retained): (u64, u64),
    result: &str,
    deleted: &[String],
) {
    let policies = match policies_for(app, project, "TAG_RETENTION").await {
        Ok(p) if p.is_empty() => return,
        Ok(p) => p,
        Err(_) => return,
    };
    let artifacts: Vec<Value> = deleted
        .iter()
        .map(|n| json!({"type": "image", "status": "SUCCESS", "name_tag": n}))
        .collect();
    let data = json!({"retention": {
        "total": total,
        "retained": retained,
        "project_name": project,
        "retention_policy_id": policy_id,
        "result": result,
        "deleted_artifact": artifacts,
    }});
    queue(app, "TAG_RETENTION", "retention", &data, policies).await;
}

/// Queues `event` with `data` for every target of `policies`, synced.
async fn queue(app: &App, event: &str, who: &str, data: &Value, policies: Policies) {
    let now = now_ms();
    let operator = if who.is_empty() { "anonymous" } else { who };
    let mut events = Vec::new();
    for (id, policy) in &policies {
        for target in &policy.targets {
            let (payload, content_type) = payload(target, event, operator, *id, now, data);
            events.push(WebhookEventRecord {
                policy_id: *id,
                target: target.clone(),
                event_type: event.to_owned(),
                payload,
                content_type: content_type.to_owned(),
                attempts: 0,
                next_ms: now,
                created_ms: now,
            });
        }
    }
    // IMPORTANT: synced before the answer goes out.
    match blocking(app, move |e| e.enqueue_webhooks(events)).await {
        Ok(Ok(())) => app.webhooks.wake.notify_one(),
        Ok(Err(e)) => {
            tracing::error!(target: "berth::webhooks", event, error = %e, "webhook event not queued")
        }
        Err(e) => {
            tracing::error!(target: "berth::webhooks", event, error = ?e.detail, "webhook event not queued")
        }
    }
}

/// The body and content type of `event` for `target`.
fn payload(
    target: &WebhookTarget,
    event: &str,
    operator: &str,
    policy_id: u64,
    now: u64,
    data: &Value,
) -> (String, &'static str) {
    if target.payload_format == "CloudEvents" {
        let kind = match event {
            "PUSH_ARTIFACT" => "harbor.artifact.pushed",
            "PULL_ARTIFACT" => "harbor.artifact.pulled",
            "DELETE_ARTIFACT" => "harbor.artifact.deleted",
            "UPLOAD_CHART" => "harbor.chart.uploaded",
            "DELETE_CHART" => "harbor.chart.deleted",
            "TAG_RETENTION" => "harbor.tag_retention.finished",
            _ => "harbor.quota.exceed",
        };
        let mut id = [0u8; 16];
        let _ = getrandom::fill(&mut id);
        let body = json!({
            "specversion": "1.0",
            "id": hex::encode(id),
            "source": format!("/projects/webhook/policies/{policy_id}"),
            "type": kind,
            "datacontenttype": "application/json",
            "time": crate::time::rfc3339_ms(now),
            "operator": operator,
            "data": data,
        });
        (body.to_string(), "application/cloudevents+json")
    } else {
        let body = json!({
            "type": event,
            "occur_at": now / 1000,
            "operator": operator,
            "event_data": data,
        });
        (body.to_string(), "application/json")
    }
}

fn external_host(app: &App, parts: &Parts) -> String {
    let base = crate::auth::external_base(app, parts);
    base.split_once("://")
        .map_or(base.clone(), |(_, h)| h.to_owned())
}

// ---- delivery ---------------------------------------------------------------

/// Delivers due events while the server lives: woken when one is queued,
/// else every second (for retries).
pub async fn deliver_loop(server: Weak<App>) {
    loop {
        {
            let Some(app) = server.upgrade() else { return };
            let bell = app.webhooks.wake.clone();
            let wake = bell.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            deliver_due(&app).await;
            drop(app);
            let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
        }
    }
}

async fn deliver_due(app: &App) {
    let due = match blocking(app, |e| e.due_webhooks(now_ms(), 32)).await {
        Ok(Ok(d)) => d,
        _ => return,
    };
    for (id, event) in due {
        let outcome = match send(app, &event).await {
            Ok(status) => Attempt::Delivered(format!("HTTP {status}")),
            Err(why) => Attempt::Failed(why),
        };
        let failed = matches!(outcome, Attempt::Failed(_));
        match blocking(app, move |e| e.webhook_attempted(id, &event, outcome)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(target: "berth::webhooks", error = %e, "webhook attempt not recorded")
            }
            Err(e) => {
                tracing::warn!(target: "berth::webhooks", error = ?e.detail, "webhook attempt not recorded")
            }
        }
        if failed {
            tracing::info!(target: "berth::webhooks", event = id, "webhook delivery failed; retried later");
        }
    }
}

/// Sends one event; the status of a 2xx answer, else why not.
async fn send(app: &App, event: &WebhookEventRecord) -> Result<u16, String> {
    let url = reqwest::Url::parse(&event.target.address).map_err(|e| format!("address: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("address: http(s) only".into());
    }
    let host = url.host_str().ok_or("address: no host")?.to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    // Resolved here, checked, and the connection pinned to what was checked.
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .collect();
    let addr = addrs
        .iter()
        .copied()
        .find(|a| app.webhooks.allow_private || is_global(a.ip()))
        .ok_or_else(|| {
            format!(
                "{host} resolves to no public address (BERTH_WEBHOOK_ALLOW_PRIVATE allows others)"
            )
        })?;
    let client = reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(event.target.skip_cert_verify)
        .resolve(host.trim_matches(['[', ']']), addr)
        .build()
        .map_err(|e| format!("client: {e}"))?;
    let mut req = client
        .post(url)
        .header("content-type", &event.content_type)
        .body(event.payload.clone());
    if !event.target.auth_header.is_empty() {
        let key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, event.target.auth_header.as_bytes());
        let sig = ring::hmac::sign(&key, event.payload.as_bytes());
        req = req
            .header("authorization", &event.target.auth_header)
            .header(
                "x-berth-signature-256",
                format!("sha256={}", hex::encode(sig.as_ref())),
            );
    }
    let res = req.send().await.map_err(|e| format!("sending: {e}"))?;
    let status = res.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// Whether `ip` is a global unicast address (not loopback, private,
/// link-local, shared, documentation, unspecified or multicast).
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

// ---- the API ---------------------------------------------------------------

/// A webhook endpoint of project `.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    List(&'a str),
    Create(&'a str),
    Get(&'a str, &'a str),
    Update(&'a str, &'a str),
    Delete(&'a str, &'a str),
    Jobs(&'a str),
    Events(&'a str),
}

/// Harbor's `WebhookPolicy` as sent.
#[derive(Debug, Deserialize)]
struct PolicyReq {
    name: String,
    #[serde(default)]
    description: String,
    targets: Vec<TargetReq>,
    event_types: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct TargetReq {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    address: String,
    #[serde(default)]
    auth_header: Option<String>,
    #[serde(default)]
    skip_cert_verify: bool,
    #[serde(default)]
    payload_format: Option<String>,
}

/// Runs an endpoint for the project administrator its guard admitted.
pub async fn handle(
    app: &App,
    endpoint: Endpoint<'_>,
    caller: &str,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let query = Query(parts.uri.query().unwrap_or(""));
    match endpoint {
        Endpoint::List(p) => {
            let project = p.to_owned();
            let list = blocking(app, move |e| e.webhook_policies(Some(&project))).await??;
            let pid = project_id(app, p)?;
            let path = format!("/api/v2.0/projects/{p}/webhook/policies");
            paged_with(query, &path, &list, |(id, r)| Ok(policy_json(*id, pid, r)))
        }
        Endpoint::Create(p) => {
            project_id(app, p)?;
            let rec = policy_of(p, caller, read_json(body).await?)?;
            let id = blocking(app, move |e| e.create_webhook_policy(rec)).await??;
            app.webhooks.forget();
            Ok(created(format!(
                "/api/v2.0/projects/{p}/webhook/policies/{id}"
            )))
        }
        Endpoint::Get(p, id) => {
            let id = parse_id(id, "webhook policy")?;
            let pid = project_id(app, p)?;
            let rec = one(app, p, id).await?;
            ok_json(&policy_json(id, pid, &rec))
        }
        Endpoint::Update(p, id) => {
            let id = parse_id(id, "webhook policy")?;
            let rec = policy_of(p, caller, read_json(body).await?)?;
            let project = p.to_owned();
            if !blocking(app, move |e| e.update_webhook_policy(&project, id, rec)).await?? {
                return Err(not_found(format!("webhook policy {id} not found")));
            }
            app.webhooks.forget();
            Ok(empty(StatusCode::OK))
        }
        Endpoint::Delete(p, id) => {
            let id = parse_id(id, "webhook policy")?;
            let project = p.to_owned();
            if !blocking(app, move |e| e.delete_webhook_policy(&project, id)).await?? {
                return Err(not_found(format!("webhook policy {id} not found")));
            }
            app.webhooks.forget();
            Ok(empty(StatusCode::OK))
        }
        Endpoint::Jobs(p) => {
            let id = query
                .get("policy_id")
                .ok_or_else(|| ApiError::new(Code::BadRequest, "policy_id is required"))?;
            let id = parse_id(&id, "webhook policy")?;
            one(app, p, id).await?;
            let jobs = blocking(app, move |e| e.webhook_jobs(id)).await??;
            let path = format!("/api/v2.0/projects/{p}/webhook/jobs");
            paged_with(query, &path, &jobs, |(jid, j)| {
                Ok(json!({
                    "id": jid,
                    "policy_id": j.policy_id,
                    "event_type": j.event_type,
                    "notify_type": j.notify_type,
                    "status": j.status,
                    "job_detail": j.detail,
                    "creation_time": time(j.created_ms),
                    "update_time": time(j.created_ms),
                }))
            })
        }
        Endpoint::Events(p) => {
            project_id(app, p)?;
            ok_json(&json!({
                "event_type": EVENT_TYPES,
                "notify_type": ["http"],
                "payload_formats": [{"notify_type": "http", "formats": ["Default", "CloudEvents"]}],
            }))
        }
    }
}

fn project_id(app: &App, p: &str) -> Result<u64, ApiError> {
    app.engine
        .project(p)?
        .map(|r| r.id)
        .ok_or_else(|| not_found(format!("project {p} not found")))
}

async fn one(app: &App, p: &str, id: u64) -> Result<WebhookPolicyRecord, ApiError> {
    let project = p.to_owned();
    blocking(app, move |e| e.webhook_policies(Some(&project)))
        .await??
        .into_iter()
        .find(|(i, _)| *i == id)
        .map(|(_, r)| r)
        .ok_or_else(|| not_found(format!("webhook policy {id} not found")))
}

/// A policy from a request, checked.
fn policy_of(project: &str, caller: &str, req: PolicyReq) -> Result<WebhookPolicyRecord, ApiError> {
    let bad = |why: String| ApiError::new(Code::BadRequest, why);
    if req.name.trim().is_empty() || req.name.len() > 256 {
        return Err(bad("name: 1 to 256 characters".into()));
    }
    if req.targets.is_empty() || req.targets.len() > 10 {
        return Err(bad("targets: 1 to 10".into()));
    }
    if req.event_types.is_empty() {
        return Err(bad("event_types: at least one".into()));
    }
    for t in &req.event_types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(bad(format!(
                "event type {t:?} (one of {})",
                EVENT_TYPES.join(", ")
            )));
        }
    }
    let mut targets = Vec::new();
    for t in req.targets {
        let kind = t.kind.unwrap_or_else(|| "http".into());
        if kind != "http" {
            return Err(bad(format!("target type {kind:?}: http only")));
        }
        let url = reqwest::Url::parse(&t.address)
            .map_err(|e| bad(format!("address {:?}: {e}", t.address)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad(format!("address {:?}: http(s)://host…", t.address)));
        }
        let format = t.payload_format.unwrap_or_else(|| "Default".into());
        if format != "Default" && format != "CloudEvents" {
            return Err(bad(format!(
                "payload_format {format:?} (Default, CloudEvents)"
            )));
        }
        targets.push(WebhookTarget {
            kind,
            address: t.address,
            auth_header: t.auth_header.unwrap_or_default(),
            skip_cert_verify: t.skip_cert_verify,
            payload_format: format,
        });
    }
    let now = now_ms();
    Ok(WebhookPolicyRecord {
        project: project.to_owned(),
        name: req.name,
        description: req.description,
        targets,
        event_types: req.event_types,
        enabled: req.enabled,
        creator: caller.to_owned(),
        created_ms: now,
        updated_ms: now,
    })
}

/// Harbor's `WebhookPolicy`; the target's `auth_header` is never shown.
fn policy_json(id: u64, project_id: u64, p: &WebhookPolicyRecord) -> Value {
    let targets: Vec<Value> = p
        .targets
        .iter()
        .map(|t| {
            json!({
                "type": t.kind,
                "address": t.address,
                "auth_header": if t.auth_header.is_empty() { "" } else { "*****" },
                "skip_cert_verify": t.skip_cert_verify,
                "payload_format": t.payload_format,
            })
        })
        .collect();
    json!({
        "id": id,
        "name": p.name,
        "description": p.description,
        "project_id": project_id,
        "targets": targets,
        "event_types": p.event_types,
        "creator": p.creator,
        "creation_time": time(p.created_ms),
        "update_time": time(p.updated_ms),
        "enabled": p.enabled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_global_addresses_are_global() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_global(ip.parse().unwrap()), "{ip}");
        }
    }
}
