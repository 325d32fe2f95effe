//! COMPRESS=DEFLATE (RFC 4978) on the client connection: raw deflate (no
//! zlib header) both ways, inside TLS when the connection has TLS. The
//! session decides when it starts (`Action::Compress`, after its tagged OK
//! went out uncompressed); this is only the transform.
//!
//! Memory is what decides the shape. A deflate compressor is about 312 KiB
//! (miniz_oxide: hash chains, window, symbol buffer). A smaller window does
//! not help much: flate2 offers window bits only with a zlib backend, and
//! zlib-rs takes 371 KiB, 259 KiB with a 4 KiB window (the hash table,
//! sized by a memLevel flate2 does not expose, stays). Idle sessions are
//! thousands, and a compressor works only while a burst of output is
//! compressed, in one go between two awaits. So each worker thread has one,
//! shared by its sessions: a session's burst continues the thread's stream
//! when the last burst was the session's own, and otherwise starts afresh
//! (reset). Every burst ends with a sync flush on a byte boundary, and a
//! fresh compressor never refers back to bytes it did not see, so the
//! client's inflater cannot tell the difference; nor does any session's
//! output ever depend on another's bytes (nothing leaks between sessions
//! through compressed sizes). The decompressor must keep the client's
//! 32 KiB window between reads, so each compressed session has its own
//! (about 43 KiB), and only those pay it.
//!
//! Level 1 with miniz_oxide: on mail text it compresses to about a quarter
//! at ~180 MB/s of one core, where level 6 reaches a sixth at ~15 MB/s; a
//! proxy compressing at level 6 would be the bottleneck of every large
//! FETCH. zlib-rs' level 1 does not compress base64 at all
//! (`benches/README.md`).

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, ReadBuf};

use crate::tls::MaybeTls;

/// See the module doc: fast, and most of deflate's gain on mail.
const LEVEL: u32 = 1;

/// Compressed client bytes are read here first, one buffer per worker
/// thread (made on the thread's first compressed read), as plain reads go
/// to `wire`'s read block.
const RAW_BUF: usize = 64 * 1024;

/// Compressed input kept while the session's read buffer is full: one read,
/// plus what a fragment of a deflate block may hold back. Past this the
/// inflater made no progress on a whole buffer: the stream is broken.
const MAX_PENDING: usize = 4 * RAW_BUF;

thread_local! {
    static RAW: RefCell<Box<[u8]>> = RefCell::new(vec![0; RAW_BUF].into_boxed_slice());
    static COMPRESSOR: RefCell<Option<ThreadCompressor>> = const { RefCell::new(None) };
}

/// Tells streams apart for [`ThreadCompressor::last`].
static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// A worker thread's one compressor.
struct ThreadCompressor {
    deflate: Compress,
    /// The stream whose history the compressor holds, and how many bursts
    /// that stream had written after it: continued only by its next burst.
    last: Option<(u64, u64)>,
}

/// A client connection that speaks deflate from now on (`S`: the
/// connection under it, TLS or TCP).
pub struct Deflate<S = MaybeTls> {
    inner: S,
    inflate: Decompress,
    /// Compressed input read but not inflated yet (the reader's buffer was
    /// full), or read ahead before compression started (in the framer when
    /// the COMPRESS command ended).
    pending: Vec<u8>,
    /// The last inflate filled its output: it may hold back more.
    more: bool,
    /// The client ended its deflate stream: nothing may follow.
    ended: bool,
    stream: u64,
    /// Bursts written so far (see [`ThreadCompressor::last`]).
    bursts: u64,
}

impl<S> Deflate<S> {
    /// `inner` compressed from its next byte on; `read_ahead` are bytes the
    /// client sent after its COMPRESS command (compressed already).
    pub fn new(inner: S, read_ahead: &[u8]) -> Deflate<S> {
        Deflate {
            inner,
            inflate: Decompress::new(false),
            pending: read_ahead.to_vec(),
            more: false,
            ended: false,
            stream: NEXT_STREAM.fetch_add(1, Ordering::Relaxed),
            bursts: 0,
        }
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// One burst of writes as one run of deflate blocks, ended with a sync
    /// flush so the client can read all of it now.
    pub fn compress(&mut self, parts: &[Bytes]) -> io::Result<Bytes> {
        COMPRESSOR.with_borrow_mut(|slot| {
            let t = slot.get_or_insert_with(|| ThreadCompressor {
                deflate: Compress::new(Compression::new(LEVEL), false),
                last: None,
            });
            if t.last.take() != Some((self.stream, self.bursts)) {
                t.deflate.reset();
            }
            let total: usize = parts.iter().map(Bytes::len).sum();
            // Mail text shrinks to a quarter, base64 to three quarters.
            let mut out = Output {
                buf: vec![0; total / 2 + 64],
                len: 0,
                filled: false,
            };
            for part in parts {
                out.deflate(&mut t.deflate, part, FlushCompress::None)?;
            }
            out.deflate(&mut t.deflate, &[], FlushCompress::Sync)?;
            self.bursts += 1;
            t.last = Some((self.stream, self.bursts));
            out.buf.truncate(out.len);
            Ok(Bytes::from(out.buf))
        })
    }

    /// Inflates `input` into `buf`: how much of `input` it used.
    fn inflate(&mut self, input: &[u8], buf: &mut ReadBuf<'_>) -> io::Result<usize> {
        if self.ended {
            self.more = false;
            return match input.is_empty() {
                true => Ok(0),
                false => Err(invalid("data after the end of the client's deflate stream")),
            };
        }
        let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
        let out = buf.initialize_unfilled();
        let room = out.len();
        let status = self
            .inflate
            .decompress(input, out, FlushDecompress::None)
            .map_err(|e| invalid(&format!("client's deflate stream: {e}")))?;
        let used = (self.inflate.total_in() - in0) as usize;
        let made = (self.inflate.total_out() - out0) as usize;
        buf.advance(made);
        self.more = made == room;
        self.ended = status == Status::StreamEnd;
        Ok(used)
    }

    /// Inflates what is pending into `buf`.
    fn inflate_pending(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let used = self.inflate(&pending, buf)?;
        self.keep(&pending[used..])
    }

    /// Keeps input the inflater has not used yet.
    fn keep(&mut self, rest: &[u8]) -> io::Result<()> {
        if self.pending.len() + rest.len() > MAX_PENDING {
            return Err(invalid("client's deflate stream makes no progress"));
        }
        self.pending.extend_from_slice(rest);
        if self.pending.is_empty() {
            // Most reads leave nothing: hold no memory for it.
            self.pending = Vec::new();
        }
        Ok(())
    }
}

/// A burst's compressed bytes: `buf[..len]`. The buffer is zeroed once
/// and written in place: flate2's `compress_vec` zeroes all the spare
/// capacity on every call, here once per part.
struct Output {
    buf: Vec<u8>,
    len: usize,
    /// The last call filled the buffer: the compressor may hold output back.
    filled: bool,
}

impl Output {
    /// Compresses `input` onto the end, growing the buffer as needed.
    fn deflate(
        &mut self,
        c: &mut Compress,
        mut input: &[u8],
        flush: FlushCompress,
    ) -> io::Result<()> {
        loop {
            if self.buf.len() - self.len < 64 {
                self.buf.resize(self.buf.len() + input.len() / 2 + 1024, 0);
            }
            // A call that follows a filled buffer may only hand over what
            // the compressor held back: miniz_oxide then returns at once,
            // without compressing what it still has or writing the flush.
            let settled = !self.filled;
            let (in0, out0) = (c.total_in(), c.total_out());
            c.compress(input, &mut self.buf[self.len..], flush)
                .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
            input = &input[(c.total_in() - in0) as usize..];
            self.len += (c.total_out() - out0) as usize;
            self.filled = self.len == self.buf.len();
            // All input taken, nothing held back, and for a flush, one call
            // that did its whole work (a second sync flush after a complete
            // one adds only an empty block: harmless).
            if input.is_empty() && !self.filled && (settled || flush == FlushCompress::None) {
                return Ok(());
            }
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for Deflate<S> {
    /// Fills `buf` with inflated bytes, reading the connection only when
    /// nothing is held back. Nothing is inflated past what `buf` can take: a
    /// small compressed read may stand for megabytes, and those wait here,
    /// compressed, until the session asks for more. Cancel-safe: what was
    /// read and not handed over stays in `self`.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.more || !this.pending.is_empty() {
                this.inflate_pending(buf)?;
                if buf.filled().len() > start {
                    return Poll::Ready(Ok(()));
                }
            }
            let n = ready!(RAW.with_borrow_mut(|raw| {
                let mut read = ReadBuf::new(raw);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                let n = read.filled().len();
                if n > 0 && this.pending.is_empty() {
                    // The usual case: inflated straight from the read.
                    let used = this.inflate(&raw[..n], buf)?;
                    this.keep(&raw[used..n])?;
                } else {
                    this.keep(&raw[..n])?;
                }
                Poll::Ready(Ok::<_, io::Error>(n))
            }))?;
            if n == 0 || buf.filled().len() > start {
                // The end of the connection, or something for the reader.
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// What a client sends: `chunks`, each compressed and sync-flushed.
    fn client_stream(chunks: &[&[u8]]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Output {
            buf: Vec::new(),
            len: 0,
            filled: false,
        };
        for chunk in chunks {
            out.deflate(&mut c, chunk, FlushCompress::Sync).unwrap();
        }
        out.buf.truncate(out.len);
        out.buf
    }

    fn inflate_all(d: &mut Decompress, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() * 8 + 1024);
        loop {
            let before = d.total_in();
            d.decompress_vec(input, &mut out, FlushDecompress::Sync)
                .unwrap();
            input = &input[(d.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity());
        }
    }

    /// A connection that hands over `data` `step` bytes per read.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let n = this
                .step
                .min(this.data.len() - this.at)
                .min(buf.remaining());
            buf.put_slice(&this.data[this.at..this.at + n]);
            this.at += n;
            Poll::Ready(Ok(()))
        }
    }

    /// Everything `d` yields until the end, read `size` bytes at a time;
    /// no read may be larger, and compressed input held back stays small.
    fn read_all<S: AsyncRead + Unpin>(d: &mut Deflate<S>, size: usize) -> io::Result<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut all = Vec::new();
            let mut buf = vec![0; size];
            loop {
                let n = d.read(&mut buf).await?;
                if n == 0 {
                    return Ok(all);
                }
                assert!(d.pending.len() <= MAX_PENDING);
                all.extend_from_slice(&buf[..n]);
            }
        })
    }

    fn text(lines: usize) -> Vec<u8> {
        (0..lines)
            .flat_map(|i| format!("* {i} FETCH (UID {} FLAGS (\\Seen))\r\n", i * 7).into_bytes())
            .collect()
    }

    #[test]
    fn reads_inflate_whatever_the_read_sizes() {
        let (a, b) = (text(3000), text(10));
        let wire = client_stream(&[&a, &b]);
        for step in [1, 7, 1000, 64 * 1024] {
            for size in [1, 100, 64 * 1024] {
                let mut d = Deflate::new(
                    Trickle {
                        data: wire.clone(),
                        at: 0,
                        step,
                    },
                    b"",
                );
                let got = read_all(&mut d, size).unwrap();
                assert!(got == [&a[..], &b[..]].concat(), "step {step}, size {size}");
            }
        }
    }

    /// Bytes the client sent right after COMPRESS, already in the framer
    /// when it ended, come first.
    #[test]
    fn read_ahead_is_inflated_first() {
        let wire = client_stream(&[b"b NOOP\r\n", b"c LOGOUT\r\n"]);
        let split = wire.len() / 2;
        let mut d = Deflate::new(
            Trickle {
                data: wire[split..].to_vec(),
                at: 0,
                step: 3,
            },
            &wire[..split],
        );
        assert_eq!(read_all(&mut d, 4096).unwrap(), b"b NOOP\r\nc LOGOUT\r\n");
    }

    /// A few kilobytes that inflate to megabytes are taken a buffer at a
    /// time: the rest waits compressed.
    #[test]
    fn a_small_read_that_inflates_to_megabytes_waits_compressed() {
        let zeros = vec![b'0'; 8 << 20];
        let wire = client_stream(&[&zeros]);
        assert!(wire.len() < 64 * 1024, "{}", wire.len());
        let mut d = Deflate::new(
            Trickle {
                data: wire,
                at: 0,
                step: 64 * 1024,
            },
            b"",
        );
        assert_eq!(read_all(&mut d, 64 * 1024).unwrap(), zeros);
    }

    #[test]
    fn garbage_and_data_after_the_end_are_errors() {
        let mut d = Deflate::new(
            Trickle {
                data: vec![0xff; 100],
                at: 0,
                step: 100,
            },
            b"",
        );
        assert_eq!(
            read_all(&mut d, 4096).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Output {
            buf: Vec::new(),
            len: 0,
            filled: false,
        };
        out.deflate(&mut c, b"a NOOP\r\n", FlushCompress::Finish)
            .unwrap();
        let mut wire = out.buf[..out.len].to_vec();
        let mut ended = Deflate::new(
            Trickle {
                data: wire.clone(),
                at: 0,
                step: 100,
            },
            b"",
        );
        assert_eq!(read_all(&mut ended, 4096).unwrap(), b"a NOOP\r\n");
        wire.extend_from_slice(b"more");
        let mut more = Deflate::new(
            Trickle {
                data: wire,
                at: 0,
                step: 100,
            },
            b"",
        );
        assert!(read_all(&mut more, 4096).is_err());
    }

    /// Two streams taking turns on the thread's compressor: each burst of
    /// each stream inflates on its own client, whichever ran last.
    #[test]
    fn interleaved_streams_share_the_thread_compressor() {
        let mut a = Deflate::new((), b"");
        let mut b = Deflate::new((), b"");
        let (mut ca, mut cb) = (Decompress::new(false), Decompress::new(false));
        let line = |s: &str, i: usize| Bytes::from(format!("* {i} FETCH (FLAGS (\\Seen)) {s}\r\n"));
        for i in 0..20 {
            let pa = [line("a", i), line("a", i + 1)];
            let got = inflate_all(&mut ca, &a.compress(&pa).unwrap());
            assert_eq!(got, [&pa[0][..], &pa[1][..]].concat(), "a, burst {i}");
            if i % 3 == 0 {
                // a twice in a row: it continues its own history.
                let again = [line("a", i)];
                let out = a.compress(&again).unwrap();
                assert_eq!(inflate_all(&mut ca, &out), again[0]);
            }
            let pb = [line("b", i)];
            assert_eq!(inflate_all(&mut cb, &b.compress(&pb).unwrap()), pb[0]);
        }
        // A burst larger than any buffer guess.
        let big = [Bytes::from(text(20_000))];
        assert_eq!(inflate_all(&mut ca, &a.compress(&big).unwrap()), big[0]);
    }

    /// Every burst inflates to all of itself at once, whatever its size and
    /// content: a burst whose tail stayed in the compressor would leave the
    /// client waiting for the rest of a response (miniz_oxide returns early
    /// from a sync flush that had to hand over a block first).
    #[test]
    fn every_burst_is_complete_on_its_own() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut a = Deflate::new((), b"");
        let mut client = Decompress::new(false);
        for burst in 0..400 {
            let mut parts = Vec::new();
            for _ in 0..1 + next() % 4 {
                let len = (next() % (96 * 1024)) as usize;
                let part: Vec<u8> = match next() % 3 {
                    // Base64-like text, mail text, and noise.
                    0 => (0..len)
                        .map(|_| b"ABCDEFGHabcdefgh0123456789+/"[(next() % 28) as usize])
                        .collect(),
                    1 => text(len / 30 + 1),
                    _ => (0..len).map(|_| next() as u8).collect(),
                };
                parts.push(Bytes::from(part));
            }
            let want = parts.concat();
            let got = inflate_all(&mut client, &a.compress(&parts).unwrap());
            assert!(
                got == want,
                "burst {burst}: {} of {} bytes",
                got.len(),
                want.len()
            );
        }
    }

    #[test]
    fn a_continued_stream_compresses_better_than_a_fresh_one() {
        let mut a = Deflate::new((), b"");
        let mut b = Deflate::new((), b"");
        let part = [Bytes::from_static(
            b"* 12 FETCH (UID 4711 FLAGS (\\Seen \\Answered) RFC822.SIZE 12345)\r\n",
        )];
        let first = a.compress(&part).unwrap().len();
        let continued = a.compress(&part).unwrap().len();
        b.compress(&part).unwrap();
        let after_other = a.compress(&part).unwrap().len();
        assert!(continued < first / 2, "{continued} vs {first}");
        assert_eq!(after_other, first, "reset after another stream's burst");
    }
}
