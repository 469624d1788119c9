//! Console sessions (`console_sessions`, see `keys.rs`): the engine keeps
//! the records; the server makes the cookies and checks them
//! (`server/src/console/session.rs`).
//!
//! A record is keyed by the SHA-256 (hex) of the cookie, never the cookie
//! itself, and holds the account, the stamp of the credential that signed
//! in (`Engine::credential_stamp`: a session dies with it), a CSRF token
//! and the expiry. Creating and ending a session are synced commits: a
//! sign-out the browser saw succeed is final across a crash. Expired
//! records are deleted by the next sign-in (a bounded number at a time),
//! so the family holds about as many records as sign-ins in one session
//! lifetime.

use crate::engine::Engine;
use crate::error::StorageError;
use crate::index::Batch;
use crate::keys::{SessionKey, WholeFamily};
use crate::records::{self, SessionRecord};

/// Expired sessions a sign-in deletes at most.
const PURGE_PER_SIGN_IN: usize = 64;

impl Engine {
    /// Stores session `key` (the cookie's hash), and deletes up to
    /// [`PURGE_PER_SIGN_IN`] expired ones.
    pub fn create_session(&self, key: &str, rec: SessionRecord) -> Result<(), StorageError> {
        let inner = &self.inner;
        let now = records::now_ms();
        let mut b = Batch::default();
        let mut purged = 0;
        for r in inner.index.scan(SessionKey::all()) {
            let (k, old) = r?;
            if old.expires_ms <= now {
                b.delete(&k);
                purged += 1;
                if purged == PURGE_PER_SIGN_IN {
                    break;
                }
            }
        }
        b.put(&SessionKey(key.to_owned()), &rec);
        let g = inner.lock()?;
        inner.commit(g, b)
    }

    /// Session `key`, if it exists (expired or not: the caller decides).
    pub fn session(&self, key: &str) -> Result<Option<SessionRecord>, StorageError> {
        self.inner.index.get(&SessionKey(key.to_owned()))
    }

    /// Deletes session `key`; whether it existed.
    pub fn end_session(&self, key: &str) -> Result<bool, StorageError> {
        let inner = &self.inner;
        let k = SessionKey(key.to_owned());
        let g = inner.lock()?;
        if inner.index.get(&k)?.is_none() {
            return Ok(false);
        }
        let mut b = Batch::default();
        b.delete(&k);
        inner.commit(g, b)?;
        Ok(true)
    }
}
