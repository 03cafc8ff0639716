//! kt-directory: the key-transparency publisher.
//!
//! An akd directory stored in RocksDB ([`storage`]) with a durable update queue
//! ([`queue`]), the single writer that turns the queue into signed epochs
//! ([`publisher`]), the HTTP API ([`http`], [`server`]), keys and data-directory layout
//! ([`datadir`], [`vrf`]), sample traffic ([`sample`], [`traffic`]) and the
//! `kt-directory` command line ([`cli`], [`config`]).

pub mod cli;
pub mod config;
pub mod datadir;
pub mod http;
pub mod metrics;
pub mod publisher;
pub mod queue;
pub mod replica;
pub mod sample;
pub mod server;
pub mod storage;
pub mod traffic;
pub mod vrf;
pub mod witness;

pub use datadir::DataDir;
pub use kt_client::KtConfig;

use akd::storage::StorageManager;
use akd::{AzksParallelismConfig, Directory};
use std::path::PathBuf;
use std::time::Duration;
use storage::{RocksStorage, Store};
use vrf::VrfSecret;

/// The akd directory this service runs: our configuration, our store (RocksDB or
/// MySQL), in-memory VRF key.
pub type KtDirectory = Directory<KtConfig, Store, VrfSecret>;

/// akd's record cache in front of RocksDB: how long an entry lives.
const CACHE_ITEM_LIFETIME: Duration = Duration::from_secs(600);
/// akd's record cache: its size bound. Without a cache akd skips its batched preloads
/// and falls back to one read per node.
const CACHE_LIMIT_BYTES: usize = 1 << 30;
/// akd's record cache: how often expired entries are swept.
const CACHE_CLEAN_EVERY: Duration = Duration::from_secs(30);

/// Opens the akd directory on `storage`, creating epoch 0 (the empty tree) if the
/// database is new.
pub async fn open_directory(storage: impl Into<Store>, vrf: VrfSecret) -> Result<KtDirectory, akd::errors::AkdError> {
    let manager = StorageManager::new(
        storage.into(),
        Some(CACHE_ITEM_LIFETIME),
        Some(CACHE_LIMIT_BYTES),
        Some(CACHE_CLEAN_EVERY),
    );
    Directory::new(manager, vrf, AzksParallelismConfig::default()).await
}

/// Why a directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// RocksDB could not be opened.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// akd could not read (or create) its tree.
    #[error("opening the akd directory: {0}")]
    Akd(#[from] akd::errors::AkdError),
}

/// Opens RocksDB at `path` (on the blocking pool) and the akd directory on it.
pub async fn open_rocks_directory(
    path: impl Into<PathBuf>,
    config: storage::StorageConfig,
    vrf: VrfSecret,
) -> Result<KtDirectory, OpenError> {
    let path = path.into();
    let storage = tokio::task::spawn_blocking(move || RocksStorage::open(path, &config))
        .await
        .map_err(storage::StorageError::from)??;
    Ok(open_directory(storage, vrf).await?)
}
