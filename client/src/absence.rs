//! Absence proofs: a verifiable "label L was never in the directory at epoch e".
//!
//! akd verifies a lookup of version `v` of L (and a history holding it) only with the
//! node `VRF(L, Fresh, 2^floor(log2 v))`, its marker version, in the tree, and `v` is at
//! most the epoch. So L is absent at epoch e when none of the nodes
//! `VRF(L, Fresh, 1), VRF(L, Fresh, 2), VRF(L, Fresh, 4), ...` up to e is in e's tree,
//! and an absence proof is, for each of those versions, the VRF proof of the node label
//! (the client derives the label from it under the pinned VRF key: the directory cannot
//! choose it) and a non-membership proof of that node under the head's root. Version 1
//! alone would not do: akd's lookup verifier never looks at version 1 of a label at
//! version 2 or more, so a directory could insert version 2 alone, show it to senders,
//! and prove version 1 absent to everyone else under the same root.
//!
//! akd_core's verifier of non-membership proofs is crate-private, so this is our own,
//! written from its algorithm (`akd_core/src/verify/base.rs`), with one check more: a
//! child of the longest prefix must not itself be a prefix of the label. akd 0.13 omits
//! it, and without it an ancestor of a node that *is* in the tree, two levels up or
//! more, passes for its longest prefix: a present label "proven" absent, or (in akd's
//! lookup and history proofs, which carry non-membership proofs too) a newer version
//! hidden. [`check_children`] is also applied to those (`crate::verify`).
//! `directory/tests/absence_vs_akd.rs` holds this verifier to akd's on random trees, and
//! docs/decisions/013-absence-proofs.md says more.

use crate::KtConfig;
use crate::wire::DecodedAbsence;
use akd_core::configuration::Configuration;
use akd_core::ecvrf::{Proof, VRFKeyStorage, VRFPublicKey, VrfError};
use akd_core::hash::Digest;
use akd_core::{AkdLabel, Direction, MembershipProof, NodeLabel, NonMembershipProof, PrefixOrdering, VersionFreshness};

/// Why an absence proof (or a non-membership proof inside another proof) did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbsenceError {
    /// The pinned VRF public key is not a valid key.
    #[error("the VRF public key is not valid: {0}")]
    VrfKey(String),
    /// The VRF proof is not 80 bytes of a valid proof.
    #[error("the VRF proof is malformed: {0}")]
    VrfProofFormat(String),
    /// The VRF proof does not verify for `(label, Fresh, 1)` under the pinned key.
    #[error("the VRF proof is not for this label and version under the pinned VRF key: {0}")]
    VrfProof(String),
    /// The non-membership proof is about another node than the one the VRF proof gives.
    #[error("the non-membership proof is for node {got}, but the label and version give node {expected}")]
    OtherNode {
        /// The node label derived from the VRF proof.
        expected: NodeLabel,
        /// The one the proof names.
        got: NodeLabel,
    },
    /// A child of the longest prefix is the node itself: it is in the tree.
    #[error("a child of the longest prefix is the node itself: the label is present")]
    ChildIsNode,
    /// A child of the longest prefix is a prefix of the node: the node may be below it,
    /// so the "longest" prefix is not the longest.
    #[error("child {child} of the longest prefix is a prefix of the node: it is not the longest prefix")]
    ChildIsPrefix {
        /// That child's label.
        child: NodeLabel,
    },
    /// The longest prefix is not a prefix of the node.
    #[error("the longest prefix {0} is not a prefix of the node")]
    NotPrefix(NodeLabel),
    /// The longest prefix is not where its two children diverge.
    #[error("the longest prefix {claimed} is not the children's longest common prefix {computed}")]
    NotChildrenPrefix {
        /// The proof's longest prefix.
        claimed: NodeLabel,
        /// The children's.
        computed: NodeLabel,
    },
    /// The membership proof is of another node, or of another hash, than the longest
    /// prefix with these children.
    #[error("the membership proof is not of the longest prefix with these two children")]
    PrefixNode,
    /// The membership proof of the longest prefix does not lead to the head's root.
    #[error("the longest prefix's membership proof does not lead to the head's root")]
    Root,
    /// A label in the proof is longer than the 256 bits of a node label.
    #[error("a label of {0} bits, longer than a node label")]
    LabelLength(u32),
    /// A membership proof's path does not lead to its node: a step's label is not a
    /// shorter prefix of the node than the next one's, its direction is not the node's
    /// bit there, or its sibling is not on the other side. akd's verifier only folds
    /// hashes, so a tree built with a node off its path (which akd never builds, and an
    /// auditor's append-only check refuses) could prove it both present and absent.
    #[error("membership proof of {node}: step {step} does not lie on the path to the node")]
    Path {
        /// The node the proof is of.
        node: NodeLabel,
        /// The step, counted from the root.
        step: usize,
    },
    /// The proof does not cover exactly the marker versions up to the head's epoch.
    #[error("the proof covers versions {got:?}, not the marker versions {expected:?} up to the epoch")]
    MarkerVersions {
        /// `1, 2, 4, ...` up to the epoch.
        expected: Vec<u64>,
        /// What the proof holds.
        got: Vec<u64>,
    },
    /// The part of the proof for one marker version failed.
    #[error("marker version {version}: {reason}")]
    AtVersion {
        /// The version.
        version: u64,
        reason: Box<AbsenceError>,
    },
}

impl AbsenceError {
    /// The reason itself, without the marker version it was found at.
    pub fn innermost(&self) -> &AbsenceError {
        match self {
            AbsenceError::AtVersion { reason, .. } => reason.innermost(),
            other => other,
        }
    }
}

/// The marker versions an absence proof at `epoch` covers: `1, 2, 4, ...` up to `epoch`
/// (version 1 alone at epoch 0, where no version can verify anyway).
pub fn marker_versions(epoch: u64) -> Vec<u64> {
    let mut out = vec![1u64];
    while let Some(next) = out.last().and_then(|v| v.checked_mul(2)).filter(|v| *v <= epoch) {
        out.push(next);
    }
    out
}

/// A VRF "key storage" that holds no key: akd derives a node label from a VRF proof
/// with a provided trait method that never touches the key, and this is how a client
/// calls it.
#[derive(Clone)]
struct NoSecret;

#[async_trait::async_trait]
impl VRFKeyStorage for NoSecret {
    async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
        Err(VrfError::SigningKey("a client holds no VRF secret".into()))
    }
}

/// The node label of `(label, Fresh, version)` that `vrf_proof` proves under
/// `vrf_public_key`: the VRF proof is verified, then the label is its output (akd's
/// own derivation, so client and directory agree by construction).
pub fn fresh_node(
    vrf_public_key: &[u8],
    label: &AkdLabel,
    version: u64,
    vrf_proof: &[u8],
) -> Result<NodeLabel, AbsenceError> {
    node_of(vrf_public_key, label, VersionFreshness::Fresh, version, vrf_proof)
}

fn node_of(
    vrf_public_key: &[u8],
    label: &AkdLabel,
    freshness: VersionFreshness,
    version: u64,
    vrf_proof: &[u8],
) -> Result<NodeLabel, AbsenceError> {
    let key = VRFPublicKey::try_from(vrf_public_key).map_err(|e| AbsenceError::VrfKey(e.to_string()))?;
    let proof = Proof::try_from(vrf_proof).map_err(|e| AbsenceError::VrfProofFormat(e.to_string()))?;
    let input = KtConfig::get_hash_from_label_input(label, freshness, version);
    key.verify(&proof, &input)
        .map_err(|e| AbsenceError::VrfProof(e.to_string()))?;
    // The provided method is an `async fn` that awaits nothing: one poll finishes it.
    let mut derive = NoSecret.get_node_label_from_vrf_proof(proof);
    match derive
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(node) => Ok(node),
        std::task::Poll::Pending => Err(AbsenceError::VrfProofFormat(
            "deriving the node label did not complete".into(),
        )),
    }
}

/// The check akd's non-membership verifier lacks: neither child of the longest prefix
/// is the node or a prefix of it. (akd's empty placeholder child, label length 0, is a
/// prefix of everything by `is_prefix_of` and is skipped: only the root can have one,
/// and the parent hash binds it.)
pub fn check_children(proof: &NonMembershipProof) -> Result<(), AbsenceError> {
    let empty = KtConfig::empty_label();
    for child in &proof.longest_prefix_children {
        if child.label == proof.label {
            return Err(AbsenceError::ChildIsNode);
        }
        if child.label != empty && child.label.is_prefix_of(&proof.label) {
            return Err(AbsenceError::ChildIsPrefix { child: child.label });
        }
    }
    Ok(())
}

/// The two checks akd's verifiers lack, on a non-membership proof that akd's verifier
/// also runs on (inside lookup and history proofs): [`check_children`] and
/// [`check_path`] of the longest prefix's membership proof.
pub fn check_beyond_akd(proof: &NonMembershipProof) -> Result<(), AbsenceError> {
    check_children(proof)?;
    check_path(&proof.longest_prefix_membership_proof)
}

/// Verifies that `proof` shows `node` is not in the tree of `root_hash`.
///
/// akd's checks, in its order, plus [`check_children`]:
/// 1. the proof is about `node`;
/// 2. neither child is `node` or a prefix of it;
/// 3. the longest prefix is a prefix of `node`;
/// 4. it is the children's longest common prefix (the root when one child is akd's
///    empty placeholder);
/// 5. the membership proof is of that prefix, with the hash of those two children;
/// 6. its steps lie on the path to the prefix ([`check_path`]; akd does not check it);
/// 7. the membership proof leads to `root_hash`.
pub fn verify_nonmembership(
    root_hash: Digest,
    node: NodeLabel,
    proof: &NonMembershipProof,
) -> Result<(), AbsenceError> {
    let labels = [
        proof.label,
        proof.longest_prefix,
        proof.longest_prefix_children[0].label,
        proof.longest_prefix_children[1].label,
        proof.longest_prefix_membership_proof.label,
    ];
    if let Some(long) = labels.iter().find(|l| l.get_len() > 256) {
        return Err(AbsenceError::LabelLength(long.get_len()));
    }
    if proof.label != node {
        return Err(AbsenceError::OtherNode {
            expected: node,
            got: proof.label,
        });
    }
    check_children(proof)?;
    if !proof.longest_prefix.is_prefix_of(&node) {
        return Err(AbsenceError::NotPrefix(proof.longest_prefix));
    }
    let [left, right] = &proof.longest_prefix_children;
    let mut computed = left.label.get_longest_common_prefix::<KtConfig>(right.label);
    if computed == KtConfig::empty_label() {
        computed = NodeLabel::root();
    }
    if proof.longest_prefix != computed {
        return Err(AbsenceError::NotChildrenPrefix {
            claimed: proof.longest_prefix,
            computed,
        });
    }
    let prefix_hash = KtConfig::compute_parent_hash_from_children(
        &left.value,
        &left.label.value::<KtConfig>(),
        &right.value,
        &right.label.value::<KtConfig>(),
    );
    let membership = &proof.longest_prefix_membership_proof;
    if membership.label != computed || membership.hash_val != prefix_hash {
        return Err(AbsenceError::PrefixNode);
    }
    check_path(membership)?;
    if membership_root(membership) != root_hash {
        return Err(AbsenceError::Root);
    }
    Ok(())
}

/// Checks that a membership proof's steps lie on the path from the root to its node:
/// the first step is the root, each step's label is a prefix of the node strictly
/// longer than the one before and shorter than the node, its direction is the node's
/// bit after that prefix, and its sibling (unless akd's empty placeholder, which only
/// the root has) lies on the other side. Every proof akd builds passes
/// (`get_lcp_node_label_with_membership_proof` walks that path).
pub fn check_path(proof: &MembershipProof) -> Result<(), AbsenceError> {
    let node = proof.label;
    let bad = |step| AbsenceError::Path { node, step };
    let empty = KtConfig::empty_label();
    let mut previous: Option<u32> = None;
    for (i, step) in proof.sibling_proofs.iter().enumerate() {
        let len = step.label.get_len();
        if (i == 0 && step.label != NodeLabel::root()) || previous.is_some_and(|p| len <= p) {
            return Err(bad(i));
        }
        let towards = match step.label.get_prefix_ordering(node) {
            PrefixOrdering::WithZero => Direction::Left,
            PrefixOrdering::WithOne => Direction::Right,
            PrefixOrdering::Invalid => return Err(bad(i)),
        };
        if step.direction != towards {
            return Err(bad(i));
        }
        let sibling = step.siblings[0].label;
        if sibling != empty {
            let other = match step.label.get_prefix_ordering(sibling) {
                PrefixOrdering::WithZero => Direction::Left,
                PrefixOrdering::WithOne => Direction::Right,
                PrefixOrdering::Invalid => return Err(bad(i)),
            };
            if other == towards {
                return Err(bad(i));
            }
        }
        previous = Some(len);
    }
    Ok(())
}

/// The root hash a membership proof leads to: the node's hash folded up with each
/// sibling, bottom first (akd's `verify_membership`).
fn membership_root(proof: &MembershipProof) -> Digest {
    let mut value = proof.hash_val;
    let mut label = proof.label;
    for step in proof.sibling_proofs.iter().rev() {
        let sibling = &step.siblings[0];
        value = match step.direction {
            Direction::Left => KtConfig::compute_parent_hash_from_children(
                &value,
                &label.value::<KtConfig>(),
                &sibling.value,
                &sibling.label.value::<KtConfig>(),
            ),
            Direction::Right => KtConfig::compute_parent_hash_from_children(
                &sibling.value,
                &sibling.label.value::<KtConfig>(),
                &value,
                &label.value::<KtConfig>(),
            ),
        };
        label = step.label;
    }
    KtConfig::compute_root_hash_from_val(&value)
}

/// Verifies that `label` is absent from the tree of `root_hash` at `epoch`: the proof
/// covers exactly [`marker_versions`]`(epoch)`, and for each, the VRF proof gives the
/// node of `(label, Fresh, version)` under the pinned key and the non-membership proof
/// shows that node is not in the tree.
pub fn verify(
    vrf_public_key: &[u8],
    root_hash: Digest,
    epoch: u64,
    label: &AkdLabel,
    absence: &DecodedAbsence,
) -> Result<(), AbsenceError> {
    let expected = marker_versions(epoch);
    let got: Vec<u64> = absence.markers.iter().map(|m| m.version).collect();
    if got != expected {
        return Err(AbsenceError::MarkerVersions { expected, got });
    }
    for marker in &absence.markers {
        let at = |reason| AbsenceError::AtVersion {
            version: marker.version,
            reason: Box::new(reason),
        };
        let node = fresh_node(vrf_public_key, label, marker.version, &marker.vrf_proof).map_err(at)?;
        verify_nonmembership(root_hash, node, &marker.proof).map_err(at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use akd_core::AzksElement;

    fn element(bits: &[u8], len: u32, value: u8) -> AzksElement {
        let mut val = [0u8; 32];
        val[..bits.len()].copy_from_slice(bits);
        AzksElement {
            label: NodeLabel::new(val, len),
            value: akd_core::AzksValue([value; 32]),
        }
    }

    /// A hand-built tree: root → (0…: leaf a, 1: interior p), p → (10…: leaf b, 11…: leaf c).
    /// Returns the root hash and the non-membership proof akd would build for `node`
    /// under the root (longest prefix: the root).
    fn root_proof(node: NodeLabel) -> (Digest, NonMembershipProof) {
        let a = element(&[0x00], 256, 1);
        let p = element(&[0x80], 1, 2);
        let value = KtConfig::compute_parent_hash_from_children(
            &a.value,
            &a.label.value::<KtConfig>(),
            &p.value,
            &p.label.value::<KtConfig>(),
        );
        let root = KtConfig::compute_root_hash_from_val(&value);
        let proof = NonMembershipProof {
            label: node,
            longest_prefix: NodeLabel::root(),
            longest_prefix_children: [a, p],
            longest_prefix_membership_proof: MembershipProof {
                label: NodeLabel::root(),
                hash_val: value,
                sibling_proofs: vec![],
            },
        };
        (root, proof)
    }

    #[test]
    fn a_node_between_the_roots_children_is_absent() {
        // 01…: not under a (00…, a leaf of its own) and not under p (1).
        let node = NodeLabel::new([0x40; 32], 256);
        let (root, proof) = root_proof(node);
        assert_eq!(verify_nonmembership(root, node, &proof), Ok(()));
    }

    #[test]
    fn a_node_below_an_interior_child_is_not_proven_absent() {
        // 1…: below p, which the proof shows as a child: p is a longer prefix.
        let node = NodeLabel::new([0xC0; 32], 256);
        let (root, proof) = root_proof(node);
        assert!(matches!(
            verify_nonmembership(root, node, &proof),
            Err(AbsenceError::ChildIsPrefix { .. })
        ));
    }

    #[test]
    fn a_proof_for_another_node_is_refused() {
        let node = NodeLabel::new([0x40; 32], 256);
        let (root, proof) = root_proof(NodeLabel::new([0x41; 32], 256));
        assert!(matches!(
            verify_nonmembership(root, node, &proof),
            Err(AbsenceError::OtherNode { .. })
        ));
    }

    #[test]
    fn swapped_children_do_not_hash_to_the_prefix() {
        let node = NodeLabel::new([0x40; 32], 256);
        let (root, mut proof) = root_proof(node);
        proof.longest_prefix_children.swap(0, 1);
        assert_eq!(verify_nonmembership(root, node, &proof), Err(AbsenceError::PrefixNode));
    }

    #[test]
    fn another_root_is_refused() {
        let node = NodeLabel::new([0x40; 32], 256);
        let (mut root, proof) = root_proof(node);
        root[0] ^= 1;
        assert_eq!(verify_nonmembership(root, node, &proof), Err(AbsenceError::Root));
    }

    /// A tree akd never builds: root → (0…: leaf a, 10: interior p), p → (leaf b 10…,
    /// leaf m 11…). m is off its path (11 is not below 10), so the root's honest-looking
    /// absence proof of m verifies, and so does the hash fold of m's membership proof:
    /// [`check_path`] is what refuses the second, so the two never both verify.
    #[test]
    fn a_node_off_its_path_is_not_proven_present() {
        let a = element(&[0x00], 256, 1);
        let p_label = NodeLabel::new([0x80; 32], 2).get_prefix(2);
        let b = element(&[0x80], 256, 3);
        let m = element(&[0xC0], 256, 4);
        let parent = |l: &AzksElement, r: &AzksElement| {
            KtConfig::compute_parent_hash_from_children(
                &l.value,
                &l.label.value::<KtConfig>(),
                &r.value,
                &r.label.value::<KtConfig>(),
            )
        };
        let p = AzksElement {
            label: p_label,
            value: parent(&b, &m),
        };
        let root_value = parent(&a, &p);
        let root = KtConfig::compute_root_hash_from_val(&root_value);
        let present = MembershipProof {
            label: m.label,
            hash_val: m.value,
            sibling_proofs: vec![
                akd_core::SiblingProof {
                    label: NodeLabel::root(),
                    siblings: [a],
                    direction: Direction::Right,
                },
                akd_core::SiblingProof {
                    label: p_label,
                    siblings: [b],
                    direction: Direction::Right,
                },
            ],
        };
        assert_eq!(membership_root(&present), root, "akd's fold accepts it");
        assert_eq!(check_path(&present), Err(AbsenceError::Path { node: m.label, step: 1 }));
        let absent = NonMembershipProof {
            label: m.label,
            longest_prefix: NodeLabel::root(),
            longest_prefix_children: [a, p],
            longest_prefix_membership_proof: MembershipProof {
                label: NodeLabel::root(),
                hash_val: root_value,
                sibling_proofs: vec![],
            },
        };
        assert_eq!(verify_nonmembership(root, m.label, &absent), Ok(()));
    }

    #[test]
    fn marker_versions_are_the_powers_of_two_up_to_the_epoch() {
        assert_eq!(marker_versions(0), vec![1]);
        assert_eq!(marker_versions(1), vec![1]);
        assert_eq!(marker_versions(3), vec![1, 2]);
        assert_eq!(marker_versions(4), vec![1, 2, 4]);
        assert_eq!(marker_versions(1000), vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512]);
        assert_eq!(marker_versions(u64::MAX).len(), 64);
    }

    #[test]
    fn a_label_longer_than_a_node_label_is_refused() {
        let node = NodeLabel::new([0x40; 32], 256);
        let (root, mut proof) = root_proof(node);
        proof.longest_prefix_children[1].label = NodeLabel::new([0x80; 32], u32::MAX);
        assert_eq!(
            verify_nonmembership(root, node, &proof),
            Err(AbsenceError::LabelLength(u32::MAX))
        );
    }

    #[test]
    fn a_malformed_vrf_proof_is_an_error_not_a_panic() {
        let key = [9u8; 32];
        for proof in [&[][..], &[0u8; 79][..], &[0xFFu8; 80][..], &[0u8; 81][..]] {
            assert!(fresh_node(&key, &AkdLabel::from("a"), 1, proof).is_err());
        }
        assert!(matches!(
            fresh_node(&[1, 2, 3], &AkdLabel::from("a"), 1, &[0u8; 80]),
            Err(AbsenceError::VrfKey(_))
        ));
    }
}
