//! The auditor as a witness of the directory's epoch log: c2sp.org/tlog-witness
//! `POST /add-checkpoint`, answered with a c2sp.org/tlog-cosignature `cosignature/v1`.
//!
//! Beyond what any witness checks (the log's signature, RFC 6962 consistency with the
//! last size it co-signed), this one co-signs a tree only if every leaf is the head of
//! an epoch whose append-only proof it verified: it rebuilds the tree from its own
//! records and compares roots. A checkpoint beyond what it has verified gets a `503`
//! with `Retry-After`, so the directory tries again. Two checkpoints the directory
//! signed for one size with two roots are fork evidence. The check and the update of the
//! co-signed size happen under one lock, and the new size is on disk before the
//! co-signature leaves.

use crate::http::{ApiError, AppState};
use crate::store::{Store, StoreError, WitnessRecord, blocking};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::SigningKey;
use kt_client::auditor::{Evidence, EvidenceKind, EvidenceSource};
use kt_client::head::unix_ms;
use kt_client::tlog::checkpoint::{Checkpoint, log_key, origin_for};
use kt_client::tlog::merkle::{MemoryLog, empty_root, leaf_hash, verify_consistency};
use kt_client::tlog::note::{Note, TYPE_COSIGNATURE_V1, VerifierKey, cosign};
use kt_client::tlog::witness::{AddCheckpoint, SIZE_CONTENT_TYPE};
use std::sync::Arc;
use tokio::sync::Mutex;

/// The witness's key, name and the tree of the heads it verified.
#[derive(Debug)]
pub struct Witness {
    /// The auditor's key; `cosignature/v1` messages start with `cosignature/v1\n`, which
    /// neither of its other two formats can (`docs/auditor.md`).
    key: SigningKey,
    /// The witness's key name.
    name: String,
    /// The tree of the verified heads, grown on demand; the lock also serializes every
    /// check-then-update of the co-signed size.
    log: Mutex<MemoryLog>,
}

impl Witness {
    /// A witness named `name` signing with `key`.
    pub fn new(key: SigningKey, name: String) -> Result<Witness, kt_client::tlog::note::NoteError> {
        VerifierKey::new(&name, TYPE_COSIGNATURE_V1, key.verifying_key())?;
        Ok(Witness {
            key,
            name,
            log: Mutex::new(MemoryLog::new()),
        })
    }

    /// The witness's verifier key (vkey text), for the directory's `--witness URL=VKEY`
    /// and clients' pins.
    pub fn vkey(&self) -> String {
        VerifierKey::new(&self.name, TYPE_COSIGNATURE_V1, self.key.verifying_key())
            .map(|v| v.to_vkey())
            .unwrap_or_default()
    }
}

/// The witness name of an auditor reached at `public_url`: the URL without its scheme
/// and trailing slashes.
pub fn name_for(public_url: &str) -> String {
    let rest = public_url.split_once("://").map_or(public_url, |(_, r)| r);
    rest.trim_end_matches('/').to_owned()
}

/// A response with a plain-text reason.
fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// `409` with the co-signed size, as the spec asks.
fn conflict(size: u64) -> Response {
    (
        StatusCode::CONFLICT,
        [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)],
        format!("{size}\n"),
    )
        .into_response()
}

/// `POST /add-checkpoint`.
pub async fn add_checkpoint(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let result = handle(&app, &body).await;
    let label = match &result {
        Ok(r) => r.status().as_str().to_owned(),
        Err(_) => "500".to_owned(),
    };
    app.metrics.witness_requests.with_label_values(&[label.as_str()]).inc();
    result
}

async fn handle(app: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let Ok(req) = AddCheckpoint::parse(body) else {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "not an add-checkpoint body (c2sp.org/tlog-witness)",
        ));
    };
    let Ok(note) = Note::parse(&req.checkpoint) else {
        return Ok(text(StatusCode::BAD_REQUEST, "the checkpoint is not a signed note"));
    };
    let Ok(checkpoint) = Checkpoint::parse_text(&note.text) else {
        return Ok(text(StatusCode::BAD_REQUEST, "the note is not a checkpoint"));
    };
    let store = app.store.clone();
    let Some(pins) = blocking(move || store.pins()).await? else {
        return Ok(unavailable("this auditor has not verified epoch 0 yet"));
    };
    let (Ok(origin), Ok(log)) = (origin_for(&pins.namespace), log_key(&pins.namespace, app.directory_key)) else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "the directory's namespace has no log origin",
        ));
    };
    if checkpoint.origin != origin {
        return Ok(text(
            StatusCode::NOT_FOUND,
            format!("unknown origin; this witness knows {origin}"),
        ));
    }
    let signed = note.signatures_by(&log).any(|s| log.verify(&note.text, s).is_ok());
    if !signed {
        return Ok(text(
            StatusCode::FORBIDDEN,
            "no signature by the directory's key verifies",
        ));
    }
    if req.old > checkpoint.size {
        return Ok(text(StatusCode::BAD_REQUEST, "the old size is above the checkpoint's"));
    }
    let witness = Arc::clone(&app.witness);
    let mut tree = witness.log.lock().await;
    let store = app.store.clone();
    let last = blocking(move || store.witness()).await?;
    let (last_size, last_root) = match &last {
        Some(w) => (w.size, root_of(&w.root)),
        None => (0, empty_root()),
    };
    if checkpoint.size == last_size && checkpoint.root != last_root {
        if let Some(previous) = &last {
            record_fork(app, previous, &note.to_text(), checkpoint.size).await?;
        }
        return Ok(conflict(last_size));
    }
    if req.old != last_size {
        return Ok(conflict(last_size));
    }
    if verify_consistency(req.old, checkpoint.size, &req.proof, &last_root, &checkpoint.root).is_err() {
        return Ok(text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the consistency proof does not verify",
        ));
    }
    // Every leaf must be a head this auditor verified.
    let store = app.store.clone();
    let (from, to) = (tree.size(), checkpoint.size);
    let missing = extend(&store, &mut tree, from, to).await?;
    if let Some(epoch) = missing {
        return Ok(unavailable(format!(
            "epoch {epoch} is not verified yet; the checkpoint has {to} leaves"
        )));
    }
    let ours = tree
        .root(checkpoint.size)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if ours != checkpoint.root {
        tracing::warn!(
            size = checkpoint.size,
            "a checkpoint whose tree is not the tree of the heads this auditor verified"
        );
        return Ok(text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the checkpoint's tree is not the tree of the heads this auditor verified",
        ));
    }
    let now = unix_ms() / 1000;
    let sig = cosign(&witness.name, &witness.key, &note.text, now).map_err(|e| ApiError::Internal(e.to_string()))?;
    let record = WitnessRecord {
        size: checkpoint.size,
        root: hex::encode(checkpoint.root),
        note: note.to_text(),
        cosigned_at: now,
    };
    let store = app.store.clone();
    blocking(move || store.set_witness(&record)).await?;
    app.metrics
        .witness_cosigned_size
        .set(i64::try_from(checkpoint.size).unwrap_or(i64::MAX));
    drop(tree);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        sig.line(),
    )
        .into_response())
}

fn unavailable(reason: impl Into<String>) -> Response {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, reason);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

fn root_of(hex_root: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let _ = hex::decode_to_slice(hex_root, &mut out);
    out
}

/// Grows `tree` with the verified heads of epochs `from..to`; returns the first epoch
/// not verified yet, if any.
async fn extend(store: &Store, tree: &mut MemoryLog, from: u64, to: u64) -> Result<Option<u64>, StoreError> {
    let mut next = from;
    while next < to {
        let s = store.clone();
        let batch = blocking(move || s.epochs(Some(next), 1024)).await?;
        if batch.is_empty() {
            return Ok(Some(next));
        }
        for record in batch {
            if next >= to {
                break;
            }
            if record.head.head.epoch != next {
                return Ok(Some(next));
            }
            let Ok(bytes) = record.head.to_bytes() else {
                return Ok(Some(next));
            };
            tree.append(leaf_hash(&bytes));
            next += 1;
        }
    }
    Ok(None)
}

/// Publishes two checkpoints of one size with two roots, both signed by the directory.
async fn record_fork(app: &AppState, previous: &WitnessRecord, now: &str, size: u64) -> Result<(), StoreError> {
    let evidence = Evidence {
        id: 0,
        kind: EvidenceKind::LogFork,
        epoch: size.saturating_sub(1),
        detected_at_ms: unix_ms(),
        source: EvidenceSource::Auditor,
        reason: format!(
            "the directory signed two epoch-log checkpoints of size {size}:\n{}\n{now}",
            previous.note
        ),
        heads: vec![],
        blob_name: None,
    };
    let store = app.store.clone();
    let (id, created) = blocking(move || store.add_evidence(evidence, None)).await?;
    if created {
        app.metrics.evidence.with_label_values(&["LogFork"]).inc();
        tracing::error!(id, size, "epoch-log fork: evidence published");
    }
    Ok(())
}
