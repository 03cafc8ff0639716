//! kt-directory: the key-transparency publisher.
//!
//! An akd directory stored in RocksDB ([`storage`]), a VRF key held in memory
//! ([`vrf`]), deterministic sample traffic ([`sample`]) and the `kt-directory` command
//! line ([`cli`]).

pub mod cli;
pub mod sample;
pub mod storage;
pub mod vrf;

pub use kt_client::KtConfig;

use akd::storage::StorageManager;
use akd::{AzksParallelismConfig, Directory};
use std::path::{Path, PathBuf};
use std::time::Duration;
use storage::RocksStorage;
use vrf::VrfSecret;

/// The akd directory this service runs: our configuration, RocksDB, in-memory VRF key.
pub type KtDirectory = Directory<KtConfig, RocksStorage, VrfSecret>;

/// akd's record cache in front of RocksDB: how long an entry lives.
const CACHE_ITEM_LIFETIME: Duration = Duration::from_secs(600);
/// akd's record cache: its size bound. Without a cache akd skips its batched preloads
/// and falls back to one read per node.
const CACHE_LIMIT_BYTES: usize = 1 << 30;
/// akd's record cache: how often expired entries are swept.
const CACHE_CLEAN_EVERY: Duration = Duration::from_secs(30);

/// Opens the akd directory on `storage`, creating epoch 0 (the empty tree) if the
/// database is new.
pub async fn open_directory(storage: RocksStorage, vrf: VrfSecret) -> Result<KtDirectory, akd::errors::AkdError> {
    let manager = StorageManager::new(
        storage,
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

/// Where things live in a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The RocksDB database.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    /// The VRF secret key file (owner-only).
    pub fn vrf_key(&self) -> PathBuf {
        self.root.join("vrf.key")
    }
}
