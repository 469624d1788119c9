//! Tag listing and the repository catalog, paginated in byte order.

use crate::engine::Engine;
use crate::error::StorageError;
use crate::keys::{RepoKey, TagKey, WholeFamily};
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
        self.inner.index.contains(&RepoKey(repo.clone()))
    }

    /// Tags of `repo` in lexical (byte) order, strictly after `last`, at most `n`.
    pub fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, StorageError> {
        let scan = match last {
            Some(l) => TagKey::of_repo_after(repo, l),
            None => TagKey::of_repo(repo),
        };
        let keys = self.inner.index.scan_keys(scan);
        page(keys.map(|r| r.map(|TagKey(_, tag)| tag.into_string())), n)
    }

    /// Repository names in lexical order, strictly after `last`, at most `n`.
    pub fn catalog(&self, last: Option<&str>, n: usize) -> Result<Page, StorageError> {
        let from = last.map_or(CatalogFrom::Start, |l| CatalogFrom::After(l.to_owned()));
        self.catalog_from(&from, n)
    }

    /// Repository names in lexical order from `from`, at most `n`: one
    /// bounded index read (at most `n + 1` keys).
    pub fn catalog_from(&self, from: &CatalogFrom, n: usize) -> Result<Page, StorageError> {
        let scan = match from {
            CatalogFrom::Start => RepoKey::all(),
            CatalogFrom::After(l) => RepoKey::after(l),
            CatalogFrom::AfterProject(p) => RepoKey::after_project(p),
        };
        let keys = self.inner.index.scan_keys(scan);
        page(keys.map(|r| r.map(|RepoKey(repo)| repo.into_string())), n)
    }
}

/// Up to `n` names from `names`, and whether more follow (at most `n + 1`
/// read).
fn page(
    names: impl Iterator<Item = Result<String, StorageError>>,
    n: usize,
) -> Result<Page, StorageError> {
    let mut items = Vec::new();
    for name in names {
        if items.len() == n {
            return Ok(Page { items, more: true });
        }
        items.push(name?);
    }
    Ok(Page { items, more: false })
}
