#!/usr/bin/env python3
"""The tests' OAuth2 token-introspection endpoint (RFC 7662), for Dovecot's
oauth2 passdb in `introspection_mode = post`.

Usage: oauth_introspect.py TOKENS_JSON PORT_FILE

POST with the form field `token` answers {"active": true, "username": U}
when TOKENS_JSON (re-read on every request, so a test can grant and revoke
tokens while it runs) maps the token to U, else {"active": false}. The
port it listens on (127.0.0.1) is written to PORT_FILE once it is ready.
"""

import json
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

tokens_path, port_path = sys.argv[1], sys.argv[2]


class Introspect(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        token = form.get("token", [""])[0]
        with open(tokens_path) as f:
            user = json.load(f).get(token)
        answer = {"active": True, "username": user} if user else {"active": False}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Introspect)
with open(port_path + ".tmp", "w") as f:
    f.write(str(server.server_port))
os.rename(port_path + ".tmp", port_path)
server.serve_forever()
