//! Signed heads: signing, the stored head of an epoch, and the start-up check that the
//! stored heads, akd's epoch and this data directory's keys agree.

use super::{Inconsistency, PublishError};
use crate::storage::{Cf, Store, Write};
use ed25519_dalek::SigningKey;
use kt_client::head::{Head, HeadError, SignedHead};

/// Key in [`Cf::Meta`] of the freshest signature of the latest epoch's head (a quiet
/// directory re-signs it with a new time instead of publishing an empty epoch).
pub(crate) const LATEST_HEAD_KEY: &[u8] = b"latest_head";

/// Signs heads for one directory.
#[derive(Debug, Clone)]
pub struct HeadSigner {
    /// The directory's ed25519 key.
    key: SigningKey,
    /// The namespace every head carries.
    pub(super) namespace: String,
    /// blake3 of the VRF public key, carried by every head.
    vrf_key_hash: [u8; 32],
}

impl HeadSigner {
    /// A signer for heads of `namespace` whose VRF key hashes to `vrf_key_hash`.
    pub fn new(key: SigningKey, namespace: String, vrf_key_hash: [u8; 32]) -> HeadSigner {
        HeadSigner {
            key,
            namespace,
            vrf_key_hash,
        }
    }

    /// Signs `epoch -> root` (following `previous_root`) at `timestamp_ms`.
    pub fn sign(
        &self,
        epoch: u64,
        root: [u8; 32],
        previous_root: [u8; 32],
        timestamp_ms: u64,
    ) -> Result<SignedHead, HeadError> {
        Head {
            namespace: self.namespace.clone(),
            epoch,
            root,
            previous_root,
            vrf_key_hash: self.vrf_key_hash,
            timestamp_ms,
        }
        .sign(&self.key)
    }

    /// The log-signed checkpoint of the epoch log at `size` leaves with `root`: an
    /// Ed25519 note signature by the head key under the origin's name. No head message
    /// is ever a note text (a head holds the byte 0x01 after its 16-byte context, and a
    /// note holds no control character but newline), so the one key serves both.
    pub fn sign_checkpoint(
        &self,
        origin: &str,
        size: u64,
        root: [u8; 32],
    ) -> Result<kt_client::tlog::note::Note, kt_client::tlog::note::NoteError> {
        let text = kt_client::tlog::checkpoint::Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: vec![],
        }
        .text();
        let signature = kt_client::tlog::note::sign_ed25519(origin, &self.key, &text)?;
        Ok(kt_client::tlog::note::Note {
            text,
            signatures: vec![signature],
        })
    }

    /// The public half of the signing key.
    pub fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }
}

/// Milliseconds since the Unix epoch, never earlier than `not_before`.
pub(super) fn now_ms(not_before: u64) -> u64 {
    kt_client::head::unix_ms().max(not_before)
}

/// The key of `epoch` in the per-epoch column families (big-endian, so key order is
/// epoch order).
pub(super) fn epoch_key(epoch: u64) -> Vec<u8> {
    epoch.to_be_bytes().to_vec()
}

/// The head stored for `epoch` (signature not checked: it is our own record).
pub(crate) async fn stored_head(storage: &Store, epoch: u64) -> Result<SignedHead, PublishError> {
    let bytes = storage
        .get_raw(Cf::Heads, epoch_key(epoch))
        .await?
        .ok_or(Inconsistency::NoHead { epoch })?;
    Ok(SignedHead::from_bytes(&bytes)?)
}

/// The latest head, checked against akd's epoch and root; signs epoch 0 if the
/// directory is new.
pub(super) async fn recover_head(
    storage: &Store,
    signer: &HeadSigner,
    akd_epoch: u64,
    akd_root: [u8; 32],
) -> Result<SignedHead, PublishError> {
    let Some((key, bytes)) = storage.last(Cf::Heads).await? else {
        if akd_epoch != 0 {
            return Err(Inconsistency::NoHeads { akd_epoch }.into());
        }
        let head = signer.sign(0, akd_root, [0; 32], now_ms(0))?;
        let bytes = head.to_bytes()?;
        storage
            .write(vec![
                Write::Put(Cf::Heads, epoch_key(0), bytes.clone()),
                Write::Put(Cf::Meta, LATEST_HEAD_KEY.to_vec(), bytes),
            ])
            .await?;
        tracing::info!(root = %hex::encode(akd_root), "signed the head of epoch 0");
        return Ok(head);
    };
    let stored = SignedHead::from_bytes(&bytes).map_err(|source| Inconsistency::HeadUndecodable {
        key_hex: hex::encode(&key),
        source,
    })?;
    let h = stored
        .verify(&signer.public_key())
        .map_err(|_| Inconsistency::HeadKey {
            epoch: stored.head.epoch,
        })?;
    if h.epoch != akd_epoch || h.root != akd_root {
        return Err(Inconsistency::HeadVsTree {
            head_epoch: h.epoch,
            head_root: hex::encode(h.root),
            akd_epoch,
            akd_root: hex::encode(akd_root),
        }
        .into());
    }
    if h.namespace != signer.namespace || h.vrf_key_hash != signer.vrf_key_hash {
        return Err(Inconsistency::HeadIdentity.into());
    }
    // Prefer the freshest re-signature of the same epoch, if there is one.
    if let Some(latest) = storage.get_raw(Cf::Meta, LATEST_HEAD_KEY.to_vec()).await?
        && let Ok(latest) = SignedHead::from_bytes(&latest)
        && latest.head.epoch == akd_epoch
        && latest.head.root == akd_root
        && latest.verify(&signer.public_key()).is_ok()
    {
        return Ok(latest);
    }
    Ok(stored)
}
