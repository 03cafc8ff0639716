//! The writer: one epoch's tree, on akd's public `Azks` API, over the epoch store.
//!
//! What akd's `Directory::publish` does, in the same order and with the same results
//! (`tests/directory_differential.rs` holds the roots, the records and the audit
//! proofs to akd's own), without its transaction and cache:
//!
//! 1. **versions** ([`versions`]): each label's latest version and value at the epoch it
//!    builds on, from the prepare memo or a batched read;
//! 2. **vrf** ([`changes`]): `VRF(label, Stale, v)` and `VRF(label, Fresh, v + 1)` (or
//!    `VRF(label, Fresh, 1)`), from the memo or computed on every core; a label whose
//!    value is already current is skipped, as akd does;
//! 3. **preload** ([`preload`]): every node the insertion will read, loaded level by
//!    level in batched reads, raw, into the epoch store. These are akd's preload's
//!    nodes: each node whose label prefixes an inserted label, and its children;
//! 4. **insert** ([`insert`]): akd's `Azks::batch_insert_nodes` on a
//!    `StorageManager` without cache or transaction, reading and writing the epoch
//!    store; then the new root.

use super::epoch_store::EpochStore;
use super::prepare::{Prepare, Prepared};
use super::{Inconsistency, PublishError};
use crate::KtConfig;
use crate::queue::Queued;
use crate::storage::{Cf, NodeKey, NodeSink, StorageError, Store, codec};
use crate::vrf::VrfSecret;
use akd::append_only_zks::InsertMode;
use akd::storage::types::{ValueState, ValueStateRetrievalFlag};
use akd::storage::{Database, StorageManager};
use akd::tree_node::{TreeNode, TreeNodeWithPreviousValue};
use akd::{AkdLabel, AkdValue, Azks, AzksElement, AzksParallelismConfig, NodeLabel};
use akd_core::configuration::Configuration;
use rustc_hash::FxBuildHasher;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// What an epoch changes, before the tree is touched.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// The leaves to insert: a stale marker and a fresh leaf per rotated label, a
    /// fresh leaf per new label.
    pub elements: Vec<AzksElement>,
    /// The value state of every new version.
    pub states: Vec<ValueState>,
    /// Labels whose version and node labels came from the prepare memo.
    pub prepared: u64,
    /// Labels computed here.
    pub computed: u64,
}

/// The node at `epoch` of a stored record (akd's `determine_node_to_get`): the latest
/// version unless it is newer than `epoch`.
fn at_epoch(record: &TreeNodeWithPreviousValue, epoch: u64) -> Option<&TreeNode> {
    if record.latest_node.last_epoch > epoch {
        record.previous_node.as_ref()
    } else {
        Some(&record.latest_node)
    }
}

/// Whether some label of `sorted` (sorted by value, all full length) has `prefix`.
/// Labels sharing a prefix are contiguous from the prefix's own (zero-padded) value,
/// so the first label at or after it decides.
fn contains_prefix(sorted: &[NodeLabel], prefix: &NodeLabel) -> bool {
    let i = sorted.partition_point(|l| l.label_val < prefix.label_val);
    sorted.get(i).is_some_and(|l| l.get_prefix(prefix.label_len) == *prefix)
}

/// Step 1's result: each winner's prepared state, or its state read here.
#[derive(Debug)]
pub(crate) struct Versions {
    /// By winner: what the prepare memo had as of the epoch.
    prepared: Vec<Option<Prepared>>,
    /// The winners it did not have, with their state read from the store.
    missing: Vec<(AkdLabel, Option<(u64, AkdValue)>)>,
}

/// Step 1: each winner's state at `epoch`, from the prepare memo or one batched read.
pub(crate) async fn versions(
    store: &Store,
    prepare: &Prepare,
    epoch: u64,
    winners: &[Queued],
) -> Result<Versions, PublishError> {
    let prepared = prepare.lookup(winners.iter().map(|w| w.label.as_slice()), epoch);
    let missing: Vec<AkdLabel> = winners
        .iter()
        .zip(&prepared)
        .filter(|(_, p)| p.is_none())
        .map(|(w, _)| AkdLabel(w.label.clone()))
        .collect();
    let mut states = if missing.is_empty() {
        HashMap::new()
    } else {
        store
            .get_user_state_versions(&missing, ValueStateRetrievalFlag::LeqEpoch(epoch))
            .await?
    };
    let missing = missing
        .into_iter()
        .map(|label| {
            let current = states.remove(&label);
            (label, current)
        })
        .collect();
    Ok(Versions { prepared, missing })
}

/// Step 2: the node labels of what the memo did not have, then the winners as akd's
/// insertions and value states for `epoch + 1`.
pub(crate) async fn changes(
    vrf: &VrfSecret,
    prepare: &Prepare,
    epoch: u64,
    winners: &[Queued],
    versions: Versions,
) -> Result<Changes, PublishError> {
    let Versions { mut prepared, missing } = versions;
    let computed = missing.len() as u64;
    let vrf_owned = vrf.clone();
    let mut fresh = tokio::task::spawn_blocking(move || compute_all(&vrf_owned, missing, epoch))
        .await
        .map_err(StorageError::from)?
        .into_iter();
    for slot in prepared.iter_mut().filter(|p| p.is_none()) {
        *slot = fresh.next();
    }
    let from_memo = winners.len() as u64 - computed;
    prepare.count_epoch_labels(from_memo, computed);

    let commitment_key = vrf.commitment_key::<KtConfig>();
    let next = epoch + 1;
    let mut out = Changes {
        prepared: from_memo,
        computed,
        ..Changes::default()
    };
    for (winner, prepared) in winners.iter().zip(prepared) {
        let p = prepared.ok_or(Inconsistency::Unprepared)?;
        let value = AkdValue(winner.value.clone());
        let version = match &p.current {
            // akd skips a value that is already current.
            Some((_, current)) if *current == value => continue,
            Some((version, _)) => {
                let stale = p.stale.ok_or(Inconsistency::NoStaleLabel)?;
                out.elements.push(AzksElement {
                    label: stale,
                    value: KtConfig::stale_azks_value(),
                });
                version + 1
            }
            None => 1,
        };
        out.elements.push(AzksElement {
            label: p.fresh,
            value: KtConfig::compute_fresh_azks_value(&commitment_key, &p.fresh, version, &value),
        });
        out.states.push(ValueState {
            value,
            version,
            label: p.fresh,
            epoch: next,
            username: AkdLabel(winner.label.clone()),
        });
    }
    Ok(out)
}

/// [`Prepared::compute`] for every label, on every core.
fn compute_all(vrf: &VrfSecret, todo: Vec<(AkdLabel, Option<(u64, AkdValue)>)>, epoch: u64) -> Vec<Prepared> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if todo.len() < 64 || threads == 1 {
        return todo
            .into_iter()
            .map(|(label, current)| Prepared::compute(vrf, &label, current, epoch))
            .collect();
    }
    let size = todo.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = todo
            .chunks(size)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(label, current)| Prepared::compute(vrf, label, current.clone(), epoch))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// Step 3: loads into `nodes`, level by level, every node akd's insertion of leaves
/// at `labels` reads at `epoch`: each node whose label prefixes one of them, and its
/// children. Nodes `nodes` already holds (loaded for other labels, ahead of the epoch
/// by [`super::staging`]) are not read again but are still expanded, so this can be
/// run for several sets of labels in turn, with the union's result. Returns how many
/// nodes were read.
pub(crate) async fn preload(
    nodes: &EpochStore,
    store: &Store,
    epoch: u64,
    mut labels: Vec<NodeLabel>,
) -> Result<u64, PublishError> {
    if labels.is_empty() {
        return Ok(0);
    }
    labels.sort_unstable_by_key(|l| l.label_val);
    let labels = Arc::new(labels);
    let mut frontier: Vec<NodeKey> = vec![codec::node_key(&NodeLabel::root())];
    let mut read = 0u64;
    while !frontier.is_empty() {
        let next: Arc<Mutex<Vec<NodeKey>>> = Arc::default();
        let expand = {
            let (labels, next) = (Arc::clone(&labels), Arc::clone(&next));
            move |record: &TreeNodeWithPreviousValue| {
                if let Some(node) = at_epoch(record, epoch)
                    && contains_prefix(&labels, &node.label)
                {
                    let children = node
                        .left_child
                        .iter()
                        .chain(node.right_child.iter())
                        .map(codec::node_key);
                    next.lock().unwrap_or_else(PoisonError::into_inner).extend(children);
                }
            }
        };
        // Held already: expand from memory.
        let mut missing = Vec::with_capacity(frontier.len());
        for key in frontier.drain(..) {
            match nodes.get_node(&key)? {
                Some(record) => expand(&record),
                None => missing.push(key),
            }
        }
        read += missing.len() as u64;
        let sink: NodeSink = {
            let nodes = nodes.clone();
            Arc::new(move |key: &NodeKey, bytes: &[u8]| {
                let corrupt = |e| StorageError::corrupt(Cf::TreeNodes, key, e);
                let label = codec::node_label_from_key(key).map_err(corrupt)?;
                let record = codec::decode_tree_node(label, bytes).map_err(corrupt)?;
                expand(&record);
                nodes.load(key, bytes);
                Ok(())
            })
        };
        if !missing.is_empty() {
            store.read_nodes(missing, sink).await?;
        }
        frontier = std::mem::take(&mut *next.lock().unwrap_or_else(PoisonError::into_inner));
    }
    Ok(read)
}

/// Step 4: akd's tree insertion of `elements` into `azks` (at the epoch before), on
/// `nodes`; returns the new root hash. `azks` moves to the new epoch.
pub(crate) async fn insert(
    nodes: &EpochStore,
    azks: &mut Azks,
    elements: Vec<AzksElement>,
) -> Result<[u8; 32], PublishError> {
    let manager = StorageManager::new_no_cache(nodes.clone());
    azks.batch_insert_nodes::<KtConfig, _>(
        &manager,
        elements,
        InsertMode::Directory,
        AzksParallelismConfig::default(),
    )
    .await?;
    let root = nodes
        .get_node(&codec::node_key(&NodeLabel::root()))?
        .ok_or(Inconsistency::NoRoot)?;
    Ok(KtConfig::compute_root_hash_from_val(&root.latest_node.hash))
}

/// The new version of each label the epoch published.
pub(crate) fn new_versions(states: &[ValueState]) -> HashMap<Vec<u8>, u64, FxBuildHasher> {
    states.iter().map(|s| (s.username.0.clone(), s.version)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The binary search agrees with checking every label.
        #[test]
        fn contains_prefix_is_a_linear_scan(vals in proptest::collection::vec(any::<[u8; 32]>(), 0..40),
                                            probe in any::<[u8; 32]>(), len in 0u32..=256, pick in any::<usize>()) {
            let mut labels: Vec<NodeLabel> = vals.iter().map(|v| NodeLabel::new(*v, 256)).collect();
            labels.sort_unstable_by_key(|l| l.label_val);
            // Half the probes are prefixes of a label in the set.
            let base = if pick % 2 == 0 && !labels.is_empty() { labels[pick % labels.len()].label_val } else { probe };
            let prefix = NodeLabel::new(base, 256).get_prefix(len);
            let linear = labels.iter().any(|l| prefix.is_prefix_of(l));
            prop_assert_eq!(contains_prefix(&labels, &prefix), linear);
        }
    }
}
