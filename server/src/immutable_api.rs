//! Harbor's tag immutability rules of a project:
//!
//! ```text
//! GET    /api/v2.0/projects/{p}/immutabletagrules        paged           (project admin)
//! POST   /api/v2.0/projects/{p}/immutabletagrules        ImmutableRule → 201
//! PUT    /api/v2.0/projects/{p}/immutabletagrules/{id}   ImmutableRule (e.g. "disabled")
//! DELETE /api/v2.0/projects/{p}/immutabletagrules/{id}
//! ```
//!
//! A rule is one tag selector (`matches` or `excludes`) and one repository
//! selector (`scope_selectors.repository`: `repoMatches` or
//! `repoExcludes`), patterns of kind `doublestar`, as Harbor's console
//! makes them. The engine enforces them (`engine/src/immutable.rs`).

use berth_engine::immutable::RuleSpec;
use berth_engine::records::{ImmutableRuleRecord, Selector};
use berth_wire::harbor::{ImmutableRuleReq, SelectorReq};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::admin::{created, read_json};
use crate::errors::{ApiError, Code};
use crate::http::{blocking, empty, App, Body};
use crate::limits::RequestBody;
use crate::registries_api::paged_with;
use crate::router::Query;

/// An immutability rule endpoint: the project, the rule id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    List(&'a str),
    Create(&'a str),
    Update(&'a str, &'a str),
    Delete(&'a str, &'a str),
}

/// Runs an endpoint for the project administrator its guard admitted.
pub async fn handle(
    app: &App,
    endpoint: Endpoint<'_>,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    match endpoint {
        Endpoint::List(p) => {
            let project = p.to_owned();
            let rules = blocking(app, move |e| e.immutable_rules(&project)).await??;
            let query = Query(parts.uri.query().unwrap_or(""));
            let path = format!("/api/v2.0/projects/{p}/immutabletagrules");
            paged_with(query, &path, &rules, |(id, r)| Ok(rule_json(*id, r)))
        }
        Endpoint::Create(p) => {
            let spec = spec_of(read_json(body).await?)?;
            let project = p.to_owned();
            let id = blocking(app, move |e| e.create_immutable_rule(&project, spec)).await??;
            Ok(created(format!(
                "/api/v2.0/projects/{p}/immutabletagrules/{id}"
            )))
        }
        Endpoint::Update(p, id) => {
            let id = rule_id(id)?;
            let spec = spec_of(read_json(body).await?)?;
            let project = p.to_owned();
            blocking(app, move |e| e.update_immutable_rule(&project, id, spec)).await??;
            Ok(empty(StatusCode::OK))
        }
        Endpoint::Delete(p, id) => {
            let id = rule_id(id)?;
            let project = p.to_owned();
            blocking(app, move |e| e.delete_immutable_rule(&project, id)).await??;
            Ok(empty(StatusCode::OK))
        }
    }
}

fn rule_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::new(Code::BadRequest, format!("rule id {id:?} is not a number")))
}

pub(crate) fn bad(message: String) -> ApiError {
    ApiError::new(Code::BadRequest, message)
}

/// The one selector of `list`, with the decorations that select and
/// exclude.
pub(crate) fn selector(
    what: &str,
    list: &[SelectorReq],
    (matches, excludes): (&str, &str),
) -> Result<Selector, ApiError> {
    let [s] = list else {
        return Err(bad(format!("give exactly one {what} selector")));
    };
    if s.kind.as_deref().is_some_and(|k| k != "doublestar") {
        return Err(bad(format!("{what} selector kind must be doublestar")));
    }
    let excludes = match s.decoration.as_str() {
        d if d == matches => false,
        d if d == excludes => true,
        d => {
            return Err(bad(format!(
                "{what} selector decoration {d:?} is not {matches} or {excludes}"
            )))
        }
    };
    Ok(Selector {
        pattern: s.pattern.clone(),
        excludes,
    })
}

fn spec_of(req: ImmutableRuleReq) -> Result<RuleSpec, ApiError> {
    if req.action.as_deref().is_some_and(|a| a != "immutable") {
        return Err(bad("action must be immutable".to_owned()));
    }
    let repos = req
        .scope_selectors
        .get("repository")
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(RuleSpec {
        disabled: req.disabled,
        tags: selector("tag", &req.tag_selectors, ("matches", "excludes"))?,
        repos: selector("repository", repos, ("repoMatches", "repoExcludes"))?,
    })
}

/// A rule in Harbor's `ImmutableRule` shape.
fn rule_json(id: u64, r: &ImmutableRuleRecord) -> Value {
    let sel = |s: &Selector, (m, x): (&str, &str)| {
        json!({"kind": "doublestar", "decoration": if s.excludes { x } else { m },
               "pattern": s.pattern})
    };
    json!({
        "id": id,
        "priority": 0,
        "disabled": r.disabled,
        "action": "immutable",
        "template": "immutable_template",
        "tag_selectors": [sel(&r.tags, ("matches", "excludes"))],
        "scope_selectors": {"repository": [sel(&r.repos, ("repoMatches", "repoExcludes"))]},
    })
}
