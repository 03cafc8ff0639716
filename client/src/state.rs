//! What a client remembers between runs, per directory (keyed by its signing key): the
//! newest verified head, recent heads by epoch, the VRF key learned on first use, and
//! the last epoch each monitored label was verified at.
//!
//! A validly signed head with a lower epoch than the newest one seen is a **rollback**;
//! two validly signed heads for one epoch with different roots are a **fork**, and so
//! are two signed heads of consecutive epochs whose link does not hold (the later one's
//! `previous_root` is not the earlier one's root): the pair is kept as
//! [`ForkEvidence`] that anyone can check with the directory's key. A head of a newer
//! epoch signed at an earlier time than one already seen contradicts it too.
//!
//! Several `kt` processes may share one file: [`State::update`] applies a run's
//! observations under an exclusive lock, to the file as it is then, and replaces it
//! through a uniquely named, synced temporary file and a synced directory.

use crate::head::SignedHead;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many recent heads are kept per directory for fork detection.
pub const KEPT_HEADS: usize = 256;
/// The state file format this build reads and writes.
pub const STATE_VERSION: u32 = 2;

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
    /// Two signed heads of which the newer epoch carries the older time.
    #[error("time went backwards: epoch {} is signed at {} ms, after epoch {} at {} ms", .0.first.head.epoch, .0.first.head.timestamp_ms, .0.second.head.epoch, .0.second.head.timestamp_ms)]
    TimeWentBack(Box<ForkEvidence>),
    /// The namespace differs from the one pinned or learned before.
    #[error("the directory's namespace changed: pinned {pinned:?}, now {got:?}")]
    NamespaceChanged {
        /// The namespace pinned before.
        pinned: String,
        /// The namespace offered now.
        got: String,
    },
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
        reason: String,
    },
}

/// The remembered state of one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryState {
    /// The VRF public key (hex), pinned or learned on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf_public_key: Option<String>,
    /// The namespace, pinned or learned on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Recent verified heads by epoch (the newest [`KEPT_HEADS`]).
    #[serde(default)]
    pub heads: BTreeMap<u64, SignedHead>,
    /// Per monitored label: the epoch its history was last verified at.
    #[serde(default)]
    pub monitored: BTreeMap<String, u64>,
    /// The largest epoch-log checkpoint verified (its note, with the co-signatures it
    /// was accepted with): every later one must extend it (format version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

impl DirectoryState {
    /// The newest head seen.
    pub fn latest(&self) -> Option<&SignedHead> {
        self.heads.values().next_back()
    }

    /// Records a head whose signature was already verified, after checking it against
    /// what was seen: refuses forks (another root or previous root for a known epoch),
    /// broken links to a neighbouring epoch (both ways), a newer epoch signed earlier
    /// than an older one (both ways), and then rollbacks.
    pub fn observe(&mut self, head: &SignedHead) -> Result<(), StateError> {
        self.record(head, true)
    }

    /// [`DirectoryState::observe`] for a head this run already checked, written into
    /// the file as other runs left it: one of them may have saved a newer epoch
    /// meanwhile, so an older head is kept, not a rollback. Forks, broken links and
    /// time going back still are refused.
    pub fn merge(&mut self, head: &SignedHead) -> Result<(), StateError> {
        self.record(head, false)
    }

    fn record(&mut self, head: &SignedHead, refuse_older: bool) -> Result<(), StateError> {
        let epoch = head.head.epoch;
        let evidence = |first: &SignedHead, second: &SignedHead| {
            Box::new(ForkEvidence {
                first: first.clone(),
                second: second.clone(),
            })
        };
        if let Some(known) = self.heads.get(&epoch)
            && (known.head.root != head.head.root || known.head.previous_root != head.head.previous_root)
        {
            return Err(StateError::Fork(evidence(known, head)));
        }
        // The links to the neighbouring epochs, both ways: an older head that breaks
        // the chain is evidence, not only a rollback.
        if let Some(before) = epoch.checked_sub(1).and_then(|e| self.heads.get(&e))
            && head.head.previous_root != before.head.root
        {
            return Err(StateError::Fork(evidence(before, head)));
        }
        if let Some(after) = epoch.checked_add(1).and_then(|e| self.heads.get(&e))
            && after.head.previous_root != head.head.root
        {
            return Err(StateError::Fork(evidence(head, after)));
        }
        // Time never runs backwards across epochs, on either side: no older epoch's
        // head (any signature of it) is signed after a newer one's. The evidence names
        // the newer epoch first.
        if let Some((_, older)) = self.heads.range(..epoch).next_back()
            && older.head.timestamp_ms > head.head.timestamp_ms
        {
            return Err(StateError::TimeWentBack(evidence(head, older)));
        }
        if let Some((_, newer)) = epoch.checked_add(1).and_then(|e| self.heads.range(e..).next())
            && newer.head.timestamp_ms < head.head.timestamp_ms
        {
            return Err(StateError::TimeWentBack(evidence(newer, head)));
        }
        if refuse_older
            && let Some(latest) = self.latest()
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

    /// The stored checkpoint, parsed (its signatures were verified when it was stored).
    pub fn log_checkpoint(&self) -> Option<crate::tlog::checkpoint::Checkpoint> {
        let note = crate::tlog::note::Note::parse(self.checkpoint.as_deref()?.as_bytes()).ok()?;
        crate::tlog::checkpoint::Checkpoint::parse_text(&note.text).ok()
    }

    /// Accepts a verified checkpoint `note` if it extends the stored one by `proof`
    /// (from the stored size to its size); keeps the larger one. A same-size checkpoint
    /// with another root is a [`crate::tlog::LogError::Fork`], with both notes.
    pub fn accept_checkpoint(
        &mut self,
        note: &str,
        checkpoint: &crate::tlog::checkpoint::Checkpoint,
        proof: &[crate::tlog::merkle::Hash],
    ) -> Result<(), crate::tlog::LogError> {
        if let (Some(old), Some(old_note)) = (self.log_checkpoint(), self.checkpoint.as_deref()) {
            crate::tlog::check_extends(&old, old_note, checkpoint, note, proof)?;
        }
        self.checkpoint = Some(note.to_owned());
        Ok(())
    }

    /// Pins `namespace` on first use; afterwards it must never change.
    pub fn pin_namespace(&mut self, namespace: &str) -> Result<(), StateError> {
        match &self.namespace {
            Some(pinned) if pinned != namespace => Err(StateError::NamespaceChanged {
                pinned: pinned.clone(),
                got: namespace.to_owned(),
            }),
            Some(_) => Ok(()),
            None => {
                self.namespace = Some(namespace.to_owned());
                Ok(())
            }
        }
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
        State::from_slice(&bytes).map_err(err)
    }

    /// Parses a state file's bytes: its format version, and every kept head filed
    /// under its own epoch (a head filed under another would slip past the checks
    /// that look its neighbours up by epoch).
    pub fn from_slice(bytes: &[u8]) -> Result<State, String> {
        let mut state: State = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        // Version 1 is version 2 without checkpoints: migrated as read, saved as 2.
        if state.version == 1 {
            state.version = STATE_VERSION;
        }
        if state.version != STATE_VERSION {
            return Err(format!(
                "format version {} (this build reads {STATE_VERSION})",
                state.version
            ));
        }
        for (key, directory) in &state.directories {
            if let Some((epoch, head)) = directory.heads.iter().find(|(e, h)| **e != h.head.epoch) {
                return Err(format!(
                    "directory {}: the head kept as epoch {epoch} is of epoch {}",
                    crate::wire::printable(key, 80),
                    head.head.epoch
                ));
            }
        }
        Ok(state)
    }

    /// Writes `path` atomically: a uniquely named temporary file in the same directory,
    /// synced, renamed over it, and the directory synced. Concurrent writers must hold
    /// the lock of [`State::update`].
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |reason: String| StateError::File {
            path: path.to_path_buf(),
            reason,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = path
            .file_name()
            .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.{}.{unique}.tmp", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path))
            .and_then(|()| std::fs::File::open(dir)?.sync_all());
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(|e| err(e.to_string()))
    }

    /// Applies `change` to the state file as it is now, under an exclusive lock (a
    /// `.lock` file next to it), and saves the result: parallel runs sharing a file
    /// each see the others' heads and lose none of them. Returns the state saved.
    pub fn update(path: &Path, change: impl FnOnce(&mut State) -> Result<(), StateError>) -> Result<State, StateError> {
        let err = |reason: String| StateError::File {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(format!("opening the lock {}: {e}", lock_path.display())))?;
        lock.lock()
            .map_err(|e| err(format!("locking {}: {e}", lock_path.display())))?;
        let mut state = State::load(path)?;
        change(&mut state)?;
        state.save(path)?;
        drop(lock);
        Ok(state)
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

    fn linked(epoch: u64, root: u8, previous: u8, ts: u64) -> SignedHead {
        Head {
            namespace: "t".into(),
            epoch,
            root: [root; 32],
            previous_root: [previous; 32],
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
        dir.observe(&linked(5, 1, 0, 10)).expect("first");
        dir.observe(&linked(5, 1, 0, 20)).expect("same epoch re-signed");
        dir.observe(&linked(6, 2, 1, 30)).expect("newer");
        state.save(&tmp).expect("save");

        let mut again = State::load(&tmp).expect("load");
        let dir = again.directory("ab");
        assert_eq!(dir.latest().map(|h| h.head.epoch), Some(6));
        assert!(matches!(
            dir.observe(&linked(5, 1, 0, 25)),
            Err(StateError::Rollback { seen: 6, got: 5 })
        ));
        // The same epoch and root over another previous root is a fork too.
        assert!(matches!(dir.observe(&linked(6, 2, 7, 35)), Err(StateError::Fork(_))));
        match dir.observe(&linked(6, 9, 1, 50)) {
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
    fn a_broken_link_to_either_neighbour_is_a_fork_and_time_never_runs_back() {
        let mut dir = DirectoryState::default();
        dir.observe(&linked(4, 4, 3, 40)).expect("epoch 4");
        // A forged epoch 5 that does not follow the real 4.
        match dir.observe(&linked(5, 5, 9, 50)) {
            Err(StateError::Fork(e)) => assert_eq!((e.first.head.epoch, e.second.head.epoch), (4, 5)),
            other => panic!("expected a chain break, got {other:?}"),
        }
        // Seen the other way round (a real 6, then an older head that 6 does not
        // follow) it is a fork with both heads, not only a rollback.
        let mut dir = DirectoryState::default();
        dir.observe(&linked(6, 6, 5, 60)).expect("epoch 6");
        match dir.observe(&linked(5, 8, 4, 50)) {
            Err(StateError::Fork(e)) => assert_eq!((e.first.head.epoch, e.second.head.epoch), (5, 6)),
            other => panic!("expected a chain break, got {other:?}"),
        }
        // An older epoch signed after a newer one: time went back (newer epoch first).
        match dir.observe(&linked(3, 3, 2, 70)) {
            Err(StateError::TimeWentBack(e)) => assert_eq!((e.first.head.epoch, e.second.head.epoch), (6, 3)),
            other => panic!("expected time going back, got {other:?}"),
        }
        // A consistent older head is a rollback for a run, and kept when another run
        // saved the newer epoch first (a merge).
        assert!(matches!(
            dir.observe(&linked(5, 5, 4, 50)),
            Err(StateError::Rollback { seen: 6, got: 5 })
        ));
        dir.merge(&linked(5, 5, 4, 50)).expect("merged under a newer epoch");
        assert_eq!(dir.heads.len(), 2);
        assert!(
            matches!(dir.merge(&linked(4, 8, 3, 40)), Err(StateError::Fork(_))),
            "5 does not follow it"
        );
        let mut dir = DirectoryState::default();
        dir.observe(&linked(4, 4, 3, 40)).expect("epoch 4");
        dir.observe(&linked(5, 5, 4, 50)).expect("the real 5 follows it");
        dir.observe(&linked(6, 6, 5, 60)).expect("and 6");
        // Epoch 7 signed before epoch 6.
        assert!(matches!(
            dir.observe(&linked(7, 7, 6, 55)),
            Err(StateError::TimeWentBack(_))
        ));
        dir.observe(&linked(7, 7, 6, 70)).expect("in order");
    }

    #[test]
    fn parallel_updates_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..10u64 {
                        State::update(path, |state| {
                            state.directory("ab").monitored.insert(format!("label-{t}-{i}"), i);
                            Ok(())
                        })
                        .expect("update");
                    }
                });
            }
        });
        let state = State::load(&path).expect("load");
        assert_eq!(
            state.directories["ab"].monitored.len(),
            80,
            "every run's update is kept"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary files left behind");
    }

    #[test]
    fn a_corrupt_or_future_state_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path().join("state.json");
        std::fs::write(&tmp, b"{").expect("write");
        assert!(State::load(&tmp).is_err());
        std::fs::write(&tmp, br#"{"version": 9, "directories": {}}"#).expect("write");
        assert!(State::load(&tmp).is_err());
        // A head filed under another epoch (found by the client_state fuzz target).
        let mut state = State {
            version: STATE_VERSION,
            ..State::default()
        };
        state.directory("ab").heads.insert(1, linked(0, 1, 0, 10));
        std::fs::write(&tmp, serde_json::to_vec(&state).expect("json")).expect("write");
        assert!(matches!(State::load(&tmp), Err(StateError::File { .. })));
    }

    /// A version 1 file (before the epoch log) is read, and saved as version 2.
    #[test]
    fn a_version_1_state_file_is_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let mut v1 = State {
            version: 1,
            ..State::default()
        };
        v1.directory("ab").heads.insert(0, linked(0, 1, 0, 10));
        let mut json = serde_json::to_value(&v1).expect("json");
        assert!(json["directories"]["ab"].get("checkpoint").is_none());
        json["version"] = 1.into();
        std::fs::write(&path, serde_json::to_vec(&json).expect("bytes")).expect("write");
        let state = State::update(&path, |_| Ok(())).expect("migrated");
        assert_eq!(state.version, STATE_VERSION);
        assert_eq!(state.directories["ab"].heads.len(), 1);
        let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(saved["version"], 2);
    }
}
