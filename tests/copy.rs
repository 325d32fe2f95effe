//! Drag and drop from `Old/`: cross-store COPY against real OLD and NEW Dovecots,
//! checked by reading both stores directly.

mod common;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::*;
use imap_codec::{
    ResponseCodec,
    decode::Decoder,
    imap_types::{
        core::Vec1,
        extensions::uidplus::UidElement,
        fetch::MessageDataItem,
        flag::FlagFetch,
        response::{Code, Data, Response},
    },
};
use sha2::{Digest, Sha256};

/// Patience for bulk work while other test binaries load the machine.
const BULK: Duration = Duration::from_secs(120);

/// One message as a store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    uid: u32,
    /// Sorted, without `\Recent`.
    flags: BTreeSet<String>,
    date: String,
    sha256: [u8; 32],
}

/// Every message of `mailbox` (wire name), read with EXAMINE and BODY.PEEK.
async fn read_mailbox(store: &Dovecot, user: &str, mailbox: &str) -> Vec<Stored> {
    let mut c = store.client(user).await;
    c.patient(BULK);
    c.cmd(&format!("EXAMINE {}", quoted(mailbox)))
        .await
        .assert_ok();
    let r = c
        .cmd("UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])")
        .await;
    r.assert_ok();
    c.logout().await;
    let mut out: Vec<Stored> = r.untagged.iter().filter_map(|u| stored(u)).collect();
    out.sort_by_key(|s| s.uid);
    out
}

fn stored(response: &[u8]) -> Option<Stored> {
    let (_, Response::Data(Data::Fetch { items, .. })) =
        ResponseCodec::new().decode(response).ok()?
    else {
        return None;
    };
    let mut s = Stored {
        uid: 0,
        flags: BTreeSet::new(),
        date: String::new(),
        sha256: [0; 32],
    };
    for item in items.into_iter() {
        match item {
            MessageDataItem::Uid(u) => s.uid = u.get(),
            MessageDataItem::Flags(f) => {
                s.flags = f
                    .iter()
                    .filter_map(|f| match f {
                        FlagFetch::Flag(f) => Some(f.to_string()),
                        FlagFetch::Recent => None,
                    })
                    .collect()
            }
            MessageDataItem::InternalDate(d) => s.date = format!("{d:?}"),
            MessageDataItem::BodyExt { data, .. } => {
                s.sha256 = Sha256::digest(data.0.as_ref().map(|l| l.as_ref()).unwrap_or(b"")).into()
            }
            _ => {}
        }
    }
    Some(s)
}

/// What each message is, regardless of where it sits: flags, date, bytes.
fn contents(msgs: &[Stored]) -> Vec<(BTreeSet<String>, String, [u8; 32])> {
    msgs.iter()
        .map(|m| (m.flags.clone(), m.date.clone(), m.sha256))
        .collect()
}

/// The three fields of `[COPYUID v src dst]` in a tagged OK.
fn copyuid(reply: &Reply) -> (u32, Vec<u32>, Vec<u32>) {
    let line = reply.tagged_line();
    let wire = format!("{line}\r\n");
    let (_, Response::Status(status)) = ResponseCodec::new()
        .decode(wire.as_bytes())
        .unwrap_or_else(|e| panic!("undecodable {line}: {e:?}"))
    else {
        panic!("not a status: {line}");
    };
    let Some(Code::CopyUid {
        uid_validity,
        source,
        destination,
    }) = status.code()
    else {
        panic!("no COPYUID in {line}");
    };
    (
        uid_validity.get(),
        expand(&source.0),
        expand(&destination.0),
    )
}

fn expand(set: &Vec1<UidElement>) -> Vec<u32> {
    let mut out = vec![];
    for e in set.as_ref() {
        match *e {
            UidElement::Single(u) => out.push(u.get()),
            UidElement::Range(a, b) => out.extend(a.get()..=b.get()),
        }
    }
    out
}

/// `n` small distinct messages with a mix of flags and dates.
fn bulk(n: usize) -> Vec<(String, Vec<u8>)> {
    bulk_sized(n, 0)
}

/// Like [`bulk`], each message `pad` bytes longer: enough data that a store
/// stopped part way cannot have sent it all into socket buffers already.
fn bulk_sized(n: usize, pad: usize) -> Vec<(String, Vec<u8>)> {
    bulk_with(n, |i| {
        message(
            &format!("Bulk message {i}"),
            &format!("Body of message {i}\r\n{}", "x".repeat(i % 700 + pad)),
        )
    })
}

/// The maildir `tmp` directory of a NEW folder: Dovecot writes each message of
/// an unfinished APPEND there before committing it.
fn maildir_tmp(store: &Dovecot, user: &str, folder: &str) -> PathBuf {
    store.dir().join(format!("mail/{user}/.{folder}/tmp"))
}

/// Waits until a copy into `folder` is under way on NEW (a message in `tmp`).
async fn wait_for_copy_in_flight(store: &Dovecot, user: &str, folder: &str) {
    let tmp = maildir_tmp(store, user, folder);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let busy = std::fs::read_dir(&tmp)
            .map(|d| d.count() > 0)
            .unwrap_or(false);
        if busy {
            return;
        }
        assert!(Instant::now() < deadline, "the copy never reached NEW");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Seeds OLD's `INBOX.Bulk` with `messages`, selects `Old/Bulk` through Ferry
/// and sends `UID COPY 1:* Work` without waiting; returns the client and tag
/// once the copy is under way on NEW.
async fn bulk_copy_in_flight(
    env: &TestEnv,
    messages: &[(String, Vec<u8>)],
) -> (TestClient, String) {
    env.old.create("alice", "INBOX.Bulk").await;
    env.old.append_many("alice", "INBOX.Bulk", messages).await;
    let mut c = env.login("alice").await;
    c.patient(BULK);
    c.cmd("SELECT Old/Bulk").await.assert_ok();
    let tag = c.next_tag();
    c.send(format!("{tag} UID COPY 1:* Work\r\n").as_bytes())
        .await;
    wait_for_copy_in_flight(&env.new, "alice", "Work").await;
    (c, tag)
}

const SOURCE: &str = "INBOX.Copysrc";

/// Four messages in OLD's `INBOX.Copysrc` with flags, keywords, dates, an
/// ISO-2022-JP body and a 1 MB one.
async fn seed_source(env: &TestEnv) {
    env.old.create("alice", SOURCE).await;
    let messages = vec![
        (
            "(\\Seen $Label1) \"14-Jul-2011 09:15:00 +0200\"".to_string(),
            message("First", "hello"),
        ),
        (
            "(\\Flagged \\Answered) \"01-Jan-2001 00:00:01 -0500\"".to_string(),
            jp_message(),
        ),
        (
            "() \"29-Feb-2016 23:59:59 +0000\"".to_string(),
            big_message(1024 * 1024),
        ),
        (
            "(\\Draft NonJunk) \"05-Nov-2020 12:00:00 +0100\"".to_string(),
            message("Fourth", "bye"),
        ),
    ];
    env.old.append_many("alice", SOURCE, &messages).await;
}

#[tokio::test]
async fn copy_keeps_bytes_flags_keywords_and_dates() {
    let env = TestEnv::start().await;
    seed_source(&env).await;
    let old_before = env.old.snapshot("alice").await;
    let source = read_mailbox(&env.old, "alice", SOURCE).await;
    let work_before = read_mailbox(&env.new, "alice", "Work").await;

    let mut c = env.login("alice").await;
    c.patient(BULK);
    c.cmd("SELECT Old/Copysrc").await.assert_ok();
    // Sequence numbers: messages 2 and 3 into Work.
    let r = c.cmd("COPY 2:3 Work").await;
    r.assert_ok();
    let (validity, src, dst) = copyuid(&r);
    assert_eq!(src, [source[1].uid, source[2].uid]);
    let work = read_mailbox(&env.new, "alice", "Work").await;
    assert_eq!(work.len(), work_before.len() + 2);
    assert_eq!(validity, env.new.status("alice", "Work").await.2);
    for (s, d) in src.iter().zip(&dst) {
        let from = source.iter().find(|m| m.uid == *s).unwrap();
        let to = work.iter().find(|m| m.uid == *d).unwrap();
        assert_eq!(
            contents(std::slice::from_ref(from)),
            contents(std::slice::from_ref(to)),
            "uid {s} → {d}"
        );
    }

    // UIDs and `*`: everything into a new folder.
    c.cmd("CREATE Kept").await.assert_ok();
    let r = c.cmd("UID COPY 1:* Kept").await;
    r.assert_ok();
    let (_, src, dst) = copyuid(&r);
    assert_eq!(src, source.iter().map(|m| m.uid).collect::<Vec<_>>());
    let kept = read_mailbox(&env.new, "alice", "Kept").await;
    assert_eq!(dst, kept.iter().map(|m| m.uid).collect::<Vec<_>>());
    assert_eq!(contents(&source), contents(&kept));
    // A UID set naming nothing copies nothing and says so with OK.
    c.cmd("UID COPY 9999:10000 Kept").await.assert_ok();
    assert_eq!(read_mailbox(&env.new, "alice", "Kept").await.len(), 4);
    c.logout().await;
    // Never \Seen on OLD, nothing else either.
    assert_eq!(old_before, env.old.snapshot("alice").await, "OLD changed");
}

#[tokio::test]
async fn five_thousand_messages_in_one_uid_copy() {
    let env = TestEnv::start().await;
    env.old.create("alice", "INBOX.Bulk").await;
    env.old
        .append_many("alice", "INBOX.Bulk", &bulk(5000))
        .await;
    let mut c = env.login("alice").await;
    c.patient(BULK);
    c.cmd("CREATE Bulk").await.assert_ok();
    c.cmd("SELECT Old/Bulk").await.assert_ok();
    let tag = c.next_tag();
    c.send(format!("{tag} UID COPY 1:* Bulk\r\n").as_bytes())
        .await;
    // Meanwhile another user is served as usual.
    let mut bob = env.login("bob").await;
    bob.cmd("SELECT INBOX").await.assert_ok();
    bob.cmd("LIST \"\" \"*\"").await.assert_ok();
    bob.logout().await;
    let r = c.read_until_tagged(&tag).await;
    r.assert_ok();
    let (validity, src, dst) = copyuid(&r);
    assert_eq!(src.len(), 5000);
    assert_eq!(dst.len(), 5000);
    let source = read_mailbox(&env.old, "alice", "INBOX.Bulk").await;
    let copied = read_mailbox(&env.new, "alice", "Bulk").await;
    assert_eq!(validity, env.new.status("alice", "Bulk").await.2);
    assert_eq!(contents(&source), contents(&copied));
    assert_eq!(dst, copied.iter().map(|m| m.uid).collect::<Vec<_>>());
}

#[tokio::test]
async fn refused_copies_change_nothing() {
    let env = TestEnv::start().await;
    let old_before = env.old.snapshot("alice").await;
    let new_before = env.new.snapshot("alice").await;
    let mut c = env.login("alice").await;
    c.patient(BULK);
    c.cmd("SELECT Old/INBOX").await.assert_ok();
    for (cmd, code) in [
        ("MOVE 1 Work", "READ-ONLY"),
        ("UID MOVE 1:* Work", "READ-ONLY"),
        ("COPY 1 Nonexistent", "TRYCREATE"),
        ("UID COPY 1:* Nonexistent", "TRYCREATE"),
        ("COPY 1 Old/Sent", "NOPERM"),
        ("COPY 1 Old", "NOPERM"),
    ] {
        let r = c.cmd(cmd).await;
        r.assert_no();
        assert_eq!(r.code().as_deref(), Some(code), "{cmd}: {}", r.text());
    }
    let r = c.cmd("MOVE 1 Work").await;
    assert!(
        r.text().contains("copy"),
        "tells the user to copy: {}",
        r.text()
    );
    // A bad sequence number is OLD's to judge; nothing is copied.
    c.cmd("COPY 99 Work").await;
    // Within NEW a COPY goes straight to NEW.
    c.cmd("SELECT INBOX").await.assert_ok();
    c.cmd("COPY 1 INBOX").await;
    c.logout().await;
    assert_eq!(old_before, env.old.snapshot("alice").await, "OLD changed");
    let work = read_mailbox(&env.new, "alice", "Work").await;
    assert_eq!(work.len(), 1, "nothing arrived in Work");
    let _ = new_before;
}

#[tokio::test]
async fn new_stopped_part_way_leaves_the_destination_as_it_was() {
    let mut env = TestEnv::start().await;
    let (mut c, tag) = bulk_copy_in_flight(&env, &bulk(5000)).await;
    env.new.stop().await;
    let r = c.read_until_tagged(&tag).await;
    r.assert_no();
    env.new.restart().await;
    let work = read_mailbox(&env.new, "alice", "Work").await;
    assert_eq!(work.len(), 1, "only Work's own message");
}

#[tokio::test]
async fn old_stopped_part_way_leaves_the_destination_as_it_was() {
    let mut env = TestEnv::start().await;
    let (mut c, tag) = bulk_copy_in_flight(&env, &bulk_sized(2000, 20_000)).await;
    let old_before = env.old.snapshot("alice").await;
    env.old.stop().await;
    let r = c.read_until_tagged(&tag).await;
    r.assert_no();
    assert_eq!(r.code().as_deref(), Some("UNAVAILABLE"), "{}", r.text());
    let work = read_mailbox(&env.new, "alice", "Work").await;
    assert_eq!(work.len(), 1, "only Work's own message");
    env.old.restart().await;
    assert_eq!(old_before, env.old.snapshot("alice").await, "OLD changed");
}

#[tokio::test]
async fn client_gone_part_way_leaves_the_destination_as_it_was() {
    let env = TestEnv::start().await;
    let (c, _) = bulk_copy_in_flight(&env, &bulk(5000)).await;
    drop(c);
    // NEW drops the unfinished APPEND when Ferry lets go: tmp empties, nothing lands.
    let tmp = maildir_tmp(&env.new, "alice", "Work");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&tmp)
        .map(|d| d.count() > 0)
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "NEW kept the unfinished copy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let work = read_mailbox(&env.new, "alice", "Work").await;
    assert_eq!(work.len(), 1, "only Work's own message");
}

/// NEW without MULTIAPPEND: one APPEND per message, undone by APPENDUID.
const NO_MULTIAPPEND: &str = "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE \
     SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT URL-PARTIAL \
     CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC \
     ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY \
     PREVIEW=FUZZY LITERAL+ NOTIFY SPECIAL-USE";

#[tokio::test]
async fn without_multiappend_copies_and_rolls_back_by_uid() {
    let mut env = TestEnv::builder().new_conf(NO_MULTIAPPEND).start().await;
    seed_source(&env).await;
    env.old.create("alice", "INBOX.Bulk").await;
    env.old
        .append_many("alice", "INBOX.Bulk", &bulk_sized(2000, 20_000))
        .await;
    // One message in Work is already marked \Deleted: a rollback must not touch it.
    let mut direct = env.new.client("alice").await;
    direct.cmd("SELECT Work").await.assert_ok();
    direct.cmd("STORE 1 +FLAGS (\\Deleted)").await.assert_ok();
    direct.logout().await;
    let work_before = read_mailbox(&env.new, "alice", "Work").await;

    let mut c = env.login("alice").await;
    c.patient(BULK);
    c.cmd("SELECT Old/Copysrc").await.assert_ok();
    c.cmd("CREATE Kept").await.assert_ok();
    let r = c.cmd("UID COPY 1:* Kept").await;
    r.assert_ok();
    let (_, src, dst) = copyuid(&r);
    let source = read_mailbox(&env.old, "alice", SOURCE).await;
    let kept = read_mailbox(&env.new, "alice", "Kept").await;
    assert_eq!(src.len(), 4);
    assert_eq!(dst, kept.iter().map(|m| m.uid).collect::<Vec<_>>());
    assert_eq!(contents(&source), contents(&kept));

    // OLD goes away part way: what was appended is removed again.
    c.cmd("SELECT Old/Bulk").await.assert_ok();
    let tag = c.next_tag();
    c.send(format!("{tag} UID COPY 1:* Work\r\n").as_bytes())
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cur = env.new.dir().join("mail/alice/.Work/cur");
        let new = env.new.dir().join("mail/alice/.Work/new");
        let n = [cur, new]
            .iter()
            .map(|d| std::fs::read_dir(d).map(|d| d.count()).unwrap_or(0))
            .sum::<usize>();
        if n > 10 {
            break;
        }
        assert!(Instant::now() < deadline, "the copy never reached NEW");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    env.old.stop().await;
    let r = c.read_until_tagged(&tag).await;
    r.assert_no();
    let work = read_mailbox(&env.new, "alice", "Work").await;
    assert_eq!(work.len(), work_before.len(), "rolled back");
    assert!(work == work_before, "Work's own message untouched");
}

#[tokio::test]
async fn python_imaplib_drags_mail_out_of_old() {
    let env = TestEnv::start().await;
    seed_source(&env).await;
    let stdout = run_witness(&env, "witness_copy.py", "alice", &[]).await;
    let source = read_mailbox(&env.old, "alice", SOURCE).await;
    let dragged = read_mailbox(&env.new, "alice", "From old").await;
    assert_eq!(contents(&source), contents(&dragged), "{stdout}");
}
