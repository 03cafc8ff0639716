//! The directory's VRF secret, held in memory.
//!
//! akd calls `VRFKeyStorage::retrieve` several times per lookup, so the key is read
//! from disk once and kept. It also derives the commitment key: it can never be rotated,
//! and losing it means starting a new directory.

use akd::ecvrf::{VRFKeyStorage, VrfError};
use async_trait::async_trait;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

/// Length of a VRF secret key.
pub const VRF_SECRET_LEN: usize = 32;

/// A VRF secret key in memory. Cloning shares it.
#[derive(Clone)]
pub struct VrfSecret(Arc<[u8; VRF_SECRET_LEN]>);

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
        VrfSecret(Arc::new(bytes))
    }

    /// A fresh random key (from the OS's CSPRNG).
    pub fn generate() -> Self {
        let mut bytes = [0u8; VRF_SECRET_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Self::from_bytes(bytes)
    }

    /// Reads a key file written by [`VrfSecret::create_file`].
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        Ok(Self::from_bytes(crate::datadir::read_secret(path)?))
    }

    /// Writes this key to a new file readable by the owner only; never overwrites.
    pub fn create_file(&self, path: &Path) -> Result<(), KeyFileError> {
        Ok(crate::datadir::create_private_file(path, &self.0[..])?)
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

#[async_trait]
impl VRFKeyStorage for VrfSecret {
    async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
        Ok(self.0.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_roundtrip_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vrf.key");
        let key = VrfSecret::load_or_create(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(VrfSecret::load(&path).expect("load").0, key.0);
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
