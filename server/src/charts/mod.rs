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
//! `{"error": "…"}` with a 4xx status (`errors::Surface::Charts`: the same
//! error type and engine-error mapping as every surface); only storage
//! failures are 500.
//!
//! Auth: [`resolve`] gives each endpoint its guard (the project and the
//! permission it needs), and the router checks it before the handler runs,
//! as for every route; handlers get the admitted caller as an argument
//! (the global index filters by it) and never authorize themselves.

mod handlers;
pub use handlers::save_chart;
pub mod index;
use berth_wire::charts::multipart;
pub mod oci;
/// Archive and Chart.yaml validation (`berth_wire::charts::package`).
pub use berth_wire::charts::package;

use std::sync::Arc;

use crate::limits::RequestBody;
use berth_engine::{Action as Perm, Actions, RepoName};
use hyper::header::HeaderMap;
use hyper::{Method, Response, StatusCode};

use crate::auth::{Guard, Principal, Target};
use crate::errors::{ApiError, Code};
use crate::http::{App, Body};
use crate::router::Query;

pub use index::IndexCache;
pub use package::Limits;

// The chart repository's path grammar lives in `berth_wire::charts::path`,
// beside its fuzz target.
pub use berth_wire::charts::path::{route, Route};

/// Which endpoint an upload came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadKind {
    /// `POST …/charts`: multipart `chart` (+ optional `prov`), or a raw tgz.
    Chart,
    /// `POST …/prov`: multipart `prov`, or a raw provenance file.
    Prov,
}

/// A chart repository endpoint, as routed: a [`Route`] and a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Health,
    GlobalIndex,
    Index {
        project: &'a str,
    },
    File {
        project: &'a str,
        file: &'a str,
    },
    List {
        project: &'a str,
        name: Option<&'a str>,
    },
    Version {
        project: &'a str,
        name: &'a str,
        version: &'a str,
    },
    Upload {
        project: &'a str,
        kind: UploadKind,
    },
    Delete {
        project: &'a str,
        name: &'a str,
        version: Option<&'a str>,
    },
}

/// The route table's rows for the chart repository: the endpoint of
/// `method` on `route` and the guard it needs. The same project
/// permissions as `docker pull/push` and manifest deletes: reading is
/// pull, uploading push (and pull), deleting delete. An anonymous caller
/// without the permission gets `401` with a Basic challenge (what `helm
/// repo add --username --password` answers), a signed-in one `403`. The
/// project name is checked first (`400`).
pub fn resolve<'a>(
    method: &Method,
    route: Route<'a>,
) -> Result<(Endpoint<'a>, Guard<'a>), ApiError> {
    use Endpoint as E;
    use Perm::{Delete, Pull, Push};
    let on = |project: &'a str, actions: &[Perm]| -> Result<Guard<'a>, ApiError> {
        self::project(project)?;
        Ok(Guard::Access(
            Target::Project(project),
            Actions::of(actions),
        ))
    };
    let read = matches!(*method, Method::GET | Method::HEAD);
    Ok(match (route, method) {
        (Route::Health, _) if read => (E::Health, Guard::Public),
        // Every project the caller may read: filtered by the handler.
        (Route::GlobalIndex, _) if read => (E::GlobalIndex, Guard::Caller),
        (Route::Index { project }, _) if read => (E::Index { project }, on(project, &[Pull])?),
        (Route::File { project, file }, _) if read => {
            (E::File { project, file }, on(project, &[Pull])?)
        }
        (Route::Charts { project }, &Method::GET) => (
            E::List {
                project,
                name: None,
            },
            on(project, &[Pull])?,
        ),
        (Route::Chart { project, name }, &Method::GET) => (
            E::List {
                project,
                name: Some(name),
            },
            on(project, &[Pull])?,
        ),
        (
            Route::Version {
                project,
                name,
                version,
            },
            &Method::GET,
        ) => (
            E::Version {
                project,
                name,
                version,
            },
            on(project, &[Pull])?,
        ),
        (Route::Charts { project }, &Method::POST) => (
            E::Upload {
                project,
                kind: UploadKind::Chart,
            },
            on(project, &[Pull, Push])?,
        ),
        (Route::Prov { project }, &Method::POST) => (
            E::Upload {
                project,
                kind: UploadKind::Prov,
            },
            on(project, &[Pull, Push])?,
        ),
        (Route::Chart { project, name }, &Method::DELETE) => (
            E::Delete {
                project,
                name,
                version: None,
            },
            on(project, &[Delete])?,
        ),
        (
            Route::Version {
                project,
                name,
                version,
            },
            &Method::DELETE,
        ) => (
            E::Delete {
                project,
                name,
                version: Some(version),
            },
            on(project, &[Delete])?,
        ),
        (route, _) => return Err(ApiError::method_not_allowed(route.allowed())),
    })
}

/// A validated project name (one repository path component).
pub fn project(p: &str) -> Result<RepoName, ApiError> {
    let invalid = || ApiError::new(Code::BadRequest, format!("invalid project {p:?}"));
    if p.contains('/') {
        return Err(invalid());
    }
    RepoName::parse(p).map_err(|_| invalid())
}

/// Runs a chart repository endpoint for the caller its guard admitted.
pub async fn handle(
    app: &Arc<App>,
    endpoint: Endpoint<'_>,
    caller: &Principal,
    method: &Method,
    query: Query<'_>,
    headers: &HeaderMap,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    use handlers as h;
    use Endpoint as E;
    let head = *method == Method::HEAD;
    match endpoint {
        E::Health => Ok(h::json(
            StatusCode::OK,
            &serde_json::json!({"healthy": true}),
        )),
        E::GlobalIndex => {
            h::GetIndex::parse(None, headers)?
                .apply(app, caller, head)
                .await
        }
        E::Index { project } => {
            h::GetIndex::parse(Some(project), headers)?
                .apply(app, caller, head)
                .await
        }
        E::File { project, file } => h::GetFile::parse(project, file)?.apply(app, head).await,
        E::List { project, name } => h::ListCharts::parse(project, name)?.apply(app).await,
        E::Version {
            project,
            name,
            version,
        } => {
            h::GetVersion::parse(project, name, version)?
                .apply(app)
                .await
        }
        E::Upload { project, kind } => {
            h::Upload::parse(project, query, headers, kind)?
                .apply(app, body)
                .await
        }
        E::Delete {
            project,
            name,
            version,
        } => h::Delete::parse(project, name, version)?.apply(app).await,
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
