//! Tag immutability rules (Harbor's `/projects/{p}/immutabletagrules`): a
//! tag that an enabled rule of its project covers can be neither moved to
//! another manifest nor deleted, nor can the manifest it names. The check
//! runs under the write lock in the operation that would move or delete
//! the tag (`put_manifest`, `delete_tag`, `delete_manifest`,
//! `delete_charts`, `delete_repository`), against the rules as the lock
//! sees them: nothing can slip between check and write.
//!
//! A project's rules are one record (`immutable_rules`, by project), so a
//! tag put reads them with the reads it makes as it takes the lock: in
//! cluster mode a tag move stays two database calls.

use crate::accounts::AccountError;
use crate::engine::{Engine, Inner};
use crate::error::{ManifestError, StorageError};
use crate::index::Batch;
use crate::keys::{IdKind, ImmutableRulesKey, ProjectKey};
use crate::names::{RepoName, Tag};
use crate::records::{self, ImmutableRuleRecord, ImmutableRulesRecord, Selector};

/// Most rules a project holds (Harbor allows 15).
pub const MAX_RULES_PER_PROJECT: usize = 15;

/// What a rule is made of: repositories and tags selected by pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub disabled: bool,
    pub repos: Selector,
    pub tags: Selector,
}

/// The rules key of `repo`'s project.
pub(crate) fn rules_key(repo: &RepoName) -> ImmutableRulesKey {
    ImmutableRulesKey(repo.project().to_owned())
}

/// `Err(TagImmutable)` if an enabled rule of `rules` (those of `repo`'s
/// project) covers `tag`.
pub(crate) fn refuse(
    rules: Option<&ImmutableRulesRecord>,
    repo: &RepoName,
    tag: &Tag,
) -> Result<(), ManifestError> {
    let Some(rules) = rules else { return Ok(()) };
    let within = repo
        .as_str()
        .strip_prefix(&format!("{}/", repo.project()))
        .unwrap_or(repo.as_str());
    for (id, rule) in &rules.rules {
        if !rule.disabled && rule.repos.selects(within) && rule.tags.selects(tag.as_str()) {
            return Err(ManifestError::TagImmutable {
                repo: repo.to_string(),
                tag: tag.to_string(),
                rule: *id,
            });
        }
    }
    Ok(())
}

impl Inner {
    /// [`refuse`] with `repo`'s project's rules as stored. Call under the
    /// write lock.
    pub(crate) fn refuse_immutable(&self, repo: &RepoName, tag: &Tag) -> Result<(), ManifestError> {
        refuse(self.index.get(&rules_key(repo))?.as_ref(), repo, tag)
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

fn rule_missing(project: &str, id: u64) -> AccountError {
    AccountError::NotFound {
        what: format!("immutability rule {id} of project {project}"),
    }
}

impl Engine {
    /// The immutability rules of `project`, by id.
    pub fn immutable_rules(
        &self,
        project: &str,
    ) -> Result<Vec<(u64, ImmutableRuleRecord)>, StorageError> {
        Ok(self
            .inner
            .index
            .get(&ImmutableRulesKey(project.to_owned()))?
            .map(|r| r.rules.into_iter().collect())
            .unwrap_or_default())
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
        let key = ImmutableRulesKey(project.to_owned());
        let mut rec = inner.index.get(&key)?.unwrap_or_default();
        if rec.rules.len() >= MAX_RULES_PER_PROJECT {
            return Err(AccountError::Limit {
                what: format!("immutability rules of project {project}"),
                limit: MAX_RULES_PER_PROJECT as u64,
            });
        }
        let mut batch = Batch::default();
        let id = inner.next_id(&mut batch, IdKind::ImmutableRule)?;
        rec.rules.insert(
            id,
            ImmutableRuleRecord {
                disabled: spec.disabled,
                repos: spec.repos,
                tags: spec.tags,
                created_ms: records::now_ms(),
            },
        );
        batch.put(&key, &rec);
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
        let key = ImmutableRulesKey(project.to_owned());
        let missing = || rule_missing(project, id).to_string();
        self.inner.change(&key, missing, |rec| {
            let rule = rec
                .rules
                .get_mut(&id)
                .ok_or_else(|| rule_missing(project, id))?;
            rule.disabled = spec.disabled;
            rule.repos = spec.repos;
            rule.tags = spec.tags;
            Ok(())
        })
    }

    /// Deletes rule `id` of `project`.
    pub fn delete_immutable_rule(&self, project: &str, id: u64) -> Result<(), AccountError> {
        let key = ImmutableRulesKey(project.to_owned());
        let missing = || rule_missing(project, id).to_string();
        self.inner.change(&key, missing, |rec| {
            rec.rules
                .remove(&id)
                .map(drop)
                .ok_or_else(|| rule_missing(project, id))
        })
    }
}
