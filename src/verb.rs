//! What a command is, told from its first line without decoding it: the one
//! classifier behind metric labels, routing by name in the merged phase, and
//! what a pass-through session keeps from its store.

/// IMAP command names as labels (a closed set; anything else is OTHER),
/// sorted (the tests check the lists have no duplicates that way).
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
        let (_tag, rest) = word(line);
        let (first, rest) = word(rest);
        let Some(first) = packed_upper(first) else {
            return Verb::OTHER;
        };
        // Names are compared as integers: a command is told in a few dozen
        // instructions, on every command of every session.
        if first == UID {
            let second = packed_upper(word(rest).0).unwrap_or_default();
            return find(&UID_PACKED, &UID_COMMANDS, second);
        }
        find(&PACKED, &COMMANDS, first)
    }

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

/// The first word of `line` (after any separators) and what follows it.
fn word(line: &[u8]) -> (&[u8], &[u8]) {
    let sep = |b: &u8| matches!(b, b' ' | b'\r' | b'\n');
    let start = line.iter().position(|b| !sep(b)).unwrap_or(line.len());
    let line = &line[start..];
    let end = line.iter().position(sep).unwrap_or(line.len());
    line.split_at(end)
}

/// The longest word a name is looked up for (the names are shorter).
const MAX_NAME: usize = 15;

/// A name of up to 15 bytes as one integer: its bytes, zero-padded, and its
/// length in the last byte (so that `NOOP` and `NOOP\0` differ).
const fn pack(name: &[u8], from: usize) -> u128 {
    let mut b = [0u8; 16];
    let mut i = from;
    while i < name.len() {
        b[i - from] = name[i];
        i += 1;
    }
    b[15] = (name.len() - from) as u8;
    u128::from_le_bytes(b)
}

/// `word` in upper case, packed; `None` when it is empty or longer than
/// any name.
fn packed_upper(word: &[u8]) -> Option<u128> {
    if word.is_empty() || word.len() > MAX_NAME {
        return None;
    }
    let mut b = [0u8; 16];
    b[..word.len()].copy_from_slice(word);
    b.make_ascii_uppercase();
    b[15] = word.len() as u8;
    Some(u128::from_le_bytes(b))
}

const UID: u128 = pack(b"UID", 0);

const fn pack_all<const N: usize>(names: &[&str; N], from: usize) -> [u128; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = pack(names[i].as_bytes(), from);
        i += 1;
    }
    out
}

static PACKED: [u128; COMMANDS.len()] = pack_all(&COMMANDS, 0);
/// The UID commands' second words.
static UID_PACKED: [u128; UID_COMMANDS.len()] = pack_all(&UID_COMMANDS, 4);

fn find(packed: &[u128], names: &[&'static str], word: u128) -> Verb {
    packed
        .iter()
        .position(|p| *p == word)
        .map_or(Verb::OTHER, |i| Verb(names[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_lists_are_sorted_unique_and_short_enough_to_pack() {
        assert!(COMMANDS.windows(2).all(|w| w[0] < w[1]));
        assert!(UID_COMMANDS.windows(2).all(|w| w[0] < w[1]));
        assert!(UID_COMMANDS.iter().all(|c| c.starts_with("UID ")));
        assert!(COMMANDS.iter().all(|c| c.len() <= MAX_NAME));
        assert!(UID_COMMANDS.iter().all(|c| c.len() - 4 <= MAX_NAME));
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
            (b"a1 NOOP\0\r\n", "OTHER"),
            (b"a1 uid\0 FETCH 1\r\n", "OTHER"),
            (b"a1  uid   copy 1 x\r\n", "UID COPY"),
            (b"a1 UNSUBSCRIBE x\r\n", "UNSUBSCRIBE"),
            (b"a1 AUTHENTICATE PLAIN\r\n", "AUTHENTICATE"),
            (b"a1\r\n", "OTHER"),
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
