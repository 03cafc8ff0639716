//! The `kt` command line: fetch lookups, histories and heads from a directory and verify
//! them against a pinned signing key, remembering heads between runs (rollback and fork
//! detection). Settings: flags, then `KT_*` environment variables, then a TOML config
//! file (`--config`), in that order of precedence.
//!
//! Exit codes: 0 verified; 1 other errors (network, usage, files); 3 a proof or head did
//! not verify (or answered another question than asked); 4 rollback; 5 fork, broken
//! chain or time running backwards (the two signed heads are printed as JSON); 6 the
//! label is proven absent (a `404` without a valid absence proof is a 3); 7 `monitor`
//! saw a version its owner did not expect; 8 the head is too old or dated in the
//! future; 9 not yet audited.

use crate::head::{SignedHead, hex_array};
use crate::http::{DirectoryClient, HttpError};
use crate::state::{DirectoryState, State, StateError};
use crate::verify::{PinnedKeys, ResponseError};
use crate::wire::{AbsenceResponse, HistoryResponse, LookupResponse};
use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "kt", version, about = "Verify key-transparency lookups and histories")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Base URL of the directory.
    #[arg(long, global = true, env = "KT_DIRECTORY")]
    directory: Option<String>,
    /// The directory's head-signing key (hex), pinned out of band.
    #[arg(long, global = true, env = "KT_DIRECTORY_KEY")]
    directory_key: Option<String>,
    /// The directory's VRF public key (hex). Without it, the key is learned from the
    /// directory on first use and pinned in the state file.
    #[arg(long, global = true, env = "KT_VRF_KEY")]
    vrf_key: Option<String>,
    /// The directory's namespace. Without it, it is learned from the directory on first
    /// use and pinned in the state file, like the VRF key.
    #[arg(long, global = true, env = "KT_NAMESPACE")]
    namespace: Option<String>,
    /// State file [default: $XDG_STATE_HOME/kt/state.json or ~/.local/state/kt/state.json].
    #[arg(long, global = true, env = "KT_STATE")]
    state: Option<PathBuf>,
    /// TOML config file with `directory`, `directory_key`, `vrf_key`, `state`.
    #[arg(long, global = true, env = "KT_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// HTTP timeout, seconds.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    /// PEM bundle of CA certificates to trust (a private CA), besides the system's and
    /// the Mozilla roots; for the directory and the auditors alike.
    #[arg(long, global = true, env = "KT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Refuse heads signed longer ago than this many seconds (exit code 8); 0 turns the
    /// check off. The directory re-signs its head every epoch interval (2 minutes by
    /// default), so an hour is 30 missed intervals: a directory that has stalled, or
    /// serves a frozen view.
    #[arg(long, global = true, env = "KT_MAX_HEAD_AGE", default_value_t = 3600)]
    max_head_age: u64,
    /// Refuse heads dated more than this many seconds in the future (exit code 8).
    #[arg(long, global = true, env = "KT_MAX_CLOCK_SKEW", default_value_t = crate::verify::DEFAULT_MAX_SKEW_MS / 1000)]
    max_clock_skew: u64,
    /// An auditor whose co-signature heads need, as URL=KEY (its co-signing key, hex,
    /// pinned out of band). Repeat for several; KT_AUDITORS takes a comma-separated list.
    #[arg(long = "auditor", global = true, env = "KT_AUDITORS", value_delimiter = ',')]
    auditors: Vec<String>,
    /// How many of the given auditors must have co-signed the head's epoch [default:
    /// all of them]. Too few: exit code 9 ("not yet audited").
    #[arg(long, global = true, env = "KT_MIN_AUDITORS")]
    min_auditors: Option<usize>,
    /// A witness of the epoch log, as its cosignature/v1 verifier key
    /// (`name+keyid+base64`, c2sp.org/signed-note). Repeat for several; KT_WITNESSES
    /// takes a comma-separated list.
    #[arg(long = "witness", global = true, env = "KT_WITNESSES", value_delimiter = ',')]
    witnesses: Vec<String>,
    /// How many of the given witnesses must have co-signed a checkpoint [default: all
    /// of them]. Too few: exit code 9.
    #[arg(long, global = true, env = "KT_MIN_WITNESSES")]
    min_witnesses: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Look up a label's current value, verified: present (exit 0), proven absent
    /// (exit 6), or refused (exit 3, or the code of the check that failed).
    Lookup {
        /// The label (a device identifier).
        label: String,
        /// Also save the raw response here, for `kt verify`.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Every version of a label with its epoch, verified.
    History {
        /// The label.
        label: String,
        /// Only the n most recent versions.
        #[arg(long)]
        most_recent: Option<u64>,
        /// Also save the raw response here, for `kt verify`.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// The latest verified head.
    Head,
    /// Watch your own label: at every new epoch, verify its history since the last
    /// verified epoch and fail the moment a version appears with another value.
    Monitor(MonitorArgs),
    /// Verify a saved lookup, history or absence answer offline.
    Verify {
        /// The JSON response file (e.g. from `--save`).
        file: PathBuf,
    },
    /// Print the epoch log's latest checkpoint, verified: the directory's signature,
    /// the witness policy (--witness, --min-witnesses; the newest co-signature at most
    /// --max-head-age old), and one consistency proof from the checkpoint the state
    /// file holds. A fork of the log: exit 5, with both checkpoints printed.
    Checkpoint,
    /// Print the akd configuration this client verifies proofs with.
    Config,
}

#[derive(Debug, Args)]
struct MonitorArgs {
    /// The label to watch.
    label: String,
    /// The value (base64) every version must have.
    #[arg(long)]
    expect: String,
    /// On the first run, versions up to this epoch are accepted whatever their value
    /// (older keys of yours); later runs continue from the last verified epoch.
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Seconds between polls.
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// Check once and exit.
    #[arg(long)]
    once: bool,
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    directory: Option<String>,
    directory_key: Option<String>,
    vrf_key: Option<String>,
    namespace: Option<String>,
    state: Option<PathBuf>,
}

/// A failure with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
struct Coded {
    code: u8,
    error: anyhow::Error,
}

fn coded(code: u8, error: impl Into<anyhow::Error>) -> anyhow::Error {
    Coded {
        code,
        error: error.into(),
    }
    .into()
}

/// Exit code of a failed verification step.
fn code_of_response(e: ResponseError) -> anyhow::Error {
    match e {
        ResponseError::Stale { .. } | ResponseError::Future { .. } => coded(8, e),
        other => coded(3, other),
    }
}

fn code_of_state(e: StateError) -> anyhow::Error {
    match e {
        StateError::Rollback { .. } => coded(4, e),
        StateError::Fork(evidence) => {
            // The evidence goes to stdout, so it can be sent to an auditor.
            if let Ok(json) = serde_json::to_string_pretty(&evidence) {
                println!("{json}");
            }
            coded(5, StateError::Fork(evidence))
        }
        StateError::TimeWentBack(evidence) => {
            if let Ok(json) = serde_json::to_string_pretty(&evidence) {
                println!("{json}");
            }
            coded(5, StateError::TimeWentBack(evidence))
        }
        StateError::VrfKeyChanged { .. } | StateError::NamespaceChanged { .. } => coded(3, e),
        StateError::File { .. } => coded(1, e),
    }
}

fn code_of_http(e: HttpError) -> anyhow::Error {
    coded(1, e)
}

/// Exit code of a label proven absent (`lookup`, `history`, `verify`).
const EXIT_ABSENT: u8 = 6;

/// A `404` for a label without an absence proof: nobody signed it, so it is refused
/// like any answer that does not verify.
fn unproven_absence(label: &str, message: &str) -> anyhow::Error {
    coded(
        3,
        anyhow!(
            "the directory says {} is not found but sends no absence proof: {message}",
            crate::wire::printable(label, 300)
        ),
    )
}

/// What `lookup` and `history` print for a label proven absent.
#[derive(Debug, Serialize)]
struct Absent<'a> {
    label: &'a str,
    outcome: &'static str,
    head: &'a SignedHead,
}

/// Everything a command needs: resolved settings, the client, the state.
struct Session {
    client: Option<DirectoryClient>,
    key_hex: String,
    directory_key: ed25519_dalek::VerifyingKey,
    vrf_flag: Option<String>,
    namespace_flag: Option<String>,
    state_path: PathBuf,
    /// The state file as this run last read or wrote it.
    state: State,
    /// What this run learned and has not written yet: written under the state file's
    /// lock by [`Session::commit`], after every check of the step passed.
    pending: Pending,
    json: bool,
    /// Heads older than this are refused (`None`: no limit).
    max_head_age: Option<Duration>,
    /// Heads dated further ahead than this are refused.
    max_clock_skew: Duration,
    /// Auditors (client of each, co-signing key) whose co-signatures are required.
    auditors: Vec<(DirectoryClient, ed25519_dalek::VerifyingKey)>,
    /// How many distinct auditor keys must co-sign.
    min_auditors: usize,
    /// The epoch-log witnesses checkpoints are checked against.
    witnesses: crate::tlog::checkpoint::WitnessPolicy,
}

/// Observations of one step, applied to the state file together.
#[derive(Debug, Default)]
struct Pending {
    /// Verified heads, in the order seen.
    heads: Vec<SignedHead>,
    /// The VRF key, pinned by flag or learned.
    vrf_key: Option<String>,
    /// The namespace, pinned by flag or learned.
    namespace: Option<String>,
    /// Monitored labels and the epoch they were verified through.
    monitored: Vec<(String, u64)>,
}

/// Parses `URL=KEYHEX`.
fn parse_auditor(
    spec: &str,
    timeout: Duration,
    roots: &[reqwest::Certificate],
) -> anyhow::Result<(DirectoryClient, ed25519_dalek::VerifyingKey)> {
    let (url, key) = spec
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("--auditor {spec:?}: expected URL=KEY (the auditor's co-signing key, hex)"))?;
    let key: [u8; 32] = hex_array(key, "auditor key").with_context(|| format!("--auditor {spec:?}"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).with_context(|| format!("--auditor {spec:?}"))?;
    Ok((DirectoryClient::with_roots(url, timeout, roots)?, key))
}

fn default_state_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("kt").join("state.json")
}

impl Session {
    fn open(global: Global, needs_network: bool) -> anyhow::Result<Session> {
        let file = match &global.config {
            Some(path) => crate::configfile::load::<FileConfig>(path)?,
            None => FileConfig::default(),
        };
        let key_hex = global
            .directory_key
            .or(file.directory_key)
            .ok_or_else(|| anyhow!("--directory-key is required: pin the directory's signing key out of band"))?
            .to_ascii_lowercase();
        let key: [u8; 32] = hex_array(&key_hex, "directory key").context("--directory-key")?;
        let directory_key = ed25519_dalek::VerifyingKey::from_bytes(&key).context("--directory-key")?;
        let roots = match &global.ca_file {
            Some(path) => crate::http::read_ca_file(path).map_err(anyhow::Error::msg)?,
            None => Vec::new(),
        };
        let client = match global.directory.or(file.directory) {
            Some(url) => Some(DirectoryClient::with_roots(
                &url,
                Duration::from_secs(global.timeout),
                &roots,
            )?),
            None if needs_network => bail!("--directory URL is required"),
            None => None,
        };
        let timeout = Duration::from_secs(global.timeout);
        let auditors = global
            .auditors
            .iter()
            .map(|spec| parse_auditor(spec, timeout, &roots))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // A quorum counts keys, not entries: one auditor listed twice is one auditor.
        let distinct: std::collections::BTreeSet<[u8; 32]> = auditors.iter().map(|(_, k)| k.to_bytes()).collect();
        if distinct.len() != auditors.len() {
            bail!("an auditor key is given twice: each --auditor must have a key of its own");
        }
        let min_auditors = global.min_auditors.unwrap_or(auditors.len());
        if min_auditors > auditors.len() {
            bail!(
                "--min-auditors {min_auditors} but only {} --auditor given",
                auditors.len()
            );
        }
        let witness_keys = global
            .witnesses
            .iter()
            .map(|w| crate::tlog::note::VerifierKey::parse(w).with_context(|| format!("--witness {w:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let min_witnesses = global.min_witnesses.unwrap_or(witness_keys.len());
        let witnesses = crate::tlog::checkpoint::WitnessPolicy::new(
            witness_keys,
            min_witnesses,
            (global.max_head_age > 0).then_some(global.max_head_age),
        )
        .context("--witness")?;
        if min_witnesses > witnesses.witnesses().len() {
            anyhow::bail!(
                "--min-witnesses {min_witnesses} but only {} distinct --witness keys given",
                witnesses.witnesses().len()
            );
        }
        let state_path = global.state.or(file.state).unwrap_or_else(default_state_path);
        let state = State::load(&state_path).map_err(code_of_state)?;
        Ok(Session {
            client,
            key_hex,
            directory_key,
            vrf_flag: global.vrf_key.or(file.vrf_key),
            namespace_flag: global.namespace.or(file.namespace),
            state_path,
            state,
            pending: Pending::default(),
            json: global.json,
            max_head_age: (global.max_head_age > 0).then(|| Duration::from_secs(global.max_head_age)),
            max_clock_skew: Duration::from_secs(global.max_clock_skew),
            auditors,
            min_auditors,
            witnesses,
        })
    }

    fn client(&self) -> anyhow::Result<&DirectoryClient> {
        self.client
            .as_ref()
            .ok_or_else(|| anyhow!("--directory URL is required"))
    }

    fn dir(&mut self) -> &mut DirectoryState {
        self.state.directory(&self.key_hex)
    }

    /// The pinned keys: the VRF key and namespace from the flags, the state, or (first
    /// use) the server.
    async fn pinned(&mut self, may_fetch: bool) -> anyhow::Result<PinnedKeys> {
        if let Some(flag) = self.vrf_flag.clone() {
            self.dir().pin_vrf_key(&flag).map_err(code_of_state)?;
            self.pending.vrf_key = Some(flag);
        }
        if let Some(flag) = self.namespace_flag.clone() {
            self.dir().pin_namespace(&flag).map_err(code_of_state)?;
            self.pending.namespace = Some(flag);
        }
        let (vrf, namespace) = (self.dir().vrf_public_key.clone(), self.dir().namespace.clone());
        let (vrf_hex, namespace) = match (vrf, namespace) {
            (Some(v), Some(n)) => (v, n),
            (vrf, namespace) if may_fetch => {
                let info = self.client()?.info().await.map_err(code_of_http)?;
                let vrf = vrf.unwrap_or_else(|| {
                    tracing::warn!(
                        vrf_public_key = %info.vrf_public_key,
                        "no VRF key pinned: learned it from the directory (trust on first use) and pinned it in the state file"
                    );
                    info.vrf_public_key.clone()
                });
                let namespace = namespace.unwrap_or_else(|| {
                    tracing::warn!(
                        namespace = %crate::wire::printable(&info.namespace, 200),
                        "no namespace pinned: learned it from the directory (trust on first use) and pinned it in the state file"
                    );
                    info.namespace.clone()
                });
                self.dir().pin_vrf_key(&vrf).map_err(code_of_state)?;
                self.dir().pin_namespace(&namespace).map_err(code_of_state)?;
                self.pending.vrf_key = Some(vrf.clone());
                self.pending.namespace = Some(namespace.clone());
                (vrf, namespace)
            }
            _ => bail!(
                "no VRF key or namespace pinned: pass --vrf-key and --namespace, or run an online command first to learn them"
            ),
        };
        Ok(PinnedKeys {
            directory_key: self.directory_key,
            vrf_public_key: hex::decode(&vrf_hex).context("VRF key is not hex")?,
            namespace,
        })
    }

    /// Checks a verified head against the clock (age, future) and against what this
    /// client saw (rollback, fork, broken chain), and keeps it for [`Session::commit`].
    /// Nothing is written yet: a head that a later check of the step refuses (an
    /// auditor quorum, say) is never remembered.
    fn check(&mut self, head: &SignedHead) -> anyhow::Result<()> {
        let now = crate::head::unix_ms();
        let skew = u64::try_from(self.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        match self.max_head_age {
            Some(max) => {
                let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
                crate::verify::check_age(&head.head, now, max_ms, skew).map_err(code_of_response)?;
            }
            None => crate::verify::check_not_future(&head.head, now, skew).map_err(code_of_response)?,
        }
        self.dir().observe(head).map_err(code_of_state)?;
        self.pending.heads.push(head.clone());
        Ok(())
    }

    /// Writes what this step learned to the state file, under its lock, on top of
    /// what other runs wrote meanwhile (whose heads are checked against these again).
    fn commit(&mut self) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let key = self.key_hex.clone();
        let state = State::update(&self.state_path, |state| {
            let dir = state.directory(&key);
            if let Some(v) = &pending.vrf_key {
                dir.pin_vrf_key(v)?;
            }
            if let Some(n) = &pending.namespace {
                dir.pin_namespace(n)?;
            }
            // Another run may have saved a newer epoch meanwhile: an older head of
            // this run is no rollback then, but a fork or a broken link still is.
            for head in &pending.heads {
                dir.merge(head)?;
            }
            for (label, epoch) in &pending.monitored {
                let at = dir.monitored.entry(label.clone()).or_default();
                *at = (*at).max(*epoch);
            }
            Ok(())
        })
        .map_err(code_of_state)?;
        self.state = state;
        Ok(())
    }

    /// Requires `min_auditors` co-signatures on exactly this head's epoch, root and
    /// previous root. An auditor that co-signed another root for the epoch holds a
    /// second head signed by the directory: that is a fork (exit 5, evidence printed).
    async fn check_audited(&mut self, pinned: &PinnedKeys, head: &SignedHead) -> anyhow::Result<()> {
        if self.min_auditors == 0 {
            return Ok(());
        }
        let epoch = head.head.epoch;
        let mut signed = 0;
        let mut problems = Vec::new();
        for (client, key) in &self.auditors {
            let answer: Result<crate::auditor::CoSignedHead, HttpError> =
                client.get_json(&format!("/v1/heads/{epoch}")).await;
            match answer {
                // An answer for another epoch is a bad answer, not a contradiction.
                Ok(c) if c.directory_head.head.epoch != epoch => problems.push(format!(
                    "{}: answered for epoch {} when asked for {epoch}",
                    client.base(),
                    c.directory_head.head.epoch
                )),
                Ok(c) => match c.cosignature.verify_for(key, &c.directory_head) {
                    Err(e) => problems.push(format!("{}: {e}", client.base())),
                    // A head of another log (namespace, VRF key) is a bad answer: the
                    // auditor would rightly reject it as fork evidence.
                    Ok(()) if pinned.check_head(&c.directory_head).is_err() => problems.push(format!(
                        "{}: answered with a head of another directory identity",
                        client.base()
                    )),
                    Ok(()) if c.directory_head.verify(&self.directory_key).is_err() => problems.push(format!(
                        "{}: co-signed a head the directory did not sign",
                        client.base()
                    )),
                    Ok(())
                        if c.directory_head.head.root != head.head.root
                            || c.directory_head.head.previous_root != head.head.previous_root =>
                    {
                        let evidence = crate::state::ForkEvidence {
                            first: c.directory_head.clone(),
                            second: head.clone(),
                        };
                        return Err(code_of_state(StateError::Fork(Box::new(evidence))));
                    }
                    Ok(()) => signed += 1,
                },
                Err(HttpError::NotFound(_)) => {
                    problems.push(format!("{}: epoch {epoch} not audited yet", client.base()))
                }
                Err(e) => problems.push(format!("{}: {e}", client.base())),
            }
        }
        if signed < self.min_auditors {
            return Err(coded(
                9,
                anyhow!(
                    "not yet audited: epoch {epoch} is co-signed by {signed} of {} auditors, {} needed ({})",
                    self.auditors.len(),
                    self.min_auditors,
                    problems.join("; ")
                ),
            ));
        }
        Ok(())
    }

    /// A verified head accepted: checked against the clock and the state file
    /// ([`Session::check`]), co-signed by the auditors required
    /// ([`Session::check_audited`]), then written to the state file.
    async fn accept(&mut self, pinned: &PinnedKeys, head: &SignedHead) -> anyhow::Result<()> {
        self.check(head)?;
        self.check_audited(pinned, head).await?;
        self.commit()
    }

    fn print<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", text());
        }
        Ok(())
    }
}

/// A verified version of a label, as printed.
#[derive(Debug, Serialize)]
struct Version {
    version: u64,
    epoch: u64,
    value: String,
}

impl From<&akd_core::VerifyResult> for Version {
    fn from(v: &akd_core::VerifyResult) -> Self {
        Version {
            version: v.version,
            epoch: v.epoch,
            value: B64.encode(&v.value.0),
        }
    }
}

#[derive(Debug, Serialize)]
struct Verified<'a, T> {
    label: &'a str,
    /// `present` (a `lookup`), `history` or, in `--json` on failure, `refused`.
    outcome: &'static str,
    #[serde(flatten)]
    result: T,
    head: &'a SignedHead,
}

fn save_json<T: Serialize>(path: Option<&Path>, value: &T) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(value)?)
            .with_context(|| format!("saving {}", path.display()))?;
    }
    Ok(())
}

fn head_line(head: &SignedHead) -> String {
    format!(
        "head epoch={} root={} timestamp_ms={}",
        head.head.epoch,
        hex::encode(head.head.root),
        head.head.timestamp_ms
    )
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config = cli.command {
        println!(
            "akd configuration: {}",
            std::any::type_name::<crate::KtConfig>()
                .rsplit("::")
                .next()
                .unwrap_or("?")
        );
        return ExitCode::SUCCESS;
    }
    crate::run::run_command_with(run(cli), |e| e.downcast_ref::<Coded>().map_or(1, |c| c.code))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let online = !matches!(cli.command, Command::Verify { .. });
    let mut s = Session::open(cli.global, online)?;
    match cli.command {
        Command::Lookup { label, save } => {
            let json = s.json;
            let result = lookup(&mut s, &label, save.as_deref()).await;
            refused_json(json, &label, result)
        }
        Command::History {
            label,
            most_recent,
            save,
        } => {
            let json = s.json;
            let result = history(&mut s, &label, most_recent, save.as_deref()).await;
            refused_json(json, &label, result)
        }
        Command::Head => {
            let pinned = s.pinned(true).await?;
            let head = s.client()?.latest_head().await.map_err(code_of_http)?;
            pinned.check_head(&head).map_err(code_of_response)?;
            s.accept(&pinned, &head).await?;
            s.print(&head, || head_line(&head))
        }
        Command::Monitor(args) => monitor(&mut s, args).await,
        Command::Checkpoint => checkpoint(&mut s).await,
        Command::Verify { file } => {
            let pinned = s.pinned(false).await?;
            let text = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let value: serde_json::Value =
                serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            if value.get("absence").is_some() {
                let response: AbsenceResponse = serde_json::from_value(value).context("not an absence answer")?;
                pinned
                    .absence_response(&response.label, &response)
                    .map_err(code_of_response)?;
                s.print(
                    &Absent {
                        label: &response.label,
                        outcome: "absent",
                        head: &response.head,
                    },
                    || {
                        format!(
                            "verified absence of {} at epoch {}",
                            crate::wire::printable(&response.label, 300),
                            response.head.head.epoch
                        )
                    },
                )?;
                Err(crate::run::Exit(EXIT_ABSENT).into())
            } else if value.get("most_recent").is_some() {
                let response: HistoryResponse = serde_json::from_value(value).context("not a history response")?;
                // A saved file holds its own question: what it proves is printed.
                let versions = pinned
                    .history_response(&response.label, response.most_recent, &response)
                    .map_err(code_of_response)?;
                let versions: Vec<Version> = versions.iter().map(Version::from).collect();
                s.print(
                    &Verified {
                        label: &response.label,
                        outcome: "history",
                        result: serde_json::json!({ "versions": &versions }),
                        head: &response.head,
                    },
                    || {
                        format!(
                            "verified history of {}: {} versions",
                            crate::wire::printable(&response.label, 300),
                            versions.len()
                        )
                    },
                )
            } else {
                let response: LookupResponse = serde_json::from_value(value).context("not a lookup response")?;
                let found = pinned
                    .lookup_response(&response.label, &response)
                    .map_err(code_of_response)?;
                let v = Version::from(&found);
                s.print(
                    &Verified {
                        label: &response.label,
                        outcome: "present",
                        result: &v,
                        head: &response.head,
                    },
                    || {
                        format!(
                            "verified lookup of {}: version={} epoch={} value={}",
                            crate::wire::printable(&response.label, 300),
                            v.version,
                            v.epoch,
                            v.value
                        )
                    },
                )
            }
        }
        Command::Config => Ok(()),
    }
}

/// With `--json`, a failed `lookup` or `history` also says so on stdout, so a script
/// reads one of three outcomes there: `present` (or `history`), `absent`, `refused`.
fn refused_json(json: bool, label: &str, result: anyhow::Result<()>) -> anyhow::Result<()> {
    let code = result
        .as_ref()
        .err()
        .map(|e| e.downcast_ref::<Coded>().map_or(1, |c| c.code));
    // A fork (5) already printed its evidence as the one JSON document on stdout.
    if let Err(e) = &result
        && json
        && e.downcast_ref::<crate::run::Exit>().is_none()
        && code != Some(5)
    {
        let code = code.unwrap_or(1);
        println!(
            "{}",
            serde_json::json!({
                "label": label,
                "outcome": "refused",
                "exit_code": code,
                "error": crate::wire::printable(&format!("{e:#}"), 4000),
            })
        );
    }
    result
}

/// A label proven absent: checked like any head (age, rollback, fork, auditors),
/// remembered, printed, and exit code 6.
async fn absent(
    s: &mut Session,
    pinned: &PinnedKeys,
    label: &str,
    response: &AbsenceResponse,
    save: Option<&Path>,
) -> anyhow::Result<()> {
    save_json(save, response)?;
    pinned.absence_response(label, response).map_err(code_of_response)?;
    s.accept(pinned, &response.head).await?;
    s.print(
        &Absent {
            label,
            outcome: "absent",
            head: &response.head,
        },
        || format!("label={label} absent (proven)\n{}", head_line(&response.head)),
    )?;
    Err(crate::run::Exit(EXIT_ABSENT).into())
}

/// `kt lookup`: present (exit 0), absent (exit 6), or refused.
async fn lookup(s: &mut Session, label: &str, save: Option<&Path>) -> anyhow::Result<()> {
    let pinned = s.pinned(true).await?;
    let response = match s.client()?.lookup(label).await {
        Ok(response) => response,
        Err(HttpError::Absent(response)) => return absent(s, &pinned, label, &response, save).await,
        Err(HttpError::NotFound(m)) => return Err(unproven_absence(label, &m)),
        Err(e) => return Err(code_of_http(e)),
    };
    save_json(save, &response)?;
    let found = pinned.lookup_response(label, &response).map_err(code_of_response)?;
    s.accept(&pinned, &response.head).await?;
    let v = Version::from(&found);
    s.print(
        &Verified {
            label,
            outcome: "present",
            result: &v,
            head: &response.head,
        },
        || {
            format!(
                "label={label} version={} epoch={} value={}\n{}",
                v.version,
                v.epoch,
                v.value,
                head_line(&response.head)
            )
        },
    )
}

/// `kt history`: the versions (exit 0), absent (exit 6), or refused.
async fn history(s: &mut Session, label: &str, most_recent: Option<u64>, save: Option<&Path>) -> anyhow::Result<()> {
    let pinned = s.pinned(true).await?;
    let response = match s.client()?.history(label, most_recent).await {
        Ok(response) => response,
        Err(HttpError::Absent(response)) => return absent(s, &pinned, label, &response, save).await,
        Err(HttpError::NotFound(m)) => return Err(unproven_absence(label, &m)),
        Err(e) => return Err(code_of_http(e)),
    };
    save_json(save, &response)?;
    let versions = pinned
        .history_response(label, most_recent, &response)
        .map_err(code_of_response)?;
    s.accept(&pinned, &response.head).await?;
    let versions: Vec<Version> = versions.iter().map(Version::from).collect();
    s.print(
        &Verified {
            label,
            outcome: "history",
            result: serde_json::json!({ "versions": &versions }),
            head: &response.head,
        },
        || {
            let mut out: Vec<String> = versions
                .iter()
                .map(|v| format!("version={} epoch={} value={}", v.version, v.epoch, v.value))
                .collect();
            out.push(head_line(&response.head));
            out.join("\n")
        },
    )
}

/// One change a monitor reports.
#[derive(Debug, Serialize)]
struct Unexpected {
    label: String,
    expected: String,
    found: Vec<Version>,
    head: SignedHead,
}

async fn monitor(s: &mut Session, args: MonitorArgs) -> anyhow::Result<()> {
    let expected = B64.decode(&args.expect).context("--expect is not base64")?;
    let pinned = s.pinned(true).await?;
    loop {
        let head = s.client()?.latest_head().await.map_err(code_of_http)?;
        pinned.check_head(&head).map_err(code_of_response)?;
        // Remembered only once the auditors co-signed it, as by every other command.
        s.accept(&pinned, &head).await?;
        let since = s.dir().monitored.get(&args.label).copied().unwrap_or(args.since);
        if head.head.epoch > since {
            // The complete history, verified as such: every version from 1 on and no
            // later one, so a key swapped in and back out between two polls shows.
            let response = match s.client()?.history(&args.label, None).await {
                Ok(response) => response,
                // Not inserted yet: proven, nothing unexpected was published for it.
                Err(HttpError::Absent(absent)) => {
                    pinned
                        .absence_response(&args.label, &absent)
                        .map_err(code_of_response)?;
                    s.check(&absent.head)?;
                    s.check_audited(&pinned, &absent.head).await?;
                    // A label this monitor verified versions of cannot be absent now
                    // (akd never removes a node): the directory contradicts itself.
                    if let Some(seen) = s.dir().monitored.get(&args.label).copied().filter(|e| *e > 0) {
                        return Err(coded(
                            7,
                            anyhow!(
                                "{} is proven absent at epoch {}, but its history was verified through epoch {seen}: the directory contradicts itself (keep the state file and tell an auditor)",
                                args.label,
                                absent.head.head.epoch
                            ),
                        ));
                    }
                    s.commit()?;
                    if s.json {
                        println!(
                            "{}",
                            serde_json::json!({"label": args.label, "outcome": "absent", "head": absent.head})
                        );
                    } else {
                        println!(
                            "ok label={} absent (proven) at epoch {}",
                            args.label, absent.head.head.epoch
                        );
                    }
                    if args.once {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_secs(args.interval.max(1))).await;
                    continue;
                }
                Err(HttpError::NotFound(m)) => return Err(unproven_absence(&args.label, &m)),
                Err(e) => return Err(code_of_http(e)),
            };
            let versions = pinned
                .history_response(&args.label, None, &response)
                .map_err(code_of_response)?;
            s.accept(&pinned, &response.head).await?;
            let unexpected: Vec<Version> = versions
                .iter()
                .filter(|v| v.epoch > since && v.value.0 != expected)
                .map(Version::from)
                .collect();
            if !unexpected.is_empty() {
                let report = Unexpected {
                    label: args.label.clone(),
                    expected: args.expect.clone(),
                    found: unexpected,
                    head: response.head.clone(),
                };
                s.print(&report, || {
                    report
                        .found
                        .iter()
                        .map(|v| {
                            format!(
                                "UNEXPECTED label={} version={} epoch={} value={} (expected {})",
                                report.label, v.version, v.epoch, v.value, report.expected
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })?;
                return Err(coded(
                    7,
                    anyhow!(
                        "{} version(s) of {} with a value you did not expect",
                        report.found.len(),
                        args.label
                    ),
                ));
            }
            let at = response.head.head.epoch;
            s.pending.monitored.push((args.label.clone(), at));
            s.commit()?;
            if !s.json {
                println!("ok label={} verified through epoch {at}", args.label);
            }
        }
        if args.once {
            if s.json {
                println!(
                    "{}",
                    serde_json::json!({"label": args.label, "verified_through": s.dir().monitored.get(&args.label)})
                );
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(args.interval.max(1))).await;
    }
}

/// `kt checkpoint`: the latest checkpoint, verified and checked against the stored one.
async fn checkpoint(s: &mut Session) -> anyhow::Result<()> {
    use crate::tlog::{LogError, checkpoint::log_key, checkpoint::verify_checkpoint, decode_hashes};
    let pinned = s.pinned(true).await?;
    let log = log_key(&pinned.namespace, pinned.directory_key).context("the log key of this namespace")?;
    let note = s.client()?.log_checkpoint().await.map_err(code_of_http)?;
    let now = crate::head::unix_ms() / 1000;
    let verified = verify_checkpoint(note.as_bytes(), &log, &s.witnesses, now).map_err(|e| match e {
        crate::tlog::checkpoint::CheckpointError::Witnesses { .. } => coded(9, e),
        crate::tlog::checkpoint::CheckpointError::Stale { .. } => coded(8, e),
        other => coded(3, other),
    })?;
    let new = verified.checkpoint.clone();
    let old = s.dir().log_checkpoint();
    let proof = match &old {
        Some(old) if old.size < new.size => {
            let answer = s
                .client()?
                .log_consistency(old.size, new.size)
                .await
                .map_err(code_of_http)?;
            if answer.old != old.size || answer.new != new.size {
                return Err(coded(3, anyhow!("the consistency answer is for other sizes")));
            }
            decode_hashes(&answer.proof).map_err(|e| coded(3, e))?
        }
        _ => Vec::new(),
    };
    let key = s.key_hex.clone();
    let log_code = |e: LogError| match e {
        LogError::Fork {
            ref first, ref second, ..
        } => {
            println!("{first}\n{second}");
            coded(5, e)
        }
        LogError::Shrank { .. } => coded(4, e),
        other => coded(3, other),
    };
    let mut refused = None;
    let state = State::update(&s.state_path, |state| {
        if let Err(e) = state.directory(&key).accept_checkpoint(&note, &new, &proof) {
            refused = Some(e);
        }
        Ok(())
    })
    .map_err(code_of_state)?;
    if let Some(e) = refused {
        return Err(log_code(e));
    }
    s.state = state;
    // What was learned on first use (VRF key, namespace) is pinned now.
    s.commit()?;
    #[derive(Serialize)]
    struct Printed<'a> {
        origin: &'a str,
        size: u64,
        root: String,
        cosigned: &'a [(String, u64)],
        note: &'a str,
    }
    let printed = Printed {
        origin: &new.origin,
        size: new.size,
        root: hex::encode(new.root),
        cosigned: &verified.cosigned,
        note: &note,
    };
    s.print(&printed, || {
        format!(
            "checkpoint of {}: size {} (epochs 0 to {}), root {}, co-signed by {} witness(es)\n{note}",
            new.origin,
            new.size,
            new.size.saturating_sub(1),
            hex::encode(new.root),
            verified.cosigned.len()
        )
    })
}
