//! The index keyspace: every column family and key encoding.
//!
//! This module is the only code that builds or parses index keys. Each key
//! family is one type implementing [`IndexKey`]: it names its column family
//! ([`Cf`]) and its value type (a [`Record`] from [`crate::records`]), and
//! it encodes and decodes itself. A key of one family cannot be used in
//! another, and a value written under a key is always that key's record
//! type: the index functions (`index.rs`) take only typed keys and values.
//! Scans take a [`Scan`], built only here from a key type's prefix
//! constructors, so a scan yields exactly the keys of its own family and
//! prefix, decoded. A key that does not decode (wrong number of parts, not
//! UTF-8, a part that is not a valid repository name, tag, digest, upload
//! id or chart version) is a [`CorruptKey`] naming the family and the key
//! bytes in hex, never a lossy string.
//!
//! The keyspace is closed: [`Key`] is the enum of every key type (`meta`'s
//! several as [`MetaKey`]), and [`Key::decode`] classifies any entry of any
//! family as exactly one key or as a [`CorruptKey`] — an unknown `meta`
//! key included. fsck walks every family through it.
//!
//! Separators are a single `0x00` byte, which cannot occur in repository
//! names, tags, digests or upload ids, so a prefix scan over `repo 0x00`
//! sees exactly one repository's entries and iteration order is byte order
//! of the parts (tags come out sorted).
//!
//! ```text
//! column family   key type / key                          value type (records.rs)
//! -------------   -------------------------------------   -------------------------------
//! meta            FormatKey: "format"                     FormatVersion: u32 BE
//! blobs           BlobKey: digest                         BlobRecord: size, tier, refcount,
//!                                                           links, state, timestamps
//! links           LinkKey: repo 0x00 digest               LinkRecord: created
//! blob_repos      BlobRepoKey: digest 0x00 repo           Empty (reverse of links, for GC)
//! manifests       ManifestKey: digest                     ManifestRecord: media type, size,
//!                                                           subject, artifact type,
//!                                                           annotations, referenced blobs and
//!                                                           manifests, repository count
//! bodies          BodyKey: digest                         ManifestBody: the manifest bytes
//!                                                           exactly as pushed
//! repo_manifests  RepoManifestKey: repo 0x00 digest       RepoManifestRecord: created, tag
//!                                                           count, parent count
//! immutable_rules ImmutableRulesKey: project              ImmutableRulesRecord: the project's
//!                                                           tag immutability rules, by id
//! pulls           PullKey: repo 0x00 digest               PullRecord: pull count, last pull
//!                                                           (added in batches)
//! tags            TagKey: repo 0x00 tag                   TagRecord: the digest string
//! referrers       ReferrerKey:                            Empty (descriptor from `manifests`)
//!                   repo 0x00 subject 0x00 referrer
//! uploads         UploadKey: upload id (32 hex)           UploadRecord: repo, algorithm,
//!                                                           durable offset, owner, timestamps
//! repos           RepoKey: repo                           RepoRecord: created
//! users           UserKey: user name                      UserRecord: id, argon2id hash, admin
//! projects        ProjectKey: project name                ProjectRecord: id, public, owner
//! members         MemberKey: project 0x00 user name       MemberRecord: role
//! group_members   GroupMemberKey:                         MemberRecord: role of the members
//!                   project 0x00 group DN (normalized)      of an LDAP group
//! robots          RobotKey: robot name                    RobotRecord: id, project, actions,
//!                   (robot$project+name)                    sha256 of the secret, expiry
//! meta            TokenSeedKey: "token_key"               TokenSeed: legacy only, the 32-byte
//!                                                           Ed25519 seed of the token signing
//!                                                           key, which now lives in
//!                                                           <data>/token.key; moved out and
//!                                                           purged at first use
//! meta            SeqKey: "seq" 0x00 kind                 Seq: u64 BE, last id handed out for
//!                                                           kind ("user", "project", "robot",
//!                                                           "member", "registry", "policy",
//!                                                           "user_group", …: IdKind)
//! meta            GcCandidatesBuiltKey:                   Marker: "1"
//!                   "gc_candidates_built"
//! meta            TiersLocatedKey: "tiers_located"        Marker: "1": every blob record's
//!                                                           tier was located in the store
//! meta            UsageCountedKey: "usage_counted"        Marker: "1": project_blobs and
//!                                                           project_usage were counted
//! gc_candidates   GcCandidateKey: digest                  Empty: the blob's refcount is 0
//!                                                           (GC's work list, see docs/gc.md)
//! charts          ChartKey:                               ChartRecord: Chart.yaml metadata
//!                   project 0x00 name 0x00 version          (Helm config JSON), tgz and prov
//!                                                           digests and sizes, manifest
//!                                                           digest, created
//! chart_repos     ChartRepoKey: project                   ChartRepoRecord: generation
//!                                                           (bumped by every chart change),
//!                                                           updated, version count, the
//!                                                           charts the latest changes touched
//! pins            PinKey: digest 0x00 holder (32 hex:     Seq: u64 BE, when it was pinned
//!                   an upload id or a chart upload's)       (ms); GC claims no pinned digest
//!                                                           (docs/gc.md, "Across nodes")
//! registries      RegistryKey: id (decimal)               RegistryRecord: an upstream
//!                                                           registry endpoint (name, type,
//!                                                           URL, credential), which proxy
//!                                                           cache projects pull through
//! replication_    PolicyKey: id (decimal)                 PolicyRecord: a pull replication
//!   policies                                                policy (source registry, filters,
//!                                                           destination namespace, schedule)
//! project_blobs   ProjectBlobKey: project 0x00 digest     ProjectBlobRecord: how many `links`
//!                                                           entries of the project's
//!                                                           repositories name the blob
//! project_usage   UsageKey: project                       UsageRecord: bytes and blobs the
//!                                                           project holds, each blob once
//! audit_log       AuditKey: 16 hex digits of !id          AuditRecord: who did what to which
//!                   (newest first in key order)             resource, when
//! webhook_        WebhookPolicyKey: id (decimal)          WebhookPolicyRecord: a project's
//!   policies                                                webhook targets and event types
//! webhook_queue   WebhookEventKey: 16 hex digits of id    WebhookEventRecord: an event to
//!                   (oldest first)                          deliver, its payload, attempts
//! webhook_jobs    WebhookJobKey: 16 hex digits of !id     WebhookJobRecord: a delivery's
//!                   (newest first)                          outcome
//! retention_      RetentionPolicyKey: id (decimal)        RetentionPolicyRecord: a project's
//!   policies                                                tag retention rules and schedule
//! retention_runs  RetentionRunKey: 16 hex digits of !id   RetentionRunRecord: one run of a
//!                   (newest first)                          policy, per repository what it
//!                                                           kept and deleted
//! gc_runs         GcRunKey: 16 hex digits of !id          GcRunRecord: one GC run, its
//!                   (newest first)                          options, status and report
//! user_groups     UserGroupKey: id (decimal)              UserGroupRecord: a user group
//!                                                           (Harbor's /usergroups): name,
//!                                                           type, normalized LDAP group DN
//! console_        SessionKey: SHA-256 (hex) of the        SessionRecord: a console session
//!   sessions        session cookie                          (account, credential stamp, CSRF
//!                                                           token, expiry)
//! ```
//!
//! A chart `name-version` of `project` is the OCI manifest tagged
//! `version` (`+` as `_`) in repository `project/name`; `charts` is the
//! chart repository's view of it (the source of `index.yaml`).
//!
//! Architecture Invariant: a blob is readable in a repository only if
//! `links` holds `repo 0x00 digest`; `blob_repos` always mirrors `links`.
//!
//! Architecture Invariant: `gc_candidates` holds a blob's digest exactly when
//! its `blobs` record has refcount 0; both change in the same batch (see
//! `Inner::put_blob_record`), so GC scans only candidates, never all blobs.

use std::fmt;
use std::marker::PhantomData;

use crate::charts::ChartId;
use crate::digest::Digest;
use crate::names::{RepoName, Tag};
use crate::records::{
    AuditRecord, BlobRecord, ChartRecord, ChartRepoRecord, Empty, FormatVersion, GcRunRecord,
    ImmutableRulesRecord, LinkRecord, ManifestBody, ManifestRecord, Marker, MemberRecord,
    PolicyRecord, ProjectBlobRecord, ProjectRecord, PullRecord, Record, RegistryRecord,
    RepoManifestRecord, RepoRecord, RetentionPolicyRecord, RetentionRunRecord, RobotRecord, Seq,
    SessionRecord, TagRecord, TokenSeed, UploadRecord, UsageRecord, UserGroupRecord, UserRecord,
    WebhookEventRecord, WebhookJobRecord, WebhookPolicyRecord,
};

/// A column family of the index. Its name (the RocksDB column family name)
/// is known only here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cf {
    Meta,
    Blobs,
    Links,
    BlobRepos,
    Manifests,
    Bodies,
    RepoManifests,
    Tags,
    Referrers,
    Uploads,
    Repos,
    Users,
    Projects,
    Members,
    Robots,
    GcCandidates,
    Charts,
    ChartRepos,
    Pins,
    Registries,
    Policies,
    Pulls,
    ImmutableRules,
    ProjectBlobs,
    ProjectUsage,
    Audit,
    WebhookPolicies,
    WebhookQueue,
    WebhookJobs,
    GroupMembers,
    RetentionPolicies,
    RetentionRuns,
    GcRuns,
    UserGroups,
    ConsoleSessions,
}

impl Cf {
    /// Every column family, in the order they are opened.
    pub const ALL: [Cf; 35] = [
        Cf::Meta,
        Cf::Blobs,
        Cf::Links,
        Cf::BlobRepos,
        Cf::Manifests,
        Cf::Bodies,
        Cf::RepoManifests,
        Cf::Tags,
        Cf::Referrers,
        Cf::Uploads,
        Cf::Repos,
        Cf::Users,
        Cf::Projects,
        Cf::Members,
        Cf::Robots,
        Cf::GcCandidates,
        Cf::Charts,
        Cf::ChartRepos,
        Cf::Pins,
        Cf::Registries,
        Cf::Policies,
        Cf::Pulls,
        Cf::ImmutableRules,
        Cf::ProjectBlobs,
        Cf::ProjectUsage,
        Cf::Audit,
        Cf::WebhookPolicies,
        Cf::WebhookQueue,
        Cf::WebhookJobs,
        Cf::GroupMembers,
        Cf::RetentionPolicies,
        Cf::RetentionRuns,
        Cf::GcRuns,
        Cf::UserGroups,
        Cf::ConsoleSessions,
    ];

    /// The column family's name in the index. Changing one is a format change.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Blobs => "blobs",
            Cf::Links => "links",
            Cf::BlobRepos => "blob_repos",
            Cf::Manifests => "manifests",
            Cf::Bodies => "bodies",
            Cf::RepoManifests => "repo_manifests",
            Cf::Tags => "tags",
            Cf::Referrers => "referrers",
            Cf::Uploads => "uploads",
            Cf::Repos => "repos",
            Cf::Users => "users",
            Cf::Projects => "projects",
            Cf::Members => "members",
            Cf::Robots => "robots",
            Cf::GcCandidates => "gc_candidates",
            Cf::Charts => "charts",
            Cf::ChartRepos => "chart_repos",
            Cf::Pins => "pins",
            Cf::Registries => "registries",
            Cf::Policies => "replication_policies",
            Cf::Pulls => "pulls",
            Cf::ImmutableRules => "immutable_rules",
            Cf::ProjectBlobs => "project_blobs",
            Cf::ProjectUsage => "project_usage",
            Cf::Audit => "audit_log",
            Cf::WebhookPolicies => "webhook_policies",
            Cf::WebhookQueue => "webhook_queue",
            Cf::WebhookJobs => "webhook_jobs",
            Cf::GroupMembers => "group_members",
            Cf::RetentionPolicies => "retention_policies",
            Cf::RetentionRuns => "retention_runs",
            Cf::GcRuns => "gc_runs",
            Cf::UserGroups => "user_groups",
            Cf::ConsoleSessions => "console_sessions",
        }
    }
}

impl fmt::Display for Cf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The index format this code writes and reads (`meta/format`).
pub const FORMAT_VERSION: u32 = 1;

/// A key in the index that does not decode as a key of its family.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("index key {cf}/{} is corrupt: {reason}", hex::encode(.key))]
pub struct CorruptKey {
    /// The family the key was read from.
    pub cf: Cf,
    /// The key's bytes as stored.
    pub key: Vec<u8>,
    /// What is wrong with it.
    pub reason: String,
}

impl CorruptKey {
    /// `cf/hex-of-the-key`, for reports.
    pub fn object(&self) -> String {
        format!("{}/{}", self.cf, hex::encode(&self.key))
    }
}

/// One key family: its column family, its value type and its encoding.
/// `decode(encode(k)) == k` for every key; `decode` refuses every byte
/// string `encode` cannot produce.
pub trait IndexKey: Sized + fmt::Display + 'static {
    /// The column family holding keys of this type.
    const CF: Cf;
    /// The record stored under keys of this type.
    type Value: Record;
    /// The key's bytes.
    fn encode(&self) -> Vec<u8>;
    /// Parses key bytes read from [`Self::CF`].
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey>;
}

/// A key type that is the only key type of its column family, so the whole
/// family can be scanned as keys of this type (`meta` holds several).
pub trait WholeFamily: IndexKey {
    /// Every key of the family, in byte order.
    fn all() -> Scan<Self> {
        Scan::prefix(Vec::new())
    }
}

/// A prefix scan over keys of type `K`: every key starting with `prefix`,
/// from `start` on (inclusive; `start` itself starts with `prefix`), in byte
/// order. Built only by the constructors in this module, so a scan never
/// reaches keys of another family or outside its prefix.
#[derive(Clone, Debug)]
pub struct Scan<K> {
    prefix: Vec<u8>,
    start: Vec<u8>,
    _key: PhantomData<fn() -> K>,
}

impl<K: IndexKey> Scan<K> {
    fn prefix(prefix: Vec<u8>) -> Scan<K> {
        Scan {
            start: prefix.clone(),
            prefix,
            _key: PhantomData,
        }
    }

    /// The scan starting strictly after every key whose next part (after
    /// the prefix) is `part`, and after every key extending it.
    fn after_part(mut self, part: &[u8]) -> Scan<K> {
        self.start = self.prefix.clone();
        self.start.extend_from_slice(part);
        self.start.push(SEP);
        self
    }

    /// The bytes every key of the scan starts with.
    pub(crate) fn prefix_bytes(&self) -> &[u8] {
        &self.prefix
    }

    /// The first key the scan may return (inclusive).
    pub(crate) fn start_bytes(&self) -> &[u8] {
        &self.start
    }

    /// The smallest key after every key of the scan (exclusive upper bound),
    /// or `None` when the scan runs to the end of the family.
    pub(crate) fn end_bytes(&self) -> Option<Vec<u8>> {
        let mut end = self.prefix.clone();
        while let Some(last) = end.pop() {
            if last < u8::MAX {
                end.push(last + 1);
                return Some(end);
            }
        }
        None
    }
}

const SEP: u8 = 0;

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(p);
    }
    k
}

/// `parts` followed by a separator: the prefix of keys continuing them.
fn prefix_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut p = join(parts);
    p.push(SEP);
    p
}

/// Decoding: the key split into exactly `N` UTF-8 parts.
fn split<const N: usize>(cf: Cf, bytes: &[u8]) -> Result<[&str; N], CorruptKey> {
    let corrupt = |reason: String| CorruptKey {
        cf,
        key: bytes.to_vec(),
        reason,
    };
    let mut out = [""; N];
    let mut n = 0;
    for part in bytes.split(|&b| b == SEP) {
        let slot = out.get_mut(n).ok_or_else(|| {
            corrupt(format!(
                "more than {N} 0x00-separated part{}",
                if N == 1 { "" } else { "s" }
            ))
        })?;
        *slot = std::str::from_utf8(part)
            .map_err(|_| corrupt(format!("part {} is not UTF-8", n + 1)))?;
        n += 1;
    }
    if n != N {
        return Err(corrupt(format!("{n} parts, not {N}")));
    }
    Ok(out)
}

/// Decoding: one part parsed, its error kept as the reason.
fn part<T, E: fmt::Display>(
    cf: Cf,
    bytes: &[u8],
    what: &str,
    parsed: Result<T, E>,
) -> Result<T, CorruptKey> {
    parsed.map_err(|e| CorruptKey {
        cf,
        key: bytes.to_vec(),
        reason: format!("{what}: {e}"),
    })
}

fn digest(cf: Cf, bytes: &[u8], s: &str) -> Result<Digest, CorruptKey> {
    part(cf, bytes, "digest", Digest::parse(s))
}

fn repo(cf: Cf, bytes: &[u8], s: &str) -> Result<RepoName, CorruptKey> {
    part(cf, bytes, "repository", RepoName::parse(s))
}

/// An account name part: non-empty UTF-8 without a separator (the
/// accounts module validates the grammar before writing).
fn name(cf: Cf, bytes: &[u8], s: &str) -> Result<String, CorruptKey> {
    if s.is_empty() {
        return Err(CorruptKey {
            cf,
            key: bytes.to_vec(),
            reason: "empty name".into(),
        });
    }
    Ok(s.to_owned())
}

/// A key type that is one digest: `blobs`, `manifests`, `bodies`, `gc_candidates`.
macro_rules! digest_key {
    ($(#[$doc:meta])* $name:ident, $cf:expr, $value:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub Digest);

        impl IndexKey for $name {
            const CF: Cf = $cf;
            type Value = $value;
            fn encode(&self) -> Vec<u8> {
                self.0.as_str().as_bytes().to_vec()
            }
            fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
                let [d] = split::<1>(Self::CF, bytes)?;
                Ok($name(digest(Self::CF, bytes, d)?))
            }
        }

        impl WholeFamily for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", Self::CF, self.0)
            }
        }
    };
}

digest_key!(
    /// `blobs`: a stored blob.
    BlobKey,
    Cf::Blobs,
    BlobRecord
);
digest_key!(
    /// `manifests`: a manifest's content metadata.
    ManifestKey,
    Cf::Manifests,
    ManifestRecord
);
digest_key!(
    /// `bodies`: a manifest's bytes.
    BodyKey,
    Cf::Bodies,
    ManifestBody
);
digest_key!(
    /// `gc_candidates`: a blob whose refcount is 0.
    GcCandidateKey,
    Cf::GcCandidates,
    Empty
);

/// A key type that is repository 0x00 digest: `links`, `repo_manifests`.
macro_rules! repo_digest_key {
    ($(#[$doc:meta])* $name:ident, $cf:expr, $value:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub RepoName, pub Digest);

        impl IndexKey for $name {
            const CF: Cf = $cf;
            type Value = $value;
            fn encode(&self) -> Vec<u8> {
                join(&[self.0.as_str().as_bytes(), self.1.as_str().as_bytes()])
            }
            fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
                let [r, d] = split::<2>(Self::CF, bytes)?;
                Ok($name(repo(Self::CF, bytes, r)?, digest(Self::CF, bytes, d)?))
            }
        }

        impl WholeFamily for $name {}

        impl $name {
            /// Every entry of one repository, by digest.
            pub fn of_repo(repo: &RepoName) -> Scan<$name> {
                Scan::prefix(prefix_of(&[repo.as_str().as_bytes()]))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}@{}", Self::CF, self.0, self.1)
            }
        }
    };
}

repo_digest_key!(
    /// `links`: blob `.1` is readable in repository `.0`.
    LinkKey,
    Cf::Links,
    LinkRecord
);
repo_digest_key!(
    /// `repo_manifests`: manifest `.1` is present in repository `.0`.
    RepoManifestKey,
    Cf::RepoManifests,
    RepoManifestRecord
);
repo_digest_key!(
    /// `pulls`: how often manifest `.1` was pulled from repository `.0`.
    PullKey,
    Cf::Pulls,
    PullRecord
);

/// `blob_repos`: blob `.0` is linked in repository `.1` (reverse of `links`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobRepoKey(pub Digest, pub RepoName);

impl BlobRepoKey {
    /// Every reverse link of one blob.
    pub fn of_blob(d: &Digest) -> Scan<BlobRepoKey> {
        Scan::prefix(prefix_of(&[d.as_str().as_bytes()]))
    }
}

impl IndexKey for BlobRepoKey {
    const CF: Cf = Cf::BlobRepos;
    type Value = Empty;
    fn encode(&self) -> Vec<u8> {
        join(&[self.0.as_str().as_bytes(), self.1.as_str().as_bytes()])
    }
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
        let [d, r] = split::<2>(Self::CF, bytes)?;
        Ok(BlobRepoKey(
            digest(Self::CF, bytes, d)?,
            repo(Self::CF, bytes, r)?,
        ))
    }
}

impl WholeFamily for BlobRepoKey {}

impl fmt::Display for BlobRepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", Self::CF, self.0, self.1)
    }
}

/// `pins`: digest `.0` is about to be published or linked by holder `.1`
/// (an upload id, or a chart upload's id: 32 lowercase hex characters),
/// so GC claims it for no deletion. Written with the upload's `publishing`
/// note, removed in the batch that ends the holder's work.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PinKey(pub Digest, pub String);

impl PinKey {
    /// Every pin of one digest.
    pub fn of_digest(d: &Digest) -> Scan<PinKey> {
        Scan::prefix(prefix_of(&[d.as_str().as_bytes()]))
    }
}

impl IndexKey for PinKey {
    const CF: Cf = Cf::Pins;
    type Value = crate::records::Seq;
    fn encode(&self) -> Vec<u8> {
        join(&[self.0.as_str().as_bytes(), self.1.as_bytes()])
    }
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
        let [d, holder] = split::<2>(Self::CF, bytes)?;
        if !crate::uploads::valid_upload_id(holder) {
            return Err(CorruptKey {
                cf: Self::CF,
                key: bytes.to_vec(),
                reason: "holder is not 32 lowercase hex characters".into(),
            });
        }
        Ok(PinKey(digest(Self::CF, bytes, d)?, holder.to_owned()))
    }
}

impl WholeFamily for PinKey {}

impl fmt::Display for PinKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", Self::CF, self.0, self.1)
    }
}

/// `tags`: tag `.1` of repository `.0`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TagKey(pub RepoName, pub Tag);

impl TagKey {
    /// The prefix of the tagged manifest's entry in the tag's repository:
    /// the `repo_manifests` key is this prefix followed by the tag's stored
    /// value (the digest string, `TagRecord`). What `Index::get_tag_link`
    /// reads together with the tag, in one call.
    pub(crate) fn link_prefix(&self) -> Vec<u8> {
        prefix_of(&[self.0.as_str().as_bytes()])
    }

    /// Every tag of one repository, in byte order.
    pub fn of_repo(repo: &RepoName) -> Scan<TagKey> {
        Scan::prefix(prefix_of(&[repo.as_str().as_bytes()]))
    }

    /// The tags of `repo` strictly after `last` (any string: a client's
    /// pagination marker need not be a tag).
    pub fn of_repo_after(repo: &RepoName, last: &str) -> Scan<TagKey> {
        TagKey::of_repo(repo).after_part(last.as_bytes())
    }
}

impl IndexKey for TagKey {
    const CF: Cf = Cf::Tags;
    type Value = TagRecord;
    fn encode(&self) -> Vec<u8> {
        join(&[self.0.as_str().as_bytes(), self.1.as_str().as_bytes()])
    }
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
        let [r, t] = split::<2>(Self::CF, bytes)?;
        Ok(TagKey(
            repo(Self::CF, bytes, r)?,
            part(Self::CF, bytes, "tag", Tag::parse(t))?,
        ))
    }
}

impl WholeFamily for TagKey {}

impl fmt::Display for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", Self::CF, self.0, self.1)
    }
}

/// `referrers`: manifest `referrer` in `repo` has subject `subject`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReferrerKey {
    pub repo: RepoName,
    pub subject: Digest,
    pub referrer: Digest,
}

impl ReferrerKey {
    /// Every referrer of `subject` in `repo`, in digest order.
    pub fn of_subject(repo: &RepoName, subject: &Digest) -> Scan<ReferrerKey> {
        Scan::prefix(prefix_of(&[
            repo.as_str().as_bytes(),
            subject.as_str().as_bytes(),
        ]))
    }

    /// The referrers of `subject` in `repo` strictly after `after`.
    pub fn of_subject_after(
        repo: &RepoName,
        subject: &Digest,
        after: &Digest,
    ) -> Scan<ReferrerKey> {
        ReferrerKey::of_subject(repo, subject).after_part(after.as_str().as_bytes())
    }
}

impl IndexKey for ReferrerKey {
    const CF: Cf = Cf::Referrers;
    type Value = Empty;
    fn encode(&self) -> Vec<u8> {
        join(&[
            self.repo.as_str().as_bytes(),
            self.subject.as_str().as_bytes(),
            self.referrer.as_str().as_bytes(),
        ])
    }
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
        let [r, s, d] = split::<3>(Self::CF, bytes)?;
        Ok(ReferrerKey {
            repo: repo(Self::CF, bytes, r)?,
            subject: digest(Self::CF, bytes, s)?,
            referrer: digest(Self::CF, bytes, d)?,
        })
    }
}

impl WholeFamily for ReferrerKey {}

impl fmt::Display for ReferrerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}@{} (subject {})",
            Self::CF,
            self.repo,
            self.referrer,
            self.subject
        )
    }
}

/// `uploads`: an upload session, by id (32 lowercase hex characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UploadKey(pub String);

impl IndexKey for UploadKey {
    const CF: Cf = Cf::Uploads;
    type Value = UploadRecord;
    fn encode(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
        let [id] = split::<1>(Self::CF, bytes)?;
        if !crate::uploads::valid_upload_id(id) {
            return Err(CorruptKey {
                cf: Self::CF,
                key: bytes.to_vec(),
                reason: "not an upload id (32 lowercase hex characters)".into(),
            });
        }
        Ok(UploadKey(id.to_owned()))
    }
}

impl WholeFamily for UploadKey {}

impl fmt::Display for UploadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Self::CF, self.0)
    }
}

/// A key type that is one repository (or project) name: `repos`, `chart_repos`.
macro_rules! repo_key {
    ($(#[$doc:meta])* $name:ident, $cf:expr, $value:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub RepoName);

        impl IndexKey for $name {
            const CF: Cf = $cf;
            type Value = $value;
            fn encode(&self) -> Vec<u8> {
                self.0.as_str().as_bytes().to_vec()
            }
            fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
                let [r] = split::<1>(Self::CF, bytes)?;
                Ok($name(repo(Self::CF, bytes, r)?))
            }
        }

        impl WholeFamily for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", Self::CF, self.0)
            }
        }
    };
}

repo_key!(
    /// `repos`: a repository that has held a link or manifest.
    RepoKey,
    Cf::Repos,
    RepoRecord
);
repo_key!(
    /// `chart_repos`: the chart repository of a project.
    ChartRepoKey,
    Cf::ChartRepos,
    ChartRepoRecord
);

impl RepoKey {
    /// Repositories strictly after `last` (any string: a client's
    /// pagination marker need not be a repository name).
    pub fn after(last: &str) -> Scan<RepoKey> {
        RepoKey::all().after_part(last.as_bytes())
    }

    /// Repositories after every one under `project/` (and `project`
    /// itself): one seek past a project a reader may not see.
    pub fn after_project(project: &str) -> Scan<RepoKey> {
        let mut s = RepoKey::all();
        // `p0` is the first key after every `p/…` ('0' follows '/').
        s.start = project.as_bytes().to_vec();
        s.start.push(b'/' + 1);
        s
    }
}

/// A key type that is one account name: `users`, `projects`, `robots`.
macro_rules! name_key {
    ($(#[$doc:meta])* $name:ident, $cf:expr, $value:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub String);

        impl IndexKey for $name {
            const CF: Cf = $cf;
            type Value = $value;
            fn encode(&self) -> Vec<u8> {
                self.0.as_bytes().to_vec()
            }
            fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
                let [n] = split::<1>(Self::CF, bytes)?;
                Ok($name(name(Self::CF, bytes, n)?))
            }
        }

        impl WholeFamily for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", Self::CF, self.0)
            }
        }
    };
}

name_key!(
    /// `users`: a person's account, by user name.
    UserKey,
    Cf::Users,
    UserRecord
);
name_key!(
    /// `projects`: a project, by name.
    ProjectKey,
    Cf::Projects,
    ProjectRecord
);
name_key!(
    /// `robots`: a robot account, by full name (`robot$project+name`).
    RobotKey,
    Cf::Robots,
    RobotRecord
);
name_key!(
    /// `immutable_rules`: a project's tag immutability rules, by project
    /// (one record: the one read a tag move adds to its locked reads).
    ImmutableRulesKey,
    Cf::ImmutableRules,
    ImmutableRulesRecord
);

name_key!(
    /// `console_sessions`: a console session, by the SHA-256 (hex) of its
    /// cookie (`sessions.rs`).
    SessionKey,
    Cf::ConsoleSessions,
    SessionRecord
);

name_key!(
    /// `project_usage`: what a project's repositories hold, each blob once
    /// (derived from `links` in the batch that changes them: `quotas.rs`).
    UsageKey,
    Cf::ProjectUsage,
    UsageRecord
);

/// `project_blobs`: blob `.1` is linked in at least one repository of
/// project `.0`; the record counts in how many (derived from `links`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProjectBlobKey(pub String, pub Digest);

impl IndexKey for ProjectBlobKey {
    const CF: Cf = Cf::ProjectBlobs;
    type Value = ProjectBlobRecord;
    fn encode(&self) -> Vec<u8> {
        join(&[self.0.as_bytes(), self.1.as_str().as_bytes()])
    }
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
        let [p, d] = split::<2>(Self::CF, bytes)?;
        Ok(ProjectBlobKey(
            name(Self::CF, bytes, p)?,
            digest(Self::CF, bytes, d)?,
        ))
    }
}

impl WholeFamily for ProjectBlobKey {}

impl fmt::Display for ProjectBlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", Self::CF, self.0, self.1)
    }
}

/// A key family of records by numeric id, as 16 lowercase hex digits of
/// the id (`up`: a forward scan reads the oldest first) or of `!id`
/// (`down`: the newest first). Fixed width, so byte order is id order.
macro_rules! hex_id_key {
    ($(#[$doc:meta])* $name:ident, $cf:expr, $value:ty, $order:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub u64);

        impl $name {
            fn stored(id: u64) -> u64 {
                hex_id_key!(@order $order, id)
            }
        }

        impl IndexKey for $name {
            const CF: Cf = $cf;
            type Value = $value;
            fn encode(&self) -> Vec<u8> {
                format!("{:016x}", Self::stored(self.0)).into_bytes()
            }
            fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
                let ok = bytes.len() == 16
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
                let n = std::str::from_utf8(bytes)
                    .ok()
                    .filter(|_| ok)
                    .and_then(|s| u64::from_str_radix(s, 16).ok());
                match n {
                    Some(n) => Ok($name(Self::stored(n))),
                    None => Err(CorruptKey {
                        cf: Self::CF,
                        key: bytes.to_vec(),
                        reason: "not 16 lowercase hex digits".into(),
                    }),
                }
            }
        }

        impl WholeFamily for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", Self::CF, self.0)
            }
        }
    };
    (@order up, $id:expr) => { $id };
    (@order down, $id:expr) => { !$id };
}

hex_id_key!(
    /// `audit_log`: one audit log entry, by id, newest first.
    AuditKey,
    Cf::Audit,
    AuditRecord,
    down
);
hex_id_key!(
    /// `webhook_queue`: an event waiting for delivery, by id, oldest
    /// first.
    WebhookEventKey,
    Cf::WebhookQueue,
    WebhookEventRecord,
    up
);
hex_id_key!(
    /// `webhook_jobs`: a delivery's outcome, by id, newest first.
    WebhookJobKey,
    Cf::WebhookJobs,
    WebhookJobRecord,
    down
);
hex_id_key!(
    /// `retention_runs`: one run of a retention policy, by id, newest
    /// first.
    RetentionRunKey,
    Cf::RetentionRuns,
    RetentionRunRecord,
    down
);
hex_id_key!(
    /// `gc_runs`: one GC run, by id, newest first.
    GcRunKey,
    Cf::GcRuns,
    GcRunRecord,
    down
);

impl RobotKey {
    /// Every robot of one project (`robot$project+…`; project names
    /// have no `+`).
    pub fn of_project(project: &str) -> Scan<RobotKey> {
        Scan::prefix(format!("{}{project}+", crate::accounts::ROBOT_PREFIX).into_bytes())
    }
}

/// A key family of records by numeric id: the id in decimal, no leading
/// zeros (the one spelling of each id).
macro_rules! id_key {
    ($(#[$doc:meta])* $name:ident, $cf:expr, $value:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub u64);

        impl IndexKey for $name {
            const CF: Cf = $cf;
            type Value = $value;
            fn encode(&self) -> Vec<u8> {
                self.0.to_string().into_bytes()
            }
            fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
                let id = std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|id| id.to_string().as_bytes() == bytes);
                id.map($name).ok_or_else(|| CorruptKey {
                    cf: Self::CF,
                    key: bytes.to_vec(),
                    reason: "not a decimal id".into(),
                })
            }
        }

        impl WholeFamily for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", Self::CF, self.0)
            }
        }
    };
}

id_key!(
    /// `registries`: an upstream registry endpoint, by id.
    RegistryKey,
    Cf::Registries,
    RegistryRecord
);
id_key!(
    /// `webhook_policies`: a project's webhook policy, by id.
    WebhookPolicyKey,
    Cf::WebhookPolicies,
    WebhookPolicyRecord
);
id_key!(
    /// `retention_policies`: a project's tag retention policy, by id.
    RetentionPolicyKey,
    Cf::RetentionPolicies,
    RetentionPolicyRecord
);
id_key!(
    /// `user_groups`: a user group (Harbor's `/usergroups`), by id.
    UserGroupKey,
    Cf::UserGroups,
    UserGroupRecord
);
id_key!(
    /// `replication_policies`: a pull replication policy, by id.
    PolicyKey,
    Cf::Policies,
    PolicyRecord
);

/// `members`: user `user` has a role in project `project`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberKey {
    pub project: String,
    pub user: String,
}

impl MemberKey {
    /// Every member of one project, by user name.
    pub fn of_project(project: &str) -> Scan<MemberKey> {
        Scan::prefix(prefix_of(&[project.as_bytes()]))
    }
}

impl IndexKey for MemberKey {
    const CF: Cf = Cf::Members;
    type Value = MemberRecord;
    fn encode(&self) -> Vec<u8> {
        join(&[self.project.as_bytes(), self.user.as_bytes()])
    }
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
        let [p, u] = split::<2>(Self::CF, bytes)?;
        Ok(MemberKey {
            project: name(Self::CF, bytes, p)?,
            user: name(Self::CF, bytes, u)?,
        })
    }
}

impl WholeFamily for MemberKey {}

impl fmt::Display for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", Self::CF, self.project, self.user)
    }
}

/// `group_members`: the members of LDAP group `group` (a normalized DN,
/// `accounts::normalize_dn`) have a role in project `project`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupMemberKey {
    pub project: String,
    pub group: String,
}

impl GroupMemberKey {
    /// Every group member of one project, by group DN.
    pub fn of_project(project: &str) -> Scan<GroupMemberKey> {
        Scan::prefix(prefix_of(&[project.as_bytes()]))
    }
}

impl IndexKey for GroupMemberKey {
    const CF: Cf = Cf::GroupMembers;
    type Value = MemberRecord;
    fn encode(&self) -> Vec<u8> {
        join(&[self.project.as_bytes(), self.group.as_bytes()])
    }
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
        let [p, g] = split::<2>(Self::CF, bytes)?;
        Ok(GroupMemberKey {
            project: name(Self::CF, bytes, p)?,
            group: name(Self::CF, bytes, g)?,
        })
    }
}

impl WholeFamily for GroupMemberKey {}

impl fmt::Display for GroupMemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", Self::CF, self.project, self.group)
    }
}

/// `charts`: one version of a chart in a project's chart repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChartKey(pub ChartId);

impl ChartKey {
    /// Every chart version of a project, by name then version bytes.
    pub fn of_project(project: &RepoName) -> Scan<ChartKey> {
        Scan::prefix(prefix_of(&[project.as_str().as_bytes()]))
    }

    /// Every version of chart `name` of `project`, in version byte order.
    pub fn of_chart(project: &RepoName, name: &str) -> Scan<ChartKey> {
        Scan::prefix(prefix_of(&[project.as_str().as_bytes(), name.as_bytes()]))
    }
}

impl IndexKey for ChartKey {
    const CF: Cf = Cf::Charts;
    type Value = ChartRecord;
    fn encode(&self) -> Vec<u8> {
        join(&[
            self.0.project().as_str().as_bytes(),
            self.0.name().as_bytes(),
            self.0.version().as_bytes(),
        ])
    }
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
        let [p, n, v] = split::<3>(Self::CF, bytes)?;
        Ok(ChartKey(part(
            Self::CF,
            bytes,
            "chart",
            ChartId::parse(p, n, v),
        )?))
    }
}

impl WholeFamily for ChartKey {}

impl fmt::Display for ChartKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", Self::CF, self.0.project(), self.0)
    }
}

/// A `meta` key that is one fixed string.
macro_rules! meta_key {
    ($(#[$doc:meta])* $name:ident, $text:literal, $value:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name;

        impl IndexKey for $name {
            const CF: Cf = Cf::Meta;
            type Value = $value;
            fn encode(&self) -> Vec<u8> {
                $text.as_bytes().to_vec()
            }
            fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
                if bytes == $text.as_bytes() {
                    Ok($name)
                } else {
                    Err(CorruptKey {
                        cf: Self::CF,
                        key: bytes.to_vec(),
                        reason: format!("not {:?}", $text),
                    })
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", Self::CF, $text)
            }
        }
    };
}

meta_key!(
    /// `meta/format`: the index format version.
    FormatKey,
    "format",
    FormatVersion
);
meta_key!(
    /// `meta/gc_candidates_built`: present once `gc_candidates` has been
    /// built from `blobs` (indexes written before the family existed get
    /// it built at open).
    GcCandidatesBuiltKey,
    "gc_candidates_built",
    Marker
);
meta_key!(
    /// `meta/tiers_located`: present once every blob record's tier was
    /// located in the store (indexes written before tiers were kept get it
    /// done once by the tier worker).
    TiersLocatedKey,
    "tiers_located",
    Marker
);
meta_key!(
    /// `meta/usage_counted`: present once `project_blobs` and
    /// `project_usage` were counted from `links` (indexes written before
    /// the families existed get them counted at open).
    UsageCountedKey,
    "usage_counted",
    Marker
);
meta_key!(
    /// `meta/token_key`: where the token signing key was kept before it
    /// moved to its own file; read only to migrate it (see
    /// `Engine::token_signing_key`).
    TokenSeedKey,
    "token_key",
    TokenSeed
);

/// A kind of account object with its own id sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdKind {
    User,
    Project,
    Member,
    Robot,
    Registry,
    Policy,
    ImmutableRule,
    Audit,
    WebhookPolicy,
    WebhookEvent,
    WebhookJob,
    RetentionPolicy,
    RetentionRun,
    GcRun,
    UserGroup,
}

impl IdKind {
    /// Every kind.
    pub const ALL: [IdKind; 15] = [
        IdKind::User,
        IdKind::Project,
        IdKind::Member,
        IdKind::Robot,
        IdKind::Registry,
        IdKind::Policy,
        IdKind::ImmutableRule,
        IdKind::Audit,
        IdKind::WebhookPolicy,
        IdKind::WebhookEvent,
        IdKind::WebhookJob,
        IdKind::RetentionPolicy,
        IdKind::RetentionRun,
        IdKind::GcRun,
        IdKind::UserGroup,
    ];

    fn name(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Project => "project",
            IdKind::Member => "member",
            IdKind::Robot => "robot",
            IdKind::Registry => "registry",
            IdKind::Policy => "policy",
            IdKind::ImmutableRule => "immutable_rule",
            IdKind::Audit => "audit",
            IdKind::WebhookPolicy => "webhook_policy",
            IdKind::WebhookEvent => "webhook_event",
            IdKind::WebhookJob => "webhook_job",
            IdKind::RetentionPolicy => "retention_policy",
            IdKind::RetentionRun => "retention_run",
            IdKind::GcRun => "gc_run",
            IdKind::UserGroup => "user_group",
        }
    }
}

/// `meta/seq 0x00 kind`: the id sequence of one kind of account object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqKey(pub IdKind);

impl IndexKey for SeqKey {
    const CF: Cf = Cf::Meta;
    type Value = Seq;
    fn encode(&self) -> Vec<u8> {
        join(&[b"seq", self.0.name().as_bytes()])
    }
    fn decode(bytes: &[u8]) -> Result<Self, CorruptKey> {
        let [seq, kind] = split::<2>(Self::CF, bytes)?;
        match IdKind::ALL.into_iter().find(|k| k.name() == kind) {
            Some(k) if seq == "seq" => Ok(SeqKey(k)),
            _ => Err(CorruptKey {
                cf: Self::CF,
                key: bytes.to_vec(),
                reason: "not seq 0x00 user|project|member|robot".into(),
            }),
        }
    }
}

impl fmt::Display for SeqKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/seq/{}", Self::CF, self.0.name())
    }
}

/// Every key the `meta` family holds: the closed list of its singletons
/// and sequences. Anything else found there is a [`CorruptKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetaKey {
    /// `format`.
    Format,
    /// `gc_candidates_built`.
    GcCandidatesBuilt,
    /// `tiers_located`.
    TiersLocated,
    /// `usage_counted`.
    UsageCounted,
    /// `token_key` (legacy, purged at first use).
    TokenSeed,
    /// `seq 0x00 kind`.
    Seq(IdKind),
}

impl MetaKey {
    /// Every `meta` key, in no particular order.
    pub const ALL: [MetaKey; 9] = [
        MetaKey::Format,
        MetaKey::GcCandidatesBuilt,
        MetaKey::TiersLocated,
        MetaKey::UsageCounted,
        MetaKey::TokenSeed,
        MetaKey::Seq(IdKind::User),
        MetaKey::Seq(IdKind::Project),
        MetaKey::Seq(IdKind::Member),
        MetaKey::Seq(IdKind::Robot),
    ];

    /// The key's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            MetaKey::Format => FormatKey.encode(),
            MetaKey::GcCandidatesBuilt => GcCandidatesBuiltKey.encode(),
            MetaKey::TiersLocated => TiersLocatedKey.encode(),
            MetaKey::UsageCounted => UsageCountedKey.encode(),
            MetaKey::TokenSeed => TokenSeedKey.encode(),
            MetaKey::Seq(kind) => SeqKey(*kind).encode(),
        }
    }

    /// Parses a key read from `meta`; a key that is none of the known
    /// ones is corrupt (an index written by a newer berth is refused at
    /// open by its format version, so there is no "unknown but fine").
    pub fn decode(bytes: &[u8]) -> Result<MetaKey, CorruptKey> {
        if let Some(k) = MetaKey::ALL
            .into_iter()
            .find(|k| !matches!(k, MetaKey::Seq(_)) && k.encode() == bytes)
        {
            return Ok(k);
        }
        if bytes.starts_with(b"seq\0") {
            return SeqKey::decode(bytes).map(|SeqKey(kind)| MetaKey::Seq(kind));
        }
        Err(CorruptKey {
            cf: Cf::Meta,
            key: bytes.to_vec(),
            reason:
                "unknown meta key (not format, gc_candidates_built, tiers_located, usage_counted, token_key or seq 0x00 kind)"
                    .into(),
        })
    }

    /// Checks that `bytes` decode as the record this key holds.
    fn check_value(&self, bytes: &[u8]) -> Result<(), String> {
        match self {
            MetaKey::Format => check::<FormatKey>(bytes),
            MetaKey::GcCandidatesBuilt => check::<GcCandidatesBuiltKey>(bytes),
            MetaKey::TiersLocated => check::<TiersLocatedKey>(bytes),
            MetaKey::UsageCounted => check::<UsageCountedKey>(bytes),
            MetaKey::TokenSeed => check::<TokenSeedKey>(bytes),
            MetaKey::Seq(_) => check::<SeqKey>(bytes),
        }
    }
}

impl fmt::Display for MetaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaKey::Format => FormatKey.fmt(f),
            MetaKey::GcCandidatesBuilt => GcCandidatesBuiltKey.fmt(f),
            MetaKey::TiersLocated => TiersLocatedKey.fmt(f),
            MetaKey::UsageCounted => UsageCountedKey.fmt(f),
            MetaKey::TokenSeed => TokenSeedKey.fmt(f),
            MetaKey::Seq(kind) => SeqKey(*kind).fmt(f),
        }
    }
}

/// Whether `bytes` decode as the value of key type `K`.
fn check<K: IndexKey>(bytes: &[u8]) -> Result<(), String> {
    K::Value::decode(bytes).map(drop)
}

/// Any key of the index: the closed keyspace. Every entry of every column
/// family decodes as exactly one variant ([`Key::decode`]) or is a
/// [`CorruptKey`]; there is no other kind of key. Used where a whole family
/// is classified without knowing its key type in advance (fsck, repair);
/// everything else uses the typed key of its family directly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Meta(MetaKey),
    Blob(BlobKey),
    Link(LinkKey),
    BlobRepo(BlobRepoKey),
    Manifest(ManifestKey),
    Body(BodyKey),
    RepoManifest(RepoManifestKey),
    Tag(TagKey),
    Referrer(ReferrerKey),
    Upload(UploadKey),
    Repo(RepoKey),
    User(UserKey),
    Project(ProjectKey),
    Member(MemberKey),
    Robot(RobotKey),
    GcCandidate(GcCandidateKey),
    Chart(ChartKey),
    ChartRepo(ChartRepoKey),
    Pin(PinKey),
    Registry(RegistryKey),
    Policy(PolicyKey),
    Pull(PullKey),
    ImmutableRules(ImmutableRulesKey),
    ProjectBlob(ProjectBlobKey),
    Usage(UsageKey),
    Audit(AuditKey),
    WebhookPolicy(WebhookPolicyKey),
    WebhookEvent(WebhookEventKey),
    WebhookJob(WebhookJobKey),
    GroupMember(GroupMemberKey),
    RetentionPolicy(RetentionPolicyKey),
    RetentionRun(RetentionRunKey),
    GcRun(GcRunKey),
    UserGroup(UserGroupKey),
    Session(SessionKey),
}

/// Applies `$body` to the typed key inside every non-`meta` variant, with
/// `$k` bound to it and `$K` to its type; `$meta` handles `meta`.
macro_rules! each_key {
    ($key:expr, $k:ident: $K:ident => $body:expr, $m:ident => $meta:expr) => {
        match $key {
            Key::Meta($m) => $meta,
            Key::Blob($k) => {
                type $K = BlobKey;
                $body
            }
            Key::Link($k) => {
                type $K = LinkKey;
                $body
            }
            Key::BlobRepo($k) => {
                type $K = BlobRepoKey;
                $body
            }
            Key::Manifest($k) => {
                type $K = ManifestKey;
                $body
            }
            Key::Body($k) => {
                type $K = BodyKey;
                $body
            }
            Key::RepoManifest($k) => {
                type $K = RepoManifestKey;
                $body
            }
            Key::Tag($k) => {
                type $K = TagKey;
                $body
            }
            Key::Referrer($k) => {
                type $K = ReferrerKey;
                $body
            }
            Key::Upload($k) => {
                type $K = UploadKey;
                $body
            }
            Key::Repo($k) => {
                type $K = RepoKey;
                $body
            }
            Key::User($k) => {
                type $K = UserKey;
                $body
            }
            Key::Project($k) => {
                type $K = ProjectKey;
                $body
            }
            Key::Member($k) => {
                type $K = MemberKey;
                $body
            }
            Key::Robot($k) => {
                type $K = RobotKey;
                $body
            }
            Key::GcCandidate($k) => {
                type $K = GcCandidateKey;
                $body
            }
            Key::Chart($k) => {
                type $K = ChartKey;
                $body
            }
            Key::ChartRepo($k) => {
                type $K = ChartRepoKey;
                $body
            }
            Key::Pin($k) => {
                type $K = PinKey;
                $body
            }
            Key::Registry($k) => {
                type $K = RegistryKey;
                $body
            }
            Key::Policy($k) => {
                type $K = PolicyKey;
                $body
            }
            Key::Pull($k) => {
                type $K = PullKey;
                $body
            }
            Key::ImmutableRules($k) => {
                type $K = ImmutableRulesKey;
                $body
            }
            Key::ProjectBlob($k) => {
                type $K = ProjectBlobKey;
                $body
            }
            Key::Usage($k) => {
                type $K = UsageKey;
                $body
            }
            Key::Audit($k) => {
                type $K = AuditKey;
                $body
            }
            Key::WebhookPolicy($k) => {
                type $K = WebhookPolicyKey;
                $body
            }
            Key::WebhookEvent($k) => {
                type $K = WebhookEventKey;
                $body
            }
            Key::WebhookJob($k) => {
                type $K = WebhookJobKey;
                $body
            }
            Key::GroupMember($k) => {
                type $K = GroupMemberKey;
                $body
            }
            Key::RetentionPolicy($k) => {
                type $K = RetentionPolicyKey;
                $body
            }
            Key::RetentionRun($k) => {
                type $K = RetentionRunKey;
                $body
            }
            Key::GcRun($k) => {
                type $K = GcRunKey;
                $body
            }
            Key::UserGroup($k) => {
                type $K = UserGroupKey;
                $body
            }
            Key::Session($k) => {
                type $K = SessionKey;
                $body
            }
        }
    };
}

impl Key {
    /// Parses key bytes read from family `cf` as that family's key type
    /// (for `meta`, as one of the [`MetaKey`]s). `decode(k.cf(),
    /// &k.encode()) == Ok(k)` for every key, and a key that decodes
    /// re-encodes to exactly its bytes.
    pub fn decode(cf: Cf, bytes: &[u8]) -> Result<Key, CorruptKey> {
        Ok(match cf {
            Cf::Meta => Key::Meta(MetaKey::decode(bytes)?),
            Cf::Blobs => Key::Blob(BlobKey::decode(bytes)?),
            Cf::Links => Key::Link(LinkKey::decode(bytes)?),
            Cf::BlobRepos => Key::BlobRepo(BlobRepoKey::decode(bytes)?),
            Cf::Manifests => Key::Manifest(ManifestKey::decode(bytes)?),
            Cf::Bodies => Key::Body(BodyKey::decode(bytes)?),
            Cf::RepoManifests => Key::RepoManifest(RepoManifestKey::decode(bytes)?),
            Cf::Tags => Key::Tag(TagKey::decode(bytes)?),
            Cf::Referrers => Key::Referrer(ReferrerKey::decode(bytes)?),
            Cf::Uploads => Key::Upload(UploadKey::decode(bytes)?),
            Cf::Repos => Key::Repo(RepoKey::decode(bytes)?),
            Cf::Users => Key::User(UserKey::decode(bytes)?),
            Cf::Projects => Key::Project(ProjectKey::decode(bytes)?),
            Cf::Members => Key::Member(MemberKey::decode(bytes)?),
            Cf::Robots => Key::Robot(RobotKey::decode(bytes)?),
            Cf::GcCandidates => Key::GcCandidate(GcCandidateKey::decode(bytes)?),
            Cf::Charts => Key::Chart(ChartKey::decode(bytes)?),
            Cf::ChartRepos => Key::ChartRepo(ChartRepoKey::decode(bytes)?),
            Cf::Pins => Key::Pin(PinKey::decode(bytes)?),
            Cf::Registries => Key::Registry(RegistryKey::decode(bytes)?),
            Cf::Policies => Key::Policy(PolicyKey::decode(bytes)?),
            Cf::Pulls => Key::Pull(PullKey::decode(bytes)?),
            Cf::ImmutableRules => Key::ImmutableRules(ImmutableRulesKey::decode(bytes)?),
            Cf::ProjectBlobs => Key::ProjectBlob(ProjectBlobKey::decode(bytes)?),
            Cf::ProjectUsage => Key::Usage(UsageKey::decode(bytes)?),
            Cf::Audit => Key::Audit(AuditKey::decode(bytes)?),
            Cf::WebhookPolicies => Key::WebhookPolicy(WebhookPolicyKey::decode(bytes)?),
            Cf::WebhookQueue => Key::WebhookEvent(WebhookEventKey::decode(bytes)?),
            Cf::WebhookJobs => Key::WebhookJob(WebhookJobKey::decode(bytes)?),
            Cf::GroupMembers => Key::GroupMember(GroupMemberKey::decode(bytes)?),
            Cf::RetentionPolicies => Key::RetentionPolicy(RetentionPolicyKey::decode(bytes)?),
            Cf::RetentionRuns => Key::RetentionRun(RetentionRunKey::decode(bytes)?),
            Cf::GcRuns => Key::GcRun(GcRunKey::decode(bytes)?),
            Cf::UserGroups => Key::UserGroup(UserGroupKey::decode(bytes)?),
            Cf::ConsoleSessions => Key::Session(SessionKey::decode(bytes)?),
        })
    }

    /// The key's column family.
    pub fn cf(&self) -> Cf {
        each_key!(self, _k: K => K::CF, _m => Cf::Meta)
    }

    /// The key's bytes.
    pub fn encode(&self) -> Vec<u8> {
        each_key!(self, k: K => K::encode(k), m => m.encode())
    }

    /// Checks that `bytes` decode as the record this key holds; the error
    /// says what is wrong.
    pub fn check_value(&self, bytes: &[u8]) -> Result<(), String> {
        each_key!(self, _k: K => check::<K>(bytes), m => m.check_value(bytes))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each_key!(self, k: K => <K as fmt::Display>::fmt(k, f), m => fmt::Display::fmt(m, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn enc<K: IndexKey>(k: K) -> (Cf, Vec<u8>) {
        (K::CF, k.encode())
    }

    /// Pins every key encoding and family: changing one is a format change.
    #[test]
    fn encodings() {
        let repo = RepoName::parse("proj/app").unwrap();
        let project = RepoName::parse("proj").unwrap();
        let tag = Tag::parse("v1").unwrap();
        let a = d('a');
        let b = d('b');
        let hex_a = "a".repeat(64);
        let hex_b = "b".repeat(64);
        let chart = ChartId::parse("proj", "nginx", "1.2.3+b.4").unwrap();
        type Case = ((Cf, Vec<u8>), &'static str, String);
        let cases: Vec<Case> = vec![
            (enc(FormatKey), "meta", "format".into()),
            (enc(BlobKey(a.clone())), "blobs", format!("sha256:{hex_a}")),
            (
                enc(LinkKey(repo.clone(), a.clone())),
                "links",
                format!("proj/app\0sha256:{hex_a}"),
            ),
            (
                enc(BlobRepoKey(a.clone(), repo.clone())),
                "blob_repos",
                format!("sha256:{hex_a}\0proj/app"),
            ),
            (
                enc(ManifestKey(a.clone())),
                "manifests",
                format!("sha256:{hex_a}"),
            ),
            (enc(BodyKey(a.clone())), "bodies", format!("sha256:{hex_a}")),
            (
                enc(RepoManifestKey(repo.clone(), a.clone())),
                "repo_manifests",
                format!("proj/app\0sha256:{hex_a}"),
            ),
            (
                enc(TagKey(repo.clone(), tag.clone())),
                "tags",
                "proj/app\0v1".into(),
            ),
            (
                enc(ReferrerKey {
                    repo: repo.clone(),
                    subject: a.clone(),
                    referrer: b.clone(),
                }),
                "referrers",
                format!("proj/app\0sha256:{hex_a}\0sha256:{hex_b}"),
            ),
            (
                enc(PinKey(a.clone(), "0123456789abcdef0123456789abcdef".into())),
                "pins",
                format!("sha256:{hex_a}\0{}", "0123456789abcdef0123456789abcdef"),
            ),
            (
                enc(UploadKey("0123456789abcdef0123456789abcdef".into())),
                "uploads",
                "0123456789abcdef0123456789abcdef".into(),
            ),
            (enc(RepoKey(repo.clone())), "repos", "proj/app".into()),
            (enc(UserKey("alice".into())), "users", "alice".into()),
            (enc(ProjectKey("proj".into())), "projects", "proj".into()),
            (
                enc(MemberKey {
                    project: "proj".into(),
                    user: "alice".into(),
                }),
                "members",
                "proj\0alice".into(),
            ),
            (
                enc(GroupMemberKey {
                    project: "proj".into(),
                    group: "cn=devs,ou=groups,dc=example,dc=org".into(),
                }),
                "group_members",
                "proj\0cn=devs,ou=groups,dc=example,dc=org".into(),
            ),
            (
                enc(RobotKey("robot$proj+ci".into())),
                "robots",
                "robot$proj+ci".into(),
            ),
            (enc(RegistryKey(12)), "registries", "12".into()),
            (enc(PolicyKey(3)), "replication_policies", "3".into()),
            (enc(TokenSeedKey), "meta", "token_key".into()),
            (enc(SeqKey(IdKind::User)), "meta", "seq\0user".into()),
            (enc(SeqKey(IdKind::Project)), "meta", "seq\0project".into()),
            (enc(SeqKey(IdKind::Member)), "meta", "seq\0member".into()),
            (enc(SeqKey(IdKind::Robot)), "meta", "seq\0robot".into()),
            (
                enc(SeqKey(IdKind::Registry)),
                "meta",
                "seq\0registry".into(),
            ),
            (enc(SeqKey(IdKind::Policy)), "meta", "seq\0policy".into()),
            (
                enc(GcCandidatesBuiltKey),
                "meta",
                "gc_candidates_built".into(),
            ),
            (enc(TiersLocatedKey), "meta", "tiers_located".into()),
            (enc(UsageCountedKey), "meta", "usage_counted".into()),
            (
                enc(GcCandidateKey(a.clone())),
                "gc_candidates",
                format!("sha256:{hex_a}"),
            ),
            (
                enc(ChartKey(chart)),
                "charts",
                "proj\0nginx\x001.2.3+b.4".into(),
            ),
            (
                enc(ChartRepoKey(project.clone())),
                "chart_repos",
                "proj".into(),
            ),
            (
                enc(ProjectBlobKey("proj".into(), a.clone())),
                "project_blobs",
                format!("proj\0sha256:{hex_a}"),
            ),
            (enc(UsageKey("proj".into())), "project_usage", "proj".into()),
            (enc(AuditKey(1)), "audit_log", "fffffffffffffffe".into()),
            (enc(WebhookPolicyKey(7)), "webhook_policies", "7".into()),
            (
                enc(WebhookEventKey(255)),
                "webhook_queue",
                "00000000000000ff".into(),
            ),
            (
                enc(WebhookJobKey(0)),
                "webhook_jobs",
                "ffffffffffffffff".into(),
            ),
            (enc(RetentionPolicyKey(4)), "retention_policies", "4".into()),
            (
                enc(RetentionRunKey(2)),
                "retention_runs",
                "fffffffffffffffd".into(),
            ),
            (enc(GcRunKey(3)), "gc_runs", "fffffffffffffffc".into()),
            (enc(UserGroupKey(42)), "user_groups", "42".into()),
            (
                enc(SessionKey("0f".repeat(32))),
                "console_sessions",
                "0f".repeat(32),
            ),
            (
                enc(SeqKey(IdKind::UserGroup)),
                "meta",
                "seq\0user_group".into(),
            ),
        ];
        for ((cf, got), family, want) in cases {
            assert_eq!(cf.name(), family, "{want:?}");
            assert_eq!(got, want.as_bytes(), "{want:?}");
        }
        // Every family is opened, once.
        let names: std::collections::HashSet<_> = Cf::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Cf::ALL.len());
    }

    /// Pins every prefix encoding.
    #[test]
    fn prefixes() {
        let repo = RepoName::parse("proj/app").unwrap();
        let project = RepoName::parse("proj").unwrap();
        let a = d('a');
        let hex_a = "a".repeat(64);
        let cases: Vec<(Vec<u8>, Vec<u8>, String, String)> = vec![
            {
                let s = TagKey::of_repo(&repo);
                (
                    s.prefix.clone(),
                    s.start,
                    "proj/app\0".into(),
                    "proj/app\0".into(),
                )
            },
            {
                let s = TagKey::of_repo_after(&repo, "v1");
                (
                    s.prefix.clone(),
                    s.start,
                    "proj/app\0".into(),
                    "proj/app\0v1\0".into(),
                )
            },
            {
                let s = BlobRepoKey::of_blob(&a);
                let p = format!("sha256:{hex_a}\0");
                (s.prefix.clone(), s.start, p.clone(), p)
            },
            {
                let s = ReferrerKey::of_subject_after(&repo, &a, &d('b'));
                (
                    s.prefix.clone(),
                    s.start,
                    format!("proj/app\0sha256:{hex_a}\0"),
                    format!("proj/app\0sha256:{hex_a}\0sha256:{}\0", "b".repeat(64)),
                )
            },
            {
                let s = MemberKey::of_project("proj");
                (s.prefix.clone(), s.start, "proj\0".into(), "proj\0".into())
            },
            {
                let s = ChartKey::of_project(&project);
                (s.prefix.clone(), s.start, "proj\0".into(), "proj\0".into())
            },
            {
                let s = ChartKey::of_chart(&project, "nginx");
                (
                    s.prefix.clone(),
                    s.start,
                    "proj\0nginx\0".into(),
                    "proj\0nginx\0".into(),
                )
            },
            {
                let s = RepoKey::after("a/b");
                (s.prefix.clone(), s.start, "".into(), "a/b\0".into())
            },
            {
                let s = RepoKey::after_project("a");
                (s.prefix.clone(), s.start, "".into(), "a0".into())
            },
        ];
        for (prefix, start, want_prefix, want_start) in cases {
            assert_eq!(prefix, want_prefix.as_bytes());
            assert_eq!(start, want_start.as_bytes());
            assert!(start.starts_with(&prefix));
        }
        assert_eq!(
            TagKey::of_repo(&repo).end_bytes(),
            Some(b"proj/app\x01".to_vec())
        );
        assert_eq!(RepoKey::all().end_bytes(), None);
        let s: Scan<RepoKey> = Scan::prefix(b"a\xff".to_vec());
        assert_eq!(s.end_bytes(), Some(b"b".to_vec()));
    }

    /// Decoding refuses what encoding cannot produce: keys of another
    /// family's layout, a wrong number of parts, bad separators, names,
    /// tags and digests, non-UTF-8. Every error names its family.
    #[test]
    fn corrupt_keys_are_errors() {
        let repo = RepoName::parse("p/r").unwrap();
        let a = d('a');
        let tag_bytes = TagKey(repo.clone(), Tag::parse("v1").unwrap()).encode();
        let link_bytes = LinkKey(repo.clone(), a.clone()).encode();
        let blob_repo_bytes = BlobRepoKey(a.clone(), repo.clone()).encode();
        let referrer_bytes = ReferrerKey {
            repo: repo.clone(),
            subject: a.clone(),
            referrer: d('b'),
        }
        .encode();
        let digest_bytes = BlobKey(a.clone()).encode();

        fn bad<K: IndexKey + fmt::Debug>(bytes: &[u8]) {
            match K::decode(bytes) {
                Ok(k) => panic!("{} decoded {bytes:?} as {k:?}", K::CF),
                Err(e) => {
                    assert_eq!(e.cf, K::CF);
                    assert_eq!(e.key, bytes);
                    assert!(e.to_string().contains(&hex::encode(bytes)), "{e}");
                }
            }
        }
        // Another family's layout.
        bad::<LinkKey>(&tag_bytes);
        bad::<TagKey>(&link_bytes);
        bad::<LinkKey>(&blob_repo_bytes);
        bad::<BlobRepoKey>(&link_bytes);
        bad::<TagKey>(&referrer_bytes);
        bad::<ReferrerKey>(&link_bytes);
        bad::<BlobKey>(&link_bytes);
        bad::<RepoKey>(&digest_bytes);
        bad::<UploadKey>(&digest_bytes);
        bad::<ChartKey>(&referrer_bytes);
        bad::<MemberKey>(&referrer_bytes);
        bad::<SeqKey>(b"format");
        bad::<FormatKey>(b"seq\0user");
        bad::<GcCandidatesBuiltKey>(b"token_key");
        // Separators: missing, doubled, trailing, leading.
        bad::<LinkKey>(b"p/rsha256:aa");
        bad::<TagKey>(b"p/r\0\0v1");
        bad::<TagKey>(b"p/r\0v1\0");
        bad::<TagKey>(b"\0p/r\0v1");
        bad::<BlobKey>(&[digest_bytes.as_slice(), b"\0"].concat());
        bad::<SeqKey>(b"seq\0user\0");
        // Bad parts.
        bad::<TagKey>(b"P/R\0v1");
        bad::<TagKey>(b"p/r\0v:1");
        bad::<TagKey>(b"p/r\0\xffv1");
        bad::<LinkKey>(b"p/r\0sha256:abc");
        bad::<BlobKey>(b"md5:aaaa");
        bad::<BlobKey>(b"");
        bad::<RepoKey>(b"a//b");
        bad::<UploadKey>(b"0123456789ABCDEF0123456789ABCDEF");
        bad::<UploadKey>(b"short");
        bad::<UserKey>(b"");
        bad::<UserKey>(b"\xff");
        bad::<MemberKey>(b"proj\0");
        bad::<GroupMemberKey>(b"proj\0");
        bad::<GroupMemberKey>(b"proj");
        bad::<ChartKey>(b"proj\0nginx\0");
        bad::<ChartKey>(b"proj/x\0nginx\x001.0.0");
        bad::<ChartKey>(b"proj\0nginx\0-1");
        bad::<SeqKey>(b"seq\0widget");
        bad::<SeqKey>(b"sequence\0user");
    }

    /// `meta` holds exactly its known keys; anything else there is a
    /// corrupt key, not an ignorable stranger.
    #[test]
    fn unknown_meta_keys_are_errors() {
        for k in MetaKey::ALL {
            assert_eq!(Key::decode(Cf::Meta, &k.encode()), Ok(Key::Meta(k)));
        }
        assert_eq!(
            Key::decode(Cf::Meta, b"seq\0user"),
            Ok(Key::Meta(MetaKey::Seq(IdKind::User)))
        );
        for bad in [
            &b""[..],
            b"Format",
            b"format\0",
            b"version",
            b"token_key2",
            b"seq",
            b"seq\0",
            b"seq\0widget",
            b"seq\0user\0x",
            b"gc_candidates",
            b"\xff",
        ] {
            let e = Key::decode(Cf::Meta, bad).expect_err("unknown meta key decoded");
            assert_eq!((e.cf, e.key.as_slice()), (Cf::Meta, bad));
        }
        // A key of one family is not a key of another.
        let tag = TagKey(RepoName::parse("p/r").unwrap(), Tag::parse("v1").unwrap());
        assert!(Key::decode(Cf::Links, &tag.encode()).is_err());
        assert!(Key::decode(Cf::Meta, &tag.encode()).is_err());
        // Values are checked against the key's record.
        let k = Key::Meta(MetaKey::Format);
        assert!(k.check_value(&1u32.to_be_bytes()).is_ok());
        assert!(k.check_value(b"1").is_err());
        assert!(Key::GcCandidate(GcCandidateKey(d('a')))
            .check_value(b"x")
            .is_err());
    }

    fn arb_repo() -> impl Strategy<Value = RepoName> {
        // A small alphabet, so repositories share prefixes ("a", "a/b", "ab").
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "ab", "a-b", "b.c"]),
            1..4,
        )
        .prop_map(|parts| RepoName::parse(&parts.join("/")).unwrap())
    }

    fn arb_digest() -> impl Strategy<Value = Digest> {
        (
            prop::sample::select(crate::digest::Algorithm::ALL.to_vec()),
            prop::sample::select(vec!['a', 'b', '0']),
        )
            .prop_map(|(alg, c)| {
                let hex = c.to_string().repeat(alg.hex_len());
                Digest::parse(&format!("{}:{hex}", alg.name())).unwrap()
            })
    }

    fn arb_tag() -> impl Strategy<Value = Tag> {
        "[A-Za-z0-9_][A-Za-z0-9._-]{0,5}".prop_map(|t| Tag::parse(&t).unwrap())
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z0-9._@-]{1,6}"
    }

    fn arb_chart() -> impl Strategy<Value = ChartId> {
        (
            prop::sample::select(vec!["p", "pq", "q"]),
            prop::sample::select(vec!["c", "cd", "c-d"]),
            "[0-9a-z][0-9a-z.+-]{0,5}",
        )
            .prop_map(|(p, n, v)| ChartId::parse(p, n, &v).unwrap())
    }

    fn roundtrip<K: IndexKey + fmt::Debug + PartialEq>(k: K) -> Result<(), TestCaseError> {
        let bytes = k.encode();
        let decoded = K::decode(&bytes);
        prop_assert_eq!(decoded.as_ref(), Ok(&k));
        Ok(())
    }

    proptest! {
        /// A tag's link prefix followed by its stored value is exactly the
        /// key of the manifest's entry in the tag's repository.
        #[test]
        fn a_tags_link_prefix_completes_to_its_manifests_entry(
            repo in arb_repo(),
            tag in arb_tag(),
            d in arb_digest(),
        ) {
            let value = crate::records::Record::encode(&crate::records::TagRecord(d.clone()));
            let key = [TagKey(repo.clone(), tag).link_prefix().as_slice(), &value].concat();
            prop_assert_eq!(key, RepoManifestKey(repo, d).encode());
        }

        #[test]
        fn every_key_round_trips(
            repo in arb_repo(),
            d1 in arb_digest(),
            d2 in arb_digest(),
            tag in arb_tag(),
            n1 in arb_name(),
            n2 in arb_name(),
            chart in arb_chart(),
            id in "[0-9a-f]{32}",
            n in any::<u64>(),
        ) {
            roundtrip(FormatKey)?;
            roundtrip(GcCandidatesBuiltKey)?;
            roundtrip(TiersLocatedKey)?;
            roundtrip(UsageCountedKey)?;
            roundtrip(TokenSeedKey)?;
            for k in IdKind::ALL {
                roundtrip(SeqKey(k))?;
            }
            roundtrip(BlobKey(d1.clone()))?;
            roundtrip(ManifestKey(d1.clone()))?;
            roundtrip(BodyKey(d1.clone()))?;
            roundtrip(GcCandidateKey(d1.clone()))?;
            roundtrip(LinkKey(repo.clone(), d1.clone()))?;
            roundtrip(RepoManifestKey(repo.clone(), d1.clone()))?;
            roundtrip(BlobRepoKey(d1.clone(), repo.clone()))?;
            roundtrip(TagKey(repo.clone(), tag.clone()))?;
            roundtrip(ReferrerKey { repo: repo.clone(), subject: d1.clone(), referrer: d2.clone() })?;
            roundtrip(UploadKey(id.clone()))?;
            roundtrip(RepoKey(repo.clone()))?;
            roundtrip(ChartRepoKey(repo.clone()))?;
            roundtrip(UserKey(n1.clone()))?;
            roundtrip(ProjectKey(n1.clone()))?;
            roundtrip(RobotKey(format!("robot${n1}+{n2}")))?;
            roundtrip(MemberKey { project: n1.clone(), user: n2.clone() })?;
            roundtrip(GroupMemberKey { project: n1.clone(), group: format!("cn={n2},dc=x") })?;
            roundtrip(ChartKey(chart.clone()))?;
            roundtrip(PinKey(d2.clone(), id.clone()))?;
            roundtrip(RegistryKey(n))?;
            roundtrip(PolicyKey(n))?;
            roundtrip(RetentionPolicyKey(n))?;
            roundtrip(RetentionRunKey(n))?;
            roundtrip(GcRunKey(n))?;
            roundtrip(UserGroupKey(n))?;
            roundtrip(SessionKey(format!("{n:064x}")))?;

            // The closed keyspace: every variant of `Key`, every meta key.
            let mut keys: Vec<Key> = MetaKey::ALL.into_iter().map(Key::Meta).collect();
            keys.extend([
                Key::Blob(BlobKey(d1.clone())),
                Key::Link(LinkKey(repo.clone(), d1.clone())),
                Key::BlobRepo(BlobRepoKey(d1.clone(), repo.clone())),
                Key::Manifest(ManifestKey(d1.clone())),
                Key::Body(BodyKey(d1.clone())),
                Key::RepoManifest(RepoManifestKey(repo.clone(), d2.clone())),
                Key::Tag(TagKey(repo.clone(), tag.clone())),
                Key::Referrer(ReferrerKey { repo: repo.clone(), subject: d2.clone(), referrer: d1.clone() }),
                Key::Upload(UploadKey(id.clone())),
                Key::Repo(RepoKey(repo.clone())),
                Key::User(UserKey(n1.clone())),
                Key::Project(ProjectKey(n2.clone())),
                Key::Member(MemberKey { project: n2.clone(), user: n1.clone() }),
                Key::Robot(RobotKey(format!("robot${n2}+{n1}"))),
                Key::GcCandidate(GcCandidateKey(d2.clone())),
                Key::Chart(ChartKey(chart)),
                Key::ChartRepo(ChartRepoKey(repo.clone())),
                Key::Pin(PinKey(d1.clone(), id.clone())),
                Key::Registry(RegistryKey(n)),
                Key::Policy(PolicyKey(n)),
                Key::Pull(PullKey(repo.clone(), d1.clone())),
                Key::ImmutableRules(ImmutableRulesKey(n2.clone())),
                Key::ProjectBlob(ProjectBlobKey(n2.clone(), d1.clone())),
                Key::Usage(UsageKey(n2.clone())),
                Key::Audit(AuditKey(n)),
                Key::WebhookPolicy(WebhookPolicyKey(n)),
                Key::WebhookEvent(WebhookEventKey(n)),
                Key::WebhookJob(WebhookJobKey(n)),
                Key::GroupMember(GroupMemberKey { project: n1.clone(), group: format!("cn={n2}") }),
                Key::RetentionPolicy(RetentionPolicyKey(n)),
                Key::RetentionRun(RetentionRunKey(n)),
                Key::GcRun(GcRunKey(n)),
                Key::UserGroup(UserGroupKey(n)),
                Key::Session(SessionKey(format!("{n:064x}"))),
            ]);
            let families: std::collections::HashSet<Cf> = keys.iter().map(Key::cf).collect();
            prop_assert_eq!(families.len(), Cf::ALL.len());
            for k in keys {
                let bytes = k.encode();
                prop_assert_eq!(Key::decode(k.cf(), &bytes), Ok(k.clone()));
                let shown = k.to_string();
                prop_assert!(shown.starts_with(&format!("{}/", k.cf())), "{}", shown);
            }
        }

        /// Whatever bytes a family holds, they decode as a key that
        /// re-encodes to exactly them, or they are a corrupt key of that
        /// family: no two encodings of one key, no lossy decode.
        #[test]
        fn any_bytes_decode_canonically_or_not_at_all(
            cf in prop::sample::select(Cf::ALL.to_vec()),
            bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..80),
                "[a-z0-9:/._\x00-]{0,80}".prop_map(String::into_bytes),
                prop::sample::select(vec![
                    "format", "gc_candidates_built", "tiers_located", "token_key", "seq\0user",
                    "seq\0robot", "seq\0", "seq", "formats", "token_key\0",
                ]).prop_map(|s| s.as_bytes().to_vec()),
            ],
        ) {
            match Key::decode(cf, &bytes) {
                Ok(k) => {
                    prop_assert_eq!(k.cf(), cf);
                    prop_assert_eq!(k.encode(), bytes);
                }
                Err(e) => {
                    prop_assert_eq!(e.cf, cf);
                    prop_assert_eq!(e.key, bytes);
                }
            }
        }

        /// A prefix scan covers exactly its own keys: a key starts with the
        /// scan's prefix if and only if its parts are the scan's.
        #[test]
        fn prefixes_hold_exactly_their_keys(
            r1 in arb_repo(),
            r2 in arb_repo(),
            d1 in arb_digest(),
            d2 in arb_digest(),
            s1 in arb_digest(),
            s2 in arb_digest(),
            tag in arb_tag(),
            p1 in arb_name(),
            p2 in arb_name(),
            user in arb_name(),
            c1 in arb_chart(),
            c2 in arb_chart(),
        ) {
            let has = |scan_prefix: &[u8], key: Vec<u8>| key.starts_with(scan_prefix);

            let tags = TagKey::of_repo(&r1);
            prop_assert_eq!(has(tags.prefix_bytes(), TagKey(r2.clone(), tag.clone()).encode()), r1 == r2);

            let reverse = BlobRepoKey::of_blob(&d1);
            prop_assert_eq!(has(reverse.prefix_bytes(), BlobRepoKey(d2.clone(), r1.clone()).encode()), d1 == d2);

            let refs = ReferrerKey::of_subject(&r1, &s1);
            let key = ReferrerKey { repo: r2.clone(), subject: s2.clone(), referrer: d1.clone() };
            prop_assert_eq!(has(refs.prefix_bytes(), key.encode()), r1 == r2 && s1 == s2);

            let members = MemberKey::of_project(&p1);
            let key = MemberKey { project: p2.clone(), user };
            prop_assert_eq!(has(members.prefix_bytes(), key.encode()), p1 == p2);

            let charts = ChartKey::of_project(c1.project());
            prop_assert_eq!(
                has(charts.prefix_bytes(), ChartKey(c2.clone()).encode()),
                c1.project() == c2.project()
            );
            let versions = ChartKey::of_chart(c1.project(), c1.name());
            prop_assert_eq!(
                has(versions.prefix_bytes(), ChartKey(c2.clone()).encode()),
                c1.project() == c2.project() && c1.name() == c2.name()
            );

            // "after" starts are inside their scan and after the named key.
            let after = TagKey::of_repo_after(&r1, tag.as_str());
            prop_assert!(after.start_bytes().starts_with(after.prefix_bytes()));
            prop_assert!(after.start_bytes() > TagKey(r1.clone(), tag.clone()).encode().as_slice());
            let after = ReferrerKey::of_subject_after(&r1, &s1, &d1);
            let key = ReferrerKey { repo: r1.clone(), subject: s1.clone(), referrer: d1.clone() };
            prop_assert!(after.start_bytes() > key.encode().as_slice());
            prop_assert!(after.start_bytes().starts_with(after.prefix_bytes()));
            // The bounds [prefix, end) hold exactly the scan's keys.
            let end = tags.end_bytes().expect("a repository prefix has an end");
            let key = TagKey(r2.clone(), tag).encode();
            let inside = tags.prefix_bytes() <= key.as_slice() && key.as_slice() < end.as_slice();
            prop_assert_eq!(inside, r1 == r2);
        }
    }
}
