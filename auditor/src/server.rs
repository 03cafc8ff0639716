//! `kt-auditor serve`: the follow loop and the HTTP API in one process, until SIGINT
//! or SIGTERM. [`serve`] takes the listener and the shutdown future, so tests run
//! auditors in process; [`run`] binds `--listen` and stops on a signal.

use crate::config::ServeConfig;
use crate::datadir::DataDir;
use crate::follower::Follower;
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::status::SharedStatus;
use crate::store::Store;
use anyhow::Context;
use kt_client::http::DirectoryClient;
use std::future::Future;
use std::io::Write;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Binds `config.listen` and runs the auditor on `data` until SIGINT or SIGTERM.
pub async fn run(data: DataDir, config: ServeConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    serve(listener, data, config, kt_client::run::shutdown_signal()).await
}

/// Runs the auditor on `data`, answering on `listener`, until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    data: DataDir,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let key = data.load()?;
    let db = data.db();
    let store = tokio::task::spawn_blocking(move || Store::open(&db))
        .await
        .context("opening the auditor database")??;
    let directory_hex = hex::encode(config.directory_key.as_bytes());
    let s = store.clone();
    if let Some(pins) = tokio::task::spawn_blocking(move || s.pins()).await?? {
        anyhow::ensure!(
            pins.directory_key == directory_hex,
            "this auditor follows the directory with key {}, not {directory_hex}; use another --data-dir for another directory",
            pins.directory_key
        );
    }
    let metrics = Metrics::new().context("registering metrics")?;
    let status = SharedStatus::new();
    let roots = match &config.ca_file {
        Some(path) => kt_client::http::read_ca_file(path).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    if plain_http_off_host(&config.directory) {
        // Anyone on the path can then serve a damaged proof twice, which is evidence
        // against an honest directory: only loopback may go without TLS.
        tracing::warn!(
            directory = %config.directory,
            "the directory is reached over plain http:// beyond this host: use https://"
        );
    }
    let client = DirectoryClient::with_roots(&config.directory, config.request_timeout, &roots)?;
    let mut follower = Follower::new(
        client,
        store.clone(),
        key.clone(),
        config.directory_key,
        status.clone(),
        metrics.clone(),
        config.follow.clone(),
    );
    follower.restore().await?;

    let tls = config.tls.as_ref().map(|t| t.server_config()).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let witness = crate::witness::Witness::new(key.clone(), crate::witness::name_for(&public_url))
        .context("the witness name (from the public URL)")?;
    tracing::info!(vkey = %witness.vkey(), "epoch-log witness key");
    let state = AppState {
        witness: std::sync::Arc::new(witness),
        store,
        status,
        metrics,
        auditor_key: key.verifying_key(),
        directory_key: config.directory_key,
        directory_url: config.directory.clone(),
        public_url,
        max_head_age_secs: config.follow.max_head_age.as_secs(),
    };
    // Scripts and tests read the bound address (the port may be 0) from this line.
    println!("listening on {scheme}://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, directory = %config.directory, "kt-auditor serving");

    let (stop, stopped) = watch::channel(false);
    let follow = tokio::spawn(follower.run(stopped));
    kt_client::serve::serve(listener, router(state), tls, shutdown)
        .await
        .context("HTTP server")?;
    let _ = stop.send(true);
    follow.await.context("follow task")?;
    tracing::info!("kt-auditor stopped");
    Ok(())
}

/// Whether `url` is plain `http://` to a host other than this one.
fn plain_http_off_host(url: &str) -> bool {
    let Some(rest) = url
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    !loopback
}

#[cfg(test)]
mod tests {
    use super::plain_http_off_host;

    #[test]
    fn only_plain_http_beyond_loopback_is_warned_about() {
        for quiet in [
            "http://127.0.0.1:8080",
            "http://localhost:1/x",
            "http://[::1]:9",
            "https://example.org",
        ] {
            assert!(!plain_http_off_host(quiet), "{quiet}");
        }
        for loud in [
            "http://example.org",
            "HTTP://example.org",
            "http://10.0.0.1:8080/",
            "http://[2001:db8::1]:80",
        ] {
            assert!(plain_http_off_host(loud), "{loud}");
        }
    }
}
