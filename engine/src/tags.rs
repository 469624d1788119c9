//! Tag listing and the repository catalog, paginated in byte order.

use crate::engine::Engine;
use crate::error::StorageError;
use crate::keys;
use crate::names::RepoName;

/// Where a catalog read starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogFrom {
    /// The first repository.
    Start,
    /// Strictly after this repository name.
    After(String),
    /// After every repository under `project/` (a reader that may not see
    /// a project skips all of it with one seek).
    AfterProject(String),
}

/// One page of a listing: up to `n` names after `last`, and whether more follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

impl Engine {
    /// True if `repo` has ever held a blob link or manifest.
    pub fn repo_exists(&self, repo: &RepoName) -> Result<bool, StorageError> {
        Ok(self
            .inner
            .get_raw(keys::CF_REPOS, &keys::repo_key(repo))?
            .is_some())
    }

    /// Tags of `repo` in lexical (byte) order, strictly after `last`, at most `n`.
    pub fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, StorageError> {
        let prefix = keys::repo_prefix(repo);
        let mut start = prefix.clone();
        if let Some(l) = last {
            start.extend_from_slice(l.as_bytes());
            start.push(0); // strictly after `last`
        }
        self.page(keys::CF_TAGS, &prefix, &start, n)
    }

    /// Repository names in lexical order, strictly after `last`, at most `n`.
    pub fn catalog(&self, last: Option<&str>, n: usize) -> Result<Page, StorageError> {
        let from = last.map_or(CatalogFrom::Start, |l| CatalogFrom::After(l.to_owned()));
        self.catalog_from(&from, n)
    }

    /// Repository names in lexical order from `from`, at most `n`: one
    /// bounded index read (at most `n + 1` keys).
    pub fn catalog_from(&self, from: &CatalogFrom, n: usize) -> Result<Page, StorageError> {
        let start = match from {
            CatalogFrom::Start => Vec::new(),
            CatalogFrom::After(l) => {
                let mut s = l.as_bytes().to_vec();
                s.push(0); // strictly after `l`
                s
            }
            CatalogFrom::AfterProject(p) => {
                // `p0` is the first key after every `p/…` ('0' follows '/').
                let mut s = p.as_bytes().to_vec();
                s.push(b'/' + 1);
                s
            }
        };
        self.page(keys::CF_REPOS, b"", &start, n)
    }

    fn page(
        &self,
        cf: &'static str,
        prefix: &[u8],
        start: &[u8],
        n: usize,
    ) -> Result<Page, StorageError> {
        let mut items = Vec::new();
        for r in self.inner.scan(cf, prefix, start) {
            let (k, _) = r?;
            if items.len() == n {
                return Ok(Page { items, more: true });
            }
            if let Some(s) = keys::suffix(&k, prefix) {
                items.push(s.to_owned());
            }
        }
        Ok(Page { items, more: false })
    }
}
