//! OCI content digests: parsing, formatting and hashing.
//!
//! A digest is `algorithm ":" encoded`, per the OCI image-spec
//! (`descriptor.md`, "Digests"):
//!
//! ```text
//! digest                ::= algorithm ":" encoded
//! algorithm             ::= algorithm-component (algorithm-separator algorithm-component)*
//! algorithm-component   ::= [a-z0-9]+
//! algorithm-separator   ::= [+._-]
//! encoded               ::= [a-zA-Z0-9=_-]+
//! ```
//!
//! Parsing is two-stage. A string that does not match the grammar is
//! [`DigestError::Malformed`]. A string that matches the grammar but names an
//! algorithm berth does not implement is [`DigestError::Unsupported`] (the OCI
//! distribution spec distinguishes the two: `DIGEST_INVALID` vs. an
//! unsupported-algorithm error). For the registered algorithms berth
//! implements — sha256 (canonical), sha512 and blake3 — the encoded part must
//! be lowercase hex of exactly [`Algorithm::hex_len`] characters.
//!
//! A [`Digest`] value is therefore always well-formed and of a supported
//! algorithm; code holding one never re-validates it. Its canonical string is
//! stored once, so [`Digest::as_str`] and [`Digest::hex`] are free.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::SerializableState;
use sha2::Digest as _;

/// Longest input quoted verbatim in a [`DigestError`]; longer inputs are cut
/// (client-supplied strings end up in logs and error bodies).
const MAX_QUOTED_INPUT: usize = 200;

/// A digest algorithm berth implements.
///
/// Ordering and hashing are by variant; the variant order is not persisted
/// anywhere (persisted forms use [`Algorithm::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the canonical OCI algorithm.
    Sha256,
    /// SHA-512.
    Sha512,
    /// BLAKE3 with 256-bit output (registered on OCI image-spec main).
    Blake3,
}

impl Algorithm {
    /// Every supported algorithm, canonical (sha256) first.
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3];

    /// The algorithm's name as it appears in digests: `sha256`, `sha512`, `blake3`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Blake3 => "blake3",
        }
    }

    /// Length of the hex-encoded digest: 64 for sha256 and blake3, 128 for sha512.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 | Algorithm::Blake3 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Parses an algorithm name.
    ///
    /// A name that violates the OCI algorithm grammar is
    /// [`DigestError::Malformed`]; a well-formed name berth does not implement
    /// (e.g. `sha384`, `foo+bar`) is [`DigestError::Unsupported`].
    pub fn parse(name: &str) -> Result<Algorithm, DigestError> {
        if let Err(reason) = check_algorithm_grammar(name) {
            return Err(DigestError::malformed(name, reason));
        }
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| DigestError::Unsupported {
                algorithm: quote(name),
            })
    }

    /// A fresh incremental hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        Hasher::new(self)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::parse(s)
    }
}

/// Serialized (serde) by name: `"sha256"`, `"sha512"`, `"blake3"` (the
/// index records algorithms this way).
impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Algorithm::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// A validated content digest such as `sha256:e3b0c442…b855`.
///
/// Invariant: `repr` is `"<algorithm.name()>:<hex>"` where `hex` is lowercase
/// hex of length `algorithm.hex_len()`. Equality, ordering and hashing follow
/// the canonical string. Serialized (serde) as that string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    repr: String,
    algorithm: Algorithm,
}

impl Digest {
    /// Parses a digest string (see the module docs for the grammar).
    ///
    /// Errors: [`DigestError::Malformed`] if `input` violates the OCI grammar,
    /// or is a supported algorithm whose encoded part is not lowercase hex of
    /// the right length; [`DigestError::Unsupported`] if it is well-formed but
    /// names an algorithm berth does not implement.
    pub fn parse(input: &str) -> Result<Digest, DigestError> {
        let Some((alg, encoded)) = input.split_once(':') else {
            return Err(DigestError::malformed(
                input,
                "missing ':' between algorithm and encoded part",
            ));
        };
        if let Err(reason) = check_algorithm_grammar(alg) {
            return Err(DigestError::malformed(input, reason));
        }
        if encoded.is_empty() {
            return Err(DigestError::malformed(input, "empty encoded part"));
        }
        if !encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
        {
            return Err(DigestError::malformed(
                input,
                "encoded part has a character outside [a-zA-Z0-9=_-]",
            ));
        }
        let algorithm = Algorithm::parse(alg)?;
        Digest::from_parts(algorithm, encoded)
    }

    /// Builds a digest from an algorithm and its hex encoding.
    ///
    /// Errors with [`DigestError::Malformed`] unless `hex` is lowercase hex of
    /// exactly `algorithm.hex_len()` characters.
    pub fn from_parts(algorithm: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        let reason = if hex.len() != algorithm.hex_len() {
            Some(match algorithm {
                Algorithm::Sha256 => "sha256 digest must have 64 hex characters",
                Algorithm::Sha512 => "sha512 digest must have 128 hex characters",
                Algorithm::Blake3 => "blake3 digest must have 64 hex characters",
            })
        } else if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Some("encoded part must be lowercase hex [0-9a-f]")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(DigestError::malformed(
                &format!("{}:{hex}", algorithm.name()),
                reason,
            ));
        }
        Ok(Digest::from_valid_hex(algorithm, hex))
    }

    /// The digest of `data` under `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(data);
        hasher.finalize()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded part: lowercase hex, `algorithm().hex_len()` characters.
    pub fn hex(&self) -> &str {
        &self.repr[self.algorithm.name().len() + 1..]
    }

    /// The canonical string form, `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.repr
    }

    /// Caller guarantees `hex` is valid for `algorithm`.
    fn from_valid_hex(algorithm: Algorithm, hex: &str) -> Digest {
        let name = algorithm.name();
        let mut repr = String::with_capacity(name.len() + 1 + hex.len());
        repr.push_str(name);
        repr.push(':');
        repr.push_str(hex);
        Digest { repr, algorithm }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repr)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repr)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.repr)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Digest;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an OCI digest string such as \"sha256:<64 hex>\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Digest, E> {
                Digest::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

/// An incremental hasher producing a [`Digest`].
///
/// Cloning copies the running state (useful to peek at a digest mid-stream).
/// blake3's state is boxed because it is ~2 KiB, which would bloat every
/// `Hasher` value.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 (sha2 selects SHA-NI / AVX2 / NEON at runtime).
    Sha256(sha2::Sha256),
    /// SHA-512.
    Sha512(sha2::Sha512),
    /// BLAKE3 (SIMD selected at runtime).
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Algorithm::Blake3 => Hasher::Blake3(Box::default()),
        }
    }

    /// Feeds `data` into the hash.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// Consumes the hasher and returns the digest of everything fed to it.
    pub fn finalize(self) -> Digest {
        let algorithm = self.algorithm();
        let hex = match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
            Hasher::Blake3(h) => hex::encode(h.finalize().as_bytes()),
        };
        Digest::from_valid_hex(algorithm, &hex)
    }

    /// The running state, to go on with [`Hasher::resume`] in another
    /// process (upload sessions that move between cluster nodes). `None`
    /// for BLAKE3, whose crate exposes no state: such a session re-hashes
    /// its prefix instead.
    pub fn state(&self) -> Option<Vec<u8>> {
        match self {
            Hasher::Sha256(h) => Some(h.serialize().to_vec()),
            Hasher::Sha512(h) => Some(h.serialize().to_vec()),
            Hasher::Blake3(_) => None,
        }
    }

    /// The hasher whose [`Hasher::state`] was `state`; `None` if `state`
    /// is not one of `algorithm`'s.
    pub fn resume(algorithm: Algorithm, state: &[u8]) -> Option<Hasher> {
        match algorithm {
            Algorithm::Sha256 => sha2::Sha256::deserialize(state.try_into().ok()?)
                .ok()
                .map(Hasher::Sha256),
            Algorithm::Sha512 => sha2::Sha512::deserialize(state.try_into().ok()?)
                .ok()
                .map(Hasher::Sha512),
            Algorithm::Blake3 => None,
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
            Hasher::Blake3(_) => Algorithm::Blake3,
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.algorithm().name())
    }
}

/// Why a digest or algorithm string was rejected.
///
/// Inputs longer than 200 characters are cut (and marked as such) before they
/// are stored here, since they come from clients and end up in logs.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The string does not match the OCI digest grammar, or the encoded part
    /// is invalid for its (supported) algorithm.
    #[error("malformed digest {input:?}: {reason}")]
    Malformed {
        /// The offending input (possibly cut, see the type docs).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The string is well-formed but names an algorithm berth does not implement.
    #[error("unsupported digest algorithm {algorithm:?} (supported: sha256, sha512, blake3)")]
    Unsupported {
        /// The algorithm name (possibly cut, see the type docs).
        algorithm: String,
    },
}

impl DigestError {
    fn malformed(input: &str, reason: &'static str) -> DigestError {
        DigestError::Malformed {
            input: quote(input),
            reason,
        }
    }
}

/// `input`, cut to [`MAX_QUOTED_INPUT`] characters with a marker if longer.
fn quote(input: &str) -> String {
    match input.char_indices().nth(MAX_QUOTED_INPUT) {
        None => input.to_owned(),
        Some((cut, _)) => format!("{}…({} bytes total)", &input[..cut], input.len()),
    }
}

/// Checks `algorithm-component (algorithm-separator algorithm-component)*`.
fn check_algorithm_grammar(alg: &str) -> Result<(), &'static str> {
    if alg.is_empty() {
        return Err("empty algorithm");
    }
    let mut prev_separator = true; // the start behaves like a separator
    for b in alg.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => prev_separator = false,
            b'+' | b'.' | b'_' | b'-' => {
                if prev_separator {
                    return Err("algorithm separator [+._-] must sit between [a-z0-9] components");
                }
                prev_separator = true;
            }
            _ => return Err("algorithm has a character outside [a-z0-9+._-]"),
        }
    }
    if prev_separator {
        return Err("algorithm separator [+._-] must sit between [a-z0-9] components");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const E3B0: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[derive(Debug)]
    enum Expect {
        Ok,
        Malformed,
        Unsupported,
    }

    #[test]
    fn parse_table() {
        let sha512_hex = "a".repeat(128);
        let cases: Vec<(String, Expect)> = vec![
            (format!("sha256:{E3B0}"), Expect::Ok),
            (format!("sha512:{sha512_hex}"), Expect::Ok),
            (format!("blake3:{E3B0}"), Expect::Ok),
            // Registered algorithms: lowercase hex of exact length only.
            (format!("sha256:{}", E3B0.to_uppercase()), Expect::Malformed),
            (format!("sha256:{}", &E3B0[..63]), Expect::Malformed),
            (format!("sha256:{E3B0}0"), Expect::Malformed),
            (format!("sha512:{E3B0}"), Expect::Malformed),
            (format!("blake3:{sha512_hex}"), Expect::Malformed),
            (format!("sha256:{}g", &E3B0[..63]), Expect::Malformed),
            // Grammar violations.
            (String::new(), Expect::Malformed),
            (":".into(), Expect::Malformed),
            (E3B0.into(), Expect::Malformed),
            (format!(":{E3B0}"), Expect::Malformed),
            ("sha256:".into(), Expect::Malformed),
            (format!("SHA256:{E3B0}"), Expect::Malformed),
            (format!("sha 256:{E3B0}"), Expect::Malformed),
            (format!("sha256::{E3B0}"), Expect::Malformed),
            (format!("sha256:{E3B0}:"), Expect::Malformed),
            (format!("+sha256:{E3B0}"), Expect::Malformed),
            (format!("sha256+:{E3B0}"), Expect::Malformed),
            (format!("foo++bar:{E3B0}"), Expect::Malformed),
            ("foo+bar:ab!c".into(), Expect::Malformed),
            ("foo+bar:abc ".into(), Expect::Malformed),
            // Well-formed, unregistered.
            ("foo+bar:abc".into(), Expect::Unsupported),
            ("sha384:abc".into(), Expect::Unsupported),
            (
                "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8".into(),
                Expect::Unsupported,
            ),
            ("foo.bar_baz-1:AbC=_-".into(), Expect::Unsupported),
        ];
        for (input, expect) in &cases {
            let got = Digest::parse(input);
            let ok = matches!(
                (&got, expect),
                (Ok(_), Expect::Ok)
                    | (Err(DigestError::Malformed { .. }), Expect::Malformed)
                    | (Err(DigestError::Unsupported { .. }), Expect::Unsupported)
            );
            assert!(ok, "parse({input:?}): expected {expect:?}, got {got:?}");
            if let Ok(d) = got {
                assert_eq!(d.as_str(), input);
                assert_eq!(d.to_string(), *input);
            }
        }
    }

    #[test]
    fn accessors() {
        let d = Digest::parse(&format!("sha256:{E3B0}")).expect("valid digest");
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex(), E3B0);
        assert_eq!(format!("{d:?}"), format!("sha256:{E3B0}"));
        assert_eq!(
            Digest::from_parts(Algorithm::Sha256, E3B0).expect("valid parts"),
            d
        );
        assert!(Digest::from_parts(Algorithm::Sha512, E3B0).is_err());
        assert_eq!(
            "sha256".parse::<Algorithm>().expect("known"),
            Algorithm::Sha256
        );
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.name()).expect("known"), a);
            assert_eq!(a.hasher().finalize().hex().len(), a.hex_len());
        }
        assert!(matches!(
            Algorithm::parse("sha-256"),
            Err(DigestError::Unsupported { .. })
        ));
        assert!(matches!(
            Algorithm::parse("Sha256"),
            Err(DigestError::Malformed { .. })
        ));
    }

    #[test]
    fn known_vectors() {
        let vectors = [
            (Algorithm::Sha256, "", E3B0),
            (
                Algorithm::Sha256,
                "abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                Algorithm::Sha512,
                "",
                "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
                 47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
            ),
            (
                Algorithm::Sha512,
                "abc",
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
            (
                Algorithm::Blake3,
                "",
                "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            ),
            (
                Algorithm::Blake3,
                "abc",
                "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
            ),
        ];
        for (alg, input, hex) in vectors {
            let want = format!("{}:{hex}", alg.name());
            assert_eq!(
                Digest::of(alg, input.as_bytes()).as_str(),
                want,
                "{alg} of {input:?}"
            );
            // Incremental hashing in pieces gives the same digest.
            let mut h = Hasher::new(alg);
            for b in input.as_bytes() {
                h.update(std::slice::from_ref(b));
            }
            assert_eq!(h.algorithm(), alg);
            assert_eq!(
                h.finalize().as_str(),
                want,
                "{alg} of {input:?} byte by byte"
            );
        }
    }

    #[test]
    fn error_messages_name_and_cut_input() {
        let err = Digest::parse("sha256:XYZ").expect_err("invalid");
        assert!(err.to_string().contains("sha256:XYZ"), "{err}");
        let err = Digest::parse("foo+bar:abc").expect_err("unsupported");
        assert!(err.to_string().contains("foo+bar"), "{err}");

        let long = format!("sha256:{}", "z".repeat(10_000));
        let err = Digest::parse(&long).expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.len() < 400, "message not cut: {} bytes", msg.len());
        assert!(msg.contains("10007 bytes total"), "{msg}");
        // Cutting respects UTF-8 boundaries.
        let err = Digest::parse(&"é".repeat(300)).expect_err("invalid");
        assert!(err.to_string().contains("600 bytes total"), "{err}");
    }

    #[test]
    fn serde_as_string() {
        let d = Digest::of(Algorithm::Sha256, b"");
        let json = serde_json::to_string(&d).expect("serialize");
        assert_eq!(json, format!("\"sha256:{E3B0}\""));
        let back: Digest = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, d);
        let err = serde_json::from_str::<Digest>("\"sha256:nothex\"").expect_err("invalid");
        assert!(err.to_string().contains("sha256:nothex"), "{err}");
    }

    fn any_digest() -> impl Strategy<Value = Digest> {
        proptest::sample::select(Algorithm::ALL.to_vec()).prop_flat_map(|alg| {
            proptest::collection::vec(any::<u8>(), alg.hex_len() / 2).prop_map(move |bytes| {
                Digest::from_parts(alg, &hex::encode(bytes)).expect("generated hex is valid")
            })
        })
    }

    proptest! {
        #[test]
        fn display_parse_roundtrip(d in any_digest()) {
            let s = d.to_string();
            let back = Digest::parse(&s).expect("display output parses");
            prop_assert_eq!(back.algorithm(), d.algorithm());
            prop_assert_eq!(back.hex(), d.hex());
            prop_assert_eq!(back, d);
        }

        /// A hasher stopped anywhere and resumed from its state (as an
        /// upload moving to another node does) gives the digest of the
        /// whole input.
        #[test]
        fn a_resumed_hasher_gives_the_whole_inputs_digest(
            data in proptest::collection::vec(any::<u8>(), 0..700),
            cut in any::<proptest::sample::Index>(),
            alg in proptest::sample::select(vec![Algorithm::Sha256, Algorithm::Sha512]),
        ) {
            let cut = cut.index(data.len() + 1);
            let mut h = Hasher::new(alg);
            h.update(&data[..cut]);
            let state = h.state().expect("sha2 state serializes");
            let mut resumed = Hasher::resume(alg, &state).expect("state resumes");
            resumed.update(&data[cut..]);
            prop_assert_eq!(resumed.finalize(), Digest::of(alg, &data));
            prop_assert!(Hasher::resume(alg, &state[1..]).is_none());
        }

        #[test]
        fn parse_accepts_only_canonical(s in "[a-z0-9+._:-]{0,12}[a-fA-F0-9:]{0,130}") {
            // Whatever parses prints back exactly as the input.
            if let Ok(d) = Digest::parse(&s) {
                prop_assert_eq!(d.as_str(), s.as_str());
            }
        }
    }
}
