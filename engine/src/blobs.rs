//! Blob reads, links, mounts and unlinks within repositories.

use std::ops::Range;

use crate::digest::{Digest, Hasher};
use crate::engine::{Engine, Inner};
use crate::error::{BlobError, StorageError, UploadError};
use crate::index::Batch;
use crate::keys::{BlobKey, BlobRepoKey, LinkKey, PinKey};
use crate::names::RepoName;
use crate::records::{self, BlobInfo, BlobRecord, BlobState, Count};
use crate::store::s3::MAX_COPY;
use crate::store::{BlobData, S3Config, StoreError};

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

    /// The bucket the blob store keeps its blobs in (`s3` and `tiered`
    /// backends), for [`Engine::copy_from_bucket`].
    pub fn bucket(&self) -> Option<&S3Config> {
        self.inner.store.bucket().map(|b| b.config())
    }

    /// Links blob `digest` into `repo` from object `key` of the bucket the
    /// blob store keeps its blobs in ([`Engine::bucket`]; `key` is from the
    /// bucket's root, such as another registry's tree in the same bucket),
    /// copied inside the bucket: the object is read once and hashed (a GET
    /// with `If-Match` on the ETag a HEAD found), then copied on the
    /// bucket's condition that its ETag is still that one, so the blob
    /// stored is the bytes verified. Only the read crosses the network.
    ///
    /// `None` if there is no such object; [`UploadError::DigestMismatch`]
    /// (nothing stored) if its bytes hash to another digest; an error,
    /// before any read, for an object over [`MAX_COPY`] bytes (one
    /// CopyObject's limit: stream those through an upload session). The commit
    /// follows the chart path's: pinned against GC on every node, the copy
    /// outside the lock, one batch linking the blob (see `docs/design.md`).
    pub fn copy_from_bucket(
        &self,
        repo: &RepoName,
        digest: &Digest,
        key: &str,
    ) -> Result<Option<BlobInfo>, UploadError> {
        let inner = &self.inner;
        inner.check_poison()?;
        let bucket = inner.store.bucket().ok_or_else(|| {
            StorageError::Unsupported(format!(
                "the {} blob store keeps no blobs in a bucket",
                inner.store.name()
            ))
        })?;
        let mut hasher = Hasher::new(digest.algorithm());
        let version = bucket
            .read_version(key, MAX_COPY, |chunk| {
                hasher.update(chunk);
                Ok(())
            })
            .map_err(|e| inner.store_err(e))?;
        let Some(version) = version else {
            return Ok(None);
        };
        let actual = hasher.finalize();
        if &actual != digest {
            return Err(UploadError::DigestMismatch {
                id: key.to_owned(),
                expected: digest.clone(),
                actual,
            });
        }
        let size = version.size;
        let copy = || {
            bucket
                .copy_version(key, &version, digest)
                .map_err(|e| inner.store_err(e))
        };
        // Pinned until the batch is committed, as a chart's blobs are.
        let _pin = inner.gc_digests.pin(digest);
        let holder = inner.fresh_id()?;
        inner.commit_pins(&[digest], &holder, |_| Ok(()))?;
        let bkey = BlobKey(digest.clone());
        let live = |r: &Option<BlobRecord>| {
            r.as_ref()
                .is_some_and(|r| r.size == size && r.state != BlobState::Deleting)
        };
        let copied = !live(&inner.index.get(&bkey)?);
        if copied {
            copy()?;
        }
        let g = inner.lock()?;
        let existing = inner.index.get(&bkey)?;
        if !live(&existing) && !copied {
            // Live when looked at, not now: put the bytes back first.
            copy()?;
        }
        let now = records::now_ms();
        let mut rec = inner.blob_record_to_link(digest, existing, size, now)?;
        let mut batch = Batch::default();
        inner.link_into(&mut batch, repo, digest, &mut rec, now)?;
        inner.put_blob_record(&mut batch, digest, &rec);
        batch.delete(&PinKey(digest.clone(), holder));
        inner.commit(g, batch)?;
        Ok(Some(BlobInfo {
            digest: digest.clone(),
            size,
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
        Ok(self.inner.unlink(repo, digest)?)
    }
}

impl Inner {
    /// [`Engine::unlink_blob`].
    pub(crate) fn unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        let _g = self.lock()?;
        let link = LinkKey(repo.clone(), digest.clone());
        if !self.index.contains(&link)? {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.delete(&link);
        batch.delete(&BlobRepoKey(digest.clone(), repo.clone()));
        if let Some(mut rec) = self.index.get(&BlobKey(digest.clone()))? {
            Count::Links.down(&mut rec.links, || format!("blob {digest}"))?;
            rec.touched_ms = records::now_ms();
            self.put_blob_record(&mut batch, digest, &rec);
        }
        self.commit(_g, batch)?;
        Ok(true)
    }
}

impl Engine {
    /// The index record of a blob (tools, tests).
    pub fn blob_record(&self, digest: &Digest) -> Result<Option<BlobRecord>, StorageError> {
        self.inner.index.get(&BlobKey(digest.clone()))
    }
}
