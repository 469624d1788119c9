//! The RocksDB backend of the index: one column family per [`Cf`], in the
//! data directory's `index/`. See the parent module for what is atomic and
//! visible when.

use std::path::Path;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions, DB,
};

use super::{Op, RawScan};
use crate::error::StorageError;
use crate::keys::Cf;

/// The RocksDB index of a single-node engine.
pub(crate) struct RocksIndex {
    db: DB,
}

impl RocksIndex {
    /// Opens (creating if needed) the index at `path` with every column
    /// family of [`Cf::ALL`].
    pub(super) fn open(path: &Path) -> Result<RocksIndex, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            if e.to_string().contains("lock") {
                StorageError::Locked {
                    path: path.to_path_buf(),
                }
            } else {
                StorageError::Index {
                    op: "open",
                    source: e,
                }
            }
        })?;
        Ok(RocksIndex { db })
    }

    /// Opens the index at `primary`, which another process may have open
    /// and be writing, as a RocksDB secondary instance (its own files in
    /// `secondary`), caught up once with the primary's WAL: every read sees
    /// that one point, whole batches only. Read-only.
    pub(super) fn open_secondary(
        primary: &Path,
        secondary: &Path,
    ) -> Result<RocksIndex, StorageError> {
        let mut opts = Options::default();
        // A secondary keeps every file open: the primary may delete a
        // compacted file while it is read.
        opts.set_max_open_files(-1);
        let names = Cf::ALL.iter().map(|cf| cf.name());
        let db = DB::open_cf_as_secondary(&opts, primary, secondary, names)
            .map_err(StorageError::index("open as secondary"))?;
        db.try_catch_up_with_primary()
            .map_err(StorageError::index("catch up with the primary"))?;
        Ok(RocksIndex { db })
    }

    fn handle(&self, cf: Cf) -> &ColumnFamily {
        // Every family of Cf::ALL is created at open.
        self.db
            .cf_handle(cf.name())
            .expect("column family is created at open")
    }

    pub(super) fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get_cf(self.handle(cf), key)
            .map_err(StorageError::index("get"))
    }

    /// The values of several keys, in order, in one call.
    pub(super) fn get_many(
        &self,
        keys: &[(Cf, Vec<u8>)],
    ) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.db
            .multi_get_cf(keys.iter().map(|(cf, k)| (self.handle(*cf), k.as_slice())))
            .into_iter()
            .map(|r| r.map_err(StorageError::index("get")))
            .collect()
    }

    /// The value of `first`, and of the key `prefix ++ value` of `then`.
    pub(super) fn get_through(
        &self,
        first: (Cf, &[u8]),
        then: (Cf, &[u8]),
    ) -> Result<super::Through, StorageError> {
        let Some(v) = self.get_raw(first.0, first.1)? else {
            return Ok((None, None));
        };
        let next = self.get_raw(then.0, &[then.1, &v].concat())?;
        Ok((Some(v), next))
    }

    /// Entries of `cf` from `start` up to `end` (exclusive). `bulk` walks
    /// do not fill the block cache.
    pub(super) fn raw_scan(
        &self,
        cf: Cf,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        bulk: bool,
    ) -> RawScan<'_> {
        let mut ro = ReadOptions::default();
        if let Some(end) = end {
            ro.set_iterate_upper_bound(end);
        }
        if bulk {
            ro.fill_cache(false);
        }
        let mode = IteratorMode::From(&start, Direction::Forward);
        let it = self.db.iterator_cf_opt(self.handle(cf), ro, mode);
        Box::new(it.map(|r| r.map_err(StorageError::index("scan"))))
    }

    /// Number of entries in a column family (a full scan of its keys).
    pub(super) fn count(&self, cf: Cf) -> Result<u64, StorageError> {
        let mut n = 0;
        for r in self.db.iterator_cf(self.handle(cf), IteratorMode::Start) {
            r.map_err(StorageError::index("count"))?;
            n += 1;
        }
        Ok(n)
    }

    /// Applies `ops` atomically, logged in the WAL but not synced (see
    /// [`RocksIndex::sync_wal`]); returns the sequence number it ends at.
    pub(super) fn write(&self, ops: Vec<Op>) -> Result<u64, StorageError> {
        let mut wb = WriteBatch::default();
        for op in ops {
            match op {
                Op::Put { cf, key, value } => wb.put_cf(self.handle(cf), key, value),
                Op::Delete { cf, key } => wb.delete_cf(self.handle(cf), key),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db
            .write_opt(wb, &wo)
            .map_err(StorageError::index("write batch"))?;
        Ok(self.db.latest_sequence_number())
    }

    /// Syncs the WAL; returns the sequence number it covers at least.
    pub(super) fn sync_wal(&self) -> Result<u64, StorageError> {
        let upto = self.db.latest_sequence_number();
        self.db
            .flush_wal(true)
            .map_err(StorageError::index("sync WAL"))?;
        Ok(upto)
    }

    /// Flushes every column family's memtable to SST files.
    pub(super) fn flush_all(&self) -> Result<(), StorageError> {
        let cfs: Vec<_> = Cf::ALL.iter().map(|cf| self.handle(*cf)).collect();
        self.db
            .flush_cfs_opt(cfs.as_slice(), &rocksdb::FlushOptions::default())
            .map_err(StorageError::index("flush"))?;
        self.db.flush().map_err(StorageError::index("flush"))
    }

    /// Makes deleted values of `cf` unreadable from the index's files:
    /// every column family is flushed (so no live WAL file holds them and
    /// RocksDB deletes the old ones) and `cf` is compacted down to its
    /// bottommost level (so no SST holds them).
    pub(super) fn purge_deleted(&self, cf: Cf) -> Result<(), StorageError> {
        self.flush_all()?;
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(self.handle(cf), None::<&[u8]>, None::<&[u8]>, &opts);
        Ok(())
    }
}
