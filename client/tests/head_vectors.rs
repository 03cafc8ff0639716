//! The signed-head test vector (`vectors/head_v1.json`, built independently of this
//! crate from the byte layout in `docs/heads.md`): encoding, signature, JSON form.

use ed25519_dalek::SigningKey;
use kt_client::head::{Head, SignedHead, hex_array, vrf_key_hash};
use serde_json::Value;

fn vector() -> Value {
    serde_json::from_str(include_str!("vectors/head_v1.json")).expect("vector is JSON")
}

fn hex32(v: &Value) -> [u8; 32] {
    hex_array(v.as_str().expect("hex string"), "vector").expect("32 bytes of hex")
}

fn head_of(v: &Value) -> Head {
    let h = &v["head"];
    Head {
        namespace: h["namespace"].as_str().expect("namespace").to_owned(),
        epoch: h["epoch"].as_u64().expect("epoch"),
        root: hex32(&h["root"]),
        previous_root: hex32(&h["previous_root"]),
        vrf_key_hash: hex32(&h["vrf_key_hash"]),
        timestamp_ms: h["timestamp_ms"].as_u64().expect("timestamp"),
    }
}

#[test]
fn encoding_and_signature_match_the_vector() {
    let v = vector();
    let key = SigningKey::from_bytes(&hex32(&v["signing_key_seed"]));
    assert_eq!(hex::encode(key.verifying_key().as_bytes()), v["public_key"]);
    let head = head_of(&v);
    assert_eq!(hex::encode(head.message().expect("encode")), v["message"]);
    let signed = head.clone().sign(&key).expect("sign");
    assert_eq!(hex::encode(signed.signature), v["signature"]);
    assert_eq!(signed.verify(&key.verifying_key()), Ok(&head));
    assert_eq!(serde_json::to_value(&signed).expect("json"), v["json"]);
}

#[test]
fn the_vector_json_parses_and_verifies() {
    let v = vector();
    let signed: SignedHead = serde_json::from_value(v["json"].clone()).expect("parse");
    let public = ed25519_dalek::VerifyingKey::from_bytes(&hex32(&v["public_key"])).expect("key");
    assert_eq!(signed.verify(&public), Ok(&head_of(&v)));
    let bytes = hex::decode(v["message"].as_str().expect("hex")).expect("hex");
    assert_eq!(Head::from_message(&bytes), Ok(head_of(&v)));

    // Flipping any single bit of the signed message breaks the signature.
    for i in 0..bytes.len() * 8 {
        let mut bad = bytes.clone();
        bad[i / 8] ^= 1 << (i % 8);
        if let Ok(head) = Head::from_message(&bad) {
            let forged = SignedHead {
                head,
                signature: signed.signature,
            };
            assert!(forged.verify(&public).is_err(), "bit {i}");
        }
    }

    // A future version, or unknown fields, are refused rather than half-read.
    let mut newer = v["json"].clone();
    newer["version"] = 2.into();
    assert!(serde_json::from_value::<SignedHead>(newer).is_err());
    let mut extra = v["json"].clone();
    extra["extra"] = 1.into();
    assert!(serde_json::from_value::<SignedHead>(extra).is_err());
}

#[test]
fn vrf_key_hash_is_blake3() {
    let v = &vector()["vrf_key_hash_example"];
    let key = hex::decode(v["vrf_public_key"].as_str().expect("hex")).expect("hex");
    assert_eq!(hex::encode(vrf_key_hash(&key)), v["vrf_key_hash"]);
}
