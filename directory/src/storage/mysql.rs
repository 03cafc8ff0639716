//! The MySQL-protocol engine (MariaDB, MySQL, Vitess) under [`super::Store`].
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

use super::engine::{Batch, Engine, StateEntry, StateRow};
use super::{Cf, NodeKey, NodeSink, RawEntry, StorageError, codec};
use akd::storage::types::ValueStateRetrievalFlag;
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
        Cf::Log => "kt_epoch_log",
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
    for cf in [Cf::Meta, Cf::Queue, Cf::Outcomes, Cf::Heads, Cf::AuditBlobs, Cf::Log] {
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

/// A MySQL-protocol database. Cheap to clone: clones share one pool.
#[derive(Clone, Debug)]
pub struct MysqlEngine {
    inner: Arc<Inner>,
}

struct Inner {
    /// Connections to the server.
    pool: Pool,
    /// `user@host:port/database`, for logs and errors (never the password).
    target: String,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("target", &self.target)
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

impl MysqlEngine {
    /// Connects to `url` (`mysql://user:password@host:port/database`), checks the
    /// server's settings and, unless `read_only` (a replica), creates the tables that
    /// are missing. A database without the tables is [`StorageError::Empty`].
    pub async fn open(url: &str, read_only: bool) -> Result<Self, StorageError> {
        let opts = Opts::from_url(url).map_err(|source| StorageError::MysqlUrl { source })?;
        let target = format!(
            "{}@{}:{}/{}",
            opts.user().unwrap_or(""),
            opts.ip_or_hostname(),
            opts.tcp_port(),
            opts.db_name().unwrap_or("")
        );
        if opts.db_name().is_none_or(str::is_empty) {
            return Err(StorageError::MysqlNoDatabase { target });
        }
        let constraints = PoolConstraints::new(1, 64).unwrap_or_default();
        let opts = OptsBuilder::from_opts(opts).pool_opts(PoolOpts::default().with_constraints(constraints));
        let engine = MysqlEngine {
            inner: Arc::new(Inner {
                pool: Pool::new(opts),
                target,
            }),
        };
        let mut conn = engine.connect_first().await?;
        engine.check_server(&mut conn).await?;
        if !read_only {
            for statement in create_statements() {
                conn.query_drop(statement).await.map_err(db_err("create table"))?;
            }
        }
        engine.check_tables(&mut conn).await?;
        Ok(engine)
    }

    /// The first connection, with a deadline and a message that says where.
    async fn connect_first(&self) -> Result<Conn, StorageError> {
        let target = self.inner.target.clone();
        match tokio::time::timeout(CONNECT_TIMEOUT, self.inner.pool.get_conn()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(source)) => Err(StorageError::MysqlConnect { target, source }),
            Err(_) => Err(StorageError::MysqlTimeout {
                target,
                secs: CONNECT_TIMEOUT.as_secs(),
            }),
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
            found => Err(StorageError::MysqlPacket {
                target: self.inner.target.clone(),
                found,
                needed: MIN_PACKET_BYTES,
            }),
        }
    }

    async fn check_tables(&self, conn: &mut Conn) -> Result<(), StorageError> {
        let tables: Vec<String> = conn
            .query("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
            .await
            .map_err(db_err("list tables"))?;
        let missing = Cf::ALL
            .iter()
            .map(|&cf| table(cf))
            .any(|t| !tables.iter().any(|have| have.eq_ignore_ascii_case(t)));
        if missing {
            return Err(StorageError::Empty { store: self.describe() });
        }
        Ok(())
    }

    /// `(k, v)` of the stored tree nodes among `keys`, on a connection of its own.
    async fn node_rows(&self, keys: &[NodeKey]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        let mut conn = self.conn().await?;
        let sql = format!("SELECT k, v FROM kt_tree_nodes WHERE k IN ({})", marks(keys.len()));
        let params: Vec<Value> = keys.iter().map(|k| Value::from(k.to_vec())).collect();
        conn.exec(sql, params).await.map_err(db_err("batch get tree nodes"))
    }

    /// The one state `flag` selects for `user`, by one indexed query.
    async fn select_state(
        &self,
        user: Vec<u8>,
        flag: ValueStateRetrievalFlag,
    ) -> Result<Option<StateEntry>, StorageError> {
        let u = Value::from(user.clone());
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
        Ok(row.map(|(epoch, v)| (user, epoch, v)))
    }

    /// The state `flag` selects for each user, by one `user IN (...)` query per chunk
    /// of users (the shard key): all their states come back and are chosen here.
    async fn select_many(
        &self,
        users: Vec<Vec<u8>>,
        flag: ValueStateRetrievalFlag,
    ) -> Result<Vec<StateEntry>, StorageError> {
        let mut out: HashMap<Vec<u8>, (u64, Vec<u8>)> = HashMap::with_capacity(users.len());
        let chunks: Vec<Vec<Vec<u8>>> = users.chunks(ROWS_PER_STATEMENT).map(<[Vec<u8>]>::to_vec).collect();
        let chunks: Vec<Vec<DbStateRow>> = futures_util::stream::iter(chunks)
            .map(|chunk| {
                let this = self.clone();
                async move {
                    let mut conn = this.conn().await?;
                    let sql = format!(
                        "SELECT user, epoch, version, v FROM kt_value_states WHERE user IN ({})",
                        marks(chunk.len())
                    );
                    let params: Vec<Value> = chunk.into_iter().map(Value::from).collect();
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
                let better = match (out.get(&user), flag) {
                    (None, _) => true,
                    (Some(&(have, _)), ValueStateRetrievalFlag::MinEpoch) => epoch < have,
                    (Some(&(have, _)), ValueStateRetrievalFlag::SpecificVersion(_)) => epoch < have,
                    (Some(&(have, _)), _) => epoch > have,
                };
                if better {
                    out.insert(user, (epoch, v));
                }
            }
        }
        Ok(out.into_iter().map(|(user, (epoch, v))| (user, epoch, v)).collect())
    }

    /// One SQL transaction: deletes, puts, tree nodes, value states, the `Azks` row last.
    async fn transaction(&self, batch: Batch) -> Result<(), StorageError> {
        let Batch {
            deletes,
            puts,
            nodes,
            states,
            azks,
        } = batch;
        for state in &states {
            if state.user.len() > MAX_USER_BYTES {
                return Err(StorageError::LabelTooLong {
                    len: state.user.len(),
                    max: MAX_USER_BYTES,
                });
            }
        }
        let mut node_rows: Vec<RawEntry> = Vec::with_capacity(nodes.iter().map(|n| n.node_count()).sum());
        for source in nodes {
            source.for_each_node(&mut |key, value| {
                node_rows.push((key.to_vec(), value.to_vec()));
                Ok(())
            })?;
        }
        let mut deleted: HashMap<Cf, Vec<Vec<u8>>> = HashMap::new();
        for (cf, k) in deletes {
            deleted.entry(cf).or_default().push(k);
        }
        let mut put: HashMap<Cf, Vec<RawEntry>> = HashMap::new();
        for (cf, k, v) in puts {
            put.entry(cf).or_default().push((k, v));
        }
        let mut conn = self.conn().await?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(db_err("begin"))?;
        for (cf, keys) in deleted {
            delete_keys(&mut tx, cf, keys).await?;
        }
        for (cf, entries) in put {
            put_parts(&mut tx, cf, entries).await?;
        }
        for batch in statements(node_rows, |(k, v)| k.len() + v.len()) {
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
        for batch in statements(states, |s| s.user.len() + s.value.len() + 16) {
            let sql = format!(
                "INSERT INTO kt_value_states (user, epoch, version, v) VALUES {} \
                 ON DUPLICATE KEY UPDATE version = VALUES(version), v = VALUES(v)",
                row_marks(batch.len(), 4)
            );
            let params: Vec<Value> = batch
                .into_iter()
                .flat_map(
                    |StateRow {
                         user,
                         epoch,
                         version,
                         value,
                     }| {
                        [
                            Value::from(user),
                            Value::from(epoch),
                            Value::from(version),
                            Value::from(value),
                        ]
                    },
                )
                .collect();
            tx.exec_drop(sql, params).await.map_err(db_err("write value states"))?;
        }
        // The row that moves the epoch goes last (see the module docs).
        if let Some(azks) = azks {
            put_parts(&mut tx, Cf::Meta, vec![(super::store::AZKS_KEY.to_vec(), azks)]).await?;
        }
        tx.commit().await.map_err(db_err("commit"))
    }
}

#[async_trait]
impl Engine for MysqlEngine {
    fn describe(&self) -> String {
        format!("MySQL database {}", self.inner.target)
    }

    fn schema_version(&self) -> u32 {
        MYSQL_SCHEMA_VERSION
    }

    async fn get(&self, cf: Cf, key: Vec<u8>) -> Result<Option<Vec<u8>>, StorageError> {
        let mut conn = self.conn().await?;
        if cf == Cf::TreeNodes {
            return conn
                .exec_first("SELECT v FROM kt_tree_nodes WHERE k = ?", (key,))
                .await
                .map_err(db_err("get tree node"));
        }
        get_parts(&mut conn, cf, &key).await
    }

    /// Statements of [`ROWS_PER_STATEMENT`] keys on up to [`READ_CONNECTIONS`]
    /// connections at once.
    async fn read_nodes(&self, keys: Vec<NodeKey>, sink: NodeSink) -> Result<(), StorageError> {
        let chunks: Vec<Vec<NodeKey>> = keys.chunks(ROWS_PER_STATEMENT).map(<[NodeKey]>::to_vec).collect();
        futures_util::stream::iter(chunks)
            .map(|chunk| {
                let sink = Arc::clone(&sink);
                let this = self.clone();
                async move {
                    for (k, v) in this.node_rows(&chunk).await? {
                        let key: NodeKey = k.as_slice().try_into().map_err(|_| StorageError::BadNodeKey {
                            key_hex: hex::encode(&k),
                        })?;
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

    async fn scan(&self, cf: Cf, from: Vec<u8>, limit: usize) -> Result<Vec<RawEntry>, StorageError> {
        let mut conn = self.conn().await?;
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        if cf == Cf::TreeNodes {
            return conn
                .exec(
                    "SELECT k, v FROM kt_tree_nodes WHERE k >= ? ORDER BY k LIMIT ?",
                    (from, limit),
                )
                .await
                .map_err(db_err("scan"));
        }
        let rows: Vec<(Vec<u8>, u32, Vec<u8>)> = conn
            .exec(
                format!(
                    "SELECT k, parts, v FROM {} WHERE k >= ? AND part = 0 ORDER BY k LIMIT ?",
                    table(cf)
                ),
                (from, limit),
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

    async fn last(&self, cf: Cf) -> Result<Option<RawEntry>, StorageError> {
        let mut conn = self.conn().await?;
        if cf == Cf::TreeNodes {
            return conn
                .query_first("SELECT k, v FROM kt_tree_nodes ORDER BY k DESC LIMIT 1")
                .await
                .map_err(db_err("last"));
        }
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

    async fn count(&self, cf: Cf) -> Result<u64, StorageError> {
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

    async fn states_at(&self, keys: Vec<(Vec<u8>, u64)>) -> Result<Vec<StateEntry>, StorageError> {
        let mut conn = self.conn().await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(ROWS_PER_STATEMENT / 2) {
            let sql = format!(
                "SELECT user, epoch, v FROM kt_value_states WHERE (user, epoch) IN ({})",
                row_marks(chunk.len(), 2)
            );
            let params: Vec<Value> = chunk
                .iter()
                .flat_map(|(u, e)| [Value::from(u.clone()), Value::from(*e)])
                .collect();
            let rows: Vec<StateEntry> = conn.exec(sql, params).await.map_err(db_err("batch get value states"))?;
            out.extend(rows);
        }
        Ok(out)
    }

    async fn user_states(&self, user: Vec<u8>) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let mut conn = self.conn().await?;
        conn.exec(
            "SELECT epoch, v FROM kt_value_states WHERE user = ? ORDER BY epoch",
            (user,),
        )
        .await
        .map_err(db_err("get user data"))
    }

    async fn select_states(
        &self,
        mut users: Vec<Vec<u8>>,
        flag: ValueStateRetrievalFlag,
    ) -> Result<Vec<StateEntry>, StorageError> {
        if users.len() == 1 {
            let user = users.pop().unwrap_or_default();
            return Ok(self.select_state(user, flag).await?.into_iter().collect());
        }
        self.select_many(users, flag).await
    }

    /// One SQL transaction, the `Azks` row last.
    async fn write(&self, batch: Batch) -> Result<(), StorageError> {
        self.transaction(batch).await
    }

    /// Nothing to catch up with: every query sees the latest commit.
    async fn catch_up(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Refreshes the server's table statistics (`ANALYZE TABLE`), on which
    /// [`Engine::live_bytes`] is based.
    async fn flush(&self) -> Result<(), StorageError> {
        let mut conn = self.conn().await?;
        let tables: Vec<&str> = Cf::ALL.iter().map(|&cf| table(cf)).collect();
        conn.query_drop(format!("ANALYZE TABLE {}", tables.join(", ")))
            .await
            .map_err(db_err("analyze"))
    }

    async fn compact(&self) -> Result<(), StorageError> {
        self.flush().await
    }

    /// Bytes per table as the server reports them (InnoDB's estimate: data + indexes).
    async fn live_bytes(&self) -> Result<Vec<(Cf, u64)>, StorageError> {
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
}

/// A `kt_value_states` row: (user, epoch, version, encoded state).
type DbStateRow = (Vec<u8>, u64, u64, Vec<u8>);

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
            return Err(StorageError::KeyTooLong {
                cf,
                len: k.len(),
                max: 255,
            });
        }
        let parts: Vec<Vec<u8>> = if v.is_empty() {
            vec![Vec::new()]
        } else {
            v.chunks(PART_BYTES).map(<[u8]>::to_vec).collect()
        };
        let n = u32::try_from(parts.len()).map_err(|_| StorageError::ValueTooLarge { cf, len: v.len() })?;
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
