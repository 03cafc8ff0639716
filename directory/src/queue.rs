//! The durable update queue and the outcome of every accepted update.
//!
//! Intake writes each request's updates to [`Cf::Queue`] in one synced batch, keyed by
//! update id. Ids come from one counter behind a mutex, so id order is both acceptance
//! order and durability order. An epoch takes the oldest `max` queued updates and
//! resolves every one of them, in the same atomic write as its akd commit:
//!
//! - several updates to one label among those taken: the one with the highest id wins
//!   (it was accepted last); the others become `superseded` by it. akd never sees a
//!   duplicate label.
//! - the winner is `published` (epoch, version) if akd wrote a new value state for the
//!   label in this epoch, else `unchanged` (its value was already current).
//!
//! Updates accepted while an epoch is being published wait for the next one.

use crate::storage::{Cf, DecodeError, StorageError, Store, Write};
use kt_client::wire::Outcome;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Record format version of queue items and outcomes.
const RECORD_VERSION: u8 = 1;

/// An accepted update waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its id (acceptance order).
    pub id: u64,
    /// The label's bytes (UTF-8, validated at intake).
    pub label: Vec<u8>,
    /// The new value (non-empty).
    pub value: Vec<u8>,
}

/// The queue key of update `id`.
pub fn key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

fn id_from_key(key: &[u8]) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| DecodeError::Invalid {
        field: "update id key",
        detail: format!("{} bytes, expected 8", key.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Queue value: `version (1) ‖ len(label) (u32 BE) ‖ label ‖ value`.
fn encode_item(label: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + label.len() + value.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&u32::try_from(label.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(label);
    out.extend_from_slice(value);
    out
}

fn decode_item(id: u64, bytes: &[u8]) -> Result<Queued, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Truncated {
        field: "version",
        needed: 1,
    })?;
    if version != RECORD_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (len, rest) = rest.split_first_chunk::<4>().ok_or(DecodeError::Truncated {
        field: "label length",
        needed: 4,
    })?;
    let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
    if rest.len() < len {
        return Err(DecodeError::Truncated {
            field: "label",
            needed: len - rest.len(),
        });
    }
    let (label, value) = rest.split_at(len);
    Ok(Queued {
        id,
        label: label.to_vec(),
        value: value.to_vec(),
    })
}

/// Outcome value: `version (1) ‖ tag (1) ‖ fields (u64 BE each)`.
pub fn encode_outcome(outcome: Outcome) -> Vec<u8> {
    let (tag, fields): (u8, &[u64]) = match outcome {
        Outcome::Pending => (0, &[]),
        Outcome::Published { epoch, version } => (1, &[epoch, version]),
        Outcome::Superseded { by } => (2, &[by]),
        Outcome::Unchanged { epoch } => (3, &[epoch]),
    };
    let mut out = vec![RECORD_VERSION, tag];
    for f in fields {
        out.extend_from_slice(&f.to_be_bytes());
    }
    out
}

/// Parses [`encode_outcome`] output; total over arbitrary bytes.
pub fn decode_outcome(bytes: &[u8]) -> Result<Outcome, DecodeError> {
    let [version, tag, rest @ ..] = bytes else {
        return Err(DecodeError::Truncated {
            field: "outcome header",
            needed: 2 - bytes.len(),
        });
    };
    if *version != RECORD_VERSION {
        return Err(DecodeError::Version(*version));
    }
    let want = match tag {
        0 => 0,
        1 => 2,
        2 | 3 => 1,
        other => {
            return Err(DecodeError::Invalid {
                field: "outcome tag",
                detail: other.to_string(),
            });
        }
    };
    if rest.len() != want * 8 {
        return Err(DecodeError::Invalid {
            field: "outcome fields",
            detail: format!("{} bytes, expected {}", rest.len(), want * 8),
        });
    }
    let f = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&rest[i * 8..i * 8 + 8]);
        u64::from_be_bytes(b)
    };
    Ok(match tag {
        0 => Outcome::Pending,
        1 => Outcome::Published {
            epoch: f(0),
            version: f(1),
        },
        2 => Outcome::Superseded { by: f(0) },
        _ => Outcome::Unchanged { epoch: f(0) },
    })
}

/// What an epoch does with the updates it took from the queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// One update per label, the latest accepted: what akd is asked to publish.
    pub winners: Vec<Queued>,
    /// `(id, by)`: updates replaced by a later one to the same label in this batch.
    pub superseded: Vec<(u64, u64)>,
}

impl Plan {
    /// Applies the last-accepted-wins rule to `taken` (in id order).
    pub fn new(taken: Vec<Queued>) -> Plan {
        let mut latest: HashMap<&[u8], u64> = HashMap::with_capacity(taken.len());
        for item in &taken {
            latest.insert(&item.label, item.id);
        }
        let mut superseded = Vec::new();
        let mut winners_ids = std::collections::HashSet::with_capacity(latest.len());
        for item in &taken {
            let winner = latest.get(item.label.as_slice()).copied().unwrap_or(item.id);
            if winner == item.id {
                winners_ids.insert(item.id);
            } else {
                superseded.push((item.id, winner));
            }
        }
        let winners = taken.into_iter().filter(|q| winners_ids.contains(&q.id)).collect();
        Plan { winners, superseded }
    }

    /// Every id this plan resolves.
    pub fn len(&self) -> usize {
        self.winners.len() + self.superseded.len()
    }

    /// Whether the plan resolves nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The writes that remove every taken update from the queue and record its outcome.
    /// `published(label)` is the version akd gave the label in `epoch`, if it wrote one.
    pub fn resolve(&self, epoch: u64, published: impl Fn(&[u8]) -> Option<u64>) -> (Vec<Write>, Resolved) {
        let mut writes = Vec::with_capacity(2 * self.len());
        let mut resolved = Resolved::default();
        for w in &self.winners {
            let outcome = match published(&w.label) {
                Some(version) => {
                    resolved.published += 1;
                    Outcome::Published { epoch, version }
                }
                None => {
                    resolved.unchanged += 1;
                    Outcome::Unchanged { epoch }
                }
            };
            writes.push(Write::Delete(Cf::Queue, key(w.id)));
            writes.push(Write::Put(Cf::Outcomes, key(w.id), encode_outcome(outcome)));
        }
        for &(id, by) in &self.superseded {
            resolved.superseded += 1;
            writes.push(Write::Delete(Cf::Queue, key(id)));
            writes.push(Write::Put(
                Cf::Outcomes,
                key(id),
                encode_outcome(Outcome::Superseded { by }),
            ));
        }
        (writes, resolved)
    }
}

/// How the updates of one epoch were resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resolved {
    /// Became a new version.
    pub published: u64,
    /// Already the current value.
    pub unchanged: u64,
    /// Replaced by a later update in the same batch.
    pub superseded: u64,
}

/// The queue: durable intake and outcome queries.
#[derive(Debug)]
pub struct Queue {
    /// Where queue items and outcomes live.
    storage: Store,
    /// The next id to hand out. Held across the synced write, so ids become durable in
    /// order: an epoch scanning the queue never sees id n+1 without id n.
    next_id: tokio::sync::Mutex<u64>,
    /// Updates in the queue now (for metrics and the epoch response).
    depth: AtomicU64,
}

impl Queue {
    /// Opens the queue on `storage`, recovering the id counter and depth from disk.
    pub async fn open(storage: Store) -> Result<Queue, StorageError> {
        let mut next = 1;
        for cf in [Cf::Queue, Cf::Outcomes] {
            if let Some((k, _)) = storage.last(cf).await? {
                let id = id_from_key(&k).map_err(|e| StorageError::corrupt(cf, &k, e))?;
                next = next.max(id + 1);
            }
        }
        let depth = storage.count(Cf::Queue).await?;
        Ok(Queue {
            storage,
            next_id: tokio::sync::Mutex::new(next),
            depth: AtomicU64::new(depth),
        })
    }

    /// Durably queues `updates` (label, value) in one synced write; returns their ids in
    /// order. When this returns `Ok`, the updates survive any crash.
    pub async fn accept(&self, updates: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<u64>, StorageError> {
        let mut next = self.next_id.lock().await;
        let first = *next;
        let count = u64::try_from(updates.len()).unwrap_or(u64::MAX);
        let writes = updates
            .iter()
            .zip(first..)
            .map(|((label, value), id)| Write::Put(Cf::Queue, key(id), encode_item(label, value)))
            .collect();
        self.storage.write(writes).await?;
        *next = first + count;
        self.depth.fetch_add(count, Ordering::SeqCst);
        Ok((first..first + count).collect())
    }

    /// The oldest `max` queued updates, in id order.
    pub async fn take(&self, max: usize) -> Result<Vec<Queued>, StorageError> {
        self.storage
            .scan(Cf::Queue, Vec::new(), max)
            .await?
            .into_iter()
            .map(|(k, v)| {
                let id = id_from_key(&k).map_err(|e| StorageError::corrupt(Cf::Queue, &k, e))?;
                decode_item(id, &v).map_err(|e| StorageError::corrupt(Cf::Queue, &k, e))
            })
            .collect()
    }

    /// Records that `n` updates left the queue.
    pub fn resolved(&self, n: u64) {
        self.depth.fetch_sub(n, Ordering::SeqCst);
    }

    /// Updates in the queue now.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::SeqCst)
    }

    /// Where update `id` stands; `None` if no such update was ever accepted.
    pub async fn status(&self, id: u64) -> Result<Option<Outcome>, StorageError> {
        // Queue first: an update moves from the queue to its outcome in one atomic
        // write, so "not queued" read first means the outcome read next will see it.
        if self.storage.get_raw(Cf::Queue, key(id)).await?.is_some() {
            return Ok(Some(Outcome::Pending));
        }
        match self.storage.get_raw(Cf::Outcomes, key(id)).await? {
            Some(v) => Ok(Some(
                decode_outcome(&v).map_err(|e| StorageError::corrupt(Cf::Outcomes, &key(id), e))?,
            )),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(id: u64, label: &str, value: &str) -> Queued {
        Queued {
            id,
            label: label.into(),
            value: value.into(),
        }
    }

    #[test]
    fn last_accepted_update_to_a_label_wins() {
        let plan = Plan::new(vec![q(1, "a", "1"), q(2, "b", "1"), q(3, "a", "2"), q(4, "a", "3")]);
        assert_eq!(plan.winners, vec![q(2, "b", "1"), q(4, "a", "3")]);
        assert_eq!(plan.superseded, vec![(1, 4), (3, 4)]);
        let (writes, resolved) = plan.resolve(7, |label| (label == b"a").then_some(5));
        assert_eq!(
            resolved,
            Resolved {
                published: 1,
                unchanged: 1,
                superseded: 2
            }
        );
        assert_eq!(writes.len(), 8);
        assert!(writes.contains(&Write::Put(
            Cf::Outcomes,
            key(4),
            encode_outcome(Outcome::Published { epoch: 7, version: 5 })
        )));
        assert!(writes.contains(&Write::Put(
            Cf::Outcomes,
            key(2),
            encode_outcome(Outcome::Unchanged { epoch: 7 })
        )));
    }

    #[test]
    fn outcomes_round_trip() {
        for o in [
            Outcome::Pending,
            Outcome::Published { epoch: 3, version: 9 },
            Outcome::Superseded { by: u64::MAX },
            Outcome::Unchanged { epoch: 0 },
        ] {
            assert_eq!(decode_outcome(&encode_outcome(o)), Ok(o));
        }
    }

    proptest! {
        #[test]
        fn decoders_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..64), id in any::<u64>()) {
            let _ = decode_outcome(&bytes);
            let _ = decode_item(id, &bytes);
            let _ = id_from_key(&bytes);
        }

        #[test]
        fn items_round_trip(label in proptest::collection::vec(any::<u8>(), 0..40),
                            value in proptest::collection::vec(any::<u8>(), 1..40)) {
            let got = decode_item(5, &encode_item(&label, &value));
            prop_assert_eq!(got, Ok(Queued { id: 5, label, value }));
        }

        #[test]
        fn every_taken_id_is_resolved_once(labels in proptest::collection::vec(0u8..5, 0..30)) {
            let taken: Vec<Queued> = labels.iter().enumerate()
                .map(|(i, l)| Queued { id: i as u64 + 1, label: vec![*l], value: vec![1] })
                .collect();
            let plan = Plan::new(taken.clone());
            let mut ids: Vec<u64> = plan.winners.iter().map(|w| w.id)
                .chain(plan.superseded.iter().map(|s| s.0)).collect();
            ids.sort_unstable();
            prop_assert_eq!(ids, taken.iter().map(|t| t.id).collect::<Vec<_>>());
            let distinct: std::collections::HashSet<_> = plan.winners.iter().map(|w| &w.label).collect();
            prop_assert_eq!(distinct.len(), plan.winners.len());
        }
    }
}
