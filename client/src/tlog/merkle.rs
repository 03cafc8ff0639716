//! RFC 6962 Merkle trees (SHA-256): leaf and node hashes, a log kept as its complete
//! subtrees, inclusion and consistency proofs, and their verification (RFC 9162
//! §2.1.3.2 and §2.1.4.2).

use sha2::{Digest, Sha256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// The most hashes a proof can need: one per level of a tree of 2^64 leaves.
pub const MAX_PROOF_HASHES: usize = 64;

/// Why a log operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// A proof was asked for, or checked against, sizes that do not fit
    /// (`index >= size`, `old > new`, a size beyond the log).
    #[error("no proof between {what} {from} and size {size}")]
    Range {
        /// What `from` is: a leaf index or an older size.
        what: &'static str,
        /// The leaf index or older size.
        from: u64,
        /// The tree size.
        size: u64,
    },
    /// The proof does not lead to the expected root(s).
    #[error("the {0} proof does not verify")]
    Mismatch(&'static str),
    /// The proof has the wrong number of hashes for its sizes.
    #[error("the {0} proof has the wrong number of hashes")]
    Length(&'static str),
}

/// `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// A log held as its complete subtrees: `levels[h][k]` is the hash of leaves
/// `k·2^h .. (k+1)·2^h`. Appending a leaf adds it and every subtree it completes, so
/// any root, inclusion or consistency proof of any size up to [`MemoryLog::size`] takes
/// O(log n) hashes, and the rows an append adds are what a store persists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryLog {
    levels: Vec<Vec<Hash>>,
}

/// One complete subtree: height (0 for a leaf), index at that height, hash.
pub type Node = (u8, u64, Hash);

impl MemoryLog {
    /// An empty log.
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// A log of these leaf hashes.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> MemoryLog {
        let mut log = MemoryLog::new();
        for leaf in leaves {
            log.append(leaf);
        }
        log
    }

    /// Leaves in the log.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The complete subtrees that appending `leaf` would add, the leaf first, without
    /// appending it (what a store persists before the append is applied).
    pub fn completed_by(&self, leaf: Hash) -> Vec<Node> {
        let mut added = Vec::with_capacity(2);
        let mut hash = leaf;
        let mut height = 0u8;
        let mut index = self.size();
        loop {
            added.push((height, index, hash));
            if index.is_multiple_of(2) {
                return added;
            }
            let Some(left) = self.node(height, index - 1) else {
                unreachable!("a log holds the left sibling of its next node")
            };
            hash = node_hash(&left, &hash);
            height += 1;
            index /= 2;
        }
    }

    /// The root the log would have after adding `added` ([`MemoryLog::completed_by`]
    /// of its next leaf).
    pub fn root_after(&self, added: &[Node]) -> Hash {
        self.range_with(0, self.size() + 1, added)
    }

    /// Appends a leaf hash; returns every complete subtree it adds, the leaf first.
    pub fn append(&mut self, leaf: Hash) -> Vec<Node> {
        let added = self.completed_by(leaf);
        for &(height, _, hash) in &added {
            let height = usize::from(height);
            if self.levels.len() == height {
                self.levels.push(Vec::new());
            }
            self.levels[height].push(hash);
        }
        added
    }

    /// The stored complete subtree at `height`, `index`, if there is one.
    pub fn node(&self, height: u8, index: u64) -> Option<Hash> {
        self.levels
            .get(usize::from(height))
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
    }

    /// The complete subtrees at `height` from `index`, at most `count` of them (a tile's
    /// hashes).
    pub fn nodes(&self, height: u8, index: u64, count: usize) -> &[Hash] {
        let Some(level) = self.levels.get(usize::from(height)) else {
            return &[];
        };
        let start = usize::try_from(index).unwrap_or(usize::MAX).min(level.len());
        let end = start.saturating_add(count).min(level.len());
        &level[start..end]
    }

    /// `MTH(D[start:end])` for a range whose `start` is aligned to a power of two at
    /// least `end - start` (every range a proof uses).
    fn range(&self, start: u64, end: u64) -> Hash {
        self.range_with(start, end, &[])
    }

    /// [`MemoryLog::range`], with `extra` subtrees consulted besides the stored ones.
    fn range_with(&self, start: u64, end: u64, extra: &[Node]) -> Hash {
        let n = end - start;
        if n.is_power_of_two() {
            let h = n.trailing_zeros() as u8;
            let i = start >> h;
            let found = extra
                .iter()
                .find(|(eh, ei, _)| (*eh, *ei) == (h, i))
                .map(|(_, _, hash)| *hash)
                .or_else(|| self.node(h, i));
            if let Some(hash) = found {
                return hash;
            }
        }
        let k = split(n);
        node_hash(
            &self.range_with(start, start + k, extra),
            &self.range_with(start + k, end, extra),
        )
    }

    /// The root of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, MerkleError> {
        if size > self.size() {
            return Err(MerkleError::Range {
                what: "size",
                from: size,
                size: self.size(),
            });
        }
        Ok(if size == 0 { empty_root() } else { self.range(0, size) })
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves
    /// (RFC 6962 §2.1.1 `PATH`).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        if index >= size || size > self.size() {
            return Err(MerkleError::Range {
                what: "leaf",
                from: index,
                size,
            });
        }
        let mut out = Vec::new();
        self.path(index, 0, size, &mut out);
        Ok(out)
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n == 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.range(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.range(start, start + k));
        }
    }

    /// The consistency proof from size `old` to size `new` (RFC 6962 §2.1.2 `PROOF`;
    /// empty when `old` is 0 or equals `new`).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, MerkleError> {
        if old > new || new > self.size() {
            return Err(MerkleError::Range {
                what: "size",
                from: old,
                size: new,
            });
        }
        let mut out = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut out);
        }
        Ok(out)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.range(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.range(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.range(start, start + k));
        }
    }
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::Range {
            what: "leaf",
            from: index,
            size,
        });
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(MerkleError::Length("inclusion"));
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(MerkleError::Length("inclusion"));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::Length("inclusion"));
    }
    if r != *root {
        return Err(MerkleError::Mismatch("inclusion"));
    }
    Ok(())
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of the tree of
/// `new` leaves with root `new_root` (RFC 9162 §2.1.4.2). Size 0 is a prefix of every
/// tree, with an empty proof.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), MerkleError> {
    if old > new {
        return Err(MerkleError::Range {
            what: "size",
            from: old,
            size: new,
        });
    }
    if old == 0 || old == new {
        if !proof.is_empty() {
            return Err(MerkleError::Length("consistency"));
        }
        if old == new && old_root != new_root {
            return Err(MerkleError::Mismatch("consistency"));
        }
        return Ok(());
    }
    if proof.is_empty() || proof.len() > MAX_PROOF_HASHES {
        return Err(MerkleError::Length("consistency"));
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return Err(MerkleError::Length("consistency"));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::Length("consistency"));
    }
    if fr != *old_root || sr != *new_root {
        return Err(MerkleError::Mismatch("consistency"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 6962 test leaves (certificate-transparency's reference suite).
    fn ct_leaves() -> Vec<Hash> {
        let data: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
            ],
        ];
        data.iter().map(|d| leaf_hash(d)).collect()
    }

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).expect("hex");
        out
    }

    #[test]
    fn roots_match_the_rfc_6962_vectors() {
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let log = MemoryLog::from_leaves(ct_leaves());
        assert_eq!(
            hex::encode(log.root(0).expect("empty")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for (n, want) in roots.iter().enumerate() {
            assert_eq!(
                hex::encode(log.root(n as u64 + 1).expect("root")),
                *want,
                "size {}",
                n + 1
            );
        }
    }

    #[test]
    fn proofs_match_the_rfc_6962_vectors() {
        let log = MemoryLog::from_leaves(ct_leaves());
        assert_eq!(
            log.inclusion_proof(5, 8).expect("path"),
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
        assert_eq!(
            log.inclusion_proof(0, 8).expect("path"),
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ]
        );
        assert_eq!(
            log.consistency_proof(2, 5).expect("proof"),
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ]
        );
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn every_proof_verifies_and_nothing_else_does() {
        let all = leaves(40);
        let log = MemoryLog::from_leaves(all.iter().copied());
        for n in 1..=40u64 {
            let root = log.root(n).expect("root");
            assert_eq!(
                root,
                MemoryLog::from_leaves(all[..n as usize].iter().copied())
                    .root(n)
                    .expect("root")
            );
            for m in 0..n {
                let p = log.inclusion_proof(m, n).expect("path");
                verify_inclusion(&all[m as usize], m, n, &p, &root).expect("inclusion");
                // (The size is bound by the signed checkpoint, not by the path: leaf 0's
                // path in a tree of 3 is also a valid shape in a tree of 4.)
                assert!(verify_inclusion(&all[m as usize], m, 2 * n + 2, &p, &root).is_err() || n == 1);
                if n > 1 {
                    let other = (m + 1) % n;
                    assert!(verify_inclusion(&all[m as usize], other, n, &p, &root).is_err());
                    assert!(verify_inclusion(&all[other as usize], m, n, &p, &root).is_err());
                }
                for i in 0..p.len() {
                    let mut bad = p.clone();
                    bad[i][0] ^= 1;
                    assert!(verify_inclusion(&all[m as usize], m, n, &bad, &root).is_err());
                }
            }
            for old in 0..=n {
                let p = log.consistency_proof(old, n).expect("proof");
                let old_root = log.root(old).expect("root");
                verify_consistency(old, n, &p, &old_root, &root).expect("consistency");
                if old > 0 && old < n {
                    let mut wrong = old_root;
                    wrong[3] ^= 1;
                    assert!(verify_consistency(old, n, &p, &wrong, &root).is_err());
                    assert!(verify_consistency(old, n, &p[..p.len() - 1], &old_root, &root).is_err());
                    let mut longer = p.clone();
                    longer.push(root);
                    assert!(verify_consistency(old, n, &longer, &old_root, &root).is_err());
                }
            }
        }
    }

    /// A forked log (one leaf replaced) is consistent with neither history's roots.
    #[test]
    fn a_fork_fails_consistency() {
        let honest = leaves(20);
        let mut forked = honest.clone();
        forked[7] = leaf_hash(b"another head");
        let a = MemoryLog::from_leaves(honest);
        let b = MemoryLog::from_leaves(forked);
        let p = b.consistency_proof(10, 20).expect("proof");
        assert!(verify_consistency(10, 20, &p, &a.root(10).expect("root"), &b.root(20).expect("root")).is_err());
        let p = b.consistency_proof(5, 20).expect("proof");
        assert!(verify_consistency(5, 20, &p, &a.root(5).expect("root"), &b.root(20).expect("root")).is_ok());
    }

    #[test]
    fn appends_report_the_subtrees_they_complete() {
        let mut log = MemoryLog::new();
        let l = leaves(4);
        assert_eq!(log.append(l[0]).len(), 1);
        let added = log.append(l[1]);
        assert_eq!(added, vec![(0, 1, l[1]), (1, 0, node_hash(&l[0], &l[1]))]);
        assert_eq!(log.append(l[2]).len(), 1);
        assert_eq!(log.append(l[3]).len(), 3);
        assert!(log.root(5).is_err());
        assert!(log.inclusion_proof(4, 4).is_err());
        assert!(log.consistency_proof(3, 5).is_err());
        // Previewing an append is the append, without it.
        for n in 4..40u64 {
            let leaf = leaf_hash(&n.to_be_bytes());
            let added = log.completed_by(leaf);
            let root = log.root_after(&added);
            assert_eq!(log.size(), n);
            assert_eq!(log.append(leaf), added);
            assert_eq!(log.root(n + 1).expect("root"), root);
        }
    }
}
