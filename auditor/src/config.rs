//! `kt-auditor serve` settings: flags win over `KT_AUDITOR_*` environment variables
//! (both via clap), which win over the TOML config file, which wins over defaults.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The config file (TOML). Every key is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The directory's base URL.
    pub directory: Option<String>,
    /// The directory's signing key, hex.
    pub directory_key: Option<String>,
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// This auditor's base URL as others reach it.
    pub public_url: Option<String>,
    /// Seconds between polls once caught up.
    pub poll_interval_secs: Option<u64>,
    /// Longest backoff after failures, seconds.
    pub max_backoff_secs: Option<u64>,
    /// Longest the directory may go without a fresh head, seconds.
    pub max_head_age_secs: Option<u64>,
    /// Largest proof fetched, MiB.
    pub max_proof_mib: Option<u64>,
    /// Timeout of one request to the directory, seconds.
    pub request_timeout_secs: Option<u64>,
    /// How far in the future a signed head may be dated before it is evidence, seconds.
    pub max_clock_skew_secs: Option<u64>,
    /// A PEM bundle of CA certificates to trust for the directory (a private CA),
    /// besides the system's and the Mozilla roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// HTTPS for this auditor's API: the certificate chain (PEM), with `tls_key`.
    pub tls_cert: Option<std::path::PathBuf>,
    /// HTTPS for this auditor's API: the private key (PEM), with `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
}

pub use kt_client::configfile::ConfigError;

impl FileConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        Ok(kt_client::configfile::load(path)?)
    }

    /// Keys given as flags or environment variables replace the file's.
    pub fn overlay(self, over: FileConfig) -> FileConfig {
        FileConfig {
            directory: over.directory.or(self.directory),
            directory_key: over.directory_key.or(self.directory_key),
            listen: over.listen.or(self.listen),
            public_url: over.public_url.or(self.public_url),
            poll_interval_secs: over.poll_interval_secs.or(self.poll_interval_secs),
            max_backoff_secs: over.max_backoff_secs.or(self.max_backoff_secs),
            max_head_age_secs: over.max_head_age_secs.or(self.max_head_age_secs),
            max_proof_mib: over.max_proof_mib.or(self.max_proof_mib),
            request_timeout_secs: over.request_timeout_secs.or(self.request_timeout_secs),
            max_clock_skew_secs: over.max_clock_skew_secs.or(self.max_clock_skew_secs),
            ca_file: over.ca_file.or(self.ca_file),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
        }
    }
}

/// Resolved settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The directory's base URL.
    pub directory: String,
    /// The pinned directory key.
    pub directory_key: ed25519_dalek::VerifyingKey,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Our base URL for others (`None`: `http://{bound address}`).
    pub public_url: Option<String>,
    /// Follow-loop pacing and limits.
    pub follow: crate::follower::FollowConfig,
    /// Timeout of one request to the directory.
    pub request_timeout: Duration,
    /// Extra roots trusted for the directory (`ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
    /// HTTPS for this auditor's API.
    pub tls: Option<kt_client::serve::TlsFiles>,
}

impl ServeConfig {
    /// Applies defaults and checks every value.
    pub fn resolve(c: FileConfig) -> Result<ServeConfig, ConfigError> {
        let directory = c
            .directory
            .ok_or_else(|| ConfigError::Invalid("--directory URL is required".into()))?;
        if !(directory.starts_with("http://") || directory.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "--directory must be an http:// or https:// URL, got {directory:?}"
            )));
        }
        let key_hex = c
            .directory_key
            .ok_or_else(|| ConfigError::Invalid("--directory-key HEX is required (pin it out of band)".into()))?;
        let key_bytes: [u8; 32] = kt_client::head::hex_array(key_hex.trim(), "directory key").map_err(|_| {
            ConfigError::Invalid("--directory-key must be 64 hex digits (an ed25519 public key)".into())
        })?;
        let directory_key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)
            .map_err(|_| ConfigError::Invalid("--directory-key is not a valid ed25519 public key".into()))?;
        let secs = |v: Option<u64>, default: u64, name: &str| -> Result<Duration, ConfigError> {
            match v.unwrap_or(default) {
                0 => Err(ConfigError::Invalid(format!("{name} must be at least 1 second"))),
                s => Ok(Duration::from_secs(s)),
            }
        };
        // Room for the largest public append-only proofs (WhatsApp epochs) and for our
        // own largest epochs (docs/auditor.md gives the sizes).
        let max_proof_mib = c.max_proof_mib.unwrap_or(512);
        if max_proof_mib == 0 {
            return Err(ConfigError::Invalid("max_proof_mib must be at least 1".into()));
        }
        Ok(ServeConfig {
            directory: directory.trim_end_matches('/').to_owned(),
            directory_key,
            listen: c.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8081))),
            public_url: c.public_url.map(|u| u.trim_end_matches('/').to_owned()),
            follow: crate::follower::FollowConfig {
                poll_interval: secs(c.poll_interval_secs, 5, "poll interval")?,
                max_backoff: secs(c.max_backoff_secs, 60, "max backoff")?,
                max_head_age: secs(c.max_head_age_secs, 600, "max head age")?,
                max_proof_bytes: max_proof_mib << 20,
                max_clock_skew: secs(c.max_clock_skew_secs, 300, "max clock skew")?,
            },
            request_timeout: secs(c.request_timeout_secs, 120, "request timeout")?,
            ca_file: c.ca_file,
            tls: kt_client::serve::TlsFiles::from_flags(c.tls_cert, c.tls_key).map_err(ConfigError::Invalid)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[4; 32])
                .verifying_key()
                .as_bytes(),
        )
    }

    #[test]
    fn flags_win_over_the_file_and_bad_values_are_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("auditor.toml");
        std::fs::write(
            &path,
            format!(
                "directory = \"http://file:1\"\ndirectory_key = \"{}\"\npoll_interval_secs = 9\n",
                key()
            ),
        )
        .expect("write");
        let file = FileConfig::load(&path).expect("load");
        let flags = FileConfig {
            directory: Some("http://flag:2/".into()),
            ..FileConfig::default()
        };
        let c = ServeConfig::resolve(file.clone().overlay(flags)).expect("resolve");
        assert_eq!(c.directory, "http://flag:2");
        assert_eq!(c.follow.poll_interval, Duration::from_secs(9));
        assert_eq!(c.follow.max_head_age, Duration::from_secs(600));

        let err = |c: FileConfig| ServeConfig::resolve(c).expect_err("invalid").to_string();
        assert!(err(FileConfig::default()).contains("--directory URL is required"));
        let no_key = FileConfig {
            directory_key: None,
            ..file.clone()
        };
        assert!(err(no_key).contains("--directory-key HEX is required"));
        let bad_key = FileConfig {
            directory_key: Some("zz".into()),
            ..file.clone()
        };
        assert!(err(bad_key).contains("64 hex digits"));
        let ftp = FileConfig {
            directory: Some("ftp://x".into()),
            ..file.clone()
        };
        assert!(err(ftp).contains("http:// or https://"));
        let zero = FileConfig {
            poll_interval_secs: Some(0),
            ..file
        };
        assert!(err(zero).contains("at least 1 second"));

        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nbogus = 1\n").expect("write");
        assert!(
            FileConfig::load(&path)
                .expect_err("unknown key")
                .to_string()
                .contains("bogus")
        );
    }
}
