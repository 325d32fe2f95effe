//! The migration engine: copies every user's OLD mail into NEW, resumable
//! and never twice, recording what is where in the [`crate::state`] ledger.
//! `ferry migrate` runs [`user::migrate_user`] for each user named.

pub mod conn;
pub mod folder;
pub mod mapping;
pub mod pace;
pub mod report;
pub mod user;
