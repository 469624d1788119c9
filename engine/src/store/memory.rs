//! [`MemoryStore`]: blobs in a hash map, for tests and benchmarks.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::staging::{valid_staged_id, Body, Staged};
use super::{check_range, BlobData, BlobStore, PutMode, PutOutcome, StoreError};
use crate::digest::Digest;

/// A blob store holding every blob in memory. Nothing is durable: contents
/// vanish with the value. "Durably readable" in the [`BlobStore`] contract
/// means "readable for the store's lifetime" here.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// All blobs. A `RwLock` because reads dominate and each critical
    /// section is a single map operation; `Arc<[u8]>` so `get` hands out the
    /// buffer without copying and a later overwrite/delete does not affect
    /// data already handed out. No code panics while holding the lock, so a
    /// poisoned lock still guards a consistent map and is used as is.
    blobs: RwLock<HashMap<Digest, Arc<[u8]>>>,
    /// Staged blobs by id; each buffer is shared with its [`Staged`]
    /// handles. Same locking rule as `blobs`.
    staged: Mutex<HashMap<String, Arc<Mutex<Vec<u8>>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn insert(&self, digest: &Digest, data: Arc<[u8]>, mode: PutMode) -> PutOutcome {
        let mut blobs = self.blobs.write().unwrap_or_else(PoisonError::into_inner);
        if mode == PutMode::CreateOnly && blobs.contains_key(digest) {
            return PutOutcome::AlreadyPresent;
        }
        blobs.insert(digest.clone(), data);
        PutOutcome::Stored
    }

    fn lookup(&self, digest: &Digest) -> Option<Arc<[u8]>> {
        let blobs = self.blobs.read().unwrap_or_else(PoisonError::into_inner);
        blobs.get(digest).cloned()
    }
}

impl BlobStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn stage(&self, id: &str) -> Result<Staged, StoreError> {
        let mut staged = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
        if !valid_staged_id(id) || staged.contains_key(id) {
            return Err(StoreError::io(
                "create staged blob",
                std::path::Path::new(&format!("memory:{id}")),
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "invalid or already staged id",
                ),
            ));
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        staged.insert(id.to_owned(), buf.clone());
        Ok(Staged::new(id, Body::Memory(buf)))
    }

    fn open_staged(&self, id: &str) -> Result<Option<Staged>, StoreError> {
        let staged = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(staged
            .get(id)
            .map(|buf| Staged::new(id, Body::Memory(buf.clone()))))
    }

    fn staged_ids(&self) -> Result<Vec<String>, StoreError> {
        let staged = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ids: Vec<String> = staged.keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    /// Copies the staged buffer into the map (so no later write through a
    /// stale handle can reach the published blob), then drops the staged id.
    fn commit(
        &self,
        staged: Staged,
        digest: &Digest,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let data: Arc<[u8]> = match staged.body() {
            Body::Memory(buf) => Arc::from(
                buf.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_slice(),
            ),
            Body::File { path, .. } => {
                return Err(StoreError::io(
                    "commit staged blob",
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not staged by this store",
                    ),
                ))
            }
        };
        self.abort(staged.id())?;
        Ok(self.insert(digest, data, mode))
    }

    fn abort(&self, id: &str) -> Result<(), StoreError> {
        let mut staged = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
        staged.remove(id);
        Ok(())
    }

    fn put_bytes(
        &self,
        digest: &Digest,
        data: &[u8],
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        if mode == PutMode::CreateOnly && self.lookup(digest).is_some() {
            // Fast path: skip copying data we would throw away.
            return Ok(PutOutcome::AlreadyPresent);
        }
        Ok(self.insert(digest, Arc::from(data), mode))
    }

    fn get(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobData, StoreError> {
        let buf = self.lookup(digest).ok_or_else(|| StoreError::NotFound {
            digest: digest.clone(),
        })?;
        let (start, end) = check_range(digest, buf.len(), range)?;
        Ok(BlobData::Shared { buf, start, end })
    }

    fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(self.lookup(digest).map(|b| b.len() as u64))
    }

    fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        let mut blobs = self.blobs.write().unwrap_or_else(PoisonError::into_inner);
        Ok(blobs.remove(digest).is_some())
    }

    fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let blobs = self.blobs.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Digest> = blobs.keys().cloned().collect();
        drop(blobs);
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testsuite;

    #[test]
    fn shared_suite() {
        testsuite::run_all(&MemoryStore::new());
    }
}
