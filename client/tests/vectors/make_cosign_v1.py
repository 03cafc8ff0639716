#!/usr/bin/env python3
"""Regenerates cosign_v1.json from the byte layout in docs/auditor.md, independently of
the Rust code (needs `pip install cryptography`). The Rust test checks the crate
against this file; never edit the JSON by hand.

It also holds the Plexi form of the same attestation: ed25519 over the protobuf
`SignatureMessage` (proto2) of Cloudflare's plexi-core, encoded here by hand from
its .proto (1 ciphersuite varint, 2 namespace, 3 timestamp varint, 4 Epoch{1 inner},
5 digest), plus plexi-core's own published test vector (tests/test-vectors.json,
ciphersuite 1), copied unchanged."""
import json
import pathlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def field(tag, wire, payload):
    key = varint(tag << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + varint(payload)


def plexi_message(ns, ts, epoch, digest):
    return (field(1, 0, 1) + field(2, 2, ns.encode()) + field(3, 0, ts)
            + field(4, 2, field(1, 0, epoch)) + field(5, 2, digest))


seed = bytes(range(101, 133))
key = Ed25519PrivateKey.from_private_bytes(seed)
pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
ns, epoch, ts = "example.org/messenger", 1234, 1795430000456
root, prev = bytes([0xA1]) * 32, bytes([0xB2]) * 32
msg = (b"kt-audit-cosign/v1" + bytes([1, len(ns)]) + ns.encode() + epoch.to_bytes(8, "big")
       + root + prev + ts.to_bytes(8, "big"))
sig = key.sign(msg)
pmsg = plexi_message(ns, ts, epoch, root)
psig = key.sign(pmsg)
attestation = {"namespace": ns, "epoch": epoch, "root": root.hex(), "previous_root": prev.hex(),
               "timestamp_ms": ts}
vector = {
    "description": "kt auditor co-signature, version 1, and its Plexi (ciphersuite 0x0001) form. "
                   "signing_key_seed is the auditor's ed25519 seed; message is the exact signed "
                   "bytes (docs/auditor.md); json is the wire form.",
    "signing_key_seed": seed.hex(),
    "public_key": pub.hex(),
    "attestation": attestation,
    "message": msg.hex(),
    "signature": sig.hex(),
    "json": {"version": 1, **attestation, "signature": sig.hex()},
    "plexi": {"version": 1, "ciphersuite": 1, "namespace": ns, "timestamp": ts, "epoch": epoch,
              "digest": root.hex(), "signature": psig.hex(), "key_id": pub[31],
              "serialized_message": pmsg.hex()},
    "plexi_core_vector": {
        "source": "plexi-core 0.1.2 tests/test-vectors.json, first entry (Apache-2.0, Cloudflare)",
        "verifying_key": "606a878700158d92b3a14a0fd37ec82e0f05f92fcf23146abfda2e3a2f10a9bc",
        "namespace": "log1.example.com", "timestamp": 1717084639921, "epoch": 1,
        "digest": "11" * 32,
        "signature": "769d1ae73792dd8da1515793ba29f2f33f2fca84ba7386f9a01d8272e67c4379"
                     "bdcfd91ea4fa49eafd8f243ac36fe3a7aae90ae92f1729c3c468ddf4e6d2a309",
    },
}
out = pathlib.Path(__file__).with_name("cosign_v1.json")
out.write_text(json.dumps(vector, indent=2) + "\n")
