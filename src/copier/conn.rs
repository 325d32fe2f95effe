//! A store connection for the copier: commands under Ferry's own tags, their
//! answers assembled (small ones only), and one message body streamed from
//! OLD's FETCH into NEW's APPEND chunk by chunk, so memory is bounded by the
//! read buffer whatever the message's size.

use std::{num::NonZeroU32, time::Duration};

use bytes::{Bytes, BytesMut};
use imap_codec::{
    ResponseCodec,
    decode::Decoder,
    imap_types::{
        command::CommandBody,
        core::Literal,
        extensions::binary::LiteralOrLiteral8,
        mailbox::Mailbox,
        response::{Code, Response},
    },
};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    backend::{self, BackendError, Target},
    caps::{Cap, Caps},
    frame::{Frame, Framer, Peer},
    identity::StoreAuth,
    namespace::Store,
    oauth::Tokens,
    session::reply,
    tls::MaybeTls,
};

#[derive(Debug, Error)]
pub enum CopyError {
    #[error("{0}")]
    Login(#[from] BackendError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected answer: {0}")]
    Protocol(&'static str),
    #[error("the store refused: {0}")]
    Refused(String),
}

/// Answers assembled in memory are at most this long (a message body never
/// is: it streams).
const MAX_ASSEMBLED: usize = 1 << 20;

pub struct Conn {
    stream: MaybeTls,
    framer: Framer,
    next: u64,
    pub caps: Caps,
    /// The store's personal namespace, learned at login.
    pub layout: crate::namespace::Layout,
}

/// The untagged answers of a command, and its tagged status line.
pub struct Answer {
    pub untagged: Vec<Bytes>,
    pub tagged: Bytes,
}

impl Answer {
    pub fn is_ok(&self) -> bool {
        status_word(&self.tagged).eq_ignore_ascii_case(b"OK")
    }

    /// The tagged line as text, for errors and logs.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.tagged).trim_end().to_string()
    }
}

fn status_word(line: &[u8]) -> &[u8] {
    line.split(|b| *b == b' ').nth(1).unwrap_or_default()
}

impl Conn {
    /// Connects and logs in to `store` as `auth` says.
    pub async fn open(
        target: &Target,
        store: Store,
        auth: &StoreAuth,
        tokens: &Tokens,
        timeout: Duration,
    ) -> Result<Conn, CopyError> {
        let connected = backend::log_in(target, store, auth, None, tokens, timeout).await?;
        let mut framer = Framer::new(Peer::Server, 64 * 1024);
        framer.push(&connected.rest);
        Ok(Conn {
            stream: connected.stream,
            framer,
            next: 0,
            caps: connected.info.capabilities,
            layout: connected.info.layout,
        })
    }

    fn tag(&mut self) -> Vec<u8> {
        self.next += 1;
        format!("ferry.copy.{}", self.next).into_bytes()
    }

    async fn frame(&mut self) -> Result<Frame, CopyError> {
        loop {
            match self.framer.next_frame() {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {
                    let mut buf = [0u8; 16 * 1024];
                    let n = self.stream.read(&mut buf).await?;
                    if n == 0 {
                        return Err(CopyError::Protocol("the store closed the connection"));
                    }
                    self.framer.push(&buf[..n]);
                }
                Err(_) => return Err(CopyError::Protocol("an over-long line")),
            }
        }
    }

    /// One whole response, literals inlined.
    async fn message(&mut self) -> Result<Bytes, CopyError> {
        let mut msg = BytesMut::new();
        loop {
            match self.frame().await? {
                Frame::Line { bytes, literal, .. } => {
                    msg.extend_from_slice(&bytes);
                    if literal.is_none() {
                        return Ok(msg.freeze());
                    }
                }
                Frame::LiteralData { bytes, .. } => msg.extend_from_slice(&bytes),
            }
            if msg.len() > MAX_ASSEMBLED {
                return Err(CopyError::Protocol("an over-long answer"));
            }
        }
    }

    /// Runs one command that sends no literal.
    pub async fn run(&mut self, body: CommandBody<'_>) -> Result<Answer, CopyError> {
        let tag = self.tag();
        self.stream.write_all(&reply::command(&tag, body)).await?;
        self.stream.flush().await?;
        self.answer(&tag).await
    }

    async fn answer(&mut self, tag: &[u8]) -> Result<Answer, CopyError> {
        let mut untagged = Vec::new();
        loop {
            let m = self.message().await?;
            if reply::tag_of(&m) == tag {
                return Ok(Answer {
                    untagged,
                    tagged: m,
                });
            }
            untagged.push(m);
        }
    }

    /// Streams OLD's message `uid` (from the folder selected on `self`) into
    /// `dest` on `new` with `args` (flags and date): the NEW UID it got, or
    /// `None` when the message is gone from OLD.
    pub async fn copy_to(
        &mut self,
        new: &mut Conn,
        uid: u32,
        dest: &[u8],
        args: &[u8],
    ) -> Result<Option<NonZeroU32>, CopyError> {
        let tag = self.tag();
        let fetch = [
            &tag[..],
            format!(" UID FETCH {uid} BODY.PEEK[]\r\n").as_bytes(),
        ]
        .concat();
        self.stream.write_all(&fetch).await?;
        self.stream.flush().await?;
        let mut appended = None;
        loop {
            match self.frame().await? {
                Frame::Line {
                    bytes,
                    literal: Some(a),
                    ..
                } if bytes.starts_with(b"* ") && appended.is_none() => {
                    appended = Some(new.append_from(self, dest, args, a.len).await?);
                }
                Frame::Line { bytes, .. } if reply::tag_of(&bytes) == tag => {
                    if !status_word(&bytes).eq_ignore_ascii_case(b"OK") {
                        return Err(CopyError::Refused(String::from_utf8_lossy(&bytes).into()));
                    }
                    return Ok(appended);
                }
                // Other untagged answers (flag changes, EXISTS) and the rest of
                // the FETCH line.
                _ => {}
            }
        }
    }

    /// The SHA-256 of message `uid`'s bytes in the selected folder, hashed
    /// as they stream in; `None` when the message is gone.
    pub async fn body_digest(&mut self, uid: u32) -> Result<Option<[u8; 32]>, CopyError> {
        use sha2::{Digest, Sha256};
        let tag = self.tag();
        let fetch = [
            &tag[..],
            format!(" UID FETCH {uid} BODY.PEEK[]\r\n").as_bytes(),
        ]
        .concat();
        self.stream.write_all(&fetch).await?;
        self.stream.flush().await?;
        let mut hash = None;
        loop {
            match self.frame().await? {
                Frame::Line {
                    bytes,
                    literal: Some(_),
                    ..
                } if bytes.starts_with(b"* ") && hash.is_none() => hash = Some(Sha256::new()),
                Frame::LiteralData { bytes, .. } => {
                    if let Some(h) = hash.as_mut() {
                        h.update(&bytes);
                    }
                }
                Frame::Line { bytes, .. } if reply::tag_of(&bytes) == tag => {
                    if !status_word(&bytes).eq_ignore_ascii_case(b"OK") {
                        return Err(CopyError::Refused(String::from_utf8_lossy(&bytes).into()));
                    }
                    return Ok(hash.map(|h| h.finalize().into()));
                }
                _ => {}
            }
        }
    }

    /// APPENDs `len` bytes that `old` is about to send as a literal.
    async fn append_from(
        &mut self,
        old: &mut Conn,
        dest: &[u8],
        args: &[u8],
        len: u64,
    ) -> Result<NonZeroU32, CopyError> {
        let tag = self.tag();
        let sync = !self.caps.has(Cap::LiteralPlus);
        let mailbox = Mailbox::try_from(dest.to_vec())
            .map_err(|_| CopyError::Protocol("a folder name that is no mailbox"))?;
        // `tag APPEND name {0+}` CRLF as imap-codec writes it, cut before the
        // literal; the message's flags and date go there.
        let bare = reply::command(
            &tag,
            CommandBody::Append {
                mailbox,
                flags: Vec::new(),
                date: None,
                message: LiteralOrLiteral8::Literal(Literal::unvalidated_non_sync(&b""[..])),
            },
        );
        let cut = bare.iter().rposition(|b| *b == b'{').unwrap_or(bare.len());
        let head = [&bare[..cut], args].concat();
        self.stream.write_all(&head).await?;
        self.stream
            .write_all(&reply::literal_announcement(len, sync))
            .await?;
        self.stream.flush().await?;
        if sync {
            let m = self.message().await?;
            if !m.starts_with(b"+") {
                // Refused before the literal: OLD's bytes are still read off.
                drain_literal(old).await?;
                return Err(CopyError::Refused(String::from_utf8_lossy(&m).into()));
            }
        }
        let mut left = len;
        while left > 0 {
            match old.frame().await? {
                Frame::LiteralData { bytes, .. } => {
                    left -= bytes.len() as u64;
                    self.stream.write_all(&bytes).await?;
                }
                Frame::Line { .. } => return Err(CopyError::Protocol("a literal ended early")),
            }
        }
        self.stream.write_all(b"\r\n").await?;
        self.stream.flush().await?;
        let answer = self.answer(&tag).await?;
        if !answer.is_ok() {
            return Err(CopyError::Refused(answer.text()));
        }
        // Without it the copy could not be recorded, and a later pass would
        // append it again.
        append_uid(&answer.tagged).ok_or(CopyError::Protocol(
            "APPEND answered without APPENDUID: NEW needs UIDPLUS",
        ))
    }
}

async fn drain_literal(old: &mut Conn) -> Result<(), CopyError> {
    loop {
        if let Frame::LiteralData { last: true, .. } = old.frame().await? {
            return Ok(());
        }
    }
}

/// The UID of `[APPENDUID validity uid]` in a tagged OK.
fn append_uid(tagged: &[u8]) -> Option<NonZeroU32> {
    match ResponseCodec::new().decode(tagged).ok()?.1 {
        Response::Status(s) => match s.code() {
            Some(Code::AppendUid { uid, .. }) => Some(*uid),
            _ => None,
        },
        _ => None,
    }
}
