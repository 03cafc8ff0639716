//! The auditor's own RocksDB: what it pinned, every epoch it verified and co-signed
//! (with the proof it verified), and the evidence it published.
//!
//! The last verified epoch is the last key of [`Cf::Epochs`]; an epoch's record and
//! its blob land in one synced `WriteBatch`, so after a crash (even SIGKILL) the
//! auditor resumes exactly after the last epoch it co-signed: nothing re-verified,
//! nothing skipped. Calls here block: async callers use `spawn_blocking`.

use kt_client::auditor::Evidence;
use kt_client::cosign::{CoSignature, PlexiSignature};
use kt_client::head::SignedHead;
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The on-disk schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The column families. Keys of the epoch- and id-keyed families are big-endian u64,
/// so RocksDB's byte order is numeric order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    /// Schema version and pins.
    Meta,
    /// epoch → [`EpochRecord`] (JSON).
    Epochs,
    /// epoch → the append-only proof verified for it (protobuf, as fetched).
    Blobs,
    /// id → [`Evidence`] (JSON).
    Evidence,
    /// id → the blob an evidence record is about (invalid proofs).
    EvidenceBlobs,
}

impl Cf {
    const ALL: [Cf; 5] = [Cf::Meta, Cf::Epochs, Cf::Blobs, Cf::Evidence, Cf::EvidenceBlobs];

    fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Epochs => "epochs",
            Cf::Blobs => "blobs",
            Cf::Evidence => "evidence",
            Cf::EvidenceBlobs => "evidence_blobs",
        }
    }

    /// Large values go to blob files, so compactions do not rewrite proofs.
    fn holds_blobs(self) -> bool {
        matches!(self, Cf::Blobs | Cf::EvidenceBlobs)
    }
}

const SCHEMA_KEY: &[u8] = b"schema";
const PINS_KEY: &[u8] = b"pins";
const WITNESS_KEY: &[u8] = b"witness";

/// The latest epoch-log checkpoint this auditor co-signed as a witness
/// (c2sp.org/tlog-witness: a witness keeps one per log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessRecord {
    /// The checkpoint's size.
    pub size: u64,
    /// Its root, hex.
    pub root: String,
    /// The checkpoint note as submitted (the log's signature on it is evidence).
    pub note: String,
    /// When it was co-signed, Unix seconds.
    pub cosigned_at: u64,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed.
    #[error("auditor database: {0}")]
    Db(#[from] rocksdb::Error),
    /// A record does not decode: the database is damaged or from another build.
    #[error("auditor database: corrupt {what}: {source}")]
    Corrupt {
        /// Which record.
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A record's key is not the 8-byte epoch or id it must be.
    #[error("auditor database: corrupt {what} key of {len} bytes, expected 8")]
    BadKey {
        /// Which record.
        what: String,
        /// The key's length.
        len: usize,
    },
    /// The pinned identity does not decode.
    #[error("auditor database: corrupt pins: {source}")]
    Pins {
        #[source]
        source: kt_client::head::HeadError,
    },
    /// A record could not be encoded (a bug: our own types always encode).
    #[error("encoding a record to write: {source}")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
    /// The blocking task running a store call panicked or was cancelled.
    #[error("auditor store task failed: {source}")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
    /// Another schema.
    #[error("auditor database has schema {found}; this build reads schema {SCHEMA_VERSION}")]
    Schema {
        /// What is on disk.
        found: u32,
    },
    /// An earlier write failed; the store refuses further writes rather than guess
    /// what landed.
    #[error("an earlier write to the auditor database failed; restart the auditor")]
    Fenced,
}

/// What the auditor pinned on first start; it refuses to follow anything else later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    /// The directory's signing key, hex (given by the operator).
    pub directory_key: String,
    /// The directory's namespace, from the verified head of epoch 0.
    pub namespace: String,
    /// blake3 of the directory's VRF key, hex, from the verified head of epoch 0.
    pub vrf_key_hash: String,
    /// The empty-tree root the auditor computed itself, hex.
    pub genesis_root: String,
}

/// One verified, co-signed epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The directory head that was verified (root and previous root come from it).
    pub head: SignedHead,
    /// Our co-signature.
    pub cosignature: CoSignature,
    /// The same attestation in Plexi's format.
    pub plexi: PlexiSignature,
    /// When it was co-signed, ms.
    pub verified_at_ms: u64,
    /// Time spent in akd's verification, ms.
    pub verify_ms: u64,
    /// Size of the proof, bytes (0 at epoch 0).
    pub proof_bytes: u64,
    /// Leaves the proof inserted.
    pub updates: u64,
}

/// Runs a blocking store call off the async workers (a panicked call is an error).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|source| Err(StoreError::Task { source }))
}

/// The auditor's database.
#[derive(Debug, Clone)]
pub struct Store {
    /// Shared by the follower (the only writer) and the HTTP handlers.
    db: Arc<DB>,
    /// Set by the first failed write; every later write is refused.
    fenced: Arc<AtomicBool>,
    /// Serializes evidence numbering (the follower and `POST /v1/evidence` both add).
    evidence_lock: Arc<Mutex<()>>,
}

fn key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn decode<T: serde::de::DeserializeOwned>(what: impl FnOnce() -> String, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { what: what(), source })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { source })
}

fn epoch_of(what: &str, k: &[u8]) -> Result<u64, StoreError> {
    k.try_into().map(u64::from_be_bytes).map_err(|_| StoreError::BadKey {
        what: what.to_owned(),
        len: k.len(),
    })
}

impl Store {
    /// Opens (creating if absent) the database at `path`; refuses another schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = Cf::ALL.iter().map(|&cf| {
            let mut o = Options::default();
            if cf.holds_blobs() {
                o.set_enable_blob_files(true);
                o.set_min_blob_size(4096);
            }
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let store = Store {
            db: Arc::new(db),
            fenced: Arc::new(AtomicBool::new(false)),
            evidence_lock: Arc::new(Mutex::new(())),
        };
        match store.get(Cf::Meta, SCHEMA_KEY)? {
            None => store.write(|b, s| {
                b.put_cf(s.cf(Cf::Meta), SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes());
                Ok(())
            })?,
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_slice())
                    .map(u32::from_be_bytes)
                    .unwrap_or(u32::MAX);
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema { found });
                }
            }
        }
        Ok(store)
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // Every family is created at open, so a missing handle is a bug in `Cf::ALL`.
        #[allow(clippy::expect_used)]
        self.db.cf_handle(cf.name()).expect("column family created at open")
    }

    fn get(&self, cf: Cf, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(cf), k)?)
    }

    /// Applies one synced batch; a failure fences the store.
    fn write(&self, fill: impl FnOnce(&mut WriteBatch, &Store) -> Result<(), StoreError>) -> Result<(), StoreError> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(StoreError::Fenced);
        }
        let mut batch = WriteBatch::default();
        fill(&mut batch, self)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(|e| {
            self.fenced.store(true, Ordering::SeqCst);
            StoreError::Db(e)
        })
    }

    /// The pins, once set.
    pub fn pins(&self) -> Result<Option<Pins>, StoreError> {
        self.get(Cf::Meta, PINS_KEY)?
            .map(|v| decode(|| "pins".into(), &v))
            .transpose()
    }

    /// Commits epoch 0: the pins and its record, together.
    pub fn commit_genesis(&self, pins: &Pins, record: &EpochRecord) -> Result<(), StoreError> {
        let pins = encode(pins)?;
        let rec = encode(record)?;
        self.write(|b, s| {
            b.put_cf(s.cf(Cf::Meta), PINS_KEY, &pins);
            b.put_cf(s.cf(Cf::Epochs), key(record.head.head.epoch), &rec);
            Ok(())
        })
    }

    /// The latest checkpoint co-signed as a witness.
    pub fn witness(&self) -> Result<Option<WitnessRecord>, StoreError> {
        self.get(Cf::Meta, WITNESS_KEY)?
            .map(|v| decode(|| "witness".into(), &v))
            .transpose()
    }

    /// Records a co-signed checkpoint (synced before the co-signature is sent).
    pub fn set_witness(&self, record: &WitnessRecord) -> Result<(), StoreError> {
        let v = encode(record)?;
        self.write(|b, s| {
            b.put_cf(s.cf(Cf::Meta), WITNESS_KEY, &v);
            Ok(())
        })
    }

    /// Commits a verified epoch with the proof it was verified from.
    pub fn commit_epoch(&self, record: &EpochRecord, blob: &[u8]) -> Result<(), StoreError> {
        let rec = encode(record)?;
        let k = key(record.head.head.epoch);
        self.write(|b, s| {
            b.put_cf(s.cf(Cf::Epochs), k, &rec);
            b.put_cf(s.cf(Cf::Blobs), k, blob);
            Ok(())
        })
    }

    /// The record of `epoch`.
    pub fn epoch(&self, epoch: u64) -> Result<Option<EpochRecord>, StoreError> {
        self.get(Cf::Epochs, &key(epoch))?
            .map(|v| decode(|| format!("epoch {epoch}"), &v))
            .transpose()
    }

    /// The newest verified epoch's record.
    pub fn last_epoch(&self) -> Result<Option<EpochRecord>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(Cf::Epochs));
        it.seek_to_last();
        let found = match (it.key(), it.value()) {
            (Some(k), Some(v)) => {
                let epoch = epoch_of("epochs", k)?;
                Some(decode(|| format!("epoch {epoch}"), v)?)
            }
            _ => None,
        };
        it.status()?;
        Ok(found)
    }

    /// Up to `limit` records from `from` ascending, or (without `from`) the newest
    /// `limit` records, ascending.
    pub fn epochs(&self, from: Option<u64>, limit: usize) -> Result<Vec<EpochRecord>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        let start;
        let mode = match from {
            Some(f) => {
                start = key(f);
                IteratorMode::From(&start, Direction::Forward)
            }
            None => IteratorMode::End,
        };
        for item in self.db.iterator_cf(self.cf(Cf::Epochs), mode).take(limit) {
            let (k, v) = item?;
            let epoch = epoch_of("epochs", &k)?;
            out.push(decode(|| format!("epoch {epoch}"), &v)?);
        }
        if from.is_none() {
            out.reverse();
        }
        Ok(out)
    }

    /// The proof verified for `epoch`.
    pub fn blob(&self, epoch: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(Cf::Blobs, &key(epoch))
    }

    /// Every evidence record, oldest first.
    pub fn evidence(&self) -> Result<Vec<Evidence>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(Cf::Evidence), IteratorMode::Start) {
            let (k, v) = item?;
            let id = epoch_of("evidence", &k)?;
            out.push(decode(|| format!("evidence {id}"), &v)?);
        }
        Ok(out)
    }

    /// One evidence record.
    pub fn evidence_by_id(&self, id: u64) -> Result<Option<Evidence>, StoreError> {
        self.get(Cf::Evidence, &key(id))?
            .map(|v| decode(|| format!("evidence {id}"), &v))
            .transpose()
    }

    /// The blob kept with an evidence record.
    pub fn evidence_blob(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(Cf::EvidenceBlobs, &key(id))
    }

    /// Stores `evidence` (its `id` is assigned here) unless the same finding (kind,
    /// epoch, heads) is on record already. Returns the id and whether it is new.
    pub fn add_evidence(&self, mut evidence: Evidence, blob: Option<&[u8]>) -> Result<(u64, bool), StoreError> {
        let _numbering = self.evidence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let existing = self.evidence()?;
        if let Some(same) = existing
            .iter()
            .find(|e| e.kind == evidence.kind && e.epoch == evidence.epoch && e.heads == evidence.heads)
        {
            return Ok((same.id, false));
        }
        evidence.id = existing.last().map_or(1, |e| e.id + 1);
        let id = evidence.id;
        let bytes = encode(&evidence)?;
        self.write(|b, s| {
            b.put_cf(s.cf(Cf::Evidence), key(id), &bytes);
            if let Some(blob) = blob {
                b.put_cf(s.cf(Cf::EvidenceBlobs), key(id), blob);
            }
            Ok(())
        })?;
        Ok((id, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use kt_client::auditor::{EvidenceKind, EvidenceSource};

    fn record(epoch: u64) -> EpochRecord {
        let head = kt_client::test_support::signed_head(
            "ns",
            epoch,
            epoch as u8,
            epoch.saturating_sub(1) as u8,
            1000 + epoch,
            &SigningKey::from_bytes(&[1; 32]),
        );
        crate::fixtures::record(head, &SigningKey::from_bytes(&[2; 32]), 5)
    }

    #[test]
    fn epochs_survive_reopen_in_numeric_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            assert!(s.last_epoch().expect("last").is_none());
            let pins = Pins {
                directory_key: "aa".into(),
                namespace: "ns".into(),
                vrf_key_hash: "00".into(),
                genesis_root: "00".into(),
            };
            s.commit_genesis(&pins, &record(0)).expect("genesis");
            // 256 and 1 differ in the low byte order: big-endian keys keep them numeric.
            for e in [1, 2, 255, 256] {
                s.commit_epoch(&record(e), &[e as u8; 5000]).expect("commit");
            }
        }
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.last_epoch().expect("last").map(|r| r.head.head.epoch), Some(256));
        assert_eq!(s.pins().expect("pins").map(|p| p.namespace), Some("ns".into()));
        let newest: Vec<u64> = s
            .epochs(None, 2)
            .expect("epochs")
            .iter()
            .map(|r| r.head.head.epoch)
            .collect();
        assert_eq!(newest, vec![255, 256]);
        let from: Vec<u64> = s
            .epochs(Some(1), 3)
            .expect("epochs")
            .iter()
            .map(|r| r.head.head.epoch)
            .collect();
        assert_eq!(from, vec![1, 2, 255]);
        assert_eq!(s.blob(255).expect("blob"), Some(vec![255; 5000]));
        assert_eq!(s.epoch(7).expect("epoch"), None);
    }

    #[test]
    fn evidence_is_numbered_and_deduplicated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let ev = |epoch| Evidence {
            id: 0,
            kind: EvidenceKind::InvalidProof,
            epoch,
            detected_at_ms: 1,
            source: EvidenceSource::Auditor,
            reason: "bad".into(),
            heads: vec![record(epoch).head],
            blob_name: None,
        };
        assert_eq!(s.add_evidence(ev(3), Some(b"blob")).expect("add"), (1, true));
        assert_eq!(s.add_evidence(ev(3), Some(b"blob")).expect("add"), (1, false));
        assert_eq!(s.add_evidence(ev(4), None).expect("add"), (2, true));
        assert_eq!(s.evidence_blob(1).expect("blob"), Some(b"blob".to_vec()));
        assert_eq!(s.evidence().expect("list").len(), 2);
    }

    #[test]
    fn another_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            s.write(|b, s| {
                b.put_cf(s.cf(Cf::Meta), SCHEMA_KEY, 9u32.to_be_bytes());
                Ok(())
            })
            .expect("write");
        }
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Schema { found: 9 })));
    }
}
