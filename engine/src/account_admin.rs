//! The day-2 half of accounts: users, robots and projects changed and
//! removed (Harbor v2.0's `PUT`/`DELETE` on `/users`, `/robots`,
//! `/projects`). Each change is one batch under the accounts lock.
//!
//! Revocation: a password change or a secret refresh replaces the stored
//! credential, and with it [`Engine::credential_stamp`]; a deletion or a
//! disabled robot has no stamp. The server checks the stamp of every
//! cached Basic credential and of every token it is shown, so none of
//! these keeps working past the request that made the change.

use crate::accounts::{
    hash_password, invalid, new_robot_secret, sha256_hex, valid_password, AccountError, Action,
    Actions, ADMIN_USER,
};
use crate::engine::{Engine, Inner};
use crate::error::StorageError;
use crate::index::Batch;
use crate::keys::{
    GroupMemberKey, IndexKey, MemberKey, ProjectKey, RepoKey, RobotKey, UserKey, WholeFamily,
};
use crate::records::{RobotRecord, UserRecord};

/// What a user update changes (`None`: left as it is).
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    pub email: Option<String>,
    pub realname: Option<String>,
}

/// What a robot update changes (`None`: left as it is).
#[derive(Clone, Debug, Default)]
pub struct RobotUpdate {
    pub description: Option<String>,
    /// Pull, push, delete (at least one).
    pub actions: Option<Actions>,
    pub disabled: Option<bool>,
    /// `Some(None)`: never expires.
    pub expires_ms: Option<Option<u64>>,
}

fn not_found(what: String) -> AccountError {
    AccountError::NotFound { what }
}

impl Inner {
    /// Changes the record at `key` with `f`, in one batch under the lock;
    /// `NotFound` naming `what()` when there is none.
    pub(crate) fn change<K: IndexKey>(
        &self,
        key: &K,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&mut K::Value) -> Result<(), AccountError>,
    ) -> Result<(), AccountError> {
        let g = self.lock()?;
        let mut rec = self.index.get(key)?.ok_or_else(|| not_found(what()))?;
        f(&mut rec)?;
        let mut batch = Batch::default();
        batch.put(key, &rec);
        self.commit(g, batch)?;
        Ok(())
    }

    /// Removes `key`, in one batch under the lock, if it is there;
    /// whether it was.
    pub(crate) fn remove_present<K: IndexKey>(&self, key: &K) -> Result<bool, StorageError> {
        let g = self.lock()?;
        if !self.index.contains(key)? {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.delete(key);
        self.commit(g, batch)?;
        Ok(true)
    }
}

impl Engine {
    /// The user with id `id`, by name.
    pub fn user_by_id(&self, id: u64) -> Result<Option<(String, UserRecord)>, StorageError> {
        for r in self.inner.index.scan(UserKey::all()) {
            let (UserKey(name), rec) = r?;
            if rec.id == id {
                return Ok(Some((name, rec)));
            }
        }
        Ok(None)
    }

    /// The robot with id `id`, by full name.
    pub fn robot_by_id(&self, id: u64) -> Result<Option<(String, RobotRecord)>, StorageError> {
        for r in self.inner.index.scan(RobotKey::all()) {
            let (RobotKey(name), rec) = r?;
            if rec.id == id {
                return Ok(Some((name, rec)));
            }
        }
        Ok(None)
    }

    /// Changes user `name`'s record with `f` in one batch.
    fn change_user(
        &self,
        name: &str,
        f: impl FnOnce(&mut UserRecord) -> Result<(), AccountError>,
    ) -> Result<(), AccountError> {
        self.inner
            .change(&UserKey(name.to_owned()), || format!("user {name}"), f)
    }

    /// Updates user `name`'s profile.
    pub fn update_user(&self, name: &str, update: UserUpdate) -> Result<(), AccountError> {
        self.change_user(name, |rec| {
            if let Some(e) = update.email {
                rec.email = e;
            }
            if let Some(r) = update.realname {
                rec.realname = r;
            }
            Ok(())
        })
    }

    /// Grants or withdraws the system administrator flag. The `admin`
    /// account keeps it (the server restores it at every start).
    pub fn set_user_admin(&self, name: &str, admin: bool) -> Result<(), AccountError> {
        if name == ADMIN_USER && !admin {
            return Err(invalid(
                format!("user {ADMIN_USER}"),
                "is always a system administrator",
            ));
        }
        self.change_user(name, |rec| {
            rec.admin = admin;
            Ok(())
        })
    }

    /// Replaces user `name`'s password (hashed before the lock: argon2id
    /// is the slow part). Every credential cached for the old one and
    /// every token issued on it stop working (a new stamp).
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AccountError> {
        valid_password(password)?;
        let hash = hash_password(password)?;
        self.change_user(name, |rec| {
            if rec.is_ldap() {
                return Err(invalid(
                    format!("user {name}"),
                    "is an LDAP user: the password is the directory's",
                ));
            }
            rec.password_hash = hash;
            Ok(())
        })
    }

    /// Deletes user `name` and their memberships, in one batch. The
    /// `admin` account cannot be deleted.
    pub fn delete_user(&self, name: &str) -> Result<(), AccountError> {
        if name == ADMIN_USER {
            return Err(invalid(format!("user {ADMIN_USER}"), "cannot be deleted"));
        }
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = UserKey(name.to_owned());
        if !inner.index.contains(&key)? {
            return Err(not_found(format!("user {name}")));
        }
        let mut batch = Batch::default();
        batch.delete(&key);
        for r in inner.index.scan(MemberKey::all()) {
            let (m, _) = r?;
            if m.user == name {
                batch.delete(&m);
            }
        }
        inner.commit(g, batch)?;
        Ok(())
    }

    /// Changes robot `name` with `update`, in one batch.
    pub fn update_robot(&self, name: &str, update: RobotUpdate) -> Result<(), AccountError> {
        self.change_robot(name, |rec| {
            if let Some(d) = update.description {
                rec.description = d;
            }
            if let Some(a) = update.actions {
                let a = a.intersect(Actions::of(&[Action::Pull, Action::Push, Action::Delete]));
                if a.is_empty() {
                    return Err(invalid(
                        format!("robot {name}"),
                        "needs at least one of pull, push, delete",
                    ));
                }
                rec.actions = a.names();
            }
            if let Some(d) = update.disabled {
                rec.disabled = d;
            }
            if let Some(e) = update.expires_ms {
                rec.expires_ms = e;
            }
            Ok(())
        })
    }

    /// Gives robot `name` a new secret: `secret` if given (at least 8
    /// characters, as Harbor asks), else 256 random bits. The old secret
    /// and every token issued on it stop working. Returns the new secret,
    /// which is not stored.
    pub fn refresh_robot_secret(
        &self,
        name: &str,
        secret: Option<&str>,
    ) -> Result<String, AccountError> {
        let secret = match secret {
            Some(s) => {
                valid_password(s)?;
                s.to_owned()
            }
            None => new_robot_secret(),
        };
        let hash = sha256_hex(&secret);
        self.change_robot(name, |rec| {
            rec.secret_sha256 = hash;
            Ok(())
        })?;
        Ok(secret)
    }

    fn change_robot(
        &self,
        name: &str,
        f: impl FnOnce(&mut RobotRecord) -> Result<(), AccountError>,
    ) -> Result<(), AccountError> {
        self.inner
            .change(&RobotKey(name.to_owned()), || format!("robot {name}"), f)
    }

    /// Deletes robot `name`. Returns whether it existed.
    pub fn delete_robot(&self, name: &str) -> Result<bool, AccountError> {
        Ok(self.inner.remove_present(&RobotKey(name.to_owned()))?)
    }

    /// Deletes project `name` with its members (users and LDAP groups),
    /// robots, immutability rules and retention policy (with its runs), in
    /// one batch;
    /// refused ([`AccountError::InUse`], Harbor's `412`) while it holds a
    /// repository (images or charts: delete those first).
    pub fn delete_project(&self, name: &str) -> Result<(), AccountError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = ProjectKey(name.to_owned());
        if !inner.index.contains(&key)? {
            return Err(not_found(format!("project {name}")));
        }
        let prefix = format!("{name}/");
        if let Some(r) = inner.index.scan(RepoKey::after(&prefix)).next() {
            let (RepoKey(repo), _) = r?;
            if repo.as_str().starts_with(&prefix) {
                return Err(AccountError::InUse {
                    what: format!("project {name}"),
                    by: format!("repository {repo} (delete its repositories first)"),
                });
            }
        }
        let mut batch = Batch::default();
        batch.delete(&key);
        for r in inner.index.scan(MemberKey::of_project(name)) {
            batch.delete(&r?.0);
        }
        for r in inner.index.scan(RobotKey::of_project(name)) {
            batch.delete(&r?.0);
        }
        for r in inner.index.scan(GroupMemberKey::of_project(name)) {
            batch.delete(&r?.0);
        }
        batch.delete(&crate::keys::ImmutableRulesKey(name.to_owned()));
        self.retention_policy_of(name)?
            .map(|(id, _)| self.unindex_retention_policy(id, &mut batch))
            .transpose()?;
        inner.commit(g, batch)?;
        Ok(())
    }
}
