//! What a client remembers between runs, per directory (keyed by its signing key): the
//! newest verified head, recent heads by epoch, the VRF key learned on first use, and
//! the last epoch each monitored label was verified at.
//!
//! A validly signed head with a lower epoch than the newest one seen is a **rollback**;
//! two validly signed heads for one epoch with different roots are a **fork**, and the
//! pair is kept as [`ForkEvidence`] that anyone can check with the directory's key.

use crate::head::SignedHead;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many recent heads are kept per directory for fork detection.
pub const KEPT_HEADS: usize = 256;
/// The state file format this build reads and writes.
pub const STATE_VERSION: u32 = 1;

/// Proof that a directory signed two different roots for one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvidence {
    /// The head seen first.
    pub first: SignedHead,
    /// The conflicting head.
    pub second: SignedHead,
}

/// Why a head is refused by the state, or the state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory served an older epoch than one already verified.
    #[error("rollback: the directory served epoch {got}, but epoch {seen} was already verified")]
    Rollback {
        /// The newest epoch verified before.
        seen: u64,
        /// The epoch served now.
        got: u64,
    },
    /// Two validly signed heads for one epoch with different roots.
    #[error("fork: two signed heads for epoch {} with different roots", .0.first.head.epoch)]
    Fork(Box<ForkEvidence>),
    /// The VRF key differs from the one pinned or learned before.
    #[error("the directory's VRF key changed (it never can): pinned {pinned}, now {got}")]
    VrfKeyChanged {
        /// Hex of the key pinned before.
        pinned: String,
        /// Hex of the key offered now.
        got: String,
    },
    /// The state file cannot be read or written.
    #[error("state file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The remembered state of one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryState {
    /// The VRF public key (hex), pinned or learned on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf_public_key: Option<String>,
    /// Recent verified heads by epoch (the newest [`KEPT_HEADS`]).
    #[serde(default)]
    pub heads: BTreeMap<u64, SignedHead>,
    /// Per monitored label: the epoch its history was last verified at.
    #[serde(default)]
    pub monitored: BTreeMap<String, u64>,
}

impl DirectoryState {
    /// The newest head seen.
    pub fn latest(&self) -> Option<&SignedHead> {
        self.heads.values().next_back()
    }

    /// Records a head whose signature was already verified, after checking it against
    /// what was seen: refuses rollbacks and forks.
    pub fn observe(&mut self, head: &SignedHead) -> Result<(), StateError> {
        let epoch = head.head.epoch;
        if let Some(known) = self.heads.get(&epoch)
            && known.head.root != head.head.root
        {
            return Err(StateError::Fork(Box::new(ForkEvidence {
                first: known.clone(),
                second: head.clone(),
            })));
        }
        if let Some(latest) = self.latest()
            && epoch < latest.head.epoch
        {
            return Err(StateError::Rollback {
                seen: latest.head.epoch,
                got: epoch,
            });
        }
        // Keep the freshest signature of an epoch (re-signed heads carry newer times).
        let fresher = self
            .heads
            .get(&epoch)
            .is_none_or(|k| k.head.timestamp_ms <= head.head.timestamp_ms);
        if fresher {
            self.heads.insert(epoch, head.clone());
        }
        while self.heads.len() > KEPT_HEADS {
            self.heads.pop_first();
        }
        Ok(())
    }

    /// Pins `key` (hex) on first use; afterwards it must never change.
    pub fn pin_vrf_key(&mut self, key: &str) -> Result<(), StateError> {
        match &self.vrf_public_key {
            Some(pinned) if !pinned.eq_ignore_ascii_case(key) => Err(StateError::VrfKeyChanged {
                pinned: pinned.clone(),
                got: key.to_owned(),
            }),
            Some(_) => Ok(()),
            None => {
                self.vrf_public_key = Some(key.to_ascii_lowercase());
                Ok(())
            }
        }
    }
}

/// The state file: every directory this client has talked to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// By directory signing key (hex).
    pub directories: BTreeMap<String, DirectoryState>,
}

impl State {
    /// Reads `path`; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<State, StateError> {
        let err = |reason: String| StateError::File {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: STATE_VERSION,
                    ..State::default()
                });
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(err(format!(
                "format version {} (this build reads {STATE_VERSION})",
                state.version
            )));
        }
        Ok(state)
    }

    /// Writes `path` atomically (a synced temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |reason: String| StateError::File {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| err(e.to_string()))
    }

    /// The state of the directory with signing key `key` (hex).
    pub fn directory(&mut self, key: &str) -> &mut DirectoryState {
        self.directories.entry(key.to_ascii_lowercase()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::Head;
    use ed25519_dalek::SigningKey;

    fn head(epoch: u64, root: u8, ts: u64) -> SignedHead {
        Head {
            namespace: "t".into(),
            epoch,
            root: [root; 32],
            previous_root: [0; 32],
            vrf_key_hash: [0; 32],
            timestamp_ms: ts,
        }
        .sign(&SigningKey::from_bytes(&[1; 32]))
        .expect("sign")
    }

    #[test]
    fn rollback_and_fork_are_refused_and_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path().join("state.json");
        let mut state = State::load(&tmp).expect("empty");
        let dir = state.directory("AB");
        dir.observe(&head(5, 1, 10)).expect("first");
        dir.observe(&head(5, 1, 20)).expect("same epoch re-signed");
        dir.observe(&head(6, 2, 30)).expect("newer");
        state.save(&tmp).expect("save");

        let mut again = State::load(&tmp).expect("load");
        let dir = again.directory("ab");
        assert_eq!(dir.latest().map(|h| h.head.epoch), Some(6));
        assert!(matches!(
            dir.observe(&head(5, 1, 40)),
            Err(StateError::Rollback { seen: 6, got: 5 })
        ));
        match dir.observe(&head(6, 9, 50)) {
            Err(StateError::Fork(evidence)) => {
                assert_eq!(evidence.first.head.root, [2; 32]);
                assert_eq!(evidence.second.head.root, [9; 32]);
            }
            other => panic!("expected a fork, got {other:?}"),
        }
        dir.pin_vrf_key("aa").expect("learn");
        assert!(dir.pin_vrf_key("AA").is_ok());
        assert!(matches!(dir.pin_vrf_key("bb"), Err(StateError::VrfKeyChanged { .. })));
    }

    #[test]
    fn a_corrupt_or_future_state_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path().join("state.json");
        std::fs::write(&tmp, b"{").expect("write");
        assert!(State::load(&tmp).is_err());
        std::fs::write(&tmp, br#"{"version": 9, "directories": {}}"#).expect("write");
        assert!(State::load(&tmp).is_err());
    }
}
