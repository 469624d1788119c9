//! Accounts, projects, members and robots, and what they may do.
//!
//! Harbor's model: a repository `PROJECT/…` belongs to the project named by
//! its first component. A project is public (anyone may pull) or private.
//! Users hold a role per project; robots are scoped to one project with an
//! explicit action list and an optional expiry; a system administrator may do
//! everything. Permissions are computed from the index on demand
//! ([`Engine::permissions`]), so a removed member loses access at once for
//! Basic credentials and when their tokens expire.
//!
//! Secrets: user passwords are stored as argon2id PHC strings; robot secrets
//! are 256 random bits shown once, of which only the sha256 is stored.
//!
//! Every mutation is one synced batch under the engine's write lock, like
//! every other index write.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest as _, Sha256};

use crate::engine::{Engine, Inner};
use crate::error::StorageError;
use crate::host::{self, Guarded};
use crate::index::Batch;
use crate::keys::{
    Cf, IdKind, IndexKey, MemberKey, ProjectKey, RegistryKey, RobotKey, Scan, SeqKey, TokenSeedKey,
    UserKey, WholeFamily,
};
use crate::names::RepoName;
use crate::records::{
    self, MemberRecord, ProjectRecord, Record, RobotRecord, Seq, TokenSeed, UserRecord,
};
use crate::token::TokenKey;

/// The administrator account created on first start.
pub const ADMIN_USER: &str = "admin";
/// The public project created with the administrator, as Harbor does.
pub const DEFAULT_PROJECT: &str = "library";
/// Robot account names: `robot$<project>+<name>`.
pub const ROBOT_PREFIX: &str = "robot$";
/// The token signing key's file in the data directory (32 raw bytes,
/// mode `0600`; see [`Engine::token_signing_key`]).
pub const TOKEN_KEY_FILE: &str = "token.key";
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

/// One action on a project's repositories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// Manage the project (members, robots): Harbor's project admin, the
    /// token scope action `*`.
    Admin,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Delete, Action::Admin];

    /// The name used in token scopes and robot records.
    pub fn name(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Admin => "*",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Action`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const ALL: Actions = Actions(0b1111);

    pub fn of(actions: &[Action]) -> Actions {
        Actions(actions.iter().fold(0, |b, a| b | a.bit()))
    }

    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn contains_all(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions, in [`Action::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// Names, for scopes and records.
    pub fn names(self) -> Vec<String> {
        self.iter().map(|a| a.name().to_owned()).collect()
    }
}

/// Harbor's project roles, with Harbor's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ProjectAdmin = 1,
    Developer = 2,
    Guest = 3,
    Maintainer = 4,
}

impl Role {
    pub fn from_id(id: u8) -> Option<Role> {
        match id {
            1 => Some(Role::ProjectAdmin),
            2 => Some(Role::Developer),
            3 => Some(Role::Guest),
            4 => Some(Role::Maintainer),
            _ => None,
        }
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    /// Harbor's role name.
    pub fn name(self) -> &'static str {
        match self {
            Role::ProjectAdmin => "projectAdmin",
            Role::Developer => "developer",
            Role::Guest => "guest",
            Role::Maintainer => "maintainer",
        }
    }

    /// A role by Harbor name (case-insensitive), `admin`, or id.
    pub fn parse(s: &str) -> Option<Role> {
        if let Ok(id) = s.parse::<u8>() {
            return Role::from_id(id);
        }
        let l = s.to_ascii_lowercase();
        [
            Role::ProjectAdmin,
            Role::Developer,
            Role::Guest,
            Role::Maintainer,
        ]
        .into_iter()
        .find(|r| r.name().eq_ignore_ascii_case(&l))
        .or((l == "admin" || l == "project-admin").then_some(Role::ProjectAdmin))
    }

    /// Order by what the role may do: guest < developer < maintainer <
    /// project admin (each holds the actions of the one before).
    pub fn rank(self) -> u8 {
        match self {
            Role::Guest => 1,
            Role::Developer => 2,
            Role::Maintainer => 3,
            Role::ProjectAdmin => 4,
        }
    }

    /// guest: pull; developer: + push; maintainer: + delete; project admin: + members.
    pub fn actions(self) -> Actions {
        use Action::*;
        match self {
            Role::Guest => Actions::of(&[Pull]),
            Role::Developer => Actions::of(&[Pull, Push]),
            Role::Maintainer => Actions::of(&[Pull, Push, Delete]),
            Role::ProjectAdmin => Actions::ALL,
        }
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Account {
    Anonymous,
    User {
        name: String,
        admin: bool,
    },
    Robot {
        name: String,
        project: String,
        actions: Actions,
        expires_ms: Option<u64>,
    },
}

impl Account {
    /// The account name; empty for anonymous.
    pub fn name(&self) -> &str {
        match self {
            Account::Anonymous => "",
            Account::User { name, .. } | Account::Robot { name, .. } => name,
        }
    }

    /// A system administrator.
    pub fn is_admin(&self) -> bool {
        matches!(self, Account::User { admin: true, .. })
    }
}

/// What [`Engine::ensure_admin`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminSetup {
    pub account: AdminAccount,
    /// The public project `library` was missing and has been created.
    pub library_created: bool,
}

/// What happened to the `admin` account at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminAccount {
    /// There was none; it was created with the configured password.
    Created,
    /// It existed and was changed.
    Updated {
        /// The configured password differed from the stored one and now
        /// replaces it.
        password_applied: bool,
        /// It had lost the system administrator flag, which was restored.
        admin_flag_restored: bool,
    },
    /// It existed as configured.
    Unchanged,
}

/// Whether [`Engine::set_member_checked`] requires the user to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserCheck {
    /// `NotFound` for an unknown user (callers who may list users anyway).
    MustExist,
    /// Record the membership by name whether or not the user exists; it
    /// grants nothing until a user of that name does. For callers who must
    /// not learn which user names exist (see docs/security.md).
    ByName,
}

/// A robot just created: its full name and its secret, shown once.
#[derive(Clone, Debug)]
pub struct NewRobot {
    pub id: u64,
    pub name: String,
    pub secret: String,
    pub expires_ms: Option<u64>,
    pub created_ms: u64,
}

/// Account, project, member and robot operations.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what} already exists")]
    Exists { what: String },
    #[error("{what} does not exist")]
    NotFound { what: String },
    /// A project already holds as many of something as the engine allows
    /// (`EngineConfig::max_members_per_project`, `max_robots_per_project`).
    #[error("{what}: at most {limit} per project")]
    Limit { what: String, limit: u64 },
    /// Something still depends on it (Harbor's `412`).
    #[error("{what} is used by {by}")]
    InUse { what: String, by: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> AccountError {
    AccountError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

/// User names: 1–64 of `[A-Za-z0-9._@-]` (no `:`, which ends the name in
/// Basic credentials, and no `$`, which marks robots).
pub fn valid_user_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("user name {name:?}"),
            "use 1-64 characters of A-Z a-z 0-9 . _ @ -",
        ))
    }
}

/// Project names: one repository path component (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`).
pub fn valid_project_name(name: &str) -> Result<(), AccountError> {
    if RESERVED_PROJECT_NAMES.contains(&name) {
        return Err(invalid(
            format!("project name {name:?}"),
            "is reserved: ChartMuseum's paths (/{project}/index.yaml, /api/{project}/charts) \
             would be ambiguous with /v2, /api, /chartrepo and the console's /console",
        ));
    }
    if !name.contains('/') && RepoName::parse(name).is_ok() {
        Ok(())
    } else {
        Err(invalid(
            format!("project name {name:?}"),
            "must be one repository path component: lowercase letters, digits, . _ -",
        ))
    }
}

/// Project names that ChartMuseum's short paths would make ambiguous:
/// `/v2/index.yaml` is the registry API's, `/api/index.yaml` and
/// `/api/chartrepo/charts` the chart API's, `/chartrepo/index.yaml` the
/// global index, and `/console/…` the web console's pages. Refused at
/// creation.
pub const RESERVED_PROJECT_NAMES: [&str; 4] = ["v2", "api", "chartrepo", "console"];

pub(crate) fn valid_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() >= MIN_PASSWORD_LEN {
        Ok(())
    } else {
        Err(invalid(
            "password",
            format!("must have at least {MIN_PASSWORD_LEN} characters"),
        ))
    }
}

/// argon2id (the crate's defaults: m = 19 MiB, t = 2, p = 1) with a random salt.
pub(crate) fn hash_password(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source is available");
    let salt = SaltString::encode_b64(&salt).map_err(|e| invalid("salt", e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| invalid("password", e.to_string()))
}

fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user does not exist, so an unknown
/// name costs the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("berth-dummy-password").unwrap_or_default())
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Equal-time comparison of two equal-length ASCII strings.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A robot secret: 256 random bits, hex.
pub(crate) fn new_robot_secret() -> String {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).expect("the OS random source is available");
    hex::encode(raw)
}

/// A robot that may sign in: not disabled, not expired.
fn robot_active(rec: &RobotRecord) -> bool {
    !rec.disabled && rec.expires_ms.is_none_or(|e| e > records::now_ms())
}

/// The stamp of a stored credential (see [`Engine::credential_stamp`]):
/// 64 bits of its sha256, enough to tell one credential from the next.
pub(crate) fn stamp_of(stored: &str) -> String {
    sha256_hex(stored)[..16].to_owned()
}

fn robot_full_name(project: &str, name: &str) -> String {
    format!("{ROBOT_PREFIX}{project}+{name}")
}

impl Inner {
    /// How many keys `scan` holds, counting no further than `limit`.
    fn count_up_to<K: IndexKey>(&self, scan: Scan<K>, limit: u64) -> Result<u64, StorageError> {
        let mut n = 0u64;
        for r in self.index.scan(scan) {
            if n >= limit {
                break;
            }
            r?;
            n += 1;
        }
        Ok(n)
    }

    /// The next id of `kind`, written into `batch` (call under the lock).
    pub(crate) fn next_id(&self, batch: &mut Batch, kind: IdKind) -> Result<u64, StorageError> {
        let key = SeqKey(kind);
        // The batch's own last id first: several ids in one batch differ.
        let encoded = key.encode();
        let pending = batch
            .changes(Cf::Meta)
            .filter(|(k, _)| *k == encoded.as_slice())
            .last()
            .and_then(|(_, v)| v)
            .map(Seq::decode)
            .transpose()
            .map_err(|detail| StorageError::Corrupt {
                what: key.to_string(),
                detail,
            })?;
        let Seq(last) = match pending {
            Some(s) => s,
            None => self.index.get(&key)?.unwrap_or(Seq(0)),
        };
        let id = last.checked_add(1).ok_or_else(|| StorageError::Corrupt {
            what: key.to_string(),
            detail: "id sequence exhausted".into(),
        })?;
        batch.put(&key, &Seq(id));
        Ok(id)
    }

    fn robot_account(&self, name: &str, rec: RobotRecord) -> Account {
        let actions = Actions::of(
            &rec.actions
                .iter()
                .filter_map(|a| Action::parse(a))
                .collect::<Vec<_>>(),
        );
        Account::Robot {
            name: name.to_owned(),
            project: rec.project,
            actions,
            expires_ms: rec.expires_ms,
        }
    }
}

impl Engine {
    /// Creates user `name`. Fails if the name is taken or invalid, or the
    /// password is shorter than [`MIN_PASSWORD_LEN`].
    pub fn create_user(
        &self,
        name: &str,
        password: &str,
        admin: bool,
        email: &str,
        realname: &str,
    ) -> Result<u64, AccountError> {
        valid_user_name(name)?;
        valid_password(password)?;
        // Hash outside the lock: it is the slow part (tens of milliseconds).
        let password_hash = hash_password(password)?;
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = UserKey(name.to_owned());
        if inner.index.contains(&key)? {
            return Err(AccountError::Exists {
                what: format!("user {name}"),
            });
        }
        let mut batch = Batch::default();
        let id = inner.next_id(&mut batch, IdKind::User)?;
        let rec = UserRecord {
            id,
            password_hash,
            admin,
            email: email.to_owned(),
            realname: realname.to_owned(),
            created_ms: records::now_ms(),
            ldap_dn: String::new(),
            ldap_groups: Vec::new(),
            ldap_admin: false,
        };
        batch.put(&key, &rec);
        inner.commit(g, batch)?;
        Ok(id)
    }

    /// Makes the administrator account what the operator configured, at
    /// every start with auth on:
    ///
    /// - no `admin` yet: creates it with `password` (required: auth cannot
    ///   be enabled with nobody able to administer it);
    /// - `admin` exists and `password` is given but does not verify against
    ///   the stored hash: the given password replaces it (the operator's
    ///   setting wins over whatever else set the stored one — never ignored);
    /// - `admin` exists without the system administrator flag: the flag is
    ///   restored;
    /// - the public project `library` is created if it is missing.
    ///
    /// The caller logs what changed (see [`AdminSetup`]).
    pub fn ensure_admin(&self, password: Option<&str>) -> Result<AdminSetup, AccountError> {
        let password = password.filter(|p| !p.is_empty());
        let account = match self.user(ADMIN_USER)? {
            None => {
                let Some(password) = password else {
                    return Err(invalid(
                        "admin account",
                        "none exists yet; set BERTH_ADMIN_PASSWORD to create it on first start",
                    ));
                };
                match self.create_user(ADMIN_USER, password, true, "", "system admin") {
                    Ok(_) => AdminAccount::Created,
                    // Created concurrently: apply the password as for an existing one.
                    Err(AccountError::Exists { .. }) => self.update_admin(Some(password))?,
                    Err(e) => return Err(e),
                }
            }
            Some(_) => self.update_admin(password)?,
        };
        let library_created = match self.create_project(DEFAULT_PROJECT, true, None) {
            Ok(_) => true,
            Err(AccountError::Exists { .. }) => false,
            Err(e) => return Err(e),
        };
        Ok(AdminSetup {
            account,
            library_created,
        })
    }

    /// Applies `password` (if it does not already verify) and the system
    /// administrator flag to the existing `admin`.
    fn update_admin(&self, password: Option<&str>) -> Result<AdminAccount, AccountError> {
        let Some(rec) = self.user(ADMIN_USER)? else {
            return Err(AccountError::NotFound {
                what: format!("user {ADMIN_USER}"),
            });
        };
        let new_hash = match password {
            Some(p) if !verify_password(p, &rec.password_hash) => {
                valid_password(p)?;
                Some(hash_password(p)?)
            }
            _ => None,
        };
        let password_applied = new_hash.is_some();
        let admin_flag_restored = !rec.admin;
        if !password_applied && !admin_flag_restored {
            return Ok(AdminAccount::Unchanged);
        }
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = UserKey(ADMIN_USER.to_owned());
        let Some(mut rec) = inner.index.get(&key)? else {
            return Err(AccountError::NotFound {
                what: format!("user {ADMIN_USER}"),
            });
        };
        if let Some(h) = new_hash {
            rec.password_hash = h;
        }
        rec.admin = true;
        let mut batch = Batch::default();
        batch.put(&key, &rec);
        inner.commit(g, batch)?;
        Ok(AdminAccount::Updated {
            password_applied,
            admin_flag_restored,
        })
    }

    /// User `name`'s record.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StorageError> {
        self.inner.index.get(&UserKey(name.to_owned()))
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<(String, UserRecord)>, StorageError> {
        self.list(UserKey::all(), |UserKey(name)| name)
    }

    /// The records of `scan`, each with the name `name` takes from its key.
    pub(crate) fn list<K: IndexKey>(
        &self,
        scan: Scan<K>,
        name: impl Fn(K) -> String,
    ) -> Result<Vec<(String, K::Value)>, StorageError> {
        self.inner
            .index
            .scan(scan)
            .map(|r| r.map(|(k, rec)| (name(k), rec)))
            .collect()
    }

    /// Checks a name and secret: a user's password, or a robot's secret
    /// (names starting `robot$`). `None` for anything that does not match,
    /// including an expired robot. Slow on purpose for users (argon2id):
    /// call it off the async path.
    pub fn authenticate(&self, name: &str, secret: &str) -> Result<Option<Account>, StorageError> {
        Ok(self.authenticate_stamped(name, secret)?.map(|(a, _)| a))
    }

    /// [`Engine::authenticate`], with the stamp of the credential that
    /// matched ([`Engine::credential_stamp`], read from the same record).
    pub fn authenticate_stamped(
        &self,
        name: &str,
        secret: &str,
    ) -> Result<Option<(Account, String)>, StorageError> {
        if name.starts_with(ROBOT_PREFIX) {
            let Some(rec) = self.inner.index.get(&RobotKey(name.to_owned()))? else {
                return Ok(None);
            };
            if !constant_time_eq(&sha256_hex(secret), &rec.secret_sha256) || !robot_active(&rec) {
                return Ok(None);
            }
            let stamp = stamp_of(&rec.secret_sha256);
            return Ok(Some((self.inner.robot_account(name, rec), stamp)));
        }
        match self.user(name)? {
            Some(rec) if verify_password(secret, &rec.password_hash) => Ok(Some((
                Account::User {
                    name: name.to_owned(),
                    admin: rec.is_admin(),
                },
                stamp_of(&rec.password_hash),
            ))),
            Some(_) => Ok(None),
            None => {
                let _ = verify_password(secret, dummy_hash());
                Ok(None)
            }
        }
    }

    /// What a verified credential and every token issued on it are bound
    /// to: a short digest of the account's stored credential (the
    /// password's argon2id string, fresh salt at every change; the robot
    /// secret's hash), so a password change or a secret refresh changes
    /// it. `None` for an account that is gone, disabled or expired, and for
    /// anonymous. Checked by the server on every cached Basic credential
    /// and every token: revocation takes effect on the next request.
    pub fn credential_stamp(&self, name: &str) -> Result<Option<String>, StorageError> {
        if name.starts_with(ROBOT_PREFIX) {
            return Ok(self
                .inner
                .index
                .get(&RobotKey(name.to_owned()))?
                .filter(robot_active)
                .map(|r| stamp_of(&r.secret_sha256)));
        }
        if name.is_empty() {
            return Ok(None);
        }
        Ok(self.user(name)?.map(|r| stamp_of(&r.password_hash)))
    }

    /// The account called `name` as it stands now (for token subjects):
    /// `None` if it was removed or, for a robot, has expired. The empty name
    /// is the anonymous account.
    pub fn account(&self, name: &str) -> Result<Option<Account>, StorageError> {
        if name.is_empty() {
            return Ok(Some(Account::Anonymous));
        }
        if name.starts_with(ROBOT_PREFIX) {
            return Ok(self
                .inner
                .index
                .get(&RobotKey(name.to_owned()))?
                .filter(robot_active)
                .map(|r| self.inner.robot_account(name, r)));
        }
        Ok(self.user(name)?.map(|r| Account::User {
            name: name.to_owned(),
            admin: r.is_admin(),
        }))
    }

    /// Creates project `name`; `owner` (a user) becomes its project admin.
    pub fn create_project(
        &self,
        name: &str,
        public: bool,
        owner: Option<&str>,
    ) -> Result<u64, AccountError> {
        self.create_project_with(name, public, owner, None, None)
    }

    /// [`Engine::create_project`], as a proxy cache of registry
    /// `registry_id` when given (which must exist), with a storage limit
    /// (`quotas.rs`) when given.
    pub fn create_project_with(
        &self,
        name: &str,
        public: bool,
        owner: Option<&str>,
        registry_id: Option<u64>,
        storage_limit: Option<u64>,
    ) -> Result<u64, AccountError> {
        valid_project_name(name)?;
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = ProjectKey(name.to_owned());
        if inner.index.contains(&key)? {
            return Err(AccountError::Exists {
                what: format!("project {name}"),
            });
        }
        if let Some(id) = registry_id {
            if !inner.index.contains(&RegistryKey(id))? {
                return Err(invalid(
                    format!("registry_id {id}"),
                    "no registry has this id",
                ));
            }
        }
        let now = records::now_ms();
        let mut batch = Batch::default();
        let id = inner.next_id(&mut batch, IdKind::Project)?;
        let rec = ProjectRecord {
            id,
            public,
            owner: owner.unwrap_or_default().to_owned(),
            created_ms: now,
            registry_id,
            storage_limit,
        };
        batch.put(&key, &rec);
        if let Some(owner) = owner {
            if inner.index.contains(&UserKey(owner.to_owned()))? {
                let member = MemberRecord {
                    id: inner.next_id(&mut batch, IdKind::Member)?,
                    role: Role::ProjectAdmin.id(),
                    created_ms: now,
                };
                let key = MemberKey {
                    project: name.to_owned(),
                    user: owner.to_owned(),
                };
                batch.put(&key, &member);
            }
        }
        inner.commit(g, batch)?;
        Ok(id)
    }

    /// Project `name`'s record.
    pub fn project(&self, name: &str) -> Result<Option<ProjectRecord>, StorageError> {
        self.inner.index.get(&ProjectKey(name.to_owned()))
    }

    /// Every project, by name.
    pub fn projects(&self) -> Result<Vec<(String, ProjectRecord)>, StorageError> {
        self.list(ProjectKey::all(), |ProjectKey(name)| name)
    }

    /// Makes a project public or private.
    pub fn set_project_public(&self, name: &str, public: bool) -> Result<(), AccountError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = ProjectKey(name.to_owned());
        let Some(mut rec) = inner.index.get(&key)? else {
            return Err(AccountError::NotFound {
                what: format!("project {name}"),
            });
        };
        rec.public = public;
        let mut batch = Batch::default();
        batch.put(&key, &rec);
        inner.commit(g, batch)?;
        Ok(())
    }

    /// Gives `user` `role` in `project` (replacing an earlier role); the
    /// user must exist. Returns the membership id.
    pub fn set_member(&self, project: &str, user: &str, role: Role) -> Result<u64, AccountError> {
        self.set_member_checked(project, user, role, UserCheck::MustExist)
    }

    /// [`Engine::set_member`], with the user's existence checked or not
    /// (see [`UserCheck`]). The name must be a valid user name either way.
    pub fn set_member_checked(
        &self,
        project: &str,
        user: &str,
        role: Role,
        check: UserCheck,
    ) -> Result<u64, AccountError> {
        valid_user_name(user)?;
        let inner = &self.inner;
        let g = inner.lock()?;
        if !inner.index.contains(&ProjectKey(project.to_owned()))? {
            return Err(AccountError::NotFound {
                what: format!("project {project}"),
            });
        }
        if check == UserCheck::MustExist && !inner.index.contains(&UserKey(user.to_owned()))? {
            return Err(AccountError::NotFound {
                what: format!("user {user}"),
            });
        }
        let key = MemberKey {
            project: project.to_owned(),
            user: user.to_owned(),
        };
        let mut batch = Batch::default();
        let id = match inner.index.get(&key)? {
            Some(m) => m.id,
            None => {
                // Counted under the accounts lock, which every membership
                // change holds until its batch commits: concurrent adds
                // cannot both see room for one more.
                let limit = inner.config.max_members_per_project;
                if inner.count_up_to(MemberKey::of_project(project), limit)? >= limit {
                    return Err(AccountError::Limit {
                        what: format!("members of project {project}"),
                        limit,
                    });
                }
                inner.next_id(&mut batch, IdKind::Member)?
            }
        };
        let rec = MemberRecord {
            id,
            role: role.id(),
            created_ms: records::now_ms(),
        };
        batch.put(&key, &rec);
        inner.commit(g, batch)?;
        Ok(id)
    }

    /// Removes `user` from `project`. Returns whether they were a member.
    pub fn remove_member(&self, project: &str, user: &str) -> Result<bool, AccountError> {
        Ok(self.inner.remove_present(&MemberKey {
            project: project.to_owned(),
            user: user.to_owned(),
        })?)
    }

    /// The members of `project`, by user name.
    pub fn members(&self, project: &str) -> Result<Vec<(String, MemberRecord)>, StorageError> {
        self.list(MemberKey::of_project(project), |k| k.user)
    }

    /// `user`'s role in `project`, if any.
    pub fn member_role(&self, project: &str, user: &str) -> Result<Option<Role>, StorageError> {
        Ok(self
            .inner
            .index
            .get(&MemberKey {
                project: project.to_owned(),
                user: user.to_owned(),
            })?
            .and_then(|m| Role::from_id(m.role)))
    }

    /// Creates robot `robot$<project>+<name>` with `actions` on `project`
    /// (never [`Action::Admin`]). The returned secret is not stored.
    pub fn create_robot(
        &self,
        project: &str,
        name: &str,
        actions: Actions,
        expires_ms: Option<u64>,
        description: &str,
    ) -> Result<NewRobot, AccountError> {
        let ok_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok_name {
            return Err(invalid(
                format!("robot name {name:?}"),
                "use 1-64 characters of a-z 0-9 . _ -",
            ));
        }
        let actions = actions.intersect(Actions::of(&[Action::Pull, Action::Push, Action::Delete]));
        if actions.is_empty() {
            return Err(invalid(
                format!("robot {name}"),
                "needs at least one of pull, push, delete",
            ));
        }
        let secret = new_robot_secret();
        let full = robot_full_name(project, name);
        let inner = &self.inner;
        let g = inner.lock()?;
        if !inner.index.contains(&ProjectKey(project.to_owned()))? {
            return Err(AccountError::NotFound {
                what: format!("project {project}"),
            });
        }
        let key = RobotKey(full.clone());
        if inner.index.contains(&key)? {
            return Err(AccountError::Exists {
                what: format!("robot {full}"),
            });
        }
        // Under the lock, like the insert below (see set_member_checked).
        let limit = inner.config.max_robots_per_project;
        if inner.count_up_to(RobotKey::of_project(project), limit)? >= limit {
            return Err(AccountError::Limit {
                what: format!("robots of project {project}"),
                limit,
            });
        }
        let created_ms = records::now_ms();
        let mut batch = Batch::default();
        let id = inner.next_id(&mut batch, IdKind::Robot)?;
        let rec = RobotRecord {
            id,
            project: project.to_owned(),
            actions: actions.names(),
            secret_sha256: sha256_hex(&secret),
            expires_ms,
            description: description.to_owned(),
            created_ms,
            disabled: false,
        };
        batch.put(&key, &rec);
        inner.commit(g, batch)?;
        Ok(NewRobot {
            id,
            name: full,
            secret,
            expires_ms,
            created_ms,
        })
    }

    /// Every robot, by full name.
    pub fn robots(&self) -> Result<Vec<(String, RobotRecord)>, StorageError> {
        self.list(RobotKey::all(), |RobotKey(name)| name)
    }

    /// What `account` may do in `project` now. Nothing in a project that
    /// does not exist (not even for administrators: pushing needs a project).
    pub fn permissions(&self, account: &Account, project: &str) -> Result<Actions, StorageError> {
        let Some(p) = self.project(project)? else {
            return Ok(Actions::NONE);
        };
        let public = if p.public {
            Actions::of(&[Action::Pull])
        } else {
            Actions::NONE
        };
        Ok(match account {
            Account::Anonymous => public,
            Account::User { admin: true, .. } => Actions::ALL,
            // The higher of the user's own role and their LDAP groups'.
            Account::User { name, .. } => public.union(
                self.effective_role(project, name)?
                    .map_or(Actions::NONE, Role::actions),
            ),
            Account::Robot {
                project: own,
                actions,
                expires_ms,
                ..
            } => {
                if expires_ms.is_some_and(|e| e <= records::now_ms()) {
                    Actions::NONE
                } else if own == project {
                    public.union(*actions)
                } else {
                    public
                }
            }
        })
    }

    /// The token signing key: `<data>/token.key` (32 raw bytes, mode
    /// `0600`), generated and written durably on first use.
    ///
    /// Migration: a data directory written before the key had its own file
    /// kept it in the index (`meta/token_key`). That seed is moved to the
    /// file, then deleted from the index, and the index is flushed and the
    /// `meta` family compacted so the seed does not linger in the WAL or in
    /// SST files (see [`Inner::purge_index_token_key`]). A crash between
    /// the two steps leaves both; the next call finds the file and purges
    /// the index copy again.
    ///
    /// Cluster mode: every node signs and checks with one key, so it lives
    /// in the index of record (`meta/token_key`), created once under the
    /// cluster's write lock; the database's access control guards it.
    pub fn token_signing_key(&self) -> Result<TokenKey, StorageError> {
        let inner = &self.inner;
        if inner.index.is_shared() {
            return inner.shared_token_key();
        }
        let path = inner.config.data_dir.join(TOKEN_KEY_FILE);
        let parse = |v: &[u8], what: &dyn Fn() -> String| -> Result<TokenKey, StorageError> {
            let seed: [u8; 32] = v.try_into().map_err(|_| StorageError::Corrupt {
                what: what(),
                detail: format!("{} bytes, not 32", v.len()),
            })?;
            Ok(TokenKey::from_seed(&seed))
        };
        // Serializes creation and migration within this process; the index
        // lock keeps other processes out of the data directory.
        let g = inner.lock()?;
        match std::fs::read(&path) {
            Ok(v) => {
                host::check_private(&path, Guarded::TokenKey, inner.config.allow_open_data_dir)?;
                let key = parse(&v, &|| path.display().to_string())?;
                if inner.index.contains(&TokenSeedKey)? {
                    inner.purge_index_token_key(g)?;
                }
                return Ok(key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("read token key", &path)(e)),
        }
        let (key, migrated) = match inner.index.get(&TokenSeedKey)? {
            Some(TokenSeed(seed)) => (TokenKey::from_seed(&seed), true),
            None => (TokenKey::generate(), false),
        };
        // IMPORTANT: the file is durable before the index copy is deleted.
        if let Err(e) = crate::durable::write_private_file_durable(&path, &key.seed()) {
            let sync_failed = crate::durable::is_sync_failure(&e);
            let e = StorageError::io("write token key", &path)(e);
            if sync_failed {
                inner.poison(&e);
            }
            return Err(e);
        }
        if migrated {
            inner.purge_index_token_key(g)?;
            tracing::info!(path = %path.display(),
                "moved the token signing key out of the index into its own file");
        }
        Ok(key)
    }
}

impl Inner {
    /// The token signing key of cluster mode, from the index of record;
    /// generated and committed by the first node that asks.
    fn shared_token_key(&self) -> Result<TokenKey, StorageError> {
        if let Some(TokenSeed(seed)) = self.index.get(&TokenSeedKey)? {
            return Ok(TokenKey::from_seed(&seed));
        }
        let g = self.lock()?;
        // Another node may have committed one while this one waited.
        if let Some(TokenSeed(seed)) = self.index.get(&TokenSeedKey)? {
            return Ok(TokenKey::from_seed(&seed));
        }
        let key = TokenKey::generate();
        let mut batch = Batch::default();
        batch.put(&TokenSeedKey, &TokenSeed(key.seed()));
        self.commit(g, batch)?;
        Ok(key)
    }

    /// Deletes `meta/token_key` from the index (one synced batch under the
    /// write lock `g`), then makes the deleted seed unreadable from the
    /// index's files: every column family is flushed (so no WAL file still
    /// holds the put and RocksDB deletes the old ones) and `meta` is
    /// compacted down to its bottommost level (so no SST holds it; the old
    /// SSTs are deleted). What this cannot reach: disk blocks the file
    /// system freed but did not overwrite, and backups or snapshots taken
    /// before — rotate the key if those may have leaked.
    fn purge_index_token_key(&self, g: crate::engine::WriteGuard<'_>) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        batch.delete(&TokenSeedKey);
        self.commit(g, batch)?;
        self.index.purge_deleted(TokenSeedKey::CF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        (dir, e)
    }

    #[test]
    fn roles_and_actions() {
        use Action::*;
        assert_eq!(Role::Guest.actions(), Actions::of(&[Pull]));
        assert!(!Role::Developer.actions().contains(Delete));
        assert!(Role::Maintainer.actions().contains(Delete));
        assert!(!Role::Maintainer.actions().contains(Admin));
        assert!(Role::ProjectAdmin.actions().contains(Admin));
        for (id, r) in [
            (1, Role::ProjectAdmin),
            (2, Role::Developer),
            (3, Role::Guest),
            (4, Role::Maintainer),
        ] {
            assert_eq!(Role::from_id(id), Some(r));
            assert_eq!(Role::parse(r.name()), Some(r));
            assert_eq!(Role::parse(&id.to_string()), Some(r));
        }
        assert_eq!(Role::parse("owner"), None);
        assert_eq!(Actions::of(&[Pull, Push]).names(), ["pull", "push"]);
        assert_eq!(Action::parse("*"), Some(Admin));
    }

    #[test]
    fn members_and_robots_per_project_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EngineConfig::new(dir.path());
        config.max_members_per_project = 5;
        config.max_robots_per_project = 2;
        let e = std::sync::Arc::new(Engine::open(config).unwrap());
        e.create_project("p", false, None).unwrap();
        e.create_project("p2", false, None).unwrap();
        // Concurrent adds of new names: exactly the limit get in.
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let e = e.clone();
                std::thread::spawn(move || {
                    e.set_member_checked("p", &format!("u{i}"), Role::Guest, UserCheck::ByName)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 5);
        assert!(results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|err| matches!(err, AccountError::Limit { limit: 5, .. })));
        assert_eq!(e.members("p").unwrap().len(), 5);
        // A member's new role is not a new membership; another project
        // has its own count.
        let (member, _) = e.members("p").unwrap().remove(0);
        e.set_member_checked("p", &member, Role::Developer, UserCheck::ByName)
            .unwrap();
        e.set_member_checked("p2", "u0", Role::Guest, UserCheck::ByName)
            .unwrap();
        // Removing one makes room for one.
        assert!(e.remove_member("p", &member).unwrap());
        e.set_member_checked("p", "late", Role::Guest, UserCheck::ByName)
            .unwrap();
        assert!(matches!(
            e.set_member_checked("p", "later", Role::Guest, UserCheck::ByName),
            Err(AccountError::Limit { .. })
        ));

        let pull = Actions::of(&[Action::Pull]);
        e.create_robot("p", "a", pull, None, "").unwrap();
        e.create_robot("p", "b", pull, None, "").unwrap();
        assert!(matches!(
            e.create_robot("p", "c", pull, None, ""),
            Err(AccountError::Limit { limit: 2, .. })
        ));
        e.create_robot("p2", "c", pull, None, "").unwrap();
        assert_eq!(e.robots().unwrap().len(), 3);
    }

    #[test]
    fn chartmuseum_path_names_are_refused_as_projects() {
        let (_d, e) = engine();
        for name in RESERVED_PROJECT_NAMES {
            let err = e.create_project(name, false, None).unwrap_err();
            assert!(err.to_string().contains("reserved"), "{name}: {err}");
        }
        e.create_project("v3", false, None).unwrap();
    }

    #[test]
    fn users_projects_members_robots() {
        let (_d, e) = engine();
        assert!(matches!(
            e.ensure_admin(None),
            Err(AccountError::Invalid { .. })
        ));
        let created = AdminSetup {
            account: AdminAccount::Created,
            library_created: true,
        };
        assert_eq!(e.ensure_admin(Some("s3cret-admin")).unwrap(), created);
        let unchanged = AdminSetup {
            account: AdminAccount::Unchanged,
            library_created: false,
        };
        assert_eq!(e.ensure_admin(None).unwrap(), unchanged);
        assert_eq!(e.ensure_admin(Some("s3cret-admin")).unwrap(), unchanged);
        assert!(e.project(DEFAULT_PROJECT).unwrap().unwrap().public);
        let admin = e.authenticate("admin", "s3cret-admin").unwrap().unwrap();
        assert!(admin.is_admin());
        assert_eq!(e.authenticate("admin", "wrong-password").unwrap(), None);
        assert_eq!(e.authenticate("nobody", "whatever1").unwrap(), None);

        e.create_user("alice", "alice-password", false, "", "")
            .unwrap();
        assert!(matches!(
            e.create_user("alice", "alice-password", false, "", ""),
            Err(AccountError::Exists { .. })
        ));
        assert!(e
            .create_user("bad:name", "long-enough", false, "", "")
            .is_err());
        assert!(e.create_user("bob", "short", false, "", "").is_err());
        e.create_project("priv", false, Some("alice")).unwrap();
        let alice = e.authenticate("alice", "alice-password").unwrap().unwrap();
        assert_eq!(e.permissions(&alice, "priv").unwrap(), Actions::ALL);
        assert_eq!(
            e.permissions(&Account::Anonymous, "priv").unwrap(),
            Actions::NONE
        );
        assert_eq!(
            e.permissions(&Account::Anonymous, "library").unwrap(),
            Actions::of(&[Action::Pull])
        );
        assert_eq!(e.permissions(&admin, "missing").unwrap(), Actions::NONE);

        e.create_user("bob", "bob-password", false, "", "").unwrap();
        let bob = e.account("bob").unwrap().unwrap();
        assert_eq!(e.permissions(&bob, "priv").unwrap(), Actions::NONE);
        e.set_member("priv", "bob", Role::Developer).unwrap();
        assert_eq!(
            e.permissions(&bob, "priv").unwrap(),
            Actions::of(&[Action::Pull, Action::Push])
        );
        assert_eq!(e.members("priv").unwrap().len(), 2);
        assert!(e.remove_member("priv", "bob").unwrap());
        assert_eq!(e.permissions(&bob, "priv").unwrap(), Actions::NONE);
        assert!(e.set_member("priv", "nobody", Role::Guest).is_err());
        // By name: recorded, inert until a user of that name exists.
        e.set_member_checked("priv", "later", Role::Developer, UserCheck::ByName)
            .unwrap();
        assert_eq!(
            e.member_role("priv", "later").unwrap(),
            Some(Role::Developer)
        );
        assert!(e
            .set_member_checked("priv", "bad:name", Role::Guest, UserCheck::ByName)
            .is_err());
        assert!(e
            .set_member_checked("nosuch", "later", Role::Guest, UserCheck::ByName)
            .is_err());

        let r = e
            .create_robot("priv", "ci", Actions::of(&[Action::Pull]), None, "")
            .unwrap();
        assert_eq!(r.name, "robot$priv+ci");
        assert_eq!(r.secret.len(), 64);
        let robot = e.authenticate(&r.name, &r.secret).unwrap().unwrap();
        assert_eq!(
            e.permissions(&robot, "priv").unwrap(),
            Actions::of(&[Action::Pull])
        );
        assert_eq!(e.permissions(&robot, "other").unwrap(), Actions::NONE);
        assert_eq!(e.authenticate(&r.name, "0").unwrap(), None);
        let expired = e
            .create_robot("priv", "old", Actions::of(&[Action::Pull]), Some(1), "")
            .unwrap();
        assert_eq!(
            e.authenticate(&expired.name, &expired.secret).unwrap(),
            None
        );
        assert_eq!(e.account(&expired.name).unwrap(), None);
        // Nothing about the secret is stored but its hash.
        let (_, rec) = e.robots().unwrap().into_iter().next().unwrap();
        assert_ne!(rec.secret_sha256, r.secret);
    }

    #[test]
    fn ensure_admin_applies_the_configured_password_and_flag() {
        let (_d, e) = engine();
        // Someone else made "admin" (say, through the API with auth off),
        // without the administrator flag; there is no library project.
        e.create_user(ADMIN_USER, "attacker-password", false, "", "")
            .unwrap();
        let setup = e.ensure_admin(Some("operator-password")).unwrap();
        assert_eq!(
            setup,
            AdminSetup {
                account: AdminAccount::Updated {
                    password_applied: true,
                    admin_flag_restored: true,
                },
                library_created: true,
            }
        );
        assert_eq!(
            e.authenticate(ADMIN_USER, "attacker-password").unwrap(),
            None
        );
        let admin = e
            .authenticate(ADMIN_USER, "operator-password")
            .unwrap()
            .unwrap();
        assert!(admin.is_admin());
        // Too short a configured password is refused, not ignored.
        assert!(matches!(
            e.ensure_admin(Some("short")),
            Err(AccountError::Invalid { .. })
        ));
    }

    /// Every file under `dir` that contains `needle`.
    fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                out.extend(files_containing(&p, needle));
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn token_key_moves_out_of_the_index() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let old = TokenKey::generate();
        {
            // The layout before the key file: the seed in meta/token_key.
            let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
            let g = e.inner.lock().unwrap();
            let mut b = Batch::default();
            b.put(&TokenSeedKey, &TokenSeed(old.seed()));
            e.inner.commit(g, b).unwrap();
            e.create_user("alice", "alice-password", false, "", "")
                .unwrap();
        }
        let index = dir.path().join("index");
        assert!(
            !files_containing(&index, &old.seed()).is_empty(),
            "control: the old layout has the seed in the index's files"
        );
        {
            let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
            assert_eq!(e.token_signing_key().unwrap().key_id(), old.key_id());
            assert_eq!(e.inner.index.get(&TokenSeedKey).unwrap(), None);
            // Everything else is still there.
            assert!(e.user("alice").unwrap().is_some());
        }
        let file = dir.path().join(TOKEN_KEY_FILE);
        assert_eq!(std::fs::read(&file).unwrap(), old.seed());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            files_containing(&index, &old.seed()),
            Vec::<std::path::PathBuf>::new(),
            "the seed lingers in the index's files"
        );
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        assert_eq!(e.token_signing_key().unwrap().key_id(), old.key_id());
        drop(e);

        // A key file others may read is refused at open.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Engine::open(EngineConfig::new(dir.path())).err().unwrap();
        assert!(matches!(err, StorageError::OpenToOthers { .. }), "{err}");
        let mut allow = EngineConfig::new(dir.path());
        allow.allow_open_data_dir = true;
        let e = Engine::open(allow).unwrap();
        assert_eq!(e.token_signing_key().unwrap().key_id(), old.key_id());
    }

    #[test]
    fn token_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let kid = {
            let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
            let k = e.token_signing_key().unwrap();
            assert_eq!(e.token_signing_key().unwrap().key_id(), k.key_id());
            k.key_id()
        };
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        assert_eq!(e.token_signing_key().unwrap().key_id(), kid);
        // Never in the index.
        assert_eq!(e.inner.index.get(&TokenSeedKey).unwrap(), None);
    }
}
