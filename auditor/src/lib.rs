//! kt-auditor: a standalone auditor of a key-transparency directory.
//!
//! It follows a directory's signed heads, verifies every epoch's akd append-only proof
//! ([`verify`]), co-signs what it verified in its own and Plexi's format, keeps the
//! proofs and its findings in its own RocksDB ([`store`]), and serves them with a
//! public dashboard ([`http`]). It never links `kt-directory` (it must not run the code
//! it audits); it shares only akd's verifier and the wire types of `kt-client`.

pub mod blobs;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod datadir;
#[cfg(all(test, feature = "server"))]
mod fixtures;
#[cfg(feature = "server")]
pub mod follower;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod status;
#[cfg(feature = "server")]
pub mod store;
pub mod verify;
#[cfg(feature = "server")]
pub mod witness;
