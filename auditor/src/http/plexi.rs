//! Cloudflare Plexi's read routes, as `plexi-core`'s client reads them (`/info`,
//! `/namespaces`, `/namespaces/{ns}`, `/namespaces/{ns}/audits/{epoch}`,
//! `/namespaces/{ns}/last-verified-epoch`), so Plexi clients can check this auditor.

use super::api::parse_u64;
use super::{ApiError, AppState, blocking};
use axum::Json;
use axum::extract::{Path, State};
use kt_client::auditor::AuditState;
use kt_client::cosign::{PLEXI_PROTOBUF_ED25519, PlexiSignature};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub(super) struct KeyInfo {
    public_key: String,
    not_before: u64,
}

/// `GET /info`: Plexi's auditor configuration.
#[derive(Debug, Serialize)]
pub(super) struct Info {
    keys: Vec<KeyInfo>,
    logs: Vec<String>,
}

/// One namespace as Plexi describes it.
#[derive(Debug, Serialize)]
pub(super) struct NamespaceInfo {
    name: String,
    /// Base URL whose host root serves `{epoch}/{prev}/{cur}` blobs: this auditor.
    log_directory: String,
    /// `"{epoch}/{hex root}"` of the first epoch audited (epoch 0, the empty tree).
    root: Option<String>,
    status: &'static str,
    reports_uri: String,
    audits_uri: String,
    signature_version: u32,
    ciphersuite: u32,
}

#[derive(Debug, Serialize)]
pub(super) struct Namespaces {
    namespaces: Vec<NamespaceInfo>,
}

/// `GET /namespaces/{ns}/last-verified-epoch`.
#[derive(Debug, Serialize)]
pub(super) struct LastVerifiedEpoch {
    job_id: String,
    epoch: u64,
    start_hash: String,
    end_hash: String,
    timestamp: u64,
}

pub(super) async fn info(State(app): State<AppState>) -> Result<Json<Info>, ApiError> {
    let store = app.store.clone();
    let pins = blocking(move || store.pins()).await?;
    Ok(Json(Info {
        keys: vec![KeyInfo {
            public_key: hex::encode(app.auditor_key.as_bytes()),
            not_before: 0,
        }],
        logs: pins.into_iter().map(|p| p.namespace).collect(),
    }))
}

async fn namespace_info(app: &AppState) -> Result<Option<NamespaceInfo>, ApiError> {
    let store = app.store.clone();
    let Some(pins) = blocking(move || store.pins()).await? else {
        return Ok(None);
    };
    let status = match app.status.get().state {
        AuditState::Failed => "Disabled",
        AuditState::Ok | AuditState::Lagging => "Online",
    };
    let ns = &pins.namespace;
    let enc = kt_client::http::encode_label(ns);
    Ok(Some(NamespaceInfo {
        name: ns.clone(),
        log_directory: app.public_url.clone(),
        root: Some(format!("0/{}", pins.genesis_root)),
        status,
        reports_uri: format!("/namespaces/{enc}/reports"),
        audits_uri: format!("/namespaces/{enc}/audits"),
        signature_version: PLEXI_PROTOBUF_ED25519,
        ciphersuite: PLEXI_PROTOBUF_ED25519,
    }))
}

pub(super) async fn namespaces(State(app): State<AppState>) -> Result<Json<Namespaces>, ApiError> {
    Ok(Json(Namespaces {
        namespaces: namespace_info(&app).await?.into_iter().collect(),
    }))
}

async fn known(app: &AppState, ns: &str) -> Result<NamespaceInfo, ApiError> {
    namespace_info(app)
        .await?
        .filter(|i| i.name == ns)
        .ok_or_else(|| ApiError::NotFound(format!("namespace {ns:?} is not audited here")))
}

pub(super) async fn namespace(
    State(app): State<AppState>,
    Path(ns): Path<String>,
) -> Result<Json<NamespaceInfo>, ApiError> {
    Ok(Json(known(&app, &ns).await?))
}

pub(super) async fn audit(
    State(app): State<AppState>,
    Path((ns, epoch)): Path<(String, String)>,
) -> Result<Json<PlexiSignature>, ApiError> {
    known(&app, &ns).await?;
    let epoch = parse_u64("epoch", &epoch)?;
    let store = app.store.clone();
    blocking(move || store.epoch(epoch))
        .await?
        .map(|r| Json(r.plexi))
        .ok_or_else(|| ApiError::NotFound(format!("epoch {epoch} is not verified (yet)")))
}

pub(super) async fn last_verified(
    State(app): State<AppState>,
    Path(ns): Path<String>,
) -> Result<Json<LastVerifiedEpoch>, ApiError> {
    known(&app, &ns).await?;
    let store = app.store.clone();
    let r = blocking(move || store.last_epoch())
        .await?
        .ok_or_else(|| ApiError::NotFound("no epoch verified yet".into()))?;
    let h = &r.head.head;
    // Plexi names each verification by a UUID; ours is derived from what was verified.
    let digest = blake3::hash(&r.cosignature.signature);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.as_bytes()[..16]);
    Ok(Json(LastVerifiedEpoch {
        job_id: uuid::Builder::from_custom_bytes(id).into_uuid().to_string(),
        epoch: h.epoch,
        start_hash: hex::encode(h.previous_root),
        end_hash: hex::encode(h.root),
        timestamp: r.verified_at_ms,
    }))
}
