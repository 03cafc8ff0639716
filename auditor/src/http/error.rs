//! The one error type of the auditor's HTTP API: 4xx explain themselves, 5xx are
//! logged and not leaked.

use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kt_client::wire::ErrorBody;

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or its evidence does not hold; the message says why.
    #[error("{1}")]
    Client(StatusCode, String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Client(status, m) => (status, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "answering 500");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the auditor's log".to_owned(),
                )
            }
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}
