//! Accounts from an LDAP directory (Harbor's `ldap_auth` mode), the
//! engine's half: onboarding a user the server has just authenticated
//! against the directory, and the project roles of LDAP groups
//! (`group_members`, see `keys.rs`).
//!
//! The engine never speaks LDAP. The server binds and searches
//! (`server/src/ldap.rs`), then hands the entry it found here as a
//! [`DirectoryUser`]; every login writes what the directory said (email,
//! real name, groups, membership of the admin group) into the user's
//! record, so roles and the administrator flag follow the directory at
//! each login. Group DNs are compared in one spelling ([`normalize_dn`]).

use crate::accounts::{
    invalid, stamp_of, valid_user_name, Account, AccountError, Role, ADMIN_USER,
};
use crate::engine::Engine;
use crate::error::StorageError;
use crate::index::Batch;
use crate::keys::{GroupMemberKey, IdKind, ProjectKey, UserKey};
use crate::records::{self, MemberRecord, UserRecord};

/// Longest group DN accepted as a project member.
pub const MAX_GROUP_DN: usize = 1024;

/// What the directory says about a user who has just bound with their
/// password.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The DN of the user's entry.
    pub dn: String,
    pub email: String,
    pub realname: String,
    /// The user's groups, as DNs (normalized here).
    pub groups: Vec<String>,
    /// A member of the configured LDAP admin group.
    pub admin: bool,
}

/// The one spelling of a DN that group DNs are stored and compared in:
/// ASCII letters lowercased (attribute names and, in practice, values are
/// compared case-insensitively by directories), and the blanks around each
/// `,` and `=` removed (`CN=Devs, OU=Groups` is `cn=devs,ou=groups`).
/// Escaped characters (`\,`) are kept as written.
pub fn normalize_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    // Blanks seen since the last kept character: dropped before and after
    // a separator, kept inside a value.
    let mut blanks = 0usize;
    let mut after_separator = true;
    let mut escaped = false;
    for c in dn.trim().chars() {
        if escaped {
            out.push(c.to_ascii_lowercase());
            escaped = false;
            after_separator = false;
            continue;
        }
        match c {
            ' ' => blanks += 1,
            ',' | '=' | '+' => {
                blanks = 0;
                after_separator = true;
                out.push(c);
            }
            c => {
                if !after_separator {
                    out.extend(std::iter::repeat_n(' ', blanks));
                }
                blanks = 0;
                after_separator = false;
                escaped = c == '\\';
                out.push(c.to_ascii_lowercase());
            }
        }
    }
    out
}

/// A group DN as a project member: normalized, at most [`MAX_GROUP_DN`]
/// bytes, without control characters, of the form `attr=value[,…]`.
pub fn valid_group_dn(dn: &str) -> Result<String, AccountError> {
    let n = normalize_dn(dn);
    let ok = !n.is_empty()
        && n.len() <= MAX_GROUP_DN
        && n.contains('=')
        && !n.starts_with('=')
        && !n.chars().any(char::is_control);
    if ok {
        Ok(n)
    } else {
        Err(invalid(
            format!("ldap_group_dn {dn:?}"),
            format!("must be a DN such as cn=devs,ou=groups,dc=example,dc=org (at most {MAX_GROUP_DN} bytes)"),
        ))
    }
}

/// A marker in place of a password hash for LDAP users: verifies nothing
/// (not a PHC string), and is new at each onboarding, so the credential
/// stamp of a user deleted and onboarded again is new too.
fn ldap_marker() -> String {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).expect("the OS random source is available");
    format!("ldap:{}", hex::encode(raw))
}

/// What recording a directory user may do to an existing record of the
/// same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Onboarding {
    /// A login: create the record, or bring it in line with the directory
    /// (a local user of the name becomes the directory's).
    Login,
    /// An import (`POST /ldap/users/import`): create the record only; any
    /// user of the name already there is [`AccountError::Exists`].
    CreateOnly,
}

impl Engine {
    /// Records a successful LDAP login of `name`: creates the user's local
    /// record at the first one (Harbor onboards LDAP users), else brings
    /// its email, real name, groups and admin-group flag in line with the
    /// directory (written only when something changed). Returns the account
    /// as it now stands and its credential stamp.
    ///
    /// A local user of the same name becomes the LDAP user (the directory
    /// is the source of accounts in this mode): its local password stops
    /// working and its stamp changes. `admin` is never an LDAP user.
    pub fn directory_login(
        &self,
        name: &str,
        user: &DirectoryUser,
    ) -> Result<(Account, String), AccountError> {
        let (account, stamp, _) = self.record_directory_user(name, user, Onboarding::Login)?;
        Ok((account, stamp))
    }

    /// Onboards directory user `name` without a login (Harbor's LDAP user
    /// import): the record a first login would write, found by the search
    /// DN's lookup instead of a bind. Refused ([`AccountError::Exists`]) if
    /// any user of that name is already here, local or LDAP: an import
    /// never takes over an account. Returns the new user's id.
    pub fn directory_import(&self, name: &str, user: &DirectoryUser) -> Result<u64, AccountError> {
        let (_, _, id) = self.record_directory_user(name, user, Onboarding::CreateOnly)?;
        Ok(id)
    }

    /// The one writer of LDAP users' records: see [`Onboarding`]. Returns
    /// the account, its stamp and the user's id.
    fn record_directory_user(
        &self,
        name: &str,
        user: &DirectoryUser,
        mode: Onboarding,
    ) -> Result<(Account, String, u64), AccountError> {
        valid_user_name(name)?;
        if name == ADMIN_USER {
            return Err(invalid(
                format!("user {ADMIN_USER}"),
                "is a local account and never signs in through LDAP",
            ));
        }
        let mut groups: Vec<String> = user.groups.iter().map(|g| normalize_dn(g)).collect();
        groups.sort();
        groups.dedup();
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = UserKey(name.to_owned());
        let mut batch = Batch::default();
        let old = inner.index.get(&key)?;
        if old.is_some() && mode == Onboarding::CreateOnly {
            return Err(AccountError::Exists {
                what: format!("user {name}"),
            });
        }
        let mut rec = match old.clone() {
            Some(r) if r.is_ldap() => r,
            Some(r) => {
                tracing::warn!(target: "berth::auth", user = name,
                    "a local user signed in through LDAP: the account is now the directory's");
                UserRecord {
                    password_hash: ldap_marker(),
                    ..r
                }
            }
            None => UserRecord {
                id: inner.next_id(&mut batch, IdKind::User)?,
                password_hash: ldap_marker(),
                admin: false,
                email: String::new(),
                realname: String::new(),
                created_ms: records::now_ms(),
                ldap_dn: String::new(),
                ldap_groups: Vec::new(),
                ldap_admin: false,
            },
        };
        rec.ldap_dn = user.dn.clone();
        rec.email = user.email.clone();
        rec.realname = user.realname.clone();
        rec.ldap_groups = groups;
        rec.ldap_admin = user.admin;
        let account = Account::User {
            name: name.to_owned(),
            admin: rec.is_admin(),
        };
        let stamp = stamp_of(&rec.password_hash);
        if old.as_ref() != Some(&rec) {
            batch.put(&key, &rec);
            inner.commit(g, batch)?;
        }
        Ok((account, stamp, rec.id))
    }

    /// Gives the members of LDAP group `group_dn` `role` in `project`
    /// (replacing an earlier role). Returns the membership id, from the
    /// same sequence as user memberships, so `/members/{id}` names either.
    pub fn set_group_member(
        &self,
        project: &str,
        group_dn: &str,
        role: Role,
    ) -> Result<u64, AccountError> {
        let group = valid_group_dn(group_dn)?;
        let inner = &self.inner;
        let g = inner.lock()?;
        if !inner.index.contains(&ProjectKey(project.to_owned()))? {
            return Err(AccountError::NotFound {
                what: format!("project {project}"),
            });
        }
        let key = GroupMemberKey {
            project: project.to_owned(),
            group,
        };
        let mut batch = Batch::default();
        let id = match inner.index.get(&key)? {
            Some(m) => m.id,
            None => {
                // Under the accounts lock, as for user members.
                let limit = inner.config.max_members_per_project;
                let n = inner
                    .index
                    .scan(GroupMemberKey::of_project(project))
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                    .count() as u64;
                if n >= limit {
                    return Err(AccountError::Limit {
                        what: format!("group members of project {project}"),
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

    /// Removes group `group` (a DN, normalized here) from `project`.
    /// Returns whether it was a member.
    pub fn remove_group_member(&self, project: &str, group: &str) -> Result<bool, AccountError> {
        Ok(self.inner.remove_present(&GroupMemberKey {
            project: project.to_owned(),
            group: normalize_dn(group),
        })?)
    }

    /// The group members of `project`, by normalized group DN.
    pub fn group_members(
        &self,
        project: &str,
    ) -> Result<Vec<(String, MemberRecord)>, StorageError> {
        self.list(GroupMemberKey::of_project(project), |k| k.group)
    }

    /// The highest role `user` holds in `project` through the LDAP groups
    /// of their last login, if any. Reads the user's record only when the
    /// project has group members.
    pub fn group_role(&self, project: &str, user: &str) -> Result<Option<Role>, StorageError> {
        let members = self.group_members(project)?;
        if members.is_empty() {
            return Ok(None);
        }
        let Some(rec) = self.user(user)? else {
            return Ok(None);
        };
        Ok(members
            .iter()
            .filter(|(dn, _)| rec.ldap_groups.binary_search(dn).is_ok())
            .filter_map(|(_, m)| Role::from_id(m.role))
            .max_by_key(|r| r.rank()))
    }

    /// `user`'s role in `project`: the higher of their own membership and
    /// their groups' (Harbor's rule).
    pub fn effective_role(&self, project: &str, user: &str) -> Result<Option<Role>, StorageError> {
        let direct = self.member_role(project, user)?;
        let group = self.group_role(project, user)?;
        Ok(direct.into_iter().chain(group).max_by_key(|r| r.rank()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{Action, Actions};
    use crate::EngineConfig;

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        (dir, e)
    }

    fn entry(groups: &[&str], admin: bool) -> DirectoryUser {
        DirectoryUser {
            dn: "uid=carol,ou=people,dc=x".into(),
            email: "carol@x".into(),
            realname: "Carol".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            admin,
        }
    }

    #[test]
    fn logins_onboard_and_follow_the_directory() {
        let (_d, e) = engine();
        let (a, stamp) = e
            .directory_login("carol", &entry(&["CN=Devs,DC=x"], true))
            .unwrap();
        assert!(a.is_admin());
        let rec = e.user("carol").unwrap().unwrap();
        assert!(rec.is_ldap() && rec.ldap_admin && !rec.admin);
        assert_eq!(rec.ldap_groups, ["cn=devs,dc=x"]);
        assert_eq!(rec.email, "carol@x");
        // The marker verifies nothing; the stamp is the record's.
        assert_eq!(e.authenticate("carol", &rec.password_hash).unwrap(), None);
        assert_eq!(e.credential_stamp("carol").unwrap(), Some(stamp.clone()));
        // Out of the admin group: the next login is not an administrator.
        let (a, again) = e.directory_login("carol", &entry(&[], false)).unwrap();
        assert!(!a.is_admin());
        assert_eq!(again, stamp, "the same onboarding, the same stamp");
        assert_eq!(e.account("carol").unwrap(), Some(a));
        // Local passwords of LDAP users are the directory's.
        assert!(e.set_password("carol", "local-password-1").is_err());
        // Deleted in berth and onboarded again: a new stamp.
        e.delete_user("carol").unwrap();
        let (_, fresh) = e.directory_login("carol", &entry(&[], false)).unwrap();
        assert_ne!(fresh, stamp);
        // admin never signs in through LDAP; names must be berth's.
        assert!(e.directory_login(ADMIN_USER, &entry(&[], true)).is_err());
        assert!(e.directory_login("a b", &entry(&[], false)).is_err());
    }

    #[test]
    fn imports_onboard_only_new_users() {
        let (_d, e) = engine();
        let id = e
            .directory_import("carol", &entry(&["cn=devs,dc=x"], false))
            .unwrap();
        let rec = e.user("carol").unwrap().unwrap();
        assert_eq!(rec.id, id);
        assert!(rec.is_ldap());
        assert_eq!(rec.email, "carol@x");
        assert_eq!(rec.ldap_groups, ["cn=devs,dc=x"]);
        // A second import, or one over a local user, is refused and
        // changes nothing.
        let again = e.directory_import("carol", &entry(&[], true));
        assert!(
            matches!(again, Err(AccountError::Exists { .. })),
            "{again:?}"
        );
        assert_eq!(e.user("carol").unwrap().unwrap(), rec);
        e.create_user("dave", "dave-password-1", false, "", "")
            .unwrap();
        let local = e.user("dave").unwrap().unwrap();
        assert!(e.directory_import("dave", &entry(&[], false)).is_err());
        assert_eq!(e.user("dave").unwrap().unwrap(), local);
        assert!(e.directory_import(ADMIN_USER, &entry(&[], false)).is_err());
        assert!(e.directory_import("a b", &entry(&[], false)).is_err());
        // The imported user's first login is that user's: same id.
        let (a, _) = e.directory_login("carol", &entry(&[], false)).unwrap();
        assert!(!a.is_admin());
        assert_eq!(e.user("carol").unwrap().unwrap().id, id);
    }

    #[test]
    fn group_roles_add_to_direct_roles() {
        let (_d, e) = engine();
        e.create_project("team", false, None).unwrap();
        let (carol, _) = e
            .directory_login("carol", &entry(&["cn=devs,dc=x"], false))
            .unwrap();
        assert_eq!(e.permissions(&carol, "team").unwrap(), Actions::NONE);
        let id = e
            .set_group_member("team", "CN=Devs, DC=x", Role::Developer)
            .unwrap();
        assert_eq!(
            e.permissions(&carol, "team").unwrap(),
            Actions::of(&[Action::Pull, Action::Push])
        );
        // The higher of the two: a direct guest stays a developer.
        e.set_member("team", "carol", Role::Guest).unwrap();
        assert_eq!(
            e.effective_role("team", "carol").unwrap(),
            Some(Role::Developer)
        );
        e.set_member("team", "carol", Role::Maintainer).unwrap();
        assert_eq!(
            e.effective_role("team", "carol").unwrap(),
            Some(Role::Maintainer)
        );
        e.remove_member("team", "carol").unwrap();
        // Same group, new role: same membership id.
        assert_eq!(
            e.set_group_member("team", "cn=devs,dc=x", Role::ProjectAdmin)
                .unwrap(),
            id
        );
        assert_eq!(e.permissions(&carol, "team").unwrap(), Actions::ALL);
        // A login without the group: nothing.
        let (carol, _) = e.directory_login("carol", &entry(&[], false)).unwrap();
        assert_eq!(e.permissions(&carol, "team").unwrap(), Actions::NONE);
        assert!(e
            .set_group_member("nope", "cn=devs,dc=x", Role::Guest)
            .is_err());
        assert!(e.set_group_member("team", "devs", Role::Guest).is_err());
        assert_eq!(e.group_members("team").unwrap().len(), 1);
        assert!(e.remove_group_member("team", "CN=devs,dc=x").unwrap());
        assert!(e.group_members("team").unwrap().is_empty());
        // A project's group members go with it.
        e.set_group_member("team", "cn=devs,dc=x", Role::Guest)
            .unwrap();
        e.delete_project("team").unwrap();
        assert!(e.group_members("team").unwrap().is_empty());
    }

    #[test]
    fn dns_have_one_spelling() {
        assert_eq!(
            normalize_dn(" CN=Devs , OU=Groups,DC=Example, dc = org "),
            "cn=devs,ou=groups,dc=example,dc=org"
        );
        assert_eq!(normalize_dn("cn=a\\, b,dc=x"), "cn=a\\, b,dc=x");
        assert_eq!(normalize_dn("CN=Dev Team , dc=x"), "cn=dev team,dc=x");
        assert!(valid_group_dn("cn=x,dc=y").is_ok());
        assert!(valid_group_dn("").is_err());
        assert!(valid_group_dn("devs").is_err());
        assert!(valid_group_dn("cn=a\0b").is_err());
        assert!(valid_group_dn(&format!("cn={}", "a".repeat(MAX_GROUP_DN))).is_err());
    }
}
