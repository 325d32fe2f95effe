//! The only async glue: moves bytes between the client, the stores and the
//! sans-IO [`Session`], and performs its actions.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::BytesMut;
use tokio::{
    io::AsyncWriteExt,
    sync::watch,
    time::{Instant, Sleep},
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::debug;

use crate::{
    backend::{self, BackendError, Connected},
    context::{Ctx, Live, live_changed},
    metrics::{self, Flow},
    proxy::Addresses,
    session::{Action, Event, Session, SessionConfig, Store},
    tls::MaybeTls,
    wake::{Gate, WhenWoken},
    wire::{self, Client, Outbox, write_parts},
};

type Login = Pin<Box<dyn Future<Output = Result<Connected, BackendError>> + Send>>;

/// While a command runs, client input beyond this waits in the socket.
const PIPELINE_BOUND: usize = 16 * 1024;

/// The sockets and I/O bookkeeping of one session.
struct Io {
    client: Option<Client>,
    stores: [Option<MaybeTls>; 2],
    logins: [Option<Login>; 2],
    /// When to read the client and each store (`wake::Gate`): opened
    /// whenever a stream is replaced.
    client_gate: Gate,
    store_gates: [Gate; 2],
    /// Writes gathered per peer, sent as one burst each.
    out: Outboxes,
}

#[derive(Default)]
struct Outboxes {
    client: Outbox,
    stores: [Outbox; 2],
}

/// Runs one client session to its end: each readiness becomes one
/// [`Event`], the session's actions are performed, and the task sleeps until
/// the next readiness or the session's next deadline.
pub async fn serve(
    client: MaybeTls,
    addrs: Addresses,
    listener: &'static str,
    id: u64,
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
) {
    let tls = matches!(client, MaybeTls::Tls(_));
    let mut live_rx = ctx.live.clone();
    let live = live_rx.borrow_and_update().clone();
    let cfg = SessionConfig {
        config: live.config.clone(),
        tls,
        starttls: !tls && ctx.acceptor.is_some(),
        subscriptions: ctx.subscriptions.clone(),
        id,
        client: addrs.client,
        local: addrs.local,
        throttle: ctx.throttle.clone(),
        served: ctx.served.clone(),
    };
    let reporter = Box::new(metrics::Recorder::new(listener, ctx.activity.clone()));
    let mut session = Session::new(cfg, now(), reporter);
    let mut io = Io {
        client: Some(Client::Raw(client)),
        stores: [None, None],
        logins: [None, None],
        client_gate: Gate::default(),
        store_gates: Default::default(),
        out: Outboxes::default(),
    };
    // One timer serves every deadline. It is moved only when the session
    // wants to be woken earlier than it is armed for; when deadlines move
    // later (activity), it fires early, finds nothing due and is armed again.
    // (Re-arming a timer per command wakes the runtime's driver each time.)
    let mut timer = std::pin::pin!(tokio::time::sleep(Duration::from_secs(3600)));
    // Long-lived too, and polled only when they fire: a forwarded command
    // never touches the state all sessions share.
    let mut waits = Waits {
        timer_gate: Gate::default(),
        timer_armed: false,
        cancelled: WhenWoken::new(shutdown.cancelled_owned()),
        shutting_down: false,
        live_changes: WhenWoken::new(live_changed(live_rx)),
        live_gone: false,
        ended_by_admin: None,
        turn: 0,
    };
    // Once logged in, the session is known by its user (admin API).
    let mut registered = None;

    'session: loop {
        // Known by its user before the client hears the login went through.
        if registered.is_none()
            && let Some((user, _)) = session.login_info()
        {
            let r = ctx.sessions.register(user);
            waits.ended_by_admin = Some(WhenWoken::new(r.ended.clone().cancelled_owned()));
            registered = Some(r);
        }
        // Perform everything the session asked for.
        while let Some(action) = next_action(&mut session, &mut io).await {
            if !perform(action, &mut session, &mut io, &ctx).await {
                break 'session;
            }
        }
        if let Some(at) = session.poll_timeout().map(Instant::from_std)
            && (!waits.timer_armed || at < timer.deadline())
        {
            timer.as_mut().reset(at);
            waits.timer_armed = true;
            // Polled once more, to register with the timer as it is now.
            waits.timer_gate.open();
        }
        // While a command runs, keep reading a little: a client that hangs up
        // must be noticed (a copy in flight is then undone), and pipelined
        // commands wait in the session's buffer, which this bounds.
        let read_client = io.client.is_some()
            && (session.wants_client_input() || session.client_buffered() < PIPELINE_BOUND);
        let woke =
            std::future::poll_fn(|cx| waits.poll(cx, &mut io, timer.as_mut(), read_client)).await;
        match woke {
            Woke::Client(Ok(b)) if !b.is_empty() => {
                metrics::count_bytes(Flow::ClientIn, b.len());
                session.handle(now(), Event::ClientBytes(b));
            }
            Woke::Client(_) => {
                io.client = None;
                session.handle(now(), Event::ClientClosed);
            }
            Woke::Store(store, r) => store_read(&mut session, &mut io, store, r),
            Woke::Login(store, r) => login_result(&mut session, &mut io, store, r),
            Woke::Timer => {
                waits.timer_armed = false;
                session.handle(now(), Event::Timeout);
            }
            Woke::EndedByAdmin => {
                waits.ended_by_admin = None;
                session.handle(now(), Event::EndedByAdmin);
            }
            Woke::Shutdown => {
                waits.shutting_down = true;
                session.handle(now(), Event::Shutdown);
            }
            Woke::Live(Some((rx, live))) => {
                waits.live_changes = WhenWoken::new(live_changed(rx));
                session.handle(now(), Event::Reload(live.config.clone()));
            }
            // Ferry itself is gone; the shutdown token ends the session.
            Woke::Live(None) => waits.live_gone = true,
        }
    }
}

type LiveChanged = Option<(watch::Receiver<Arc<Live>>, Arc<Live>)>;

/// What woke a session.
enum Woke {
    Client(io::Result<BytesMut>),
    Store(Store, io::Result<BytesMut>),
    Login(Store, Result<Connected, BackendError>),
    Timer,
    EndedByAdmin,
    Shutdown,
    Live(LiveChanged),
}

/// What a session waits for besides its sockets and logins.
struct Waits<C, L> {
    timer_gate: Gate,
    /// False once the timer fired, until the session sets a deadline again.
    timer_armed: bool,
    cancelled: WhenWoken<C>,
    shutting_down: bool,
    live_changes: WhenWoken<L>,
    live_gone: bool,
    ended_by_admin: Option<WhenWoken<WaitForCancellationFutureOwned>>,
    /// Which socket is asked first: each in turn, so that a peer that
    /// always has more cannot starve the others.
    turn: u8,
}

impl<C, L> Waits<C, L>
where
    C: Future<Output = ()>,
    L: Future<Output = LiveChanged>,
{
    /// The first source that has something. Each is behind a gate (or
    /// absent), so a forwarded command polls only the socket with data:
    /// unlike `select!`, nothing else is polled and no waker re-registered.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Io,
        mut timer: Pin<&mut Sleep>,
        read_client: bool,
    ) -> Poll<Woke> {
        self.turn = (self.turn + 1) % 3;
        for k in 0..3 {
            let r = match (self.turn + k) % 3 {
                0 if read_client => {
                    wire::poll_read(&mut io.client_gate, &mut io.client, cx).map(Woke::Client)
                }
                0 => continue,
                1 => wire::poll_read(&mut io.store_gates[0], &mut io.stores[0], cx)
                    .map(|r| Woke::Store(Store::Old, r)),
                _ => wire::poll_read(&mut io.store_gates[1], &mut io.stores[1], cx)
                    .map(|r| Woke::Store(Store::New, r)),
            };
            if r.is_ready() {
                return r;
            }
        }
        for store in [Store::Old, Store::New] {
            if let Some(login) = io.logins[store.index()].as_mut()
                && let Poll::Ready(r) = login.as_mut().poll(cx)
            {
                return Poll::Ready(Woke::Login(store, r));
            }
        }
        if self.timer_armed
            && self
                .timer_gate
                .poll(cx, |cx| timer.as_mut().poll(cx))
                .is_ready()
        {
            return Poll::Ready(Woke::Timer);
        }
        if let Some(ended) = self.ended_by_admin.as_mut()
            && Pin::new(ended).poll(cx).is_ready()
        {
            return Poll::Ready(Woke::EndedByAdmin);
        }
        if !self.shutting_down && Pin::new(&mut self.cancelled).poll(cx).is_ready() {
            return Poll::Ready(Woke::Shutdown);
        }
        if !self.live_gone
            && let Poll::Ready(changed) = Pin::new(&mut self.live_changes).poll(cx)
        {
            return Poll::Ready(Woke::Live(changed));
        }
        Poll::Pending
    }
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// What a store's socket gave: its bytes go to the session, its end closes it.
fn store_read(session: &mut Session, io: &mut Io, store: Store, read: io::Result<BytesMut>) {
    let i = store.index();
    match read {
        Ok(b) if !b.is_empty() => {
            metrics::count_bytes(Flow::store_in(i), b.len());
            session.handle(now(), Event::StoreBytes(store, b));
        }
        _ => {
            io.stores[i] = None;
            session.handle(now(), Event::StoreClosed(store));
        }
    }
}

fn login_result(
    session: &mut Session,
    io: &mut Io,
    store: Store,
    result: Result<Connected, BackendError>,
) {
    io.logins[store.index()] = None;
    match result {
        Ok(connected) => {
            io.stores[store.index()] = Some(connected.stream);
            io.store_gates[store.index()].open();
            session.handle(now(), Event::LoggedIn(store, Ok(connected.info)));
            if !connected.rest.is_empty() {
                session.handle(now(), Event::StoreBytes(store, connected.rest.into()));
            }
        }
        Err(e) => session.handle(now(), Event::LoggedIn(store, Err(e.failure()))),
    }
}

/// Writes the client's burst; a client that cannot be written to is gone.
async fn write_client(session: &mut Session, io: &mut Io) {
    let parts = &mut io.out.client;
    let Some(c) = io.client.as_mut() else {
        parts.clear();
        return;
    };
    match c.write(&mut parts.parts).await {
        Ok(n) => metrics::count_bytes(Flow::ClientOut, n),
        Err(e) => {
            debug!(error = %e, "client connection failed");
            io.client = None;
            session.handle(now(), Event::ClientClosed);
        }
    }
    parts.clear();
}

/// Writes a store's burst; a store that cannot be written to is gone for
/// the session.
async fn write_store(session: &mut Session, io: &mut Io, store: Store) {
    let i = store.index();
    let parts = &mut io.out.stores[i];
    let Some(s) = io.stores[i].as_mut() else {
        parts.clear();
        return;
    };
    match write_parts(s, &mut parts.parts).await {
        Ok(n) => metrics::count_bytes(Flow::store_out(i), n),
        Err(_) => {
            io.stores[i] = None;
            session.handle(now(), Event::StoreClosed(store));
        }
    }
    parts.clear();
}

/// Beyond this, queued writes are sent before more are gathered.
const BATCH: usize = 64 * 1024;

/// Sends what is gathered: the stores' bursts, then the client's.
async fn flush(session: &mut Session, io: &mut Io) {
    for store in [Store::Old, Store::New] {
        if !io.out.stores[store.index()].is_empty() {
            write_store(session, io, store).await;
        }
    }
    if !io.out.client.is_empty() {
        write_client(session, io).await;
    }
}

/// Performs the session's writes, gathered per peer (one system call per
/// burst), and returns its next action that is not a write.
async fn next_action(session: &mut Session, io: &mut Io) -> Option<Action> {
    loop {
        match session.poll_action() {
            Some(Action::ToClient(b)) => io.out.client.push(b),
            Some(Action::ToBackend(s, b)) => io.out.stores[s.index()].push(b),
            other => {
                flush(session, io).await;
                return other;
            }
        }
        if io.out.client.len >= BATCH || io.out.stores.iter().any(|s| s.len >= BATCH) {
            flush(session, io).await;
        }
    }
}

/// Performs one action that is not a write; `false` ends the session.
async fn perform(action: Action, session: &mut Session, io: &mut Io, ctx: &Ctx) -> bool {
    match action {
        // Gathered by next_action; a single one takes the same path.
        Action::ToClient(b) => {
            io.out.client.push(b);
            flush(session, io).await;
        }
        Action::ToBackend(s, b) => {
            io.out.stores[s.index()].push(b);
            flush(session, io).await;
        }
        Action::StartTls => {
            let (Some(Client::Raw(MaybeTls::Plain(tcp))), Some(acceptor)) =
                (io.client.take(), ctx.acceptor.as_ref())
            else {
                return false;
            };
            match crate::tls::accept(acceptor, tcp, Duration::from_secs(30)).await {
                Ok(tls) => {
                    io.client = Some(Client::Raw(tls));
                    io.client_gate.open();
                    session.handle(now(), Event::TlsEstablished);
                }
                // After STARTTLS even a silent close is a failed handshake.
                Err(e) => {
                    debug!(error = %e, "TLS handshake failed");
                    metrics::tls_handshake_failed("imap");
                    session.handle(now(), Event::ClientClosed);
                    return false;
                }
            }
        }
        Action::Compress { read_ahead } => {
            debug!(
                read_ahead = read_ahead.len(),
                "client connection compressed"
            );
            io.client = io.client.take().map(|c| c.compressed(&read_ahead));
            // It may hold inflated read-ahead already.
            io.client_gate.open();
            metrics::compression_started();
        }
        Action::Login {
            store,
            auth,
            id,
            layout,
        } => {
            let live = ctx.live.borrow().clone();
            let target = match store {
                Store::Old => live.old.clone(),
                Store::New => live.new.clone(),
            };
            let timeout = Duration::from_secs(live.config.limits.backend_connect_timeout_secs);
            let tokens = ctx.tokens.clone();
            io.logins[store.index()] = Some(Box::pin(async move {
                let id = id.as_deref();
                backend::log_in(&target, store, &auth, id, layout, &tokens, timeout).await
            }));
        }
        Action::CloseBackend(store) => {
            if let Some(mut s) = io.stores[store.index()].take() {
                // Let the store see our LOGOUT, but never wait long for it.
                let _ = tokio::time::timeout(Duration::from_millis(200), s.shutdown()).await;
            }
        }
        Action::Close => {
            if let Some(mut c) = io.client.take() {
                let _ = tokio::time::timeout(Duration::from_secs(1), c.shutdown()).await;
            }
            return false;
        }
    }
    true
}
