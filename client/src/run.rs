//! What every binary of this workspace does around its command: logs to stderr with
//! `tracing` (filter from `RUST_LOG`, colour only on a terminal), a multi-threaded tokio
//! runtime, and an error printed with its whole chain and a non-zero exit.

use std::future::Future;
use std::process::ExitCode;

/// Sets up logging, runs `command` on a new tokio runtime and turns its result into an
/// exit code (errors print as `error: <chain>`).
pub fn run_command<F>(command: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    run_command_with(command, |_| 1)
}

/// [`run_command`] with the exit code of an error chosen by `code` (never 0).
pub fn run_command_with<F>(command: F, code: fn(&anyhow::Error) -> u8) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,akd=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Exit>().is_some() => ExitCode::from(e.downcast_ref::<Exit>().map_or(1, |x| x.0)),
        Err(e) => {
            // Errors quote servers: print them so that no byte of theirs can drive the
            // terminal.
            eprintln!("error: {}", crate::wire::printable(&format!("{e:#}"), 4000));
            ExitCode::from(code(&e).max(1))
        }
    }
}

/// A command that finished with a non-zero exit code and has said everything it had to
/// (on stdout): nothing more is printed.
#[derive(Debug, thiserror::Error)]
#[error("exit code {0}")]
pub struct Exit(pub u8);

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
