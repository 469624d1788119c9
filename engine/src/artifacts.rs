//! Repositories and artifacts as Harbor's API lists them: the read side
//! of `/api/v2.0/projects/{p}/repositories…`, and the deletion of a whole
//! repository.
//!
//! An artifact is a manifest present in a repository that no index of the
//! repository lists and that is not an accessory (a referrer whose subject
//! is in the repository): Harbor's top-level artifacts. Index children are
//! its `references`, referrers its `accessories`.

use std::collections::HashMap;

use crate::digest::Digest;
use crate::engine::Engine;
use crate::error::{ManifestError, StorageError};
use crate::index::Batch;
use crate::keys::{BlobKey, LinkKey, ManifestKey, PullKey, RepoKey, RepoManifestKey, TagKey};
use crate::names::RepoName;
use crate::records::{ManifestRecord, PullRecord, RepoManifestRecord};

/// One repository of a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoSummary {
    pub name: RepoName,
    pub created_ms: u64,
    /// Top-level artifacts (see the module docs).
    pub artifact_count: u64,
    /// The latest push of a manifest into it.
    pub updated_ms: u64,
    /// Pulls of its manifests, as last flushed.
    pub pull_count: u64,
    /// Bytes its manifests hold: every manifest and each blob they
    /// reference, a blob once however many of them share it.
    pub size: u64,
}

/// One manifest of a repository, with what the artifact API shows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub digest: Digest,
    pub record: ManifestRecord,
    pub in_repo: RepoManifestRecord,
    /// Its tags in the repository, sorted.
    pub tags: Vec<String>,
    /// Whether it is an index child or an accessory in the repository (not
    /// a top-level artifact).
    pub nested: bool,
}

impl Engine {
    /// The names of `project`'s repositories that hold at least one
    /// manifest, in name order: one scan of the project's repositories
    /// and one seek into each one's manifests, no summaries (a listing
    /// pages these, then summarizes only its page: [`Engine::repository`]).
    pub fn repository_names_of(&self, project: &str) -> Result<Vec<RepoName>, StorageError> {
        let index = &self.inner.index;
        let prefix = format!("{project}/");
        let mut out = Vec::new();
        for r in index.scan_keys(RepoKey::after(&prefix)) {
            let RepoKey(repo) = r?;
            if !repo.as_str().starts_with(&prefix) {
                break;
            }
            if index
                .scan_keys(RepoManifestKey::of_repo(&repo))
                .next()
                .transpose()?
                .is_some()
            {
                out.push(repo);
            }
        }
        Ok(out)
    }

    /// Repository `repo`, if it holds at least one manifest.
    pub fn repository(&self, repo: &RepoName) -> Result<Option<RepoSummary>, StorageError> {
        match self.inner.index.get(&RepoKey(repo.clone()))? {
            Some(rec) => self.summary(repo.clone(), rec.created_ms),
            None => Ok(None),
        }
    }

    fn summary(
        &self,
        repo: RepoName,
        created_ms: u64,
    ) -> Result<Option<RepoSummary>, StorageError> {
        let arts = self.artifacts(&repo)?;
        if arts.is_empty() {
            return Ok(None);
        }
        let mut blobs = std::collections::HashSet::new();
        let mut size = 0;
        for a in &arts {
            size += a.record.size;
            blobs.extend(a.record.blobs.iter());
        }
        for b in blobs {
            size += self
                .inner
                .index
                .get(&BlobKey(b.clone()))?
                .map_or(0, |r| r.size);
        }
        Ok(Some(RepoSummary {
            size,
            pull_count: self.pulls_of(&repo)?.values().map(|p| p.count).sum(),
            artifact_count: arts.iter().filter(|a| !a.nested).count() as u64,
            updated_ms: arts.iter().map(|a| a.in_repo.created_ms).max().unwrap_or(0),
            created_ms,
            name: repo,
        }))
    }

    /// Every manifest of `repo`, newest push first (then by digest), with
    /// its tags ([`Engine::artifact_size`] gives a size). Index children and accessories come with
    /// `nested` set.
    pub fn artifacts(&self, repo: &RepoName) -> Result<Vec<Artifact>, StorageError> {
        let index = &self.inner.index;
        let mut tags: HashMap<Digest, Vec<String>> = HashMap::new();
        for r in index.scan(TagKey::of_repo(repo)) {
            let (TagKey(_, tag), target) = r?;
            tags.entry(target.0).or_default().push(tag.into_string());
        }
        let mut present = Vec::new();
        for r in index.scan(RepoManifestKey::of_repo(repo)) {
            let (RepoManifestKey(_, digest), in_repo) = r?;
            present.push((digest, in_repo));
        }
        let held: std::collections::HashSet<&Digest> = present.iter().map(|(d, _)| d).collect();
        let mut out = Vec::new();
        for (digest, in_repo) in &present {
            let Some(record) = index.get(&ManifestKey(digest.clone()))? else {
                continue;
            };
            let accessory = record.subject.as_ref().is_some_and(|s| held.contains(s));
            let mut t = tags.remove(digest).unwrap_or_default();
            t.sort();
            out.push(Artifact {
                nested: in_repo.parents > 0 || accessory,
                digest: digest.clone(),
                record,
                in_repo: in_repo.clone(),
                tags: t,
            });
        }
        out.sort_by(|a, b| {
            b.in_repo
                .created_ms
                .cmp(&a.in_repo.created_ms)
                .then_with(|| a.digest.cmp(&b.digest))
        });
        Ok(out)
    }

    /// A manifest's size with what it references, one level down: its
    /// blobs for an image, its children and theirs for an index. Reads
    /// every blob record, so callers ask only for what they render.
    pub fn artifact_size(&self, m: &ManifestRecord) -> Result<u64, StorageError> {
        let index = &self.inner.index;
        let mut size = m.size;
        for b in &m.blobs {
            size += index.get(&BlobKey(b.clone()))?.map_or(0, |r| r.size);
        }
        for c in &m.manifests {
            if let Some(child) = index.get(&ManifestKey(c.clone()))? {
                size += child.size;
                for b in &child.blobs {
                    size += index.get(&BlobKey(b.clone()))?.map_or(0, |r| r.size);
                }
            }
        }
        Ok(size)
    }

    /// Deletes repository `repo`: every manifest (indexes before their
    /// children, with their tags) and every blob link, so it leaves the
    /// catalog; the bytes go with GC. Each manifest is its own batch, as a
    /// client's `DELETE`s would be. Returns how many manifests went.
    pub fn delete_repository(&self, repo: &RepoName) -> Result<u64, ManifestError> {
        // Refused whole, before anything goes, while an immutability rule
        // covers one of its tags (each manifest's own delete checks again
        // under the lock).
        {
            let _g = self.inner.lock()?;
            for r in self.inner.index.scan_keys(TagKey::of_repo(repo)) {
                let TagKey(_, tag) = r?;
                self.inner.refuse_immutable(repo, &tag)?;
            }
        }
        let mut deleted = 0;
        loop {
            // Top-level first: a child is deleted once no index lists it.
            let next: Vec<Digest> = self
                .artifacts(repo)?
                .into_iter()
                .filter(|a| a.in_repo.parents == 0)
                .map(|a| a.digest)
                .collect();
            if next.is_empty() {
                break;
            }
            for d in next {
                if self.delete_manifest(repo, &d)? {
                    deleted += 1;
                }
            }
        }
        let links: Vec<Digest> = self
            .inner
            .index
            .scan_keys(LinkKey::of_repo(repo))
            .map(|r| r.map(|LinkKey(_, d)| d))
            .collect::<Result<_, _>>()?;
        for d in links {
            self.inner.unlink(repo, &d)?;
        }
        // The repository record goes too (it leaves the catalog), in a
        // batch that checks under the lock that nothing came back since.
        let inner = &self.inner;
        let g = inner.lock()?;
        let empty = inner
            .index
            .scan_keys(LinkKey::of_repo(repo))
            .next()
            .is_none()
            && inner
                .index
                .scan_keys(RepoManifestKey::of_repo(repo))
                .next()
                .is_none()
            && inner
                .index
                .scan_keys(TagKey::of_repo(repo))
                .next()
                .is_none();
        if empty && inner.index.contains(&RepoKey(repo.clone()))? {
            let mut batch = Batch::default();
            batch.delete(&RepoKey(repo.clone()));
            for r in inner.index.scan_keys(PullKey::of_repo(repo)) {
                batch.delete(&r?);
            }
            inner.commit(g, batch)?;
        }
        Ok(deleted)
    }
}

/// Pulls counted since the last flush: (repository, manifest) → (count,
/// latest pull).
pub type PullCounts = std::collections::HashMap<(RepoName, Digest), (u64, u64)>;

impl Engine {
    /// Adds `counts` to the pull records, in one unsynced batch: pull
    /// counts are statistics, recorded without a synced write per pull (a
    /// crash may lose the last unsynced batch, never anything else).
    /// Manifests no longer in their repository are skipped.
    pub fn add_pulls(&self, counts: &PullCounts) -> Result<(), StorageError> {
        if counts.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let g = inner.lock()?;
        let mut batch = Batch::default();
        for ((repo, digest), (n, last)) in counts {
            if !inner
                .index
                .contains(&RepoManifestKey(repo.clone(), digest.clone()))?
            {
                continue;
            }
            let key = PullKey(repo.clone(), digest.clone());
            let mut rec: PullRecord = inner.index.get(&key)?.unwrap_or_default();
            rec.count = rec.count.saturating_add(*n);
            rec.last_ms = rec.last_ms.max(*last);
            batch.put(&key, &rec);
        }
        inner.commit_unsynced(g, batch)
    }

    /// The pull record of every manifest of `repo` that was pulled.
    pub fn pulls_of(&self, repo: &RepoName) -> Result<HashMap<Digest, PullRecord>, StorageError> {
        self.inner
            .index
            .scan(PullKey::of_repo(repo))
            .map(|r| r.map(|(PullKey(_, d), rec)| (d, rec)))
            .collect()
    }
}
