//! Blob reads and deletes (end-2, end-10).
//!
//! Range requests: one `bytes=` range (`a-b`, `a-`, `-n`) is served as `206`
//! with `Content-Range`. A range outside the blob, or a `bytes=` range that
//! does not parse, is `416 RANGE_INVALID` with `Content-Range: bytes */SIZE`
//! (a registry client that sends a broken range has a bug worth surfacing).
//! As RFC 9110 allows, a Range in another unit or with several ranges is
//! ignored and the whole blob is served.

use std::ops::Range;
use std::sync::Arc;

use berth_engine::{Digest, RepoName};
use hyper::header::{HeaderValue, ACCEPT_RANGES, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use crate::errors::{unsatisfied_range, ApiError, Code};
use crate::http::{blocking, empty, hv, set_content_length, App, Body, HDR_CONTENT_DIGEST};
use crate::sendfile::Lane;

/// A `Range` header as far as blob serving is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (inclusive) or `bytes=a-`.
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
    /// A `bytes=` value that does not parse.
    Malformed,
}

impl ByteRange {
    /// Parses a `Range` header; `None` means serve the whole blob.
    pub fn parse(value: &[u8]) -> Option<ByteRange> {
        let s = std::str::from_utf8(value).ok()?.trim();
        let spec = s.strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None; // several ranges: ignored (RFC 9110 §14.2)
        }
        let num = |t: &str| -> Option<u64> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        let Some((a, b)) = spec.split_once('-') else {
            return Some(ByteRange::Malformed);
        };
        let r = if a.trim().is_empty() {
            num(b).map(ByteRange::Suffix)
        } else if b.trim().is_empty() {
            num(a).map(|first| ByteRange::From { first, last: None })
        } else {
            match (num(a), num(b)) {
                (Some(first), Some(last)) if first <= last => Some(ByteRange::From {
                    first,
                    last: Some(last),
                }),
                _ => None,
            }
        };
        Some(r.unwrap_or(ByteRange::Malformed))
    }

    /// The bytes `[start, end)` of a blob of `size` bytes, or `None` if the
    /// range is not satisfiable.
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            ByteRange::From { first, last } if first < size => {
                let end = last.map_or(size, |l| l.saturating_add(1).min(size));
                Some(first..end)
            }
            ByteRange::Suffix(n) if n > 0 && size > 0 => Some(size.saturating_sub(n)..size),
            _ => None,
        }
    }
}

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

fn blob_headers(res: &mut Response<Body>, digest: &Digest) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        let p = |s: &str| ByteRange::parse(s.as_bytes());
        assert_eq!(
            p("bytes=0-9"),
            Some(ByteRange::From {
                first: 0,
                last: Some(9)
            })
        );
        assert_eq!(
            p("bytes=5-"),
            Some(ByteRange::From {
                first: 5,
                last: None
            })
        );
        assert_eq!(p("bytes=-3"), Some(ByteRange::Suffix(3)));
        assert_eq!(p("bytes=9-2"), Some(ByteRange::Malformed));
        assert_eq!(p("bytes=abc"), Some(ByteRange::Malformed));
        assert_eq!(p("bytes=-"), Some(ByteRange::Malformed));
        assert_eq!(p("bytes=+1-2"), Some(ByteRange::Malformed));
        assert_eq!(p("bytes=0-1,4-5"), None);
        assert_eq!(p("items=0-1"), None);
    }

    #[test]
    fn range_resolution() {
        let f = |first, last| ByteRange::From { first, last };
        assert_eq!(f(0, Some(9)).resolve(100), Some(0..10));
        assert_eq!(f(90, Some(200)).resolve(100), Some(90..100));
        assert_eq!(f(99, None).resolve(100), Some(99..100));
        assert_eq!(f(100, None).resolve(100), None);
        assert_eq!(f(0, Some(u64::MAX)).resolve(100), Some(0..100));
        assert_eq!(ByteRange::Suffix(10).resolve(100), Some(90..100));
        assert_eq!(ByteRange::Suffix(1000).resolve(100), Some(0..100));
        assert_eq!(ByteRange::Suffix(0).resolve(100), None);
        assert_eq!(ByteRange::Suffix(5).resolve(0), None);
        assert_eq!(f(0, None).resolve(0), None);
        assert_eq!(ByteRange::Malformed.resolve(100), None);
    }
}
