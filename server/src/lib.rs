//! berth's HTTP front: the OCI distribution API (spec v1.1 and main) on
//! hyper, over the berth engine.
//!
//! Code map:
//! - [`http`]: the server loop ([`serve`]), request ids, access log,
//!   graceful shutdown, shared response helpers.
//! - `router`: the `/v2/<name>/…` path grammar, query strings, dispatch.
//! - [`errors`]: the one table of OCI error codes, and engine errors → codes.
//! - One file per resource, each endpoint a typed request parsed from the
//!   wire and then applied to the engine: `blobs`, `uploads`, `manifests`
//!   (with `manifest_parse`), `tags`, `referrers`, `catalog`.
//! - [`auth`]: the one authorization entry point every route calls;
//!   [`token_service`]: `/service/token`; [`admin`]: the Harbor-shaped
//!   `/api/v2.0` admin API; [`proxy`]: the external-URL rule, trusted
//!   proxies, CIDRs; `tls`: optional native TLS.
//! - [`limits`]: connection permits, header and body read timeouts (the
//!   request body type every handler reads, [`limits::RequestBody`]).
//! - [`metrics`]: `GET /metrics` (Prometheus text format); `gc_api`:
//!   Harbor's `/api/v2.0/system/gc…` over the engine's online GC.
//! - [`charts`]: the Helm chart repository (Harbor `chartrepo` paths,
//!   ChartMuseum API), its own router, handlers and `index.yaml` cache.
//! - `proxy_cache`: proxy cache projects (pull-through from an upstream
//!   registry), over `upstream`, berth's client of other registries.
//!
//! Architecture Invariant: handlers call the engine's public API only; the
//! server never builds index keys or blob paths.
//!
//! Architecture Invariant: nothing that can fsync or wait runs on an async
//! worker. Engine writes, blob reads (which may touch a GC mark), upload
//! I/O and listings (catalog, tags, referrers: index scans, each bounded
//! per request) run on the blocking pool; a blob body still arriving from
//! the bucket waits asynchronously. Index point reads (manifest GET/HEAD,
//! upload status) run inline.

pub mod admin;
pub mod auth;
pub mod config;
pub mod errors;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod token_service;

mod accounts_api;
mod artifacts_api;
mod audit;
mod blobs;
mod body;
mod catalog;
pub mod charts;
mod console;
mod cron_clock;
mod cursor;
mod gc_api;
mod immutable_api;
pub mod ldap;
mod ldap_api;
mod manifest_parse;
mod manifests;
mod proxy_cache;
mod pulls;
mod quotas_api;
mod referrers;
mod registries_api;
mod replication;
mod retention_api;
mod router;
pub mod sendfile;
mod tags;
mod time;
mod tls;
mod uploads;
mod upstream;
mod webhooks;

pub use config::{Config, ConfigError, ServeArgs};
pub use http::{serve, ServeError};
