//! User groups (Harbor's `/api/v2.0/usergroups`): named LDAP groups, by
//! id, which a project can take as a member by that id.
//!
//! A group is a record in `user_groups` (see `keys.rs`): a name, Harbor's
//! group type (1, LDAP: the only kind berth keeps) and the group's DN,
//! normalized ([`normalize_dn`]) and unique among user groups. Project
//! roles of groups stay where they were, in `group_members` by normalized
//! DN (`directory.rs`): a membership given by group id is the membership
//! of the group's DN, so roles are found the same way for both, and a
//! user's groups (their last login's DNs) meet them without a join.
//!
//! Deleting a user group deletes, in the same batch, every project
//! membership of its DN (Harbor deletes a group's `project_member` rows
//! with it), including one given by DN before the group was created.
//!
//! There are few groups (an administrator creates each): uniqueness and
//! lookups by DN scan the family under the write lock.

use crate::accounts::{invalid, AccountError};
use crate::directory::{normalize_dn, valid_group_dn};
use crate::engine::Engine;
use crate::error::StorageError;
use crate::index::Batch;
use crate::keys::{GroupMemberKey, IdKind, ProjectKey, UserGroupKey, WholeFamily};
use crate::records::{self, UserGroupRecord};

/// Harbor's group type of LDAP groups, the only kind berth keeps.
pub const LDAP_GROUP: u8 = 1;

/// Longest user group name.
pub const MAX_GROUP_NAME: usize = 255;

/// A user group name: 1–[`MAX_GROUP_NAME`] bytes, not blank, without
/// control characters.
pub fn valid_group_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.trim().is_empty()
        && name.len() <= MAX_GROUP_NAME
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("group_name {name:?}"),
            format!("give 1-{MAX_GROUP_NAME} bytes without control characters"),
        ))
    }
}

fn not_found(id: u64) -> AccountError {
    AccountError::NotFound {
        what: format!("user group {id}"),
    }
}

impl Engine {
    /// Creates LDAP user group `name` for `ldap_dn` (checked and
    /// normalized by [`valid_group_dn`]); no other user group may have
    /// that DN ([`AccountError::Exists`]). Returns its id, from the
    /// `user_group` sequence.
    pub fn create_user_group(&self, name: &str, ldap_dn: &str) -> Result<u64, AccountError> {
        valid_group_name(name)?;
        let dn = valid_group_dn(ldap_dn)?;
        let inner = &self.inner;
        let g = inner.lock()?;
        if let Some((id, _)) = self.user_group_by_dn(&dn)? {
            return Err(AccountError::Exists {
                what: format!("user group {id} with ldap_group_dn {dn}"),
            });
        }
        let now = records::now_ms();
        let mut batch = Batch::default();
        let id = inner.next_id(&mut batch, IdKind::UserGroup)?;
        let rec = UserGroupRecord {
            name: name.to_owned(),
            group_type: LDAP_GROUP,
            ldap_dn: dn,
            created_ms: now,
            updated_ms: now,
        };
        batch.put(&UserGroupKey(id), &rec);
        inner.commit(g, batch)?;
        Ok(id)
    }

    /// User group `id`.
    pub fn user_group(&self, id: u64) -> Result<Option<UserGroupRecord>, StorageError> {
        self.inner.index.get(&UserGroupKey(id))
    }

    /// Every user group, by id (ascending: creation order).
    pub fn user_groups(&self) -> Result<Vec<(u64, UserGroupRecord)>, StorageError> {
        let mut groups: Vec<(u64, UserGroupRecord)> = self
            .inner
            .index
            .scan(UserGroupKey::all())
            .map(|r| r.map(|(UserGroupKey(id), rec)| (id, rec)))
            .collect::<Result<_, _>>()?;
        // Keys are decimal, so byte order is not numeric order.
        groups.sort_by_key(|(id, _)| *id);
        Ok(groups)
    }

    /// The user group whose DN is `dn` (any spelling), if any.
    pub fn user_group_by_dn(
        &self,
        dn: &str,
    ) -> Result<Option<(u64, UserGroupRecord)>, StorageError> {
        let dn = normalize_dn(dn);
        for entry in self.inner.index.scan(UserGroupKey::all()) {
            let (UserGroupKey(id), rec) = entry?;
            if rec.ldap_dn == dn {
                return Ok(Some((id, rec)));
            }
        }
        Ok(None)
    }

    /// Renames user group `id` (Harbor's `PUT`: only the name changes).
    pub fn rename_user_group(&self, id: u64, name: &str) -> Result<UserGroupRecord, AccountError> {
        valid_group_name(name)?;
        let inner = &self.inner;
        let g = inner.lock()?;
        let Some(mut rec) = inner.index.get(&UserGroupKey(id))? else {
            return Err(not_found(id));
        };
        rec.name = name.to_owned();
        rec.updated_ms = records::now_ms();
        let mut batch = Batch::default();
        batch.put(&UserGroupKey(id), &rec);
        inner.commit(g, batch)?;
        Ok(rec)
    }

    /// Deletes user group `id` and, in the same batch, every project
    /// membership of its DN. Returns the projects it was a member of.
    pub fn delete_user_group(&self, id: u64) -> Result<Vec<String>, AccountError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let Some(rec) = inner.index.get(&UserGroupKey(id))? else {
            return Err(not_found(id));
        };
        let mut batch = Batch::default();
        let mut projects = Vec::new();
        // IMPORTANT: under the lock, so no membership of the DN is added
        // between this walk and the commit.
        for entry in inner.index.scan_keys(ProjectKey::all()) {
            let ProjectKey(project) = entry?;
            let member = GroupMemberKey {
                project,
                group: rec.ldap_dn.clone(),
            };
            if inner.index.contains(&member)? {
                batch.delete(&member);
                projects.push(member.project);
            }
        }
        batch.delete(&UserGroupKey(id));
        inner.commit(g, batch)?;
        Ok(projects)
    }
}
