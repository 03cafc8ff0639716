//! Auditor co-signatures: what an auditor signs after it has verified an epoch.
//!
//! Two formats over the same verified epoch, both ed25519 with the auditor's key:
//! - [`CoSignature`], ours: `COSIGN_CONTEXT ‖ version ‖ len(namespace) ‖ namespace ‖
//!   epoch (8, BE) ‖ root (32) ‖ previous_root (32) ‖ timestamp_ms (8, BE)`. It binds
//!   the previous root too, so a co-signed epoch also vouches for the chain
//!   (`docs/auditor.md`; vector `client/tests/vectors/cosign_v1.json`).
//! - [`PlexiSignature`], Cloudflare Plexi's format (ciphersuite 0x0001): ed25519 over
//!   the protobuf `SignatureMessage{ciphersuite, namespace, timestamp, epoch{inner},
//!   digest}`, so existing Plexi clients can check our auditor. It does not cover the
//!   previous root; Plexi clients chain epochs by fetching the previous signature.

use crate::head::{HeadError, SignedHead, hex_array};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separator of [`CoSignature`] messages (never valid as a head or a Plexi message).
pub const COSIGN_CONTEXT: &[u8; 18] = b"kt-audit-cosign/v1";
/// The co-signature encoding version this build writes and reads.
pub const COSIGN_VERSION: u8 = 1;
/// Plexi's ciphersuite number for ed25519 over protobuf.
pub const PLEXI_PROTOBUF_ED25519: u32 = 0x0001;

/// Why a co-signature could not be decoded or verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoSignError {
    /// Malformed field or unknown version.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The signature does not verify with the given auditor key.
    #[error("the auditor's signature on epoch {epoch} does not verify with the pinned auditor key")]
    BadSignature {
        /// The epoch claimed.
        epoch: u64,
    },
    /// The co-signature is over another epoch, root or namespace than the head it is
    /// presented with.
    #[error("the co-signature does not match the head: {0}")]
    Mismatch(&'static str),
    /// A Plexi ciphersuite this build does not verify.
    #[error("unsupported Plexi ciphersuite {0} (only 0x0001, ed25519 over protobuf)")]
    Ciphersuite(u32),
    /// `serialized_message` is present and differs from the encoding of the fields.
    #[error("serialized_message does not match the signed fields")]
    SerializedMessage,
}

/// What an auditor attests: it verified that `root` at `epoch` of `namespace` extends
/// `previous_root` append-only, at `timestamp_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The directory's namespace, as in its heads.
    pub namespace: String,
    /// The verified epoch.
    pub epoch: u64,
    /// The root verified at `epoch`.
    pub root: [u8; 32],
    /// The root at `epoch - 1` the proof started from (zeros at epoch 0).
    pub previous_root: [u8; 32],
    /// When the auditor signed, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

impl Attestation {
    /// The exact signed bytes of our format.
    pub fn message(&self) -> Result<Vec<u8>, CoSignError> {
        let ns = self.namespace.as_bytes();
        let ns_len = u8::try_from(ns.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or(HeadError::Malformed("namespace must be 1 to 255 bytes"))?;
        let mut out = Vec::with_capacity(COSIGN_CONTEXT.len() + 2 + ns.len() + 8 + 64 + 8);
        out.extend_from_slice(COSIGN_CONTEXT);
        out.push(COSIGN_VERSION);
        out.push(ns_len);
        out.extend_from_slice(ns);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.root);
        out.extend_from_slice(&self.previous_root);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        Ok(out)
    }

    /// Signs in both formats.
    pub fn sign(self, key: &SigningKey) -> Result<(CoSignature, PlexiSignature), CoSignError> {
        let ours = key.sign(&self.message()?).to_bytes();
        let plexi = PlexiSignature::sign(&self, key);
        Ok((
            CoSignature {
                attestation: self,
                signature: ours,
            },
            plexi,
        ))
    }
}

/// An [`Attestation`] with the auditor's signature over [`Attestation::message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CoSignatureJson", into = "CoSignatureJson")]
pub struct CoSignature {
    /// What is attested.
    pub attestation: Attestation,
    /// ed25519 over `attestation.message()`.
    pub signature: [u8; 64],
}

impl CoSignature {
    /// Checks the signature with the auditor key you pinned (strict ed25519).
    pub fn verify(&self, key: &VerifyingKey) -> Result<&Attestation, CoSignError> {
        let message = self.attestation.message()?;
        key.verify_strict(&message, &Signature::from_bytes(&self.signature))
            .map_err(|_| CoSignError::BadSignature {
                epoch: self.attestation.epoch,
            })?;
        Ok(&self.attestation)
    }

    /// Checks the signature and that it vouches for exactly this directory head.
    pub fn verify_for(&self, key: &VerifyingKey, head: &SignedHead) -> Result<(), CoSignError> {
        let a = self.verify(key)?;
        let h = &head.head;
        if a.namespace != h.namespace {
            return Err(CoSignError::Mismatch("namespace"));
        }
        if a.epoch != h.epoch {
            return Err(CoSignError::Mismatch("epoch"));
        }
        if a.root != h.root {
            return Err(CoSignError::Mismatch("root"));
        }
        if a.previous_root != h.previous_root {
            return Err(CoSignError::Mismatch("previous root"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoSignatureJson {
    version: u8,
    namespace: String,
    epoch: u64,
    root: String,
    previous_root: String,
    timestamp_ms: u64,
    signature: String,
}

impl From<CoSignature> for CoSignatureJson {
    fn from(c: CoSignature) -> Self {
        let a = c.attestation;
        CoSignatureJson {
            version: COSIGN_VERSION,
            namespace: a.namespace,
            epoch: a.epoch,
            root: hex::encode(a.root),
            previous_root: hex::encode(a.previous_root),
            timestamp_ms: a.timestamp_ms,
            signature: hex::encode(c.signature),
        }
    }
}

impl TryFrom<CoSignatureJson> for CoSignature {
    type Error = CoSignError;

    fn try_from(j: CoSignatureJson) -> Result<Self, CoSignError> {
        if j.version != COSIGN_VERSION {
            return Err(HeadError::Version(j.version).into());
        }
        let attestation = Attestation {
            namespace: j.namespace,
            epoch: j.epoch,
            root: hex_array(&j.root, "root")?,
            previous_root: hex_array(&j.previous_root, "previous_root")?,
            timestamp_ms: j.timestamp_ms,
        };
        attestation.message()?;
        Ok(CoSignature {
            attestation,
            signature: hex_array(&j.signature, "signature")?,
        })
    }
}

/// Plexi's `SignatureResponse` JSON, as `GET /namespaces/{ns}/audits/{epoch}` serves it
/// and `plexi-core` reads it (hex strings; `version` mirrors `ciphersuite`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlexiSignature {
    /// Same as `ciphersuite` (older Plexi clients read this name).
    pub version: u32,
    /// 0x0001: ed25519 over protobuf.
    pub ciphersuite: u32,
    /// The directory's namespace.
    pub namespace: String,
    /// When the auditor signed, ms since the Unix epoch.
    pub timestamp: u64,
    /// The verified epoch.
    pub epoch: u64,
    /// The root at `epoch`, hex.
    pub digest: String,
    /// ed25519 signature over `serialized_message`, hex.
    pub signature: String,
    /// Last byte of the auditor's public key (Plexi's key id).
    pub key_id: u8,
    /// The protobuf `SignatureMessage` that was signed, hex.
    pub serialized_message: String,
}

impl PlexiSignature {
    /// Signs `a` in Plexi's format.
    pub fn sign(a: &Attestation, key: &SigningKey) -> PlexiSignature {
        let message = plexi_message(&a.namespace, a.timestamp_ms, a.epoch, &a.root);
        let signature = key.sign(&message).to_bytes();
        let public = key.verifying_key().to_bytes();
        PlexiSignature {
            version: PLEXI_PROTOBUF_ED25519,
            ciphersuite: PLEXI_PROTOBUF_ED25519,
            namespace: a.namespace.clone(),
            timestamp: a.timestamp_ms,
            epoch: a.epoch,
            digest: hex::encode(a.root),
            signature: hex::encode(signature),
            key_id: public[31],
            serialized_message: hex::encode(message),
        }
    }

    /// Verifies as a Plexi client does (re-encoding the fields), and also that
    /// `serialized_message` is exactly that encoding.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), CoSignError> {
        if self.ciphersuite != PLEXI_PROTOBUF_ED25519 || self.version != self.ciphersuite {
            return Err(CoSignError::Ciphersuite(self.ciphersuite));
        }
        let digest = hex::decode(&self.digest).map_err(|_| HeadError::Hex {
            field: "digest",
            len: 32,
        })?;
        let message = plexi_message(&self.namespace, self.timestamp, self.epoch, &digest);
        if hex::encode(&message) != self.serialized_message {
            return Err(CoSignError::SerializedMessage);
        }
        let signature: [u8; 64] = hex_array(&self.signature, "signature")?;
        key.verify_strict(&message, &Signature::from_bytes(&signature))
            .map_err(|_| CoSignError::BadSignature { epoch: self.epoch })
    }
}

/// Plexi's protobuf `SignatureMessage` (proto2, all fields required, in tag order, as
/// prost writes it): 1 ciphersuite uint32, 2 namespace string, 3 timestamp uint64,
/// 4 epoch `Epoch{1 inner uint64}`, 5 digest bytes.
pub fn plexi_message(namespace: &str, timestamp_ms: u64, epoch: u64, digest: &[u8]) -> Vec<u8> {
    use protobuf::CodedOutputStream;
    let mut out = Vec::with_capacity(64 + namespace.len());
    // Writing into a Vec cannot fail; an error here would be a protobuf crate bug, and
    // the resulting message would then simply not verify.
    let mut os = CodedOutputStream::vec(&mut out);
    let _ = (|| -> protobuf::Result<()> {
        os.write_uint32(1, PLEXI_PROTOBUF_ED25519)?;
        os.write_string(2, namespace)?;
        os.write_uint64(3, timestamp_ms)?;
        os.write_tag(4, protobuf::rt::WireType::LengthDelimited)?;
        let inner_len = 1 + protobuf::rt::compute_raw_varint64_size(epoch);
        os.write_raw_varint64(inner_len)?;
        os.write_uint64(1, epoch)?;
        os.write_bytes(5, digest)?;
        os.flush()
    })();
    drop(os);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attestation() -> Attestation {
        Attestation {
            namespace: "log.example".into(),
            epoch: 7,
            root: [1; 32],
            previous_root: [2; 32],
            timestamp_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn both_formats_verify_and_reject_tampering() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        let (ours, plexi) = attestation().sign(&key).expect("sign");
        ours.verify(&key.verifying_key()).expect("ours verifies");
        plexi.verify(&key.verifying_key()).expect("plexi verifies");
        assert!(ours.verify(&other).is_err());
        assert!(plexi.verify(&other).is_err());

        let json = serde_json::to_string(&ours).expect("json");
        let back: CoSignature = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, ours);
        let mut tampered = ours.clone();
        tampered.attestation.previous_root[0] ^= 1;
        assert!(tampered.verify(&key.verifying_key()).is_err());

        let mut p = plexi.clone();
        p.epoch += 1;
        assert_eq!(p.verify(&key.verifying_key()), Err(CoSignError::SerializedMessage));
        let mut p = plexi;
        p.ciphersuite = 2;
        assert!(matches!(
            p.verify(&key.verifying_key()),
            Err(CoSignError::Ciphersuite(2))
        ));
    }

    #[test]
    fn co_signature_is_bound_to_the_head() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let (ours, _) = attestation().sign(&key).expect("sign");
        let head = crate::head::Head {
            namespace: "log.example".into(),
            epoch: 7,
            root: [1; 32],
            previous_root: [2; 32],
            vrf_key_hash: [0; 32],
            timestamp_ms: 5,
        }
        .sign(&SigningKey::from_bytes(&[3; 32]))
        .expect("head");
        ours.verify_for(&key.verifying_key(), &head).expect("matches");
        let mut other = head.clone();
        other.head.root[5] ^= 1;
        assert_eq!(
            ours.verify_for(&key.verifying_key(), &other),
            Err(CoSignError::Mismatch("root"))
        );
    }
}
