//! Sealed listing cursors.
//!
//! A listing filtered by permission (the catalog) reads a bounded number of
//! index keys per request, so a page can end on a name the caller may not
//! see. The next page must start there, but the name must not reach the
//! caller. So that position travels in the `Link` as a sealed cursor:
//! ChaCha20-Poly1305 (ring) under a key derived from the registry's token
//! signing secret, a random nonce per cursor, the listing's name as
//! associated data. The caller learns nothing from it and cannot forge one;
//! it survives restarts (the secret is in the index). A cursor only moves
//! where a listing resumes: what it returns is still filtered for whoever
//! presents it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

/// The key listing cursors are sealed with. Owned by `App`; immutable.
pub struct Cursors {
    key: LessSafeKey,
}

/// Longest cursor accepted (a sealed position of a name of at most 255
/// bytes fits well within it).
const MAX_CURSOR: usize = 1024;

impl Cursors {
    /// Cursors sealed under a key derived from `secret`.
    pub fn new(secret: &[u8; 32]) -> Cursors {
        let derived = blake3::derive_key("berth 2026-12 listing cursor v1", secret);
        let key = UnboundKey::new(&CHACHA20_POLY1305, &derived)
            .expect("a 32-byte key is a valid ChaCha20-Poly1305 key");
        Cursors {
            key: LessSafeKey::new(key),
        }
    }

    /// `position` sealed for `listing` (URL-safe base64, no padding).
    pub fn seal(&self, listing: &str, position: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        // Without the OS random source nothing works; a fixed nonce would
        // still hide the position only if never reused, so refuse instead.
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let mut sealed = position.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(listing.as_bytes()),
                &mut sealed,
            )
            .expect("sealing a short cursor cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The position sealed in `cursor` for `listing`, if this registry
    /// sealed it.
    pub fn open(&self, listing: &str, cursor: &str) -> Option<String> {
        if cursor.len() > MAX_CURSOR {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(listing.as_bytes()), &mut sealed)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_hide_and_refuse_forgeries() {
        let c = Cursors::new(&[7; 32]);
        let sealed = c.seal("catalog", "p:secret-project");
        assert!(!sealed.contains("secret"));
        assert_eq!(
            c.open("catalog", &sealed).as_deref(),
            Some("p:secret-project")
        );
        assert_ne!(
            c.seal("catalog", "p:x"),
            c.seal("catalog", "p:x"),
            "fresh nonce"
        );
        assert_eq!(c.open("tags", &sealed), None, "bound to its listing");
        assert_eq!(Cursors::new(&[8; 32]).open("catalog", &sealed), None);
        let mut forged = sealed.into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(c.open("catalog", &String::from_utf8(forged).unwrap()), None);
        assert_eq!(c.open("catalog", "not base64!"), None);
        assert_eq!(c.open("catalog", ""), None);
    }
}
