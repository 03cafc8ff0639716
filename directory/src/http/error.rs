//! The one error type of the directory's HTTP API: 4xx explain themselves, 5xx are
//! logged and not leaked (except the publisher's refusal, which operators must see).

use crate::publisher::PublishError;
use crate::storage::StorageError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kt_client::wire::ErrorBody;

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the message says how.
    #[error("{1}")]
    Client(StatusCode, String),
    /// No or wrong bearer token on an operator route.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The service cannot take this now (publisher stopped after a failure, ...).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: logged with its cause, answered with a generic 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with `reason`.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        ApiError::Client(StatusCode::BAD_REQUEST, reason.into())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::WritesFenced | StorageError::Write { .. } => {
                ApiError::Unavailable(format!("storage refuses writes: {e}"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Refusing(_) => ApiError::Unavailable(e.to_string()),
            PublishError::Storage(s) => s.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<akd::errors::AkdError> for ApiError {
    fn from(e: akd::errors::AkdError) -> Self {
        // Labels are checked against our own index first, so akd's NotFound here is a
        // storage problem, not a missing label.
        ApiError::Internal(format!("akd: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Client(status, m) => (status, m),
            ApiError::Unauthorized(m) => {
                let mut response = (StatusCode::UNAUTHORIZED, Json(ErrorBody { error: m.to_owned() })).into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Unavailable(m) => {
                tracing::warn!(reason = %m, "answering 503");
                (StatusCode::SERVICE_UNAVAILABLE, m)
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error (logged)".to_owned())
            }
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

/// Maps axum's extractor rejections (bad JSON, wrong content type, bad path or query,
/// body too large) to an [`ApiError`] with the same status and axum's explanation.
/// axum answers 422 for well-formed JSON of the wrong shape; to clients every bad body
/// is a 400.
pub fn rejection(status: StatusCode, text: String) -> ApiError {
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::Client(status, text)
}
