//! `kt-auditor serve` against a real `kt-directory` (both real processes on loopback):
//! every epoch verified and co-signed (our format and Plexi's, with pinned keys), resume after SIGKILL without re-verifying or skipping, the dashboard in
//! a real headless Chromium, and a malicious directory (a tampering proxy in front of
//! the real one): a flipped proof byte, a forged head and a stale directory become
//! published evidence and are never co-signed.

mod common;

use axum::Router;
use axum::extract::{Path as AxPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{Api, Initialized, Server, chromium, init, init_auditor, shot_path};
use ed25519_dalek::VerifyingKey;
use kt_client::auditor::{AuditState, CoSignedHead, EpochList, EvidenceKind, EvidenceList, StatusResponse};
use kt_client::head::SignedHead;
use std::process::Command;
use std::time::Duration;

fn key_hex(d: &Initialized) -> String {
    hex::encode(d.pinned.directory_key.as_bytes())
}

/// Checks every co-signed head 0..=last: ours and the Plexi form, with pinned keys,
/// against the directory's own signed head, and with plexi-core's verifier; and that
/// the auditor serves the same proof the directory does.
async fn check_cosigned(auditor: &Api, directory: &Api, d: &Initialized, auditor_key: &VerifyingKey, last: u64) {
    for epoch in 0..=last {
        let c: CoSignedHead = auditor.get(&format!("/v1/heads/{epoch}")).await;
        d.pinned.check_head(&c.directory_head).expect("directory head verifies");
        let theirs: SignedHead = directory.get(&format!("/v1/heads/{epoch}")).await;
        assert_eq!(theirs.head.root, c.directory_head.head.root, "epoch {epoch}");
        c.cosignature
            .verify_for(auditor_key, &c.directory_head)
            .expect("co-signature verifies for the head");
        c.plexi.verify(auditor_key).expect("our Plexi signature verifies");

        // The Plexi route serves the same attestation, with every field plexi-core's
        // `SignatureResponse` reads (its signature format is checked against
        // plexi-core's own test vector in client/tests/cosign_vectors.rs).
        let ns = &c.directory_head.head.namespace;
        let plexi: serde_json::Value = auditor.get(&format!("/namespaces/{ns}/audits/{epoch}")).await;
        for field in [
            "version",
            "ciphersuite",
            "namespace",
            "timestamp",
            "epoch",
            "digest",
            "signature",
            "key_id",
            "serialized_message",
        ] {
            assert!(plexi.get(field).is_some(), "Plexi answer lacks {field}: {plexi}");
        }
        let plexi: kt_client::cosign::PlexiSignature = serde_json::from_value(plexi).expect("Plexi signature");
        plexi.verify(auditor_key).expect("Plexi signature verifies");
        assert_eq!(plexi.digest, hex::encode(c.directory_head.head.root));

        if epoch > 0 {
            let name = format!(
                "/{epoch}/{}/{}",
                hex::encode(c.directory_head.head.previous_root),
                hex::encode(c.directory_head.head.root)
            );
            let ours = auditor.get_raw(&name).await;
            assert_eq!(ours.0, 200, "auditor serves {name}");
            assert_eq!(ours, directory.get_raw(&name).await, "same proof as the directory");
        }
    }
    let s: StatusResponse = auditor.get("/v1/status").await;
    let ns: serde_json::Value = auditor.get(&format!("/namespaces/{}", s.namespace)).await;
    assert_eq!(
        ns["log_directory"],
        auditor.url.as_str(),
        "Plexi clients fetch proofs from here"
    );
    assert!(ns["root"].as_str().is_some_and(|r| r.starts_with("0/")), "{ns}");
    for field in [
        "name",
        "status",
        "reports_uri",
        "audits_uri",
        "ciphersuite",
        "signature_version",
    ] {
        assert!(ns.get(field).is_some(), "namespace lacks {field}: {ns}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_verifies_cosigns_resumes_and_shows_it_on_the_dashboard() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("directory"), "e2e.auditor");
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600"]);
    let directory = Api::new(&server.url, &d.token);
    directory.publish_epochs(3, 200, "a").await;

    let adir = tmp.path().join("auditor");
    let akey = init_auditor(&adir);
    let again = Command::new(common::AUDITOR)
        .args(["init", "--data-dir"])
        .arg(&adir)
        .output()
        .expect("run");
    assert!(!again.status.success(), "a second init must refuse to replace the key");

    let a = Server::process_auditor(&adir, &server.url, &key_hex(&d), &[]);
    let auditor = Api::new(&a.url, "");
    let s = auditor
        .wait_status("epoch 3 verified", |s| s.last_verified_epoch == Some(3))
        .await;
    assert_eq!((s.state, s.lag, s.evidence_count), (AuditState::Ok, 0, 0), "{s:?}");
    check_cosigned(&auditor, &directory, &d, &akey, 3).await;
    let before: EpochList = auditor.get("/v1/epochs?from=0").await;
    assert!(
        before
            .epochs
            .iter()
            .skip(1)
            .all(|e| e.updates >= 200 && e.proof_bytes > 0)
    );

    // SIGKILL mid-stream: the directory moves on while the auditor is down.
    a.kill();
    directory.publish_epochs(2, 100, "b").await;
    let a = Server::start_auditor(&adir, &server.url, &key_hex(&d), &[]);
    let auditor = Api::new(&a.url, "");
    auditor
        .wait_status("epoch 5 verified after restart", |s| s.last_verified_epoch == Some(5))
        .await;
    let after: EpochList = auditor.get("/v1/epochs?from=0").await;
    assert_eq!(
        after.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        (0..=5).collect::<Vec<_>>()
    );
    assert_eq!(
        &after.epochs[..4],
        &before.epochs[..],
        "epochs 0-3 were not verified again"
    );
    check_cosigned(&auditor, &directory, &d, &akey, 5).await;
    let (_, metrics) = auditor.get_raw("/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("kt_auditor_last_verified_epoch 5"), "{metrics}");

    let dom = chromium(&auditor.url, &shot_path("dashboard-ok.png"));
    assert!(
        dom.contains(r#"id="verified-epoch" class="big">5<"#),
        "dashboard DOM: {dom}"
    );
    assert!(
        dom.contains(r#"data-state="ok""#) && dom.contains("data-loaded=\"1\""),
        "{dom}"
    );
    assert!(dom.contains(&hex::encode(akey.as_bytes())));

    // `kt` requires the auditor's co-signature on the head it verified.
    let kt = |auditor_spec: &str| {
        Command::new(env!("CARGO_BIN_EXE_e2e-kt"))
            .args(["--directory", &server.url, "--directory-key", &key_hex(&d), "--state"])
            .arg(tmp.path().join("kt-state.json"))
            .args(["--auditor", auditor_spec, "lookup", "b-1-7@example.org"])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run kt")
    };
    let good = format!("{}={}", auditor.url, hex::encode(akey.as_bytes()));
    let out = kt(&good);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wrong_key = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[5u8; 32])
            .verifying_key()
            .as_bytes(),
    );
    let out = kt(&format!("{}={wrong_key}", auditor.url));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(
        err.contains("not yet audited") && err.contains("does not verify"),
        "{err}"
    );
    let out = kt(&format!("http://127.0.0.1:9={}", hex::encode(akey.as_bytes())));
    assert_eq!(out.status.code(), Some(9), "an unreachable auditor audits nothing");

    // The same data directory cannot be pointed at another directory key.
    a.terminate();
    let other = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
            .verifying_key()
            .as_bytes(),
    );
    let out = Command::new(common::AUDITOR)
        .args(["serve", "--listen", "127.0.0.1:0", "--directory", &server.url])
        .args(["--directory-key", &other, "--data-dir"])
        .arg(&adir)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("follows the directory with key"),
        "{err}"
    );
}

/// How the proxy lies.
#[derive(Debug, Clone, Copy)]
enum Lie {
    /// Flip one byte in the middle of the proof of this epoch, on every fetch (the
    /// directory serves a proof that does not verify for a head it signed).
    FlipProofByte(u64),
    /// The same, on the first fetch only (a proof damaged on its way once).
    FlipProofByteOnce(u64),
    /// Re-sign this epoch's head with the directory's key, dated ten years ahead.
    FutureHead(u64),
    /// Change the root of this epoch's head (the signature no longer matches).
    ForgeHead(u64),
    /// Serve this epoch's head as the directory's key signs it for another log (another
    /// namespace): genuine, replayable, and no contradiction of this log.
    OtherNamespace(u64),
    /// Pass everything through unchanged.
    Honest,
    /// Answer every request with 500.
    ServerError,
    /// Answer every request 200 with a body that is not what was asked for.
    Garbage,
    /// Never answer (hold every request for a minute).
    Stall,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    /// Switchable while the auditor runs.
    lie: std::sync::Arc<std::sync::Mutex<Lie>>,
    http: reqwest::Client,
    /// The directory's signing key, for lies the directory itself tells.
    key: Option<ed25519_dalek::SigningKey>,
    /// Blobs already served once (for `FlipProofByteOnce`).
    served: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

impl Proxy {
    fn lie(&self) -> Lie {
        *self.lie.lock().expect("lock")
    }
}

async fn fetch(p: &Proxy, path: &str) -> Result<Vec<u8>, Response> {
    match p.lie() {
        Lie::ServerError => return Err((StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()),
        Lie::Garbage => return Err((StatusCode::OK, "<html>not what you asked for</html>").into_response()),
        Lie::Stall => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Err(StatusCode::GATEWAY_TIMEOUT.into_response());
        }
        _ => {}
    }
    let r = p
        .http
        .get(format!("{}{path}", p.upstream))
        .send()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())?;
    let status = r.status();
    let body = r
        .bytes()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())?;
    if !status.is_success() {
        return Err((
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            body,
        )
            .into_response());
    }
    Ok(body.to_vec())
}

fn forge(p: &Proxy, body: Vec<u8>) -> Vec<u8> {
    let mut head: SignedHead = serde_json::from_slice(&body).expect("directory head");
    match p.lie() {
        Lie::ForgeHead(target) if head.head.epoch == target => head.head.root[0] ^= 0x80,
        Lie::FutureHead(target) if head.head.epoch == target => {
            let mut h = head.head.clone();
            h.timestamp_ms += 10 * 365 * 24 * 3600 * 1000;
            head = h.sign(p.key.as_ref().expect("the directory's key")).expect("sign");
        }
        Lie::OtherNamespace(target) if head.head.epoch == target => {
            let mut h = head.head.clone();
            h.namespace = "another-log".into();
            head = h.sign(p.key.as_ref().expect("the directory's key")).expect("sign");
        }
        _ => return body,
    }
    serde_json::to_vec(&head).expect("json")
}

async fn head(State(p): State<Proxy>, AxPath(which): AxPath<String>) -> Response {
    match fetch(&p, &format!("/v1/heads/{which}")).await {
        Ok(body) => ([("content-type", "application/json")], forge(&p, body)).into_response(),
        Err(r) => r,
    }
}

async fn blob(State(p): State<Proxy>, AxPath((e, prev, cur)): AxPath<(u64, String, String)>) -> Response {
    match fetch(&p, &format!("/{e}/{prev}/{cur}")).await {
        Ok(mut body) => {
            let first = p.served.lock().expect("lock").insert(e);
            let flip = match p.lie() {
                Lie::FlipProofByte(t) => t == e,
                Lie::FlipProofByteOnce(t) => t == e && first,
                _ => false,
            };
            if flip {
                flip_where_it_decodes(e, &mut body);
            }
            body.into_response()
        }
        Err(r) => r,
    }
}

/// Flips one bit of the proof `body`, from its middle on, at the first place where it
/// still decodes (inside a hash or a value): a proof that does not verify, never
/// garbage, whatever the layout of this run's blob.
fn flip_where_it_decodes(epoch: u64, body: &mut [u8]) {
    use akd::local_auditing::{AuditBlob, AuditBlobName};
    let start = body.len() / 2;
    for at in (start..body.len()).chain(0..start) {
        body[at] ^= 0x01;
        let blob = AuditBlob {
            name: AuditBlobName {
                epoch,
                previous_hash: [0; 32],
                current_hash: [0; 32],
            },
            data: body.to_vec(),
        };
        if blob.decode().is_ok() {
            return;
        }
        body[at] ^= 0x01;
    }
    panic!("no bit of the proof can be flipped with the proof still decoding");
}

/// A lying directory: the real one behind a proxy that tampers with one thing.
async fn lying_proxy(upstream: &str, lie: Lie, key: Option<ed25519_dalek::SigningKey>) -> String {
    switchable_proxy_with_key(upstream, lie, key).await.0
}

/// [`lying_proxy`] whose lie can be changed while it runs.
async fn switchable_proxy(upstream: &str, lie: Lie) -> (String, std::sync::Arc<std::sync::Mutex<Lie>>) {
    switchable_proxy_with_key(upstream, lie, None).await
}

async fn switchable_proxy_with_key(
    upstream: &str,
    lie: Lie,
    key: Option<ed25519_dalek::SigningKey>,
) -> (String, std::sync::Arc<std::sync::Mutex<Lie>>) {
    let lie = std::sync::Arc::new(std::sync::Mutex::new(lie));
    let state = Proxy {
        upstream: upstream.to_owned(),
        lie: lie.clone(),
        http: reqwest::Client::new(),
        key,
        served: Default::default(),
    };
    let app = Router::new()
        .route("/v1/heads/{which}", get(head))
        .route("/{e}/{prev}/{cur}", get(blob))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, lie)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_proofs_forged_heads_and_silence_become_evidence_never_cosignatures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("directory"), "e2e.evil");
    let signing = kt_directory::DataDir::new(&d.data_dir).load().expect("keys").signing;
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600"]);
    let directory = Api::new(&server.url, &d.token);
    directory.publish_epochs(3, 150, "x").await;

    // What the directory signed and contradicts: a proof for its own head that does not
    // verify, fetched twice; a head dated ten years ahead.
    for (name, lie, kind) in [
        ("flip", Lie::FlipProofByte(2), EvidenceKind::InvalidProof),
        ("future", Lie::FutureHead(2), EvidenceKind::FutureHead),
    ] {
        let proxy = lying_proxy(&server.url, lie, Some(signing.clone())).await;
        let adir = tmp.path().join(name);
        init_auditor(&adir);
        let a = Server::process_auditor(&adir, &proxy, &key_hex(&d), &[]);
        let auditor = Api::new(&a.url, "");
        let s = auditor.wait_status("failure", |s| s.state == AuditState::Failed).await;
        assert_eq!(
            s.last_verified_epoch,
            Some(1),
            "{name}: stops before the bad epoch: {s:?}"
        );
        assert!(s.reason.contains("evidence #1"), "{s:?}");
        let list: EvidenceList = auditor.get("/v1/evidence").await;
        assert_eq!(list.evidence.len(), 1, "{list:?}");
        let ev = &list.evidence[0];
        assert_eq!((ev.kind, ev.epoch), (kind, 2), "{ev:?}");
        assert_eq!(auditor.get_raw("/v1/heads/2").await.0, 404, "{name}: never co-signed");
        assert_eq!(auditor.get_raw("/v1/heads/3").await.0, 404);
        assert_eq!(auditor.get_raw("/healthz").await.0, 503);
        // The evidence holds what the directory signed: anyone can re-check it.
        d.pinned
            .check_head(&ev.heads[0])
            .expect("the evidence's head is the directory's");
        if kind == EvidenceKind::InvalidProof {
            // The rejected proof is published with the evidence, byte for byte.
            let (status, kept) = auditor.get_raw(&format!("/v1/evidence/{}/blob", ev.id)).await;
            assert_eq!(status, 200);
            let name = ev.blob_name.clone().expect("blob name");
            let (_, honest) = directory.get_raw(&format!("/{name}")).await;
            assert_eq!(kept.len(), honest.len());
            assert_ne!(kept, honest);
        }
        // Restarted, it stays failed and still does not advance.
        a.kill();
        let a = Server::start_auditor(&adir, &server.url, &key_hex(&d), &[]);
        let auditor = Api::new(&a.url, "");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let s: StatusResponse = auditor.get("/v1/status").await;
        assert_eq!((s.state, s.last_verified_epoch), (AuditState::Failed, Some(1)), "{s:?}");
        if name == "flip" {
            let dom = chromium(&auditor.url, &shot_path("dashboard-failed.png"));
            assert!(dom.contains(r#"data-state="failed""#), "{dom}");
            assert!(dom.contains("invalid proof at epoch 2"), "{dom}");
        }
    }

    // Bytes nobody signed prove nothing: a head whose signature does not verify, and a
    // proof damaged once on its way, are counted and retried; once the path is honest
    // the auditor verifies and co-signs every epoch, and no evidence exists.
    for (name, lie) in [
        ("forge", Lie::ForgeHead(2)),
        ("other-namespace", Lie::OtherNamespace(2)),
        ("damaged-once", Lie::FlipProofByteOnce(2)),
    ] {
        let (proxy, switch) = switchable_proxy_with_key(&server.url, lie, Some(signing.clone())).await;
        let adir = tmp.path().join(name);
        init_auditor(&adir);
        let a = Server::start_auditor(&adir, &proxy, &key_hex(&d), &[]);
        let auditor = Api::new(&a.url, "");
        let what = match name {
            "forge" => "bad_signature",
            "other-namespace" => "other_namespace",
            _ => "invalid_proof_refetched",
        };
        if name != "damaged-once" {
            let s = auditor
                .wait_status("unusable head", |s| {
                    s.state == AuditState::Lagging && s.reason.contains(what)
                })
                .await;
            assert_eq!(s.last_verified_epoch, Some(1), "{s:?}");
            assert_eq!(auditor.get_raw("/healthz").await.0, 200, "not a proven failure");
            *switch.lock().expect("lock") = Lie::Honest;
        }
        let s = auditor
            .wait_status("caught up", |s| {
                s.last_verified_epoch == Some(3) && s.state == AuditState::Ok
            })
            .await;
        assert_eq!(s.evidence_count, 0, "{name}: {s:?}");
        let (_, metrics) = auditor.get_raw("/metrics").await;
        let metrics = String::from_utf8_lossy(&metrics);
        assert!(
            metrics.lines().any(|l| l
                .starts_with(&format!("kt_auditor_unauthenticated_answers_total{{what=\"{what}\"}}"))
                && !l.ends_with(" 0")),
            "{name}: counted as {what}: {metrics}"
        );
    }

    // A directory silent for longer than allowed: evidence and `lagging`, while every
    // epoch it did sign is still verified.
    let adir = tmp.path().join("stale");
    init_auditor(&adir);
    let a = Server::start_auditor(&adir, &server.url, &key_hex(&d), &["--max-head-age", "1"]);
    let auditor = Api::new(&a.url, "");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = auditor
        .wait_status("stale", |s| {
            s.reason.contains("Stale") && s.last_verified_epoch == Some(3)
        })
        .await;
    assert_eq!(s.state, AuditState::Lagging, "{s:?}");
    let list: EvidenceList = auditor.get("/v1/evidence").await;
    assert!(list.evidence.iter().all(|e| e.kind == EvidenceKind::Stale), "{list:?}");
    assert_eq!(
        auditor.get_raw("/healthz").await.0,
        200,
        "staleness is not a proven failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreliable_directory_makes_the_auditor_lag_and_retry_never_sign() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("directory"), "e2e.flaky");
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600"]);
    let directory = Api::new(&server.url, &d.token);
    directory.publish_epochs(2, 100, "f").await;
    let (proxy, lie) = switchable_proxy(&server.url, Lie::Honest).await;
    let adir = tmp.path().join("auditor");
    init_auditor(&adir);
    let a = Server::start_auditor(&adir, &proxy, &key_hex(&d), &["--request-timeout", "1"]);
    let auditor = Api::new(&a.url, "");
    auditor
        .wait_status("epoch 2", |s| {
            s.last_verified_epoch == Some(2) && s.state == AuditState::Ok
        })
        .await;

    directory.publish_epochs(1, 100, "g").await;
    for (bad, expect) in [
        (Lie::ServerError, "HTTP 500"),
        (Lie::Garbage, "unexpected response body"),
        (Lie::Stall, "request to"),
    ] {
        *lie.lock().expect("lock") = bad;
        let s = auditor
            .wait_status(expect, |s| s.state == AuditState::Lagging && s.reason.contains(expect))
            .await;
        assert_eq!(s.last_verified_epoch, Some(2), "{bad:?}: {s:?}");
        assert_eq!(auditor.get_raw("/v1/heads/3").await.0, 404, "{bad:?}: nothing signed");
        assert_eq!(
            auditor.get_raw("/healthz").await.0,
            200,
            "{bad:?}: unreachable is not failed"
        );
    }
    let list: EvidenceList = auditor.get("/v1/evidence").await;
    assert!(
        list.evidence.is_empty(),
        "an unreliable directory proves nothing: {list:?}"
    );
    let (_, metrics) = auditor.get_raw("/metrics").await;
    assert!(!String::from_utf8_lossy(&metrics).contains("kt_auditor_fetch_errors_total 0"));

    // The directory goes away entirely, then comes back honest.
    server.terminate();
    *lie.lock().expect("lock") = Lie::Honest;
    auditor
        .wait_status("directory gone", |s| {
            s.reason.contains("502") || s.reason.contains("Bad Gateway")
        })
        .await;
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600"]);
    let (proxy2, _) = switchable_proxy(&server.url, Lie::Honest).await;
    drop(a);
    let a = Server::start_auditor(&adir, &proxy2, &key_hex(&d), &["--request-timeout", "1"]);
    let auditor = Api::new(&a.url, "");
    let s = auditor
        .wait_status("recovered", |s| {
            s.last_verified_epoch == Some(3) && s.state == AuditState::Ok
        })
        .await;
    assert_eq!(s.evidence_count, 0);
}
