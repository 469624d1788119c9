//! The web console: HTML pages served by `berth serve` itself, at `/` and
//! under `/console/`.
//!
//! ```text
//! GET  /                                  → /console/projects
//! GET  /console/assets/{console.css,console.js}   embedded, ETag, gzip
//! GET  /console/login, POST /console/login        sign in (form)
//! POST /console/logout                            sign out (form, CSRF field)
//! GET  /console/projects?q=&page=                 projects
//! GET  /console/project?name=&tab=&page=          a project: repositories,
//!                                                 charts, members, robots, logs
//! GET  /console/repository?name=&page=            a repository's artifacts
//! GET  /console/artifact?name=&digest=            an artifact: tags, layers,
//!                                                 config, platforms, referrers
//! GET  /console/audit?page=&operation=            the audit log (admins)
//! GET  /console/admin/{users,gc,metrics}          administration (admins)
//! ```
//!
//! How it is built, and why:
//! - **Server-rendered HTML, no build step.** Pages are written by Rust
//!   code through [`html::Html`], which only takes markup from string
//!   literals and escapes every value; one small stylesheet and one small
//!   script (`assets/`) are compiled into the binary. Building berth stays
//!   `cargo build`, with no Node toolchain, and a page is readable without
//!   its script.
//! - **A view of the API, not a second one.** Every page reads the
//!   Harbor-shaped API in-process ([`api_get`]: the request goes through
//!   the route table, `auth::admit` and the handler, with the browser's
//!   session cookie), and every change is the page's script calling that
//!   API with the session and its CSRF token. So the console can show and
//!   do exactly what the API lets the signed-in account see and do: no
//!   permission, validation, audit entry or webhook is written twice.
//! - **Sessions** are records in the index (`session.rs`): revoked with
//!   the account's credential, deleted at sign-out, shared by a cluster.
//! - **Security headers** on every page: a Content-Security-Policy
//!   without inline scripts or styles (`default-src 'none'`, scripts and
//!   styles from `/console/assets/` only), `frame-ancestors 'none'`,
//!   `nosniff`, `Referrer-Policy: same-origin`, `Cache-Control: no-store`
//!   on pages.
//!
//! Architecture Invariant: the console never writes to the engine; its
//! only writes are sessions (sign-in, sign-out). Everything else it does
//! goes through the API.

mod assets;
pub mod html;
mod pages;
pub mod session;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE,
};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use crate::errors::ApiError;
use crate::http::{hv, App, Body};
use crate::limits::RequestBody;
use crate::router::Query;

pub use session::Session;

/// The console's path prefix.
pub const PREFIX: &str = "/console";

/// Longest sign-in form accepted.
const MAX_FORM: usize = 8 << 10;

/// Whether `path` (percent-decoded) is the console's.
pub fn owns(path: &str) -> bool {
    path == "/" || path == PREFIX || path.starts_with("/console/")
}

/// Answers a console request. Errors become pages (or, for assets, plain
/// statuses), never the API's JSON.
pub async fn handle(
    app: &Arc<App>,
    parts: Parts,
    body: RequestBody,
    path: &str,
    request_id: &str,
) -> Response<Body> {
    let mut res = match route(app, &parts, body, path, request_id).await {
        Ok(res) => res,
        Err(e) => {
            if let Some(internal) = &e.internal {
                tracing::error!(request_id, error = %internal, "console page failed");
            }
            pages::error_page(&e)
        }
    };
    if !app.proxy.external_path.is_empty() {
        res = rebase(res, &app.proxy.external_path).await;
    }
    security_headers(&mut res);
    res
}

/// Behind a proxy that serves the console at `BERTH_EXTERNAL_URL`'s path
/// (and strips it before forwarding), every URL the browser is given
/// starts with that path: `Location`, and the `href`, `action` and `src`
/// attributes of a page. Attribute values are escaped when written
/// (`html.rs`: a `"` is `&quot;`), so `href="/` only occurs where the
/// page code opened such an attribute.
async fn rebase(res: Response<Body>, base: &str) -> Response<Body> {
    let (mut parts, body) = res.into_parts();
    if let Some(to) = parts.headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
        if to.starts_with('/') {
            let to = format!("{base}{to}");
            parts.headers.insert(LOCATION, hv(&to));
        }
    }
    let html = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
    if !html {
        return Response::from_parts(parts, body);
    }
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    for attr in ["href=\"/", "action=\"/", "src=\"/"] {
        let with = format!("{}{base}/", &attr[..attr.len() - 1]);
        text = text.replace(attr, &with);
    }
    Response::from_parts(parts, Body::new(Bytes::from(text)))
}

async fn route(
    app: &Arc<App>,
    parts: &Parts,
    body: RequestBody,
    path: &str,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    let query = Query(parts.uri.query().unwrap_or(""));
    if let Some(name) = rest.strip_prefix("/assets/") {
        return Ok(assets::serve(name, &parts.method, &parts.headers));
    }
    let get = matches!(parts.method, Method::GET | Method::HEAD);
    match (rest, get) {
        ("" | "/", true) => return Ok(see_other(&format!("{PREFIX}/projects"))),
        ("/login", true) => {
            if session::current(app, parts)?.is_some() {
                return Ok(see_other(&format!("{PREFIX}/projects")));
            }
            return Ok(pages::login(app, None, &next_of(query), StatusCode::OK));
        }
        ("/login", false) if parts.method == Method::POST => {
            return sign_in(app, parts, body).await;
        }
        ("/logout", false) if parts.method == Method::POST => {
            return sign_out(app, parts, body).await;
        }
        _ => {}
    }
    if !get {
        return Err(ApiError::method_not_allowed("GET, HEAD"));
    }
    // Every other page needs a session.
    let Some(session) = session::current(app, parts)? else {
        let next = match parts.uri.path_and_query() {
            Some(pq) => pq.as_str().to_owned(),
            None => path.to_owned(),
        };
        return Ok(see_other(&format!(
            "{PREFIX}/login?next={}",
            html::query_value(&next)
        )));
    };
    let ctx = pages::Ctx::new(app, parts, &session, request_id).await?;
    match rest {
        "/projects" => pages::projects(&ctx, query).await,
        "/project" => pages::project(&ctx, query).await,
        "/repository" => pages::repository(&ctx, query).await,
        "/artifact" => pages::artifact(&ctx, query).await,
        "/audit" => pages::audit(&ctx, query).await,
        "/admin/users" => pages::users(&ctx, query).await,
        "/admin/gc" => pages::gc(&ctx, query).await,
        "/admin/metrics" => pages::metrics(&ctx).await,
        _ => Err(ApiError::new(
            crate::errors::Code::NotFound,
            format!("no console page at {path}"),
        )),
    }
}

/// Where to go after signing in: a console path from `next`, else the
/// projects page (never another site).
fn next_of(query: Query<'_>) -> String {
    match query.get("next") {
        Some(n) if n.starts_with("/console/") && !n.contains("//") && !n.contains('\\') => {
            n.into_owned()
        }
        _ => format!("{PREFIX}/projects"),
    }
}

/// `application/x-www-form-urlencoded` pairs of a small body.
async fn form(body: RequestBody) -> Result<Vec<(String, String)>, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_FORM);
    let bytes = limited
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                crate::errors::Code::BadRequest,
                "the form is too large or was cut off",
            )
        })?
        .to_bytes();
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::new(crate::errors::Code::BadRequest, "the form is not UTF-8"))?;
    // Form encoding: `+` is a space (a `+` itself comes as `%2B`).
    let decode = |s: &str| crate::router::percent_decode(&s.replace('+', " ")).into_owned();
    Ok(text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect())
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// `POST /console/login`: `principal`, `password`, `next`.
async fn sign_in(
    app: &Arc<App>,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let form = form(body).await?;
    let next = next_of(Query(&format!(
        "next={}",
        html::query_value(field(&form, "next"))
    )));
    if !session::same_site(app, parts) {
        return Ok(pages::login(
            app,
            Some("Sign-in forms are accepted from this site only."),
            &next,
            StatusCode::FORBIDDEN,
        ));
    }
    if !app.auth.enabled {
        return Ok(pages::login(
            app,
            Some("Accounts are off on this registry (auth is disabled): the console needs them."),
            &next,
            StatusCode::CONFLICT,
        ));
    }
    let (name, password) = (field(&form, "principal"), field(&form, "password"));
    let checked = if name.is_empty() || password.is_empty() {
        None
    } else {
        crate::auth::check_password(app, parts, name, password).await?
    };
    let Some((account, crd)) = checked.filter(|(a, _)| !a.name().is_empty()) else {
        return Ok(pages::login(
            app,
            Some("Wrong user name or password."),
            &next,
            StatusCode::UNAUTHORIZED,
        ));
    };
    if matches!(account, berth_engine::Account::Robot { .. }) {
        // A robot's secret is for the registry and the API, not a browser.
        return Ok(pages::login(
            app,
            Some("Robot accounts do not sign in to the console."),
            &next,
            StatusCode::FORBIDDEN,
        ));
    }
    let cookie = session::start(app, parts, &account, crd).await?;
    app.audit.record(
        account.name(),
        "user",
        format!("users/{}", account.name()),
        "login",
    );
    let mut res = see_other(&next);
    res.headers_mut().insert(SET_COOKIE, hv(&cookie));
    Ok(res)
}

/// `POST /console/logout`: the form carries the session's CSRF token.
async fn sign_out(
    app: &Arc<App>,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let form = form(body).await?;
    let mut res = see_other(&format!("{PREFIX}/login"));
    if let Some(s) = session::current(app, parts)? {
        if !s.csrf_matches(field(&form, "csrf").as_bytes()) || !session::same_site(app, parts) {
            return Err(ApiError::new(
                crate::errors::Code::Denied,
                "sign-out needs the page's CSRF token",
            ));
        }
        let cookie = session::end(app, parts, &s).await?;
        res.headers_mut().insert(SET_COOKIE, hv(&cookie));
    }
    Ok(res)
}

/// `303 See Other` to `to` (a console path).
fn see_other(to: &str) -> Response<Body> {
    let mut res = crate::http::empty(StatusCode::SEE_OTHER);
    res.headers_mut().insert(LOCATION, hv(to));
    res
}

/// An HTML page.
fn page(status: StatusCode, html: String) -> Response<Body> {
    let mut res = Response::new(Body::new(Bytes::from(html)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, hv("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, hv("no-store"));
    res
}

fn security_headers(res: &mut Response<Body>) {
    let h = res.headers_mut();
    h.insert(
        CONTENT_SECURITY_POLICY,
        hv(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
            connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-content-type-options", hv("nosniff"));
    h.insert("x-frame-options", hv("DENY"));
    h.insert("referrer-policy", hv("same-origin"));
}

/// What an in-process API read answered.
pub struct ApiAnswer {
    pub status: StatusCode,
    pub body: Value,
    /// `X-Total-Count`, on paged lists.
    pub total: Option<u64>,
}

impl ApiAnswer {
    /// The body of a `200`, or the API's refusal as an error.
    fn ok(self) -> Result<Value, ApiError> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let message = self.body["errors"][0]["message"]
            .as_str()
            .unwrap_or("the request was refused")
            .to_owned();
        let code = match self.status {
            StatusCode::NOT_FOUND => crate::errors::Code::NotFound,
            StatusCode::UNAUTHORIZED => crate::errors::Code::Unauthorized,
            StatusCode::FORBIDDEN => crate::errors::Code::Denied,
            StatusCode::BAD_REQUEST => crate::errors::Code::BadRequest,
            StatusCode::CONFLICT => crate::errors::Code::Conflict,
            _ => crate::errors::Code::Unavailable,
        };
        Err(ApiError::new(code, message))
    }
}

/// `GET path` (an `/api/v2.0/…` path and query) through the route table,
/// as the browser's session: the same authentication and authorization
/// as the browser's own API calls.
pub async fn api_get(
    app: &Arc<App>,
    parts: &Parts,
    path: &str,
    request_id: &str,
) -> Result<ApiAnswer, ApiError> {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(RequestBody::empty())
        .map_err(|e| ApiError::internal(format!("console API path {path}: {e}")))?;
    for name in [COOKIE, HOST] {
        for v in parts.headers.get_all(&name) {
            req.headers_mut().append(name.clone(), v.clone());
        }
    }
    if let Some(conn) = parts.extensions.get::<crate::proxy::ConnInfo>() {
        req.extensions_mut().insert(*conn);
    }
    // Boxed: the route table is what called the console.
    let res = Box::pin(crate::router::dispatch(app, req, request_id)).await;
    let status = res.status();
    let total = res
        .headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = match res.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(ApiAnswer {
        status,
        body,
        total,
    })
}
