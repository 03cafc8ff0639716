//! Deterministic sample traffic: device-key updates for the demo, the tests and the
//! benchmarks. The same `(seed, epoch)` always yields the same batch, so a run can be
//! replayed on another backend and compared root by root.

use akd::{AkdLabel, AkdValue};
use std::collections::HashSet;

/// The label of sample device `i`: `user-{i/4}@example.org/device-{i%4}`.
pub fn label(i: u64) -> AkdLabel {
    AkdLabel::from(format!("user-{}@example.org/device-{}", i / 4, i % 4).as_str())
}

/// A 32-byte sample public key for `label` at `epoch`.
pub fn value(seed: u64, epoch: u64, label: &AkdLabel) -> AkdValue {
    let mut h = blake3::Hasher::new();
    h.update(b"kt-sample-value");
    h.update(&seed.to_be_bytes());
    h.update(&epoch.to_be_bytes());
    h.update(&label.0);
    AkdValue(h.finalize().as_bytes().to_vec())
}

/// Epoch `epoch`'s batch: `count` distinct labels out of a population of `population`
/// devices (new devices and key rotations mixed), each with a fresh value.
/// `count` is capped at `population`.
pub fn updates(seed: u64, epoch: u64, count: usize, population: u64) -> Vec<(AkdLabel, AkdValue)> {
    let count = count.min(usize::try_from(population).unwrap_or(usize::MAX));
    let mut chosen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    let mut n = 0u64;
    while out.len() < count {
        let mut h = blake3::Hasher::new();
        h.update(b"kt-sample-pick");
        h.update(&seed.to_be_bytes());
        h.update(&epoch.to_be_bytes());
        h.update(&n.to_be_bytes());
        n += 1;
        let mut pick = [0u8; 8];
        pick.copy_from_slice(&h.finalize().as_bytes()[..8]);
        let i = u64::from_be_bytes(pick) % population;
        if chosen.insert(i) {
            let l = label(i);
            let v = value(seed, epoch, &l);
            out.push((l, v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_are_deterministic_distinct_and_capped() {
        let a = super::updates(7, 3, 100, 1000);
        assert_eq!(a, super::updates(7, 3, 100, 1000));
        assert_ne!(a, super::updates(7, 4, 100, 1000));
        let labels: std::collections::HashSet<_> = a.iter().map(|(l, _)| l.clone()).collect();
        assert_eq!(labels.len(), 100);
        assert_eq!(super::updates(1, 1, 50, 10).len(), 10);
    }
}
