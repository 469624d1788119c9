//! The index: the only code that touches RocksDB.
//!
//! Everything the engine keeps in the index goes through the few functions
//! here, each taking typed keys and values from [`crate::keys`] and
//! [`crate::records`]: [`Index::get`] and [`Index::contains`] (point
//! reads), [`Index::scan`] and [`Index::scan_keys`] (prefix scans yielding
//! decoded keys), and [`Batch::put`] / [`Batch::delete`] (writes, applied
//! atomically by [`Index::write`]). No column family handle, raw key,
//! iterator or `WriteBatch` leaves this module, so a key cannot be used in
//! the wrong family and a value cannot be written as the wrong record.
//!
//! What is atomic and when it is visible: a [`Batch`] is applied as one
//! RocksDB write batch; readers see all of it or none of it from the moment
//! [`Index::write`] returns. It is durable only once [`Index::sync_wal`]
//! has covered its sequence number (the engine's group commit,
//! `Inner::commit`). Reads are not snapshots: a scan racing a write may see
//! some of the write's keys and not others; the engine's write lock makes
//! every read-modify-write consistent.
//!
//! Corrupt entries: a key that does not decode as its family's key type is
//! [`StorageError::CorruptKey`] (family and key bytes in hex); a value that
//! does not decode as its key's record is [`StorageError::Corrupt`] naming
//! the key. A scan yields such an entry as an error item and goes on, so
//! fsck can report every one. [`Index::check_family`] walks a whole family
//! through the closed keyspace ([`Key::decode`] and the key's record),
//! classifying every entry without knowing its key type in advance.

use std::path::Path;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions, DB,
};

use crate::error::StorageError;
use crate::keys::{Cf, CorruptKey, IndexKey, Key, Scan};
use crate::records::Record;

/// A key and value as stored.
type RawEntry = (Box<[u8]>, Box<[u8]>);

/// The RocksDB index of an engine. Owned by `Inner`; lives as long as the
/// engine.
pub(crate) struct Index {
    db: DB,
}

/// One change of a [`Batch`], already encoded.
enum Op {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
}

/// Changes to apply atomically with [`Index::write`], in order (a later
/// change of the same key wins). Holds no reference to the index, so it can
/// be built while reading.
#[derive(Default)]
pub(crate) struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// Sets `key` to `value`.
    pub(crate) fn put<K: IndexKey>(&mut self, key: &K, value: &K::Value) {
        self.ops.push(Op::Put {
            cf: K::CF,
            key: key.encode(),
            value: value.encode(),
        });
    }

    /// Removes `key` (nothing if absent).
    pub(crate) fn delete<K: IndexKey>(&mut self, key: &K) {
        self.ops.push(Op::Delete {
            cf: K::CF,
            key: key.encode(),
        });
    }

    /// Removes a key that a read found corrupt (the only way to name a key
    /// that no key type encodes: tidying and repair).
    pub(crate) fn delete_corrupt(&mut self, key: &CorruptKey) {
        self.ops.push(Op::Delete {
            cf: key.cf,
            key: key.key.clone(),
        });
    }

    /// Removes an entry [`Index::check_family`] classified (repair of an
    /// entry whose value is corrupt).
    pub(crate) fn delete_key(&mut self, key: &Key) {
        self.ops.push(Op::Delete {
            cf: key.cf(),
            key: key.encode(),
        });
    }

    /// Writes raw bytes: tests only, to plant corrupt entries.
    #[cfg(test)]
    pub(crate) fn put_raw(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.ops.push(Op::Put {
            cf,
            key: key.to_vec(),
            value: value.to_vec(),
        });
    }
}

impl Index {
    /// Opens (creating if needed) the index at `path` with every column
    /// family of [`Cf::ALL`].
    pub(crate) fn open(path: &Path) -> Result<Index, StorageError> {
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
        Ok(Index { db })
    }

    fn handle(&self, cf: Cf) -> &ColumnFamily {
        // Every family of Cf::ALL is created at open.
        self.db
            .cf_handle(cf.name())
            .expect("column family is created at open")
    }

    fn get_raw<K: IndexKey>(&self, key: &K) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get_cf(self.handle(K::CF), key.encode())
            .map_err(StorageError::index("get"))
    }

    /// Reads and decodes the value of `key`.
    pub(crate) fn get<K: IndexKey>(&self, key: &K) -> Result<Option<K::Value>, StorageError> {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(v) => decode_value(key, &v).map(Some),
        }
    }

    /// True if `key` is present (its value is not read).
    pub(crate) fn contains<K: IndexKey>(&self, key: &K) -> Result<bool, StorageError> {
        Ok(self.get_raw(key)?.is_some())
    }

    /// The raw entries of `scan`, in key order.
    fn raw_scan<K: IndexKey>(
        &self,
        scan: Scan<K>,
    ) -> impl Iterator<Item = Result<RawEntry, StorageError>> + '_ {
        let mut ro = ReadOptions::default();
        if let Some(end) = scan.end_bytes() {
            ro.set_iterate_upper_bound(end);
        }
        let start = scan.start_bytes().to_vec();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let prefix = scan.prefix_bytes().to_vec();
        let it = self.db.iterator_cf_opt(self.handle(K::CF), ro, mode);
        it.map(|r| r.map_err(StorageError::index("scan")))
            .take_while(move |r| match r {
                Ok((k, _)) => k.starts_with(&prefix),
                Err(_) => true,
            })
    }

    /// The entries of `scan`, decoded, in key order. A corrupt key or value
    /// is an error item; the scan goes on after it.
    pub(crate) fn scan<K: IndexKey>(
        &self,
        scan: Scan<K>,
    ) -> impl Iterator<Item = Result<(K, K::Value), StorageError>> + '_ {
        self.raw_scan(scan).map(|r| {
            let (k, v) = r?;
            let key = K::decode(&k)?;
            let value = decode_value(&key, &v)?;
            Ok((key, value))
        })
    }

    /// The keys of `scan`, decoded, in key order (values are not read).
    pub(crate) fn scan_keys<K: IndexKey>(
        &self,
        scan: Scan<K>,
    ) -> impl Iterator<Item = Result<K, StorageError>> + '_ {
        self.raw_scan(scan)
            .map(|r| r.and_then(|(k, _)| Ok(K::decode(&k)?)))
    }

    /// Every entry of `cf`, in key order, classified by the closed keyspace:
    /// its key through [`Key::decode`], its value through that key's record.
    /// Streamed: one entry is held at a time, and the block cache is not
    /// filled, so checking a large index neither grows memory nor evicts
    /// the server's working set.
    pub(crate) fn check_family(
        &self,
        cf: Cf,
    ) -> impl Iterator<Item = Result<Checked, StorageError>> + '_ {
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        self.db
            .iterator_cf_opt(self.handle(cf), ro, IteratorMode::Start)
            .map(move |r| {
                let (k, v) = r.map_err(StorageError::index("scan"))?;
                Ok(match Key::decode(cf, &k) {
                    Err(e) => Checked::CorruptKey(e),
                    Ok(key) => match key.check_value(&v) {
                        Ok(()) => Checked::Sound,
                        Err(why) => Checked::CorruptValue(key, why),
                    },
                })
            })
    }

    /// Number of entries in a column family (a full scan of its keys).
    pub(crate) fn count(&self, cf: Cf) -> Result<u64, StorageError> {
        let mut n = 0;
        for r in self.db.iterator_cf(self.handle(cf), IteratorMode::Start) {
            r.map_err(StorageError::index("count"))?;
            n += 1;
        }
        Ok(n)
    }

    fn write_batch(&self, batch: Batch) -> WriteBatch {
        let mut wb = WriteBatch::default();
        for op in batch.ops {
            match op {
                Op::Put { cf, key, value } => wb.put_cf(self.handle(cf), key, value),
                Op::Delete { cf, key } => wb.delete_cf(self.handle(cf), key),
            }
        }
        wb
    }

    /// Applies `batch` atomically, logged in the WAL but not synced (see
    /// [`Index::sync_wal`]); returns the sequence number it ends at.
    pub(crate) fn write(&self, batch: Batch) -> Result<u64, StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db
            .write_opt(self.write_batch(batch), &wo)
            .map_err(StorageError::index("write batch"))?;
        Ok(self.db.latest_sequence_number())
    }

    /// Syncs the WAL; returns the sequence number it covers at least.
    pub(crate) fn sync_wal(&self) -> Result<u64, StorageError> {
        let upto = self.db.latest_sequence_number();
        self.db
            .flush_wal(true)
            .map_err(StorageError::index("sync WAL"))?;
        Ok(upto)
    }

    /// Flushes every column family's memtable to SST files.
    pub(crate) fn flush_all(&self) -> Result<(), StorageError> {
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
    pub(crate) fn purge_deleted(&self, cf: Cf) -> Result<(), StorageError> {
        self.flush_all()?;
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(self.handle(cf), None::<&[u8]>, None::<&[u8]>, &opts);
        Ok(())
    }
}

/// One entry of a family as [`Index::check_family`] classifies it.
#[derive(Clone, Debug)]
pub(crate) enum Checked {
    /// Key and value decode.
    Sound,
    /// The key is no key of its family.
    CorruptKey(CorruptKey),
    /// The key decodes; its value is not the key's record (what is wrong).
    CorruptValue(Key, String),
}

/// Decodes the value stored under `key`, naming the key if it is corrupt.
fn decode_value<K: IndexKey>(key: &K, bytes: &[u8]) -> Result<K::Value, StorageError> {
    K::Value::decode(bytes).map_err(|detail| StorageError::Corrupt {
        what: key.to_string(),
        detail,
    })
}
