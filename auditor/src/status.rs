//! What the follower knows right now, shared with the HTTP handlers.

use kt_client::auditor::AuditState;
use std::sync::{Arc, RwLock};

/// Live state of the follower (the durable part lives in the store).
#[derive(Debug, Clone)]
pub struct Status {
    /// ok / lagging / failed.
    pub state: AuditState,
    /// Why the state is not ok.
    pub reason: String,
    /// The directory's namespace, once pinned.
    pub namespace: String,
    /// Newest epoch with a validly signed head.
    pub last_seen_epoch: Option<u64>,
    /// Newest co-signed epoch.
    pub last_verified_epoch: Option<u64>,
    /// Its root, hex.
    pub last_verified_root: Option<String>,
    /// Timestamp of the newest directory head seen.
    pub last_head_timestamp_ms: Option<u64>,
    /// Last successful contact with the directory.
    pub last_contact_ms: Option<u64>,
}

impl Status {
    /// Epochs seen but not yet verified.
    pub fn lag(&self) -> u64 {
        self.last_seen_epoch
            .unwrap_or(0)
            .saturating_sub(self.last_verified_epoch.unwrap_or(0))
    }
}

/// A [`Status`] behind a lock; cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedStatus(Arc<RwLock<Status>>);

impl SharedStatus {
    /// Starts lagging ("starting") until the first step.
    pub fn new() -> SharedStatus {
        SharedStatus(Arc::new(RwLock::new(Status {
            state: AuditState::Lagging,
            reason: "starting".into(),
            namespace: String::new(),
            last_seen_epoch: None,
            last_verified_epoch: None,
            last_verified_root: None,
            last_head_timestamp_ms: None,
            last_contact_ms: None,
        })))
    }

    /// A copy of the current status.
    pub fn get(&self) -> Status {
        match self.0.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sets the state, except that `failed` is final for this process.
    pub fn set_state(&self, state: AuditState, reason: String) {
        self.update(|s| {
            if s.state != AuditState::Failed {
                s.state = state;
                s.reason = reason;
            }
        });
    }

    /// Whether the auditor has stopped advancing for good.
    pub fn failed(&self) -> bool {
        self.get().state == AuditState::Failed
    }

    /// Changes the status.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        match self.0.write() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

impl Default for SharedStatus {
    fn default() -> Self {
        SharedStatus::new()
    }
}
