//! The migration engine: copies every user's OLD mail into NEW, resumable
//! and never twice, recording what is where in the [`crate::state`] ledger.
//! Built up over several steps; so far, where each folder goes.

pub mod conn;
pub mod folder;
pub mod mapping;
