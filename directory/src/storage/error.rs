//! Errors of the storage layer (both backends).

use super::cf::Cf;
use std::path::PathBuf;

pub use kt_codec::DecodeError;

/// Errors of [`super::RocksStorage`] and [`super::MysqlStorage`]. akd sees them as `akd::errors::StorageError`
/// (a string); our own callers keep the typed source.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB refused to open the database.
    #[error("cannot open RocksDB at {path}: {source}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// A RocksDB read or write failed.
    #[error("RocksDB {op} failed on column family {cf}: {source}")]
    Rocks {
        /// Where.
        cf: Cf,
        /// Which operation (`get`, `multi_get`, `iterate`, `flush`, `property`).
        op: &'static str,
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// An atomic write (one `WriteBatch`, possibly spanning every column family) failed.
    /// The storage fences further writes after this.
    #[error("RocksDB write of {records} records failed: {source}")]
    Write {
        /// How many records the batch held.
        records: usize,
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// A stored record failed to decode: bad on-disk data, never a panic.
    #[error("corrupt record in column family {cf} at key {key_hex}: {source}")]
    Corrupt {
        /// Where.
        cf: Cf,
        /// The record's key, hex.
        key_hex: String,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// The MySQL-protocol server could not be reached, or refused a statement.
    #[error("MySQL {op} failed: {source}")]
    Mysql {
        /// What was being done (`connect`, `get`, `commit`, ...).
        op: &'static str,
        /// The driver's reason.
        #[source]
        source: mysql_async::Error,
    },
    /// The MySQL-protocol server could not be reached at start-up.
    #[error("cannot connect to MySQL at {target}: {source}")]
    MysqlConnect {
        /// `user@host:port/database` (no password).
        target: String,
        /// The driver's reason.
        #[source]
        source: mysql_async::Error,
    },
    /// A MySQL-protocol database whose settings or contents this build cannot use
    /// (e.g. `max_allowed_packet` too small, a row of an unexpected shape).
    #[error("MySQL database unusable: {0}")]
    MysqlSetup(String),
    /// A read replica was pointed at a store no publisher has written.
    #[error("empty store: {0}")]
    Empty(String),
    /// A write was asked of a read replica's store.
    #[error("this store is a read replica's: it never writes")]
    ReadOnly,
    /// akd handed us a storage key this layout cannot represent.
    #[error("unsupported storage key: {0}")]
    BadKey(String),
    /// An earlier write failed: the state on disk is whatever RocksDB recovered, and
    /// guessing on from memory could diverge from it. Restart to re-read the disk.
    #[error("an earlier write to the store failed; refusing further writes until restart")]
    WritesFenced,
    /// The database was written by a different on-disk schema.
    #[error("the store has storage schema {found}, this build reads schema {expected}")]
    Schema {
        /// What the disk says.
        found: String,
        /// What this build writes.
        expected: u32,
    },
    /// The publisher's commit hook refused akd's commit (it did not look like the epoch
    /// the publisher staged): nothing was written.
    #[error("commit hook refused the transaction: {0}")]
    CommitHook(String),
    /// A thread of a split batched read panicked (a bug; the read is not answered).
    #[error("a storage read thread panicked")]
    ReadThreadPanicked,
    /// The blocking task running the RocksDB call died.
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl StorageError {
    /// A read restricted to memory that needs a file (RocksDB's `Incomplete`).
    pub(crate) fn needs_disk(&self) -> bool {
        matches!(self, StorageError::Rocks { source, .. } if source.kind() == rocksdb::ErrorKind::Incomplete)
    }

    pub(crate) fn corrupt(cf: Cf, key: &[u8], source: DecodeError) -> Self {
        StorageError::Corrupt {
            cf,
            key_hex: hex::encode(key),
            source,
        }
    }
}

impl From<StorageError> for akd::errors::StorageError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Open { .. }
            | StorageError::Task(_)
            | StorageError::Mysql { .. }
            | StorageError::MysqlConnect { .. } => akd::errors::StorageError::Connection(e.to_string()),
            StorageError::Write { .. } | StorageError::WritesFenced | StorageError::ReadOnly => {
                akd::errors::StorageError::Transaction(e.to_string())
            }
            _ => akd::errors::StorageError::Other(e.to_string()),
        }
    }
}
