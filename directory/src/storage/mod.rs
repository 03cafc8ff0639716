//! akd's [`Database`](akd::storage::Database) and the publisher's own records, written once ([`Store`]) over
//! two thin I/O engines ([`Engine`]).
//!
//! - [`rocks::RocksEngine`]: an embedded RocksDB, the default. A read replica opens it
//!   as a RocksDB *secondary* that follows the primary's files.
//! - [`mysql::MysqlEngine`]: any server speaking the MySQL protocol (MariaDB, MySQL, a
//!   Vitess cluster), for directories that outgrow one machine; publisher and replicas
//!   share the database.
//!
//! [`Store`] is the one the service runs, so the publisher, the queue and the HTTP
//! layer are written once. Its contract: an akd transaction commit (a whole epoch, plus
//! the writes of a staged [`CommitHook`]) lands atomically; after a failed write,
//! further writes are refused ([`StorageError::WritesFenced`]) until a restart re-reads
//! the store. What an engine must do is in [`engine`] and `docs/storage.md`.

pub mod cf;
pub use kt_codec as codec;
pub mod config;
pub mod engine;
pub mod error;
pub mod mysql;
pub mod rocks;
mod store;

pub use cf::Cf;
pub use config::StorageConfig;
pub use engine::Engine;
pub use error::{DecodeError, StorageError};
pub use rocks::SCHEMA_VERSION;
pub use store::Store;

use akd::Azks;
use akd::storage::types::{DbRecord, ValueState};
use std::path::PathBuf;
use std::sync::Arc;

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
