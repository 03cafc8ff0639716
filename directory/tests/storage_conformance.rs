//! Our backends (RocksDB; MySQL on a real MariaDB) against akd's own conformance
//! suite, and against akd's in-memory backend for every per-user query. Then what is
//! particular to each: RocksDB's length filter and tiers, MySQL's parts, schema and
//! start-up checks, and read replicas of both learning what the writer added.

use akd::storage::memory::AsyncInMemoryDatabase;
use akd::storage::types::{DbRecord, ValueState, ValueStateKey, ValueStateRetrievalFlag};
use akd::storage::{Database, DbSetState};
use akd::{AkdLabel, NodeLabel};
use kt_directory::storage::{Cf, SCHEMA_VERSION, StorageConfig, StorageError, Store};
use proptest::prelude::*;

mod support;

async fn open(dir: &tempfile::TempDir) -> Store {
    Store::open_rocks(dir.path().join("db"), &StorageConfig::default())
        .await
        .expect("open rocksdb")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_akd_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    akd::storage::tests::run_test_cases_for_storage_impl(open(&dir).await).await;
}

fn state(user: &str, epoch: u64, version: u64) -> ValueState {
    DbRecord::build_user_state(
        user.as_bytes().to_vec(),
        format!("{user}-v{version}").into_bytes(),
        version,
        256,
        [version as u8; 32],
        epoch,
    )
}

/// Every flag worth asking about: each stored epoch, its neighbours and the extremes.
fn flags(epochs: &[u64], max_version: u64) -> Vec<ValueStateRetrievalFlag> {
    let mut out = vec![ValueStateRetrievalFlag::MaxEpoch, ValueStateRetrievalFlag::MinEpoch];
    for e in probe_epochs(epochs) {
        out.push(ValueStateRetrievalFlag::LeqEpoch(e));
        out.push(ValueStateRetrievalFlag::SpecificEpoch(e));
    }
    for v in 0..=max_version + 1 {
        out.push(ValueStateRetrievalFlag::SpecificVersion(v));
    }
    out
}

fn probe_epochs(epochs: &[u64]) -> std::collections::BTreeSet<u64> {
    let mut out: std::collections::BTreeSet<u64> = [0, 1, u64::MAX].into();
    for &e in epochs {
        out.extend([e.saturating_sub(1), e, e.saturating_add(1)]);
    }
    out
}

/// Runs the same writes against both backends and compares every read.
async fn compare(users: &[(String, Vec<u64>)]) {
    compare_on(&support::TestStore::rocks(), users).await;
}

async fn compare_on(store: &support::TestStore, users: &[(String, Vec<u64>)]) {
    let rocks = store.open().await;
    let mem = AsyncInMemoryDatabase::new();
    let mut records = Vec::new();
    for (user, epochs) in users {
        for (i, &e) in epochs.iter().enumerate() {
            records.push(DbRecord::ValueState(state(user, e, i as u64 + 1)));
        }
    }
    rocks
        .batch_set(records.clone(), DbSetState::TransactionCommit)
        .await
        .expect("rocks write");
    mem.batch_set(records, DbSetState::TransactionCommit)
        .await
        .expect("mem write");

    let all_epochs: Vec<u64> = users.iter().flat_map(|(_, e)| e.iter().copied()).collect();
    let max_version = users.iter().map(|(_, e)| e.len() as u64).max().unwrap_or(0);
    // Users that exist, plus ones that do not (including prefixes and extensions of real names).
    let mut probes: Vec<AkdLabel> = users.iter().map(|(u, _)| AkdLabel::from(u.as_str())).collect();
    for (u, _) in users {
        probes.push(AkdLabel::from(format!("{u}x").as_str()));
        probes.push(AkdLabel(u.as_bytes()[..u.len().saturating_sub(1)].to_vec()));
    }
    probes.push(AkdLabel(vec![]));
    for flag in flags(&all_epochs, max_version) {
        for probe in &probes {
            let r = rocks.get_user_state(probe, flag).await;
            let m = mem.get_user_state(probe, flag).await;
            match (&r, &m) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{flag:?} {probe:?}"),
                (Err(akd::errors::StorageError::NotFound(_)), Err(akd::errors::StorageError::NotFound(_))) => {}
                _ => panic!("{flag:?} {probe:?}: rocks {r:?} vs memory {m:?}"),
            }
        }
        let r = rocks
            .get_user_state_versions(&probes, flag)
            .await
            .expect("rocks versions");
        let m = mem.get_user_state_versions(&probes, flag).await.expect("mem versions");
        assert_eq!(r, m, "get_user_state_versions {flag:?}");
    }
    for probe in &probes {
        let r = rocks.get_user_data(probe).await.map(|d| d.states);
        let m = mem.get_user_data(probe).await.map(|d| d.states);
        match (&r, &m) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(akd::errors::StorageError::NotFound(_)), Err(akd::errors::StorageError::NotFound(_))) => {}
            _ => panic!("get_user_data {probe:?}: rocks {r:?} vs memory {m:?}"),
        }
    }
    // Point reads and batch reads by (user, epoch), present and absent.
    let mut keys = Vec::new();
    for (u, _) in users {
        for e in probe_epochs(&all_epochs) {
            keys.push(ValueStateKey(u.as_bytes().to_vec(), e));
        }
    }
    for key in &keys {
        let r = rocks.get::<ValueState>(key).await;
        let m = mem.get::<ValueState>(key).await;
        assert_eq!(r.is_ok(), m.is_ok(), "get {key:?}");
        if let (Ok(a), Ok(b)) = (r, m) {
            assert_eq!(a, b);
        }
    }
    let mut r = rocks.batch_get::<ValueState>(&keys).await.expect("rocks batch");
    let mut m = mem.batch_get::<ValueState>(&keys).await.expect("mem batch");
    r.sort();
    m.sort();
    assert_eq!(r, m, "batch_get");
}

fn arb_users() -> impl Strategy<Value = Vec<(String, Vec<u64>)>> {
    proptest::collection::vec(("[a-c]{1,3}", proptest::collection::btree_set(1u64..40, 1..6)), 1..6).prop_map(|users| {
        let mut seen = std::collections::HashSet::new();
        users
            .into_iter()
            .filter(|(u, _)| seen.insert(u.clone()))
            .map(|(u, epochs)| (u, epochs.into_iter().collect()))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn per_user_queries_match_in_memory_backend(users in arb_users()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
        rt.block_on(compare(&users));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_with_high_bytes_do_not_leak_across_users() {
    // Epoch 0x6300..01 starts with 'c': user "ab" at it must not be read as user "abc".
    compare(&[
        ("ab".into(), vec![1, 0x6300_0000_0000_0001]),
        ("abc".into(), vec![2, 5]),
        ("a".into(), vec![u64::MAX]),
    ])
    .await;
}

on_both_backends!(tree_node_batch_get_skips_absent_keys);

async fn tree_node_batch_get_skips_absent_keys(store: support::TestStore) {
    let rocks = store.open().await;
    let present = NodeLabel::new([7u8; 32], 256);
    let node = DbRecord::build_tree_node_with_previous_value(
        present.label_val,
        256,
        3,
        1,
        [0u8; 32],
        0,
        1,
        None,
        None,
        [9u8; 32],
        Some(2),
        Some(1),
        Some([0u8; 32]),
        Some(0),
        Some(1),
        None,
        None,
        Some([8u8; 32]),
    );
    rocks.set(DbRecord::TreeNode(node.clone())).await.expect("set");
    let keys: Vec<_> = (0u8..50)
        .map(|i| akd::tree_node::NodeKey(NodeLabel::new([i; 32], 256)))
        .collect();
    let got = rocks
        .batch_get::<akd::tree_node::TreeNodeWithPreviousValue>(&keys)
        .await
        .expect("batch_get");
    assert_eq!(got, vec![DbRecord::TreeNode(node)]);
    let absent = rocks
        .get::<akd::tree_node::TreeNodeWithPreviousValue>(&akd::tree_node::NodeKey(NodeLabel::new([1u8; 32], 256)))
        .await;
    assert!(
        matches!(absent, Err(akd::errors::StorageError::NotFound(_))),
        "{absent:?}"
    );
}

/// A tree node whose label is `len` bits of `fill`.
fn node_of_len(fill: u8, len: u32) -> DbRecord {
    node_with(NodeLabel::new([fill; 32], len), fill)
}

/// A tree node at `label` whose hash is all `hash` bytes.
fn node_with(label: NodeLabel, hash: u8) -> DbRecord {
    DbRecord::TreeNode(DbRecord::build_tree_node_with_previous_value(
        label.label_val,
        label.label_len,
        3,
        1,
        [0u8; 32],
        0,
        1,
        None,
        None,
        [hash; 32],
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ))
}

/// What `batch_get` and `get` find for `fill`'s label at every length 0..=256.
async fn lengths_found(rocks: &Store, fill: u8) -> Vec<u32> {
    let keys: Vec<_> = (0..=256u32)
        .map(|len| akd::tree_node::NodeKey(NodeLabel::new([fill; 32], len)))
        .collect();
    let mut batch: Vec<u32> = rocks
        .batch_get::<akd::tree_node::TreeNodeWithPreviousValue>(&keys)
        .await
        .expect("batch_get")
        .into_iter()
        .map(|r| match r {
            DbRecord::TreeNode(n) => n.label.label_len,
            other => panic!("not a node: {other:?}"),
        })
        .collect();
    batch.sort_unstable();
    let mut single = Vec::new();
    for key in &keys {
        if rocks
            .get::<akd::tree_node::TreeNodeWithPreviousValue>(key)
            .await
            .is_ok()
        {
            single.push(key.0.label_len);
        }
    }
    assert_eq!(batch, single, "batch_get and get disagree");
    batch
}

/// The storage answers probes at label lengths no node has without asking RocksDB
/// (`NodeLengths`): it must never hide a stored node, before or after a reopen, for
/// nodes written through akd's interface or planted behind its back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_length_filter_never_hides_a_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let written = [0u32, 1, 17, 63, 64, 65, 200, 256];
    {
        let rocks = open(&dir).await;
        assert!(lengths_found(&rocks, 5).await.is_empty());
        let records = written.iter().map(|&len| node_of_len(5, len)).collect();
        rocks.batch_set(records, DbSetState::General).await.expect("batch_set");
        assert_eq!(lengths_found(&rocks, 5).await, written);
        // Other labels at the stored lengths stay absent: the filter only skips lengths.
        assert!(lengths_found(&rocks, 6).await.is_empty());
    }
    support::put_raw(
        &path,
        Cf::TreeNodes,
        &kt_directory::storage::codec::node_key(&NodeLabel::new([5; 32], 99)),
        &kt_directory::storage::codec::encode_tree_node(match &node_of_len(5, 99) {
            DbRecord::TreeNode(n) => n,
            _ => unreachable!(),
        }),
    );
    let rocks = open(&dir).await;
    let mut expected = written.to_vec();
    expected.push(99);
    expected.sort_unstable();
    assert_eq!(
        lengths_found(&rocks, 5).await,
        expected,
        "after a reopen, with a planted node"
    );
    rocks.set(node_of_len(5, 128)).await.expect("set");
    expected.push(128);
    expected.sort_unstable();
    assert_eq!(
        lengths_found(&rocks, 5).await,
        expected,
        "a new length after the reopen"
    );
}

/// Reads try memory first (memtables, block cache) and go to disk for the rest: after
/// a flush and a reopen nothing is in memory, and every read must still find it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_cold_database_fall_back_to_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lengths = [0u32, 8, 256];
    {
        let rocks = open(&dir).await;
        let mut records: Vec<DbRecord> = lengths.iter().map(|&len| node_of_len(3, len)).collect();
        records.extend((1..=3).map(|e| DbRecord::ValueState(state("carol", e * 10, e))));
        // Enough other records that the files are not read whole when they are opened.
        records.extend((0..20_000u32).map(|i| DbRecord::ValueState(state(&format!("filler-{i}"), 1, 1))));
        rocks.batch_set(records, DbSetState::General).await.expect("batch_set");
        rocks.flush().await.expect("flush");
    }
    let rocks = open(&dir).await;
    let keys: Vec<ValueStateKey> = (1..=3).map(|e| ValueStateKey(b"carol".to_vec(), e * 10)).collect();
    let states = rocks.batch_get::<ValueState>(&keys).await.expect("batch_get");
    assert_eq!(states.len(), 3);
    let rocks = open_again(rocks, &dir).await;
    let got = rocks
        .get_user_state(&AkdLabel::from("carol"), ValueStateRetrievalFlag::LeqEpoch(25))
        .await
        .expect("state");
    assert_eq!((got.epoch, got.version), (20, 2));
    let rocks = open_again(rocks, &dir).await;
    let filler = rocks
        .get::<ValueState>(&ValueStateKey(b"filler-777".to_vec(), 1))
        .await
        .expect("get");
    assert!(matches!(filler, DbRecord::ValueState(s) if s.version == 1));
    assert_eq!(lengths_found(&rocks, 3).await, lengths);
}

/// Large batched reads from disk are split across threads (`read_threads`): split or
/// not, a cold database must answer every key exactly once. 7 threads over batches that
/// do not divide evenly, against 1 thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_disk_reads_find_what_one_thread_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let nodes = 5_003u32;
    let users = 3_001u32;
    {
        let rocks = open(&dir).await;
        let mut records: Vec<DbRecord> = (0..nodes).map(node_at).collect();
        for u in 0..users {
            // Users with an even number have a second version at epoch 7.
            records.push(DbRecord::ValueState(state(&format!("user-{u}"), 3, 1)));
            if u % 2 == 0 {
                records.push(DbRecord::ValueState(state(&format!("user-{u}"), 7, 2)));
            }
        }
        rocks.batch_set(records, DbSetState::General).await.expect("batch_set");
        rocks.flush().await.expect("flush");
    }
    // Present nodes interleaved with absent ones (another length-256 label each).
    let keys: Vec<_> = (0..nodes)
        .flat_map(|i| [node_key_at(i), node_key_at(i + 1_000_000)])
        .collect();
    let asked: Vec<AkdLabel> = (0..users + 500)
        .map(|u| AkdLabel(format!("user-{u}").into_bytes()))
        .collect();
    let mut answers = Vec::new();
    for threads in [1, 7] {
        let config = StorageConfig {
            read_threads: threads,
            ..StorageConfig::default()
        };
        let rocks = Store::open_rocks(&path, &config).await.expect("open");
        let mut found: Vec<NodeLabel> = rocks
            .batch_get::<akd::tree_node::TreeNodeWithPreviousValue>(&keys)
            .await
            .expect("batch_get")
            .into_iter()
            .map(|r| match r {
                DbRecord::TreeNode(n) => n.label,
                other => panic!("not a node: {other:?}"),
            })
            .collect();
        found.sort_unstable();
        assert_eq!(found.len(), nodes as usize, "{threads} threads: every node once");
        let versions = rocks
            .get_user_state_versions(&asked, ValueStateRetrievalFlag::LeqEpoch(5))
            .await
            .expect("versions at epoch 5");
        assert_eq!(versions.len(), users as usize, "{threads} threads: every stored user");
        assert!(versions.values().all(|(v, _)| *v == 1), "at epoch 5 every version is 1");
        let latest = rocks
            .get_user_state_versions(&asked, ValueStateRetrievalFlag::MaxEpoch)
            .await
            .expect("latest versions");
        let twice = latest.values().filter(|(v, _)| *v == 2).count();
        assert_eq!(twice, users.div_ceil(2) as usize, "{threads} threads: second versions");
        let mut latest: Vec<_> = latest.into_iter().collect();
        latest.sort();
        answers.push((found, latest));
    }
    assert!(answers[0] == answers[1], "1 and 7 read threads disagree");
}

/// The key of a distinct length-256 node label for `i`.
fn node_key_at(i: u32) -> akd::tree_node::NodeKey {
    let mut label = [0u8; 32];
    label[..4].copy_from_slice(&i.to_be_bytes());
    akd::tree_node::NodeKey(NodeLabel::new(label, 256))
}

/// A tree node at [`node_key_at`]`(i)`'s label.
fn node_at(i: u32) -> DbRecord {
    node_with(node_key_at(i).0, 7)
}

/// Closes `rocks` and opens the database again, with a cold block cache.
async fn open_again(rocks: Store, dir: &tempfile::TempDir) -> Store {
    drop(rocks);
    open(dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_database_of_another_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    drop(
        Store::open_rocks(&path, &StorageConfig::default())
            .await
            .expect("create"),
    );
    let other = SCHEMA_VERSION + 1;
    support::put_raw(&path, Cf::Meta, b"schema", &other.to_be_bytes());
    let err = Store::open_rocks(&path, &StorageConfig::default())
        .await
        .expect_err("another schema must be refused");
    assert!(
        matches!(
            err,
            StorageError::Schema {
                expected: SCHEMA_VERSION,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("storage schema {}", hex::encode(other.to_be_bytes()))),
        "{err}"
    );
}

// ---- The MySQL backend on a real MariaDB (KT_TEST_MYSQL_URL) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_passes_akd_conformance_suite() {
    let Some(store) = support::TestStore::mysql("conformance").await else {
        return;
    };
    akd::storage::tests::run_test_cases_for_storage_impl(store.open().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_epochs_with_high_bytes_do_not_leak_across_users() {
    let Some(store) = support::TestStore::mysql("highbytes").await else {
        return;
    };
    compare_on(
        &store,
        &[
            ("ab".into(), vec![1, 0x6300_0000_0000_0001]),
            ("abc".into(), vec![2, 5]),
            ("a".into(), vec![u64::MAX]),
        ],
    )
    .await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn mysql_per_user_queries_match_in_memory_backend(users in arb_users()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async {
            if let Some(store) = support::TestStore::mysql("peruser").await {
                compare_on(&store, &users).await;
            }
        });
    }
}

/// Values of the publisher's tables larger than a part (audit blobs) come back whole,
/// through every read path; a shorter value written over a longer one leaves no parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_large_values_round_trip_in_parts() {
    use kt_directory::storage::Write;
    let Some(store) = support::TestStore::mysql("parts").await else {
        return;
    };
    let s = store.open().await;
    let big: Vec<u8> = (0..(kt_directory::storage::mysql::PART_BYTES * 5 / 2))
        .map(|i| (i % 251) as u8)
        .collect();
    s.write(vec![
        Write::Put(Cf::AuditBlobs, 1u64.to_be_bytes().to_vec(), big.clone()),
        Write::Put(Cf::AuditBlobs, 2u64.to_be_bytes().to_vec(), b"small".to_vec()),
        Write::Put(Cf::Heads, 1u64.to_be_bytes().to_vec(), Vec::new()),
    ])
    .await
    .expect("write");
    assert_eq!(
        s.get_raw(Cf::AuditBlobs, 1u64.to_be_bytes().to_vec())
            .await
            .expect("get"),
        Some(big.clone())
    );
    assert_eq!(
        s.get_raw(Cf::Heads, 1u64.to_be_bytes().to_vec()).await.expect("get"),
        Some(Vec::new())
    );
    let scanned = s.scan(Cf::AuditBlobs, Vec::new(), 10).await.expect("scan");
    assert_eq!(scanned.len(), 2);
    assert_eq!(scanned[0].1, big);
    assert_eq!(s.count(Cf::AuditBlobs).await.expect("count"), 2);
    assert_eq!(
        s.last(Cf::AuditBlobs).await.expect("last"),
        Some((2u64.to_be_bytes().to_vec(), b"small".to_vec()))
    );
    s.write(vec![Write::Put(
        Cf::AuditBlobs,
        1u64.to_be_bytes().to_vec(),
        b"shrunk".to_vec(),
    )])
    .await
    .expect("overwrite");
    assert_eq!(
        s.get_raw(Cf::AuditBlobs, 1u64.to_be_bytes().to_vec())
            .await
            .expect("get"),
        Some(b"shrunk".to_vec())
    );
    s.write(vec![Write::Delete(Cf::AuditBlobs, 1u64.to_be_bytes().to_vec())])
        .await
        .expect("delete");
    assert_eq!(s.count(Cf::AuditBlobs).await.expect("count"), 1);
}

/// Bad configuration fails at start-up with a message that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_bad_configuration_fails_clearly() {
    use kt_directory::storage::Write;
    let Some(store) = support::TestStore::mysql("badconfig").await else {
        return;
    };
    let support::TestStore::Mysql(url) = &store else {
        unreachable!()
    };

    // A replica pointed at a database no publisher has written.
    let err = Store::open_mysql(url, true).await.expect_err("empty store");
    assert!(matches!(err, StorageError::Empty { .. }), "{err}");
    assert!(err.to_string().contains("start the publisher"), "{err}");

    // Another schema version.
    let s = store.open().await;
    s.write(vec![Write::Put(
        Cf::Meta,
        b"schema".to_vec(),
        99u32.to_be_bytes().to_vec(),
    )])
    .await
    .expect("plant schema");
    drop(s);
    let err = Store::open_mysql(url, false).await.expect_err("schema");
    assert!(matches!(err, StorageError::Schema { expected: 1, .. }), "{err}");

    // Nobody listening; a URL without a database.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let err = Store::open_mysql(&format!("mysql://kt:kt@127.0.0.1:{port}/kt"), false)
        .await
        .expect_err("unreachable");
    assert!(matches!(err, StorageError::MysqlConnect { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("cannot connect to MySQL at kt@127.0.0.1:{port}/kt")),
        "{err}"
    );
    assert!(!err.to_string().contains("kt:kt"), "no password in messages: {err}");
    let err = Store::open_mysql("mysql://kt:kt@127.0.0.1:1", false)
        .await
        .expect_err("no database");
    assert!(matches!(err, StorageError::MysqlNoDatabase { .. }), "{err}");
}

/// A reader in another process (a replica) must learn the tree-node lengths the
/// writer adds after it opened, or its length filter would hide real nodes.
async fn replica_sees_new_node_lengths_after_refresh(store: support::TestStore) {
    use kt_directory::storage::{Backend, Role};
    let writer = store.open().await;
    writer
        .batch_set(vec![node_of_len(0x11, 256)], DbSetState::TransactionCommit)
        .await
        .expect("write 256");
    // RocksDB: the first node in an SST file, the second only in the primary's WAL.
    writer.flush().await.expect("flush");
    let (backend, path, secondary) = match &store {
        support::TestStore::Rocks(dir) => (Backend::Rocks, dir.path().join("db"), dir.path().join("replica")),
        support::TestStore::Mysql(url) => (
            Backend::Mysql { url: url.clone() },
            Default::default(),
            Default::default(),
        ),
    };
    let reader = Store::open(
        &backend,
        path,
        StorageConfig::default(),
        Role::Replica {
            secondary_dir: secondary,
        },
    )
    .await
    .expect("open replica");
    let key = |fill: u8, len: u32| akd::tree_node::NodeKey(NodeLabel::new([fill; 32], len));
    reader
        .get::<akd::tree_node::TreeNodeWithPreviousValue>(&key(0x11, 256))
        .await
        .expect("the replica reads what was there when it opened");
    writer
        .batch_set(vec![node_of_len(0x22, 17)], DbSetState::TransactionCommit)
        .await
        .expect("write 17");
    reader.catch_up().await.expect("catch up");
    reader.learn_node_lengths().await.expect("learn lengths");
    let got = reader
        .batch_get::<akd::tree_node::TreeNodeWithPreviousValue>(&[key(0x22, 17)])
        .await
        .expect("batch_get");
    assert_eq!(
        got,
        vec![node_of_len(0x22, 17)],
        "a length added after the replica opened"
    );
    let err = reader
        .batch_set(vec![node_of_len(0x33, 9)], DbSetState::TransactionCommit)
        .await
        .expect_err("a replica never writes");
    assert!(err.to_string().contains("read replica"), "{err}");
    let err = reader
        .write(vec![kt_directory::storage::Write::Delete(Cf::Queue, vec![1])])
        .await
        .expect_err("a replica never writes");
    assert!(matches!(err, StorageError::ReadOnly), "{err}");
}

on_both_backends!(replica_sees_new_node_lengths_after_refresh);
