//! berth's wire parsers: every parser of the HTTP front that reads a
//! client's bytes, as pure functions from bytes or strings to typed values.
//!
//! - [`path`]: the OCI path grammar (`/v2/<name>/…`) and query strings.
//! - [`range`]: `Range` (blob GETs) and `Content-Range` (upload chunks).
//! - [`manifest`]: manifest and index JSON with its `Content-Type`.
//! - [`credentials`]: the `Authorization` header (Basic, Bearer).
//! - [`charts`]: chart repository paths, multipart upload forms, chart
//!   archives (gzip, tar, `Chart.yaml`) and provenance files.
//! - [`harbor`]: the Harbor-shaped API's JSON request bodies.
//! - [`token_request`]: the token service's form bodies and scopes.
//! - [`pattern`]: Harbor's replication filter patterns (`**`, `*`, `?`,
//!   `{a,b}`), re-exported from `berth_formats`.
//! - [`challenge`]: what other registries answer berth as a client
//!   (`WWW-Authenticate`, `Link`), for `berthctl sync` and the proxy cache.
//!
//! Digests, names and bearer tokens are `berth_formats`'. The server
//! (`berth-server`) re-exports these from the modules that used to hold
//! them and turns their errors into its wire errors; this crate has no
//! HTTP stack and no engine, so the fuzz targets (`server/fuzz`) build it
//! without RocksDB.
//!
//! Architecture Invariant: nothing here does I/O, depends on the engine or
//! on hyper, or panics on any input; sizes and counts computed from input
//! are checked or bounded.

pub mod challenge;
pub mod charts;
pub mod credentials;
pub mod harbor;
pub mod ldap;
pub mod manifest;
pub mod path;
pub use berth_formats::pattern;
pub mod range;
pub mod token_request;
