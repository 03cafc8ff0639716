//! The auditor's handlers through `Router` + `oneshot`, over a real RocksDB store.

use super::*;
use crate::store::{EpochRecord, Pins};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ed25519_dalek::SigningKey;
use kt_client::auditor::{AuditState, CoSignedHead, EpochList, EvidenceAccepted, EvidenceList, StatusResponse};
use kt_client::cosign::PlexiSignature;
use kt_client::head::SignedHead;
use serde_json::{Value, json};
use tower::ServiceExt;

const DIR_SEED: [u8; 32] = [1; 32];
const AUDITOR_SEED: [u8; 32] = [2; 32];

fn head(epoch: u64, root: u8, prev: u8, key: &SigningKey) -> SignedHead {
    kt_client::test_support::signed_head("test.ns", epoch, root, prev, 1000 + epoch, key)
}

fn record(h: SignedHead) -> EpochRecord {
    crate::fixtures::record(h, &SigningKey::from_bytes(&AUDITOR_SEED), 77)
}

struct Fixture {
    app: Router,
    state: AppState,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let dkey = SigningKey::from_bytes(&DIR_SEED);
    store
        .commit_genesis(
            &Pins {
                directory_key: hex::encode(dkey.verifying_key().as_bytes()),
                namespace: "test.ns".into(),
                vrf_key_hash: hex::encode([9; 32]),
                genesis_root: hex::encode([0; 32]),
            },
            &record(head(0, 0, 0, &dkey)),
        )
        .expect("genesis");
    store
        .commit_epoch(&record(head(1, 1, 0, &dkey)), b"proof1")
        .expect("epoch 1");
    let status = SharedStatus::new();
    status.update(|s| {
        s.namespace = "test.ns".into();
        s.last_seen_epoch = Some(2);
        s.last_verified_epoch = Some(1);
    });
    let state = AppState {
        store,
        status,
        metrics: Metrics::new().expect("metrics"),
        auditor_key: SigningKey::from_bytes(&AUDITOR_SEED).verifying_key(),
        directory_key: dkey.verifying_key(),
        directory_url: "http://directory.invalid".into(),
        public_url: "http://auditor.invalid".into(),
        max_head_age_secs: 600,
        witness: std::sync::Arc::new(
            crate::witness::Witness::new(SigningKey::from_bytes(&AUDITOR_SEED), "auditor.invalid".into())
                .expect("witness"),
        ),
    };
    Fixture {
        app: router(state.clone()),
        state,
        _dir: dir,
    }
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = app.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, body.to_vec())
}

async fn get(app: &Router, path: &str) -> (StatusCode, Vec<u8>) {
    call(app, Request::get(path).body(Body::empty()).expect("request")).await
}

async fn post(app: &Router, body: &Value, content_type: &str) -> (StatusCode, Value) {
    let req = Request::post("/v1/evidence")
        .header("content-type", content_type)
        .body(Body::from(body.to_string()))
        .expect("request");
    let (status, bytes) = call(app, req).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn status_heads_epochs_and_blobs() {
    let f = fixture();
    let (status, body) = get(&f.app, "/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    let s: StatusResponse = serde_json::from_slice(&body).expect("status");
    assert_eq!(
        (s.last_verified_epoch, s.lag, s.namespace.as_str()),
        (Some(1), 1, "test.ns")
    );

    let (status, body) = get(&f.app, "/v1/heads/1").await;
    assert_eq!(status, StatusCode::OK);
    let h: CoSignedHead = serde_json::from_slice(&body).expect("head");
    h.cosignature
        .verify_for(&f.state.auditor_key, &h.directory_head)
        .expect("co-signature verifies");
    h.plexi.verify(&f.state.auditor_key).expect("plexi signature verifies");
    assert_eq!(get(&f.app, "/v1/heads/latest").await.0, StatusCode::OK);
    assert_eq!(get(&f.app, "/v1/heads/9").await.0, StatusCode::NOT_FOUND);
    let (status, body) = get(&f.app, "/v1/heads/-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("epoch must be a decimal integer"));

    let (_, body) = get(&f.app, "/v1/epochs?from=0&limit=10").await;
    let list: EpochList = serde_json::from_slice(&body).expect("epochs");
    assert_eq!(list.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(get(&f.app, "/v1/epochs?limit=0").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(get(&f.app, "/v1/epochs?limit=5000").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(get(&f.app, "/v1/epochs?bogus=1").await.0, StatusCode::BAD_REQUEST);

    let name = format!("/1/{}/{}", hex::encode([0; 32]), hex::encode([1; 32]));
    assert_eq!(get(&f.app, &name).await, (StatusCode::OK, b"proof1".to_vec()));
    let wrong = format!("/1/{}/{}", hex::encode([5; 32]), hex::encode([1; 32]));
    assert_eq!(get(&f.app, &wrong).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&f.app, "/no/such/route/here").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn plexi_routes_match_what_plexi_clients_read() {
    let f = fixture();
    let (_, body) = get(&f.app, "/info").await;
    let info: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        info["keys"][0]["public_key"],
        hex::encode(f.state.auditor_key.as_bytes())
    );
    let (_, body) = get(&f.app, "/namespaces/test.ns").await;
    let ns: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(ns["root"], format!("0/{}", hex::encode([0; 32])));
    assert_eq!(ns["status"], "Online");
    assert_eq!(ns["ciphersuite"], 1);
    assert_eq!(ns["log_directory"], "http://auditor.invalid");
    let (_, body) = get(&f.app, "/namespaces").await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["namespaces"][0]["name"],
        "test.ns"
    );
    assert_eq!(get(&f.app, "/namespaces/other").await.0, StatusCode::NOT_FOUND);

    let (status, body) = get(&f.app, "/namespaces/test.ns/audits/1").await;
    assert_eq!(status, StatusCode::OK);
    let sig: PlexiSignature = serde_json::from_slice(&body).expect("signature");
    sig.verify(&f.state.auditor_key).expect("verifies");
    assert_eq!(sig.key_id, f.state.auditor_key.as_bytes()[31]);
    let (_, body) = get(&f.app, "/namespaces/test.ns/last-verified-epoch").await;
    let last: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(last["epoch"], 1);
    assert_eq!(last["job_id"].as_str().map(str::len), Some(36));
}

#[tokio::test]
async fn evidence_submissions_are_verified_before_they_are_stored() {
    let f = fixture();
    let dkey = SigningKey::from_bytes(&DIR_SEED);
    let a = serde_json::to_value(head(1, 1, 0, &dkey)).expect("json");
    let b = serde_json::to_value(head(1, 7, 0, &dkey)).expect("json");
    let forged = serde_json::to_value(head(1, 7, 0, &SigningKey::from_bytes(&[3; 32]))).expect("json");

    assert_eq!(
        post(&f.app, &json!({"first": a, "second": b}), "text/plain").await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let (status, body) = post(&f.app, &json!({"first": a}), "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post(&f.app, &json!({"first": a, "second": forged}), "application/json").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"].as_str().unwrap_or("").contains("second head"), "{body}");
    let (status, _) = post(&f.app, &json!({"first": a, "second": a}), "application/json").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, body) = get(&f.app, "/v1/evidence").await;
    assert!(
        serde_json::from_slice::<EvidenceList>(&body)
            .expect("list")
            .evidence
            .is_empty()
    );
    assert_ne!(f.state.status.get().state, AuditState::Failed);

    let (status, body) = post(
        &f.app,
        &json!({"first": a, "second": b}),
        "application/json; charset=utf-8",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let accepted: EvidenceAccepted = serde_json::from_value(body).expect("accepted");
    assert!(accepted.created);
    let (status, _) = post(&f.app, &json!({"first": a, "second": b}), "application/json").await;
    assert_eq!(status, StatusCode::OK, "the same pair again is not a new record");
    assert_eq!(f.state.status.get().state, AuditState::Failed);
    let (_, body) = get(&f.app, "/v1/evidence").await;
    let list: EvidenceList = serde_json::from_slice(&body).expect("list");
    assert_eq!(list.evidence.len(), 1);
    assert_eq!(list.evidence[0].heads.len(), 2);
    assert_eq!(get(&f.app, "/healthz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (_, body) = get(&f.app, "/namespaces/test.ns").await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["status"],
        "Disabled"
    );

    let huge = "x".repeat(MAX_BODY_BYTES + 1);
    let req = Request::post("/v1/evidence")
        .header("content-type", "application/json")
        .body(Body::from(huge))
        .expect("request");
    assert_eq!(call(&f.app, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn dashboard_and_metrics_are_served() {
    let f = fixture();
    let (status, body) = get(&f.app, "/").await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains("id=\"verified-epoch\"") && page.contains("/assets/dashboard.js"));
    assert!(!page.contains("https://"), "no external assets");
    assert_eq!(get(&f.app, "/assets/dashboard.js").await.0, StatusCode::OK);
    assert_eq!(get(&f.app, "/assets/dashboard.css").await.0, StatusCode::OK);
    let (_, body) = get(&f.app, "/metrics").await;
    assert!(String::from_utf8_lossy(&body).contains("kt_auditor_last_verified_epoch"));
}

/// The witness endpoint, with a directory that chooses what to submit: an honest
/// checkpoint is co-signed; a checkpoint past the verified epochs is deferred (503); a
/// wrong old size gets 409 and the size; another root for a co-signed size is fork
/// evidence; a stranger's signature, an unknown origin, garbage and a bad consistency
/// proof are refused with the spec's codes.
#[tokio::test]
async fn the_witness_cosigns_only_verified_trees() {
    use kt_client::tlog::checkpoint::{Checkpoint, origin_for};
    use kt_client::tlog::merkle::{MemoryLog, leaf_hash};
    use kt_client::tlog::note::{Note, TYPE_COSIGNATURE_V1, VerifierKey, sign_ed25519};
    use kt_client::tlog::witness::{AddCheckpoint, parse_cosignatures, parse_size};

    let f = fixture();
    let dkey = SigningKey::from_bytes(&DIR_SEED);
    let origin = origin_for("test.ns").expect("origin");
    let verified: Vec<_> = [head(0, 0, 0, &dkey), head(1, 1, 0, &dkey)]
        .iter()
        .map(|h| leaf_hash(&h.to_bytes().expect("bytes")))
        .collect();
    let sign = |key: &SigningKey, origin: &str, size: u64, root: [u8; 32]| {
        let text = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: vec![],
        }
        .text();
        Note {
            signatures: vec![sign_ed25519(origin, key, &text).expect("sign")],
            text,
        }
        .to_text()
    };
    let post = |old: u64, proof: Vec<[u8; 32]>, note: String| {
        let body = AddCheckpoint {
            old,
            proof,
            checkpoint: note.into_bytes(),
        }
        .to_body();
        Request::post("/add-checkpoint")
            .body(Body::from(body))
            .expect("request")
    };
    let log = MemoryLog::from_leaves(verified.iter().copied());
    let note2 = sign(&dkey, &origin, 2, log.root(2).expect("root"));

    // Refusals first: nothing is co-signed by them.
    let (status, _) = call(
        &f.app,
        Request::post("/add-checkpoint").body(Body::from("garbage")).expect("r"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&f.app, post(0, vec![], sign(&dkey, "other.example/log", 2, [0; 32]))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stranger = SigningKey::from_bytes(&[42; 32]);
    let (status, _) = call(
        &f.app,
        post(0, vec![], sign(&stranger, &origin, 2, log.root(2).expect("root"))),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A tree with a leaf that is not a verified head.
    let other = MemoryLog::from_leaves([verified[0], leaf_hash(b"an unverified head")]);
    let (status, _) = call(
        &f.app,
        post(0, vec![], sign(&dkey, &origin, 2, other.root(2).expect("root"))),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Beyond what is verified: come back later.
    let mut longer = MemoryLog::from_leaves(verified.iter().copied());
    longer.append(leaf_hash(b"epoch 2"));
    let response = f
        .app
        .clone()
        .oneshot(post(0, vec![], sign(&dkey, &origin, 3, longer.root(3).expect("root"))))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(axum::http::header::RETRY_AFTER));

    // The honest checkpoint is co-signed by the witness key, over its text.
    let (status, body) = call(&f.app, post(0, vec![], note2.clone())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let sigs = parse_cosignatures(&body).expect("cosignature lines");
    let wkey = VerifierKey::new(
        "auditor.invalid",
        TYPE_COSIGNATURE_V1,
        SigningKey::from_bytes(&AUDITOR_SEED).verifying_key(),
    )
    .expect("vkey");
    let text = Note::parse(note2.as_bytes()).expect("note").text;
    assert!(wkey.verify(&text, &sigs[0]).expect("verifies").is_some());

    // Now the witness holds size 2: an old size of 0 is a conflict that names 2.
    let (status, body) = call(&f.app, post(0, vec![], note2.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(parse_size(&body), Ok(2));
    // The same checkpoint again (a quiet log) is co-signed again.
    let (status, _) = call(&f.app, post(2, vec![], note2.clone())).await;
    assert_eq!(status, StatusCode::OK);
    // A bad consistency proof from 2 to 3.
    let (status, _) = call(
        &f.app,
        post(2, vec![[7; 32]], sign(&dkey, &origin, 3, longer.root(3).expect("root"))),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Another root for size 2, signed by the directory: fork evidence.
    let (status, _) = call(&f.app, post(2, vec![], sign(&dkey, &origin, 2, [9; 32]))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, body) = call(&f.app, Request::get("/v1/evidence").body(Body::empty()).expect("r")).await;
    let list: EvidenceList = serde_json::from_slice(&body).expect("evidence");
    assert!(
        list.evidence
            .iter()
            .any(|e| e.kind == kt_client::auditor::EvidenceKind::LogFork)
    );
}
