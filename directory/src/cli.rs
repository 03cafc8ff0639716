//! The `kt-directory` command line. `main.rs` (and the e2e tests' copy of the binary)
//! call [`main`].

use crate::config::{FileConfig, Overrides, ServeConfig};
use crate::storage::StorageConfig;
use crate::traffic::Traffic;
use crate::vrf::VrfSecret;
use crate::{DataDir, open_rocks_directory, sample};
use akd::ecvrf::VRFKeyStorage;
use akd::{AkdLabel, HistoryParams};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "kt-directory",
    version,
    about = "Key-transparency directory: akd on RocksDB, signed epochs, proof API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory: signing key, VRF key, operator token (owner-only
    /// files). Prints the public keys. Never overwrites existing keys.
    Init(InitArgs),
    /// Run the directory: update intake, an epoch every interval, the proof API.
    Serve(Box<ServeArgs>),
    /// Feed a running directory sample updates over HTTP, force epochs, and verify a
    /// lookup and a history proof of the result.
    SampleTraffic(TrafficArgs),
    /// Publish sample epochs straight into a bare akd store (no server, no heads);
    /// used by the storage crash test.
    PublishSample(DemoArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Data directory to create.
    #[arg(long, env = "KT_DATA_DIR")]
    data_dir: PathBuf,
    /// The directory's namespace, signed into every head (1 to 255 bytes).
    #[arg(long, env = "KT_NAMESPACE")]
    namespace: String,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Data directory made by `kt-directory init`.
    #[arg(long, env = "KT_DATA_DIR")]
    data_dir: PathBuf,
    /// TOML config file (see docs/api.md); flags and KT_* variables win over it.
    #[arg(long, env = "KT_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "KT_LISTEN")]
    listen: Option<SocketAddr>,
    /// Seconds between scheduled epochs [default: 120].
    #[arg(long, env = "KT_EPOCH_INTERVAL")]
    epoch_interval: Option<u64>,
    /// Most updates taken into one epoch; the rest wait [default: 200000].
    #[arg(long, env = "KT_MAX_UPDATES_PER_EPOCH")]
    max_updates_per_epoch: Option<usize>,
    /// RocksDB block cache, MiB [default: 512].
    #[arg(long, env = "KT_BLOCK_CACHE_MIB")]
    block_cache_mib: Option<usize>,
    /// Threads a large batched RocksDB read (the publisher's preloads) is split
    /// across, so that reads missing memory wait on the disk together [default: 16].
    #[arg(long, env = "KT_READ_THREADS")]
    read_threads: Option<usize>,
    /// Nice levels the publisher's threads run below the HTTP API's, so that lookups
    /// go first when both want the CPU (0-19) [default: 5].
    #[arg(long, env = "KT_PUBLISHER_NICE")]
    publisher_nice: Option<i32>,
    /// The publisher's akd record cache bound, MiB, by akd's own estimate of its
    /// records, enforced every 30 s [default: none; the cache is renewed each epoch].
    #[arg(long, env = "KT_AKD_CACHE_MIB")]
    akd_cache_mib: Option<usize>,
    /// How long an entry of the publisher's akd record cache lives, seconds [default: 3600].
    #[arg(long, env = "KT_AKD_CACHE_SECS")]
    akd_cache_secs: Option<u64>,
    /// An auditor of this directory, as URL=KEY (its co-signing key, hex, pinned out of
    /// band; repeatable, or KT_AUDITORS=URL=KEY,URL=KEY). Before publishing, `serve`
    /// refuses to start if an auditor's co-signed head shows a later epoch or another
    /// root than this data directory holds: a restored backup would fork.
    #[arg(long = "auditor", env = "KT_AUDITORS", value_delimiter = ',')]
    auditors: Vec<String>,
    /// Start even if an auditor has verified nothing yet (only for a new auditor: a
    /// `404` is otherwise refused, since anyone on the path can send one).
    #[arg(long)]
    allow_fresh_auditor: bool,
    /// Oldest an auditor's newest co-signature may be at start-up, seconds [default:
    /// 3600]. Raise it to restart after a longer outage.
    #[arg(long, env = "KT_AUDITOR_MAX_AGE")]
    auditor_max_age: Option<u64>,
    /// A private CA (PEM) to trust for the auditors' HTTPS, besides the system's roots.
    #[arg(long, env = "KT_AUDITOR_CA_FILE")]
    auditor_ca_file: Option<PathBuf>,
    /// Serve HTTPS: the certificate chain, PEM (with --tls-key). Without it, plain HTTP
    /// (behind a TLS proxy, or on loopback).
    #[arg(long, env = "KT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Serve HTTPS: the private key, PEM (with --tls-cert).
    #[arg(long, env = "KT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// File holding a token that every read request must present as
    /// `Authorization: Bearer` (default: reads are public).
    #[arg(long, env = "KT_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
    /// Where the directory is stored: `rocksdb` (the data directory's `db/`) or
    /// `mysql` (needs --mysql-url) [default: rocksdb].
    #[arg(long, env = "KT_STORAGE")]
    storage: Option<String>,
    /// `mysql://user:password@host:port/database` of a MySQL-protocol server (MariaDB,
    /// MySQL, Vitess); implies --storage mysql.
    #[arg(long, env = "KT_MYSQL_URL", hide_env_values = true)]
    mysql_url: Option<String>,
    /// Serve the read API only, following the publisher's store: the same MySQL
    /// database, or (RocksDB) the publisher's data directory through a secondary
    /// instance kept in --replica-dir. Needs a copy of the data directory's keys.
    #[arg(long)]
    read_only: bool,
    /// A read replica's own directory for its RocksDB secondary instance (one per
    /// replica; required for RocksDB replicas).
    #[arg(long, env = "KT_REPLICA_DIR")]
    replica_dir: Option<PathBuf>,
    /// Verify every lookup and history proof before serving it, as a client would (a
    /// failure is answered 503 and counted in kt_directory_proofs_rejected_total).
    #[arg(long)]
    verify_proofs: bool,
}

#[derive(Debug, Args)]
struct TrafficArgs {
    /// Base URL of the directory.
    #[arg(long, env = "KT_DIRECTORY_URL")]
    url: String,
    /// File holding the operator token (the data directory's `operator.token`).
    #[arg(long, env = "KT_TOKEN_FILE")]
    token_file: PathBuf,
    /// The directory's signing key (hex) to verify heads with; default: trust /v1/info.
    #[arg(long, env = "KT_DIRECTORY_KEY")]
    directory_key: Option<String>,
    #[command(flatten)]
    sample: SampleArgs,
}

/// The shape of deterministic sample traffic.
#[derive(Debug, Args)]
struct SampleArgs {
    /// How many epochs to publish.
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    /// Updates per epoch.
    #[arg(long, default_value_t = 1000)]
    updates_per_epoch: usize,
    /// Number of distinct sample devices the updates are drawn from.
    #[arg(long, default_value_t = 100_000)]
    population: u64,
    /// Seed of the sample traffic (same seed, same batches).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl SampleArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.population == 0 || self.updates_per_epoch == 0 {
            bail!("--population and --updates-per-epoch must be at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Data directory (created if missing): RocksDB in `db/`, the VRF key in `vrf.key`.
    #[arg(long, env = "KT_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    sample: SampleArgs,
    /// RocksDB block cache, MiB.
    #[arg(long, default_value_t = 512)]
    block_cache_mib: usize,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    kt_client::run::run_command(async {
        match cli.command {
            Command::Init(args) => init(args).await,
            Command::Serve(args) => serve(*args).await,
            Command::SampleTraffic(args) => sample_traffic(args).await,
            Command::PublishSample(args) => publish_sample(args).await,
        }
    })
}

async fn init(args: InitArgs) -> anyhow::Result<()> {
    let data = DataDir::new(&args.data_dir);
    let keys = data.init(&args.namespace)?;
    let vrf_public = keys
        .vrf
        .get_vrf_public_key()
        .await
        .map_err(|e| anyhow::anyhow!("VRF public key: {e:?}"))?;
    println!("data_dir={}", data.root().display());
    println!("namespace={}", keys.manifest.namespace);
    println!("signing_key={}", hex::encode(keys.signing.verifying_key().as_bytes()));
    println!("vrf_public_key={}", hex::encode(vrf_public.as_bytes()));
    println!("token_file={}", data.token().display());
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let over = Overrides {
        listen: args.listen,
        epoch_interval_secs: args.epoch_interval,
        max_updates_per_epoch: args.max_updates_per_epoch,
        block_cache_mib: args.block_cache_mib,
        read_threads: args.read_threads,
        publisher_nice: args.publisher_nice,
        akd_cache_mib: args.akd_cache_mib,
        akd_cache_secs: args.akd_cache_secs,
        auditors: args.auditors,
        read_token_file: args.read_token_file,
        storage: args.storage,
        mysql_url: args.mysql_url,
        verify_proofs: args.verify_proofs.then_some(true),
        allow_fresh_auditor: args.allow_fresh_auditor.then_some(true),
        auditor_max_age_secs: args.auditor_max_age,
        auditor_ca_file: args.auditor_ca_file,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
    };
    let config = ServeConfig::resolve(over, file)?;
    let data = DataDir::new(args.data_dir);
    if args.read_only {
        crate::server::serve_replica(data, config, args.replica_dir).await
    } else {
        anyhow::ensure!(
            args.replica_dir.is_none(),
            "--replica-dir is for read replicas (--read-only)"
        );
        crate::server::serve(data, config).await
    }
}

async fn sample_traffic(args: TrafficArgs) -> anyhow::Result<()> {
    args.sample.check()?;
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading the token file {}", args.token_file.display()))?;
    crate::traffic::run(Traffic {
        url: args.url,
        token: token.trim().to_owned(),
        epochs: args.sample.epochs,
        updates_per_epoch: args.sample.updates_per_epoch,
        population: args.sample.population,
        seed: args.sample.seed,
        directory_key: args.directory_key,
    })
    .await
}

async fn publish_sample(args: DemoArgs) -> anyhow::Result<()> {
    args.sample.check()?;
    let sample_args = &args.sample;
    let data = DataDir::new(&args.data_dir);
    if data.manifest().exists() {
        bail!(
            "{} belongs to `kt-directory serve` (it has a manifest); publish-sample writes epochs \
             without signed heads and must not touch it",
            data.root().display()
        );
    }
    std::fs::create_dir_all(data.root()).with_context(|| format!("creating {}", data.root().display()))?;
    let vrf = VrfSecret::load_or_create(&data.vrf_key())?;
    let config = StorageConfig {
        block_cache_bytes: args.block_cache_mib << 20,
        ..StorageConfig::default()
    };
    let directory = open_rocks_directory(data.db(), config, vrf).await?;
    let vrf_public = directory.get_public_key().await.context("VRF public key")?;
    let head = directory.get_epoch_hash().await.context("reading the current epoch")?;
    println!("opened epoch={} root={}", head.0, hex::encode(head.1));
    tracing::info!(epoch = head.0, data_dir = %data.root().display(), "directory open");

    let progress = ProgressBar::new(sample_args.epochs).with_style(
        ProgressStyle::with_template("{spinner} epoch {pos}/{len} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last_batch = Vec::new();
    for epoch in head.0 + 1..=head.0 + sample_args.epochs {
        let updates = sample::updates(
            sample_args.seed,
            epoch,
            sample_args.updates_per_epoch,
            sample_args.population,
        );
        progress.set_message(format!("publishing {} updates", updates.len()));
        println!("publishing epoch={epoch} updates={}", updates.len());
        let started = Instant::now();
        let published = directory
            .publish(updates.clone())
            .await
            .with_context(|| format!("publishing epoch {epoch}"))?;
        let ms = started.elapsed().as_millis();
        if published.0 != epoch {
            bail!("akd committed epoch {} where {epoch} was expected", published.0);
        }
        println!("published epoch={epoch} root={} ms={ms}", hex::encode(published.1));
        tracing::debug!(epoch, updates = updates.len(), ms, "published");
        progress.inc(1);
        last_batch = updates;
    }
    progress.finish_and_clear();

    // Show that what is on disk proves what it should: verify one lookup and one history.
    let label: AkdLabel = match last_batch.first() {
        Some((label, _)) => label.clone(),
        None => sample::label(0),
    };
    let (lookup, head) = directory.lookup(label.clone()).await.context("lookup proof")?;
    let found = kt_client::verify::lookup(vrf_public.as_bytes(), head.1, head.0, label.clone(), lookup)?;
    println!(
        "verified lookup label={} version={} epoch={} value={}",
        String::from_utf8_lossy(&label.0),
        found.version,
        found.epoch,
        hex::encode(&found.value.0)
    );
    let (history, head) = directory
        .key_history(&label, HistoryParams::Complete)
        .await
        .context("history proof")?;
    let versions = kt_client::verify::history(
        vrf_public.as_bytes(),
        head.1,
        head.0,
        label.clone(),
        history,
        HistoryParams::Complete,
    )?;
    println!(
        "verified history label={} versions={} epoch={}",
        String::from_utf8_lossy(&label.0),
        versions.len(),
        head.0
    );
    Ok(())
}
