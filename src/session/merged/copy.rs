//! Cross-store COPY: messages in an `Old/` folder dropped into a NEW folder.
//!
//! Two FETCHes on OLD (metadata, then `BODY.PEEK[]`, which never sets `\Seen`)
//! feed APPENDs on NEW. Each message body streams from OLD's literal straight
//! into NEW's, so memory is bounded by the buffers, not the message size, and
//! every message after the first is pipelined (LITERAL+).
//!
//! All or nothing: with MULTIAPPEND the whole copy is one APPEND, which NEW
//! commits only at its final CRLF; a failure part way ends it with bytes NEW
//! must reject instead, and NEW discards everything. Without MULTIAPPEND, each
//! message is its own APPEND and a failure removes what was appended, by the
//! UIDs NEW reported (APPENDUID), touching no other message.

use std::{collections::HashMap, num::NonZeroU32};

use imap_codec::imap_types::{
    core::Vec1,
    extensions::uidplus::{UidElement, UidSet},
    fetch::{MessageDataItem, Section},
    sequence::{Sequence, SequenceSet},
};

use super::*;
use crate::{
    answers::{append_uids, body_line},
    frame::Frame,
};

/// Literal padding used to finish a message that can no longer be copied.
static PAD: [u8; 16 * 1024] = [b' '; 16 * 1024];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for OLD's metadata FETCH and NEW's STATUS of the destination.
    Check,
    /// Bodies stream from OLD into APPENDs on NEW.
    Bodies,
    /// Removing what a failed copy had appended (no MULTIAPPEND).
    RollBack,
}

/// What one message is appended with, learned from the metadata FETCH.
#[derive(Debug)]
struct Meta {
    uid: NonZeroU32,
    /// ` (flags) "date" ` as encoded by imap-codec, before the literal.
    args: Bytes,
}

#[derive(Debug)]
pub(in crate::session) struct CopyJob {
    tag: Bytes,
    verb: &'static str,
    dest: Mailbox<'static>,
    /// One APPEND for the whole copy.
    multi: bool,
    stage: Stage,
    /// Ferry's command on OLD still to answer.
    old_wait: Option<Bytes>,
    /// Ferry's commands on NEW still to answer, oldest first.
    new_wait: Vec<Bytes>,
    /// Messages by UID, and UIDs by sequence number.
    meta: HashMap<NonZeroU32, Meta>,
    seq_uid: HashMap<NonZeroU32, NonZeroU32>,
    /// Source UIDs in the order they were appended.
    copied: Vec<NonZeroU32>,
    /// UIDs NEW assigned (APPENDUID), and its UIDVALIDITY.
    assigned: Vec<NonZeroU32>,
    validity: Option<NonZeroU32>,
    /// The MULTIAPPEND has been started on NEW and not yet ended.
    append_open: bool,
    /// Bytes of the current message's literal not yet passed to NEW.
    remaining: u64,
    /// Bytes copied so far.
    bytes: u64,
    failure: Option<Failure>,
    /// End the session with this `* BYE` once the copy is answered (OLD or
    /// the client went away).
    end_after: Option<&'static str>,
    /// The client has its answer: the job is over.
    answered: bool,
}

#[derive(Debug, Clone)]
enum Failure {
    NoDestination,
    Refused(String),
    Unavailable(&'static str),
}

impl Failure {
    /// The `result` of `ferry_copies_total`: a missing destination is the
    /// client's cue to CREATE it (RFC 9051 TRYCREATE), not a failure.
    fn label(&self) -> &'static str {
        match self {
            Failure::NoDestination => "trycreate",
            Failure::Refused(_) | Failure::Unavailable(_) => "failed",
        }
    }

    fn reply(&self, tag: &[u8]) -> Bytes {
        match self {
            Failure::NoDestination => {
                reply::no_code(tag, Code::TryCreate, "Destination folder does not exist")
            }
            Failure::Refused(why) => {
                reply::no(tag, Rfc5530::Cannot, &format!("Nothing was copied: {why}"))
            }
            Failure::Unavailable(why) => reply::no(
                tag,
                Rfc5530::Unavailable,
                &format!("Nothing was copied: {why}"),
            ),
        }
    }
}

/// The text of a store's tagged line after the status word, for our own replies.
fn store_text(msg: &[u8]) -> String {
    let text = String::from_utf8_lossy(msg);
    let text = text.trim_end();
    let rest = text.splitn(3, ' ').nth(2).unwrap_or("");
    // Drop a leading response code: it was meant for Ferry.
    let rest = match rest.strip_prefix('[') {
        Some(r) => r.split_once("] ").map_or("", |(_, t)| t),
        None => rest,
    };
    rest.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect()
}

/// Sorted UIDs as a compact set (`1:3,7`), in the order given.
fn uid_set(uids: &[NonZeroU32]) -> Option<Vec1<UidElement>> {
    let mut out: Vec<UidElement> = Vec::new();
    for &u in uids {
        match out.last_mut() {
            Some(UidElement::Single(a)) if a.get().checked_add(1) == Some(u.get()) => {
                *out.last_mut()? = UidElement::Range(*a, u);
            }
            Some(UidElement::Range(_, b)) if b.get().checked_add(1) == Some(u.get()) => *b = u,
            _ => out.push(UidElement::Single(u)),
        }
    }
    Vec1::try_from(out).ok()
}

impl CopyJob {
    /// True when `line` (with a literal) is a message body of this copy.
    pub(super) fn takes_body(&self) -> bool {
        self.stage == Stage::Bodies && self.old_wait.is_some()
    }

    pub(super) fn client_tag(&self) -> &Bytes {
        &self.tag
    }

    pub(super) fn answered(&self) -> bool {
        self.answered
    }

    /// The store the copy is waiting for (OLD first: it feeds NEW).
    pub(super) fn awaiting(&self) -> Option<Store> {
        if self.old_wait.is_some() {
            Some(Store::Old)
        } else {
            (!self.new_wait.is_empty()).then_some(Store::New)
        }
    }

    fn finished(&self) -> bool {
        self.old_wait.is_none() && self.new_wait.is_empty()
    }

    /// The APPEND arguments for one message: flags (never `\Recent`) and date.
    fn args(&self, items: &[MessageDataItem<'_>]) -> Bytes {
        reply::append_args(items)
    }
}

impl Shared {
    /// A frame of a body FETCH response on OLD (see [`super::Merged::classify`]).
    pub(in crate::session) fn merged_copy_frame(&mut self, m: &mut Merged, frame: Frame) {
        if let Some(Job::Copy(c)) = &mut m.job {
            self.copy_frame(c, frame);
            if c.answered {
                m.job = None;
            }
        }
    }

    /// The client went away; true while a copy still has to clean up on NEW.
    pub(in crate::session) fn merged_client_gone(&mut self, m: &mut Merged) -> bool {
        let Some(Job::Copy(c)) = &mut m.job else {
            return false;
        };
        let going_on = self.copy_client_gone(c);
        if c.answered {
            m.job = None;
        }
        going_on
    }

    /// COPY/UID COPY from the selected `Old/` folder into the NEW folder `dest`.
    pub(in crate::session) fn start_copy(
        &mut self,
        m: &mut Merged,
        tag: Bytes,
        cmd: CommandBody<'_>,
        dest: Vec<u8>,
    ) {
        let CommandBody::Copy {
            sequence_set, uid, ..
        } = cmd
        else {
            return;
        };
        let Some(new) = self.store_info(Store::New) else {
            return self.send_client(unavailable(&tag));
        };
        let multi = new.capabilities.has(Cap::Multiappend);
        if !new.capabilities.has(Cap::LiteralPlus) || !(multi || new.capabilities.has(Cap::UidPlus))
        {
            return self.send_client(reply::no(
                &tag,
                Rfc5530::Cannot,
                "The new mail store cannot take a safe copy (needs LITERAL+ and MULTIAPPEND or UIDPLUS)",
            ));
        }
        let dest = mailbox(dest);
        let old_tag = self.ferry_tag();
        let meta = reply::command(
            &old_tag,
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(vec![
                    MessageDataItemName::Uid,
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                ]),
                uid,
                modifiers: Vec::new(),
            },
        );
        let new_tag = self.ferry_tag();
        let status = reply::command(
            &new_tag,
            CommandBody::Status {
                mailbox: dest.clone(),
                item_names: vec![imap_codec::imap_types::status::StatusDataItemName::UidValidity]
                    .into(),
            },
        );
        self.send_store(Store::Old, meta);
        self.send_store(Store::New, status);
        self.input = Input::Waiting;
        self.report(crate::session::Report::CopyStarted);
        m.job = Some(Job::Copy(Box::new(CopyJob {
            tag,
            verb: if uid { "UID COPY" } else { "COPY" },
            dest,
            multi,
            stage: Stage::Check,
            old_wait: Some(old_tag),
            new_wait: vec![new_tag],
            meta: HashMap::new(),
            seq_uid: HashMap::new(),
            copied: Vec::new(),
            assigned: Vec::new(),
            validity: None,
            append_open: false,
            remaining: 0,
            bytes: 0,
            failure: None,
            end_after: None,
            answered: false,
        })));
    }

    /// An assembled untagged response from a store while a copy runs.
    pub(super) fn copy_untagged(&mut self, job: &mut CopyJob, store: Store, msg: Bytes) {
        let ours = store == Store::Old && job.stage == Stage::Check && job.old_wait.is_some();
        if ours
            && let Ok((_, Response::Data(Data::Fetch { seq, items }))) =
                ResponseCodec::new().decode(&msg)
        {
            let items = items.as_ref();
            let uid = items.iter().find_map(|i| match i {
                MessageDataItem::Uid(u) => Some(*u),
                _ => None,
            });
            let dated = items
                .iter()
                .any(|i| matches!(i, MessageDataItem::InternalDate(_)));
            if let Some(uid) = uid
                && dated
            {
                let args = job.args(items);
                job.seq_uid.insert(seq, uid);
                job.meta.insert(uid, Meta { uid, args });
                return;
            }
        }
        if store == Store::Old && job.stage == Stage::Bodies && msg.starts_with(b"* ") {
            // A body answered without a literal (NIL): that message cannot be copied.
            if let Ok((_, Response::Data(Data::Fetch { items, .. }))) =
                ResponseCodec::new().decode(&msg)
                && items
                    .as_ref()
                    .iter()
                    .any(|i| matches!(i, MessageDataItem::BodyExt { .. }))
            {
                self.copy_fail(job, Failure::Refused("a message could not be read".into()));
                return;
            }
        }
        if store == Store::Old {
            // News about the selected Old/ folder (flag changes, new mail).
            self.send_client(msg);
        }
    }

    /// One frame of a message body FETCH response on OLD.
    pub(super) fn copy_frame(&mut self, job: &mut CopyJob, frame: Frame) {
        match frame {
            Frame::Line {
                bytes,
                start: true,
                literal: Some(a),
            } => {
                let known = body_line(&bytes).and_then(|(seq, uid)| {
                    let uid = uid.or_else(|| job.seq_uid.get(&seq).copied())?;
                    job.meta.get(&uid).map(|m| (m.uid, m.args.clone()))
                });
                if job.failure.is_some() {
                    return;
                }
                let Some((uid, args)) = known else {
                    return self.copy_fail(
                        job,
                        Failure::Refused("the old store sent an unexpected message".into()),
                    );
                };
                // Never announce to NEW more than a client could APPEND: NEW would
                // refuse it anyway, and an abort must pad what was announced.
                if a.len > self.cfg.config.limits.max_append_bytes {
                    self.report(crate::session::Report::LimitHit("append"));
                    return self.copy_fail(
                        job,
                        Failure::Refused("a message is larger than this server accepts".into()),
                    );
                }
                let mut head = BytesMut::new();
                if !job.multi || !job.append_open {
                    let t = self.ferry_tag();
                    head.extend_from_slice(&t);
                    head.extend_from_slice(b" APPEND ");
                    head.extend_from_slice(&encode_mailbox(&job.dest));
                    job.new_wait.push(t);
                    job.append_open = true;
                }
                head.extend_from_slice(b" ");
                head.extend_from_slice(&args);
                head.extend_from_slice(&reply::literal_announcement(a.len, false));
                self.send_store(Store::New, head.freeze());
                job.remaining = a.len;
                job.copied.push(uid);
                if a.len == 0 {
                    self.copy_message_done(job);
                }
            }
            Frame::LiteralData { bytes, .. } => {
                if job.failure.is_some() || job.remaining == 0 {
                    return;
                }
                let n = bytes.len() as u64;
                job.remaining = job.remaining.saturating_sub(n);
                job.bytes += n;
                self.send_store(Store::New, bytes);
                if job.remaining == 0 {
                    self.copy_message_done(job);
                }
            }
            // The rest of the FETCH response after the body: nothing to copy.
            Frame::Line { .. } => {}
        }
    }

    fn copy_message_done(&mut self, job: &mut CopyJob) {
        if !job.multi {
            self.send_store(Store::New, Bytes::from_static(b"\r\n"));
            job.append_open = false;
        }
    }

    /// Stops a copy: a message half sent to NEW is filled up and its APPEND is
    /// made to fail, so NEW keeps nothing of it (nor, with MULTIAPPEND, of any).
    fn copy_fail(&mut self, job: &mut CopyJob, failure: Failure) {
        if job.failure.is_none() {
            tracing::warn!(reason = ?failure, "cross-store copy failed");
            job.failure = Some(failure);
        }
        if job.append_open {
            while job.remaining > 0 {
                let n = job.remaining.min(PAD.len() as u64) as usize;
                self.send_store(Store::New, Bytes::from_static(&PAD[..n]));
                job.remaining -= n as u64;
            }
            // After a message, NEW expects SP or CRLF: anything else is BAD and
            // the APPEND is discarded.
            self.send_store(Store::New, Bytes::from_static(b" FERRY-ABORT\r\n"));
            job.append_open = false;
        }
    }

    /// A tagged response to one of the copy's own commands.
    pub(super) fn copy_tagged(&mut self, job: &mut CopyJob, store: Store, tag: &[u8], msg: Bytes) {
        let ok = is_ok(&msg);
        match store {
            Store::Old if job.old_wait.as_deref() == Some(tag) => {
                job.old_wait = None;
                if !ok {
                    let why = store_text(&msg);
                    self.copy_fail(job, Failure::Refused(format!("the old store said: {why}")));
                } else if job.stage == Stage::Bodies && job.failure.is_none() {
                    if job.copied.len() != job.meta.len() {
                        self.copy_fail(
                            job,
                            Failure::Refused("some messages vanished from the old folder".into()),
                        );
                    } else if job.multi && job.append_open {
                        self.send_store(Store::New, Bytes::from_static(b"\r\n"));
                        job.append_open = false;
                    }
                }
            }
            Store::New if job.new_wait.iter().any(|t| t == tag) => {
                job.new_wait.retain(|t| t != tag);
                match job.stage {
                    Stage::Check if !ok => {
                        job.failure.get_or_insert(Failure::NoDestination);
                    }
                    Stage::Bodies if ok => {
                        if let Some((v, uids)) = append_uids(&msg) {
                            job.validity = Some(v);
                            job.assigned.extend(uids);
                        }
                    }
                    Stage::Bodies => {
                        let why = store_text(&msg);
                        self.copy_fail(job, Failure::Refused(format!("the new store said: {why}")));
                    }
                    _ => {}
                }
            }
            _ => return,
        }
        self.copy_step(job);
    }

    /// Moves the copy on once every command of the current stage is answered.
    fn copy_step(&mut self, job: &mut CopyJob) {
        if !job.finished() {
            return;
        }
        match job.stage {
            Stage::Check if job.failure.is_none() && !job.meta.is_empty() => {
                job.stage = Stage::Bodies;
                let mut uids: Vec<NonZeroU32> = job.meta.keys().copied().collect();
                uids.sort_unstable();
                let Some(set) = sequence_set(&uids) else {
                    return;
                };
                let t = self.ferry_tag();
                let body = reply::command(
                    &t,
                    CommandBody::Fetch {
                        sequence_set: set,
                        macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(
                            vec![MessageDataItemName::BodyExt {
                                section: None::<Section<'static>>,
                                partial: None,
                                peek: true,
                            }],
                        ),
                        uid: true,
                        modifiers: Vec::new(),
                    },
                );
                self.send_store(Store::Old, body);
                job.old_wait = Some(t);
            }
            Stage::Bodies if job.failure.is_some() && !job.multi && !job.assigned.is_empty() => {
                self.copy_roll_back(job)
            }
            _ => self.copy_answer(job),
        }
    }

    /// Removes the messages a failed copy had appended, and only those.
    fn copy_roll_back(&mut self, job: &mut CopyJob) {
        job.stage = Stage::RollBack;
        let Some(set) = sequence_set(&job.assigned) else {
            return self.copy_answer(job);
        };
        for body in [
            CommandBody::Select {
                mailbox: job.dest.clone(),
                parameters: Vec::new(),
            },
            reply::mark_deleted(set.clone()),
            CommandBody::ExpungeUid { sequence_set: set },
            CommandBody::Unselect,
        ] {
            let t = self.ferry_tag();
            self.send_store(Store::New, reply::command(&t, body));
            job.new_wait.push(t);
        }
    }

    fn copy_answer(&mut self, job: &mut CopyJob) {
        let reply = match &job.failure {
            Some(f) => {
                self.report(crate::session::Report::Copy {
                    result: f.label(),
                    messages: 0,
                    bytes: 0,
                });
                f.reply(&job.tag)
            }
            None => {
                self.report(crate::session::Report::Copy {
                    result: "ok",
                    messages: job.copied.len() as u64,
                    bytes: job.bytes,
                });
                let code = match (job.validity, uid_set(&job.copied), uid_set(&job.assigned)) {
                    (Some(uid_validity), Some(source), Some(destination))
                        if job.assigned.len() == job.copied.len() =>
                    {
                        Some(Code::CopyUid {
                            uid_validity,
                            source: UidSet(source),
                            destination: UidSet(destination),
                        })
                    }
                    _ => None,
                };
                let text = format!("{} completed", job.verb);
                reply::status(&job.tag, reply::Kind::Ok, code, &text)
            }
        };
        self.send_client(reply);
        self.input = Input::Command;
        job.answered = true;
        if let Some(text) = job.end_after {
            self.send_client(reply::bye(text));
            self.logout_stores();
            self.close();
        }
    }

    /// OLD went away during the copy.
    pub(super) fn copy_old_lost(&mut self, job: &mut CopyJob) {
        job.end_after = Some("The Old/ folder store went away, please reconnect.");
        let owed = job.old_wait.take().is_some();
        // Only once every body has arrived can the copy complete without OLD.
        if owed || job.stage == Stage::Check {
            self.copy_fail(job, Failure::Unavailable("the old store went away"));
        }
        self.copy_step(job);
    }

    /// The client went away during the copy. With MULTIAPPEND the abort just
    /// sent is enough; otherwise the session lives on until what was appended
    /// has been removed. True while the session must go on.
    pub(super) fn copy_client_gone(&mut self, job: &mut CopyJob) -> bool {
        job.end_after = Some("Connection closed");
        self.copy_fail(job, Failure::Refused("the client went away".into()));
        if job.multi {
            return false;
        }
        self.copy_step(job);
        !job.answered
    }
}

fn sequence_set(uids: &[NonZeroU32]) -> Option<SequenceSet> {
    let elements = uid_set(uids)?;
    let seqs: Vec<Sequence> = elements
        .as_ref()
        .iter()
        .map(|e| match *e {
            UidElement::Single(u) => Sequence::Single(u.into()),
            UidElement::Range(a, b) => Sequence::Range(a.into(), b.into()),
        })
        .collect();
    Vec1::try_from(seqs).ok().map(SequenceSet)
}

/// A mailbox name as it goes on the wire (atom, quoted string).
fn encode_mailbox(mailbox: &Mailbox<'_>) -> Bytes {
    let line = reply::command(
        b"t",
        CommandBody::Create {
            mailbox: mailbox.clone(),
        },
    );
    let name = &line[b"t CREATE ".len()..line.len() - 2];
    Bytes::copy_from_slice(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn uid_sets_compress_runs_and_keep_order() {
        let set = uid_set(&[nz(1), nz(2), nz(3), nz(7), nz(5), nz(6)]).unwrap();
        assert_eq!(
            set.as_ref(),
            [
                UidElement::Range(nz(1), nz(3)),
                UidElement::Single(nz(7)),
                UidElement::Range(nz(5), nz(6)),
            ]
        );
        let s = sequence_set(&[nz(4), nz(5), nz(9)]).unwrap();
        assert_eq!(
            &reply::command(b"t", CommandBody::ExpungeUid { sequence_set: s })[..],
            b"t UID EXPUNGE 4:5,9\r\n"
        );
    }

    #[test]
    fn store_text_drops_codes() {
        assert_eq!(
            store_text(b"ferry.2 NO [TRYCREATE] Mailbox doesn't exist: X\r\n"),
            "Mailbox doesn't exist: X"
        );
        assert_eq!(store_text(b"ferry.2 BAD Error\r\n"), "Error");
    }
}
