//! Operator routes: update intake, update status, forced epochs. Bearer token only.

use super::error::rejection;
use super::{ApiError, AppState};
use crate::publisher::Intake;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use kt_client::wire::{EpochResponse, UpdateStatus, UpdatesAccepted, UpdatesRequest};
use std::time::Duration;

/// How long `POST /v1/epochs` waits for a publisher busy with a long epoch.
const EPOCH_WAIT: Duration = Duration::from_secs(1800);

/// Checks `Authorization: Bearer <token>`; compares blake3 hashes (constant time).
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("missing Authorization: Bearer <operator token>"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized(
            "Authorization must be 'Bearer <operator token>'",
        ))?;
    // blake3::Hash's equality is constant-time.
    if blake3::hash(token.trim().as_bytes()) != state.token_hash {
        return Err(ApiError::Unauthorized("invalid operator token"));
    }
    Ok(())
}

/// Refuses a request without the operator token before its body is read (the route
/// layer of every operator route): an anonymous client cannot make the server parse
/// a body it may not send. A read replica answers 403 first, token or not.
pub(super) async fn require_token(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // A replica says what it is to anyone: no token makes it take updates.
    match intake(&state).and_then(|_| authorize(&state, request.headers())) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// The publisher's intake, or a 403 on a read replica.
fn intake(state: &AppState) -> Result<&Intake, ApiError> {
    state.shared.intake.as_ref().ok_or_else(|| {
        ApiError::Client(
            StatusCode::FORBIDDEN,
            "this server is a read-only replica: send updates and epoch requests to the publisher".into(),
        )
    })
}

/// [`kt_client::wire::check_label`] as a 400.
pub(super) fn check_label(label: &str, max: usize, at: &str) -> Result<(), ApiError> {
    kt_client::wire::check_label(label, max, at).map_err(ApiError::bad_request)
}

/// `POST /v1/updates`: validates everything, then answers 202 only after the synced
/// RocksDB write holding the updates has returned.
pub(super) async fn post_updates(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<UpdatesRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<UpdatesAccepted>), ApiError> {
    let intake = intake(&state)?;
    authorize(&state, &headers)?;
    if let Some(reason) = state.shared.failure.reason() {
        return Err(ApiError::Unavailable(format!(
            "publisher stopped, not accepting updates: {reason}"
        )));
    }
    let Json(request) = body.map_err(|r| rejection(r.status(), r.body_text()))?;
    let batch = request
        .validate(&state.limits.request_limits())
        .map_err(ApiError::bad_request)?;
    let count = batch.len();
    let ids = match intake.accept(batch).await {
        Ok(ids) => ids,
        Err(e) => {
            if state.shared.storage.is_fenced() {
                state.shared.failure.set(format!("update intake write failed: {e}"));
            }
            return Err(e.into());
        }
    };
    state.metrics.updates_accepted.inc_by(count as u64);
    state
        .metrics
        .queue_depth
        .set(i64::try_from(intake.queue.depth()).unwrap_or(i64::MAX));
    tracing::debug!(count, first = ids.first().copied(), "accepted updates");
    Ok((StatusCode::ACCEPTED, Json(UpdatesAccepted { ids })))
}

/// `GET /v1/updates/{id}`.
pub(super) async fn update_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<UpdateStatus>, ApiError> {
    let intake = intake(&state)?;
    authorize(&state, &headers)?;
    let Path(id) = id.map_err(|r| ApiError::bad_request(format!("update id: {}", r.body_text())))?;
    match intake.queue.status(id).await? {
        Some(outcome) => Ok(Json(UpdateStatus { id, outcome })),
        None => Err(ApiError::NotFound(format!("no update with id {id} was ever accepted"))),
    }
}

/// `POST /v1/epochs`: publish now (tests and demos); answers when the epoch is done.
pub(super) async fn post_epoch(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<EpochResponse>, ApiError> {
    let intake = intake(&state)?;
    authorize(&state, &headers)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    intake
        .triggers
        .send(reply)
        .await
        .map_err(|_| ApiError::Unavailable("the publisher is shutting down".into()))?;
    match tokio::time::timeout(EPOCH_WAIT, answer).await {
        Ok(Ok(result)) => Ok(Json(result?)),
        Ok(Err(_)) => Err(ApiError::Unavailable("the publisher is shutting down".into())),
        Err(_) => Err(ApiError::Unavailable(
            "the publisher did not finish the epoch in time".into(),
        )),
    }
}
