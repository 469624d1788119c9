//! Index values: one record type per key type (see [`crate::keys`]), each
//! implementing [`Record`]. This module is the only code that builds or
//! parses value bytes.
//!
//! Most records are one version byte followed by their JSON form. JSON
//! keeps records readable in `berthctl` dumps and tolerant of added fields;
//! records are small, and RocksDB compresses blocks with lz4. The rest keep
//! the raw layouts they always had: a tag's target digest string
//! ([`TagRecord`]), a manifest's bytes ([`ManifestBody`]), no bytes at all
//! ([`Empty`]), big-endian integers in `meta` ([`FormatVersion`], [`Seq`]),
//! the marker `1` ([`Marker`]) and the legacy token seed ([`TokenSeed`]).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest};
use crate::error::StorageError;

/// Version byte in front of every JSON record written by this code.
const RECORD_VERSION: u8 = 1;

/// An index value. Every key type in [`crate::keys`] names the one record
/// type stored under it, and the index reads and writes values only through
/// this trait: no value bytes are built or parsed elsewhere.
pub trait Record: Sized {
    /// The value's bytes.
    fn encode(&self) -> Vec<u8>;
    /// Parses value bytes; the error says what is wrong (the index names
    /// the key in [`StorageError::Corrupt`]).
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// Encodes a JSON record: the version byte, then the JSON.
fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Serializing these plain structs to a Vec cannot fail.
    serde_json::to_writer(&mut out, value).expect("record serialization is infallible");
    out
}

/// Decodes a JSON record.
fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => serde_json::from_slice(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown record version {v}")),
        None => Err("empty record".into()),
    }
}

/// The records stored as a version byte and JSON.
macro_rules! json_records {
    ($($t:ty),* $(,)?) => {
        $(impl Record for $t {
            fn encode(&self) -> Vec<u8> {
                encode_json(self)
            }
            fn decode(bytes: &[u8]) -> Result<Self, String> {
                decode_json(bytes)
            }
        })*
    };
}

json_records!(
    BlobRecord,
    LinkRecord,
    ManifestRecord,
    RepoManifestRecord,
    UploadRecord,
    RepoRecord,
    UserRecord,
    ProjectRecord,
    MemberRecord,
    RobotRecord,
    ChartRecord,
    ChartRepoRecord,
    RegistryRecord,
    PolicyRecord,
    PullRecord,
    ImmutableRulesRecord,
    ProjectBlobRecord,
    UsageRecord,
    AuditRecord,
    WebhookPolicyRecord,
    WebhookEventRecord,
    WebhookJobRecord,
    RetentionPolicyRecord,
    RetentionRunRecord,
    GcRunRecord,
    UserGroupRecord,
    SessionRecord,
);

/// An empty value: the key alone is the fact (`blob_repos`, `referrers`,
/// `gc_candidates`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Empty;

impl Record for Empty {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            Ok(Empty)
        } else {
            Err(format!("{} bytes where none belong", bytes.len()))
        }
    }
}

/// `bodies`: a manifest's bytes exactly as pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestBody(pub Vec<u8>);

impl Record for ManifestBody {
    fn encode(&self) -> Vec<u8> {
        self.0.clone()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(ManifestBody(bytes.to_vec()))
    }
}

/// `tags`: the manifest a tag points at, stored as the digest string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRecord(pub Digest);

impl Record for TagRecord {
    fn encode(&self) -> Vec<u8> {
        self.0.as_str().as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let s = std::str::from_utf8(bytes).map_err(|_| "tag target is not UTF-8".to_owned())?;
        Digest::parse(s)
            .map(TagRecord)
            .map_err(|e| format!("tag target: {e}"))
    }
}

/// `meta/format`: the index format version, u32 big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatVersion(pub u32);

impl Record for FormatVersion {
    fn encode(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let b: [u8; 4] = bytes
            .try_into()
            .map_err(|_| format!("{} bytes, not a u32", bytes.len()))?;
        Ok(FormatVersion(u32::from_be_bytes(b)))
    }
}

/// `meta/seq…`: the last id handed out, u64 big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq(pub u64);

impl Record for Seq {
    fn encode(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let b: [u8; 8] = bytes
            .try_into()
            .map_err(|_| format!("{} bytes, not a u64", bytes.len()))?;
        Ok(Seq(u64::from_be_bytes(b)))
    }
}

/// A present-or-absent flag in `meta`, stored as `"1"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker;

impl Record for Marker {
    fn encode(&self) -> Vec<u8> {
        b"1".to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes == b"1" {
            Ok(Marker)
        } else {
            Err("marker is not \"1\"".into())
        }
    }
}

/// `meta/token_key` (legacy): a 32-byte Ed25519 seed.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSeed(pub [u8; 32]);

impl std::fmt::Debug for TokenSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSeed(..)")
    }
}

impl Record for TokenSeed {
    fn encode(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        bytes
            .try_into()
            .map(TokenSeed)
            .map_err(|_| format!("{} bytes, not 32", bytes.len()))
    }
}

// Algorithms are recorded by name ("sha256", "sha512", "blake3"): the
// serde impls of `Algorithm` are in `berth_formats::digest`.

/// Where a blob's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Only in the local store.
    Local,
    /// Only in the remote (S3) store.
    Remote,
    /// In both.
    Both,
}

/// Lifecycle state of a blob, for online GC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobState {
    /// Readable and kept.
    Active,
    /// Marked by GC as a deletion candidate; any touch resets it to Active.
    Marked,
    /// GC decided to delete it and holds the deletion: the record is
    /// invisible to readers, uploads of the same bytes wait for (or, after a
    /// crash, take over) the deletion, and the store file is being unlinked.
    /// The record is removed only after the file is gone. See `docs/gc.md`.
    Deleting,
}

/// `blobs`: one per stored digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    pub tier: Tier,
    /// Number of (repository, manifest) pairs whose manifest references this blob.
    pub refcount: u64,
    /// Number of repositories linking this blob (`links` entries).
    pub links: u64,
    pub state: BlobState,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Last upload, link, mount or reference; GC's grace window counts from here.
    pub touched_ms: u64,
}

/// What callers learn about a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// `links`: a blob is readable in a repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub created_ms: u64,
}

/// `manifests`: a manifest's content metadata, shared by every repository holding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Blobs referenced (config and layers), each counted in their refcount
    /// once per repository holding this manifest.
    pub blobs: Vec<Digest>,
    /// Manifests referenced (index children).
    pub manifests: Vec<Digest>,
    /// Number of repositories holding this manifest (`repo_manifests` entries).
    pub repos: u64,
    pub created_ms: u64,
}

/// `repo_manifests`: a manifest is present in a repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoManifestRecord {
    pub created_ms: u64,
    /// The manifest's media type (its `manifests` record's, which cannot
    /// change while any repository holds it): a read by tag or digest
    /// needs this entry and the body only, and the body is immutable.
    /// Empty in entries written before it was kept here.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// Tags in this repository pointing at the manifest.
    pub tags: u64,
    /// Index manifests in this repository referencing it.
    pub parents: u64,
}

/// `immutable_rules`: a project's tag immutability rules, by rule id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImmutableRulesRecord {
    pub rules: BTreeMap<u64, ImmutableRuleRecord>,
}

/// A tag immutability rule (Harbor's `ImmutableRule`): tags matching
/// `tags` in repositories matching `repos` can be neither moved nor
/// deleted while it is enabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImmutableRuleRecord {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Repository names within the project (without `project/`).
    pub repos: Selector,
    pub tags: Selector,
    pub created_ms: u64,
}

/// One of Harbor's selectors: a pattern (`berth_formats::pattern`), and
/// whether it selects what matches (`matches`, `repoMatches`) or what does
/// not (`excludes`, `repoExcludes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub pattern: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub excludes: bool,
}

impl Selector {
    /// Whether `name` is selected.
    pub fn selects(&self, name: &str) -> bool {
        crate::pattern::glob(&self.pattern, name) != self.excludes
    }
}

/// `pulls`: pulls of a manifest from a repository, added up in batches
/// (`Engine::add_pulls`), never per pull.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRecord {
    pub count: u64,
    /// The latest pull, milliseconds since the epoch.
    pub last_ms: u64,
}

/// `uploads`: a write-ahead upload session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub repo: String,
    /// Algorithm hashed while appending.
    pub algorithm: Algorithm,
    /// Bytes durably appended and acknowledged.
    pub offset: u64,
    /// Who began the session (the server's principal key), for the
    /// per-owner session bound; empty for engine-internal sessions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Set just before the staged blob is published as this digest (the
    /// completing `PUT`), so recovery can finish a completion a crash cut
    /// between publishing and its commit point (`Inner::recover_uploads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishing: Option<Digest>,
    /// Cluster mode: where the session's `offset` bytes are, in order (the
    /// store's shared staging, `BlobStore::put_segment`); empty on one node,
    /// whose bytes are staged under the upload id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
    /// Cluster mode: the running hash after `offset` bytes (hex of
    /// `Hasher::state`), so any node goes on hashing where the last one
    /// stopped; `None` when the algorithm has no such state (BLAKE3: the
    /// prefix is hashed again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_state: Option<String>,
}

/// One piece of a cluster-mode upload session's bytes: the store's segment
/// `name` holds bytes `[start, end)` of the upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

impl Segment {
    /// Its size in bytes (0 for a record whose end is before its start).
    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// `repos`: a repository exists (has held a link or manifest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRecord {
    pub created_ms: u64,
}

/// `users`: a person's account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: u64,
    /// PHC string of the argon2id hash of the password.
    pub password_hash: String,
    /// System administrator: every action on every project, account admin.
    pub admin: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub realname: String,
    pub created_ms: u64,
    /// A user from the LDAP directory (onboarded at their first login): the
    /// DN of their entry. Empty for local users. An LDAP user's password is
    /// the directory's: `password_hash` then holds a marker that verifies
    /// nothing (`ldap:` and random hex), whose stamp the user's tokens carry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ldap_dn: String,
    /// The LDAP groups (normalized DNs) of the user's last login; the
    /// project roles of `group_members` follow them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ldap_groups: Vec<String>,
    /// In the LDAP admin group at the last login: a system administrator
    /// besides `admin` (set again at every login).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ldap_admin: bool,
}

impl UserRecord {
    /// A system administrator: by the flag, or by the LDAP admin group.
    pub fn is_admin(&self) -> bool {
        self.admin || self.ldap_admin
    }

    /// Onboarded from the LDAP directory.
    pub fn is_ldap(&self) -> bool {
        !self.ldap_dn.is_empty()
    }
}

/// `projects`: a project (first component of repository names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub id: u64,
    /// Anyone, even anonymous, may pull.
    pub public: bool,
    /// The user who created it (empty when created offline).
    #[serde(default)]
    pub owner: String,
    pub created_ms: u64,
    /// A proxy cache project: the upstream registry (`registries`) it
    /// pulls through. Fixed at creation, as in Harbor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_id: Option<u64>,
    /// The most bytes of blobs its repositories may hold (each blob
    /// counted once: `UsageRecord`); none: unlimited. Harbor's project
    /// `storage_limit` / quota `hard.storage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_limit: Option<u64>,
}

/// `audit_log`: one operation as Harbor's audit log shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Who: a user or robot name, `anonymous`, or the name a failed
    /// sign-in gave.
    pub username: String,
    /// What: `project/repo:tag`, `project/repo@digest`, an API path.
    pub resource: String,
    /// `artifact`, `chart`, `project`, `user`, `robot`, `member`, …
    pub resource_type: String,
    /// `create`, `update`, `delete`, `pull`, `login_failure`.
    pub operation: String,
    /// When, in ms since the epoch.
    pub op_ms: u64,
}

/// `webhook_policies`: where a project's events go (Harbor's
/// `WebhookPolicy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPolicyRecord {
    pub project: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub targets: Vec<WebhookTarget>,
    /// Harbor's event types (`PUSH_ARTIFACT`, …).
    pub event_types: Vec<String>,
    pub enabled: bool,
    #[serde(default)]
    pub creator: String,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// One target of a [`WebhookPolicyRecord`] (Harbor's `WebhookTargetObject`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    /// `http`.
    pub kind: String,
    /// `http(s)://…`.
    pub address: String,
    /// Sent as `Authorization`, and the key of the body's HMAC signature;
    /// empty: neither.
    #[serde(default)]
    pub auth_header: String,
    #[serde(default)]
    pub skip_cert_verify: bool,
    /// `Default` (Harbor's JSON) or `CloudEvents`.
    #[serde(default)]
    pub payload_format: String,
}

/// `webhook_queue`: an event for one target, durable before the request
/// that caused it is answered; removed when delivered or given up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEventRecord {
    pub policy_id: u64,
    pub target: WebhookTarget,
    pub event_type: String,
    /// The body to send, exactly.
    pub payload: String,
    /// The `Content-Type` to send it with.
    pub content_type: String,
    pub attempts: u32,
    /// Not before (ms since the epoch): the retry backoff.
    pub next_ms: u64,
    pub created_ms: u64,
}

/// `webhook_jobs`: the outcome of one delivery attempt (Harbor's
/// `WebhookJob`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookJobRecord {
    pub policy_id: u64,
    pub event_type: String,
    /// `http`.
    pub notify_type: String,
    /// `Success`, `Retrying` or `Error`.
    pub status: String,
    /// The answer or failure, short.
    pub detail: String,
    pub created_ms: u64,
}

/// `retention_policies`: a project's tag retention policy (Harbor's
/// `RetentionPolicy`, algorithm `or`): an artifact of a repository that an
/// enabled rule covers is kept if some rule keeps it, and deleted
/// otherwise (`retention.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicyRecord {
    pub project: String,
    pub rules: Vec<RetentionRuleRecord>,
    /// Harbor's six-field cron (seconds first), UTC; empty: manual only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cron: String,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// One retention rule (Harbor's `RetentionRule`, action `retain`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRuleRecord {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Harbor's template: `latestPushedK`, `latestPulledN`,
    /// `nDaysSinceLastPush`, `nDaysSinceLastPull` or `always`.
    pub template: String,
    /// The template's parameter (a count or days); 0 for `always`.
    #[serde(default)]
    pub n: u64,
    /// Repository names within the project (without `project/`).
    pub repos: Selector,
    pub tags: Selector,
    /// Whether untagged artifacts are subject to the rule (Harbor's
    /// selector extras `{"untagged":true}`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untagged: bool,
}

/// `retention_runs`: one run of a retention policy (Harbor's
/// `RetentionExecution`, with its per-repository tasks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRunRecord {
    pub policy_id: u64,
    pub project: String,
    /// `MANUAL` or `SCHEDULE`.
    pub trigger: String,
    pub dry_run: bool,
    /// `Running`, `Succeed`, `Failed` or `Stopped`.
    pub status: String,
    pub start_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// The running node's latest sign of life: a `Running` run whose
    /// beat is older than `retention::LEASE_MS` ended with its node.
    #[serde(default)]
    pub beat_ms: u64,
    /// Why it failed or stopped.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// One per repository a rule covered, in name order.
    #[serde(default)]
    pub tasks: Vec<RetentionTaskRecord>,
}

/// What a run did to one repository (Harbor's `RetentionExecutionTask`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionTaskRecord {
    pub repository: String,
    /// `Succeed` or `Failed` (some deletion failed).
    pub status: String,
    /// Top-level artifacts considered.
    pub total: u64,
    /// Of them, kept (by a rule, or because deleting was refused).
    pub retained: u64,
    /// Every artifact's outcome, in push order, newest first.
    pub items: Vec<RetentionItemRecord>,
}

/// One artifact's outcome in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionItemRecord {
    pub digest: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `RETAIN`, `DEL` (deleted, or would be on a dry run) or `KEPT`
    /// (to be deleted, but the deletion was refused: `detail` says why).
    pub action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub push_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pull_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `gc_runs`: one GC run (Harbor's `GCHistory`), written when it is
/// queued, starts and ends (unsynced: history, not data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRunRecord {
    /// `Manual`, `Scheduled` or `Direct`.
    pub kind: String,
    pub grace_ms: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_untagged: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_ttl_ms: Option<u64>,
    /// `Pending`, `Running`, `Success` or `Error`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<crate::gc::GcReport>,
}

/// `project_blobs`: a blob linked in a project's repositories. Derived
/// from `links` (`quotas.rs`): present exactly while `links > 0`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectBlobRecord {
    /// `links` entries of the project's repositories naming the blob.
    pub links: u64,
}

/// `project_usage`: what a project's repositories hold, each blob counted
/// once however many of them link it. Derived from `project_blobs` and the
/// blobs' sizes in the batch that changes them (`quotas.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub bytes: u64,
    pub blobs: u64,
}

/// `registries`: an upstream registry endpoint (Harbor's `/registries`),
/// which proxy cache projects pull through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    /// Unique among registries.
    pub name: String,
    /// Harbor's registry type (`docker-registry`, `docker-hub`, `harbor`, …).
    pub kind: String,
    /// `http(s)://host[:port][/path]`, no trailing slash.
    pub url: String,
    /// How berth signs in upstream; none: anonymously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<RegistryCredential>,
    /// Skip TLS certificate verification.
    #[serde(default)]
    pub insecure: bool,
    /// PEM CA certificates to verify the upstream with instead of the
    /// system's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// `replication_policies`: Harbor's pull-based replication policy — what
/// to copy from a registry, where to, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Unique among policies.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The source (`registries`).
    pub registry_id: u64,
    /// Repositories copied (a pattern, `berth_wire::pattern`); empty: all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repos: String,
    /// Tags copied (a pattern); empty: all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tags: String,
    /// The destination namespace (a project); empty: the source's names.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dest_namespace: String,
    /// How many leading components of a source name `dest_namespace`
    /// replaces (Harbor's `dest_namespace_replace_count`; -1: the first).
    #[serde(default = "minus_one")]
    pub dest_namespace_replace_count: i8,
    /// Harbor's six-field cron (`sec min hour day month weekday`) of a
    /// scheduled policy; empty: manual only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cron: String,
    /// Tags that exist at the destination with another digest are moved.
    #[serde(default)]
    pub overwrite: bool,
    pub enabled: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

fn minus_one() -> i8 {
    -1
}

/// A [`RegistryRecord`]'s credential: Harbor's `basic` (user name and
/// password, sent as Basic or traded for a bearer token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredential {
    pub access_key: String,
    pub access_secret: String,
}

/// `members`: a user's role in a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: u64,
    /// Harbor's role id: 1 project admin, 2 developer, 3 guest, 4 maintainer.
    pub role: u8,
    pub created_ms: u64,
}

/// `user_groups`: a user group (Harbor's `UserGroup`), which projects
/// name as a member by its id (`usergroups.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserGroupRecord {
    pub name: String,
    /// Harbor's group type: 1, an LDAP group (the only kind berth keeps).
    pub group_type: u8,
    /// The group's DN, normalized (`directory::normalize_dn`): unique
    /// among user groups, and the spelling `group_members` keys use.
    pub ldap_dn: String,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// `console_sessions`: a signed-in console session (`sessions.rs`; the
/// cookie itself is never stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The account signed in.
    pub user: String,
    /// The stamp of the credential it signed in with
    /// (`Engine::credential_stamp`): the session ends when it changes.
    pub crd: String,
    /// The token the session's state-changing requests carry.
    pub csrf: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// `robots`: a robot account, scoped to one project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotRecord {
    pub id: u64,
    pub project: String,
    /// Granted actions: "pull", "push", "delete".
    pub actions: Vec<String>,
    /// Hex sha256 of the generated secret (256 random bits, so a fast hash
    /// is enough); the secret itself is shown once and never stored.
    pub secret_sha256: String,
    /// Milliseconds since the epoch after which the robot is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub created_ms: u64,
    /// Refused at sign-in, its tokens too, until enabled again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// A blob a chart record refers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartBlob {
    pub digest: Digest,
    pub size: u64,
}

/// `charts`: one version of a chart in a project's chart repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartRecord {
    /// The chart's Chart.yaml metadata as the JSON object Helm writes as an
    /// OCI chart config. Opaque to the engine.
    pub metadata: String,
    /// The chart archive (`.tgz`): the OCI chart layer.
    pub chart: ChartBlob,
    /// The provenance file (`.tgz.prov`), if one was uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prov: Option<ChartBlob>,
    /// The OCI manifest in `project/name` holding this version.
    pub manifest: Digest,
    pub created_ms: u64,
}

/// `chart_repos`: the state of one project's chart repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartRepoRecord {
    /// Bumped in the batch of every change to the project's `charts`
    /// entries; caches of `index.yaml` are keyed by it.
    pub generation: u64,
    /// When the last change was committed.
    pub updated_ms: u64,
    /// Number of `charts` entries of the project.
    pub versions: u64,
    /// The chart names changed by the latest generations, oldest first,
    /// each as `[generation, name]` (at most [`CHART_CHANGES_KEPT`]
    /// pairs): complete for every generation after `changes_from`, so a
    /// reader holding the index of generation `g >= changes_from` learns
    /// which charts to re-read. `None` (a record written before the field
    /// existed): not known. A hint for caches; fsck does not check it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<(u64, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_from: Option<u64>,
}

/// How many `[generation, name]` pairs a [`ChartRepoRecord`] keeps.
pub const CHART_CHANGES_KEPT: usize = 32;

impl ChartRepoRecord {
    /// The chart names changed after generation `since` up to
    /// `self.generation` (sorted, each once; none if `since` is this
    /// generation), or `None` if the record does not know them all (too
    /// old, or `since` is not a generation of this record's past).
    pub fn changed_since(&self, since: u64) -> Option<Vec<&str>> {
        if since == self.generation {
            return Some(Vec::new());
        }
        let from = self.changes_from?;
        if since < from || since > self.generation {
            return None;
        }
        let mut names: Vec<&str> = self
            .changes
            .iter()
            .filter(|(g, _)| *g > since)
            .map(|(_, n)| n.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        Some(names)
    }

    /// Bumps the generation for a change of the charts `names` at `now`,
    /// recording them (dropping the oldest generations past the bound).
    pub(crate) fn bump(&mut self, names: impl IntoIterator<Item = String>, now: u64) {
        if self.changes_from.is_none() {
            // Complete from here on.
            self.changes_from = Some(self.generation);
            self.changes.clear();
        }
        self.generation += 1;
        self.updated_ms = now;
        let g = self.generation;
        self.changes.extend(names.into_iter().map(|n| (g, n)));
        while self.changes.len() > CHART_CHANGES_KEPT {
            let oldest = self.changes[0].0;
            self.changes.retain(|(g, _)| *g != oldest);
            self.changes_from = Some(oldest);
        }
    }
}

/// The derived counts of the index (`refcount`, `links`, `repos`, `tags`,
/// `parents`, `versions`). IMPORTANT: every change of a derived count goes
/// through [`Count::up`] or [`Count::down`]: a count that would go below
/// zero or past `u64::MAX` is never wrapped or clamped. The change is
/// refused with [`StorageError::Count`] (logged here), so the caller's whole
/// batch is dropped and nothing is written; `berthctl fsck` reports the
/// stored count against the recomputed one and `fsck --repair` fixes it.
/// A clamp would hide the disagreement and could hand GC a blob that
/// another manifest still references.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    Refcount,
    Links,
    Repos,
    Tags,
    Parents,
    Versions,
    ProjectLinks,
    UsageBlobs,
    UsageBytes,
}

impl Count {
    fn name(self) -> &'static str {
        match self {
            Count::Refcount => "refcount",
            Count::Links => "link count",
            Count::Repos => "repository count",
            Count::Tags => "tag count",
            Count::Parents => "parent count",
            Count::Versions => "version count",
            Count::ProjectLinks => "project link count",
            Count::UsageBlobs => "project blob count",
            Count::UsageBytes => "project byte count",
        }
    }

    /// `*value += 1`; `what` names the record (`blob sha256:…`).
    pub(crate) fn up(
        self,
        value: &mut u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), StorageError> {
        self.step(value, what, value.checked_add(1), "past u64::MAX")
    }

    /// `*value += n`.
    pub(crate) fn add(
        self,
        value: &mut u64,
        n: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), StorageError> {
        self.step(value, what, value.checked_add(n), "past u64::MAX")
    }

    /// `*value -= n`.
    pub(crate) fn sub(
        self,
        value: &mut u64,
        n: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), StorageError> {
        self.step(value, what, value.checked_sub(n), "below zero")
    }

    /// `*value -= 1`; `what` names the record (`blob sha256:…`).
    pub(crate) fn down(
        self,
        value: &mut u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), StorageError> {
        self.step(value, what, value.checked_sub(1), "below zero")
    }

    fn step(
        self,
        value: &mut u64,
        what: impl FnOnce() -> String,
        next: Option<u64>,
        direction: &'static str,
    ) -> Result<(), StorageError> {
        match next {
            Some(n) => {
                *value = n;
                Ok(())
            }
            None => {
                let what = what();
                tracing::error!(record = %what, count = self.name(), direction,
                    "derived count out of range; batch refused, run `berthctl fsck`");
                Err(StorageError::Count {
                    what,
                    count: self.name(),
                    direction,
                })
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixture: version-1 records as written by this code. A change that
    /// breaks these is an index format change.
    #[test]
    fn version_1_fixtures_decode() {
        let blob = b"\x01{\"size\":5,\"tier\":\"local\",\"refcount\":2,\"links\":1,\"state\":\"active\",\"created_ms\":1,\"touched_ms\":2}";
        let rec = BlobRecord::decode(blob).unwrap();
        assert_eq!(rec.size, 5);
        assert_eq!(rec.refcount, 2);
        assert_eq!(rec.encode(), blob.to_vec());

        let up = b"\x01{\"repo\":\"a/b\",\"algorithm\":\"sha256\",\"offset\":7,\"created_ms\":1,\"updated_ms\":2}";
        let rec = UploadRecord::decode(up).unwrap();
        assert_eq!(rec.algorithm, Algorithm::Sha256);
        assert_eq!(rec.encode(), up.to_vec());

        let hex = "a".repeat(64);
        let chart = format!(
            "\x01{{\"metadata\":\"{{\\\"name\\\":\\\"c\\\"}}\",\"chart\":{{\"digest\":\"sha256:{hex}\",\"size\":3}},\"manifest\":\"sha256:{hex}\",\"created_ms\":4}}"
        );
        let rec = ChartRecord::decode(chart.as_bytes()).unwrap();
        assert_eq!(rec.metadata, r#"{"name":"c"}"#);
        assert_eq!(rec.chart.size, 3);
        assert_eq!(rec.prov, None);
        assert_eq!(rec.encode(), chart.as_bytes().to_vec());

        let repo = b"\x01{\"generation\":7,\"updated_ms\":8,\"versions\":2}";
        let rec = ChartRepoRecord::decode(repo).unwrap();
        assert_eq!(rec.generation, 7);
        assert_eq!(rec.encode(), repo.to_vec());
    }

    /// The chart repository record remembers which charts the latest
    /// generations changed, and only those: a reader too far behind, or
    /// holding a record from before the list, learns nothing.
    #[test]
    fn chart_repo_changes_cover_the_latest_generations() {
        // A record written before the list existed: nothing is known.
        let mut r =
            ChartRepoRecord::decode(b"\x01{\"generation\":7,\"updated_ms\":8,\"versions\":2}")
                .unwrap();
        assert_eq!(r.changed_since(6), None);
        assert_eq!(r.changed_since(7), Some(vec![]), "its own generation");
        r.bump(["b".to_owned()], 9);
        assert_eq!((r.generation, r.updated_ms), (8, 9));
        assert_eq!(r.changed_since(6), None);
        assert_eq!(r.changed_since(7), Some(vec!["b"]));
        assert_eq!(r.changed_since(8), Some(vec![]));
        assert_eq!(r.changed_since(9), None, "a generation it never had");
        r.bump(["a".to_owned(), "c".to_owned()], 10);
        r.bump(["b".to_owned()], 11);
        assert_eq!(r.changed_since(7), Some(vec!["a", "b", "c"]));
        assert_eq!(r.changed_since(9), Some(vec!["b"]));
        // Round trip.
        assert_eq!(ChartRepoRecord::decode(&r.encode()).unwrap(), r);
        // Past the bound, the oldest generations are forgotten whole.
        for _ in 0..CHART_CHANGES_KEPT {
            r.bump(["d".to_owned()], 12);
        }
        assert!(r.changes.len() <= CHART_CHANGES_KEPT);
        assert_eq!(r.changed_since(7), None);
        let from = r.changes_from.unwrap();
        assert_eq!(r.changed_since(from), Some(vec!["d"]));
        assert_eq!(r.changes[0].0, from + 1);
    }

    /// Fixture: version-1 account records.
    #[test]
    fn version_1_account_fixtures_decode() {
        let user =
            b"\x01{\"id\":1,\"password_hash\":\"$argon2id$x\",\"admin\":true,\"created_ms\":5}";
        let rec = UserRecord::decode(user).unwrap();
        assert!(rec.admin);
        assert_eq!(rec.encode(), user.to_vec());

        let project = b"\x01{\"id\":2,\"public\":false,\"owner\":\"alice\",\"created_ms\":5}";
        let rec = ProjectRecord::decode(project).unwrap();
        assert!(!rec.public);
        assert_eq!(rec.encode(), project.to_vec());

        let ldap = b"\x01{\"id\":6,\"password_hash\":\"ldap:00\",\"admin\":false,\"created_ms\":5,\"ldap_dn\":\"uid=a,dc=x\",\"ldap_groups\":[\"cn=g,dc=x\"],\"ldap_admin\":true}";
        let rec = UserRecord::decode(ldap).unwrap();
        assert!(rec.is_ldap() && rec.is_admin() && !rec.admin);
        assert_eq!(rec.ldap_groups, ["cn=g,dc=x"]);
        assert_eq!(rec.encode(), ldap.to_vec());

        let member = b"\x01{\"id\":3,\"role\":2,\"created_ms\":5}";
        let rec = MemberRecord::decode(member).unwrap();
        assert_eq!(rec.role, 2);
        assert_eq!(rec.encode(), member.to_vec());

        let robot = b"\x01{\"id\":4,\"project\":\"p\",\"actions\":[\"pull\"],\"secret_sha256\":\"ab\",\"expires_ms\":9,\"created_ms\":5}";
        let rec = RobotRecord::decode(robot).unwrap();
        assert_eq!(rec.expires_ms, Some(9));
        assert_eq!(rec.encode(), robot.to_vec());
    }

    /// Fixture: the records that are not JSON, byte for byte as written
    /// before they had types. A change that breaks these is an index format
    /// change.
    #[test]
    fn raw_record_fixtures() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        let tag = TagRecord(d.clone());
        assert_eq!(tag.encode(), format!("sha256:{hex}").into_bytes());
        assert_eq!(TagRecord::decode(&tag.encode()), Ok(tag));
        assert!(TagRecord::decode(b"sha256:abc").is_err());
        assert!(TagRecord::decode(b"\xff").is_err());

        assert_eq!(Empty.encode(), b"");
        assert_eq!(Empty::decode(b""), Ok(Empty));
        assert!(Empty::decode(b"x").is_err());

        assert_eq!(ManifestBody(b"{}".to_vec()).encode(), b"{}");
        assert_eq!(FormatVersion(1).encode(), [0, 0, 0, 1]);
        assert_eq!(FormatVersion::decode(&[0, 0, 0, 1]), Ok(FormatVersion(1)));
        assert!(FormatVersion::decode(&[1]).is_err());
        assert_eq!(Seq(258).encode(), [0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(Seq::decode(&[0, 0, 0, 0, 0, 0, 1, 2]), Ok(Seq(258)));
        assert!(Seq::decode(&[0; 4]).is_err());
        assert_eq!(Marker.encode(), b"1");
        assert!(Marker::decode(b"0").is_err());
        assert_eq!(TokenSeed([7; 32]).encode(), [7; 32]);
        assert_eq!(TokenSeed::decode(&[7; 32]), Ok(TokenSeed([7; 32])));
        assert!(TokenSeed::decode(&[7; 31]).is_err());
    }

    #[test]
    fn bad_records_are_corrupt_errors() {
        for bad in [&b""[..], b"\x02{}", b"\x01{", b"\x01{\"size\":1}"] {
            assert!(BlobRecord::decode(bad).is_err(), "{bad:?}");
        }
    }
}
