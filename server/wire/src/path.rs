//! The OCI path grammar and query strings.
//!
//! Repository names contain slashes, so a path is routed by its tail:
//!
//! ```text
//! /v2/                                   Base
//! /v2/_catalog                           Catalog
//! /v2/<name>/tags/list                   Tags
//! /v2/<name>/manifests/<reference>       Manifest
//! /v2/<name>/blobs/<digest>              Blob
//! /v2/<name>/blobs/uploads/[<id>]        Upload (no id: start one)
//! /v2/<name>/referrers/<digest>          Referrers
//! ```
//!
//! The last path segment is the reference/digest/id; the segment(s) before
//! it say which resource; everything before that is `<name>`. So
//! `/v2/a/blobs/uploads/manifests/x` is manifest `x` of repository
//! `a/blobs/uploads`. The name is validated by the handler
//! (`RepoName::parse`), not here. Dispatch (which routes answer which
//! methods, authorization, the other path families) is the server's
//! `router.rs`.

use std::borrow::Cow;

/// A routed path; the `&str`s borrow from the (percent-decoded) path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Base,
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Upload { name: &'a str, id: &'a str },
    Referrers { name: &'a str, digest: &'a str },
    Unknown,
}

impl Route<'_> {
    /// The methods this route answers, for `Allow`.
    pub fn allowed(self) -> &'static str {
        match self {
            Route::Base => "GET, HEAD",
            Route::Catalog | Route::Tags { .. } | Route::Referrers { .. } => "GET",
            Route::Manifest { .. } => "GET, HEAD, PUT, DELETE",
            Route::Blob { .. } => "GET, HEAD, DELETE",
            Route::Upload { id: "", .. } => "POST",
            Route::Upload { .. } => "GET, PATCH, PUT, DELETE",
            Route::Unknown => "",
        }
    }
}

/// Routes a percent-decoded path.
pub fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Route::Unknown;
    };
    if rest.is_empty() || rest == "/" {
        return Route::Base;
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Route::Unknown;
    };
    if rest == "_catalog" {
        return Route::Catalog;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return nonempty(name, |name| Route::Tags { name });
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads") {
        return nonempty(name, |name| Route::Upload { name, id: "" });
    }
    let Some((head, last)) = rest.rsplit_once('/') else {
        return Route::Unknown;
    };
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return nonempty(name, |name| Route::Upload { name, id: last });
    }
    if last.is_empty() {
        return Route::Unknown;
    }
    if let Some(name) = head.strip_suffix("/manifests") {
        return nonempty(name, |name| Route::Manifest {
            name,
            reference: last,
        });
    }
    if let Some(name) = head.strip_suffix("/blobs") {
        return nonempty(name, |name| Route::Blob { name, digest: last });
    }
    if let Some(name) = head.strip_suffix("/referrers") {
        return nonempty(name, |name| Route::Referrers { name, digest: last });
    }
    Route::Unknown
}

fn nonempty<'a>(name: &'a str, f: impl FnOnce(&'a str) -> Route<'a>) -> Route<'a> {
    if name.is_empty() {
        Route::Unknown
    } else {
        f(name)
    }
}

/// A raw query string. Lookups scan it (queries here are a few pairs).
/// Values are percent-decoded; `+` stays `+` (media types such as
/// `application/vnd.oci.image.manifest.v1+json` are sent unencoded by some
/// clients, and no value berth reads contains a space).
#[derive(Clone, Copy, Debug)]
pub struct Query<'a>(pub &'a str);

impl<'a> Query<'a> {
    /// Every value of `key`, in order.
    pub fn all(self, key: &'a str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
        self.0.split('&').filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
    }

    /// The first value of `key`.
    pub fn get(self, key: &'a str) -> Option<Cow<'a, str>> {
        self.all(key).next()
    }

    /// The pairs whose key is none of `drop`, in order, each followed by
    /// `&`, for a link to another page of the same listing. Bytes other
    /// than unreserved characters and `%=+:/*!$'()@` are percent-encoded,
    /// so the result cannot end a `Link` header's `<…>` or split it
    /// (`>`, `,`, `;`, `"`, space) and decodes to what was sent.
    pub fn others(self, drop: &[&str]) -> String {
        let mut out = String::new();
        for pair in self.0.split('&').filter(|p| !p.is_empty()) {
            let k = pair.split_once('=').map_or(pair, |(k, _)| k);
            if drop.iter().any(|d| percent_decode(k) == *d) {
                continue;
            }
            for &b in pair.as_bytes() {
                if b.is_ascii_alphanumeric() || b"-._~%=+:/*!$'()@".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out.push('&');
        }
        out
    }
}

/// Decodes `%XX` escapes. Invalid escapes stay literal; a result that is not
/// UTF-8 leaves the input unchanged (validation then rejects it).
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(s),
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn others_keeps_filters_and_escapes_link_syntax() {
        let q = Query("q=name%3D~app&page=2&page_size=5&sort=-name&x=<a>,b;c\"");
        let rest = q.others(&["page", "page_size"]);
        assert_eq!(rest, "q=name%3D~app&sort=-name&x=%3Ca%3E%2Cb%3Bc%22&");
        let back = Query(&rest);
        assert_eq!(back.get("x").as_deref(), Some("<a>,b;c\""));
        assert_eq!(back.get("q").as_deref(), Some("name=~app"));
        assert_eq!(Query("").others(&["page"]), "");
    }

    #[test]
    fn routes() {
        let d = "sha256:aa";
        let cases: &[(&str, Route)] = &[
            ("/v2", Route::Base),
            ("/v2/", Route::Base),
            ("/v2/_catalog", Route::Catalog),
            ("/v2/a/b/tags/list", Route::Tags { name: "a/b" }),
            (
                "/v2/a/manifests/latest",
                Route::Manifest {
                    name: "a",
                    reference: "latest",
                },
            ),
            (
                "/v2/a/b/blobs/sha256:aa",
                Route::Blob {
                    name: "a/b",
                    digest: d,
                },
            ),
            ("/v2/a/blobs/uploads/", Route::Upload { name: "a", id: "" }),
            ("/v2/a/blobs/uploads", Route::Upload { name: "a", id: "" }),
            (
                "/v2/a/blobs/uploads/abc",
                Route::Upload {
                    name: "a",
                    id: "abc",
                },
            ),
            (
                "/v2/a/referrers/sha256:aa",
                Route::Referrers {
                    name: "a",
                    digest: d,
                },
            ),
            // Names that contain resource words route by the tail.
            (
                "/v2/x/blobs/uploads/manifests/v1",
                Route::Manifest {
                    name: "x/blobs/uploads",
                    reference: "v1",
                },
            ),
            (
                "/v2/manifests/blobs/sha256:aa",
                Route::Blob {
                    name: "manifests",
                    digest: d,
                },
            ),
            (
                "/v2/blobs/blobs/uploads/",
                Route::Upload {
                    name: "blobs",
                    id: "",
                },
            ),
            ("/v2/tags/list/tags/list", Route::Tags { name: "tags/list" }),
            // Unknown.
            ("/v2/blobs/sha256:aa", Route::Unknown),
            ("/v2/a/manifests/", Route::Unknown),
            ("/v2/a", Route::Unknown),
            ("/v2/a/foo/bar", Route::Unknown),
            ("/v3/", Route::Unknown),
            ("/v2x", Route::Unknown),
            ("/", Route::Unknown),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), *want, "{path}");
        }
    }

    #[test]
    fn query_strings() {
        let q = Query("tag=a&tag=b&n=10&artifactType=application%2Fx%2Bjson&raw=a+b&empty");
        assert_eq!(q.all("tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(q.get("n").as_deref(), Some("10"));
        assert_eq!(q.get("artifactType").as_deref(), Some("application/x+json"));
        assert_eq!(q.get("raw").as_deref(), Some("a+b"));
        assert_eq!(q.get("empty").as_deref(), Some(""));
        assert_eq!(q.get("missing"), None);
        assert_eq!(Query("").get("n"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("sha256%3Aab"), "sha256:ab");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "%ff"); // not UTF-8: unchanged
        assert_eq!(percent_decode("plain"), "plain");
    }
}
