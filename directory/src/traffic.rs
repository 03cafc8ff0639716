//! `kt-directory sample-traffic`: feeds a running directory deterministic sample
//! updates over HTTP, forces epochs, and verifies a lookup and a history proof of what
//! it published. The demo's traffic source, and a smoke test of the whole API.

use crate::sample;
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kt_client::http::{DirectoryClient, OperatorClient};
use kt_client::verify::PinnedKeys;
use kt_client::wire::UpdateItem;
use std::time::Duration;

/// Largest request the traffic source sends (the server's default limit).
const CHUNK: usize = 1000;

/// What to send.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Base URL of the directory, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The operator token.
    pub token: String,
    /// Epochs to publish.
    pub epochs: u64,
    /// Updates per epoch.
    pub updates_per_epoch: usize,
    /// Sample devices the updates are drawn from.
    pub population: u64,
    /// Seed of the sample traffic.
    pub seed: u64,
    /// The directory's signing key, hex, pinned out of band. `None`: trust `/v1/info`
    /// (fine for a demo against your own server, never for a real client).
    pub directory_key: Option<String>,
}

/// Sends the traffic and verifies the result; prints one line per step.
pub async fn run(t: Traffic) -> anyhow::Result<()> {
    let url = t.url.trim_end_matches('/').to_owned();
    let reader = DirectoryClient::new(&url, Duration::from_secs(60))?;
    let operator = OperatorClient::new(reader.clone(), &t.token);
    let info = reader.info().await?;
    let key_hex = t.directory_key.clone().unwrap_or_else(|| info.signing_key.clone());
    let key: [u8; 32] = kt_client::head::hex_array(&key_hex, "directory key")?;
    let pinned = PinnedKeys {
        directory_key: ed25519_dalek::VerifyingKey::from_bytes(&key).context("directory key")?,
        vrf_public_key: hex::decode(&info.vrf_public_key).context("VRF key in /v1/info")?,
        namespace: info.namespace.clone(),
    };
    println!("directory namespace={} epoch={}", info.namespace, info.latest_epoch);
    let mut last_batch = Vec::new();
    for i in 1..=t.epochs {
        let batch = sample::updates(t.seed, info.latest_epoch + i, t.updates_per_epoch, t.population);
        for chunk in batch.chunks(CHUNK) {
            let updates: Vec<UpdateItem> = chunk
                .iter()
                .map(|(l, v)| UpdateItem {
                    label: String::from_utf8_lossy(&l.0).into_owned(),
                    value: B64.encode(&v.0),
                })
                .collect();
            let accepted = operator.post_updates(&updates).await?;
            tracing::debug!(count = accepted.ids.len(), "updates accepted");
        }
        let epoch = operator.publish().await?;
        pinned.check_head(&epoch.head)?;
        println!(
            "published epoch={} taken={} queued={} root={}",
            epoch.epoch,
            epoch.taken,
            epoch.queued,
            hex::encode(epoch.head.head.root)
        );
        last_batch = batch;
    }
    let Some((label, value)) = last_batch.first() else {
        return Ok(());
    };
    let label = String::from_utf8_lossy(&label.0).into_owned();
    let lookup = reader.lookup(&label).await?;
    let found = pinned.lookup_response(&label, &lookup)?;
    if found.value.0 != value.0 {
        bail!("lookup of {label} verified but shows another value than the one sent");
    }
    println!(
        "verified lookup label={label} version={} epoch={}",
        found.version, lookup.head.head.epoch
    );
    let history = reader.history(&label, None).await?;
    let versions = pinned.history_response(&label, None, &history)?;
    println!(
        "verified history label={label} versions={} epoch={}",
        versions.len(),
        history.head.head.epoch
    );
    Ok(())
}
