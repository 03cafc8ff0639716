//! Where an epoch's time and memory go: phase timings, the resident set sampled
//! through each phase, and memory by owner at each phase's end.
//!
//! Owners: the epoch store (the epoch's tree nodes), the prepare memo, RocksDB's block
//! cache (memtables are charged to it), its memtables and the `WriteBatch` in flight,
//! and the process's resident set. The publisher reports them as Prometheus series
//! (`kt_directory_epoch_phase_seconds`, `kt_directory_epoch_memory_bytes`), which
//! kt-load reads into its report after every epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the resident set is sampled while an epoch runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The process's resident set in bytes (`/proc/self/statm`), 0 if unreadable.
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}

/// CPU seconds (user + system) of the whole process (`/proc/self/stat`), 0 if unreadable.
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    stat_cpu_seconds(&stat)
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> f64 {
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    // Fields after comm: state(3) ... utime(14) stime(15), counted from 1.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (field(14) + field(15)) as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// CPU seconds (user + system) of this process's live threads whose name starts with
/// `prefix` (`/proc/self/task/*/stat`).
pub fn thread_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut secs = 0.0;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if stat[open + 1..close].starts_with(prefix) {
            secs += stat_cpu_seconds(&stat);
        }
    }
    secs
}

/// Samples the resident set in the background and keeps the highest value since the
/// last [`PeakSampler::take`]. Stops when dropped.
#[derive(Debug)]
pub struct PeakSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakSampler {
    /// Starts sampling every [`SAMPLE_EVERY`].
    pub fn start() -> PeakSampler {
        let peak = Arc::new(AtomicU64::new(rss_bytes()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&peak), Arc::clone(&stop));
        let spawned = std::thread::Builder::new()
            .name("kt-rss-sampler".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    p.fetch_max(rss_bytes(), Ordering::Relaxed);
                    std::thread::sleep(SAMPLE_EVERY);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the RSS sampler; phase peaks are end-of-phase samples");
        }
        PeakSampler { peak, stop }
    }

    /// The highest resident set since the last call (or the start), then restarts
    /// from the current one.
    pub fn take(&self) -> u64 {
        let now = rss_bytes();
        self.peak.swap(now, Ordering::Relaxed).max(now)
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The allocator's own figures: bytes the program holds allocated, and bytes the
/// allocator keeps resident for them (the difference is its overhead and what it has
/// not returned). `None` with glibc's allocator, which offers no safe interface.
pub fn allocator() -> Option<(u64, u64)> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        epoch::advance().ok()?;
        let allocated = stats::allocated::read().ok()? as u64;
        let resident = stats::resident::read().ok()? as u64;
        Some((allocated, resident))
    }
    #[cfg(not(feature = "jemalloc"))]
    None
}

/// Memory by owner at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owners {
    /// The process's resident set now.
    pub rss: u64,
    /// The highest resident set since the previous sample (the phase's peak).
    pub peak_rss: u64,
    /// The epoch store, by its own estimate.
    pub epoch_store: u64,
    /// The prepare memo, by its own estimate.
    pub prepare_memo: u64,
    /// RocksDB's block cache usage (memtables charged to it included).
    pub block_cache: u64,
    /// RocksDB's memtables.
    pub memtables: u64,
    /// The commit's `WriteBatch`, while one is being written.
    pub write_batch: u64,
    /// Bytes allocated, by the allocator's count (0 when it offers none).
    pub allocated: u64,
    /// Bytes the allocator keeps resident (0 when it offers none).
    pub allocator_resident: u64,
}

impl Owners {
    /// `(owner, bytes)` pairs, as the metric labels them.
    pub fn pairs(&self) -> [(&'static str, u64); 9] {
        [
            ("rss", self.rss),
            ("peak_rss", self.peak_rss),
            ("epoch_store", self.epoch_store),
            ("prepare_memo", self.prepare_memo),
            ("block_cache", self.block_cache),
            ("memtables", self.memtables),
            ("write_batch", self.write_batch),
            ("allocated", self.allocated),
            ("allocator_resident", self.allocator_resident),
        ]
    }
}

/// One phase's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Its name (a metric label).
    pub name: &'static str,
    /// How long it took.
    pub seconds: f64,
    /// Memory at its end, with its peak.
    pub memory: Owners,
}

/// Times the phases of one epoch.
#[derive(Debug)]
pub struct PhaseClock {
    started: Instant,
    last: Instant,
    /// The phases so far.
    pub phases: Vec<Phase>,
}

impl PhaseClock {
    /// Starts the first phase now.
    pub fn start() -> PhaseClock {
        let now = Instant::now();
        PhaseClock {
            started: now,
            last: now,
            phases: Vec::new(),
        }
    }

    /// Ends the current phase as `name` with memory `memory`, and starts the next.
    pub fn mark(&mut self, name: &'static str, memory: Owners) {
        let now = Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.phases.push(Phase { name, seconds, memory });
        self.last = now;
        tracing::info!(
            phase = name,
            secs = format!("{seconds:.2}"),
            rss_mb = memory.rss >> 20,
            peak_mb = memory.peak_rss >> 20,
            epoch_store_mb = memory.epoch_store >> 20,
            block_cache_mb = memory.block_cache >> 20,
            memtables_mb = memory.memtables >> 20,
            "epoch phase done"
        );
    }

    /// Since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_and_thread_cpu_are_read_from_proc() {
        assert!(rss_bytes() > 0);
        let spin = std::thread::Builder::new()
            .name("kt-test-spin".into())
            .spawn(|| {
                let t = Instant::now();
                let mut x = 0u64;
                while t.elapsed() < Duration::from_millis(300) {
                    x = x.wrapping_add(1);
                }
                std::hint::black_box(x);
                thread_cpu_seconds("kt-test-spin")
            })
            .expect("spawn");
        let secs = spin.join().expect("join");
        assert!(secs > 0.05, "a thread that spun 0.3 s shows CPU time: {secs}");
        assert_eq!(thread_cpu_seconds("no-thread-has-this-name"), 0.0);
        assert!(process_cpu_seconds() >= secs);
    }
}
