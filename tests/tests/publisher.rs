//! The publisher as a real process on 127.0.0.1:0: updates in, epochs out, proofs that
//! verify against signed heads; and SIGKILL while updates and epochs are in flight.
//! The first two run on both stores: RocksDB, and MySQL on a real MariaDB.

mod common;

use common::{Api, Backend, Server, audit_folder, init, strs};
use kt_client::wire::{HistoryResponse, LookupResponse, Outcome};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_in_epochs_out_proofs_verify() {
    updates_in_epochs_out_proofs_verify_on(Backend::Rocks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_in_epochs_out_proofs_verify_on_mysql() {
    if let Some(backend) = Backend::mysql("e2e").await {
        updates_in_epochs_out_proofs_verify_on(backend).await;
    }
}

async fn updates_in_epochs_out_proofs_verify_on(backend: Backend) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = init(&tmp.path().join("data"), "e2e");
    let mut args = backend.args();
    args.extend(["--epoch-interval".into(), "3600".into()]);
    let server = Server::start(&dir.data_dir, &strs(&args));
    let api = Api::new(&server.url, &dir.token);

    // Three epochs, each rotating the keys of labels that already exist.
    let labels: Vec<String> = (0..20).map(|i| format!("user{i}@example.org/phone")).collect();
    let mut current: HashMap<String, Vec<u8>> = HashMap::new();
    let mut published = Vec::new();
    for epoch in 1..=3u64 {
        let batch: Vec<(String, Vec<u8>)> = labels
            .iter()
            .map(|l| (l.clone(), format!("key of {l} at {epoch}").into_bytes()))
            .collect();
        let ids = api.post_updates(&batch).await.expect("202");
        let e = api.epoch().await.expect("epoch");
        assert!(e.published);
        assert_eq!((e.epoch, e.taken), (epoch, 20));
        for (id, (label, value)) in ids.into_iter().zip(batch) {
            assert_eq!(api.outcome(id).await, Outcome::Published { epoch, version: epoch });
            current.insert(label, value);
        }
        published.push(e.head);
    }

    for label in &labels {
        let lookup: LookupResponse = api.get(&format!("/v1/lookup/{}", enc(label))).await;
        assert_eq!(lookup.head.head.epoch, 3);
        let found = dir.pinned.lookup_response(label, &lookup).expect("lookup verifies");
        assert_eq!((found.version, &found.value.0), (3, &current[label]));
        let history: HistoryResponse = api.get(&format!("/v1/history/{}", enc(label))).await;
        let versions = dir
            .pinned
            .history_response(label, None, &history)
            .expect("history verifies");
        let epochs: Vec<u64> = versions.iter().map(|v| v.epoch).collect();
        assert_eq!(epochs, vec![3, 2, 1], "{label}");
    }

    // A label never inserted is proven absent, by lookup and by history, at the head.
    let nobody = "nobody@example.org/phone";
    for path in [
        format!("/v1/lookup/{}", enc(nobody)),
        format!("/v1/history/{}", enc(nobody)),
    ] {
        let absent = api.absent(&path, nobody, &dir.pinned).await;
        assert_eq!(absent.head.head.epoch, 3);
    }

    // The chain of heads verifies, and the audit blobs pass the auditor.
    let heads = api.verified_chain(&dir.pinned).await;
    assert_eq!(heads[1..], published[..]);
    let blobs = tmp.path().join("blobs");
    api.download_blobs(&heads, &blobs).await;
    let report = audit_folder(&blobs);
    assert!(report.contains("3 epochs verified"), "{report}");
    server.terminate();
}

fn enc(label: &str) -> String {
    kt_client::http::encode_label(label)
}

/// An update that got its 202.
#[derive(Debug, Clone)]
struct Acked {
    label: String,
    value: Vec<u8>,
}

const ROUNDS: usize = 4;
const LABELS: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_updates_and_epochs_in_flight_loses_nothing() {
    sigkill_with_updates_and_epochs_in_flight_loses_nothing_on(Backend::Rocks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_updates_and_epochs_in_flight_loses_nothing_on_mysql() {
    if let Some(backend) = Backend::mysql("crash").await {
        sigkill_with_updates_and_epochs_in_flight_loses_nothing_on(backend).await;
    }
}

async fn sigkill_with_updates_and_epochs_in_flight_loses_nothing_on(backend: Backend) {
    let seed: u64 = std::env::var("KT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("publisher crash test seed: KT_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = init(&tmp.path().join("data"), "crash");
    let acked: Arc<Mutex<HashMap<u64, Acked>>> = Arc::default();
    // A live auditor follows the directory through every crash (restarts reuse the
    // address), verifying and co-signing as epochs appear.
    let mut listen = "127.0.0.1:0".to_owned();
    let mut auditor: Option<(Server, Api)> = None;
    let auditor_dir = tmp.path().join("auditor");
    common::init_auditor(&auditor_dir);

    for round in 0..ROUNDS {
        // Epochs on a 1 s timer and forced ones, while updates pour in.
        let mut args = backend.args();
        args.extend(["--epoch-interval", "1", "--max-updates-per-epoch", "150"].map(String::from));
        let server = Server::process_on(&dir.data_dir, &listen, &strs(&args));
        listen = server.url.trim_start_matches("http://").to_owned();
        if auditor.is_none() {
            let key = hex::encode(dir.pinned.directory_key.as_bytes());
            let a = Server::start_auditor(&auditor_dir, &server.url, &key, &[]);
            let api = Api::new(&a.url, "");
            auditor = Some((a, api));
        }
        let api = Api::new(&server.url, &dir.token);
        let writer = {
            let (api, acked) = (api.clone(), Arc::clone(&acked));
            let mut rng = rand::rngs::StdRng::seed_from_u64(rng.r#gen());
            tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    let batch: Vec<(String, Vec<u8>)> = (0..rng.gen_range(1..40))
                        .map(|_| {
                            n += 1;
                            let label = format!("device-{}", rng.gen_range(0..LABELS));
                            // Unique values: an update applied twice would show as a
                            // repeated value in a history, or as "unchanged".
                            let value = format!("round {round} update {n} {}", rng.r#gen::<u64>()).into_bytes();
                            (label, value)
                        })
                        .collect();
                    let Ok(ids) = api.post_updates(&batch).await else { break };
                    let mut acked = acked.lock().expect("lock");
                    for (id, (label, value)) in ids.into_iter().zip(batch) {
                        assert!(acked.insert(id, Acked { label, value }).is_none(), "id {id} reused");
                    }
                }
            })
        };
        let trigger = {
            let api = api.clone();
            tokio::spawn(async move { while api.epoch().await.is_ok() {} })
        };
        let delay = Duration::from_millis(rng.gen_range(300..2500));
        tokio::time::sleep(delay).await;
        server.kill();
        let _ = writer.await;
        let _ = trigger.await;
        eprintln!(
            "round {round}: SIGKILL after {delay:?}; {} updates acknowledged so far",
            acked.lock().expect("lock").len()
        );
    }

    // Restart and drain the queue.
    let mut args = backend.args();
    args.extend(["--epoch-interval".into(), "3600".into()]);
    let server = Server::start_on(&dir.data_dir, &listen, &strs(&args));
    let api = Api::new(&server.url, &dir.token);
    loop {
        let e = api.epoch().await.expect("epoch after restart");
        if e.queued == 0 && e.taken == 0 {
            break;
        }
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(!acked.is_empty(), "no update was acknowledged; the test proved nothing");

    // Every acknowledged update reached exactly one final outcome, consistent with the
    // proofs: published ones are in the verified history at their epoch and version.
    let mut by_label: HashMap<&str, Vec<(u64, Outcome)>> = HashMap::new();
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    for (&id, update) in &acked {
        let outcome = api.outcome(id).await;
        let kind = match outcome {
            Outcome::Pending => panic!("update {id} is still pending after the queue drained"),
            Outcome::Unchanged { .. } => panic!("update {id} has a unique value but is 'unchanged': applied twice?"),
            Outcome::Superseded { by } => {
                assert!(by > id, "update {id} superseded by an earlier one ({by})");
                "superseded"
            }
            Outcome::Published { .. } => "published",
        };
        *counts.entry(kind).or_default() += 1;
        by_label.entry(update.label.as_str()).or_default().push((id, outcome));
    }
    eprintln!("outcomes of {} acknowledged updates: {counts:?}", acked.len());
    for (label, outcomes) in &by_label {
        let history: HistoryResponse = api.get(&format!("/v1/history/{}", enc(label))).await;
        let versions = dir
            .pinned
            .history_response(label, None, &history)
            .expect("history verifies");
        let mut values: Vec<&[u8]> = versions.iter().map(|v| v.value.0.as_slice()).collect();
        values.sort_unstable();
        let before = values.len();
        values.dedup();
        assert_eq!(values.len(), before, "{label}: a value appears twice in its history");
        for (id, outcome) in outcomes {
            match outcome {
                Outcome::Published { epoch, version } => {
                    let v = versions
                        .iter()
                        .find(|v| v.version == *version)
                        .unwrap_or_else(|| panic!("{label}: version {version} of update {id} not in its history"));
                    assert_eq!(v.epoch, *epoch, "{label} v{version}");
                    assert_eq!(v.value.0, acked[id].value, "{label} v{version} holds another value");
                }
                Outcome::Superseded { by } => {
                    let by_update = acked.get(by);
                    if let Some(b) = by_update {
                        assert_eq!(b.label, *label, "superseded by an update to another label");
                    }
                }
                _ => unreachable!(),
            }
        }
        let lookup: LookupResponse = api.get(&format!("/v1/lookup/{}", enc(label))).await;
        dir.pinned.lookup_response(label, &lookup).expect("lookup verifies");
    }

    // Heads chain without a gap and every epoch's audit blob passes the auditor.
    let heads = api.verified_chain(&dir.pinned).await;
    let blobs = tmp.path().join("blobs");
    api.download_blobs(&heads, &blobs).await;
    audit_folder(&blobs);
    eprintln!("{} epochs, chain and audit blobs verified", heads.len() - 1);

    // The live auditor verified every epoch, in order, without a gap or a finding.
    let (_auditor, auditor) = auditor.expect("auditor started");
    let last = heads.len() as u64 - 1;
    let s = auditor
        .wait_status("the auditor to verify the last epoch", |s| {
            s.state == kt_client::auditor::AuditState::Failed || s.last_verified_epoch == Some(last)
        })
        .await;
    assert_ne!(s.state, kt_client::auditor::AuditState::Failed, "{s:?}");
    assert_eq!(s.evidence_count, 0, "{s:?}");
    for from in (0..=last).step_by(1000) {
        let list: kt_client::auditor::EpochList = auditor.get(&format!("/v1/epochs?from={from}&limit=1000")).await;
        for (i, e) in list.epochs.iter().enumerate() {
            assert_eq!(e.epoch, from + i as u64, "gap in the auditor's epochs");
            assert_eq!(
                e.root,
                hex::encode(heads[e.epoch as usize].head.root),
                "epoch {}",
                e.epoch
            );
        }
    }
    eprintln!("the live auditor verified and co-signed epochs 0..={last} across {ROUNDS} crashes");
    server.terminate();
}

/// Lookups and histories keep being served while epochs are published back to back, and
/// every proof verifies against the head it came with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_publishing_always_verify() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = init(&tmp.path().join("data"), "reads");
    let server = Server::start(&dir.data_dir, &["--epoch-interval", "3600"]);
    let api = Api::new(&server.url, &dir.token);
    let labels: Vec<String> = (0..30).map(|i| format!("reader-{i}")).collect();
    let first: Vec<(String, Vec<u8>)> = labels.iter().map(|l| (l.clone(), b"v0".to_vec())).collect();
    api.post_updates(&first).await.expect("202");
    api.epoch().await.expect("epoch 1");

    const EPOCHS: u64 = 12;
    let publisher = {
        let (api, labels) = (api.clone(), labels.clone());
        tokio::spawn(async move {
            for round in 1..=EPOCHS {
                let batch: Vec<(String, Vec<u8>)> = labels
                    .iter()
                    .map(|l| (l.clone(), format!("v{round}").into_bytes()))
                    .collect();
                api.post_updates(&batch).await.expect("202");
                api.epoch().await.expect("epoch");
            }
        })
    };
    let mut reads = 0u64;
    let mut epochs_seen = std::collections::BTreeSet::new();
    let mut i = 0usize;
    while !publisher.is_finished() {
        let label = &labels[i % labels.len()];
        i += 1;
        let lookup: LookupResponse = api.get(&format!("/v1/lookup/{label}")).await;
        let found = dir
            .pinned
            .lookup_response(label, &lookup)
            .unwrap_or_else(|e| panic!("lookup at epoch {} does not verify: {e}", lookup.head.head.epoch));
        // Epoch e holds value v(e-1) for every label, version e.
        let epoch = lookup.head.head.epoch;
        assert_eq!(found.value.0, format!("v{}", epoch - 1).into_bytes());
        assert_eq!(found.version, epoch);
        epochs_seen.insert(epoch);
        if i.is_multiple_of(5) {
            let history: HistoryResponse = api.get(&format!("/v1/history/{label}?most_recent=2")).await;
            dir.pinned
                .history_response(label, Some(2), &history)
                .expect("history verifies");
        }
        reads += 1;
    }
    publisher.await.expect("publisher task");
    eprintln!("{reads} verified reads across epochs {epochs_seen:?}");
    assert!(
        epochs_seen.len() >= 3,
        "reads should span several epochs: {epochs_seen:?}"
    );
    server.terminate();
}

/// Hostile and malformed requests against the real process: documented statuses, and the
/// server is still healthy afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_statuses_and_nothing_panics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = init(&tmp.path().join("data"), "bad");
    let server = Server::start(&dir.data_dir, &["--epoch-interval", "3600"]);
    let api = Api::new(&server.url, &dir.token);
    let http = &api.http;
    let url = &server.url;
    let post = |body: Vec<u8>, ct: &str, token: Option<&str>| {
        let mut r = http
            .post(format!("{url}/v1/updates"))
            .header("content-type", ct)
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let status = |r: reqwest::Result<reqwest::Response>| r.expect("response").status().as_u16();
    let token = dir.token.as_str();
    let ok_body = br#"{"updates":[{"label":"a","value":"AQ=="}]}"#.to_vec();
    assert_eq!(status(post(ok_body.clone(), "application/json", None).await), 401);
    assert_eq!(
        status(post(ok_body.clone(), "application/json", Some("nope")).await),
        401
    );
    assert_eq!(status(post(ok_body.clone(), "text/plain", Some(token)).await), 415);
    assert_eq!(
        status(post(b"{\"updates\":[".to_vec(), "application/json", Some(token)).await),
        400
    );
    assert_eq!(
        status(post(vec![0xff, 0xfe], "application/json", Some(token)).await),
        400
    );
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    assert_eq!(status(post(deep, "application/json", Some(token)).await), 400);
    // An 8 MiB body against the 4 MiB limit: the server answers 413 from the announced
    // length without reading the body (and then closes), so send the headers alone and
    // read the answer: a client still writing the body could see a broken pipe first.
    let addr = url.trim_start_matches("http://").to_owned();
    let token_owned = token.to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        write!(
            s,
            "POST /v1/updates HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token_owned}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            8 << 20
        )
        .expect("write");
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer).expect("an answer before any body byte");
        answer
    })
    .await
    .expect("join");
    assert_eq!(&answer, b"HTTP/1.1 413");
    let many = serde_json::json!({"updates": (0..1001).map(|i| serde_json::json!({"label": format!("l{i}"), "value": "AQ=="})).collect::<Vec<_>>()});
    assert_eq!(
        status(post(many.to_string().into_bytes(), "application/json", Some(token)).await),
        400
    );
    for (path, want) in [
        ("/v1/lookup/%FF", 400),
        ("/v1/lookup/%C3%28", 400),
        ("/v1/lookup/nobody", 404),
        ("/v1/history/nobody?most_recent=-1", 400),
        ("/v1/heads/18446744073709551616", 400),
        ("/v1/audit/1", 404),
        ("/1/zz/zz", 404),
        ("/v1/updates/1", 401),
    ] {
        assert_eq!(status(http.get(format!("{url}{path}")).send().await), want, "{path}");
    }
    assert_eq!(status(post(ok_body, "application/json", Some(token)).await), 202);
    let e = api.epoch().await.expect("still publishing");
    assert_eq!((e.epoch, e.taken), (1, 1));
    assert_eq!(status(http.get(format!("{url}/healthz")).send().await), 200);
    server.terminate();
}
