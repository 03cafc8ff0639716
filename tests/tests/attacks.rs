//! A malicious directory (or network) against `kt`: a proxy on loopback in front of a
//! real directory *chooses* its answers: another label's genuine history, a history cut
//! to its latest version, a head of another namespace signed with the same key, a head
//! dated ten years ahead, a forged epoch its next real epoch does not follow, a head of
//! an epoch no auditor co-signed, escape sequences in an error, another label's absence
//! proof, a bare `404`, an absence answer replayed after the label arrived. Every attack ends in the
//! exit code docs/client.md documents, and the state file keeps nothing a check refused.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Api, Initialized, Server, init};
use kt_client::head::SignedHead;
use kt_client::state::ForkEvidence;
use kt_client::wire::{AbsenceResponse, HistoryResponse};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// What the proxy answers instead of the directory.
#[derive(Debug, Clone, PartialEq)]
enum Lie {
    /// Everything passes through.
    Honest,
    /// `GET /v1/history/alice` is answered with the directory's genuine history of `decoy`.
    DecoyHistory,
    /// `GET /v1/history/alice` is answered with the genuine `?most_recent=1` history.
    LatestOnly,
    /// The same proof, its `most_recent` field rewritten to `null` (complete).
    LatestOnlyRelabeled,
    /// `GET /v1/heads/latest` re-signed with the directory's key, dated ten years ahead.
    Future,
    /// `GET /v1/heads/latest` is this head.
    Head(Box<SignedHead>),
    /// Every request is a 500 whose error holds terminal escape sequences.
    Escapes,
    /// In front of an auditor: `GET /v1/heads/{n}` is answered with its genuine,
    /// co-signed answer for epoch n - 1.
    EarlierEpoch,
    /// `GET /v1/lookup/alice` is the directory's genuine absence answer for `nobody`,
    /// relabelled `alice`: another label's valid proof.
    DecoyAbsence,
    /// `GET /v1/lookup/alice` is a bare `404` with no proof.
    BareNotFound,
    /// `GET /v1/lookup/carol` is this `404` body, saved when it was true.
    Replay(Bytes),
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    lie: Arc<Mutex<Lie>>,
    key: ed25519_dalek::SigningKey,
    http: reqwest::Client,
}

async fn upstream(p: &Proxy, path_and_query: &str) -> (StatusCode, Bytes) {
    let r = p
        .http
        .get(format!("{}{path_and_query}", p.upstream))
        .send()
        .await
        .expect("upstream");
    let status = StatusCode::from_u16(r.status().as_u16()).expect("status");
    (status, r.bytes().await.expect("body"))
}

fn json(body: impl serde::Serialize) -> Response {
    (
        [("content-type", "application/json")],
        serde_json::to_vec(&body).expect("json"),
    )
        .into_response()
}

async fn answer(State(p): State<Proxy>, request: Request) -> Response {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let lie = p.lie.lock().expect("lock").clone();
    match (&lie, path.as_str()) {
        (Lie::Escapes, _) => {
            let evil = "\u{1b}[2J\u{1b}[H\u{1b}[32mverified ok\u{1b}[0m \u{202e}evil";
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                json(serde_json::json!({ "error": evil })),
            )
                .into_response();
        }
        (Lie::DecoyHistory, p2) if p2.starts_with("/v1/history/alice") => {
            let (_, body) = upstream(&p, "/v1/history/decoy").await;
            return ([("content-type", "application/json")], body).into_response();
        }
        (Lie::LatestOnly | Lie::LatestOnlyRelabeled, p2) if p2.starts_with("/v1/history/alice") => {
            let (_, body) = upstream(&p, "/v1/history/alice?most_recent=1").await;
            let mut h: HistoryResponse = serde_json::from_slice(&body).expect("history");
            if lie == Lie::LatestOnlyRelabeled {
                h.most_recent = None;
            }
            return json(h);
        }
        (Lie::Future, "/v1/heads/latest") => {
            let (_, body) = upstream(&p, "/v1/heads/latest").await;
            let honest: SignedHead = serde_json::from_slice(&body).expect("head");
            let mut h = honest.head;
            h.timestamp_ms += 10 * 365 * 24 * 3600 * 1000;
            return json(h.sign(&p.key).expect("sign"));
        }
        (Lie::Head(head), "/v1/heads/latest") => return json(head.as_ref()),
        (Lie::DecoyAbsence, "/v1/lookup/alice") => {
            let (_, body) = upstream(&p, "/v1/lookup/nobody").await;
            let mut absent: AbsenceResponse = serde_json::from_slice(&body).expect("absence");
            absent.label = "alice".into();
            return (StatusCode::NOT_FOUND, json(absent)).into_response();
        }
        (Lie::BareNotFound, "/v1/lookup/alice") => {
            return (
                StatusCode::NOT_FOUND,
                json(serde_json::json!({"error": "label \"alice\" is not in the directory"})),
            )
                .into_response();
        }
        (Lie::Replay(body), "/v1/lookup/carol") => {
            return (
                StatusCode::NOT_FOUND,
                [("content-type", "application/json")],
                body.clone(),
            )
                .into_response();
        }
        (Lie::EarlierEpoch, p2) if p2.starts_with("/v1/heads/") => {
            if let Some(n) = p2["/v1/heads/".len()..].parse::<u64>().ok().filter(|n| *n > 0) {
                let (status, body) = upstream(&p, &format!("/v1/heads/{}", n - 1)).await;
                return (status, [("content-type", "application/json")], body).into_response();
            }
        }
        _ => {}
    }
    let (status, body) = upstream(&p, &path).await;
    (status, [("content-type", "application/json")], body).into_response()
}

/// A lying directory in front of `upstream`; its lie can be changed while it runs.
async fn proxy(upstream: &str, key: ed25519_dalek::SigningKey) -> (String, Arc<Mutex<Lie>>) {
    let lie = Arc::new(Mutex::new(Lie::Honest));
    let state = Proxy {
        upstream: upstream.to_owned(),
        lie: Arc::clone(&lie),
        key,
        http: reqwest::Client::new(),
    };
    let app = Router::new().fallback(answer).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, lie)
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

fn kt(url: &str, d: &Initialized, state: &Path, args: &[&str]) -> Ran {
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-kt"))
        .args(["--directory", url, "--directory-key"])
        .arg(hex::encode(d.pinned.directory_key.as_bytes()))
        .arg("--state")
        .arg(state)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kt");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn signing_key(d: &Initialized) -> ed25519_dalek::SigningKey {
    kt_directory::DataDir::new(&d.data_dir).load().expect("keys").signing
}

/// Alice's key is swapped out and back in over three epochs, with a decoy label
/// beside her. Her monitor catches the swap on an honest directory (exit 7), and a
/// directory that answers her question with another one, the decoy's genuine history
/// or her history cut to its latest version, is refused (exit 3), never `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_cannot_be_answered_with_another_question() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("data"), "e2e.attacks");
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600"]);
    let api = Api::new(&server.url, &d.token);
    let good = b"alice's key".to_vec();
    api.post_updates(&[("alice".into(), good.clone()), ("decoy".into(), good.clone())])
        .await
        .expect("202");
    api.epoch().await.expect("epoch 1");
    api.post_updates(&[("alice".into(), b"the attacker's key".to_vec())])
        .await
        .expect("202");
    api.epoch().await.expect("epoch 2");
    api.post_updates(&[("alice".into(), good.clone())]).await.expect("202");
    api.epoch().await.expect("epoch 3");
    let (url, lie) = proxy(&server.url, signing_key(&d)).await;
    let expect = B64.encode(&good);

    for (attack, code) in [
        (Lie::DecoyHistory, 3),
        (Lie::LatestOnly, 3),
        (Lie::LatestOnlyRelabeled, 3),
        (Lie::Honest, 7),
    ] {
        *lie.lock().expect("lock") = attack.clone();
        let state = tmp.path().join(format!("{attack:?}.json"));
        let m = kt(&url, &d, &state, &["monitor", "alice", "--expect", &expect, "--once"]);
        assert_eq!(m.code, code, "{attack:?}: {}{}", m.stdout, m.stderr);
        assert!(!m.stdout.contains("ok label="), "{attack:?}: {}", m.stdout);
        if code == 3 {
            assert!(
                m.stderr.contains("another question") || m.stderr.contains("does not verify"),
                "{attack:?}: {}",
                m.stderr
            );
        }
    }
}

/// A directory that hides a user's keys, to push a sender onto an unverified path,
/// is caught: an unknown label is proven absent (exit 6, in `--json` too, and `kt
/// verify` of the saved answer), and a lie is refused: another label's absence proof
/// relabelled (exit 3), a bare `404` (exit 3, "refused" in `--json`), and an absence
/// answer saved at epoch 1 and replayed after the label was inserted at epoch 2
/// (a rollback for a client that saw epoch 2, too old for one with a maximum age).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_cannot_hide_a_label() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("data"), "e2e.absence");
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600", "--verify-proofs"]);
    let api = Api::new(&server.url, &d.token);
    api.post_updates(&[("alice".into(), b"alice's key".to_vec())])
        .await
        .expect("202");
    api.epoch().await.expect("epoch 1");
    let (url, lie) = proxy(&server.url, signing_key(&d)).await;
    let state = tmp.path().join("state.json");

    // Honest: carol is absent at epoch 1, proven.
    let saved = tmp.path().join("carol-absent.json");
    let r = kt(
        &url,
        &d,
        &state,
        &["--json", "lookup", "carol", "--save", saved.to_str().expect("utf8")],
    );
    assert_eq!(r.code, 6, "{}{}", r.stdout, r.stderr);
    let out: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(out["outcome"], "absent");
    assert_eq!(out["head"]["epoch"], 1);
    let v = kt(&url, &d, &state, &["verify", saved.to_str().expect("utf8")]);
    assert_eq!(v.code, 6, "{}{}", v.stdout, v.stderr);
    assert!(
        v.stdout.contains("verified absence of carol at epoch 1"),
        "{}",
        v.stdout
    );
    let h = kt(&url, &d, &state, &["history", "carol"]);
    assert_eq!(h.code, 6, "{}{}", h.stdout, h.stderr);
    assert!(h.stdout.contains("absent (proven)"), "{}", h.stdout);
    // Carol's own monitor, before her first key: nothing unexpected, proven.
    let expect = B64.encode(b"carol's key");
    let m = kt(&url, &d, &state, &["monitor", "carol", "--expect", &expect, "--once"]);
    assert_eq!(m.code, 0, "{}{}", m.stdout, m.stderr);
    assert!(
        m.stdout.contains("ok label=carol absent (proven) at epoch 1"),
        "{}",
        m.stdout
    );

    // Another label's genuine absence proof, relabelled.
    *lie.lock().expect("lock") = Lie::DecoyAbsence;
    let r = kt(&url, &d, &state, &["lookup", "alice"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("does not verify"), "{}", r.stderr);
    // A bare 404: bytes nobody signed.
    *lie.lock().expect("lock") = Lie::BareNotFound;
    let r = kt(&url, &d, &state, &["--json", "lookup", "alice"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    let out: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(out["outcome"], "refused");
    assert!(r.stderr.contains("no absence proof"), "{}", r.stderr);
    *lie.lock().expect("lock") = Lie::Honest;
    let r = kt(&url, &d, &state, &["--json", "lookup", "alice"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.stdout).expect("json")["outcome"],
        "present"
    );

    // Carol arrives at epoch 2; the epoch-1 answer is replayed.
    let old = std::fs::read(&saved).expect("saved answer");
    api.post_updates(&[("carol".into(), b"carol's key".to_vec())])
        .await
        .expect("202");
    api.epoch().await.expect("epoch 2");
    let r = kt(&url, &d, &state, &["lookup", "carol"]);
    assert_eq!(r.code, 0, "present at epoch 2: {}{}", r.stdout, r.stderr);
    let m = kt(&url, &d, &state, &["monitor", "carol", "--expect", &expect, "--once"]);
    assert_eq!(m.code, 0, "her key, as expected: {}{}", m.stdout, m.stderr);
    *lie.lock().expect("lock") = Lie::Replay(Bytes::from(old));
    let r = kt(&url, &d, &state, &["lookup", "carol"]);
    assert_eq!(r.code, 4, "a client that saw epoch 2: {}{}", r.stdout, r.stderr);
    let fresh = tmp.path().join("fresh-state.json");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = kt(&url, &d, &fresh, &["--max-head-age", "1", "lookup", "carol"]);
    assert_eq!(r.code, 8, "a client with a maximum head age: {}{}", r.stdout, r.stderr);
}

/// Heads the directory signed that a client must still refuse: one of another
/// namespace (another log signed with the same key), one dated ten years ahead (which
/// would freeze the view past any maximum age), one of a huge epoch that no required
/// auditor co-signed (which must not be remembered, or it would brick the client with
/// rollbacks), and a forged epoch that the next real epoch does not follow (a broken
/// chain: exit 5, with the two signed heads, which the auditor accepts as evidence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_but_contradicting_heads_are_refused_and_never_remembered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("data"), "e2e.heads");
    let key = signing_key(&d);
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600"]);
    let api = Api::new(&server.url, &d.token);
    api.publish_epochs(2, 10, "h").await;
    let (url, lie) = proxy(&server.url, key.clone()).await;
    let state = tmp.path().join("state.json");
    assert_eq!(
        kt(&url, &d, &state, &["head"]).code,
        0,
        "namespace learned on first use"
    );

    // Another namespace, the same key.
    let honest: SignedHead = api.get("/v1/heads/latest").await;
    let mut other = honest.head.clone();
    other.namespace = "another-log".into();
    *lie.lock().expect("lock") = Lie::Head(Box::new(other.sign(&key).expect("sign")));
    let r = kt(&url, &d, &state, &["head"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("namespace"), "{}", r.stderr);

    // Ten years ahead.
    *lie.lock().expect("lock") = Lie::Future;
    let r = kt(&url, &d, &state, &["head"]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert!(r.stderr.contains("future"), "{}", r.stderr);

    // A huge epoch, signed, that the required auditor never co-signed: refused as not
    // yet audited, and not remembered (the honest head afterwards is no rollback).
    let adir = tmp.path().join("auditor");
    let auditor_key = common::init_auditor(&adir);
    let a = Server::start_auditor(&adir, &server.url, &hex::encode(d.pinned.directory_key.as_bytes()), &[]);
    let auditor = Api::new(&a.url, "");
    auditor
        .wait_status("caught up", |s| s.last_verified_epoch == Some(2))
        .await;
    let spec = format!("{}={}", a.url, hex::encode(auditor_key.as_bytes()));
    let mut huge = honest.head.clone();
    huge.epoch = 1_000_000;
    *lie.lock().expect("lock") = Lie::Head(Box::new(huge.sign(&key).expect("sign")));
    let r = kt(&url, &d, &state, &["--auditor", &spec, "head"]);
    assert_eq!(r.code, 9, "{}", r.stderr);
    // Nor by a monitor, which checks the head before it asks for the history.
    let value = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8, 0, 0]);
    let r = kt(
        &url,
        &d,
        &state,
        &[
            "--auditor",
            &spec,
            "monitor",
            "h-0-0@example.org",
            "--expect",
            &value,
            "--once",
        ],
    );
    assert_eq!(r.code, 9, "{}", r.stderr);
    *lie.lock().expect("lock") = Lie::Honest;
    let r = kt(&url, &d, &state, &["--auditor", &spec, "head"]);
    assert_eq!(r.code, 0, "the refused head was not remembered: {}", r.stderr);
    // One auditor listed twice is not a quorum of two.
    let r = kt(&url, &d, &state, &["--auditor", &spec, "--auditor", &spec, "head"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("twice"), "{}", r.stderr);
    // An auditor (here a proxy in front of it) that answers with its genuine
    // co-signature of another epoch: a bad answer (exit 9), not a fork.
    let (shifted, shift) = proxy(&a.url, key.clone()).await;
    *shift.lock().expect("lock") = Lie::EarlierEpoch;
    let shifted_spec = format!("{shifted}={}", hex::encode(auditor_key.as_bytes()));
    let r = kt(&url, &d, &state, &["--auditor", &shifted_spec, "head"]);
    assert_eq!(r.code, 9, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("answered for epoch 1 when asked for 2"),
        "{}",
        r.stderr
    );

    // A forged epoch 3 (signed, but not what the directory publishes next), then the
    // real epochs 3 and 4: the real 4 still follows the real 3, but the state holds the
    // forged 3; a fresh client that saw the forgery catches the break at the real 3.
    let fresh = tmp.path().join("fresh.json");
    let mut forged = honest.head.clone();
    forged.epoch = 3;
    forged.previous_root = honest.head.root;
    forged.root = [0x66; 32];
    forged.timestamp_ms += 1;
    *lie.lock().expect("lock") = Lie::Head(Box::new(forged.sign(&key).expect("sign")));
    assert_eq!(
        kt(&url, &d, &fresh, &["head"]).code,
        0,
        "a lone forged head proves nothing yet"
    );
    *lie.lock().expect("lock") = Lie::Honest;
    api.publish_epochs(2, 10, "i").await;
    let r = kt(&url, &d, &fresh, &["head"]);
    // The latest is epoch 4, whose previous root is the real epoch 3's, not the forged one.
    assert_eq!(r.code, 5, "{}{}", r.stdout, r.stderr);
    let evidence: ForkEvidence = serde_json::from_str(&r.stdout).expect("evidence on stdout");
    assert_eq!((evidence.first.head.epoch, evidence.second.head.epoch), (3, 4));
    let (status, body) = post_evidence(&a.url, &r.stdout).await;
    assert_eq!(
        status, 201,
        "the auditor accepts two signed heads that break the chain: {body}"
    );
    let list: kt_client::auditor::EvidenceList = auditor.get("/v1/evidence").await;
    assert_eq!(list.evidence[0].kind, kt_client::auditor::EvidenceKind::BrokenChain);

    // A next epoch that follows the real 4 but is signed before it: time went back
    // (exit 5, the newer epoch first), which the auditor accepts as a rollback.
    let timed = tmp.path().join("timed.json");
    assert_eq!(kt(&url, &d, &timed, &["head"]).code, 0);
    let four: SignedHead = api.get("/v1/heads/latest").await;
    let mut early = four.head.clone();
    early.epoch = four.head.epoch + 1;
    early.previous_root = four.head.root;
    early.root = [0x77; 32];
    early.timestamp_ms = four.head.timestamp_ms - 1000;
    *lie.lock().expect("lock") = Lie::Head(Box::new(early.sign(&key).expect("sign")));
    let r = kt(&url, &d, &timed, &["--max-head-age", "0", "head"]);
    *lie.lock().expect("lock") = Lie::Honest;
    assert_eq!(r.code, 5, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("time went backwards"), "{}", r.stderr);
    let evidence: ForkEvidence = serde_json::from_str(&r.stdout).expect("evidence on stdout");
    assert_eq!(
        (evidence.first.head.epoch, evidence.second.head.epoch),
        (four.head.epoch + 1, four.head.epoch)
    );
    let (status, body) = post_evidence(&a.url, &r.stdout).await;
    assert_eq!(status, 201, "the auditor accepts time going back: {body}");
    let list: kt_client::auditor::EvidenceList = auditor.get("/v1/evidence").await;
    assert!(
        list.evidence
            .iter()
            .any(|e| e.kind == kt_client::auditor::EvidenceKind::Rollback),
        "{list:?}"
    );
}

async fn post_evidence(url: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/evidence"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// What a server says reaches the terminal escaped: no screen clear, no fake
/// "verified" line in colour, no bidi override.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_cannot_write_to_the_terminal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("data"), "e2e.escapes");
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600"]);
    let (url, lie) = proxy(&server.url, signing_key(&d)).await;
    *lie.lock().expect("lock") = Lie::Escapes;
    let r = kt(&url, &d, &tmp.path().join("state.json"), &["lookup", "alice"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        !r.stderr.contains('\u{1b}'),
        "an escape reached the terminal: {:?}",
        r.stderr
    );
    assert!(
        !r.stderr.contains('\u{202e}'),
        "a bidi override reached the terminal: {:?}",
        r.stderr
    );
    assert!(r.stderr.contains("\\u{1b}[2J"), "shown escaped: {:?}", r.stderr);
    // And a label with a bidi override is refused by the directory outright.
    let api = Api::new(&server.url, &d.token);
    let refused = api.post_updates(&[("ali\u{202e}ecila".into(), b"k".to_vec())]).await;
    assert!(
        matches!(refused, Err(kt_client::http::HttpError::Status { status: 400, .. })),
        "bidi label accepted: {refused:?}"
    );
}

/// Sixteen `kt` runs at once share one state file while epochs are published: none
/// fails (an older head saved after a newer one is no rollback), none loses another's
/// head, and no temporary file is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_clients_share_a_state_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("data"), "e2e.parallel");
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600"]);
    let api = Api::new(&server.url, &d.token);
    api.publish_epochs(1, 10, "p").await;
    let state: PathBuf = tmp.path().join("shared").join("state.json");
    let runs: Vec<_> = (0..16)
        .map(|i| {
            let (url, d, state) = (server.url.clone(), d.clone(), state.clone());
            std::thread::spawn(move || {
                let label = if i % 2 == 0 { "head" } else { "lookup" };
                let args: Vec<&str> = if label == "head" {
                    vec!["head"]
                } else {
                    vec!["lookup", "p-0-0@example.org"]
                };
                kt(&url, &d, &state, &args)
            })
        })
        .collect();
    // Epochs land while they run: a run that saw epoch n saves after one that saw
    // n + 1, which is no rollback.
    api.publish_epochs(2, 5, "q").await;
    for run in runs {
        let r = run.join().expect("join");
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    }
    let saved = kt_client::state::State::load(&state).expect("the state file parses");
    let dir = saved.directories.values().next().expect("one directory");
    assert!(
        dir.latest().is_some_and(|h| (1..=3).contains(&h.head.epoch)),
        "{:?}",
        dir.latest()
    );
    let leftovers: Vec<_> = std::fs::read_dir(state.parent().expect("dir"))
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
