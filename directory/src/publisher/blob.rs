//! Audit blobs, built off the publish's critical path.
//!
//! The blob of epoch `e` is akd's append-only proof `e-1 -> e`
//! (`Azks::get_append_only_proof`, what akd's `Directory::audit` runs). It reads the
//! nodes epoch `e` wrote and their unchanged children, which the epoch's frozen store
//! holds, so once the head of `e` is served the blob is built in the background from
//! memory, and the publisher goes on.
//!
//! akd keeps one previous version of each node, so the proof of `e-1 -> e` stays
//! readable from the disk through the commit of `e+1` but not `e+2`; and the store of
//! `e` is the one epoch's copy held. The publisher therefore waits for the blob of `e`
//! before it loads epoch `e+1`'s nodes ([`PendingBlob::finish`]). A blob whose
//! build failed is rebuilt at the next start (akd's own `Directory::audit`).

use super::epoch_store::EpochStore;
use super::heads::epoch_key;
use super::{Failure, PublishError};
use crate::metrics::Metrics;
use crate::storage::{Cf, Store, Write};
use crate::vrf::VrfSecret;
use crate::{AkdCache, KtConfig, open_directory_with};
use akd::local_auditing::AuditBlob;
use akd::storage::StorageManager;
use akd::{AppendOnlyProof, Azks, AzksParallelismConfig};
use kt_client::head::Head;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A blob being built.
#[derive(Debug)]
pub(super) struct PendingBlob {
    /// The blob's end epoch.
    pub(super) epoch: u64,
    task: tokio::task::JoinHandle<Result<(), PublishError>>,
}

impl PendingBlob {
    /// Waits for the build (and its write) to end.
    pub(super) async fn finish(self) -> Result<(), PublishError> {
        let epoch = self.epoch;
        self.task.await.map_err(|e| PublishError::AuditBlob {
            epoch,
            reason: format!("the build task failed: {e}"),
        })?
    }
}

/// What a blob build needs besides the epoch.
#[derive(Debug, Clone)]
pub(super) struct BlobSink {
    /// Where the blob is stored.
    pub(super) storage: Store,
    /// Raised if storing it fails.
    pub(super) failure: Arc<Failure>,
    /// Moved to the blob's epoch once it is stored.
    pub(super) latest_blob_epoch: Arc<AtomicU64>,
    /// Time and size of blobs.
    pub(super) metrics: Metrics,
}

impl BlobSink {
    /// Builds the blob `previous -> head` from the frozen store of `head`'s epoch
    /// (`azks` at that epoch) on a task of its own.
    /// Once it is stored, staging may build on `head`'s epoch (`staging`).
    pub(super) fn spawn(
        &self,
        nodes: EpochStore,
        azks: Azks,
        previous: Head,
        head: Head,
        staging: Arc<tokio::sync::watch::Sender<Option<u64>>>,
    ) -> PendingBlob {
        let sink = self.clone();
        let epoch = head.epoch;
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let manager = StorageManager::new_no_cache(nodes.clone());
            let proof = azks
                .get_append_only_proof::<KtConfig, _>(&manager, previous.epoch, epoch, AzksParallelismConfig::default())
                .await;
            let fallback = nodes.fallback_reads();
            drop(manager);
            drop(nodes);
            let stored = match proof {
                Ok(proof) => sink.store(&previous, &head, proof, started, fallback).await,
                Err(e) => Err(e.into()),
            };
            match &stored {
                Ok(()) => {
                    staging.send_replace(Some(epoch));
                }
                // Said at once, not at the next epoch: a quiet directory may not have one
                // for a long time. The next start rebuilds the blob.
                Err(e) => sink
                    .failure
                    .set(format!("the audit blob of epoch {epoch} was not stored: {e}")),
            }
            stored
        });
        PendingBlob { epoch, task }
    }

    /// Builds the blob `previous -> head` with akd's own `Directory::audit` (its
    /// batched preload from the store): for a blob that a crash or a failed build left
    /// missing, at start-up.
    pub(super) async fn rebuild(
        &self,
        vrf: &VrfSecret,
        cache: AkdCache,
        previous: &Head,
        head: &Head,
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        let dir = open_directory_with(self.storage.clone(), vrf.clone(), cache).await?;
        let proof = dir.audit(previous.epoch, head.epoch).await?;
        drop(dir);
        self.store(previous, head, proof, started, 0).await
    }

    async fn store(
        &self,
        previous: &Head,
        head: &Head,
        proof: AppendOnlyProof,
        started: Instant,
        fallback_reads: u64,
    ) -> Result<(), PublishError> {
        let epoch = head.epoch;
        let blob_err = |reason: String| PublishError::AuditBlob { epoch, reason };
        let single = proof
            .proofs
            .first()
            .ok_or_else(|| blob_err("akd returned no proof".into()))?;
        let blob = AuditBlob::new(previous.root, head.root, epoch, single).map_err(|e| blob_err(format!("{e:?}")))?;
        drop(proof);
        let bytes = blob.data.len();
        if let Err(e) = self
            .storage
            .write(vec![Write::Put(Cf::AuditBlobs, epoch_key(epoch), blob.data)])
            .await
        {
            self.failure
                .set(format!("storing the audit blob of epoch {epoch}: {e}"));
            return Err(e.into());
        }
        self.latest_blob_epoch.fetch_max(epoch, Ordering::SeqCst);
        let elapsed = started.elapsed();
        self.metrics.audit_blob_seconds.observe(elapsed.as_secs_f64());
        self.metrics
            .audit_blob_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        tracing::info!(epoch, bytes, ms = elapsed.as_millis(), fallback_reads, name = %blob.name, "stored audit blob");
        Ok(())
    }
}
