//! The TOML config files of the binaries (`kt`, `kt-directory serve`,
//! `kt-auditor serve`): read and parsed into each one's own settings type.

use serde::de::DeserializeOwned;
use std::path::Path;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Unreadable file.
    #[error("config file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for the settings type (unknown keys included, where it denies them).
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        #[source]
        source: toml::de::Error,
    },
}

/// Why a binary's settings are unusable: the file, or a value out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// A value is missing or out of range; the message says which.
    #[error("{0}")]
    Invalid(String),
}

/// Reads and parses a TOML config file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigFileError::Parse {
        path: path.display().to_string(),
        source,
    })
}
