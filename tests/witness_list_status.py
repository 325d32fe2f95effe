#!/usr/bin/env python3
"""Independent witness: LIST-STATUS against STATUS per folder (stdlib imaplib only).

Usage: witness_list_status.py HOST PORT CAFILE USER PASSWORD "ITEM ITEM ..."

Connects with implicit TLS (server name "localhost", trusting only CAFILE),
logs in, sends `LIST "" * RETURN (STATUS (ITEMS))` (RFC 5819), then a STATUS
of every selectable folder it listed, and compares the items. Prints each
step; the last line is a JSON object, "ok": true only if every selectable
folder had the same items both ways and no other folder had a STATUS.
"""

import json
import re
import sys

from witness_tls import connect, quote, unquote

LIST_RE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$')
STATUS_RE = re.compile(rb'^(?P<name>"(?:[^"\\]|\\.)*"|[^ ]+) \((?P<items>[^)]*)\)\s*$')


def items(raw):
    words = raw.split()
    return {words[i].decode().upper(): int(words[i + 1]) for i in range(0, len(words) - 1, 2)}


def main():
    host, port, cafile, user, password, wanted = sys.argv[1:7]
    m = connect(host, port, cafile)
    print("login", m.login(user, password)[0])
    typ, data = m._simple_command("LIST", '""', "*", "RETURN", "(STATUS (%s))" % wanted)
    print("list-status", typ)
    if typ != "OK":
        print(json.dumps({"ok": False, "error": "LIST-STATUS refused"}))
        return 1
    listed = m.untagged_responses.pop("LIST", [])
    statuses = m.untagged_responses.pop("STATUS", [])
    selectable = []
    for line in listed:
        match = LIST_RE.match(line)
        if not match:
            print(json.dumps({"ok": False, "error": "unreadable LIST %r" % line}))
            return 1
        attrs = match.group("attrs").lower().split()
        if b"\\noselect" not in attrs and b"\\nonexistent" not in attrs:
            selectable.append(unquote(match.group("name")).decode())
    by_name = {}
    for line in statuses:
        match = STATUS_RE.match(line)
        if not match:
            print(json.dumps({"ok": False, "error": "unreadable STATUS %r" % line}))
            return 1
        by_name[unquote(match.group("name")).decode()] = items(match.group("items"))
    if sorted(by_name) != sorted(selectable):
        print(json.dumps({"ok": False, "error": "STATUS for %s, selectable %s" % (sorted(by_name), sorted(selectable))}))
        return 1
    for name in selectable:
        typ, data = m.status(quote(name), "(%s)" % wanted)
        match = STATUS_RE.match(data[0]) if typ == "OK" else None
        one = items(match.group("items")) if match else None
        print("status", name, typ, one)
        if one != by_name[name]:
            print(json.dumps({"ok": False, "error": "%s: %r vs %r" % (name, by_name[name], one)}))
            return 1
    print("logout", m.logout()[0])
    print(json.dumps({"ok": True, "folders": len(selectable)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
