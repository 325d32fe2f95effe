//! Several Ferry instances sharing one PostgreSQL state store act as one:
//! what one instance learns that the others must act on travels as a small
//! note on one PostgreSQL channel (LISTEN/NOTIFY, `state::fleet`). Notes are
//! hints, never the record: durable state (subscriptions) is read back from
//! its table when a note names it, so a note lost while a connection was
//! down costs a moment's staleness, not a wrong answer for good (a lost
//! connection reloads everything once it is back).
//!
//! Sessions never wait for the database: a note is queued (bounded; dropped
//! and counted when PostgreSQL cannot keep up) and one task sends the queue
//! in order. With SQLite an instance is alone and nothing is sent.

use std::{net::IpAddr, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    context::Connections, control::Control, sessions::Sessions, state::State,
    subscriptions::Subscriptions, throttle::Throttle,
};

/// Notes waiting to be sent; beyond this they are dropped (PostgreSQL is
/// down or slow, and a login storm must not grow memory).
const QUEUE: usize = 10_000;

/// What one instance tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// The user's `Old/` subscriptions changed in the store: read them again.
    Subscriptions { user: String },
    /// A login failed here (`pair`: the fleet-keyed hash of user and
    /// password, never the password).
    LoginFailed { ip: IpAddr, user: String, pair: u64 },
    /// A login succeeded here: the user's failures are forgiven.
    LoginSucceeded { user: String },
    /// A store refused a login Ferry made for a user (fleet-keyed hash).
    StoreFailed { key: u64 },
    /// The admin API ended the user's sessions.
    EndSessions { user: String },
    /// The admin API set or cleared the user's phase: read it again.
    Phase { user: String },
    /// The sender's busiest client addresses and their connections (the
    /// fleet-wide per-address limit), repeated every second while any.
    Connections { counts: Vec<(IpAddr, u32)> },
}

/// Addresses a [`Note::Connections`] names at most (a notification carries
/// under 8,000 bytes).
const BUSIEST: usize = 100;

/// A note with its sender, as it travels.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: u64,
    #[serde(flatten)]
    note: Note,
}

/// This instance's side of the fleet: where its notes go.
#[derive(Debug)]
pub struct Fleet {
    /// Tells this instance's notes from the others' (random per start).
    instance: u64,
    queue: Option<mpsc::Sender<String>>,
}

impl Fleet {
    /// An instance on its own: notes go nowhere.
    pub fn alone() -> Arc<Fleet> {
        Arc::new(Fleet {
            instance: 0,
            queue: None,
        })
    }

    /// Joins the instances sharing `state` (when it is PostgreSQL): starts
    /// the task that sends this instance's notes.
    pub fn join(state: Arc<State>) -> Arc<Fleet> {
        if !state.is_shared() {
            return Fleet::alone();
        }
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        tokio::spawn(async move {
            while let Some(payload) = rx.recv().await {
                match state.notify(&payload).await {
                    Ok(()) => crate::metrics::fleet_note("sent"),
                    Err(e) => {
                        crate::metrics::fleet_note("failed");
                        tracing::warn!(error = %e, "cannot tell the other instances");
                    }
                }
            }
        });
        Arc::new(Fleet {
            instance: u64::from_le_bytes(crate::state::fleet::random_bytes()),
            queue: Some(tx),
        })
    }

    /// Whether other instances hear this one.
    pub fn is_shared(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues `note` for every instance (this one included: see [`listen`]).
    pub fn send(&self, note: Note) {
        let Some(queue) = &self.queue else { return };
        let envelope = Envelope {
            from: self.instance,
            note,
        };
        let payload = serde_json::to_string(&envelope).expect("notes serialise");
        if queue.try_send(payload).is_err() {
            crate::metrics::fleet_note("dropped");
        }
    }
}

/// Who acts on the notes this instance hears.
pub struct Recipients {
    pub subscriptions: Arc<Subscriptions>,
    pub throttle: Arc<Throttle>,
    pub sessions: Arc<Sessions>,
    pub control: Arc<Control>,
    pub state: Arc<State>,
    pub connections: Arc<Connections>,
}

impl Recipients {
    /// Every phase the admin API set, read again; false when the store
    /// cannot be read.
    async fn refresh_phases(&self) -> bool {
        match self.state.phases().await {
            Ok(phases) => {
                self.control
                    .replace_api_phases(phases.into_iter().collect());
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the phases the admin API set");
                false
            }
        }
    }

    /// Acts on one note from instance `from`; `own`: this instance sent it.
    async fn act(&self, note: Note, from: u64, own: bool) {
        match note {
            // Our own too: the row read back is at least as new as the write
            // the note follows, whatever order writes landed in.
            Note::Subscriptions { user } => self.subscriptions.refresh(&user).await,
            // The sender counted its own already.
            _ if own => {}
            Note::LoginFailed { ip, user, pair } => {
                self.throttle
                    .remote_failed(std::time::Instant::now(), ip, &user, pair)
            }
            Note::LoginSucceeded { user } => self.throttle.forgive(&user),
            Note::StoreFailed { key } => self
                .throttle
                .remote_store_failed(std::time::Instant::now(), key),
            Note::Phase { user } => match self.state.phase(&user).await {
                Ok(phase) => {
                    self.control.set_api_phase(&user, phase);
                }
                Err(e) => {
                    tracing::warn!(user = %user, error = %e, "cannot read a phase the admin API set")
                }
            },
            Note::Connections { counts } => self.connections.heard(from, &counts),
            Note::EndSessions { user } => {
                let ended = self.sessions.end(&user);
                tracing::info!(user = %user, ended, "sessions ended by the admin API of another instance");
            }
        }
    }
}

/// Tells the other instances, every second, which client addresses have
/// the most connections here, while the fleet-wide per-address limit is on
/// and any address has its share (`limit / 16`) or had it a second ago.
pub async fn tell_connections(
    fleet: Arc<Fleet>,
    connections: Arc<Connections>,
    live: tokio::sync::watch::Receiver<Arc<crate::context::Live>>,
    shutdown: CancellationToken,
) {
    if !fleet.is_shared() {
        return;
    }
    let mut told = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let limit = live.borrow().config.limits.fleet_max_connections_per_ip;
        if limit == 0 {
            continue;
        }
        let counts = connections.busiest((limit / 16).max(1), BUSIEST);
        if counts.is_empty() && !told {
            continue;
        }
        told = !counts.is_empty();
        fleet.send(Note::Connections { counts });
    }
}

/// Hears the fleet's notes until `shutdown` and hands them to `to`. A lost
/// connection is made again; once it is, every subscription is read again
/// (notes sent meanwhile were missed).
pub async fn listen(
    state: Arc<State>,
    fleet: Arc<Fleet>,
    to: Recipients,
    shutdown: CancellationToken,
) {
    if !fleet.is_shared() {
        return;
    }
    let mut listener = loop {
        match state.listener().await {
            Ok(Some(l)) => break l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen to the other instances; trying again");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    loop {
        let heard = tokio::select! {
            () = shutdown.cancelled() => return,
            heard = listener.try_recv() => heard,
        };
        match heard {
            Ok(Some(n)) => match serde_json::from_str::<Envelope>(n.payload()) {
                Ok(e) => {
                    crate::metrics::fleet_note("received");
                    to.act(e.note, e.from, e.from == fleet.instance).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a note from another instance that Ferry does not know; ignored")
                }
            },
            // The connection was lost (`None`) or failed: listen again, then
            // read again what notes sent meanwhile would have named.
            lost => {
                if let Err(e) = lost {
                    tracing::warn!(error = %e, "cannot hear the other instances");
                }
                tracing::warn!("lost the connection that hears the other instances; reconnecting");
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    // `listen` connects again (and listens on every channel).
                    if listener.listen(crate::state::fleet::CHANNEL).await.is_ok()
                        && to.subscriptions.refresh_all().await
                        && to.refresh_phases().await
                    {
                        break;
                    }
                }
                tracing::info!("hearing the other instances again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_travel_as_small_json() {
        let e = Envelope {
            from: 7,
            note: Note::LoginFailed {
                ip: "192.0.2.1".parse().unwrap(),
                user: "alice".into(),
                pair: u64::MAX,
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"from":7,"note":"login_failed","ip":"192.0.2.1","user":"alice","pair":18446744073709551615}"#
        );
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.note, e.note);
        assert!(serde_json::from_str::<Envelope>(r#"{"from":1,"note":"new_kind"}"#).is_err());
    }
}
