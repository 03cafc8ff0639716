//! RocksDB tunables, chosen deliberately for akd's access pattern.
//!
//! What akd does to storage (`docs/storage.md` has the measurements): a publish is a
//! few batched point reads and ~11 records written per update, in one atomic batch; a
//! lookup's preload probes ~250 tree-node keys, nearly all absent (decision 002); a
//! history reads one user's value states. Hence: bloom filters on every
//! point-read column family (absent probes are most lookups), filters and index blocks
//! pinned in a shared block cache, and one large synced `WriteBatch` per epoch.

/// Settings for [`super::Store::open_rocks`].
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Shared LRU block cache for all column families, in bytes. Holds data blocks and
    /// (pinned) filter and index blocks; the tree's upper levels are hot in every
    /// lookup and publish, so this is the main read-performance knob.
    pub block_cache_bytes: usize,
    /// Bloom filter bits per key on `tree_nodes` and `value_states` (10 ≈ 1% false
    /// positives). Filters are kept on the last level too: lookups mostly miss.
    pub bloom_bits_per_key: f64,
    /// Memtable size per column family. One epoch writes ~11 records per update
    /// (~2.2M records for 200k updates), so larger memtables mean fewer flushes
    /// during a publish.
    pub write_buffer_bytes: usize,
    /// Compress SST blocks (LZ4 above the last level, Zstd on it). Tree-node values
    /// are mostly hashes and compress little, value states and keys compress well;
    /// RocksDB stores a block uncompressed when compression does not pay.
    pub compression: bool,
    /// Most bytes the memtables of every column family may hold together, charged to
    /// the block cache (one shared `WriteBufferManager`): the block cache's size then
    /// bounds data blocks and memtables alike. An epoch's single atomic `WriteBatch`
    /// may overshoot it while it is written; RocksDB flushes right after.
    pub memtable_budget_bytes: usize,
    /// Background flush/compaction threads.
    pub background_jobs: i32,
    /// Threads a large batched read (the publisher's preloads, its version lookups,
    /// the audit blob's node reads) is split across. Reads that miss memory wait on
    /// the disk one at a time per thread, and a virtual disk answers many at once
    /// (the measurement is in docs/decisions/005-parallel-batched-reads.md). 1 turns
    /// the splitting off.
    pub read_threads: usize,
    /// fsync the WAL on every write. Off only for benchmarks that say so: with it off a
    /// machine crash can lose the last epoch (a process crash cannot).
    pub sync_writes: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            block_cache_bytes: 512 << 20,
            bloom_bits_per_key: 10.0,
            write_buffer_bytes: 128 << 20,
            memtable_budget_bytes: 256 << 20,
            compression: true,
            background_jobs: 2,
            read_threads: 16,
            sync_writes: true,
        }
    }
}
