//! The one IDLE state machine, for every phase: a client's IDLE on one
//! store, Ferry renewing it toward the store before the store's own
//! inactivity timer ends it (DONE, then IDLE again under the client's tag,
//! unseen by the client), and its end — by the client's DONE, or by Ferry's
//! when the session is to end at a safe point.

use std::time::Instant;

use bytes::Bytes;

use super::{Store, reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// IDLE sent; the store's `+` is the client's.
    Starting,
    /// The client is in IDLE and the store idles.
    Running,
    /// Ferry sent DONE to renew: the tagged OK is Ferry's to swallow.
    Renewing,
    /// IDLE sent again: its `+` is Ferry's to swallow.
    Resuming,
    /// DONE sent, by the client or (`by_ferry`) by Ferry: the tagged
    /// answer ends the IDLE.
    Ending { by_ferry: bool },
}

/// A running IDLE.
#[derive(Debug)]
pub(super) struct Idle {
    /// The client's tag, which the store's tagged answer carries.
    pub(super) tag: Bytes,
    pub(super) store: Store,
    state: State,
    /// Since when the store has idled (again): the renewal is due from it.
    pub(super) since: Instant,
}

/// What to do with the store's tagged answer to the IDLE.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tagged {
    /// Ferry's renewal was answered: send this (IDLE again) to the store.
    IdleAgain(Bytes),
    /// The IDLE is over: the answer goes to the client.
    Over,
}

const DONE: &[u8] = b"DONE\r\n";

impl Idle {
    pub(super) fn new(tag: &[u8], store: Store, now: Instant) -> Self {
        Idle {
            // Its own copy: a slice of the client's bytes would hold a
            // worker's read block for as long as the IDLE lasts.
            tag: Bytes::copy_from_slice(tag),
            store,
            state: State::Starting,
            since: now,
        }
    }

    /// The client is in IDLE and nothing is under way: it may be renewed
    /// or ended.
    pub(super) fn is_running(&self) -> bool {
        self.state == State::Running
    }

    /// Ferry is between its DONE and the store idling again: the store owes
    /// it an answer.
    pub(super) fn is_renewing(&self) -> bool {
        matches!(self.state, State::Renewing | State::Resuming)
    }

    /// The client's input waits: Ferry renews or ended the IDLE, and a
    /// `DONE` from the client now would be one too many.
    pub(super) fn holds_client(&self) -> bool {
        self.is_renewing() || self.state == State::Ending { by_ferry: true }
    }

    /// The store said `+` at `now`: true when the client is to see it.
    pub(super) fn continued(&mut self, now: Instant) -> bool {
        match self.state {
            State::Starting => {
                self.state = State::Running;
                self.since = now;
                true
            }
            State::Resuming => {
                // The renewed IDLE runs again; the client never saw it stop.
                self.state = State::Running;
                self.since = now;
                false
            }
            _ => true,
        }
    }

    /// Renews a running IDLE: the DONE to send to the store.
    pub(super) fn renew(&mut self) -> Option<Bytes> {
        self.is_running().then(|| {
            self.state = State::Renewing;
            Bytes::from_static(DONE)
        })
    }

    /// Ends the IDLE from the client's side (its DONE) or Ferry's (only
    /// once the store idles): the DONE to send to the store, if it is still
    /// to be sent.
    pub(super) fn end(&mut self, by_ferry: bool) -> Option<Bytes> {
        match (self.state, by_ferry) {
            (State::Running, _) | (State::Starting, false) => {
                self.state = State::Ending { by_ferry };
                Some(Bytes::from_static(DONE))
            }
            _ => None,
        }
    }

    /// The store's tagged answer to the IDLE (`ok`: it is an OK).
    pub(super) fn tagged(&mut self, ok: bool) -> Tagged {
        if self.state == State::Renewing && ok {
            self.state = State::Resuming;
            return Tagged::IdleAgain(reply::idle_again(&self.tag));
        }
        Tagged::Over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_unseen_and_done_ends_it() {
        let mut i = Idle::new(b"a2", Store::New, Instant::now());
        assert_eq!(i.renew(), None, "not before the store idles");
        assert!(i.continued(Instant::now()), "the first + is the client's");
        assert!(i.is_running());
        assert_eq!(i.renew().as_deref(), Some(DONE));
        assert!(i.is_renewing() && i.holds_client());
        assert_eq!(
            i.tagged(true),
            Tagged::IdleAgain(Bytes::from_static(b"a2 IDLE\r\n"))
        );
        assert!(
            !i.continued(Instant::now()),
            "the renewed IDLE's + is Ferry's"
        );
        assert!(i.is_running() && !i.holds_client());
        assert_eq!(i.end(false).as_deref(), Some(DONE));
        assert_eq!(i.end(true), None, "one DONE only");
        assert!(!i.holds_client());
        assert_eq!(i.tagged(true), Tagged::Over);
    }

    #[test]
    fn a_refused_renewal_ends_the_idle() {
        let mut i = Idle::new(b"t", Store::Old, Instant::now());
        i.continued(Instant::now());
        i.renew();
        assert_eq!(i.tagged(false), Tagged::Over);
        let mut i = Idle::new(b"t", Store::Old, Instant::now());
        assert_eq!(i.end(true), None, "Ferry waits for the store to idle");
        i.continued(Instant::now());
        assert!(i.end(true).is_some() && i.holds_client());
    }
}
