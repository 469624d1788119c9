//! The console's pages: each reads the API in-process ([`super::api_get`])
//! and writes HTML through [`Html`]. Controls that change something are
//! forms or buttons the script (`assets/console.js`) sends to the API
//! (`data-api-method`, `data-api-path`); a page shows a control only when
//! the signed-in account's permissions allow what it does, so no button
//! can only fail with `403`.

use std::sync::Arc;

use berth_engine::{Account, Action, Actions};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::Value;

use super::html::{query_value, seg, Html};
use super::{api_get, assets, page, Session, PREFIX};
use crate::errors::{ApiError, Code};
use crate::http::{App, Body};
use crate::router::Query;

/// Rows per page of every list.
const PAGE_SIZE: u64 = 25;

/// What every page of a signed-in account knows.
pub struct Ctx<'a> {
    app: &'a Arc<App>,
    parts: &'a Parts,
    session: &'a Session,
    request_id: &'a str,
    /// System administrator.
    admin: bool,
    /// `host[:port]` of pull commands.
    registry_host: String,
    /// `scheme://host[:port]`.
    base: String,
}

impl<'a> Ctx<'a> {
    pub async fn new(
        app: &'a Arc<App>,
        parts: &'a Parts,
        session: &'a Session,
        request_id: &'a str,
    ) -> Result<Ctx<'a>, ApiError> {
        let base = crate::auth::external_base(app, parts);
        let registry_host = base
            .split_once("://")
            .map_or(base.as_str(), |(_, h)| h)
            .to_owned();
        Ok(Ctx {
            app,
            parts,
            session,
            request_id,
            admin: session.account.is_admin(),
            registry_host,
            base,
        })
    }

    async fn get(&self, path: &str) -> Result<(Value, Option<u64>), ApiError> {
        let a = api_get(self.app, self.parts, path, self.request_id).await?;
        let total = a.total;
        Ok((a.ok()?, total))
    }

    /// What the account may do in `project` (the API's own rule).
    fn may(&self, project: &str) -> Result<Actions, ApiError> {
        Ok(self
            .app
            .engine
            .permissions(&self.session.account, project)?)
    }

    fn name(&self) -> &str {
        self.session.account.name()
    }
}

/// The page's frame: head, top bar (with sign-out), `main`.
fn layout(ctx: Option<&Ctx<'_>>, title: &str, content: Html) -> String {
    let mut h = Html::new();
    h.raw("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .open("title", &[])
        .text(title)
        .text(" · berth")
        .close("title");
    let css = format!("{PREFIX}/assets/console.css?v={}", assets::CSS.hash());
    let js = format!("{PREFIX}/assets/console.js?v={}", assets::JS.hash());
    h.open("link", &[("rel", "stylesheet"), ("href", &css)]);
    // No icon to fetch (and none from elsewhere).
    h.raw("<link rel=\"icon\" href=\"data:,\">");
    h.raw("<script defer").attr("src", &js).raw("></script>");
    if let Some(ctx) = ctx {
        h.open(
            "meta",
            &[("name", "csrf-token"), ("content", &ctx.session.csrf)],
        );
        // What the script puts before the API paths it calls (see
        // `console::rebase`).
        h.open(
            "meta",
            &[
                ("name", "berth-base"),
                ("content", &ctx.app.proxy.external_path),
            ],
        );
    }
    h.raw("</head><body><header class=\"top\">");
    h.open(
        "a",
        &[("class", "brand"), ("href", &format!("{PREFIX}/projects"))],
    )
    .raw("berth")
    .close("a");
    if let Some(ctx) = ctx {
        h.raw("<nav>");
        h.link(&format!("{PREFIX}/projects"), "Projects");
        if ctx.admin {
            h.link(&format!("{PREFIX}/audit"), "Audit log")
                .link(&format!("{PREFIX}/admin/users"), "Users")
                .link(&format!("{PREFIX}/admin/gc"), "Garbage collection")
                .link(&format!("{PREFIX}/admin/metrics"), "Storage and requests");
        }
        h.raw("</nav>");
        h.open(
            "form",
            &[
                ("class", "signout"),
                ("method", "post"),
                ("action", &format!("{PREFIX}/logout")),
            ],
        );
        h.open(
            "input",
            &[
                ("type", "hidden"),
                ("name", "csrf"),
                ("value", &ctx.session.csrf),
            ],
        );
        h.el("span", &[("class", "who")], ctx.name());
        h.raw("<button type=\"submit\">Sign out</button></form>");
    }
    h.raw("</header><main>");
    h.append(content);
    h.raw("</main></body></html>");
    h.into_string()
}

fn ok_page(ctx: &Ctx<'_>, title: &str, content: Html) -> Result<Response<Body>, ApiError> {
    Ok(page(StatusCode::OK, layout(Some(ctx), title, content)))
}

/// An error as a page, with the API's status and message.
pub fn error_page(e: &ApiError) -> Response<Body> {
    let status = e.status();
    let mut h = Html::new();
    h.raw("<section class=\"error-page\">")
        .el("h1", &[], status.canonical_reason().unwrap_or("Error"))
        .el("p", &[], &e.public_message())
        .link(&format!("{PREFIX}/projects"), "Back to projects")
        .raw("</section>");
    page(status, layout(None, "Error", h))
}

/// The sign-in page; `error` after a failed attempt.
pub fn login(app: &App, error: Option<&str>, next: &str, status: StatusCode) -> Response<Body> {
    let mut h = Html::new();
    h.raw("<section class=\"login\"><h1>Sign in</h1>");
    if let Some(e) = error {
        h.el("p", &[("class", "error"), ("role", "alert")], e);
    }
    if !app.auth.enabled {
        h.el(
            "p",
            &[("class", "error")],
            "Auth is off on this registry: the console needs accounts (BERTH_AUTH_ENABLED=true).",
        );
    }
    h.open(
        "form",
        &[("method", "post"), ("action", &format!("{PREFIX}/login"))],
    );
    h.open(
        "input",
        &[("type", "hidden"), ("name", "next"), ("value", next)],
    );
    h.raw("<label>User name <input name=\"principal\" autocomplete=\"username\" required autofocus></label>")
        .raw("<label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>")
        .raw("<button type=\"submit\" class=\"primary\">Sign in</button></form></section>");
    page(status, layout(None, "Sign in", h))
}

// ---- helpers -----------------------------------------------------------------

fn page_of(query: Query<'_>) -> u64 {
    query
        .get("page")
        .and_then(|p| p.parse::<u64>().ok())
        .filter(|p| *p > 0 && *p < 1_000_000)
        .unwrap_or(1)
}

/// Previous/next links for page `page` of `total` rows; `href(n)` is
/// page n's URL.
fn pager(h: &mut Html, page: u64, total: u64, href: impl Fn(u64) -> String) {
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    h.raw("<nav class=\"pager\" aria-label=\"pages\">");
    if page > 1 {
        h.open("a", &[("href", &href(page - 1)), ("rel", "prev")])
            .raw("← Previous")
            .close("a");
    }
    h.raw("<span>Page ")
        .num(page)
        .raw(" of ")
        .num(pages)
        .raw(" (")
        .num(total)
        .raw(")</span>");
    if page < pages {
        h.open("a", &[("href", &href(page + 1)), ("rel", "next")])
            .raw("Next →")
            .close("a");
    }
    h.raw("</nav>");
}

fn s<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key].as_str().unwrap_or("")
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Bytes as B, KiB, MiB, GiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Harbor's timestamps, shortened to the minute ("2026-12-03 08:15").
fn when(t: &str) -> String {
    if t.is_empty() || t.starts_with("0001-") {
        return "never".into();
    }
    t.replace('T', " ").chars().take(16).collect()
}

/// A button that copies `text`.
fn copy_button(h: &mut Html, text: &str, label: &str) {
    h.raw("<span class=\"copy\">")
        .el("code", &[], text)
        .open(
            "button",
            &[
                ("type", "button"),
                ("data-copy", text),
                ("aria-label", label),
            ],
        )
        .raw("Copy</button></span>");
}

/// A button that sends `method path` (no body) to the API after
/// confirming `confirm`, then reloads.
fn api_button(h: &mut Html, method: &'static str, path: &str, confirm: &str, label: &str) {
    h.open(
        "button",
        &[
            ("type", "button"),
            ("class", "danger"),
            ("data-api-method", method),
            ("data-api-path", path),
            ("data-confirm", confirm),
        ],
    )
    .text(label)
    .close("button");
}

/// The start of a form the script sends to the API as JSON (fields named
/// by their JSON path; `data-type` says how a value is read), and the
/// element it reports errors and results in.
fn api_form(h: &mut Html, method: &'static str, path: &str, class: &'static str) {
    h.open(
        "form",
        &[
            ("class", class),
            ("data-api-method", method),
            ("data-api-path", path),
        ],
    );
}

fn end_form(h: &mut Html, submit: &'static str) {
    h.raw("<button type=\"submit\" class=\"primary\">")
        .raw(submit)
        .raw("</button><p class=\"result\" role=\"status\"></p></form>");
}

/// A project's path segment in API paths (names are checked by the API).
fn api_project(p: &str) -> String {
    seg(p).replace('/', "%2F")
}

/// A repository's name within its project, as Harbor's API wants it in a
/// path: slashes encoded twice (`%252F`).
fn api_repo(r: &str) -> String {
    seg(r).replace('/', "%252F")
}

fn split_repo(name: &str) -> Result<(&str, &str), ApiError> {
    berth_engine::RepoName::parse(name)?;
    name.split_once('/').ok_or_else(|| {
        ApiError::new(
            Code::NameInvalid,
            format!("{name} is not project/repository"),
        )
    })
}

// ---- projects ----------------------------------------------------------------

pub async fn projects(ctx: &Ctx<'_>, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    let page = page_of(query);
    let q = query.get("q").map(|q| q.into_owned()).unwrap_or_default();
    let mut path = format!("/api/v2.0/projects?page={page}&page_size={PAGE_SIZE}");
    if !q.is_empty() {
        path.push_str(&format!("&name={}", query_value(&q)));
    }
    let (list, total) = ctx.get(&path).await?;
    let mut h = Html::new();
    h.raw("<div class=\"bar\"><h1>Projects</h1>");
    h.open(
        "form",
        &[
            ("method", "get"),
            ("action", &format!("{PREFIX}/projects")),
            ("class", "search"),
        ],
    );
    h.open(
        "input",
        &[
            ("type", "search"),
            ("name", "q"),
            ("value", &q),
            ("placeholder", "Search projects"),
            ("aria-label", "Search projects"),
        ],
    );
    h.raw("<button type=\"submit\">Search</button></form></div>");
    if may_create_project(ctx) {
        h.raw("<details class=\"create\"><summary>New project</summary>");
        api_form(&mut h, "POST", "/api/v2.0/projects", "stack");
        h.raw("<label>Name <input name=\"project_name\" required pattern=\"[a-z0-9]+(?:[._\\-][a-z0-9]+)*\"></label>")
            .raw("<label><input type=\"checkbox\" name=\"metadata.public\" data-type=\"bool-string\"> Public (anyone may pull)</label>")
            .raw("<label>Storage quota, GiB (empty: none) <input name=\"storage_limit\" type=\"number\" min=\"0\" step=\"any\" data-type=\"gib\"></label>");
        end_form(&mut h, "Create project");
        h.raw("</details>");
    }
    h.raw("<table class=\"list\"><thead><tr><th>Name</th><th>Access</th><th>Repositories</th><th>Quota</th><th>Created</th></tr></thead><tbody>");
    for p in list.as_array().into_iter().flatten() {
        let name = s(p, "name");
        let summary = ctx
            .get(&format!("/api/v2.0/projects/{}/summary", api_project(name)))
            .await
            .map(|(v, _)| v)
            .unwrap_or(Value::Null);
        h.raw("<tr><td>");
        h.link(
            &format!("{PREFIX}/project?name={}", query_value(name)),
            name,
        );
        h.raw("</td><td>");
        let public = p["metadata"]["public"].as_str() == Some("true");
        h.el(
            "span",
            &[("class", if public { "pill public" } else { "pill" })],
            if public { "Public" } else { "Private" },
        );
        h.raw("</td><td>")
            .num(n(&summary, "repo_count"))
            .raw("</td><td>");
        quota_bar(&mut h, &summary["quota"]);
        h.raw("</td><td>")
            .text(&when(s(p, "creation_time")))
            .raw("</td></tr>");
    }
    h.raw("</tbody></table>");
    pager(&mut h, page, total.unwrap_or(0), |n| {
        format!("{PREFIX}/projects?q={}&page={n}", query_value(&q))
    });
    ok_page(ctx, "Projects", h)
}

fn may_create_project(ctx: &Ctx<'_>) -> bool {
    use crate::config::ProjectCreation;
    match ctx.session.account {
        Account::User { .. } => {
            ctx.admin || ctx.app.auth.project_creation == ProjectCreation::Everyone
        }
        _ => false,
    }
}

/// Used of hard storage, as a bar (Harbor's `Quota`: `hard.storage` -1 is
/// no limit).
fn quota_bar(h: &mut Html, quota: &Value) {
    let used = quota["used"]["storage"].as_u64().unwrap_or(0);
    match quota["hard"]["storage"].as_i64() {
        Some(hard) if hard >= 0 => {
            let pct = if hard == 0 {
                100.0
            } else {
                (used as f64 / hard as f64 * 100.0).min(100.0)
            };
            let class = if pct >= 90.0 { "meter full" } else { "meter" };
            h.open(
                "meter",
                &[
                    ("class", class),
                    ("min", "0"),
                    ("max", &hard.to_string()),
                    ("value", &used.to_string()),
                ],
            )
            .close("meter");
            h.el(
                "span",
                &[("class", "muted")],
                &format!("{} of {}", bytes(used), bytes(hard as u64)),
            );
        }
        _ => {
            h.el(
                "span",
                &[("class", "muted")],
                &format!("{} (no limit)", bytes(used)),
            );
        }
    }
}

// ---- one project -----------------------------------------------------------

const TABS: [(&str, &str); 7] = [
    ("repositories", "Repositories"),
    ("charts", "Charts"),
    ("members", "Members"),
    ("robots", "Robot accounts"),
    ("retention", "Tag retention"),
    ("webhooks", "Webhooks"),
    ("logs", "Logs"),
];

/// Tabs only a project's administrators see.
const ADMIN_TABS: [&str; 5] = ["members", "robots", "retention", "webhooks", "logs"];

pub async fn project(ctx: &Ctx<'_>, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    let name = query
        .get("name")
        .map(|n| n.into_owned())
        .unwrap_or_default();
    // The API's `404` for a project the account cannot see, as a page.
    let (p, _) = ctx
        .get(&format!("/api/v2.0/projects/{}", api_project(&name)))
        .await?;
    let (summary, _) = ctx
        .get(&format!(
            "/api/v2.0/projects/{}/summary",
            api_project(&name)
        ))
        .await?;
    let may = ctx.may(&name)?;
    let admin = may.contains(Action::Admin);
    let tab = query
        .get("tab")
        .map(|t| t.into_owned())
        .unwrap_or_else(|| "repositories".into());
    let mut h = Html::new();
    h.raw("<div class=\"bar\"><h1>");
    h.link(&format!("{PREFIX}/projects"), "Projects")
        .raw(" / ")
        .text(&name);
    h.raw("</h1>");
    let public = p["metadata"]["public"].as_str() == Some("true");
    h.el(
        "span",
        &[("class", if public { "pill public" } else { "pill" })],
        if public { "Public" } else { "Private" },
    );
    h.raw("</div><div class=\"facts\">");
    quota_bar(&mut h, &summary["quota"]);
    h.raw("</div><nav class=\"tabs\">");
    for (key, label) in TABS {
        if ADMIN_TABS.contains(&key) && !admin {
            continue;
        }
        let href = format!("{PREFIX}/project?name={}&tab={key}", query_value(&name));
        let class = if key == tab { "current" } else { "" };
        h.open("a", &[("href", &href), ("class", class)])
            .text(label)
            .close("a");
    }
    h.raw("</nav>");
    let page = page_of(query);
    match tab.as_str() {
        "repositories" => repositories_tab(ctx, &mut h, &name, page, may).await?,
        "charts" => charts_tab(ctx, &mut h, &name).await?,
        "members" if admin => members_tab(ctx, &mut h, &name).await?,
        "robots" if admin => robots_tab(ctx, &mut h, &name).await?,
        "logs" if admin => logs_tab(ctx, &mut h, &name, page).await?,
        "retention" if admin => retention_tab(ctx, &mut h, &p, query).await?,
        "webhooks" if admin => webhooks_tab(ctx, &mut h, &name).await?,
        _ => return Err(ApiError::new(Code::NotFound, format!("no tab {tab} here"))),
    }
    if admin {
        h.raw("<section class=\"settings\"><h2>Settings</h2>");
        api_form(
            &mut h,
            "PUT",
            &format!("/api/v2.0/projects/{}", api_project(&name)),
            "inline",
        );
        h.raw("<label><input type=\"checkbox\" name=\"metadata.public\" data-type=\"bool-string\"");
        if public {
            h.raw(" checked");
        }
        h.raw("> Public</label>");
        end_form(&mut h, "Save");
        if ctx.admin {
            // Harbor's quota id is berth's project id (one quota each).
            let id = n(&p, "project_id");
            if id > 0 {
                api_form(&mut h, "PUT", &format!("/api/v2.0/quotas/{id}"), "inline");
                h.raw("<label>Storage quota, GiB (-1: none) <input name=\"hard.storage\" type=\"number\" min=\"-1\" step=\"any\" required data-type=\"gib\"></label>");
                end_form(&mut h, "Set quota");
            }
        }
        h.raw("</section>");
    }
    ok_page(ctx, &name, h)
}

async fn repositories_tab(
    ctx: &Ctx<'_>,
    h: &mut Html,
    project: &str,
    page: u64,
    may: Actions,
) -> Result<(), ApiError> {
    let (list, total) = ctx
        .get(&format!(
            "/api/v2.0/projects/{}/repositories?page={page}&page_size={PAGE_SIZE}",
            api_project(project)
        ))
        .await?;
    h.raw("<table class=\"list\"><thead><tr><th>Repository</th><th>Artifacts</th><th>Size</th><th>Pulls</th><th>Last push</th>");
    if may.contains(Action::Delete) {
        h.raw("<th></th>");
    }
    h.raw("</tr></thead><tbody>");
    for r in list.as_array().into_iter().flatten() {
        let name = s(r, "name");
        h.raw("<tr><td>");
        h.link(
            &format!("{PREFIX}/repository?name={}", query_value(name)),
            name,
        );
        h.raw("</td><td>")
            .num(n(r, "artifact_count"))
            .raw("</td><td>")
            .text(&bytes(n(r, "size")))
            .raw("</td><td>")
            .num(n(r, "pull_count"));
        h.raw("</td><td>")
            .text(&when(s(r, "update_time")))
            .raw("</td>");
        if may.contains(Action::Delete) {
            let within = name.split_once('/').map_or(name, |(_, r)| r);
            h.raw("<td>");
            api_button(
                h,
                "DELETE",
                &format!(
                    "/api/v2.0/projects/{}/repositories/{}",
                    api_project(project),
                    api_repo(within)
                ),
                &format!("Delete repository {name} and all its artifacts?"),
                "Delete",
            );
            h.raw("</td>");
        }
        h.raw("</tr>");
    }
    h.raw("</tbody></table>");
    pager(h, page, total.unwrap_or(0), |n| {
        format!(
            "{PREFIX}/project?name={}&tab=repositories&page={n}",
            query_value(project)
        )
    });
    let example = format!("{}/{project}/app:1.0", ctx.registry_host);
    h.raw("<p class=\"hint\">Push an image: ");
    copy_button(
        h,
        &format!("docker push {example}"),
        "Copy the push command",
    );
    h.raw("</p>");
    Ok(())
}

async fn charts_tab(ctx: &Ctx<'_>, h: &mut Html, project: &str) -> Result<(), ApiError> {
    let (list, _) = ctx
        .get(&format!("/api/chartrepo/{}/charts", api_project(project)))
        .await?;
    h.raw("<p>");
    copy_button(
        h,
        &format!("helm repo add {project} {}/chartrepo/{project}", ctx.base),
        "Copy the helm repo add command",
    );
    h.raw("</p><table class=\"list\"><thead><tr><th>Chart</th><th>Latest version</th><th>App version</th><th>Versions</th><th>Pull</th></tr></thead><tbody>");
    for c in list.as_array().into_iter().flatten() {
        let name = s(c, "name");
        let latest = s(c, "latest_version");
        h.raw("<tr><td>")
            .text(name)
            .raw("</td><td>")
            .text(latest)
            .raw("</td><td>");
        h.text(s(c, "app_version"))
            .raw("</td><td>")
            .num(n(c, "total_versions"))
            .raw("</td><td>");
        copy_button(
            h,
            &format!("helm pull {project}/{name} --version {latest}"),
            "Copy the helm pull command",
        );
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table>");
    Ok(())
}

const ROLES: [(u64, &str); 4] = [
    (1, "Project admin"),
    (4, "Maintainer"),
    (2, "Developer"),
    (3, "Guest"),
];

async fn members_tab(ctx: &Ctx<'_>, h: &mut Html, project: &str) -> Result<(), ApiError> {
    let base = format!("/api/v2.0/projects/{}/members", api_project(project));
    let (list, _) = ctx.get(&format!("{base}?page_size=100")).await?;
    h.raw("<table class=\"list\"><thead><tr><th>Member</th><th>Type</th><th>Role</th><th></th></tr></thead><tbody>");
    for m in list.as_array().into_iter().flatten() {
        let id = n(m, "id");
        h.raw("<tr><td>").text(s(m, "entity_name")).raw("</td><td>");
        h.text(if s(m, "entity_type") == "g" {
            "LDAP group"
        } else {
            "User"
        });
        h.raw("</td><td>");
        api_form(h, "PUT", &format!("{base}/{id}"), "inline");
        role_select(h, n(m, "role_id"));
        end_form(h, "Change");
        h.raw("</td><td>");
        api_button(
            h,
            "DELETE",
            &format!("{base}/{id}"),
            &format!("Remove {} from {project}?", s(m, "entity_name")),
            "Remove",
        );
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table><h2>Add a member</h2>");
    api_form(h, "POST", &base, "inline");
    h.raw("<label>User name <input name=\"member_user.username\" required></label>");
    role_select(h, 2);
    end_form(h, "Add");
    Ok(())
}

fn role_select(h: &mut Html, current: u64) {
    h.raw("<select name=\"role_id\" data-type=\"number\" aria-label=\"Role\">");
    for (id, label) in ROLES {
        h.raw("<option").attr("value", &id.to_string());
        if id == current {
            h.raw(" selected");
        }
        h.raw(">").text(label).close("option");
    }
    h.raw("</select>");
}

async fn robots_tab(ctx: &Ctx<'_>, h: &mut Html, project: &str) -> Result<(), ApiError> {
    let (p, _) = ctx
        .get(&format!("/api/v2.0/projects/{}", api_project(project)))
        .await?;
    let pid = n(&p, "project_id");
    let (list, _) = ctx
        .get(&format!(
            "/api/v2.0/robots?q=Level%3Dproject%2CProjectID%3D{pid}&page_size=100"
        ))
        .await?;
    h.raw("<table class=\"list\"><thead><tr><th>Name</th><th>Permissions</th><th>Expires</th><th>Status</th><th></th></tr></thead><tbody>");
    for r in list.as_array().into_iter().flatten() {
        let id = n(r, "id");
        let actions: Vec<&str> = r["permissions"][0]["access"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["action"].as_str())
            .collect();
        h.raw("<tr><td>")
            .text(s(r, "name"))
            .raw("</td><td>")
            .text(&actions.join(", "))
            .raw("</td><td>");
        match r["expires_at"].as_i64() {
            Some(e) if e > 0 => h.text(&crate::time::rfc3339_secs(e as u64).replace('T', " ")),
            _ => h.text("never"),
        };
        h.raw("</td><td>")
            .text(if r["disable"].as_bool() == Some(true) {
                "disabled"
            } else {
                "active"
            });
        h.raw("</td><td class=\"actions\">");
        h.open(
            "button",
            &[
                ("type", "button"),
                ("data-api-method", "PATCH"),
                ("data-api-path", &format!("/api/v2.0/robots/{id}")),
                ("data-api-body", "{}"),
                ("data-show-secret", "1"),
                (
                    "data-confirm",
                    "Refresh the secret? The old one stops working at once.",
                ),
            ],
        )
        .raw("Refresh secret</button>");
        api_button(
            h,
            "DELETE",
            &format!("/api/v2.0/robots/{id}"),
            &format!("Delete {}?", s(r, "name")),
            "Delete",
        );
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table><h2>New robot account</h2>");
    api_form(h, "POST", "/api/v2.0/robots", "stack");
    h.open(
        "input",
        &[("type", "hidden"), ("name", "level"), ("value", "project")],
    );
    h.open(
        "input",
        &[
            ("type", "hidden"),
            ("name", "permissions.0.kind"),
            ("value", "project"),
        ],
    );
    h.open(
        "input",
        &[
            ("type", "hidden"),
            ("name", "permissions.0.namespace"),
            ("value", project),
        ],
    );
    h.raw("<label>Name <input name=\"name\" required pattern=\"[a-z0-9]+(?:[._\\-][a-z0-9]+)*\"></label>")
        .raw("<label>Description <input name=\"description\"></label>")
        .raw("<label>Expires in days (-1: never) <input name=\"duration\" type=\"number\" value=\"30\" min=\"-1\" data-type=\"number\"></label>")
        .raw("<fieldset><legend>Permissions</legend>")
        .raw("<label><input type=\"checkbox\" name=\"permissions.0.access.0\" value=\"pull\" data-type=\"access\" checked> pull</label>")
        .raw("<label><input type=\"checkbox\" name=\"permissions.0.access.1\" value=\"push\" data-type=\"access\"> push</label>")
        .raw("<label><input type=\"checkbox\" name=\"permissions.0.access.2\" value=\"delete\" data-type=\"access\"> delete</label>")
        .raw("</fieldset>");
    h.raw("<button type=\"submit\" class=\"primary\">Create robot</button><p class=\"result\" role=\"status\"></p>");
    h.raw("<div class=\"secret\" hidden><p>The robot's secret, shown this once:</p><span class=\"copy\"><code></code><button type=\"button\" data-copy-from=\"code\">Copy</button></span></div></form>");
    Ok(())
}

async fn logs_tab(ctx: &Ctx<'_>, h: &mut Html, project: &str, page: u64) -> Result<(), ApiError> {
    let (list, total) = ctx
        .get(&format!(
            "/api/v2.0/projects/{}/logs?page={page}&page_size={PAGE_SIZE}",
            api_project(project)
        ))
        .await?;
    audit_table(h, &list);
    pager(h, page, total.unwrap_or(0), |n| {
        format!(
            "{PREFIX}/project?name={}&tab=logs&page={n}",
            query_value(project)
        )
    });
    Ok(())
}

/// The project's retention policy (Harbor's: one per project), its runs
/// and a run's tasks; a form for a one-rule policy when there is none.
async fn retention_tab(
    ctx: &Ctx<'_>,
    h: &mut Html,
    project: &Value,
    query: Query<'_>,
) -> Result<(), ApiError> {
    let pid = n(project, "project_id");
    let Some(id) = project["metadata"]["retention_id"]
        .as_str()
        .filter(|i| !i.is_empty())
    else {
        h.raw("<p>No retention policy: every artifact is kept.</p><h2>New policy</h2>");
        api_form(h, "POST", "/api/v2.0/retentions", "stack");
        let hidden = |h: &mut Html, name: &'static str, value: &str, number: bool| {
            h.raw("<input type=\"hidden\"")
                .attr("name", name)
                .attr("value", value);
            if number {
                h.raw(" data-type=\"number\"");
            }
            h.raw(">");
        };
        hidden(h, "algorithm", "or", false);
        hidden(h, "scope.level", "project", false);
        hidden(h, "scope.ref", &pid.to_string(), true);
        hidden(h, "trigger.kind", "Schedule", false);
        hidden(h, "rules.0.action", "retain", false);
        hidden(h, "rules.0.template", "latestPushedK", false);
        hidden(h, "rules.0.tag_selectors.0.kind", "doublestar", false);
        hidden(h, "rules.0.tag_selectors.0.decoration", "matches", false);
        hidden(
            h,
            "rules.0.scope_selectors.repository.0.kind",
            "doublestar",
            false,
        );
        hidden(
            h,
            "rules.0.scope_selectors.repository.0.decoration",
            "repoMatches",
            false,
        );
        h.raw("<label>Keep the latest <input name=\"rules.0.params.latestPushedK\" type=\"number\" min=\"1\" value=\"10\" required data-type=\"number\"> pushed artifacts</label>")
            .raw("<label>of repositories matching <input name=\"rules.0.scope_selectors.repository.0.pattern\" value=\"**\" required></label>")
            .raw("<label>with tags matching <input name=\"rules.0.tag_selectors.0.pattern\" value=\"**\" required></label>")
            .raw("<label>Schedule (six-field cron, UTC; empty: manual only) <input name=\"trigger.settings.cron\" placeholder=\"0 0 3 * * *\"></label>");
        end_form(h, "Create policy");
        return Ok(());
    };
    let base = format!("/api/v2.0/retentions/{}", seg(id));
    let (policy, _) = ctx.get(&base).await?;
    h.raw("<h2>Rules</h2><ul>");
    for r in policy["rules"].as_array().into_iter().flatten() {
        let params: Vec<String> = r["params"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let repos = s(&r["scope_selectors"]["repository"][0], "pattern");
        let tags = s(&r["tag_selectors"][0], "pattern");
        h.open("li", &[]).text(&format!(
            "{} {} — repositories {repos}, tags {tags}{}",
            s(r, "template"),
            params.join(", "),
            if r["disabled"].as_bool() == Some(true) {
                " (disabled)"
            } else {
                ""
            }
        ));
        h.close("li");
    }
    h.raw("</ul><p>Schedule: ");
    let cron = s(&policy["trigger"]["settings"], "cron");
    h.text(if cron.is_empty() { "manual only" } else { cron });
    h.raw("</p><div class=\"actions\">");
    for (dry, label) in [(true, "Dry run"), (false, "Run now")] {
        h.open(
            "button",
            &[
                ("type", "button"),
                ("class", if dry { "" } else { "primary" }),
                ("data-api-method", "POST"),
                ("data-api-path", &format!("{base}/executions")),
                (
                    "data-api-body",
                    if dry {
                        "{\"dry_run\":true}"
                    } else {
                        "{\"dry_run\":false}"
                    },
                ),
                (
                    "data-confirm",
                    if dry {
                        ""
                    } else {
                        "Delete what the rules do not keep, now?"
                    },
                ),
            ],
        )
        .text(label)
        .close("button");
    }
    api_button(
        h,
        "DELETE",
        &base,
        "Delete the retention policy? Nothing is deleted by it from then on.",
        "Delete policy",
    );
    h.raw("</div>");
    let page = page_of(query);
    let (runs, total) = ctx
        .get(&format!(
            "{base}/executions?page={page}&page_size={PAGE_SIZE}"
        ))
        .await?;
    h.raw("<h2>Runs</h2><table class=\"list\"><thead><tr><th>Run</th><th>Status</th><th>Trigger</th><th>Dry run</th><th>Started</th><th>Ended</th></tr></thead><tbody>");
    let shown = query.get("run").and_then(|r| r.parse::<u64>().ok());
    for r in runs.as_array().into_iter().flatten() {
        let rid = n(r, "id");
        h.raw("<tr><td>");
        h.link(
            &format!(
                "{PREFIX}/project?name={}&tab=retention&run={rid}",
                query_value(s(project, "name"))
            ),
            &rid.to_string(),
        );
        h.raw("</td><td>")
            .el("span", &[("class", "status")], s(r, "status"));
        h.raw("</td><td>").text(s(r, "trigger")).raw("</td><td>");
        h.text(if r["dry_run"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        });
        h.raw("</td><td>")
            .text(&when(s(r, "start_time")))
            .raw("</td><td>")
            .text(&when(s(r, "end_time")));
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table>");
    pager(h, page, total.unwrap_or(0), |n| {
        format!(
            "{PREFIX}/project?name={}&tab=retention&page={n}",
            query_value(s(project, "name"))
        )
    });
    if let Some(rid) = shown {
        let (tasks, _) = ctx
            .get(&format!("{base}/executions/{rid}/tasks?page_size=100"))
            .await?;
        h.raw("<h2>Run ").num(rid).raw("</h2><table class=\"list\"><thead><tr><th>Repository</th><th>Status</th><th>Artifacts</th><th>Kept</th><th>Log</th></tr></thead><tbody>");
        for t in tasks.as_array().into_iter().flatten() {
            h.raw("<tr><td>")
                .text(s(t, "repository"))
                .raw("</td><td>")
                .text(s(t, "status"));
            h.raw("</td><td>")
                .num(n(t, "total"))
                .raw("</td><td>")
                .num(n(t, "retained"))
                .raw("</td><td>");
            h.link(
                &format!("{base}/executions/{rid}/tasks/{}", n(t, "id")),
                "log",
            );
            h.raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }
    Ok(())
}

/// The project's webhook policies and each one's latest deliveries.
async fn webhooks_tab(ctx: &Ctx<'_>, h: &mut Html, project: &str) -> Result<(), ApiError> {
    let base = format!("/api/v2.0/projects/{}/webhook", api_project(project));
    let (policies, _) = ctx.get(&format!("{base}/policies?page_size=100")).await?;
    for p in policies.as_array().into_iter().flatten() {
        let id = n(p, "id");
        let events: Vec<&str> = p["event_types"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        h.open("h2", &[]).text(s(p, "name"));
        if p["enabled"].as_bool() != Some(true) {
            h.el("span", &[("class", "pill")], "disabled");
        }
        h.close("h2");
        h.el("p", &[("class", "mono")], s(&p["targets"][0], "address"));
        h.el("p", &[("class", "muted")], &events.join(", "));
        api_button(
            h,
            "DELETE",
            &format!("{base}/policies/{id}"),
            &format!("Delete webhook {}?", s(p, "name")),
            "Delete",
        );
        let (jobs, _) = ctx
            .get(&format!("{base}/jobs?policy_id={id}&page_size=10"))
            .await?;
        h.raw("<table class=\"list\"><thead><tr><th>Delivery</th><th>Event</th><th>Status</th><th>When</th><th>Detail</th></tr></thead><tbody>");
        for j in jobs.as_array().into_iter().flatten() {
            h.raw("<tr><td>")
                .num(n(j, "id"))
                .raw("</td><td>")
                .text(s(j, "event_type"));
            h.raw("</td><td>")
                .text(s(j, "status"))
                .raw("</td><td>")
                .text(&when(s(j, "creation_time")));
            h.raw("</td><td>")
                .text(s(j, "job_detail"))
                .raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }
    h.raw("<h2>New webhook</h2>");
    api_form(h, "POST", &format!("{base}/policies"), "stack");
    h.raw("<input type=\"hidden\" name=\"targets.0.type\" value=\"http\">")
        .raw("<input type=\"hidden\" name=\"enabled\" value=\"true\" data-type=\"bool\">")
        .raw("<label>Name <input name=\"name\" required></label>")
        .raw("<label>Endpoint URL <input name=\"targets.0.address\" type=\"url\" required placeholder=\"https://hooks.example.com/berth\"></label>")
        .raw("<label>Auth header (optional) <input name=\"targets.0.auth_header\"></label>")
        .raw("<fieldset><legend>Events</legend>");
    for (i, e) in crate::webhooks::EVENT_TYPES.iter().enumerate() {
        h.raw("<label><input type=\"checkbox\" data-type=\"item\"")
            .attr("name", &format!("event_types.{i}"))
            .attr("value", e)
            .raw("> ")
            .text(e)
            .raw("</label>");
    }
    h.raw("</fieldset>");
    end_form(h, "Create webhook");
    Ok(())
}

fn audit_table(h: &mut Html, list: &Value) {
    h.raw("<table class=\"list\"><thead><tr><th>Time</th><th>User</th><th>Operation</th><th>Resource</th><th>Type</th></tr></thead><tbody>");
    for e in list.as_array().into_iter().flatten() {
        h.raw("<tr><td>")
            .text(&when(s(e, "op_time")))
            .raw("</td><td>")
            .text(s(e, "username"));
        h.raw("</td><td>")
            .text(s(e, "operation"))
            .raw("</td><td class=\"mono\">")
            .text(s(e, "resource"));
        h.raw("</td><td>")
            .text(s(e, "resource_type"))
            .raw("</td></tr>");
    }
    h.raw("</tbody></table>");
}

// ---- a repository and its artifacts ------------------------------------------

/// The API's `404` for a project the account cannot see (or that does
/// not exist): asked first, so a page of its repositories is `404` too,
/// not the repository API's `403`.
async fn visible_project(ctx: &Ctx<'_>, project: &str) -> Result<Value, ApiError> {
    Ok(ctx
        .get(&format!("/api/v2.0/projects/{}", api_project(project)))
        .await?
        .0)
}

pub async fn repository(ctx: &Ctx<'_>, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    let name = query
        .get("name")
        .map(|n| n.into_owned())
        .unwrap_or_default();
    let (project, within) = split_repo(&name)?;
    visible_project(ctx, project).await?;
    let page = page_of(query);
    let base = format!(
        "/api/v2.0/projects/{}/repositories/{}",
        api_project(project),
        api_repo(within)
    );
    let (list, total) = ctx
        .get(&format!(
            "{base}/artifacts?page={page}&page_size={PAGE_SIZE}&with_tag=true"
        ))
        .await?;
    let may = ctx.may(project)?;
    let mut h = Html::new();
    h.raw("<div class=\"bar\"><h1>");
    h.link(&format!("{PREFIX}/projects"), "Projects").raw(" / ");
    h.link(
        &format!("{PREFIX}/project?name={}", query_value(project)),
        project,
    );
    h.raw(" / ").text(within).raw("</h1></div>");
    h.raw("<table class=\"list artifacts\"><thead><tr><th>Artifact</th><th>Tags</th><th>Type</th><th>Size</th><th>Pushed</th><th>Pulled</th><th>Pull command</th></tr></thead><tbody>");
    for a in list.as_array().into_iter().flatten() {
        let digest = s(a, "digest");
        let short: String = digest.chars().take(19).collect();
        h.raw("<tr><td class=\"mono\">");
        h.link(
            &format!(
                "{PREFIX}/artifact?name={}&digest={}",
                query_value(&name),
                query_value(digest)
            ),
            &short,
        );
        let children = a["references"].as_array().map_or(0, Vec::len);
        if children > 0 {
            h.el(
                "span",
                &[("class", "pill")],
                &format!("index of {children}"),
            );
        }
        let accessories = a["accessories"].as_array().map_or(0, Vec::len);
        if accessories > 0 {
            h.el(
                "span",
                &[("class", "pill")],
                &format!("{accessories} attached"),
            );
        }
        h.raw("</td><td class=\"tags\">");
        let tags: Vec<&str> = a["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str())
            .collect();
        for t in &tags {
            h.raw("<span class=\"tag\">").text(t);
            if may.contains(Action::Delete) {
                h.open(
                    "button",
                    &[
                        ("type", "button"),
                        ("class", "x"),
                        ("aria-label", &format!("Delete tag {t}")),
                        ("data-api-method", "DELETE"),
                        (
                            "data-api-path",
                            &format!("{base}/artifacts/{}/tags/{}", seg(digest), seg(t)),
                        ),
                        ("data-confirm", &format!("Delete tag {t}?")),
                    ],
                )
                .raw("×</button>");
            }
            h.raw("</span>");
        }
        h.raw("</td><td>")
            .text(s(a, "type"))
            .raw("</td><td>")
            .text(&bytes(n(a, "size")));
        h.raw("</td><td>")
            .text(&when(s(a, "push_time")))
            .raw("</td><td>")
            .text(&when(s(a, "pull_time")));
        h.raw("</td><td>");
        let reference = match tags.first() {
            Some(t) => format!(":{t}"),
            None => format!("@{digest}"),
        };
        let cmd = if s(a, "type") == "CHART" {
            format!(
                "helm pull oci://{}/{name} --version {}",
                ctx.registry_host,
                tags.first().unwrap_or(&"")
            )
        } else {
            format!("docker pull {}/{name}{reference}", ctx.registry_host)
        };
        copy_button(&mut h, &cmd, "Copy the pull command");
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table>");
    pager(&mut h, page, total.unwrap_or(0), |n| {
        format!("{PREFIX}/repository?name={}&page={n}", query_value(&name))
    });
    ok_page(ctx, &name, h)
}

pub async fn artifact(ctx: &Ctx<'_>, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    let name = query
        .get("name")
        .map(|n| n.into_owned())
        .unwrap_or_default();
    let digest = query
        .get("digest")
        .map(|n| n.into_owned())
        .unwrap_or_default();
    let (project, within) = split_repo(&name)?;
    visible_project(ctx, project).await?;
    let d = berth_engine::Digest::parse(&digest)?;
    let (a, _) = ctx
        .get(&format!(
            "/api/v2.0/projects/{}/repositories/{}/artifacts/{}",
            api_project(project),
            api_repo(within),
            seg(&digest)
        ))
        .await?;
    // The API found it for this account (pull allowed): the manifest's
    // layers and config come from the engine.
    let repo = berth_engine::RepoName::parse(&name)?;
    let r2 = repo.clone();
    let manifest = crate::http::blocking(ctx.app, move |e| {
        e.get_manifest(&r2, &berth_engine::Reference::Digest(d))
    })
    .await??
    .ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            format!("manifest {digest} of {name} not found"),
        )
    })?;
    let doc: Value = serde_json::from_slice(&manifest.body).unwrap_or(Value::Null);
    let mut h = Html::new();
    h.raw("<div class=\"bar\"><h1>");
    h.link(
        &format!("{PREFIX}/project?name={}", query_value(project)),
        project,
    )
    .raw(" / ");
    h.link(
        &format!("{PREFIX}/repository?name={}", query_value(&name)),
        within,
    );
    h.raw(" / ").el(
        "span",
        &[("class", "mono")],
        &digest.chars().take(19).collect::<String>(),
    );
    h.raw("</h1></div><dl class=\"facts\">");
    h.el("dt", &[], "Digest")
        .open("dd", &[("class", "mono")])
        .text(&digest)
        .close("dd");
    h.el("dt", &[], "Media type")
        .el("dd", &[], s(&a, "manifest_media_type"));
    h.el("dt", &[], "Size").el("dd", &[], &bytes(n(&a, "size")));
    h.el("dt", &[], "Pushed")
        .el("dd", &[], &when(s(&a, "push_time")));
    h.el("dt", &[], "Pulled")
        .el("dd", &[], &when(s(&a, "pull_time")));
    let tags: Vec<&str> = a["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    h.el("dt", &[], "Tags").el("dd", &[], &tags.join(", "));
    h.raw("</dl>");
    h.raw("<p>");
    copy_button(
        &mut h,
        &format!("docker pull {}/{name}@{digest}", ctx.registry_host),
        "Copy the pull command",
    );
    h.raw(" ");
    copy_button(
        &mut h,
        &format!(
            "skopeo copy docker://{}/{name}@{digest} oci:local",
            ctx.registry_host
        ),
        "Copy the skopeo command",
    );
    h.raw("</p>");
    if let Some(children) = doc["manifests"].as_array() {
        h.raw("<h2>Platforms</h2><table class=\"list\"><thead><tr><th>Platform</th><th>Digest</th><th>Size</th></tr></thead><tbody>");
        for c in children {
            let p = &c["platform"];
            let mut plat = format!("{}/{}", s(p, "os"), s(p, "architecture"));
            if !s(p, "variant").is_empty() {
                plat.push('/');
                plat.push_str(s(p, "variant"));
            }
            let cd = s(c, "digest");
            h.raw("<tr><td>")
                .text(&plat)
                .raw("</td><td class=\"mono\">");
            h.link(
                &format!(
                    "{PREFIX}/artifact?name={}&digest={}",
                    query_value(&name),
                    query_value(cd)
                ),
                cd,
            );
            h.raw("</td><td>")
                .text(&bytes(n(c, "size")))
                .raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }
    if let Some(layers) = doc["layers"].as_array() {
        h.raw("<h2>Layers</h2><table class=\"list\"><thead><tr><th>#</th><th>Media type</th><th>Digest</th><th>Size</th></tr></thead><tbody>");
        for (i, l) in layers.iter().enumerate() {
            h.raw("<tr><td>")
                .num(i as u64 + 1)
                .raw("</td><td>")
                .text(s(l, "mediaType"));
            h.raw("</td><td class=\"mono\">")
                .text(s(l, "digest"))
                .raw("</td><td>")
                .text(&bytes(n(l, "size")))
                .raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }
    if let Some(config) = doc["config"].as_object() {
        h.raw("<h2>Config</h2>");
        let cd = config.get("digest").and_then(Value::as_str).unwrap_or("");
        let size = config.get("size").and_then(Value::as_u64).unwrap_or(0);
        h.el(
            "p",
            &[("class", "mono")],
            &format!("{cd} ({})", bytes(size)),
        );
        if size <= 256 << 10 {
            if let Ok(cd) = berth_engine::Digest::parse(cd) {
                let r3 = repo.clone();
                // Read on the blocking pool (a tiered blob may come from
                // the bucket).
                let read = crate::http::blocking(ctx.app, move |e| {
                    e.read_blob(&r3, &cd, None).map(|(_, data)| data.to_vec())
                })
                .await?;
                if let Ok(data) = read {
                    let text = serde_json::from_slice::<Value>(&data)
                        .ok()
                        .and_then(|v| serde_json::to_string_pretty(&v).ok())
                        .unwrap_or_default();
                    h.el("pre", &[("class", "config")], &text);
                }
            }
        }
    }
    let accessories = a["accessories"].as_array().cloned().unwrap_or_default();
    if !accessories.is_empty() {
        h.raw("<h2>Attached (signatures, SBOMs, other referrers)</h2><table class=\"list\"><thead><tr><th>Type</th><th>Digest</th><th>Size</th><th>Created</th></tr></thead><tbody>");
        for x in &accessories {
            let xd = s(x, "digest");
            h.raw("<tr><td>")
                .text(s(x, "type"))
                .raw("</td><td class=\"mono\">");
            h.link(
                &format!(
                    "{PREFIX}/artifact?name={}&digest={}",
                    query_value(&name),
                    query_value(xd)
                ),
                xd,
            );
            h.raw("</td><td>")
                .text(&bytes(n(x, "size")))
                .raw("</td><td>")
                .text(&when(s(x, "creation_time")))
                .raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }
    ok_page(ctx, &name, h)
}

// ---- administration ----------------------------------------------------------

fn admin_only(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    if ctx.admin {
        Ok(())
    } else {
        // As the API: an administration page is not there for others.
        Err(ApiError::new(Code::NotFound, "no such page"))
    }
}

pub async fn audit(ctx: &Ctx<'_>, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    admin_only(ctx)?;
    let page = page_of(query);
    let op = query
        .get("operation")
        .map(|o| o.into_owned())
        .unwrap_or_default();
    let user = query
        .get("username")
        .map(|o| o.into_owned())
        .unwrap_or_default();
    let mut q = Vec::new();
    if !op.is_empty() {
        q.push(format!("operation={op}"));
    }
    if !user.is_empty() {
        q.push(format!("username={user}"));
    }
    let mut path = format!("/api/v2.0/audit-logs?page={page}&page_size={PAGE_SIZE}");
    if !q.is_empty() {
        path.push_str(&format!("&q={}", query_value(&q.join(","))));
    }
    let (list, total) = ctx.get(&path).await?;
    let mut h = Html::new();
    h.raw("<div class=\"bar\"><h1>Audit log</h1>");
    h.open(
        "form",
        &[
            ("method", "get"),
            ("action", &format!("{PREFIX}/audit")),
            ("class", "search"),
        ],
    );
    h.raw("<select name=\"operation\" aria-label=\"Operation\"><option value=\"\">any operation</option>");
    for o in [
        "create",
        "delete",
        "pull",
        "update",
        "login",
        "login_failure",
    ] {
        h.open("option", &[("value", o)]);
        h.text(o).close("option");
    }
    h.raw("</select>");
    h.open(
        "input",
        &[
            ("name", "username"),
            ("value", &user),
            ("placeholder", "user"),
            ("aria-label", "User"),
        ],
    );
    h.raw("<button type=\"submit\">Filter</button></form></div>");
    audit_table(&mut h, &list);
    pager(&mut h, page, total.unwrap_or(0), |n| {
        format!(
            "{PREFIX}/audit?operation={}&username={}&page={n}",
            query_value(&op),
            query_value(&user)
        )
    });
    ok_page(ctx, "Audit log", h)
}

pub async fn users(ctx: &Ctx<'_>, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    admin_only(ctx)?;
    let page = page_of(query);
    let (list, total) = ctx
        .get(&format!(
            "/api/v2.0/users?page={page}&page_size={PAGE_SIZE}"
        ))
        .await?;
    let mut h = Html::new();
    h.raw("<div class=\"bar\"><h1>Users</h1></div>");
    h.raw("<table class=\"list\"><thead><tr><th>User</th><th>Email</th><th>Administrator</th><th>Created</th><th></th></tr></thead><tbody>");
    for u in list.as_array().into_iter().flatten() {
        let id = n(u, "user_id");
        let name = s(u, "username");
        let admin = u["sysadmin_flag"].as_bool() == Some(true);
        h.raw("<tr><td>")
            .text(name)
            .raw("</td><td>")
            .text(s(u, "email"))
            .raw("</td><td>");
        h.text(if admin { "yes" } else { "no" });
        h.raw("</td><td>")
            .text(&when(s(u, "creation_time")))
            .raw("</td><td class=\"actions\">");
        if name != ctx.name() && name != berth_engine::accounts::ADMIN_USER {
            h.open(
                "button",
                &[
                    ("type", "button"),
                    ("data-api-method", "PUT"),
                    ("data-api-path", &format!("/api/v2.0/users/{id}/sysadmin")),
                    (
                        "data-api-body",
                        if admin {
                            "{\"sysadmin_flag\":false}"
                        } else {
                            "{\"sysadmin_flag\":true}"
                        },
                    ),
                ],
            )
            .text(if admin { "Revoke admin" } else { "Make admin" })
            .close("button");
            api_button(
                &mut h,
                "DELETE",
                &format!("/api/v2.0/users/{id}"),
                &format!("Delete user {name}?"),
                "Delete",
            );
        }
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table>");
    pager(&mut h, page, total.unwrap_or(0), |n| {
        format!("{PREFIX}/admin/users?page={n}")
    });
    h.raw("<h2>New user</h2>");
    api_form(&mut h, "POST", "/api/v2.0/users", "stack");
    h.raw("<label>User name <input name=\"username\" required></label>")
        .raw("<label>Email <input name=\"email\" type=\"email\"></label>")
        .raw("<label>Full name <input name=\"realname\"></label>")
        .raw("<label>Password <input name=\"password\" type=\"password\" autocomplete=\"new-password\" required minlength=\"8\"></label>");
    end_form(&mut h, "Create user");
    ok_page(ctx, "Users", h)
}

/// Storage and request figures of this node, from the samples the server
/// takes every 30 s (`metrics::sample_loop`; the same counters as
/// `/metrics`), as small plots: rates for the counters, values for the
/// gauges.
pub async fn metrics(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    admin_only(ctx)?;
    let samples = ctx.app.metrics.history();
    let mut h = Html::new();
    h.raw("<div class=\"bar\"><h1>Storage and requests</h1></div>");
    h.el(
        "p",
        &[("class", "hint")],
        &format!(
            "This node, one sample every {} s, the last {} kept; Prometheus figures at /metrics.",
            crate::metrics::SAMPLE_EVERY.as_secs(),
            crate::metrics::HISTORY
        ),
    );
    let rate = |f: fn(&crate::metrics::Sample) -> u64| -> Vec<f64> {
        samples
            .windows(2)
            .map(|w| {
                let secs = (w[1].at_ms.saturating_sub(w[0].at_ms)) as f64 / 1000.0;
                f(&w[1]).saturating_sub(f(&w[0])) as f64 / secs.max(0.001)
            })
            .collect()
    };
    let value = |f: fn(&crate::metrics::Sample) -> u64| -> Vec<f64> {
        samples.iter().map(|s| f(s) as f64).collect()
    };
    h.raw("<div class=\"plots\">");
    plot(
        &mut h,
        "Stored (all projects)",
        &value(|s| s.stored),
        bytes_f,
    );
    plot(&mut h, "Requests per second", &rate(|s| s.requests), |v| {
        format!("{v:.1}/s")
    });
    plot(&mut h, "Sent per second", &rate(|s| s.bytes_out), |v| {
        format!("{}/s", bytes_f(v))
    });
    plot(&mut h, "Received per second", &rate(|s| s.bytes_in), |v| {
        format!("{}/s", bytes_f(v))
    });
    plot(&mut h, "Open connections", &value(|s| s.connections), |v| {
        format!("{v:.0}")
    });
    h.raw("</div>");
    ok_page(ctx, "Storage and requests", h)
}

fn bytes_f(v: f64) -> String {
    bytes(v.max(0.0) as u64)
}

/// One plot: an inline SVG line over `points` (oldest first), its latest
/// value and maximum. Presentation attributes only (the policy allows no
/// inline styles).
fn plot(h: &mut Html, title: &str, points: &[f64], label: impl Fn(f64) -> String) {
    const W: f64 = 300.0;
    const H: f64 = 60.0;
    h.raw("<figure class=\"plot\">")
        .el("figcaption", &[], title);
    if points.len() < 2 {
        h.el("p", &[("class", "muted")], "Not enough samples yet.")
            .raw("</figure>");
        return;
    }
    let max = points.iter().copied().fold(0.0_f64, f64::max);
    let scale = if max > 0.0 { H / max } else { 0.0 };
    let step = W / (points.len() - 1) as f64;
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, H - v * scale))
        .collect();
    h.raw("<svg viewBox=\"0 0 300 60\" width=\"300\" height=\"60\" role=\"img\"")
        .attr("aria-label", title)
        .raw("><polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"1.5\"")
        .attr("points", &line.join(" "))
        .raw("/></svg>");
    let last = points.last().copied().unwrap_or(0.0);
    h.el(
        "p",
        &[("class", "muted")],
        &format!("now {} · max {}", label(last), label(max)),
    );
    h.raw("</figure>");
}

pub async fn gc(ctx: &Ctx<'_>, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    admin_only(ctx)?;
    let page = page_of(query);
    let (list, total) = ctx
        .get(&format!(
            "/api/v2.0/system/gc?page={page}&page_size={PAGE_SIZE}"
        ))
        .await?;
    let mut h = Html::new();
    h.raw("<div class=\"bar\"><h1>Garbage collection</h1>");
    h.open(
        "button",
        &[
            ("type", "button"),
            ("class", "primary"),
            ("data-api-method", "POST"),
            ("data-api-path", "/api/v2.0/system/gc/schedule"),
            (
                "data-api-body",
                "{\"schedule\":{\"type\":\"Manual\"},\"parameters\":{\"delete_untagged\":false}}",
            ),
        ],
    )
    .raw("Run GC now</button></div>");
    h.raw("<table class=\"list\"><thead><tr><th>Run</th><th>Status</th><th>Trigger</th><th>Started</th><th>Ended</th><th>Log</th></tr></thead><tbody>");
    for r in list.as_array().into_iter().flatten() {
        let id = n(r, "id");
        h.raw("<tr><td>").num(id).raw("</td><td>");
        h.el("span", &[("class", "status")], s(r, "job_status"));
        h.raw("</td><td>")
            .text(s(r, "job_kind"))
            .raw("</td><td>")
            .text(&when(s(r, "creation_time")));
        h.raw("</td><td>")
            .text(&when(s(r, "update_time")))
            .raw("</td><td>");
        h.link(&format!("/api/v2.0/system/gc/{id}/log"), "log");
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table>");
    pager(&mut h, page, total.unwrap_or(0), |n| {
        format!("{PREFIX}/admin/gc?page={n}")
    });
    ok_page(ctx, "Garbage collection", h)
}
