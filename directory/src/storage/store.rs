//! [`Store`]: akd's [`Database`] and the publisher's records, written once over an
//! [`Engine`].
//!
//! Everything the backends share lives here, once: the record codec, the write fence,
//! the staged commit hook, the tree-node length filter, the schema check and the rule
//! that a read replica never writes. The engines underneath only move bytes.

use super::engine::{Batch, Engine, StateEntry, StateRow};
use super::mysql::MysqlEngine;
use super::rocks::RocksEngine;
use super::{
    Backend, Cf, CommitHook, EpochCommit, NodeKey, NodeSink, NodeSource, NodeVisitor, RawEntry, Role, StorageConfig,
    StorageError, StoreMemory, Write, codec,
};
use akd::errors::StorageError as AkdStorageError;
use akd::storage::types::{DbRecord, KeyData, StorageType, ValueState, ValueStateKey, ValueStateRetrievalFlag};
use akd::storage::{Database, DbSetState, Storable};
use akd::tree_node::TreeNodeWithPreviousValue;
use akd::{AkdLabel, AkdValue, Azks};
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Key of the akd `Azks` row in [`Cf::Meta`].
pub(crate) const AZKS_KEY: &[u8] = b"azks";
/// Key of the storage schema version in [`Cf::Meta`].
pub(crate) const SCHEMA_KEY: &[u8] = b"schema";

/// The store the service runs on, over either engine. Cheap to clone: clones share
/// one engine, one fence and one length filter.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The I/O underneath.
    engine: Arc<dyn Engine>,
    /// A read replica's store: every write is refused with [`StorageError::ReadOnly`].
    read_only: bool,
    /// The publisher's staged commit hook, and the fence set after a failed write.
    writes: WriteGuard,
    /// Label lengths at which a tree node may be stored (see [`NodeLengths`]); shared
    /// with the node sources of a write in progress, which record what they write.
    node_lengths: Arc<NodeLengths>,
}

impl Store {
    /// Opens `backend`: RocksDB at `db_path` (tuned by `config`), or the MySQL URL.
    pub async fn open(
        backend: &Backend,
        db_path: PathBuf,
        config: StorageConfig,
        role: Role,
    ) -> Result<Store, StorageError> {
        match (backend, role) {
            (Backend::Rocks, Role::Writer) => Store::open_rocks(db_path, &config).await,
            (Backend::Rocks, Role::Replica { secondary_dir }) => {
                Store::open_rocks_secondary(db_path, secondary_dir, &config).await
            }
            (Backend::Mysql { url }, role) => Store::open_mysql(url, role != Role::Writer).await,
        }
    }

    /// Opens (creating if missing) the RocksDB at `path`, as the writer.
    pub async fn open_rocks(path: impl AsRef<Path>, config: &StorageConfig) -> Result<Store, StorageError> {
        let (path, config) = (path.as_ref().to_path_buf(), config.clone());
        let engine = tokio::task::spawn_blocking(move || RocksEngine::open(path, &config)).await??;
        Store::on(Arc::new(engine), false).await
    }

    /// Opens the RocksDB at `primary` as a read replica: a RocksDB *secondary* instance
    /// that reads the primary's files, keeps its own info log in `secondary_dir`, and
    /// sees the primary's newer writes after [`Store::catch_up`]. A primary that was
    /// never written is [`StorageError::Empty`].
    pub async fn open_rocks_secondary(
        primary: impl AsRef<Path>,
        secondary_dir: impl AsRef<Path>,
        config: &StorageConfig,
    ) -> Result<Store, StorageError> {
        let (path, secondary, config) = (
            primary.as_ref().to_path_buf(),
            secondary_dir.as_ref().to_path_buf(),
            config.clone(),
        );
        let engine =
            tokio::task::spawn_blocking(move || RocksEngine::open_secondary(path, secondary, &config)).await??;
        Store::on(Arc::new(engine), true).await
    }

    /// Connects to the MySQL-protocol database at `url`
    /// (`mysql://user:password@host:port/database`). As a writer it creates the tables
    /// that are missing; `read_only` (a replica) creates nothing.
    pub async fn open_mysql(url: &str, read_only: bool) -> Result<Store, StorageError> {
        let engine = MysqlEngine::open(url, read_only).await?;
        Store::on(Arc::new(engine), read_only).await
    }

    /// The store over `engine`: checks (or, for a writer, records) the schema version
    /// and learns the stored tree-node lengths. `read_only` must be what the engine was
    /// opened as (a replica's), hence crate-private.
    pub(crate) async fn on(engine: Arc<dyn Engine>, read_only: bool) -> Result<Store, StorageError> {
        let store = Store {
            inner: Arc::new(Inner {
                engine,
                read_only,
                writes: WriteGuard::default(),
                node_lengths: Arc::default(),
            }),
        };
        store.check_schema().await?;
        store.learn_node_lengths().await?;
        Ok(store)
    }

    async fn check_schema(&self) -> Result<(), StorageError> {
        let engine = &self.inner.engine;
        let expected = engine.schema_version();
        match engine.get(Cf::Meta, SCHEMA_KEY.to_vec()).await? {
            Some(found) if found == expected.to_be_bytes() => Ok(()),
            Some(found) => Err(StorageError::Schema {
                found: hex::encode(found),
                expected,
            }),
            None if self.inner.read_only => Err(StorageError::Empty {
                store: engine.describe(),
            }),
            None => {
                self.write(vec![Write::Put(
                    Cf::Meta,
                    SCHEMA_KEY.to_vec(),
                    expected.to_be_bytes().to_vec(),
                )])
                .await
            }
        }
    }

    /// Where the data lives, for logs and errors (no password).
    pub fn describe(&self) -> String {
        self.inner.engine.describe()
    }

    /// The `Azks` row as stored (the last committed epoch), read from the store.
    pub async fn stored_azks(&self) -> Result<Option<Azks>, StorageError> {
        self.inner
            .engine
            .get(Cf::Meta, AZKS_KEY.to_vec())
            .await?
            .map(|v| codec::decode_azks(&v).map_err(|e| StorageError::corrupt(Cf::Meta, AZKS_KEY, e)))
            .transpose()
    }

    /// Applies `writes` atomically.
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), StorageError> {
        let batch = self.batch_of(writes)?;
        self.apply(batch).await
    }

    /// One value of one of the publisher's column families.
    pub async fn get_raw(&self, cf: Cf, key: Vec<u8>) -> Result<Option<Vec<u8>>, StorageError> {
        not_states(cf, "get")?;
        self.inner.engine.get(cf, key).await
    }

    /// Up to `limit` entries of `cf` with keys `>= from`, in key order.
    pub async fn scan(&self, cf: Cf, from: Vec<u8>, limit: usize) -> Result<Vec<RawEntry>, StorageError> {
        not_states(cf, "scan")?;
        self.inner.engine.scan(cf, from, limit).await
    }

    /// The entry with the greatest key in `cf`.
    pub async fn last(&self, cf: Cf) -> Result<Option<RawEntry>, StorageError> {
        not_states(cf, "last")?;
        self.inner.engine.last(cf).await
    }

    /// Counts the entries of `cf` (start-up only).
    pub async fn count(&self, cf: Cf) -> Result<u64, StorageError> {
        self.inner.engine.count(cf).await
    }

    /// `label`'s newest (version, epoch, value) at or before `epoch`, straight from the
    /// store: `None` only when the label truly has no state (unlike akd's lookup, which
    /// reports every storage error as "not found").
    pub async fn latest_state(&self, label: Vec<u8>, epoch: u64) -> Result<Option<(u64, u64, Vec<u8>)>, StorageError> {
        let found = self
            .inner
            .engine
            .select_states(vec![label], ValueStateRetrievalFlag::LeqEpoch(epoch))
            .await?;
        found
            .into_iter()
            .next()
            .map(|(user, epoch, v)| decode_state(&user, epoch, &v).map(|s| (s.version, s.epoch, s.value.0)))
            .transpose()
    }

    /// akd's `get_user_state_versions` on the calling thread where the engine can read
    /// there (RocksDB), else through `runtime`: for threads of their own, such as the
    /// prepare stage's workers, whose CPU time is then their own.
    pub fn user_state_versions_here(
        &self,
        users: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
        runtime: &tokio::runtime::Handle,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
        let raw: Vec<Vec<u8>> = users.iter().map(|u| u.0.clone()).collect();
        let found = match self.inner.engine.select_states_here(&raw, flag) {
            Some(found) => found?,
            None => runtime.block_on(self.inner.engine.select_states(raw, flag))?,
        };
        versions(found)
    }

    /// Writes one epoch atomically: its tree nodes, value states, the publisher's
    /// writes and akd's `Azks` row, all or nothing. Any failure fences later writes.
    pub async fn commit_epoch(&self, commit: EpochCommit) -> Result<(), StorageError> {
        let EpochCommit {
            nodes,
            states,
            azks,
            writes,
        } = commit;
        let mut batch = self.batch_of(writes)?;
        batch.nodes.push(self.recording(nodes));
        batch.states = states.iter().map(state_row).collect();
        drop(states);
        batch.azks = Some(codec::encode_azks(&azks));
        let started = std::time::Instant::now();
        let records = batch.records();
        let written = self.apply(batch).await;
        tracing::info!(records, write_ms = started.elapsed().as_millis(), "epoch written");
        written
    }

    /// Reads the tree nodes at `keys` that exist, in raw form, into `sink` (absent keys
    /// are skipped). Large batches are split across threads (RocksDB) or pooled
    /// connections (MySQL), so `sink` is called from several threads.
    pub async fn read_nodes(&self, mut keys: Vec<NodeKey>, sink: NodeSink) -> Result<(), StorageError> {
        keys.retain(|k| self.inner.node_lengths.may_contain(node_key_len(k)));
        if keys.is_empty() {
            return Ok(());
        }
        self.inner.engine.read_nodes(keys, sink).await
    }

    /// What the store holds in memory now (zero where a backend keeps nothing).
    pub fn memory(&self) -> StoreMemory {
        self.inner.engine.memory()
    }

    /// Stages `hook` for akd's next transaction commit (replacing any staged one).
    pub fn stage_commit_hook(&self, hook: CommitHook) {
        self.inner.writes.stage(hook);
    }

    /// Removes a staged hook; `true` if it was still staged (no commit consumed it).
    pub fn clear_commit_hook(&self) -> bool {
        self.inner.writes.take().is_some()
    }

    /// Whether an earlier write failed (see [`StorageError::WritesFenced`]).
    pub fn is_fenced(&self) -> bool {
        self.inner.writes.is_fenced()
    }

    /// Bytes stored per column family (RocksDB: live SST and blob files; MySQL: the
    /// tables' data and index length as the server reports them).
    pub async fn live_bytes_all(&self) -> Result<Vec<(Cf, u64)>, StorageError> {
        self.inner.engine.live_bytes().await
    }

    /// Makes [`Store::live_bytes_all`] count everything written so far.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.inner.engine.flush().await
    }

    /// [`Store::flush`], then compaction where the engine has one (benchmarks measure
    /// bytes on disk after this).
    pub async fn compact(&self) -> Result<(), StorageError> {
        self.inner.engine.compact().await
    }

    /// Makes what the writer committed since the last call visible to this reader: a
    /// RocksDB secondary catches up with the primary's files; a MySQL reader always
    /// sees the latest commit. A reader then calls [`Store::learn_node_lengths`]
    /// before it serves a new epoch.
    pub async fn catch_up(&self) -> Result<(), StorageError> {
        self.inner.engine.catch_up().await
    }

    /// Learns the tree-node lengths stored now (see [`NodeLengths`]): one ordered seek
    /// per length found. A reader calls it *after* reading the head it will serve (and,
    /// on RocksDB, after catching up), so every node that head's epoch wrote is covered.
    pub async fn learn_node_lengths(&self) -> Result<(), StorageError> {
        let mut from = 0u32;
        loop {
            let next = self
                .inner
                .engine
                .scan(Cf::TreeNodes, from.to_be_bytes().to_vec(), 1)
                .await?;
            let Some((key, _)) = next.into_iter().next() else {
                return Ok(());
            };
            let found = key_label_len(&key).ok_or_else(|| {
                StorageError::corrupt(
                    Cf::TreeNodes,
                    &key,
                    codec::DecodeError::Truncated {
                        field: "tree-node key label length",
                        needed: 4 - key.len(),
                    },
                )
            })?;
            self.inner.node_lengths.insert(found);
            match found.checked_add(1) {
                Some(next) => from = next,
                None => return Ok(()),
            }
        }
    }

    /// Fenced and read-only checks, the engine's atomic write, and the fence on failure.
    async fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        if self.inner.read_only {
            return Err(StorageError::ReadOnly);
        }
        self.inner.writes.check()?;
        let records = batch.records();
        self.inner.engine.write(batch).await.map_err(|source| {
            if source.is_refused_input() {
                // Refused before anything was written (or in a transaction that rolled
                // back): the store is as it was, so nothing to fence.
                return source;
            }
            self.inner.writes.fence();
            tracing::error!(store = %self.describe(), records, error = %source, "write failed; fencing writes");
            StorageError::Write {
                records,
                source: Box::new(source),
            }
        })
    }

    /// The publisher's writes as an engine batch: raw tree-node and value-state puts
    /// go where akd's records go (and count for the length filter).
    fn batch_of(&self, writes: Vec<Write>) -> Result<Batch, StorageError> {
        let writes = later_deletes_win(writes);
        let mut batch = Batch::default();
        let mut nodes = Vec::new();
        for w in writes {
            match w {
                Write::Put(Cf::TreeNodes, k, v) => {
                    let key: NodeKey = k.as_slice().try_into().map_err(|_| StorageError::BadNodeKey {
                        key_hex: hex::encode(&k),
                    })?;
                    nodes.push((key, v));
                }
                Write::Put(Cf::ValueStates, k, v) => {
                    let corrupt = |e| StorageError::corrupt(Cf::ValueStates, &k, e);
                    let (user, epoch) = codec::split_value_state_key(&k).map_err(corrupt)?;
                    let (version, _) = codec::decode_version_and_value(&v).map_err(corrupt)?;
                    batch.states.push(StateRow {
                        user: user.to_vec(),
                        epoch,
                        version,
                        value: v,
                    });
                }
                Write::Put(cf, k, v) => batch.puts.push((cf, k, v)),
                Write::Delete(cf @ (Cf::TreeNodes | Cf::ValueStates), _) => {
                    return Err(StorageError::Unsupported { cf, op: "delete" });
                }
                Write::Delete(cf, k) => batch.deletes.push((cf, k)),
            }
        }
        if !nodes.is_empty() {
            nodes.sort_by_key(|a| a.0);
            batch.nodes.push(self.recording(Arc::new(SortedNodes(nodes))));
        }
        Ok(batch)
    }

    /// `nodes`, recording each node's length in the filter as the engine reads it for
    /// its write, so the filter never skips a stored node.
    fn recording(&self, nodes: Arc<dyn NodeSource>) -> Arc<dyn NodeSource> {
        Arc::new(Recording {
            nodes,
            lengths: Arc::clone(&self.inner.node_lengths),
        })
    }

    /// akd's records (and a staged hook's writes) in one atomic write. The batch (the
    /// hook, encoding, sorting: seconds for a large epoch) is built on a blocking thread.
    async fn put_records(&self, records: Vec<DbRecord>, hook: Option<CommitHook>) -> Result<(), StorageError> {
        let this = self.clone();
        let batch = tokio::task::spawn_blocking(move || this.records_batch(records, hook)).await??;
        self.apply(batch).await
    }

    fn records_batch(&self, records: Vec<DbRecord>, hook: Option<CommitHook>) -> Result<Batch, StorageError> {
        let extra = match hook {
            Some(hook) => hook(&records)?,
            None => Vec::new(),
        };
        let mut batch = self.batch_of(extra)?;
        let mut nodes = Vec::new();
        for record in &records {
            match record {
                DbRecord::Azks(azks) => batch.azks = Some(codec::encode_azks(azks)),
                DbRecord::TreeNode(node) => nodes.push((codec::node_key(&node.label), codec::encode_tree_node(node))),
                DbRecord::ValueState(state) => batch.states.push(state_row(state)),
            }
        }
        drop(records);
        // In key order, stably: a memtable takes sorted inserts far faster, and a key
        // written twice keeps its last value.
        nodes.sort_by_key(|a| a.0);
        batch.nodes.push(self.recording(Arc::new(SortedNodes(nodes))));
        Ok(batch)
    }

    /// One record.
    async fn get_record(&self, key: Key) -> Result<Option<DbRecord>, StorageError> {
        let engine = &self.inner.engine;
        Ok(match key {
            Key::Azks => self.stored_azks().await?.map(DbRecord::Azks),
            Key::Node(k) if !self.inner.node_lengths.may_contain(node_key_len(&k)) => None,
            Key::Node(k) => engine
                .get(Cf::TreeNodes, k.to_vec())
                .await?
                .map(|v| decode_node(&k, &v))
                .transpose()?,
            Key::State { user, epoch } => engine
                .states_at(vec![(user, epoch)])
                .await?
                .into_iter()
                .next()
                .map(|(u, e, v)| decode_state(&u, e, &v).map(DbRecord::ValueState))
                .transpose()?,
        })
    }

    /// The records of `keys` that exist.
    async fn get_records(&self, keys: Vec<Key>) -> Result<Vec<DbRecord>, StorageError> {
        let (mut azks, mut nodes, mut states) = (false, Vec::new(), Vec::new());
        for key in keys {
            match key {
                Key::Azks => azks = true,
                Key::Node(k) if self.inner.node_lengths.may_contain(node_key_len(&k)) => nodes.push(k),
                Key::Node(_) => {}
                Key::State { user, epoch } => states.push((user, epoch)),
            }
        }
        let mut out = Vec::new();
        if azks {
            out.extend(self.stored_azks().await?.map(DbRecord::Azks));
        }
        if !nodes.is_empty() {
            let found = Arc::new(Mutex::new(Vec::with_capacity(nodes.len())));
            let into = Arc::clone(&found);
            let sink: NodeSink = Arc::new(move |key: &NodeKey, value: &[u8]| {
                let record = decode_node(key, value)?;
                into.lock().unwrap_or_else(PoisonError::into_inner).push(record);
                Ok(())
            });
            self.inner.engine.read_nodes(nodes, sink).await?;
            out.append(&mut found.lock().unwrap_or_else(PoisonError::into_inner));
        }
        if !states.is_empty() {
            for (u, e, v) in self.inner.engine.states_at(states).await? {
                out.push(DbRecord::ValueState(decode_state(&u, e, &v)?));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Database for Store {
    async fn set(&self, record: DbRecord) -> Result<(), AkdStorageError> {
        self.batch_set(vec![record], DbSetState::General).await
    }

    /// One atomic write: a `TransactionCommit` (a whole epoch) lands whole, together
    /// with the writes of a staged [`CommitHook`].
    async fn batch_set(&self, records: Vec<DbRecord>, state: DbSetState) -> Result<(), AkdStorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let hook = match state {
            DbSetState::TransactionCommit => self.inner.writes.take(),
            DbSetState::General => None,
        };
        Ok(self.put_records(records, hook).await?)
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, AkdStorageError> {
        self.get_record(Key::of::<St>(id)?)
            .await?
            .ok_or_else(|| not_found((St::data_type(), id)))
    }

    /// Batched reads; missing keys are skipped, as akd's preloads expect.
    async fn batch_get<St: Storable>(&self, ids: &[St::StorageKey]) -> Result<Vec<DbRecord>, AkdStorageError> {
        let keys = ids.iter().map(Key::of::<St>).collect::<Result<Vec<_>, _>>()?;
        Ok(self.get_records(keys).await?)
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, AkdStorageError> {
        let rows = self.inner.engine.user_states(username.0.clone()).await?;
        if rows.is_empty() {
            return Err(not_found(username));
        }
        let states = rows
            .into_iter()
            .map(|(epoch, v)| decode_state(&username.0, epoch, &v))
            .collect::<Result<_, _>>()?;
        Ok(KeyData { states })
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, AkdStorageError> {
        let found = self.inner.engine.select_states(vec![username.0.clone()], flag).await?;
        match found.into_iter().next() {
            Some((user, epoch, v)) => Ok(decode_state(&user, epoch, &v)?),
            None => Err(not_found((username, flag))),
        }
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, AkdStorageError> {
        let users = usernames.iter().map(|u| u.0.clone()).collect();
        Ok(versions(self.inner.engine.select_states(users, flag).await?)?)
    }
}

/// `writes` with every put dropped that a later delete of the same key undoes: an
/// engine applies a batch's deletes before its puts, and the later write must win.
/// The publisher's writes never put and delete in one column family (the queue is
/// deleted from, the outcomes and heads are put), so this is one pass over the column
/// families, and the key-by-key pass runs only when they overlap.
fn later_deletes_win(writes: Vec<Write>) -> Vec<Write> {
    let mut put_cfs = std::collections::HashSet::new();
    let mut delete_cfs = std::collections::HashSet::new();
    for w in &writes {
        match w {
            Write::Put(cf, _, _) => put_cfs.insert(*cf),
            Write::Delete(cf, _) => delete_cfs.insert(*cf),
        };
    }
    if put_cfs.is_disjoint(&delete_cfs) {
        return writes;
    }
    let mut deleted_later: std::collections::HashSet<(Cf, Vec<u8>)> = std::collections::HashSet::new();
    let mut kept: Vec<Write> = writes
        .into_iter()
        .rev()
        .filter(|w| match w {
            Write::Delete(cf, k) => {
                deleted_later.insert((*cf, k.clone()));
                true
            }
            Write::Put(cf, k, _) => !deleted_later.contains(&(*cf, k.clone())),
        })
        .collect();
    kept.reverse();
    kept
}

/// akd's `(version, value)` by label, from selected states.
fn versions(found: Vec<StateEntry>) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
    found
        .into_iter()
        .map(|(user, epoch, v)| {
            let decoded = codec::decode_version_and_value(&v)
                .map_err(|e| StorageError::corrupt(Cf::ValueStates, &codec::value_state_key(&user, epoch), e))?;
            Ok((AkdLabel(user), decoded))
        })
        .collect()
}

/// Refuses a raw access to [`Cf::ValueStates`], whose rows only the state methods
/// read (an engine may store them in columns, not as key and value).
fn not_states(cf: Cf, op: &'static str) -> Result<(), StorageError> {
    if cf == Cf::ValueStates {
        return Err(StorageError::Unsupported { cf, op });
    }
    Ok(())
}

fn state_row(state: &ValueState) -> StateRow {
    StateRow {
        user: state.username.0.clone(),
        epoch: state.epoch,
        version: state.version,
        value: codec::encode_value_state(state),
    }
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

fn not_found(what: impl std::fmt::Debug) -> AkdStorageError {
    AkdStorageError::NotFound(format!("{what:?}"))
}

/// Encoded tree nodes in key order, for a write of akd's records or raw puts.
struct SortedNodes(Vec<(NodeKey, Vec<u8>)>);

impl NodeSource for SortedNodes {
    fn node_count(&self) -> usize {
        self.0.len()
    }

    fn for_each_node(&self, put: &mut NodeVisitor<'_>) -> Result<(), StorageError> {
        self.0.iter().try_for_each(|(k, v)| put(k, v))
    }
}

/// A node source that adds each node's length to the filter before the engine takes
/// it (the writer adds a length before the write holding it; see [`NodeLengths`]).
struct Recording {
    /// What is written.
    nodes: Arc<dyn NodeSource>,
    /// The store's filter.
    lengths: Arc<NodeLengths>,
}

impl NodeSource for Recording {
    fn node_count(&self) -> usize {
        self.nodes.node_count()
    }

    fn for_each_node(&self, put: &mut NodeVisitor<'_>) -> Result<(), StorageError> {
        self.nodes.for_each_node(&mut |key, value| {
            self.lengths.insert(node_key_len(key));
            put(key, value)
        })
    }
}

/// The publisher's staged hook, and the fence that refuses writes after one failed.
#[derive(Default)]
struct WriteGuard {
    /// Set after any failed write: the store may now disagree with akd's in-memory view
    /// (or, for a commit whose answer was lost, with what we think was written), so
    /// further writes are refused until a restart re-reads it.
    fenced: AtomicBool,
    /// The publisher's hook for the next transaction commit (see [`CommitHook`]).
    hook: Mutex<Option<CommitHook>>,
}

impl std::fmt::Debug for WriteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteGuard")
            .field("fenced", &self.fenced)
            .finish_non_exhaustive()
    }
}

impl WriteGuard {
    fn stage(&self, hook: CommitHook) {
        *self.hook.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    fn take(&self) -> Option<CommitHook> {
        self.hook.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// [`StorageError::WritesFenced`] once fenced.
    fn check(&self) -> Result<(), StorageError> {
        if self.is_fenced() {
            return Err(StorageError::WritesFenced);
        }
        Ok(())
    }

    fn fence(&self) {
        self.fenced.store(true, Ordering::SeqCst);
    }
}

/// A set of tree-node label lengths (0 to 256). A lookup's greedy preload asks for the
/// node at every prefix length of three labels (~250 keys, nearly all absent), but
/// nodes only exist near the top of the tree and at the leaves: probes at a length no
/// node has are answered here, not by the engine.
///
/// akd never deletes a node, so the set only grows. The writer adds a length before
/// the write holding it, so it never skips a stored node (a failed write leaves a
/// length that costs a probe, no more). A reader in another process learns new lengths
/// from [`Store::learn_node_lengths`] before it serves a new epoch.
#[derive(Debug, Default)]
struct NodeLengths {
    /// Bit `len` is set when a node of that length may be stored.
    bits: [AtomicU64; 5],
    /// Set if a length beyond 256 was ever written (not akd's): filter nothing.
    beyond: AtomicBool,
}

impl NodeLengths {
    fn insert(&self, len: u32) {
        match usize::try_from(len) {
            Ok(l) if l <= 256 => {
                self.bits[l / 64].fetch_or(1 << (l % 64), Ordering::SeqCst);
            }
            _ => self.beyond.store(true, Ordering::SeqCst),
        }
    }

    fn may_contain(&self, len: u32) -> bool {
        if self.beyond.load(Ordering::SeqCst) {
            return true;
        }
        match usize::try_from(len) {
            Ok(l) if l <= 256 => self.bits[l / 64].load(Ordering::SeqCst) & (1 << (l % 64)) != 0,
            _ => false,
        }
    }
}

/// The label length a tree-node key starts with (`None` if the key is shorter than
/// the length field).
pub(crate) fn key_label_len(key: &[u8]) -> Option<u32> {
    key.get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
}

/// [`key_label_len`] of a well-formed tree-node key (36 bytes always hold one).
fn node_key_len(key: &NodeKey) -> u32 {
    key_label_len(key).unwrap_or(u32::MAX)
}

/// A storage key of one of akd's record kinds, in our layout.
enum Key {
    Azks,
    Node(NodeKey),
    State { user: Vec<u8>, epoch: u64 },
}

impl Key {
    fn of<St: Storable>(id: &St::StorageKey) -> Result<Key, StorageError> {
        let bin = St::get_full_binary_key_id(id);
        let bad = |reason| StorageError::AkdKey {
            kind: St::data_type(),
            reason,
        };
        match St::data_type() {
            StorageType::Azks => Ok(Key::Azks),
            StorageType::TreeNode => {
                let key = TreeNodeWithPreviousValue::key_from_full_binary(&bin).map_err(bad)?;
                Ok(Key::Node(codec::node_key(&key.0)))
            }
            StorageType::ValueState => {
                let ValueStateKey(user, epoch) = ValueState::key_from_full_binary(&bin).map_err(bad)?;
                Ok(Key::State { user, epoch })
            }
        }
    }
}
