//! akd's [`Database`] on a MySQL-protocol server (MariaDB, MySQL, Vitess).
//!
//! The schema is made to be sharded by Vitess (`docs/scale.md` has the vschema):
//!
//! | table | primary key | shard by |
//! |---|---|---|
//! | `kt_tree_nodes` | `k` = label length (u32 BE) ‖ label (32 B): the RocksDB key | `k` |
//! | `kt_value_states` | (`user`, `epoch`) | `user` |
//! | `kt_meta`, `kt_queue`, `kt_outcomes`, `kt_heads` | (`k`, `part`) | unsharded |
//! | `kt_audit_blobs` | (`k`, `part`) | `k` (the end epoch, u64 BE) |
//!
//! Every query on the two big tables names its shard key: a node read is `k IN (...)`,
//! a value-state read is `user = ?` or `user IN (...)`; there are no joins and no
//! temporary tables (akd's own MySQL backend used temporary-table joins for its batch
//! reads). Writes are batched multi-row upserts. Values are our own codec's
//! ([`super::codec`], the RocksDB backend's), so both backends store the same bytes.
//! Values of the publisher's tables are cut into [`PART_BYTES`] parts (audit blobs run
//! to 100 MB, beyond any sane `max_allowed_packet`).
//!
//! An akd transaction commit (a whole epoch) is one SQL transaction, with the `Azks`
//! row written last. On one server that is atomic. Sharded by Vitess it is atomic only
//! with Vitess's atomic distributed transactions (`transaction_mode=TWOPC`); without
//! them a crash in the middle of the commit can leave some shards committed, and only
//! the order (the `Azks` row, which moves the epoch, last) keeps readers from seeing a
//! half-written epoch as the current one (`docs/scale.md`).

use super::{
    AZKS_KEY, Cf, CommitHook, EpochCommit, Key, NodeKey, NodeLengths, NodeSink, RawEntry, SCHEMA_KEY, StorageError,
    Write, WriteGuard, codec, node_key_len, not_found,
};
use akd::errors::StorageError as AkdStorageError;
use akd::storage::types::{DbRecord, KeyData, ValueState, ValueStateRetrievalFlag};
use akd::storage::{Database, DbSetState, Storable};
use akd::{AkdLabel, AkdValue, Azks};
use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, TxOpts, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The MySQL layout this build reads and writes (tables, columns, codec).
pub const MYSQL_SCHEMA_VERSION: u32 = 1;
/// Values of the publisher's tables are stored in parts of at most this many bytes.
pub const PART_BYTES: usize = 512 << 10;
/// Smallest `max_allowed_packet` this backend works with: one part plus a statement's
/// overhead, or one batch of [`ROWS_PER_STATEMENT`] rows.
const MIN_PACKET_BYTES: u64 = 4 << 20;
/// Rows per multi-row statement (MySQL allows 65535 placeholders per statement).
const ROWS_PER_STATEMENT: usize = 1000;
/// Pooled connections a large batched read runs on at once (the publisher's preloads
/// and version reads, the readers' preloads): each waits for the server's disk, and a
/// server answers many statements at once. The counterpart of RocksDB's
/// `read_threads`.
const READ_CONNECTIONS: usize = 8;
/// Bytes of values per multi-row statement, well under [`MIN_PACKET_BYTES`].
const BYTES_PER_STATEMENT: usize = 1 << 20;
/// How long to wait for the server at start-up before giving up with a clear error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest user label a row can hold (an InnoDB key is at most 3072 bytes; the
/// directory's own limit is far lower, `max_label_bytes`).
const MAX_USER_BYTES: usize = 2048;

/// The table of a column family.
fn table(cf: Cf) -> &'static str {
    match cf {
        Cf::Meta => "kt_meta",
        Cf::TreeNodes => "kt_tree_nodes",
        Cf::ValueStates => "kt_value_states",
        Cf::Queue => "kt_queue",
        Cf::Outcomes => "kt_outcomes",
        Cf::Heads => "kt_heads",
        Cf::AuditBlobs => "kt_audit_blobs",
    }
}

/// `CREATE TABLE` of every table (idempotent).
fn create_statements() -> Vec<String> {
    let mut out = vec![
        "CREATE TABLE IF NOT EXISTS kt_tree_nodes (\
            k BINARY(36) NOT NULL PRIMARY KEY, \
            v BLOB NOT NULL\
         ) ENGINE=InnoDB"
            .to_owned(),
        format!(
            "CREATE TABLE IF NOT EXISTS kt_value_states (\
                user VARBINARY({MAX_USER_BYTES}) NOT NULL, \
                epoch BIGINT UNSIGNED NOT NULL, \
                version BIGINT UNSIGNED NOT NULL, \
                v BLOB NOT NULL, \
                PRIMARY KEY (user, epoch)\
             ) ENGINE=InnoDB"
        ),
    ];
    for cf in [Cf::Meta, Cf::Queue, Cf::Outcomes, Cf::Heads, Cf::AuditBlobs] {
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (\
                k VARBINARY(255) NOT NULL, \
                part INT UNSIGNED NOT NULL, \
                parts INT UNSIGNED NOT NULL, \
                v LONGBLOB NOT NULL, \
                PRIMARY KEY (k, part)\
             ) ENGINE=InnoDB",
            table(cf)
        ));
    }
    out
}

/// akd storage on a MySQL-protocol database. Cheap to clone: clones share one pool.
#[derive(Clone, Debug)]
pub struct MysqlStorage {
    inner: Arc<Inner>,
}

struct Inner {
    /// Connections to the server.
    pool: Pool,
    /// `user@host:port/database`, for logs and errors (never the password).
    target: String,
    /// A read replica's store: it never writes, and never creates tables.
    read_only: bool,
    /// The publisher's staged commit hook, and the fence set after any failed write: a
    /// commit whose outcome is unknown (the connection died before `COMMIT` answered)
    /// must not be guessed at; restart to re-read.
    writes: WriteGuard,
    /// Tree-node lengths that exist (see [`NodeLengths`]): a lookup's ~250 probes of
    /// absent nodes would otherwise each be a query.
    node_lengths: NodeLengths,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("target", &self.target)
            .field("read_only", &self.read_only)
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

fn db_err(op: &'static str) -> impl FnOnce(mysql_async::Error) -> StorageError {
    move |source| StorageError::Mysql { op, source }
}

/// `?, ?, ...` for `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `(?, ?), (?, ?), ...`: `rows` rows of `cols` values.
fn row_marks(rows: usize, cols: usize) -> String {
    vec![format!("({})", marks(cols)); rows].join(", ")
}

/// Splits rows into statements of at most [`ROWS_PER_STATEMENT`] rows and about
/// [`BYTES_PER_STATEMENT`] bytes.
fn statements<T>(rows: Vec<T>, bytes: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for row in rows {
        let b = bytes(&row);
        if !current.is_empty() && (current.len() == ROWS_PER_STATEMENT || size + b > BYTES_PER_STATEMENT) {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += b;
        current.push(row);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Reassembles a value from its parts, checking they are all there.
fn join_parts(cf: Cf, key: &[u8], rows: Vec<(u32, u32, Vec<u8>)>) -> Result<Option<Vec<u8>>, StorageError> {
    let Some(&(_, parts, _)) = rows.first() else {
        return Ok(None);
    };
    let complete = rows.len() == parts as usize
        && rows
            .iter()
            .enumerate()
            .all(|(i, (p, n, _))| *p as usize == i && *n == parts);
    if !complete {
        return Err(StorageError::corrupt(
            cf,
            key,
            codec::DecodeError::Invalid {
                field: "value parts",
                detail: format!("{} parts stored, out of order or not the {parts} announced", rows.len()),
            },
        ));
    }
    Ok(Some(rows.into_iter().flat_map(|(_, _, v)| v).collect()))
}

impl MysqlStorage {
    /// Connects to `url` (`mysql://user:password@host:port/database`), checks the
    /// server's settings, creates the tables if missing and checks the schema version.
    /// With `read_only` (a replica), nothing is created: an empty database is an error.
    pub async fn open(url: &str, read_only: bool) -> Result<Self, StorageError> {
        let opts = Opts::from_url(url).map_err(|e| StorageError::MysqlSetup(format!("bad MySQL URL: {e}")))?;
        let target = format!(
            "{}@{}:{}/{}",
            opts.user().unwrap_or(""),
            opts.ip_or_hostname(),
            opts.tcp_port(),
            opts.db_name().unwrap_or("")
        );
        if opts.db_name().is_none_or(str::is_empty) {
            return Err(StorageError::MysqlSetup(format!(
                "the MySQL URL names no database ({target}); add /<database> to it"
            )));
        }
        let constraints = PoolConstraints::new(1, 64).unwrap_or_default();
        let opts = OptsBuilder::from_opts(opts).pool_opts(PoolOpts::default().with_constraints(constraints));
        let pool = Pool::new(opts);
        let storage = MysqlStorage {
            inner: Arc::new(Inner {
                pool,
                target,
                read_only,
                writes: WriteGuard::default(),
                node_lengths: NodeLengths::default(),
            }),
        };
        let mut conn = storage.connect_first().await?;
        storage.check_server(&mut conn).await?;
        if !read_only {
            for statement in create_statements() {
                conn.query_drop(statement).await.map_err(db_err("create table"))?;
            }
        }
        storage.check_schema(&mut conn).await?;
        drop(conn);
        storage.learn_node_lengths().await?;
        Ok(storage)
    }

    /// `user@host:port/database`.
    pub fn describe(&self) -> &str {
        &self.inner.target
    }

    /// The first connection, with a deadline and a message that says where.
    async fn connect_first(&self) -> Result<Conn, StorageError> {
        let target = self.inner.target.clone();
        match tokio::time::timeout(CONNECT_TIMEOUT, self.inner.pool.get_conn()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(source)) => Err(StorageError::MysqlConnect { target, source }),
            Err(_) => Err(StorageError::MysqlSetup(format!(
                "no answer from {target} within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn conn(&self) -> Result<Conn, StorageError> {
        self.inner.pool.get_conn().await.map_err(db_err("connect"))
    }

    async fn check_server(&self, conn: &mut Conn) -> Result<(), StorageError> {
        let packet: Option<u64> = conn
            .query_first("SELECT @@max_allowed_packet")
            .await
            .map_err(db_err("read settings"))?;
        match packet {
            Some(p) if p >= MIN_PACKET_BYTES => Ok(()),
            other => Err(StorageError::MysqlSetup(format!(
                "max_allowed_packet is {other:?} on {}; this backend needs at least {MIN_PACKET_BYTES} \
                 (SET GLOBAL max_allowed_packet = 67108864)",
                self.inner.target
            ))),
        }
    }

    async fn check_schema(&self, conn: &mut Conn) -> Result<(), StorageError> {
        let tables: Vec<String> = conn
            .query("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
            .await
            .map_err(db_err("list tables"))?;
        let missing: Vec<&str> = Cf::ALL
            .iter()
            .map(|&cf| table(cf))
            .filter(|t| !tables.iter().any(|have| have.eq_ignore_ascii_case(t)))
            .collect();
        if !missing.is_empty() {
            return Err(StorageError::Empty(format!(
                "{} has no directory tables ({}): start the publisher on it first",
                self.inner.target,
                missing.join(", ")
            )));
        }
        let found = get_parts(conn, Cf::Meta, SCHEMA_KEY).await?;
        match found {
            Some(v) if v.as_slice() == MYSQL_SCHEMA_VERSION.to_be_bytes() => Ok(()),
            Some(v) => Err(StorageError::Schema {
                found: hex::encode(v),
                expected: MYSQL_SCHEMA_VERSION,
            }),
            None if self.inner.read_only => Err(StorageError::Empty(format!(
                "{} holds no directory yet: start the publisher on it first",
                self.inner.target
            ))),
            None => {
                self.write(vec![Write::Put(
                    Cf::Meta,
                    SCHEMA_KEY.to_vec(),
                    MYSQL_SCHEMA_VERSION.to_be_bytes().to_vec(),
                )])
                .await
            }
        }
    }

    /// Nothing to catch up with: every query sees the latest commit.
    pub async fn catch_up(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Learns the tree-node lengths stored since the last call: one indexed probe per
    /// length not yet known.
    pub async fn learn_node_lengths(&self) -> Result<(), StorageError> {
        let mut conn = self.conn().await?;
        for len in 0..=256u32 {
            if self.inner.node_lengths.may_contain(len) {
                continue;
            }
            let from = len.to_be_bytes().to_vec();
            let to = (len + 1).to_be_bytes().to_vec();
            let found: Option<u8> = conn
                .exec_first("SELECT 1 FROM kt_tree_nodes WHERE k >= ? AND k < ? LIMIT 1", (from, to))
                .await
                .map_err(db_err("scan node lengths"))?;
            if found.is_some() {
                self.inner.node_lengths.insert(len);
            }
        }
        Ok(())
    }

    /// The `Azks` row as stored (the last committed epoch).
    pub async fn stored_azks(&self) -> Result<Option<Azks>, StorageError> {
        let mut conn = self.conn().await?;
        get_azks(&mut conn).await
    }

    /// Stages `hook` for akd's next transaction commit (replacing any staged one).
    pub fn stage_commit_hook(&self, hook: CommitHook) {
        self.inner.writes.stage(hook);
    }

    /// Removes a staged hook; `true` if it was still staged (no commit consumed it).
    pub fn clear_commit_hook(&self) -> bool {
        self.inner.writes.clear()
    }

    /// Whether an earlier write failed (see [`StorageError::WritesFenced`]).
    pub fn is_fenced(&self) -> bool {
        self.inner.writes.is_fenced()
    }

    /// Applies `writes` in one transaction.
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), StorageError> {
        self.commit(&[], writes).await
    }

    /// One value of one of the publisher's tables.
    pub async fn get_raw(&self, cf: Cf, key: Vec<u8>) -> Result<Option<Vec<u8>>, StorageError> {
        let mut conn = self.conn().await?;
        get_parts(&mut conn, cf, &key).await
    }

    /// Up to `limit` entries of `cf` with keys `>= from`, in key order.
    pub async fn scan(&self, cf: Cf, from: Vec<u8>, limit: usize) -> Result<Vec<RawEntry>, StorageError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(Vec<u8>, u32, Vec<u8>)> = conn
            .exec(
                format!(
                    "SELECT k, parts, v FROM {} WHERE k >= ? AND part = 0 ORDER BY k LIMIT ?",
                    table(cf)
                ),
                (from, u64::try_from(limit).unwrap_or(u64::MAX)),
            )
            .await
            .map_err(db_err("scan"))?;
        let mut out = Vec::with_capacity(rows.len());
        for (k, parts, v) in rows {
            if parts == 1 {
                out.push((k, v));
            } else if let Some(whole) = get_parts(&mut conn, cf, &k).await? {
                out.push((k, whole));
            }
        }
        Ok(out)
    }

    /// The entry with the greatest key in `cf`.
    pub async fn last(&self, cf: Cf) -> Result<Option<RawEntry>, StorageError> {
        let mut conn = self.conn().await?;
        let key: Option<Vec<u8>> = conn
            .query_first(format!(
                "SELECT k FROM {} WHERE part = 0 ORDER BY k DESC LIMIT 1",
                table(cf)
            ))
            .await
            .map_err(db_err("last"))?;
        let Some(key) = key else { return Ok(None) };
        Ok(get_parts(&mut conn, cf, &key).await?.map(|v| (key, v)))
    }

    /// Counts the entries of `cf`.
    pub async fn count(&self, cf: Cf) -> Result<u64, StorageError> {
        let mut conn = self.conn().await?;
        // akd's tables hold one row per record; the publisher's, one per part.
        let whole = if matches!(cf, Cf::TreeNodes | Cf::ValueStates) {
            ""
        } else {
            " WHERE part = 0"
        };
        let n: Option<u64> = conn
            .query_first(format!("SELECT COUNT(*) FROM {}{whole}", table(cf)))
            .await
            .map_err(db_err("count"))?;
        Ok(n.unwrap_or(0))
    }

    /// `label`'s newest (version, epoch, value) at or before `epoch`.
    pub async fn latest_state(&self, label: Vec<u8>, epoch: u64) -> Result<Option<(u64, u64, Vec<u8>)>, StorageError> {
        Ok(self
            .user_state(&label, ValueStateRetrievalFlag::LeqEpoch(epoch))
            .await?
            .map(|s| (s.version, s.epoch, s.value.0)))
    }

    /// Bytes per table as the server reports them (InnoDB's estimate: data + indexes).
    pub async fn live_bytes_all(&self) -> Result<Vec<(Cf, u64)>, StorageError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(String, u64)> = conn
            .query(
                "SELECT table_name, CAST(data_length + index_length AS UNSIGNED) \
                 FROM information_schema.tables WHERE table_schema = DATABASE()",
            )
            .await
            .map_err(db_err("table sizes"))?;
        Ok(Cf::ALL
            .iter()
            .map(|&cf| {
                let bytes = rows
                    .iter()
                    .find(|(t, _)| t.eq_ignore_ascii_case(table(cf)))
                    .map_or(0, |(_, b)| *b);
                (cf, bytes)
            })
            .collect())
    }

    /// Refreshes the server's table statistics (`ANALYZE TABLE`), on which
    /// [`MysqlStorage::live_bytes_all`] is based.
    pub async fn analyze(&self) -> Result<(), StorageError> {
        let mut conn = self.conn().await?;
        let tables: Vec<&str> = Cf::ALL.iter().map(|&cf| table(cf)).collect();
        conn.query_drop(format!("ANALYZE TABLE {}", tables.join(", ")))
            .await
            .map_err(db_err("analyze"))
    }

    /// One transaction: the publisher's `extra` writes, akd's records, the `Azks` row
    /// last. Any failure fences later writes.
    async fn commit(&self, records: &[DbRecord], extra: Vec<Write>) -> Result<(), StorageError> {
        let mut rows = Rows::default();
        for record in records {
            match record {
                DbRecord::Azks(a) => rows.azks = Some(codec::encode_azks(a)),
                DbRecord::TreeNode(node) => {
                    self.inner.node_lengths.insert(node.label.label_len);
                    rows.nodes
                        .push((codec::node_key(&node.label).to_vec(), codec::encode_tree_node(node)));
                }
                DbRecord::ValueState(state) => rows.add_state(state)?,
            }
        }
        self.add_writes(&mut rows, extra)?;
        self.commit_rows(rows).await
    }

    /// One epoch in one transaction (see [`MysqlStorage::commit`]).
    pub async fn commit_epoch(&self, commit: EpochCommit) -> Result<(), StorageError> {
        let mut rows = Rows::default();
        self.add_writes(&mut rows, commit.writes)?;
        rows.nodes.reserve(commit.nodes.node_count());
        commit.nodes.for_each_node(&mut |key, value| {
            self.inner.node_lengths.insert(node_key_len(key));
            rows.nodes.push((key.to_vec(), value.to_vec()));
            Ok(())
        })?;
        for state in &commit.states {
            rows.add_state(state)?;
        }
        rows.azks = Some(codec::encode_azks(&commit.azks));
        self.commit_rows(rows).await
    }

    /// Sorts the publisher's writes into `rows` (tree nodes and value states go with
    /// akd's).
    fn add_writes(&self, rows: &mut Rows, extra: Vec<Write>) -> Result<(), StorageError> {
        for w in extra {
            match w {
                Write::Put(Cf::TreeNodes, k, v) => {
                    if let Some(len) = super::key_label_len(&k) {
                        self.inner.node_lengths.insert(len);
                    }
                    rows.nodes.push((k, v));
                }
                Write::Put(Cf::ValueStates, k, v) => {
                    let (user, epoch) =
                        codec::split_value_state_key(&k).map_err(|e| StorageError::corrupt(Cf::ValueStates, &k, e))?;
                    let (version, _) = codec::decode_version_and_value(&v)
                        .map_err(|e| StorageError::corrupt(Cf::ValueStates, &k, e))?;
                    rows.states.push((user.to_vec(), epoch, version, v));
                }
                Write::Put(cf, k, v) => rows.puts.entry(cf).or_default().push((k, v)),
                Write::Delete(cf, k) => rows.deletes.entry(cf).or_default().push(k),
            }
        }
        Ok(())
    }

    /// Writes `rows` in one transaction, fencing later writes on any failure.
    async fn commit_rows(&self, rows: Rows) -> Result<(), StorageError> {
        if self.inner.read_only {
            return Err(StorageError::ReadOnly);
        }
        self.inner.writes.check()?;
        let count = rows.nodes.len() + rows.states.len();
        let result = self.commit_unfenced(rows).await;
        if let Err(e) = &result {
            self.inner.writes.fence();
            tracing::error!(target = %self.inner.target, records = count, error = %e, "MySQL write failed; fencing writes");
        }
        result
    }

    async fn commit_unfenced(&self, rows: Rows) -> Result<(), StorageError> {
        let Rows {
            nodes,
            states,
            azks,
            puts,
            deletes,
        } = rows;
        let mut conn = self.conn().await?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(db_err("begin"))?;
        for (cf, keys) in deletes {
            delete_keys(&mut tx, cf, keys).await?;
        }
        for (cf, entries) in puts {
            put_parts(&mut tx, cf, entries).await?;
        }
        for batch in statements(nodes, |(k, v)| k.len() + v.len()) {
            let sql = format!(
                "INSERT INTO kt_tree_nodes (k, v) VALUES {} ON DUPLICATE KEY UPDATE v = VALUES(v)",
                row_marks(batch.len(), 2)
            );
            let params: Vec<Value> = batch
                .into_iter()
                .flat_map(|(k, v)| [Value::from(k), Value::from(v)])
                .collect();
            tx.exec_drop(sql, params).await.map_err(db_err("write tree nodes"))?;
        }
        for batch in statements(states, |(u, _, _, v)| u.len() + v.len() + 16) {
            let sql = format!(
                "INSERT INTO kt_value_states (user, epoch, version, v) VALUES {} \
                 ON DUPLICATE KEY UPDATE version = VALUES(version), v = VALUES(v)",
                row_marks(batch.len(), 4)
            );
            let params: Vec<Value> = batch
                .into_iter()
                .flat_map(|(u, e, ver, v)| [Value::from(u), Value::from(e), Value::from(ver), Value::from(v)])
                .collect();
            tx.exec_drop(sql, params).await.map_err(db_err("write value states"))?;
        }
        // The row that moves the epoch goes last (see the module docs).
        if let Some(azks) = azks {
            put_parts(&mut tx, Cf::Meta, vec![(AZKS_KEY.to_vec(), azks)]).await?;
        }
        tx.commit().await.map_err(db_err("commit"))
    }

    /// The tree nodes at `keys` that exist, raw, into `sink`: statements of
    /// [`ROWS_PER_STATEMENT`] keys on up to [`READ_CONNECTIONS`] connections at once.
    pub async fn read_nodes(&self, mut keys: Vec<NodeKey>, sink: NodeSink) -> Result<(), StorageError> {
        keys.retain(|k| self.inner.node_lengths.may_contain(node_key_len(k)));
        let chunks: Vec<Vec<NodeKey>> = keys.chunks(ROWS_PER_STATEMENT).map(<[NodeKey]>::to_vec).collect();
        futures_util::stream::iter(chunks)
            .map(|chunk| {
                let sink = Arc::clone(&sink);
                let this = self.clone();
                async move {
                    for (k, v) in this.node_rows(&chunk).await? {
                        let key: NodeKey = k
                            .as_slice()
                            .try_into()
                            .map_err(|_| StorageError::MysqlSetup(format!("a tree-node key of {} bytes", k.len())))?;
                        sink(&key, &v)?;
                    }
                    Ok::<(), StorageError>(())
                }
            })
            .buffer_unordered(READ_CONNECTIONS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// `(k, v)` of the stored tree nodes among `keys`, on a connection of its own.
    async fn node_rows(&self, keys: &[NodeKey]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        let mut conn = self.conn().await?;
        let sql = format!("SELECT k, v FROM kt_tree_nodes WHERE k IN ({})", marks(keys.len()));
        let params: Vec<Value> = keys.iter().map(|k| Value::from(k.to_vec())).collect();
        conn.exec(sql, params).await.map_err(db_err("batch get tree nodes"))
    }

    async fn get(&self, key: &Key) -> Result<Option<DbRecord>, StorageError> {
        let mut conn = self.conn().await?;
        Ok(match key {
            Key::Azks => get_azks(&mut conn).await?.map(DbRecord::Azks),
            Key::Node(k) if !self.inner.node_lengths.may_contain(node_key_len(k)) => None,
            Key::Node(k) => {
                let v: Option<Vec<u8>> = conn
                    .exec_first("SELECT v FROM kt_tree_nodes WHERE k = ?", (k.to_vec(),))
                    .await
                    .map_err(db_err("get tree node"))?;
                v.map(|v| decode_node(k, &v)).transpose()?
            }
            Key::State { user, epoch } => {
                let v: Option<Vec<u8>> = conn
                    .exec_first(
                        "SELECT v FROM kt_value_states WHERE user = ? AND epoch = ?",
                        (user.clone(), *epoch),
                    )
                    .await
                    .map_err(db_err("get value state"))?;
                v.map(|v| decode_state(user, *epoch, &v).map(DbRecord::ValueState))
                    .transpose()?
            }
        })
    }

    async fn batch_get_keys(&self, keys: Vec<Key>) -> Result<Vec<DbRecord>, StorageError> {
        let mut azks = false;
        let mut nodes = Vec::new();
        let mut states = Vec::new();
        for key in keys {
            match key {
                Key::Azks => azks = true,
                Key::Node(k) if self.inner.node_lengths.may_contain(node_key_len(&k)) => nodes.push(k),
                Key::Node(_) => {}
                Key::State { user, epoch } => states.push((user, epoch)),
            }
        }
        let mut out = Vec::new();
        if !azks && nodes.is_empty() && states.is_empty() {
            return Ok(out);
        }
        let mut conn = self.conn().await?;
        if azks {
            out.extend(get_azks(&mut conn).await?.map(DbRecord::Azks));
        }
        let chunks: Vec<Vec<NodeKey>> = nodes.chunks(ROWS_PER_STATEMENT).map(<[NodeKey]>::to_vec).collect();
        let node_rows: Vec<Vec<(Vec<u8>, Vec<u8>)>> = futures_util::stream::iter(chunks)
            .map(|chunk| {
                let this = self.clone();
                async move { this.node_rows(&chunk).await }
            })
            .buffer_unordered(READ_CONNECTIONS)
            .try_collect()
            .await?;
        for (k, v) in node_rows.into_iter().flatten() {
            out.push(decode_node(&k, &v)?);
        }
        for chunk in states.chunks(ROWS_PER_STATEMENT / 2) {
            let sql = format!(
                "SELECT user, epoch, v FROM kt_value_states WHERE (user, epoch) IN ({})",
                row_marks(chunk.len(), 2)
            );
            let params: Vec<Value> = chunk
                .iter()
                .flat_map(|(u, e)| [Value::from(u.clone()), Value::from(*e)])
                .collect();
            let rows: Vec<(Vec<u8>, u64, Vec<u8>)> =
                conn.exec(sql, params).await.map_err(db_err("batch get value states"))?;
            for (u, e, v) in rows {
                out.push(DbRecord::ValueState(decode_state(&u, e, &v)?));
            }
        }
        Ok(out)
    }

    async fn user_states(&self, user: &[u8]) -> Result<Vec<ValueState>, StorageError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(u64, Vec<u8>)> = conn
            .exec(
                "SELECT epoch, v FROM kt_value_states WHERE user = ? ORDER BY epoch",
                (user.to_vec(),),
            )
            .await
            .map_err(db_err("get user data"))?;
        rows.into_iter().map(|(e, v)| decode_state(user, e, &v)).collect()
    }

    async fn user_state(&self, user: &[u8], flag: ValueStateRetrievalFlag) -> Result<Option<ValueState>, StorageError> {
        let u = Value::from(user.to_vec());
        let (sql, params): (&str, Vec<Value>) = match flag {
            ValueStateRetrievalFlag::SpecificEpoch(e) => (
                "SELECT epoch, v FROM kt_value_states WHERE user = ? AND epoch = ?",
                vec![u, e.into()],
            ),
            ValueStateRetrievalFlag::LeqEpoch(e) => (
                "SELECT epoch, v FROM kt_value_states WHERE user = ? AND epoch <= ? ORDER BY epoch DESC LIMIT 1",
                vec![u, e.into()],
            ),
            ValueStateRetrievalFlag::MaxEpoch => (
                "SELECT epoch, v FROM kt_value_states WHERE user = ? ORDER BY epoch DESC LIMIT 1",
                vec![u],
            ),
            ValueStateRetrievalFlag::MinEpoch => (
                "SELECT epoch, v FROM kt_value_states WHERE user = ? ORDER BY epoch ASC LIMIT 1",
                vec![u],
            ),
            ValueStateRetrievalFlag::SpecificVersion(version) => (
                "SELECT epoch, v FROM kt_value_states WHERE user = ? AND version = ? ORDER BY epoch LIMIT 1",
                vec![u, version.into()],
            ),
        };
        let mut conn = self.conn().await?;
        let row: Option<(u64, Vec<u8>)> = conn.exec_first(sql, params).await.map_err(db_err("get user state"))?;
        row.map(|(e, v)| decode_state(user, e, &v)).transpose()
    }

    /// The state `flag` selects for each user, by one `user IN (...)` query per chunk
    /// of users (the shard key): all their states come back and are chosen here.
    async fn user_state_versions(
        &self,
        users: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
        let mut out: HashMap<AkdLabel, (u64, u64, AkdValue)> = HashMap::with_capacity(users.len());
        let chunks: Vec<Vec<AkdLabel>> = users.chunks(ROWS_PER_STATEMENT).map(<[AkdLabel]>::to_vec).collect();
        let chunks: Vec<Vec<StateRow>> = futures_util::stream::iter(chunks)
            .map(|chunk| {
                let this = self.clone();
                async move {
                    let mut conn = this.conn().await?;
                    let sql = format!(
                        "SELECT user, epoch, version, v FROM kt_value_states WHERE user IN ({})",
                        marks(chunk.len())
                    );
                    let params: Vec<Value> = chunk.iter().map(|u| Value::from(u.0.clone())).collect();
                    conn.exec(sql, params).await.map_err(db_err("get user state versions"))
                }
            })
            .buffer_unordered(READ_CONNECTIONS)
            .try_collect()
            .await?;
        for rows in chunks {
            for (user, epoch, version, v) in rows {
                let wanted = match flag {
                    ValueStateRetrievalFlag::SpecificEpoch(e) => epoch == e,
                    ValueStateRetrievalFlag::LeqEpoch(e) => epoch <= e,
                    ValueStateRetrievalFlag::MaxEpoch | ValueStateRetrievalFlag::MinEpoch => true,
                    ValueStateRetrievalFlag::SpecificVersion(want) => version == want,
                };
                if !wanted {
                    continue;
                }
                let label = AkdLabel(user);
                let better = match (out.get(&label), flag) {
                    (None, _) => true,
                    (Some(&(have, _, _)), ValueStateRetrievalFlag::MinEpoch) => epoch < have,
                    (Some(&(have, _, _)), ValueStateRetrievalFlag::SpecificVersion(_)) => epoch < have,
                    (Some(&(have, _, _)), _) => epoch > have,
                };
                if better {
                    let (ver, value) = codec::decode_version_and_value(&v)
                        .map_err(|e| StorageError::corrupt(Cf::ValueStates, &label.0, e))?;
                    out.insert(label, (epoch, ver, value));
                }
            }
        }
        Ok(out.into_iter().map(|(k, (_, ver, value))| (k, (ver, value))).collect())
    }
}

/// A `kt_value_states` row: (user, epoch, version, encoded state).
type StateRow = (Vec<u8>, u64, u64, Vec<u8>);

/// The rows of one transaction, by table.
#[derive(Debug, Default)]
struct Rows {
    /// `kt_tree_nodes` upserts: (key, encoded record).
    nodes: Vec<RawEntry>,
    /// `kt_value_states` upserts.
    states: Vec<StateRow>,
    /// The encoded `Azks` row, written last: it moves the epoch.
    azks: Option<Vec<u8>>,
    /// The publisher's tables: puts, by table.
    puts: HashMap<Cf, Vec<RawEntry>>,
    /// The publisher's tables: deletes, by table.
    deletes: HashMap<Cf, Vec<Vec<u8>>>,
}

impl Rows {
    fn add_state(&mut self, state: &ValueState) -> Result<(), StorageError> {
        if state.username.0.len() > MAX_USER_BYTES {
            return Err(StorageError::BadKey(format!(
                "user label of {} bytes; the MySQL backend stores at most {MAX_USER_BYTES}",
                state.username.0.len()
            )));
        }
        self.states.push((
            state.username.0.clone(),
            state.epoch,
            state.version,
            codec::encode_value_state(state),
        ));
        Ok(())
    }
}

/// A value of one of the publisher's tables, reassembled from its parts.
async fn get_parts(conn: &mut impl Queryable, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    let rows: Vec<(u32, u32, Vec<u8>)> = conn
        .exec(
            format!("SELECT part, parts, v FROM {} WHERE k = ? ORDER BY part", table(cf)),
            (key.to_vec(),),
        )
        .await
        .map_err(db_err("get"))?;
    join_parts(cf, key, rows)
}

async fn get_azks(conn: &mut impl Queryable) -> Result<Option<Azks>, StorageError> {
    get_parts(conn, Cf::Meta, AZKS_KEY)
        .await?
        .map(|v| codec::decode_azks(&v).map_err(|e| StorageError::corrupt(Cf::Meta, AZKS_KEY, e)))
        .transpose()
}

/// Deletes every part of `keys`.
async fn delete_keys(tx: &mut impl Queryable, cf: Cf, keys: Vec<Vec<u8>>) -> Result<(), StorageError> {
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = format!("DELETE FROM {} WHERE k IN ({})", table(cf), marks(chunk.len()));
        let params: Vec<Value> = chunk.iter().map(|k| Value::from(k.clone())).collect();
        tx.exec_drop(sql, params).await.map_err(db_err("delete"))?;
    }
    Ok(())
}

/// Replaces the values at `entries`' keys, each cut into [`PART_BYTES`] parts.
async fn put_parts(tx: &mut impl Queryable, cf: Cf, entries: Vec<RawEntry>) -> Result<(), StorageError> {
    // A value may shrink to fewer parts: drop the old parts first (one statement per
    // batch of keys), then insert.
    let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.clone()).collect();
    delete_keys(tx, cf, keys).await?;
    let mut rows = Vec::new();
    for (k, v) in entries {
        if k.len() > 255 {
            return Err(StorageError::BadKey(format!("key of {} bytes in {cf}", k.len())));
        }
        let parts: Vec<Vec<u8>> = if v.is_empty() {
            vec![Vec::new()]
        } else {
            v.chunks(PART_BYTES).map(<[u8]>::to_vec).collect()
        };
        let n = u32::try_from(parts.len()).map_err(|_| StorageError::BadKey(format!("value too large in {cf}")))?;
        for (i, part) in parts.into_iter().enumerate() {
            rows.push((k.clone(), u32::try_from(i).unwrap_or(u32::MAX), n, part));
        }
    }
    for batch in statements(rows, |(k, _, _, v)| k.len() + v.len()) {
        let sql = format!(
            "INSERT INTO {} (k, part, parts, v) VALUES {}",
            table(cf),
            row_marks(batch.len(), 4)
        );
        let params: Vec<Value> = batch
            .into_iter()
            .flat_map(|(k, i, n, v)| [Value::from(k), Value::from(i), Value::from(n), Value::from(v)])
            .collect();
        tx.exec_drop(sql, params).await.map_err(db_err("put"))?;
    }
    Ok(())
}

fn decode_node(key: &[u8], value: &[u8]) -> Result<DbRecord, StorageError> {
    let corrupt = |e| StorageError::corrupt(Cf::TreeNodes, key, e);
    let label = codec::node_label_from_key(key).map_err(corrupt)?;
    Ok(DbRecord::TreeNode(
        codec::decode_tree_node(label, value).map_err(corrupt)?,
    ))
}

fn decode_state(user: &[u8], epoch: u64, value: &[u8]) -> Result<ValueState, StorageError> {
    codec::decode_value_state(user, epoch, value)
        .map_err(|e| StorageError::corrupt(Cf::ValueStates, &codec::value_state_key(user, epoch), e))
}

#[async_trait]
impl Database for MysqlStorage {
    async fn set(&self, record: DbRecord) -> Result<(), AkdStorageError> {
        self.batch_set(vec![record], DbSetState::General).await
    }

    /// One SQL transaction: a `TransactionCommit` (a whole epoch) lands atomically,
    /// together with the writes of a staged [`CommitHook`].
    async fn batch_set(&self, records: Vec<DbRecord>, state: DbSetState) -> Result<(), AkdStorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let extra = match self.inner.writes.hook_for(state) {
            Some(hook) => hook(&records)?,
            None => Vec::new(),
        };
        Ok(self.commit(&records, extra).await?)
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, AkdStorageError> {
        let key = Key::of::<St>(id)?;
        MysqlStorage::get(self, &key)
            .await?
            .ok_or_else(|| not_found((St::data_type(), id)))
    }

    async fn batch_get<St: Storable>(&self, ids: &[St::StorageKey]) -> Result<Vec<DbRecord>, AkdStorageError> {
        let keys = ids.iter().map(Key::of::<St>).collect::<Result<Vec<_>, _>>()?;
        Ok(self.batch_get_keys(keys).await?)
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, AkdStorageError> {
        let states = self.user_states(&username.0).await?;
        if states.is_empty() {
            return Err(not_found(username));
        }
        Ok(KeyData { states })
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, AkdStorageError> {
        self.user_state(&username.0, flag)
            .await?
            .ok_or_else(|| not_found((username, flag)))
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, AkdStorageError> {
        Ok(self.user_state_versions(usernames, flag).await?)
    }
}

/// For this workspace's tests: a new, empty database named after `test` on the
/// server `KT_TEST_MYSQL_URL` names (`mysql://user:password@host:port`, as
/// `scripts/mariadb.sh start` prints it), as a URL for [`MysqlStorage::open`].
/// `Ok(None)` when no server is named, so the caller can skip (a `SKIPPED` line on
/// stderr says so); an error instead when `KT_REQUIRE_MYSQL=1` (the test command sets
/// it, so nothing is skipped in CI).
pub async fn test_database(test: &str) -> Result<Option<String>, StorageError> {
    let Ok(base) = std::env::var("KT_TEST_MYSQL_URL") else {
        if std::env::var("KT_REQUIRE_MYSQL").as_deref() == Ok("1") {
            return Err(StorageError::MysqlSetup(
                "KT_REQUIRE_MYSQL=1 but KT_TEST_MYSQL_URL is not set".into(),
            ));
        }
        eprintln!("SKIPPED {test}: set KT_TEST_MYSQL_URL (bash scripts/mariadb.sh start DIR prints one)");
        return Ok(None);
    };
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = base.trim_end_matches('/').to_owned();
    let name = format!(
        "kt_{}_{}_{}",
        test.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(24)
            .collect::<String>(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let pool = Pool::new(Opts::from_url(&base).map_err(|e| StorageError::MysqlSetup(format!("bad MySQL URL: {e}")))?);
    let mut conn = pool.get_conn().await.map_err(db_err("connect"))?;
    conn.query_drop(format!("CREATE DATABASE {name}"))
        .await
        .map_err(db_err("create database"))?;
    drop(conn);
    pool.disconnect().await.map_err(db_err("disconnect"))?;
    Ok(Some(format!("{base}/{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_respect_row_and_byte_bounds() {
        let rows: Vec<usize> = vec![10; 2500];
        let batches = statements(rows, |r| *r);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [1000, 1000, 500]);
        let big: Vec<usize> = vec![BYTES_PER_STATEMENT / 2 + 1; 3];
        assert_eq!(statements(big, |r| *r).len(), 3, "two rows would pass the byte bound");
        let huge = vec![BYTES_PER_STATEMENT * 4];
        assert_eq!(statements(huge, |r| *r).len(), 1, "a single large row is still sent");
    }

    #[test]
    fn parts_must_be_complete_and_ordered() {
        let ok = vec![(0, 2, b"ab".to_vec()), (1, 2, b"c".to_vec())];
        assert_eq!(join_parts(Cf::Heads, b"k", ok).expect("ok"), Some(b"abc".to_vec()));
        assert_eq!(join_parts(Cf::Heads, b"k", vec![]).expect("none"), None);
        let missing = vec![(0, 3, b"ab".to_vec()), (1, 3, b"c".to_vec())];
        assert!(join_parts(Cf::Heads, b"k", missing).is_err());
        let gap = vec![(0, 2, b"ab".to_vec()), (2, 2, b"c".to_vec())];
        assert!(join_parts(Cf::Heads, b"k", gap).is_err());
    }
}
