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

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::digest::{Algorithm, Digest};
use crate::engine::{Engine, Inner};
use crate::error::{ManifestError, StorageError};
use crate::index::Batch;
use crate::keys::{BlobKey, ChartKey, ChartRepoKey, PinKey, WholeFamily};
use crate::manifests::{check_put, project_of, ManifestPut, Pending, Stored};
use crate::names::{RepoName, Tag};
use crate::records::{self, BlobState, ChartBlob, ChartRecord, ChartRepoRecord, Count};

pub use berth_formats::names::{oci_tag, ChartId, MAX_CHART_VERSION_LEN};

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

/// What [`Engine::chart_index_since`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChartIndexDelta {
    /// Every version of the project (the changes since the reader's
    /// generation are not known): in key order.
    All(Vec<ChartVersion>),
    /// Chart name → every version of that chart, in key order, for each
    /// chart changed since the reader's generation (empty: no version is
    /// left). Charts not listed are as the reader has them.
    Charts(BTreeMap<String, Vec<ChartVersion>>),
}

/// The pending `charts`/`chart_repos` changes of one batch, for the one
/// project the batch touches. Entries are read from the index, changed
/// here, and the repository record is written once at the end with its
/// generation bumped if anything changed.
pub(crate) struct ChartChanges {
    project: RepoName,
    repo: Option<ChartRepoRecord>,
    changed: bool,
    /// The chart names whose entries this batch changes (recorded in the
    /// repository record, so index caches re-read only those).
    names: BTreeSet<String>,
    /// Keys deleted earlier in this batch (a later put re-creates them).
    deleted: HashSet<ChartKey>,
}

impl ChartChanges {
    pub(crate) fn new(project: RepoName) -> ChartChanges {
        ChartChanges {
            project,
            repo: None,
            changed: false,
            names: BTreeSet::new(),
            deleted: HashSet::new(),
        }
    }

    fn repo_record(&mut self, r: &impl Stored) -> Result<&mut ChartRepoRecord, StorageError> {
        if self.repo.is_none() {
            let r = r
                .stored(&ChartRepoKey(self.project.clone()))?
                .unwrap_or_default();
            self.repo = Some(r);
        }
        Ok(self.repo.get_or_insert_with(ChartRepoRecord::default))
    }

    /// The entry at `key` as this batch sees it.
    fn get(&self, r: &impl Stored, key: &ChartKey) -> Result<Option<ChartRecord>, StorageError> {
        if self.deleted.contains(key) {
            return Ok(None);
        }
        r.stored(key)
    }

    fn delete(
        &mut self,
        r: &impl Stored,
        batch: &mut Batch,
        key: &ChartKey,
    ) -> Result<(), StorageError> {
        if self.get(r, key)?.is_none() {
            return Ok(());
        }
        batch.delete(key);
        self.deleted.insert(key.clone());
        let project = self.project.clone();
        let r = self.repo_record(r)?;
        Count::Versions.down(&mut r.versions, || format!("chart repository {project}"))?;
        self.changed = true;
        self.names.insert(key.0.name().to_owned());
        Ok(())
    }

    fn put(
        &mut self,
        stored: &impl Stored,
        batch: &mut Batch,
        key: &ChartKey,
        rec: &ChartRecord,
    ) -> Result<(), StorageError> {
        let existed = self.get(stored, key)?.is_some();
        batch.put(key, rec);
        self.deleted.remove(key);
        let project = self.project.clone();
        let r = self.repo_record(stored)?;
        if !existed {
            Count::Versions.up(&mut r.versions, || format!("chart repository {project}"))?;
        }
        self.changed = true;
        self.names.insert(key.0.name().to_owned());
        Ok(())
    }

    /// Writes the repository record, generation bumped and the changed
    /// chart names recorded, if anything changed.
    pub(crate) fn write(
        mut self,
        stored: &impl Stored,
        batch: &mut Batch,
        now: u64,
    ) -> Result<(), StorageError> {
        if !self.changed {
            return Ok(());
        }
        let key = ChartRepoKey(self.project.clone());
        let names = std::mem::take(&mut self.names);
        let r = self.repo_record(stored)?;
        r.bump(names, now);
        batch.put(&key, r);
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

/// The chart version tag `tag` of `repo` names, if `repo` is a chart's
/// (`project/name`) and the tag a chart version (SemVer's `+` written `_`).
/// A tag that names no valid chart version indexes no chart.
pub(crate) fn chart_of_tag(repo: &RepoName, tag: &Tag) -> Option<ChartKey> {
    let (project, name) = chart_repo_parts(repo)?;
    let version = tag.as_str().replace('_', "+");
    ChartId::parse(project.as_str(), name, &version)
        .ok()
        .map(ChartKey)
}

impl Inner {
    /// Tag `tag` of `repo` stops pointing at `digest` in this batch: the
    /// chart version it named, if it recorded `digest`, leaves the index.
    /// IMPORTANT: the caller holds the write lock.
    pub(crate) fn unindex_chart_tag(
        &self,
        pending: &Pending<'_>,
        charts: &mut ChartChanges,
        batch: &mut Batch,
        repo: &RepoName,
        tag: &Tag,
        digest: &crate::digest::Digest,
    ) -> Result<(), StorageError> {
        let Some(key) = chart_of_tag(repo, tag) else {
            return Ok(());
        };
        if key.0.project() != &charts.project {
            return Ok(());
        }
        if let Some(rec) = charts.get(pending, &key)? {
            if &rec.manifest == digest {
                charts.delete(pending, batch, &key)?;
            }
        }
        Ok(())
    }

    /// Writes the `charts` entry of a manifest put. IMPORTANT: the caller
    /// holds the write lock and has applied `entry.write` already.
    pub(crate) fn index_chart(
        &self,
        charts: &mut ChartChanges,
        batch: &mut Batch,
        id: &ChartId,
        entry: &ChartEntry,
        manifest: &crate::digest::Digest,
        now: u64,
    ) -> Result<(), StorageError> {
        let key = ChartKey(id.clone());
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
        self.inner.index.get(&ChartKey(id.clone()))
    }

    /// Every indexed version in `project` (of chart `name` only, if given),
    /// in key order: by name, then by version bytes (callers sort by SemVer).
    pub fn list_charts(
        &self,
        project: &RepoName,
        name: Option<&str>,
    ) -> Result<Vec<ChartVersion>, StorageError> {
        let scan = match name {
            Some(n) => ChartKey::of_chart(project, n),
            None => ChartKey::of_project(project),
        };
        let mut out = Vec::new();
        for r in self.inner.index.scan(scan) {
            let (ChartKey(id), record) = r?;
            out.push(ChartVersion {
                name: id.name().to_owned(),
                version: id.version().to_owned(),
                record,
            });
        }
        Ok(out)
    }

    /// The chart repository state of `project` (None: no chart ever).
    /// A point read: cheap enough for every `index.yaml` request.
    pub fn chart_repo(&self, project: &RepoName) -> Result<Option<ChartRepoRecord>, StorageError> {
        self.inner.index.get(&ChartRepoKey(project.clone()))
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

    /// What a reader holding `project`'s chart index as of generation
    /// `since` must re-read: the repository state and, consistent with its
    /// generation (re-read as [`Engine::chart_index`] does), every version
    /// of each chart changed since (by the record's list of changes), or
    /// every version of the project when those changes are not known
    /// (`since` is `None`, or older than the record remembers). A point
    /// read and a scan of each changed chart: a reader one change behind
    /// reads one chart's versions, not the project's.
    pub fn chart_index_since(
        &self,
        project: &RepoName,
        since: Option<u64>,
    ) -> Result<(ChartRepoRecord, ChartIndexDelta), StorageError> {
        let mut rec = self.chart_repo(project)?.unwrap_or_default();
        let mut tries = 0;
        loop {
            let delta = match since.and_then(|g| rec.changed_since(g)) {
                Some(names) => {
                    let mut charts = BTreeMap::new();
                    for name in names {
                        charts.insert(name.to_owned(), self.list_charts(project, Some(name))?);
                    }
                    ChartIndexDelta::Charts(charts)
                }
                None => ChartIndexDelta::All(self.list_charts(project, None)?),
            };
            let after = self.chart_repo(project)?.unwrap_or_default();
            tries += 1;
            if after.generation == rec.generation || tries == 4 {
                return Ok((rec, delta));
            }
            rec = after;
        }
    }

    /// Every project that has had a chart, with its state, in name order.
    pub fn chart_projects(&self) -> Result<Vec<(RepoName, ChartRepoRecord)>, StorageError> {
        let mut out = Vec::new();
        for r in self.inner.index.scan(ChartRepoKey::all()) {
            let (ChartRepoKey(project), rec) = r?;
            out.push((project, rec));
        }
        Ok(out)
    }

    /// Stores a chart version uploaded through the chart API: the bytes of
    /// every blob its manifest references (`blobs`: the config, the chart
    /// archive and the provenance file, if any) and the manifest itself
    /// (`put`, whose `chart` entry names the version). Returns the
    /// manifest's digest. The manifest's repository is `project/name`.
    ///
    /// The write path, top to bottom:
    /// 1. Check the put (digest, chart entry, layers) and that every blob
    ///    given is a blob of the manifest; refuse an existing version early
    ///    when not overwriting (nothing is stored then).
    /// 2. Pin every digest against GC (as an upload's commit does).
    /// 3. Outside the lock, store the bytes of each blob the index does not
    ///    hold live (CreateOnly: identical content is stored once). A crash
    ///    from here to 5 leaves at worst unindexed store files: no record
    ///    names them, `fsck` lists them, `fsck --repair` deletes them, and a
    ///    later upload of the same bytes reuses them.
    /// 4. Under the lock, re-read each blob record (storing the bytes now
    ///    if GC took the blob in between), link every blob into the
    ///    repository, then the manifest, its tags, the chart entry and the
    ///    chart repository's generation: all in one batch.
    /// 5. Commit the batch, synced once. IMPORTANT: this is the only commit
    ///    point: before it nothing of the chart is visible, after it all is.
    pub fn put_chart(
        &self,
        project: &RepoName,
        blobs: &[&[u8]],
        mut put: ManifestPut,
    ) -> Result<Digest, ManifestError> {
        let inner = &self.inner;
        let Some(entry) = &put.chart else {
            return Err(ManifestError::ChartInvalid {
                repo: project.to_string(),
                chart: String::new(),
                reason: "the manifest carries no chart entry".into(),
            });
        };
        let id = ChartId::parse(project.as_str(), &entry.name, &entry.version).map_err(|e| {
            ManifestError::ChartInvalid {
                repo: project.to_string(),
                chart: format!("{}-{}", entry.name, entry.version),
                reason: e.to_string(),
            }
        })?;
        let repo = id.repo().clone();
        let checked = check_put(&repo, &mut put)?;
        // 1. Every blob given is one the manifest references, once each.
        let mut given: Vec<(Digest, &[u8])> = Vec::with_capacity(blobs.len());
        for data in blobs {
            let d = Digest::of(Algorithm::Sha256, data);
            if !put.blobs.contains(&d) {
                return Err(ManifestError::ChartInvalid {
                    repo: repo.to_string(),
                    chart: id.to_string(),
                    reason: format!("blob {d} is not referenced by the manifest"),
                });
            }
            if given.iter().all(|(g, _)| g != &d) {
                given.push((d, data));
            }
        }
        if put.chart.as_ref().map(|c| c.write) == Some(ChartWrite::Create)
            && self.get_chart(&id)?.is_some()
        {
            return Err(ManifestError::ChartExists {
                project: project.to_string(),
                chart: id.to_string(),
            });
        }
        inner.check_poison()?;
        // Over the project's quota: refused before anything is stored
        // (`quotas.rs`; the commit checks again).
        let _reserved = given
            .iter()
            .map(|(d, data)| inner.reserve_quota(&repo, d, data.len() as u64))
            .collect::<Result<Vec<_>, _>>()?;
        // 2. Pinned until the batch is committed (or this fails): against
        //    this process's GC, and durably against every node's (a pin
        //    left by a failure only keeps garbage a while, see gc.rs).
        let _pins: Vec<_> = given.iter().map(|(d, _)| inner.gc_digests.pin(d)).collect();
        let holder = inner.fresh_id()?;
        let pinned: Vec<&Digest> = given.iter().map(|(d, _)| d).collect();
        inner.commit_pins(&pinned, &holder, |_| Ok(()))?;
        let live = |d: &Digest, size: u64| -> Result<bool, StorageError> {
            Ok(inner
                .index
                .get(&BlobKey(d.clone()))?
                .is_some_and(|r| r.size == size && r.state != BlobState::Deleting))
        };
        // 3. The bytes, outside the lock.
        let mut stored = HashSet::new();
        for (d, data) in &given {
            if !live(d, data.len() as u64)? {
                inner.store_bytes(d, data)?;
                stored.insert(d.clone());
            }
        }
        // 4. One batch.
        let (_g, prefetched) = inner.lock_reading(checked.reads(&repo, &put))?;
        let now = records::now_ms();
        let mut batch = Batch::default();
        let mut pending = Pending::prefetched(inner, prefetched);
        let mut charts = ChartChanges::new(project_of(&repo));
        for (d, data) in &given {
            let size = data.len() as u64;
            let existing = inner.index.get(&BlobKey(d.clone()))?;
            let is_live = existing
                .as_ref()
                .is_some_and(|r| r.size == size && r.state != BlobState::Deleting);
            if !is_live && !stored.contains(d) {
                inner.store_bytes(d, data)?;
            }
            let rec = inner.blob_record_to_link(d, existing, size, now)?;
            pending.link_blob(&mut batch, &repo, d, rec, now)?;
            batch.delete(&PinKey(d.clone(), holder.clone()));
        }
        let digest = inner.manifest_into_batch(
            &mut pending,
            &mut charts,
            &mut batch,
            &repo,
            put,
            checked,
            now,
        )?;
        pending.write(&repo, &mut batch);
        charts.write(&**inner, &mut batch, now)?;
        // 5. The commit point.
        inner.commit(_g, batch)?;
        Ok(digest)
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
        let targets: Vec<(ChartKey, ChartRecord)> = match version {
            Some(_) => {
                // `probe` is this very version, validated.
                let key = ChartKey(probe);
                match inner.index.get(&key)? {
                    Some(r) => vec![(key, r)],
                    None => Vec::new(),
                }
            }
            None => inner
                .index
                .scan(ChartKey::of_chart(project, name))
                .collect::<Result<_, _>>()?,
        };
        if targets.is_empty() {
            return Ok(0);
        }
        // The manifests go with every tag naming them: none may be
        // immutable.
        let doomed: HashSet<&Digest> = targets.iter().map(|(_, r)| &r.manifest).collect();
        for r in inner.index.scan(crate::keys::TagKey::of_repo(&repo)) {
            let (crate::keys::TagKey(_, tag), crate::records::TagRecord(target)) = r?;
            if doomed.contains(&target) {
                inner.refuse_immutable(&repo, &tag)?;
            }
        }
        let mut batch = Batch::default();
        let mut pending = crate::manifests::Pending::new(inner);
        let mut charts = ChartChanges::new(project.clone());
        let mut manifests = HashSet::new();
        for (key, rec) in &targets {
            charts.delete(&**inner, &mut batch, key)?;
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
        charts.write(&**inner, &mut batch, now)?;
        inner.commit(_g, batch)?;
        Ok(targets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Reference;
    use crate::store::BlobStore;
    use std::sync::Arc;

    /// A memory store whose `put_bytes` fails for the digests in `fail`.
    struct FailingStore {
        mem: crate::store::MemoryStore,
        fail: std::sync::Mutex<HashSet<Digest>>,
    }

    impl crate::store::BlobStore for FailingStore {
        fn name(&self) -> &'static str {
            "failing"
        }
        fn stage(&self, id: &str) -> Result<crate::store::Staged, crate::store::StoreError> {
            self.mem.stage(id)
        }
        fn open_staged(
            &self,
            id: &str,
        ) -> Result<Option<crate::store::Staged>, crate::store::StoreError> {
            self.mem.open_staged(id)
        }
        fn staged_ids(&self) -> Result<Vec<String>, crate::store::StoreError> {
            self.mem.staged_ids()
        }
        fn commit(
            &self,
            staged: crate::store::Staged,
            digest: &Digest,
            mode: crate::store::PutMode,
        ) -> Result<crate::store::PutOutcome, crate::store::StoreError> {
            self.mem.commit(staged, digest, mode)
        }
        fn abort(&self, id: &str) -> Result<(), crate::store::StoreError> {
            self.mem.abort(id)
        }
        fn put_bytes(
            &self,
            digest: &Digest,
            data: &[u8],
            mode: crate::store::PutMode,
        ) -> Result<crate::store::PutOutcome, crate::store::StoreError> {
            if self.fail.lock().unwrap().contains(digest) {
                return Err(crate::store::StoreError::Remote {
                    op: "put object",
                    key: digest.to_string(),
                    message: "injected failure".into(),
                });
            }
            self.mem.put_bytes(digest, data, mode)
        }
        fn get(
            &self,
            digest: &Digest,
            range: Option<std::ops::Range<u64>>,
        ) -> Result<crate::store::BlobData, crate::store::StoreError> {
            self.mem.get(digest, range)
        }
        fn stat(&self, digest: &Digest) -> Result<Option<u64>, crate::store::StoreError> {
            self.mem.stat(digest)
        }
        fn delete(&self, digest: &Digest) -> Result<bool, crate::store::StoreError> {
            self.mem.delete(digest)
        }
        fn list(&self) -> Result<Vec<Digest>, crate::store::StoreError> {
            self.mem.list()
        }
    }

    /// A chart manifest over `blobs` (config, archive, provenance), as the
    /// chart API builds one; the engine reads only its references.
    fn chart_put(name: &str, version: &str, blobs: &[&[u8]], write: ChartWrite) -> ManifestPut {
        let digests: Vec<Digest> = blobs
            .iter()
            .map(|b| Digest::of(Algorithm::Sha256, b))
            .collect();
        let blob = |i: usize| ChartBlob {
            digest: digests[i].clone(),
            size: blobs[i].len() as u64,
        };
        ManifestPut {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: format!("{{\"chart\":\"{name}-{version}\",\"blobs\":{digests:?}}}").into_bytes(),
            blobs: digests.clone(),
            chart: Some(ChartEntry {
                name: name.into(),
                version: version.into(),
                metadata: String::from_utf8_lossy(blobs[0]).into_owned(),
                chart: blob(1),
                prov: (blobs.len() > 2).then(|| blob(2)),
                write,
            }),
            ..ManifestPut::default()
        }
    }

    #[test]
    fn a_chart_upload_is_one_commit_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FailingStore {
            mem: crate::store::MemoryStore::new(),
            fail: std::sync::Mutex::new(HashSet::new()),
        });
        let mut config = crate::EngineConfig::new(dir.path());
        config.store = Some(store.clone());
        let e = Engine::open(config).unwrap();
        let project = RepoName::parse("proj").unwrap();
        let commits = || crate::EngineMetrics::get(&e.metrics().index_commits);

        // A whole chart: blobs, links, manifest, tag, chart entry and the
        // repository's generation in one commit.
        let v1: [&[u8]; 3] = [b"{\"name\":\"app\"}", b"archive one", b"prov one"];
        let before = commits();
        let digest = e
            .put_chart(
                &project,
                &v1,
                chart_put("app", "1.0.0", &v1, ChartWrite::Create),
            )
            .unwrap();
        assert_eq!(commits() - before, 1, "one commit point");
        let id = ChartId::parse("proj", "app", "1.0.0").unwrap();
        let rec = e.get_chart(&id).unwrap().expect("chart entry");
        assert_eq!(rec.manifest, digest);
        assert_eq!(e.chart_repo(&project).unwrap().unwrap().generation, 1);
        for b in v1 {
            let d = Digest::of(Algorithm::Sha256, b);
            let r = e.blob_record(&d).unwrap().expect("blob indexed");
            assert_eq!((r.refcount, r.links), (1, 1), "{d}");
            assert!(e.stat_blob(id.repo(), &d).unwrap().is_some());
        }
        let tag = Reference::Tag(id.tag().clone());
        assert!(e.get_manifest(id.repo(), &tag).unwrap().is_some());

        // The store fails on the provenance file, after the config and the
        // archive were stored: nothing of version 2 is in the index.
        let v2: [&[u8]; 3] = [b"{\"name\":\"app\",\"v\":2}", b"archive two", b"prov two"];
        store
            .fail
            .lock()
            .unwrap()
            .insert(Digest::of(Algorithm::Sha256, v2[2]));
        let before = commits();
        let err = e
            .put_chart(
                &project,
                &v2,
                chart_put("app", "2.0.0", &v2, ChartWrite::Create),
            )
            .unwrap_err();
        assert!(matches!(err, ManifestError::Storage(_)), "{err}");
        assert_eq!(commits(), before, "no commit");
        let id2 = ChartId::parse("proj", "app", "2.0.0").unwrap();
        assert!(e.get_chart(&id2).unwrap().is_none());
        let tag2 = Reference::Tag(id2.tag().clone());
        assert!(e.get_manifest(id2.repo(), &tag2).unwrap().is_none());
        assert_eq!(e.chart_repo(&project).unwrap().unwrap().generation, 1);
        for b in v2 {
            let d = Digest::of(Algorithm::Sha256, b);
            assert!(e.blob_record(&d).unwrap().is_none(), "{d} not indexed");
        }
        // The archive's bytes reached the store unindexed: what fsck lists.
        let archive = Digest::of(Algorithm::Sha256, v2[1]);
        assert!(store.mem.stat(&archive).unwrap().is_some());

        // The same upload once the store works: reuses the stored bytes.
        store.fail.lock().unwrap().clear();
        e.put_chart(
            &project,
            &v2,
            chart_put("app", "2.0.0", &v2, ChartWrite::Create),
        )
        .unwrap();
        assert!(e.get_chart(&id2).unwrap().is_some());
        assert_eq!(e.chart_repo(&project).unwrap().unwrap().generation, 2);
        // A second upload of a version is refused before anything is stored.
        let err = e
            .put_chart(
                &project,
                &v2,
                chart_put("app", "2.0.0", &v2, ChartWrite::Create),
            )
            .unwrap_err();
        assert!(matches!(err, ManifestError::ChartExists { .. }), "{err}");
    }
}
