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
