//! Consistency check of the index against itself and the blob store.
//!
//! Recomputes every derived count (blob refcounts and link counts, manifest
//! repository counts, per-repository tag and parent counts, chart version
//! counts) from the primary records and compares — a full mark from every
//! repository's manifests, against which the refcounts GC trusts are
//! confirmed; checks every cross reference, that every chart entry is
//! reachable through its version tag, and the GC candidates index; and,
//! when asked, re-hashes every blob. Reports every finding; changes nothing.
//! [`Engine::fsck_repair`] then applies the fixes that are safe: recomputed
//! counts, the candidates index, reverse links, interrupted GC deletions,
//! unindexed (orphan) store files and upload records without a file. A blob
//! missing from the store or with wrong content cannot be repaired and stays
//! a finding.

use std::collections::HashMap;
use std::fmt;

use crate::digest::Digest;
use crate::engine::Engine;
use crate::error::StorageError;
use crate::index::{Batch, Index};
use crate::keys::{
    BlobKey, BlobRepoKey, BodyKey, ChartKey, ChartRepoKey, GcCandidateKey, IndexKey, LinkKey,
    ManifestKey, ReferrerKey, RepoManifestKey, Scan, TagKey, UploadKey, WholeFamily,
};
use crate::names::RepoName;
use crate::records::{BlobRecord, BlobState, Empty, ManifestRecord, RepoManifestRecord, TagRecord};

/// One inconsistency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// What the finding is about: `blob sha256:…`, `link repo@digest`, …
    pub object: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.problem)
    }
}

/// What to check beyond the index.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsckOptions {
    /// Re-hash every blob's bytes (reads all data).
    pub verify_blobs: bool,
}

/// The outcome of a check.
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    pub findings: Vec<Finding>,
    pub blobs: u64,
    pub manifests: u64,
    /// Blobs in the store with no index record (left by a crash between the
    /// store put and the index commit; harmless, reclaimable).
    pub unindexed_blobs: Vec<Digest>,
    /// Blobs with refcount 0 (GC's candidates: garbage once out of grace).
    pub unreferenced_blobs: u64,
    /// GC deletions a crash interrupted (records readers do not see).
    pub interrupted_deletions: Vec<Digest>,
    /// What [`Engine::fsck_repair`] would change, in order.
    fixes: Vec<Fix>,
}

/// One repair, computed by fsck.
#[derive(Clone, Debug)]
enum Fix {
    BlobCounts(Digest, u64, u64),
    Candidate(Digest, bool),
    ManifestRepos(Digest, u64),
    RepoManifestCounts(RepoName, Digest, u64, u64),
    ReverseLink(Digest, RepoName, bool),
    RemoveLink(RepoName, Digest),
    FinishDeletion(Digest),
    DeleteUnindexed(Digest),
    DropUpload(String, String),
}

/// What a repair changed.
#[derive(Clone, Debug, Default)]
pub struct RepairReport {
    /// One line per change.
    pub actions: Vec<String>,
}

impl Engine {
    /// Checks the whole index (and the store's blob list). Tools only: it
    /// scans everything.
    pub fn fsck(&self, opts: FsckOptions) -> Result<FsckReport, StorageError> {
        let inner = &self.inner;
        let mut report = FsckReport::default();
        let mut findings: Vec<Finding> = Vec::new();
        let mut fixes: Vec<Fix> = Vec::new();
        let mut add = |object: String, problem: String| findings.push(Finding { object, problem });
        // Entries whose key or value does not decode, one finding each.
        let mut corrupt: Vec<Finding> = Vec::new();

        // Primary records.
        let mut blobs: HashMap<Digest, BlobRecord> = HashMap::new();
        for r in entries(&inner.index, BlobKey::all(), &mut corrupt) {
            let (BlobKey(d), rec) = r?;
            blobs.insert(d, rec);
        }
        let mut links_per_blob: HashMap<Digest, u64> = HashMap::new();
        for r in entry_keys(&inner.index, LinkKey::all(), &mut corrupt) {
            let LinkKey(repo, d) = r?;
            if !blobs.contains_key(&d) {
                add(
                    format!("link {repo}@{d}"),
                    "links a blob with no record".into(),
                );
                fixes.push(Fix::RemoveLink(repo.clone(), d.clone()));
            }
            if !inner
                .index
                .contains(&BlobRepoKey(d.clone(), repo.clone()))?
            {
                add(format!("link {repo}@{d}"), "reverse link missing".into());
                fixes.push(Fix::ReverseLink(d.clone(), repo.clone(), true));
            }
            *links_per_blob.entry(d).or_default() += 1;
        }
        for r in entry_keys(&inner.index, BlobRepoKey::all(), &mut corrupt) {
            let BlobRepoKey(d, repo) = r?;
            if !inner.index.contains(&LinkKey(repo.clone(), d.clone()))? {
                add(
                    format!("reverse link {d}@{repo}"),
                    "has no forward link".into(),
                );
                fixes.push(Fix::ReverseLink(d, repo, false));
            }
        }

        // Manifests per repository, recomputing derived counts.
        let mut manifests: HashMap<Digest, ManifestRecord> = HashMap::new();
        for r in entries(&inner.index, ManifestKey::all(), &mut corrupt) {
            let (ManifestKey(d), rec) = r?;
            if !inner.index.contains(&BodyKey(d.clone()))? {
                add(format!("manifest {d}"), "body missing".into());
            }
            manifests.insert(d, rec);
        }
        let mut repo_manifests: HashMap<(RepoName, Digest), RepoManifestRecord> = HashMap::new();
        for r in entries(&inner.index, RepoManifestKey::all(), &mut corrupt) {
            let (RepoManifestKey(repo, d), rec) = r?;
            repo_manifests.insert((repo, d), rec);
        }
        let mut refcounts: HashMap<Digest, u64> = HashMap::new();
        let mut repos_per_manifest: HashMap<Digest, u64> = HashMap::new();
        let mut parents: HashMap<(RepoName, Digest), u64> = HashMap::new();
        for (repo, d) in repo_manifests.keys() {
            *repos_per_manifest.entry(d.clone()).or_default() += 1;
            let Some(m) = manifests.get(d) else {
                add(format!("manifest {repo}@{d}"), "no content record".into());
                continue;
            };
            for b in &m.blobs {
                *refcounts.entry(b.clone()).or_default() += 1;
                if !blobs.contains_key(b) {
                    add(
                        format!("manifest {repo}@{d}"),
                        format!("references blob {b}, which has no record"),
                    );
                }
            }
            for c in &m.manifests {
                *parents.entry((repo.clone(), c.clone())).or_default() += 1;
            }
        }
        for (d, m) in &manifests {
            let want = repos_per_manifest.get(d).copied().unwrap_or(0);
            if m.repos != want {
                add(
                    format!("manifest {d}"),
                    format!(
                        "repository count {} but {want} repositories hold it",
                        m.repos
                    ),
                );
                fixes.push(Fix::ManifestRepos(d.clone(), want));
            }
        }
        let mut tags_per: HashMap<(RepoName, Digest), u64> = HashMap::new();
        for r in entries(&inner.index, TagKey::all(), &mut corrupt) {
            let (TagKey(repo, tag), TagRecord(d)) = r?;
            if !repo_manifests.contains_key(&(repo.clone(), d.clone())) {
                add(
                    format!("tag {repo}:{tag}"),
                    format!("points at {d}, which is not in the repository"),
                );
            }
            *tags_per.entry((repo, d)).or_default() += 1;
        }
        for (k, rec) in &repo_manifests {
            let tags = tags_per.get(k).copied().unwrap_or(0);
            let p = parents.get(k).copied().unwrap_or(0);
            if rec.tags != tags || rec.parents != p {
                fixes.push(Fix::RepoManifestCounts(k.0.clone(), k.1.clone(), tags, p));
            }
            if rec.tags != tags {
                add(
                    format!("manifest {}@{}", k.0, k.1),
                    format!("tag count {} but {tags} tags point at it", rec.tags),
                );
            }
            if rec.parents != p {
                add(
                    format!("manifest {}@{}", k.0, k.1),
                    format!("parent count {} but {p} indexes reference it", rec.parents),
                );
            }
        }
        for r in entry_keys(&inner.index, ReferrerKey::all(), &mut corrupt) {
            let ReferrerKey {
                repo,
                subject,
                referrer,
            } = r?;
            let ok = repo_manifests.contains_key(&(repo.clone(), referrer.clone()))
                && manifests.get(&referrer).and_then(|m| m.subject.as_ref()) == Some(&subject);
            if !ok {
                add(
                    format!("referrer {repo}@{referrer}"),
                    format!("listed for subject {subject} but no such manifest"),
                );
            }
        }

        // Blob records against recomputed counts and the store.
        for (d, rec) in &blobs {
            let want_refs = refcounts.get(d).copied().unwrap_or(0);
            let want_links = links_per_blob.get(d).copied().unwrap_or(0);
            if rec.refcount != want_refs || rec.links != want_links {
                fixes.push(Fix::BlobCounts(d.clone(), want_refs, want_links));
            }
            if want_refs == 0 {
                report.unreferenced_blobs += 1;
            }
            let candidate = inner.index.contains(&GcCandidateKey(d.clone()))?;
            if candidate != (want_refs == 0) {
                add(
                    format!("blob {d}"),
                    if candidate {
                        "listed as a GC candidate but referenced".into()
                    } else {
                        "unreferenced but missing from the GC candidates".into()
                    },
                );
                fixes.push(Fix::Candidate(d.clone(), want_refs == 0));
            }
            if rec.refcount != want_refs {
                // Below its references is the dangerous side: GC trusts the
                // count and could delete a blob manifests still need.
                let risk = if rec.refcount < want_refs {
                    " (too low: GC could delete it while referenced)"
                } else {
                    " (too high: it is never collected)"
                };
                add(
                    format!("blob {d}"),
                    format!(
                        "refcount {} but {want_refs} manifests reference it{risk}",
                        rec.refcount
                    ),
                );
            }
            if rec.links != want_links {
                add(
                    format!("blob {d}"),
                    format!(
                        "link count {} but {want_links} repositories link it",
                        rec.links
                    ),
                );
            }
            if rec.state == BlobState::Deleting {
                // Invisible to readers; its file may or may not be gone.
                report.interrupted_deletions.push(d.clone());
                fixes.push(Fix::FinishDeletion(d.clone()));
                continue;
            }
            match inner.store.stat(d)? {
                None => add(
                    format!("blob {d}"),
                    format!("missing from the {} store", inner.store.name()),
                ),
                Some(size) if size != rec.size => add(
                    format!("blob {d}"),
                    format!("store holds {size} bytes, index says {}", rec.size),
                ),
                Some(_) if opts.verify_blobs => {
                    let data = inner.store.get(d, None)?;
                    let actual = Digest::of(d.algorithm(), data.as_ref());
                    if &actual != d {
                        add(format!("blob {d}"), format!("content hashes to {actual}"));
                    }
                }
                Some(_) => {}
            }
        }
        for r in entries(&inner.index, GcCandidateKey::all(), &mut corrupt) {
            let (GcCandidateKey(d), Empty) = r?;
            if !blobs.contains_key(&d) {
                add(format!("gc candidate {d}"), "has no blob record".into());
                fixes.push(Fix::Candidate(d, false));
            }
        }
        for d in inner.store.list()? {
            if !blobs.contains_key(&d) {
                fixes.push(Fix::DeleteUnindexed(d.clone()));
                report.unindexed_blobs.push(d);
            }
        }

        for r in entries(&inner.index, UploadKey::all(), &mut corrupt) {
            let (UploadKey(id), rec) = r?;
            let len = match inner.store.open_staged(&id)? {
                Some(staged) => Some(staged.len()?),
                None => None,
            };
            match len {
                Some(n) if n >= rec.offset => {}
                Some(n) => {
                    add(
                        format!("upload {id}"),
                        format!(
                            "staged blob holds {n} bytes, durable offset is {}",
                            rec.offset
                        ),
                    );
                    fixes.push(Fix::DropUpload(id, rec.owner.clone()));
                }
                None => {
                    add(format!("upload {id}"), "staged blob missing".into());
                    fixes.push(Fix::DropUpload(id, rec.owner.clone()));
                }
            }
        }

        // The chart index: every entry is reachable through its version tag
        // (the rule in charts.rs), and per-project version counts match.
        let mut versions_per: HashMap<RepoName, u64> = HashMap::new();
        for r in entries(&inner.index, ChartKey::all(), &mut corrupt) {
            let (ChartKey(id), rec) = r?;
            let object = format!("chart {}/{id}", id.project());
            *versions_per.entry(id.project().clone()).or_default() += 1;
            let target = inner
                .index
                .get(&TagKey(id.repo().clone(), id.tag().clone()))?
                .map(|TagRecord(d)| d);
            if target.as_ref() != Some(&rec.manifest) {
                add(
                    object,
                    format!(
                        "records manifest {} but its version tag points at {}",
                        rec.manifest,
                        target.map_or("nothing".to_owned(), |d| d.to_string())
                    ),
                );
            }
        }
        for r in entries(&inner.index, ChartRepoKey::all(), &mut corrupt) {
            let (ChartRepoKey(project), rec) = r?;
            let object = format!("chart repository {project}");
            let want = versions_per.remove(&project).unwrap_or(0);
            if rec.versions != want {
                add(
                    object,
                    format!("version count {} but {want} entries", rec.versions),
                );
            }
        }
        for (project, n) in versions_per {
            add(
                format!("chart repository {project}"),
                format!("{n} chart entries but no chart_repos record"),
            );
        }

        // Entries that do not decode: reported, never guessed at or repaired.
        findings.extend(corrupt);
        report.blobs = blobs.len() as u64;
        report.manifests = manifests.len() as u64;
        report.findings = findings;
        report.fixes = fixes;
        Ok(report)
    }

    /// Runs [`Engine::fsck`], then applies every safe fix it found (see the
    /// module docs). Tools only, on an engine no server uses: it deletes
    /// unindexed store files, which an upload in flight could be about to
    /// index. Returns the check's report (before repair) and what changed.
    pub fn fsck_repair(
        &self,
        opts: FsckOptions,
    ) -> Result<(FsckReport, RepairReport), StorageError> {
        let report = self.fsck(opts)?;
        let inner = &self.inner;
        let mut out = RepairReport::default();
        // Store files first: a record is never removed before its file.
        for f in &report.fixes {
            match f {
                Fix::DeleteUnindexed(d) => {
                    inner.store.delete(d)?;
                    out.actions
                        .push(format!("deleted unindexed store file of {d}"));
                }
                Fix::FinishDeletion(d) => {
                    inner.store.delete(d)?;
                }
                _ => {}
            }
        }
        let g = inner.lock()?;
        let mut b = Batch::default();
        for f in &report.fixes {
            match f {
                Fix::BlobCounts(d, refs, links) => {
                    if let Some(mut rec) = inner.index.get(&BlobKey(d.clone()))? {
                        rec.refcount = *refs;
                        rec.links = *links;
                        inner.put_blob_record(&mut b, d, &rec);
                        out.actions
                            .push(format!("blob {d}: refcount {refs}, link count {links}"));
                    }
                }
                Fix::Candidate(d, present) => {
                    let k = GcCandidateKey(d.clone());
                    if *present {
                        b.put(&k, &Empty);
                    } else {
                        b.delete(&k);
                    }
                    out.actions
                        .push(format!("blob {d}: GC candidate entry fixed"));
                }
                Fix::ManifestRepos(d, repos) => {
                    let key = ManifestKey(d.clone());
                    if let Some(mut m) = inner.index.get(&key)? {
                        m.repos = *repos;
                        b.put(&key, &m);
                        out.actions
                            .push(format!("manifest {d}: repository count {repos}"));
                    }
                }
                Fix::RepoManifestCounts(repo, d, tags, parents) => {
                    let key = RepoManifestKey(repo.clone(), d.clone());
                    if let Some(mut r) = inner.index.get(&key)? {
                        r.tags = *tags;
                        r.parents = *parents;
                        b.put(&key, &r);
                        out.actions.push(format!(
                            "manifest {repo}@{d}: tag count {tags}, parent count {parents}"
                        ));
                    }
                }
                Fix::ReverseLink(d, repo, present) => {
                    let k = BlobRepoKey(d.clone(), repo.clone());
                    if *present {
                        b.put(&k, &Empty);
                    } else {
                        b.delete(&k);
                    }
                    out.actions.push(format!("reverse link {d}@{repo} fixed"));
                }
                Fix::RemoveLink(repo, d) => {
                    b.delete(&LinkKey(repo.clone(), d.clone()));
                    b.delete(&BlobRepoKey(d.clone(), repo.clone()));
                    out.actions
                        .push(format!("link {repo}@{d} to a missing blob removed"));
                }
                Fix::FinishDeletion(d) => {
                    inner.remove_blob_entries(&mut b, d)?;
                    out.actions
                        .push(format!("blob {d}: interrupted GC deletion finished"));
                }
                Fix::DropUpload(id, _) => {
                    b.delete(&UploadKey(id.clone()));
                    if let Err(e) = inner.store.abort(id) {
                        tracing::warn!(upload = %id, error = %e, "aborting a dropped upload's staged blob");
                    }
                    out.actions.push(format!("upload {id}: dropped"));
                }
                Fix::DeleteUnindexed(_) => {}
            }
        }
        inner.commit(g, b)?;
        for f in &report.fixes {
            if let Fix::DropUpload(_, owner) = f {
                inner.release_upload_slot(owner);
            }
        }
        Ok((report, out))
    }
}

/// The finding for an entry that does not decode, if `e` is one.
fn corrupt_finding(e: &StorageError) -> Option<Finding> {
    match e {
        StorageError::CorruptKey(k) => Some(Finding {
            object: k.object(),
            problem: format!("corrupt key: {}", k.reason),
        }),
        StorageError::Corrupt { what, detail } => Some(Finding {
            object: what.clone(),
            problem: format!("corrupt value: {detail}"),
        }),
        _ => None,
    }
}

/// The decoded entries of `scan`; one that does not decode becomes a
/// finding in `corrupt` and the scan goes on.
fn entries<'a, K: IndexKey>(
    index: &'a Index,
    scan: Scan<K>,
    corrupt: &'a mut Vec<Finding>,
) -> impl Iterator<Item = Result<(K, K::Value), StorageError>> + 'a {
    index.scan(scan).filter_map(move |r| match r {
        Ok(entry) => Some(Ok(entry)),
        Err(e) => match corrupt_finding(&e) {
            Some(f) => {
                corrupt.push(f);
                None
            }
            None => Some(Err(e)),
        },
    })
}

/// The decoded keys of `scan`, as [`entries`] (values are not read).
fn entry_keys<'a, K: IndexKey>(
    index: &'a Index,
    scan: Scan<K>,
    corrupt: &'a mut Vec<Finding>,
) -> impl Iterator<Item = Result<K, StorageError>> + 'a {
    index.scan_keys(scan).filter_map(move |r| match r {
        Ok(key) => Some(Ok(key)),
        Err(e) => match corrupt_finding(&e) {
            Some(f) => {
                corrupt.push(f);
                None
            }
            None => Some(Err(e)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use crate::error::ManifestError;
    use crate::keys::Cf;
    use crate::names::{Reference, Tag};
    use crate::records::{Record, UploadRecord};
    use crate::{EngineConfig, GcOptions};

    fn plant(e: &Engine, entries: &[(Cf, &[u8], &[u8])]) {
        let g = e.inner.lock().unwrap();
        let mut b = Batch::default();
        for (cf, k, v) in entries {
            b.put_raw(*cf, k, v);
        }
        e.inner.commit(g, b).unwrap();
    }

    fn has(report: &FsckReport, object: &str, problem: &str) -> bool {
        report
            .findings
            .iter()
            .any(|f| f.object == object && f.problem.contains(problem))
    }

    /// Keys and values that do not decode are findings naming the family
    /// and the key (hex for a key), and errors for readers: never lossy
    /// strings, never skipped.
    #[test]
    fn corrupt_entries_are_findings_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let repo = RepoName::parse("p/r").unwrap();
        let d = Digest::of(Algorithm::Sha256, b"hello");
        e.put_blob(&repo, &d, b"hello").unwrap();
        let bad_tag = b"p/r\0\xffbad";
        plant(
            &e,
            &[
                (Cf::Tags, bad_tag, d.as_str().as_bytes()),
                (Cf::Tags, b"p/r\0v1", b"not a digest"),
                (Cf::Links, b"p/r", b""),
                (Cf::Blobs, b"sha256:abc", b"\x01{}"),
            ],
        );
        let report = e.fsck(FsckOptions::default()).unwrap();
        let f = &report.findings;
        let tag_object = format!("tags/{}", hex::encode(bad_tag));
        assert!(has(&report, &tag_object, "corrupt key"), "{f:?}");
        assert!(has(&report, "tags/p/r:v1", "corrupt value"), "{f:?}");
        let link_object = format!("links/{}", hex::encode(b"p/r"));
        assert!(
            has(&report, &link_object, "corrupt key: 1 parts, not 2"),
            "{f:?}"
        );
        let blob_object = format!("blobs/{}", hex::encode(b"sha256:abc"));
        assert!(has(&report, &blob_object, "corrupt key: digest"), "{f:?}");
        // The rest of the index is still checked.
        assert_eq!(report.blobs, 1);

        // Readers get the error, naming the family and the key.
        match e.list_tags(&repo, None, 10) {
            Err(StorageError::CorruptKey(k)) => {
                assert_eq!((k.cf, k.key.as_slice()), (Cf::Tags, &bad_tag[..]))
            }
            other => panic!("{other:?}"),
        }
        let v1 = Reference::Tag(Tag::parse("v1").unwrap());
        match e.get_manifest(&repo, &v1) {
            Err(ManifestError::Storage(StorageError::Corrupt { what, .. })) => {
                assert_eq!(what, "tags/p/r:v1")
            }
            other => panic!("{other:?}"),
        }
    }

    /// The entries that can hold nothing live are tidied: a corrupt GC
    /// candidate by GC, an upload record under a key that is no upload id
    /// by recovery at open.
    #[test]
    fn gc_and_recovery_drop_corrupt_entries_that_hold_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
            let rec = UploadRecord {
                repo: "p/r".into(),
                algorithm: Algorithm::Sha256,
                offset: 0,
                owner: String::new(),
                created_ms: 0,
                updated_ms: 0,
            };
            plant(
                &e,
                &[
                    (Cf::GcCandidates, b"junk", b""),
                    (Cf::Uploads, b"../not-an-id", &rec.encode()),
                ],
            );
            let report = e.fsck(FsckOptions::default()).unwrap();
            assert_eq!(report.findings.len(), 2, "{:?}", report.findings);
            e.gc(&GcOptions::default()).unwrap();
            let report = e.fsck(FsckOptions::default()).unwrap();
            assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        }
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let report = e.fsck(FsckOptions::default()).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(e.open_uploads().unwrap(), 0);
    }
}
