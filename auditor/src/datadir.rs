//! The auditor's data directory:
//!
//! ```text
//! DIR/auditor.key   ed25519 seed (32 bytes) the auditor co-signs with, owner-only
//! DIR/db/           RocksDB (pins, verified epochs and their proofs, evidence)
//! ```

use ed25519_dalek::SigningKey;
use kt_client::keyfile::{KeyFileError, create_private_file, read_secret};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The key file.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The directory itself.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `serve` before `init`.
    #[error("{0} has no auditor.key; run `kt-auditor init --data-dir {0}` first")]
    NotInitialized(String),
    /// `init` twice.
    #[error("{0} already holds an auditor key; refusing to overwrite it")]
    AlreadyInitialized(String),
}

/// Where things live.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory.
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The RocksDB directory.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    fn key_path(&self) -> PathBuf {
        self.root.join("auditor.key")
    }

    /// Creates the directory (0700) and a fresh key; refuses to replace one.
    pub fn init(&self) -> Result<SigningKey, DataDirError> {
        let io = |source| DataDirError::Io {
            path: self.root.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.root).map_err(io)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        if self.key_path().exists() {
            return Err(DataDirError::AlreadyInitialized(self.root.display().to_string()));
        }
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        create_private_file(&self.key_path(), key.as_bytes())?;
        Ok(key)
    }

    /// Loads the key.
    pub fn load(&self) -> Result<SigningKey, DataDirError> {
        if !self.key_path().exists() {
            return Err(DataDirError::NotInitialized(self.root.display().to_string()));
        }
        Ok(SigningKey::from_bytes(&read_secret::<32>(&self.key_path())?))
    }
}
