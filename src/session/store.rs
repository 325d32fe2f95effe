//! Store bytes: framed, then forwarded as they came, dropped, assembled for
//! rewriting, or handed to a copy, per response.

use super::*;

impl Session {
    pub(super) fn backend_frame(&mut self, store: Store, frame: Frame) {
        let (start, more) = match &frame {
            Frame::Line { start, literal, .. } => (*start, literal.is_some()),
            Frame::LiteralData { .. } => (false, true),
        };
        if start && let Frame::Line { bytes, .. } = &frame {
            let disposition = self.classify(store, bytes, more);
            if let Some(conn) = self.stores[store.index()].as_mut() {
                conn.disposition = disposition;
            }
        }
        let Shared {
            stores, actions, ..
        } = &mut self.shared;
        let Some(conn) = stores[store.index()].as_mut() else {
            return;
        };
        if let Disposition::Copy = conn.disposition {
            if !more {
                conn.disposition = Disposition::Forward;
            }
            let Session { shared, mode } = self;
            if let Mode::Merged(m) = mode {
                shared.merged_copy_frame(m, frame);
            }
            return;
        }
        let bytes = match frame {
            Frame::Line { bytes, .. } | Frame::LiteralData { bytes, .. } => bytes,
        };
        match &mut conn.disposition {
            Disposition::Forward => actions.push_back(Action::ToClient(bytes)),
            Disposition::Drop => {}
            // A message of one line (a tagged answer, the usual case): as
            // it came, no copy.
            Disposition::Assemble(buf) if buf.is_empty() && !more => {
                conn.disposition = Disposition::Forward;
                return self.backend_message(store, bytes);
            }
            Disposition::Assemble(buf) => buf.extend_from_slice(&bytes),
            Disposition::Copy => {}
        }
        if !more {
            let done = std::mem::replace(&mut conn.disposition, Disposition::Forward);
            if let Disposition::Assemble(buf) = done {
                self.backend_message(store, buf.freeze());
            }
        }
    }

    /// Forwards, as one piece, the untagged one-line responses at the front
    /// of `store`'s input that [`classify`](Self::classify) would forward one
    /// by one: the usual answer to a command is a burst of them.
    pub(super) fn forward_run(&mut self, store: Store) {
        let Session { shared, mode } = self;
        let Shared {
            stores, actions, ..
        } = shared;
        let Some(conn) = stores[store.index()].as_mut() else {
            return;
        };
        let mut numbered = None;
        let run = conn.framer.take_lines(|line| {
            line.starts_with(b"* ")
                && match mode {
                    Mode::Pipe(_) => !pipe::is_capability(line),
                    Mode::Merged(m) => {
                        let forward = m.forwards(store, line, &mut numbered);
                        // What it sees of an `Old/` folder is kept as when
                        // the line is framed alone (`observe_old` does not
                        // change how lines are classified).
                        if forward && store == Store::Old {
                            m.observe_old(line, false);
                        }
                        forward
                    }
                    _ => false,
                }
        });
        if let Some(run) = run {
            actions.push_back(Action::ToClient(run));
        }
    }

    pub(super) fn classify(&mut self, store: Store, line: &[u8], literal: bool) -> Disposition {
        match &mut self.mode {
            Mode::Pipe(p) => p.classify(line, self.shared.clock.now),
            Mode::Merged(m) => {
                if store == Store::Old {
                    m.observe_old(line, literal);
                }
                m.classify(store, line, literal)
            }
            _ => Disposition::Drop,
        }
    }

    pub(super) fn backend_message(&mut self, store: Store, message: Bytes) {
        let Session { shared, mode } = self;
        match mode {
            Mode::Pipe(p) => shared.pipe_message(p, store, message),
            Mode::Merged(m) => shared.merged_message(m, store, message),
            _ => {}
        }
    }
}
