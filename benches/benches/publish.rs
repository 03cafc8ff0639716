//! Publish: B updates (key rotations) into a directory of N entries, in the same run:
//!
//! - `pipeline_prepared`: our publisher (`kt_directory::publisher`) on RocksDB, its
//!   prepare stage having caught up before the epoch (as in production, where updates
//!   arrive over the interval); the time is the publish alone, from taking the batch
//!   to serving the signed head;
//! - `pipeline_cold`: the same publisher with no prepare workers: the epoch reads every
//!   version and evaluates every VRF itself;
//! - `akd_rocksdb`: akd's own `Directory::publish` on our RocksDB `Database` (what the
//!   publisher ran before the pipeline);
//! - `akd_memory`: akd's own `Directory::publish` on its in-memory backend, cache on: the
//!   yardstick.
//!
//! Sizes: `KT_BENCH_ENTRIES` (N, default 100,000) and `KT_BENCH_BATCH` (B, default
//! 10,000). Run: `cargo bench --profile release -p kt-benches --bench publish`.
//! Criterion reports each arm's time per publish; the ratios are the figures to quote.

use akd::storage::Database;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kt_benches::{DirectoryOn, env_size, load, load_batch, memory, rocks, rotation_batch};
use kt_directory::datadir::{FORMAT_VERSION, Keys, Manifest};
use kt_directory::metrics::Metrics;
use kt_directory::publisher::prepare::PrepareConfig;
use kt_directory::publisher::{Intake, Publisher, PublisherConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// akd's publish on `dir`. Each iteration publishes a fresh epoch of rotations (a
/// repeated batch would be skipped by akd as unchanged).
fn bench_akd<S: Database + 'static>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    dir: &DirectoryOn<S>,
    batch: usize,
    entries: u64,
) {
    let epoch = AtomicU64::new(1_000_000);
    group.bench_function(BenchmarkId::new(name, entries), |b| {
        b.to_async(rt).iter_custom(|iters| {
            let epoch = &epoch;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let updates = rotation_batch(epoch.fetch_add(1, Ordering::Relaxed), batch, entries);
                    let t = Instant::now();
                    dir.publish(updates).await.expect("publish");
                    total += t.elapsed();
                }
                total
            }
        })
    });
}

/// Our publisher on a fresh RocksDB, `entries` loaded.
async fn pipeline(path: &std::path::Path, workers: usize, entries: u64) -> (Publisher, Intake) {
    let keys = Keys {
        manifest: Manifest {
            format: FORMAT_VERSION,
            namespace: "bench.kt.invalid".into(),
        },
        signing: ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        vrf: kt_benches::vrf(),
        token_hash: blake3::hash(b"bench"),
    };
    let config = PublisherConfig {
        backend: kt_directory::storage::Backend::Rocks,
        db_path: path.to_owned(),
        storage: kt_directory::storage::StorageConfig::default(),
        max_per_epoch: kt_benches::LOAD_BATCH.max(100_000),
        akd_cache: kt_directory::AkdCache::publisher(),
        prepare: PrepareConfig {
            workers,
            ..PrepareConfig::for_epochs_of(100_000)
        },
    };
    let (mut publisher, shared) = Publisher::open(config, keys, Metrics::new().expect("metrics"))
        .await
        .expect("open publisher");
    let intake = shared.intake.expect("intake");
    let mut start = 0;
    while start < entries {
        let len = (kt_benches::LOAD_BATCH as u64).min(entries - start);
        intake.accept(as_updates(load_batch(start, len))).await.expect("accept");
        publisher.publish().await.expect("load epoch");
        start += len;
    }
    (publisher, intake)
}

fn as_updates(batch: Vec<(akd::AkdLabel, akd::AkdValue)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    batch.into_iter().map(|(l, v)| (l.0, v.0)).collect()
}

/// Our publish: the updates are queued (and, with workers, prepared) untimed; the
/// epoch is timed.
fn bench_pipeline(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    (publisher, intake): &mut (Publisher, Intake),
    batch: usize,
    entries: u64,
) {
    let epoch = AtomicU64::new(1_000_000);
    let publisher = tokio::sync::Mutex::new(publisher);
    group.bench_function(BenchmarkId::new(name, entries), |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (epoch, publisher, intake) = (&epoch, &publisher, &*intake);
            async move {
                let mut publisher = publisher.lock().await;
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let updates = rotation_batch(epoch.fetch_add(1, Ordering::Relaxed), batch, entries);
                    intake.accept(as_updates(updates)).await.expect("accept");
                    while intake.prepare.backlog() > 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let t = Instant::now();
                    publisher.publish().await.expect("publish");
                    total += t.elapsed();
                }
                total
            }
        })
    });
}

fn publish(c: &mut Criterion) {
    let entries = env_size("KT_BENCH_ENTRIES", 100_000) as u64;
    let batch = env_size("KT_BENCH_BATCH", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");

    let (mut prepared, mut cold, rocks_dir, mem_dir) = rt.block_on(async {
        let p = pipeline(&tmp.path().join("prepared"), 2, entries).await;
        let c = pipeline(&tmp.path().join("cold"), 0, entries).await;
        let r = rocks(&tmp.path().join("akd")).await;
        load(&r, entries).await.expect("load rocksdb");
        let m = memory().await;
        load(&m, entries).await.expect("load memory");
        (p, c, r, m)
    });

    let mut group = c.benchmark_group(format!("publish_{batch}_into_{entries}"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(batch as u64));
    bench_pipeline(&mut group, &rt, "pipeline_prepared", &mut prepared, batch, entries);
    bench_pipeline(&mut group, &rt, "pipeline_cold", &mut cold, batch, entries);
    bench_akd(&mut group, &rt, "akd_rocksdb", &rocks_dir, batch, entries);
    bench_akd(&mut group, &rt, "akd_memory", &mem_dir, batch, entries);
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
