//! The I/O an engine does for [`super::Store`], and nothing more.
//!
//! [`super::Store`] holds every piece of logic the two backends share: akd's
//! [`akd::storage::Database`], the record codec, the write fence, the staged commit
//! hook, the tree-node length filter, the schema check and the read-replica rule. An
//! engine ([`super::rocks::RocksEngine`], [`super::mysql::MysqlEngine`]) moves bytes:
//! point reads, batched reads, ordered scans, value-state selections and one atomic
//! write. A third engine is one file implementing [`Engine`]; `docs/storage.md` states
//! the contract in MUST/SHOULD form, and the conformance, differential and recovery
//! suites (`directory/tests/`) run every engine through it.
//!
//! Keys and values are opaque to an engine, with two exceptions it may rely on: a
//! tree-node key ([`NodeKey`]) starts with the label length (u32 big-endian), and a
//! value state is handed over with its user, epoch and version already split out
//! ([`StateRow`]), so an engine can index them as it likes.

use super::{Cf, NodeKey, NodeSink, NodeSource, RawEntry, StorageError, StoreMemory};
use akd::storage::types::ValueStateRetrievalFlag;
use async_trait::async_trait;
use std::sync::Arc;

/// One stored value state: who, at which epoch, which version, and the encoded record
/// (`kt_codec::encode_value_state`, which holds the version and value again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    /// akd's label of the user.
    pub user: Vec<u8>,
    /// The epoch that wrote this state; `(user, epoch)` is the row's key.
    pub epoch: u64,
    /// The label's version this state holds (selected by `SpecificVersion`).
    pub version: u64,
    /// The encoded record.
    pub value: Vec<u8>,
}

/// A value state as read back: `(user, epoch, encoded record)`.
pub type StateEntry = (Vec<u8>, u64, Vec<u8>);

/// Everything one atomic write holds. An engine MUST apply all of it or none of it;
/// the `Azks` row moves the epoch, so an engine that cannot be atomic (a sharded MySQL
/// without two-phase commit) MUST at least write it last.
#[derive(Default)]
pub struct Batch {
    /// Keys to delete from the publisher's column families (never akd's), applied
    /// before the puts.
    pub deletes: Vec<(Cf, Vec<u8>)>,
    /// Values to put in the publisher's column families (never akd's), replacing any.
    pub puts: Vec<(Cf, Vec<u8>, Vec<u8>)>,
    /// Encoded tree nodes to upsert, each source in key order, sources possibly
    /// overlapping (a later source's value wins).
    pub nodes: Vec<Arc<dyn NodeSource>>,
    /// Value states to upsert, in `(user, epoch)` order.
    pub states: Vec<StateRow>,
    /// The encoded `Azks` row (`Cf::Meta`, key `azks`), when the write moves the epoch.
    pub azks: Option<Vec<u8>>,
}

impl Batch {
    /// How many records the write holds, for logs and errors.
    pub fn records(&self) -> usize {
        self.deletes.len()
            + self.puts.len()
            + self.nodes.iter().map(|n| n.node_count()).sum::<usize>()
            + self.states.len()
            + usize::from(self.azks.is_some())
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("deletes", &self.deletes.len())
            .field("puts", &self.puts.len())
            .field("nodes", &self.nodes.iter().map(|n| n.node_count()).sum::<usize>())
            .field("states", &self.states.len())
            .field("azks", &self.azks.is_some())
            .finish()
    }
}

/// The I/O primitives of one storage engine. Every method may block on a disk or a
/// network; none may block an async worker for long (an engine whose calls block
/// MUST move them off the async workers, as [`super::rocks`] does with tokio's
/// blocking pool). See the module docs and `docs/storage.md` for the contract.
#[async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug + 'static {
    /// Where the data lives, for logs and errors. MUST NOT contain a password.
    fn describe(&self) -> String;

    /// The on-disk layout version this engine writes: it is stored under `Cf::Meta`
    /// key `schema` and checked at every open.
    fn schema_version(&self) -> u32;

    /// One value. `cf` is never [`Cf::ValueStates`] (see the state methods).
    async fn get(&self, cf: Cf, key: Vec<u8>) -> Result<Option<Vec<u8>>, StorageError>;

    /// Calls `sink` with the key and value of every stored tree node among `keys`,
    /// absent keys skipped, in any order, possibly from several threads at once. A
    /// large batch SHOULD be split across threads or connections: the publisher
    /// preloads hundreds of thousands of nodes in one call.
    async fn read_nodes(&self, keys: Vec<NodeKey>, sink: NodeSink) -> Result<(), StorageError>;

    /// Up to `limit` entries of `cf` with keys `>= from`, in key order. `cf` is never
    /// [`Cf::ValueStates`].
    async fn scan(&self, cf: Cf, from: Vec<u8>, limit: usize) -> Result<Vec<RawEntry>, StorageError>;

    /// The entry with the greatest key in `cf` (never [`Cf::ValueStates`]).
    async fn last(&self, cf: Cf) -> Result<Option<RawEntry>, StorageError>;

    /// How many entries `cf` holds (a full scan is acceptable: start-up only).
    async fn count(&self, cf: Cf) -> Result<u64, StorageError>;

    /// The stored states among `keys` (`(user, epoch)` pairs), absent ones skipped.
    async fn states_at(&self, keys: Vec<(Vec<u8>, u64)>) -> Result<Vec<StateEntry>, StorageError>;

    /// Every state of `user`, oldest epoch first.
    async fn user_states(&self, user: Vec<u8>) -> Result<Vec<(u64, Vec<u8>)>, StorageError>;

    /// For each of `users`, the one state `flag` selects, if any: `SpecificEpoch(e)`
    /// the state at `e`; `LeqEpoch(e)` the newest at or before `e`; `MaxEpoch` and
    /// `MinEpoch` the newest and oldest; `SpecificVersion(v)` the oldest state holding
    /// version `v`.
    async fn select_states(
        &self,
        users: Vec<Vec<u8>>,
        flag: ValueStateRetrievalFlag,
    ) -> Result<Vec<StateEntry>, StorageError>;

    /// [`Engine::select_states`] on the calling thread, for callers on threads of their
    /// own whose CPU time should be their own (the publisher's prepare stage). `None`
    /// where the engine cannot read without an async runtime.
    fn select_states_here(
        &self,
        users: &[Vec<u8>],
        flag: ValueStateRetrievalFlag,
    ) -> Option<Result<Vec<StateEntry>, StorageError>> {
        let _ = (users, flag);
        None
    }

    /// Applies `batch` atomically (see [`Batch`]). On an error the store fences
    /// further writes; an engine need not.
    async fn write(&self, batch: Batch) -> Result<(), StorageError>;

    /// Makes what the writer committed since the last call visible to this reader
    /// (a RocksDB secondary catching up with the primary). Engines whose every read
    /// sees the latest commit do nothing.
    async fn catch_up(&self) -> Result<(), StorageError>;

    /// Makes [`Engine::live_bytes`] count everything written so far (RocksDB flushes
    /// its memtables; MySQL refreshes the table statistics).
    async fn flush(&self) -> Result<(), StorageError>;

    /// [`Engine::flush`], then reclaims what overwritten data holds (RocksDB compacts;
    /// elsewhere as [`Engine::flush`]). Benchmarks measure bytes on disk after this.
    async fn compact(&self) -> Result<(), StorageError>;

    /// Bytes stored per column family, as the engine can tell.
    async fn live_bytes(&self) -> Result<Vec<(Cf, u64)>, StorageError>;

    /// What the engine holds in memory now (zero where it keeps nothing of its own).
    fn memory(&self) -> StoreMemory {
        StoreMemory::default()
    }
}
