//! Blob reads, links, mounts and unlinks within repositories.

use std::ops::Range;

use crate::digest::Digest;
use crate::engine::{Engine, Inner};
use crate::error::{BlobError, StorageError};
use crate::index::Batch;
use crate::keys::{BlobKey, BlobRepoKey, LinkKey};
use crate::names::RepoName;
use crate::records::{self, BlobInfo, BlobRecord, BlobState, Count};
use crate::store::{BlobData, StoreError};

impl Inner {
    /// The blob record if `digest` is linked in `repo`. A record GC is
    /// deleting is treated as absent.
    pub(crate) fn linked_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, StorageError> {
        if !self
            .index
            .contains(&LinkKey(repo.clone(), digest.clone()))?
        {
            return Ok(None);
        }
        self.live_blob(digest)
    }

    /// The blob record unless absent or being deleted by GC.
    pub(crate) fn live_blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, StorageError> {
        Ok(self
            .index
            .get(&BlobKey(digest.clone()))?
            .filter(|r| r.state != BlobState::Deleting))
    }

    /// Resets a GC mark: any touch of a marked blob makes it active again.
    /// Returns false if the blob is gone or being deleted (GC decided first).
    fn unmark(&self, digest: &Digest) -> Result<bool, StorageError> {
        let _g = self.lock()?;
        let Some(mut rec) = self.index.get(&BlobKey(digest.clone()))? else {
            return Ok(false);
        };
        if rec.state == BlobState::Deleting {
            return Ok(false);
        }
        {
            if rec.state == BlobState::Marked {
                rec.state = BlobState::Active;
                rec.touched_ms = records::now_ms();
                let mut b = Batch::default();
                self.put_blob_record(&mut b, digest, &rec);
                self.commit(_g, b)?;
            }
        }
        Ok(true)
    }
}

impl Engine {
    /// Size of blob `digest` if it is readable in `repo`. Counts as a touch
    /// for GC.
    pub fn stat_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobInfo>, BlobError> {
        Ok(self.touch_linked(repo, digest)?.map(|rec| BlobInfo {
            digest: digest.clone(),
            size: rec.size,
        }))
    }

    /// The record of blob `digest` if it is readable in `repo`, touched for
    /// GC (a mark is reset).
    fn touch_linked(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, BlobError> {
        match self.inner.linked_blob(repo, digest)? {
            None => Ok(None),
            Some(rec) => {
                if rec.state == BlobState::Marked && !self.inner.unmark(digest)? {
                    return Ok(None);
                }
                Ok(Some(rec))
            }
        }
    }

    /// Reads blob `digest` in `repo`, whole or a byte range (end exclusive).
    /// Returns the blob's total size alongside the bytes.
    pub fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<(BlobInfo, BlobData), BlobError> {
        let rec = self
            .touch_linked(repo, digest)?
            .ok_or_else(|| BlobError::NotFound {
                repo: repo.to_string(),
                digest: digest.clone(),
            })?;
        let info = BlobInfo {
            digest: digest.clone(),
            size: rec.size,
        };
        if let Some(r) = &range {
            if r.start > r.end || r.end > info.size {
                return Err(BlobError::RangeNotSatisfiable {
                    digest: digest.clone(),
                    start: r.start,
                    end: r.end,
                    size: info.size,
                });
            }
        }
        // The record's tier lets a tiered store skip a local miss.
        match self
            .inner
            .store
            .get_at(digest, range, self.inner.read_hint(rec.tier))
        {
            Ok(data) => Ok((info, data)),
            Err(StoreError::RangeNotSatisfiable { size, .. }) => {
                Err(BlobError::RangeNotSatisfiable {
                    digest: digest.clone(),
                    start: 0,
                    end: 0,
                    size,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Links an existing blob into `repo` (cross-repository mount). With
    /// `from`, the blob must be readable there; without, it must exist
    /// anywhere (the caller decides whether the client may see it).
    /// Metadata only: no bytes move. Returns None when there is nothing to mount.
    pub fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Option<BlobInfo>, BlobError> {
        let inner = &self.inner;
        let _g = inner.lock()?;
        let rec = match from {
            Some(src) => inner.linked_blob(src, digest)?,
            None => inner.live_blob(digest)?,
        };
        let Some(mut rec) = rec else {
            return Ok(None);
        };
        let mut batch = Batch::default();
        inner.link_into(&mut batch, repo, digest, &mut rec, records::now_ms())?;
        inner.put_blob_record(&mut batch, digest, &rec);
        inner.commit(_g, batch)?;
        Ok(Some(BlobInfo {
            digest: digest.clone(),
            size: rec.size,
        }))
    }

    /// True if blob `digest` is stored at all (in any repository) and not
    /// being deleted by GC.
    pub fn blob_exists(&self, digest: &Digest) -> Result<bool, StorageError> {
        Ok(self.inner.live_blob(digest)?.is_some())
    }

    /// Removes the link of `digest` from `repo`. The bytes stay until GC
    /// finds them unreferenced. Returns false if it was not linked.
    pub fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, BlobError> {
        let inner = &self.inner;
        let _g = inner.lock()?;
        let link = LinkKey(repo.clone(), digest.clone());
        if !inner.index.contains(&link)? {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.delete(&link);
        batch.delete(&BlobRepoKey(digest.clone(), repo.clone()));
        if let Some(mut rec) = inner.index.get(&BlobKey(digest.clone()))? {
            Count::Links.down(&mut rec.links, || format!("blob {digest}"))?;
            rec.touched_ms = records::now_ms();
            inner.put_blob_record(&mut batch, digest, &rec);
        }
        inner.commit(_g, batch)?;
        Ok(true)
    }

    /// The index record of a blob (tools, tests).
    pub fn blob_record(&self, digest: &Digest) -> Result<Option<BlobRecord>, StorageError> {
        self.inner.index.get(&BlobKey(digest.clone()))
    }
}
