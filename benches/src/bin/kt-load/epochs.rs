//! `kt-load run`: build (or resume) the directory, measure idle lookups, then publish
//! and measure epochs of rotations with lookups running against them.

use crate::RunArgs;
use crate::directory::{self, Directory};
use crate::readers::{self, Bounds, ReadStats};
use crate::report::{Build, Disk, EpochReport, Machine, RunReport};
use anyhow::{Context, bail};
use base64::Engine as _;
use indicatif::{ProgressBar, ProgressStyle};
use kt_client::wire::UpdateItem;
use kt_directory::storage::{Cf, StorageConfig, Store};
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Thread-name prefix of the directory's prepare stage (`kt_directory::publisher::prepare`).
const PREPARE_THREADS: &str = kt_directory::publisher::prepare::THREAD_NAME;
/// Thread-name prefix of the directory's HTTP runtime (tokio's default name,
/// `tokio-rt-worker`, or `tokio-runtime-w(orker)` in older releases): the lookups' CPU.
const HTTP_THREADS: &str = "tokio-r";

/// How far a data directory has been built, kept next to it (`kt-load.json`) so an
/// interrupted build resumes. Written after each epoch; an epoch published just before
/// a crash is replayed with the same values, which akd skips as unchanged.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Progress {
    /// Entries `load-0 .. load-{entries}` are in the directory.
    entries: u64,
    /// Rotations published by measured epochs so far.
    rotations: u64,
}

impl Progress {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("kt-load.json")
    }

    fn load(data_dir: &Path) -> anyhow::Result<Progress> {
        match std::fs::read(Self::path(data_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("parsing kt-load.json"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Progress::default()),
            Err(e) => Err(e).context("reading kt-load.json"),
        }
    }

    fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let tmp = data_dir.join("kt-load.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, Self::path(data_dir))?;
        Ok(())
    }
}

/// The value of a loaded entry's first version (deterministic, so a replay is a no-op).
fn first_value(i: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(blake3::hash(kt_benches::load_label_str(i).as_bytes()).as_bytes())
}

/// Entry point of `kt-load run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.entries == 0 || args.updates == 0 || args.load_batch == 0 {
        bail!("--entries, --updates and --load-batch must be at least 1");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let bin = directory::binary(args.directory_bin.as_deref())?;
    directory::init(&bin, &args.data_dir)?;
    let baseline = if args.baseline_entries > 0 {
        let b = crate::baseline::measure(args.baseline_entries, args.read_secs).await?;
        tracing::info!(
            entries = b.entries,
            per_sec = format!("{:.0}", b.per_sec),
            "akd in-memory lookup rate"
        );
        Some(b)
    } else {
        None
    };
    let publish_yardstick = if args.baseline_entries > 0 {
        let y = crate::yardstick::in_child(args.baseline_entries, args.updates, 0x7961_7264)?;
        tracing::info!(
            entries = y.entries,
            updates = y.updates,
            publish_s = format!("{:.1}", y.publish_secs),
            cpu_s = format!("{:.1}", y.cpu_secs),
            peak_gb = format!("{:.2}", y.peak_rss_bytes as f64 / 1e9),
            "akd in-memory publish"
        );
        Some(y)
    } else {
        None
    };
    let dir = Directory::start(
        &bin,
        &args.data_dir,
        &args.out,
        args.load_batch.max(args.updates),
        args.block_cache_mib,
        &args.directory_log,
        args.mysql_url.as_deref(),
    )
    .await?;
    tracing::info!(url = %dir.url, log = %args.out.join("directory.log").display(), "directory started");
    let mut progress = Progress::load(&args.data_dir)?;
    let build = build(&dir, &args, &mut progress).await?;
    let population = progress.entries;

    let bounds = Bounds {
        max_time: Duration::from_secs(args.read_secs),
        max_requests: args.max_reads,
        verify_every: args.verify_every,
        rate: None,
    };
    if args.warmup_secs > 0 {
        let warmup = Bounds {
            max_time: Duration::from_secs(args.warmup_secs),
            ..bounds.clone()
        };
        readers::run(&dir, args.readers, population, warmup, Arc::default(), !started_unix).await;
    }
    let idle_reads = readers::run(&dir, args.readers, population, bounds, Arc::default(), started_unix).await;
    tracing::info!(
        per_sec = format!("{:.0}", idle_reads.per_sec),
        p99_ms = format!("{:.1}", idle_reads.p99_ms),
        errors = idle_reads.errors,
        "idle lookups"
    );
    check_reads(&idle_reads)?;

    let bar = ProgressBar::new(args.epochs).with_style(ProgressStyle::with_template(
        "epochs {bar:20} {pos}/{len} {msg} [{elapsed}]",
    )?);
    bar.enable_steady_tick(Duration::from_secs(1));
    let mut epochs = Vec::new();
    for _ in 0..args.epochs {
        let report = epoch(&dir, &args, &mut progress, &bar).await?;
        tracing::info!(
            epoch = report.epoch,
            publish_s = format!("{:.1}", report.publish_secs),
            audit_blob_s = format!("{:.1}", report.audit_blob_secs),
            auditor_s = format!("{:.1}", report.auditor_verify_secs),
            lookups_per_s = format!("{:.0}", report.reads.per_sec),
            p99_ms = format!("{:.1}", report.reads.p99_ms),
            "epoch measured"
        );
        check_reads(&report.reads)?;
        epochs.push(report);
        bar.inc(1);
    }
    bar.finish_and_clear();
    dir.stop()?;
    let db_path = kt_directory::DataDir::new(&args.data_dir).db();
    let versions = population + progress.rotations;
    let (disk, disk_compacted, db_dir_bytes) = match &args.mysql_url {
        None => {
            let (disk, compacted) = measure_disk(&db_path, population, versions, args.compact).await?;
            (disk, compacted, dir_bytes(&db_path)?)
        }
        Some(url) => {
            let disk = measure_mysql_disk(url, population, versions).await?;
            let total = disk.bytes.values().sum();
            (disk, None, total)
        }
    };
    let report = RunReport {
        started_unix,
        machine: Machine::detect(),
        git: git_describe(),
        entries: population,
        updates_per_epoch: args.updates,
        publish_read_rate: args.offered_read_rate(),
        build,
        baseline,
        publish_yardstick,
        idle_reads,
        epochs,
        storage: if args.mysql_url.is_some() { "mysql" } else { "rocksdb" }.into(),
        db_dir_bytes,
        disk,
        disk_compacted,
    };
    let stem = args.out.join(format!("run-{}-{started_unix}", population));
    std::fs::write(stem.with_extension("json"), serde_json::to_vec_pretty(&report)?)?;
    let md = report.markdown();
    std::fs::write(stem.with_extension("md"), &md)?;
    println!("{md}");
    println!("report: {}", stem.with_extension("json").display());
    Ok(())
}

/// A proof that does not verify ends the run: the figures would be of a broken
/// directory. Failed requests are counted and reported (and logged here).
fn check_reads(reads: &ReadStats) -> anyhow::Result<()> {
    if reads.bad_proofs > 0 {
        bail!(
            "{} of {} verified lookups did not verify; first: {}",
            reads.bad_proofs,
            reads.verified,
            reads.first_error.as_deref().unwrap_or("?")
        );
    }
    if reads.errors > 0 {
        tracing::warn!(
            errors = reads.errors,
            requests = reads.requests,
            first = reads.first_error.as_deref().unwrap_or("?"),
            "lookups failed"
        );
    }
    Ok(())
}

/// Adds entries until `args.entries` are in, `args.load_batch` per epoch.
async fn build(dir: &Directory, args: &RunArgs, progress: &mut Progress) -> anyhow::Result<Build> {
    let mut b = Build::default();
    if progress.entries >= args.entries {
        return Ok(b);
    }
    let bar = ProgressBar::new(args.entries).with_style(ProgressStyle::with_template(
        "build {bar:30} {pos}/{len} entries {per_sec} eta {eta} {msg}",
    )?);
    bar.set_position(progress.entries);
    bar.enable_steady_tick(Duration::from_secs(1));
    let started = Instant::now();
    while progress.entries < args.entries {
        let start = progress.entries;
        let len = args.load_batch.min(args.entries - start);
        let updates = (start..start + len)
            .map(|i| UpdateItem {
                label: kt_benches::load_label_str(i),
                value: first_value(i),
            })
            .collect();
        bar.set_message("queueing");
        dir.post_updates(updates).await?;
        bar.set_message("publishing");
        let t = Instant::now();
        let epoch = dir.publish().await?;
        progress.entries = start + len;
        progress.save(&args.data_dir)?;
        b.added += len;
        b.epochs += 1;
        bar.set_position(progress.entries);
        tracing::info!(
            epoch = epoch.epoch,
            entries = progress.entries,
            secs = format!("{:.1}", t.elapsed().as_secs_f64()),
            "build epoch"
        );
    }
    b.secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(b)
}

/// One measured epoch: queue the rotations, publish them with lookups running, then let
/// the auditor's check run on the blob.
async fn epoch(
    dir: &Directory,
    args: &RunArgs,
    progress: &mut Progress,
    bar: &ProgressBar,
) -> anyhow::Result<EpochReport> {
    let population = progress.entries;
    let count = args.updates.min(population);
    // Seeded by the epoch about to be published: a run interrupted after its publish
    // committed (so before `kt-load.json` was saved) does not replay the same values,
    // which akd would skip as unchanged.
    let seed = dir.reader.info().await?.latest_epoch ^ 0x6b74_6c6f_6164;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let picked = rand::seq::index::sample(&mut rng, usize::try_from(population)?, usize::try_from(count)?);
    let updates: Vec<UpdateItem> = picked
        .into_iter()
        .map(|i| {
            let mut key = [0u8; 32];
            rng.fill_bytes(&mut key);
            UpdateItem {
                label: kt_benches::load_label_str(i as u64),
                value: base64::engine::general_purpose::STANDARD.encode(key),
            }
        })
        .collect();
    let pid = dir.pid();
    let prepare_cpu_before = directory::thread_cpu_secs(pid, &[PREPARE_THREADS]);
    bar.set_message("queueing");
    let t = Instant::now();
    if args.spread_secs > 0.0 {
        // As in production: the epoch's updates arrive over the interval.
        let chunks = updates.len().div_ceil(directory::UPDATES_PER_REQUEST).max(1);
        let pause = Duration::from_secs_f64(args.spread_secs / chunks as f64);
        for chunk in updates.chunks(directory::UPDATES_PER_REQUEST) {
            let next = Instant::now() + pause;
            dir.post_updates(chunk.to_vec()).await?;
            tokio::time::sleep_until(next.into()).await;
        }
    } else {
        dir.post_updates(updates).await?;
    }
    let intake_secs = t.elapsed().as_secs_f64();
    bar.set_message("waiting for the prepare stage");
    let t = Instant::now();
    loop {
        let s = dir.scrape().await?;
        if s.prepare_backlog == 0 {
            break;
        }
        if t.elapsed() > Duration::from_secs(args.max_prepare_wait_secs) {
            tracing::warn!(
                backlog = s.prepare_backlog,
                "the prepare stage did not catch up; publishing anyway"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let prepare_wait_secs = t.elapsed().as_secs_f64();
    let prepare_cpu_secs = directory::thread_cpu_secs(pid, &[PREPARE_THREADS]) - prepare_cpu_before;

    let before = dir.scrape().await?;
    if let Err(e) = dir.reset_peak_rss() {
        tracing::warn!(error = %e, "the publisher's peak RSS is measured since start");
    }
    bar.set_message("publishing, with lookups");
    let stop = Arc::new(AtomicBool::new(false));
    let bounds = Bounds {
        max_time: Duration::from_secs(args.max_read_secs),
        max_requests: args.max_reads,
        verify_every: args.verify_every,
        rate: args.offered_read_rate(),
    };
    let (process_cpu_before, http_cpu_before) = (
        readers::cpu_secs(&pid.to_string()),
        directory::thread_cpu_secs(pid, &[HTTP_THREADS]),
    );
    let reads = readers::run(dir, args.readers, population, bounds, Arc::clone(&stop), seed);
    let publish = async {
        let t = Instant::now();
        let result = dir.publish().await;
        stop.store(true, Ordering::Relaxed);
        result.map(|r| (r, t.elapsed().as_secs_f64()))
    };
    let (reads, published) = tokio::join!(reads, publish);
    let (response, epoch_wall_secs) = published?;
    let lookup_cpu_secs = directory::thread_cpu_secs(pid, &[HTTP_THREADS]) - http_cpu_before;
    let publish_cpu_secs = readers::cpu_secs(&pid.to_string()) - process_cpu_before - lookup_cpu_secs;
    if !response.published {
        bail!("the epoch published nothing (all {count} rotations unchanged?)");
    }
    let after = dir.scrape().await?;
    let publisher_peak_rss_bytes = dir.peak_rss()?;
    let publish_secs = after.publish_seconds - before.publish_seconds;
    progress.rotations += response.taken;
    progress.save(&args.data_dir)?;

    // The audit blob is built in the background after the head is served.
    bar.set_message("waiting for the audit blob");
    let t = Instant::now();
    let blob_cpu_before = readers::cpu_secs(&pid.to_string());
    let blob_done = loop {
        let s = dir.scrape().await?;
        if s.audit_blobs > before.audit_blobs {
            break s;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            bail!(
                "the audit blob of epoch {} was not stored within 30 minutes",
                response.epoch
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let audit_blob_secs = blob_done.audit_blob_seconds - before.audit_blob_seconds;
    let blob_cpu_secs = readers::cpu_secs(&pid.to_string()) - blob_cpu_before;
    let peak_rss_with_blob_bytes = dir.peak_rss()?;
    let label_count = |s: &directory::Scrape, k: &str| s.epoch_labels.get(k).copied().unwrap_or(0);

    bar.set_message("auditor verifying");
    let head = &response.head.head;
    let name = format!(
        "{}/{}/{}",
        head.epoch,
        hex::encode(head.previous_root),
        hex::encode(head.root)
    );
    let blob = dir.reader.audit_blob(&name, 8 << 30).await?;
    // What the auditor's check reads, apart from the reports (`summary` takes every
    // JSON file of `out`).
    let scratch = args.out.join("auditor-input");
    std::fs::create_dir_all(&scratch)?;
    let blob_path = scratch.join("blob.bin");
    let head_path = scratch.join("head.json");
    std::fs::write(&blob_path, &blob)?;
    std::fs::write(&head_path, serde_json::to_vec(&response.head)?)?;
    drop(blob);
    let verified = crate::verify_blob::in_child(&blob_path, &head_path)?;
    std::fs::remove_file(&blob_path)?;

    let versions = population + progress.rotations;
    Ok(EpochReport {
        epoch: head.epoch,
        updates: count,
        published: after.published - before.published,
        proof_leaves: verified.updates,
        intake_secs,
        spread_secs: args.spread_secs,
        prepare_wait_secs,
        prepare_cpu_secs,
        publish_cpu_secs,
        lookup_cpu_secs,
        blob_cpu_secs,
        prepared_labels: label_count(&after, "prepared") - label_count(&before, "prepared"),
        computed_labels: label_count(&after, "computed") - label_count(&before, "computed"),
        fallback_reads: after.fallback_reads - before.fallback_reads,
        phases: after.phases.into_iter().collect(),
        memory: after
            .memory
            .into_iter()
            .map(|(phase, owners)| (phase, owners.into_iter().collect()))
            .collect(),
        publish_secs,
        audit_blob_secs,
        epoch_wall_secs,
        updates_per_sec: count as f64 / (publish_secs + audit_blob_secs).max(1e-9),
        audit_blob_bytes: blob_done.audit_blob_bytes,
        peak_rss_with_blob_bytes,
        auditor_verify_secs: verified.secs,
        auditor_peak_rss_bytes: verified.peak_rss_bytes,
        publisher_peak_rss_bytes,
        disk: Disk::new(after.storage.into_iter().collect(), population, versions),
        versions,
        reads,
    })
}

/// Opens the stopped directory's database, flushes it and reads the live bytes of each
/// column family; with `compact`, again after a full compaction.
async fn measure_disk(db: &Path, entries: u64, versions: u64, compact: bool) -> anyhow::Result<(Disk, Option<Disk>)> {
    let storage = Store::open_rocks(db, &StorageConfig::default()).await?;
    storage.flush().await?;
    let read = |all: Vec<(Cf, u64)>| {
        Disk::new(
            all.into_iter().map(|(cf, b)| (cf.name().to_owned(), b)).collect(),
            entries,
            versions,
        )
    };
    let flushed = read(storage.live_bytes_all().await?);
    let compacted = if compact {
        tracing::info!("compacting the database");
        storage.compact().await?;
        Some(read(storage.live_bytes_all().await?))
    } else {
        None
    };
    Ok((flushed, compacted))
}

/// The MySQL tables' sizes as the server reports them, after `ANALYZE TABLE` brings
/// its statistics up to date.
async fn measure_mysql_disk(url: &str, entries: u64, versions: u64) -> anyhow::Result<Disk> {
    let storage = Store::open_mysql(url, false).await?;
    storage.flush().await?;
    let all = storage.live_bytes_all().await?;
    Ok(Disk::new(
        all.into_iter().map(|(cf, b)| (cf.name().to_owned(), b)).collect(),
        entries,
        versions,
    ))
}

/// Bytes of every file under `path`.
fn dir_bytes(path: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// `git describe --always --dirty` of the current directory, if it is a checkout.
fn git_describe() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
