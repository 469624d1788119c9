//! What a registry asks for when it answers `401`: the `WWW-Authenticate`
//! challenge (RFC 9110 §11.6.1; Docker token auth's `Bearer realm=…,
//! service=…,scope=…`), and what a client asks a registry for: the
//! manifest types it accepts. Read by `berthctl sync` and by the proxy
//! cache, both clients of other registries.

use std::collections::HashMap;

use crate::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

/// The manifest media types berth stores, so the ones it asks other
/// registries for.
pub const MANIFEST_TYPE_LIST: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];
/// [`MANIFEST_TYPE_LIST`] as an `Accept` header.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Send Basic credentials.
    Basic,
    /// Fetch a token from `realm` (with `service` and a scope) and send it
    /// as `Bearer`.
    Bearer {
        realm: String,
        service: Option<String>,
    },
    /// A scheme berth does not speak, or no usable challenge; the header
    /// as it came, for the error.
    Other(String),
}

impl Challenge {
    /// Reads a `WWW-Authenticate` value.
    pub fn parse(header: &str) -> Challenge {
        let (kind, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if kind.eq_ignore_ascii_case("basic") {
            return Challenge::Basic;
        }
        if kind.eq_ignore_ascii_case("bearer") {
            let mut params = challenge_params(params);
            if let Some(realm) = params.remove("realm") {
                return Challenge::Bearer {
                    realm,
                    service: params.remove("service"),
                };
            }
        }
        Challenge::Other(header.to_owned())
    }
}

/// `key="value"` pairs of a challenge (values may hold commas); keys
/// lowercased.
pub fn challenge_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            match q.split_once('"') {
                Some((v, t)) => (v.to_owned(), t),
                None => (q.to_owned(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, t)) => (v.trim().to_owned(), t),
                None => (after.trim().to_owned(), ""),
            }
        };
        out.insert(key, value);
        rest = tail.trim_start().trim_start_matches(',');
    }
    out
}

/// The target of a `Link` header's `rel="next"` (RFC 8288; the OCI
/// distribution spec's paging).
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_links_parse() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert_eq!(
            Challenge::parse(r#"Bearer realm="https://a/t",service="s""#),
            Challenge::Bearer {
                realm: "https://a/t".into(),
                service: Some("s".into())
            }
        );
        assert_eq!(Challenge::parse(r#"Basic realm="x""#), Challenge::Basic);
        assert!(matches!(Challenge::parse("Bearer"), Challenge::Other(_)));
        assert!(matches!(Challenge::parse(""), Challenge::Other(_)));
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn the_accept_header_lists_the_stored_types() {
        assert_eq!(MANIFEST_ACCEPT, MANIFEST_TYPE_LIST.join(", "));
    }
}
