#!/usr/bin/env python3
"""Independent witness for drag and drop out of Old/ (Python stdlib imaplib only).

Usage: witness_copy.py HOST PORT CAFILE USER PASSWORD

Connects with implicit TLS (server name "localhost", trusting only CAFILE), logs
in, creates the folder "From old", selects "Old/Copysrc", copies every message
with `UID COPY 1:* "From old"`, and checks the tagged OK carries
`[COPYUID v src dst]` with as many source as destination UIDs as the folder has
messages. Prints each step; exit status 0 only if all went as expected.
"""

import re
import sys

from witness_tls import connect

COPYUID = re.compile(rb"\[COPYUID (\d+) ([0-9:,]+) ([0-9:,]+)\]")


def count(uid_set):
    n = 0
    for part in uid_set.split(b","):
        lo, _, hi = part.partition(b":")
        n += abs(int(hi or lo) - int(lo)) + 1
    return n


def main():
    host, port, cafile, user, password = sys.argv[1:6]
    m = connect(host, port, cafile)
    print("login", m.login(user, password)[0])
    print("create", m.create('"From old"'))
    typ, data = m.select('"Old/Copysrc"', readonly=True)
    print("select", typ, data)
    exists = int(data[0])
    # imaplib's uid() keeps only untagged data; the COPYUID code is in the tagged text.
    typ, data = m._simple_command("UID", "COPY", "1:*", '"From old"')
    print("uid copy", typ, data)
    if typ != "OK":
        return 1
    found = COPYUID.search(data[-1] or b"")
    if not found:
        print("no COPYUID in", data)
        return 1
    src, dst = count(found.group(2)), count(found.group(3))
    print("copyuid", found.group(0).decode(), "source", src, "destination", dst)
    typ, data = m.status('"From old"', "(MESSAGES)")
    print("status", typ, data)
    messages = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
    m.logout()
    if not (src == dst == exists == messages):
        print("mismatch: exists", exists, "copied", src, dst, "now", messages)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
