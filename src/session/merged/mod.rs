//! The merged phase: NEW as it is, OLD read-only under the prefix.
//!
//! A command travels client → [`route`](crate::route) → the store that holds
//! what it names, keeping the client's tag. Ferry's own traffic (unselecting the
//! store being left, LIST fan-out, the flag echo for STOREs in `Old/`) uses
//! Ferry's tags and never reaches the client. OLD only ever receives read-only
//! commands: see [`crate::route::old_may_receive`].

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use imap_codec::{
    CommandCodec, ResponseCodec,
    decode::Decoder,
    encode::Encoder,
    imap_types::{
        IntoStatic,
        command::{Command, CommandBody},
        core::{Literal, QuotedChar},
        extensions::binary::LiteralOrLiteral8,
        fetch::{MacroOrMessageDataItemNames, MessageDataItemName},
        mailbox::{ListMailbox, Mailbox},
        response::{Code, Data, Response},
    },
};

use super::{Credentials, Input, Shared, reply, reply::Rfc5530};
use crate::{
    caps::{Cap, Caps},
    config::Config,
    extensions::{Enabled, needs},
    frame::Announcement,
    merge::{self, RawEntry},
    namespace::{Layout, MapError, NameMap, Store, Target, join_reference, matches},
    route::{self, Local, NameOp, Route, SelectedOp},
    verb::Verb,
};

mod append;
mod catenate;
mod commands;
mod copy;
mod list;
mod listext;
mod old;
mod respond;

pub(super) use append::append_probe;
use copy::CopyJob;
use list::ListJob;
use listext::ListExtJob;
pub(super) use listext::parses_itself;
use old::{OldView, Resume};
pub use respond::rename_data;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OldState {
    /// Not logged in yet: OLD is contacted when first needed.
    Absent,
    Connecting,
    Ready,
    Unavailable,
    /// OLD went away under an open folder; commands wait for it.
    Reconnecting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    Select(Store),
    Deselect,
}

#[derive(Debug)]
enum Job {
    /// A client command on one store, under the client's tag.
    Forward {
        store: Store,
        tag: Bytes,
        after: After,
        /// Map mailbox names in LIST/STATUS data back to the client's view.
        rename: bool,
    },
    /// Ferry's UNSELECT of the store being left, then `then`.
    Leave {
        store: Store,
        tag: Bytes,
        then: Box<(Store, Bytes, Job)>,
    },
    List(Box<ListJob>),
    /// An extended LIST (RFC 5258), over both stores.
    ListExt(Box<ListExtJob>),
    /// A STORE in `Old/`: ignored; the real flags are fetched and shown instead.
    FlagEcho {
        store: Store,
        tag: Bytes,
        ferry_tag: Bytes,
    },
    /// The client's IDLE on one store.
    Idle(super::idle::Idle),
    Append {
        store: Store,
        tag: Bytes,
        /// A synchronizing literal waiting for the store's `+`.
        pending: Option<Announcement>,
        /// The message literal came in RFC 6855's `UTF8 (…)`, which went to
        /// NEW as a plain literal8: its closing `)` is not NEW's to see.
        utf8_close: bool,
    },
    /// A COPY from an `Old/` folder into a NEW one.
    Copy(Box<CopyJob>),
    /// Ferry's EXAMINE re-opening an `Old/` folder after a reconnect.
    Reopen(Bytes, Box<Resume>),
    /// The client's ENABLE, passed on to NEW under Ferry's tag: `newly`
    /// is what Ferry's `* ENABLED` lists once NEW has answered.
    Enable {
        tag: Bytes,
        ferry_tag: Bytes,
        newly: Vec<&'static str>,
    },
}

impl Job {
    /// The client's tag this job answers (Ferry's own jobs have none).
    fn client_tag(&self) -> Option<Bytes> {
        match self {
            Job::Forward { tag, .. }
            | Job::FlagEcho { tag, .. }
            | Job::Append { tag, .. }
            | Job::Enable { tag, .. } => Some(tag.clone()),
            Job::Idle(i) => Some(i.tag.clone()),
            Job::List(l) => Some(l.client_tag().clone()),
            Job::ListExt(l) => Some(l.client_tag().clone()),
            Job::Copy(c) => Some(c.client_tag().clone()),
            Job::Reopen(..) => None,
            Job::Leave { then, .. } => then.2.client_tag(),
        }
    }
}

pub(super) struct Merged {
    map: NameMap,
    caps: Caps,
    pub(super) credentials: Arc<Credentials>,
    selected: Option<Store>,
    old: OldState,
    job: Option<Job>,
    /// A command waiting for OLD's login.
    pub(super) parked: Option<Bytes>,
    /// The `Old/` folder open (or being opened) on OLD, by its OLD name.
    old_name: Option<Vec<u8>>,
    /// The mailbox selected on NEW is an `Old/` folder's copy, served
    /// read-only in its place (`copy_opening`: one being opened).
    old_copy: bool,
    copy_opening: bool,
    /// What the client has seen of it.
    old_view: OldView,
    /// The last client command sent to OLD: (tag, bytes), to repeat after a reconnect.
    old_last: Option<(Bytes, Bytes)>,
    resume: Option<Box<Resume>>,
    /// What the client enabled, and what each store was asked to enable
    /// (by [`Store::index`]): a store is brought level before its next command.
    enabled: Enabled,
    store_enabled: [Enabled; 2],
    /// The `Old/` folder being opened has no mod-sequences for this client:
    /// `* OK [NOMODSEQ]` goes before its tagged OK.
    nomodseq: bool,
    /// The STATUS running on OLD was asked for HIGHESTMODSEQ, which OLD
    /// cannot give: its answer shows 0 (RFC 7162 §3.1.2.2's value for a
    /// mailbox without mod-sequences).
    zero_modseq: bool,
}

fn mailbox_bytes(m: &Mailbox<'_>) -> Vec<u8> {
    match m {
        Mailbox::Inbox => b"INBOX".to_vec(),
        Mailbox::Other(o) => o.as_ref().to_vec(),
    }
}

/// `name` (modified UTF-7) for the client: in UTF-8 when it enabled
/// UTF8=ACCEPT.
fn shown(utf8: bool, name: Vec<u8>) -> Mailbox<'static> {
    use imap_codec::imap_types::{
        core::{AString, IString},
        extensions::utf8::QuotedUtf8,
    };
    if utf8
        && let Some(text) = crate::mutf7::decode(&name)
        && text.as_bytes() != name.as_slice()
    {
        if text.is_ascii() {
            return mailbox(text.into_bytes());
        }
        if let Ok(q) = QuotedUtf8::try_from(text) {
            return Mailbox::from(AString::String(IString::QuotedUtf8(q)));
        }
    }
    mailbox(name)
}

fn mailbox(name: Vec<u8>) -> Mailbox<'static> {
    // Invariant: names come from NameMap, which only yields valid modified UTF-7
    // (printable ASCII), so they always form a valid astring.
    Mailbox::try_from(name).expect("mapped names are valid astrings")
}

fn status_word(message: &[u8]) -> &[u8] {
    message
        .split(|b| *b == b' ')
        .nth(1)
        .map(|w| w.strip_suffix(b"\r\n").unwrap_or(w))
        .unwrap_or_default()
}

fn is_ok(message: &[u8]) -> bool {
    status_word(message).eq_ignore_ascii_case(b"OK")
}

/// `* n FETCH …`
fn is_fetch(line: &[u8]) -> bool {
    let mut words = line.splitn(4, |b| *b == b' ');
    words.next() == Some(b"*")
        && words
            .next()
            .is_some_and(|n| n.iter().all(u8::is_ascii_digit))
        && words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(b"FETCH"))
}

impl Merged {
    pub(super) fn new(
        config: &Config,
        new_layout: Layout,
        caps: Caps,
        credentials: Arc<Credentials>,
    ) -> Self {
        let ns = &config.namespace;
        Self {
            map: NameMap::new(&ns.old_prefix, ns.delimiter, Layout::flat(), new_layout),
            caps,
            credentials,
            selected: None,
            old: OldState::Absent,
            job: None,
            parked: None,
            old_name: None,
            old_copy: false,
            copy_opening: false,
            old_view: OldView::default(),
            old_last: None,
            resume: None,
            enabled: Enabled::default(),
            store_enabled: [Enabled::default(); 2],
            nomodseq: false,
            zero_modseq: false,
        }
    }

    /// A mailbox name the client sent, in the client's modified UTF-7 form:
    /// after `ENABLE UTF8=ACCEPT` (RFC 6855) names arrive as UTF-8, and
    /// every store is still spoken to in modified UTF-7.
    pub(super) fn client_name(&self, mailbox: &Mailbox<'_>) -> Vec<u8> {
        let raw = mailbox_bytes(mailbox);
        if !self.utf8() || matches!(mailbox, Mailbox::Inbox) {
            return raw;
        }
        match std::str::from_utf8(&raw) {
            Ok(name) => crate::mutf7::encode(name).into_bytes(),
            // Not UTF-8: left as it is, it is refused as a bad name.
            Err(_) => raw,
        }
    }

    /// Names travel in UTF-8 toward the client (RFC 6855): the client's own
    /// bytes never go to a store as they are.
    pub(super) fn utf8(&self) -> bool {
        self.enabled.has(Cap::Utf8Accept)
    }

    /// A name in the client's modified UTF-7 form, as the client is to see it.
    pub(super) fn shown_name(&self, name: Vec<u8>) -> Mailbox<'static> {
        shown(self.utf8(), name)
    }

    /// A line of the client's streamed APPEND, as NEW is to see it.
    pub(in crate::session) fn append_line(&mut self, line: Bytes) -> Bytes {
        match &mut self.job {
            Some(Job::Append { utf8_close, .. })
                if *utf8_close || self.enabled.has(Cap::Utf8Accept) =>
            {
                append::utf8_line(line, utf8_close)
            }
            _ => line,
        }
    }

    pub(in crate::session) fn ready_for_parked(&self) -> bool {
        self.job.is_none()
    }

    /// The client's tag of the command in flight, if any.
    pub(super) fn client_tag(&self) -> Option<Bytes> {
        self.job.as_ref()?.client_tag()
    }

    /// The store that owes an answer right now (an IDLE owes none).
    pub(super) fn awaiting(&self) -> Option<Store> {
        match self.job.as_ref()? {
            Job::Forward { store, .. } | Job::Leave { store, .. } | Job::Append { store, .. } => {
                Some(*store)
            }
            Job::Idle(i) => i.is_renewing().then_some(i.store),
            Job::FlagEcho { store, .. } => Some(*store),
            Job::List(l) => [Store::New, Store::Old]
                .into_iter()
                .find(|s| l.waits_on(*s)),
            Job::ListExt(l) => [Store::New, Store::Old]
                .into_iter()
                .find(|s| l.waits_on(*s)),
            Job::Copy(c) => c.awaiting(),
            Job::Reopen(..) => Some(Store::Old),
            Job::Enable { .. } => Some(Store::New),
        }
    }

    /// The running IDLE that the client is in.
    pub(super) fn running_idle(&self) -> Option<&super::idle::Idle> {
        match self.job.as_ref()? {
            Job::Idle(i) if i.is_running() => Some(i),
            _ => None,
        }
    }

    fn job_store(&self) -> Option<Store> {
        match &self.job {
            Some(
                Job::Forward { store, .. }
                | Job::Append { store, .. }
                | Job::FlagEcho { store, .. },
            ) => Some(*store),
            Some(Job::Idle(i)) => Some(i.store),
            Some(Job::Copy(_)) => Some(Store::Old),
            Some(Job::Enable { .. }) => Some(Store::New),
            _ => None,
        }
    }

    /// The route of a command that goes to NEW as the client sent it, known by
    /// its name alone: NOOP, and FETCH, SEARCH and STORE on a selected NEW
    /// mailbox. Such a command is not decoded: NEW judges its arguments. A
    /// command for OLD is always decoded, so only what may reach OLD does.
    pub(super) fn undecoded(&self, raw: &[u8], verb: Verb) -> Option<Route> {
        let route = route::by_name(raw, verb)?;
        let store = match route {
            Route::Noop => self.selected.unwrap_or(Store::New),
            // An `Old/` folder's copy: its STOREs are Ferry's to answer.
            _ if self.old_copy => return None,
            _ => self.selected?,
        };
        (store == Store::New).then_some(route)
    }

    /// Keeps track of what the client sees of its `Old/` folder.
    pub(super) fn observe_old(&mut self, line: &[u8], literal: bool) {
        let opening = matches!(
            self.job,
            Some(Job::Forward {
                store: Store::Old,
                after: After::Select(Store::Old),
                ..
            }) | Some(Job::Reopen(..))
        );
        if !literal && (opening || self.selected == Some(Store::Old)) {
            self.old_view.observe(line);
        }
    }

    /// Whether `line`, a one-line untagged answer, is forwarded as it is.
    /// `numbered` keeps the verdict for message-number lines (`* 3 EXISTS`,
    /// `* 7 FETCH (…)`) over a burst: outside a copy, [`classify`](Self::classify)
    /// judges them all alike (their second word names no response it
    /// treats apart), so the first one's verdict serves the rest.
    pub(super) fn forwards(&self, store: Store, line: &[u8], numbered: &mut Option<bool>) -> bool {
        let memo =
            !matches!(self.job, Some(Job::Copy(_))) && line.get(2).is_some_and(u8::is_ascii_digit);
        if memo && let Some(verdict) = *numbered {
            return verdict;
        }
        let verdict = matches!(
            self.classify(store, line, false),
            super::Disposition::Forward
        );
        if memo {
            *numbered = Some(verdict);
        }
        verdict
    }

    /// How a store's response starting with `line` is handled; `literal` says
    /// whether the line announces one.
    pub(super) fn classify(&self, store: Store, line: &[u8], literal: bool) -> super::Disposition {
        use super::Disposition::*;
        // Every store line passes here: its first two words decide.
        let (tag, word) = crate::frame::head(line);
        if tag != b"*" {
            return Assemble(BytesMut::new());
        }
        let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
        let names = is(b"LIST") || is(b"LSUB") || is(b"STATUS");
        match &self.job {
            Some(Job::List(l)) if names => {
                return if l.waits_on(store) {
                    Assemble(BytesMut::new())
                } else {
                    Drop
                };
            }
            Some(Job::ListExt(l)) if names => {
                return if l.waits_on(store) {
                    Assemble(BytesMut::new())
                } else {
                    Drop
                };
            }
            Some(Job::Forward {
                store: s,
                rename: true,
                ..
            }) if *s == store && names => return Assemble(BytesMut::new()),
            Some(Job::Copy(c)) if store == Store::Old && is_fetch(line) => {
                return if literal && c.takes_body() {
                    Copy
                } else if literal {
                    Forward
                } else {
                    Assemble(BytesMut::new())
                };
            }
            _ => {}
        }
        if is(b"BYE") || is(b"ENABLED") {
            // Ferry's own ENABLEs are answered to it; the client's
            // `* ENABLED` is Ferry's, listing what Ferry honours.
            return Drop;
        }
        if crate::frame::is_status(tag, word) && memchr::memmem::find(line, b"[ALERT]").is_some() {
            return Forward;
        }
        if Some(store) == self.selected || Some(store) == self.job_store() {
            Forward
        } else {
            Drop
        }
    }
}

impl Shared {
    /// The store being left is unselected: the command that waited for it
    /// goes out, unless it is for OLD and OLD went away meanwhile.
    fn after_leave(&mut self, m: &mut Merged, (store, bytes, job): (Store, Bytes, Job)) {
        if store == Store::Old && m.old != OldState::Ready {
            m.old_name = None;
            m.old_last = None;
            if let Some(tag) = job.client_tag() {
                self.send_client(unavailable(&tag));
            }
            self.input = Input::Command;
            return;
        }
        self.send_store(store, bytes);
        m.job = Some(job);
    }

    /// Sends a client command to `store` and waits for its tagged response.
    fn forward(&mut self, m: &mut Merged, store: Store, tag: Bytes, bytes: Bytes, after: After) {
        let rename = store == Store::Old || !same_names(&m.map, store) || m.utf8();
        if store == Store::Old {
            m.old_last = Some((tag.clone(), bytes.clone()));
        }
        let job = Job::Forward {
            store,
            tag,
            after,
            rename,
        };
        let leaving = m
            .selected
            .filter(|s| *s != store && matches!(after, After::Select(_)));
        self.start(m, leaving, store, bytes, job);
    }

    /// Starts `job` by sending `bytes` to `store`, unselecting `leaving` first.
    fn start(
        &mut self,
        m: &mut Merged,
        leaving: Option<Store>,
        store: Store,
        bytes: Bytes,
        job: Job,
    ) {
        self.input = Input::Waiting;
        self.enable_on(m, store);
        match leaving {
            Some(old_store) => {
                if m.enabled.has(Cap::Qresync) {
                    // RFC 7162 §3.2.11: the store being left closes its
                    // mailbox silently (Ferry's UNSELECT); the client must
                    // still learn where the old mailbox's responses end.
                    self.send_client(reply::closed());
                }
                m.selected = None;
                let tag = self.ferry_tag();
                let body = self.unselect_body(old_store);
                self.send_store(old_store, reply::command(&tag, body));
                m.job = Some(Job::Leave {
                    store: old_store,
                    tag,
                    then: Box::new((store, bytes, job)),
                });
            }
            None => {
                self.send_store(store, bytes);
                m.job = Some(job);
            }
        }
    }

    /// How the mailbox open on `store` is left without expunging: UNSELECT;
    /// without it, CLOSE only where the mailbox is read-only (OLD's are
    /// opened with EXAMINE), else EXAMINE INBOX (which CLOSEs nothing).
    fn unselect_body(&self, store: Store) -> CommandBody<'static> {
        match (self.store_has(store, Cap::Unselect), store) {
            (true, _) => CommandBody::Unselect,
            (false, Store::Old) => CommandBody::Close,
            (false, Store::New) => CommandBody::Examine {
                mailbox: Mailbox::Inbox,
                parameters: Vec::new(),
            },
        }
    }

    /// Takes up the client command `raw`; its tag, or `None` when the command
    /// must wait until the open `Old/` folder is back.
    fn begin(&mut self, m: &mut Merged, raw: &Bytes, verb: Verb) -> Option<Bytes> {
        if m.old == OldState::Reconnecting || matches!(m.job, Some(Job::Reopen(..))) {
            m.parked = Some(raw.clone());
            self.input = Input::Waiting;
            return None;
        }
        self.input = Input::Command;
        Some(self.time_command(raw, verb))
    }

    pub(super) fn merged_command(
        &mut self,
        m: &mut Merged,
        cmd: Command<'_>,
        raw: &Bytes,
        verb: Verb,
    ) {
        let Some(tag) = self.begin(m, raw, verb) else {
            return;
        };
        self.note_condstore(m, raw, verb);
        match route::route(&cmd.body) {
            Route::Local(local) => self.local(m, local, &tag),
            Route::Bad(text) => self.send_client(reply::bad(&tag, text)),
            Route::Noop => self.noop(m, raw, tag),
            Route::Enable => self.enable(m, cmd, tag),
            Route::Idle => {
                let store = m.selected.unwrap_or(Store::New);
                if store == Store::Old && !self.store_has(Store::Old, Cap::Idle) {
                    return self.send_client(not_on_old(&tag, Cap::Idle));
                }
                let job = Job::Idle(super::idle::Idle::new(&tag, store, self.clock.now));
                self.start(m, None, store, raw.clone(), job);
            }
            Route::List { lsub } => self.list(m, cmd, raw, tag, lsub),
            Route::ByName(op) => self.by_name(m, op, cmd, raw, tag),
            Route::Selected(op) => self.on_selected(m, op, cmd, raw, tag),
        }
    }

    /// A command that goes to NEW as the client sent it, known by its name
    /// alone (see [`Merged::undecoded`]): no decoding needed.
    pub(super) fn merged_undecoded(
        &mut self,
        m: &mut Merged,
        route: Route,
        raw: &Bytes,
        verb: Verb,
    ) {
        let Some(tag) = self.begin(m, raw, verb) else {
            return;
        };
        // Not scanned for CONDSTORE (this is every FETCH's path): a FETCH
        // or STORE on NEW that enables it implicitly leaves OLD to be
        // enabled by the client's next SELECT or ENABLE.
        match route {
            Route::Selected(op) => self.selected_as_is(m, op, Store::New, raw, tag),
            _ => self.noop(m, raw, tag),
        }
    }

    /// A command imap-codec cannot decode (an extension's syntax, such as
    /// `SEARCH RETURN (…)`) that goes to the selected mailbox by its name
    /// alone: read-only commands reach OLD when OLD offers what they need;
    /// anything else is judged by NEW.
    pub(super) fn merged_raw(&mut self, m: &mut Merged, route: Route, raw: &Bytes, verb: Verb) {
        let Some(tag) = self.begin(m, raw, verb) else {
            return;
        };
        self.note_condstore(m, raw, verb);
        let Route::Selected(op) = route else {
            return self.noop(m, raw, tag);
        };
        match (m.selected, op) {
            (None, _) => self.send_client(reply::bad(&tag, "No mailbox selected")),
            (Some(Store::Old), SelectedOp::Read) => self.old_read(m, raw, tag, verb),
            (Some(Store::New), _) if !m.old_copy => {
                self.selected_as_is(m, op, Store::New, raw, tag)
            }
            (Some(Store::New), SelectedOp::Read) => {
                self.selected_as_is(m, op, Store::New, raw, tag)
            }
            _ => self.send_client(read_only(&tag)),
        }
    }

    /// A read-only command on the open `Old/` folder: to OLD when OLD
    /// offers every extension it relies on, else answered by Ferry.
    fn old_read(&mut self, m: &mut Merged, raw: &Bytes, tag: Bytes, verb: Verb) {
        let need = needs(raw, verb);
        let missing = if need.has(Cap::Condstore) && !self.old_modseq(m) {
            Some(Cap::Condstore)
        } else {
            self.store_info(Store::Old)
                .and_then(|i| need.missing(&i.capabilities))
        };
        match missing {
            // RFC 7162 §3.1.2.2: a mailbox without mod-sequences refuses
            // CONDSTORE's commands with BAD.
            Some(Cap::Condstore | Cap::Qresync) => self.send_client(reply::bad(
                &tag,
                "Old/ folders have no mod-sequences here (NOMODSEQ)",
            )),
            Some(cap) => self.send_client(not_on_old(&tag, cap)),
            None => self.selected_as_is(m, SelectedOp::Read, Store::Old, raw, tag),
        }
    }

    /// A CONDSTORE-enabling command (RFC 7162 §3.1) turns CONDSTORE on for
    /// the whole session: the other store is enabled before its next command.
    fn note_condstore(&mut self, m: &mut Merged, raw: &[u8], verb: Verb) {
        if m.enabled.has(Cap::Condstore)
            || !m.caps.has(Cap::Condstore)
            || !matches!(
                verb.name(),
                "FETCH" | "SEARCH" | "STORE" | "SELECT" | "EXAMINE" | "STATUS" | "SORT"
            )
        {
            return;
        }
        if needs(raw, verb).has(Cap::Condstore) {
            m.enabled.insert(Cap::Condstore);
        }
    }

    /// Whether `Old/` folders show mod-sequences to this client: OLD has
    /// CONDSTORE, and QRESYNC too if the client enabled it (a folder whose
    /// expunges Ferry could not report as VANISHED must not claim them).
    pub(super) fn old_modseq(&self, m: &Merged) -> bool {
        self.store_has(Store::Old, Cap::Condstore)
            && (!m.enabled.has(Cap::Qresync) || self.store_has(Store::Old, Cap::Qresync))
    }

    /// Brings `store` level with what the client enabled: `ENABLE` under
    /// Ferry's tag, answered to Ferry, before the command that needs it.
    pub(super) fn enable_on(&mut self, m: &mut Merged, store: Store) {
        if m.enabled.is_empty() {
            // Every command's start: the usual session enabled nothing.
            return;
        }
        let want = match store {
            Store::Old if !self.old_modseq(m) => Enabled::default(),
            _ => m.enabled,
        };
        let i = store.index();
        if m.store_enabled[i].covers(want) {
            return;
        }
        m.store_enabled[i] = want;
        let Some(caps) = self.store_info(store).map(|i| i.capabilities.clone()) else {
            return;
        };
        if !caps.has(Cap::Enable) {
            return;
        }
        if let Some(body) = reply::enable(&want.on(&caps)) {
            let tag = self.ferry_tag();
            self.send_store(store, reply::command(&tag, body));
        }
    }

    /// ENABLE (RFC 5161): Ferry honours what it showed the client; NEW
    /// enables it now, OLD when it is next used.
    fn enable(&mut self, m: &mut Merged, cmd: Command<'_>, tag: Bytes) {
        let CommandBody::Enable { capabilities } = cmd.body else {
            return;
        };
        let mut newly = Vec::new();
        for c in capabilities.as_ref() {
            if let Some(cap) = Enabled::honoured(&c.to_string(), &m.caps)
                && !m.enabled.has(cap)
            {
                m.enabled.insert(cap);
                newly.push(cap.name());
            }
        }
        let want = m.enabled;
        let i = Store::New.index();
        let body = (!m.store_enabled[i].covers(want))
            .then(|| {
                let caps = self.store_info(Store::New)?.capabilities.clone();
                reply::enable(&want.on(&caps))
            })
            .flatten();
        m.store_enabled[i] = want;
        match body {
            Some(body) => {
                let ferry_tag = self.ferry_tag();
                let job = Job::Enable {
                    tag,
                    ferry_tag: ferry_tag.clone(),
                    newly,
                };
                self.input = Input::Waiting;
                self.send_store(Store::New, reply::command(&ferry_tag, body));
                m.job = Some(job);
            }
            None => {
                self.send_client(reply::enabled(&newly));
                self.send_client(reply::ok(&tag, "ENABLE completed"));
            }
        }
    }

    /// NOOP goes to the selected store, to NEW when none is (it keeps NEW's
    /// connection alive).
    fn noop(&mut self, m: &mut Merged, raw: &Bytes, tag: Bytes) {
        let store = m.selected.unwrap_or(Store::New);
        self.forward(m, store, tag, raw.clone(), After::Nothing);
    }

    fn local(&mut self, m: &mut Merged, local: Local, tag: &[u8]) {
        match local {
            Local::Capability => {
                self.send_client(reply::capability_line(&m.caps));
                self.send_client(reply::ok(tag, "CAPABILITY completed"));
            }
            Local::Id => {
                self.send_client(reply::id());
                self.send_client(reply::ok(tag, "ID completed"));
            }
            Local::Namespace => {
                self.send_client(reply::namespace(m.map.delimiter()));
                self.send_client(reply::ok(tag, "NAMESPACE completed"));
            }
            Local::Logout => {
                self.send_client(reply::bye("Logging out"));
                self.send_client(reply::ok(tag, "LOGOUT completed"));
                self.logout_stores();
                self.ending.get_or_insert(super::End::Logout);
                self.close();
            }
            // One command at a time: nothing of the client's is in flight.
            Local::Compress => self.compress(tag),
        }
    }

    /// Sends the client's bytes as they are, or `rewritten` encoded under the
    /// client's tag.
    fn same_or(
        &self,
        store: Store,
        raw: &Bytes,
        tag: &[u8],
        rewritten: Option<CommandBody<'_>>,
    ) -> Option<Bytes> {
        let Some(body) = rewritten else {
            let has_literal = memchr::memmem::find(raw, b"+}\r").is_some();
            if has_literal && !self.store_has(store, Cap::LiteralPlus) {
                return None;
            }
            return Some(raw.clone());
        };
        Some(reply::command(tag, body))
    }

    /// Sends `raw`, or `rewritten` under the client's tag, to `store`; refuses
    /// a command with literals that the store cannot take.
    fn send_or_refuse(
        &mut self,
        m: &mut Merged,
        store: Store,
        raw: &Bytes,
        tag: Bytes,
        rewritten: Option<CommandBody<'_>>,
        after: After,
    ) {
        match self.same_or(store, raw, &tag, rewritten) {
            Some(bytes) => self.forward(m, store, tag, bytes, after),
            None => self.send_client(reply::no(
                &tag,
                Rfc5530::Cannot,
                "Literals are not supported here",
            )),
        }
    }
}

fn same_names(map: &NameMap, store: Store) -> bool {
    store == Store::New && map.new_is_identity()
}

/// The mailbox a command names (its destination for COPY/MOVE).
fn mailbox_mut<'b, 'a>(body: &'b mut CommandBody<'a>) -> Option<&'b mut Mailbox<'a>> {
    use CommandBody as C;
    match body {
        C::Select { mailbox, .. }
        | C::Examine { mailbox, .. }
        | C::Create { mailbox }
        | C::Delete { mailbox }
        | C::Subscribe { mailbox }
        | C::Unsubscribe { mailbox }
        | C::Status { mailbox, .. }
        | C::Append { mailbox, .. }
        | C::Copy { mailbox, .. }
        | C::Move { mailbox, .. } => Some(mailbox),
        _ => None,
    }
}

fn set_mailbox(body: &mut CommandBody<'_>, new: Mailbox<'static>) {
    if let Some(mailbox) = mailbox_mut(body) {
        *mailbox = new;
    }
}

fn unavailable(tag: &[u8]) -> Bytes {
    reply::no(
        tag,
        Rfc5530::Unavailable,
        "Old/ folders are temporarily unavailable",
    )
}

/// NEW's name for `name` when a message is written there (APPEND with
/// CATENATE, COPY, MOVE), or the refusal: `Old/` is read-only, and a name
/// that cannot be mapped does not exist.
fn new_destination(map: &NameMap, name: &[u8], tag: &[u8]) -> Result<Vec<u8>, Bytes> {
    match map.to_backend(name) {
        Ok(Target::New(n)) => Ok(n),
        Ok(Target::Old(_) | Target::OldRoot) => Err(read_only(tag)),
        Err(MapError::Unrepresentable) if map.is_reserved(name) => Err(read_only(tag)),
        Err(MapError::BadEncoding) => Err(bad_name(tag)),
        Err(MapError::Unrepresentable) => {
            Err(reply::no_code(tag, Code::TryCreate, "No such mailbox"))
        }
    }
}

fn read_only(tag: &[u8]) -> Bytes {
    reply::no(tag, Rfc5530::NoPerm, "Old/ folders are read-only")
}

/// A command on an `Old/` folder that needs what OLD does not offer.
fn not_on_old(tag: &[u8], cap: Cap) -> Bytes {
    reply::no(
        tag,
        Rfc5530::Cannot,
        &format!(
            "{} is not available in Old/ folders",
            cap.name().trim_end_matches('=')
        ),
    )
}

fn bad_name(tag: &[u8]) -> Bytes {
    reply::no(
        tag,
        Rfc5530::Cannot,
        "Mailbox name is not valid modified UTF-7",
    )
}
