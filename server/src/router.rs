//! The OCI path grammar, query strings, and dispatch to handlers.
//!
//! Repository names contain slashes, so a path is routed by its tail:
//!
//! ```text
//! /v2/                                   Base
//! /v2/_catalog                           Catalog
//! /v2/<name>/tags/list                   Tags
//! /v2/<name>/manifests/<reference>       Manifest
//! /v2/<name>/blobs/<digest>              Blob
//! /v2/<name>/blobs/uploads/[<id>]        Upload (no id: start one)
//! /v2/<name>/referrers/<digest>          Referrers
//! /metrics                               Prometheus metrics (metrics.rs)
//! /api/v2.0/system/gc…                   Harbor GC API (gc_api.rs)
//! ```
//!
//! The last path segment is the reference/digest/id; the segment(s) before
//! it say which resource; everything before that is `<name>`. So
//! `/v2/a/blobs/uploads/manifests/x` is manifest `x` of repository
//! `a/blobs/uploads`. The name is validated by the handler
//! ([`berth_engine::RepoName::parse`]), not here.
//!
//! Besides `/v2`, two families are dispatched before the OCI grammar:
//! `/service/token` (the Docker token service, `token_service.rs`) and
//! `/api/v2.0/…` (the Harbor-shaped admin API, `admin.rs`).
//!
//! Every OCI route is authorized before its handler runs
//! ([`authorize_route`]: route + method → resource + actions, then
//! [`crate::auth::authorize`]).

use std::sync::Arc;

use berth_engine::{Action, Actions, RepoName};
use hyper::http::request::Parts;

use crate::limits::RequestBody;
use hyper::{Method, Request, Response};

use crate::auth::{self, Principal, Resource};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, App, Body};

// The path grammar and query strings above live in `berth_wire::path`,
// beside their fuzz target.
pub use berth_wire::path::{percent_decode, route, Query, Route};

/// Parses the request line, checks the server's mode, and hands the request
/// to its endpoint.
pub async fn dispatch(
    app: &Arc<App>,
    req: Request<RequestBody>,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let path = percent_decode(parts.uri.path());
    if path == "/metrics" && matches!(parts.method, Method::GET | Method::HEAD) {
        return Ok(crate::metrics::get(app).await);
    }
    if crate::gc_api::owns(&path) {
        auth::require_admin(app, &parts).await?;
        return Ok(crate::gc_api::dispatch(app, &parts.method, &path, body).await);
    }
    let query = Query(parts.uri.query().unwrap_or(""));
    if path == auth::TOKEN_PATH {
        return crate::token_service::handle(app, &parts, query, body).await;
    }
    if let Some(rest) = path.strip_prefix(crate::admin::PREFIX) {
        return crate::admin::handle(app, &parts, rest, query, body).await;
    }
    let route = route(&path);
    let method = &parts.method;
    // The chart repository's paths (everything outside /v2/) have their own
    // router and error format.
    if let Some(chart_route) = crate::charts::route(&path) {
        let caller = auth::authenticate(app, &parts).await?;
        return Ok(crate::charts::dispatch(
            app,
            caller,
            chart_route,
            method,
            query,
            &parts.headers,
            body,
        )
        .await
        .unwrap_or_else(|e| e.into_response(request_id)));
    }
    let principal = authorize_route(app, &parts, route, method).await?;

    let writes = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if writes && route != Route::Unknown {
        if app.read_only {
            return Err(ApiError::new(
                Code::Unsupported,
                "the registry is in read-only mode",
            ));
        }
        let content_delete = matches!(route, Route::Blob { .. } | Route::Manifest { .. });
        if *method == Method::DELETE && content_delete && !app.delete_enabled {
            return Err(ApiError::new(
                Code::Unsupported,
                "deletes are disabled on this registry",
            ));
        }
    }

    use crate::{blobs, catalog, manifests, referrers, tags, uploads};
    match (route, method) {
        (Route::Base, &Method::GET | &Method::HEAD) => {
            Ok(crate::http::json(b"{}".to_vec(), "application/json"))
        }
        (Route::Catalog, &Method::GET) => {
            // Only repositories of projects the caller may pull from (with a
            // token: that its subject may pull from, the claim granting the
            // listing); an index scan bounded per request, on the blocking pool.
            let list = catalog::ListCatalog::parse(query, &app.cursors)?;
            let app = app.clone();
            tokio::task::spawn_blocking(move || {
                list.apply(&app.engine, &app.cursors, |project| {
                    auth::permits(
                        &app,
                        &principal,
                        Resource::Listed(project),
                        Actions::of(&[Action::Pull]),
                    )
                })
            })
            .await
            .map_err(ApiError::internal)?
        }
        (Route::Tags { name }, &Method::GET) => {
            let list = tags::ListTags::parse(name, query)?;
            blocking(app, move |e| list.apply(e)).await?
        }
        (Route::Referrers { name, digest }, &Method::GET) => {
            let list = referrers::ListReferrers::parse(name, digest, query)?;
            blocking(app, move |e| list.apply(e)).await?
        }
        (Route::Manifest { name, reference }, &Method::GET | &Method::HEAD) => {
            manifests::GetManifest::parse(name, reference, method)?.apply(app)
        }
        (Route::Manifest { name, reference }, &Method::PUT) => {
            manifests::PutManifest::parse(name, reference, query, &parts.headers)?
                .apply(app, body)
                .await
        }
        (Route::Manifest { name, reference }, &Method::DELETE) => {
            manifests::DeleteManifest::parse(name, reference)?
                .apply(app)
                .await
        }
        (Route::Blob { name, digest }, &Method::GET | &Method::HEAD) => {
            blobs::GetBlob::parse(name, digest, method, &parts)?
                .apply(app)
                .await
        }
        (Route::Blob { name, digest }, &Method::DELETE) => {
            blobs::DeleteBlob::parse(name, digest)?.apply(app).await
        }
        (Route::Upload { name, id: "" }, &Method::POST) => {
            let mut start = uploads::StartUpload::parse(name, query)?;
            if let uploads::StartUpload::Mount { from, .. } = &start {
                // A mount must not reveal (or copy) a blob the caller
                // cannot read: fall back to a normal upload session.
                let readable = match from {
                    Some(src) => auth::permits(
                        app,
                        &principal,
                        Resource::Repository(src),
                        Actions::of(&[Action::Pull]),
                    )?,
                    // Mount from anywhere: only when nothing is private to anyone.
                    None => principal == Principal::Open,
                };
                if !readable {
                    start = start.into_session();
                }
            }
            let owner = uploads::session_owner(&principal, name);
            start.apply(app, body, owner).await
        }
        (Route::Upload { name, id }, &Method::GET) if !id.is_empty() => {
            uploads::UploadStatus::parse(name, id)?.apply(app)
        }
        (Route::Upload { name, id }, &Method::PATCH) if !id.is_empty() => {
            uploads::PatchUpload::parse(name, id, &parts.headers)?
                .apply(app, body)
                .await
        }
        (Route::Upload { name, id }, &Method::PUT) if !id.is_empty() => {
            uploads::CompleteUpload::parse(name, id, query, &parts.headers)?
                .apply(app, body)
                .await
        }
        (Route::Upload { name, id }, &Method::DELETE) if !id.is_empty() => {
            uploads::CancelUpload::parse(name, id)?.apply(app).await
        }
        (Route::Unknown, _) => Err(ApiError::new(
            Code::RouteUnknown,
            format!("no endpoint at {}", parts.uri.path()),
        )),
        (route, _) => Err(ApiError::method_not_allowed(route.allowed())),
    }
}

/// Authorizes an OCI route before its handler: `GET /v2/` needs any
/// signed-in account or any valid token (the `401` without credentials is
/// what `docker login` checks); the catalog any account (it is filtered)
/// or a token with `registry:catalog:*`; reads need `pull`, manifest PUT
/// and uploads `push`, deletes `delete`, on the repository (a token: in its
/// claim for exactly that repository). Unknown routes and methods protect
/// nothing and answer 404/405.
async fn authorize_route(
    app: &App,
    parts: &Parts,
    route: Route<'_>,
    method: &Method,
) -> Result<Principal, ApiError> {
    use Action::*;
    let (name, action) = match (route, method) {
        (Route::Base, _) => return auth::require_authenticated(app, parts).await,
        (Route::Catalog, _) => {
            return auth::authorize(app, parts, Resource::Catalog, Actions::of(&[Action::Pull]))
                .await
        }
        (Route::Tags { name } | Route::Referrers { name, .. }, _) => (name, Pull),
        (Route::Manifest { name, .. } | Route::Blob { name, .. }, &Method::GET | &Method::HEAD) => {
            (name, Pull)
        }
        (Route::Manifest { name, .. }, &Method::PUT) => (name, Push),
        (Route::Manifest { name, .. } | Route::Blob { name, .. }, &Method::DELETE) => {
            (name, Delete)
        }
        (Route::Upload { name, .. }, _) => (name, Push),
        _ => return Ok(Principal::Open),
    };
    if !app.auth.enabled {
        return Ok(Principal::Open);
    }
    let repo = RepoName::parse(name)?;
    auth::authorize(
        app,
        parts,
        Resource::Repository(&repo),
        Actions::of(&[action]),
    )
    .await
}
