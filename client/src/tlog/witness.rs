//! c2sp.org/tlog-witness: the `add-checkpoint` request body and the two response
//! bodies a log reads (co-signature lines on 200, the witness's size on 409).

use super::checkpoint::parse_decimal;
use super::merkle::{Hash, MAX_PROOF_HASHES};
use super::note::{MAX_NOTE_BYTES, MAX_SIGNATURES, NoteSignature, parse_signature_line};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Longest `add-checkpoint` body accepted: a proof of 63 hashes and a note.
pub const MAX_BODY_BYTES: usize = 64 + MAX_PROOF_HASHES * 46 + MAX_NOTE_BYTES;
/// Most hashes a request's proof may hold (the spec's limit).
pub const MAX_REQUEST_PROOF: usize = 63;
/// `Content-Type` of the 409 body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// Why a witness message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    /// Not a body of the spec's form.
    #[error("malformed add-checkpoint body: {0}")]
    Malformed(&'static str),
}

/// An `add-checkpoint` request: the size the log believes the witness last co-signed,
/// the consistency proof from it, and the checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The old size.
    pub old: u64,
    /// RFC 6962 consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note (unverified).
    pub checkpoint: Vec<u8>,
}

impl AddCheckpoint {
    /// The request body.
    pub fn to_body(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old);
        for h in &self.proof {
            out.push_str(&B64.encode(h));
            out.push('\n');
        }
        out.push('\n');
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, WitnessError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(WitnessError::Malformed("too long"));
        }
        let mut rest = body;
        let mut line = || -> Result<&[u8], WitnessError> {
            let i = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or(WitnessError::Malformed("a line without a newline"))?;
            let (l, r) = rest.split_at(i);
            rest = &r[1..];
            Ok(l)
        };
        let old = std::str::from_utf8(line()?)
            .ok()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(parse_decimal)
            .ok_or(WitnessError::Malformed("the first line must be `old <size>`"))?;
        let mut proof = Vec::new();
        loop {
            let l = line()?;
            if l.is_empty() {
                break;
            }
            if proof.len() == MAX_REQUEST_PROOF {
                return Err(WitnessError::Malformed("more than 63 proof lines"));
            }
            let h = B64
                .decode(l)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or(WitnessError::Malformed("a proof line is not a base64 hash"))?;
            proof.push(h);
        }
        Ok(AddCheckpoint {
            old,
            proof,
            checkpoint: rest.to_vec(),
        })
    }
}

/// Parses a 200 response: one or more signature lines.
pub fn parse_cosignatures(body: &[u8]) -> Result<Vec<NoteSignature>, WitnessError> {
    if body.len() > MAX_NOTE_BYTES {
        return Err(WitnessError::Malformed("too long"));
    }
    let s = std::str::from_utf8(body).map_err(|_| WitnessError::Malformed("not UTF-8"))?;
    let s = s
        .strip_suffix('\n')
        .ok_or(WitnessError::Malformed("no final newline"))?;
    let mut out = Vec::new();
    for line in s.split('\n') {
        if out.len() == MAX_SIGNATURES {
            return Err(WitnessError::Malformed("too many signatures"));
        }
        out.push(parse_signature_line(line).map_err(|_| WitnessError::Malformed("not a signature line"))?);
    }
    Ok(out)
}

/// Parses a 409 response: the witness's latest co-signed size and a newline.
pub fn parse_size(body: &[u8]) -> Result<u64, WitnessError> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .and_then(parse_decimal)
        .ok_or(WitnessError::Malformed("a size response is a decimal and a newline"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request example of c2sp.org/tlog-witness.
    const SPEC_BODY: &str = "old 20852014\n\
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
\n\
example.com/behind-the-sofa\n\
20852163\n\
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
\n\
\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
\u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n";

    /// The response example of c2sp.org/tlog-witness.
    const SPEC_RESPONSE: &str = "\u{2014} witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==\n\
\u{2014} witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==\n\
\u{2014} witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==\n";

    #[test]
    fn the_spec_examples_parse_and_round_trip() {
        let req = AddCheckpoint::parse(SPEC_BODY.as_bytes()).expect("request");
        assert_eq!(req.old, 20_852_014);
        assert_eq!(req.proof.len(), 4);
        let note = crate::tlog::note::Note::parse(&req.checkpoint).expect("note");
        assert_eq!(note.signatures.len(), 2);
        assert_eq!(req.to_body(), SPEC_BODY.as_bytes());
        let sigs = parse_cosignatures(SPEC_RESPONSE.as_bytes()).expect("response");
        assert_eq!(sigs.len(), 3);
        assert_eq!(sigs[2].name, "witness.example/w2");
        assert_eq!(parse_size(b"20852014\n"), Ok(20_852_014));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            "",
            "old 1",
            "old 01\n\nx",
            "olde 1\n\n",
            "old 1\nnot base64\n\n",
            "old 1\nAAAA\n\n",
        ] {
            assert!(AddCheckpoint::parse(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
        let long = format!(
            "old 1\n{}\n",
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n".repeat(64)
        );
        assert!(AddCheckpoint::parse(long.as_bytes()).is_err());
        for bad in ["", "\n", "1", "01\n", "x\n"] {
            assert!(parse_size(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
        assert!(parse_cosignatures(b"").is_err());
        assert!(parse_cosignatures(b"- w AAAAAAA=\n").is_err());
    }
}
