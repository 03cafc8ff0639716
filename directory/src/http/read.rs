//! Public read routes: info, heads, lookups, histories, audit blobs.
//!
//! A proof and its head always come from one [`ReadView`]: akd proves at the epoch its
//! view reads, and the view's head is that epoch's. If akd ever answers at another
//! epoch (the disk moved on under a view being replaced), the request waits for the
//! next view and retries rather than pair a proof with the wrong head. A read replica
//! also drops a proof if the store ran two epochs ahead while it was read.

use super::operator::check_label;
use super::{ApiError, AppState};
use crate::publisher::ReadView;
use crate::storage::Cf;
use akd::{AkdLabel, HistoryParams};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kt_client::head::{SignedHead, hex_array};
use kt_client::wire::{
    AbsenceResponse, AuditBlobEntry, AuditListing, BatchLookupItem, BatchLookupRequest, BatchLookupResponse,
    DecodedAbsence, HistoryResponse, InfoResponse, LookupResponse, encode_absence, encode_history_proof,
    encode_lookup_proof,
};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Attempts at pairing a proof with its head before answering 503.
const ATTEMPTS: usize = 3;
/// How long a retry waits for the next read view.
const VIEW_WAIT: Duration = Duration::from_secs(2);
/// Most entries in one audit listing.
const MAX_LISTING: u64 = 1000;

fn path_err(what: &str, r: &PathRejection) -> ApiError {
    ApiError::bad_request(format!("{what}: {}", r.body_text()))
}

/// Runs `f` on the current view until akd answers at that view's epoch.
async fn on_view<T, F, Fut>(state: &AppState, mut f: F) -> Result<(T, Arc<ReadView>), ApiError>
where
    F: FnMut(Arc<ReadView>) -> Fut,
    Fut: Future<Output = Result<(T, u64), ApiError>>,
{
    let mut views = state.shared.views.clone();
    for _ in 0..ATTEMPTS {
        let view = Arc::clone(&views.borrow_and_update());
        let (out, epoch) = f(Arc::clone(&view)).await?;
        if epoch == view.head.head.epoch && !ran_ahead(state, epoch).await? {
            return Ok((out, view));
        }
        tracing::debug!(
            view = view.head.head.epoch,
            akd = epoch,
            "epoch moved during a read; retrying"
        );
        let _ = tokio::time::timeout(VIEW_WAIT, views.changed()).await;
    }
    Err(ApiError::Unavailable("a new epoch is being installed; retry".into()))
}

/// On a read replica: whether the store ran two or more epochs past `epoch` while a
/// proof at `epoch` was being read. akd keeps only one previous version of a tree
/// node, so such a proof may have read nodes without their `epoch` version; it is
/// dropped and the request retried on a newer view. (The publisher instead holds its
/// next commit until readers of the view before are done, so it never needs this.)
async fn ran_ahead(state: &AppState, epoch: u64) -> Result<bool, ApiError> {
    if state.shared.intake.is_some() {
        return Ok(false);
    }
    let stored = state
        .shared
        .storage
        .stored_azks()
        .await?
        .map_or(0, |azks| azks.get_latest_epoch());
    Ok(stored > epoch.saturating_add(1))
}

/// With `verify_proofs`, checks a proof as a client would before it is served. A
/// failure is this server's bug or a store that moved under it: it is counted, logged
/// and answered with a 503 (the client retries), never served.
fn self_check<T>(
    state: &AppState,
    what: &str,
    label: &str,
    check: impl FnOnce() -> Result<T, kt_client::verify::VerifyError>,
) -> Result<(), ApiError> {
    if !state.verify_proofs {
        return Ok(());
    }
    check().map(drop).map_err(|e| {
        state.metrics.proofs_rejected.inc();
        tracing::error!(what, label, error = %e, "a proof failed the server's own check; not served");
        ApiError::Unavailable(format!(
            "the {what} proof for {label:?} failed this server's own check; retry"
        ))
    })
}

/// [`self_check`] of a lookup proof against its view's head.
fn check_lookup(state: &AppState, view: &ReadView, label: &str, proof: &akd::LookupProof) -> Result<(), ApiError> {
    self_check(state, "lookup", label, || {
        let head = &view.head.head;
        kt_client::verify::lookup(
            &state.shared.vrf_public_key,
            head.root,
            head.epoch,
            AkdLabel::from(label),
            proof.clone(),
        )
    })
}

/// [`self_check`] of an absence proof against its view's head.
fn check_absence(state: &AppState, view: &ReadView, label: &str, absence: &DecodedAbsence) -> Result<(), ApiError> {
    self_check(state, "absence", label, || {
        kt_client::verify::verify_absence(
            &view.head.head,
            &AkdLabel::from(label),
            &state.shared.vrf_public_key,
            absence,
        )
    })
}

/// Whether `label` has a value at or before `epoch`, by our own index (akd reports
/// every storage error during a lookup as "not found"; we must not).
async fn is_known(state: &AppState, label: &str, epoch: u64) -> Result<bool, ApiError> {
    Ok(state
        .shared
        .storage
        .latest_state(label.as_bytes().to_vec(), epoch)
        .await?
        .is_some())
}

/// A proof of a present label, or the proof that the label is absent.
enum Answer<P> {
    /// akd's proof.
    Present(P),
    /// The label's absence proof (boxed: a lookup proof is the usual answer).
    Absent(Box<DecodedAbsence>),
}

/// The absence proof of `label` on `view`, and the epoch akd proved it at.
async fn absence(view: &ReadView, label: &str) -> Result<(DecodedAbsence, u64), ApiError> {
    Ok(view.dir.absence(&AkdLabel::from(label)).await?)
}

/// On `view`: the absence answer of `label` and the epoch it is at, unless the label
/// is known at the view's epoch (then the caller asks akd for its proof).
async fn absent_unless_known<P>(
    state: &AppState,
    view: &ReadView,
    label: &str,
) -> Result<Option<(Answer<P>, u64)>, ApiError> {
    if is_known(state, label, view.head.head.epoch).await? {
        return Ok(None);
    }
    let (proof, at) = absence(view, label).await?;
    Ok(Some((Answer::Absent(Box::new(proof)), at)))
}

/// The `404` of a label absent at `view`'s epoch, with its proof.
fn absent(state: &AppState, view: &ReadView, label: String, proof: &DecodedAbsence) -> Result<Response, ApiError> {
    check_absence(state, view, &label, proof)?;
    let epoch = view.head.head.epoch;
    let body = AbsenceResponse {
        error: format!("label {label:?} is not in the directory at epoch {epoch}"),
        label,
        head: view.head.clone(),
        absence: encode_absence(proof),
    };
    Ok((StatusCode::NOT_FOUND, Json(body)).into_response())
}

/// `GET /v1/info`.
pub(super) async fn info(State(state): State<AppState>) -> Json<InfoResponse> {
    Json(InfoResponse {
        namespace: state.shared.namespace.clone(),
        signing_key: hex::encode(state.shared.signing_key.as_bytes()),
        vrf_public_key: hex::encode(&state.shared.vrf_public_key),
        epoch_interval_secs: state.epoch_interval_secs,
        latest_epoch: state.view().head.head.epoch,
    })
}

/// `GET /v1/heads/latest`: the freshest signature of the latest epoch.
pub(super) async fn latest_head(State(state): State<AppState>) -> Json<SignedHead> {
    Json(state.view().head.clone())
}

/// The head of `epoch` as first signed: the epoch log's leaf (`/v1/heads/latest`
/// serves the freshest re-signature).
async fn stored_head(state: &AppState, epoch: u64) -> Result<SignedHead, ApiError> {
    let view = state.view();
    if epoch > view.head.head.epoch {
        return Err(ApiError::NotFound(format!(
            "epoch {epoch} does not exist yet (latest is {})",
            view.head.head.epoch
        )));
    }
    let bytes = stored(state, Cf::Heads, epoch, "head").await?;
    SignedHead::from_bytes(&bytes).map_err(|e| ApiError::Internal(format!("stored head of epoch {epoch}: {e}")))
}

/// The record of `epoch` in an epoch-keyed column family; its absence is a server bug
/// (a 500), since callers only ask for epochs that must have one.
async fn stored(state: &AppState, cf: Cf, epoch: u64, what: &str) -> Result<Vec<u8>, ApiError> {
    state
        .shared
        .storage
        .get_raw(cf, epoch.to_be_bytes().to_vec())
        .await?
        .ok_or_else(|| ApiError::Internal(format!("no {what} stored for epoch {epoch}")))
}

/// `GET /v1/heads/{epoch}`.
pub(super) async fn head(
    State(state): State<AppState>,
    epoch: Result<Path<u64>, PathRejection>,
) -> Result<Json<SignedHead>, ApiError> {
    let Path(epoch) = epoch.map_err(|r| path_err("epoch", &r))?;
    Ok(Json(stored_head(&state, epoch).await?))
}

/// `GET /v1/lookup/{label}`: the lookup proof, or a `404` with the absence proof.
pub(super) async fn lookup(
    State(state): State<AppState>,
    label: Result<Path<String>, PathRejection>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(label) = label.map_err(|r| path_err("label", &r))?;
    let Query(query) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    check_label(&label, state.limits.max_label_bytes, "label")?;
    let (answer, view) = on_view(&state, |view| {
        let (state, label) = (state.clone(), label.clone());
        async move {
            if let Some(absent) = absent_unless_known(&state, &view, &label).await? {
                return Ok(absent);
            }
            let (proof, at) = view.dir.lookup(AkdLabel::from(label.as_str())).await?;
            Ok((Answer::Present(proof), at.0))
        }
    })
    .await?;
    match answer {
        Answer::Present(proof) => {
            check_lookup(&state, &view, &label, &proof)?;
            let log = match query.log {
                Some(true) => Some(super::log::log_proof(&state, view.head.head.epoch).await?),
                _ => None,
            };
            Ok(Json(LookupResponse {
                label,
                head: view.head.clone(),
                proof: encode_lookup_proof(&proof),
                log,
            })
            .into_response())
        }
        Answer::Absent(proof) => absent(&state, &view, label, &proof),
    }
}

/// `POST /v1/lookup`: one head, a result per label (unknown labels get an error entry
/// instead of failing the batch, as akd's `batch_lookup` would).
pub(super) async fn batch_lookup(
    State(state): State<AppState>,
    body: Result<Json<BatchLookupRequest>, JsonRejection>,
) -> Result<Json<BatchLookupResponse>, ApiError> {
    let Json(request) = body.map_err(|r| super::error::rejection(r.status(), r.body_text()))?;
    if request.labels.is_empty() || request.labels.len() > state.limits.max_batch_lookup {
        return Err(ApiError::bad_request(format!(
            "labels: between 1 and {} labels per request, got {}",
            state.limits.max_batch_lookup,
            request.labels.len()
        )));
    }
    for (i, label) in request.labels.iter().enumerate() {
        check_label(label, state.limits.max_label_bytes, &format!("labels[{i}]"))?;
    }
    let (results, view) = on_view(&state, |view| {
        let (state, labels) = (state.clone(), request.labels.clone());
        async move {
            let epoch = view.head.head.epoch;
            let mut known = Vec::new();
            for label in &labels {
                if is_known(&state, label, epoch).await? && !known.contains(label) {
                    known.push(label.clone());
                }
            }
            let mut proofs = std::collections::HashMap::new();
            let mut absences = std::collections::HashMap::new();
            let mut at = epoch;
            if !known.is_empty() {
                let akd_labels: Vec<AkdLabel> = known.iter().map(|l| AkdLabel::from(l.as_str())).collect();
                let (got, hash) = view.dir.batch_lookup(&akd_labels).await?;
                at = hash.0;
                proofs.extend(known.into_iter().zip(got));
            }
            for label in &labels {
                if at == epoch && !proofs.contains_key(label) && !absences.contains_key(label) {
                    let (proof, proved_at) = absence(&view, label).await?;
                    at = proved_at;
                    absences.insert(label.clone(), proof);
                }
            }
            // A proof at another epoch is dropped by `on_view` anyway.
            if at == epoch {
                for (label, proof) in &proofs {
                    check_lookup(&state, &view, label, proof)?;
                }
                for (label, proof) in &absences {
                    check_absence(&state, &view, label, proof)?;
                }
            }
            let results = labels
                .into_iter()
                .map(|label| match (proofs.get(&label), absences.get(&label)) {
                    (Some(p), _) => BatchLookupItem {
                        proof: Some(encode_lookup_proof(p)),
                        absence: None,
                        error: None,
                        label,
                    },
                    (None, absence) => BatchLookupItem {
                        proof: None,
                        absence: absence.map(encode_absence),
                        error: Some(format!("label is not in the directory at epoch {epoch}")),
                        label,
                    },
                })
                .collect();
            Ok((results, at))
        }
    })
    .await?;
    Ok(Json(BatchLookupResponse {
        head: view.head.clone(),
        results,
    }))
}

/// Query of `GET /v1/history/{label}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Only the n most recent versions (all by default).
    most_recent: Option<u64>,
    /// `true`: add the head's place in the epoch log.
    log: Option<bool>,
}

/// Query of `GET /v1/lookup/{label}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    /// `true`: add the head's place in the epoch log.
    log: Option<bool>,
}

/// `GET /v1/history/{label}?most_recent=N`: the history proof, or a `404` with the
/// absence proof.
pub(super) async fn history(
    State(state): State<AppState>,
    label: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(label) = label.map_err(|r| path_err("label", &r))?;
    check_label(&label, state.limits.max_label_bytes, "label")?;
    let Query(query) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let params = match query.most_recent {
        None => HistoryParams::Complete,
        Some(0) => return Err(ApiError::bad_request("most_recent must be at least 1")),
        Some(n) => HistoryParams::MostRecent(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let (answer, view) = on_view(&state, |view| {
        let (state, label) = (state.clone(), label.clone());
        async move {
            if let Some(absent) = absent_unless_known(&state, &view, &label).await? {
                return Ok(absent);
            }
            let (proof, at) = view.dir.key_history(&AkdLabel::from(label.as_str()), params).await?;
            Ok((Answer::Present(proof), at.0))
        }
    })
    .await?;
    let proof = match answer {
        Answer::Present(proof) => proof,
        Answer::Absent(proof) => return absent(&state, &view, label, &proof),
    };
    self_check(&state, "history", &label, || {
        let head = &view.head.head;
        kt_client::verify::history(
            &state.shared.vrf_public_key,
            head.root,
            head.epoch,
            AkdLabel::from(label.as_str()),
            proof.clone(),
            params,
        )
    })?;
    let log = match query.log {
        Some(true) => Some(super::log::log_proof(&state, view.head.head.epoch).await?),
        _ => None,
    };
    Ok(Json(HistoryResponse {
        label,
        head: view.head.clone(),
        most_recent: query.most_recent,
        proof: encode_history_proof(&proof),
        log,
    })
    .into_response())
}

/// The blob name of the audit blob ending at `epoch`, its bytes (the shared copy),
/// and a response slot.
async fn blob(
    state: &AppState,
    client: Option<super::guard::ClientIp>,
    epoch: u64,
) -> Result<(String, bytes::Bytes, super::blobs::BlobSlot), ApiError> {
    let latest = state.shared.latest_blob_epoch.load(std::sync::atomic::Ordering::SeqCst);
    if epoch == 0 || epoch > latest {
        return Err(ApiError::NotFound(format!(
            "no audit blob for epoch {epoch} (blobs exist for epochs 1 to {latest})"
        )));
    }
    let slot = state.blobs.slot(client.and_then(|c| c.0))?;
    let head = stored_head(state, epoch).await?.head;
    let data = state.blobs.get(&state.shared.storage, epoch).await?;
    Ok((blob_name(epoch, &head.previous_root, &head.root), data, slot))
}

fn blob_name(epoch: u64, previous: &[u8; 32], current: &[u8; 32]) -> String {
    format!("{epoch}/{}/{}", hex::encode(previous), hex::encode(current))
}

/// `GET /v1/audit/{epoch}`: `{"epoch", "name", "blob"}`, streamed (the base64 is
/// encoded slice by slice from the one shared copy of the blob).
pub(super) async fn audit_blob(
    State(state): State<AppState>,
    client: Option<axum::Extension<super::guard::ClientIp>>,
    epoch: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(epoch) = epoch.map_err(|r| path_err("epoch", &r))?;
    let (name, data, slot) = blob(&state, client.map(|c| c.0), epoch).await?;
    let len = super::blobs::BlobServer::json_len(epoch, &name, data.len());
    let body = state.blobs.json(epoch, &name, data, slot);
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

/// `GET /{epoch}/{hex previous root}/{hex root}`: the raw blob, WhatsApp-style.
pub(super) async fn audit_blob_by_name(
    State(state): State<AppState>,
    client: Option<axum::Extension<super::guard::ClientIp>>,
    parts: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("no such audit blob".into());
    let Path((epoch, previous, current)) = parts.map_err(|_| not_found())?;
    let epoch: u64 = epoch.parse().map_err(|_| not_found())?;
    let previous: [u8; 32] = hex_array(&previous, "previous root").map_err(|_| not_found())?;
    let current: [u8; 32] = hex_array(&current, "root").map_err(|_| not_found())?;
    let (name, data, slot) = blob(&state, client.map(|c| c.0), epoch).await?;
    if name != blob_name(epoch, &previous, &current) {
        return Err(ApiError::NotFound(format!(
            "the audit blob of epoch {epoch} is named {name}"
        )));
    }
    let len = data.len();
    let body = state.blobs.raw(data, slot);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListingQuery {
    /// First epoch (default 1).
    from: Option<u64>,
    /// Most entries (default and maximum 1000).
    limit: Option<u64>,
}

/// `GET /v1/audit?from=&limit=`: blob names by epoch.
pub(super) async fn audit_listing(
    State(state): State<AppState>,
    query: Result<Query<ListingQuery>, QueryRejection>,
) -> Result<Json<AuditListing>, ApiError> {
    let Query(query) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let from = query.from.unwrap_or(1).max(1);
    let limit = query.limit.unwrap_or(MAX_LISTING).min(MAX_LISTING);
    let latest = state.shared.latest_blob_epoch.load(std::sync::atomic::Ordering::SeqCst);
    let mut blobs = Vec::new();
    if limit > 0 && from <= latest {
        let count = usize::try_from(limit.min(latest - from + 1)).unwrap_or(usize::MAX);
        for (key, value) in state
            .shared
            .storage
            .scan(Cf::Heads, from.to_be_bytes().to_vec(), count)
            .await?
        {
            let head = SignedHead::from_bytes(&value)
                .map_err(|e| ApiError::Internal(format!("stored head at {}: {e}", hex::encode(&key))))?
                .head;
            blobs.push(AuditBlobEntry {
                epoch: head.epoch,
                name: blob_name(head.epoch, &head.previous_root, &head.root),
            });
        }
    }
    Ok(Json(AuditListing { blobs }))
}
