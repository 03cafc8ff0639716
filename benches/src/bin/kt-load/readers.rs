//! Concurrent HTTP lookups of existing labels: how fast, how slow at the tail, how big.

use crate::directory::Directory;
use kt_client::http::DirectoryClient;
use kt_client::verify::PinnedKeys;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one read phase measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReadStats {
    /// Concurrent clients.
    pub clients: usize,
    /// Answers received (successes and errors).
    pub requests: u64,
    /// Failed requests (transport errors, non-200 answers).
    pub errors: u64,
    /// Answers whose proof did not verify (a correctness failure, never load).
    pub bad_proofs: u64,
    /// Answers verified (head signature and akd proof), one in `verify_every`.
    pub verified: u64,
    /// Length of the phase, seconds.
    pub secs: f64,
    /// Successful lookups per second.
    pub per_sec: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Slowest answer, ms.
    pub max_ms: f64,
    /// Mean size of the akd lookup proof (protobuf bytes, before base64; the JSON
    /// answer adds the signed head and the label).
    pub proof_bytes: f64,
    /// CPU the directory process used during the phase (all its threads), seconds.
    pub server_cpu_secs: f64,
    /// CPU this harness used meanwhile (the clients share the machine), seconds.
    pub harness_cpu_secs: f64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// CPU seconds (user and system) used so far by process `pid` (`self` for this one),
/// from `/proc/PID/stat` (its times are in USER_HZ, 100 per second on Linux).
pub fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces: count from its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// When a read phase ends.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Longest phase.
    pub max_time: Duration,
    /// Most requests.
    pub max_requests: u64,
    /// Verify one answer in this many.
    pub verify_every: u64,
    /// Offered load, lookups per second over all clients (`None`: each client sends
    /// its next request as soon as the last is answered, which saturates the server).
    pub rate: Option<f64>,
}

/// Runs `clients` lookup loops over labels `load-0 .. load-{population}` until `stop`
/// is set or a bound is reached.
pub async fn run(
    dir: &Directory,
    clients: usize,
    population: u64,
    bounds: Bounds,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> ReadStats {
    let server = dir.pid().to_string();
    let (server_cpu, harness_cpu) = (cpu_secs(&server), cpu_secs("self"));
    let started = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = dir.reader.clone();
        let keys = dir.keys.clone();
        let (stop, issued, bounds) = (Arc::clone(&stop), Arc::clone(&issued), bounds.clone());
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (c as u64) << 32);
            client_loop(&client, &keys, population, &bounds, &stop, &issued, started, &mut rng).await
        });
    }
    let mut all = Tally::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(t) => all.merge(t),
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert_with(|| format!("reader task: {e}"));
            }
        }
    }
    let mut stats = all.finish(clients, started.elapsed());
    stats.server_cpu_secs = cpu_secs(&server) - server_cpu;
    stats.harness_cpu_secs = cpu_secs("self") - harness_cpu;
    stats
}

/// One client's raw figures.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    bad_proofs: u64,
    verified: u64,
    proof_bytes: u64,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.bad_proofs += other.bad_proofs;
        self.verified += other.verified;
        self.proof_bytes += other.proof_bytes;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn finish(mut self, clients: usize, elapsed: Duration) -> ReadStats {
        self.latencies_us.sort_unstable();
        let ok = self.latencies_us.len() as u64;
        let pct = |p: f64| {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len()) - 1;
            f64::from(self.latencies_us[i]) / 1000.0
        };
        let secs = elapsed.as_secs_f64();
        ReadStats {
            clients,
            requests: ok + self.errors + self.bad_proofs,
            errors: self.errors,
            bad_proofs: self.bad_proofs,
            verified: self.verified,
            secs,
            per_sec: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
            proof_bytes: if ok > 0 {
                self.proof_bytes as f64 / ok as f64
            } else {
                0.0
            },
            server_cpu_secs: 0.0,
            harness_cpu_secs: 0.0,
            first_error: self.first_error,
        }
    }
}

/// An error with its causes, `a: b: c` (a transport error says little on its own).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[allow(clippy::too_many_arguments)]
async fn client_loop(
    client: &DirectoryClient,
    keys: &PinnedKeys,
    population: u64,
    bounds: &Bounds,
    stop: &AtomicBool,
    issued: &AtomicU64,
    started: Instant,
    rng: &mut rand::rngs::StdRng,
) -> Tally {
    let mut t = Tally::default();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < bounds.max_time {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if n >= bounds.max_requests {
            break;
        }
        if let Some(rate) = bounds.rate {
            // Request n is due n/rate seconds after the start, whichever client sends it.
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let label = kt_benches::load_label_str(rng.gen_range(0..population));
        let sent = Instant::now();
        let result = client.lookup(&label).await;
        let latency = sent.elapsed();
        match result {
            Ok(answer) => {
                t.proof_bytes += (answer.proof.len() as u64 / 4) * 3;
                if n.is_multiple_of(bounds.verify_every.max(1)) {
                    t.verified += 1;
                    if let Err(e) = keys.lookup_response(&label, &answer) {
                        t.bad_proofs += 1;
                        t.first_error
                            .get_or_insert_with(|| format!("lookup {label} did not verify: {e}"));
                        continue;
                    }
                }
                t.latencies_us
                    .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            }
            Err(e) => {
                t.errors += 1;
                t.first_error.get_or_insert_with(|| error_chain(&e));
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_grows() {
        let before = cpu_secs("self");
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_secs("self") > before, "busy-looping 200 ms must add CPU time");
    }
}
