//! `kt-load`: the load harness. It builds a directory of N entries on disk through a
//! real `kt-directory serve` on loopback (resumable), then publishes epochs of B key
//! rotations while concurrent HTTP lookups run, and reports per epoch what publishing,
//! the audit blob, the auditor's verification, the disk and the lookups cost.
//!
//! `scripts/load.sh --entries 1000000` builds what it needs and runs it; see
//! `docs/performance.md` for the figures and how to read them.

mod baseline;
mod chart;
mod directory;
mod epochs;
mod readers;
mod report;
mod verify_blob;
mod yardstick;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "kt-load", version, about = "Load harness of the key-transparency directory")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build (or resume) a directory of N entries, then publish and measure epochs.
    Run(RunArgs),
    /// Markdown table of several runs' JSON reports, and the cost-per-epoch chart.
    Summary(SummaryArgs),
    /// Verify one audit blob as the auditor does and print time and peak memory as JSON
    /// (run by `run` in a child process, so the peak is the auditor's alone).
    #[command(hide = true)]
    VerifyBlob(verify_blob::VerifyBlobArgs),
    /// Measure akd's in-memory `Directory::publish` of one epoch of rotations and print
    /// time, CPU and peak memory as JSON (run by `run` in a child process).
    #[command(hide = true)]
    PublishYardstick(yardstick::YardstickArgs),
}

/// `kt-load run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Data directory of the directory under test (created with `kt-directory init` if
    /// missing; a resumed build continues where it stopped).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Entries (distinct labels) to build before the measured epochs.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: u64,
    /// Key rotations (updates to existing labels) per measured epoch.
    #[arg(long, default_value_t = 200_000)]
    pub updates: u64,
    /// Measured epochs.
    #[arg(long, default_value_t = 3)]
    pub epochs: u64,
    /// New entries per epoch while building.
    #[arg(long, default_value_t = 500_000)]
    pub load_batch: u64,
    /// Concurrent HTTP lookup clients.
    #[arg(long, default_value_t = 8)]
    pub readers: usize,
    /// Seconds of lookups on an idle directory (also the in-memory baseline's length).
    #[arg(long, default_value_t = 20)]
    pub read_secs: u64,
    /// Seconds of lookups before the idle measurement, not recorded: a freshly started
    /// directory reads every node from disk until its caches fill.
    #[arg(long, default_value_t = 10)]
    pub warmup_secs: u64,
    /// Upper bound on the lookups run while an epoch publishes, in seconds (they stop
    /// when the epoch is done).
    #[arg(long, default_value_t = 600)]
    pub max_read_secs: u64,
    /// Lookups per second offered while an epoch publishes (0: as many as the server
    /// answers, which takes CPU from the publisher on a small machine).
    #[arg(long, default_value_t = 0.0)]
    pub publish_read_rate: f64,
    /// Upper bound on the lookups of one read phase.
    #[arg(long, default_value_t = 2_000_000)]
    pub max_reads: u64,
    /// Verify one lookup answer in this many (head signature and akd proof).
    #[arg(long, default_value_t = 50)]
    pub verify_every: u64,
    /// Spread each measured epoch's updates over this many seconds before forcing the
    /// epoch, as they would arrive over an epoch interval (0: queue them at once).
    #[arg(long, default_value_t = 0.0)]
    pub spread_secs: f64,
    /// Longest wait, after queueing, for the directory's prepare stage to catch up
    /// before the epoch is forced anyway.
    #[arg(long, default_value_t = 1800)]
    pub max_prepare_wait_secs: u64,
    /// Entries of the akd in-memory directories the lookup rate and the publish are
    /// compared with (0: skip both). akd in memory needs ~5 KB per entry, and ~10 KB
    /// at the peak of a 200k-rotation publish into 1M entries.
    #[arg(long, default_value_t = 200_000)]
    pub baseline_entries: u64,
    /// RocksDB block cache of the directory, MiB.
    #[arg(long, default_value_t = 1024)]
    pub block_cache_mib: usize,
    /// The directory's log filter (`RUST_LOG`). akd logs every lookup at info, which
    /// would measure the logger; `info,akd=warn,akd::directory=info` adds akd's publish
    /// phases (versions read, VRF done, tree inserted, committed) with timestamps.
    #[arg(long, default_value = "info,akd=warn")]
    pub directory_log: String,
    /// Run the directory on this MySQL-protocol database (`kt-directory serve
    /// --mysql-url`) instead of the data directory's RocksDB. Bytes on disk are then
    /// the server's own table sizes (after `ANALYZE TABLE`).
    #[arg(long, env = "KT_LOAD_MYSQL_URL", hide_env_values = true)]
    pub mysql_url: Option<String>,
    /// After the run, also compact the database fully and report its size again
    /// (minutes at 10M entries).
    #[arg(long)]
    pub compact: bool,
    /// Where the JSON report, its Markdown summary and the server's log go.
    #[arg(long, default_value = "load-results")]
    pub out: PathBuf,
    /// The `kt-directory` binary [default: next to this one].
    #[arg(long)]
    pub directory_bin: Option<PathBuf>,
}

impl RunArgs {
    /// The lookups per second offered during publishes (`None`: saturating clients).
    pub fn offered_read_rate(&self) -> Option<f64> {
        (self.publish_read_rate > 0.0).then_some(self.publish_read_rate)
    }
}

/// `kt-load summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// JSON reports written by `kt-load run`.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Write the cost-per-epoch chart (SVG) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,akd=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => epochs::run(args),
        Command::Summary(args) => report::summary(&args),
        Command::VerifyBlob(args) => verify_blob::main(&args),
        Command::PublishYardstick(args) => yardstick::main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kt-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
