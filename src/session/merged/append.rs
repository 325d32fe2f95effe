//! APPEND into NEW folders: the message streams to the store, never buffered.

use imap_codec::imap_types::{core::LiteralMode, extensions::binary::Literal8};

use super::*;

/// What an APPEND's first part says, decoded before its message arrives.
pub(in crate::session) struct AppendProbe {
    command: Command<'static>,
    mailbox: Vec<u8>,
}

/// Decodes the part of an APPEND before its message literal (`… {n+}\r\n`).
pub(in crate::session) fn append_probe(command: &[u8]) -> Option<AppendProbe> {
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

impl Shared {
    pub(in crate::session) fn merged_append(
        &mut self,
        m: &mut Merged,
        probe: AppendProbe,
        a: Announcement,
    ) {
        // The command is still being assembled: its first line is copied.
        let head = Bytes::copy_from_slice(&self.command);
        let verb = crate::verb::Verb::of(&head);
        self.timing = Some(crate::session::Timing::new(&head, verb, self.clock.now));
        let tag = Bytes::copy_from_slice(probe.command.tag.inner().as_bytes());
        let refuse = |code: Rfc5530, text: &str| reply::no(&tag, code, text);
        let target = m.map.to_backend(&probe.mailbox);
        let name = match target {
            Ok(Target::New(n)) => n,
            Ok(Target::Old(_) | Target::OldRoot) => {
                return self
                    .refuse_command(a, refuse(Rfc5530::NoPerm, "Old/ folders are read-only"));
            }
            Err(MapError::Unrepresentable) if m.map.is_reserved(&probe.mailbox) => {
                return self
                    .refuse_command(a, refuse(Rfc5530::NoPerm, "Old/ folders are read-only"));
            }
            Err(_) => {
                return self
                    .refuse_command(a, reply::no_code(&tag, Code::TryCreate, "No such mailbox"));
            }
        };
        if a.len > self.cfg.config.limits.max_append_bytes {
            self.report(crate::session::Report::LimitHit("append"));
            return self
                .refuse_oversized(a, reply::no_code(&tag, Code::TooBig, "Message too large"));
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
                // An empty literal marks where the real one goes (a
                // literal8's `~` stays before it: BINARY, RFC 3516).
                *message = match message {
                    LiteralOrLiteral8::Literal8(_) => LiteralOrLiteral8::Literal8(Literal8 {
                        data: b""[..].into(),
                        mode: LiteralMode::NonSync,
                    }),
                    LiteralOrLiteral8::Literal(_) => {
                        LiteralOrLiteral8::Literal(Literal::unvalidated_non_sync(&b""[..]))
                    }
                };
            }
            let line = CommandCodec::new().encode(&cmd).dump();
            let open = line.iter().rposition(|b| *b == b'{').unwrap_or(line.len());
            BytesMut::from(&line[..open])
        };
        self.command.clear();
        head.extend_from_slice(&reply::literal_announcement(a.len, a.sync));
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
    pub(in crate::session) fn merged_append_literal(&mut self, m: &mut Merged, a: Announcement) {
        if !a.sync {
            return;
        }
        self.input = Input::Waiting;
        if let Some(Job::Append { pending, .. }) = &mut m.job {
            *pending = Some(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(in crate::session) fn probes_append() {
        let p = append_probe(b"a1 APPEND \"Old/x\" (\\Seen) {310+}\r\n").unwrap();
        assert_eq!(p.mailbox, b"Old/x");
        assert!(append_probe(b"a1 LOGIN alice {5+}\r\n").is_none());
    }
}
