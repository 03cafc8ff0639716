//! `kt-directory serve` settings: flags win over `KT_*` environment variables (both via
//! clap), which win over the config file, which wins over the defaults.

use crate::http::Limits;
use crate::storage::Backend;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config file (TOML). Every key is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Seconds between scheduled epochs.
    pub epoch_interval_secs: Option<u64>,
    /// Most updates taken into one epoch.
    pub max_updates_per_epoch: Option<usize>,
    /// Most updates in one `POST /v1/updates`.
    pub max_updates_per_request: Option<usize>,
    /// Longest label, bytes.
    pub max_label_bytes: Option<usize>,
    /// Longest value, bytes.
    pub max_value_bytes: Option<usize>,
    /// Most labels in one batch lookup.
    pub max_batch_lookup: Option<usize>,
    /// Largest request body, bytes.
    pub max_body_bytes: Option<usize>,
    /// Longest read or intake request, seconds.
    pub request_timeout_secs: Option<u64>,
    /// RocksDB block cache, MiB.
    pub block_cache_mib: Option<usize>,
    /// Threads a large batched RocksDB read is split across.
    pub read_threads: Option<usize>,
    /// Nice levels the publisher's threads run below the HTTP API's (0–19).
    pub publisher_nice: Option<i32>,
    /// The publisher's akd record cache bound, MiB (akd's estimate of its records).
    pub akd_cache_mib: Option<usize>,
    /// The publisher's akd record cache: entry lifetime, seconds.
    pub akd_cache_secs: Option<u64>,
    /// Auditors asked at start-up whether this data directory is current.
    pub auditors: Option<Vec<String>>,
    /// Witnesses of the epoch log, `URL=VKEY` each.
    pub witnesses: Option<Vec<String>>,
    /// Most requests handled at once (beyond: 503).
    pub max_concurrent_requests: Option<usize>,
    /// Most audit blob downloads at once.
    pub max_blob_readers: Option<usize>,
    /// Longest time one audit blob download may take, seconds.
    pub blob_send_timeout_secs: Option<u64>,
    /// Most audit blob downloads one client address holds at once.
    pub max_blob_readers_per_client: Option<usize>,
    /// Slowest pace of an audit blob download after its first ten seconds, KiB/s.
    pub blob_min_rate_kib: Option<u64>,
    /// Read requests per second per client address (absent or 0: unlimited).
    pub read_rate_per_sec: Option<u32>,
    /// Burst allowed above the read rate [default: the rate].
    pub read_burst: Option<u32>,
    /// File holding the token reads need (absent: reads are public).
    pub read_token_file: Option<PathBuf>,
    /// `"rocksdb"` (default: the data directory's `db/`) or `"mysql"` (needs
    /// `mysql_url`).
    pub storage: Option<String>,
    /// `mysql://user:password@host:port/database` for `storage = "mysql"`.
    pub mysql_url: Option<String>,
    /// A read replica's poll interval for new epochs, milliseconds.
    pub replica_poll_ms: Option<u64>,
    /// Verify every lookup and history proof before serving it.
    pub verify_proofs: Option<bool>,
    /// Start even if an auditor has verified nothing yet (a new auditor).
    pub allow_fresh_auditor: Option<bool>,
    /// Oldest an auditor's newest co-signature may be at start-up, seconds.
    pub auditor_max_age_secs: Option<u64>,
    /// A private CA (PEM) for the auditors' HTTPS.
    pub auditor_ca_file: Option<PathBuf>,
    /// HTTPS: the certificate chain (PEM), with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the private key (PEM), with `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

pub use kt_client::configfile::ConfigError;

impl FileConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        Ok(kt_client::configfile::load(path)?)
    }
}

/// Resolved settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Time between scheduled epochs.
    pub epoch_interval: Duration,
    /// Most updates per epoch.
    pub max_updates_per_epoch: usize,
    /// API input limits.
    pub limits: Limits,
    /// RocksDB block cache, bytes.
    pub block_cache_bytes: usize,
    /// Threads a large batched RocksDB read is split across (the publisher's
    /// preloads wait on the disk read by read otherwise).
    pub read_threads: usize,
    /// Nice levels the publisher's threads run below the HTTP API's: lookups go first
    /// when both want the CPU.
    pub publisher_nice: i32,
    /// Auditors whose newest verified head must not be ahead of (or disagree with)
    /// this data directory before it publishes (`restore_guard.rs`).
    pub auditors: Vec<String>,
    /// Witnesses each checkpoint is pushed to, `URL=VKEY` each (`witness.rs`).
    pub witnesses: Vec<String>,
    /// Read requests per second per client address (`None`: unlimited).
    pub read_rate_per_sec: Option<u32>,
    /// Burst above the read rate.
    pub read_burst: Option<u32>,
    /// File holding the read token (`None`: reads are public).
    pub read_token_file: Option<PathBuf>,
    /// Where the directory is stored.
    pub backend: Backend,
    /// The publisher's akd record cache.
    pub akd_cache: crate::AkdCache,
    /// How often a read replica looks for a new epoch.
    pub replica_poll: Duration,
    /// Verify every lookup and history proof before serving it.
    pub verify_proofs: bool,
    /// Start even if an auditor answers that it has verified nothing (`404`): only for
    /// an auditor that is new. Otherwise a `404`, which anyone on the path can forge,
    /// fails the start.
    pub allow_fresh_auditor: bool,
    /// Oldest an auditor's newest co-signature may be at start-up: an older one may be
    /// a replay of what the auditor said before this data directory fell behind.
    pub auditor_max_age: Duration,
    /// A private CA (PEM) trusted for the auditors' HTTPS, besides the system's roots.
    pub auditor_ca_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate and key (`None`: plain HTTP, for a TLS proxy
    /// in front or loopback).
    pub tls: Option<kt_client::serve::TlsFiles>,
}

/// Settings given as flags or environment variables (`None`: not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` / `KT_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `--epoch-interval` / `KT_EPOCH_INTERVAL`.
    pub epoch_interval_secs: Option<u64>,
    /// `--max-updates-per-epoch` / `KT_MAX_UPDATES_PER_EPOCH`.
    pub max_updates_per_epoch: Option<usize>,
    /// `--block-cache-mib` / `KT_BLOCK_CACHE_MIB`.
    pub block_cache_mib: Option<usize>,
    /// `--read-threads` / `KT_READ_THREADS`.
    pub read_threads: Option<usize>,
    /// `--publisher-nice` / `KT_PUBLISHER_NICE`.
    pub publisher_nice: Option<i32>,
    /// `--akd-cache-mib` / `KT_AKD_CACHE_MIB`.
    pub akd_cache_mib: Option<usize>,
    /// `--akd-cache-secs` / `KT_AKD_CACHE_SECS`.
    pub akd_cache_secs: Option<u64>,
    /// `--auditor` / `KT_AUDITORS` (empty: not given).
    pub auditors: Vec<String>,
    /// `--witness` / `KT_WITNESSES` (empty: not given).
    pub witnesses: Vec<String>,
    /// `--read-token-file` / `KT_READ_TOKEN_FILE`.
    pub read_token_file: Option<PathBuf>,
    /// `--storage` / `KT_STORAGE`.
    pub storage: Option<String>,
    /// `--mysql-url` / `KT_MYSQL_URL`.
    pub mysql_url: Option<String>,
    /// `--verify-proofs` (`true` when given).
    pub verify_proofs: Option<bool>,
    /// `--allow-fresh-auditor` (`true` when given).
    pub allow_fresh_auditor: Option<bool>,
    /// `--auditor-max-age` / `KT_AUDITOR_MAX_AGE`.
    pub auditor_max_age_secs: Option<u64>,
    /// `--auditor-ca-file` / `KT_AUDITOR_CA_FILE`.
    pub auditor_ca_file: Option<PathBuf>,
    /// `--tls-cert` / `KT_TLS_CERT`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` / `KT_TLS_KEY`.
    pub tls_key: Option<PathBuf>,
}

impl ServeConfig {
    /// Merges overrides over the file over the defaults, and checks ranges.
    pub fn resolve(over: Overrides, file: FileConfig) -> Result<ServeConfig, ConfigError> {
        let d = Limits::default();
        let interval = over.epoch_interval_secs.or(file.epoch_interval_secs).unwrap_or(120);
        if interval == 0 {
            return Err(ConfigError::Invalid("epoch interval must be at least 1 second".into()));
        }
        let max_per_epoch = over
            .max_updates_per_epoch
            .or(file.max_updates_per_epoch)
            .unwrap_or(200_000);
        if max_per_epoch == 0 {
            return Err(ConfigError::Invalid("max_updates_per_epoch must be at least 1".into()));
        }
        let limits = Limits {
            max_updates_per_request: file.max_updates_per_request.unwrap_or(d.max_updates_per_request),
            max_label_bytes: file.max_label_bytes.unwrap_or(d.max_label_bytes),
            max_value_bytes: file.max_value_bytes.unwrap_or(d.max_value_bytes),
            max_batch_lookup: file.max_batch_lookup.unwrap_or(d.max_batch_lookup),
            max_body_bytes: file.max_body_bytes.unwrap_or(d.max_body_bytes),
            request_timeout: file.request_timeout_secs.map_or(d.request_timeout, Duration::from_secs),
            max_concurrent_requests: file.max_concurrent_requests.unwrap_or(d.max_concurrent_requests),
            max_blob_readers: file.max_blob_readers.unwrap_or(d.max_blob_readers),
            blob_send_timeout: file
                .blob_send_timeout_secs
                .map_or(d.blob_send_timeout, Duration::from_secs),
            max_blob_readers_per_client: file
                .max_blob_readers_per_client
                .unwrap_or(d.max_blob_readers_per_client),
            blob_min_rate: file
                .blob_min_rate_kib
                .map_or(d.blob_min_rate, |k| k.saturating_mul(1024)),
        };
        if limits.max_blob_readers == 0
            || limits.blob_send_timeout.is_zero()
            || limits.max_blob_readers_per_client == 0
            || limits.blob_min_rate == 0
        {
            return Err(ConfigError::Invalid(
                "max_blob_readers, blob_send_timeout_secs, max_blob_readers_per_client and blob_min_rate_kib must be at least 1".into(),
            ));
        }
        if limits.max_concurrent_requests == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrent_requests must be at least 1".into(),
            ));
        }
        let backend = match (
            over.storage.or(file.storage).as_deref(),
            over.mysql_url.or(file.mysql_url),
        ) {
            (None | Some("rocksdb"), None) => Backend::Rocks,
            (Some("mysql"), Some(url)) => Backend::Mysql { url },
            (Some("mysql"), None) => {
                return Err(ConfigError::Invalid(
                    "storage = \"mysql\" needs mysql_url (or --mysql-url / KT_MYSQL_URL)".into(),
                ));
            }
            (None, Some(url)) => Backend::Mysql { url },
            (Some("rocksdb"), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "a MySQL URL is set but storage is \"rocksdb\"; drop one of them".into(),
                ));
            }
            (Some(other), _) => {
                return Err(ConfigError::Invalid(format!(
                    "storage must be \"rocksdb\" or \"mysql\", not {other:?}"
                )));
            }
        };
        let d = crate::AkdCache::publisher();
        let limit_mib = over.akd_cache_mib.or(file.akd_cache_mib);
        let akd_cache = crate::AkdCache {
            lifetime: over
                .akd_cache_secs
                .or(file.akd_cache_secs)
                .map_or(d.lifetime, Duration::from_secs),
            limit_bytes: limit_mib.map(|m| m << 20).or(d.limit_bytes),
            // A bound is enforced only at a clean: with one, clean as akd does by default.
            clean_every: if limit_mib.is_some() {
                crate::AkdCache::default().clean_every
            } else {
                d.clean_every
            },
        };
        if akd_cache.lifetime.is_zero() || akd_cache.limit_bytes == Some(0) {
            return Err(ConfigError::Invalid(
                "akd_cache_secs and akd_cache_mib must be at least 1 (akd reads one node at a time without a cache)"
                    .into(),
            ));
        }
        let read_threads = over
            .read_threads
            .or(file.read_threads)
            .unwrap_or(crate::storage::StorageConfig::default().read_threads);
        if !(1..=256).contains(&read_threads) {
            return Err(ConfigError::Invalid(format!(
                "read_threads must be between 1 and 256, not {read_threads}"
            )));
        }
        let publisher_nice = over.publisher_nice.or(file.publisher_nice).unwrap_or(5);
        if !(0..=19).contains(&publisher_nice) {
            return Err(ConfigError::Invalid(format!(
                "publisher_nice must be between 0 and 19, not {publisher_nice}"
            )));
        }
        let poll_ms = file.replica_poll_ms.unwrap_or(1000);
        if poll_ms == 0 {
            return Err(ConfigError::Invalid("replica_poll_ms must be at least 1".into()));
        }
        Ok(ServeConfig {
            backend,
            akd_cache,
            replica_poll: Duration::from_millis(poll_ms),
            verify_proofs: over.verify_proofs.or(file.verify_proofs).unwrap_or(false),
            allow_fresh_auditor: over.allow_fresh_auditor.or(file.allow_fresh_auditor).unwrap_or(false),
            tls: kt_client::serve::TlsFiles::from_flags(over.tls_cert.or(file.tls_cert), over.tls_key.or(file.tls_key))
                .map_err(ConfigError::Invalid)?,
            auditor_ca_file: over.auditor_ca_file.or(file.auditor_ca_file),
            auditor_max_age: Duration::from_secs(
                over.auditor_max_age_secs
                    .or(file.auditor_max_age_secs)
                    .unwrap_or(3600)
                    .max(1),
            ),
            listen: over
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            epoch_interval: Duration::from_secs(interval),
            max_updates_per_epoch: max_per_epoch,
            limits,
            block_cache_bytes: over.block_cache_mib.or(file.block_cache_mib).unwrap_or(512) << 20,
            read_threads,
            publisher_nice,
            auditors: if over.auditors.is_empty() {
                file.auditors.unwrap_or_default()
            } else {
                over.auditors
            },
            witnesses: if over.witnesses.is_empty() {
                file.witnesses.unwrap_or_default()
            } else {
                over.witnesses
            },
            read_rate_per_sec: file.read_rate_per_sec.filter(|&r| r > 0),
            read_burst: file.read_burst,
            read_token_file: over.read_token_file.or(file.read_token_file),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_over_defaults() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9\"\nepoch_interval_secs = 5\nmax_label_bytes = 10").expect("toml");
        let over = Overrides {
            epoch_interval_secs: Some(7),
            ..Overrides::default()
        };
        let c = ServeConfig::resolve(over, file).expect("resolve");
        assert_eq!(c.epoch_interval, Duration::from_secs(7));
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 9)));
        assert_eq!(c.limits.max_label_bytes, 10);
        assert_eq!(c.max_updates_per_epoch, 200_000);
        assert!(toml::from_str::<FileConfig>("lissten = 1").is_err(), "typos are errors");
        let zero = Overrides {
            epoch_interval_secs: Some(0),
            ..Overrides::default()
        };
        assert!(ServeConfig::resolve(zero, FileConfig::default()).is_err());
    }

    #[test]
    fn storage_backend_is_chosen_and_checked() {
        let rocks = ServeConfig::resolve(Overrides::default(), FileConfig::default()).expect("default");
        assert_eq!(rocks.backend, Backend::Rocks);
        assert_eq!(rocks.akd_cache, crate::AkdCache::publisher());
        assert_eq!(rocks.akd_cache.limit_bytes, None, "renewed each epoch, unbounded");
        assert_eq!(rocks.read_threads, 16);
        let file: FileConfig =
            toml::from_str("akd_cache_mib = 256\nakd_cache_secs = 120\nread_threads = 4").expect("toml");
        let config = ServeConfig::resolve(Overrides::default(), file).expect("cache");
        let cache = config.akd_cache;
        assert_eq!(
            (cache.limit_bytes, cache.lifetime.as_secs(), cache.clean_every.as_secs()),
            (Some(256 << 20), 120, 30),
            "a bound is enforced at akd's usual cleans"
        );
        assert_eq!(config.read_threads, 4);
        assert_eq!(rocks.publisher_nice, 5);
        let file: FileConfig =
            toml::from_str("storage = \"mysql\"\nmysql_url = \"mysql://kt@127.0.0.1:3306/kt\"").expect("toml");
        let mysql = ServeConfig::resolve(Overrides::default(), file).expect("mysql");
        assert_eq!(
            mysql.backend,
            Backend::Mysql {
                url: "mysql://kt@127.0.0.1:3306/kt".into()
            }
        );
        let flag = Overrides {
            mysql_url: Some("mysql://a@b/c".into()),
            ..Overrides::default()
        };
        assert!(matches!(
            ServeConfig::resolve(flag, FileConfig::default())
                .expect("url alone")
                .backend,
            Backend::Mysql { .. }
        ));
        for bad in [
            "storage = \"mysql\"",
            "storage = \"postgres\"",
            "storage = \"rocksdb\"\nmysql_url = \"mysql://a@b/c\"",
            "replica_poll_ms = 0",
            "akd_cache_mib = 0",
            "akd_cache_secs = 0",
            "read_threads = 0",
            "read_threads = 1000",
            "publisher_nice = -1",
            "publisher_nice = 20",
        ] {
            let file: FileConfig = toml::from_str(bad).expect("toml");
            let err = ServeConfig::resolve(Overrides::default(), file).expect_err(bad);
            assert!(!err.to_string().is_empty());
        }
    }
}
