//! The co-signature test vector (`vectors/cosign_v1.json`, built independently of this
//! crate): our format, its Plexi form, and plexi-core's own published vector.

use ed25519_dalek::{SigningKey, VerifyingKey};
use kt_client::cosign::{Attestation, CoSignature, PlexiSignature, plexi_message};
use kt_client::head::hex_array;
use serde_json::Value;

fn vector() -> Value {
    serde_json::from_str(include_str!("vectors/cosign_v1.json")).expect("vector is JSON")
}

fn hex32(v: &Value) -> [u8; 32] {
    hex_array(v.as_str().expect("hex string"), "vector").expect("32 bytes of hex")
}

fn attestation(v: &Value) -> Attestation {
    let a = &v["attestation"];
    Attestation {
        namespace: a["namespace"].as_str().expect("namespace").to_owned(),
        epoch: a["epoch"].as_u64().expect("epoch"),
        root: hex32(&a["root"]),
        previous_root: hex32(&a["previous_root"]),
        timestamp_ms: a["timestamp_ms"].as_u64().expect("timestamp"),
    }
}

#[test]
fn both_formats_match_the_vector() {
    let v = vector();
    let key = SigningKey::from_bytes(&hex32(&v["signing_key_seed"]));
    assert_eq!(hex::encode(key.verifying_key().as_bytes()), v["public_key"]);
    let a = attestation(&v);
    assert_eq!(hex::encode(a.message().expect("encode")), v["message"]);
    let (ours, plexi) = a.sign(&key).expect("sign");
    assert_eq!(hex::encode(ours.signature), v["signature"]);
    assert_eq!(serde_json::to_value(&ours).expect("json"), v["json"]);
    assert_eq!(serde_json::to_value(&plexi).expect("json"), v["plexi"]);

    let parsed: CoSignature = serde_json::from_value(v["json"].clone()).expect("parse");
    parsed.verify(&key.verifying_key()).expect("verifies");
    let parsed: PlexiSignature = serde_json::from_value(v["plexi"].clone()).expect("parse");
    parsed.verify(&key.verifying_key()).expect("verifies");
}

#[test]
fn our_plexi_encoding_verifies_plexi_cores_own_vector() {
    let v = &vector()["plexi_core_vector"];
    let key = VerifyingKey::from_bytes(&hex32(&v["verifying_key"])).expect("key");
    let message = plexi_message(
        v["namespace"].as_str().expect("ns"),
        v["timestamp"].as_u64().expect("ts"),
        v["epoch"].as_u64().expect("epoch"),
        &hex32(&v["digest"]),
    );
    let signature: [u8; 64] = hex_array(v["signature"].as_str().expect("sig"), "sig").expect("64 bytes");
    key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&signature))
        .expect("plexi-core's vector verifies over our encoding");
}
