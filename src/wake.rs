//! A session task is woken for every burst of bytes, and `select!` then polls
//! each of its branches. Most are cheap, but futures that wait on state every
//! session shares (a reload, shutdown) take a lock shared by all sessions on
//! each poll. [`WhenWoken`] polls such a future only after the future's own
//! waker fired, so a forwarded command never touches that lock.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

/// `F`, polled only when it asked to be (and once at first).
pub struct WhenWoken<F> {
    inner: Pin<Box<F>>,
    state: Arc<State>,
    /// The waker last stored in `state`: while the task's waker stays the
    /// same (always, for a session), a poll takes no lock.
    registered: Option<Waker>,
}

struct State {
    woken: AtomicBool,
    /// The task to wake; per session, so its lock is never contended.
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

impl<F: Future> WhenWoken<F> {
    pub fn new(inner: F) -> Self {
        WhenWoken {
            inner: Box::pin(inner),
            state: Arc::new(State {
                woken: AtomicBool::new(true),
                task: Mutex::new(None),
            }),
            registered: None,
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if !this
            .registered
            .as_ref()
            .is_some_and(|t| t.will_wake(cx.waker()))
        {
            let waker = cx.waker().clone();
            *this.state.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
            this.registered = Some(waker);
        }
        if !this.state.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(this.state.clone());
        this.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `open` is set, and wakes through the
    /// waker it was last given.
    struct Gate {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Gate {
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
        let gate = Gate {
            polls: Arc::clone(&polls),
            open: Arc::clone(&open),
            waker: Arc::clone(&waker),
        };
        let mut f = std::pin::pin!(WhenWoken::new(gate));
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

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}
