//! The repository catalog: `GET /v2/_catalog`.
//!
//! Filtered by permission and bounded per request: a caller who may read
//! one repository among 100,000 does not make one request walk them all.
//! A request reads at most `n + 1` visible names plus [`SCAN_BUDGET`] index
//! keys it may not show, skipping a project it may not read with one seek.
//! If the budget runs out first, the page holds what was found (possibly
//! nothing) and its `Link` carries the position as a sealed `cursor` (see
//! `cursor.rs`), because that position is a name the caller may not see.
//! The work runs on the blocking pool.

use std::collections::HashMap;
use std::fmt::Write as _;

use berth_engine::{CatalogFrom, Engine, Page};
use hyper::header::LINK;
use hyper::Response;
use serde::Serialize;

use crate::cursor::Cursors;
use crate::errors::{ApiError, Code};
use crate::http::{hv, json, Body};
use crate::router::Query;
use crate::tags::Paging;

/// Index keys a request may read beyond the names it returns (names it may
/// not show, and the look-ahead of each index read).
pub const SCAN_BUDGET: usize = 10_000;

/// Names per index read while names are visible; right after skipping a
/// project, reads start small (the next project may be hidden too).
const BATCH: usize = 256;
const BATCH_AFTER_SKIP: usize = 4;

/// The associated data of catalog cursors.
const LISTING: &str = "catalog";

/// `GET /v2/_catalog[?n=<int>&last=<repo>][&cursor=<sealed>]` →
/// `{"repositories":[…]}` in byte order, with a `Link` when more follow
/// (paging as for tags; `cursor` only as a `Link` handed it out).
#[derive(Debug)]
pub struct ListCatalog {
    pub paging: Paging,
    /// Where to resume, from a sealed cursor (takes precedence over `last`).
    pub from: Option<CatalogFrom>,
}

#[derive(Serialize)]
struct Catalog<'a> {
    repositories: &'a [String],
}

/// What one request found.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    items: Vec<String>,
    /// Where the next page starts, if there is one.
    next: Option<Next>,
}

#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// After the last name of the page (a name the caller sees).
    AfterLast,
    /// The scan budget ran out at a position that may be hidden.
    Sealed(CatalogFrom),
}

impl ListCatalog {
    pub fn parse(query: Query<'_>, cursors: &Cursors) -> Result<ListCatalog, ApiError> {
        let from = match query.get("cursor").filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(
                cursors
                    .open(LISTING, &c)
                    .and_then(|p| decode_position(&p))
                    .ok_or_else(|| {
                        ApiError::new(
                            Code::PaginationInvalid,
                            "cursor is not one this registry handed out",
                        )
                    })?,
            ),
        };
        Ok(ListCatalog {
            paging: Paging::parse(query)?,
            from,
        })
    }

    /// Runs on a blocking thread. `readable` says whether the caller may
    /// see a project's repositories (always true with auth off).
    pub fn apply(
        self,
        engine: &Engine,
        cursors: &Cursors,
        readable: impl FnMut(&str) -> Result<bool, ApiError>,
    ) -> Result<Response<Body>, ApiError> {
        let from = match (&self.from, &self.paging.last) {
            (Some(f), _) => f.clone(),
            (None, Some(l)) => CatalogFrom::After(l.clone()),
            (None, None) => CatalogFrom::Start,
        };
        let found = scan(engine, from, self.paging.n, SCAN_BUDGET, readable)?;
        let body = serde_json::to_vec(&Catalog {
            repositories: &found.items,
        })
        .map_err(ApiError::internal)?;
        let mut res = json(body, "application/json");
        let link = match found.next {
            None => None,
            Some(Next::AfterLast) => self.paging.next_link(
                "/v2/_catalog",
                &Page {
                    items: found.items,
                    more: true,
                },
            ),
            Some(Next::Sealed(pos)) => {
                let cursor = cursors.seal(LISTING, &encode_position(&pos));
                let mut link = format!("</v2/_catalog?n={}", self.paging.n);
                if let Some(last) = found.items.last() {
                    let _ = write!(link, "&last={last}");
                }
                let _ = write!(link, "&cursor={cursor}>; rel=\"next\"");
                Some(link)
            }
        };
        if let Some(link) = link {
            res.headers_mut().insert(LINK, hv(&link));
        }
        Ok(res)
    }
}

/// Up to `n` names the caller may see, from `from`, reading at most
/// `n + 1 + budget` index keys.
fn scan(
    engine: &Engine,
    mut from: CatalogFrom,
    n: usize,
    budget: usize,
    mut readable: impl FnMut(&str) -> Result<bool, ApiError>,
) -> Result<Found, ApiError> {
    let mut items = Vec::new();
    if n == 0 {
        return Ok(Found { items, next: None });
    }
    // Per-project answers of this request.
    let mut seen: HashMap<String, bool> = HashMap::new();
    // Keys this request may still read: the page, one to say "more", and
    // the budget for everything it does not show.
    let mut left = n.saturating_add(1).saturating_add(budget);
    let mut batch = BATCH;
    loop {
        if left == 0 {
            return Ok(Found {
                items,
                next: Some(Next::Sealed(from)),
            });
        }
        let page = engine.catalog_from(&from, batch.min(left))?;
        left = left.saturating_sub(page.items.len().max(1));
        batch = BATCH;
        for name in page.items {
            let project = name.split('/').next().unwrap_or(&name).to_owned();
            let ok = match seen.get(&project) {
                Some(&ok) => ok,
                None => {
                    let ok = readable(&project)?;
                    seen.insert(project.clone(), ok);
                    ok
                }
            };
            if ok {
                if items.len() == n {
                    // A visible name after a full page: there is more.
                    return Ok(Found {
                        items,
                        next: Some(Next::AfterLast),
                    });
                }
                from = CatalogFrom::After(name.clone());
                items.push(name);
            } else if name.contains('/') {
                // Skip the rest of the project with one seek.
                from = CatalogFrom::AfterProject(project);
                batch = BATCH_AFTER_SKIP;
                break;
            } else {
                from = CatalogFrom::After(name);
            }
        }
        if !page.more && batch == BATCH {
            return Ok(Found { items, next: None });
        }
    }
}

fn encode_position(p: &CatalogFrom) -> String {
    match p {
        CatalogFrom::Start => "s:".to_owned(),
        CatalogFrom::After(name) => format!("a:{name}"),
        CatalogFrom::AfterProject(project) => format!("p:{project}"),
    }
}

fn decode_position(s: &str) -> Option<CatalogFrom> {
    let (kind, rest) = s.split_once(':')?;
    match kind {
        "s" => Some(CatalogFrom::Start),
        "a" => Some(CatalogFrom::After(rest.to_owned())),
        "p" => Some(CatalogFrom::AfterProject(rest.to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_engine::{Algorithm, Digest, EngineConfig, RepoName};

    /// Pages through the whole catalog as a caller who may read only
    /// `visible` projects, with a small budget, the way a client follows
    /// `Link`s; returns the names and the number of requests.
    fn follow(
        e: &Engine,
        n: usize,
        budget: usize,
        visible: &[&str],
        reads: &mut Vec<usize>,
    ) -> (Vec<String>, usize) {
        let mut names = Vec::new();
        let mut from = CatalogFrom::Start;
        for requests in 1.. {
            let mut asked = 0;
            let found = scan(e, from.clone(), n, budget, |p| {
                asked += 1;
                Ok(visible.contains(&p))
            })
            .expect("scan");
            reads.push(asked);
            assert!(found.items.len() <= n);
            names.extend(found.items.iter().cloned());
            match found.next {
                None => return (names, requests),
                Some(Next::AfterLast) => {
                    from = CatalogFrom::After(found.items.last().expect("a full page").clone())
                }
                Some(Next::Sealed(pos)) => {
                    // What the cursor carries round-trips.
                    assert_eq!(decode_position(&encode_position(&pos)), Some(pos.clone()));
                    from = pos;
                }
            }
        }
        unreachable!()
    }

    #[test]
    fn pages_are_bounded_filtered_and_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Engine::open(EngineConfig::new(dir.path())).expect("open");
        let mut all = Vec::new();
        // 300 hidden repositories in 60 projects around a few visible ones,
        // plus single-component names next to project prefixes.
        for p in 0..60 {
            for r in 0..5 {
                all.push(format!("hidden{p:02}/r{r}"));
            }
        }
        for name in [
            "mine/a", "mine/b/c", "mine-x/z", "mine", "zz/last", "hidden30",
        ] {
            all.push(name.to_owned());
        }
        for (i, name) in all.iter().enumerate() {
            let data = format!("blob {i}");
            let d = Digest::of(Algorithm::Sha256, data.as_bytes());
            e.put_blob(&RepoName::parse(name).expect("name"), &d, data.as_bytes())
                .expect("put");
        }
        let visible = ["mine", "zz", "mine-x"];
        let mut expected: Vec<String> = all
            .iter()
            .filter(|n| visible.contains(&n.split('/').next().unwrap_or(n)))
            .cloned()
            .collect();
        expected.sort();
        for n in [1, 2, 100] {
            let mut reads = Vec::new();
            let (names, requests) = follow(&e, n, 20, &visible, &mut reads);
            assert_eq!(names, expected, "n={n}");
            // Each hidden project costs one check, not one per repository.
            assert!(
                reads.iter().sum::<usize>() <= 61 + requests * 3,
                "n={n}: {reads:?}"
            );
        }
        // With a budget below the hidden names, pages come back short (even
        // empty) but the walk still ends with every visible name.
        let mut reads = Vec::new();
        let (names, requests) = follow(&e, 1, 3, &visible, &mut reads);
        assert_eq!(names, expected);
        assert!(
            requests > 20,
            "the budget split the walk: {requests} requests"
        );
        // A caller who sees everything gets full pages and `AfterLast`.
        let found = scan(&e, CatalogFrom::Start, 10, 0, |_| Ok(true)).expect("scan");
        assert_eq!(found.items.len(), 10);
        assert_eq!(found.next, Some(Next::AfterLast));
        let found = scan(&e, CatalogFrom::Start, 0, 10, |_| Ok(true)).expect("scan");
        assert_eq!(
            found,
            Found {
                items: Vec::new(),
                next: None
            }
        );
    }
}
