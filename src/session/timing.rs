//! Per-command metrics: which command, which store(s), the result, how long.

use bytes::Bytes;

use std::time::Instant;

use super::{Report, Shared, reply};
use crate::verb::Verb;

/// A command's tag, kept inline: a slice of the client's bytes would hold
/// a worker's read block for as long as the command runs.
pub(super) type Tag = smallvec::SmallVec<[u8; 24]>;

/// The client command being timed for `ferry_commands_total` and latency.
pub(super) struct Timing {
    pub(super) tag: Tag,
    pub(super) verb: Verb,
    /// Stores that received bytes for it (bit 0 OLD, bit 1 NEW).
    pub(super) stores: u8,
    pub(super) started: Instant,
}

impl Timing {
    /// Timing for the command starting with `line`, whose verb the caller
    /// has told already.
    pub(super) fn new(line: &[u8], verb: Verb, now: Instant) -> Self {
        Timing {
            tag: Tag::from_slice(reply::tag_of(line)),
            verb,
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
        name: t.verb.label(),
        store,
        result,
        took: now.saturating_duration_since(t.started),
    }
}

impl Shared {
    /// Starts timing the client command `raw`; returns its tag (a slice of
    /// `raw`, not a copy).
    pub(super) fn time_command(&mut self, raw: &Bytes, verb: Verb) -> Bytes {
        self.timing = Some(Timing::new(raw, verb, self.clock.now));
        raw.slice(..reply::tag_of(raw).len())
    }
}
