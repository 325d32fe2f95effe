//! IMAP extensions through the merged view, against real Dovecot OLD and
//! NEW: each on a NEW folder and on an `Old/` folder, and with an OLD whose
//! capability list lacks them (Ferry must then answer or refuse itself,
//! never send OLD what it did not advertise).

mod common;

use common::*;

/// OLD advertising only IMAP4rev1 basics: no CONDSTORE, QRESYNC, ESEARCH,
/// SORT, THREAD, BINARY, IDLE, STATUS=SIZE, SAVEDATE, PREVIEW.
const BARE_OLD: &str = "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE \
     UNSELECT CHILDREN NAMESPACE UIDPLUS I18NLEVEL=1 LITERAL+ SPECIAL-USE\n";

/// The value after `key` in `text` (`HIGHESTMODSEQ 12` → 12).
fn number_after(text: &str, key: &str) -> u64 {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("{key} not in:\n{text}"));
    text[at + key.len()..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key} in:\n{text}"))
}

fn has_line(r: &Reply, start: &str) -> bool {
    r.lines().iter().any(|l| l.starts_with(start))
}

#[tokio::test]
async fn merged_capabilities_are_news_extensions_without_notify() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    let caps = c.cmd("CAPABILITY").await;
    caps.assert_ok();
    let line = caps.lines().join(" ");
    for cap in [
        "ENABLE",
        "CONDSTORE",
        "QRESYNC",
        "ESEARCH",
        "ESORT",
        "SEARCHRES",
        "WITHIN",
        "CONTEXT=SEARCH",
        "BINARY",
        "MULTIAPPEND",
        "CATENATE",
        "URL-PARTIAL",
        "STATUS=SIZE",
        "SAVEDATE",
        "PREVIEW",
        "SNIPPET=FUZZY",
        "IDLE",
        "SORT",
        "THREAD=REFERENCES",
    ] {
        assert!(
            line.split(' ').any(|c| c == cap),
            "{cap} missing from {line}"
        );
    }
    assert!(!line.contains("NOTIFY"), "{line}");
}

/// A QRESYNC resync after expunges on each store shows VANISHED (EARLIER)
/// from that store only; moving between the stores' mailboxes says [CLOSED].
#[tokio::test]
async fn qresync_resyncs_new_and_old_folders_after_expunges() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    let e = c.cmd("ENABLE QRESYNC").await;
    e.assert_ok();
    assert!(has_line(&e, "* ENABLED QRESYNC"), "{}", e.text());
    let inbox = c.cmd("SELECT INBOX").await;
    inbox.assert_ok();
    let (new_v, new_m) = (
        number_after(&inbox.text(), "UIDVALIDITY"),
        number_after(&inbox.text(), "HIGHESTMODSEQ"),
    );
    let old = c.cmd("SELECT Old/INBOX").await;
    old.assert_ok();
    assert!(has_line(&old, "* OK [CLOSED]"), "{}", old.text());
    let (old_v, old_m) = (
        number_after(&old.text(), "UIDVALIDITY"),
        number_after(&old.text(), "HIGHESTMODSEQ"),
    );
    c.logout().await;

    // Someone expunges UID 1 on NEW and UID 2 on OLD, directly.
    let mut n = env.new.client("alice").await;
    n.cmd("SELECT INBOX").await.assert_ok();
    n.cmd("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
        .await
        .assert_ok();
    n.cmd("EXPUNGE").await.assert_ok();
    let mut o = env.old.client("alice").await;
    o.cmd("SELECT INBOX").await.assert_ok();
    o.cmd("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
        .await
        .assert_ok();
    o.cmd("UID STORE 3 +FLAGS.SILENT (\\Answered)")
        .await
        .assert_ok();
    o.cmd("EXPUNGE").await.assert_ok();

    let mut c = env.login("alice").await;
    c.cmd("ENABLE QRESYNC").await.assert_ok();
    let inbox = c
        .cmd(&format!("SELECT INBOX (QRESYNC ({new_v} {new_m} 1:10))"))
        .await;
    inbox.assert_ok();
    assert!(
        has_line(&inbox, "* VANISHED (EARLIER) 1"),
        "{}",
        inbox.text()
    );
    let old = c
        .cmd(&format!(
            "SELECT Old/INBOX (QRESYNC ({old_v} {old_m} 1:10))"
        ))
        .await;
    old.assert_ok();
    let text = old.text();
    assert!(has_line(&old, "* OK [CLOSED]"), "{text}");
    assert!(has_line(&old, "* VANISHED (EARLIER) 2"), "{text}");
    assert!(!text.contains("VANISHED (EARLIER) 1"), "NEW's: {text}");
    assert!(
        text.contains("UID 3") && text.contains("\\Answered"),
        "{text}"
    );
    // A STORE with UNCHANGEDSINCE changes nothing on Old/: the real flags
    // and the unchanged MODSEQ say so.
    let before = c.cmd("UID FETCH 3 (MODSEQ)").await;
    let m3 = number_after(&before.text(), "MODSEQ (");
    let s = c
        .cmd(&format!(
            "UID STORE 3 (UNCHANGEDSINCE {m3}) +FLAGS (\\Flagged)"
        ))
        .await;
    s.assert_ok();
    assert!(!s.text().contains("\\Flagged"), "{}", s.text());
    assert_eq!(number_after(&s.text(), "MODSEQ ("), m3, "{}", s.text());
    let changed = c
        .cmd(&format!(
            "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {old_m} VANISHED)"
        ))
        .await;
    changed.assert_ok();
    assert!(
        changed.text().contains("VANISHED (EARLIER) 2"),
        "{}",
        changed.text()
    );
}

/// OLD without CONDSTORE (and without ESEARCH, SORT, IDLE …): `Old/` folders
/// have no mod-sequences, and what OLD lacks is refused by Ferry; NEW's
/// folders keep everything.
#[tokio::test]
async fn an_old_store_without_the_extensions_gets_none_of_their_commands() {
    let env = TestEnv::builder().old_conf(BARE_OLD).start().await;
    let mut c = env.login("alice").await;
    c.cmd("ENABLE CONDSTORE").await.assert_ok();
    let st = c.cmd("STATUS Old/Sent (MESSAGES HIGHESTMODSEQ)").await;
    st.assert_ok();
    assert!(
        st.text().contains("HIGHESTMODSEQ 0"),
        "RFC 7162 §3.1.2.2: {}",
        st.text()
    );
    let inbox = c.cmd("SELECT INBOX").await;
    assert!(inbox.text().contains("HIGHESTMODSEQ"), "{}", inbox.text());
    let old = c.cmd("EXAMINE Old/INBOX (CONDSTORE)").await;
    old.assert_ok();
    assert!(has_line(&old, "* OK [NOMODSEQ]"), "{}", old.text());
    assert!(!old.text().contains("HIGHESTMODSEQ"), "{}", old.text());
    c.cmd("FETCH 1:* (FLAGS) (CHANGEDSINCE 1)")
        .await
        .assert_bad();
    c.cmd("UID SEARCH MODSEQ 1").await.assert_bad();
    c.cmd("STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)")
        .await
        .assert_bad();
    for cmd in [
        "UID SEARCH RETURN (COUNT) ALL",
        "SORT (DATE) UTF-8 ALL",
        "THREAD REFERENCES UTF-8 ALL",
        "FETCH 1 (BINARY.PEEK[1])",
        "FETCH 1 (SAVEDATE)",
        "FETCH 1 (PREVIEW)",
        "IDLE",
    ] {
        c.cmd(cmd).await.assert_no_with("CANNOT");
    }
    c.cmd("STATUS Old/Sent (SIZE)")
        .await
        .assert_no_with("CANNOT");
    // Plain reads still work.
    let f = c.cmd("FETCH 1:* (FLAGS)").await;
    f.assert_ok();
    assert_eq!(f.lines().len(), 3, "{}", f.text());
    // NEW's folders have it all.
    c.cmd("SELECT INBOX").await.assert_ok();
    let e = c.cmd("UID SEARCH RETURN (COUNT) ALL").await;
    e.assert_ok();
    assert!(e.text().contains("COUNT 2"), "{}", e.text());
    c.cmd("STATUS Work (SIZE)").await.assert_ok();
}

/// ESEARCH, ESORT, SEARCHRES, WITHIN, CONTEXT=SEARCH, SORT and THREAD on a
/// NEW folder and on an `Old/` folder whose OLD offers them.
#[tokio::test]
async fn search_and_sort_extensions_on_both_stores() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    for (folder, count) in [("INBOX", 2), ("Old/INBOX", 3)] {
        c.cmd(&format!("SELECT {folder}")).await.assert_ok();
        let e = c.cmd("UID SEARCH RETURN (MIN MAX COUNT) ALL").await;
        e.assert_ok();
        let t = e.text();
        assert!(
            t.contains("* ESEARCH (TAG ") && t.contains(&format!("COUNT {count}")),
            "{folder}: {t}"
        );
        let s = c.cmd("UID SORT RETURN (COUNT) (DATE) UTF-8 ALL").await;
        s.assert_ok();
        assert!(s.text().contains(&format!("COUNT {count}")), "{}", s.text());
        c.cmd("SEARCH RETURN (SAVE) ALL").await.assert_ok();
        let saved = c.cmd("FETCH $ (UID)").await;
        saved.assert_ok();
        assert_eq!(saved.lines().len(), count, "{folder}: {}", saved.text());
        let w = c.cmd("UID SEARCH YOUNGER 3000000000").await;
        w.assert_ok();
        let u = c.cmd("SEARCH RETURN (UPDATE COUNT) ALL").await;
        u.assert_ok();
        assert!(u.text().contains(&format!("COUNT {count}")), "{}", u.text());
        c.cmd("THREAD REFERENCES UTF-8 ALL").await.assert_ok();
        c.cmd("SORT (DISPLAYFROM) UTF-8 ALL").await.assert_ok();
    }
}

/// BINARY, SAVEDATE, PREVIEW and STATUS=SIZE answer on both stores as the
/// stores themselves do.
#[tokio::test]
async fn binary_savedate_preview_and_status_size_on_both_stores() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    let mut n = env.new.client("alice").await;
    let mut o = env.old.client("alice").await;
    for (folder, old, name) in [
        ("INBOX", false, "INBOX"),
        ("Old/INBOX", true, "INBOX"),
        ("Old/Sent", true, "INBOX.Sent"),
    ] {
        let via = c.cmd(&format!("STATUS {folder} (MESSAGES SIZE)")).await;
        via.assert_ok();
        let direct = if old { &mut o } else { &mut n };
        let own = direct.cmd(&format!("STATUS {name} (MESSAGES SIZE)")).await;
        own.assert_ok();
        assert_eq!(
            number_after(&via.text(), "SIZE"),
            number_after(&own.text(), "SIZE"),
            "{folder}"
        );
    }
    for (folder, direct) in [("INBOX", &mut n), ("Old/INBOX", &mut o)] {
        c.cmd(&format!("EXAMINE {folder}")).await.assert_ok();
        direct.cmd("EXAMINE INBOX").await.assert_ok();
        let cmd = "UID FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1] PREVIEW)";
        let via = c.cmd(cmd).await;
        via.assert_ok();
        let own = direct.cmd(cmd).await;
        assert_eq!(via.untagged, own.untagged, "{folder}");
        assert!(via.text().contains("BINARY[1]"), "{}", via.text());
        let d = c.cmd("UID FETCH 1 (SAVEDATE)").await;
        d.assert_ok();
        assert!(d.text().contains("SAVEDATE \""), "{}", d.text());
    }
}

/// MULTIAPPEND, a literal8 APPEND (BINARY) and CATENATE with URLs, with
/// URL-PARTIAL, into NEW; a URL into `Old/` never reaches NEW.
#[tokio::test]
async fn multiappend_binary_append_and_catenate_into_new() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    let one = message("multi one", "First.");
    let two = message("multi two", "Second.");
    c.send(format!("m1 APPEND Work {{{}+}}\r\n", one.len()).as_bytes())
        .await;
    c.send(&one).await;
    c.send(format!(" (\\Seen) {{{}+}}\r\n", two.len()).as_bytes())
        .await;
    c.send(&two).await;
    c.send(b"\r\n").await;
    let r = c.read_until_tagged("m1").await;
    r.assert_ok();
    assert!(r.tagged_line().contains("APPENDUID"), "{}", r.text());
    let binary = b"Subject: bin\r\n\r\nnul\0byte\r\n";
    c.send(format!("b1 APPEND Work ~{{{}+}}\r\n", binary.len()).as_bytes())
        .await;
    c.send(binary).await;
    c.send(b"\r\n").await;
    c.read_until_tagged("b1").await.assert_ok();
    let inbox = c.cmd("EXAMINE INBOX").await;
    let v = number_after(&inbox.text(), "UIDVALIDITY");
    let text = "Subject: built\r\n\r\n";
    let cat = c
        .cmd(&format!(
            "APPEND Work CATENATE (TEXT {{{}+}}\r\n{text} URL \"/INBOX;UIDVALIDITY={v}/;UID=1/;SECTION=TEXT/;PARTIAL=0.4\")",
            text.len()
        ))
        .await;
    cat.assert_ok();
    let mut n = env.new.client("alice").await;
    n.cmd("EXAMINE Work").await.assert_ok();
    let all = n
        .cmd("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    for subject in ["multi one", "multi two", "bin", "built"] {
        assert!(
            all.text().contains(&format!("Subject: {subject}")),
            "{subject}: {}",
            all.text()
        );
    }
    let old = c.cmd("EXAMINE Old/INBOX").await;
    let ov = number_after(&old.text(), "UIDVALIDITY");
    let bad = c
        .cmd(&format!(
            "APPEND Work CATENATE (URL \"/Old%2FINBOX;UIDVALIDITY={ov}/;UID=1\")"
        ))
        .await;
    bad.assert_no();
    assert!(
        bad.code().is_some_and(|c| c.starts_with("BADURL")),
        "{}",
        bad.text()
    );
    c.cmd("APPEND Old/INBOX CATENATE (TEXT {3+}\r\nabc)")
        .await
        .assert_no_with("NOPERM");
    let count = n.cmd("STATUS Work (MESSAGES)").await;
    assert!(count.text().contains("MESSAGES 5"), "{}", count.text());
}

/// UTF8=ACCEPT: after ENABLE, names are UTF-8 on the wire both ways, and each
/// store keeps its modified UTF-7 (neither is asked to enable UTF-8).
#[tokio::test]
async fn utf8_accept_names_are_utf8_for_the_client_and_mutf7_for_the_stores() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    let e = c.cmd("ENABLE UTF8=ACCEPT").await;
    e.assert_ok();
    assert!(has_line(&e, "* ENABLED UTF8=ACCEPT"), "{}", e.text());
    // The OLD folder `受信箱.研究室`, by its UTF-8 name.
    let jp = "Old/受信箱/研究室";
    let ex = c.cmd(&format!("EXAMINE \"{jp}\"")).await;
    ex.assert_ok();
    assert!(ex.text().contains("1 EXISTS"), "{}", ex.text());
    let st = c.cmd(&format!("STATUS \"{jp}\" (MESSAGES)")).await;
    st.assert_ok();
    assert!(
        st.text()
            .contains(&format!("* STATUS \"{jp}\" (MESSAGES 1)")),
        "{}",
        st.text()
    );
    c.cmd("CREATE \"日本&b\"").await.assert_ok();
    let body = "Subject: 日本語\r\n\r\nこんにちは\r\n".as_bytes();
    c.send(format!("u1 APPEND \"日本&b\" UTF8 (~{{{}+}}\r\n", body.len()).as_bytes())
        .await;
    c.send(body).await;
    c.send(b")\r\n").await;
    c.read_until_tagged("u1").await.assert_ok();
    // LIST matches and shows UTF-8, wildcards inside non-ASCII runs too.
    let l = c.cmd("LIST \"\" \"Old/受*\"").await;
    l.assert_ok();
    let t = l.text();
    assert!(
        t.contains("\"Old/受信箱\"\r\n") && t.contains(&format!("\"{jp}\"")),
        "{t}"
    );
    let l = c.cmd("LIST \"\" \"日%\"").await;
    assert_eq!(
        l.lines(),
        ["* LIST (\\HasNoChildren) \"/\" \"日本&b\""],
        "{}",
        l.text()
    );
    let ls = c.cmd("LIST \"\" \"*\" RETURN (STATUS (MESSAGES))").await;
    ls.assert_ok();
    let t = ls.text();
    assert!(t.contains("* STATUS \"日本&b\" (MESSAGES 1)"), "{t}");
    assert!(
        t.contains(&format!("* STATUS \"{jp}\" (MESSAGES 1)")),
        "{t}"
    );
    assert!(!t.contains("&ZeVnLA-"), "{t}");
    // NEW holds it under the modified UTF-7 name, `&` as `&-`.
    let mut n = env.new.client("alice").await;
    let st = n.cmd("STATUS \"&ZeVnLA-&-b\" (MESSAGES)").await;
    st.assert_ok();
    assert!(st.text().contains("MESSAGES 1"), "{}", st.text());
    n.cmd("EXAMINE \"&ZeVnLA-&-b\"").await.assert_ok();
    let got = n.cmd("FETCH 1 (BODY.PEEK[])").await;
    assert!(
        got.untagged.concat().windows(body.len()).any(|w| w == body),
        "{}",
        got.text()
    );
    // A client that did not enable it keeps modified UTF-7.
    let mut plain = env.login("alice").await;
    let st = plain.cmd("STATUS \"&ZeVnLA-&-b\" (MESSAGES)").await;
    assert!(
        st.text().contains("* STATUS &ZeVnLA-&-b (MESSAGES 1)"),
        "{}",
        st.text()
    );
}
