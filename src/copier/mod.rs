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
    /// Who copies, as the state store's leases name it ([`holder`]).
    pub holder: &'a str,
}

/// A lease holder's name, as admins read it: what copies, the host and the
/// process, and a random tag (a restarted process is another holder, which
/// waits for the dead one's lease to run out).
pub fn holder(what: &str) -> String {
    let mut name = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer given.
    let host = if unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } == 0 {
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        String::from_utf8_lossy(&name[..end]).into_owned()
    } else {
        String::new()
    };
    let tag = u16::from_le_bytes(crate::state::fleet::random_bytes());
    format!(
        "{what} on {} pid {} #{tag:04x}",
        host.trim(),
        std::process::id()
    )
}
