//! Manifests, their tags and referrers, with reference counts kept in the
//! same atomic batch as the change that moves them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::charts::{
    chart_of_tag, chart_repo_parts, ChartChanges, ChartEntry, ChartId, ChartWrite,
};
use crate::digest::{Algorithm, Digest};
use crate::engine::{Engine, Inner};
use crate::error::{ManifestError, StorageError};
use crate::index::{Batch, Prefetched, ReadAhead};
use crate::keys::{
    BlobKey, BodyKey, ChartKey, IndexKey, LinkKey, ManifestKey, ReferrerKey, RepoKey,
    RepoManifestKey, TagKey,
};
use crate::names::{Reference, RepoName, Tag};
use crate::records::{
    self, BlobRecord, BlobState, Count, Empty, ManifestBody, ManifestRecord, RepoManifestRecord,
    RepoRecord, TagRecord,
};

/// A manifest to store, already parsed by the caller. The parsed fields
/// (`blobs`, `manifests`, `subject`, `artifact_type`, `annotations`) are
/// used only when the digest has no `manifests` record yet; otherwise the
/// record is authoritative (see [`Engine::put_manifest`]).
#[derive(Clone, Debug, Default)]
pub struct ManifestPut {
    /// Media type the manifest was pushed with.
    pub media_type: String,
    /// The bytes exactly as pushed; served back unchanged.
    pub body: Vec<u8>,
    /// The digest the client named (PUT by digest); verified against the
    /// body. Without it the body is hashed with sha256.
    pub digest: Option<Digest>,
    /// Blobs referenced (config, layers, blobs of artifacts) that must be
    /// linked in the repository. Foreign layers are left out by the caller.
    pub blobs: Vec<Digest>,
    /// The sizes the manifest's descriptors declare for `blobs`; a blob
    /// stored with another size is refused (a client would fail to pull it).
    pub blob_sizes: BTreeMap<Digest, u64>,
    /// Manifests referenced (index children) that must be in the repository.
    pub manifests: Vec<Digest>,
    /// The `subject` this manifest refers to (referrers API).
    pub subject: Option<Digest>,
    /// `artifactType`, or the config media type for image manifests.
    pub artifact_type: Option<String>,
    /// Annotations, served in referrer descriptors.
    pub annotations: BTreeMap<String, String>,
    /// Tags to point at this manifest, in the same batch.
    pub tags: Vec<Tag>,
    /// Set when the manifest is a Helm chart to index in the chart
    /// repository of the repository's project (see `charts.rs`). The
    /// version's tag is added to `tags`.
    pub chart: Option<ChartEntry>,
}

/// A stored manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Arc<[u8]>,
    pub subject: Option<Digest>,
}

/// A referrer descriptor (a manifest whose subject is the asked digest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// Reads of the index state under the write lock.
pub(crate) trait Stored {
    /// The stored value of `key` (not a pending change of it).
    fn stored<K: IndexKey>(&self, key: &K) -> Result<Option<K::Value>, StorageError>;
}

impl Stored for Inner {
    fn stored<K: IndexKey>(&self, key: &K) -> Result<Option<K::Value>, StorageError> {
        self.index.get(key)
    }
}

impl Stored for Pending<'_> {
    fn stored<K: IndexKey>(&self, key: &K) -> Result<Option<K::Value>, StorageError> {
        match self.prefetched.get(key) {
            Some(v) => v,
            None => self.inner.index.get(key),
        }
    }
}

/// Pending record changes of one batch: every record read once, changed in
/// memory, written once at the end. Reads of the index state go through
/// what was read as the lock was taken ([`Inner::lock_reading`]), then the
/// index.
pub(crate) struct Pending<'a> {
    inner: &'a Inner,
    prefetched: Prefetched,
    blobs: HashMap<Digest, BlobRecord>,
    repo_manifests: HashMap<Digest, Option<RepoManifestRecord>>,
    /// Blobs linked into the repository earlier in this batch.
    linked: HashSet<Digest>,
}

impl<'a> Pending<'a> {
    pub(crate) fn new(inner: &'a Inner) -> Self {
        Self::prefetched(inner, Prefetched::default())
    }

    /// A batch whose reads start with `prefetched`.
    pub(crate) fn prefetched(inner: &'a Inner, prefetched: Prefetched) -> Self {
        Pending {
            inner,
            prefetched,
            blobs: HashMap::new(),
            repo_manifests: HashMap::new(),
            linked: HashSet::new(),
        }
    }

    /// Links blob `d` into `repo` in `batch` ([`Inner::link_into`]), with
    /// `rec` as its record from now on in this batch (a blob the batch
    /// itself indexes has no stored record yet). IMPORTANT: the caller
    /// holds the write lock.
    pub(crate) fn link_blob(
        &mut self,
        batch: &mut Batch,
        repo: &RepoName,
        d: &Digest,
        mut rec: BlobRecord,
        now: u64,
    ) -> Result<(), StorageError> {
        self.inner.link_into(batch, repo, d, &mut rec, now)?;
        self.blobs.insert(d.clone(), rec);
        self.linked.insert(d.clone());
        Ok(())
    }

    fn blob(&mut self, d: &Digest) -> Result<Option<&mut BlobRecord>, StorageError> {
        if !self.blobs.contains_key(d) {
            match self.stored(&BlobKey(d.clone()))? {
                Some(r) => {
                    self.blobs.insert(d.clone(), r);
                }
                None => return Ok(None),
            }
        }
        Ok(self.blobs.get_mut(d))
    }

    pub(crate) fn repo_manifest(
        &mut self,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<&mut Option<RepoManifestRecord>, StorageError> {
        if !self.repo_manifests.contains_key(d) {
            let r = self.stored(&RepoManifestKey(repo.clone(), d.clone()))?;
            self.repo_manifests.insert(d.clone(), r);
        }
        Ok(self.repo_manifests.entry(d.clone()).or_insert(None))
    }

    pub(crate) fn write(self, repo: &RepoName, batch: &mut Batch) {
        let inner = self.inner;
        for (d, rec) in self.blobs {
            inner.put_blob_record(batch, &d, &rec);
        }
        for (d, rec) in self.repo_manifests {
            let key = RepoManifestKey(repo.clone(), d);
            match rec {
                Some(r) => batch.put(&key, &r),
                None => batch.delete(&key),
            }
        }
    }
}

fn sorted_unique(v: &[Digest]) -> Vec<Digest> {
    v.iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

impl Inner {
    fn resolve(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Digest>, StorageError> {
        match reference {
            Reference::Digest(d) => Ok(Some(d.clone())),
            Reference::Tag(t) => Ok(self
                .index
                .get(&TagKey(repo.clone(), t.clone()))?
                .map(|TagRecord(d)| d)),
        }
    }

    /// Moves `tag` to `digest` within `pending`/`batch`; a chart version
    /// indexed through the tag's old target leaves the chart index.
    /// IMPORTANT: the caller holds the write lock.
    fn set_tag(
        &self,
        pending: &mut Pending<'_>,
        charts: &mut ChartChanges,
        batch: &mut Batch,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), StorageError> {
        let old = pending
            .stored(&TagKey(repo.clone(), tag.clone()))?
            .map(|TagRecord(d)| d);
        if old.as_ref() == Some(digest) {
            return Ok(());
        }
        if let Some(old) = old {
            if let Some(r) = pending.repo_manifest(repo, &old)? {
                Count::Tags.down(&mut r.tags, || format!("manifest {repo}@{old}"))?;
            }
            self.unindex_chart_tag(pending, charts, batch, repo, tag, &old)?;
        }
        if let Some(r) = pending.repo_manifest(repo, digest)? {
            Count::Tags.up(&mut r.tags, || format!("manifest {repo}@{digest}"))?;
        }
        batch.put(
            &TagKey(repo.clone(), tag.clone()),
            &TagRecord(digest.clone()),
        );
        Ok(())
    }

    /// Removes manifest `digest` (present in `repo`) within `pending`/
    /// `batch`: every tag pointing at it (and the chart versions indexed
    /// through them), `refcount - 1` on its blobs, `parents - 1` on its
    /// children, its referrers entry, `repos - 1` on its record (record and
    /// body deleted at 0) and its `repo_manifests` entry. The references
    /// released are the stored record's, the very list
    /// [`Engine::put_manifest`] counted. IMPORTANT: the caller holds the
    /// write lock.
    pub(crate) fn remove_manifest(
        &self,
        pending: &mut Pending<'_>,
        batch: &mut Batch,
        charts: &mut ChartChanges,
        repo: &RepoName,
        digest: &Digest,
        now: u64,
    ) -> Result<(), StorageError> {
        let Some(rm) = pending.repo_manifest(repo, digest)?.clone() else {
            return Ok(());
        };
        if rm.tags > 0 {
            for r in self.index.scan(TagKey::of_repo(repo)) {
                let (key, TagRecord(target)) = r?;
                if &target == digest {
                    self.unindex_chart_tag(pending, charts, batch, repo, &key.1, digest)?;
                    batch.delete(&key);
                }
            }
        }
        let mkey = ManifestKey(digest.clone());
        let mrec: ManifestRecord = self
            .index
            .get(&mkey)?
            .ok_or_else(|| StorageError::Corrupt {
                what: format!("manifests/{digest}"),
                detail: format!("linked in {repo} but its record is missing"),
            })?;
        for b in &mrec.blobs {
            if let Some(rec) = pending.blob(b)? {
                Count::Refcount.down(&mut rec.refcount, || format!("blob {b}"))?;
                rec.touched_ms = now;
            }
        }
        for c in &mrec.manifests {
            if let Some(r) = pending.repo_manifest(repo, c)? {
                Count::Parents.down(&mut r.parents, || format!("manifest {repo}@{c}"))?;
            }
        }
        if let Some(subject) = &mrec.subject {
            batch.delete(&ReferrerKey {
                repo: repo.clone(),
                subject: subject.clone(),
                referrer: digest.clone(),
            });
        }
        let mut m = mrec;
        Count::Repos.down(&mut m.repos, || format!("manifest {digest}"))?;
        if m.repos == 0 {
            batch.delete(&mkey);
            batch.delete(&BodyKey(digest.clone()));
        } else {
            batch.put(&mkey, &m);
        }
        *pending.repo_manifest(repo, digest)? = None;
        Ok(())
    }
}

/// A manifest put checked before the write lock is taken: its digest, its
/// sorted references, and the chart version it indexes (if any).
pub(crate) struct CheckedPut {
    digest: Digest,
    blobs: Vec<Digest>,
    children: Vec<Digest>,
    chart: Option<ChartId>,
}

/// Checks what can be checked without the index: the claimed digest, the
/// chart entry against the repository and the layers. De-duplicates
/// `put.tags` and adds the chart version's tag.
pub(crate) fn check_put(
    repo: &RepoName,
    put: &mut ManifestPut,
) -> Result<CheckedPut, ManifestError> {
    let algorithm = put
        .digest
        .as_ref()
        .map_or(Algorithm::Sha256, |d| d.algorithm());
    let digest = Digest::of(algorithm, &put.body);
    if let Some(claimed) = &put.digest {
        if claimed != &digest {
            return Err(ManifestError::DigestMismatch {
                expected: claimed.clone(),
                actual: digest,
            });
        }
    }
    let blobs = sorted_unique(&put.blobs);
    let children = sorted_unique(&put.manifests);
    // Each tag moves once: a repeated tag would take its old target's
    // tag count down twice.
    let mut seen = BTreeSet::new();
    put.tags.retain(|t| seen.insert(t.clone()));
    let chart = match &put.chart {
        None => None,
        Some(entry) => {
            let id = chart_id_in(repo, entry)?;
            for b in std::iter::once(&entry.chart).chain(entry.prov.as_ref()) {
                if !blobs.contains(&b.digest) {
                    return Err(ManifestError::ChartInvalid {
                        repo: repo.to_string(),
                        chart: id.to_string(),
                        reason: format!("blob {} is not a layer of the manifest", b.digest),
                    });
                }
            }
            if !put.tags.contains(id.tag()) {
                put.tags.push(id.tag().clone());
            }
            Some(id)
        }
    };
    Ok(CheckedPut {
        digest,
        blobs,
        children,
        chart,
    })
}

impl CheckedPut {
    /// What storing `put` in `repo` reads from the index, as far as the
    /// request tells: read with the write lock in one round trip
    /// ([`Inner::lock_reading`]); whatever else it needs is read after.
    pub(crate) fn reads(&self, repo: &RepoName, put: &ManifestPut) -> ReadAhead {
        let mut reads = ReadAhead::default();
        reads.key(&ManifestKey(self.digest.clone()));
        reads.key(&RepoManifestKey(repo.clone(), self.digest.clone()));
        reads.key(&RepoKey(repo.clone()));
        if !put.tags.is_empty() {
            // A tag it moves must not be immutable: the project's rules.
            reads.key(&crate::immutable::rules_key(repo));
        }
        for tag in &put.tags {
            reads.tag(&TagKey(repo.clone(), tag.clone()));
            if let Some(chart) = chart_of_tag(repo, tag) {
                reads.key(&chart);
            }
        }
        for b in &self.blobs {
            reads.key(&LinkKey(repo.clone(), b.clone()));
            reads.key(&BlobKey(b.clone()));
        }
        for c in &self.children {
            reads.key(&RepoManifestKey(repo.clone(), c.clone()));
        }
        if let Some(id) = &self.chart {
            reads.key(&ChartKey(id.clone()));
        }
        reads
    }
}

impl Inner {
    /// The body of [`Engine::put_manifest`] and [`Engine::put_chart`]:
    /// stores the manifest of `put` in `repo` and moves its tags, within
    /// `pending`/`charts`/`batch` (the caller writes and commits them).
    /// Blobs linked earlier in the same batch count as linked
    /// ([`Pending::link_blob`]). IMPORTANT: the caller holds the write lock.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn manifest_into_batch(
        &self,
        pending: &mut Pending<'_>,
        charts: &mut ChartChanges,
        batch: &mut Batch,
        repo: &RepoName,
        put: ManifestPut,
        checked: CheckedPut,
        now: u64,
    ) -> Result<Digest, ManifestError> {
        let inner = self;
        let CheckedPut {
            digest,
            blobs,
            children,
            chart,
        } = checked;
        if let (Some(id), Some(entry)) = (&chart, &put.chart) {
            if let Some(old) = pending.stored(&ChartKey(id.clone()))? {
                match entry.write {
                    ChartWrite::Create => {
                        return Err(ManifestError::ChartExists {
                            project: id.project().to_string(),
                            chart: id.to_string(),
                        })
                    }
                    // IMPORTANT: the old manifest goes first, so this
                    // batch's later puts of the same keys (the version
                    // tag, the chart entry) win.
                    ChartWrite::Replace if old.manifest != digest => {
                        inner.remove_manifest(pending, batch, charts, repo, &old.manifest, now)?;
                    }
                    ChartWrite::Replace | ChartWrite::Follow => {}
                }
            }
        }
        // IMPORTANT: one digest, one record, one parse. A manifest's
        // references (blobs, children, subject) are a function of its
        // stored bytes and stored media type only: the first accepted PUT
        // of the bytes fixes them in the `manifests` record, and every later
        // PUT of the same digest, in any repository, counts exactly the
        // record's lists, the ones `remove_manifest` releases. A PUT that
        // interprets the bytes as another media type is refused; this
        // request's parse is used only when no record exists.
        let mkey = ManifestKey(digest.clone());
        let stored = pending.stored(&mkey)?;
        if let Some(r) = &stored {
            if r.media_type != put.media_type {
                return Err(ManifestError::MediaTypeConflict {
                    digest,
                    stored: r.media_type.clone(),
                    pushed: put.media_type,
                });
            }
        }
        let present = pending.repo_manifest(repo, &digest)?.is_some();
        if !present {
            let mut mrec = match stored {
                Some(r) => r,
                None => {
                    batch.put(&BodyKey(digest.clone()), &ManifestBody(put.body.clone()));
                    ManifestRecord {
                        media_type: put.media_type.clone(),
                        size: put.body.len() as u64,
                        subject: put.subject.clone(),
                        artifact_type: put.artifact_type.clone(),
                        annotations: put.annotations.clone(),
                        blobs,
                        manifests: children,
                        repos: 0,
                        created_ms: now,
                    }
                }
            };
            for b in &mrec.blobs {
                if !pending.linked.contains(b)
                    && pending.stored(&LinkKey(repo.clone(), b.clone()))?.is_none()
                {
                    return Err(ManifestError::BlobUnknown {
                        repo: repo.to_string(),
                        digest: b.clone(),
                    });
                }
                // A blob GC is deleting is gone for new references.
                let Some(rec) = pending.blob(b)?.filter(|r| r.state != BlobState::Deleting) else {
                    return Err(ManifestError::BlobUnknown {
                        repo: repo.to_string(),
                        digest: b.clone(),
                    });
                };
                if let Some(&declared) = put.blob_sizes.get(b) {
                    if declared != rec.size {
                        return Err(ManifestError::SizeMismatch {
                            digest: b.clone(),
                            declared,
                            stored: rec.size,
                        });
                    }
                }
                Count::Refcount.up(&mut rec.refcount, || format!("blob {b}"))?;
                rec.touched_ms = now;
                rec.state = BlobState::Active;
            }
            for c in &mrec.manifests {
                match pending.repo_manifest(repo, c)? {
                    Some(r) => {
                        Count::Parents.up(&mut r.parents, || format!("manifest {repo}@{c}"))?
                    }
                    None => {
                        return Err(ManifestError::ChildUnknown {
                            repo: repo.to_string(),
                            digest: c.clone(),
                        })
                    }
                }
            }
            Count::Repos.up(&mut mrec.repos, || format!("manifest {digest}"))?;
            batch.put(&mkey, &mrec);
            *pending.repo_manifest(repo, &digest)? = Some(RepoManifestRecord {
                created_ms: now,
                media_type: mrec.media_type.clone(),
                tags: 0,
                parents: 0,
            });
            if let Some(subject) = &mrec.subject {
                batch.put(
                    &ReferrerKey {
                        repo: repo.clone(),
                        subject: subject.clone(),
                        referrer: digest.clone(),
                    },
                    &Empty,
                );
            }
            if pending.stored(&RepoKey(repo.clone()))?.is_none() {
                batch.put(&RepoKey(repo.clone()), &RepoRecord { created_ms: now });
            }
        }
        for tag in &put.tags {
            // IMPORTANT: under the write lock, in the batch's own view: a
            // tag an immutability rule covers is never moved, whatever
            // raced with this put.
            let old = pending.stored(&TagKey(repo.clone(), tag.clone()))?;
            if old.is_some_and(|TagRecord(o)| o != digest) {
                let rules = pending.stored(&crate::immutable::rules_key(repo))?;
                crate::immutable::refuse(rules.as_ref(), repo, tag)?;
            }
            inner.set_tag(pending, charts, batch, repo, tag, &digest)?;
        }
        if let (Some(id), Some(entry)) = (&chart, &put.chart) {
            inner.index_chart(charts, batch, id, entry, &digest, now)?;
        }
        Ok(digest)
    }
}

/// The project of a repository (its first component), for chart changes.
pub(crate) fn project_of(repo: &RepoName) -> RepoName {
    RepoName::parse(repo.project()).unwrap_or_else(|_| repo.clone())
}

impl Engine {
    /// Stores a manifest in `repo` and points `put.tags` at it, in one
    /// atomic batch. Every referenced blob must be linked in the repository
    /// and every referenced manifest present there. Re-putting an existing
    /// manifest only moves tags. A digest stored in any repository keeps
    /// its one record: a PUT with another media type is refused
    /// ([`ManifestError::MediaTypeConflict`]), and the references counted
    /// are the record's, not this request's parse. With `put.chart`, the chart version is
    /// indexed in the same batch (see `charts.rs`), after `chart.write`
    /// decided what happens to an existing version. Returns the manifest's
    /// digest.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        mut put: ManifestPut,
    ) -> Result<Digest, ManifestError> {
        let inner = &self.inner;
        let checked = check_put(repo, &mut put)?;
        let (_g, prefetched) = inner.lock_reading(checked.reads(repo, &put))?;
        let now = records::now_ms();
        let mut batch = Batch::default();
        let mut pending = Pending::prefetched(inner, prefetched);
        let mut charts = ChartChanges::new(project_of(repo));
        let digest = inner.manifest_into_batch(
            &mut pending,
            &mut charts,
            &mut batch,
            repo,
            put,
            checked,
            now,
        )?;
        pending.write(repo, &mut batch);
        charts.write(&**inner, &mut batch, now)?;
        inner.commit(_g, batch)?;
        Ok(digest)
    }

    /// Looks a manifest up by tag or digest in `repo`: one index read of
    /// the manifest's entry in `repo` (with the tag, when there is one: one
    /// round trip in cluster mode); the body, immutable, from this node's
    /// [`ManifestCache`] when it holds it.
    pub fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Manifest>, ManifestError> {
        let index = &self.inner.index;
        let (digest, link) = match reference {
            Reference::Digest(d) => (d.clone(), index.get(&link_key(repo, d))?),
            Reference::Tag(t) => match index.get_tag_link(&TagKey(repo.clone(), t.clone()))? {
                Some(found) => found,
                None => return Ok(None),
            },
        };
        let Some(link) = link else { return Ok(None) };
        let cache = &self.inner.manifest_cache;
        if let Some(m) = cache.manifest(&digest, &link) {
            return Ok(Some(m));
        }
        let (rec, body) = index.get2(&ManifestKey(digest.clone()), &BodyKey(digest.clone()))?;
        Ok(Some(cache.fill(repo, digest, rec, body)?))
    }

    /// [`Engine::get_manifest`] for a task (the server's read path): in
    /// cluster mode its database calls are awaited, so the worker thread
    /// neither blocks nor hands its other tasks to another thread.
    pub async fn get_manifest_async(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Manifest>, ManifestError> {
        let index = &self.inner.index;
        let (digest, link) = match reference {
            Reference::Digest(d) => match self.inner.link_cache.get(repo, d) {
                Some(link) => (d.clone(), Some(link)),
                None => {
                    let since = Instant::now();
                    let link = index.get_async(&link_key(repo, d)).await?;
                    if let (Some(l), true) = (&link, index.is_shared()) {
                        self.inner.link_cache.put(repo, d, since, l);
                    }
                    (d.clone(), link)
                }
            },
            Reference::Tag(t) => {
                let tag = TagKey(repo.clone(), t.clone());
                match index.get_tag_link_async(&tag).await? {
                    Some(found) => found,
                    None => return Ok(None),
                }
            }
        };
        let Some(link) = link else { return Ok(None) };
        let cache = &self.inner.manifest_cache;
        if let Some(m) = cache.manifest(&digest, &link) {
            return Ok(Some(m));
        }
        let (mkey, bkey) = (ManifestKey(digest.clone()), BodyKey(digest.clone()));
        let (rec, body) = index.get2_async(&mkey, &bkey).await?;
        Ok(Some(cache.fill(repo, digest, rec, body)?))
    }

    /// Deletes manifest `digest` from `repo`, with every tag pointing at it,
    /// releasing its references. Returns false if it was not there.
    pub fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, ManifestError> {
        self.inner.delete_manifest(repo, digest, DeleteIf::Present)
    }

    /// Removes `tag` from `repo`. The manifest stays. Returns false if the
    /// tag did not exist.
    pub fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, ManifestError> {
        let inner = &self.inner;
        let _g = inner.lock()?;
        let Some(digest) = inner.resolve(repo, &Reference::Tag(tag.clone()))? else {
            return Ok(false);
        };
        inner.refuse_immutable(repo, tag)?;
        let mut batch = Batch::default();
        let mut pending = Pending::new(inner);
        let mut charts = ChartChanges::new(project_of(repo));
        if let Some(r) = pending.repo_manifest(repo, &digest)? {
            Count::Tags.down(&mut r.tags, || format!("manifest {repo}@{digest}"))?;
        }
        inner.unindex_chart_tag(&pending, &mut charts, &mut batch, repo, tag, &digest)?;
        batch.delete(&TagKey(repo.clone(), tag.clone()));
        pending.write(repo, &mut batch);
        charts.write(&**inner, &mut batch, records::now_ms())?;
        inner.commit(_g, batch)?;
        Ok(true)
    }

    /// Manifests in `repo` whose subject is `subject`, optionally only those
    /// of one artifact type, in digest order (every one: tests and tools;
    /// the server reads [`Engine::referrers_page`]).
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, ManifestError> {
        Ok(self
            .referrers_page(repo, subject, artifact_type, None, usize::MAX)?
            .0)
    }

    /// One bounded page of [`Engine::referrers`]: referrers strictly after
    /// `after`, reading at most `limit` index keys (a filtered-out referrer
    /// counts too). Returns the page and, if keys remain, the last digest
    /// read, where the next page starts.
    pub fn referrers_page(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<(Vec<Referrer>, Option<Digest>), ManifestError> {
        let inner = &self.inner;
        let scan = match after {
            Some(d) => ReferrerKey::of_subject_after(repo, subject, d),
            None => ReferrerKey::of_subject(repo, subject),
        };
        let mut out = Vec::new();
        let mut last: Option<Digest> = None;
        for (read, r) in inner.index.scan_keys(scan).enumerate() {
            if read == limit {
                return Ok((out, last));
            }
            let d = r?.referrer;
            last = Some(d.clone());
            let Some(rec) = inner.index.get(&ManifestKey(d.clone()))? else {
                continue;
            };
            if artifact_type.is_some_and(|t| rec.artifact_type.as_deref() != Some(t)) {
                continue;
            }
            out.push(Referrer {
                digest: d,
                media_type: rec.media_type,
                size: rec.size,
                artifact_type: rec.artifact_type,
                annotations: rec.annotations,
            });
        }
        Ok((out, None))
    }

    /// The index record of a manifest's content (tools, tests).
    pub fn manifest_record(&self, digest: &Digest) -> Result<Option<ManifestRecord>, StorageError> {
        self.inner.index.get(&ManifestKey(digest.clone()))
    }

    /// The per-repository record of a manifest (tools, tests).
    pub fn repo_manifest_record(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<RepoManifestRecord>, StorageError> {
        self.inner
            .index
            .get(&RepoManifestKey(repo.clone(), digest.clone()))
    }
}

/// When [`Inner::delete_manifest`] deletes: its precondition, checked
/// under the write lock with the delete, so a change made after the caller
/// looked keeps the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeleteIf<'a> {
    /// Whatever points at it (the registry API's `DELETE`; its tags go
    /// too).
    Present,
    /// Only if it has no tag, no parent index in the repository and is not
    /// an accessory (a referrer whose subject is in the repository): GC's
    /// `delete_untagged`.
    Untagged,
    /// Only if it is still a top-level artifact with exactly these tags
    /// (sorted): retention, which decided on what it saw.
    TopLevelWithTags(&'a [String]),
}

impl Inner {
    /// Deletes manifest `digest` from `repo` (see [`Engine::delete_manifest`])
    /// if `when` holds. Returns false if it was not there or `when` did not
    /// hold.
    pub(crate) fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        when: DeleteIf<'_>,
    ) -> Result<bool, ManifestError> {
        let _g = self.lock()?;
        let mut batch = Batch::default();
        let mut pending = Pending::new(self);
        let Some(rm) = pending.repo_manifest(repo, digest)?.clone() else {
            return Ok(false);
        };
        let top_level = || -> Result<bool, StorageError> {
            Ok(rm.parents == 0 && !self.is_accessory(repo, digest)?)
        };
        if when == DeleteIf::Untagged && (rm.tags > 0 || !top_level()?) {
            return Ok(false);
        }
        let mut tags = Vec::new();
        if rm.tags > 0 {
            for r in self.index.scan(TagKey::of_repo(repo)) {
                let (TagKey(_, tag), TagRecord(target)) = r?;
                if &target == digest {
                    tags.push(tag);
                }
            }
        }
        if let DeleteIf::TopLevelWithTags(want) = when {
            let same = tags.len() == want.len()
                && tags.iter().zip(want).all(|(t, w)| t.as_str() == w.as_str());
            if !same || !top_level()? {
                return Ok(false);
            }
        }
        // Its tags go with it: none may be immutable.
        for tag in &tags {
            self.refuse_immutable(repo, tag)?;
        }
        let now = records::now_ms();
        let mut charts = ChartChanges::new(project_of(repo));
        self.remove_manifest(&mut pending, &mut batch, &mut charts, repo, digest, now)?;
        pending.write(repo, &mut batch);
        charts.write(self, &mut batch, now)?;
        if when == DeleteIf::Untagged {
            // GC: one wait for its whole phase (`gc_untagged`).
            self.commit_unleased(_g, batch)?;
        } else {
            self.commit(_g, batch)?;
        }
        Ok(true)
    }

    /// True if manifest `digest` has a subject that is present in `repo`.
    pub(crate) fn is_accessory(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, StorageError> {
        let rec = self.index.get(&ManifestKey(digest.clone()))?;
        match rec.and_then(|m| m.subject) {
            Some(subject) => self.index.contains(&RepoManifestKey(repo.clone(), subject)),
            None => Ok(false),
        }
    }
}

/// The chart id of `entry` pushed to `repo`, which must be `project/name`.
fn chart_id_in(repo: &RepoName, entry: &ChartEntry) -> Result<ChartId, ManifestError> {
    let invalid = |reason: String| ManifestError::ChartInvalid {
        repo: repo.to_string(),
        chart: format!("{}-{}", entry.name, entry.version),
        reason,
    };
    let Some((project, name)) = chart_repo_parts(repo) else {
        return Err(invalid(
            "charts live in repositories named project/chart".into(),
        ));
    };
    if name != entry.name {
        return Err(invalid(format!(
            "the chart is named {:?}, the repository {name:?}",
            entry.name
        )));
    }
    ChartId::parse(project.as_str(), &entry.name, &entry.version)
        .map_err(|e| invalid(e.to_string()))
}

/// `repo`'s entry of manifest `d`.
fn link_key(repo: &RepoName, d: &Digest) -> RepoManifestKey {
    RepoManifestKey(repo.clone(), d.clone())
}

/// How long a node serves a manifest's repository entry it read by digest
/// from the shared index (cluster mode) without reading it again, counted
/// from before its read began.
pub(crate) const LINK_LEASE: Duration = Duration::from_millis(200);

/// How long a batch that removes repository entries waits after its commit
/// before it is acknowledged: [`LINK_LEASE`], and a margin for the rates
/// of two nodes' clocks.
pub(crate) const LINK_LEASE_WAIT: Duration = Duration::from_millis(220);

/// Most entries a [`LinkCache`] holds.
const LINK_CACHE_ENTRIES: usize = 100_000;

/// Cluster mode: the repository entries a node read for GETs by digest,
/// each with the instant its read began. An entry is used for
/// [`LINK_LEASE`] from then, never after; only entries that exist are kept
/// (a push is visible at once). What makes this safe is the other half
/// (`Inner::commit`): a batch that deletes an entry is acknowledged
/// [`LINK_LEASE_WAIT`] after its commit, when every copy read before the
/// commit has expired on every node. So after a delete's answer no node
/// serves the manifest, as without the cache; a GET by digest under load
/// costs no database call. Tag reads are not cached: a tag PUT would wait
/// too.
pub(crate) struct LinkCache(
    quick_cache::sync::Cache<(RepoName, Digest), (Instant, RepoManifestRecord)>,
);

impl LinkCache {
    pub(crate) fn new() -> LinkCache {
        LinkCache(quick_cache::sync::Cache::new(LINK_CACHE_ENTRIES))
    }

    fn get(&self, repo: &RepoName, d: &Digest) -> Option<RepoManifestRecord> {
        let (since, rec) = self.0.get(&(repo.clone(), d.clone()))?;
        (since.elapsed() < LINK_LEASE).then_some(rec)
    }

    fn put(&self, repo: &RepoName, d: &Digest, since: Instant, rec: &RepoManifestRecord) {
        self.0
            .insert((repo.clone(), d.clone()), (since, rec.clone()));
    }
}

/// Bytes of manifest bodies a node keeps (at most 4 MiB each).
const MANIFEST_CACHE_BYTES: u64 = 64 << 20;

/// This node's copy of manifest bodies, by digest: what a read needs beside
/// the manifest's entry in the repository, which is read from the index
/// every time (it is what a push, delete or GC changes). A body and the
/// subject parsed from it are functions of the digest, so a copy is never
/// stale, in cluster mode too; the media type comes from the entry, since
/// a manifest collected and pushed again may come with another one.
/// Bounded by [`MANIFEST_CACHE_BYTES`], least recently used first out.
pub(crate) struct ManifestCache(quick_cache::sync::Cache<Digest, CachedBody, BodyWeight>);

#[derive(Clone)]
pub(crate) struct CachedBody {
    body: Arc<[u8]>,
    subject: Option<Digest>,
}

#[derive(Clone)]
pub(crate) struct BodyWeight;

impl quick_cache::Weighter<Digest, CachedBody> for BodyWeight {
    fn weight(&self, _: &Digest, v: &CachedBody) -> u64 {
        // The body and what holds it.
        v.body.len() as u64 + 128
    }
}

impl ManifestCache {
    pub(crate) fn new() -> ManifestCache {
        let items = (MANIFEST_CACHE_BYTES / 2048) as usize;
        ManifestCache(quick_cache::sync::Cache::with_weighter(
            items,
            MANIFEST_CACHE_BYTES,
            BodyWeight,
        ))
    }

    /// Manifest `digest` as `link` (its entry in a repository) and the
    /// cached body make it, if the body is here and the entry carries the
    /// media type.
    fn manifest(&self, digest: &Digest, link: &RepoManifestRecord) -> Option<Manifest> {
        if link.media_type.is_empty() {
            return None;
        }
        let c = self.0.get(digest)?;
        Some(Manifest {
            digest: digest.clone(),
            media_type: link.media_type.clone(),
            body: c.body,
            subject: c.subject,
        })
    }

    /// The manifest of a record and body read from the index (its entry in
    /// `repo` was found), keeping the body; both must be there.
    fn fill(
        &self,
        repo: &RepoName,
        digest: Digest,
        rec: Option<ManifestRecord>,
        body: Option<ManifestBody>,
    ) -> Result<Manifest, StorageError> {
        let (Some(rec), Some(ManifestBody(body))) = (rec, body) else {
            return Err(StorageError::Corrupt {
                what: format!("manifests/{digest}"),
                detail: format!("linked in {repo} but its record or body is missing"),
            });
        };
        let body: Arc<[u8]> = body.into();
        let cached = CachedBody {
            body: body.clone(),
            subject: rec.subject.clone(),
        };
        self.0.insert(digest.clone(), cached);
        Ok(Manifest {
            digest,
            media_type: rec.media_type,
            body,
            subject: rec.subject,
        })
    }
}
