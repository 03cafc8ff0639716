//! Prometheus metrics of the directory, served at `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the directory exports, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    registry: Registry,
    /// Newest epoch with a signed head.
    pub latest_epoch: IntGauge,
    /// Accepted updates not yet resolved by an epoch.
    pub queue_depth: IntGauge,
    /// Updates accepted (202) since start.
    pub updates_accepted: IntCounter,
    /// Updates resolved by epochs, by outcome (published, unchanged, superseded).
    pub updates_resolved: IntCounterVec,
    /// Updates akd published in the latest epoch.
    pub epoch_updates: IntGauge,
    /// Time to publish an epoch: akd publish with its commit and head, without the audit blob.
    pub publish_seconds: Histogram,
    /// Time to build and store an epoch's audit blob.
    pub audit_blob_seconds: Histogram,
    /// Size of the latest audit blob.
    pub audit_blob_bytes: IntGauge,
    /// 1 once the publisher refuses to go on after a failed write.
    pub publisher_failed: IntGauge,
    /// HTTP requests by matched route and status code.
    pub http_requests: IntCounterVec,
    /// HTTP latency by matched route.
    pub http_seconds: HistogramVec,
    /// Read requests refused by the rate limit (429).
    pub http_rate_limited: IntCounter,
    /// Requests refused because every slot was taken (503).
    pub http_shed: IntCounter,
    /// Proofs that failed the server's own check (`verify_proofs`).
    pub proofs_rejected: IntCounter,
    /// Live bytes on disk by column family (SST and blob files), after each epoch:
    /// what the tree, the value states and the audit blobs cost.
    pub storage_bytes: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("kt_directory".into()), None)?;
        let slow = vec![0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
        let m = Metrics {
            latest_epoch: IntGauge::new("latest_epoch", "Newest epoch with a signed head")?,
            queue_depth: IntGauge::new("queue_depth", "Accepted updates waiting for an epoch")?,
            updates_accepted: IntCounter::new("updates_accepted_total", "Updates accepted with 202")?,
            updates_resolved: IntCounterVec::new(
                Opts::new("updates_resolved_total", "Updates resolved by epochs, by outcome"),
                &["outcome"],
            )?,
            epoch_updates: IntGauge::new("epoch_updates", "Updates akd published in the latest epoch")?,
            publish_seconds: Histogram::with_opts(
                HistogramOpts::new("publish_seconds", "akd publish, commit and head signing").buckets(slow.clone()),
            )?,
            audit_blob_seconds: Histogram::with_opts(
                HistogramOpts::new("audit_blob_seconds", "Building and storing an audit blob").buckets(slow),
            )?,
            audit_blob_bytes: IntGauge::new("audit_blob_bytes", "Size of the latest audit blob")?,
            publisher_failed: IntGauge::new("publisher_failed", "1 when the publisher refuses to go on")?,
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests by route and status"),
                &["route", "status"],
            )?,
            http_seconds: HistogramVec::new(
                HistogramOpts::new("http_request_seconds", "HTTP request latency by route"),
                &["route"],
            )?,
            proofs_rejected: IntCounter::new(
                "proofs_rejected_total",
                "Proofs that failed the server's own check (verify_proofs) and were not served",
            )?,
            http_rate_limited: IntCounter::new("http_rate_limited_total", "Read requests refused by the rate limit")?,
            http_shed: IntCounter::new(
                "http_shed_total",
                "Requests refused with 503 because all slots were busy",
            )?,
            storage_bytes: IntGaugeVec::new(
                Opts::new(
                    "storage_bytes",
                    "Live bytes on disk by column family, after the latest epoch",
                ),
                &["cf"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.latest_epoch.clone()))?;
        m.registry.register(Box::new(m.queue_depth.clone()))?;
        m.registry.register(Box::new(m.updates_accepted.clone()))?;
        m.registry.register(Box::new(m.updates_resolved.clone()))?;
        m.registry.register(Box::new(m.epoch_updates.clone()))?;
        m.registry.register(Box::new(m.publish_seconds.clone()))?;
        m.registry.register(Box::new(m.audit_blob_seconds.clone()))?;
        m.registry.register(Box::new(m.audit_blob_bytes.clone()))?;
        m.registry.register(Box::new(m.publisher_failed.clone()))?;
        m.registry.register(Box::new(m.http_requests.clone()))?;
        m.registry.register(Box::new(m.http_seconds.clone()))?;
        m.registry.register(Box::new(m.http_rate_limited.clone()))?;
        m.registry.register(Box::new(m.http_shed.clone()))?;
        m.registry.register(Box::new(m.proofs_rejected.clone()))?;
        m.registry.register(Box::new(m.storage_bytes.clone()))?;
        Ok(m)
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
