//! The Docker token service: `/service/token` (only with auth enabled).
//!
//! ```text
//! GET /service/token?service=berth-registry&scope=repository:proj/app:pull,push
//!                   [&scope=…][&offline_token=true][&account=alice][&client_id=docker]
//!     Authorization: Basic …            (optional: anonymous without it)
//! → 200 {"token":"<jwt>","access_token":"<jwt>","expires_in":300,
//!        "issued_at":"2026-01-01T00:00:00Z"[,"refresh_token":"<jwt>"]}
//!
//! POST /service/token   (OAuth2, application/x-www-form-urlencoded)
//!     grant_type=password&username=…&password=…&service=…&scope=… [&access_type=offline]
//!     grant_type=refresh_token&refresh_token=…&service=…&scope=…
//! → 200 {"access_token":"<jwt>","scope":"…","expires_in":300,"issued_at":"…"[,"refresh_token":"…"]}
//! ```
//!
//! The token grants the intersection of what was asked and what the account
//! may do now (see `Engine::permissions`); asking for more is not an error,
//! the registry then answers `401 insufficient_scope`, whose
//! `error_description` says why (`auth::refusal`), as does this service's
//! log line (`berth::auth`, "scope not granted in full"). Wrong credentials
//! are `401` and count against the source's failed-login budget.

use crate::limits::RequestBody;
use berth_engine::token::Access;
use berth_engine::{Account, Action, Actions, RepoName};
use hyper::header::WWW_AUTHENTICATE;
use hyper::http::request::Parts;
use hyper::{Method, Response};
use serde_json::json;

use crate::auth::{self, ISSUER, REFRESH_AUD_SUFFIX};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, json, read_small_body, App, Body};
use crate::router::Query;
// The form and scope grammars live in `berth_wire::token_request`, beside
// their fuzz target.
use crate::time::rfc3339_secs;
use berth_wire::token_request::{Form, Scope};

/// Largest form body accepted.
const MAX_FORM: usize = 64 << 10;

pub async fn handle(
    app: &App,
    parts: &Parts,
    query: Query<'_>,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    if !app.auth.enabled {
        return Err(ApiError::new(
            Code::RouteUnknown,
            "auth is disabled on this registry: there is no token service",
        ));
    }
    match parts.method {
        Method::GET => get(app, parts, query).await,
        Method::POST => post(app, parts, body).await,
        _ => Err(ApiError::method_not_allowed("GET, POST")),
    }
}

fn check_service(app: &App, service: Option<&str>) -> Result<(), ApiError> {
    match service {
        Some(s) if !s.is_empty() && s != app.auth.service => Err(ApiError::new(
            Code::BadRequest,
            format!(
                "unknown service {s:?}; this token service issues tokens for {:?}",
                app.auth.service
            ),
        )),
        _ => Ok(()),
    }
}

fn bad_credentials() -> ApiError {
    ApiError::new(Code::Unauthorized, "invalid user name or password")
        .with_header(WWW_AUTHENTICATE, crate::http::hv("Basic realm=\"berth\""))
}

async fn get(app: &App, parts: &Parts, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    check_service(app, query.get("service").as_deref())?;
    let (account, stamp) = match auth::authenticate_stamped(app, parts, false).await {
        Ok((auth::Principal::Account(a), stamp)) => (a, stamp.unwrap_or_default()),
        // Bearer credentials are not a login.
        Ok(_) => return Err(bad_credentials()),
        Err(e) if e.code == Code::Unauthorized => return Err(bad_credentials()),
        Err(e) => return Err(e),
    };
    let scopes: Vec<String> = query
        .all("scope")
        .flat_map(|s| {
            s.split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let access = grant(app, &account, &scopes)?;
    let (token, claims) = app.auth.access_token(account.name(), &stamp, access);
    let mut out = json!({
        "token": token,
        "access_token": token,
        "expires_in": claims.exp - claims.iat,
        "issued_at": rfc3339_secs(claims.iat),
    });
    let offline = query.get("offline_token").as_deref() == Some("true");
    if offline && account != Account::Anonymous {
        out["refresh_token"] =
            json!(app
                .auth
                .refresh_token(account.name(), &stamp, expiry(&account)));
    }
    Ok(json(
        serde_json::to_vec(&out).map_err(ApiError::internal)?,
        "application/json",
    ))
}

fn expiry(account: &Account) -> Option<u64> {
    match account {
        Account::Robot { expires_ms, .. } => *expires_ms,
        _ => None,
    }
}

async fn post(app: &App, parts: &Parts, body: RequestBody) -> Result<Response<Body>, ApiError> {
    let raw = read_small_body(body, MAX_FORM).await?;
    let text = std::str::from_utf8(&raw)
        .map_err(|_| ApiError::new(Code::BadRequest, "the form is not UTF-8"))?;
    let form = Form::parse(text);
    check_service(app, form.get("service"))?;
    let scopes: Vec<String> = form
        .all("scope")
        .flat_map(|s| s.split(' '))
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect();
    let (account, stamp, refresh) = match form.get("grant_type") {
        Some("password") => {
            let (Some(user), Some(password)) = (form.get("username"), form.get("password")) else {
                return Err(ApiError::new(
                    Code::BadRequest,
                    "grant_type=password needs username and password",
                ));
            };
            let Some((a, stamp)) = auth::check_password(app, parts, user, password).await? else {
                return Err(bad_credentials());
            };
            let refresh = (form.get("access_type") == Some("offline"))
                .then(|| app.auth.refresh_token(a.name(), &stamp, expiry(&a)));
            (a, stamp, refresh)
        }
        Some("refresh_token") => {
            let Some(rt) = form.get("refresh_token") else {
                return Err(ApiError::new(
                    Code::BadRequest,
                    "grant_type=refresh_token needs refresh_token",
                ));
            };
            let aud = format!("{}{REFRESH_AUD_SUFFIX}", app.auth.service);
            let claims = app
                .auth
                .key
                .verify(rt, ISSUER, &aud, auth::now_secs())
                .map_err(|_| bad_credentials())?;
            // The account must still exist, hold the credential the refresh
            // token was issued on, and not be disabled or expired.
            if claims.sub.is_empty() || !auth::token_current(app, &claims)? {
                return Err(bad_credentials());
            }
            let a = match ldap_user(app, &claims.sub).await? {
                // An LDAP user: the directory is asked whether the user is
                // still there (and their groups and admin flag are taken
                // again), as a login would.
                Some(directory) => {
                    let found = directory.lookup(&claims.sub).await.map_err(|e| {
                        tracing::warn!(target: "berth::auth", user = %claims.sub, error = %e,
                            "LDAP refresh not checked");
                        ApiError::new(
                            Code::Unavailable,
                            "the LDAP directory did not answer; try again later",
                        )
                    })?;
                    let Some(user) = found else {
                        return Err(bad_credentials());
                    };
                    let n = claims.sub.clone();
                    let (a, stamp) = blocking(app, move |e| e.directory_login(&n, &user)).await??;
                    if stamp != claims.crd {
                        return Err(bad_credentials());
                    }
                    a
                }
                None => match app.engine.account(&claims.sub)? {
                    Some(a) => a,
                    None => return Err(bad_credentials()),
                },
            };
            (a, claims.crd, Some(rt.to_owned()))
        }
        other => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("unsupported grant_type {other:?}; use password or refresh_token"),
            ))
        }
    };
    let access = grant(app, &account, &scopes)?;
    let granted: Vec<String> = access
        .iter()
        .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
        .collect();
    let (token, claims) = app.auth.access_token(account.name(), &stamp, access);
    let mut out = json!({
        "access_token": token,
        "token": token,
        "scope": granted.join(" "),
        "expires_in": claims.exp - claims.iat,
        "issued_at": rfc3339_secs(claims.iat),
    });
    if let Some(r) = refresh {
        out["refresh_token"] = json!(r);
    }
    Ok(json(
        serde_json::to_vec(&out).map_err(ApiError::internal)?,
        "application/json",
    ))
}

/// The directory `name` signs in against, if it is an LDAP user in
/// `ldap_auth` mode.
async fn ldap_user<'a>(
    app: &'a App,
    name: &str,
) -> Result<Option<&'a crate::ldap::Directory>, ApiError> {
    let Some(directory) = app.auth.directory_for(name) else {
        return Ok(None);
    };
    let n = name.to_owned();
    let ldap = blocking(app, move |e| e.user(&n))
        .await??
        .is_some_and(|u| u.is_ldap());
    Ok(ldap.then_some(directory))
}

/// What `account` gets of `scopes`: per requested repository, the
/// requested actions it may do now (`*` only with every action). Scopes
/// that grant nothing are left out; each scope not granted in full is
/// logged with the reason. `registry:catalog:*` is granted to every caller
/// (the catalog lists only what the token's subject may pull).
pub fn grant(app: &App, account: &Account, scopes: &[String]) -> Result<Vec<Access>, ApiError> {
    let mut out: Vec<Access> = Vec::new();
    for scope in scopes {
        let Some(Scope {
            kind,
            name,
            actions,
        }) = Scope::parse(scope)
        else {
            continue;
        };
        match kind {
            "repository" => {
                let Ok(repo) = RepoName::parse(name) else {
                    continue;
                };
                let allowed = app.engine.permissions(account, repo.project())?;
                let mut requested = Actions::NONE;
                let mut granted = Actions::NONE;
                let mut star = false;
                for a in actions.split(',') {
                    if a == "*" {
                        requested = requested.union(Actions::ALL);
                        star |= allowed == Actions::ALL;
                    } else if let Some(a) = Action::parse(a) {
                        requested = requested.union(Actions::of(&[a]));
                        if allowed.contains(a) {
                            granted = granted.union(Actions::of(&[a]));
                        }
                    }
                }
                let mut names = granted.names();
                if star {
                    names.push("*".into());
                }
                let resource = auth::Resource::Repository(&repo);
                if let Some(why) = auth::refusal(app, account, resource, requested)? {
                    tracing::info!(target: "berth::auth", user = account.name(), scope = %scope,
                        granted = %names.join(","), reason = %why, "scope not granted in full");
                }
                if names.is_empty() {
                    continue;
                }
                match out
                    .iter_mut()
                    .find(|a| a.kind == "repository" && a.name == repo.as_str())
                {
                    Some(a) => {
                        for n in names {
                            if !a.actions.contains(&n) {
                                a.actions.push(n);
                            }
                        }
                    }
                    None => out.push(Access {
                        kind: "repository".into(),
                        name: repo.as_str().to_owned(),
                        actions: names,
                    }),
                }
            }
            "registry" if name == "catalog" && !out.iter().any(|a| a.kind == "registry") => {
                out.push(Access {
                    kind: "registry".into(),
                    name: "catalog".into(),
                    actions: vec!["*".into()],
                });
            }
            _ => {
                tracing::debug!(target: "berth::auth", user = account.name(), scope = %scope,
                    "scope not understood; nothing granted");
            }
        }
    }
    Ok(out)
}
