#!/usr/bin/env python3
"""Seed the Ferry demo's two Dovecot stores with sample mail, over IMAP.

    deploy/demo/seed.py --old 127.0.0.1:10143 --new 127.0.0.1:11143 --password demo-password

OLD (legacy layout, personal prefix "INBOX.", delimiter "."), user alice:
    INBOX 3 (the third carries a ~3 MB PDF attachment), INBOX.Sent 2,
    INBOX.Archive.2019 2, and INBOX.受信箱.研究室 1 (an ISO-2022-JP message; the
    folder is created by its modified UTF-7 wire name). Plus bulk mail for the
    background copier to work through: INBOX.Lists.{announce,dev,users} and
    INBOX.Archive.{2020,2021,2022,2023}, 150 small messages each (1,050 in all;
    the Archive ones \Seen, some list mail \Seen or \Flagged).
OLD, user bob: INBOX 1 (bob is in phase "new", so Ferry never shows it to him).
NEW (Dovecot, prefix "", delimiter "/"), user alice: INBOX 2, Projects 1.
NEW, user bob: INBOX 1.

Then it lists both stores and checks the message counts; it exits non-zero on any
mismatch. Re-running it on seeded stores changes nothing. Standard library only.
"""

import argparse
import base64
import datetime
import email.utils
import imaplib
import random
import re
import sys

# 3 MiB of attachment: big enough that a proxy that buffers whole messages shows it.
ATTACHMENT_BYTES = 3 * 1024 * 1024


# --- modified UTF-7 (RFC 3501 section 5.1.3) ---------------------------------------

def _is_direct(ch):
    """Printable US-ASCII other than "&" stands for itself."""
    return 0x20 <= ord(ch) <= 0x7E and ch != "&"


def mutf7_encode(name):
    """UTF-8 mailbox name -> modified UTF-7 wire form ("受信箱" -> "&U9dP4aux-")."""
    out, run = [], []

    def flush():
        if run:
            utf16 = "".join(run).encode("utf-16-be")
            b64 = base64.b64encode(utf16).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + b64 + "-")
            run.clear()

    for ch in name:
        if _is_direct(ch):
            flush()
            out.append(ch)
        elif ch == "&":
            flush()
            out.append("&-")
        else:
            run.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(wire):
    """Modified UTF-7 wire form -> UTF-8 (for display and the round-trip check)."""

    def shifted(m):
        b64 = m.group(1)
        if not b64:
            return "&"
        b64 = b64.replace(",", "/")
        return base64.b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-16-be")

    return re.sub(r"&([A-Za-z0-9+,]*)-", shifted, wire)


# --- messages -------------------------------------------------------------------------

def rfc822(headers, body):
    """Headers (list of (name, value)) and a str/bytes body -> CRLF message bytes."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("ascii")
    if isinstance(body, str):
        body = body.encode("ascii")
    body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return head + b"\r\n" + body


def plain(frm, to, subject, date, msgid, body):
    return rfc822(
        [
            ("From", frm),
            ("To", to),
            ("Subject", subject),
            ("Date", date),
            ("Message-ID", f"<{msgid}@demo.ferry.invalid>"),
            ("MIME-Version", "1.0"),
            ("Content-Type", "text/plain; charset=us-ascii"),
            ("Content-Transfer-Encoding", "7bit"),
        ],
        body,
    )


def iso2022jp_word(text):
    """An RFC 2047 encoded word in ISO-2022-JP, the classic Japanese mail encoding."""
    raw = text.encode("iso-2022-jp")
    return "=?ISO-2022-JP?B?" + base64.b64encode(raw).decode("ascii") + "?="


def japanese_message():
    subject = "研究室ミーティングの件"
    body_lines = [
        "山田さん",
        "",
        "来週の研究室ミーティングは木曜日の十時からです。",
        "資料は受信箱の研究室フォルダに置きました。",
        "",
        "田中",
    ]
    # ISO-2022-JP (RFC 1468) must be back in ASCII at every line end: encode per line.
    body = b"\n".join(line.encode("iso-2022-jp") for line in body_lines) + b"\n"
    assert all(b < 0x80 for b in body), "ISO-2022-JP is a 7-bit encoding"
    return rfc822(
        [
            ("From", f"{iso2022jp_word('田中')} <tanaka@old.example.ac.jp>"),
            ("To", "alice@example.edu"),
            ("Subject", iso2022jp_word(subject)),
            ("Date", "Tue, 09 Apr 2019 10:15:00 +0900"),
            ("Message-ID", "<jp-lab-1@demo.ferry.invalid>"),
            ("MIME-Version", "1.0"),
            ("Content-Type", "text/plain; charset=ISO-2022-JP"),
            ("Content-Transfer-Encoding", "7bit"),
        ],
        body,
    )


def attachment_message():
    # Deterministic "random" bytes so every demo run stores the same message.
    data = b"%PDF-1.4\n" + random.Random(2019).randbytes(ATTACHMENT_BYTES - 9)
    b64 = base64.b64encode(data).decode("ascii")
    b64_lines = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    boundary = "=_ferry_demo_boundary_42"
    body = (
        f"This is a multi-part message in MIME format.\n"
        f"\n--{boundary}\n"
        f"Content-Type: text/plain; charset=us-ascii\n"
        f"Content-Transfer-Encoding: 7bit\n"
        f"\nHi Alice,\n\nthe scanned thesis draft is attached (about 3 MB).\n\nBob\n"
        f"\n--{boundary}\n"
        f'Content-Type: application/pdf; name="thesis-draft.pdf"\n'
        f'Content-Disposition: attachment; filename="thesis-draft.pdf"\n'
        f"Content-Transfer-Encoding: base64\n"
        f"\n{b64_lines}\n"
        f"\n--{boundary}--\n"
    )
    return rfc822(
        [
            ("From", "Bob <bob@example.edu>"),
            ("To", "Alice <alice@example.edu>"),
            ("Subject", "Thesis draft (scan attached)"),
            ("Date", "Fri, 14 Jun 2024 16:02:00 +0200"),
            ("Message-ID", "<big-attachment-1@demo.ferry.invalid>"),
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
        ],
        body,
    )


def old_alice():
    """(folder name in UTF-8, flags, messages) for OLD alice."""
    a, b, c = "Alice <alice@example.edu>", "Bob <bob@example.edu>", "Carol <carol@example.edu>"
    return [
        ("INBOX", None, [
            plain(b, a, "Server move next month", "Thu, 02 May 2024 08:45:00 +0000",
                  "old-inbox-1", "The mail server moves next month. Your old mail stays.\n"),
            plain(c, a, "Lunch on Friday?", "Wed, 13 Mar 2024 11:30:00 +0000",
                  "old-inbox-2", "Shall we try the new place on Friday?\n"),
            attachment_message(),
        ]),
        ("INBOX.Sent", r"(\Seen)", [
            plain(a, c, "Re: Lunch on Friday?", "Wed, 13 Mar 2024 12:02:00 +0000",
                  "old-sent-1", "Friday works. Noon?\n"),
            plain(a, b, "Re: Server move next month", "Thu, 02 May 2024 09:10:00 +0000",
                  "old-sent-2", "Thanks, noted.\n"),
        ]),
        ("INBOX.Archive.2019", r"(\Seen)", [
            plain(b, a, "Budget 2019", "Tue, 15 Jan 2019 14:00:00 +0000",
                  "old-2019-1", "Budget spreadsheet to follow.\n"),
            plain(c, a, "Conference in Kyoto", "Mon, 20 May 2019 07:30:00 +0000",
                  "old-2019-2", "Registration is open until June.\n"),
        ]),
        ("INBOX.受信箱.研究室", None, [japanese_message()]),
    ]


BULK_FOLDERS = [f"INBOX.Lists.{n}" for n in ("announce", "dev", "users")] + [
    f"INBOX.Archive.{y}" for y in (2020, 2021, 2022, 2023)
]
BULK_PER_FOLDER = 150


def bulk_alice():
    """Deterministic bulk mail: (folder, None, [(flags, message)]) per folder."""
    rng = random.Random(1200)
    words = ("migration mailbox server folder quota backup schedule meeting report "
             "draft review budget release notes ticket agenda minutes proposal").split()
    people = ["Bob <bob@example.edu>", "Carol <carol@example.edu>", "Dave <dave@example.edu>",
              "Erin <erin@example.edu>", "Lists <lists@example.edu>"]
    out = []
    for folder in BULK_FOLDERS:
        leaf = folder.rsplit(".", 1)[1]
        year = int(leaf) if leaf.isdigit() else 2024
        messages = []
        for i in range(BULK_PER_FOLDER):
            when = datetime.datetime(year, 1 + i * 12 // BULK_PER_FOLDER, 1 + i % 28,
                                     rng.randrange(24), rng.randrange(60),
                                     tzinfo=datetime.timezone.utc)
            date = email.utils.format_datetime(when)
            subject = f"[{leaf}] " + " ".join(rng.choice(words) for _ in range(4)).capitalize()
            lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(rng.randrange(3, 40))]
            msg = plain(rng.choice(people), "Alice <alice@example.edu>", subject, date,
                        f"bulk-{leaf}-{i}", "\n".join(lines) + "\n")
            if leaf.isdigit():
                flags = r"(\Seen)"
            else:
                flags = [None, r"(\Seen)", r"(\Seen)", r"(\Seen \Flagged)"][i % 4]
            messages.append((flags, msg))
        out.append((folder, None, messages))
    return out


def new_alice():
    a, it = "Alice <alice@example.edu>", "IT Services <it@example.edu>"
    return [
        ("INBOX", None, [
            plain(it, a, "Your mailbox has moved", "Mon, 03 Jun 2024 08:00:00 +0000",
                  "new-inbox-1", "Your old mail is under Old/ and read-only.\n"),
            plain("Carol <carol@example.edu>", a, "Slides for Monday",
                  "Tue, 04 Jun 2024 16:20:00 +0000", "new-inbox-2", "Slides attached soon.\n"),
        ]),
        ("Projects", None, [
            plain("Dave <dave@example.edu>", a, "Project kickoff", "Wed, 05 Jun 2024 10:00:00 +0000",
                  "new-projects-1", "Kickoff is on Thursday.\n"),
        ]),
    ]


def bob_single(store):
    b = "Bob <bob@example.edu>"
    return [("INBOX", None, [
        plain("IT Services <it@example.edu>", b, f"Hello from the {store} store",
              "Mon, 03 Jun 2024 08:00:00 +0000", f"{store}-bob-1", f"This is in the {store} store.\n"),
    ])]


# --- IMAP -----------------------------------------------------------------------------

def check(what, typ, data):
    if typ != "OK":
        raise SystemExit(f"seed: {what} failed: {typ} {data!r}")
    return data


def connect(hostport, user, password):
    host, port = hostport.rsplit(":", 1)
    m = imaplib.IMAP4(host, int(port), timeout=30)
    check(f"LOGIN {user} at {hostport}", *m.login(user, password))
    return m


def message_count(m, wire):
    typ, data = m.status(wire, "(MESSAGES)")
    if typ != "OK":
        return None
    found = re.search(rb"MESSAGES (\d+)", data[0])
    return int(found.group(1)) if found else None


LIST_LINE = re.compile(rb'\((?P<attrs>[^)]*)\) (?P<delim>"[^"]*"|NIL) (?P<name>.+)$')


def list_folders(m):
    """[(attributes, wire name)] from LIST "" "*"."""
    out = []
    for raw in check("LIST", *m.list('""', "*")):
        if isinstance(raw, tuple):  # a literal name: ((b'(..) "." {n}', b'name'), b')')
            head, name = raw
            attrs = LIST_LINE.match(head + b"x").group("attrs")
        else:
            found = LIST_LINE.match(raw)
            attrs, name = found.group("attrs"), found.group("name")
            if name.startswith(b'"'):
                name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
        out.append((attrs.decode(), name.decode("ascii")))
    return out


def seed(hostport, user, password, folders):
    m = connect(hostport, user, password)
    try:
        for name, flags, messages in folders:
            wire = mutf7_encode(name)
            assert mutf7_decode(wire) == name, (name, wire)
            if wire != "INBOX":
                typ, data = m.create(wire)
                if typ != "OK" and b"ALREADYEXISTS" not in data[0]:
                    check(f"CREATE {wire}", typ, data)
            have = message_count(m, wire) or 0
            if have >= len(messages):
                continue  # seeded before
            for msg in messages[have:]:
                # A message is its bytes, or (its own flags, its bytes).
                own, msg = msg if isinstance(msg, tuple) else (flags, msg)
                check(f"APPEND {wire}", *m.append(wire, own, None, msg))
    finally:
        m.logout()


def report(label, hostport, user, password, expected):
    """Prints the store's folders; returns the names whose count is not as expected."""
    m = connect(hostport, user, password)
    wrong = []
    try:
        print(f"  {label} {user} ({hostport}):")
        seen = {}
        for attrs, wire in list_folders(m):
            count = None if "\\Noselect" in attrs else message_count(m, wire)
            seen[mutf7_decode(wire)] = count
            shown = mutf7_decode(wire) + (f"  [wire: {wire}]" if wire != mutf7_decode(wire) else "")
            extra = f"  ({attrs})" if attrs else ""
            print(f"    {'-' if count is None else count:>3}  {shown}{extra}")
        for name, _, messages in expected:
            if seen.get(name) != len(messages):
                wrong.append(f"{label} {user} {name}: {seen.get(name)} messages, want {len(messages)}")
    finally:
        m.logout()
    return wrong


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", default="127.0.0.1:10143", help="OLD store host:port (plain IMAP)")
    ap.add_argument("--new", default="127.0.0.1:11143", help="NEW store host:port (plain IMAP)")
    ap.add_argument("--password", default="demo-password", help="password of alice and bob on both stores")
    args = ap.parse_args()

    plan = [
        ("OLD", args.old, "alice", old_alice() + bulk_alice()),
        ("OLD", args.old, "bob", bob_single("old")),
        ("NEW", args.new, "alice", new_alice()),
        ("NEW", args.new, "bob", bob_single("new")),
    ]
    for _, hostport, user, folders in plan:
        seed(hostport, user, args.password, folders)
    print("seeded:")
    wrong = []
    for label, hostport, user, folders in plan:
        wrong += report(label, hostport, user, args.password, folders)
    if wrong:
        print("seed: unexpected message counts:\n  " + "\n  ".join(wrong), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
