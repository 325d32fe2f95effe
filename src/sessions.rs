//! Logged-in sessions by user, so an admin can count a user's sessions and
//! end them all (the admin API's `POST /users/NAME/sessions/end`). Each
//! user's sessions share one cancellation token; ending them cancels it and
//! every one of those sessions ends at its next safe point.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct Sessions {
    by_user: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    token: CancellationToken,
    count: usize,
    /// Tells this entry from a later one for the same user.
    serial: u64,
}

/// One session's place in the registry, given back when dropped.
pub struct Registered {
    sessions: Arc<Sessions>,
    key: String,
    serial: u64,
    /// Cancelled when an admin ends the user's sessions.
    pub ended: CancellationToken,
}

/// User names compare case-insensitively, as logins do.
fn key(user: &str) -> String {
    user.to_lowercase()
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(self: &Arc<Self>, user: &str) -> Registered {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let key = key(user);
        let mut map = self.lock();
        let entry = map.entry(key.clone()).or_insert_with(|| Entry {
            token: CancellationToken::new(),
            count: 0,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        entry.count += 1;
        Registered {
            sessions: self.clone(),
            key,
            serial: entry.serial,
            ended: entry.token.clone(),
        }
    }

    /// How many sessions `user` has on this instance.
    pub fn count(&self, user: &str) -> usize {
        self.lock().get(&key(user)).map_or(0, |e| e.count)
    }

    /// Ends every session of `user` (at their safe points); how many.
    pub fn end(&self, user: &str) -> usize {
        match self.lock().remove(&key(user)) {
            Some(e) => {
                e.token.cancel();
                e.count
            }
            None => 0,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut map = self.sessions.lock();
        if let Some(e) = map.get_mut(&self.key)
            && e.serial == self.serial
        {
            e.count -= 1;
            if e.count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_a_users_sessions_ends_those_and_only_those() {
        let s = Arc::new(Sessions::default());
        let a1 = s.register("alice");
        let a2 = s.register("Alice");
        let b = s.register("bob");
        assert_eq!(
            (s.count("ALICE"), s.count("bob"), s.count("carol")),
            (2, 1, 0)
        );
        assert_eq!(s.end("alice"), 2);
        assert!(a1.ended.is_cancelled() && a2.ended.is_cancelled());
        assert!(!b.ended.is_cancelled());
        // A new session after the end starts afresh; the ended ones leaving
        // do not count it out.
        let a3 = s.register("alice");
        drop((a1, a2));
        assert_eq!(s.count("alice"), 1);
        assert!(!a3.ended.is_cancelled());
        drop((a3, b));
        assert_eq!(s.count("alice") + s.count("bob"), 0);
        assert!(s.lock().is_empty());
    }
}
