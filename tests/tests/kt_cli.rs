//! `kt` against a real directory: lookups, histories, heads and monitoring verified with a
//! pinned key; offline verification of saved responses; rollback and fork detection
//! across runs through the state file (a directory restored from a copy of its data).

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Api, Server, copy_dir, init};
use kt_client::state::ForkEvidence;
use std::path::PathBuf;
use std::process::Command;

struct Kt {
    url: String,
    key: String,
    state: PathBuf,
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kt {
    fn run(&self, args: &[&str]) -> Ran {
        self.run_with_key(&self.key, args)
    }

    fn run_with_key(&self, key: &str, args: &[&str]) -> Ran {
        let out = Command::new(env!("CARGO_BIN_EXE_e2e-kt"))
            .args(["--directory", &self.url, "--directory-key", key, "--state"])
            .arg(&self.state)
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
}

fn ok(ran: &Ran) -> serde_json::Value {
    assert_eq!(ran.code, 0, "kt failed: {}{}", ran.stdout, ran.stderr);
    serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", ran.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kt_verifies_monitors_and_catches_rollback_and_fork() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = init(&tmp.path().join("data"), "kt-cli");
    let key = hex::encode(dir.pinned.directory_key.as_bytes());
    let server = Server::start(&dir.data_dir, &["--epoch-interval", "3600"]);
    let api = Api::new(&server.url, &dir.token);
    let k1 = b"alice's real key".to_vec();
    api.post_updates(&[("alice".into(), k1.clone()), ("bob".into(), b"bob's key".to_vec())])
        .await
        .expect("202");
    api.epoch().await.expect("epoch 1");
    let kt = Kt {
        url: server.url.clone(),
        key: key.clone(),
        state: tmp.path().join("state.json"),
    };

    // lookup, verified; the response saved for offline verification.
    let saved = tmp.path().join("lookup.json");
    let saved_arg = saved.to_str().expect("utf8");
    let v = ok(&kt.run(&["--json", "lookup", "alice", "--save", saved_arg]));
    assert_eq!(v["value"], B64.encode(&k1));
    assert_eq!((v["version"].as_u64(), v["head"]["epoch"].as_u64()), (Some(1), Some(1)));
    let text = kt.run(&["lookup", "alice"]);
    assert!(text.stdout.contains("version=1 epoch=1"), "{}", text.stdout);

    // Another pinned key, an unknown label: distinct failures.
    let other = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[3; 32])
            .verifying_key()
            .as_bytes(),
    );
    let wrong = kt.run_with_key(&other, &["lookup", "alice"]);
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("signature"), "{}", wrong.stderr);
    assert_eq!(kt.run(&["lookup", "nobody"]).code, 6);
    assert_ne!(kt.run_with_key("zz", &["head"]).code, 0);
    // A head older than the allowed age (epoch 1 was signed over a second ago) is
    // refused with its own code; 0 turns the check off.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(kt.run(&["--max-head-age", "1", "head"]).code, 8);
    assert_eq!(kt.run(&["--max-head-age", "0", "head"]).code, 0);
    assert_eq!(kt.run(&["--max-head-age", "3600", "head"]).code, 0);

    // The owner's monitor is happy, until a key is swapped in and back out.
    let expect = B64.encode(&k1);
    let m = kt.run(&["monitor", "alice", "--expect", &expect, "--once"]);
    assert_eq!(m.code, 0, "{}{}", m.stdout, m.stderr);
    api.post_updates(&[("alice".into(), b"attacker's key".to_vec())])
        .await
        .expect("202");
    api.epoch().await.expect("epoch 2");
    api.post_updates(&[("alice".into(), k1.clone())]).await.expect("202");
    api.epoch().await.expect("epoch 3");
    let current = ok(&kt.run(&["--json", "lookup", "alice"]));
    assert_eq!(current["value"], expect, "the current key looks right again");
    let m = kt.run(&["monitor", "alice", "--expect", &expect, "--once"]);
    assert_eq!(m.code, 7, "{}{}", m.stdout, m.stderr);
    assert!(m.stdout.contains("version=2 epoch=2"), "{}", m.stdout);
    assert!(m.stdout.contains(&B64.encode(b"attacker's key")), "{}", m.stdout);

    // History, and offline verification of the saved response (no --directory needed).
    let h = ok(&kt.run(&["--json", "history", "alice"]));
    let epochs: Vec<u64> = h["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["epoch"].as_u64().expect("epoch"))
        .collect();
    assert_eq!(epochs, vec![3, 2, 1]);
    let offline = Command::new(env!("CARGO_BIN_EXE_e2e-kt"))
        .args(["--directory-key", &key, "--state"])
        .arg(&kt.state)
        .args(["verify", saved_arg])
        .output()
        .expect("kt verify");
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
    let mut tampered: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).expect("read")).expect("json");
    tampered["label"] = "bob".into();
    std::fs::write(&saved, tampered.to_string()).expect("write");
    assert_eq!(kt.run(&["verify", saved_arg]).code, 3);

    // Rollback: keep a copy of the data at epoch 3, move on to epoch 4, then serve the copy.
    let h3 = ok(&kt.run(&["--json", "head"]));
    assert_eq!(h3["epoch"], 3);
    server.terminate();
    let copy = tmp.path().join("copy");
    copy_dir(&dir.data_dir, &copy);
    let server = Server::start(&dir.data_dir, &["--epoch-interval", "3600"]);
    let api = Api::new(&server.url, &dir.token);
    api.post_updates(&[("bob".into(), b"bob's new key".to_vec())])
        .await
        .expect("202");
    let e4 = api.epoch().await.expect("epoch 4");
    let kt = Kt {
        url: server.url.clone(),
        ..kt
    };
    assert_eq!(ok(&kt.run(&["--json", "head"]))["epoch"], 4);
    server.terminate();

    let restored = Server::start(&copy, &["--epoch-interval", "3600"]);
    let kt = Kt {
        url: restored.url.clone(),
        ..kt
    };
    let rollback = kt.run(&["lookup", "alice"]);
    assert_eq!(rollback.code, 4, "{}{}", rollback.stdout, rollback.stderr);
    assert!(rollback.stderr.contains("rollback"), "{}", rollback.stderr);

    // Fork: the restored copy publishes a different epoch 4.
    let api = Api::new(&restored.url, &dir.token);
    api.post_updates(&[("bob".into(), b"a different key".to_vec())])
        .await
        .expect("202");
    let forked = api.epoch().await.expect("forked epoch 4");
    assert_eq!(forked.epoch, 4);
    assert_ne!(forked.head.head.root, e4.head.head.root);
    let fork = kt.run(&["head"]);
    assert_eq!(fork.code, 5, "{}{}", fork.stdout, fork.stderr);
    let evidence: ForkEvidence = serde_json::from_str(&fork.stdout).expect("evidence JSON on stdout");
    for head in [&evidence.first, &evidence.second] {
        dir.pinned.check_head(head).expect("both heads are validly signed");
        assert_eq!(head.head.epoch, 4);
    }
    assert_ne!(evidence.first.head.root, evidence.second.head.root);
    restored.terminate();
}
