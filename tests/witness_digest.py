#!/usr/bin/env python3
"""What a folder holds, as Python's imaplib sees it straight from a store:
one line per message, sorted: SHA-256 of the bytes, the flags (without
\\Recent) and the INTERNALDATE.

Usage: witness_digest.py HOST PORT USER PASSWORD FOLDER
"""

import hashlib
import imaplib
import re
import sys

host, port, user, password, folder = sys.argv[1:6]
imap = imaplib.IMAP4(host, int(port))
imap.login(user, password)
typ, _ = imap.select('"%s"' % folder.replace("\\", "\\\\").replace('"', '\\"'), readonly=True)
assert typ == "OK", typ
typ, data = imap.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
assert typ == "OK", typ
lines = []
for part in data:
    if not isinstance(part, tuple):
        continue
    head, body = part
    head = head.decode()
    flags = re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()
    flags = " ".join(sorted(f for f in flags if f != "\\Recent"))
    date = re.search(r'INTERNALDATE "([^"]*)"', head).group(1)
    lines.append("%s (%s) %s" % (hashlib.sha256(body).hexdigest(), flags, date))
for line in sorted(lines):
    print(line)
imap.logout()
