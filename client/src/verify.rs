//! Verification of akd proofs against a root hash, with typed errors.
//!
//! Synchronous and free of I/O. Signed heads, pinned keys and auditor policy build on
//! these once the head format exists.

use crate::KtConfig;
use crate::absence::{AbsenceError, check_beyond_akd, check_path};
use crate::head::{Head, HeadError, SignedHead, vrf_key_hash};
use crate::wire::{
    AbsenceResponse, BatchLookupResponse, DecodedAbsence, HistoryResponse, LookupResponse, WireError, decode_absence,
    decode_history_proof, decode_lookup_proof,
};
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
    /// A non-membership proof did not verify: an absence proof, or one inside a lookup
    /// or history proof that akd's verifier accepted (`crate::absence` says why akd's
    /// check is not enough).
    #[error("{what} for label {label} at epoch {epoch} does not verify: {reason}")]
    NonMembership {
        /// `absence proof`, `lookup freshness proof` or `history future-marker proof`.
        what: &'static str,
        /// The label, lossy UTF-8.
        label: String,
        /// The epoch it was checked at.
        epoch: u64,
        /// Why (boxed: it holds node labels, and errors travel by value).
        #[source]
        reason: Box<AbsenceError>,
    },
}

fn label_str(label: &AkdLabel) -> String {
    String::from_utf8_lossy(&label.0).into_owned()
}

/// The error of a non-membership (or path) check of `what` in a proof for `label`.
fn non_membership<'a>(what: &'static str, label: &'a str, epoch: u64) -> impl FnOnce(AbsenceError) -> VerifyError + 'a {
    move |reason| VerifyError::NonMembership {
        what,
        label: label.to_owned(),
        epoch,
        reason: Box::new(reason),
    }
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
    let fail = |cause| VerifyError::Proof {
        what: "lookup",
        label: shown.clone(),
        epoch,
        cause,
    };
    // akd asserts on version 0 (`get_marker_version_log2`): refuse it first.
    if proof.version == 0 || proof.version > epoch {
        return Err(fail(VerificationError::LookupProof(format!(
            "version {} is not in 1..={epoch}",
            proof.version
        ))));
    }
    check_beyond_akd(&proof.freshness_proof).map_err(non_membership("lookup freshness proof", &shown, epoch))?;
    for (what, path) in [
        ("lookup existence proof", &proof.existence_proof),
        ("lookup marker proof", &proof.marker_proof),
    ] {
        check_path(path).map_err(non_membership(what, &shown, epoch))?;
    }
    guarded(|| akd_core::verify::lookup_verify::<KtConfig>(vrf_public_key, root_hash, epoch, label, proof))
        .unwrap_or_else(|| Err(VerificationError::LookupProof(PANICKED.into())))
        .map_err(fail)
}

/// What a verifier that panicked on an answer is reported as.
const PANICKED: &str = "akd's verifier panicked on this proof (malformed numbers)";

/// Runs akd's verifier on an answer a server chose; a panic in it (akd asserts on
/// some numbers it assumes sane) becomes `None`, never a crash of the client or the
/// auditor. The checks before each call refuse the inputs known to do that.
fn guarded<T>(verify: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(verify)).ok()
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
    let fail = |cause| VerifyError::Proof {
        what: "history",
        label: shown.clone(),
        epoch,
        cause,
    };
    // akd adds 1 to versions and asserts on 0: refuse versions outside 1..=epoch and
    // a sequence that is not consecutive, with checked arithmetic, first.
    let versions: Vec<u64> = proof.update_proofs.iter().map(|u| u.version).collect();
    if let Some(v) = versions.iter().find(|v| **v == 0 || **v > epoch) {
        return Err(fail(VerificationError::HistoryProof(format!(
            "version {v} is not in 1..={epoch}"
        ))));
    }
    if let Some(pair) = versions.windows(2).find(|w| w[1].checked_add(1) != Some(w[0])) {
        return Err(fail(VerificationError::HistoryProof(format!(
            "versions {} then {} are not consecutive and decreasing",
            pair[0], pair[1]
        ))));
    }
    for marker in &proof.non_existence_of_future_marker_proofs {
        check_beyond_akd(marker).map_err(non_membership("history future-marker proof", &shown, epoch))?;
    }
    for update in &proof.update_proofs {
        check_path(&update.existence_proof).map_err(non_membership("history existence proof", &shown, epoch))?;
        if let Some(previous) = &update.previous_version_proof {
            check_path(previous).map_err(non_membership("history previous-version proof", &shown, epoch))?;
        }
    }
    for past in &proof.existence_of_past_marker_proofs {
        check_path(past).map_err(non_membership("history past-marker proof", &shown, epoch))?;
    }
    guarded(|| {
        akd_core::verify::key_history_verify::<KtConfig>(
            vrf_public_key,
            root_hash,
            epoch,
            label,
            proof,
            HistoryVerificationParams::Default { history_params: params },
        )
    })
    .unwrap_or_else(|| Err(VerificationError::HistoryProof(PANICKED.into())))
    .map_err(fail)
}

/// Verifies that `label` was never in the directory at `head`'s epoch: for each marker
/// version `1, 2, 4, ...` up to the epoch, the VRF proof gives the node of
/// `(label, Fresh, version)` under the pinned `vrf_public_key` (the node label is
/// derived, never taken from the answer), and the non-membership proof shows that node
/// is not in the tree whose root `head` signs (`crate::absence` says why every marker
/// and not version 1 alone). `head` must be one whose signature the caller checked
/// ([`PinnedKeys::check_head`]).
pub fn verify_absence(
    head: &Head,
    label: &AkdLabel,
    vrf_public_key: &[u8],
    proof: &DecodedAbsence,
) -> Result<(), VerifyError> {
    crate::absence::verify(vrf_public_key, head.root, head.epoch, label, proof).map_err(non_membership(
        "absence proof",
        &label_str(label),
        head.epoch,
    ))
}

/// One label's verified result in a batch lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// The label's current value, proven.
    Present(VerifyResult),
    /// The label was never in the directory, proven.
    Absent,
}

/// Keys a verifier trusts, obtained out of band (never from the server being checked).
#[derive(Debug, Clone)]
pub struct PinnedKeys {
    /// The directory's head-signing key.
    pub directory_key: ed25519_dalek::VerifyingKey,
    /// The directory's VRF public key; every head signs its blake3 hash.
    pub vrf_public_key: Vec<u8>,
    /// The directory's namespace; every head signs it. A head of another namespace
    /// signed with the same key (another log the operator runs) is refused.
    pub namespace: String,
}

/// How far in the future a head's timestamp may be before it is refused: clocks
/// disagree, by seconds on servers and by minutes on phones.
pub const DEFAULT_MAX_SKEW_MS: u64 = 5 * 60 * 1000;

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
    /// The head is of another namespace than the pinned one.
    #[error("the head of epoch {epoch} is for namespace {got:?}, not the pinned {pinned:?}")]
    Namespace {
        /// The head's epoch.
        epoch: u64,
        /// The pinned namespace.
        pinned: String,
        /// The head's.
        got: String,
    },
    /// The response answers another question than the one asked (another label's
    /// genuine proof, or a history cut to fewer versions than asked).
    #[error("the directory answered another question: asked {asked}, answered {answered}")]
    OtherQuestion {
        /// What was asked.
        asked: String,
        /// What the response says it answers.
        answered: String,
    },
    /// The proof could not be decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// akd's verifier rejected the proof.
    #[error(transparent)]
    Proof(#[from] VerifyError),
    /// The head is dated in the future, beyond the allowed clock skew.
    #[error(
        "the head of epoch {epoch} is dated {ahead_ms} ms in the future, more than the allowed skew of {max_skew_ms} ms"
    )]
    Future {
        /// The head's epoch.
        epoch: u64,
        /// How far ahead of this clock.
        ahead_ms: u64,
        /// The limit.
        max_skew_ms: u64,
    },
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
/// epoch interval even when nothing changes, so a fresh one always exists), and a head
/// dated more than `max_skew_ms` after `now_ms`: a directory that re-signs an old epoch
/// far in the future would otherwise freeze a client's view past any maximum age.
pub fn check_age(head: &Head, now_ms: u64, max_ms: u64, max_skew_ms: u64) -> Result<(), ResponseError> {
    check_not_future(head, now_ms, max_skew_ms)?;
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

/// Refuses a head dated more than `max_skew_ms` after `now_ms`.
pub fn check_not_future(head: &Head, now_ms: u64, max_skew_ms: u64) -> Result<(), ResponseError> {
    let ahead_ms = head.timestamp_ms.saturating_sub(now_ms);
    if ahead_ms > max_skew_ms {
        return Err(ResponseError::Future {
            epoch: head.epoch,
            ahead_ms,
            max_skew_ms,
        });
    }
    Ok(())
}

impl PinnedKeys {
    /// Checks a head's signature, VRF key hash and namespace.
    pub fn check_head<'a>(&self, head: &'a SignedHead) -> Result<&'a Head, ResponseError> {
        let h = head.verify(&self.directory_key)?;
        if h.vrf_key_hash != vrf_key_hash(&self.vrf_public_key) {
            return Err(ResponseError::VrfKey { epoch: h.epoch });
        }
        if h.namespace != self.namespace {
            return Err(ResponseError::Namespace {
                epoch: h.epoch,
                pinned: self.namespace.clone(),
                got: h.namespace.clone(),
            });
        }
        Ok(h)
    }

    /// Verifies the answer to a lookup of `label`: that it answers that question, its
    /// head, then the proof at that head's epoch and root. The label is the caller's,
    /// never the response's: a directory could otherwise answer with another label's
    /// genuine proof.
    pub fn lookup_response(&self, label: &str, response: &LookupResponse) -> Result<VerifyResult, ResponseError> {
        if response.label != label {
            return Err(ResponseError::OtherQuestion {
                asked: format!("lookup of {label:?}"),
                answered: format!("lookup of {:?}", response.label),
            });
        }
        let head = self.check_head(&response.head)?;
        let proof = decode_lookup_proof(&response.proof)?;
        Ok(lookup(
            &self.vrf_public_key,
            head.root,
            head.epoch,
            AkdLabel::from(label),
            proof,
        )?)
    }

    /// Verifies a `404` answer that claims `label` was never in the directory: that it
    /// answers that question, its head, then the absence proof at that head.
    pub fn absence_response(&self, label: &str, response: &AbsenceResponse) -> Result<(), ResponseError> {
        if response.label != label {
            return Err(ResponseError::OtherQuestion {
                asked: format!("lookup of {label:?}"),
                answered: format!("absence of {:?}", response.label),
            });
        }
        let head = self.check_head(&response.head)?;
        let proof = decode_absence(&response.absence)?;
        Ok(verify_absence(
            head,
            &AkdLabel::from(label),
            &self.vrf_public_key,
            &proof,
        )?)
    }

    /// Verifies a batch lookup of `labels`: one result per label, in order, each with
    /// exactly one of a lookup proof or an absence proof, all at the one head.
    pub fn batch_lookup_response(
        &self,
        labels: &[String],
        response: &BatchLookupResponse,
    ) -> Result<Vec<Presence>, ResponseError> {
        let answered: Vec<&str> = response.results.iter().map(|r| r.label.as_str()).collect();
        if answered.len() != labels.len() || answered.iter().zip(labels).any(|(a, l)| *a != l) {
            return Err(ResponseError::OtherQuestion {
                asked: format!("batch lookup of {labels:?}"),
                answered: format!("batch lookup of {answered:?}"),
            });
        }
        let head = self.check_head(&response.head)?;
        response
            .results
            .iter()
            .map(|item| match (&item.proof, &item.absence) {
                (Some(proof), None) => Ok(Presence::Present(lookup(
                    &self.vrf_public_key,
                    head.root,
                    head.epoch,
                    AkdLabel::from(item.label.as_str()),
                    decode_lookup_proof(proof)?,
                )?)),
                (None, Some(absence)) => {
                    verify_absence(
                        head,
                        &AkdLabel::from(item.label.as_str()),
                        &self.vrf_public_key,
                        &decode_absence(absence)?,
                    )?;
                    Ok(Presence::Absent)
                }
                _ => Err(ResponseError::OtherQuestion {
                    asked: format!("a lookup or absence proof of {:?}", item.label),
                    answered: "neither, or both".into(),
                }),
            })
            .collect()
    }

    /// Verifies the answer to a history of `label` with `most_recent` (`None`: the
    /// complete history): that it answers that question, its head, then the proof
    /// with the parameters asked. A complete history proves every version from 1 on
    /// and that no later one exists, so a key swapped in and back out shows.
    pub fn history_response(
        &self,
        label: &str,
        most_recent: Option<u64>,
        response: &HistoryResponse,
    ) -> Result<Vec<VerifyResult>, ResponseError> {
        if response.label != label || response.most_recent != most_recent {
            let describe = |l: &str, n: Option<u64>| match n {
                Some(n) => format!("the {n} most recent versions of {l:?}"),
                None => format!("the complete history of {l:?}"),
            };
            return Err(ResponseError::OtherQuestion {
                asked: describe(label, most_recent),
                answered: describe(&response.label, response.most_recent),
            });
        }
        let head = self.check_head(&response.head)?;
        let proof = decode_history_proof(&response.proof)?;
        let params = match most_recent {
            Some(n) => HistoryParams::MostRecent(usize::try_from(n).unwrap_or(usize::MAX)),
            None => HistoryParams::Complete,
        };
        Ok(history(
            &self.vrf_public_key,
            head.root,
            head.epoch,
            AkdLabel::from(label),
            proof,
            params,
        )?)
    }
}
