//! The referrers API (end-12a/b): manifests whose `subject` is a digest.

use std::collections::BTreeMap;

use berth_engine::{Digest, Engine, RepoName};
use hyper::header::{HeaderValue, LINK};
use hyper::Response;
use serde::Serialize;

use crate::errors::ApiError;
use crate::http::{hv, json, Body, HDR_FILTERS_APPLIED};
use crate::manifest_parse::OCI_INDEX;
use crate::router::Query;

/// `GET /v2/<name>/referrers/<digest>[?artifactType=<type>]` → an OCI
/// image index of referrer descriptors; always `200` (an empty index for a
/// subject or repository nobody refers to). With `artifactType`, only
/// referrers of that type, and `OCI-Filters-Applied: artifactType`.
#[derive(Debug)]
pub struct ListReferrers {
    pub repo: RepoName,
    pub subject: Digest,
    pub artifact_type: Option<String>,
    /// `last=<digest>`: the page after this referrer (from a `Link`).
    pub last: Option<Digest>,
}

/// Referrer keys one request reads at most; a subject with more is paged
/// with `Link` headers (the spec allows registries to paginate).
pub const PAGE_KEYS: usize = 1_000;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

impl ListReferrers {
    pub fn parse(name: &str, digest: &str, query: Query<'_>) -> Result<ListReferrers, ApiError> {
        let last = match query.get("last").filter(|l| !l.is_empty()) {
            Some(l) => Some(Digest::parse(&l)?),
            None => None,
        };
        Ok(ListReferrers {
            repo: RepoName::parse(name)?,
            subject: Digest::parse(digest)?,
            artifact_type: query
                .get("artifactType")
                .map(|t| t.into_owned())
                .filter(|t| !t.is_empty()),
            last,
        })
    }

    /// An index scan of at most [`PAGE_KEYS`] of the subject's referrers;
    /// runs on the blocking pool. More follow: a `Link` to the next page.
    pub fn apply(self, e: &Engine) -> Result<Response<Body>, ApiError> {
        let (referrers, next) = e.referrers_page(
            &self.repo,
            &self.subject,
            self.artifact_type.as_deref(),
            self.last.as_ref(),
            PAGE_KEYS,
        )?;
        let index = Index {
            schema_version: 2,
            media_type: OCI_INDEX,
            manifests: referrers
                .iter()
                .map(|r| Descriptor {
                    media_type: &r.media_type,
                    digest: r.digest.as_str(),
                    size: r.size,
                    artifact_type: r.artifact_type.as_deref(),
                    annotations: &r.annotations,
                })
                .collect(),
        };
        let body = serde_json::to_vec(&index).map_err(ApiError::internal)?;
        let mut res = json(body, OCI_INDEX);
        if self.artifact_type.is_some() {
            res.headers_mut().insert(
                HDR_FILTERS_APPLIED,
                HeaderValue::from_static("artifactType"),
            );
        }
        if let Some(next) = next {
            let mut link = format!("</v2/{}/referrers/{}?last={next}", self.repo, self.subject);
            if let Some(t) = &self.artifact_type {
                link.push_str("&artifactType=");
                link.push_str(&percent_encode(t));
            }
            link.push_str(">; rel=\"next\"");
            res.headers_mut().insert(LINK, hv(&link));
        }
        Ok(res)
    }
}

/// `s` with everything but RFC 3986 unreserved characters percent-encoded
/// (an artifact type is a media type: `/`, `+` and `;` must not reach the
/// query as themselves).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_types_are_percent_encoded_in_links() {
        assert_eq!(
            percent_encode("application/vnd.x+json; v=1"),
            "application%2Fvnd.x%2Bjson%3B%20v%3D1"
        );
        assert_eq!(
            crate::router::percent_decode(&percent_encode("a/b+c")),
            "a/b+c"
        );
    }
}
