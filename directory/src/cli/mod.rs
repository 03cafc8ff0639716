//! The `kt-directory` command line. `main.rs` (and the e2e tests' copy of the binary)
//! call [`main`].

#[cfg(feature = "demo")]
mod demo;

use crate::DataDir;
use crate::config::{FileConfig, Overrides, ServeConfig};
use akd::ecvrf::VRFKeyStorage;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    #[cfg(feature = "demo")]
    SampleTraffic(demo::TrafficArgs),
    /// Publish sample epochs straight into a bare akd store (no server, no heads);
    /// used by the storage crash test.
    #[cfg(feature = "demo")]
    PublishSample(demo::DemoArgs),
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
    /// A witness of the epoch log, as URL=VKEY: its c2sp.org/tlog-witness submission
    /// prefix and its cosignature/v1 verifier key (repeatable, or
    /// KT_WITNESSES=URL=VKEY,URL=VKEY). Each checkpoint is pushed to every witness, and
    /// the checkpoint is served with the co-signatures collected.
    #[arg(long = "witness", env = "KT_WITNESSES", value_delimiter = ',')]
    witnesses: Vec<String>,
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

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    kt_client::run::run_command(async {
        match cli.command {
            Command::Init(args) => init(args).await,
            Command::Serve(args) => serve(*args).await,
            #[cfg(feature = "demo")]
            Command::SampleTraffic(args) => demo::sample_traffic(args).await,
            #[cfg(feature = "demo")]
            Command::PublishSample(args) => demo::publish_sample(args).await,
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
    let launch = Launch::resolve(args)?;
    let listener = crate::server::bind(&launch.config).await?;
    launch.serve(listener, kt_client::run::shutdown_signal()).await
}

/// What `kt-directory serve ARGS` runs, resolved from its flags, environment and config
/// file: for tests that run the server in process with the binary's own parsing.
#[derive(Debug)]
pub struct Launch {
    /// The data directory.
    pub data: DataDir,
    /// The resolved settings (`config.listen` is what `--listen` asked for).
    pub config: ServeConfig,
    /// `Some` for a read replica (`--read-only`), with its `--replica-dir`.
    pub replica: Option<Option<PathBuf>>,
}

impl Launch {
    /// Resolves `kt-directory serve` with `args` (what follows `serve`).
    pub fn parse<I, T>(args: I) -> anyhow::Result<Launch>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv = ["kt-directory".into(), "serve".into()]
            .into_iter()
            .chain(args.into_iter().map(Into::into));
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(args) => Launch::resolve(*args),
            _ => anyhow::bail!("not a serve command"),
        }
    }

    /// Runs it on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        match self.replica {
            Some(dir) => crate::server::serve_replica(listener, self.data, self.config, dir, shutdown).await,
            None => crate::server::serve(listener, self.data, self.config, shutdown).await,
        }
    }

    fn resolve(args: ServeArgs) -> anyhow::Result<Launch> {
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
            witnesses: args.witnesses,
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
        if !args.read_only {
            anyhow::ensure!(
                args.replica_dir.is_none(),
                "--replica-dir is for read replicas (--read-only)"
            );
        }
        Ok(Launch {
            data,
            config,
            replica: args.read_only.then_some(args.replica_dir),
        })
    }
}
