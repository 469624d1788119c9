//! LDAP authentication (Harbor's `ldap_auth` mode): the server's half,
//! which speaks to the directory. The engine's half
//! (`berth_engine::directory`) onboards the user the directory vouched
//! for and keeps the project roles of LDAP groups.
//!
//! ```text
//! Directory::authenticate(name, password)
//!   empty password                        -> refused before any bind (an
//!                                            unauthenticated bind succeeds)
//!   connect (ldap://, ldaps://, StartTLS)  -> bind as ldap_search_dn
//!   search ldap_base_dn, ldap_scope,
//!     (&<ldap_filter>(<ldap_uid>=<name, RFC 4515 escaped>))
//!                                          -> exactly one entry, else refused
//!   bind as that entry's DN with password  -> invalidCredentials: refused
//!   groups: <ldap_group_membership_attribute> of the entry, and, with
//!     ldap_group_base_dn, the groups naming the entry's DN in member or
//!     uniqueMember (bound as the search DN again)
//!   admin: ldap_group_admin_dn among them
//! ```
//!
//! Nothing is cached: every call opens a connection, binds and searches,
//! so the directory decides each login (see `docs/auth.md`, "LDAP"). Each
//! connection lives for one call, driven by a task of its own that ends
//! when the call drops its handle. Every step is bounded by `ldap_timeout`.

use std::sync::Arc;

use berth_engine::directory::normalize_dn;
use berth_engine::DirectoryUser;
use ldap3::{
    ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions,
};

use crate::config::{LdapConfig, LdapScope};

/// LDAP result code of a bind with wrong credentials.
const INVALID_CREDENTIALS: u32 = 49;
/// LDAP result code of a search that hit its size limit (the entries up
/// to the limit came with it).
const SIZE_LIMIT_EXCEEDED: u32 = 4;
/// LDAP result code of a search whose base entry does not exist.
const NO_SUCH_OBJECT: u32 = 32;

/// At most this many entries answer a user or group search of the API
/// (`/ldap/users/search`, `/ldap/groups/search`): the directory's size
/// limit on the search, so a search of everything stays small.
pub const SEARCH_LIMIT: usize = 100;

/// A user a directory search found (Harbor's `LdapUser`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundUser {
    /// The `ldap_uid` attribute's value.
    pub username: String,
    pub realname: String,
    pub email: String,
}

/// A group a directory search found (Harbor's `UserGroup` of type 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundGroup {
    /// The `ldap_group_attribute_name` attribute's value.
    pub name: String,
    /// The entry's DN as the directory spells it.
    pub dn: String,
}

/// The configured directory (immutable; lives as long as the server).
pub struct Directory {
    cfg: LdapConfig,
    /// The TLS client configuration when certificates are verified (the
    /// system's roots plus `ldap_ca_file`); `None` with `ldap_verify_cert`
    /// off, when the client checks nothing.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The directory could not answer (unreachable, timed out, refused the
/// search DN, answered an error): not a verdict on the credentials.
#[derive(Debug, thiserror::Error)]
#[error("LDAP {url}: {what}: {detail}")]
pub struct DirectoryError {
    url: String,
    what: &'static str,
    detail: String,
}

impl Directory {
    /// Reads the CA file, if any; the directory is first contacted at the
    /// first login.
    pub fn new(cfg: &LdapConfig) -> Result<Directory, String> {
        let tls = if cfg.verify_cert {
            Some(Arc::new(client_config(cfg)?))
        } else {
            None
        };
        Ok(Directory {
            cfg: cfg.clone(),
            tls,
        })
    }

    fn err(&self, what: &'static str, detail: impl std::fmt::Display) -> DirectoryError {
        DirectoryError {
            url: self.cfg.url.clone(),
            what,
            detail: detail.to_string(),
        }
    }

    /// A connection bound as the search DN (anonymous without one).
    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.cfg.timeout)
            .set_starttls(self.cfg.starttls);
        settings = match &self.tls {
            Some(c) => settings.set_config(c.clone()),
            None => settings.set_no_tls_verify(true),
        };
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.cfg.url)
            .await
            .map_err(|e| self.err("connect", e))?;
        // The connection's driver: ends when `ldap` (and its clones) are
        // dropped or the server closes the connection.
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(target: "berth::auth", error = %e, "LDAP connection ended");
            }
        });
        if !self.cfg.search_dn.is_empty() {
            ldap.with_timeout(self.cfg.timeout)
                .simple_bind(&self.cfg.search_dn, &self.cfg.search_password.0)
                .await
                .and_then(|r| r.success())
                .map_err(|e| self.err("bind as ldap_search_dn", e))?;
        }
        Ok(ldap)
    }

    /// The user filter for `name`: `(&<ldap_filter>(<ldap_uid>=<name>))`,
    /// the name escaped as RFC 4515 asks (`*`, `(`, `)`, `\`, NUL).
    fn user_filter(&self, name: &str) -> String {
        let own = format!("({}={})", self.cfg.uid, ldap_escape(name));
        and_filter(&self.cfg.filter, own)
    }

    /// The one entry of user `name`, if exactly one matches.
    async fn find_user(
        &self,
        ldap: &mut Ldap,
        name: &str,
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        let attrs = [
            self.cfg.uid.as_str(),
            "mail",
            "cn",
            "displayName",
            self.cfg.group_membership_attribute.as_str(),
        ];
        let (entries, _) = ldap
            .with_timeout(self.cfg.timeout)
            .search(
                &self.cfg.base_dn,
                scope(self.cfg.scope),
                &self.user_filter(name),
                attrs.to_vec(),
            )
            .await
            .and_then(|r| r.success())
            .map_err(|e| self.err("user search", e))?;
        if entries.len() > 1 {
            tracing::warn!(target: "berth::auth", user = name, entries = entries.len(),
                "LDAP: the user search found several entries; refused");
        }
        let mut entries = entries.into_iter();
        Ok(match (entries.next(), entries.next()) {
            (Some(e), None) => Some(SearchEntry::construct(e)),
            _ => None,
        })
    }

    /// What the directory says of `entry`: mail, name, groups, admin.
    async fn describe(
        &self,
        ldap: &mut Ldap,
        entry: &SearchEntry,
    ) -> Result<DirectoryUser, DirectoryError> {
        let mut groups: Vec<String> = attr(entry, &self.cfg.group_membership_attribute)
            .iter()
            .map(|g| normalize_dn(g))
            .collect();
        if !self.cfg.group_base_dn.is_empty() {
            groups.extend(self.search_groups(ldap, &entry.dn).await?);
        }
        groups.sort();
        groups.dedup();
        let admin = !self.cfg.group_admin_dn.is_empty()
            && groups
                .binary_search(&normalize_dn(&self.cfg.group_admin_dn))
                .is_ok();
        let first = |a: &str| attr(entry, a).first().cloned().unwrap_or_default();
        let realname = Some(first("displayName"))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| first("cn"));
        Ok(DirectoryUser {
            dn: entry.dn.clone(),
            email: first("mail"),
            realname,
            groups,
            admin,
        })
    }

    /// The DNs of the groups under `ldap_group_base_dn` that name `dn` in
    /// `member` or `uniqueMember`, searched as the search DN.
    async fn search_groups(
        &self,
        ldap: &mut Ldap,
        dn: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        let dn = ldap_escape(dn);
        let own = format!("(|(member={dn})(uniqueMember={dn}))");
        let filter = and_filter(&self.cfg.group_search_filter, own);
        let (entries, _) = ldap
            .with_timeout(self.cfg.timeout)
            .search(
                &self.cfg.group_base_dn,
                scope(self.cfg.group_search_scope),
                &filter,
                vec![self.cfg.group_attribute_name.as_str()],
            )
            .await
            .and_then(|r| r.success())
            .map_err(|e| self.err("group search", e))?;
        Ok(entries
            .into_iter()
            .map(|e| normalize_dn(&SearchEntry::construct(e).dn))
            .collect())
    }

    /// Checks `name` and `password` against the directory (see the
    /// module docs). `Ok(None)`: wrong credentials, no such user, or
    /// several; `Err`: the directory did not answer.
    pub async fn authenticate(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<DirectoryUser>, DirectoryError> {
        // IMPORTANT: before any bind. A simple bind with a DN and an empty
        // password is an unauthenticated bind (RFC 4513 5.1.2), which many
        // servers answer with success.
        if password.is_empty() || name.is_empty() {
            return Ok(None);
        }
        let mut ldap = self.connect().await?;
        let Some(entry) = self.find_user(&mut ldap, name).await? else {
            let _ = ldap.unbind().await;
            return Ok(None);
        };
        let bound = ldap
            .with_timeout(self.cfg.timeout)
            .simple_bind(&entry.dn, password)
            .await
            .map_err(|e| self.err("bind as the user", e))?;
        if bound.rc == INVALID_CREDENTIALS {
            let _ = ldap.unbind().await;
            return Ok(None);
        }
        bound
            .success()
            .map_err(|e| self.err("bind as the user", e))?;
        // The user may not search groups: back to the search DN.
        if !self.cfg.group_base_dn.is_empty() && !self.cfg.search_dn.is_empty() {
            ldap.with_timeout(self.cfg.timeout)
                .simple_bind(&self.cfg.search_dn, &self.cfg.search_password.0)
                .await
                .and_then(|r| r.success())
                .map_err(|e| self.err("bind as ldap_search_dn", e))?;
        }
        let user = self.describe(&mut ldap, &entry).await;
        let _ = ldap.unbind().await;
        user.map(Some)
    }

    /// User `name` as the directory has it now, without their password
    /// (the search DN's view): for refresh tokens, which carry no password.
    /// `Ok(None)`: the user is gone (or no longer unique).
    pub async fn lookup(&self, name: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        let mut ldap = self.connect().await?;
        let user = match self.find_user(&mut ldap, name).await? {
            Some(entry) => Some(self.describe(&mut ldap, &entry).await?),
            None => None,
        };
        let _ = ldap.unbind().await;
        Ok(user)
    }
}

/// The API's directory operations (`ldap_api.rs`): a ping, and user and
/// group searches of at most [`SEARCH_LIMIT`] entries, each on a
/// connection of its own bound as the search DN.
impl Directory {
    /// The configuration this directory was built from.
    pub fn config(&self) -> &LdapConfig {
        &self.cfg
    }

    /// Connects and binds as the search DN (anonymous without one): what
    /// Harbor's LDAP ping checks.
    pub async fn ping(&self) -> Result<(), DirectoryError> {
        let mut ldap = self.connect().await?;
        let _ = ldap.unbind().await;
        Ok(())
    }

    /// A search of at most [`SEARCH_LIMIT`] entries: a search that hits
    /// the limit answers the entries it has; one whose base does not exist
    /// answers none.
    async fn search_capped(
        &self,
        ldap: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<&str>,
        what: &'static str,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let limit = i32::try_from(SEARCH_LIMIT).unwrap_or(i32::MAX);
        let found = ldap
            .with_search_options(SearchOptions::new().sizelimit(limit))
            .with_timeout(self.cfg.timeout)
            .search(base, scope, filter, attrs)
            .await
            .map_err(|e| self.err(what, e))?;
        match found.1.rc {
            0 | SIZE_LIMIT_EXCEEDED => Ok(found
                .0
                .into_iter()
                .take(SEARCH_LIMIT)
                .map(SearchEntry::construct)
                .collect()),
            NO_SUCH_OBJECT => Ok(Vec::new()),
            _ => Err(self.err(what, found.1)),
        }
    }

    /// The users whose `ldap_uid` is `name` (escaped: an exact match, as
    /// Harbor's search), or with an empty `name` every user entry, under
    /// `ldap_base_dn` and matching `ldap_filter`; at most [`SEARCH_LIMIT`].
    pub async fn search_users(&self, name: &str) -> Result<Vec<FoundUser>, DirectoryError> {
        let filter = if name.is_empty() {
            and_filter(&self.cfg.filter, format!("({}=*)", self.cfg.uid))
        } else {
            self.user_filter(name)
        };
        let attrs = vec![self.cfg.uid.as_str(), "mail", "cn", "displayName"];
        let mut ldap = self.connect().await?;
        let entries = self
            .search_capped(
                &mut ldap,
                &self.cfg.base_dn,
                scope(self.cfg.scope),
                &filter,
                attrs,
                "user search",
            )
            .await;
        let _ = ldap.unbind().await;
        Ok(entries?
            .iter()
            .map(|e| {
                let first = |a: &str| attr(e, a).first().cloned().unwrap_or_default();
                let realname = Some(first("displayName"))
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| first("cn"));
                FoundUser {
                    username: first(&self.cfg.uid),
                    realname,
                    email: first("mail"),
                }
            })
            .collect())
    }

    /// Whether `dn` is `ldap_group_base_dn` or below it (compared
    /// normalized); false without a group base DN.
    pub fn under_group_base(&self, dn: &str) -> bool {
        under(&normalize_dn(dn), &normalize_dn(&self.cfg.group_base_dn))
    }

    /// Groups matching `ldap_group_search_filter` whose name attribute is
    /// `name` (escaped: an exact match; any name if empty): under
    /// `ldap_group_base_dn`, or, with `dn`, the entry `dn` alone (the
    /// caller checks it is under the base: [`Directory::under_group_base`]).
    /// At most [`SEARCH_LIMIT`]; none without a group base DN.
    pub async fn search_groups_by(
        &self,
        name: &str,
        dn: Option<&str>,
    ) -> Result<Vec<FoundGroup>, DirectoryError> {
        if self.cfg.group_base_dn.is_empty() {
            return Ok(Vec::new());
        }
        let name_attr = self.cfg.group_attribute_name.as_str();
        let own = if name.is_empty() {
            "(objectClass=*)".to_owned()
        } else {
            format!("({name_attr}={})", ldap_escape(name))
        };
        let filter = and_filter(&self.cfg.group_search_filter, own);
        let (base, scope) = match dn {
            Some(dn) => (dn, Scope::Base),
            None => (
                self.cfg.group_base_dn.as_str(),
                scope(self.cfg.group_search_scope),
            ),
        };
        let mut ldap = self.connect().await?;
        let entries = self
            .search_capped(
                &mut ldap,
                base,
                scope,
                &filter,
                vec![name_attr],
                "group search",
            )
            .await;
        let _ = ldap.unbind().await;
        Ok(entries?
            .into_iter()
            .map(|e| FoundGroup {
                name: attr(&e, name_attr).first().cloned().unwrap_or_default(),
                dn: e.dn,
            })
            .collect())
    }
}

/// Whether normalized DN `dn` is `base` or below it: `base` is its tail
/// after a separating `,` that no `\\` escapes (`cn=x\\,ou=g,dc=y` is
/// one RDN `cn=x,ou=g` under `dc=y`, not an entry of `ou=g,dc=y`).
fn under(dn: &str, base: &str) -> bool {
    if base.is_empty() {
        return false;
    }
    if dn == base {
        return true;
    }
    let Some(head) = dn
        .strip_suffix(base)
        .and_then(|rest| rest.strip_suffix(','))
    else {
        return false;
    };
    let escapes = head.bytes().rev().take_while(|&b| b == b'\\').count();
    !head.is_empty() && escapes % 2 == 0
}

/// `own` and the configured filter `extra` (with or without its
/// parentheses; empty: `own` alone). `own`'s values are escaped by the
/// caller.
fn and_filter(extra: &str, own: String) -> String {
    match extra.trim() {
        "" => own,
        f if f.starts_with('(') => format!("(&{f}{own})"),
        f => format!("(&({f}){own})"),
    }
}

/// The values of attribute `name` (attribute names compare
/// case-insensitively: `memberof` finds `memberOf`).
fn attr<'a>(entry: &'a SearchEntry, name: &str) -> &'a [String] {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .unwrap_or_default()
}

fn scope(s: LdapScope) -> Scope {
    match s {
        LdapScope::Base => Scope::Base,
        LdapScope::OneLevel => Scope::OneLevel,
        LdapScope::Subtree => Scope::Subtree,
    }
}

/// TLS with the system's roots and the PEM certificates of `ldap_ca_file`.
fn client_config(cfg: &LdapConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut added = 0;
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls_pki_types::CertificateDer<'static> =
                cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn dir(filter: &str) -> Directory {
        Directory::new(&LdapConfig {
            url: "ldap://127.0.0.1:1".into(),
            starttls: false,
            verify_cert: false,
            ca_file: None,
            search_dn: String::new(),
            search_password: Secret::default(),
            base_dn: "dc=example,dc=org".into(),
            filter: filter.into(),
            uid: "uid".into(),
            scope: LdapScope::Subtree,
            timeout: std::time::Duration::from_secs(1),
            group_base_dn: String::new(),
            group_search_filter: String::new(),
            group_attribute_name: "cn".into(),
            group_search_scope: LdapScope::Subtree,
            group_admin_dn: String::new(),
            group_membership_attribute: "memberof".into(),
        })
        .unwrap()
    }

    #[test]
    fn names_are_escaped_in_the_filter() {
        let d = dir("(objectClass=person)");
        assert_eq!(d.user_filter("alice"), "(&(objectClass=person)(uid=alice))");
        // RFC 4515: * ( ) \ NUL as \XX; nothing can close the filter.
        assert_eq!(
            d.user_filter("*)(uid=*"),
            "(&(objectClass=person)(uid=\\2a\\29\\28uid=\\2a))"
        );
        assert_eq!(
            d.user_filter("a\\b\0"),
            "(&(objectClass=person)(uid=a\\5cb\\00))"
        );
        assert_eq!(dir("").user_filter("*"), "(uid=\\2a)");
        assert_eq!(
            dir("objectClass=person").user_filter("bob"),
            "(&(objectClass=person)(uid=bob))"
        );
    }

    #[test]
    fn only_dns_below_the_base_are_under_it() {
        let base = "ou=groups,dc=x";
        assert!(under("cn=devs,ou=groups,dc=x", base));
        assert!(under("ou=groups,dc=x", base));
        assert!(
            under("cn=a\\\\,ou=groups,dc=x", base),
            "an escaped backslash"
        );
        assert!(!under("cn=a\\,ou=groups,dc=x", base), "an escaped comma");
        assert!(!under("cn=devs,ou=people,dc=x", base));
        assert!(!under("cn=devs,xou=groups,dc=x", base));
        assert!(!under(",ou=groups,dc=x", base));
        assert!(!under("cn=devs,ou=groups,dc=x", ""));
        let d = dir("");
        assert!(
            !d.under_group_base("cn=devs,ou=groups,dc=x"),
            "no group base DN"
        );
    }

    #[tokio::test]
    async fn an_empty_password_is_refused_before_any_connection() {
        // Port 1 has no directory: an attempt to connect would be an error.
        let d = dir("");
        assert!(d.authenticate("alice", "").await.unwrap().is_none());
    }
}
