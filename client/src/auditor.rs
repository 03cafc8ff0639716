//! Wire types of the auditor's API (`kt-auditor serve`): status, co-signed heads,
//! per-epoch records and misbehaviour evidence. Clients and the dashboard read these;
//! the auditor writes them. Hashes and keys are lowercase hex.

use crate::cosign::{CoSignature, PlexiSignature};
use crate::head::SignedHead;
use serde::{Deserialize, Serialize};

/// The auditor's state at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditState {
    /// Every epoch the directory has signed is verified and co-signed.
    Ok,
    /// Behind the directory, unable to reach it, or the directory's newest head is
    /// older than allowed; `reason` says which. Nothing wrong has been proven.
    Lagging,
    /// Misbehaviour was proven (see the evidence); the auditor no longer advances.
    Failed,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The directory's namespace (empty until its first head is verified).
    pub namespace: String,
    /// Where the auditor follows the directory.
    pub directory_url: String,
    /// The pinned directory signing key.
    pub directory_key: String,
    /// This auditor's co-signing key.
    pub auditor_key: String,
    /// ok / lagging / failed.
    pub state: AuditState,
    /// Why the state is not `ok` (empty when it is).
    pub reason: String,
    /// The newest epoch the directory has shown a validly signed head for.
    pub last_seen_epoch: Option<u64>,
    /// The newest verified and co-signed epoch.
    pub last_verified_epoch: Option<u64>,
    /// The root of `last_verified_epoch`.
    pub last_verified_root: Option<String>,
    /// `last_seen_epoch - last_verified_epoch`.
    pub lag: u64,
    /// Timestamp of the newest directory head seen, ms since the Unix epoch.
    pub last_head_timestamp_ms: Option<u64>,
    /// When the auditor last heard from the directory successfully, ms.
    pub last_contact_ms: Option<u64>,
    /// How many evidence records are published.
    pub evidence_count: u64,
    /// The longest the directory may go without a fresh signed head, seconds.
    pub max_head_age_secs: u64,
}

/// `GET /v1/heads/{epoch}`: a directory head and the auditor's co-signatures over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoSignedHead {
    /// The head as the directory signed it.
    pub directory_head: SignedHead,
    /// The auditor's co-signature (our format; binds the previous root).
    pub cosignature: CoSignature,
    /// The same attestation in Plexi's format.
    pub plexi: PlexiSignature,
    /// The auditor's public key, for convenience; pin it out of band.
    pub auditor_key: String,
}

/// One verified epoch in `GET /v1/epochs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochSummary {
    /// The epoch.
    pub epoch: u64,
    /// Its root.
    pub root: String,
    /// The root it extends.
    pub previous_root: String,
    /// The directory's head timestamp, ms.
    pub head_timestamp_ms: u64,
    /// When the auditor co-signed it, ms.
    pub verified_at_ms: u64,
    /// Time spent verifying the append-only proof, ms.
    pub verify_ms: u64,
    /// Size of the append-only proof (0 for epoch 0, which has none).
    pub proof_bytes: u64,
    /// Leaves the proof inserts: one per key update published in the epoch.
    pub updates: u64,
}

/// `GET /v1/epochs?from=&limit=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochList {
    /// Verified epochs, ascending.
    pub epochs: Vec<EpochSummary>,
}

/// What kind of misbehaviour a record proves or reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// The append-only proof for an epoch does not verify (the blob is kept).
    InvalidProof,
    /// A head's previous root is not the root verified for the epoch before (or epoch
    /// 0 is not the empty tree).
    BrokenChain,
    /// A head's signature does not verify with the pinned directory key.
    BadSignature,
    /// Two validly signed heads for one epoch with different roots.
    Fork,
    /// A validly signed head, newer than another, for an older epoch.
    Rollback,
    /// A head for another namespace or VRF key than the one pinned.
    WrongIdentity,
    /// The directory produced no fresh signed head for longer than allowed.
    Stale,
    /// The proof for an epoch is missing or undecodable.
    MissingProof,
    /// A validly signed head dated further in the future than clocks can disagree.
    FutureHead,
    /// Two epoch-log checkpoints signed by the directory with one size and two roots
    /// (both notes are in `reason`).
    LogFork,
}

impl EvidenceKind {
    /// Whether this finding stops the auditor for good: a contradiction between heads
    /// the directory signed, or a proof for a signed head that does not verify.
    /// Staleness ends when the directory signs a fresh head; a bad signature or a
    /// missing proof is bytes nobody signed (older auditors recorded them as evidence:
    /// they no longer halt).
    pub fn halts(self) -> bool {
        !matches!(
            self,
            EvidenceKind::Stale | EvidenceKind::BadSignature | EvidenceKind::MissingProof
        )
    }
}

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    /// Found by this auditor while following the directory.
    Auditor,
    /// Submitted with `POST /v1/evidence` and verified before it was stored.
    Submitted,
}

/// One published evidence record (`GET /v1/evidence`, `/v1/evidence/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Sequence number, from 1.
    pub id: u64,
    /// What it shows.
    pub kind: EvidenceKind,
    /// The epoch concerned.
    pub epoch: u64,
    /// When it was recorded, ms.
    pub detected_at_ms: u64,
    /// Who found it.
    pub source: EvidenceSource,
    /// What is wrong, for a human.
    pub reason: String,
    /// The signed heads involved (check them with the directory's key).
    pub heads: Vec<SignedHead>,
    /// For a bad proof: the blob's name; its bytes are at `/v1/evidence/{id}/blob`.
    pub blob_name: Option<String>,
}

/// `GET /v1/evidence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceList {
    /// Records, newest first.
    pub evidence: Vec<Evidence>,
}

/// `POST /v1/evidence` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceAccepted {
    /// The record's id.
    pub id: u64,
    /// False when the same evidence was already on record.
    pub created: bool,
}
