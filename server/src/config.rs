//! Server configuration: flags and environment, an optional JSON file, and
//! defaults, in that order of precedence.
//!
//! The file (`--config FILE`, env `BERTH_CONFIG`) is a JSON object with any
//! of these keys:
//!
//! ```json
//! {"listen": "0.0.0.0:5000", "data_dir": "/var/lib/berth", "read_only": false,
//!  "delete_enabled": true, "upload_ttl_seconds": 86400, "max_uploads_per_user": 256,
//!  "storage_backend": "s3", "s3_endpoint": "http://rgw:7480", "s3_region": "default",
//!  "s3_bucket": "registry", "s3_access_key": "AK", "s3_secret_key": "SK",
//!  "s3_root": "berth", "s3_path_style": true, "cache_max_bytes": 10737418240,
//!  "database_url": "postgres://berth:…@db:5432/berth", "database_ca_file": "/etc/berth/db-ca.pem",
//!  "auth_enabled": true, "admin_password": "…", "external_url": "https://reg.example.com",
//!  "trusted_proxies": ["10.0.0.0/8"], "token_service": "berth-registry",
//!  "token_ttl_seconds": 300, "self_registration": false, "project_creation": "everyone",
//!  "max_failed_logins": 10, "tls_cert": "/etc/berth/cert.pem", "tls_key": "/etc/berth/key.pem",
//!  "gc_interval_seconds": 3600, "gc_grace_seconds": 3600, "audit_retention_days": 90,
//!  "chart_allow_overwrite": false, "body_read_timeout_seconds": 60,
//!  "header_read_timeout_seconds": 30, "max_connections": 4096, "idle_timeout_seconds": 60,
//!  "tls_handshake_timeout_seconds": 10, "max_members_per_project": 1000,
//!  "max_robots_per_project": 1000, "proxy_revalidate_seconds": 60,
//!  "auth_mode": "ldap_auth", "ldap_url": "ldaps://ldap.example.org", "ldap_base_dn": "ou=people,dc=example,dc=org",
//!  "ldap_search_dn": "cn=berth,dc=example,dc=org", "ldap_search_password": "…",
//!  "ldap_filter": "(objectClass=person)", "ldap_uid": "uid", "ldap_scope": 2, "ldap_timeout": 5,
//!  "ldap_verify_cert": true, "ldap_ca_file": "/etc/berth/ldap-ca.pem", "ldap_starttls": false,
//!  "ldap_group_base_dn": "ou=groups,dc=example,dc=org", "ldap_group_search_filter": "(objectClass=groupOfNames)",
//!  "ldap_group_attribute_name": "cn", "ldap_group_search_scope": 2,
//!  "ldap_group_admin_dn": "cn=admins,ou=groups,dc=example,dc=org", "ldap_group_membership_attribute": "memberof"}
//! ```
//!
//! Storage (`docs/storage.md`): `storage_backend` is `local` (default), `s3`
//! or `tiered`; the last two need `s3_endpoint`, `s3_bucket`,
//! `s3_access_key` and `s3_secret_key` (env `BERTH_STORAGE_BACKEND`,
//! `BERTH_S3_*`, `BERTH_CACHE_MAX_BYTES`). Their names, parsing and
//! defaults are the engine's (`berth_engine::store::settings`, shared with
//! berthctl); this file only adds the flags.
//!
//! Unknown keys are an error (a typo should not silently change nothing).
//! `read_only` is on if any source turns it on. Secrets (`admin_password`)
//! and `ldap_search_password` are kept in a [`Secret`], whose `Debug`
//! never shows them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_engine::store::{Backend, StorageSettings};
use berth_engine::DatabaseConfig;
use clap::builder::BoolishValueParser;
use serde::Deserialize;

use crate::limits::Limits;
use crate::proxy::{parse_external_url, Cidr, ProxyConfig};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
pub const DEFAULT_DATA_DIR: &str = "./berth-data";
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a proxy cache project serves a cached tag before asking its
/// upstream whether the tag moved.
pub const DEFAULT_PROXY_REVALIDATE: Duration = Duration::from_secs(60);
pub const DEFAULT_TOKEN_SERVICE: &str = "berth-registry";
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Longest access-token lifetime: a year.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 86_400;
pub const DEFAULT_MAX_FAILED_LOGINS: u32 = 10;

/// A secret string: `Debug` prints `<redacted>`, so configs can be logged.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Who may create projects through the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProjectCreation {
    /// Every signed-in user (Harbor's default).
    #[default]
    Everyone,
    /// System administrators only.
    #[value(alias = "admin_only")]
    #[serde(alias = "admin_only")]
    Adminonly,
}

/// Accounts and tokens. Off by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    pub enabled: bool,
    /// Creates the `admin` account on first start; required to enable auth
    /// on a data directory without one.
    pub admin_password: Option<Secret>,
    /// The token `aud` and the challenge's `service`.
    pub service: String,
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
    /// Anyone may create a user account through the API.
    pub self_registration: bool,
    pub project_creation: ProjectCreation,
    /// Failed logins per source address per minute before it is refused
    /// (`429`) for the rest of the minute; 0 disables the limit.
    pub max_failed_logins: u32,
    /// Harbor's `ldap_auth` mode: users (but robots and `admin`) sign in
    /// against this directory (see `docs/auth.md`, "LDAP"). `None`: the
    /// local accounts (`db_auth`).
    pub ldap: Option<LdapConfig>,
}

/// Harbor's LDAP search scopes (`ldap_scope`, `ldap_group_search_scope`):
/// 0 base, 1 one level, 2 subtree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LdapScope {
    Base,
    OneLevel,
    Subtree,
}

impl LdapScope {
    fn from_harbor(name: &str, n: u8) -> Result<LdapScope, ConfigError> {
        match n {
            0 => Ok(LdapScope::Base),
            1 => Ok(LdapScope::OneLevel),
            2 => Ok(LdapScope::Subtree),
            _ => Err(ConfigError::Invalid(format!(
                "{name} must be 0 (base), 1 (one level) or 2 (subtree), not {n}"
            ))),
        }
    }
}

/// The LDAP directory of `auth_mode` `ldap_auth`, in Harbor's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// Check the server's certificate (ldaps, StartTLS) [default: true].
    pub verify_cert: bool,
    /// PEM CA certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The DN the user search binds as (empty: an anonymous search).
    pub search_dn: String,
    pub search_password: Secret,
    /// Where users are searched.
    pub base_dn: String,
    /// Extra filter every user entry must match, e.g. `(objectClass=person)`.
    pub filter: String,
    /// The attribute holding the user name [default: uid].
    pub uid: String,
    pub scope: LdapScope,
    /// Bound on connecting and on each LDAP operation.
    pub timeout: Duration,
    /// Groups: searched under this base for entries naming the user in
    /// `member`/`uniqueMember` (empty: no group search).
    pub group_base_dn: String,
    /// Extra filter of the group search, e.g. `(objectClass=groupOfNames)`.
    pub group_search_filter: String,
    /// The attribute holding a group's name [default: cn].
    pub group_attribute_name: String,
    pub group_search_scope: LdapScope,
    /// Members of this group are system administrators (evaluated at each
    /// login).
    pub group_admin_dn: String,
    /// The user-entry attribute listing the user's groups [default: memberof].
    pub group_membership_attribute: String,
}

pub const DEFAULT_LDAP_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            enabled: false,
            admin_password: None,
            service: DEFAULT_TOKEN_SERVICE.to_owned(),
            token_ttl: DEFAULT_TOKEN_TTL,
            self_registration: false,
            project_creation: ProjectCreation::Everyone,
            max_failed_logins: DEFAULT_MAX_FAILED_LOGINS,
            ldap: None,
        }
    }
}

/// Native TLS: PEM certificate chain and private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);
/// How long audit log entries are kept by default (Harbor keeps them until
/// a purge job runs; berth purges by age, `BERTH_AUDIT_RETENTION_DAYS`).
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// Memory budget of the rendered `index.yaml` cache.
pub const DEFAULT_CHART_INDEX_CACHE_BYTES: usize = 256 << 20;

/// Everything `serve` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on, `host:port`.
    pub listen: String,
    /// The engine's data directory.
    pub data_dir: PathBuf,
    /// Serve from a data directory other users of the host may read
    /// (refused otherwise; `BERTH_ALLOW_OPEN_DATA_DIR`).
    pub allow_open_data_dir: bool,
    /// Refuse every write with `405 UNSUPPORTED`.
    pub read_only: bool,
    /// Allow deleting manifests, tags and blobs (else `405 UNSUPPORTED`).
    pub delete_enabled: bool,
    /// Upload sessions untouched this long are expired.
    pub upload_ttl: Duration,
    /// A proxy cache project's cached tag is checked against its upstream
    /// when it was last checked this long ago (zero: at every pull).
    pub proxy_revalidate: Duration,
    /// Open upload sessions one account (or, unauthenticated, one
    /// repository) may hold; one more is `429 TOOMANYREQUESTS`.
    pub max_uploads_per_user: u64,
    /// Memberships and robots one project may hold; one more is
    /// `403 DENIED` (`docs/security.md`).
    pub max_members_per_project: u64,
    pub max_robots_per_project: u64,
    /// Where blobs live: local disk, an S3 bucket with a local read cache,
    /// or both (tiered).
    pub storage: Backend,
    /// Cluster mode: the PostgreSQL database holding the index of record
    /// (`docs/cluster.md`); `None` keeps it in the data directory.
    pub database: Option<DatabaseConfig>,
    /// External URL and trusted proxies (see `proxy.rs`).
    pub proxy: ProxyConfig,
    pub auth: AuthConfig,
    pub tls: Option<TlsConfig>,
    /// Online GC runs this often (`None`, from 0: off).
    pub gc_interval: Option<Duration>,
    /// Unreferenced blobs touched within this window survive GC.
    pub gc_grace: Duration,
    /// Audit log entries older than this are purged (`None`: kept).
    pub audit_retention: Option<Duration>,
    /// Webhooks may go to loopback and private addresses.
    pub webhook_allow_private: bool,
    /// Re-uploading an existing chart version through the chart API
    /// replaces it (else `409` unless the request says `?force`).
    pub chart_allow_overwrite: bool,
    /// Bounds on uploaded chart archives (not configurable from the
    /// command line; tests lower them).
    pub chart_limits: crate::charts::Limits,
    /// Memory budget of the rendered `index.yaml` cache.
    pub chart_index_cache_bytes: usize,
    /// Connection permits, header and body read timeouts (`limits.rs`).
    pub limits: Limits,
}

impl Config {
    /// Defaults with `data_dir`: what tests start from.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: DEFAULT_LISTEN.to_owned(),
            data_dir: data_dir.into(),
            allow_open_data_dir: false,
            read_only: false,
            delete_enabled: true,
            upload_ttl: DEFAULT_UPLOAD_TTL,
            proxy_revalidate: DEFAULT_PROXY_REVALIDATE,
            max_uploads_per_user: berth_engine::DEFAULT_MAX_UPLOADS_PER_OWNER,
            max_members_per_project: berth_engine::DEFAULT_MAX_PER_PROJECT,
            max_robots_per_project: berth_engine::DEFAULT_MAX_PER_PROJECT,
            storage: Backend::local(),
            database: None,
            proxy: ProxyConfig::default(),
            auth: AuthConfig::default(),
            tls: None,
            gc_interval: None,
            gc_grace: DEFAULT_GC_GRACE,
            audit_retention: Some(DEFAULT_AUDIT_RETENTION),
            webhook_allow_private: false,
            chart_allow_overwrite: false,
            chart_limits: crate::charts::Limits::default(),
            chart_index_cache_bytes: DEFAULT_CHART_INDEX_CACHE_BYTES,
            limits: Limits::default(),
        }
    }

    /// Resolves flags, the config file they name, and defaults.
    /// Storage settings come from the flags, the process environment
    /// (`StorageSettings::from_env`) and the file.
    pub fn from_args(args: ServeArgs) -> Result<Config, ConfigError> {
        let env = StorageSettings::from_env().map_err(ConfigError::Storage)?;
        Config::from_args_and_env(args, env)
    }

    /// [`Config::from_args`] with the storage settings of the environment
    /// given.
    pub fn from_args_and_env(
        args: ServeArgs,
        storage_env: StorageSettings,
    ) -> Result<Config, ConfigError> {
        let (file, file_storage) = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => (FileConfig::default(), StorageSettings::default()),
        };
        let delete_enabled = if args.disable_delete {
            false
        } else {
            args.delete_enabled.or(file.delete_enabled).unwrap_or(true)
        };
        let (storage, database) = storage(&args, storage_env, file_storage)?;
        let limits = limits(&args, &file)?;
        let ldap = ldap(&args, &file)?;
        let gc_interval = args
            .gc_interval_seconds
            .or(file.gc_interval_seconds)
            .filter(|&s| s > 0)
            .map(Duration::from_secs);
        Ok(Config {
            limits,
            storage,
            database,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            allow_open_data_dir: args.allow_open_data_dir.unwrap_or(false),
            read_only: args.read_only || file.read_only.unwrap_or(false),
            delete_enabled,
            upload_ttl: args
                .upload_ttl_seconds
                .or(file.upload_ttl_seconds)
                .map_or(DEFAULT_UPLOAD_TTL, Duration::from_secs),
            proxy_revalidate: args
                .proxy_revalidate_seconds
                .or(file.proxy_revalidate_seconds)
                .map_or(DEFAULT_PROXY_REVALIDATE, Duration::from_secs),
            max_uploads_per_user: args
                .max_uploads_per_user
                .or(file.max_uploads_per_user)
                .unwrap_or(berth_engine::DEFAULT_MAX_UPLOADS_PER_OWNER),
            max_members_per_project: args
                .max_members_per_project
                .or(file.max_members_per_project)
                .unwrap_or(berth_engine::DEFAULT_MAX_PER_PROJECT),
            max_robots_per_project: args
                .max_robots_per_project
                .or(file.max_robots_per_project)
                .unwrap_or(berth_engine::DEFAULT_MAX_PER_PROJECT),
            proxy: {
                let (external_url, external_path) =
                    match args.external_url.or(file.external_url) {
                        Some(u) if !u.trim().is_empty() => {
                            let (origin, path) =
                                parse_external_url(&u).map_err(ConfigError::Invalid)?;
                            (Some(origin), path)
                        }
                        _ => (None, String::new()),
                    };
                ProxyConfig {
                external_url,
                external_path,
                trusted: match args.trusted_proxies {
                    Some(list) => Cidr::parse_list(&list),
                    None => file
                        .trusted_proxies
                        .unwrap_or_default()
                        .iter()
                        .map(|c| Cidr::parse(c))
                        .collect(),
                }
                .map_err(|e| ConfigError::Invalid(format!("trusted proxies: {e}")))?,
                }
            },
            auth: AuthConfig {
                enabled: args.auth_enabled.or(file.auth_enabled).unwrap_or(false),
                admin_password: args
                    .admin_password
                    .or(file.admin_password)
                    .filter(|p| !p.is_empty())
                    .map(Secret),
                service: args
                    .token_service
                    .or(file.token_service)
                    .unwrap_or_else(|| DEFAULT_TOKEN_SERVICE.to_owned()),
                token_ttl: match args.token_ttl_seconds.or(file.token_ttl_seconds) {
                    None => DEFAULT_TOKEN_TTL,
                    Some(s) if s <= MAX_TOKEN_TTL_SECS => Duration::from_secs(s),
                    // `now + ttl` must stay a time.
                    Some(s) => {
                        return Err(ConfigError::Invalid(format!(
                            "token TTL (BERTH_TOKEN_TTL_SECONDS) must be at most {MAX_TOKEN_TTL_SECS} seconds, not {s}"
                        )))
                    }
                },
                self_registration: args
                    .self_registration
                    .or(file.self_registration)
                    .unwrap_or(false),
                project_creation: args
                    .project_creation
                    .or(file.project_creation)
                    .unwrap_or_default(),
                max_failed_logins: args
                    .max_failed_logins
                    .or(file.max_failed_logins)
                    .unwrap_or(DEFAULT_MAX_FAILED_LOGINS),
                ldap,
            },
            tls: match (
                args.tls_cert.or(file.tls_cert),
                args.tls_key.or(file.tls_key),
            ) {
                (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Invalid(
                        "TLS needs both a certificate (BERTH_TLS_CERT) and a key (BERTH_TLS_KEY)"
                            .into(),
                    ))
                }
            },
            gc_interval,
            gc_grace: args
                .gc_grace_seconds
                .or(file.gc_grace_seconds)
                .map_or(DEFAULT_GC_GRACE, Duration::from_secs),
            audit_retention: match args.audit_retention_days.or(file.audit_retention_days) {
                None => Some(DEFAULT_AUDIT_RETENTION),
                Some(0) => None,
                Some(days) => Some(Duration::from_secs(days.saturating_mul(86_400))),
            },
            webhook_allow_private: args
                .webhook_allow_private
                .or(file.webhook_allow_private)
                .unwrap_or(false),
            chart_allow_overwrite: args
                .chart_allow_overwrite
                .or(file.chart_allow_overwrite)
                .unwrap_or(false),
            chart_limits: crate::charts::Limits::default(),
            chart_index_cache_bytes: DEFAULT_CHART_INDEX_CACHE_BYTES,
        })
    }
}

/// The LDAP settings of `auth_mode` `ldap_auth` (flags and environment,
/// then the file); `None` for `db_auth`, the default. LDAP settings
/// without `ldap_auth` are an error, as `ldap_auth` without a URL or base DN.
fn ldap(args: &ServeArgs, file: &FileConfig) -> Result<Option<LdapConfig>, ConfigError> {
    let a = &args.ldap;
    let pick = |flag: &Option<String>, key: &Option<String>| -> String {
        flag.clone().or_else(|| key.clone()).unwrap_or_default()
    };
    let mode = pick(&args.auth_mode, &file.auth_mode);
    let url = pick(&a.ldap_url, &file.ldap_url);
    match mode.as_str() {
        "" | "db_auth" if url.is_empty() => return Ok(None),
        "" | "db_auth" => {
            return Err(ConfigError::Invalid(
                "ldap_url is set but auth_mode is not ldap_auth (BERTH_AUTH_MODE=ldap_auth)".into(),
            ))
        }
        "ldap_auth" => {}
        other => {
            return Err(ConfigError::Invalid(format!(
                "auth_mode must be db_auth or ldap_auth, not {other:?}"
            )))
        }
    }
    let starttls = a.ldap_starttls.or(file.ldap_starttls).unwrap_or(false);
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("ldap") => {}
        Some("ldaps") if !starttls => {}
        Some("ldaps") => {
            return Err(ConfigError::Invalid(
                "ldap_starttls upgrades an ldap:// connection; ldaps:// is TLS already".into(),
            ))
        }
        _ => {
            return Err(ConfigError::Invalid(format!(
                "ldap_url (BERTH_LDAP_URL) must be ldap://HOST[:PORT] or ldaps://HOST[:PORT], not {url:?}"
            )))
        }
    }
    let base_dn = pick(&a.ldap_base_dn, &file.ldap_base_dn);
    if base_dn.is_empty() {
        return Err(ConfigError::Invalid(
            "ldap_auth needs ldap_base_dn (BERTH_LDAP_BASE_DN): where users are searched".into(),
        ));
    }
    let or_default = |v: String, d: &str| if v.is_empty() { d.to_owned() } else { v };
    let timeout = match a.ldap_timeout.or(file.ldap_timeout) {
        None => DEFAULT_LDAP_TIMEOUT,
        Some(s) if (1..=MAX_READ_TIMEOUT_SECS).contains(&s) => Duration::from_secs(s),
        Some(s) => {
            return Err(ConfigError::Invalid(format!(
                "ldap_timeout must be 1 to {MAX_READ_TIMEOUT_SECS} seconds, not {s}"
            )))
        }
    };
    Ok(Some(LdapConfig {
        url,
        starttls,
        verify_cert: a.ldap_verify_cert.or(file.ldap_verify_cert).unwrap_or(true),
        ca_file: a.ldap_ca_file.clone().or_else(|| file.ldap_ca_file.clone()),
        search_dn: pick(&a.ldap_search_dn, &file.ldap_search_dn),
        search_password: Secret(pick(&a.ldap_search_password, &file.ldap_search_password)),
        base_dn,
        filter: pick(&a.ldap_filter, &file.ldap_filter),
        uid: or_default(pick(&a.ldap_uid, &file.ldap_uid), "uid"),
        scope: LdapScope::from_harbor("ldap_scope", a.ldap_scope.or(file.ldap_scope).unwrap_or(2))?,
        timeout,
        group_base_dn: pick(&a.ldap_group_base_dn, &file.ldap_group_base_dn),
        group_search_filter: pick(&a.ldap_group_search_filter, &file.ldap_group_search_filter),
        group_attribute_name: or_default(
            pick(
                &a.ldap_group_attribute_name,
                &file.ldap_group_attribute_name,
            ),
            "cn",
        ),
        group_search_scope: LdapScope::from_harbor(
            "ldap_group_search_scope",
            a.ldap_group_search_scope
                .or(file.ldap_group_search_scope)
                .unwrap_or(2),
        )?,
        group_admin_dn: pick(&a.ldap_group_admin_dn, &file.ldap_group_admin_dn),
        group_membership_attribute: or_default(
            pick(
                &a.ldap_group_membership_attribute,
                &file.ldap_group_membership_attribute,
            ),
            "memberof",
        ),
    }))
}

/// Longest header or body read timeout: a day. Timeouts become deadlines
/// (`now + timeout`), which must stay representable.
const MAX_READ_TIMEOUT_SECS: u64 = 86_400;

/// Connection and read bounds from flags/environment, then the file; each
/// must be at least 1, and a timeout at most [`MAX_READ_TIMEOUT_SECS`].
fn limits(args: &ServeArgs, file: &FileConfig) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let bounded = |name: &str, v: Option<u64>, default: u64, max: u64| match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ConfigError::Invalid(format!(
            "{name} must be at least 1 and at most {max}, not {n}"
        ))),
    };
    let timeout = |name: &str, v: Option<u64>, default: Duration| {
        bounded(name, v, default.as_secs(), MAX_READ_TIMEOUT_SECS).map(Duration::from_secs)
    };
    let max_connections = bounded(
        "max connections (BERTH_MAX_CONNECTIONS)",
        args.max_connections.or(file.max_connections),
        d.max_connections as u64,
        u64::MAX,
    )?;
    Ok(Limits {
        body_read_timeout: timeout(
            "body read timeout (BERTH_BODY_READ_TIMEOUT_SECONDS)",
            args.body_read_timeout_seconds
                .or(file.body_read_timeout_seconds),
            d.body_read_timeout,
        )?,
        header_read_timeout: timeout(
            "header read timeout (BERTH_HEADER_READ_TIMEOUT_SECONDS)",
            args.header_read_timeout_seconds
                .or(file.header_read_timeout_seconds),
            d.header_read_timeout,
        )?,
        idle_timeout: timeout(
            "idle timeout (BERTH_IDLE_TIMEOUT_SECONDS)",
            args.idle_timeout_seconds.or(file.idle_timeout_seconds),
            d.idle_timeout,
        )?,
        tls_handshake_timeout: timeout(
            "TLS handshake timeout (BERTH_TLS_HANDSHAKE_TIMEOUT_SECONDS)",
            args.tls_handshake_timeout_seconds
                .or(file.tls_handshake_timeout_seconds),
            d.tls_handshake_timeout,
        )?,
        // tokio's semaphore holds at most usize::MAX >> 3 permits.
        max_connections: usize::try_from(max_connections)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS),
    })
}

/// The storage backend and cluster mode's database: flags, then the
/// environment (read by the engine's settings module, as berthctl does),
/// then the file, then defaults.
fn storage(
    args: &ServeArgs,
    env: StorageSettings,
    file: StorageSettings,
) -> Result<(Backend, Option<DatabaseConfig>), ConfigError> {
    let flags = StorageSettings {
        storage_backend: args.storage_backend.clone(),
        s3_endpoint: args.s3_endpoint.clone(),
        s3_region: args.s3_region.clone(),
        s3_bucket: args.s3_bucket.clone(),
        s3_access_key: args.s3_access_key.clone(),
        s3_secret_key: args.s3_secret_key.clone(),
        s3_root: args.s3_root.clone(),
        s3_path_style: args.s3_path_style,
        s3_multipart_threshold: args.s3_multipart_threshold,
        s3_ca_file: args.s3_ca_file.clone(),
        cache_max_bytes: args.cache_max_bytes,
        database_url: args.database_url.clone(),
        database_ca_file: args.database_ca_file.clone(),
        database_schema: args.database_schema.clone(),
    };
    let settings = flags.or(env).or(file);
    let database = settings.database().map_err(ConfigError::Storage)?;
    let backend = settings.resolve().map_err(ConfigError::Storage)?;
    Ok((backend, database))
}

/// `berth serve` flags.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long, env = "BERTH_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory (index, blobs, uploads) [default: ./berth-data]
    #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve from a data directory (or token key file) that other users of
    /// the host may read; refused otherwise [default: false]
    #[arg(long, env = "BERTH_ALLOW_OPEN_DATA_DIR", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub allow_open_data_dir: Option<bool>,
    /// JSON config file (keys: listen, data_dir, read_only, delete_enabled,
    /// upload_ttl_seconds, gc_interval_seconds, gc_grace_seconds); flags and
    /// environment override it
    /// upload_ttl_seconds, chart_allow_overwrite); flags and environment
    /// override it
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Refuse all writes (405 UNSUPPORTED)
    #[arg(long, env = "BERTH_READ_ONLY")]
    pub read_only: bool,
    /// Allow deleting manifests, tags and blobs [default: true]
    #[arg(long, env = "BERTH_DELETE_ENABLED", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub delete_enabled: Option<bool>,
    /// Same as --delete-enabled false
    #[arg(long, conflicts_with = "delete_enabled")]
    pub disable_delete: bool,
    /// Expire upload sessions untouched for this many seconds [default: 86400]
    #[arg(long, env = "BERTH_UPLOAD_TTL_SECONDS", value_name = "SECONDS")]
    pub upload_ttl_seconds: Option<u64>,
    /// Ask a proxy cache project's upstream whether a cached tag moved
    /// when it was last asked this many seconds ago; 0: at every pull
    /// [default: 60]
    #[arg(long, env = "BERTH_PROXY_REVALIDATE_SECONDS", value_name = "SECONDS")]
    pub proxy_revalidate_seconds: Option<u64>,
    /// Open upload sessions one account (or, unauthenticated, one
    /// repository) may hold at once [default: 256]
    #[arg(long, env = "BERTH_MAX_UPLOADS_PER_USER", value_name = "N")]
    pub max_uploads_per_user: Option<u64>,
    /// Blob storage: local, s3 (bucket + local read cache) or tiered
    /// (local + background copy to the bucket) [default: local]
    /// [env: BERTH_STORAGE_BACKEND]
    #[arg(long, value_name = "BACKEND")]
    pub storage_backend: Option<String>,
    /// S3 endpoint URL, e.g. http://rgw.example:7480
    /// [env: BERTH_S3_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: us-east-1; Ceph RGW accepts any]
    /// [env: BERTH_S3_REGION]
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// S3 bucket (must exist)
    /// [env: BERTH_S3_BUCKET]
    #[arg(long, value_name = "BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 access key
    /// [env: BERTH_S3_ACCESS_KEY]
    #[arg(long, value_name = "KEY")]
    pub s3_access_key: Option<String>,
    /// S3 secret key
    /// [env: BERTH_S3_SECRET_KEY]
    #[arg(long, value_name = "KEY")]
    pub s3_secret_key: Option<String>,
    /// Key prefix ("root directory") of every object in the bucket
    /// [env: BERTH_S3_ROOT]
    #[arg(long, value_name = "PREFIX")]
    pub s3_root: Option<String>,
    /// Path-style S3 requests (false: virtual-hosted style) [default: true]
    /// [env: BERTH_S3_PATH_STYLE]
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub s3_path_style: Option<bool>,
    /// Blobs at least this large are stored with resumable multipart uploads [default: 16 MiB]
    /// [env: BERTH_S3_MULTIPART_THRESHOLD]
    #[arg(long, value_name = "BYTES")]
    pub s3_multipart_threshold: Option<u64>,
    /// PEM file of CA certificates trusted for an https:// S3 endpoint,
    /// besides the system's (a private CA) [env: BERTH_S3_CA_FILE]
    #[arg(long, value_name = "FILE")]
    pub s3_ca_file: Option<PathBuf>,
    /// Local cache budget of the s3 and tiered backends [default: 10 GiB]
    /// [env: BERTH_CACHE_MAX_BYTES]
    #[arg(long, value_name = "BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// Cluster mode: keep the index of record in this PostgreSQL database
    /// (postgres://user:password@host:port/db); needs the s3 backend
    /// [env: BERTH_DATABASE_URL]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// PEM file of CA certificates trusted for the database's TLS
    /// certificate [env: BERTH_DATABASE_CA_FILE]
    #[arg(long, value_name = "FILE")]
    pub database_ca_file: Option<PathBuf>,
    /// Schema of berth's tables in the database [default: berth]
    /// [env: BERTH_DATABASE_SCHEMA]
    #[arg(long, value_name = "NAME")]
    pub database_schema: Option<String>,
    /// Require accounts and tokens (Docker token auth) [default: false]
    #[arg(long, env = "BERTH_AUTH_ENABLED", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub auth_enabled: Option<bool>,
    /// Password of the `admin` account created on first start (prefer the
    /// environment variable to the flag)
    #[arg(
        long,
        env = "BERTH_ADMIN_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub admin_password: Option<String>,
    /// The URL clients use, e.g. https://registry.example.com (token realm,
    /// upload locations); overrides forwarded headers
    #[arg(long, env = "BERTH_EXTERNAL_URL", value_name = "URL")]
    pub external_url: Option<String>,
    /// CIDRs of proxies whose Forwarded/X-Forwarded-* headers are believed,
    /// comma-separated
    #[arg(long, env = "BERTH_TRUSTED_PROXIES", value_name = "CIDRS")]
    pub trusted_proxies: Option<String>,
    /// Token service name (`service` and token `aud`) [default: berth-registry]
    #[arg(long, env = "BERTH_TOKEN_SERVICE", value_name = "NAME")]
    pub token_service: Option<String>,
    /// Lifetime of access tokens in seconds, at most a year [default: 300]
    #[arg(long, env = "BERTH_TOKEN_TTL_SECONDS", value_name = "SECONDS")]
    pub token_ttl_seconds: Option<u64>,
    /// Let anyone create a user account through the API [default: false]
    #[arg(long, env = "BERTH_SELF_REGISTRATION", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub self_registration: Option<bool>,
    /// Who may create projects through the API [default: everyone]
    #[arg(long, env = "BERTH_PROJECT_CREATION", value_name = "WHO")]
    pub project_creation: Option<ProjectCreation>,
    /// Failed logins per source address per minute before refusing it
    /// (0: no limit) [default: 10]
    #[arg(long, env = "BERTH_MAX_FAILED_LOGINS", value_name = "N")]
    pub max_failed_logins: Option<u32>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key)
    #[arg(long, env = "BERTH_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "BERTH_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Run online GC every this many seconds; 0 turns it off [default: 0]
    #[arg(long, env = "BERTH_GC_INTERVAL_SECONDS", value_name = "SECONDS")]
    pub gc_interval_seconds: Option<u64>,
    /// GC keeps unreferenced blobs touched within this many seconds [default: 3600]
    #[arg(long, env = "BERTH_GC_GRACE_SECONDS", value_name = "SECONDS")]
    pub gc_grace_seconds: Option<u64>,
    /// Purge audit log entries older than this many days; 0 keeps them
    /// [default: 90]
    #[arg(long, env = "BERTH_AUDIT_RETENTION_DAYS", value_name = "DAYS")]
    pub audit_retention_days: Option<u64>,
    /// Let webhooks go to loopback, private and link-local addresses
    /// [default: false]
    #[arg(long, env = "BERTH_WEBHOOK_ALLOW_PRIVATE", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub webhook_allow_private: Option<bool>,
    /// Let chart uploads replace an existing chart version (else 409 unless
    /// the request says ?force) [default: false]
    #[arg(long, env = "BERTH_CHART_ALLOW_OVERWRITE", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub chart_allow_overwrite: Option<bool>,
    /// Fail a request whose body sends nothing for this many seconds, and
    /// close its connection [default: 60]
    #[arg(long, env = "BERTH_BODY_READ_TIMEOUT_SECONDS", value_name = "SECONDS")]
    pub body_read_timeout_seconds: Option<u64>,
    /// Close a connection that does not send its first bytes, or an HTTP/1
    /// request head, within this many seconds [default: 30]
    #[arg(
        long,
        env = "BERTH_HEADER_READ_TIMEOUT_SECONDS",
        value_name = "SECONDS"
    )]
    pub header_read_timeout_seconds: Option<u64>,
    /// Serve at most this many connections at once; more wait to be
    /// accepted [default: 4096]
    #[arg(long, env = "BERTH_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u64>,
    /// Close a connection with no request in flight for this many seconds
    /// [default: 60]
    #[arg(long, env = "BERTH_IDLE_TIMEOUT_SECONDS", value_name = "SECONDS")]
    pub idle_timeout_seconds: Option<u64>,
    /// Drop a TLS connection whose handshake has not completed within this
    /// many seconds [default: 10]
    #[arg(
        long,
        env = "BERTH_TLS_HANDSHAKE_TIMEOUT_SECONDS",
        value_name = "SECONDS"
    )]
    pub tls_handshake_timeout_seconds: Option<u64>,
    /// Members one project may hold (users need not exist yet) [default: 1000]
    #[arg(long, env = "BERTH_MAX_MEMBERS_PER_PROJECT", value_name = "N")]
    pub max_members_per_project: Option<u64>,
    /// Robot accounts one project may hold [default: 1000]
    #[arg(long, env = "BERTH_MAX_ROBOTS_PER_PROJECT", value_name = "N")]
    pub max_robots_per_project: Option<u64>,
    /// Where user passwords are checked: db_auth (local accounts) or
    /// ldap_auth (an LDAP directory, the --ldap-* settings) [default: db_auth]
    #[arg(long, env = "BERTH_AUTH_MODE", value_name = "MODE")]
    pub auth_mode: Option<String>,
    #[command(flatten)]
    pub ldap: LdapArgs,
}

/// The LDAP flags of `berth serve` (Harbor's `ldap_*` settings).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct LdapArgs {
    /// LDAP server, ldap://HOST[:PORT] or ldaps://HOST[:PORT]
    #[arg(long, env = "BERTH_LDAP_URL", value_name = "URL")]
    pub ldap_url: Option<String>,
    /// Upgrade an ldap:// connection with StartTLS [default: false]
    #[arg(long, env = "BERTH_LDAP_STARTTLS", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub ldap_starttls: Option<bool>,
    /// Check the LDAP server's certificate [default: true]
    #[arg(long, env = "BERTH_LDAP_VERIFY_CERT", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub ldap_verify_cert: Option<bool>,
    /// PEM file of CA certificates trusted for the LDAP server, besides the system's
    #[arg(long, env = "BERTH_LDAP_CA_FILE", value_name = "FILE")]
    pub ldap_ca_file: Option<PathBuf>,
    /// DN the user search binds as (empty: anonymous search)
    #[arg(long, env = "BERTH_LDAP_SEARCH_DN", value_name = "DN")]
    pub ldap_search_dn: Option<String>,
    /// Password of --ldap-search-dn (prefer the environment variable)
    #[arg(
        long,
        env = "BERTH_LDAP_SEARCH_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub ldap_search_password: Option<String>,
    /// Base DN of the user search
    #[arg(long, env = "BERTH_LDAP_BASE_DN", value_name = "DN")]
    pub ldap_base_dn: Option<String>,
    /// Filter user entries must also match, e.g. (objectClass=person)
    #[arg(long, env = "BERTH_LDAP_FILTER", value_name = "FILTER")]
    pub ldap_filter: Option<String>,
    /// Attribute holding the user name [default: uid]
    #[arg(long, env = "BERTH_LDAP_UID", value_name = "ATTR")]
    pub ldap_uid: Option<String>,
    /// User search scope: 0 base, 1 one level, 2 subtree [default: 2]
    #[arg(long, env = "BERTH_LDAP_SCOPE", value_name = "N")]
    pub ldap_scope: Option<u8>,
    /// Seconds to wait for the LDAP server, per connection and operation [default: 5]
    #[arg(long, env = "BERTH_LDAP_TIMEOUT", value_name = "SECONDS")]
    pub ldap_timeout: Option<u64>,
    /// Base DN of the group search (empty: groups come from the membership attribute only)
    #[arg(long, env = "BERTH_LDAP_GROUP_BASE_DN", value_name = "DN")]
    pub ldap_group_base_dn: Option<String>,
    /// Filter group entries must also match, e.g. (objectClass=groupOfNames)
    #[arg(long, env = "BERTH_LDAP_GROUP_SEARCH_FILTER", value_name = "FILTER")]
    pub ldap_group_search_filter: Option<String>,
    /// Attribute holding a group's name [default: cn]
    #[arg(long, env = "BERTH_LDAP_GROUP_ATTRIBUTE_NAME", value_name = "ATTR")]
    pub ldap_group_attribute_name: Option<String>,
    /// Group search scope: 0 base, 1 one level, 2 subtree [default: 2]
    #[arg(long, env = "BERTH_LDAP_GROUP_SEARCH_SCOPE", value_name = "N")]
    pub ldap_group_search_scope: Option<u8>,
    /// Members of this group are system administrators
    #[arg(long, env = "BERTH_LDAP_GROUP_ADMIN_DN", value_name = "DN")]
    pub ldap_group_admin_dn: Option<String>,
    /// User attribute listing the user's groups [default: memberof]
    #[arg(
        long,
        env = "BERTH_LDAP_GROUP_MEMBERSHIP_ATTRIBUTE",
        value_name = "ATTR"
    )]
    pub ldap_group_membership_attribute: Option<String>,
}

/// The config file's contents; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    read_only: Option<bool>,
    delete_enabled: Option<bool>,
    upload_ttl_seconds: Option<u64>,
    proxy_revalidate_seconds: Option<u64>,
    max_uploads_per_user: Option<u64>,
    auth_enabled: Option<bool>,
    admin_password: Option<String>,
    external_url: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    token_service: Option<String>,
    token_ttl_seconds: Option<u64>,
    self_registration: Option<bool>,
    project_creation: Option<ProjectCreation>,
    max_failed_logins: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    gc_interval_seconds: Option<u64>,
    gc_grace_seconds: Option<u64>,
    audit_retention_days: Option<u64>,
    webhook_allow_private: Option<bool>,
    chart_allow_overwrite: Option<bool>,
    body_read_timeout_seconds: Option<u64>,
    header_read_timeout_seconds: Option<u64>,
    max_connections: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    tls_handshake_timeout_seconds: Option<u64>,
    max_members_per_project: Option<u64>,
    max_robots_per_project: Option<u64>,
    auth_mode: Option<String>,
    ldap_url: Option<String>,
    ldap_starttls: Option<bool>,
    ldap_verify_cert: Option<bool>,
    ldap_ca_file: Option<PathBuf>,
    ldap_search_dn: Option<String>,
    ldap_search_password: Option<String>,
    ldap_base_dn: Option<String>,
    ldap_filter: Option<String>,
    ldap_uid: Option<String>,
    ldap_scope: Option<u8>,
    ldap_timeout: Option<u64>,
    ldap_group_base_dn: Option<String>,
    ldap_group_search_filter: Option<String>,
    ldap_group_attribute_name: Option<String>,
    ldap_group_search_scope: Option<u8>,
    ldap_group_admin_dn: Option<String>,
    ldap_group_membership_attribute: Option<String>,
}

impl FileConfig {
    /// The file's settings: the storage keys (parsed by the engine's
    /// settings module) and the rest.
    fn load(path: &Path) -> Result<(FileConfig, StorageSettings), ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parse = || -> Result<(FileConfig, StorageSettings), serde_json::Error> {
            let mut value: serde_json::Value = serde_json::from_slice(&text)?;
            let storage = match value.as_object_mut() {
                Some(object) => StorageSettings::take_from(object)?,
                None => StorageSettings::default(),
            };
            Ok((serde_json::from_value(value)?, storage))
        };
        parse().map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("berth: config {path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("berth: config {path}: {source} (expected a JSON object with keys listen, data_dir, read_only, delete_enabled, upload_ttl_seconds, max_uploads_per_user, storage_backend, s3_endpoint, s3_region, s3_bucket, s3_access_key, s3_secret_key, s3_root, s3_path_style, s3_multipart_threshold, s3_ca_file, cache_max_bytes, database_url, database_ca_file, database_schema, auth_enabled, admin_password, external_url, trusted_proxies, token_service, token_ttl_seconds, self_registration, project_creation, max_failed_logins, tls_cert, tls_key, gc_interval_seconds, gc_grace_seconds, audit_retention_days, webhook_allow_private, chart_allow_overwrite, body_read_timeout_seconds, header_read_timeout_seconds, max_connections, idle_timeout_seconds, tls_handshake_timeout_seconds, max_members_per_project, max_robots_per_project, proxy_revalidate_seconds, auth_mode and the ldap_* keys of docs/auth.md)", path = .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("berth: storage: {0}")]
    Storage(String),
    #[error("berth: config: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_engine::store::BackendKind;

    #[test]
    fn defaults() {
        let c = Config::from_args(ServeArgs::default()).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(!c.read_only);
        assert!(c.delete_enabled);
        assert_eq!(c.upload_ttl, DEFAULT_UPLOAD_TTL);
        assert_eq!(c.gc_interval, None);
        assert_eq!(c.gc_grace, DEFAULT_GC_GRACE);
        assert!(!c.chart_allow_overwrite);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn limits_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.json");
        std::fs::write(
            &path,
            r#"{"body_read_timeout_seconds":5,"header_read_timeout_seconds":6,"max_connections":7,
                "idle_timeout_seconds":8,"tls_handshake_timeout_seconds":9,
                "max_members_per_project":10,"max_robots_per_project":11}"#,
        )
        .unwrap();
        let c = Config::from_args(ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(c.limits.body_read_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(6));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(8));
        assert_eq!(c.limits.tls_handshake_timeout, Duration::from_secs(9));
        assert_eq!(
            (c.max_members_per_project, c.max_robots_per_project),
            (10, 11)
        );
        assert_eq!(c.limits.max_connections, 7);
        let c = Config::from_args(ServeArgs {
            config: Some(path),
            max_connections: Some(u64::MAX),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(
            c.limits.max_connections,
            tokio::sync::Semaphore::MAX_PERMITS
        );
        for args in [
            ServeArgs {
                max_connections: Some(0),
                ..ServeArgs::default()
            },
            ServeArgs {
                body_read_timeout_seconds: Some(0),
                ..ServeArgs::default()
            },
            ServeArgs {
                header_read_timeout_seconds: Some(0),
                ..ServeArgs::default()
            },
            ServeArgs {
                body_read_timeout_seconds: Some(u64::MAX),
                ..ServeArgs::default()
            },
        ] {
            let e = Config::from_args(args).unwrap_err().to_string();
            assert!(e.contains("at least 1"), "{e}");
        }
        let e = Config::from_args(ServeArgs {
            token_ttl_seconds: Some(u64::MAX),
            ..ServeArgs::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("token TTL"), "{e}");
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.json");
        std::fs::write(
            &path,
            r#"{"listen":"0.0.0.0:1","data_dir":"/d","read_only":true,"delete_enabled":false,"upload_ttl_seconds":5,"gc_interval_seconds":7,"gc_grace_seconds":0,"chart_allow_overwrite":true}"#,
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.listen, "0.0.0.0:1");
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert!(c.read_only);
        assert!(!c.delete_enabled);
        assert_eq!(c.upload_ttl, Duration::from_secs(5));
        assert_eq!(c.gc_interval, Some(Duration::from_secs(7)));
        assert_eq!(c.gc_grace, Duration::ZERO);
        assert!(c.chart_allow_overwrite);

        let args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:2".into()),
            delete_enabled: Some(true),
            gc_interval_seconds: Some(0),
            chart_allow_overwrite: Some(false),
            ..ServeArgs::default()
        };
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.gc_interval, None, "0 turns GC off");
        assert_eq!(c.listen, "127.0.0.1:2");
        assert!(c.delete_enabled);
        assert!(!c.chart_allow_overwrite);
    }

    #[test]
    fn storage_backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.json");
        std::fs::write(
            &path,
            r#"{"storage_backend":"tiered","s3_endpoint":"http://127.0.0.1:1","s3_bucket":"b",
               "s3_access_key":"ak","s3_secret_key":"s3cr3t","s3_root":"r","cache_max_bytes":1000,
               "s3_ca_file":"/etc/berth/s3-ca.pem"}"#,
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.storage.kind, BackendKind::Tiered);
        assert_eq!(c.storage.cache_max_bytes, 1000);
        let s3 = c.storage.s3.expect("s3 config");
        assert_eq!(
            (s3.endpoint.as_str(), s3.bucket.as_str(), s3.root.as_str()),
            ("http://127.0.0.1:1", "b", "r")
        );
        assert!(s3.path_style);
        assert_eq!(s3.ca_file, Some(PathBuf::from("/etc/berth/s3-ca.pem")));
        assert!(
            !format!("{s3:?}").contains("s3cr3t"),
            "Debug hides the secret"
        );

        let args = ServeArgs {
            config: Some(path),
            storage_backend: Some("s3".into()),
            s3_bucket: Some("other".into()),
            ..ServeArgs::default()
        };
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.storage.kind, BackendKind::S3);
        assert_eq!(c.storage.s3.unwrap().bucket, "other");

        let args = ServeArgs {
            storage_backend: Some("s3".into()),
            ..ServeArgs::default()
        };
        let e = Config::from_args(args).unwrap_err();
        assert!(e.to_string().contains("s3_endpoint"), "{e}");
        let args = ServeArgs {
            storage_backend: Some("ceph".into()),
            ..ServeArgs::default()
        };
        let e = Config::from_args(args).unwrap_err();
        assert!(e.to_string().contains("unknown storage backend"), "{e}");
    }

    #[test]
    fn auth_proxy_and_tls_settings() {
        let c = Config::from_args(ServeArgs::default()).unwrap();
        assert!(!c.auth.enabled);
        assert_eq!(c.proxy, ProxyConfig::default());
        assert_eq!(c.tls, None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.json");
        std::fs::write(
            &path,
            r#"{"auth_enabled":true,"admin_password":"hunter2-hunter2","trusted_proxies":["10.0.0.0/8"],
                "external_url":"https://reg.example.com/","project_creation":"adminonly","max_failed_logins":3}"#,
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            trusted_proxies: Some("127.0.0.1/32, ::1".into()),
            ..ServeArgs::default()
        };
        let c = Config::from_args(args).unwrap();
        assert!(c.auth.enabled);
        assert_eq!(c.auth.project_creation, ProjectCreation::Adminonly);
        assert_eq!(c.auth.max_failed_logins, 3);
        assert_eq!(
            c.proxy.external_url.as_deref(),
            Some("https://reg.example.com")
        );
        assert_eq!(c.proxy.trusted.len(), 2, "flags override the file");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");

        let bad = |a: ServeArgs| Config::from_args(a).unwrap_err().to_string();
        assert!(bad(ServeArgs {
            trusted_proxies: Some("10.0.0.0/99".into()),
            ..ServeArgs::default()
        })
        .contains("trusted proxies"));
        assert!(bad(ServeArgs {
            external_url: Some("reg.example.com".into()),
            ..ServeArgs::default()
        })
        .contains("https://"));
        assert!(bad(ServeArgs {
            tls_cert: Some("c.pem".into()),
            ..ServeArgs::default()
        })
        .contains("BERTH_TLS_KEY"));
    }

    #[test]
    fn ldap_settings() {
        assert_eq!(
            Config::from_args(ServeArgs::default()).unwrap().auth.ldap,
            None
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.json");
        std::fs::write(
            &path,
            r#"{"auth_mode":"ldap_auth","ldap_url":"ldaps://ldap.example.org",
                "ldap_base_dn":"ou=people,dc=example,dc=org","ldap_search_dn":"cn=berth,dc=example,dc=org",
                "ldap_search_password":"s3cret-bind","ldap_scope":1,"ldap_timeout":9,
                "ldap_group_admin_dn":"cn=admins,dc=example,dc=org"}"#,
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ldap: LdapArgs {
                ldap_filter: Some("(objectClass=person)".into()),
                ldap_url: Some("ldap://ldap.example.org:389".into()),
                ldap_starttls: Some(true),
                ..LdapArgs::default()
            },
            ..ServeArgs::default()
        };
        let c = Config::from_args(args).unwrap();
        let l = c.auth.ldap.clone().expect("ldap_auth");
        assert_eq!(
            l.url, "ldap://ldap.example.org:389",
            "flags override the file"
        );
        assert!(l.starttls && l.verify_cert);
        assert_eq!(l.base_dn, "ou=people,dc=example,dc=org");
        assert_eq!(l.filter, "(objectClass=person)");
        assert_eq!(l.uid, "uid");
        assert_eq!(l.scope, LdapScope::OneLevel);
        assert_eq!(l.group_search_scope, LdapScope::Subtree);
        assert_eq!(l.timeout, Duration::from_secs(9));
        assert_eq!(l.group_membership_attribute, "memberof");
        assert_eq!(l.group_attribute_name, "cn");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-bind"), "{shown}");

        let bad = |ldap: LdapArgs, mode: Option<&str>| {
            Config::from_args(ServeArgs {
                auth_mode: mode.map(str::to_owned),
                ldap,
                ..ServeArgs::default()
            })
            .unwrap_err()
            .to_string()
        };
        let url = |u: &str| LdapArgs {
            ldap_url: Some(u.into()),
            ldap_base_dn: Some("dc=x".into()),
            ..LdapArgs::default()
        };
        assert!(bad(url("ldap://h"), None).contains("auth_mode"));
        assert!(bad(url("http://h"), Some("ldap_auth")).contains("ldap://"));
        assert!(bad(LdapArgs::default(), Some("ldap_auth")).contains("ldap_url"));
        assert!(bad(LdapArgs::default(), Some("oidc_auth")).contains("db_auth or ldap_auth"));
        assert!(bad(
            LdapArgs {
                ldap_base_dn: None,
                ..url("ldap://h")
            },
            Some("ldap_auth")
        )
        .contains("ldap_base_dn"));
        assert!(bad(
            LdapArgs {
                ldap_scope: Some(3),
                ..url("ldap://h")
            },
            Some("ldap_auth")
        )
        .contains("ldap_scope"));
        assert!(bad(
            LdapArgs {
                ldap_starttls: Some(true),
                ..url("ldaps://h")
            },
            Some("ldap_auth")
        )
        .contains("ldap_starttls"));
    }

    #[test]
    fn bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.json");
        std::fs::write(&path, r#"{"listn":"x"}"#).unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let e = Config::from_args(args).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        let args = ServeArgs {
            config: Some(dir.path().join("missing.json")),
            ..ServeArgs::default()
        };
        assert!(matches!(
            Config::from_args(args),
            Err(ConfigError::Read { .. })
        ));
    }
}
