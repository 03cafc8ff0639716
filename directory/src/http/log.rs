//! The epoch log's routes: c2sp.org/tlog-tiles under `/log/` (checkpoint, hash tiles,
//! entry bundles), and two JSON conveniences for clients, a head's inclusion and a
//! consistency proof (`docs/api.md`).

use super::{ApiError, AppState};
use crate::storage::Cf;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kt_client::head::SignedHead;
use kt_client::tlog::tiles::{TileKind, TilePath, encode_bundle};
use kt_client::tlog::{ConsistencyResponse, LogProof, encode_hashes};

/// Tiles and bundles never change once they exist.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The checkpoint changes every epoch: caches keep it a few seconds at most.
const CHECKPOINT_CACHE: &str = "public, max-age=5";

/// `GET /log/checkpoint`: the latest checkpoint with the co-signatures collected.
pub(super) async fn checkpoint(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, CHECKPOINT_CACHE),
        ],
        state.shared.log.checkpoint(),
    )
        .into_response()
}

/// `GET /log/tile/{*path}`: a hash tile or an entry bundle, full or partial.
pub(super) async fn tile(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(path) = path.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let tile = TilePath::parse(&format!("tile/{path}")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let log = &state.shared.log;
    let bytes = match tile.kind {
        TileKind::Hashes(_) => log.tile(&tile),
        TileKind::Entries => {
            let (start, end) = tile.leaf_range();
            if tile.exists_in(log.size()) {
                let count = usize::try_from(end - start).unwrap_or(usize::MAX);
                let heads = state
                    .shared
                    .storage
                    .scan(Cf::Heads, start.to_be_bytes().to_vec(), count)
                    .await?;
                if heads.len() != count {
                    return Err(ApiError::Internal(format!("heads {start}..{end} are not all stored")));
                }
                Some(
                    encode_bundle(heads.iter().map(|(_, v)| v.as_slice()))
                        .map_err(|e| ApiError::Internal(e.to_string()))?,
                )
            } else {
                None
            }
        }
    };
    let bytes = bytes
        .ok_or_else(|| ApiError::NotFound(format!("{} is not in the log of {} leaves", tile.to_path(), log.size())))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, IMMUTABLE),
        ],
        bytes,
    )
        .into_response())
}

/// The log proof of `epoch`'s head in the latest checkpoint.
pub(super) async fn log_proof(state: &AppState, epoch: u64) -> Result<LogProof, ApiError> {
    let bytes = state
        .shared
        .storage
        .get_raw(Cf::Heads, epoch.to_be_bytes().to_vec())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("epoch {epoch} is not in the log")))?;
    let leaf = SignedHead::from_bytes(&bytes).map_err(|e| ApiError::Internal(format!("stored head {epoch}: {e}")))?;
    let (checkpoint, path) = state
        .shared
        .log
        .inclusion(epoch)
        .ok_or_else(|| ApiError::NotFound(format!("epoch {epoch} is not in the log yet")))?;
    Ok(LogProof {
        checkpoint,
        leaf,
        inclusion: encode_hashes(&path),
    })
}

/// `GET /v1/log/proof/{epoch}`: the head of `epoch` as first signed, its inclusion
/// proof and the checkpoint it is in.
pub(super) async fn proof(
    State(state): State<AppState>,
    epoch: Result<Path<u64>, PathRejection>,
) -> Result<Json<LogProof>, ApiError> {
    let Path(epoch) = epoch.map_err(|r| ApiError::bad_request(format!("epoch: {}", r.body_text())))?;
    Ok(Json(log_proof(&state, epoch).await?))
}

/// `GET /v1/log/consistency/{old}/{new}`: the consistency proof between two sizes.
pub(super) async fn consistency(
    State(state): State<AppState>,
    sizes: Result<Path<(u64, u64)>, PathRejection>,
) -> Result<Json<ConsistencyResponse>, ApiError> {
    let Path((old, new)) = sizes.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let size = state.shared.log.size();
    if old > new || new > size {
        return Err(ApiError::bad_request(format!(
            "no consistency proof from {old} to {new}: sizes must satisfy old <= new <= {size}"
        )));
    }
    let proof = state
        .shared
        .log
        .consistency(old, new)
        .ok_or_else(|| ApiError::Internal("consistency proof".into()))?;
    Ok(Json(ConsistencyResponse {
        old,
        new,
        proof: encode_hashes(&proof),
    }))
}
