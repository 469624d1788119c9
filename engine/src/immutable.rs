//! Tag immutability rules (Harbor's `/projects/{p}/immutabletagrules`): a
//! tag that an enabled rule of its project covers can be neither moved to
//! another manifest nor deleted, nor can the manifest it names. The check
//! runs under the write lock in the operation that would move or delete
//! the tag (`put_manifest`, `delete_tag`, `delete_manifest`), against the
//! rules as the lock sees them: nothing can slip between check and write.

use crate::accounts::AccountError;
use crate::engine::{Engine, Inner};
use crate::error::{ManifestError, StorageError};
use crate::index::Batch;
use crate::keys::{IdKind, ImmutableRuleKey, ProjectKey, WholeFamily};
use crate::names::{RepoName, Tag};
use crate::records::{self, ImmutableRuleRecord, Selector};

/// Most rules a project holds (Harbor allows 15).
pub const MAX_RULES_PER_PROJECT: usize = 15;

/// What a rule is made of: repositories and tags selected by pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub disabled: bool,
    pub repos: Selector,
    pub tags: Selector,
}

impl Inner {
    /// `Err(TagImmutable)` if an enabled rule of `repo`'s project covers
    /// `tag`. Call under the write lock.
    pub(crate) fn refuse_immutable(&self, repo: &RepoName, tag: &Tag) -> Result<(), ManifestError> {
        let project = repo.project();
        let within = repo
            .as_str()
            .strip_prefix(&format!("{project}/"))
            .unwrap_or(repo.as_str());
        for r in self.index.scan(ImmutableRuleKey::all()) {
            let (ImmutableRuleKey(id), rule) = r?;
            if rule.project == project
                && !rule.disabled
                && rule.repos.selects(within)
                && rule.tags.selects(tag.as_str())
            {
                return Err(ManifestError::TagImmutable {
                    repo: repo.to_string(),
                    tag: tag.to_string(),
                    rule: id,
                });
            }
        }
        Ok(())
    }
}

fn invalid(what: String, reason: &str) -> AccountError {
    AccountError::Invalid {
        what,
        reason: reason.to_owned(),
    }
}

fn check(spec: &RuleSpec) -> Result<(), AccountError> {
    for (what, s) in [("repository", &spec.repos), ("tag", &spec.tags)] {
        if s.pattern.is_empty() || s.pattern.len() > 256 {
            return Err(invalid(
                format!("{what} pattern {:?}", s.pattern),
                "give 1-256 characters",
            ));
        }
    }
    Ok(())
}

impl Engine {
    /// The immutability rules of `project`, by id.
    pub fn immutable_rules(
        &self,
        project: &str,
    ) -> Result<Vec<(u64, ImmutableRuleRecord)>, StorageError> {
        self.inner
            .index
            .scan(ImmutableRuleKey::all())
            .filter_map(|r| match r {
                Ok((ImmutableRuleKey(id), rec)) if rec.project == project => Some(Ok((id, rec))),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }

    /// Adds a rule to `project`; its id.
    pub fn create_immutable_rule(
        &self,
        project: &str,
        spec: RuleSpec,
    ) -> Result<u64, AccountError> {
        check(&spec)?;
        let inner = &self.inner;
        let g = inner.lock()?;
        if !inner.index.contains(&ProjectKey(project.to_owned()))? {
            return Err(AccountError::NotFound {
                what: format!("project {project}"),
            });
        }
        if self.immutable_rules(project)?.len() >= MAX_RULES_PER_PROJECT {
            return Err(AccountError::Limit {
                what: format!("immutability rules of project {project}"),
                limit: MAX_RULES_PER_PROJECT as u64,
            });
        }
        let mut batch = Batch::default();
        let id = inner.next_id(&mut batch, IdKind::ImmutableRule)?;
        let rec = ImmutableRuleRecord {
            project: project.to_owned(),
            disabled: spec.disabled,
            repos: spec.repos,
            tags: spec.tags,
            created_ms: records::now_ms(),
        };
        batch.put(&ImmutableRuleKey(id), &rec);
        inner.commit(g, batch)?;
        Ok(id)
    }

    /// Replaces rule `id` of `project`.
    pub fn update_immutable_rule(
        &self,
        project: &str,
        id: u64,
        spec: RuleSpec,
    ) -> Result<(), AccountError> {
        check(&spec)?;
        let inner = &self.inner;
        let g = inner.lock()?;
        let mut rec = self.rule_of(project, id)?;
        rec.disabled = spec.disabled;
        rec.repos = spec.repos;
        rec.tags = spec.tags;
        let mut batch = Batch::default();
        batch.put(&ImmutableRuleKey(id), &rec);
        inner.commit(g, batch)?;
        Ok(())
    }

    /// Deletes rule `id` of `project`.
    pub fn delete_immutable_rule(&self, project: &str, id: u64) -> Result<(), AccountError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        self.rule_of(project, id)?;
        let mut batch = Batch::default();
        batch.delete(&ImmutableRuleKey(id));
        inner.commit(g, batch)?;
        Ok(())
    }

    fn rule_of(&self, project: &str, id: u64) -> Result<ImmutableRuleRecord, AccountError> {
        self.inner
            .index
            .get(&ImmutableRuleKey(id))?
            .filter(|r| r.project == project)
            .ok_or_else(|| AccountError::NotFound {
                what: format!("immutability rule {id} of project {project}"),
            })
    }
}
