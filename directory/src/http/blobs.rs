//! Audit blobs for anonymous readers, with bounded memory.
//!
//! A blob runs to 100 MB and more at 10M entries. Serving each request from its own
//! copy (and its base64 JSON form) held ~4.6 times the blob per reader, for as long as
//! the reader took: a few dozen slow readers could exhaust the publisher's memory. So:
//!
//! - one shared copy per blob ([`Bytes`], reference counted), the newest one read kept
//!   for the next reader; every response is a stream of slices of it (the JSON route
//!   encodes base64 slice by slice);
//! - at most `max_blob_readers` blob responses at once (beyond that, `503` at once);
//! - each response is written by a task of its own into a small channel, with a
//!   deadline (`blob_send_timeout`): a reader too slow to take it by then is cut off,
//!   and its task lets go of the blob and its slot even if the reader never reads
//!   again.

use super::ApiError;
use crate::storage::{Cf, Store};
use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bytes of one streamed slice of a raw blob.
const RAW_CHUNK: usize = 64 << 10;
/// Bytes of blob encoded per slice of the JSON form (a multiple of 3: base64 of each
/// slice is then a prefix of the whole encoding).
const JSON_CHUNK: usize = 48 << 10;

/// The blob routes' shared state.
#[derive(Debug, Clone)]
pub struct BlobServer {
    /// The newest blob read, shared by every response streaming it.
    cached: Arc<Mutex<Option<(u64, Bytes)>>>,
    /// One load from the store at a time: readers of a blob being loaded wait for it.
    loading: Arc<tokio::sync::Mutex<()>>,
    /// Blob responses in flight.
    slots: Arc<Semaphore>,
    /// Longest time one response may take to be written.
    send_timeout: Duration,
}

impl BlobServer {
    /// At most `readers` blob responses at once, each cut off after `send_timeout`.
    pub fn new(readers: usize, send_timeout: Duration) -> BlobServer {
        BlobServer {
            cached: Arc::default(),
            loading: Arc::default(),
            slots: Arc::new(Semaphore::new(readers.max(1))),
            send_timeout,
        }
    }

    /// A slot for one response, or `503` at once when all are taken.
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| ApiError::Unavailable("too many audit blob downloads in flight; retry shortly".into()))
    }

    /// The blob of `epoch`: the shared copy if it is the one kept, else read once.
    pub async fn get(&self, storage: &Store, epoch: u64) -> Result<Bytes, ApiError> {
        if let Some(bytes) = self.kept(epoch) {
            return Ok(bytes);
        }
        let _loading = self.loading.lock().await;
        if let Some(bytes) = self.kept(epoch) {
            return Ok(bytes);
        }
        let data = storage
            .get_raw(Cf::AuditBlobs, epoch.to_be_bytes().to_vec())
            .await?
            .ok_or_else(|| ApiError::Internal(format!("no audit blob stored for epoch {epoch}")))?;
        let bytes = Bytes::from(data);
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some((epoch, bytes.clone()));
        Ok(bytes)
    }

    fn kept(&self, epoch: u64) -> Option<Bytes> {
        match &*self.cached.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((e, bytes)) if *e == epoch => Some(bytes.clone()),
            _ => None,
        }
    }

    /// The blob as is, streamed in slices.
    pub fn raw(&self, blob: Bytes, slot: OwnedSemaphorePermit) -> Body {
        let len = blob.len();
        let chunks = (0..len)
            .step_by(RAW_CHUNK)
            .map(move |at| blob.slice(at..(at + RAW_CHUNK).min(len)));
        self.stream(chunks, slot)
    }

    /// `{"epoch":…,"name":…,"blob":"<base64>"}`, the base64 encoded slice by slice.
    pub fn json(&self, epoch: u64, name: &str, blob: Bytes, slot: OwnedSemaphorePermit) -> Body {
        let head = serde_json::json!({ "epoch": epoch, "name": name }).to_string();
        // `{"epoch":..,"name":..}` → `{"epoch":..,"name":..,"blob":"`
        let prefix = Bytes::from(format!("{},\"blob\":\"", head.trim_end_matches('}')));
        let len = blob.len();
        let encoded = (0..len)
            .step_by(JSON_CHUNK)
            .map(move |at| Bytes::from(B64.encode(&blob[at..(at + JSON_CHUNK).min(len)])));
        let chunks = std::iter::once(prefix)
            .chain(encoded)
            .chain(std::iter::once(Bytes::from_static(b"\"}")));
        self.stream(chunks, slot)
    }

    /// Writes `chunks` from a task of its own through a channel of two slices; after
    /// the deadline the task stops and lets go of the blob and the slot, and the body
    /// ends in an error (the client sees a cut response, never a short one that looks
    /// complete).
    fn stream(&self, chunks: impl Iterator<Item = Bytes> + Send + 'static, slot: OwnedSemaphorePermit) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let complete = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let deadline = Instant::now() + self.send_timeout;
        let done = Arc::clone(&complete);
        tokio::spawn(async move {
            let _slot = slot;
            for chunk in chunks {
                match tokio::time::timeout_at(deadline, tx.send(chunk)).await {
                    Ok(Ok(())) => {}
                    // The reader went away.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::debug!("audit blob reader too slow; cut off");
                        return;
                    }
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Body::from_stream(futures_util::stream::unfold(Some(rx), move |rx| {
            let complete = Arc::clone(&complete);
            async move {
                let mut rx = rx?;
                match rx.recv().await {
                    Some(chunk) => Some((Ok(chunk), Some(rx))),
                    None if complete.load(std::sync::atomic::Ordering::SeqCst) => None,
                    None => Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "audit blob download took longer than allowed",
                        )),
                        None,
                    )),
                }
            }
        }))
    }

    /// Bytes of [`BlobServer::json`]'s body for a blob of `len` bytes.
    pub fn json_len(epoch: u64, name: &str, len: usize) -> usize {
        let head = serde_json::json!({ "epoch": epoch, "name": name }).to_string();
        head.len() - 1 + ",\"blob\":\"".len() + len.div_ceil(3) * 4 + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_json_form_is_the_whole_blob_in_base64_and_slots_are_bounded() {
        let server = BlobServer::new(1, Duration::from_secs(60));
        let blob: Bytes = (0..200_000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>().into();
        let slot = server.slot().expect("a slot");
        assert!(server.slot().is_err(), "one reader at a time");
        let body = server.json(5, "5/aa/bb", blob.clone(), slot);
        let bytes = body.collect().await.expect("body").to_bytes();
        assert_eq!(bytes.len(), BlobServer::json_len(5, "5/aa/bb", blob.len()));
        let parsed: kt_client::wire::AuditBlobResponse = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!((parsed.epoch, parsed.name.as_str()), (5, "5/aa/bb"));
        assert_eq!(B64.decode(parsed.blob).expect("base64"), blob);
        // The slot comes back once the response is written.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let slot = server.slot().expect("free again");
        let raw = server.raw(blob.clone(), slot).collect().await.expect("raw").to_bytes();
        assert_eq!(raw, blob);
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_cut_off_and_frees_its_slot() {
        let server = BlobServer::new(1, Duration::from_millis(200));
        let blob: Bytes = vec![7u8; 10 * RAW_CHUNK].into();
        let mut body = server.raw(blob, server.slot().expect("slot"));
        // Read one slice, then stop.
        let first = body.frame().await.expect("a frame").expect("ok");
        assert!(first.is_data());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(server.slot().is_ok(), "the stalled response let go of its slot");
        // What the reader finds when it comes back: the buffered slices, then an error.
        let mut failed = false;
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "the cut response ends in an error, not as if complete");
    }
}
