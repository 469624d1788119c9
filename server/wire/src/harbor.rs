//! The Harbor-shaped API's JSON request bodies: `/api/v2.0/projects`,
//! `…/members`, `/users`, `/robots` (the server's `admin.rs`) and
//! `/api/v2.0/system/gc/schedule` (`gc_api.rs`). Each is read with
//! `serde_json::from_slice`; a body that does not deserialize is `400`.
//! Numbers are typed as narrowly as the API allows (`role_id: u8`), and
//! what a handler computes from them is checked there.

use serde::Deserialize;
use serde_json::Value;

/// `POST /api/v2.0/projects`, `PUT /api/v2.0/projects/{name}`.
#[derive(Debug, Deserialize)]
pub struct ProjectReq {
    #[serde(alias = "name")]
    pub project_name: Option<String>,
    #[serde(default)]
    pub metadata: Option<ProjectMeta>,
    /// Harbor v1's form.
    #[serde(default)]
    pub public: Option<Value>,
    /// A proxy cache project of this registry (`POST` only).
    #[serde(default)]
    pub registry_id: Option<u64>,
    /// Bytes its repositories may hold; `-1`: unlimited.
    #[serde(default)]
    pub storage_limit: Option<i64>,
}

/// `credential` of a [`RegistryReq`].
#[derive(Debug, Default, Deserialize)]
pub struct RegistryCredentialReq {
    /// `basic` (or empty); Harbor's `oauth` is refused.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub access_secret: Option<String>,
}

/// `POST /api/v2.0/registries` (Harbor's `Registry`).
#[derive(Debug, Deserialize)]
pub struct RegistryReq {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    #[serde(default)]
    pub credential: Option<RegistryCredentialReq>,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca_certificate: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `PUT /api/v2.0/registries/{id}` (Harbor's `RegistryUpdate`) and
/// `POST /api/v2.0/registries/ping` (`RegistryPing`: with `id`, the
/// registry's fields overridden by the others; `type` for a new one):
/// every field optional.
#[derive(Debug, Default, Deserialize)]
pub struct RegistryUpdateReq {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub credential_type: Option<String>,
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub access_secret: Option<String>,
    #[serde(default)]
    pub insecure: Option<bool>,
    #[serde(default)]
    pub ca_certificate: Option<String>,
}

/// `metadata` of a [`ProjectReq`].
#[derive(Debug, Deserialize)]
pub struct ProjectMeta {
    #[serde(default)]
    pub public: Option<Value>,
}

/// `true`, `"true"`, `1`, `"1"` are true (Harbor sends strings).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true" || s == "1",
        Value::Number(n) => n.as_u64() == Some(1),
        _ => false,
    }
}

impl ProjectReq {
    /// The requested visibility: `metadata.public`, else v1's `public`.
    pub fn public(&self) -> Option<bool> {
        self.metadata
            .as_ref()
            .and_then(|m| m.public.as_ref())
            .or(self.public.as_ref())
            .map(truthy)
    }
}

/// `POST /api/v2.0/projects/{name}/members`: a user
/// (`{"role_id":2,"member_user":{"username":"bob"}}`) or an LDAP group
/// (`{"role_id":2,"member_group":{"group_type":1,"ldap_group_dn":"cn=devs,…"}}`);
/// exactly one of the two.
#[derive(Debug, Deserialize)]
pub struct MemberReq {
    pub role_id: u8,
    #[serde(default)]
    pub member_user: Option<MemberUser>,
    #[serde(default)]
    pub member_group: Option<MemberGroup>,
}

/// `member_group` of a [`MemberReq`] (Harbor's `UserGroup`): berth keeps
/// LDAP groups (`group_type` 1) by DN; `id` and `group_name` are accepted
/// and not used.
#[derive(Debug, Deserialize)]
pub struct MemberGroup {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub group_name: Option<String>,
    #[serde(default)]
    pub group_type: Option<i64>,
    #[serde(default)]
    pub ldap_group_dn: Option<String>,
}

/// `member_user` of a [`MemberReq`].
#[derive(Debug, Deserialize)]
pub struct MemberUser {
    pub username: String,
}

/// `POST /api/v2.0/users`. No `Debug`: it holds a password.
#[derive(Deserialize)]
pub struct UserReq {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub realname: String,
    #[serde(default)]
    pub sysadmin_flag: bool,
}

/// `POST /api/v2.0/robots`.
#[derive(Debug, Deserialize)]
pub struct RobotReq {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Days; -1 (or absent) never expires.
    #[serde(default)]
    pub duration: Option<i64>,
    #[serde(default)]
    pub level: Option<String>,
    pub permissions: Vec<RobotPermission>,
}

/// `PUT /api/v2.0/robots/{id}`: Harbor's whole `Robot`; berth changes
/// its description, permissions (actions on its own project), `disable`
/// and `duration`. The name and project are fixed.
#[derive(Debug, Deserialize)]
pub struct RobotUpdateReq {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub disable: Option<bool>,
    /// Days from now; -1 never expires.
    #[serde(default)]
    pub duration: Option<i64>,
    #[serde(default)]
    pub permissions: Option<Vec<RobotPermission>>,
}

/// `PATCH /api/v2.0/robots/{id}` (Harbor's `RobotSec`): the new secret,
/// or none for a generated one. No `Debug`: it holds a secret.
#[derive(Default, Deserialize)]
pub struct RobotSecReq {
    #[serde(default)]
    pub secret: Option<String>,
}

/// `PUT /api/v2.0/users/{id}` (Harbor's `UserProfile`).
#[derive(Debug, Deserialize)]
pub struct UserProfileReq {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub realname: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// `PUT /api/v2.0/users/{id}/password` (Harbor's `PasswordReq`). No
/// `Debug`: it holds passwords.
#[derive(Deserialize)]
pub struct PasswordReq {
    #[serde(default)]
    pub old_password: Option<String>,
    pub new_password: String,
}

/// `PUT /api/v2.0/users/{id}/sysadmin` (Harbor's `UserSysAdminFlag`).
#[derive(Debug, Deserialize)]
pub struct SysadminReq {
    pub sysadmin_flag: bool,
}

/// `PUT /api/v2.0/projects/{p}/members/{mid}` (Harbor's `RoleRequest`).
#[derive(Debug, Deserialize)]
pub struct RoleReq {
    pub role_id: u8,
}

/// `POST|PUT /api/v2.0/projects/{p}/immutabletagrules[/{id}]` (Harbor's
/// `ImmutableRule`).
#[derive(Debug, Deserialize)]
pub struct ImmutableRuleReq {
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub tag_selectors: Vec<SelectorReq>,
    #[serde(default)]
    pub scope_selectors: std::collections::BTreeMap<String, Vec<SelectorReq>>,
}

/// Harbor's `ImmutableSelector` (and retention's).
#[derive(Debug, Deserialize)]
pub struct SelectorReq {
    #[serde(default)]
    pub kind: Option<String>,
    pub decoration: String,
    pub pattern: String,
    /// Retention's tag selector: JSON in a string, `{"untagged":true}`.
    #[serde(default)]
    pub extras: Option<String>,
}

/// `POST /api/v2.0/retentions`, `PUT /api/v2.0/retentions/{id}`
/// (Harbor's `RetentionPolicy`).
#[derive(Debug, Deserialize)]
pub struct RetentionPolicyReq {
    #[serde(default)]
    pub algorithm: Option<String>,
    #[serde(default)]
    pub rules: Vec<RetentionRuleReq>,
    #[serde(default)]
    pub trigger: Option<RetentionTriggerReq>,
    #[serde(default)]
    pub scope: Option<RetentionScopeReq>,
}

/// One `rules` entry of a [`RetentionPolicyReq`].
#[derive(Debug, Deserialize)]
pub struct RetentionRuleReq {
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub action: Option<String>,
    pub template: String,
    /// `{"latestPushedK": 10}`: the template's one parameter, by its name.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, Value>,
    #[serde(default)]
    pub tag_selectors: Vec<SelectorReq>,
    #[serde(default)]
    pub scope_selectors: std::collections::BTreeMap<String, Vec<SelectorReq>>,
}

/// `trigger` of a [`RetentionPolicyReq`]: `{"kind":"Schedule",
/// "settings":{"cron":"0 0 0 * * *"}}`; an empty cron is manual only.
#[derive(Debug, Deserialize)]
pub struct RetentionTriggerReq {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub settings: Option<RetentionTriggerSettings>,
}

/// `settings` of a [`RetentionTriggerReq`].
#[derive(Debug, Deserialize)]
pub struct RetentionTriggerSettings {
    #[serde(default)]
    pub cron: Option<String>,
}

/// `scope` of a [`RetentionPolicyReq`]: `{"level":"project","ref":<project id>}`.
#[derive(Debug, Deserialize)]
pub struct RetentionScopeReq {
    #[serde(default)]
    pub level: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<Value>,
}

/// `POST /api/v2.0/retentions/{id}/executions`.
#[derive(Debug, Default, Deserialize)]
pub struct RetentionRunReq {
    #[serde(default)]
    pub dry_run: bool,
}

/// `PATCH /api/v2.0/retentions/{id}/executions/{eid}`.
#[derive(Debug, Deserialize)]
pub struct RetentionStopReq {
    pub action: String,
}

/// One `permissions` entry of a [`RobotReq`].
#[derive(Debug, Deserialize)]
pub struct RobotPermission {
    #[serde(default)]
    pub kind: Option<String>,
    pub namespace: String,
    pub access: Vec<RobotAccess>,
}

/// One `access` entry of a [`RobotPermission`].
#[derive(Debug, Deserialize)]
pub struct RobotAccess {
    #[serde(default)]
    pub resource: Option<String>,
    pub action: String,
}

/// `POST /api/v2.0/system/gc/schedule` (an empty body is the default).
#[derive(Debug, Default, Deserialize)]
pub struct ScheduleRequest {
    pub schedule: Option<Schedule>,
    #[serde(default)]
    pub parameters: Parameters,
}

/// `schedule` of a [`ScheduleRequest`].
#[derive(Debug, Deserialize)]
pub struct Schedule {
    #[serde(rename = "type")]
    pub kind: String,
}

/// `parameters` of a [`ScheduleRequest`].
#[derive(Debug, Default, Deserialize)]
pub struct Parameters {
    #[serde(default)]
    pub delete_untagged: bool,
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /api/v2.0/replication/policies`, `PUT …/{id}` (Harbor's
/// `ReplicationPolicy`; the fields berth reads).
#[derive(Debug, Default, Deserialize)]
pub struct PolicyReq {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub src_registry: Option<IdRef>,
    /// Must be empty or id 0 (the local registry): pull-based only.
    #[serde(default)]
    pub dest_registry: Option<IdRef>,
    #[serde(default)]
    pub dest_namespace: Option<String>,
    #[serde(default)]
    pub dest_namespace_replace_count: Option<i8>,
    #[serde(default)]
    pub filters: Option<Vec<FilterReq>>,
    #[serde(default)]
    pub trigger: Option<TriggerReq>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default, rename = "override")]
    pub overwrite: Option<bool>,
    /// Harbor's push-side deletion replication: refused when true.
    #[serde(default)]
    pub deletion: Option<bool>,
}

/// `{"id": N}`, Harbor's reference to a registry.
#[derive(Debug, Default, Deserialize)]
pub struct IdRef {
    #[serde(default)]
    pub id: u64,
}

/// One of a policy's `filters`: `{"type":"name"|"tag"|"resource","value":…}`.
#[derive(Debug, Deserialize)]
pub struct FilterReq {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub value: Value,
    /// Harbor's `matches` / `excludes`.
    #[serde(default)]
    pub decoration: Option<String>,
}

/// A policy's `trigger`: `manual`, or `scheduled` with a cron.
#[derive(Debug, Deserialize)]
pub struct TriggerReq {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub trigger_settings: Option<TriggerSettings>,
}

/// `trigger_settings` of a [`TriggerReq`].
#[derive(Debug, Default, Deserialize)]
pub struct TriggerSettings {
    #[serde(default)]
    pub cron: Option<String>,
}

/// `POST /api/v2.0/replication/executions`.
#[derive(Debug, Deserialize)]
pub struct ExecutionReq {
    pub policy_id: u64,
}
