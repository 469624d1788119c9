//! Manifests: pull, push, delete (end-3, end-7a/b, end-9).
//!
//! Manifest reads are the registry's hottest path: they run inline on the
//! async worker (index point reads, no fsync; in cluster mode the database
//! call is awaited), and the body is served from the engine's `Arc<[u8]>`
//! without copying.

use crate::limits::RequestBody;
use berth_engine::{Digest, Manifest, Reference, RepoName, Tag};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::{Method, Response, StatusCode};

use crate::errors::{ApiError, Code};
use crate::http::{
    blocking, drain, empty, hv, set_content_length, App, Body, HDR_CONTENT_DIGEST, HDR_OCI_SUBJECT,
    HDR_OCI_TAG,
};
use crate::manifest_parse::{self, MAX_MANIFEST_BYTES};
use crate::router::Query;

fn unknown(repo: &RepoName, reference: &Reference) -> ApiError {
    ApiError::new(
        Code::ManifestUnknown,
        format!("manifest {reference} is not known in repository {repo}"),
    )
}

/// `GET|HEAD /v2/<name>/manifests/<tag|digest>`: the manifest as pushed,
/// with its media type as `Content-Type`. A reference that is neither a
/// valid tag nor a valid digest names no manifest: `404 MANIFEST_UNKNOWN`,
/// as distribution's router answers (its reference pattern does not match)
/// and the conformance suite expects; only a PUT rejects it (`400`).
#[derive(Debug)]
pub struct GetManifest {
    pub repo: RepoName,
    pub reference: Reference,
    pub head: bool,
}

impl GetManifest {
    pub fn parse(name: &str, reference: &str, method: &Method) -> Result<GetManifest, ApiError> {
        let repo = RepoName::parse(name)?;
        let reference = Reference::parse(reference).map_err(|e| {
            ApiError::new(
                Code::ManifestUnknown,
                format!("no manifest in repository {repo}: {e}"),
            )
        })?;
        Ok(GetManifest {
            repo,
            reference,
            head: *method == Method::HEAD,
        })
    }

    pub async fn apply(self, app: &App) -> Result<Response<Body>, ApiError> {
        let found = app
            .engine
            .get_manifest_async(&self.repo, &self.reference)
            .await?;
        let Some(m) = found else {
            return Err(unknown(&self.repo, &self.reference));
        };
        if !self.head && !app.read_only {
            app.pulls.record(&self.repo, &m.digest);
        }
        Ok(manifest_response(&m, self.head))
    }
}

/// The answer to a manifest GET (or HEAD): its bytes as pushed, its media
/// type as `Content-Type`, its digest.
pub fn manifest_response(m: &Manifest, head: bool) -> Response<Body> {
    let len = m.body.len() as u64;
    let mut res = if head {
        let mut res = empty(StatusCode::OK);
        set_content_length(&mut res, len);
        res
    } else {
        Response::new(Body::new(Bytes::from_owner(m.body.clone())))
    };
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&m.media_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(HDR_CONTENT_DIGEST, hv(m.digest.as_str()));
    res
}

/// `PUT /v2/<name>/manifests/<tag|digest>[?tag=<t>&tag=<t>…]` with the
/// manifest as body (at most 4 MiB, else `413`). A digest reference is
/// verified against the body and may carry `tag` parameters (end-7b), each
/// echoed in an `OCI-Tag` header. `201` with `Location`,
/// `Docker-Content-Digest`, and `OCI-Subject` when the manifest has a
/// subject.
#[derive(Debug)]
pub struct PutManifest {
    pub repo: RepoName,
    pub reference: Reference,
    /// Tags to set: the reference if it is one, else the `tag` parameters.
    pub tags: Vec<Tag>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
}

impl PutManifest {
    pub fn parse(
        name: &str,
        reference: &str,
        query: Query<'_>,
        headers: &HeaderMap,
    ) -> Result<PutManifest, ApiError> {
        let repo = RepoName::parse(name)?;
        let reference = Reference::parse(reference)?;
        let tags = match &reference {
            Reference::Tag(t) => vec![t.clone()],
            Reference::Digest(_) => {
                let mut tags = Vec::new();
                for t in query.all("tag") {
                    let tag = Tag::parse(&t)?;
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
                tags
            }
        };
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_length = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(PutManifest {
            repo,
            reference,
            tags,
            content_type,
            content_length,
        })
    }

    pub async fn apply(self, app: &App, body: RequestBody) -> Result<Response<Body>, ApiError> {
        let PutManifest {
            repo,
            reference,
            tags,
            content_type,
            content_length,
        } = self;
        let body = read_limited(body, content_length).await?;
        app.metrics.received(body.len() as u64);
        let by_digest = match &reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => None,
        };
        let echo_tags = if by_digest.is_some() {
            tags.clone()
        } else {
            Vec::new()
        };
        let r = repo.clone();
        // Parsing (up to 4 MiB of JSON) and the synced index write both run
        // off the async path.
        let (digest, subject) = blocking(
            app,
            move |e| -> Result<(Digest, Option<Digest>), ApiError> {
                let mut put = manifest_parse::parse(content_type.as_deref(), body)?;
                put.digest = by_digest;
                put.tags = tags;
                // The one hook of the chart repository in the OCI API: a Helm
                // chart pushed to project/name with its version tag is
                // indexed in the same batch as the manifest.
                put.chart = crate::charts::oci::chart_entry_for_push(e, &r, &put);
                let subject = put.subject.clone();
                let digest = e.put_manifest(&r, put)?;
                Ok((digest, subject))
            },
        )
        .await??;
        let mut res = empty(StatusCode::CREATED);
        let h = res.headers_mut();
        h.insert(LOCATION, hv(&format!("/v2/{repo}/manifests/{digest}")));
        h.insert(HDR_CONTENT_DIGEST, hv(digest.as_str()));
        if let Some(s) = subject {
            h.insert(HDR_OCI_SUBJECT, hv(s.as_str()));
        }
        for t in &echo_tags {
            h.append(HDR_OCI_TAG, hv(t.as_str()));
        }
        Ok(res)
    }
}

/// A refused manifest body up to this size is still read (and dropped)
/// before the `413` goes out, so a client busy sending it gets the answer
/// rather than a reset connection; beyond it the connection is cut.
const DRAIN_LIMIT: usize = 4 * MAX_MANIFEST_BYTES;

/// Reads a manifest body, refusing more than [`MAX_MANIFEST_BYTES`] (by
/// `Content-Length` up front, else while reading).
async fn read_limited(
    mut body: RequestBody,
    content_length: Option<u64>,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::ManifestTooLarge,
            format!("manifests are limited to {MAX_MANIFEST_BYTES} bytes"),
        )
    };
    if let Some(n) = content_length.filter(|&n| n > MAX_MANIFEST_BYTES as u64) {
        if n <= DRAIN_LIMIT as u64 {
            drain(body, DRAIN_LIMIT).await;
        }
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(content_length.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                Code::ManifestInvalid,
                format!("reading the request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_MANIFEST_BYTES {
                drain(
                    body,
                    DRAIN_LIMIT - buf.len() - data.len().min(DRAIN_LIMIT - buf.len()),
                )
                .await;
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// `DELETE /v2/<name>/manifests/<tag|digest>`: by digest, the manifest and
/// every tag pointing at it; by tag, just the tag. `202`.
#[derive(Debug)]
pub struct DeleteManifest {
    pub repo: RepoName,
    pub reference: Reference,
}

impl DeleteManifest {
    pub fn parse(name: &str, reference: &str) -> Result<DeleteManifest, ApiError> {
        Ok(DeleteManifest {
            repo: RepoName::parse(name)?,
            reference: Reference::parse(reference)?,
        })
    }

    pub async fn apply(self, app: &App) -> Result<Response<Body>, ApiError> {
        let DeleteManifest { repo, reference } = self;
        let (r, rf) = (repo.clone(), reference.clone());
        let deleted = blocking(app, move |e| match &rf {
            Reference::Digest(d) => e.delete_manifest(&r, d),
            Reference::Tag(t) => e.delete_tag(&r, t),
        })
        .await??;
        if deleted {
            Ok(empty(StatusCode::ACCEPTED))
        } else {
            Err(unknown(&repo, &reference))
        }
    }
}
