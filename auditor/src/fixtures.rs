//! Fixtures of this crate's unit tests, written once.

use crate::store::EpochRecord;
use ed25519_dalek::SigningKey;
use kt_client::cosign::Attestation;
use kt_client::head::SignedHead;

/// The record of `head` as verified and co-signed by `auditor` at `at_ms` (the
/// co-signature's timestamp too), with small fixed figures.
pub(crate) fn record(head: SignedHead, auditor: &SigningKey, at_ms: u64) -> EpochRecord {
    let (cosignature, plexi) = Attestation {
        namespace: head.head.namespace.clone(),
        epoch: head.head.epoch,
        root: head.head.root,
        previous_root: head.head.previous_root,
        timestamp_ms: at_ms,
    }
    .sign(auditor)
    .unwrap_or_else(|e| panic!("co-signing a test head: {e}"));
    EpochRecord {
        head,
        cosignature,
        plexi,
        verified_at_ms: at_ms,
        verify_ms: 3,
        proof_bytes: 6,
        updates: 2,
    }
}
