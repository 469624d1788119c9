//! The fuzz targets, one per parser family. Each asserts its parser's
//! contract; see the crate docs.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_formats::token::{TokenKey, CLOCK_LEEWAY_SECS};
use berth_formats::{Algorithm, Digest, Reference, RepoName, Tag, MAX_REPO_NAME_LEN};
use berth_wire::charts::{multipart, package, path as chart_path};
use berth_wire::credentials::Credentials;
use berth_wire::harbor;
use berth_wire::manifest::{self, ManifestParseError};
use berth_wire::path::{percent_decode, route, Query, Route};
use berth_wire::range::{ByteRange, ChunkRange};
use berth_wire::token_request::{Form, Scope};
use bytes::Bytes;

/// Longest error message a parser may build from any input: errors quote
/// at most a cut of the input (~200 characters, escaped), never all of it.
const MAX_ERROR_LEN: usize = 8 << 10;

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The first line (without `\r`) and the rest: a header value and a body.
fn header_and_body(data: &[u8]) -> (Option<&str>, &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let head = &data[..i];
            let head = head.strip_suffix(b"\r").unwrap_or(head);
            (text(head).filter(|h| !h.is_empty()), &data[i + 1..])
        }
        None => (None, data),
    }
}

fn bounded_error(e: impl std::fmt::Display) {
    let msg = e.to_string();
    assert!(msg.len() <= MAX_ERROR_LEN, "error of {} bytes", msg.len());
}

/// `Digest::parse` and `Algorithm::parse`: what parses is canonical (prints
/// back as the input) and survives every other constructor and serde.
pub fn digest(data: &[u8]) {
    let Some(s) = text(data) else { return };
    match Algorithm::parse(s) {
        Ok(a) => assert_eq!(a.name(), s),
        Err(e) => bounded_error(e),
    }
    match Digest::parse(s) {
        Ok(d) => {
            assert_eq!(d.as_str(), s);
            assert_eq!(d.to_string(), s);
            assert_eq!(d.hex().len(), d.algorithm().hex_len());
            assert_eq!(format!("{}:{}", d.algorithm(), d.hex()), s);
            assert_eq!(
                Digest::from_parts(d.algorithm(), d.hex()).ok(),
                Some(d.clone())
            );
            let json = serde_json::to_string(&d).expect("a digest serializes");
            let back: Digest = serde_json::from_str(&json).expect("a digest deserializes");
            assert_eq!(back, d);
        }
        Err(e) => bounded_error(e),
    }
}

/// Repository names, tags and references: accepted values are the input,
/// within their length bounds, and parse again to themselves.
pub fn names(data: &[u8]) {
    let Some(s) = text(data) else { return };
    match RepoName::parse(s) {
        Ok(n) => {
            assert_eq!(n.as_str(), s);
            assert!(!s.is_empty() && s.len() <= MAX_REPO_NAME_LEN);
            assert_eq!(Some(n.project()), s.split('/').next());
            assert!(n.as_str().bytes().all(|b| matches!(b,
                b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/')));
            assert_eq!(RepoName::parse(&n.to_string()).ok(), Some(n));
        }
        Err(e) => bounded_error(e),
    }
    match Tag::parse(s) {
        Ok(t) => {
            assert_eq!(t.as_str(), s);
            assert!(!s.is_empty() && s.len() <= 128);
        }
        Err(e) => bounded_error(e),
    }
    match Reference::parse(s) {
        Ok(r) => {
            assert_eq!(r.to_string(), s);
            match &r {
                Reference::Tag(t) => assert_eq!(Tag::parse(s).ok().as_ref(), Some(t)),
                Reference::Digest(d) => assert_eq!(Digest::parse(s).ok().as_ref(), Some(d)),
            }
        }
        Err(e) => bounded_error(e),
    }
}

/// `Range` and `Content-Range`: parse → render → parse is the identity,
/// a resolved range lies inside the blob, a chunk's size never wraps.
pub fn range(data: &[u8]) {
    if let Some(r) = ByteRange::parse(data) {
        assert_eq!(ByteRange::parse(r.to_string().as_bytes()), Some(r));
        let mut sizes = vec![0, 1, 100, u64::MAX - 1, u64::MAX];
        if let ByteRange::From { first, last } = r {
            sizes.extend([first, first.saturating_add(1)]);
            sizes.extend(last);
        }
        if let ByteRange::Suffix(n) = r {
            sizes.extend([n, n.saturating_add(1), n.saturating_sub(1)]);
        }
        for size in sizes {
            if let Some(span) = r.resolve(size) {
                assert!(
                    span.start < span.end && span.end <= size,
                    "{r} of {size}: {span:?}"
                );
            }
        }
    }
    let Some(s) = text(data) else { return };
    if let Some(c) = ChunkRange::parse(s) {
        assert_eq!(ChunkRange::parse(&c.to_string()), Some(c));
        let exact = u128::from(c.last) + 1 - u128::from(c.first.min(c.last));
        match c.size() {
            Some(n) => assert!(c.first <= c.last && u128::from(n) == exact),
            None => assert!(c.first > c.last || exact > u128::from(u64::MAX)),
        }
    }
}

/// The OCI path grammar, the chart repository's, query strings and
/// percent-decoding: a routed path renders back to a path that routes the
/// same, and every part borrowed from the path is a part of it.
pub fn path(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let decoded = percent_decode(s);
    assert!(decoded.len() <= s.len());
    let p = decoded.as_ref();
    let r = route(p);
    let rendered = match r {
        Route::Base | Route::Catalog | Route::Unknown => None,
        Route::Tags { name } => Some(format!("/v2/{name}/tags/list")),
        Route::Manifest { name, reference } => Some(format!("/v2/{name}/manifests/{reference}")),
        Route::Blob { name, digest } => Some(format!("/v2/{name}/blobs/{digest}")),
        Route::Upload { name, id: "" } => Some(format!("/v2/{name}/blobs/uploads")),
        Route::Upload { name, id } => Some(format!("/v2/{name}/blobs/uploads/{id}")),
        Route::Referrers { name, digest } => Some(format!("/v2/{name}/referrers/{digest}")),
    };
    if let Some(again) = rendered {
        assert_eq!(route(&again), r, "{again}");
        assert!(!r.allowed().is_empty());
    }
    if let Some(cr) = chart_path::route(p) {
        assert!(!cr.allowed().is_empty());
        use chart_path::Route as C;
        match cr {
            C::Health | C::GlobalIndex => {}
            C::Index { project } | C::Charts { project } | C::Prov { project } => {
                assert!(!project.is_empty())
            }
            C::File { project, file } => assert!(!project.is_empty() && !file.is_empty()),
            C::Chart { project, name } => assert!(!project.is_empty() && !name.contains('/')),
            C::Version {
                project,
                name,
                version,
            } => assert!(!project.is_empty() && !name.is_empty() && !version.is_empty()),
        }
    }
    let q = Query(s);
    for key in [
        "n",
        "last",
        "digest",
        "mount",
        "from",
        "artifactType",
        "tag",
    ] {
        for v in q.all(key) {
            assert!(v.len() <= s.len());
        }
    }
}

/// Manifest and index JSON with a `Content-Type` (the input's first line):
/// an accepted manifest keeps its body byte for byte, is of a stored type,
/// has a size for every blob and references only what its kind may.
pub fn manifest(data: &[u8]) {
    let (content_type, body) = header_and_body(data);
    match manifest::parse(content_type, body.to_vec()) {
        Ok(m) => {
            assert_eq!(m.body, body);
            for d in &m.blobs {
                assert!(m.blob_sizes.contains_key(d), "{d} has no size");
            }
            assert!(m.blob_sizes.len() <= m.blobs.len());
            match m.media_type.as_str() {
                manifest::OCI_MANIFEST | manifest::DOCKER_MANIFEST => {
                    assert!(m.manifests.is_empty())
                }
                manifest::OCI_INDEX | manifest::DOCKER_LIST => assert!(m.blobs.is_empty()),
                other => panic!("accepted media type {other:?}"),
            }
        }
        Err(ManifestParseError::Invalid(e) | ManifestParseError::UnsupportedMediaType(e)) => {
            bounded_error(e)
        }
    }
}

/// The `Authorization` header: accepted credentials render back to a
/// header that parses to the same credentials. Also what other registries
/// answer berth as a client (`WWW-Authenticate`, `Link`): read without
/// panicking.
pub fn credentials(data: &[u8]) {
    if let Some(s) = text(data) {
        let _ = berth_wire::challenge::Challenge::parse(s);
        let _ = berth_wire::challenge::next_link(s);
    }
    match Credentials::parse(Some(data)) {
        Ok(Credentials::None) => panic!("a present header parsed as no credentials"),
        Ok(c @ Credentials::Basic { .. }) => {
            let Credentials::Basic { name, secret } = &c else {
                unreachable!()
            };
            assert!(!name.contains(':'));
            let again = format!("Basic {}", STANDARD.encode(format!("{name}:{secret}")));
            assert_eq!(Credentials::parse(Some(again.as_bytes())), Ok(c));
        }
        Ok(c @ Credentials::Bearer(_)) => {
            let Credentials::Bearer(t) = &c else {
                unreachable!()
            };
            assert!(!t.is_empty());
            let again = format!("Bearer {t}");
            assert_eq!(Credentials::parse(Some(again.as_bytes())), Ok(c));
        }
        Err(_) => {}
    }
}

/// The key the token seeds (`corpus/token/`) are signed with, the time
/// they are verified at, and berth's issuer and audience.
pub const TOKEN_SEED: [u8; 32] = [7; 32];
pub const TOKEN_NOW: u64 = 1_700_000_000;
pub const TOKEN_ISSUER: &str = "berth-token-service";
pub const TOKEN_AUDIENCE: &str = "berth-registry";

/// JWT verification: a token that verifies is unexpired, valid now, for
/// this issuer and audience, and its claims sign into a token that
/// verifies to the same claims.
pub fn token(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let key = TokenKey::from_seed(&TOKEN_SEED);
    match key.verify(s, TOKEN_ISSUER, TOKEN_AUDIENCE, TOKEN_NOW) {
        Ok(claims) => {
            assert!(claims.exp > TOKEN_NOW);
            assert!(claims.nbf <= TOKEN_NOW + CLOCK_LEEWAY_SECS);
            assert_eq!(claims.iss, TOKEN_ISSUER);
            assert_eq!(claims.aud, TOKEN_AUDIENCE);
            let again = key.sign(&claims);
            assert_eq!(
                key.verify(&again, TOKEN_ISSUER, TOKEN_AUDIENCE, TOKEN_NOW),
                Ok(claims)
            );
        }
        Err(e) => bounded_error(e),
    }
}

/// Limits small enough that a decompression bomb costs the fuzzer little;
/// the code paths are the server's.
const CHART_LIMITS: package::Limits = package::Limits {
    max_chart_bytes: 1 << 20,
    max_unpacked_bytes: 4 << 20,
    max_entries: 1_000,
    max_chart_yaml_bytes: 64 << 10,
    max_prov_bytes: 64 << 10,
};

/// Chart archives (gzip, tar, `Chart.yaml`), `Chart.yaml` alone and
/// provenance files: an accepted chart has a valid name and a version that
/// is its `Chart.yaml`'s.
pub fn chart(data: &[u8]) {
    match package::inspect(data, &CHART_LIMITS) {
        Ok(p) => {
            assert!(!p.metadata.name.is_empty());
            assert_eq!(p.metadata.validate().ok(), Some(p.version.clone()));
        }
        Err(e) => bounded_error(e),
    }
    if let Ok(m) = package::parse_chart_yaml(data, &CHART_LIMITS) {
        if m.validate().is_ok() {
            assert!(!m.name.is_empty());
        }
    }
    if let Ok(p) = package::inspect_prov(data, &CHART_LIMITS) {
        assert!(!p.name.is_empty() && !p.version.is_empty());
    }
}

/// `multipart/form-data` (the input's first line is the `Content-Type`):
/// at most 16 parts, and every field is a slice of the body.
pub fn multipart(data: &[u8]) {
    let (content_type, body) = header_and_body(data);
    let Some(boundary) = content_type.and_then(multipart::boundary) else {
        return;
    };
    assert!(!boundary.is_empty() && boundary.len() <= 70);
    let body = Bytes::copy_from_slice(body);
    let Ok(fields): Result<BTreeMap<String, Bytes>, String> = multipart::parse(&body, &boundary)
    else {
        return;
    };
    assert!(fields.len() <= 16);
    let whole = body.as_ptr_range();
    for v in fields.values() {
        let part = v.as_ptr_range();
        assert!(v.is_empty() || (whole.start <= part.start && part.end <= whole.end));
    }
}

/// The Harbor API's JSON request bodies.
pub fn harbor(data: &[u8]) {
    if let Ok(p) = serde_json::from_slice::<harbor::ProjectReq>(data) {
        let _ = p.public();
    }
    let _ = serde_json::from_slice::<harbor::MemberReq>(data);
    let _ = serde_json::from_slice::<harbor::UserReq>(data);
    if let Ok(r) = serde_json::from_slice::<harbor::RobotReq>(data) {
        let access: usize = r.permissions.iter().map(|p| p.access.len()).sum();
        assert!(access <= data.len());
    }
    let _ = serde_json::from_slice::<harbor::ScheduleRequest>(data);
    let _ = serde_json::from_slice::<harbor::RegistryReq>(data);
    let _ = serde_json::from_slice::<harbor::RegistryUpdateReq>(data);
    let _ = serde_json::from_slice::<harbor::PolicyReq>(data);
    let _ = serde_json::from_slice::<harbor::ExecutionReq>(data);
    let _ = serde_json::from_slice::<harbor::RobotUpdateReq>(data);
    let _ = serde_json::from_slice::<harbor::RobotSecReq>(data);
    let _ = serde_json::from_slice::<harbor::UserProfileReq>(data);
    let _ = serde_json::from_slice::<harbor::PasswordReq>(data);
    let _ = serde_json::from_slice::<harbor::SysadminReq>(data);
    let _ = serde_json::from_slice::<harbor::RoleReq>(data);
    let _ = serde_json::from_slice::<harbor::ImmutableRuleReq>(data);
    let _ = serde_json::from_slice::<harbor::RetentionPolicyReq>(data);
    let _ = serde_json::from_slice::<harbor::RetentionRunReq>(data);
    let _ = serde_json::from_slice::<harbor::RetentionStopReq>(data);
    let _ = serde_json::from_slice::<berth_wire::ldap::LdapConfReq>(data);
    let _ = serde_json::from_slice::<berth_wire::ldap::LdapImportReq>(data);
    let _ = serde_json::from_slice::<berth_wire::ldap::UserGroupReq>(data);
}

/// The token service's form bodies and scopes: every scope of the form
/// (and the input as one scope) renders back to a scope that splits the
/// same.
pub fn token_request(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let form = Form::parse(s);
    assert!(form.all("scope").count() <= s.len());
    let scopes = form.all("scope").flat_map(|v| v.split(' ')).chain([s]);
    for scope in scopes {
        if let Some(sc) = Scope::parse(scope) {
            assert!(!sc.kind.contains(':') && !sc.kind.contains('('));
            assert!(!sc.actions.contains(':'));
            let again = format!("{}:{}:{}", sc.kind, sc.name, sc.actions);
            assert_eq!(Scope::parse(&again), Some(sc));
        }
    }
    let _ = (
        form.get("grant_type"),
        form.get("service"),
        form.get("password"),
    );
}
