//! `kt-load verify-blob`: the auditor's check of one epoch, alone in its process so that
//! its peak memory is measured without the harness's.

use crate::directory::proc_status_kib;
use anyhow::Context;
use clap::Args;
use kt_client::head::SignedHead;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `verify-blob`.
#[derive(Debug, Args)]
pub struct VerifyBlobArgs {
    /// The audit blob (raw protobuf, as served at `/{epoch}/{prev}/{cur}`).
    #[arg(long)]
    blob: PathBuf,
    /// The signed head (JSON) of the blob's end epoch.
    #[arg(long)]
    head: PathBuf,
}

/// What `verify-blob` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verified {
    /// Reading and verifying, seconds (what the auditor spends per epoch once the blob
    /// has arrived).
    pub secs: f64,
    /// Peak resident memory of the process, bytes.
    pub peak_rss_bytes: u64,
    /// Leaves the proof inserts.
    pub updates: u64,
}

/// Runs the auditor's `check_proof` on the blob and prints [`Verified`] as JSON.
pub fn main(args: &VerifyBlobArgs) -> anyhow::Result<()> {
    let head: SignedHead = serde_json::from_slice(&std::fs::read(&args.head)?).context("reading the head")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = Instant::now();
    let blob = std::fs::read(&args.blob).context("reading the blob")?;
    let (stats, _blob) = rt
        .block_on(kt_auditor::verify::check_proof(&head, blob))
        .map_err(|f| anyhow::anyhow!("the auditor rejects epoch {}: {}", f.epoch, f.reason))?;
    let secs = started.elapsed().as_secs_f64();
    let peak = proc_status_kib("/proc/self/status", "VmHWM:")? * 1024;
    let out = Verified {
        secs,
        peak_rss_bytes: peak,
        updates: stats.updates,
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// Runs `verify-blob` in a child process and parses its answer.
pub fn in_child(blob: &Path, head: &Path) -> anyhow::Result<Verified> {
    let me = std::env::current_exe()?;
    let out = std::process::Command::new(me)
        .arg("verify-blob")
        .arg("--blob")
        .arg(blob)
        .arg("--head")
        .arg(head)
        .env("RUST_LOG", "warn")
        .output()?;
    if !out.status.success() {
        anyhow::bail!("verify-blob failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).context("parsing verify-blob's answer")
}
