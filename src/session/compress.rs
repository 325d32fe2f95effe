//! COMPRESS=DEFLATE (RFC 4978) toward the client, in every phase after
//! login. Ferry compresses its own connection to the client; stores are never
//! asked to compress toward Ferry, and their own COMPRESS is never shown.
//! The session answers; the driver compresses (`crate::deflate`).

use bytes::Bytes;
use imap_codec::imap_types::response::Code;

use super::{Action, Shared, reply};

impl Shared {
    /// Answers `tag COMPRESS DEFLATE` (the only algorithm imap-codec
    /// decodes; any other is a syntax error, BAD, before it gets here).
    pub(super) fn compress(&mut self, tag: &[u8]) {
        if self.compressed {
            return self.send_client(reply::no_code(
                tag,
                Code::CompressionActive,
                "DEFLATE is active already",
            ));
        }
        self.compressed = true;
        self.send_client(reply::ok(tag, "DEFLATE active"));
        // RFC 4978: the client compresses from the first byte after its
        // command. It should wait for the OK, but whatever it sent already
        // is in the framer, and compressed: it goes back to the driver to
        // be inflated, never read as commands here.
        let read_ahead: Bytes = self.client.take_rest();
        self.actions.push_back(Action::Compress { read_ahead });
    }
}
