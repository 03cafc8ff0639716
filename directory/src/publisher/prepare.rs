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
    /// Entries with `queued` set (the backlog), counted as the flag flips.
    queued: usize,
    /// Labels prepared (or moved to a new epoch) since [`Prepare::take_ready`] last
    /// ran: what the staging of the next epoch's nodes has not seen yet.
    ready: Vec<Vec<u8>>,
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
    /// Whether any worker runs: without one, nothing is held.
    workers: bool,
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

/// Stops the workers when dropped, and waits for them: a worker holds the store, and
/// RocksDB must be closed before the process exits (its background threads abort on
/// mutexes that static destructors have already torn down).
struct Stopper {
    inner: Arc<Inner>,
    /// The workers, joined on drop; each finishes at most one batch first.
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.wake.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        for worker in workers {
            if worker.join().is_err() {
                tracing::error!("a prepare worker panicked");
            }
        }
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
        self.metrics.backlog.set(i64::try_from(memo.queued).unwrap_or(i64::MAX));
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
            workers: config.workers > 0,
            metrics,
        });
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            let shared = Arc::clone(&inner);
            let nice = config.nice;
            let spawned = std::thread::Builder::new()
                .name(format!("{THREAD_NAME}-{i}"))
                .spawn(move || worker(&shared, nice));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    // The ones started stop with the stopper.
                    drop(Stopper {
                        inner: Arc::clone(&inner),
                        workers: Mutex::new(workers),
                    });
                    return Err(e);
                }
            }
        }
        Ok(Prepare {
            _stopper: Arc::new(Stopper {
                inner: Arc::clone(&inner),
                workers: Mutex::new(workers),
            }),
            inner,
        })
    }

    /// Notes that updates of `labels` are being accepted (one per item: a label may
    /// come more than once) and queues the ones not prepared yet. Call it *before* the
    /// updates become visible in the queue, so that the epoch resolving them finds
    /// them counted; [`Prepare::withdraw`] them if the write fails.
    pub fn submit<'a>(&self, labels: impl IntoIterator<Item = &'a [u8]>) {
        if !self.inner.workers {
            return;
        }
        let mut memo = self.inner.lock();
        let mut woke = false;
        let Memo {
            entries, work, queued, ..
        } = &mut *memo;
        for label in labels {
            let full = entries.len() >= self.inner.max_labels;
            let entry = match entries.get_mut(label) {
                Some(entry) => entry,
                None if full => continue,
                None => entries.entry(label.to_vec()).or_default(),
            };
            entry.pending += 1;
            if entry.prepared.is_none() && !entry.queued {
                entry.queued = true;
                *queued += 1;
                work.push_back(label.to_vec());
                woke = true;
            }
        }
        self.inner.update_gauges(&memo);
        drop(memo);
        if woke {
            self.inner.wake.notify_all();
        }
    }

    /// Takes back a [`Prepare::submit`] whose updates were not accepted.
    pub fn withdraw<'a>(&self, labels: impl IntoIterator<Item = &'a [u8]>) {
        let mut memo = self.inner.lock();
        for label in labels {
            if let Some(entry) = memo.entries.get_mut(label) {
                entry.pending = entry.pending.saturating_sub(1);
            }
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

    /// The labels prepared as of `epoch` since the last call (each may come more than
    /// once): what [`super::staging`] loads the nodes of, ahead of the epoch.
    pub fn take_ready(&self, epoch: u64) -> Vec<Prepared> {
        let mut memo = self.inner.lock();
        let ready = std::mem::take(&mut memo.ready);
        ready
            .iter()
            .filter_map(|label| memo.entries.get(label)?.prepared.clone())
            .filter(|p| p.as_of == epoch)
            .collect()
    }

    /// An epoch took `labels`: those still waiting for a worker are taken off its
    /// list (the epoch computes them itself; doing it twice would only take CPU from
    /// it). After the commit, [`Prepare::committed`] queues again what is still queued.
    pub fn taken<'a>(&self, labels: impl IntoIterator<Item = &'a [u8]>) {
        let mut memo = self.inner.lock();
        let Memo { entries, queued, .. } = &mut *memo;
        for label in labels {
            if let Some(entry) = entries.get_mut(label)
                && entry.queued
            {
                entry.queued = false;
                *queued -= 1;
            }
        }
        self.inner.update_gauges(&memo);
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
        let Memo {
            entries, queued, ready, ..
        } = &mut *memo;
        // What was ready for the last epoch is ready again for this one.
        ready.clear();
        entries.retain(|label, entry| {
            if published.contains_key(label) {
                entry.prepared = None;
            } else if let Some(p) = &mut entry.prepared {
                p.as_of = epoch;
                if entry.pending > 0 {
                    ready.push(label.clone());
                }
            }
            if entry.pending == 0 {
                // No queued update left. A worker that still has it finds it gone.
                if entry.queued {
                    *queued -= 1;
                }
                return false;
            }
            if entry.prepared.is_none() && !entry.queued {
                entry.queued = true;
                *queued += 1;
                requeue.push(label.clone());
            }
            true
        });
        let woke = !requeue.is_empty();
        memo.work.extend(requeue);
        // A map keeps its largest size: give back what a big epoch (or a build) left.
        if memo.entries.capacity() > 4 * memo.entries.len().max(1024) {
            memo.entries.shrink_to_fit();
        }
        if memo.work.capacity() > 4 * memo.work.len().max(1024) {
            memo.work.shrink_to_fit();
        }
        self.inner.update_gauges(&memo);
        drop(memo);
        if woke {
            self.inner.wake.notify_all();
        }
    }

    /// Labels waiting for or with a worker.
    pub fn backlog(&self) -> usize {
        self.inner.lock().queued
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
            // Only labels still waiting: an epoch may have taken (and computed) some
            // since they were queued, and a label may be queued twice.
            let mut labels: Vec<Vec<u8>> = Vec::with_capacity(WORK_BATCH);
            while labels.len() < WORK_BATCH {
                let Some(label) = memo.work.pop_front() else { break };
                let wanted = memo
                    .entries
                    .get(&label)
                    .is_some_and(|e| e.queued && e.prepared.is_none());
                if wanted && !labels.contains(&label) {
                    labels.push(label);
                }
            }
            if labels.is_empty() {
                inner.update_gauges(&memo);
                continue;
            }
            (labels, memo.committed)
        };
        let users: Vec<AkdLabel> = labels.iter().map(|l| AkdLabel(l.clone())).collect();
        let flag = ValueStateRetrievalFlag::LeqEpoch(epoch);
        // RocksDB is read on this thread, so the stage's CPU time is this thread's.
        let states = inner.store.user_state_versions_here(&users, flag, &inner.runtime);
        let mut states = match states {
            Ok(states) => states,
            Err(e) => {
                // The writer computes these itself; nothing is lost but time.
                tracing::warn!(error = %e, labels = labels.len(), "prepare: reading versions failed");
                let mut memo = inner.lock();
                let Memo { entries, queued, .. } = &mut *memo;
                for label in &labels {
                    if let Some(entry) = entries.get_mut(label)
                        && entry.queued
                    {
                        entry.queued = false;
                        *queued -= 1;
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
        let Memo {
            entries, queued, ready, ..
        } = &mut *memo;
        for (label, prepared) in labels.into_iter().zip(results) {
            if let Some(entry) = entries.get_mut(&label) {
                if entry.queued {
                    entry.queued = false;
                    *queued -= 1;
                }
                entry.prepared = Some(prepared);
                ready.push(label);
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

    async fn settle(prepare: &Prepare) {
        let started = std::time::Instant::now();
        while prepare.backlog() > 0 {
            assert!(started.elapsed().as_secs() < 30, "the workers never caught up");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn labels<'a>(names: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> {
        names.iter().map(|n| n.as_bytes())
    }

    /// The memo against the store it reads: what it holds is exactly the labels'
    /// state at the committed epoch, and it follows commits: published labels are
    /// prepared again if still queued, the others move on, resolved ones leave.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memo_follows_commits_exactly() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open_rocks(tmp.path().join("db"), &Default::default())
            .await
            .expect("open");
        let vrf = VrfSecret::from_bytes([1; 32]);
        let akd = crate::open_directory(store.clone(), vrf.clone()).await.expect("akd");
        let value = |v: &str| AkdValue::from(v);
        akd.publish(vec![
            (AkdLabel::from("a"), value("a1")),
            (AkdLabel::from("b"), value("b1")),
        ])
        .await
        .expect("epoch 1");
        let config = PrepareConfig {
            workers: 1,
            nice: 0,
            max_labels: 8,
        };
        let metrics = crate::metrics::Metrics::new().expect("metrics");
        let prepare = Prepare::start(store.clone(), vrf.clone(), 1, &config, metrics.prepare()).expect("start");

        prepare.submit(labels(&["a", "b", "c"]));
        settle(&prepare).await;
        let got = prepare.lookup(labels(&["a", "b", "c"]), 1);
        let want = [
            Prepared::compute(&vrf, &AkdLabel::from("a"), Some((1, value("a1"))), 1),
            Prepared::compute(&vrf, &AkdLabel::from("b"), Some((1, value("b1"))), 1),
            Prepared::compute(&vrf, &AkdLabel::from("c"), None, 1),
        ];
        assert_eq!(got, want.iter().cloned().map(Some).collect::<Vec<_>>());
        assert_eq!(
            prepare.lookup(labels(&["a"]), 0),
            vec![None],
            "only as of the committed epoch"
        );

        // Epoch 2 publishes a and resolves b's update (unchanged); c stays queued.
        akd.publish(vec![(AkdLabel::from("a"), value("a2"))])
            .await
            .expect("epoch 2");
        let resolved = HashMap::from([(b"a".to_vec(), 1), (b"b".to_vec(), 1)]);
        prepare.committed(2, &resolved, &HashMap::from([(b"a".to_vec(), 2u64)]));
        assert_eq!(prepare.memory().0, 1, "a and b have no queued update left");
        let mut c = want[2].clone();
        c.as_of = 2;
        assert_eq!(prepare.lookup(labels(&["c", "a"]), 2), vec![Some(c), None]);

        // a queued twice; an epoch publishes one of them: the other is prepared again,
        // at the new version.
        prepare.submit(labels(&["a", "a"]));
        settle(&prepare).await;
        assert_eq!(
            prepare.lookup(labels(&["a"]), 2)[0].as_ref().map(|p| p.current.clone()),
            Some(Some((2, value("a2"))))
        );
        akd.publish(vec![(AkdLabel::from("a"), value("a3"))])
            .await
            .expect("epoch 3");
        prepare.committed(
            3,
            &HashMap::from([(b"a".to_vec(), 1)]),
            &HashMap::from([(b"a".to_vec(), 3u64)]),
        );
        settle(&prepare).await;
        assert_eq!(
            prepare.lookup(labels(&["a"]), 3),
            vec![Some(Prepared::compute(
                &vrf,
                &AkdLabel::from("a"),
                Some((3, value("a3"))),
                3
            ))]
        );

        // A withdrawn submit (the queue write failed) leaves at the next commit.
        prepare.submit(labels(&["w"]));
        prepare.withdraw(labels(&["w"]));
        settle(&prepare).await;
        let held = prepare.memory().0;
        prepare.committed(3, &HashMap::new(), &HashMap::<Vec<u8>, u64>::new());
        assert_eq!(prepare.memory().0, held - 1, "the withdrawn label left");
        assert_eq!(prepare.lookup(labels(&["w"]), 3), vec![None]);

        // Bounded: labels beyond `max_labels` are not held (the writer computes them).
        let many: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
        prepare.submit(many.iter().map(|n| n.as_bytes()));
        assert!(prepare.memory().0 <= 8, "{} labels held", prepare.memory().0);
        settle(&prepare).await;
    }

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
