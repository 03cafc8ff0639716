//! The demo's commands (feature `demo`): `sample-traffic` feeds a running directory,
//! `publish-sample` writes sample epochs into a bare akd store.

use crate::storage::StorageConfig;
use crate::traffic::Traffic;
use crate::vrf::VrfSecret;
use crate::{DataDir, open_rocks_directory, sample};
use akd::{AkdLabel, HistoryParams};
use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Args)]
pub(super) struct TrafficArgs {
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
pub(super) struct DemoArgs {
    /// Data directory (created if missing): RocksDB in `db/`, the VRF key in `vrf.key`.
    #[arg(long, env = "KT_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    sample: SampleArgs,
    /// RocksDB block cache, MiB.
    #[arg(long, default_value_t = 512)]
    block_cache_mib: usize,
}

pub(super) async fn sample_traffic(args: TrafficArgs) -> anyhow::Result<()> {
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

pub(super) async fn publish_sample(args: DemoArgs) -> anyhow::Result<()> {
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
