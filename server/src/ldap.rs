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
use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use crate::config::{LdapConfig, LdapScope};

/// LDAP result code of a bind with wrong credentials.
const INVALID_CREDENTIALS: u32 = 49;

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
        match self.cfg.filter.trim() {
            "" => own,
            f if f.starts_with('(') => format!("(&{f}{own})"),
            f => format!("(&({f}){own})"),
        }
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
        let filter = match self.cfg.group_search_filter.trim() {
            "" => own,
            f if f.starts_with('(') => format!("(&{f}{own})"),
            f => format!("(&({f}){own})"),
        };
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

    #[tokio::test]
    async fn an_empty_password_is_refused_before_any_connection() {
        // Port 1 has no directory: an attempt to connect would be an error.
        let d = dir("");
        assert!(d.authenticate("alice", "").await.unwrap().is_none());
    }
}
