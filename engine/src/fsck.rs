//! Consistency check of the index against itself and the blob store.
//!
//! Recomputes every derived count (blob refcounts and link counts, manifest
//! repository counts, per-repository tag and parent counts, chart version
//! counts) from the primary records and compares — a full mark from every
//! repository's manifests, against which the refcounts GC trusts are
//! confirmed; checks every cross reference, that every chart entry is
//! reachable through its version tag, and the GC candidates index; and,
//! when asked, re-hashes every blob. Reports every finding; changes nothing.
//! The blob store is asked where each blob is ([`crate::store::BlobStore::locate`]):
//! missing, another size, or another tier than its record says.
//! [`Engine::fsck_repair`] then applies the fixes that are safe: recomputed
//! counts, tiers, the candidates index, reverse links, interrupted GC deletions,
//! unindexed (orphan) store files and upload records without a file. A blob
//! missing from the store or with wrong content cannot be repaired and stays
//! a finding.

use std::collections::HashMap;
use std::fmt;

use crate::digest::Digest;
use crate::engine::Engine;
use crate::error::StorageError;
use crate::keys;
use crate::names::{RepoName, Tag};
use crate::records::{
    self, BlobRecord, BlobState, ChartRecord, ChartRepoRecord, ManifestRecord, RepoManifestRecord,
    Tier, UploadRecord,
};

/// How fsck names a tier: where the bytes are.
fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Local => "local only",
        Tier::Remote => "in the bucket only",
        Tier::Both => "local and in the bucket",
    }
}

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
    Tier(Digest, Tier),
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

        // Primary records.
        let mut blobs: HashMap<Digest, BlobRecord> = HashMap::new();
        for r in inner.scan(keys::CF_BLOBS, b"", b"") {
            let (k, v) = r?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let Ok(d) = Digest::parse(&key) else {
                add(format!("blobs/{key}"), "key is not a digest".into());
                continue;
            };
            blobs.insert(d, records::decode(&v, || format!("blobs/{key}"))?);
        }
        let mut links_per_blob: HashMap<Digest, u64> = HashMap::new();
        for r in inner.scan(keys::CF_LINKS, b"", b"") {
            let (k, _) = r?;
            let Some((repo, d)) = keys::split_repo_digest(&k) else {
                add(
                    format!("links/{}", String::from_utf8_lossy(&k)),
                    "malformed key".into(),
                );
                continue;
            };
            if !blobs.contains_key(&d) {
                add(
                    format!("link {repo}@{d}"),
                    "links a blob with no record".into(),
                );
                fixes.push(Fix::RemoveLink(repo.clone(), d.clone()));
            }
            if inner
                .get_raw(keys::CF_BLOB_REPOS, &keys::blob_repo_key(&d, &repo))?
                .is_none()
            {
                add(format!("link {repo}@{d}"), "reverse link missing".into());
                fixes.push(Fix::ReverseLink(d.clone(), repo.clone(), true));
            }
            *links_per_blob.entry(d).or_default() += 1;
        }
        for r in inner.scan(keys::CF_BLOB_REPOS, b"", b"") {
            let (k, _) = r?;
            match keys::split_digest_repo(&k) {
                Some((d, repo)) => {
                    if inner
                        .get_raw(keys::CF_LINKS, &keys::link_key(&repo, &d))?
                        .is_none()
                    {
                        add(
                            format!("reverse link {d}@{repo}"),
                            "has no forward link".into(),
                        );
                        fixes.push(Fix::ReverseLink(d.clone(), repo.clone(), false));
                    }
                }
                None => add(
                    format!("blob_repos/{}", String::from_utf8_lossy(&k)),
                    "malformed key".into(),
                ),
            }
        }

        // Manifests per repository, recomputing derived counts.
        let mut manifests: HashMap<Digest, ManifestRecord> = HashMap::new();
        for r in inner.scan(keys::CF_MANIFESTS, b"", b"") {
            let (k, v) = r?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let Ok(d) = Digest::parse(&key) else {
                add(format!("manifests/{key}"), "key is not a digest".into());
                continue;
            };
            if inner.get_raw(keys::CF_BODIES, &k)?.is_none() {
                add(format!("manifest {d}"), "body missing".into());
            }
            manifests.insert(d, records::decode(&v, || format!("manifests/{key}"))?);
        }
        let mut repo_manifests: HashMap<(RepoName, Digest), RepoManifestRecord> = HashMap::new();
        for r in inner.scan(keys::CF_REPO_MANIFESTS, b"", b"") {
            let (k, v) = r?;
            let Some((repo, d)) = keys::split_repo_digest(&k) else {
                add(
                    format!("repo_manifests/{}", String::from_utf8_lossy(&k)),
                    "malformed key".into(),
                );
                continue;
            };
            let rec = records::decode(&v, || format!("repo_manifests/{repo}@{d}"))?;
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
        for r in inner.scan(keys::CF_TAGS, b"", b"") {
            let (k, v) = r?;
            let key = String::from_utf8_lossy(&k).replace('\0', ":");
            let d = Digest::parse(&String::from_utf8_lossy(&v)).ok();
            match (keys::split_tag_key(&k), d) {
                (Some((repo, _)), Some(d)) => {
                    if !repo_manifests.contains_key(&(repo.clone(), d.clone())) {
                        add(
                            format!("tag {key}"),
                            format!("points at {d}, which is not in the repository"),
                        );
                    }
                    *tags_per.entry((repo, d)).or_default() += 1;
                }
                _ => add(format!("tag {key}"), "malformed key or value".into()),
            }
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
        for r in inner.scan(keys::CF_REFERRERS, b"", b"") {
            let (k, _) = r?;
            let parsed = keys::split_referrer_key(&k);
            let Some((repo, subject, referrer)) = parsed else {
                add(
                    format!("referrers/{}", String::from_utf8_lossy(&k)),
                    "malformed key".into(),
                );
                continue;
            };
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
            let candidate = inner
                .get_raw(keys::CF_GC_CANDIDATES, &keys::gc_candidate_key(d))?
                .is_some();
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
            let located = inner.store.locate(d)?;
            if let Some(l) = located.filter(|l| l.tier != rec.tier) {
                add(
                    format!("blob {d}"),
                    format!(
                        "index says its bytes are {}, the {} store holds them {}",
                        tier_name(rec.tier),
                        inner.store.name(),
                        tier_name(l.tier)
                    ),
                );
                fixes.push(Fix::Tier(d.clone(), l.tier));
            }
            match located.map(|l| l.size) {
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
        for r in inner.scan(keys::CF_GC_CANDIDATES, b"", b"") {
            let (k, _) = r?;
            let key = String::from_utf8_lossy(&k).into_owned();
            match Digest::parse(&key) {
                Ok(d) if !blobs.contains_key(&d) => {
                    add(format!("gc candidate {d}"), "has no blob record".into());
                    fixes.push(Fix::Candidate(d, false));
                }
                Ok(_) => {}
                Err(_) => add(format!("gc_candidates/{key}"), "key is not a digest".into()),
            }
        }
        for d in inner.store.list()? {
            if !blobs.contains_key(&d) {
                fixes.push(Fix::DeleteUnindexed(d.clone()));
                report.unindexed_blobs.push(d);
            }
        }

        for r in inner.scan(keys::CF_UPLOADS, b"", b"") {
            let (k, v) = r?;
            let id = String::from_utf8_lossy(&k).into_owned();
            let rec: UploadRecord = records::decode(&v, || format!("uploads/{id}"))?;
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
        for r in inner.scan(keys::CF_CHARTS, b"", b"") {
            let (k, v) = r?;
            let Some((project, name, version)) = keys::split_chart_key(&k) else {
                add(
                    format!("charts/{}", String::from_utf8_lossy(&k)),
                    "malformed key".into(),
                );
                continue;
            };
            let object = format!("chart {project}/{name}-{version}");
            *versions_per.entry(project.clone()).or_default() += 1;
            let rec: ChartRecord = match records::decode(&v, || object.clone()) {
                Ok(r) => r,
                Err(e) => {
                    add(object, e.to_string());
                    continue;
                }
            };
            let tag = RepoName::parse(&format!("{project}/{name}"))
                .ok()
                .zip(Tag::parse(&crate::charts::oci_tag(&version)).ok());
            let target = match &tag {
                Some((repo, tag)) => inner
                    .get_raw(keys::CF_TAGS, &keys::tag_key(repo, tag))?
                    .map(|v| String::from_utf8_lossy(&v).into_owned()),
                None => None,
            };
            if target.as_deref() != Some(rec.manifest.as_str()) {
                add(
                    object,
                    format!(
                        "records manifest {} but its version tag points at {}",
                        rec.manifest,
                        target.as_deref().unwrap_or("nothing")
                    ),
                );
            }
        }
        for r in inner.scan(keys::CF_CHART_REPOS, b"", b"") {
            let (k, v) = r?;
            let project = String::from_utf8_lossy(&k).into_owned();
            let object = format!("chart repository {project}");
            let rec: ChartRepoRecord = match records::decode(&v, || object.clone()) {
                Ok(r) => r,
                Err(e) => {
                    add(object, e.to_string());
                    continue;
                }
            };
            let want = RepoName::parse(&project)
                .ok()
                .and_then(|p| versions_per.remove(&p))
                .unwrap_or(0);
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
        let mut b = rocksdb::WriteBatch::default();
        // Blob records several fixes change (counts and tier), written once.
        let mut changed: HashMap<Digest, BlobRecord> = HashMap::new();
        fn record<'a>(
            inner: &crate::engine::Inner,
            changed: &'a mut HashMap<Digest, BlobRecord>,
            d: &Digest,
        ) -> Result<Option<&'a mut BlobRecord>, StorageError> {
            if !changed.contains_key(d) {
                match inner.get::<BlobRecord>(keys::CF_BLOBS, &keys::digest_key(d))? {
                    Some(rec) => {
                        changed.insert(d.clone(), rec);
                    }
                    None => return Ok(None),
                }
            }
            Ok(changed.get_mut(d))
        }
        for f in &report.fixes {
            match f {
                Fix::BlobCounts(d, refs, links) => {
                    if let Some(rec) = record(inner, &mut changed, d)? {
                        rec.refcount = *refs;
                        rec.links = *links;
                        out.actions
                            .push(format!("blob {d}: refcount {refs}, link count {links}"));
                    }
                }
                Fix::Tier(d, tier) => {
                    if let Some(rec) = record(inner, &mut changed, d)? {
                        rec.tier = *tier;
                        out.actions
                            .push(format!("blob {d}: tier {}", tier_name(*tier)));
                    }
                }
                _ => {}
            }
        }
        for (d, rec) in &changed {
            inner.put_blob_record(&mut b, d, rec);
        }
        for f in &report.fixes {
            match f {
                Fix::BlobCounts(..) | Fix::Tier(..) => {}
                Fix::Candidate(d, present) => {
                    let k = keys::gc_candidate_key(d);
                    if *present {
                        b.put_cf(inner.cf(keys::CF_GC_CANDIDATES), k, b"");
                    } else {
                        b.delete_cf(inner.cf(keys::CF_GC_CANDIDATES), k);
                    }
                    out.actions
                        .push(format!("blob {d}: GC candidate entry fixed"));
                }
                Fix::ManifestRepos(d, repos) => {
                    let key = keys::digest_key(d);
                    if let Some(mut m) = inner.get::<ManifestRecord>(keys::CF_MANIFESTS, &key)? {
                        m.repos = *repos;
                        b.put_cf(inner.cf(keys::CF_MANIFESTS), key, records::encode(&m));
                        out.actions
                            .push(format!("manifest {d}: repository count {repos}"));
                    }
                }
                Fix::RepoManifestCounts(repo, d, tags, parents) => {
                    let key = keys::repo_manifest_key(repo, d);
                    if let Some(mut r) =
                        inner.get::<RepoManifestRecord>(keys::CF_REPO_MANIFESTS, &key)?
                    {
                        r.tags = *tags;
                        r.parents = *parents;
                        b.put_cf(inner.cf(keys::CF_REPO_MANIFESTS), key, records::encode(&r));
                        out.actions.push(format!(
                            "manifest {repo}@{d}: tag count {tags}, parent count {parents}"
                        ));
                    }
                }
                Fix::ReverseLink(d, repo, present) => {
                    let k = keys::blob_repo_key(d, repo);
                    if *present {
                        b.put_cf(inner.cf(keys::CF_BLOB_REPOS), k, b"");
                    } else {
                        b.delete_cf(inner.cf(keys::CF_BLOB_REPOS), k);
                    }
                    out.actions.push(format!("reverse link {d}@{repo} fixed"));
                }
                Fix::RemoveLink(repo, d) => {
                    b.delete_cf(inner.cf(keys::CF_LINKS), keys::link_key(repo, d));
                    b.delete_cf(inner.cf(keys::CF_BLOB_REPOS), keys::blob_repo_key(d, repo));
                    out.actions
                        .push(format!("link {repo}@{d} to a missing blob removed"));
                }
                Fix::FinishDeletion(d) => {
                    b.delete_cf(inner.cf(keys::CF_BLOBS), keys::digest_key(d));
                    b.delete_cf(inner.cf(keys::CF_GC_CANDIDATES), keys::gc_candidate_key(d));
                    let prefix = keys::blob_repos_prefix(d);
                    for r in inner.scan(keys::CF_BLOB_REPOS, &prefix, &prefix) {
                        let (k, _) = r?;
                        if let Some((_, repo)) = keys::split_digest_repo(&k) {
                            b.delete_cf(inner.cf(keys::CF_LINKS), keys::link_key(&repo, d));
                        }
                        b.delete_cf(inner.cf(keys::CF_BLOB_REPOS), k);
                    }
                    out.actions
                        .push(format!("blob {d}: interrupted GC deletion finished"));
                }
                Fix::DropUpload(id, _) => {
                    b.delete_cf(inner.cf(keys::CF_UPLOADS), keys::upload_key(id));
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
