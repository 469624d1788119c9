//! The Docker token service's inputs (`/service/token`): the form body of
//! a `POST` (`application/x-www-form-urlencoded`) and the `scope` grammar,
//! `<type>[(<class>)]:<name>:<action>[,<action>…]`
//! (e.g. `repository:proj/app:pull,push`, `registry:catalog:*`). What a
//! scope grants is the server's `token_service.rs`.

use crate::path::percent_decode;

/// An `application/x-www-form-urlencoded` body (`+` is a space).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Parses a form body; pairs without `=` have an empty value.
    pub fn parse(s: &str) -> Form {
        Form(
            s.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    let dec = |x: &str| percent_decode(&x.replace('+', " ")).into_owned();
                    (dec(k), dec(v))
                })
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.all(key).next()
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One requested scope, as sent: `kind` without its `(class)`, the `name`
/// (everything between the first and the last `:`; names with `:` are
/// refused later by `RepoName::parse`), and the comma-separated `actions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub actions: &'a str,
}

impl<'a> Scope<'a> {
    /// Splits a scope; `None` without two `:`.
    pub fn parse(scope: &'a str) -> Option<Scope<'a>> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // `repository(plugin)` is Docker's way of naming a resource class.
        let kind = kind.split('(').next().unwrap_or(kind);
        Some(Scope {
            kind,
            name,
            actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let f = Form::parse("grant_type=password&scope=repository%3Aa%3Apull+repository:b:push&x");
        assert_eq!(f.get("grant_type"), Some("password"));
        assert_eq!(f.get("scope"), Some("repository:a:pull repository:b:push"));
        assert_eq!(f.get("x"), Some(""));
        assert_eq!(f.get("y"), None);
    }

    #[test]
    fn scopes() {
        let s = Scope::parse("repository(plugin):proj/app:pull,push").unwrap();
        assert_eq!(
            (s.kind, s.name, s.actions),
            ("repository", "proj/app", "pull,push")
        );
        let s = Scope::parse("repository:host:5000/app:pull").unwrap();
        assert_eq!(s.name, "host:5000/app");
        assert_eq!(
            Scope::parse("registry:catalog:*").map(|s| s.name),
            Some("catalog")
        );
        assert_eq!(Scope::parse("repository:app"), None);
        assert_eq!(Scope::parse(""), None);
    }
}
