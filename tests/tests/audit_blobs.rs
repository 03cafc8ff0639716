//! `kt-auditor audit-blobs` against audit blobs generated from our RocksDB directory:
//! an honest folder verifies; a tampered proof, a broken root chain and a gap fail
//! with a non-zero exit and a reason.

use akd::local_auditing::AuditBlob;
use kt_directory::storage::StorageConfig;
use kt_directory::vrf::VrfSecret;
use kt_directory::{open_rocks_directory, sample};
use std::path::Path;
use std::process::{Command, Output};

const EPOCHS: u64 = 4;

/// Publishes `EPOCHS` epochs and writes one blob per epoch, named by its end epoch.
async fn write_blobs(db: &Path, out: &Path) -> Vec<std::path::PathBuf> {
    let dir = open_rocks_directory(db, StorageConfig::default(), VrfSecret::from_bytes([3; 32]))
        .await
        .expect("directory");
    let mut prev = dir.get_epoch_hash().await.expect("epoch 0").1;
    let mut paths = Vec::new();
    for epoch in 1..=EPOCHS {
        let cur = dir
            .publish(sample::updates(5, epoch, 300, 2000))
            .await
            .expect("publish")
            .1;
        let proof = dir.audit(epoch - 1, epoch).await.expect("audit proof");
        let blob = AuditBlob::new(prev, cur, epoch, &proof.proofs[0]).expect("blob");
        let path = out.join(blob.name.to_string());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &blob.data).expect("write blob");
        paths.push(path);
        prev = cur;
    }
    paths
}

fn audit(folder: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_e2e-kt-auditor"))
        .arg("audit-blobs")
        .arg(folder)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kt-auditor")
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_blobs_verify_and_tampering_is_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let honest = tmp.path().join("honest");
    let paths = write_blobs(&tmp.path().join("db"), &honest).await;

    let out = audit(&honest);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "honest blobs must verify: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("ok: {EPOCHS} epochs verified")), "{stdout}");

    let variant = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        copy_tree(&honest, &dir);
        dir
    };
    let rel = |p: &Path| p.strip_prefix(&honest).expect("under honest").to_path_buf();

    // 1. A proof byte flipped: the append-only check (or decoding) must fail at epoch 3.
    let flipped = variant("flipped");
    let target = flipped.join(rel(&paths[2]));
    let mut data = std::fs::read(&target).expect("read");
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(&target, data).expect("write");
    let out = audit(&flipped);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a tampered proof must fail");
    assert!(stderr.contains("epoch 3"), "{stderr}");

    // 2. The proof of epoch 2 filed under epoch 3's name: roots do not match the proof.
    let swapped = variant("swapped");
    std::fs::copy(honest.join(rel(&paths[1])), swapped.join(rel(&paths[2]))).expect("swap");
    let out = audit(&swapped);
    assert!(!out.status.success(), "a swapped proof must fail");

    // 3. A missing epoch is a gap, not silently skipped.
    let gap = variant("gap");
    std::fs::remove_dir_all(
        gap.join(rel(&paths[1]))
            .parent()
            .and_then(Path::parent)
            .expect("epoch dir"),
    )
    .expect("remove epoch 2");
    let out = audit(&gap);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("gap: no blob for epoch 2"), "{stderr}");

    // 4. A blob whose name claims another previous root breaks the chain.
    let chain = variant("chain");
    let old = chain.join(rel(&paths[3]));
    let name = rel(&paths[3]).to_string_lossy().into_owned();
    let mut parts: Vec<String> = name.split('/').map(str::to_owned).collect();
    parts[1] = "ab".repeat(32);
    let new = chain.join(parts.join("/"));
    std::fs::create_dir_all(new.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&old, &new).expect("rename");
    std::fs::remove_dir(old.parent().expect("parent")).expect("rmdir");
    let out = audit(&chain);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("broken chain at epoch 4"), "{stderr}");

    // 5. An empty folder is an error, not a vacuous success.
    let nothing = tmp.path().join("nothing");
    std::fs::create_dir_all(&nothing).expect("mkdir");
    assert!(!audit(&nothing).status.success());
}
