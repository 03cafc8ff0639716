//! The checks of one epoch, free of I/O: head signature and identity, the root chain,
//! the blob's decoding and akd's append-only verification. Every input here is
//! untrusted (it comes from the directory or from whoever submits evidence); a
//! failure is a [`Finding`] that becomes published evidence.

use akd::local_auditing::{AuditBlob, AuditBlobName};
use ed25519_dalek::VerifyingKey;
use kt_client::KtConfig;
use kt_client::auditor::EvidenceKind;
use kt_client::head::SignedHead;
use kt_client::state::ForkEvidence;

/// Something the directory did wrong, with what shows it.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What kind of misbehaviour.
    pub kind: EvidenceKind,
    /// The epoch concerned.
    pub epoch: u64,
    /// For a human.
    pub reason: String,
    /// The signed heads involved.
    pub heads: Vec<SignedHead>,
    /// For a bad proof: its name and bytes, kept so anyone can re-verify.
    pub blob: Option<(String, Vec<u8>)>,
}

impl Finding {
    fn new(kind: EvidenceKind, epoch: u64, reason: impl Into<String>, heads: Vec<SignedHead>) -> Finding {
        Finding {
            kind,
            epoch,
            reason: reason.into(),
            heads,
            blob: None,
        }
    }
}

/// Who the directory must be: its key always; its namespace and VRF key hash once
/// the genesis head has been verified.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The directory's signing key (pinned by the operator).
    pub key: VerifyingKey,
    /// The namespace of the verified genesis head.
    pub namespace: Option<String>,
    /// The VRF key hash of the verified genesis head.
    pub vrf_key_hash: Option<[u8; 32]>,
}

impl Identity {
    /// Checks the head's signature, then that it is for the pinned namespace and VRF key.
    pub fn check(&self, head: &SignedHead) -> Result<(), Finding> {
        let epoch = head.head.epoch;
        head.verify(&self.key)
            .map_err(|e| Finding::new(EvidenceKind::BadSignature, epoch, e.to_string(), vec![head.clone()]))?;
        if let Some(ns) = &self.namespace
            && ns != &head.head.namespace
        {
            return Err(Finding::new(
                EvidenceKind::WrongIdentity,
                epoch,
                format!("head is for namespace {:?}, pinned {:?}", head.head.namespace, ns),
                vec![head.clone()],
            ));
        }
        if let Some(vrf) = &self.vrf_key_hash
            && vrf != &head.head.vrf_key_hash
        {
            return Err(Finding::new(
                EvidenceKind::WrongIdentity,
                epoch,
                format!(
                    "head commits to VRF key hash {}, pinned {} (the VRF key can never change)",
                    hex::encode(head.head.vrf_key_hash),
                    hex::encode(vrf)
                ),
                vec![head.clone()],
            ));
        }
        Ok(())
    }
}

/// akd's root of the empty tree, computed here: the auditor trusts no starting root
/// it did not derive.
pub async fn empty_root() -> Result<[u8; 32], akd::errors::AkdError> {
    use akd::storage::StorageManager;
    use akd::storage::memory::AsyncInMemoryDatabase;
    let manager = StorageManager::new_no_cache(AsyncInMemoryDatabase::new());
    let azks = akd::Azks::new::<KtConfig, _>(&manager).await?;
    azks.get_root_hash::<KtConfig, _>(&manager).await
}

/// Checks the verified genesis head: epoch 0, the empty tree, no predecessor.
pub fn check_genesis(head: &SignedHead, empty: &[u8; 32]) -> Result<(), Finding> {
    let h = &head.head;
    if h.epoch != 0 || h.root != *empty || h.previous_root != [0; 32] {
        return Err(Finding::new(
            EvidenceKind::BrokenChain,
            h.epoch,
            format!(
                "genesis head is epoch {} root {} previous {}, but epoch 0 must be the empty tree {} with no predecessor",
                h.epoch,
                hex::encode(h.root),
                hex::encode(h.previous_root),
                hex::encode(empty)
            ),
            vec![head.clone()],
        ));
    }
    Ok(())
}

/// The blob name a head implies: `"{epoch}/{hex previous root}/{hex root}"`.
pub fn blob_name(head: &SignedHead) -> String {
    AuditBlobName {
        epoch: head.head.epoch,
        previous_hash: head.head.previous_root,
        current_hash: head.head.root,
    }
    .to_string()
}

/// Checks that `head` (already identity-checked) follows `previous` (verified).
pub fn check_chain(previous: &SignedHead, head: &SignedHead) -> Result<(), Finding> {
    let (p, h) = (&previous.head, &head.head);
    if h.epoch != p.epoch + 1 || h.previous_root != p.root {
        return Err(Finding::new(
            EvidenceKind::BrokenChain,
            h.epoch,
            format!(
                "head of epoch {} says the previous root is {}, but epoch {} was verified at {}",
                h.epoch,
                hex::encode(h.previous_root),
                p.epoch,
                hex::encode(p.root)
            ),
            vec![previous.clone(), head.clone()],
        ));
    }
    Ok(())
}

/// How [`check_proof`]'s reason starts for bytes that are not a proof at all (the
/// follower treats those as an unusable answer, not as evidence).
pub const UNDECODABLE: &str = "undecodable append-only proof";

/// A validly signed head dated more than `max_skew_ms` after `now_ms`: a directory that
/// signs the future can freeze a client's view past any maximum age.
pub fn future(head: &SignedHead, now_ms: u64, max_skew_ms: u64) -> Option<Finding> {
    let ahead = head.head.timestamp_ms.saturating_sub(now_ms);
    (ahead > max_skew_ms).then(|| {
        Finding::new(
            EvidenceKind::FutureHead,
            head.head.epoch,
            format!(
                "the head of epoch {} is signed with a time {ahead} ms ahead of this auditor's clock (allowed skew {max_skew_ms} ms)",
                head.head.epoch
            ),
            vec![head.clone()],
        )
    })
}

/// What a verified proof showed.
#[derive(Debug, Clone, Copy)]
pub struct ProofStats {
    /// Leaves inserted by the epoch.
    pub updates: u64,
}

/// Decodes `blob` as the append-only proof from `head.previous_root` to `head.root`
/// and runs akd's `verify_consecutive_append_only` on it. The blob is handed back
/// (to be stored) rather than copied: memory stays one proof and its decoding.
pub async fn check_proof(head: &SignedHead, blob: Vec<u8>) -> Result<(ProofStats, Vec<u8>), Finding> {
    let h = &head.head;
    let name = AuditBlobName {
        epoch: h.epoch,
        previous_hash: h.previous_root,
        current_hash: h.root,
    };
    let fail = |reason: String, blob: Vec<u8>| Finding {
        kind: EvidenceKind::InvalidProof,
        epoch: h.epoch,
        reason,
        heads: vec![head.clone()],
        blob: Some((name.to_string(), blob)),
    };
    let audit_blob = AuditBlob { name, data: blob };
    let proof = match audit_blob.decode() {
        Ok((_, _, _, proof)) => proof,
        Err(e) => return Err(fail(format!("{UNDECODABLE}: {e:?}"), audit_blob.data)),
    };
    match akd::auditor::verify_consecutive_append_only::<KtConfig>(&proof, h.previous_root, h.root, h.epoch).await {
        Ok(()) => Ok((
            ProofStats {
                updates: proof.inserted.len() as u64,
            },
            audit_blob.data,
        )),
        Err(e) => Err(fail(format!("append-only proof does not verify: {e}"), audit_blob.data)),
    }
}

/// Checks a claim of two contradicting heads, both signed by the directory for the
/// pinned namespace. They contradict when they are:
/// - for one epoch, with different roots (or previous roots): a fork;
/// - for consecutive epochs, the later one's previous root not the earlier one's root:
///   a broken chain (two histories);
/// - for different epochs, the later epoch signed at an earlier time: a rollback.
///
/// Anything else is not evidence.
pub fn check_fork(identity: &Identity, claim: &ForkEvidence) -> Result<Finding, String> {
    for (which, head) in [("first", &claim.first), ("second", &claim.second)] {
        identity
            .check(head)
            .map_err(|f| format!("{which} head: {}", f.reason))?;
    }
    let (a, b) = (&claim.first.head, &claim.second.head);
    let heads = vec![claim.first.clone(), claim.second.clone()];
    if a.epoch == b.epoch {
        if a.root == b.root && a.previous_root == b.previous_root {
            return Err("the heads agree on the root and the previous root: no fork".into());
        }
        return Ok(Finding::new(
            EvidenceKind::Fork,
            a.epoch,
            format!(
                "two signed heads for epoch {}: root {} (previous {}) and root {} (previous {})",
                a.epoch,
                hex::encode(a.root),
                hex::encode(a.previous_root),
                hex::encode(b.root),
                hex::encode(b.previous_root)
            ),
            heads,
        ));
    }
    let (early, late) = if a.epoch < b.epoch { (a, b) } else { (b, a) };
    if late.epoch == early.epoch + 1 && late.previous_root != early.root {
        return Ok(Finding::new(
            EvidenceKind::BrokenChain,
            late.epoch,
            format!(
                "signed head of epoch {} says the previous root is {}, but the signed head of epoch {} has root {}",
                late.epoch,
                hex::encode(late.previous_root),
                early.epoch,
                hex::encode(early.root)
            ),
            heads,
        ));
    }
    if late.timestamp_ms < early.timestamp_ms {
        return Ok(Finding::new(
            EvidenceKind::Rollback,
            early.epoch,
            format!(
                "the directory signed epoch {} at {} ms, after signing epoch {} at {} ms",
                early.epoch, early.timestamp_ms, late.epoch, late.timestamp_ms
            ),
            heads,
        ));
    }
    Err(format!(
        "heads of epochs {} and {} that do not contradict each other",
        a.epoch, b.epoch
    ))
}

/// A fork seen by the auditor itself: `seen` is what it verified, `now` another validly
/// signed head for the same epoch.
pub fn fork_between(seen: &SignedHead, now: &SignedHead) -> Option<Finding> {
    let (a, b) = (&seen.head, &now.head);
    if a.epoch != b.epoch || (a.root == b.root && a.previous_root == b.previous_root) {
        return None;
    }
    Some(Finding::new(
        EvidenceKind::Fork,
        a.epoch,
        format!(
            "the directory now serves root {} for epoch {}, which was verified at root {}",
            hex::encode(b.root),
            a.epoch,
            hex::encode(a.root)
        ),
        vec![seen.clone(), now.clone()],
    ))
}

/// A rollback: `now` is signed later than `newest` but names an older epoch.
pub fn rollback(newest: &SignedHead, now: &SignedHead) -> Option<Finding> {
    let (a, b) = (&newest.head, &now.head);
    if b.epoch >= a.epoch || b.timestamp_ms <= a.timestamp_ms {
        return None;
    }
    Some(Finding::new(
        EvidenceKind::Rollback,
        b.epoch,
        format!(
            "the directory signed epoch {} at {} ms, after signing epoch {} at {} ms",
            b.epoch, b.timestamp_ms, a.epoch, a.timestamp_ms
        ),
        vec![newest.clone(), now.clone()],
    ))
}

/// The directory has signed nothing fresh for longer than allowed.
pub fn stale(latest: &SignedHead, now_ms: u64, max_age_ms: u64) -> Option<Finding> {
    let age = now_ms.saturating_sub(latest.head.timestamp_ms);
    (age > max_age_ms).then(|| {
        Finding::new(
            EvidenceKind::Stale,
            latest.head.epoch,
            format!(
                "the directory's newest signed head (epoch {}) is {} s old; at most {} s allowed",
                latest.head.epoch,
                age / 1000,
                max_age_ms / 1000
            ),
            vec![latest.clone()],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use kt_client::head::Head;

    fn head(epoch: u64, root: u8, prev: u8, ts: u64, key: &SigningKey) -> SignedHead {
        kt_client::test_support::signed_head("ns", epoch, root, prev, ts, key)
    }

    #[test]
    fn identity_chain_fork_rollback_and_staleness() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let id = Identity {
            key: key.verifying_key(),
            namespace: Some("ns".into()),
            vrf_key_hash: Some([9; 32]),
        };
        let h1 = head(1, 1, 0, 10, &key);
        let h2 = head(2, 2, 1, 20, &key);
        id.check(&h1).expect("valid");
        assert_eq!(
            id.check(&head(1, 1, 0, 10, &other)).map_err(|f| f.kind).err(),
            Some(EvidenceKind::BadSignature)
        );
        let mut wrong_ns = h1.head.clone();
        wrong_ns.namespace = "other".into();
        assert_eq!(
            id.check(&wrong_ns.sign(&key).expect("sign")).map_err(|f| f.kind).err(),
            Some(EvidenceKind::WrongIdentity)
        );

        check_chain(&h1, &h2).expect("chained");
        let broken = head(2, 2, 7, 20, &key);
        assert_eq!(
            check_chain(&h1, &broken).map_err(|f| f.kind).err(),
            Some(EvidenceKind::BrokenChain)
        );

        let forked = head(2, 3, 1, 21, &key);
        assert!(fork_between(&h2, &h2).is_none());
        assert_eq!(fork_between(&h2, &forked).map(|f| f.kind), Some(EvidenceKind::Fork));
        let claim = ForkEvidence {
            first: h2.clone(),
            second: forked.clone(),
        };
        assert_eq!(check_fork(&id, &claim).map(|f| f.heads.len()), Ok(2));
        let same = ForkEvidence {
            first: h2.clone(),
            second: h2.clone(),
        };
        assert!(check_fork(&id, &same).is_err());
        let unsigned = ForkEvidence {
            first: h2.clone(),
            second: head(2, 3, 1, 21, &other),
        };
        assert!(
            check_fork(&id, &unsigned)
                .expect_err("unsigned")
                .contains("second head")
        );

        assert!(rollback(&h2, &head(1, 1, 0, 5, &key)).is_none());
        assert_eq!(
            rollback(&h2, &head(1, 1, 0, 50, &key)).map(|f| f.kind),
            Some(EvidenceKind::Rollback)
        );
        assert!(stale(&h2, 20 + 1000, 1000).is_none());
        assert_eq!(stale(&h2, 20 + 1001, 1000).map(|f| f.kind), Some(EvidenceKind::Stale));
    }

    #[tokio::test]
    async fn garbage_proofs_are_findings_not_panics() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let h = head(3, 1, 2, 10, &key);
        for blob in [vec![], vec![0xff; 100], b"\x0a\x05hello".to_vec()] {
            let f = check_proof(&h, blob.clone()).await.expect_err("garbage");
            assert_eq!(f.kind, EvidenceKind::InvalidProof);
            assert_eq!(f.blob.map(|b| b.1), Some(blob));
        }
        let empty = empty_root().await.expect("root");
        let genesis = Head {
            namespace: "ns".into(),
            epoch: 0,
            root: empty,
            previous_root: [0; 32],
            vrf_key_hash: [9; 32],
            timestamp_ms: 1,
        }
        .sign(&key)
        .expect("sign");
        check_genesis(&genesis, &empty).expect("genesis");
        assert!(check_genesis(&h, &empty).is_err());
    }
}
