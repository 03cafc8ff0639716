//! A response is either exactly valid or rejected: real lookup and history responses
//! (from akd's in-memory directory, signed heads) with every byte of the proof flipped,
//! another label's proof swapped in, heads changed or signed by another key, the wrong
//! VRF key, and the one field akd's verifier ignores rewritten.

use akd::ecvrf::HardCodedAkdVRF;
use akd::storage::StorageManager;
use akd::storage::memory::AsyncInMemoryDatabase;
use akd::{AkdLabel, AkdValue, AzksParallelismConfig, Directory, HistoryParams};
use akd_core::proto::specs::types as pb;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use kt_client::KtConfig;
use kt_client::head::{Head, SignedHead, vrf_key_hash};
use kt_client::verify::{PinnedKeys, ResponseError};
use kt_client::wire::{HistoryResponse, LookupResponse, WireError, encode_history_proof, encode_lookup_proof};
use protobuf::Message;

struct Fixture {
    pinned: PinnedKeys,
    key: SigningKey,
    lookup_a: LookupResponse,
    lookup_b: LookupResponse,
    history_a: HistoryResponse,
    previous_head: SignedHead,
}

async fn fixture() -> Fixture {
    let dir = Directory::<KtConfig, _, _>::new(
        StorageManager::new_no_cache(AsyncInMemoryDatabase::new()),
        HardCodedAkdVRF {},
        AzksParallelismConfig::default(),
    )
    .await
    .expect("directory");
    let vrf = dir.get_public_key().await.expect("vrf").as_bytes().to_vec();
    let key = SigningKey::from_bytes(&[42; 32]);
    let sign = |epoch: u64, root: [u8; 32], previous_root: [u8; 32]| {
        Head {
            namespace: "tamper".into(),
            epoch,
            root,
            previous_root,
            vrf_key_hash: vrf_key_hash(&vrf),
            timestamp_ms: 1000 + epoch,
        }
        .sign(&key)
        .expect("sign")
    };
    let mut previous = [0u8; 32];
    let mut heads = Vec::new();
    for epoch in 1..=3u64 {
        let updates = (0..20)
            .map(|i| {
                (
                    AkdLabel::from(format!("label-{i}").as_str()),
                    AkdValue(format!("value {i} at {epoch}").into_bytes()),
                )
            })
            .collect();
        let hash = dir.publish(updates).await.expect("publish");
        heads.push(sign(hash.0, hash.1, previous));
        previous = hash.1;
    }
    let head = heads.last().expect("head").clone();
    let lookup = |label: &str| {
        let dir = &dir;
        let head = head.clone();
        let label = label.to_owned();
        async move {
            let (proof, _) = dir.lookup(AkdLabel::from(label.as_str())).await.expect("lookup");
            LookupResponse {
                label,
                head,
                proof: encode_lookup_proof(&proof),
                log: None,
            }
        }
    };
    let (history, _) = dir
        .key_history(&AkdLabel::from("label-3"), HistoryParams::Complete)
        .await
        .expect("history");
    Fixture {
        pinned: PinnedKeys {
            directory_key: key.verifying_key(),
            vrf_public_key: vrf,
            namespace: "tamper".into(),
        },
        key,
        lookup_a: lookup("label-3").await,
        lookup_b: lookup("label-4").await,
        history_a: HistoryResponse {
            label: "label-3".into(),
            head: head.clone(),
            most_recent: None,
            proof: encode_history_proof(&history),
            log: None,
        },
        previous_head: heads[1].clone(),
    }
}

fn with_proof_bytes(proof: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = B64.decode(proof).expect("b64");
    edit(&mut bytes);
    B64.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_of_a_lookup_proof_matters() {
    let f = fixture().await;
    let found = f
        .pinned
        .lookup_response("label-3", &f.lookup_a)
        .expect("the untouched response verifies");
    assert_eq!((found.version, found.epoch), (3, 3));
    let len = B64.decode(&f.lookup_a.proof).expect("b64").len();
    for i in 0..len {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = f.lookup_a.clone();
            bad.proof = with_proof_bytes(&bad.proof, |b| b[i] ^= mask);
            assert!(
                f.pinned.lookup_response("label-3", &bad).is_err(),
                "flipping byte {i} of {len} with {mask:#04x} still verifies"
            );
        }
    }
    // Appended bytes (an unknown field) and truncation.
    let mut bad = f.lookup_a.clone();
    bad.proof = with_proof_bytes(&bad.proof, |b| b.extend_from_slice(&[0xa8, 0x1f, 0x01]));
    assert!(
        f.pinned.lookup_response("label-3", &bad).is_err(),
        "unknown field accepted"
    );
    for cut in [1, len / 2, len - 1] {
        let mut bad = f.lookup_a.clone();
        bad.proof = with_proof_bytes(&bad.proof, |b| b.truncate(cut));
        assert!(f.pinned.lookup_response("label-3", &bad).is_err(), "truncated to {cut}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_of_a_history_proof_matters() {
    let f = fixture().await;
    assert_eq!(
        f.pinned
            .history_response("label-3", None, &f.history_a)
            .expect("verifies")
            .len(),
        3
    );
    let len = B64.decode(&f.history_a.proof).expect("b64").len();
    for i in 0..len {
        let mut bad = f.history_a.clone();
        bad.proof = with_proof_bytes(&bad.proof, |b| b[i] ^= 0x01);
        assert!(
            f.pinned.history_response("label-3", None, &bad).is_err(),
            "flipping byte {i} of {len} still verifies"
        );
    }
    let mut fewer = f.history_a.clone();
    fewer.most_recent = Some(1);
    assert!(
        matches!(
            f.pinned.history_response("label-3", None, &fewer),
            Err(ResponseError::OtherQuestion { .. })
        ),
        "other history parameters accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_labels_heads_keys_and_epochs_are_refused() {
    let f = fixture().await;
    // Another label's proof under this label.
    let mut swapped = f.lookup_a.clone();
    swapped.proof = f.lookup_b.proof.clone();
    assert!(matches!(
        f.pinned.lookup_response("label-3", &swapped),
        Err(ResponseError::Proof(_))
    ));
    // Another label's genuine answer, as it stands, for this label's question.
    assert!(matches!(
        f.pinned.lookup_response("label-3", &f.lookup_b),
        Err(ResponseError::OtherQuestion { .. })
    ));
    let mut renamed = f.lookup_b.clone();
    renamed.label = f.lookup_a.label.clone();
    assert!(f.pinned.lookup_response("label-3", &renamed).is_err());

    // Heads: every field changed by someone without the directory's key.
    let edits: [&dyn Fn(&mut Head); 6] = [
        &|h| h.epoch += 1,
        &|h| h.root[7] ^= 1,
        &|h| h.previous_root[0] ^= 1,
        &|h| h.namespace.push('x'),
        &|h| h.vrf_key_hash[3] ^= 1,
        &|h| h.timestamp_ms -= 1,
    ];
    for edit in edits {
        let mut bad = f.lookup_a.clone();
        edit(&mut bad.head.head);
        assert!(f.pinned.lookup_response("label-3", &bad).is_err());
    }
    // Even re-signed by the directory itself, the proof must match the head's root and
    // be possible at its epoch. (A head for a later epoch with the same root is not
    // something a proof can refute; the auditor's chain check does: akd never
    // publishes an epoch without changes.)
    let resign = |edit: &dyn Fn(&mut Head)| {
        let mut h = f.lookup_a.head.head.clone();
        edit(&mut h);
        h.sign(&f.key).expect("sign")
    };
    // A head of another namespace, signed with the same key (another log of the
    // operator's): refused for the namespace, whatever the proof.
    let mut other_log = f.lookup_a.clone();
    other_log.head = resign(&|h| h.namespace = "another-log".into());
    assert!(matches!(
        f.pinned.lookup_response("label-3", &other_log),
        Err(ResponseError::Namespace { .. })
    ));
    let edits: [&dyn Fn(&mut Head); 2] = [&|h| h.root[7] ^= 1, &|h| h.epoch -= 1];
    for edit in edits {
        let mut bad = f.lookup_a.clone();
        bad.head = resign(edit);
        assert!(matches!(
            f.pinned.lookup_response("label-3", &bad),
            Err(ResponseError::Proof(_))
        ));
    }
    let mut unsigned = f.lookup_a.clone();
    unsigned.head.head.timestamp_ms += 1;
    assert!(matches!(
        f.pinned.lookup_response("label-3", &unsigned),
        Err(ResponseError::Head(_))
    ));
    let mut foreign = f.lookup_a.clone();
    foreign.head = f
        .lookup_a
        .head
        .head
        .clone()
        .sign(&SigningKey::from_bytes(&[7; 32]))
        .expect("sign");
    assert!(matches!(
        f.pinned.lookup_response("label-3", &foreign),
        Err(ResponseError::Head(_))
    ));
    let mut replayed = f.lookup_a.clone();
    replayed.head = f.previous_head.clone();
    assert!(
        f.pinned.lookup_response("label-3", &replayed).is_err(),
        "a proof of epoch 3 against head 2"
    );
    let mut other_vrf = f.pinned.clone();
    other_vrf.vrf_public_key[0] ^= 1;
    assert!(matches!(
        other_vrf.lookup_response("label-3", &f.lookup_a),
        Err(ResponseError::VrfKey { .. })
    ));
}

/// akd's verifier never reads the label of a membership proof's top-level sibling entry;
/// akd alone accepts any value there, our decoder does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_field_akd_ignores_is_checked_by_us() {
    let f = fixture().await;
    let bytes = B64.decode(&f.lookup_a.proof).expect("b64");
    let mut message = pb::LookupProof::parse_from_bytes(&bytes).expect("parse");
    let top = &mut message.existence_proof.mut_or_insert_default().sibling_proofs[0];
    top.label.mut_or_insert_default().label_len = Some(7);
    let tampered = message.write_to_bytes().expect("encode");
    assert_ne!(tampered, bytes);

    let proof = akd_core::LookupProof::try_from(&message).expect("convert");
    let head = &f.lookup_a.head.head;
    akd_core::verify::lookup_verify::<KtConfig>(
        &f.pinned.vrf_public_key,
        head.root,
        head.epoch,
        AkdLabel::from(f.lookup_a.label.as_str()),
        proof,
    )
    .expect("akd_core alone does not look at this label");

    let mut bad = f.lookup_a.clone();
    bad.proof = B64.encode(&tampered);
    assert!(matches!(
        f.pinned.lookup_response("label-3", &bad),
        Err(ResponseError::Wire(WireError::IgnoredField { .. }))
    ));
}

/// Numbers akd's verifier assumes sane (it asserts on version 0 and adds 1 to versions)
/// are refused as bad proofs: a directory that chooses them cannot crash a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_akd_would_panic_on_are_refused() {
    use kt_client::wire::{decode_history_proof, decode_lookup_proof};
    let f = fixture().await;
    for version in [0, u64::MAX] {
        let mut proof = decode_lookup_proof(&f.lookup_a.proof).expect("decodes");
        proof.version = version;
        let mut bad = f.lookup_a.clone();
        bad.proof = encode_lookup_proof(&proof);
        assert!(
            matches!(f.pinned.lookup_response("label-3", &bad), Err(ResponseError::Proof(_))),
            "lookup version {version}"
        );
    }
    for (index, version) in [(0, 0), (1, u64::MAX), (2, 0), (0, 7)] {
        let mut proof = decode_history_proof(&f.history_a.proof).expect("decodes");
        proof.update_proofs[index].version = version;
        let mut bad = f.history_a.clone();
        bad.proof = encode_history_proof(&proof);
        assert!(
            matches!(
                f.pinned.history_response("label-3", None, &bad),
                Err(ResponseError::Proof(_))
            ),
            "history version {version} at {index}"
        );
    }
}
