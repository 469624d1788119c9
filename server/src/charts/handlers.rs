//! Chart repository endpoints, each a typed request parsed from the wire
//! (`parse`) and applied to the engine (`apply`). See `mod.rs` for paths.

use std::sync::Arc;

use crate::limits::RequestBody;
use berth_engine::{
    Algorithm, ChartBlob, ChartId, ChartVersion, ChartWrite, Digest, Engine, ManifestError,
    RepoName,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, VARY,
};
use hyper::{Response, StatusCode};
use serde_json::Value;

use super::index::{self, Rendered};
use super::oci::{chart_manifest, ChartBlobs};
use super::package::{self, Metadata};
use super::{multipart, project, UploadKind};
use crate::auth::{self, Principal, Resource};
use crate::errors::{ApiError, Code};
use crate::http::{drain, empty, hv, set_content_length, App, Body};
use crate::router::Query;

/// Runs `f` on the blocking pool (engine writes fsync; renders and
/// archive checks are CPU work). Needs no caller: every permission was
/// checked before the handler ran.
async fn blocking<T, F>(app: &App, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    crate::http::blocking(app, f).await?
}

fn not_found(message: String) -> ApiError {
    ApiError::new(Code::NotFound, message)
}

fn bad_request(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(Code::BadRequest, message)
}

/// A JSON response.
pub fn json(status: StatusCode, v: &Value) -> Response<Body> {
    let mut res = Response::new(Body::new(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn header(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// True if `Accept-Encoding` admits gzip (`gzip;q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    header(headers, ACCEPT_ENCODING).is_some_and(|v| {
        v.split(',').any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
    })
}

/// `GET|HEAD /chartrepo/{p}/index.yaml`, `/{p}/index.yaml` (one project)
/// and `/chartrepo/index.yaml` (every readable project). `ETag`,
/// `Last-Modified`, `304` on `If-None-Match`/`If-Modified-Since`, gzip on
/// `Accept-Encoding: gzip`.
pub struct GetIndex {
    project: Option<RepoName>,
    headers: HeaderMap,
}

impl GetIndex {
    pub fn parse(p: Option<&str>, headers: &HeaderMap) -> Result<GetIndex, ApiError> {
        Ok(GetIndex {
            project: p.map(project).transpose()?,
            headers: headers.clone(),
        })
    }

    /// `caller` is who the router admitted: for one project, one who may
    /// read it; for the global index, anyone (it lists what they may read).
    pub async fn apply(
        self,
        app: &Arc<App>,
        caller: &Principal,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        let rendered = match &self.project {
            Some(p) => project_index(app, p).await?,
            None => global_index(app, caller).await?,
        };
        let not_modified = match header(&self.headers, IF_NONE_MATCH) {
            Some(inm) => inm
                .split(',')
                .any(|t| t.trim() == rendered.etag || t.trim() == "*"),
            None => header(&self.headers, IF_MODIFIED_SINCE)
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .and_then(|d| d.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|since| since.as_secs() >= rendered.modified_ms / 1000),
        };
        let gzip = accepts_gzip(&self.headers);
        let mut res = if not_modified {
            empty(StatusCode::NOT_MODIFIED)
        } else {
            let body = if gzip {
                let r = rendered.clone();
                let gz = tokio::task::spawn_blocking(move || r.gzip())
                    .await
                    .map_err(ApiError::internal)?;
                Body::new(gz)
            } else {
                rendered.body()
            };
            if head {
                let mut res = empty(StatusCode::OK);
                let len = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
                set_content_length(&mut res, len);
                res
            } else {
                Response::new(body)
            }
        };
        let h = res.headers_mut();
        h.insert(ETAG, hv(&rendered.etag));
        h.insert(LAST_MODIFIED, hv(&index::http_date(rendered.modified_ms)));
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        if !not_modified {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-yaml"));
            if gzip {
                h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
        }
        Ok(res)
    }
}

/// One project's index: the cached render if the project's generation is
/// unchanged (one index point read), else a splice of the previous
/// generation's render with the charts changed since re-rendered (or a
/// full render when there is none, or the changes are not known), cached.
/// IMPORTANT: the generation is read on every request, after it arrived,
/// and a render is served only for that generation or a later one, so no
/// request sees an index older than a change acknowledged before it.
async fn project_index(app: &Arc<App>, p: &RepoName) -> Result<Arc<Rendered>, ApiError> {
    let generation = app.engine.chart_repo(p)?.map_or(0, |r| r.generation);
    let slot = format!("p:{p}");
    let key = vec![(p.to_string(), generation)];
    if let Some(r) = app.charts.cache.get(&slot, &key) {
        return Ok(r);
    }
    let prev = app.charts.cache.latest(&slot);
    let p = p.clone();
    let rendered = blocking(app, move |e| {
        let since = index::since(prev.as_deref());
        let (rec, delta) = e.chart_index_since(&p, since)?;
        if let Some(prev) = prev.as_ref().filter(|_| since == Some(rec.generation)) {
            // Another request made it meanwhile.
            return Ok(prev.clone());
        }
        Ok(Arc::new(index::splice(
            prev.as_deref(),
            p.as_str(),
            rec,
            delta,
        )))
    })
    .await?;
    app.charts.cache.put(&slot, rendered.clone());
    Ok(rendered)
}

/// Harbor's `/chartrepo/index.yaml`: every project the caller may read,
/// entries named `project/chart`, URLs relative to `/chartrepo/`.
async fn global_index(app: &Arc<App>, caller: &Principal) -> Result<Arc<Rendered>, ApiError> {
    let pull = berth_engine::Actions::of(&[berth_engine::Action::Pull]);
    let mut projects = Vec::new();
    for (p, rec) in app.engine.chart_projects()? {
        if auth::permits(app, caller, Resource::Project(p.as_str()), pull)? {
            projects.push((p, rec));
        }
    }
    let key: Vec<(String, u64)> = projects
        .iter()
        .map(|(p, r)| (p.to_string(), r.generation))
        .collect();
    if let Some(r) = app.charts.cache.get("*", &key) {
        return Ok(r);
    }
    let rendered = blocking(app, move |e| {
        let mut all = Vec::with_capacity(projects.len());
        for (p, _) in &projects {
            let (rec, versions) = e.chart_index(p)?;
            all.push((p.to_string(), rec, versions));
        }
        let key = all
            .iter()
            .map(|(p, r, _)| (p.clone(), r.generation))
            .collect();
        let modified = all.iter().map(|(_, r, _)| r.updated_ms).max().unwrap_or(0);
        let body = index::render(&all, true);
        Ok(Arc::new(Rendered::new(key, body, modified)))
    })
    .await?;
    app.charts.cache.put("*", rendered.clone());
    Ok(rendered)
}

/// Finds the chart version a `{name}-{version}` file stem names. Names may
/// contain `-`, so every split whose right side is a valid version is
/// tried, leftmost first.
fn resolve_stem(
    e: &Engine,
    p: &RepoName,
    stem: &str,
) -> Result<Option<(ChartId, berth_engine::ChartRecord)>, ApiError> {
    for (i, _) in stem.match_indices('-') {
        let (name, version) = (&stem[..i], &stem[i + 1..]);
        let Ok(id) = ChartId::parse(p.as_str(), name, version) else {
            continue;
        };
        if let Some(rec) = e.get_chart(&id)? {
            return Ok(Some((id, rec)));
        }
    }
    Ok(None)
}

/// `GET|HEAD …/charts/{name}-{version}.tgz` and `….tgz.prov`: the chart
/// archive or provenance file, byte for byte as uploaded.
pub struct GetFile {
    project: RepoName,
    stem: String,
    prov: bool,
}

impl GetFile {
    pub fn parse(p: &str, file: &str) -> Result<GetFile, ApiError> {
        let (stem, prov) = if let Some(s) = file.strip_suffix(".tgz.prov") {
            (s, true)
        } else if let Some(s) = file.strip_suffix(".tgz") {
            (s, false)
        } else {
            return Err(not_found(format!(
                "{file:?} is not a chart file (NAME-VERSION.tgz or .tgz.prov)"
            )));
        };
        Ok(GetFile {
            project: project(p)?,
            stem: stem.to_owned(),
            prov,
        })
    }

    pub async fn apply(self, app: &Arc<App>, head: bool) -> Result<Response<Body>, ApiError> {
        let GetFile {
            project,
            stem,
            prov,
            ..
        } = self;
        let (digest, data) = blocking(app, move |e| {
            let Some((id, rec)) = resolve_stem(e, &project, &stem)? else {
                return Err(not_found(format!(
                    "chart {stem} not found in project {project}"
                )));
            };
            let blob = if prov {
                rec.prov
                    .ok_or_else(|| not_found(format!("chart {id} has no provenance file")))?
            } else {
                rec.chart
            };
            let (_, data) = e.read_blob(id.repo(), &blob.digest, None)?;
            Ok((blob.digest, data))
        })
        .await?;
        let len = data.len() as u64;
        let mut res = if head {
            let mut res = empty(StatusCode::OK);
            set_content_length(&mut res, len);
            res
        } else {
            // A chart still arriving from the bucket streams without
            // blocking; chart files are small, so no sendfile lane.
            Response::new(Body::blob(data, None))
        };
        let h = res.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if prov {
                "application/pgp-signature"
            } else {
                "application/gzip"
            }),
        );
        h.insert(ETAG, hv(&format!("\"{digest}\"")));
        Ok(res)
    }
}

/// A version as the ChartMuseum API shows it (`ChartVersion` JSON).
fn version_json(v: &ChartVersion) -> Value {
    Value::Object(index::entry_value(v, ""))
}

/// `GET /api/…/{p}/charts`: every chart, `{name: [versions newest
/// first]}`; `GET /api/…/{p}/charts/{name}`: that chart's versions.
pub struct ListCharts {
    project: RepoName,
    name: Option<String>,
}

impl ListCharts {
    pub fn parse(p: &str, name: Option<&str>) -> Result<ListCharts, ApiError> {
        Ok(ListCharts {
            project: project(p)?,
            name: name.map(str::to_owned),
        })
    }

    pub async fn apply(self, app: &Arc<App>) -> Result<Response<Body>, ApiError> {
        let ListCharts { project, name, .. } = self;
        blocking(app, move |e| {
            let versions = e.list_charts(&project, name.as_deref())?;
            let sorted = index::sorted_entries(&versions, "");
            match name {
                Some(n) => {
                    let Some(vs) = sorted.get(&n) else {
                        return Err(not_found(format!(
                            "chart {n} not found in project {project}"
                        )));
                    };
                    let list: Vec<Value> = vs.iter().map(|v| version_json(v)).collect();
                    Ok(json(StatusCode::OK, &Value::Array(list)))
                }
                None => {
                    let map: serde_json::Map<String, Value> = sorted
                        .iter()
                        .map(|(k, vs)| {
                            (
                                k.clone(),
                                Value::Array(vs.iter().map(|v| version_json(v)).collect()),
                            )
                        })
                        .collect();
                    Ok(json(StatusCode::OK, &Value::Object(map)))
                }
            }
        })
        .await
    }
}

/// `GET /api/…/{p}/charts/{name}/{version}` (`latest`: the newest).
pub struct GetVersion {
    project: RepoName,
    name: String,
    version: String,
}

impl GetVersion {
    pub fn parse(p: &str, name: &str, version: &str) -> Result<GetVersion, ApiError> {
        Ok(GetVersion {
            project: project(p)?,
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }

    pub async fn apply(self, app: &Arc<App>) -> Result<Response<Body>, ApiError> {
        let GetVersion {
            project,
            name,
            version,
            ..
        } = self;
        blocking(app, move |e| {
            let not_found = || {
                not_found(format!(
                    "chart {name}-{version} not found in project {project}"
                ))
            };
            let found = if version == "latest" {
                let versions = e.list_charts(&project, Some(&name))?;
                let sorted = index::sorted_entries(&versions, "");
                sorted
                    .get(&name)
                    .and_then(|vs| vs.first())
                    .map(|v| version_json(v))
            } else {
                let id =
                    ChartId::parse(project.as_str(), &name, &version).map_err(|_| not_found())?;
                e.get_chart(&id)?.map(|record| {
                    version_json(&ChartVersion {
                        name: name.clone(),
                        version: version.clone(),
                        record,
                    })
                })
            };
            found
                .map(|v| json(StatusCode::OK, &v))
                .ok_or_else(not_found)
        })
        .await
    }
}

/// `POST /api/…/{p}/charts[?force]` and `POST /api/…/{p}/prov[?force]`.
/// `201 {"saved": true}`; `409` if the version (or its provenance file)
/// exists, unless overwrite is allowed by config or `?force`; `400` with
/// the reason for a bad chart, nothing stored.
pub struct Upload {
    project: RepoName,
    kind: UploadKind,
    force: bool,
    boundary: Option<String>,
    content_length: Option<u64>,
}

impl Upload {
    pub fn parse(
        p: &str,
        query: Query<'_>,
        headers: &HeaderMap,
        kind: UploadKind,
    ) -> Result<Upload, ApiError> {
        let force = query
            .get("force")
            .is_some_and(|v| !matches!(v.as_ref(), "false" | "0"));
        let boundary = header(headers, CONTENT_TYPE).and_then(multipart::boundary);
        let content_length = header(headers, CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
        Ok(Upload {
            project: project(p)?,
            kind,
            force,
            boundary,
            content_length,
        })
    }

    pub async fn apply(
        self,
        app: &Arc<App>,
        body: RequestBody,
    ) -> Result<Response<Body>, ApiError> {
        let limits = app.charts.limits;
        let max = limits.max_chart_bytes + limits.max_prov_bytes + (64 << 10);
        let body = read_limited(body, self.content_length, max).await?;
        let (chart, prov) = match (&self.boundary, self.kind) {
            (Some(b), _) => {
                let mut fields = multipart::parse(&body, b)
                    .map_err(|e| bad_request(format!("upload form: {e}")))?;
                (fields.remove("chart"), fields.remove("prov"))
            }
            (None, UploadKind::Chart) => (Some(body), None),
            (None, UploadKind::Prov) => (None, Some(body)),
        };
        let write = if self.force || app.charts.allow_overwrite {
            ChartWrite::Replace
        } else {
            ChartWrite::Create
        };
        let project = self.project;
        blocking(app, move |e| match (chart, prov) {
            (Some(chart), prov) => save_chart(e, &project, &chart, prov.as_deref(), write, &limits),
            (None, Some(prov)) => save_prov(e, &project, &prov, write, &limits),
            (None, None) => Err(bad_request(
                "the upload form has no \"chart\" or \"prov\" field",
            )),
        })
        .await?;
        Ok(json(
            StatusCode::CREATED,
            &serde_json::json!({"saved": true}),
        ))
    }
}

/// Reads an upload body, refusing more than `max` bytes (413).
async fn read_limited(
    mut body: RequestBody,
    content_length: Option<u64>,
    max: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::TooLarge,
            format!("uploads are limited to {max} bytes"),
        )
    };
    if content_length.is_some_and(|n| n > max as u64) {
        drain(body, max).await;
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(content_length.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                drain(body, max).await;
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

fn sha256(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

fn blob_of(data: &[u8]) -> ChartBlob {
    ChartBlob {
        digest: sha256(data),
        size: data.len() as u64,
    }
}

/// An existing version when not overwriting: `409`, with the way out.
fn conflict_hint(e: ManifestError) -> ApiError {
    match e {
        ManifestError::ChartExists { .. } => ApiError::new(
            Code::Conflict,
            format!("{e} (upload with ?force to overwrite)"),
        ),
        e => e.into(),
    }
}

/// A chart upload, top to bottom: validate everything (nothing is stored
/// for a bad chart), then one engine operation ([`Engine::put_chart`])
/// that stores the blobs and commits manifest, tag, chart entry and the
/// repository's generation in one batch: the whole chart or nothing. Also
/// what `berthctl import chartmuseum` stores each archive with.
pub fn save_chart(
    e: &Engine,
    project: &RepoName,
    chart: &[u8],
    prov: Option<&[u8]>,
    write: ChartWrite,
    limits: &package::Limits,
) -> Result<(), ApiError> {
    let pkg = package::inspect(chart, limits)?;
    let meta = pkg.metadata;
    let digest = sha256(chart);
    if let Some(prov) = prov {
        let p = package::inspect_prov(prov, limits)?;
        if p.name != meta.name || p.version != meta.version {
            return Err(bad_request(format!(
                "the provenance file signs {}-{}, not the uploaded chart {}-{}",
                p.name, p.version, meta.name, meta.version
            )));
        }
        if p.digest.as_ref().is_some_and(|d| d != digest.as_str()) {
            return Err(bad_request(
                "the provenance file's digest does not match the uploaded chart",
            ));
        }
    }
    // The version must be a valid chart id before anything is stored.
    ChartId::parse(project.as_str(), &meta.name, &meta.version)?;
    let config = meta.to_config_json();
    let blobs = ChartBlobs {
        chart: blob_of(chart),
        prov: prov.map(blob_of),
        config: config.clone(),
    };
    let mut bytes: Vec<&[u8]> = vec![config.as_bytes(), chart];
    bytes.extend(prov);
    e.put_chart(project, &bytes, chart_manifest(&meta, &blobs, write))
        .map_err(conflict_hint)?;
    Ok(())
}

/// A provenance upload for a stored chart: the chart's manifest is
/// replaced by one with the provenance layer, the provenance blob stored
/// with it, in one engine operation.
fn save_prov(
    e: &Engine,
    project: &RepoName,
    prov: &[u8],
    write: ChartWrite,
    limits: &package::Limits,
) -> Result<(), ApiError> {
    let p = package::inspect_prov(prov, limits)?;
    let id = ChartId::parse(project.as_str(), &p.name, &p.version)?;
    let Some(rec) = e.get_chart(&id)? else {
        return Err(not_found(format!(
            "chart {id} not found in project {project}; upload the chart before its provenance file"
        )));
    };
    if p.digest
        .as_ref()
        .is_some_and(|d| d != rec.chart.digest.as_str())
    {
        return Err(bad_request(format!(
            "the provenance file's digest does not match chart {id}"
        )));
    }
    if rec.prov.is_some() && write == ChartWrite::Create {
        return Err(ApiError::new(
            Code::Conflict,
            format!("chart {id} already has a provenance file (upload with ?force to overwrite)"),
        ));
    }
    let mut meta: Metadata = serde_json::from_str(&rec.metadata).unwrap_or_default();
    meta.name = id.name().to_owned();
    meta.version = id.version().to_owned();
    let blobs = ChartBlobs {
        config: rec.metadata.clone(),
        chart: rec.chart.clone(),
        prov: Some(blob_of(prov)),
    };
    e.put_chart(
        project,
        &[prov],
        chart_manifest(&meta, &blobs, ChartWrite::Replace),
    )?;
    Ok(())
}

/// `DELETE /api/…/{p}/charts/{name}[/{version}]`: one version or every
/// version, with their OCI manifests. `200 {"deleted": true}`.
pub struct Delete {
    project: RepoName,
    name: String,
    version: Option<String>,
}

impl Delete {
    pub fn parse(p: &str, name: &str, version: Option<&str>) -> Result<Delete, ApiError> {
        Ok(Delete {
            project: project(p)?,
            name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }

    pub async fn apply(self, app: &Arc<App>) -> Result<Response<Body>, ApiError> {
        let Delete {
            project,
            name,
            version,
            ..
        } = self;
        blocking(app, move |e| {
            let n = e.delete_charts(&project, &name, version.as_deref())?;
            if n == 0 {
                let what = match &version {
                    Some(v) => format!("{name}-{v}"),
                    None => name.clone(),
                };
                return Err(not_found(format!(
                    "chart {what} not found in project {project}"
                )));
            }
            Ok(json(StatusCode::OK, &serde_json::json!({"deleted": true})))
        })
        .await
    }
}
