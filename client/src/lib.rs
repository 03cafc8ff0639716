//! Key-transparency client library: the akd configuration every party shares, and
//! (as the publisher and auditor land) the wire types and I/O-free verification of
//! lookups, histories and signed heads.
//!
//! This crate must stay free of RocksDB, axum and the server crates: messaging clients
//! embed it.

pub mod absence;
pub mod auditor;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod configfile;
pub mod cosign;
pub mod head;
#[cfg(feature = "http")]
pub mod http;
pub mod keyfile;
#[cfg(feature = "cli")]
pub mod run;
#[cfg(feature = "server")]
pub mod serve;
pub mod state;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod tlog;
pub mod verify;
pub mod wire;

/// The akd configuration of the whole system, chosen here and nowhere else.
///
/// WhatsApp v1 (plain blake3) is what WhatsApp, Messenger and the public auditors use,
/// so our tree hashes and audit blobs are comparable with theirs.
pub type KtConfig = akd_core::WhatsAppV1Configuration;
