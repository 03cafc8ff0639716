//! Helpers shared by the storage integration tests.

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
