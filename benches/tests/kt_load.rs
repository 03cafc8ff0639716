//! `kt-load` end to end at a tiny size: it builds, resumes, publishes and measures
//! against a real `kt-directory serve` on loopback, checks a blob as the auditor does,
//! and its summary draws the chart. Figures are not checked (they are the harness's
//! output, not a test's); their presence and consistency are.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const KT_LOAD: &str = env!("CARGO_BIN_EXE_kt-load");
const DIRECTORY: &str = env!("CARGO_BIN_EXE_kt-load-directory");

fn run(data: &Path, out: &Path, epochs: u64) -> Value {
    let status = Command::new(KT_LOAD)
        .args(["run", "--entries", "3000", "--load-batch", "1500", "--updates", "500"])
        .args([
            "--readers",
            "2",
            "--read-secs",
            "1",
            "--max-read-secs",
            "60",
            "--max-reads",
            "400",
        ])
        .args(["--baseline-entries", "500", "--verify-every", "5", "--warmup-secs", "1"])
        .arg("--epochs")
        .arg(epochs.to_string())
        .arg("--directory-bin")
        .arg(DIRECTORY)
        .arg("--data-dir")
        .arg(data)
        .arg("--out")
        .arg(out)
        .env("RUST_LOG", "warn")
        .status()
        .expect("run kt-load");
    assert!(status.success(), "kt-load run failed: {status}");
    let newest = std::fs::read_dir(out)
        .expect("out dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .max_by_key(|p| std::fs::metadata(p).expect("stat").modified().expect("mtime"))
        .expect("a JSON report");
    let report: Value = serde_json::from_slice(&std::fs::read(&newest).expect("read")).expect("JSON");
    let _ = std::fs::rename(&newest, newest.with_extension(format!("{epochs}.json")));
    report
}

#[test]
fn builds_resumes_measures_and_summarizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, out) = (dir.path().join("data"), dir.path().join("out"));
    let first = run(&data, &out, 2);
    assert_eq!(first["entries"], 3000);
    assert_eq!(first["build"]["added"], 3000);
    assert_eq!(first["build"]["epochs"], 2);
    assert!(first["baseline"]["per_sec"].as_f64().expect("baseline") > 0.0);
    assert!(first["idle_reads"]["requests"].as_u64().expect("reads") > 0);
    let epochs = first["epochs"].as_array().expect("epochs");
    assert_eq!(epochs.len(), 2);
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"], 3 + i as u64, "epochs follow the two build epochs");
        assert_eq!(e["published"], 500);
        assert_eq!(
            e["proof_leaves"], 1000,
            "a rotation inserts a new leaf and a stale marker"
        );
        assert!(e["audit_blob_bytes"].as_u64().expect("blob") > 0);
        assert!(e["auditor_verify_secs"].as_f64().expect("verify") > 0.0);
        assert!(e["auditor_peak_rss_bytes"].as_u64().expect("rss") > 0);
        assert!(e["publisher_peak_rss_bytes"].as_u64().expect("rss") > 0);
        assert_eq!(e["versions"], 3000 + 500 * (i as u64 + 1));
        assert_eq!(e["reads"]["bad_proofs"], 0);
        assert!(e["reads"]["verified"].as_u64().expect("verified") > 0);
    }
    assert!(first["disk"]["tree_bytes_per_entry"].as_f64().expect("disk") > 0.0);

    // Again on the same data directory: nothing to build, the epochs carry on.
    let second = run(&data, &out, 1);
    assert_eq!(second["build"]["added"], 0);
    assert_eq!(second["epochs"][0]["epoch"], 5);
    assert_eq!(second["epochs"][0]["versions"], 3000 + 500 * 3);

    let svg = dir.path().join("chart.svg");
    let reports: Vec<_> = std::fs::read_dir(&out)
        .expect("out dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    let summary = Command::new(KT_LOAD)
        .arg("summary")
        .args(&reports)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("summary");
    assert!(summary.status.success(), "{}", String::from_utf8_lossy(&summary.stderr));
    let table = String::from_utf8(summary.stdout).expect("utf8");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| 3000 |")).count(),
        2,
        "{table}"
    );
    assert!(std::fs::read_to_string(&svg).expect("svg").starts_with("<svg"));
}
