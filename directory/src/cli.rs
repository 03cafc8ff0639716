//! The `kt-directory` command line. `main.rs` (and the e2e tests' copy of the binary)
//! call [`main`].

use crate::storage::StorageConfig;
use crate::vrf::VrfSecret;
use crate::{DataDir, open_rocks_directory, sample};
use akd::{AkdLabel, HistoryParams};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "kt-directory",
    version,
    about = "Key-transparency directory (akd on RocksDB)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish epochs of deterministic sample traffic into a RocksDB-backed directory,
    /// then fetch and verify a lookup and a history proof. Resumes from the stored epoch.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Data directory (created if missing): RocksDB in `db/`, the VRF key in `vrf.key`.
    #[arg(long, env = "KT_DATA_DIR")]
    data_dir: PathBuf,
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
    /// RocksDB block cache, MiB.
    #[arg(long, default_value_t = 512)]
    block_cache_mib: usize,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    kt_client::run::run_command(async {
        match cli.command {
            Command::Demo(args) => demo(args).await,
        }
    })
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    if args.population == 0 || args.updates_per_epoch == 0 {
        bail!("--population and --updates-per-epoch must be at least 1");
    }
    let data = DataDir::new(&args.data_dir);
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

    let progress = ProgressBar::new(args.epochs).with_style(
        ProgressStyle::with_template("{spinner} epoch {pos}/{len} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last_batch = Vec::new();
    for epoch in head.0 + 1..=head.0 + args.epochs {
        let updates = sample::updates(args.seed, epoch, args.updates_per_epoch, args.population);
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
