//! Validated names: repositories, tags and manifest references.
//!
//! The grammars are the OCI distribution spec's; a value of these types is
//! always valid, so the index can use them in keys without re-checking.

use std::fmt;

use crate::digest::Digest;

/// An invalid repository name, tag or reference.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("invalid repository name {name:?}: {reason}")]
    Repository { name: String, reason: &'static str },
    #[error("invalid tag {tag:?}")]
    Tag { tag: String },
    #[error("invalid reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("invalid chart {what} {value:?}: {reason}")]
    Chart {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Longest repository name accepted (distribution uses 255 for the whole
/// `host/name`; the spec recommends at least 255 characters for the name).
pub const MAX_REPO_NAME_LEN: usize = 255;

/// A repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
/// The first path component is the project.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Parses and validates a repository name.
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        let bad = |reason| NameError::Repository {
            name: truncate(s),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > MAX_REPO_NAME_LEN {
            return Err(bad("longer than 255 characters"));
        }
        for component in s.as_bytes().split(|&b| b == b'/') {
            valid_component(component).map_err(bad)?;
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's string, without a copy.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The project: the first path component.
    pub fn project(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(b: &[u8]) -> Result<(), &'static str> {
    if b.is_empty() {
        return Err("empty path component");
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err("a path component must start and end with [a-z0-9]");
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-+".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&x| x == b'-');
        if !ok {
            return Err("invalid separator or character in path component");
        }
    }
    Ok(())
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Parses and validates a tag.
    pub fn parse(s: &str) -> Result<Tag, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::Tag { tag: truncate(s) })
        }
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag's string, without a copy.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a manifest request names: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A reference containing ':' is a digest, anything else a tag.
    pub fn parse(s: &str) -> Result<Reference, NameError> {
        if s.contains(':') {
            Digest::parse(s)
                .map(Reference::Digest)
                .map_err(|e| NameError::Reference {
                    reference: truncate(s),
                    reason: e.to_string(),
                })
        } else {
            Tag::parse(s).map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// Longest chart version accepted (the OCI tag limit).
pub const MAX_CHART_VERSION_LEN: usize = 128;

/// A validated chart version address: project, chart name, version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChartId {
    project: RepoName,
    name: String,
    version: String,
    /// `project/name`.
    repo: RepoName,
    /// The version as an OCI tag.
    tag: Tag,
}

impl ChartId {
    /// Validates the parts: `project` is one repository path component,
    /// `name` is one too (so `project/name` is a repository), and `version`
    /// is 1–128 characters of `[0-9A-Za-z.+-]` starting with an
    /// alphanumeric (SemVer's alphabet; the server checks SemVer itself).
    pub fn parse(project: &str, name: &str, version: &str) -> Result<ChartId, NameError> {
        let bad = |what, value: &str, reason| NameError::Chart {
            what,
            value: value.chars().take(200).collect(),
            reason,
        };
        if project.contains('/') {
            return Err(bad("project", project, "a project is one path component"));
        }
        let project = RepoName::parse(project)
            .map_err(|_| bad("project", project, "not a valid project name"))?;
        if name.contains('/') || RepoName::parse(name).is_err() {
            return Err(bad(
                "name",
                name,
                "chart names must be lowercase letters, digits and single separators (. _ -)",
            ));
        }
        let ok = !version.is_empty()
            && version.len() <= MAX_CHART_VERSION_LEN
            && version.as_bytes()[0].is_ascii_alphanumeric()
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'));
        if !ok {
            return Err(bad(
                "version",
                version,
                "versions are 1-128 characters of [0-9A-Za-z.+-]",
            ));
        }
        let repo = RepoName::parse(&format!("{project}/{name}"))
            .map_err(|_| bad("name", name, "project/name is longer than 255 characters"))?;
        let tag = Tag::parse(&oci_tag(version))
            .map_err(|_| bad("version", version, "not usable as an OCI tag"))?;
        Ok(ChartId {
            project,
            name: name.to_owned(),
            version: version.to_owned(),
            repo,
            tag,
        })
    }

    /// The project.
    pub fn project(&self) -> &RepoName {
        &self.project
    }

    /// The chart name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version, as sent.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The OCI repository holding the chart: `project/name`.
    pub fn repo(&self) -> &RepoName {
        &self.repo
    }

    /// The OCI tag of the version: `+` becomes `_`, as Helm does.
    pub fn tag(&self) -> &Tag {
        &self.tag
    }
}

impl std::fmt::Display for ChartId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.name, self.version)
    }
}

/// A chart version's OCI tag: `+` (not allowed in tags) becomes `_` (not
/// allowed in SemVer), so the mapping is reversible.
pub fn oci_tag(version: &str) -> String {
    version.replace('+', "_")
}

fn truncate(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_owned();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        let good = [
            "a",
            "library/ubuntu",
            "a.b_c__d---e/f0",
            "project/sub/repo",
            "x9",
        ];
        for g in good {
            assert!(RepoName::parse(g).is_ok(), "{g} should be valid");
        }
        let long = "a".repeat(256);
        let bad = [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a_.b",
            "a b",
            "a\0b",
            long.as_str(),
        ];
        for b in bad {
            assert!(RepoName::parse(b).is_err(), "{b:?} should be invalid");
        }
        assert_eq!(RepoName::parse("proj/x/y").unwrap().project(), "proj");
    }

    #[test]
    fn tags() {
        for g in ["latest", "v1.0.0", "_x", "1", &"a".repeat(128)] {
            assert!(Tag::parse(g).is_ok(), "{g}");
        }
        for b in ["", ".x", "-x", "a/b", "a:b", "a+b", &"a".repeat(129)] {
            assert!(Tag::parse(b).is_err(), "{b}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert!(Reference::parse("sha256:xyz").is_err());
    }

    #[test]
    fn chart_ids() {
        let id = ChartId::parse("proj", "nginx", "1.2.3+build.4").unwrap();
        assert_eq!(id.repo().as_str(), "proj/nginx");
        assert_eq!(id.tag().as_str(), "1.2.3_build.4");
        assert_eq!(id.to_string(), "nginx-1.2.3+build.4");
        for (p, n, v) in [
            ("a/b", "c", "1.0.0"),
            ("Proj", "c", "1.0.0"),
            ("p", "C", "1.0.0"),
            ("p", "a/b", "1.0.0"),
            ("p", "", "1.0.0"),
            ("p", "c", ""),
            ("p", "c", "1.0.0_x"),
            ("p", "c", "-1"),
            ("p", "c", &"1".repeat(129)),
            ("p", "c", "1.0\0"),
        ] {
            assert!(ChartId::parse(p, n, v).is_err(), "{p} {n} {v:?}");
        }
    }
}
