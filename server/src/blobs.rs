//! Blob reads and deletes (end-2, end-10).
//!
//! Range requests: one `bytes=` range (`a-b`, `a-`, `-n`) is served as `206`
//! with `Content-Range`. A range outside the blob, or a `bytes=` range that
//! does not parse, is `416 RANGE_INVALID` with `Content-Range: bytes */SIZE`
//! (a registry client that sends a broken range has a bug worth surfacing).
//! As RFC 9110 allows, a Range in another unit or with several ranges is
//! ignored and the whole blob is served.

use std::sync::Arc;

use berth_engine::{Digest, RepoName};
use hyper::header::{HeaderValue, ACCEPT_RANGES, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use crate::errors::{unsatisfied_range, ApiError, Code};
use crate::http::{blocking, empty, hv, set_content_length, App, Body, HDR_CONTENT_DIGEST};
use crate::sendfile::Lane;

pub use berth_wire::range::ByteRange;

/// `GET|HEAD /v2/<name>/blobs/<digest>` with an optional `Range: bytes=…`.
#[derive(Debug)]
pub struct GetBlob {
    pub repo: RepoName,
    pub digest: Digest,
    pub head: bool,
    pub range: Option<ByteRange>,
    /// The connection's sendfile lane (none under TLS).
    pub lane: Option<Arc<Lane>>,
}

impl GetBlob {
    pub fn parse(
        name: &str,
        digest: &str,
        method: &Method,
        parts: &Parts,
    ) -> Result<GetBlob, ApiError> {
        let headers = &parts.headers;
        let head = *method == Method::HEAD;
        Ok(GetBlob {
            repo: RepoName::parse(name)?,
            digest: Digest::parse(digest)?,
            head,
            // A HEAD answers for the whole blob.
            range: if head {
                None
            } else {
                headers
                    .get(RANGE)
                    .and_then(|v| ByteRange::parse(v.as_bytes()))
            },
            lane: parts.extensions.get::<Arc<Lane>>().cloned(),
        })
    }

    pub async fn apply(self, app: &App) -> Result<Response<Body>, ApiError> {
        let GetBlob {
            repo,
            digest,
            head,
            range,
            lane,
        } = self;
        if head {
            let (repo2, digest2) = (repo.clone(), digest.clone());
            let info = blocking(app, move |e| e.stat_blob(&repo2, &digest2)).await??;
            let Some(info) = info else {
                return Err(ApiError::new(
                    Code::BlobUnknown,
                    format!("blob {digest} is not known in repository {repo}"),
                ));
            };
            let mut res = empty(StatusCode::OK);
            blob_headers(&mut res, &digest);
            set_content_length(&mut res, info.size);
            return Ok(res);
        }
        let d = digest.clone();
        let read = blocking(app, move |e| -> Result<_, ApiError> {
            let Some(range) = range else {
                let (_, data) = e.read_blob(&repo, &d, None)?;
                return Ok((None, data));
            };
            let Some(size) = e.stat_blob(&repo, &d)?.map(|i| i.size) else {
                return Err(ApiError::new(
                    Code::BlobUnknown,
                    format!("blob {d} is not known in repository {repo}"),
                ));
            };
            let Some(r) = range.resolve(size) else {
                let detail = match range {
                    ByteRange::Malformed => "malformed Range header".to_owned(),
                    _ => format!("range not satisfiable for blob {d} of {size} bytes"),
                };
                return Err(ApiError::new(Code::RangeInvalid, detail)
                    .with_header(CONTENT_RANGE, unsatisfied_range(size)));
            };
            let (_, data) = e.read_blob(&repo, &d, Some(r.clone()))?;
            Ok((Some((r, size)), data))
        })
        .await??;
        let (partial, data) = read;
        let body = Body::blob(data, lane.as_deref());
        let mut res = Response::new(body);
        blob_headers(&mut res, &digest);
        if let Some((r, size)) = partial {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let cr = if r.is_empty() {
                format!("bytes */{size}")
            } else {
                format!("bytes {}-{}/{size}", r.start, r.end - 1)
            };
            res.headers_mut().insert(CONTENT_RANGE, hv(&cr));
        }
        Ok(res)
    }
}

pub(crate) fn blob_headers(res: &mut Response<Body>, digest: &Digest) {
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(HDR_CONTENT_DIGEST, hv(digest.as_str()));
}

/// `DELETE /v2/<name>/blobs/<digest>`: unlinks the blob from the
/// repository (the bytes go when GC finds them unreferenced). `202`.
#[derive(Debug)]
pub struct DeleteBlob {
    pub repo: RepoName,
    pub digest: Digest,
}

impl DeleteBlob {
    pub fn parse(name: &str, digest: &str) -> Result<DeleteBlob, ApiError> {
        Ok(DeleteBlob {
            repo: RepoName::parse(name)?,
            digest: Digest::parse(digest)?,
        })
    }

    pub async fn apply(self, app: &App) -> Result<Response<Body>, ApiError> {
        let DeleteBlob { repo, digest } = self;
        let (r, d) = (repo.clone(), digest.clone());
        if blocking(app, move |e| e.unlink_blob(&r, &d)).await?? {
            Ok(empty(StatusCode::ACCEPTED))
        } else {
            Err(ApiError::new(
                Code::BlobUnknown,
                format!("blob {digest} is not known in repository {repo}"),
            ))
        }
    }
}
