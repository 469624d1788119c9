//! The index: the only code that touches RocksDB or PostgreSQL.
//!
//! Everything the engine keeps in the index goes through the few functions
//! here, each taking typed keys and values from [`crate::keys`] and
//! [`crate::records`]: [`Index::get`] and [`Index::contains`] (point
//! reads), [`Index::scan`] and [`Index::scan_keys`] (prefix scans yielding
//! decoded keys), and [`Batch::put`] / [`Batch::delete`] (writes, applied
//! atomically when the engine commits, `Inner::commit`). No column family
//! handle, raw key, iterator, SQL statement or `WriteBatch` leaves this
//! module, so a key cannot be used in the wrong family and a value cannot be
//! written as the wrong record.
//!
//! Two backends hold the same ordered keyspace, one family at a time, keys
//! compared bytewise ([`rocks`]: one column family per [`Cf`]; [`pg`]: one
//! table keyed by family name and key bytes, `bytea` compares the same
//! way). The engine above them is one: every read-modify-write runs under
//! the engine's write lock ([`Index::begin`] takes the backend's part of
//! it), reads its state through the same functions, and writes one batch.
//!
//! What is atomic and when it is visible: a [`Batch`] is applied as one
//! RocksDB write batch or one PostgreSQL transaction; readers see all of it
//! or none of it from the moment it is applied. On RocksDB it is durable
//! once [`Index::sync_wal`] has covered its sequence number (the engine's
//! group commit); on PostgreSQL when the transaction's COMMIT returns.
//! Reads are not snapshots: a scan racing a write may see some of the
//! write's keys and not others; the write lock makes every
//! read-modify-write consistent.
//!
//! The write lock across nodes (cluster mode): [`Index::begin`] opens a
//! transaction holding a PostgreSQL advisory lock, which every node takes
//! before computing a batch, so the batches of all nodes are computed one
//! at a time from the latest committed state, exactly as one node's are on
//! RocksDB. Reads under the lock go through other connections: they see
//! every batch committed before the lock was granted (a transaction's
//! changes are visible before its locks are released).
//!
//! Corrupt entries: a key that does not decode as its family's key type is
//! [`StorageError::CorruptKey`] (family and key bytes in hex); a value that
//! does not decode as its key's record is [`StorageError::Corrupt`] naming
//! the key. A scan yields such an entry as an error item and goes on, so
//! fsck can report every one. [`Index::check_family`] walks a whole family
//! through the closed keyspace ([`Key::decode`] and the key's record),
//! classifying every entry without knowing its key type in advance.

pub(crate) mod pg;
mod rocks;

use std::collections::HashMap;
use std::path::Path;

use crate::digest::Digest;
use crate::error::StorageError;
use crate::keys::{Cf, CorruptKey, IndexKey, Key, RepoManifestKey, Scan, TagKey};
use crate::records::{Record, RepoManifestRecord, TagRecord};

pub use pg::DatabaseConfig;

/// The values [`Index::get2`] reads.
type Two<A, B> = (
    Option<<A as IndexKey>::Value>,
    Option<<B as IndexKey>::Value>,
);

/// What a read through a value finds: the first key's value, and the
/// value of the key it completes (`get_tag_link`).
type Through = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A tag's target digest and the manifest's entry in the tag's repository.
type TagLink = (Digest, Option<RepoManifestRecord>);

/// A key and value as stored.
type RawEntry = (Box<[u8]>, Box<[u8]>);

/// A stream of raw entries in key order.
type RawScan<'a> = Box<dyn Iterator<Item = Result<RawEntry, StorageError>> + 'a>;

/// Decodes the values [`Index::get2`] read, in the order of its keys.
fn decode2<A: IndexKey, B: IndexKey>(
    a: &A,
    b: &B,
    values: Vec<Option<Vec<u8>>>,
) -> Result<Two<A, B>, StorageError> {
    let mut v = values.into_iter();
    let mut next = || v.next().flatten();
    Ok((
        next().map(|x| decode_value(a, &x)).transpose()?,
        next().map(|x| decode_value(b, &x)).transpose()?,
    ))
}

/// Decodes what a read through `tag` found: its digest, and the entry of
/// [`TagKey::link_prefix`] completed by it.
fn tag_link(tag: &TagKey, (value, link): Through) -> Result<Option<TagLink>, StorageError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let TagRecord(d) = decode_value(tag, &value)?;
    let key = RepoManifestKey(tag.0.clone(), d.clone());
    let link = link.map(|v| decode_value(&key, &v)).transpose()?;
    Ok(Some((d, link)))
}

/// The index of an engine. Owned by `Inner`; lives as long as the engine.
pub(crate) enum Index {
    /// The single-node index in the data directory.
    Rocks(rocks::RocksIndex),
    /// Cluster mode: the index of record in PostgreSQL.
    Pg(pg::PgIndex),
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

/// Changes to apply atomically, in order (a later change of the same key
/// wins). Holds no reference to the index, so it can be built while
/// reading.
#[derive(Default)]
pub(crate) struct Batch {
    ops: Vec<Op>,
    /// Link changes may take a project past its storage limit (repair).
    over_quota: bool,
}

impl Batch {
    /// The entries of `cf` the batch changes, in order: key bytes and the
    /// value put (`None`: deleted). A later change of a key wins.
    pub(crate) fn changes(&self, cf: Cf) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.ops.iter().filter_map(move |op| match op {
            Op::Put { cf: c, key, value } if *c == cf => {
                Some((key.as_slice(), Some(value.as_slice())))
            }
            Op::Delete { cf: c, key } if *c == cf => Some((key.as_slice(), None)),
            _ => None,
        })
    }

    /// Lets the batch's link changes take a project past its storage limit
    /// (`fsck --repair` restoring what the index lost; `quotas.rs`).
    pub(crate) fn allow_over_quota(&mut self) {
        self.over_quota = true;
    }

    /// See [`Batch::allow_over_quota`].
    pub(crate) fn over_quota_allowed(&self) -> bool {
        self.over_quota
    }

    /// True if the batch deletes any key of `cf`.
    pub(crate) fn deletes(&self, cf: Cf) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op, Op::Delete { cf: c, .. } if *c == cf))
    }

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

    /// Writes raw bytes: an entry copied from another index as it is
    /// (`backup.rs`), or in tests a corrupt entry.
    pub(crate) fn put_raw(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.ops.push(Op::Put {
            cf,
            key: key.to_vec(),
            value: value.to_vec(),
        });
    }
}

/// Reads to make as the write lock is taken ([`Index::begin_reading`]):
/// keys, and tags read through to their manifest's repository entry.
#[derive(Default)]
pub(crate) struct ReadAhead {
    reads: Vec<Ahead>,
}

/// One read of a [`ReadAhead`]: a family and key, and the family and
/// prefix its value completes, if it is read through.
type Ahead = ((Cf, Vec<u8>), Option<(Cf, Vec<u8>)>);

impl ReadAhead {
    /// Reads `key`.
    pub(crate) fn key<K: IndexKey>(&mut self, key: &K) {
        self.reads.push(((K::CF, key.encode()), None));
    }

    /// Reads `tag` and the repository entry of the manifest it names
    /// ([`Index::get_tag_link`]).
    pub(crate) fn tag(&mut self, tag: &TagKey) {
        self.reads.push((
            (TagKey::CF, tag.encode()),
            Some((RepoManifestKey::CF, tag.link_prefix())),
        ));
    }
}

/// What [`Index::begin_reading`] read once the lock was held: the stored
/// value (or its absence) of each key read, raw. Valid while that lock is
/// held, since every write takes it.
#[derive(Default)]
pub(crate) struct Prefetched {
    values: HashMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
}

impl Prefetched {
    fn insert(&mut self, reads: ReadAhead, found: Vec<Through>) {
        for ((first, then), (value, link)) in reads.reads.into_iter().zip(found) {
            if let (Some((cf, prefix)), Some(v)) = (then, &value) {
                self.values
                    .insert((cf, [prefix.as_slice(), v].concat()), link);
            }
            self.values.insert(first, value);
        }
    }

    /// The value of `key` as read, if it was read (`None`: not read).
    pub(crate) fn get<K: IndexKey>(
        &self,
        key: &K,
    ) -> Option<Result<Option<K::Value>, StorageError>> {
        let raw = self.values.get(&(K::CF, key.encode()))?;
        Some(raw.as_ref().map(|v| decode_value(key, v)).transpose())
    }
}

/// The backend's part of the engine's write lock, from [`Index::begin`] to
/// [`Index::commit`] (or drop, which gives it up and writes nothing).
pub(crate) enum IndexTxn<'a> {
    /// RocksDB: the engine's mutex is the whole lock.
    Local,
    /// PostgreSQL: an open transaction holding the cluster's write lock.
    Pg(Box<pg::PgTxn<'a>>),
}

/// How a committed batch is made durable.
pub(crate) enum Committed {
    /// Applied and logged but not synced: durable once
    /// [`Index::sync_wal`] covers this sequence number (RocksDB).
    Logged(u64),
    /// Durable already (PostgreSQL's COMMIT returned).
    Durable,
}

/// An exclusive lock held across processes ([`Index::try_exclusive`]).
pub(crate) enum Exclusive {
    Local,
    #[allow(dead_code)] // held for its Drop
    Pg(Box<pg::PgExclusive>),
}

impl Index {
    /// Opens (creating if needed) the RocksDB index at `path` with every
    /// column family of [`Cf::ALL`].
    pub(crate) fn open_rocks(path: &Path) -> Result<Index, StorageError> {
        rocks::RocksIndex::open(path).map(Index::Rocks)
    }

    /// A read-only, point-in-time view of the RocksDB index at `path`,
    /// which a running server may hold (`berthctl backup`).
    pub(crate) fn open_rocks_secondary(path: &Path, scratch: &Path) -> Result<Index, StorageError> {
        rocks::RocksIndex::open_secondary(path, scratch).map(Index::Rocks)
    }

    /// Connects to the PostgreSQL index `config` names, creating or
    /// migrating its schema.
    pub(crate) fn open_pg(config: &DatabaseConfig) -> Result<Index, StorageError> {
        pg::PgIndex::open(config).map(Index::Pg)
    }

    /// Whether this is cluster mode's shared index.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Index::Pg(_))
    }

    fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self {
            Index::Rocks(r) => r.get_raw(cf, key),
            Index::Pg(p) => p.get_raw(cf, key),
        }
    }

    /// Raw entries of `cf` from `start` (inclusive) to `end` (exclusive, or
    /// the family's end). `bulk`: a walk of a whole family (not cached).
    fn raw_scan(
        &self,
        cf: Cf,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        keys_only: bool,
        bulk: bool,
    ) -> RawScan<'_> {
        match self {
            Index::Rocks(r) => r.raw_scan(cf, start, end, bulk),
            Index::Pg(p) => Box::new(p.raw_scan(cf, start, end, keys_only)),
        }
    }

    /// Reads and decodes the value of `key`.
    pub(crate) fn get<K: IndexKey>(&self, key: &K) -> Result<Option<K::Value>, StorageError> {
        match self.get_raw(K::CF, &key.encode())? {
            None => Ok(None),
            Some(v) => decode_value(key, &v).map(Some),
        }
    }

    /// [`Index::get`] for a task (a server handler): in cluster mode the
    /// database call is awaited, not waited for.
    pub(crate) async fn get_async<K: IndexKey>(
        &self,
        key: &K,
    ) -> Result<Option<K::Value>, StorageError> {
        let raw = match self {
            Index::Rocks(r) => r.get_raw(K::CF, &key.encode())?,
            Index::Pg(p) => p.get_raw_async(K::CF, &key.encode()).await?,
        };
        raw.map(|v| decode_value(key, &v)).transpose()
    }

    /// The values of two keys of any families, read together (one round
    /// trip to PostgreSQL; RocksDB's multi-get). Not a snapshot, like any
    /// two reads.
    pub(crate) fn get2<A: IndexKey, B: IndexKey>(
        &self,
        a: &A,
        b: &B,
    ) -> Result<Two<A, B>, StorageError> {
        let keys = [(A::CF, a.encode()), (B::CF, b.encode())];
        let v = match self {
            Index::Rocks(r) => r.get_many(&keys)?,
            Index::Pg(p) => p.get_many(&keys)?,
        };
        decode2(a, b, v)
    }

    /// [`Index::get2`] for a task.
    pub(crate) async fn get2_async<A: IndexKey, B: IndexKey>(
        &self,
        a: &A,
        b: &B,
    ) -> Result<Two<A, B>, StorageError> {
        let keys = [(A::CF, a.encode()), (B::CF, b.encode())];
        let v = match self {
            Index::Rocks(r) => r.get_many(&keys)?,
            Index::Pg(p) => p.get_many_async(&keys).await?,
        };
        decode2(a, b, v)
    }

    /// Tag `tag`'s target and, in the same read, the manifest's entry in
    /// the tag's repository: one round trip and one snapshot in cluster
    /// mode. `None` if the tag does not exist.
    pub(crate) fn get_tag_link(&self, tag: &TagKey) -> Result<Option<TagLink>, StorageError> {
        let (key, prefix) = (tag.encode(), tag.link_prefix());
        let through = match self {
            Index::Rocks(r) => r.get_through((TagKey::CF, &key), (RepoManifestKey::CF, &prefix))?,
            Index::Pg(p) => p.get_through((TagKey::CF, &key), (RepoManifestKey::CF, &prefix))?,
        };
        tag_link(tag, through)
    }

    /// [`Index::get_tag_link`] for a task.
    pub(crate) async fn get_tag_link_async(
        &self,
        tag: &TagKey,
    ) -> Result<Option<TagLink>, StorageError> {
        let (key, prefix) = (tag.encode(), tag.link_prefix());
        let through = match self {
            Index::Rocks(r) => r.get_through((TagKey::CF, &key), (RepoManifestKey::CF, &prefix))?,
            Index::Pg(p) => {
                p.get_through_async((TagKey::CF, &key), (RepoManifestKey::CF, &prefix))
                    .await?
            }
        };
        tag_link(tag, through)
    }

    /// True if `key` is present (its value is not read).
    pub(crate) fn contains<K: IndexKey>(&self, key: &K) -> Result<bool, StorageError> {
        Ok(self.get_raw(K::CF, &key.encode())?.is_some())
    }

    /// The raw entries of `scan`: from its start, while its prefix holds.
    fn scan_raw<K: IndexKey>(
        &self,
        scan: &Scan<K>,
        keys_only: bool,
    ) -> impl Iterator<Item = Result<RawEntry, StorageError>> + '_ {
        let prefix = scan.prefix_bytes().to_vec();
        let (start, end) = (scan.start_bytes().to_vec(), scan.end_bytes());
        self.raw_scan(K::CF, start, end, keys_only, false)
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
        self.scan_raw(&scan, false).map(|r| {
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
        self.scan_raw(&scan, true)
            .map(|r| r.and_then(|(k, _)| Ok(K::decode(&k)?)))
    }

    /// Every entry of `cf`, in key order, classified by the closed keyspace:
    /// its key through [`Key::decode`], its value through that key's record.
    /// Streamed: one page of entries is held at a time, and RocksDB's block
    /// cache is not filled, so checking a large index neither grows memory
    /// nor evicts the server's working set.
    pub(crate) fn check_family(
        &self,
        cf: Cf,
    ) -> impl Iterator<Item = Result<Checked, StorageError>> + '_ {
        self.raw_scan(cf, Vec::new(), None, false, true)
            .map(move |r| {
                let (k, v) = r?;
                Ok(match Key::decode(cf, &k) {
                    Err(e) => Checked::CorruptKey(e),
                    Ok(key) => match key.check_value(&v) {
                        Ok(()) => Checked::Sound,
                        Err(why) => Checked::CorruptValue(key, why),
                    },
                })
            })
    }

    /// Number of entries in a column family.
    pub(crate) fn count(&self, cf: Cf) -> Result<u64, StorageError> {
        match self {
            Index::Rocks(r) => r.count(cf),
            Index::Pg(p) => p.count(cf),
        }
    }

    /// Takes the exclusive lock `what` of every process on this index, if
    /// none holds it; `None` if one does. RocksDB: this process is the
    /// only one (the caller's own mutex orders its threads); PostgreSQL: a
    /// session advisory lock, released when the guard drops or the node
    /// dies.
    pub(crate) fn try_exclusive(&self, what: &str) -> Result<Option<Exclusive>, StorageError> {
        match self {
            Index::Rocks(_) => Ok(Some(Exclusive::Local)),
            Index::Pg(p) => Ok(p.try_exclusive(what)?.map(|e| Exclusive::Pg(Box::new(e)))),
        }
    }

    /// Takes the backend's part of the write lock (the engine holds its
    /// own mutex already): nothing on RocksDB; on PostgreSQL a transaction
    /// holding the cluster's advisory lock, waited for.
    pub(crate) fn begin(&self) -> Result<IndexTxn<'_>, StorageError> {
        match self {
            Index::Rocks(_) => Ok(IndexTxn::Local),
            Index::Pg(p) => Ok(IndexTxn::Pg(Box::new(p.begin()?))),
        }
    }

    /// [`Index::begin`], then `reads`, made once the lock is held: on
    /// PostgreSQL in the lock's transaction, sent with the lock's statement
    /// (one round trip for both).
    pub(crate) fn begin_reading(
        &self,
        reads: ReadAhead,
    ) -> Result<(IndexTxn<'_>, Prefetched), StorageError> {
        let mut prefetched = Prefetched::default();
        match self {
            Index::Rocks(r) => {
                let mut found = Vec::with_capacity(reads.reads.len());
                for ((cf, key), then) in &reads.reads {
                    found.push(match then {
                        None => (r.get_raw(*cf, key)?, None),
                        Some((tcf, prefix)) => r.get_through((*cf, key), (*tcf, prefix))?,
                    });
                }
                prefetched.insert(reads, found);
                Ok((IndexTxn::Local, prefetched))
            }
            Index::Pg(p) => {
                let (txn, found) = p.begin_reading(&reads.reads)?;
                prefetched.insert(reads, found);
                Ok((IndexTxn::Pg(Box::new(txn)), prefetched))
            }
        }
    }

    /// Writes raw `rows` in the open transaction `txn` of a PostgreSQL
    /// index, committed with the next [`Index::commit`] of `txn` (a bulk
    /// load: `berthctl cluster import`).
    pub(crate) fn load(
        &self,
        txn: &mut IndexTxn<'_>,
        rows: Vec<(Cf, Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        match (self, txn) {
            (Index::Pg(p), IndexTxn::Pg(t)) => p.load(t, rows),
            _ => Err(StorageError::Unsupported(
                "bulk loads go into a PostgreSQL index only".to_owned(),
            )),
        }
    }

    /// Every raw entry of `cf`, in key order, streamed (a whole-family
    /// walk: not cached).
    pub(crate) fn entries(&self, cf: Cf) -> RawScan<'_> {
        self.raw_scan(cf, Vec::new(), None, false, true)
    }

    /// Applies `batch` atomically in the lock `txn` from [`Index::begin`].
    pub(crate) fn commit(
        &self,
        txn: IndexTxn<'_>,
        batch: Batch,
    ) -> Result<Committed, StorageError> {
        match (self, txn) {
            (Index::Rocks(r), _) => r.write(batch.ops).map(Committed::Logged),
            (Index::Pg(p), IndexTxn::Pg(t)) => p.commit(*t, batch.ops).map(|()| Committed::Durable),
            (Index::Pg(_), IndexTxn::Local) => Err(StorageError::Database {
                op: "commit",
                message: "no transaction holds the write lock".to_owned(),
            }),
        }
    }

    /// Syncs the WAL; returns the sequence number it covers at least
    /// (RocksDB only: a PostgreSQL commit is durable when it returns).
    pub(crate) fn sync_wal(&self) -> Result<u64, StorageError> {
        match self {
            Index::Rocks(r) => r.sync_wal(),
            Index::Pg(_) => Ok(u64::MAX),
        }
    }

    /// Leaves nothing to replay at the next open (RocksDB flushes its
    /// memtables; PostgreSQL has nothing to do).
    pub(crate) fn flush_all(&self) -> Result<(), StorageError> {
        match self {
            Index::Rocks(r) => r.flush_all(),
            Index::Pg(_) => Ok(()),
        }
    }

    /// Makes deleted values of `cf` unreadable from the index's files
    /// (RocksDB: flush and compact the family; PostgreSQL: vacuum the
    /// table, so the heap keeps no dead row).
    pub(crate) fn purge_deleted(&self, cf: Cf) -> Result<(), StorageError> {
        match self {
            Index::Rocks(r) => r.purge_deleted(cf),
            Index::Pg(p) => p.vacuum(),
        }
    }

    /// Database figures for `/metrics` (cluster mode only).
    pub(crate) fn db_stats(&self) -> Option<pg::DbStats> {
        match self {
            Index::Rocks(_) => None,
            Index::Pg(p) => Some(p.stats()),
        }
    }
}

/// A put of a collapsed batch: family, key, value.
type Put = (Cf, Vec<u8>, Vec<u8>);

/// Collapses `ops` to the last change of each key, as puts and deletes of
/// distinct keys (the form a backend without ordered batches applies).
fn last_change_per_key(ops: Vec<Op>) -> (Vec<Put>, Vec<(Cf, Vec<u8>)>) {
    type Latest = std::collections::BTreeMap<(&'static str, Vec<u8>), (Cf, Option<Vec<u8>>)>;
    let mut last = Latest::new();
    for op in ops {
        match op {
            Op::Put { cf, key, value } => last.insert((cf.name(), key), (cf, Some(value))),
            Op::Delete { cf, key } => last.insert((cf.name(), key), (cf, None)),
        };
    }
    let (mut puts, mut deletes) = (Vec::new(), Vec::new());
    for ((_, key), (cf, value)) in last {
        match value {
            Some(v) => puts.push((cf, key, v)),
            None => deletes.push((cf, key)),
        }
    }
    (puts, deletes)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_change_of_a_key_wins_and_keys_are_distinct() {
        let ops = vec![
            Op::Put {
                cf: Cf::Tags,
                key: b"a".to_vec(),
                value: b"1".to_vec(),
            },
            Op::Delete {
                cf: Cf::Tags,
                key: b"a".to_vec(),
            },
            Op::Delete {
                cf: Cf::Tags,
                key: b"b".to_vec(),
            },
            Op::Put {
                cf: Cf::Tags,
                key: b"b".to_vec(),
                value: b"2".to_vec(),
            },
            Op::Put {
                cf: Cf::Blobs,
                key: b"a".to_vec(),
                value: b"3".to_vec(),
            },
        ];
        let (puts, deletes) = last_change_per_key(ops);
        assert_eq!(
            puts,
            vec![
                (Cf::Blobs, b"a".to_vec(), b"3".to_vec()),
                (Cf::Tags, b"b".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(deletes, vec![(Cf::Tags, b"a".to_vec())]);
    }
}
