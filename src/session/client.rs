//! Client bytes: framed, assembled into whole commands (literals normalised
//! to `{n+}`), streamed for APPEND, refused when over a limit.

use super::*;
use crate::verb::Verb;

impl Session {
    pub(super) fn pump_client(&mut self) {
        while self.wants_client_input() {
            let frame = match self.client.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.client.shrink();
                    return;
                }
                Err(e) => {
                    self.report(crate::session::Report::LimitHit("line"));
                    self.command.clear();
                    self.input = Input::Command;
                    self.send_client(reply::bad(b"*", &format!("Command {e}")));
                    continue;
                }
            };
            if std::mem::take(&mut self.done_owed)
                && matches!(&frame, Frame::Line { bytes, start: true, .. } if bytes.eq_ignore_ascii_case(b"DONE\r\n"))
            {
                // The client's DONE for an IDLE Ferry had ended already.
                continue;
            }
            let Session { shared, mode } = self;
            if let Mode::Pipe(p) = mode {
                shared.pipe_client_frame(p, frame);
                continue;
            }
            match shared.input.clone() {
                Input::Command => self.assemble(frame),
                Input::AuthData { tag, bearer } => shared.auth_data(mode, tag, bearer, frame),
                Input::IdleDone => {
                    if let Mode::Merged(m) = mode {
                        shared.idle_done(m, frame);
                    }
                }
                Input::Stream(store) | Input::Rest(store) => self.stream_frame(store, frame),
                Input::Discard(reply) => shared.discard_frame(reply, frame),
                Input::Waiting => unreachable_waiting(),
            }
        }
    }

    pub(super) fn assemble(&mut self, frame: Frame) {
        match frame {
            Frame::Line { bytes, literal, .. } => {
                if literal.is_none() && self.command.is_empty() {
                    // A command of one line, the usual case: no copy.
                    return self.command_complete(bytes);
                }
                match literal {
                    Some(a) if a.sync => {
                        // `{n}` → `{n+}`: the assembled command is sent in one piece.
                        self.command.extend_from_slice(&bytes[..bytes.len() - 3]);
                        self.command.extend_from_slice(b"+}\r\n");
                    }
                    _ => self.command.extend_from_slice(&bytes),
                }
                match literal {
                    None => {
                        let command = std::mem::take(&mut self.command).freeze();
                        self.command_complete(command);
                    }
                    Some(a) => self.literal_announced(a),
                }
            }
            Frame::LiteralData { bytes, .. } => self.command.extend_from_slice(&bytes),
        }
    }

    pub(super) fn literal_announced(&mut self, a: Announcement) {
        let Session { shared, mode } = self;
        if let Mode::Merged(m) = mode
            && let Some(append) = merged::append_probe(&shared.command)
        {
            return shared.merged_append(m, append, a);
        }
        let limit = match self.mode {
            Mode::PreAuth => PREAUTH_MAX_LITERAL,
            _ => self.cfg.config.limits.max_inline_literal_bytes,
        };
        if a.len as usize > limit || self.command.len() + a.len as usize > 2 * limit {
            let tag = reply::tag_of(&self.command).to_vec();
            self.report(crate::session::Report::LimitHit("literal"));
            self.refuse_oversized(a, reply::bad(&tag, "Literal too large"));
        } else if a.sync {
            self.send_client(Bytes::from_static(b"+ Ready for literal data\r\n"));
        }
    }

    pub(super) fn stream_frame(&mut self, store: Store, frame: Frame) {
        match frame {
            Frame::LiteralData { bytes, .. } => self.send_store(store, bytes),
            Frame::Line { bytes, literal, .. } => {
                let bytes = match &mut self.mode {
                    Mode::Merged(m) => m.append_line(bytes),
                    _ => bytes,
                };
                self.send_store(store, bytes);
                let answered = matches!(self.input, Input::Rest(_));
                match literal {
                    None if answered => self.input = Input::Command,
                    None => self.input = Input::Waiting,
                    Some(a) if answered => {
                        // A refused store sends no `+`: the client does not
                        // send what it announced with `{n}`.
                        if a.sync {
                            self.client.refuse_literal(a);
                            self.input = Input::Command;
                        }
                    }
                    Some(a) => {
                        if let Mode::Merged(m) = &mut self.mode {
                            self.shared.merged_append_literal(m, a);
                        }
                    }
                }
            }
        }
    }

    pub(super) fn command_complete(&mut self, command: Bytes) {
        if self.closed {
            return;
        }
        self.count_command();
        let Session { shared, mode } = self;
        // A merged command's verb is told once: for its route by name and
        // for its metrics.
        let verb = matches!(mode, Mode::Merged(_)).then(|| Verb::of(&command));
        match (&mut *mode, verb) {
            (Mode::Merged(m), Some(verb)) => match m.undecoded(&command, verb) {
                Some(route) => shared.merged_undecoded(m, route, &command, verb),
                None => shared.decoded_command(mode, &command, verb),
            },
            _ => shared.decoded_command(mode, &command, Verb::OTHER),
        }
    }
}

impl Shared {
    fn decoded_command(&mut self, mode: &mut Mode, command: &Bytes, verb: Verb) {
        match (mode, CommandCodec::new().decode(command)) {
            (mode @ Mode::PreAuth, Ok((_, cmd))) => self.preauth_command(mode, cmd),
            (Mode::Merged(m), Ok((_, mut cmd))) => {
                if let CommandBody::Id { parameters } = &mut cmd.body {
                    // Passed on to a store logged in to later (OLD, lazily).
                    self.client_id =
                        super::preauth::client_id(parameters.take().unwrap_or_default());
                }
                self.merged_command(m, cmd, command, verb)
            }
            (Mode::Merged(m), Err(_)) if let Some(route) = crate::route::by_name(command, verb) => {
                // An extension's syntax imap-codec does not know, on a
                // command whose route its name tells.
                self.merged_raw(m, route, command, verb)
            }
            (Mode::Merged(m), Err(_))
                if verb.is("APPEND")
                    && crate::extensions::atom_at(command, b"CATENATE").is_some() =>
            {
                self.merged_catenate(m, command, verb)
            }
            // The extended LIST and CREATE (RFC 5258, RFC 6154), which
            // imap-codec cannot decode: Ferry reads them itself.
            (Mode::Merged(m), Err(_)) if merged::parses_itself(verb) => {
                self.merged_extended(m, command, verb)
            }
            (_, Ok(_)) | (_, Err(_)) => {
                debug!("undecodable command");
                let tag = reply::tag_of(command).to_vec();
                self.send_client(reply::bad(&tag, "Unknown command or invalid syntax"));
            }
        }
    }

    /// Drops the command being assembled, whose literal `a` was just announced,
    /// and answers `reply` once the client has stopped sending it.
    pub(super) fn refuse_command(&mut self, a: Announcement, reply: Bytes) {
        self.command.clear();
        self.client.refuse_literal(a);
        if a.sync {
            self.send_client(reply);
            self.input = Input::Command;
        } else {
            self.input = Input::Discard(reply);
        }
    }

    /// Refuses a command whose literal `a` is over a limit. A synchronizing
    /// literal is never sent; a non-synchronizing one is already on its way,
    /// and rather than read it all, the connection is closed after the answer.
    pub(super) fn refuse_oversized(&mut self, a: Announcement, reply: Bytes) {
        if a.sync {
            return self.refuse_command(a, reply);
        }
        self.command.clear();
        self.send_client(reply);
        self.bye_and_close(
            "Literal too large for this server; closing the connection",
            super::End::ProtocolError,
        );
    }

    pub(super) fn discard_frame(&mut self, reply: Bytes, frame: Frame) {
        if let Frame::Line { literal, .. } = frame {
            match literal {
                None => {
                    self.send_client(reply);
                    self.input = Input::Command;
                }
                Some(a) => {
                    self.client.refuse_literal(a);
                    if a.sync {
                        self.send_client(reply);
                        self.input = Input::Command;
                    }
                }
            }
        }
    }
}
