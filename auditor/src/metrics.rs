//! Prometheus metrics of the auditor, served at `/metrics`.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric the auditor exports, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    registry: Registry,
    /// Newest verified and co-signed epoch.
    pub last_verified_epoch: IntGauge,
    /// Newest epoch the directory has shown a validly signed head for.
    pub last_seen_epoch: IntGauge,
    /// Epochs seen but not yet verified.
    pub lag_epochs: IntGauge,
    /// Time in akd's append-only verification per epoch.
    pub verify_seconds: Histogram,
    /// Size of the latest verified proof.
    pub proof_bytes: IntGauge,
    /// Proof bytes verified since start.
    pub proof_bytes_total: IntCounter,
    /// Evidence recorded, by kind.
    pub evidence: IntCounterVec,
    /// Failed requests to the directory (network, 5xx, missing proofs).
    pub fetch_errors: IntCounter,
    /// Answers that prove nothing against this log, by what was wrong (`bad_signature`,
    /// `undecodable_proof`, `invalid_proof_refetched`, `other_namespace`): retried,
    /// never evidence.
    pub unauthenticated: IntCounterVec,
    /// 0 ok, 1 lagging, 2 failed.
    pub state: IntGauge,
    /// `add-checkpoint` requests by the status answered.
    pub witness_requests: IntCounterVec,
    /// The epoch-log size last co-signed as a witness.
    pub witness_cosigned_size: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("kt_auditor".into()), None)?;
        let m = Metrics {
            last_verified_epoch: IntGauge::new("last_verified_epoch", "Newest verified and co-signed epoch")?,
            last_seen_epoch: IntGauge::new("last_seen_epoch", "Newest epoch with a validly signed directory head")?,
            lag_epochs: IntGauge::new("lag_epochs", "Epochs seen but not yet verified")?,
            verify_seconds: Histogram::with_opts(
                HistogramOpts::new("verify_seconds", "akd append-only verification per epoch")
                    .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]),
            )?,
            proof_bytes: IntGauge::new("proof_bytes", "Size of the latest verified proof")?,
            proof_bytes_total: IntCounter::new("proof_bytes_total", "Proof bytes verified since start")?,
            evidence: IntCounterVec::new(Opts::new("evidence_total", "Evidence recorded, by kind"), &["kind"])?,
            fetch_errors: IntCounter::new("fetch_errors_total", "Failed requests to the directory")?,
            unauthenticated: IntCounterVec::new(
                Opts::new(
                    "unauthenticated_answers_total",
                    "Answers nobody signed that could not be used (retried, not evidence), by what was wrong",
                ),
                &["what"],
            )?,
            state: IntGauge::new("state", "0 ok, 1 lagging, 2 failed")?,
            witness_requests: IntCounterVec::new(
                Opts::new(
                    "witness_requests_total",
                    "add-checkpoint requests by the status answered",
                ),
                &["status"],
            )?,
            witness_cosigned_size: IntGauge::new("witness_cosigned_size", "The epoch-log size last co-signed")?,
            registry,
        };
        m.registry.register(Box::new(m.witness_requests.clone()))?;
        m.registry.register(Box::new(m.witness_cosigned_size.clone()))?;
        m.registry.register(Box::new(m.last_verified_epoch.clone()))?;
        m.registry.register(Box::new(m.last_seen_epoch.clone()))?;
        m.registry.register(Box::new(m.lag_epochs.clone()))?;
        m.registry.register(Box::new(m.verify_seconds.clone()))?;
        m.registry.register(Box::new(m.proof_bytes.clone()))?;
        m.registry.register(Box::new(m.proof_bytes_total.clone()))?;
        m.registry.register(Box::new(m.evidence.clone()))?;
        m.registry.register(Box::new(m.fetch_errors.clone()))?;
        m.registry.register(Box::new(m.unauthenticated.clone()))?;
        m.registry.register(Box::new(m.state.clone()))?;
        Ok(m)
    }

    /// Shows `state` in the `state` gauge (0 ok, 1 lagging, 2 failed).
    pub fn show_state(&self, state: kt_client::auditor::AuditState) {
        use kt_client::auditor::AuditState;
        self.state.set(match state {
            AuditState::Ok => 0,
            AuditState::Lagging => 1,
            AuditState::Failed => 2,
        });
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
