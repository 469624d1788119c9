//! berth's pure formats: the grammars and encodings the engine stores and
//! the server reads from clients, with no I/O and no storage underneath.
//!
//! - [`digest`]: the OCI digest grammar and the sha256, sha512 and blake3
//!   hashers.
//! - [`names`]: repository names, tags and manifest references.
//! - [`pattern`]: Harbor's repository and tag patterns (`**`, `*`, `?`,
//!   `{a,b}`), matched in time bounded by the pattern and the name.
//! - [`token`]: bearer tokens (Ed25519 JWTs): signing and verification.
//!
//! The engine re-exports all of it unchanged (`berth_engine::Digest`,
//! `berth_engine::token`, …). It is a crate of its own so that the fuzz
//! targets (`server/fuzz`) build these parsers without RocksDB.
//!
//! Architecture Invariant: nothing here does I/O or depends on the engine;
//! every parser takes bytes or a string and returns a typed value or an
//! error, never a panic.

pub mod digest;
pub mod names;
pub mod pattern;
pub mod token;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use names::{NameError, Reference, RepoName, Tag, MAX_REPO_NAME_LEN};
