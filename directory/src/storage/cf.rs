//! The column families of the directory's RocksDB, as a type rather than string literals.

use std::fmt;

/// One RocksDB column family. Every key layout is documented on its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cf {
    /// Small singleton rows: the akd `Azks` record (key `azks`), the on-disk schema
    /// version (key `schema`), and the publisher's own (the latest head, key `latest_head`: `publisher::heads`).
    Meta,
    /// akd `TreeNodeWithPreviousValue` records, keyed `label_len (u32 BE) || label_val (32 B)`:
    /// akd's own binary id without its type byte. Point reads only (bloom filtered):
    /// lookups probe hundreds of absent nodes each.
    TreeNodes,
    /// akd `ValueState` records, keyed `len(user) (u32 BE) || user || epoch (u64 BE)`, so
    /// one user's states are contiguous and sorted by epoch: the per-user queries of
    /// `get_user_state` are a seek, not a scan of the whole table.
    ValueStates,
    /// Accepted updates waiting for an epoch, keyed by update id (u64 BE): id order is
    /// acceptance order. An epoch deletes what it takes in its own commit batch.
    Queue,
    /// Final outcomes of updates, keyed by update id (u64 BE). Written in the same batch
    /// that removes the update from [`Cf::Queue`].
    Outcomes,
    /// Signed heads, keyed by epoch (u64 BE): akd keeps only the latest root. A head is
    /// written in the same batch as its epoch's akd commit.
    Heads,
    /// akd audit blobs (append-only proofs), keyed by end epoch (u64 BE). Large values:
    /// stored in RocksDB blob files, out of the LSM tree.
    AuditBlobs,
    /// The epoch log's complete subtree hashes (`kt_client::tlog`), keyed
    /// `height (u8) || index (u64 BE)`, 32-byte values. Leaf `i` (height 0) is the hash
    /// of epoch `i`'s head; an epoch's rows are written in its own commit.
    Log,
}

impl Cf {
    /// Every column family, in the order they are opened.
    pub const ALL: [Cf; 8] = [
        Cf::Meta,
        Cf::TreeNodes,
        Cf::ValueStates,
        Cf::Queue,
        Cf::Outcomes,
        Cf::Heads,
        Cf::AuditBlobs,
        Cf::Log,
    ];

    /// The name RocksDB stores for this column family. Never change one: it is on disk.
    pub const fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::TreeNodes => "tree_nodes",
            Cf::ValueStates => "value_states",
            Cf::Queue => "queue",
            Cf::Outcomes => "outcomes",
            Cf::Heads => "heads",
            Cf::AuditBlobs => "audit_blobs",
            Cf::Log => "epoch_log",
        }
    }
}

impl fmt::Display for Cf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
