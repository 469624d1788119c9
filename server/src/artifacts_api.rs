//! Repositories and artifacts through the admin API, in Harbor v2.0's
//! shapes (the read side, deletion, and tags added or removed):
//!
//! ```text
//! GET    /api/v2.0/projects/{p}/repositories                      paged; q=name=~x  (pull)
//! GET    /api/v2.0/projects/{p}/repositories/{r}                  one               (pull)
//! DELETE /api/v2.0/projects/{p}/repositories/{r}                  every artifact    (delete)
//! GET    /api/v2.0/projects/{p}/repositories/{r}/artifacts        paged; with_tag   (pull)
//! GET    /api/v2.0/projects/{p}/repositories/{r}/artifacts/{ref}  by digest or tag  (pull)
//! DELETE /api/v2.0/projects/{p}/repositories/{r}/artifacts/{ref}  with its tags     (delete)
//! POST   …/artifacts/{ref}/tags  {"name":"v2"}                     201               (push)
//! DELETE …/artifacts/{ref}/tags/{tag}                              the tag only      (delete)
//! ```
//!
//! `{r}` is the repository name without its project, URL-encoded twice
//! where it holds a slash (`a%252Fb`), as Harbor asks. Writes go through
//! the same engine operations as the registry API's, under the same
//! rules: refused in read-only mode, deletes refused when deletes are
//! disabled, tags refused in proxy cache projects (`router.rs` and
//! [`handle`]).

use berth_engine::artifacts::Artifact;
use berth_engine::{Digest, Reference, RepoName, Tag};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::{created, not_found, ok_json, read_json, time};
use crate::errors::ApiError;
use crate::http::{blocking, empty, App, Body};
use crate::limits::RequestBody;
use crate::registries_api::paged_with;
use crate::router::{percent_decode, Query};

/// What Harbor shows for a time that never was (a never-pulled artifact).
const NEVER: &str = "0001-01-01T00:00:00.000Z";

/// An artifacts API endpoint: the project, the repository (as in the
/// path, still encoded once), the reference, the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    ListRepos(&'a str),
    GetRepo(&'a str, &'a str),
    DeleteRepo(&'a str, &'a str),
    ListArtifacts(&'a str, &'a str),
    GetArtifact(&'a str, &'a str, &'a str),
    DeleteArtifact(&'a str, &'a str, &'a str),
    AddTag(&'a str, &'a str, &'a str),
    DeleteTag(&'a str, &'a str, &'a str, &'a str),
}

impl Endpoint<'_> {
    /// Whether it changes stored content (refused in read-only mode).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Endpoint::DeleteRepo(..)
                | Endpoint::DeleteArtifact(..)
                | Endpoint::AddTag(..)
                | Endpoint::DeleteTag(..)
        )
    }

    /// Whether it deletes content (refused when deletes are disabled).
    pub fn deletes(&self) -> bool {
        matches!(
            self,
            Endpoint::DeleteRepo(..) | Endpoint::DeleteArtifact(..) | Endpoint::DeleteTag(..)
        )
    }
}

/// `POST …/tags` (Harbor's `Tag`: only its name is read).
#[derive(Debug, Deserialize)]
struct TagReq {
    name: String,
}

/// The full repository name of `{p}/{r}`: `r` decoded once more (the
/// router decoded the path once; Harbor clients encode slashes twice).
fn repo_name(project: &str, r: &str) -> Result<RepoName, ApiError> {
    Ok(RepoName::parse(&format!(
        "{project}/{}",
        percent_decode(r)
    ))?)
}

/// Runs an artifacts endpoint for the caller its guard admitted.
pub async fn handle(
    app: &App,
    endpoint: Endpoint<'_>,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    use Endpoint as E;
    let query = Query(parts.uri.query().unwrap_or(""));
    match endpoint {
        E::ListRepos(project) => list_repos(app, query, project).await,
        E::GetRepo(p, r) => {
            let repo = repo_name(p, r)?;
            project_exists(app, p)?;
            let rr = repo.clone();
            let found = blocking(app, move |e| e.repository(&rr))
                .await??
                .ok_or_else(|| not_found(format!("repository {repo} not found")))?;
            ok_json(&repo_json(app, &found)?)
        }
        E::DeleteRepo(p, r) => {
            let repo = repo_name(p, r)?;
            let rr = repo.clone();
            let n = blocking(app, move |e| e.delete_repository(&rr)).await??;
            if n == 0 {
                return Err(not_found(format!("repository {repo} not found")));
            }
            tracing::info!(target: "berth::auth", %repo, artifacts = n, "repository deleted");
            Ok(empty(StatusCode::OK))
        }
        E::ListArtifacts(p, r) => list_artifacts(app, query, p, r).await,
        E::GetArtifact(p, r, reference) => {
            let repo = repo_name(p, r)?;
            let (art, (all, pulled)) = artifact(app, &repo, reference).await?;
            ok_json(&artifact_json(app, &repo, &art, (&all, &pulled), true)?)
        }
        E::DeleteArtifact(p, r, reference) => {
            let repo = repo_name(p, r)?;
            let (art, _) = artifact(app, &repo, reference).await?;
            let (rr, d) = (repo.clone(), art.digest.clone());
            blocking(app, move |e| e.delete_manifest(&rr, &d)).await??;
            Ok(empty(StatusCode::OK))
        }
        E::AddTag(p, r, reference) => {
            crate::proxy_cache::refuse_push(app, p).await?;
            let repo = repo_name(p, r)?;
            let req: TagReq = read_json(body).await?;
            let tag = Tag::parse(&req.name)?;
            let (art, _) = artifact(app, &repo, reference).await?;
            add_tag(app, &repo, &art.digest, tag).await?;
            Ok(created(format!(
                "/api/v2.0/projects/{p}/repositories/{r}/artifacts/{}/tags/{}",
                art.digest, req.name
            )))
        }
        E::DeleteTag(p, r, reference, tag) => {
            let repo = repo_name(p, r)?;
            let (art, _) = artifact(app, &repo, reference).await?;
            let tag = Tag::parse(tag)?;
            if !art.tags.iter().any(|t| t == tag.as_str()) {
                return Err(not_found(format!(
                    "tag {tag} of {repo}@{} not found",
                    art.digest
                )));
            }
            let rr = repo.clone();
            blocking(app, move |e| e.delete_tag(&rr, &tag)).await??;
            Ok(empty(StatusCode::OK))
        }
    }
}

fn project_exists(app: &App, project: &str) -> Result<(), ApiError> {
    match app.engine.project(project)? {
        Some(_) => Ok(()),
        None => Err(not_found(format!("project {project} not found"))),
    }
}

async fn list_repos(
    app: &App,
    query: Query<'_>,
    project: &str,
) -> Result<Response<Body>, ApiError> {
    project_exists(app, project)?;
    let p = project.to_owned();
    // Names first (cheap), summaries for the page only.
    let all = blocking(app, move |e| e.repository_names_of(&p)).await??;
    // Harbor's `q=name=~x` (substring) and `q=name=x` (exact).
    let filter = query.get("q").map(|q| q.into_owned());
    let matches = |name: &str| match filter.as_deref() {
        None | Some("") => true,
        Some(q) => match (q.strip_prefix("name=~"), q.strip_prefix("name=")) {
            (Some(sub), _) => name.contains(sub),
            (None, Some(exact)) => name == exact,
            _ => true,
        },
    };
    let items: Vec<_> = all.into_iter().filter(|n| matches(n.as_str())).collect();
    paged_with(
        query,
        &format!("/api/v2.0/projects/{project}/repositories"),
        &items,
        |name| match app.engine.repository(name)? {
            Some(s) => repo_json(app, &s),
            // Emptied since it was listed.
            None => {
                Ok(json!({"name": name.as_str(), "artifact_count": 0, "pull_count": 0, "size": 0}))
            }
        },
    )
}

fn repo_json(app: &App, s: &berth_engine::artifacts::RepoSummary) -> Result<Value, ApiError> {
    let project = s.name.as_str().split('/').next().unwrap_or_default();
    let project_id = app.engine.project(project)?.map_or(0, |p| p.id);
    Ok(json!({
        "name": s.name.as_str(),
        "project_id": project_id,
        "description": "",
        "artifact_count": s.artifact_count,
        "pull_count": s.pull_count,
        "size": s.size,
        "creation_time": time(s.created_ms),
        "update_time": time(s.updated_ms),
    }))
}

/// Every manifest of `repo` (see `Engine::artifacts`), and its pulls.
async fn all_artifacts(app: &App, repo: &RepoName) -> Result<(Vec<Artifact>, Pulled), ApiError> {
    let r = repo.clone();
    Ok(
        blocking(app, move |e| -> Result<_, berth_engine::StorageError> {
            Ok((e.artifacts(&r)?, e.pulls_of(&r)?))
        })
        .await??,
    )
}

/// Pull records of a repository's manifests, by digest.
type Pulled = std::collections::HashMap<Digest, berth_engine::records::PullRecord>;

/// The artifact `reference` (a digest, or a tag) names in `repo`, with
/// every manifest of the repository (for its accessories).
async fn artifact(
    app: &App,
    repo: &RepoName,
    reference: &str,
) -> Result<(Artifact, (Vec<Artifact>, Pulled)), ApiError> {
    let reference = Reference::parse(reference)?;
    let (all, pulled) = all_artifacts(app, repo).await?;
    let found = all.iter().find(|a| match &reference {
        Reference::Digest(d) => &a.digest == d,
        Reference::Tag(t) => a.tags.iter().any(|x| x == t.as_str()),
    });
    match found {
        Some(a) => Ok((a.clone(), (all, pulled))),
        None => Err(not_found(format!(
            "artifact {reference} of {repo} not found"
        ))),
    }
}

async fn list_artifacts(
    app: &App,
    query: Query<'_>,
    project: &str,
    r: &str,
) -> Result<Response<Body>, ApiError> {
    let repo = repo_name(project, r)?;
    project_exists(app, project)?;
    let (all, pulled) = all_artifacts(app, &repo).await?;
    let with_tag = query.get("with_tag").as_deref() != Some("false");
    let top: Vec<&Artifact> = all.iter().filter(|a| !a.nested).collect();
    paged_with(
        query,
        &format!("/api/v2.0/projects/{project}/repositories/{r}/artifacts"),
        &top,
        |a| {
            let mut v = artifact_json(app, &repo, a, (&all, &pulled), with_tag)?;
            if !with_tag {
                v["tags"] = Value::Null;
            }
            Ok(v)
        },
    )
}

/// An artifact in Harbor's `Artifact` shape; `all` the repository's
/// manifests (for accessories) and their pulls.
fn artifact_json(
    app: &App,
    repo: &RepoName,
    a: &Artifact,
    (all, pulled): (&[Artifact], &Pulled),
    with_tag: bool,
) -> Result<Value, ApiError> {
    let project = repo.as_str().split('/').next().unwrap_or_default();
    let project_id = app.engine.project(project)?.map_or(0, |p| p.id);
    let m = &a.record;
    // Harbor's types: by the config's media type (the artifact type), an
    // index is an image.
    let kind = match m.artifact_type.as_deref() {
        Some(t) if t.contains("helm") => "CHART",
        Some(
            "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json",
        ) => "IMAGE",
        Some(_) => "UNKNOWN",
        None if !m.manifests.is_empty() => "IMAGE",
        None => "UNKNOWN",
    };
    let pushed = time(a.in_repo.created_ms);
    let pull_time = pulled
        .get(&a.digest)
        .map_or_else(|| NEVER.to_owned(), |p| time(p.last_ms));
    let tags: Vec<Value> = if with_tag {
        a.tags
            .iter()
            .map(|t| {
                json!({"name": t, "push_time": pushed, "pull_time": pull_time,
                       "repository_id": 0, "immutable": false})
            })
            .collect()
    } else {
        Vec::new()
    };
    let references: Vec<Value> = m
        .manifests
        .iter()
        .map(|c| json!({"child_digest": c.as_str()}))
        .collect();
    let accessories: Vec<Value> = all
        .iter()
        .filter(|x| x.record.subject.as_ref() == Some(&a.digest))
        .map(|x| -> Result<Value, ApiError> {
            Ok(json!({
                "digest": x.digest.as_str(),
                "type": x.record.artifact_type.clone().unwrap_or_default(),
                "size": app.engine.artifact_size(&x.record)?,
                "subject_artifact_digest": a.digest.as_str(),
                "creation_time": time(x.in_repo.created_ms),
            }))
        })
        .collect::<Result<_, _>>()?;
    Ok(json!({
        "type": kind,
        "media_type": m.artifact_type.clone().unwrap_or_else(|| m.media_type.clone()),
        "manifest_media_type": m.media_type,
        "artifact_type": m.artifact_type,
        "project_id": project_id,
        "repository_name": repo.as_str(),
        "digest": a.digest.as_str(),
        "size": app.engine.artifact_size(m)?,
        "push_time": pushed,
        "pull_time": pull_time,
        "annotations": m.annotations,
        "tags": tags,
        "references": references,
        "accessories": accessories,
    }))
}

/// Points `tag` at manifest `digest` of `repo` by putting the stored
/// manifest again with the tag: the registry API's own put, so every rule
/// of a tag push holds (a chart version tag included).
async fn add_tag(app: &App, repo: &RepoName, digest: &Digest, tag: Tag) -> Result<(), ApiError> {
    let (r, d) = (repo.clone(), digest.clone());
    blocking(app, move |e| -> Result<(), ApiError> {
        let m = e
            .get_manifest(&r, &Reference::Digest(d.clone()))?
            .ok_or_else(|| not_found(format!("artifact {d} of {r} not found")))?;
        let mut put = crate::manifest_parse::parse(Some(&m.media_type), m.body.to_vec())?;
        put.digest = Some(d);
        put.tags = vec![tag];
        put.chart = crate::charts::oci::chart_entry_for_push(e, &r, &put);
        e.put_manifest(&r, put)?;
        Ok(())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_are_decoded_once_more() {
        assert_eq!(repo_name("p", "a%2Fb").unwrap().as_str(), "p/a/b");
        assert_eq!(repo_name("p", "app").unwrap().as_str(), "p/app");
        assert!(repo_name("p", "A%2F..").is_err());
    }
}
