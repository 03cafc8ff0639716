//! Refusing to fork after a restore. A data directory restored from an older backup
//! would publish a second, different head for an epoch it already signed: a fork that
//! every client and auditor would (rightly) treat as an attack. Before publishing, the
//! directory asks the auditors that co-sign it (`serve --auditor URL`) for the newest
//! head they verified, and refuses to start if that is ahead of its own data or
//! disagrees with the head it stored for that epoch.

use crate::publisher::{Shared, stored_head};
use kt_client::auditor::CoSignedHead;
use kt_client::head::SignedHead;
use kt_client::http::{DirectoryClient, HttpError};
use std::time::Duration;

/// Why the directory must not publish.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// An auditor has verified a later epoch than this data directory holds.
    #[error(
        "the auditor at {auditor} has verified epoch {theirs}, but this data directory ends at epoch {ours}: \
         it was restored from an older backup (or copied). Publishing would sign a second, different head \
         for epoch {next}, a fork. Refusing to start; restore the newest data instead"
    , next = ours + 1)]
    Behind {
        /// The auditor.
        auditor: String,
        /// Its newest verified epoch.
        theirs: u64,
        /// Ours.
        ours: u64,
    },
    /// An auditor verified another root for an epoch this data directory also holds.
    #[error(
        "the auditor at {auditor} verified root {theirs} for epoch {epoch}, but this data directory holds root \
         {ours}: it is not the directory the auditor followed. Refusing to start"
    )]
    Diverged {
        /// The auditor.
        auditor: String,
        /// The epoch.
        epoch: u64,
        /// The auditor's root, hex.
        theirs: String,
        /// Ours, hex.
        ours: String,
    },
    /// The auditor's newest head is not signed by this directory's key.
    #[error("the auditor at {0} follows another directory (its head is not signed by this directory's key)")]
    Foreign(String),
    /// The auditor could not be asked: without its answer, starting could fork.
    #[error("cannot confirm with the auditor at {auditor} that this data directory is current: {reason}")]
    Unreachable {
        /// The auditor.
        auditor: String,
        /// Why.
        reason: String,
    },
    /// Our own storage failed.
    #[error("reading this directory's stored heads: {0}")]
    Storage(String),
}

/// Checks this directory's newest head against each auditor's newest verified head.
pub async fn check(auditors: &[String], shared: &Shared, timeout: Duration) -> Result<(), WitnessError> {
    let ours = shared.views.borrow().head.clone();
    for url in auditors {
        let unreachable = |reason: String| WitnessError::Unreachable {
            auditor: url.clone(),
            reason,
        };
        let client = DirectoryClient::new(url, timeout).map_err(|e| unreachable(e.to_string()))?;
        let theirs: CoSignedHead = match client.get_json("/v1/heads/latest").await {
            Ok(h) => h,
            // The auditor has verified nothing yet: nothing to contradict.
            Err(HttpError::NotFound(_)) => continue,
            Err(e) => return Err(unreachable(e.to_string())),
        };
        let head = theirs.directory_head;
        if head.verify(&shared.signing_key).is_err() {
            return Err(WitnessError::Foreign(url.clone()));
        }
        compare(url, &head, &ours, shared).await?;
        tracing::info!(auditor = %url, their_epoch = head.head.epoch, our_epoch = ours.head.epoch, "auditor confirms this data directory is current");
    }
    Ok(())
}

async fn compare(url: &str, theirs: &SignedHead, ours: &SignedHead, shared: &Shared) -> Result<(), WitnessError> {
    let (t, o) = (&theirs.head, &ours.head);
    if t.epoch > o.epoch {
        return Err(WitnessError::Behind {
            auditor: url.to_owned(),
            theirs: t.epoch,
            ours: o.epoch,
        });
    }
    let stored = stored_head(&shared.storage, t.epoch)
        .await
        .map_err(|e| WitnessError::Storage(e.to_string()))?;
    if stored.head.root != t.root {
        return Err(WitnessError::Diverged {
            auditor: url.to_owned(),
            epoch: t.epoch,
            theirs: hex::encode(t.root),
            ours: hex::encode(stored.head.root),
        });
    }
    Ok(())
}
