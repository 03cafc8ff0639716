//! Fixtures the workspace's tests share (feature `test-support`; never in a release
//! build).

use crate::storage::StorageError;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, Pool};

fn db_err(op: &'static str) -> impl FnOnce(mysql_async::Error) -> StorageError {
    move |source| StorageError::Mysql { op, source }
}

/// For this workspace's tests: a new, empty database named after `test` on the
/// server `KT_TEST_MYSQL_URL` names (`mysql://user:password@host:port`, as
/// `scripts/mariadb.sh start` prints it), as a URL for [`crate::storage::Store::open_mysql`].
/// `Ok(None)` when no server is named, so the caller can skip (a `SKIPPED` line on
/// stderr says so); an error instead when `KT_REQUIRE_MYSQL=1` (the test command sets
/// it, so nothing is skipped in CI).
pub async fn test_database(test: &str) -> Result<Option<String>, StorageError> {
    let Ok(base) = std::env::var("KT_TEST_MYSQL_URL") else {
        if std::env::var("KT_REQUIRE_MYSQL").as_deref() == Ok("1") {
            return Err(StorageError::TestServerMissing);
        }
        eprintln!("SKIPPED {test}: set KT_TEST_MYSQL_URL (bash scripts/mariadb.sh start DIR prints one)");
        return Ok(None);
    };
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = base.trim_end_matches('/').to_owned();
    let name = format!(
        "kt_{}_{}_{}",
        test.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(24)
            .collect::<String>(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let pool = Pool::new(Opts::from_url(&base).map_err(|source| StorageError::MysqlUrl { source })?);
    let mut conn = pool.get_conn().await.map_err(db_err("connect"))?;
    conn.query_drop(format!("CREATE DATABASE {name}"))
        .await
        .map_err(db_err("create database"))?;
    drop(conn);
    pool.disconnect().await.map_err(db_err("disconnect"))?;
    Ok(Some(format!("{base}/{name}")))
}
