#!/usr/bin/env python3
"""Independent witness for COMPRESS=DEFLATE (RFC 4978): Python's imaplib with
its reads and writes passed through zlib's raw deflate (wbits -15), stdlib only.

Usage:
    witness_compress.py HOST PORT (--plain | --tls CAFILE) USER PASSWORD
                        FOLDER SHA256 [--list NAME ...]

Connects (implicit TLS checks the certificate for "localhost" against CAFILE),
logs in, checks that the capabilities offer COMPRESS=DEFLATE, and sends
COMPRESS DEFLATE with a NOOP right behind it in the same write, the NOOP
already compressed (a client should wait for the OK; this one does not, and
its NOOP must still be read as compressed). From then on every byte both
ways is deflate. Lists all mailboxes (each NAME given must be there), opens
FOLDER read-only, fetches message 1 whole and compares the SHA-256 of its
bytes with SHA256, runs a few more commands (a second COMPRESS must get
NO [COMPRESSIONACTIVE]) and logs out.

Every step is printed; the last line is one JSON object. Exit status 0 only
if everything went as expected.
"""

import argparse
import hashlib
import imaplib
import json
import sys
import zlib

import witness_tls


class Compressing:
    """imaplib's reads and writes, through deflate once it is on."""

    def open(self, *args, **kwargs):
        super().open(*args, **kwargs)
        self._in = bytearray()
        self._inflate = None
        self._deflate = None
        self.wire_in = 0
        self.wire_out = 0

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise imaplib.IMAP4.abort("connection closed")
        self.wire_in += len(data)
        if self._inflate is not None:
            data = self._inflate.decompress(data)
        self._in += data

    def readline(self):
        while True:
            i = self._in.find(b"\n")
            if i >= 0:
                line = bytes(self._in[: i + 1])
                del self._in[: i + 1]
                return line
            self._fill()

    def read(self, size):
        while len(self._in) < size:
            self._fill()
        data = bytes(self._in[:size])
        del self._in[:size]
        return data

    def send(self, data):
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.wire_out += len(data)
        self.sock.sendall(data)

    def compress(self, pipelined):
        """COMPRESS DEFLATE with `pipelined` (compressed) in the same write;
        returns the COMPRESS tagged line and the pipelined command's."""
        deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        ahead = deflate.compress(pipelined) + deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(b"cz1 COMPRESS DEFLATE\r\n" + ahead)
        line = self.readline()
        while not line.startswith(b"cz1 "):
            line = self.readline()
        if not line.startswith(b"cz1 OK"):
            return line, None
        # Everything after the OK's CRLF is compressed, including what was
        # read along with it.
        self._inflate = zlib.decompressobj(-15)
        self._deflate = deflate
        self._in = bytearray(self._inflate.decompress(bytes(self._in)))
        tag = pipelined.split(b" ", 1)[0] + b" "
        answer = self.readline()
        while not answer.startswith(tag):
            answer = self.readline()
        return line, answer


class Plain(Compressing, imaplib.IMAP4):
    pass


class Tls(Compressing, witness_tls.Client):
    pass


class Unexpected(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Unexpected(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--plain", action="store_true")
    mode.add_argument("--tls", metavar="CAFILE")
    ap.add_argument("user")
    ap.add_argument("password")
    ap.add_argument("folder")
    ap.add_argument("sha256")
    ap.add_argument("--list", nargs="*", default=[])
    a = ap.parse_args()
    imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))
    seen = {"ok": False}
    try:
        if a.tls:
            import ssl

            ctx = ssl.create_default_context(cafile=a.tls)
            m = Tls(a.host, a.port, ssl_context=ctx, timeout=120)
        else:
            m = Plain(a.host, a.port, timeout=120)
        typ, _ = m.login(a.user, a.password)
        print("login", typ)
        expect(typ == "OK", "login")
        typ, caps = m.capability()
        print("capability", typ, caps)
        expect(caps[0].split().count(b"COMPRESS=DEFLATE") == 1, "COMPRESS=DEFLATE offered once")

        ok, noop = m.compress(b"cz2 NOOP\r\n")
        print("compress", ok, noop)
        expect(ok.startswith(b"cz1 OK"), "COMPRESS answered OK")
        expect(noop is not None and noop.startswith(b"cz2 OK"), "pipelined NOOP answered")

        typ, data = m.list('""', '"*"')
        names = [d.decode(errors="replace") for d in data if d]
        print("list", typ, len(names))
        expect(typ == "OK", "LIST")
        for name in a.list:
            expect(any(n.endswith(" " + name) or n.endswith(' "%s"' % name) for n in names),
                   "LIST shows %s" % name)
        typ, data = m.select('"%s"' % a.folder, readonly=True)
        print("examine", a.folder, typ, data)
        expect(typ == "OK", "EXAMINE")
        typ, data = m.fetch("1", "(BODY.PEEK[])")
        expect(typ == "OK" and isinstance(data[0], tuple), "FETCH")
        body = data[0][1]
        digest = hashlib.sha256(body).hexdigest()
        print("fetch", typ, len(body), "bytes, sha256", digest)
        expect(digest == a.sha256, "body byte-exact")
        typ, data = m.search(None, "ALL")
        print("search", typ, data)
        expect(typ == "OK", "SEARCH")
        typ, data = m.fetch("1:*", "(UID FLAGS RFC822.SIZE)")
        print("fetch flags", typ, data)
        expect(typ == "OK" and str(len(body)).encode() in data[0], "RFC822.SIZE")
        typ, data = m.noop()
        print("noop", typ, data)
        expect(typ == "OK", "NOOP")
        typ, data = m._simple_command("COMPRESS", "DEFLATE")
        print("compress again", typ, data)
        expect(typ == "NO" and b"[COMPRESSIONACTIVE]" in data[0], "second COMPRESS refused")
        typ, data = m.logout()
        print("logout", typ, data)
        expect(typ == "BYE", "LOGOUT")
        seen.update(
            ok=True,
            mailboxes=len(names),
            fetched=len(body),
            wire_in=m.wire_in,
            wire_out=m.wire_out,
        )
    except Exception as e:  # noqa: BLE001 - reported, then exit 1
        seen["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(seen))
    return 0 if seen["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
