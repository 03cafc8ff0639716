//! kt-auditor: a standalone auditor of a key-transparency directory.
//!
//! It never links `kt-directory` (it must not run the code it audits); it shares only
//! akd's verifier and the wire types of `kt-client`. For now it audits a local folder of
//! WhatsApp-style audit blobs ([`blobs`]); following a live directory, co-signing and the
//! dashboard come with the auditor issue.

pub mod blobs;
pub mod cli;
