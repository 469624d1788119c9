//! The Helm chart repository: Harbor's `chartrepo` paths and ChartMuseum's
//! API and depth-1 multi-tenant layout, over one set of handlers, on the
//! engine's chart index (see `docs/charts.md`).
//!
//! ```text
//! Harbor                                          ChartMuseum (depth 1)          Route
//! GET  /chartrepo/index.yaml                      -                              GlobalIndex
//! GET  /chartrepo/{p}/index.yaml                  /{p}/index.yaml                Index
//! GET  /chartrepo/{p}/charts/{n}-{v}.tgz[.prov]   /{p}/charts/{n}-{v}.tgz[.prov] File
//! GET|POST /api/chartrepo/{p}/charts              /api/{p}/charts                Charts
//! GET|DELETE /api/chartrepo/{p}/charts/{n}        /api/{p}/charts/{n}            Chart
//! GET|DELETE /api/chartrepo/{p}/charts/{n}/{v}    /api/{p}/charts/{n}/{v}        Version
//! POST /api/chartrepo/{p}/prov                    /api/{p}/prov                  Prov
//! GET  /api/chartrepo/health                      /health                        Health
//! ```
//!
//! `v2`, `api` and `chartrepo` are therefore not usable as ChartMuseum-style
//! project names (Harbor's paths win). Errors are ChartMuseum's JSON
//! `{"error": "…"}` with a 4xx status; only storage failures are 500.
//!
//! Auth: every handler calls [`authorize`] with the project and the
//! [`Action`] it needs before touching anything; that one function is where
//! project permissions plug in.

mod handlers;
pub mod index;
use berth_wire::charts::multipart;
pub mod oci;
/// Archive and Chart.yaml validation (`berth_wire::charts::package`).
pub use berth_wire::charts::package;

use std::borrow::Cow;
use std::sync::Arc;

use crate::limits::RequestBody;
use berth_engine::{ManifestError, NameError, RepoName, StorageError};
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Response, StatusCode};

use crate::auth::{self, Principal, Resource};
use crate::http::{App, Body};
use crate::router::Query;

pub use index::IndexCache;
pub use package::Limits;

// The chart repository's path grammar lives in `berth_wire::charts::path`,
// beside its fuzz target.
pub use berth_wire::charts::path::{route, Route};

/// What a request does to a project's charts, for [`authorize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the index, download charts, list (Harbor: project read).
    Read,
    /// Upload charts and provenance (Harbor: project push).
    Push,
    /// Delete versions or charts (Harbor: project delete).
    Delete,
}

tokio::task_local! {
    /// The caller of the chart request being handled, set by [`dispatch`]
    /// for the whole request.
    static CALLER: Principal;
}

/// THE permission check of the chart repository: may the caller do
/// `action` on `project`? Every chart handler calls it before touching the
/// engine; the global index calls it per project with [`Action::Read`] and
/// lists only the projects it allows. The same project permissions as
/// `docker pull/push` and manifest deletes (`auth::permits`): read is pull,
/// upload is push, delete is delete. An anonymous caller without the
/// permission gets `401` with a Basic challenge (what `helm repo add
/// --username --password` answers), a signed-in one `403`. Outside a
/// request (no caller) it refuses. Bearer tokens never get here: the
/// router's `auth::authenticate` refuses them off `/v2` (and a token's
/// claim grants nothing on a project).
pub fn authorize(app: &App, project: &RepoName, action: Action) -> Result<(), ChartError> {
    use berth_engine::{Action as Perm, Actions};
    let actions = match action {
        Action::Read => Actions::of(&[Perm::Pull]),
        Action::Push => Actions::of(&[Perm::Pull, Perm::Push]),
        Action::Delete => Actions::of(&[Perm::Delete]),
    };
    let checked = CALLER.try_with(|caller| {
        auth::permits(app, caller, Resource::Project(project.as_str()), actions)
            .map(|ok| (ok, caller.is_anonymous()))
    });
    match checked {
        Ok(Ok((true, _))) => Ok(()),
        Ok(Ok((false, true))) => Err(ChartError::unauthorized(format!(
            "authentication required for project {project}"
        ))),
        Ok(Ok((false, false))) => Err(ChartError::forbidden(format!(
            "not allowed to {} in project {project}",
            match action {
                Action::Read => "read charts",
                Action::Push => "upload charts",
                Action::Delete => "delete charts",
            }
        ))),
        Ok(Err(e)) => Err(ChartError::internal(format!("{e:?}"))),
        Err(_) => Err(ChartError::internal(
            "chart permission check outside a request",
        )),
    }
}

/// A failed chart request: ChartMuseum's `{"error": "…"}` with a status.
#[derive(Debug)]
pub struct ChartError {
    pub status: StatusCode,
    pub message: Cow<'static, str>,
    /// For 500s: the full error, logged but not sent.
    internal: Option<String>,
    allow: Option<&'static str>,
}

impl ChartError {
    pub fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> ChartError {
        ChartError {
            status,
            message: message.into(),
            internal: None,
            allow: None,
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> ChartError {
        ChartError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> ChartError {
        ChartError::new(StatusCode::NOT_FOUND, message)
    }

    /// 401: credentials needed (sent with a Basic challenge).
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> ChartError {
        ChartError::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: the caller may not do this.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> ChartError {
        ChartError::new(StatusCode::FORBIDDEN, message)
    }

    pub fn internal(e: impl std::fmt::Display) -> ChartError {
        ChartError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal storage error".into(),
            internal: Some(e.to_string()),
            allow: None,
        }
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        if let Some(internal) = &self.internal {
            tracing::error!(request_id, error = %internal, "storage failure");
        }
        let body = serde_json::json!({ "error": self.message });
        let mut res = Response::new(Body::new(Bytes::from(
            serde_json::to_vec(&body).unwrap_or_default(),
        )));
        *res.status_mut() = self.status;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(a) = self.allow {
            res.headers_mut().insert(ALLOW, HeaderValue::from_static(a));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"berth\""),
            );
        }
        res
    }
}

impl From<StorageError> for ChartError {
    fn from(e: StorageError) -> ChartError {
        ChartError::internal(e)
    }
}

impl From<NameError> for ChartError {
    fn from(e: NameError) -> ChartError {
        ChartError::bad_request(e.to_string())
    }
}

impl From<ManifestError> for ChartError {
    fn from(e: ManifestError) -> ChartError {
        match e {
            ManifestError::ChartExists { .. } => ChartError::new(
                StatusCode::CONFLICT,
                format!("{e} (upload with ?force to overwrite)"),
            ),
            ManifestError::Storage(s) => ChartError::internal(s),
            e => ChartError::bad_request(e.to_string()),
        }
    }
}

impl From<berth_engine::UploadError> for ChartError {
    fn from(e: berth_engine::UploadError) -> ChartError {
        match e {
            berth_engine::UploadError::Storage(s) => ChartError::internal(s),
            e => ChartError::bad_request(e.to_string()),
        }
    }
}

impl From<berth_engine::BlobError> for ChartError {
    fn from(e: berth_engine::BlobError) -> ChartError {
        match e {
            berth_engine::BlobError::Storage(s) => ChartError::internal(s),
            e => ChartError::not_found(e.to_string()),
        }
    }
}

impl From<package::PackageError> for ChartError {
    fn from(e: package::PackageError) -> ChartError {
        ChartError::bad_request(e.to_string())
    }
}

/// A validated project name (one repository path component).
pub fn project(p: &str) -> Result<RepoName, ChartError> {
    if p.contains('/') {
        return Err(ChartError::bad_request(format!("invalid project {p:?}")));
    }
    RepoName::parse(p).map_err(|_| ChartError::bad_request(format!("invalid project {p:?}")))
}

/// Handles a chart repository request.
pub async fn dispatch(
    app: &Arc<App>,
    caller: Principal,
    route: Route<'_>,
    method: &Method,
    query: Query<'_>,
    headers: &HeaderMap,
    body: RequestBody,
) -> Result<Response<Body>, ChartError> {
    CALLER
        .scope(caller, handle(app, route, method, query, headers, body))
        .await
}

async fn handle(
    app: &Arc<App>,
    route: Route<'_>,
    method: &Method,
    query: Query<'_>,
    headers: &HeaderMap,
    body: RequestBody,
) -> Result<Response<Body>, ChartError> {
    use handlers as h;
    let writes = matches!(*method, Method::POST | Method::PUT | Method::DELETE);
    if writes && app.read_only {
        return Err(ChartError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "the registry is in read-only mode",
        ));
    }
    if *method == Method::DELETE && !app.delete_enabled {
        return Err(ChartError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "deletes are disabled on this registry",
        ));
    }
    let head = *method == Method::HEAD;
    match (route, method) {
        (Route::Health, &Method::GET | &Method::HEAD) => Ok(h::json(
            StatusCode::OK,
            &serde_json::json!({"healthy": true}),
        )),
        (Route::GlobalIndex, &Method::GET | &Method::HEAD) => {
            h::GetIndex::parse(None, headers)?.apply(app, head).await
        }
        (Route::Index { project }, &Method::GET | &Method::HEAD) => {
            h::GetIndex::parse(Some(project), headers)?
                .apply(app, head)
                .await
        }
        (Route::File { project, file }, &Method::GET | &Method::HEAD) => {
            h::GetFile::parse(project, file)?.apply(app, head).await
        }
        (Route::Charts { project }, &Method::GET) => {
            h::ListCharts::parse(project, None)?.apply(app).await
        }
        (Route::Chart { project, name }, &Method::GET) => {
            h::ListCharts::parse(project, Some(name))?.apply(app).await
        }
        (
            Route::Version {
                project,
                name,
                version,
            },
            &Method::GET,
        ) => {
            h::GetVersion::parse(project, name, version)?
                .apply(app)
                .await
        }
        (Route::Charts { project }, &Method::POST) => {
            h::Upload::parse(project, query, headers, h::UploadKind::Chart)?
                .apply(app, body)
                .await
        }
        (Route::Prov { project }, &Method::POST) => {
            h::Upload::parse(project, query, headers, h::UploadKind::Prov)?
                .apply(app, body)
                .await
        }
        (Route::Chart { project, name }, &Method::DELETE) => {
            h::Delete::parse(project, name, None)?.apply(app).await
        }
        (
            Route::Version {
                project,
                name,
                version,
            },
            &Method::DELETE,
        ) => {
            h::Delete::parse(project, name, Some(version))?
                .apply(app)
                .await
        }
        (route, _) => {
            let mut e = ChartError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            );
            e.allow = Some(route.allowed());
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases: &[(&str, Option<Route>)] = &[
            ("/health", Some(Route::Health)),
            ("/api/chartrepo/health", Some(Route::Health)),
            ("/chartrepo/index.yaml", Some(Route::GlobalIndex)),
            (
                "/chartrepo/p/index.yaml",
                Some(Route::Index { project: "p" }),
            ),
            ("/p/index.yaml", Some(Route::Index { project: "p" })),
            (
                "/chartrepo/p/charts/a-1.0.0.tgz",
                Some(Route::File {
                    project: "p",
                    file: "a-1.0.0.tgz",
                }),
            ),
            (
                "/p/charts/a-1.0.0.tgz.prov",
                Some(Route::File {
                    project: "p",
                    file: "a-1.0.0.tgz.prov",
                }),
            ),
            (
                "/api/chartrepo/p/charts",
                Some(Route::Charts { project: "p" }),
            ),
            ("/api/p/charts", Some(Route::Charts { project: "p" })),
            (
                "/api/p/charts/a",
                Some(Route::Chart {
                    project: "p",
                    name: "a",
                }),
            ),
            (
                "/api/chartrepo/p/charts/a/1.0.0+b",
                Some(Route::Version {
                    project: "p",
                    name: "a",
                    version: "1.0.0+b",
                }),
            ),
            ("/api/p/prov", Some(Route::Prov { project: "p" })),
            ("/api/chartrepo/p/prov", Some(Route::Prov { project: "p" })),
            ("/v2/p/index.yaml", None),
            ("/v2/", None),
            ("/", None),
            ("/p", None),
            ("/p/other", None),
            ("//index.yaml", None),
            ("/api/p/charts/a/1/x", None),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), *want, "{path}");
        }
    }
}
