//! Per-command metrics: which command, which store(s), the result, how long.

use bytes::Bytes;

use std::time::Instant;

use super::{Report, Session, reply};

/// The client command being timed for `ferry_commands_total` and latency.
pub(super) struct Timing {
    pub(super) tag: Bytes,
    pub(super) name: &'static str,
    /// Stores that received bytes for it (bit 0 OLD, bit 1 NEW).
    pub(super) stores: u8,
    pub(super) started: Instant,
}

impl Timing {
    /// Timing for the command starting with `line`; its tag is a slice of
    /// `line`, not a copy.
    pub(super) fn new(line: &Bytes, now: Instant) -> Self {
        Timing {
            tag: line.slice(..reply::tag_of(line).len()),
            name: command_name(line),
            stores: 0,
            started: now,
        }
    }
}

/// True when `bytes` is the tagged response to `tag`.
pub(super) fn is_tagged_by(bytes: &[u8], tag: &[u8]) -> bool {
    bytes.len() > tag.len() && bytes.starts_with(tag) && bytes[tag.len()] == b' '
}

/// The report of a command finished at `now` with the tagged response `tagged`.
pub(super) fn record(t: Timing, tagged: &[u8], now: Instant) -> Report {
    let word = tagged[t.tag.len() + 1..]
        .split(|b| *b == b' ' || *b == b'\r')
        .next()
        .unwrap_or_default();
    let result = if word.eq_ignore_ascii_case(b"OK") {
        "ok"
    } else if word.eq_ignore_ascii_case(b"NO") {
        "no"
    } else {
        "bad"
    };
    let store = match t.stores {
        0 => "ferry",
        1 => "old",
        2 => "new",
        _ => "both",
    };
    Report::Command {
        name: t.name,
        store,
        result,
        took: now.saturating_duration_since(t.started),
    }
}

/// IMAP command names as metric labels (a closed set; anything else is
/// OTHER), sorted for a binary search.
pub(super) const COMMANDS: [&str; 36] = [
    "APPEND",
    "AUTHENTICATE",
    "CAPABILITY",
    "CHECK",
    "CLOSE",
    "COMPRESS",
    "COPY",
    "CREATE",
    "DELETE",
    "ENABLE",
    "EXAMINE",
    "EXPUNGE",
    "FETCH",
    "GETMETADATA",
    "GETQUOTA",
    "GETQUOTAROOT",
    "ID",
    "IDLE",
    "LIST",
    "LOGIN",
    "LOGOUT",
    "LSUB",
    "MOVE",
    "NAMESPACE",
    "NOOP",
    "RENAME",
    "SEARCH",
    "SELECT",
    "SORT",
    "STARTTLS",
    "STATUS",
    "STORE",
    "SUBSCRIBE",
    "THREAD",
    "UNSELECT",
    "UNSUBSCRIBE",
];
pub(super) const UID_COMMANDS: [&str; 8] = [
    "UID COPY",
    "UID EXPUNGE",
    "UID FETCH",
    "UID MOVE",
    "UID SEARCH",
    "UID SORT",
    "UID STORE",
    "UID THREAD",
];

/// The label for the command on `line` (`tag NAME …`).
pub(super) fn command_name(line: &[u8]) -> &'static str {
    let mut words = line
        .split(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .skip(1)
        .filter(|w| !w.is_empty());
    let Some(first) = words.next() else {
        return "OTHER";
    };
    let mut upper = [0u8; 16];
    if first.eq_ignore_ascii_case(b"UID") {
        let second = upper_case(words.next().unwrap_or_default(), &mut upper);
        return UID_COMMANDS
            .binary_search_by(|c| c.as_bytes()[4..].cmp(second))
            .map_or("OTHER", |i| UID_COMMANDS[i]);
    }
    let first = upper_case(first, &mut upper);
    COMMANDS
        .binary_search_by(|c| c.as_bytes().cmp(first))
        .map_or("OTHER", |i| COMMANDS[i])
}

/// `word` in upper case, in `buf`; empty (no name) when it is longer.
fn upper_case<'b>(word: &[u8], buf: &'b mut [u8; 16]) -> &'b [u8] {
    let Some(out) = buf.get_mut(..word.len()) else {
        return &[];
    };
    out.copy_from_slice(word);
    out.make_ascii_uppercase();
    out
}

impl Session {
    /// Starts timing the client command `raw`; returns its tag (a slice of
    /// `raw`, not a copy).
    pub(super) fn time_command(&mut self, raw: &Bytes) -> Bytes {
        let timing = Timing::new(raw, self.clock.now);
        let tag = timing.tag.clone();
        self.timing = Some(timing);
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::{COMMANDS, UID_COMMANDS, command_name};

    #[test]
    fn label_lists_are_sorted_for_the_search() {
        assert!(COMMANDS.windows(2).all(|w| w[0] < w[1]));
        assert!(UID_COMMANDS.windows(2).all(|w| w[0] < w[1]));
        assert!(UID_COMMANDS.iter().all(|c| c.starts_with("UID ")));
    }

    #[test]
    fn command_names_are_labels_from_the_closed_set() {
        for (line, name) in [
            (&b"a1 fetch 1:* (FLAGS)\r\n"[..], "FETCH"),
            (b"a1 Noop\r\n", "NOOP"),
            (b"a1 NOOP", "NOOP"),
            (b"x GetQuotaRoot INBOX\r\n", "GETQUOTAROOT"),
            (b"a1 uid fetch 1 BODY[]\r\n", "UID FETCH"),
            (b"a1 UID Expunge 1:3\r\n", "UID EXPUNGE"),
            (b"a1 UID NOOP\r\n", "OTHER"),
            (b"a1 UID\r\n", "OTHER"),
            (b"a1 XYZZY\r\n", "OTHER"),
            (b"a1 FETCHFETCHFETCHFETCH 1\r\n", "OTHER"),
            (b"a1 UID FETCHFETCHFETCHFETCH 1\r\n", "OTHER"),
            (b"a1\r\n", "OTHER"),
            (b"", "OTHER"),
        ] {
            assert_eq!(
                command_name(line),
                name,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
