//! Async HTTP clients of the directory (feature `http`): [`DirectoryClient`] for the
//! read API anyone may use, [`OperatorClient`] for the operator's (updates, forced
//! epochs, outcomes). They only fetch: verification stays in [`crate::verify`],
//! synchronous and free of I/O.

use crate::head::SignedHead;
use crate::wire::{
    AbsenceResponse, EpochResponse, ErrorBody, HistoryResponse, InfoResponse, LookupResponse, UpdateItem, UpdateStatus,
    UpdatesAccepted, UpdatesRequest,
};
use std::path::Path;
use std::time::Duration;

/// Why a request to the directory failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No answer (connection, timeout, ...).
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The URL.
        url: String,
        /// reqwest's reason.
        #[source]
        source: reqwest::Error,
    },
    /// The TLS connection failed: most often a certificate nobody here trusts.
    #[error("TLS with {url} failed (for a private CA, pass --ca-file with its certificate): {reason}")]
    Tls {
        /// The URL.
        url: String,
        /// rustls's reason, with the error chain.
        reason: String,
    },
    /// A `404` without an absence proof (an unknown epoch, an old directory, a proxy):
    /// bytes nobody signed, so for a label this proves nothing.
    #[error("not found: {0}")]
    NotFound(String),
    /// A `404` whose body is an absence proof, not verified yet
    /// ([`crate::verify::PinnedKeys::absence_response`]).
    #[error("not found: {}", crate::wire::printable(&.0.error, 500))]
    Absent(Box<AbsenceResponse>),
    /// Any other non-success status, with the server's explanation.
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The server's `error` field, or its body.
        message: String,
    },
    /// The answer is larger than allowed.
    #[error("{url}: answer larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// A success status whose body is not the expected JSON.
    #[error("{url}: unexpected response body: {reason}")]
    Body {
        /// The URL.
        url: String,
        reason: String,
    },
}

/// Largest JSON answer accepted (history proofs of busy labels are the biggest).
pub const MAX_JSON_BODY: u64 = 64 << 20;
/// Most of an error body read for its message.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// A client of one directory.
#[derive(Debug, Clone)]
pub struct DirectoryClient {
    /// Base URL without a trailing slash.
    base: String,
    /// Connection pool, with a request timeout.
    http: reqwest::Client,
}

/// Reads a PEM bundle of CA certificates, for clients that trust a private CA
/// (`--ca-file`).
pub fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading the CA file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("the CA file {} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("the CA file {} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Percent-encodes a label for a path segment (everything but RFC 3986 unreserved).
pub fn encode_label(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for b in label.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl DirectoryClient {
    /// A client of the directory at `base` (e.g. `https://kt.example.org`), trusting
    /// the system's and the Mozilla (webpki) roots.
    pub fn new(base: &str, timeout: Duration) -> Result<DirectoryClient, HttpError> {
        DirectoryClient::with_roots(base, timeout, &[])
    }

    /// [`DirectoryClient::new`], also trusting `extra_roots` (a private CA). TLS is
    /// rustls; there is no switch that turns certificate checks off.
    pub fn with_roots(
        base: &str,
        timeout: Duration,
        extra_roots: &[reqwest::Certificate],
    ) -> Result<DirectoryClient, HttpError> {
        let mut builder = reqwest::Client::builder().timeout(timeout).use_rustls_tls();
        for root in extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder.build().map_err(|source| HttpError::Transport {
            url: base.to_owned(),
            source,
        })?;
        Ok(DirectoryClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// GETs `path` and returns the body of a success answer, refusing bodies over
    /// `limit` bytes while they stream in (memory stays bounded by `limit`).
    async fn fetch(&self, path: &str, limit: u64) -> Result<Vec<u8>, HttpError> {
        self.fetch_with(path, limit, false, false).await
    }

    /// [`Self::fetch`]; with `uncached`, asks every cache on the way to go back to the
    /// origin (`Cache-Control: no-cache`); with `absence` (lookups and histories), a
    /// `404` may be an absence answer, read up to `limit` like a success.
    async fn fetch_with(&self, path: &str, limit: u64, uncached: bool, absence: bool) -> Result<Vec<u8>, HttpError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.get(&url);
        if uncached {
            request = request
                .header(reqwest::header::CACHE_CONTROL, "no-cache")
                .header(reqwest::header::PRAGMA, "no-cache");
        }
        self.read(request, url, limit, absence).await
    }

    /// Sends `request` (to `url`) and returns the body of a success answer, at most
    /// `limit` bytes; a failure status becomes the [`HttpError`] that says what it was.
    async fn read(
        &self,
        request: reqwest::RequestBuilder,
        url: String,
        limit: u64,
        absence: bool,
    ) -> Result<Vec<u8>, HttpError> {
        let transport = |source: reqwest::Error| {
            // A certificate problem deserves its own message: rustls's reason is deep
            // in the chain.
            let mut chain = String::new();
            let mut cause: Option<&dyn std::error::Error> = Some(&source);
            while let Some(e) = cause {
                chain.push_str(&format!(": {e}"));
                cause = e.source();
            }
            let lower = chain.to_ascii_lowercase();
            if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
                return HttpError::Tls {
                    url: url.clone(),
                    reason: crate::wire::printable(chain.trim_start_matches(": "), 1000),
                };
            }
            HttpError::Transport {
                url: url.clone(),
                source,
            }
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let full = status.is_success() || (absence && status == reqwest::StatusCode::NOT_FOUND);
        let limit = if full { limit } else { MAX_ERROR_BODY };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(HttpError::TooLarge { url, limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                if !full {
                    break;
                }
                return Err(HttpError::TooLarge { url, limit });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            // The server's words, made safe to print: no escape sequences or bidi
            // overrides reach a terminal, and at most 500 characters.
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            let message = crate::wire::printable(&message, 500);
            if status == reqwest::StatusCode::NOT_FOUND {
                if absence && let Ok(absent) = serde_json::from_slice::<AbsenceResponse>(&body) {
                    return Err(HttpError::Absent(Box::new(absent)));
                }
                return Err(HttpError::NotFound(message));
            }
            return Err(HttpError::Status {
                url,
                status: status.as_u16(),
                message,
            });
        }
        Ok(body)
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// GETs a JSON document at `path` (e.g. an auditor's `/v1/heads/{epoch}`).
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, HttpError> {
        self.get(path).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, HttpError> {
        let body = self.fetch(path, MAX_JSON_BODY).await?;
        serde_json::from_slice(&body).map_err(|e| HttpError::Body {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }

    /// The epoch log's latest checkpoint note (`/log/checkpoint`), unverified.
    pub async fn log_checkpoint(&self) -> Result<String, HttpError> {
        let body = self
            .fetch("/log/checkpoint", crate::tlog::note::MAX_NOTE_BYTES as u64)
            .await?;
        String::from_utf8(body).map_err(|_| HttpError::Body {
            url: format!("{}/log/checkpoint", self.base),
            reason: "not UTF-8".into(),
        })
    }

    /// A consistency proof between two sizes of the epoch log, unverified.
    pub async fn log_consistency(&self, old: u64, new: u64) -> Result<crate::tlog::ConsistencyResponse, HttpError> {
        self.get(&format!("/v1/log/consistency/{old}/{new}")).await
    }

    /// The raw audit blob named `name` (`"{epoch}/{prev}/{cur}"`), served at the
    /// directory's host root; at most `limit` bytes.
    pub async fn audit_blob(&self, name: &str, limit: u64) -> Result<Vec<u8>, HttpError> {
        self.fetch(&format!("/{name}"), limit).await
    }

    /// [`Self::audit_blob`] from the origin: a cache that kept a damaged copy must not
    /// answer a refetch with the same bytes. Besides `Cache-Control: no-cache` (which
    /// many CDNs ignore), a query string no cache has seen makes it another URL; the
    /// directory ignores it.
    pub async fn audit_blob_uncached(&self, name: &str, limit: u64) -> Result<Vec<u8>, HttpError> {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.fetch_with(&format!("/{name}?fresh={unique}"), limit, true, false)
            .await
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<InfoResponse, HttpError> {
        self.get("/v1/info").await
    }

    /// `GET /v1/heads/latest`.
    pub async fn latest_head(&self) -> Result<SignedHead, HttpError> {
        self.get("/v1/heads/latest").await
    }

    /// `GET /v1/heads/{epoch}`.
    pub async fn head(&self, epoch: u64) -> Result<SignedHead, HttpError> {
        self.get(&format!("/v1/heads/{epoch}")).await
    }

    /// GETs an answer that may be an absence answer (`HttpError::Absent`).
    async fn get_answer<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, HttpError> {
        let body = self.fetch_with(path, MAX_JSON_BODY, false, true).await?;
        serde_json::from_slice(&body).map_err(|e| HttpError::Body {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }

    /// `GET /v1/lookup/{label}`; a label never inserted is `HttpError::Absent` (with its
    /// proof, not verified yet) or, from a server that proves nothing,
    /// `HttpError::NotFound`.
    pub async fn lookup(&self, label: &str) -> Result<LookupResponse, HttpError> {
        self.get_answer(&format!("/v1/lookup/{}", encode_label(label))).await
    }

    /// `GET /v1/history/{label}[?most_recent=n]`; absence as for [`Self::lookup`].
    pub async fn history(&self, label: &str, most_recent: Option<u64>) -> Result<HistoryResponse, HttpError> {
        let query = most_recent.map(|n| format!("?most_recent={n}")).unwrap_or_default();
        self.get_answer(&format!("/v1/history/{}{query}", encode_label(label)))
            .await
    }
}

/// A client of the directory's operator API, holding the operator token (sent as a
/// bearer token, never printed).
#[derive(Clone)]
pub struct OperatorClient {
    /// The directory, for its connection pool and answer handling.
    directory: DirectoryClient,
    /// The operator token (`token` in the data directory).
    token: String,
}

impl std::fmt::Debug for OperatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorClient")
            .field("directory", &self.directory.base)
            .finish_non_exhaustive()
    }
}

impl OperatorClient {
    /// The operator of `directory`, with `token` (surrounding whitespace, as a token
    /// file ends with a newline, is dropped).
    pub fn new(directory: DirectoryClient, token: &str) -> OperatorClient {
        OperatorClient {
            directory,
            token: token.trim().to_owned(),
        }
    }

    /// The read API of the same directory.
    pub fn directory(&self) -> &DirectoryClient {
        &self.directory
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&UpdatesRequest>,
    ) -> Result<T, HttpError> {
        let url = format!("{}{path}", self.directory.base);
        let mut request = self.directory.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let body = self.directory.read(request, url.clone(), MAX_JSON_BODY, false).await?;
        serde_json::from_slice(&body).map_err(|e| HttpError::Body {
            url,
            reason: e.to_string(),
        })
    }

    /// Queues `updates` (`POST /v1/updates`): one id per update, in order.
    pub async fn post_updates(&self, updates: &[UpdateItem]) -> Result<UpdatesAccepted, HttpError> {
        let body = UpdatesRequest {
            updates: updates.to_vec(),
        };
        self.send(reqwest::Method::POST, "/v1/updates", Some(&body)).await
    }

    /// Forces an epoch (`POST /v1/epochs`) and returns what it did.
    pub async fn publish(&self) -> Result<EpochResponse, HttpError> {
        self.send(reqwest::Method::POST, "/v1/epochs", None).await
    }

    /// Where update `id` stands (`GET /v1/updates/{id}`).
    pub async fn outcome(&self, id: u64) -> Result<UpdateStatus, HttpError> {
        self.send(reqwest::Method::GET, &format!("/v1/updates/{id}"), None)
            .await
    }
}
