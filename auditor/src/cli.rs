//! The `kt-auditor` command line. `main.rs` (and the e2e tests' copy) call [`main`].

use anyhow::bail;
use clap::{Parser, Subcommand};
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
    /// Verify a folder of WhatsApp-style audit blobs (`EPOCH/PREV_ROOT/CUR_ROOT` files):
    /// consecutive epochs, a chained root, and every append-only proof. Exits non-zero at
    /// the first failure.
    AuditBlobs {
        /// The folder.
        path: PathBuf,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    kt_client::run::run_command(async {
        match cli.command {
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
                println!("ok: {} epochs verified", verified.len());
                Ok(())
            }
        }
    })
}
