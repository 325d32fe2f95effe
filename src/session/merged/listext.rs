//! The extended LIST (RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154
//! SPECIAL-USE) over the merged tree, and CREATE with parameters (RFC 6154
//! CREATE-SPECIAL-USE): the commands imap-codec cannot decode, read by
//! [`crate::listext`].
//!
//! NEW answers for its own folders with the client's options (without
//! LIST-EXTENDED, Ferry selects from NEW's plain LIST and LSUB); Ferry
//! answers for the `Old/` folders from OLD's tree (or the copies serving it)
//! and the subscriptions it keeps ([`crate::merge::extended`]). Each store
//! gets Ferry's commands one at a time; OLD only plain LIST, LSUB and STATUS,
//! with the STATUS items it advertised. A STATUS the client asked for that
//! no store gave with its LIST comes from one STATUS per selectable folder,
//! sent where a STATUS of that folder through Ferry would go.

use std::collections::{HashMap, VecDeque};

use imap_codec::imap_types::status::StatusDataItemName;

use super::{list::may_continue, *};
use crate::{
    listext::{self, CreateWithParams, ListExtended},
    merge::extended::{self as ext, OldSources, Options},
};

/// RFC 5258 §3.5: a parent whose descendant is subscribed, under RECURSIVEMATCH.
const CHILDINFO: &[u8] = b"(\"CHILDINFO\" (\"SUBSCRIBED\"))";

/// One of Ferry's commands for the job, before it has a tag.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    /// NEW's extended LIST: the command after its tag and space.
    Extended(Bytes),
    List {
        lsub: bool,
        pattern: Vec<u8>,
    },
    /// STATUS of `name` on the store, for the client's `client`;
    /// `zero_modseq`: an `Old/` folder without mod-sequences, whose line
    /// shows `HIGHESTMODSEQ 0` as a STATUS through Ferry does.
    Status {
        client: Vec<u8>,
        name: Vec<u8>,
        items: Vec<StatusDataItemName>,
        zero_modseq: bool,
    },
}

impl Ask {
    fn command(&self, tag: &[u8]) -> Bytes {
        match self {
            Ask::Extended(rest) => [tag, b" ", rest].concat().into(),
            Ask::List { lsub, pattern } => list::list_command(tag, *lsub, pattern.clone()),
            Ask::Status { name, items, .. } => reply::command(
                tag,
                CommandBody::Status {
                    mailbox: mailbox(name.clone()),
                    item_names: items.clone().into(),
                },
            ),
        }
    }
}

/// How NEW's own folders are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewPart {
    /// No pattern can match one of them.
    None,
    /// NEW's extended LIST; `list_status`: with the client's STATUS items.
    Extended { list_status: bool },
    /// Selected by Ferry from NEW's `LIST "" *` and `LSUB "" *`.
    Emulated,
}

#[derive(Debug)]
pub(in crate::session) struct ListExtJob {
    tag: Bytes,
    /// The client's patterns, reference joined.
    patterns: Vec<Vec<u8>>,
    opts: Options,
    status: Vec<StatusDataItemName>,
    new_part: NewPart,
    /// The `Old/` folders are part of the answer (SPECIAL-USE selects none).
    old_part: bool,
    /// Their tree (and subscriptions) were asked for.
    old_fetched: bool,
    /// OLD answered (or was not needed).
    old_ok: bool,
    /// Every `Old/` folder is served from its NEW copy: NEW's copies stand
    /// for OLD's tree, and OLD is not asked.
    copies: bool,
    queue: [VecDeque<Ask>; 2],
    waiting: [Option<(Bytes, Ask)>; 2],
    new_failure: Option<Bytes>,
    /// NEW's extended answer: entries (NEW's names) with their extended data.
    new_entries: Vec<(RawEntry, Option<Bytes>)>,
    /// NEW's LIST-STATUS items, by NEW's name.
    new_status: HashMap<Vec<u8>, Bytes>,
    /// Plain LIST and LSUB answers, per store.
    lists: [Vec<RawEntry>; 2],
    lsubs: [Vec<RawEntry>; 2],
    /// The answer, once every LIST is in: each LIST line, and the folder
    /// whose STATUS line follows it.
    answer: Option<Vec<(Bytes, Vec<u8>)>>,
    /// STATUS lines by client name.
    status_lines: HashMap<Vec<u8>, Bytes>,
    /// Names go to the client in UTF-8 (RFC 6855).
    utf8: bool,
}

impl ListExtJob {
    pub(super) fn client_tag(&self) -> &Bytes {
        &self.tag
    }

    pub(super) fn waits_on(&self, store: Store) -> bool {
        self.waiting[store.index()].is_some()
    }

    /// One untagged response from `store`, read as what it was asked.
    pub(super) fn entry(&mut self, store: Store, msg: &[u8]) {
        let Some((_, ask)) = &self.waiting[store.index()] else {
            return;
        };
        match ask {
            Ask::Extended(_) => {
                if let Some((base, extended)) = listext::list_line(msg)
                    && let Some(e) = decode_list(&[&msg[..base], b"\r\n"].concat())
                {
                    self.new_entries
                        .push((e, extended.map(Bytes::copy_from_slice)));
                } else if let Some(e) = decode_list(msg) {
                    self.new_entries.push((e, None));
                } else if let Some((mut name, items)) = listext::status_line(msg) {
                    if name.eq_ignore_ascii_case(b"INBOX") {
                        name = b"INBOX".to_vec();
                    }
                    self.new_status.insert(name, Bytes::copy_from_slice(items));
                }
            }
            Ask::List { lsub, .. } => {
                if let Some(e) = decode_list(msg) {
                    let into = if *lsub {
                        &mut self.lsubs
                    } else {
                        &mut self.lists
                    };
                    into[store.index()].push(e);
                }
            }
            Ask::Status {
                client,
                name,
                zero_modseq,
                ..
            } => {
                // Only the folder asked about (a store may send others').
                if let Some((answered, items)) = listext::status_line(msg)
                    && (answered == *name
                        || answered.eq_ignore_ascii_case(b"INBOX") && name == b"INBOX")
                {
                    let mut line = reply::status_items(shown(self.utf8, client.clone()), items);
                    if *zero_modseq {
                        line = reply::with_zero_modseq(line);
                    }
                    self.status_lines.insert(client.clone(), line);
                }
            }
        }
    }

    /// A tagged answer from `store`: NEW failing a LIST fails the command,
    /// OLD failing one hides what it would have shown; a failed STATUS only
    /// leaves its line out.
    pub(super) fn answered(&mut self, store: Store, tag: &[u8], msg: Bytes) {
        let i = store.index();
        if self.waiting[i].as_ref().is_none_or(|(t, _)| t != tag) {
            return;
        }
        let Some((_, ask)) = self.waiting[i].take() else {
            return;
        };
        if is_ok(&msg) || matches!(ask, Ask::Status { .. }) {
            return;
        }
        match store {
            Store::New => {
                self.new_failure = Some(msg);
                self.queue = Default::default();
            }
            Store::Old => self.old_lost(),
        }
    }

    /// OLD went away (or failed): what it owes is not waited for.
    pub(super) fn old_lost(&mut self) {
        let i = Store::Old.index();
        self.waiting[i] = None;
        self.queue[i].clear();
        self.old_ok = false;
    }
}

fn decode_list(msg: &[u8]) -> Option<RawEntry> {
    match ResponseCodec::new().decode(msg).ok()?.1 {
        Response::Data(Data::List { items, mailbox, .. } | Data::Lsub { items, mailbox, .. }) => {
            Some(RawEntry {
                attrs: items.into_iter().map(IntoStatic::into_static).collect(),
                name: mailbox_bytes(&mailbox),
            })
        }
        _ => None,
    }
}

/// The commands Ferry reads itself when imap-codec cannot decode them.
pub(in crate::session) fn parses_itself(verb: Verb) -> bool {
    matches!(verb.name(), "LIST" | "CREATE")
}

impl Shared {
    /// A merged-phase LIST or CREATE that imap-codec could not decode:
    /// read as the extended forms, refused with BAD when it is not one.
    pub(in crate::session) fn merged_extended(&mut self, m: &mut Merged, raw: &Bytes, verb: Verb) {
        let parsed = match verb.name() {
            "LIST" => listext::parse_list(raw).map(Ok),
            _ => listext::parse_create(raw).map(Err),
        };
        let command = match parsed {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable command");
                let tag = reply::tag_of(raw).to_vec();
                return self.send_client(reply::bad(&tag, &e.to_string()));
            }
        };
        let Some(tag) = self.begin(m, raw, verb) else {
            return;
        };
        match command {
            Ok(list) => self.list_extended(m, list, raw, tag),
            Err(create) => self.create_with_params(m, create, tag),
        }
    }

    fn list_extended(&mut self, m: &mut Merged, cmd: ListExtended, raw: &Bytes, tag: Bytes) {
        let delim = m.map.delimiter();
        let reference = if cmd.reference.eq_ignore_ascii_case(b"INBOX") {
            b"INBOX".to_vec()
        } else {
            cmd.reference
        };
        let patterns: Vec<Vec<u8>> = cmd
            .patterns
            .iter()
            .map(|p| join_reference(&reference, p, delim))
            .collect();
        let (sel, ret) = (cmd.selection, cmd.returns);
        let opts = Options {
            subscribed: sel.subscribed,
            recursive_match: sel.recursive_match,
            special_use: sel.special_use,
            return_subscribed: ret.subscribed,
            return_children: ret.children,
        };
        let prefix = m.map.prefix().to_vec();
        let root = m.map.root().to_vec();
        let below = patterns.iter().any(|p| may_continue(p, &prefix, delim));
        let root_matched = patterns.iter().any(|p| matches(p, &root, delim));
        let old_part = !sel.special_use && (below || root_matched);
        // The root alone is known without asking, unless RECURSIVEMATCH
        // must say whether anything below it is subscribed.
        let old_fetched = old_part && (below || (sel.recursive_match && root_matched));
        let subscriptions = sel.subscribed || ret.subscribed;
        let copies = self
            .cfg
            .served
            .get(&String::from_utf8_lossy(&m.credentials.user))
            .is_some_and(|s| s.complete);
        let mut old_ok = true;
        let ask_old = old_fetched && !copies;
        if ask_old {
            match self.need_old(m, raw) {
                None => return,
                Some(ready) => old_ok = ready,
            }
        }
        let new_delim = self.store_info(Store::New).and_then(|i| i.layout.delimiter);
        let to_new = |p: &[u8]| match new_delim {
            Some(d) if d != delim => crate::namespace::translate(p, delim, d),
            _ => Some(p.to_vec()),
        };
        let new_patterns: Vec<Vec<u8>> = patterns
            .iter()
            .filter(|p| {
                let literal: Vec<u8> = p
                    .iter()
                    .take_while(|b| !matches!(b, b'*' | b'%'))
                    .copied()
                    .collect();
                !literal.starts_with(&prefix)
            })
            .filter_map(|p| to_new(p))
            .collect();
        let new_part = if new_patterns.is_empty() {
            NewPart::None
        } else if self.store_has(Store::New, Cap::ListExtended) {
            NewPart::Extended {
                list_status: self.store_has(Store::New, Cap::ListStatus),
            }
        } else {
            NewPart::Emulated
        };
        let mut new_asks: Vec<Ask> = Vec::new();
        let mut ask_new = |ask: Ask| {
            if !new_asks.contains(&ask) {
                new_asks.push(ask);
            }
        };
        match new_part {
            NewPart::None => {}
            NewPart::Extended { list_status } => {
                let command = listext::list_command(&sel, &ret, list_status, &new_patterns);
                ask_new(Ask::Extended(command.into()));
            }
            NewPart::Emulated => {
                let all = to_new(b"*").unwrap_or_else(|| b"*".to_vec());
                ask_new(Ask::List {
                    lsub: false,
                    pattern: all.clone(),
                });
                if subscriptions {
                    ask_new(Ask::List {
                        lsub: true,
                        pattern: all,
                    });
                }
            }
        }
        if old_fetched && new_part != NewPart::Emulated {
            // NEW's folders below the prefix (its `*` has them when emulated):
            // the copies serving `Old/`, and subscriptions the copier mirrored
            // onto them.
            let mut below_prefix = prefix.clone();
            below_prefix.push(b'*');
            if let Some(p) = to_new(&below_prefix) {
                if copies {
                    ask_new(Ask::List {
                        lsub: false,
                        pattern: p.clone(),
                    });
                }
                if subscriptions {
                    ask_new(Ask::List {
                        lsub: true,
                        pattern: p,
                    });
                }
            }
        }
        let mut job = ListExtJob {
            tag,
            patterns,
            opts,
            status: ret.status,
            new_part,
            old_part,
            old_fetched,
            old_ok,
            copies,
            queue: Default::default(),
            waiting: Default::default(),
            new_failure: None,
            new_entries: Vec::new(),
            new_status: HashMap::new(),
            lists: Default::default(),
            lsubs: Default::default(),
            answer: None,
            status_lines: HashMap::new(),
            utf8: m.utf8(),
        };
        job.queue[Store::New.index()].extend(new_asks);
        if ask_old && old_ok {
            let old = &mut job.queue[Store::Old.index()];
            old.push_back(Ask::List {
                lsub: false,
                pattern: b"*".to_vec(),
            });
            if subscriptions {
                old.push_back(Ask::List {
                    lsub: true,
                    pattern: b"*".to_vec(),
                });
            }
        }
        self.input = Input::Waiting;
        self.list_extended_step(m, Box::new(job));
    }

    /// Sends each store its next command; once all are answered, works out
    /// the answer (and the STATUS commands it needs), then writes it.
    pub(in crate::session) fn list_extended_step(
        &mut self,
        m: &mut Merged,
        mut job: Box<ListExtJob>,
    ) {
        loop {
            for store in [Store::New, Store::Old] {
                let i = store.index();
                if job.waiting[i].is_none()
                    && let Some(ask) = job.queue[i].pop_front()
                {
                    let tag = self.ferry_tag();
                    self.send_store(store, ask.command(&tag));
                    job.waiting[i] = Some((tag, ask));
                }
            }
            if job.waiting.iter().any(Option::is_some) {
                m.job = Some(Job::ListExt(job));
                return;
            }
            if let Some(failure) = job.new_failure.take() {
                self.input = Input::Command;
                return self.send_client(reply::retag(&job.tag, &failure));
            }
            if job.answer.is_some() {
                break;
            }
            self.list_extended_answer(m, &mut job);
        }
        self.input = Input::Command;
        for (line, name) in job.answer.take().unwrap_or_default() {
            self.send_client(line);
            if let Some(status) = job.status_lines.remove(&name) {
                self.send_client(status);
            }
        }
        self.send_client(reply::ok(&job.tag, "LIST completed"));
    }

    /// The LIST lines of both parts, and the STATUS commands still needed.
    fn list_extended_answer(&self, m: &Merged, job: &mut ListExtJob) {
        let map = &m.map;
        // Invariant: the client delimiter is a validated ASCII character.
        let delimiter = QuotedChar::try_from(map.delimiter() as char).ok();
        let mut answer = Vec::new();
        let mut asks: [Vec<Ask>; 2] = Default::default();
        // OLD without mod-sequences for this client: HIGHESTMODSEQ is 0.
        // (Only where Ferry offers CONDSTORE at all.)
        let zero = m.caps.has(Cap::Condstore)
            && !self.old_modseq(m)
            && job.status.contains(&StatusDataItemName::HighestModSeq);
        let status = |store: Store, client: Vec<u8>, name: Vec<u8>| -> Option<(Store, Ask)> {
            let caps = &self.store_info(store)?.capabilities;
            let zero_modseq = zero && store == Store::Old;
            let items: Vec<StatusDataItemName> = job
                .status
                .iter()
                .filter(|i| caps.offers_status(i))
                .filter(|i| !(zero_modseq && **i == StatusDataItemName::HighestModSeq))
                .cloned()
                .collect();
            (!items.is_empty()).then_some((
                store,
                Ask::Status {
                    client,
                    name,
                    items,
                    zero_modseq,
                },
            ))
        };
        let mut wanted = Vec::new();
        let asked = !job.status.is_empty();
        match job.new_part {
            NewPart::None => {}
            NewPart::Extended { list_status } => {
                for (e, extended) in &job.new_entries {
                    let Some(client) = map.new_to_client(&e.name) else {
                        continue;
                    };
                    let line = reply::list_extended(
                        e.attrs.clone(),
                        delimiter,
                        m.shown_name(client.clone()),
                        extended.as_deref(),
                    );
                    if let Some(items) = job.new_status.get(&e.name).filter(|_| list_status) {
                        let status = reply::status_items(m.shown_name(client.clone()), items);
                        job.status_lines.insert(client.clone(), status);
                    } else if asked
                        && !list_status
                        && ext::takes_status(&e.attrs, job.opts.subscribed)
                    {
                        wanted.extend(status(Store::New, client.clone(), e.name.clone()));
                    }
                    answer.push((line, client));
                }
            }
            NewPart::Emulated => {
                let tree = ext::new_tree(
                    map,
                    &job.lists[Store::New.index()],
                    &job.lsubs[Store::New.index()],
                );
                for e in ext::select(&tree, &job.patterns, map.delimiter(), &job.opts) {
                    if asked
                        && e.takes_status
                        && let Ok(Target::New(name)) = map.to_backend(&e.name)
                    {
                        wanted.extend(status(Store::New, e.name.clone(), name));
                    }
                    answer.push(self.ext_line(m.utf8(), delimiter, e));
                }
            }
        }
        if job.old_part {
            let kept = self.cfg.subscriptions.get(&m.credentials.user);
            let user = String::from_utf8_lossy(&m.credentials.user).into_owned();
            let (tree_store, tree_ok) = if job.copies {
                (Store::New, true)
            } else {
                (Store::Old, job.old_ok)
            };
            let tree = ext::old_tree(
                map,
                OldSources {
                    tree: (job.old_fetched && tree_ok)
                        .then_some(job.lists[tree_store.index()].as_slice()),
                    copies: job.copies,
                    reachable: job.old_ok,
                    old_lsub: &job.lsubs[Store::Old.index()],
                    new_lsub: &job.lsubs[Store::New.index()],
                    kept: &kept,
                },
            );
            let old_ready = job.old_ok && m.old == OldState::Ready;
            for e in ext::select(&tree, &job.patterns, map.delimiter(), &job.opts) {
                if asked && e.takes_status {
                    // Where a STATUS of the folder through Ferry would go.
                    if job.copies || self.cfg.served.serves(&user, &e.name) {
                        wanted.extend(status(Store::New, e.name.clone(), e.name.clone()));
                    } else if old_ready && let Ok(Target::Old(name)) = map.to_backend(&e.name) {
                        wanted.extend(status(Store::Old, e.name.clone(), name));
                    }
                }
                answer.push(self.ext_line(m.utf8(), delimiter, e));
            }
        }
        for (store, ask) in wanted {
            asks[store.index()].push(ask);
        }
        for (queue, more) in job.queue.iter_mut().zip(asks) {
            queue.extend(more);
        }
        job.answer = Some(answer);
    }

    fn ext_line(
        &self,
        utf8: bool,
        delimiter: Option<QuotedChar>,
        e: ext::ExtEntry,
    ) -> (Bytes, Vec<u8>) {
        let extended = e.child_subscribed.then_some(CHILDINFO);
        let line = reply::list_extended(e.attrs, delimiter, shown(utf8, e.name.clone()), extended);
        (line, e.name)
    }

    /// `CREATE name (USE (\Sent))`: to NEW with the name mapped as a plain
    /// CREATE's, the parameters as sent; `Old/` is read-only.
    fn create_with_params(&mut self, m: &mut Merged, c: CreateWithParams<'_>, tag: Bytes) {
        let refused = match m.map.to_backend(&c.mailbox) {
            Ok(Target::New(name)) => {
                let literal = memchr::memmem::find(c.params, b"}\r\n").is_some();
                if literal && !self.store_has(Store::New, Cap::LiteralPlus) {
                    reply::no(&tag, Rfc5530::Cannot, "Literals are not supported here")
                } else {
                    let bytes = reply::create_with_params(&tag, mailbox(name), c.params);
                    return self.forward(m, Store::New, tag, bytes, After::Nothing);
                }
            }
            Ok(Target::Old(_) | Target::OldRoot) => read_only(&tag),
            Err(MapError::Unrepresentable) if m.map.is_reserved(&c.mailbox) => read_only(&tag),
            Err(MapError::BadEncoding) => bad_name(&tag),
            Err(MapError::Unrepresentable) => {
                reply::no(&tag, Rfc5530::NonExistent, "No such mailbox")
            }
        };
        self.send_client(refused);
    }
}
