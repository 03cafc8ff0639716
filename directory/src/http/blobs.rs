//! Audit blobs for anonymous readers, with bounded memory.
//!
//! A blob runs to 100 MB and more at 10M entries. Serving each request from its own
//! copy (and its base64 JSON form) held ~4.6 times the blob per reader, for as long as
//! the reader took: a few dozen slow readers could exhaust the publisher's memory. So:
//!
//! - one shared copy per blob ([`Bytes`], reference counted), the newest one read kept
//!   for the next reader; every response is a stream of slices of it (the JSON route
//!   encodes base64 slice by slice);
//! - at most `max_blob_readers` blob responses at once, and at most
//!   `max_blob_readers_per_client` for one client address (beyond that, `503` at once);
//! - each response is written by a task of its own into a small channel, on a
//!   schedule: after a grace of ten seconds it must keep up `blob_min_rate`, and it
//!   never takes longer than `blob_send_timeout`. A reader that falls behind is cut
//!   off, and its task lets go of the blob and its slot even if the reader never reads
//!   again. Slow readers cannot hold the slots for long, and one address cannot hold
//!   them all.

use super::ApiError;
use crate::storage::{Cf, Store};
use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bytes of one streamed slice of a raw blob.
const RAW_CHUNK: usize = 64 << 10;
/// Bytes of blob encoded per slice of the JSON form (a multiple of 3: base64 of each
/// slice is then a prefix of the whole encoding).
const JSON_CHUNK: usize = 48 << 10;
/// Time a blob download has before [`BlobServer`]'s minimum rate applies (a
/// connection's slow start, the store read).
const GRACE: Duration = Duration::from_secs(10);

/// The blob routes' shared state.
#[derive(Debug, Clone)]
pub struct BlobServer {
    /// The newest blob read, shared by every response streaming it.
    cached: Arc<Mutex<Option<(u64, Bytes)>>>,
    /// One load from the store at a time: readers of a blob being loaded wait for it.
    loading: Arc<tokio::sync::Mutex<()>>,
    /// Blob responses in flight.
    slots: Arc<Semaphore>,
    /// Responses in flight by client address (only addresses with one or more).
    by_client: ByClient,
    /// Most responses in flight for one address.
    per_client: usize,
    /// Longest time one response may take to be written.
    send_timeout: Duration,
    /// Slowest pace after the grace, bytes per second.
    min_rate: u64,
    /// Time before the minimum rate applies ([`GRACE`]; shorter in tests).
    grace: Duration,
}

/// Blob responses in flight by client address.
type ByClient = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One blob response's share of the limits; given back when dropped.
#[derive(Debug)]
pub struct BlobSlot {
    _permit: OwnedSemaphorePermit,
    /// The address counted in `by_client`, and the map to count it out of.
    client: Option<(IpAddr, ByClient)>,
}

impl Drop for BlobSlot {
    fn drop(&mut self) {
        if let Some((ip, map)) = &self.client {
            count_out(map, *ip);
        }
    }
}

/// Takes one response of `ip` off `map`, forgetting the address at zero.
fn count_out(map: &ByClient, ip: IpAddr) {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

impl BlobServer {
    /// At most `limits.max_blob_readers` blob responses at once, and
    /// `limits.max_blob_readers_per_client` per client address, each cut off when it
    /// falls behind `limits.blob_min_rate` or takes longer than
    /// `limits.blob_send_timeout`.
    pub fn new(limits: &super::Limits) -> BlobServer {
        BlobServer {
            cached: Arc::default(),
            loading: Arc::default(),
            slots: Arc::new(Semaphore::new(limits.max_blob_readers.max(1))),
            by_client: Arc::default(),
            per_client: limits.max_blob_readers_per_client.max(1),
            send_timeout: limits.blob_send_timeout,
            min_rate: limits.blob_min_rate.max(1),
            grace: GRACE,
        }
    }

    /// A slot for one response to `client` (its address, when known), or `503` at
    /// once when all slots, or all of that address's, are taken.
    pub fn slot(&self, client: Option<IpAddr>) -> Result<BlobSlot, ApiError> {
        // An IPv6 client chooses among the 2^64 addresses of its /64: count the /64.
        let client = client.map(|ip| match ip {
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(std::net::Ipv6Addr::from(octets))
            }
            v4 => v4,
        });
        let counted = match client {
            Some(ip) => {
                let mut map = self.by_client.lock().unwrap_or_else(PoisonError::into_inner);
                let n = map.entry(ip).or_insert(0);
                if *n >= self.per_client {
                    return Err(ApiError::Unavailable(format!(
                        "this address already has {} audit blob download(s) in flight; retry when it is done",
                        self.per_client
                    )));
                }
                *n += 1;
                Some((ip, Arc::clone(&self.by_client)))
            }
            None => None,
        };
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Ok(BlobSlot {
                _permit: permit,
                client: counted,
            }),
            // The address was counted in: count it out again.
            Err(_) => {
                if let Some((ip, map)) = &counted {
                    count_out(map, *ip);
                }
                Err(ApiError::Unavailable(
                    "too many audit blob downloads in flight; retry shortly".into(),
                ))
            }
        }
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
    pub fn raw(&self, blob: Bytes, slot: BlobSlot) -> Body {
        let len = blob.len();
        let chunks = (0..len)
            .step_by(RAW_CHUNK)
            .map(move |at| blob.slice(at..(at + RAW_CHUNK).min(len)));
        self.stream(chunks, slot)
    }

    /// `{"epoch":…,"name":…,"blob":"<base64>"}`, the base64 encoded slice by slice.
    pub fn json(&self, epoch: u64, name: &str, blob: Bytes, slot: BlobSlot) -> Body {
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

    /// Writes `chunks` from a task of its own through a channel of two slices. Each
    /// slice has a deadline: the grace plus the bytes before it at the minimum rate,
    /// and never past the send timeout. A reader behind schedule is cut off: the task
    /// lets go of the blob and the slot, and the body ends in an error (the client
    /// sees a cut response, never a short one that looks complete).
    fn stream(&self, chunks: impl Iterator<Item = Bytes> + Send + 'static, slot: BlobSlot) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let complete = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let start = Instant::now();
        let (send_timeout, min_rate, grace) = (self.send_timeout, self.min_rate, self.grace);
        let done = Arc::clone(&complete);
        tokio::spawn(async move {
            let _slot = slot;
            let mut sent: u64 = 0;
            for chunk in chunks {
                let paced = grace + Duration::from_secs_f64(sent as f64 / min_rate as f64);
                let deadline = start + paced.min(send_timeout);
                sent += chunk.len() as u64;
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

    fn limits(readers: usize, send_timeout: Duration) -> crate::http::Limits {
        crate::http::Limits {
            max_blob_readers: readers,
            blob_send_timeout: send_timeout,
            ..crate::http::Limits::default()
        }
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_slot() {
        let server = BlobServer::new(&limits(4, Duration::from_secs(60)));
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let first = server.slot(Some(a)).expect("a's first");
        let _second = server.slot(Some(a)).expect("a's second");
        assert!(server.slot(Some(a)).is_err(), "two per address by default");
        // Two addresses of one IPv6 /64 are one client.
        let (v6a, v6b): (IpAddr, IpAddr) = ("2001:db8::1".parse().expect("ip"), "2001:db8::2:3".parse().expect("ip"));
        let _v6 = server.slot(Some(v6a)).expect("a /64's first");
        let _v6b = server.slot(Some(v6b)).expect("and second");
        assert!(server.slot(Some(v6a)).is_err(), "the /64 is counted, not the address");
        // All four taken: another address is refused by the total, and counted out again.
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(server.slot(Some(b)).is_err());
        assert!(server.slot(None).is_err());
        drop(first);
        let _a = server.slot(Some(a)).expect("a's slot came back with its response");
        assert_eq!(server.by_client.lock().expect("lock").len(), 2, "b was counted out");
    }

    #[tokio::test]
    async fn a_reader_behind_the_minimum_rate_is_cut_off_before_the_timeout() {
        let mut server = BlobServer::new(&crate::http::Limits {
            max_blob_readers: 1,
            blob_send_timeout: Duration::from_secs(60),
            blob_min_rate: 10 * RAW_CHUNK as u64,
            ..crate::http::Limits::default()
        });
        server.grace = Duration::from_millis(100);
        let blob: Bytes = vec![7u8; 40 * RAW_CHUNK].into();
        let mut body = server.raw(blob, server.slot(None).expect("slot"));
        // A tenth of the pace: one slice every second where ten were due.
        let started = std::time::Instant::now();
        let mut cut = false;
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        assert!(cut, "a reader at a tenth of the minimum rate is cut off");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "long before the 60 s timeout"
        );
        assert!(server.slot(None).is_ok(), "and its slot is free");
    }

    #[tokio::test]
    async fn the_json_form_is_the_whole_blob_in_base64_and_slots_are_bounded() {
        let server = BlobServer::new(&limits(1, Duration::from_secs(60)));
        let blob: Bytes = (0..200_000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>().into();
        let slot = server.slot(None).expect("a slot");
        assert!(server.slot(None).is_err(), "one reader at a time");
        let body = server.json(5, "5/aa/bb", blob.clone(), slot);
        let bytes = body.collect().await.expect("body").to_bytes();
        assert_eq!(bytes.len(), BlobServer::json_len(5, "5/aa/bb", blob.len()));
        let parsed: kt_client::wire::AuditBlobResponse = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!((parsed.epoch, parsed.name.as_str()), (5, "5/aa/bb"));
        assert_eq!(B64.decode(parsed.blob).expect("base64"), blob);
        // The slot comes back once the response is written.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let slot = server.slot(None).expect("free again");
        let raw = server.raw(blob.clone(), slot).collect().await.expect("raw").to_bytes();
        assert_eq!(raw, blob);
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_cut_off_and_frees_its_slot() {
        let server = BlobServer::new(&limits(1, Duration::from_millis(200)));
        let blob: Bytes = vec![7u8; 10 * RAW_CHUNK].into();
        let mut body = server.raw(blob, server.slot(None).expect("slot"));
        // Read one slice, then stop.
        let first = body.frame().await.expect("a frame").expect("ok");
        assert!(first.is_data());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(server.slot(None).is_ok(), "the stalled response let go of its slot");
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
