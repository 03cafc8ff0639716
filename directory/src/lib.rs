//! kt-directory: the key-transparency publisher.
//!
//! An akd directory stored in RocksDB ([`storage`]) with a durable update queue
//! ([`queue`]), the single writer that turns the queue into signed epochs
//! ([`publisher`]), the HTTP API ([`http`], [`server`]), keys and data-directory layout
//! ([`datadir`], [`vrf`]), sample traffic ([`sample`], [`traffic`]) and the
//! `kt-directory` command line ([`cli`], [`config`]).

/// With the `jemalloc` feature (the default) every binary linking this crate allocates
/// with jemalloc, RocksDB's C++ included: docs/decisions/010-allocator.md.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod absence;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod epoch_log;
pub mod http;
pub mod metrics;
pub mod publisher;
pub mod queue;
pub mod replica;
pub mod restore_guard;
#[cfg(any(feature = "demo", feature = "test-support"))]
pub mod sample;
pub mod server;
pub mod storage;
#[cfg(feature = "test-support")]
pub mod test_support;
#[cfg(feature = "demo")]
pub mod traffic;
pub mod vrf;
pub mod witness;

pub use datadir::DataDir;
pub use kt_client::KtConfig;

use akd::storage::StorageManager;
use akd::{AzksParallelismConfig, Directory};
use std::path::PathBuf;
use std::time::Duration;
use storage::Store;
use vrf::VrfSecret;

/// The akd directory this service runs: our configuration, our store (RocksDB or
/// MySQL), in-memory VRF key.
pub type KtDirectory = Directory<KtConfig, Store, VrfSecret>;

/// akd's record cache in front of the store. Without a cache akd skips its batched
/// preloads and falls back to one read per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AkdCache {
    /// How long an entry lives.
    pub lifetime: Duration,
    /// The size bound, by akd's own estimate of its records, enforced at each clean
    /// (`None`: entries leave only when they expire).
    pub limit_bytes: Option<usize>,
    /// How often expired entries are swept and the bound enforced.
    pub clean_every: Duration,
}

impl Default for AkdCache {
    /// For a directory that lives long (the `sample` command, benchmarks): bounded.
    fn default() -> Self {
        AkdCache {
            lifetime: Duration::from_secs(600),
            limit_bytes: Some(256 << 20),
            clean_every: Duration::from_secs(30),
        }
    }
}

impl AkdCache {
    /// The publisher's: it opens a fresh akd directory, and so a fresh cache, for every
    /// epoch (`Publisher::renew_directory`), so the cache holds one epoch's records and
    /// needs no bound. A bounded cache cost more than it saved: akd's clean sorts every
    /// key and removes most, and evicts the nodes the audit blob reads next
    /// (docs/decisions/006-akd-record-cache.md has the figures).
    pub fn publisher() -> Self {
        AkdCache {
            lifetime: Duration::from_secs(3600),
            limit_bytes: None,
            clean_every: Duration::from_secs(3600),
        }
    }
}

/// Opens the akd directory on `storage` with the default [`AkdCache`], creating epoch
/// 0 (the empty tree) if the store is new.
pub async fn open_directory(storage: impl Into<Store>, vrf: VrfSecret) -> Result<KtDirectory, akd::errors::AkdError> {
    open_directory_with(storage, vrf, AkdCache::default()).await
}

/// [`open_directory`] with a chosen cache.
pub async fn open_directory_with(
    storage: impl Into<Store>,
    vrf: VrfSecret,
    cache: AkdCache,
) -> Result<KtDirectory, akd::errors::AkdError> {
    let manager = StorageManager::new(
        storage.into(),
        Some(cache.lifetime),
        cache.limit_bytes,
        Some(cache.clean_every),
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
    let storage = Store::open_rocks(path, &config).await?;
    Ok(open_directory(storage, vrf).await?)
}
