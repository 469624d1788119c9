//! Webhook policies and the durable delivery queue (Harbor's project
//! webhooks).
//!
//! An event is put into `webhook_queue` (one entry per target, with the
//! exact body to send) by a synced batch before the request that caused it
//! is answered ([`Engine::enqueue_webhooks`]), so a crash after the answer
//! loses no event. The server's deliverer reads due entries in id order
//! ([`Engine::due_webhooks`]), and after each attempt records the outcome
//! in `webhook_jobs` and removes the entry or moves its next attempt
//! ([`Engine::webhook_attempted`]). Delivery is at least once: a crash
//! between a target's answer and that batch sends the event again.

use crate::engine::Engine;
use crate::error::StorageError;
use crate::index::Batch;
use crate::keys::{IdKind, WebhookEventKey, WebhookJobKey, WebhookPolicyKey, WholeFamily};
use crate::records::{self, WebhookEventRecord, WebhookJobRecord, WebhookPolicyRecord};

/// Deliveries tried per event before it is given up.
pub const MAX_ATTEMPTS: u32 = 8;

/// Most policies a project holds (Harbor sets none): every event of the
/// project reads them all, and the policy cache holds every project's.
pub const MAX_POLICIES_PER_PROJECT: usize = 50;

/// The outcome of one delivery attempt.
pub enum Attempt {
    Delivered(String),
    /// Failed; tried again after the backoff unless attempts ran out.
    Failed(String),
}

impl Engine {
    /// Every webhook policy (of `project`, if given), by id.
    pub fn webhook_policies(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<(u64, WebhookPolicyRecord)>, StorageError> {
        let mut out = Vec::new();
        for r in self.inner.index.scan(WebhookPolicyKey::all()) {
            let (WebhookPolicyKey(id), rec) = r?;
            if project.is_none_or(|p| p == rec.project) {
                out.push((id, rec));
            }
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// Creates a policy; returns its id. Its name is unique in its project.
    pub fn create_webhook_policy(&self, rec: WebhookPolicyRecord) -> Result<u64, StorageError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        self.refuse_conflict(&rec, None)?;
        let mut b = Batch::default();
        let id = inner.next_id(&mut b, IdKind::WebhookPolicy)?;
        b.put(&WebhookPolicyKey(id), &rec);
        inner.commit(g, b)?;
        Ok(id)
    }

    /// Replaces policy `id` of `project` (keeping its creation); false if
    /// there is none.
    pub fn update_webhook_policy(
        &self,
        project: &str,
        id: u64,
        mut rec: WebhookPolicyRecord,
    ) -> Result<bool, StorageError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = WebhookPolicyKey(id);
        let Some(old) = inner.index.get(&key)?.filter(|p| p.project == project) else {
            return Ok(false);
        };
        self.refuse_conflict(&rec, Some(id))?;
        rec.created_ms = old.created_ms;
        rec.creator = old.creator;
        let mut b = Batch::default();
        b.put(&key, &rec);
        inner.commit(g, b)?;
        Ok(true)
    }

    /// Deletes policy `id` of `project` with its queued events and its
    /// delivery history; false if there is none.
    pub fn delete_webhook_policy(&self, project: &str, id: u64) -> Result<bool, StorageError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = WebhookPolicyKey(id);
        if inner
            .index
            .get(&key)?
            .filter(|p| p.project == project)
            .is_none()
        {
            return Ok(false);
        }
        let mut b = Batch::default();
        b.delete(&key);
        for r in inner.index.scan(WebhookEventKey::all()) {
            let (k, e) = r?;
            if e.policy_id == id {
                b.delete(&k);
            }
        }
        for r in inner.index.scan(WebhookJobKey::all()) {
            let (k, j) = r?;
            if j.policy_id == id {
                b.delete(&k);
            }
        }
        inner.commit(g, b)?;
        Ok(true)
    }

    /// Refuses `rec` (replacing policy `except`, or new) when its name is
    /// taken in its project, or when it is new and the project holds
    /// [`MAX_POLICIES_PER_PROJECT`].
    fn refuse_conflict(
        &self,
        rec: &WebhookPolicyRecord,
        except: Option<u64>,
    ) -> Result<(), StorageError> {
        let held = self.webhook_policies(Some(&rec.project))?;
        if held
            .iter()
            .any(|(id, p)| p.name == rec.name && Some(*id) != except)
        {
            return Err(StorageError::Conflict(format!(
                "project {} has a webhook policy named {:?} already",
                rec.project, rec.name
            )));
        }
        if except.is_none() && held.len() >= MAX_POLICIES_PER_PROJECT {
            return Err(StorageError::Conflict(format!(
                "project {} holds {MAX_POLICIES_PER_PROJECT} webhook policies, the most it may",
                rec.project
            )));
        }
        Ok(())
    }

    /// Puts `events` into the delivery queue in one synced batch: when
    /// this returns they survive any crash.
    pub fn enqueue_webhooks(&self, events: Vec<WebhookEventRecord>) -> Result<(), StorageError> {
        if events.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let g = inner.lock()?;
        let mut b = Batch::default();
        for e in &events {
            let id = inner.next_id(&mut b, IdKind::WebhookEvent)?;
            b.put(&WebhookEventKey(id), e);
        }
        inner.commit(g, b)
    }

    /// Queued events due by `now_ms`, oldest first, at most `limit`.
    pub fn due_webhooks(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, WebhookEventRecord)>, StorageError> {
        let mut out = Vec::new();
        for r in self.inner.index.scan(WebhookEventKey::all()) {
            let (WebhookEventKey(id), e) = r?;
            if e.next_ms <= now_ms {
                out.push((id, e));
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Records attempt `outcome` of queued event `id` (as read: `event`):
    /// its job entry, and the event removed (delivered, or out of
    /// attempts) or due again after an exponential backoff.
    pub fn webhook_attempted(
        &self,
        id: u64,
        event: &WebhookEventRecord,
        outcome: Attempt,
    ) -> Result<(), StorageError> {
        let inner = &self.inner;
        let now = records::now_ms();
        let g = inner.lock()?;
        let mut b = Batch::default();
        let key = WebhookEventKey(id);
        let attempts = event.attempts + 1;
        let (status, detail) = match outcome {
            Attempt::Delivered(d) => {
                b.delete(&key);
                ("Success", d)
            }
            Attempt::Failed(d) if attempts >= MAX_ATTEMPTS => {
                b.delete(&key);
                ("Error", d)
            }
            Attempt::Failed(d) => {
                let backoff = 1000u64 << attempts.min(8); // 2 s … 256 s
                let mut next = event.clone();
                next.attempts = attempts;
                next.next_ms = now + backoff;
                // Only while it is still queued (its policy may be gone).
                if inner.index.contains(&key)? {
                    b.put(&key, &next);
                }
                ("Retrying", d)
            }
        };
        let job = inner.next_id(&mut b, IdKind::WebhookJob)?;
        b.put(
            &WebhookJobKey(job),
            &WebhookJobRecord {
                policy_id: event.policy_id,
                event_type: event.event_type.clone(),
                notify_type: event.target.kind.clone(),
                status: status.to_owned(),
                detail,
                created_ms: now,
            },
        );
        inner.commit(g, b)
    }

    /// Delivery outcomes of policy `id`, newest first.
    pub fn webhook_jobs(
        &self,
        policy_id: u64,
    ) -> Result<Vec<(u64, WebhookJobRecord)>, StorageError> {
        let mut out = Vec::new();
        for r in self.inner.index.scan(WebhookJobKey::all()) {
            let (WebhookJobKey(id), j) = r?;
            if j.policy_id == policy_id {
                out.push((id, j));
            }
        }
        Ok(out)
    }
}
