//! The publisher: takes queued updates into epochs, signs heads, builds audit blobs,
//! and hands readers a consistent view of the newest epoch.
//!
//! An epoch is a pipeline of named stages, each in a file of its own, and none holds
//! the epoch more than once:
//!
//! 1. **prepare** ([`prepare`]), continuously, below the publisher's priority: every
//!    queued label's current version and VRF node labels;
//! 2. **take**: the oldest queued updates, with the last-accepted-wins rule ([`Plan`]);
//! 3. **versions, vrf** ([`writer::changes`]): what the epoch inserts, from the
//!    prepare memo, the rest computed as akd would;
//! 4. **preload, insert** ([`writer`]): akd's tree insertion on its public `Azks`
//!    API, over the epoch store ([`epoch_store`]) that our own traversal filled: the
//!    one copy of the epoch's nodes;
//! 5. **commit**: the epoch's nodes, value states, `Azks` row, queue removals,
//!    outcomes and signed head in one atomic write ([`Store::commit_epoch`]): they land
//!    together or not at all, whatever moment a crash hits;
//! 6. **view** ([`view`]): a fresh read view at the new epoch is served. Readers never
//!    share the writer's memory;
//! 7. **audit blob** ([`blob`]), in the background from the frozen epoch store; the
//!    next epoch's preload waits for it.
//!
//! After any failed write the publisher refuses to go on: it marks itself failed and
//! publishes nothing until a restart re-reads the store.

pub mod blob;
pub mod epoch_store;
pub mod heads;
pub mod memory;
pub mod prepare;
pub mod staging;
pub mod view;
pub mod writer;

pub use heads::HeadSigner;
pub(crate) use heads::{LATEST_HEAD_KEY, stored_head};
pub(crate) use view::new_read_dir;
pub use view::{Intake, ReadDirectory, ReadView, ServeState};

use crate::datadir::Keys;
use crate::epoch_log::EpochLog;
use crate::metrics::Metrics;
use crate::queue::{Plan, Queue};
use crate::storage::{Backend, Cf, EpochCommit, Role, StorageConfig, StorageError, Store, Write};
use crate::vrf::VrfSecret;
use crate::{AkdCache, KtConfig};
use akd::errors::AkdError;
use akd::storage::StorageManager;
use akd::{AzksParallelismConfig, Directory};
use blob::{BlobSink, PendingBlob};
use epoch_store::EpochStore;
use heads::{epoch_key, now_ms, recover_head};
use kt_client::head::{HeadError, SignedHead, vrf_key_hash};
use kt_client::wire::EpochResponse;
use memory::{Owners, PeakSampler, PhaseClock};
use prepare::{Prepare, PrepareConfig};
use staging::Stager;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use view::Retired;

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
    /// The store failed (either engine).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// akd refused an operation (its errors are mostly storage errors as text).
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
    Inconsistent(#[from] Inconsistency),
    /// The audit blob could not be built.
    #[error("building the audit blob of epoch {epoch}: {reason}")]
    AuditBlob {
        /// The blob's end epoch.
        epoch: u64,
        reason: String,
    },
}

/// How the stored state contradicts itself, or what the publisher found missing.
#[derive(Debug, thiserror::Error)]
pub enum Inconsistency {
    /// No head is stored for an epoch akd has.
    #[error("no head stored for epoch {epoch}")]
    NoHead {
        /// The epoch.
        epoch: u64,
    },
    /// akd has epochs, but no signed head is stored at all.
    #[error(
        "akd is at epoch {akd_epoch} but no signed heads are stored \
         (was this database written without `kt-directory serve`?)"
    )]
    NoHeads {
        /// akd's epoch.
        akd_epoch: u64,
    },
    /// A stored head does not decode.
    #[error("stored head at key {key_hex} does not decode: {source}")]
    HeadUndecodable {
        /// Its key, hex.
        key_hex: String,
        #[source]
        source: HeadError,
    },
    /// A stored head is signed by another key than the data directory's.
    #[error("the stored head of epoch {epoch} is not signed by this data directory's signing key")]
    HeadKey {
        /// The head's epoch.
        epoch: u64,
    },
    /// The latest head and akd's tree are at different epochs or roots.
    #[error(
        "latest signed head is epoch {head_epoch} root {head_root}, but akd is at epoch {akd_epoch} root {akd_root}"
    )]
    HeadVsTree {
        /// The head's epoch.
        head_epoch: u64,
        /// The head's root, hex.
        head_root: String,
        /// akd's epoch.
        akd_epoch: u64,
        /// akd's root, hex.
        akd_root: String,
    },
    /// The stored heads name another namespace or VRF key than the data directory.
    #[error("the stored heads carry another namespace or VRF key than this data directory")]
    HeadIdentity,
    /// The store has no akd `Azks` row.
    #[error("the store has no Azks row")]
    NoAzks,
    /// akd's `Azks` row and the latest head disagree about the epoch.
    #[error("akd's Azks row is at epoch {azks}, the latest head at {head}")]
    AzksVsHead {
        /// The row's epoch.
        azks: u64,
        /// The head's epoch.
        head: u64,
    },
    /// akd's insertion did not move the tree to the next epoch.
    #[error("akd's insertion moved the tree to epoch {got}, not {expected}")]
    InsertedEpoch {
        /// Where it went.
        got: u64,
        /// Where it should have gone.
        expected: u64,
    },
    /// A label of the epoch was neither prepared ahead nor computed.
    #[error("a label was neither prepared nor computed")]
    Unprepared,
    /// A label with a version has no stale node label.
    #[error("a prepared label with a version has no stale node label")]
    NoStaleLabel,
    /// The tree has no root node after akd's insertion.
    #[error("the tree has no root node after the insertion")]
    NoRoot,
    /// The prepare stage's threads could not start.
    #[error("starting the prepare stage: {0}")]
    PrepareStart(#[source] std::io::Error),
    /// The VRF key gives no public key.
    #[error("VRF public key: {0:?}")]
    VrfKey(akd::ecvrf::VrfError),
    /// A replica's store has no signed head.
    #[error("{store} has no signed head: start the publisher on it before a replica")]
    ReplicaNoHead {
        /// Which store.
        store: String,
    },
    /// A replica never saw the store's head and tree agree.
    #[error("the store's head and tree never agreed while opening the replica")]
    ReplicaNeverAgreed,
    /// The epoch log and the stored heads disagree (`crate::epoch_log`).
    #[error("the epoch log disagrees with the stored heads: {0}")]
    EpochLog(String),
    /// A checkpoint could not be signed (a namespace the note format cannot name).
    #[error("signing the checkpoint: {0}")]
    Checkpoint(#[from] kt_client::tlog::note::NoteError),
}

impl From<akd::errors::StorageError> for PublishError {
    fn from(e: akd::errors::StorageError) -> Self {
        PublishError::Akd(AkdError::Storage(e))
    }
}

/// A request to publish now (`POST /v1/epochs`), answered when the epoch is done.
pub type EpochReply = oneshot::Sender<Result<EpochResponse, PublishError>>;

/// The single writer of the directory.
pub struct Publisher {
    /// Where each epoch is committed, in one atomic write with its queue removals,
    /// outcomes and head.
    storage: Store,
    /// Derives the VRF node labels of labels the prepare stage did not cover.
    vrf: VrfSecret,
    /// The durable queue an epoch takes its updates from (and removes them from, in
    /// the epoch's own commit).
    queue: Arc<Queue>,
    /// Versions and VRF node labels of queued labels, computed ahead.
    prepare: Prepare,
    /// Signs each epoch's head, and re-signs an unchanged one to keep it fresh.
    signer: HeadSigner,
    /// The epoch log each epoch's head is appended to, in the epoch's own commit.
    log: Arc<EpochLog>,
    /// Most updates taken into one epoch; the rest wait for the next.
    max_per_epoch: usize,
    /// Hands the HTTP layer the read view of each new head, so lookups never see a
    /// head without its tree.
    views: watch::Sender<Arc<ReadView>>,
    /// The view two epochs back, which the next commit waits for.
    retired: Retired,
    /// Set on a failed write: the publisher then refuses to go on (and the API says
    /// why) until a restart re-reads the store.
    failure: Arc<Failure>,
    /// Stores each epoch's audit blob for the auditors.
    blobs: BlobSink,
    /// The audit blob of the latest epoch, while it is being built.
    pending_blob: Option<PendingBlob>,
    /// Loads the next epoch's nodes ahead; started on the runtime that runs the
    /// publisher, at its first epoch.
    stager: Option<Stager>,
    /// Forced epochs (`POST /v1/epochs`).
    triggers: mpsc::Receiver<EpochReply>,
    /// The resident set's peak per phase.
    sampler: PeakSampler,
    /// The prepare stage's CPU seconds already counted in the metric.
    prepare_cpu_counted: f64,
    /// Every series the directory exports.
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
    /// The akd record cache of the directory that rebuilds a missing audit blob at
    /// start-up (the epoch writer itself uses no akd cache).
    pub akd_cache: AkdCache,
    /// The prepare stage.
    pub prepare: PrepareConfig,
}

impl PrepareConfig {
    /// Two workers at nice 10 (below the publisher's 5), holding up to four epochs of
    /// labels.
    pub fn for_epochs_of(max_per_epoch: usize) -> PrepareConfig {
        PrepareConfig {
            workers: 2,
            nice: 10,
            max_labels: max_per_epoch.saturating_mul(4).max(1024),
        }
    }
}

impl Publisher {
    /// Opens the database, checks that akd's epoch, the stored heads and the keys agree,
    /// signs epoch 0's head on a new directory, rebuilds a missing audit blob, starts
    /// the prepare stage, and returns the publisher with what the HTTP layer needs.
    pub async fn open(
        config: PublisherConfig,
        keys: Keys,
        metrics: Metrics,
    ) -> Result<(Publisher, ServeState), PublishError> {
        let storage = Store::open(
            &config.backend,
            config.db_path.clone(),
            config.storage.clone(),
            Role::Writer,
        )
        .await?;
        if storage.stored_azks().await?.is_none() {
            // A new store: akd writes epoch 0 (the empty tree).
            Directory::<KtConfig, _, _>::new(
                StorageManager::new_no_cache(storage.clone()),
                keys.vrf.clone(),
                AzksParallelismConfig::default(),
            )
            .await?;
        }
        let vrf_public = keys.vrf.public_key_bytes().to_vec();
        let signer = HeadSigner::new(keys.signing, keys.manifest.namespace.clone(), vrf_key_hash(&vrf_public));
        let read = Arc::new(new_read_dir(&storage, &keys.vrf).await?);
        let akd_now = read.get_epoch_hash().await?;
        let head = recover_head(&storage, &signer, akd_now.0, akd_now.1).await?;
        let log = Arc::new(
            EpochLog::open(
                &storage,
                &signer.namespace,
                signer.public_key(),
                head.head.epoch,
                Some(&signer),
            )
            .await?,
        );
        let queue = Arc::new(Queue::open(storage.clone()).await?);
        let prepare = Prepare::start(
            storage.clone(),
            keys.vrf.clone(),
            head.head.epoch,
            &config.prepare,
            metrics.prepare(),
        )
        .map_err(Inconsistency::PrepareStart)?;
        // What was queued before a restart is prepared too.
        let queued = queue.take(config.max_per_epoch.saturating_mul(2)).await?;
        prepare.submit(queued.iter().map(|q| q.label.as_slice()));
        let (views, views_rx) = watch::channel(Arc::new(ReadView {
            head: head.clone(),
            dir: read,
        }));
        let (trigger_tx, trigger_rx) = mpsc::channel(16);
        let failure = Arc::new(Failure::new(metrics.publisher_failed.clone()));
        let latest_blob_epoch = Arc::new(AtomicU64::new(0));
        let blobs = BlobSink {
            storage: storage.clone(),
            failure: Arc::clone(&failure),
            latest_blob_epoch: Arc::clone(&latest_blob_epoch),
            metrics: metrics.clone(),
        };
        let epoch = head.head.epoch;
        if epoch > 0 {
            if storage.get_raw(Cf::AuditBlobs, epoch_key(epoch)).await?.is_none() {
                tracing::warn!(epoch, "audit blob missing (crash after the commit?); rebuilding it");
                let previous = stored_head(&storage, epoch - 1).await?;
                blobs
                    .rebuild(&keys.vrf, config.akd_cache, &previous.head, &head.head)
                    .await?;
            }
            latest_blob_epoch.store(epoch, Ordering::SeqCst);
        }
        let publisher = Publisher {
            storage: storage.clone(),
            vrf: keys.vrf,
            queue: Arc::clone(&queue),
            prepare: prepare.clone(),
            signer,
            log: Arc::clone(&log),
            max_per_epoch: config.max_per_epoch.max(1),
            views,
            retired: Retired::default(),
            failure: Arc::clone(&failure),
            blobs,
            pending_blob: None,
            stager: None,
            triggers: trigger_rx,
            sampler: PeakSampler::start(),
            prepare_cpu_counted: 0.0,
            metrics,
        };
        publisher
            .metrics
            .latest_epoch
            .set(i64::try_from(epoch).unwrap_or(i64::MAX));
        publisher.update_queue_metric();
        publisher
            .metrics
            .log_size
            .set(i64::try_from(publisher.log.size()).unwrap_or(i64::MAX));
        publisher.update_storage_metric().await;
        let shared = ServeState {
            views: views_rx,
            failure,
            latest_blob_epoch,
            intake: Some(Intake {
                triggers: trigger_tx,
                queue,
                prepare,
            }),
            storage,
            signing_key: publisher.signer.public_key(),
            vrf_public_key: vrf_public,
            namespace: publisher.signer.namespace.clone(),
            log,
        };
        tracing::info!(epoch, root = %hex::encode(head.head.root), queued = publisher.queue.depth(), store = %publisher.storage.describe(), "publisher open");
        Ok((publisher, shared))
    }

    fn fail(&self, reason: String) {
        self.failure.set(reason);
    }

    fn update_queue_metric(&self) {
        self.metrics
            .queue_depth
            .set(i64::try_from(self.queue.depth()).unwrap_or(i64::MAX));
    }

    /// Refreshes the CPU counters of the prepare stage and the process.
    fn update_cpu_metrics(&mut self) {
        let prepare = memory::thread_cpu_seconds(prepare::THREAD_NAME);
        if prepare > self.prepare_cpu_counted {
            self.metrics
                .prepare_cpu_seconds
                .inc_by(prepare - self.prepare_cpu_counted);
            self.prepare_cpu_counted = prepare;
        }
        self.metrics.process_cpu_seconds.set(memory::process_cpu_seconds());
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

    /// Memory by owner now, with the resident set's peak since the last sample.
    fn owners(&self, nodes: Option<&EpochStore>) -> Owners {
        let store = self.storage.memory();
        let (allocated, allocator_resident) = memory::allocator().unwrap_or_default();
        Owners {
            allocated,
            allocator_resident,
            rss: memory::rss_bytes(),
            peak_rss: self.sampler.take(),
            epoch_store: nodes.map_or(0, EpochStore::bytes),
            prepare_memo: self.prepare.memory().1,
            block_cache: store.block_cache,
            memtables: store.memtables,
            write_batch: store.write_batch,
        }
    }

    /// Runs until `shutdown` flips: an epoch every `interval`, and one per forced
    /// epoch. Waits for an audit blob still being built before it returns.
    pub async fn run(mut self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cpu = tokio::time::interval(Duration::from_secs(2));
        // Staging runs on this runtime, from the start: the first epoch benefits too.
        self.stager();
        loop {
            tokio::select! {
                _ = timer.tick() => {
                    if let Err(e) = self.publish().await {
                        tracing::error!(error = %e, "scheduled epoch failed");
                    }
                }
                Some(reply) = self.triggers.recv() => {
                    let result = self.publish().await;
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "requested epoch failed");
                    }
                    let _ = reply.send(result);
                }
                _ = cpu.tick() => self.update_cpu_metrics(),
                _ = shutdown.changed() => break,
            }
        }
        if let Err(e) = self.finish_blob().await {
            tracing::error!(error = %e, "the last audit blob was not stored; it is rebuilt at the next start");
        }
        tracing::info!("publisher stopped");
    }

    /// Waits for the audit blob being built, if any. A blob that cannot be built stops
    /// the publisher: the next start rebuilds it before publishing again.
    async fn finish_blob(&mut self) -> Result<(), PublishError> {
        let Some(pending) = self.pending_blob.take() else {
            return Ok(());
        };
        let epoch = pending.epoch;
        let result = pending.finish().await;
        if let Err(e) = &result {
            self.fail(format!("the audit blob of epoch {epoch} was not stored: {e}"));
        }
        result
    }

    /// Publishes one epoch from the queue, or re-signs the latest head if the queue is
    /// empty or nothing changed.
    pub async fn publish(&mut self) -> Result<EpochResponse, PublishError> {
        if let Some(reason) = self.failure.reason() {
            return Err(PublishError::Refusing(reason.to_owned()));
        }
        let mut clock = PhaseClock::start();
        self.sampler.take();
        let taken = self.queue.take(self.max_per_epoch).await?;
        let current = self.views.borrow().head.clone();
        if taken.is_empty() {
            let head = self.resign(current, Vec::new()).await?;
            return Ok(self.response(head, false, 0));
        }
        let mut resolved_per_label: HashMap<Vec<u8>, u64> = HashMap::new();
        for item in &taken {
            *resolved_per_label.entry(item.label.clone()).or_default() += 1;
        }
        let plan = Plan::new(taken);
        let taken = u64::try_from(plan.len()).unwrap_or(u64::MAX);
        self.prepare.taken(plan.winners.iter().map(|w| w.label.as_slice()));
        clock.mark("take", self.owners(None));
        // One epoch's nodes at a time: the previous epoch's blob reads its own.
        self.finish_blob().await?;
        self.retired.wait().await;
        let epoch = current.head.epoch;
        let staged = self.stager().take(epoch).await;
        clock.mark("wait_blob", self.owners(staged.as_ref().map(|s| &s.nodes)));
        let result = self
            .publish_taken(current, plan, taken, resolved_per_label, staged, clock)
            .await;
        if result.is_err() && self.failure.reason().is_none() {
            // Nothing landed: stage again on the same epoch.
            self.stager().allow(epoch);
        }
        result
    }

    /// The staging task, started on first use (on the runtime that runs the publisher).
    fn stager(&mut self) -> &Stager {
        if self.stager.is_none() {
            let stager = Stager::start(self.storage.clone(), self.prepare.clone(), self.metrics.clone());
            if self.pending_blob.is_none() {
                // The latest epoch's blob is stored (open rebuilds a missing one).
                stager.allow(self.views.borrow().head.head.epoch);
            }
            self.stager = Some(stager);
        }
        self.stager.as_ref().unwrap_or_else(|| unreachable!("just set"))
    }

    /// [`Publisher::publish`] once the batch is taken: `staged` is what staging loaded
    /// for it.
    async fn publish_taken(
        &mut self,
        current: SignedHead,
        plan: Plan,
        taken: u64,
        resolved_per_label: HashMap<Vec<u8>, u64>,
        staged: Option<staging::Staged>,
        mut clock: PhaseClock,
    ) -> Result<EpochResponse, PublishError> {
        let epoch = current.head.epoch;
        let next = epoch + 1;
        let mut azks = self.storage.stored_azks().await?.ok_or(Inconsistency::NoAzks)?;
        if azks.latest_epoch != epoch {
            let why = Inconsistency::AzksVsHead {
                azks: azks.latest_epoch,
                head: epoch,
            };
            self.fail(why.to_string());
            return Err(why.into());
        }
        let versions = writer::versions(&self.storage, &self.prepare, epoch, &plan.winners).await?;
        clock.mark("versions", self.owners(None));
        let changes = writer::changes(&self.vrf, &self.prepare, epoch, &plan.winners, versions).await?;
        clock.mark("vrf", self.owners(None));

        if changes.elements.is_empty() {
            // Every value was already current: nothing to commit. The updates still
            // leave the queue, as unchanged, with the head re-signed.
            let (writes, resolved) = plan.resolve(epoch, |_| None);
            let head = self.resign(current.clone(), writes).await?;
            self.prepare.committed(epoch, &resolved_per_label, &HashMap::new());
            self.stager().put_back(staged, epoch).await;
            self.queue.resolved(taken);
            self.count_resolved(resolved);
            return Ok(self.response(head, false, taken));
        }

        let (nodes, covered) = match staged {
            Some(s) => (s.nodes, s.covered),
            None => (EpochStore::new(self.storage.clone()), Default::default()),
        };
        let labels = changes
            .elements
            .iter()
            .map(|e| e.label)
            .filter(|l| !covered.contains(l))
            .collect();
        drop(covered);
        let loaded = writer::preload(&nodes, &self.storage, epoch, labels).await?;
        self.metrics.preload_nodes.inc_by(loaded);
        clock.mark("preload", self.owners(Some(&nodes)));
        let root = writer::insert(&nodes, &mut azks, changes.elements).await?;
        self.metrics.epoch_store_fallback_reads.inc_by(nodes.fallback_reads());
        clock.mark("insert", self.owners(Some(&nodes)));
        if azks.latest_epoch != next {
            let why = Inconsistency::InsertedEpoch {
                got: azks.latest_epoch,
                expected: next,
            };
            self.fail(why.to_string());
            return Err(why.into());
        }

        let versions = writer::new_versions(&changes.states);
        let (mut writes, resolved) = plan.resolve(next, |label| versions.get(label).copied());
        let head = self
            .signer
            .sign(next, root, current.head.root, now_ms(current.head.timestamp_ms))?;
        let bytes = head.to_bytes()?;
        writes.push(Write::Put(Cf::Heads, epoch_key(next), bytes.clone()));
        writes.push(Write::Put(Cf::Meta, LATEST_HEAD_KEY.to_vec(), bytes));
        let mut logged = match self.log.prepare(&head, &self.signer) {
            Ok(l) => l,
            Err(e) => {
                self.fail(format!("epoch {next}: {e}"));
                return Err(e);
            }
        };
        writes.append(&mut logged.writes);
        let commit = EpochCommit {
            nodes: Arc::new(nodes.clone()),
            states: changes.states,
            azks: azks.clone(),
            writes,
        };
        if let Err(e) = self.storage.commit_epoch(commit).await {
            self.fail(format!("epoch {next}: the commit failed: {e}"));
            return Err(e.into());
        }
        nodes.freeze();
        self.log.apply(logged);
        self.metrics
            .log_size
            .set(i64::try_from(self.log.size()).unwrap_or(i64::MAX));
        clock.mark("commit", self.owners(Some(&nodes)));

        self.prepare.committed(next, &resolved_per_label, &versions);
        self.queue.resolved(taken);
        self.count_resolved(resolved);
        // The epoch has landed: what follows cannot undo it, only stop the publisher.
        let installed = self.install_view(head.clone()).await;
        clock.mark("view", self.owners(Some(&nodes)));
        let elapsed = clock.elapsed();
        let staging = self.stager().allower();
        self.pending_blob = Some(
            self.blobs
                .spawn(nodes, azks, current.head.clone(), head.head.clone(), staging),
        );
        if let Err(e) = installed {
            self.fail(format!(
                "epoch {next} landed but its read view could not be opened: {e}"
            ));
            return Err(e);
        }
        self.report(&clock);
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
            prepared = changes.prepared,
            computed = changes.computed,
            ms = elapsed.as_millis(),
            "published epoch"
        );
        self.update_storage_metric().await;
        Ok(self.response(head, true, taken))
    }

    /// Exports the phases of the epoch just published.
    fn report(&self, clock: &PhaseClock) {
        for phase in &clock.phases {
            self.metrics
                .publish_phase_seconds
                .with_label_values(&[phase.name])
                .observe(phase.seconds);
            self.metrics
                .epoch_phase_seconds
                .with_label_values(&[phase.name])
                .set(phase.seconds);
            for (owner, bytes) in phase.memory.pairs() {
                self.metrics
                    .epoch_memory_bytes
                    .with_label_values(&[phase.name, owner])
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
    }

    fn count_resolved(&self, resolved: crate::queue::Resolved) {
        self.update_queue_metric();
        for (outcome, n) in [
            ("published", resolved.published),
            ("unchanged", resolved.unchanged),
            ("superseded", resolved.superseded),
        ] {
            self.metrics.updates_resolved.with_label_values(&[outcome]).inc_by(n);
        }
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
    async fn resign(&mut self, current: SignedHead, mut writes: Vec<Write>) -> Result<SignedHead, PublishError> {
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
        self.retired.set(&old);
        Ok(())
    }
}
