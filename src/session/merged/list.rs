//! LIST and LSUB: one pattern fanned out to both stores, merged into one tree.

use super::*;

#[derive(Debug)]
pub(in crate::session) struct ListJob {
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
    /// Every `Old/` folder is served from its NEW copy: NEW's copies stand
    /// for OLD's tree, and OLD is not asked.
    copies: bool,
    /// After `ENABLE UTF8=ACCEPT`: the client's pattern in UTF-8, matched
    /// against the names in UTF-8 (the stores were asked in modified UTF-7).
    utf8_pattern: Option<Vec<u8>>,
}

impl ListJob {
    pub(super) fn client_tag(&self) -> &Bytes {
        &self.tag
    }

    /// True while `store`'s answer is still awaited.
    pub(super) fn waits_on(&self, store: Store) -> bool {
        match store {
            Store::New => self.wait_new.is_some(),
            Store::Old => self.wait_old.is_some(),
        }
    }

    /// One `* LIST`/`* LSUB` line from `store`; anything else is ignored.
    pub(super) fn entry(&mut self, store: Store, msg: &[u8]) {
        if let Ok((
            _,
            Response::Data(Data::List { items, mailbox, .. } | Data::Lsub { items, mailbox, .. }),
        )) = ResponseCodec::new().decode(msg)
        {
            let entry = RawEntry {
                attrs: items.into_iter().map(IntoStatic::into_static).collect(),
                name: mailbox_bytes(&mailbox),
            };
            match store {
                Store::New => self.new.push(entry),
                Store::Old => self.old.push(entry),
            }
        }
    }

    /// A tagged answer from `store`: NEW failing fails the LIST, OLD failing
    /// only hides `Old/`.
    pub(super) fn answered(&mut self, store: Store, tag: &[u8], msg: Bytes) {
        if store == Store::New && self.wait_new.as_deref() == Some(tag) {
            self.wait_new = None;
            if !is_ok(&msg) {
                self.new_failure = Some(msg);
            }
        } else if store == Store::Old && self.wait_old.as_deref() == Some(tag) {
            self.wait_old = None;
            self.old_ok = is_ok(&msg);
        }
    }

    /// OLD went away before answering.
    pub(super) fn old_lost(&mut self) {
        self.wait_old = None;
        self.old_ok = false;
    }
}

/// The pattern positions reachable after `text` (an NFA over LIST wildcards).
pub(in crate::session) fn may_continue(pattern: &[u8], text: &[u8], delim: u8) -> bool {
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

impl Shared {
    pub(in crate::session) fn list(
        &mut self,
        m: &mut Merged,
        cmd: Command<'_>,
        raw: &Bytes,
        tag: Bytes,
        lsub: bool,
    ) {
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
            self.send_client(reply::list_root(delim));
            return self.send_client(reply::ok(&tag, "LIST completed"));
        }
        let mut pattern = join_reference(&mailbox_bytes(reference), pattern_raw, delim);
        let utf8_pattern = m.utf8().then(|| pattern.clone());
        if utf8_pattern.is_some() {
            // Wildcards may stand inside a run of non-ASCII characters,
            // which modified UTF-7 encodes as one: ask wide, match later.
            let plain = pattern.iter().all(|b| b.is_ascii() && *b != b'&');
            if !plain {
                let head = pattern
                    .iter()
                    .position(|b| !b.is_ascii() || matches!(b, b'&' | b'*' | b'%'))
                    .unwrap_or(pattern.len());
                pattern.truncate(head);
                pattern.push(b'*');
            }
        }
        let prefix = m.map.prefix().to_vec();
        let literal_prefix: Vec<u8> = pattern
            .iter()
            .take_while(|b| !matches!(b, b'*' | b'%'))
            .copied()
            .collect();
        let copies = self
            .cfg
            .served
            .get(&String::from_utf8_lossy(&m.credentials.user))
            .is_some_and(|s| s.complete);
        let ask_new = lsub || copies || !literal_prefix.starts_with(&prefix);
        let mut ask_old = !copies && may_continue(&pattern, &prefix, delim);
        if !copies && lsub && matches(&pattern, m.map.root(), delim) {
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
            copies,
            utf8_pattern,
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
    pub(in crate::session) fn list_step(&mut self, m: &mut Merged, job: Box<ListJob>) {
        if job.wait_new.is_some() || job.wait_old.is_some() {
            m.job = Some(Job::List(job));
            return;
        }
        self.input = Input::Command;
        if let Some(failure) = job.new_failure {
            return self.send_client(reply::retag(&job.tag, &failure));
        }
        let old = job.old_asked.then_some(job.old.as_slice());
        let kept = if job.lsub {
            self.cfg.subscriptions.get(&m.credentials.user)
        } else {
            Default::default()
        };
        let entries = merge::list(
            &m.map,
            &job.pattern,
            job.lsub,
            merge::Sources {
                new: &job.new,
                old,
                old_reachable: job.old_ok,
                kept: &kept,
                copies: job.copies,
            },
        );
        // Invariant: the client delimiter is a validated ASCII character.
        let delimiter = QuotedChar::try_from(m.map.delimiter() as char).ok();
        for e in entries {
            let items = e.attrs;
            if let Some(p) = &job.utf8_pattern {
                let name = crate::mutf7::decode(&e.name).map(String::into_bytes);
                if !name.is_some_and(|n| matches(p, &n, m.map.delimiter())) {
                    continue;
                }
            }
            let mailbox = m.shown_name(e.name);
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
}

pub(in crate::session) fn list_command(tag: &[u8], lsub: bool, pattern: Vec<u8>) -> Bytes {
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
    reply::command(tag, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(in crate::session) fn pattern_reach() {
        let d = b'/';
        assert!(may_continue(b"*", b"Old/", d));
        assert!(!may_continue(b"%", b"Old/", d));
        assert!(may_continue(b"%/%", b"Old/", d));
        assert!(may_continue(b"Old/%", b"Old/", d));
        assert!(!may_continue(b"INBOX", b"Old/", d));
        assert!(!may_continue(b"Work/*", b"Old/", d));
        assert!(may_continue(b"O*", b"Old/", d));
    }
}
