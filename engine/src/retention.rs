//! Tag retention policies (Harbor's `/retentions`): per project, rules
//! that say which artifacts to keep; a run deletes the rest.
//!
//! Harbor's algorithm `or`, at the artifact level:
//! - a repository is in a run if an enabled rule's repository selector
//!   selects it; repositories no enabled rule selects are not touched;
//! - its candidates are its top-level artifacts (index children and
//!   accessories go with the artifact that holds them);
//! - each enabled rule that selects the repository picks the candidates
//!   with a tag its tag selector selects (and the untagged ones, if the
//!   rule says so), then keeps some of them by its template: the latest N
//!   pushed or pulled, those pushed or pulled within N days, or all;
//! - a candidate no rule keeps is deleted, with all its tags.
//!
//! A run plans from one reading of the index ([`Engine::plan_retention`])
//! and then deletes each artifact with a precondition checked under the
//! write lock (`DeleteIf::TopLevelWithTags`): an artifact that was tagged,
//! re-tagged or put into an index after the plan was made is kept, and
//! so is one an immutability rule protects. A dry run plans only.
//!
//! Runs are records (`retention_runs`), written when a run starts and when
//! it ends. A running node renews its run's lease
//! ([`Engine::beat_retention_run`]); a run a crash interrupted is marked
//! `Failed` when the server starts (one node: [`Engine::abandon_retention_runs`])
//! or, once its lease ran out, by the next run of its policy (any node).
//! The last [`KEEP_RUNS_PER_POLICY`] runs of each policy are kept.

use std::collections::HashMap;

use crate::accounts::AccountError;
use crate::digest::Digest;
use crate::engine::Engine;
use crate::error::{ManifestError, StorageError};
use crate::index::Batch;
use crate::keys::{IdKind, ProjectKey, RepoKey, RetentionPolicyKey, RetentionRunKey, WholeFamily};
use crate::manifests::DeleteIf;
use crate::names::RepoName;
use crate::records::{
    self, RetentionItemRecord, RetentionPolicyRecord, RetentionRuleRecord, RetentionRunRecord,
    RetentionTaskRecord,
};

/// Most rules a policy holds (Harbor allows 15).
pub const MAX_RULES: usize = 15;

/// Runs kept per policy; older ones are deleted when a run ends.
pub const KEEP_RUNS_PER_POLICY: usize = 50;

/// The rule templates, by Harbor's names, and whether each takes a
/// parameter.
pub const TEMPLATES: [(&str, bool); 5] = [
    ("latestPushedK", true),
    ("latestPulledN", true),
    ("nDaysSinceLastPush", true),
    ("nDaysSinceLastPull", true),
    ("always", false),
];

/// Why a planned deletion was not made though nothing refused it.
const CHANGED: &str = "it changed after the run looked (tags, index or gone)";

/// How long a run's beat vouches for it ([`Engine::beat_retention_run`]).
pub const LEASE_MS: u64 = 60_000;

/// Why a run was marked failed by someone other than its runner.
const ABANDONED: &str = "the server running it stopped during the run; run it again";

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// What a run does with an artifact.
pub const RETAIN: &str = "RETAIN";
/// Deleted (or, on a dry run, would be).
pub const DELETE: &str = "DEL";
/// To be deleted, but kept: the delete was refused or the artifact changed.
pub const KEPT: &str = "KEPT";

fn invalid(what: String, reason: &str) -> AccountError {
    AccountError::Invalid {
        what,
        reason: reason.to_owned(),
    }
}

/// Checks a policy's rules as given.
pub fn check(rules: &[RetentionRuleRecord]) -> Result<(), AccountError> {
    if rules.len() > MAX_RULES {
        return Err(AccountError::Limit {
            what: "rules of a retention policy".into(),
            limit: MAX_RULES as u64,
        });
    }
    for r in rules {
        let Some((_, takes)) = TEMPLATES.iter().find(|(t, _)| *t == r.template) else {
            return Err(invalid(
                format!("retention template {:?}", r.template),
                "use latestPushedK, latestPulledN, nDaysSinceLastPush, nDaysSinceLastPull or always",
            ));
        };
        if *takes && !(1..=100_000).contains(&r.n) {
            return Err(invalid(
                format!("parameter {} of {}", r.n, r.template),
                "give a whole number from 1 to 100000",
            ));
        }
        for (what, s) in [("repository", &r.repos), ("tag", &r.tags)] {
            if s.pattern.is_empty() || s.pattern.len() > 256 {
                return Err(invalid(
                    format!("{what} pattern {:?}", s.pattern),
                    "give 1-256 characters",
                ));
            }
        }
    }
    Ok(())
}

/// One top-level artifact as a rule sees it.
#[derive(Clone, Debug)]
struct Candidate {
    digest: Digest,
    tags: Vec<String>,
    push_ms: u64,
    pull_ms: u64,
}

/// The indexes (into `cands`) of the candidates `rule` keeps.
fn kept_by(rule: &RetentionRuleRecord, cands: &[Candidate], now_ms: u64) -> Vec<usize> {
    let mut picked: Vec<usize> = (0..cands.len())
        .filter(|&i| {
            let c = &cands[i];
            if c.tags.is_empty() {
                rule.untagged
            } else {
                c.tags.iter().any(|t| rule.tags.selects(t))
            }
        })
        .collect();
    let since = now_ms.saturating_sub(rule.n.saturating_mul(DAY_MS));
    match rule.template.as_str() {
        "latestPushedK" => {
            picked.sort_by_key(|&i| std::cmp::Reverse((cands[i].push_ms, cands[i].pull_ms)));
            picked.truncate(rule.n as usize);
        }
        "latestPulledN" => {
            picked.sort_by_key(|&i| std::cmp::Reverse((cands[i].pull_ms, cands[i].push_ms)));
            picked.truncate(rule.n as usize);
        }
        "nDaysSinceLastPush" => picked.retain(|&i| cands[i].push_ms >= since),
        "nDaysSinceLastPull" => picked.retain(|&i| cands[i].pull_ms >= since),
        "always" => {}
        // `check` admits no other template; a stored unknown one keeps
        // everything it picks rather than deleting by a rule not understood.
        _ => {}
    }
    picked
}

/// What a run would do: per repository in its scope, in name order.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub tasks: Vec<RetentionTaskRecord>,
}

impl Plan {
    /// Artifacts the plan deletes.
    pub fn deletions(&self) -> usize {
        self.tasks
            .iter()
            .flat_map(|t| &t.items)
            .filter(|i| i.action == DELETE)
            .count()
    }
}

impl Engine {
    /// The plan of `rules` for `project` at `now_ms`: what each repository
    /// keeps and deletes (see the module docs). Reads only.
    pub fn plan_retention(
        &self,
        project: &str,
        rules: &[RetentionRuleRecord],
        now_ms: u64,
    ) -> Result<Plan, StorageError> {
        let enabled: Vec<&RetentionRuleRecord> = rules.iter().filter(|r| !r.disabled).collect();
        let mut plan = Plan::default();
        if enabled.is_empty() {
            return Ok(plan);
        }
        let prefix = format!("{project}/");
        for r in self.inner.index.scan(RepoKey::after(&prefix)) {
            let (RepoKey(repo), _) = r?;
            let Some(within) = repo.as_str().strip_prefix(&prefix) else {
                break;
            };
            let applying: Vec<&RetentionRuleRecord> = enabled
                .iter()
                .copied()
                .filter(|r| r.repos.selects(within))
                .collect();
            if applying.is_empty() {
                continue;
            }
            if let Some(task) = self.plan_repository(&repo, &applying, now_ms)? {
                plan.tasks.push(task);
            }
        }
        Ok(plan)
    }

    fn plan_repository(
        &self,
        repo: &RepoName,
        rules: &[&RetentionRuleRecord],
        now_ms: u64,
    ) -> Result<Option<RetentionTaskRecord>, StorageError> {
        let pulls = self.pulls_of(repo)?;
        let cands: Vec<Candidate> = self
            .artifacts(repo)?
            .into_iter()
            .filter(|a| !a.nested)
            .map(|a| Candidate {
                pull_ms: pulls.get(&a.digest).map_or(0, |p| p.last_ms),
                push_ms: a.in_repo.created_ms,
                digest: a.digest,
                tags: a.tags,
            })
            .collect();
        if cands.is_empty() {
            return Ok(None);
        }
        let mut keep = vec![false; cands.len()];
        for rule in rules {
            for i in kept_by(rule, &cands, now_ms) {
                keep[i] = true;
            }
        }
        let items: Vec<RetentionItemRecord> = cands
            .into_iter()
            .zip(&keep)
            .map(|(c, &kept)| RetentionItemRecord {
                digest: c.digest.to_string(),
                tags: c.tags,
                action: if kept { RETAIN } else { DELETE }.to_owned(),
                detail: String::new(),
                push_ms: c.push_ms,
                pull_ms: c.pull_ms,
            })
            .collect();
        Ok(Some(RetentionTaskRecord {
            repository: repo.to_string(),
            status: "Succeed".into(),
            total: items.len() as u64,
            retained: keep.iter().filter(|k| **k).count() as u64,
            items,
        }))
    }

    /// Carries out `plan`'s deletions, each only if the artifact is still
    /// top-level with the tags the plan saw; one the delete refuses or
    /// that changed is marked [`KEPT`] with the reason. `stop` is asked
    /// between deletions; when it says so, the rest stay undone (and
    /// planned only). Returns the plan as done.
    pub fn apply_retention(
        &self,
        mut plan: Plan,
        stop: impl Fn() -> bool,
    ) -> Result<(Plan, bool), StorageError> {
        let mut stopped = false;
        for task in &mut plan.tasks {
            let Ok(repo) = RepoName::parse(&task.repository) else {
                continue;
            };
            for item in task.items.iter_mut().filter(|i| i.action == DELETE) {
                if stopped || stop() {
                    stopped = true;
                    item.action = KEPT.into();
                    item.detail = "the run was stopped".into();
                    continue;
                }
                let Ok(digest) = Digest::parse(&item.digest) else {
                    continue;
                };
                let when = DeleteIf::TopLevelWithTags(&item.tags);
                let outcome = self.inner.delete_manifest(&repo, &digest, when);
                let (why, failed) = match outcome {
                    Ok(true) => continue,
                    Ok(false) => (CHANGED.to_owned(), false),
                    Err(ManifestError::Storage(e)) => return Err(e),
                    // Harbor's rule too: what an immutability rule holds is
                    // retained, and that is no failure.
                    Err(e @ ManifestError::TagImmutable { .. }) => (e.to_string(), false),
                    Err(e) => (e.to_string(), true),
                };
                item.action = KEPT.into();
                item.detail = why;
                task.retained += 1;
                if failed {
                    task.status = "Failed".into();
                }
            }
        }
        Ok((plan, stopped))
    }

    /// Every retention policy, by id.
    pub fn retention_policies(&self) -> Result<Vec<(u64, RetentionPolicyRecord)>, StorageError> {
        self.inner
            .index
            .scan(RetentionPolicyKey::all())
            .map(|r| r.map(|(RetentionPolicyKey(id), rec)| (id, rec)))
            .collect()
    }

    /// Policy `id`.
    pub fn retention_policy(&self, id: u64) -> Result<Option<RetentionPolicyRecord>, StorageError> {
        self.inner.index.get(&RetentionPolicyKey(id))
    }

    /// The policy of `project`, if it has one.
    pub fn retention_policy_of(
        &self,
        project: &str,
    ) -> Result<Option<(u64, RetentionPolicyRecord)>, StorageError> {
        Ok(self
            .retention_policies()?
            .into_iter()
            .find(|(_, p)| p.project == project))
    }

    /// Creates the policy of `rec.project` (a project has at most one:
    /// `Conflict` if it has one); its id.
    pub fn create_retention_policy(&self, rec: RetentionPolicyRecord) -> Result<u64, AccountError> {
        check(&rec.rules)?;
        let inner = &self.inner;
        let g = inner.lock()?;
        if !inner.index.contains(&ProjectKey(rec.project.clone()))? {
            return Err(AccountError::NotFound {
                what: format!("project {}", rec.project),
            });
        }
        if let Some((id, _)) = self.retention_policy_of(&rec.project)? {
            return Err(AccountError::Storage(StorageError::Conflict(format!(
                "project {} has retention policy {id} already: update it",
                rec.project
            ))));
        }
        let mut b = Batch::default();
        let id = inner.next_id(&mut b, IdKind::RetentionPolicy)?;
        b.put(&RetentionPolicyKey(id), &rec);
        inner.commit(g, b)?;
        Ok(id)
    }

    /// Replaces the rules and schedule of policy `id` (its project stays).
    pub fn update_retention_policy(
        &self,
        id: u64,
        rules: Vec<RetentionRuleRecord>,
        cron: String,
    ) -> Result<(), AccountError> {
        check(&rules)?;
        let what = || format!("retention policy {id}");
        self.inner.change(&RetentionPolicyKey(id), what, |p| {
            p.rules = rules;
            p.cron = cron;
            p.updated_ms = records::now_ms();
            Ok(())
        })
    }

    /// Deletes policy `id` with its runs; false if there is none.
    pub fn delete_retention_policy(&self, id: u64) -> Result<bool, StorageError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        if !inner.index.contains(&RetentionPolicyKey(id))? {
            return Ok(false);
        }
        let mut b = Batch::default();
        self.unindex_retention_policy(id, &mut b)?;
        inner.commit(g, b)?;
        Ok(true)
    }

    /// Deletes policy `id` and its runs in `b` (with a project, say).
    pub(crate) fn unindex_retention_policy(
        &self,
        id: u64,
        b: &mut Batch,
    ) -> Result<(), StorageError> {
        b.delete(&RetentionPolicyKey(id));
        for r in self.inner.index.scan(RetentionRunKey::all()) {
            let (k, run) = r?;
            if run.policy_id == id {
                b.delete(&k);
            }
        }
        Ok(())
    }

    /// Records a new run of policy `policy_id` as `Running`; its id.
    /// `Conflict` while another run of the policy is `Running`.
    pub fn begin_retention_run(
        &self,
        policy_id: u64,
        trigger: &str,
        dry_run: bool,
    ) -> Result<u64, AccountError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let Some(policy) = inner.index.get(&RetentionPolicyKey(policy_id))? else {
            return Err(AccountError::NotFound {
                what: format!("retention policy {policy_id}"),
            });
        };
        let now = records::now_ms();
        let mut b = Batch::default();
        for r in inner.index.scan(RetentionRunKey::all()) {
            let (key, mut run) = r?;
            if run.policy_id != policy_id || run.end_ms.is_some() {
                continue;
            }
            if now.saturating_sub(run.beat_ms) < LEASE_MS {
                return Err(AccountError::Storage(StorageError::Conflict(format!(
                    "retention policy {policy_id} is running (execution {})",
                    key.0
                ))));
            }
            run.status = "Failed".into();
            run.detail = ABANDONED.into();
            run.end_ms = Some(now);
            b.put(&key, &run);
        }
        let id = inner.next_id(&mut b, IdKind::RetentionRun)?;
        let run = RetentionRunRecord {
            policy_id,
            project: policy.project,
            trigger: trigger.to_owned(),
            dry_run,
            status: "Running".into(),
            start_ms: now,
            end_ms: None,
            beat_ms: now,
            detail: String::new(),
            tasks: Vec::new(),
        };
        b.put(&RetentionRunKey(id), &run);
        inner.commit(g, b)?;
        Ok(id)
    }

    /// Renews run `id`'s lease (see [`LEASE_MS`]): call at least every
    /// `LEASE_MS / 4` while it runs. False if the run is no longer
    /// running (another node took it for abandoned): stop.
    pub fn beat_retention_run(&self, id: u64) -> Result<bool, StorageError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let Some(mut run) = inner.index.get(&RetentionRunKey(id))? else {
            return Ok(false);
        };
        if run.end_ms.is_some() {
            return Ok(false);
        }
        run.beat_ms = records::now_ms();
        let mut b = Batch::default();
        b.put(&RetentionRunKey(id), &run);
        inner.commit_unsynced(g, b)?;
        Ok(true)
    }

    /// Records how run `id` ended, and deletes the policy's runs beyond the
    /// newest [`KEEP_RUNS_PER_POLICY`].
    pub fn end_retention_run(
        &self,
        id: u64,
        status: &str,
        detail: String,
        tasks: Vec<RetentionTaskRecord>,
    ) -> Result<(), StorageError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let Some(mut run) = inner.index.get(&RetentionRunKey(id))? else {
            return Ok(());
        };
        run.status = status.to_owned();
        run.detail = detail;
        run.tasks = tasks;
        run.end_ms = Some(records::now_ms());
        let mut b = Batch::default();
        b.put(&RetentionRunKey(id), &run);
        // Newest first in key order: past the first KEEP, they go.
        let mut seen = 0;
        for r in inner.index.scan(RetentionRunKey::all()) {
            let (k, other) = r?;
            if other.policy_id == run.policy_id {
                seen += 1;
                if seen > KEEP_RUNS_PER_POLICY {
                    b.delete(&k);
                }
            }
        }
        inner.commit(g, b)
    }

    /// The runs of policy `policy_id`, newest first.
    pub fn retention_runs(
        &self,
        policy_id: u64,
    ) -> Result<Vec<(u64, RetentionRunRecord)>, StorageError> {
        let mut out = Vec::new();
        for r in self.inner.index.scan(RetentionRunKey::all()) {
            let (RetentionRunKey(id), run) = r?;
            if run.policy_id == policy_id {
                out.push((id, run));
            }
        }
        Ok(out)
    }

    /// Run `id`.
    pub fn retention_run(&self, id: u64) -> Result<Option<RetentionRunRecord>, StorageError> {
        self.inner.index.get(&RetentionRunKey(id))
    }

    /// Marks every run still `Running` as `Failed` (a crash or shutdown
    /// ended it): call once at start of a single-node server, before any
    /// run begins (in a cluster, others' runs may be running: the lease
    /// decides there). Returns how many.
    pub fn abandon_retention_runs(&self) -> Result<usize, StorageError> {
        let mut open = HashMap::new();
        for r in self.inner.index.scan(RetentionRunKey::all()) {
            let (RetentionRunKey(id), run) = r?;
            if run.end_ms.is_none() {
                open.insert(id, run.tasks);
            }
        }
        let n = open.len();
        for (id, tasks) in open {
            self.end_retention_run(id, "Failed", ABANDONED.into(), tasks)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Selector;

    fn rule(template: &str, n: u64, tags: &str, untagged: bool) -> RetentionRuleRecord {
        RetentionRuleRecord {
            disabled: false,
            template: template.into(),
            n,
            repos: Selector {
                pattern: "**".into(),
                excludes: false,
            },
            tags: Selector {
                pattern: tags.into(),
                excludes: false,
            },
            untagged,
        }
    }

    fn cand(i: u8, tags: &[&str], push_ms: u64, pull_ms: u64) -> Candidate {
        let hex = format!("{i:02x}").repeat(32);
        Candidate {
            digest: Digest::parse(&format!("sha256:{hex}")).unwrap(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            push_ms,
            pull_ms,
        }
    }

    #[test]
    fn templates_keep_what_harbor_keeps() {
        let now = 100 * DAY_MS;
        let cands = vec![
            cand(1, &["v1"], now - 30 * DAY_MS, now - DAY_MS),
            cand(2, &["v2"], now - 20 * DAY_MS, 0),
            cand(3, &["v3", "latest"], now - 2 * DAY_MS, now - 10 * DAY_MS),
            cand(4, &[], now - DAY_MS, 0),
            cand(5, &["dev-1"], now, 0),
        ];
        let kept = |r: &RetentionRuleRecord| {
            let mut k = kept_by(r, &cands, now);
            k.sort();
            k
        };
        assert_eq!(kept(&rule("latestPushedK", 2, "v*", false)), vec![1, 2]);
        assert_eq!(kept(&rule("latestPushedK", 2, "**", true)), vec![3, 4]);
        assert_eq!(kept(&rule("latestPulledN", 1, "**", false)), vec![0]);
        assert_eq!(
            kept(&rule("nDaysSinceLastPush", 21, "v*", false)),
            vec![1, 2]
        );
        assert_eq!(kept(&rule("nDaysSinceLastPull", 5, "**", false)), vec![0]);
        assert_eq!(kept(&rule("always", 0, "latest", false)), vec![2]);
        let mut excl = rule("always", 0, "dev-*", false);
        excl.tags.excludes = true;
        assert_eq!(kept(&excl), vec![0, 1, 2]);
    }

    #[test]
    fn check_refuses_bad_rules() {
        assert!(check(&[rule("latestPushedK", 3, "**", false)]).is_ok());
        assert!(check(&[rule("always", 0, "**", false)]).is_ok());
        assert!(check(&[rule("latestPushedK", 0, "**", false)]).is_err());
        assert!(check(&[rule("keepAll", 1, "**", false)]).is_err());
        assert!(check(&[rule("always", 0, "", false)]).is_err());
        assert!(check(&vec![rule("always", 0, "**", false); MAX_RULES + 1]).is_err());
    }
}
