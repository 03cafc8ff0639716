//! The auditor's HTTP API: its own `/v1` routes, Cloudflare Plexi's read routes, the
//! verified blobs at the host root, metrics, and the public dashboard at `/`.

mod api;
mod dashboard;
mod error;
mod plexi;
#[cfg(test)]
mod tests;

pub use error::ApiError;

use crate::metrics::Metrics;
use crate::status::SharedStatus;
use crate::store::{Store, StoreError};
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use ed25519_dalek::VerifyingKey;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

/// Largest request body (`POST /v1/evidence`: two signed heads).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most requests handled at once; beyond it, 503 at once (never an unbounded queue).
pub const MAX_CONCURRENT_REQUESTS: usize = 256;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Verified epochs, blobs, evidence.
    pub store: Store,
    /// Live follower state.
    pub status: SharedStatus,
    /// Rendered at `/metrics`.
    pub metrics: Metrics,
    /// The auditor's co-signing key (public half).
    pub auditor_key: VerifyingKey,
    /// The pinned directory key.
    pub directory_key: VerifyingKey,
    /// Where the directory is followed.
    pub directory_url: String,
    /// This auditor's own base URL as clients reach it (Plexi's `log_directory`).
    pub public_url: String,
    /// Longest allowed directory silence, seconds (shown in the status).
    pub max_head_age_secs: u64,
    /// The epoch-log witness (`POST /add-checkpoint`).
    pub witness: std::sync::Arc<crate::witness::Witness>,
}

/// [`crate::store::blocking`] with its error as an [`ApiError`].
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(crate::store::blocking(f).await?)
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/dashboard.js", get(dashboard::script))
        .route("/assets/dashboard.css", get(dashboard::style))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/v1/status", get(api::status))
        .route("/v1/heads/latest", get(api::latest_head))
        .route("/v1/heads/{epoch}", get(api::head))
        .route("/v1/epochs", get(api::epochs))
        .route("/v1/evidence", get(api::evidence_list).post(api::submit_evidence))
        .route("/v1/evidence/{id}", get(api::evidence))
        .route("/v1/evidence/{id}/blob", get(api::evidence_blob))
        .route("/v1/witness", get(api::witness))
        .route("/add-checkpoint", axum::routing::post(crate::witness::add_checkpoint))
        .route("/info", get(plexi::info))
        .route("/namespaces", get(plexi::namespaces))
        .route("/namespaces/{ns}", get(plexi::namespace))
        .route("/namespaces/{ns}/audits/{epoch}", get(plexi::audit))
        .route("/namespaces/{ns}/last-verified-epoch", get(plexi::last_verified))
        .route("/{epoch}/{previous}/{current}", get(api::blob))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::Client(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "auditor busy: too many requests in flight; retry shortly".into(),
                    )
                }))
                .load_shed()
                // Router::layer wraps every route separately: the global variant shares one
                // semaphore among them, so the limit is on the whole server.
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS)),
        )
        .with_state(state)
}
