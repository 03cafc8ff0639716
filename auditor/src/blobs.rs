//! Auditing a folder of WhatsApp-style audit blobs: files at `{epoch}/{hex previous
//! root}/{hex current root}` holding a protobuf `SingleAppendOnlyProof`, named by the
//! epoch the proof ends at.

use akd::local_auditing::{AuditBlob, AuditBlobName};
use kt_client::KtConfig;
use std::path::{Path, PathBuf};

/// Why a blob folder failed its audit. The first failure stops the audit.
#[derive(Debug, thiserror::Error)]
pub enum BlobAuditError {
    /// The folder could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// What could not be read.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file's path is not `{epoch}/{prev}/{cur}`.
    #[error("{path} is not named EPOCH/PREVIOUS_ROOT/CURRENT_ROOT: {reason}")]
    Name {
        /// The offending file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Epochs are missing between two blobs.
    #[error("gap: no blob for epoch {missing} (next blob is epoch {next})")]
    Gap {
        /// The first absent epoch.
        missing: u64,
        /// The epoch found instead.
        next: u64,
    },
    /// Two blobs claim the same epoch.
    #[error("two blobs for epoch {0}")]
    Duplicate(u64),
    /// A blob's previous root is not the root the blob before it ended at.
    #[error("broken chain at epoch {epoch}: previous root {claimed} but epoch {} ended at {expected}", epoch - 1)]
    Chain {
        /// The blob's epoch.
        epoch: u64,
        /// What the blob says the previous root was.
        claimed: String,
        /// What the earlier blob ended at.
        expected: String,
    },
    /// The blob's contents do not decode.
    #[error("epoch {epoch}: undecodable proof: {reason}")]
    Decode {
        /// The blob's epoch.
        epoch: u64,
        /// akd's reason.
        reason: String,
    },
    /// akd's append-only verification rejected the proof.
    #[error("epoch {epoch}: append-only proof does not verify: {reason}")]
    Verify {
        /// The blob's epoch.
        epoch: u64,
        /// akd's reason.
        reason: String,
    },
}

/// One verified blob.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The blob's name (end epoch, previous root, current root).
    pub name: AuditBlobName,
    /// Size of the proof in bytes.
    pub bytes: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobAuditError + '_ {
    move |source| BlobAuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lists `{epoch}/{prev}/{cur}` files under `root`, sorted by epoch.
pub fn list(root: &Path) -> Result<Vec<(AuditBlobName, PathBuf)>, BlobAuditError> {
    let mut out = Vec::new();
    for epoch_dir in std::fs::read_dir(root).map_err(io(root))? {
        let epoch_dir = epoch_dir.map_err(io(root))?.path();
        for prev_dir in std::fs::read_dir(&epoch_dir).map_err(io(&epoch_dir))? {
            let prev_dir = prev_dir.map_err(io(&epoch_dir))?.path();
            for file in std::fs::read_dir(&prev_dir).map_err(io(&prev_dir))? {
                let file = file.map_err(io(&prev_dir))?.path();
                let rel = file.strip_prefix(root).unwrap_or(&file);
                let name = rel.to_str().ok_or_else(|| BlobAuditError::Name {
                    path: file.clone(),
                    reason: "not UTF-8".into(),
                })?;
                let parsed = AuditBlobName::try_from(name).map_err(|e| BlobAuditError::Name {
                    path: file.clone(),
                    reason: format!("{e:?}"),
                })?;
                out.push((parsed, file));
            }
        }
    }
    out.sort_by_key(|(name, _)| name.epoch);
    Ok(out)
}

/// Verifies every blob under `root` in epoch order: consecutive epochs, each starting
/// at the root the previous one ended at, each proof accepted by akd's
/// `verify_consecutive_append_only`. Calls `each` after every verified blob.
pub async fn audit(root: &Path, mut each: impl FnMut(&Verified)) -> Result<Vec<Verified>, BlobAuditError> {
    let mut done: Vec<Verified> = Vec::new();
    for (name, path) in list(root)? {
        if let Some(last) = done.last() {
            if name.epoch == last.name.epoch {
                return Err(BlobAuditError::Duplicate(name.epoch));
            }
            if name.epoch != last.name.epoch + 1 {
                return Err(BlobAuditError::Gap {
                    missing: last.name.epoch + 1,
                    next: name.epoch,
                });
            }
            if name.previous_hash != last.name.current_hash {
                return Err(BlobAuditError::Chain {
                    epoch: name.epoch,
                    claimed: hex::encode(name.previous_hash),
                    expected: hex::encode(last.name.current_hash),
                });
            }
        }
        let data = std::fs::read(&path).map_err(io(&path))?;
        let bytes = data.len();
        let blob = AuditBlob { name, data };
        let (epoch, prev, cur, proof) = blob.decode().map_err(|e| BlobAuditError::Decode {
            epoch: name.epoch,
            reason: format!("{e:?}"),
        })?;
        if epoch == 0 {
            return Err(BlobAuditError::Name {
                path,
                reason: "epoch 0 has no append-only proof".into(),
            });
        }
        akd::auditor::verify_consecutive_append_only::<KtConfig>(&proof, prev, cur, epoch)
            .await
            .map_err(|e| BlobAuditError::Verify {
                epoch,
                reason: e.to_string(),
            })?;
        let verified = Verified { name, bytes };
        each(&verified);
        done.push(verified);
    }
    Ok(done)
}
