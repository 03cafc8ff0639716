//! The directory's HTTP API (`docs/api.md`): public reads, operator writes, metrics.

mod blobs;
mod error;
mod guard;
mod log;
mod operator;
mod read;
#[cfg(test)]
mod tests;

pub use blobs::BlobServer;
pub use error::ApiError;
pub use guard::ReadGuard;

use crate::metrics::Metrics;
use crate::publisher::{ReadView, ServeState};
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

/// Input limits of the API.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most updates in one `POST /v1/updates`.
    pub max_updates_per_request: usize,
    /// Longest label, in bytes of UTF-8.
    pub max_label_bytes: usize,
    /// Longest value (public key), in bytes.
    pub max_value_bytes: usize,
    /// Most labels in one `POST /v1/lookup`.
    pub max_batch_lookup: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest time a read or intake request may take.
    pub request_timeout: Duration,
    /// Most requests handled at once; beyond it, 503 at once (never an unbounded queue).
    pub max_concurrent_requests: usize,
    /// Most audit blob downloads at once (each holds a share of one blob copy).
    pub max_blob_readers: usize,
    /// Longest time one audit blob download may take; a slower reader is cut off.
    pub blob_send_timeout: Duration,
    /// Most audit blob downloads one client address holds at once, so that a few
    /// slow connections from one place cannot take every slot.
    pub max_blob_readers_per_client: usize,
    /// Slowest pace a blob download may keep after its first ten seconds, bytes per
    /// second: a reader that falls behind it is cut off long before `blob_send_timeout`.
    pub blob_min_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_updates_per_request: 1000,
            max_label_bytes: 256,
            max_value_bytes: 1024,
            max_batch_lookup: 100,
            max_body_bytes: 4 << 20,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 512,
            max_blob_readers: 4,
            blob_send_timeout: Duration::from_secs(300),
            max_blob_readers_per_client: 2,
            blob_min_rate: 512 << 10,
        }
    }
}

impl Limits {
    /// Largest `POST /v1/lookup` body: `max_batch_lookup` labels of `max_label_bytes`,
    /// each byte JSON-escaped at worst (`\\u00XX`), with room for the punctuation.
    pub fn batch_lookup_body_bytes(&self) -> usize {
        self.max_batch_lookup
            .saturating_mul(self.max_label_bytes.saturating_mul(6).saturating_add(4))
            .saturating_add(64)
    }

    /// The limits on update bodies, as `kt_client::wire` checks them.
    pub fn request_limits(&self) -> kt_client::wire::RequestLimits {
        kt_client::wire::RequestLimits {
            max_updates_per_request: self.max_updates_per_request,
            max_label_bytes: self.max_label_bytes,
            max_value_bytes: self.max_value_bytes,
        }
    }
}

/// Everything handlers need.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The publisher's shared state (views, queue, storage, keys).
    pub shared: ServeState,
    /// blake3 of the operator token.
    pub token_hash: blake3::Hash,
    /// Input limits.
    pub limits: Limits,
    /// Counters the handlers update, served at `/metrics`.
    pub metrics: Metrics,
    /// Seconds between scheduled epochs (reported in `/v1/info`).
    pub epoch_interval_secs: u64,
    /// Authentication and rate limit of the read routes.
    pub read_guard: ReadGuard,
    /// Verify every lookup and history proof before serving it (`verify_proofs`).
    pub verify_proofs: bool,
    /// The audit blob routes' shared copies and slots.
    pub blobs: BlobServer,
}

impl AppState {
    /// The current read view.
    pub fn view(&self) -> Arc<ReadView> {
        Arc::clone(&self.shared.views.borrow())
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router<()> {
    let timeout = TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, state.limits.request_timeout);
    let reads = Router::new()
        .route("/v1/info", get(read::info))
        .route("/v1/heads/latest", get(read::latest_head))
        .route("/v1/heads/{epoch}", get(read::head))
        .route("/v1/lookup/{label}", get(read::lookup))
        // A batch lookup is at most `max_batch_lookup` labels: its body limit says so,
        // so an anonymous client cannot make the server parse megabytes first.
        .route(
            "/v1/lookup",
            post(read::batch_lookup).layer(DefaultBodyLimit::max(state.limits.batch_lookup_body_bytes())),
        )
        .route("/v1/history/{label}", get(read::history))
        .route("/v1/log/proof/{epoch}", get(log::proof))
        .route("/v1/log/consistency/{old}/{new}", get(log::consistency))
        .route("/log/checkpoint", get(log::checkpoint))
        .route("/log/tile/{*path}", get(log::tile))
        .route("/v1/audit", get(read::audit_listing))
        .route("/v1/audit/{epoch}", get(read::audit_blob))
        .route("/{epoch}/{previous}/{current}", get(read::audit_blob_by_name))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::guard_reads));
    // The operator's routes check the token before anything reads the body.
    let operator = Router::new()
        .route("/v1/updates", post(operator::post_updates))
        .route("/v1/updates/{id}", get(operator::update_status))
        .route_layer(middleware::from_fn_with_state(state.clone(), operator::require_token));
    let bounded = Router::new()
        .merge(reads)
        .merge(operator)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(timeout);
    let shed_metric = state.metrics.http_shed.clone();
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: tower::BoxError| {
            let shed_metric = shed_metric.clone();
            async move {
                shed_metric.inc();
                busy()
            }
        }))
        .load_shed()
        // Router::layer wraps every route separately: the global variant shares one
        // semaphore among them, so the limit is on the whole server.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.limits.max_concurrent_requests,
        ));
    // A forced epoch takes as long as the publish: no request timeout.
    Router::new()
        .route(
            "/v1/epochs",
            post(operator::post_epoch)
                .route_layer(middleware::from_fn_with_state(state.clone(), operator::require_token)),
        )
        .merge(bounded)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), announced_length))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(shed)
        .with_state(state)
}

/// The answer when every request slot is taken.
fn busy() -> Response {
    let body = kt_client::wire::ErrorBody {
        error: "server busy: too many requests in flight; retry shortly".into(),
    };
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}

/// Refuses a body whose announced length is over the limit before reading any of it
/// (bodies without a length are cut at the limit while they are read).
async fn announced_length(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max = state.limits.max_body_bytes;
    match announced {
        Some(len) if len > max as u64 => ApiError::Client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is {len} bytes, the limit is {max}"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see docs/api.md".into())
}

/// Counts and times every request by its route pattern (never the raw path: labels
/// would explode the metric's cardinality).
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let m = &state.metrics;
    m.http_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    response
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics.render().map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([("content-type", "text/plain; version=0.0.4")], text).into_response())
}

/// 200 while the publisher runs; 503 with the reason once it refuses to go on.
async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match state.shared.failure.reason() {
        Some(reason) => Err(ApiError::Unavailable(format!("publisher stopped: {reason}"))),
        None => Ok("ok\n"),
    }
}
