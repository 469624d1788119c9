//! The PostgreSQL backend of the index (cluster mode): the same ordered
//! keyspace as RocksDB's column families, in one table of the configured
//! schema,
//!
//! ```sql
//! CREATE TABLE <schema>.entries (
//!     family text  NOT NULL,   -- Cf::name()
//!     key    bytea NOT NULL,   -- the key's encoding (keys.rs)
//!     value  bytea NOT NULL,   -- the record's encoding (records.rs)
//!     PRIMARY KEY (family, key)
//! );
//! CREATE TABLE <schema>.schema_version (version integer NOT NULL);
//! ```
//!
//! `bytea` compares bytewise like RocksDB's default comparator, so a prefix
//! scan is a range scan of the primary key. The schema is created and
//! migrated at open, under an advisory lock, so nodes starting at once
//! migrate one at a time and the later ones find the work done.
//!
//! The write lock: [`PgIndex::begin`] opens a transaction and takes
//! `pg_advisory_xact_lock` on the schema's write-lock key; [`PgIndex::commit`]
//! applies the batch in that transaction and commits, which releases the
//! lock after the batch is visible. A node that dies holding it loses its
//! connection and with it the transaction and the lock; a node that hangs
//! holding it is cut off by `idle_in_transaction_session_timeout`. A
//! connection whose transaction state is unknown after an error is closed,
//! never returned to the pool.
//!
//! Every call blocks the calling thread: the index owns a small runtime
//! running tokio-postgres with a deadpool pool, like the S3 store does. A
//! database that does not answer is [`StorageError::Database`] within a
//! bounded time (pool wait, connect and statement timeouts), never a hang.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;

use super::{last_change_per_key, Op, RawEntry};
use crate::error::StorageError;
use crate::keys::Cf;
use crate::runtime::OwnedRuntime;

/// Rows fetched per page of a scan.
const PAGE: i64 = 512;

/// Version of the schema this build creates and reads.
const SCHEMA_VERSION: i32 = 1;

/// Longest wait for any one database call, the pool's included: past it
/// the call fails with [`StorageError::Database`] (the server answers 503).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach the index of record in PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// A `postgres://user:password@host:port/db?sslmode=…` URL.
    pub url: String,
    /// The schema holding berth's tables (created if missing): several
    /// registries, or tests, can share one database.
    pub schema: String,
    /// Connections this node keeps at most.
    pub pool_size: usize,
    /// PEM file of CAs trusted for the database's TLS certificate, beside
    /// the system roots (`sslmode=require` or `prefer` uses TLS).
    pub ca_file: Option<PathBuf>,
}

/// Never shows the password.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl DatabaseConfig {
    /// Defaults for `url`: schema `berth`, 16 connections.
    pub fn new(url: impl Into<String>) -> DatabaseConfig {
        DatabaseConfig {
            url: url.into(),
            schema: "berth".to_owned(),
            pool_size: 16,
            ca_file: None,
        }
    }

    /// The URL with its password masked, for messages and logs.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("****"));
                u.to_string()
            }
            Ok(u) => u.to_string(),
            Err(_) => "(unparsable database URL)".to_owned(),
        }
    }
}

impl DatabaseConfig {
    /// For tests: the database of `BERTH_TEST_DATABASE_URL`, with a schema
    /// of its own (so tests share one server without seeing each other),
    /// or `None` when the variable is unset. With
    /// `BERTH_TEST_DATABASE_REQUIRED` set (the test command sets both) a
    /// missing URL fails the test instead.
    #[doc(hidden)]
    pub fn for_test() -> Option<DatabaseConfig> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let url = std::env::var("BERTH_TEST_DATABASE_URL").unwrap_or_default();
        if url.is_empty() {
            assert!(
                std::env::var_os("BERTH_TEST_DATABASE_REQUIRED").is_none(),
                "BERTH_TEST_DATABASE_REQUIRED is set but BERTH_TEST_DATABASE_URL is not"
            );
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut c = DatabaseConfig::new(url);
        c.schema = format!(
            "t{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        c.pool_size = 4;
        Some(c)
    }
}

/// Figures of a node's database use, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Database calls made, and those that failed.
    pub calls: u64,
    pub errors: u64,
    /// Sum of the calls' latencies (pool wait included), in microseconds.
    pub latency_us: u64,
    /// Connections open, idle in the pool, and callers waiting for one.
    pub pool_size: u64,
    pub pool_idle: u64,
    pub pool_waiting: u64,
    /// Connections allowed at most.
    pub pool_max: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    latency_us: AtomicU64,
}

/// Statement texts, with the schema name in them.
struct Sql {
    get: String,
    get_many: String,
    get_through: String,
    get_batch: String,
    scan_from: String,
    scan_range: String,
    keys_from: String,
    keys_range: String,
    count: String,
    upsert: String,
    delete: String,
    lock: String,
}

impl Sql {
    fn new(s: &str) -> Sql {
        let t = format!("{s}.entries");
        Sql {
            get: format!("SELECT value FROM {t} WHERE family = $1 AND key = $2"),
            get_through: format!(
                "SELECT f.value, e.value FROM {t} f \
                 LEFT JOIN {t} e ON e.family = $3 AND e.key = $4 || f.value \
                 WHERE f.family = $1 AND f.key = $2"
            ),
            // IMPORTANT: each key is one scalar subquery, an index probe of
            // the primary key whatever the table's size or statistics: as a
            // join, the planner hashed the whole table for a handful of
            // keys. `OFFSET 0` keeps the inner query whole, so each probe
            // runs once.
            get_batch: format!(
                "SELECT s.i, s.v, \
                   (SELECT e.value FROM {t} e WHERE e.family = s.tf AND e.key = s.tp || s.v) \
                 FROM (SELECT q.i, q.tf, q.tp, \
                         (SELECT f.value FROM {t} f WHERE f.family = q.ff AND f.key = q.fk) AS v \
                       FROM unnest($1::text[], $2::bytea[], $3::text[], $4::bytea[]) \
                         WITH ORDINALITY AS q(ff, fk, tf, tp, i) \
                       OFFSET 0) s \
                 WHERE s.v IS NOT NULL"
            ),
            get_many: format!(
                "SELECT q.i, (SELECT f.value FROM {t} f WHERE f.family = q.ff AND f.key = q.fk) \
                 FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS q(ff, fk, i)"
            ),
            scan_from: format!("SELECT key, value FROM {t} WHERE family = $1 AND key >= $2 ORDER BY key LIMIT $3"),
            scan_range: format!("SELECT key, value FROM {t} WHERE family = $1 AND key >= $2 AND key < $4 ORDER BY key LIMIT $3"),
            keys_from: format!("SELECT key FROM {t} WHERE family = $1 AND key >= $2 ORDER BY key LIMIT $3"),
            keys_range: format!("SELECT key FROM {t} WHERE family = $1 AND key >= $2 AND key < $4 ORDER BY key LIMIT $3"),
            count: format!("SELECT count(*) FROM {t} WHERE family = $1"),
            upsert: format!(
                "INSERT INTO {t} (family, key, value) \
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]) \
                 ON CONFLICT (family, key) DO UPDATE SET value = EXCLUDED.value"
            ),
            delete: format!(
                "DELETE FROM {t} WHERE (family, key) IN \
                 (SELECT * FROM unnest($1::text[], $2::bytea[]))"
            ),
            lock: "SELECT pg_advisory_xact_lock($1)".to_owned(),
        }
    }
}

/// Failure of one database call, before it is named.
type DbResult<T> = Result<T, String>;

/// `fut`, or an error once it has taken [`CALL_TIMEOUT`].
async fn bounded<T>(fut: impl Future<Output = DbResult<T>>) -> DbResult<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs())),
    }
}

/// One point read a task awaits: the value of key `first` and, with
/// `then`, of the key `prefix ++ that value` in family `then.0`.
struct Read {
    first: (&'static str, Vec<u8>),
    then: Option<(&'static str, Vec<u8>)>,
    reply: tokio::sync::oneshot::Sender<DbResult<super::Through>>,
}

/// Most reads one statement carries.
const BATCH_MAX: usize = 256;

/// Statements of batched reads a node has at the database at once.
const BATCH_WORKERS: usize = 2;

/// Coalesces the point reads of the server's read path (a manifest GET's
/// repository entry, with its tag): while a worker's statement is at the
/// database, reads arriving meanwhile queue, and the next free worker sends
/// every queued read (up to [`BATCH_MAX`]) in one statement. A read still
/// sees everything committed before it was queued (its statement starts
/// later), so reads stay as fresh as one statement each; under load a node
/// pays one round trip, and PostgreSQL one statement, per batch instead of
/// per request. Idle, a read goes alone at once.
struct Batcher(tokio::sync::mpsc::UnboundedSender<Read>);

impl Batcher {
    /// Starts the workers on the current runtime.
    fn start(pool: Pool, sql: Arc<Sql>) -> Batcher {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..BATCH_WORKERS {
            let (rx, pool, sql) = (rx.clone(), pool.clone(), sql.clone());
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::new();
                    {
                        let mut rx = rx.lock().await;
                        match rx.recv().await {
                            Some(r) => batch.push(r),
                            None => return,
                        }
                        while batch.len() < BATCH_MAX {
                            match rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                    }
                    Batcher::run(&pool, &sql, batch).await;
                }
            });
        }
        Batcher(tx)
    }

    /// Sends `batch` as one statement and answers each read.
    async fn run(pool: &Pool, sql: &Sql, batch: Vec<Read>) {
        let reads: Vec<ReadRef<'_>> = batch
            .iter()
            .map(|r| {
                let then = r.then.as_ref().map(|(f, p)| (*f, p.as_slice()));
                ((r.first.0, r.first.1.as_slice()), then)
            })
            .collect();
        let found = bounded(async {
            let c = pool.get().await.map_err(db_err)?;
            read_batch(&c, sql, &reads).await
        })
        .await;
        match found {
            Ok(found) => {
                for (r, v) in batch.into_iter().zip(found) {
                    let _ = r.reply.send(Ok(v));
                }
            }
            Err(e) => {
                for r in batch {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A read of [`read_batch`]: family and key, and optionally the family
/// and prefix its value completes.
type ReadRef<'a> = ((&'a str, &'a [u8]), Option<(&'a str, &'a [u8])>);

/// Makes `reads` on `c` in one statement; what each found, in order.
async fn read_batch(c: &Object, sql: &Sql, reads: &[ReadRef<'_>]) -> DbResult<Vec<super::Through>> {
    let mut ff = Vec::with_capacity(reads.len());
    let mut fk = Vec::with_capacity(reads.len());
    let mut tf = Vec::with_capacity(reads.len());
    let mut tp = Vec::with_capacity(reads.len());
    for ((f, k), then) in reads {
        ff.push(*f);
        fk.push(*k);
        // No family is empty: a read without `then` completes nothing.
        let (f, p) = then.unwrap_or(("", &[][..]));
        tf.push(f);
        tp.push(p);
    }
    let st = c.prepare_cached(&sql.get_batch).await.map_err(db_err)?;
    let rows = c.query(&st, &[&ff, &fk, &tf, &tp]).await.map_err(db_err)?;
    let mut found: Vec<super::Through> = vec![(None, None); reads.len()];
    for row in rows {
        let i: i64 = row.get(0);
        *row_slot(&mut found, i)? = (Some(row.get(1)), row.get(2));
    }
    Ok(found)
}

/// The answer slot of row `i` (1-based, `WITH ORDINALITY`) of a read of
/// several keys.
fn row_slot<T>(slots: &mut [T], i: i64) -> DbResult<&mut T> {
    usize::try_from(i)
        .ok()
        .and_then(|i| slots.get_mut(i.wrapping_sub(1)))
        .ok_or_else(|| format!("read of several keys: row index {i} out of range"))
}

/// The PostgreSQL index of a cluster node.
pub(crate) struct PgIndex {
    /// Connections of the blocking API, run on `rt`.
    pool: Pool,
    /// Connections of the calls awaited by tasks (`*_async`: the server's
    /// read path), each run on the runtime of the task that opened it (the
    /// server's): such a read wakes no thread of `rt`. Half the size of
    /// `pool`, at least 2.
    task_pool: Pool,
    /// The reads tasks await, coalesced (see [`Batcher`]); started by the
    /// first such read, on its runtime.
    batcher: std::sync::Mutex<Option<Batcher>>,
    sql: Arc<Sql>,
    schema: String,
    /// `pg_advisory_xact_lock` key of the schema's write lock.
    write_lock: i64,
    counters: Counters,
    /// Runs the pool and its connections; dropped last.
    rt: OwnedRuntime,
}

/// A pooled connection inside a transaction. Unless [`InTxn::ended`] says
/// the transaction is over, dropping it — on an error, or with its call's
/// future at the call's timeout — closes the connection instead of pooling
/// it: PostgreSQL then ends the transaction, and releases its locks, with
/// the connection. So no pooled connection is ever inside a transaction.
struct InTxn(Option<Object>);

impl InTxn {
    /// The transaction is committed or rolled back: back to the pool.
    fn ended(mut self) -> Object {
        self.0
            .take()
            .expect("an InTxn holds its connection until ended or dropped")
    }
}

impl std::ops::Deref for InTxn {
    type Target = Object;
    fn deref(&self) -> &Object {
        self.0
            .as_ref()
            .expect("an InTxn holds its connection until ended or dropped")
    }
}

impl Drop for InTxn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            drop(Object::take(c));
        }
    }
}

/// A session-level advisory lock ([`PgIndex::try_exclusive`]); dropping
/// it closes its connection, which releases the lock.
pub(crate) struct PgExclusive {
    _session: InTxn,
}

/// A transaction holding the cluster's write lock, from
/// [`PgIndex::begin`] to [`PgIndex::commit`]; dropped uncommitted, it is
/// rolled back (its connection closed if that fails or takes 5 s).
pub(crate) struct PgTxn<'a> {
    index: &'a PgIndex,
    client: Option<InTxn>,
}

impl Drop for PgTxn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            self.index.rt.run(async move {
                let rollback = c.batch_execute("ROLLBACK");
                if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(5), rollback).await {
                    drop(c.ended());
                }
            });
        }
    }
}

/// The columns of an upsert of `rows`: families, keys, values.
type Columns = (Vec<&'static str>, Vec<Vec<u8>>, Vec<Vec<u8>>);

fn columns(rows: Vec<(Cf, Vec<u8>, Vec<u8>)>) -> Columns {
    let mut cols: Columns = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for (cf, k, v) in rows {
        cols.0.push(cf.name());
        cols.1.push(k);
        cols.2.push(v);
    }
    cols
}

/// Writes `rows` (insert or replace) on `c` in one statement over arrays.
async fn upsert(c: &Object, sql: &Sql, rows: Vec<(Cf, Vec<u8>, Vec<u8>)>) -> DbResult<()> {
    let (fams, keys, values) = columns(rows);
    let st = c.prepare_cached(&sql.upsert).await.map_err(db_err)?;
    c.execute(&st, &[&fams, &keys, &values])
        .await
        .map_err(db_err)?;
    Ok(())
}

/// A schema name berth accepts: it is spliced into statements, so only
/// `[a-z_][a-z0-9_]{0,62}`.
fn valid_schema(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// A stable 64-bit advisory lock key for `what` in `schema` (FNV-1a).
fn lock_key(schema: &str, what: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "berth:"
        .bytes()
        .chain(schema.bytes())
        .chain(":".bytes())
        .chain(what.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

fn tls(config: &DatabaseConfig) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut added = 0;
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls_pki_types::CertificateDer<'static> =
                cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}

fn db_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl PgIndex {
    /// Connects to the database `config` names and creates or migrates the
    /// schema.
    pub(super) fn open(config: &DatabaseConfig) -> Result<PgIndex, StorageError> {
        let open_err = |message: String| StorageError::Database {
            op: "open",
            message: format!("{}: {message}", config.redacted_url()),
        };
        if !valid_schema(&config.schema) {
            return Err(open_err(format!(
                "schema name {:?} is not [a-z_][a-z0-9_]* of at most 63 bytes",
                config.schema
            )));
        }
        let mut pg =
            tokio_postgres::Config::from_str(&config.url).map_err(|e| open_err(e.to_string()))?;
        pg.application_name("berth")
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            // A holder of the write lock that stops talking is cut off;
            // lock waits and statements end with an error, not a hang.
            // Every statement is planned once per connection: each is a
            // primary-key probe or range whose best plan does not depend on
            // its parameters, so replanning it per execution (a custom
            // plan) is pure cost.
            .options(
                "-c idle_in_transaction_session_timeout=60000 \
                 -c lock_timeout=25000 -c statement_timeout=25000 \
                 -c plan_cache_mode=force_generic_plan",
            );
        let tls = tls(config).map_err(open_err)?;
        let manager = || {
            let cfg = ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            };
            Manager::from_config(pg.clone(), tls.clone(), cfg)
        };
        let rt = OwnedRuntime::start("berth-pg", 2)
            .map_err(|e| open_err(format!("start database client runtime: {e}")))?;
        let pool = |manager, size: usize| {
            Pool::builder(manager)
                .max_size(size.max(2))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(10)))
                .create_timeout(Some(Duration::from_secs(5)))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .build()
                .map_err(|e| open_err(e.to_string()))
        };
        let task_pool = pool(manager(), config.pool_size / 2)?;
        let pool = {
            let _in_rt = rt.handle().enter();
            pool(manager(), config.pool_size)?
        };
        let index = PgIndex {
            pool,
            task_pool,
            batcher: std::sync::Mutex::new(None),
            sql: Arc::new(Sql::new(&config.schema)),
            schema: config.schema.clone(),
            write_lock: lock_key(&config.schema, "write"),
            counters: Counters::default(),
            rt,
        };
        index.migrate().map_err(|e| match e {
            StorageError::Database { message, .. } => open_err(message),
            e => e,
        })?;
        Ok(index)
    }

    /// Runs one database call on the index's runtime, bounded by
    /// [`CALL_TIMEOUT`], counted, its failure named by `op`.
    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        fut: impl Future<Output = DbResult<T>> + Send + 'static,
    ) -> Result<T, StorageError> {
        let t0 = Instant::now();
        let r = self.rt.run(bounded(fut));
        self.counted(op, t0, r)
    }

    /// [`PgIndex::call`] for a caller that is a task itself (a server
    /// handler on the read path): the call is awaited where it stands, so
    /// the caller's thread neither blocks nor hands its work to another
    /// thread while the database answers.
    async fn call_async<T: Send + 'static>(
        &self,
        op: &'static str,
        fut: impl Future<Output = DbResult<T>> + Send + 'static,
    ) -> Result<T, StorageError> {
        let t0 = Instant::now();
        let r = bounded(fut).await;
        self.counted(op, t0, r)
    }

    fn counted<T>(&self, op: &'static str, t0: Instant, r: DbResult<T>) -> Result<T, StorageError> {
        let c = &self.counters;
        c.calls.fetch_add(1, Ordering::Relaxed);
        c.latency_us
            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        r.map_err(|message| {
            c.errors.fetch_add(1, Ordering::Relaxed);
            StorageError::Database { op, message }
        })
    }

    /// Creates the schema's tables, or checks their version, under the
    /// migration lock (one node at a time).
    fn migrate(&self) -> Result<(), StorageError> {
        let pool = self.pool.clone();
        let s = self.schema.clone();
        let lock = lock_key(&self.schema, "migrate");
        self.call("migrate schema", async move {
            let c = InTxn(Some(pool.get().await.map_err(db_err)?));
            c.batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({lock});
                     CREATE SCHEMA IF NOT EXISTS {s};
                     CREATE TABLE IF NOT EXISTS {s}.entries (
                         family text NOT NULL, key bytea NOT NULL, value bytea NOT NULL,
                         PRIMARY KEY (family, key));
                     CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL);"
            ))
            .await
            .map_err(db_err)?;
            let row = c
                .query_one(&format!("SELECT max(version) FROM {s}.schema_version"), &[])
                .await
                .map_err(db_err)?;
            match row.get::<_, Option<i32>>(0) {
                None => {
                    c.execute(
                        &format!("INSERT INTO {s}.schema_version VALUES ($1)"),
                        &[&SCHEMA_VERSION],
                    )
                    .await
                    .map_err(db_err)?;
                }
                Some(v) if v == SCHEMA_VERSION => {}
                Some(v) => {
                    return Err(format!(
                        "schema {s} is at version {v}; this berth knows version {SCHEMA_VERSION}"
                    ))
                }
            }
            c.batch_execute("COMMIT").await.map_err(db_err)?;
            drop(c.ended());
            Ok(())
        })
    }

    pub(super) fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.call("get", self.get_raw_fut(&self.pool, cf, key))
    }

    /// [`PgIndex::get_raw`], awaited by a task: one read of a batch
    /// ([`Batcher`]).
    pub(super) async fn get_raw_async(
        &self,
        cf: Cf,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let read = self.batched((cf.name(), key.to_vec()), None);
        Ok(self.call_async("get", read).await?.0)
    }

    fn get_raw_fut(
        &self,
        pool: &Pool,
        cf: Cf,
        key: &[u8],
    ) -> impl Future<Output = DbResult<Option<Vec<u8>>>> + Send + 'static {
        let (pool, sql, key) = (pool.clone(), self.sql.clone(), key.to_vec());
        async move {
            let c = pool.get().await.map_err(db_err)?;
            let st = c.prepare_cached(&sql.get).await.map_err(db_err)?;
            let row = c
                .query_opt(&st, &[&cf.name(), &key])
                .await
                .map_err(db_err)?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        }
    }

    /// The values of several keys, in order, in one query.
    pub(super) fn get_many(
        &self,
        keys: &[(Cf, Vec<u8>)],
    ) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.call("get", self.get_many_fut(&self.pool, keys))
    }

    /// [`PgIndex::get_many`], awaited by a task.
    pub(super) async fn get_many_async(
        &self,
        keys: &[(Cf, Vec<u8>)],
    ) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.call_async("get", self.get_many_fut(&self.task_pool, keys))
            .await
    }

    fn get_many_fut(
        &self,
        pool: &Pool,
        keys: &[(Cf, Vec<u8>)],
    ) -> impl Future<Output = DbResult<Vec<Option<Vec<u8>>>>> + Send + 'static {
        let (pool, sql, keys) = (pool.clone(), self.sql.clone(), keys.to_vec());
        async move {
            let c = pool.get().await.map_err(db_err)?;
            let st = c.prepare_cached(&sql.get_many).await.map_err(db_err)?;
            let fams: Vec<&str> = keys.iter().map(|(cf, _)| cf.name()).collect();
            let ks: Vec<&[u8]> = keys.iter().map(|(_, k)| k.as_slice()).collect();
            let rows = c.query(&st, &[&fams, &ks]).await.map_err(db_err)?;
            let mut out = vec![None; keys.len()];
            for r in rows {
                let i: i64 = r.get(0);
                let slot = row_slot(&mut out, i)?;
                *slot = r.get::<_, Option<Vec<u8>>>(1);
            }
            Ok(out)
        }
    }

    /// The value of `first`, and of the key `prefix ++ value` of `then`:
    /// one statement, one snapshot.
    pub(super) fn get_through(
        &self,
        first: (Cf, &[u8]),
        then: (Cf, &[u8]),
    ) -> Result<super::Through, StorageError> {
        self.call("get", self.get_through_fut(&self.pool, first, then))
    }

    /// [`PgIndex::get_through`], awaited by a task: one read of a batch
    /// ([`Batcher`]).
    pub(super) async fn get_through_async(
        &self,
        first: (Cf, &[u8]),
        then: (Cf, &[u8]),
    ) -> Result<super::Through, StorageError> {
        let read = self.batched(
            (first.0.name(), first.1.to_vec()),
            Some((then.0.name(), then.1.to_vec())),
        );
        self.call_async("get", read).await
    }

    /// Queues one read with the node's [`Batcher`] (started here, on the
    /// caller's runtime, if it is not running) and waits for its answer.
    fn batched(
        &self,
        first: (&'static str, Vec<u8>),
        then: Option<(&'static str, Vec<u8>)>,
    ) -> impl Future<Output = DbResult<super::Through>> + Send + 'static {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let mut read = Read { first, then, reply };
        let mut b = self.batcher.lock().unwrap_or_else(|p| p.into_inner());
        // A batcher whose runtime ended (its workers with it) is replaced.
        for _ in 0..2 {
            let tx =
                b.get_or_insert_with(|| Batcher::start(self.task_pool.clone(), self.sql.clone()));
            match tx.0.send(read) {
                Ok(()) => break,
                Err(tokio::sync::mpsc::error::SendError(r)) => {
                    read = r;
                    *b = None;
                }
            }
        }
        drop(b);
        async move {
            answer
                .await
                .unwrap_or_else(|_| Err("the read batcher stopped".to_owned()))
        }
    }

    fn get_through_fut(
        &self,
        pool: &Pool,
        first: (Cf, &[u8]),
        then: (Cf, &[u8]),
    ) -> impl Future<Output = DbResult<super::Through>> + Send + 'static {
        let (pool, sql) = (pool.clone(), self.sql.clone());
        let (f, key, t, prefix) = (
            first.0.name(),
            first.1.to_vec(),
            then.0.name(),
            then.1.to_vec(),
        );
        async move {
            let c = pool.get().await.map_err(db_err)?;
            let st = c.prepare_cached(&sql.get_through).await.map_err(db_err)?;
            let row = c
                .query_opt(&st, &[&f, &key, &t, &prefix])
                .await
                .map_err(db_err)?;
            Ok(match row {
                None => (None, None),
                Some(r) => (Some(r.get(0)), r.get(1)),
            })
        }
    }

    /// One page of entries of `cf` from `start` (inclusive) to `end`.
    fn page(
        &self,
        cf: Cf,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        keys_only: bool,
    ) -> Result<Vec<RawEntry>, StorageError> {
        let (pool, sql) = (self.pool.clone(), self.sql.clone());
        self.call("scan", async move {
            let c = pool.get().await.map_err(db_err)?;
            let text = match (keys_only, end.is_some()) {
                (false, false) => &sql.scan_from,
                (false, true) => &sql.scan_range,
                (true, false) => &sql.keys_from,
                (true, true) => &sql.keys_range,
            };
            let st = c.prepare_cached(text).await.map_err(db_err)?;
            let name = cf.name();
            let rows = match &end {
                Some(end) => c.query(&st, &[&name, &start, &PAGE, end]).await,
                None => c.query(&st, &[&name, &start, &PAGE]).await,
            }
            .map_err(db_err)?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let k: Vec<u8> = r.get(0);
                    let v: Vec<u8> = if keys_only { Vec::new() } else { r.get(1) };
                    (k.into_boxed_slice(), v.into_boxed_slice())
                })
                .collect())
        })
    }

    /// Entries of `cf` from `start` to `end` (exclusive), a page at a time.
    pub(super) fn raw_scan(
        &self,
        cf: Cf,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        keys_only: bool,
    ) -> PgScan<'_> {
        PgScan {
            index: self,
            cf,
            next: Some(start),
            end,
            keys_only,
            buf: VecDeque::new(),
        }
    }

    pub(super) fn count(&self, cf: Cf) -> Result<u64, StorageError> {
        let (pool, sql) = (self.pool.clone(), self.sql.clone());
        self.call("count", async move {
            let c = pool.get().await.map_err(db_err)?;
            let row = c
                .query_one(&sql.count, &[&cf.name()])
                .await
                .map_err(db_err)?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
    }

    /// Takes the schema's session-level advisory lock `what` if no node
    /// holds it (GC runs: one node at a time). It is held by a connection
    /// of its own, kept out of the pool until the guard drops and closes
    /// it; a node that dies loses its connection, and the lock with it.
    pub(super) fn try_exclusive(&self, what: &str) -> Result<Option<PgExclusive>, StorageError> {
        let (pool, lock) = (self.pool.clone(), lock_key(&self.schema, what));
        self.call("take an exclusive lock", async move {
            let c = InTxn(Some(pool.get().await.map_err(db_err)?));
            let row = c
                .query_one("SELECT pg_try_advisory_lock($1)", &[&lock])
                .await
                .map_err(db_err)?;
            let held: bool = row.try_get(0).map_err(db_err)?;
            Ok(held.then_some(PgExclusive { _session: c }))
        })
    }

    /// Opens a transaction and waits for the cluster's write lock in it.
    pub(super) fn begin(&self) -> Result<PgTxn<'_>, StorageError> {
        Ok(self.begin_reading(&[])?.0)
    }

    /// [`PgIndex::begin`], then `reads` in the transaction once the lock
    /// is granted: the statements are pipelined, so lock and reads cost one
    /// round trip, and the reads see every batch committed before the lock
    /// was granted.
    pub(super) fn begin_reading(
        &self,
        reads: &[super::Ahead],
    ) -> Result<(PgTxn<'_>, Vec<super::Through>), StorageError> {
        let (pool, sql, lock) = (self.pool.clone(), self.sql.clone(), self.write_lock);
        let reads: Vec<_> = reads
            .iter()
            .map(|((cf, k), then)| {
                let then = then.as_ref().map(|(tcf, p)| (tcf.name(), p.clone()));
                ((cf.name(), k.clone()), then)
            })
            .collect();
        let (client, found) = self.call("take the write lock", async move {
            let c = InTxn(Some(pool.get().await.map_err(db_err)?));
            // IMPORTANT: both statements are prepared before anything is
            // sent, so the requests below go out in this order, pipelined,
            // and PostgreSQL runs the reads once the lock is granted.
            let lock_st = c.prepare_cached(&sql.lock).await.map_err(db_err)?;
            c.prepare_cached(&sql.get_batch).await.map_err(db_err)?;
            let refs: Vec<ReadRef<'_>> = reads
                .iter()
                .map(|((f, k), then)| {
                    let then = then.as_ref().map(|(tf, p)| (*tf, p.as_slice()));
                    ((*f, k.as_slice()), then)
                })
                .collect();
            let (_, _, found) = futures::try_join!(
                async { c.batch_execute("BEGIN").await.map_err(db_err) },
                async { c.execute(&lock_st, &[&lock]).await.map_err(db_err) },
                async {
                    if refs.is_empty() {
                        return Ok(Vec::new());
                    }
                    read_batch(&c, &sql, &refs).await
                },
            )?;
            Ok((c, found))
        })?;
        Ok((
            PgTxn {
                index: self,
                client: Some(client),
            },
            found,
        ))
    }

    /// Writes `rows` in `txn` without committing it (a bulk load spread
    /// over several statements, each bounded by [`CALL_TIMEOUT`], in one
    /// transaction).
    pub(super) fn load(
        &self,
        txn: &mut PgTxn<'_>,
        rows: Vec<(Cf, Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let Some(c) = txn.client.take() else {
            return Err(StorageError::Database {
                op: "load",
                message: "transaction already ended".to_owned(),
            });
        };
        let sql = self.sql.clone();
        let c = self.call("load", async move {
            upsert(&c, &sql, rows).await?;
            Ok(c)
        })?;
        txn.client = Some(c);
        Ok(())
    }

    /// Applies `ops` in `txn` and commits it, releasing the write lock.
    /// IMPORTANT: on any failure the connection is closed, not pooled
    /// ([`InTxn`]): its transaction may be open, aborted or (a lost COMMIT
    /// answer) committed, and PostgreSQL ends it with the connection.
    pub(super) fn commit(&self, mut txn: PgTxn<'_>, ops: Vec<Op>) -> Result<(), StorageError> {
        let Some(c) = txn.client.take() else {
            return Err(StorageError::Database {
                op: "commit",
                message: "transaction already ended".to_owned(),
            });
        };
        let (puts, deletes) = last_change_per_key(ops);
        let sql = self.sql.clone();
        self.call("commit", async move {
            // IMPORTANT: both statements are prepared before anything is
            // sent, so the three requests below go out in this order:
            // pipelined, PostgreSQL runs them in order.
            let upsert_st = c.prepare_cached(&sql.upsert).await.map_err(db_err)?;
            let delete_st = c.prepare_cached(&sql.delete).await.map_err(db_err)?;
            let (fams, keys, values) = columns(puts);
            let write = async {
                if !fams.is_empty() {
                    let params: [&(dyn ToSql + Sync); 3] = [&fams, &keys, &values];
                    c.execute(&upsert_st, &params).await.map_err(db_err)?;
                }
                Ok(())
            };
            let (del_fams, del_keys): (Vec<&str>, Vec<Vec<u8>>) =
                deletes.into_iter().map(|(cf, k)| (cf.name(), k)).unzip();
            let delete = async {
                if !del_fams.is_empty() {
                    let params: [&(dyn ToSql + Sync); 2] = [&del_fams, &del_keys];
                    c.execute(&delete_st, &params).await.map_err(db_err)?;
                }
                Ok(())
            };
            // IMPORTANT: if the write or the delete fails, the transaction
            // is aborted, PostgreSQL answers the COMMIT with a rollback, and
            // that statement's error fails the call (the connection is then
            // closed, not pooled): a COMMIT that answers after an error of
            // its own statements is never taken for success.
            futures::try_join!(write, delete, async {
                c.batch_execute("COMMIT").await.map_err(db_err)
            })?;
            drop(c.ended());
            Ok(())
        })
    }

    /// `VACUUM` of the entries table: no dead row keeps a deleted value in
    /// the heap.
    pub(super) fn vacuum(&self) -> Result<(), StorageError> {
        let (pool, s) = (self.pool.clone(), self.schema.clone());
        self.call("vacuum", async move {
            let c = pool.get().await.map_err(db_err)?;
            c.batch_execute(&format!("VACUUM {s}.entries"))
                .await
                .map_err(db_err)
        })
    }

    pub(super) fn stats(&self) -> DbStats {
        let (st, t) = (self.pool.status(), self.task_pool.status());
        let c = &self.counters;
        DbStats {
            calls: c.calls.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            latency_us: c.latency_us.load(Ordering::Relaxed),
            pool_size: (st.size + t.size) as u64,
            pool_idle: (st.available + t.available) as u64,
            pool_waiting: (st.waiting + t.waiting) as u64,
            pool_max: (st.max_size + t.max_size) as u64,
        }
    }
}

/// A scan of [`PgIndex::raw_scan`]: fetches the next page when the last
/// one is used up; after an error it ends.
pub(crate) struct PgScan<'a> {
    index: &'a PgIndex,
    cf: Cf,
    /// Where the next page starts; `None` once the range is exhausted.
    next: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    keys_only: bool,
    buf: VecDeque<RawEntry>,
}

impl Iterator for PgScan<'_> {
    type Item = Result<RawEntry, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            let start = self.next.take()?;
            match self
                .index
                .page(self.cf, start, self.end.clone(), self.keys_only)
            {
                Err(e) => return Some(Err(e)),
                Ok(rows) => {
                    if rows.len() as i64 == PAGE {
                        // The smallest key after the last one.
                        let mut after = rows[rows.len() - 1].0.to_vec();
                        after.push(0);
                        self.next = Some(after);
                    }
                    self.buf = rows.into();
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["berth", "_t1", "a_b_9"] {
            assert!(valid_schema(ok), "{ok}");
        }
        for bad in ["", "Berth", "9a", "a-b", "a;drop", "a.b", &"a".repeat(64)] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }

    #[test]
    fn lock_keys_differ_per_schema_and_purpose() {
        assert_ne!(lock_key("berth", "write"), lock_key("berth", "migrate"));
        assert_ne!(lock_key("berth", "write"), lock_key("other", "write"));
        assert_eq!(lock_key("berth", "write"), lock_key("berth", "write"));
    }

    #[test]
    fn redacted_url_hides_the_password() {
        let c = DatabaseConfig::new("postgres://berth:s3cret@db:5432/berth");
        assert!(!c.redacted_url().contains("s3cret"));
        assert!(c.redacted_url().contains("db:5432"));
    }
}
