//! Publish throughput: B updates (key rotations) into a directory of N entries, on our
//! RocksDB backend and on akd's in-memory backend, in the same run.
//!
//! Sizes: `KT_BENCH_ENTRIES` (N, default 100,000) and `KT_BENCH_BATCH` (B, default
//! 10,000). Run: `cargo bench --profile release -p kt-benches --bench publish`.
//! Criterion reports each backend's time per publish; the ratio is the figure to quote.

use akd::storage::Database;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kt_benches::{DirectoryOn, env_size, load, memory, rocks, rotation_batch};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One backend's measurement. Each iteration publishes a fresh epoch of rotations (a
/// repeated batch would be skipped by akd as unchanged).
fn bench_backend<S: Database + 'static>(
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

fn publish(c: &mut Criterion) {
    let entries = env_size("KT_BENCH_ENTRIES", 100_000) as u64;
    let batch = env_size("KT_BENCH_BATCH", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");

    let (rocks_dir, mem_dir) = rt.block_on(async {
        let r = rocks(&tmp.path().join("db")).await;
        load(&r, entries).await.expect("load rocksdb");
        let m = memory().await;
        load(&m, entries).await.expect("load memory");
        (r, m)
    });

    let mut group = c.benchmark_group(format!("publish_{batch}_into_{entries}"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(batch as u64));
    bench_backend(&mut group, &rt, "rocksdb", &rocks_dir, batch, entries);
    bench_backend(&mut group, &rt, "memory", &mem_dir, batch, entries);
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
