//! The bugs found by trying and fuzzing Ferry, against real Dovecot stores:
//! each is also a transcript in `src/session/transcripts/`.

mod common;

use common::*;

/// `APPEND` into a folder that does not exist, with a LITERAL+ message that
/// arrives after the store's early `NO [TRYCREATE]`: the message's lines
/// (one of them a valid command) are never read as commands.
async fn refused_append(c: &mut TestClient, missing: &str) {
    let body = "From: x@example.org\r\nSubject: evil\r\n\r\nz1 DELETE INBOX\r\nz2 CREATE Pwned\r\n";
    c.send(format!("r1 APPEND {missing} {{{}+}}\r\n", body.len()).as_bytes())
        .await;
    // The store refuses before the message arrives.
    let refused = c.read_until_tagged("r1").await;
    refused.assert_no();
    assert_eq!(
        refused.code().as_deref(),
        Some("TRYCREATE"),
        "{}",
        refused.text()
    );
    c.send(body.as_bytes()).await;
    c.send(b"\r\n").await;
    let after = c.cmd("NOOP").await;
    after.assert_ok();
    let seen = after.text();
    assert!(
        !seen.contains("z1 ") && !seen.contains("z2 ") && !seen.contains("BAD"),
        "the message was read as commands:\n{seen}"
    );
    // Nothing of it happened.
    let list = c.cmd("LIST \"\" \"*\"").await;
    list.assert_ok();
    assert!(!list.text().contains("Pwned"), "{}", list.text());
    c.cmd("STATUS INBOX (MESSAGES)").await.assert_ok();
}

#[tokio::test]
async fn a_refused_commands_literal_is_never_executed() {
    let env = TestEnv::start().await;
    // Merged (NEW refuses), and the pass-through phases (the store refuses).
    for (user, missing) in [
        ("alice", "nosuchfolder"),
        ("nils", "nosuchfolder"),
        ("olga", "INBOX.nosuchfolder"),
    ] {
        let mut c = env.login(user).await;
        refused_append(&mut c, missing).await;
        c.logout().await;
    }
    // Refused by Ferry: an APPEND into Old/, non-synchronizing.
    let mut c = env.login("alice").await;
    let body = "a9 DELETE Work\r\n";
    c.send(format!("r2 APPEND Old/Sent {{{}+}}\r\n", body.len()).as_bytes())
        .await;
    c.send(body.as_bytes()).await;
    c.send(b"\r\n").await;
    let r = c.read_until_tagged("r2").await;
    r.assert_no();
    let status = c.cmd("STATUS Work (MESSAGES)").await;
    status.assert_ok();
    assert!(!status.text().contains("a9 "), "{}", status.text());
    env.shutdown().await;
}

#[tokio::test]
async fn nested_old_folders_open_as_the_first_command() {
    let env = TestEnv::start().await;
    for command in [
        "SELECT Old/Archive/2019".to_string(),
        "EXAMINE Old/Archive/2019".to_string(),
        "STATUS Old/Archive/2019 (MESSAGES)".to_string(),
        format!("SELECT {CLIENT_JP_WIRE}"),
        format!("STATUS {CLIENT_JP_WIRE} (MESSAGES UIDNEXT)"),
    ] {
        let mut c = env.login("alice").await;
        let r = c.cmd(&command).await;
        assert!(r.is_ok(), "{command} on a fresh connection:\n{}", r.text());
        if command.starts_with("STATUS") {
            let folder = command.split(' ').nth(1).unwrap();
            assert!(
                r.text().contains(&format!("* STATUS {folder} (")),
                "{}",
                r.text()
            );
        } else {
            assert!(r.text().contains("EXISTS"), "{}", r.text());
        }
        c.logout().await;
    }
    // What LIST hides stays hidden.
    let mut c = env.login("alice").await;
    let r = c.cmd("SELECT Old/INBOX/Archive").await;
    r.assert_no();
    assert_eq!(r.code().as_deref(), Some("NONEXISTENT"));
    env.shutdown().await;
}

/// The same through Python's imaplib, an independent client.
#[tokio::test]
async fn imaplib_reopens_nested_old_folders_first() {
    let env = TestEnv::start().await;
    run_witness(
        &env,
        "witness_reopen.py",
        "alice",
        &["Old/Archive/2019", CLIENT_JP_WIRE, "Old/Sent"],
    )
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn a_clean_logout_in_a_pass_through_phase_ends_with_its_ok() {
    let env = TestEnv::start().await;
    for user in ["olga", "nils"] {
        let mut c = env.login(user).await;
        c.cmd("SELECT INBOX").await.assert_ok();
        c.send(b"z LOGOUT\r\n").await;
        let r = c.read_until_tagged("z").await;
        r.assert_ok();
        assert!(r.text().contains("* BYE"), "{}", r.text());
        assert!(c.is_closed().await, "{user}: the connection stays open");
        assert!(
            c.buffered().is_empty(),
            "{user}: sent after the LOGOUT's OK: {}",
            lossy(c.buffered())
        );
    }
    env.shutdown().await;
}
