//! Which of each user's OLD folders the merged view serves from their NEW
//! copy: read by sessions when a client opens an `Old/` folder (so a folder
//! changes hands at the client's next SELECT, never under an open one), and
//! refreshed from the state store by the background copier (so a fleet, and
//! `ferry migrate` run from a terminal, are seen too).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use crate::state::{State, StateError};

/// One user's served folders.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UserServed {
    /// The copies' wire names on NEW, which are the names the client knows
    /// the folders by (only such copies are served: see
    /// [`super::mapping::Route::servable`]), so a session needs no OLD
    /// layout, and no OLD, to find them.
    pub folders: HashSet<Vec<u8>>,
    /// Every folder the last pass found on OLD is served: the merged view
    /// needs OLD for nothing any more.
    pub complete: bool,
}

#[derive(Debug, Default)]
pub struct Served {
    by_user: RwLock<HashMap<String, Arc<UserServed>>>,
}

/// User names compare case-insensitively, as logins do.
fn key(user: &str) -> String {
    user.to_lowercase()
}

impl Served {
    pub fn get(&self, user: &str) -> Option<Arc<UserServed>> {
        let map = self.by_user.read().unwrap_or_else(|p| p.into_inner());
        map.get(&key(user)).cloned()
    }

    /// Reads every served folder from the state store. A folder once
    /// served stays served (the store never unsets it), so a refresh only
    /// ever adds.
    pub async fn refresh(&self, state: &State) -> Result<(), StateError> {
        let folders = state.served_folders().await?;
        let users = state.migrations().await?;
        let mut next: HashMap<String, UserServed> = HashMap::new();
        for f in folders {
            next.entry(key(&f.user))
                .or_default()
                .folders
                .insert(f.new_name.into_bytes());
        }
        for u in users {
            if let Some(s) = next.get_mut(&key(&u.user)) {
                s.complete = u.folders > 0
                    && u.folders_done == u.folders
                    && s.folders.len() as u64 == u.folders;
            }
        }
        let next = next.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        *self.by_user.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// Sets one user's served folders (transcripts and tests).
    pub fn set(&self, user: &str, served: UserServed) {
        let mut map = self.by_user.write().unwrap_or_else(|p| p.into_inner());
        map.insert(key(user), Arc::new(served));
    }

    /// Whether the merged view serves `user`'s `Old/` folder `client` (its
    /// name as the client sends it) from its NEW copy.
    pub fn serves(&self, user: &str, client: &[u8]) -> bool {
        self.get(user).is_some_and(|s| s.folders.contains(client))
    }
}
