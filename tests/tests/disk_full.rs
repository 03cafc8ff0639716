//! A full disk under the publisher: intake answers 503 with the reason, the publisher
//! stops, reads keep working; after space returns and a restart, nothing acknowledged
//! is lost. The data directory lives on a small tmpfs (mounting needs root; without it
//! the test says so and skips: CI runs as root).

mod common;

use common::{Api, Server, init};
use kt_client::http::HttpError;
use kt_client::wire::{LookupResponse, Outcome};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }

    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_and_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = match Tmpfs::mount(&tmp.path().join("mnt"), "256m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED full_disk_refuses_writes_and_loses_nothing: cannot mount a tmpfs ({e})");
            return;
        }
    };
    let dir = init(&fs.0.join("data"), "disk-full");
    let server = Server::process(&dir.data_dir, &["--epoch-interval", "3600"]);
    let api = Api::new(&server.url, &dir.token);
    api.post_updates(&[("before".into(), b"k".to_vec())])
        .await
        .expect("202");
    api.epoch().await.expect("epoch 1");

    // Leave about 2 MiB free, then write until the disk is full.
    let filler = fs.0.join("filler");
    let free = fs.available();
    std::fs::write(
        &filler,
        vec![0u8; usize::try_from(free.saturating_sub(2 << 20)).expect("size")],
    )
    .expect("filler");
    let mut acked: Vec<(u64, String, Vec<u8>)> = Vec::new();
    let mut refused = None;
    for round in 0..2000 {
        let batch: Vec<(String, Vec<u8>)> = (0..500)
            .map(|i| (format!("label-{round}-{i}"), vec![b'x'; 1000]))
            .collect();
        let body = serde_json::json!({"updates": batch.iter().map(|(l, v)| serde_json::json!({"label": l, "value": base64_of(v)})).collect::<Vec<_>>()});
        let response = api
            .http
            .post(format!("{}/v1/updates", api.url))
            .bearer_auth(&api.token)
            .json(&body)
            .send()
            .await
            .expect("the server answers even with a full disk");
        match response.status().as_u16() {
            202 => {
                let ids = response
                    .json::<kt_client::wire::UpdatesAccepted>()
                    .await
                    .expect("json")
                    .ids;
                acked.extend(ids.into_iter().zip(batch).map(|(id, (l, v))| (id, l, v)));
            }
            status => {
                refused = Some((status, response.text().await.unwrap_or_default()));
                break;
            }
        }
    }
    let (status, reason) = refused.expect("the disk never filled up");
    eprintln!("refused after {} acknowledged updates: {status} {reason}", acked.len());
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("space") || reason.contains("write"), "{reason}");

    // Refusing state: more updates and epochs get 503; health says why; reads still work.
    let again = api.post_updates(&[("after".into(), b"k".to_vec())]).await;
    assert!(matches!(again, Err(HttpError::Status { status: 503, .. })), "{again:?}");
    let epoch = api.epoch().await.expect_err("no epochs after a failed write");
    assert!(matches!(epoch, HttpError::Status { status: 503, .. }), "{epoch}");
    let (health, body) = api.get_raw("/healthz").await;
    assert_eq!(health, 503, "{}", String::from_utf8_lossy(&body));
    let lookup: LookupResponse = api.get("/v1/lookup/before").await;
    dir.pinned
        .lookup_response("before", &lookup)
        .expect("reads keep verifying");
    let metrics = String::from_utf8(api.get_raw("/metrics").await.1).expect("utf8");
    assert!(metrics.contains("kt_directory_publisher_failed 1"));
    server.kill();

    // Space returns; after a restart every acknowledged update is still there and
    // reaches its outcome.
    std::fs::remove_file(&filler).expect("free space");
    let server = Server::process(&dir.data_dir, &["--epoch-interval", "3600"]);
    let api = Api::new(&server.url, &dir.token);
    while api.epoch().await.expect("epoch after restart").queued > 0 {}
    for (id, label, value) in acked.iter().step_by(97) {
        match api.outcome(*id).await {
            Outcome::Published { .. } => {}
            other => panic!("update {id} ended as {other:?}"),
        }
        let lookup: LookupResponse = api.get(&format!("/v1/lookup/{label}")).await;
        let found = dir.pinned.lookup_response(label, &lookup).expect("verifies");
        assert_eq!(&found.value.0, value);
    }
    // All of them were resolved by this process, as published.
    let metrics = String::from_utf8(api.get_raw("/metrics").await.1).expect("utf8");
    let published = format!(
        "kt_directory_updates_resolved_total{{outcome=\"published\"}} {}",
        acked.len()
    );
    assert!(metrics.contains(&published), "expected {published}");
    server.terminate();
}

fn base64_of(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(v)
}
