//! Consistency check of the index against itself and the blob store.
//!
//! Recomputes every derived count (blob refcounts and link counts, manifest
//! repository counts, per-repository tag and parent counts, chart version
//! counts) from the primary records and compares; checks that every chart
//! entry is reachable through its version tag; checks every cross reference; and, when asked,
//! re-hashes every blob. Reports every finding; changes nothing.

use std::collections::HashMap;
use std::fmt;

use crate::digest::Digest;
use crate::engine::Engine;
use crate::error::StorageError;
use crate::keys;
use crate::names::{RepoName, Tag};
use crate::records::{
    self, BlobRecord, ChartRecord, ChartRepoRecord, ManifestRecord, RepoManifestRecord,
    UploadRecord,
};

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
}

impl Engine {
    /// Checks the whole index (and the store's blob list). Tools only: it
    /// scans everything.
    pub fn fsck(&self, opts: FsckOptions) -> Result<FsckReport, StorageError> {
        let inner = &self.inner;
        let mut report = FsckReport::default();
        let mut findings: Vec<Finding> = Vec::new();
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
            }
            if inner
                .get_raw(keys::CF_BLOB_REPOS, &keys::blob_repo_key(&d, &repo))?
                .is_none()
            {
                add(format!("link {repo}@{d}"), "reverse link missing".into());
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
            if rec.tags != tags {
                add(
                    format!("manifest {}@{}", k.0, k.1),
                    format!("tag count {} but {tags} tags point at it", rec.tags),
                );
            }
            let p = parents.get(k).copied().unwrap_or(0);
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
            if rec.refcount != want_refs {
                add(
                    format!("blob {d}"),
                    format!(
                        "refcount {} but {want_refs} manifests reference it",
                        rec.refcount
                    ),
                );
            }
            let want_links = links_per_blob.get(d).copied().unwrap_or(0);
            if rec.links != want_links {
                add(
                    format!("blob {d}"),
                    format!(
                        "link count {} but {want_links} repositories link it",
                        rec.links
                    ),
                );
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
        for d in inner.store.list()? {
            if !blobs.contains_key(&d) {
                report.unindexed_blobs.push(d);
            }
        }

        for r in inner.scan(keys::CF_UPLOADS, b"", b"") {
            let (k, v) = r?;
            let id = String::from_utf8_lossy(&k).into_owned();
            let rec: UploadRecord = records::decode(&v, || format!("uploads/{id}"))?;
            match std::fs::metadata(inner.upload_path(&id)) {
                Ok(m) if m.len() >= rec.offset => {}
                Ok(m) => add(
                    format!("upload {id}"),
                    format!(
                        "file holds {} bytes, durable offset is {}",
                        m.len(),
                        rec.offset
                    ),
                ),
                Err(_) => add(format!("upload {id}"), "file missing".into()),
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
        Ok(report)
    }
}
