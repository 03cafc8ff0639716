//! HTTPS end to end: `kt-directory serve` and `kt-auditor serve` with a certificate from
//! a throwaway test CA (made with `openssl` for each run), `kt` and the auditor trusting
//! that CA through `--ca-file`; and a client that trusts another CA (or only the
//! system's) refused with a message that says what is wrong.

mod common;

use common::{Api, Server, init};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA, and a certificate for 127.0.0.1 it signed: `(ca.pem, server.pem, server.key)`.
fn test_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join(format!("{name}-ca.key"));
    let ca = dir.join(format!("{name}-ca.pem"));
    let key = dir.join(format!("{name}-server.key"));
    let csr = dir.join(format!("{name}-server.csr"));
    let cert = dir.join(format!("{name}-server.pem"));
    let ext = dir.join(format!("{name}-ext.cnf"));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |p: &Path| p.to_str().expect("utf8").to_owned();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=kt test CA {name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&cert),
    ]);
    (ca, cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kt_and_the_auditor_verify_over_https_and_an_untrusted_certificate_is_refused_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = test_ca(tmp.path(), "good");
    let (other_ca, _, _) = test_ca(tmp.path(), "other");
    let d = init(&tmp.path().join("data"), "e2e.tls");
    let server = Server::process(
        &d.data_dir,
        &[
            "--epoch-interval",
            "3600",
            "--tls-cert",
            cert.to_str().expect("utf8"),
            "--tls-key",
            key.to_str().expect("utf8"),
        ],
    );
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    let api = Api::with_ca(&server.url, &d.token, &std::fs::read(&ca).expect("ca"));
    api.publish_epochs(2, 20, "t").await;

    let kt = |ca_file: Option<&Path>, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_e2e-kt"));
        cmd.args(["--directory", &server.url, "--directory-key"])
            .arg(hex::encode(d.pinned.directory_key.as_bytes()))
            .arg("--state")
            .arg(tmp.path().join("state.json"));
        if let Some(ca) = ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        let out = cmd.args(args).env("RUST_LOG", "warn").output().expect("kt");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = kt(Some(&ca), &["--json", "lookup", "t-0-0@example.org"]);
    assert_eq!(code, 0, "{out}{err}");
    // Only the system's roots, or another CA: refused, saying it is the certificate.
    for ca_file in [None, Some(other_ca.as_path())] {
        let (code, _, err) = kt(ca_file, &["head"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("TLS with") && err.contains("--ca-file"), "{err}");
        assert!(err.to_ascii_lowercase().contains("certificate"), "{err}");
    }

    // The auditor follows the HTTPS directory, trusting the test CA, and serves its
    // own API over HTTPS too.
    let adir = tmp.path().join("auditor");
    common::init_auditor(&adir);
    let a = Server::process_auditor(
        &adir,
        &server.url,
        &hex::encode(d.pinned.directory_key.as_bytes()),
        &[
            "--ca-file",
            ca.to_str().expect("utf8"),
            "--tls-cert",
            cert.to_str().expect("utf8"),
            "--tls-key",
            key.to_str().expect("utf8"),
        ],
    );
    assert!(a.url.starts_with("https://"), "{}", a.url);
    let auditor = Api::with_ca(&a.url, "", &std::fs::read(&ca).expect("ca"));
    auditor
        .wait_status("verified over HTTPS", |s| s.last_verified_epoch == Some(2))
        .await;
}
