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

use std::borrow::Cow;
use std::sync::Arc;

use berth_engine::{Action, Actions, RepoName};
use hyper::http::request::Parts;

use crate::limits::RequestBody;
use hyper::{Method, Request, Response};

use crate::auth::{self, Principal, Resource};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, App, Body};

/// A routed path; the `&str`s borrow from the (percent-decoded) path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Base,
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Upload { name: &'a str, id: &'a str },
    Referrers { name: &'a str, digest: &'a str },
    Unknown,
}

impl Route<'_> {
    /// The methods this route answers, for `Allow`.
    fn allowed(self) -> &'static str {
        match self {
            Route::Base => "GET, HEAD",
            Route::Catalog | Route::Tags { .. } | Route::Referrers { .. } => "GET",
            Route::Manifest { .. } => "GET, HEAD, PUT, DELETE",
            Route::Blob { .. } => "GET, HEAD, DELETE",
            Route::Upload { id: "", .. } => "POST",
            Route::Upload { .. } => "GET, PATCH, PUT, DELETE",
            Route::Unknown => "",
        }
    }
}

/// Routes a percent-decoded path.
pub fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Route::Unknown;
    };
    if rest.is_empty() || rest == "/" {
        return Route::Base;
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Route::Unknown;
    };
    if rest == "_catalog" {
        return Route::Catalog;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return nonempty(name, |name| Route::Tags { name });
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads") {
        return nonempty(name, |name| Route::Upload { name, id: "" });
    }
    let Some((head, last)) = rest.rsplit_once('/') else {
        return Route::Unknown;
    };
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return nonempty(name, |name| Route::Upload { name, id: last });
    }
    if last.is_empty() {
        return Route::Unknown;
    }
    if let Some(name) = head.strip_suffix("/manifests") {
        return nonempty(name, |name| Route::Manifest {
            name,
            reference: last,
        });
    }
    if let Some(name) = head.strip_suffix("/blobs") {
        return nonempty(name, |name| Route::Blob { name, digest: last });
    }
    if let Some(name) = head.strip_suffix("/referrers") {
        return nonempty(name, |name| Route::Referrers { name, digest: last });
    }
    Route::Unknown
}

fn nonempty<'a>(name: &'a str, f: impl FnOnce(&'a str) -> Route<'a>) -> Route<'a> {
    if name.is_empty() {
        Route::Unknown
    } else {
        f(name)
    }
}

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

/// A raw query string. Lookups scan it (queries here are a few pairs).
/// Values are percent-decoded; `+` stays `+` (media types such as
/// `application/vnd.oci.image.manifest.v1+json` are sent unencoded by some
/// clients, and no value berth reads contains a space).
#[derive(Clone, Copy, Debug)]
pub struct Query<'a>(pub &'a str);

impl<'a> Query<'a> {
    /// Every value of `key`, in order.
    pub fn all(self, key: &'a str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
        self.0.split('&').filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
    }

    /// The first value of `key`.
    pub fn get(self, key: &'a str) -> Option<Cow<'a, str>> {
        self.all(key).next()
    }
}

/// Decodes `%XX` escapes. Invalid escapes stay literal; a result that is not
/// UTF-8 leaves the input unchanged (validation then rejects it).
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(s),
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let d = "sha256:aa";
        let cases: &[(&str, Route)] = &[
            ("/v2", Route::Base),
            ("/v2/", Route::Base),
            ("/v2/_catalog", Route::Catalog),
            ("/v2/a/b/tags/list", Route::Tags { name: "a/b" }),
            (
                "/v2/a/manifests/latest",
                Route::Manifest {
                    name: "a",
                    reference: "latest",
                },
            ),
            (
                "/v2/a/b/blobs/sha256:aa",
                Route::Blob {
                    name: "a/b",
                    digest: d,
                },
            ),
            ("/v2/a/blobs/uploads/", Route::Upload { name: "a", id: "" }),
            ("/v2/a/blobs/uploads", Route::Upload { name: "a", id: "" }),
            (
                "/v2/a/blobs/uploads/abc",
                Route::Upload {
                    name: "a",
                    id: "abc",
                },
            ),
            (
                "/v2/a/referrers/sha256:aa",
                Route::Referrers {
                    name: "a",
                    digest: d,
                },
            ),
            // Names that contain resource words route by the tail.
            (
                "/v2/x/blobs/uploads/manifests/v1",
                Route::Manifest {
                    name: "x/blobs/uploads",
                    reference: "v1",
                },
            ),
            (
                "/v2/manifests/blobs/sha256:aa",
                Route::Blob {
                    name: "manifests",
                    digest: d,
                },
            ),
            (
                "/v2/blobs/blobs/uploads/",
                Route::Upload {
                    name: "blobs",
                    id: "",
                },
            ),
            ("/v2/tags/list/tags/list", Route::Tags { name: "tags/list" }),
            // Unknown.
            ("/v2/blobs/sha256:aa", Route::Unknown),
            ("/v2/a/manifests/", Route::Unknown),
            ("/v2/a", Route::Unknown),
            ("/v2/a/foo/bar", Route::Unknown),
            ("/v3/", Route::Unknown),
            ("/v2x", Route::Unknown),
            ("/", Route::Unknown),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), *want, "{path}");
        }
    }

    #[test]
    fn query_strings() {
        let q = Query("tag=a&tag=b&n=10&artifactType=application%2Fx%2Bjson&raw=a+b&empty");
        assert_eq!(q.all("tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(q.get("n").as_deref(), Some("10"));
        assert_eq!(q.get("artifactType").as_deref(), Some("application/x+json"));
        assert_eq!(q.get("raw").as_deref(), Some("a+b"));
        assert_eq!(q.get("empty").as_deref(), Some(""));
        assert_eq!(q.get("missing"), None);
        assert_eq!(Query("").get("n"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("sha256%3Aab"), "sha256:ab");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "%ff"); // not UTF-8: unchanged
        assert_eq!(percent_decode("plain"), "plain");
    }
}
