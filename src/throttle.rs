//! Brute-force protection in front of the stores' own lockout counters.
//!
//! Failed logins slow down further attempts from the same client address and
//! for the same user name (doubling delays, capped). A user/password pair that
//! just failed is remembered for a while — only as a keyed hash, never the
//! password — so a phone retrying a stale password every minute is answered by
//! Ferry and never reaches OLD or NEW, whose lockout would hit the real user.
//! The answer is the same whether the user exists or not.
//!
//! Memory is bounded: entries expire, and each table has a hard cap beyond
//! which the oldest half is dropped.
//!
//! Instances sharing PostgreSQL throttle as one (`crate::fleet`): each tells
//! the others of every failure and success, and the hashes are keyed with a
//! secret the fleet shares (`ferry_secrets`), so a stale password refused on
//! one instance is answered by all. Hashes travel only in notifications;
//! nothing about a failed login is stored.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::{
    config::Auth,
    fleet::{Fleet, Note},
    identity::StoreAuth,
    namespace::Store,
};

/// Entries per table; a flood of distinct addresses or names cannot grow
/// memory beyond this (about 100 bytes per entry).
const CAP: usize = 100_000;

/// How long a failure counts towards the delay.
const WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Default)]
struct Tables {
    ips: HashMap<IpAddr, Failures>,
    users: HashMap<String, Failures>,
    /// Keyed hash of (user, password) → when it stops being answered locally.
    pairs: HashMap<u64, Instant>,
}

pub struct Throttle {
    base: Duration,
    max: Duration,
    remember: Duration,
    /// The hashes' key: random per process, or the fleet's shared secret.
    key: [u8; 32],
    tables: Mutex<Tables>,
    fleet: Arc<Fleet>,
}

/// What to do with a login attempt before it reaches a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Wait this long first.
    pub delay: Duration,
    /// This exact user/password just failed: answer NO without asking the stores.
    pub known_failure: bool,
}

impl std::fmt::Debug for Throttle {
    /// The tables are not shown: they hold who failed to log in.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").finish_non_exhaustive()
    }
}

impl Throttle {
    /// A throttle for this instance alone.
    pub fn new(auth: &Auth) -> Self {
        Self::shared(auth, crate::state::fleet::random_bytes(), Fleet::alone())
    }

    /// A throttle that counts with the fleet's: `secret` is the fleet's.
    pub fn shared(auth: &Auth, secret: [u8; 32], fleet: Arc<Fleet>) -> Self {
        Self {
            base: Duration::from_millis(auth.throttle_base_ms),
            max: Duration::from_millis(auth.throttle_max_ms),
            remember: Duration::from_secs(auth.failure_cache_secs),
            key: secret,
            tables: Mutex::default(),
            fleet,
        }
    }

    /// A keyed hash of `parts` (each length-prefixed, so no two lists of
    /// parts hash alike by construction).
    fn digest(&self, parts: &[&[u8]]) -> u64 {
        let mut h = Sha256::new();
        h.update(self.key);
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let d = h.finalize();
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pair(&self, user: &[u8], password: &[u8]) -> u64 {
        self.digest(&[b"pair", user, password])
    }

    fn curve(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(16);
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn check(&self, now: Instant, ip: IpAddr, user: &[u8], password: &[u8]) -> Verdict {
        let name = normalise(user);
        let key = self.pair(user, password);
        let t = self.lock();
        let recent = |f: Option<&Failures>| {
            f.filter(|f| now.duration_since(f.last) < WINDOW)
                .map_or(0, |f| f.count)
        };
        let failures = recent(t.ips.get(&ip)).max(recent(t.users.get(&name)));
        Verdict {
            delay: self.curve(failures),
            known_failure: t.pairs.get(&key).is_some_and(|until| *until > now),
        }
    }

    pub fn failed(&self, now: Instant, ip: IpAddr, user: &[u8], password: &[u8]) {
        let pair = self.pair(user, password);
        let user = normalise(user);
        self.remote_failed(now, ip, &user, pair);
        self.fleet.send(Note::LoginFailed { ip, user, pair });
    }

    /// A failure another instance saw (`user` normalised already).
    pub fn remote_failed(&self, now: Instant, ip: IpAddr, user: &str, pair: u64) {
        let mut t = self.lock();
        bump(&mut t.ips, ip, now);
        bump(&mut t.users, user.to_string(), now);
        remember(&mut t.pairs, pair, now + self.remember, now);
    }

    /// A store refused a login Ferry made on the user's behalf after the
    /// password was checked elsewhere (the lazy OLD login with the client's
    /// password, a master user): remembered like a failed password, so
    /// reconnecting clients do not walk the store's own lockout counter up.
    /// A token login reaches this only when even a fresh token was refused
    /// (a cached one is replaced first): then the user's token logins wait.
    pub fn store_failed(&self, now: Instant, store: Store, auth: &StoreAuth) {
        if let Some(key) = self.store_key(store, auth) {
            self.remote_store_failed(now, key);
            self.fleet.send(Note::StoreFailed { key });
        }
    }

    /// A store refused a login another instance made.
    pub fn remote_store_failed(&self, now: Instant, key: u64) {
        remember(&mut self.lock().pairs, key, now + self.remember, now);
    }

    /// This very login just failed at this store.
    pub fn store_known_failure(&self, now: Instant, store: Store, auth: &StoreAuth) -> bool {
        self.store_key(store, auth).is_some_and(|key| {
            self.lock()
                .pairs
                .get(&key)
                .is_some_and(|until| *until > now)
        })
    }

    fn store_key(&self, store: Store, auth: &StoreAuth) -> Option<u64> {
        let store = store.as_str().as_bytes();
        match auth {
            StoreAuth::Login { user, password } => {
                Some(self.digest(&[b"login", store, user, password.expose()]))
            }
            StoreAuth::Plain {
                user,
                master,
                password,
            } => Some(self.digest(&[b"plain", store, user, master, password.expose()])),
            StoreAuth::Token { user, .. } => Some(self.digest(&[b"oauth2", store, user])),
            StoreAuth::Client { .. } | StoreAuth::Unusable => None,
        }
    }

    /// A good login clears the user's record (not the address's: one
    /// success must not reset a password-spraying address).
    pub fn succeeded(&self, user: &[u8]) {
        let user = normalise(user);
        // Failures travel to every instance, so one with nothing to forgive
        // here has nothing to forgive anywhere: no note for most logins.
        if self.lock().users.remove(&user).is_some() {
            self.fleet.send(Note::LoginSucceeded { user });
        }
    }

    /// Another instance saw the user (normalised) log in.
    pub fn forgive(&self, user: &str) {
        self.lock().users.remove(user);
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize, usize) {
        let t = self.lock();
        (t.ips.len(), t.users.len(), t.pairs.len())
    }
}

fn normalise(user: &[u8]) -> String {
    String::from_utf8_lossy(user).to_lowercase()
}

/// Remembers `key` until `until`; a full table drops what expired, or all.
fn remember(pairs: &mut HashMap<u64, Instant>, key: u64, until: Instant, now: Instant) {
    if pairs.len() >= CAP {
        pairs.retain(|_, until| *until > now);
        if pairs.len() >= CAP {
            pairs.clear();
        }
    }
    pairs.insert(key, until);
}

fn bump<K: std::hash::Hash + Eq>(table: &mut HashMap<K, Failures>, key: K, now: Instant) {
    if table.len() >= CAP {
        table.retain(|_, f| now.duration_since(f.last) < WINDOW);
        if table.len() >= CAP {
            // Still full of fresh entries: forget the older half.
            let mut lasts: Vec<Instant> = table.values().map(|f| f.last).collect();
            lasts.sort_unstable();
            let cut = lasts[lasts.len() / 2];
            table.retain(|_, f| f.last > cut);
        }
    }
    let f = table.entry(key).or_insert(Failures {
        count: 0,
        last: now,
    });
    if now.duration_since(f.last) >= WINDOW {
        f.count = 0;
    }
    f.count = f.count.saturating_add(1);
    f.last = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(&Auth::default())
    }

    fn now() -> Instant {
        Instant::now()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn delays_follow_dovecots_curve() {
        let t = throttle();
        let secs: Vec<u64> = (0..6)
            .map(|_| {
                let d = t.check(now(), IP, b"alice", b"x").delay.as_secs();
                t.failed(now(), IP, b"alice", b"x");
                d
            })
            .collect();
        assert_eq!(secs, [0, 2, 4, 8, 15, 15]);
    }

    #[test]
    fn same_wrong_password_is_known_other_passwords_are_not() {
        let t = throttle();
        t.failed(now(), IP, b"Carol", b"old-password");
        assert!(t.check(now(), IP, b"Carol", b"old-password").known_failure);
        assert!(!t.check(now(), IP, b"Carol", b"new-password").known_failure);
        // The user name's delay counts from any address.
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            t.check(now(), other, b"carol", b"new-password").delay,
            Duration::from_secs(2)
        );
        t.succeeded(b"carol");
        assert_eq!(t.check(now(), other, b"carol", b"x").delay, Duration::ZERO);
    }

    #[test]
    fn logins_on_the_users_behalf_are_remembered_per_store() {
        let t = throttle();
        let login = StoreAuth::Login {
            user: b"alice".to_vec(),
            password: crate::identity::Secret::new(b"stale"),
        };
        assert!(!t.store_known_failure(now(), Store::Old, &login));
        t.store_failed(now(), Store::Old, &login);
        assert!(t.store_known_failure(now(), Store::Old, &login));
        assert!(
            !t.store_known_failure(now(), Store::New, &login),
            "per store"
        );
        // The primary login's tables are not touched: no delay for alice.
        assert_eq!(t.check(now(), IP, b"alice", b"stale").delay, Duration::ZERO);
        let later = now() + Duration::from_secs(301);
        assert!(
            !t.store_known_failure(later, Store::Old, &login),
            "forgotten"
        );
        // Token logins by user: whatever the command prints next.
        let token = StoreAuth::Token {
            user: b"alice".to_vec(),
            mechanism: crate::oauth::Mechanism::XOAuth2,
            source: crate::oauth::TokenSource {
                command: vec!["/bin/true".into()],
                timeout: Duration::from_secs(1),
                lifetime: Duration::from_secs(60),
            },
        };
        t.store_failed(now(), Store::New, &token);
        assert!(t.store_known_failure(now(), Store::New, &token));
    }

    /// What another instance relays (the note's fields) counts here as if
    /// tried here, when both hash with the fleet's secret; with a key of
    /// its own an instance cannot recognise the pair.
    #[test]
    fn instances_sharing_a_secret_recognise_each_others_failures() {
        let secret = [7; 32];
        let (a, b) = (
            Throttle::shared(&Auth::default(), secret, Fleet::alone()),
            Throttle::shared(&Auth::default(), secret, Fleet::alone()),
        );
        let stranger = throttle();
        let pair = a.pair(b"Carol", b"stale");
        a.failed(now(), IP, b"Carol", b"stale");
        for t in [&b, &stranger] {
            t.remote_failed(now(), IP, "carol", pair);
        }
        assert!(b.check(now(), IP, b"Carol", b"stale").known_failure);
        assert!(!stranger.check(now(), IP, b"Carol", b"stale").known_failure);
        assert_eq!(
            b.check(now(), IP, b"carol", b"right").delay,
            Duration::from_secs(2)
        );
        b.forgive("carol");
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            b.check(now(), other, b"carol", b"right").delay,
            Duration::ZERO
        );
        // Stores' refusals too.
        let login = StoreAuth::Login {
            user: b"carol".to_vec(),
            password: crate::identity::Secret::new(b"stale"),
        };
        let key = a.store_key(Store::Old, &login).expect("a key");
        b.remote_store_failed(now(), key);
        assert!(b.store_known_failure(now(), Store::Old, &login));
    }

    #[test]
    fn memory_is_bounded_under_a_flood() {
        let t = throttle();
        for i in 0..(CAP as u32 + 5_000) {
            let ip = IpAddr::V4(i.into());
            t.failed(now(), ip, format!("user{i}").as_bytes(), b"pw");
        }
        let (ips, users, pairs) = t.sizes();
        assert!(
            ips <= CAP && users <= CAP && pairs <= CAP,
            "{ips} {users} {pairs}"
        );
    }
}
