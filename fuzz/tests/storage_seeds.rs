//! Writes the `storage_record` seeds: the records akd itself stores for a small
//! directory (in its in-memory database), encoded as the directory's RocksDB holds them.
//! Run once when the record format changes:
//! `cargo test --release --manifest-path fuzz/Cargo.toml --no-default-features --test storage_seeds -- --ignored`.

use akd::storage::memory::AsyncInMemoryDatabase;
use akd::storage::types::{DbRecord, ValueStateRetrievalFlag};
use akd::storage::{Database, StorageManager};
use akd::tree_node::{NodeKey, TreeNodeWithPreviousValue};
use akd::{AkdLabel, AkdValue, Azks, AzksParallelismConfig, Directory, NodeLabel};
use std::path::Path;

#[tokio::test]
#[ignore = "regenerates committed seeds"]
async fn write_storage_seeds() {
    let db = AsyncInMemoryDatabase::new();
    let dir = Directory::<kt_client::KtConfig, _, _>::new(
        StorageManager::new_no_cache(db.clone()),
        akd::ecvrf::HardCodedAkdVRF {},
        AzksParallelismConfig::default(),
    )
    .await
    .expect("directory");
    for epoch in 1..=3u8 {
        let updates = (0..6u8)
            .map(|i| (AkdLabel(format!("user{i}").into_bytes()), AkdValue(vec![epoch, i, 7])))
            .collect();
        dir.publish(updates).await.expect("publish");
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/storage_record");
    std::fs::create_dir_all(&out).expect("mkdir");
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(out.join(name), bytes).expect("write");

    let azks = match db
        .get::<Azks>(&akd::append_only_zks::DEFAULT_AZKS_KEY)
        .await
        .expect("azks")
    {
        DbRecord::Azks(a) => a,
        _ => panic!("not an azks"),
    };
    write("azks", [vec![0], kt_codec::encode_azks(&azks)].concat());

    // The root and a few nodes below it.
    let mut labels = vec![NodeLabel::root()];
    let mut written = 0;
    while let Some(label) = labels.pop() {
        if written == 6 {
            break;
        }
        let DbRecord::TreeNode(node) = db
            .get::<TreeNodeWithPreviousValue>(&NodeKey(label))
            .await
            .expect("node")
        else {
            panic!("not a node");
        };
        labels.extend(node.latest_node.left_child);
        labels.extend(node.latest_node.right_child);
        let record = [
            vec![1],
            kt_codec::node_key(&label).to_vec(),
            kt_codec::encode_tree_node(&node),
        ]
        .concat();
        write(&format!("node{written}"), record);
        written += 1;
    }

    for i in 0..3u8 {
        let state = db
            .get_user_state(
                &AkdLabel(format!("user{i}").into_bytes()),
                ValueStateRetrievalFlag::MaxEpoch,
            )
            .await
            .expect("state");
        let key = kt_codec::value_state_key(&state.username, state.epoch);
        let value = kt_codec::encode_value_state(&state);
        write(
            &format!("state{i}"),
            [vec![2, key.len() as u8], key, value.clone()].concat(),
        );
        write(&format!("version{i}"), [vec![3], value].concat());
    }
}
