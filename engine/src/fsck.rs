//! Consistency check of the index against itself and the blob store.
//!
//! Recomputes every derived count (blob refcounts and link counts, manifest
//! repository counts, per-repository tag and parent counts, chart version
//! counts) from the primary records and compares — a full mark from every
//! repository's manifests, against which the refcounts GC trusts are
//! confirmed; checks every cross reference, that every chart entry is
//! reachable through its version tag, and the GC candidates index; and,
//! when asked, re-hashes every blob. Before all that it walks every entry
//! of every column family, `meta` included, through the closed keyspace
//! ([`crate::keys::Key`]) and each key's record, streaming: every unknown
//! or corrupt key and every undecodable value is one finding (family, key,
//! reason), and the checks after it reason about the rest. The blob store
//! is asked where each blob is ([`crate::store::BlobStore::locate`]):
//! missing, another size, or another tier than its record says. Reports
//! every finding; changes nothing.
//!
//! [`Engine::fsck_repair`] then applies the fixes that are safe: recomputed
//! counts, tiers, the candidates index, reverse links, referrer entries,
//! interrupted GC deletions, unindexed (orphan) store files and upload
//! records without a file. Corrupt entries are removed only from the
//! families that can hold nothing live (`removable`): `gc_candidates`,
//! `blob_repos` and `referrers`, which the same repair rebuilds from the
//! records they derive from, and `uploads`, whose unreadable sessions no
//! client can resume. Every other corrupt entry (a blob, manifest, tag,
//! account or `meta` record) is reported and kept: repair cannot prove it
//! is dead. Nor does repair act on what an unreadable entry might stand
//! for: while `blobs` holds one it deletes no store file and no link that
//! entry might own, and while a counted family holds one it rewrites no
//! derived count (a refcount recomputed without a manifest could be too
//! low, and GC trusts it). A blob missing from the
//! store or with wrong content cannot be repaired and stays a finding.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::digest::Digest;
use crate::engine::Engine;
use crate::error::StorageError;
use crate::index::{Batch, Checked, Index};
use crate::keys::{
    BlobKey, BlobRepoKey, BodyKey, Cf, ChartKey, ChartRepoKey, CorruptKey, GcCandidateKey,
    IndexKey, Key, LinkKey, ManifestKey, PolicyKey, ProjectBlobKey, ProjectKey, ReferrerKey,
    RegistryKey, RepoManifestKey, Scan, TagKey, UploadKey, UsageKey, WholeFamily,
};
use crate::names::RepoName;
use crate::records::{
    BlobRecord, BlobState, Empty, ManifestRecord, RepoManifestRecord, TagRecord, Tier,
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
    /// Recount `project_blobs` and `project_usage` after the other fixes.
    Usage,
    BlobCounts(Digest, u64, u64),
    Tier(Digest, Tier),
    Candidate(Digest, bool),
    ManifestRepos(Digest, u64),
    RepoManifestCounts(RepoName, Digest, u64, u64),
    RepoManifestMediaType(RepoName, Digest, String),
    ReverseLink(Digest, RepoName, bool),
    RemoveLink(RepoName, Digest),
    FinishDeletion(Digest),
    DeleteUnindexed(Digest),
    DropUpload(String, String),
    Referrer(ReferrerKey, bool),
    RemoveCorruptKey(CorruptKey),
    RemoveCorruptValue(Key),
}

/// Whether repair may remove a corrupt entry of `cf`: only families whose
/// entries hold nothing live. `gc_candidates`, `blob_repos` and `referrers`
/// are derived (from `blobs` refcounts, from `links`, from manifests'
/// subjects) and rebuilt by the same repair, and so are `project_blobs` and
/// `project_usage` (from `links`: the next repair recounts them once
/// their corrupt entries are gone); an `uploads` entry that does
/// not decode is a session no client can name or resume (its staged bytes
/// are aborted with it). Everything else may be the only copy of a record
/// (`meta` included: an unknown key there is reported, never guessed at).
pub(crate) fn removable(cf: Cf) -> bool {
    matches!(
        cf,
        Cf::GcCandidates
            | Cf::BlobRepos
            | Cf::Referrers
            | Cf::Uploads
            | Cf::Pins
            | Cf::ProjectBlobs
            | Cf::ProjectUsage
    )
}

/// What repair does with a corrupt entry of `cf`, for the finding.
fn corrupt_note(cf: Cf) -> &'static str {
    if removable(cf) {
        "fsck --repair removes it (it holds nothing live)"
    } else {
        "kept: repair cannot prove it holds nothing live"
    }
}

/// What the keyspace walk found unreadable, for the checks after it: an
/// entry a derived entry may stand for is not taken as absent while it
/// cannot be read.
#[derive(Default)]
struct Unreadable {
    /// Blobs whose record is present but does not decode.
    blobs: HashSet<Digest>,
    /// `blobs` holds a key that is no digest: any blob's record may be
    /// lost under it.
    blob_keys: bool,
    /// Families holding at least one corrupt key or value.
    families: HashSet<Cf>,
}

impl Unreadable {
    /// Whether `d` may have a blob record fsck cannot read, so nothing of
    /// it (file, links, candidate entry) may be removed as if it had none.
    fn may_own(&self, d: &Digest) -> bool {
        self.blob_keys || self.blobs.contains(d)
    }

    /// Whether every entry of `cf` was read.
    fn whole(&self, cf: Cf) -> bool {
        !self.families.contains(&cf)
    }
}

/// Whether `key` is present with a value that decodes: an entry whose
/// value is corrupt is reported by the keyspace walk and counts as absent,
/// so repair rewrites it after removing it.
fn present<K: IndexKey>(index: &Index, key: &K) -> Result<bool, StorageError> {
    match index.get(key) {
        Ok(v) => Ok(v.is_some()),
        Err(StorageError::Corrupt { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The value of `key`, `None` when absent or corrupt (as [`present`]).
fn readable<K: IndexKey>(index: &Index, key: &K) -> Result<Option<K::Value>, StorageError> {
    match index.get(key) {
        Err(StorageError::Corrupt { .. }) => Ok(None),
        r => r,
    }
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

        // The closed keyspace: every entry of every family, streamed. The
        // typed scans below skip what this walk reported.
        let mut unreadable = Unreadable::default();
        for cf in Cf::ALL {
            for r in inner.index.check_family(cf) {
                match r? {
                    Checked::Sound => {}
                    Checked::CorruptKey(k) => {
                        unreadable.families.insert(cf);
                        add(
                            k.object(),
                            format!("corrupt key: {}; {}", k.reason, corrupt_note(cf)),
                        );
                        unreadable.blob_keys |= cf == Cf::Blobs;
                        if removable(cf) {
                            fixes.push(Fix::RemoveCorruptKey(k));
                        }
                    }
                    Checked::CorruptValue(key, why) => {
                        unreadable.families.insert(cf);
                        add(
                            key.to_string(),
                            format!(
                                "corrupt value: {why} (key {}); {}",
                                hex::encode(key.encode()),
                                corrupt_note(cf)
                            ),
                        );
                        if let Key::Blob(BlobKey(d)) = &key {
                            unreadable.blobs.insert(d.clone());
                        }
                        if removable(cf) {
                            fixes.push(Fix::RemoveCorruptValue(key));
                        }
                    }
                }
            }
        }

        // IMPORTANT: a count recomputed without an unreadable record could
        // be too low (a refcount too low lets GC delete a referenced blob),
        // so counts are repaired only when everything they count was read.
        let counted = [
            Cf::Blobs,
            Cf::Links,
            Cf::Manifests,
            Cf::RepoManifests,
            Cf::Tags,
        ];
        let counts_whole = counted.iter().all(|cf| unreadable.whole(*cf));
        if !counts_whole {
            let held: Vec<&str> = counted
                .iter()
                .filter(|cf| !unreadable.whole(**cf))
                .map(|cf| cf.name())
                .collect();
            add(
                "index".into(),
                format!(
                    "derived counts are not repaired while {} hold unreadable entries",
                    held.join(", ")
                ),
            );
        }

        // Primary records.
        let mut blobs: HashMap<Digest, BlobRecord> = HashMap::new();
        for r in entries(&inner.index, BlobKey::all()) {
            let (BlobKey(d), rec) = r?;
            blobs.insert(d, rec);
        }
        let mut links_per_blob: HashMap<Digest, u64> = HashMap::new();
        for r in entry_keys(&inner.index, LinkKey::all()) {
            let LinkKey(repo, d) = r?;
            if !blobs.contains_key(&d) && !unreadable.may_own(&d) {
                add(
                    format!("link {repo}@{d}"),
                    "links a blob with no record".into(),
                );
                fixes.push(Fix::RemoveLink(repo.clone(), d.clone()));
            }
            if !present(&inner.index, &BlobRepoKey(d.clone(), repo.clone()))? {
                add(format!("link {repo}@{d}"), "reverse link missing".into());
                fixes.push(Fix::ReverseLink(d.clone(), repo.clone(), true));
            }
            *links_per_blob.entry(d).or_default() += 1;
        }
        for r in entry_keys(&inner.index, BlobRepoKey::all()) {
            let BlobRepoKey(d, repo) = r?;
            if !inner.index.contains(&LinkKey(repo.clone(), d.clone()))? {
                add(
                    format!("reverse link {d}@{repo}"),
                    "has no forward link".into(),
                );
                // The forward link may be a corrupt `links` entry.
                if unreadable.whole(Cf::Links) {
                    fixes.push(Fix::ReverseLink(d, repo, false));
                }
            }
        }

        // Manifests per repository, recomputing derived counts.
        let mut manifests: HashMap<Digest, ManifestRecord> = HashMap::new();
        for r in entries(&inner.index, ManifestKey::all()) {
            let (ManifestKey(d), rec) = r?;
            if !inner.index.contains(&BodyKey(d.clone()))? {
                add(format!("manifest {d}"), "body missing".into());
            }
            manifests.insert(d, rec);
        }
        let mut repo_manifests: HashMap<(RepoName, Digest), RepoManifestRecord> = HashMap::new();
        for r in entries(&inner.index, RepoManifestKey::all()) {
            let (RepoManifestKey(repo, d), rec) = r?;
            repo_manifests.insert((repo, d), rec);
        }
        let mut refcounts: HashMap<Digest, u64> = HashMap::new();
        let mut repos_per_manifest: HashMap<Digest, u64> = HashMap::new();
        let mut parents: HashMap<(RepoName, Digest), u64> = HashMap::new();
        for ((repo, d), rm) in &repo_manifests {
            *repos_per_manifest.entry(d.clone()).or_default() += 1;
            let Some(m) = manifests.get(d) else {
                add(format!("manifest {repo}@{d}"), "no content record".into());
                continue;
            };
            // Reads serve the entry's media type (`docs/design.md`, "Get
            // manifest"); an entry from before it was kept has none.
            if !rm.media_type.is_empty() && rm.media_type != m.media_type {
                add(
                    format!("manifest {repo}@{d}"),
                    format!(
                        "media type {} in the repository, {} in its record",
                        rm.media_type, m.media_type
                    ),
                );
                let fix = (repo.clone(), d.clone(), m.media_type.clone());
                fixes.push(Fix::RepoManifestMediaType(fix.0, fix.1, fix.2));
            }
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
                if counts_whole {
                    fixes.push(Fix::ManifestRepos(d.clone(), want));
                }
            }
        }
        let mut tags_per: HashMap<(RepoName, Digest), u64> = HashMap::new();
        for r in entries(&inner.index, TagKey::all()) {
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
            if counts_whole && (rec.tags != tags || rec.parents != p) {
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
        for r in entry_keys(&inner.index, ReferrerKey::all()) {
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
                let key = ReferrerKey {
                    repo,
                    subject,
                    referrer,
                };
                // The manifest may be a corrupt entry.
                if unreadable.whole(Cf::Manifests) && unreadable.whole(Cf::RepoManifests) {
                    fixes.push(Fix::Referrer(key, false));
                }
            }
        }
        // And every manifest with a subject is listed as its referrer.
        for (repo, d) in repo_manifests.keys() {
            let Some(subject) = manifests.get(d).and_then(|m| m.subject.clone()) else {
                continue;
            };
            let key = ReferrerKey {
                repo: repo.clone(),
                subject,
                referrer: d.clone(),
            };
            if !present(&inner.index, &key)? {
                add(
                    format!("referrer {repo}@{d}"),
                    format!("not listed for its subject {}", key.subject),
                );
                fixes.push(Fix::Referrer(key, true));
            }
        }

        // Blob records against recomputed counts and the store.
        for (d, rec) in &blobs {
            let want_refs = refcounts.get(d).copied().unwrap_or(0);
            let want_links = links_per_blob.get(d).copied().unwrap_or(0);
            if counts_whole && (rec.refcount != want_refs || rec.links != want_links) {
                fixes.push(Fix::BlobCounts(d.clone(), want_refs, want_links));
            }
            if want_refs == 0 {
                report.unreferenced_blobs += 1;
            }
            let candidate = present(&inner.index, &GcCandidateKey(d.clone()))?;
            if candidate != (want_refs == 0) {
                add(
                    format!("blob {d}"),
                    if candidate {
                        "listed as a GC candidate but referenced".into()
                    } else {
                        "unreferenced but missing from the GC candidates".into()
                    },
                );
                if counts_whole {
                    fixes.push(Fix::Candidate(d.clone(), want_refs == 0));
                }
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
            let located = inner.locate(d)?;
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
        for r in entries(&inner.index, GcCandidateKey::all()) {
            let (GcCandidateKey(d), Empty) = r?;
            if !blobs.contains_key(&d) && !unreadable.may_own(&d) {
                add(format!("gc candidate {d}"), "has no blob record".into());
                fixes.push(Fix::Candidate(d, false));
            }
        }
        for d in inner.store.list()? {
            if blobs.contains_key(&d) {
                continue;
            }
            if unreadable.may_own(&d) {
                // IMPORTANT: its record may be the corrupt entry; the file
                // is kept until the index reads clean.
                add(
                    format!("blob {d}"),
                    "stored, and its record may be a corrupt blobs entry: file kept".into(),
                );
                continue;
            }
            fixes.push(Fix::DeleteUnindexed(d.clone()));
            report.unindexed_blobs.push(d);
        }

        for r in entries(&inner.index, UploadKey::all()) {
            let (UploadKey(id), rec) = r?;
            if inner.index.is_shared() {
                // Cluster mode: the bytes are the record's segments, which
                // must tile [0, offset) (their objects are other nodes'
                // business until a writer reads them).
                let mut at = 0;
                let tiled = rec.segments.iter().all(|s| {
                    let next = s.start == at && s.end > s.start;
                    at = s.end;
                    next
                }) && at == rec.offset;
                if !tiled {
                    add(
                        format!("upload {id}"),
                        format!("segments do not tile [0, {})", rec.offset),
                    );
                    fixes.push(Fix::DropUpload(id, rec.owner.clone()));
                }
                continue;
            }
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
        for r in entries(&inner.index, ChartKey::all()) {
            let (ChartKey(id), rec) = r?;
            let object = format!("chart {}/{id}", id.project());
            *versions_per.entry(id.project().clone()).or_default() += 1;
            let target = readable(&inner.index, &TagKey(id.repo().clone(), id.tag().clone()))?
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
        for r in entries(&inner.index, ChartRepoKey::all()) {
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

        // Project usage (`quotas.rs`): recounted from `links` and the blob
        // sizes, when everything it counts was read.
        let usage_read = [Cf::Links, Cf::Blobs, Cf::ProjectBlobs, Cf::ProjectUsage]
            .iter()
            .all(|cf| unreadable.whole(*cf));
        if usage_read {
            let (mut want_blobs, mut want_usage) = inner.recount_usage()?;
            let mut wrong = false;
            for r in entries(&inner.index, ProjectBlobKey::all()) {
                let (ProjectBlobKey(p, d), rec) = r?;
                let want = want_blobs.remove(&(p.clone(), d.clone())).unwrap_or(0);
                if rec.links != want {
                    wrong = true;
                    add(
                        format!("project {p} blob {d}"),
                        format!("link count {} but {want} links", rec.links),
                    );
                }
            }
            for ((p, d), n) in want_blobs {
                wrong = true;
                add(
                    format!("project {p} blob {d}"),
                    format!("{n} links but no project_blobs entry"),
                );
            }
            for r in entries(&inner.index, UsageKey::all()) {
                let (UsageKey(p), rec) = r?;
                let want = want_usage.remove(&p).unwrap_or_default();
                if rec != want {
                    wrong = true;
                    add(
                        format!("project {p} usage"),
                        format!(
                            "{} bytes in {} blobs, but its links hold {} bytes in {} blobs",
                            rec.bytes, rec.blobs, want.bytes, want.blobs
                        ),
                    );
                }
            }
            for (p, want) in want_usage {
                wrong = true;
                add(
                    format!("project {p} usage"),
                    format!(
                        "no project_usage entry, but its links hold {} bytes in {} blobs",
                        want.bytes, want.blobs
                    ),
                );
            }
            if wrong {
                fixes.push(Fix::Usage);
            }
        }

        // Proxy cache projects and replication policies use a registry
        // that exists (a registry is not deleted while either uses it).
        let mut users: Vec<(String, u64)> = Vec::new();
        for r in entries(&inner.index, ProjectKey::all()) {
            let (ProjectKey(project), rec) = r?;
            if let Some(id) = rec.registry_id {
                users.push((format!("project {project}"), id));
            }
        }
        for r in entries(&inner.index, PolicyKey::all()) {
            let (PolicyKey(policy), rec) = r?;
            users.push((format!("replication policy {policy}"), rec.registry_id));
        }
        for (object, id) in users {
            if !inner.index.contains(&RegistryKey(id))? && unreadable.whole(Cf::Registries) {
                add(object, format!("uses registry {id}, which does not exist"));
            }
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
        let mut b = Batch::default();
        // Blob records several fixes change (counts and tier), written once.
        let mut changed: HashMap<Digest, BlobRecord> = HashMap::new();
        fn record<'a>(
            index: &Index,
            changed: &'a mut HashMap<Digest, BlobRecord>,
            d: &Digest,
        ) -> Result<Option<&'a mut BlobRecord>, StorageError> {
            if !changed.contains_key(d) {
                match index.get(&BlobKey(d.clone()))? {
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
                    if let Some(rec) = record(&inner.index, &mut changed, d)? {
                        rec.refcount = *refs;
                        rec.links = *links;
                        out.actions
                            .push(format!("blob {d}: refcount {refs}, link count {links}"));
                    }
                }
                Fix::Tier(d, tier) => {
                    if let Some(rec) = record(&inner.index, &mut changed, d)? {
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
                Fix::RepoManifestMediaType(repo, d, media_type) => {
                    let key = RepoManifestKey(repo.clone(), d.clone());
                    if let Some(mut r) = inner.index.get(&key)? {
                        r.media_type.clone_from(media_type);
                        b.put(&key, &r);
                        out.actions
                            .push(format!("manifest {repo}@{d}: media type {media_type}"));
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
                Fix::Referrer(k, present) => {
                    if *present {
                        b.put(k, &Empty);
                    } else {
                        b.delete(k);
                    }
                    out.actions.push(format!(
                        "referrer {}@{} of {} fixed",
                        k.repo, k.referrer, k.subject
                    ));
                }
                Fix::RemoveCorruptKey(k) => {
                    b.delete_corrupt(k);
                    out.actions
                        .push(format!("corrupt entry {} removed", k.object()));
                }
                Fix::RemoveCorruptValue(key) => {
                    b.delete_key(key);
                    if let Key::Upload(UploadKey(id)) = key {
                        if let Err(e) = inner.store.abort(id) {
                            tracing::warn!(upload = %id, error = %e, "aborting an unreadable upload's staged blob");
                        }
                    }
                    out.actions
                        .push(format!("entry {key} with a corrupt value removed"));
                }
                Fix::DeleteUnindexed(_) | Fix::Usage => {}
            }
        }
        inner.commit(g, b)?;
        if report.fixes.iter().any(|f| matches!(f, Fix::Usage)) {
            // From the index as the fixes above left it.
            out.actions.push(inner.rewrite_usage()?);
        }
        for f in &report.fixes {
            if let Fix::DropUpload(_, owner) = f {
                inner.release_upload_slot(owner);
            }
        }
        Ok((report, out))
    }
}

/// The decoded entries of `scan`, skipping those that do not decode (the
/// keyspace walk reported them).
fn entries<K: IndexKey>(
    index: &Index,
    scan: Scan<K>,
) -> impl Iterator<Item = Result<(K, K::Value), StorageError>> + '_ {
    index.scan(scan).filter(|r| !is_corrupt(r))
}

/// The decoded keys of `scan`, as [`entries`] (values are not read).
fn entry_keys<K: IndexKey>(
    index: &Index,
    scan: Scan<K>,
) -> impl Iterator<Item = Result<K, StorageError>> + '_ {
    index.scan_keys(scan).filter(|r| !is_corrupt(r))
}

/// Whether a scan item is an entry that does not decode.
fn is_corrupt<T>(r: &Result<T, StorageError>) -> bool {
    matches!(
        r,
        Err(StorageError::CorruptKey(_) | StorageError::Corrupt { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use crate::error::ManifestError;
    use crate::keys::Cf;
    use crate::names::{Reference, Tag};
    use crate::records::{Record, UploadRecord};
    use crate::{EngineConfig, GcOptions, ManifestPut};

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

    /// A repository with a blob `b` (refcount 0: a GC candidate), a blob
    /// `l` referenced by manifest `m1`, and `m2` whose subject is `m1` (a
    /// referrer entry). Returns (repo, b, l, m1, m2).
    fn populated(e: &Engine) -> (RepoName, Digest, Digest, Digest, Digest) {
        let repo = RepoName::parse("p/r").unwrap();
        let b = Digest::of(Algorithm::Sha256, b"loose");
        e.put_blob(&repo, &b, b"loose").unwrap();
        let l = Digest::of(Algorithm::Sha256, b"layer");
        e.put_blob(&repo, &l, b"layer").unwrap();
        let put = |body: &str, subject: Option<Digest>| ManifestPut {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: body.as_bytes().to_vec(),
            blobs: vec![l.clone()],
            blob_sizes: [(l.clone(), 5)].into_iter().collect(),
            subject,
            ..ManifestPut::default()
        };
        let m1 = e.put_manifest(&repo, put(r#"{"m":1}"#, None)).unwrap();
        let m2 = e
            .put_manifest(&repo, put(r#"{"m":2}"#, Some(m1.clone())))
            .unwrap();
        let report = e.fsck(FsckOptions::default()).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        (repo, b, l, m1, m2)
    }

    /// A repository entry whose media type is not its record's (what a
    /// read would serve) is a finding, and repair copies the record's.
    #[test]
    fn an_entrys_media_type_must_be_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let (repo, _, _, m1, _) = populated(&e);
        let key = RepoManifestKey(repo.clone(), m1.clone());
        let mut entry = e.inner.index.get(&key).unwrap().unwrap();
        let recorded = std::mem::replace(&mut entry.media_type, "text/html".into());
        plant(&e, &[(Cf::RepoManifests, &key.encode(), &entry.encode())]);
        let report = e.fsck(FsckOptions::default()).unwrap();
        let object = format!("manifest {repo}@{m1}");
        assert!(has(&report, &object, "media type text/html"), "{report:?}");
        e.fsck_repair(FsckOptions::default()).unwrap();
        assert!(e.fsck(FsckOptions::default()).unwrap().findings.is_empty());
        let m = e
            .get_manifest(&repo, &Reference::Digest(m1))
            .unwrap()
            .unwrap();
        assert_eq!(m.media_type, recorded);
    }

    /// Every family is walked to the end through the closed keyspace: each
    /// corrupt key and value of the families that hold nothing live is a
    /// finding, repair removes it (rebuilding what it derived), and the
    /// index then checks clean.
    #[test]
    fn repair_removes_corrupt_entries_that_hold_nothing_live() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let (repo, b, l, m1, m2) = populated(&e);
        let referrer = ReferrerKey {
            repo: repo.clone(),
            subject: m1.clone(),
            referrer: m2.clone(),
        };
        let rec = UploadRecord {
            repo: "p/r".into(),
            algorithm: Algorithm::Sha256,
            offset: 0,
            owner: String::new(),
            created_ms: 0,
            updated_ms: 0,
            publishing: None,
            segments: Vec::new(),
            hash_state: None,
        };
        let candidate = GcCandidateKey(b.clone()).encode();
        let reverse = BlobRepoKey(l.clone(), repo.clone()).encode();
        let referrer_bytes = referrer.encode();
        let planted: Vec<(Cf, Vec<u8>, Vec<u8>)> = vec![
            (Cf::GcCandidates, b"junk".to_vec(), vec![]),
            (Cf::GcCandidates, b"sha256:00".to_vec(), vec![]),
            (Cf::GcCandidates, candidate.clone(), b"x".to_vec()),
            (Cf::BlobRepos, b"p/r\0sha256:00".to_vec(), vec![]),
            (Cf::BlobRepos, reverse.clone(), b"x".to_vec()),
            (Cf::Referrers, b"p/r\0junk".to_vec(), vec![]),
            (Cf::Referrers, referrer_bytes.clone(), b"x".to_vec()),
            (Cf::Uploads, b"../not-an-id".to_vec(), rec.encode()),
            (
                Cf::Uploads,
                b"0123456789abcdef0123456789abcdef".to_vec(),
                b"\x01{".to_vec(),
            ),
        ];
        let refs: Vec<(Cf, &[u8], &[u8])> = planted
            .iter()
            .map(|(cf, k, v)| (*cf, k.as_slice(), v.as_slice()))
            .collect();
        plant(&e, &refs);

        let report = e.fsck(FsckOptions::default()).unwrap();
        let f = &report.findings;
        for (cf, k, _) in &planted {
            let hex = hex::encode(k);
            assert!(
                f.iter().any(|x| x.object.starts_with(cf.name())
                    && (x.object.ends_with(&hex) || x.problem.contains(&hex))
                    && x.problem.contains("fsck --repair removes it")),
                "{cf}/{hex} not reported: {f:?}"
            );
        }
        // A derived entry whose value is corrupt counts as absent: the
        // checks after the walk report it missing, and repair rewrites it.
        assert!(has(
            &report,
            &format!("link p/r@{l}"),
            "reverse link missing"
        ));
        assert!(has(&report, &format!("referrer p/r@{m2}"), "not listed"));
        assert!(has(&report, &format!("blob {b}"), "missing from the GC"));
        assert_eq!(f.len(), planted.len() + 3, "{f:?}");

        let (_, repaired) = e.fsck_repair(FsckOptions::default()).unwrap();
        assert!(
            repaired.actions.len() >= planted.len(),
            "{:?}",
            repaired.actions
        );
        let report = e.fsck(FsckOptions::default()).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        // What the corrupt values stood for is rebuilt from its sources.
        let index = &e.inner.index;
        assert_eq!(index.get(&GcCandidateKey(b.clone())).unwrap(), Some(Empty));
        assert_eq!(
            index.get(&BlobRepoKey(l.clone(), repo.clone())).unwrap(),
            Some(Empty)
        );
        assert_eq!(index.get(&referrer).unwrap(), Some(Empty));
        let listed = e.referrers(&repo, &m1, None).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
    }

    /// Corrupt entries of families that may hold the only copy of a record
    /// (`meta` and the primary records) are reported, every one, and kept
    /// by repair; while a blob record is unreadable, repair deletes neither
    /// its file nor its links.
    #[test]
    fn repair_keeps_corrupt_entries_it_cannot_prove_dead() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let (repo, b, l, m1, _) = populated(&e);
        let blob = BlobKey(b.clone()).encode();
        let manifest = ManifestKey(m1.clone()).encode();
        let stray = Digest::of(Algorithm::Sha256, b"stray");
        let reverse = BlobRepoKey(stray.clone(), repo.clone());
        let planted: Vec<(Cf, Vec<u8>, Vec<u8>)> = vec![
            (Cf::Meta, b"mystery".to_vec(), b"1".to_vec()),
            (
                Cf::Meta,
                b"seq\0widget".to_vec(),
                7u64.to_be_bytes().to_vec(),
            ),
            (Cf::Meta, b"seq\0user".to_vec(), b"x".to_vec()),
            (Cf::Blobs, blob.clone(), b"\x01{".to_vec()),
            (Cf::Users, b"".to_vec(), b"\x01{}".to_vec()),
            (Cf::Users, b"bob".to_vec(), b"\x01{}".to_vec()),
            (Cf::Robots, b"\xff".to_vec(), vec![]),
            (Cf::Repos, b"A/B".to_vec(), vec![]),
            (Cf::Tags, b"p/r\0v:1".to_vec(), vec![]),
            (Cf::Links, b"p/r\0sha256:zz".to_vec(), vec![]),
            (Cf::Manifests, manifest.clone(), b"\x01[]".to_vec()),
        ];
        let refs: Vec<(Cf, &[u8], &[u8])> = planted
            .iter()
            .map(|(cf, k, v)| (*cf, k.as_slice(), v.as_slice()))
            .collect();
        plant(&e, &refs);
        // A reverse link whose forward link may be the corrupt `links` key.
        plant(&e, &[(Cf::BlobRepos, &reverse.encode(), b"")]);

        let before = e.fsck(FsckOptions::default()).unwrap().findings;
        for (cf, k, _) in &planted {
            let hex = hex::encode(k);
            assert!(
                before.iter().any(|x| x.object.starts_with(cf.name())
                    && (x.object.ends_with(&hex) || x.problem.contains(&hex))
                    && x.problem.contains("kept")),
                "{cf}/{hex} not reported: {before:?}"
            );
        }
        // The blob's file is not taken for an unindexed one.
        assert!(
            before
                .iter()
                .any(|x| x.object == format!("blob {b}") && x.problem.contains("file kept")),
            "{before:?}"
        );

        let (_, repaired) = e.fsck_repair(FsckOptions::default()).unwrap();
        assert!(repaired.actions.is_empty(), "{:?}", repaired.actions);
        let after = e.fsck(FsckOptions::default()).unwrap().findings;
        assert_eq!(after, before);
        assert!(e.inner.store.stat(&b).unwrap().is_some());
        assert!(e.inner.index.contains(&LinkKey(repo, b)).unwrap());
        assert!(e.inner.index.contains(&reverse).unwrap());
        // The unreadable manifest still counts: `l` keeps both references
        // (recomputed without it, the refcount would drop to 1).
        let rec = e.inner.index.get(&BlobKey(l)).unwrap().unwrap();
        assert_eq!(rec.refcount, 2);
        assert!(
            after
                .iter()
                .any(|x| x.object == "index" && x.problem.contains("not repaired")),
            "{after:?}"
        );
    }

    /// An upload record whose value does not decode is dropped by recovery
    /// at open (it cannot be resumed), instead of failing the open.
    #[test]
    fn recovery_drops_an_upload_record_that_does_not_decode() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoName::parse("p/r").unwrap();
        {
            let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
            let id = e.begin_upload(&repo, Algorithm::Sha256).unwrap().id;
            plant(&e, &[(Cf::Uploads, id.as_bytes(), b"\x01{")]);
        }
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        assert_eq!(e.open_uploads().unwrap(), 0);
        let report = e.fsck(FsckOptions::default()).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
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
                publishing: None,
                segments: Vec::new(),
                hash_state: None,
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
