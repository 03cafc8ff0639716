//! The directory under test: a `kt-directory serve` child process on loopback, driven
//! through its operator API, with its metrics and its memory read from outside.

use anyhow::{Context, anyhow, bail};
use kt_client::http::{DirectoryClient, OperatorClient};
use kt_client::verify::PinnedKeys;
use kt_client::wire::{EpochResponse, UpdateItem};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Most updates per `POST /v1/updates` (the served config allows it).
pub const UPDATES_PER_REQUEST: usize = 10_000;

/// A running `kt-directory serve`.
#[derive(Debug)]
pub struct Directory {
    /// The process; stopped with SIGTERM by [`Directory::stop`], killed on drop.
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Operator requests (updates and forced epochs), with a day's timeout: a forced
    /// epoch lasts as long as the publish.
    operator: OperatorClient,
    /// Scrapes `/metrics`.
    http: reqwest::Client,
    /// Read API client, as a user's `kt` would use it.
    pub reader: DirectoryClient,
    /// Keys the sampled lookup answers are verified with.
    pub keys: PinnedKeys,
}

/// The metrics `kt-load` reads off `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// `kt_directory_publish_seconds_sum`.
    pub publish_seconds: f64,
    /// `kt_directory_audit_blob_seconds_sum`.
    pub audit_blob_seconds: f64,
    /// `kt_directory_audit_blob_seconds_count`: blobs stored since start.
    pub audit_blobs: u64,
    /// `kt_directory_prepare_backlog`: labels waiting for the prepare stage.
    pub prepare_backlog: u64,
    /// `kt_directory_prepare_cpu_seconds_total`.
    pub prepare_cpu_seconds: f64,
    /// `kt_directory_epoch_labels_total{source}`: labels found prepared / computed.
    pub epoch_labels: HashMap<String, u64>,
    /// `kt_directory_epoch_store_fallback_reads_total`.
    pub fallback_reads: u64,
    /// `kt_directory_epoch_phase_seconds{phase}`: the latest epoch's phases.
    pub phases: HashMap<String, f64>,
    /// `kt_directory_epoch_memory_bytes{phase,owner}`: memory by owner at each phase's end.
    pub memory: HashMap<String, HashMap<String, u64>>,
    /// `kt_directory_audit_blob_bytes`.
    pub audit_blob_bytes: u64,
    /// `kt_directory_updates_resolved_total{outcome="published"}`.
    pub published: u64,
    /// `kt_directory_storage_bytes{cf}`.
    pub storage: HashMap<String, u64>,
}

/// Resolves the `kt-directory` binary: the flag, else next to `kt-load`.
pub fn binary(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    let me = std::env::current_exe().context("locating kt-load")?;
    let sibling = me.with_file_name("kt-directory");
    if !sibling.exists() {
        bail!(
            "{} not found: build it (`cargo build --release -p kt-directory`) or pass --directory-bin",
            sibling.display()
        );
    }
    Ok(sibling)
}

/// Runs `kt-directory init` unless `data_dir` already holds a directory.
pub fn init(bin: &Path, data_dir: &Path) -> anyhow::Result<()> {
    if kt_directory::datadir::DataDir::new(data_dir).manifest().exists() {
        return Ok(());
    }
    let out = Command::new(bin)
        .args(["init", "--namespace", "kt-load", "--data-dir"])
        .arg(data_dir)
        .output()
        .with_context(|| format!("running {} init", bin.display()))?;
    if !out.status.success() {
        bail!("kt-directory init failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Directory {
    /// Starts `serve` on `127.0.0.1:0` with scheduled epochs effectively off (the
    /// harness forces each one), `max_per_epoch` updates per epoch, and its log in
    /// `log`.
    pub async fn start(
        bin: &Path,
        data_dir: &Path,
        out: &Path,
        max_per_epoch: u64,
        block_cache_mib: usize,
        log_filter: &str,
        mysql_url: Option<&str>,
    ) -> anyhow::Result<Directory> {
        let config = out.join("serve.toml");
        std::fs::write(
            &config,
            format!(
                "max_updates_per_request = {UPDATES_PER_REQUEST}\nmax_body_bytes = {}\n",
                16 << 20
            ),
        )?;
        let log = std::fs::File::create(out.join("directory.log"))?;
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--epoch-interval", "86400"])
            .arg("--max-updates-per-epoch")
            .arg(max_per_epoch.to_string())
            .arg("--block-cache-mib")
            .arg(block_cache_mib.to_string())
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir)
            .args(mysql_url.map(|url| ["--mysql-url", url]).into_iter().flatten())
            .env("RUST_LOG", log_filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {} serve", bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the `listening on` line, then keeps draining so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        // Opening a large database (and rebuilding a missing audit blob) takes a while.
        let url = match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "kt-directory serve did not start; see {}",
                    out.join("directory.log").display()
                );
            }
        };
        let token_file = kt_directory::datadir::DataDir::new(data_dir).token();
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading {}", token_file.display()))?
            .trim()
            .to_owned();
        let reader = DirectoryClient::new(&url, Duration::from_secs(30))?;
        // The harness is the operator: it takes the keys from its own server.
        let info = reader.info().await?;
        let key: [u8; 32] = hex::decode(&info.signing_key)?
            .try_into()
            .map_err(|_| anyhow!("signing key is not 32 bytes"))?;
        let keys = PinnedKeys {
            directory_key: ed25519_dalek::VerifyingKey::from_bytes(&key)?,
            vrf_public_key: hex::decode(&info.vrf_public_key)?,
            namespace: info.namespace.clone(),
        };
        let operator = OperatorClient::new(DirectoryClient::new(&url, Duration::from_secs(24 * 3600))?, &token);
        Ok(Directory {
            child,
            url,
            operator,
            http: reqwest::Client::new(),
            reader,
            keys,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Queues `updates` (label, value) with `POST /v1/updates`, [`UPDATES_PER_REQUEST`]
    /// per request, two requests in flight.
    pub async fn post_updates(&self, updates: Vec<UpdateItem>) -> anyhow::Result<()> {
        let mut chunks = updates.chunks(UPDATES_PER_REQUEST).map(<[UpdateItem]>::to_vec);
        let mut inflight = tokio::task::JoinSet::new();
        loop {
            while inflight.len() < 2 {
                let Some(chunk) = chunks.next() else { break };
                let operator = self.operator.clone();
                inflight.spawn(async move { operator.post_updates(&chunk).await });
            }
            match inflight.join_next().await {
                Some(done) => {
                    done?.context("POST /v1/updates")?;
                }
                None => return Ok(()),
            }
        }
    }

    /// Forces an epoch (`POST /v1/epochs`) and returns what it did.
    pub async fn publish(&self) -> anyhow::Result<EpochResponse> {
        self.operator.publish().await.context("POST /v1/epochs")
    }

    /// Reads the figures `kt-load` needs off `/metrics`.
    pub async fn scrape(&self) -> anyhow::Result<Scrape> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .text()
            .await?;
        Ok(parse_metrics(&text))
    }

    /// The server's peak resident memory since start or since the last
    /// [`Directory::reset_peak_rss`], bytes (`VmHWM`).
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        proc_status_kib(&format!("/proc/{}/status", self.pid()), "VmHWM:").map(|k| k * 1024)
    }

    /// Resets the peak to the current resident size (Linux `clear_refs` 5).
    pub fn reset_peak_rss(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").context("resetting the peak RSS")
    }

    /// SIGTERM, then waits for a clean exit (killed after a minute).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("kt-directory exited with {status}");
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("kt-directory did not stop within a minute of SIGTERM")
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `/proc/.../status` field in KiB.
pub fn proc_status_kib(path: &str, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("{field} not in {path}"))
}

/// Picks the figures out of the Prometheus text exposition.
fn parse_metrics(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        match name {
            "kt_directory_publish_seconds_sum" => s.publish_seconds = value,
            "kt_directory_audit_blob_seconds_sum" => s.audit_blob_seconds = value,
            "kt_directory_audit_blob_seconds_count" => s.audit_blobs = value as u64,
            "kt_directory_prepare_backlog" => s.prepare_backlog = value as u64,
            "kt_directory_prepare_cpu_seconds_total" => s.prepare_cpu_seconds = value,
            "kt_directory_epoch_store_fallback_reads_total" => s.fallback_reads = value as u64,
            "kt_directory_audit_blob_bytes" => s.audit_blob_bytes = value as u64,
            "kt_directory_updates_resolved_total{outcome=\"published\"}" => s.published = value as u64,
            _ => {
                let Some((metric, labels)) = name.split_once('{') else {
                    continue;
                };
                let labels = parse_labels(labels.trim_end_matches('}'));
                let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                match metric {
                    "kt_directory_storage_bytes" => {
                        if let Some(cf) = label("cf") {
                            s.storage.insert(cf, value as u64);
                        }
                    }
                    "kt_directory_epoch_labels_total" => {
                        if let Some(source) = label("source") {
                            s.epoch_labels.insert(source, value as u64);
                        }
                    }
                    "kt_directory_epoch_phase_seconds" => {
                        if let Some(phase) = label("phase") {
                            s.phases.insert(phase, value);
                        }
                    }
                    "kt_directory_epoch_memory_bytes" => {
                        if let (Some(phase), Some(owner)) = (label("phase"), label("owner")) {
                            s.memory.entry(phase).or_default().insert(owner, value as u64);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    s
}

/// `a="x",b="y"` as pairs (label values here never hold quotes or commas).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// CPU seconds (user and system) of the live threads of process `pid` whose name
/// starts with one of `prefixes`, from `/proc/PID/task/*/stat`.
pub fn thread_cpu_secs(pid: u32, prefixes: &[&str]) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut secs = 0.0;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        secs += (ticks(11) + ticks(12)) as f64 / 100.0;
    }
    secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_picked_out() {
        let s = parse_metrics(
            "# HELP x\nkt_directory_publish_seconds_sum 12.5\nkt_directory_audit_blob_bytes 1e3\n\
             kt_directory_storage_bytes{cf=\"tree_nodes\"} 4096\nkt_directory_publish_seconds_count 2\n\
             kt_directory_updates_resolved_total{outcome=\"published\"} 7\n\
             kt_directory_epoch_phase_seconds{phase=\"insert\"} 3.5\n\
             kt_directory_epoch_memory_bytes{phase=\"commit\",owner=\"rss\"} 2048\n\
             kt_directory_audit_blob_seconds_count 3\nkt_directory_prepare_backlog 12\n",
        );
        assert_eq!(s.phases.get("insert"), Some(&3.5));
        assert_eq!(s.memory.get("commit").and_then(|m| m.get("rss")), Some(&2048));
        assert_eq!((s.audit_blobs, s.prepare_backlog), (3, 12));
        assert_eq!(s.publish_seconds, 12.5);
        assert_eq!(s.audit_blob_bytes, 1000);
        assert_eq!(s.storage.get("tree_nodes"), Some(&4096));
        assert_eq!(s.published, 7);
    }
}
