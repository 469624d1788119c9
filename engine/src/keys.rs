//! The index keyspace: every RocksDB column family and key encoding.
//!
//! This module is the only code that builds or parses index keys. Values are
//! the records in [`crate::records`]. Separators are a single `0x00` byte,
//! which cannot occur in repository names, tags, digests or upload ids, so a
//! prefix scan over `repo 0x00` sees exactly one repository's entries and
//! iteration order is byte order of the parts (tags come out sorted).
//!
//! ```text
//! column family   key                                  value (records.rs)
//! -------------   ----------------------------------   -------------------------------
//! meta            "format"                             u32 BE format version
//! meta            "tiers_located"                      present: every blob's tier was located
//! blobs           digest                               BlobRecord: size, tier, refcount,
//!                                                        links, state, timestamps
//! links           repo 0x00 digest                     LinkRecord: created
//! blob_repos      digest 0x00 repo                     empty (reverse of links, for GC)
//! manifests       digest                               ManifestRecord: media type, size,
//!                                                        subject, artifact type,
//!                                                        annotations, referenced blobs and
//!                                                        manifests, repository count
//! bodies          digest                               the manifest bytes exactly as pushed
//! repo_manifests  repo 0x00 digest                     RepoManifestRecord: created, tag
//!                                                        count, parent count
//! tags            repo 0x00 tag                        digest string
//! referrers       repo 0x00 subject 0x00 referrer      empty (descriptor from `manifests`)
//! uploads         upload id                            UploadRecord: repo, algorithm,
//!                                                        durable offset, owner, timestamps
//! repos           repo                                 RepoRecord: created
//! users           user name                            UserRecord: id, argon2id hash, admin
//! projects        project name                         ProjectRecord: id, public, owner
//! members         project 0x00 user name               MemberRecord: role
//! robots          robot name (robot$project+name)      RobotRecord: id, project, actions,
//!                                                        sha256 of the secret, expiry
//! meta            "token_key"                          legacy only: the 32-byte Ed25519 seed
//!                                                        of the token signing key, which now
//!                                                        lives in <data>/token.key; moved out
//!                                                        and purged at first use
//! meta            "seq" 0x00 kind                      u64 BE: last id handed out for kind
//!                                                        ("user", "project", "robot", "member")
//! gc_candidates   digest                               empty: the blob's refcount is 0
//!                                                        (GC's work list, see docs/gc.md)
//! charts          project 0x00 name 0x00 version       ChartRecord: Chart.yaml metadata
//!                                                        (Helm config JSON), tgz and prov
//!                                                        digests and sizes, manifest
//!                                                        digest, created
//! chart_repos     project                              ChartRepoRecord: generation
//!                                                        (bumped by every chart change),
//!                                                        updated, version count
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

use crate::digest::Digest;
use crate::names::{RepoName, Tag};

pub const CF_META: &str = "meta";
pub const CF_BLOBS: &str = "blobs";
pub const CF_LINKS: &str = "links";
pub const CF_BLOB_REPOS: &str = "blob_repos";
pub const CF_MANIFESTS: &str = "manifests";
pub const CF_BODIES: &str = "bodies";
pub const CF_REPO_MANIFESTS: &str = "repo_manifests";
pub const CF_TAGS: &str = "tags";
pub const CF_REFERRERS: &str = "referrers";
pub const CF_UPLOADS: &str = "uploads";
pub const CF_REPOS: &str = "repos";
pub const CF_USERS: &str = "users";
pub const CF_PROJECTS: &str = "projects";
pub const CF_MEMBERS: &str = "members";
pub const CF_ROBOTS: &str = "robots";
pub const CF_GC_CANDIDATES: &str = "gc_candidates";
pub const CF_CHARTS: &str = "charts";
pub const CF_CHART_REPOS: &str = "chart_repos";

/// Every column family, in the order they are opened.
pub const ALL_CFS: [&str; 18] = [
    CF_META,
    CF_BLOBS,
    CF_LINKS,
    CF_BLOB_REPOS,
    CF_MANIFESTS,
    CF_BODIES,
    CF_REPO_MANIFESTS,
    CF_TAGS,
    CF_REFERRERS,
    CF_UPLOADS,
    CF_REPOS,
    CF_USERS,
    CF_PROJECTS,
    CF_MEMBERS,
    CF_ROBOTS,
    CF_GC_CANDIDATES,
    CF_CHARTS,
    CF_CHART_REPOS,
];

/// Key of the format version in `meta`.
pub const META_FORMAT: &[u8] = b"format";
/// The index format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Key in `meta` present once `gc_candidates` has been built from `blobs`
/// (indexes written before the column family existed get it built at open).
pub const META_GC_CANDIDATES: &[u8] = b"gc_candidates_built";
/// Key in `meta` present once every blob record's tier says where the store
/// holds the bytes (records written before tiers were kept all say `local`:
/// the tier worker locates them once, in the background).
pub const META_TIERS_LOCATED: &[u8] = b"tiers_located";

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

/// `blobs` and `manifests` and `bodies`: the digest string.
pub fn digest_key(d: &Digest) -> Vec<u8> {
    d.as_str().as_bytes().to_vec()
}

/// `gc_candidates`: the digest string.
pub fn gc_candidate_key(d: &Digest) -> Vec<u8> {
    digest_key(d)
}

/// `links`: repo 0x00 digest.
pub fn link_key(repo: &RepoName, d: &Digest) -> Vec<u8> {
    join(&[repo.as_str().as_bytes(), d.as_str().as_bytes()])
}

/// `blob_repos`: digest 0x00 repo.
pub fn blob_repo_key(d: &Digest, repo: &RepoName) -> Vec<u8> {
    join(&[d.as_str().as_bytes(), repo.as_str().as_bytes()])
}

/// Prefix of every `blob_repos` key of one digest.
pub fn blob_repos_prefix(d: &Digest) -> Vec<u8> {
    join(&[d.as_str().as_bytes(), b""])
}

/// `repo_manifests`: repo 0x00 digest.
pub fn repo_manifest_key(repo: &RepoName, d: &Digest) -> Vec<u8> {
    link_key(repo, d)
}

/// `tags`: repo 0x00 tag.
pub fn tag_key(repo: &RepoName, tag: &Tag) -> Vec<u8> {
    join(&[repo.as_str().as_bytes(), tag.as_str().as_bytes()])
}

/// Prefix of every per-repository key (`links`, `repo_manifests`, `tags`, `referrers`).
pub fn repo_prefix(repo: &RepoName) -> Vec<u8> {
    join(&[repo.as_str().as_bytes(), b""])
}

/// `referrers`: repo 0x00 subject 0x00 referrer.
pub fn referrer_key(repo: &RepoName, subject: &Digest, referrer: &Digest) -> Vec<u8> {
    join(&[
        repo.as_str().as_bytes(),
        subject.as_str().as_bytes(),
        referrer.as_str().as_bytes(),
    ])
}

/// Prefix of the `referrers` keys of one subject in one repository.
pub fn referrers_prefix(repo: &RepoName, subject: &Digest) -> Vec<u8> {
    join(&[repo.as_str().as_bytes(), subject.as_str().as_bytes(), b""])
}

/// `uploads`: the upload id.
pub fn upload_key(id: &str) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// `repos`: the repository name.
pub fn repo_key(repo: &RepoName) -> Vec<u8> {
    repo.as_str().as_bytes().to_vec()
}

/// `meta`: where the token signing key was kept before it moved to its own
/// file; read only to migrate it (see `Engine::token_signing_key`).
pub const META_TOKEN_KEY: &[u8] = b"token_key";

/// `meta`: the id sequence of one kind of account object.
pub fn seq_key(kind: &str) -> Vec<u8> {
    join(&[b"seq", kind.as_bytes()])
}

/// `users`, `projects`, `robots`: the name.
pub fn name_key(name: &str) -> Vec<u8> {
    name.as_bytes().to_vec()
}

/// `members`: project 0x00 user.
pub fn member_key(project: &str, user: &str) -> Vec<u8> {
    join(&[project.as_bytes(), user.as_bytes()])
}

/// Prefix of every `members` key of one project.
pub fn members_prefix(project: &str) -> Vec<u8> {
    join(&[project.as_bytes(), b""])
}

/// `charts`: project 0x00 name 0x00 version.
pub fn chart_key(project: &RepoName, name: &str, version: &str) -> Vec<u8> {
    join(&[
        project.as_str().as_bytes(),
        name.as_bytes(),
        version.as_bytes(),
    ])
}

/// Prefix of every `charts` key of one project.
pub fn charts_prefix(project: &RepoName) -> Vec<u8> {
    repo_prefix(project)
}

/// Prefix of the `charts` keys of every version of one chart.
pub fn chart_versions_prefix(project: &RepoName, name: &str) -> Vec<u8> {
    join(&[project.as_str().as_bytes(), name.as_bytes(), b""])
}

/// `chart_repos`: the project name.
pub fn chart_repo_key(project: &RepoName) -> Vec<u8> {
    repo_key(project)
}

/// Splits a `charts` key back into project, chart name and version.
pub fn split_chart_key(key: &[u8]) -> Option<(RepoName, String, String)> {
    match parts(key)?.as_slice() {
        [project, name, version] => Some((
            RepoName::parse(project).ok()?,
            (*name).to_owned(),
            (*version).to_owned(),
        )),
        _ => None,
    }
}

/// The last part of a key after its prefix, as UTF-8 (tags, digests, repos).
pub fn suffix<'k>(key: &'k [u8], prefix: &[u8]) -> Option<&'k str> {
    key.strip_prefix(prefix)
        .and_then(|s| std::str::from_utf8(s).ok())
}

/// The `0x00`-separated parts of a key, each as UTF-8.
fn parts(key: &[u8]) -> Option<Vec<&str>> {
    key.split(|&b| b == SEP)
        .map(|p| std::str::from_utf8(p).ok())
        .collect()
}

/// Splits a `links`/`repo_manifests` key back into repository and digest.
pub fn split_repo_digest(key: &[u8]) -> Option<(RepoName, Digest)> {
    match parts(key)?.as_slice() {
        [repo, d] => Some((RepoName::parse(repo).ok()?, Digest::parse(d).ok()?)),
        _ => None,
    }
}

/// Splits a `blob_repos` key back into digest and repository.
pub fn split_digest_repo(key: &[u8]) -> Option<(Digest, RepoName)> {
    match parts(key)?.as_slice() {
        [d, repo] => Some((Digest::parse(d).ok()?, RepoName::parse(repo).ok()?)),
        _ => None,
    }
}

/// Splits a `tags` key back into repository and tag.
pub fn split_tag_key(key: &[u8]) -> Option<(RepoName, Tag)> {
    match parts(key)?.as_slice() {
        [repo, tag] => Some((RepoName::parse(repo).ok()?, Tag::parse(tag).ok()?)),
        _ => None,
    }
}

/// Splits a `referrers` key back into repository, subject and referrer.
pub fn split_referrer_key(key: &[u8]) -> Option<(RepoName, Digest, Digest)> {
    match parts(key)?.as_slice() {
        [repo, subject, referrer] => Some((
            RepoName::parse(repo).ok()?,
            Digest::parse(subject).ok()?,
            Digest::parse(referrer).ok()?,
        )),
        _ => None,
    }
}

/// The smallest key strictly after every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    /// Pins every key encoding: changing one is a format change.
    #[test]
    fn encodings() {
        let repo = RepoName::parse("proj/app").unwrap();
        let project = RepoName::parse("proj").unwrap();
        let tag = Tag::parse("v1").unwrap();
        let a = d('a');
        let b = d('b');
        let hex_a = "a".repeat(64);
        let hex_b = "b".repeat(64);
        let cases: Vec<(Vec<u8>, String)> = vec![
            (digest_key(&a), format!("sha256:{hex_a}")),
            (link_key(&repo, &a), format!("proj/app\0sha256:{hex_a}")),
            (
                blob_repo_key(&a, &repo),
                format!("sha256:{hex_a}\0proj/app"),
            ),
            (blob_repos_prefix(&a), format!("sha256:{hex_a}\0")),
            (
                repo_manifest_key(&repo, &a),
                format!("proj/app\0sha256:{hex_a}"),
            ),
            (tag_key(&repo, &tag), "proj/app\0v1".to_string()),
            (repo_prefix(&repo), "proj/app\0".to_string()),
            (
                referrer_key(&repo, &a, &b),
                format!("proj/app\0sha256:{hex_a}\0sha256:{hex_b}"),
            ),
            (
                referrers_prefix(&repo, &a),
                format!("proj/app\0sha256:{hex_a}\0"),
            ),
            (upload_key("0123abcd"), "0123abcd".to_string()),
            (repo_key(&repo), "proj/app".to_string()),
            (seq_key("user"), "seq\0user".to_string()),
            (name_key("alice"), "alice".to_string()),
            (name_key("robot$proj+ci"), "robot$proj+ci".to_string()),
            (member_key("proj", "alice"), "proj\0alice".to_string()),
            (members_prefix("proj"), "proj\0".to_string()),
            (META_TOKEN_KEY.to_vec(), "token_key".to_string()),
            (gc_candidate_key(&a), format!("sha256:{hex_a}")),
            (
                META_GC_CANDIDATES.to_vec(),
                "gc_candidates_built".to_string(),
            ),
            (META_TIERS_LOCATED.to_vec(), "tiers_located".to_string()),
            (
                chart_key(&project, "nginx", "1.2.3+b.4"),
                "proj\0nginx\x001.2.3+b.4".to_string(),
            ),
            (charts_prefix(&project), "proj\0".to_string()),
            (
                chart_versions_prefix(&project, "nginx"),
                "proj\0nginx\0".to_string(),
            ),
            (chart_repo_key(&project), "proj".to_string()),
        ];
        for (got, want) in cases {
            assert_eq!(got, want.as_bytes(), "{want:?}");
        }
    }

    #[test]
    fn splits_and_prefixes() {
        let repo = RepoName::parse("p/r").unwrap();
        let a = d('c');
        assert_eq!(
            split_repo_digest(&link_key(&repo, &a)),
            Some((repo.clone(), a.clone()))
        );
        assert_eq!(
            split_digest_repo(&blob_repo_key(&a, &repo)),
            Some((a.clone(), repo.clone()))
        );
        let tag = Tag::parse("v1").unwrap();
        assert_eq!(
            split_tag_key(&tag_key(&repo, &tag)),
            Some((repo.clone(), tag))
        );
        let b = d('b');
        assert_eq!(
            split_referrer_key(&referrer_key(&repo, &a, &b)),
            Some((repo.clone(), a.clone(), b))
        );
        assert_eq!(
            split_chart_key(&chart_key(&RepoName::parse("p").unwrap(), "c", "1.0.0")),
            Some((RepoName::parse("p").unwrap(), "c".into(), "1.0.0".into()))
        );
        // Chart "a" never sees the versions of chart "a-b" in its scan.
        let p = RepoName::parse("p").unwrap();
        assert!(!chart_key(&p, "a-b", "1.0.0").starts_with(&chart_versions_prefix(&p, "a")));
        assert_eq!(split_repo_digest(b"p/r"), None);
        assert_eq!(prefix_end(b"ab\0"), b"ab\x01".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        // "p/r" and "p/r/x" never share a prefix scan.
        let child = RepoName::parse("p/r/x").unwrap();
        assert!(!link_key(&child, &a).starts_with(&repo_prefix(&repo)));
    }
}
