//! Self-tests of the integration harness: real Dovecot + TestClient only (no Ferry).

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn both_layouts_start_with_their_namespaces() {
    let (old, new) = tokio::join!(
        Dovecot::start(Layout::Old, false),
        Dovecot::start(Layout::New, false)
    );
    assert_ne!(old.addr(), new.addr());
    assert!(old.imaps_addr().is_none() && old.ca_der().is_none());

    let mut c = old.client("alice").await;
    let list = c.cmd(r#"LIST "" "*""#).await;
    list.assert_ok();
    let sent = list
        .list_entries()
        .into_iter()
        .find(|e| e.name == "INBOX.Sent")
        .unwrap_or_else(|| panic!("no INBOX.Sent on OLD:\n{}", list.text()));
    assert!(sent.has_attr("\\Sent"), "{sent:?}");
    assert_eq!(sent.delimiter.as_deref(), Some("."));
    let ns = c.cmd("NAMESPACE").await;
    assert!(
        ns.text().contains(r#"(("INBOX." ".")) NIL NIL"#),
        "{}",
        ns.text()
    );
    c.logout().await;

    let mut c = new.client("alice").await;
    let list = c.cmd(r#"LIST "" "*""#).await;
    list.assert_ok();
    let entries = list.list_entries();
    for (name, attr) in [
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
    ] {
        let e = entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no {name} on NEW:\n{}", list.text()));
        assert!(e.has_attr(attr), "{e:?}");
        assert_eq!(e.delimiter.as_deref(), Some("/"));
    }
    let lsub = c.cmd(r#"LSUB "" "*""#).await;
    assert_eq!(
        lsub.list_entries().len(),
        4,
        "auto = subscribe:\n{}",
        lsub.text()
    );
    let ns = c.cmd("NAMESPACE").await;
    assert!(ns.text().contains(r#"(("" "/")) NIL NIL"#), "{}", ns.text());
    c.logout().await;
}

#[tokio::test]
async fn weird_password_works_as_literal_and_wrong_password_fails() {
    let d = Dovecot::start(Layout::New, false).await;

    // By hand, exactly as the brief describes: LOGIN dave {N}, wait for +, bytes.
    let mut c = TestClient::plain(d.addr()).await;
    c.greeting().await;
    let pass = WEIRD_PASSWORD.as_bytes();
    c.send(format!("a1 LOGIN dave {{{}}}\r\n", pass.len()).as_bytes())
        .await;
    let cont = c.response().await;
    assert!(cont.starts_with(b"+"), "{}", lossy(&cont));
    c.send(&[pass, b"\r\n"].concat()).await;
    let r = c.read_until_tagged("a1").await;
    r.assert_ok();
    assert!(
        r.code().unwrap_or_default().starts_with("CAPABILITY"),
        "{r:?}"
    );

    // Through the helper.
    let mut c = TestClient::plain(d.addr()).await;
    c.greeting().await;
    c.login("dave", WEIRD_PASSWORD).await.assert_ok();
    c.logout().await;

    for (user, pass) in [
        ("dave", "p(a)s*s%w\"o\\rd ü 日"),
        ("dave", PASSWORD),
        ("alice", WEIRD_PASSWORD),
        ("nobody", PASSWORD),
    ] {
        let mut c = TestClient::plain(d.addr()).await;
        c.greeting().await;
        let r = c.login(user, pass).await;
        r.assert_no();
        assert_eq!(r.code().as_deref(), Some("AUTHENTICATIONFAILED"), "{r:?}");
    }
    for (user, _) in USERS {
        d.client(user).await.logout().await;
    }
    for n in [1, BULK_USERS] {
        d.client(&bulk_user(n)).await.logout().await;
    }
}

#[tokio::test]
async fn seed_standard_produces_the_documented_fixture() {
    let (old, new) = tokio::join!(
        Dovecot::start(Layout::Old, false),
        Dovecot::start(Layout::New, false)
    );
    seed_standard(&old, &new).await;

    for (mailbox, count) in [
        ("INBOX", 3),
        ("INBOX.Sent", 2),
        ("INBOX.Archive", 0),
        ("INBOX.Archive.2019", 1),
        (OLD_JP_WIRE, 1),
    ] {
        assert_eq!(old.status("alice", mailbox).await.0, count, "OLD {mailbox}");
    }
    for (mailbox, count) in [
        ("INBOX", 2),
        ("Work", 1),
        ("Sent", 0),
        ("Drafts", 0),
        ("Trash", 0),
        ("Junk", 0),
    ] {
        assert_eq!(new.status("alice", mailbox).await.0, count, "NEW {mailbox}");
    }
    for user in SMALL_FIXTURE_USERS {
        assert_eq!(old.status(user, "INBOX").await.0, 1, "OLD {user}");
        assert_eq!(new.status(user, "INBOX").await.0, 1, "NEW {user}");
    }

    let mut c = old.client("alice").await;
    c.cmd("EXAMINE INBOX").await.assert_ok();
    let f = c
        .cmd("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    f.assert_ok();
    let lines = f.lines();
    assert_eq!(lines.len(), 3, "{}", f.text());
    assert!(lines[0].contains("\\Seen") && lines[0].contains(OLD_INBOX_SUBJECTS[0]));
    assert!(lines[1].contains("\\Flagged") && lines[1].contains(OLD_INBOX_SUBJECTS[1]));
    assert!(!lines[2].contains("\\Seen") && !lines[2].contains("\\Flagged"));
    let lsub = c.cmd(r#"LSUB "" "*""#).await;
    let mut subscribed: Vec<String> = lsub.list_entries().into_iter().map(|e| e.name).collect();
    subscribed.sort();
    let mut expected: Vec<String> = OLD_SUBSCRIBED.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(subscribed, expected);
    c.logout().await;
}

#[tokio::test]
async fn japanese_folder_wire_name_round_trips() {
    assert_eq!(
        mutf7_encode(&format!("INBOX.{}.{}", JP_LEVELS[0], JP_LEVELS[1])),
        OLD_JP_WIRE
    );
    assert_eq!(
        mutf7_encode(&format!("INBOX.{}", JP_LEVELS[0])),
        OLD_JP_PARENT_WIRE
    );
    assert_eq!(
        mutf7_encode(&format!("Old/{}/{}", JP_LEVELS[0], JP_LEVELS[1])),
        CLIENT_JP_WIRE
    );
    // RFC 3501 §5.1.3's own example, and '&'.
    assert_eq!(
        mutf7_encode("~peter/mail/台北/日本語"),
        "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    );
    assert_eq!(mutf7_encode("A&B"), "A&-B");

    let (old, new) = tokio::join!(
        Dovecot::start(Layout::Old, false),
        Dovecot::start(Layout::New, false)
    );
    seed_standard(&old, &new).await;
    let mut c = old.client("alice").await;
    let list = c.cmd(r#"LIST "" "INBOX.*""#).await;
    list.assert_ok();
    let entries = list.list_entries();
    let leaf = entries
        .iter()
        .find(|e| e.name == OLD_JP_WIRE)
        .unwrap_or_else(|| panic!("{OLD_JP_WIRE} not listed:\n{}", list.text()));
    assert!(leaf.is_selectable(), "{leaf:?}");
    let parent = entries
        .iter()
        .find(|e| e.name == OLD_JP_PARENT_WIRE)
        .unwrap_or_else(|| panic!("{OLD_JP_PARENT_WIRE} not listed:\n{}", list.text()));
    assert!(
        !parent.is_selectable() && parent.has_attr("\\HasChildren"),
        "{parent:?}"
    );

    c.cmd(&format!("EXAMINE {}", quoted(OLD_JP_WIRE)))
        .await
        .assert_ok();
    let f = c.cmd("FETCH 1 BODY.PEEK[]").await;
    f.assert_ok();
    assert_eq!(f.untagged.len(), 1, "one response holding the literal");
    let raw = &f.untagged[0];
    assert!(raw.ends_with(b")\r\n"));
    let jp = jp_message();
    assert!(
        raw.windows(jp.len()).any(|w| w == jp.as_slice()),
        "body round-trips"
    );
    assert!(raw.windows(3).any(|w| w == b"\x1b$B"), "ISO-2022-JP escape");
    c.logout().await;
}

#[tokio::test]
async fn snapshot_is_stable_and_sees_changes() {
    let (old, new) = tokio::join!(
        Dovecot::start(Layout::Old, false),
        Dovecot::start(Layout::New, false)
    );
    seed_standard(&old, &new).await;
    let first = old.snapshot("alice").await;
    let second = old.snapshot("alice").await;
    assert_eq!(first, second, "snapshot must not change the store");
    for needle in [
        "== MAILBOX INBOX.Sent",
        OLD_JP_WIRE,
        "\\Recent",
        "UIDVALIDITY",
        "== LSUB",
    ] {
        assert!(first.contains(needle), "{needle} missing from:\n{first}");
    }
    assert!(first.contains(&format!(
        "== MAILBOX {OLD_JP_PARENT_WIRE}\n(not selectable)"
    )));

    // A read-only client that only EXAMINEs and PEEKs changes nothing either.
    let mut c = old.client("alice").await;
    c.cmd("EXAMINE INBOX").await.assert_ok();
    c.cmd("FETCH 1:* (FLAGS BODY.PEEK[])").await.assert_ok();
    c.logout().await;
    assert_eq!(first, old.snapshot("alice").await);

    // Dovecot answers STORE in an EXAMINEd mailbox with OK but changes nothing.
    let mut c = old.client("alice").await;
    c.cmd("EXAMINE INBOX").await.assert_ok();
    let store = c.cmd("STORE 1:* +FLAGS (\\Deleted)").await;
    assert!(!store.is_bad(), "{}", store.text());
    c.logout().await;
    assert_eq!(first, old.snapshot("alice").await);

    // A flag change that is reverted still shows (HIGHESTMODSEQ).
    let mut c = old.client("alice").await;
    c.cmd("SELECT INBOX.Sent").await.assert_ok();
    let after_select = old.snapshot("alice").await;
    assert_ne!(first, after_select, "SELECT takes \\Recent");
    c.cmd("STORE 1 +FLAGS (\\Flagged)").await.assert_ok();
    c.cmd("STORE 1 -FLAGS (\\Flagged)").await.assert_ok();
    c.logout().await;
    assert_ne!(after_select, old.snapshot("alice").await, "modseq moved");

    let before = new.snapshot("alice").await;
    new.append("alice", "Work", "", &message("One more", "x"))
        .await;
    let after = new.snapshot("alice").await;
    assert_ne!(before, after);
    new.create("alice", "Projects/2024").await;
    new.subscribe("alice", "Projects/2024").await;
    let later = new.snapshot("alice").await;
    assert!(later.contains("== MAILBOX Projects/2024"), "{later}");
    assert!(later.contains(r#"* LSUB () "/" Projects/2024"#), "{later}");
}

#[tokio::test]
async fn tls_dovecot_offers_imaps_and_starttls() {
    let d = Dovecot::start(Layout::New, true).await;
    let ca = d.ca_der().expect("TLS instance has a CA");
    let ca_pem = std::fs::read_to_string(d.ca_pem_path().unwrap()).unwrap();
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let mut c = TestClient::tls(d.imaps_addr().expect("imaps"), &ca).await;
    assert!(c.is_tls());
    let g = c.greeting().await;
    assert!(g.starts_with(b"* OK"), "{}", lossy(&g));
    c.login("dave", WEIRD_PASSWORD).await.assert_ok();
    c.logout().await;

    let mut c = TestClient::plain(d.addr()).await;
    let g = c.greeting().await;
    assert!(lossy(&g).contains("STARTTLS"), "{}", lossy(&g));
    c.cmd("STARTTLS").await.assert_ok();
    let mut c = c.starttls(&ca).await;
    let caps = c.cmd("CAPABILITY").await;
    caps.assert_ok();
    assert!(!caps.text().contains("STARTTLS"), "{}", caps.text());
    c.login("alice", PASSWORD).await.assert_ok();
    c.cmd("SELECT INBOX").await.assert_ok();
    c.logout().await;

    // A certificate we do not trust is refused.
    let (_, _, other_ca) = self_signed_cert();
    let imaps = d.imaps_addr().unwrap();
    let handshake = tokio::spawn(async move { TestClient::tls(imaps, &other_ca).await });
    assert!(
        handshake.await.is_err(),
        "handshake with an untrusted cert must fail"
    );
}

#[tokio::test]
async fn restart_keeps_ports_and_mail() {
    let mut d = Dovecot::start(Layout::Old, false).await;
    d.append("alice", "INBOX", "(\\Seen)", &message("Persist", "me"))
        .await;
    let before = d.snapshot("alice").await;
    let addr = d.addr();

    let mut other = d.client("bob").await;
    d.kill_sessions();
    assert!(other.is_closed().await, "kill_sessions ends sessions");
    assert!(d.is_running());
    let mut idle = d.client("alice").await;
    d.stop().await;
    assert!(!d.is_running());
    assert!(idle.is_closed().await, "sessions end when Dovecot stops");

    d.restart().await;
    assert!(d.is_running());
    assert_eq!(d.addr(), addr);
    assert_eq!(before, d.snapshot("alice").await);
    assert!(d.log().contains("Killed with signal 15"), "{}", d.log());
}

#[tokio::test]
async fn client_timing_helpers() {
    let d = Dovecot::start(Layout::New, false).await;
    let mut c = d.client("alice").await;
    assert_eq!(c.next_tag(), "t2", "t1 was LOGIN");
    c.cmd("SELECT INBOX").await.assert_ok();
    assert_eq!(
        c.try_response_within(Duration::from_millis(200)).await,
        None
    );
    assert!(!c.is_closed().await);
    // NOOP after another session's APPEND reports EXISTS.
    d.append("alice", "INBOX", "", &message("Arrives", "now"))
        .await;
    let r = c.cmd("NOOP").await;
    assert!(r.lines().iter().any(|l| l == "* 1 EXISTS"), "{}", r.text());
    // IDLE: `+`, then an unsolicited EXISTS, then DONE.
    c.send(b"i1 IDLE\r\n").await;
    assert!(c.response().await.starts_with(b"+"));
    d.append("alice", "INBOX", "", &message("Arrives too", "now"))
        .await;
    let pushed = c
        .try_response_within(Duration::from_secs(5))
        .await
        .expect("IDLE push");
    assert!(lossy(&pushed).contains("EXISTS"), "{}", lossy(&pushed));
    c.send(b"DONE\r\n").await;
    c.read_until_tagged("i1").await.assert_ok();
    let bad = c.cmd("FROBNICATE").await;
    assert!(bad.is_bad() && !bad.is_ok() && !bad.is_no());
    let r = c.cmd("LOGOUT").await;
    assert!(r.lines()[0].starts_with("* BYE"));
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn messages_have_the_promised_shape() {
    let m = message("Hello", "line one\nline two");
    assert!(m.ends_with(b"line two\r\n"));
    assert!(!lossy(&m).replace("\r\n", "").contains('\n'), "CRLF only");
    assert_ne!(message("A", "x"), message("B", "x"));
    for size in [1_000, 1_001, 4_096, 100_000] {
        let big = big_message(size);
        assert_eq!(big.len(), size);
        assert!(big.ends_with(b"\r\n"));
        for line in lossy(&big).split("\r\n") {
            assert!(line.len() <= 76, "line of {} chars", line.len());
            assert!(!line.contains('\n') && !line.contains('\r'));
        }
        assert_eq!(big, big_message(size), "deterministic");
    }

    let d = Dovecot::start(Layout::New, false).await;
    let big = big_message(300_000);
    d.append("alice", "INBOX", "", &big).await;
    let mut c = d.client("alice").await;
    c.cmd("EXAMINE INBOX").await.assert_ok();
    let r = c.cmd("FETCH 1 (RFC822.SIZE BODY.PEEK[])").await;
    r.assert_ok();
    assert!(
        r.text().contains("RFC822.SIZE 300000"),
        "{}",
        r.lines()[0].len()
    );
    assert!(
        r.untagged[0]
            .windows(big.len())
            .any(|w| w == big.as_slice())
    );
}

#[test]
fn response_framing() {
    let cases: &[(&[u8], Option<usize>)] = &[
        (b"* OK hi\r\n", Some(9)),
        (b"* OK hi", None),
        (b"t1 OK done {5}\r\nmore", Some(16)),
        (b"* OK [ALERT] text {5}\r\n", Some(23)),
        (b"* BYE gone {3}\r\n", Some(16)),
        (b"+ go ahead {2}\r\n", Some(16)),
        (b"+\r\n", Some(3)),
        (b"* 1 FETCH (BODY[] {5}\r\nhello)\r\n", Some(31)),
        (b"* 1 FETCH (BODY[] {5}\r\nhel", None),
        (b"* 1 FETCH (BODY[] {5}\r\nhello)", None),
        (b"* 1 FETCH (BODY[] {5}\r\nhe\r\nl)\r\n* 2", Some(31)),
        (b"* 1 FETCH (A {1}\r\nx B {2+}\r\nyz)\r\n", Some(33)),
        (b"* 1 FETCH (BINARY[] ~{3}\r\n\x00\x01\x02)\r\n", Some(32)),
        (b"* LIST () \"/\" {3}\r\na b\r\n", Some(24)),
        (b"* SEARCH 1 2 {x}\r\n", Some(18)),
        (b"* 1 FETCH (BODY[] {0}\r\n)\r\n", Some(26)),
    ];
    for (buf, want) in cases {
        assert_eq!(
            complete_response_len(buf),
            *want,
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn reply_helpers() {
    let r = Reply {
        untagged: vec![b"* LIST (\\HasNoChildren \\Sent) \".\" INBOX.Sent\r\n".to_vec()],
        tagged: b"t3 NO [TRYCREATE] Mailbox doesn't exist\r\n".to_vec(),
    };
    assert!(r.is_no() && !r.is_ok() && !r.is_bad());
    assert_eq!(r.code().as_deref(), Some("TRYCREATE"));
    assert_eq!(
        r.lines(),
        vec!["* LIST (\\HasNoChildren \\Sent) \".\" INBOX.Sent"]
    );
    assert!(r.text().contains("TRYCREATE"));
    let ok = Reply {
        untagged: vec![],
        tagged: b"t1 ok plain\r\n".to_vec(),
    };
    assert!(ok.is_ok());
    assert_eq!(ok.code(), None);

    let e = parse_list(b"* LIST (\\Noselect) \"/\" \"a \\\"q\\\" b\"\r\n").unwrap();
    assert_eq!(e.name, "a \"q\" b");
    let e = parse_list(b"* LSUB () NIL {5}\r\nab cd\r\n").unwrap();
    assert_eq!((e.delimiter, e.name.as_str()), (None, "ab cd"));
    assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
}

#[tokio::test]
async fn password_table_is_consistent() {
    assert_eq!(password_for("dave"), WEIRD_PASSWORD);
    assert_eq!(password_for("alice"), PASSWORD);
    assert_eq!(USERS.len(), 6);
    let r = std::panic::catch_unwind(|| password_for("mallory"));
    assert!(r.is_err());
    assert_eq!(password_for(&bulk_user(BULK_USERS)), PASSWORD);
    for not_bulk in ["bulk0", "bulk07", "bulk51"] {
        let r = std::panic::catch_unwind(|| password_for(not_bulk));
        assert!(r.is_err(), "{not_bulk}");
    }
}

#[tokio::test]
async fn witness_script_runs_against_tls_dovecot() {
    let (old, new) = tokio::join!(
        Dovecot::start(Layout::Old, true),
        Dovecot::start(Layout::New, false)
    );
    seed_standard(&old, &new).await;
    let imaps = old.imaps_addr().unwrap();
    let (host, port) = imaps.rsplit_once(':').unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/witness.py");
    let ca = old.ca_pem_path().unwrap();
    let out = tokio::task::spawn_blocking({
        let (host, port) = (host.to_string(), port.to_string());
        move || {
            std::process::Command::new("python3")
                .arg(script)
                .args([&host, &port])
                .arg(&ca)
                .args([
                    "alice",
                    PASSWORD,
                    "--old-inbox",
                    "INBOX",
                    "--new-inbox",
                    "INBOX.Sent",
                ])
                .output()
                .expect("python3 must be installed to run tests/witness.py")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    for needle in [
        r#""ok": true"#,
        r#""INBOX": 3"#,
        r#""INBOX.Sent": 2"#,
        OLD_JP_WIRE,
        r#""deleted_after": false"#,
    ] {
        assert!(last.contains(needle), "{needle} not in {last}");
    }
}

#[tokio::test]
async fn ferry_config_parses_for_every_backend_tls_mode() {
    use ferry::config::{BackendTls, Phase};
    let (old, new) = tokio::join!(
        Dovecot::start(Layout::Old, true),
        Dovecot::start(Layout::New, true)
    );
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ferry.crt"), dir.path().join("ferry.key"));
    for (old_tls, new_tls) in [
        (BackendTls::None, BackendTls::None),
        (BackendTls::Implicit, BackendTls::Starttls),
        (BackendTls::Starttls, BackendTls::Implicit),
    ] {
        let builder = TestEnv::builder()
            .old_tls(old_tls)
            .new_tls(new_tls)
            .allow_plaintext(true)
            .extra_toml("[limits]\nmax_line_bytes = 4096\n");
        let toml = builder.toml(&old, &new, &cert, &key);
        let config = ferry::config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(config.backends.old.tls, old_tls);
        assert_eq!(config.backends.new.tls, new_tls);
        assert!(config.auth.allow_plaintext);
        assert_eq!(config.limits.max_line_bytes, 4096);
        assert_eq!(config.migration.phase_for("olga"), Phase::Old);
        assert_eq!(config.migration.phase_for("nils"), Phase::New);
        assert_eq!(config.migration.phase_for("alice"), Phase::Merged);
        let expected_old = match old_tls {
            BackendTls::Implicit => old.imaps_addr().unwrap(),
            _ => old.addr(),
        };
        assert_eq!(config.backends.old.address, expected_old);
        if old_tls != BackendTls::None {
            assert_eq!(config.backends.old.ca, old.ca_pem_path());
            assert_eq!(
                config.backends.old.server_name.as_deref(),
                Some("localhost")
            );
        }
    }
}
