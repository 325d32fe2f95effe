//! What sessions tell the background copier: who logged in in the merged
//! phase (users to copy, when the configuration does not list them), and
//! who is in a cross-store COPY right now (their copying waits until it is
//! done: the two would compete for the same stores on the user's behalf).

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Activity {
    inner: Mutex<Inner>,
    copy_done: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Cross-store COPYs in flight, per user.
    copying: HashMap<String, usize>,
    /// Merged-phase users seen logging in since the copier last looked.
    seen: HashSet<String>,
    /// Every user ever put in `seen`, so a login is reported once.
    known: HashSet<String>,
    /// Users an admin asked to copy now.
    wanted: HashSet<String>,
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `user` logged in in the merged phase.
    pub fn merged_login(&self, user: &str) {
        let mut inner = self.lock();
        if !inner.known.contains(user) {
            inner.known.insert(user.to_string());
            inner.seen.insert(user.to_string());
        }
    }

    /// The merged-phase users who logged in since the last call.
    pub fn take_logins(&self) -> Vec<String> {
        self.lock().seen.drain().collect()
    }

    /// An admin asked for `user` to be copied now.
    pub fn want(&self, user: &str) {
        self.lock().wanted.insert(user.to_string());
    }

    /// Whether `user` is wanted now; they are not any more once this says so.
    pub fn take_wanted(&self, user: &str) -> bool {
        self.lock().wanted.remove(user)
    }

    pub fn is_wanted(&self, user: &str) -> bool {
        self.lock().wanted.contains(user)
    }

    pub fn copy_started(&self, user: &str) {
        *self.lock().copying.entry(user.to_string()).or_default() += 1;
    }

    pub fn copy_ended(&self, user: &str) {
        let mut inner = self.lock();
        if let Some(n) = inner.copying.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                inner.copying.remove(user);
            }
        }
        drop(inner);
        self.copy_done.notify_waiters();
    }

    pub fn in_copy(&self, user: &str) -> bool {
        self.lock().copying.contains_key(user)
    }

    /// Returns once `user` has no cross-store COPY in flight.
    pub async fn copies_done(&self, user: &str) {
        loop {
            // Registered before the check, so an end between the two wakes it.
            let done = self.copy_done.notified();
            if !self.in_copy(user) {
                return;
            }
            done.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::Arc, time::Duration};

    #[tokio::test]
    async fn copying_waits_for_the_users_copies() {
        let a = Arc::new(Activity::default());
        a.copy_started("alice");
        a.copy_started("alice");
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.copies_done("alice").await }
        });
        a.copy_ended("alice");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one copy is still in flight");
        a.copy_ended("alice");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        a.copies_done("bob").await;
    }

    #[test]
    fn a_login_is_reported_once() {
        let a = Activity::default();
        a.merged_login("alice");
        a.merged_login("alice");
        assert_eq!(a.take_logins(), ["alice"]);
        a.merged_login("alice");
        assert!(a.take_logins().is_empty());
    }

    #[test]
    fn a_sessions_reports_reach_the_copier() {
        use crate::session::{Report, Reporter};
        let a = Arc::new(Activity::default());
        let mut r = crate::metrics::Recorder::new("imaps", a.clone());
        r.report(Report::Login {
            phase: crate::config::Phase::Merged,
            result: "ok",
        });
        r.report(Report::User("alice".into()));
        assert_eq!(a.take_logins(), ["alice"]);
        r.report(Report::CopyStarted);
        assert!(a.in_copy("alice"));
        r.report(Report::Copy {
            result: "ok",
            messages: 1,
            bytes: 10,
        });
        assert!(!a.in_copy("alice"));
        r.report(Report::CopyStarted);
        drop(r);
        assert!(!a.in_copy("alice"), "a session dropped mid-copy lets go");
    }
}
