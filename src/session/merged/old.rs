//! OLD's connection in the merged view: logged in when a command first needs
//! it, lost, and got back under an open `Old/` folder.
//!
//! OLD is only ever read, so nothing is lost by reconnecting: Ferry logs in
//! again (with backoff), re-opens the folder, and if its UIDVALIDITY and
//! message count are what the client last saw, carries on as if nothing had
//! happened — re-sending the read-only command that was running, if any. An
//! OLD server that reboots every night becomes invisible. If the folder
//! changed, or OLD stays away, the client gets `* BYE`.

use imap_codec::imap_types::response::Status;

use super::*;

/// What the client last saw of its open `Old/` folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(in crate::session) struct OldView {
    uidvalidity: Option<u32>,
    exists: Option<u32>,
}

impl OldView {
    /// Updates the view from one of OLD's untagged lines (no literal).
    pub(super) fn observe(&mut self, line: &[u8]) {
        match ResponseCodec::new().decode(line) {
            Ok((_, Response::Data(Data::Exists(n)))) => self.exists = Some(n),
            Ok((_, Response::Data(Data::Expunge(_)))) => {
                self.exists = self.exists.map(|n| n.saturating_sub(1));
            }
            Ok((
                _,
                Response::Data(Data::Vanished {
                    earlier: false,
                    known_uids,
                }),
            )) => {
                // QRESYNC's EXPUNGE: one message per UID.
                use imap_codec::imap_types::sequence::{SeqOrUid, Sequence};
                let value = |s: &SeqOrUid| match s {
                    SeqOrUid::Value(v) => v.get(),
                    SeqOrUid::Asterisk => u32::MAX,
                };
                let gone = known_uids
                    .0
                    .as_ref()
                    .iter()
                    .map(|s| match s {
                        Sequence::Single(_) => 1,
                        Sequence::Range(a, b) => value(a).abs_diff(value(b)).saturating_add(1),
                    })
                    .fold(0u32, u32::saturating_add);
                self.exists = self.exists.map(|n| n.saturating_sub(gone));
            }
            Ok((_, Response::Status(Status::Untagged(s)))) => {
                if let Some(Code::UidValidity(v)) = s.code {
                    self.uidvalidity = Some(v.get());
                }
            }
            _ => {}
        }
    }
}

/// A reconnect in progress.
#[derive(Debug)]
pub(in crate::session) struct Resume {
    /// The folder's name on OLD.
    name: Vec<u8>,
    view: OldView,
    /// The client's read-only command that was running: (tag, bytes).
    retry: Option<(Bytes, Bytes)>,
}

const CHANGED: &str = "The Old/ folder store restarted and the folder changed; please reconnect.";
const GONE: &str = "The Old/ folder store went away, please reconnect.";

impl Shared {
    pub(super) fn need_old(&mut self, m: &mut Merged, raw: &Bytes) -> Option<bool> {
        match m.old {
            OldState::Ready => Some(true),
            OldState::Unavailable => Some(false),
            OldState::Reconnecting => {
                m.parked = Some(raw.clone());
                self.input = Input::Waiting;
                None
            }
            OldState::Absent | OldState::Connecting => {
                if !self.login_on_behalf(Store::Old, &m.credentials, crate::config::Phase::Merged) {
                    // OLD just refused this login: Old/ is unavailable.
                    m.old = OldState::Unavailable;
                    return Some(false);
                }
                m.old = OldState::Connecting;
                m.parked = Some(raw.clone());
                self.input = Input::Waiting;
                None
            }
        }
    }

    pub(in crate::session) fn old_login_done(
        &mut self,
        m: &mut Merged,
        result: Result<crate::session::BackendInfo, crate::session::LoginFailure>,
    ) {
        match result {
            Ok(info) => {
                self.clock.reconnected();
                m.map.set_layout(Store::Old, info.layout.clone());
                self.attach_store(Store::Old, info);
                m.old = OldState::Ready;
                // A new connection: nothing is enabled on it yet.
                m.store_enabled[Store::Old.index()] = Enabled::default();
                self.old_reconnected(m, true);
            }
            Err(crate::session::LoginFailure::Unavailable { .. })
                if m.old == OldState::Reconnecting && self.reconnect_again() => {}
            Err(e) => {
                if e == crate::session::LoginFailure::Rejected {
                    self.refused_on_behalf(Store::Old, &m.credentials.clone());
                }
                tracing::warn!(failure = ?e, "OLD store login failed; Old/ unavailable");
                m.old = OldState::Unavailable;
                self.old_reconnected(m, false);
            }
        }
    }

    /// OLD's connection is gone; `clean`: not in the middle of a response.
    pub(in crate::session) fn merged_old_lost(&mut self, m: &mut Merged, clean: bool) {
        tracing::warn!("OLD store connection lost");
        m.old = OldState::Unavailable;
        if let Some(Job::Copy(c)) = &mut m.job {
            // The copy is answered (and the session ended) once NEW has let go.
            m.selected = None;
            self.copy_old_lost(c);
            if c.answered() {
                m.job = None;
            }
            return;
        }
        if m.selected == Some(Store::Old) || matches!(m.job, Some(Job::Reopen(..))) {
            if !self.old_reconnect(m, clean) {
                self.bye_and_close(
                    "The Old/ folder store went away, please reconnect.",
                    crate::session::End::StoreLost,
                );
            }
            return;
        }
        match m.job.take() {
            Some(Job::List(mut l)) if l.waits_on(Store::Old) => {
                l.old_lost();
                self.list_step(m, l);
            }
            Some(Job::ListExt(mut l)) if l.waits_on(Store::Old) => {
                l.old_lost();
                self.list_extended_step(m, l);
            }
            Some(Job::Forward {
                store: Store::Old,
                tag,
                ..
            }) => {
                self.send_client(unavailable(&tag));
                self.input = Input::Command;
            }
            // Leaving OLD for NEW: nothing to unselect any more, go on.
            Some(Job::Leave {
                store: Store::Old,
                then,
                ..
            }) => self.after_leave(m, *then),
            other => m.job = other,
        }
    }

    /// OLD went away while the client had an `Old/` folder open. `clean`: no
    /// response was cut in the middle. Returns false when the session cannot
    /// go on that way (the caller ends it).
    pub(super) fn old_reconnect(&mut self, m: &mut Merged, clean: bool) -> bool {
        let Some(name) = m.old_name.clone() else {
            return false;
        };
        if !clean {
            return false;
        }
        let retry = match m.job.take() {
            None => None,
            Some(Job::Forward {
                store: Store::Old,
                tag,
                after: After::Nothing,
                ..
            }) => m.old_last.take().filter(|(t, _)| *t == tag),
            // Anything else on OLD (a flag echo, a copy) cannot be repeated;
            // nor a LIST merging OLD's answer (NEW's, if late, is dropped).
            Some(
                other @ (Job::Forward { .. }
                | Job::FlagEcho { .. }
                | Job::Copy(_)
                | Job::List(_)
                | Job::ListExt(_)),
            ) => {
                if let Some(tag) = other.client_tag() {
                    self.send_client(unavailable(&tag));
                }
                None
            }
            Some(_) => None,
        };
        tracing::info!("OLD store went away under an open Old/ folder; reconnecting");
        m.resume = Some(Box::new(Resume {
            name,
            view: m.old_view.clone(),
            retry,
        }));
        m.selected = None;
        m.old = OldState::Reconnecting;
        self.input = Input::Waiting;
        self.reconnect_soon();
        true
    }

    /// OLD is back (or not) after [`Session::old_reconnect`]: re-open the folder.
    pub(super) fn old_reconnected(&mut self, m: &mut Merged, ok: bool) {
        let Some(resume) = m.resume.take() else {
            return;
        };
        if !ok {
            return self.bye_and_close(GONE, crate::session::End::StoreLost);
        }
        self.enable_on(m, Store::Old);
        let tag = self.ferry_tag();
        let body = CommandBody::Examine {
            mailbox: mailbox(resume.name.clone()),
            parameters: Vec::new(),
        };
        self.send_store(Store::Old, reply::command(&tag, body));
        m.old_view = OldView::default();
        m.job = Some(Job::Reopen(tag, resume));
    }

    /// OLD answered the re-opening EXAMINE.
    pub(super) fn old_reopened(&mut self, m: &mut Merged, resume: Resume, msg: &[u8]) {
        if !is_ok(msg) || m.old_view != resume.view {
            tracing::warn!(before = ?resume.view, after = ?m.old_view, "Old/ folder changed across a reconnect");
            return self.bye_and_close(CHANGED, crate::session::End::StoreLost);
        }
        tracing::info!("Old/ folder re-opened unchanged");
        m.selected = Some(Store::Old);
        match resume.retry {
            Some((tag, bytes)) => {
                m.old_last = Some((tag.clone(), bytes.clone()));
                let job = Job::Forward {
                    store: Store::Old,
                    tag,
                    after: After::Nothing,
                    rename: true,
                };
                self.start(m, None, Store::Old, bytes, job);
            }
            None => {
                self.input = Input::Command;
                if let Some(parked) = m.parked.take() {
                    let verb = Verb::of(&parked);
                    match CommandCodec::new().decode(&parked) {
                        Ok((_, cmd)) => self.merged_command(m, cmd, &parked, verb),
                        Err(_) if listext::parses_itself(verb) => {
                            self.merged_extended(m, &parked, verb)
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }
}
