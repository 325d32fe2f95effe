//! What every session of one Ferry instance shares: the configuration in
//! force (replaced whole on reload), the TLS acceptor, subscriptions, the
//! login throttle, connection counts and the workers.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::{backend, config::Config};

/// One configuration and what is built from it; replaced whole on reload.
pub struct Live {
    pub config: Arc<Config>,
    pub old: backend::Target,
    pub new: backend::Target,
    /// 1 at start, +1 per applied reload.
    pub generation: u64,
}

/// The next configuration, with the receiver to wait for the one after it;
/// `None` once Ferry has dropped the sender.
pub async fn live_changed(
    mut rx: watch::Receiver<Arc<Live>>,
) -> Option<(watch::Receiver<Arc<Live>>, Arc<Live>)> {
    rx.changed().await.ok()?;
    let live = rx.borrow_and_update().clone();
    Some((rx, live))
}

/// What every session of one Ferry instance shares.
pub struct Ctx {
    /// The configuration in force; sessions watch it for phase changes.
    pub live: watch::Receiver<Arc<Live>>,
    pub acceptor: Option<TlsAcceptor>,
    pub subscriptions: Arc<crate::subscriptions::Subscriptions>,
    /// The durable state store (`[state] url`): ledger, migration states.
    pub state: Arc<crate::state::State>,
    /// Logged-in sessions by user, for the admin API.
    pub sessions: Arc<crate::sessions::Sessions>,
    /// `Old/` folders served from their NEW copy.
    pub served: Arc<crate::copier::served::Served>,
    /// What sessions tell the background copier.
    pub activity: Arc<crate::copier::activity::Activity>,
    pub throttle: Arc<crate::throttle::Throttle>,
    /// OAuth2 tokens Ferry obtained for store logins.
    pub tokens: Arc<crate::oauth::Tokens>,
    pub connections: Arc<Connections>,
    /// Session ids, unique across listeners (for logs and the drain spread).
    pub next_id: std::sync::atomic::AtomicU64,
    /// Where sessions run.
    pub workers: crate::workers::Workers,
}

/// Counts client connections, in total and per address; a slot gives its
/// place back when the session ends.
#[derive(Default)]
pub struct Connections {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    /// The other instances' busiest addresses (the fleet-wide limit): by
    /// instance, when last heard and the counts.
    elsewhere: Mutex<HashMap<u64, Heard>>,
}

/// When another instance last told its counts, and the counts.
type Heard = (Instant, HashMap<IpAddr, usize>);

/// Another instance's counts older than this are gone (it stopped, or its
/// notes did): each instance repeats its counts every second.
const HEARD_FOR: Duration = Duration::from_secs(5);

impl Connections {
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &crate::config::Limits) -> Option<ConnSlot> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= limits.max_connections {
            crate::metrics::limit_hit("connections");
            return None;
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= limits.max_connections_per_ip {
            crate::metrics::limit_hit("connections_per_ip");
            return None;
        }
        let fleet = limits.fleet_max_connections_per_ip;
        if fleet > 0 && *n + self.elsewhere(ip) >= fleet {
            crate::metrics::limit_hit("connections_per_ip_fleet");
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(ConnSlot {
            connections: self.clone(),
            ip,
        })
    }
}

impl Connections {
    /// Connections from `ip` the other instances told of lately.
    fn elsewhere(&self, ip: IpAddr) -> usize {
        let elsewhere = self.elsewhere.lock().unwrap_or_else(|p| p.into_inner());
        elsewhere
            .values()
            .filter(|(at, _)| at.elapsed() < HEARD_FOR)
            .filter_map(|(_, counts)| counts.get(&ip))
            .sum()
    }

    /// Instance `from` has these connections by address (its busiest).
    pub fn heard(&self, from: u64, counts: &[(IpAddr, u32)]) {
        let mut elsewhere = self.elsewhere.lock().unwrap_or_else(|p| p.into_inner());
        elsewhere.retain(|_, (at, _)| at.elapsed() < HEARD_FOR);
        let counts = counts.iter().map(|&(ip, n)| (ip, n as usize)).collect();
        elsewhere.insert(from, (Instant::now(), counts));
    }

    /// This instance's addresses with at least `floor` connections, the
    /// busiest `most` of them.
    pub fn busiest(&self, floor: usize, most: usize) -> Vec<(IpAddr, u32)> {
        let per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let mut busy: Vec<(IpAddr, u32)> = per_ip
            .iter()
            .filter(|(_, n)| **n >= floor)
            .map(|(ip, n)| (*ip, *n as u32))
            .collect();
        busy.sort_unstable_by_key(|(_, n)| std::cmp::Reverse(*n));
        busy.truncate(most);
        busy
    }
}

/// One admitted connection.
pub struct ConnSlot {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let c = &self.connections;
        let mut per_ip = c.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        c.total.fetch_sub(1, Ordering::Relaxed);
    }
}
