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
        core::{Literal, QuotedChar, Tag},
        extensions::binary::LiteralOrLiteral8,
        fetch::{MacroOrMessageDataItemNames, MessageDataItemName},
        mailbox::{ListMailbox, Mailbox},
        response::{Code, Data, Response},
    },
};

use super::{Action, Credentials, Input, Session, reply, reply::Rfc5530};
use crate::{
    config::Config,
    frame::Announcement,
    merge::{self, RawEntry},
    namespace::{Layout, MapError, NameMap, Store, Target, join_reference, matches},
    route::{self, Local, NameOp, Route, SelectedOp},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OldState {
    /// Not logged in yet: OLD is contacted when first needed.
    Absent,
    Connecting,
    Ready,
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    Select(Store),
    Deselect,
    /// A subscription to an `Old/` name kept on NEW: the client always gets OK
    /// (OLD's own subscriptions show in LSUB whatever NEW answers).
    OldSubscription,
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
    /// A STORE in `Old/`: ignored; the real flags are fetched and shown instead.
    FlagEcho {
        tag: Bytes,
        ferry_tag: Bytes,
    },
    Idle {
        store: Store,
        tag: Bytes,
    },
    Append {
        store: Store,
        tag: Bytes,
        /// A synchronizing literal waiting for the store's `+`.
        pending: Option<Announcement>,
    },
}

#[derive(Debug)]
struct ListJob {
    tag: Bytes,
    lsub: bool,
    pattern: Vec<u8>,
    new: Vec<RawEntry>,
    old: Vec<RawEntry>,
    wait_new: Option<Bytes>,
    wait_old: Option<Bytes>,
    old_asked: bool,
    old_ok: bool,
    new_failure: Option<Bytes>,
}

pub(super) struct Merged {
    map: NameMap,
    caps: Vec<String>,
    credentials: Arc<Credentials>,
    selected: Option<Store>,
    old: OldState,
    job: Option<Job>,
    /// A command waiting for OLD's login.
    pub(super) parked: Option<Bytes>,
}

/// What an APPEND's first part says, decoded before its message arrives.
pub(super) struct AppendProbe {
    command: Command<'static>,
    mailbox: Vec<u8>,
}

fn mailbox_bytes(m: &Mailbox<'_>) -> Vec<u8> {
    match m {
        Mailbox::Inbox => b"INBOX".to_vec(),
        Mailbox::Other(o) => o.as_ref().to_vec(),
    }
}

fn mailbox(name: Vec<u8>) -> Mailbox<'static> {
    // Invariant: names come from NameMap, which only yields valid modified UTF-7
    // (printable ASCII), so they always form a valid astring.
    Mailbox::try_from(name).expect("mapped names are valid astrings")
}

fn encode(tag: &[u8], body: CommandBody<'_>) -> Bytes {
    // Invariant: tags here were decoded from the client or made by ferry_tag().
    let tag = Tag::try_from(tag).expect("valid tag");
    Bytes::from(CommandCodec::new().encode(&Command { tag, body }).dump())
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

/// `tag` + the rest of a store's tagged line after the store's tag.
fn retag(tag: &[u8], message: &[u8]) -> Bytes {
    let rest = &message[reply::tag_of(message).len()..];
    let mut out = BytesMut::from(tag);
    out.extend_from_slice(rest);
    out.freeze()
}

fn starts_with_ci(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The pattern positions reachable after `text` (an NFA over LIST wildcards).
fn may_continue(pattern: &[u8], text: &[u8], delim: u8) -> bool {
    let closure = |set: &mut Vec<bool>| {
        for i in 0..pattern.len() {
            if set[i] && matches!(pattern[i], b'*' | b'%') {
                set[i + 1] = true;
            }
        }
    };
    let mut set = vec![false; pattern.len() + 1];
    set[0] = true;
    closure(&mut set);
    for &c in text {
        let mut next = vec![false; pattern.len() + 1];
        for i in 0..pattern.len() {
            if !set[i] {
                continue;
            }
            match pattern[i] {
                b'*' => next[i] = true,
                b'%' if c != delim => next[i] = true,
                p if p == c => next[i + 1] = true,
                _ => {}
            }
        }
        closure(&mut next);
        set = next;
    }
    set.iter().any(|s| *s)
}

/// Decodes the part of an APPEND before its message literal (`… {n+}\r\n`).
pub(super) fn append_probe(command: &[u8]) -> Option<AppendProbe> {
    let open = command.iter().rposition(|b| *b == b'{')?;
    let mut probe = command[..open].to_vec();
    probe.extend_from_slice(b"{0+}\r\n\r\n");
    let (_, cmd) = CommandCodec::new().decode(&probe).ok()?;
    let CommandBody::Append { mailbox, .. } = &cmd.body else {
        return None;
    };
    let mailbox = mailbox_bytes(mailbox);
    Some(AppendProbe {
        command: cmd.into_static(),
        mailbox,
    })
}

impl Merged {
    pub(super) fn new(
        config: &Config,
        new_layout: Layout,
        caps: Vec<String>,
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
        }
    }

    fn job_store(&self) -> Option<Store> {
        match &self.job {
            Some(
                Job::Forward { store, .. } | Job::Idle { store, .. } | Job::Append { store, .. },
            ) => Some(*store),
            Some(Job::FlagEcho { .. }) => Some(Store::Old),
            _ => None,
        }
    }

    pub(super) fn classify(&self, store: Store, line: &[u8]) -> super::Disposition {
        use super::Disposition::*;
        let tag = reply::tag_of(line);
        if line.starts_with(b"+") || tag != b"*" {
            return Assemble(BytesMut::new());
        }
        let names = starts_with_ci(line, b"* LIST ")
            || starts_with_ci(line, b"* LSUB ")
            || starts_with_ci(line, b"* STATUS ");
        match &self.job {
            Some(Job::List(l)) if names => {
                let asked = match store {
                    Store::New => l.wait_new.is_some(),
                    Store::Old => l.wait_old.is_some(),
                };
                return if asked {
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
            _ => {}
        }
        if starts_with_ci(line, b"* BYE") {
            return Drop;
        }
        if crate::frame::is_text_response(line) && line.windows(7).any(|w| w == b"[ALERT]") {
            return Forward;
        }
        if Some(store) == self.selected || Some(store) == self.job_store() {
            Forward
        } else {
            Drop
        }
    }
}

impl Session {
    fn need_old(&mut self, m: &mut Merged, raw: &Bytes) -> Option<bool> {
        match m.old {
            OldState::Ready => Some(true),
            OldState::Unavailable => Some(false),
            OldState::Absent | OldState::Connecting => {
                m.old = OldState::Connecting;
                m.parked = Some(raw.clone());
                self.input = Input::Waiting;
                self.actions.push_back(Action::Login {
                    store: Store::Old,
                    credentials: m.credentials.clone(),
                });
                None
            }
        }
    }

    pub(super) fn old_login_done(
        &mut self,
        m: &mut Merged,
        result: Result<super::BackendInfo, super::LoginFailure>,
    ) {
        match result {
            Ok(info) => {
                m.map.set_layout(Store::Old, info.layout.clone());
                self.attach_store(Store::Old, info);
                m.old = OldState::Ready;
            }
            Err(e) => {
                tracing::warn!(failure = ?e, "OLD store login failed; Old/ unavailable");
                m.old = OldState::Unavailable;
            }
        }
    }

    pub(super) fn merged_old_lost(&mut self, m: &mut Merged) {
        tracing::warn!("OLD store connection lost");
        m.old = OldState::Unavailable;
        if m.selected == Some(Store::Old) {
            self.send_client(reply::bye(
                "The Old/ folder store went away, please reconnect.",
            ));
            self.logout_stores();
            self.close();
            return;
        }
        match m.job.take() {
            Some(Job::List(mut l)) if l.wait_old.is_some() => {
                l.wait_old = None;
                l.old_ok = false;
                self.list_step(m, l);
            }
            Some(Job::Forward {
                store: Store::Old,
                tag,
                ..
            }) => {
                self.send_client(unavailable(&tag));
                self.input = Input::Command;
            }
            other => m.job = other,
        }
    }

    /// Sends a client command to `store` and waits for its tagged response.
    fn forward(&mut self, m: &mut Merged, store: Store, tag: Bytes, bytes: Bytes, after: After) {
        let rename = store == Store::Old || !same_names(&m.map, store);
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
        match leaving {
            Some(old_store) => {
                m.selected = None;
                let tag = self.ferry_tag();
                let has_unselect = self
                    .store_info(old_store)
                    .is_some_and(|i| i.has("UNSELECT"));
                // Never CLOSE a writable mailbox: CLOSE expunges. OLD is only ever
                // opened with EXAMINE, where CLOSE removes nothing.
                let cmd: &[u8] = match (has_unselect, old_store) {
                    (true, _) => b" UNSELECT\r\n",
                    (false, Store::Old) => b" CLOSE\r\n",
                    (false, Store::New) => b" EXAMINE INBOX\r\n",
                };
                let mut line = BytesMut::from(&tag[..]);
                line.extend_from_slice(cmd);
                self.send_store(old_store, line.freeze());
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

    pub(super) fn merged_command(&mut self, m: &mut Merged, cmd: Command<'_>, raw: &Bytes) {
        self.input = Input::Command;
        let tag = Bytes::copy_from_slice(cmd.tag.inner().as_bytes());
        match route::route(&cmd.body) {
            Route::Local(local) => self.local(m, local, &tag),
            Route::Bad(text) => self.send_client(reply::bad(&tag, text)),
            Route::Noop => {
                let store = m.selected.unwrap_or(Store::New);
                self.forward(m, store, tag, raw.clone(), After::Nothing);
            }
            Route::Idle => {
                let store = m.selected.unwrap_or(Store::New);
                self.start(m, None, store, raw.clone(), Job::Idle { store, tag });
            }
            Route::List { lsub } => self.list(m, cmd, raw, tag, lsub),
            Route::ByName(op) => self.by_name(m, op, cmd, raw, tag),
            Route::Selected(op) => self.on_selected(m, op, cmd, raw, tag),
        }
    }

    fn local(&mut self, m: &mut Merged, local: Local, tag: &[u8]) {
        match local {
            Local::Capability => {
                self.send_client(reply::capability_line(&m.caps));
                self.send_client(reply::ok(tag, "CAPABILITY completed"));
            }
            Local::Id => {
                self.send_client(super::preauth::id_response());
                self.send_client(reply::ok(tag, "ID completed"));
            }
            Local::Namespace => {
                let d = m.map.delimiter() as char;
                self.send_client(Bytes::from(format!(
                    "* NAMESPACE ((\"\" \"{d}\")) NIL NIL\r\n"
                )));
                self.send_client(reply::ok(tag, "NAMESPACE completed"));
            }
            Local::Logout => {
                self.send_client(reply::bye("Logging out"));
                self.send_client(reply::ok(tag, "LOGOUT completed"));
                self.logout_stores();
                self.close();
            }
        }
    }

    /// Sends the client's bytes when the store sees the same names, else `body`
    /// re-encoded under the client's tag.
    fn same_or(
        &self,
        store: Store,
        unchanged: bool,
        raw: &Bytes,
        tag: &[u8],
        body: CommandBody<'_>,
    ) -> Option<Bytes> {
        if unchanged {
            // Checked only for commands with a literal: `has` formats capabilities.
            let has_literal = raw.windows(3).any(|w| w == b"+}\r");
            if has_literal && !self.store_info(store).is_some_and(|i| i.has("LITERAL+")) {
                return None;
            }
            Some(raw.clone())
        } else {
            Some(encode(tag, body))
        }
    }

    fn by_name(
        &mut self,
        m: &mut Merged,
        op: NameOp,
        mut cmd: Command<'_>,
        raw: &Bytes,
        tag: Bytes,
    ) {
        use CommandBody as C;
        let read_only = || reply::no(&tag, Rfc5530::NoPerm, "Old/ folders are read-only");
        if let C::Rename { from, to } = &cmd.body {
            let (a, b) = (mailbox_bytes(from), mailbox_bytes(to));
            match (m.map.to_backend(&a), m.map.to_backend(&b)) {
                (Ok(Target::New(na)), Ok(Target::New(nb))) => {
                    let unchanged = na == a && nb == b;
                    let body = C::Rename {
                        from: mailbox(na),
                        to: mailbox(nb),
                    };
                    self.send_or_refuse(m, Store::New, unchanged, raw, tag, body, After::Nothing);
                }
                (Err(MapError::BadEncoding), _) | (_, Err(MapError::BadEncoding)) => {
                    self.send_client(bad_name(&tag))
                }
                _ => self.send_client(read_only()),
            }
            return;
        }
        let Some(name) = mailbox_mut(&mut cmd.body).map(|mb| mailbox_bytes(mb)) else {
            return;
        };
        let target = m.map.to_backend(&name);
        let target = match target {
            Ok(t) => t,
            Err(MapError::BadEncoding) => return self.send_client(bad_name(&tag)),
            Err(MapError::Unrepresentable) => {
                return self.send_client(reply::no(&tag, Rfc5530::NonExistent, "No such mailbox"));
            }
        };
        match (op, target) {
            (NameOp::Subscribe | NameOp::Unsubscribe, Target::Old(_) | Target::OldRoot) => {
                // Subscriptions to Old/ folders live on NEW, under the client's name.
                match m.map.subscription_on_new(&name) {
                    Ok(n) => {
                        let body = if op == NameOp::Subscribe {
                            C::Subscribe {
                                mailbox: mailbox(n),
                            }
                        } else {
                            C::Unsubscribe {
                                mailbox: mailbox(n),
                            }
                        };
                        self.forward(
                            m,
                            Store::New,
                            tag.clone(),
                            encode(&tag, body),
                            After::OldSubscription,
                        );
                    }
                    Err(_) => self.send_client(bad_name(&tag)),
                }
            }
            (_, Target::OldRoot)
                if matches!(op, NameOp::Select | NameOp::Examine | NameOp::Status) =>
            {
                self.send_client(reply::no(
                    &tag,
                    Rfc5530::NonExistent,
                    "Old is a folder of folders only",
                ))
            }
            (
                NameOp::Create | NameOp::Delete | NameOp::Append,
                Target::Old(_) | Target::OldRoot,
            ) => self.send_client(read_only()),
            (_, Target::OldRoot) => self.send_client(read_only()),
            (op, Target::New(n)) => {
                let unchanged = n == name;
                let mut body = cmd.body;
                set_mailbox(&mut body, mailbox(n));
                let after = match op {
                    NameOp::Select | NameOp::Examine => After::Select(Store::New),
                    _ => After::Nothing,
                };
                self.send_or_refuse(m, Store::New, unchanged, raw, tag, body, after);
            }
            (op, Target::Old(n)) => {
                let Some(ready) = self.need_old(m, raw) else {
                    return;
                };
                if !ready {
                    return self.send_client(unavailable(&tag));
                }
                let body = match (op, cmd.body) {
                    // Old/ folders are always opened read-only.
                    (NameOp::Select | NameOp::Examine, _) => C::Examine {
                        mailbox: mailbox(n),
                    },
                    (NameOp::Status, C::Status { item_names, .. }) => C::Status {
                        mailbox: mailbox(n),
                        item_names,
                    },
                    _ => return self.send_client(read_only()),
                };
                let after = if op == NameOp::Status {
                    After::Nothing
                } else {
                    After::Select(Store::Old)
                };
                self.forward(m, Store::Old, tag.clone(), encode(&tag, body), after);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_or_refuse(
        &mut self,
        m: &mut Merged,
        store: Store,
        unchanged: bool,
        raw: &Bytes,
        tag: Bytes,
        body: CommandBody<'_>,
        after: After,
    ) {
        match self.same_or(store, unchanged, raw, &tag, body) {
            Some(bytes) => self.forward(m, store, tag, bytes, after),
            None => self.send_client(reply::no(
                &tag,
                Rfc5530::Cannot,
                "Literals are not supported here",
            )),
        }
    }

    fn on_selected(
        &mut self,
        m: &mut Merged,
        op: SelectedOp,
        mut cmd: Command<'_>,
        raw: &Bytes,
        tag: Bytes,
    ) {
        let Some(store) = m.selected else {
            return self.send_client(reply::bad(&tag, "No mailbox selected"));
        };
        let read_only = || reply::no(&tag, Rfc5530::NoPerm, "Old/ folders are read-only");
        match (op, store) {
            (SelectedOp::Read, _) => {
                if store == Store::Old && !route::old_may_receive(&cmd.body) {
                    return self.send_client(read_only());
                }
                self.send_or_refuse(m, store, true, raw, tag, cmd.body, After::Nothing);
            }
            (SelectedOp::Store | SelectedOp::Expunge, Store::New) => {
                self.send_or_refuse(m, store, true, raw, tag, cmd.body, After::Nothing)
            }
            (SelectedOp::Close | SelectedOp::Unselect, Store::New) => {
                self.send_or_refuse(m, store, true, raw, tag, cmd.body, After::Deselect)
            }
            (SelectedOp::Store, Store::Old) => {
                // RFC 4314 style: flags the user may not change are ignored, and the
                // real flags are reported (fetchmail --keep stops on a NO here).
                let CommandBody::Store {
                    sequence_set, uid, ..
                } = cmd.body
                else {
                    return;
                };
                let ferry_tag = self.ferry_tag();
                let body = CommandBody::Fetch {
                    sequence_set,
                    macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(vec![
                        MessageDataItemName::Flags,
                    ]),
                    uid,
                };
                let bytes = encode(&ferry_tag, body);
                self.start(m, None, Store::Old, bytes, Job::FlagEcho { tag, ferry_tag });
            }
            (SelectedOp::Expunge, Store::Old) => self.send_client(reply::ok(
                &tag,
                "Nothing expunged: Old/ folders are read-only",
            )),
            (SelectedOp::Close | SelectedOp::Unselect, Store::Old) => {
                let has_unselect = self
                    .store_info(Store::Old)
                    .is_some_and(|i| i.has("UNSELECT"));
                // CLOSE on a mailbox opened with EXAMINE expunges nothing.
                let body = if has_unselect {
                    CommandBody::Unselect
                } else {
                    CommandBody::Close
                };
                self.forward(
                    m,
                    Store::Old,
                    tag.clone(),
                    encode(&tag, body),
                    After::Deselect,
                );
            }
            (SelectedOp::Copy | SelectedOp::Move, _) => {
                let Some(name) = mailbox_mut(&mut cmd.body).map(|mb| mailbox_bytes(mb)) else {
                    return;
                };
                match (m.map.to_backend(&name), store) {
                    (Ok(Target::Old(_) | Target::OldRoot), _) => self.send_client(read_only()),
                    (Err(MapError::BadEncoding), _) => self.send_client(bad_name(&tag)),
                    (Err(MapError::Unrepresentable), _) => {
                        self.send_client(reply::no_code(&tag, Code::TryCreate, "No such mailbox"))
                    }
                    (Ok(Target::New(_)), Store::Old) if op == SelectedOp::Move => {
                        self.send_client(reply::no_code(
                            &tag,
                            Code::ReadOnly,
                            "Old/ folders are read-only: copy the messages instead",
                        ))
                    }
                    (Ok(Target::New(_)), Store::Old) => self.send_client(reply::no(
                        &tag,
                        Rfc5530::Cannot,
                        "Copying from Old/ to other folders is not available yet",
                    )),
                    (Ok(Target::New(n)), Store::New) => {
                        let unchanged = n == name;
                        let mut body = cmd.body;
                        set_mailbox(&mut body, mailbox(n));
                        self.send_or_refuse(m, store, unchanged, raw, tag, body, After::Nothing);
                    }
                }
            }
        }
    }

    fn list(&mut self, m: &mut Merged, cmd: Command<'_>, raw: &Bytes, tag: Bytes, lsub: bool) {
        let (CommandBody::List {
            reference,
            mailbox_wildcard,
        }
        | CommandBody::Lsub {
            reference,
            mailbox_wildcard,
        }) = &cmd.body
        else {
            return;
        };
        let delim = m.map.delimiter();
        let pattern_raw: &[u8] = match mailbox_wildcard {
            ListMailbox::Token(t) => t.as_ref(),
            ListMailbox::String(s) => s.as_ref(),
        };
        if pattern_raw.is_empty() && !lsub {
            // RFC 3501: the hierarchy delimiter and root of the reference.
            self.send_client(Bytes::from(format!(
                "* LIST (\\Noselect) \"{}\" \"\"\r\n",
                delim as char
            )));
            return self.send_client(reply::ok(&tag, "LIST completed"));
        }
        let pattern = join_reference(&mailbox_bytes(reference), pattern_raw, delim);
        let prefix = m.map.prefix().to_vec();
        let literal_prefix: Vec<u8> = pattern
            .iter()
            .take_while(|b| !matches!(b, b'*' | b'%'))
            .copied()
            .collect();
        let ask_new = lsub || !literal_prefix.starts_with(&prefix);
        let mut ask_old = may_continue(&pattern, &prefix, delim);
        if lsub && matches(&pattern, m.map.root(), delim) {
            ask_old = true;
        }
        let mut old_ok = true;
        if ask_old {
            match self.need_old(m, raw) {
                None => return,
                Some(true) => {}
                Some(false) => {
                    ask_old = false;
                    old_ok = false;
                }
            }
        }
        let mut job = ListJob {
            tag,
            lsub,
            pattern: pattern.clone(),
            new: vec![],
            old: vec![],
            wait_new: None,
            wait_old: None,
            old_asked: ask_old,
            old_ok,
            new_failure: None,
        };
        let new_pattern = match self.store_info(Store::New).and_then(|i| i.layout.delimiter) {
            Some(d) if d != delim => crate::namespace::translate(&pattern, delim, d),
            _ => Some(pattern.clone()),
        };
        if ask_new && let Some(p) = new_pattern {
            let t = self.ferry_tag();
            self.send_store(Store::New, list_command(&t, lsub, p));
            job.wait_new = Some(t);
        }
        if ask_old {
            let t = self.ferry_tag();
            self.send_store(Store::Old, list_command(&t, lsub, b"*".to_vec()));
            job.wait_old = Some(t);
        }
        self.input = Input::Waiting;
        self.list_step(m, Box::new(job));
    }

    /// Finishes the LIST once every asked store has answered.
    fn list_step(&mut self, m: &mut Merged, job: Box<ListJob>) {
        if job.wait_new.is_some() || job.wait_old.is_some() {
            m.job = Some(Job::List(job));
            return;
        }
        self.input = Input::Command;
        if let Some(failure) = job.new_failure {
            return self.send_client(retag(&job.tag, &failure));
        }
        let old = job.old_asked.then_some(job.old.as_slice());
        let entries = merge::list(&m.map, &job.pattern, job.lsub, &job.new, old, job.old_ok);
        // Invariant: the client delimiter is a validated ASCII character.
        let delimiter = QuotedChar::try_from(m.map.delimiter() as char).ok();
        for e in entries {
            let items = e.attrs;
            let mailbox = mailbox(e.name);
            let data = if job.lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            };
            self.send_client(reply::encode(&Response::Data(data)));
        }
        let text = if job.lsub {
            "LSUB completed"
        } else {
            "LIST completed"
        };
        self.send_client(reply::ok(&job.tag, text));
    }

    pub(super) fn merged_append(&mut self, m: &mut Merged, probe: AppendProbe, a: Announcement) {
        let tag = Bytes::copy_from_slice(probe.command.tag.inner().as_bytes());
        let refuse = |code: Rfc5530, text: &str| reply::no(&tag, code, text);
        let target = m.map.to_backend(&probe.mailbox);
        let name = match target {
            Ok(Target::New(n)) => n,
            Ok(Target::Old(_) | Target::OldRoot) => {
                return self
                    .refuse_command(a, refuse(Rfc5530::NoPerm, "Old/ folders are read-only"));
            }
            Err(_) => {
                return self
                    .refuse_command(a, reply::no_code(&tag, Code::TryCreate, "No such mailbox"));
            }
        };
        if a.len > self.cfg.config.limits.max_append_bytes {
            return self.refuse_command(a, reply::no_code(&tag, Code::TooBig, "Message too large"));
        }
        // The command up to the message literal, in the client's literal mode.
        let mut head = if name == probe.mailbox {
            let open = self
                .command
                .iter()
                .rposition(|b| *b == b'{')
                .unwrap_or(self.command.len());
            BytesMut::from(&self.command[..open])
        } else {
            let mut cmd = probe.command;
            set_mailbox(&mut cmd.body, mailbox(name));
            if let CommandBody::Append { message, .. } = &mut cmd.body {
                // An empty literal marks where the real one goes.
                *message = LiteralOrLiteral8::Literal(Literal::unvalidated_non_sync(&b""[..]));
            }
            let line = CommandCodec::new().encode(&cmd).dump();
            let open = line.iter().rposition(|b| *b == b'{').unwrap_or(line.len());
            BytesMut::from(&line[..open])
        };
        self.command.clear();
        head.extend_from_slice(
            format!("{{{}{}}}\r\n", a.len, if a.sync { "" } else { "+" }).as_bytes(),
        );
        let pending = a.sync.then_some(a);
        self.start(
            m,
            None,
            Store::New,
            head.freeze(),
            Job::Append {
                store: Store::New,
                tag,
                pending,
            },
        );
        if !a.sync {
            self.input = Input::Stream(Store::New);
        }
    }

    /// A further literal in a streamed APPEND (MULTIAPPEND-style continuation).
    pub(super) fn merged_append_literal(&mut self, a: Announcement) {
        if !a.sync {
            return;
        }
        self.input = Input::Waiting;
        if let super::Mode::Merged(m) = &mut self.mode
            && let Some(Job::Append { pending, .. }) = &mut m.job
        {
            *pending = Some(a);
        }
    }

    pub(super) fn idle_done(&mut self, frame: crate::frame::Frame) {
        let crate::frame::Frame::Line { bytes, .. } = frame else {
            return;
        };
        let store = match &self.mode {
            super::Mode::Merged(m) => match &m.job {
                Some(Job::Idle { store, .. }) => *store,
                _ => return,
            },
            _ => return,
        };
        if imap_codec::IdleDoneCodec::new().decode(&bytes).is_ok() {
            self.input = Input::Waiting;
            self.send_store(store, Bytes::from_static(b"DONE\r\n"));
        } else {
            self.send_client(reply::bad(b"*", "Expected DONE"));
        }
    }

    pub(super) fn merged_message(&mut self, m: &mut Merged, store: Store, msg: Bytes) {
        if msg.starts_with(b"+") {
            return self.continuation(m, store, msg);
        }
        let tag = reply::tag_of(&msg);
        if tag != b"*" {
            let tag = Bytes::copy_from_slice(tag);
            return self.tagged(m, store, tag, msg);
        }
        match &mut m.job {
            Some(Job::List(l)) => {
                if let Ok((
                    _,
                    Response::Data(
                        Data::List { items, mailbox, .. } | Data::Lsub { items, mailbox, .. },
                    ),
                )) = ResponseCodec::new().decode(&msg)
                {
                    let entry = RawEntry {
                        attrs: items.into_iter().map(IntoStatic::into_static).collect(),
                        name: mailbox_bytes(&mailbox),
                    };
                    match store {
                        Store::New => l.new.push(entry),
                        Store::Old => l.old.push(entry),
                    }
                }
            }
            Some(Job::Forward { rename: true, .. }) => {
                if let Some(out) = rename_data(&m.map, store, &msg) {
                    self.send_client(out);
                }
            }
            _ => self.send_client(msg),
        }
    }

    fn continuation(&mut self, m: &mut Merged, store: Store, msg: Bytes) {
        match &mut m.job {
            Some(Job::Idle { store: s, .. }) if *s == store => {
                self.send_client(msg);
                self.input = Input::IdleDone;
            }
            Some(Job::Append {
                store: s, pending, ..
            }) if *s == store && pending.is_some() => {
                *pending = None;
                self.send_client(msg);
                self.input = Input::Stream(store);
            }
            // A `+` for a literal Ferry already sent in one piece (LITERAL+): nothing to do.
            _ => {}
        }
    }

    fn tagged(&mut self, m: &mut Merged, store: Store, tag: Bytes, msg: Bytes) {
        let Some(job) = m.job.take() else {
            return;
        };
        match job {
            Job::Forward {
                store: s,
                tag: t,
                after,
                ..
            } if s == store && t == tag => {
                match (after, is_ok(&msg)) {
                    (After::Select(st), true) => m.selected = Some(st),
                    (After::Select(_), false) | (After::Deselect, true) => m.selected = None,
                    _ => {}
                }
                if after == After::OldSubscription && !is_ok(&msg) {
                    tracing::debug!("NEW did not keep a subscription to an Old/ folder");
                    self.send_client(reply::ok(&t, "Subscription noted"));
                } else {
                    self.send_client(msg);
                }
                self.input = Input::Command;
            }
            Job::Leave {
                store: s,
                tag: t,
                then,
            } if s == store && t == tag => {
                let (next_store, bytes, job) = *then;
                self.send_store(next_store, bytes);
                m.job = Some(job);
            }
            Job::List(mut l) => {
                if l.wait_new.as_ref() == Some(&tag) && store == Store::New {
                    l.wait_new = None;
                    if !is_ok(&msg) {
                        l.new_failure = Some(msg);
                    }
                } else if l.wait_old.as_ref() == Some(&tag) && store == Store::Old {
                    l.wait_old = None;
                    l.old_ok = is_ok(&msg);
                }
                self.list_step(m, l);
            }
            Job::FlagEcho { tag: t, ferry_tag } if ferry_tag == tag && store == Store::Old => {
                self.send_client(if is_ok(&msg) {
                    reply::ok(&t, "Flags unchanged: Old/ folders are read-only")
                } else {
                    retag(&t, &msg)
                });
                self.input = Input::Command;
            }
            Job::Idle { store: s, tag: t } if s == store && t == tag => {
                self.send_client(msg);
                self.input = Input::Command;
            }
            Job::Append {
                store: s,
                tag: t,
                pending,
            } if s == store && t == tag => {
                if let Some(a) = pending {
                    // The store refused before the literal: the client must not send it.
                    self.client.refuse_literal(a);
                }
                self.send_client(msg);
                self.input = Input::Command;
            }
            other => m.job = Some(other),
        }
    }
}

fn list_command(tag: &[u8], lsub: bool, pattern: Vec<u8>) -> Bytes {
    // Invariant: patterns are printable ASCII (validated command input or "*").
    let wildcard = ListMailbox::try_from(String::from_utf8_lossy(&pattern).into_owned())
        .unwrap_or_else(|_| ListMailbox::try_from("*").expect("static pattern"));
    let reference = Mailbox::try_from("").expect("empty reference");
    let body = if lsub {
        CommandBody::Lsub {
            reference,
            mailbox_wildcard: wildcard,
        }
    } else {
        CommandBody::List {
            reference,
            mailbox_wildcard: wildcard,
        }
    };
    encode(tag, body)
}

/// Names in a store's LIST/LSUB/STATUS data, mapped to the client's view;
/// `None` when the name is hidden.
fn rename_data(map: &NameMap, store: Store, msg: &[u8]) -> Option<Bytes> {
    let Ok((_, Response::Data(mut data))) = ResponseCodec::new().decode(msg) else {
        return Some(Bytes::copy_from_slice(msg));
    };
    let to_client = |m: &Mailbox<'_>| {
        let name = mailbox_bytes(m);
        match store {
            Store::Old => map.old_to_client(&name),
            Store::New => map.new_to_client(&name),
        }
        .map(mailbox)
    };
    match &mut data {
        Data::List { mailbox: mb, .. }
        | Data::Lsub { mailbox: mb, .. }
        | Data::Status { mailbox: mb, .. } => {
            *mb = to_client(mb)?;
        }
        _ => return Some(Bytes::copy_from_slice(msg)),
    }
    Some(reply::encode(&Response::Data(data)))
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

fn bad_name(tag: &[u8]) -> Bytes {
    reply::no(
        tag,
        Rfc5530::Cannot,
        "Mailbox name is not valid modified UTF-7",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_reach() {
        let d = b'/';
        assert!(may_continue(b"*", b"Old/", d));
        assert!(!may_continue(b"%", b"Old/", d));
        assert!(may_continue(b"%/%", b"Old/", d));
        assert!(may_continue(b"Old/%", b"Old/", d));
        assert!(!may_continue(b"INBOX", b"Old/", d));
        assert!(!may_continue(b"Work/*", b"Old/", d));
        assert!(may_continue(b"O*", b"Old/", d));
    }

    #[test]
    fn probes_append() {
        let p = append_probe(b"a1 APPEND \"Old/x\" (\\Seen) {310+}\r\n").unwrap();
        assert_eq!(p.mailbox, b"Old/x");
        assert!(append_probe(b"a1 LOGIN alice {5+}\r\n").is_none());
    }
}
