//! The OCI view of a chart: the manifest a chart upload becomes, and the
//! hook that indexes a chart pushed with `helm push … oci://HOST/project`.
//!
//! Helm's OCI chart (pkg/registry): an image manifest whose config has
//! media type [`HELM_CONFIG`] and holds the Chart.yaml metadata as JSON,
//! one [`HELM_CHART_LAYER`] layer (the `.tgz`, byte for byte the file the
//! chart repository serves) and optionally one [`HELM_PROV_LAYER`] layer.
//! Tags are versions with `+` written `_`.

use std::collections::BTreeMap;

use berth_engine::{
    Algorithm, ChartBlob, ChartEntry, ChartWrite, Digest, Engine, ManifestPut, RepoName, Tag,
};
use serde::Deserialize;
use serde_json::json;

use super::package::Metadata;
use crate::manifest_parse::OCI_MANIFEST;

pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
pub const HELM_PROV_LAYER: &str = "application/vnd.cncf.helm.chart.provenance.v1.prov";

/// Largest chart config read by the push hook.
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The stored blobs of one chart version.
pub struct ChartBlobs {
    /// The config: exactly `metadata.to_config_json()`.
    pub config: String,
    pub chart: ChartBlob,
    pub prov: Option<ChartBlob>,
}

/// The manifest of an uploaded chart, as Helm would push it, and the
/// chart entry that indexes it.
pub fn chart_manifest(meta: &Metadata, blobs: &ChartBlobs, write: ChartWrite) -> ManifestPut {
    let config_digest = Digest::of(Algorithm::Sha256, blobs.config.as_bytes());
    let mut layers = vec![json!({
        "mediaType": HELM_CHART_LAYER,
        "digest": blobs.chart.digest.as_str(),
        "size": blobs.chart.size,
    })];
    if let Some(p) = &blobs.prov {
        layers.push(json!({
            "mediaType": HELM_PROV_LAYER,
            "digest": p.digest.as_str(),
            "size": p.size,
        }));
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("org.opencontainers.image.title", meta.name.as_str());
    annotations.insert("org.opencontainers.image.version", meta.version.as_str());
    if !meta.description.is_empty() {
        annotations.insert(
            "org.opencontainers.image.description",
            meta.description.as_str(),
        );
    }
    if !meta.home.is_empty() {
        annotations.insert("org.opencontainers.image.url", meta.home.as_str());
    }
    let body = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": HELM_CONFIG,
            "digest": config_digest.as_str(),
            "size": blobs.config.len(),
        },
        "layers": layers,
        "annotations": annotations,
    });
    let mut blob_list = vec![config_digest, blobs.chart.digest.clone()];
    if let Some(p) = &blobs.prov {
        blob_list.push(p.digest.clone());
    }
    ManifestPut {
        media_type: OCI_MANIFEST.to_owned(),
        body: serde_json::to_vec(&body).unwrap_or_default(),
        blobs: blob_list,
        artifact_type: Some(HELM_CONFIG.to_owned()),
        chart: Some(ChartEntry {
            name: meta.name.clone(),
            version: meta.version.clone(),
            metadata: blobs.config.clone(),
            chart: blobs.chart.clone(),
            prov: blobs.prov.clone(),
            write,
        }),
        ..ManifestPut::default()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: String,
    digest: String,
    size: u64,
}

/// The push hook: for an OCI push of a Helm chart manifest to
/// `project/name` tagged with its version, the chart entry to index it
/// with (the chart repository then follows the tag). Anything else — other
/// repositories, other tags, a config that is not valid chart metadata —
/// stays a plain OCI artifact: None, with the reason logged.
pub fn chart_entry_for_push(e: &Engine, repo: &RepoName, put: &ManifestPut) -> Option<ChartEntry> {
    if put.artifact_type.as_deref() != Some(HELM_CONFIG) || put.media_type != OCI_MANIFEST {
        return None;
    }
    let skip = |why: String| {
        tracing::info!(%repo, reason = %why, "Helm chart push not added to the chart index");
        None
    };
    let doc: Doc = serde_json::from_slice(&put.body).ok()?;
    let config = doc.config?;
    if config.media_type != HELM_CONFIG || config.size > MAX_CONFIG_BYTES as u64 {
        return skip("config is not a Helm chart config of at most 1 MiB".into());
    }
    let config_digest = Digest::parse(&config.digest).ok()?;
    let bytes = match e.read_blob(repo, &config_digest, None) {
        Ok((_, data)) => data.to_vec(),
        Err(err) => return skip(format!("config blob: {err}")),
    };
    let meta: Metadata = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(err) => return skip(format!("config is not chart metadata: {err}")),
    };
    if let Err(err) = meta.validate() {
        return skip(err.to_string());
    }
    let tag = berth_engine::charts::oci_tag(&meta.version);
    let tagged = Tag::parse(&tag).is_ok_and(|t| put.tags.contains(&t));
    if !tagged {
        return skip(format!("not tagged with the chart version {tag}"));
    }
    let layer = |mt: &str| {
        doc.layers
            .iter()
            .find(|l| l.media_type == mt)
            .and_then(|l| {
                Some(ChartBlob {
                    digest: Digest::parse(&l.digest).ok()?,
                    size: l.size,
                })
            })
    };
    let Some(chart) = layer(HELM_CHART_LAYER) else {
        return skip("no chart content layer".into());
    };
    Some(ChartEntry {
        name: meta.name.clone(),
        version: meta.version.clone(),
        // The config exactly as pushed: Helm wrote it from Chart.yaml.
        metadata: String::from_utf8(bytes).ok()?,
        chart,
        prov: layer(HELM_PROV_LAYER),
        write: ChartWrite::Follow,
    })
}
