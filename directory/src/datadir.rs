//! The data directory: what `kt-directory init` creates and `serve` loads.
//!
//! ```text
//! DIR/manifest.json   {"format": 1, "namespace": "..."}: refused if the format is unknown
//! DIR/signing.key     ed25519 seed (32 bytes), owner-only
//! DIR/vrf.key         VRF secret (32 bytes), owner-only; can never be rotated
//! DIR/operator.token  bearer token of the operator endpoints (hex), owner-only
//! DIR/db/             RocksDB
//! ```

use crate::vrf::VrfSecret;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The data-directory format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the operator token, in random bytes (hex in the file).
const TOKEN_BYTES: usize = 32;

/// Errors reading or creating a data directory or one of its files.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A key file is unreadable or the wrong length.
    #[error(transparent)]
    KeyFile(#[from] kt_client::keyfile::KeyFileError),
    /// No manifest: `init` was never run here.
    #[error("{0} is not an initialized data directory (no manifest.json); run `kt-directory init` first")]
    NotInitialized(String),
    /// `init` found existing keys.
    #[error("{0} already holds keys; refusing to overwrite them")]
    AlreadyInitialized(String),
    /// The manifest is unreadable.
    #[error("manifest {path} is invalid: {reason}")]
    Manifest {
        /// The file.
        path: String,
        reason: String,
    },
    /// The data directory was written by a format this build does not know.
    #[error("data directory {path} has format {found}; this build reads format {FORMAT_VERSION}")]
    Format {
        /// The directory.
        path: String,
        /// What the manifest says.
        found: u32,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub use kt_client::keyfile::{create_private_file, read_secret};

/// What `manifest.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format: u32,
    /// The directory's namespace, signed into every head.
    pub namespace: String,
}

/// The keys and settings a running directory needs, loaded from its data directory.
#[derive(Debug)]
pub struct Keys {
    /// The manifest.
    pub manifest: Manifest,
    /// Signs epoch heads.
    pub signing: SigningKey,
    /// akd's VRF secret.
    pub vrf: VrfSecret,
    /// blake3 of the operator token: requests are compared by hash, in constant time.
    pub token_hash: blake3::Hash,
}

/// Where things live in a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The RocksDB database.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    /// The VRF secret key file (owner-only).
    pub fn vrf_key(&self) -> PathBuf {
        self.root.join("vrf.key")
    }

    /// The ed25519 head-signing key (owner-only).
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("signing.key")
    }

    /// The operator bearer token (owner-only).
    pub fn token(&self) -> PathBuf {
        self.root.join("operator.token")
    }

    /// The manifest.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    /// Creates a new data directory: keys, token and manifest (the manifest last, so
    /// an interrupted `init` is never mistaken for a complete one). Refuses to touch a
    /// directory that already has any of them.
    pub fn init(&self, namespace: &str) -> Result<Keys, DataDirError> {
        if namespace.is_empty() || namespace.len() > kt_client::head::MAX_NAMESPACE_LEN {
            return Err(DataDirError::Manifest {
                path: self.manifest().display().to_string(),
                reason: "namespace must be 1 to 255 bytes".into(),
            });
        }
        for path in [
            self.manifest(),
            self.signing_key(),
            self.vrf_key(),
            self.token(),
            self.db(),
        ] {
            if path.exists() {
                return Err(DataDirError::AlreadyInitialized(path.display().to_string()));
            }
        }
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700)).map_err(io(&self.root))?;
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        create_private_file(&self.signing_key(), signing.as_bytes())?;
        let vrf = VrfSecret::generate();
        vrf.create_file(&self.vrf_key())?;
        let mut token = [0u8; TOKEN_BYTES];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut token);
        let token_hex = hex::encode(token);
        create_private_file(&self.token(), token_hex.as_bytes())?;
        let manifest = Manifest {
            format: FORMAT_VERSION,
            namespace: namespace.to_owned(),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| DataDirError::Manifest {
            path: self.manifest().display().to_string(),
            reason: e.to_string(),
        })?;
        create_private_file(&self.manifest(), &json)?;
        Ok(Keys {
            manifest,
            signing,
            vrf,
            token_hash: blake3::hash(token_hex.as_bytes()),
        })
    }

    /// Reads the manifest, refusing unknown formats.
    pub fn read_manifest(&self) -> Result<Manifest, DataDirError> {
        let path = self.manifest();
        let bytes = match std::fs::read(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(DataDirError::NotInitialized(self.root.display().to_string()));
            }
            other => other.map_err(io(&path))?,
        };
        // Check the format before the rest, so a newer manifest with new fields still
        // gets the clear "unknown format" message.
        let format = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("format").and_then(serde_json::Value::as_u64));
        match format {
            Some(f) if f == u64::from(FORMAT_VERSION) => {}
            Some(f) => {
                return Err(DataDirError::Format {
                    path: self.root.display().to_string(),
                    found: u32::try_from(f).unwrap_or(u32::MAX),
                });
            }
            None => {
                return Err(DataDirError::Manifest {
                    path: path.display().to_string(),
                    reason: "no numeric \"format\" field".into(),
                });
            }
        }
        serde_json::from_slice(&bytes).map_err(|e| DataDirError::Manifest {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Loads everything `serve` needs.
    pub fn load(&self) -> Result<Keys, DataDirError> {
        let manifest = self.read_manifest()?;
        let signing = SigningKey::from_bytes(&read_secret::<32>(&self.signing_key())?);
        let vrf = VrfSecret::load(&self.vrf_key())?;
        let token = std::fs::read(self.token()).map_err(io(&self.token()))?;
        let token = token.trim_ascii();
        if token.len() < 32 {
            return Err(kt_client::keyfile::KeyFileError::Length {
                path: self.token().display().to_string(),
                len: token.len(),
                expected: 2 * TOKEN_BYTES,
            }
            .into());
        }
        Ok(Keys {
            manifest,
            signing,
            vrf,
            token_hash: blake3::hash(token),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_gives_the_same_keys_and_private_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path().join("d"));
        let made = dir.init("ns").expect("init");
        let loaded = dir.load().expect("load");
        assert_eq!(made.signing.to_bytes(), loaded.signing.to_bytes());
        assert_eq!(made.token_hash, loaded.token_hash);
        assert_eq!(loaded.manifest.namespace, "ns");
        let mode = std::fs::metadata(dir.root()).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the data directory itself is private");
        for path in [dir.signing_key(), dir.vrf_key(), dir.token(), dir.manifest()] {
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        assert!(matches!(dir.init("ns"), Err(DataDirError::AlreadyInitialized(_))));
        assert_eq!(
            dir.load().expect("still loads").signing.to_bytes(),
            made.signing.to_bytes()
        );
    }

    #[test]
    fn unknown_format_and_missing_manifest_are_clear_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path());
        assert!(matches!(dir.load(), Err(DataDirError::NotInitialized(_))));
        std::fs::write(dir.manifest(), br#"{"format": 9, "namespace": "x", "new": 1}"#).expect("write");
        let err = dir.load().expect_err("format 9");
        assert!(matches!(err, DataDirError::Format { found: 9, .. }), "{err}");
        std::fs::write(dir.manifest(), b"not json").expect("write");
        assert!(matches!(dir.load(), Err(DataDirError::Manifest { .. })));
    }
}
