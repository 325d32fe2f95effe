//! What a command is, told from its first line without decoding it: the one
//! classifier behind metric labels, routing by name in the merged phase, and
//! what a pass-through session keeps from its store.

/// IMAP command names as labels (a closed set; anything else is OTHER),
/// sorted for a binary search.
const COMMANDS: [&str; 37] = [
    "APPEND",
    "AUTHENTICATE",
    "CANCELUPDATE",
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
const UID_COMMANDS: [&str; 8] = [
    "UID COPY",
    "UID EXPUNGE",
    "UID FETCH",
    "UID MOVE",
    "UID SEARCH",
    "UID SORT",
    "UID STORE",
    "UID THREAD",
];

/// A command's name, as its label (`FETCH`, `UID FETCH`, `OTHER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verb(&'static str);

impl Verb {
    pub const OTHER: Verb = Verb("OTHER");

    /// The verb of the command starting with `line` (`tag NAME …`).
    pub fn of(line: &[u8]) -> Verb {
        let mut words = line
            .split(|b| matches!(b, b' ' | b'\r' | b'\n'))
            .skip(1)
            .filter(|w| !w.is_empty());
        let Some(first) = words.next() else {
            return Verb::OTHER;
        };
        let mut upper = [0u8; 16];
        if first.eq_ignore_ascii_case(b"UID") {
            let second = upper_case(words.next().unwrap_or_default(), &mut upper);
            return UID_COMMANDS
                .binary_search_by(|c| c.as_bytes()[4..].cmp(second))
                .map_or(Verb::OTHER, |i| Verb(UID_COMMANDS[i]));
        }
        let first = upper_case(first, &mut upper);
        COMMANDS
            .binary_search_by(|c| c.as_bytes().cmp(first))
            .map_or(Verb::OTHER, |i| Verb(COMMANDS[i]))
    }

    /// The label: a name from the closed set, `UID …`, or `OTHER`.
    pub fn label(self) -> &'static str {
        self.0
    }

    /// Every label there is (for metrics registered at start).
    pub fn labels() -> impl Iterator<Item = &'static str> {
        COMMANDS
            .into_iter()
            .chain(UID_COMMANDS)
            .chain([Verb::OTHER.0])
    }

    /// The name without `UID `: `FETCH` for `UID FETCH`.
    pub fn name(self) -> &'static str {
        self.0.strip_prefix("UID ").unwrap_or(self.0)
    }

    pub fn is_uid(self) -> bool {
        self.0.starts_with("UID ")
    }

    pub fn is(self, name: &str) -> bool {
        self.0 == name
    }

    /// Commands that change the connection itself (TLS, compression, who is
    /// logged in): a proxy in the middle must not pass them on.
    pub fn changes_connection(self) -> bool {
        matches!(self.0, "STARTTLS" | "COMPRESS" | "LOGIN" | "AUTHENTICATE")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_lists_are_sorted_for_the_search() {
        assert!(COMMANDS.windows(2).all(|w| w[0] < w[1]));
        assert!(UID_COMMANDS.windows(2).all(|w| w[0] < w[1]));
        assert!(UID_COMMANDS.iter().all(|c| c.starts_with("UID ")));
    }

    #[test]
    fn verbs_are_labels_from_the_closed_set() {
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
            (b"DONE\r\n", "OTHER"),
            (b"", "OTHER"),
        ] {
            assert_eq!(Verb::of(line).label(), name, "{line:?}");
        }
        assert_eq!(Verb::of(b"a uid store 1 +FLAGS x\r\n").name(), "STORE");
        assert!(Verb::of(b"a uid store 1\r\n").is_uid());
        assert!(Verb::of(b"a1 compress DEFLATE\r\n").changes_connection());
        assert!(Verb::of(b"a1 LOGIN x y\r\n").changes_connection());
        assert!(!Verb::of(b"a1 NOOP\r\n").changes_connection());
    }
}
