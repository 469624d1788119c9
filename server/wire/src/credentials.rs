//! The `Authorization` header: `Basic base64(name:secret)` (RFC 7617) or
//! `Bearer <token>` (RFC 6750). Schemes are case-insensitive; anything else,
//! a value that is not visible ASCII, Basic credentials that are not base64
//! of UTF-8 with a `:`, is [`MalformedCredentials`] (the server answers
//! `401` with its challenge). A bearer token is returned as sent; verifying
//! it is `berth_formats::token`'s.

/// Credentials as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No `Authorization` header.
    None,
    /// `Basic`: the name before the first `:`, the secret after it (a
    /// secret may contain `:`).
    Basic { name: String, secret: String },
    /// `Bearer`: the token, trimmed.
    Bearer(String),
}

/// An `Authorization` header that is not Basic or Bearer credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed Authorization header")]
pub struct MalformedCredentials;

impl Credentials {
    /// Parses the `Authorization` header's value (`None`: no header).
    pub fn parse(value: Option<&[u8]>) -> Result<Credentials, MalformedCredentials> {
        let Some(v) = value else {
            return Ok(Credentials::None);
        };
        // What `HeaderValue::to_str` accepts: visible ASCII and tabs.
        if !v.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
            return Err(MalformedCredentials);
        }
        let v = std::str::from_utf8(v)
            .map_err(|_| MalformedCredentials)?
            .trim();
        let (scheme, rest) = v.split_once(' ').ok_or(MalformedCredentials)?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Credentials::Bearer(rest.to_owned()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::engine::general_purpose::STANDARD;
            use base64::Engine as _;
            let raw = STANDARD.decode(rest).map_err(|_| MalformedCredentials)?;
            let s = String::from_utf8(raw).map_err(|_| MalformedCredentials)?;
            let (name, secret) = s.split_once(':').ok_or(MalformedCredentials)?;
            return Ok(Credentials::Basic {
                name: name.to_owned(),
                secret: secret.to_owned(),
            });
        }
        Err(MalformedCredentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> Result<Credentials, MalformedCredentials> {
        Credentials::parse(Some(v.as_bytes()))
    }

    #[test]
    fn schemes() {
        assert_eq!(Credentials::parse(None), Ok(Credentials::None));
        // "alice:s:e:c" in base64.
        assert_eq!(
            p("Basic YWxpY2U6czplOmM="),
            Ok(Credentials::Basic {
                name: "alice".into(),
                secret: "s:e:c".into()
            })
        );
        assert_eq!(p("basic   YWxpY2U6czplOmM=  "), p("Basic YWxpY2U6czplOmM="));
        assert_eq!(p("Bearer a.b.c"), Ok(Credentials::Bearer("a.b.c".into())));
        assert_eq!(p("BEARER  a.b.c "), Ok(Credentials::Bearer("a.b.c".into())));
        for bad in [
            "",
            "Basic",
            "Basic !!!",
            "Basic YWxpY2U=", // no ':'
            "Basic /w==",     // not UTF-8
            "Digest abc",
            "Bearer\u{7f}x",
        ] {
            assert_eq!(p(bad), Err(MalformedCredentials), "{bad:?}");
        }
        assert_eq!(
            Credentials::parse(Some(b"Bearer \xff")),
            Err(MalformedCredentials)
        );
    }
}
