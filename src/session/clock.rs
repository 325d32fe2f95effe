//! Every deadline of a session, decided from the `now` each event brings:
//! the pre-auth and idle timeouts, a store that owes an answer, renewing a
//! long IDLE, the phase-change drain, shutdown, and OLD's reconnect backoff.
//! The driver only sleeps until [`Session::poll_timeout`].

use std::time::{Duration, Instant};

use super::{Report, Session, Shared, Store};

/// Why a session is to be ended at its next safe point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Shutdown,
    PhaseChange,
    Admin,
}

impl Ending {
    fn end(self) -> super::End {
        match self {
            Ending::Shutdown => super::End::Shutdown,
            Ending::PhaseChange => super::End::PhaseChange,
            Ending::Admin => super::End::Admin,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Ending::Shutdown => "Server shutting down, please reconnect.",
            Ending::PhaseChange => {
                "Your mailbox is moving to its next migration phase; please reconnect to continue."
            }
            Ending::Admin => "Your session was ended by the administrator; please reconnect.",
        }
    }
}

/// OLD's first reconnect attempt waits this long; each failure doubles it.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
/// After a failed attempt at this wait, OLD is given up.
const RECONNECT_LAST: Duration = Duration::from_secs(4);

pub(super) struct Clock {
    /// The time of the event being handled.
    pub(super) now: Instant,
    /// The client is logged out when silent (and its stores too) past this.
    client_deadline: Instant,
    /// Why and from when the session is to end at its next safe point
    /// (a phase change is spread over the drain window).
    ending: Option<(Ending, Instant)>,
    /// OLD reconnecting under an open folder (rare: boxed, idle sessions
    /// are thousands).
    reconnect: Option<Box<Reconnect>>,
}

struct Reconnect {
    /// When the next attempt is made; `None` while one is under way.
    at: Option<Instant>,
    /// The wait before that attempt.
    wait: Duration,
}

impl Clock {
    pub(super) fn new(now: Instant, preauth_timeout: Duration) -> Self {
        Self {
            now,
            client_deadline: now + preauth_timeout,
            ending: None,
            reconnect: None,
        }
    }

    /// OLD is back: no more attempts.
    pub(super) fn reconnected(&mut self) {
        self.reconnect = None;
    }
}

/// Where in `[0, window)` session `id` is ended when many are: spread evenly
/// (a multiplicative hash of the id), so reconnects do not come all at once.
fn spread(id: u64, window: Duration) -> Duration {
    let unit = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    window.mul_f64(unit)
}

impl Session {
    fn limit(&self, secs: impl Fn(&crate::config::Limits) -> u64) -> Duration {
        Duration::from_secs(secs(&self.cfg.config.limits))
    }

    /// How long the client may stay silent, before and after logging in.
    fn client_timeout(&self) -> Duration {
        if self.is_authenticated() {
            self.limit(|l| l.idle_timeout_secs)
        } else {
            self.limit(|l| l.preauth_timeout_secs)
        }
    }

    /// The client (or a store working for it) was heard from.
    pub(super) fn client_active(&mut self) {
        self.clock.client_deadline = self.clock.now + self.client_timeout();
    }

    /// When the session next needs [`Event::Timeout`](super::Event::Timeout),
    /// if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let c = &self.clock;
        let store = self
            .awaiting_store()
            .and_then(|s| self.stores[s.index()].as_ref())
            .map(|conn| conn.active + self.limit(|l| l.backend_command_timeout_secs));
        let refresh = self
            .running_idle()
            .map(|i| i.since + self.limit(|l| l.idle_refresh_secs));
        [
            Some(c.client_deadline),
            store,
            refresh,
            // Once due, the session waits for a safe point, not the clock.
            c.ending.map(|(_, at)| at).filter(|at| *at > c.now),
            c.reconnect.as_ref().and_then(|r| r.at),
            self.held_login(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whatever deadline has passed at `self.clock.now`.
    pub(super) fn timeout(&mut self) {
        let now = self.clock.now;
        if now >= self.clock.client_deadline {
            tracing::debug!("client timed out");
            let limit = if self.is_authenticated() {
                "idle_timeout"
            } else {
                "preauth_timeout"
            };
            self.report(Report::LimitHit(limit));
            let why = if self.is_authenticated() {
                super::End::IdleTimeout
            } else {
                super::End::PreauthTimeout
            };
            self.end("Autologout; idle for too long", why);
            self.clock.client_deadline = now + self.client_timeout();
        } else if let Some(store) = self.awaiting_store()
            && let Some(conn) = self.stores[store.index()].as_ref()
            && now >= conn.active + self.limit(|l| l.backend_command_timeout_secs)
        {
            tracing::warn!(
                store = store.as_str(),
                "store did not answer in time; giving it up"
            );
            self.report(Report::LimitHit("backend_timeout"));
            self.report(Report::BackendError(store, "timeout"));
            self.backend_closed(store);
        }
        if let Some(r) = &mut self.clock.reconnect
            && r.at.is_some_and(|at| now >= at)
        {
            r.at = None;
            self.reconnect_attempt();
        }
        if self.held_login().is_some_and(|at| now >= at) {
            self.release_login();
        }
    }

    fn reconnect_attempt(&mut self) {
        let super::Mode::Merged(m) = &self.mode else {
            return;
        };
        let credentials = m.credentials.clone();
        if !self.login_on_behalf(Store::Old, &credentials, crate::config::Phase::Merged) {
            self.login_done(Store::Old, Err(super::LoginFailure::Rejected));
        }
    }

    /// Ferry shuts down: the session ends at its next safe point (before
    /// any phase-change end still to come).
    pub(super) fn shut_down(&mut self) {
        self.clock.ending = Some((Ending::Shutdown, self.clock.now));
    }

    /// An admin ended the user's sessions: at the next safe point, unless
    /// the session is already ending.
    pub(super) fn end_soon(&mut self) {
        if self.clock.ending.is_none() {
            tracing::info!("ending the session: an admin asked");
            self.clock.ending = Some((Ending::Admin, self.clock.now));
        }
    }

    /// A new configuration: a session not logged in yet takes it; a
    /// logged-in session whose user's phase changed is ended within the
    /// drain window.
    pub(super) fn reload(&mut self, config: std::sync::Arc<crate::config::Config>) {
        let Some((user, phase)) = self.login_info() else {
            self.cfg.config = config;
            return;
        };
        let now_phase = config.migration.phase_for(user);
        if now_phase == phase || self.clock.ending.is_some() {
            return;
        }
        tracing::info!(
            from = phase.as_str(),
            to = now_phase.as_str(),
            "phase changed by reload"
        );
        let window = Duration::from_secs(config.migration.drain_secs);
        let at = self.clock.now + spread(self.cfg.id, window);
        self.clock.ending = Some((Ending::PhaseChange, at));
    }

    /// After every event: end the session if it is to end and at a safe
    /// point (an IDLE is ended with its store first), and keep a long IDLE
    /// renewed toward its store.
    pub(super) fn settle(&mut self) {
        self.settle_ending();
        self.report_phase();
    }

    fn settle_ending(&mut self) {
        if let Some((ending, at)) = self.clock.ending
            && self.clock.now >= at
            && !self.closed
        {
            if self.is_idle() {
                if ending == Ending::PhaseChange {
                    self.report(Report::PhaseDisconnect);
                    tracing::info!("ending the session: the user's phase changed");
                }
                self.end(ending.text(), ending.end());
                return;
            }
            self.leave_idle();
        }
        let refresh = self.limit(|l| l.idle_refresh_secs);
        if self
            .running_idle()
            .is_some_and(|i| self.clock.now >= i.since + refresh)
        {
            self.refresh_idle();
        }
    }
}

impl Shared {
    /// OLD is to be logged in to again after it went away: first after a
    /// short wait (a store that restarts takes a few seconds).
    pub(super) fn reconnect_soon(&mut self) {
        self.clock.reconnect = Some(Box::new(Reconnect {
            at: Some(self.clock.now + RECONNECT_FIRST),
            wait: RECONNECT_FIRST,
        }));
    }

    /// A reconnect attempt failed with the store unavailable: `true` when
    /// another is scheduled (0.5, 1, 2, 4 s apart), `false` to give up.
    pub(super) fn reconnect_again(&mut self) -> bool {
        match &mut self.clock.reconnect {
            Some(r) if r.wait < RECONNECT_LAST => {
                r.wait *= 2;
                r.at = Some(self.clock.now + r.wait);
                true
            }
            _ => {
                self.clock.reconnect = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_in_the_window() {
        let w = Duration::from_secs(60);
        for id in 0..1000 {
            assert!(spread(id, w) < w);
        }
        assert_eq!(spread(7, Duration::ZERO), Duration::ZERO);
    }
}
