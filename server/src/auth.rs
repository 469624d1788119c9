//! Authentication and authorization: the one entry point ([`admit`]) the
//! router calls with each route's [`Guard`] before its handler.
//!
//! ```text
//! admit(app, parts, tokens, Guard::Access(Target::Repository("p/app"), Actions::of(&[Action::Pull])))
//!     -> Ok(Principal)            allowed (or auth is off: Principal::Open); the
//!                                 router hands it to the handler as its caller
//!     -> Err(401 UNAUTHORIZED)    no / bad credentials, or a token without the scope;
//!                                 WWW-Authenticate: Bearer realm="<origin>/service/token",
//!                                 service="…",scope="repository:NAME:pull" (on /v2 paths;
//!                                 Basic realm="berth" elsewhere, for helm)
//!     -> Err(403 DENIED)          valid Basic credentials without the permission
//!     -> Err(429 TOOMANYREQUESTS) too many failed logins from this source
//! Guard::Admin                    a system administrator, else 401/403
//! Guard::Caller                   who is asking (anonymous allowed), 401 on bad credentials
//! check(app, parts, &caller, resource, actions)   the same check for a caller already admitted
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
//! server's): the token key (immutable); the login limiter's counters (a
//! mutex-guarded map, pruned when large — a `Mutex` because updates are
//! tiny); the password verification slots (a semaphore: at most
//! [`verify_slots`] argon2id verifications, 19 MiB each, run at once,
//! whatever the number of requests); a cache of recently verified Basic
//! credentials (so `helm` and Basic-speaking clients do not pay an argon2id
//! verification per request; keyed by a salted sha256 of name and secret,
//! entries live 60 s and are re-checked against the index on every hit).
//!
//! A password check, top to bottom ([`check_password`]): (1) record the
//! attempt against the source, the name, and the pair — or `429` if any is
//! over its budget; (2) a cache hit is a success; (3) wait (bounded) for a
//! verification slot — or `429`; (4) verify on a verification thread, the
//! slot held until the verification ends; (5) settle the attempt: a success
//! resets the pair's counter and refunds its own attempt, a failure stays
//! counted, an attempt that was never verified is refunded.
//!
//! In `ldap_auth` mode steps (2)–(4) are, for users but robots and
//! `admin`, one check against the LDAP directory ([`crate::ldap`]) with
//! no cache, then `Engine::directory_login` records what the directory
//! said (onboarding, groups, admin flag); see `docs/auth.md`, "LDAP".

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_engine::token::{Access, Claims, TokenKey};
use berth_engine::{Account, Action, Actions, RepoName};
use berth_wire::credentials::Credentials;
use hyper::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::http::request::Parts;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
/// The budgets of one source address (any names) and of one name (any
/// sources), as multiples of the per-pair budget `max_failed_logins`.
const SOURCE_FACTOR: u32 = 5;
const ACCOUNT_FACTOR: u32 = 5;
/// Longest name kept as a limiter key (no account name is longer).
const MAX_KEY_NAME: usize = 256;
/// How long a password check waits for a verification slot before `429`.
const VERIFY_WAIT: Duration = Duration::from_secs(10);
/// Password checks waiting for a slot beyond this many are refused at once.
const VERIFY_QUEUE_MAX: usize = 512;

/// How many argon2id verifications (or hashes) run at once: the CPUs,
/// between 2 and 4. Each holds 19 MiB while it runs, so this bounds the
/// memory of any login flood.
pub fn verify_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4)
}

/// Auth state of a running server.
pub struct Auth {
    pub enabled: bool,
    pub service: String,
    pub token_ttl: Duration,
    pub self_registration: bool,
    pub project_creation: ProjectCreation,
    pub key: TokenKey,
    limiter: LoginLimiter,
    slots: VerifySlots,
    cache: CredentialCache,
    /// `ldap_auth` mode: the directory users' passwords are checked
    /// against (robots and `admin` stay local). `None`: local accounts.
    pub directory: Option<crate::ldap::Directory>,
}

impl Auth {
    pub fn new(cfg: &AuthConfig, key: TokenKey, directory: Option<crate::ldap::Directory>) -> Auth {
        Auth {
            enabled: cfg.enabled,
            service: cfg.service.clone(),
            token_ttl: cfg.token_ttl,
            self_registration: cfg.self_registration,
            project_creation: cfg.project_creation,
            key,
            limiter: LoginLimiter::new(cfg.max_failed_logins),
            slots: VerifySlots::new(verify_slots()),
            cache: CredentialCache::new(),
            directory,
        }
    }

    /// The directory `name` signs in against, in `ldap_auth` mode: every
    /// name but robots' and the built-in `admin` (Harbor's rule).
    pub fn directory_for(&self, name: &str) -> Option<&crate::ldap::Directory> {
        self.directory.as_ref().filter(|_| {
            !name.starts_with(berth_engine::accounts::ROBOT_PREFIX)
                && name != berth_engine::accounts::ADMIN_USER
        })
    }

    /// Signs an access token for `sub` with `access`, bound to the stamp
    /// `crd` of the credential it is issued on.
    pub fn access_token(&self, sub: &str, crd: &str, access: Vec<Access>) -> (String, Claims) {
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
            crd: crd.to_owned(),
        };
        (self.key.sign(&claims), claims)
    }

    /// Signs a refresh token for `sub` (no access; its own audience),
    /// bound to the stamp `crd` as access tokens are.
    pub fn refresh_token(&self, sub: &str, crd: &str, expires_ms: Option<u64>) -> String {
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
            crd: crd.to_owned(),
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

/// The `Authorization` header's credentials (`berth_wire::credentials`).
fn credentials(parts: &Parts) -> Result<Credentials, ()> {
    Credentials::parse(parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes)).map_err(|_| ())
}

fn too_many(wait: Duration, detail: &'static str) -> ApiError {
    ApiError::new(Code::TooManyRequests, detail)
        .with_header(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)))
}

/// Checks a name and secret for this request's source (see the module
/// docs for the steps): the account and the stamp of the credential that
/// matched (`Engine::credential_stamp`). `Ok(None)`: wrong credentials;
/// `429` while the source, the name or the pair is over its failed-login
/// budget, or when no verification slot frees up in time.
pub async fn check_password(
    app: &App,
    parts: &Parts,
    name: &str,
    secret: &str,
) -> Result<Option<(Account, String)>, ApiError> {
    let ip = client_ip(app, parts);
    // IMPORTANT: the attempt is counted before anything is verified, so
    // concurrent attempts cannot all pass a budget that each alone sees
    // as open. Dropping `attempt` unsettled (an error below, a client
    // that went away) refunds it.
    let attempt = app.auth.limiter.begin(ip, name).map_err(|wait| {
        too_many(
            wait,
            "too many failed logins from this address or for this account; try again later",
        )
    })?;
    if let Some(directory) = app.auth.directory_for(name) {
        // IMPORTANT: no cache. The directory is asked at every check, so
        // a user it removed or whose password it changed fails on the very
        // next request, and groups (roles, admin) follow it at each one.
        let found = directory.authenticate(name, secret).await.map_err(|e| {
            tracing::warn!(target: "berth::auth", user = name, error = %e, "LDAP login not checked");
            ApiError::new(
                Code::Unavailable,
                "the LDAP directory did not answer; try again later",
            )
        })?;
        let account = match found {
            Some(user) => {
                let n = name.to_owned();
                match blocking(app, move |e| e.directory_login(&n, &user)).await? {
                    Ok(a) => Some(a),
                    Err(berth_engine::AccountError::Invalid { what, reason }) => {
                        tracing::warn!(target: "berth::auth", user = name, %what, %reason,
                            "LDAP user not onboarded");
                        None
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => None,
        };
        match &account {
            Some(_) => attempt.succeeded(),
            None => {
                attempt.failed();
                tracing::info!(target: "berth::auth", user = name, %ip, "failed login (LDAP)");
            }
        }
        return Ok(account);
    }
    let cache_key = app.auth.cache.key(name, secret);
    if let Some(cached) = app.auth.cache.get(&cache_key) {
        // IMPORTANT: a hit holds only while the account's credential is
        // still the one verified: a password change, a secret refresh, a
        // deletion or a disabled robot changes or removes the stamp, and
        // the pair is verified again (and fails). Else the account's
        // current state (admin flag, expiry).
        let stamp = app.engine.credential_stamp(name)?;
        match app.engine.account(name)? {
            Some(a) if a != Account::Anonymous && stamp.as_deref() == Some(cached.as_str()) => {
                attempt.succeeded();
                return Ok(Some((a, cached)));
            }
            _ => app.auth.cache.remove(&cache_key),
        }
    }
    let account = verify(app, name, secret).await?;
    match &account {
        Some((_, stamp)) => {
            app.auth.cache.put(cache_key, stamp.clone());
            attempt.succeeded();
        }
        None => {
            attempt.failed();
            // Names are logged, secrets never.
            tracing::info!(target: "berth::auth", user = name, %ip, "failed login");
            app.audit
                .record(name, "user", format!("users/{name}"), "login_failure");
        }
    }
    Ok(account)
}

/// Verifies a name and secret. Users' passwords (argon2id; unknown names
/// verify against a dummy hash at the same cost) run in a verification
/// slot; robots' secrets (one sha256) on the blocking pool.
async fn verify(
    app: &App,
    name: &str,
    secret: &str,
) -> Result<Option<(Account, String)>, ApiError> {
    let (n, s) = (name.to_owned(), secret.to_owned());
    if name.starts_with(berth_engine::accounts::ROBOT_PREFIX) {
        return Ok(blocking(app, move |e| e.authenticate_stamped(&n, &s)).await??);
    }
    Ok(in_password_slot(app, move |e| e.authenticate_stamped(&n, &s)).await??)
}

/// Runs `f` — an argon2id hash or verification for a request (logins, user
/// creation) — in a verification slot, on a verification thread. Waits up
/// to [`VERIFY_WAIT`] for a slot; `429` with `Retry-After` when none frees
/// up, or at once when [`VERIFY_QUEUE_MAX`] requests are already waiting.
pub async fn in_password_slot<T, F>(app: &App, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&berth_engine::Engine) -> T + Send + 'static,
    T: Send + 'static,
{
    let slot =
        app.auth.slots.acquire().await.map_err(|wait| {
            too_many(wait, "too many password checks at once; try again shortly")
        })?;
    let engine = app.engine.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // IMPORTANT: the slot moves into the job and is released when the
    // computation ends, not when this request does: a client that hangs up
    // cannot free a slot while its argon2id still runs.
    app.auth.slots.run(Box::new(move || {
        let _slot = slot;
        let _ = tx.send(f(&engine));
    }));
    rx.await
        .map_err(|_| ApiError::internal("a password verification thread failed"))
}

/// Who is asking: anonymous without credentials; `401` for bad ones, and
/// for a bearer token where the route does not take `tokens` (everything
/// but the registry API, `/v2`: the admin, chart and GC APIs take Basic
/// credentials only, so no token can act there, whatever its claim).
pub async fn authenticate(app: &App, parts: &Parts, tokens: bool) -> Result<Principal, ApiError> {
    Ok(authenticate_stamped(app, parts, tokens).await?.0)
}

/// [`authenticate`], with the stamp of the Basic credential that signed in
/// (what the token service binds the tokens it issues to); `None` for
/// anonymous, tokens and auth off.
pub async fn authenticate_stamped(
    app: &App,
    parts: &Parts,
    tokens: bool,
) -> Result<(Principal, Option<String>), ApiError> {
    if !app.auth.enabled {
        return Ok((Principal::Open, None));
    }
    let principal = match credentials(parts) {
        Err(()) => Err(challenge(
            app,
            parts,
            None,
            Some("invalid_request"),
            "malformed Authorization header",
        )),
        // A console session (cookie) where tokens are not taken: the
        // Harbor-shaped and chart APIs, never `/v2`. A state-changing
        // request must carry the session's CSRF token.
        Ok(Credentials::None) if !tokens && crate::console::session::presented(parts) => {
            match crate::console::session::current(app, parts)? {
                Some(s) => {
                    crate::console::session::check_csrf(parts, &s)?;
                    Ok(Principal::Account(s.account))
                }
                None => Ok(Principal::Account(Account::Anonymous)),
            }
        }
        Ok(Credentials::None) => Ok(Principal::Account(Account::Anonymous)),
        Ok(Credentials::Basic { name, secret }) => {
            match check_password(app, parts, &name, &secret).await? {
                Some((a, stamp)) => return Ok((Principal::Account(a), Some(stamp))),
                None => Err(challenge(
                    app,
                    parts,
                    None,
                    None,
                    "invalid user name or password",
                )),
            }
        }
        Ok(Credentials::Bearer(_)) if !tokens => Err(challenge(
            app,
            parts,
            None,
            None,
            "registry tokens are accepted on /v2/ only; \
             sign in here with Basic credentials (a password or a robot secret)",
        )),
        Ok(Credentials::Bearer(t)) => {
            let verified = app
                .auth
                .key
                .verify(&t, ISSUER, &app.auth.service, now_secs());
            match verified {
                Ok(c) if !token_current(app, &c)? => Err(challenge(
                    app,
                    parts,
                    None,
                    Some("invalid_token"),
                    "the token's account was removed, disabled or given new credentials",
                )),
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
    };
    Ok((principal?, None))
}

/// Whether a verified token's subject still holds the credential the
/// token was issued on (one index read): a token of a removed or disabled
/// account, or issued before a password change or a secret refresh, is
/// not. Anonymous tokens have no credential.
pub fn token_current(app: &App, claims: &Claims) -> Result<bool, ApiError> {
    if claims.sub.is_empty() {
        return Ok(true);
    }
    Ok(app.engine.credential_stamp(&claims.sub)?.as_deref() == Some(claims.crd.as_str()))
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

/// What a route needs from its caller before its handler runs: declared
/// by each entry of the route table (`router.rs`) and checked by [`admit`],
/// the one place requests are authorized.
#[derive(Clone, Copy, Debug)]
pub enum Guard<'a> {
    /// Nobody is asked: `/metrics`, the chart health check, the token
    /// service (which checks the credentials it is sent itself). The
    /// handler gets the anonymous account (`Open` with auth off).
    Public,
    /// Who is asking, anonymous allowed: the handler shows only what the
    /// caller may see (the global chart index, project listings).
    Caller,
    /// Any account but anonymous, any valid token (`GET /v2/`: the `401`
    /// without credentials is what `docker login` checks).
    SignedIn,
    /// `actions` on a repository, a project or the catalog.
    Access(Target<'a>, Actions),
    /// A system administrator.
    Admin,
}

/// What a [`Guard::Access`] is on, as routed (a repository name is
/// validated only when auth is on, as part of the check).
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    Repository(&'a str),
    Project(&'a str),
    Catalog,
}

/// THE entry point: authenticates the request (bearer tokens only if the
/// route takes `tokens`) and checks `guard`. Returns the caller, which the
/// router hands to the handler: no handler authenticates or authorizes
/// from ambient state. See the module docs for the answers.
pub async fn admit(
    app: &App,
    parts: &Parts,
    tokens: bool,
    guard: Guard<'_>,
) -> Result<Principal, ApiError> {
    if !app.auth.enabled {
        return Ok(Principal::Open);
    }
    match guard {
        Guard::Public => Ok(Principal::Account(Account::Anonymous)),
        Guard::Caller => authenticate(app, parts, tokens).await,
        Guard::SignedIn => {
            let p = authenticate(app, parts, tokens).await?;
            if p.is_anonymous() && !matches!(p, Principal::Token(_)) {
                return Err(challenge(app, parts, None, None, "authentication required"));
            }
            Ok(p)
        }
        Guard::Access(target, actions) => {
            let p = authenticate(app, parts, tokens).await?;
            match target {
                Target::Repository(name) => {
                    let repo = RepoName::parse(name)?;
                    check(app, parts, &p, Resource::Repository(&repo), actions)?;
                }
                Target::Project(name) => check(app, parts, &p, Resource::Project(name), actions)?,
                Target::Catalog => check(app, parts, &p, Resource::Catalog, actions)?,
            }
            Ok(p)
        }
        Guard::Admin => {
            let p = authenticate(app, parts, tokens).await?;
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
    }
}

/// For objects found by an id that names no project in the path (robots,
/// retention policies): `missing()` (the `404` of an id nobody holds, so
/// ids are not to be probed) unless `principal` may see `project`, then
/// [`check`] that it administers it (`403`).
pub fn check_admin_of_visible(
    app: &App,
    parts: &Parts,
    principal: &Principal,
    project: &str,
    missing: impl FnOnce() -> ApiError,
) -> Result<(), ApiError> {
    let pull = Actions::of(&[Action::Pull]);
    if !permits(app, principal, Resource::Project(project), pull)? {
        return Err(missing());
    }
    let admin = Actions::of(&[Action::Admin]);
    check(app, parts, principal, Resource::Project(project), admin)
}

/// Checks that the already authenticated `principal` may do `actions` on
/// `resource`: `Ok`, or the refusal (`401` with a challenge for anonymous
/// callers and tokens lacking the scope, `403 DENIED` for accounts). Used
/// by [`admit`], and by handlers whose resource is named in the request
/// body (a robot's project), with the caller they were handed.
pub fn check(
    app: &App,
    parts: &Parts,
    principal: &Principal,
    resource: Resource<'_>,
    actions: Actions,
) -> Result<(), ApiError> {
    if permits(app, principal, resource, actions)? {
        return Ok(());
    }
    let scope = scope_of(resource, actions);
    match principal {
        Principal::Open => Ok(()),
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

/// What one counter counts, in fixed one-minute windows. Every password
/// check counts on all three; the first over budget refuses it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum LimitKey {
    /// One source and one name: `max` attempts. This is the budget an
    /// attacker guessing one account from one address has; someone else
    /// behind the same address, signing in as someone else, is not
    /// affected.
    Pair(IpAddr, String),
    /// One source, any names (spraying names): `SOURCE_FACTOR × max`.
    Source(IpAddr),
    /// One name, any sources (guessing one account from many addresses):
    /// `ACCOUNT_FACTOR × max`.
    Name(String),
}

/// The address an attempt counts against: IPv4 as is (IPv4-mapped IPv6
/// too), IPv6 by its /64 (one host usually holds a whole /64).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One counter's window: when it started and the attempts counted in it
/// (failed or still being verified).
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    count: u32,
}

/// Failed-login counters per source, per name and per pair. Attempts are
/// counted when they begin ([`LoginLimiter::begin`]) and settled when their
/// verdict is known ([`Attempt`]): so the budget holds however many
/// attempts run at once. The map holds at most the attempts of one window
/// (each one passed the verification slots, which bound their rate), and is
/// pruned of old windows when large.
struct LoginLimiter {
    max: u32,
    state: Mutex<HashMap<LimitKey, Window>>,
}

/// An attempt counted by [`LoginLimiter::begin`]. [`Attempt::failed`] keeps
/// it counted; [`Attempt::succeeded`] resets the pair's counter and
/// refunds the source and name; dropping it unsettled refunds all three
/// (nothing was verified).
struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    /// The counted keys and the window each was counted in; empty when the
    /// limit is off.
    counted: Vec<(LimitKey, Instant)>,
    settled: bool,
}

impl LoginLimiter {
    fn new(max: u32) -> LoginLimiter {
        LoginLimiter {
            max,
            state: Mutex::new(HashMap::new()),
        }
    }

    fn budget(&self, key: &LimitKey) -> u32 {
        match key {
            LimitKey::Pair(..) => self.max,
            LimitKey::Source(_) => self.max.saturating_mul(SOURCE_FACTOR),
            LimitKey::Name(_) => self.max.saturating_mul(ACCOUNT_FACTOR),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LimitKey, Window>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an attempt of `name` from `ip`, or `Err(time left)` if the
    /// pair, the source or the name is over its budget (then nothing is
    /// counted).
    fn begin(&self, ip: IpAddr, name: &str) -> Result<Attempt<'_>, Duration> {
        let mut attempt = Attempt {
            limiter: self,
            counted: Vec::new(),
            settled: false,
        };
        if self.max == 0 {
            return Ok(attempt);
        }
        let src = source_of(ip);
        let name: String = name.chars().take(MAX_KEY_NAME).collect();
        let keys = [
            LimitKey::Pair(src, name.clone()),
            LimitKey::Source(src),
            LimitKey::Name(name),
        ];
        let now = Instant::now();
        let mut state = self.lock();
        if state.len() > 100_000 {
            state.retain(|_, w| now.duration_since(w.start) < LOGIN_WINDOW);
        }
        let mut wait = None::<Duration>;
        for k in &keys {
            if let Some(w) = state.get(k) {
                let age = now.duration_since(w.start);
                if age < LOGIN_WINDOW && w.count >= self.budget(k) {
                    let left = LOGIN_WINDOW.saturating_sub(age);
                    wait = Some(wait.map_or(left, |w| w.max(left)));
                }
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        for k in keys {
            let w = state.entry(k.clone()).or_insert(Window {
                start: now,
                count: 0,
            });
            if now.duration_since(w.start) >= LOGIN_WINDOW {
                *w = Window {
                    start: now,
                    count: 0,
                };
            }
            w.count = w.count.saturating_add(1);
            attempt.counted.push((k, w.start));
        }
        Ok(attempt)
    }

    /// Takes back one attempt counted on `key` in the window that started
    /// at `start` (a later window never pays for an earlier attempt).
    fn refund(state: &mut HashMap<LimitKey, Window>, key: &LimitKey, start: Instant) {
        if let Some(w) = state.get_mut(key) {
            if w.start == start {
                w.count = w.count.saturating_sub(1);
                if w.count == 0 {
                    state.remove(key);
                }
            }
        }
    }
}

impl Attempt<'_> {
    /// The verdict was "wrong credentials": the attempt stays counted.
    fn failed(mut self) {
        self.settled = true;
    }

    /// The credentials were right: the pair starts over (its own counter
    /// only); the source and the name get this attempt back.
    fn succeeded(mut self) {
        self.settled = true;
        let mut state = self.limiter.lock();
        for (k, start) in &self.counted {
            match k {
                LimitKey::Pair(..) => {
                    state.remove(k);
                }
                _ => LoginLimiter::refund(&mut state, k, *start),
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.settled || self.counted.is_empty() {
            return;
        }
        let mut state = self.limiter.lock();
        for (k, start) in &self.counted {
            LoginLimiter::refund(&mut state, k, *start);
        }
    }
}

// ---- password verification slots --------------------------------------------

type Job = Box<dyn FnOnce() + Send>;

/// At most `n` argon2id computations at once, on `n` threads of their own,
/// and a bounded queue for the rest. Waiting requests are futures (a few
/// hundred bytes each), not blocking threads. Own threads rather than
/// tokio's blocking pool, so argon2id never takes the threads engine calls
/// need and a fixed, small set of threads ever holds its 19 MiB buffers
/// (the binary also makes the allocator return them when freed: see
/// `return_large_buffers` in `main.rs`). The threads end when the channel
/// closes, i.e. when the server's `Auth` is dropped.
struct VerifySlots {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    jobs: crossbeam_channel::Sender<Job>,
}

impl VerifySlots {
    fn new(n: usize) -> VerifySlots {
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("berth-verify-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        // A panicking job loses its answer (the request
                        // gets 500), not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password verification thread");
            }
        }
        VerifySlots {
            slots: Arc::new(Semaphore::new(n)),
            waiting: AtomicUsize::new(0),
            jobs,
        }
    }

    /// Hands `job` (holding a slot) to a verification thread. With as many
    /// threads as slots, it starts at once.
    fn run(&self, job: Job) {
        // The receivers live as long as `self`; a send fails only if every
        // thread failed to start, and then the job's answer never comes.
        let _ = self.jobs.send(job);
    }

    /// A slot, or `Err(retry after)` when the queue is full or none frees
    /// up within [`VERIFY_WAIT`].
    async fn acquire(&self) -> Result<OwnedSemaphorePermit, Duration> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= VERIFY_QUEUE_MAX {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Duration::from_secs(1));
        }
        // Decrements `waiting` however this future ends (also when dropped).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(VERIFY_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            // Timed out, or (never: it is not closed) the semaphore closed.
            _ => Err(Duration::from_secs(1)),
        }
    }
}

// ---- verified-credential cache ----------------------------------------------

/// Name-and-secret pairs verified in the last [`CREDENTIAL_CACHE_TTL`],
/// by salted hash. A hit only says the pair was right when verified; the
/// caller re-reads the account (removed accounts do not come back from the
/// cache).
struct CredentialCache {
    salt: [u8; 16],
    /// Key → when verified, and the credential stamp it was verified on.
    entries: Mutex<HashMap<String, (Instant, String)>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, String)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stamp a fresh entry was verified on.
    fn get(&self, key: &str) -> Option<String> {
        self.lock()
            .get(key)
            .filter(|(at, _)| at.elapsed() < CREDENTIAL_CACHE_TTL)
            .map(|(_, stamp)| stamp.clone())
    }

    fn put(&self, key: String, stamp: String) {
        let mut e = self.lock();
        if e.len() >= CREDENTIAL_CACHE_MAX {
            e.clear();
        }
        e.insert(key, (Instant::now(), stamp));
    }

    fn remove(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_pairs_sources_and_names() {
        let l = LoginLimiter::new(2);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let other: IpAddr = "1.2.3.5".parse().unwrap();
        // Counted at begin: two concurrent attempts fill the pair's budget.
        let a1 = l.begin(ip, "alice").unwrap();
        let a2 = l.begin(ip, "alice").unwrap();
        assert!(l.begin(ip, "alice").is_err());
        a1.failed();
        a2.failed();
        assert!(l.begin(ip, "alice").is_err());
        // Someone else from the same address, and alice from elsewhere.
        l.begin(ip, "bob").unwrap().succeeded();
        l.begin(other, "alice").unwrap().failed();
        // An attempt never verified is refunded.
        drop(l.begin(other, "alice").unwrap());
        l.begin(other, "alice").unwrap().succeeded();
        // A success resets its own pair only.
        l.begin(other, "alice").unwrap().failed();
        l.begin(other, "alice").unwrap().failed();
        assert!(l.begin(other, "alice").is_err());
        assert!(l.begin(ip, "alice").is_err());
        // The source budget (5 × 2) across names.
        let spray: IpAddr = "9.9.9.9".parse().unwrap();
        for i in 0..10 {
            l.begin(spray, &format!("u{i}")).unwrap().failed();
        }
        assert!(l.begin(spray, "someone-else").is_err());
        // The name budget (5 × 2) across sources.
        for i in 0..10u8 {
            l.begin(IpAddr::from([10, 0, 0, i]), "carol")
                .unwrap()
                .failed();
        }
        assert!(l.begin(IpAddr::from([10, 0, 1, 1]), "carol").is_err());

        let off = LoginLimiter::new(0);
        for _ in 0..10 {
            off.begin(ip, "alice").unwrap().failed();
        }
        assert!(off.begin(ip, "alice").is_ok());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        assert_eq!(source_of(mapped), "1.2.3.4".parse::<IpAddr>().unwrap());
        let l = LoginLimiter::new(1);
        l.begin(a, "alice").unwrap().failed();
        assert!(l.begin(b, "alice").is_err());
        assert!(l.begin(c, "alice").is_ok());
    }

    #[tokio::test]
    async fn verify_slots_bound_concurrency() {
        let s = VerifySlots::new(2);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let p = s.acquire().await.unwrap();
        s.run(Box::new(move || {
            let _p = p;
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        }));
        let name = rx.await.unwrap().unwrap();
        assert!(name.starts_with("berth-verify-"), "{name}");
        let p1 = s.acquire().await.unwrap();
        let _p2 = s.acquire().await.unwrap();
        assert_eq!(s.slots.available_permits(), 0);
        let waiter = tokio::spawn({
            let slots = s.slots.clone();
            async move { slots.acquire_owned().await.is_ok() }
        });
        drop(p1);
        assert!(waiter.await.unwrap());
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
