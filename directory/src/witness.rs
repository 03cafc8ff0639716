//! Collecting co-signatures: every checkpoint is pushed to each configured witness with
//! c2sp.org/tlog-witness `add-checkpoint`, and the checkpoint is then served with what
//! came back. A quiet log's unchanged checkpoint is pushed again every interval, so each
//! witness re-signs it with a fresh time and clients can tell a quiet log from a stale
//! view. A witness that is down or refuses delays only its own co-signature; every
//! attempt is counted in `kt_directory_witness_requests_total`.

use crate::epoch_log::{EpochLog, cosignatures_write};
use crate::metrics::Metrics;
use crate::storage::Store;
use anyhow::Context;
use kt_client::tlog::checkpoint::Checkpoint;
use kt_client::tlog::note::{NoteSignature, TYPE_COSIGNATURE_V1, VerifierKey};
use kt_client::tlog::witness::{AddCheckpoint, SIZE_CONTENT_TYPE, parse_cosignatures, parse_size};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long one `add-checkpoint` may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the collector looks for a new checkpoint.
const POLL: Duration = Duration::from_secs(1);
/// How long after a failed push a witness is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// One witness: where to push and the key its co-signatures must verify with.
#[derive(Debug, Clone)]
pub struct Witness {
    /// The submission prefix (`<prefix>/add-checkpoint`), without a trailing slash.
    pub url: String,
    /// Its `cosignature/v1` verifier key; its name labels the metrics.
    pub key: VerifierKey,
}

/// Parses `URL=VKEY` settings (the first `=` separates: a vkey may end in `=`).
pub fn parse_witnesses(specs: &[String]) -> anyhow::Result<Vec<Witness>> {
    let mut out: Vec<Witness> = Vec::new();
    for spec in specs {
        let (url, vkey) = spec
            .split_once('=')
            .with_context(|| format!("witness {spec:?}: expected URL=VKEY"))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("witness {spec:?}: the URL must be http:// or https://");
        }
        let key = VerifierKey::parse(vkey).with_context(|| format!("witness {url}: its key"))?;
        if key.kind != TYPE_COSIGNATURE_V1 {
            anyhow::bail!("witness {url}: a witness key is a cosignature/v1 (0x04) vkey");
        }
        if out.iter().any(|w| w.key.key == key.key) {
            anyhow::bail!("witness {url}: the same key is configured twice");
        }
        out.push(Witness {
            url: url.trim_end_matches('/').to_owned(),
            key,
        });
    }
    Ok(out)
}

/// What the collector knows of one witness.
#[derive(Debug, Default)]
struct State {
    /// The size we believe it last co-signed (`None`: unknown, ask with 0).
    known: Option<u64>,
    /// Its newest co-signature, and the size it is for.
    cosignature: Option<(u64, NoteSignature)>,
    /// When it last co-signed the current size.
    last_ok: Option<Instant>,
    /// Not before this instant again (after a failure).
    retry_at: Option<Instant>,
}

/// Pushes checkpoints to `witnesses` until `shutdown`, every `interval` for an unchanged
/// checkpoint and at once for a new one.
pub async fn run(
    log: Arc<EpochLog>,
    storage: Store,
    witnesses: Vec<Witness>,
    interval: Duration,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    if witnesses.is_empty() {
        return;
    }
    let http = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .use_rustls_tls()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for the witnesses; co-signatures will not be collected");
            return;
        }
    };
    let mut states: Vec<State> = witnesses.iter().map(|_| State::default()).collect();
    let mut stored: Vec<NoteSignature> = log.cosignatures();
    let mut timer = tokio::time::interval(POLL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => {}
            _ = shutdown.changed() => break,
        }
        let note = log.plain_checkpoint();
        let Ok(checkpoint) = Checkpoint::parse_text(&note.text) else {
            continue;
        };
        let size = checkpoint.size;
        let now = Instant::now();
        let due: Vec<usize> = (0..witnesses.len())
            .filter(|&i| {
                let s = &states[i];
                let fresh = s.cosignature.as_ref().is_some_and(|(at, _)| *at == size)
                    && s.last_ok.is_some_and(|t| now.duration_since(t) < interval);
                !fresh && s.retry_at.is_none_or(|t| now >= t)
            })
            .collect();
        if due.is_empty() {
            continue;
        }
        let body_note = note.to_text();
        let pushes = due.iter().map(|&i| {
            let (w, known) = (&witnesses[i], states[i].known);
            push(&http, &log, w, known, size, &body_note, &note.text)
        });
        let results = futures_util::future::join_all(pushes).await;
        for (&i, (result, known)) in due.iter().zip(results) {
            let (w, s) = (&witnesses[i], &mut states[i]);
            if known.is_some() {
                s.known = known;
            }
            let label = match &result {
                Ok(sig) => {
                    let t = sig
                        .signature
                        .get(..8)
                        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
                    metrics
                        .witness_cosigned_time
                        .with_label_values(&[w.key.name.as_str()])
                        .set(i64::try_from(t).unwrap_or(i64::MAX));
                    metrics
                        .witness_cosigned_size
                        .with_label_values(&[w.key.name.as_str()])
                        .set(i64::try_from(size).unwrap_or(i64::MAX));
                    s.cosignature = Some((size, sig.clone()));
                    s.last_ok = Some(Instant::now());
                    s.retry_at = None;
                    "cosigned"
                }
                Err(Failure { result: what, reason }) => {
                    tracing::warn!(witness = %w.url, size, %reason, "the witness did not co-sign");
                    s.retry_at = Some(Instant::now() + RETRY);
                    *what
                }
            };
            metrics
                .witness_requests
                .with_label_values(&[w.key.name.as_str(), label])
                .inc();
        }
        let current: Vec<NoteSignature> = states
            .iter()
            .filter_map(|s| s.cosignature.as_ref())
            .filter(|(at, _)| *at == size)
            .map(|(_, sig)| sig.clone())
            .collect();
        if current != stored && log.set_cosignatures(size, current.clone()) {
            // Stored too, so that read replicas serve the same co-signatures.
            if let Err(e) = storage.write(vec![cosignatures_write(size, &current)]).await {
                tracing::warn!(error = %e, "storing the co-signatures failed (they are still served here)");
            }
            stored = current;
        }
    }
    tracing::info!("witness collector stopped");
}

/// Why a push did not bring a co-signature: the metric's `result` and a reason.
#[derive(Debug)]
struct Failure {
    result: &'static str,
    reason: String,
}

fn fail(result: &'static str, reason: impl Into<String>) -> Failure {
    Failure {
        result,
        reason: reason.into(),
    }
}

/// One push, retried once after a `409` that tells the witness's size. Returns the
/// co-signature, and the size the witness is now known to hold (if learned).
async fn push(
    http: &reqwest::Client,
    log: &EpochLog,
    w: &Witness,
    known: Option<u64>,
    size: u64,
    note: &str,
    text: &str,
) -> (Result<NoteSignature, Failure>, Option<u64>) {
    let mut old = known.unwrap_or(0);
    let mut learned = None;
    for _ in 0..2 {
        let Some(proof) = log.consistency(old, size) else {
            return (
                Err(fail(
                    "conflict",
                    format!("the witness holds size {old}, beyond our {size}"),
                )),
                learned,
            );
        };
        let body = AddCheckpoint {
            old,
            proof,
            checkpoint: note.as_bytes().to_vec(),
        }
        .to_body();
        let response = match http.post(format!("{}/add-checkpoint", w.url)).body(body).send().await {
            Ok(r) => r,
            Err(e) => return (Err(fail("unavailable", e.to_string())), learned),
        };
        let status = response.status();
        let is_size = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(SIZE_CONTENT_TYPE));
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return (Err(fail("unavailable", e.to_string())), learned),
        };
        match status.as_u16() {
            200 => {
                let sigs = match parse_cosignatures(&bytes) {
                    Ok(s) => s,
                    Err(e) => return (Err(fail("bad_response", e.to_string())), learned),
                };
                // Only a co-signature by the configured key, over this very text, counts.
                let ours = sigs
                    .into_iter()
                    .find(|s| w.key.verify(text, s).is_ok_and(|t| t.is_some()));
                return match ours {
                    Some(sig) => (Ok(sig), Some(size)),
                    None => (
                        Err(fail(
                            "bad_response",
                            "no co-signature that verifies with the witness key",
                        )),
                        learned,
                    ),
                };
            }
            409 if is_size => match parse_size(&bytes) {
                Ok(n) if n != old => {
                    learned = Some(n);
                    old = n;
                }
                Ok(n) => return (Err(fail("conflict", format!("409 at our size {n}"))), learned),
                Err(e) => return (Err(fail("bad_response", e.to_string())), learned),
            },
            503 | 502 | 504 | 429 => {
                let why = String::from_utf8_lossy(&bytes).chars().take(200).collect::<String>();
                return (Err(fail("unavailable", format!("{status}: {why}"))), learned);
            }
            _ => {
                let why = String::from_utf8_lossy(&bytes).chars().take(200).collect::<String>();
                return (Err(fail("refused", format!("{status}: {why}"))), learned);
            }
        }
    }
    (Err(fail("conflict", "the witness's size kept changing")), learned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn witness_settings_are_checked() {
        let key = VerifierKey::new(
            "w.example/1",
            TYPE_COSIGNATURE_V1,
            SigningKey::from_bytes(&[3; 32]).verifying_key(),
        )
        .expect("key");
        let ok = parse_witnesses(&[format!("http://127.0.0.1:9/w/={}", key.to_vkey())]).expect("parses");
        assert_eq!(ok[0].url, "http://127.0.0.1:9/w");
        assert_eq!(ok[0].key, key);
        let plain = VerifierKey::new(
            "w.example/1",
            kt_client::tlog::note::TYPE_ED25519,
            SigningKey::from_bytes(&[3; 32]).verifying_key(),
        )
        .expect("key");
        for bad in [
            "http://127.0.0.1:9".to_owned(),
            format!("ftp://x={}", key.to_vkey()),
            format!("http://x={}", plain.to_vkey()),
            "http://x=w+00000000+AAAA".to_owned(),
        ] {
            assert!(parse_witnesses(std::slice::from_ref(&bad)).is_err(), "accepted {bad}");
        }
        let twice = format!("http://a={}", key.to_vkey());
        assert!(parse_witnesses(&[twice.clone(), twice]).is_err());
    }
}
