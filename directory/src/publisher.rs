//! The publisher: takes queued updates into epochs, signs heads, builds audit blobs,
//! and hands readers a consistent view of the newest epoch.
//!
//! One epoch, step by step:
//! 1. take the oldest queued updates and apply the last-accepted-wins rule ([`Plan`]);
//! 2. stage a commit hook, then call akd `publish`. akd's commit reaches RocksDB as one
//!    `WriteBatch`; the hook adds to that same batch the queue removals, the outcome of
//!    every taken update (read off akd's own value-state records) and the signed head
//!    (its root computed from akd's root node record). So an epoch, its head and its
//!    outcomes land together or not at all, whatever moment a crash hits;
//! 3. swap in a fresh read view (a `ReadOnlyDirectory` with its own cache) at the new
//!    epoch. Readers never use the writer's akd instance: akd caches a commit before it
//!    reaches the disk, and its in-flight transaction would show through;
//! 4. build the audit blob `epoch-1 -> epoch` and store it (rebuilt at start-up if a
//!    crash came first), from the nodes akd's cache still holds;
//! 5. open a fresh akd directory for the next epoch, freeing this epoch's cache.
//!
//! After any failed write (or a commit whose hook refused it) the publisher refuses to
//! go on: it marks itself failed and publishes nothing until a restart re-reads the disk.

use crate::datadir::Loaded;
use crate::metrics::Metrics;
use crate::queue::{Plan, Queue, Resolved};
use crate::storage::{Backend, Cf, Role, StorageConfig, StorageError, Store, Write};
use crate::vrf::VrfSecret;
use crate::{AkdCache, KtConfig, KtDirectory, open_directory_with};
use akd::directory::ReadOnlyDirectory;
use akd::errors::AkdError;
use akd::local_auditing::AuditBlob;
use akd::storage::StorageManager;
use akd::storage::types::DbRecord;
use akd::{AkdLabel, AkdValue, AzksParallelismConfig, NodeLabel};
use akd_core::configuration::Configuration;
use ed25519_dalek::SigningKey;
use kt_client::head::{Head, HeadError, SignedHead, vrf_key_hash};
use kt_client::wire::EpochResponse;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Key in [`Cf::Meta`] of the freshest signature of the latest epoch's head (a quiet
/// directory re-signs it with a new time instead of publishing an empty epoch).
pub(crate) const LATEST_HEAD_KEY: &[u8] = b"latest_head";
/// Read views' akd cache: entry lifetime.
const READ_CACHE_LIFETIME: Duration = Duration::from_secs(600);
/// Read views' akd cache: size bound (each view has its own, dropped with the view).
const READ_CACHE_BYTES: usize = 256 << 20;
/// Read views' akd cache: sweep interval.
const READ_CACHE_CLEAN: Duration = Duration::from_secs(30);

/// akd's read-only directory, as the read views use it.
pub type ReadDirectory = ReadOnlyDirectory<KtConfig, Store, VrfSecret>;

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

/// Why the publisher stopped: set once, cleared only by a restart.
#[derive(Debug)]
pub struct Failure {
    /// The first reason.
    reason: OnceLock<String>,
    /// `kt_directory_publisher_failed`, raised together with the reason.
    gauge: prometheus::IntGauge,
}

impl Failure {
    /// Not failed; `gauge` is raised when it is.
    pub fn new(gauge: prometheus::IntGauge) -> Failure {
        Failure {
            reason: OnceLock::new(),
            gauge,
        }
    }

    /// The reason, once failed.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    /// Marks the directory failed (the first reason wins) and raises the metric.
    pub(crate) fn set(&self, reason: String) {
        self.gauge.set(1);
        if self.reason.set(reason).is_ok() {
            tracing::error!(reason = self.reason().unwrap_or_default(), "publisher refuses to go on");
        }
    }
}

/// Errors of the publisher.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// RocksDB failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// akd failed.
    #[error("akd: {0}")]
    Akd(#[from] AkdError),
    /// A head could not be encoded or a stored one decoded.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The publisher failed earlier and refuses to go on.
    #[error("publisher stopped after a failure: {0}")]
    Refusing(String),
    /// Stored state contradicts itself (e.g. a database not written by this service,
    /// or a head that does not match akd's root).
    #[error("inconsistent directory state: {0}")]
    Inconsistent(String),
    /// The audit blob could not be built.
    #[error("building the audit blob of epoch {epoch}: {reason}")]
    AuditBlob {
        /// The blob's end epoch.
        epoch: u64,
        /// Why.
        reason: String,
    },
}

/// Signs heads for one directory.
#[derive(Debug, Clone)]
pub struct HeadSigner {
    /// The directory's ed25519 key.
    key: SigningKey,
    /// The namespace every head carries.
    namespace: String,
    /// blake3 of the VRF public key, carried by every head.
    vrf_key_hash: [u8; 32],
}

impl HeadSigner {
    /// Signs `epoch -> root` (following `previous_root`) at `timestamp_ms`.
    pub fn sign(
        &self,
        epoch: u64,
        root: [u8; 32],
        previous_root: [u8; 32],
        timestamp_ms: u64,
    ) -> Result<SignedHead, HeadError> {
        Head {
            namespace: self.namespace.clone(),
            epoch,
            root,
            previous_root,
            vrf_key_hash: self.vrf_key_hash,
            timestamp_ms,
        }
        .sign(&self.key)
    }

    /// The public half of the signing key.
    pub fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }
}

/// Milliseconds since the Unix epoch, never earlier than `not_before`.
fn now_ms(not_before: u64) -> u64 {
    kt_client::head::unix_ms().max(not_before)
}

fn epoch_key(epoch: u64) -> Vec<u8> {
    epoch.to_be_bytes().to_vec()
}

/// The head stored for `epoch` (signature not checked: it is our own record).
pub(crate) async fn stored_head(storage: &Store, epoch: u64) -> Result<SignedHead, PublishError> {
    let bytes = storage
        .get_raw(Cf::Heads, epoch_key(epoch))
        .await?
        .ok_or_else(|| PublishError::Inconsistent(format!("no head stored for epoch {epoch}")))?;
    Ok(SignedHead::from_bytes(&bytes)?)
}

/// A request to publish now (`POST /v1/epochs`), answered when the epoch is done.
pub type Trigger = oneshot::Sender<Result<EpochResponse, PublishError>>;

/// The publisher's side of the operator API.
#[derive(Debug, Clone)]
pub struct Intake {
    /// Asks the publisher loop for an epoch now.
    pub triggers: mpsc::Sender<Trigger>,
    /// The durable queue.
    pub queue: Arc<Queue>,
}

/// What the HTTP layer shares with the publisher (or a replica's follower).
#[derive(Debug, Clone)]
pub struct Shared {
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
}

/// The single writer of the directory.
pub struct Publisher {
    /// akd, writing. Never used for reads (see the module docs). A fresh one for every
    /// epoch ([`Publisher::renew_directory`]).
    dir: KtDirectory,
    /// The cache each fresh `dir` gets.
    akd_cache: AkdCache,
    /// The database under `dir` (commit hook, heads, blobs).
    storage: Store,
    /// The VRF key, for new read views.
    vrf: VrfSecret,
    /// Where updates wait.
    queue: Arc<Queue>,
    /// Signs heads.
    signer: HeadSigner,
    /// Most updates taken into one epoch; the rest wait for the next.
    max_per_epoch: usize,
    /// Publishes new read views.
    views: watch::Sender<Arc<ReadView>>,
    /// The read directory replaced by the latest epoch. akd keeps one previous version
    /// of each node, so a reader may lag the disk by one epoch but not two: the next
    /// commit waits until every request on this one has finished.
    retired: Option<Weak<ReadDirectory>>,
    /// Set on a failed write.
    failure: Arc<Failure>,
    /// Newest stored audit blob's epoch.
    latest_blob_epoch: Arc<AtomicU64>,
    /// Metrics.
    metrics: Metrics,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("storage", &self.storage)
            .field("max_per_epoch", &self.max_per_epoch)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

/// How to open a publisher.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Which store: RocksDB in `db_path`, or a MySQL-protocol database.
    pub backend: Backend,
    /// The RocksDB directory.
    pub db_path: PathBuf,
    /// RocksDB tuning.
    pub storage: StorageConfig,
    /// Most updates per epoch.
    pub max_per_epoch: usize,
    /// The publisher's akd record cache.
    pub akd_cache: AkdCache,
}

impl Publisher {
    /// Opens the database, checks that akd's epoch, the stored heads and the keys agree,
    /// signs epoch 0's head on a new directory, rebuilds a missing audit blob, and
    /// returns the publisher with what the HTTP layer needs.
    pub async fn open(
        config: PublisherConfig,
        keys: Loaded,
        metrics: Metrics,
    ) -> Result<(Publisher, Shared, mpsc::Receiver<Trigger>), PublishError> {
        let storage = Store::open(
            &config.backend,
            config.db_path.clone(),
            config.storage.clone(),
            Role::Writer,
        )
        .await?;
        let dir = open_directory_with(storage.clone(), keys.vrf.clone(), config.akd_cache).await?;
        let vrf_public = dir.get_public_key().await?.as_bytes().to_vec();
        let signer = HeadSigner {
            key: keys.signing,
            namespace: keys.manifest.namespace.clone(),
            vrf_key_hash: vrf_key_hash(&vrf_public),
        };
        let akd_now = dir.get_epoch_hash().await?;
        let head = Self::recover_head(&storage, &signer, akd_now.0, akd_now.1).await?;
        let queue = Arc::new(Queue::open(storage.clone()).await?);
        let read = Arc::new(new_read_dir(&storage, &keys.vrf).await?);
        let (views, views_rx) = watch::channel(Arc::new(ReadView {
            head: head.clone(),
            dir: read,
        }));
        let (trigger_tx, trigger_rx) = mpsc::channel(16);
        let failure = Arc::new(Failure::new(metrics.publisher_failed.clone()));
        let latest_blob_epoch = Arc::new(AtomicU64::new(0));
        let publisher = Publisher {
            dir,
            akd_cache: config.akd_cache,
            storage: storage.clone(),
            vrf: keys.vrf,
            queue: Arc::clone(&queue),
            signer,
            max_per_epoch: config.max_per_epoch.max(1),
            views,
            retired: None,
            failure: Arc::clone(&failure),
            latest_blob_epoch: Arc::clone(&latest_blob_epoch),
            metrics,
        };
        let epoch = head.head.epoch;
        if epoch > 0 {
            if storage.get_raw(Cf::AuditBlobs, epoch_key(epoch)).await?.is_none() {
                tracing::warn!(epoch, "audit blob missing (crash after the commit?); rebuilding it");
                let previous = publisher.head_at(epoch - 1).await?;
                publisher.store_audit_blob(&previous.head, &head.head).await?;
            }
            latest_blob_epoch.store(epoch, Ordering::SeqCst);
        }
        publisher
            .metrics
            .latest_epoch
            .set(i64::try_from(epoch).unwrap_or(i64::MAX));
        publisher.update_queue_metric();
        publisher.update_storage_metric().await;
        let shared = Shared {
            views: views_rx,
            failure,
            latest_blob_epoch,
            intake: Some(Intake {
                triggers: trigger_tx,
                queue,
            }),
            storage,
            signing_key: publisher.signer.public_key(),
            vrf_public_key: vrf_public,
            namespace: publisher.signer.namespace.clone(),
        };
        tracing::info!(epoch, root = %hex::encode(head.head.root), queued = publisher.queue.depth(), store = %publisher.storage.describe(), "publisher open");
        Ok((publisher, shared, trigger_rx))
    }

    /// The latest head, checked against akd's epoch and root; signs epoch 0 if the
    /// directory is new.
    async fn recover_head(
        storage: &Store,
        signer: &HeadSigner,
        akd_epoch: u64,
        akd_root: [u8; 32],
    ) -> Result<SignedHead, PublishError> {
        let Some((key, bytes)) = storage.last(Cf::Heads).await? else {
            if akd_epoch != 0 {
                return Err(PublishError::Inconsistent(format!(
                    "akd is at epoch {akd_epoch} but no signed heads are stored \
                     (was this database written without `kt-directory serve`?)"
                )));
            }
            let head = signer.sign(0, akd_root, [0; 32], now_ms(0))?;
            let bytes = head.to_bytes()?;
            storage
                .write(vec![
                    Write::Put(Cf::Heads, epoch_key(0), bytes.clone()),
                    Write::Put(Cf::Meta, LATEST_HEAD_KEY.to_vec(), bytes),
                ])
                .await?;
            tracing::info!(root = %hex::encode(akd_root), "signed the head of epoch 0");
            return Ok(head);
        };
        let stored = SignedHead::from_bytes(&bytes).map_err(|e| {
            PublishError::Inconsistent(format!("stored head at key {} does not decode: {e}", hex::encode(&key)))
        })?;
        let h = stored.verify(&signer.public_key()).map_err(|_| {
            PublishError::Inconsistent(format!(
                "the stored head of epoch {} is not signed by this data directory's signing key",
                stored.head.epoch
            ))
        })?;
        if h.epoch != akd_epoch || h.root != akd_root {
            return Err(PublishError::Inconsistent(format!(
                "latest signed head is epoch {} root {}, but akd is at epoch {akd_epoch} root {}",
                h.epoch,
                hex::encode(h.root),
                hex::encode(akd_root)
            )));
        }
        if h.namespace != signer.namespace || h.vrf_key_hash != signer.vrf_key_hash {
            return Err(PublishError::Inconsistent(
                "the stored heads carry another namespace or VRF key than this data directory".into(),
            ));
        }
        // Prefer the freshest re-signature of the same epoch, if there is one.
        if let Some(latest) = storage.get_raw(Cf::Meta, LATEST_HEAD_KEY.to_vec()).await?
            && let Ok(latest) = SignedHead::from_bytes(&latest)
            && latest.head.epoch == akd_epoch
            && latest.head.root == akd_root
            && latest.verify(&signer.public_key()).is_ok()
        {
            return Ok(latest);
        }
        Ok(stored)
    }

    /// The head stored for `epoch`.
    async fn head_at(&self, epoch: u64) -> Result<SignedHead, PublishError> {
        stored_head(&self.storage, epoch).await
    }

    fn fail(&self, reason: String) {
        self.failure.set(reason);
    }

    fn update_queue_metric(&self) {
        self.metrics
            .queue_depth
            .set(i64::try_from(self.queue.depth()).unwrap_or(i64::MAX));
    }

    /// Refreshes the bytes-on-disk gauges. A failed property read is only logged: it
    /// says nothing about the data.
    async fn update_storage_metric(&self) {
        match self.storage.live_bytes_all().await {
            Ok(all) => {
                for (cf, bytes) in all {
                    self.metrics
                        .storage_bytes
                        .with_label_values(&[cf.name()])
                        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading bytes on disk"),
        }
    }

    /// Runs until `shutdown` flips: an epoch every `interval`, and one per trigger.
    pub async fn run(
        mut self,
        interval: Duration,
        mut triggers: mpsc::Receiver<Trigger>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = timer.tick() => {
                    if let Err(e) = self.publish().await {
                        tracing::error!(error = %e, "scheduled epoch failed");
                    }
                }
                Some(reply) = triggers.recv() => {
                    let result = self.publish().await;
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "requested epoch failed");
                    }
                    let _ = reply.send(result);
                }
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!("publisher stopped");
    }

    /// Publishes one epoch from the queue, or re-signs the latest head if the queue is
    /// empty or nothing changed.
    pub async fn publish(&mut self) -> Result<EpochResponse, PublishError> {
        if let Some(reason) = self.failure.reason() {
            return Err(PublishError::Refusing(reason.to_owned()));
        }
        let taken = self.queue.take(self.max_per_epoch).await?;
        let current = self.views.borrow().head.clone();
        if taken.is_empty() {
            let head = self.resign(&current, Vec::new()).await?;
            return Ok(self.response(head, false, 0));
        }
        self.wait_for_retired_readers().await;
        let plan = Plan::new(taken);
        let next = current.head.epoch + 1;
        let slot: Arc<Mutex<Option<(SignedHead, Resolved)>>> = Arc::default();
        self.storage.stage_commit_hook(commit_hook(
            plan.clone(),
            &self.signer,
            &current.head,
            Arc::clone(&slot),
        ));
        let started = Instant::now();
        let updates = plan
            .winners
            .iter()
            .map(|w| (AkdLabel(w.label.clone()), AkdValue(w.value.clone())))
            .collect();
        let result = self.dir.publish(updates).await;
        let hook_unused = self.storage.clear_commit_hook();
        let published = match result {
            Ok(published) => published,
            Err(e) => {
                if !hook_unused || self.storage.is_fenced() {
                    // akd updated its cache with a commit that did not land.
                    self.fail(format!("epoch {next}: the commit failed: {e}"));
                }
                return Err(e.into());
            }
        };
        let taken = u64::try_from(plan.len()).unwrap_or(u64::MAX);
        let (head, resolved) = if published.0 == next {
            let Some((head, resolved)) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() else {
                let reason = format!("akd published epoch {next} without running the commit hook");
                self.fail(reason.clone());
                return Err(PublishError::Inconsistent(reason));
            };
            if head.head.root != published.1 {
                let reason = format!(
                    "signed root {} for epoch {next} but akd reports {}",
                    hex::encode(head.head.root),
                    hex::encode(published.1)
                );
                self.fail(reason.clone());
                return Err(PublishError::Inconsistent(reason));
            }
            (head, resolved)
        } else if published.0 == current.head.epoch && hook_unused {
            // Every value was already current: akd committed nothing. The updates still
            // leave the queue, as unchanged, with the head re-signed.
            let (writes, resolved) = plan.resolve(current.head.epoch, |_| None);
            (self.resign(&current, writes).await?, resolved)
        } else {
            let reason = format!("akd returned epoch {} while publishing epoch {next}", published.0);
            self.fail(reason.clone());
            return Err(PublishError::Inconsistent(reason));
        };
        self.queue.resolved(taken);
        self.update_queue_metric();
        for (outcome, n) in [
            ("published", resolved.published),
            ("unchanged", resolved.unchanged),
            ("superseded", resolved.superseded),
        ] {
            self.metrics.updates_resolved.with_label_values(&[outcome]).inc_by(n);
        }
        if head.head.epoch == current.head.epoch {
            return Ok(self.response(head, false, taken));
        }
        let elapsed = started.elapsed();
        self.metrics.publish_seconds.observe(elapsed.as_secs_f64());
        self.metrics.latest_epoch.set(i64::try_from(next).unwrap_or(i64::MAX));
        self.metrics
            .epoch_updates
            .set(i64::try_from(resolved.published).unwrap_or(i64::MAX));
        tracing::info!(
            epoch = next,
            root = %hex::encode(head.head.root),
            published = resolved.published,
            unchanged = resolved.unchanged,
            superseded = resolved.superseded,
            ms = elapsed.as_millis(),
            "published epoch"
        );
        self.install_view(head.clone()).await?;
        self.store_audit_blob(&current.head, &head.head).await?;
        self.latest_blob_epoch.store(next, Ordering::SeqCst);
        self.renew_directory(next).await;
        self.update_storage_metric().await;
        Ok(self.response(head, true, taken))
    }

    fn response(&self, head: SignedHead, published: bool, taken: u64) -> EpochResponse {
        EpochResponse {
            epoch: head.head.epoch,
            published,
            taken,
            queued: self.queue.depth(),
            head,
        }
    }

    /// Re-signs `current`'s epoch with a fresh time, stores it with `writes` in one
    /// batch, and serves it.
    async fn resign(&mut self, current: &SignedHead, mut writes: Vec<Write>) -> Result<SignedHead, PublishError> {
        let h = &current.head;
        let head = self
            .signer
            .sign(h.epoch, h.root, h.previous_root, now_ms(h.timestamp_ms))?;
        writes.push(Write::Put(Cf::Meta, LATEST_HEAD_KEY.to_vec(), head.to_bytes()?));
        if let Err(e) = self.storage.write(writes).await {
            self.fail(format!("writing the re-signed head of epoch {}: {e}", h.epoch));
            return Err(e.into());
        }
        let dir = Arc::clone(&self.views.borrow().dir);
        self.views.send_replace(Arc::new(ReadView {
            head: head.clone(),
            dir,
        }));
        tracing::debug!(epoch = h.epoch, "re-signed the latest head");
        Ok(head)
    }

    /// Serves `head`'s epoch from a fresh read directory.
    async fn install_view(&mut self, head: SignedHead) -> Result<(), PublishError> {
        let dir = Arc::new(new_read_dir(&self.storage, &self.vrf).await?);
        let old = self.views.send_replace(Arc::new(ReadView { head, dir }));
        self.retired = Some(Arc::downgrade(&old.dir));
        Ok(())
    }

    /// Waits until no request still reads through the view two epochs back (see
    /// [`Publisher::retired`]). Requests are bounded by the server's timeout.
    async fn wait_for_retired_readers(&mut self) {
        let Some(retired) = self.retired.take() else { return };
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

    /// Replaces akd's directory with a fresh one on the same store, at `epoch`. akd's
    /// cache keeps every record an epoch read or wrote (3M at 200k updates), and a
    /// bounded cache spends seconds sorting them all to evict most, including the nodes
    /// the audit blob reads next. With a directory per epoch the cache holds one
    /// epoch's working set, and the old one is freed on a blocking thread.
    ///
    /// The epoch has landed by now, so nothing here fails it. If the fresh directory
    /// cannot be opened, the current one (correct, only holding more) carries on. If
    /// it opens at another epoch than the one just published, the store disagrees with
    /// the publisher and it refuses to go on.
    async fn renew_directory(&mut self, epoch: u64) {
        let keep = |e: &dyn std::fmt::Display| {
            tracing::warn!(epoch, error = %e, "could not open a fresh akd directory; keeping this epoch's");
        };
        let fresh = match open_directory_with(self.storage.clone(), self.vrf.clone(), self.akd_cache).await {
            Ok(fresh) => fresh,
            Err(e) => return keep(&e),
        };
        match fresh.get_epoch_hash().await {
            Ok(at) if at.0 == epoch => {}
            Ok(at) => {
                return self.fail(format!(
                    "a fresh akd directory stands at epoch {}, not at the published {epoch}",
                    at.0
                ));
            }
            Err(e) => return keep(&e),
        }
        let old = std::mem::replace(&mut self.dir, fresh);
        tokio::task::spawn_blocking(move || drop(old));
    }

    /// Builds the append-only proof `previous -> head` and stores it as an audit blob.
    async fn store_audit_blob(&self, previous: &Head, head: &Head) -> Result<(), PublishError> {
        let started = Instant::now();
        let epoch = head.epoch;
        let blob_err = |reason: String| PublishError::AuditBlob { epoch, reason };
        let proof = self.dir.audit(previous.epoch, epoch).await?;
        let single = proof
            .proofs
            .first()
            .ok_or_else(|| blob_err("akd returned no proof".into()))?;
        let blob = AuditBlob::new(previous.root, head.root, epoch, single).map_err(|e| blob_err(format!("{e:?}")))?;
        let bytes = blob.data.len();
        if let Err(e) = self
            .storage
            .write(vec![Write::Put(Cf::AuditBlobs, epoch_key(epoch), blob.data)])
            .await
        {
            self.fail(format!("storing the audit blob of epoch {epoch}: {e}"));
            return Err(e.into());
        }
        let elapsed = started.elapsed();
        self.metrics.audit_blob_seconds.observe(elapsed.as_secs_f64());
        self.metrics
            .audit_blob_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        tracing::info!(epoch, bytes, ms = elapsed.as_millis(), name = %blob.name, "stored audit blob");
        Ok(())
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
    ReadOnlyDirectory::new(manager, vrf.clone(), AzksParallelismConfig::default()).await
}

/// The hook that makes an epoch's bookkeeping part of akd's commit: checks the commit
/// is the epoch after `current`, reads the new root and each label's new version off
/// akd's records, resolves every taken update and signs the head.
fn commit_hook(
    plan: Plan,
    signer: &HeadSigner,
    current: &Head,
    slot: Arc<Mutex<Option<(SignedHead, Resolved)>>>,
) -> crate::storage::CommitHook {
    let next = current.epoch + 1;
    let previous_root = current.root;
    let not_before = current.timestamp_ms;
    let signer = signer.clone();
    Box::new(move |records: &[DbRecord]| {
        let refuse = |msg: String| StorageError::CommitHook(msg);
        let mut azks_epoch = None;
        let mut root_value = None;
        let mut versions: HashMap<&[u8], u64> = HashMap::new();
        for record in records {
            match record {
                DbRecord::Azks(azks) => azks_epoch = Some(azks.get_latest_epoch()),
                DbRecord::TreeNode(node) if node.label == NodeLabel::root() => {
                    root_value = Some(node.latest_node.hash);
                }
                DbRecord::ValueState(state) if state.epoch == next => {
                    versions.insert(state.username.0.as_slice(), state.version);
                }
                _ => {}
            }
        }
        if azks_epoch != Some(next) {
            return Err(refuse(format!(
                "expected a commit of epoch {next}, akd committed {azks_epoch:?}"
            )));
        }
        let root_value = root_value.ok_or_else(|| refuse(format!("commit of epoch {next} has no root node")))?;
        let root = KtConfig::compute_root_hash_from_val(&root_value);
        let (mut writes, resolved) = plan.resolve(next, |label| versions.get(label).copied());
        let head = signer
            .sign(next, root, previous_root, now_ms(not_before))
            .map_err(|e| refuse(e.to_string()))?;
        let bytes = head.to_bytes().map_err(|e| refuse(e.to_string()))?;
        writes.push(Write::Put(Cf::Heads, epoch_key(next), bytes.clone()));
        writes.push(Write::Put(Cf::Meta, LATEST_HEAD_KEY.to_vec(), bytes));
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((head, resolved));
        Ok(writes)
    })
}
