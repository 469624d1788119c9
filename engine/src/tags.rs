//! Tag listing and the repository catalog, paginated in byte order.

use crate::engine::Engine;
use crate::error::StorageError;
use crate::keys;
use crate::names::RepoName;

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
        let mut start = Vec::new();
        if let Some(l) = last {
            start.extend_from_slice(l.as_bytes());
            start.push(0);
        }
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
