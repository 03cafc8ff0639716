//! What readers serve: a consistent view of one epoch, handed from the publisher (or a
//! replica's follower) to the HTTP layer, and the rule that keeps a commit from
//! pulling nodes from under a reader two epochs behind.

use super::Failure;
use super::prepare::Prepare;
use crate::queue::Queue;
use crate::storage::{StorageError, Store};
use crate::vrf::VrfSecret;
use crate::{KtConfig, publisher::EpochReply};
use akd::AzksParallelismConfig;
use akd::directory::ReadOnlyDirectory;
use akd::errors::AkdError;
use akd::storage::StorageManager;
use kt_client::head::SignedHead;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Read views' akd cache: entry lifetime.
const READ_CACHE_LIFETIME: Duration = Duration::from_secs(600);
/// Read views' akd cache: size bound (each view has its own, dropped with the view).
const READ_CACHE_BYTES: usize = 256 << 20;
/// Read views' akd cache: sweep interval.
const READ_CACHE_CLEAN: Duration = Duration::from_secs(30);

/// akd's read-only directory, as the read views use it, with the storage manager and
/// VRF key it reads through: akd's lookups and histories go through the directory
/// (`Deref`), absence proofs ([`ReadDirectory::absence`]) through the same manager and
/// so the same cache.
pub struct ReadDirectory {
    /// akd's reader.
    akd: ReadOnlyDirectory<KtConfig, Store, VrfSecret>,
    /// The manager `akd` reads through (clones share its cache).
    storage: StorageManager<Store>,
    /// The VRF key, for the VRF proof of an absent label's first version.
    vrf: VrfSecret,
}

impl std::fmt::Debug for ReadDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadDirectory").finish_non_exhaustive()
    }
}

impl std::ops::Deref for ReadDirectory {
    type Target = ReadOnlyDirectory<KtConfig, Store, VrfSecret>;

    fn deref(&self) -> &Self::Target {
        &self.akd
    }
}

impl ReadDirectory {
    /// The absence proof of `label` and the epoch it is at: [`crate::absence::prove`].
    pub async fn absence(&self, label: &akd::AkdLabel) -> Result<(kt_client::wire::DecodedAbsence, u64), AkdError> {
        crate::absence::prove(&self.storage, &self.vrf, label).await
    }
}

/// What readers serve: one epoch's head and an akd reader positioned at that epoch.
pub struct ReadView {
    /// The freshest signed head of this epoch.
    pub head: SignedHead,
    /// akd reads, with a cache that has only ever seen this epoch's data.
    pub dir: Arc<ReadDirectory>,
}

impl std::fmt::Debug for ReadView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadView")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// A read-only akd directory on `storage` with its own, empty cache.
pub(crate) async fn new_read_dir(storage: &Store, vrf: &VrfSecret) -> Result<ReadDirectory, AkdError> {
    let manager = StorageManager::new(
        storage.clone(),
        Some(READ_CACHE_LIFETIME),
        Some(READ_CACHE_BYTES),
        Some(READ_CACHE_CLEAN),
    );
    let akd = ReadOnlyDirectory::new(manager.clone(), vrf.clone(), AzksParallelismConfig::default()).await?;
    Ok(ReadDirectory {
        akd,
        storage: manager,
        vrf: vrf.clone(),
    })
}

/// The publisher's side of the operator API.
#[derive(Debug, Clone)]
pub struct Intake {
    /// Asks the publisher loop for an epoch now.
    pub triggers: mpsc::Sender<EpochReply>,
    /// The durable queue.
    pub queue: Arc<Queue>,
    /// The prepare stage, told of every accepted label.
    pub prepare: Prepare,
}

impl Intake {
    /// Hands the labels of `updates` to the prepare stage and durably queues them (see
    /// [`Queue::accept`]).
    pub async fn accept(&self, updates: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<u64>, StorageError> {
        let labels: Vec<Vec<u8>> = updates.iter().map(|(label, _)| label.clone()).collect();
        // Counted before the queue write makes them visible: the epoch that takes them
        // may run before this task continues.
        self.prepare.submit(labels.iter().map(Vec::as_slice));
        let accepted = self.queue.accept(updates).await;
        if accepted.is_err() {
            self.prepare.withdraw(labels.iter().map(Vec::as_slice));
        }
        accepted
    }
}

/// What the HTTP layer shares with the publisher (or a replica's follower).
#[derive(Debug, Clone)]
pub struct ServeState {
    /// The current read view; replaced after each epoch (and each re-signed head).
    pub views: watch::Receiver<Arc<ReadView>>,
    /// Set when the publisher refuses to go on.
    pub failure: Arc<Failure>,
    /// Newest epoch whose audit blob is stored (0: none yet).
    pub latest_blob_epoch: Arc<AtomicU64>,
    /// Update intake and forced epochs; `None` on a read replica, which only serves
    /// the read API.
    pub intake: Option<Intake>,
    /// The database, for heads, blobs and the label index.
    pub storage: Store,
    /// The head-signing public key.
    pub signing_key: ed25519_dalek::VerifyingKey,
    /// The VRF public key.
    pub vrf_public_key: Vec<u8>,
    /// The namespace.
    pub namespace: String,
    /// The epoch log: tiles, checkpoints and proofs (`/log/`).
    pub log: Arc<crate::epoch_log::EpochLog>,
}

/// The read directory replaced by the latest epoch. akd keeps one previous version of
/// each node, so a reader may lag the disk by one epoch but not two: the next commit
/// waits until every request on this one has finished.
#[derive(Debug, Default)]
pub(super) struct Retired(Option<Weak<ReadDirectory>>);

impl Retired {
    /// Remembers the view just replaced.
    pub(super) fn set(&mut self, old: &Arc<ReadView>) {
        self.0 = Some(Arc::downgrade(&old.dir));
    }

    /// Waits until no request still reads through the view two epochs back. Requests
    /// are bounded by the server's timeout.
    pub(super) async fn wait(&mut self) {
        let Some(retired) = self.0.take() else { return };
        let started = Instant::now();
        let mut warned = false;
        while retired.strong_count() > 0 {
            if !warned && started.elapsed() > Duration::from_secs(5) {
                tracing::warn!("waiting for slow readers of the previous epoch before committing");
                warned = true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
