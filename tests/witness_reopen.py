#!/usr/bin/env python3
"""Independent witness: a client reopening cached Old/ folders (stdlib imaplib only).

Usage: witness_reopen.py HOST PORT CAFILE USER PASSWORD FOLDER [FOLDER ...]

For each FOLDER (as it goes on the wire, modified UTF-7), connects with
implicit TLS (server name "localhost", trusting only CAFILE), logs in and
opens the folder read-only as the very first command, the way a phone or a
second Thunderbird connection reopens the folder it showed last; fetches
the flags of every message; logs out. Prints each step; exit status 0 only
if every folder opened and every command was answered OK.
"""

import sys

from witness_tls import connect


def main():
    host, port, cafile, user, password = sys.argv[1:6]
    for folder in sys.argv[6:]:
        m = connect(host, port, cafile)
        print("login", m.login(user, password)[0])
        typ, data = m.select('"%s"' % folder, readonly=True)
        print("examine", folder, typ, data)
        if typ != "OK":
            return 1
        if int(data[0]) > 0:
            typ, data = m.fetch("1:*", "(FLAGS)")
            print("fetch", typ, len(data))
            if typ != "OK":
                return 1
        typ, data = m.logout()
        print("logout", typ, data)
        if typ != "BYE":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
