//! The epoch log: every signed head, in epoch order, as the leaves of an RFC 6962
//! Merkle tree, published as c2sp.org/tlog-tiles, summarized by c2sp.org/tlog-checkpoint
//! notes that witnesses co-sign (c2sp.org/tlog-cosignature, c2sp.org/tlog-witness).
//!
//! Leaf `i` is the head of epoch `i` as first signed ([`crate::head::SignedHead::to_bytes`],
//! what `GET /v1/heads/{i}` serves). A client that holds a checkpoint of size `m` and
//! sees one of size `n` checks one consistency proof of O(log n) hashes instead of
//! walking `n - m` heads; a head comes with its inclusion proof in a checkpoint.
//! Everything here is I/O-free (`docs/heads.md` documents the formats).

pub mod checkpoint;
pub mod merkle;
pub mod note;
pub mod tiles;
pub mod witness;

use crate::head::SignedHead;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use checkpoint::{Checkpoint, CheckpointError, VerifiedCheckpoint, WitnessPolicy, verify_checkpoint};
use merkle::{Hash, MerkleError, leaf_hash, verify_consistency, verify_inclusion};
use note::VerifierKey;
use serde::{Deserialize, Serialize};

/// Why a head's place in the log, or a log's growth, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The checkpoint itself.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A proof that does not verify, or sizes that do not fit.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// The head could not be encoded.
    #[error(transparent)]
    Head(#[from] crate::head::HeadError),
    /// A proof hash that is not base64 of 32 bytes.
    #[error("a log proof hash is not 32 bytes of base64")]
    Hash,
    /// The proof's leaf is another epoch's head, or states another root.
    #[error("the proof's leaf is the head of epoch {index}, not the head of epoch {epoch}")]
    Index {
        /// The proof's leaf.
        index: u64,
        /// The head's epoch.
        epoch: u64,
    },
    /// Two checkpoints signed by the log with one size and two roots: a fork, proven by
    /// the two notes alone.
    #[error("fork: the log signed two roots for size {size}")]
    Fork {
        /// The size both claim.
        size: u64,
        /// The note seen before.
        first: String,
        /// The note seen now.
        second: String,
    },
    /// The log's size went down.
    #[error("the log shrank from {old} to {new} leaves")]
    Shrank {
        /// The size seen before.
        old: u64,
        /// The size seen now.
        new: u64,
    },
}

/// A head's place in the log, as lookup and history responses carry it with `?log=1`
/// (and `GET /v1/log/proof/{epoch}` serves it): the checkpoint (with the co-signatures
/// the directory collected), the epoch's head as first signed (the leaf; a response's
/// head may be a later re-signature of the same epoch) and the leaf's inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogProof {
    /// The signed checkpoint note.
    pub checkpoint: String,
    /// The leaf: the epoch's head as first signed. Its epoch is the leaf index.
    pub leaf: SignedHead,
    /// RFC 6962 inclusion proof, base64 hashes.
    pub inclusion: Vec<String>,
}

/// `GET /v1/log/consistency/{old}/{new}`: a consistency proof between two sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyResponse {
    /// The older size.
    pub old: u64,
    /// The newer size.
    pub new: u64,
    /// RFC 6962 consistency proof, base64 hashes.
    pub proof: Vec<String>,
}

/// Decodes base64 hashes (at most [`merkle::MAX_PROOF_HASHES`]).
pub fn decode_hashes(hashes: &[String]) -> Result<Vec<Hash>, LogError> {
    if hashes.len() > merkle::MAX_PROOF_HASHES {
        return Err(MerkleError::Length("log").into());
    }
    hashes
        .iter()
        .map(|h| {
            B64.decode(h)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or(LogError::Hash)
        })
        .collect()
}

/// Encodes hashes in base64, as [`LogProof`] and consistency answers carry them.
pub fn encode_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

/// The leaf hash of a head: RFC 6962 leaf hash of its canonical bytes.
pub fn head_leaf(head: &SignedHead) -> Result<Hash, LogError> {
    Ok(leaf_hash(&head.to_bytes()?))
}

/// Verifies that `head` (whose signature the caller checked) is in a checkpoint that
/// verifies under `log` and `policy`: the proof's leaf is signed by the log's (head)
/// key, states what `head` states but for its time, and is included at its epoch.
/// Returns the checkpoint.
pub fn verify_head_in_log(
    head: &SignedHead,
    proof: &LogProof,
    log: &VerifierKey,
    policy: &WitnessPolicy,
    now_secs: u64,
) -> Result<VerifiedCheckpoint, LogError> {
    let leaf = proof.leaf.verify(&log.key)?;
    let same = |a: &crate::head::Head, b: &crate::head::Head| {
        a.namespace == b.namespace
            && a.epoch == b.epoch
            && a.root == b.root
            && a.previous_root == b.previous_root
            && a.vrf_key_hash == b.vrf_key_hash
    };
    if !same(leaf, &head.head) {
        return Err(LogError::Index {
            index: leaf.epoch,
            epoch: head.head.epoch,
        });
    }
    let verified = verify_checkpoint(proof.checkpoint.as_bytes(), log, policy, now_secs)?;
    let path = decode_hashes(&proof.inclusion)?;
    verify_inclusion(
        &head_leaf(&proof.leaf)?,
        leaf.epoch,
        verified.checkpoint.size,
        &path,
        &verified.checkpoint.root,
    )?;
    Ok(verified)
}

/// Checks that checkpoint `new` extends `old` (both already verified), with the
/// consistency `proof` from `old.size` to `new.size`. One size with two roots is a
/// [`LogError::Fork`]; `old_note` and `new_note` are kept in it as evidence.
pub fn check_extends(
    old: &Checkpoint,
    old_note: &str,
    new: &Checkpoint,
    new_note: &str,
    proof: &[Hash],
) -> Result<(), LogError> {
    if new.size < old.size {
        return Err(LogError::Shrank {
            old: old.size,
            new: new.size,
        });
    }
    if new.size == old.size && new.root != old.root {
        return Err(LogError::Fork {
            size: new.size,
            first: old_note.to_owned(),
            second: new_note.to_owned(),
        });
    }
    verify_consistency(old.size, new.size, proof, &old.root, &new.root)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::checkpoint::{Checkpoint, log_key};
    use super::merkle::MemoryLog;
    use super::note::{Note, sign_ed25519};
    use super::*;
    use crate::head::Head;
    use ed25519_dalek::SigningKey;

    fn heads(key: &SigningKey, n: u64) -> Vec<SignedHead> {
        (0..n)
            .map(|epoch| {
                Head {
                    namespace: "test".into(),
                    epoch,
                    root: [epoch as u8; 32],
                    previous_root: [epoch.saturating_sub(1) as u8; 32],
                    vrf_key_hash: [9; 32],
                    timestamp_ms: 1_700_000_000_000 + epoch,
                }
                .sign(key)
                .expect("sign")
            })
            .collect()
    }

    fn note_of(key: &SigningKey, log: &MemoryLog, size: u64) -> (Checkpoint, String) {
        let c = Checkpoint {
            origin: checkpoint::origin_for("test").expect("origin"),
            size,
            root: log.root(size).expect("root"),
            extensions: vec![],
        };
        let n = Note {
            text: c.text(),
            signatures: vec![sign_ed25519(&c.origin, key, &c.text()).expect("sign")],
        };
        (c, n.to_text())
    }

    #[test]
    fn a_head_is_proven_in_a_checkpoint_and_another_epochs_proof_is_refused() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let hs = heads(&key, 12);
        let log = MemoryLog::from_leaves(hs.iter().map(|h| head_leaf(h).expect("leaf")));
        let (_, note) = note_of(&key, &log, 12);
        let lk = log_key("test", key.verifying_key()).expect("log key");
        let policy = WitnessPolicy::default();
        let proof = |i: u64| LogProof {
            checkpoint: note.clone(),
            leaf: hs[i as usize].clone(),
            inclusion: encode_hashes(&log.inclusion_proof(i, 12).expect("path")),
        };
        verify_head_in_log(&hs[7], &proof(7), &lk, &policy, 0).expect("included");
        // A re-signed head (fresh time) is proven by its epoch's first signature.
        let mut resigned = hs[7].head.clone();
        resigned.timestamp_ms += 60_000;
        let resigned = resigned.sign(&key).expect("sign");
        verify_head_in_log(&resigned, &proof(7), &lk, &policy, 0).expect("re-signed");
        // Another epoch's valid proof.
        assert!(matches!(
            verify_head_in_log(&hs[7], &proof(6), &lk, &policy, 0),
            Err(LogError::Index { .. })
        ));
        // Another leaf's path under this leaf.
        let mut relabelled = proof(7);
        relabelled.inclusion = proof(6).inclusion;
        assert!(matches!(
            verify_head_in_log(&hs[7], &relabelled, &lk, &policy, 0),
            Err(LogError::Merkle(_))
        ));
        // A leaf signed by someone else, stating the same.
        let mut forged = proof(7);
        forged.leaf = hs[7]
            .head
            .clone()
            .sign(&SigningKey::from_bytes(&[6; 32]))
            .expect("sign");
        assert!(matches!(
            verify_head_in_log(&hs[7], &forged, &lk, &policy, 0),
            Err(LogError::Head(_))
        ));
    }

    #[test]
    fn growth_is_checked_and_a_same_size_fork_is_evidence() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let hs = heads(&key, 30);
        let log = MemoryLog::from_leaves(hs.iter().map(|h| head_leaf(h).expect("leaf")));
        let (c10, n10) = note_of(&key, &log, 10);
        let (c30, n30) = note_of(&key, &log, 30);
        check_extends(&c10, &n10, &c30, &n30, &log.consistency_proof(10, 30).expect("proof")).expect("extends");
        assert!(matches!(
            check_extends(&c30, &n30, &c10, &n10, &[]),
            Err(LogError::Shrank { old: 30, new: 10 })
        ));
        let mut other = hs.clone();
        other[3] = heads(&SigningKey::from_bytes(&[6; 32]), 4).remove(3);
        let forked = MemoryLog::from_leaves(other.iter().map(|h| head_leaf(h).expect("leaf")));
        let (f10, fn10) = note_of(&key, &forked, 10);
        assert!(matches!(
            check_extends(&c10, &n10, &f10, &fn10, &[]),
            Err(LogError::Fork { size: 10, .. })
        ));
        let (f30, fn30) = note_of(&key, &forked, 30);
        assert!(matches!(
            check_extends(
                &c10,
                &n10,
                &f30,
                &fn30,
                &forked.consistency_proof(10, 30).expect("proof")
            ),
            Err(LogError::Merkle(_))
        ));
    }
}
