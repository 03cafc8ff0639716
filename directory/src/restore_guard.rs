//! Refusing to fork after a restore. A data directory restored from an older backup
//! would publish a second, different head for an epoch it already signed: a fork that
//! every client and auditor would (rightly) treat as an attack. Before publishing, the
//! directory asks the auditors that co-sign it (`serve --auditor URL=KEY`) for the
//! newest head they verified, and refuses to start if that is ahead of its own data or
//! disagrees with the head it stored for that epoch.
//!
//! Only what an auditor signed counts: its co-signature is checked with the key the
//! operator pinned, and must be recent (`auditor_max_age`), since an old one may be a
//! replay from before this data directory fell behind. A `404` ("verified nothing
//! yet") is refused unless the operator says the auditor is new
//! (`--allow-fresh-auditor`): anyone on the path can answer `404`.

use crate::publisher::{ServeState, stored_head};
use kt_client::auditor::CoSignedHead;
use kt_client::head::SignedHead;
use kt_client::http::{DirectoryClient, HttpError};
use std::time::Duration;

/// Why the directory must not publish.
#[derive(Debug, thiserror::Error)]
pub enum RestoreRefused {
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
    /// An `--auditor` without its pinned key.
    #[error("--auditor {0:?}: give it as URL=KEY, the auditor's co-signing key (hex) pinned out of band")]
    Unpinned(String),
    /// The answer is not co-signed by the pinned key (or not for the head it carries).
    #[error("the auditor at {auditor} answered with a co-signature that does not verify with its pinned key: {reason}")]
    BadCoSignature {
        /// The auditor.
        auditor: String,
        reason: String,
    },
    /// The auditor's newest co-signature is older than allowed.
    #[error(
        "the auditor at {auditor} last co-signed {age_secs} s ago, more than the allowed {max_secs} s: it may be a \
         replay from before this data directory fell behind. If the directory has been down that long, start with \
         --auditor-max-age {age_secs}"
    )]
    Stale {
        /// The auditor.
        auditor: String,
        /// Age of its newest co-signature.
        age_secs: u64,
        /// The limit.
        max_secs: u64,
    },
    /// The auditor answered that it verified nothing, and the operator did not say it
    /// is new.
    #[error(
        "the auditor at {0} answers that it has verified nothing yet. Anyone on the path can send that answer; \
         if the auditor is new, start with --allow-fresh-auditor"
    )]
    NothingVerified(String),
    /// The auditor could not be asked: without its answer, starting could fork.
    #[error("cannot confirm with the auditor at {auditor} that this data directory is current: {reason}")]
    Unreachable {
        /// The auditor.
        auditor: String,
        reason: String,
    },
    /// Our own storage failed.
    #[error("reading this directory's stored heads: {0}")]
    Storage(String),
}

/// How the start-up check runs.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Each auditor's URL and pinned co-signing key.
    pub auditors: Vec<(String, ed25519_dalek::VerifyingKey)>,
    /// Accept a `404` (an auditor that has verified nothing yet).
    pub allow_fresh: bool,
    /// Oldest a co-signature may be.
    pub max_age: Duration,
    /// Timeout of each request.
    pub timeout: Duration,
    /// Roots trusted besides the system's (a private CA's).
    pub roots: Vec<reqwest::Certificate>,
}

/// Parses `URL=KEY` specs (`KEY`: 64 hex digits).
pub fn parse_auditors(specs: &[String]) -> Result<Vec<(String, ed25519_dalek::VerifyingKey)>, RestoreRefused> {
    specs
        .iter()
        .map(|spec| {
            let (url, key) = spec
                .rsplit_once('=')
                .ok_or_else(|| RestoreRefused::Unpinned(spec.clone()))?;
            let bytes: [u8; 32] =
                kt_client::head::hex_array(key, "auditor key").map_err(|_| RestoreRefused::Unpinned(spec.clone()))?;
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| RestoreRefused::Unpinned(spec.clone()))?;
            Ok((url.to_owned(), key))
        })
        .collect()
}

/// Checks this directory's newest head against each auditor's newest co-signed head.
pub async fn check(config: &GuardConfig, shared: &ServeState) -> Result<(), RestoreRefused> {
    let ours = shared.views.borrow().head.clone();
    for (url, key) in &config.auditors {
        let unreachable = |reason: String| RestoreRefused::Unreachable {
            auditor: url.clone(),
            reason,
        };
        let client =
            DirectoryClient::with_roots(url, config.timeout, &config.roots).map_err(|e| unreachable(e.to_string()))?;
        let theirs: CoSignedHead = match client.get_json("/v1/heads/latest").await {
            Ok(h) => h,
            Err(HttpError::NotFound(_)) if config.allow_fresh => {
                tracing::warn!(auditor = %url, "the auditor has verified nothing yet; starting as allowed (--allow-fresh-auditor)");
                continue;
            }
            Err(HttpError::NotFound(_)) => return Err(RestoreRefused::NothingVerified(url.clone())),
            Err(e) => return Err(unreachable(e.to_string())),
        };
        let head = &theirs.directory_head;
        if head.verify(&shared.signing_key).is_err() {
            return Err(RestoreRefused::Foreign(url.clone()));
        }
        theirs
            .cosignature
            .verify_for(key, head)
            .map_err(|e| RestoreRefused::BadCoSignature {
                auditor: url.clone(),
                reason: e.to_string(),
            })?;
        let age_ms = kt_client::head::unix_ms().saturating_sub(theirs.cosignature.attestation.timestamp_ms);
        let max_ms = u64::try_from(config.max_age.as_millis()).unwrap_or(u64::MAX);
        if age_ms > max_ms {
            return Err(RestoreRefused::Stale {
                auditor: url.clone(),
                age_secs: age_ms / 1000,
                max_secs: max_ms / 1000,
            });
        }
        compare(url, head, &ours, shared).await?;
        tracing::info!(auditor = %url, their_epoch = head.head.epoch, our_epoch = ours.head.epoch, "auditor confirms this data directory is current");
    }
    Ok(())
}

async fn compare(url: &str, theirs: &SignedHead, ours: &SignedHead, shared: &ServeState) -> Result<(), RestoreRefused> {
    let (t, o) = (&theirs.head, &ours.head);
    if t.epoch > o.epoch {
        return Err(RestoreRefused::Behind {
            auditor: url.to_owned(),
            theirs: t.epoch,
            ours: o.epoch,
        });
    }
    let stored = stored_head(&shared.storage, t.epoch)
        .await
        .map_err(|e| RestoreRefused::Storage(e.to_string()))?;
    if stored.head.root != t.root {
        return Err(RestoreRefused::Diverged {
            auditor: url.to_owned(),
            epoch: t.epoch,
            theirs: hex::encode(t.root),
            ours: hex::encode(stored.head.root),
        });
    }
    Ok(())
}
