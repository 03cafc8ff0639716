//! Shared helpers of the end-to-end tests: `kt-directory` and `kt-auditor` servers on
//! 127.0.0.1:0 (in process, or real processes where a test needs one) and a small HTTP
//! client for them.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kt_client::head::SignedHead;
use kt_client::http::{DirectoryClient, HttpError, OperatorClient};
use kt_client::verify::PinnedKeys;
use kt_client::wire::{EpochResponse, Outcome, UpdateItem};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The directory binary under test.
pub const DIRECTORY: &str = env!("CARGO_BIN_EXE_e2e-kt-directory");
/// The auditor binary under test.
pub const AUDITOR: &str = env!("CARGO_BIN_EXE_e2e-kt-auditor");
/// No sign of life from a child for this long fails the test instead of hanging it.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// What `kt-directory init` printed.
#[derive(Debug, Clone)]
pub struct Initialized {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Keys to pin.
    pub pinned: PinnedKeys,
    /// The operator token.
    pub token: String,
}

/// Runs `kt-directory init` and parses its output.
pub fn init(data_dir: &Path, namespace: &str) -> Initialized {
    let out = Command::new(DIRECTORY)
        .args(["init", "--namespace", namespace, "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run init");
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("init printed no {name}: {stdout}"))
            .to_owned()
    };
    let key: [u8; 32] = hex::decode(field("signing_key"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let token_file = field("token_file");
    Initialized {
        data_dir: data_dir.to_path_buf(),
        pinned: PinnedKeys {
            directory_key: ed25519_dalek::VerifyingKey::from_bytes(&key).expect("key"),
            vrf_public_key: hex::decode(field("vrf_public_key")).expect("hex"),
            namespace: namespace.to_owned(),
        },
        token: std::fs::read_to_string(token_file).expect("token").trim().to_owned(),
    }
}

/// A child's stdout, line by line, on a channel (read by a thread, so the test can wait
/// with a timeout).
pub fn lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running `kt-directory serve` or `kt-auditor serve`: in this test process (the
/// default: `serve(listener, config, shutdown)` on a thread of its own), or a real
/// process where the test needs one (SIGKILL, its memory, TLS). Stopped on drop.
#[derive(Debug)]
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// How it runs.
    run: Run,
}

#[derive(Debug)]
enum Run {
    /// A child process.
    Process(Child),
    /// A server thread of this process, stopped by `stop`.
    InProcess {
        /// Resolves the server's shutdown future.
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        /// The server's thread, with its result.
        thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    },
}

/// Which server to run in process.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Directory,
    Auditor,
}

impl Server {
    /// Starts `serve` on 127.0.0.1:0 with `extra` arguments, in process.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts `serve` on `listen` (e.g. the address a previous server had), in process.
    pub fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        Server::in_process(Kind::Directory, directory_args(data_dir, listen, extra))
    }

    /// Starts `kt-auditor serve` on 127.0.0.1:0 following `directory` (pinned `key`),
    /// polling every second, with `extra` arguments, in process.
    pub fn start_auditor(data_dir: &Path, directory: &str, key: &str, extra: &[&str]) -> Server {
        Server::start_auditor_on(data_dir, "127.0.0.1:0", directory, key, extra)
    }

    /// [`Server::start_auditor`] on `listen` (e.g. the address it had before).
    pub fn start_auditor_on(data_dir: &Path, listen: &str, directory: &str, key: &str, extra: &[&str]) -> Server {
        Server::in_process(Kind::Auditor, auditor_args(data_dir, listen, directory, key, extra))
    }

    /// [`Server::start`] as a real `kt-directory serve` process.
    pub fn process(data_dir: &Path, extra: &[&str]) -> Server {
        Server::process_on(data_dir, "127.0.0.1:0", extra)
    }

    /// [`Server::start_on`] as a real process.
    pub fn process_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut cmd = Command::new(DIRECTORY);
        cmd.arg("serve").args(directory_args(data_dir, listen, extra));
        Server::spawn(cmd, "kt-directory serve")
    }

    /// [`Server::start_auditor`] as a real `kt-auditor serve` process.
    pub fn process_auditor(data_dir: &Path, directory: &str, key: &str, extra: &[&str]) -> Server {
        let mut cmd = Command::new(AUDITOR);
        cmd.arg("serve")
            .args(auditor_args(data_dir, "127.0.0.1:0", directory, key, extra));
        Server::spawn(cmd, "kt-auditor serve")
    }

    /// The process id (real processes only).
    pub fn pid(&self) -> u32 {
        match &self.run {
            Run::Process(child) => child.id(),
            Run::InProcess { .. } => panic!("an in-process server has no pid of its own: use Server::process"),
        }
    }

    /// Runs the server with the binary's own argument parsing on a thread of its own
    /// (own runtime, as the binary has), and waits until it answers HTTP.
    fn in_process(kind: Kind, args: Vec<String>) -> Server {
        let (bound, address) = mpsc::channel::<String>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("{kind:?} server"))
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let shutdown = async move {
                        let _ = stopped.await;
                    };
                    match kind {
                        Kind::Directory => {
                            let launch = kt_directory::cli::Launch::parse(&args)?;
                            let listener = tokio::net::TcpListener::bind(launch.config.listen).await?;
                            let _ = bound.send(format!("http://{}", listener.local_addr()?));
                            launch.serve(listener, shutdown).await
                        }
                        Kind::Auditor => {
                            let (data, config) = kt_auditor::cli::parse_serve(&args)?;
                            let listener = tokio::net::TcpListener::bind(config.listen).await?;
                            let _ = bound.send(format!("http://{}", listener.local_addr()?));
                            kt_auditor::server::serve(listener, data, config, shutdown).await
                        }
                    }
                })
            })
            .expect("server thread");
        let url = match address.recv_timeout(STARTUP_TIMEOUT) {
            Ok(url) => url,
            Err(_) => panic!("{kind:?} server did not start: {:?}", thread.join()),
        };
        let mut server = Server {
            url,
            run: Run::InProcess {
                stop: Some(stop),
                thread: Some(thread),
            },
        };
        if let Err(e) = answers_http(&server.url) {
            let result = server.stop_in_process();
            panic!("{kind:?} server at {} does not answer ({e}): {result:?}", server.url);
        }
        server
    }

    /// Spawns `cmd` and waits for its `listening on URL` line.
    fn spawn(mut cmd: Command, what: &str) -> Server {
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let rx = lines(child.stdout.take().expect("stdout"));
        let url = loop {
            let line = rx
                .recv_timeout(STARTUP_TIMEOUT)
                .unwrap_or_else(|_| panic!("{what} printed no address"));
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.to_owned();
            }
        };
        Server {
            url,
            run: Run::Process(child),
        }
    }

    /// Resolves an in-process server's shutdown and joins its thread.
    fn stop_in_process(&mut self) -> Option<anyhow::Result<()>> {
        let Run::InProcess { stop, thread } = &mut self.run else {
            return None;
        };
        if let Some(stop) = stop.take() {
            let _ = stop.send(());
        }
        let thread = thread.take()?;
        Some(
            thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the server thread panicked"))),
        )
    }

    /// SIGKILL, and reap (real processes only).
    pub fn kill(mut self) {
        let Run::Process(child) = &mut self.run else {
            panic!("SIGKILL needs a real process: start it with Server::process");
        };
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the server should have died of SIGKILL");
    }

    /// Stops the server as SIGTERM does (a real SIGTERM for a process), and expects a
    /// clean exit.
    pub fn terminate(mut self) {
        match &mut self.run {
            Run::Process(child) => {
                let pid = child.id().to_string();
                let ok = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
                assert!(ok.success());
                let status = child.wait().expect("wait");
                assert!(status.success(), "the server should exit 0 on SIGTERM, got {status}");
            }
            Run::InProcess { .. } => {
                let result = self.stop_in_process().expect("a server thread");
                assert!(result.is_ok(), "the server should stop cleanly, got {result:?}");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.run {
            Run::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Run::InProcess { .. } => {
                let _ = self.stop_in_process();
            }
        }
    }
}

/// `kt-directory serve` arguments (what follows `serve`).
fn directory_args(data_dir: &Path, listen: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--listen", listen, "--block-cache-mib", "32", "--data-dir"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(data_dir.display().to_string());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// `kt-auditor serve` arguments (what follows `serve`).
fn auditor_args(data_dir: &Path, listen: &str, directory: &str, key: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--listen",
        listen,
        "--poll-interval",
        "1",
        "--max-backoff",
        "2",
        "--directory",
        directory,
        "--directory-key",
        key,
        "--data-dir",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(data_dir.display().to_string());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Sends `GET /healthz` to `url` and reads the status line: any answer means the
/// server serves (an auditor that has not verified yet answers 503). The listener is
/// bound before the server opens its store, so the request waits until it does.
fn answers_http(url: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(STARTUP_TIMEOUT))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.1 ") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "not HTTP: {:?}",
            String::from_utf8_lossy(&head)
        )))
    }
}

/// A client of one directory: the operator API through `kt_client::http`'s
/// [`OperatorClient`], raw reads for tests that look at bytes.
#[derive(Debug, Clone)]
pub struct Api {
    /// Base URL.
    pub url: String,
    /// Operator token.
    pub token: String,
    /// HTTP client for raw reads (with a timeout: a hung server fails the test).
    pub http: reqwest::Client,
    /// The operator API.
    operator: OperatorClient,
}

impl Api {
    /// A client of `url` that trusts the CA certificate `ca_pem` too (an HTTPS server
    /// with a test CA).
    pub fn with_ca(url: &str, token: &str, ca_pem: &[u8]) -> Api {
        let ca = reqwest::Certificate::from_pem(ca_pem).expect("CA PEM");
        Api {
            url: url.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .add_root_certificate(ca.clone())
                .build()
                .expect("client"),
            operator: OperatorClient::new(
                DirectoryClient::with_roots(url, Duration::from_secs(300), &[ca]).expect("client"),
                token,
            ),
        }
    }

    /// A client of `url`.
    pub fn new(url: &str, token: &str) -> Api {
        Api {
            url: url.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("client"),
            operator: OperatorClient::new(
                DirectoryClient::new(url, Duration::from_secs(300)).expect("client"),
                token,
            ),
        }
    }

    /// `POST /v1/updates`: the ids, or why it failed.
    pub async fn post_updates(&self, updates: &[(String, Vec<u8>)]) -> Result<Vec<u64>, HttpError> {
        let items: Vec<UpdateItem> = updates
            .iter()
            .map(|(label, value)| UpdateItem {
                label: label.clone(),
                value: B64.encode(value),
            })
            .collect();
        Ok(self.operator.post_updates(&items).await?.ids)
    }

    /// `POST /v1/epochs`.
    pub async fn epoch(&self) -> Result<EpochResponse, HttpError> {
        self.operator.publish().await
    }

    /// `GET /v1/updates/{id}`; panics unless it answers.
    pub async fn outcome(&self, id: u64) -> Outcome {
        self.operator
            .outcome(id)
            .await
            .unwrap_or_else(|e| panic!("update {id}: {e}"))
            .outcome
    }

    /// GET a JSON document; panics unless 200.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let (status, body) = self.get_raw(path).await;
        assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// GET `path`, which must be a `404` with an absence proof of `label` that
    /// verifies under `pinned`; returns the answer.
    pub async fn absent(&self, path: &str, label: &str, pinned: &PinnedKeys) -> kt_client::wire::AbsenceResponse {
        let (status, body) = self.get_raw(path).await;
        assert_eq!(status, 404, "GET {path}: {}", String::from_utf8_lossy(&body));
        let absent: kt_client::wire::AbsenceResponse =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: not an absence answer: {e}"));
        pinned
            .absence_response(label, &absent)
            .unwrap_or_else(|e| panic!("GET {path}: the absence proof does not verify: {e}"));
        absent
    }

    /// GET raw bytes and the status.
    pub async fn get_raw(&self, path: &str) -> (u16, Vec<u8>) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    }

    /// Every signed head from 0 to the latest, checked: signatures with the pinned key
    /// and an unbroken root chain.
    pub async fn verified_chain(&self, pinned: &PinnedKeys) -> Vec<SignedHead> {
        let latest: SignedHead = self.get("/v1/heads/latest").await;
        pinned.check_head(&latest).expect("latest head verifies");
        let mut heads: Vec<SignedHead> = Vec::new();
        for epoch in 0..=latest.head.epoch {
            let head: SignedHead = self.get(&format!("/v1/heads/{epoch}")).await;
            pinned.check_head(&head).expect("head verifies");
            assert_eq!(head.head.epoch, epoch);
            let previous = heads.last().map_or([0; 32], |h| h.head.root);
            assert_eq!(head.head.previous_root, previous, "root chain broken at epoch {epoch}");
            heads.push(head);
        }
        assert_eq!(heads.last().map(|h| h.head.root), Some(latest.head.root));
        heads
    }

    /// Downloads every audit blob into `folder` as `{epoch}/{prev}/{cur}` files.
    pub async fn download_blobs(&self, heads: &[SignedHead], folder: &Path) {
        for head in heads.iter().skip(1) {
            let name = format!(
                "{}/{}/{}",
                head.head.epoch,
                hex::encode(head.head.previous_root),
                hex::encode(head.head.root)
            );
            let (status, bytes) = self.get_raw(&format!("/{name}")).await;
            assert_eq!(status, 200, "audit blob {name}");
            let path = folder.join(&name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write blob");
        }
    }
}

/// Runs `kt-auditor init` in `dir` and returns the auditor's public key.
pub fn init_auditor(dir: &Path) -> ed25519_dalek::VerifyingKey {
    let out = Command::new(AUDITOR)
        .args(["init", "--data-dir"])
        .arg(dir)
        .output()
        .expect("run kt-auditor init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let hex_key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("auditor key: "))
        .expect("init prints the key");
    let bytes: [u8; 32] = hex::decode(hex_key).expect("hex").try_into().expect("32 bytes");
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).expect("key")
}

/// `cp -a from to` (a data directory, e.g. as a backup).
pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp");
    assert!(status.success());
}

impl Api {
    /// Publishes `n` epochs of `per` fresh updates each (labels `{tag}-{epoch}-{i}@example.org`)
    /// through the operator API.
    pub async fn publish_epochs(&self, n: usize, per: usize, tag: &str) {
        for e in 0..n {
            let updates: Vec<(String, Vec<u8>)> = (0..per)
                .map(|i| (format!("{tag}-{e}-{i}@example.org"), vec![1, e as u8, i as u8]))
                .collect();
            self.post_updates(&updates).await.expect("updates accepted");
            self.epoch().await.expect("epoch published");
        }
    }

    /// Polls an auditor's `/v1/status` until `done` holds (60 s at most).
    pub async fn wait_status(
        &self,
        what: &str,
        done: impl Fn(&kt_client::auditor::StatusResponse) -> bool,
    ) -> kt_client::auditor::StatusResponse {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s: kt_client::auditor::StatusResponse = self.get("/v1/status").await;
            if done(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Runs `kt-auditor audit-blobs` on `folder`; panics with its output unless it passes.
pub fn audit_folder(folder: &Path) -> String {
    let out = Command::new(AUDITOR)
        .arg("audit-blobs")
        .arg(folder)
        .output()
        .expect("run kt-auditor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kt-auditor audit-blobs failed: {text}");
    text
}

/// Which store an end-to-end test runs the directory on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The data directory's RocksDB.
    Rocks,
    /// A fresh MariaDB database (its URL).
    Mysql(String),
}

impl Backend {
    /// The MySQL backend on a fresh database, or `None` (skipped; see
    /// `kt_directory::test_support::test_database`).
    pub async fn mysql(test: &str) -> Option<Backend> {
        let url = kt_directory::test_support::test_database(test)
            .await
            .expect("test database");
        url.map(Backend::Mysql)
    }

    /// `serve` arguments selecting this store.
    pub fn args(&self) -> Vec<String> {
        match self {
            Backend::Rocks => Vec::new(),
            Backend::Mysql(url) => vec!["--mysql-url".into(), url.clone()],
        }
    }
}

/// Owned `serve` arguments as the `&[&str]` that [`Server::start_on`] takes.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Headless Chromium (Debian's package) on the dashboard: the rendered DOM, and a
/// screenshot written under the target directory.
pub fn chromium(url: &str, shot: &Path) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let args = |extra: &str| {
        vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
            "--window-size=1280,1400".to_owned(),
            "--virtual-time-budget=5000".to_owned(),
            extra.to_owned(),
            url.to_owned(),
        ]
    };
    let run = |extra: &str| {
        Command::new("chromium")
            .args(args(extra))
            .output()
            .expect("run chromium (scripts/setup.sh installs Debian's chromium)")
    };
    let dom = run("--dump-dom");
    assert!(
        dom.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot_arg = format!("--screenshot={}", shot.display());
    let out = run(&shot_arg);
    assert!(
        out.status.success(),
        "chromium screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    String::from_utf8(dom.stdout).expect("utf8 DOM")
}

pub fn shot_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir.join(name)
}
