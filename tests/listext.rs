//! The extended LIST (RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154
//! SPECIAL-USE and CREATE-SPECIAL-USE) over the merged tree, against real
//! Dovecot OLD (`INBOX.`, `.`) and NEW (`/`) stores.

mod common;

use std::collections::BTreeMap;

use common::*;

const ITEMS: &str = "MESSAGES UNSEEN UIDNEXT UIDVALIDITY";

/// A `* STATUS name (k v …)` line: the name (quoted or atom) and its items.
fn parse_status(line: &[u8]) -> Option<(String, BTreeMap<String, u64>)> {
    let text = lossy(line);
    let rest = text.trim_end().strip_prefix("* STATUS ")?;
    let (name, rest) = match rest.strip_prefix('"') {
        Some(q) => {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        }
        None => {
            let end = rest.find(' ')?;
            (rest[..end].to_string(), &rest[end..])
        }
    };
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    let words: Vec<&str> = inner.split_whitespace().collect();
    let items = words
        .chunks(2)
        .filter_map(|kv| Some((kv[0].to_ascii_uppercase(), kv.get(1)?.parse().ok()?)))
        .collect();
    Some((name, items))
}

/// Each LIST entry of an extended answer with the STATUS line right after
/// it, if any; panics on a STATUS line that follows no LIST of its name.
fn list_with_status(reply: &Reply) -> Vec<(ListEntry, Option<BTreeMap<String, u64>>)> {
    let mut out: Vec<(ListEntry, Option<BTreeMap<String, u64>>)> = Vec::new();
    for u in &reply.untagged {
        if let Some(e) = parse_list(u) {
            out.push((e, None));
        } else if let Some((name, items)) = parse_status(u) {
            let last = out.last_mut().expect("a STATUS before any LIST");
            assert_eq!(
                last.0.name,
                name,
                "STATUS not after its LIST:\n{}",
                reply.text()
            );
            assert!(last.1.is_none(), "two STATUS lines:\n{}", reply.text());
            last.1 = Some(items);
        }
    }
    out
}

fn find<'a>(entries: &'a [ListEntry], name: &str, reply: &Reply) -> &'a ListEntry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} not listed:\n{}", reply.text()))
}

/// RETURN (STATUS …) over the whole tree says what a STATUS of each folder
/// through Ferry says, NEW's and Old/ alike; no STATUS for what cannot be
/// selected; the same folders as a plain LIST.
#[tokio::test]
async fn list_status_equals_status_per_folder() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    let caps = c.cmd("CAPABILITY").await;
    for cap in ["LIST-EXTENDED", "LIST-STATUS"] {
        assert!(caps.text().contains(cap), "{cap}: {}", caps.text());
    }
    let r = c
        .cmd(&format!("LIST \"\" * RETURN (STATUS ({ITEMS}))"))
        .await;
    r.assert_ok();
    let listed = list_with_status(&r);
    let plain = c.cmd("LIST \"\" *").await;
    let mut names: Vec<&str> = listed.iter().map(|(e, _)| e.name.as_str()).collect();
    let mut plain_names: Vec<String> = plain.list_entries().into_iter().map(|e| e.name).collect();
    names.sort();
    plain_names.sort();
    assert_eq!(names, plain_names, "{}", r.text());
    let mut old_seen = 0;
    for (e, status) in &listed {
        if !e.is_selectable() {
            assert!(status.is_none(), "STATUS of {}:\n{}", e.name, r.text());
            continue;
        }
        let status = status
            .as_ref()
            .unwrap_or_else(|| panic!("no STATUS after {}:\n{}", e.name, r.text()));
        let one = c
            .cmd(&format!("STATUS {} ({ITEMS})", quoted(&e.name)))
            .await;
        one.assert_ok();
        let (_, direct) = one
            .untagged
            .iter()
            .find_map(|u| parse_status(u))
            .unwrap_or_else(|| panic!("{}", one.text()));
        assert_eq!(status, &direct, "{}", e.name);
        assert_eq!(status.len(), 4, "{}: {status:?}", e.name);
        old_seen += usize::from(e.name.starts_with("Old/"));
    }
    // Old/INBOX, Old/Sent, Old/Archive, Old/Archive/2019, the Japanese folder.
    assert!(old_seen >= 4, "{}", r.text());
    let old_inbox = listed.iter().find(|(e, _)| e.name == "Old/INBOX").unwrap();
    assert_eq!(old_inbox.1.as_ref().unwrap()["MESSAGES"], 3);
    // Python's imaplib, an independent client, finds the same.
    let out = run_witness(&env, "witness_list_status.py", "alice", &[ITEMS]).await;
    assert!(out.contains("\"ok\": true"), "{out}");
}

/// Selection by subscription over both stores: NEW's as NEW says, Old/ from
/// OLD's subscriptions and the choices Ferry keeps.
#[tokio::test]
async fn subscribed_selection_and_recursive_match() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    c.cmd("SUBSCRIBE Old/Projects/X").await.assert_ok();
    c.cmd("UNSUBSCRIBE Old/INBOX").await.assert_ok();

    let r = c.cmd("LIST (SUBSCRIBED) \"\" *").await;
    r.assert_ok();
    let entries = r.list_entries();
    assert!(
        entries.iter().all(|e| e.has_attr("\\Subscribed")),
        "{}",
        r.text()
    );
    let old: Vec<&str> = entries
        .iter()
        .filter(|e| e.name.starts_with("Old/"))
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        old,
        [
            "Old/&U9dP4Xux-/&eBR6dluk-",
            "Old/Archive/2019",
            "Old/Projects/X",
            "Old/Sent"
        ],
        "{}",
        r.text()
    );
    assert!(find(&entries, "Old/Projects/X", &r).has_attr("\\NonExistent"));
    assert!(!find(&entries, "Old/Sent", &r).has_attr("\\NonExistent"));
    // NEW's part is NEW's own answer.
    let mut direct = env.new.client("alice").await;
    let d = direct.cmd("LIST (SUBSCRIBED) \"\" *").await;
    let mine: Vec<ListEntry> = entries
        .iter()
        .filter(|e| !e.name.starts_with("Old"))
        .cloned()
        .collect();
    assert_eq!(mine, d.list_entries(), "{}\n{}", r.text(), d.text());
    // The same Old/ names as LSUB.
    let lsub = c.cmd("LSUB \"\" Old/*").await;
    let mut lsub_names: Vec<String> = lsub
        .list_entries()
        .into_iter()
        .filter(|e| !e.has_attr("\\Noselect"))
        .map(|e| e.name)
        .collect();
    lsub_names.sort();
    assert_eq!(old, lsub_names, "{}", lsub.text());

    let r = c.cmd("LIST \"\" * RETURN (SUBSCRIBED CHILDREN)").await;
    r.assert_ok();
    let entries = r.list_entries();
    for e in &entries {
        assert!(
            e.has_attr("\\HasChildren") != e.has_attr("\\HasNoChildren"),
            "{e:?}"
        );
    }
    assert!(find(&entries, "Old/Sent", &r).has_attr("\\Subscribed"));
    assert!(!find(&entries, "Old/INBOX", &r).has_attr("\\Subscribed"));
    assert!(find(&entries, "Old/Archive", &r).has_attr("\\HasChildren"));
    assert!(find(&entries, "Old", &r).has_attr("\\HasChildren"));
    assert!(find(&entries, "Work", &r).has_attr("\\Subscribed"));
    // RETURN options add attributes, never names.
    assert!(
        entries.iter().all(|e| e.name != "Old/Projects/X"),
        "{}",
        r.text()
    );

    let r = c
        .cmd("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (% Old/%)")
        .await;
    r.assert_ok();
    let lines = r.lines();
    let line = |name: &str| {
        lines
            .iter()
            .find(|l| parse_list(format!("{l}\r\n").as_bytes()).is_some_and(|e| e.name == name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{}", r.text()))
            .clone()
    };
    const CHILDINFO: &str = "(\"CHILDINFO\" (\"SUBSCRIBED\"))";
    assert!(line("Old").ends_with(CHILDINFO), "{}", r.text());
    assert!(line("Old/Archive").ends_with(CHILDINFO), "{}", r.text());
    assert!(line("Old/&U9dP4Xux-").ends_with(CHILDINFO), "{}", r.text());
    assert!(
        line("Old/Projects").contains("\\NonExistent"),
        "{}",
        r.text()
    );
    assert!(line("Old/Projects").ends_with(CHILDINFO), "{}", r.text());
    assert!(line("Old/Sent").contains("\\Subscribed"), "{}", r.text());
    assert!(!line("Old/Sent").contains("CHILDINFO"), "{}", r.text());
    assert!(
        r.list_entries().iter().all(|e| e.name != "Old/INBOX"),
        "{}",
        r.text()
    );
}

/// SPECIAL-USE selects NEW's special-use folders only: an `Old/` folder never
/// has a special use (a client must not find two `\Sent`).
#[tokio::test]
async fn special_use_selection_shows_new_only() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    let r = c.cmd("LIST (SPECIAL-USE) \"\" *").await;
    r.assert_ok();
    let mut direct = env.new.client("alice").await;
    let d = direct.cmd("LIST (SPECIAL-USE) \"\" *").await;
    assert!(!d.list_entries().is_empty(), "{}", d.text());
    assert_eq!(r.list_entries(), d.list_entries(), "{}", r.text());
    let r = c.cmd("LIST \"\" * RETURN (SPECIAL-USE)").await;
    r.assert_ok();
    let sent: Vec<String> = r
        .list_entries()
        .into_iter()
        .filter(|e| e.has_attr("\\Sent"))
        .map(|e| e.name)
        .collect();
    assert_eq!(sent, ["Sent"], "{}", r.text());
}

/// CREATE with a special use goes to NEW (Dovecot 2.3 accepts the USE
/// parameter but does not record it, so only the folder is checked); under
/// `Old/` it is refused and OLD untouched.
#[tokio::test]
async fn create_special_use_on_new_refused_under_old() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    c.cmd("CREATE Outbox (USE (\\Sent))").await.assert_ok();
    let mut direct = env.new.client("alice").await;
    let d = direct.cmd("LIST \"\" Outbox").await;
    assert_eq!(d.list_entries().len(), 1, "{}", d.text());
    let r = c.cmd("LIST \"\" Outbox RETURN (SPECIAL-USE)").await;
    assert_eq!(r.list_entries().len(), 1, "{}", r.text());
    for name in ["Old/Mine", "Old/Sent/Drafts", "Old"] {
        c.cmd(&format!("CREATE {name} (USE (\\Drafts))"))
            .await
            .assert_no_with("NOPERM");
    }
    c.cmd("CREATE Broken (USE (\\Sent)").await.assert_bad();
    let mut old = env.old.client("alice").await;
    let o = old.cmd("LIST \"\" *").await;
    assert!(
        o.list_entries().iter().all(|e| !e.name.contains("Mine")),
        "{}",
        o.text()
    );
}

/// OLD without LIST-EXTENDED, LIST-STATUS, CONDSTORE or STATUS=SIZE: the
/// extended LIST still works, and OLD is sent plain LIST/LSUB and STATUS
/// with the items it advertised, nothing else (its own log of what it read
/// says so).
#[tokio::test]
async fn an_old_without_extensions_gets_plain_commands() {
    let env = TestEnv::builder()
        .old_conf(
            "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ \
             UNSELECT CHILDREN NAMESPACE UIDPLUS\n\
             protocol imap {\n  rawlog_dir = %h\n}\n",
        )
        .start()
        .await;
    let mut c = env.login("alice").await;
    let r = c
        .cmd("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" * RETURN (CHILDREN STATUS (MESSAGES UNSEEN HIGHESTMODSEQ SIZE))")
        .await;
    r.assert_ok();
    let listed = list_with_status(&r);
    let status = |name: &str| {
        listed
            .iter()
            .find(|(e, _)| e.name == name)
            .and_then(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no STATUS of {name}:\n{}", r.text()))
    };
    // NEW has CONDSTORE and STATUS=SIZE; OLD does not.
    let keys = |m: BTreeMap<String, u64>| m.into_keys().collect::<Vec<_>>();
    assert_eq!(
        keys(status("Work")),
        ["HIGHESTMODSEQ", "MESSAGES", "SIZE", "UNSEEN"]
    );
    // No mod-sequences on OLD: HIGHESTMODSEQ is 0 (RFC 7162 §3.1.2.2).
    assert_eq!(
        keys(status("Old/Sent")),
        ["HIGHESTMODSEQ", "MESSAGES", "UNSEEN"]
    );
    assert_eq!(status("Old/Sent")["HIGHESTMODSEQ"], 0);
    // Listed for RECURSIVEMATCH alone (not subscribed itself): no STATUS,
    // as Dovecot answers.
    let archive = listed
        .iter()
        .find(|(e, _)| e.name == "Old/Archive")
        .unwrap();
    assert!(archive.1.is_none(), "{}", r.text());
    assert_eq!(status("Old/Sent")["MESSAGES"], 2);
    let one = c.cmd("STATUS Old/Sent (MESSAGES UNSEEN SIZE)").await;
    one.assert_ok();
    assert!(
        one.text().contains("(MESSAGES 2 UNSEEN 0)"),
        "{}",
        one.text()
    );
    c.cmd("STATUS Old/Sent (SIZE)")
        .await
        .assert_no_with("CANNOT");
    c.logout().await;

    let home = env.old.dir().join("mail/alice");
    let mut read = String::new();
    for f in std::fs::read_dir(&home).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|e| e == "in") {
            read.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let commands: Vec<&str> = read
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, c)| c))
        .collect();
    assert!(commands.iter().any(|c| c.contains("LIST \"\" *")), "{read}");
    for command in &commands {
        let words: Vec<&str> = command.split(' ').collect();
        let verb = words
            .get(1)
            .copied()
            .unwrap_or_default()
            .to_ascii_uppercase();
        assert!(
            [
                "LIST",
                "LSUB",
                "STATUS",
                "LOGOUT",
                "ID",
                "NAMESPACE",
                "CAPABILITY"
            ]
            .contains(&verb.as_str()),
            "{command}"
        );
        assert!(
            !command.contains("RETURN") && !command.contains("LIST ("),
            "{command}"
        );
        if verb == "STATUS" {
            assert!(
                !command.contains("SIZE") && !command.contains("HIGHESTMODSEQ"),
                "{command}"
            );
        }
    }
}
