//! kt-auditor: a standalone auditor of a key-transparency directory.
//!
//! It follows a directory's signed heads, verifies every epoch's akd append-only proof
//! ([`verify`]), co-signs what it verified in its own and Plexi's format, keeps the
//! proofs and its findings in its own RocksDB ([`store`]), and serves them with a
//! public dashboard ([`http`]). It never links `kt-directory` (it must not run the code
//! it audits); it shares only akd's verifier and the wire types of `kt-client`.

pub mod blobs;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod follower;
pub mod http;
pub mod metrics;
pub mod server;
pub mod status;
pub mod store;
pub mod verify;
