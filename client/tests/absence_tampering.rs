//! Absence answers are either exactly valid or refused: genuine ones from akd's
//! in-memory directory under signed heads, and the answers a lying directory would
//! choose instead: another label's absence proof, the proof akd builds for a present
//! label, a forged one whose "longest prefix" sits above a present label, a proof from
//! an older epoch under a newer head, swapped children, wrong VRF proofs, and every byte
//! flipped.

use akd::append_only_zks::DEFAULT_AZKS_KEY;
use akd::ecvrf::{HardCodedAkdVRF, VRFKeyStorage};
use akd::storage::StorageManager;
use akd::storage::memory::AsyncInMemoryDatabase;
use akd::storage::types::DbRecord;
use akd::{
    AkdLabel, AkdValue, Azks, AzksElement, AzksParallelismConfig, Directory, NodeLabel, NonMembershipProof,
    VersionFreshness,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use kt_client::KtConfig;
use kt_client::absence::{AbsenceError, marker_versions};
use kt_client::head::{Head, SignedHead, vrf_key_hash};
use kt_client::verify::{PinnedKeys, ResponseError, VerifyError};
use kt_client::wire::{AbsenceResponse, DecodedAbsence, DecodedMarker, WireError, decode_absence, encode_absence};

type Mem = AsyncInMemoryDatabase;

struct Fixture {
    pinned: PinnedKeys,
    /// Heads of epochs 1 to 3.
    heads: Vec<SignedHead>,
    /// The tree at epoch 3, and a reader of it.
    storage: StorageManager<Mem>,
    /// "nobody", absent at every epoch, answered at epoch 3.
    nobody: AbsenceResponse,
    /// "nobody-else", absent too, at epoch 3.
    nobody_else: AbsenceResponse,
    /// "late", absent at epoch 2 (inserted at 3), answered at epoch 2.
    late_at_2: AbsenceResponse,
    /// "nobody" at epoch 2.
    nobody_at_2: AbsenceResponse,
}

async fn azks(storage: &StorageManager<Mem>) -> Azks {
    match storage.get::<Azks>(&DEFAULT_AZKS_KEY).await.expect("azks") {
        DbRecord::Azks(a) => a,
        _ => panic!("not an azks"),
    }
}

/// What the directory serves (`kt_directory::absence::prove`, which the client cannot
/// depend on): for each marker version up to the tree's epoch, the VRF proof of
/// `(label, Fresh, version)` and akd's non-membership proof of its node.
async fn prove(storage: &StorageManager<Mem>, label: &str) -> DecodedAbsence {
    let label = AkdLabel::from(label);
    let azks = azks(storage).await;
    let mut markers = Vec::new();
    for version in marker_versions(azks.get_latest_epoch()) {
        let vrf = HardCodedAkdVRF {}
            .get_label_proof::<KtConfig>(&label, VersionFreshness::Fresh, version)
            .await
            .expect("vrf");
        let node = HardCodedAkdVRF {}.get_node_label_from_vrf_proof(vrf).await;
        let proof = azks
            .get_non_membership_proof::<KtConfig, _>(storage, node)
            .await
            .expect("non-membership");
        markers.push(DecodedMarker {
            version,
            vrf_proof: vrf.to_bytes().to_vec(),
            proof,
        });
    }
    DecodedAbsence { markers }
}

async fn answer(storage: &StorageManager<Mem>, label: &str, head: &SignedHead) -> AbsenceResponse {
    AbsenceResponse {
        error: format!("label {label:?} is not in the directory"),
        label: label.into(),
        head: head.clone(),
        absence: encode_absence(&prove(storage, label).await),
    }
}

/// What a lying directory builds to "prove" `node` absent although it is in the tree
/// (akd 0.13's verifier accepts it): the root as the longest prefix, with its two
/// genuine children (one of them an interior node above `node`) and its genuine
/// membership proof.
async fn forge(storage: &StorageManager<Mem>, node: NodeLabel) -> NonMembershipProof {
    let azks = azks(storage).await;
    let path = azks
        .get_membership_proof::<KtConfig, _>(storage, node)
        .await
        .expect("membership");
    assert!(path.sibling_proofs.len() >= 2, "a 41-label tree is deeper than 2");
    let step = &path.sibling_proofs[0];
    let towards = path.sibling_proofs[1].label;
    let on_path = AzksElement {
        label: towards,
        value: azks
            .get_membership_proof::<KtConfig, _>(storage, towards)
            .await
            .expect("membership")
            .hash_val,
    };
    let children = match step.direction {
        akd::Direction::Left => [on_path, step.siblings[0]],
        akd::Direction::Right => [step.siblings[0], on_path],
    };
    NonMembershipProof {
        label: node,
        longest_prefix: step.label,
        longest_prefix_children: children,
        longest_prefix_membership_proof: azks
            .get_membership_proof::<KtConfig, _>(storage, step.label)
            .await
            .expect("membership"),
    }
}

async fn fixture() -> Fixture {
    let db = Mem::new();
    let storage = StorageManager::new_no_cache(db.clone());
    let dir = Directory::<KtConfig, _, _>::new(
        StorageManager::new_no_cache(db),
        HardCodedAkdVRF {},
        AzksParallelismConfig::default(),
    )
    .await
    .expect("directory");
    let vrf = dir.get_public_key().await.expect("vrf").as_bytes().to_vec();
    let key = SigningKey::from_bytes(&[43; 32]);
    let mut previous = [0u8; 32];
    let mut heads = Vec::new();
    let mut at_2 = None;
    for epoch in 1..=3u64 {
        let mut updates: Vec<(AkdLabel, AkdValue)> = (0..40)
            .map(|i| {
                (
                    AkdLabel::from(format!("label-{i}").as_str()),
                    AkdValue(format!("value {i} at {epoch}").into_bytes()),
                )
            })
            .collect();
        if epoch == 3 {
            updates.push((AkdLabel::from("late"), AkdValue::from("late key")));
        }
        let hash = dir.publish(updates).await.expect("publish");
        let head = Head {
            namespace: "absence".into(),
            epoch: hash.0,
            root: hash.1,
            previous_root: previous,
            vrf_key_hash: vrf_key_hash(&vrf),
            timestamp_ms: 1000 + epoch,
        }
        .sign(&key)
        .expect("sign");
        previous = hash.1;
        if epoch == 2 {
            at_2 = Some((
                answer(&storage, "late", &head).await,
                answer(&storage, "nobody", &head).await,
            ));
        }
        heads.push(head);
    }
    let (late_at_2, nobody_at_2) = at_2.expect("epoch 2");
    let head = heads[2].clone();
    Fixture {
        pinned: PinnedKeys {
            directory_key: key.verifying_key(),
            vrf_public_key: vrf,
            namespace: "absence".into(),
        },
        nobody: answer(&storage, "nobody", &head).await,
        nobody_else: answer(&storage, "nobody-else", &head).await,
        heads,
        storage,
        late_at_2,
        nobody_at_2,
    }
}

/// `base` with its absence proof replaced by `absence`.
fn with_absence(base: &AbsenceResponse, absence: &DecodedAbsence) -> AbsenceResponse {
    AbsenceResponse {
        absence: encode_absence(absence),
        ..base.clone()
    }
}

fn refused_as_absence(result: Result<(), ResponseError>) -> AbsenceError {
    match result {
        Err(ResponseError::Proof(VerifyError::NonMembership { reason, .. })) => reason.innermost().clone(),
        other => panic!("expected a refused absence proof, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genuine_absence_answers_verify() {
    let f = fixture().await;
    for (label, answer) in [
        ("nobody", &f.nobody),
        ("nobody-else", &f.nobody_else),
        ("late", &f.late_at_2),
        ("nobody", &f.nobody_at_2),
    ] {
        f.pinned.absence_response(label, answer).expect("verifies");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_labels_absence_proof_is_refused() {
    let f = fixture().await;
    // Relabelled: the VRF proof is of "nobody-else", not of "nobody".
    let mut relabelled = f.nobody_else.clone();
    relabelled.label = "nobody".into();
    assert!(matches!(
        refused_as_absence(f.pinned.absence_response("nobody", &relabelled)),
        AbsenceError::VrfProof(_)
    ));
    // The right VRF proof with another label's non-membership proof.
    let mut mixed = f.nobody.clone();
    mixed.absence.markers[0].proof = f.nobody_else.absence.markers[0].proof.clone();
    assert!(matches!(
        refused_as_absence(f.pinned.absence_response("nobody", &mixed)),
        AbsenceError::OtherNode { .. }
    ));
    // An answer to another question.
    assert!(matches!(
        f.pinned.absence_response("nobody", &f.nobody_else),
        Err(ResponseError::OtherQuestion { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_present_labels_proofs_never_prove_it_absent() {
    let f = fixture().await;
    let head = f.heads[2].clone();
    // What akd builds when asked for a member's non-membership proof.
    for label in ["label-3", "late"] {
        let answer = answer(&f.storage, label, &head).await;
        assert!(f.pinned.absence_response(label, &answer).is_err(), "{label}");
    }
    // The member's own membership proof, dressed up as the longest prefix's: the leaf
    // with two empty children, for every marker version.
    let azks = azks(&f.storage).await;
    let mut dressed = prove(&f.storage, "label-3").await;
    for marker in &mut dressed.markers {
        let node = marker.proof.label;
        let empty = AzksElement {
            label: <KtConfig as akd::Configuration>::empty_label(),
            value: <KtConfig as akd::Configuration>::empty_node_hash(),
        };
        marker.proof = NonMembershipProof {
            label: node,
            longest_prefix: node,
            longest_prefix_children: [empty, empty],
            longest_prefix_membership_proof: azks
                .get_membership_proof::<KtConfig, _>(&f.storage, node)
                .await
                .expect("membership"),
        };
    }
    let answer = AbsenceResponse {
        label: "label-3".into(),
        absence: encode_absence(&dressed),
        ..f.nobody.clone()
    };
    assert!(f.pinned.absence_response("label-3", &answer).is_err());
    // The forgery akd 0.13's own verifier accepts, for every marker version: refused
    // for the check akd lacks.
    let mut forged = prove(&f.storage, "label-3").await;
    for marker in &mut forged.markers {
        marker.proof = forge(&f.storage, marker.proof.label).await;
    }
    let answer = AbsenceResponse {
        label: "label-3".into(),
        absence: encode_absence(&forged),
        ..f.nobody.clone()
    };
    assert!(matches!(
        refused_as_absence(f.pinned.absence_response("label-3", &answer)),
        AbsenceError::ChildIsPrefix { .. }
    ));
}

/// Version 1 alone proves nothing for a label at version 2 or more (akd's lookup
/// verifier never looks at version 1 then): every marker version up to the epoch must
/// be there, no more and no fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_marker_version_must_be_proven() {
    let f = fixture().await;
    let full = decode_absence(&f.nobody.absence).expect("decodes");
    assert_eq!(full.markers.iter().map(|m| m.version).collect::<Vec<_>>(), vec![1, 2]);
    let first_only = DecodedAbsence {
        markers: full.markers[..1].to_vec(),
    };
    let mut extra = full.clone();
    let mut four = full.markers[1].clone();
    four.version = 4;
    extra.markers.push(four);
    let mut reversed = full.clone();
    reversed.markers.reverse();
    for bad in [first_only, extra, reversed, DecodedAbsence { markers: vec![] }] {
        let answer = with_absence(&f.nobody, &bad);
        assert!(matches!(
            refused_as_absence(f.pinned.absence_response("nobody", &answer)),
            AbsenceError::MarkerVersions { .. }
        ));
    }
    // A marker's proof under another version's number is refused by its VRF proof.
    let mut relabelled = full.clone();
    relabelled.markers.swap(0, 1);
    relabelled.markers[0].version = 1;
    relabelled.markers[1].version = 2;
    let answer = with_absence(&f.nobody, &relabelled);
    assert!(matches!(
        refused_as_absence(f.pinned.absence_response("nobody", &answer)),
        AbsenceError::VrfProof(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_epochs_proof_under_a_newer_head_is_refused() {
    let f = fixture().await;
    // "late" was absent at epoch 2; under epoch 3's head that proof proves nothing.
    let mut replayed = f.late_at_2.clone();
    replayed.head = f.heads[2].clone();
    assert!(f.pinned.absence_response("late", &replayed).is_err());
    // Nor does a still-true one: the tree, and so the root, moved on.
    let mut replayed = f.nobody_at_2.clone();
    replayed.head = f.heads[2].clone();
    assert!(matches!(
        refused_as_absence(f.pinned.absence_response("nobody", &replayed)),
        AbsenceError::Root
    ));
    // A proof at epoch 3 under epoch 2's head, the other way round.
    let mut backdated = f.nobody.clone();
    backdated.head = f.heads[1].clone();
    assert!(f.pinned.absence_response("nobody", &backdated).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_children_and_wrong_vrf_proofs_are_refused() {
    let f = fixture().await;
    let decoded = decode_absence(&f.nobody.absence).expect("decodes");
    let mut swapped = decoded.clone();
    swapped.markers[0].proof.longest_prefix_children.swap(0, 1);
    let answer = with_absence(&f.nobody, &swapped);
    assert!(f.pinned.absence_response("nobody", &answer).is_err());

    let label = AkdLabel::from("nobody");
    for (freshness, version) in [(VersionFreshness::Fresh, 2), (VersionFreshness::Stale, 1)] {
        let vrf = HardCodedAkdVRF {}
            .get_label_proof::<KtConfig>(&label, freshness, version)
            .await
            .expect("vrf");
        let mut wrong = decoded.clone();
        wrong.markers[0].vrf_proof = vrf.to_bytes().to_vec();
        let answer = with_absence(&f.nobody, &wrong);
        assert!(matches!(
            refused_as_absence(f.pinned.absence_response("nobody", &answer)),
            AbsenceError::VrfProof(_)
        ));
    }
    // A VRF proof under another key is refused by the pinned one.
    let mut other = f.pinned.clone();
    other.vrf_public_key[0] ^= 1;
    assert!(other.absence_response("nobody", &f.nobody).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_of_an_absence_answer_matters() {
    let f = fixture().await;
    for marker in 0..f.nobody.absence.markers.len() {
        for field in ["vrf_proof", "proof"] {
            let get = |a: &AbsenceResponse| match field {
                "vrf_proof" => a.absence.markers[marker].vrf_proof.clone(),
                _ => a.absence.markers[marker].proof.clone(),
            };
            let set = |a: &mut AbsenceResponse, v: String| match field {
                "vrf_proof" => a.absence.markers[marker].vrf_proof = v,
                _ => a.absence.markers[marker].proof = v,
            };
            let bytes = B64.decode(get(&f.nobody)).expect("b64");
            for i in 0..bytes.len() {
                for mask in [0x01u8, 0x80] {
                    let mut bad = bytes.clone();
                    bad[i] ^= mask;
                    let mut answer = f.nobody.clone();
                    set(&mut answer, B64.encode(&bad));
                    assert!(
                        f.pinned.absence_response("nobody", &answer).is_err(),
                        "marker {marker} {field}: flipping byte {i} of {} with {mask:#04x} still verifies",
                        bytes.len()
                    );
                }
            }
            for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
                let mut answer = f.nobody.clone();
                set(&mut answer, B64.encode(&bytes[..cut]));
                assert!(
                    f.pinned.absence_response("nobody", &answer).is_err(),
                    "marker {marker} {field} cut to {cut}"
                );
            }
        }
    }
    // An unknown protobuf field, non-canonical base64, and a VRF proof whose scalar is
    // not reduced (akd would reduce it and accept), are refused before any check.
    let mut bytes = B64.decode(&f.nobody.absence.markers[0].proof).expect("b64");
    bytes.extend_from_slice(&[0xa8, 0x1f, 0x01]);
    let mut answer = f.nobody.clone();
    answer.absence.markers[0].proof = B64.encode(&bytes);
    assert!(matches!(
        f.pinned.absence_response("nobody", &answer),
        Err(ResponseError::Wire(WireError::NotCanonical { .. }))
    ));
    let mut answer = f.nobody.clone();
    answer.absence.markers[0].vrf_proof = f.nobody.absence.markers[0].vrf_proof.trim_end_matches('=').to_owned();
    assert!(matches!(
        f.pinned.absence_response("nobody", &answer),
        Err(ResponseError::Wire(WireError::Base64 { .. }))
    ));
    // s + l (the group order) in the proof's last 32 bytes, little-endian.
    let mut vrf = B64.decode(&f.nobody.absence.markers[0].vrf_proof).expect("b64");
    let order: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (i, l) in order.iter().enumerate() {
        let sum = u16::from(vrf[48 + i]) + u16::from(*l) + carry;
        vrf[48 + i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "s + l fits in 32 bytes (s < l < 2^253)");
    let mut answer = f.nobody.clone();
    answer.absence.markers[0].vrf_proof = B64.encode(&vrf);
    assert!(matches!(
        f.pinned.absence_response("nobody", &answer),
        Err(ResponseError::Wire(WireError::NotCanonical { .. }))
    ));
}
