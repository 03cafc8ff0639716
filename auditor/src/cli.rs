//! The `kt-auditor` command line. `main.rs` (and the e2e tests' copy) call [`main`].

use crate::config::{FileConfig, ServeConfig};
use crate::datadir::DataDir;
use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "kt-auditor", version, about = "Audit a key-transparency directory")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the auditor's data directory and its ed25519 co-signing key; prints the
    /// public key (clients pin it).
    Init {
        /// Where the key and the database live.
        #[arg(long, env = "KT_AUDITOR_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Follow a directory: verify every epoch's append-only proof, co-sign it, publish
    /// evidence of misbehaviour, and serve the API and the public dashboard.
    Serve(Box<ServeArgs>),
    /// Verify a folder of WhatsApp-style audit blobs (`EPOCH/PREV_ROOT/CUR_ROOT` files):
    /// consecutive epochs, a chained root, and every append-only proof. Exits non-zero at
    /// the first failure. "ok" means the folder is one append-only history from its
    /// first blob's previous root to its last blob's root; the roots come from the file
    /// names, which nobody signed: compare the last root with a signed head (`kt head`)
    /// to anchor it.
    AuditBlobs {
        /// The folder.
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The data directory made by `init`.
    #[arg(long, env = "KT_AUDITOR_DATA_DIR")]
    data_dir: PathBuf,
    /// TOML file with any of the settings below (flags and env win over it).
    #[arg(long, env = "KT_AUDITOR_CONFIG")]
    config: Option<PathBuf>,
    /// The directory's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "KT_AUDITOR_DIRECTORY")]
    directory: Option<String>,
    /// The directory's ed25519 signing key, hex (pinned; never taken from the directory).
    #[arg(long, env = "KT_AUDITOR_DIRECTORY_KEY")]
    directory_key: Option<String>,
    /// Address to serve the API and dashboard on [default: 127.0.0.1:8081].
    #[arg(long, env = "KT_AUDITOR_LISTEN")]
    listen: Option<SocketAddr>,
    /// This auditor's base URL as others reach it (Plexi's log_directory) [default: http://LISTEN].
    #[arg(long, env = "KT_AUDITOR_PUBLIC_URL")]
    public_url: Option<String>,
    /// Seconds between polls once caught up [default: 5].
    #[arg(long, env = "KT_AUDITOR_POLL_INTERVAL")]
    poll_interval: Option<u64>,
    /// Longest backoff after failed requests, seconds [default: 60].
    #[arg(long, env = "KT_AUDITOR_MAX_BACKOFF")]
    max_backoff: Option<u64>,
    /// Longest the directory may go without a fresh signed head, seconds [default: 600].
    #[arg(long, env = "KT_AUDITOR_MAX_HEAD_AGE")]
    max_head_age: Option<u64>,
    /// Largest append-only proof fetched, MiB [default: 512].
    #[arg(long, env = "KT_AUDITOR_MAX_PROOF_MIB")]
    max_proof_mib: Option<u64>,
    /// How far in the future a signed head may be dated before it is evidence,
    /// seconds [default: 300].
    #[arg(long, env = "KT_AUDITOR_MAX_CLOCK_SKEW")]
    max_clock_skew: Option<u64>,
    /// PEM bundle of CA certificates to trust for an HTTPS directory (a private CA),
    /// besides the system's and the Mozilla roots.
    #[arg(long, env = "KT_AUDITOR_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Serve HTTPS: the certificate chain, PEM (with --tls-key).
    #[arg(long, env = "KT_AUDITOR_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Serve HTTPS: the private key, PEM (with --tls-cert).
    #[arg(long, env = "KT_AUDITOR_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Longest one request to the directory may take, seconds [default: 120].
    #[arg(long, env = "KT_AUDITOR_REQUEST_TIMEOUT")]
    request_timeout: Option<u64>,
}

/// `kt-auditor serve ARGS` resolved from its flags, environment and config file
/// (`args` is what follows `serve`): for tests that run the auditor in process with
/// the binary's own parsing.
pub fn parse_serve<I, T>(args: I) -> anyhow::Result<(DataDir, ServeConfig)>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = ["kt-auditor".into(), "serve".into()]
        .into_iter()
        .chain(args.into_iter().map(Into::into));
    match Cli::try_parse_from(argv)?.command {
        Command::Serve(args) => resolve(*args),
        _ => bail!("not a serve command"),
    }
}

fn resolve(args: ServeArgs) -> anyhow::Result<(DataDir, ServeConfig)> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let flags = FileConfig {
        directory: args.directory,
        directory_key: args.directory_key,
        listen: args.listen,
        public_url: args.public_url,
        poll_interval_secs: args.poll_interval,
        max_backoff_secs: args.max_backoff,
        max_head_age_secs: args.max_head_age,
        max_proof_mib: args.max_proof_mib,
        request_timeout_secs: args.request_timeout,
        max_clock_skew_secs: args.max_clock_skew,
        ca_file: args.ca_file,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
    };
    let config = ServeConfig::resolve(file.overlay(flags))?;
    Ok((DataDir::new(args.data_dir), config))
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    kt_client::run::run_command(async {
        match cli.command {
            Command::Init { data_dir } => {
                let key = DataDir::new(&data_dir).init()?;
                println!("auditor key: {}", hex::encode(key.verifying_key().as_bytes()));
                println!("initialized {}", data_dir.display());
                Ok(())
            }
            Command::Serve(args) => {
                let (data, config) = resolve(*args)?;
                crate::server::run(data, config).await
            }
            Command::AuditBlobs { path } => {
                let verified = crate::blobs::audit(&path, |v| {
                    println!(
                        "verified epoch={} previous={} current={} bytes={}",
                        v.name.epoch,
                        hex::encode(v.name.previous_hash),
                        hex::encode(v.name.current_hash),
                        v.bytes
                    );
                })
                .await?;
                if verified.is_empty() {
                    bail!("no audit blobs under {}", path.display());
                }
                let (first, last) = (&verified[0].name, &verified[verified.len() - 1].name);
                println!(
                    "ok: {} epochs verified: one append-only history from root {} (before epoch {}) to root {} (epoch {}); \
                     these roots come from the file names: compare the last with a head the directory signed",
                    verified.len(),
                    hex::encode(first.previous_hash),
                    first.epoch,
                    hex::encode(last.current_hash),
                    last.epoch
                );
                Ok(())
            }
        }
    })
}
