//! The sans-IO session: one client, up to two stores.
//!
//! The driver hands in each [`Event`] with the time it happened
//! ([`Session::handle`]), performs what [`Session::poll_action`] returns, and
//! sleeps until [`Session::poll_timeout`]. No sockets, no clock, no globals.
//!
//! Client bytes are framed ([`crate::frame`]) and assembled into whole commands,
//! except APPEND messages, which stream to the store. Commands are handled one at
//! a time; later ones stay queued in the framer (so `DONE` pipelined with the next
//! command works). Store bytes are framed too; responses Ferry must rewrite are
//! assembled and decoded, everything else leaves as it came, literal by literal.

mod client;
mod clock;
mod compress;
mod idle;
mod merged;
mod pipe;
mod preauth;
pub mod reply;
mod store;
mod timing;

use timing::{Timing, is_tagged_by, record};

use std::{
    collections::VecDeque,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use imap_codec::{
    CommandCodec,
    decode::Decoder,
    imap_types::command::{Command, CommandBody},
};
use tracing::debug;

pub use crate::namespace::Store;
use crate::{
    caps::{Cap, Caps},
    config::{Config, Phase},
    frame::{Announcement, Frame, Framer, Peer},
    namespace::Layout,
};
pub use merged::rename_data;

/// What happened, as the driver saw it; handed to [`Session::handle`] with
/// the time it happened.
#[derive(Debug)]
pub enum Event {
    /// Bytes from the client (owned: what the session forwards leaves
    /// without a copy).
    ClientBytes(BytesMut),
    /// The client closed its connection (or it failed).
    ClientClosed,
    /// The TLS handshake that [`Action::StartTls`] asked for is done.
    TlsEstablished,
    /// Bytes from a store.
    StoreBytes(Store, BytesMut),
    /// A store closed its connection (or it failed).
    StoreClosed(Store),
    /// The outcome of an [`Action::Login`].
    LoggedIn(Store, Result<BackendInfo, LoginFailure>),
    /// The time [`Session::poll_timeout`] asked for has come.
    Timeout,
    /// A new configuration is in force.
    Reload(Arc<Config>),
    /// Ferry is shutting down: end the session at its next safe point.
    Shutdown,
    /// An admin ended the user's sessions: end at the next safe point.
    EndedByAdmin,
}

/// What the session counts, for metrics: handed to the [`Reporter`] the
/// driver gives it, so the core calls no global recorder.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A client command finished: its label, the stores it used, its result.
    Command {
        name: &'static str,
        store: &'static str,
        result: &'static str,
        took: Duration,
    },
    /// A configured limit was hit.
    LimitHit(&'static str),
    /// A login finished.
    Login { phase: Phase, result: &'static str },
    /// A cross-store COPY began (the user's background copying waits for
    /// its end, reported as [`Report::Copy`]).
    CopyStarted,
    /// A cross-store COPY finished.
    Copy {
        result: &'static str,
        messages: u64,
        bytes: u64,
    },
    /// A store connection failed; `kind` is a [`LoginFailure`] kind or
    /// `timeout` (a command not answered in time).
    BackendError(Store, &'static str),
    /// A store login finished: `ok`, `rejected` or `error`.
    StoreLogin(Store, &'static str),
    /// A login was slowed (`delayed`) or answered without asking the stores
    /// (`known_failure`) by the brute-force throttle.
    Throttled(&'static str),
    /// The session moved between phase labels (`None`: not counted: before
    /// its start, after its end).
    Phase {
        from: Option<&'static str>,
        to: Option<&'static str>,
    },
    /// A session was ended because its user's phase changed.
    PhaseDisconnect,
    /// The session is over, and why.
    SessionEnd(End),
    /// The user a login is for, for the session's log span (not a metric).
    User(String),
}

/// Why a session ended: its last log line and `ferry_session_ends_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client logged out.
    Logout,
    /// The client closed the connection (or it failed).
    ClientClosed,
    PreauthTimeout,
    IdleTimeout,
    Shutdown,
    /// The user's phase changed.
    PhaseChange,
    /// An admin ended the user's sessions.
    Admin,
    /// A store went away, or an `Old/` folder changed under the client.
    StoreLost,
    /// Too many failed logins on the connection.
    LoginFailures,
    /// The client broke the protocol beyond recovery.
    ProtocolError,
    /// The driver dropped a session that had not ended (its task was cancelled).
    Aborted,
}

impl End {
    pub const ALL: [End; 11] = [
        End::Logout,
        End::ClientClosed,
        End::PreauthTimeout,
        End::IdleTimeout,
        End::Shutdown,
        End::PhaseChange,
        End::Admin,
        End::StoreLost,
        End::LoginFailures,
        End::ProtocolError,
        End::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            End::Logout => "logout",
            End::ClientClosed => "client_closed",
            End::PreauthTimeout => "preauth_timeout",
            End::IdleTimeout => "idle_timeout",
            End::Shutdown => "shutdown",
            End::PhaseChange => "phase_change",
            End::Admin => "admin",
            End::StoreLost => "store_lost",
            End::LoginFailures => "login_failures",
            End::ProtocolError => "protocol_error",
            End::Aborted => "aborted",
        }
    }
}

/// Takes the session's [`Report`]s: metrics, and the log span's user.
pub trait Reporter: Send {
    fn report(&mut self, report: Report);
}

/// What a user typed to log in: a name and password, or (`bearer`) the
/// name an OAuth2 SASL message gives and that whole message as `password`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
    pub bearer: Option<crate::oauth::Mechanism>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("password", &"<redacted>")
            .field("bearer", &self.bearer)
            .finish()
    }
}

/// IMAP ID (RFC 2971) fields: names and values (NIL as `None`).
pub type IdFields = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// What a store told Ferry at login.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    pub capabilities: Caps,
    pub layout: Layout,
}

/// Why a store login did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFailure {
    /// The store said NO: wrong user or password.
    Rejected,
    /// The store could not be reached or misbehaved: `kind` is a closed
    /// label for metrics (`connect`, `tls`, `timeout`, …), `detail` is for
    /// the log.
    Unavailable { kind: &'static str, detail: String },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    ToClient(Bytes),
    ToBackend(Store, Bytes),
    /// Start the TLS handshake on the client connection (after the queued OK).
    StartTls,
    /// Compress the client connection with deflate (RFC 4978) from the next
    /// byte on, both ways: after the queued OK, which goes out as it is.
    /// `read_ahead`: what the client sent after COMPRESS, which is
    /// compressed already, to be inflated before anything read later.
    Compress {
        read_ahead: Bytes,
    },
    /// Connect and log in to a store; report with [`Event::LoggedIn`].
    /// `id`: the IMAP ID fields to send first, if the store offers ID.
    Login {
        store: Store,
        auth: Arc<crate::identity::StoreAuth>,
        id: Option<Arc<IdFields>>,
        /// Learn the store's layout (NAMESPACE): only the merged phase,
        /// which maps names, needs it.
        layout: bool,
    },
    /// Close a store connection (after the queued bytes).
    CloseBackend(Store),
    /// Flush and close the client connection; the session is over.
    Close,
}

/// What the client side is expected to send next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Input {
    /// A new command (or the rest of one being assembled).
    Command,
    /// Nothing: a command is running; later input stays queued.
    Waiting,
    /// The base64 line of AUTHENTICATE PLAIN.
    /// `None`: PLAIN; else an OAuth2 mechanism's message.
    AuthData {
        tag: Bytes,
        bearer: Option<crate::oauth::Mechanism>,
    },
    /// `DONE` ends an IDLE.
    IdleDone,
    /// Literal bytes and lines of an APPEND go straight to the store.
    Stream(Store),
    /// The rest of a command the store has already answered (it refused
    /// the APPEND early): the store must still read every byte the client
    /// announced, so they stream on, never read as commands.
    Rest(Store),
    /// The rest of a refused command is dropped; then `reply` is sent.
    Discard(Bytes),
}

enum Mode {
    PreAuth,
    /// Boxed: a session spends a moment here, and idle sessions are many.
    LoggingIn(Box<preauth::LoggingIn>),
    /// Boxed: the merged phase is the common one while a migration runs,
    /// and an idle session should not carry the pass-through state inline.
    Pipe(Box<PipeState>),
    Merged(Box<merged::Merged>),
}

struct StoreConn {
    framer: Framer,
    /// When the store last sent or was sent something.
    active: Instant,
    info: BackendInfo,
    /// How the rest of the current response is handled.
    disposition: Disposition,
}

#[derive(Debug)]
enum Disposition {
    Forward,
    Drop,
    Assemble(BytesMut),
    /// A message body for a cross-store copy: every frame goes to the copy.
    Copy,
}

/// Settings a session takes from the configuration at its start.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub config: Arc<Config>,
    /// The client connection is already TLS (port 993).
    pub tls: bool,
    /// STARTTLS can be offered (plain port with a certificate configured).
    pub starttls: bool,
    /// Where `Old/` subscriptions are kept (shared by all sessions).
    pub subscriptions: Arc<crate::subscriptions::Subscriptions>,
    /// Unique per session: places it in the phase-change drain window.
    pub id: u64,
    /// The client's address (from the PROXY header behind a load
    /// balancer): for the login throttle and the stores' logs.
    pub client: std::net::SocketAddr,
    /// The address the client connected to.
    pub local: std::net::SocketAddr,
    /// Failed-login bookkeeping shared by all sessions.
    pub throttle: Arc<crate::throttle::Throttle>,
    /// `Old/` folders served from their NEW copy.
    pub served: Arc<crate::copier::served::Served>,
}

/// Pass-through bookkeeping: which client commands are still running, so the
/// session is only ended between commands.
struct PipeState {
    /// The one store of the session.
    store: Store,
    inflight: VecDeque<Timing>,
    /// A running IDLE.
    idle: Option<idle::Idle>,
    /// A synchronizing literal the client announced and waits to send
    /// until the store's `+`, under its command's tag.
    literal: Option<(timing::Tag, Announcement)>,
    /// A COMPRESS that waits for the commands before it to be answered
    /// (see `pipe_compress`); the client's input waits with it.
    compress: Option<Bytes>,
}

/// A client session: the state every phase shares, and the phase's own.
/// Handlers of a phase are methods of [`Shared`] that take their phase's
/// state beside it, so neither is ever moved out of the other.
pub struct Session {
    shared: Shared,
    mode: Mode,
}

/// What a session keeps whatever its phase (its fields are the session's
/// own; a [`Session`] reads through to them).
pub struct Shared {
    cfg: SessionConfig,
    /// Who logged in, and their phase.
    login: Option<(String, Phase)>,
    /// Failed logins on this connection.
    failures: u32,
    /// What the client said of itself with ID before logging in, passed on
    /// to the stores.
    client_id: IdFields,
    /// The phase label the session is counted under (see [`Report::Phase`]).
    counted: Option<&'static str>,
    /// Metrics for the command in flight (merged phase; one at a time).
    timing: Option<Timing>,
    /// Ferry ended the client's IDLE itself: a DONE the client sends for it
    /// is dropped.
    done_owed: bool,
    /// The session is over (`Action::Close` is queued).
    closed: bool,
    /// The client connection is compressed (`Action::Compress` is queued).
    compressed: bool,
    /// Why the session is ending, once that is decided (the client leaving
    /// otherwise).
    ending: Option<End>,
    /// For the session's last log line.
    commands: u64,
    bytes_in: u64,
    bytes_out: u64,
    started: Instant,
    client: Framer,
    input: Input,
    /// The command being assembled, literals normalised to `{n+}`.
    command: BytesMut,
    /// Boxed: most sessions have one store connected, and idle sessions
    /// are thousands.
    stores: [Option<Box<StoreConn>>; 2],
    actions: VecDeque<Action>,
    next_tag: u64,
    clock: clock::Clock,
    reporter: Box<dyn Reporter>,
}

impl std::ops::Deref for Session {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Shared {
        &mut self.shared
    }
}

/// Pre-login literals are capped low: nobody has authenticated yet.
const PREAUTH_MAX_LITERAL: usize = 8 * 1024;

impl Session {
    pub fn new(cfg: SessionConfig, now: Instant, reporter: Box<dyn Reporter>) -> Self {
        let max_line = cfg.config.limits.max_line_bytes;
        let preauth = Duration::from_secs(cfg.config.limits.preauth_timeout_secs);
        let mut s = Session {
            shared: Shared {
                clock: clock::Clock::new(now, preauth),
                reporter,
                cfg,
                client: Framer::new(Peer::Client, max_line),
                input: Input::Command,
                command: BytesMut::new(),
                stores: [None, None],
                actions: VecDeque::new(),
                next_tag: 0,
                login: None,
                failures: 0,
                client_id: Vec::new(),
                counted: None,
                timing: None,
                done_owed: false,
                closed: false,
                compressed: false,
                ending: None,
                commands: 0,
                bytes_in: 0,
                bytes_out: 0,
                started: now,
            },
            mode: Mode::PreAuth,
        };
        let greeting = reply::greeting(&s.preauth_capabilities());
        s.send_client(greeting);
        s.report_phase();
        s
    }

    /// Takes in one event at `now` (never earlier than the last one's).
    pub fn handle(&mut self, now: Instant, event: Event) {
        self.clock.now = now.max(self.clock.now);
        match event {
            Event::ClientBytes(data) => {
                self.bytes_in += data.len() as u64;
                self.client_active();
                self.client_input(data);
            }
            Event::ClientClosed => self.client_closed(),
            Event::TlsEstablished => self.tls_established(),
            Event::StoreBytes(store, data) => {
                // A store at work is not an idle client.
                self.client_active();
                self.store_active(store);
                self.backend_input(store, data);
            }
            Event::StoreClosed(store) => self.backend_closed(store),
            Event::LoggedIn(store, result) => {
                self.report_store_login(store, &result);
                self.login_done(store, result);
                // From now on the idle timeout applies, not the pre-auth one.
                self.client_active();
            }
            Event::Timeout => self.timeout(),
            Event::Reload(config) => self.reload(config),
            Event::Shutdown => self.shut_down(),
            Event::EndedByAdmin => self.end_soon(),
        }
        self.settle();
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front();
        if action.is_none() && self.actions.capacity() > 16 {
            // A burst of output is over: idle sessions keep little queue
            // memory, and small bursts allocate nothing.
            self.actions.shrink_to(4);
        }
        action
    }

    /// True when the driver should read from the client.
    pub fn wants_client_input(&self) -> bool {
        if self.closed {
            return false;
        }
        match &self.mode {
            Mode::Pipe(p) => {
                p.compress.is_none() && !p.idle.as_ref().is_some_and(idle::Idle::holds_client)
            }
            _ => self.input != Input::Waiting,
        }
    }

    /// The store a client IDLE is running on (not while Ferry renews it).
    pub fn idle_store(&self) -> Option<Store> {
        self.running_idle().map(|i| i.store)
    }

    /// The client's IDLE, while the store idles and Ferry is not renewing it.
    fn running_idle(&self) -> Option<&idle::Idle> {
        match &self.mode {
            Mode::Pipe(p) => p.idle.as_ref().filter(|i| i.is_running()),
            Mode::Merged(m) if self.input == Input::IdleDone => m.running_idle(),
            _ => None,
        }
    }

    /// Renews a long IDLE toward its store (DONE, IDLE again) so that the
    /// store's own inactivity timer never ends it; the client sees nothing.
    fn refresh_idle(&mut self) {
        let Session { shared, mode } = self;
        match mode {
            Mode::Pipe(p) => {
                if let Some(i) = &mut p.idle
                    && let Some(done) = i.renew()
                {
                    shared.send_store(i.store, done);
                }
            }
            Mode::Merged(m) => shared.merged_refresh_idle(m),
            _ => {}
        }
    }

    /// The store that owes Ferry an answer right now, if any (IDLE excepted).
    pub fn awaiting_store(&self) -> Option<Store> {
        match &self.mode {
            Mode::Pipe(p) => {
                let idling = p.idle.as_ref().is_some_and(|i| !i.is_renewing());
                (!p.inflight.is_empty() && !idling).then_some(p.store)
            }
            Mode::Merged(m) => m.awaiting(),
            _ => None,
        }
    }

    /// Ends a running IDLE from Ferry's side (DONE to the store), so that the
    /// session reaches a safe point to be ended. Nothing else is interrupted.
    /// True when it sent something.
    fn leave_idle(&mut self) -> bool {
        let Session { shared, mode } = self;
        let sent = match mode {
            Mode::Pipe(p) => match &mut p.idle {
                Some(i) => i
                    .end(true)
                    .map(|done| shared.send_store(i.store, done))
                    .is_some(),
                None => false,
            },
            Mode::Merged(m) if shared.input == Input::IdleDone => {
                shared.merged_leave_idle(m);
                true
            }
            _ => false,
        };
        shared.done_owed |= sent;
        sent
    }

    /// True while logged in (for the idle timeout vs the pre-auth one).
    pub fn is_authenticated(&self) -> bool {
        matches!(self.mode, Mode::Pipe(_) | Mode::Merged(_))
    }

    /// True when no command is in progress: a safe point to end the session.
    pub fn is_idle(&self) -> bool {
        let running = match &self.mode {
            Mode::Pipe(p) => !p.inflight.is_empty(),
            _ => self.input != Input::Command || !self.command.is_empty(),
        };
        !running && self.client.at_message_start()
    }

    fn client_input(&mut self, data: BytesMut) {
        self.client.push_chunk(data);
        self.pump_client();
    }

    fn client_closed(&mut self) {
        if self.closed {
            return;
        }
        let Session { shared, mode } = self;
        let going_on = match mode {
            Mode::Merged(m) => shared.merged_client_gone(m),
            _ => false,
        };
        if !going_on {
            shared.logout_stores();
            shared.close();
        }
    }

    /// Client bytes read but not yet handled (pipelined after a running command).
    pub fn client_buffered(&self) -> usize {
        self.client.buffered()
    }

    /// The client connection is now TLS.
    fn tls_established(&mut self) {
        self.cfg.tls = true;
        self.pump_client();
    }

    fn backend_input(&mut self, store: Store, data: BytesMut) {
        let Some(conn) = self.stores[store.index()].as_mut() else {
            return;
        };
        conn.framer.push_chunk(data);
        loop {
            self.forward_run(store);
            let Some(conn) = self.stores[store.index()].as_mut() else {
                return;
            };
            match conn.framer.next_frame() {
                Ok(Some(frame)) => self.backend_frame(store, frame),
                Ok(None) => {
                    conn.framer.shrink();
                    break;
                }
                Err(e) => {
                    tracing::warn!(store = store.as_str(), error = %e, "store sent an over-long line");
                    self.store_lost(store);
                    return;
                }
            }
        }
        self.pump_client();
    }

    fn backend_closed(&mut self, store: Store) {
        if self.stores[store.index()].is_some() {
            self.store_lost(store);
        }
        self.pump_client();
    }

    /// Result of an [`Action::Login`].
    fn login_done(&mut self, store: Store, result: Result<BackendInfo, LoginFailure>) {
        let Session { shared, mode } = self;
        match (&mut *mode, result) {
            (Mode::LoggingIn(_), result) => {
                if let Some(next) = shared.primary_login_done(mode, store, result) {
                    *mode = next;
                }
            }
            (Mode::Merged(m), result) => shared.old_login_done(m, result),
            (_, Ok(_)) => shared.actions.push_back(Action::CloseBackend(store)),
            _ => {}
        }
        // A parked command runs now, unless a reconnect still re-opens a folder.
        if let Mode::Merged(m) = &mut self.mode
            && m.ready_for_parked()
            && let Some(parked) = m.parked.take()
        {
            self.command_complete(parked);
        }
        self.pump_client();
    }

    /// Ends the session with `* BYE text` (shutdown, phase change) at a safe point.
    fn end(&mut self, text: &str, why: End) {
        if self.closed {
            return;
        }
        self.ending.get_or_insert(why);
        self.send_client(reply::bye(text));
        // As if the client had left: a copy in flight is undone first.
        self.client_closed();
    }

    fn store_lost(&mut self, store: Store) {
        // Whether the store's last response ended cleanly (nothing half-forwarded).
        let clean = self.stores[store.index()]
            .as_ref()
            .is_some_and(|c| c.framer.at_message_start());
        self.stores[store.index()] = None;
        self.actions.push_back(Action::CloseBackend(store));
        if self.closed {
            return;
        }
        let Session { shared, mode } = self;
        match mode {
            Mode::Merged(m) if store == Store::Old => shared.merged_old_lost(m, clean),
            _ => {
                tracing::warn!(store = store.as_str(), "store connection lost");
                if let Mode::Merged(m) = mode
                    && let Some(tag) = m.client_tag()
                {
                    shared.send_client(reply::no(
                        &tag,
                        reply::Rfc5530::Unavailable,
                        "The mail store went away before this command completed",
                    ));
                }
                shared.send_client(reply::bye(
                    "Connection to the mail store was lost, please reconnect.",
                ));
                shared.ending.get_or_insert(End::StoreLost);
                shared.close();
            }
        }
    }
}

impl Shared {
    fn report(&mut self, report: Report) {
        self.reporter.report(report);
    }

    /// Every store login's outcome, whatever it was for.
    fn report_store_login(&mut self, store: Store, result: &Result<BackendInfo, LoginFailure>) {
        let label = match result {
            Ok(_) => "ok",
            Err(LoginFailure::Rejected) => "rejected",
            Err(LoginFailure::Unavailable { kind, detail }) => {
                tracing::warn!(store = store.as_str(), error = %detail, "store login failed");
                self.report(Report::BackendError(store, kind));
                "error"
            }
        };
        self.report(Report::StoreLogin(store, label));
    }

    /// Moves the session's count to its current phase label.
    fn report_phase(&mut self) {
        let now = (!self.closed).then(|| self.phase().map_or("preauth", Phase::as_str));
        if now != self.counted {
            let from = std::mem::replace(&mut self.counted, now);
            self.report(Report::Phase { from, to: now });
        }
    }

    /// The user and phase of a logged-in session.
    pub fn login_info(&self) -> Option<(&str, Phase)> {
        self.login.as_ref().map(|(u, p)| (u.as_str(), *p))
    }

    pub fn phase(&self) -> Option<Phase> {
        self.login.as_ref().map(|(_, p)| *p)
    }

    /// `* BYE text`, LOGOUT to the stores, close (from inside the machine).
    fn bye_and_close(&mut self, text: &str, why: End) {
        self.ending.get_or_insert(why);
        self.send_client(reply::bye(text));
        self.logout_stores();
        self.close();
    }

    fn attach_store(&mut self, store: Store, info: BackendInfo) {
        self.stores[store.index()] = Some(Box::new(StoreConn {
            // Store responses are bounded like client lines; literals stream.
            framer: Framer::new(Peer::Server, self.cfg.config.limits.max_line_bytes),
            active: self.clock.now,
            info,
            disposition: Disposition::Forward,
        }));
    }

    /// The store was heard from or written to just now.
    fn store_active(&mut self, store: Store) {
        if let Some(c) = self.stores[store.index()].as_mut() {
            c.active = self.clock.now;
        }
    }

    fn store_has(&self, store: Store, cap: Cap) -> bool {
        self.store_info(store)
            .is_some_and(|i| i.capabilities.has(cap))
    }

    fn store_info(&self, store: Store) -> Option<&BackendInfo> {
        self.stores[store.index()].as_ref().map(|c| &c.info)
    }

    fn send_client(&mut self, bytes: Bytes) {
        if let Some(t) = &self.timing
            && is_tagged_by(&bytes, &t.tag)
            && let Some(t) = self.timing.take()
        {
            self.report(record(t, &bytes, self.clock.now));
        }
        self.bytes_out += bytes.len() as u64;
        self.actions.push_back(Action::ToClient(bytes));
    }

    fn send_store(&mut self, store: Store, bytes: Bytes) {
        if let Some(t) = &mut self.timing {
            t.stores |= 1 << store.index();
        }
        self.store_active(store);
        self.actions.push_back(Action::ToBackend(store, bytes));
    }

    fn ferry_tag(&mut self) -> Bytes {
        self.next_tag += 1;
        // Ferry's own tag space; the session never has a client command in flight
        // on a store at the same time as one of these, so they cannot collide.
        Bytes::from(format!("ferry.{}", self.next_tag))
    }

    fn close(&mut self) {
        self.closed = true;
        self.input = Input::Waiting;
        self.actions.push_back(Action::Close);
        self.log_end();
    }

    /// The session's last log line: how long, how much, and why it ended.
    fn log_end(&mut self) {
        let why = *self.ending.get_or_insert(End::ClientClosed);
        tracing::info!(
            reason = why.as_str(),
            duration_ms = self.clock.now.duration_since(self.started).as_millis() as u64,
            commands = self.commands,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            "session ended"
        );
        self.report(Report::SessionEnd(why));
    }

    /// A client command starts (for the session's last log line).
    fn count_command(&mut self) {
        self.commands += 1;
    }

    fn logout_stores(&mut self) {
        for store in [Store::Old, Store::New] {
            self.logout_store(store);
        }
    }

    /// LOGOUT to a connected store, then close it.
    fn logout_store(&mut self, store: Store) {
        if self.stores[store.index()].take().is_some() {
            let tag = self.ferry_tag();
            let line = reply::command(&tag, CommandBody::Logout);
            self.send_store(store, line);
            self.actions.push_back(Action::CloseBackend(store));
        }
    }

    fn preauth_capabilities(&self) -> Caps {
        let mut caps = vec!["IMAP4rev1", "SASL-IR", "LITERAL+", "ID"];
        if self.cfg.starttls && !self.cfg.tls {
            caps.push("STARTTLS");
        }
        if self.cfg.tls || self.cfg.config.auth.allow_plaintext {
            caps.push("AUTH=PLAIN");
            if self.cfg.config.auth.oauth.is_some() {
                caps.extend(["AUTH=XOAUTH2", "AUTH=OAUTHBEARER"]);
            }
        } else {
            caps.push("LOGINDISABLED");
        }
        Caps::from_names(caps)
    }
}

fn failure_label(f: &LoginFailure) -> &'static str {
    match f {
        LoginFailure::Rejected => "rejected",
        LoginFailure::Unavailable { .. } => "unavailable",
    }
}

#[cold]
fn unreachable_waiting() {
    // Invariant: pump_client only pulls frames when input is not Waiting.
    debug_assert!(false, "client frame while waiting");
}

impl Drop for Session {
    /// A session dropped without closing (its task was cancelled) is no
    /// longer counted as active.
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            self.ending = Some(End::Aborted);
            self.log_end();
        }
        self.report_phase();
    }
}

/// Decodes a complete command (used by tests and fuzzing).
pub fn decode_command(bytes: &[u8]) -> Option<Command<'_>> {
    CommandCodec::new().decode(bytes).ok().map(|(_, c)| c)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod transcript;
