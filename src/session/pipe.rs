//! Phases `old` and `new`: one store, passed through as it is.
//!
//! Bytes flow verbatim both ways. Ferry only looks at the first line of each
//! client command, to keep out what would break a proxy in the middle (TLS,
//! a second login, the store's compression: COMPRESS is Ferry's own, toward
//! the client), and filters CAPABILITY answers the same way.

use bytes::Bytes;
use imap_codec::{
    CommandCodec, ResponseCodec,
    decode::Decoder,
    imap_types::{
        command::{Command, CommandBody},
        response::{Data, Response},
    },
};

use super::{Disposition, PipeState, Shared, reply};
use crate::{frame::Frame, namespace::Store, verb::Verb};

/// `* CAPABILITY …`, which is filtered like the login answer.
pub(super) fn is_capability(line: &[u8]) -> bool {
    line.len() > 13 && line[..13].eq_ignore_ascii_case(b"* CAPABILITY ")
}

impl PipeState {
    /// Store responses pass through; CAPABILITY is filtered and tagged lines
    /// are looked at to know which commands are still running.
    pub(super) fn classify(&mut self, line: &[u8], now: std::time::Instant) -> Disposition {
        let capability = is_capability(line);
        if line.starts_with(b"+") {
            // A `+` for a literal the client waits to send, else the IDLE's.
            if self.literal.take().is_none()
                && let Some(idle) = &mut self.idle
                && !idle.continued(now)
            {
                return Disposition::Drop;
            }
            Disposition::Forward
        } else if capability || !line.starts_with(b"* ") {
            Disposition::Assemble(Default::default())
        } else {
            Disposition::Forward
        }
    }
}

impl Shared {
    pub(super) fn pipe_client_frame(&mut self, p: &mut PipeState, frame: Frame) {
        let store = p.store;
        // A command's first line: what it is, told once.
        let verb = match &frame {
            Frame::Line {
                bytes, start: true, ..
            } => {
                self.count_command();
                Verb::of(bytes)
            }
            _ => Verb::OTHER,
        };
        if let Frame::Line {
            bytes,
            start: true,
            literal: None,
        } = &frame
            && verb.is("COMPRESS")
        {
            return self.pipe_compress(p, bytes.clone());
        }
        if let Frame::Line {
            bytes,
            start: true,
            literal,
        } = &frame
            && verb.changes_connection()
        {
            let tag = reply::tag_of(bytes).to_vec();
            let answer = reply::bad(&tag, "Command not available in this session");
            match literal {
                Some(a) => self.refuse_command(*a, answer),
                None => self.send_client(answer),
            }
            return;
        }
        if let super::Input::Discard(answer) = self.input.clone() {
            self.discard_frame(answer, frame);
            return;
        }
        if let Frame::Line {
            bytes, start: true, ..
        } = &frame
            && bytes.eq_ignore_ascii_case(b"DONE\r\n")
            && let Some(idle) = &mut p.idle
        {
            // The client's own DONE goes on as it came.
            idle.end(false);
        } else if let Frame::Line {
            bytes, start: true, ..
        } = &frame
            && !bytes.eq_ignore_ascii_case(b"DONE\r\n")
        {
            let timing = super::Timing::new(bytes, verb, self.clock.now);
            if timing.verb.is("IDLE") {
                p.idle = Some(super::idle::Idle::new(&timing.tag, store, self.clock.now));
            }
            p.inflight.push_back(timing);
        }
        if let Frame::Line {
            literal: Some(a), ..
        } = &frame
            && a.sync
            && let Some(t) = p.inflight.back()
        {
            p.literal = Some((t.tag.clone(), *a));
        }
        let bytes = match frame {
            Frame::Line { bytes, .. } | Frame::LiteralData { bytes, .. } => bytes,
        };
        self.send_store(store, bytes);
    }

    /// COMPRESS is Ferry's (the store never compresses toward Ferry), and
    /// answered only once the commands before it are: the OK must not land
    /// inside a store's answer that is still streaming, and whatever comes
    /// after the OK is compressed.
    fn pipe_compress(&mut self, p: &mut PipeState, line: Bytes) {
        let tag = reply::tag_of(&line).to_vec();
        let valid = matches!(
            CommandCodec::new().decode(&line),
            Ok((
                _,
                Command {
                    body: CommandBody::Compress { .. },
                    ..
                }
            ))
        );
        if !valid {
            return self.send_client(reply::bad(&tag, "Unknown command or invalid syntax"));
        }
        if p.idle.is_some() {
            return self.send_client(reply::bad(&tag, "Expected DONE"));
        }
        if !p.inflight.is_empty() {
            p.compress = Some(line);
            return;
        }
        self.time_command(&line, Verb::of(&line));
        self.compress(&tag);
    }

    /// A tagged line or a `* CAPABILITY` line (filtered like the login answer).
    pub(super) fn pipe_message(&mut self, p: &mut PipeState, store: Store, message: Bytes) {
        let tag = reply::tag_of(&message);
        if let Some(idle) = p.idle.as_mut().filter(|i| i.tag == tag) {
            let ok = crate::frame::head(&message).1.eq_ignore_ascii_case(b"OK");
            match idle.tagged(ok) {
                // Ferry's own DONE was answered: IDLE again under the client's tag.
                super::idle::Tagged::IdleAgain(again) => return self.send_store(store, again),
                super::idle::Tagged::Over => p.idle = None,
            }
        }
        if tag != b"*" {
            let mut logout = false;
            if let Some(i) = p.inflight.iter().position(|t| *t.tag == *tag) {
                let mut timing = p.inflight.remove(i).expect("position is in range");
                timing.stores = 1 << store.index();
                logout = timing.verb.is("LOGOUT")
                    && crate::frame::head(&message).1.eq_ignore_ascii_case(b"OK");
                let report = super::record(timing, &message, self.clock.now);
                self.report(report);
            }
            if logout {
                // The store closes next: that is the end, not a lost store.
                self.stores[store.index()] = None;
                self.send_client(message);
                self.actions.push_back(super::Action::CloseBackend(store));
                self.ending.get_or_insert(super::End::Logout);
                return self.close();
            }
            if let Some((_, a)) = p.literal.take_if(|(t, _)| **t == *tag) {
                // Refused before its literal: the client will not send it.
                self.client.refuse_literal(a);
            }
            self.send_client(message);
            if p.inflight.is_empty()
                && let Some(line) = p.compress.take()
            {
                self.pipe_compress(p, line);
            }
            return;
        }
        match ResponseCodec::new().decode(&message) {
            Ok((_, Response::Data(Data::Capability(caps)))) => {
                let caps = crate::merge::passthrough_capabilities(
                    &crate::caps::Caps::from_decoded(caps.as_ref()),
                );
                self.send_client(reply::capability_line(&caps));
            }
            _ => self.send_client(message),
        }
    }
}
