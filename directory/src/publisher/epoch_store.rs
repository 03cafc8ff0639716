//! The epoch store: the one in-memory copy of the tree nodes an epoch reads and writes.
//!
//! akd's own publish keeps every touched record up to four times: in its transaction's
//! map, in a sorted clone of it at commit, in its cache (which takes a copy of every
//! committed record), then in our `WriteBatch`. The writer here runs akd's tree
//! insertion (`Azks::batch_insert_nodes`) on a `StorageManager` *without* cache or
//! transaction, over this store:
//!
//! - before the insertion, the writer's own traversal ([`super::writer`]) loads every
//!   node the insertion will read (the nodes on the inserted labels' paths and their
//!   children, exactly akd's preload) in batched reads, raw, straight into this store;
//! - akd's reads are answered from here (read-your-writes); a node that is not here
//!   falls back to the store underneath and is counted ([`EpochStore::fallback_reads`]:
//!   0 when the traversal is exact);
//! - akd's writes replace the record here and mark it dirty;
//! - the commit streams the dirty records, in key order, into the store's one atomic
//!   write ([`crate::storage::NodeSource`]);
//! - after the commit the store is frozen and the audit blob reads from it: akd's
//!   append-only proof reads the nodes this epoch wrote and their unchanged children,
//!   which is what it holds.
//!
//! Records are kept encoded (our codec, ~130 bytes for a node with its previous
//! version, against ~450 for akd's struct), in 64 shards behind their own locks (akd's
//! insertion runs on several tasks).

use crate::storage::{NodeKey, NodeSource, NodeVisitor, StorageError, Store, codec};
use akd::errors::StorageError as AkdStorageError;
use akd::storage::types::{DbRecord, KeyData, StorageType, ValueState, ValueStateRetrievalFlag};
use akd::storage::{Database, DbSetState, Storable};
use akd::tree_node::TreeNodeWithPreviousValue;
use akd::{AkdLabel, AkdValue};
use async_trait::async_trait;
use rustc_hash::FxBuildHasher;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Shards of the map: akd's insertion reads and writes from a task per core.
const SHARDS: usize = 64;

/// One stored record.
#[derive(Debug)]
struct Slot {
    /// The record in our codec's encoding.
    bytes: Box<[u8]>,
    /// Written by this epoch (committed by [`NodeSource::for_each_node`]); a record that
    /// was only loaded is not.
    dirty: bool,
}

type Shard = HashMap<NodeKey, Slot, FxBuildHasher>;

/// The tree nodes of one epoch (see the module docs). Cheap to clone: clones share it.
#[derive(Clone)]
pub struct EpochStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where nodes that are not here are read from, and every other record.
    base: Store,
    /// The records, by key.
    shards: Vec<Mutex<Shard>>,
    /// Bytes of encoded records held (the values, without map overhead).
    value_bytes: AtomicU64,
    /// Records held.
    records: AtomicU64,
    /// Node reads that were not here and went to `base`.
    fallback_reads: AtomicU64,
    /// Set once the epoch is committed: akd's writes are then refused.
    frozen: AtomicBool,
}

impl std::fmt::Debug for EpochStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochStore")
            .field("records", &self.records())
            .field("fallback_reads", &self.fallback_reads())
            .finish_non_exhaustive()
    }
}

/// Which shard holds `key`: a multiplicative mix of the label bytes after the length
/// (short labels are mostly zeros, long ones random) and the length.
fn shard_of(key: &NodeKey) -> usize {
    let mut word = [0u8; 8];
    word.copy_from_slice(&key[4..12]);
    let len = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let mixed = (u64::from_le_bytes(word) ^ u64::from(len).rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    usize::try_from(mixed >> 58).unwrap_or(0) % SHARDS
}

/// The tree-node key of an akd storage id, if `St` is akd's tree-node record.
fn node_key_of<St: Storable>(id: &St::StorageKey) -> Option<NodeKey> {
    if St::data_type() != StorageType::TreeNode {
        return None;
    }
    let bin = St::get_full_binary_key_id(id);
    bin.get(1..1 + codec::NODE_KEY_LEN)?.try_into().ok()
}

/// Decodes a record held under `key`.
fn decode(key: &NodeKey, bytes: &[u8]) -> Result<TreeNodeWithPreviousValue, StorageError> {
    let corrupt = |e| StorageError::corrupt(crate::storage::Cf::TreeNodes, key, e);
    let label = codec::node_label_from_key(key).map_err(corrupt)?;
    codec::decode_tree_node(label, bytes).map_err(corrupt)
}

impl EpochStore {
    /// An empty store over `base`.
    pub fn new(base: Store) -> EpochStore {
        EpochStore {
            inner: Arc::new(Inner {
                base,
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                value_bytes: AtomicU64::new(0),
                records: AtomicU64::new(0),
                fallback_reads: AtomicU64::new(0),
                frozen: AtomicBool::new(false),
            }),
        }
    }

    fn shard(&self, key: &NodeKey) -> std::sync::MutexGuard<'_, Shard> {
        self.inner.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `bytes` at `key`: `dirty` if this epoch wrote it. A loaded record never
    /// replaces one this epoch wrote.
    fn put(&self, key: NodeKey, bytes: Box<[u8]>, dirty: bool) {
        let len = bytes.len() as u64;
        let mut shard = self.shard(&key);
        match shard.get_mut(&key) {
            Some(slot) if slot.dirty && !dirty => {}
            Some(slot) => {
                self.inner
                    .value_bytes
                    .fetch_sub(slot.bytes.len() as u64, Ordering::Relaxed);
                self.inner.value_bytes.fetch_add(len, Ordering::Relaxed);
                *slot = Slot { bytes, dirty };
            }
            None => {
                shard.insert(key, Slot { bytes, dirty });
                self.inner.value_bytes.fetch_add(len, Ordering::Relaxed);
                self.inner.records.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Holds a record as read from the store (not written by this epoch).
    pub fn load(&self, key: &NodeKey, bytes: &[u8]) {
        self.put(*key, bytes.into(), false);
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: &NodeKey) -> bool {
        self.shard(key).contains_key(key)
    }

    /// The record at `key`, decoded, if held.
    pub fn get_node(&self, key: &NodeKey) -> Result<Option<TreeNodeWithPreviousValue>, StorageError> {
        let shard = self.shard(key);
        shard.get(key).map(|slot| decode(key, &slot.bytes)).transpose()
    }

    /// Records held (loaded and written).
    pub fn records(&self) -> u64 {
        self.inner.records.load(Ordering::Relaxed)
    }

    /// Records this epoch wrote.
    pub fn dirty(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                    .filter(|v| v.dirty)
                    .count()
            })
            .sum()
    }

    /// Node reads that missed this store and went to the store underneath.
    pub fn fallback_reads(&self) -> u64 {
        self.inner.fallback_reads.load(Ordering::Relaxed)
    }

    /// Heap bytes held, estimated from what is stored: each record's encoding and its
    /// allocation header, and the maps' slots at their load factor.
    pub fn bytes(&self) -> u64 {
        let slots: u64 = self
            .inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).capacity() as u64)
            .sum();
        let slot_bytes = (std::mem::size_of::<(NodeKey, Slot)>() + 1) as u64;
        self.inner.value_bytes.load(Ordering::Relaxed) + 16 * self.records() + slots * slot_bytes
    }

    /// Refuses further writes: the epoch is committed, and what is held now is what
    /// the store holds.
    pub fn freeze(&self) {
        self.inner.frozen.store(true, Ordering::SeqCst);
    }

    fn write(&self, record: DbRecord) -> Result<(), AkdStorageError> {
        if self.inner.frozen.load(Ordering::SeqCst) {
            return Err(AkdStorageError::Transaction(
                "the epoch store is frozen: its epoch is committed".into(),
            ));
        }
        match record {
            DbRecord::TreeNode(node) => {
                self.put(
                    codec::node_key(&node.label),
                    codec::encode_tree_node(&node).into(),
                    true,
                );
                Ok(())
            }
            // akd's tree insertion writes tree nodes only; the writer writes the rest.
            other => Err(AkdStorageError::Other(format!(
                "the epoch store holds tree nodes only, not {:?}",
                std::mem::discriminant(&other)
            ))),
        }
    }
}

impl NodeSource for EpochStore {
    fn node_count(&self) -> usize {
        self.dirty()
    }

    fn for_each_node(&self, put: &mut NodeVisitor<'_>) -> Result<(), StorageError> {
        let mut keys: Vec<NodeKey> = Vec::new();
        for shard in &self.inner.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            keys.extend(shard.iter().filter(|(_, v)| v.dirty).map(|(k, _)| *k));
        }
        keys.sort_unstable();
        for key in &keys {
            let shard = self.shard(key);
            if let Some(slot) = shard.get(key) {
                put(key, &slot.bytes)?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Database for EpochStore {
    async fn set(&self, record: DbRecord) -> Result<(), AkdStorageError> {
        self.write(record)
    }

    async fn batch_set(&self, records: Vec<DbRecord>, _state: DbSetState) -> Result<(), AkdStorageError> {
        for record in records {
            self.write(record)?;
        }
        Ok(())
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, AkdStorageError> {
        let Some(key) = node_key_of::<St>(id) else {
            return self.inner.base.get::<St>(id).await;
        };
        if let Some(node) = self.get_node(&key)? {
            return Ok(DbRecord::TreeNode(node));
        }
        self.inner.fallback_reads.fetch_add(1, Ordering::Relaxed);
        let record = self.inner.base.get::<St>(id).await?;
        if let DbRecord::TreeNode(node) = &record {
            self.put(key, codec::encode_tree_node(node).into(), false);
        }
        Ok(record)
    }

    async fn batch_get<St: Storable>(&self, ids: &[St::StorageKey]) -> Result<Vec<DbRecord>, AkdStorageError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match node_key_of::<St>(id) {
                Some(key) => match self.get_node(&key)? {
                    Some(node) => out.push(DbRecord::TreeNode(node)),
                    None => missing.push(id.clone()),
                },
                None => missing.push(id.clone()),
            }
        }
        if !missing.is_empty() {
            self.inner
                .fallback_reads
                .fetch_add(missing.len() as u64, Ordering::Relaxed);
            for record in self.inner.base.batch_get::<St>(&missing).await? {
                if let DbRecord::TreeNode(node) = &record {
                    self.put(
                        codec::node_key(&node.label),
                        codec::encode_tree_node(node).into(),
                        false,
                    );
                }
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, AkdStorageError> {
        self.inner.base.get_user_data(username).await
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, AkdStorageError> {
        self.inner.base.get_user_state(username, flag).await
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, AkdStorageError> {
        self.inner.base.get_user_state_versions(usernames, flag).await
    }
}
