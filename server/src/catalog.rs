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

    /// Index reads only: runs inline.
    pub fn apply(self, app: &App) -> Result<Response<Body>, ApiError> {
        let page = if self.paging.n == 0 {
            berth_engine::Page {
                items: Vec::new(),
                more: false,
            }
        } else {
            app.engine
                .catalog(self.paging.last.as_deref(), self.paging.n)?
        };
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
