//! Authentication and authorization: the one entry point every route calls
//! before its handler.
//!
//! ```text
//! authorize(app, parts, Resource::Repository(&repo), Actions::of(&[Action::Pull]))
//!     -> Ok(Principal)            allowed (or auth is off: Principal::Open)
//!     -> Err(401 UNAUTHORIZED)    no / bad credentials, or a token without the scope;
//!                                 WWW-Authenticate: Bearer realm="<origin>/service/token",
//!                                 service="…",scope="repository:NAME:pull" (on /v2 paths;
//!                                 Basic realm="berth" elsewhere, for helm)
//!     -> Err(403 DENIED)          valid Basic credentials without the permission
//!     -> Err(429 TOOMANYREQUESTS) too many failed logins from this source
//! require_admin(app, parts)       a system administrator, else 401/403
//! authenticate(app, parts)        who is asking (anonymous allowed), 401 on bad credentials
//! ```
//!
//! Credentials: `Authorization: Bearer <jwt>` from berth's token service
//! (checked against berth's key, issuer, audience and time; then its
//! `access` claim decides repository actions), or `Authorization: Basic`
//! with a user's password or a robot's secret (then the index decides, now).
//! No header is the anonymous account: pull on public projects.
//!
//! Shared state, all owned by [`Auth`] inside the `App` (lifetime: the
//! server's): the token key (immutable); the failed-login counters (a
//! mutex-guarded map, pruned when large — a `Mutex` because updates are
//! tiny and rare); a cache of recently verified Basic credentials (so
//! `helm` and Basic-speaking clients do not pay an argon2id verification per
//! request; keyed by a salted sha256 of name and secret, entries live 60 s).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_engine::token::{Access, Claims, TokenKey};
use berth_engine::{Account, Action, Actions, RepoName};
use hyper::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::http::request::Parts;

use crate::config::{AuthConfig, ProjectCreation};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, hv, App};
use crate::proxy::ConnInfo;

/// The `iss` of every token berth signs.
pub const ISSUER: &str = "berth-token-service";
/// Path of the token service.
pub const TOKEN_PATH: &str = "/service/token";
/// Refresh tokens carry this suffix on the service as their audience, so
/// one can never pass as an access token.
pub const REFRESH_AUD_SUFFIX: &str = "#refresh";
/// Lifetime of refresh (`offline_token`) tokens.
pub const REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long verified Basic credentials are remembered.
const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(60);
const CREDENTIAL_CACHE_MAX: usize = 10_000;
/// The failed-login window.
const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// Auth state of a running server.
pub struct Auth {
    pub enabled: bool,
    pub service: String,
    pub token_ttl: Duration,
    pub self_registration: bool,
    pub project_creation: ProjectCreation,
    pub key: TokenKey,
    limiter: LoginLimiter,
    cache: CredentialCache,
}

impl Auth {
    pub fn new(cfg: &AuthConfig, key: TokenKey) -> Auth {
        Auth {
            enabled: cfg.enabled,
            service: cfg.service.clone(),
            token_ttl: cfg.token_ttl,
            self_registration: cfg.self_registration,
            project_creation: cfg.project_creation,
            key,
            limiter: LoginLimiter::new(cfg.max_failed_logins),
            cache: CredentialCache::new(),
        }
    }

    /// Signs an access token for `sub` with `access`.
    pub fn access_token(&self, sub: &str, access: Vec<Access>) -> (String, Claims) {
        let now = now_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: self.service.clone(),
            exp: now + self.token_ttl.as_secs().max(1),
            nbf: now,
            iat: now,
            jti: berth_engine::token::new_jti(),
            access,
        };
        (self.key.sign(&claims), claims)
    }

    /// Signs a refresh token for `sub` (no access; its own audience).
    pub fn refresh_token(&self, sub: &str, expires_ms: Option<u64>) -> String {
        let now = now_secs();
        let mut exp = now + REFRESH_TTL.as_secs();
        if let Some(e) = expires_ms {
            exp = exp.min(e / 1000);
        }
        self.key.sign(&Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: format!("{}{REFRESH_AUD_SUFFIX}", self.service),
            exp,
            nbf: now,
            iat: now,
            jti: berth_engine::token::new_jti(),
            access: Vec::new(),
        })
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Who a request is from, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Auth is disabled: everything is allowed.
    Open,
    /// Basic credentials or no credentials (anonymous).
    Account(Account),
    /// A verified bearer token: its subject (empty: anonymous) and grants.
    Token { sub: String, access: Vec<Access> },
}

impl Principal {
    /// The account name for logs and audit; empty for anonymous and `Open`.
    pub fn name(&self) -> &str {
        match self {
            Principal::Open => "",
            Principal::Account(a) => a.name(),
            Principal::Token { sub, .. } => sub,
        }
    }
}

/// What a request acts on.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    /// A repository; its project is the first path component.
    Repository(&'a RepoName),
    /// A whole project (chart repositories, project APIs).
    Project(&'a str),
}

impl Resource<'_> {
    fn project(&self) -> &str {
        match self {
            Resource::Repository(r) => r.project(),
            Resource::Project(p) => p,
        }
    }
}

fn conn(parts: &Parts) -> ConnInfo {
    parts
        .extensions
        .get::<ConnInfo>()
        .copied()
        .unwrap_or(ConnInfo {
            peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            tls: false,
        })
}

/// `<origin>` for this request (see `proxy.rs`).
pub fn external_base(app: &App, parts: &Parts) -> String {
    app.proxy
        .origin(&conn(parts), &parts.headers, &parts.uri)
        .base
}

/// The address failed logins are counted against.
fn client_ip(app: &App, parts: &Parts) -> IpAddr {
    app.proxy.client_ip(&conn(parts), &parts.headers)
}

/// Scope string of a challenge: `repository:NAME:pull,push`.
fn scope_of(resource: Resource<'_>, actions: Actions) -> Option<String> {
    match resource {
        Resource::Repository(r) => {
            // Docker asks for pull alongside push; so does the challenge.
            let mut a = actions;
            if a.contains(Action::Push) {
                a = a.union(Actions::of(&[Action::Pull]));
            }
            Some(format!("repository:{}:{}", r, a.names().join(",")))
        }
        Resource::Project(_) => None,
    }
}

/// `401 UNAUTHORIZED` with the challenge for this path: Bearer (the token
/// service) on `/v2` paths, Basic elsewhere (helm and API clients).
pub fn challenge(
    app: &App,
    parts: &Parts,
    scope: Option<&str>,
    error: Option<&str>,
    detail: &'static str,
) -> ApiError {
    let path = parts.uri.path();
    let value = if path == "/v2" || path.starts_with("/v2/") {
        let mut v = format!(
            "Bearer realm=\"{}{TOKEN_PATH}\",service=\"{}\"",
            external_base(app, parts),
            app.auth.service
        );
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        if let Some(e) = error {
            v.push_str(&format!(",error=\"{e}\""));
        }
        v
    } else {
        "Basic realm=\"berth\"".to_owned()
    };
    ApiError::new(Code::Unauthorized, detail).with_header(WWW_AUTHENTICATE, hv(&value))
}

fn denied(detail: String) -> ApiError {
    ApiError::new(Code::Denied, detail)
}

/// Credentials as sent.
enum Credentials {
    None,
    Basic { name: String, secret: String },
    Bearer(String),
}

fn credentials(parts: &Parts) -> Result<Credentials, ()> {
    let Some(v) = parts.headers.get(AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let v = v.to_str().map_err(|_| ())?.trim();
    let (scheme, rest) = v.split_once(' ').ok_or(())?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = STANDARD.decode(rest).map_err(|_| ())?;
        let s = String::from_utf8(raw).map_err(|_| ())?;
        let (name, secret) = s.split_once(':').ok_or(())?;
        return Ok(Credentials::Basic {
            name: name.to_owned(),
            secret: secret.to_owned(),
        });
    }
    Err(())
}

/// Checks a name and secret for this request's source: refused outright
/// (`429`) while the source is over its failed-login budget; a failure
/// counts against it. `Ok(None)`: wrong credentials.
pub async fn check_password(
    app: &App,
    parts: &Parts,
    name: &str,
    secret: &str,
) -> Result<Option<Account>, ApiError> {
    let ip = client_ip(app, parts);
    if let Err(wait) = app.auth.limiter.check(ip) {
        return Err(ApiError::new(
            Code::TooManyRequests,
            "too many failed logins from this address; try again later",
        )
        .with_header(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1))));
    }
    let cache_key = app.auth.cache.key(name, secret);
    if let Some(a) = app.auth.cache.get(&cache_key) {
        return Ok(Some(a));
    }
    let (n, s) = (name.to_owned(), secret.to_owned());
    let account = blocking(app, move |e| e.authenticate(&n, &s)).await??;
    match &account {
        Some(a) => app.auth.cache.put(cache_key, a.clone()),
        None => {
            app.auth.limiter.fail(ip);
            // Names are logged, secrets never.
            tracing::info!(target: "berth::auth", user = name, %ip, "failed login");
        }
    }
    Ok(account)
}

/// Who is asking: anonymous without credentials; `401` for bad ones.
pub async fn authenticate(app: &App, parts: &Parts) -> Result<Principal, ApiError> {
    if !app.auth.enabled {
        return Ok(Principal::Open);
    }
    match credentials(parts) {
        Err(()) => Err(challenge(
            app,
            parts,
            None,
            Some("invalid_request"),
            "malformed Authorization header",
        )),
        Ok(Credentials::None) => Ok(Principal::Account(Account::Anonymous)),
        Ok(Credentials::Basic { name, secret }) => {
            match check_password(app, parts, &name, &secret).await? {
                Some(a) => Ok(Principal::Account(a)),
                None => Err(challenge(
                    app,
                    parts,
                    None,
                    None,
                    "invalid user name or password",
                )),
            }
        }
        Ok(Credentials::Bearer(t)) => {
            match app
                .auth
                .key
                .verify(&t, ISSUER, &app.auth.service, now_secs())
            {
                Ok(c) => Ok(Principal::Token {
                    sub: c.sub,
                    access: c.access,
                }),
                Err(e) => {
                    tracing::debug!(target: "berth::auth", error = %e, "refused token");
                    Err(challenge(
                        app,
                        parts,
                        None,
                        Some("invalid_token"),
                        "invalid or expired token",
                    ))
                }
            }
        }
    }
}

/// The account behind a principal, as it stands now (`None`: removed).
fn account_of(app: &App, p: &Principal) -> Result<Option<Account>, ApiError> {
    match p {
        Principal::Open => Ok(None),
        Principal::Account(a) => Ok(Some(a.clone())),
        Principal::Token { sub, .. } => Ok(app.engine.account(sub)?),
    }
}

/// Whether `principal` may do all of `actions` on `resource` (no error
/// when not: for decisions such as mount-or-upload). Index reads only.
pub fn permits(
    app: &App,
    principal: &Principal,
    resource: Resource<'_>,
    actions: Actions,
) -> Result<bool, ApiError> {
    match (principal, resource) {
        (Principal::Open, _) => Ok(true),
        (Principal::Token { access, .. }, Resource::Repository(repo)) => {
            let granted = access
                .iter()
                .filter(|a| a.kind == "repository" && a.name == repo.as_str())
                .flat_map(|a| a.actions.iter())
                .fold(Actions::NONE, |acc, name| {
                    if name == "*" {
                        Actions::ALL
                    } else {
                        acc.union(Action::parse(name).map_or(Actions::NONE, |a| Actions::of(&[a])))
                    }
                });
            Ok(granted.contains_all(actions))
        }
        (p, r) => {
            let Some(account) = account_of(app, p)? else {
                return Ok(false);
            };
            Ok(app
                .engine
                .permissions(&account, r.project())?
                .contains_all(actions))
        }
    }
}

/// THE entry point: authenticates the request and checks that it may do
/// `actions` on `resource`. See the module docs for the answers.
pub async fn authorize(
    app: &App,
    parts: &Parts,
    resource: Resource<'_>,
    actions: Actions,
) -> Result<Principal, ApiError> {
    let principal = authenticate(app, parts).await?;
    if permits(app, &principal, resource, actions)? {
        return Ok(principal);
    }
    let scope = scope_of(resource, actions);
    match &principal {
        Principal::Open => Ok(principal),
        Principal::Account(Account::Anonymous) => Err(challenge(
            app,
            parts,
            scope.as_deref(),
            None,
            "authentication required",
        )),
        // A token lacking the scope: the client should ask for a new one.
        Principal::Token { .. } => Err(challenge(
            app,
            parts,
            scope.as_deref(),
            Some("insufficient_scope"),
            "the token does not grant this access",
        )),
        Principal::Account(a) => Err(denied(format!(
            "{} may not {} in project {}",
            a.name(),
            actions.names().join(","),
            resource.project()
        ))),
    }
}

/// Any authenticated principal (not anonymous): `GET /v2/`, where a `401`
/// is what makes `docker login` verify credentials.
pub async fn require_authenticated(app: &App, parts: &Parts) -> Result<Principal, ApiError> {
    let p = authenticate(app, parts).await?;
    match &p {
        Principal::Account(Account::Anonymous) => {
            Err(challenge(app, parts, None, None, "authentication required"))
        }
        Principal::Token { sub, .. } if sub.is_empty() => {
            Err(challenge(app, parts, None, None, "authentication required"))
        }
        _ => Ok(p),
    }
}

/// A system administrator (or auth disabled), else `401`/`403`.
pub async fn require_admin(app: &App, parts: &Parts) -> Result<Principal, ApiError> {
    let p = authenticate(app, parts).await?;
    if p == Principal::Open {
        return Ok(p);
    }
    match account_of(app, &p)? {
        Some(a) if a.is_admin() => Ok(p),
        Some(Account::Anonymous) | None => {
            Err(challenge(app, parts, None, None, "authentication required"))
        }
        Some(a) => Err(denied(format!(
            "{} is not a system administrator",
            a.name()
        ))),
    }
}

/// The account of a principal for API handlers that need it (project
/// creation, listings). `Open` maps to an administrator.
pub fn effective_account(app: &App, p: &Principal) -> Result<Account, ApiError> {
    match p {
        Principal::Open => Ok(Account::User {
            name: String::new(),
            admin: true,
        }),
        _ => Ok(account_of(app, p)?.unwrap_or(Account::Anonymous)),
    }
}

// ---- failed-login limiter ---------------------------------------------------

/// Fixed one-minute windows of failed logins per source address.
struct LoginLimiter {
    max: u32,
    state: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    fn new(max: u32) -> LoginLimiter {
        LoginLimiter {
            max,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(time left)` while `ip` is over budget.
    fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.max == 0 {
            return Ok(());
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.get(&ip) {
            Some((start, n)) if *n >= self.max && start.elapsed() < LOGIN_WINDOW => {
                Err(LOGIN_WINDOW.saturating_sub(start.elapsed()))
            }
            _ => Ok(()),
        }
    }

    fn fail(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.len() > 100_000 {
            state.retain(|_, (start, _)| start.elapsed() < LOGIN_WINDOW);
        }
        let e = state.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= LOGIN_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }
}

// ---- verified-credential cache ----------------------------------------------

struct CredentialCache {
    salt: [u8; 16],
    entries: Mutex<HashMap<String, (Account, Instant)>>,
}

impl CredentialCache {
    fn new() -> CredentialCache {
        let mut salt = [0u8; 16];
        let _ = getrandom::fill(&mut salt);
        CredentialCache {
            salt,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// sha256 of salt, name, NUL, secret: the secret itself is never kept.
    fn key(&self, name: &str, secret: &str) -> String {
        let mut buf = Vec::with_capacity(16 + name.len() + 1 + secret.len());
        buf.extend_from_slice(&self.salt);
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        buf.extend_from_slice(secret.as_bytes());
        berth_engine::Digest::of(berth_engine::Algorithm::Sha256, &buf)
            .hex()
            .to_owned()
    }

    fn get(&self, key: &str) -> Option<Account> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.get(key)
            .filter(|(_, at)| at.elapsed() < CREDENTIAL_CACHE_TTL)
            .map(|(a, _)| a.clone())
    }

    fn put(&self, key: String, account: Account) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= CREDENTIAL_CACHE_MAX {
            e.clear();
        }
        e.insert(key, (account, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_windows() {
        let l = LoginLimiter::new(2);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let other: IpAddr = "1.2.3.5".parse().unwrap();
        assert!(l.check(ip).is_ok());
        l.fail(ip);
        assert!(l.check(ip).is_ok());
        l.fail(ip);
        assert!(l.check(ip).is_err());
        assert!(l.check(other).is_ok());
        let off = LoginLimiter::new(0);
        for _ in 0..10 {
            off.fail(ip);
        }
        assert!(off.check(ip).is_ok());
    }

    #[test]
    fn challenge_scopes() {
        let r = RepoName::parse("proj/app").unwrap();
        assert_eq!(
            scope_of(Resource::Repository(&r), Actions::of(&[Action::Push])).unwrap(),
            "repository:proj/app:pull,push"
        );
        assert_eq!(
            scope_of(Resource::Repository(&r), Actions::of(&[Action::Delete])).unwrap(),
            "repository:proj/app:delete"
        );
        assert_eq!(scope_of(Resource::Project("p"), Actions::ALL), None);
    }
}
