//! SIGKILL the real `kt-directory` binary in the middle of publishing, reopen its
//! RocksDB, and check it is at the previous epoch or the new one, never a mix: the root
//! it reports equals an in-memory replay of exactly that many epochs, and proofs verify.

mod common;

use akd::storage::StorageManager;
use akd::storage::memory::AsyncInMemoryDatabase;
use akd::{AzksParallelismConfig, Directory};
use kt_directory::storage::StorageConfig;
use kt_directory::vrf::VrfSecret;
use kt_directory::{DataDir, KtConfig, open_rocks_directory, sample};
use rand::{Rng, SeedableRng};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEED: u64 = 9;
const PER_EPOCH: usize = 5000;
const POPULATION: u64 = 20_000;
const ROUNDS: usize = 5;
/// No line from the child for this long fails the test instead of hanging it.
const LINE_TIMEOUT: Duration = Duration::from_secs(180);

/// One line of the demo's stdout.
#[derive(Debug)]
enum Event {
    Publishing(u64),
    Published { epoch: u64, ms: u64 },
    Other,
}

fn parse(line: &str) -> Event {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok())
    };
    if line.starts_with("publishing ") {
        field("epoch").map_or(Event::Other, Event::Publishing)
    } else if line.starts_with("published ") {
        match (field("epoch"), field("ms")) {
            (Some(epoch), Some(ms)) => Event::Published { epoch, ms },
            _ => Event::Other,
        }
    } else {
        Event::Other
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_publish_reopens_at_a_whole_epoch() {
    let rng_seed: u64 = std::env::var("KT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed: KT_CRASH_SEED={rng_seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed);

    let tmp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(tmp.path().join("data"));
    let mut reference: Option<Directory<KtConfig, AsyncInMemoryDatabase, VrfSecret>> = None;
    let mut replayed = 0u64;

    for round in 0..ROUNDS {
        let mut child = Command::new(common::DIRECTORY)
            .args(["publish-sample", "--epochs", "1000", "--seed", &SEED.to_string()])
            .args([
                "--updates-per-epoch",
                &PER_EPOCH.to_string(),
                "--population",
                &POPULATION.to_string(),
            ])
            .args(["--block-cache-mib", "64", "--data-dir"])
            .arg(data.root())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kt-directory");
        let rx = common::lines(child.stdout.take().expect("stdout"));

        // Let at least one epoch complete (to learn how long a publish takes), then kill
        // at a random point inside the next publish.
        let mut last_published = None;
        let mut publish_ms = 0;
        let mut completed_this_round = 0;
        let in_flight = loop {
            let line = rx.recv_timeout(LINE_TIMEOUT).expect("kt-directory went quiet");
            match parse(&line) {
                Event::Published { epoch, ms } => {
                    last_published = Some(epoch);
                    publish_ms = ms;
                    completed_this_round += 1;
                }
                Event::Publishing(epoch) if completed_this_round >= 1 => break epoch,
                _ => {}
            }
        };
        let delay = Duration::from_millis(rng.gen_range(0..publish_ms.max(1)));
        std::thread::sleep(delay);
        let killed_at = Instant::now();
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "child should have died of SIGKILL");
        let last_published = last_published.expect("an epoch completed");
        eprintln!(
            "round {round}: killed {delay:?} into publishing epoch {in_flight} (last completed {last_published}, ~{publish_ms} ms each)"
        );

        // Reopen what the dead process left.
        let vrf = VrfSecret::load(&data.vrf_key()).expect("vrf key");
        let dir = open_rocks_directory(data.db(), StorageConfig::default(), vrf.clone())
            .await
            .expect("reopen after SIGKILL");
        let akd::EpochHash(epoch, root) = dir.get_epoch_hash().await.expect("head after SIGKILL");
        assert!(
            epoch == last_published || epoch == in_flight,
            "reopened at epoch {epoch}, expected {last_published} or {in_flight}"
        );

        // Replay exactly `epoch` epochs in memory: the root must match.
        let reference = match &mut reference {
            Some(r) => r,
            None => reference.insert(
                Directory::new(
                    StorageManager::new_no_cache(AsyncInMemoryDatabase::new()),
                    vrf.clone(),
                    AzksParallelismConfig::default(),
                )
                .await
                .expect("reference directory"),
            ),
        };
        while replayed < epoch {
            replayed += 1;
            reference
                .publish(sample::updates(SEED, replayed, PER_EPOCH, POPULATION))
                .await
                .expect("reference publish");
        }
        assert_eq!(
            reference.get_epoch_hash().await.expect("reference head"),
            akd::EpochHash(epoch, root)
        );

        // And what it proves verifies.
        let (label, _) = sample::updates(SEED, epoch, PER_EPOCH, POPULATION).remove(0);
        let vrf_pk = dir.get_public_key().await.expect("vrf pk");
        let (proof, head) = dir.lookup(label.clone()).await.expect("lookup");
        assert_eq!((head.0, head.1), (epoch, root));
        kt_client::verify::lookup(vrf_pk.as_bytes(), root, epoch, label, proof).expect("lookup verifies");
        eprintln!(
            "round {round}: reopened at epoch {epoch}, root matches replay ({:?} after kill)",
            killed_at.elapsed()
        );
    }
}
