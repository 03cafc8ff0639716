//! The follow loop: fetch the directory's heads, verify each next epoch, co-sign and
//! persist it, one epoch at a time, and publish evidence when something is wrong.
//!
//! It never co-signs an epoch it has not verified, never skips one, and stops
//! advancing at the first proven misbehaviour. Network trouble is not misbehaviour:
//! it retries with exponential backoff and reports `lagging` with the reason.

use crate::metrics::Metrics;
use crate::status::SharedStatus;
use crate::store::{EpochRecord, Pins, Store, StoreError, blocking};
use crate::verify::{self, Finding, Identity};
use ed25519_dalek::SigningKey;
use kt_client::auditor::{AuditState, Evidence, EvidenceSource};
use kt_client::cosign::Attestation;
use kt_client::head::{SignedHead, unix_ms};
use kt_client::http::{DirectoryClient, HttpError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How the follower paces itself.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// Pause between polls once caught up.
    pub poll_interval: Duration,
    /// Longest backoff after failed requests.
    pub max_backoff: Duration,
    /// Longest the directory may go without a fresh signed head.
    pub max_head_age: Duration,
    /// Largest proof fetched (memory is bounded by one proof at a time).
    pub max_proof_bytes: u64,
    /// How far in the future a signed head may be dated before it is evidence.
    pub max_clock_skew: Duration,
}

/// Why a step did not complete.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// The directory could not be asked (or answered nonsense that proves nothing).
    #[error(transparent)]
    Transient(#[from] Transient),
    /// The directory misbehaved; the finding is published.
    #[error("{}", .0.reason)]
    Misbehaviour(Box<Finding>),
    /// Our own database failed: stop rather than guess.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A failed step that proves nothing: retried with backoff, counted, and shown as
/// lagging.
#[derive(Debug, thiserror::Error)]
enum Transient {
    /// The directory could not be asked.
    #[error("directory unavailable: {0}")]
    Unavailable(#[from] HttpError),
    /// An answer nobody signed, or that does not decode.
    #[error("unusable answer from the directory ({}): {reason}", .what.label())]
    Unusable {
        /// What was wrong with it (the metric label).
        what: Unusable,
        /// The check that refused it.
        reason: String,
    },
    /// The directory does not serve the proof of an epoch it signed.
    #[error("the directory does not serve the proof {name} for epoch {epoch}: {message}")]
    ProofNotServed {
        /// The blob's name.
        name: String,
        /// The epoch.
        epoch: u64,
        /// The directory's message.
        message: String,
    },
    /// The directory answered a head of another epoch than the one asked for.
    #[error("asked the directory for the head of epoch {asked}, got epoch {got}")]
    WrongEpoch {
        /// The epoch asked for.
        asked: u64,
        /// The epoch answered.
        got: u64,
    },
    /// The empty-tree root could not be computed (akd, in memory).
    #[error("computing the empty-tree root: {0}")]
    EmptyRoot(#[source] akd::errors::AkdError),
    /// The co-signature could not be made.
    #[error("co-signing: {0}")]
    Cosign(#[source] kt_client::cosign::CoSignError),
}

impl From<HttpError> for StepError {
    fn from(e: HttpError) -> Self {
        StepError::Transient(Transient::Unavailable(e))
    }
}

impl From<Finding> for StepError {
    fn from(f: Finding) -> Self {
        StepError::Misbehaviour(Box::new(f))
    }
}

/// What made an answer unusable without proving anything (a metric label).
#[derive(Debug, Clone, Copy)]
enum Unusable {
    /// A head whose signature does not verify: anyone on the path can make one.
    BadSignature,
    /// A proof that does not decode (an error page served with a 200, a cut body).
    UndecodableProof,
    /// A proof that decoded but did not verify, and verified when fetched again.
    InvalidProofRefetched,
    /// A validly signed head of another namespace: the same key may sign another log,
    /// and anyone can replay its heads, so it contradicts nothing this log signed.
    OtherNamespace,
}

impl Unusable {
    fn label(self) -> &'static str {
        match self {
            Unusable::BadSignature => "bad_signature",
            Unusable::UndecodableProof => "undecodable_proof",
            Unusable::InvalidProofRefetched => "invalid_proof_refetched",
            Unusable::OtherNamespace => "other_namespace",
        }
    }
}

/// What a successful step achieved.
enum Progress {
    /// Verified an epoch; more may follow at once.
    Advanced,
    /// Nothing new to verify.
    CaughtUp,
}

/// The follower and everything it owns.
#[derive(Debug)]
pub struct Follower {
    /// The directory's read API.
    client: DirectoryClient,
    /// Durable state (the only writer is this follower).
    store: Store,
    /// Co-signs verified epochs.
    key: SigningKey,
    /// The directory key from the operator.
    directory_key: ed25519_dalek::VerifyingKey,
    /// Shared with the HTTP handlers.
    status: SharedStatus,
    /// Exported at `/metrics`.
    metrics: Metrics,
    /// Pace and limits.
    config: FollowConfig,
    /// The newest validly signed head seen (for staleness and rollback checks).
    latest_seen: Option<SignedHead>,
}

impl Follower {
    /// A follower; nothing is fetched until [`Follower::run`].
    pub fn new(
        client: DirectoryClient,
        store: Store,
        key: SigningKey,
        directory_key: ed25519_dalek::VerifyingKey,
        status: SharedStatus,
        metrics: Metrics,
        config: FollowConfig,
    ) -> Follower {
        Follower {
            client,
            store,
            key,
            directory_key,
            status,
            metrics,
            config,
            latest_seen: None,
        }
    }

    /// Loads what the store knows into the status (before serving starts).
    pub async fn restore(&mut self) -> Result<(), StoreError> {
        let store = self.store.clone();
        let (pins, last) = blocking(move || Ok((store.pins()?, store.last_epoch()?))).await?;
        if let Some(last) = last {
            self.note_verified(&last);
            self.latest_seen = Some(last.head.clone());
            self.status.update(|s| {
                s.last_seen_epoch = Some(last.head.head.epoch);
                s.last_head_timestamp_ms = Some(last.head.head.timestamp_ms);
            });
        }
        if let Some(pins) = pins {
            self.status.update(|s| s.namespace = pins.namespace);
        }
        let store = self.store.clone();
        let evidence = blocking(move || store.evidence()).await?;
        if let Some(proof) = evidence.iter().find(|e| e.kind.halts()) {
            let reason = format!("evidence #{} ({:?}): {}", proof.id, proof.kind, proof.reason);
            self.set_state(AuditState::Failed, reason);
        }
        Ok(())
    }

    fn set_state(&self, state: AuditState, reason: String) {
        // `failed` is final: the gauge shows the state the status actually holds.
        self.status.set_state(state, reason);
        self.metrics.show_state(self.status.get().state);
    }

    fn note_verified(&self, record: &EpochRecord) {
        let h = &record.head.head;
        self.metrics.last_verified_epoch.set(h.epoch as i64);
        self.status.update(|s| {
            s.last_verified_epoch = Some(h.epoch);
            s.last_verified_root = Some(hex::encode(h.root));
        });
        self.update_lag();
    }

    fn update_lag(&self) {
        self.metrics.lag_epochs.set(self.status.get().lag() as i64);
    }

    /// Follows the directory until `shutdown` turns true. After proven misbehaviour
    /// or a failed write of its own, it stops advancing and only waits for shutdown.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if self.status.get().state == AuditState::Failed {
            tracing::error!(reason = %self.status.get().reason, "not advancing: misbehaviour is on record");
            let _ = shutdown.wait_for(|&s| s).await;
            return;
        }
        let mut delay = Duration::ZERO;
        let mut backoff = self.config.poll_interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|&s| s) => return,
            }
            if self.status.failed() {
                tracing::error!(reason = %self.status.get().reason, "not advancing: misbehaviour is on record");
                break;
            }
            match self.step().await {
                Ok(progress) => {
                    backoff = self.config.poll_interval;
                    delay = match progress {
                        Progress::Advanced => Duration::ZERO,
                        Progress::CaughtUp => self.config.poll_interval,
                    };
                    if let Err(e) = self.check_fresh(matches!(progress, Progress::CaughtUp)).await {
                        self.halt(e).await;
                        break;
                    }
                }
                Err(StepError::Transient(why)) => {
                    let reason = why.to_string();
                    self.metrics.fetch_errors.inc();
                    tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "directory step failed");
                    self.set_state(AuditState::Lagging, reason);
                    delay = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    if let Err(e) = self.check_fresh(false).await {
                        self.halt(e).await;
                        break;
                    }
                }
                Err(e) => {
                    self.halt(e).await;
                    break;
                }
            }
        }
        let _ = shutdown.wait_for(|&s| s).await;
    }

    /// Publishes the reason for stopping and marks the auditor failed.
    async fn halt(&self, e: StepError) {
        match e {
            StepError::Misbehaviour(finding) => {
                let reason = finding.reason.clone();
                let kind = finding.kind;
                match self.record(*finding).await {
                    Ok(id) => {
                        tracing::error!(id, ?kind, %reason, "misbehaviour: evidence published; not advancing");
                        self.set_state(AuditState::Failed, format!("evidence #{id} ({kind:?}): {reason}"));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, %reason, "misbehaviour, and recording it failed");
                        self.set_state(AuditState::Failed, format!("{reason} (recording it failed: {e})"));
                    }
                }
            }
            StepError::Store(e) => {
                tracing::error!(error = %e, "auditor storage failed; not advancing");
                self.set_state(AuditState::Failed, format!("auditor storage failed: {e}"));
            }
            StepError::Transient(why) => self.set_state(AuditState::Lagging, why.to_string()),
        }
    }

    /// Stores a finding as evidence; returns its id.
    async fn record(&self, f: Finding) -> Result<u64, StoreError> {
        let (blob_name, blob) = match f.blob {
            Some((name, bytes)) => (Some(name), Some(bytes)),
            None => (None, None),
        };
        let evidence = Evidence {
            id: 0,
            kind: f.kind,
            epoch: f.epoch,
            detected_at_ms: unix_ms(),
            source: EvidenceSource::Auditor,
            reason: f.reason,
            heads: f.heads,
            blob_name,
        };
        let kind = evidence.kind;
        let store = self.store.clone();
        let (id, created) = blocking(move || store.add_evidence(evidence, blob.as_deref())).await?;
        if created {
            self.metrics.evidence.with_label_values(&[&format!("{kind:?}")]).inc();
        }
        Ok(id)
    }

    /// After a step: report a stale directory (evidence once per stale head), or `ok`
    /// when caught up and fresh.
    async fn check_fresh(&self, caught_up: bool) -> Result<(), StepError> {
        let max_ms = self.config.max_head_age.as_millis() as u64;
        if let Some(latest) = &self.latest_seen
            && let Some(f) = verify::stale(latest, unix_ms(), max_ms)
        {
            let reason = f.reason.clone();
            let id = self.record(f).await?;
            self.set_state(AuditState::Lagging, format!("evidence #{id} (Stale): {reason}"));
            return Ok(());
        }
        if caught_up {
            self.set_state(AuditState::Ok, String::new());
        }
        Ok(())
    }

    /// Who the directory must be. A pin that does not decode is our own store's
    /// corruption: it stops the auditor (never a skipped check).
    fn identity(&self, pins: Option<&Pins>) -> Result<Identity, StepError> {
        let vrf_key_hash = match pins {
            Some(p) => Some(
                kt_client::head::hex_array(&p.vrf_key_hash, "pinned VRF key hash")
                    .map_err(|source| StepError::Store(StoreError::Pins { source }))?,
            ),
            None => None,
        };
        Ok(Identity {
            key: self.directory_key,
            namespace: pins.map(|p| p.namespace.clone()),
            vrf_key_hash,
        })
    }

    /// Checks a head from the directory: a bad signature proves nothing (anyone on the
    /// path can make one) and is a counted, retried failure; a validly signed head of
    /// another identity, or dated far in the future, is evidence.
    fn check_head(&self, identity: &Identity, head: &SignedHead) -> Result<(), StepError> {
        match identity.check(head) {
            Ok(()) => {}
            Err(f) if f.kind == kt_client::auditor::EvidenceKind::BadSignature => {
                return Err(self.unusable(Unusable::BadSignature, f.reason));
            }
            Err(f)
                if f.kind == kt_client::auditor::EvidenceKind::WrongIdentity
                    && identity.namespace.as_ref().is_some_and(|n| *n != head.head.namespace) =>
            {
                return Err(self.unusable(Unusable::OtherNamespace, f.reason));
            }
            Err(f) => return Err(f.into()),
        }
        let skew = u64::try_from(self.config.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        if let Some(f) = verify::future(head, unix_ms(), skew) {
            return Err(f.into());
        }
        Ok(())
    }

    /// Counts an unusable answer and turns it into a retried failure.
    fn unusable(&self, what: Unusable, reason: String) -> StepError {
        self.metrics.unauthenticated.with_label_values(&[what.label()]).inc();
        StepError::Transient(Transient::Unusable { what, reason })
    }

    /// The proof of `head`, verified. A proof that does not decode is an unusable
    /// answer; one that decodes but does not verify is fetched again, and only if the
    /// fresh copy fails too is it evidence (with its bytes and the signed head, for
    /// anyone to check offline).
    async fn verified_proof(&self, head: &SignedHead) -> Result<(verify::ProofStats, Vec<u8>), StepError> {
        let epoch = head.head.epoch;
        let name = verify::blob_name(head);
        let mut first_failure = None;
        for attempt in 0..2 {
            let fetched = if attempt == 0 {
                self.client.audit_blob(&name, self.config.max_proof_bytes).await
            } else {
                self.client
                    .audit_blob_uncached(&name, self.config.max_proof_bytes)
                    .await
            };
            let blob = match fetched {
                Ok(blob) => blob,
                Err(HttpError::NotFound(m)) => {
                    return Err(Transient::ProofNotServed {
                        name,
                        epoch,
                        message: m,
                    }
                    .into());
                }
                Err(e) => return Err(e.into()),
            };
            match verify::check_proof(head, blob).await {
                Ok(verified) => {
                    if let Some(reason) = first_failure {
                        // The first copy was damaged on its way: nothing the directory signed.
                        let _ = self.unusable(Unusable::InvalidProofRefetched, reason);
                    }
                    return Ok(verified);
                }
                Err(f) if f.reason.starts_with(verify::UNDECODABLE) => {
                    return Err(self.unusable(Unusable::UndecodableProof, f.reason));
                }
                Err(f) if attempt == 0 => {
                    tracing::warn!(epoch, reason = %f.reason, "proof does not verify; fetching it again");
                    first_failure = Some(f.reason);
                }
                Err(f) => return Err(f.into()),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// One unit of progress: at most one epoch verified.
    async fn step(&mut self) -> Result<Progress, StepError> {
        let store = self.store.clone();
        let (pins, last) = blocking(move || Ok((store.pins()?, store.last_epoch()?))).await?;
        let identity = self.identity(pins.as_ref())?;
        let latest = self.client.latest_head().await?;
        self.check_head(&identity, &latest)?;
        let now = unix_ms();
        self.status.update(|s| {
            s.last_contact_ms = Some(now);
            s.last_seen_epoch = Some(s.last_seen_epoch.unwrap_or(0).max(latest.head.epoch));
            s.last_head_timestamp_ms = Some(latest.head.timestamp_ms);
        });
        self.metrics.last_seen_epoch.set(latest.head.epoch as i64);
        if self
            .latest_seen
            .as_ref()
            .is_none_or(|seen| latest.head.timestamp_ms >= seen.head.timestamp_ms)
        {
            self.latest_seen = Some(latest.clone());
        }
        self.update_lag();

        let (Some(pins), Some(last)) = (pins, last) else {
            return self.genesis(&latest).await;
        };
        if latest.head.epoch <= last.head.head.epoch {
            if let Some(f) = verify::rollback(&last.head, &latest) {
                return Err(f.into());
            }
            let e = latest.head.epoch;
            let store = self.store.clone();
            if let Some(seen) = blocking(move || store.epoch(e)).await?
                && let Some(f) = verify::fork_between(&seen.head, &latest)
            {
                return Err(f.into());
            }
            return Ok(Progress::CaughtUp);
        }

        let epoch = last.head.head.epoch + 1;
        // The epoch's head as first signed (the epoch log's leaf), even for the latest
        // epoch, whose freshest re-signature `latest` may be.
        let head = self.client.head(epoch).await?;
        self.check_head(&identity, &head)?;
        if head.head.epoch != epoch {
            return Err(Transient::WrongEpoch {
                asked: epoch,
                got: head.head.epoch,
            }
            .into());
        }
        verify::check_chain(&last.head, &head)?;
        let started = Instant::now();
        let (stats, blob) = self.verified_proof(&head).await?;
        let took = started.elapsed();
        let proof_bytes = blob.len() as u64;
        self.metrics.verify_seconds.observe(took.as_secs_f64());
        self.metrics.proof_bytes.set(proof_bytes as i64);
        self.metrics.proof_bytes_total.inc_by(proof_bytes);

        let record = self.cosign(&pins.namespace, head, took, proof_bytes, stats.updates)?;
        let store = self.store.clone();
        let rec = record.clone();
        blocking(move || store.commit_epoch(&rec, &blob)).await?;
        tracing::info!(
            epoch,
            updates = stats.updates,
            proof_bytes,
            verify_ms = took.as_millis() as u64,
            "verified and co-signed"
        );
        self.note_verified(&record);
        Ok(if epoch < latest.head.epoch {
            Progress::Advanced
        } else {
            Progress::CaughtUp
        })
    }

    /// First start: derive the empty root, verify and co-sign epoch 0, pin identity.
    async fn genesis(&mut self, latest: &SignedHead) -> Result<Progress, StepError> {
        let empty = verify::empty_root().await.map_err(Transient::EmptyRoot)?;
        // Epoch 0's head as first signed (the epoch log's first leaf).
        let head = self.client.head(0).await?;
        self.check_head(&self.identity(None)?, &head)?;
        verify::check_genesis(&head, &empty)?;
        let pins = Pins {
            directory_key: hex::encode(self.directory_key.as_bytes()),
            namespace: head.head.namespace.clone(),
            vrf_key_hash: hex::encode(head.head.vrf_key_hash),
            genesis_root: hex::encode(empty),
        };
        let record = self.cosign(&pins.namespace, head, Duration::ZERO, 0, 0)?;
        let store = self.store.clone();
        let (p, rec) = (pins.clone(), record.clone());
        blocking(move || store.commit_genesis(&p, &rec)).await?;
        tracing::info!(namespace = %pins.namespace, root = %pins.genesis_root, "verified and co-signed epoch 0");
        self.status.update(|s| s.namespace = pins.namespace.clone());
        self.note_verified(&record);
        Ok(if latest.head.epoch > 0 {
            Progress::Advanced
        } else {
            Progress::CaughtUp
        })
    }

    fn cosign(
        &self,
        namespace: &str,
        head: SignedHead,
        took: Duration,
        proof_bytes: u64,
        updates: u64,
    ) -> Result<EpochRecord, StepError> {
        let now = unix_ms();
        let (cosignature, plexi) = Attestation {
            namespace: namespace.to_owned(),
            epoch: head.head.epoch,
            root: head.head.root,
            previous_root: head.head.previous_root,
            timestamp_ms: now,
        }
        .sign(&self.key)
        .map_err(Transient::Cosign)?;
        Ok(EpochRecord {
            head,
            cosignature,
            plexi,
            verified_at_ms: now,
            verify_ms: took.as_millis() as u64,
            proof_bytes,
            updates,
        })
    }
}
