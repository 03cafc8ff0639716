//! The JSON bodies of the directory's HTTP API (`docs/api.md`), shared by the server,
//! the auditor and clients. Proofs travel as akd's protobuf encoding in base64.

use crate::head::SignedHead;
use akd_core::proto::specs::types as pb;
use akd_core::{HistoryProof, LookupProof, MembershipProof, NodeLabel, NonMembershipProof};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use protobuf::Message;
use serde::{Deserialize, Serialize};

/// Why a proof in a response could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not base64.
    #[error("{what} is not valid base64: {source}")]
    Base64 {
        /// Which field.
        what: &'static str,
        /// The decoder's reason.
        source: base64::DecodeError,
    },
    /// Not a protobuf message of the expected type.
    #[error("{what} is not a valid protobuf message: {source}")]
    Protobuf {
        /// Which field.
        what: &'static str,
        /// The decoder's reason.
        source: protobuf::Error,
    },
    /// Valid, but not the one canonical encoding of its content (unknown fields, another
    /// field order, padded varints...): bytes akd would ignore are refused, so a response
    /// is either exactly what the server signed off on or rejected.
    #[error("{what} is not canonically encoded")]
    NotCanonical {
        /// Which field.
        what: &'static str,
    },
    /// A field akd's verifier does not look at holds something other than its only
    /// honest value.
    #[error("{what}: {reason}")]
    IgnoredField {
        /// Which proof.
        what: &'static str,
        /// Which field, and what it held.
        reason: String,
    },
    /// Well-formed protobuf whose content akd cannot convert (wrong lengths, missing fields).
    #[error("{what} has invalid content: {reason}")]
    Content {
        /// Which field.
        what: &'static str,
        /// akd's reason.
        reason: String,
    },
}

fn decode_pb<M: Message>(b64: &str, what: &'static str) -> Result<(M, Vec<u8>), WireError> {
    let bytes = B64.decode(b64).map_err(|source| WireError::Base64 { what, source })?;
    let message = M::parse_from_bytes(&bytes).map_err(|source| WireError::Protobuf { what, source })?;
    Ok((message, bytes))
}

fn encode_pb<M: Message>(message: &M) -> String {
    // Writing a message whose required fields are all set cannot fail; akd's conversions
    // set every field. Fall back to an empty string rather than panic.
    B64.encode(message.write_to_bytes().unwrap_or_default())
}

/// A lookup proof as base64 protobuf.
pub fn encode_lookup_proof(proof: &LookupProof) -> String {
    encode_pb(&pb::LookupProof::from(proof))
}

/// Parses a base64 protobuf lookup proof.
/// Exact: the bytes must be the canonical encoding of what they decode to, and the
/// fields akd's verifier ignores must hold their only honest values.
pub fn decode_lookup_proof(b64: &str) -> Result<LookupProof, WireError> {
    let what = "lookup proof";
    let (message, bytes): (pb::LookupProof, _) = decode_pb(b64, what)?;
    let proof = LookupProof::try_from(&message).map_err(|e| WireError::Content {
        what,
        reason: format!("{e:?}"),
    })?;
    canonical(&pb::LookupProof::from(&proof), &bytes, what)?;
    for (part, m) in [
        ("existence proof", &proof.existence_proof),
        ("marker proof", &proof.marker_proof),
        (
            "freshness proof",
            &proof.freshness_proof.longest_prefix_membership_proof,
        ),
    ] {
        root_sibling_label(m, what, part)?;
    }
    Ok(proof)
}

/// A history proof as base64 protobuf.
pub fn encode_history_proof(proof: &HistoryProof) -> String {
    encode_pb(&pb::HistoryProof::from(proof))
}

/// Parses a base64 protobuf history proof.
/// Exact, like [`decode_lookup_proof`].
pub fn decode_history_proof(b64: &str) -> Result<HistoryProof, WireError> {
    let what = "history proof";
    let (message, bytes): (pb::HistoryProof, _) = decode_pb(b64, what)?;
    let proof = HistoryProof::try_from(&message).map_err(|e| WireError::Content {
        what,
        reason: format!("{e:?}"),
    })?;
    canonical(&pb::HistoryProof::from(&proof), &bytes, what)?;
    for update in &proof.update_proofs {
        root_sibling_label(&update.existence_proof, what, "update existence proof")?;
        if let Some(previous) = &update.previous_version_proof {
            root_sibling_label(previous, what, "previous version proof")?;
        }
    }
    for m in &proof.existence_of_past_marker_proofs {
        root_sibling_label(m, what, "past marker proof")?;
    }
    for n in &proof.non_existence_of_future_marker_proofs {
        root_sibling_label(&n.longest_prefix_membership_proof, what, "future marker proof")?;
    }
    Ok(proof)
}

/// Length of a VRF proof (akd's ECVRF: gamma, c, s).
pub const VRF_PROOF_LEN: usize = 80;

/// Most marker entries an absence proof may hold: versions are `u64`, so the markers
/// `2^0 ..= 2^63`.
pub const MAX_ABSENCE_MARKERS: usize = 64;

/// That one marker version of a label is not in the tree: the VRF proof of
/// `(label, Fresh, version)` and the non-membership proof of that node, both base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerAbsence {
    /// The version: a power of two.
    pub version: u64,
    /// The VRF proof of `(label, Fresh, version)`: 80 bytes.
    pub vrf_proof: String,
    /// akd `NonMembershipProof` of that node label, protobuf.
    pub proof: String,
}

/// A proof that a label is absent, as it travels: one [`MarkerAbsence`] for each
/// version `1, 2, 4, ...` up to the head's epoch (`crate::absence::marker_versions`).
/// akd verifies a lookup or history of version `v` only with the node of its marker
/// version `2^floor(log2 v)` present, and `v` is at most the epoch, so with every
/// marker absent no lookup or history of the label can verify under this root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbsenceProof {
    /// Ascending versions.
    pub markers: Vec<MarkerAbsence>,
}

/// One [`MarkerAbsence`] decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedMarker {
    /// The version.
    pub version: u64,
    /// The VRF proof bytes.
    pub vrf_proof: Vec<u8>,
    /// The non-membership proof.
    pub proof: NonMembershipProof,
}

/// An [`AbsenceProof`] decoded, exactly (see [`decode_absence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedAbsence {
    /// Ascending versions.
    pub markers: Vec<DecodedMarker>,
}

/// Encodes an absence proof.
pub fn encode_absence(absence: &DecodedAbsence) -> AbsenceProof {
    AbsenceProof {
        markers: absence
            .markers
            .iter()
            .map(|m| MarkerAbsence {
                version: m.version,
                vrf_proof: B64.encode(&m.vrf_proof),
                proof: encode_pb(&pb::NonMembershipProof::from(&m.proof)),
            })
            .collect(),
    }
}

/// Parses an absence proof, as exactly as [`decode_lookup_proof`]: at most
/// [`MAX_ABSENCE_MARKERS`] entries; base64 in its one canonical form; VRF proofs of 80
/// bytes that are the canonical encoding of their scalars (akd reduces them modulo the
/// group order, so another encoding of the same proof would verify too); protobufs that
/// are the canonical encoding of what they decode to; and each membership proof's unused
/// top-level sibling label holding the root label. Which versions must be there is the
/// verifier's check.
pub fn decode_absence(absence: &AbsenceProof) -> Result<DecodedAbsence, WireError> {
    let what = "absence proof";
    if absence.markers.len() > MAX_ABSENCE_MARKERS {
        return Err(WireError::Content {
            what,
            reason: format!("{} markers, more than {MAX_ABSENCE_MARKERS}", absence.markers.len()),
        });
    }
    let markers = absence
        .markers
        .iter()
        .map(|m| {
            let vrf_what = "absence VRF proof";
            let vrf_proof = B64
                .decode(&m.vrf_proof)
                .map_err(|source| WireError::Base64 { what: vrf_what, source })?;
            if vrf_proof.len() != VRF_PROOF_LEN {
                return Err(WireError::Content {
                    what: vrf_what,
                    reason: format!("{} bytes, not {VRF_PROOF_LEN}", vrf_proof.len()),
                });
            }
            match akd_core::ecvrf::Proof::try_from(vrf_proof.as_slice()) {
                Ok(p) if p.to_bytes()[..] == vrf_proof[..] => {}
                Ok(_) => return Err(WireError::NotCanonical { what: vrf_what }),
                Err(e) => {
                    return Err(WireError::Content {
                        what: vrf_what,
                        reason: e.to_string(),
                    });
                }
            }
            let (message, bytes): (pb::NonMembershipProof, _) = decode_pb(&m.proof, what)?;
            let proof = NonMembershipProof::try_from(&message).map_err(|e| WireError::Content {
                what,
                reason: format!("{e:?}"),
            })?;
            canonical(&pb::NonMembershipProof::from(&proof), &bytes, what)?;
            root_sibling_label(&proof.longest_prefix_membership_proof, what, "longest prefix proof")?;
            Ok(DecodedMarker {
                version: m.version,
                vrf_proof,
                proof,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DecodedAbsence { markers })
}

/// Re-encodes `decoded` and demands the received bytes back.
fn canonical<M: Message>(decoded: &M, received: &[u8], what: &'static str) -> Result<(), WireError> {
    match decoded.write_to_bytes() {
        Ok(again) if again == received => Ok(()),
        _ => Err(WireError::NotCanonical { what }),
    }
}

/// akd's membership check hashes upwards from the leaf and assigns the label of the
/// top-level sibling entry without ever using it: an honest server puts the root's
/// label there, and anything else is refused.
fn root_sibling_label(proof: &MembershipProof, what: &'static str, part: &str) -> Result<(), WireError> {
    match proof.sibling_proofs.first() {
        Some(top) if top.label != NodeLabel::root() => Err(WireError::IgnoredField {
            what,
            reason: format!("{part}: the top-level sibling label is not the root label"),
        }),
        _ => Ok(()),
    }
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoResponse {
    /// The directory's namespace (also inside every head).
    pub namespace: String,
    /// The ed25519 key heads are signed with, hex. Clients pin it out of band; this
    /// field is a convenience, never a trust anchor.
    pub signing_key: String,
    /// The VRF public key, hex. Heads sign its blake3 hash.
    pub vrf_public_key: String,
    /// Seconds between scheduled epochs.
    pub epoch_interval_secs: u64,
    /// The newest epoch with a signed head.
    pub latest_epoch: u64,
}

/// One update in `POST /v1/updates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateItem {
    /// The device's identifier (UTF-8).
    pub label: String,
    /// Its public key bytes, base64 (standard alphabet, padded).
    pub value: String,
}

/// `POST /v1/updates` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatesRequest {
    /// The updates, applied in this order (a later update to the same label wins).
    pub updates: Vec<UpdateItem>,
}

/// A validated update: the label's bytes (UTF-8) and the decoded value.
pub type ValidUpdate = (Vec<u8>, Vec<u8>);

/// The limits a directory applies to `POST /v1/updates` bodies (the server's config
/// sets them; these are its defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most updates in one request.
    pub max_updates_per_request: usize,
    /// Longest label, bytes of UTF-8.
    pub max_label_bytes: usize,
    /// Longest value, bytes.
    pub max_value_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_updates_per_request: 1000,
            max_label_bytes: 256,
            max_value_bytes: 1024,
        }
    }
}

/// Validates a label: non-empty, at most `max` bytes, no control characters (labels end
/// up in logs and terminals). `at` names the field in the error.
pub fn check_label(label: &str, max: usize, at: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(format!("{at}: empty label"));
    }
    if label.len() > max {
        return Err(format!("{at}: label is {} bytes, the limit is {max}", label.len()));
    }
    if label.chars().any(char::is_control) {
        return Err(format!("{at}: label contains control characters"));
    }
    if let Some(c) = label.chars().find(|&c| is_format_char(c)) {
        return Err(format!(
            "{at}: label contains the invisible formatting character U+{:04X} (bidi overrides and the like can make one label look like another)",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Unicode's format characters (general category Cf): invisible, and some reorder or
/// hide the text around them (U+202E RIGHT-TO-LEFT OVERRIDE turns `alice` + `ecila`
/// tricks into what looks like another label).
pub fn is_format_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// `text` safe to print to a terminal: control and format characters (escape
/// sequences, bidi overrides) written as `\u{..}` escapes, at most `max` characters
/// (then `…`). For text that comes from a server.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() || is_format_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

impl UpdatesRequest {
    /// Checks every update against `limits` and decodes the values: `(label, value)`
    /// pairs in request order, or the first problem, naming its field.
    pub fn validate(self, limits: &RequestLimits) -> Result<Vec<ValidUpdate>, String> {
        if self.updates.is_empty() {
            return Err("updates: empty list".into());
        }
        if self.updates.len() > limits.max_updates_per_request {
            return Err(format!(
                "updates: {} updates, the limit per request is {}",
                self.updates.len(),
                limits.max_updates_per_request
            ));
        }
        let mut batch = Vec::with_capacity(self.updates.len());
        for (i, update) in self.updates.into_iter().enumerate() {
            check_label(&update.label, limits.max_label_bytes, &format!("updates[{i}].label"))?;
            let value = B64
                .decode(&update.value)
                .map_err(|e| format!("updates[{i}].value: not base64: {e}"))?;
            if value.is_empty() {
                return Err(format!(
                    "updates[{i}].value: empty value (akd reserves the empty value as a tombstone)"
                ));
            }
            if value.len() > limits.max_value_bytes {
                return Err(format!(
                    "updates[{i}].value: {} bytes, the limit is {}",
                    value.len(),
                    limits.max_value_bytes
                ));
            }
            batch.push((update.label.into_bytes(), value));
        }
        Ok(batch)
    }
}

/// Decodes and validates a `POST /v1/updates` body (what the fuzzer exercises; the
/// server decodes the JSON with axum first, then calls [`UpdatesRequest::validate`]).
pub fn parse_updates(body: &[u8], limits: &RequestLimits) -> Result<Vec<ValidUpdate>, String> {
    let request: UpdatesRequest = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    request.validate(limits)
}

/// `202 Accepted` answer to `POST /v1/updates`: one id per update, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatesAccepted {
    /// Ids to query with `GET /v1/updates/{id}`.
    pub ids: Vec<u64>,
}

/// Where an accepted update stands. Every update ends in exactly one of the final
/// states (all but `pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Durably queued, waiting for an epoch.
    Pending,
    /// In the directory as `version` of its label since `epoch`.
    Published {
        /// The epoch that published it.
        epoch: u64,
        /// The label's version it became.
        version: u64,
    },
    /// A later update to the same label (`by`) was taken into the same epoch, so this
    /// one was never published.
    Superseded {
        /// The id of the update that replaced it.
        by: u64,
    },
    /// Its value was already the label's current value; akd publishes nothing for it.
    Unchanged {
        /// The epoch whose batch it was taken into.
        epoch: u64,
    },
}

/// `GET /v1/updates/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The update id.
    pub id: u64,
    /// Its outcome so far.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// `POST /v1/epochs`: what the forced epoch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochResponse {
    /// The latest epoch afterwards (unchanged if nothing was published).
    pub epoch: u64,
    /// Whether a new epoch was published.
    pub published: bool,
    /// Updates taken from the queue.
    pub taken: u64,
    /// Updates still queued (beyond the per-epoch maximum, or accepted meanwhile).
    pub queued: u64,
    /// The head now current (new, or the previous one re-signed with a fresh time).
    pub head: SignedHead,
}

/// `GET /v1/lookup/{label}`: a lookup proof and the head it verifies against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LookupResponse {
    /// The label looked up.
    pub label: String,
    /// The signed head of the epoch the proof is at.
    pub head: SignedHead,
    /// akd `LookupProof`, protobuf, base64.
    pub proof: String,
    /// With `?log=1`: the head's place in the epoch log (checkpoint and inclusion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<crate::tlog::LogProof>,
}

/// `POST /v1/lookup` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchLookupRequest {
    /// Labels to look up (at most the server's batch limit).
    pub labels: Vec<String>,
}

/// One label's result in a batch lookup: a lookup proof, or an absence proof.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchLookupItem {
    /// The label.
    pub label: String,
    /// akd `LookupProof`, protobuf, base64: the label is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// The label is absent at the batch's head, and this proves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absence: Option<AbsenceProof>,
    /// For a human: why there is no lookup proof (with `absence`: "not in the directory").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/lookup`: every proof is at the one head given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchLookupResponse {
    /// The signed head all proofs verify against.
    pub head: SignedHead,
    /// One result per requested label, in request order.
    pub results: Vec<BatchLookupItem>,
}

/// `GET /v1/history/{label}`: a history proof and the head it verifies against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// The label.
    pub label: String,
    /// The signed head of the epoch the proof is at.
    pub head: SignedHead,
    /// `Some(n)`: the n most recent versions; `None`: complete history. The verifier
    /// must use the same parameter.
    pub most_recent: Option<u64>,
    /// akd `HistoryProof`, protobuf, base64.
    pub proof: String,
    /// With `log=1`: the head's place in the epoch log (checkpoint and inclusion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<crate::tlog::LogProof>,
}

/// The `404` body of `GET /v1/lookup/{label}` and `GET /v1/history/{label}` for a label
/// that was never in the directory: the proof of that, at one signed head. The status
/// stays `404` (clients and proxies rely on it) and `error` keeps the old body's field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbsenceResponse {
    /// For a human: "label ... is not in the directory at epoch e".
    pub error: String,
    /// The label asked for.
    pub label: String,
    /// The signed head of the epoch the proof is at.
    pub head: SignedHead,
    /// The proof.
    pub absence: AbsenceProof,
}

/// `GET /v1/audit/{epoch}`: the append-only proof from `epoch - 1` to `epoch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditBlobResponse {
    /// The end epoch.
    pub epoch: u64,
    /// `"{epoch}/{hex previous root}/{hex root}"`: also its path at the host root.
    pub name: String,
    /// akd `SingleAppendOnlyProof`, protobuf, base64.
    pub blob: String,
}

/// One entry of `GET /v1/audit?from=&limit=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditBlobEntry {
    /// The end epoch.
    pub epoch: u64,
    /// The blob's name (also its path at the host root).
    pub name: String,
}

/// `GET /v1/audit?from=&limit=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditListing {
    /// Blobs in ascending epoch order.
    pub blobs: Vec<AuditBlobEntry>,
}

/// The body of every 4xx/5xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
}
