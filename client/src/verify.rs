//! Verification of akd proofs against a root hash, with typed errors.
//!
//! Synchronous and free of I/O. Signed heads, pinned keys and auditor policy build on
//! these once the head format exists.

use crate::KtConfig;
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
