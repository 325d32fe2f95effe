//! The merged view against real Dovecot OLD (`INBOX.`, `.`) and NEW (`/`) stores.

mod common;

use common::*;

fn names(reply: &Reply) -> Vec<String> {
    reply.list_entries().into_iter().map(|e| e.name).collect()
}

fn entry(reply: &Reply, name: &str) -> ListEntry {
    reply
        .list_entries()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} not listed in:\n{}", reply.text()))
}

#[tokio::test]
async fn merged_tree_as_the_user_sees_it() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    let all = c.cmd("LIST \"\" \"*\"").await;
    all.assert_ok();
    let n = names(&all);
    for expected in [
        "INBOX",
        "Sent",
        "Drafts",
        "Trash",
        "Junk",
        "Work",
        "Old",
        "Old/INBOX",
        "Old/Sent",
        "Old/Archive",
        "Old/Archive/2019",
        CLIENT_JP_WIRE,
    ] {
        assert!(
            n.iter().any(|x| x == expected),
            "{expected} missing from {n:?}"
        );
    }
    assert_eq!(
        n.iter().filter(|x| x.eq_ignore_ascii_case("INBOX")).count(),
        1,
        "exactly one INBOX: {n:?}"
    );
    let old = entry(&all, "Old");
    assert!(
        old.has_attr("\\Noselect") && old.has_attr("\\HasChildren"),
        "{old:?}"
    );
    assert!(entry(&all, "Sent").has_attr("\\Sent"));
    let old_sent = entry(&all, "Old/Sent");
    assert!(
        !old_sent.has_attr("\\Sent"),
        "special-use stripped: {old_sent:?}"
    );
    assert!(
        all.list_entries()
            .iter()
            .all(|e| e.delimiter.as_deref() == Some("/"))
    );
    // A second \Sent would confuse clients.
    assert_eq!(
        all.list_entries()
            .iter()
            .filter(|e| e.has_attr("\\Sent"))
            .count(),
        1
    );

    let top = c.cmd("LIST \"\" \"%\"").await;
    let n = names(&top);
    assert!(
        n.contains(&"Old".to_string()) && n.contains(&"INBOX".to_string()),
        "{n:?}"
    );
    assert!(!n.iter().any(|x| x.contains('/')), "{n:?}");

    let old_level = c.cmd("LIST \"\" \"Old/%\"").await;
    let mut n = names(&old_level);
    n.sort();
    assert_eq!(
        n,
        ["Old/&U9dP4Xux-", "Old/Archive", "Old/INBOX", "Old/Sent"]
    );

    let two = c.cmd("LIST \"\" \"%/%\"").await;
    let n = names(&two);
    assert!(
        n.contains(&"Old/Sent".to_string()) && !n.contains(&"Old/Archive/2019".to_string()),
        "{n:?}"
    );

    let deep = c.cmd("LIST \"Old/\" \"*\"").await;
    let n = names(&deep);
    assert!(
        n.contains(&"Old/Archive/2019".to_string()) && !n.contains(&"INBOX".to_string()),
        "{n:?}"
    );

    let inbox = c.cmd("LIST \"\" \"inbox\"").await;
    assert_eq!(names(&inbox), ["INBOX"]);

    let root = c.cmd("LIST \"\" \"\"").await;
    assert!(
        root.text().contains("(\\Noselect) \"/\" \"\""),
        "{}",
        root.text()
    );
}

#[tokio::test]
async fn status_and_select_counts_match_the_stores() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    for (client, store, wire) in [
        ("INBOX", &env.new, "INBOX"),
        ("Work", &env.new, "Work"),
        ("Old/INBOX", &env.old, "INBOX"),
        ("Old/Sent", &env.old, "INBOX.Sent"),
        ("Old/Archive/2019", &env.old, "INBOX.Archive.2019"),
        (CLIENT_JP_WIRE, &env.old, OLD_JP_WIRE),
    ] {
        let (messages, _, _) = store.status("alice", wire).await;
        let st = c
            .cmd(&format!("STATUS {} (MESSAGES UIDNEXT)", quoted(client)))
            .await;
        st.assert_ok();
        assert!(
            st.text().contains(&format!(
                "* STATUS {} (MESSAGES {messages} ",
                quoted(client)
            )) || st
                .text()
                .contains(&format!("* STATUS {client} (MESSAGES {messages} ")),
            "{client}: {}",
            st.text()
        );
        let sel = c.cmd(&format!("SELECT {}", quoted(client))).await;
        sel.assert_ok();
        assert!(
            sel.text().contains(&format!("* {messages} EXISTS")),
            "{client}: {}",
            sel.text()
        );
        if client.starts_with("Old/") {
            assert_eq!(sel.code().as_deref(), Some("READ-ONLY"), "{}", sel.text());
        }
    }
    // The Japanese message reads back as the bytes OLD holds.
    c.cmd(&format!("EXAMINE {}", quoted(CLIENT_JP_WIRE)))
        .await
        .assert_ok();
    let f = c.cmd("FETCH 1 (BODY.PEEK[])").await;
    f.assert_ok();
    assert!(
        f.untagged.iter().any(|u| u
            .windows(12)
            .any(|w| w == b"ISO-2022-JP\r" || w == b"ISO-2022-JP;")),
        "{}",
        f.text()
    );
}

#[tokio::test]
async fn nothing_written_under_old() {
    let env = TestEnv::start().await;
    let before = env.old.snapshot("alice").await;
    let before_new = env.new.snapshot("alice").await;
    let mut c = env.login("alice").await;
    c.cmd("SELECT Old/INBOX").await.assert_ok();
    let st = c.cmd("STORE 1:* +FLAGS (\\Deleted \\Seen)").await;
    st.assert_ok();
    assert!(
        st.untagged
            .iter()
            .any(|u| lossy(u).contains("FETCH (FLAGS")),
        "real flags echoed: {}",
        st.text()
    );
    c.cmd("UID STORE 1:* -FLAGS.SILENT (\\Seen)")
        .await
        .assert_ok();
    c.cmd("EXPUNGE").await.assert_ok();
    c.cmd("UID EXPUNGE 1:*").await.assert_ok();
    c.cmd("FETCH 1:* (BODY[])").await.assert_ok();
    c.cmd("COPY 1 Old/Sent").await.assert_no();
    c.cmd("MOVE 1 INBOX").await.assert_no();
    c.cmd("COPY 1 Nonexistent").await.assert_no();
    c.cmd("CLOSE").await.assert_ok();
    for cmd in [
        "CREATE Old/New",
        "CREATE Old",
        "DELETE Old/Sent",
        "RENAME Old/Sent Old/Sent2",
        "RENAME Old/Sent Saved",
        "RENAME Work Old/Work",
    ] {
        let r = c.cmd(cmd).await;
        r.assert_no();
        assert_eq!(r.code().as_deref(), Some("NOPERM"), "{cmd}: {}", r.text());
    }
    let tag = c.next_tag();
    c.send(format!("{tag} APPEND Old/Sent {{5}}\r\n").as_bytes())
        .await;
    let r = c.read_until_tagged(&tag).await;
    r.assert_no();
    let tag = c.next_tag();
    c.send(format!("{tag} APPEND Old/Sent {{5+}}\r\nhello\r\n{tag}x NOOP\r\n").as_bytes())
        .await;
    c.read_until_tagged(&tag).await.assert_no();
    c.read_until_tagged(&format!("{tag}x")).await.assert_ok();
    c.cmd("SUBSCRIBE Old/Archive/2019").await.assert_ok();
    c.cmd("SUBSCRIBE Old/INBOX").await.assert_ok();
    c.cmd("UNSUBSCRIBE Old/Sent").await.assert_ok();
    c.cmd("SELECT Old/Sent").await.assert_ok();
    c.cmd("STORE 1 +FLAGS (\\Flagged)").await.assert_ok();
    c.logout().await;
    assert_eq!(before, env.old.snapshot("alice").await, "OLD changed");
    assert_eq!(before_new, env.new.snapshot("alice").await, "NEW changed");
    // Ferry keeps Old/ subscriptions; a later session's LSUB shows them, and an
    // unsubscribed OLD subscription stays hidden.
    let mut c = env.login("alice").await;
    let lsub = names(&c.cmd("LSUB \"\" \"Old/*\"").await);
    for kept in ["Old/Archive/2019", "Old/INBOX"] {
        assert!(lsub.contains(&kept.to_string()), "{kept} missing: {lsub:?}");
    }
    assert!(!lsub.contains(&"Old/Sent".to_string()), "{lsub:?}");
    assert!(
        !env.dir().join("subscriptions").exists(),
        "subscriptions live in the state store, not in files"
    );
}

#[tokio::test]
async fn new_folders_work_as_on_new() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    c.cmd("CREATE Projects/2026").await.assert_ok();
    c.cmd("RENAME Projects/2026 Projects/2027")
        .await
        .assert_ok();
    c.cmd("SUBSCRIBE Projects/2027").await.assert_ok();
    let r = c
        .append("Projects/2027", "(\\Flagged)", &message("hello", "body"))
        .await;
    r.assert_ok();
    assert!(r.text().contains("APPENDUID"), "{}", r.text());
    c.cmd("SELECT Projects/2027").await.assert_ok();
    c.cmd("STORE 1 +FLAGS (\\Seen)").await.assert_ok();
    let f = c.cmd("FETCH 1 (FLAGS)").await;
    assert!(
        f.text().contains("\\Seen") && f.text().contains("\\Flagged"),
        "{}",
        f.text()
    );
    let s = c.cmd("SEARCH SUBJECT hello").await;
    assert!(s.text().contains("* SEARCH 1"), "{}", s.text());
    c.cmd("COPY 1 Work").await.assert_ok();
    c.cmd("MOVE 1 INBOX").await.assert_ok();
    c.cmd("UNSELECT").await.assert_ok();
    c.cmd("DELETE Projects/2027").await.assert_ok();
    let (messages, _, _) = env.new.status("alice", "Work").await;
    assert_eq!(messages, 2);
    let (messages, _, _) = env.new.status("alice", "INBOX").await;
    assert_eq!(messages, 3);
    let ns = c.cmd("NAMESPACE").await;
    assert!(
        ns.text().contains("* NAMESPACE ((\"\" \"/\")) NIL NIL"),
        "{}",
        ns.text()
    );
    let caps = c.cmd("CAPABILITY").await;
    // The extended LIST is Ferry's to answer over both stores.
    assert!(caps.text().contains(" LIST-EXTENDED"), "{}", caps.text());
    // NEW's COMPRESS is not shown either: the one there is Ferry's own.
    assert_eq!(
        caps.text().matches("COMPRESS=").count(),
        1,
        "{}",
        caps.text()
    );
    // NOTIFY cannot be carried across two stores: never shown.
    assert!(!caps.text().contains("NOTIFY"), "{}", caps.text());
    c.cmd("GETACL INBOX").await.assert_bad();
    c.cmd("UID SEARCH RETURN (ALL) ALL").await.assert_bad();
}

#[tokio::test]
async fn switching_stores_keeps_responses_apart() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    let sel = c.cmd("SELECT Old/INBOX").await;
    assert!(sel.text().contains("* 3 EXISTS"), "{}", sel.text());
    let sel = c.cmd("SELECT INBOX").await;
    assert!(
        sel.text().contains("* 2 EXISTS") && !sel.text().contains("* 3 EXISTS"),
        "{}",
        sel.text()
    );
    // New mail in the OLD folder just left must not show up as INBOX news.
    env.old
        .append("alice", "INBOX", "", &message("late", "x"))
        .await;
    let noop = c.cmd("NOOP").await;
    assert!(!noop.text().contains("EXISTS"), "{}", noop.text());
    env.new
        .append("alice", "INBOX", "", &message("fresh", "x"))
        .await;
    let noop = c.cmd("NOOP").await;
    assert!(noop.text().contains("* 3 EXISTS"), "{}", noop.text());
    // Back to OLD: NEW's messages stay where they are and nothing was expunged.
    c.cmd("STORE 1 +FLAGS (\\Deleted)").await.assert_ok();
    c.cmd("SELECT Old/Sent").await.assert_ok();
    let (messages, _, _) = env.new.status("alice", "INBOX").await;
    assert_eq!(messages, 3, "switching away must not expunge");
}

#[tokio::test]
async fn idle_and_pipelined_done() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    c.cmd("SELECT INBOX").await.assert_ok();
    let tag = c.next_tag();
    c.send(format!("{tag} IDLE\r\n").as_bytes()).await;
    let plus = c.response().await;
    assert!(plus.starts_with(b"+"), "{}", lossy(&plus));
    env.new
        .append("alice", "INBOX", "", &message("while idling", "x"))
        .await;
    let news = c.response().await;
    assert!(lossy(&news).contains("EXISTS"), "{}", lossy(&news));
    // iOS sends DONE and the next command in one packet.
    c.send(format!("DONE\r\n{tag}n NOOP\r\n").as_bytes()).await;
    c.read_until_tagged(&tag).await.assert_ok();
    c.read_until_tagged(&format!("{tag}n")).await.assert_ok();
}

#[tokio::test]
async fn old_unreachable_leaves_new_working() {
    let mut env = TestEnv::start().await;
    env.old.stop().await;
    let mut c = env.login("alice").await;
    let all = c.cmd("LIST \"\" \"*\"").await;
    all.assert_ok();
    let n = names(&all);
    for expected in ["INBOX", "Sent", "Work", "Old"] {
        assert!(n.contains(&expected.to_string()), "{expected}: {n:?}");
    }
    assert!(!n.iter().any(|n| n.starts_with("Old/")), "{n:?}");
    let old = entry(&all, "Old");
    assert!(
        old.attrs.iter().any(|a| a == "\\Noselect"),
        "{:?}",
        old.attrs
    );
    assert!(
        old.attrs.iter().any(|a| a == "\\HasNoChildren"),
        "{:?}",
        old.attrs
    );
    // LSUB never fails because of OLD (Outlook wipes its cache when it does).
    let lsub = c.cmd("LSUB \"\" \"*\"").await;
    lsub.assert_ok();
    assert!(
        names(&lsub).contains(&"Work".to_string()),
        "{}",
        lsub.text()
    );
    for cmd in [
        "SELECT Old/INBOX",
        "EXAMINE Old/Sent",
        "STATUS Old/Sent (MESSAGES)",
    ] {
        let r = c.cmd(cmd).await;
        r.assert_no();
        assert_eq!(
            r.code().as_deref(),
            Some("UNAVAILABLE"),
            "{cmd}: {}",
            r.text()
        );
    }
    let inbox = c.cmd("SELECT INBOX").await;
    inbox.assert_ok();
    assert!(
        inbox
            .text()
            .contains(&format!("* {} EXISTS", NEW_INBOX_SUBJECTS.len()))
    );
    c.cmd("FETCH 1:* (FLAGS)").await.assert_ok();
    c.logout().await;
    // Once OLD is back, the next session sees Old/ again.
    env.old.restart().await;
    let mut c = env.login("alice").await;
    let all = c.cmd("LIST \"\" \"Old/*\"").await;
    assert!(
        names(&all).contains(&"Old/INBOX".to_string()),
        "{}",
        all.text()
    );
}
