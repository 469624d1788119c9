//! Tag listing (end-8a/b), and the pagination rules it shares with the
//! catalog.
//!
//! `n` is the page size: absent means "as many as the server gives" (at most
//! [`MAX_PAGE`], with a `Link` when more follow); `n=0` is an empty list and
//! no `Link`; anything but a non-negative integer is `400`. `last` pages
//! strictly after that name. Order is byte order ("ASCIIbetical").

use berth_engine::{Engine, Page, RepoName};
use hyper::header::LINK;
use hyper::Response;
use serde::Serialize;

use crate::errors::{ApiError, Code};
use crate::http::{hv, json, Body};
use crate::router::Query;

/// The largest page served, whatever `n` asks (a larger `n` gets this many
/// and a `Link`).
pub const MAX_PAGE: usize = 100_000;

/// `n` and `last` of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// Items to return (already capped at [`MAX_PAGE`]).
    pub n: usize,
    pub last: Option<String>,
}

impl Paging {
    pub fn parse(query: Query<'_>) -> Result<Paging, ApiError> {
        let n = match query.get("n") {
            None => MAX_PAGE,
            Some(s) => {
                let ok = !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
                let n: Option<u64> = if ok { s.parse().ok() } else { None };
                match n {
                    Some(n) => n.min(MAX_PAGE as u64) as usize,
                    None => {
                        return Err(ApiError::new(
                            Code::PaginationInvalid,
                            format!("n must be a non-negative integer, not {s:?}"),
                        ))
                    }
                }
            }
        };
        let last = query
            .get("last")
            .map(|l| l.into_owned())
            .filter(|l| !l.is_empty());
        Ok(Paging { n, last })
    }

    /// The `Link` to the page after `page`, if there is one.
    pub fn next_link(&self, base: &str, page: &Page) -> Option<String> {
        if !page.more || self.n == 0 {
            return None;
        }
        let last = page.items.last()?;
        Some(format!("<{base}?last={last}&n={}>; rel=\"next\"", self.n))
    }
}

/// `GET /v2/<name>/tags/list[?n=<int>&last=<tag>]` →
/// `{"name":"<name>","tags":[…]}`; `404 NAME_UNKNOWN` for a repository
/// that does not exist.
#[derive(Debug)]
pub struct ListTags {
    pub repo: RepoName,
    pub paging: Paging,
}

#[derive(Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: &'a [String],
}

impl ListTags {
    pub fn parse(name: &str, query: Query<'_>) -> Result<ListTags, ApiError> {
        Ok(ListTags {
            repo: RepoName::parse(name)?,
            paging: Paging::parse(query)?,
        })
    }

    /// An index scan of at most `n` (≤ [`MAX_PAGE`]) keys; runs on the
    /// blocking pool.
    pub fn apply(self, e: &Engine) -> Result<Response<Body>, ApiError> {
        if !e.repo_exists(&self.repo)? {
            return Err(ApiError::new(
                Code::NameUnknown,
                format!("repository {} is not known", self.repo),
            ));
        }
        let page = if self.paging.n == 0 {
            Page {
                items: Vec::new(),
                more: false,
            }
        } else {
            e.list_tags(&self.repo, self.paging.last.as_deref(), self.paging.n)?
        };
        let body = serde_json::to_vec(&TagList {
            name: self.repo.as_str(),
            tags: &page.items,
        })
        .map_err(ApiError::internal)?;
        let mut res = json(body, "application/json");
        let base = format!("/v2/{}/tags/list", self.repo);
        if let Some(link) = self.paging.next_link(&base, &page) {
            res.headers_mut().insert(LINK, hv(&link));
        }
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging() {
        assert_eq!(
            Paging::parse(Query("")).unwrap(),
            Paging {
                n: MAX_PAGE,
                last: None
            }
        );
        assert_eq!(
            Paging::parse(Query("n=2&last=b")).unwrap(),
            Paging {
                n: 2,
                last: Some("b".into())
            }
        );
        assert_eq!(Paging::parse(Query("n=99999999")).unwrap().n, MAX_PAGE);
        for bad in ["n=-1", "n=x", "n=", "n=1.5", "n=99999999999999999999999"] {
            let e = Paging::parse(Query(bad)).unwrap_err();
            assert_eq!(e.code, Code::PaginationInvalid, "{bad}");
        }
        let p = Paging { n: 2, last: None };
        let page = Page {
            items: vec!["a".into(), "b".into()],
            more: true,
        };
        assert_eq!(
            p.next_link("/v2/r/tags/list", &page).as_deref(),
            Some("</v2/r/tags/list?last=b&n=2>; rel=\"next\"")
        );
        let done = Page {
            items: vec!["a".into()],
            more: false,
        };
        assert_eq!(p.next_link("/x", &done), None);
    }
}
