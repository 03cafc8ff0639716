//! Our absence verifier (`kt_client::absence`) held to akd's own non-membership
//! verifier (`verify_nonmembership_for_tests_only`, feature `public_tests`) on random
//! trees built by akd: both accept every genuine proof, and on mutated proofs they
//! agree, except where ours is stricter on purpose: a proof whose "longest prefix" has
//! a child that is itself a prefix of the label. akd 0.13 accepts those, and the last
//! tests here show what a directory does with that (a present label passed off as
//! absent; a superseded value passed off as current, through akd's lookup verifier).

use akd::append_only_zks::DEFAULT_AZKS_KEY;
use akd::ecvrf::VRFKeyStorage;
use akd::storage::memory::AsyncInMemoryDatabase;
use akd::storage::types::DbRecord;
use akd::storage::{Database, StorageManager};
use akd::verify::base::verify_nonmembership_for_tests_only;
use akd::{
    AkdLabel, AkdValue, Azks, AzksElement, AzksParallelismConfig, Configuration, Directory, NodeLabel,
    NonMembershipProof, VersionFreshness,
};
use kt_client::absence::{AbsenceError, fresh_node, verify, verify_nonmembership};
use kt_directory::KtConfig;
use kt_directory::vrf::VrfSecret;
use proptest::prelude::*;

type MemDirectory = Directory<KtConfig, AsyncInMemoryDatabase, VrfSecret>;

/// A directory holding `epochs` of labels, and a storage manager reading the same
/// database (akd's directory does not expose its own).
struct Tree {
    dir: MemDirectory,
    storage: StorageManager<AsyncInMemoryDatabase>,
    vrf: VrfSecret,
}

impl Tree {
    async fn new(epochs: &[Vec<String>]) -> Tree {
        let db = AsyncInMemoryDatabase::new();
        let storage = StorageManager::new_no_cache(db.clone());
        let vrf = VrfSecret::from_bytes([7; 32]);
        let dir = Directory::new(
            StorageManager::new_no_cache(db),
            vrf.clone(),
            AzksParallelismConfig::default(),
        )
        .await
        .expect("directory");
        for (e, labels) in epochs.iter().enumerate() {
            let updates = labels
                .iter()
                .map(|l| (AkdLabel::from(l.as_str()), AkdValue::from(format!("{l}@{e}").as_str())))
                .collect();
            dir.publish(updates).await.expect("publish");
        }
        Tree { dir, storage, vrf }
    }

    async fn root(&self) -> [u8; 32] {
        self.dir.get_epoch_hash().await.expect("epoch hash").1
    }

    async fn azks(&self) -> Azks {
        match self.storage.get::<Azks>(&DEFAULT_AZKS_KEY).await.expect("azks") {
            DbRecord::Azks(a) => a,
            _ => panic!("not an azks"),
        }
    }

    fn vrf_public(&self) -> Vec<u8> {
        self.vrf.public_key_bytes().to_vec()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

/// A mutation of one field of a non-membership proof.
#[derive(Debug, Clone)]
enum Mutation {
    SwapChildren,
    ChildValueBit(usize, usize),
    ChildLabelBit(usize, usize),
    ChildLabelLen(usize, u32),
    LongestPrefixLen(u32),
    LongestPrefixBit(usize),
    LabelBit(usize),
    MembershipHashBit(usize),
    MembershipLabelLen(u32),
    DropSibling(usize),
    FlipDirection(usize),
    SiblingValueBit(usize, usize),
    SiblingLabelBit(usize, usize),
    ChildToEmpty(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::SwapChildren),
        (0..2usize, 0..256usize).prop_map(|(c, b)| Mutation::ChildValueBit(c, b)),
        (0..2usize, 0..256usize).prop_map(|(c, b)| Mutation::ChildLabelBit(c, b)),
        (0..2usize, 0..=256u32).prop_map(|(c, l)| Mutation::ChildLabelLen(c, l)),
        (0..=256u32).prop_map(Mutation::LongestPrefixLen),
        (0..256usize).prop_map(Mutation::LongestPrefixBit),
        (0..256usize).prop_map(Mutation::LabelBit),
        (0..256usize).prop_map(Mutation::MembershipHashBit),
        (0..=256u32).prop_map(Mutation::MembershipLabelLen),
        (0..64usize).prop_map(Mutation::DropSibling),
        (0..64usize).prop_map(Mutation::FlipDirection),
        (0..64usize, 0..256usize).prop_map(|(s, b)| Mutation::SiblingValueBit(s, b)),
        (0..64usize, 0..256usize).prop_map(|(s, b)| Mutation::SiblingLabelBit(s, b)),
        (0..2usize).prop_map(Mutation::ChildToEmpty),
    ]
}

fn flip(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8 % bytes.len()] ^= 1 << (bit % 8);
}

fn flip_label(label: &mut NodeLabel, bit: usize) {
    let mut val = label.get_val();
    flip(&mut val, bit);
    *label = NodeLabel::new(val, label.get_len());
}

fn apply(proof: &mut NonMembershipProof, m: &Mutation) {
    let siblings = proof.longest_prefix_membership_proof.sibling_proofs.len();
    match *m {
        Mutation::SwapChildren => proof.longest_prefix_children.swap(0, 1),
        Mutation::ChildValueBit(c, b) => flip(&mut proof.longest_prefix_children[c].value.0, b),
        Mutation::ChildLabelBit(c, b) => flip_label(&mut proof.longest_prefix_children[c].label, b),
        Mutation::ChildLabelLen(c, l) => {
            let label = proof.longest_prefix_children[c].label;
            proof.longest_prefix_children[c].label = NodeLabel::new(label.get_val(), l);
        }
        Mutation::LongestPrefixLen(l) => {
            proof.longest_prefix = proof.label.get_prefix(l);
        }
        Mutation::LongestPrefixBit(b) => flip_label(&mut proof.longest_prefix, b),
        Mutation::LabelBit(b) => flip_label(&mut proof.label, b),
        Mutation::MembershipHashBit(b) => flip(&mut proof.longest_prefix_membership_proof.hash_val.0, b),
        Mutation::MembershipLabelLen(l) => {
            let label = proof.longest_prefix_membership_proof.label;
            proof.longest_prefix_membership_proof.label = NodeLabel::new(label.get_val(), l);
        }
        Mutation::DropSibling(i) if siblings > 0 => {
            proof
                .longest_prefix_membership_proof
                .sibling_proofs
                .remove(i % siblings);
        }
        Mutation::FlipDirection(i) if siblings > 0 => {
            let step = &mut proof.longest_prefix_membership_proof.sibling_proofs[i % siblings];
            step.direction = match step.direction {
                akd::Direction::Left => akd::Direction::Right,
                akd::Direction::Right => akd::Direction::Left,
            };
        }
        Mutation::SiblingValueBit(i, b) if siblings > 0 => {
            flip(
                &mut proof.longest_prefix_membership_proof.sibling_proofs[i % siblings].siblings[0]
                    .value
                    .0,
                b,
            );
        }
        Mutation::SiblingLabelBit(i, b) if siblings > 0 => {
            flip_label(
                &mut proof.longest_prefix_membership_proof.sibling_proofs[i % siblings].siblings[0].label,
                b,
            );
        }
        Mutation::ChildToEmpty(c) => {
            proof.longest_prefix_children[c] = AzksElement {
                label: KtConfig::empty_label(),
                value: KtConfig::empty_node_hash(),
            };
        }
        // Nothing to mutate in an empty path.
        _ => {}
    }
}

/// Labels `l0..l{n}`, spread over epochs of the given sizes.
fn epochs(sizes: &[usize]) -> Vec<Vec<String>> {
    let mut next = 0;
    sizes
        .iter()
        .map(|&n| {
            let labels = (next..next + n).map(|i| format!("l{i}")).collect();
            next += n;
            labels
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Genuine absence proofs verify under both; each mutation is judged alike, or
    /// refused by ours alone for the one reason akd does not check.
    #[test]
    fn ours_and_akds_agree(
        sizes in proptest::collection::vec(1..24usize, 1..4),
        absent in proptest::collection::vec("[a-z]{1,8}", 1..4),
        mutations in proptest::collection::vec(mutation(), 1..12),
    ) {
        rt().block_on(async {
            let tree = Tree::new(&epochs(&sizes)).await;
            let root = tree.root().await;
            let key = tree.vrf_public();
            for name in &absent {
                let label = AkdLabel::from(format!("absent-{name}").as_str());
                let (absence, epoch) = kt_directory::absence::prove(&tree.storage, &tree.vrf, &label)
                    .await
                    .expect("prove");
                prop_assert_eq!(verify(&key, root, epoch, &label, &absence), Ok(()));
                for marker in &absence.markers {
                    let node = fresh_node(&key, &label, marker.version, &marker.vrf_proof).expect("vrf");
                    let expected = tree
                        .vrf
                        .get_node_label::<KtConfig>(&label, VersionFreshness::Fresh, marker.version)
                        .await
                        .expect("node");
                    prop_assert_eq!(node, expected);
                    prop_assert!(verify_nonmembership_for_tests_only::<KtConfig>(root, &marker.proof).is_ok());
                    for m in &mutations {
                        let mut bad = marker.proof.clone();
                        apply(&mut bad, m);
                        // akd checks the proof against its own label; ours against the
                        // node the VRF gives, and the proof's label must be that node.
                        let akd_ok = verify_nonmembership_for_tests_only::<KtConfig>(root, &bad).is_ok()
                            && bad.label == node;
                        match verify_nonmembership(root, node, &bad) {
                            Ok(()) => prop_assert!(akd_ok, "ours accepted what akd refused: {m:?}"),
                            // The two checks akd lacks: akd may accept or refuse.
                            Err(AbsenceError::ChildIsPrefix { .. } | AbsenceError::Path { .. }) => {}
                            Err(e) => prop_assert!(!akd_ok, "akd accepted what ours refused ({e}): {m:?}"),
                        }
                    }
                }
            }
            Ok(())
        })?;
    }

    /// A present label's genuine proofs never prove it absent: the proof akd builds for
    /// its node (a non-membership proof of a member) fails both verifiers.
    #[test]
    fn a_present_label_is_never_proven_absent(sizes in proptest::collection::vec(1..24usize, 1..4), pick in 0..1000usize) {
        rt().block_on(async {
            let all = epochs(&sizes);
            let labels: Vec<&String> = all.iter().flatten().collect();
            let tree = Tree::new(&all).await;
            let root = tree.root().await;
            let key = tree.vrf_public();
            let label = AkdLabel::from(labels[pick % labels.len()].as_str());
            let (absence, epoch) = kt_directory::absence::prove(&tree.storage, &tree.vrf, &label)
                .await
                .expect("prove");
            prop_assert!(verify(&key, root, epoch, &label, &absence).is_err());
            // Version 1 of every label is in the tree: akd refuses that part too.
            prop_assert!(verify_nonmembership_for_tests_only::<KtConfig>(root, &absence.markers[0].proof).is_err());
            Ok(())
        })?;
    }
}

/// The AzksElement of the tree node `label` (its hash as its parent sees it).
async fn element<S: Database + 'static>(storage: &StorageManager<S>, azks: &Azks, label: NodeLabel) -> AzksElement {
    let proof = azks
        .get_membership_proof::<KtConfig, _>(storage, label)
        .await
        .expect("membership");
    assert_eq!(proof.label, label, "a node of the tree");
    AzksElement {
        label,
        value: proof.hash_val,
    }
}

/// What a lying directory builds to "prove" `node` absent although it is in the tree:
/// an ancestor two or more levels up as the longest prefix, with its two genuine
/// children (one of them an interior node above `node`) and its genuine membership
/// proof. `None` if `node` is not deep enough (fewer than two interior ancestors).
async fn forge<S: Database + 'static>(
    storage: &StorageManager<S>,
    azks: &Azks,
    node: NodeLabel,
) -> Option<NonMembershipProof> {
    let path = azks
        .get_membership_proof::<KtConfig, _>(storage, node)
        .await
        .expect("membership");
    // path.sibling_proofs[k]: the step from ancestor k to its child towards `node`.
    if path.sibling_proofs.len() < 2 {
        return None;
    }
    let step = &path.sibling_proofs[0];
    let ancestor = step.label;
    let towards = path.sibling_proofs[1].label;
    let on_path = element(storage, azks, towards).await;
    let sibling = step.siblings[0];
    let children = match step.direction {
        akd::Direction::Left => [on_path, sibling],
        akd::Direction::Right => [sibling, on_path],
    };
    let membership = azks
        .get_membership_proof::<KtConfig, _>(storage, ancestor)
        .await
        .expect("membership");
    Some(NonMembershipProof {
        label: node,
        longest_prefix: ancestor,
        longest_prefix_children: children,
        longest_prefix_membership_proof: membership,
    })
}

/// A present label passed off as absent: akd's verifier accepts the forged proof, ours
/// refuses it. The forgery is what a directory hiding a user's keys would send.
#[test]
fn a_forged_absence_of_a_present_label_passes_akd_but_not_us() {
    rt().block_on(async {
        let all = epochs(&[64, 64]);
        let tree = Tree::new(&all).await;
        let root = tree.root().await;
        let key = tree.vrf_public();
        let azks = tree.azks().await;
        let mut forged = 0;
        for name in all.iter().flatten() {
            let label = AkdLabel::from(name.as_str());
            let vrf_proof = tree
                .vrf
                .get_label_proof::<KtConfig>(&label, VersionFreshness::Fresh, 1)
                .await
                .expect("vrf");
            let node = tree.vrf.get_node_label_from_vrf_proof(vrf_proof).await;
            let Some(proof) = forge(&tree.storage, &azks, node).await else {
                continue;
            };
            assert!(
                verify_nonmembership_for_tests_only::<KtConfig>(root, &proof).is_ok(),
                "akd 0.13 accepts the forged absence of a present label"
            );
            assert_eq!(
                fresh_node(&key, &label, 1, &vrf_proof.to_bytes()),
                Ok(node),
                "the VRF proof is genuine"
            );
            assert!(matches!(
                verify_nonmembership(root, node, &proof),
                Err(AbsenceError::ChildIsPrefix { .. })
            ));
            forged += 1;
        }
        assert!(
            forged > 100,
            "most labels of a 128-entry tree are deep enough ({forged})"
        );
    });
}

/// A superseded value passed off as current: the lookup proof of version 1 of a label
/// now at version 2, with the freshness proof (that `(label, Stale, 1)` is absent)
/// forged as above. akd's `lookup_verify` accepts it: the client would use the old key.
/// `kt_client::verify::lookup` refuses it.
#[test]
fn a_stale_value_passed_off_as_current_passes_akds_lookup_verifier_but_not_ours() {
    rt().block_on(async {
        // 40 labels, then a second value for l0..l19.
        let first = epochs(&[40]);
        let mut all = first.clone();
        all.push(first[0][..20].to_vec());
        let tree = Tree::new(&all).await;
        let akd::EpochHash(epoch, root) = tree.dir.get_epoch_hash().await.expect("epoch hash");
        let key = tree.vrf_public();
        let azks = tree.azks().await;
        let mut forged = 0;
        for name in &all[1] {
            let label = AkdLabel::from(name.as_str());
            let old_value = AkdValue::from(format!("{name}@0").as_str());
            // Start from the honest proof of version 2, and rewrite it to version 1.
            let (mut proof, _) = tree.dir.lookup(label.clone()).await.expect("lookup");
            let vrf = |freshness, version| {
                let (vrf, label) = (tree.vrf.clone(), label.clone());
                async move {
                    vrf.get_label_proof::<KtConfig>(&label, freshness, version)
                        .await
                        .expect("vrf")
                }
            };
            let existence = vrf(VersionFreshness::Fresh, 1).await;
            let existence_node = tree.vrf.get_node_label_from_vrf_proof(existence).await;
            let stale = vrf(VersionFreshness::Stale, 1).await;
            let stale_node = tree.vrf.get_node_label_from_vrf_proof(stale).await;
            let Some(freshness) = forge(&tree.storage, &azks, stale_node).await else {
                continue;
            };
            proof.version = 1;
            proof.epoch = 1;
            proof.value = old_value.clone();
            proof.existence_vrf_proof = existence.to_bytes().to_vec();
            proof.existence_proof = azks
                .get_membership_proof::<KtConfig, _>(&tree.storage, existence_node)
                .await
                .expect("membership");
            proof.marker_vrf_proof = proof.existence_vrf_proof.clone();
            proof.marker_proof = proof.existence_proof.clone();
            proof.freshness_vrf_proof = stale.to_bytes().to_vec();
            proof.freshness_proof = freshness;
            proof.commitment_nonce =
                KtConfig::get_commitment_nonce(&tree.vrf.commitment_key::<KtConfig>(), &existence_node, 1, &old_value)
                    .to_vec();
            let accepted = akd::verify::lookup_verify::<KtConfig>(&key, root, epoch, label.clone(), proof.clone())
                .expect("akd 0.13 accepts a superseded value as current");
            assert_eq!(accepted.value, old_value);
            assert_eq!(accepted.version, 1);
            match kt_client::verify::lookup(&key, root, epoch, label, proof) {
                Err(kt_client::verify::VerifyError::NonMembership { reason, .. }) => {
                    assert!(matches!(*reason, AbsenceError::ChildIsPrefix { .. }), "{reason}")
                }
                other => panic!("expected the forged freshness proof refused, got {other:?}"),
            }
            forged += 1;
        }
        assert!(
            forged > 10,
            "most stale nodes of a 60-node tree are deep enough ({forged})"
        );
    });
}
