//! The yardstick for publishing: akd's own `Directory::publish` on its in-memory store,
//! cache on (akd's configuration at its fastest), of the same kind of epoch the harness
//! then gives our directory: B rotations of random existing entries. It runs in a child
//! process (`kt-load publish-yardstick`) before the directory starts, so that its time,
//! CPU and peak memory are akd's alone and nothing competes with it.

use crate::directory::proc_status_kib;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Arguments of `publish-yardstick`.
#[derive(Debug, Args)]
pub struct YardstickArgs {
    /// Entries loaded before the measured epoch.
    #[arg(long)]
    pub entries: u64,
    /// Rotations in the measured epoch.
    #[arg(long)]
    pub updates: u64,
    /// Seed of the rotations' choice and values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What `publish-yardstick` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishYardstick {
    /// Entries in the in-memory directory.
    pub entries: u64,
    /// Rotations published.
    pub updates: u64,
    /// Seconds loading the entries.
    pub load_secs: f64,
    /// The measured `Directory::publish`, seconds.
    pub publish_secs: f64,
    /// CPU seconds of the process during it (every thread).
    pub cpu_secs: f64,
    /// Peak resident memory during it, bytes (the peak is reset when it starts).
    pub peak_rss_bytes: u64,
    /// Resident memory before it started, bytes (the loaded directory).
    pub rss_before_bytes: u64,
}

/// Loads the entries, then measures one epoch of rotations, and prints
/// [`PublishYardstick`] as JSON.
pub fn main(args: &YardstickArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let out = rt.block_on(measure(args))?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

async fn measure(args: &YardstickArgs) -> anyhow::Result<PublishYardstick> {
    let started = Instant::now();
    let dir = kt_benches::memory().await;
    let bar = ProgressBar::new(args.entries).with_style(ProgressStyle::with_template(
        "yardstick: akd in memory {bar:30} {pos}/{len} entries ({eta})",
    )?);
    let mut start = 0;
    while start < args.entries {
        let len = (kt_benches::LOAD_BATCH as u64).min(args.entries - start);
        dir.publish(kt_benches::load_batch(start, len)).await?;
        start += len;
        bar.set_position(start);
    }
    bar.finish_and_clear();
    let load_secs = started.elapsed().as_secs_f64();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let count = args.updates.min(args.entries);
    let picked = rand::seq::index::sample(&mut rng, usize::try_from(args.entries)?, usize::try_from(count)?);
    let updates: Vec<(akd::AkdLabel, akd::AkdValue)> = picked
        .into_iter()
        .map(|i| {
            let mut value = vec![0u8; 32];
            rng.fill_bytes(&mut value);
            (kt_benches::load_label(i as u64), akd::AkdValue(value))
        })
        .collect();
    let rss_before_bytes = proc_status_kib("/proc/self/status", "VmRSS:")? * 1024;
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS")?;
    let cpu_before = crate::readers::cpu_secs("self");
    let t = Instant::now();
    dir.publish(updates).await?;
    let publish_secs = t.elapsed().as_secs_f64();
    let cpu_secs = crate::readers::cpu_secs("self") - cpu_before;
    let peak_rss_bytes = proc_status_kib("/proc/self/status", "VmHWM:")? * 1024;
    Ok(PublishYardstick {
        entries: args.entries,
        updates: count,
        load_secs,
        publish_secs,
        cpu_secs,
        peak_rss_bytes,
        rss_before_bytes,
    })
}

/// Runs `publish-yardstick` in a child process and parses its answer.
pub fn in_child(entries: u64, updates: u64, seed: u64) -> anyhow::Result<PublishYardstick> {
    let me = std::env::current_exe()?;
    let out = std::process::Command::new(me)
        .arg("publish-yardstick")
        .args(["--entries", &entries.to_string(), "--updates", &updates.to_string()])
        .args(["--seed", &seed.to_string()])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        anyhow::bail!("publish-yardstick failed ({})", out.status);
    }
    serde_json::from_slice(&out.stdout).context("parsing publish-yardstick's answer")
}
