//! The audit log (Harbor's `/audit-logs`): who pushed, pulled, deleted,
//! failed to sign in, or changed an account or a setting, and when.
//!
//! The server hands entries over in batches ([`Engine::append_audit`]: one
//! index batch per flush, ids from the `audit` sequence); they are read
//! newest first ([`Engine::audit_logs`]: `audit_log` keys are `!id`, so a
//! forward scan starts at the newest) and purged by age
//! ([`Engine::purge_audit`]).

use crate::engine::Engine;
use crate::error::StorageError;
use crate::index::Batch;
use crate::keys::{AuditKey, IdKind, SeqKey, WholeFamily};
use crate::records::{AuditRecord, Seq};

/// Entries removed per batch by a purge.
const PURGE_BATCH: usize = 10_000;

impl Engine {
    /// Appends `entries` (oldest first) to the audit log in one batch.
    pub fn append_audit(&self, entries: Vec<AuditRecord>) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let g = inner.lock()?;
        let key = SeqKey(IdKind::Audit);
        let Seq(mut last) = inner.index.get(&key)?.unwrap_or(Seq(0));
        let mut b = Batch::default();
        for e in &entries {
            last = last.checked_add(1).ok_or_else(|| StorageError::Corrupt {
                what: key.to_string(),
                detail: "id sequence exhausted".into(),
            })?;
            b.put(&AuditKey(last), e);
        }
        b.put(&key, &Seq(last));
        inner.commit(g, b)
    }

    /// Audit log entries for which `keep` holds, newest first, with their
    /// ids. One scan of the log.
    pub fn audit_logs(
        &self,
        mut keep: impl FnMut(&AuditRecord) -> bool,
    ) -> Result<Vec<(u64, AuditRecord)>, StorageError> {
        let mut out = Vec::new();
        for r in self.inner.index.scan(AuditKey::all()) {
            let (AuditKey(id), rec) = r?;
            if keep(&rec) {
                out.push((id, rec));
            }
        }
        Ok(out)
    }

    /// Removes the entries made before `before_ms`; returns how many.
    /// Entries are written in time order, so the old ones are the tail of
    /// the scan; they go in batches of [`PURGE_BATCH`].
    pub fn purge_audit(&self, before_ms: u64) -> Result<u64, StorageError> {
        let mut old = Vec::new();
        for r in self.inner.index.scan(AuditKey::all()) {
            let (key, rec) = r?;
            if rec.op_ms < before_ms {
                old.push(key);
            }
        }
        let n = old.len() as u64;
        for chunk in old.chunks(PURGE_BATCH) {
            let g = self.inner.lock()?;
            let mut b = Batch::default();
            for k in chunk {
                b.delete(k);
            }
            self.inner.commit(g, b)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;

    fn entry(op: &str, ms: u64) -> AuditRecord {
        AuditRecord {
            username: "alice".into(),
            resource: "p/app:v1".into(),
            resource_type: "artifact".into(),
            operation: op.into(),
            op_ms: ms,
        }
    }

    #[test]
    fn entries_come_newest_first_and_old_ones_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(EngineConfig::new(dir.path())).unwrap();
        e.append_audit(vec![entry("create", 10), entry("pull", 20)])
            .unwrap();
        e.append_audit(vec![entry("delete", 30)]).unwrap();
        let all = e.audit_logs(|_| true).unwrap();
        let ops: Vec<(u64, &str)> = all
            .iter()
            .map(|(id, r)| (*id, r.operation.as_str()))
            .collect();
        assert_eq!(ops, [(3, "delete"), (2, "pull"), (1, "create")]);
        let pulls = e.audit_logs(|r| r.operation == "pull").unwrap();
        assert_eq!(pulls.len(), 1);
        assert_eq!(e.purge_audit(25).unwrap(), 2);
        let left = e.audit_logs(|_| true).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, 3);
        // Ids go on after a purge.
        e.append_audit(vec![entry("create", 40)]).unwrap();
        assert_eq!(e.audit_logs(|_| true).unwrap()[0].0, 4);
    }
}
