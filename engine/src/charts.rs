//! The chart repository's index: one `charts` entry per chart version of a
//! project, kept in the same batches as the OCI manifests and tags that
//! hold the charts, and a per-project `chart_repos` record whose
//! generation is bumped by every change (see `docs/charts.md`).
//!
//! One blob, two views. Chart `name` version `V` of `project` *is* the OCI
//! manifest tagged `V` (with `+` written `_`) in repository `project/name`,
//! whose config is the chart metadata and whose layers are the chart
//! archive and, optionally, its provenance file. The `charts` entry is the
//! chart repository's view of it. The rule the engine keeps in every batch:
//!
//! > `charts` holds `project 0 name 0 V` exactly when tag `V'` (`+` → `_`)
//! > of `project/name` points at the manifest recorded in that entry.
//!
//! So a tag move, a tag delete or a manifest delete that takes the tag away
//! removes the entry in its own batch, and nothing ever rescans storage.
//! The engine treats the chart metadata as opaque JSON text: parsing
//! Chart.yaml and rendering `index.yaml` are the server's.

use std::collections::HashSet;

use rocksdb::WriteBatch;

use crate::engine::{Engine, Inner};
use crate::error::{ManifestError, StorageError};
use crate::keys;
use crate::names::RepoName;
use crate::records::{self, ChartBlob, ChartRecord, ChartRepoRecord, Count};

pub use berth_formats::names::{oci_tag, ChartId, MAX_CHART_VERSION_LEN};

/// The index key of a chart version.
fn chart_key(id: &ChartId) -> Vec<u8> {
    keys::chart_key(id.project(), id.name(), id.version())
}

/// How a manifest put that carries a chart treats an existing version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartWrite {
    /// Refuse with [`ManifestError::ChartExists`] if the version exists
    /// (the chart API's default: 409 on re-upload).
    Create,
    /// Replace an existing version; its old manifest is deleted from the
    /// repository in the same batch (the chart API with overwrite allowed,
    /// and attaching a provenance file).
    Replace,
    /// Follow the tag: an OCI push (`helm push`) re-tags the version and the
    /// index follows; an old manifest stays as an untagged OCI manifest.
    Follow,
}

/// The chart-repository entry carried by a manifest put whose manifest is a
/// Helm chart. The manifest's repository must be `project/name`.
#[derive(Clone, Debug)]
pub struct ChartEntry {
    /// Chart name (must be the repository's last component).
    pub name: String,
    /// Chart version (SemVer, checked by the caller).
    pub version: String,
    /// Chart metadata as JSON, opaque here.
    pub metadata: String,
    /// The chart archive blob (a layer of the manifest).
    pub chart: ChartBlob,
    /// The provenance blob, if any (a layer of the manifest).
    pub prov: Option<ChartBlob>,
    pub write: ChartWrite,
}

/// One chart version as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartVersion {
    pub name: String,
    pub version: String,
    pub record: ChartRecord,
}

/// The pending `charts`/`chart_repos` changes of one batch, for the one
/// project the batch touches. Entries are read from the index, changed
/// here, and the repository record is written once at the end with its
/// generation bumped if anything changed.
pub(crate) struct ChartChanges {
    project: RepoName,
    repo: Option<ChartRepoRecord>,
    changed: bool,
    /// Keys deleted earlier in this batch (a later put re-creates them).
    deleted: HashSet<Vec<u8>>,
}

impl ChartChanges {
    pub(crate) fn new(project: RepoName) -> ChartChanges {
        ChartChanges {
            project,
            repo: None,
            changed: false,
            deleted: HashSet::new(),
        }
    }

    fn repo_record(&mut self, inner: &Inner) -> Result<&mut ChartRepoRecord, StorageError> {
        if self.repo.is_none() {
            let r = inner
                .get::<ChartRepoRecord>(keys::CF_CHART_REPOS, &keys::chart_repo_key(&self.project))?
                .unwrap_or_default();
            self.repo = Some(r);
        }
        Ok(self.repo.get_or_insert_with(ChartRepoRecord::default))
    }

    /// The entry at `key` as this batch sees it.
    fn get(&self, inner: &Inner, key: &[u8]) -> Result<Option<ChartRecord>, StorageError> {
        if self.deleted.contains(key) {
            return Ok(None);
        }
        inner.get(keys::CF_CHARTS, key)
    }

    fn delete(
        &mut self,
        inner: &Inner,
        batch: &mut WriteBatch,
        key: &[u8],
    ) -> Result<(), StorageError> {
        if self.get(inner, key)?.is_none() {
            return Ok(());
        }
        batch.delete_cf(&inner.cf(keys::CF_CHARTS), key);
        self.deleted.insert(key.to_vec());
        let project = self.project.clone();
        let r = self.repo_record(inner)?;
        Count::Versions.down(&mut r.versions, || format!("chart repository {project}"))?;
        self.changed = true;
        Ok(())
    }

    fn put(
        &mut self,
        inner: &Inner,
        batch: &mut WriteBatch,
        key: &[u8],
        rec: &ChartRecord,
    ) -> Result<(), StorageError> {
        let existed = self.get(inner, key)?.is_some();
        batch.put_cf(&inner.cf(keys::CF_CHARTS), key, records::encode(rec));
        self.deleted.remove(key);
        let project = self.project.clone();
        let r = self.repo_record(inner)?;
        if !existed {
            Count::Versions.up(&mut r.versions, || format!("chart repository {project}"))?;
        }
        self.changed = true;
        Ok(())
    }

    /// Writes the repository record, generation bumped, if anything changed.
    pub(crate) fn write(
        mut self,
        inner: &Inner,
        batch: &mut WriteBatch,
        now: u64,
    ) -> Result<(), StorageError> {
        if !self.changed {
            return Ok(());
        }
        let key = keys::chart_repo_key(&self.project);
        let r = self.repo_record(inner)?;
        r.generation += 1;
        r.updated_ms = now;
        let encoded = records::encode(r);
        batch.put_cf(&inner.cf(keys::CF_CHART_REPOS), key, encoded);
        Ok(())
    }
}

/// `project/name` split into the project and chart name, if the repository
/// has exactly two components (only those hold charts).
pub(crate) fn chart_repo_parts(repo: &RepoName) -> Option<(RepoName, &str)> {
    let (project, name) = repo.as_str().split_once('/')?;
    if name.contains('/') {
        return None;
    }
    Some((RepoName::parse(project).ok()?, name))
}

impl Inner {
    /// Tag `tag` of `repo` stops pointing at `digest` in this batch: the
    /// chart version it named, if it recorded `digest`, leaves the index.
    /// IMPORTANT: the caller holds the write lock.
    pub(crate) fn unindex_chart_tag(
        &self,
        charts: &mut ChartChanges,
        batch: &mut WriteBatch,
        repo: &RepoName,
        tag: &str,
        digest: &crate::digest::Digest,
    ) -> Result<(), StorageError> {
        let Some((project, name)) = chart_repo_parts(repo) else {
            return Ok(());
        };
        if project != charts.project {
            return Ok(());
        }
        let key = keys::chart_key(&project, name, &tag.replace('_', "+"));
        if let Some(rec) = charts.get(self, &key)? {
            if &rec.manifest == digest {
                charts.delete(self, batch, &key)?;
            }
        }
        Ok(())
    }

    /// Writes the `charts` entry of a manifest put. IMPORTANT: the caller
    /// holds the write lock and has applied `entry.write` already.
    pub(crate) fn index_chart(
        &self,
        charts: &mut ChartChanges,
        batch: &mut WriteBatch,
        id: &ChartId,
        entry: &ChartEntry,
        manifest: &crate::digest::Digest,
        now: u64,
    ) -> Result<(), StorageError> {
        let key = chart_key(id);
        let created_ms = match charts.get(self, &key)? {
            // Re-putting the same manifest keeps the version's creation time.
            Some(old) if &old.manifest == manifest => old.created_ms,
            _ => now,
        };
        let rec = ChartRecord {
            metadata: entry.metadata.clone(),
            chart: entry.chart.clone(),
            prov: entry.prov.clone(),
            manifest: manifest.clone(),
            created_ms,
        };
        charts.put(self, batch, &key, &rec)
    }
}

impl Engine {
    /// The chart version `id`, if indexed.
    pub fn get_chart(&self, id: &ChartId) -> Result<Option<ChartRecord>, StorageError> {
        self.inner.get(keys::CF_CHARTS, &chart_key(id))
    }

    /// Every indexed version in `project` (of chart `name` only, if given),
    /// in key order: by name, then by version bytes (callers sort by SemVer).
    pub fn list_charts(
        &self,
        project: &RepoName,
        name: Option<&str>,
    ) -> Result<Vec<ChartVersion>, StorageError> {
        let prefix = match name {
            Some(n) => keys::chart_versions_prefix(project, n),
            None => keys::charts_prefix(project),
        };
        let mut out = Vec::new();
        for r in self.inner.scan(keys::CF_CHARTS, &prefix, &prefix) {
            let (k, v) = r?;
            let Some((_, name, version)) = keys::split_chart_key(&k) else {
                return Err(StorageError::Corrupt {
                    what: format!("charts/{}", String::from_utf8_lossy(&k)),
                    detail: "key is not project/name/version".into(),
                });
            };
            let record: ChartRecord = records::decode(&v, || format!("charts/{project}/{name}"))?;
            out.push(ChartVersion {
                name,
                version,
                record,
            });
        }
        Ok(out)
    }

    /// The chart repository state of `project` (None: no chart ever).
    /// A point read: cheap enough for every `index.yaml` request.
    pub fn chart_repo(&self, project: &RepoName) -> Result<Option<ChartRepoRecord>, StorageError> {
        self.inner
            .get(keys::CF_CHART_REPOS, &keys::chart_repo_key(project))
    }

    /// The chart repository of `project` as one consistent view: its state
    /// and every version, such that the versions are exactly those of the
    /// returned generation (re-read if a change landed during the scan; under
    /// a constant stream of changes, after four tries, the versions are at
    /// least as new as the generation, so a cache keyed by it is refreshed
    /// by the next change's reader).
    pub fn chart_index(
        &self,
        project: &RepoName,
    ) -> Result<(ChartRepoRecord, Vec<ChartVersion>), StorageError> {
        let mut rec = self.chart_repo(project)?.unwrap_or_default();
        let mut tries = 0;
        loop {
            let versions = self.list_charts(project, None)?;
            let after = self.chart_repo(project)?.unwrap_or_default();
            tries += 1;
            if after.generation == rec.generation || tries == 4 {
                return Ok((rec, versions));
            }
            rec = after;
        }
    }

    /// Every project that has had a chart, with its state, in name order.
    pub fn chart_projects(&self) -> Result<Vec<(RepoName, ChartRepoRecord)>, StorageError> {
        let mut out = Vec::new();
        for r in self.inner.scan(keys::CF_CHART_REPOS, b"", b"") {
            let (k, v) = r?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let rec: ChartRepoRecord = records::decode(&v, || format!("chart_repos/{name}"))?;
            if let Ok(p) = RepoName::parse(&name) {
                out.push((p, rec));
            }
        }
        Ok(out)
    }

    /// Deletes chart `name` of `project`: one version, or every version
    /// when `version` is None. Each version's OCI manifest is deleted from
    /// `project/name` (with its tags) in the same batch. Returns how many
    /// versions were deleted.
    pub fn delete_charts(
        &self,
        project: &RepoName,
        name: &str,
        version: Option<&str>,
    ) -> Result<usize, ManifestError> {
        let inner = &self.inner;
        let probe =
            ChartId::parse(project.as_str(), name, version.unwrap_or("0")).map_err(|e| {
                ManifestError::ChartInvalid {
                    repo: project.to_string(),
                    chart: name.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        let repo = probe.repo().clone();
        let _g = inner.lock()?;
        let now = records::now_ms();
        let targets: Vec<(Vec<u8>, ChartRecord)> = match version {
            Some(v) => {
                let key = keys::chart_key(project, name, v);
                match inner.get::<ChartRecord>(keys::CF_CHARTS, &key)? {
                    Some(r) => vec![(key, r)],
                    None => Vec::new(),
                }
            }
            None => {
                let prefix = keys::chart_versions_prefix(project, name);
                let mut t = Vec::new();
                for r in inner.scan(keys::CF_CHARTS, &prefix, &prefix) {
                    let (k, v) = r?;
                    let rec: ChartRecord =
                        records::decode(&v, || format!("charts/{project}/{name}"))?;
                    t.push((k.to_vec(), rec));
                }
                t
            }
        };
        if targets.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::default();
        let mut pending = crate::manifests::Pending::new(inner);
        let mut charts = ChartChanges::new(project.clone());
        let mut manifests = HashSet::new();
        for (key, rec) in &targets {
            charts.delete(inner, &mut batch, key)?;
            if manifests.insert(rec.manifest.clone())
                && pending.repo_manifest(&repo, &rec.manifest)?.is_some()
            {
                inner.remove_manifest(
                    &mut pending,
                    &mut batch,
                    &mut charts,
                    &repo,
                    &rec.manifest,
                    now,
                )?;
            }
        }
        pending.write(&repo, &mut batch);
        charts.write(inner, &mut batch, now)?;
        inner.commit(_g, batch)?;
        Ok(targets.len())
    }
}
