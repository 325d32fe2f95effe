"""What the imaplib witnesses share: an implicit-TLS connection that checks
the server's certificate for "localhost" against one CA file."""

import imaplib
import ssl


class Client(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = imaplib.IMAP4._create_socket(self, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname="localhost")


def connect(host, port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    return Client(host, int(port), ssl_context=ctx, timeout=60)
