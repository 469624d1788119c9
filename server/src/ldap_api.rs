//! Harbor v2.0's LDAP and user group API: the directory seen from the
//! admin API (ping, user and group searches, user import) over
//! [`crate::ldap::Directory`], and user groups — named LDAP groups a
//! project can take as a member by id — over
//! `berth_engine::usergroups`.
//!
//! ```text
//! POST /api/v2.0/ldap/ping               LdapConf (optional; fields not given are the running
//!                                        configuration's) → {"success","message"}   (admin)
//! GET  /api/v2.0/ldap/users/search       ?username= (exact; empty: any) →
//!                                        [{"username","realname","email"}], ≤ 100   (admin)
//! POST /api/v2.0/ldap/users/import       {"ldap_uid_list":[…]} → 200, or 404
//!                                        [{"uid","error"}] listing the failures     (admin)
//! GET  /api/v2.0/ldap/groups/search      ?groupname= (exact) &groupdn= (under the group
//!                                        base DN) → [{"group_name","group_type":1,
//!                                        "ldap_group_dn"}], ≤ 100                   (admin)
//! GET  /api/v2.0/usergroups              paged; ?ldap_group_dn= ?group_name=        (admin)
//! POST /api/v2.0/usergroups              {"group_name","group_type":1,"ldap_group_dn"}
//!                                        → 201 + Location; 409 for a DN taken        (admin)
//! GET|PUT|DELETE /api/v2.0/usergroups/{id}  PUT renames; DELETE takes the group's
//!                                        project memberships with it               (admin)
//! GET  /api/v2.0/usergroups/search       ?groupname= (substring), paged →
//!                                        [{"id","group_name","group_type"}]    (signed in)
//! ```
//!
//! Who may do what: every endpoint is a system administrator's but the
//! group name search, which Harbor opens to every signed-in user (project
//! administrators need a group's id to make it a member) and which shows
//! no DN. Listing and reading groups with their DNs stays an
//! administrator's, as in Harbor (`RequireSystemAccess`).
//!
//! The `/ldap/…` endpoints need `ldap_auth` mode (`400` otherwise: there
//! is no directory). User groups are records only and work in either
//! mode, as project members by DN do.

use std::sync::Arc;

use berth_engine::records::UserGroupRecord;
use berth_engine::AccountError;
use berth_wire::ldap::{LdapConfReq, LdapImportReq, UserGroupReq};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::admin::{created, not_found, ok_json, read_json};
use crate::auth::{Guard, Principal};
use crate::config::{LdapConfig, LdapScope, Secret};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, empty, json as json_response, read_small_body, App, Body};
use crate::ldap::{Directory, DirectoryError};
use crate::limits::RequestBody;
use crate::registries_api::paged_with;
use crate::router::Query;

/// Most uids one import takes (each is one directory search).
pub const MAX_IMPORT: usize = 100;

/// Longest `ldap_connection_timeout` a ping may ask for, in seconds.
const MAX_PING_TIMEOUT_SECS: i64 = 60;

const MAX_JSON: usize = 64 << 10;

/// An endpoint of this API, as routed (`&str`: the group id in the path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Ping,
    SearchUsers,
    ImportUsers,
    SearchGroups,
    ListGroups,
    CreateGroup,
    SearchUserGroups,
    GetGroup(&'a str),
    UpdateGroup(&'a str),
    DeleteGroup(&'a str),
}

/// The route table's rows for `ldap/…` and `usergroups/…` (`segs`: the
/// path after `/api/v2.0/`, split at `/`), with each endpoint's guard.
pub fn resolve<'a>(
    method: &Method,
    segs: &[&'a str],
) -> Result<(Endpoint<'a>, Guard<'a>), ApiError> {
    use Endpoint as E;
    let allow = |methods| Err(ApiError::method_not_allowed(methods));
    let admin = |e| Ok((e, Guard::Admin));
    match (segs, method) {
        (["ldap", "ping"], &Method::POST) => admin(E::Ping),
        (["ldap", "users", "import"], &Method::POST) => admin(E::ImportUsers),
        (["ldap", "ping"] | ["ldap", "users", "import"], _) => allow("POST"),
        (["ldap", "users", "search"], &Method::GET) => admin(E::SearchUsers),
        (["ldap", "groups", "search"], &Method::GET) => admin(E::SearchGroups),
        (["ldap", "users" | "groups", "search"], _) => allow("GET"),
        (["usergroups"], &Method::GET) => admin(E::ListGroups),
        (["usergroups"], &Method::POST) => admin(E::CreateGroup),
        (["usergroups"], _) => allow("GET, POST"),
        (["usergroups", "search"], &Method::GET) => Ok((E::SearchUserGroups, Guard::SignedIn)),
        (["usergroups", "search"], _) => allow("GET"),
        (["usergroups", id], &Method::GET) => admin(E::GetGroup(id)),
        (["usergroups", id], &Method::PUT) => admin(E::UpdateGroup(id)),
        (["usergroups", id], &Method::DELETE) => admin(E::DeleteGroup(id)),
        (["usergroups", _], _) => allow("GET, PUT, DELETE"),
        _ => Err(ApiError::new(
            Code::RouteUnknown,
            format!("no endpoint at {}{}", crate::admin::PREFIX, segs.join("/")),
        )),
    }
}

/// Runs an endpoint for the caller its guard admitted.
pub async fn handle(
    app: &Arc<App>,
    endpoint: Endpoint<'_>,
    caller: &Principal,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    use Endpoint as E;
    let query = Query(parts.uri.query().unwrap_or(""));
    match endpoint {
        E::Ping => ping(app, caller, body).await,
        E::SearchUsers => search_users(app, query).await,
        E::ImportUsers => import_users(app, caller, body).await,
        E::SearchGroups => search_groups(app, query).await,
        E::ListGroups => list_groups(app, query).await,
        E::CreateGroup => create_group(app, caller, body).await,
        E::SearchUserGroups => search_user_groups(app, query).await,
        E::GetGroup(id) => get_group(app, id).await,
        E::UpdateGroup(id) => update_group(app, caller, id, body).await,
        E::DeleteGroup(id) => delete_group(app, caller, id).await,
    }
}

// ---- the directory ---------------------------------------------------------

/// The running directory, or `400`: not in `ldap_auth` mode.
fn directory(app: &App) -> Result<&Directory, ApiError> {
    app.auth.directory.as_ref().ok_or_else(|| {
        ApiError::new(
            Code::BadRequest,
            "berth is not in ldap_auth mode: there is no LDAP directory to ask \
             (BERTH_AUTH_MODE=ldap_auth, docs/auth.md)",
        )
    })
}

/// A directory that did not answer: `503`, as for a login; the detail is
/// logged.
fn unavailable(what: &'static str) -> impl FnOnce(DirectoryError) -> ApiError {
    move |e| {
        tracing::warn!(target: "berth::auth", error = %e, "LDAP {what} failed");
        ApiError::new(
            Code::Unavailable,
            format!("the LDAP directory did not answer the {what}; try again later"),
        )
    }
}

/// The configuration a ping tries: `req`'s fields over `running`'s.
///
/// IMPORTANT: the configured search password goes only where it is
/// configured to go. It is used (for an omitted or empty
/// `ldap_search_password`, as Harbor does) only if `ldap_url` and
/// `ldap_search_dn` are the running ones and `ldap_verify_cert` is not
/// turned off; otherwise a ping with a search DN must bring its own
/// password (`400`), so no caller can have berth send the configured
/// password to a host, or for a DN, of their choosing.
fn ping_config(running: &LdapConfig, req: LdapConfReq) -> Result<LdapConfig, ApiError> {
    let bad = |msg: String| ApiError::new(Code::BadRequest, msg);
    let mut cfg = running.clone();
    if let Some(url) = req.ldap_url.map(|u| u.trim().to_owned()) {
        if !url.is_empty() {
            if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
                return Err(bad(format!(
                    "ldap_url {url:?}: give ldap://host[:port] or ldaps://host[:port]"
                )));
            }
            cfg.url = url;
        }
    }
    if let Some(dn) = req.ldap_search_dn {
        cfg.search_dn = dn.trim().to_owned();
    }
    if let Some(v) = req.ldap_verify_cert {
        cfg.verify_cert = v;
    }
    let same_target = cfg.url == running.url
        && cfg.search_dn == running.search_dn
        && (cfg.verify_cert || !running.verify_cert);
    cfg.search_password = match req.ldap_search_password.filter(|p| !p.is_empty()) {
        Some(p) => Secret(p),
        None if same_target => running.search_password.clone(),
        None if cfg.search_dn.is_empty() => Secret::default(),
        None => {
            return Err(bad(
                "ldap_search_password is required when ldap_url or ldap_search_dn differ from \
                 the running configuration, or ldap_verify_cert is turned off: the configured \
                 password is only sent where it is configured to go"
                    .into(),
            ))
        }
    };
    if let Some(base) = req.ldap_base_dn.filter(|b| !b.trim().is_empty()) {
        cfg.base_dn = base;
    }
    if let Some(filter) = req.ldap_filter {
        cfg.filter = filter;
    }
    if let Some(uid) = req.ldap_uid.filter(|u| !u.trim().is_empty()) {
        cfg.uid = uid;
    }
    if let Some(scope) = req.ldap_scope {
        cfg.scope = match scope {
            0 => LdapScope::Base,
            1 => LdapScope::OneLevel,
            2 => LdapScope::Subtree,
            n => {
                return Err(bad(format!(
                    "ldap_scope {n}: give 0 (base), 1 (one level) or 2 (subtree)"
                )))
            }
        };
    }
    match req.ldap_connection_timeout {
        None | Some(0) => {}
        Some(secs @ 1..=MAX_PING_TIMEOUT_SECS) => {
            cfg.timeout = std::time::Duration::from_secs(secs.unsigned_abs());
        }
        Some(n) => {
            return Err(bad(format!(
                "ldap_connection_timeout {n}: give 1-{MAX_PING_TIMEOUT_SECS} seconds"
            )))
        }
    }
    Ok(cfg)
}

/// `POST /ldap/ping`: connects and binds as the search DN with the
/// running configuration, changed by the body's fields.
async fn ping(
    app: &App,
    caller: &Principal,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let running = directory(app)?.config();
    let raw = read_small_body(body, MAX_JSON).await?;
    let req: LdapConfReq = if raw.iter().all(u8::is_ascii_whitespace) {
        LdapConfReq::default()
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| ApiError::new(Code::BadRequest, format!("invalid JSON body: {e}")))?
    };
    let cfg = ping_config(running, req)?;
    let probe = Directory::new(&cfg).map_err(|e| ApiError::new(Code::BadRequest, e))?;
    let result = probe.ping().await;
    tracing::info!(target: "berth::auth", url = %cfg.url, search_dn = %cfg.search_dn,
        ok = result.is_ok(), by = caller.name(), "LDAP ping");
    let (success, message) = match result {
        Ok(()) => {
            let who = match cfg.search_dn.as_str() {
                "" => "anonymously".to_owned(),
                dn => format!("as {dn}"),
            };
            (true, format!("connected to {} and bound {who}", cfg.url))
        }
        Err(e) => (false, e.to_string()),
    };
    ok_json(&json!({"success": success, "message": message}))
}

/// `GET /ldap/users/search?username=`.
async fn search_users(app: &App, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    let dir = directory(app)?;
    let name = query.get("username").unwrap_or_default();
    let found = dir
        .search_users(&name)
        .await
        .map_err(unavailable("user search"))?;
    let users: Vec<Value> = found
        .into_iter()
        .map(|u| json!({"username": u.username, "realname": u.realname, "email": u.email}))
        .collect();
    ok_json(&Value::Array(users))
}

/// `POST /ldap/users/import`: each uid is looked up as the search DN
/// (exactly one entry) and onboarded as its first login would onboard
/// it. Failures, with Harbor's reasons: `unknown_user` (no single
/// entry), `duplicate_user` (a user of that name is here already, local
/// or LDAP: an import never takes an account over), `failed_insert_user`
/// (a name berth cannot hold, or `admin`), `failed_search_user` (the
/// directory did not answer).
async fn import_users(
    app: &App,
    caller: &Principal,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let dir = directory(app)?;
    let req: LdapImportReq = read_json(body).await?;
    let mut uids = req.ldap_uid_list;
    let mut seen = std::collections::HashSet::new();
    uids.retain(|u| seen.insert(u.clone()));
    if uids.is_empty() || uids.len() > MAX_IMPORT {
        return Err(ApiError::new(
            Code::BadRequest,
            format!("ldap_uid_list: give 1-{MAX_IMPORT} uids"),
        ));
    }
    let mut failed = Vec::new();
    for uid in uids {
        let reason = match dir.lookup(&uid).await {
            Err(e) => {
                tracing::warn!(target: "berth::auth", uid = %uid, error = %e,
                    "LDAP import: user search failed");
                Some("failed_search_user")
            }
            Ok(None) => Some("unknown_user"),
            Ok(Some(user)) => {
                let name = uid.clone();
                match blocking(app, move |e| e.directory_import(&name, &user)).await? {
                    Ok(id) => {
                        tracing::info!(target: "berth::auth", user = %uid, id,
                            by = caller.name(), "LDAP user imported");
                        None
                    }
                    Err(AccountError::Exists { .. }) => Some("duplicate_user"),
                    Err(AccountError::Invalid { what, reason }) => {
                        tracing::warn!(target: "berth::auth", uid = %uid, %what, %reason,
                            "LDAP import: user not onboarded");
                        Some("failed_insert_user")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if let Some(reason) = reason {
            failed.push(json!({"uid": uid, "error": reason}));
        }
    }
    if failed.is_empty() {
        return Ok(empty(StatusCode::OK));
    }
    let mut res = json_response(
        serde_json::to_vec(&failed).map_err(ApiError::internal)?,
        "application/json",
    );
    *res.status_mut() = StatusCode::NOT_FOUND;
    Ok(res)
}

/// `GET /ldap/groups/search?groupname=&groupdn=`.
async fn search_groups(app: &App, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    let dir = directory(app)?;
    if dir.config().group_base_dn.is_empty() {
        return Err(ApiError::new(
            Code::BadRequest,
            "no ldap_group_base_dn is configured: there is nowhere to search groups",
        ));
    }
    let name = query.get("groupname").unwrap_or_default();
    let dn = query.get("groupdn").filter(|d| !d.trim().is_empty());
    if let Some(dn) = &dn {
        berth_engine::directory::valid_group_dn(dn)?;
        if !dir.under_group_base(dn) {
            return Err(ApiError::new(
                Code::BadRequest,
                format!(
                    "groupdn {dn:?} is not under ldap_group_base_dn {:?}",
                    dir.config().group_base_dn
                ),
            ));
        }
    }
    let found = dir
        .search_groups_by(&name, dn.as_deref())
        .await
        .map_err(unavailable("group search"))?;
    let groups: Vec<Value> = found
        .into_iter()
        .map(|g| json!({"group_name": g.name, "group_type": 1, "ldap_group_dn": g.dn}))
        .collect();
    ok_json(&Value::Array(groups))
}

// ---- user groups -----------------------------------------------------------

/// A user group in Harbor's `UserGroup` shape (the DN normalized).
fn group_json(id: u64, g: &UserGroupRecord) -> Value {
    json!({
        "id": id,
        "group_name": g.name,
        "group_type": g.group_type,
        "ldap_group_dn": g.ldap_dn,
    })
}

/// The id in `/usergroups/{id}`: a positive integer, else `400`.
fn group_id(id: &str) -> Result<u64, ApiError> {
    id.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::new(
            Code::BadRequest,
            format!("user group id {id:?} is not a positive integer"),
        )
    })
}

/// The group type of a request: LDAP (1), the only kind berth keeps;
/// not given is LDAP.
fn check_group_type(t: Option<i64>) -> Result<(), ApiError> {
    match t {
        None | Some(1) => Ok(()),
        Some(t) => Err(ApiError::new(
            Code::BadRequest,
            format!("group_type {t} is not supported: berth has LDAP groups (1) only"),
        )),
    }
}

/// `GET /usergroups`: every group, in id order, filtered by
/// `ldap_group_dn` (any spelling of the DN) and `group_name` (a
/// case-insensitive substring), paged.
async fn list_groups(app: &App, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    let dn = query
        .get("ldap_group_dn")
        .filter(|d| !d.is_empty())
        .map(|d| berth_engine::directory::normalize_dn(&d));
    let name = query
        .get("group_name")
        .filter(|n| !n.is_empty())
        .map(|n| n.to_lowercase());
    let groups: Vec<(u64, UserGroupRecord)> = app
        .engine
        .user_groups()?
        .into_iter()
        .filter(|(_, g)| dn.as_ref().is_none_or(|d| g.ldap_dn == *d))
        .filter(|(_, g)| {
            name.as_ref()
                .is_none_or(|n| g.name.to_lowercase().contains(n.as_str()))
        })
        .collect();
    paged_with(query, "/api/v2.0/usergroups", &groups, |(id, g)| {
        Ok(group_json(*id, g))
    })
}

/// `GET /usergroups/search?groupname=`: any signed-in caller; no DNs.
async fn search_user_groups(app: &App, query: Query<'_>) -> Result<Response<Body>, ApiError> {
    let Some(name) = query.get("groupname").filter(|n| !n.is_empty()) else {
        return Err(ApiError::new(Code::BadRequest, "groupname is required"));
    };
    let name = name.to_lowercase();
    let groups: Vec<(u64, UserGroupRecord)> = app
        .engine
        .user_groups()?
        .into_iter()
        .filter(|(_, g)| g.name.to_lowercase().contains(&name))
        .collect();
    paged_with(query, "/api/v2.0/usergroups/search", &groups, |(id, g)| {
        Ok(json!({"id": id, "group_name": g.name, "group_type": g.group_type}))
    })
}

/// `POST /usergroups`. Without a `group_name`, the group is named by its
/// DN's first value (`cn=devs,…` is `devs`). The DN is not looked up in
/// the directory: groups reach users through `memberOf` as well as the
/// group search, so a group may live anywhere.
async fn create_group(
    app: &App,
    caller: &Principal,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let req: UserGroupReq = read_json(body).await?;
    check_group_type(req.group_type)?;
    let Some(dn) = req.ldap_group_dn.filter(|d| !d.trim().is_empty()) else {
        return Err(ApiError::new(
            Code::BadRequest,
            "ldap_group_dn is required (the group's DN in the directory)",
        ));
    };
    let name = match req.group_name.filter(|n| !n.trim().is_empty()) {
        Some(n) => n,
        None => first_value(&dn),
    };
    let (n, d) = (name.clone(), dn.clone());
    let id = blocking(app, move |e| e.create_user_group(&n, &d)).await??;
    tracing::info!(target: "berth::auth", id, group = %name, dn = %dn,
        by = caller.name(), "user group created");
    Ok(created(format!("/api/v2.0/usergroups/{id}")))
}

/// The value of a DN's first attribute (`cn=devs,ou=g` → `devs`), or the
/// DN itself if it has none.
fn first_value(dn: &str) -> String {
    dn.split(',')
        .next()
        .and_then(|rdn| rdn.split_once('='))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| dn.trim().to_owned())
}

async fn get_group(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    let id = group_id(id)?;
    match app.engine.user_group(id)? {
        Some(g) => ok_json(&group_json(id, &g)),
        None => Err(not_found(format!("user group {id} not found"))),
    }
}

/// `PUT /usergroups/{id}`: only `group_name` changes (Harbor's rule);
/// the other fields are ignored.
async fn update_group(
    app: &App,
    caller: &Principal,
    id: &str,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let id = group_id(id)?;
    let req: UserGroupReq = read_json(body).await?;
    let Some(name) = req.group_name else {
        return Err(ApiError::new(
            Code::BadRequest,
            "group_name is required: it is the one field a user group update changes",
        ));
    };
    let n = name.clone();
    blocking(app, move |e| e.rename_user_group(id, &n)).await??;
    tracing::info!(target: "berth::auth", id, group = %name, by = caller.name(),
        "user group renamed");
    Ok(empty(StatusCode::OK))
}

/// `DELETE /usergroups/{id}`: with every project membership of its DN,
/// as Harbor deletes a group's project members with it.
async fn delete_group(app: &App, caller: &Principal, id: &str) -> Result<Response<Body>, ApiError> {
    let id = group_id(id)?;
    let projects = blocking(app, move |e| e.delete_user_group(id)).await??;
    tracing::info!(target: "berth::auth", id, ?projects, by = caller.name(),
        "user group deleted with its project memberships");
    Ok(empty(StatusCode::OK))
}

/// The DN a project membership request's `member_group` names: by `id`
/// (a user group's, when positive: Harbor's rule, the id wins) or by
/// `ldap_group_dn`. `400` for another group type, an unknown id or no DN.
pub(crate) fn member_group_dn(
    app: &App,
    group: &berth_wire::harbor::MemberGroup,
) -> Result<String, ApiError> {
    check_group_type(group.group_type).map_err(|_| {
        ApiError::new(
            Code::BadRequest,
            format!(
                "member_group.group_type {} is not supported: berth has LDAP groups (1) only",
                group.group_type.unwrap_or_default()
            ),
        )
    })?;
    if let Some(id) = group.id.filter(|id| *id > 0) {
        let id = id.unsigned_abs();
        return match app.engine.user_group(id)? {
            Some(g) => Ok(g.ldap_dn),
            None => Err(ApiError::new(
                Code::BadRequest,
                format!("member_group.id {id}: there is no user group with this id"),
            )),
        };
    }
    match group
        .ldap_group_dn
        .as_deref()
        .filter(|d| !d.trim().is_empty())
    {
        Some(dn) => Ok(dn.to_owned()),
        None => Err(ApiError::new(
            Code::BadRequest,
            "member_group needs id (a user group's) or ldap_group_dn (the group's DN in the \
             directory)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn running() -> LdapConfig {
        LdapConfig {
            url: "ldap://dir.example:389".into(),
            starttls: false,
            verify_cert: true,
            ca_file: None,
            search_dn: "cn=search,dc=x".into(),
            search_password: Secret("configured-secret".into()),
            base_dn: "ou=people,dc=x".into(),
            filter: String::new(),
            uid: "uid".into(),
            scope: LdapScope::Subtree,
            timeout: Duration::from_secs(5),
            group_base_dn: String::new(),
            group_search_filter: String::new(),
            group_attribute_name: "cn".into(),
            group_search_scope: LdapScope::Subtree,
            group_admin_dn: String::new(),
            group_membership_attribute: "memberof".into(),
        }
    }

    fn req(v: Value) -> LdapConfReq {
        serde_json::from_value(v).unwrap()
    }

    /// The configured password goes only to the configured URL, for the
    /// configured DN, with certificates checked as configured.
    #[test]
    fn the_configured_password_stays_with_its_url_and_dn() {
        let r = running();
        let pw = |c: LdapConfig| c.search_password.0;
        assert_eq!(
            pw(ping_config(&r, req(json!({}))).unwrap()),
            "configured-secret"
        );
        let same = json!({"ldap_url": "ldap://dir.example:389", "ldap_search_password": "",
                          "ldap_base_dn": "dc=y", "ldap_scope": 1});
        let c = ping_config(&r, req(same)).unwrap();
        assert_eq!(pw(c.clone()), "configured-secret");
        assert_eq!((c.base_dn.as_str(), c.scope), ("dc=y", LdapScope::OneLevel));
        // Elsewhere, as someone else, or unverified: bring a password.
        for other in [
            json!({"ldap_url": "ldap://attacker.example:389"}),
            json!({"ldap_url": "ldaps://dir.example:636"}),
            json!({"ldap_search_dn": "uid=alice,ou=people,dc=x"}),
            json!({"ldap_verify_cert": false}),
        ] {
            let e = ping_config(&r, req(other.clone())).expect_err("refused");
            assert_eq!(e.code, Code::BadRequest, "{other}");
            let mut with = other.clone();
            with["ldap_search_password"] = json!("their-own");
            assert_eq!(
                pw(ping_config(&r, req(with)).unwrap()),
                "their-own",
                "{other}"
            );
        }
        // Anonymous elsewhere needs no password, and gets none.
        let anon = json!({"ldap_url": "ldap://other:389", "ldap_search_dn": ""});
        assert_eq!(pw(ping_config(&r, req(anon)).unwrap()), "");
        // Bad values.
        for bad in [
            json!({"ldap_url": "http://dir.example"}),
            json!({"ldap_scope": 3}),
            json!({"ldap_connection_timeout": -1}),
            json!({"ldap_connection_timeout": 3600}),
        ] {
            assert!(ping_config(&r, req(bad.clone())).is_err(), "{bad}");
        }
        let c = ping_config(&r, req(json!({"ldap_connection_timeout": 2}))).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(2));
    }

    #[test]
    fn group_names_default_to_the_first_value() {
        assert_eq!(first_value("cn=devs,ou=groups,dc=x"), "devs");
        assert_eq!(first_value("CN = Dev Team , dc=x"), "Dev Team");
        assert_eq!(first_value("weird"), "weird");
    }

    #[test]
    fn routes() {
        let g = |m: Method, p: &str| {
            let segs: Vec<&str> = p.split('/').collect();
            resolve(&m, &segs).map(|(e, g)| (format!("{e:?}"), matches!(g, Guard::Admin)))
        };
        assert_eq!(g(Method::POST, "ldap/ping").unwrap(), ("Ping".into(), true));
        assert_eq!(
            g(Method::POST, "ldap/users/import").unwrap(),
            ("ImportUsers".into(), true)
        );
        assert_eq!(
            g(Method::GET, "usergroups/search").unwrap(),
            ("SearchUserGroups".into(), false)
        );
        assert_eq!(
            g(Method::DELETE, "usergroups/7").unwrap(),
            ("DeleteGroup(\"7\")".into(), true)
        );
        assert_eq!(
            g(Method::GET, "ldap/ping").unwrap_err().code,
            Code::Unsupported
        );
        assert_eq!(
            g(Method::GET, "ldap/nothing").unwrap_err().code,
            Code::RouteUnknown
        );
    }
}
