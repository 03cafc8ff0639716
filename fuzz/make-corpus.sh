#!/usr/bin/env bash
# Regenerates the seed corpus from real responses: starts a kt-directory and a
# kt-auditor (release builds from the main workspace) on loopback, publishes a few small
# epochs, and saves what clients and the auditor receive. Writes corpus/keys.json with
# the keys the targets verify against. Commit the result; never edit it by hand.
set -euo pipefail
cd "$(dirname "$0")"
source ../scripts/env.sh
cargo build --release --locked -q --manifest-path ../Cargo.toml -p kt-directory -p kt-auditor --bin kt-directory --bin kt-auditor
bin=$CARGO_TARGET_DIR/release
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

"$bin/kt-directory" init --data-dir "$work/d" --namespace fuzz.kt.invalid >"$work/d.init"
"$bin/kt-auditor" init --data-dir "$work/a" >"$work/a.init"
key=$(sed -n 's/^signing_key=//p' "$work/d.init")
vrf=$(sed -n 's/^vrf_public_key=//p' "$work/d.init")
akey=$(sed -n 's/^auditor key: //p' "$work/a.init")
"$bin/kt-directory" serve --data-dir "$work/d" --listen 127.0.0.1:0 --epoch-interval 3600 >"$work/d.log" 2>/dev/null &
pids+=($!)
until url=$(sed -n 's/^listening on //p' "$work/d.log") && [ -n "$url" ]; do sleep 0.1; done
"$bin/kt-auditor" serve --data-dir "$work/a" --directory "$url" --directory-key "$key" --listen 127.0.0.1:0 --poll-interval 1 >"$work/a.log" 2>/dev/null &
pids+=($!)
until aurl=$(sed -n 's/^listening on //p' "$work/a.log") && [ -n "$aurl" ]; do sleep 0.1; done
token=$(cat "$work/d/operator.token")

post() { curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
# Only the folders this script writes: client_state's seeds (and crash inputs found
# later) and storage_record's (tests/storage_seeds.rs) stay.
owned=corpus/{signed_head,lookup_response,absence_response,history_response,cosigned_head,audit_blob,fork_evidence,update_request,signed_note,checkpoint,cosignature,tile,entry_bundle,add_checkpoint}
eval rm -rf "$owned" && eval mkdir -p "$owned"
for epoch in 1 2 3; do
    body='{"updates":['
    for i in 1 2 3 4 5 6 7 8; do
        v=$(printf 'key-%s-%s' "$epoch" "$i" | base64)
        body+="{\"label\":\"user$i@example.org/phone\",\"value\":\"$v\"},"
    done
    body="${body%,}]}"
    echo "$body" >"corpus/update_request/epoch$epoch.json"
    post -d "$body" "$url/v1/updates" >/dev/null
    post -X POST "$url/v1/epochs" >/dev/null
done
for i in 1 2 3; do
    curl -sf "$url/v1/lookup/user$i%40example.org%2Fphone" >"corpus/lookup_response/user$i.json"
    curl -sf "$url/v1/history/user$i%40example.org%2Fphone" >"corpus/history_response/user$i.json"
done
curl -sf "$url/v1/history/user4%40example.org%2Fphone?most_recent=1" >corpus/history_response/most_recent.json
# Absence answers are 404s (curl -f would drop the body): a lookup, a history, and a
# batch lookup with a present and an absent label.
for what in lookup history; do
    code=$(curl -s -o "corpus/absence_response/$what.json" -w '%{http_code}' "$url/v1/$what/nobody%40example.org%2Fphone")
    [ "$code" = 404 ] || { echo "$what of an absent label answered $code" >&2; exit 1; }
done
curl -sf -H 'Content-Type: application/json' -d '{"labels":["user1@example.org/phone","nobody@example.org/phone"]}' \
    "$url/v1/lookup" >corpus/absence_response/batch.json
for e in 0 1 2 3; do curl -sf "$url/v1/heads/$e" >"corpus/signed_head/epoch$e.json"; done
until curl -sf "$aurl/v1/heads/3" >/dev/null; do sleep 0.2; done
for e in 0 2 3; do curl -sf "$aurl/v1/heads/$e" >"corpus/cosigned_head/epoch$e.json"; done
head2=$(curl -sf "$url/v1/heads/2")
name=$(python3 -c 'import json,sys; h=json.loads(sys.argv[1]); print("%d/%s/%s" % (h["epoch"], h["previous_root"], h["root"]))' "$head2")
curl -sf "$url/$name" >corpus/audit_blob/epoch2.bin
python3 - "$head2" "$(curl -sf "$url/v1/heads/3")" <<'PY' >corpus/fork_evidence/not_a_fork.json
import json, sys
print(json.dumps({"first": json.loads(sys.argv[1]), "second": json.loads(sys.argv[2])}))
PY
# The binary form of a head, and a real fork: epoch 2 signed again over another root
# with the directory's own key (only the directory, or this script, can make one).
python3 - "$head2" "$work/d/signing.key" <<'PY'
import json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
h = json.loads(sys.argv[1])
def message(h):
    ns = h["namespace"].encode()
    return (b"kt-epoch-head/v1" + bytes([1, len(ns)]) + ns + h["epoch"].to_bytes(8, "big")
            + bytes.fromhex(h["root"]) + bytes.fromhex(h["previous_root"])
            + bytes.fromhex(h["vrf_key_hash"]) + h["timestamp_ms"].to_bytes(8, "big"))
open("corpus/signed_head/epoch2.bin", "wb").write(message(h) + bytes.fromhex(h["signature"]))
key = Ed25519PrivateKey.from_private_bytes(open(sys.argv[2], "rb").read())
other = dict(h, root="ab" * 32, timestamp_ms=h["timestamp_ms"] + 1)
other["signature"] = key.sign(message(other)).hex()
json.dump({"first": h, "second": other}, open("corpus/fork_evidence/real_fork.json", "w"))
PY
# The epoch log (4 leaves: epochs 0 to 3): the checkpoint, a partial tile and bundle,
# a consistency proof as an add-checkpoint body, and cosignature/v1 lines by the fixed
# witness key of fuzz/src/lib.rs (seed [4; 32], name witness.fuzz.invalid).
curl -sf "$url/log/checkpoint" >corpus/checkpoint/size4.txt
cp corpus/checkpoint/size4.txt corpus/signed_note/checkpoint.txt
{ printf 'tile/0/000.p/4\n'; curl -sf "$url/log/tile/0/000.p/4"; } >corpus/tile/level0
printf 'tile/entries/x001/000.p/7' >corpus/tile/path_only
{ printf '\004'; curl -sf "$url/log/tile/entries/000.p/4"; } >corpus/entry_bundle/epochs0to3
{ printf 'old 0\n\n'; cat corpus/checkpoint/size4.txt; } >corpus/add_checkpoint/from0
python3 - "$(curl -sf "$url/v1/log/consistency/2/4")" <<'PY'
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
proof = json.loads(sys.argv[1])["proof"]
note = open("corpus/checkpoint/size4.txt").read()
open("corpus/add_checkpoint/from2", "w").write("old 2\n" + "".join(p + "\n" for p in proof) + "\n" + note)
key = Ed25519PrivateKey.from_private_bytes(bytes([4] * 32))
name = "witness.fuzz.invalid"
public = key.public_key().public_bytes_raw()
key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
def cosign(text, t):
    sig = key.sign(b"cosignature/v1\ntime %d\n" % t + text.encode())
    return "\u2014 %s %s\n" % (name, base64.b64encode(key_id + t.to_bytes(8, "big") + sig).decode())
text = note[: note.rindex("\n\n") + 1]
open("corpus/checkpoint/cosigned.txt", "w").write(note + cosign(text, 1_700_000_000))
fixed = "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
vkey = "%s+%s+%s" % (name, key_id.hex(), base64.b64encode(b"\x04" + public).decode())
open("corpus/cosignature/line.txt", "w").write(cosign(fixed, 1_700_000_000) + vkey + "\n")
open("corpus/add_checkpoint/response.txt", "w").write(cosign(text, 1_700_000_000))
PY
# The Go reference note (golang.org/x/mod/sumdb/note).
printf 'If you think cryptography is the answer to your problem,\nthen you don'"'"'t know what your problem is.\n\n\xe2\x80\x94 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n' \
    >corpus/signed_note/go_reference.txt
printf '{"directory_key":"%s","vrf_public_key":"%s","auditor_key":"%s","blob_head":%s}\n' \
    "$key" "$vrf" "$akey" "$head2" >corpus/keys.json
echo "corpus written: $(find corpus -type f | wc -l) files"
