//! Socket reads and writes for the driver: every read lands in one read
//! block per worker thread, and a burst of writes to one peer leaves as one
//! system call (one TLS record, one deflate flush).

use std::{
    cell::RefCell,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use smallvec::{SmallVec, smallvec};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::{deflate::Deflate, tls::MaybeTls, wake::Gate};

/// Every read of a worker thread lands in its one read block, so a session
/// holds no read buffer of its own (idle sessions stay small), and a read
/// takes up to 64 KiB, whatever the session read before.
const READ_BUF: usize = 64 * 1024;

/// Reads of at least this much are handed over as a slice of the block, no
/// copy (a FETCH body's bytes leave as they came); smaller ones are copied
/// out, so that what a session keeps of a short read (a partial line) never
/// holds a whole block.
const SHARE_FROM: usize = 4 * 1024;

thread_local! {
    static BLOCK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The client's connection: as it came (TCP or TLS), or compressed.
pub enum Client {
    Raw(MaybeTls),
    /// Boxed: few sessions compress, and an idle one should not carry it.
    Deflate(Box<Deflate>),
}

impl Client {
    /// The connection compressed from its next byte on; `read_ahead`: what
    /// the client sent after COMPRESS (see [`Deflate::new`]).
    pub fn compressed(self, read_ahead: &[u8]) -> Client {
        match self {
            Client::Raw(inner) => Client::Deflate(Box::new(Deflate::new(inner, read_ahead))),
            // Invariant: the session never asks twice (NO [COMPRESSIONACTIVE]).
            compressed => compressed,
        }
    }

    /// Writes a burst of responses; returns its size before compression.
    pub async fn write(&mut self, parts: &mut Parts) -> io::Result<usize> {
        match self {
            Client::Raw(stream) => write_parts(stream, parts).await,
            Client::Deflate(d) => {
                let total = parts.iter().map(Bytes::len).sum();
                let compressed = d.compress(parts)?;
                write_parts(d.inner_mut(), &mut smallvec![compressed]).await?;
                Ok(total)
            }
        }
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Client::Raw(stream) => stream.shutdown().await,
            Client::Deflate(d) => d.inner_mut().shutdown().await,
        }
    }
}

impl AsyncRead for Client {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Raw(s) => Pin::new(s).poll_read(cx, buf),
            Client::Deflate(d) => Pin::new(d.as_mut()).poll_read(cx, buf),
        }
    }
}

/// Polls an optional stream for a read into this thread's read block
/// (Pending while there is none); empty at the end of the stream. The
/// stream is polled only when `gate` says it may have something.
pub fn poll_read<S: AsyncRead + Unpin>(
    gate: &mut Gate,
    stream: &mut Option<S>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<BytesMut>> {
    let Some(stream) = stream else {
        return Poll::Pending;
    };
    gate.poll(cx, |cx| {
        BLOCK.with_borrow_mut(|block| {
            // The block's earlier reads have usually been written out by
            // now: it is then taken back whole, without allocating.
            block.reserve(READ_BUF);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, block) {
                Poll::Ready(Ok(n)) if n >= SHARE_FROM => Poll::Ready(Ok(block.split_to(n))),
                Poll::Ready(Ok(_)) => {
                    let small = BytesMut::from(&block[..]);
                    block.clear();
                    Poll::Ready(Ok(small))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
}

/// A burst of writes to one peer; the usual burst (a command, or a few
/// answer lines and the tagged one) needs no allocation.
pub type Parts = SmallVec<[Bytes; 4]>;

/// Writes queued for one peer, sent together: one system call (and one TLS
/// record) for a burst of small responses instead of one each.
#[derive(Default)]
pub struct Outbox {
    pub parts: Parts,
    pub len: usize,
}

impl Outbox {
    pub fn push(&mut self, b: Bytes) {
        self.len += b.len();
        self.parts.push(b);
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn clear(&mut self) {
        self.parts.clear();
        self.len = 0;
    }
}

/// Writes `parts` in order (the caller clears them) and returns how many
/// bytes that was. Plain TCP gets them in one `writev` (no copy); over TLS
/// they are joined first, so a burst is one record rather than one per line.
pub async fn write_parts(stream: &mut MaybeTls, parts: &mut Parts) -> io::Result<usize> {
    let total = parts.iter().map(Bytes::len).sum();
    if parts.len() > 1 && !matches!(stream, MaybeTls::Plain(_)) {
        let mut all = BytesMut::with_capacity(total);
        for p in parts.drain(..) {
            all.extend_from_slice(&p);
        }
        parts.push(all.freeze());
    }
    let mut first = 0;
    loop {
        // An empty part would read as a write of nothing.
        while parts.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
        if first == parts.len() {
            break;
        }
        // The slices live only inside one poll: held across the await they
        // would be a kilobyte of every idle session's task.
        let mut written = std::future::poll_fn(|cx| {
            if first + 1 == parts.len() {
                // Most writes are one part: no slice array to fill.
                return Pin::new(&mut *stream).poll_write(cx, &parts[first]);
            }
            let mut slices = [IoSlice::new(&[]); 64];
            let count = (parts.len() - first).min(slices.len());
            for (slice, part) in slices.iter_mut().zip(&parts[first..first + count]) {
                *slice = IoSlice::new(part);
            }
            Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..count])
        })
        .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let part = &mut parts[first];
            let n = written.min(part.len());
            part.advance(n);
            written -= n;
            if part.is_empty() {
                first += 1;
            }
        }
    }
    stream.flush().await?;
    Ok(total)
}
