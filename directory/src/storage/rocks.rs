//! The RocksDB engine: an embedded RocksDB, the default backend. A read replica opens
//! it as a RocksDB *secondary* that follows the primary's files.
//!
//! One column family per record kind ([`Cf`]), a per-user key layout for value states
//! (`len(user) || user || epoch`) so every `ValueStateRetrievalFlag` is a seek, and one
//! synced `WriteBatch` per atomic write, so an epoch lands whole or not at all. Every
//! call that may touch a file runs on tokio's blocking pool, off the async workers;
//! small reads try memory (memtables and block cache) first, on the caller's thread.

use super::engine::{Batch, Engine, StateEntry};
use super::{Cf, NodeKey, NodeSink, RawEntry, StorageConfig, StorageError, StoreMemory, codec};
use akd::storage::types::ValueStateRetrievalFlag;
use async_trait::async_trait;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, DBRawIterator, Options,
    ReadOptions, WriteBatch, WriteBufferManager, WriteOptions,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The RocksDB layout this build reads and writes (column families, keys, codec).
///
/// 2: adds the publisher's column families (queue, outcomes, heads, audit blobs).
pub const SCHEMA_VERSION: u32 = 2;

/// Largest read tried from memory on the caller's thread (a lookup's, once the length
/// filter has dropped its impossible keys); larger ones (the publisher's preloads,
/// tens of thousands of keys) go to a blocking thread at once.
const MEMORY_BATCH_MAX: usize = 256;

/// Fewest keys of a batched read given a thread of their own ([`Inner::in_chunks`]):
/// below this, starting a thread costs more than the reads it overlaps.
const READ_CHUNK_MIN: usize = 256;

/// An embedded RocksDB. Cheap to clone: clones share one database.
#[derive(Clone, Debug)]
pub struct RocksEngine {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open database; all column families of [`Cf::ALL`] exist in it.
    db: DB,
    /// The block cache every column family shares (its usage is reported by owner).
    cache: Cache,
    /// Bytes of the `WriteBatch` being written (0 between writes): the one moment an
    /// epoch exists in RocksDB's memory besides the memtable.
    batch_bytes: AtomicU64,
    /// Where it lives, for error messages.
    path: PathBuf,
    /// A read replica's own directory (info log), when this is a secondary instance:
    /// it must catch up with the primary before reading a new epoch, and never write.
    secondary: Option<PathBuf>,
    /// Whether writes fsync the WAL (see [`StorageConfig::sync_writes`]).
    sync_writes: bool,
    /// How many threads a large batched read is split across (see
    /// [`StorageConfig::read_threads`]): reads that miss memory wait on the disk.
    read_threads: usize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("path", &self.path)
            .field("secondary", &self.secondary)
            .field("sync_writes", &self.sync_writes)
            .field("read_threads", &self.read_threads)
            .finish_non_exhaustive()
    }
}

/// Where a read may look. Reads of what is in memory (memtables and the block cache)
/// cannot block, so they run where they are asked, on an async worker; only what needs
/// a file goes to a blocking thread. A lookup makes several small reads, and the hand-off
/// to a blocking thread (a futex wake and two context switches) cost more than reading
/// from the block cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// Memtables and block cache only; RocksDB answers `Incomplete` for the rest.
    Memory,
    /// Files too: blocking threads only.
    Disk,
}

impl Tier {
    fn options(self) -> ReadOptions {
        let mut opts = ReadOptions::default();
        if self == Tier::Memory {
            opts.set_read_tier(rocksdb::ReadTier::BlockCache);
        }
        opts
    }
}

/// Whether `e` is RocksDB's answer to a memory-only read that needs a file.
fn is_incomplete(e: &rocksdb::Error) -> bool {
    e.kind() == rocksdb::ErrorKind::Incomplete
}

impl RocksEngine {
    /// Opens (creating if missing) the database at `path`. Blocking: call it at start-up
    /// or from `spawn_blocking` ([`super::Store::open_rocks`] does).
    pub fn open(path: impl AsRef<Path>, config: &StorageConfig) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let mut db_opts = db_options(config);
        // Memtables are charged to the block cache: one bound for both.
        let write_buffers =
            WriteBufferManager::new_write_buffer_manager_with_cache(config.memtable_budget_bytes, false, cache.clone());
        db_opts.set_write_buffer_manager(&write_buffers);
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let cfs = Cf::ALL
            .iter()
            .map(|&cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(cf, config, &cache)));
        let db = DB::open_cf_descriptors(&db_opts, &path, cfs).map_err(|source| StorageError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Self::wrap(db, cache, path, config, None))
    }

    /// Opens the primary database at `primary` as a RocksDB *secondary* instance (a read
    /// replica in another process): it reads the primary's files, keeps its own info
    /// log in `secondary_dir`, and sees the primary's newer writes only after
    /// [`Engine::catch_up`]. Writes are refused. Blocking.
    pub fn open_secondary(
        primary: impl AsRef<Path>,
        secondary_dir: impl AsRef<Path>,
        config: &StorageConfig,
    ) -> Result<Self, StorageError> {
        let path = primary.as_ref().to_path_buf();
        let secondary = secondary_dir.as_ref().to_path_buf();
        if !path.join("CURRENT").exists() {
            return Err(StorageError::Empty {
                store: format!("RocksDB at {}", path.display()),
            });
        }
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let mut db_opts = db_options(config);
        // A secondary must keep every file it has open: the primary may delete them.
        db_opts.set_max_open_files(-1);
        let cfs = Cf::ALL
            .iter()
            .map(|&cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(cf, config, &cache)));
        let db = DB::open_cf_descriptors_as_secondary(&db_opts, &path, &secondary, cfs).map_err(|source| {
            StorageError::Open {
                path: path.clone(),
                source,
            }
        })?;
        Ok(Self::wrap(db, cache, path, config, Some(secondary)))
    }

    fn wrap(db: DB, cache: Cache, path: PathBuf, config: &StorageConfig, secondary: Option<PathBuf>) -> Self {
        RocksEngine {
            inner: Arc::new(Inner {
                db,
                cache,
                batch_bytes: AtomicU64::new(0),
                path,
                secondary,
                sync_writes: config.sync_writes,
                read_threads: config.read_threads.max(1),
            }),
        }
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on tokio's blocking pool: RocksDB calls block on disk.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner)).await?
    }

    /// `read` from memory on this thread when `small`, and from disk on a blocking
    /// thread when that is not small or needs a file. `read` has no side effects, so a
    /// memory attempt that needs a file is simply repeated.
    async fn memory_first<T, F>(&self, small: bool, read: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: Fn(&Inner, Tier) -> Result<T, StorageError> + Send + 'static,
    {
        if small {
            match read(&self.inner, Tier::Memory) {
                Err(e) if e.needs_disk() => {}
                done => return done,
            }
        }
        self.blocking(move |inner| read(inner, Tier::Disk)).await
    }
}

#[async_trait]
impl Engine for RocksEngine {
    fn describe(&self) -> String {
        format!("RocksDB at {}", self.inner.path.display())
    }

    fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    async fn get(&self, cf: Cf, key: Vec<u8>) -> Result<Option<Vec<u8>>, StorageError> {
        self.memory_first(true, move |inner, tier| {
            Ok(inner.get_in(cf, &key, tier)?.map(|v| v.to_vec()))
        })
        .await
    }

    async fn read_nodes(&self, mut keys: Vec<NodeKey>, sink: NodeSink) -> Result<(), StorageError> {
        keys.sort_unstable();
        if keys.len() <= MEMORY_BATCH_MAX {
            keys = self.inner.nodes_from_memory(keys, &sink)?;
            if keys.is_empty() {
                return Ok(());
            }
        }
        self.blocking(move |inner| inner.nodes_from_disk(&keys, &sink)).await
    }

    async fn scan(&self, cf: Cf, from: Vec<u8>, limit: usize) -> Result<Vec<RawEntry>, StorageError> {
        self.blocking(move |inner| {
            let mut opts = ReadOptions::default();
            opts.set_total_order_seek(true);
            let mut it = inner.db.raw_iterator_cf_opt(inner.cf(cf)?, opts);
            let mut out = Vec::new();
            it.seek(&from);
            while out.len() < limit && it.valid() {
                if let (Some(k), Some(v)) = (it.key(), it.value()) {
                    out.push((k.to_vec(), v.to_vec()));
                }
                it.next();
            }
            iter_status(&it, cf)?;
            Ok(out)
        })
        .await
    }

    async fn last(&self, cf: Cf) -> Result<Option<RawEntry>, StorageError> {
        self.blocking(move |inner| {
            let mut it = inner.db.raw_iterator_cf(inner.cf(cf)?);
            it.seek_to_last();
            let found = match (it.valid(), it.key(), it.value()) {
                (true, Some(k), Some(v)) => Some((k.to_vec(), v.to_vec())),
                _ => None,
            };
            iter_status(&it, cf)?;
            Ok(found)
        })
        .await
    }

    async fn count(&self, cf: Cf) -> Result<u64, StorageError> {
        self.blocking(move |inner| {
            let mut it = inner.db.raw_iterator_cf(inner.cf(cf)?);
            let mut n = 0u64;
            it.seek_to_first();
            while it.valid() {
                n += 1;
                it.next();
            }
            iter_status(&it, cf)?;
            Ok(n)
        })
        .await
    }

    async fn states_at(&self, keys: Vec<(Vec<u8>, u64)>) -> Result<Vec<StateEntry>, StorageError> {
        let mut keys: Vec<Vec<u8>> = keys.iter().map(|(u, e)| codec::value_state_key(u, *e)).collect();
        keys.sort_unstable();
        self.memory_first(keys.len() <= MEMORY_BATCH_MAX, move |inner, tier| {
            inner.states_at(&keys, tier)
        })
        .await
    }

    async fn user_states(&self, user: Vec<u8>) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        self.blocking(move |inner| inner.user_states(&user)).await
    }

    async fn select_states(
        &self,
        users: Vec<Vec<u8>>,
        flag: ValueStateRetrievalFlag,
    ) -> Result<Vec<StateEntry>, StorageError> {
        self.memory_first(users.len() <= MEMORY_BATCH_MAX, move |inner, tier| {
            inner.select_states(&users, flag, tier)
        })
        .await
    }

    fn select_states_here(
        &self,
        users: &[Vec<u8>],
        flag: ValueStateRetrievalFlag,
    ) -> Option<Result<Vec<StateEntry>, StorageError>> {
        Some(self.inner.select_states(users, flag, Tier::Disk))
    }

    async fn write(&self, batch: Batch) -> Result<(), StorageError> {
        self.blocking(move |inner| inner.write(batch)).await
    }

    async fn catch_up(&self) -> Result<(), StorageError> {
        if self.inner.secondary.is_none() {
            return Ok(());
        }
        self.blocking(|inner| {
            inner
                .db
                .try_catch_up_with_primary()
                .map_err(|source| StorageError::Rocks {
                    cf: Cf::Meta,
                    op: "catch up with primary",
                    source,
                })
        })
        .await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.blocking(|inner| {
            for cf in Cf::ALL {
                inner.db.flush_cf(inner.cf(cf)?).map_err(|source| StorageError::Rocks {
                    cf,
                    op: "flush",
                    source,
                })?;
            }
            Ok(())
        })
        .await
    }

    async fn compact(&self) -> Result<(), StorageError> {
        self.flush().await?;
        self.blocking(|inner| {
            for cf in Cf::ALL {
                inner.db.compact_range_cf(inner.cf(cf)?, None::<&[u8]>, None::<&[u8]>);
            }
            Ok(())
        })
        .await
    }

    /// Live SST files plus blob files (audit blobs live in blob files, outside the
    /// SSTs) per column family; memtables not yet flushed are not counted.
    async fn live_bytes(&self) -> Result<Vec<(Cf, u64)>, StorageError> {
        self.blocking(|inner| Cf::ALL.iter().map(|&cf| Ok((cf, inner.live_bytes(cf)?))).collect())
            .await
    }

    /// Block cache, memtables and the write in flight, from RocksDB's own counters.
    fn memory(&self) -> StoreMemory {
        let inner = &self.inner;
        let memtables = Cf::ALL
            .iter()
            .filter_map(|&cf| inner.cf(cf).ok())
            .filter_map(|h| {
                inner
                    .db
                    .property_int_value_cf(h, "rocksdb.cur-size-all-mem-tables")
                    .ok()
                    .flatten()
            })
            .sum();
        StoreMemory {
            block_cache: inner.cache.get_usage() as u64,
            memtables,
            write_batch: inner.batch_bytes.load(Ordering::Relaxed),
        }
    }
}

fn db_options(config: &StorageConfig) -> Options {
    let mut db_opts = Options::default();
    db_opts.set_max_background_jobs(config.background_jobs);
    db_opts.set_bytes_per_sync(1 << 20);
    db_opts.set_keep_log_file_num(4);
    db_opts
}

fn cf_options(cf: Cf, config: &StorageConfig, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Filters and indexes live in the block cache (bounded memory) and L0's stay
    // pinned: every lookup consults them.
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut opts = Options::default();
    if cf == Cf::AuditBlobs {
        // Proofs of large epochs run to tens of MB: keep them in blob files so
        // compactions do not rewrite them.
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(4096);
        opts.set_blob_compression_type(DBCompressionType::Zstd);
    }
    if matches!(cf, Cf::TreeNodes | Cf::ValueStates) {
        table.set_bloom_filter(config.bloom_bits_per_key, false);
        table.set_whole_key_filtering(true);
        // Absent probes that reach a memtable are answered by its own bloom filter too.
        opts.set_memtable_whole_key_filtering(true);
        opts.set_memtable_prefix_bloom_ratio(0.05);
    }
    opts.set_block_based_table_factory(&table);
    opts.set_write_buffer_size(config.write_buffer_bytes);
    opts.set_level_compaction_dynamic_level_bytes(true);
    // Lookups mostly miss: keep filters on the last level (this is RocksDB's default;
    // stated because the opposite setting is a common "optimisation").
    opts.set_optimize_filters_for_hits(false);
    if config.compression {
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_bottommost_compression_type(DBCompressionType::Zstd);
    } else {
        opts.set_compression_type(DBCompressionType::None);
    }
    opts
}

impl Inner {
    fn cf(&self, cf: Cf) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(cf.name())
            .ok_or(StorageError::MissingColumnFamily(cf))
    }

    fn get_in(&self, cf: Cf, key: &[u8], tier: Tier) -> Result<Option<rocksdb::DBPinnableSlice<'_>>, StorageError> {
        self.db
            .get_pinned_cf_opt(self.cf(cf)?, key, &tier.options())
            .map_err(|source| StorageError::Rocks { cf, op: "get", source })
    }

    fn live_bytes(&self, cf: Cf) -> Result<u64, StorageError> {
        let handle = self.cf(cf)?;
        let mut total = 0;
        for property in ["rocksdb.live-sst-files-size", "rocksdb.live-blob-file-size"] {
            let v = self
                .db
                .property_int_value_cf(handle, property)
                .map_err(|source| StorageError::Rocks {
                    cf,
                    op: "property",
                    source,
                })?;
            total += v.unwrap_or(0);
        }
        Ok(total)
    }

    /// The nodes among sorted `keys` that are in memory, into `sink`; the keys that need
    /// a file come back. RocksDB's MultiGet reads data blocks from files even with the
    /// block-cache read tier (a plain get honours it; docs/decisions/003-memory-first-reads.md),
    /// so this is a loop of gets.
    fn nodes_from_memory(&self, keys: Vec<NodeKey>, sink: &NodeSink) -> Result<Vec<NodeKey>, StorageError> {
        let handle = self.cf(Cf::TreeNodes)?;
        let opts = Tier::Memory.options();
        let mut unread = Vec::new();
        for key in keys {
            match self.db.get_pinned_cf_opt(handle, key, &opts) {
                Ok(Some(value)) => sink(&key, &value)?,
                Ok(None) => {}
                Err(e) if is_incomplete(&e) => unread.push(key),
                Err(source) => {
                    return Err(StorageError::Rocks {
                        cf: Cf::TreeNodes,
                        op: "get",
                        source,
                    });
                }
            }
        }
        Ok(unread)
    }

    /// The nodes among sorted `keys`, into `sink`, split across `read_threads`.
    fn nodes_from_disk(&self, keys: &[NodeKey], sink: &NodeSink) -> Result<(), StorageError> {
        self.in_chunks(keys, |chunk| {
            let handle = self.cf(Cf::TreeNodes)?;
            let got = self
                .db
                .batched_multi_get_cf_opt(handle, chunk, true, &ReadOptions::default());
            for (key, got) in chunk.iter().zip(got) {
                match got {
                    Ok(Some(value)) => sink(key, &value)?,
                    Ok(None) => {}
                    Err(source) => {
                        return Err(StorageError::Rocks {
                            cf: Cf::TreeNodes,
                            op: "multi_get",
                            source,
                        });
                    }
                }
            }
            Ok(Vec::<()>::new())
        })?;
        Ok(())
    }

    /// The value states at sorted raw `keys` that exist.
    fn states_at(&self, keys: &[Vec<u8>], tier: Tier) -> Result<Vec<StateEntry>, StorageError> {
        self.in_chunks(keys, |chunk| {
            let handle = self.cf(Cf::ValueStates)?;
            let opts = tier.options();
            let got: Vec<_> = match tier {
                // See `nodes_from_memory`: MultiGet ignores the memory tier.
                Tier::Memory => chunk
                    .iter()
                    .map(|k| self.db.get_pinned_cf_opt(handle, k, &opts))
                    .collect(),
                Tier::Disk => self.db.batched_multi_get_cf_opt(handle, chunk, true, &opts),
            };
            let mut out = Vec::new();
            for (key, got) in chunk.iter().zip(got) {
                let value = got.map_err(|source| StorageError::Rocks {
                    cf: Cf::ValueStates,
                    op: "multi_get",
                    source,
                })?;
                if let Some(value) = value {
                    out.push(state_entry(key, &value)?);
                }
            }
            Ok(out)
        })
    }

    fn states_iter(&self, tier: Tier) -> Result<DBRawIterator<'_>, StorageError> {
        let mut opts = tier.options();
        // Per-user seeks cross user boundaries; keep the iterator in total order.
        opts.set_total_order_seek(true);
        Ok(self.db.raw_iterator_cf_opt(self.cf(Cf::ValueStates)?, opts))
    }

    /// All states of `user`, oldest first.
    fn user_states(&self, user: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let prefix = codec::user_prefix(user);
        let mut it = self.states_iter(Tier::Disk)?;
        let mut out = Vec::new();
        it.seek(&prefix);
        while let Some((k, v)) = entry_with_prefix(&it, &prefix) {
            let (_, epoch, value) = state_entry(k, v)?;
            out.push((epoch, value));
            it.next();
        }
        iter_status(&it, Cf::ValueStates)?;
        Ok(out)
    }

    /// The raw `(key, value)` of `user`'s state selected by `flag`, using `it`.
    fn find_state(
        it: &mut DBRawIterator<'_>,
        user: &[u8],
        flag: ValueStateRetrievalFlag,
    ) -> Result<Option<RawEntry>, StorageError> {
        let prefix = codec::user_prefix(user);
        let at = |epoch: u64| [prefix.as_slice(), &epoch.to_be_bytes()].concat();
        let found = match flag {
            ValueStateRetrievalFlag::SpecificEpoch(e) => {
                let target = at(e);
                it.seek(&target);
                entry_with_prefix(it, &prefix).filter(|(k, _)| *k == target.as_slice())
            }
            ValueStateRetrievalFlag::LeqEpoch(e) => {
                it.seek_for_prev(at(e));
                entry_with_prefix(it, &prefix)
            }
            ValueStateRetrievalFlag::MaxEpoch => {
                it.seek_for_prev(at(u64::MAX));
                entry_with_prefix(it, &prefix)
            }
            ValueStateRetrievalFlag::MinEpoch => {
                it.seek(&prefix);
                entry_with_prefix(it, &prefix)
            }
            ValueStateRetrievalFlag::SpecificVersion(version) => {
                // Versions grow with epochs but are not epochs: walk this user's states.
                it.seek(&prefix);
                loop {
                    let Some((k, v)) = entry_with_prefix(it, &prefix) else {
                        break None;
                    };
                    let (got, _) =
                        codec::decode_version_and_value(v).map_err(|e| StorageError::corrupt(Cf::ValueStates, k, e))?;
                    if got == version {
                        break Some((k, v));
                    }
                    it.next();
                }
            }
        }
        .map(|(k, v)| (k.to_vec(), v.to_vec()));
        iter_status(it, Cf::ValueStates)?;
        Ok(found)
    }

    /// The state `flag` selects for each of `users`. Seeking in key order keeps each
    /// iterator moving forward through the files; each thread of `in_chunks` seeks
    /// through its own range of users.
    fn select_states(
        &self,
        users: &[Vec<u8>],
        flag: ValueStateRetrievalFlag,
        tier: Tier,
    ) -> Result<Vec<StateEntry>, StorageError> {
        let mut sorted: Vec<(Vec<u8>, &Vec<u8>)> = users.iter().map(|u| (codec::user_prefix(u), u)).collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.in_chunks(&sorted, |chunk| {
            let mut it = self.states_iter(tier)?;
            let mut out = Vec::with_capacity(chunk.len());
            for (_, user) in chunk {
                if let Some((k, v)) = Self::find_state(&mut it, user, flag)? {
                    out.push(state_entry(&k, &v)?);
                }
            }
            Ok(out)
        })
    }

    /// `read` over `items` cut into at most `read_threads` contiguous chunks of at least
    /// [`READ_CHUNK_MIN`] items, each on its own thread; the results in order. A batch
    /// that misses memory waits on the disk read by read, and the disk answers many
    /// reads at once (see [`StorageConfig::read_threads`]).
    fn in_chunks<T: Sync, R: Send>(
        &self,
        items: &[T],
        read: impl Fn(&[T]) -> Result<Vec<R>, StorageError> + Sync,
    ) -> Result<Vec<R>, StorageError> {
        let chunks = self.read_threads.min(items.len() / READ_CHUNK_MIN);
        if chunks <= 1 {
            return read(items);
        }
        let size = items.len().div_ceil(chunks);
        let read = &read;
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = items
                .chunks(size)
                .map(|chunk| scope.spawn(move || read(chunk)))
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut out = Vec::with_capacity(items.len());
        for result in results {
            out.extend(result.map_err(|_| StorageError::ReadThreadPanicked)??);
        }
        Ok(out)
    }

    fn write_options(&self) -> WriteOptions {
        let mut opts = WriteOptions::default();
        opts.set_sync(self.sync_writes);
        opts
    }

    /// One synced `WriteBatch`: deletes, puts, tree nodes in key order (straight from
    /// their sources, no copy in between), value states in key order, the `Azks` row.
    fn write(&self, batch: Batch) -> Result<(), StorageError> {
        if self.secondary.is_some() {
            return Err(StorageError::ReadOnly);
        }
        let Batch {
            deletes,
            puts,
            nodes,
            mut states,
            azks,
        } = batch;
        let started = std::time::Instant::now();
        let mut wb = WriteBatch::default();
        for (cf, k) in deletes {
            wb.delete_cf(self.cf(cf)?, k);
        }
        for (cf, k, v) in puts {
            wb.put_cf(self.cf(cf)?, k, v);
        }
        let node_cf = self.cf(Cf::TreeNodes)?;
        for source in nodes {
            source.for_each_node(&mut |key, value| {
                wb.put_cf(node_cf, key, value);
                Ok(())
            })?;
        }
        let state_cf = self.cf(Cf::ValueStates)?;
        // In our key order (length-prefixed users): a memtable takes sorted inserts
        // far faster (its skip list resumes each search where the last ended).
        let mut keyed: Vec<(Vec<u8>, Vec<u8>)> = states
            .drain(..)
            .map(|s| (codec::value_state_key(&s.user, s.epoch), s.value))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in keyed {
            wb.put_cf(state_cf, key, value);
        }
        if let Some(azks) = azks {
            wb.put_cf(self.cf(Cf::Meta)?, super::store::AZKS_KEY, azks);
        }
        let bytes = wb.size_in_bytes();
        let records = wb.len();
        self.batch_bytes.store(bytes as u64, Ordering::Relaxed);
        let built = started.elapsed();
        let written = self
            .db
            .write_opt(wb, &self.write_options())
            .map_err(|source| StorageError::RocksBatch { source });
        self.batch_bytes.store(0, Ordering::Relaxed);
        tracing::debug!(
            records,
            mb = bytes >> 20,
            build_ms = built.as_millis(),
            write_ms = (started.elapsed() - built).as_millis(),
            "RocksDB batch written"
        );
        written
    }
}

/// The iterator's current entry if it is valid and belongs to `prefix`'s user.
fn entry_with_prefix<'a>(it: &'a DBRawIterator<'_>, prefix: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    if !it.valid() {
        return None;
    }
    let (k, v) = (it.key()?, it.value()?);
    k.starts_with(prefix).then_some((k, v))
}

fn iter_status(it: &DBRawIterator<'_>, cf: Cf) -> Result<(), StorageError> {
    it.status().map_err(|source| StorageError::Rocks {
        cf,
        op: "iterate",
        source,
    })
}

/// A value-state row from its raw key and value.
fn state_entry(key: &[u8], value: &[u8]) -> Result<StateEntry, StorageError> {
    let (user, epoch) =
        codec::split_value_state_key(key).map_err(|e| StorageError::corrupt(Cf::ValueStates, key, e))?;
    Ok((user.to_vec(), epoch, value.to_vec()))
}
