//! A read replica (`kt-directory serve --read-only`): the public read API served from
//! the publisher's store without publishing.
//!
//! The follower loop polls the store for the publisher's latest signed head. On a new
//! epoch it makes the writer's newer data visible ([`Store::catch_up`]: a RocksDB
//! secondary catches up with the primary's files), learns the tree-node lengths that
//! epoch wrote (after reading its head, so none is missed), then builds a **fresh**
//! read view: a new akd `ReadOnlyDirectory` whose
//! cache has only seen this epoch, checked to stand at the head's epoch and root
//! before it is installed. A re-signed head of the same epoch keeps the view's akd
//! reader. akd keeps one previous version of each tree node, so a reader may lag the
//! store by one epoch, not two: a replica cannot hold the publisher back as the
//! publisher holds its own readers, so every proof it serves is checked afterwards
//! against the store's epoch (`http::read::on_view`) and retried on a newer view if
//! the store ran two epochs ahead during the read.

use crate::datadir::Keys;
use crate::epoch_log::EpochLog;
use crate::metrics::Metrics;
use crate::publisher::{Failure, Inconsistency, LATEST_HEAD_KEY, PublishError, ReadView, ServeState, new_read_dir};
use crate::storage::{Backend, Cf, Role, StorageConfig, Store};
use crate::vrf::VrfSecret;
use akd::ecvrf::VRFKeyStorage;
use kt_client::head::{SignedHead, vrf_key_hash};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How to open a replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The publisher's store: its RocksDB directory, or the MySQL database.
    pub backend: Backend,
    /// The publisher's RocksDB directory (RocksDB only).
    pub db_path: PathBuf,
    /// This replica's own directory for the RocksDB secondary instance.
    pub secondary_dir: PathBuf,
    /// RocksDB tuning (the block cache matters most to a replica).
    pub storage: StorageConfig,
}

/// Follows the publisher's epochs and installs read views.
pub struct Replica {
    /// The publisher's store, read-only.
    storage: Store,
    /// The VRF key: proofs carry VRF outputs, so replicas need the secret.
    vrf: VrfSecret,
    /// Heads must verify with this key before they are served.
    signing_key: ed25519_dalek::VerifyingKey,
    /// The namespace every head must carry.
    namespace: String,
    /// blake3 of the VRF public key, which every head must carry.
    vrf_key_hash: [u8; 32],
    /// Publishes new read views to the HTTP layer.
    views: watch::Sender<Arc<ReadView>>,
    /// Newest epoch whose audit blob is stored.
    latest_blob_epoch: Arc<AtomicU64>,
    /// Set when the store contradicts what this replica served (a head going back).
    failure: Arc<Failure>,
    /// Metrics (`kt_directory_latest_epoch` is the epoch served).
    metrics: Metrics,
    /// The epoch log, extended from the stored heads as epochs arrive.
    log: Arc<EpochLog>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("storage", &self.storage)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// What one poll found.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing new.
    Same,
    /// A fresher signature of the served epoch.
    Resigned(u64),
    /// A new epoch is served.
    Advanced(u64),
    /// The store is mid-commit or a view could not be checked: try again next poll.
    NotYet(String),
}

impl Replica {
    /// Opens the publisher's store read-only and installs a view of its latest epoch.
    /// A store no publisher has written, or heads signed by another key, are errors.
    pub async fn open(
        config: ReplicaConfig,
        keys: Keys,
        metrics: Metrics,
    ) -> Result<(Replica, ServeState), PublishError> {
        let role = Role::Replica {
            secondary_dir: config.secondary_dir.clone(),
        };
        let storage = Store::open(&config.backend, config.db_path.clone(), config.storage.clone(), role).await?;
        let vrf_public = keys
            .vrf
            .get_vrf_public_key()
            .await
            .map_err(Inconsistency::VrfKey)?
            .as_bytes()
            .to_vec();
        let signing_key = keys.signing.verifying_key();
        let namespace = keys.manifest.namespace.clone();
        let vrf_hash = vrf_key_hash(&vrf_public);
        let mut view = None;
        // The publisher may be committing right now: a few tries before giving up.
        for _ in 0..5 {
            storage.catch_up().await?;
            let head = read_head(&storage, &signing_key, &namespace, &vrf_hash)
                .await?
                .ok_or_else(|| Inconsistency::ReplicaNoHead {
                    store: storage.describe(),
                })?;
            match checked_view(&storage, &keys.vrf, head).await? {
                Ok(v) => {
                    view = Some(v);
                    break;
                }
                Err(why) => {
                    tracing::info!(%why, "store moved while opening; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let view = view.ok_or(Inconsistency::ReplicaNeverAgreed)?;
        let epoch = view.head.head.epoch;
        let log = Arc::new(EpochLog::open(&storage, &namespace, signing_key, epoch, None).await?);
        let (views, views_rx) = watch::channel(Arc::new(view));
        let failure = Arc::new(Failure::new(metrics.publisher_failed.clone()));
        let replica = Replica {
            storage: storage.clone(),
            vrf: keys.vrf,
            signing_key,
            namespace: namespace.clone(),
            vrf_key_hash: vrf_hash,
            views,
            latest_blob_epoch: Arc::new(AtomicU64::new(0)),
            failure: Arc::clone(&failure),
            metrics,
            log: Arc::clone(&log),
        };
        replica.update_blob_epoch(epoch).await?;
        replica
            .metrics
            .latest_epoch
            .set(i64::try_from(epoch).unwrap_or(i64::MAX));
        let shared = ServeState {
            views: views_rx,
            failure,
            latest_blob_epoch: Arc::clone(&replica.latest_blob_epoch),
            intake: None,
            storage,
            signing_key,
            vrf_public_key: vrf_public,
            namespace,
            log,
        };
        tracing::info!(epoch, store = %replica.storage.describe(), "replica open");
        Ok((replica, shared))
    }

    /// Polls every `poll` until `shutdown`.
    pub async fn run(mut self, poll: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut timer = tokio::time::interval(poll);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = timer.tick() => match self.step().await {
                    Ok(Step::Same) => {}
                    Ok(Step::Resigned(epoch)) => tracing::debug!(epoch, "fresher head"),
                    Ok(Step::Advanced(epoch)) => tracing::info!(epoch, "serving a new epoch"),
                    Ok(Step::NotYet(why)) => tracing::debug!(%why, "new epoch not ready"),
                    Err(e) => tracing::warn!(error = %e, "following the publisher failed; retrying"),
                },
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!("replica follower stopped");
    }

    /// One poll: install a fresher head or a new epoch's view if there is one.
    async fn step(&mut self) -> Result<Step, PublishError> {
        if self.failure.reason().is_some() {
            return Ok(Step::Same);
        }
        self.storage.catch_up().await?;
        let Some(head) = read_head(&self.storage, &self.signing_key, &self.namespace, &self.vrf_key_hash).await? else {
            return Ok(Step::NotYet("no head stored".into()));
        };
        let current = Arc::clone(&self.views.borrow());
        let (now, served) = (&head.head, &current.head.head);
        if now.epoch < served.epoch || (now.epoch == served.epoch && now.root != served.root) {
            self.failure.set(format!(
                "the store's latest head (epoch {}, root {}) contradicts the served one (epoch {}, root {})",
                now.epoch,
                hex::encode(now.root),
                served.epoch,
                hex::encode(served.root)
            ));
            return Ok(Step::Same);
        }
        // The log first: a served epoch is always in it.
        self.log.follow(&self.storage, now.epoch).await?;
        self.metrics
            .log_size
            .set(i64::try_from(self.log.size()).unwrap_or(i64::MAX));
        if now.epoch == served.epoch {
            self.update_blob_epoch(now.epoch).await?;
            if now.timestamp_ms <= served.timestamp_ms {
                return Ok(Step::Same);
            }
            let epoch = now.epoch;
            self.views.send_replace(Arc::new(ReadView {
                head,
                dir: Arc::clone(&current.dir),
            }));
            return Ok(Step::Resigned(epoch));
        }
        let epoch = now.epoch;
        match checked_view(&self.storage, &self.vrf, head).await? {
            Ok(view) => {
                self.views.send_replace(Arc::new(view));
                self.metrics.latest_epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
                self.update_blob_epoch(epoch).await?;
                Ok(Step::Advanced(epoch))
            }
            Err(why) => Ok(Step::NotYet(why)),
        }
    }

    /// Sets the newest stored audit blob's epoch for a served head at `epoch`. Every
    /// blob before the newest head's is stored: the publisher stores an epoch's blob
    /// right after its commit, and rebuilds a missing one at start-up before it
    /// publishes again (as its own `latest_blob_epoch` assumes). Only `epoch`'s own may
    /// still be on its way, so that one is looked up, once it is due.
    async fn update_blob_epoch(&self, epoch: u64) -> Result<(), PublishError> {
        if epoch == 0 || self.latest_blob_epoch.load(Ordering::SeqCst) >= epoch {
            return Ok(());
        }
        let stored = self
            .storage
            .get_raw(Cf::AuditBlobs, epoch.to_be_bytes().to_vec())
            .await?
            .is_some();
        let latest = if stored { epoch } else { epoch - 1 };
        self.latest_blob_epoch.fetch_max(latest, Ordering::SeqCst);
        Ok(())
    }
}

/// The publisher's latest signed head, verified: signature, namespace, VRF key.
async fn read_head(
    storage: &Store,
    key: &ed25519_dalek::VerifyingKey,
    namespace: &str,
    vrf_hash: &[u8; 32],
) -> Result<Option<SignedHead>, PublishError> {
    let Some(bytes) = storage.get_raw(Cf::Meta, LATEST_HEAD_KEY.to_vec()).await? else {
        return Ok(None);
    };
    let head = SignedHead::from_bytes(&bytes)?;
    let h = head
        .verify(key)
        .map_err(|_| Inconsistency::HeadKey { epoch: head.head.epoch })?;
    if h.namespace != namespace || &h.vrf_key_hash != vrf_hash {
        return Err(Inconsistency::HeadIdentity.into());
    }
    Ok(Some(head))
}

/// A fresh read view for `head`, if akd's tree in the store stands at the head's epoch
/// and root (`Err` with the reason if not yet: the head and the tree are written in
/// one commit, so a mismatch means the store moved on between the two reads).
async fn checked_view(
    storage: &Store,
    vrf: &VrfSecret,
    head: SignedHead,
) -> Result<Result<ReadView, String>, PublishError> {
    // After the head was read: the lengths its epoch wrote are all stored by now.
    storage.learn_node_lengths().await?;
    let dir = new_read_dir(storage, vrf).await?;
    let (epoch, root) = {
        let e = dir.get_epoch_hash().await?;
        (e.0, e.1)
    };
    if epoch != head.head.epoch || root != head.head.root {
        return Ok(Err(format!(
            "head is epoch {} but the tree is at epoch {epoch}",
            head.head.epoch
        )));
    }
    Ok(Ok(ReadView {
        head,
        dir: Arc::new(dir),
    }))
}
