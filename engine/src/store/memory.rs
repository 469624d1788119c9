//! [`MemoryStore`]: blobs in a hash map, for tests and benchmarks.

use std::collections::HashMap;
use std::fs;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

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

    /// Reads `src` into memory, inserts it, then removes `src`.
    fn put_file(
        &self,
        digest: &Digest,
        src: &Path,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let data = fs::read(src).map_err(|e| StoreError::io("read source file", src, e))?;
        let outcome = self.insert(digest, Arc::from(data), mode);
        fs::remove_file(src).map_err(|e| StoreError::io("remove stored source file", src, e))?;
        Ok(outcome)
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

    fn tmp_dir(&self) -> Option<&Path> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testsuite;

    #[test]
    fn shared_suite() {
        let scratch = tempfile::tempdir().expect("tempdir");
        testsuite::run_all(&MemoryStore::new(), scratch.path());
    }
}
