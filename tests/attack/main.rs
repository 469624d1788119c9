//! The standing attack suite: every finding of the security review,
//! reproduced as an attacker with an account would try it, against the real
//! `berth` binary (started through `berth_testkit::server::TestServer`) with
//! auth on. Each module is one family of attacks; each test fails on the
//! release that had the finding and passes once it is prevented.
//!
//! The threat model and how each attack is prevented by design:
//! `docs/security.md`.

mod blob_bytes;
mod exhaustion;
mod limits;
mod parsers;
mod refcount;
mod routes;
mod secrets;
mod tokens;
mod upload_sessions;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The `Authorization` value of Basic credentials `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}
