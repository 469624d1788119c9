//! The standing attack suite: every finding of the security review,
//! reproduced as an attacker with an account would try it, against the real
//! `berth` binary (started through `berth_testkit::server::TestServer`) with
//! auth on. Each module is one family of attacks; each test fails on the
//! release that had the finding and passes once it is prevented.
//!
//! The threat model and how each attack is prevented by design:
//! `docs/security.md`.
