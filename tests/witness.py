#!/usr/bin/env python3
"""Independent IMAP witness client (Python stdlib imaplib only).

Usage:
    witness.py HOST PORT CAFILE USER PASSWORD [--old-inbox NAME] [--new-inbox NAME]
               [--server-name NAME] [--auth login|plain]

Connects with implicit TLS trusting only CAFILE, logs in, lists all mailboxes,
EXAMINEs the OLD inbox (default "Old/INBOX", i.e. through Ferry) and SELECTs the NEW
INBOX, fetches flags and subjects (BODY.PEEK, nothing is marked \\Seen), tries
`STORE 1 +FLAGS (\\Deleted)` in the OLD inbox (it may be refused with NO or ignored
with OK, but message 1 must not be \\Deleted afterwards), and logs out.

Every step is printed. The last line is one JSON object with what was seen:
    {"ok": true, "mailboxes": [...], "counts": {...}, "subjects": {...},
     "flags": {...},
     "store_old": {"status": "NO", "text": "...", "deleted_after": false}}
Exit status 0 only if everything went as expected; 1 on any unexpected result or
error (the JSON line then has "ok": false and "error").

To run against a TLS Dovecot directly, pass e.g. --old-inbox INBOX --new-inbox INBOX.
"""

import argparse
import email.header
import imaplib
import json
import re
import ssl
import sys
import traceback

from witness_tls import quote, unquote

LIST_RE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$')


class Unexpected(Exception):
    pass


class Witness(imaplib.IMAP4_SSL):
    """IMAP4_SSL that verifies `server_name` (default: the host connected to)."""

    def __init__(self, host, port, ssl_context, timeout, server_name):
        self._server_name = server_name
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout):
        sock = imaplib.IMAP4._create_socket(self, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self._server_name)


def parse_list(data):
    """imaplib LIST data -> [(attrs, delimiter, name)], names as str (wire form)."""
    out = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):  # name sent as a literal
            head, literal = item
            m = LIST_RE.match(head.rstrip() + b" x")
            if not m:
                raise Unexpected("unparsable LIST response %r" % (item,))
            name = literal
        else:
            m = LIST_RE.match(item)
            if not m:
                raise Unexpected("unparsable LIST response %r" % (item,))
            name = unquote(m.group("name"))
        delim = None if m.group("delim") == b"NIL" else unquote(m.group("delim")).decode()
        out.append((m.group("attrs").decode().split(), delim, name.decode("utf-8", "replace")))
    return out


def decode_subject(raw):
    text = raw.decode("utf-8", "replace")
    text = re.sub(r"(?is)^subject:\s*", "", text.strip())
    text = re.sub(r"\r?\n[ \t]+", " ", text)
    parts = []
    for chunk, charset in email.header.decode_header(text):
        if isinstance(chunk, bytes):
            parts.append(chunk.decode(charset or "ascii", "replace"))
        else:
            parts.append(chunk)
    return "".join(parts).strip()


def fetch_all(imap, label, report):
    typ, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    print("FETCH %s -> %s" % (label, typ))
    if typ != "OK":
        raise Unexpected("FETCH in %s: %s %r" % (label, typ, data))
    subjects, flags = [], []
    for item in data:
        if isinstance(item, tuple):
            meta, header = item
            print("  %s %r" % (meta.decode("utf-8", "replace"), header))
            m = re.search(rb"FLAGS \(([^)]*)\)", meta)
            flags.append(m.group(1).decode() if m else "")
            subjects.append(decode_subject(header))
        elif item not in (None, b")"):
            print("  %s" % item.decode("utf-8", "replace"))
    for s in subjects:
        print("  subject: %s" % s)
    report["subjects"][label] = subjects
    report["flags"][label] = flags


def select(imap, label, mailbox, readonly, report):
    typ, data = imap.select(quote(mailbox), readonly=readonly)
    print("%s %s -> %s %r" % ("EXAMINE" if readonly else "SELECT", mailbox, typ, data))
    if typ != "OK":
        raise Unexpected("cannot select %s: %s %r" % (mailbox, typ, data))
    count = int(data[0])
    report["counts"][label] = count
    return count


def login(imap, user, password, auth):
    pw = password.encode("utf-8")
    if auth == "plain":
        typ, data = imap.authenticate(
            "PLAIN", lambda _: b"\0" + user.encode("utf-8") + b"\0" + pw
        )
    elif all(0x20 <= b < 0x7F for b in pw):
        typ, data = imap.login(user, password)
    else:
        # imaplib sends commands as ASCII: send the password as a literal instead.
        imap.literal = pw
        typ, data = imap._simple_command("LOGIN", quote(user))
        if typ != "OK":
            raise imaplib.IMAP4.error(data[-1])
        imap.state = "AUTH"
    print("%s %s -> %s %r" % ("AUTHENTICATE PLAIN" if auth == "plain" else "LOGIN", user, typ, data))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("cafile")
    ap.add_argument("user")
    ap.add_argument("password")
    ap.add_argument("--old-inbox", default="Old/INBOX")
    ap.add_argument("--new-inbox", default="INBOX")
    ap.add_argument("--server-name", default=None,
                    help="TLS server name to verify (default: HOST)")
    ap.add_argument("--auth", choices=["login", "plain"], default="login")
    args = ap.parse_args()

    report = {"ok": False, "mailboxes": [], "counts": {}, "subjects": {}, "flags": {},
              "store_old": None}
    imap = None
    try:
        ctx = ssl.create_default_context(cafile=args.cafile)
        ctx.options |= ssl.OP_NO_TICKET
        imap = Witness(args.host, args.port, ssl_context=ctx, timeout=30,
                       server_name=args.server_name or args.host)
        print("GREETING %r" % imap.welcome)
        login(imap, args.user, args.password, args.auth)

        typ, data = imap.list('""', "*")
        print('LIST "" "*" -> %s' % typ)
        if typ != "OK":
            raise Unexpected("LIST: %s %r" % (typ, data))
        for item in data:
            print("  %r" % (item,))
        entries = parse_list(data)
        report["mailboxes"] = sorted(name for _, _, name in entries)
        names = set(report["mailboxes"])
        for wanted in (args.old_inbox, args.new_inbox):
            if wanted not in names:
                raise Unexpected("%s missing from LIST" % wanted)

        select(imap, args.old_inbox, args.old_inbox, True, report)
        if report["counts"][args.old_inbox] > 0:
            fetch_all(imap, args.old_inbox, report)
            typ, data = imap.store("1", "+FLAGS", "(\\Deleted)")
            text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            print("STORE 1 +FLAGS (\\Deleted) in %s -> %s %s" % (args.old_inbox, typ, text))
            # Refusing (NO) and ignoring (OK, Dovecot's answer in an EXAMINEd mailbox,
            # and Ferry's "OK Flags unchanged") are both fine; changing is not.
            typ2, data2 = imap.fetch("1", "(FLAGS)")
            after = b" ".join(d for d in data2 if isinstance(d, bytes)).decode("utf-8", "replace")
            print("FETCH 1 (FLAGS) after STORE -> %s %s" % (typ2, after))
            deleted = "\\deleted" in after.lower()
            report["store_old"] = {"status": typ, "text": text, "deleted_after": deleted}
            if typ2 != "OK":
                raise Unexpected("FETCH FLAGS after STORE: %s %r" % (typ2, data2))
            if deleted:
                raise Unexpected("STORE changed read-only %s: %s" % (args.old_inbox, after))
        else:
            print("%s is empty; no FETCH/STORE" % args.old_inbox)

        select(imap, args.new_inbox, args.new_inbox, False, report)
        if report["counts"][args.new_inbox] > 0:
            fetch_all(imap, args.new_inbox, report)

        typ, data = imap.logout()
        print("LOGOUT -> %s %r" % (typ, data))
        imap = None
        if typ != "BYE":
            raise Unexpected("LOGOUT: %s %r" % (typ, data))
        report["ok"] = True
    except Exception as e:  # noqa: BLE001 - every failure must end in the JSON line
        traceback.print_exc()
        report["error"] = "%s: %s" % (type(e).__name__, e)
        if imap is not None:
            try:
                imap.shutdown()
            except Exception:  # noqa: BLE001
                pass
    print(json.dumps(report, ensure_ascii=False, sort_keys=True))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
