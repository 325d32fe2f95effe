//! Bodies of the `client_session`, `store_session`, `namespace` and `config`
//! fuzz targets.
//!
//! One copy, two users: the fuzz targets include this file with
//! `#[path = "../../tests/fuzz_support.rs"] mod fuzz_support;`, and the stable
//! replay test `tests/fuzz_replay.rs` includes it with `mod fuzz_support;`, so
//! CI checks every checked-in corpus file against exactly what the fuzzer
//! checks. Input formats are described on each `pub fn`; `fuzz/README.md` has
//! the overview.
//!
//! Cargo also builds this file as a test target of its own (every
//! `tests/*.rs` is one); it has no tests, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferry::{
    config::{self, Config, Phase},
    frame::announcement,
    namespace::{self, Layout, NameMap, Target},
    session::{
        Action, BackendInfo, Event, LoginFailure, Report, Reporter, Session, SessionConfig, Store,
    },
};
use imap_codec::{
    ResponseCodec,
    decode::Decoder,
    imap_types::{
        IntoStatic,
        response::{Capability, Data, Response},
    },
};

/// The session configuration: plaintext allowed (no TLS in a fuzz target),
/// `alice` and everybody else merged, `olga` pass-through OLD, `nina` NEW.
const CONFIG: &str = r#"
[listen]
imap = "127.0.0.1:0"
[auth]
allow_plaintext = true
[backends.old]
address = "127.0.0.1:1"
tls = "none"
[backends.new]
address = "127.0.0.1:2"
tls = "none"
[migration.users]
"olga" = "old"
"nina" = "new"
"#;

fn session_config() -> Arc<Config> {
    static CONFIG_PARSED: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG_PARSED
        .get_or_init(|| Arc::new(config::parse(CONFIG).expect("fuzz CONFIG is valid")))
        .clone()
}

/// The configuration after a reload that moves `alice` to phase `new`.
fn moved_config() -> Arc<Config> {
    static CONFIG_PARSED: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG_PARSED
        .get_or_init(|| {
            let text = format!("{CONFIG}\"alice\" = \"new\"\n");
            Arc::new(config::parse(&text).expect("fuzz CONFIG is valid"))
        })
        .clone()
}

/// Reports are dropped: the fuzz targets check behaviour, not counts.
struct Discard;

impl Reporter for Discard {
    fn report(&mut self, _: Report) {}
}

/// `* CAPABILITY …` decoded as the backend module does at login.
fn caps(line: &str) -> Vec<Capability<'static>> {
    let Ok((_, Response::Data(Data::Capability(c)))) = ResponseCodec::new().decode(line.as_bytes())
    else {
        panic!("not a CAPABILITY line: {line:?}")
    };
    c.into_iter().map(IntoStatic::into_static).collect()
}

/// Store capability sets the session behaves differently for.
const CAPS: [&str; 4] = [
    // Everything Ferry uses (the one-APPEND copy, NEW's extended LIST) and
    // every extension the merged view carries: the other lists lack them, so
    // an OLD with one of those must never be sent what it did not offer.
    "* CAPABILITY IMAP4rev1 LITERAL+ IDLE UNSELECT UIDPLUS MOVE MULTIAPPEND SPECIAL-USE NAMESPACE LIST-EXTENDED LIST-STATUS ENABLE CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH SORT SORT=DISPLAY THREAD=REFERENCES BINARY CATENATE URL-PARTIAL STATUS=SIZE SAVEDATE PREVIEW SNIPPET=FUZZY\r\n",
    // No MULTIAPPEND: the copy appends message by message and rolls back by APPENDUID.
    "* CAPABILITY IMAP4rev1 LITERAL+ IDLE UNSELECT UIDPLUS MOVE SPECIAL-USE NAMESPACE\r\n",
    // No LITERAL+: copies are refused, literals in rewritten commands too.
    "* CAPABILITY IMAP4rev1 IDLE UIDPLUS MULTIAPPEND NAMESPACE\r\n",
    // Bare IMAP4rev1: no UNSELECT (CLOSE / EXAMINE INBOX to leave a mailbox).
    "* CAPABILITY IMAP4rev1\r\n",
];

fn caps_variant(i: usize) -> Vec<Capability<'static>> {
    static DECODED: OnceLock<Vec<Vec<Capability<'static>>>> = OnceLock::new();
    DECODED.get_or_init(|| CAPS.iter().map(|c| caps(c)).collect())[i % CAPS.len()].clone()
}

fn info(caps: usize, layout: Layout) -> BackendInfo {
    BackendInfo {
        capabilities: ferry::caps::Caps::from_decoded(&caps_variant(caps)),
        layout,
    }
}

fn to_store(store: Store) -> &'static str {
    match store {
        Store::Old => "O:",
        Store::New => "N:",
    }
}

fn from_store(store: Store) -> &'static str {
    match store {
        Store::Old => "<O",
        Store::New => "<N",
    }
}

/// Commands that change a mailbox or the mail in it. Ferry must never send one
/// of them to OLD in the merged phase; `SELECT` is in the list because OLD is
/// only ever opened with `EXAMINE` (a read-write OLD mailbox would let `CLOSE`
/// expunge and `FETCH BODY[]` set `\Seen`).
const OLD_FORBIDDEN: [&str; 12] = [
    "APPEND",
    "STORE",
    "EXPUNGE",
    "COPY",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "MOVE",
    "SETMETADATA",
    "SELECT",
];

/// The forbidden command `line` (`tag [UID] NAME …`) starts, if any.
fn forbidden_on_old(line: &[u8]) -> Option<&'static str> {
    let mut words = line
        .split(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .filter(|w| !w.is_empty());
    let _tag = words.next()?;
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case(b"UID") {
        name = words.next()?;
    }
    OLD_FORBIDDEN
        .iter()
        .find(|w| w.as_bytes().eq_ignore_ascii_case(name))
        .copied()
}

/// A line Ferry writes to the client: CRLF-terminated, and no other CR, LF or
/// NUL (a bare CR or LF inside would let a client see two lines).
fn assert_well_formed(line: &[u8]) {
    assert!(
        line.ends_with(b"\r\n"),
        "line to the client without CRLF: {:?}",
        String::from_utf8_lossy(line)
    );
    let body = &line[..line.len() - 2];
    assert!(
        !body.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
        "CR, LF or NUL inside a line to the client: {:?}",
        String::from_utf8_lossy(line)
    );
}

/// A tag a well-behaved store echoes (RFC 3501 `tag`: ASTRING-CHAR but `+`).
fn is_tag(tag: &[u8]) -> bool {
    !tag.is_empty()
        && tag
            .iter()
            .all(|b| (0x21..0x7f).contains(b) && !b"(){%*\"\\+".contains(b))
}

/// A scripted store: it frames what Ferry sends it (lines and literals, without
/// keeping literal bytes) and, when answering, says `+` to synchronizing
/// literals and IDLE, and a tagged OK to every complete command.
#[derive(Default)]
struct FakeStore {
    /// Connected and logged in (between a successful login and CloseBackend).
    open: bool,
    /// The line being received.
    line: Vec<u8>,
    /// Literal bytes still to come.
    literal: u64,
    /// The next line continues a command (follows a literal).
    in_command: bool,
    /// Tag of the command being received.
    tag: Vec<u8>,
    /// That command is `DONE` (the end of an IDLE).
    done: bool,
    /// That command is IDLE.
    idle_cmd: bool,
    /// Tag of a running IDLE.
    idle: Option<Vec<u8>>,
    /// What the store will say next.
    replies: Vec<u8>,
}

/// Lines longer than this are not kept by the scripted store (Ferry limits its
/// own lines far below).
const FAKE_MAX_LINE: usize = 1 << 20;

impl FakeStore {
    /// Frames `data`; returns the first lines of the commands it starts.
    fn feed(&mut self, mut data: &[u8], answer: bool) -> Vec<Vec<u8>> {
        let mut starts = Vec::new();
        while !data.is_empty() {
            if self.literal > 0 {
                let n = (data.len() as u64).min(self.literal);
                self.literal -= n;
                data = &data[n as usize..];
                continue;
            }
            let Some(end) = data.iter().position(|b| *b == b'\n') else {
                if self.line.len() + data.len() <= FAKE_MAX_LINE {
                    self.line.extend_from_slice(data);
                }
                break;
            };
            if self.line.len() + end < FAKE_MAX_LINE {
                self.line.extend_from_slice(&data[..=end]);
            }
            data = &data[end + 1..];
            let line = std::mem::take(&mut self.line);
            if !self.in_command {
                let mut words = line.split(|b| matches!(b, b' ' | b'\r' | b'\n'));
                self.tag = words.next().unwrap_or_default().to_vec();
                let name = words.next().unwrap_or_default();
                self.done = self.tag.eq_ignore_ascii_case(b"DONE") && name.is_empty();
                self.idle_cmd = name.eq_ignore_ascii_case(b"IDLE");
                starts.push(line.clone());
            }
            match announcement(&line) {
                Some(a) => {
                    self.in_command = true;
                    self.literal = a.len;
                    if a.sync && answer {
                        self.replies.extend_from_slice(b"+ go ahead\r\n");
                    }
                }
                None => {
                    self.in_command = false;
                    if answer {
                        self.complete();
                    }
                }
            }
        }
        starts
    }

    /// A whole command has arrived.
    fn complete(&mut self) {
        if self.done {
            if let Some(tag) = self.idle.take() {
                self.replies.extend_from_slice(&tag);
                self.replies.extend_from_slice(b" OK Idle completed\r\n");
            }
        } else if !is_tag(&self.tag) {
            self.replies
                .extend_from_slice(b"* BAD Error in IMAP command\r\n");
        } else if self.idle_cmd {
            self.replies.extend_from_slice(b"+ idling\r\n");
            self.idle = Some(self.tag.clone());
        } else {
            self.replies.extend_from_slice(&self.tag);
            self.replies.extend_from_slice(b" OK completed\r\n");
        }
    }
}

/// Time passing, by the length of one of the session's deadlines (every
/// deadline on the way fires in turn, as the driver's timer would).
#[derive(Debug, Clone, Copy)]
enum Timer {
    StoreTimeout,
    RefreshIdle,
    Autologout,
    PhaseChange,
}

/// How a store login turns out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginOutcome {
    Ok,
    Rejected,
    Unavailable,
}

/// A check that fails on a known, still open bug can be switched off while
/// fuzzing for other bugs: `FERRY_FUZZ_TOLERATE=store-gone` (a comma-separated
/// list of the names below). The replay test never sets it.
fn tolerated(check: &str) -> bool {
    static LIST: OnceLock<Vec<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        std::env::var("FERRY_FUZZ_TOLERATE")
            .unwrap_or_default()
            .split(',')
            .map(str::to_string)
            .collect()
    })
    .iter()
    .any(|c| c == check)
}

/// Ferry sends a command to a store whose connection is gone, or waits for
/// a store it has no connection to (found in the cross-store copy, fixed in
/// fa0c93c; `fuzz/corpus/store_session/copy-old-gone-*`).
const STORE_GONE: &str = "store-gone";

/// `FERRY_FUZZ_TRACE=1` prints each step as a transcript on stderr (`C:`
/// client bytes, `S:` to the client, `N:`/`O:` to and `<N`/`<O` from the
/// stores), to see what a corpus file does:
/// `FERRY_FUZZ_TRACE=1 cargo test --test fuzz_replay store_session -- --nocapture`.
fn trace(what: &str, bytes: &[u8]) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("FERRY_FUZZ_TRACE").is_some()) {
        let shown = &bytes[..bytes.len().min(300)];
        eprintln!("{what} {:?}", String::from_utf8_lossy(shown));
    }
}

/// The upper bound of actions one step may produce; more is a livelock
/// (Ferry and a store answering each other forever) or a runaway loop.
const MAX_ACTIONS_PER_STEP: usize = 1 << 20;

/// The driver's client read buffer: it keeps reading while a command runs
/// until the session holds this much (`READ_BUF` in `src/driver.rs`).
const READ_BUF: usize = 16 * 1024;

/// A session and the two scripted stores, driven the way `src/driver.rs`
/// drives them: client bytes are handed over when the driver would read them
/// (see [`Harness::pump_client`]), store logins are answered at once (or when
/// told), and nothing happens after `Action::Close`.
struct Harness {
    s: Session,
    /// The session's clock: moved only by the timer steps.
    now: Instant,
    stores: [FakeStore; 2],
    /// The scripted stores answer commands.
    answer: bool,
    /// Ferry's own lines to the client are checked (every client-facing byte
    /// comes from Ferry or from a scripted store).
    check_client: bool,
    /// The first login of the primary store.
    first_login: LoginOutcome,
    primary_tried: bool,
    old_login: LoginOutcome,
    old_layout: Layout,
    new_layout: Layout,
    new_caps: usize,
    old_caps: usize,
    /// OLD logins wait for [`Harness::finish_logins`].
    defer_old_login: bool,
    deferred: Vec<Store>,
    /// Client bytes the session has not asked for yet (still "in the socket").
    client_pending: Vec<u8>,
    closed: bool,
}

impl Harness {
    fn new(tls: bool, starttls: bool) -> Self {
        let now = Instant::now();
        let s = Session::new(
            SessionConfig {
                config: session_config(),
                tls,
                starttls,
                subscriptions: Default::default(),
                served: Default::default(),
                id: 1,
                client: "192.0.2.7:50000".parse().unwrap(),
                local: "127.0.0.1:993".parse().unwrap(),
                // Per input, so that runs are reproducible.
                throttle: Arc::new(ferry::throttle::Throttle::new(&session_config().auth)),
            },
            now,
            Box::new(Discard),
        );
        Harness {
            s,
            now,
            stores: Default::default(),
            answer: true,
            check_client: false,
            first_login: LoginOutcome::Ok,
            primary_tried: false,
            old_login: LoginOutcome::Ok,
            old_layout: Layout::legacy(),
            new_layout: Layout::slash(),
            new_caps: 0,
            old_caps: 0,
            defer_old_login: false,
            deferred: Vec::new(),
            client_pending: Vec::new(),
            closed: false,
        }
    }

    fn client(&mut self, data: &[u8]) {
        if self.closed {
            return;
        }
        self.client_pending.extend_from_slice(data);
        self.pump_client();
    }

    /// Hands the waiting client bytes over if the driver would read the
    /// client now: while the session wants input, and also while a command
    /// runs as long as less than [`READ_BUF`] bytes are buffered.
    fn pump_client(&mut self) {
        let reads = self.s.wants_client_input() || self.s.client_buffered() < READ_BUF;
        if !self.closed && reads && !self.client_pending.is_empty() {
            let data = std::mem::take(&mut self.client_pending);
            trace("C:", &data);
            self.s.handle(self.now, Event::ClientBytes(data[..].into()));
            self.drain();
        }
    }

    fn store(&mut self, store: Store, data: &[u8]) {
        if self.closed || !self.stores[store.index()].open {
            return;
        }
        trace(from_store(store), data);
        self.s
            .handle(self.now, Event::StoreBytes(store, data.into()));
        self.drain();
    }

    fn store_closed(&mut self, store: Store) {
        if self.closed || !self.stores[store.index()].open {
            return;
        }
        self.stores[store.index()] = FakeStore::default();
        trace(from_store(store), b"(closed)");
        self.s.handle(self.now, Event::StoreClosed(store));
        self.drain();
    }

    fn client_closed(&mut self) {
        if self.closed {
            return;
        }
        self.client_pending.clear();
        trace("C:", b"(closed)");
        self.s.handle(self.now, Event::ClientClosed);
        self.drain();
    }

    fn finish_logins(&mut self) {
        for store in std::mem::take(&mut self.deferred) {
            if self.closed {
                return;
            }
            self.answer_login(store);
            self.drain();
        }
    }

    fn answer_login(&mut self, store: Store) {
        let primary = !self.primary_tried;
        let outcome = match store {
            Store::Old if self.s.phase() == Some(Phase::Merged) => self.old_login,
            _ if primary => self.first_login,
            _ => LoginOutcome::Ok,
        };
        self.primary_tried = true;
        let result = match outcome {
            LoginOutcome::Ok => {
                self.stores[store.index()] = FakeStore {
                    open: true,
                    ..FakeStore::default()
                };
                Ok(match store {
                    Store::Old => info(self.old_caps, self.old_layout.clone()),
                    Store::New => info(self.new_caps, self.new_layout.clone()),
                })
            }
            LoginOutcome::Rejected => Err(LoginFailure::Rejected),
            LoginOutcome::Unavailable => Err(LoginFailure::Unavailable {
                kind: "connect",
                detail: "fuzz".into(),
            }),
        };
        trace(from_store(store), format!("(login {outcome:?})").as_bytes());
        self.s.handle(self.now, Event::LoggedIn(store, result));
    }

    /// What Ferry sends a store, checked against the phase.
    fn check_to_store(&self, store: Store, line: &[u8]) {
        match (self.s.phase(), store) {
            (Some(Phase::New), Store::Old) => {
                panic!("phase new sent to OLD: {:?}", String::from_utf8_lossy(line))
            }
            (Some(Phase::Old), Store::New) => {
                panic!("phase old sent to NEW: {:?}", String::from_utf8_lossy(line))
            }
            (Some(Phase::Merged), Store::Old) => {
                if let Some(cmd) = forbidden_on_old(line) {
                    panic!(
                        "merged phase sent {cmd} to OLD: {:?}",
                        String::from_utf8_lossy(line)
                    );
                }
                // OLD only gets the extensions it advertised (commands that
                // name a mailbox are left out: a folder may be called `SAVE`).
                let caps = info(self.old_caps, self.old_layout.clone()).capabilities;
                let verb = ferry::verb::Verb::of(line);
                let needs = match verb.name() {
                    "FETCH" | "SEARCH" | "SORT" | "THREAD" | "IDLE" | "CANCELUPDATE" => {
                        ferry::extensions::needs(line, verb)
                    }
                    _ => Default::default(),
                };
                let params = |p: &[u8]| {
                    verb.is("EXAMINE") && line.windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
                };
                let missing = needs.missing(&caps).or_else(|| {
                    [
                        (b"(CONDSTORE" as &[u8], ferry::caps::Cap::Condstore),
                        (b"(QRESYNC", ferry::caps::Cap::Qresync),
                    ]
                    .into_iter()
                    .find(|(p, cap)| params(p) && !caps.has(*cap))
                    .map(|(_, cap)| cap)
                });
                if let Some(cap) = missing {
                    panic!(
                        "merged phase sent OLD a command needing {} it did not offer: {:?}",
                        cap.name(),
                        String::from_utf8_lossy(line)
                    );
                }
            }
            _ => {}
        }
    }

    /// Performs the session's actions until it has nothing more to say and
    /// the scripted stores nothing more to answer.
    fn drain(&mut self) {
        let mut actions = 0usize;
        let mut due = 0;
        loop {
            let mut progress = false;
            let mut starttls = false;
            let mut logins = Vec::new();
            while let Some(action) = self.s.poll_action() {
                actions += 1;
                assert!(
                    actions < MAX_ACTIONS_PER_STEP,
                    "more than {MAX_ACTIONS_PER_STEP} actions in one step"
                );
                match action {
                    Action::ToClient(bytes) => {
                        trace("S:", &bytes);
                        if self.check_client {
                            // A burst of lines may be one write.
                            bytes
                                .split_inclusive(|b| *b == b'\n')
                                .for_each(assert_well_formed);
                        }
                    }
                    Action::ToBackend(store, bytes) => {
                        trace(to_store(store), &bytes);
                        self.check_to_store(store, &bytes);
                        if !self.stores[store.index()].open {
                            // The driver drops them: whatever they ask is
                            // never answered.
                            assert!(
                                tolerated(STORE_GONE),
                                "bytes for the {} store, which is not connected: {:?}",
                                store.as_str(),
                                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                            );
                            continue;
                        }
                        let starts = self.stores[store.index()].feed(&bytes, self.answer);
                        for line in starts {
                            self.check_to_store(store, &line);
                        }
                    }
                    Action::StartTls => starttls = true,
                    Action::Compress { read_ahead } => {
                        // The driver inflates what follows; here compression
                        // is the identity: what the client sent after
                        // COMPRESS comes first, as it was.
                        let later = std::mem::take(&mut self.client_pending);
                        self.client_pending = [&read_ahead[..], &later[..]].concat();
                    }
                    Action::Login { store, .. } => {
                        if let (Some(Phase::New), Store::Old) = (self.s.phase(), store) {
                            panic!("phase new logs in to OLD");
                        }
                        logins.push(store);
                    }
                    Action::CloseBackend(store) => {
                        self.stores[store.index()] = FakeStore::default();
                    }
                    Action::Close => {
                        trace("S:", b"(close)");
                        // The driver flushes and drops the connection: the end.
                        self.closed = true;
                        return;
                    }
                }
            }
            if starttls {
                self.s.handle(self.now, Event::TlsEstablished);
                progress = true;
            }
            for store in logins {
                if store == Store::Old && self.defer_old_login {
                    self.deferred.push(store);
                } else {
                    self.answer_login(store);
                    progress = true;
                }
            }
            for store in [Store::Old, Store::New] {
                let replies = std::mem::take(&mut self.stores[store.index()].replies);
                if !replies.is_empty() && self.stores[store.index()].open {
                    trace(from_store(store), &replies);
                    self.s
                        .handle(self.now, Event::StoreBytes(store, replies[..].into()));
                    progress = true;
                }
            }
            // What is due now fires now (a known-bad login is refused at
            // once); bounded, so that a deadline that never clears is seen.
            if self.s.poll_timeout().is_some_and(|at| at <= self.now) {
                due += 1;
                assert!(due < 8, "a deadline stays due after it fired");
                self.s.handle(self.now, Event::Timeout);
                progress = true;
            }
            if !progress {
                break;
            }
        }
        // A session waiting for a store it has no connection to never moves
        // on: the driver's store timeout cannot close that store again.
        if let Some(store) = self.s.awaiting_store() {
            assert!(
                self.stores[store.index()].open || tolerated(STORE_GONE),
                "the session waits for the {} store, which is not connected",
                store.as_str()
            );
        }
        if !self.client_pending.is_empty() {
            self.pump_client();
        }
    }

    /// Time passes for one of the session's deadlines (see
    /// `src/session/clock.rs`): every deadline on the way fires in turn.
    fn timer(&mut self, timer: Timer) {
        if self.closed {
            return;
        }
        trace("T:", format!("({timer:?})").as_bytes());
        let limits = &session_config().limits;
        let secs = match timer {
            Timer::StoreTimeout => limits.backend_command_timeout_secs,
            Timer::RefreshIdle => limits.idle_refresh_secs,
            Timer::Autologout => limits.idle_timeout_secs,
            Timer::PhaseChange => {
                self.s.handle(self.now, Event::Reload(moved_config()));
                self.drain();
                session_config().migration.drain_secs
            }
        };
        self.advance(Duration::from_secs(secs));
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        let mut fired = 0;
        while let Some(at) = self.s.poll_timeout().filter(|at| *at <= target) {
            if self.closed {
                return;
            }
            fired += 1;
            assert!(fired < 1000, "the session's deadlines never settle");
            self.now = self.now.max(at);
            self.s.handle(self.now, Event::Timeout);
            self.drain();
        }
        self.now = target;
    }

    /// The connection ends (EOF from the client), and the stores answer
    /// whatever clean-up Ferry still does.
    fn end(&mut self) {
        self.finish_logins();
        self.client_closed();
    }
}

/// `client_session`: arbitrary client bytes into a fresh session.
///
/// Input: `flags, len_1 … len_n, client bytes`, where `n = flags & 7` and the
/// client bytes are handed over in chunks of `len_1`, …, `len_n` bytes, then
/// the rest. Flag bits: `8` the client connection is TLS already (port 993);
/// `16` STARTTLS is not offered; `32` the stores never answer; the top two
/// bits pick login outcomes: `64` the first login is rejected, `128` it is
/// unavailable, `64|128` OLD is unavailable in the merged phase.
///
/// Stores log in at once (NEW with Dovecot-like capabilities and layout `/`,
/// OLD with `INBOX.` and `.`) and, unless told otherwise, answer each command
/// with a tagged OK (`+` for IDLE and synchronizing literals).
///
/// Checked: no panic; every line to the client is CRLF-terminated with no CR,
/// LF or NUL inside; in the merged phase OLD never receives a command that
/// writes (see [`OLD_FORBIDDEN`]); phase `new` never touches OLD, phase `old`
/// never NEW.
pub fn client_session(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(flags & 7).min(rest.len());
    let (lens, mut input) = rest.split_at(n);
    let mut h = Harness::new(flags & 8 != 0, flags & 16 == 0);
    h.answer = flags & 32 == 0;
    h.check_client = true;
    match flags >> 6 {
        1 => h.first_login = LoginOutcome::Rejected,
        2 => h.first_login = LoginOutcome::Unavailable,
        3 => h.old_login = LoginOutcome::Unavailable,
        _ => {}
    }
    h.drain();
    for &len in lens {
        let (chunk, tail) = input.split_at(usize::from(len).min(input.len()));
        h.client(chunk);
        input = tail;
    }
    h.client(input);
    h.end();
}

/// Fixed client commands `store_session` interleaves with store bytes,
/// chosen by the digits and letters `0`…`o` (see [`store_session`]).
const CLIENT_COMMANDS: [&[u8]; 25] = [
    b"LIST \"\" \"*\"\r\n",
    b"SELECT Old/INBOX\r\n",
    b"FETCH 1:* (FLAGS)\r\n",
    b"UID COPY 1:* INBOX\r\n",
    b"IDLE\r\n",
    b"DONE\r\n",
    b"STATUS INBOX (MESSAGES)\r\n",
    b"LSUB \"\" \"*\"\r\n",
    b"SELECT INBOX\r\n",
    b"UID STORE 1:* +FLAGS (\\Seen)\r\n",
    b"STATUS Old/Sent (MESSAGES UIDNEXT)\r\n",
    b"LIST \"\" \"Old/*\"\r\n",
    b"COPY 1,2 Work\r\n",
    b"NOOP\r\n",
    b"APPEND INBOX (\\Seen) {5}\r\n",
    b"hello\r\n",
    b"APPEND Work {5+}\r\nhello\r\n",
    b"EXPUNGE\r\n",
    b"CLOSE\r\n",
    b"UNSELECT\r\n",
    b"SUBSCRIBE Old/Sent\r\n",
    b"LIST \"\" \"%\"\r\n",
    b"EXAMINE Old/Archive/2019\r\n",
    b"MOVE 1 INBOX\r\n",
    b"LOGOUT\r\n",
];

/// Picks a fixed command by its selector byte: `0`-`9` then `a`-`o`.
fn fixed_command(selector: u8) -> Option<&'static [u8]> {
    let i = match selector {
        b'0'..=b'9' => selector - b'0',
        b'a'..=b'o' => selector - b'a' + 10,
        _ => return None,
    };
    CLIENT_COMMANDS.get(usize::from(i)).copied()
}

/// `store_session`: a merged session (alice, logged in), then store bytes.
///
/// Input: `flags`, then segments separated by `0xFF`. Each segment's first
/// byte says what it is:
/// - `N` / `O`: the rest goes to the session as bytes from NEW / OLD;
/// - `C`: the rest is client bytes;
/// - `0`-`9`, `a`-`o`: a fixed client command ([`CLIENT_COMMANDS`]) under a
///   fresh tag (`DONE` and an APPEND's message go as they are);
/// - `L`: answer a deferred OLD login now;
/// - `X` / `Y`: OLD / NEW closes its connection; `Z`: the client does;
/// - `T`, `R`, `E`, `P`: time passes: the store timeout (a store that owes
///   an answer is given up), the IDLE renewal time (a long IDLE is renewed
///   toward its store), the idle timeout (`* BYE`); `P` reloads a config
///   that moves alice to phase `new` first (the session ends at a safe point,
///   an IDLE is left first);
/// - anything else: the rest goes to NEW (even selector) or OLD (odd).
///
/// Flag bits: `1|2` NEW's capabilities ([`CAPS`]: all, no MULTIAPPEND, no
/// LITERAL+, bare); `4|8` OLD's login: ok, ok with a `/` layout, unavailable,
/// rejected; `16` the scripted stores also answer every command with a tagged
/// OK; `32` OLD's login waits for `L` (or the end); `64` NEW uses the layout
/// `INBOX.`/`.`; `128` OLD has no UNSELECT.
///
/// Checked: no panic, no runaway loop, and OLD never receives a write command.
/// The connection always ends with the client going away.
pub fn store_session(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut h = Harness::new(true, false);
    h.answer = flags & 16 != 0;
    h.new_caps = usize::from(flags & 3);
    h.old_caps = if flags & 128 != 0 { 3 } else { 0 };
    match (flags >> 2) & 3 {
        1 => h.old_layout = Layout::slash(),
        2 => h.old_login = LoginOutcome::Unavailable,
        3 => h.old_login = LoginOutcome::Rejected,
        _ => {}
    }
    h.defer_old_login = flags & 32 != 0;
    if flags & 64 != 0 {
        h.new_layout = Layout::legacy();
    }
    h.drain();
    h.client(b"a1 LOGIN alice secret\r\n");
    if h.s.phase() != Some(Phase::Merged) {
        return;
    }
    let mut tag = 0u32;
    for segment in rest.split(|b| *b == 0xFF) {
        let Some((&selector, body)) = segment.split_first() else {
            continue;
        };
        match selector {
            b'N' => h.store(Store::New, body),
            b'O' => h.store(Store::Old, body),
            b'C' => h.client(body),
            b'L' => h.finish_logins(),
            b'X' => h.store_closed(Store::Old),
            b'Y' => h.store_closed(Store::New),
            b'Z' => h.client_closed(),
            b'T' => h.timer(Timer::StoreTimeout),
            b'R' => h.timer(Timer::RefreshIdle),
            b'E' => h.timer(Timer::Autologout),
            b'P' => h.timer(Timer::PhaseChange),
            _ => match fixed_command(selector) {
                Some(cmd) if cmd == b"DONE\r\n" || cmd == b"hello\r\n" => h.client(cmd),
                Some(cmd) => {
                    tag += 1;
                    let mut line = format!("t{tag} ").into_bytes();
                    line.extend_from_slice(cmd);
                    h.client(&line);
                }
                None if selector % 2 == 0 => h.store(Store::New, body),
                None => h.store(Store::Old, body),
            },
        }
        if h.closed {
            return;
        }
    }
    h.end();
}

/// `s` as a TOML string (written by the toml crate, so it reads back exactly).
fn toml_string(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

/// The client prefix and delimiter, if the configuration accepts them.
/// Answers are remembered (fuzzing mostly keeps the prefix while mutating
/// the names, and parsing a configuration is the slow part).
fn validated_namespace(prefix: &str, delimiter: char) -> Option<(String, char)> {
    type Seen = std::collections::HashMap<(String, char), Option<(String, char)>>;
    thread_local! {
        static SEEN: std::cell::RefCell<Seen> = Default::default();
    }
    let key = (prefix.to_string(), delimiter);
    if let Some(known) = SEEN.with(|s| s.borrow().get(&key).cloned()) {
        return known;
    }
    let text = format!(
        "{CONFIG}[namespace]\nold_prefix = {}\ndelimiter = {}\n",
        toml_string(prefix),
        toml_string(&delimiter.to_string())
    );
    let answer = config::parse(&text)
        .ok()
        .map(|c| (c.namespace.old_prefix, c.namespace.delimiter));
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() >= 4096 {
            s.clear();
        }
        s.insert(key, answer.clone());
    });
    answer
}

/// A store delimiter from the input: any printable ASCII but `&` (which
/// starts a modified UTF-7 run, so no store can use it) and the wildcards.
fn store_delimiter(b: u8) -> Option<u8> {
    (b.is_ascii_graphic() && !matches!(b, b'&' | b'*' | b'%')).then_some(b)
}

/// A store layout from a selector and (for the custom ones) an input field.
fn layout(kind: u8, field: &[u8]) -> Layout {
    let custom = |prefix: &[u8], delimiter: Option<u8>| Layout {
        prefix: prefix.to_vec(),
        delimiter,
    };
    match kind % 8 {
        0 => Layout::legacy(),
        1 => Layout::slash(),
        2 => Layout::flat(),
        3 => custom(b"INBOX/", Some(b'/')),
        4 => custom(b"", Some(b'.')),
        5 => custom(b"Mail/", Some(b'/')),
        // Delimiter from the field, no prefix.
        6 => custom(b"", field.first().copied().and_then(store_delimiter)),
        // Delimiter, then the prefix (printable ASCII, as NAMESPACE gives it).
        _ => match field.split_first() {
            Some((&d, prefix)) if prefix.iter().all(|b| (0x20..0x7f).contains(b)) => {
                custom(prefix, store_delimiter(d))
            }
            _ => Layout::legacy(),
        },
    }
}

fn is_inbox(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"INBOX")
}

/// `INBOX` in any case is `INBOX`.
fn canonical(name: &[u8]) -> Vec<u8> {
    if is_inbox(name) {
        b"INBOX".to_vec()
    } else {
        name.to_vec()
    }
}

/// The client name a round trip through the stores must give back for `client`.
fn canonical_client(map: &NameMap, client: &[u8]) -> Vec<u8> {
    match client.strip_prefix(map.prefix()) {
        Some(rest) if is_inbox(rest) => [map.prefix(), b"INBOX"].concat(),
        _ => canonical(client),
    }
}

/// RFC 3501 LIST matching, written independently of `namespace::matches`:
/// a table over pattern and name suffixes. A leading `INBOX` level is
/// case-insensitive on both sides.
fn reference_matches(pattern: &[u8], name: &[u8], delim: u8) -> bool {
    fn canonical_inbox(s: &[u8], delim: u8) -> Vec<u8> {
        let mut v = s.to_vec();
        if v.len() >= 5 && v[..5].eq_ignore_ascii_case(b"INBOX") && (v.len() == 5 || v[5] == delim)
        {
            v[..5].copy_from_slice(b"INBOX");
        }
        v
    }
    let (p, n) = (
        canonical_inbox(pattern, delim),
        canonical_inbox(name, delim),
    );
    // after[j]: p[i+1..] matches n[j..]; here[j]: p[i..] matches n[j..].
    let mut after: Vec<bool> = (0..=n.len()).map(|j| j == n.len()).collect();
    for &pc in p.iter().rev() {
        let mut here = vec![false; n.len() + 1];
        for j in (0..=n.len()).rev() {
            here[j] = match pc {
                b'*' => after[j] || (j < n.len() && here[j + 1]),
                b'%' => after[j] || (j < n.len() && n[j] != delim && here[j + 1]),
                c => j < n.len() && n[j] == c && after[j + 1],
            };
        }
        after = here;
    }
    after[0]
}

/// `namespace`: name mapping round trips and LIST matching.
///
/// Input: `delimiter, layouts, prefix \n old-field \n new-field \n name \n name …`:
/// the client delimiter and the `Old/` prefix (UTF-8) must pass configuration
/// validation, else the input is skipped; `layouts` picks OLD's layout (low
/// nibble) and NEW's (high nibble): legacy `INBOX.`/`.`, `/`, flat,
/// `INBOX/`/`/`, `.`, `Mail/`/`/`, a delimiter from the field, or delimiter +
/// prefix from the field.
///
/// Checked for every name, taken as a client name and as a name on each store:
/// client → store → client and store → client → store give the name back
/// (`INBOX` in any case counts as `INBOX`) whenever both directions succeed, so
/// nothing is ever mis-mapped; `namespace::matches` agrees with an independent
/// matcher on each pair of consecutive names (pattern, name) and never panics;
/// `join_reference` and `translate` never panic.
pub fn namespace(data: &[u8]) {
    let [delimiter, layouts, rest @ ..] = data else {
        return;
    };
    let mut fields = rest.split(|b| *b == b'\n');
    let Some(Ok(prefix)) = fields.next().map(std::str::from_utf8) else {
        return;
    };
    let Some((prefix, delimiter)) = validated_namespace(prefix, char::from(*delimiter)) else {
        return;
    };
    let old = layout(layouts & 15, fields.next().unwrap_or_default());
    let new = layout(layouts >> 4, fields.next().unwrap_or_default());
    let map = NameMap::new(&prefix, delimiter, old.clone(), new.clone());
    let delim = map.delimiter();
    let names: Vec<&[u8]> = fields.collect();
    for name in &names {
        check_name(&map, name);
    }
    let delimiters: Vec<u8> = [Some(delim), old.delimiter, new.delimiter]
        .into_iter()
        .flatten()
        .collect();
    for (i, pair) in names.windows(2).enumerate() {
        let (pattern, name) = (pair[0], pair[1]);
        // Both matchers take pattern × name steps: long pairs only check that
        // `matches` finishes (libFuzzer's -timeout bounds it), short ones are
        // compared under the client's delimiter and, in turn, a store's.
        if pattern.len().saturating_mul(name.len()) > 1 << 16 {
            let _ = namespace::matches(pattern, name, delim);
        } else {
            for d in [delim, delimiters[i % delimiters.len()]] {
                assert_eq!(
                    namespace::matches(pattern, name, d),
                    reference_matches(pattern, name, d),
                    "matches({:?}, {:?}, {:?})",
                    String::from_utf8_lossy(pattern),
                    String::from_utf8_lossy(name),
                    char::from(d)
                );
            }
        }
        let _ = namespace::join_reference(pattern, name, delim);
        let _ = namespace::translate(name, delim, old.delimiter.unwrap_or(b'.'));
    }
}

fn check_name(map: &NameMap, name: &[u8]) {
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    // client → store → client
    match map.to_backend(name) {
        Ok(Target::New(n)) => {
            if let Some(back) = map.new_to_client(&n) {
                assert_eq!(
                    show(&back),
                    show(&canonical_client(map, name)),
                    "client {:?} → NEW {:?} → client",
                    show(name),
                    show(&n)
                );
            }
        }
        Ok(Target::Old(o)) => {
            if let Some(back) = map.old_to_client(&o) {
                assert_eq!(
                    show(&back),
                    show(&canonical_client(map, name)),
                    "client {:?} → OLD {:?} → client",
                    show(name),
                    show(&o)
                );
            }
        }
        Ok(Target::OldRoot) => assert_eq!(show(name), show(map.root()), "OldRoot"),
        Err(_) => {}
    }
    // OLD → client → OLD
    if let Some(client) = map.old_to_client(name) {
        assert!(
            map.is_reserved(&client),
            "OLD {:?} → client {:?} outside the prefix",
            show(name),
            show(&client)
        );
        if let Ok(back) = map.to_backend(&client) {
            assert_eq!(
                back,
                Target::Old(canonical(name)),
                "OLD {:?} → client {:?} → elsewhere",
                show(name),
                show(&client)
            );
        }
    }
    // NEW → client → NEW
    if let Some(client) = map.new_to_client(name) {
        assert!(
            !map.is_reserved(&client),
            "NEW {:?} → client {:?} inside the prefix",
            show(name),
            show(&client)
        );
        if let Ok(back) = map.to_backend(&client) {
            assert_eq!(
                back,
                Target::New(canonical(name)),
                "NEW {:?} → client {:?} → elsewhere",
                show(name),
                show(&client)
            );
        }
    }
    if let Some(client) = map.new_subscription_to_client(name) {
        assert!(map.is_reserved(&client));
    }
}

/// `config`: arbitrary UTF-8 as a configuration file: `Ok` or `Err`, never a panic.
pub fn config_text(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config::parse(text);
    }
}
