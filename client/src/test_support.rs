//! Fixtures the workspace's tests share (feature `test-support`), so each suite does
//! not write its own.

use crate::head::{Head, SignedHead};
use ed25519_dalek::SigningKey;

/// A head of `namespace` at `epoch` whose root is `[root; 32]` and previous root
/// `[previous; 32]` (so a chain is `(1, 0)`, `(2, 1)`, ...), VRF key hash `[9; 32]`,
/// dated `timestamp_ms`, signed by `key`.
pub fn signed_head(
    namespace: &str,
    epoch: u64,
    root: u8,
    previous: u8,
    timestamp_ms: u64,
    key: &SigningKey,
) -> SignedHead {
    Head {
        namespace: namespace.to_owned(),
        epoch,
        root: [root; 32],
        previous_root: [previous; 32],
        vrf_key_hash: [9; 32],
        timestamp_ms,
    }
    .sign(key)
    .unwrap_or_else(|e| panic!("signing a test head: {e}"))
}
