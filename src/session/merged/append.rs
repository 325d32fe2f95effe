//! APPEND into NEW folders: the message streams to the store, never buffered.

use imap_codec::imap_types::{core::LiteralMode, extensions::binary::Literal8};

use super::*;

/// What an APPEND's first part says, decoded before its message arrives.
pub(in crate::session) struct AppendProbe {
    command: Command<'static>,
    mailbox: Vec<u8>,
    /// The message comes as `UTF8 (~{n}…)` (RFC 6855).
    utf8: bool,
}

/// Decodes the part of an APPEND before its message literal (`… {n+}\r\n`).
pub(in crate::session) fn append_probe(command: &[u8]) -> Option<AppendProbe> {
    let open = command.iter().rposition(|b| *b == b'{')?;
    let (head, utf8) = utf8_data(&command[..open]);
    let mut probe = head.to_vec();
    probe.extend_from_slice(b"{0+}\r\n\r\n");
    let (_, cmd) = CommandCodec::new().decode(&probe).ok()?;
    let CommandBody::Append { mailbox, .. } = &cmd.body else {
        return None;
    };
    let mailbox = mailbox_bytes(mailbox);
    Some(AppendProbe {
        command: cmd.into_static(),
        mailbox,
        utf8,
    })
}

/// `… UTF8 (~` before a literal: the part before `UTF8 (` with the `~`, and
/// true; else `head` as it is.
fn utf8_data(head: &[u8]) -> (std::borrow::Cow<'_, [u8]>, bool) {
    const MARK: &[u8] = b"UTF8 (~";
    match head.len().checked_sub(MARK.len()) {
        Some(at) if head[at..].eq_ignore_ascii_case(MARK) => {
            let mut out = head[..at].to_vec();
            out.push(b'~');
            (out.into(), true)
        }
        _ => (head.into(), false),
    }
}

/// A line of a streamed APPEND after a `UTF8 (…)` literal: the `)` that
/// closes it dropped, and a further message's `UTF8 (~{n}` (MULTIAPPEND)
/// made a plain literal8. `close`: a `)` is owed; set again for the next.
pub(in crate::session) fn utf8_line(line: Bytes, close: &mut bool) -> Bytes {
    let mut line = line;
    if *close && line.first() == Some(&b')') {
        line = line.slice(1..);
        *close = false;
    }
    let Some(open) = line.iter().rposition(|b| *b == b'{') else {
        return line;
    };
    match utf8_data(&line[..open]) {
        (head, true) => {
            *close = true;
            let mut out = BytesMut::from(&head[..]);
            out.extend_from_slice(&line[open..]);
            out.freeze()
        }
        _ => line,
    }
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
        let mailbox_name = match &probe.command.body {
            CommandBody::Append { mailbox, .. } => m.client_name(mailbox),
            _ => probe.mailbox.clone(),
        };
        let target = m.map.to_backend(&mailbox_name);
        let name = match target {
            Ok(Target::New(n)) => n,
            Ok(Target::Old(_) | Target::OldRoot) => {
                return self.refuse_command(a, read_only(&tag));
            }
            Err(MapError::Unrepresentable) if m.map.is_reserved(&mailbox_name) => {
                return self.refuse_command(a, read_only(&tag));
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
        if probe.utf8 && !m.utf8() {
            return self.refuse_command(
                a,
                reply::bad(&tag, "UTF8 message data needs ENABLE UTF8=ACCEPT"),
            );
        }
        let mut head = if name == probe.mailbox && !m.utf8() && !probe.utf8 {
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
                utf8_close: probe.utf8,
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
        let p = append_probe(b"a1 APPEND x utf8 (~{310+}\r\n").unwrap();
        assert!(p.utf8 && p.mailbox == b"x");
        let mut close = true;
        assert_eq!(
            &utf8_line(Bytes::from_static(b") UTF8 (~{5}\r\n"), &mut close)[..],
            b" ~{5}\r\n"
        );
        assert!(close);
        assert_eq!(
            &utf8_line(Bytes::from_static(b")\r\n"), &mut close)[..],
            b"\r\n"
        );
        assert!(!close);
    }
}
