//! kt-codec: the binary encodings of akd's records and of our keys in the directory's
//! RocksDB. A crate of its own, free of RocksDB, so the fuzz workspace can link it.
//!
//! akd only derives serde for its records behind a test feature, and its binary ids
//! are fixed, so the values here are our own compact format: one leading format-version
//! byte, LEB128 varints for epochs and versions, and tree-node labels that are implied
//! by the record's key stored as a length only (a parent is always a prefix of its
//! child's label). Decoding is total: any byte string decodes or yields a
//! [`DecodeError`], never a panic (the fuzz targets and proptests below hold it to that).

use akd::storage::types::ValueState;
use akd::tree_node::{TreeNode, TreeNodeType, TreeNodeWithPreviousValue};
use akd::{AkdLabel, AkdValue, Azks, AzksValue, NodeLabel};

/// Why a stored record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record ended before a field it announced.
    #[error("truncated: needed {needed} more bytes for {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A field held a value this format never writes.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// The field being read.
        field: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// Bytes were left over after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// The record was written by a format version this build does not know.
    #[error("unknown record format version {0}")]
    Version(u8),
}

/// Format version of every value written by this module.
const FORMAT_V1: u8 = 1;

/// Length in bytes of a tree-node key: `label_len (u32 BE) || label_val`.
pub const NODE_KEY_LEN: usize = 36;

/// Flag bits of an encoded [`TreeNode`].
mod flags {
    /// The node has a left child (stored in full).
    pub const LEFT: u8 = 1 << 0;
    /// The node has a right child (stored in full).
    pub const RIGHT: u8 = 1 << 1;
    /// The parent is a prefix of the record's label: only its length is stored.
    pub const PARENT_IS_PREFIX: u8 = 1 << 2;
    /// Previous node only: parent identical to the latest node's.
    pub const SAME_PARENT: u8 = 1 << 3;
    /// Previous node only: left child identical to the latest node's.
    pub const SAME_LEFT: u8 = 1 << 4;
    /// Previous node only: right child identical to the latest node's.
    pub const SAME_RIGHT: u8 = 1 << 5;
    /// The node's own label differs from the record's and is stored in full
    /// (akd never writes this, but the format does not assume it).
    pub const OWN_LABEL: u8 = 1 << 6;
    /// Every bit this format defines.
    pub const ALL: u8 = 0x7f;
}

// ---------- keys ----------

/// The tree-node key of `label`.
pub fn node_key(label: &NodeLabel) -> [u8; NODE_KEY_LEN] {
    let mut key = [0u8; NODE_KEY_LEN];
    key[..4].copy_from_slice(&label.label_len.to_be_bytes());
    key[4..].copy_from_slice(&label.label_val);
    key
}

/// The label a tree-node key stands for.
pub fn node_label_from_key(key: &[u8]) -> Result<NodeLabel, DecodeError> {
    let mut r = Reader::new(key);
    let len = r.u32_be("node key length")?;
    let val = r.array32("node key value")?;
    r.finish()?;
    Ok(NodeLabel::new(val, len))
}

/// `len(user) || user`: the prefix every value-state key of `user` starts with.
pub fn user_prefix(user: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + user.len() + 8);
    // Labels are bounded well below 4 GiB by the intake; saturate rather than wrap.
    let len = u32::try_from(user.len()).unwrap_or(u32::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(user);
    key
}

/// The value-state key of `user` at `epoch`.
pub fn value_state_key(user: &[u8], epoch: u64) -> Vec<u8> {
    let mut key = user_prefix(user);
    key.extend_from_slice(&epoch.to_be_bytes());
    key
}

/// Splits a value-state key into `(user, epoch)`.
pub fn split_value_state_key(key: &[u8]) -> Result<(&[u8], u64), DecodeError> {
    let mut r = Reader::new(key);
    let len = r.u32_be("user length")? as usize;
    let user = r.take(len, "user")?;
    let epoch = r.u64_be("epoch")?;
    r.finish()?;
    Ok((user, epoch))
}

// ---------- Azks ----------

/// Encodes the singleton `Azks` record.
pub fn encode_azks(azks: &Azks) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(FORMAT_V1);
    out.extend_from_slice(&azks.latest_epoch.to_be_bytes());
    out.extend_from_slice(&azks.num_nodes.to_be_bytes());
    out
}

/// Decodes the singleton `Azks` record.
pub fn decode_azks(bytes: &[u8]) -> Result<Azks, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let latest_epoch = r.u64_be("latest_epoch")?;
    let num_nodes = r.u64_be("num_nodes")?;
    r.finish()?;
    Ok(Azks {
        latest_epoch,
        num_nodes,
    })
}

// ---------- ValueState ----------

/// Encodes a value state; its user and epoch live in the key.
pub fn encode_value_state(state: &ValueState) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 10 + 3 + 32 + state.value.len());
    out.push(FORMAT_V1);
    put_varint(&mut out, state.version);
    put_label(&mut out, &state.label);
    out.extend_from_slice(&state.value);
    out
}

/// Decodes a value state stored under `(user, epoch)`.
pub fn decode_value_state(user: &[u8], epoch: u64, bytes: &[u8]) -> Result<ValueState, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let version = r.varint("version")?;
    let label = r.label("label")?;
    let value = r.rest().to_vec();
    Ok(ValueState {
        value: AkdValue(value),
        version,
        label,
        epoch,
        username: AkdLabel(user.to_vec()),
    })
}

/// Reads only `(version, value)` of an encoded value state: what
/// `get_user_state_versions` returns.
pub fn decode_version_and_value(bytes: &[u8]) -> Result<(u64, AkdValue), DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let version = r.varint("version")?;
    let _label = r.label("label")?;
    Ok((version, AkdValue(r.rest().to_vec())))
}

// ---------- TreeNodeWithPreviousValue ----------

/// Encodes a tree-node record; its label lives in the key.
pub fn encode_tree_node(record: &TreeNodeWithPreviousValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * 100);
    out.push(FORMAT_V1);
    put_node(&mut out, &record.label, &record.latest_node, None);
    match &record.previous_node {
        None => out.push(0),
        Some(prev) => {
            out.push(1);
            put_node(&mut out, &record.label, prev, Some(&record.latest_node));
        }
    }
    out
}

/// Decodes a tree-node record stored under `label`.
pub fn decode_tree_node(label: NodeLabel, bytes: &[u8]) -> Result<TreeNodeWithPreviousValue, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let latest_node = r.node(&label, None)?;
    let previous_node = match r.u8("previous flag")? {
        0 => None,
        1 => Some(r.node(&label, Some(&latest_node))?),
        other => {
            return Err(DecodeError::Invalid {
                field: "previous flag",
                detail: format!("{other}"),
            });
        }
    };
    r.finish()?;
    Ok(TreeNodeWithPreviousValue {
        label,
        latest_node,
        previous_node,
    })
}

fn node_type_code(t: TreeNodeType) -> u8 {
    match t {
        TreeNodeType::Leaf => 1,
        TreeNodeType::Root => 2,
        TreeNodeType::Interior => 3,
    }
}

/// Whether `parent` can be stored as a length only: it is `own` cut to its length.
fn is_prefix_of(parent: &NodeLabel, own: &NodeLabel) -> bool {
    parent.label_len < 256 && parent.label_len <= own.label_len && own.get_prefix(parent.label_len) == *parent
}

fn put_node(out: &mut Vec<u8>, record_label: &NodeLabel, node: &TreeNode, base: Option<&TreeNode>) {
    let mut f = 0u8;
    if node.left_child.is_some() {
        f |= flags::LEFT;
    }
    if node.right_child.is_some() {
        f |= flags::RIGHT;
    }
    if node.label != *record_label {
        f |= flags::OWN_LABEL;
    }
    let same_parent = base.is_some_and(|b| b.parent == node.parent);
    let same_left = base.is_some_and(|b| b.left_child == node.left_child);
    let same_right = base.is_some_and(|b| b.right_child == node.right_child);
    if same_parent {
        f |= flags::SAME_PARENT;
    } else if is_prefix_of(&node.parent, &node.label) {
        f |= flags::PARENT_IS_PREFIX;
    }
    if same_left {
        f |= flags::SAME_LEFT;
    }
    if same_right {
        f |= flags::SAME_RIGHT;
    }
    out.push(f);
    out.push(node_type_code(node.node_type));
    if f & flags::OWN_LABEL != 0 {
        put_label(out, &node.label);
    }
    put_varint(out, node.last_epoch);
    put_varint(out, node.min_descendant_epoch);
    if !same_parent {
        if f & flags::PARENT_IS_PREFIX != 0 {
            put_varint(out, u64::from(node.parent.label_len));
        } else {
            put_label(out, &node.parent);
        }
    }
    if let (Some(left), false) = (&node.left_child, same_left) {
        put_label(out, left);
    }
    if let (Some(right), false) = (&node.right_child, same_right) {
        put_label(out, right);
    }
    out.extend_from_slice(&node.hash.0);
}

fn put_label(out: &mut Vec<u8>, label: &NodeLabel) {
    put_varint(out, u64::from(label.label_len));
    out.extend_from_slice(&label.label_val);
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    let mut buf = unsigned_varint::encode::u64_buffer();
    out.extend_from_slice(unsigned_varint::encode::u64(v, &mut buf));
}

/// A cursor over an untrusted byte string; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n - self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn array32(&mut self, field: &'static str) -> Result<[u8; 32], DecodeError> {
        self.array::<32>(field)
    }

    fn u32_be(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array::<4>(field)?))
    }

    fn u64_be(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array::<8>(field)?))
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let (v, rest) = unsigned_varint::decode::u64(self.bytes).map_err(|e| DecodeError::Invalid {
            field,
            detail: format!("varint: {e}"),
        })?;
        self.bytes = rest;
        Ok(v)
    }

    fn version(&mut self) -> Result<(), DecodeError> {
        match self.u8("format version")? {
            FORMAT_V1 => Ok(()),
            other => Err(DecodeError::Version(other)),
        }
    }

    fn label_len(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let len = self.varint(field)?;
        if len > 256 {
            return Err(DecodeError::Invalid {
                field,
                detail: format!("label length {len} > 256 bits"),
            });
        }
        Ok(len as u32)
    }

    fn label(&mut self, field: &'static str) -> Result<NodeLabel, DecodeError> {
        let len = self.label_len(field)?;
        Ok(NodeLabel::new(self.array32(field)?, len))
    }

    fn node(&mut self, record_label: &NodeLabel, base: Option<&TreeNode>) -> Result<TreeNode, DecodeError> {
        let f = self.u8("node flags")?;
        let same = flags::SAME_PARENT | flags::SAME_LEFT | flags::SAME_RIGHT;
        if f & !flags::ALL != 0
            || (base.is_none() && f & same != 0)
            || (f & flags::SAME_PARENT != 0 && f & flags::PARENT_IS_PREFIX != 0)
        {
            return Err(DecodeError::Invalid {
                field: "node flags",
                detail: format!("{f:#04x}"),
            });
        }
        let node_type = match self.u8("node type")? {
            1 => TreeNodeType::Leaf,
            2 => TreeNodeType::Root,
            3 => TreeNodeType::Interior,
            other => {
                return Err(DecodeError::Invalid {
                    field: "node type",
                    detail: format!("{other}"),
                });
            }
        };
        let label = if f & flags::OWN_LABEL != 0 {
            self.label("own label")?
        } else {
            *record_label
        };
        let last_epoch = self.varint("last_epoch")?;
        let min_descendant_epoch = self.varint("min_descendant_epoch")?;
        let parent = match base {
            Some(b) if f & flags::SAME_PARENT != 0 => b.parent,
            _ if f & flags::PARENT_IS_PREFIX != 0 => {
                let len = self.label_len("parent length")?;
                if len >= 256 || len > label.label_len {
                    return Err(DecodeError::Invalid {
                        field: "parent length",
                        detail: format!("{len} is not a proper prefix length of {}", label.label_len),
                    });
                }
                label.get_prefix(len)
            }
            _ => self.label("parent")?,
        };
        let left_child = self.child(
            f,
            flags::LEFT,
            flags::SAME_LEFT,
            base.map(|b| b.left_child),
            "left child",
        )?;
        let right_child = self.child(
            f,
            flags::RIGHT,
            flags::SAME_RIGHT,
            base.map(|b| b.right_child),
            "right child",
        )?;
        let hash = AzksValue(self.array32("hash")?);
        Ok(TreeNode {
            label,
            last_epoch,
            min_descendant_epoch,
            parent,
            node_type,
            left_child,
            right_child,
            hash,
        })
    }

    fn child(
        &mut self,
        f: u8,
        present: u8,
        same: u8,
        base: Option<Option<NodeLabel>>,
        field: &'static str,
    ) -> Result<Option<NodeLabel>, DecodeError> {
        let is_present = f & present != 0;
        match base {
            Some(base_child) if f & same != 0 => {
                if base_child.is_some() != is_present {
                    return Err(DecodeError::Invalid {
                        field,
                        detail: "presence flag contradicts the latest node".into(),
                    });
                }
                Ok(base_child)
            }
            _ if is_present => Ok(Some(self.label(field)?)),
            _ => Ok(None),
        }
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.bytes.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_label() -> impl Strategy<Value = NodeLabel> {
        (any::<[u8; 32]>(), 0u32..=256).prop_map(|(v, l)| NodeLabel::new(v, l))
    }

    fn arb_node(own: NodeLabel) -> impl Strategy<Value = TreeNode> {
        (
            prop_oneof![Just(own), arb_label()],
            any::<u64>(),
            any::<u64>(),
            prop_oneof![(0u32..=256).prop_map(move |l| own.get_prefix(l)), arb_label()],
            prop_oneof![
                Just(TreeNodeType::Leaf),
                Just(TreeNodeType::Root),
                Just(TreeNodeType::Interior)
            ],
            proptest::option::of(arb_label()),
            proptest::option::of(arb_label()),
            any::<[u8; 32]>(),
        )
            .prop_map(
                |(label, last_epoch, min_descendant_epoch, parent, node_type, l, r, h)| TreeNode {
                    label,
                    last_epoch,
                    min_descendant_epoch,
                    parent,
                    node_type,
                    left_child: l,
                    right_child: r,
                    hash: AzksValue(h),
                },
            )
    }

    fn arb_record() -> impl Strategy<Value = TreeNodeWithPreviousValue> {
        arb_label().prop_flat_map(|label| {
            (
                arb_node(label),
                proptest::option::of(arb_node(label)),
                any::<[bool; 3]>(),
            )
                .prop_map(move |(latest, prev, same)| {
                    // Make "previous shares fields with latest" common, as in akd's real records.
                    let prev = prev.map(|mut p| {
                        if same[0] {
                            p.parent = latest.parent;
                        }
                        if same[1] {
                            p.left_child = latest.left_child;
                        }
                        if same[2] {
                            p.right_child = latest.right_child;
                        }
                        p
                    });
                    TreeNodeWithPreviousValue {
                        label,
                        latest_node: latest,
                        previous_node: prev,
                    }
                })
        })
    }

    proptest! {
        #[test]
        fn tree_node_roundtrips(record in arb_record()) {
            let bytes = encode_tree_node(&record);
            prop_assert_eq!(decode_tree_node(record.label, &bytes), Ok(record));
        }

        #[test]
        fn value_state_roundtrips(user in proptest::collection::vec(any::<u8>(), 0..64), epoch: u64,
                                  version: u64, label in arb_label(), value in proptest::collection::vec(any::<u8>(), 0..100)) {
            let state = ValueState { value: AkdValue(value), version, label, epoch, username: AkdLabel(user.clone()) };
            let key = value_state_key(&user, epoch);
            let (u, e) = split_value_state_key(&key).expect("own key splits");
            prop_assert_eq!(u, &user[..]);
            prop_assert_eq!(e, epoch);
            let bytes = encode_value_state(&state);
            prop_assert_eq!(decode_version_and_value(&bytes), Ok((version, state.value.clone())));
            prop_assert_eq!(decode_value_state(&user, epoch, &bytes), Ok(state));
        }

        #[test]
        fn azks_roundtrips(latest_epoch: u64, num_nodes: u64) {
            let azks = Azks { latest_epoch, num_nodes };
            let got = decode_azks(&encode_azks(&azks)).expect("own encoding decodes");
            prop_assert_eq!((got.latest_epoch, got.num_nodes), (latest_epoch, num_nodes));
        }

        /// Decoding arbitrary bytes never panics (it may succeed or fail).
        #[test]
        fn decoders_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..400), label in arb_label()) {
            let _ = decode_tree_node(label, &bytes);
            let _ = decode_value_state(b"u", 1, &bytes);
            let _ = decode_version_and_value(&bytes);
            let _ = decode_azks(&bytes);
            let _ = node_label_from_key(&bytes);
            let _ = split_value_state_key(&bytes);
        }

        /// Every strict prefix of a valid encoding is rejected, not misread.
        #[test]
        fn truncation_is_detected(record in arb_record(), cut in any::<prop::sample::Index>()) {
            let bytes = encode_tree_node(&record);
            let n = cut.index(bytes.len());
            prop_assert!(decode_tree_node(record.label, &bytes[..n]).is_err());
        }
    }

    #[test]
    fn user_prefixes_do_not_collide() {
        // "ab" at an epoch whose bytes start with 'c' must not look like user "abc".
        let k1 = value_state_key(b"ab", u64::from_be_bytes(*b"c\0\0\0\0\0\0\x01"));
        assert!(!k1.starts_with(&user_prefix(b"abc")));
        assert!(k1.starts_with(&user_prefix(b"ab")));
    }

    #[test]
    fn unknown_version_is_typed() {
        assert_eq!(decode_azks(&[9, 0]).err(), Some(DecodeError::Version(9)));
    }
}
