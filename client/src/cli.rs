//! The `kt` command line. Its commands (lookup, history, head, monitor, verify) need
//! the directory's HTTP API and signed-head format and arrive with them; until then
//! `kt` only reports its version and the configuration it verifies with.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "kt", version, about = "Verify key-transparency lookups and histories")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the akd configuration this client verifies proofs with.
    Config,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Config => {
            println!(
                "akd configuration: {}",
                std::any::type_name::<crate::KtConfig>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("?")
            );
            ExitCode::SUCCESS
        }
    }
}
