//! `kt-directory serve`: the publisher loop and the HTTP API in one process, until
//! SIGINT or SIGTERM; or, with `--read-only`, a replica's follower and the read API.
//!
//! [`serve`] and [`serve_replica`] take the listener and the shutdown future, so tests
//! run servers in process on `127.0.0.1:0` and stop them when they like; the binary
//! (`cli::Launch`) binds `--listen` and stops on a signal.

use crate::config::ServeConfig;
use crate::datadir::DataDir;
use crate::http::{AppState, ReadGuard, router};
use crate::metrics::Metrics;
use crate::publisher::prepare::PrepareConfig;
use crate::publisher::{Publisher, PublisherConfig, ServeState};
use crate::replica::{Replica, ReplicaConfig};
use crate::storage::{Backend, StorageConfig};
use anyhow::Context;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Binds `config.listen` (the binary's `--listen`).
pub(crate) async fn bind(config: &ServeConfig) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))
}

/// Runs the directory on `data`, answering on `listener`, until `shutdown` resolves;
/// then stops the publisher after the epoch in progress, if any.
pub async fn serve(
    listener: TcpListener,
    data: DataDir,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let read_token = read_token(&config)?;
    let keys = data.load()?;
    let token_hash = keys.token_hash;
    let metrics = Metrics::new().context("registering metrics")?;
    let publisher_config = PublisherConfig {
        backend: config.backend.clone(),
        db_path: data.db(),
        storage: storage_config(&config),
        max_per_epoch: config.max_updates_per_epoch,
        akd_cache: config.akd_cache,
        prepare: PrepareConfig {
            nice: config.publisher_nice + 5,
            ..PrepareConfig::for_epochs_of(config.max_updates_per_epoch)
        },
    };
    let (publisher, shared) = Publisher::open(publisher_config, keys, metrics.clone())
        .await
        .with_context(|| format!("opening the directory in {}", data.root().display()))?;
    let guard = crate::restore_guard::GuardConfig {
        auditors: crate::restore_guard::parse_auditors(&config.auditors)?,
        allow_fresh: config.allow_fresh_auditor,
        max_age: config.auditor_max_age,
        roots: match &config.auditor_ca_file {
            Some(path) => kt_client::http::read_ca_file(path).map_err(|e| anyhow::anyhow!("--auditor-ca-file: {e}"))?,
            None => Vec::new(),
        },
        timeout: std::time::Duration::from_secs(30),
    };
    crate::restore_guard::check(&guard, &shared).await?;
    let witnesses = crate::witness::parse_witnesses(&config.witnesses)?;

    let (stop, stopped) = watch::channel(false);
    let collector = tokio::spawn(crate::witness::run(
        std::sync::Arc::clone(&shared.log),
        shared.storage.clone(),
        witnesses,
        config.epoch_interval,
        metrics.clone(),
        stopped.clone(),
    ));
    // The publisher runs on its own runtime and threads. akd's publish is minutes of
    // CPU-bound async work at scale; on the HTTP runtime it would occupy the workers
    // that answer lookups, which then wait for it (docs/performance.md measures the
    // lookup p99 during a publish both ways). On separate threads the OS shares the
    // cores between the two.
    let interval = config.epoch_interval;
    let nice = config.publisher_nice;
    let publisher = std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || -> std::io::Result<()> {
            lower_priority(nice);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("publisher")
                .build()?;
            runtime.block_on(publisher.run(interval, stopped));
            Ok(())
        })
        .context("starting the publisher thread")?;
    let served = http(
        listener,
        shutdown,
        &config,
        shared,
        token_hash,
        metrics,
        read_token.as_deref(),
        "publisher",
    )
    .await;
    let _ = stop.send(true);
    let _ = collector.await;
    let joined = tokio::task::spawn_blocking(move || publisher.join())
        .await
        .context("joining the publisher thread")?;
    match joined {
        Ok(result) => result.context("publisher runtime")?,
        Err(_) => anyhow::bail!("the publisher thread panicked"),
    }
    served?;
    tracing::info!("kt-directory stopped");
    Ok(())
}

/// Lowers the calling thread's CPU priority by `steps` nice levels (at most to 19).
/// Linux keeps the nice value per thread and a new thread inherits its creator's, so
/// called first on the publisher's thread it covers the runtime's workers, its blocking
/// threads and the storage's read threads. When both want the 2 cores, lookups then go
/// first (their p99 during a publish is a target); the publish, which has a whole epoch
/// period, takes what they leave.
pub(crate) fn lower_priority(steps: i32) {
    if steps == 0 {
        return;
    }
    let tid = Some(rustix::thread::gettid());
    let lowered = rustix::process::getpriority_process(tid).and_then(|now| {
        let nice = (now + steps).min(19);
        rustix::process::setpriority_process(tid, nice).map(|()| nice)
    });
    match lowered {
        Ok(nice) => tracing::info!(nice, "the publisher runs at a lower CPU priority than the HTTP API"),
        Err(e) => tracing::warn!(steps, error = %e, "could not lower the publisher's CPU priority"),
    }
}

/// Runs a read replica of the directory whose keys are in `data`, answering on
/// `listener`, until `shutdown` resolves: the read API only, following the publisher's
/// store (`replica.rs`).
pub async fn serve_replica(
    listener: TcpListener,
    data: DataDir,
    config: ServeConfig,
    replica_dir: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let read_token = read_token(&config)?;
    let secondary_dir = match (&config.backend, replica_dir) {
        (_, Some(dir)) => dir,
        (Backend::Rocks, None) => anyhow::bail!(
            "a RocksDB read replica needs --replica-dir: its own directory for the secondary instance \
             (one per replica)"
        ),
        (Backend::Mysql { .. }, None) => PathBuf::new(),
    };
    if config.backend == Backend::Rocks {
        std::fs::create_dir_all(&secondary_dir).with_context(|| format!("creating {}", secondary_dir.display()))?;
    }
    let keys = data.load()?;
    let token_hash = keys.token_hash;
    let metrics = Metrics::new().context("registering metrics")?;
    let replica_config = ReplicaConfig {
        backend: config.backend.clone(),
        db_path: data.db(),
        secondary_dir,
        storage: storage_config(&config),
    };
    let (replica, shared) = Replica::open(replica_config, keys, metrics.clone())
        .await
        .with_context(|| format!("opening a read replica of the directory in {}", data.root().display()))?;
    let (stop, stopped) = watch::channel(false);
    let follower = tokio::spawn(replica.run(config.replica_poll, stopped));
    let served = http(
        listener,
        shutdown,
        &config,
        shared,
        token_hash,
        metrics,
        read_token.as_deref(),
        "replica",
    )
    .await;
    let _ = stop.send(true);
    follower.await.context("the replica follower panicked")?;
    served?;
    tracing::info!("kt-directory replica stopped");
    Ok(())
}

/// The read token from `--read-token-file`, if any.
fn read_token(config: &ServeConfig) -> anyhow::Result<Option<String>> {
    let Some(path) = &config.read_token_file else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        token.trim().len() >= 16,
        "read token in {} is shorter than 16 characters",
        path.display()
    );
    Ok(Some(token))
}

fn storage_config(config: &ServeConfig) -> StorageConfig {
    StorageConfig {
        block_cache_bytes: config.block_cache_bytes,
        read_threads: config.read_threads,
        ..StorageConfig::default()
    }
}

/// Serves the HTTP API on `listener` until `shutdown` resolves.
#[allow(clippy::too_many_arguments)]
async fn http(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: &ServeConfig,
    shared: ServeState,
    token_hash: blake3::Hash,
    metrics: Metrics,
    read_token: Option<&str>,
    role: &'static str,
) -> anyhow::Result<()> {
    let read_guard = ReadGuard::new(read_token, config.read_rate_per_sec, config.read_burst);
    let pruned = read_guard.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            pruned.prune();
        }
    });
    let state = AppState {
        shared,
        token_hash,
        limits: config.limits.clone(),
        metrics,
        epoch_interval_secs: config.epoch_interval.as_secs(),
        read_guard,
        verify_proofs: config.verify_proofs,
        blobs: crate::http::BlobServer::new(&config.limits),
    };
    let tls = config.tls.as_ref().map(|t| t.server_config()).transpose()?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Scripts and tests read the bound address (the port may be 0) from this line.
    println!("listening on {scheme}://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, role, scheme, interval_secs = config.epoch_interval.as_secs(), "kt-directory serving");
    kt_client::serve::serve(listener, router(state), tls, shutdown)
        .await
        .context("HTTP server")
}

#[cfg(test)]
mod tests {
    fn nice_of_this_thread() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("getpriority")
    }

    #[test]
    fn lowered_priority_is_per_thread_and_inherited() {
        let before = nice_of_this_thread();
        let (own, started) = std::thread::spawn(|| {
            super::lower_priority(3);
            let started = std::thread::spawn(nice_of_this_thread).join().expect("join");
            (nice_of_this_thread(), started)
        })
        .join()
        .expect("join");
        assert_eq!(own, (before + 3).min(19));
        assert_eq!(started, own, "threads the publisher starts inherit its priority");
        assert_eq!(nice_of_this_thread(), before, "other threads keep theirs");
    }
}
