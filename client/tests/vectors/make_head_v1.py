#!/usr/bin/env python3
"""Regenerates head_v1.json from the byte layout in docs/heads.md, independently of the
Rust code (needs `pip install cryptography blake3`). The Rust test checks the crate
against this file; never edit the JSON by hand."""
import json
import pathlib

import blake3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

seed = bytes(range(1, 33))
key = Ed25519PrivateKey.from_private_bytes(seed)
pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
ns, epoch, ts = "example.org/messenger", 1234, 1795430000123
root, prev, vrf_hash = bytes([0xA1]) * 32, bytes([0xB2]) * 32, bytes([0xC3]) * 32
msg = (b"kt-epoch-head/v1" + bytes([1, len(ns)]) + ns.encode() + epoch.to_bytes(8, "big")
       + root + prev + vrf_hash + ts.to_bytes(8, "big"))
sig = key.sign(msg)
head = {"namespace": ns, "epoch": epoch, "root": root.hex(), "previous_root": prev.hex(),
        "vrf_key_hash": vrf_hash.hex(), "timestamp_ms": ts}
vk = bytes([7]) * 32
vector = {
    "description": "kt signed epoch head, version 1. signing_key_seed is the ed25519 secret seed; "
                   "message is the exact signed bytes (docs/heads.md); signature is ed25519 over "
                   "message; json is the wire form.",
    "signing_key_seed": seed.hex(),
    "public_key": pub.hex(),
    "head": head,
    "message": msg.hex(),
    "signature": sig.hex(),
    "json": {"version": 1, **head, "signature": sig.hex()},
    "vrf_key_hash_example": {"vrf_public_key": vk.hex(), "vrf_key_hash": blake3.blake3(vk).hexdigest()},
}
out = pathlib.Path(__file__).with_name("head_v1.json")
out.write_text(json.dumps(vector, indent=2) + "\n")
