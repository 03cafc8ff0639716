//! Interop with Cloudflare's `signed_note` (a port of Go's `sumdb/note`): its verifier
//! accepts the checkpoints this crate signs (with witness co-signatures beside, which it
//! must ignore as unknown keys), and this crate verifies notes it signs. The key ids
//! and vkey texts of the two agree.

use ed25519_dalek::SigningKey;
use kt_client::tlog::checkpoint::{Checkpoint, WitnessPolicy, log_key, verify_checkpoint};
use kt_client::tlog::note::{Note, TYPE_COSIGNATURE_V1, TYPE_ED25519, VerifierKey, cosign, sign_ed25519};
use signed_note::{StandardSigner, StandardVerifier, Verifier, VerifierList};

#[test]
fn their_verifier_accepts_our_checkpoint_and_ours_accepts_their_note() {
    let head_key = SigningKey::from_bytes(&[11; 32]);
    let log = log_key("interop.example/kt", head_key.verifying_key()).expect("log key");
    // Same vkey text, same key id.
    let theirs = signed_note::new_ed25519_verifier_key(&log.name, &head_key.verifying_key());
    assert_eq!(theirs, log.to_vkey());
    let verifier = StandardVerifier::new(&log.to_vkey()).expect("their parse of our vkey");
    assert_eq!(verifier.key_id(), log.key_id);

    let text = Checkpoint {
        origin: log.name.clone(),
        size: 1234,
        root: [5; 32],
        extensions: vec![],
    }
    .text();
    let witness = SigningKey::from_bytes(&[12; 32]);
    let note = Note {
        signatures: vec![
            sign_ed25519(&log.name, &head_key, &text).expect("sign"),
            cosign("witness.example/w", &witness, &text, 1_700_000_000).expect("cosign"),
        ],
        text: text.clone(),
    }
    .to_text();
    let parsed = signed_note::Note::from_bytes(note.as_bytes()).expect("their parser");
    let (verified, unknown) = parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .expect("their verifier");
    assert_eq!((verified.len(), unknown.len()), (1, 1));
    assert_eq!(parsed.text(), text.as_bytes());
    assert_eq!(parsed.to_bytes(), note.as_bytes(), "the same bytes printed back");
    let w = VerifierKey::new("witness.example/w", TYPE_COSIGNATURE_V1, witness.verifying_key()).expect("w");
    let policy = WitnessPolicy::new(vec![w], 1, None).expect("policy");
    verify_checkpoint(note.as_bytes(), &log, &policy, 1_700_000_100).expect("ours too");

    // A note signed by their signer, verified by ours.
    let (skey, vkey) = signed_note::generate_key(&mut rand::rngs::OsRng, "signer.example/n");
    let signer = StandardSigner::new(&skey).expect("signer");
    let mut theirs = signed_note::Note::new(b"hello\nworld\n", &[]).expect("note");
    theirs.add_sigs(&[&signer]).expect("sign");
    let ours = VerifierKey::parse(&vkey).expect("our parse of their vkey");
    assert_eq!(ours.kind, TYPE_ED25519);
    let parsed = Note::parse(&theirs.to_bytes()).expect("our parser");
    let sig = parsed.signatures_by(&ours).next().expect("their signature");
    assert_eq!(ours.verify(&parsed.text, sig), Ok(None));
    assert_eq!(parsed.to_text().into_bytes(), theirs.to_bytes());
}
