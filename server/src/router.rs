//! THE route table: every request of every surface — the OCI API (`/v2`),
//! the chart repository, the Harbor-shaped API (`/api/v2.0/…`, GC
//! included), the token service and `/metrics` — is resolved here to one
//! [`Entry`] that declares
//!
//! ```text
//! surface    which API answers: how its errors look (errors::Surface)
//! guard      what the caller must be or may do, from the parsed path (auth::Guard)
//! tokens     whether bearer tokens are accepted (the registry API only)
//! writes     refused while the registry is read-only
//! deletes    a content delete: refused when deletes are disabled
//! endpoint   the handler
//! ```
//!
//! and [`dispatch`] applies them in one order for every route: resolve
//! (`404`, `405` with `Allow`), [`auth::admit`] (the one authorization),
//! read-only, deletes, then the handler with the admitted caller as an
//! argument. No handler authenticates, authorizes or checks a policy from
//! ambient state. Families, in the order they are matched:
//!
//! ```text
//! /, /console/…                          the web console (console/mod.rs: pages
//!                                        that read this table's API as the
//!                                        signed-in browser)
//! /metrics                               Prometheus metrics (metrics.rs)
//! /api/v2.0/system/gc…                   Harbor GC API (gc_api.rs: resolve)
//! /service/token                         Docker token service (token_service.rs)
//! /api/v2.0/…                            Harbor-shaped admin API (admin.rs: resolve)
//! /chartrepo/…, /api/…, /{p}/…           chart repository (charts/mod.rs: route, resolve)
//! /v2/…                                  OCI distribution API (below)
//! ```
//!
//! The OCI path grammar: repository names contain slashes, so a path is
//! routed by its tail:
//!
//! ```text
//! /v2/                                   Base
//! /v2/_catalog                           Catalog
//! /v2/<name>/tags/list                   Tags
//! /v2/<name>/manifests/<reference>       Manifest
//! /v2/<name>/blobs/<digest>              Blob
//! /v2/<name>/blobs/uploads/[<id>]        Upload (no id: start one)
//! /v2/<name>/referrers/<digest>          Referrers
//! ```
//!
//! The last path segment is the reference/digest/id; the segment(s) before
//! it say which resource; everything before that is `<name>`. So
//! `/v2/a/blobs/uploads/manifests/x` is manifest `x` of repository
//! `a/blobs/uploads`. The name is validated by the guard (with auth on)
//! and by the handler ([`berth_engine::RepoName::parse`]), not here.

use std::sync::Arc;

use berth_engine::{Action, Actions};
use hyper::http::request::Parts;

use crate::limits::RequestBody;
use hyper::{Method, Request, Response};

use crate::auth::{self, Guard, Principal, Resource, Target};
use crate::errors::{ApiError, Code, Surface};
use crate::http::{blocking, App, Body};

// The path grammar and query strings above live in `berth_wire::path`,
// beside their fuzz target.
pub use berth_wire::path::{percent_decode, route, Query, Route};

// ---- the route table -------------------------------------------------------

/// One entry of the route table: what a request is, and what must hold
/// before its handler runs. Built by [`resolve`] from the method and the
/// parsed path; applied by [`dispatch`] in one order for every surface:
/// guard (authentication and authorization), then read-only, then the
/// delete policy, then the handler with the admitted caller.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// Which API answers, and so how its errors look.
    pub surface: Surface,
    /// What the caller must be or may do ([`auth::admit`]).
    pub guard: Guard<'a>,
    /// Whether bearer tokens are accepted (the registry API only).
    pub tokens: bool,
    /// Refused (`405`) while the registry is read-only.
    pub writes: bool,
    /// A content delete: refused (`405`) when deletes are disabled.
    pub deletes: bool,
    /// The handler.
    pub endpoint: Endpoint<'a>,
}

impl<'a> Entry<'a> {
    /// The project a push goes to: a write of the registry or chart API
    /// that is not a content delete.
    fn pushed_project(&self) -> Option<&'a str> {
        if !self.writes || self.deletes {
            return None;
        }
        match (self.surface, self.guard) {
            (Surface::Registry, Guard::Access(Target::Repository(name), _)) => {
                name.split('/').next()
            }
            (Surface::Charts, Guard::Access(Target::Project(p) | Target::Repository(p), _)) => {
                p.split('/').next()
            }
            _ => None,
        }
    }
}

/// Every handler, with what its path names.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint<'a> {
    Metrics,
    Token,
    Gc(crate::gc_api::Endpoint<'a>),
    Admin(crate::admin::Endpoint<'a>),
    Chart(crate::charts::Endpoint<'a>),
    Base,
    Catalog,
    ListTags { name: &'a str },
    ListReferrers { name: &'a str, digest: &'a str },
    GetManifest { name: &'a str, reference: &'a str },
    PutManifest { name: &'a str, reference: &'a str },
    DeleteManifest { name: &'a str, reference: &'a str },
    GetBlob { name: &'a str, digest: &'a str },
    DeleteBlob { name: &'a str, digest: &'a str },
    StartUpload { name: &'a str },
    UploadStatus { name: &'a str, id: &'a str },
    PatchUpload { name: &'a str, id: &'a str },
    CompleteUpload { name: &'a str, id: &'a str },
    CancelUpload { name: &'a str, id: &'a str },
}

/// The configuration the route table depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// Auth is on (else the token service does not exist, and the account
    /// API is closed).
    pub auth: bool,
    /// Anyone may create a user account.
    pub self_registration: bool,
}

impl TableConfig {
    pub fn of(app: &App) -> TableConfig {
        TableConfig {
            auth: app.auth.enabled,
            self_registration: app.auth.self_registration,
        }
    }
}

/// The surface a path belongs to, for answers given before (or without)
/// an entry: `404` and `405`.
pub fn surface_of(path: &str) -> Surface {
    if path.starts_with(crate::admin::PREFIX) || crate::gc_api::owns(path) {
        Surface::Harbor
    } else if crate::charts::route(path).is_some() {
        Surface::Charts
    } else {
        Surface::Registry
    }
}

/// THE route table: the entry of `method` on `path` (percent-decoded), or
/// the surface's `404`/`405` (with `Allow`). Families in order: `/metrics`,
/// the GC API, the token service, the rest of `/api/v2.0/`, the chart
/// repository, the OCI API.
pub fn resolve<'a>(
    config: TableConfig,
    method: &Method,
    path: &'a str,
) -> Result<Entry<'a>, ApiError> {
    use Method as M;
    let read = matches!(*method, M::GET | M::HEAD);
    let not_allowed = |allow| Err(ApiError::method_not_allowed(allow));
    // Tokens, writes and deletes are off unless a row says otherwise.
    let entry = |surface, guard, endpoint| Entry {
        surface,
        guard,
        tokens: false,
        writes: false,
        deletes: false,
        endpoint,
    };
    let pull = Actions::of(&[Action::Pull]);
    let push = Actions::of(&[Action::Push]);
    let delete = Actions::of(&[Action::Delete]);

    if path == "/metrics" {
        return match read {
            true => Ok(entry(Surface::Registry, Guard::Public, Endpoint::Metrics)),
            false => not_allowed("GET, HEAD"),
        };
    }
    if crate::gc_api::owns(path) {
        let (endpoint, writes) = crate::gc_api::resolve(method, path)?;
        return Ok(Entry {
            writes,
            ..entry(Surface::Harbor, Guard::Admin, Endpoint::Gc(endpoint))
        });
    }
    if path == auth::TOKEN_PATH {
        if !config.auth {
            return Err(ApiError::new(
                Code::RouteUnknown,
                "auth is disabled on this registry: there is no token service",
            ));
        }
        // The token service is the login: it checks the credentials it
        // is sent itself (and takes no tokens).
        return match *method {
            M::GET | M::POST => Ok(entry(Surface::Registry, Guard::Public, Endpoint::Token)),
            _ => not_allowed("GET, POST"),
        };
    }
    if let Some(rest) = path.strip_prefix(crate::admin::PREFIX) {
        let (endpoint, guard) = crate::admin::resolve(config, method, rest)?;
        // Artifact writes change stored content, as the registry API's do.
        let (writes, deletes) = match endpoint {
            crate::admin::Endpoint::Artifacts(a) => (a.writes(), a.deletes()),
            _ => (false, false),
        };
        return Ok(Entry {
            writes,
            deletes,
            ..entry(Surface::Harbor, guard, Endpoint::Admin(endpoint))
        });
    }

    let oci = route(path);
    if oci == Route::Unknown {
        if let Some(chart) = crate::charts::route(path) {
            let (endpoint, guard) = crate::charts::resolve(method, chart)?;
            let writes = matches!(*method, M::POST | M::PUT | M::PATCH | M::DELETE);
            return Ok(Entry {
                writes,
                deletes: *method == M::DELETE,
                ..entry(Surface::Charts, guard, Endpoint::Chart(endpoint))
            });
        }
    }
    let repo = |name, actions| Guard::Access(Target::Repository(name), actions);
    // The registry API: the one family that takes bearer tokens.
    let reg = |guard, endpoint| Entry {
        tokens: true,
        ..entry(Surface::Registry, guard, endpoint)
    };
    let write = |e: Entry<'a>| Entry { writes: true, ..e };
    let content_delete = |e: Entry<'a>| Entry {
        writes: true,
        deletes: true,
        ..e
    };
    Ok(match (oci, method) {
        (Route::Base, &M::GET | &M::HEAD) => reg(Guard::SignedIn, Endpoint::Base),
        (Route::Catalog, &M::GET) => reg(Guard::Access(Target::Catalog, pull), Endpoint::Catalog),
        (Route::Tags { name }, &M::GET) => reg(repo(name, pull), Endpoint::ListTags { name }),
        (Route::Referrers { name, digest }, &M::GET) => {
            reg(repo(name, pull), Endpoint::ListReferrers { name, digest })
        }
        (Route::Manifest { name, reference }, &M::GET | &M::HEAD) => {
            reg(repo(name, pull), Endpoint::GetManifest { name, reference })
        }
        (Route::Manifest { name, reference }, &M::PUT) => write(reg(
            repo(name, push),
            Endpoint::PutManifest { name, reference },
        )),
        (Route::Manifest { name, reference }, &M::DELETE) => content_delete(reg(
            repo(name, delete),
            Endpoint::DeleteManifest { name, reference },
        )),
        (Route::Blob { name, digest }, &M::GET | &M::HEAD) => {
            reg(repo(name, pull), Endpoint::GetBlob { name, digest })
        }
        (Route::Blob { name, digest }, &M::DELETE) => content_delete(reg(
            repo(name, delete),
            Endpoint::DeleteBlob { name, digest },
        )),
        (Route::Upload { name, id: "" }, &M::POST) => {
            write(reg(repo(name, push), Endpoint::StartUpload { name }))
        }
        (Route::Upload { name, id }, &M::GET) if !id.is_empty() => {
            reg(repo(name, push), Endpoint::UploadStatus { name, id })
        }
        (Route::Upload { name, id }, &M::PATCH) if !id.is_empty() => {
            write(reg(repo(name, push), Endpoint::PatchUpload { name, id }))
        }
        (Route::Upload { name, id }, &M::PUT) if !id.is_empty() => {
            write(reg(repo(name, push), Endpoint::CompleteUpload { name, id }))
        }
        // Cancelling an upload is not a content delete.
        (Route::Upload { name, id }, &M::DELETE) if !id.is_empty() => {
            write(reg(repo(name, push), Endpoint::CancelUpload { name, id }))
        }
        (Route::Unknown, _) => {
            return Err(ApiError::new(
                Code::RouteUnknown,
                format!("no endpoint at {path}"),
            ))
        }
        (route, _) => return not_allowed(route.allowed()),
    })
}

/// Answers a request: resolves its entry in the route table, admits the
/// caller against the entry's guard, applies the read-only and delete
/// policies, and runs the handler with the caller. Every error is
/// rendered by the surface of the path.
pub async fn dispatch(
    app: &Arc<App>,
    req: Request<RequestBody>,
    request_id: &str,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = percent_decode(parts.uri.path());
    // The web console: pages, not an API; it reads the API through this
    // function, as the signed-in browser (console/mod.rs).
    if crate::console::owns(&path) {
        let path = path.into_owned();
        return crate::console::handle(app, parts, body, &path, request_id).await;
    }
    let entry = match resolve(TableConfig::of(app), &parts.method, &path) {
        Ok(entry) => entry,
        Err(e) => return e.into_response(surface_of(&path), request_id),
    };
    match admit_and_run(app, &parts, entry, body).await {
        Ok(res) => res,
        Err(e) => e.into_response(entry.surface, request_id),
    }
}

async fn admit_and_run(
    app: &Arc<App>,
    parts: &Parts,
    entry: Entry<'_>,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let caller = auth::admit(app, parts, entry.tokens, entry.guard).await?;
    if entry.writes && app.read_only {
        return Err(ApiError::new(
            Code::Unsupported,
            "the registry is in read-only mode",
        ));
    }
    if entry.deletes && !app.delete_enabled {
        return Err(ApiError::new(
            Code::Unsupported,
            "deletes are disabled on this registry",
        ));
    }
    if let Some(project) = entry.pushed_project() {
        crate::proxy_cache::refuse_push(app, project).await?;
    }
    let query = Query(parts.uri.query().unwrap_or(""));
    // Who, kept only for what the audit log records or a webhook reports.
    let who = (crate::audit::records(&entry, &parts.method) || crate::webhooks::may_fire(&entry))
        .then(|| caller.name().to_owned());
    let res = run(app, entry.endpoint, caller, parts, query, body).await;
    if let Some(who) = who {
        match &res {
            Ok(r) => {
                crate::audit::after(app, &entry, parts, &who, r);
                // IMPORTANT: awaited before the answer goes out, so an
                // event is durable once the client hears "done".
                let answer = (r.status(), r.headers());
                crate::webhooks::after(app, &entry, parts, &who, answer).await;
            }
            Err(e) => crate::webhooks::refused(app, &entry, &who, e).await,
        }
    }
    res
}

/// Runs the handler of an admitted request. `caller` is who the guard
/// admitted; handlers that show or do more or less by caller (catalog,
/// mounts, upload owners, listings) take it from here.
async fn run(
    app: &Arc<App>,
    endpoint: Endpoint<'_>,
    caller: Principal,
    parts: &Parts,
    query: Query<'_>,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    use crate::{blobs, catalog, manifests, referrers, tags, uploads};
    let method = &parts.method;
    match endpoint {
        Endpoint::Metrics => Ok(crate::metrics::get(app).await),
        Endpoint::Token => crate::token_service::handle(app, parts, query, body).await,
        Endpoint::Gc(e) => crate::gc_api::handle(app, e, query, body).await,
        Endpoint::Admin(e) => crate::admin::handle(app, e, &caller, parts, body).await,
        Endpoint::Chart(e) => {
            crate::charts::handle(app, e, &caller, method, query, &parts.headers, body).await
        }
        Endpoint::Base => Ok(crate::http::json(b"{}".to_vec(), "application/json")),
        Endpoint::Catalog => {
            // Only repositories of projects the caller may pull from (with a
            // token: that its subject may pull from, the claim granting the
            // listing); an index scan bounded per request, on the blocking pool.
            let list = catalog::ListCatalog::parse(query, &app.cursors)?;
            let app = app.clone();
            tokio::task::spawn_blocking(move || {
                list.apply(&app.engine, &app.cursors, |project| {
                    auth::permits(
                        &app,
                        &caller,
                        Resource::Listed(project),
                        Actions::of(&[Action::Pull]),
                    )
                })
            })
            .await
            .map_err(ApiError::internal)?
        }
        Endpoint::ListTags { name } => {
            let list = tags::ListTags::parse(name, query)?;
            blocking(app, move |e| list.apply(e)).await?
        }
        Endpoint::ListReferrers { name, digest } => {
            let list = referrers::ListReferrers::parse(name, digest, query)?;
            blocking(app, move |e| list.apply(e)).await?
        }
        Endpoint::GetManifest { name, reference } => {
            let get = manifests::GetManifest::parse(name, reference, method)?;
            match crate::proxy_cache::registry_of(app, &get.repo).await? {
                Some(registry) => crate::proxy_cache::get_manifest(app, registry, get).await,
                None => get.apply(app).await,
            }
        }
        Endpoint::PutManifest { name, reference } => {
            manifests::PutManifest::parse(name, reference, query, &parts.headers)?
                .apply(app, body)
                .await
        }
        Endpoint::DeleteManifest { name, reference } => {
            manifests::DeleteManifest::parse(name, reference)?
                .apply(app)
                .await
        }
        Endpoint::GetBlob { name, digest } => {
            let get = blobs::GetBlob::parse(name, digest, method, parts)?;
            match crate::proxy_cache::registry_of(app, &get.repo).await? {
                Some(registry) => crate::proxy_cache::get_blob(app, registry, get).await,
                None => get.apply(app).await,
            }
        }
        Endpoint::DeleteBlob { name, digest } => {
            blobs::DeleteBlob::parse(name, digest)?.apply(app).await
        }
        Endpoint::StartUpload { name } => {
            let mut start = uploads::StartUpload::parse(name, query)?;
            if let uploads::StartUpload::Mount { from, .. } = &start {
                // A mount must not reveal (or copy) a blob the caller
                // cannot read: fall back to a normal upload session.
                let readable = match from {
                    Some(src) => auth::permits(
                        app,
                        &caller,
                        Resource::Repository(src),
                        Actions::of(&[Action::Pull]),
                    )?,
                    // Mount from anywhere: only when nothing is private to anyone.
                    None => caller == Principal::Open,
                };
                if !readable {
                    start = start.into_session();
                }
            }
            let owner = uploads::session_owner(&caller, name);
            start.apply(app, body, owner).await
        }
        Endpoint::UploadStatus { name, id } => uploads::UploadStatus::parse(name, id)?.apply(app),
        Endpoint::PatchUpload { name, id } => {
            uploads::PatchUpload::parse(name, id, &parts.headers)?
                .apply(app, body)
                .await
        }
        Endpoint::CompleteUpload { name, id } => {
            uploads::CompleteUpload::parse(name, id, query, &parts.headers)?
                .apply(app, body)
                .await
        }
        Endpoint::CancelUpload { name, id } => {
            uploads::CancelUpload::parse(name, id)?.apply(app).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Properties of the whole table, over a path of every route and
    /// every method: the guards, policies and surfaces are declared, and
    /// declared consistently.
    #[test]
    fn the_table_declares_every_route() {
        let config = TableConfig {
            auth: true,
            self_registration: false,
        };
        let paths = [
            "/metrics",
            "/service/token",
            "/v2/",
            "/v2/_catalog",
            "/v2/p/app/tags/list",
            "/v2/p/app/manifests/latest",
            "/v2/p/app/blobs/sha256:aa",
            "/v2/p/app/blobs/uploads/",
            "/v2/p/app/blobs/uploads/0123456789abcdef0123456789abcdef",
            "/v2/p/app/referrers/sha256:aa",
            "/health",
            "/api/chartrepo/health",
            "/chartrepo/index.yaml",
            "/chartrepo/p/index.yaml",
            "/p/index.yaml",
            "/chartrepo/p/charts/app-1.0.0.tgz",
            "/api/chartrepo/p/charts",
            "/api/p/charts/app",
            "/api/chartrepo/p/charts/app/1.0.0",
            "/api/p/prov",
            "/api/v2.0/projects",
            "/api/v2.0/projects/p",
            "/api/v2.0/projects/p/members",
            "/api/v2.0/users",
            "/api/v2.0/users/current",
            "/api/v2.0/robots",
            "/api/v2.0/ldap/ping",
            "/api/v2.0/ldap/users/search",
            "/api/v2.0/ldap/users/import",
            "/api/v2.0/ldap/groups/search",
            "/api/v2.0/usergroups",
            "/api/v2.0/usergroups/search",
            "/api/v2.0/usergroups/3",
            "/api/v2.0/system/gc",
            "/api/v2.0/system/gc/schedule",
            "/api/v2.0/system/gc/7",
        ];
        let methods = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ];
        let public = [
            "/metrics",
            "/service/token",
            "/health",
            "/api/chartrepo/health",
        ];
        let mut entries = 0;
        for path in paths {
            let mut allowed = 0;
            for method in &methods {
                let e = match resolve(config, method, path) {
                    Ok(e) => e,
                    Err(err) => {
                        // Not this method: 405 with the methods that are.
                        assert_eq!(err.code, Code::Unsupported, "{method} {path}");
                        let allow = err.headers.iter().find(|(n, _)| n == hyper::header::ALLOW);
                        let allow = allow.map(|(_, v)| v.to_str().unwrap_or(""));
                        assert!(
                            allow.is_some_and(|a| !a.contains(method.as_str())),
                            "{method} {path}: {allow:?}"
                        );
                        continue;
                    }
                };
                allowed += 1;
                entries += 1;
                let read = matches!(*method, Method::GET | Method::HEAD);
                // Every changing method is a write, but the login and the
                // account API (read-only mode is about content, as Harbor's:
                // accounts, projects and robots are still managed).
                let accounts = path.starts_with("/api/v2.0/") && !path.contains("/system/gc");
                assert_eq!(
                    e.writes,
                    !read && path != "/service/token" && !accounts,
                    "{method} {path}: writes"
                );
                assert!(!e.deletes || *method == Method::DELETE, "{method} {path}");
                // Tokens act on the registry API only.
                assert_eq!(e.tokens, path.starts_with("/v2"), "{method} {path}: tokens");
                let surface = if path.starts_with("/api/v2.0/") {
                    Surface::Harbor
                } else if path.starts_with("/v2") || public[..2].contains(&path) {
                    Surface::Registry
                } else {
                    Surface::Charts
                };
                assert_eq!(e.surface, surface, "{method} {path}");
                assert_eq!(surface_of(path), surface, "{path}");
                assert_eq!(
                    matches!(e.guard, Guard::Public),
                    public.contains(&path),
                    "{method} {path}: {:?}",
                    e.guard
                );
                if path.starts_with("/api/v2.0/system/gc") {
                    assert!(matches!(e.guard, Guard::Admin), "{method} {path}");
                }
                // Chart and registry writes name what they act on.
                if e.writes && !path.starts_with("/api/v2.0/") {
                    assert!(
                        matches!(e.guard, Guard::Access(..)),
                        "{method} {path}: {:?}",
                        e.guard
                    );
                }
            }
            assert!(allowed > 0, "{path}: no method");
        }
        assert!(entries >= 40, "{entries}");
        // Content deletes, and only those, follow the delete policy.
        for (path, deletes) in [
            ("/v2/p/app/manifests/latest", true),
            ("/v2/p/app/blobs/sha256:aa", true),
            ("/api/p/charts/app", true),
            ("/api/chartrepo/p/charts/app/1.0.0", true),
            (
                "/v2/p/app/blobs/uploads/0123456789abcdef0123456789abcdef",
                false,
            ),
        ] {
            let e = resolve(config, &Method::DELETE, path).unwrap();
            assert_eq!(e.deletes, deletes, "{path}");
        }
        // Unknown paths are each surface's 404.
        for path in ["/v2/p/app/nothing/x", "/api/v2.0/nothing", "/nothing"] {
            let e = resolve(config, &Method::GET, path).unwrap_err();
            assert_eq!(e.code, Code::RouteUnknown, "{path}");
        }
        // With auth off, no token service and no account API.
        let off = TableConfig {
            auth: false,
            self_registration: false,
        };
        let e = resolve(off, &Method::GET, "/service/token").unwrap_err();
        assert_eq!(e.code, Code::RouteUnknown);
        let e = resolve(off, &Method::GET, "/api/v2.0/projects").unwrap_err();
        assert_eq!(e.code, Code::Denied);
        // Self-registration opens user creation to any caller.
        let open = TableConfig {
            auth: true,
            self_registration: true,
        };
        let e = resolve(open, &Method::POST, "/api/v2.0/users").unwrap();
        assert!(matches!(e.guard, Guard::Caller));
        let e = resolve(config, &Method::POST, "/api/v2.0/users").unwrap();
        assert!(matches!(e.guard, Guard::Admin));
    }
}
