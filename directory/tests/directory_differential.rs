//! The directory on each of our backends (RocksDB, and MySQL on a real MariaDB)
//! against akd's in-memory one: identical roots at every epoch, and proofs from our
//! storage that verify. Then recovery: reopen and carry on.

use akd::storage::StorageManager;
use akd::storage::memory::AsyncInMemoryDatabase;
use akd::{AkdLabel, AzksParallelismConfig, Directory, HistoryParams};
use kt_directory::storage::Cf;
use kt_directory::vrf::VrfSecret;
use kt_directory::{KtConfig, KtDirectory, open_directory, sample};
use support::TestStore;

mod support;

on_both_backends!(
    same_roots_as_in_memory_and_proofs_verify,
    reopen_keeps_epoch_root_and_proofs,
    corrupt_record_is_a_typed_error_not_a_panic,
    commit_hook_is_atomic_with_the_epoch,
    our_publisher_matches_akds_publish,
);

type MemDirectory = Directory<KtConfig, AsyncInMemoryDatabase, VrfSecret>;

const SEED: u64 = 42;
const POPULATION: u64 = 500;
const PER_EPOCH: usize = 200;

fn vrf() -> VrfSecret {
    VrfSecret::from_bytes([0x5a; 32])
}

async fn dir_on(store: &TestStore) -> KtDirectory {
    open_directory(store.open().await, vrf()).await.expect("open directory")
}

async fn mem_dir() -> MemDirectory {
    Directory::new(
        StorageManager::new_no_cache(AsyncInMemoryDatabase::new()),
        vrf(),
        AzksParallelismConfig::default(),
    )
    .await
    .expect("in-memory directory")
}

/// Verifies a lookup and both kinds of history proof for `label` from `dir`.
async fn check_proofs(dir: &KtDirectory, label: &AkdLabel) {
    let vrf_pk = dir.get_public_key().await.expect("vrf pk");
    let (proof, head) = dir.lookup(label.clone()).await.expect("lookup");
    let found =
        kt_client::verify::lookup(vrf_pk.as_bytes(), head.1, head.0, label.clone(), proof).expect("lookup verifies");
    for params in [HistoryParams::Complete, HistoryParams::MostRecent(1)] {
        let (proof, head) = dir.key_history(label, params).await.expect("history");
        let versions = kt_client::verify::history(vrf_pk.as_bytes(), head.1, head.0, label.clone(), proof, params)
            .expect("history verifies");
        assert_eq!(versions.first().map(|v| v.version), Some(found.version));
        assert_eq!(versions.first().map(|v| v.value.clone()), Some(found.value.clone()));
    }
}

async fn same_roots_as_in_memory_and_proofs_verify(store: TestStore) {
    let rocks = dir_on(&store).await;
    let mem = mem_dir().await;
    assert_eq!(
        rocks.get_epoch_hash().await.expect("r0"),
        mem.get_epoch_hash().await.expect("m0"),
        "epoch 0"
    );

    let mut prev_root = rocks.get_epoch_hash().await.expect("root").1;
    for epoch in 1..=6u64 {
        let updates = sample::updates(SEED, epoch, PER_EPOCH, POPULATION);
        let r = rocks.publish(updates.clone()).await.expect("rocks publish");
        let m = mem.publish(updates.clone()).await.expect("mem publish");
        assert_eq!(r.0, epoch);
        assert_eq!(r, m, "roots differ at epoch {epoch}");
        // The append-only proof our storage yields verifies with akd's auditor.
        let audit = rocks.audit(epoch - 1, epoch).await.expect("audit proof");
        akd::auditor::audit_verify::<KtConfig>(vec![prev_root, r.1], audit)
            .await
            .expect("append-only proof verifies");
        prev_root = r.1;
        for (label, _) in updates.iter().take(3) {
            check_proofs(&rocks, label).await;
        }
    }

    // A batch that changes nothing: akd skips it on both backends alike.
    let same = sample::updates(SEED, 6, PER_EPOCH, POPULATION);
    let r = rocks.publish(same.clone()).await.expect("rocks no-op publish");
    let m = mem.publish(same).await.expect("mem no-op publish");
    assert_eq!(r, m);
    assert_eq!(r.0, 6, "an all-unchanged batch must not advance the epoch");

    // Labels updated in several epochs have long histories; check those.
    let mut versions = std::collections::HashMap::<AkdLabel, u32>::new();
    for epoch in 1..=6u64 {
        for (label, _) in sample::updates(SEED, epoch, PER_EPOCH, POPULATION) {
            *versions.entry(label).or_default() += 1;
        }
    }
    let multi: Vec<_> = versions
        .into_iter()
        .filter(|(_, n)| *n >= 3)
        .map(|(l, _)| l)
        .take(5)
        .collect();
    assert!(
        !multi.is_empty(),
        "sample traffic should rotate some keys several times"
    );
    for label in &multi {
        check_proofs(&rocks, label).await;
    }
}

async fn reopen_keeps_epoch_root_and_proofs(store: TestStore) {
    let mem = mem_dir().await;
    let head = {
        let rocks = dir_on(&store).await;
        for epoch in 1..=3u64 {
            let updates = sample::updates(SEED, epoch, PER_EPOCH, POPULATION);
            rocks.publish(updates.clone()).await.expect("publish");
            mem.publish(updates).await.expect("mem publish");
        }
        rocks.get_epoch_hash().await.expect("head")
        // `rocks` and its store are dropped here.
    };
    let reopened = dir_on(&store).await;
    assert_eq!(reopened.get_epoch_hash().await.expect("head after reopen"), head);
    let (label, _) = sample::updates(SEED, 3, PER_EPOCH, POPULATION).remove(0);
    check_proofs(&reopened, &label).await;
    // And it carries on exactly where the reference does.
    let updates = sample::updates(SEED, 4, PER_EPOCH, POPULATION);
    let r = reopened.publish(updates.clone()).await.expect("publish after reopen");
    assert_eq!(r, mem.publish(updates).await.expect("mem publish"));
}

async fn corrupt_record_is_a_typed_error_not_a_panic(store: TestStore) {
    {
        let rocks = dir_on(&store).await;
        rocks
            .publish(sample::updates(SEED, 1, 20, POPULATION))
            .await
            .expect("publish");
    }
    // Overwrite the root node with garbage, behind the storage layer's back.
    let root_key = kt_directory::storage::codec::node_key(&akd::NodeLabel::root());
    store.plant_node(&root_key, &[1u8, 0xff, 0x00]).await;
    let dir = dir_on(&store).await;
    let err = dir.get_epoch_hash().await.expect_err("root node is corrupt");
    let msg = err.to_string();
    assert!(msg.contains("corrupt record in column family tree_nodes"), "{msg}");
    assert!(msg.contains(&hex::encode([0u8; 36])), "names the key: {msg}");
}

/// The commit hook's writes land in akd's commit batch; a hook that refuses leaves the
/// disk exactly as before the publish.
async fn commit_hook_is_atomic_with_the_epoch(store: TestStore) {
    use kt_directory::storage::Write;
    let storage = store.open().await;
    let dir = open_directory(storage.clone(), vrf()).await.expect("directory");

    // A hook that sees the records and adds a write: both land, with the epoch.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&seen);
    storage.stage_commit_hook(Box::new(move |records| {
        counter.store(records.len(), std::sync::atomic::Ordering::SeqCst);
        Ok(vec![Write::Put(
            Cf::Heads,
            1u64.to_be_bytes().to_vec(),
            b"head 1".to_vec(),
        )])
    }));
    dir.publish(sample::updates(SEED, 1, 20, POPULATION))
        .await
        .expect("epoch 1");
    assert!(!storage.clear_commit_hook(), "the commit consumed the hook");
    assert!(
        seen.load(std::sync::atomic::Ordering::SeqCst) > 20,
        "hook saw akd's records"
    );
    let root1 = dir.get_epoch_hash().await.expect("root 1");

    // A hook that refuses: the publish fails and nothing of epoch 2 reaches the disk.
    storage.stage_commit_hook(Box::new(|_| {
        Err(kt_directory::storage::StorageError::CommitHook(
            "refused by the test".into(),
        ))
    }));
    let err = dir
        .publish(sample::updates(SEED, 2, 20, POPULATION))
        .await
        .expect_err("refused commit");
    assert!(err.to_string().contains("refused by the test"), "{err}");
    drop(dir);
    drop(storage);

    let reopened = store.open().await;
    assert_eq!(
        reopened
            .get_raw(Cf::Heads, 1u64.to_be_bytes().to_vec())
            .await
            .expect("get"),
        Some(b"head 1".to_vec())
    );
    assert_eq!(
        reopened
            .get_raw(Cf::Heads, 2u64.to_be_bytes().to_vec())
            .await
            .expect("get"),
        None
    );
    let dir = open_directory(reopened, vrf()).await.expect("reopen directory");
    assert_eq!(
        dir.get_epoch_hash().await.expect("root"),
        root1,
        "epoch 2 left no trace"
    );
    let mem = mem_dir().await;
    mem.publish(sample::updates(SEED, 1, 20, POPULATION))
        .await
        .expect("mem 1");
    assert_eq!(mem.get_epoch_hash().await.expect("mem root"), root1);
}

/// Our epoch pipeline (prepare memo, epoch store, akd's insertion on its public `Azks`
/// API, our commit, the background audit blob) against akd's own
/// `Directory::publish` on its in-memory store, over many random epochs: new labels,
/// rotations, values that are already current, several updates to one label in a
/// batch, epochs prepared ahead and epochs computed inline. After every epoch the
/// roots, every tree-node record, every value state and the `Azks` row are identical,
/// and the audit blob is byte for byte what akd's `Directory::audit` gives, and akd's
/// auditor accepts it.
async fn our_publisher_matches_akds_publish(store: TestStore) {
    use akd::storage::StorageUtil;
    use akd::storage::types::{DbRecord, ValueStateRetrievalFlag};
    use akd::storage::{Database, Storable};
    use akd::tree_node::TreeNodeWithPreviousValue;
    use kt_directory::datadir::{FORMAT_VERSION, Keys, Manifest};
    use kt_directory::metrics::Metrics;
    use kt_directory::publisher::prepare::PrepareConfig;
    use kt_directory::publisher::{Publisher, PublisherConfig};
    use rand::{Rng, SeedableRng};

    let (backend, db_path) = store.backend();
    let keys = Keys {
        manifest: Manifest {
            format: FORMAT_VERSION,
            namespace: "differential.kt.invalid".into(),
        },
        signing: ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        vrf: vrf(),
        token_hash: blake3::hash(b"token"),
    };
    let config = PublisherConfig {
        backend,
        db_path,
        storage: kt_directory::storage::StorageConfig::default(),
        max_per_epoch: 10_000,
        akd_cache: kt_directory::AkdCache::publisher(),
        prepare: PrepareConfig::for_epochs_of(10_000),
    };
    let metrics = Metrics::new().expect("metrics");
    let (mut publisher, shared) = Publisher::open(config, keys, metrics.clone())
        .await
        .expect("open publisher");
    let intake = shared.intake.clone().expect("the publisher takes updates");
    let mem_db = AsyncInMemoryDatabase::new();
    let mem = MemDirectory::new(
        StorageManager::new_no_cache(mem_db.clone()),
        vrf(),
        AzksParallelismConfig::default(),
    )
    .await
    .expect("in-memory directory");
    let ours = shared.storage.clone();

    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let mut known: Vec<(AkdLabel, Vec<u8>)> = Vec::new();
    let mut next_label = 0u64;
    let mut epoch = 0u64;
    let mut prev_root = mem.get_epoch_hash().await.expect("root 0").1;
    for round in 0..14u64 {
        // This round's updates: new labels, rotations, re-publishing the current
        // value, and a label updated twice (the later one wins).
        let mut updates: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let fresh = if round == 9 { 0 } else { rng.gen_range(1..40) };
        for _ in 0..fresh {
            updates.push((
                format!("user-{next_label}@example.org").into_bytes(),
                vec![rng.r#gen::<u8>(); 8],
            ));
            next_label += 1;
        }
        if !known.is_empty() {
            for _ in 0..rng.gen_range(0..30) {
                let (label, value) = &known[rng.gen_range(0..known.len())];
                let same = round == 9 || rng.gen_bool(0.2);
                let value = if same {
                    value.clone()
                } else {
                    rng.r#gen::<[u8; 12]>().to_vec()
                };
                updates.push((label.0.clone(), value));
            }
        }
        if updates.len() > 2 && round != 9 {
            let (label, _) = updates[0].clone();
            updates.push((label, b"superseding".to_vec()));
        }
        // The winners, as akd is asked to publish them (last one per label).
        let mut winners: Vec<(AkdLabel, akd::AkdValue)> = Vec::new();
        for (label, value) in &updates {
            winners.retain(|(l, _)| l.0 != *label);
            winners.push((AkdLabel(label.clone()), akd::AkdValue(value.clone())));
        }
        intake.accept(updates).await.expect("accept");
        if round % 3 != 1 {
            // Most epochs find their labels prepared; every third computes them.
            let waited = std::time::Instant::now();
            while intake.prepare.backlog() > 0 {
                assert!(waited.elapsed().as_secs() < 60, "the prepare stage never caught up");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            if round % 3 == 0 {
                // Long enough for staging to load the epoch's nodes ahead (it looks
                // every 500 ms): those epochs start from a staged store.
                tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            }
        }
        let answer = publisher.publish().await.expect("our publish");
        let reference = mem.publish(winners.clone()).await.expect("akd's publish");
        assert_eq!(answer.epoch, reference.0, "round {round}: epoch");
        assert_eq!(answer.head.head.root, reference.1, "round {round}: root");
        if round == 9 {
            assert!(!answer.published, "an all-unchanged batch publishes no epoch");
            assert_eq!(reference.0, epoch);
        } else {
            assert_eq!(reference.0, epoch + 1);
        }
        for (label, value) in &winners {
            match known.iter_mut().find(|(l, _)| l == label) {
                Some(entry) => entry.1 = value.0.clone(),
                None => known.push((label.clone(), value.0.clone())),
            }
        }

        // Every record akd holds, we hold, and nothing more.
        let want = mem_db
            .batch_get_type_direct::<TreeNodeWithPreviousValue>()
            .await
            .expect("akd's nodes");
        let ids: Vec<_> = want
            .iter()
            .map(|r| match r {
                DbRecord::TreeNode(n) => n.get_id(),
                other => panic!("not a node: {other:?}"),
            })
            .collect();
        let mut got = ours
            .batch_get::<TreeNodeWithPreviousValue>(&ids)
            .await
            .expect("our nodes");
        let key = |r: &DbRecord| match r {
            DbRecord::TreeNode(n) => codec_key(n),
            _ => Vec::new(),
        };
        let mut want = want;
        want.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got, want, "round {round}: tree nodes");
        assert_eq!(
            ours.count(Cf::TreeNodes).await.expect("count") as usize,
            want.len(),
            "round {round}: no extra tree nodes"
        );
        let azks = mem_db.batch_get_type_direct::<akd::Azks>().await.expect("akd's azks");
        assert_eq!(
            azks,
            vec![DbRecord::Azks(ours.stored_azks().await.expect("azks").expect("stored"))],
            "round {round}: Azks row"
        );
        for (label, _) in &known {
            let a = mem_db.get_user_data(label).await.expect("akd's states");
            let b = ours.get_user_data(label).await.expect("our states");
            let (mut a, mut b) = (a.states, b.states);
            a.sort_by_key(|s| s.epoch);
            b.sort_by_key(|s| s.epoch);
            assert_eq!(a, b, "round {round}: value states of {label:?}");
            let latest = ours
                .get_user_state(label, ValueStateRetrievalFlag::MaxEpoch)
                .await
                .expect("latest state");
            assert_eq!(Some(&latest), a.last());
        }

        if answer.published {
            epoch = answer.epoch;
            // The blob is built in the background: wait for it, then hold it to akd's.
            let waited = std::time::Instant::now();
            while shared.latest_blob_epoch.load(std::sync::atomic::Ordering::SeqCst) < epoch {
                assert!(
                    waited.elapsed().as_secs() < 60,
                    "the audit blob of epoch {epoch} never came"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let blob = ours
                .get_raw(Cf::AuditBlobs, epoch.to_be_bytes().to_vec())
                .await
                .expect("read blob")
                .expect("blob stored");
            let proof = mem.audit(epoch - 1, epoch).await.expect("akd's audit");
            let akds = akd::local_auditing::AuditBlob::new(prev_root, reference.1, epoch, &proof.proofs[0])
                .expect("akd's blob");
            assert_eq!(blob, akds.data, "round {round}: audit blob");
            akd::auditor::audit_verify::<KtConfig>(vec![prev_root, reference.1], proof)
                .await
                .expect("akd's auditor accepts the proof");
            prev_root = reference.1;
        }
    }
    assert!(epoch >= 12, "the rounds published epochs");
    assert!(metrics.staged_nodes.get() > 0, "some epochs started from staged nodes");
    assert_eq!(
        metrics.epoch_store_fallback_reads.get(),
        0,
        "the preload loads what akd reads"
    );
}

/// The sort key of a tree-node record: our storage key.
fn codec_key(node: &akd::tree_node::TreeNodeWithPreviousValue) -> Vec<u8> {
    kt_directory::storage::codec::node_key(&node.label).to_vec()
}
