//! A data directory restored from an older backup must never sign a second, different
//! head for an epoch it already signed. `kt-directory serve --auditor URL=KEY` asks the
//! auditor first and refuses; what the auditor says counts only when co-signed with
//! the pinned key, recently, and a `404` on the path does not wave the restored copy
//! through. Started without that check, the restored directory's new heads are caught
//! by the auditor as a rollback and never co-signed.

mod common;

use common::{Api, Server, copy_dir, init};
use kt_client::auditor::{AuditState, CoSignedHead, EvidenceKind, EvidenceList};
use std::path::Path;
use std::process::Command;

/// `serve` that is expected to refuse; returns its stderr.
fn refused(data_dir: &Path, auditor: &str) -> String {
    refused_with(data_dir, auditor, &[])
}

fn refused_with(data_dir: &Path, auditor: &str, extra: &[&str]) -> String {
    let out = Command::new(common::DIRECTORY)
        .args(["serve", "--listen", "127.0.0.1:0", "--auditor", auditor, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run serve");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "serve must refuse: {err}");
    err
}

/// A fake auditor on loopback that answers `GET /v1/heads/latest` with `answer`
/// (status, body) and everything else with 404.
async fn fake_auditor(answer: (u16, String)) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/heads/latest",
        axum::routing::get(move || {
            let (status, body) = answer.clone();
            async move {
                (
                    axum::http::StatusCode::from_u16(status).expect("status"),
                    [("content-type", "application/json")],
                    body,
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_refuses_to_fork_and_the_auditor_catches_one_that_does() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("live"), "e2e.restore");
    let key = hex::encode(d.pinned.directory_key.as_bytes());

    // Epochs 1-2, a backup, then epochs 3-4.
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600"]);
    Api::new(&server.url, &d.token).publish_epochs(2, 50, "a").await;
    server.terminate();
    let backup = tmp.path().join("backup");
    copy_dir(&d.data_dir, &backup);
    let server = Server::start(&d.data_dir, &["--epoch-interval", "3600"]);
    let listen = server.url.trim_start_matches("http://").to_owned();
    Api::new(&server.url, &d.token).publish_epochs(2, 50, "b").await;

    let adir = tmp.path().join("auditor");
    let auditor_key = common::init_auditor(&adir);
    let a = Server::start_auditor(&adir, &server.url, &key, &[]);
    let pinned = |url: &str| format!("{url}={}", hex::encode(auditor_key.as_bytes()));
    let auditor = Api::new(&a.url, "");
    auditor
        .wait_status("epoch 4 verified", |s| s.last_verified_epoch == Some(4))
        .await;
    let honest_3: CoSignedHead = auditor.get("/v1/heads/3").await;
    server.terminate();

    // The live data passes the check and serves.
    let live = Server::start_on(
        &d.data_dir,
        &listen,
        &["--epoch-interval", "3600", "--auditor", &pinned(&a.url)],
    );
    live.terminate();

    // The backup (epoch 2) is refused: the auditor has verified epoch 4.
    let restored = tmp.path().join("restored");
    copy_dir(&backup, &restored);
    let err = refused(&restored, &pinned(&a.url));
    assert!(
        err.contains("has verified epoch 4") && err.contains("older backup"),
        "{err}"
    );
    let err = refused(&restored, &pinned("http://127.0.0.1:9"));
    assert!(err.contains("cannot confirm with the auditor"), "fails closed: {err}");
    let err = refused(&restored, &a.url);
    assert!(err.contains("URL=KEY"), "an auditor without its pinned key: {err}");

    // What the path can say without the auditor's key proves nothing. A 404 ("nothing
    // verified yet") from a fake auditor is refused, unless the operator says the
    // auditor is new; the auditor's genuine answer co-signed by another key is refused.
    let fake = fake_auditor((404, r#"{"error":"nothing verified yet"}"#.into())).await;
    let err = refused(&restored, &pinned(&fake));
    assert!(err.contains("--allow-fresh-auditor"), "{err}");
    let genuine: CoSignedHead = auditor.get("/v1/heads/2").await;
    let mut forged = genuine.clone();
    let impostor = ed25519_dalek::SigningKey::from_bytes(&[0x11; 32]);
    forged.cosignature = forged.cosignature.attestation.sign(&impostor).expect("sign").0;
    let fake = fake_auditor((200, serde_json::to_string(&forged).expect("json"))).await;
    let err = refused(&restored, &pinned(&fake));
    assert!(err.contains("does not verify with its pinned key"), "{err}");
    // An old co-signature may be a replay from before the data fell behind.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let fake = fake_auditor((200, serde_json::to_string(&genuine).expect("json"))).await;
    let err = refused_with(&restored, &pinned(&fake), &["--auditor-max-age", "1"]);
    assert!(err.contains("--auditor-max-age"), "{err}");

    // Started without the check, on the old address, it signs a new epoch 3: the auditor
    // sees a head for an older epoch signed later than epoch 4's, records a rollback,
    // and never co-signs the restored epoch 3.
    let rogue = Server::start_on(&restored, &listen, &["--epoch-interval", "3600"]);
    Api::new(&rogue.url, &d.token).publish_epochs(1, 50, "c").await;
    let s = auditor
        .wait_status("rollback detected", |s| s.state == AuditState::Failed)
        .await;
    assert!(s.reason.contains("Rollback"), "{s:?}");
    let list: EvidenceList = auditor.get("/v1/evidence").await;
    assert_eq!(list.evidence[0].kind, EvidenceKind::Rollback, "{list:?}");
    for head in &list.evidence[0].heads {
        d.pinned
            .check_head(head)
            .expect("the evidence is signed by the directory");
    }
    let still: CoSignedHead = auditor.get("/v1/heads/3").await;
    assert_eq!(still, honest_3, "the co-signed epoch 3 is the honest one");

    // Once the restored copy has gone past the auditor's epoch, the check sees the
    // diverged root at epoch 4 instead.
    Api::new(&rogue.url, &d.token).publish_epochs(2, 50, "d").await;
    rogue.terminate();
    let err = refused(&restored, &pinned(&a.url));
    assert!(err.contains("verified root") && err.contains("for epoch 4"), "{err}");
}
