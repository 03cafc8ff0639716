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

/// The resident memory of process `pid`, bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Anonymous readers of a large audit blob who read slowly, or stop reading: they
/// share one copy of the blob (the server's memory does not grow with them), at most
/// `max_blob_readers` are served at once (the next one gets 503 at once; all come from
/// one address here, so the per-address limit is raised to 8), and one too slow is cut
/// off after `blob_send_timeout_secs`, which frees its slot.
#[test]
fn slow_blob_readers_share_one_copy_are_bounded_and_cut_off() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = init(&tmp.path().join("data"), "e2e.blobs");
    let config = tmp.path().join("directory.toml");
    std::fs::write(
        &config,
        "max_updates_per_request = 10000\nmax_body_bytes = 8388608\nmax_blob_readers = 8\nmax_blob_readers_per_client = 8\nblob_send_timeout_secs = 4\n",
    )
    .expect("config");
    let server = Server::process(&d.data_dir, &["--config", config.to_str().expect("utf8")]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let api = common::Api::new(&server.url, &d.token);
    let updates: Vec<(String, Vec<u8>)> = (0..60_000).map(|i| (format!("user-{i}"), vec![7u8; 32])).collect();
    let (epoch, name) = rt.block_on(async {
        for chunk in updates.chunks(10_000) {
            api.post_updates(chunk).await.expect("queue");
        }
        let e = api.epoch().await.expect("epoch");
        let h = &e.head.head;
        let name = format!("{}/{}/{}", h.epoch, hex::encode(h.previous_root), hex::encode(h.root));
        // The blob is built after the head is served.
        for _ in 0..600 {
            if api.get_raw(&format!("/{name}")).await.0 == 200 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (e.epoch, name)
    });
    let blob_len = rt.block_on(api.get_raw(&format!("/{name}"))).1.len() as u64;
    assert!(
        blob_len > 2 << 20,
        "a blob of {blob_len} bytes is too small to measure with"
    );
    let addr = server.url.trim_start_matches("http://").to_owned();
    let pid = server.pid();
    let before = rss_of(pid);

    // Eight readers take the first bytes of the blob, then stop reading.
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            write!(s, "GET /v1/audit/{epoch} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("write");
            let mut first = [0u8; 12];
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            s.read_exact(&mut first).expect("the response starts");
            assert_eq!(&first, b"HTTP/1.1 200");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_of(pid);
    // One copy of the blob, and each reader's socket buffers and a slice or two; a copy
    // (and a base64 form) per reader would be ~8 × 2.3 × the blob.
    assert!(
        during.saturating_sub(before) < 3 * blob_len,
        "8 stalled readers of a {blob_len}-byte blob took the server from {before} to {during} bytes"
    );
    // A ninth is refused at once: every slot is taken.
    let (status, _) = rt.block_on(api.get_raw(&format!("/v1/audit/{epoch}")));
    assert_eq!(status, 503);
    // The stalled ones are cut off after the send timeout, and their slots come back.
    std::thread::sleep(Duration::from_secs(5));
    let (status, body) = rt.block_on(api.get_raw(&format!("/{name}")));
    assert_eq!((status, body.len() as u64), (200, blob_len));
    drop(stalled);
}
