//! Per-project storage usage and quotas (Harbor's `/quotas` and project
//! `storage_limit`).
//!
//! A project's usage is the bytes of the blobs its repositories link, each
//! blob counted once however many of its repositories link it. It is
//! derived from `links`: `project_blobs` counts, per project and blob, the
//! links naming the blob, and `project_usage` sums the sizes of the blobs
//! with a count above zero.
//!
//! Architecture Invariant: usage cannot drift from `links`. No write path
//! maintains it: the commit itself does ([`Inner::settle_usage`], called by
//! `Inner::commit` and `Inner::commit_unsynced` on every batch), from the
//! `links` entries the batch puts and deletes, in the same batch. A new way
//! of linking or unlinking a blob is counted without knowing about quotas.
//!
//! The limit is enforced in two places:
//! - at the commit, under the write lock: a batch that raises a project's
//!   usage past its limit is refused whole ([`StorageError::QuotaExceeded`]),
//!   whatever route built it (upload, mount, chart, import, replication);
//! - before bytes are stored ([`Inner::reserve_quota`]): an upload's
//!   completion and a chart upload reserve their blob's size against the
//!   limit, counting the reservations of this node's other completions in
//!   flight, so a push over quota is refused before the store holds its
//!   bytes, and the commit's check does not fail behind it on one node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::digest::Digest;
use crate::engine::{Engine, Inner};
use crate::error::StorageError;
use crate::index::Batch;
use crate::keys::{
    BlobKey, Cf, IndexKey, LinkKey, ProjectBlobKey, ProjectKey, UsageCountedKey, UsageKey,
    WholeFamily,
};
use crate::names::RepoName;
use crate::records::{BlobRecord, Count, Marker, ProjectBlobRecord, Record, UsageRecord};

/// Bytes reserved by completions in flight on this node, by project.
#[derive(Default)]
pub(crate) struct Reservations(Mutex<HashMap<String, u64>>);

/// A reservation of [`Inner::reserve_quota`]; given back when dropped
/// (after the commit that counts the blob, or on failure).
pub(crate) struct Reservation<'a> {
    held: &'a Reservations,
    project: String,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut map = self.held.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.project) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                map.remove(&self.project);
            }
        }
    }
}

/// A project's quota as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    pub project: String,
    /// The project's id (Harbor's quota id too: one quota per project).
    pub id: u64,
    pub owner: String,
    /// None: unlimited.
    pub limit: Option<u64>,
    pub used: UsageRecord,
    pub created_ms: u64,
}

impl Inner {
    /// Adds to `batch` the usage its `links` changes make: each link it
    /// adds or removes (compared with the index before the batch) moves
    /// the count of its project and blob, and a count leaving or reaching
    /// zero moves the project's usage by the blob's size. Refuses the batch
    /// with [`StorageError::QuotaExceeded`] if a project's usage grows past
    /// its limit (unless the batch allows it). IMPORTANT: the caller holds
    /// the write lock; called by the commit, nowhere else.
    pub(crate) fn settle_usage(&self, batch: &mut Batch) -> Result<(), StorageError> {
        let mut links: HashMap<&[u8], bool> = HashMap::new();
        for (key, value) in batch.changes(Cf::Links) {
            links.insert(key, value.is_some());
        }
        if links.is_empty() {
            return Ok(());
        }
        // The blob records the batch writes, last write winning: sizes of
        // blobs it indexes (read once, not once per blob).
        let written: HashMap<Vec<u8>, Option<Vec<u8>>> = batch
            .changes(Cf::Blobs)
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        let mut moved: BTreeMap<(String, Digest), i64> = BTreeMap::new();
        for (bytes, present) in links {
            let key = match LinkKey::decode(bytes) {
                Ok(k) => k,
                // A corrupt key being removed linked nothing countable.
                Err(_) => continue,
            };
            if self.index.contains(&key)? == present {
                continue;
            }
            let LinkKey(repo, digest) = key;
            *moved
                .entry((repo.project().to_owned(), digest))
                .or_default() += if present { 1 } else { -1 };
        }
        // Project -> (usage before, usage after).
        let mut usage: BTreeMap<String, (UsageRecord, UsageRecord)> = BTreeMap::new();
        for ((project, digest), n) in moved {
            if n == 0 {
                continue;
            }
            let key = ProjectBlobKey(project.clone(), digest.clone());
            let mut rec = self.index.get(&key)?.unwrap_or_default();
            let before = rec.links;
            let what = || format!("project {project} blob {digest}");
            for _ in 0..n.unsigned_abs() {
                if n > 0 {
                    Count::ProjectLinks.up(&mut rec.links, what)?;
                } else {
                    Count::ProjectLinks.down(&mut rec.links, what)?;
                }
            }
            if rec.links == 0 {
                batch.delete(&key);
            } else {
                batch.put(&key, &rec);
            }
            if (before == 0) == (rec.links == 0) {
                continue;
            }
            let size = self.size_in_batch(&written, &digest)?;
            let entry = match usage.get_mut(&project) {
                Some(e) => e,
                None => {
                    let u = self
                        .index
                        .get(&UsageKey(project.clone()))?
                        .unwrap_or_default();
                    usage.entry(project.clone()).or_insert((u.clone(), u))
                }
            };
            let u = &mut entry.1;
            let what = || format!("project {project} usage");
            if before == 0 {
                Count::UsageBlobs.up(&mut u.blobs, what)?;
                Count::UsageBytes.add(&mut u.bytes, size, what)?;
            } else {
                Count::UsageBlobs.down(&mut u.blobs, what)?;
                Count::UsageBytes.sub(&mut u.bytes, size, what)?;
            }
        }
        for (project, (before, after)) in usage {
            if after.bytes > before.bytes && !batch.over_quota_allowed() {
                if let Some(limit) = self.storage_limit(&project)? {
                    if after.bytes > limit {
                        return Err(StorageError::QuotaExceeded {
                            project,
                            adding: after.bytes - before.bytes,
                            used: before.bytes,
                            limit,
                        });
                    }
                }
            }
            let key = UsageKey(project);
            if after == UsageRecord::default() {
                batch.delete(&key);
            } else {
                batch.put(&key, &after);
            }
        }
        Ok(())
    }

    /// The size of blob `d`: its record as the batch writes it (`written`:
    /// a blob the batch indexes), else as stored. A link to a blob without
    /// a record counts nothing (fsck reports the link).
    fn size_in_batch(
        &self,
        written: &HashMap<Vec<u8>, Option<Vec<u8>>>,
        d: &Digest,
    ) -> Result<u64, StorageError> {
        let key = BlobKey(d.clone());
        if let Some(Some(v)) = written.get(&key.encode()) {
            let rec = BlobRecord::decode(v).map_err(|detail| StorageError::Corrupt {
                what: format!("blob {d}"),
                detail,
            })?;
            return Ok(rec.size);
        }
        match self.index.get(&key)? {
            Some(r) => Ok(r.size),
            None => {
                tracing::warn!(blob = %d, "a link names a blob without a record; counted as 0 bytes");
                Ok(0)
            }
        }
    }

    /// The storage limit of `project`, if it has one.
    fn storage_limit(&self, project: &str) -> Result<Option<u64>, StorageError> {
        Ok(self
            .index
            .get(&ProjectKey(project.to_owned()))?
            .and_then(|p| p.storage_limit))
    }

    /// Reserves `size` bytes of `repo`'s project for blob `digest` before
    /// its bytes are stored: refused with [`StorageError::QuotaExceeded`]
    /// when the project's usage, this node's other reservations and `size`
    /// together pass its limit. Nothing is reserved for a project without a
    /// limit or one that holds the blob already (linking it again adds
    /// nothing). Not under the write lock: the commit checks again.
    pub(crate) fn reserve_quota(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<Reservation<'_>>, StorageError> {
        let project = repo.project();
        let Some(limit) = self.storage_limit(project)? else {
            return Ok(None);
        };
        let key = ProjectBlobKey(project.to_owned(), digest.clone());
        if self.index.contains(&key)? {
            return Ok(None);
        }
        let used = self
            .index
            .get(&UsageKey(project.to_owned()))?
            .unwrap_or_default()
            .bytes;
        let mut map = self.reserved.0.lock().unwrap_or_else(|p| p.into_inner());
        let held = map.get(project).copied().unwrap_or(0);
        let before = used.saturating_add(held);
        if before.saturating_add(size) > limit {
            return Err(StorageError::QuotaExceeded {
                project: project.to_owned(),
                adding: size,
                used: before,
                limit,
            });
        }
        *map.entry(project.to_owned()).or_default() += size;
        Ok(Some(Reservation {
            held: &self.reserved,
            project: project.to_owned(),
            bytes: size,
        }))
    }

    /// Counts `project_blobs` and `project_usage` from `links` once, for
    /// an index written before they existed (a fresh index has no links).
    /// Later opens find the marker in `meta` and skip this.
    pub(crate) fn count_usage(&self) -> Result<(), StorageError> {
        if self.index.contains(&UsageCountedKey)? {
            return Ok(());
        }
        let g = self.lock()?;
        let (blobs, usage) = self.recount_usage()?;
        let mut b = Batch::default();
        let n = blobs.len();
        for ((project, d), links) in blobs {
            b.put(&ProjectBlobKey(project, d), &ProjectBlobRecord { links });
        }
        for (project, rec) in usage {
            b.put(&UsageKey(project), &rec);
        }
        b.put(&UsageCountedKey, &Marker);
        self.commit(g, b)?;
        if n > 0 {
            tracing::info!(entries = n, "counted project storage usage");
        }
        Ok(())
    }

    /// Rewrites `project_blobs` and `project_usage` as
    /// [`Inner::recount_usage`] finds them (`fsck --repair`). Returns what
    /// it did.
    pub(crate) fn rewrite_usage(&self) -> Result<String, StorageError> {
        let g = self.lock()?;
        let (blobs, usage) = self.recount_usage()?;
        let mut b = Batch::default();
        for r in self.index.scan_keys(ProjectBlobKey::all()) {
            let key = r?;
            if !blobs.contains_key(&(key.0.clone(), key.1.clone())) {
                b.delete(&key);
            }
        }
        for r in self.index.scan_keys(UsageKey::all()) {
            let key = r?;
            if !usage.contains_key(&key.0) {
                b.delete(&key);
            }
        }
        let projects = usage.len();
        for ((project, d), links) in blobs {
            b.put(&ProjectBlobKey(project, d), &ProjectBlobRecord { links });
        }
        for (project, rec) in usage {
            b.put(&UsageKey(project), &rec);
        }
        self.commit(g, b)?;
        Ok(format!("project usage recounted ({projects} projects)"))
    }

    /// `project_blobs` and `project_usage` as `links` and the blob
    /// records say they must be (open, fsck). Corrupt `links` keys are
    /// skipped (fsck reports them).
    pub(crate) fn recount_usage(&self) -> Result<RecountedUsage, StorageError> {
        let mut blobs: BTreeMap<(String, Digest), u64> = BTreeMap::new();
        for r in self.index.scan_keys(LinkKey::all()) {
            let LinkKey(repo, d) = match r {
                Ok(k) => k,
                Err(StorageError::CorruptKey(_)) => continue,
                Err(e) => return Err(e),
            };
            *blobs.entry((repo.project().to_owned(), d)).or_default() += 1;
        }
        let mut usage: BTreeMap<String, UsageRecord> = BTreeMap::new();
        for (project, d) in blobs.keys() {
            let size = self.index.get(&BlobKey(d.clone()))?.map_or(0, |r| r.size);
            let u = usage.entry(project.clone()).or_default();
            u.bytes = u.bytes.saturating_add(size);
            u.blobs += 1;
        }
        Ok((blobs, usage))
    }
}

/// What [`Inner::recount_usage`] finds: the links per project and blob,
/// and each project's usage.
pub(crate) type RecountedUsage = (
    BTreeMap<(String, Digest), u64>,
    BTreeMap<String, UsageRecord>,
);

impl Engine {
    /// The quota of `project`, or `None` if there is no such project.
    pub fn quota(&self, project: &str) -> Result<Option<Quota>, StorageError> {
        let Some(rec) = self.inner.index.get(&ProjectKey(project.to_owned()))? else {
            return Ok(None);
        };
        let used = self
            .inner
            .index
            .get(&UsageKey(project.to_owned()))?
            .unwrap_or_default();
        Ok(Some(Quota {
            project: project.to_owned(),
            id: rec.id,
            owner: rec.owner,
            limit: rec.storage_limit,
            used,
            created_ms: rec.created_ms,
        }))
    }

    /// Every project's quota, by project name.
    pub fn quotas(&self) -> Result<Vec<Quota>, StorageError> {
        let mut out = Vec::new();
        for r in self.inner.index.scan(ProjectKey::all()) {
            let (ProjectKey(name), rec) = r?;
            let used = self
                .inner
                .index
                .get(&UsageKey(name.clone()))?
                .unwrap_or_default();
            out.push(Quota {
                project: name,
                id: rec.id,
                owner: rec.owner,
                limit: rec.storage_limit,
                used,
                created_ms: rec.created_ms,
            });
        }
        Ok(out)
    }

    /// Sets `project`'s storage limit (`None`: unlimited). A limit below
    /// the current usage is accepted, as in Harbor: nothing stored is
    /// removed, and pushes that add bytes are refused until usage drops.
    /// False if there is no such project.
    pub fn set_storage_limit(
        &self,
        project: &str,
        limit: Option<u64>,
    ) -> Result<bool, StorageError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = ProjectKey(project.to_owned());
        let Some(mut rec) = inner.index.get(&key)? else {
            return Ok(false);
        };
        rec.storage_limit = limit;
        let mut b = Batch::default();
        b.put(&key, &rec);
        inner.commit(g, b)?;
        tracing::info!(project, ?limit, "storage limit set");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use crate::fsck::FsckOptions;
    use crate::EngineConfig;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn usage(e: &Engine, p: &str) -> UsageRecord {
        e.quota(p).unwrap().unwrap().used
    }

    /// An index without the usage families (written before they existed)
    /// gets them counted at open; fsck finds a wrong count and repair
    /// recounts it.
    #[test]
    fn usage_is_counted_at_open_and_checked_by_fsck() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![5u8; 4096];
        let d = Digest::of(Algorithm::Sha256, &data);
        {
            let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
            e.create_project("p", false, None).unwrap();
            e.put_blob(&repo("p/a"), &d, &data).unwrap();
            e.put_blob(&repo("p/b"), &d, &data).unwrap();
            assert_eq!(
                usage(&e, "p"),
                UsageRecord {
                    bytes: 4096,
                    blobs: 1
                }
            );
            // As an older berth left it: no marker, no derived entries.
            let g = e.inner.lock().unwrap();
            let mut b = Batch::default();
            b.delete(&UsageCountedKey);
            b.delete(&UsageKey("p".into()));
            b.delete(&ProjectBlobKey("p".into(), d.clone()));
            e.inner.commit(g, b).unwrap();
            assert_eq!(usage(&e, "p"), UsageRecord::default());
        }
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        assert_eq!(
            usage(&e, "p"),
            UsageRecord {
                bytes: 4096,
                blobs: 1
            }
        );
        assert!(e.fsck(FsckOptions::default()).unwrap().findings.is_empty());

        // A wrong count is a finding; repair recounts.
        let g = e.inner.lock().unwrap();
        let mut b = Batch::default();
        b.put(&UsageKey("p".into()), &UsageRecord { bytes: 1, blobs: 7 });
        b.put(
            &ProjectBlobKey("p".into(), d.clone()),
            &ProjectBlobRecord { links: 1 },
        );
        b.put(
            &UsageKey("ghost".into()),
            &UsageRecord { bytes: 9, blobs: 1 },
        );
        e.inner.commit(g, b).unwrap();
        let report = e.fsck(FsckOptions::default()).unwrap();
        let objects: Vec<&str> = report.findings.iter().map(|f| f.object.as_str()).collect();
        assert!(objects.contains(&"project p usage"), "{objects:?}");
        assert!(objects.contains(&"project ghost usage"), "{objects:?}");
        assert!(
            objects.contains(&format!("project p blob {d}").as_str()),
            "{objects:?}"
        );
        e.fsck_repair(FsckOptions::default()).unwrap();
        assert!(e.fsck(FsckOptions::default()).unwrap().findings.is_empty());
        assert_eq!(
            usage(&e, "p"),
            UsageRecord {
                bytes: 4096,
                blobs: 1
            }
        );
        // The recounted entries are what later link changes count from.
        e.unlink_blob(&repo("p/a"), &d).unwrap();
        e.unlink_blob(&repo("p/b"), &d).unwrap();
        assert_eq!(usage(&e, "p"), UsageRecord::default());
        assert!(e.fsck(FsckOptions::default()).unwrap().findings.is_empty());
    }

    /// Concurrent completions in one project share the limit through their
    /// reservations: however they interleave, usage never passes it and no
    /// refused push leaves a stored blob.
    #[test]
    fn concurrent_pushes_never_pass_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        e.create_project_with("p", false, None, None, Some(5 * 10_000))
            .unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..12u8)
                .map(|i| {
                    let e = &e;
                    s.spawn(move || {
                        let data = vec![i; 10_000];
                        let d = Digest::of(Algorithm::Sha256, &data);
                        e.put_blob(&repo(&format!("p/r{i}")), &d, &data).is_ok()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok = results.iter().filter(|r| **r).count();
        assert_eq!(ok, 5, "{results:?}");
        assert_eq!(
            usage(&e, "p"),
            UsageRecord {
                bytes: 50_000,
                blobs: 5
            }
        );
        assert_eq!(
            e.store().list().unwrap().len(),
            5,
            "refused pushes stored nothing"
        );
        assert!(
            e.inner.reserved.0.lock().unwrap().is_empty(),
            "reservations given back"
        );
    }
}
