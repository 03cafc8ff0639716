//! The run report: one JSON file per run, a Markdown rendering of it, and the summary
//! of several runs (`kt-load summary`).

use crate::SummaryArgs;
use crate::baseline::Baseline;
use crate::readers::ReadStats;
use crate::yardstick::PublishYardstick;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One `kt-load run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Unix seconds at the start.
    pub started_unix: u64,
    /// The machine it ran on.
    pub machine: Machine,
    /// `git describe` of the tree, if known.
    pub git: Option<String>,
    /// Entries in the directory during the measured epochs.
    pub entries: u64,
    /// Rotations per measured epoch.
    pub updates_per_epoch: u64,
    /// Lookups per second offered during each publish (`None`: saturating clients).
    #[serde(default)]
    pub publish_read_rate: Option<f64>,
    /// Building the entries (only what this run added).
    pub build: Build,
    /// akd's in-memory lookup rate, the yardstick for HTTP lookups.
    pub baseline: Option<Baseline>,
    /// akd's in-memory publish of one epoch of the same size, the yardstick for ours.
    #[serde(default)]
    pub publish_yardstick: Option<PublishYardstick>,
    /// HTTP lookups while the directory is idle (after a warm-up).
    pub idle_reads: ReadStats,
    /// The measured epochs.
    pub epochs: Vec<EpochReport>,
    /// The directory's store: `rocksdb` or `mysql` (reports before it were RocksDB).
    #[serde(default = "rocksdb")]
    pub storage: String,
    /// Bytes of the RocksDB directory on disk after the run (every file: SSTs, blob
    /// files, WAL, logs); for MySQL, the tables' data and index bytes.
    pub db_dir_bytes: u64,
    /// Live bytes by column family after the run, memtables flushed.
    pub disk: Disk,
    /// The same after a full compaction (`--compact`).
    pub disk_compacted: Option<Disk>,
}

fn rocksdb() -> String {
    "rocksdb".into()
}

/// Live bytes on disk by column family, and per entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Disk {
    /// Bytes by column family.
    pub bytes: BTreeMap<String, u64>,
    /// Tree nodes and value states, per entry.
    pub tree_bytes_per_entry: f64,
    /// Everything but the audit blobs, per entry.
    pub bytes_per_entry_without_blobs: f64,
    /// Everything, per entry.
    pub bytes_per_entry_with_blobs: f64,
    /// Tree nodes and value states, per stored version (entries plus rotations).
    pub tree_bytes_per_version: f64,
}

impl Disk {
    /// Per-entry figures of `bytes` for `entries` entries holding `versions` versions.
    pub fn new(bytes: BTreeMap<String, u64>, entries: u64, versions: u64) -> Disk {
        let cf = |name: &str| bytes.get(name).copied().unwrap_or(0) as f64;
        let all: f64 = bytes.values().map(|&b| b as f64).sum();
        let tree = cf("tree_nodes") + cf("value_states");
        let (n, v) = (entries.max(1) as f64, versions.max(1) as f64);
        Disk {
            tree_bytes_per_entry: tree / n,
            // `+ 0.0` turns an empty database's -0 into 0.
            bytes_per_entry_without_blobs: (all - cf("audit_blobs")) / n + 0.0,
            bytes_per_entry_with_blobs: all / n,
            tree_bytes_per_version: tree / v,
            bytes,
        }
    }

    fn markdown(&self, what: &str) -> String {
        let cfs: Vec<String> = self
            .bytes
            .iter()
            .map(|(cf, b)| format!("{cf} {:.1} MB", *b as f64 / MB))
            .collect();
        format!(
            "Disk {what}: tree {:.0} B/entry ({:.0} B/version), {:.0} B/entry without audit blobs, \
             {:.0} B/entry with them ({}).\n",
            self.tree_bytes_per_entry,
            self.tree_bytes_per_version,
            self.bytes_per_entry_without_blobs,
            self.bytes_per_entry_with_blobs,
            cfs.join(", ")
        )
    }
}

/// The machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores available.
    pub cores: usize,
    /// Memory, GiB.
    pub mem_gib: f64,
}

impl Machine {
    /// Reads `/proc`.
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".into());
        let mem_gib = crate::directory::proc_status_kib("/proc/meminfo", "MemTotal:")
            .map(|k| k as f64 / (1 << 20) as f64)
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            mem_gib,
        }
    }
}

/// The build phase of this run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Build {
    /// Entries added by this run (0 when the directory was already built).
    pub added: u64,
    /// Epochs it took.
    pub epochs: u64,
    /// Seconds, intake and publishing.
    pub secs: f64,
}

/// One measured epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochReport {
    /// The epoch.
    pub epoch: u64,
    /// Rotations sent.
    pub updates: u64,
    /// Rotations akd published (unchanged values are skipped).
    pub published: u64,
    /// Leaves the append-only proof inserts (a rotation adds its new version's leaf
    /// and marks the old one stale, two leaves).
    pub proof_leaves: u64,
    /// Queueing the updates through `POST /v1/updates`, seconds.
    pub intake_secs: f64,
    /// Seconds the intake was spread over (0: as fast as accepted).
    #[serde(default)]
    pub spread_secs: f64,
    /// After the intake, seconds until the prepare stage had no backlog.
    #[serde(default)]
    pub prepare_wait_secs: f64,
    /// CPU seconds of the prepare stage's threads from the intake's start to the
    /// epoch (its VRF evaluations and version reads).
    #[serde(default)]
    pub prepare_cpu_secs: f64,
    /// CPU seconds of the directory during the publish, without its HTTP threads'
    /// (the lookups'): the publish's own CPU, RocksDB's background work included.
    #[serde(default)]
    pub publish_cpu_secs: f64,
    /// CPU seconds of the directory's HTTP threads during the publish (the lookups).
    #[serde(default)]
    pub lookup_cpu_secs: f64,
    /// CPU seconds of the directory while the audit blob was built after the publish.
    #[serde(default)]
    pub blob_cpu_secs: f64,
    /// Labels of the epoch the prepare stage had ready.
    #[serde(default)]
    pub prepared_labels: u64,
    /// Labels the epoch computed itself.
    #[serde(default)]
    pub computed_labels: u64,
    /// Tree nodes the insertion read that the preload had not loaded.
    #[serde(default)]
    pub fallback_reads: u64,
    /// Seconds per publish phase (server metric).
    #[serde(default)]
    pub phases: BTreeMap<String, f64>,
    /// Memory by owner at the end of each phase, bytes (server metric).
    #[serde(default)]
    pub memory: BTreeMap<String, BTreeMap<String, u64>>,
    /// The directory's peak resident memory from the publish through its audit blob.
    #[serde(default)]
    pub peak_rss_with_blob_bytes: u64,
    /// akd publish, commit and signed head, seconds (server metric).
    pub publish_secs: f64,
    /// Building and storing the audit blob, seconds (server metric).
    pub audit_blob_secs: f64,
    /// `POST /v1/epochs` as the operator saw it, seconds.
    pub epoch_wall_secs: f64,
    /// Updates per second over `publish_secs + audit_blob_secs`.
    pub updates_per_sec: f64,
    /// Size of the audit blob.
    pub audit_blob_bytes: u64,
    /// The auditor's verification of the blob, seconds.
    pub auditor_verify_secs: f64,
    /// The auditor's peak resident memory while verifying, bytes.
    pub auditor_peak_rss_bytes: u64,
    /// The directory process's peak resident memory during the epoch, bytes.
    pub publisher_peak_rss_bytes: u64,
    /// Live bytes on disk after the epoch, from the server's metrics (memtables not
    /// yet flushed are not counted).
    pub disk: Disk,
    /// Versions stored (entries plus every rotation so far).
    pub versions: u64,
    /// HTTP lookups while this epoch was published.
    pub reads: ReadStats,
}

const MB: f64 = 1e6;

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0u32), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / f64::from(n) }
}

impl RunReport {
    /// Mean of `f` over the measured epochs.
    pub fn mean(&self, f: impl Fn(&EpochReport) -> f64) -> f64 {
        mean(self.epochs.iter().map(f))
    }

    /// The run as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "# kt-load: {} entries, {} rotations per epoch\n\nMachine: {} ({} cores, {:.0} GiB). Tree: {}.\n",
            self.entries,
            self.updates_per_epoch,
            m.cpu,
            m.cores,
            m.mem_gib,
            self.git.as_deref().unwrap_or("unknown commit")
        );
        if self.build.added > 0 {
            let _ = writeln!(
                s,
                "Build: {} entries added in {} epochs, {:.0} s ({:.0} entries/s).\n",
                self.build.added,
                self.build.epochs,
                self.build.secs,
                self.build.added as f64 / self.build.secs.max(1e-9)
            );
        }
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                s,
                "Yardstick: akd in memory, {} entries, {} tasks: {:.0} lookup proofs/s.\n",
                b.entries, b.tasks, b.per_sec
            );
        }
        let r = &self.idle_reads;
        let _ = writeln!(
            s,
            "Idle HTTP lookups ({} clients, {:.0} s): {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, {} errors, proof {:.0} B; \
             the directory used {:.2} cores ({:.0} lookups per core-second), the clients {:.2}.\n",
            r.clients,
            r.secs,
            r.per_sec,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.proof_bytes,
            r.server_cpu_secs / r.secs.max(1e-9),
            r.per_sec * r.secs / r.server_cpu_secs.max(1e-9),
            r.harness_cpu_secs / r.secs.max(1e-9)
        );
        let _ = writeln!(
            s,
            "Lookups during each publish: {}.\n",
            self.publish_read_rate.map_or_else(
                || format!("{} clients as fast as answered", self.idle_reads.clients),
                |r| format!("{r:.0}/s offered by {} clients", self.idle_reads.clients)
            )
        );
        s.push_str(
            "| epoch | updates | publish s | audit blob s | updates/s | blob MB | auditor verify s | auditor peak MB \
             | publisher peak MB | tree B/entry | B/entry w/o blobs | B/entry with blobs | lookups/s | p50 ms | p99 ms | errors |\n",
        );
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for e in &self.epochs {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {} |",
                e.epoch,
                e.published,
                e.publish_secs,
                e.audit_blob_secs,
                e.updates_per_sec,
                e.audit_blob_bytes as f64 / MB,
                e.auditor_verify_secs,
                e.auditor_peak_rss_bytes as f64 / MB,
                e.publisher_peak_rss_bytes as f64 / MB,
                e.disk.tree_bytes_per_entry,
                e.disk.bytes_per_entry_without_blobs,
                e.disk.bytes_per_entry_with_blobs,
                e.reads.per_sec,
                e.reads.p50_ms,
                e.reads.p99_ms,
                e.reads.errors
            );
        }
        s.push_str(&self.pipeline_markdown());
        if self.storage == "mysql" {
            let _ = writeln!(
                s,
                "\nMySQL tables after the run: {:.2} GB (data and indexes, as the server reports them).\n",
                self.db_dir_bytes as f64 / 1e9
            );
            s.push_str(&self.disk.markdown("after the run, ANALYZE TABLE"));
        } else {
            let _ = writeln!(
                s,
                "\nRocksDB directory on disk after the run: {:.2} GB (every file).\n",
                self.db_dir_bytes as f64 / 1e9
            );
            s.push_str(&self.disk.markdown("after the run, memtables flushed"));
        }
        if let Some(d) = &self.disk_compacted {
            s.push('\n');
            s.push_str(&d.markdown("after a full compaction"));
        }
        s
    }
}

/// The phases of the publisher's epoch pipeline, in order.
const PHASES: [&str; 8] = [
    "take",
    "wait_blob",
    "versions",
    "vrf",
    "preload",
    "insert",
    "commit",
    "view",
];
/// The memory owners, in the order they are shown.
const OWNERS: [&str; 9] = [
    "peak_rss",
    "rss",
    "epoch_store",
    "prepare_memo",
    "block_cache",
    "memtables",
    "write_batch",
    "allocated",
    "allocator_resident",
];

impl RunReport {
    /// The pipeline's figures: phases, CPU, the akd yardstick, memory by owner.
    fn pipeline_markdown(&self) -> String {
        let mut s = String::new();
        if let Some(y) = &self.publish_yardstick {
            let _ = writeln!(
                s,
                "\nPublish yardstick: akd's `Directory::publish` in memory (cache on), {} rotations into {} entries: \
                 {:.1} s, {:.1} CPU s ({:.0} us per update), peak {:.2} GB ({:.2} GB before it).\n",
                y.updates,
                y.entries,
                y.publish_secs,
                y.cpu_secs,
                y.cpu_secs * 1e6 / y.updates.max(1) as f64,
                y.peak_rss_bytes as f64 / 1e9,
                y.rss_before_bytes as f64 / 1e9
            );
        }
        if self.epochs.is_empty() {
            return s;
        }
        s.push_str("\nPublish phases, seconds (server metrics), and CPU:\n\n| epoch |");
        for p in PHASES {
            let _ = write!(s, " {p} |");
        }
        s.push_str(
            " publish | audit blob | prepare wait | prepare CPU s | publish CPU s | blob CPU s | CPU us/update \
             | prepared / computed labels | fallback reads |",
        );
        if self.publish_yardstick.is_some() {
            s.push_str(" akd publish / ours | akd CPU / ours |");
        }
        s.push('\n');
        s.push_str(&"|---".repeat(PHASES.len() + 10 + 2 * usize::from(self.publish_yardstick.is_some())));
        s.push_str("|\n");
        for e in &self.epochs {
            let _ = write!(s, "| {} |", e.epoch);
            for p in PHASES {
                let _ = write!(s, " {:.1} |", e.phases.get(p).copied().unwrap_or(0.0));
            }
            let cpu = e.prepare_cpu_secs + e.publish_cpu_secs;
            let _ = write!(
                s,
                " {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} / {} | {} |",
                e.publish_secs,
                e.audit_blob_secs,
                e.prepare_wait_secs,
                e.prepare_cpu_secs,
                e.publish_cpu_secs,
                e.blob_cpu_secs,
                cpu * 1e6 / e.published.max(1) as f64,
                e.prepared_labels,
                e.computed_labels,
                e.fallback_reads
            );
            if let Some(y) = &self.publish_yardstick {
                let _ = write!(
                    s,
                    " {:.2} | {:.2} |",
                    y.publish_secs / e.publish_secs.max(1e-9),
                    (y.cpu_secs / y.updates.max(1) as f64) / (cpu / e.published.max(1) as f64).max(1e-12)
                );
            }
            s.push('\n');
        }
        s.push_str(
            "\nMemory by owner at the end of each phase, MB (`peak_rss`: the highest resident set within the phase):\n",
        );
        for e in &self.epochs {
            let _ = write!(
                s,
                "\nEpoch {} (peak {:.0} MB during the publish, {:.0} MB through its audit blob):\n\n| phase |",
                e.epoch,
                e.publisher_peak_rss_bytes as f64 / MB,
                e.peak_rss_with_blob_bytes as f64 / MB
            );
            for o in OWNERS {
                let _ = write!(s, " {o} |");
            }
            s.push('\n');
            s.push_str(&"|---".repeat(OWNERS.len() + 1));
            s.push_str("|\n");
            for p in PHASES {
                let Some(owners) = e.memory.get(p) else { continue };
                let _ = write!(s, "| {p} |");
                for o in OWNERS {
                    let _ = write!(s, " {:.0} |", owners.get(o).copied().unwrap_or(0) as f64 / MB);
                }
                s.push('\n');
            }
        }
        s
    }
}

/// `kt-load summary`: one row per run, and the chart.
pub fn summary(args: &SummaryArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for path in &args.reports {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let run: RunReport = serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
        runs.push(run);
    }
    runs.sort_by_key(|r| r.entries);
    println!("{}", summary_table(&runs));
    if let Some(svg) = &args.svg {
        std::fs::write(svg, crate::chart::svg(&runs)).with_context(|| format!("writing {}", svg.display()))?;
    }
    Ok(())
}

/// The Markdown table of several runs (means over each run's epochs).
pub fn summary_table(runs: &[RunReport]) -> String {
    let mut s = String::from(
        "| entries | updates/epoch | epochs | publish s | audit blob s | epoch total s | blob MB | auditor verify s \
         | auditor peak MB | publisher peak MB | tree B/entry | B/entry w/o blobs | akd in-memory lookups/s | HTTP lookups/s idle \
         | HTTP lookups/s publishing | p99 ms publishing |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.1} |",
            r.entries,
            r.updates_per_epoch,
            r.epochs.len(),
            r.mean(|e| e.publish_secs),
            r.mean(|e| e.audit_blob_secs),
            r.mean(|e| e.publish_secs + e.audit_blob_secs),
            r.mean(|e| e.audit_blob_bytes as f64) / MB,
            r.mean(|e| e.auditor_verify_secs),
            r.mean(|e| e.auditor_peak_rss_bytes as f64) / MB,
            r.epochs.iter().map(|e| e.publisher_peak_rss_bytes).max().unwrap_or(0) as f64 / MB,
            r.disk.tree_bytes_per_entry,
            r.disk.bytes_per_entry_without_blobs,
            r.baseline
                .as_ref()
                .map_or("-".into(), |b| format!("{:.0} ({} entries)", b.per_sec, b.entries)),
            r.idle_reads.per_sec,
            r.mean(|e| e.reads.per_sec),
            r.epochs.iter().map(|e| e.reads.p99_ms).fold(0.0, f64::max),
        );
    }
    s
}
