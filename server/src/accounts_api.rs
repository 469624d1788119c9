//! The day-2 account endpoints of the admin API, in Harbor v2.0's shapes:
//! users, robots, project deletion and memberships changed or removed.
//!
//! ```text
//! GET|PUT /api/v2.0/users/{id}            one user; PUT takes UserProfile   (the user, admins)
//! DELETE  /api/v2.0/users/{id}            with their memberships            (admin)
//! PUT     /api/v2.0/users/{id}/password   {"old_password","new_password"}: a user changing
//!                                         their own gives the old one (a login attempt, rate
//!                                         limited as one); admins changing another's do not
//! PUT     /api/v2.0/users/{id}/sysadmin   {"sysadmin_flag":true}            (admin)
//! GET|PUT|PATCH|DELETE /api/v2.0/robots/{id}
//!                                         one robot; PUT takes Harbor's Robot (description,
//!                                         permissions on its project, disable, duration);
//!                                         PATCH {"secret"?} gives it a new secret, shown once
//!                                         (the robot's project admin, admins)
//! DELETE  /api/v2.0/projects/{name}       412 while it holds repositories   (project admin)
//! GET|PUT|DELETE /api/v2.0/projects/{name}/members/{mid}
//!                                         one membership; PUT takes RoleRequest (project admin;
//!                                         GET: members too)
//! ```
//!
//! Every change is one engine batch and takes effect on the next request:
//! a password change, secret refresh, deletion or a disabled robot makes
//! the old credential and every token issued on it fail at once (the
//! credential stamp, `Engine::credential_stamp`; see `docs/security.md`).

use berth_engine::account_admin::{RobotUpdate, UserUpdate};
use berth_engine::Account;
use berth_wire::harbor::{
    PasswordReq, RobotSecReq, RobotUpdateReq, RoleReq, SysadminReq, UserProfileReq,
};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::admin::{
    not_found, ok_json, read_json, robot_actions, robot_duration, robot_json, role_of, user_json,
};
use crate::auth::{self, Principal};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, empty, App, Body};
use crate::limits::RequestBody;

/// A day-2 endpoint, as routed (path parameters unparsed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    GetUser(&'a str),
    UpdateUser(&'a str),
    DeleteUser(&'a str),
    SetPassword(&'a str),
    SetSysadmin(&'a str),
    GetRobot(&'a str),
    UpdateRobot(&'a str),
    RefreshRobot(&'a str),
    DeleteRobot(&'a str),
    DeleteProject(&'a str),
    GetMember(&'a str, &'a str),
    UpdateMember(&'a str, &'a str),
    DeleteMember(&'a str, &'a str),
}

/// Runs a day-2 endpoint for the caller its guard admitted.
pub async fn handle(
    app: &App,
    endpoint: Endpoint<'_>,
    caller: &Principal,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    use Endpoint as E;
    match endpoint {
        E::GetUser(id) => {
            let (name, rec) = user_for(app, caller, id)?;
            ok_json(&user_json(&name, &rec))
        }
        E::UpdateUser(id) => {
            let (name, _) = user_for(app, caller, id)?;
            let req: UserProfileReq = read_json(body).await?;
            let update = UserUpdate {
                email: req.email,
                realname: req.realname,
            };
            let n = name.clone();
            blocking(app, move |e| e.update_user(&n, update)).await??;
            done(caller, "user updated", &name)
        }
        E::DeleteUser(id) => {
            let (name, _) = user_by_id(app, id)?;
            let n = name.clone();
            blocking(app, move |e| e.delete_user(&n)).await??;
            done(caller, "user deleted", &name)
        }
        E::SetPassword(id) => set_password(app, caller, parts, id, body).await,
        E::SetSysadmin(id) => {
            let (name, _) = user_by_id(app, id)?;
            let req: SysadminReq = read_json(body).await?;
            let n = name.clone();
            blocking(app, move |e| e.set_user_admin(&n, req.sysadmin_flag)).await??;
            done(caller, "administrator flag set", &name)
        }
        E::GetRobot(id) => {
            let (name, rec) = robot_for(app, caller, parts, id)?;
            ok_json(&robot_json(&name, &rec))
        }
        E::UpdateRobot(id) => update_robot(app, caller, parts, id, body).await,
        E::RefreshRobot(id) => {
            let (name, _) = robot_for(app, caller, parts, id)?;
            let req: RobotSecReq = read_json(body).await?;
            let n = name.clone();
            let secret = blocking(app, move |e| {
                e.refresh_robot_secret(&n, req.secret.as_deref())
            })
            .await??;
            tracing::info!(target: "berth::auth", robot = %name, by = caller.name(), "robot secret refreshed");
            ok_json(&json!({ "secret": secret }))
        }
        E::DeleteRobot(id) => {
            let (name, _) = robot_for(app, caller, parts, id)?;
            let n = name.clone();
            blocking(app, move |e| e.delete_robot(&n)).await??;
            done(caller, "robot deleted", &name)
        }
        E::DeleteProject(name) => {
            let n = name.to_owned();
            blocking(app, move |e| e.delete_project(&n)).await??;
            app.proxy_cache.forget_project(name);
            done(caller, "project deleted", name)
        }
        E::GetMember(project, mid) => {
            crate::admin::members_visible(app, caller, project)?;
            let (who, m) = member(app, project, mid)?;
            ok_json(&crate::admin::member_json(app, project, who.of(), &m)?)
        }
        E::UpdateMember(project, mid) => {
            let (who, _) = member(app, project, mid)?;
            let req: RoleReq = read_json(body).await?;
            let role = role_of(req.role_id)?;
            let p = project.to_owned();
            let on = format!("{project}:{}", who.name());
            match who {
                Member::User(u) => blocking(app, move |e| e.set_member(&p, &u, role)).await??,
                Member::Group(g) => {
                    blocking(app, move |e| e.set_group_member(&p, &g, role)).await??
                }
            };
            done(caller, "member role set", &on)
        }
        E::DeleteMember(project, mid) => {
            let (who, _) = member(app, project, mid)?;
            let p = project.to_owned();
            let on = format!("{project}:{}", who.name());
            match who {
                Member::User(u) => blocking(app, move |e| e.remove_member(&p, &u)).await??,
                Member::Group(g) => blocking(app, move |e| e.remove_group_member(&p, &g)).await??,
            };
            done(caller, "member removed", &on)
        }
    }
}

/// `200` with an empty body, the change logged.
fn done(caller: &Principal, what: &'static str, on: &str) -> Result<Response<Body>, ApiError> {
    tracing::info!(target: "berth::auth", on, by = caller.name(), "{what}");
    Ok(empty(StatusCode::OK))
}

/// A numeric id from a path, or `400` naming `what` it is of.
pub(crate) fn parse_id(id: &str, what: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            Code::BadRequest,
            format!("{what} id {id:?} is not a number"),
        )
    })
}

fn user_by_id(
    app: &App,
    id: &str,
) -> Result<(String, berth_engine::records::UserRecord), ApiError> {
    let n = parse_id(id, "user")?;
    app.engine
        .user_by_id(n)?
        .ok_or_else(|| not_found(format!("user {id} not found")))
}

/// User `id`, if the caller is that user or a system administrator; else
/// `404`, as if there were no such user (ids are not to be probed).
fn user_for(
    app: &App,
    caller: &Principal,
    id: &str,
) -> Result<(String, berth_engine::records::UserRecord), ApiError> {
    let account = auth::effective_account(caller);
    let found = user_by_id(app, id)?;
    match &account {
        Account::User { admin: true, .. } => Ok(found),
        Account::User { name, .. } if *name == found.0 => Ok(found),
        _ => Err(not_found(format!("user {id} not found"))),
    }
}

async fn set_password(
    app: &App,
    caller: &Principal,
    parts: &Parts,
    id: &str,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let (name, rec) = user_for(app, caller, id)?;
    if rec.is_ldap() {
        // Harbor: an LDAP user's password is the directory's.
        return Err(ApiError::new(
            Code::Denied,
            format!("user {name} is an LDAP user: change the password in the directory"),
        ));
    }
    let req: PasswordReq = read_json(body).await?;
    let account = auth::effective_account(caller);
    // Harbor's rule: one's own password needs the old one, even an
    // administrator's; it is checked as a login (rate limited, counted).
    if account.name() == name {
        let old = req.old_password.as_deref().unwrap_or_default();
        if auth::check_password(app, parts, &name, old)
            .await?
            .is_none()
        {
            return Err(ApiError::new(
                Code::Denied,
                "the old password is not correct",
            ));
        }
    }
    let (n, new) = (name.clone(), req.new_password);
    auth::in_password_slot(app, move |e| e.set_password(&n, &new)).await??;
    done(caller, "password changed", &name)
}

/// Robot `id` and its project, if the caller administers that project;
/// `403` if it only sees the project; `404`, as for an id nobody holds,
/// if it cannot see the project (robot ids are not to be probed).
fn robot_for(
    app: &App,
    caller: &Principal,
    parts: &Parts,
    id: &str,
) -> Result<(String, berth_engine::records::RobotRecord), ApiError> {
    let n = parse_id(id, "robot")?;
    let missing = || not_found(format!("robot {id} not found"));
    let Some((name, rec)) = app.engine.robot_by_id(n)? else {
        return Err(missing());
    };
    auth::check_admin_of_visible(app, parts, caller, &rec.project, missing)?;
    Ok((name, rec))
}

async fn update_robot(
    app: &App,
    caller: &Principal,
    parts: &Parts,
    id: &str,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let (name, rec) = robot_for(app, caller, parts, id)?;
    let req: RobotUpdateReq = read_json(body).await?;
    let actions = match req.permissions.as_deref() {
        None => None,
        Some([perm]) if perm.namespace == rec.project => Some(robot_actions(perm)?),
        Some(_) => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!(
                    "give one permission entry, for the robot's project {}",
                    rec.project
                ),
            ))
        }
    };
    let update = RobotUpdate {
        description: req.description,
        actions,
        disabled: req.disable,
        expires_ms: req.duration.map(|d| robot_duration(Some(d))).transpose()?,
    };
    let n = name.clone();
    blocking(app, move |e| e.update_robot(&n, update)).await??;
    done(caller, "robot updated", &name)
}

/// Who membership `mid` is of: a user by name, or an LDAP group by DN
/// (ids come from one sequence).
enum Member {
    User(String),
    Group(String),
}

impl Member {
    fn name(&self) -> &str {
        match self {
            Member::User(n) | Member::Group(n) => n,
        }
    }

    fn of(&self) -> crate::admin::MemberOf<'_> {
        match self {
            Member::User(n) => crate::admin::MemberOf::User(n),
            Member::Group(n) => crate::admin::MemberOf::Group(n),
        }
    }
}

/// Membership `mid` of `project`: whose, and its record.
fn member(
    app: &App,
    project: &str,
    mid: &str,
) -> Result<(Member, berth_engine::records::MemberRecord), ApiError> {
    let n = parse_id(mid, "member")?;
    if let Some((user, m)) = app
        .engine
        .members(project)?
        .into_iter()
        .find(|(_, m)| m.id == n)
    {
        return Ok((Member::User(user), m));
    }
    app.engine
        .group_members(project)?
        .into_iter()
        .find(|(_, m)| m.id == n)
        .map(|(group, m)| (Member::Group(group), m))
        .ok_or_else(|| not_found(format!("member {mid} of project {project} not found")))
}
