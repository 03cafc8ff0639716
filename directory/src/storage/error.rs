//! Errors of the storage layer: the store's own, and each engine's I/O failures with
//! their source.

use super::cf::Cf;
use std::path::PathBuf;

pub use kt_codec::DecodeError;

/// Errors of [`super::Store`] and its engines. akd sees them as
/// `akd::errors::StorageError` (a string); our own callers keep the typed source.
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
        cf: Cf,
        /// Which operation (`get`, `multi_get`, `iterate`, `flush`, `property`).
        op: &'static str,
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// RocksDB refused an atomic `WriteBatch`.
    #[error("RocksDB refused the write batch: {source}")]
    RocksBatch {
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// An atomic write failed, on either engine: nothing of it may be assumed written,
    /// and the store fences further writes ([`StorageError::WritesFenced`]).
    #[error("write of {records} records failed: {source}")]
    Write {
        /// How many records the write held.
        records: usize,
        /// The engine's failure.
        #[source]
        source: Box<StorageError>,
    },
    /// A stored record failed to decode: bad on-disk data, never a panic.
    #[error("corrupt record in column family {cf} at key {key_hex}: {source}")]
    Corrupt {
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
    /// The MySQL URL does not parse.
    #[error("bad MySQL URL: {source}")]
    MysqlUrl {
        /// The driver's reason.
        #[source]
        source: mysql_async::UrlError,
    },
    /// The MySQL URL names no database.
    #[error("the MySQL URL names no database ({target}); add /<database> to it")]
    MysqlNoDatabase {
        /// `user@host:port/` (no password).
        target: String,
    },
    /// The MySQL-protocol server did not answer at start-up.
    #[error("no answer from MySQL at {target} within {secs}s")]
    MysqlTimeout {
        /// `user@host:port/database` (no password).
        target: String,
        /// How long we waited.
        secs: u64,
    },
    /// The server's `max_allowed_packet` is too small for one part of a value.
    #[error(
        "max_allowed_packet is {found:?} on {target}; this backend needs at least {needed} \
         (SET GLOBAL max_allowed_packet = 67108864)"
    )]
    MysqlPacket {
        /// `user@host:port/database` (no password).
        target: String,
        /// What the server says (`None`: it said nothing).
        found: Option<u64>,
        /// What this backend needs.
        needed: u64,
    },
    /// `KT_REQUIRE_MYSQL=1` but no test server is named (tests only).
    #[error("KT_REQUIRE_MYSQL=1 but KT_TEST_MYSQL_URL is not set")]
    TestServerMissing,
    /// A read replica was pointed at a store no publisher has written.
    #[error("{store} holds no directory yet: start the publisher on it first")]
    Empty {
        /// Which store (no password).
        store: String,
    },
    /// A write was asked of a read replica's store.
    #[error("this store is a read replica's: it never writes")]
    ReadOnly,
    /// akd handed us a storage key that does not decode.
    #[error("akd storage key of a {kind:?} record does not decode: {reason}")]
    AkdKey {
        /// The record kind.
        kind: akd::storage::types::StorageType,
        /// akd's reason (akd reports it as text).
        reason: String,
    },
    /// A tree-node key that is not 36 bytes (label length and label).
    #[error("tree-node key {key_hex} is not 36 bytes")]
    BadNodeKey {
        /// The key, hex.
        key_hex: String,
    },
    /// A column family this build needs is not open.
    #[error("column family {0} is not open")]
    MissingColumnFamily(Cf),
    /// An operation the store does not offer on this column family (akd's records are
    /// never deleted; value states are read through the state queries only).
    #[error("{op} is not offered on column family {cf}")]
    Unsupported {
        /// The column family.
        cf: Cf,
        /// The operation.
        op: &'static str,
    },
    /// A user label longer than the engine stores.
    #[error("user label of {len} bytes; this backend stores at most {max}")]
    LabelTooLong {
        /// The label's length.
        len: usize,
        /// The engine's bound.
        max: usize,
    },
    /// A key longer than the engine stores in this column family.
    #[error("key of {len} bytes in {cf}; this backend stores at most {max}")]
    KeyTooLong {
        cf: Cf,
        /// The key's length.
        len: usize,
        /// The engine's bound.
        max: usize,
    },
    /// A value too large for the engine's part numbering.
    #[error("value of {len} bytes in {cf} is too large")]
    ValueTooLarge {
        cf: Cf,
        /// The value's length.
        len: usize,
    },
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
    CommitHook(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A thread of a split batched read panicked (a bug; the read is not answered).
    #[error("a storage read thread panicked")]
    ReadThreadPanicked,
    /// The blocking task running an engine call died.
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl StorageError {
    /// A read restricted to memory that needs a file (RocksDB's `Incomplete`).
    pub(crate) fn needs_disk(&self) -> bool {
        matches!(self, StorageError::Rocks { source, .. } if source.kind() == rocksdb::ErrorKind::Incomplete)
    }

    /// Input an engine refused before writing anything (a label, key or value beyond
    /// its bounds): the store is unchanged, so it is not a failed write.
    pub(crate) fn is_refused_input(&self) -> bool {
        matches!(
            self,
            StorageError::LabelTooLong { .. } | StorageError::KeyTooLong { .. } | StorageError::ValueTooLarge { .. }
        )
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
            | StorageError::MysqlConnect { .. }
            | StorageError::MysqlTimeout { .. } => akd::errors::StorageError::Connection(e.to_string()),
            StorageError::Write { .. } | StorageError::WritesFenced | StorageError::ReadOnly => {
                akd::errors::StorageError::Transaction(e.to_string())
            }
            _ => akd::errors::StorageError::Other(e.to_string()),
        }
    }
}
