//! akd's [`Database`] on RocksDB.
//!
//! One column family per record kind ([`Cf`]), our own compact value encoding
//! ([`codec`]), a per-user key layout so every `ValueStateRetrievalFlag` is a seek,
//! and one synced `WriteBatch` per akd transaction commit, so an epoch lands whole or
//! not at all. Every RocksDB call that may touch a file runs on tokio's blocking pool,
//! off the async workers.

use super::{
    AZKS_KEY, Cf, CommitHook, EpochCommit, Key, NodeKey, NodeLengths, NodeSink, RawEntry, SCHEMA_KEY, SCHEMA_VERSION,
    StorageConfig, StorageError, StoreMemory, Write, WriteGuard, codec, key_label_len, node_key_len, not_found,
};
use akd::errors::StorageError as AkdStorageError;
use akd::storage::types::{DbRecord, KeyData, ValueState, ValueStateRetrievalFlag};
use akd::storage::{Database, DbSetState, Storable};
use akd::{AkdLabel, AkdValue, Azks};
use async_trait::async_trait;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, DBRawIterator, Options,
    ReadOptions, WriteBatch, WriteBufferManager, WriteOptions,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// akd storage on an embedded RocksDB. Cheap to clone: clones share one database.
#[derive(Clone, Debug)]
pub struct RocksStorage {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open database; all column families of [`Cf::ALL`] exist in it.
    db: DB,
    /// The block cache every column family shares (its usage is reported by owner).
    cache: Cache,
    /// Bytes of the epoch `WriteBatch` being written (0 between commits): the one
    /// moment the epoch exists in RocksDB's memory besides the memtable.
    batch_bytes: AtomicU64,
    /// Where it lives, for error messages and reopening.
    path: PathBuf,
    /// A read replica's own directory (info log), when this is a secondary instance:
    /// it must catch up with the primary before reading a new epoch, and never write.
    secondary: Option<PathBuf>,
    /// Whether writes fsync the WAL (see [`StorageConfig::sync_writes`]).
    sync_writes: bool,
    /// How many threads a large batched read is split across (see
    /// [`StorageConfig::read_threads`]): reads that miss memory wait on the disk.
    read_threads: usize,
    /// The publisher's staged commit hook, and the fence set after any failed write:
    /// akd's in-memory view may then disagree with the disk, so further writes are
    /// refused until a restart re-reads it.
    writes: WriteGuard,
    /// Label lengths at which at least one tree node is stored. A lookup's greedy
    /// preload asks for the node at every prefix length of three labels (~250 keys,
    /// nearly all absent), but nodes only exist near the top of the tree and at the
    /// leaves: probes at a length no node has are answered here, not by RocksDB.
    node_lengths: NodeLengths,
}

/// Adds to `lengths` the tree-node label lengths stored in `db`: one seek per length
/// (tree-node keys start with the label length, big-endian).
fn scan_lengths(db: &DB, cf: &ColumnFamily, lengths: &NodeLengths) -> Result<(), StorageError> {
    let mut opts = ReadOptions::default();
    opts.set_total_order_seek(true);
    let mut it = db.raw_iterator_cf_opt(cf, opts);
    let mut len = 0u32;
    it.seek_to_first();
    // Seek to the first key at or after each length; jump to the length found.
    while let Some(key) = it.key() {
        let found = key_label_len(key).ok_or_else(|| {
            StorageError::corrupt(
                Cf::TreeNodes,
                key,
                codec::DecodeError::Truncated {
                    field: "tree-node key label length",
                    needed: 4 - key.len(),
                },
            )
        })?;
        lengths.insert(found);
        let Some(next) = found.checked_add(1) else { break };
        len = len.max(next);
        it.seek(len.to_be_bytes());
    }
    it.status().map_err(|source| StorageError::Rocks {
        cf: Cf::TreeNodes,
        op: "scan",
        source,
    })
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

/// Largest `batch_get` tried from memory on the caller's thread (a lookup's, once
/// [`NodeLengths`] has dropped its impossible keys); larger ones (the publisher's
/// preloads, tens of thousands of keys) go to a blocking thread at once.
const MEMORY_BATCH_MAX: usize = 256;

/// Fewest keys of a batched read given a thread of their own ([`Inner::in_chunks`]):
/// below this, starting a thread costs more than the reads it overlaps.
const READ_CHUNK_MIN: usize = 256;

/// The keys of one `batch_get`, by column family.
#[derive(Debug, Default)]
struct Batch {
    /// The `Azks` row is asked for.
    azks: bool,
    /// Tree-node keys.
    nodes: Vec<Vec<u8>>,
    /// Value-state keys.
    states: Vec<Vec<u8>>,
}

impl Batch {
    /// Adds `key`, unless it is a tree node at a length no node has.
    fn add(&mut self, key: Key, lengths: &NodeLengths) {
        match key {
            Key::Azks => self.azks = true,
            Key::Node(k) if lengths.may_contain(node_key_len(&k)) => self.nodes.push(k.to_vec()),
            Key::Node(_) => {}
            Key::State { user, epoch } => self.states.push(codec::value_state_key(&user, epoch)),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        usize::from(self.azks) + self.nodes.len() + self.states.len()
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("path", &self.path)
            .field("secondary", &self.secondary)
            .field("sync_writes", &self.sync_writes)
            .field("read_threads", &self.read_threads)
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

impl RocksStorage {
    /// Opens (creating if missing) the database at `path`. Blocking: call it at start-up
    /// or from `spawn_blocking`.
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
        let storage = Self::wrap(db, cache, path, config, None)?;
        storage.inner.check_schema()?;
        Ok(storage)
    }

    /// Opens the primary database at `primary` as a RocksDB *secondary* instance (a read
    /// replica in another process): it reads the primary's files, keeps its own info
    /// log in `secondary_dir`, and sees the primary's newer writes only after
    /// [`RocksStorage::refresh`]. Writes are refused. A primary that was never
    /// initialized (no schema record) is an error, not an empty directory. Blocking.
    pub fn open_secondary(
        primary: impl AsRef<Path>,
        secondary_dir: impl AsRef<Path>,
        config: &StorageConfig,
    ) -> Result<Self, StorageError> {
        let path = primary.as_ref().to_path_buf();
        let secondary = secondary_dir.as_ref().to_path_buf();
        if !path.join("CURRENT").exists() {
            return Err(StorageError::Empty(format!(
                "no RocksDB at {} to follow (start the publisher on this data directory first)",
                path.display()
            )));
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
        let storage = Self::wrap(db, cache, path, config, Some(secondary))?;
        storage.inner.check_schema()?;
        Ok(storage)
    }

    fn wrap(
        db: DB,
        cache: Cache,
        path: PathBuf,
        config: &StorageConfig,
        secondary: Option<PathBuf>,
    ) -> Result<Self, StorageError> {
        let node_lengths = NodeLengths::default();
        scan_lengths(&db, tree_nodes(&db)?, &node_lengths)?;
        Ok(RocksStorage {
            inner: Arc::new(Inner {
                db,
                cache,
                batch_bytes: AtomicU64::new(0),
                path,
                secondary,
                sync_writes: config.sync_writes,
                read_threads: config.read_threads.max(1),
                writes: WriteGuard::default(),
                node_lengths,
            }),
        })
    }

    /// On a secondary: catches up with the primary's files (its flushed and logged
    /// writes). On a primary: nothing to do.
    pub async fn catch_up(&self) -> Result<(), StorageError> {
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

    /// Learns the tree-node lengths this instance sees (a secondary sees new ones only
    /// after [`RocksStorage::catch_up`]).
    pub async fn learn_node_lengths(&self) -> Result<(), StorageError> {
        self.blocking(|inner| scan_lengths(&inner.db, tree_nodes(&inner.db)?, &inner.node_lengths))
            .await
    }

    /// Whether this is a read replica's secondary instance.
    pub fn is_secondary(&self) -> bool {
        self.inner.secondary.is_some()
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The `Azks` row as stored (the last committed epoch), read straight from disk.
    pub async fn stored_azks(&self) -> Result<Option<Azks>, StorageError> {
        // A replica asks this after every proof: from memory when it can be.
        match self.inner.get_azks_in(Tier::Memory) {
            Err(e) if e.needs_disk() => self.blocking(|inner| inner.get_azks()).await,
            done => done,
        }
    }

    /// Flushes every column family's memtables to SST files (so that
    /// [`RocksStorage::live_bytes`] counts everything written).
    pub async fn flush(&self) -> Result<(), StorageError> {
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

    /// Flushes memtables and compacts every column family (benchmarks measure bytes on
    /// disk after this).
    pub async fn compact(&self) -> Result<(), StorageError> {
        self.flush().await?;
        self.blocking(|inner| {
            for cf in Cf::ALL {
                inner.db.compact_range_cf(inner.cf(cf)?, None::<&[u8]>, None::<&[u8]>);
            }
            Ok(())
        })
        .await
    }

    /// Bytes on disk of one column family's live data: its SST files plus its blob
    /// files (audit blobs live in blob files, outside the SSTs). Memtables not yet
    /// flushed are not counted.
    pub fn live_bytes(&self, cf: Cf) -> Result<u64, StorageError> {
        let handle = self.inner.cf(cf)?;
        let mut total = 0;
        for property in ["rocksdb.live-sst-files-size", "rocksdb.live-blob-file-size"] {
            let v = self
                .inner
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

    /// [`RocksStorage::live_bytes`] of every column family, off the async workers.
    pub async fn live_bytes_all(&self) -> Result<Vec<(Cf, u64)>, StorageError> {
        let storage = self.clone();
        self.blocking(move |_| Cf::ALL.iter().map(|&cf| Ok((cf, storage.live_bytes(cf)?))).collect())
            .await
    }

    /// One epoch in one synced `WriteBatch`: the publisher's writes, the tree nodes in
    /// key order (straight from the epoch store, no copy in between), the value states
    /// in key order, and akd's `Azks` row.
    pub async fn commit_epoch(&self, commit: EpochCommit) -> Result<(), StorageError> {
        self.blocking(move |inner| inner.commit_epoch(commit)).await
    }

    /// The tree nodes at `keys` that exist, raw, into `sink`; split across
    /// `read_threads` threads like the other large reads.
    pub async fn read_nodes(&self, mut keys: Vec<NodeKey>, sink: NodeSink) -> Result<(), StorageError> {
        keys.retain(|k| self.inner.node_lengths.may_contain(node_key_len(k)));
        if keys.is_empty() {
            return Ok(());
        }
        self.blocking(move |inner| {
            keys.sort_unstable();
            inner.in_chunks(&keys, |chunk| {
                let handle = inner.cf(Cf::TreeNodes)?;
                let got = inner
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
        })
        .await
    }

    /// akd's `get_user_state_versions`, on the calling thread (which may block on the
    /// disk): for threads of their own, such as the prepare stage's workers, whose CPU
    /// time is then their own.
    pub fn user_state_versions_here(
        &self,
        users: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
        self.inner.user_state_versions(users, flag)
    }

    /// Block cache, memtables and the commit in flight, from RocksDB's own counters.
    pub fn memory(&self) -> StoreMemory {
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

    /// Stages `hook` for akd's next transaction commit (replacing any staged one).
    pub fn stage_commit_hook(&self, hook: CommitHook) {
        self.inner.writes.stage(hook);
    }

    /// Removes a staged hook; `true` if it was still staged (no commit consumed it).
    pub fn clear_commit_hook(&self) -> bool {
        self.inner.writes.clear()
    }

    /// Whether an earlier write failed (see [`StorageError::WritesFenced`]).
    pub fn is_fenced(&self) -> bool {
        self.inner.writes.is_fenced()
    }

    /// Applies `writes` in one synced `WriteBatch`.
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), StorageError> {
        self.blocking(move |inner| {
            let mut batch = WriteBatch::default();
            inner.add_writes(&mut batch, writes)?;
            inner.write(batch)
        })
        .await
    }

    /// One value of one of the publisher's column families.
    pub async fn get_raw(&self, cf: Cf, key: Vec<u8>) -> Result<Option<Vec<u8>>, StorageError> {
        self.blocking(move |inner| Ok(inner.get_raw(cf, &key)?.map(|v| v.to_vec())))
            .await
    }

    /// Up to `limit` entries of `cf` with keys `>= from`, in key order.
    pub async fn scan(&self, cf: Cf, from: Vec<u8>, limit: usize) -> Result<Vec<RawEntry>, StorageError> {
        self.blocking(move |inner| {
            let mut it = inner.db.raw_iterator_cf(inner.cf(cf)?);
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

    /// The entry with the greatest key in `cf`.
    pub async fn last(&self, cf: Cf) -> Result<Option<RawEntry>, StorageError> {
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

    /// Counts the entries of `cf` (a full scan: start-up only).
    pub async fn count(&self, cf: Cf) -> Result<u64, StorageError> {
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

    /// `label`'s newest (version, value) at or before `epoch`, straight from RocksDB:
    /// `None` only when the label truly has no state (unlike akd's lookup, which reports
    /// every storage error as "not found").
    pub async fn latest_state(&self, label: Vec<u8>, epoch: u64) -> Result<Option<(u64, u64, Vec<u8>)>, StorageError> {
        self.blocking(move |inner| {
            Ok(inner
                .user_state(&label, ValueStateRetrievalFlag::LeqEpoch(epoch), Tier::Disk)?
                .map(|s| (s.version, s.epoch, s.value.0)))
        })
        .await
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
}

fn db_options(config: &StorageConfig) -> Options {
    let mut db_opts = Options::default();
    db_opts.set_max_background_jobs(config.background_jobs);
    db_opts.set_bytes_per_sync(1 << 20);
    db_opts.set_keep_log_file_num(4);
    db_opts
}

fn tree_nodes(db: &DB) -> Result<&ColumnFamily, StorageError> {
    db.cf_handle(Cf::TreeNodes.name())
        .ok_or_else(|| StorageError::BadKey("column family tree_nodes missing".into()))
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
            .ok_or_else(|| StorageError::BadKey(format!("column family {cf} is not open")))
    }

    fn check_schema(&self) -> Result<(), StorageError> {
        let meta = self.cf(Cf::Meta)?;
        let found = self.db.get_cf(meta, SCHEMA_KEY).map_err(|source| StorageError::Rocks {
            cf: Cf::Meta,
            op: "get",
            source,
        })?;
        match found {
            Some(v) if v.as_slice() == SCHEMA_VERSION.to_be_bytes() => Ok(()),
            Some(v) => Err(StorageError::Schema {
                found: hex::encode(v),
                expected: SCHEMA_VERSION,
            }),
            None if self.secondary.is_some() => Err(StorageError::Empty(format!(
                "the RocksDB at {} holds no directory yet (start the publisher on it first)",
                self.path.display()
            ))),
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes());
                self.write(batch)
            }
        }
    }

    fn write_options(&self) -> WriteOptions {
        let mut opts = WriteOptions::default();
        opts.set_sync(self.sync_writes);
        opts
    }

    /// Writes one batch atomically; any failure fences all later writes.
    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.writes.check()?;
        if self.secondary.is_some() {
            return Err(StorageError::ReadOnly);
        }
        let records = batch.len();
        self.db.write_opt(batch, &self.write_options()).map_err(|source| {
            self.writes.fence();
            tracing::error!(path = %self.path.display(), records, error = %source, "RocksDB write failed; fencing writes");
            StorageError::Write { records, source }
        })
    }

    fn add_writes(&self, batch: &mut WriteBatch, writes: Vec<Write>) -> Result<(), StorageError> {
        for w in writes {
            match w {
                Write::Put(cf, k, v) => {
                    if cf == Cf::TreeNodes {
                        // Raw writes of nodes (repairs, tests) count too.
                        self.node_lengths.insert(key_label_len(&k).unwrap_or(u32::MAX));
                    }
                    batch.put_cf(self.cf(cf)?, k, v)
                }
                Write::Delete(cf, k) => batch.delete_cf(self.cf(cf)?, k),
            }
        }
        Ok(())
    }

    fn commit_epoch(&self, commit: EpochCommit) -> Result<(), StorageError> {
        let EpochCommit {
            nodes,
            mut states,
            azks,
            writes,
        } = commit;
        let (meta, node_cf, state_cf) = (self.cf(Cf::Meta)?, self.cf(Cf::TreeNodes)?, self.cf(Cf::ValueStates)?);
        let started = std::time::Instant::now();
        let mut batch = WriteBatch::default();
        self.add_writes(&mut batch, writes)?;
        nodes.for_each_node(&mut |key, value| {
            self.node_lengths.insert(node_key_len(key));
            batch.put_cf(node_cf, key, value);
            Ok(())
        })?;
        let mut keyed: Vec<(Vec<u8>, &ValueState)> = states
            .iter()
            .map(|s| (codec::value_state_key(&s.username, s.epoch), s))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, state) in keyed {
            batch.put_cf(state_cf, key, codec::encode_value_state(state));
        }
        states.clear();
        batch.put_cf(meta, AZKS_KEY, codec::encode_azks(&azks));
        let bytes = batch.size_in_bytes();
        let records = batch.len();
        self.batch_bytes.store(bytes as u64, Ordering::Relaxed);
        let built = started.elapsed();
        let written = self.write(batch);
        self.batch_bytes.store(0, Ordering::Relaxed);
        tracing::info!(
            records,
            mb = bytes >> 20,
            build_ms = built.as_millis(),
            write_ms = (started.elapsed() - built).as_millis(),
            "epoch written"
        );
        written
    }

    fn put_records(&self, records: &[DbRecord], hook: Option<CommitHook>) -> Result<(), StorageError> {
        let (meta, nodes, states) = (self.cf(Cf::Meta)?, self.cf(Cf::TreeNodes)?, self.cf(Cf::ValueStates)?);
        let mut batch = WriteBatch::default();
        if let Some(hook) = hook {
            let extra = hook(records)?;
            self.add_writes(&mut batch, extra)?;
        }
        // In key order: a memtable takes sorted inserts far faster (its skip list
        // resumes each search where the last ended), and akd hands over an epoch's
        // 3M records in hash order. Stable, so a key written twice keeps its last value.
        let mut node_puts = Vec::new();
        let mut state_puts = Vec::new();
        for record in records {
            match record {
                DbRecord::Azks(azks) => batch.put_cf(meta, AZKS_KEY, codec::encode_azks(azks)),
                DbRecord::TreeNode(node) => {
                    self.node_lengths.insert(node.label.label_len);
                    node_puts.push((codec::node_key(&node.label), node));
                }
                DbRecord::ValueState(state) => {
                    state_puts.push((codec::value_state_key(&state.username, state.epoch), state));
                }
            }
        }
        node_puts.sort_by(|a, b| a.0.as_slice().cmp(b.0.as_slice()));
        state_puts.sort_by(|a, b| a.0.as_slice().cmp(b.0.as_slice()));
        for (key, node) in node_puts {
            batch.put_cf(nodes, key, codec::encode_tree_node(node));
        }
        for (key, state) in state_puts {
            batch.put_cf(states, key, codec::encode_value_state(state));
        }
        self.write(batch)
    }

    fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<rocksdb::DBPinnableSlice<'_>>, StorageError> {
        self.get_raw_in(cf, key, Tier::Disk)
    }

    fn get_raw_in(&self, cf: Cf, key: &[u8], tier: Tier) -> Result<Option<rocksdb::DBPinnableSlice<'_>>, StorageError> {
        self.db
            .get_pinned_cf_opt(self.cf(cf)?, key, &tier.options())
            .map_err(|source| StorageError::Rocks { cf, op: "get", source })
    }

    fn get_azks(&self) -> Result<Option<Azks>, StorageError> {
        self.get_azks_in(Tier::Disk)
    }

    fn get_azks_in(&self, tier: Tier) -> Result<Option<Azks>, StorageError> {
        self.get_raw_in(Cf::Meta, AZKS_KEY, tier)?
            .map(|v| codec::decode_azks(&v).map_err(|e| StorageError::corrupt(Cf::Meta, AZKS_KEY, e)))
            .transpose()
    }

    /// One record; with [`Tier::Memory`], [`StorageError::needs_disk`] if it is not in
    /// memory.
    fn get(&self, key: &Key, tier: Tier) -> Result<Option<DbRecord>, StorageError> {
        Ok(match key {
            Key::Azks => self.get_azks_in(tier)?.map(DbRecord::Azks),
            Key::Node(k) if !self.node_lengths.may_contain(node_key_len(k)) => None,
            Key::Node(k) => self
                .get_raw_in(Cf::TreeNodes, k, tier)?
                .map(|v| decode_node(k, &v))
                .transpose()?,
            Key::State { user, epoch } => {
                let k = codec::value_state_key(user, *epoch);
                self.get_raw_in(Cf::ValueStates, &k, tier)?
                    .map(|v| decode_state(&k, &v))
                    .transpose()?
            }
        })
    }

    /// Batched point reads of one kind of record; absent keys are skipped. With
    /// [`Tier::Memory`], the keys whose blocks are not in memory come back unread.
    /// Disk reads of many keys are split across threads (see [`Inner::in_chunks`]).
    fn multi_get(
        &self,
        cf: Cf,
        mut keys: Vec<Vec<u8>>,
        tier: Tier,
    ) -> Result<(Vec<DbRecord>, Vec<Vec<u8>>), StorageError> {
        keys.sort_unstable();
        match tier {
            Tier::Memory => self.multi_get_sorted(cf, &keys, tier),
            Tier::Disk => Ok((
                self.in_chunks(&keys, |chunk| Ok(self.multi_get_sorted(cf, chunk, tier)?.0))?,
                Vec::new(),
            )),
        }
    }

    /// [`Inner::multi_get`] of sorted `keys`, on the calling thread.
    fn multi_get_sorted(
        &self,
        cf: Cf,
        keys: &[Vec<u8>],
        tier: Tier,
    ) -> Result<(Vec<DbRecord>, Vec<Vec<u8>>), StorageError> {
        let handle = self.cf(cf)?;
        let mut out = Vec::with_capacity(keys.len());
        let mut unread = Vec::new();
        let opts = tier.options();
        // RocksDB's MultiGet reads data blocks from files even with the block-cache
        // read tier (measured with rocksdb 0.25 / RocksDB 11.8; a plain get honours it),
        // so memory-only batches are a loop of gets.
        let got: Vec<_> = match tier {
            Tier::Memory => keys
                .iter()
                .map(|k| self.db.get_pinned_cf_opt(handle, k, &opts))
                .collect(),
            Tier::Disk => self.db.batched_multi_get_cf_opt(handle, keys, true, &opts),
        };
        for (key, got) in keys.iter().zip(got) {
            let value = match got {
                Ok(Some(value)) => value,
                Ok(None) => continue,
                Err(e) if tier == Tier::Memory && e.kind() == rocksdb::ErrorKind::Incomplete => {
                    unread.push(key.clone());
                    continue;
                }
                Err(source) => {
                    return Err(StorageError::Rocks {
                        cf,
                        op: "multi_get",
                        source,
                    });
                }
            };
            out.push(match cf {
                Cf::TreeNodes => decode_node(key, &value)?,
                Cf::ValueStates => decode_state(key, &value)?,
                Cf::Meta => {
                    DbRecord::Azks(codec::decode_azks(&value).map_err(|e| StorageError::corrupt(Cf::Meta, key, e))?)
                }
                other => return Err(StorageError::BadKey(format!("akd records are not kept in {other}"))),
            });
        }
        Ok((out, unread))
    }

    /// The records of `keys` that exist. With [`Tier::Memory`], also the keys that
    /// must be read from disk (`Batch::is_empty` with [`Tier::Disk`]).
    fn batch_get(&self, keys: Batch, tier: Tier) -> Result<(Vec<DbRecord>, Batch), StorageError> {
        let mut out = Vec::new();
        let mut unread = Batch::default();
        if keys.azks {
            match self.get_azks_in(tier) {
                Ok(a) => out.extend(a.map(DbRecord::Azks)),
                Err(e) if e.needs_disk() => unread.azks = true,
                Err(e) => return Err(e),
            }
        }
        if !keys.nodes.is_empty() {
            let (found, rest) = self.multi_get(Cf::TreeNodes, keys.nodes, tier)?;
            out.extend(found);
            unread.nodes = rest;
        }
        if !keys.states.is_empty() {
            let (found, rest) = self.multi_get(Cf::ValueStates, keys.states, tier)?;
            out.extend(found);
            unread.states = rest;
        }
        Ok((out, unread))
    }

    fn states_iter(&self) -> Result<DBRawIterator<'_>, StorageError> {
        self.states_iter_in(Tier::Disk)
    }

    fn states_iter_in(&self, tier: Tier) -> Result<DBRawIterator<'_>, StorageError> {
        let mut opts = tier.options();
        // Per-user seeks cross user boundaries; keep the iterator in total order.
        opts.set_total_order_seek(true);
        Ok(self.db.raw_iterator_cf_opt(self.cf(Cf::ValueStates)?, opts))
    }

    /// All states of `user`, oldest first.
    fn user_states(&self, user: &[u8]) -> Result<Vec<ValueState>, StorageError> {
        let prefix = codec::user_prefix(user);
        let mut it = self.states_iter()?;
        let mut out = Vec::new();
        it.seek(&prefix);
        while let Some((k, v)) = entry_with_prefix(&it, &prefix) {
            out.push(decode_state_value(k, v)?);
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

    fn user_state(
        &self,
        user: &[u8],
        flag: ValueStateRetrievalFlag,
        tier: Tier,
    ) -> Result<Option<ValueState>, StorageError> {
        let mut it = self.states_iter_in(tier)?;
        Self::find_state(&mut it, user, flag)?
            .map(|(k, v)| decode_state_value(&k, &v))
            .transpose()
    }

    fn user_state_versions(
        &self,
        users: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
        // Seeking in key order keeps each iterator moving forward through the files;
        // each thread of `in_chunks` seeks through its own range of users.
        let mut sorted: Vec<(Vec<u8>, &AkdLabel)> = users.iter().map(|u| (codec::user_prefix(u), u)).collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let found = self.in_chunks(&sorted, |chunk| {
            let mut it = self.states_iter()?;
            let mut out = Vec::with_capacity(chunk.len());
            for (_, user) in chunk {
                if let Some((k, v)) = Self::find_state(&mut it, user, flag)? {
                    let decoded = codec::decode_version_and_value(&v)
                        .map_err(|e| StorageError::corrupt(Cf::ValueStates, &k, e))?;
                    out.push(((*user).clone(), decoded));
                }
            }
            Ok(out)
        })?;
        Ok(found.into_iter().collect())
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

fn decode_node(key: &[u8], value: &[u8]) -> Result<DbRecord, StorageError> {
    let corrupt = |e| StorageError::corrupt(Cf::TreeNodes, key, e);
    let label = codec::node_label_from_key(key).map_err(corrupt)?;
    Ok(DbRecord::TreeNode(
        codec::decode_tree_node(label, value).map_err(corrupt)?,
    ))
}

fn decode_state_value(key: &[u8], value: &[u8]) -> Result<ValueState, StorageError> {
    let corrupt = |e| StorageError::corrupt(Cf::ValueStates, key, e);
    let (user, epoch) = codec::split_value_state_key(key).map_err(corrupt)?;
    codec::decode_value_state(user, epoch, value).map_err(corrupt)
}

fn decode_state(key: &[u8], value: &[u8]) -> Result<DbRecord, StorageError> {
    decode_state_value(key, value).map(DbRecord::ValueState)
}

#[async_trait]
impl Database for RocksStorage {
    async fn set(&self, record: DbRecord) -> Result<(), AkdStorageError> {
        self.batch_set(vec![record], DbSetState::General).await
    }

    /// One synced `WriteBatch`: a `TransactionCommit` (a whole epoch) lands atomically,
    /// together with the writes of a staged [`CommitHook`].
    async fn batch_set(&self, records: Vec<DbRecord>, state: DbSetState) -> Result<(), AkdStorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let hook = self.inner.writes.hook_for(state);
        Ok(self.blocking(move |inner| inner.put_records(&records, hook)).await?)
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, AkdStorageError> {
        let key = Key::of::<St>(id)?;
        let found = match self.inner.get(&key, Tier::Memory) {
            Err(e) if e.needs_disk() => self.blocking(move |inner| inner.get(&key, Tier::Disk)).await?,
            done => done?,
        };
        found.ok_or_else(|| not_found((St::data_type(), id)))
    }

    /// Batched reads; missing keys are skipped, as akd's preloads expect. What is in
    /// memory is read here, the rest in one trip to a blocking thread.
    async fn batch_get<St: Storable>(&self, ids: &[St::StorageKey]) -> Result<Vec<DbRecord>, AkdStorageError> {
        let mut keys = Batch::default();
        for id in ids {
            keys.add(Key::of::<St>(id)?, &self.inner.node_lengths);
        }
        if keys.len() > MEMORY_BATCH_MAX {
            // The publisher's preloads: one trip to a blocking thread, which splits
            // the read across `read_threads`.
            return Ok(self.blocking(move |inner| inner.batch_get(keys, Tier::Disk)).await?.0);
        }
        let (mut found, unread) = self.inner.batch_get(keys, Tier::Memory)?;
        if !unread.is_empty() {
            let (rest, _) = self.blocking(move |inner| inner.batch_get(unread, Tier::Disk)).await?;
            found.extend(rest);
        }
        Ok(found)
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, AkdStorageError> {
        let user = username.0.clone();
        let states = self.blocking(move |inner| inner.user_states(&user)).await?;
        if states.is_empty() {
            return Err(not_found(username));
        }
        Ok(KeyData { states })
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, AkdStorageError> {
        let found = match self.inner.user_state(&username.0, flag, Tier::Memory) {
            Err(e) if e.needs_disk() => {
                let user = username.0.clone();
                self.blocking(move |inner| inner.user_state(&user, flag, Tier::Disk))
                    .await?
            }
            done => done?,
        };
        found.ok_or_else(|| not_found((username, flag)))
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, AkdStorageError> {
        let users = usernames.to_vec();
        Ok(self
            .blocking(move |inner| inner.user_state_versions(&users, flag))
            .await?)
    }
}
