//! The referrers API (end-12a/b): manifests whose `subject` is a digest.

use std::collections::BTreeMap;

use berth_engine::{Digest, Engine, RepoName};
use hyper::header::HeaderValue;
use hyper::Response;
use serde::Serialize;

use crate::errors::ApiError;
use crate::http::{json, Body, HDR_FILTERS_APPLIED};
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
}

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
        Ok(ListReferrers {
            repo: RepoName::parse(name)?,
            subject: Digest::parse(digest)?,
            artifact_type: query
                .get("artifactType")
                .map(|t| t.into_owned())
                .filter(|t| !t.is_empty()),
        })
    }

    /// An index scan of the subject's referrers; runs on the blocking pool.
    pub fn apply(self, e: &Engine) -> Result<Response<Body>, ApiError> {
        let referrers = e.referrers(&self.repo, &self.subject, self.artifact_type.as_deref())?;
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
        Ok(res)
    }
}
