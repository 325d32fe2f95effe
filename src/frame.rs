//! Line and literal framing for both directions, streamed.
//!
//! imap-codec's `Fragmentizer` buffers whole messages (a 50 MB FETCH would sit in
//! memory), so Ferry frames itself: lines are split off zero-copy, literal bytes
//! leave as soon as they arrive. Only lines Ferry must understand are decoded later.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Which peer produced the bytes; it decides where literals may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Client commands: any line may end in a literal announcement.
    Client,
    /// Server responses: status responses and continuation requests carry free
    /// text, never literals, so a `{5}` at their end is text (a server echoing a
    /// mailbox name must not desynchronise the stream).
    Server,
}

/// A literal announcement at the end of a line: `{len}` or `{len+}` (also `~{len}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    pub len: u64,
    /// `{len}`: the sender waits for a continuation request before sending the data.
    pub sync: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole line, line ending included.
    Line {
        bytes: Bytes,
        /// The line starts a new message (it does not follow a literal).
        start: bool,
        literal: Option<Announcement>,
    },
    /// Bytes of the literal announced by the previous line.
    LiteralData { bytes: Bytes, last: bool },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Line {
        start: bool,
    },
    Literal {
        remaining: u64,
    },
    /// Dropping a literal the session refused (a non-synchronizing one was sent anyway).
    Discard {
        remaining: u64,
    },
    /// Dropping the rest of an over-long line.
    DiscardLine,
}

/// Incremental framer over a byte stream.
#[derive(Debug)]
pub struct Framer {
    peer: Peer,
    buf: BytesMut,
    state: State,
    max_line: usize,
    /// Bytes of `buf` already searched for a line end.
    scanned: usize,
    /// `buf` is (a part of) a chunk handed in by [`push_chunk`](Self::push_chunk),
    /// which may share a worker's read block: kept past a burst, it is copied.
    adopted: bool,
}

impl Framer {
    pub fn new(peer: Peer, max_line: usize) -> Self {
        Self {
            peer,
            buf: BytesMut::new(),
            state: State::Line { start: true },
            max_line,
            scanned: 0,
            adopted: false,
        }
    }

    /// Takes in `data` (copied).
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Takes in a chunk the driver read. Usually nothing waits from the last
    /// read and the chunk becomes the buffer as it is: the frames split from
    /// it then leave without a copy.
    pub fn push_chunk(&mut self, data: BytesMut) {
        if self.buf.is_empty() {
            self.buf = data;
            self.adopted = true;
        } else {
            self.buf.extend_from_slice(&data);
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True between messages (no partial line, no literal pending).
    pub fn at_message_start(&self) -> bool {
        self.state == State::Line { start: true } && self.buf.is_empty()
    }

    /// Hands over the unframed bytes (the framer is empty afterwards).
    pub fn take_rest(&mut self) -> Bytes {
        self.scanned = 0;
        self.buf.split().freeze()
    }

    /// Releases buffer memory while the peer is quiet (idle sessions are
    /// thousands; an allocation per burst is cheap): an empty buffer is
    /// dropped, and a partial line left in an adopted chunk, which may hold
    /// a worker's whole read block, is copied out.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            if self.buf.capacity() > 0 {
                self.buf = BytesMut::new();
            }
        } else if std::mem::take(&mut self.adopted) {
            self.buf = BytesMut::from(&self.buf[..]);
        }
    }

    /// The announced literal will not come (a synchronizing literal the session
    /// refused by not sending `+`) or must be dropped (a non-synchronizing one).
    pub fn refuse_literal(&mut self, announcement: Announcement) {
        if let State::Literal { remaining } = self.state {
            self.state = if announcement.sync {
                State::Line { start: true }
            } else {
                State::Discard { remaining }
            };
        }
    }

    /// The whole lines at the front of the buffer that `take` accepts, split
    /// off as one piece: a store's burst of 50 `FETCH` lines then leaves as
    /// one part, not 50. Only between messages; a line that may announce a
    /// literal, or is over-long, ends the run and is left to
    /// [`next_frame`](Self::next_frame), like any line `take` refuses.
    pub fn take_lines(&mut self, mut take: impl FnMut(&[u8]) -> bool) -> Option<Bytes> {
        if self.state != (State::Line { start: true }) {
            return None;
        }
        let mut end = 0;
        while let Some(i) = memchr::memchr(b'\n', &self.buf[end..]) {
            let line = &self.buf[end..end + i + 1];
            if line.len() > self.max_line || announcement(line).is_some() || !take(line) {
                break;
            }
            end += i + 1;
        }
        if end == 0 {
            return None;
        }
        self.scanned = 0;
        Some(self.split(end))
    }

    /// The first `n` buffered bytes. All of them (a read that was one
    /// answer or one command) leave as the buffer itself: splitting a
    /// buffer not yet shared would allocate to share it.
    fn split(&mut self, n: usize) -> Bytes {
        if n == self.buf.len() {
            self.adopted = false;
            std::mem::take(&mut self.buf).freeze()
        } else {
            self.buf.split_to(n).freeze()
        }
    }

    /// Returns the next frame, `Ok(None)` when more input is needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.state {
                State::Literal { remaining } | State::Discard { remaining } => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(self.buf.len() as u64) as usize;
                    let bytes = self.split(n);
                    let left = remaining - n as u64;
                    let last = left == 0;
                    let discarding = matches!(self.state, State::Discard { .. });
                    self.state = match (last, discarding) {
                        (true, _) => State::Line { start: false },
                        (false, true) => State::Discard { remaining: left },
                        (false, false) => State::Literal { remaining: left },
                    };
                    if !discarding {
                        return Ok(Some(Frame::LiteralData { bytes, last }));
                    }
                }
                State::DiscardLine => match self.find_newline() {
                    Some(end) => {
                        let _ = self.buf.split_to(end + 1);
                        self.state = State::Line { start: true };
                    }
                    None => {
                        self.buf.clear();
                        self.scanned = 0;
                        return Ok(None);
                    }
                },
                State::Line { start } => {
                    let Some(end) = self.find_newline() else {
                        if self.buf.len() > self.max_line {
                            self.state = State::DiscardLine;
                            return Err(FrameError::LineTooLong(self.max_line));
                        }
                        return Ok(None);
                    };
                    if end + 1 > self.max_line {
                        let _ = self.buf.split_to(end + 1);
                        self.state = State::Line { start: true };
                        return Err(FrameError::LineTooLong(self.max_line));
                    }
                    let mut bytes = self.split(end + 1);
                    if self.peer == Peer::Client && !bytes.ends_with(b"\r\n") {
                        // A bare LF ends a client's line for Ferry as for the
                        // stores; made CRLF here so that every later step
                        // (and the store) reads the line as Ferry framed it.
                        bytes = crlf(&bytes);
                    }
                    // Most lines announce nothing; only those that do are
                    // checked for being free text.
                    let literal = announcement(&bytes).filter(|_| {
                        !(self.peer == Peer::Server && start && is_text_response(&bytes))
                    });
                    self.state = match literal {
                        Some(a) if a.len > 0 => State::Literal { remaining: a.len },
                        Some(_) => State::Line { start: false },
                        None => State::Line { start: true },
                    };
                    return Ok(Some(Frame::Line {
                        bytes,
                        start,
                        literal,
                    }));
                }
            }
        }
    }

    fn find_newline(&mut self) -> Option<usize> {
        match memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            Some(i) => {
                let end = self.scanned + i;
                self.scanned = 0;
                Some(end)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }
}

/// `line` (ending in a bare LF) ending in CRLF.
fn crlf(line: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(line.len() + 1);
    out.extend_from_slice(&line[..line.len() - 1]);
    out.extend_from_slice(b"\r\n");
    out.into()
}

/// Parses a literal announcement at the end of `line` (`... {123}\r\n`, `{123+}`).
pub fn announcement(line: &[u8]) -> Option<Announcement> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|b| *b == b'{')?;
    let mut digits = &inner[open + 1..];
    let sync = match digits
        .strip_suffix(b"+")
        .or_else(|| digits.strip_suffix(b"-"))
    {
        Some(d) => {
            digits = d;
            false
        }
        None => true,
    };
    // RFC 9051 number64; more than 19 digits cannot be a real size.
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(Announcement { len, sync })
}

/// A line's first two words: its tag (`*`, `+` or a command's tag) and the
/// word after it (a status, a response name or a message number). Both end
/// at a space or the line's end, so a long line is not scanned.
pub fn head(line: &[u8]) -> (&[u8], &[u8]) {
    let tag = first_word(line);
    let rest = match line.get(tag.len()) {
        Some(b' ') => &line[tag.len() + 1..],
        _ => &[],
    };
    (tag, first_word(rest))
}

/// `s` up to its first space or line end.
pub fn first_word(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(s.len());
    &s[..end]
}

/// A server line whose remainder is free text: `+ …`, `* OK|NO|BAD|BYE|PREAUTH …`,
/// `tag OK|NO|BAD …`.
pub fn is_text_response(line: &[u8]) -> bool {
    let (tag, word) = head(line);
    tag.starts_with(b"+") || is_status(tag, word)
}

/// `tag word` starts a status response (RFC 9051 resp-cond-*).
pub fn is_status(tag: &[u8], word: &[u8]) -> bool {
    let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
    is(b"OK") || is(b"NO") || is(b"BAD") || (tag == b"*" && (is(b"BYE") || is(b"PREAUTH")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_responses_are_told_by_their_second_word() {
        for (line, text) in [
            (&b"+ idling\r\n"[..], true),
            (b"* OK [ALERT] {5}\r\n", true),
            (b"* ok\r\n", true),
            (b"* BYE bye {3}\r\n", true),
            (b"* PREAUTH hi\r\n", true),
            (b"a1 NO [TRYCREATE] no {2}\r\n", true),
            (b"a1 bad\n", true),
            (b"* 1 FETCH (BODY[] {3}\r\n", false),
            (b"a1 BYE x\r\n", false),
            (b"a1 PREAUTH x\r\n", false),
            (b"* OKAY {1}\r\n", false),
            (b"*  OK\r\n", false),
            (b"*\r\n", false),
            (b"* PREAUTHS\r\n", false),
        ] {
            assert_eq!(
                is_text_response(line),
                text,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn runs_of_accepted_lines_leave_in_one_piece() {
        let untagged = |l: &[u8]| l.starts_with(b"* ");
        let mut f = Framer::new(Peer::Server, 40);
        f.push(
            b"* 1 FETCH (FLAGS ())\r\n* 2 FETCH (FLAGS ())\r\n* 3 FETCH (BODY[] {3}\r\nabc)\r\n",
        );
        let run = f.take_lines(untagged).unwrap();
        assert_eq!(
            &run[..],
            b"* 1 FETCH (FLAGS ())\r\n* 2 FETCH (FLAGS ())\r\n"
        );
        // A line announcing a literal is framed as usual, and inside the
        // message no run is taken.
        assert!(f.take_lines(untagged).is_none());
        let Some(Frame::Line {
            literal: Some(_), ..
        }) = f.next_frame().unwrap()
        else {
            panic!("the literal's line");
        };
        assert!(f.take_lines(untagged).is_none());
        assert!(matches!(
            f.next_frame().unwrap(),
            Some(Frame::LiteralData { last: true, .. })
        ));
        assert!(f.take_lines(untagged).is_none());
        assert!(matches!(
            f.next_frame().unwrap(),
            Some(Frame::Line { start: false, .. })
        ));
        // A refused line ends the run; a partial line waits for its end.
        f.push(b"* 4 EXISTS\r\na1 OK done\r\n* 5 EXI");
        assert_eq!(&f.take_lines(untagged).unwrap()[..], b"* 4 EXISTS\r\n");
        assert!(f.take_lines(untagged).is_none());
        assert!(matches!(
            f.next_frame().unwrap(),
            Some(Frame::Line { start: true, .. })
        ));
        assert!(f.take_lines(untagged).is_none());
        f.push(b"STS\r\n");
        assert_eq!(&f.take_lines(untagged).unwrap()[..], b"* 5 EXISTS\r\n");
        // An over-long line is left for next_frame to refuse.
        f.push(b"* 6 FETCH (FLAGS (\\Seen \\Answered \\Flagged))\r\n");
        assert!(f.take_lines(untagged).is_none());
        assert_eq!(f.next_frame(), Err(FrameError::LineTooLong(40)));
        assert_eq!(f.buffered(), 0);
    }

    fn frames(peer: Peer, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new(peer, 1024);
        let mut out = vec![];
        for c in chunks {
            f.push(c);
            while let Some(fr) = f.next_frame().unwrap() {
                out.push(fr);
            }
        }
        out
    }

    fn line(s: &[u8], start: bool, literal: Option<(u64, bool)>) -> Frame {
        Frame::Line {
            bytes: Bytes::copy_from_slice(s),
            start,
            literal: literal.map(|(len, sync)| Announcement { len, sync }),
        }
    }

    #[test]
    fn lines_and_literals_in_any_chunking() {
        let input = b"a1 LOGIN {5}\r\nalice {3+}\r\npw!\r\na2 NOOP\r\n";
        let whole = frames(Peer::Client, &[input]);
        for split in 1..input.len() {
            let (a, b) = input.split_at(split);
            let got = frames(Peer::Client, &[a, b]);
            let joined: Vec<u8> = got
                .iter()
                .flat_map(|f| match f {
                    Frame::Line { bytes, .. } | Frame::LiteralData { bytes, .. } => bytes.to_vec(),
                })
                .collect();
            assert_eq!(joined, input, "split at {split}");
        }
        assert_eq!(
            whole,
            vec![
                line(b"a1 LOGIN {5}\r\n", true, Some((5, true))),
                Frame::LiteralData {
                    bytes: Bytes::from_static(b"alice"),
                    last: true
                },
                line(b" {3+}\r\n", false, Some((3, false))),
                Frame::LiteralData {
                    bytes: Bytes::from_static(b"pw!"),
                    last: true
                },
                line(b"\r\n", false, None),
                line(b"a2 NOOP\r\n", true, None),
            ]
        );
    }

    /// Frames of an adopted chunk are slices of it; a partial line left at
    /// the end of a burst is copied out, so a quiet session holds no block.
    #[test]
    fn an_adopted_chunk_is_framed_without_a_copy_and_its_leftover_is_copied_out() {
        let mut block = BytesMut::with_capacity(64 * 1024);
        block.extend_from_slice(b"* 1 FETCH (BODY[] {5}\r\nhello)\r\na1 OK done\r\na2 O");
        let range = block.as_ptr() as usize..block.as_ptr() as usize + block.capacity();
        let chunk = block.split();
        let mut f = Framer::new(Peer::Server, 1000);
        f.push_chunk(chunk);
        let mut frames = Vec::new();
        while let Some(frame) = f.next_frame().unwrap() {
            frames.push(frame);
        }
        assert_eq!(frames.len(), 4, "{frames:?}");
        for frame in &frames {
            let (Frame::Line { bytes, .. } | Frame::LiteralData { bytes, .. }) = frame;
            assert!(
                range.contains(&(bytes.as_ptr() as usize)),
                "copied: {bytes:?}"
            );
        }
        // The partial line stays, but no longer in the shared block.
        f.shrink();
        assert_eq!(&f.buf[..], b"a2 O");
        assert!(!range.contains(&(f.buf.as_ptr() as usize)));
        f.push_chunk(BytesMut::from(&b"K\r\n"[..]));
        assert_eq!(
            f.next_frame().unwrap(),
            Some(Frame::Line {
                bytes: Bytes::from_static(b"a2 OK\r\n"),
                start: true,
                literal: None
            })
        );
    }

    /// A client line ending in a bare LF leaves as CRLF: a store must never
    /// read a literal announcement differently from Ferry (found by fuzzing:
    /// `{4}` + LF became `{+}`, and the literal's bytes reached OLD as a
    /// command Ferry never checked).
    #[test]
    fn client_lines_ending_in_a_bare_lf_become_crlf() {
        let got = frames(Peer::Client, &[b"d SEARCH TEXT {4}\nb SE\nc NOOP\n"]);
        assert_eq!(
            got,
            vec![
                line(b"d SEARCH TEXT {4}\r\n", true, Some((4, true))),
                Frame::LiteralData {
                    bytes: Bytes::from_static(b"b SE"),
                    last: true
                },
                line(b"\r\n", false, None),
                line(b"c NOOP\r\n", true, None),
            ]
        );
        // Store responses are forwarded as they came.
        let got = frames(Peer::Server, &[b"* 1 EXISTS\n"]);
        assert_eq!(got, vec![line(b"* 1 EXISTS\n", true, None)]);
    }

    #[test]
    fn literal_streams_in_chunks() {
        let got = frames(
            Peer::Server,
            &[b"* 1 FETCH (BODY[] {10}\r\n01234", b"56789)\r\n"],
        );
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[1],
            Frame::LiteralData {
                bytes: Bytes::from_static(b"01234"),
                last: false
            }
        );
        assert_eq!(got[3], line(b")\r\n", false, None));
    }

    #[test]
    fn status_text_ending_in_braces_is_not_a_literal() {
        let got = frames(
            Peer::Server,
            &[b"a2 NO Mailbox doesn't exist: nope{5}\r\n* OK [ALERT] see {3}\r\n+ go {2}\r\na3 OK done\r\n"],
        );
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|f| matches!(
            f,
            Frame::Line {
                literal: None,
                start: true,
                ..
            }
        )));
        // The same text from a client is a literal announcement.
        let got = frames(Peer::Client, &[b"a2 NO x{5}\r\n"]);
        assert_eq!(got, vec![line(b"a2 NO x{5}\r\n", true, Some((5, true)))]);
    }

    #[test]
    fn zero_length_literal_and_literal8() {
        let got = frames(Peer::Server, &[b"* 1 FETCH (BINARY[] ~{0}\r\n)\r\n"]);
        assert_eq!(
            got[0],
            line(b"* 1 FETCH (BINARY[] ~{0}\r\n", true, Some((0, true)))
        );
        assert_eq!(got[1], line(b")\r\n", false, None));
    }

    #[test]
    fn over_long_line_is_an_error_then_recovers() {
        let mut f = Framer::new(Peer::Client, 16);
        f.push(b"a1 NOOP aaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(f.next_frame(), Err(FrameError::LineTooLong(16)));
        f.push(b"aaaa\r\na2 NOOP\r\n");
        assert_eq!(
            f.next_frame().unwrap(),
            Some(line(b"a2 NOOP\r\n", true, None))
        );
    }

    /// Pushes `input` and returns the announcement of the line it starts with.
    fn announced(f: &mut Framer, input: &[u8]) -> Announcement {
        f.push(input);
        match f.next_frame().unwrap() {
            Some(Frame::Line {
                literal: Some(a), ..
            }) => a,
            other => panic!("no literal announced: {other:?}"),
        }
    }

    #[test]
    fn refused_literals() {
        let mut f = Framer::new(Peer::Client, 1024);
        let a = announced(&mut f, b"a1 APPEND Old/x {3}\r\n");
        f.refuse_literal(a);
        f.push(b"a2 NOOP\r\n");
        assert_eq!(
            f.next_frame().unwrap(),
            Some(line(b"a2 NOOP\r\n", true, None))
        );

        let a = announced(&mut f, b"a3 APPEND Old/x {3+}\r\nabc\r\n");
        f.refuse_literal(a);
        assert_eq!(f.next_frame().unwrap(), Some(line(b"\r\n", false, None)));
    }

    #[test]
    fn announcements() {
        assert_eq!(
            announcement(b"x {12}\r\n"),
            Some(Announcement {
                len: 12,
                sync: true
            })
        );
        assert_eq!(
            announcement(b"x {12+}\r\n"),
            Some(Announcement {
                len: 12,
                sync: false
            })
        );
        assert_eq!(
            announcement(b"x {4294967295}\r\n"),
            Some(Announcement {
                len: 4294967295,
                sync: true
            })
        );
        for bad in [
            &b"x {}\r\n"[..],
            b"x {1a}\r\n",
            b"x 12}\r\n",
            b"x {99999999999999999999}\r\n",
        ] {
            assert_eq!(announcement(bad), None);
        }
    }
}
