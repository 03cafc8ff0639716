//! Helpers shared by the storage integration tests.
#![allow(dead_code)] // each test crate uses a different part of it

use kt_directory::storage::Cf;
use std::path::Path;

/// Writes `value` at `key` of column family `cf` straight into the RocksDB at `path`,
/// behind the storage layer's back (to plant bad data). The database must be closed.
pub fn put_raw(path: &Path, cf: Cf, key: &[u8], value: &[u8]) {
    let names: Vec<&str> = Cf::ALL.iter().map(|cf| cf.name()).collect();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), path, names).expect("raw open");
    let handle = db.cf_handle(cf.name()).expect("column family");
    db.put_cf(handle, key, value).expect("raw put");
}

/// A store for one test: a RocksDB in a temporary directory, or a fresh database on
/// the MariaDB server named by `KT_TEST_MYSQL_URL` (`scripts/mariadb.sh` starts one).
#[derive(Debug)]
pub enum TestStore {
    /// RocksDB in `dir/db`.
    Rocks(tempfile::TempDir),
    /// The URL of a database made for this test.
    Mysql(String),
}

impl TestStore {
    pub fn rocks() -> TestStore {
        TestStore::Rocks(tempfile::tempdir().expect("tempdir"))
    }

    /// A new, empty database; `None` (the test is skipped, loudly) when no server is
    /// configured, unless `KT_REQUIRE_MYSQL=1` (the test command sets it) makes that
    /// a failure.
    pub async fn mysql(test: &str) -> Option<TestStore> {
        let url = kt_directory::test_support::test_database(test)
            .await
            .expect("test database");
        url.map(TestStore::Mysql)
    }

    /// The backend and RocksDB path of this store, as the publisher's config names them.
    pub fn backend(&self) -> (kt_directory::storage::Backend, std::path::PathBuf) {
        use kt_directory::storage::Backend;
        match self {
            TestStore::Rocks(dir) => (Backend::Rocks, dir.path().join("db")),
            TestStore::Mysql(url) => (Backend::Mysql { url: url.clone() }, Default::default()),
        }
    }

    /// Opens the store as the publisher does.
    pub async fn open(&self) -> kt_directory::storage::Store {
        use kt_directory::storage::{Backend, Role, StorageConfig, Store};
        let (backend, path) = match self {
            TestStore::Rocks(dir) => (Backend::Rocks, dir.path().join("db")),
            TestStore::Mysql(url) => (Backend::Mysql { url: url.clone() }, Default::default()),
        };
        Store::open(&backend, path, StorageConfig::default(), Role::Writer)
            .await
            .expect("open store")
    }
}

/// Runs `async fn $name(store: TestStore)` twice: `$name::rocksdb` and `$name::mysql`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rocksdb() {
                super::$name(super::support::TestStore::rocks()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                if let Some(store) = super::support::TestStore::mysql(stringify!($name)).await {
                    super::$name(store).await;
                }
            }
        }
    )*};
}

impl TestStore {
    /// Overwrites a tree node's stored value behind the storage layer's back. The
    /// store must be closed (RocksDB).
    pub async fn plant_node(&self, key: &[u8], value: &[u8]) {
        match self {
            TestStore::Rocks(dir) => put_raw(&dir.path().join("db"), Cf::TreeNodes, key, value),
            TestStore::Mysql(url) => {
                use mysql_async::prelude::Queryable;
                let pool = mysql_async::Pool::new(url.as_str());
                let mut conn = pool.get_conn().await.expect("connect");
                conn.exec_drop(
                    "UPDATE kt_tree_nodes SET v = ? WHERE k = ?",
                    (value.to_vec(), key.to_vec()),
                )
                .await
                .expect("plant");
                drop(conn);
                pool.disconnect().await.expect("disconnect");
            }
        }
    }
}
