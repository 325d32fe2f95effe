//! Prometheus metrics and the small HTTP endpoint that serves them.
//!
//! Names are `ferry_*` in base units. Labels come from closed sets (listener,
//! phase, store, command name, result) — never a user or mailbox name.
//! Histograms have explicit buckets so they aggregate across instances.

use std::{
    cell::{Cell, RefCell},
    net::SocketAddr,
    sync::OnceLock,
    time::Duration,
};

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

use crate::config::Phase;

mod families;
mod process;

/// Command latency buckets, 0.5 ms to 60 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (later calls reuse it) and sets
/// build info.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("ferry_command_duration_seconds".into()),
                &LATENCY_BUCKETS,
            )
            .expect("static, non-empty buckets");
        // Another recorder may already be installed (an embedding program):
        // then Ferry renders its own, unregistered one.
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows nothing");
        }
        families::describe();
        gauge!("ferry_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        register_zeroes();
        handle
    })
}

/// Every series of a closed label set exists from the start at 0, so
/// `increase()` and `rate()` see its first event, and alerts and dashboard
/// panels find their series on a Ferry that has served nobody yet.
fn register_zeroes() {
    for listener in crate::listener::Kind::ALL.map(crate::listener::Kind::name) {
        counter!("ferry_sessions_total", "listener" => listener).absolute(0);
        counter!("ferry_tls_handshake_failures_total", "listener" => listener).absolute(0);
        for phase in PHASE_LABELS {
            gauge!("ferry_sessions_active", "listener" => listener, "phase" => phase).set(0.0);
        }
    }
    for limit in LIMITS {
        counter!("ferry_limit_hits_total", "limit" => limit).absolute(0);
    }
    for store in STORE_LABELS {
        for kind in BACKEND_ERRORS {
            counter!("ferry_backend_errors_total", "store" => store, "kind" => kind).absolute(0);
        }
    }
    // Each command under each store label and result: a few hundred series,
    // so that a panel's first command is not lost to `rate()` either.
    for store in COMMAND_STORES {
        for command in crate::verb::Verb::labels() {
            for result in ["ok", "no", "bad"] {
                counter!("ferry_commands_total", "command" => command, "store" => store, "result" => result)
                    .absolute(0);
            }
        }
        // Registered without a sample: its buckets show 0.
        let _ = histogram!("ferry_command_duration_seconds", "store" => store);
    }
    byte_counters();
    for s in crate::state::UserState::ALL {
        gauge!("ferry_migration_users", "state" => s.as_str()).set(0.0);
    }
    for name in [
        "ferry_migration_users_paused",
        "ferry_migration_messages_remaining",
        "ferry_migration_bytes_remaining",
        // 0: no pass yet.
        "ferry_migration_last_pass_timestamp_seconds",
    ] {
        gauge!(name).set(0.0);
    }
    for result in ["ok", "error"] {
        counter!("ferry_config_reloads_total", "result" => result).absolute(0);
    }
    for result in ["ok", "failed", "trycreate"] {
        counter!("ferry_copies_total", "result" => result).absolute(0);
    }
    counter!("ferry_copy_messages_total").absolute(0);
    counter!("ferry_copy_bytes_total").absolute(0);
    counter!("ferry_phase_disconnects_total").absolute(0);
    counter!("ferry_compress_sessions_total").absolute(0);
    for result in ["sent", "failed", "dropped", "received"] {
        counter!("ferry_fleet_notes_total", "result" => result).absolute(0);
    }
    for kind in ["delayed", "known_failure"] {
        counter!("ferry_auth_throttled_total", "kind" => kind).absolute(0);
    }
    for why in crate::session::End::ALL {
        counter!("ferry_session_ends_total", "reason" => why.as_str()).absolute(0);
    }
    for result in ["ok", "local", "untrusted", "malformed", "timeout", "closed"] {
        counter!("ferry_proxy_headers_total", "result" => result).absolute(0);
    }
    for store in ["old", "new"] {
        for result in ["ok", "rejected", "error"] {
            counter!("ferry_backend_connects_total", "store" => store, "result" => result)
                .absolute(0);
        }
    }
    for result in ["ok", "failed"] {
        counter!("ferry_migration_passes_total", "result" => result).absolute(0);
    }
    for kind in MIGRATION_ERRORS {
        counter!("ferry_migration_errors_total", "kind" => kind).absolute(0);
    }
    counter!("ferry_migration_messages_copied_total").absolute(0);
    counter!("ferry_migration_bytes_copied_total").absolute(0);
    for phase in [Phase::Old, Phase::Merged, Phase::New] {
        for result in ["ok", "rejected", "unavailable"] {
            counter!("ferry_logins_total", "phase" => phase.as_str(), "result" => result)
                .absolute(0);
        }
    }
}

// ---- recording -------------------------------------------------------------

/// The `ferry_sessions_active` phases: before login, then the user's phase.
const PHASE_LABELS: [&str; 4] = ["preauth", "old", "merged", "new"];

const STORE_LABELS: [&str; 2] = ["old", "new"];

/// Who served a command (`ferry`: Ferry answered it itself).
const COMMAND_STORES: [&str; 4] = ["old", "new", "both", "ferry"];

/// The limits of `ferry_limit_hits_total`.
const LIMITS: [&str; 10] = [
    "line",
    "literal",
    "append",
    "connections",
    "connections_per_ip",
    "connections_per_ip_fleet",
    "login_failures",
    "preauth_timeout",
    "idle_timeout",
    "backend_timeout",
];

/// The kinds of `ferry_backend_errors_total`: a failed store login's
/// (`BackendError::kind`, never `rejected`) or `timeout`.
const BACKEND_ERRORS: [&str; 6] = ["connect", "tls", "io", "timeout", "protocol", "token"];

/// The kinds of `ferry_migration_errors_total` (see `UserError::kind`).
const MIGRATION_ERRORS: [&str; 7] = [
    "config",
    "state",
    "login",
    "io",
    "protocol",
    "throttled",
    "refused",
];

/// A background migration pass over one user finished (`ok`, `failed`).
pub fn migration_pass(result: &'static str) {
    counter!("ferry_migration_passes_total", "result" => result).increment(1);
}

pub fn migration_error(kind: &'static str) {
    counter!("ferry_migration_errors_total", "kind" => kind).increment(1);
}

/// Messages the copier appended to NEW, and their bytes.
pub fn migration_copied(messages: u64, bytes: u64) {
    counter!("ferry_migration_messages_copied_total").increment(messages);
    counter!("ferry_migration_bytes_copied_total").increment(bytes);
}

/// Gauges from every user's migration record: users per state, messages and
/// bytes still to copy, and when the last pass finished (so "time since the
/// last pass" is `time() - ferry_migration_last_pass_timestamp_seconds`).
pub fn migration_users(records: &[crate::state::UserRecord]) {
    use crate::state::UserState;
    for s in UserState::ALL {
        let n = records.iter().filter(|r| r.state == s).count();
        gauge!("ferry_migration_users", "state" => s.as_str()).set(n as f64);
    }
    let paused = records.iter().filter(|r| r.paused).count();
    gauge!("ferry_migration_users_paused").set(paused as f64);
    let left = |f: fn(&crate::state::UserRecord) -> (u64, u64)| -> f64 {
        records
            .iter()
            .map(|r| {
                let (all, done) = f(r);
                all.saturating_sub(done)
            })
            .sum::<u64>() as f64
    };
    gauge!("ferry_migration_messages_remaining").set(left(|r| (r.messages, r.messages_done)));
    gauge!("ferry_migration_bytes_remaining").set(left(|r| (r.bytes, r.bytes_done)));
    if let Some(last) = records.iter().filter_map(|r| r.last_pass).max() {
        gauge!("ferry_migration_last_pass_timestamp_seconds").set(last as f64);
    }
}

pub fn session_started(listener: &'static str) {
    counter!("ferry_sessions_total", "listener" => listener).increment(1);
}

/// Moves one session between `ferry_sessions_active` series (None: gone).
pub fn session_phase(listener: &'static str, from: Option<&'static str>, to: Option<&'static str>) {
    if let Some(p) = from {
        gauge!("ferry_sessions_active", "listener" => listener, "phase" => p).decrement(1.0);
    }
    if let Some(p) = to {
        gauge!("ferry_sessions_active", "listener" => listener, "phase" => p).increment(1.0);
    }
}

pub fn login(phase: Phase, result: &'static str) {
    counter!("ferry_logins_total", "phase" => phase.as_str(), "result" => result).increment(1);
}

/// One client command: its name, which store(s) served it, and the outcome.
/// Handles are looked up once per worker thread and label set: a lookup
/// hashes the labels and allocates, which per command would cost more than
/// forwarding it.
pub fn command(name: &'static str, store: &'static str, result: &'static str, took: Duration) {
    // The labels are `'static` literals from small closed sets: a handle is
    // found by comparing their addresses (a literal found twice at two
    // addresses only costs a second handle to the same series).
    type Labels = [&'static str; 3];
    type Handles = (Vec<(Labels, Counter)>, Vec<(&'static str, Histogram)>);
    thread_local! {
        static HANDLES: RefCell<Handles> = RefCell::default();
    }
    fn same(a: &[&'static str], b: &[&'static str]) -> bool {
        a.iter().zip(b).all(|(x, y)| std::ptr::eq(*x, *y))
    }
    let labels = [name, store, result];
    HANDLES.with_borrow_mut(|(counters, histograms)| {
        match counters.iter().find(|(l, _)| same(l, &labels)) {
            Some((_, c)) => c.increment(1),
            None => {
                let c = counter!("ferry_commands_total", "command" => name, "store" => store, "result" => result);
                c.increment(1);
                counters.push((labels, c));
            }
        }
        // An IDLE lasts as long as the user likes: not a latency.
        if name != "IDLE" {
            let secs = took.as_secs_f64();
            match histograms.iter().find(|(s, _)| std::ptr::eq(*s, store)) {
                Some((_, h)) => h.record(secs),
                None => {
                    let h = histogram!("ferry_command_duration_seconds", "store" => store);
                    h.record(secs);
                    histograms.push((store, h));
                }
            }
        }
    });
}

pub fn backend_connect(store: &'static str, result: &'static str) {
    counter!("ferry_backend_connects_total", "store" => store, "result" => result).increment(1);
}

pub fn backend_error(store: &'static str, kind: &'static str) {
    debug_assert!(
        BACKEND_ERRORS.contains(&kind),
        "{kind} is not in BACKEND_ERRORS"
    );
    counter!("ferry_backend_errors_total", "store" => store, "kind" => kind).increment(1);
}

pub fn tls_handshake_failed(listener: &'static str) {
    counter!("ferry_tls_handshake_failures_total", "listener" => listener).increment(1);
}

/// A client turned on COMPRESS=DEFLATE.
/// A note to or from the other instances: `sent`, `failed` (PostgreSQL
/// refused it), `dropped` (the queue was full), `received`.
pub fn fleet_note(what: &'static str) {
    counter!("ferry_fleet_notes_total", "result" => what).increment(1);
}

pub fn compression_started() {
    counter!("ferry_compress_sessions_total").increment(1);
}

/// One cross-store COPY: its result, and the messages and bytes it copied.
pub fn copy(result: &'static str, messages: u64, bytes: u64) {
    counter!("ferry_copies_total", "result" => result).increment(1);
    counter!("ferry_copy_messages_total").increment(messages);
    counter!("ferry_copy_bytes_total").increment(bytes);
}

pub fn config_reload(result: &'static str) {
    counter!("ferry_config_reloads_total", "result" => result).increment(1);
}

pub fn config_generation(generation: u64) {
    gauge!("ferry_config_generation").set(generation as f64);
}

/// Users with an explicit phase (per-user entries and the users file), by phase.
pub fn configured_users(counts: [(Phase, usize); 3]) {
    for (phase, n) in counts {
        gauge!("ferry_configured_users", "phase" => phase.as_str()).set(n as f64);
    }
}

/// A configured limit was reached (`line`, `literal`, `append`, `connections`,
/// `connections_per_ip`, `login_failures`, `preauth_timeout`, `idle_timeout`,
/// `backend_timeout`).
pub fn limit_hit(limit: &'static str) {
    debug_assert!(LIMITS.contains(&limit), "{limit} is not in LIMITS");
    counter!("ferry_limit_hits_total", "limit" => limit).increment(1);
}

/// A login attempt slowed down (`delayed`) or answered from the cache of
/// recent failures without reaching the stores (`known_failure`).
/// A PROXY protocol header was read (`ok`, `local`) or the connection was
/// refused for it (`untrusted`, `malformed`, `timeout`, `closed`).
pub fn proxy_header(result: &'static str) {
    counter!("ferry_proxy_headers_total", "result" => result).increment(1);
}

pub fn auth_throttled(kind: &'static str) {
    counter!("ferry_auth_throttled_total", "kind" => kind).increment(1);
}

/// Records what sessions report (see [`crate::session::Report`]), and
/// tells the background copier who logs in in the merged phase and who is
/// in a cross-store COPY.
pub struct Recorder {
    /// The listener label of the session's `ferry_sessions_active` series.
    listener: &'static str,
    activity: std::sync::Arc<crate::copier::activity::Activity>,
    merged: bool,
    user: Option<String>,
    copying: bool,
}

impl Recorder {
    pub fn new(
        listener: &'static str,
        activity: std::sync::Arc<crate::copier::activity::Activity>,
    ) -> Recorder {
        Recorder {
            listener,
            activity,
            merged: false,
            user: None,
            copying: false,
        }
    }

    fn copy_ended(&mut self) {
        if let (true, Some(user)) = (self.copying, &self.user) {
            self.activity.copy_ended(user);
        }
        self.copying = false;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.copy_ended();
    }
}

impl crate::session::Reporter for Recorder {
    fn report(&mut self, report: crate::session::Report) {
        use crate::session::Report;
        match report {
            Report::Command {
                name,
                store,
                result,
                took,
            } => command(name, store, result, took),
            Report::LimitHit(what) => limit_hit(what),
            Report::Login { phase, result } => {
                self.merged = phase == Phase::Merged && result == "ok";
                login(phase, result)
            }
            Report::CopyStarted => {
                if let Some(user) = &self.user {
                    self.activity.copy_started(user);
                    self.copying = true;
                }
            }
            Report::Copy {
                result,
                messages,
                bytes,
            } => {
                self.copy_ended();
                copy(result, messages, bytes)
            }
            Report::BackendError(store, kind) => backend_error(store.as_str(), kind),
            Report::StoreLogin(store, result) => backend_connect(store.as_str(), result),
            Report::Throttled(kind) => auth_throttled(kind),
            Report::Phase { from, to } => session_phase(self.listener, from, to),
            Report::PhaseDisconnect => phase_disconnect(),
            Report::SessionEnd(why) => {
                counter!("ferry_session_ends_total", "reason" => why.as_str()).increment(1);
            }
            // Called inside the session's task, so this is its span.
            Report::User(user) => {
                tracing::Span::current().record("user", user.as_str());
                if self.merged {
                    self.activity.merged_login(&user);
                }
                self.user = Some(user);
            }
        }
    }
}

pub fn phase_disconnect() {
    counter!("ferry_phase_disconnects_total").increment(1);
}

/// What a byte counter counts: the client's or a store's bytes, in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    ClientIn,
    ClientOut,
    OldIn,
    NewIn,
    OldOut,
    NewOut,
}

impl Flow {
    const ALL: [Flow; 6] = [
        Flow::ClientIn,
        Flow::ClientOut,
        Flow::OldIn,
        Flow::NewIn,
        Flow::OldOut,
        Flow::NewOut,
    ];

    /// Bytes from the store with index `i` (0 OLD, 1 NEW).
    pub fn store_in(i: usize) -> Flow {
        [Flow::OldIn, Flow::NewIn][i]
    }

    /// Bytes to the store with index `i` (0 OLD, 1 NEW).
    pub fn store_out(i: usize) -> Flow {
        [Flow::OldOut, Flow::NewOut][i]
    }

    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Flow::ClientIn => ("in", "client"),
            Flow::ClientOut => ("out", "client"),
            Flow::OldIn => ("in", "old"),
            Flow::NewIn => ("in", "new"),
            Flow::OldOut => ("out", "old"),
            Flow::NewOut => ("out", "new"),
        }
    }
}

/// The byte counters, registered once: a handle costs an allocation, and
/// sessions are many.
fn byte_counters() -> &'static [Counter; 6] {
    static COUNTERS: OnceLock<[Counter; 6]> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        Flow::ALL.map(|f| {
            let (direction, peer) = f.labels();
            counter!("ferry_bytes_total", "direction" => direction, "peer" => peer)
        })
    })
}

/// Past this many pending bytes a thread adds them to the counters at once.
const PENDING_BYTES: u64 = 1 << 20;

thread_local! {
    static PENDING: [Cell<u64>; 6] = Default::default();
}

/// Counts `n` bytes of `flow`. They gather in this thread and reach the
/// shared counters when the thread goes idle ([`flush_bytes`], which the
/// session workers call before they park) or past a megabyte: every read
/// and write adding to the same atomics from two threads would pass their
/// cache line back and forth.
pub fn count_bytes(flow: Flow, n: usize) {
    PENDING.with(|p| {
        let cell = &p[flow as usize];
        let v = cell.get() + n as u64;
        if v >= PENDING_BYTES {
            byte_counters()[flow as usize].increment(v);
            cell.set(0);
        } else {
            cell.set(v);
        }
    });
}

/// Adds this thread's gathered byte counts to the shared counters.
pub fn flush_bytes() {
    PENDING.with(|p| {
        for (i, cell) in p.iter().enumerate() {
            // Only with bytes to add: the counters are registered on first
            // use, which must come after the recorder is installed.
            let v = cell.replace(0);
            if v > 0 {
                byte_counters()[i].increment(v);
            }
        }
    });
}

// ---- HTTP endpoint ---------------------------------------------------------

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot bind the metrics listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Answers `/readyz`: whether Ferry can take logins right now.
pub trait Readiness: Send + Sync + 'static {
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown`.
pub async fn serve<R: Readiness>(
    addr: SocketAddr,
    readiness: std::sync::Arc<R>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, MetricsError> {
    let handle = install();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    tokio::spawn(async move {
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                r = listener.accept() => if let Ok((tcp, _)) = r {
                    let readiness = readiness.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(10),
                            answer(tcp, handle, &*readiness),
                        )
                        .await;
                    });
                },
                _ = upkeep.tick() => handle.run_upkeep(),
                _ = shutdown.cancelled() => return,
            }
        }
    });
    Ok(local)
}

/// One HTTP/1.x request: only the request line matters; the connection closes
/// after the answer.
async fn answer(mut tcp: TcpStream, handle: &PrometheusHandle, readiness: &impl Readiness) {
    let mut buf = [0u8; 2048];
    let mut len = 0;
    // Read up to the end of the headers (or a full buffer: the line is all we need).
    while len < buf.len() {
        match tcp.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let line = buf[..len].split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let method = words.next().unwrap_or_default();
    let path = words.next().unwrap_or_default();
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/metrics") => {
            handle.run_upkeep();
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render() + &process::render(),
            )
        }
        (b"GET", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        (b"GET", b"/readyz") => match readiness.ready().await {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.write_all(body.as_bytes()).await;
    let _ = tcp.shutdown().await;
}
