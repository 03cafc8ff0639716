//! The prepare stage: each queued label's current version and VRF node labels,
//! computed on a low-priority pool while the label waits for its epoch.
//!
//! akd's publish reads every label's latest version, then evaluates the VRF for
//! `(label, Stale, v)` and `(label, Fresh, v + 1)` (or `(label, Fresh, 1)` for a new
//! label): 400,000 evaluations for 200,000 rotations, 16–23 s of an epoch on 2 cores.
//! None of it needs the epoch: the inputs are the label and its version. So:
//!
//! - when an update is accepted (and, at start-up, for what is queued) its label is
//!   handed to the pool ([`Prepare::submit`]);
//! - a worker reads the label's state at the last committed epoch `E` and evaluates
//!   the VRF, and keeps the result *as of* `E` ([`Prepared`]);
//! - after each commit ([`Prepare::committed`]) the labels that epoch did not publish
//!   are still exact and move on to the new epoch; the ones it published have a new
//!   version, so if they are still queued they are prepared again;
//! - the writer takes what is prepared as of the epoch it builds on
//!   ([`Prepare::lookup`]) and computes the rest itself, exactly as before. Both give
//!   akd's own answers: `tests` below holds the memo to akd's defaults.
//!
//! The memo holds at most `max_labels` labels; beyond that, labels are simply not
//! prepared (the writer computes them). Workers run below the publisher's priority.

use crate::KtConfig;
use crate::storage::Store;
use crate::vrf::VrfSecret;
use akd::storage::Database;
use akd::storage::types::ValueStateRetrievalFlag;
use akd::{AkdLabel, AkdValue, NodeLabel, VersionFreshness};
use rustc_hash::FxBuildHasher;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Labels one worker takes at a time (one batched version read).
const WORK_BATCH: usize = 256;

/// What the writer needs of a label, as of one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The epoch this is exact for: the label's state after that epoch's commit.
    pub as_of: u64,
    /// The label's latest version and value at `as_of`, if it has one.
    pub current: Option<(u64, AkdValue)>,
    /// `VRF(label, Stale, version)`, for a label that has a version.
    pub stale: Option<NodeLabel>,
    /// `VRF(label, Fresh, version + 1)`, or `VRF(label, Fresh, 1)` for a new label.
    pub fresh: NodeLabel,
}

impl Prepared {
    /// Computes it: the VRF for `label` given its `current` state at `as_of`.
    pub fn compute(vrf: &VrfSecret, label: &AkdLabel, current: Option<(u64, AkdValue)>, as_of: u64) -> Prepared {
        let (stale, fresh) = match &current {
            Some((version, _)) => (
                Some(vrf.node_label::<KtConfig>(label, VersionFreshness::Stale, *version)),
                vrf.node_label::<KtConfig>(label, VersionFreshness::Fresh, version + 1),
            ),
            None => (None, vrf.node_label::<KtConfig>(label, VersionFreshness::Fresh, 1)),
        };
        Prepared {
            as_of,
            current,
            stale,
            fresh,
        }
    }
}

/// One label in the memo.
#[derive(Debug, Default)]
struct Entry {
    /// Accepted updates of this label not yet resolved by an epoch: the entry goes
    /// when this reaches 0.
    pending: u64,
    /// The result, once a worker has computed it for the current committed epoch.
    prepared: Option<Prepared>,
    /// In the work queue or with a worker.
    queued: bool,
}

#[derive(Debug, Default)]
struct Memo {
    /// The last committed epoch: results are exact for it.
    committed: u64,
    /// By label.
    entries: HashMap<Vec<u8>, Entry, FxBuildHasher>,
    /// Labels waiting for a worker.
    work: VecDeque<Vec<u8>>,
    /// Set when the pool should stop (the last handle is gone).
    stop: bool,
}

/// Prometheus series of the stage (registered by [`crate::metrics::Metrics`]).
#[derive(Debug, Clone)]
pub struct PrepareMetrics {
    /// Labels the pool computed.
    pub prepared: prometheus::IntCounter,
    /// Labels an epoch found prepared or had to compute itself: `source` = prepared / computed.
    pub epoch_labels: prometheus::IntCounterVec,
    /// Labels waiting for (or with) a worker.
    pub backlog: prometheus::IntGauge,
    /// Labels held in the memo.
    pub memo_labels: prometheus::IntGauge,
}

struct Inner {
    memo: Mutex<Memo>,
    /// Wakes workers when work arrives or the pool stops.
    wake: Condvar,
    /// Where versions are read.
    store: Store,
    /// The publisher's runtime: MySQL reads run on it (its connection pool lives there).
    runtime: tokio::runtime::Handle,
    /// The VRF key.
    vrf: VrfSecret,
    /// Most labels the memo holds.
    max_labels: usize,
    metrics: PrepareMetrics,
}

/// The prepare stage. Cheap to clone; the workers stop when the last clone is dropped.
#[derive(Clone)]
pub struct Prepare {
    inner: Arc<Inner>,
    /// Dropped with the last handle: tells the workers to stop.
    _stopper: Arc<Stopper>,
}

impl std::fmt::Debug for Prepare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepare")
            .field("max_labels", &self.inner.max_labels)
            .finish_non_exhaustive()
    }
}

/// Stops the workers when dropped.
struct Stopper(Arc<Inner>);

impl Drop for Stopper {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.wake.notify_all();
    }
}

/// How to run the pool.
#[derive(Debug, Clone)]
pub struct PrepareConfig {
    /// Worker threads (0: no pool; every label is computed by the writer).
    pub workers: usize,
    /// Nice levels the workers run below the caller (the HTTP API).
    pub nice: i32,
    /// Most labels held.
    pub max_labels: usize,
}

/// The thread-name prefix of the pool's threads, whose CPU time
/// ([`crate::publisher::memory::thread_cpu_seconds`]) is the stage's CPU.
pub const THREAD_NAME: &str = "kt-prepare";

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_gauges(&self, memo: &Memo) {
        let backlog = memo.entries.values().filter(|e| e.queued).count();
        self.metrics.backlog.set(i64::try_from(backlog).unwrap_or(i64::MAX));
        self.metrics
            .memo_labels
            .set(i64::try_from(memo.entries.len()).unwrap_or(i64::MAX));
    }
}

impl Prepare {
    /// Starts the pool, with results as of `committed`. Call it on the publisher's
    /// runtime.
    pub fn start(
        store: Store,
        vrf: VrfSecret,
        committed: u64,
        config: &PrepareConfig,
        metrics: PrepareMetrics,
    ) -> std::io::Result<Prepare> {
        let inner = Arc::new(Inner {
            memo: Mutex::new(Memo {
                committed,
                ..Memo::default()
            }),
            wake: Condvar::new(),
            store,
            runtime: tokio::runtime::Handle::current(),
            vrf,
            max_labels: config.max_labels,
            metrics,
        });
        for i in 0..config.workers {
            let inner = Arc::clone(&inner);
            let nice = config.nice;
            std::thread::Builder::new()
                .name(format!("{THREAD_NAME}-{i}"))
                .spawn(move || worker(&inner, nice))?;
        }
        Ok(Prepare {
            _stopper: Arc::new(Stopper(Arc::clone(&inner))),
            inner,
        })
    }

    /// Notes that updates of `labels` were accepted (one per item: a label may come
    /// more than once) and queues the ones not prepared yet.
    pub fn submit<'a>(&self, labels: impl IntoIterator<Item = &'a [u8]>) {
        let mut memo = self.inner.lock();
        let mut woke = false;
        for label in labels {
            let full = memo.entries.len() >= self.inner.max_labels;
            let entry = match memo.entries.get_mut(label) {
                Some(entry) => entry,
                None if full => continue,
                None => memo.entries.entry(label.to_vec()).or_default(),
            };
            entry.pending += 1;
            if entry.prepared.is_none() && !entry.queued {
                entry.queued = true;
                memo.work.push_back(label.to_vec());
                woke = true;
            }
        }
        self.inner.update_gauges(&memo);
        drop(memo);
        if woke {
            self.inner.wake.notify_all();
        }
    }

    /// What is prepared for each of `labels` as of epoch `epoch` (`None`: not
    /// prepared, or prepared for another epoch).
    pub fn lookup<'a>(&self, labels: impl IntoIterator<Item = &'a [u8]>, epoch: u64) -> Vec<Option<Prepared>> {
        let memo = self.inner.lock();
        labels
            .into_iter()
            .map(|label| {
                memo.entries
                    .get(label)
                    .and_then(|e| e.prepared.clone())
                    .filter(|p| p.as_of == epoch)
            })
            .collect()
    }

    /// Counts how an epoch's labels were found (for the metrics).
    pub fn count_epoch_labels(&self, prepared: u64, computed: u64) {
        let m = &self.inner.metrics.epoch_labels;
        m.with_label_values(&["prepared"]).inc_by(prepared);
        m.with_label_values(&["computed"]).inc_by(computed);
    }

    /// After the commit of `epoch` (or an epoch that changed nothing, then `epoch` is
    /// the same as before): `resolved` counts the updates of each label the epoch took
    /// from the queue, `published` holds the labels that got a new version.
    pub fn committed<S: std::hash::BuildHasher>(
        &self,
        epoch: u64,
        resolved: &HashMap<Vec<u8>, u64>,
        published: &HashMap<Vec<u8>, u64, S>,
    ) {
        let mut memo = self.inner.lock();
        memo.committed = epoch;
        for (label, n) in resolved {
            if let Some(entry) = memo.entries.get_mut(label) {
                entry.pending = entry.pending.saturating_sub(*n);
            }
        }
        let mut requeue = Vec::new();
        memo.entries.retain(|label, entry| {
            if published.contains_key(label) {
                entry.prepared = None;
            } else if let Some(p) = &mut entry.prepared {
                p.as_of = epoch;
            }
            if entry.pending == 0 && !entry.queued {
                return false;
            }
            if entry.prepared.is_none() && !entry.queued && entry.pending > 0 {
                entry.queued = true;
                requeue.push(label.clone());
            }
            true
        });
        let woke = !requeue.is_empty();
        memo.work.extend(requeue);
        self.inner.update_gauges(&memo);
        drop(memo);
        if woke {
            self.inner.wake.notify_all();
        }
    }

    /// Labels waiting for or with a worker.
    pub fn backlog(&self) -> usize {
        self.inner.lock().entries.values().filter(|e| e.queued).count()
    }

    /// Labels held, and an estimate of their heap bytes.
    pub fn memory(&self) -> (usize, u64) {
        let memo = self.inner.lock();
        let per_entry = (std::mem::size_of::<(Vec<u8>, Entry)>() + 1) as u64;
        let heap: u64 = memo
            .entries
            .iter()
            .map(|(k, e)| {
                k.len() as u64
                    + e.prepared
                        .as_ref()
                        .and_then(|p| p.current.as_ref())
                        .map_or(0, |c| c.1.0.len() as u64)
            })
            .sum();
        (memo.entries.len(), heap + per_entry * memo.entries.capacity() as u64)
    }
}

/// A worker: takes labels, reads their state at the committed epoch, evaluates the
/// VRF, keeps the result if no commit came in between (else queues them again).
fn worker(inner: &Arc<Inner>, nice: i32) {
    crate::server::lower_priority(nice);
    loop {
        let (labels, epoch) = {
            let mut memo = inner.lock();
            while memo.work.is_empty() && !memo.stop {
                memo = inner.wake.wait(memo).unwrap_or_else(PoisonError::into_inner);
            }
            if memo.stop {
                return;
            }
            let n = memo.work.len().min(WORK_BATCH);
            let labels: Vec<Vec<u8>> = memo.work.drain(..n).collect();
            (labels, memo.committed)
        };
        let users: Vec<AkdLabel> = labels.iter().map(|l| AkdLabel(l.clone())).collect();
        let flag = ValueStateRetrievalFlag::LeqEpoch(epoch);
        // RocksDB is read on this thread, so the stage's CPU time is this thread's.
        let states: Result<_, String> = match &inner.store {
            Store::Rocks(rocks) => rocks.user_state_versions_here(&users, flag).map_err(|e| e.to_string()),
            Store::Mysql(_) => inner
                .runtime
                .block_on(inner.store.get_user_state_versions(&users, flag))
                .map_err(|e| e.to_string()),
        };
        let mut states = match states {
            Ok(states) => states,
            Err(e) => {
                // The writer computes these itself; nothing is lost but time.
                tracing::warn!(error = %e, labels = labels.len(), "prepare: reading versions failed");
                let mut memo = inner.lock();
                for label in &labels {
                    if let Some(entry) = memo.entries.get_mut(label) {
                        entry.queued = false;
                    }
                }
                inner.update_gauges(&memo);
                continue;
            }
        };
        let results: Vec<Prepared> = users
            .iter()
            .map(|user| Prepared::compute(&inner.vrf, user, states.remove(user), epoch))
            .collect();
        inner.metrics.prepared.inc_by(results.len() as u64);
        let mut memo = inner.lock();
        if memo.committed != epoch {
            // A commit landed meanwhile: these may be stale. Again, as of the new one.
            memo.work.extend(labels);
            drop(memo);
            continue;
        }
        for (label, prepared) in labels.into_iter().zip(results) {
            if let Some(entry) = memo.entries.get_mut(&label) {
                entry.queued = false;
                entry.prepared = Some(prepared);
            }
        }
        inner.update_gauges(&memo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use akd::ecvrf::VRFKeyStorage;
    use proptest::prelude::*;

    /// akd's default trait methods on the bare secret: the reference.
    #[derive(Clone)]
    struct Reference([u8; 32]);

    #[async_trait::async_trait]
    impl VRFKeyStorage for Reference {
        async fn retrieve(&self) -> Result<Vec<u8>, akd::ecvrf::VrfError> {
            Ok(self.0.to_vec())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The memo's node labels are akd's: what `Directory::publish` would compute
        /// with its default `get_node_labels`, for new and existing labels.
        #[test]
        fn prepared_labels_are_akds(seed in any::<[u8; 32]>(), label in proptest::collection::vec(any::<u8>(), 1..40),
                                    version in proptest::option::of(1u64..1_000_000)) {
            let ours = VrfSecret::from_bytes(seed);
            let reference = Reference(seed);
            let akd_label = AkdLabel(label);
            let current = version.map(|v| (v, AkdValue(vec![1])));
            let got = Prepared::compute(&ours, &akd_label, current.clone(), 7);
            let value = AkdValue(vec![2]);
            let asked: Vec<_> = match version {
                Some(v) => vec![
                    (akd_label.clone(), VersionFreshness::Stale, v, value.clone()),
                    (akd_label.clone(), VersionFreshness::Fresh, v + 1, value.clone()),
                ],
                None => vec![(akd_label.clone(), VersionFreshness::Fresh, 1, value.clone())],
            };
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let want: HashMap<_, _> = rt
                .block_on(reference.get_node_labels::<KtConfig>(&asked))
                .expect("akd labels")
                .into_iter()
                .map(|((_, f, v, _), l)| ((f == VersionFreshness::Fresh, v), l))
                .collect();
            prop_assert_eq!(got.current, current);
            match version {
                Some(v) => {
                    prop_assert_eq!(got.stale, want.get(&(false, v)).copied());
                    prop_assert_eq!(Some(got.fresh), want.get(&(true, v + 1)).copied());
                }
                None => {
                    prop_assert_eq!(got.stale, None);
                    prop_assert_eq!(Some(got.fresh), want.get(&(true, 1)).copied());
                }
            }
        }
    }
}
