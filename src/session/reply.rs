//! Responses Ferry writes itself, built from imap-types values.

use bytes::Bytes;
use imap_codec::{
    ResponseCodec,
    encode::Encoder,
    imap_types::{
        core::Tag,
        response::{Code, CodeOther, Response, Status},
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

/// `* CAPABILITY …` or the code form `[CAPABILITY …]` is built by callers from this.
pub fn capability_line(caps: &[String]) -> Bytes {
    Bytes::from(format!("* CAPABILITY {}\r\n", caps.join(" ")))
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
}
