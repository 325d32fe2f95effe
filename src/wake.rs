//! A session task is woken for every burst of bytes, and `select!` then polls
//! each of its branches. Futures that wait on state every session shares (a
//! reload, shutdown) would take a lock shared by all sessions on each poll,
//! and each socket read that finds nothing still costs a readiness check and
//! a waker registration. A [`Gate`] polls what it guards only after that
//! thing's own waker fired (or it last gave something): a forwarded command
//! polls only the socket that has data, never that lock.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

/// Polls its source only when the source asked to be (and at first).
pub struct Gate {
    state: Arc<State>,
    /// The waker the source is polled with: it marks the gate open and wakes
    /// the task.
    own: Waker,
    /// The task's waker last stored in `state`: while it stays the same
    /// (always, for a session), a poll takes no lock.
    registered: Option<Waker>,
}

struct State {
    woken: AtomicBool,
    /// The task to wake; per gate, so its lock is never contended.
    task: Mutex<Option<Waker>>,
}

impl Wake for State {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        let state = Arc::new(State {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Gate {
            own: Waker::from(state.clone()),
            state,
            registered: None,
        }
    }
}

impl Gate {
    /// The source is new (a socket after TLS or COMPRESS, a store after a
    /// login): it has registered nothing yet, so it is polled next time.
    pub fn open(&mut self) {
        self.state.woken.store(true, Ordering::Release);
    }

    /// `poll` with the gate's waker if the source woke since it last said
    /// Pending; else Pending at once. A source that gave something is
    /// polled again next time: it may hold more (a TLS or deflate buffer).
    pub fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if !self
            .registered
            .as_ref()
            .is_some_and(|t| t.will_wake(cx.waker()))
        {
            let waker = cx.waker().clone();
            *self.state.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
            self.registered = Some(waker);
        }
        if !self.state.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let out = poll(&mut Context::from_waker(&self.own));
        if out.is_ready() {
            self.open();
        }
        out
    }
}

/// `F`, polled only when it asked to be (and once at first).
pub struct WhenWoken<F> {
    inner: Pin<Box<F>>,
    gate: Gate,
}

impl<F: Future> WhenWoken<F> {
    pub fn new(inner: F) -> Self {
        WhenWoken {
            inner: Box::pin(inner),
            gate: Gate::default(),
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.gate.poll(cx, |cx| inner.as_mut().poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `open` is set, and wakes through the
    /// waker it was last given.
    struct Door {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Door {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn polls_the_inner_future_only_when_it_was_woken() {
        let (polls, open, waker) = (Arc::default(), Arc::default(), Arc::default());
        let door = Door {
            polls: Arc::clone(&polls),
            open: Arc::clone(&open),
            waker: Arc::clone(&waker),
        };
        let mut f = std::pin::pin!(WhenWoken::new(door));
        let task_woken = Arc::new(Flag::default());
        let task = Waker::from(task_woken.clone());
        let mut cx = Context::from_waker(&task);
        for _ in 0..5 {
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once at first");
        // Polled from elsewhere: the new waker is the one woken.
        let moved_woken = Arc::new(Flag::default());
        let moved = Waker::from(moved_woken.clone());
        assert!(
            f.as_mut()
                .poll(&mut Context::from_waker(&moved))
                .is_pending()
        );
        open.store(true, Ordering::SeqCst);
        waker.lock().unwrap().take().unwrap().wake();
        assert!(moved_woken.0.load(Ordering::SeqCst), "the task is woken");
        assert!(
            !task_woken.0.load(Ordering::SeqCst),
            "not through its old waker"
        );
        assert!(f.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_gate_polls_its_source_when_woken_or_after_it_gave_something() {
        let task = Waker::from(Arc::new(Flag::default()));
        let mut cx = Context::from_waker(&task);
        let mut gate = Gate::default();
        let polls = std::cell::Cell::new(0);
        let source: std::cell::RefCell<Option<Waker>> = Default::default();
        let mut poll = |gate: &mut Gate, ready: bool| {
            gate.poll(&mut cx, |cx| {
                polls.set(polls.get() + 1);
                *source.borrow_mut() = Some(cx.waker().clone());
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
        };
        for _ in 0..3 {
            assert!(poll(&mut gate, false).is_pending());
        }
        assert_eq!(polls.get(), 1, "polled at first only");
        source.borrow_mut().take().unwrap().wake();
        assert!(poll(&mut gate, true).is_ready());
        // It gave something: it may hold more, so it is polled again.
        assert!(poll(&mut gate, false).is_pending());
        assert!(poll(&mut gate, false).is_pending());
        assert_eq!(polls.get(), 3);
        // A new source behind the gate is polled at once.
        gate.open();
        assert!(poll(&mut gate, true).is_ready());
        assert_eq!(polls.get(), 4);
    }

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}
