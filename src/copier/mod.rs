//! The migration engine: copies every user's OLD mail into NEW, resumable
//! and never twice, recording what is where in the [`crate::state`] ledger.
//! `ferry migrate` runs [`user::migrate_user`] for each user named; with
//! `[copier] enabled` the running Ferry does it in [`background`].

pub mod activity;
pub mod background;
pub mod conn;
pub mod folder;
pub mod mapping;
pub mod pace;
pub mod report;
pub mod served;
pub mod user;

/// What a pass over a user needs besides the user.
pub struct Job<'a> {
    pub config: &'a crate::config::Config,
    pub state: &'a crate::state::State,
    pub tokens: &'a crate::oauth::Tokens,
    pub pace: &'a pace::Pace,
    /// Sessions' cross-store COPYs, which a user's copying waits for.
    pub activity: Option<&'a activity::Activity>,
    pub options: folder::Options,
}
