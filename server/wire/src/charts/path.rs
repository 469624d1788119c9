//! The chart repository's path grammar: Harbor's `/chartrepo/…` and
//! `/api/chartrepo/…` paths and ChartMuseum's depth-1 layout (the table is
//! in the server's `charts/mod.rs`). Names and versions are validated by
//! the handlers, not here.

/// A routed chart repository path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    GlobalIndex,
    Index {
        project: &'a str,
    },
    /// `charts/{file}`: `{name}-{version}.tgz` or `….tgz.prov`.
    File {
        project: &'a str,
        file: &'a str,
    },
    Charts {
        project: &'a str,
    },
    Chart {
        project: &'a str,
        name: &'a str,
    },
    Version {
        project: &'a str,
        name: &'a str,
        version: &'a str,
    },
    Prov {
        project: &'a str,
    },
}

impl Route<'_> {
    /// The methods this route answers, for `Allow`.
    pub fn allowed(self) -> &'static str {
        match self {
            Route::Health | Route::GlobalIndex | Route::Index { .. } | Route::File { .. } => {
                "GET, HEAD"
            }
            Route::Charts { .. } => "GET, POST",
            Route::Chart { .. } | Route::Version { .. } => "GET, DELETE",
            Route::Prov { .. } => "POST",
        }
    }
}

/// Routes a percent-decoded path; None for paths that are not the chart
/// repository's (the OCI router answers those).
pub fn route(path: &str) -> Option<Route<'_>> {
    let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    match segs.as_slice() {
        ["health"] | ["api", "chartrepo", "health"] => Some(Route::Health),
        ["chartrepo", "index.yaml"] => Some(Route::GlobalIndex),
        ["chartrepo", project, rest @ ..] => repo_route(project, rest),
        ["api", "chartrepo", project, rest @ ..] => api_route(project, rest),
        ["api", project, rest @ ..] => api_route(project, rest),
        ["v2", ..] => None,
        [project, rest @ ..] => repo_route(project, rest),
        [] => None,
    }
}

fn repo_route<'a>(project: &'a str, rest: &[&'a str]) -> Option<Route<'a>> {
    if project.is_empty() {
        return None;
    }
    match rest {
        ["index.yaml"] => Some(Route::Index { project }),
        ["charts", file] if !file.is_empty() => Some(Route::File { project, file }),
        _ => None,
    }
}

fn api_route<'a>(project: &'a str, rest: &[&'a str]) -> Option<Route<'a>> {
    if project.is_empty() {
        return None;
    }
    match rest {
        ["charts"] | ["charts", ""] => Some(Route::Charts { project }),
        ["charts", name] => Some(Route::Chart { project, name }),
        ["charts", name, version] if !name.is_empty() && !version.is_empty() => {
            Some(Route::Version {
                project,
                name,
                version,
            })
        }
        ["prov"] => Some(Route::Prov { project }),
        _ => None,
    }
}
