//! Bearer tokens: JWTs signed with Ed25519 (`alg: EdDSA`), as handed out by
//! berth's Docker token service and checked on every authorized request.
//!
//! Wire form: `base64url(header) . base64url(claims) . base64url(signature)`
//! (no padding), where the signature is Ed25519 over the ASCII bytes of
//! `header.claims`:
//!
//! ```text
//! header  {"alg":"EdDSA","typ":"JWT","kid":"<16 hex of sha256(public key)>"}
//! claims  {"iss":"berth-token-service","sub":"alice","aud":"berth-registry",
//!          "exp":1700000300,"nbf":1700000000,"iat":1700000000,"jti":"<32 hex>",
//!          "access":[{"type":"repository","name":"proj/app","actions":["pull","push"]}]}
//! ```
//!
//! Docker clients treat the token as opaque; berth verifies it: the
//! algorithm must be `EdDSA` (never `none`, never another), the signature
//! must verify strictly under berth's key, `iss` and `aud` must be berth's,
//! `exp` must be in the future and `nbf` not (beyond [`CLOCK_LEEWAY_SECS`]).
//!
//! The signing key is 32 random bytes generated on first start and kept in
//! the index (see [`crate::Engine::token_signing_key`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// How far in the future `nbf` may be and still be accepted (clock skew
/// between nodes sharing a key).
pub const CLOCK_LEEWAY_SECS: u64 = 10;

/// An Ed25519 signing key. `Debug` never shows the secret.
#[derive(Clone)]
pub struct TokenKey {
    key: SigningKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey(kid {})", self.key_id())
    }
}

/// One `access` entry: a resource and the actions granted on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// The claims berth puts in (and requires of) a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The account: a user name, a robot name, or empty for anonymous.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
    /// The stamp of the credential the token was issued on (berth's
    /// `Engine::credential_stamp`): a token whose account's credential
    /// changed since, or which was removed or disabled, is refused. Empty
    /// for anonymous.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crd: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// Why a token was refused. Every variant is a refusal: callers answer
/// `401` whatever the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm {0:?} is not EdDSA")]
    Algorithm(String),
    #[error("token signature does not verify")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience {0:?} is not this service")]
    Audience(String),
    #[error("token issuer {0:?} is not this service")]
    Issuer(String),
}

impl TokenKey {
    /// A new random key.
    pub fn generate() -> TokenKey {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the OS random source is available");
        TokenKey::from_seed(&seed)
    }

    /// The key whose 32-byte secret is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> TokenKey {
        TokenKey {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The 32 secret bytes (for durable storage only).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// `kid`: the first 16 hex characters of sha256 of the public key.
    pub fn key_id(&self) -> String {
        let h = Sha256::digest(self.verifying_key().as_bytes());
        hex::encode(&h[..8])
    }

    /// Signs `claims` into the compact JWT form.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            typ: Some("JWT".into()),
            kid: Some(self.key_id()),
        };
        // Serializing these plain structs cannot fail.
        let h = serde_json::to_vec(&header).expect("header serializes");
        let c = serde_json::to_vec(claims).expect("claims serialize");
        let mut out = URL_SAFE_NO_PAD.encode(h);
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(c));
        let sig = self.key.sign(out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        out
    }

    /// Verifies `token` (signature first, then claims) against this key,
    /// the expected issuer and audience, at time `now` (Unix seconds).
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: u64,
    ) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h64), Some(c64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let h = URL_SAFE_NO_PAD
            .decode(h64)
            .map_err(|_| TokenError::Malformed("header is not base64url"))?;
        let header: Header = serde_json::from_slice(&h)
            .map_err(|_| TokenError::Malformed("header is not a JSON object"))?;
        if header.alg != "EdDSA" {
            return Err(TokenError::Algorithm(header.alg));
        }
        let s = URL_SAFE_NO_PAD
            .decode(s64)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let sig = Signature::from_slice(&s).map_err(|_| TokenError::Signature)?;
        let signed_len = h64.len() + 1 + c64.len();
        self.verifying_key()
            .verify_strict(&token.as_bytes()[..signed_len], &sig)
            .map_err(|_| TokenError::Signature)?;
        let c = URL_SAFE_NO_PAD
            .decode(c64)
            .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&c)
            .map_err(|_| TokenError::Malformed("claims are not the expected JSON object"))?;
        if claims.iss != issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        if claims.aud != audience {
            return Err(TokenError::Audience(claims.aud));
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + CLOCK_LEEWAY_SECS {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

/// A random token id: 32 lowercase hex characters.
pub fn new_jti() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source is available");
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "berth-token-service";
    const AUD: &str = "berth-registry";

    fn claims(now: u64) -> Claims {
        Claims {
            iss: ISS.into(),
            sub: "alice".into(),
            aud: AUD.into(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: new_jti(),
            access: vec![Access {
                kind: "repository".into(),
                name: "proj/app".into(),
                actions: vec!["pull".into()],
            }],
            crd: String::new(),
        }
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn round_trip_and_format() {
        let k = TokenKey::from_seed(&[7; 32]);
        let c = claims(1000);
        let t = k.sign(&c);
        assert_eq!(t.split('.').count(), 3);
        assert!(!t.contains('='), "no padding: {t}");
        let head = URL_SAFE_NO_PAD
            .decode(t.split('.').next().unwrap())
            .unwrap();
        let head: serde_json::Value = serde_json::from_slice(&head).unwrap();
        assert_eq!(head["alg"], "EdDSA");
        assert_eq!(head["kid"], k.key_id());
        assert_eq!(k.verify(&t, ISS, AUD, 1000).unwrap(), c);
        assert_eq!(k.key_id().len(), 16);
        assert_eq!(TokenKey::from_seed(&k.seed()).key_id(), k.key_id());
        assert!(!format!("{k:?}").contains(&hex::encode(k.seed())));
    }

    #[test]
    fn refusals() {
        let k = TokenKey::from_seed(&[7; 32]);
        let other = TokenKey::from_seed(&[8; 32]);
        let now = 1000;
        let t = k.sign(&claims(now));
        // Another key.
        assert_eq!(other.verify(&t, ISS, AUD, now), Err(TokenError::Signature));
        // Expiry and not-before.
        assert_eq!(k.verify(&t, ISS, AUD, now + 300), Err(TokenError::Expired));
        let mut early = claims(now);
        early.nbf = now + CLOCK_LEEWAY_SECS + 1;
        assert_eq!(
            k.verify(&k.sign(&early), ISS, AUD, now),
            Err(TokenError::NotYetValid)
        );
        // Audience and issuer.
        assert!(matches!(
            k.verify(&t, ISS, "other", now),
            Err(TokenError::Audience(_))
        ));
        assert!(matches!(
            k.verify(&t, "other", AUD, now),
            Err(TokenError::Issuer(_))
        ));
        // Tampered claims keep the signature of the original.
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = serde_json::to_value(claims(now)).unwrap();
        c["access"][0]["actions"] = serde_json::json!(["pull", "push"]);
        let tampered = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
        assert_eq!(
            k.verify(&tampered, ISS, AUD, now),
            Err(TokenError::Signature)
        );
        // alg none, and an HS256 header.
        for alg in ["none", "HS256"] {
            let h = b64(&serde_json::json!({"alg": alg, "typ": "JWT"}));
            let forged = format!("{h}.{}.{}", parts[1], parts[2]);
            assert_eq!(
                k.verify(&forged, ISS, AUD, now),
                Err(TokenError::Algorithm(alg.into()))
            );
        }
        // Garbage.
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", &format!("{}..", parts[0])] {
            assert!(k.verify(bad, ISS, AUD, now).is_err(), "{bad}");
        }
    }
}
