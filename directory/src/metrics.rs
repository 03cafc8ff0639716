//! Prometheus metrics of the directory, served at `/metrics`.

use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// Time to publish an epoch: from taking the batch to serving the signed head
    /// (the audit blob is built after).
    pub publish_seconds: Histogram,
    /// Seconds per phase of each epoch (take, wait_blob, versions, vrf, preload, insert,
    /// commit, view), to see which phase a change moved.
    pub publish_phase_seconds: HistogramVec,
    /// The latest epoch's seconds per phase.
    pub epoch_phase_seconds: GaugeVec,
    /// The latest epoch's memory by owner at the end of each phase (`owner` = rss,
    /// peak_rss within the phase, epoch_store, prepare_memo, block_cache, memtables,
    /// write_batch).
    pub epoch_memory_bytes: IntGaugeVec,
    /// Tree nodes the insertion read that the preload had not loaded (0 when the
    /// preload is exact).
    pub epoch_store_fallback_reads: IntCounter,
    /// Tree nodes the epoch's preload read (what staging had not loaded ahead).
    pub preload_nodes: IntCounter,
    /// Tree nodes staging read ahead of their epoch.
    pub staged_nodes: IntCounter,
    /// Labels the prepare stage computed.
    pub prepared_labels: IntCounter,
    /// Labels of published epochs, by where their version and VRF came from
    /// (`source` = prepared or computed).
    pub epoch_labels: IntCounterVec,
    /// Labels waiting for (or with) a prepare worker.
    pub prepare_backlog: IntGauge,
    /// Labels held by the prepare memo.
    pub prepare_memo_labels: IntGauge,
    /// CPU seconds of the prepare stage's threads (VRF and version reads).
    pub prepare_cpu_seconds: Counter,
    /// CPU seconds of the whole process (`/proc/self/stat`), sampled with the above.
    pub process_cpu_seconds: Gauge,
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
    /// `add-checkpoint` requests to each witness, by `result` (cosigned, conflict,
    /// unavailable, refused, bad_response, error).
    pub witness_requests: IntCounterVec,
    /// The log size each witness last co-signed (0: none yet).
    pub witness_cosigned_size: IntGaugeVec,
    /// Unix seconds of each witness's newest co-signature we hold.
    pub witness_cosigned_time: IntGaugeVec,
    /// Leaves in the epoch log.
    pub log_size: IntGauge,
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
                HistogramOpts::new("audit_blob_seconds", "Building and storing an audit blob").buckets(slow.clone()),
            )?,
            publish_phase_seconds: HistogramVec::new(
                HistogramOpts::new("publish_phase_seconds", "Seconds per phase of each epoch").buckets(slow),
                &["phase"],
            )?,
            epoch_phase_seconds: GaugeVec::new(
                Opts::new("epoch_phase_seconds", "The latest epoch's seconds per phase"),
                &["phase"],
            )?,
            epoch_memory_bytes: IntGaugeVec::new(
                Opts::new(
                    "epoch_memory_bytes",
                    "The latest epoch's memory by owner at the end of each phase",
                ),
                &["phase", "owner"],
            )?,
            epoch_store_fallback_reads: IntCounter::new(
                "epoch_store_fallback_reads_total",
                "Tree nodes the insertion read that the preload had not loaded",
            )?,
            preload_nodes: IntCounter::new("preload_nodes_total", "Tree nodes read by the epoch preload")?,
            staged_nodes: IntCounter::new("staged_nodes_total", "Tree nodes read ahead of their epoch by staging")?,
            prepared_labels: IntCounter::new("prepared_labels_total", "Labels the prepare stage computed")?,
            epoch_labels: IntCounterVec::new(
                Opts::new(
                    "epoch_labels_total",
                    "Labels of published epochs, by where their version and VRF came from",
                ),
                &["source"],
            )?,
            prepare_backlog: IntGauge::new("prepare_backlog", "Labels waiting for a prepare worker")?,
            prepare_memo_labels: IntGauge::new("prepare_memo_labels", "Labels held by the prepare memo")?,
            prepare_cpu_seconds: Counter::new(
                "prepare_cpu_seconds_total",
                "CPU seconds of the prepare stage's threads",
            )?,
            process_cpu_seconds: Gauge::new(
                "process_cpu_seconds",
                "CPU seconds of the whole process, sampled with the prepare stage's",
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
            witness_requests: IntCounterVec::new(
                Opts::new(
                    "witness_requests_total",
                    "add-checkpoint requests by witness and result",
                ),
                &["witness", "result"],
            )?,
            witness_cosigned_size: IntGaugeVec::new(
                Opts::new(
                    "witness_cosigned_size",
                    "The epoch log size each witness last co-signed",
                ),
                &["witness"],
            )?,
            witness_cosigned_time: IntGaugeVec::new(
                Opts::new(
                    "witness_cosigned_timestamp_seconds",
                    "Time of each witness's newest co-signature held",
                ),
                &["witness"],
            )?,
            log_size: IntGauge::new("log_size", "Leaves in the epoch log")?,
            registry,
        };
        m.registry.register(Box::new(m.witness_requests.clone()))?;
        m.registry.register(Box::new(m.witness_cosigned_size.clone()))?;
        m.registry.register(Box::new(m.witness_cosigned_time.clone()))?;
        m.registry.register(Box::new(m.log_size.clone()))?;
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
        m.registry.register(Box::new(m.publish_phase_seconds.clone()))?;
        m.registry.register(Box::new(m.epoch_phase_seconds.clone()))?;
        m.registry.register(Box::new(m.epoch_memory_bytes.clone()))?;
        m.registry.register(Box::new(m.epoch_store_fallback_reads.clone()))?;
        m.registry.register(Box::new(m.preload_nodes.clone()))?;
        m.registry.register(Box::new(m.staged_nodes.clone()))?;
        m.registry.register(Box::new(m.prepared_labels.clone()))?;
        m.registry.register(Box::new(m.epoch_labels.clone()))?;
        m.registry.register(Box::new(m.prepare_backlog.clone()))?;
        m.registry.register(Box::new(m.prepare_memo_labels.clone()))?;
        m.registry.register(Box::new(m.prepare_cpu_seconds.clone()))?;
        m.registry.register(Box::new(m.process_cpu_seconds.clone()))?;
        Ok(m)
    }

    /// The prepare stage's series.
    pub fn prepare(&self) -> crate::publisher::prepare::PrepareMetrics {
        crate::publisher::prepare::PrepareMetrics {
            prepared: self.prepared_labels.clone(),
            epoch_labels: self.epoch_labels.clone(),
            backlog: self.prepare_backlog.clone(),
            memo_labels: self.prepare_memo_labels.clone(),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
