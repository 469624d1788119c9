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
//! (checked against berth's key, issuer, audience and time), or
//! `Authorization: Basic` with a user's password or a robot's secret (then
//! the index decides, now). No header is the anonymous account: pull on
//! public projects.
//!
//! A bearer token grants exactly its `access` claim, and only on the
//! registry API (`/v2/…`): it becomes a [`Principal::Token`] holding a
//! [`Grant`], whose only permission question ([`Grant::actions_on`]) reads
//! the claim and nothing else — never the account named by `sub`. Off
//! `/v2` (the admin, chart and GC APIs) a bearer token is refused with the
//! Basic challenge, as Harbor does: those APIs are driven with Basic
//! credentials. Any valid token passes `GET /v2/`, which needs no access.
//!
//! Shared state, all owned by [`Auth`] inside the `App` (lifetime: the
//! server's): the token key (immutable); the failed-login counters (a
//! mutex-guarded map, pruned when large — a `Mutex` because updates are
//! tiny and rare); a cache of recently verified Basic credentials (so
//! `helm` and Basic-speaking clients do not pay an argon2id verification per
//! request; keyed by a salted sha256 of name and secret, entries live 60 s).

use std::borrow::Cow;
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
    /// A verified bearer token, on a `/v2` path: it grants its claim, and
    /// only that.
    Token(Grant),
}

impl Principal {
    /// The account name for logs and audit; empty for anonymous and `Open`.
    pub fn name(&self) -> &str {
        match self {
            Principal::Open => "",
            Principal::Account(a) => a.name(),
            Principal::Token(g) => g.subject(),
        }
    }

    /// No credentials, or a token issued to nobody.
    pub fn is_anonymous(&self) -> bool {
        match self {
            Principal::Open => false,
            Principal::Account(a) => *a == Account::Anonymous,
            Principal::Token(g) => g.subject().is_empty(),
        }
    }
}

/// What a verified registry token grants: its `access` claim, nothing more.
///
/// The fields are private so that no caller can turn a token back into its
/// account's permissions: the subject is for logs and for explaining a
/// refusal, the claim is read only by [`Grant::actions_on`], which does
/// not see the index at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    sub: String,
    access: Vec<Access>,
}

impl Grant {
    /// The account the token was issued to (empty: anonymous).
    pub fn subject(&self) -> &str {
        &self.sub
    }

    /// What the claim grants on `resource`: on a repository, the actions of
    /// the `repository:NAME` items naming it exactly (`*`: every action); on
    /// the catalog (and its listed projects), everything if a
    /// `registry:catalog:*` item is present; on a project, nothing — no claim
    /// berth issues names one, so project-wide routes never accept a token.
    pub fn actions_on(&self, resource: Resource<'_>) -> Actions {
        let (kind, name) = match resource {
            Resource::Repository(r) => ("repository", r.as_str()),
            Resource::Catalog | Resource::Listed(_) => ("registry", "catalog"),
            Resource::Project(_) => return Actions::NONE,
        };
        self.access
            .iter()
            .filter(|a| a.kind == kind && a.name == name)
            .flat_map(|a| a.actions.iter())
            .fold(Actions::NONE, |acc, action| {
                if action == "*" {
                    Actions::ALL
                } else {
                    acc.union(Action::parse(action).map_or(Actions::NONE, |a| Actions::of(&[a])))
                }
            })
    }
}

/// What a request acts on.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    /// A repository; its project is the first path component.
    Repository(&'a RepoName),
    /// A whole project (chart repositories, project APIs). Tokens never
    /// reach it: Basic credentials only.
    Project(&'a str),
    /// The repository list, `/v2/_catalog`: open to every account (it is
    /// filtered by [`Resource::Listed`]); a token needs `registry:catalog:*`.
    Catalog,
    /// A project's repositories as listed in the catalog: shown to whoever
    /// may pull there; to a token with the catalog grant, what its subject
    /// may pull now (the claim grants the listing, the subject bounds it).
    Listed(&'a str),
}

impl Resource<'_> {
    fn project(&self) -> Option<&str> {
        match self {
            Resource::Repository(r) => Some(r.project()),
            Resource::Project(p) | Resource::Listed(p) => Some(p),
            Resource::Catalog => None,
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

/// Scope string of a challenge: `repository:NAME:pull,push`,
/// `registry:catalog:*`.
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
        Resource::Catalog | Resource::Listed(_) => Some("registry:catalog:*".to_owned()),
        Resource::Project(_) => None,
    }
}

/// Whether `path` (as sent) is the registry API, where bearer tokens are
/// accepted and challenges name the token service.
fn is_registry_path(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

/// `401 UNAUTHORIZED` with the challenge for this path: Bearer (the token
/// service) on `/v2` paths, Basic elsewhere (helm and API clients). With an
/// `error`, the detail is also its `error_description` (RFC 6750), so
/// clients that show only the challenge say why.
pub fn challenge(
    app: &App,
    parts: &Parts,
    scope: Option<&str>,
    error: Option<&str>,
    detail: impl Into<Cow<'static, str>>,
) -> ApiError {
    let detail = detail.into();
    let value = if is_registry_path(parts.uri.path()) {
        let mut v = format!(
            "Bearer realm=\"{}{TOKEN_PATH}\",service=\"{}\"",
            external_base(app, parts),
            app.auth.service
        );
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        if let Some(e) = error {
            v.push_str(&format!(
                ",error=\"{e}\",error_description=\"{}\"",
                quoted_string_safe(&detail)
            ));
        }
        v
    } else {
        "Basic realm=\"berth\"".to_owned()
    };
    ApiError::new(Code::Unauthorized, detail).with_header(WWW_AUTHENTICATE, hv(&value))
}

/// `s` made safe inside a header's quoted-string: printable ASCII only,
/// without `"` and `\`.
fn quoted_string_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
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

/// Who is asking: anonymous without credentials; `401` for bad ones, and
/// for a bearer token anywhere but the registry API (`/v2`): the admin,
/// chart and GC APIs take Basic credentials only, so no token can act
/// there, whatever its claim.
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
        Ok(Credentials::Bearer(_)) if !is_registry_path(parts.uri.path()) => Err(challenge(
            app,
            parts,
            None,
            None,
            "registry tokens are accepted on /v2/ only; \
             sign in here with Basic credentials (a password or a robot secret)",
        )),
        Ok(Credentials::Bearer(t)) => {
            match app
                .auth
                .key
                .verify(&t, ISSUER, &app.auth.service, now_secs())
            {
                Ok(c) => Ok(Principal::Token(Grant {
                    sub: c.sub,
                    access: c.access,
                })),
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

/// What `account` may do on `resource` now (index reads). The catalog is
/// open to every account: it is filtered per project ([`Resource::Listed`]).
fn account_actions(
    app: &App,
    account: &Account,
    resource: Resource<'_>,
) -> Result<Actions, ApiError> {
    match resource.project() {
        Some(project) => Ok(app.engine.permissions(account, project)?),
        None => Ok(Actions::of(&[Action::Pull])),
    }
}

/// Whether `principal` may do all of `actions` on `resource` (no error
/// when not: for decisions such as mount-or-upload). Index reads only.
///
/// A token is asked its claim ([`Grant::actions_on`]) and nothing else;
/// the one place its subject is looked up is a catalog listing, which the
/// claim's `registry:catalog:*` grants and the subject's read access
/// bounds. There is no arm that lets a token fall through to its account.
pub fn permits(
    app: &App,
    principal: &Principal,
    resource: Resource<'_>,
    actions: Actions,
) -> Result<bool, ApiError> {
    match principal {
        Principal::Open => Ok(true),
        Principal::Account(account) => {
            Ok(account_actions(app, account, resource)?.contains_all(actions))
        }
        Principal::Token(grant) => {
            if !grant.actions_on(resource).contains_all(actions) {
                return Ok(false);
            }
            match resource {
                Resource::Listed(_) => Ok(match app.engine.account(grant.subject())? {
                    Some(a) => account_actions(app, &a, resource)?.contains_all(actions),
                    None => false,
                }),
                Resource::Repository(_) | Resource::Project(_) | Resource::Catalog => Ok(true),
            }
        }
    }
}

/// Why `account` may not do `actions` on `resource` now (`None`: it may),
/// in words that reveal no more than the account may see: a project it
/// cannot see at all reads "does not exist or … may not see it" whether it
/// exists or not; only administrators, who see every project, are told
/// plainly that it does not exist. The 403 of Basic callers, the
/// `error_description` of a token's `insufficient_scope`, and the token
/// service's log line all come from here.
pub fn refusal(
    app: &App,
    account: &Account,
    resource: Resource<'_>,
    actions: Actions,
) -> Result<Option<String>, ApiError> {
    let Some(project) = resource.project() else {
        return Ok(None);
    };
    let allowed = app.engine.permissions(account, project)?;
    if allowed.contains_all(actions) {
        return Ok(None);
    }
    let who = match account.name() {
        "" => "anonymous callers",
        name => name,
    };
    if allowed.is_empty() {
        return Ok(Some(if account.is_admin() {
            format!("project {project} does not exist")
        } else {
            format!("project {project} does not exist or {who} may not see it")
        }));
    }
    let missing: Vec<&str> = actions
        .iter()
        .filter(|a| !allowed.contains(*a))
        .map(|a| match a {
            Action::Admin => "manage",
            a => a.name(),
        })
        .collect();
    Ok(Some(format!(
        "{who} may not {} in project {project}",
        missing.join(",")
    )))
}

/// Why a token does not allow `actions` on `resource`: what its subject
/// may not do now (see [`refusal`]), else that the claim lacks the scope.
fn token_refusal(
    app: &App,
    grant: &Grant,
    resource: Resource<'_>,
    actions: Actions,
) -> Result<String, ApiError> {
    let Some(account) = app.engine.account(grant.subject())? else {
        return Ok(format!(
            "the token's account {} no longer exists",
            grant.subject()
        ));
    };
    if let Some(why) = refusal(app, &account, resource, actions)? {
        return Ok(why);
    }
    Ok(match scope_of(resource, actions) {
        Some(scope) => format!("the token does not grant {scope}; request a token for it"),
        None => "registry tokens grant repository access only".to_owned(),
    })
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
        // A token lacking the scope: the client should ask for a new one;
        // the description says why the token service would not grant it.
        Principal::Token(grant) => Err(challenge(
            app,
            parts,
            scope.as_deref(),
            Some("insufficient_scope"),
            token_refusal(app, grant, resource, actions)?,
        )),
        Principal::Account(a) => Err(denied(
            refusal(app, a, resource, actions)?
                .unwrap_or_else(|| format!("{} may not do this", a.name())),
        )),
    }
}

/// `GET /v2/`: any signed-in account, and any valid token — an anonymous
/// one (`sub:""`, `access:[]`) included: the version check needs no access
/// items, as in CNCF distribution's token access controller. Only a request
/// without credentials gets the `401` that makes `docker login` verify a
/// password.
pub async fn require_authenticated(app: &App, parts: &Parts) -> Result<Principal, ApiError> {
    let p = authenticate(app, parts).await?;
    match &p {
        Principal::Account(Account::Anonymous) => {
            Err(challenge(app, parts, None, None, "authentication required"))
        }
        Principal::Open | Principal::Account(_) | Principal::Token(_) => Ok(p),
    }
}

/// A system administrator (or auth disabled), else `401`/`403`. Signed in
/// with Basic credentials: no token claim grants administration (and
/// [`authenticate`] refuses tokens off `/v2` before this is asked).
pub async fn require_admin(app: &App, parts: &Parts) -> Result<Principal, ApiError> {
    let p = authenticate(app, parts).await?;
    match &p {
        Principal::Open => Ok(p),
        Principal::Account(a) if a.is_admin() => Ok(p),
        Principal::Account(Account::Anonymous) => {
            Err(challenge(app, parts, None, None, "authentication required"))
        }
        Principal::Account(a) => Err(denied(format!(
            "{} is not a system administrator",
            a.name()
        ))),
        Principal::Token(_) => Err(challenge(
            app,
            parts,
            None,
            Some("insufficient_scope"),
            "registry tokens never grant administration",
        )),
    }
}

/// The account of a principal for API handlers that need it (project
/// creation, listings). `Open` maps to an administrator; a token to the
/// anonymous account — a token is never a login on the API (and does not
/// get there: [`authenticate`] refuses it off `/v2`).
pub fn effective_account(p: &Principal) -> Account {
    match p {
        Principal::Open => Account::User {
            name: String::new(),
            admin: true,
        },
        Principal::Account(a) => a.clone(),
        Principal::Token(_) => Account::Anonymous,
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
        assert_eq!(
            scope_of(Resource::Catalog, Actions::of(&[Action::Pull])).unwrap(),
            "registry:catalog:*"
        );
    }

    #[test]
    fn a_grant_is_exactly_its_claim() {
        let item = |kind: &str, name: &str, actions: &[&str]| Access {
            kind: kind.into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        };
        let g = Grant {
            sub: "admin".into(),
            access: vec![
                item("repository", "library/nothing", &["pull"]),
                item("repository", "team/app", &["pull", "push", "bogus"]),
                item("repository", "team/all", &["*"]),
            ],
        };
        let repo = |n: &str| RepoName::parse(n).unwrap();
        let (nothing, app, all, other) = (
            repo("library/nothing"),
            repo("team/app"),
            repo("team/all"),
            repo("library/other"),
        );
        let pull = Actions::of(&[Action::Pull]);
        let pull_push = Actions::of(&[Action::Pull, Action::Push]);
        assert_eq!(g.actions_on(Resource::Repository(&nothing)), pull);
        assert_eq!(g.actions_on(Resource::Repository(&app)), pull_push);
        assert_eq!(g.actions_on(Resource::Repository(&all)), Actions::ALL);
        assert_eq!(g.actions_on(Resource::Repository(&other)), Actions::NONE);
        // Whatever the subject is, a claim never covers a project, the
        // catalog without its item, or administration.
        for r in [
            Resource::Project("library"),
            Resource::Project("team"),
            Resource::Catalog,
            Resource::Listed("team"),
        ] {
            assert_eq!(g.actions_on(r), Actions::NONE, "{r:?}");
        }
        let c = Grant {
            sub: String::new(),
            access: vec![item("registry", "catalog", &["*"])],
        };
        assert_eq!(c.actions_on(Resource::Catalog), Actions::ALL);
        assert_eq!(c.actions_on(Resource::Listed("team")), Actions::ALL);
        assert_eq!(c.actions_on(Resource::Project("team")), Actions::NONE);
        assert_eq!(c.actions_on(Resource::Repository(&app)), Actions::NONE);
    }

    #[test]
    fn descriptions_are_quoted_string_safe() {
        assert_eq!(quoted_string_safe("a \"b\" \\ c\n\u{e9}"), "a 'b' ' c??");
    }
}
