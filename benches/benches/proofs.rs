//! Proof generation and verification at N entries (`KT_BENCH_ENTRIES`, default 100,000,
//! plus one epoch of `KT_BENCH_BATCH` rotations, default 1,000): lookup and history
//! proofs, absence proofs (of labels never inserted) and audit proofs generated on our
//! RocksDB backend and on akd's in-memory one side by side (the sizes of a lookup and an
//! absence proof are printed); a client's full check of a lookup and an absence answer; the auditor's check of an
//! audit blob; signing and verifying heads and co-signatures.
//! Run: `cargo bench --profile release -p kt-benches --bench proofs`.

use akd::HistoryParams;
use akd::local_auditing::AuditBlob;
use akd::storage::StorageManager;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use kt_benches::{DirectoryOn, env_size, load, load_label, memory_with_storage, rocks_with_storage, rotation_batch};
use kt_client::cosign::Attestation;
use kt_client::head::{Head, vrf_key_hash};
use kt_client::verify::PinnedKeys;
use kt_client::wire::{AbsenceResponse, LookupResponse, encode_absence, encode_lookup_proof};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What is generated.
#[derive(Clone, Copy)]
enum Proof {
    Lookup,
    History,
    Absence,
    Audit,
}

/// A label never inserted: the `n`th absent one.
fn absent_label(n: u64) -> akd::AkdLabel {
    akd::AkdLabel::from(format!("absent/{n}").as_str())
}

/// Generation of one kind of proof on one backend.
fn generate<S: akd::storage::Database + 'static>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    kind: Proof,
    (name, dir, storage): (&str, &DirectoryOn<S>, &StorageManager<S>),
    entries: u64,
    epoch: u64,
) {
    let vrf = kt_benches::vrf();
    let next = AtomicU64::new(0);
    let label = || load_label(next.fetch_add(7919, Ordering::Relaxed) % entries);
    g.bench_function(BenchmarkId::new(name, entries), |b| {
        b.to_async(rt).iter(|| async {
            match kind {
                Proof::Lookup => drop(dir.lookup(label()).await.expect("lookup")),
                Proof::History => drop(
                    dir.key_history(&label(), HistoryParams::default())
                        .await
                        .expect("history"),
                ),
                Proof::Absence => drop(
                    kt_directory::absence::prove(storage, &vrf, &absent_label(next.fetch_add(1, Ordering::Relaxed)))
                        .await
                        .expect("absence"),
                ),
                Proof::Audit => drop(dir.audit(epoch - 1, epoch).await.expect("audit")),
            }
        })
    });
}

fn proofs(c: &mut Criterion) {
    let entries = env_size("KT_BENCH_ENTRIES", 100_000) as u64;
    let rotations = env_size("KT_BENCH_BATCH", 1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (r, r_storage, m, m_storage, previous, current) = rt.block_on(async {
        let (r, r_storage) = rocks_with_storage(&tmp.path().join("db")).await;
        let (m, m_storage) = memory_with_storage().await;
        load(&r, entries).await.expect("load rocksdb");
        load(&m, entries).await.expect("load memory");
        let previous = r.get_epoch_hash().await.expect("epoch hash");
        let batch = rotation_batch(1, rotations, entries);
        let current = r.publish(batch.clone()).await.expect("publish");
        let same = m.publish(batch).await.expect("publish");
        assert_eq!(current.hash(), same.hash(), "both backends hold the same tree");
        (r, r_storage, m, m_storage, previous, current)
    });
    let epoch = current.epoch();

    for (kind, title) in [
        (Proof::Lookup, format!("lookup_proof_at_{entries}")),
        (Proof::History, format!("history_proof_at_{entries}")),
        (Proof::Absence, format!("absence_proof_at_{entries}")),
        (Proof::Audit, format!("audit_proof_{rotations}_rotations_at_{entries}")),
    ] {
        let mut g = c.benchmark_group(title);
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(10));
        generate(&mut g, &rt, kind, ("rocksdb", &r, &r_storage), entries, epoch);
        generate(&mut g, &rt, kind, ("memory", &m, &m_storage), entries, epoch);
        g.finish();
    }

    // What the other parties run on those proofs.
    let directory_key = SigningKey::from_bytes(&[1; 32]);
    let auditor_key = SigningKey::from_bytes(&[2; 32]);
    let (answer, absent, pinned, head, blob) = rt.block_on(async {
        let vrf = r.get_public_key().await.expect("vrf key").as_bytes().to_vec();
        let head = Head {
            namespace: "bench".into(),
            epoch,
            root: current.hash(),
            previous_root: previous.hash(),
            vrf_key_hash: vrf_key_hash(&vrf),
            timestamp_ms: 1,
        }
        .sign(&directory_key)
        .expect("sign");
        let (proof, _) = r.lookup(load_label(3)).await.expect("lookup");
        let answer = LookupResponse {
            label: String::from_utf8(load_label(3).0).expect("utf8"),
            head: head.clone(),
            proof: encode_lookup_proof(&proof),
            log: None,
        };
        let (absence, _) = kt_directory::absence::prove(&r_storage, &kt_benches::vrf(), &absent_label(0))
            .await
            .expect("absence");
        let absent = AbsenceResponse {
            error: "not in the directory".into(),
            label: String::from_utf8(absent_label(0).0).expect("utf8"),
            head: head.clone(),
            absence: encode_absence(&absence),
        };
        let audit = r.audit(epoch - 1, epoch).await.expect("audit");
        let blob = AuditBlob::new(previous.hash(), current.hash(), epoch, &audit.proofs[0]).expect("blob");
        let pinned = PinnedKeys {
            directory_key: directory_key.verifying_key(),
            vrf_public_key: vrf,
            namespace: "bench".into(),
        };
        (answer, absent, pinned, head, blob.data)
    });
    pinned
        .lookup_response(&answer.label, &answer)
        .expect("the answer verifies");

    pinned
        .absence_response(&absent.label, &absent)
        .expect("the absence answer verifies");
    // Proof sizes, as they travel (protobuf; each VRF proof of an absence is 80 bytes).
    let lookup_bytes = B64.decode(&answer.proof).expect("b64").len();
    let markers = &absent.absence.markers;
    let absence_bytes: usize = markers
        .iter()
        .map(|m| B64.decode(&m.proof).expect("b64").len() + kt_client::wire::VRF_PROOF_LEN)
        .sum();
    println!(
        "proof sizes at {entries} entries, epoch {epoch}: lookup {lookup_bytes} bytes, absence {absence_bytes} bytes ({} marker versions)",
        markers.len()
    );

    let mut g = c.benchmark_group("verify");
    g.bench_function("client_absence_answer", |b| {
        b.iter(|| pinned.absence_response(&absent.label, &absent).expect("verifies"))
    });
    g.bench_function("client_lookup_answer", |b| {
        b.iter(|| pinned.lookup_response(&answer.label, &answer).expect("verifies"))
    });
    g.bench_function(
        format!("auditor_blob_{rotations}_rotations_{}_bytes", blob.len()),
        |b| {
            b.to_async(&rt).iter(|| async {
                kt_auditor::verify::check_proof(&head, blob.clone())
                    .await
                    .expect("verifies")
            })
        },
    );
    g.finish();

    let mut g = c.benchmark_group("signatures");
    g.bench_function("head_sign", |b| {
        b.iter(|| head.head.clone().sign(&directory_key).expect("sign"))
    });
    g.bench_function("head_verify", |b| {
        b.iter(|| head.verify(&directory_key.verifying_key()).expect("verify"))
    });
    let attestation = Attestation {
        namespace: "bench".into(),
        epoch,
        root: head.head.root,
        previous_root: head.head.previous_root,
        timestamp_ms: 2,
    };
    g.bench_function("cosign_both_formats", |b| {
        b.iter(|| attestation.clone().sign(&auditor_key).expect("cosign"))
    });
    let (ours, plexi) = attestation.sign(&auditor_key).expect("cosign");
    g.bench_function("cosign_verify_both_formats", |b| {
        b.iter(|| {
            ours.verify_for(&auditor_key.verifying_key(), &head).expect("ours");
            plexi.verify(&auditor_key.verifying_key()).expect("plexi");
        })
    });
    g.finish();
}

criterion_group!(benches, proofs);
criterion_main!(benches);
