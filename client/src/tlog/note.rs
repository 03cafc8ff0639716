//! c2sp.org/signed-note: text signed by one or more keys, and the two signature types
//! this system uses: Ed25519 note signatures (type `0x01`, the log's) and
//! c2sp.org/tlog-cosignature `cosignature/v1` (type `0x04`, Ed25519 with a timestamp,
//! the witnesses').

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Longest note this build parses: a checkpoint with [`MAX_SIGNATURES`] Ed25519
/// signatures is under 3 KiB.
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// Most signature lines a note may carry (the spec asks verifiers to accept 16).
pub const MAX_SIGNATURES: usize = 64;

/// Signature type of Ed25519 note signatures.
pub const TYPE_ED25519: u8 = 0x01;
/// Signature type of `cosignature/v1` (timestamped Ed25519) witness cosignatures.
pub const TYPE_COSIGNATURE_V1: u8 = 0x04;

/// Why a note, a key or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Not a well-formed signed note.
    #[error("malformed signed note: {0}")]
    Malformed(&'static str),
    /// Not a well-formed verifier key (`name+hex8+base64`).
    #[error("malformed verifier key: {0}")]
    Key(&'static str),
    /// A signature line from a known key that does not verify.
    #[error("the signature of {name} does not verify")]
    BadSignature {
        /// The key's name.
        name: String,
    },
    /// No signature from the required key.
    #[error("the note carries no signature from {name}")]
    Unsigned {
        /// The key's name.
        name: String,
    },
    /// A key name the spec forbids (empty, a space, a `+`, a control character).
    #[error("invalid key name {0:?}")]
    Name(String),
}

/// One signature line: `— <name> base64(key id ‖ signature)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key's name.
    pub name: String,
    /// The key id, the first four bytes.
    pub key_id: u32,
    /// What follows the key id.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The line, with its newline.
    pub fn line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.signature);
        format!("\u{2014} {} {}\n", self.name, B64.encode(raw))
    }
}

/// A parsed signed note. The text is untrusted until a signature on it is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, with its final newline.
    pub text: String,
    /// The signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

/// Whether `s` holds only what a note may hold: no control character but newline.
fn clean(s: &str) -> bool {
    s.chars().all(|c| c == '\n' || c >= ' ') && !s.contains('\u{7f}')
}

/// Whether `name` is a valid key name: non-empty, no Unicode space, no `+`, no control.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < ' ' || c == '\u{7f}')
}

impl Note {
    /// Parses a signed note: text, a blank line, one or more signature lines.
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::Malformed("longer than 16 KiB"));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::Malformed("not UTF-8"))?;
        if !clean(s) {
            return Err(NoteError::Malformed("a control character other than newline"));
        }
        let split = s
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, sigs) = (&s[..split + 1], &s[split + 2..]);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed("the signatures must end in a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::Malformed("too many signatures"));
            }
            signatures.push(parse_signature_line(line)?);
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The note's bytes: text, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
        }
        out
    }

    /// The signatures whose name and key id are `key`'s.
    pub fn signatures_by<'a>(&'a self, key: &'a VerifierKey) -> impl Iterator<Item = &'a NoteSignature> + 'a {
        self.signatures
            .iter()
            .filter(move |s| s.name == key.name && s.key_id == key.key_id)
    }
}

/// Parses `— <name> <base64>` (without the newline).
pub fn parse_signature_line(line: &str) -> Result<NoteSignature, NoteError> {
    let rest = line.strip_prefix("\u{2014} ").ok_or(NoteError::Malformed(
        "a signature line must start with an em dash and a space",
    ))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(NoteError::Malformed("a signature line needs a name and a signature"))?;
    if !valid_name(name) {
        return Err(NoteError::Malformed("invalid key name in a signature line"));
    }
    let raw = B64
        .decode(b64)
        .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
    if raw.len() < 5 {
        return Err(NoteError::Malformed("a signature shorter than its key id"));
    }
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
        signature: raw[4..].to_vec(),
    })
}

/// `SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]`, big-endian.
pub fn key_id(name: &str, kind: u8, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', kind]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A public key as a note verifier: name, type and Ed25519 key. Its text form is the
/// signed-note "vkey" `<name>+<key id, 8 hex>+<base64(type ‖ key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    /// The key's name (a log's origin, a witness's name).
    pub name: String,
    /// [`TYPE_ED25519`] or [`TYPE_COSIGNATURE_V1`].
    pub kind: u8,
    /// The Ed25519 public key.
    pub key: VerifyingKey,
    /// [`key_id`] of the above.
    pub key_id: u32,
}

impl VerifierKey {
    /// The verifier of `name`, `kind`, `key`.
    pub fn new(name: &str, kind: u8, key: VerifyingKey) -> Result<VerifierKey, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::Name(name.to_owned()));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            kind,
            key_id: key_id(name, kind, key.as_bytes()),
            key,
        })
    }

    /// Parses a vkey; refuses types other than the two this system uses, and a key id
    /// that does not match the key.
    pub fn parse(s: &str) -> Result<VerifierKey, NoteError> {
        // The name holds no `+` and the id is hex; the base64 key may hold `+`.
        let mut parts = s.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::Key("expected name+keyid+base64"));
        };
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoteError::Key("the key id is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| NoteError::Key("the key id is not hex"))?;
        let raw = B64.decode(b64).map_err(|_| NoteError::Key("the key is not base64"))?;
        let [kind, key @ ..] = raw.as_slice() else {
            return Err(NoteError::Key("empty key"));
        };
        if *kind != TYPE_ED25519 && *kind != TYPE_COSIGNATURE_V1 {
            return Err(NoteError::Key("only Ed25519 (0x01) and cosignature/v1 (0x04) keys"));
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::Key("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| NoteError::Key("not an Ed25519 point"))?;
        let v = VerifierKey::new(name, *kind, key)?;
        if v.key_id != id {
            return Err(NoteError::Key("the key id does not match the key"));
        }
        Ok(v)
    }

    /// The vkey text.
    pub fn to_vkey(&self) -> String {
        let mut raw = vec![self.kind];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, B64.encode(raw))
    }

    /// Verifies one signature of this key on `text`: for a cosignature, returns its
    /// timestamp (seconds); for a plain Ed25519 signature, `None`.
    pub fn verify(&self, text: &str, sig: &NoteSignature) -> Result<Option<u64>, NoteError> {
        let bad = || NoteError::BadSignature {
            name: self.name.clone(),
        };
        if sig.name != self.name || sig.key_id != self.key_id {
            return Err(bad());
        }
        match self.kind {
            TYPE_COSIGNATURE_V1 => {
                if sig.signature.len() != 72 {
                    return Err(bad());
                }
                let timestamp = u64::from_be_bytes(sig.signature[..8].try_into().map_err(|_| bad())?);
                if timestamp > i64::MAX as u64 {
                    return Err(bad());
                }
                let signature = Signature::from_slice(&sig.signature[8..]).map_err(|_| bad())?;
                self.key
                    .verify_strict(cosignature_message(timestamp, text).as_bytes(), &signature)
                    .map_err(|_| bad())?;
                Ok(Some(timestamp))
            }
            _ => {
                let signature = Signature::from_slice(&sig.signature).map_err(|_| bad())?;
                self.key.verify_strict(text.as_bytes(), &signature).map_err(|_| bad())?;
                Ok(None)
            }
        }
    }
}

/// The message a `cosignature/v1` signs: `cosignature/v1\ntime <t>\n` and the note text.
pub fn cosignature_message(timestamp: u64, text: &str) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{text}")
}

/// Signs `text` with the Ed25519 note signature of `name`.
pub fn sign_ed25519(name: &str, key: &SigningKey, text: &str) -> Result<NoteSignature, NoteError> {
    let v = VerifierKey::new(name, TYPE_ED25519, key.verifying_key())?;
    Ok(NoteSignature {
        name: v.name,
        key_id: v.key_id,
        signature: key.sign(text.as_bytes()).to_bytes().to_vec(),
    })
}

/// Cosigns `text` (a checkpoint's note text) as witness `name` at `timestamp` seconds.
pub fn cosign(name: &str, key: &SigningKey, text: &str, timestamp: u64) -> Result<NoteSignature, NoteError> {
    let v = VerifierKey::new(name, TYPE_COSIGNATURE_V1, key.verifying_key())?;
    let mut signature = timestamp.to_be_bytes().to_vec();
    signature.extend_from_slice(&key.sign(cosignature_message(timestamp, text).as_bytes()).to_bytes());
    Ok(NoteSignature {
        name: v.name,
        key_id: v.key_id,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// golang.org/x/mod/sumdb/note's own example key and note.
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_TEXT: &str =
        "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_signing_key() -> SigningKey {
        // PRIVATE+KEY+<name>+<id>+<base64>: the base64 itself may hold a `+`.
        let b64 = GO_SKEY.splitn(5, '+').nth(4).expect("key");
        let raw = B64.decode(b64).expect("base64");
        assert_eq!(raw[0], TYPE_ED25519);
        SigningKey::from_bytes(&raw[1..].try_into().expect("32 bytes"))
    }

    #[test]
    fn the_go_reference_note_verifies_and_is_reproduced() {
        let v = VerifierKey::parse(GO_VKEY).expect("vkey");
        assert_eq!(v.to_vkey(), GO_VKEY);
        let note = Note::parse(format!("{GO_TEXT}\n{GO_SIG}").as_bytes()).expect("note");
        assert_eq!(note.text, GO_TEXT);
        let sig = note.signatures_by(&v).next().expect("signature");
        assert_eq!(v.verify(&note.text, sig), Ok(None));
        // Ed25519 is deterministic: signing the text again gives the same line.
        let ours = sign_ed25519("PeterNeumann", &go_signing_key(), GO_TEXT).expect("sign");
        assert_eq!(ours.line(), GO_SIG);
        assert_eq!(go_signing_key().verifying_key(), v.key);
    }

    #[test]
    fn cosignatures_verify_and_bind_time_and_text() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let text = "example.com/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let sig = cosign("witness.example/w1", &key, text, 1_679_315_147).expect("cosign");
        let v = VerifierKey::new("witness.example/w1", TYPE_COSIGNATURE_V1, key.verifying_key()).expect("v");
        assert_eq!(v.verify(text, &sig), Ok(Some(1_679_315_147)));
        assert!(v.verify("example.com/log\n4\nAAAA\n", &sig).is_err());
        let mut later = sig.clone();
        later.signature[7] ^= 1;
        assert!(v.verify(text, &later).is_err());
        // The same key as a plain note signer is another key id: never confused.
        let plain = VerifierKey::new("witness.example/w1", TYPE_ED25519, key.verifying_key()).expect("v");
        assert_ne!(plain.key_id, v.key_id);
        assert!(plain.verify(text, &sig).is_err());
        let back = VerifierKey::parse(&v.to_vkey()).expect("round trip");
        assert_eq!(back, v);
        // Keys whose base64 holds a `+` parse too (found by the end-to-end test).
        let with_plus = (0u8..=255)
            .map(|seed| {
                let k = SigningKey::from_bytes(&[seed; 32]).verifying_key();
                VerifierKey::new("w", TYPE_COSIGNATURE_V1, k).expect("v")
            })
            .find(|v| v.to_vkey().matches('+').count() > 2)
            .expect("some key has a + in its base64");
        assert_eq!(VerifierKey::parse(&with_plus.to_vkey()), Ok(with_plus));
    }

    #[test]
    fn malformed_notes_and_keys_are_refused() {
        let good = format!("{GO_TEXT}\n{GO_SIG}");
        for bad in [
            GO_TEXT.to_owned(),
            format!("{GO_TEXT}\n"),
            format!("{GO_TEXT}\n{}", GO_SIG.trim_end()),
            format!("{GO_TEXT}\n- PeterNeumann AAAAAAA=\n"),
            format!("{GO_TEXT}\n\u{2014} PeterNeumann !!!\n"),
            format!("{GO_TEXT}\n\u{2014} Peter+Neumann x08go/ZJ\n"),
            format!("{GO_TEXT}\n\u{2014} PeterNeumann AAAA\n"),
            good.replace("problem,", "problem,\r"),
            good.replace("problem,", "problem,\u{1}"),
        ] {
            assert!(Note::parse(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
        assert!(Note::parse(&[0xff, b'\n', b'\n']).is_err());
        assert!(Note::parse(&vec![b'a'; MAX_NOTE_BYTES + 1]).is_err());
        for bad in [
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+AhpC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",
        ] {
            assert!(VerifierKey::parse(bad).is_err(), "accepted {bad}");
        }
    }
}
