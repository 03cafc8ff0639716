//! c2sp.org/tlog-checkpoint over the epoch log, its origin and log key, and the
//! client's check of a checkpoint: the log's signature, a k-of-n witness policy and the
//! freshness of the newest co-signature.

use super::merkle::Hash;
use super::note::Note;
use super::note::{NoteError, TYPE_COSIGNATURE_V1, TYPE_ED25519, VerifierKey, valid_name};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;

/// How far in the future a co-signature's time may be (clock skew) and still count.
pub const MAX_FUTURE_SECS: u64 = 300;

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note itself, or a signature on it.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The note text is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The checkpoint is of another log.
    #[error("the checkpoint is for origin {got:?}, not {expected:?}")]
    Origin {
        /// The origin the client expects.
        expected: String,
        /// The origin of the checkpoint.
        got: String,
    },
    /// Fewer distinct pinned witnesses co-signed it than the policy asks for.
    #[error("{got} of the pinned witnesses co-signed the checkpoint; {need} are required")]
    Witnesses {
        /// Distinct pinned witnesses whose co-signature verified.
        got: usize,
        /// The policy's minimum.
        need: usize,
    },
    /// The newest accepted co-signature is older than the policy's maximum age.
    #[error("the newest co-signature is {age_secs} s old; the limit is {max_secs} s")]
    Stale {
        /// Its age.
        age_secs: u64,
        /// The policy's limit.
        max_secs: u64,
    },
}

/// The origin line of a directory's epoch log: `<namespace>/epochs`. A namespace with
/// a space, a `+` or a control character has no log (the key name rules of
/// c2sp.org/signed-note forbid them).
pub fn origin_for(namespace: &str) -> Result<String, NoteError> {
    let origin = format!("{namespace}/epochs");
    if valid_name(&origin) {
        Ok(origin)
    } else {
        Err(NoteError::Name(origin))
    }
}

/// The log's note key: the directory's head key, named by the origin. A head message
/// starts with `kt-epoch-head/v1` and then the byte 0x01, which no note text may hold,
/// so no note and no head are ever the same signed bytes (`docs/heads.md`).
pub fn log_key(namespace: &str, head_key: VerifyingKey) -> Result<VerifierKey, NoteError> {
    VerifierKey::new(&origin_for(namespace)?, TYPE_ED25519, head_key)
}

/// The body of a checkpoint: origin, size, root hash (and extension lines, which this
/// log never writes but a parser must carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity.
    pub origin: String,
    /// Leaves in the tree.
    pub size: u64,
    /// RFC 6962 root of the tree.
    pub root: Hash,
    /// Opaque extension lines, without their newlines.
    pub extensions: Vec<String>,
}

/// Parses an ASCII decimal with no leading zero (but `0`) and no sign.
pub fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

impl Checkpoint {
    /// The note text.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }

    /// Parses a note text as a checkpoint.
    pub fn parse_text(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("no final newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|l| !l.is_empty());
        let origin = origin.ok_or(CheckpointError::Malformed("empty origin"))?;
        let size = lines
            .next()
            .and_then(parse_decimal)
            .ok_or(CheckpointError::Malformed("the size is not a decimal"))?;
        let root = lines
            .next()
            .and_then(|l| B64.decode(l).ok())
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or(CheckpointError::Malformed("the root is not 32 bytes of base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("an empty extension line"));
        }
        let c = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        };
        // Only the canonical encoding (a root in padded base64 written one way).
        if c.text() != text {
            return Err(CheckpointError::Malformed("not in canonical form"));
        }
        Ok(c)
    }
}

/// Which witnesses a client trusts and how many of them must co-sign.
#[derive(Debug, Clone, Default)]
pub struct WitnessPolicy {
    /// Pinned witness keys (`cosignature/v1`), duplicates of one public key removed.
    witnesses: Vec<VerifierKey>,
    /// Distinct witnesses that must co-sign.
    pub min: usize,
    /// The newest accepted co-signature must be at most this old, if set.
    pub max_age_secs: Option<u64>,
}

impl WitnessPolicy {
    /// A policy requiring `min` of `witnesses`. A public key listed twice (under one
    /// name or two) counts once; a key that is not a `cosignature/v1` key is refused.
    pub fn new(witnesses: Vec<VerifierKey>, min: usize, max_age_secs: Option<u64>) -> Result<WitnessPolicy, NoteError> {
        let mut kept: Vec<VerifierKey> = Vec::new();
        for w in witnesses {
            if w.kind != TYPE_COSIGNATURE_V1 {
                return Err(NoteError::Key("a witness key must be a cosignature/v1 (0x04) key"));
            }
            if !kept.iter().any(|k| k.key == w.key) {
                kept.push(w);
            }
        }
        Ok(WitnessPolicy {
            witnesses: kept,
            min,
            max_age_secs,
        })
    }

    /// The pinned witnesses, deduplicated.
    pub fn witnesses(&self) -> &[VerifierKey] {
        &self.witnesses
    }
}

/// A checkpoint whose log signature, witness quorum and freshness verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The whole note as verified (log signature and co-signatures).
    pub note: Note,
    /// The pinned witnesses that co-signed, with their times (seconds).
    pub cosigned: Vec<(String, u64)>,
}

impl VerifiedCheckpoint {
    /// The newest accepted co-signature time, if any witness co-signed.
    pub fn newest_cosignature(&self) -> Option<u64> {
        self.cosigned.iter().map(|(_, t)| *t).max()
    }
}

/// Verifies a checkpoint note: the log's signature under `log`, then `policy`, with
/// `now_secs` the client's clock.
pub fn verify_checkpoint(
    note_bytes: &[u8],
    log: &VerifierKey,
    policy: &WitnessPolicy,
    now_secs: u64,
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let note = Note::parse(note_bytes)?;
    let mut signed = false;
    for s in note.signatures_by(log) {
        log.verify(&note.text, s)?;
        signed = true;
    }
    if !signed {
        return Err(NoteError::Unsigned { name: log.name.clone() }.into());
    }
    let checkpoint = Checkpoint::parse_text(&note.text)?;
    if checkpoint.origin != log.name {
        return Err(CheckpointError::Origin {
            expected: log.name.clone(),
            got: checkpoint.origin,
        });
    }
    let mut cosigned = Vec::new();
    for w in policy.witnesses() {
        let mut newest: Option<u64> = None;
        for s in note.signatures_by(w) {
            let t = w.verify(&note.text, s)?.unwrap_or(0);
            if t <= now_secs.saturating_add(MAX_FUTURE_SECS) {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
        if let Some(t) = newest {
            cosigned.push((w.name.clone(), t));
        }
    }
    if cosigned.len() < policy.min {
        return Err(CheckpointError::Witnesses {
            got: cosigned.len(),
            need: policy.min,
        });
    }
    let verified = VerifiedCheckpoint {
        checkpoint,
        note,
        cosigned,
    };
    if let (Some(max), Some(newest)) = (policy.max_age_secs, verified.newest_cosignature()) {
        let age = now_secs.saturating_sub(newest);
        if age > max {
            return Err(CheckpointError::Stale {
                age_secs: age,
                max_secs: max,
            });
        }
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::note::{cosign, sign_ed25519};
    use ed25519_dalek::SigningKey;

    /// The example checkpoint of c2sp.org/tlog-checkpoint.
    const SPEC_TEXT: &str = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    #[test]
    fn the_spec_example_parses_and_round_trips() {
        let c = Checkpoint::parse_text(SPEC_TEXT).expect("checkpoint");
        assert_eq!(c.origin, "example.com/behind-the-sofa");
        assert_eq!(c.size, 20_852_163);
        assert_eq!(c.text(), SPEC_TEXT);
        let note = format!(
            "{SPEC_TEXT}\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
        );
        let parsed = Note::parse(note.as_bytes()).expect("note");
        assert_eq!(parsed.signatures.len(), 2);
        // The witness line is a cosignature: key id, then the 8-byte time, then 64 bytes.
        assert_eq!(parsed.signatures[1].signature.len(), 72);
        assert_eq!(
            u64::from_be_bytes(parsed.signatures[1].signature[..8].try_into().expect("8")),
            1_679_315_147
        );
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        for bad in [
            "",
            "o\n1\n",
            "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
            "o\n18446744073709551616\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        ] {
            assert!(Checkpoint::parse_text(bad).is_err(), "accepted {bad:?}");
        }
    }

    fn signed(log: &SigningKey, size: u64, witnesses: &[(&str, &SigningKey, u64)]) -> (VerifierKey, String) {
        let c = Checkpoint {
            origin: origin_for("test").expect("origin"),
            size,
            root: [size as u8; 32],
            extensions: vec![],
        };
        let text = c.text();
        let mut note = Note {
            text: text.clone(),
            signatures: vec![sign_ed25519(&c.origin, log, &text).expect("sign")],
        };
        for (name, k, t) in witnesses {
            note.signatures.push(cosign(name, k, &text, *t).expect("cosign"));
        }
        (log_key("test", log.verifying_key()).expect("key"), note.to_text())
    }

    fn witness(name: &str, k: &SigningKey) -> VerifierKey {
        VerifierKey::new(name, TYPE_COSIGNATURE_V1, k.verifying_key()).expect("witness")
    }

    #[test]
    fn the_policy_counts_distinct_pinned_witnesses() {
        let log = SigningKey::from_bytes(&[1; 32]);
        let (w1, w2, w3) = (
            SigningKey::from_bytes(&[2; 32]),
            SigningKey::from_bytes(&[3; 32]),
            SigningKey::from_bytes(&[4; 32]),
        );
        let now = 1_800_000_000;
        let (key, note) = signed(&log, 5, &[("w1", &w1, now - 10), ("w2", &w2, now - 5)]);
        let two = WitnessPolicy::new(vec![witness("w1", &w1), witness("w2", &w2)], 2, Some(60)).expect("policy");
        let v = verify_checkpoint(note.as_bytes(), &key, &two, now).expect("2 of 2");
        assert_eq!(v.newest_cosignature(), Some(now - 5));
        assert_eq!(v.checkpoint.size, 5);

        // One key pinned twice under two names counts once.
        let dup = WitnessPolicy::new(vec![witness("w1", &w1), witness("w1b", &w1)], 2, None).expect("policy");
        assert_eq!(dup.witnesses().len(), 1);
        assert_eq!(
            verify_checkpoint(note.as_bytes(), &key, &dup, now),
            Err(CheckpointError::Witnesses { got: 1, need: 2 })
        );
        // Two lines of one witness count once.
        let (_, twice) = signed(&log, 5, &[("w1", &w1, now - 10), ("w1", &w1, now - 9)]);
        assert!(matches!(
            verify_checkpoint(twice.as_bytes(), &key, &two, now),
            Err(CheckpointError::Witnesses { got: 1, need: 2 })
        ));
        // An unpinned witness is ignored.
        let (_, other) = signed(&log, 5, &[("w1", &w1, now), ("w3", &w3, now)]);
        assert!(matches!(
            verify_checkpoint(other.as_bytes(), &key, &two, now),
            Err(CheckpointError::Witnesses { got: 1, .. })
        ));
        // Stale, and from the future.
        assert!(matches!(
            verify_checkpoint(note.as_bytes(), &key, &two, now + 3600),
            Err(CheckpointError::Stale { .. })
        ));
        let (_, future) = signed(&log, 5, &[("w1", &w1, now + 3600), ("w2", &w2, now)]);
        assert!(matches!(
            verify_checkpoint(future.as_bytes(), &key, &two, now),
            Err(CheckpointError::Witnesses { got: 1, .. })
        ));
        // Another log key, or no log signature at all.
        let stranger = log_key("test", SigningKey::from_bytes(&[9; 32]).verifying_key()).expect("key");
        assert!(matches!(
            verify_checkpoint(note.as_bytes(), &stranger, &two, now),
            Err(CheckpointError::Note(NoteError::Unsigned { .. }))
        ));
        // A known key's bad signature rejects the whole note.
        let mut tampered = Note::parse(note.as_bytes()).expect("note");
        tampered.signatures[1].signature[20] ^= 1;
        assert!(matches!(
            verify_checkpoint(tampered.to_text().as_bytes(), &key, &two, now),
            Err(CheckpointError::Note(NoteError::BadSignature { .. }))
        ));
    }

    #[test]
    fn origins_follow_the_key_name_rules() {
        assert_eq!(origin_for("example.com/kt").expect("origin"), "example.com/kt/epochs");
        assert!(origin_for("with space").is_err());
        assert!(origin_for("a+b").is_err());
    }
}
