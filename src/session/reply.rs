//! The lines Ferry writes itself, to the client and to the stores: built from
//! imap-types values and encoded by imap-codec, or, for the few whose
//! content imap-types cannot hold (capability names as the store spelled
//! them), from parts here, each tested below.

use bytes::Bytes;

use crate::caps::Caps;
use imap_codec::{
    CommandCodec, ResponseCodec,
    encode::Encoder,
    imap_types::{
        IntoStatic,
        command::{Command, CommandBody},
        core::{IString, Literal, NString, QuotedChar, Tag},
        extensions::binary::LiteralOrLiteral8,
        extensions::enable::CapabilityEnable,
        extensions::namespace::Namespace,
        fetch::MessageDataItem,
        flag::FlagNameAttribute,
        flag::{Flag, FlagFetch},
        mailbox::Mailbox,
        response::{Code, CodeOther, Data, Response, Status},
    },
};

/// RFC 5530 response codes that imap-types has no variant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc5530 {
    AuthenticationFailed,
    Unavailable,
    PrivacyRequired,
    NoPerm,
    Cannot,
    NonExistent,
    ClientBug,
    ServerBug,
}

impl Rfc5530 {
    fn atom(self) -> &'static [u8] {
        match self {
            Rfc5530::AuthenticationFailed => b"AUTHENTICATIONFAILED",
            Rfc5530::Unavailable => b"UNAVAILABLE",
            Rfc5530::PrivacyRequired => b"PRIVACYREQUIRED",
            Rfc5530::NoPerm => b"NOPERM",
            Rfc5530::Cannot => b"CANNOT",
            Rfc5530::NonExistent => b"NONEXISTENT",
            Rfc5530::ClientBug => b"CLIENTBUG",
            Rfc5530::ServerBug => b"SERVERBUG",
        }
    }

    pub fn code(self) -> Code<'static> {
        Code::Other(CodeOther::unvalidated(self.atom()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ok,
    No,
    Bad,
}

pub fn encode(response: &Response<'_>) -> Bytes {
    Bytes::from(ResponseCodec::new().encode(response).dump())
}

/// `tag OK|NO|BAD [code] text`. A tag that is not a valid IMAP tag (garbage input)
/// gets an untagged answer instead.
pub fn status(tag: &[u8], kind: Kind, code: Option<Code<'_>>, text: &str) -> Bytes {
    let tag = Tag::try_from(tag).ok();
    let status = match kind {
        Kind::Ok => Status::ok(tag, code, text),
        Kind::No => Status::no(tag, code, text),
        Kind::Bad => Status::bad(tag, code, text),
    };
    // Invariant: Ferry's texts are non-empty ASCII without CR/LF or a leading '['.
    encode(&Response::Status(status.expect("valid status text")))
}

pub fn ok(tag: &[u8], text: &str) -> Bytes {
    status(tag, Kind::Ok, None, text)
}

pub fn no(tag: &[u8], code: Rfc5530, text: &str) -> Bytes {
    status(tag, Kind::No, Some(code.code()), text)
}

pub fn no_code(tag: &[u8], code: Code<'_>, text: &str) -> Bytes {
    status(tag, Kind::No, Some(code), text)
}

pub fn bad(tag: &[u8], text: &str) -> Bytes {
    status(tag, Kind::Bad, None, text)
}

pub fn bye(text: &str) -> Bytes {
    // Invariant: as for `status`.
    encode(&Response::Status(
        Status::bye(None, text).expect("valid bye text"),
    ))
}

/// `tag NO [BADURL url] text` (RFC 4469); a URL that cannot stand in the
/// code (a `]`, a control byte) is left out of it.
pub fn bad_url(tag: &[u8], url: &[u8], text: &str) -> Bytes {
    let printable = url.iter().all(|b| (0x21..0x7f).contains(b) && *b != b']');
    let mut code = b"BADURL".to_vec();
    if printable && !url.is_empty() {
        code.push(b' ');
        code.extend_from_slice(url);
    }
    status(
        tag,
        Kind::No,
        Some(Code::Other(CodeOther::unvalidated(code))),
        text,
    )
}

/// `* OK [CLOSED]` (RFC 7162 §3.2.11): the selected mailbox was closed.
pub fn closed() -> Bytes {
    status(
        b"*",
        Kind::Ok,
        Some(Code::Closed),
        "Previous mailbox closed",
    )
}

/// `* OK [NOMODSEQ]` (RFC 7162 §3.1.2.2) for an `Old/` folder.
pub fn nomodseq() -> Bytes {
    status(
        b"*",
        Kind::Ok,
        Some(Code::NoModSeq),
        "No mod-sequences in Old/ folders",
    )
}

/// A `* STATUS` line with `HIGHESTMODSEQ 0` added (RFC 7162 §3.1.2.2: a
/// mailbox without mod-sequences); other lines as they are.
pub fn with_zero_modseq(line: Bytes) -> Bytes {
    use imap_codec::{decode::Decoder, imap_types::status::StatusDataItem};
    match ResponseCodec::new().decode(&line) {
        Ok((_, Response::Data(Data::Status { mailbox, items }))) => {
            let mut items = items.into_owned();
            items.push(StatusDataItem::HighestModSeq(0));
            encode(&Response::Data(Data::Status {
                mailbox,
                items: items.into(),
            }))
        }
        _ => line,
    }
}

/// `* STATUS mailbox (HIGHESTMODSEQ 0)`.
pub fn zero_modseq_status(mailbox: Mailbox<'_>) -> Bytes {
    use imap_codec::imap_types::status::StatusDataItem;
    encode(&Response::Data(Data::Status {
        mailbox,
        items: vec![StatusDataItem::HighestModSeq(0)].into(),
    }))
}

/// `ENABLE names…`, or `None` for no names.
pub fn enable(names: &[&str]) -> Option<CommandBody<'static>> {
    let capabilities: Vec<CapabilityEnable<'static>> = names
        .iter()
        .filter_map(|n| CapabilityEnable::try_from(*n).ok())
        .map(IntoStatic::into_static)
        .collect();
    Some(CommandBody::Enable {
        capabilities: capabilities.try_into().ok()?,
    })
}

/// `* ENABLED names…` (RFC 5161): what this ENABLE turned on.
pub fn enabled(names: &[&str]) -> Bytes {
    let capabilities = names
        .iter()
        .filter_map(|n| CapabilityEnable::try_from(*n).ok())
        .map(IntoStatic::into_static)
        .collect();
    encode(&Response::Data(Data::Enabled { capabilities }))
}

/// A command of Ferry's own (`tag` is Ferry's or the client's, already
/// checked), encoded as imap-codec writes it.
pub fn command(tag: &[u8], body: CommandBody<'_>) -> Bytes {
    // Invariant: tags here were decoded from the client or made by ferry_tag().
    let tag = Tag::try_from(tag).expect("valid tag");
    Bytes::from(CommandCodec::new().encode(&Command { tag, body }).dump())
}

/// The APPEND arguments for a message a store described with FETCH (FLAGS
/// INTERNALDATE): its flags (never `\Recent`, which no client may set) and
/// its date, as they go between the mailbox and the literal, e.g.
/// `(\Seen $Label) "01-Feb-2020 10:00:00 +0100" `.
/// `UID STORE set +FLAGS.SILENT (\\Deleted)`: the first half of removing
/// exactly these messages (UIDPLUS' `UID EXPUNGE set` is the second).
pub fn mark_deleted(
    sequence_set: imap_codec::imap_types::sequence::SequenceSet,
) -> CommandBody<'static> {
    CommandBody::Store {
        sequence_set,
        kind: imap_codec::imap_types::flag::StoreType::Add,
        response: imap_codec::imap_types::flag::StoreResponse::Silent,
        flags: vec![Flag::Deleted],
        uid: true,
        modifiers: Vec::new(),
    }
}

pub fn append_args(items: &[MessageDataItem<'_>]) -> Bytes {
    let mut flags: Vec<Flag<'static>> = Vec::new();
    let mut date = None;
    for item in items {
        match item {
            MessageDataItem::Flags(f) => flags.extend(f.iter().filter_map(|f| match f {
                FlagFetch::Flag(f) => Some(f.clone().into_static()),
                FlagFetch::Recent => None,
            })),
            MessageDataItem::InternalDate(d) => date = Some(d.clone()),
            _ => {}
        }
    }
    let head = |flags, date| {
        command(
            b"t",
            CommandBody::Append {
                mailbox: Mailbox::Inbox,
                flags,
                date,
                message: LiteralOrLiteral8::Literal(Literal::unvalidated_non_sync(&b""[..])),
            },
        )
    };
    // The arguments are what a full APPEND has beyond a bare one.
    let full = head(flags, date);
    let bare = head(Vec::new(), None);
    let from = bare.iter().rposition(|b| *b == b'{').unwrap_or(0);
    let to = full.iter().rposition(|b| *b == b'{').unwrap_or(full.len());
    full.slice(from.min(to)..to)
}

/// `tag IDLE`: a renewed IDLE toward the store, under the client's tag as
/// the client sent it (in phases old/new tags are passed on unchecked).
pub fn idle_again(tag: &[u8]) -> Bytes {
    line(&[tag, b" IDLE"])
}

/// `* ID ("name" "Ferry" "version" "…")`
pub fn id() -> Bytes {
    let field = |s: &'static str| IString::try_from(s).expect("static ASCII text");
    let parameters = vec![
        (field("name"), NString(Some(field("Ferry")))),
        (
            field("version"),
            NString(Some(field(env!("CARGO_PKG_VERSION")))),
        ),
    ];
    encode(&Response::Data(Data::Id {
        parameters: Some(parameters),
    }))
}

/// `* NAMESPACE (("" "/")) NIL NIL`: one personal namespace, Ferry's view.
pub fn namespace(delimiter: u8) -> Bytes {
    let personal = Namespace::new(
        IString::try_from("").expect("empty"),
        quoted_char(delimiter),
    );
    encode(&Response::Data(Data::Namespace {
        personal: vec![personal],
        other: vec![],
        shared: vec![],
    }))
}

/// `* LIST (\Noselect) "/" ""`: the delimiter and root (RFC 3501 6.3.8).
pub fn list_root(delimiter: u8) -> Bytes {
    encode(&Response::Data(Data::List {
        items: vec![FlagNameAttribute::Noselect],
        delimiter: quoted_char(delimiter),
        mailbox: Mailbox::try_from("").expect("empty name"),
    }))
}

/// `* LIST (attrs) "/" name`, followed by RFC 5258 extended data written
/// as it is (e.g. `("CHILDINFO" ("SUBSCRIBED"))`), if any.
pub fn list_extended(
    items: Vec<FlagNameAttribute<'_>>,
    delimiter: Option<QuotedChar>,
    mailbox: Mailbox<'_>,
    extended: Option<&[u8]>,
) -> Bytes {
    let line = encode(&Response::Data(Data::List {
        items,
        delimiter,
        mailbox,
    }));
    match extended {
        Some(ext) => {
            let head = &line[..line.len() - 2];
            self::line(&[head, b" ", ext])
        }
        None => line,
    }
}

/// `* STATUS name (items)`, the items as a store wrote them.
pub fn status_items(mailbox: Mailbox<'_>, items: &[u8]) -> Bytes {
    let empty = encode(&Response::Data(Data::Status {
        mailbox,
        items: Vec::new().into(),
    }));
    // imap-codec writes the empty list as `()`: the items go in its place.
    let head = empty.strip_suffix(b"()\r\n").unwrap_or(&empty[..]);
    line(&[head, items])
}

/// `tag CREATE name params`: the name as imap-codec writes it, the
/// parameters (`(USE (\Sent))`) as the client sent them.
pub fn create_with_params(tag: &[u8], mailbox: Mailbox<'_>, params: &[u8]) -> Bytes {
    let plain = command(tag, CommandBody::Create { mailbox });
    line(&[&plain[..plain.len() - 2], b" ", params])
}

fn quoted_char(delimiter: u8) -> Option<QuotedChar> {
    // Invariant: the configured delimiter is a printable ASCII character.
    QuotedChar::try_from(delimiter as char).ok()
}

/// `* CAPABILITY …`
pub fn capability_line(caps: &Caps) -> Bytes {
    line(&[b"* CAPABILITY ", caps.joined().as_bytes()])
}

/// The greeting: `* OK [CAPABILITY …] Ferry ready.`
pub fn greeting(caps: &Caps) -> Bytes {
    line(&[
        b"* OK [CAPABILITY ",
        caps.joined().as_bytes(),
        b"] Ferry ready.",
    ])
}

/// A login's answer: `tag OK [CAPABILITY …] Logged in`.
pub fn logged_in(tag: &[u8], caps: &Caps) -> Bytes {
    line(&[
        tag,
        b" OK [CAPABILITY ",
        caps.joined().as_bytes(),
        b"] Logged in",
    ])
}

/// A store's tagged line under another tag: `tag` and the rest of `message`
/// after the store's tag.
pub fn retag(tag: &[u8], message: &[u8]) -> Bytes {
    let rest = &message[tag_of(message).len()..];
    let mut out = Vec::with_capacity(tag.len() + rest.len());
    out.extend_from_slice(tag);
    out.extend_from_slice(rest);
    Bytes::from(out)
}

/// The end of a line that announces a literal: ` {n}` CRLF (synchronizing)
/// or `{n+}` CRLF.
pub fn literal_announcement(len: u64, sync: bool) -> Bytes {
    let plus: &[u8] = if sync { b"" } else { b"+" };
    line(&[b"{", len.to_string().as_bytes(), plus, b"}"])
}

/// `parts` and CRLF, as one line.
fn line(parts: &[&[u8]]) -> Bytes {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 2);
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// The first token of a command line: its tag, if it has one.
pub fn tag_of(line: &[u8]) -> &[u8] {
    crate::frame::first_word(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(&ok(b"a1", "done")[..], b"a1 OK done\r\n");
        assert_eq!(
            &no(b"a2", Rfc5530::NoPerm, "Old/ folders are read-only")[..],
            b"a2 NO [NOPERM] Old/ folders are read-only\r\n"
        );
        assert_eq!(&bad(b"a{b", "bad")[..], b"* BAD bad\r\n");
        assert_eq!(&bye("bye")[..], b"* BYE bye\r\n");
        assert_eq!(tag_of(b"a1 NOOP\r\n"), b"a1");
    }

    #[test]
    fn lines_of_ferrys_own() {
        assert_eq!(
            &id()[..],
            format!(
                "* ID (\"name\" \"Ferry\" \"version\" \"{}\")\r\n",
                env!("CARGO_PKG_VERSION")
            )
            .as_bytes()
        );
        assert_eq!(
            &namespace(b'/')[..],
            b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"
        );
        assert_eq!(&list_root(b'.')[..], b"* LIST (\\Noselect) \".\" \"\"\r\n");
        assert_eq!(
            &command(b"ferry.1", CommandBody::Logout)[..],
            b"ferry.1 LOGOUT\r\n"
        );
        assert_eq!(&command(b"a", CommandBody::Idle)[..], b"a IDLE\r\n");
        assert_eq!(&idle_again(b"a")[..], b"a IDLE\r\n");
        assert_eq!(
            &retag(b"a7", b"ferry.3 NO [X] y\r\n")[..],
            b"a7 NO [X] y\r\n"
        );
        assert_eq!(&literal_announcement(12, true)[..], b"{12}\r\n");
        assert_eq!(&literal_announcement(0, false)[..], b"{0+}\r\n");
        assert_eq!(&command(b"t", CommandBody::Unselect)[..], b"t UNSELECT\r\n");
    }

    #[test]
    fn extended_list_status_and_create_lines() {
        let delimiter = quoted_char(b'/');
        let name = || Mailbox::try_from("Old/a b").unwrap();
        assert_eq!(
            &list_extended(
                vec![FlagNameAttribute::Noselect],
                delimiter,
                name(),
                Some(b"(\"CHILDINFO\" (\"SUBSCRIBED\"))")
            )[..],
            b"* LIST (\\Noselect) \"/\" \"Old/a b\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"
        );
        assert_eq!(
            &list_extended(vec![], delimiter, Mailbox::Inbox, None)[..],
            b"* LIST () \"/\" INBOX\r\n"
        );
        assert_eq!(
            &status_items(name(), b"(MESSAGES 3 SIZE 1024)")[..],
            b"* STATUS \"Old/a b\" (MESSAGES 3 SIZE 1024)\r\n"
        );
        assert_eq!(
            &create_with_params(b"a1", name(), b"(USE (\\Sent))")[..],
            b"a1 CREATE \"Old/a b\" (USE (\\Sent))\r\n"
        );
    }

    #[test]
    fn capability_lines() {
        let caps = Caps::from_names(["IMAP4rev1", "IDLE"]);
        assert_eq!(
            &capability_line(&caps)[..],
            b"* CAPABILITY IMAP4rev1 IDLE\r\n"
        );
        assert_eq!(
            &greeting(&caps)[..],
            b"* OK [CAPABILITY IMAP4rev1 IDLE] Ferry ready.\r\n"
        );
        assert_eq!(
            &logged_in(b"a1", &caps)[..],
            b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
        );
    }
}
