//! Console sessions: what a signed-in browser holds instead of a password.
//!
//! Signing in (`POST /console/login`) checks the name and password exactly
//! as Basic credentials are checked (`auth::check_password`: the same
//! accounts, LDAP, failed-login budgets), then creates a session: 32
//! random bytes, sent once as the `berth_session` cookie (`HttpOnly`,
//! `SameSite=Lax`, `Path=/`, `Secure` when the registry is reached over
//! https) and stored in the index only as their SHA-256
//! (`console_sessions`), with the account, the stamp of the credential
//! that signed in, a CSRF token and the expiry. So:
//! - every node of a cluster knows every session (the index is shared);
//! - a session dies with its account's credential: a password change, a
//!   disable or a deletion changes or removes the stamp, and the next
//!   request, page or API call, is anonymous (checked on every request,
//!   as tokens are);
//! - signing out deletes the record: the cookie is worthless from then on,
//!   wherever it was copied to;
//! - the index never holds a usable cookie.
//!
//! A session authenticates the console's pages and the Harbor-shaped API
//! (`/api/v2.0/…`, the chart API), never the registry API (`/v2`: Basic
//! and tokens only). Every request it authenticates whose method can
//! change state must carry the session's CSRF token in `X-CSRF-Token`
//! (the console's script sends it; another site cannot read it), and
//! must not come from another site (`Sec-Fetch-Site`, `Origin`).

use berth_engine::records::SessionRecord;
use berth_engine::Account;
use hyper::header::{COOKIE, ORIGIN};
use hyper::http::request::Parts;
use hyper::Method;

use crate::errors::{ApiError, Code};
use crate::http::App;

/// The cookie's name.
pub const COOKIE_NAME: &str = "berth_session";

/// The header a state-changing request carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a session lasts from sign-in (Harbor's portal session: 30
/// minutes idle; berth's is fixed, and revoked with the credential).
pub const SESSION_MS: u64 = 8 * 3600 * 1000;

/// A live session, as a request presented it.
#[derive(Clone, Debug)]
pub struct Session {
    pub account: Account,
    /// The token the session's state-changing requests must carry.
    pub csrf: String,
    /// The SHA-256 (hex) of the cookie: the session's key.
    key: String,
}

/// The session cookie's value in `parts`, if any.
fn cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v)
}

fn key_of(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

fn random_token() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    // The OS random source does not fail on the systems berth runs on; a
    // failure would leave zeros, so it is checked.
    if getrandom::fill(&mut b).is_err() || b == [0u8; 32] {
        return String::new();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Whether `parts` presents a session cookie at all.
pub fn presented(parts: &Parts) -> bool {
    cookie(parts).is_some()
}

/// The live session `parts` presents: `None` without a cookie, or for one
/// that is unknown, expired, signed out, or whose account's credential
/// changed since it signed in (one or two index reads).
pub fn current(app: &App, parts: &Parts) -> Result<Option<Session>, ApiError> {
    let Some(token) = cookie(parts) else {
        return Ok(None);
    };
    if token.len() != 43 {
        return Ok(None);
    }
    let key = key_of(token);
    let Some(rec) = app.engine.session(&key)? else {
        return Ok(None);
    };
    if rec.expires_ms <= berth_engine::records::now_ms() {
        return Ok(None);
    }
    // IMPORTANT: revocation. The credential that signed in must still be
    // the account's, now.
    if app.engine.credential_stamp(&rec.user)?.as_deref() != Some(rec.crd.as_str()) {
        return Ok(None);
    }
    let Some(account) = app.engine.account(&rec.user)? else {
        return Ok(None);
    };
    Ok(Some(Session {
        account,
        csrf: rec.csrf,
        key,
    }))
}

/// Whether a request authenticated by `session` may go on: safe methods
/// always; others only with the session's CSRF token and not from
/// another site.
pub fn check_csrf(parts: &Parts, session: &Session) -> Result<(), ApiError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(ApiError::new(
            Code::Denied,
            format!(
                "{why}: a signed-in console request that changes state needs the page's CSRF token"
            ),
        ))
    };
    let site = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return refuse("a request from another site");
    }
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !session.csrf_matches(sent) {
        return refuse("no valid CSRF token");
    }
    Ok(())
}

impl Session {
    /// Whether `sent` is the session's CSRF token (compared in time that
    /// does not depend on where they differ).
    pub fn csrf_matches(&self, sent: &[u8]) -> bool {
        let want = self.csrf.as_bytes();
        !want.is_empty()
            && sent.len() == want.len()
            && sent.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// Whether a console form post comes from this site: `Sec-Fetch-Site`
/// when the browser sends it, else `Origin` against the external base.
pub fn same_site(app: &App, parts: &Parts) -> bool {
    if let Some(site) = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        return site == "same-origin" || site == "none";
    }
    match parts.headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => origin == crate::auth::external_base(app, parts),
        None => true,
    }
}

/// Starts a session for `account`, signed in with the credential whose
/// stamp is `crd`: the `Set-Cookie` value to send.
pub async fn start(
    app: &App,
    parts: &Parts,
    account: &Account,
    crd: String,
) -> Result<String, ApiError> {
    let (token, csrf) = (random_token(), random_token());
    if token.is_empty() || csrf.is_empty() {
        return Err(ApiError::internal("the OS random source failed"));
    }
    let now = berth_engine::records::now_ms();
    let rec = SessionRecord {
        user: account.name().to_owned(),
        crd,
        csrf,
        created_ms: now,
        expires_ms: now + SESSION_MS,
    };
    let key = key_of(&token);
    crate::http::blocking(app, move |e| e.create_session(&key, rec)).await??;
    Ok(set_cookie(app, parts, &token, SESSION_MS / 1000))
}

/// Ends `session` (its record goes): the `Set-Cookie` value that clears
/// the cookie.
pub async fn end(app: &App, parts: &Parts, session: &Session) -> Result<String, ApiError> {
    let key = session.key.clone();
    crate::http::blocking(app, move |e| e.end_session(&key)).await??;
    Ok(set_cookie(app, parts, "", 0))
}

fn set_cookie(app: &App, parts: &Parts, value: &str, max_age: u64) -> String {
    let secure = if crate::auth::external_base(app, parts).starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}
