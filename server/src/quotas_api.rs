//! Harbor's project quotas (storage only, the resource Harbor counts):
//!
//! ```text
//! GET /api/v2.0/quotas                  paged; ?reference=project&reference_id=<id>,
//!                                       ?sort=[-]hard.storage|[-]used.storage   (admin)
//! GET /api/v2.0/quotas/{id}             one project's quota (id: the project's)  (admin)
//! PUT /api/v2.0/quotas/{id}             {"hard":{"storage":N}}, -1 unlimited      (admin)
//! GET /api/v2.0/projects/{p}/summary    repo_count, chart_count, quota {hard, used}
//!                                       (whoever may pull from the project)
//! ```
//!
//! A project's limit is also set at creation (`storage_limit`, system
//! administrators only) and by `PUT /projects/{p}` (likewise). Usage counts
//! each blob its repositories link once (`engine/src/quotas.rs`); a push
//! that would pass the limit is refused with `403 DENIED` and Harbor's
//! quota message before its bytes are stored.

use berth_engine::quotas::Quota;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::{not_found, ok_json, read_json, time};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, empty, App, Body};
use crate::limits::RequestBody;
use crate::registries_api::paged_with;
use crate::router::Query;

/// A quota endpoint; ids are project ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    List,
    Get(&'a str),
    Update(&'a str),
    Summary(&'a str),
}

/// `PUT /quotas/{id}` (Harbor's `QuotaUpdateReq`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaUpdateReq {
    hard: std::collections::BTreeMap<String, i64>,
}

/// Runs an endpoint for the caller its guard admitted.
pub async fn handle(
    app: &App,
    endpoint: Endpoint<'_>,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let query = Query(parts.uri.query().unwrap_or(""));
    match endpoint {
        Endpoint::List => {
            let mut all = blocking(app, |e| e.quotas()).await??;
            if let Some(r) = query.get("reference") {
                if r != "project" {
                    all.clear(); // berth has project quotas only
                }
            }
            if let Some(id) = query.get("reference_id") {
                all.retain(|q| q.id.to_string() == id);
            }
            if let Some(sort) = query.get("sort") {
                sort_quotas(&mut all, &sort)?;
            }
            paged_with(query, "/api/v2.0/quotas", &all, |q| Ok(quota_json(q)))
        }
        Endpoint::Get(id) => ok_json(&quota_json(&by_id(app, id).await?)),
        Endpoint::Update(id) => {
            let q = by_id(app, id).await?;
            let req: QuotaUpdateReq = read_json(body).await?;
            let mut limit = None;
            for (resource, value) in &req.hard {
                if resource != "storage" {
                    return Err(ApiError::new(
                        Code::BadRequest,
                        format!("resource {resource:?} has no quota here (only \"storage\")"),
                    ));
                }
                limit = Some(storage_limit(*value)?);
            }
            let Some(limit) = limit else {
                return Err(ApiError::new(Code::BadRequest, "hard.storage is required"));
            };
            let project = q.project.clone();
            blocking(app, move |e| e.set_storage_limit(&project, limit)).await??;
            tracing::info!(target: "berth::auth", project = %q.project, ?limit, "quota set");
            Ok(empty(StatusCode::OK))
        }
        Endpoint::Summary(p) => {
            let project = p.to_owned();
            let (q, repos, charts) =
                blocking(app, move |e| -> Result<_, berth_engine::StorageError> {
                    // Harbor counts charts, not versions; versions come by name.
                    let charts = match berth_engine::RepoName::parse(&project) {
                        Ok(r) => {
                            let mut names: Vec<String> = e
                                .list_charts(&r, None)?
                                .into_iter()
                                .map(|v| v.name)
                                .collect();
                            names.dedup();
                            names.len()
                        }
                        Err(_) => 0,
                    };
                    Ok((
                        e.quota(&project)?,
                        e.repository_names_of(&project)?.len(),
                        charts,
                    ))
                })
                .await??;
            let q = q.ok_or_else(|| not_found(format!("project {p} not found")))?;
            ok_json(&json!({
                "repo_count": repos,
                "chart_count": charts,
                "quota": {"hard": hard_json(&q), "used": {"storage": q.used.bytes}},
            }))
        }
    }
}

/// A storage limit as Harbor writes it: `-1` unlimited, else bytes.
pub(crate) fn storage_limit(value: i64) -> Result<Option<u64>, ApiError> {
    match value {
        -1 => Ok(None),
        n => u64::try_from(n).map(Some).map_err(|_| {
            ApiError::new(
                Code::BadRequest,
                format!("storage limit {n}: bytes, or -1 for unlimited"),
            )
        }),
    }
}

async fn by_id(app: &App, id: &str) -> Result<Quota, ApiError> {
    let n = crate::accounts_api::parse_id(id, "quota")?;
    let all = blocking(app, |e| e.quotas()).await??;
    all.into_iter()
        .find(|q| q.id == n)
        .ok_or_else(|| not_found(format!("quota {n} not found")))
}

fn sort_quotas(all: &mut [Quota], sort: &str) -> Result<(), ApiError> {
    let (desc, field) = match sort.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, sort),
    };
    let key = |q: &Quota| match field {
        // Unlimited sorts above every limit.
        "hard.storage" => q.limit.unwrap_or(u64::MAX),
        _ => q.used.bytes,
    };
    if field != "hard.storage" && field != "used.storage" {
        return Err(ApiError::new(
            Code::BadRequest,
            format!("cannot sort quotas by {field:?} (hard.storage, used.storage)"),
        ));
    }
    all.sort_by(|a, b| {
        let o = key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id));
        if desc {
            o.reverse()
        } else {
            o
        }
    });
    Ok(())
}

fn hard_json(q: &Quota) -> Value {
    json!({"storage": q.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))})
}

/// Harbor's `Quota`.
fn quota_json(q: &Quota) -> Value {
    json!({
        "id": q.id,
        "ref": {"id": q.id, "name": q.project, "owner_name": q.owner},
        "hard": hard_json(q),
        "used": {"storage": q.used.bytes},
        "creation_time": time(q.created_ms),
        "update_time": time(q.created_ms),
    })
}
