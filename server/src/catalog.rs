//! The repository catalog: `GET /v2/_catalog`.

use hyper::header::LINK;
use hyper::Response;
use serde::Serialize;

use crate::errors::ApiError;
use crate::http::{hv, json, App, Body};
use crate::router::Query;
use crate::tags::Paging;

/// `GET /v2/_catalog[?n=<int>&last=<repo>]` → `{"repositories":[…]}` in
/// byte order, with a `Link` when more follow (paging as for tags).
#[derive(Debug)]
pub struct ListCatalog {
    pub paging: Paging,
}

#[derive(Serialize)]
struct Catalog<'a> {
    repositories: &'a [String],
}

impl ListCatalog {
    pub fn parse(query: Query<'_>) -> Result<ListCatalog, ApiError> {
        Ok(ListCatalog {
            paging: Paging::parse(query)?,
        })
    }

    /// Index reads only: runs inline. `visible` says whether the caller
    /// may see a repository (always true with auth off); pages are filled
    /// with visible names only, so `n` and `Link` stay exact.
    pub fn apply(
        self,
        app: &App,
        mut visible: impl FnMut(&str) -> Result<bool, ApiError>,
    ) -> Result<Response<Body>, ApiError> {
        let n = self.paging.n;
        let mut page = berth_engine::Page {
            items: Vec::new(),
            more: false,
        };
        let mut last = self.paging.last.clone();
        // Collect up to n + 1 visible names: the extra one only says "more".
        while n > 0 && page.items.len() <= n {
            let batch = app.engine.catalog(last.as_deref(), n.max(100))?;
            for repo in &batch.items {
                if page.items.len() > n {
                    break;
                }
                if visible(repo)? {
                    page.items.push(repo.clone());
                }
            }
            last = batch.items.last().cloned();
            if !batch.more || last.is_none() {
                break;
            }
        }
        if page.items.len() > n {
            page.items.truncate(n);
            page.more = true;
        }
        let body = serde_json::to_vec(&Catalog {
            repositories: &page.items,
        })
        .map_err(ApiError::internal)?;
        let mut res = json(body, "application/json");
        if let Some(link) = self.paging.next_link("/v2/_catalog", &page) {
            res.headers_mut().insert(LINK, hv(&link));
        }
        Ok(res)
    }
}
