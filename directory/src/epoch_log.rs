//! The epoch log: every epoch's head (as first signed) as a leaf of an RFC 6962 tree,
//! its checkpoint signed with the head key, and the witnesses' co-signatures on it
//! (`kt_client::tlog`, `docs/heads.md`).
//!
//! Storage: an epoch's leaf and the subtree hashes it completes ([`Cf::Log`]), and the
//! checkpoint of the new size (`Cf::Meta` key `checkpoint`), are written in the
//! epoch's own commit ([`EpochLog::prepare`]), so the log and the epochs never
//! disagree; [`EpochLog::open`] checks at start-up that they do not, and refuses
//! otherwise. The tree is also held in memory (two hashes per epoch: 23 MB after ten
//! years of two-minute epochs), so tiles and proofs cost no reads.

use crate::publisher::{HeadSigner, Inconsistency, PublishError};
use crate::storage::{Cf, Store, Write};
use kt_client::head::SignedHead;
use kt_client::tlog::checkpoint::{Checkpoint, origin_for};
use kt_client::tlog::merkle::{Hash, MemoryLog, Node, leaf_hash};
use kt_client::tlog::note::{Note, NoteSignature, VerifierKey};
use kt_client::tlog::tiles::{TileKind, TilePath};
use std::sync::RwLock;

/// `Cf::Meta` key of the log-signed checkpoint of the latest size.
pub const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// `Cf::Meta` key of the co-signatures collected for a size: `size (u64 BE) ‖ lines`.
pub const COSIGNATURES_KEY: &[u8] = b"cosignatures";
/// Heads read per scan when the log is rebuilt at start-up.
const SCAN: usize = 4096;

/// The [`Cf::Log`] key of a subtree.
pub fn node_key(height: u8, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(height);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The log, in memory, with its latest checkpoint.
#[derive(Debug)]
pub struct EpochLog {
    /// The checkpoint origin, `<namespace>/epochs`.
    origin: String,
    /// The log's note key (the head key under the origin's name).
    key: VerifierKey,
    /// The tree and its checkpoint, changed together.
    state: RwLock<LogState>,
}

#[derive(Debug, Clone)]
struct LogState {
    tree: MemoryLog,
    /// The log-signed checkpoint of `tree.size()`.
    note: Note,
    /// Co-signatures collected for `note` (the same size and root).
    cosignatures: Vec<NoteSignature>,
}

impl LogState {
    /// The checkpoint note with the co-signatures collected for it.
    fn cosigned_note(&self) -> String {
        let mut note = self.note.clone();
        note.signatures.extend(self.cosignatures.iter().cloned());
        note.to_text()
    }
}

/// What a store holds for log rows `rows` and checkpoint `note`.
fn log_writes(rows: &[Node], note: &Note) -> Vec<Write> {
    let mut writes: Vec<Write> = rows
        .iter()
        .map(|(h, i, hash)| Write::Put(Cf::Log, node_key(*h, *i), hash.to_vec()))
        .collect();
    writes.push(Write::Put(
        Cf::Meta,
        CHECKPOINT_KEY.to_vec(),
        note.to_text().into_bytes(),
    ));
    writes
}

/// An epoch's log rows and checkpoint, computed before its commit and applied after.
#[derive(Debug)]
pub struct Prepared {
    leaf: Hash,
    note: Note,
    /// What the commit writes: the subtree rows and the new checkpoint.
    pub writes: Vec<Write>,
}

fn inconsistent(reason: String) -> PublishError {
    Inconsistency::EpochLog(reason).into()
}

impl EpochLog {
    /// Rebuilds the log from the stored heads `0..=latest` and checks it against the
    /// stored rows and checkpoint. With a `signer` (the publisher), a data directory
    /// from before the log gets its rows and checkpoint written; without one (a
    /// replica) such a log is served from memory only.
    pub async fn open(
        storage: &Store,
        namespace: &str,
        head_key: ed25519_dalek::VerifyingKey,
        latest: u64,
        signer: Option<&HeadSigner>,
    ) -> Result<EpochLog, PublishError> {
        let origin = origin_for(namespace).map_err(|e| inconsistent(format!("no log origin: {e}")))?;
        let key = kt_client::tlog::checkpoint::log_key(namespace, head_key)
            .map_err(|e| inconsistent(format!("no log key: {e}")))?;
        let mut tree = MemoryLog::new();
        let mut rows: Vec<Node> = Vec::new();
        let mut from = 0u64;
        while from <= latest {
            let batch = storage.scan(Cf::Heads, from.to_be_bytes().to_vec(), SCAN).await?;
            if batch.is_empty() {
                break;
            }
            for (k, v) in batch {
                if from > latest {
                    break;
                }
                let epoch = <[u8; 8]>::try_from(k.as_slice()).map(u64::from_be_bytes).ok();
                if epoch != Some(from) {
                    return Err(inconsistent(format!("the head of epoch {from} is missing")));
                }
                rows.extend(tree.append(leaf_hash(&v)));
                from += 1;
            }
        }
        if tree.size() != latest + 1 {
            return Err(inconsistent(format!(
                "{} heads stored for {} epochs",
                tree.size(),
                latest + 1
            )));
        }
        let root = tree.root(tree.size()).map_err(|e| inconsistent(e.to_string()))?;
        let stored_rows = storage.count(Cf::Log).await?;
        let stored_note = storage.get_raw(Cf::Meta, CHECKPOINT_KEY.to_vec()).await?;
        let note = if stored_rows == 0 && stored_note.is_none() {
            // A data directory from before the log: build it now, in one write.
            let Some(signer) = signer else {
                let note = Note {
                    text: Checkpoint {
                        origin: origin.clone(),
                        size: tree.size(),
                        root,
                        extensions: vec![],
                    }
                    .text(),
                    signatures: vec![],
                };
                tracing::warn!("the store has no epoch log yet (the publisher writes it at its next start)");
                return Ok(EpochLog::from_state(origin, key, tree, note, vec![]));
            };
            let note = signer
                .sign_checkpoint(&origin, tree.size(), root)
                .map_err(Inconsistency::Checkpoint)?;
            storage.write(log_writes(&rows, &note)).await?;
            tracing::info!(size = tree.size(), "wrote the epoch log of the existing epochs");
            note
        } else {
            if stored_rows != rows.len() as u64 {
                return Err(inconsistent(format!(
                    "{stored_rows} log rows stored, {} expected for {} epochs",
                    rows.len(),
                    tree.size()
                )));
            }
            let mut key_from = Vec::new();
            let mut seen = 0u64;
            loop {
                let batch = storage.scan(Cf::Log, key_from.clone(), SCAN).await?;
                let Some((last, _)) = batch.last() else { break };
                let mut next = last.clone();
                next.push(0);
                for (k, v) in &batch {
                    let (Some(&h), Ok(i)) = (k.first(), <[u8; 8]>::try_from(&k[1.min(k.len())..])) else {
                        return Err(inconsistent(format!("a malformed log row key {}", hex::encode(k))));
                    };
                    if tree.node(h, u64::from_be_bytes(i)).map(|n| n.to_vec()).as_ref() != Some(v) {
                        return Err(inconsistent(format!(
                            "the stored log hash at height {h}, index {} differs from the heads",
                            u64::from_be_bytes(i)
                        )));
                    }
                    seen += 1;
                }
                key_from = next;
            }
            if seen != rows.len() as u64 {
                return Err(inconsistent(format!("{seen} log rows read, {} expected", rows.len())));
            }
            let bytes = stored_note.ok_or_else(|| inconsistent("log rows without a checkpoint".into()))?;
            let note = Note::parse(&bytes).map_err(|e| inconsistent(format!("the stored checkpoint: {e}")))?;
            let c =
                Checkpoint::parse_text(&note.text).map_err(|e| inconsistent(format!("the stored checkpoint: {e}")))?;
            let signed = note.signatures_by(&key).any(|s| key.verify(&note.text, s).is_ok());
            if !signed || c.origin != origin || c.size != tree.size() || c.root != root {
                return Err(inconsistent(format!(
                    "the stored checkpoint (size {}) does not match the log of {} epochs",
                    c.size,
                    tree.size()
                )));
            }
            note
        };
        let cosignatures = stored_cosignatures(storage, tree.size()).await?;
        Ok(EpochLog::from_state(origin, key, tree, note, cosignatures))
    }

    fn from_state(
        origin: String,
        key: VerifierKey,
        tree: MemoryLog,
        note: Note,
        cosignatures: Vec<NoteSignature>,
    ) -> Self {
        EpochLog {
            origin,
            key,
            state: RwLock::new(LogState {
                tree,
                note,
                cosignatures,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The checkpoint origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The log's note key.
    pub fn key(&self) -> &VerifierKey {
        &self.key
    }

    /// Leaves in the log (the latest epoch plus one).
    pub fn size(&self) -> u64 {
        self.read().tree.size()
    }

    /// The rows and checkpoint of appending `head` (an epoch's first signature): the
    /// log must hold every earlier epoch.
    pub fn prepare(&self, head: &SignedHead, signer: &HeadSigner) -> Result<Prepared, PublishError> {
        let state = self.read();
        if state.tree.size() != head.head.epoch {
            return Err(inconsistent(format!(
                "the log has {} leaves; epoch {} cannot be appended",
                state.tree.size(),
                head.head.epoch
            )));
        }
        let leaf = leaf_hash(&head.to_bytes()?);
        let rows = state.tree.completed_by(leaf);
        let (size, root) = (state.tree.size() + 1, state.tree.root_after(&rows));
        drop(state);
        let note = signer
            .sign_checkpoint(&self.origin, size, root)
            .map_err(Inconsistency::Checkpoint)?;
        let writes = log_writes(&rows, &note);
        Ok(Prepared { leaf, note, writes })
    }

    /// Applies what [`EpochLog::prepare`] computed, once its commit has landed.
    pub fn apply(&self, prepared: Prepared) {
        let mut state = self.write();
        state.tree.append(prepared.leaf);
        state.note = prepared.note;
        state.cosignatures.clear();
    }

    /// A replica's catch-up: appends the stored heads after the log's end up to
    /// `latest`, and takes the stored checkpoint and co-signatures.
    pub async fn follow(&self, storage: &Store, latest: u64) -> Result<(), PublishError> {
        let start = self.size();
        let mut leaves = Vec::new();
        let mut at = start;
        while at <= latest {
            let batch = storage.scan(Cf::Heads, at.to_be_bytes().to_vec(), SCAN).await?;
            if batch.is_empty() {
                break;
            }
            for (k, v) in batch {
                if at > latest {
                    break;
                }
                if k != at.to_be_bytes() {
                    return Err(inconsistent(format!("the head of epoch {at} is missing")));
                }
                leaves.push(leaf_hash(&v));
                at += 1;
            }
        }
        let note = storage.get_raw(Cf::Meta, CHECKPOINT_KEY.to_vec()).await?;
        let n = {
            let mut state = self.write();
            if state.tree.size() == start {
                for leaf in leaves {
                    state.tree.append(leaf);
                }
            }
            let n = state.tree.size();
            if let Some(note) = note.and_then(|b| Note::parse(&b).ok())
                && let Ok(c) = Checkpoint::parse_text(&note.text)
                && c.size == n
                && state.tree.root(n).ok() == Some(c.root)
                && note
                    .signatures_by(&self.key)
                    .any(|s| self.key.verify(&note.text, s).is_ok())
            {
                state.note = note;
                state.cosignatures.clear();
            }
            n
        };
        let cosignatures = stored_cosignatures(storage, n).await?;
        self.set_cosignatures(n, cosignatures);
        Ok(())
    }

    /// The log-signed checkpoint of the latest size, without co-signatures.
    pub fn plain_checkpoint(&self) -> Note {
        self.read().note.clone()
    }

    /// The latest checkpoint with the co-signatures collected for it.
    pub fn checkpoint(&self) -> String {
        self.read().cosigned_note()
    }

    /// Replaces the co-signatures of size `size` (ignored if the log moved on).
    pub fn set_cosignatures(&self, size: u64, sigs: Vec<NoteSignature>) -> bool {
        let mut state = self.write();
        if state.tree.size() != size {
            return false;
        }
        state.cosignatures = sigs;
        true
    }

    /// The co-signatures collected for the latest size.
    pub fn cosignatures(&self) -> Vec<NoteSignature> {
        self.read().cosignatures.clone()
    }

    /// The inclusion proof of leaf `index` in the latest checkpoint, with it.
    pub fn inclusion(&self, index: u64) -> Option<(String, Vec<Hash>)> {
        let state = self.read();
        let proof = state.tree.inclusion_proof(index, state.tree.size()).ok()?;
        Some((state.cosigned_note(), proof))
    }

    /// The consistency proof from `old` to `new` leaves.
    pub fn consistency(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        self.read().tree.consistency_proof(old, new).ok()
    }

    /// The bytes of a hash tile, if the log holds all of it.
    pub fn tile(&self, tile: &TilePath) -> Option<Vec<u8>> {
        if tile.kind == TileKind::Entries {
            return None;
        }
        tile.hashes(&self.read().tree)
    }
}

/// The co-signatures stored for `size`, if the stored ones are of that size.
async fn stored_cosignatures(storage: &Store, size: u64) -> Result<Vec<NoteSignature>, PublishError> {
    let Some(bytes) = storage.get_raw(Cf::Meta, COSIGNATURES_KEY.to_vec()).await? else {
        return Ok(vec![]);
    };
    let Some((at, lines)) = bytes.split_first_chunk::<8>() else {
        return Ok(vec![]);
    };
    if u64::from_be_bytes(*at) != size || lines.is_empty() {
        return Ok(vec![]);
    }
    Ok(kt_client::tlog::witness::parse_cosignatures(lines).unwrap_or_default())
}

/// The write that stores `sigs` as the co-signatures of `size`.
pub fn cosignatures_write(size: u64, sigs: &[NoteSignature]) -> Write {
    let mut v = size.to_be_bytes().to_vec();
    for s in sigs {
        v.extend_from_slice(s.line().as_bytes());
    }
    Write::Put(Cf::Meta, COSIGNATURES_KEY.to_vec(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageConfig;
    use ed25519_dalek::SigningKey;
    use kt_client::tlog::checkpoint::{WitnessPolicy, verify_checkpoint};

    fn signer() -> HeadSigner {
        HeadSigner::new(SigningKey::from_bytes(&[7; 32]), "log.test".into(), [3; 32])
    }

    /// Heads of epochs `0..n`, written as the publisher writes them (the log aside).
    async fn write_heads(storage: &Store, signer: &HeadSigner, n: u64) -> Vec<SignedHead> {
        let mut heads = Vec::new();
        for epoch in 0..n {
            let head = signer
                .sign(
                    epoch,
                    [epoch as u8; 32],
                    [epoch.saturating_sub(1) as u8; 32],
                    1_000 + epoch,
                )
                .expect("sign");
            storage
                .write(vec![Write::Put(
                    Cf::Heads,
                    epoch.to_be_bytes().to_vec(),
                    head.to_bytes().expect("bytes"),
                )])
                .await
                .expect("write");
            heads.push(head);
        }
        heads
    }

    fn refused(r: Result<EpochLog, PublishError>) -> String {
        match r {
            Err(PublishError::Inconsistent(Inconsistency::EpochLog(why))) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A store without a log gets one at the first open; epochs appended through
    /// prepare/apply survive a reopen; a changed row, a missing row, a missing head or a
    /// checkpoint of another tree make the next open refuse.
    #[tokio::test]
    async fn the_log_is_rebuilt_checked_and_refused_when_it_disagrees() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("db");
        let s = signer();
        let key = s.public_key();
        {
            let storage = Store::open_rocks(&path, &StorageConfig::default()).await.expect("open");
            let heads = write_heads(&storage, &s, 3).await;
            let log = EpochLog::open(&storage, "log.test", key, 2, Some(&s))
                .await
                .expect("backfilled");
            assert_eq!(log.size(), 3);
            // Epoch 3, as publish_taken does it: prepared, written with the head, applied.
            let head3 = s.sign(3, [3; 32], [2; 32], 1_003).expect("sign");
            let mut prepared = log.prepare(&head3, &s).expect("prepare");
            let mut writes = vec![Write::Put(
                Cf::Heads,
                3u64.to_be_bytes().to_vec(),
                head3.to_bytes().expect("b"),
            )];
            writes.append(&mut prepared.writes);
            storage.write(writes).await.expect("commit");
            log.apply(prepared);
            assert_eq!(log.size(), 4);
            // Appending an epoch out of order is refused.
            assert!(log.prepare(&heads[1], &s).is_err());
            let note = log.checkpoint();
            let policy = WitnessPolicy::default();
            let v = verify_checkpoint(note.as_bytes(), log.key(), &policy, 0).expect("verifies");
            assert_eq!(v.checkpoint.size, 4);
        }
        let storage = Store::open_rocks(&path, &StorageConfig::default())
            .await
            .expect("reopen");
        let log = EpochLog::open(&storage, "log.test", key, 3, Some(&s))
            .await
            .expect("agrees");
        assert_eq!(log.size(), 4);
        let proof = log.inclusion(2).expect("inclusion").1;
        let root = Checkpoint::parse_text(&log.plain_checkpoint().text).expect("cp").root;
        let leaf = leaf_hash(
            &crate::publisher::heads::stored_head(&storage, 2)
                .await
                .expect("head")
                .to_bytes()
                .expect("b"),
        );
        kt_client::tlog::merkle::verify_inclusion(&leaf, 2, 4, &proof, &root).expect("included");

        // A changed subtree hash.
        let row = node_key(1, 0);
        let good = storage.get_raw(Cf::Log, row.clone()).await.expect("get").expect("row");
        storage
            .write(vec![Write::Put(Cf::Log, row.clone(), vec![0; 32])])
            .await
            .expect("tamper");
        assert!(refused(EpochLog::open(&storage, "log.test", key, 3, Some(&s)).await).contains("differs"));
        // A missing one.
        storage
            .write(vec![Write::Delete(Cf::Log, row.clone())])
            .await
            .expect("delete");
        assert!(refused(EpochLog::open(&storage, "log.test", key, 3, Some(&s)).await).contains("rows"));
        storage
            .write(vec![Write::Put(Cf::Log, row, good)])
            .await
            .expect("restore");
        EpochLog::open(&storage, "log.test", key, 3, Some(&s))
            .await
            .expect("agrees again");
        // A checkpoint of another tree, even one the directory signed.
        let other = s.sign_checkpoint("log.test/epochs", 4, [1; 32]).expect("sign");
        let kept = storage
            .get_raw(Cf::Meta, CHECKPOINT_KEY.to_vec())
            .await
            .expect("get")
            .expect("cp");
        storage
            .write(vec![Write::Put(
                Cf::Meta,
                CHECKPOINT_KEY.to_vec(),
                other.to_text().into_bytes(),
            )])
            .await
            .expect("tamper");
        assert!(refused(EpochLog::open(&storage, "log.test", key, 3, Some(&s)).await).contains("checkpoint"));
        storage
            .write(vec![Write::Put(Cf::Meta, CHECKPOINT_KEY.to_vec(), kept)])
            .await
            .expect("restore");
        // More epochs than heads.
        assert!(refused(EpochLog::open(&storage, "log.test", key, 4, Some(&s)).await).contains("heads"));
    }
}
