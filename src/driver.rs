//! The only async glue: moves bytes between the client, the stores and the
//! sans-IO [`Session`], and performs its actions.

use std::{future::Future, io, pin::Pin, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use tokio::{io::AsyncWriteExt, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{
    backend::{self, BackendError, Connected},
    context::{Ctx, live_changed},
    metrics::{self, Flow},
    proxy::Addresses,
    session::{Action, Event, Session, SessionConfig, Store},
    tls::MaybeTls,
    wake::{Gate, WhenWoken},
    wire::{Client, Outbox, if_some, read_opt, write_parts},
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
    };
    // One timer serves every deadline. It is moved only when the session
    // wants to be woken earlier than it is armed for; when deadlines move
    // later (activity), it fires early, finds nothing due and is armed again.
    // (Re-arming a timer per command wakes the runtime's driver each time.)
    let mut timer = std::pin::pin!(tokio::time::sleep(Duration::from_secs(3600)));
    // Long-lived too, and polled only when they fire: a forwarded command
    // never touches the state all sessions share.
    let mut cancelled = WhenWoken::new(shutdown.cancelled_owned());
    let mut live_changes = WhenWoken::new(live_changed(live_rx));
    let mut shutting_down = false;
    let mut live_gone = false;
    // Once logged in, the session is known by its user (admin API).
    let mut registered = None;
    let mut ended_by_admin = None;

    'session: loop {
        // Known by its user before the client hears the login went through.
        if registered.is_none()
            && let Some((user, _)) = session.login_info()
        {
            let r = ctx.sessions.register(user);
            ended_by_admin = Some(WhenWoken::new(r.ended.clone().cancelled_owned()));
            registered = Some(r);
        }
        // Perform everything the session asked for.
        while let Some(step) = next_action(&mut session, &mut io).await {
            let done = match step {
                Step::ToClient(parts) => write_client(&mut io, parts).await.map(|()| true),
                Step::Act(action) => perform(action, &mut session, &mut io, &ctx).await,
            };
            match done {
                Ok(true) => {}
                Ok(false) => break 'session,
                Err(e) => {
                    debug!(error = %e, "client connection failed");
                    io.client = None;
                    session.handle(now(), Event::ClientClosed);
                }
            }
        }
        if let Some(at) = session.poll_timeout().map(Instant::from_std)
            && (timer.is_elapsed() || at < timer.deadline())
        {
            timer.as_mut().reset(at);
        }
        // While a command runs, keep reading a little: a client that hangs up
        // must be noticed (a copy in flight is then undone), and pipelined
        // commands wait in the session's buffer, which this bounds.
        let read_client = io.client.is_some()
            && (session.wants_client_input() || session.client_buffered() < PIPELINE_BOUND);
        let Io {
            client,
            stores,
            logins,
            client_gate,
            store_gates,
        } = &mut io;
        let [old, new] = stores;
        let [old_login, new_login] = logins;
        let [old_gate, new_gate] = store_gates;
        tokio::select! {
            r = read_opt(client_gate, client), if read_client => match r {
                Ok(b) if !b.is_empty() => {
                    metrics::count_bytes(Flow::ClientIn, b.len());
                    session.handle(now(), Event::ClientBytes(b));
                }
                _ => {
                    io.client = None;
                    session.handle(now(), Event::ClientClosed);
                }
            },
            r = read_opt(old_gate, old) => store_read(&mut session, &mut io, Store::Old, r),
            r = read_opt(new_gate, new) => store_read(&mut session, &mut io, Store::New, r),
            r = if_some(old_login) => login_result(&mut session, &mut io, Store::Old, r),
            r = if_some(new_login) => login_result(&mut session, &mut io, Store::New, r),
            () = &mut timer => session.handle(now(), Event::Timeout),
            () = if_some(&mut ended_by_admin) => {
                ended_by_admin = None;
                session.handle(now(), Event::EndedByAdmin);
            }
            () = &mut cancelled, if !shutting_down => {
                shutting_down = true;
                session.handle(now(), Event::Shutdown);
            }
            changed = &mut live_changes, if !live_gone => match changed {
                Some((rx, live)) => {
                    live_changes = WhenWoken::new(live_changed(rx));
                    session.handle(now(), Event::Reload(live.config.clone()));
                }
                // Ferry itself is gone; the shutdown token ends the session.
                None => live_gone = true,
            },
        }
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

async fn write_client(io: &mut Io, parts: Vec<Bytes>) -> io::Result<()> {
    if let Some(c) = io.client.as_mut() {
        let n = c.write(parts).await?;
        metrics::count_bytes(Flow::ClientOut, n);
    }
    Ok(())
}

/// A store that cannot be written to is gone for the session.
async fn write_store(session: &mut Session, io: &mut Io, store: Store, parts: Vec<Bytes>) {
    let i = store.index();
    let Some(s) = io.stores[i].as_mut() else {
        return;
    };
    match write_parts(s, parts).await {
        Ok(n) => metrics::count_bytes(Flow::store_out(i), n),
        Err(_) => {
            io.stores[i] = None;
            session.handle(now(), Event::StoreClosed(store));
        }
    }
}

/// What [`next_action`] hands the loop: a burst for the client, or an action.
enum Step {
    ToClient(Vec<Bytes>),
    Act(Action),
}

/// Beyond this, queued writes are sent before more are gathered.
const BATCH: usize = 64 * 1024;

/// The next action that is not a write; writes are gathered per peer: a
/// store's are sent here, the client's handed back as one burst.
async fn next_action(session: &mut Session, io: &mut Io) -> Option<Step> {
    let mut client = Outbox::default();
    let mut stores = [Outbox::default(), Outbox::default()];
    loop {
        let full = client.len >= BATCH || stores.iter().any(|s| s.len >= BATCH);
        match (full, session.poll_action()) {
            (false, Some(Action::ToClient(b))) => client.push(b),
            (false, Some(Action::ToBackend(s, b))) => stores[s.index()].push(b),
            (full, other) => {
                // Flush the batch first, then hand over the action that ended it.
                for (i, store) in [Store::Old, Store::New].into_iter().enumerate() {
                    if let Some(parts) = stores[i].take() {
                        write_store(session, io, store, parts).await;
                    }
                }
                if let Some(parts) = client.take() {
                    if let Some(rest) = other {
                        session.requeue_front(rest);
                    }
                    return Some(Step::ToClient(parts));
                }
                if full && let Some(rest) = other {
                    session.requeue_front(rest);
                    continue;
                }
                return other.map(Step::Act);
            }
        }
    }
}

/// Performs one action; `Ok(false)` ends the session.
async fn perform(
    action: Action,
    session: &mut Session,
    io: &mut Io,
    ctx: &Ctx,
) -> io::Result<bool> {
    match action {
        // Gathered by next_action; single ones would take the same path.
        Action::ToClient(data) => write_client(io, vec![data]).await?,
        Action::ToBackend(store, data) => write_store(session, io, store, vec![data]).await,
        Action::StartTls => {
            let (Some(Client::Raw(MaybeTls::Plain(tcp))), Some(acceptor)) =
                (io.client.take(), ctx.acceptor.as_ref())
            else {
                return Ok(false);
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
                    return Ok(false);
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
        Action::Login { store, auth, id } => {
            let live = ctx.live.borrow().clone();
            let target = match store {
                Store::Old => live.old.clone(),
                Store::New => live.new.clone(),
            };
            let timeout = Duration::from_secs(live.config.limits.backend_connect_timeout_secs);
            let tokens = ctx.tokens.clone();
            io.logins[store.index()] = Some(Box::pin(async move {
                backend::log_in(&target, store, &auth, id.as_deref(), &tokens, timeout).await
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
            return Ok(false);
        }
    }
    Ok(true)
}
