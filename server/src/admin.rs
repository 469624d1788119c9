//! The admin API, in Harbor v2.0's shape for the basics. Callers sign in
//! with Basic credentials, as Harbor's API clients do (the route table
//! takes no registry tokens here); errors are Harbor's
//! `{"errors":[{"code","message"}]}` (`errors::Surface::Harbor`).
//!
//! ```text
//! GET  /api/v2.0/projects                 projects the caller may pull from
//! POST /api/v2.0/projects                 {"project_name":"p","metadata":{"public":"true"}} → 201
//!                                         with "registry_id": a proxy cache project (admin)
//! GET  /api/v2.0/projects/{name}          one project (404 if the caller cannot see it)
//! PUT  /api/v2.0/projects/{name}          {"metadata":{"public":"false"}}         (project admin)
//! GET  /api/v2.0/projects/{name}/members  members                    (members, admins)
//! POST /api/v2.0/projects/{name}/members  {"role_id":2,"member_user":{"username":"bob"}} → 201
//!                                         or {"role_id":2,"member_group":{"group_type":1,
//!                                         "ldap_group_dn":"cn=devs,ou=groups,dc=example,dc=org"}}
//!                                         role_id: 1 projectAdmin, 2 developer, 3 guest, 4 maintainer
//!                                         (project admin; see `add_member` on unknown users)
//! GET  /api/v2.0/users                    every user                              (admin)
//! POST /api/v2.0/users                    {"username","password","email","realname"} → 201
//!                                         (admin; anyone with self-registration on)
//! GET  /api/v2.0/users/current            the caller
//! GET  /api/v2.0/registries               upstream registries, paged (?q=name=~x,type=…
//!                                         &page&page_size; X-Total-Count, Link)    (admin)
//! POST /api/v2.0/registries               {"name","type":"docker-registry","url",
//!                                          "credential":{"type":"basic","access_key",
//!                                          "access_secret"},"insecure"} → 201      (admin)
//! GET|PUT|DELETE /api/v2.0/registries/{id} one registry (its secret never shown); PUT
//!                                         takes Harbor's RegistryUpdate; DELETE is
//!                                         412 while a project pulls through it    (admin)
//! POST /api/v2.0/registries/ping          {"id"} or {"type","url",…}: 200 if it answers
//!                                         as a registry with the credential, else 400 (admin)
//! …/replication/policies, …/executions    pull-based replication (replication.rs) (admin)
//! GET  /api/v2.0/robots                   every robot                             (admin)
//! POST /api/v2.0/robots                   {"name":"ci","duration":-1,"level":"project",
//!                                          "permissions":[{"kind":"project","namespace":"p",
//!                                            "access":[{"resource":"repository","action":"pull"}]}]}
//!                                         → 201 {"id","name":"robot$p+ci","secret","expires_at"}
//!                                         (project admin of the namespace); the secret is shown once
//! ```
//!
//! Paths under `/api/v2.0/` that are not listed answer `404`, so other
//! endpoints (e.g. `system/gc/…`) can be routed before this module. Each
//! endpoint's guard is in [`resolve`], the admin API's rows of the route
//! table; handlers get the admitted caller and never authenticate.
//!
//! With auth off, every endpoint here answers `403 DENIED` (saying auth is
//! off): with no one signed in, anything created here would be an
//! anonymous caller's, and would take effect the day auth is turned on
//! (accounts, roles, robots). Manage accounts with auth on, or offline with
//! `berthctl`.

use crate::limits::RequestBody;
use berth_engine::records::ProjectRecord;
use berth_engine::{Account, AccountError, Action, Actions, Role, UserCheck};
use hyper::header::LOCATION;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, Guard, Principal, Resource, Target};
use crate::config::ProjectCreation;
use crate::errors::{ApiError, Code};
use crate::http::{blocking, empty, hv, json, read_small_body, App, Body};
use crate::registries_api::paged_with;
use crate::router::{Query, TableConfig};
use crate::time::rfc3339_secs;

// The request bodies live in `berth_wire::harbor`, beside their fuzz target.
use berth_wire::harbor::{MemberReq, ProjectReq, RobotPermission, RobotReq, UserReq};

/// Where the admin API lives.
pub const PREFIX: &str = "/api/v2.0/";

const MAX_JSON: usize = 64 << 10;

/// An admin API endpoint, as routed (`name`: the project in the path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    ListProjects,
    CreateProject,
    GetProject(&'a str),
    UpdateProject(&'a str),
    ListMembers(&'a str),
    AddMember(&'a str),
    ListUsers,
    CreateUser,
    CurrentUser,
    ListRobots,
    CreateRobot,
    ListRegistries,
    CreateRegistry,
    PingRegistry,
    GetRegistry(&'a str),
    UpdateRegistry(&'a str),
    DeleteRegistry(&'a str),
    Replication(crate::replication::Endpoint<'a>),
    /// Users, robots, projects and members changed or removed.
    Day2(crate::accounts_api::Endpoint<'a>),
    /// Repositories and artifacts.
    Artifacts(crate::artifacts_api::Endpoint<'a>),
    /// Tag immutability rules.
    Immutable(crate::immutable_api::Endpoint<'a>),
    /// Project quotas.
    Quotas(crate::quotas_api::Endpoint<'a>),
    /// The audit log, whole or of one project.
    AuditLogs(Option<&'a str>),
    /// A project's webhooks.
    Webhooks(crate::webhooks::Endpoint<'a>),
    /// Tag retention policies and their runs.
    Retention(crate::retention_api::Endpoint<'a>),
    /// The LDAP directory (`ldap/…`) and user groups (`usergroups/…`).
    Ldap(crate::ldap_api::Endpoint<'a>),
}

/// The route table's rows for [`PREFIX`] (`rest` is the path after it):
/// each endpoint with the guard it needs. With auth off every path here is
/// `403`: see the module docs.
pub fn resolve<'a>(
    config: TableConfig,
    method: &Method,
    rest: &'a str,
) -> Result<(Endpoint<'a>, Guard<'a>), ApiError> {
    use crate::accounts_api::Endpoint as D;
    use crate::artifacts_api::Endpoint as A;
    use crate::immutable_api::Endpoint as I;
    use crate::quotas_api::Endpoint as Q;
    use Endpoint as E;
    if !config.auth {
        return Err(ApiError::new(
            Code::Denied,
            "auth is off on this registry, so the account and project API is closed: \
             turn auth on (BERTH_AUTH_ENABLED=true) or use berthctl",
        ));
    }
    let admin_of = |name| Guard::Access(Target::Project(name), Actions::of(&[Action::Admin]));
    let segs: Vec<&'a str> = rest.trim_end_matches('/').split('/').collect();
    let m = method;
    Ok(match (segs.as_slice(), m) {
        (["projects"], &Method::GET) => (E::ListProjects, Guard::Caller),
        (["projects"], &Method::POST) => (E::CreateProject, Guard::SignedIn),
        (["projects", name], &Method::GET) => (E::GetProject(name), Guard::Caller),
        (["projects", name], &Method::PUT) => (E::UpdateProject(name), admin_of(name)),
        (["projects", name], &Method::DELETE) => (D::DeleteProject(name).into(), admin_of(name)),
        (["projects", p, "repositories", rest @ ..], m) => {
            let on = |actions: &[Action]| Guard::Access(Target::Project(p), Actions::of(actions));
            let (pull, push, delete) = (
                on(&[Action::Pull]),
                on(&[Action::Push]),
                on(&[Action::Delete]),
            );
            let (e, g) = match (rest, m) {
                ([], &Method::GET) => (A::ListRepos(p), pull),
                ([r], &Method::GET) => (A::GetRepo(p, r), pull),
                ([r], &Method::DELETE) => (A::DeleteRepo(p, r), delete),
                ([r, "artifacts"], &Method::GET) => (A::ListArtifacts(p, r), pull),
                ([r, "artifacts", x], &Method::GET) => (A::GetArtifact(p, r, x), pull),
                ([r, "artifacts", x], &Method::DELETE) => (A::DeleteArtifact(p, r, x), delete),
                ([r, "artifacts", x, "tags"], &Method::POST) => (A::AddTag(p, r, x), push),
                ([r, "artifacts", x, "tags", t], &Method::DELETE) => {
                    (A::DeleteTag(p, r, x, t), delete)
                }
                ([] | [_, "artifacts"], _) => return Err(ApiError::method_not_allowed("GET")),
                ([_] | [_, "artifacts", _], _) => {
                    return Err(ApiError::method_not_allowed("GET, DELETE"))
                }
                ([_, "artifacts", _, "tags"], _) => {
                    return Err(ApiError::method_not_allowed("POST"))
                }
                ([_, "artifacts", _, "tags", _], _) => {
                    return Err(ApiError::method_not_allowed("DELETE"))
                }
                _ => {
                    return Err(ApiError::new(
                        Code::RouteUnknown,
                        format!("no endpoint at {PREFIX}{rest}", rest = segs.join("/")),
                    ))
                }
            };
            (E::Artifacts(e), g)
        }
        (["projects", p, "immutabletagrules"], m) => match *m {
            Method::GET => (E::Immutable(I::List(p)), admin_of(p)),
            Method::POST => (E::Immutable(I::Create(p)), admin_of(p)),
            _ => return Err(ApiError::method_not_allowed("GET, POST")),
        },
        (["projects", p, "immutabletagrules", id], m) => match *m {
            Method::PUT => (E::Immutable(I::Update(p, id)), admin_of(p)),
            Method::DELETE => (E::Immutable(I::Delete(p, id)), admin_of(p)),
            _ => return Err(ApiError::method_not_allowed("PUT, DELETE")),
        },
        (["projects", p, "summary"], &Method::GET) => (
            E::Quotas(Q::Summary(p)),
            Guard::Access(Target::Project(p), Actions::of(&[Action::Pull])),
        ),
        (["audit-logs"], &Method::GET) => (E::AuditLogs(None), Guard::Admin),
        (["audit-logs"], _) => return Err(ApiError::method_not_allowed("GET")),
        (["projects", p, "logs"], &Method::GET) => (E::AuditLogs(Some(p)), admin_of(p)),
        (["projects", p, "webhook", rest @ ..], m) => {
            use crate::webhooks::Endpoint as W;
            let e = match (rest, m) {
                (["policies"], &Method::GET) => W::List(p),
                (["policies"], &Method::POST) => W::Create(p),
                (["policies", id], &Method::GET) => W::Get(p, id),
                (["policies", id], &Method::PUT) => W::Update(p, id),
                (["policies", id], &Method::DELETE) => W::Delete(p, id),
                (["jobs"], &Method::GET) => W::Jobs(p),
                (["events"], &Method::GET) => W::Events(p),
                (["policies"], _) => return Err(ApiError::method_not_allowed("GET, POST")),
                (["policies", _], _) => {
                    return Err(ApiError::method_not_allowed("GET, PUT, DELETE"))
                }
                (["jobs"] | ["events"], _) => return Err(ApiError::method_not_allowed("GET")),
                _ => {
                    return Err(ApiError::new(
                        Code::RouteUnknown,
                        format!("no endpoint at {PREFIX}{rest}", rest = segs.join("/")),
                    ))
                }
            };
            (E::Webhooks(e), admin_of(p))
        }
        (["quotas"], &Method::GET) => (E::Quotas(Q::List), Guard::Admin),
        (["quotas"], _) => return Err(ApiError::method_not_allowed("GET")),
        (["quotas", id], m) => match *m {
            Method::GET => (E::Quotas(Q::Get(id)), Guard::Admin),
            Method::PUT => (E::Quotas(Q::Update(id)), Guard::Admin),
            _ => return Err(ApiError::method_not_allowed("GET, PUT")),
        },
        (["projects", name, "members", mid], m) => match *m {
            Method::GET => (D::GetMember(name, mid).into(), Guard::SignedIn),
            Method::PUT => (D::UpdateMember(name, mid).into(), admin_of(name)),
            Method::DELETE => (D::DeleteMember(name, mid).into(), admin_of(name)),
            _ => return Err(ApiError::method_not_allowed("GET, PUT, DELETE")),
        },
        (["projects", name, "members"], &Method::GET) => (E::ListMembers(name), Guard::SignedIn),
        (["projects", name, "members"], &Method::POST) => (E::AddMember(name), admin_of(name)),
        (["users"], &Method::GET) => (E::ListUsers, Guard::Admin),
        // With self-registration anyone may sign up (only administrators
        // create administrators: see `create_user`).
        (["users"], &Method::POST) if config.self_registration => (E::CreateUser, Guard::Caller),
        (["users"], &Method::POST) => (E::CreateUser, Guard::Admin),
        (["users", "current"], &Method::GET) => (E::CurrentUser, Guard::SignedIn),
        (["users", "current"], _) => return Err(ApiError::method_not_allowed("GET")),
        (["users", id], m) => match *m {
            Method::GET => (D::GetUser(id).into(), Guard::SignedIn),
            Method::PUT => (D::UpdateUser(id).into(), Guard::SignedIn),
            Method::DELETE => (D::DeleteUser(id).into(), Guard::Admin),
            _ => return Err(ApiError::method_not_allowed("GET, PUT, DELETE")),
        },
        (["users", id, "password"], &Method::PUT) => (D::SetPassword(id).into(), Guard::SignedIn),
        (["users", id, "sysadmin"], &Method::PUT) => (D::SetSysadmin(id).into(), Guard::Admin),
        (["users", _, "password" | "sysadmin"], _) => {
            return Err(ApiError::method_not_allowed("PUT"))
        }
        // Every robot for administrators; one project's (Harbor's
        // `q=Level=project,ProjectID=N`) for its administrators.
        (["robots"], &Method::GET) => (E::ListRobots, Guard::SignedIn),
        // The project is in the body: `create_robot` checks it.
        (["robots"], &Method::POST) => (E::CreateRobot, Guard::SignedIn),
        (["robots", id], m) => match *m {
            Method::GET => (D::GetRobot(id).into(), Guard::SignedIn),
            Method::PUT => (D::UpdateRobot(id).into(), Guard::SignedIn),
            Method::PATCH => (D::RefreshRobot(id).into(), Guard::SignedIn),
            Method::DELETE => (D::DeleteRobot(id).into(), Guard::SignedIn),
            _ => return Err(ApiError::method_not_allowed("GET, PUT, PATCH, DELETE")),
        },
        (["registries"], &Method::GET) => (E::ListRegistries, Guard::Admin),
        (["registries"], &Method::POST) => (E::CreateRegistry, Guard::Admin),
        (["registries", "ping"], &Method::POST) => (E::PingRegistry, Guard::Admin),
        (["registries", "ping"], _) => return Err(ApiError::method_not_allowed("POST")),
        (["registries", id], &Method::GET) => (E::GetRegistry(id), Guard::Admin),
        (["registries", id], &Method::PUT) => (E::UpdateRegistry(id), Guard::Admin),
        (["registries", id], &Method::DELETE) => (E::DeleteRegistry(id), Guard::Admin),
        (["registries", _], _) => return Err(ApiError::method_not_allowed("GET, PUT, DELETE")),
        (["retentions", ..], m) => {
            let (e, guard) = crate::retention_api::resolve(m, &segs)?;
            (E::Retention(e), guard)
        }
        (["ldap", ..] | ["usergroups", ..], m) => {
            let (e, guard) = crate::ldap_api::resolve(m, &segs)?;
            (E::Ldap(e), guard)
        }
        (["replication", ..], m) => (
            E::Replication(crate::replication::resolve(m, &segs)?),
            Guard::Admin,
        ),
        (
            ["projects"] | ["users"] | ["robots"] | ["registries"] | ["projects", _, "members"],
            _,
        ) => return Err(ApiError::method_not_allowed("GET, POST")),
        (["projects", _], _) => return Err(ApiError::method_not_allowed("GET, PUT, DELETE")),
        _ => {
            return Err(ApiError::new(
                Code::RouteUnknown,
                format!("no endpoint at {PREFIX}{rest}"),
            ))
        }
    })
}

/// Runs an admin endpoint for the caller its guard admitted.
pub async fn handle(
    app: &std::sync::Arc<App>,
    endpoint: Endpoint<'_>,
    caller: &Principal,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    use Endpoint as E;
    match endpoint {
        E::ListProjects => list_projects(app, caller, parts).await,
        E::CreateProject => create_project(app, caller, body).await,
        E::GetProject(name) => get_project(app, caller, name).await,
        E::UpdateProject(name) => update_project(app, caller, name, body).await,
        E::ListMembers(name) => list_members(app, caller, name).await,
        E::AddMember(name) => add_member(app, caller, name, body).await,
        E::ListUsers => list_users(app, parts).await,
        E::CreateUser => create_user(app, caller, body).await,
        E::CurrentUser => current_user(app, caller).await,
        E::ListRobots => list_robots(app, caller, parts).await,
        E::CreateRobot => create_robot(app, caller, parts, body).await,
        E::ListRegistries => crate::registries_api::list(app, parts).await,
        E::CreateRegistry => crate::registries_api::create(app, caller, body).await,
        E::PingRegistry => crate::registries_api::ping(app, body).await,
        E::GetRegistry(id) => crate::registries_api::get(app, id).await,
        E::UpdateRegistry(id) => crate::registries_api::update(app, caller, id, body).await,
        E::DeleteRegistry(id) => crate::registries_api::delete(app, caller, id).await,
        E::Replication(e) => crate::replication::handle(app, e, parts, body).await,
        E::Day2(e) => crate::accounts_api::handle(app, e, caller, parts, body).await,
        E::Artifacts(e) => crate::artifacts_api::handle(app, e, parts, body).await,
        E::Immutable(e) => crate::immutable_api::handle(app, e, parts, body).await,
        E::Quotas(e) => crate::quotas_api::handle(app, e, parts, body).await,
        E::AuditLogs(project) => crate::audit::list(app, parts, project).await,
        E::Webhooks(e) => crate::webhooks::handle(app, e, caller.name(), parts, body).await,
        E::Retention(e) => crate::retention_api::handle(app, e, caller, parts, body).await,
        E::Ldap(e) => crate::ldap_api::handle(app, e, caller, parts, body).await,
    }
}

impl<'a> From<crate::accounts_api::Endpoint<'a>> for Endpoint<'a> {
    fn from(e: crate::accounts_api::Endpoint<'a>) -> Self {
        Endpoint::Day2(e)
    }
}

pub(crate) async fn read_json<T: for<'de> Deserialize<'de>>(
    body: RequestBody,
) -> Result<T, ApiError> {
    let raw = read_small_body(body, MAX_JSON).await?;
    serde_json::from_slice(&raw)
        .map_err(|e| ApiError::new(Code::BadRequest, format!("invalid JSON body: {e}")))
}

pub(crate) fn ok_json(v: &Value) -> Result<Response<Body>, ApiError> {
    Ok(json(
        serde_json::to_vec(v).map_err(ApiError::internal)?,
        "application/json",
    ))
}

pub(crate) fn created(location: String) -> Response<Body> {
    let mut res = empty(StatusCode::CREATED);
    res.headers_mut().insert(LOCATION, hv(&location));
    res
}

pub(crate) fn time(ms: u64) -> String {
    rfc3339_secs(ms / 1000)
}

fn project_json(name: &str, p: &ProjectRecord) -> Value {
    let mut v = json!({
        "project_id": p.id,
        "name": name,
        "metadata": {"public": p.public.to_string()},
        "owner_name": p.owner,
        "creation_time": time(p.created_ms),
    });
    if let Some(id) = p.registry_id {
        v["registry_id"] = json!(id);
    }
    v
}

pub(crate) fn not_found(what: String) -> ApiError {
    ApiError::new(Code::NotFound, what)
}

/// Harbor's paging (`page`, `page_size`, `X-Total-Count`, `Link`) and
/// filters: `name` (substring), `public`, `owner`, and `q=name=~x`.
async fn list_projects(
    app: &App,
    caller: &Principal,
    parts: &Parts,
) -> Result<Response<Body>, ApiError> {
    let query = Query(parts.uri.query().unwrap_or(""));
    let name = query.get("name").map(|n| n.into_owned()).or_else(|| {
        query
            .get("q")
            .and_then(|q| q.strip_prefix("name=~").map(str::to_owned))
    });
    let public = match query.get("public").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("public must be true or false, not {other:?}"),
            ))
        }
    };
    let owner = query.get("owner").map(|o| o.into_owned());
    let mut out = Vec::new();
    for (n, rec) in app.engine.projects()? {
        let wanted = name.as_deref().is_none_or(|x| n.contains(x))
            && public.is_none_or(|p| rec.public == p)
            && owner.as_deref().is_none_or(|o| rec.owner == o);
        if wanted
            && auth::permits(
                app,
                caller,
                Resource::Project(&n),
                Actions::of(&[Action::Pull]),
            )?
        {
            out.push((n, rec));
        }
    }
    paged_with(query, "/api/v2.0/projects", &out, |(n, rec)| {
        Ok(project_json(n, rec))
    })
}

async fn get_project(
    app: &App,
    caller: &Principal,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let visible = auth::permits(
        app,
        caller,
        Resource::Project(name),
        Actions::of(&[Action::Pull]),
    )?;
    match app.engine.project(name)? {
        Some(rec) if visible => {
            let mut v = project_json(name, &rec);
            // Harbor's clients find a project's retention policy here.
            if let Some((id, _)) = app.engine.retention_policy_of(name)? {
                v["metadata"]["retention_id"] = json!(id.to_string());
            }
            ok_json(&v)
        }
        // A private project is invisible to those who cannot read it.
        _ => Err(not_found(format!("project {name} not found"))),
    }
}

async fn create_project(
    app: &App,
    caller: &Principal,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let account = auth::effective_account(caller);
    if app.auth.project_creation == ProjectCreation::Adminonly && !account.is_admin() {
        return Err(ApiError::new(
            Code::Denied,
            "only administrators may create projects on this registry",
        ));
    }
    if matches!(account, Account::Robot { .. }) {
        return Err(ApiError::new(
            Code::Denied,
            "robots may not create projects",
        ));
    }
    let req: ProjectReq = read_json(body).await?;
    let Some(name) = req.project_name.clone() else {
        return Err(ApiError::new(Code::BadRequest, "project_name is required"));
    };
    // A proxy cache makes berth fetch from elsewhere with a stored
    // credential: a system administrator's decision, as in Harbor.
    if req.registry_id.is_some() && !account.is_admin() {
        return Err(ApiError::new(
            Code::Denied,
            "only administrators may create proxy cache projects",
        ));
    }
    let public = req.public().unwrap_or(false);
    let limit = limit_of(&req, &account)?.flatten();
    let owner = Some(account.name().to_owned()).filter(|o| !o.is_empty());
    let (n, registry) = (name.clone(), req.registry_id);
    let id = blocking(app, move |e| {
        e.create_project_with(&n, public, owner.as_deref(), registry, limit)
    })
    .await??;
    app.proxy_cache.forget_project(&name);
    tracing::info!(target: "berth::auth", project = %name, public, registry_id = ?registry,
        by = account.name(), "project created");
    let mut res = created(format!("/api/v2.0/projects/{id}"));
    res.headers_mut()
        .insert("x-resource-id", hv(&id.to_string()));
    Ok(res)
}

/// Admitted as the project's administrator.
async fn update_project(
    app: &App,
    caller: &Principal,
    name: &str,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let req: ProjectReq = read_json(body).await?;
    let limit = limit_of(&req, &auth::effective_account(caller))?;
    if let Some(public) = req.public() {
        let n = name.to_owned();
        blocking(app, move |e| e.set_project_public(&n, public)).await??;
    }
    if let Some(limit) = limit {
        let n = name.to_owned();
        blocking(app, move |e| e.set_storage_limit(&n, limit)).await??;
        tracing::info!(target: "berth::auth", project = %name, ?limit, "quota set");
    }
    Ok(empty(StatusCode::OK))
}

/// The request's `storage_limit` (`-1`: unlimited), which only system
/// administrators set: a project administrator may not raise their own
/// quota. `None`: not given.
fn limit_of(req: &ProjectReq, account: &Account) -> Result<Option<Option<u64>>, ApiError> {
    let Some(value) = req.storage_limit else {
        return Ok(None);
    };
    if !account.is_admin() {
        return Err(ApiError::new(
            Code::Denied,
            "only system administrators set a project's storage_limit",
        ));
    }
    crate::quotas_api::storage_limit(value).map(Some)
}

/// Members are listed to the project's members and to system
/// administrators only: a public project is readable by everyone, but its
/// member list would hand any signed-in caller a list of user names.
async fn list_members(
    app: &App,
    caller: &Principal,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    members_visible(app, caller, name)?;
    let mut members = app
        .engine
        .members(name)?
        .iter()
        .map(|(user, m)| member_json(app, name, MemberOf::User(user), m))
        .collect::<Result<Vec<Value>, ApiError>>()?;
    for (group, m) in app.engine.group_members(name)? {
        members.push(member_json(app, name, MemberOf::Group(&group), &m)?);
    }
    ok_json(&Value::Array(members))
}

/// Who a membership is of: a user (Harbor's `entity_type` `u`) or an LDAP
/// group by DN (`g`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum MemberOf<'a> {
    User(&'a str),
    Group(&'a str),
}

/// A membership in Harbor's `ProjectMemberEntity` shape.
pub(crate) fn member_json(
    app: &App,
    project: &str,
    of: MemberOf<'_>,
    m: &berth_engine::records::MemberRecord,
) -> Result<Value, ApiError> {
    let project_id = app.engine.project(project)?.map_or(0, |p| p.id);
    let (entity_name, entity_type) = match of {
        MemberOf::User(u) => (u, "u"),
        MemberOf::Group(g) => (g, "g"),
    };
    Ok(json!({
        "id": m.id,
        "project_id": project_id,
        "entity_name": entity_name,
        "entity_type": entity_type,
        "role_id": m.role,
        "role_name": Role::from_id(m.role).map_or("unknown", Role::name),
    }))
}

/// `Ok` if the caller may see `name`'s members: its members and system
/// administrators (`404` if it cannot see the project, `403` otherwise).
pub(crate) fn members_visible(app: &App, caller: &Principal, name: &str) -> Result<(), ApiError> {
    let account = auth::effective_account(caller);
    let visible = auth::permits(
        app,
        caller,
        Resource::Project(name),
        Actions::of(&[Action::Pull]),
    )?;
    let (Some(_), true) = (app.engine.project(name)?, visible) else {
        return Err(not_found(format!("project {name} not found")));
    };
    let member = match &account {
        Account::User { admin: true, .. } => true,
        Account::User { name: user, .. } => app.engine.effective_role(name, user)?.is_some(),
        Account::Robot { .. } | Account::Anonymous => false,
    };
    if !member {
        return Err(ApiError::new(
            Code::Denied,
            format!("only members of project {name} may list its members"),
        ));
    }
    Ok(())
}

/// Admitted as the project's administrator.
async fn add_member(
    app: &App,
    p: &Principal,
    name: &str,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let req: MemberReq = read_json(body).await?;
    let role = role_of(req.role_id)?;
    let user = match (req.member_user, req.member_group) {
        (Some(u), None) => u.username,
        (None, Some(g)) => return add_group_member(app, p, name, role, g).await,
        _ => {
            return Err(ApiError::new(
                Code::BadRequest,
                "give exactly one of member_user and member_group",
            ))
        }
    };
    // Whether the user exists is told only to those who may list users
    // (system administrators, for whom an unknown name is a 400). A project
    // admin — which anyone can become by creating a project — gets the same
    // 201 either way: the membership is recorded by name and takes effect
    // if and when a user of that name exists.
    let check = if auth::effective_account(p).is_admin() {
        UserCheck::MustExist
    } else {
        UserCheck::ByName
    };
    let (project, u) = (name.to_owned(), user.clone());
    let id = blocking(app, move |e| {
        e.set_member_checked(&project, &u, role, check)
    })
    .await?
    .map_err(|e| match e {
        AccountError::NotFound { what } if what.starts_with("user ") => {
            ApiError::new(Code::BadRequest, format!("{what} does not exist"))
        }
        e => e.into(),
    })?;
    tracing::info!(target: "berth::auth", project = name, user = %user,
        role = role.name(), by = p.name(), "member set");
    Ok(created(format!("/api/v2.0/projects/{name}/members/{id}")))
}

/// An LDAP group as a project member (Harbor's `member_group` with
/// `group_type` 1 and a user group's `id` or an `ldap_group_dn`): its
/// members get `role` at their next login. Kept by DN, normalized
/// (`berth_engine::directory`).
async fn add_group_member(
    app: &App,
    p: &Principal,
    name: &str,
    role: berth_engine::Role,
    group: berth_wire::harbor::MemberGroup,
) -> Result<Response<Body>, ApiError> {
    let dn = crate::ldap_api::member_group_dn(app, &group)?;
    let (project, d) = (name.to_owned(), dn.clone());
    let id = blocking(app, move |e| e.set_group_member(&project, &d, role)).await??;
    tracing::info!(target: "berth::auth", project = name, group = %dn,
        role = role.name(), by = p.name(), "group member set");
    Ok(created(format!("/api/v2.0/projects/{name}/members/{id}")))
}

/// The role Harbor's `role_id` names.
pub(crate) fn role_of(id: u8) -> Result<Role, ApiError> {
    Role::from_id(id).ok_or_else(|| {
        ApiError::new(
            Code::BadRequest,
            format!(
                "role_id {id} is not 1 (projectAdmin), 2 (developer), 3 (guest) or 4 (maintainer)"
            ),
        )
    })
}

pub(crate) fn user_json(name: &str, u: &berth_engine::records::UserRecord) -> Value {
    json!({
        "user_id": u.id,
        "username": name,
        "email": u.email,
        "realname": u.realname,
        "sysadmin_flag": u.is_admin(),
        "creation_time": time(u.created_ms),
    })
}

/// Admitted as a system administrator.
/// Paged as Harbor pages it; `q=username=~x` (substring) or
/// `q=username=x` (exact).
async fn list_users(app: &App, parts: &Parts) -> Result<Response<Body>, ApiError> {
    let query = Query(parts.uri.query().unwrap_or(""));
    let q = query.get("q").map(|q| q.into_owned()).unwrap_or_default();
    let matches = |name: &str| match (q.strip_prefix("username=~"), q.strip_prefix("username=")) {
        (Some(sub), _) => name.contains(sub),
        (None, Some(exact)) => name == exact,
        _ => true,
    };
    let users: Vec<_> = app
        .engine
        .users()?
        .into_iter()
        .filter(|(n, _)| matches(n))
        .collect();
    paged_with(query, "/api/v2.0/users", &users, |(n, u)| {
        Ok(user_json(n, u))
    })
}

async fn current_user(app: &App, caller: &Principal) -> Result<Response<Body>, ApiError> {
    let account = auth::effective_account(caller);
    match &account {
        Account::User { name, .. } if !name.is_empty() => match app.engine.user(name)? {
            Some(u) => ok_json(&user_json(name, &u)),
            None => Err(not_found(format!("user {name} not found"))),
        },
        Account::Robot { name, project, .. } => {
            ok_json(&json!({"username": name, "project": project, "robot": true}))
        }
        _ => ok_json(&json!({"username": "", "sysadmin_flag": true})),
    }
}

/// Admitted as a system administrator, or (self-registration) anyone.
async fn create_user(
    app: &App,
    p: &Principal,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    if app.auth.directory.is_some() {
        // Harbor: in ldap_auth mode users come from the directory, onboarded
        // at their first login.
        return Err(ApiError::new(
            Code::Denied,
            "users cannot be created in ldap_auth mode: they are the LDAP directory's, \
             and each gets an account at their first login",
        ));
    }
    let by_admin = auth::effective_account(p).is_admin();
    let req: UserReq = read_json(body).await?;
    if req.sysadmin_flag && !by_admin {
        return Err(ApiError::new(
            Code::Denied,
            "only administrators may create administrators",
        ));
    }
    let name = req.username.clone();
    // argon2id hashing: in a verification slot, like every password check.
    let id = auth::in_password_slot(app, move |e| {
        e.create_user(
            &req.username,
            &req.password,
            req.sysadmin_flag,
            &req.email,
            &req.realname,
        )
    })
    .await??;
    tracing::info!(target: "berth::auth", user = %name, by = p.name(), "user created");
    Ok(created(format!("/api/v2.0/users/{id}")))
}

/// Admitted as a system administrator.
/// `GET /robots[?q=Level=project,ProjectID=N]`, paged: with a project,
/// its robots, for its administrators (`404` for a project the caller
/// cannot see, as for every object found by id); without, every robot,
/// for system administrators.
async fn list_robots(
    app: &App,
    caller: &Principal,
    parts: &Parts,
) -> Result<Response<Body>, ApiError> {
    let query = Query(parts.uri.query().unwrap_or(""));
    let q = query.get("q").map(|q| q.into_owned()).unwrap_or_default();
    let project_id = q
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("ProjectID"))
        .map(|(_, v)| {
            v.trim().parse::<u64>().map_err(|_| {
                ApiError::new(
                    Code::BadRequest,
                    format!("ProjectID {v:?} is not a project id"),
                )
            })
        })
        .transpose()?;
    let mut robots = app.engine.robots()?;
    match project_id {
        Some(id) => {
            let missing = || not_found(format!("project {id} not found"));
            let project = app
                .engine
                .projects()?
                .into_iter()
                .find(|(_, p)| p.id == id)
                .map(|(name, _)| name)
                .ok_or_else(missing)?;
            auth::check_admin_of_visible(app, parts, caller, &project, missing)?;
            robots.retain(|(_, r)| r.project == project);
        }
        None if !auth::effective_account(caller).is_admin() => {
            return Err(ApiError::new(
                Code::Denied,
                "listing every robot needs a system administrator; a project's \
                 administrators list its robots with q=Level=project,ProjectID=<id>",
            ))
        }
        None => {}
    }
    paged_with(query, "/api/v2.0/robots", &robots, |(name, r)| {
        Ok(robot_json(name, r))
    })
}

/// A robot in Harbor's `Robot` shape (never its secret).
pub(crate) fn robot_json(name: &str, r: &berth_engine::records::RobotRecord) -> Value {
    json!({
        "id": r.id,
        "name": name,
        "description": r.description,
        "level": "project",
        "disable": r.disabled,
        "expires_at": r.expires_ms.map_or(-1, |e| (e / 1000) as i64),
        "creation_time": time(r.created_ms),
        "permissions": [{
            "kind": "project",
            "namespace": r.project,
            "access": r.actions.iter()
                .map(|a| json!({"resource": "repository", "action": a}))
                .collect::<Vec<_>>(),
        }],
    })
}

/// Admitted signed in (so a caller without an account is answered `401`
/// without waiting on its body); the project is the body's namespace, so
/// its check comes here, on the admitted caller.
async fn create_robot(
    app: &App,
    p: &Principal,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let req: RobotReq = read_json(body).await?;
    if req.level.as_deref().is_some_and(|l| l != "project") {
        return Err(ApiError::new(
            Code::BadRequest,
            "only project-level robots are supported (level: project)",
        ));
    }
    let [perm] = req.permissions.as_slice() else {
        return Err(ApiError::new(
            Code::BadRequest,
            "give exactly one permission entry, of kind project",
        ));
    };
    if perm.kind.as_deref().is_some_and(|k| k != "project") {
        return Err(ApiError::new(
            Code::BadRequest,
            "permission kind must be project",
        ));
    }
    auth::check(
        app,
        parts,
        p,
        Resource::Project(&perm.namespace),
        Actions::of(&[Action::Admin]),
    )?;
    let actions = robot_actions(perm)?;
    let expires_ms = robot_duration(req.duration)?;
    let (project, name, description) = (perm.namespace.clone(), req.name.clone(), req.description);
    let robot = blocking(app, move |e| {
        e.create_robot(&project, &name, actions, expires_ms, &description)
    })
    .await??;
    tracing::info!(target: "berth::auth", robot = %robot.name, by = p.name(), "robot created");
    let body = json!({
        "id": robot.id,
        "name": robot.name,
        "secret": robot.secret,
        "creation_time": time(robot.created_ms),
        "expires_at": robot.expires_ms.map_or(-1, |e| (e / 1000) as i64),
    });
    let mut res = ok_json(&body)?;
    *res.status_mut() = StatusCode::CREATED;
    res.headers_mut()
        .insert(LOCATION, hv(&format!("/api/v2.0/robots/{}", robot.id)));
    Ok(res)
}

/// The actions a robot permission entry grants (pull, push, delete on
/// repositories or artifacts; other resources are ignored).
pub(crate) fn robot_actions(perm: &RobotPermission) -> Result<Actions, ApiError> {
    let mut actions = Actions::NONE;
    for a in &perm.access {
        if a.resource
            .as_deref()
            .is_some_and(|r| r != "repository" && r != "artifact")
        {
            continue;
        }
        match Action::parse(&a.action) {
            Some(x @ (Action::Pull | Action::Push | Action::Delete)) => {
                actions = actions.union(Actions::of(&[x]))
            }
            _ => {
                return Err(ApiError::new(
                    Code::BadRequest,
                    format!("robot action {:?} is not pull, push or delete", a.action),
                ))
            }
        }
    }
    Ok(actions)
}

/// The expiry of a robot given `duration` days from now (-1 or absent:
/// never).
pub(crate) fn robot_duration(duration: Option<i64>) -> Result<Option<u64>, ApiError> {
    match duration {
        None | Some(-1) => Ok(None),
        Some(d) if d > 0 => Ok(Some(robot_expiry(berth_engine::records::now_ms(), d)?)),
        Some(d) => Err(ApiError::new(
            Code::BadRequest,
            format!("duration {d}: give days > 0, or -1 for never"),
        )),
    }
}

/// When a robot created at `now_ms` for `days` (> 0) expires, in Unix
/// milliseconds. Checked: a duration whose end is not a representable
/// time (about 213 billion days) is `400`, never an expiry that wrapped
/// into the past or the near future.
fn robot_expiry(now_ms: u64, days: i64) -> Result<u64, ApiError> {
    u64::try_from(days)
        .ok()
        .and_then(|d| d.checked_mul(86_400_000))
        .and_then(|ms| ms.checked_add(now_ms))
        .ok_or_else(|| {
            ApiError::new(
                Code::BadRequest,
                format!("duration {days}: days past the end of representable time"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_expiry_never_wraps() {
        assert_eq!(robot_expiry(1_000, 1).unwrap(), 86_401_000);
        // 213503982335 days * 86_400_000 wraps u64 to about 13 hours.
        for days in [213_503_982_335, i64::MAX] {
            let e = robot_expiry(1_764_000_000_000, days).unwrap_err();
            assert_eq!(e.code, Code::BadRequest, "{days}");
        }
        let max_days = (u64::MAX - 5) / 86_400_000;
        assert!(robot_expiry(5, max_days as i64).is_ok());
        assert!(robot_expiry(6 + 86_400_000, max_days as i64).is_err());
    }
}
