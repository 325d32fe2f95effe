"""What the imaplib witnesses share: an implicit-TLS connection that checks
the server's certificate for "localhost" against one CA file, and IMAP
quoted strings both ways."""

import imaplib
import re
import ssl


class Client(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = imaplib.IMAP4._create_socket(self, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname="localhost")


def connect(host, port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    return Client(host, int(port), ssl_context=ctx, timeout=60)


def unquote(raw):
    if raw.startswith(b'"') and raw.endswith(b'"') and len(raw) >= 2:
        return re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    return raw


def quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
