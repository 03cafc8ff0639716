//! akd's [`Database`], on one of two backends, and the publisher's own records.
//!
//! - [`RocksStorage`] ([`rocks`]): an embedded RocksDB, the default. A read replica
//!   opens it as a RocksDB *secondary* that follows the primary's files.
//! - [`MysqlStorage`] ([`mysql`]): any server speaking the MySQL protocol (MariaDB,
//!   MySQL, a Vitess cluster), for directories that outgrow one machine; publisher and
//!   replicas share the database.
//!
//! [`Store`] is the one the service runs: it dispatches to either, so the publisher,
//! the queue and the HTTP layer are written once. Both keep the same contract: an akd
//! transaction commit (a whole epoch, plus the writes of a staged [`CommitHook`])
//! lands atomically; after a failed write, further writes are refused
//! ([`StorageError::WritesFenced`]) until a restart re-reads the store.

pub mod cf;
pub use kt_codec as codec;
pub mod config;
pub mod error;
pub mod mysql;
pub mod rocks;

pub use cf::Cf;
pub use config::StorageConfig;
pub use error::{DecodeError, StorageError};
pub use mysql::MysqlStorage;
pub use rocks::RocksStorage;

use akd::errors::StorageError as AkdStorageError;
use akd::storage::types::{DbRecord, KeyData, StorageType, ValueState, ValueStateKey, ValueStateRetrievalFlag};
use akd::storage::{Database, DbSetState, Storable};
use akd::tree_node::TreeNodeWithPreviousValue;
use akd::{AkdLabel, AkdValue, Azks};
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Key of the akd `Azks` row in [`Cf::Meta`].
const AZKS_KEY: &[u8] = b"azks";
/// Key of the storage schema version in [`Cf::Meta`].
const SCHEMA_KEY: &[u8] = b"schema";
/// The RocksDB layout this build reads and writes (column families, keys, codec).
///
/// 2: adds the publisher's column families (queue, outcomes, heads, audit blobs).
pub const SCHEMA_VERSION: u32 = 2;

/// One write of the publisher's own, outside akd's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Put `value` at `key` in a column family.
    Put(Cf, Vec<u8>, Vec<u8>),
    /// Delete `key` from a column family.
    Delete(Cf, Vec<u8>),
}

/// Computes extra writes from the records of akd's next transaction commit; they land
/// in the same atomic write, so the publisher's bookkeeping (queue removal, outcomes,
/// the signed head) is atomic with the epoch itself. An error aborts the commit.
pub type CommitHook = Box<dyn FnOnce(&[DbRecord]) -> Result<Vec<Write>, StorageError> + Send>;

/// A raw `(key, value)` pair of one of the publisher's column families.
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// A tree-node key: `label_len (u32 BE) || label_val` (see [`Cf::TreeNodes`]).
pub type NodeKey = [u8; codec::NODE_KEY_LEN];

/// Receives one encoded tree-node record; an error stops the walk.
pub type NodeVisitor<'a> = dyn FnMut(&NodeKey, &[u8]) -> Result<(), StorageError> + 'a;

/// The encoded tree-node records of one epoch, handed to [`Store::commit_epoch`]
/// without a copy: the publisher's epoch store keeps the only one.
pub trait NodeSource: Send + Sync {
    /// How many records [`NodeSource::for_each_node`] yields.
    fn node_count(&self) -> usize;
    /// Calls `put` with every record, in key order (a memtable takes sorted inserts far
    /// faster), each key once; stops at the first error.
    fn for_each_node(&self, put: &mut NodeVisitor<'_>) -> Result<(), StorageError>;
}

/// Receives the raw records of [`Store::read_nodes`], from several threads at once.
pub type NodeSink = Arc<dyn Fn(&NodeKey, &[u8]) -> Result<(), StorageError> + Send + Sync>;

/// One epoch, written in one atomic write by [`Store::commit_epoch`].
pub struct EpochCommit {
    /// Every tree node the epoch wrote.
    pub nodes: Arc<dyn NodeSource>,
    /// The value states of the epoch's new versions.
    pub states: Vec<ValueState>,
    /// akd's `Azks` row at the new epoch: a reader that sees it sees the whole epoch.
    pub azks: Azks,
    /// The publisher's own writes (queue removals, outcomes, the signed head).
    pub writes: Vec<Write>,
}

impl std::fmt::Debug for EpochCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochCommit")
            .field("nodes", &self.nodes.node_count())
            .field("states", &self.states.len())
            .field("azks", &self.azks)
            .field("writes", &self.writes.len())
            .finish()
    }
}

/// What the store itself holds in memory, for the publisher's memory-by-owner report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreMemory {
    /// RocksDB's block cache in use (with the memtables charged to it).
    pub block_cache: u64,
    /// RocksDB's memtables, every column family (`cur-size-all-mem-tables`).
    pub memtables: u64,
    /// The `WriteBatch` of the commit in progress, if one is being written.
    pub write_batch: u64,
}

/// Which backend, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// An embedded RocksDB in the data directory's `db/`.
    Rocks,
    /// A MySQL-protocol server, `mysql://user:password@host:port/database`.
    Mysql {
        /// The connection URL (it may hold a password: never log it whole).
        url: String,
    },
}

/// The store the service runs on: either backend, behind one type.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded RocksDB (a primary, or a read replica's secondary instance).
    Rocks(RocksStorage),
    /// A MySQL-protocol database.
    Mysql(MysqlStorage),
}

/// Calls the same method on whichever backend `$store` is.
macro_rules! each {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            Store::Rocks($s) => $body,
            Store::Mysql($s) => $body,
        }
    };
}

impl From<RocksStorage> for Store {
    fn from(s: RocksStorage) -> Store {
        Store::Rocks(s)
    }
}

impl From<MysqlStorage> for Store {
    fn from(s: MysqlStorage) -> Store {
        Store::Mysql(s)
    }
}

/// Who opens a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The publisher: creates what is missing, writes.
    Writer,
    /// A read replica: never writes; a store no publisher has written is an error.
    /// For RocksDB, `secondary_dir` holds the secondary instance's own files.
    Replica {
        /// The replica's own directory (RocksDB only).
        secondary_dir: PathBuf,
    },
}

impl Store {
    /// Opens `backend`: RocksDB at `db_path` (tuned by `config`), or the MySQL URL.
    pub async fn open(
        backend: &Backend,
        db_path: PathBuf,
        config: StorageConfig,
        role: Role,
    ) -> Result<Store, StorageError> {
        match backend {
            Backend::Rocks => {
                let storage = tokio::task::spawn_blocking(move || match role {
                    Role::Writer => RocksStorage::open(db_path, &config),
                    Role::Replica { secondary_dir } => RocksStorage::open_secondary(db_path, secondary_dir, &config),
                })
                .await??;
                Ok(Store::Rocks(storage))
            }
            Backend::Mysql { url } => Ok(Store::Mysql(MysqlStorage::open(url, role != Role::Writer).await?)),
        }
    }

    /// Where the data lives, for logs and errors (no password).
    pub fn describe(&self) -> String {
        match self {
            Store::Rocks(s) => format!("RocksDB at {}", s.path().display()),
            Store::Mysql(s) => format!("MySQL database {}", s.describe()),
        }
    }

    /// The `Azks` row as stored (the last committed epoch), read from the store.
    pub async fn stored_azks(&self) -> Result<Option<Azks>, StorageError> {
        each!(self, s => s.stored_azks().await)
    }

    /// Applies `writes` atomically.
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), StorageError> {
        each!(self, s => s.write(writes).await)
    }

    /// One value of one of the publisher's column families.
    pub async fn get_raw(&self, cf: Cf, key: Vec<u8>) -> Result<Option<Vec<u8>>, StorageError> {
        each!(self, s => s.get_raw(cf, key).await)
    }

    /// Up to `limit` entries of `cf` with keys `>= from`, in key order.
    pub async fn scan(&self, cf: Cf, from: Vec<u8>, limit: usize) -> Result<Vec<RawEntry>, StorageError> {
        each!(self, s => s.scan(cf, from, limit).await)
    }

    /// The entry with the greatest key in `cf`.
    pub async fn last(&self, cf: Cf) -> Result<Option<RawEntry>, StorageError> {
        each!(self, s => s.last(cf).await)
    }

    /// Counts the entries of `cf` (start-up only).
    pub async fn count(&self, cf: Cf) -> Result<u64, StorageError> {
        each!(self, s => s.count(cf).await)
    }

    /// `label`'s newest (version, epoch, value) at or before `epoch`, straight from the
    /// store: `None` only when the label truly has no state.
    pub async fn latest_state(&self, label: Vec<u8>, epoch: u64) -> Result<Option<(u64, u64, Vec<u8>)>, StorageError> {
        each!(self, s => s.latest_state(label, epoch).await)
    }

    /// Writes one epoch atomically: its tree nodes, value states, the publisher's
    /// writes and akd's `Azks` row, all or nothing. Any failure fences later writes.
    pub async fn commit_epoch(&self, commit: EpochCommit) -> Result<(), StorageError> {
        each!(self, s => s.commit_epoch(commit).await)
    }

    /// Reads the tree nodes at `keys` that exist, in raw form, into `sink` (absent keys
    /// are skipped). Large batches are split across threads (RocksDB) or pooled
    /// connections (MySQL), so `sink` is called from several threads.
    pub async fn read_nodes(&self, keys: Vec<NodeKey>, sink: NodeSink) -> Result<(), StorageError> {
        each!(self, s => s.read_nodes(keys, sink).await)
    }

    /// What the store holds in memory now (zero where a backend keeps nothing).
    pub fn memory(&self) -> StoreMemory {
        match self {
            Store::Rocks(s) => s.memory(),
            Store::Mysql(_) => StoreMemory::default(),
        }
    }

    /// Stages `hook` for akd's next transaction commit (replacing any staged one).
    pub fn stage_commit_hook(&self, hook: CommitHook) {
        each!(self, s => s.stage_commit_hook(hook))
    }

    /// Removes a staged hook; `true` if it was still staged (no commit consumed it).
    pub fn clear_commit_hook(&self) -> bool {
        each!(self, s => s.clear_commit_hook())
    }

    /// Whether an earlier write failed (see [`StorageError::WritesFenced`]).
    pub fn is_fenced(&self) -> bool {
        each!(self, s => s.is_fenced())
    }

    /// Bytes stored per column family (RocksDB: live SST and blob files; MySQL: the
    /// tables' data and index length as the server reports them).
    pub async fn live_bytes_all(&self) -> Result<Vec<(Cf, u64)>, StorageError> {
        each!(self, s => s.live_bytes_all().await)
    }

    /// Makes what the writer committed since the last call visible to this reader: a
    /// RocksDB secondary catches up with the primary's files; a MySQL reader always
    /// sees the latest commit. A reader then calls [`Store::learn_node_lengths`]
    /// before it serves a new epoch.
    pub async fn catch_up(&self) -> Result<(), StorageError> {
        each!(self, s => s.catch_up().await)
    }

    /// Learns the tree-node lengths stored now (see [`NodeLengths`]). A reader calls it
    /// *after* reading the head it will serve (and, on RocksDB, after catching up), so
    /// every node that head's epoch wrote is covered.
    pub async fn learn_node_lengths(&self) -> Result<(), StorageError> {
        each!(self, s => s.learn_node_lengths().await)
    }
}

#[async_trait]
impl Database for Store {
    async fn set(&self, record: DbRecord) -> Result<(), AkdStorageError> {
        each!(self, s => s.set(record).await)
    }

    async fn batch_set(&self, records: Vec<DbRecord>, state: DbSetState) -> Result<(), AkdStorageError> {
        each!(self, s => s.batch_set(records, state).await)
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, AkdStorageError> {
        each!(self, s => s.get::<St>(id).await)
    }

    async fn batch_get<St: Storable>(&self, ids: &[St::StorageKey]) -> Result<Vec<DbRecord>, AkdStorageError> {
        each!(self, s => s.batch_get::<St>(ids).await)
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, AkdStorageError> {
        each!(self, s => s.get_user_data(username).await)
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, AkdStorageError> {
        each!(self, s => s.get_user_state(username, flag).await)
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, AkdStorageError> {
        each!(self, s => s.get_user_state_versions(usernames, flag).await)
    }
}

/// What both backends keep about writing: the publisher's staged hook, and the fence
/// that refuses writes after one failed.
#[derive(Default)]
struct WriteGuard {
    /// Set after any failed write: the store may now disagree with akd's in-memory view
    /// (or, for a commit whose answer was lost, with what we think was written), so
    /// further writes are refused until a restart re-reads it.
    fenced: AtomicBool,
    /// The publisher's hook for the next transaction commit (see [`CommitHook`]).
    hook: std::sync::Mutex<Option<CommitHook>>,
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
        *self.hook.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(hook);
    }

    /// Removes a staged hook; `true` if it was still staged.
    fn clear(&self) -> bool {
        self.take().is_some()
    }

    fn take(&self) -> Option<CommitHook> {
        self.hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// The staged hook if `state` is akd's transaction commit (other writes never
    /// consume it).
    fn hook_for(&self, state: DbSetState) -> Option<CommitHook> {
        match state {
            DbSetState::TransactionCommit => self.take(),
            DbSetState::General => None,
        }
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
/// node has are answered here, not by the store.
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
fn key_label_len(key: &[u8]) -> Option<u32> {
    key.get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
}

/// [`key_label_len`] of a well-formed tree-node key (36 bytes always hold one).
fn node_key_len(key: &[u8; codec::NODE_KEY_LEN]) -> u32 {
    key_label_len(key).unwrap_or(u32::MAX)
}

/// A storage key of one of akd's record kinds, in our layout.
enum Key {
    Azks,
    Node([u8; codec::NODE_KEY_LEN]),
    State { user: Vec<u8>, epoch: u64 },
}

impl Key {
    fn of<St: Storable>(id: &St::StorageKey) -> Result<Key, StorageError> {
        let bin = St::get_full_binary_key_id(id);
        match St::data_type() {
            StorageType::Azks => Ok(Key::Azks),
            StorageType::TreeNode => {
                let key = TreeNodeWithPreviousValue::key_from_full_binary(&bin).map_err(StorageError::BadKey)?;
                Ok(Key::Node(codec::node_key(&key.0)))
            }
            StorageType::ValueState => {
                let ValueStateKey(user, epoch) =
                    ValueState::key_from_full_binary(&bin).map_err(StorageError::BadKey)?;
                Ok(Key::State { user, epoch })
            }
        }
    }
}

fn not_found(what: impl std::fmt::Debug) -> AkdStorageError {
    AkdStorageError::NotFound(format!("{what:?}"))
}
