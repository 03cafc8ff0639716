//! The epoch log end to end: a directory, two auditors as its witnesses and a client
//! requiring 2 of 2; tiles and bundles checked against the checkpoint; a witness going
//! down and coming back; and a directory restored from a copy of its data that forks
//! the log, caught by the client (`kt checkpoint`, exit 5) and by the auditor (LogFork
//! evidence).

mod common;

use common::{Api, Initialized, Server, chromium, copy_dir, init, init_auditor, shot_path};
use kt_client::tlog::checkpoint::{CheckpointError, WitnessPolicy, log_key, verify_checkpoint};
use kt_client::tlog::merkle::{MemoryLog, leaf_hash};
use kt_client::tlog::note::VerifierKey;
use kt_client::tlog::tiles::{decode_bundle, decode_hashes};
use kt_client::tlog::{LogProof, verify_head_in_log};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn key_hex(d: &Initialized) -> String {
    hex::encode(d.pinned.directory_key.as_bytes())
}

fn now_secs() -> u64 {
    kt_client::head::unix_ms() / 1000
}

/// The witness vkey an auditor serves at `/v1/witness`.
async fn vkey(auditor: &Api) -> String {
    let w: serde_json::Value = auditor.get("/v1/witness").await;
    w["vkey"].as_str().expect("vkey").to_owned()
}

/// Polls the directory's checkpoint until `done` holds for its verification under
/// `policy` (60 s at most); returns the note.
async fn wait_checkpoint(
    api: &Api,
    d: &Initialized,
    policy: &WitnessPolicy,
    what: &str,
    done: impl Fn(&Result<kt_client::tlog::checkpoint::VerifiedCheckpoint, CheckpointError>) -> bool,
) -> String {
    let log = log_key(&d.pinned.namespace, d.pinned.directory_key).expect("log key");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = api.get_raw("/log/checkpoint").await;
        assert_eq!(status, 200);
        let result = verify_checkpoint(&body, &log, policy, now_secs());
        if done(&result) {
            return String::from_utf8(body).expect("utf8");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {result:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kt(url: &str, key: &str, state: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-kt"))
        .args(["--directory", url, "--directory-key", key, "--state"])
        .arg(state)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kt");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_witnesses_cosign_a_client_requires_both_and_a_fork_is_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("dir"), "witness.e2e.invalid");
    let key = key_hex(&d);
    let interval = ["--epoch-interval", "3600"];
    let directory = Server::start(&d.data_dir, &interval);
    let api = Api::new(&directory.url, &d.token);
    api.publish_epochs(2, 3, "w").await;

    // Two auditors follow it; their witness keys come from /v1/witness.
    let (a1_dir, a2_dir) = (tmp.path().join("a1"), tmp.path().join("a2"));
    init_auditor(&a1_dir);
    init_auditor(&a2_dir);
    let a1 = Server::start_auditor(&a1_dir, &directory.url, &key, &[]);
    let a2 = Server::start_auditor(&a2_dir, &directory.url, &key, &[]);
    let (a1_api, a2_api) = (Api::new(&a1.url, ""), Api::new(&a2.url, ""));
    for a in [&a1_api, &a2_api] {
        a.wait_status("epoch 2 verified", |s| s.last_verified_epoch == Some(2))
            .await;
    }
    let (v1, v2) = (vkey(&a1_api).await, vkey(&a2_api).await);
    let policy = WitnessPolicy::new(
        vec![
            VerifierKey::parse(&v1).expect("v1"),
            VerifierKey::parse(&v2).expect("v2"),
        ],
        2,
        Some(600),
    )
    .expect("policy");

    // The directory again, now pushing to both witnesses.
    let addr = directory.url.trim_start_matches("http://").to_owned();
    drop(directory);
    let witnesses = [
        "--witness",
        &format!("{}={v1}", a1.url),
        "--witness",
        &format!("{}={v2}", a2.url),
    ];
    let directory = Server::start_on(&d.data_dir, &addr, &[&interval[..], &witnesses[..]].concat());
    let note = wait_checkpoint(&api, &d, &policy, "2 of 2 at size 3", |r| {
        r.as_ref().is_ok_and(|v| v.checkpoint.size == 3)
    })
    .await;

    // The tiles and the entry bundle are the log the checkpoint signs.
    let (status, bundle) = api.get_raw("/log/tile/entries/000.p/3").await;
    assert_eq!(status, 200);
    let entries = decode_bundle(&bundle, 3).expect("bundle");
    let tree = MemoryLog::from_leaves(entries.iter().map(|e| leaf_hash(e)));
    let (_, tile) = api.get_raw("/log/tile/0/000.p/3").await;
    assert_eq!(decode_hashes(&tile, 3).expect("tile").len(), 3);
    let log = log_key(&d.pinned.namespace, d.pinned.directory_key).expect("log key");
    let verified = verify_checkpoint(note.as_bytes(), &log, &policy, now_secs()).expect("verified");
    assert_eq!(tree.root(3).expect("root"), verified.checkpoint.root);
    for (i, e) in entries.iter().enumerate() {
        let head = kt_client::head::SignedHead::from_bytes(e).expect("a head");
        d.pinned.check_head(&head).expect("signed by the directory");
        assert_eq!(head.head.epoch, i as u64);
    }
    for (path, want) in [
        ("/log/tile/0/000.p/4", 404),
        ("/log/tile/0/000", 404),
        ("/log/tile/0/x000/000", 400),
    ] {
        assert_eq!(api.get_raw(path).await.0, want, "{path}");
    }

    // One round trip: a lookup with its head's place in the log, 2 of 2.
    let lookup: kt_client::wire::LookupResponse = api.get("/v1/lookup/w-1-0@example.org?log=true").await;
    d.pinned
        .lookup_response("w-1-0@example.org", &lookup)
        .expect("lookup verifies");
    let proof: LogProof = lookup.log.clone().expect("log proof");
    verify_head_in_log(&lookup.head, &proof, &log, &policy, now_secs()).expect("head in a 2-of-2 checkpoint");

    // `kt checkpoint` with both witnesses pinned: verified, stored in the state file.
    let state = tmp.path().join("kt-state.json");
    let pins = ["--witness", &v1, "--witness", &v2, "--min-witnesses", "2"];
    let (code, out) = kt(&directory.url, &key, &state, &[&pins[..], &["checkpoint"]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("size 3"), "{out}");

    // A witness goes down: the next checkpoint gets one co-signature; a client
    // requiring both refuses it (exit 9), until the witness is back.
    let a2_addr = a2.url.trim_start_matches("http://").to_owned();
    drop(a2);
    api.publish_epochs(1, 2, "x").await;
    wait_checkpoint(&api, &d, &policy, "size 4 with only witness 1", |r| {
        matches!(r, Err(CheckpointError::Witnesses { got: 1, need: 2 }))
    })
    .await;
    let (code, out) = kt(&directory.url, &key, &state, &[&pins[..], &["checkpoint"]].concat());
    assert_eq!(code, 9, "{out}");
    let (_, metrics) = api.get_raw("/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kt_directory_witness_requests_total") && l.contains("result=\"unavailable\"")),
        "the down witness is counted"
    );
    let a2 = Server::start_auditor_on(&a2_dir, &a2_addr, &directory.url, &key, &[]);
    wait_checkpoint(&api, &d, &policy, "2 of 2 at size 4", |r| {
        r.as_ref().is_ok_and(|v| v.checkpoint.size == 4)
    })
    .await;
    let (code, out) = kt(&directory.url, &key, &state, &[&pins[..], &["checkpoint"]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("size 4"), "consistency from 3 to 4 checked: {out}");

    // A copy of the data directory, taken now (size 4), forks: the copy publishes an
    // epoch of its own, so two signed checkpoints of size 5 differ.
    let clone_dir = tmp.path().join("clone");
    drop(directory);
    copy_dir(&d.data_dir, &clone_dir);
    let directory = Server::start_on(&d.data_dir, &addr, &[&interval[..], &witnesses[..]].concat());
    api.publish_epochs(1, 2, "honest").await;
    wait_checkpoint(&api, &d, &policy, "2 of 2 at size 5", |r| {
        r.as_ref().is_ok_and(|v| v.checkpoint.size == 5)
    })
    .await;
    let (code, out) = kt(&directory.url, &key, &state, &[&pins[..], &["checkpoint"]].concat());
    assert_eq!(code, 0, "{out}");
    // The dashboard shows the latest co-signed checkpoint (headless Chromium).
    let dom = chromium(&a1.url, &shot_path("dashboard-checkpoint.png"));
    assert!(dom.contains(r#"data-checkpoint-size="5""#), "dashboard DOM: {dom}");
    assert!(dom.contains(&v1), "the witness key is shown");
    // The forked copy pushes to witness 1 only; it has co-signed size 5 already.
    let fork = Server::start(
        &clone_dir,
        &[&interval[..], &["--witness", &format!("{}={v1}", a1.url)]].concat(),
    );
    let fork_api = Api::new(&fork.url, &d.token);
    fork_api.publish_epochs(1, 2, "forked").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list: kt_client::auditor::EvidenceList = a1_api.get("/v1/evidence").await;
        if list
            .evidence
            .iter()
            .any(|e| e.kind == kt_client::auditor::EvidenceKind::LogFork)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the witness published no LogFork evidence");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The client that holds the honest size 5 sees the fork's size 5: exit 5, both
    // notes printed. (Without witnesses: the fork has none of the second.)
    let (code, out) = kt(&fork.url, &key, &state, &["checkpoint"]);
    assert_eq!(code, 5, "{out}");
    assert_eq!(
        out.matches("witness.e2e.invalid/epochs\n5\n").count(),
        2,
        "both notes: {out}"
    );
    // And the fork never gets witness 1's co-signature.
    let note = String::from_utf8(fork_api.get_raw("/log/checkpoint").await.1).expect("utf8");
    let one = WitnessPolicy::new(vec![VerifierKey::parse(&v1).expect("v1")], 1, None).expect("policy");
    assert!(matches!(
        verify_checkpoint(note.as_bytes(), &log, &one, now_secs()),
        Err(CheckpointError::Witnesses { got: 0, .. })
    ));
    drop((fork, directory, a1, a2));
}
