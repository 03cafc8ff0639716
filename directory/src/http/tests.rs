//! The API through `Router` + `oneshot`, on a real publisher over RocksDB in a tempdir.

use super::{AppState, Limits, ReadGuard, router};
use crate::datadir::DataDir;
use crate::metrics::Metrics;
use crate::publisher::{Publisher, PublisherConfig};
use crate::storage::{Cf, StorageConfig, Write};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kt_client::head::SignedHead;
use kt_client::verify::PinnedKeys;
use kt_client::wire::{
    AbsenceResponse, AuditBlobResponse, AuditListing, BatchLookupResponse, EpochResponse, HistoryResponse,
    InfoResponse, LookupResponse, Outcome, UpdateStatus, UpdatesAccepted,
};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    /// Keeps the data directory alive.
    _tmp: tempfile::TempDir,
    data: DataDir,
    router: Router,
    token: String,
    pinned: PinnedKeys,
    /// Stops the publisher loop when dropped.
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn start(data: DataDir, max_per_epoch: usize) -> (Router, PinnedKeys, tokio::sync::watch::Sender<bool>) {
    start_guarded(data, max_per_epoch, ReadGuard::default()).await
}

async fn start_guarded(
    data: DataDir,
    max_per_epoch: usize,
    read_guard: ReadGuard,
) -> (Router, PinnedKeys, tokio::sync::watch::Sender<bool>) {
    let keys = data.load().expect("load keys");
    let token_hash = keys.token_hash;
    let metrics = Metrics::new().expect("metrics");
    let config = PublisherConfig {
        backend: crate::storage::Backend::Rocks,
        db_path: data.db(),
        storage: StorageConfig {
            block_cache_bytes: 8 << 20,
            ..StorageConfig::default()
        },
        max_per_epoch,
        akd_cache: crate::AkdCache::publisher(),
        prepare: crate::publisher::prepare::PrepareConfig::for_epochs_of(max_per_epoch),
    };
    let (publisher, shared) = Publisher::open(config, keys, metrics.clone()).await.expect("open");
    let pinned = PinnedKeys {
        directory_key: shared.signing_key,
        vrf_public_key: shared.vrf_public_key.clone(),
        namespace: shared.namespace.clone(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(publisher.run(std::time::Duration::from_secs(3600), stopped));
    let limits = Limits {
        max_updates_per_request: 5,
        max_label_bytes: 32,
        max_value_bytes: 64,
        max_batch_lookup: 4,
        max_body_bytes: 4096,
        ..Limits::default()
    };
    let state = AppState {
        shared,
        token_hash,
        limits,
        metrics,
        epoch_interval_secs: 3600,
        read_guard,
        verify_proofs: true,
        blobs: super::BlobServer::new(&super::Limits::default()),
    };
    (router(state), pinned, stop)
}

async fn fixture(max_per_epoch: usize) -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(tmp.path().join("data"));
    data.init("test").expect("init");
    let token = std::fs::read_to_string(data.token()).expect("token");
    let (router, pinned, stop) = start(data.clone(), max_per_epoch).await;
    Fixture {
        _tmp: tmp,
        data,
        router,
        token,
        pinned,
        _stop: stop,
    }
}

impl Fixture {
    async fn call(&self, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let response = self.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, body.to_vec())
    }

    async fn get(&self, path: &str) -> (StatusCode, Vec<u8>) {
        self.call(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("json")
    }

    async fn operator(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        let body = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.call(request.body(body).expect("request")).await
    }

    async fn post_updates(&self, updates: &[(&str, &[u8])]) -> Vec<u64> {
        let body = json!({"updates": updates.iter().map(|(l, v)| json!({"label": l, "value": B64.encode(v)})).collect::<Vec<_>>()});
        let (status, body) = self.operator("POST", "/v1/updates", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<UpdatesAccepted>(&body).expect("json").ids
    }

    async fn epoch(&self) -> EpochResponse {
        let (status, body) = self.operator("POST", "/v1/epochs", None).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("json")
    }

    async fn outcome(&self, id: u64) -> Outcome {
        let (status, body) = self.operator("GET", &format!("/v1/updates/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<UpdateStatus>(&body).expect("json").outcome
    }
}

fn error_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).expect("error json")["error"]
        .as_str()
        .expect("error string")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_need_the_token() {
    let f = fixture(100).await;
    let body = json!({"updates": [{"label": "a", "value": "AQ=="}]}).to_string();
    for (auth, why) in [
        (None, "missing"),
        (Some("Bearer wrong"), "invalid"),
        (Some("Basic x"), "must be"),
    ] {
        for (method, path) in [
            ("POST", "/v1/updates"),
            ("POST", "/v1/epochs"),
            ("GET", "/v1/updates/1"),
        ] {
            let mut r = Request::builder()
                .method(method)
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(a) = auth {
                r = r.header(header::AUTHORIZATION, a);
            }
            let response = f
                .router
                .clone()
                .oneshot(r.body(Body::from(body.clone())).expect("request"))
                .await
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}");
            assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            assert!(error_of(&bytes).contains(why), "{}", error_of(&bytes));
        }
    }
    // Nothing was queued by the refused requests.
    assert_eq!(f.epoch().await.taken, 0);
}

/// An anonymous client cannot make the server parse what it may not send: without the
/// token, garbage is refused as unauthorized, not as bad JSON; and a batch lookup body
/// far beyond what `max_batch_lookup` labels can take is refused before it is parsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_neither_parsed_before_the_token_nor_beyond_what_a_route_takes() {
    let f = fixture(100).await;
    let garbage = Request::builder()
        .method("POST")
        .uri("/v1/updates")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json at all"))
        .expect("request");
    let (status, body) = f.call(garbage).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", error_of(&body));
    // The fixture allows 4 labels of 32 bytes (under 1 KiB of JSON): this body is far beyond,
    // under the 4 KiB general limit.
    let labels: Vec<String> = (0..40).map(|i| format!("label-{i:0>60}")).collect();
    let big = json!({ "labels": labels }).to_string();
    assert!(big.len() > 1000 && big.len() < 4096, "{}", big.len());
    let request = Request::builder()
        .method("POST")
        .uri("/v1/lookup")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big))
        .expect("request");
    let (status, body) = f.call(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", error_of(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_update_bodies_are_400_with_a_reason() {
    let f = fixture(100).await;
    let long = "x".repeat(33);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"updates": []}), "empty list"),
        (json!({"updates": [{"label": "a", "value": ""}]}), "tombstone"),
        (
            json!({"updates": [{"label": "a", "value": "not base64!"}]}),
            "not base64",
        ),
        (json!({"updates": [{"label": "", "value": "AQ=="}]}), "empty label"),
        (json!({"updates": [{"label": long, "value": "AQ=="}]}), "limit is 32"),
        (json!({"updates": [{"label": "a\u{7}", "value": "AQ=="}]}), "control"),
        (
            json!({"updates": [{"label": "a", "value": B64.encode([0u8; 65])}]}),
            "limit is 64",
        ),
        (
            json!({"updates": (0..6).map(|i| json!({"label": format!("l{i}"), "value": "AQ=="})).collect::<Vec<_>>()}),
            "limit per request is 5",
        ),
        (
            json!({"updates": [{"label": "a", "value": "AQ==", "extra": 1}]}),
            "unknown field",
        ),
        (json!({"updates": [{"label": 5, "value": "AQ=="}]}), "invalid type"),
        (json!({"nope": []}), "unknown field"),
    ];
    for (body, why) in cases {
        let (status, bytes) = f.operator("POST", "/v1/updates", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = error_of(&bytes);
        assert!(error.contains(why), "{body}: {error}");
    }
    // Not JSON at all, the wrong content type, a body over the limit.
    let raw = |ct: &str, body: String| {
        Request::post("/v1/updates")
            .header(header::AUTHORIZATION, format!("Bearer {}", f.token))
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .expect("request")
    };
    let (status, _) = f.call(raw("application/json", "{\"updates\": [".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = f.call(raw("text/plain", "{}".into())).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = f.call(raw("application/json", " ".repeat(5000))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(f.epoch().await.taken, 0, "nothing bad was queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_become_epochs_with_outcomes_and_verifiable_proofs() {
    let f = fixture(100).await;
    let info: InfoResponse = f.get_json("/v1/info").await;
    assert_eq!((info.namespace.as_str(), info.latest_epoch), ("test", 0));
    let head0: SignedHead = f.get_json("/v1/heads/latest").await;
    f.pinned.check_head(&head0).expect("head 0 verifies");

    // Two updates to "alice" before one epoch: the later wins, the earlier is superseded.
    let ids = f
        .post_updates(&[("alice", b"k1"), ("bob", b"k1"), ("alice", b"k2")])
        .await;
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(f.outcome(1).await, Outcome::Pending);
    let e1 = f.epoch().await;
    assert!(e1.published);
    assert_eq!((e1.epoch, e1.taken, e1.queued), (1, 3, 0));
    assert_eq!(e1.head.head.previous_root, head0.head.root);
    assert_eq!(f.outcome(1).await, Outcome::Superseded { by: 3 });
    assert_eq!(f.outcome(2).await, Outcome::Published { epoch: 1, version: 1 });
    assert_eq!(f.outcome(3).await, Outcome::Published { epoch: 1, version: 1 });

    // Epoch 2: a rotation, and bob re-sent unchanged.
    let ids = f.post_updates(&[("alice", b"k3"), ("bob", b"k1")]).await;
    let e2 = f.epoch().await;
    assert_eq!(e2.epoch, 2);
    assert_eq!(f.outcome(ids[0]).await, Outcome::Published { epoch: 2, version: 2 });
    assert_eq!(f.outcome(ids[1]).await, Outcome::Unchanged { epoch: 2 });

    // Only unchanged values: no new epoch, the head is re-signed with a fresh time.
    let ids = f.post_updates(&[("alice", b"k3")]).await;
    let quiet = f.epoch().await;
    assert!(!quiet.published);
    assert_eq!((quiet.epoch, quiet.taken), (2, 1));
    assert_eq!(quiet.head.head.root, e2.head.head.root);
    assert!(quiet.head.head.timestamp_ms >= e2.head.head.timestamp_ms);
    f.pinned.check_head(&quiet.head).expect("re-signed head verifies");
    assert_eq!(f.outcome(ids[0]).await, Outcome::Unchanged { epoch: 2 });

    // Lookup and history verify against the signed head and show the right values.
    let lookup: LookupResponse = f.get_json("/v1/lookup/alice").await;
    assert_eq!(lookup.head.head.epoch, 2);
    let found = f.pinned.lookup_response("alice", &lookup).expect("lookup verifies");
    assert_eq!((found.value.0.as_slice(), found.version), (&b"k3"[..], 2));
    let history: HistoryResponse = f.get_json("/v1/history/alice").await;
    let versions = f
        .pinned
        .history_response("alice", None, &history)
        .expect("history verifies");
    let seen: Vec<(u64, u64, &[u8])> = versions
        .iter()
        .map(|v| (v.version, v.epoch, v.value.0.as_slice()))
        .collect();
    assert_eq!(seen, vec![(2, 2, &b"k3"[..]), (1, 1, &b"k2"[..])]);
    let recent: HistoryResponse = f.get_json("/v1/history/alice?most_recent=1").await;
    assert_eq!(
        f.pinned
            .history_response("alice", Some(1), &recent)
            .expect("verifies")
            .len(),
        1
    );

    // A proof against another key, or with a tampered head, does not verify.
    let mut forged = lookup.clone();
    forged.head.head.root = e1.head.head.root;
    assert!(f.pinned.lookup_response("alice", &forged).is_err());

    // Batch lookup: one head, a result per label, unknown labels marked.
    let (status, body) = f
        .call(
            Request::post("/v1/lookup")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({"labels": ["bob", "nobody", "alice"]}).to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let batch: BatchLookupResponse = serde_json::from_slice(&body).expect("json");
    assert_eq!(batch.results.len(), 3);
    assert!(batch.results[1].proof.is_none() && batch.results[1].absence.is_some());
    let labels: Vec<String> = ["bob", "nobody", "alice"].map(String::from).to_vec();
    let verified = f.pinned.batch_lookup_response(&labels, &batch).expect("batch verifies");
    assert_eq!(verified[1], kt_client::verify::Presence::Absent);
    assert!(matches!(verified[0], kt_client::verify::Presence::Present(_)));
    // An answer that drops a label's proof, or swaps two results, is refused.
    let mut cut = batch.clone();
    cut.results[1].absence = None;
    assert!(f.pinned.batch_lookup_response(&labels, &cut).is_err());
    let mut swapped = batch.clone();
    swapped.results.swap(0, 2);
    assert!(matches!(
        f.pinned.batch_lookup_response(&labels, &swapped),
        Err(kt_client::verify::ResponseError::OtherQuestion { .. })
    ));
    for item in [&batch.results[0], &batch.results[2]] {
        let single = LookupResponse {
            label: item.label.clone(),
            head: batch.head.clone(),
            proof: item.proof.clone().expect("proof"),
            log: None,
        };
        f.pinned
            .lookup_response(&single.label, &single)
            .expect("batch proof verifies");
    }

    // Heads by epoch; audit blobs by epoch, by name, and listed.
    let h1: SignedHead = f.get_json("/v1/heads/1").await;
    assert_eq!(h1, e1.head);
    assert_eq!(f.get("/v1/heads/3").await.0, StatusCode::NOT_FOUND);
    let listing: AuditListing = f.get_json("/v1/audit").await;
    assert_eq!(listing.blobs.iter().map(|b| b.epoch).collect::<Vec<_>>(), vec![1, 2]);
    let blob: AuditBlobResponse = f.get_json("/v1/audit/2").await;
    assert_eq!(blob.name, listing.blobs[1].name);
    let (status, raw) = f.get(&format!("/{}", blob.name)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(B64.encode(&raw), blob.blob);
    let proof = akd::local_auditing::AuditBlob {
        name: akd::local_auditing::AuditBlobName::try_from(blob.name.as_str()).expect("name"),
        data: raw,
    };
    let (epoch, previous, current, single) = proof.decode().expect("blob decodes");
    akd::auditor::verify_consecutive_append_only::<crate::KtConfig>(&single, previous, current, epoch)
        .await
        .expect("append-only proof verifies");
    let wrong = format!("/2/{}/{}", hex::encode([0u8; 32]), hex::encode(e2.head.head.root));
    assert_eq!(f.get(&wrong).await.0, StatusCode::NOT_FOUND);
    assert_eq!(f.get("/v1/audit/0").await.0, StatusCode::NOT_FOUND);
    assert_eq!(f.get("/v1/audit/3").await.0, StatusCode::NOT_FOUND);

    // Metrics reflect the run.
    let (status, metrics) = f.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = String::from_utf8(metrics).expect("utf8");
    assert!(metrics.contains("kt_directory_latest_epoch 2"), "{metrics}");
    assert!(metrics.contains("kt_directory_queue_depth 0"));
    assert!(metrics.contains(r#"kt_directory_updates_resolved_total{outcome="superseded"} 1"#));
    assert!(metrics.contains(r#"route="/v1/lookup/{label}""#));
    assert!(
        metrics.contains(r#"kt_directory_storage_bytes{cf="tree_nodes"}"#),
        "{metrics}"
    );
}

/// An unknown label's lookup and history answer `404` with an absence proof at the
/// current head; once the label is inserted, the old proof still verifies against its
/// own (older) head and the new answer is a lookup proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_labels_get_absence_proofs() {
    let f = fixture(100).await;
    f.post_updates(&[("alice", b"k1"), ("bob", b"k2")]).await;
    f.epoch().await;
    let mut answers = Vec::new();
    for path in [
        "/v1/lookup/carol",
        "/v1/history/carol",
        "/v1/history/carol?most_recent=2",
    ] {
        let (status, body) = f.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let absent: AbsenceResponse = serde_json::from_slice(&body).expect("absence body");
        assert!(absent.error.contains("not in the directory"), "{}", absent.error);
        assert_eq!(absent.head.head.epoch, 1);
        f.pinned.absence_response("carol", &absent).expect("absence verifies");
        // The same proof is not one of another label's absence.
        assert!(matches!(
            f.pinned.absence_response(
                "dave",
                &AbsenceResponse {
                    label: "dave".into(),
                    ..absent.clone()
                }
            ),
            Err(kt_client::verify::ResponseError::Proof(_))
        ));
        answers.push(absent);
    }
    f.post_updates(&[("carol", b"k3")]).await;
    f.epoch().await;
    let lookup: LookupResponse = f.get_json("/v1/lookup/carol").await;
    assert_eq!(lookup.head.head.epoch, 2);
    f.pinned.lookup_response("carol", &lookup).expect("present now");
    // The epoch-1 absence proof is no absence proof under the epoch-2 head.
    let mut replayed = answers[0].clone();
    replayed.head = lookup.head.clone();
    assert!(matches!(
        f.pinned.absence_response("carol", &replayed),
        Err(kt_client::verify::ResponseError::Proof(
            kt_client::verify::VerifyError::NonMembership { .. }
        ))
    ));
    // Under its own head it still verifies: only freshness (the client's maximum head
    // age, or its state file) tells it is old.
    f.pinned
        .absence_response("carol", &answers[0])
        .expect("old answer, old head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reads_are_clear_errors() {
    let f = fixture(100).await;
    f.post_updates(&[("a/b c", b"k")]).await;
    f.epoch().await;
    // Percent-encoded labels, including '/', reach the handler decoded.
    let lookup: LookupResponse = f.get_json("/v1/lookup/a%2Fb%20c").await;
    assert_eq!(lookup.label, "a/b c");
    f.pinned.lookup_response("a/b c", &lookup).expect("verifies");
    for (path, status, why) in [
        ("/v1/lookup/nobody", StatusCode::NOT_FOUND, "not in the directory"),
        ("/v1/history/nobody", StatusCode::NOT_FOUND, "not in the directory"),
        ("/v1/lookup/%FF%FE", StatusCode::BAD_REQUEST, "label"),
        ("/v1/history/a?most_recent=0", StatusCode::BAD_REQUEST, "at least 1"),
        ("/v1/history/a?most_recent=x", StatusCode::BAD_REQUEST, "most_recent"),
        ("/v1/heads/x", StatusCode::BAD_REQUEST, "epoch"),
        ("/v1/heads/99", StatusCode::NOT_FOUND, "does not exist yet"),
        ("/v1/nothing/here/at-all", StatusCode::NOT_FOUND, ""),
        ("/v1/audit?limit=x", StatusCode::BAD_REQUEST, "limit"),
    ] {
        let (got, body) = f.get(path).await;
        assert_eq!(got, status, "{path}");
        assert!(error_of(&body).contains(why), "{path}: {}", error_of(&body));
    }
    let (status, body) = f.operator("GET", "/v1/updates/abc", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", error_of(&body));
    let (status, _) = f.operator("GET", "/v1/updates/999", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let labels: Vec<String> = (0..5).map(|i| format!("l{i}")).collect();
    let (status, body) = f
        .call(
            Request::post("/v1/lookup")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({ "labels": labels }).to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", error_of(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_take_at_most_the_maximum_and_the_rest_wait() {
    let f = fixture(2).await;
    let ids = f.post_updates(&[("a", b"1"), ("b", b"1"), ("a", b"2")]).await;
    let e1 = f.epoch().await;
    assert_eq!((e1.epoch, e1.taken, e1.queued), (1, 2, 1));
    assert_eq!(f.outcome(ids[0]).await, Outcome::Published { epoch: 1, version: 1 });
    assert_eq!(f.outcome(ids[2]).await, Outcome::Pending);
    let e2 = f.epoch().await;
    assert_eq!((e2.epoch, e2.taken, e2.queued), (2, 1, 0));
    assert_eq!(f.outcome(ids[2]).await, Outcome::Published { epoch: 2, version: 2 });
}

/// Stops the fixture's server and publisher, waits for its RocksDB lock to go away, and
/// opens the database directly.
async fn stop(f: Fixture) -> (tempfile::TempDir, DataDir, crate::storage::Store) {
    let Fixture {
        _tmp,
        data,
        router,
        _stop,
        ..
    } = f;
    drop((router, _stop));
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        if let Ok(s) = crate::storage::Store::open_rocks(data.db(), &StorageConfig::default()).await {
            return (_tmp, data, s);
        }
    }
    panic!("the database was never released")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_whose_heads_another_key_signed_refuses_to_start() {
    let f = fixture(100).await;
    f.post_updates(&[("a", b"1")]).await;
    f.epoch().await;
    let (_tmp, data, storage) = stop(f).await;
    drop(storage);
    std::fs::remove_file(data.signing_key()).expect("remove key");
    let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    crate::datadir::create_private_file(&data.signing_key(), other.as_bytes()).expect("new key");
    let config = PublisherConfig {
        backend: crate::storage::Backend::Rocks,
        db_path: data.db(),
        storage: StorageConfig::default(),
        max_per_epoch: 10,
        akd_cache: crate::AkdCache::publisher(),
        prepare: crate::publisher::prepare::PrepareConfig::for_epochs_of(10),
    };
    let err = Publisher::open(config, data.load().expect("load"), Metrics::new().expect("metrics"))
        .await
        .expect_err("a swapped signing key must be refused");
    assert!(
        matches!(
            err,
            crate::publisher::PublishError::Inconsistent(crate::publisher::Inconsistency::HeadKey { epoch: 1 })
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_recovers_heads_queue_ids_and_a_missing_audit_blob() {
    let f = fixture(100).await;
    f.post_updates(&[("a", b"1"), ("b", b"1")]).await;
    let e1 = f.epoch().await;
    let pending = f.post_updates(&[("c", b"1")]).await;
    let (_tmp, data, storage) = stop(f).await;
    // Lose the newest audit blob, as a crash right after the commit would.
    storage
        .write(vec![Write::Delete(Cf::AuditBlobs, 1u64.to_be_bytes().to_vec())])
        .await
        .expect("delete blob");
    drop(storage);
    let token = std::fs::read_to_string(data.token()).expect("token");
    let (router, pinned, stop) = start(data.clone(), 100).await;
    let g = Fixture {
        _tmp,
        data,
        router,
        token,
        pinned,
        _stop: stop,
    };
    let head: SignedHead = g.get_json("/v1/heads/latest").await;
    assert_eq!((head.head.epoch, head.head.root), (1, e1.head.head.root));
    let _: AuditBlobResponse = g.get_json("/v1/audit/1").await;
    assert_eq!(g.outcome(pending[0]).await, Outcome::Pending);
    assert_eq!(
        g.post_updates(&[("d", b"1")]).await,
        vec![pending[0] + 1],
        "ids continue"
    );
    let e2 = g.epoch().await;
    assert_eq!((e2.epoch, e2.taken), (2, 2));
    assert_eq!(e2.head.head.previous_root, e1.head.head.root);
}

#[tokio::test]
async fn reads_can_require_a_token_and_are_rate_limited() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(tmp.path().join("data"));
    data.init("test").expect("init");
    let guard = ReadGuard::new(Some("read-token-0123456789\n"), Some(1), Some(3));
    let (router, _pinned, _stop) = start_guarded(data.clone(), 100, guard).await;
    let operator = std::fs::read_to_string(data.token()).expect("token");
    let call = |path: &str, token: Option<&str>| {
        let mut request = Request::get(path);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let router = router.clone();
        let request = request.body(Body::empty()).expect("request");
        async move {
            let response = router.oneshot(request).await.expect("infallible");
            (response.status(), response.headers().get("retry-after").cloned())
        }
    };
    assert_eq!(call("/v1/heads/latest", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call("/v1/heads/latest", Some("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The operator token is not a read token.
    assert_eq!(
        call("/v1/heads/latest", Some(operator.trim())).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Operators keep /healthz and /metrics.
    assert_eq!(call("/healthz", None).await.0, StatusCode::OK);
    // A burst of 3 (the failed attempts above did not spend it), then 429 with Retry-After.
    for _ in 0..3 {
        assert_eq!(
            call("/v1/heads/latest", Some("read-token-0123456789")).await.0,
            StatusCode::OK
        );
    }
    let (status, retry) = call("/v1/info", Some("read-token-0123456789")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some());
}
