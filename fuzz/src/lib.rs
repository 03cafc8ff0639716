//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (`fuzz_targets/`) and the
//! corpus replay test (`tests/replay.rs`). Every input is untrusted: a target may reject
//! it, never panic, and where a decoder is canonical it must re-encode to the same bytes.
//!
//! Verification targets check against the keys of the directory and auditor that
//! produced the seed corpus (`corpus/keys.json`, written by `make-corpus.sh`), so the
//! seeds verify and mutations explore the paths just beside success.

use ed25519_dalek::VerifyingKey;
use kt_client::auditor::CoSignedHead;
use kt_client::head::SignedHead;
use kt_client::state::ForkEvidence;
use kt_client::verify::PinnedKeys;
use kt_client::wire::{
    AbsenceResponse, BatchLookupResponse, HistoryResponse, LookupResponse, RequestLimits, decode_absence,
    encode_absence,
};
use std::sync::OnceLock;

/// The keys of the corpus's directory and auditor, and the head whose audit blob the
/// `audit_blob` seeds are.
#[derive(Debug, serde::Deserialize)]
struct Keys {
    directory_key: String,
    vrf_public_key: String,
    auditor_key: String,
    blob_head: SignedHead,
}

struct Fixed {
    pinned: PinnedKeys,
    auditor: VerifyingKey,
    blob_head: SignedHead,
    runtime: tokio::runtime::Runtime,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let keys: Keys = serde_json::from_str(include_str!("../corpus/keys.json")).expect("corpus/keys.json");
        let key = |hex_key: &str| {
            let bytes: [u8; 32] = hex::decode(hex_key).expect("hex").try_into().expect("32 bytes");
            VerifyingKey::from_bytes(&bytes).expect("ed25519 key")
        };
        Fixed {
            pinned: PinnedKeys {
                directory_key: key(&keys.directory_key),
                vrf_public_key: hex::decode(&keys.vrf_public_key).expect("hex"),
                // The corpus comes from one directory: its heads share the blob head's.
                namespace: keys.blob_head.head.namespace.clone(),
            },
            auditor: key(&keys.auditor_key),
            blob_head: keys.blob_head,
            runtime: tokio::runtime::Builder::new_current_thread().build().expect("runtime"),
        }
    })
}

/// Signed heads: binary and JSON forms. The binary form is canonical.
pub fn signed_head(data: &[u8]) {
    if let Ok(head) = SignedHead::from_bytes(data) {
        assert_eq!(
            head.to_bytes().expect("a decoded head encodes"),
            data,
            "binary heads are canonical"
        );
        let _ = fixed().pinned.check_head(&head);
    }
    if let Ok(head) = serde_json::from_slice::<SignedHead>(data) {
        let _ = fixed().pinned.check_head(&head);
        let again: SignedHead = serde_json::from_value(serde_json::to_value(&head).expect("json")).expect("round trip");
        assert_eq!(again, head);
    }
}

/// A directory's lookup answer, as a client verifies it.
pub fn lookup_response(data: &[u8]) {
    if let Ok(response) = serde_json::from_slice::<LookupResponse>(data) {
        let _ = fixed().pinned.lookup_response(&response.label, &response);
    }
}

/// A directory's `404` absence answer, and a batch lookup answer (whose results carry
/// absence proofs), as a client verifies them. A decoded absence proof is canonical:
/// it encodes back to the same strings.
pub fn absence_response(data: &[u8]) {
    if let Ok(response) = serde_json::from_slice::<AbsenceResponse>(data) {
        if let Ok(decoded) = decode_absence(&response.absence) {
            assert_eq!(
                encode_absence(&decoded),
                response.absence,
                "absence proofs are canonical"
            );
        }
        let _ = fixed().pinned.absence_response(&response.label, &response);
    }
    if let Ok(response) = serde_json::from_slice::<BatchLookupResponse>(data) {
        let labels: Vec<String> = response.results.iter().map(|r| r.label.clone()).collect();
        let _ = fixed().pinned.batch_lookup_response(&labels, &response);
    }
}

/// A directory's history answer, as a client verifies it.
pub fn history_response(data: &[u8]) {
    if let Ok(response) = serde_json::from_slice::<HistoryResponse>(data) {
        let _ = fixed()
            .pinned
            .history_response(&response.label, response.most_recent, &response);
    }
}

/// An auditor's co-signed head, as `kt --auditor` checks it (both signature formats).
pub fn cosigned_head(data: &[u8]) {
    if let Ok(c) = serde_json::from_slice::<CoSignedHead>(data) {
        let f = fixed();
        let _ = c.cosignature.verify_for(&f.auditor, &c.directory_head);
        let _ = c.plexi.verify(&f.auditor);
        let _ = f.pinned.check_head(&c.directory_head);
    }
}

/// An audit blob (akd `SingleAppendOnlyProof`, protobuf) as the auditor checks it.
pub fn audit_blob(data: &[u8]) {
    let f = fixed();
    let _ = f
        .runtime
        .block_on(kt_auditor::verify::check_proof(&f.blob_head, data.to_vec()));
}

/// Fork evidence submitted to the auditor (`POST /v1/evidence`).
pub fn fork_evidence(data: &[u8]) {
    if let Ok(claim) = serde_json::from_slice::<ForkEvidence>(data) {
        let identity = kt_auditor::verify::Identity {
            key: fixed().pinned.directory_key,
            namespace: Some(fixed().blob_head.head.namespace.clone()),
            vrf_key_hash: None,
        };
        if let Ok(finding) = kt_auditor::verify::check_fork(&identity, &claim) {
            assert_eq!(finding.heads.len(), 2);
        }
    }
}

/// The directory's `POST /v1/updates` body, decoded and validated as the server does.
pub fn update_request(data: &[u8]) {
    let limits = RequestLimits::default();
    if let Ok(updates) = kt_client::wire::parse_updates(data, &limits) {
        assert!(!updates.is_empty() && updates.len() <= limits.max_updates_per_request);
        for (label, value) in &updates {
            assert!(!label.is_empty() && label.len() <= limits.max_label_bytes);
            assert!(!value.is_empty() && value.len() <= limits.max_value_bytes);
        }
    }
    if let Ok(label) = std::str::from_utf8(data) {
        let _ = kt_client::wire::check_label(label, 256, "label");
    }
}

/// `kt`'s state file, as `State::load` parses it (`State::from_slice`); then every directory's heads are
/// observed again, in epoch order, into a fresh state, so that the chain, fork and
/// clock checks run over whatever the file holds. In epoch order nothing is a rollback;
/// a fork is a broken link between neighbours; time going back names an older epoch.
pub fn client_state(data: &[u8]) {
    use kt_client::state::{DirectoryState, State, StateError};
    let Ok(state) = State::from_slice(data) else {
        return;
    };
    let again: State = serde_json::from_slice(&serde_json::to_vec(&state).expect("encode")).expect("round trip");
    assert_eq!(again, state, "the state file round-trips");
    for directory in state.directories.values() {
        let mut fresh = DirectoryState::default();
        let mut accepted = true;
        for head in directory.heads.values() {
            match fresh.observe(head) {
                Ok(()) => assert!(fresh.heads.contains_key(&head.head.epoch)),
                Err(StateError::Fork(e)) => {
                    assert_eq!(
                        e.first.head.epoch.abs_diff(e.second.head.epoch),
                        1,
                        "a link fork is between neighbours"
                    );
                    accepted = false;
                }
                Err(StateError::TimeWentBack(e)) => {
                    assert!(
                        e.first.head.epoch > e.second.head.epoch,
                        "time went back from a newer epoch"
                    );
                    accepted = false;
                }
                Err(e) => panic!("heads observed in epoch order gave {e:?}"),
            }
        }
        if accepted && let Some(latest) = fresh.latest().cloned() {
            fresh
                .observe(&latest)
                .expect("observing the newest head again changes nothing");
        }
        if let Some(namespace) = &directory.namespace {
            fresh.pin_namespace(namespace).expect("first pin");
            fresh.pin_namespace(namespace).expect("same pin");
        }
        if let Some(key) = &directory.vrf_public_key {
            fresh.pin_vrf_key(key).expect("first pin");
            fresh.pin_vrf_key(key).expect("same pin");
        }
    }
}

/// The seeds must take the success paths, or the fuzzer starts in the wrong place:
/// every seed response verifies with the corpus keys, the blob verifies against its
/// head, the real fork is one and the other claim is not. Returns what failed.
pub fn check_seeds(corpus: &std::path::Path) -> Vec<String> {
    let f = fixed();
    let mut failed = Vec::new();
    let read = |dir: &str| -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<_> = std::fs::read_dir(corpus.join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                (
                    e.path().display().to_string(),
                    std::fs::read(e.path()).unwrap_or_default(),
                )
            })
            .collect();
        out.sort();
        out
    };
    for (path, data) in read("lookup_response") {
        let ok = serde_json::from_slice::<LookupResponse>(&data)
            .ok()
            .is_some_and(|r| f.pinned.lookup_response(&r.label, &r).is_ok());
        if !ok {
            failed.push(path);
        }
    }
    for (path, data) in read("absence_response") {
        let ok = serde_json::from_slice::<AbsenceResponse>(&data)
            .ok()
            .is_some_and(|r| f.pinned.absence_response(&r.label, &r).is_ok())
            || serde_json::from_slice::<BatchLookupResponse>(&data)
                .ok()
                .is_some_and(|r| {
                    let labels: Vec<String> = r.results.iter().map(|i| i.label.clone()).collect();
                    f.pinned.batch_lookup_response(&labels, &r).is_ok()
                });
        if !ok {
            failed.push(path);
        }
    }
    for (path, data) in read("history_response") {
        let ok = serde_json::from_slice::<HistoryResponse>(&data)
            .ok()
            .is_some_and(|r| f.pinned.history_response(&r.label, r.most_recent, &r).is_ok());
        if !ok {
            failed.push(path);
        }
    }
    for (path, data) in read("cosigned_head") {
        let ok = serde_json::from_slice::<CoSignedHead>(&data).ok().is_some_and(|c| {
            c.cosignature.verify_for(&f.auditor, &c.directory_head).is_ok() && c.plexi.verify(&f.auditor).is_ok()
        });
        if !ok {
            failed.push(path);
        }
    }
    for (path, data) in read("audit_blob") {
        if f.runtime
            .block_on(kt_auditor::verify::check_proof(&f.blob_head, data))
            .is_err()
        {
            failed.push(path);
        }
    }
    let identity = kt_auditor::verify::Identity {
        key: f.pinned.directory_key,
        namespace: Some(f.blob_head.head.namespace.clone()),
        vrf_key_hash: None,
    };
    for (path, data) in read("storage_record") {
        if !storage_record_decodes(&data) {
            failed.push(path);
        }
    }
    for (path, data) in read("fork_evidence") {
        let is_fork = serde_json::from_slice::<ForkEvidence>(&data)
            .ok()
            .is_some_and(|c| kt_auditor::verify::check_fork(&identity, &c).is_ok());
        if is_fork != path.ends_with("real_fork.json") {
            failed.push(path);
        }
    }
    let log = kt_client::tlog::checkpoint::log_key(&f.pinned.namespace, f.pinned.directory_key).expect("log key");
    let policy = kt_client::tlog::checkpoint::WitnessPolicy::new(vec![witness_key()], 0, None).expect("policy");
    for (path, data) in read("checkpoint") {
        let cosigned = kt_client::tlog::checkpoint::verify_checkpoint(&data, &log, &policy, 1_800_000_000)
            .map(|v| v.cosigned.len());
        let expected = if path.ends_with("cosigned.txt") { 1 } else { 0 };
        if cosigned != Ok(expected) {
            failed.push(path);
        }
    }
    for (path, data) in read("add_checkpoint") {
        let ok = kt_client::tlog::witness::AddCheckpoint::parse(&data).is_ok_and(|r| {
            kt_client::tlog::checkpoint::verify_checkpoint(&r.checkpoint, &log, &policy, 1_800_000_000).is_ok()
        }) || kt_client::tlog::witness::parse_cosignatures(&data).is_ok();
        if !ok {
            failed.push(path);
        }
    }
    for (path, data) in read("cosignature") {
        let text = String::from_utf8_lossy(&data).into_owned();
        let mut lines = text.lines();
        let ok = lines
            .next()
            .and_then(|l| kt_client::tlog::note::parse_signature_line(l).ok())
            .is_some_and(|sig| {
                witness_key()
                    .verify("o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", &sig)
                    .is_ok()
            })
            && lines
                .next()
                .is_some_and(|l| kt_client::tlog::note::VerifierKey::parse(l) == Ok(witness_key()));
        if !ok {
            failed.push(path);
        }
    }
    for (path, data) in read("client_state") {
        let replayed = kt_client::state::State::from_slice(&data).ok().map(|state| {
            state.directories.values().all(|d| {
                let mut fresh = kt_client::state::DirectoryState::default();
                d.heads.values().all(|h| fresh.observe(h).is_ok())
            })
        });
        // Crash inputs kept as regression tests are refused by the parser.
        let expected = if path.contains("/crash-") {
            None
        } else {
            Some(!path.ends_with("forked_chain.json"))
        };
        if replayed != expected {
            failed.push(path);
        }
    }
    failed
}

/// A record of the directory's RocksDB, as read back from disk. The first byte picks
/// the kind: 0 the azks, 1 a tree node (`key (36) ‖ value`), 2 a value state
/// (`key length (1) ‖ key ‖ value`), 3 a version-and-value prefix. Decoding is total,
/// and what decodes re-encodes to a fixed point.
pub fn storage_record(data: &[u8]) {
    storage_record_decodes(data);
}

/// [`storage_record`], telling whether the record decoded.
fn storage_record_decodes(data: &[u8]) -> bool {
    let Some((&kind, rest)) = data.split_first() else {
        return false;
    };
    match kind % 4 {
        0 => {
            let Ok(azks) = kt_codec::decode_azks(rest) else {
                return false;
            };
            let once = kt_codec::encode_azks(&azks);
            let again = kt_codec::decode_azks(&once).expect("re-decodes");
            assert_eq!(kt_codec::encode_azks(&again), once);
            true
        }
        1 => {
            let Some((key, value)) = rest.split_at_checked(kt_codec::NODE_KEY_LEN) else {
                return false;
            };
            let Ok(label) = kt_codec::node_label_from_key(key) else {
                return false;
            };
            let Ok(node) = kt_codec::decode_tree_node(label, value) else {
                return false;
            };
            let once = kt_codec::encode_tree_node(&node);
            let again = kt_codec::decode_tree_node(label, &once).expect("re-decodes");
            assert_eq!(again, node);
            true
        }
        2 => {
            let Some((&len, rest)) = rest.split_first() else {
                return false;
            };
            let Some((key, value)) = rest.split_at_checked(usize::from(len)) else {
                return false;
            };
            let Ok((user, epoch)) = kt_codec::split_value_state_key(key) else {
                return false;
            };
            let Ok(state) = kt_codec::decode_value_state(user, epoch, value) else {
                return false;
            };
            let once = kt_codec::encode_value_state(&state);
            let again = kt_codec::decode_value_state(user, epoch, &once).expect("re-decodes");
            assert_eq!(again, state);
            true
        }
        _ => kt_codec::decode_version_and_value(rest).is_ok(),
    }
}

/// The witness key the `cosignature` seeds are signed with (a fixed test key).
fn witness_key() -> kt_client::tlog::note::VerifierKey {
    let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]).verifying_key();
    kt_client::tlog::note::VerifierKey::new("witness.fuzz.invalid", kt_client::tlog::note::TYPE_COSIGNATURE_V1, key)
        .expect("witness key")
}

/// Signed notes (c2sp.org/signed-note): what parses prints back to the same bytes, and
/// any signature line is checked against a fixed Ed25519 and a fixed witness key.
pub fn signed_note(data: &[u8]) {
    use kt_client::tlog::note::Note;
    let Ok(note) = Note::parse(data) else { return };
    assert_eq!(note.to_text().as_bytes(), data, "a note prints back as parsed");
    let witness = witness_key();
    for sig in note.signatures_by(&witness) {
        let _ = witness.verify(&note.text, sig);
    }
}

/// Checkpoint notes: the text parses only in canonical form, and a verification with
/// the corpus directory's log key and the fixed witness pinned never panics.
pub fn checkpoint(data: &[u8]) {
    use kt_client::tlog::checkpoint::{Checkpoint, WitnessPolicy, log_key, verify_checkpoint};
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = Checkpoint::parse_text(text)
    {
        assert_eq!(c.text(), text, "a checkpoint text is canonical");
    }
    let f = fixed();
    let Ok(log) = log_key(&f.pinned.namespace, f.pinned.directory_key) else {
        return;
    };
    let policy = WitnessPolicy::new(vec![witness_key()], 0, None).expect("policy");
    let _ = verify_checkpoint(data, &log, &policy, 1_800_000_000);
}

/// Co-signature lines and verifier keys: a line that parses prints back the same; a
/// vkey that parses prints back the same.
pub fn cosignature(data: &[u8]) {
    use kt_client::tlog::note::{VerifierKey, parse_signature_line};
    let Ok(s) = std::str::from_utf8(data) else { return };
    for line in s.split('\n') {
        if let Ok(sig) = parse_signature_line(line) {
            assert_eq!(sig.line(), format!("{line}\n"));
            let _ = witness_key().verify("o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", &sig);
        }
        if let Ok(key) = VerifierKey::parse(line) {
            assert_eq!(key.to_vkey(), line.trim());
        }
    }
}

/// Tile paths and tiles: a path that parses prints back the same; a tile of the width
/// its path says splits into hashes.
pub fn tile(data: &[u8]) {
    use kt_client::tlog::tiles::{TilePath, decode_hashes};
    let (path, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else { return };
    if let Ok(t) = TilePath::parse(path) {
        assert_eq!(t.to_path(), path, "a tile path is canonical");
        if let Ok(hashes) = decode_hashes(body, t.width()) {
            assert_eq!(hashes.concat(), body);
        }
    }
}

/// Entry bundles: what decodes (at the width the first byte gives) encodes back to the
/// same bytes, and every entry of a bundle of heads is parsed as a head.
pub fn entry_bundle(data: &[u8]) {
    use kt_client::tlog::tiles::{decode_bundle, encode_bundle};
    let Some((&width, body)) = data.split_first() else {
        return;
    };
    let Ok(entries) = decode_bundle(body, u64::from(width)) else {
        return;
    };
    let again = encode_bundle(entries.iter().map(Vec::as_slice)).expect("encodes");
    assert_eq!(again, body, "a bundle re-encodes to its bytes");
    for e in &entries {
        let _ = SignedHead::from_bytes(e);
    }
}

/// `add-checkpoint` bodies (c2sp.org/tlog-witness) and the two response bodies: a body
/// that parses prints back the same.
pub fn add_checkpoint(data: &[u8]) {
    use kt_client::tlog::witness::{AddCheckpoint, parse_cosignatures, parse_size};
    if let Ok(req) = AddCheckpoint::parse(data) {
        assert_eq!(req.to_body(), data, "an add-checkpoint body is canonical");
        checkpoint(&req.checkpoint);
    }
    let _ = parse_cosignatures(data);
    let _ = parse_size(data);
}

/// Every target by name (the corpus folder names).
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("signed_note", signed_note),
    ("checkpoint", checkpoint),
    ("cosignature", cosignature),
    ("tile", tile),
    ("entry_bundle", entry_bundle),
    ("add_checkpoint", add_checkpoint),
    ("signed_head", signed_head),
    ("lookup_response", lookup_response),
    ("history_response", history_response),
    ("absence_response", absence_response),
    ("cosigned_head", cosigned_head),
    ("audit_blob", audit_blob),
    ("fork_evidence", fork_evidence),
    ("update_request", update_request),
    ("storage_record", storage_record),
    ("client_state", client_state),
];
