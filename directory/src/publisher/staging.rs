//! Staging: the next epoch's tree nodes, loaded while its updates arrive.
//!
//! The preload of an epoch (the nodes on the paths of its new leaves, and their
//! children) depends only on the leaves' labels and the last committed epoch. The
//! prepare stage knows both long before the epoch starts, so a background task loads
//! the paths of every prepared label into the store the next epoch will write
//! ([`Staged`]), batch by batch, as labels become ready. When the epoch starts it takes
//! that store over and loads only the paths of labels that were not staged
//! ([`writer::preload`] expands what is held and reads the rest).
//!
//! Staging builds on one committed epoch: it starts once the audit blob of that epoch
//! is stored (the blob reads the previous epoch's store: one epoch's nodes are held at
//! a time), pauses while an epoch is published, and starts over on the new epoch after
//! its commit. What is staged is the same store the epoch would have filled itself,
//! only sooner; the memory is the epoch's own.

use super::epoch_store::EpochStore;
use super::prepare::Prepare;
use super::writer;
use crate::metrics::Metrics;
use crate::storage::Store;
use akd::NodeLabel;
use rustc_hash::FxBuildHasher;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// How often staging looks for newly prepared labels.
const POLL: Duration = Duration::from_millis(500);

/// Nodes loaded for the epoch after `epoch`.
#[derive(Debug)]
pub(super) struct Staged {
    /// The committed epoch the nodes were read at.
    pub(super) epoch: u64,
    /// The nodes.
    pub(super) nodes: EpochStore,
    /// Leaf labels whose paths `nodes` holds.
    pub(super) covered: HashSet<NodeLabel, FxBuildHasher>,
}

/// The staging task's handle.
#[derive(Debug)]
pub(super) struct Stager {
    /// What is staged; the task holds the lock while it loads a batch.
    slot: Arc<Mutex<Option<Staged>>>,
    /// The committed epoch staging may build on (`None`: paused).
    allowed: Arc<watch::Sender<Option<u64>>>,
}

impl Stager {
    /// Starts the task (paused): it reads through `store` the paths of the labels
    /// `prepare` makes ready.
    pub(super) fn start(store: Store, prepare: Prepare, metrics: Metrics) -> Stager {
        let slot: Arc<Mutex<Option<Staged>>> = Arc::default();
        let (allowed, mut watching) = watch::channel(None);
        let allowed = Arc::new(allowed);
        let task_slot = Arc::clone(&slot);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    changed = watching.changed() => if changed.is_err() { break },
                    _ = tick.tick() => {}
                }
                let Some(epoch) = *watching.borrow() else { continue };
                let ready = prepare.take_ready(epoch);
                if ready.is_empty() {
                    continue;
                }
                let mut slot = task_slot.lock().await;
                if *watching.borrow() != Some(epoch) {
                    // An epoch started meanwhile; it loads these itself.
                    continue;
                }
                let staged = match slot.take() {
                    Some(s) if s.epoch == epoch => s,
                    _ => Staged {
                        epoch,
                        nodes: EpochStore::new(store.clone()),
                        covered: HashSet::default(),
                    },
                };
                let labels: Vec<NodeLabel> = ready
                    .iter()
                    .flat_map(|p| p.stale.into_iter().chain([p.fresh]))
                    .filter(|l| !staged.covered.contains(l))
                    .collect();
                match writer::preload(&staged.nodes, &store, epoch, labels.clone()).await {
                    Ok(read) => {
                        metrics.staged_nodes.inc_by(read);
                        let mut staged = staged;
                        staged.covered.extend(labels);
                        *slot = Some(staged);
                    }
                    // Nothing is lost: the epoch loads what it needs itself.
                    Err(e) => tracing::warn!(error = %e, epoch, "staging the next epoch's nodes failed"),
                }
            }
        });
        Stager { slot, allowed }
    }

    /// Lets staging build on committed epoch `epoch`.
    pub(super) fn allow(&self, epoch: u64) {
        self.allowed.send_replace(Some(epoch));
    }

    /// A handle that allows staging on an epoch (given to the audit blob's task, which
    /// allows it once the blob is stored).
    pub(super) fn allower(&self) -> Arc<watch::Sender<Option<u64>>> {
        Arc::clone(&self.allowed)
    }

    /// Pauses staging (waiting for a batch being loaded) and takes what is staged on
    /// `epoch`, if anything.
    pub(super) async fn take(&self, epoch: u64) -> Option<Staged> {
        self.allowed.send_replace(None);
        self.slot.lock().await.take().filter(|s| s.epoch == epoch)
    }

    /// Gives back what [`Stager::take`] took, unused (an epoch that changed nothing),
    /// and resumes on `epoch`.
    pub(super) async fn put_back(&self, staged: Option<Staged>, epoch: u64) {
        *self.slot.lock().await = staged.filter(|s| s.epoch == epoch);
        self.allow(epoch);
    }
}
