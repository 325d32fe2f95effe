//! What Ferry reads of the extended LIST (RFC 5258 LIST-EXTENDED, RFC 5819
//! LIST-STATUS, RFC 6154 SPECIAL-USE) and of CREATE with parameters (RFC 4466,
//! RFC 6154 CREATE-SPECIAL-USE), which imap-codec cannot decode: the client's
//! commands, and the stores' `* LIST` lines with extended data and `* STATUS`
//! lines whose items Ferry passes on as they are.
//!
//! Pure and total: any input gives a value or an error, never a panic (the
//! session fuzz targets reach it with arbitrary client and store bytes).

use std::borrow::Cow;

use imap_codec::imap_types::{core::Tag, status::StatusDataItemName};
use thiserror::Error;

/// A client's extended LIST that Ferry refuses with BAD (RFC 5258 §3: an
/// unknown option is BAD, selection and return options alike).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ListExtError {
    #[error("Invalid syntax: expected {0}")]
    Syntax(&'static str),
    #[error("Unknown LIST selection option")]
    UnknownSelection,
    #[error("Unknown LIST return option")]
    UnknownReturn,
    #[error("Unknown STATUS item")]
    UnknownStatus,
    #[error("RECURSIVEMATCH needs the SUBSCRIBED selection option")]
    RecursiveMatchAlone,
    #[error("Mailbox names and patterns are 7-bit text")]
    NotText,
}

/// Selection options (RFC 5258 §3, RFC 6154 §3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    pub subscribed: bool,
    /// No remote mailboxes exist here: accepted and passed on, changes nothing.
    pub remote: bool,
    pub recursive_match: bool,
    pub special_use: bool,
}

/// Return options (RFC 5258 §3, RFC 5819, RFC 6154 §3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Returns {
    pub subscribed: bool,
    pub children: bool,
    pub special_use: bool,
    /// `STATUS (…)`; empty when not asked.
    pub status: Vec<StatusDataItemName>,
}

/// `LIST [(selection)] reference (pattern | (pattern …)) [RETURN (…)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListExtended {
    pub selection: Selection,
    pub reference: Vec<u8>,
    /// At least one; as sent (the reference is not joined yet).
    pub patterns: Vec<Vec<u8>>,
    pub returns: Returns,
}

/// `CREATE mailbox (params …)`: the name Ferry maps, and the parameters it
/// passes on untouched (NEW judges them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateWithParams<'a> {
    pub mailbox: Vec<u8>,
    /// `(USE (\Sent))`, parentheses included, as the client sent it.
    pub params: &'a [u8],
}

/// RFC 3501 status-att and its extensions, by wire name.
const STATUS_ITEMS: [(&str, StatusDataItemName); 9] = [
    ("MESSAGES", StatusDataItemName::Messages),
    ("RECENT", StatusDataItemName::Recent),
    ("UIDNEXT", StatusDataItemName::UidNext),
    ("UIDVALIDITY", StatusDataItemName::UidValidity),
    ("UNSEEN", StatusDataItemName::Unseen),
    ("DELETED", StatusDataItemName::Deleted),
    ("DELETED-STORAGE", StatusDataItemName::DeletedStorage),
    ("SIZE", StatusDataItemName::Size),
    ("HIGHESTMODSEQ", StatusDataItemName::HighestModSeq),
];

/// A status item's wire name.
pub fn status_item_name(item: &StatusDataItemName) -> &'static str {
    STATUS_ITEMS
        .iter()
        .find(|(_, i)| i == item)
        .map_or("MESSAGES", |(n, _)| n)
}

/// ATOM-CHAR: any CHAR except atom-specials.
fn atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b)
}

/// list-char: ATOM-CHAR, list-wildcards, resp-specials.
fn list_char(b: u8) -> bool {
    atom_char(b) || matches!(b, b'%' | b'*' | b']')
}

/// ASTRING-CHAR: ATOM-CHAR, resp-specials.
fn astring_char(b: u8) -> bool {
    atom_char(b) || b == b']'
}

/// A cursor over one command or response line (literals included).
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

type Parsed<T> = Result<T, ListExtError>;

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Parsed<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(ListExtError::Syntax(what))
        }
    }

    fn sp(&mut self) -> Parsed<()> {
        self.expect(b' ', "a space")
    }

    /// The longest run of bytes `keep` accepts (possibly empty).
    fn run(&mut self, keep: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
        &self.b[start..self.at]
    }

    fn word(&mut self, keep: impl Fn(u8) -> bool, what: &'static str) -> Parsed<&'a [u8]> {
        let w = self.run(keep);
        if w.is_empty() {
            Err(ListExtError::Syntax(what))
        } else {
            Ok(w)
        }
    }

    fn keyword(&mut self, k: &[u8], what: &'static str) -> Parsed<()> {
        let w = self.run(atom_char);
        if w.eq_ignore_ascii_case(k) {
            Ok(())
        } else {
            Err(ListExtError::Syntax(what))
        }
    }

    /// The line's end: CRLF and nothing after it.
    fn end(&mut self) -> Parsed<()> {
        if &self.b[self.at..] == b"\r\n" {
            self.at = self.b.len();
            Ok(())
        } else {
            Err(ListExtError::Syntax("the end of the line"))
        }
    }

    fn at_end(&self) -> bool {
        &self.b[self.at..] == b"\r\n"
    }

    /// A quoted string, unescaped.
    fn quoted(&mut self) -> Parsed<Vec<u8>> {
        self.expect(b'"', "a quoted string")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.at += 1;
                        }
                        _ => return Err(ListExtError::Syntax("a quoted string")),
                    }
                }
                Some(b'\r' | b'\n') | None => return Err(ListExtError::Syntax("a quoted string")),
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    /// `{n}` or `{n+}`, CRLF, then n bytes.
    fn literal(&mut self) -> Parsed<&'a [u8]> {
        const WHAT: &str = "a literal";
        self.expect(b'{', WHAT)?;
        let digits = self.word(|b| b.is_ascii_digit(), WHAT)?;
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(ListExtError::Syntax(WHAT))?;
        self.eat(b'+');
        self.expect(b'}', WHAT)?;
        self.expect(b'\r', WHAT)?;
        self.expect(b'\n', WHAT)?;
        let end = self
            .at
            .checked_add(len)
            .filter(|e| *e <= self.b.len())
            .ok_or(ListExtError::Syntax(WHAT))?;
        let data = &self.b[self.at..end];
        self.at = end;
        Ok(data)
    }

    /// A quoted string or a literal, or a bare word of `chars`.
    fn string_or(&mut self, chars: fn(u8) -> bool, what: &'static str) -> Parsed<Cow<'a, [u8]>> {
        match self.peek() {
            Some(b'"') => self.quoted().map(Cow::Owned),
            Some(b'{') => self.literal().map(Cow::Borrowed),
            _ => self.word(chars, what).map(Cow::Borrowed),
        }
    }

    fn astring(&mut self) -> Parsed<Cow<'a, [u8]>> {
        self.string_or(astring_char, "a mailbox name")
    }

    /// A flag-like word: `\Sent` or an atom.
    fn flag(&mut self) -> Parsed<&'a [u8]> {
        let start = self.at;
        self.eat(b'\\');
        self.word(atom_char, "an atom")?;
        Ok(&self.b[start..self.at])
    }

    /// A parenthesised group of atoms, flags, strings, literals and groups,
    /// one space apart (RFC 4466 tagged-ext-val, RFC 5258 extended data),
    /// as its bytes. Nesting is bounded: a line is short, but not its depth.
    fn group(&mut self, depth: usize) -> Parsed<&'a [u8]> {
        const WHAT: &str = "a parenthesised list";
        if depth > 8 {
            return Err(ListExtError::Syntax(WHAT));
        }
        let start = self.at;
        self.expect(b'(', WHAT)?;
        if self.eat(b')') {
            return Ok(&self.b[start..self.at]);
        }
        loop {
            match self.peek() {
                Some(b'(') => {
                    self.group(depth + 1)?;
                }
                Some(b'"') => {
                    self.quoted()?;
                }
                Some(b'{') => {
                    self.literal()?;
                }
                _ => {
                    self.flag()?;
                }
            }
            if self.eat(b')') {
                return Ok(&self.b[start..self.at]);
            }
            self.sp()?;
        }
    }

    /// `tag SP`: a valid tag, as the session answers by it.
    fn tag(&mut self) -> Parsed<()> {
        let tag = self.word(|b| b != b' ' && b != b'\r', "a tag")?;
        Tag::validate(tag).map_err(|_| ListExtError::Syntax("a tag"))?;
        self.sp()
    }
}

/// Mailbox names are modified UTF-7, so 7-bit printable text: anything else
/// (NUL, CR, 8-bit bytes smuggled in a literal) is refused, and what is
/// accepted can always be written back as a quoted string.
fn text(name: Cow<'_, [u8]>) -> Parsed<Vec<u8>> {
    if name.iter().all(|b| (0x20..0x7f).contains(b)) {
        Ok(name.into_owned())
    } else {
        Err(ListExtError::NotText)
    }
}

/// Parses an extended LIST command (a whole assembled command, CRLF
/// included, literals as `{n}` or `{n+}` followed by their bytes).
pub fn parse_list(line: &[u8]) -> Result<ListExtended, ListExtError> {
    let mut r = Reader::new(line);
    r.tag()?;
    r.keyword(b"LIST", "LIST")?;
    r.sp()?;
    let mut selection = Selection::default();
    if r.eat(b'(') {
        if !r.eat(b')') {
            loop {
                let option = r.word(atom_char, "a selection option")?;
                let up = option.to_ascii_uppercase();
                match up.as_slice() {
                    b"SUBSCRIBED" => selection.subscribed = true,
                    b"REMOTE" => selection.remote = true,
                    b"RECURSIVEMATCH" => selection.recursive_match = true,
                    b"SPECIAL-USE" => selection.special_use = true,
                    _ => return Err(ListExtError::UnknownSelection),
                }
                if r.eat(b')') {
                    break;
                }
                r.sp()?;
            }
        }
        r.sp()?;
    }
    // RFC 5258 §3: RECURSIVEMATCH alone (or with independent options only) is BAD.
    if selection.recursive_match && !selection.subscribed {
        return Err(ListExtError::RecursiveMatchAlone);
    }
    let reference = text(r.astring()?)?;
    r.sp()?;
    let mut patterns = Vec::new();
    let pattern = |r: &mut Reader<'_>| r.string_or(list_char, "a pattern").and_then(text);
    if r.eat(b'(') {
        loop {
            patterns.push(pattern(&mut r)?);
            if r.eat(b')') {
                break;
            }
            r.sp()?;
        }
    } else {
        patterns.push(pattern(&mut r)?);
    }
    let mut returns = Returns::default();
    if !r.at_end() {
        r.sp()?;
        r.keyword(b"RETURN", "RETURN")?;
        r.sp()?;
        r.expect(b'(', "return options")?;
        if !r.eat(b')') {
            loop {
                let option = r.word(atom_char, "a return option")?;
                match option.to_ascii_uppercase().as_slice() {
                    b"SUBSCRIBED" => returns.subscribed = true,
                    b"CHILDREN" => returns.children = true,
                    b"SPECIAL-USE" => returns.special_use = true,
                    b"STATUS" => {
                        r.sp()?;
                        status_items(&mut r, &mut returns.status)?;
                    }
                    _ => return Err(ListExtError::UnknownReturn),
                }
                if r.eat(b')') {
                    break;
                }
                r.sp()?;
            }
        }
    }
    r.end()?;
    Ok(ListExtended {
        selection,
        reference,
        patterns,
        returns,
    })
}

/// `(status-att …)`, at least one, added to `items` once each.
fn status_items(r: &mut Reader<'_>, items: &mut Vec<StatusDataItemName>) -> Parsed<()> {
    r.expect(b'(', "STATUS items")?;
    loop {
        let word = r.word(atom_char, "a STATUS item")?;
        let item = STATUS_ITEMS
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(word))
            .map(|(_, i)| i.clone())
            .ok_or(ListExtError::UnknownStatus)?;
        if !items.contains(&item) {
            items.push(item);
        }
        if r.eat(b')') {
            return Ok(());
        }
        r.sp()?;
    }
}

/// Parses `tag CREATE mailbox (params …)`.
pub fn parse_create(line: &[u8]) -> Result<CreateWithParams<'_>, ListExtError> {
    let mut r = Reader::new(line);
    r.tag()?;
    r.keyword(b"CREATE", "CREATE")?;
    r.sp()?;
    let mailbox = text(r.astring()?)?;
    r.sp()?;
    let params = r.group(0)?;
    r.end()?;
    Ok(CreateWithParams { mailbox, params })
}

/// A store's `* LIST` line: how long its RFC 3501 part is (what imap-codec
/// decodes, once CRLF is put back), and its extended data, if any, such as
/// `("CHILDINFO" ("SUBSCRIBED"))`, passed on as it is.
pub fn list_line(msg: &[u8]) -> Option<(usize, Option<&[u8]>)> {
    let mut r = Reader::new(msg);
    r.expect(b'*', "").ok()?;
    r.sp().ok()?;
    r.keyword(b"LIST", "").ok()?;
    r.sp().ok()?;
    r.group(0).ok()?;
    r.sp().ok()?;
    if r.peek() == Some(b'"') {
        r.quoted().ok()?;
    } else {
        r.keyword(b"NIL", "").ok()?;
    }
    r.sp().ok()?;
    r.astring().ok()?;
    let base = r.at;
    if r.at_end() {
        return Some((base, None));
    }
    r.sp().ok()?;
    let ext = r.group(0).ok()?;
    r.end().ok()?;
    Some((base, Some(ext)))
}

/// A store's `* STATUS name (items)` line: the name, and the items as they
/// are (parentheses included).
pub fn status_line(msg: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut r = Reader::new(msg);
    r.expect(b'*', "").ok()?;
    r.sp().ok()?;
    r.keyword(b"STATUS", "").ok()?;
    r.sp().ok()?;
    let name = r.astring().ok()?.into_owned();
    r.sp().ok()?;
    let items = r.group(0).ok()?;
    // Dovecot, among others, may leave a space before CRLF.
    r.eat(b' ');
    r.end().ok()?;
    Some((name, items))
}

/// A pattern as Ferry writes it to a store: bare when it can be, else quoted.
fn write_pattern(out: &mut Vec<u8>, pattern: &[u8]) {
    if !pattern.is_empty() && pattern.iter().all(|b| list_char(*b)) {
        out.extend_from_slice(pattern);
        return;
    }
    out.push(b'"');
    for &b in pattern {
        if matches!(b, b'"' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// `(A B)` of the names whose flag is on.
fn write_list(out: &mut Vec<u8>, names: &[(bool, &str)]) {
    let on: Vec<&str> = names
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    out.extend_from_slice(format!("({})", on.join(" ")).as_bytes());
}

/// An extended LIST to a store, after its tag: `LIST [(selection)] ""
/// pattern|(patterns) [RETURN (…)]` and CRLF, the reference already joined
/// to the patterns (validated text: each can be written). `status`: with
/// the STATUS return option (the store has LIST-STATUS).
pub fn list_command(sel: &Selection, ret: &Returns, status: bool, patterns: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"LIST ".to_vec();
    if *sel != Selection::default() {
        write_list(
            &mut out,
            &[
                (sel.subscribed, "SUBSCRIBED"),
                (sel.remote, "REMOTE"),
                (sel.recursive_match, "RECURSIVEMATCH"),
                (sel.special_use, "SPECIAL-USE"),
            ],
        );
        out.push(b' ');
    }
    out.extend_from_slice(b"\"\" ");
    if let [one] = patterns {
        write_pattern(&mut out, one);
    } else {
        out.push(b'(');
        for (i, p) in patterns.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            write_pattern(&mut out, p);
        }
        out.push(b')');
    }
    let items: Vec<&str> = ret.status.iter().map(status_item_name).collect();
    let status_option = format!("STATUS ({})", items.join(" "));
    let returns = [
        (ret.subscribed, "SUBSCRIBED"),
        (ret.children, "CHILDREN"),
        (ret.special_use, "SPECIAL-USE"),
        (status && !ret.status.is_empty(), status_option.as_str()),
    ];
    if returns.iter().any(|(on, _)| *on) {
        out.extend_from_slice(b" RETURN ");
        write_list(&mut out, &returns);
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatusDataItemName as S;

    fn ok(line: &str) -> ListExtended {
        parse_list(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn err(line: &str) -> ListExtError {
        match parse_list(line.as_bytes()) {
            Ok(l) => panic!("{line}: accepted as {l:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn selection_patterns_and_return_options() {
        let l = ok(
            "a LIST (SUBSCRIBED RECURSIVEMATCH remote) \"\" (\"INBOX\" Old/% {3+}\r\nW*k) \
             RETURN (CHILDREN STATUS (MESSAGES uidnext SIZE) subscribed)\r\n",
        );
        assert_eq!(
            l.selection,
            Selection {
                subscribed: true,
                remote: true,
                recursive_match: true,
                special_use: false
            }
        );
        assert_eq!(l.reference, b"");
        assert_eq!(l.patterns, [&b"INBOX"[..], b"Old/%", b"W*k"]);
        assert!(l.returns.children && l.returns.subscribed && !l.returns.special_use);
        assert_eq!(l.returns.status, [S::Messages, S::UidNext, S::Size]);

        let l = ok("a list \"\" * RETURN (STATUS (UNSEEN) STATUS (UNSEEN HIGHESTMODSEQ))\r\n");
        assert_eq!(l.selection, Selection::default());
        assert_eq!(l.patterns, [b"*"]);
        assert_eq!(l.returns.status, [S::Unseen, S::HighestModSeq]);

        let l = ok("a LIST () {4}\r\nWork \"\" RETURN ()\r\n");
        assert_eq!(
            (l.reference.as_slice(), l.patterns[0].as_slice()),
            (&b"Work"[..], &b""[..])
        );
        assert_eq!(l.returns, Returns::default());
        let l = ok("a LIST (SPECIAL-USE) \"\" \"%\"\r\n");
        assert!(l.selection.special_use);
        let l = ok("a LIST \"\" \"a\\\"b\\\\c\"\r\n");
        assert_eq!(l.patterns, [b"a\"b\\c"]);
    }

    #[test]
    fn unknown_options_and_bad_syntax_are_refused() {
        use ListExtError::*;
        assert_eq!(err("a LIST (FOO) \"\" *\r\n"), UnknownSelection);
        assert_eq!(err("a LIST \"\" * RETURN (FOO)\r\n"), UnknownReturn);
        assert_eq!(
            err("a LIST \"\" * RETURN (STATUS (FOO))\r\n"),
            UnknownStatus
        );
        assert_eq!(
            err("a LIST (RECURSIVEMATCH) \"\" *\r\n"),
            RecursiveMatchAlone
        );
        assert_eq!(
            err("a LIST (SPECIAL-USE RECURSIVEMATCH) \"\" *\r\n"),
            RecursiveMatchAlone
        );
        assert_eq!(parse_list(b"a LIST \"\" {3+}\r\na\x80b\r\n"), Err(NotText));
        for bad in [
            "a LIST (\"SUBSCRIBED\") \"\" *\r\n",
            "a LIST (SUBSCRIBED (x)) \"\" *\r\n",
            "a LIST \"\" ()\r\n",
            "a LIST \"\" ((\"INBOX\"))\r\n",
            "a LIST (SUBSCRIBED) \"\"\r\n",
            "a LIST \"\" * RETURN\r\n",
            "a LIST \"\" * RETURN CHILDREN\r\n",
            "a LIST \"\" * RETURNS (CHILDREN)\r\n",
            "a LIST \"\" * RETURN (CHILDREN) x\r\n",
            "a LIST \"\" * RETURN (STATUS)\r\n",
            "a LIST \"\" * RETURN (STATUS ())\r\n",
            "a LIST \"\" * RETURN (CHILDREN (x))\r\n",
            "a LIST \"\" {9}\r\nab\r\n",
            "a LIST \"\" {99999999999999999999999}\r\nab\r\n",
            "a LIST  \"\" *\r\n",
            "a LIST \"\" *",
            "+ LIST \"\" *\r\n",
            "a LSUB \"\" *\r\n",
            "",
        ] {
            assert!(matches!(err(bad), Syntax(_)), "{bad:?}");
        }
    }

    #[test]
    fn create_keeps_its_parameters_as_sent() {
        let c = parse_create(b"a CREATE \"My Sent\" (USE (\\Sent \\Archive))\r\n").unwrap();
        assert_eq!(c.mailbox, b"My Sent");
        assert_eq!(c.params, b"(USE (\\Sent \\Archive))");
        let c = parse_create(b"a CREATE {3+}\r\nX/y (USE ())\r\n").unwrap();
        assert_eq!(
            (c.mailbox.as_slice(), c.params),
            (&b"X/y"[..], &b"(USE ())"[..])
        );
        for bad in [
            "a CREATE X\r\n",
            "a CREATE X (USE (\\Sent)\r\n",
            "a CREATE X (USE (\\Sent)) y\r\n",
            "a CREATE X ((((((((((((x))))))))))))\r\n",
        ] {
            assert!(parse_create(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_lines_split_where_imap_codec_stops() {
        let line = b"* LIST (\\NonExistent) \"/\" Foo (CHILDINFO (\"SUBSCRIBED\"))\r\n";
        let (base, ext) = list_line(line).unwrap();
        assert_eq!(&line[..base], b"* LIST (\\NonExistent) \"/\" Foo");
        assert_eq!(ext, Some(&b"(CHILDINFO (\"SUBSCRIBED\"))"[..]));
        let line = b"* LIST () NIL {5}\r\na b c\r\n";
        assert_eq!(list_line(line), Some((line.len() - 2, None)));
        assert_eq!(list_line(b"* LIST () \"/\" Foo x\r\n"), None);
        assert_eq!(
            status_line(b"* STATUS \"Old/a b\" (MESSAGES 3 SIZE 10) \r\n"),
            Some((b"Old/a b".to_vec(), &b"(MESSAGES 3 SIZE 10)"[..]))
        );
        assert_eq!(status_line(b"* STATUS INBOX\r\n"), None);
    }

    #[test]
    fn commands_to_a_store_are_written_back() {
        let l = ok("a LIST (SUBSCRIBED) \"\" * RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n");
        let write = |status, patterns: &[&[u8]]| {
            let patterns: Vec<Vec<u8>> = patterns.iter().map(|p| p.to_vec()).collect();
            String::from_utf8(list_command(&l.selection, &l.returns, status, &patterns)).unwrap()
        };
        assert_eq!(
            write(true, &[b"*"]),
            "LIST (SUBSCRIBED) \"\" * RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n"
        );
        assert_eq!(
            write(false, &[b"Old/*", b"a \"b\"", b""]),
            "LIST (SUBSCRIBED) \"\" (Old/* \"a \\\"b\\\"\" \"\") RETURN (CHILDREN)\r\n"
        );
        let plain = ok("a LIST () \"\" INBOX RETURN (STATUS (MESSAGES))\r\n");
        let patterns = [b"INBOX".to_vec()];
        assert_eq!(
            list_command(&plain.selection, &plain.returns, false, &patterns),
            b"LIST \"\" INBOX\r\n"
        );
        // What Ferry writes, it reads back the same.
        let line = [
            b"t ",
            &list_command(&l.selection, &l.returns, true, &patterns)[..],
        ]
        .concat();
        let back = parse_list(&line).unwrap();
        assert_eq!((back.selection, back.returns), (l.selection, l.returns));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic walk over prefixes and byte flips of valid lines.
        let seeds: [&[u8]; 4] = [
            b"a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"x\" {2+}\r\nab) RETURN (STATUS (MESSAGES))\r\n",
            b"a CREATE {3}\r\nabc (USE (\\Sent))\r\n",
            b"* LIST (\\A) \"/\" {3}\r\nabc (X (\"Y\" (Z)))\r\n",
            b"* STATUS {2}\r\nab (MESSAGES 1)\r\n",
        ];
        for seed in seeds {
            for cut in 0..=seed.len() {
                let mut v = seed[..cut].to_vec();
                for flip in 0..v.len() {
                    let keep = v[flip];
                    for b in [0u8, b'{', b'(', b')', b'"', b'\\', b'9', b'\r', 0xff] {
                        v[flip] = b;
                        let _ = parse_list(&v);
                        let _ = parse_create(&v);
                        let _ = list_line(&v);
                        let _ = status_line(&v);
                    }
                    v[flip] = keep;
                }
            }
        }
    }
}
