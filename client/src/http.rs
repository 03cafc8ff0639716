//! Async HTTP client of the directory's read API (feature `http`). It only fetches:
//! verification stays in [`crate::verify`], synchronous and free of I/O.

use crate::head::SignedHead;
use crate::wire::{ErrorBody, HistoryResponse, InfoResponse, LookupResponse};
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
    /// The label is not in the directory.
    #[error("not found: {0}")]
    NotFound(String),
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
    /// A success status whose body is not the expected JSON.
    #[error("{url}: unexpected response body: {reason}")]
    Body {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// A client of one directory.
#[derive(Debug, Clone)]
pub struct DirectoryClient {
    /// Base URL without a trailing slash.
    base: String,
    /// Connection pool, with a request timeout.
    http: reqwest::Client,
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
    /// A client of the directory at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, timeout: Duration) -> Result<DirectoryClient, HttpError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|source| HttpError::Transport {
                url: base.to_owned(),
                source,
            })?;
        Ok(DirectoryClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, HttpError> {
        let url = format!("{}{path}", self.base);
        let transport = |source| HttpError::Transport {
            url: url.clone(),
            source,
        };
        let response = self.http.get(&url).send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(500).collect());
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err(HttpError::NotFound(message));
            }
            return Err(HttpError::Status {
                url,
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| HttpError::Body {
            url,
            reason: e.to_string(),
        })
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

    /// `GET /v1/lookup/{label}`.
    pub async fn lookup(&self, label: &str) -> Result<LookupResponse, HttpError> {
        self.get(&format!("/v1/lookup/{}", encode_label(label))).await
    }

    /// `GET /v1/history/{label}[?most_recent=n]`.
    pub async fn history(&self, label: &str, most_recent: Option<u64>) -> Result<HistoryResponse, HttpError> {
        let query = most_recent.map(|n| format!("?most_recent={n}")).unwrap_or_default();
        self.get(&format!("/v1/history/{}{query}", encode_label(label))).await
    }
}
