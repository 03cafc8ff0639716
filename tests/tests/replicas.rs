//! Read replicas (`kt-directory serve --read-only`) as real processes: one publisher
//! and two replicas, on RocksDB (secondary instances following the publisher's files)
//! and on MySQL (the same MariaDB database). Lookups and histories on the replicas
//! verify against heads the publisher signed, and the replicas follow new epochs.

mod common;

use common::{Api, Backend, Server, init, strs};
use kt_client::head::SignedHead;
use kt_client::wire::{HistoryResponse, InfoResponse, LookupResponse};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Epochs published while the replicas serve.
const EPOCHS: u64 = 6;
/// How long a replica may take to serve an epoch the publisher has finished.
const FOLLOW_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_two_replicas_on_rocksdb() {
    one_publisher_two_replicas(Backend::Rocks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_two_replicas_on_mysql() {
    if let Some(backend) = Backend::mysql("replicas").await {
        one_publisher_two_replicas(backend).await;
    }
}

/// `serve --read-only` arguments for replica `n`.
fn replica_args(backend: &Backend, root: &Path, n: usize, config: &Path) -> Vec<String> {
    let mut args = backend.args();
    // Replicas check every proof before serving it; a failure would be a 503 here.
    args.extend([
        "--read-only".into(),
        "--verify-proofs".into(),
        "--config".into(),
        config.display().to_string(),
    ]);
    if let Backend::Rocks = backend {
        args.extend([
            "--replica-dir".into(),
            root.join(format!("replica-{n}")).display().to_string(),
        ]);
    }
    args
}

async fn one_publisher_two_replicas(backend: Backend) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = init(&tmp.path().join("data"), "replicas");
    let mut args = backend.args();
    args.extend(["--epoch-interval".into(), "3600".into()]);
    let publisher = Server::start(&dir.data_dir, &strs(&args));
    let api = Api::new(&publisher.url, &dir.token);
    let labels: Vec<String> = (0..25).map(|i| format!("replica-user-{i}")).collect();
    let batch = |round: u64| -> Vec<(String, Vec<u8>)> {
        labels
            .iter()
            .map(|l| (l.clone(), format!("{l} key {round}").into_bytes()))
            .collect()
    };
    api.post_updates(&batch(1)).await.expect("202");
    assert_eq!(api.epoch().await.expect("epoch 1").epoch, 1);

    let config = tmp.path().join("replica.toml");
    std::fs::write(&config, "replica_poll_ms = 100\n").expect("config");
    let replicas: Vec<Server> = (0..2)
        .map(|n| Server::start(&dir.data_dir, &strs(&replica_args(&backend, tmp.path(), n, &config))))
        .collect();
    let readers: Vec<Api> = replicas.iter().map(|r| Api::new(&r.url, "")).collect();

    // A replica takes no updates and forces no epochs.
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/updates", replicas[0].url))
        .bearer_auth(&dir.token)
        .json(&serde_json::json!({"updates": []}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 403);
    let reason = refused.text().await.expect("body");
    assert!(reason.contains("read-only replica"), "{reason}");
    let (status, _) = readers[1].get_raw("/v1/updates/1").await;
    assert_eq!(status, 403);

    // Meanwhile, a client keeps reading from both replicas while epochs are published
    // and views are swapped: every answer must verify.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let (readers, labels, pinned, stop) = (readers.clone(), labels.clone(), dir.pinned.clone(), stop.clone());
        tokio::spawn(async move {
            let mut verified = 0u64;
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let label = &labels[i % labels.len()];
                let lookup: LookupResponse = readers[i % 2].get(&format!("/v1/lookup/{label}")).await;
                pinned.lookup_response(label, &lookup).unwrap_or_else(|e| {
                    panic!(
                        "background lookup at epoch {} does not verify: {e}",
                        lookup.head.head.epoch
                    )
                });
                verified += 1;
                i += 1;
            }
            verified
        })
    };
    let mut signed: Vec<SignedHead> = vec![api.get("/v1/heads/1").await];
    for epoch in 1..=EPOCHS {
        if epoch > 1 {
            api.post_updates(&batch(epoch)).await.expect("202");
            let e = api.epoch().await.expect("epoch");
            assert_eq!(e.epoch, epoch);
            signed.push(e.head);
        }
        for (n, reader) in readers.iter().enumerate() {
            wait_for_epoch(reader, epoch).await;
            for label in labels.iter().step_by(6) {
                let lookup: LookupResponse = reader.get(&format!("/v1/lookup/{label}")).await;
                let found = dir.pinned.lookup_response(label, &lookup).unwrap_or_else(|e| {
                    panic!(
                        "replica {n}: lookup at epoch {} does not verify: {e}",
                        lookup.head.head.epoch
                    )
                });
                let at = lookup.head.head.epoch;
                assert!(at >= epoch, "replica {n} went back to epoch {at}");
                assert_eq!(found.value.0, format!("{label} key {at}").into_bytes());
                // The head is the publisher's, byte for byte.
                let publisher_head: SignedHead = api.get(&format!("/v1/heads/{at}")).await;
                assert_eq!(lookup.head, publisher_head, "replica {n} serves the publisher's head");
                let history: HistoryResponse = reader.get(&format!("/v1/history/{label}")).await;
                let versions = dir
                    .pinned
                    .history_response(label, None, &history)
                    .expect("history verifies");
                assert_eq!(versions.len() as u64, history.head.head.epoch, "{label}");
            }
        }
    }

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let verified = background.await.expect("background reader");
    eprintln!("{verified} lookups verified on replicas while epochs were published");
    assert!(verified > 0);

    // A replica proves absence as the publisher does, at the head it serves.
    for reader in &readers {
        let absent = reader.absent("/v1/lookup/nobody", "nobody", &dir.pinned).await;
        assert!(absent.head.head.epoch >= 1);
    }

    // Audit blobs come from the shared store, identical to the publisher's.
    let (status, blob) = readers[0].get_raw(&format!("/v1/audit/{EPOCHS}")).await;
    assert_eq!(status, 200);
    let (_, from_publisher) = api.get_raw(&format!("/v1/audit/{EPOCHS}")).await;
    assert_eq!(blob, from_publisher);
    let heads = readers[1].verified_chain(&dir.pinned).await;
    assert_eq!(
        heads.len() as u64,
        EPOCHS + 1,
        "the whole chain of heads, from a replica"
    );

    // Replicas keep serving while the publisher is gone, and pick up its next epoch
    // when it is back.
    publisher.terminate();
    let info: InfoResponse = readers[0].get("/v1/info").await;
    assert_eq!(info.latest_epoch, EPOCHS);
    let publisher = Server::start(&dir.data_dir, &strs(&args));
    let api = Api::new(&publisher.url, &dir.token);
    api.post_updates(&batch(EPOCHS + 1)).await.expect("202");
    api.epoch().await.expect("epoch after restart");
    for reader in &readers {
        wait_for_epoch(reader, EPOCHS + 1).await;
    }
    for replica in replicas {
        replica.terminate();
    }
    publisher.terminate();
}

/// Waits until `reader` serves `epoch` (or later).
async fn wait_for_epoch(reader: &Api, epoch: u64) {
    let start = Instant::now();
    loop {
        let info: InfoResponse = reader.get("/v1/info").await;
        if info.latest_epoch >= epoch {
            return;
        }
        assert!(
            start.elapsed() < FOLLOW_WITHIN,
            "replica still at epoch {} after {FOLLOW_WITHIN:?}, publisher at {epoch}",
            info.latest_epoch
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A replica of a store no publisher has written, or of a database nobody serves,
/// fails at start-up, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_of_an_empty_store_refuses_to_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = init(&tmp.path().join("data"), "empty");
    let mut cases = vec![(
        "rocksdb",
        vec!["--replica-dir".to_owned(), tmp.path().join("r").display().to_string()],
    )];
    if let Some(backend) = Backend::mysql("emptyreplica").await {
        cases.push(("mysql", backend.args()));
    }
    cases.push(("rocksdb without --replica-dir", Vec::new()));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    cases.push((
        "mysql server not listening",
        vec!["--mysql-url".into(), format!("mysql://kt:secret@127.0.0.1:{port}/kt")],
    ));
    for (what, extra) in cases {
        let out = Command::new(common::DIRECTORY)
            .args(["serve", "--read-only", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir.data_dir)
            .args(&extra)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: a replica of nothing must not start");
        assert!(
            [
                "start the publisher",
                "needs --replica-dir",
                "cannot connect to MySQL at kt@127.0.0.1"
            ]
            .iter()
            .any(|m| stderr.contains(m)),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("secret"), "{what}: the password leaked: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}
