//! The yardstick for lookups: akd's own lookup-proof generation on its in-memory
//! backend, measured in the same run as the HTTP lookups from RocksDB.

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// akd in memory: lookups per second with one task per core.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// Entries in the in-memory directory.
    pub entries: u64,
    /// Concurrent lookup tasks (one per core).
    pub tasks: usize,
    /// Lookup proofs generated.
    pub lookups: u64,
    /// Lookup proofs per second, all tasks together.
    pub per_sec: f64,
    /// Seconds spent loading the in-memory directory.
    pub load_secs: f64,
}

/// Loads `entries` into akd's in-memory directory, then generates lookup proofs of
/// random entries on every core for `secs`.
pub async fn measure(entries: u64, secs: u64) -> anyhow::Result<Baseline> {
    let started = Instant::now();
    let dir = Arc::new(kt_benches::memory().await);
    let bar = ProgressBar::new(entries).with_style(ProgressStyle::with_template(
        "baseline: akd in memory {bar:30} {pos}/{len} entries ({eta})",
    )?);
    let mut start = 0;
    while start < entries {
        let len = (kt_benches::LOAD_BATCH as u64).min(entries - start);
        dir.publish(kt_benches::load_batch(start, len)).await?;
        start += len;
        bar.set_position(start);
    }
    bar.finish_and_clear();
    let load_secs = started.elapsed().as_secs_f64();
    let tasks = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let deadline = Duration::from_secs(secs.max(1));
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let dir = Arc::clone(&dir);
        set.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
            let mut n = 0u64;
            while started.elapsed() < deadline {
                dir.lookup(kt_benches::load_label(rng.gen_range(0..entries))).await?;
                n += 1;
            }
            anyhow::Ok(n)
        });
    }
    let mut lookups = 0;
    while let Some(done) = set.join_next().await {
        lookups += done??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Baseline {
        entries,
        tasks,
        lookups,
        per_sec: lookups as f64 / elapsed,
        load_secs,
    })
}
