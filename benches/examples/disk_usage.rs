//! Bytes on disk per entry: loads N entries (`N`, default 200,000) into a RocksDB
//! directory in 20k-entry epochs, publishes one epoch of 20k rotations, compacts, and
//! prints the live bytes (SST and blob files) of each column family.
//!
//! `N=200000 cargo run --release -p kt-benches --example disk_usage`
//! (the load harness of the benchmarks issue supersedes this at larger N).

use kt_benches::{LOAD_BATCH, env_size, load, rocks, rotation_batch};
use kt_directory::storage::{StorageConfig, Store};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let n = env_size("N", 200_000) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("db");
    rt.block_on(async {
        let dir = rocks(&path).await;
        let started = Instant::now();
        load(&dir, n).await?;
        let load = started.elapsed();
        let started = Instant::now();
        dir.publish(rotation_batch(1, LOAD_BATCH, n)).await?;
        println!(
            "loaded {n} entries in {load:.1?}; one {LOAD_BATCH}-rotation epoch in {:.1?}",
            started.elapsed()
        );
        anyhow::Ok(())
    })?;
    let bytes_by_cf = rt.block_on(async {
        let storage = Store::open_rocks(&path, &StorageConfig::default()).await?;
        storage.compact().await?;
        storage.live_bytes_all().await
    })?;
    let mut total = 0;
    for (cf, bytes) in bytes_by_cf {
        total += bytes;
        println!("{cf}: {bytes} bytes, {:.1} B/entry", bytes as f64 / n as f64);
    }
    println!("total: {total} bytes, {:.1} B/entry", total as f64 / n as f64);
    Ok(())
}
