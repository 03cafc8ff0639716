//! Shared set-up for the benchmarks: directories of a given size on our RocksDB backend
//! and on akd's in-memory backend, filled with the same deterministic sample traffic.

use akd::storage::StorageManager;
use akd::storage::memory::AsyncInMemoryDatabase;
use akd::{AzksParallelismConfig, Directory};
use kt_directory::storage::StorageConfig;
use kt_directory::vrf::VrfSecret;
use kt_directory::{KtConfig, KtDirectory, open_rocks_directory, sample};
use std::path::Path;

/// A directory of our configuration and VRF on storage `S`.
pub type DirectoryOn<S> = Directory<KtConfig, S, VrfSecret>;

/// The in-memory directory benchmarks compare against.
pub type MemDirectory = DirectoryOn<AsyncInMemoryDatabase>;

/// Seed of all benchmark traffic.
pub const SEED: u64 = 2026;
/// Entries are loaded in batches of this size.
pub const LOAD_BATCH: usize = 20_000;

/// A fixed VRF key: benchmarks must be reproducible.
pub fn vrf() -> VrfSecret {
    VrfSecret::from_bytes([0x42; 32])
}

/// Reads a size from the environment, e.g. `KT_BENCH_ENTRIES=1000000`.
pub fn env_size(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Opens a RocksDB directory at `path` (default tunables).
pub async fn rocks(path: &Path) -> KtDirectory {
    open_rocks_directory(path, StorageConfig::default(), vrf())
        .await
        .expect("open directory")
}

/// [`rocks`], with a storage manager over the same store, cached as the directory's own,
/// for what akd's directory does not expose (absence proofs:
/// `kt_directory::absence::prove`).
pub async fn rocks_with_storage(path: &Path) -> (KtDirectory, StorageManager<kt_directory::storage::Store>) {
    let store = kt_directory::storage::Store::open_rocks(path, &StorageConfig::default())
        .await
        .expect("open rocksdb");
    let dir = kt_directory::open_directory(store.clone(), vrf())
        .await
        .expect("open directory");
    // With the cache the directory's own manager has, as a read view's absence proofs
    // go through the view's (cached) manager.
    let cache = kt_directory::AkdCache::default();
    let manager = StorageManager::new(store, Some(cache.lifetime), cache.limit_bytes, Some(cache.clean_every));
    (dir, manager)
}

/// [`memory`], with a storage manager over the same database, cached as the
/// directory's own.
pub async fn memory_with_storage() -> (MemDirectory, StorageManager<AsyncInMemoryDatabase>) {
    let db = AsyncInMemoryDatabase::new();
    let dir = Directory::new(
        StorageManager::new(db.clone(), None, None, None),
        vrf(),
        AzksParallelismConfig::default(),
    )
    .await
    .expect("in-memory directory");
    (dir, StorageManager::new(db, None, None, None))
}

/// A fresh in-memory directory, with akd's cache as the RocksDB one has.
pub async fn memory() -> MemDirectory {
    Directory::new(
        StorageManager::new(AsyncInMemoryDatabase::new(), None, None, None),
        vrf(),
        AzksParallelismConfig::default(),
    )
    .await
    .expect("in-memory directory")
}

/// The label of entry `i` of the loaded population (distinct from sample traffic labels).
pub fn load_label(i: u64) -> akd::AkdLabel {
    akd::AkdLabel::from(load_label_str(i).as_str())
}

/// [`load_label`] as the string the HTTP API takes.
pub fn load_label_str(i: u64) -> String {
    format!("load-{i}")
}

/// Epoch `epoch`'s load batch: entries `[start, start + len)` with their first value.
pub fn load_batch(start: u64, len: u64) -> Vec<(akd::AkdLabel, akd::AkdValue)> {
    (start..start + len)
        .map(|i| {
            let l = load_label(i);
            let v = sample::value(SEED, 0, &l);
            (l, v)
        })
        .collect()
}

/// Loads `n` entries into `dir` through ordinary publishes, [`LOAD_BATCH`] per epoch.
pub async fn load<S: akd::storage::Database + 'static>(
    dir: &DirectoryOn<S>,
    n: u64,
) -> Result<(), akd::errors::AkdError> {
    let mut start = 0u64;
    while start < n {
        let len = (LOAD_BATCH as u64).min(n - start);
        dir.publish(load_batch(start, len)).await?;
        start += len;
    }
    Ok(())
}

/// `count` updates to existing loaded entries (key rotations), for epoch `epoch`.
pub fn rotation_batch(epoch: u64, count: usize, population: u64) -> Vec<(akd::AkdLabel, akd::AkdValue)> {
    sample::updates(SEED, epoch, count, population)
        .into_iter()
        .map(|(l, _)| {
            // Map the sample label's index space onto the loaded entries.
            let idx = u64::from_be_bytes(blake3::hash(&l.0).as_bytes()[..8].try_into().expect("8 bytes")) % population;
            let label = load_label(idx);
            let value = sample::value(SEED, epoch, &label);
            (label, value)
        })
        .collect::<std::collections::HashMap<_, _>>()
        .into_iter()
        .collect()
}
