//! `/api/v2.0/registries`: the upstream registries proxy cache projects
//! pull through, in Harbor v2.0's shapes (`Registry`, `RegistryUpdate`,
//! `RegistryPing`; see `admin.rs` for the routes, all system
//! administrator only). A registry's secret is write-only: it is shown
//! as `*****`.

use berth_engine::records::{RegistryCredential, RegistryRecord};
use berth_engine::registries::RegistrySpec;
use berth_engine::AccountError;
use berth_wire::harbor::{RegistryReq, RegistryUpdateReq};
use hyper::header::{HeaderValue, LINK};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::admin::{created, not_found, ok_json, read_json, time};
use crate::auth::Principal;
use crate::errors::{ApiError, Code};
use crate::http::{blocking, empty, hv, App, Body};
use crate::limits::RequestBody;
use crate::router::Query;
use crate::upstream::Upstream;

/// How a secret is shown.
const HIDDEN: &str = "*****";

fn registry_json(id: u64, r: &RegistryRecord) -> Value {
    let mut v = json!({
        "id": id,
        "name": r.name,
        "type": r.kind,
        "url": r.url,
        "insecure": r.insecure,
        "description": r.description,
        // Harbor checks health in the background; berth only when asked
        // (POST /registries/ping).
        "status": "unknown",
        "creation_time": time(r.created_ms),
        "update_time": time(r.updated_ms),
    });
    if let Some(c) = &r.credential {
        v["credential"] =
            json!({"type": "basic", "access_key": c.access_key, "access_secret": HIDDEN});
    }
    if !r.ca_certificate.is_empty() {
        v["ca_certificate"] = json!(r.ca_certificate);
    }
    v
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            Code::BadRequest,
            format!("registry id {id:?} is not a number"),
        )
    })
}

/// A credential from its parts: `basic` (or unnamed) with a user name;
/// no user name, no credential.
fn credential(
    kind: Option<&str>,
    key: Option<String>,
    secret: Option<String>,
) -> Result<Option<RegistryCredential>, AccountError> {
    if let Some(k) = kind.filter(|k| !k.is_empty() && *k != "basic") {
        return Err(invalid(
            format!("credential type {k:?}"),
            "berth signs in with basic only",
        ));
    }
    Ok(key
        .filter(|k| !k.is_empty())
        .map(|access_key| RegistryCredential {
            access_key,
            access_secret: secret.unwrap_or_default(),
        }))
}

/// `GET /api/v2.0/registries?q=…&page=…&page_size=…`.
pub async fn list(app: &App, parts: &Parts) -> Result<Response<Body>, ApiError> {
    let query = Query(parts.uri.query().unwrap_or(""));
    let filters = Filters::parse(query)?;
    let all = blocking(app, |e| e.registries()).await??;
    let items: Vec<Value> = all
        .iter()
        .filter(|(_, r)| filters.matches(r))
        .map(|(id, r)| registry_json(*id, r))
        .collect();
    paged(query, "/api/v2.0/registries", items)
}

/// `POST /api/v2.0/registries`.
pub async fn create(
    app: &App,
    caller: &Principal,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let req: RegistryReq = read_json(body).await?;
    let c = req.credential.unwrap_or_default();
    let spec = RegistrySpec {
        credential: credential(c.kind.as_deref(), c.access_key, c.access_secret)?,
        name: req.name,
        kind: req.kind,
        url: req.url,
        insecure: req.insecure,
        ca_certificate: req.ca_certificate.unwrap_or_default(),
        description: req.description.unwrap_or_default(),
    };
    check_ca(&spec)?;
    let name = spec.name.clone();
    let id = blocking(app, move |e| e.create_registry(spec)).await??;
    tracing::info!(target: "berth::auth", registry = %name, id, by = caller.name(), "registry created");
    Ok(created(format!("/api/v2.0/registries/{id}")))
}

/// `GET /api/v2.0/registries/{id}`.
pub async fn get(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    match blocking(app, move |e| e.registry(id)).await?? {
        Some(r) => ok_json(&registry_json(id, &r)),
        None => Err(not_found(format!("registry {id} not found"))),
    }
}

fn invalid(what: String, reason: &str) -> AccountError {
    AccountError::Invalid {
        what,
        reason: reason.to_owned(),
    }
}

/// Applies a `RegistryUpdate` (or a ping's overrides) to `spec`.
fn apply_update(spec: &mut RegistrySpec, req: RegistryUpdateReq) -> Result<(), AccountError> {
    if let Some(n) = req.name {
        spec.name = n;
    }
    if let Some(k) = req.kind {
        spec.kind = k;
    }
    if let Some(d) = req.description {
        spec.description = d;
    }
    if let Some(u) = req.url {
        spec.url = u;
    }
    if let Some(i) = req.insecure {
        spec.insecure = i;
    }
    if let Some(ca) = req.ca_certificate {
        spec.ca_certificate = ca;
    }
    if req.credential_type.is_some() || req.access_key.is_some() || req.access_secret.is_some() {
        let old = spec.credential.take();
        // A secret left out (or sent back as shown) keeps the stored one.
        let secret = req
            .access_secret
            .filter(|s| s != HIDDEN)
            .or_else(|| old.as_ref().map(|c| c.access_secret.clone()));
        let key = req.access_key.or_else(|| old.map(|c| c.access_key));
        spec.credential = credential(req.credential_type.as_deref(), key, secret)?;
    }
    check_ca(spec)
}

/// A CA that does not parse is refused when given, not at the first pull.
fn check_ca(spec: &RegistrySpec) -> Result<(), AccountError> {
    if !spec.ca_certificate.is_empty()
        && reqwest::Certificate::from_pem_bundle(spec.ca_certificate.as_bytes())
            .map_or(true, |c| c.is_empty())
    {
        return Err(invalid("ca_certificate".into(), "not PEM certificates"));
    }
    Ok(())
}

/// `PUT /api/v2.0/registries/{id}`.
pub async fn update(
    app: &App,
    caller: &Principal,
    id: &str,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    let req: RegistryUpdateReq = read_json(body).await?;
    let rec = blocking(app, move |e| {
        e.update_registry(id, |spec| apply_update(spec, req))
    })
    .await??;
    tracing::info!(target: "berth::auth", registry = %rec.name, id, by = caller.name(), "registry updated");
    Ok(empty(StatusCode::OK))
}

/// `DELETE /api/v2.0/registries/{id}`.
pub async fn delete(app: &App, caller: &Principal, id: &str) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    blocking(app, move |e| e.delete_registry(id)).await??;
    tracing::info!(target: "berth::auth", id, by = caller.name(), "registry deleted");
    Ok(empty(StatusCode::OK))
}

/// `POST /api/v2.0/registries/ping`: a stored registry (`id`), with any
/// field given overriding it, or a new one described in full.
pub async fn ping(app: &App, body: RequestBody) -> Result<Response<Body>, ApiError> {
    let req: RegistryUpdateReq = read_json(body).await?;
    let mut spec = match req.id {
        Some(id) => match blocking(app, move |e| e.registry(id)).await?? {
            Some(r) => RegistrySpec::of(&r),
            None => return Err(not_found(format!("registry {id} not found"))),
        },
        None => RegistrySpec {
            name: "ping".into(),
            kind: String::new(),
            url: String::new(),
            credential: None,
            insecure: false,
            ca_certificate: String::new(),
            description: String::new(),
        },
    };
    apply_update(&mut spec, req)?;
    let rec = spec.validate()?.into_record(0, 0);
    let up = Upstream::new(&rec).map_err(|e| ApiError::new(Code::BadRequest, e))?;
    up.ping().await.map_err(|e| {
        ApiError::new(
            Code::BadRequest,
            format!("failed to ping the registry: {e}"),
        )
    })?;
    Ok(empty(StatusCode::OK))
}

/// Harbor's `q`: comma-separated `key=value` (exact) and `key=~value`
/// (contains), over `name`, `type` and `url`; the deprecated `name`
/// parameter is `name=~value`.
struct Filters(Vec<(String, String, bool)>);

impl Filters {
    fn parse(query: Query<'_>) -> Result<Filters, ApiError> {
        let mut out = Vec::new();
        if let Some(q) = query.get("q") {
            for part in q.split(',').filter(|p| !p.is_empty()) {
                let Some((key, value)) = part.split_once('=') else {
                    return Err(ApiError::new(
                        Code::BadRequest,
                        format!("q: {part:?} is not key=value"),
                    ));
                };
                if !matches!(key, "name" | "type" | "url") {
                    return Err(ApiError::new(
                        Code::BadRequest,
                        format!("q: registries are filtered by name, type or url, not {key:?}"),
                    ));
                }
                let (value, fuzzy) = match value.strip_prefix('~') {
                    Some(v) => (v, true),
                    None => (value, false),
                };
                out.push((key.to_owned(), value.to_owned(), fuzzy));
            }
        }
        if let Some(n) = query.get("name") {
            out.push(("name".into(), n.into_owned(), true));
        }
        Ok(Filters(out))
    }

    fn matches(&self, r: &RegistryRecord) -> bool {
        self.0.iter().all(|(key, value, fuzzy)| {
            let field = match key.as_str() {
                "name" => &r.name,
                "type" => &r.kind,
                _ => &r.url,
            };
            if *fuzzy {
                field.contains(value.as_str())
            } else {
                field == value
            }
        })
    }
}

/// Harbor's paging of a listing: `page` (from 1) and `page_size` (default
/// 10, at most 100), the total in `X-Total-Count`, the neighbours in
/// `Link` (`rel="prev"`, `rel="next"`).
pub fn paged(query: Query<'_>, path: &str, items: Vec<Value>) -> Result<Response<Body>, ApiError> {
    paged_with(query, path, &items, |v| Ok(v.clone()))
}

/// [`paged`] of `items`, only the page's own rendered by `render`.
pub fn paged_with<T>(
    query: Query<'_>,
    path: &str,
    items: &[T],
    mut render: impl FnMut(&T) -> Result<Value, ApiError>,
) -> Result<Response<Body>, ApiError> {
    let number = |key: &str, default: u64| -> Result<u64, ApiError> {
        match query.get(key) {
            None => Ok(default),
            Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::new(
                    Code::BadRequest,
                    format!("{key} must be a positive integer"),
                )
            }),
        }
    };
    let page = number("page", 1)?;
    let size = number("page_size", 10)?.min(100);
    let total = items.len() as u64;
    let start = (page - 1).saturating_mul(size).min(total) as usize;
    let end = (start as u64 + size).min(total) as usize;
    let page_items = items[start..end]
        .iter()
        .map(&mut render)
        .collect::<Result<Vec<Value>, ApiError>>()?;
    let mut res = ok_json(&Value::Array(page_items))?;
    let h = res.headers_mut();
    h.insert("x-total-count", HeaderValue::from(total));
    // As Harbor's: the request's other parameters (`q`, `sort`, …) kept,
    // so a client that follows the links stays in its filtered listing.
    let rest = query.others(&["page", "page_size"]);
    let mut links = Vec::new();
    if page > 1 && start > 0 {
        links.push(format!(
            "<{path}?{rest}page={}&page_size={size}>; rel=\"prev\"",
            page - 1
        ));
    }
    if (end as u64) < total {
        links.push(format!(
            "<{path}?{rest}page={}&page_size={size}>; rel=\"next\"",
            page + 1
        ));
    }
    if !links.is_empty() {
        h.insert(LINK, hv(&links.join(", ")));
    }
    Ok(res)
}
