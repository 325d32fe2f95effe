//! What the stores answer: Ferry's own traffic is consumed, the client's
//! forwarded, names mapped back to the client's view.

use super::*;

impl Shared {
    pub(in crate::session) fn idle_done(&mut self, m: &mut Merged, frame: crate::frame::Frame) {
        let crate::frame::Frame::Line { bytes, .. } = frame else {
            return;
        };
        if imap_codec::IdleDoneCodec::new().decode(&bytes).is_err() {
            return self.send_client(reply::bad(b"*", "Expected DONE"));
        }
        let Some(Job::Idle(i)) = &mut m.job else {
            return;
        };
        let store = i.store;
        let done = i.end(false);
        self.input = Input::Waiting;
        if let Some(done) = done {
            self.send_store(store, done);
        }
    }

    /// Renews the client's IDLE toward the store: DONE, then IDLE again once
    /// it is answered; the client's input waits meanwhile.
    pub(in crate::session) fn merged_refresh_idle(&mut self, m: &mut Merged) {
        if self.input == Input::IdleDone
            && let Some(Job::Idle(i)) = &mut m.job
            && let Some(done) = i.renew()
        {
            let store = i.store;
            self.input = Input::Waiting;
            self.send_store(store, done);
        }
    }

    /// Ferry ends the client's IDLE itself (the session is about to end).
    pub(in crate::session) fn merged_leave_idle(&mut self, m: &mut Merged) {
        if let Some(Job::Idle(i)) = &mut m.job
            && let Some(done) = i.end(true)
        {
            let store = i.store;
            self.input = Input::Waiting;
            self.send_store(store, done);
        }
    }

    pub(in crate::session) fn merged_message(&mut self, m: &mut Merged, store: Store, msg: Bytes) {
        if msg.starts_with(b"+") {
            return self.continuation(m, store, msg);
        }
        let tag = reply::tag_of(&msg);
        if tag != b"*" {
            let tag = msg.slice(..tag.len());
            return self.tagged(m, store, tag, msg);
        }
        match &mut m.job {
            Some(Job::List(l)) => l.entry(store, &msg),
            Some(Job::ListExt(l)) => l.entry(store, &msg),
            Some(Job::Copy(c)) => {
                self.copy_untagged(c, store, msg);
                if c.answered() {
                    m.job = None;
                }
            }
            Some(Job::Forward { rename: true, .. }) => {
                let utf8 = m.utf8();
                if let Some(out) = rename_data(&m.map, store, &msg, utf8) {
                    let out = if m.zero_modseq {
                        reply::with_zero_modseq(out)
                    } else {
                        out
                    };
                    self.send_client(out);
                }
            }
            _ => self.send_client(msg),
        }
    }

    pub(in crate::session) fn continuation(&mut self, m: &mut Merged, store: Store, msg: Bytes) {
        match &mut m.job {
            Some(Job::Idle(i)) if i.store == store => {
                // The `+` of a renewed IDLE is Ferry's: the client never saw it stop.
                if i.continued(self.clock.now) {
                    self.send_client(msg);
                }
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

    pub(in crate::session) fn tagged(
        &mut self,
        m: &mut Merged,
        store: Store,
        tag: Bytes,
        msg: Bytes,
    ) {
        let Some(job) = m.job.take() else {
            return;
        };
        match job {
            Job::Reopen(t, resume) if t == tag && store == Store::Old => {
                self.old_reopened(m, *resume, &msg);
            }
            Job::Copy(mut c) => {
                self.copy_tagged(&mut c, store, &tag, msg);
                if !c.answered() {
                    m.job = Some(Job::Copy(c));
                }
            }
            Job::Forward {
                store: s,
                tag: t,
                after,
                ..
            } if s == store && t == tag => {
                match (after, is_ok(&msg)) {
                    (After::Select(st), true) => {
                        m.selected = Some(st);
                        m.old_copy = m.copy_opening;
                        if st == Store::Old && m.nomodseq {
                            self.send_client(reply::nomodseq());
                        }
                    }
                    (After::Select(_), false) | (After::Deselect, true) => {
                        m.selected = None;
                        m.old_copy = false;
                    }
                    _ => {}
                }
                m.copy_opening = false;
                m.nomodseq = false;
                m.zero_modseq = false;
                self.send_client(msg);
                self.input = Input::Command;
            }
            Job::Leave {
                store: s,
                tag: t,
                then,
            } if s == store && t == tag => self.after_leave(m, *then),
            Job::Enable {
                tag: t,
                ferry_tag,
                newly,
            } if store == Store::New && ferry_tag == tag => {
                if is_ok(&msg) {
                    self.send_client(reply::enabled(&newly));
                    self.send_client(reply::ok(&t, "ENABLE completed"));
                } else {
                    self.send_client(reply::retag(&t, &msg));
                }
                self.input = Input::Command;
            }
            Job::List(mut l) => {
                l.answered(store, &tag, msg);
                self.list_step(m, l);
            }
            Job::ListExt(mut l) => {
                l.answered(store, &tag, msg);
                self.list_extended_step(m, l);
            }
            Job::FlagEcho {
                store: s,
                tag: t,
                ferry_tag,
            } if ferry_tag == tag && store == s => {
                self.send_client(if is_ok(&msg) {
                    reply::ok(&t, "Flags unchanged: Old/ folders are read-only")
                } else {
                    reply::retag(&t, &msg)
                });
                self.input = Input::Command;
            }
            Job::Idle(mut i) if i.store == store && i.tag == tag => match i.tagged(is_ok(&msg)) {
                super::super::idle::Tagged::IdleAgain(again) => {
                    self.send_store(store, again);
                    m.job = Some(Job::Idle(i));
                }
                super::super::idle::Tagged::Over => {
                    self.send_client(msg);
                    self.input = Input::Command;
                }
            },
            Job::Append {
                store: s,
                tag: t,
                pending,
                ..
            } if s == store && t == tag => {
                self.send_client(msg);
                self.input = match (pending, &self.input) {
                    // The store refused before the literal: the client must not send it.
                    (Some(a), _) => {
                        self.client.refuse_literal(a);
                        Input::Command
                    }
                    // Refused while the message streams (LITERAL+): the rest
                    // of what the client announced still goes to the store.
                    (None, Input::Stream(s)) => Input::Rest(*s),
                    _ => Input::Command,
                };
            }
            other => m.job = Some(other),
        }
    }
}

/// Names in a store's LIST/LSUB/STATUS data, mapped to the client's view
/// (`utf8`: shown in UTF-8, RFC 6855); `None` when the name is hidden.
pub fn rename_data(map: &NameMap, store: Store, msg: &[u8], utf8: bool) -> Option<Bytes> {
    let Ok((_, Response::Data(mut data))) = ResponseCodec::new().decode(msg) else {
        return Some(Bytes::copy_from_slice(msg));
    };
    let to_client = |m: &Mailbox<'_>| {
        let name = mailbox_bytes(m);
        match store {
            Store::Old => map.old_to_client(&name),
            Store::New => map.new_to_client(&name),
        }
        .map(|name| shown(utf8, name))
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
