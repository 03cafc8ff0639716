//! Server limits against real clients on loopback: a slow client holding a request
//! slot, the concurrency limit answering 503 at once instead of queueing, the request
//! timeout freeing the slot, and read authentication and rate limits from the config
//! file.

mod common;

use common::{Server, init};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn status_of(url: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut request = reqwest::Client::new().get(format!("{url}{path}"));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, retry)
    })
}

#[test]
fn a_slow_client_gets_408_and_the_busy_server_sheds_load_with_503() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("data"), "e2e.limits");
    let config = tmp.path().join("directory.toml");
    std::fs::write(&config, "max_concurrent_requests = 1\nrequest_timeout_secs = 3\n").expect("config");
    let server = Server::start(&d.data_dir, &["--config", config.to_str().expect("utf8")]);
    let addr = server.url.trim_start_matches("http://").to_owned();

    // A client that announces a body and never sends it holds the only slot.
    let mut slow = TcpStream::connect(&addr).expect("connect");
    write!(
        slow,
        "POST /v1/updates HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"upd",
        d.token
    )
    .expect("write");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, retry) = status_of(&server.url, "/v1/info", None);
    assert_eq!((status, retry.as_str()), (503, "1"), "shed at once, not queued");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The request timeout ends the slow request with 408 and frees the slot.
    slow.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer)
        .expect("an answer within the request timeout");
    assert_eq!(&answer, b"HTTP/1.1 408", "{}", String::from_utf8_lossy(&answer));
    assert_eq!(status_of(&server.url, "/v1/info", None).0, 200);
}

#[test]
fn reads_need_the_read_token_when_configured_and_are_rate_limited() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("data"), "e2e.private");
    let token_file = tmp.path().join("read.token");
    std::fs::write(&token_file, "a-private-read-token-42\n").expect("token");
    let config = tmp.path().join("directory.toml");
    std::fs::write(&config, "read_rate_per_sec = 1\nread_burst = 5\n").expect("config");
    let server = Server::start(
        &d.data_dir,
        &[
            "--config",
            config.to_str().expect("utf8"),
            "--read-token-file",
            token_file.to_str().expect("utf8"),
        ],
    );
    assert_eq!(status_of(&server.url, "/v1/lookup/alice", None).0, 401);
    assert_eq!(
        status_of(&server.url, "/v1/info", Some(&d.token)).0,
        401,
        "the operator token does not read"
    );
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(status_of(&server.url, "/v1/heads/latest", Some("a-private-read-token-42")).0);
    }
    assert_eq!(&codes[..5], &[200; 5], "{codes:?}");
    assert!(codes[5..].contains(&429), "{codes:?}");
    assert_eq!(status_of(&server.url, "/healthz", None).0, 200);

    let short = tmp.path().join("short.token");
    std::fs::write(&short, "abc").expect("token");
    let out = std::process::Command::new(common::DIRECTORY)
        .args(["serve", "--listen", "127.0.0.1:0", "--read-token-file"])
        .arg(&short)
        .arg("--data-dir")
        .arg(&d.data_dir)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 16"));
}

#[test]
fn oversized_and_too_many_headers_are_refused_with_431() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("data"), "e2e.headers");
    let server = Server::start(&d.data_dir, &[]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let ask = |headers: String| {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        // The server may answer and close before reading everything we send.
        let _ = write!(s, "GET /v1/info HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer).expect("an answer");
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert_eq!(ask(format!("X-Big: {}\r\n", "a".repeat(600_000))), "HTTP/1.1 431");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(ask(many), "HTTP/1.1 431");
    assert_eq!(
        status_of(&server.url, "/v1/info", None).0,
        200,
        "and the server goes on"
    );
}
