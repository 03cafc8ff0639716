//! Absence proofs: what the directory answers for a label it never held.
//!
//! akd verifies a lookup or history of any version of a label only with the node of its
//! marker version (`VRF(label, Fresh, 2^k)`, `2^k` at most the epoch) in the tree, so
//! "absent at epoch e" is, for each marker version up to e, the VRF proof of that node
//! label and a non-membership proof of it in e's tree (akd's
//! `Azks::get_non_membership_proof`). Clients verify them with
//! `kt_client::verify::verify_absence`; docs/decisions/013-absence-proofs.md says why
//! version 1 alone would not do.

use crate::KtConfig;
use akd::append_only_zks::DEFAULT_AZKS_KEY;
use akd::errors::{AkdError, StorageError};
use akd::storage::types::DbRecord;
use akd::storage::{Database, StorageManager};
use akd::{AkdLabel, Azks, VersionFreshness};
use akd_core::ecvrf::VRFKeyStorage;
use kt_client::absence::marker_versions;
use kt_client::wire::{DecodedAbsence, DecodedMarker};

/// The absence proof of `label` in the tree `storage` holds, at the tree's latest epoch,
/// and that epoch. Like akd's lookups it proves at whatever epoch the stored tree is at,
/// so the caller compares the epoch with the head it answers with. Costs one VRF proof
/// and one path from the root per marker version (`floor(log2 epoch) + 1`).
pub async fn prove<S: Database + 'static, V: VRFKeyStorage>(
    storage: &StorageManager<S>,
    vrf: &V,
    label: &AkdLabel,
) -> Result<(DecodedAbsence, u64), AkdError> {
    let azks: Azks = match storage.get::<Azks>(&DEFAULT_AZKS_KEY).await? {
        DbRecord::Azks(azks) => azks,
        _ => {
            return Err(AkdError::Storage(StorageError::NotFound(
                "the tree's root record (azks) is another kind of record".into(),
            )));
        }
    };
    let epoch = azks.get_latest_epoch();
    let mut markers = Vec::new();
    for version in marker_versions(epoch) {
        let vrf_proof = vrf
            .get_label_proof::<KtConfig>(label, VersionFreshness::Fresh, version)
            .await?;
        let node = vrf.get_node_label_from_vrf_proof(vrf_proof).await;
        let proof = azks.get_non_membership_proof::<KtConfig, _>(storage, node).await?;
        markers.push(DecodedMarker {
            version,
            vrf_proof: vrf_proof.to_bytes().to_vec(),
            proof,
        });
    }
    Ok((DecodedAbsence { markers }, epoch))
}
