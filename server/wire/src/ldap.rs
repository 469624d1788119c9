//! The request bodies of Harbor's LDAP and user group endpoints
//! (`/api/v2.0/ldap/…`, `/api/v2.0/usergroups`; the server's
//! `ldap_api.rs`). Each is read with `serde_json::from_slice`; a body
//! that does not deserialize is `400`. Unknown fields are ignored, as
//! Harbor ignores them; what a handler computes from the values is
//! checked there.

use serde::Deserialize;

/// `POST /api/v2.0/ldap/ping` (Harbor's `LdapConf`): every field is
/// optional, and one not given is the running configuration's.
/// No `Debug`: it may hold a password.
///
/// ```text
/// {"ldap_url":"ldap://dir:389","ldap_search_dn":"cn=search,dc=x",
///  "ldap_search_password":"…","ldap_base_dn":"ou=people,dc=x",
///  "ldap_filter":"(objectClass=person)","ldap_uid":"uid","ldap_scope":2,
///  "ldap_connection_timeout":5,"ldap_verify_cert":true}
/// ```
#[derive(Default, Deserialize)]
pub struct LdapConfReq {
    #[serde(default)]
    pub ldap_url: Option<String>,
    #[serde(default)]
    pub ldap_search_dn: Option<String>,
    #[serde(default)]
    pub ldap_search_password: Option<String>,
    #[serde(default)]
    pub ldap_base_dn: Option<String>,
    #[serde(default)]
    pub ldap_filter: Option<String>,
    #[serde(default)]
    pub ldap_uid: Option<String>,
    /// 0 base, 1 one level, 2 subtree.
    #[serde(default)]
    pub ldap_scope: Option<i64>,
    /// Seconds.
    #[serde(default)]
    pub ldap_connection_timeout: Option<i64>,
    #[serde(default)]
    pub ldap_verify_cert: Option<bool>,
}

/// `POST /api/v2.0/ldap/users/import` (Harbor's `LdapImportUsers`):
/// `{"ldap_uid_list":["alice","bob"]}`.
#[derive(Debug, Deserialize)]
pub struct LdapImportReq {
    pub ldap_uid_list: Vec<String>,
}

/// `POST /api/v2.0/usergroups`, `PUT /api/v2.0/usergroups/{id}`
/// (Harbor's `UserGroup`): `{"group_name":"devs","group_type":1,
/// "ldap_group_dn":"cn=devs,ou=groups,dc=example,dc=org"}`. `id` is
/// accepted and not used.
#[derive(Debug, Default, Deserialize)]
pub struct UserGroupReq {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub group_name: Option<String>,
    #[serde(default)]
    pub group_type: Option<i64>,
    #[serde(default)]
    pub ldap_group_dn: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_as_harbor_sends_them() {
        let c: LdapConfReq =
            serde_json::from_slice(br#"{"ldap_url":"ldap://x","ldap_scope":1,"other":0}"#).unwrap();
        assert_eq!(c.ldap_url.as_deref(), Some("ldap://x"));
        assert_eq!(c.ldap_scope, Some(1));
        assert!(c.ldap_search_password.is_none());
        let i: LdapImportReq = serde_json::from_slice(br#"{"ldap_uid_list":["a"]}"#).unwrap();
        assert_eq!(i.ldap_uid_list, ["a"]);
        assert!(serde_json::from_slice::<LdapImportReq>(b"{}").is_err());
        assert!(serde_json::from_slice::<LdapImportReq>(br#"{"ldap_uid_list":"a"}"#).is_err());
        let g: UserGroupReq = serde_json::from_slice(
            br#"{"group_name":"devs","group_type":1,"ldap_group_dn":"cn=d"}"#,
        )
        .unwrap();
        assert_eq!(g.group_type, Some(1));
        assert!(serde_json::from_slice::<UserGroupReq>(br#"{"group_type":"x"}"#).is_err());
    }
}
