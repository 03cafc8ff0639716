//! The auditor's own routes: status, co-signed heads, epochs, evidence, blobs.

use super::{ApiError, AppState, blocking};
use crate::store::EpochRecord;
use crate::verify::{self, Identity};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kt_client::auditor::{
    AuditState, CoSignedHead, EpochList, EpochSummary, Evidence, EvidenceAccepted, EvidenceList, EvidenceSource,
    StatusResponse,
};
use kt_client::head::unix_ms;
use kt_client::state::ForkEvidence;
use serde::Deserialize;

/// Most epochs in one `GET /v1/epochs`.
pub const MAX_EPOCHS_PER_PAGE: usize = 1000;

pub(super) fn parse_u64(what: &str, s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("{what} must be a decimal integer, got {s:?}")))
}

pub(super) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see docs/auditor.md".into())
}

/// `GET /v1/witness`: this auditor's witness name and key, and the latest checkpoint
/// it co-signed.
pub(super) async fn witness(State(app): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let store = app.store.clone();
    let last = super::blocking(move || store.witness()).await?;
    Ok(axum::Json(serde_json::json!({
        "vkey": app.witness.vkey(),
        "cosigned": last,
    })))
}

pub(super) async fn healthz(State(app): State<AppState>) -> Response {
    let s = app.status.get();
    match s.state {
        AuditState::Failed => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {}\n", s.reason)).into_response(),
        _ => "ok\n".into_response(),
    }
}

pub(super) async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

pub(super) async fn status(State(app): State<AppState>) -> Result<Json<StatusResponse>, ApiError> {
    let store = app.store.clone();
    let evidence_count = blocking(move || store.evidence()).await?.len() as u64;
    let s = app.status.get();
    let lag = s.lag();
    Ok(Json(StatusResponse {
        namespace: s.namespace,
        directory_url: app.directory_url.clone(),
        directory_key: hex::encode(app.directory_key.as_bytes()),
        auditor_key: hex::encode(app.auditor_key.as_bytes()),
        state: s.state,
        reason: s.reason,
        last_seen_epoch: s.last_seen_epoch,
        last_verified_epoch: s.last_verified_epoch,
        last_verified_root: s.last_verified_root,
        lag,
        last_head_timestamp_ms: s.last_head_timestamp_ms,
        last_contact_ms: s.last_contact_ms,
        evidence_count,
        max_head_age_secs: app.max_head_age_secs,
    }))
}

fn cosigned(app: &AppState, r: EpochRecord) -> CoSignedHead {
    CoSignedHead {
        directory_head: r.head,
        cosignature: r.cosignature,
        plexi: r.plexi,
        auditor_key: hex::encode(app.auditor_key.as_bytes()),
    }
}

pub(super) async fn latest_head(State(app): State<AppState>) -> Result<Json<CoSignedHead>, ApiError> {
    let store = app.store.clone();
    match blocking(move || store.last_epoch()).await? {
        Some(r) => Ok(Json(cosigned(&app, r))),
        None => Err(ApiError::NotFound("no epoch verified yet".into())),
    }
}

pub(super) async fn head(
    State(app): State<AppState>,
    Path(epoch): Path<String>,
) -> Result<Json<CoSignedHead>, ApiError> {
    let epoch = parse_u64("epoch", &epoch)?;
    let store = app.store.clone();
    match blocking(move || store.epoch(epoch)).await? {
        Some(r) => Ok(Json(cosigned(&app, r))),
        None => Err(ApiError::NotFound(format!("epoch {epoch} is not verified (yet)"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EpochsQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn epochs(
    State(app): State<AppState>,
    query: Result<Query<EpochsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EpochList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_EPOCHS_PER_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_EPOCHS_PER_PAGE}, got {limit}"
        )));
    }
    let store = app.store.clone();
    let records = blocking(move || store.epochs(q.from, limit)).await?;
    Ok(Json(EpochList {
        epochs: records
            .into_iter()
            .map(|r| EpochSummary {
                epoch: r.head.head.epoch,
                root: hex::encode(r.head.head.root),
                previous_root: hex::encode(r.head.head.previous_root),
                head_timestamp_ms: r.head.head.timestamp_ms,
                verified_at_ms: r.verified_at_ms,
                verify_ms: r.verify_ms,
                proof_bytes: r.proof_bytes,
                updates: r.updates,
            })
            .collect(),
    }))
}

pub(super) async fn evidence_list(State(app): State<AppState>) -> Result<Json<EvidenceList>, ApiError> {
    let store = app.store.clone();
    let mut evidence = blocking(move || store.evidence()).await?;
    evidence.reverse();
    Ok(Json(EvidenceList { evidence }))
}

pub(super) async fn evidence(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Evidence>, ApiError> {
    let id = parse_u64("evidence id", &id)?;
    let store = app.store.clone();
    blocking(move || store.evidence_by_id(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no evidence #{id}")))
}

fn octets(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

pub(super) async fn evidence_blob(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_u64("evidence id", &id)?;
    let store = app.store.clone();
    blocking(move || store.evidence_blob(id))
        .await?
        .map(octets)
        .ok_or_else(|| ApiError::NotFound(format!("evidence #{id} has no blob")))
}

/// `POST /v1/evidence`: two contradicting signed heads (a fork, a broken chain, a
/// rollback), verified before it is stored.
pub(super) async fn submit_evidence(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim() == "application/json"));
    if !json {
        return Err(ApiError::Client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the evidence as application/json".into(),
        ));
    }
    let claim: ForkEvidence = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"first\": signed head, \"second\": signed head}}: {e}"
        ))
    })?;
    let store = app.store.clone();
    let pins = blocking(move || store.pins()).await?;
    let identity = Identity {
        key: app.directory_key,
        namespace: pins.as_ref().map(|p| p.namespace.clone()),
        vrf_key_hash: None,
    };
    let finding = verify::check_fork(&identity, &claim)
        .map_err(|reason| ApiError::Client(StatusCode::UNPROCESSABLE_ENTITY, format!("not a fork: {reason}")))?;
    let reason = finding.reason.clone();
    let kind = finding.kind;
    let evidence = Evidence {
        id: 0,
        kind: finding.kind,
        epoch: finding.epoch,
        detected_at_ms: unix_ms(),
        source: EvidenceSource::Submitted,
        reason: finding.reason,
        heads: finding.heads,
        blob_name: None,
    };
    let store = app.store.clone();
    let (id, created) = blocking(move || store.add_evidence(evidence, None)).await?;
    if created {
        tracing::error!(id, ?kind, %reason, "verified evidence submitted");
        app.metrics.evidence.with_label_values(&[&format!("{kind:?}")]).inc();
        app.status
            .set_state(AuditState::Failed, format!("evidence #{id} ({kind:?}): {reason}"));
        app.metrics.show_state(AuditState::Failed);
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(EvidenceAccepted { id, created })).into_response())
}

/// `GET /{epoch}/{previous}/{current}`: the proof this auditor verified, WhatsApp-style.
pub(super) async fn blob(
    State(app): State<AppState>,
    Path((epoch, previous, current)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let epoch = parse_u64("epoch", &epoch)?;
    let store = app.store.clone();
    let found = blocking(move || {
        let Some(r) = store.epoch(epoch)? else {
            return Ok(None);
        };
        Ok(Some((r, store.blob(epoch)?)))
    })
    .await?;
    let missing = || ApiError::NotFound(format!("no verified proof {epoch}/{previous}/{current}"));
    let (record, blob) = found.ok_or_else(missing)?;
    let h = &record.head.head;
    if hex::encode(h.previous_root) != previous.to_ascii_lowercase()
        || hex::encode(h.root) != current.to_ascii_lowercase()
    {
        return Err(missing());
    }
    blob.map(octets).ok_or_else(missing)
}
