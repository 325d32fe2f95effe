//! IMAP extensions in the merged view: which of NEW's Ferry shows, which a
//! client command relies on, and what a client has enabled.
//!
//! A command on an `Old/` folder reaches OLD only when OLD advertised every
//! extension it relies on ([`needs`]); the session answers the rest itself.
//! The scan reads a command's atoms only (never quoted strings or literal
//! data), so it costs one pass over the line and no allocation.

use crate::caps::{Cap, CapSet, Caps};
use crate::verb::Verb;

/// Extensions Ferry carries in the merged view when NEW offers them: each
/// has its meaning on `Old/` folders worked out (answered by OLD when it
/// offers the extension too, by Ferry or refused otherwise). NOTIFY is not
/// among them: its events would have to come from both stores at once.
const CARRIED: &[&str] = &[
    "LITERAL+",
    "IDLE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "SPECIAL-USE",
    "SORT",
    "SORT=DISPLAY",
    "I18NLEVEL=1",
    "ENABLE",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "ESORT",
    "SEARCHRES",
    "WITHIN",
    "CONTEXT=SEARCH",
    "BINARY",
    "MULTIAPPEND",
    "CATENATE",
    "URL-PARTIAL",
    "STATUS=SIZE",
    "SAVEDATE",
    "PREVIEW",
    "PREVIEW=FUZZY",
    "SNIPPET=FUZZY",
    "SEARCH=FUZZY",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "CREATE-SPECIAL-USE",
    "LITERAL-",
];

/// Post-login capabilities in the merged phase: Ferry's own (ID, NAMESPACE,
/// CHILDREN, UTF8=ACCEPT where NEW has ENABLE) and what NEW offers that
/// Ferry carries.
pub fn merged_capabilities(new: &Caps) -> Caps {
    let mut out = vec!["IMAP4rev1", "ID", "NAMESPACE", "CHILDREN"];
    if new.has(Cap::Enable) {
        // Ferry translates names itself: NEW need not know UTF-8 names.
        out.push("UTF8=ACCEPT");
    }
    let mut seen: Vec<String> = Vec::new();
    for name in new.names() {
        let upper = name.to_ascii_uppercase();
        let carried = CARRIED.contains(&upper.as_str()) || upper.starts_with("THREAD=");
        if carried && !seen.contains(&upper) {
            seen.push(upper);
            out.push(name);
        }
    }
    // Ferry's own, toward the client (src/deflate.rs), never NEW's.
    out.push("COMPRESS=DEFLATE");
    Caps::from_names(out)
}

/// What a client enabled with ENABLE (RFC 5161), of what Ferry honours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enabled(CapSet);

impl Enabled {
    /// The extensions ENABLE can turn on through Ferry.
    const ALL: [Cap; 3] = [Cap::Condstore, Cap::Qresync, Cap::Utf8Accept];

    pub fn has(self, cap: Cap) -> bool {
        self.0.has(cap)
    }

    pub fn is_empty(self) -> bool {
        self.0.is_empty()
    }

    /// Turns `cap` on (QRESYNC implies CONDSTORE, RFC 7162 §3.2.3).
    pub fn insert(&mut self, cap: Cap) {
        if cap == Cap::Qresync {
            self.0.insert(Cap::Condstore);
        }
        self.0.insert(cap);
    }

    /// Whether every extension `other` has is on here too.
    pub fn covers(self, other: Enabled) -> bool {
        self.0.covers(other.0)
    }

    /// The enabled extensions `store` offers, to ENABLE on it. UTF8=ACCEPT
    /// is Ferry's own: names go to every store in modified UTF-7.
    pub fn on(self, store: &Caps) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|c| store.has(*c) && *c != Cap::Utf8Accept)
            .map(Cap::name)
            .collect()
    }

    /// The extension an ENABLE argument names, if Ferry honours it here
    /// (`shown`: the capabilities the client was shown).
    pub fn honoured(name: &str, shown: &Caps) -> Option<Cap> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name) && shown.has(*c))
    }
}

/// The extensions a client command relies on: named by its verb (SORT,
/// THREAD, IDLE) or by the atoms of its arguments.
pub type Needs = CapSet;

/// Atoms that name an extension wherever they stand in a command's
/// arguments (upper case).
const ATOMS: [(&[u8], Cap); 24] = [
    (b"MODSEQ", Cap::Condstore),
    (b"CHANGEDSINCE", Cap::Condstore),
    (b"UNCHANGEDSINCE", Cap::Condstore),
    (b"CONDSTORE", Cap::Condstore),
    (b"VANISHED", Cap::Qresync),
    (b"QRESYNC", Cap::Qresync),
    (b"$", Cap::Searchres),
    (b"SAVE", Cap::Searchres),
    (b"OLDER", Cap::Within),
    (b"YOUNGER", Cap::Within),
    (b"CONTEXT", Cap::ContextSearch),
    (b"UPDATE", Cap::ContextSearch),
    (b"PARTIAL", Cap::ContextSearch),
    (b"BINARY", Cap::Binary),
    (b"BINARY.PEEK", Cap::Binary),
    (b"BINARY.SIZE", Cap::Binary),
    (b"PREVIEW", Cap::Preview),
    (b"SNIPPET", Cap::Preview),
    (b"SAVEDATE", Cap::Savedate),
    (b"SAVEDBEFORE", Cap::Savedate),
    (b"SAVEDON", Cap::Savedate),
    (b"SAVEDSINCE", Cap::Savedate),
    (b"FUZZY", Cap::SearchFuzzy),
    (b"CATENATE", Cap::Catenate),
];

/// The extensions the client command `line` (one whole command, literals
/// included) relies on.
pub fn needs(line: &[u8], verb: Verb) -> Needs {
    let mut out = Needs::default();
    match verb.name() {
        "SORT" => out.insert(Cap::Sort),
        "THREAD" => out.insert(Cap::Thread),
        "IDLE" => out.insert(Cap::Idle),
        "CANCELUPDATE" => out.insert(Cap::ContextSearch),
        _ => {}
    }
    let returns = match verb.name() {
        "SEARCH" => Some(Cap::Esearch),
        "SORT" => Some(Cap::Esort),
        _ => None,
    };
    let sort = verb.name() == "SORT";
    let mut literals = 0;
    for_each_atom(line, &mut literals, |atom| {
        if atom.eq_ignore_ascii_case(b"RETURN") {
            if let Some(cap) = returns {
                out.insert(cap);
            }
        } else if sort
            && (atom.eq_ignore_ascii_case(b"DISPLAYFROM")
                || atom.eq_ignore_ascii_case(b"DISPLAYTO"))
        {
            out.insert(Cap::SortDisplay);
        } else if let Some((_, cap)) = ATOMS.iter().find(|(a, _)| atom.eq_ignore_ascii_case(a)) {
            out.insert(*cap);
        } else if atom.contains(&b'$') {
            // `$` within a sequence set (`$,3`) is the saved result too.
            out.insert(Cap::Searchres);
        }
    });
    if verb.name() == "APPEND" && literals > 1 {
        out.insert(Cap::Multiappend);
    }
    out
}

/// One piece of a command as [`tokens`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    Atom(&'a [u8]),
    /// A quoted string's content, escapes as sent.
    Quoted(&'a [u8]),
    /// A literal's data; `binary` for a literal8 (`~{n}`).
    Literal {
        data: &'a [u8],
        binary: bool,
    },
}

/// Calls `f` with every atom, quoted string and literal of `line` and where
/// it starts, the command's tag and name included; parentheses and other
/// punctuation only separate. A broken string or literal ends the scan.
pub fn tokens<'a>(line: &'a [u8], mut f: impl FnMut(usize, Token<'a>)) {
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < line.len() && line[i] != b'"' {
                    i += if line[i] == b'\\' { 2 } else { 1 };
                }
                let Some(content) = line.get(start + 1..i) else {
                    return;
                };
                f(start, Token::Quoted(content));
                i += 1;
            }
            b'{' | b'~' => {
                let binary = line[i] == b'~';
                let at = i;
                let start = i + if binary { 2 } else { 1 };
                let Some(close) = line
                    .get(start..)
                    .and_then(|rest| rest.iter().position(|b| *b == b'}'))
                else {
                    return;
                };
                let digits = &line[start..start + close];
                let digits = digits.strip_suffix(b"+").unwrap_or(digits);
                let digits = digits.strip_suffix(b"-").unwrap_or(digits);
                let len = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<usize>().ok());
                let data_at = start + close + 3;
                match len {
                    Some(len) if line.get(start + close + 1..data_at) == Some(b"\r\n") => {
                        let Some(data) = line.get(data_at..data_at.saturating_add(len)) else {
                            return;
                        };
                        f(at, Token::Literal { data, binary });
                        i = data_at + len;
                    }
                    _ => i = start + close + 1,
                }
            }
            b if is_atom_byte(b) => {
                let start = i;
                while i < line.len() && is_atom_byte(line[i]) {
                    i += 1;
                }
                f(start, Token::Atom(&line[start..i]));
            }
            _ => i += 1,
        }
    }
}

/// Where the atom `word` (any case) first stands in `line`.
pub fn atom_at(line: &[u8], word: &[u8]) -> Option<usize> {
    let mut at = None;
    tokens(line, |i, t| {
        if at.is_none() && matches!(t, Token::Atom(a) if a.eq_ignore_ascii_case(word)) {
            at = Some(i);
        }
    });
    at
}

/// The strings that follow each `URL` atom in `line` (CATENATE's parts).
pub fn urls(line: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut after_url = false;
    tokens(line, |_, t| {
        match t {
            Token::Quoted(q) if after_url => out.push(unescape(q)),
            Token::Literal { data, .. } if after_url => out.push(data.to_vec()),
            Token::Atom(a) if after_url => out.push(a.to_vec()),
            _ => {}
        }
        after_url = matches!(t, Token::Atom(a) if a.eq_ignore_ascii_case(b"URL"));
    });
    out
}

fn unescape(quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(quoted.len());
    let mut escaped = false;
    for &b in quoted {
        if b == b'\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(b);
    }
    out
}

/// Calls `f` with every atom of `line` outside quoted strings and literal
/// data; counts literals (a `~{n}` literal8 counts as BINARY's atom `BINARY`).
fn for_each_atom(line: &[u8], literals: &mut usize, mut f: impl FnMut(&[u8])) {
    tokens(line, |_, t| match t {
        Token::Atom(a) => f(a),
        Token::Literal { binary, .. } => {
            *literals += 1;
            if binary {
                f(b"BINARY");
            }
        }
        Token::Quoted(_) => {}
    });
}

/// Bytes of an atom as this scan reads them: `[`, `]`, `<`, `>` end one so
/// that `BINARY.PEEK[1]` reads as `BINARY.PEEK`.
fn is_atom_byte(b: u8) -> bool {
    b > b' '
        && b < 0x7f
        && !matches!(
            b,
            b'(' | b')' | b'{' | b'}' | b'"' | b'[' | b']' | b'<' | b'>' | b'%' | b'*' | b'\\'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs_of(line: &str) -> Vec<&'static str> {
        let n = needs(line.as_bytes(), Verb::of(line.as_bytes()));
        n.iter().map(Cap::name).collect()
    }

    #[test]
    fn commands_name_the_extensions_they_rely_on() {
        assert_eq!(needs_of("a FETCH 1:* (FLAGS)\r\n"), Vec::<&str>::new());
        assert_eq!(
            needs_of("a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12 VANISHED)\r\n"),
            ["CONDSTORE", "QRESYNC"]
        );
        assert_eq!(
            needs_of("a UID SEARCH RETURN (MIN SAVE) OLDER 3600\r\n"),
            ["ESEARCH", "SEARCHRES", "WITHIN"]
        );
        assert_eq!(
            needs_of("a UID FETCH $ (BINARY.PEEK[1])\r\n"),
            ["SEARCHRES", "BINARY"]
        );
        assert_eq!(needs_of("a FETCH $,3 FLAGS\r\n"), ["SEARCHRES"]);
        assert_eq!(
            needs_of("a SORT RETURN (COUNT) (DISPLAYFROM) UTF-8 ALL\r\n"),
            ["SORT", "SORT=DISPLAY", "ESORT"]
        );
        assert_eq!(needs_of("a THREAD REFERENCES UTF-8 ALL\r\n"), ["THREAD="]);
        assert_eq!(needs_of("a IDLE\r\n"), ["IDLE"]);
        assert_eq!(needs_of("a CANCELUPDATE \"x\"\r\n"), ["CONTEXT=SEARCH"]);
        assert_eq!(
            needs_of("a FETCH 1 (SAVEDATE PREVIEW (LAZY))\r\n"),
            ["SAVEDATE", "PREVIEW"]
        );
        assert_eq!(needs_of("a SELECT x (QRESYNC (1 2))\r\n"), ["QRESYNC"]);
        assert_eq!(
            needs_of("a APPEND x {3+}\r\nabc {2+}\r\nde\r\n"),
            ["MULTIAPPEND"]
        );
        assert_eq!(needs_of("a APPEND x ~{3+}\r\na\0c\r\n"), ["BINARY"]);
    }

    #[test]
    fn quoted_strings_and_literal_data_are_not_read() {
        assert_eq!(
            needs_of("a SEARCH SUBJECT \"MODSEQ $ RETURN\" BODY {6+}\r\nOLDER \r\n"),
            Vec::<&str>::new()
        );
        assert_eq!(
            needs_of("a SEARCH TEXT \"a\\\"MODSEQ\"\r\n"),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn catenate_urls_are_read_whatever_their_form() {
        let line = b"a APPEND x CATENATE (URL \"/INBOX;UIDVALIDITY=1/;UID=2\" TEXT {3+}\r\nURL URL {10+}\r\n/Old;UID=3 url /Work;UID=4)\r\n";
        assert_eq!(
            urls(line),
            [
                b"/INBOX;UIDVALIDITY=1/;UID=2".to_vec(),
                b"/Old;UID=3".to_vec(),
                b"/Work;UID=4".to_vec()
            ]
        );
        assert_eq!(atom_at(line, b"catenate"), Some(11));
        assert_eq!(
            atom_at(b"a APPEND \"CATENATE\" {1+}\r\nx\r\n", b"CATENATE"),
            None
        );
    }

    #[test]
    fn scanning_never_panics_on_broken_input() {
        for line in [
            "a {",
            "a {9",
            "a {9}",
            "a {9}\r\n",
            "a ~",
            "a ~{",
            "a \"",
            "a \"\\",
            "{}",
        ] {
            needs(line.as_bytes(), Verb::OTHER);
        }
    }

    #[test]
    fn merged_capabilities_carry_what_is_worked_out() {
        let new = Caps::from_names([
            "IMAP4rev1",
            "SASL-IR",
            "LITERAL+",
            "ENABLE",
            "CONDSTORE",
            "QRESYNC",
            "NOTIFY",
            "THREAD=REFERENCES",
            "METADATA",
            "ESEARCH",
        ]);
        assert_eq!(
            merged_capabilities(&new).joined(),
            "IMAP4rev1 ID NAMESPACE CHILDREN UTF8=ACCEPT LITERAL+ ENABLE CONDSTORE QRESYNC THREAD=REFERENCES ESEARCH COMPRESS=DEFLATE"
        );
    }

    #[test]
    fn enable_honours_what_was_shown() {
        let shown = Caps::from_names(["ENABLE", "CONDSTORE", "QRESYNC"]);
        assert_eq!(Enabled::honoured("qresync", &shown), Some(Cap::Qresync));
        assert_eq!(Enabled::honoured("UTF8=ACCEPT", &shown), None);
        let with_utf8 = Caps::from_names(["ENABLE", "UTF8=ACCEPT"]);
        let mut u = Enabled::default();
        u.insert(Enabled::honoured("utf8=accept", &with_utf8).unwrap());
        assert!(u.on(&with_utf8).is_empty(), "never enabled on a store");
        let mut e = Enabled::default();
        e.insert(Cap::Qresync);
        assert!(e.has(Cap::Condstore) && e.has(Cap::Qresync));
        let old = Caps::from_names(["ENABLE", "CONDSTORE"]);
        assert_eq!(e.on(&old), ["CONDSTORE"]);
        let mut c = Enabled::default();
        c.insert(Cap::Condstore);
        assert!(e.covers(c) && !c.covers(e));
    }
}
