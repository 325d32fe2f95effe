//! A store connection for the copier: commands under Ferry's own tags, their
//! answers assembled (small ones only), and message bodies streamed from
//! OLD's FETCH into NEW's APPEND chunk by chunk, so memory is bounded by the
//! read buffer whatever the message's size: one message per APPEND, or a
//! batch of them in one FETCH and one MULTIAPPEND (RFC 3502).

use std::{collections::HashMap, num::NonZeroU32, time::Duration};

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
    answers,
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

/// What became of a batch (see [`Conn::copy_batch`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// Appended: `(OLD UID, NEW UID)` in append order. Messages gone from
    /// OLD since the listing are not in it.
    Appended(Vec<(u32, NonZeroU32)>),
    /// Nothing of the batch was appended (a MULTIAPPEND is all or nothing):
    /// NEW refused it, OLD's FETCH failed, or OLD's answer could not be
    /// batched. One message at a time finds the culprit.
    Refused(String),
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
        let connected = backend::log_in(target, store, auth, None, true, tokens, timeout).await?;
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
        let tag = self.fetch_body(uid).await?;
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

    /// Asks for message `uid`'s bytes (`UID FETCH uid BODY.PEEK[]`); the tag.
    async fn fetch_body(&mut self, uid: u32) -> Result<Vec<u8>, CopyError> {
        let tag = self.tag();
        let fetch = [
            &tag[..],
            format!(" UID FETCH {uid} BODY.PEEK[]\r\n").as_bytes(),
        ]
        .concat();
        self.stream.write_all(&fetch).await?;
        self.stream.flush().await?;
        Ok(tag)
    }

    /// The SHA-256 of message `uid`'s bytes in the selected folder, hashed
    /// as they stream in; `None` when the message is gone.
    pub async fn body_digest(&mut self, uid: u32) -> Result<Option<[u8; 32]>, CopyError> {
        use sha2::{Digest, Sha256};
        let tag = self.fetch_body(uid).await?;
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

    /// True when `new` takes a batch as one MULTIAPPEND with non-synchronizing
    /// literals and names the UIDs it gave (APPENDUID), so that the batch
    /// streams without waiting and can be recorded.
    pub fn takes_batches(&self) -> bool {
        [Cap::Multiappend, Cap::LiteralPlus, Cap::UidPlus]
            .into_iter()
            .all(|c| self.caps.has(c))
    }

    /// Streams OLD's messages `batch` (UID and APPEND arguments, from the
    /// folder selected on `self`) into `dest` on `new`: one `UID FETCH` here,
    /// one MULTIAPPEND there, each body written on as it arrives. `new` must
    /// [take batches](Self::takes_batches).
    pub async fn copy_batch(
        &mut self,
        new: &mut Conn,
        batch: &[(u32, Bytes)],
        dest: &[u8],
    ) -> Result<Batch, CopyError> {
        let args: HashMap<u32, &Bytes> = batch.iter().map(|(u, a)| (*u, a)).collect();
        let mut uids: Vec<u32> = args.keys().copied().collect();
        uids.sort_unstable();
        // `tag APPEND name ` as imap-codec writes it, cut before the literal.
        let new_tag = new.tag();
        let bare = reply::command(
            &new_tag,
            CommandBody::Append {
                mailbox: Mailbox::try_from(dest.to_vec())
                    .map_err(|_| CopyError::Protocol("a folder name that is no mailbox"))?,
                flags: Vec::new(),
                date: None,
                message: LiteralOrLiteral8::Literal(Literal::unvalidated_non_sync(&b""[..])),
            },
        );
        let cut = bare.iter().rposition(|b| *b == b'{').unwrap_or(bare.len());
        let tag = self.tag();
        let fetch = [
            &tag[..],
            b" UID FETCH ",
            uid_ranges(&uids).as_bytes(),
            b" (UID BODY.PEEK[])\r\n",
        ]
        .concat();
        self.stream.write_all(&fetch).await?;
        self.stream.flush().await?;
        let mut open = false;
        // Bytes of the current body still to pass on.
        let mut left = 0u64;
        let mut order: Vec<u32> = Vec::new();
        // Why the batch is being given up; NEW's APPEND, if open, is aborted.
        let mut unfit: Option<&'static str> = None;
        let fetched = loop {
            match self.frame().await? {
                Frame::Line {
                    bytes,
                    start: true,
                    literal: Some(a),
                } if bytes.starts_with(b"* ") && unfit.is_none() => {
                    // The UID must come before the body: it picks the flags
                    // and date that go in front of the literal.
                    let found = answers::body_line(&bytes)
                        .and_then(|(_, uid)| uid)
                        .map(NonZeroU32::get)
                        .filter(|u| !order.contains(u))
                        .and_then(|u| Some((u, *args.get(&u)?)));
                    let Some((uid, a_args)) = found else {
                        unfit = Some("OLD's FETCH answer names no UID of the batch before a body");
                        if open {
                            abort_append(new).await?;
                        }
                        continue;
                    };
                    let head: &[u8] = if open { b" " } else { &bare[..cut] };
                    let msg_head =
                        [head, a_args, &reply::literal_announcement(a.len, false)].concat();
                    new.stream.write_all(&msg_head).await?;
                    open = true;
                    order.push(uid);
                    left = a.len;
                }
                Frame::LiteralData { bytes, .. } if left > 0 && unfit.is_none() => {
                    left = left.saturating_sub(bytes.len() as u64);
                    new.stream.write_all(&bytes).await?;
                }
                Frame::Line { bytes, .. } if reply::tag_of(&bytes) == tag => break bytes,
                // Other untagged answers (flag changes, EXPUNGE), the rest of
                // each FETCH line, and what follows a given-up batch.
                _ => {}
            }
        };
        if !status_word(&fetched).eq_ignore_ascii_case(b"OK") {
            if open && unfit.is_none() {
                abort_append(new).await?;
            }
            let why = format!("OLD: {}", String::from_utf8_lossy(&fetched).trim_end());
            return given_up(new, open.then_some(&new_tag[..]), why).await;
        }
        if let Some(why) = unfit {
            return given_up(new, open.then_some(&new_tag[..]), why.to_string()).await;
        }
        if !open {
            // All gone from OLD since the listing.
            return Ok(Batch::Appended(Vec::new()));
        }
        new.stream.write_all(b"\r\n").await?;
        new.stream.flush().await?;
        let answer = new.answer(&new_tag).await?;
        if !answer.is_ok() {
            return Ok(Batch::Refused(format!("NEW: {}", answer.text())));
        }
        // Without it the batch could not be recorded, and a later pass would
        // have to find it by fingerprint.
        let (_, assigned) = answers::append_uids(&answer.tagged).ok_or(CopyError::Protocol(
            "MULTIAPPEND answered without APPENDUID: NEW needs UIDPLUS",
        ))?;
        if assigned.len() != order.len() {
            return Err(CopyError::Protocol(
                "APPENDUID names more or fewer UIDs than messages appended",
            ));
        }
        Ok(Batch::Appended(order.into_iter().zip(assigned).collect()))
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

/// Ends an open MULTIAPPEND so that NEW keeps nothing of it: after a
/// literal NEW expects SP or CRLF and more arguments; these are BAD. Called
/// between bodies only, when no literal is half sent.
async fn abort_append(new: &mut Conn) -> Result<(), CopyError> {
    new.stream.write_all(b" FERRY-ABORT\r\n").await?;
    new.stream.flush().await?;
    Ok(())
}

/// The end of a batch given up: NEW's answer to the APPEND `tag`, when one
/// was started and aborted, which must not be OK.
async fn given_up(new: &mut Conn, tag: Option<&[u8]>, why: String) -> Result<Batch, CopyError> {
    if let Some(tag) = tag
        && new.answer(tag).await?.is_ok()
    {
        return Err(CopyError::Protocol("NEW accepted an aborted APPEND"));
    }
    Ok(Batch::Refused(why))
}

/// Sorted UIDs as a sequence set in ranges: `1:3,7`.
pub fn uid_ranges(sorted: &[u32]) -> String {
    let mut text = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(&sorted[i].to_string());
        if j > i {
            text.push_str(&format!(":{}", sorted[j]));
        }
        i = j + 1;
    }
    text
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

#[cfg(test)]
mod tests {
    use super::uid_ranges;

    #[test]
    fn uid_ranges_join_runs() {
        assert_eq!(uid_ranges(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_ranges(&[42]), "42");
        assert_eq!(uid_ranges(&[]), "");
    }
}
