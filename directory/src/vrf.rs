//! The directory's VRF secret, held in memory.
//!
//! akd calls `VRFKeyStorage::retrieve` several times per lookup, so the key is read
//! from disk once and kept. It also derives the commitment key: it can never be rotated,
//! and losing it means starting a new directory.

use akd::ecvrf::{Proof, VRFExpandedPrivateKey, VRFKeyStorage, VRFPrivateKey, VRFPublicKey, VrfError};
use akd::{AkdLabel, Configuration, NodeLabel, VersionFreshness};
use async_trait::async_trait;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

/// Length of a VRF secret key.
pub const VRF_SECRET_LEN: usize = 32;

/// A VRF secret key in memory, with what akd derives from it on every call. Cloning
/// shares it.
#[derive(Clone)]
pub struct VrfSecret(Arc<Keys>);

/// The secret and its derived keys, computed once.
struct Keys {
    /// The 32 secret bytes (what the key file holds).
    secret: [u8; VRF_SECRET_LEN],
    /// The expanded secret (SHA-512 of the secret): akd's defaults recompute it for
    /// each VRF evaluation.
    expanded: VRFExpandedPrivateKey,
    /// The public key: akd's defaults recompute it (a base-point multiplication, a
    /// sixth of a proof's cost) for each VRF evaluation and proof.
    public: VRFPublicKey,
}

impl std::fmt::Debug for VrfSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VrfSecret(..)")
    }
}

/// Errors loading or creating a key file.
pub use crate::datadir::DataDirError as KeyFileError;

impl VrfSecret {
    /// A key from its 32 secret bytes.
    pub fn from_bytes(bytes: [u8; VRF_SECRET_LEN]) -> Self {
        let private = VRFPrivateKey::try_from(&bytes[..]).expect("any 32 bytes are a VRF secret");
        VrfSecret(Arc::new(Keys {
            secret: bytes,
            expanded: VRFExpandedPrivateKey::from(&private),
            public: VRFPublicKey::from(&private),
        }))
    }

    /// A fresh random key (from the OS's CSPRNG).
    pub fn generate() -> Self {
        let mut bytes = [0u8; VRF_SECRET_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Self::from_bytes(bytes)
    }

    /// The public key's 32 bytes.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.public.as_bytes());
        out
    }

    /// `VRF(label, freshness, version)` as a tree-node label: exactly akd's
    /// `get_node_label`, synchronously (the prepare stage and the writer call it on
    /// threads of their own).
    pub fn node_label<TC: Configuration>(
        &self,
        label: &AkdLabel,
        freshness: VersionFreshness,
        version: u64,
    ) -> NodeLabel {
        Self::get_node_label_with_expanded_key::<TC>(&self.0.expanded, &self.0.public, label, freshness, version)
    }

    /// The key of akd's value commitments, derived from the VRF secret as akd's
    /// `Directory` derives it (`TC::hash(secret)`).
    pub fn commitment_key<TC: Configuration>(&self) -> akd::Digest {
        TC::hash(&self.0.secret)
    }

    /// Reads a key file written by [`VrfSecret::create_file`].
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        Ok(Self::from_bytes(crate::datadir::read_secret(path)?))
    }

    /// Writes this key to a new file readable by the owner only; never overwrites.
    pub fn create_file(&self, path: &Path) -> Result<(), KeyFileError> {
        Ok(crate::datadir::create_private_file(path, &self.0.secret[..])?)
    }

    /// Loads the key at `path`, or creates a random one there if the file is absent.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyFileError> {
        match Self::load(path) {
            Err(KeyFileError::KeyFile(kt_client::keyfile::KeyFileError::Io { source, .. }))
                if source.kind() == ErrorKind::NotFound =>
            {
                let key = Self::generate();
                key.create_file(path)?;
                Ok(key)
            }
            other => other,
        }
    }
}

/// akd's default methods rebuild the private, expanded and public keys from
/// `retrieve()` on every call (several per lookup); these overrides compute exactly
/// what the defaults do (`VRFPrivateKey::prove` is `expanded.prove(&public, ..)`) with
/// the keys derived once. The test below holds them to the defaults.
#[async_trait]
impl VRFKeyStorage for VrfSecret {
    async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
        Ok(self.0.secret.to_vec())
    }

    async fn get_vrf_public_key(&self) -> Result<VRFPublicKey, VrfError> {
        Ok(self.0.public.clone())
    }

    async fn get_node_label<TC: Configuration>(
        &self,
        label: &AkdLabel,
        freshness: VersionFreshness,
        version: u64,
    ) -> Result<NodeLabel, VrfError> {
        Ok(self.node_label::<TC>(label, freshness, version))
    }

    async fn get_label_proof<TC: Configuration>(
        &self,
        label: &AkdLabel,
        freshness: VersionFreshness,
        version: u64,
    ) -> Result<Proof, VrfError> {
        let alpha = TC::get_hash_from_label_input(label, freshness, version);
        Ok(self.0.expanded.prove(&self.0.public, &alpha))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KtConfig;

    /// akd's default trait methods, run on the bare secret: the reference.
    #[derive(Clone)]
    struct Reference([u8; VRF_SECRET_LEN]);

    #[async_trait]
    impl VRFKeyStorage for Reference {
        async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
            Ok(self.0.to_vec())
        }
    }

    #[tokio::test]
    async fn cached_keys_give_what_akds_defaults_give() {
        for seed in [[0x42; 32], [7; 32], [0xff; 32]] {
            let ours = VrfSecret::from_bytes(seed);
            let reference = Reference(seed);
            assert_eq!(
                ours.get_vrf_public_key().await.expect("pk").as_bytes(),
                reference.get_vrf_public_key().await.expect("pk").as_bytes()
            );
            for (label, freshness, version) in [
                ("alice", VersionFreshness::Fresh, 1),
                ("alice", VersionFreshness::Stale, 1),
                ("bob", VersionFreshness::Fresh, 9),
            ] {
                let label = AkdLabel::from(label);
                assert_eq!(
                    ours.get_node_label::<KtConfig>(&label, freshness, version)
                        .await
                        .expect("label"),
                    reference
                        .get_node_label::<KtConfig>(&label, freshness, version)
                        .await
                        .expect("label")
                );
                let (a, b) = (
                    ours.get_label_proof::<KtConfig>(&label, freshness, version)
                        .await
                        .expect("proof"),
                    reference
                        .get_label_proof::<KtConfig>(&label, freshness, version)
                        .await
                        .expect("proof"),
                );
                assert_eq!(a.to_bytes(), b.to_bytes());
            }
        }
    }
    /// The commitment key is what akd's `Directory` derives: the value commitments of
    /// a published epoch verify in a lookup proof only with it, so the differential
    /// suite checks it end to end; here, the derivation itself.
    #[test]
    fn commitment_key_is_the_hash_of_the_secret() {
        let key = VrfSecret::from_bytes([9; 32]);
        assert_eq!(key.commitment_key::<KtConfig>(), KtConfig::hash(&[9; 32]));
        assert_eq!(&key.public_key_bytes()[..], key.0.public.as_bytes());
    }

    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_roundtrip_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vrf.key");
        let key = VrfSecret::load_or_create(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(VrfSecret::load(&path).expect("load").0.secret, key.0.secret);
        assert!(VrfSecret::generate().create_file(&path).is_err(), "must not overwrite");
        std::fs::write(&path, b"short").expect("write");
        assert!(matches!(
            VrfSecret::load(&path),
            Err(KeyFileError::KeyFile(kt_client::keyfile::KeyFileError::Length {
                len: 5,
                ..
            }))
        ));
    }
}
