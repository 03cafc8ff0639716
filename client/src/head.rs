//! Signed epoch heads: what the directory commits to at each epoch.
//!
//! A head says "namespace N is at epoch E with root R, which follows root P, under the
//! VRF key whose blake3 hash is V, as of time T", signed with the directory's ed25519
//! key over a canonical, versioned, domain-separated byte string (`docs/heads.md`
//! documents it byte by byte; `client/tests/vectors/head_v1.json` is its test vector).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separator that starts every signed head message: a signature over a head can
/// never be confused with a signature over anything else made with the same key.
pub const HEAD_CONTEXT: &[u8; 16] = b"kt-epoch-head/v1";
/// The encoding version this build writes and reads.
pub const HEAD_VERSION: u8 = 1;
/// Longest namespace, in bytes of UTF-8.
pub const MAX_NAMESPACE_LEN: usize = 255;

/// Why a head could not be decoded or verified.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    /// The encoding version is not one this build knows.
    #[error("unknown signed-head version {0} (this build reads version {HEAD_VERSION})")]
    Version(u8),
    /// The bytes are not a well-formed head message.
    #[error("malformed signed head: {0}")]
    Malformed(&'static str),
    /// The ed25519 signature does not verify under the given key.
    #[error("signature on the head of epoch {epoch} does not verify with the directory key")]
    BadSignature {
        /// The epoch the head claims.
        epoch: u64,
    },
    /// A field of the JSON form is not valid hex of the right length.
    #[error("field {field} of the signed head is not {len} bytes of hex")]
    Hex {
        /// Which field.
        field: &'static str,
        /// The expected length in bytes.
        len: usize,
    },
}

/// The signed content of a head. Field order here is the order of the encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Which directory this is (one operator may run several); binds the head to it.
    pub namespace: String,
    /// The akd epoch this head commits to.
    pub epoch: u64,
    /// akd's root hash at `epoch`.
    pub root: [u8; 32],
    /// akd's root hash at `epoch - 1` (all zeros at epoch 0): heads form a hash chain,
    /// so a head also commits to its predecessor.
    pub previous_root: [u8; 32],
    /// blake3 of the VRF public key: pins the key every lookup proof is checked with.
    pub vrf_key_hash: [u8; 32],
    /// When this head was signed, milliseconds since the Unix epoch. A quiet directory
    /// re-signs its latest head with a fresh time, so silence and staleness differ.
    pub timestamp_ms: u64,
}

impl Head {
    /// The exact bytes that are signed:
    /// `HEAD_CONTEXT (16) ‖ version (1) ‖ len(namespace) (1) ‖ namespace ‖ epoch (8, BE) ‖
    /// root (32) ‖ previous_root (32) ‖ vrf_key_hash (32) ‖ timestamp_ms (8, BE)`.
    pub fn message(&self) -> Result<Vec<u8>, HeadError> {
        let ns = self.namespace.as_bytes();
        let ns_len = u8::try_from(ns.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or(HeadError::Malformed("namespace must be 1 to 255 bytes"))?;
        let mut out = Vec::with_capacity(HEAD_CONTEXT.len() + 2 + ns.len() + 8 + 96 + 8);
        out.extend_from_slice(HEAD_CONTEXT);
        out.push(HEAD_VERSION);
        out.push(ns_len);
        out.extend_from_slice(ns);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.root);
        out.extend_from_slice(&self.previous_root);
        out.extend_from_slice(&self.vrf_key_hash);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        Ok(out)
    }

    /// Parses [`Head::message`] bytes back; rejects anything else, including trailing bytes.
    pub fn from_message(bytes: &[u8]) -> Result<Head, HeadError> {
        let mut r = Reader(bytes);
        if r.take(HEAD_CONTEXT.len())? != HEAD_CONTEXT {
            return Err(HeadError::Malformed("missing kt-epoch-head context"));
        }
        let version = r.take(1)?[0];
        if version != HEAD_VERSION {
            return Err(HeadError::Version(version));
        }
        let ns_len = usize::from(r.take(1)?[0]);
        if ns_len == 0 {
            return Err(HeadError::Malformed("empty namespace"));
        }
        let namespace = std::str::from_utf8(r.take(ns_len)?)
            .map_err(|_| HeadError::Malformed("namespace is not UTF-8"))?
            .to_owned();
        let head = Head {
            namespace,
            epoch: r.u64()?,
            root: r.array()?,
            previous_root: r.array()?,
            vrf_key_hash: r.array()?,
            timestamp_ms: r.u64()?,
        };
        if !r.0.is_empty() {
            return Err(HeadError::Malformed("trailing bytes"));
        }
        Ok(head)
    }

    /// Signs this head.
    pub fn sign(self, key: &SigningKey) -> Result<SignedHead, HeadError> {
        let signature = key.sign(&self.message()?).to_bytes();
        Ok(SignedHead { head: self, signature })
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it), as heads carry time.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// blake3 of a VRF public key, as heads carry it.
pub fn vrf_key_hash(vrf_public_key: &[u8]) -> [u8; 32] {
    *blake3::hash(vrf_public_key).as_bytes()
}

/// A head with the directory's signature over [`Head::message`].
///
/// The signature is *not* checked on construction or deserialization: call
/// [`SignedHead::verify`] with the pinned directory key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SignedHeadJson", into = "SignedHeadJson")]
pub struct SignedHead {
    /// The signed content.
    pub head: Head,
    /// ed25519 signature over `head.message()`.
    pub signature: [u8; 64],
}

impl SignedHead {
    /// Checks the signature with `key` (strict ed25519: no malleable signatures, no
    /// small-order keys).
    pub fn verify(&self, key: &VerifyingKey) -> Result<&Head, HeadError> {
        let message = self.head.message()?;
        key.verify_strict(&message, &Signature::from_bytes(&self.signature))
            .map_err(|_| HeadError::BadSignature { epoch: self.head.epoch })?;
        Ok(&self.head)
    }

    /// Binary form: `message ‖ signature (64)`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, HeadError> {
        let mut out = self.head.message()?;
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    /// Parses [`SignedHead::to_bytes`] output (the signature is not checked).
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedHead, HeadError> {
        let split = bytes
            .len()
            .checked_sub(64)
            .ok_or(HeadError::Malformed("shorter than a signature"))?;
        let (message, signature) = bytes.split_at(split);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(signature);
        Ok(SignedHead {
            head: Head::from_message(message)?,
            signature: sig,
        })
    }
}

/// The JSON form of a signed head: hashes and signature in lowercase hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedHeadJson {
    version: u8,
    namespace: String,
    epoch: u64,
    root: String,
    previous_root: String,
    vrf_key_hash: String,
    timestamp_ms: u64,
    signature: String,
}

impl From<SignedHead> for SignedHeadJson {
    fn from(s: SignedHead) -> Self {
        SignedHeadJson {
            version: HEAD_VERSION,
            namespace: s.head.namespace,
            epoch: s.head.epoch,
            root: hex::encode(s.head.root),
            previous_root: hex::encode(s.head.previous_root),
            vrf_key_hash: hex::encode(s.head.vrf_key_hash),
            timestamp_ms: s.head.timestamp_ms,
            signature: hex::encode(s.signature),
        }
    }
}

impl TryFrom<SignedHeadJson> for SignedHead {
    type Error = HeadError;

    fn try_from(j: SignedHeadJson) -> Result<Self, HeadError> {
        if j.version != HEAD_VERSION {
            return Err(HeadError::Version(j.version));
        }
        let head = Head {
            namespace: j.namespace,
            epoch: j.epoch,
            root: lower_hex_array(&j.root, "root")?,
            previous_root: lower_hex_array(&j.previous_root, "previous_root")?,
            vrf_key_hash: lower_hex_array(&j.vrf_key_hash, "vrf_key_hash")?,
            timestamp_ms: j.timestamp_ms,
        };
        // Reject what could never be signed (e.g. an over-long namespace) up front.
        head.message()?;
        Ok(SignedHead {
            head,
            signature: lower_hex_array(&j.signature, "signature")?,
        })
    }
}

/// Decodes exactly `N` bytes of lowercase hex: the one form an honest directory sends,
/// so that, as for proofs, an answer is accepted only as the directory writes it.
pub fn lower_hex_array<const N: usize>(s: &str, field: &'static str) -> Result<[u8; N], HeadError> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(HeadError::Hex { field, len: N });
    }
    hex_array(s, field)
}

/// Decodes exactly `N` bytes of hex, either case (keys typed by people).
pub fn hex_array<const N: usize>(s: &str, field: &'static str) -> Result<[u8; N], HeadError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| HeadError::Hex { field, len: N })?;
    Ok(out)
}

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HeadError> {
        if self.0.len() < n {
            return Err(HeadError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HeadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, HeadError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head() -> Head {
        Head {
            namespace: "test".into(),
            epoch: 7,
            root: [1; 32],
            previous_root: [2; 32],
            vrf_key_hash: [3; 32],
            timestamp_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn sign_verify_and_round_trip() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let signed = head().sign(&key).expect("sign");
        assert_eq!(signed.verify(&key.verifying_key()), Ok(&head()));
        let back = SignedHead::from_bytes(&signed.to_bytes().expect("bytes")).expect("parse");
        assert_eq!(back, signed);
        let json = serde_json::to_string(&signed).expect("json");
        assert_eq!(serde_json::from_str::<SignedHead>(&json).expect("from json"), signed);
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let signed = head().sign(&key).expect("sign");
        let mutations: [fn(&mut Head); 6] = [
            |h| h.namespace.push('x'),
            |h| h.epoch += 1,
            |h| h.root[0] ^= 1,
            |h| h.previous_root[31] ^= 1,
            |h| h.vrf_key_hash[5] ^= 1,
            |h| h.timestamp_ms += 1,
        ];
        for mutate in mutations {
            let mut bad = signed.clone();
            mutate(&mut bad.head);
            assert_eq!(
                bad.verify(&key.verifying_key()),
                Err(HeadError::BadSignature { epoch: bad.head.epoch })
            );
        }
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(signed.verify(&other).is_err());
    }

    /// The JSON form is accepted only as a directory writes it: lowercase hex.
    #[test]
    fn uppercase_hex_in_a_head_is_refused() {
        let mut h = head();
        (h.root, h.previous_root, h.vrf_key_hash) = ([0xab; 32], [0xcd; 32], [0xef; 32]);
        let signed = h.sign(&SigningKey::from_bytes(&[9; 32])).expect("sign");
        let json = serde_json::to_value(&signed).expect("json");
        let back: SignedHead = serde_json::from_value(json.clone()).expect("lowercase parses");
        assert_eq!(back, signed);
        for field in ["root", "previous_root", "vrf_key_hash", "signature"] {
            let mut upper = json.clone();
            let v = upper[field].as_str().expect("hex").to_ascii_uppercase();
            assert_ne!(Some(v.as_str()), json[field].as_str(), "{field} has letters");
            upper[field] = serde_json::Value::String(v);
            assert!(
                serde_json::from_value::<SignedHead>(upper).is_err(),
                "{field} in uppercase accepted"
            );
        }
    }

    #[test]
    fn bad_namespaces_are_refused() {
        let mut h = head();
        h.namespace = String::new();
        assert!(h.message().is_err());
        h.namespace = "n".repeat(256);
        assert!(h.message().is_err());
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SignedHead::from_bytes(&bytes);
        }

        #[test]
        fn truncations_are_errors(cut in 0usize..(16 + 2 + 4 + 8 + 96 + 8 + 64)) {
            let key = SigningKey::from_bytes(&[9; 32]);
            let bytes = head().sign(&key).expect("sign").to_bytes().expect("bytes");
            prop_assert!(SignedHead::from_bytes(&bytes[..cut]).is_err());
        }
    }
}
