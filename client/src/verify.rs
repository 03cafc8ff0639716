//! Verification of akd proofs against a root hash, with typed errors.
//!
//! Synchronous and free of I/O. Signed heads, pinned keys and auditor policy build on
//! these once the head format exists.

use crate::KtConfig;
use crate::head::{Head, HeadError, SignedHead, vrf_key_hash};
use crate::wire::{HistoryResponse, LookupResponse, WireError, decode_history_proof, decode_lookup_proof};
use akd_core::verify::VerificationError;
use akd_core::{AkdLabel, HistoryProof, LookupProof, VerifyResult};

pub use akd_core::verify::history::{HistoryParams, HistoryVerificationParams};

/// Why a proof did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// akd's verifier rejected the proof.
    #[error("{what} proof for label {label} at epoch {epoch} does not verify: {cause}")]
    Proof {
        /// `lookup` or `history`.
        what: &'static str,
        /// The label, lossy UTF-8.
        label: String,
        /// The epoch it was checked at.
        epoch: u64,
        /// akd's reason (it does not implement `std::error::Error`: akd_core is no_std).
        cause: VerificationError,
    },
}

fn label_str(label: &AkdLabel) -> String {
    String::from_utf8_lossy(&label.0).into_owned()
}

/// Verifies that `proof` shows `label`'s current value at `epoch` under `root_hash`.
pub fn lookup(
    vrf_public_key: &[u8],
    root_hash: [u8; 32],
    epoch: u64,
    label: AkdLabel,
    proof: LookupProof,
) -> Result<VerifyResult, VerifyError> {
    let shown = label_str(&label);
    akd_core::verify::lookup_verify::<KtConfig>(vrf_public_key, root_hash, epoch, label, proof).map_err(|source| {
        VerifyError::Proof {
            what: "lookup",
            label: shown,
            epoch,
            cause: source,
        }
    })
}

/// Verifies that `proof` is `label`'s history (as selected by `params`, which must be
/// the ones the server used) at `epoch` under `root_hash`. Newest version first.
pub fn history(
    vrf_public_key: &[u8],
    root_hash: [u8; 32],
    epoch: u64,
    label: AkdLabel,
    proof: HistoryProof,
    params: HistoryParams,
) -> Result<Vec<VerifyResult>, VerifyError> {
    let shown = label_str(&label);
    akd_core::verify::key_history_verify::<KtConfig>(
        vrf_public_key,
        root_hash,
        epoch,
        label,
        proof,
        HistoryVerificationParams::Default { history_params: params },
    )
    .map_err(|source| VerifyError::Proof {
        what: "history",
        label: shown,
        epoch,
        cause: source,
    })
}

/// Keys a verifier trusts, obtained out of band (never from the server being checked).
#[derive(Debug, Clone)]
pub struct PinnedKeys {
    /// The directory's head-signing key.
    pub directory_key: ed25519_dalek::VerifyingKey,
    /// The directory's VRF public key; every head signs its blake3 hash.
    pub vrf_public_key: Vec<u8>,
}

/// Why a response from the directory did not verify.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// The head's signature (or encoding) is bad.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The head names another VRF key than the pinned one.
    #[error("the head of epoch {epoch} commits to a different VRF public key than the pinned one")]
    VrfKey {
        /// The head's epoch.
        epoch: u64,
    },
    /// The proof could not be decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// akd's verifier rejected the proof.
    #[error(transparent)]
    Proof(#[from] VerifyError),
    /// The head is older than the caller's maximum age: the directory may be serving a
    /// frozen view (or has stalled).
    #[error("the head of epoch {epoch} was signed {age_ms} ms ago, more than the allowed {max_ms} ms")]
    Stale {
        /// The head's epoch.
        epoch: u64,
        /// Its age.
        age_ms: u64,
        /// The limit.
        max_ms: u64,
    },
}

/// Refuses a head signed more than `max_ms` before `now_ms` (heads are re-signed every
/// epoch interval even when nothing changes, so a fresh one always exists).
pub fn check_age(head: &Head, now_ms: u64, max_ms: u64) -> Result<(), ResponseError> {
    let age_ms = now_ms.saturating_sub(head.timestamp_ms);
    if age_ms > max_ms {
        return Err(ResponseError::Stale {
            epoch: head.epoch,
            age_ms,
            max_ms,
        });
    }
    Ok(())
}

impl PinnedKeys {
    /// Checks a head's signature and VRF key hash.
    pub fn check_head<'a>(&self, head: &'a SignedHead) -> Result<&'a Head, ResponseError> {
        let h = head.verify(&self.directory_key)?;
        if h.vrf_key_hash != vrf_key_hash(&self.vrf_public_key) {
            return Err(ResponseError::VrfKey { epoch: h.epoch });
        }
        Ok(h)
    }

    /// Verifies a lookup response: head, then proof at that head's epoch and root.
    pub fn lookup_response(&self, response: &LookupResponse) -> Result<VerifyResult, ResponseError> {
        let head = self.check_head(&response.head)?;
        let proof = decode_lookup_proof(&response.proof)?;
        Ok(lookup(
            &self.vrf_public_key,
            head.root,
            head.epoch,
            AkdLabel::from(response.label.as_str()),
            proof,
        )?)
    }

    /// Verifies a history response: head, then proof with the response's parameters.
    pub fn history_response(&self, response: &HistoryResponse) -> Result<Vec<VerifyResult>, ResponseError> {
        let head = self.check_head(&response.head)?;
        let proof = decode_history_proof(&response.proof)?;
        let params = match response.most_recent {
            Some(n) => HistoryParams::MostRecent(usize::try_from(n).unwrap_or(usize::MAX)),
            None => HistoryParams::Complete,
        };
        Ok(history(
            &self.vrf_public_key,
            head.root,
            head.epoch,
            AkdLabel::from(response.label.as_str()),
            proof,
            params,
        )?)
    }
}
