//! Logging in: TLS, STARTTLS, LOGIN and AUTHENTICATE PLAIN with byte-exact
//! passwords, wrong passwords, phases, and store TLS modes.

mod common;

use base64::Engine;
use common::*;
use ferry::config::BackendTls;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sends `{tag} {head}{n+}` CRLF, `data`, then `tail` and CRLF (a LITERAL+
/// literal) and returns the tagged answer.
async fn with_literal(c: &mut TestClient, head: &str, data: &[u8], tail: &str) -> Reply {
    let tag = c.next_tag();
    let mut cmd = format!("{tag} {head}{{{}+}}\r\n", data.len()).into_bytes();
    cmd.extend_from_slice(data);
    cmd.extend_from_slice(format!("{tail}\r\n").as_bytes());
    c.send(&cmd).await;
    c.read_until_tagged(&tag).await
}

#[tokio::test]
async fn special_character_passwords_reach_the_stores_byte_for_byte() {
    let env = TestEnv::start().await;
    let pw = WEIRD_PASSWORD.as_bytes();
    // LOGIN with a synchronizing literal.
    let mut c = env.imaps_client().await;
    c.login("dave", pw).await.assert_ok();
    c.logout().await;
    // LOGIN with a LITERAL+ literal.
    let mut c = env.imaps_client().await;
    with_literal(&mut c, "LOGIN \"dave\" ", pw, "")
        .await
        .assert_ok();
    // AUTHENTICATE PLAIN with SASL-IR.
    let plain = [&b"\0dave\0"[..], pw].concat();
    let mut c = env.imaps_client().await;
    c.cmd(&format!("AUTHENTICATE PLAIN {}", b64(&plain)))
        .await
        .assert_ok();
    // AUTHENTICATE PLAIN without SASL-IR.
    let mut c = env.imaps_client().await;
    let tag = c.next_tag();
    c.send(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes())
        .await;
    assert!(c.response().await.starts_with(b"+"));
    c.send(format!("{}\r\n", b64(&plain)).as_bytes()).await;
    let r = c.read_until_tagged(&tag).await;
    r.assert_ok();
    assert!(
        r.tagged_line().contains("[CAPABILITY IMAP4rev1"),
        "{}",
        r.text()
    );
    // A quoted password with escapes.
    let mut c = env.imaps_client().await;
    c.cmd("LOGIN alice \"secret\"").await.assert_ok();
    // And the same password also works on OLD (lazy login when Old/ is first used).
    let mut c = env.login("dave").await;
    c.cmd("SELECT Old/INBOX").await.assert_ok();
}

#[tokio::test]
async fn wrong_password_is_authenticationfailed_in_ferrys_words() {
    let env = TestEnv::start().await;
    let mut c = env.imaps_client().await;
    let r = c.login("alice", "wrong").await;
    r.assert_no();
    assert_eq!(r.code().as_deref(), Some("AUTHENTICATIONFAILED"));
    assert!(
        !r.text().contains("secs"),
        "no backend wording: {}",
        r.text()
    );
    let r = c.login("nobody", "secret").await;
    assert_eq!(
        r.tagged_line().split_once(' ').unwrap().1,
        "NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    // The session is still usable.
    c.login("alice", PASSWORD).await.assert_ok();
}

#[tokio::test]
async fn plaintext_port_requires_starttls_and_upgrades() {
    let env = TestEnv::start().await;
    let addr = env.ferry.imap_addr().unwrap();
    let mut c = TestClient::plain(addr).await;
    let greeting = lossy(&c.greeting().await);
    assert!(
        greeting.contains("STARTTLS") && greeting.contains("LOGINDISABLED"),
        "{greeting}"
    );
    let r = c.login("alice", PASSWORD).await;
    r.assert_no();
    assert_eq!(r.code().as_deref(), Some("PRIVACYREQUIRED"));
    c.cmd("STARTTLS").await.assert_ok();
    let mut c = c.starttls(&env.ca).await;
    let caps = c.cmd("CAPABILITY").await;
    assert!(
        caps.text().contains("AUTH=PLAIN") && !caps.text().contains("STARTTLS"),
        "{}",
        caps.text()
    );
    c.login("alice", PASSWORD).await.assert_ok();
    c.cmd("LIST \"\" \"%\"").await.assert_ok();
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_never_executed() {
    let env = TestEnv::start().await;
    let before = env.new.snapshot("alice").await;
    let mut c = TestClient::plain(env.ferry.imap_addr().unwrap()).await;
    c.greeting().await;
    c.send(b"a STARTTLS\r\nb LOGIN alice secret\r\nc CREATE Injected\r\n")
        .await;
    let r = c.read_until_tagged("a").await;
    r.assert_bad();
    assert!(c.is_closed().await);
    assert_eq!(before, env.new.snapshot("alice").await);
}

#[tokio::test]
async fn allow_plaintext_permits_login_without_tls() {
    let env = TestEnv::builder().allow_plaintext(true).start().await;
    let mut c = TestClient::plain(env.ferry.imap_addr().unwrap()).await;
    let greeting = lossy(&c.greeting().await);
    assert!(
        greeting.contains("AUTH=PLAIN") && !greeting.contains("LOGINDISABLED"),
        "{greeting}"
    );
    c.login("alice", PASSWORD).await.assert_ok();
}

#[tokio::test]
async fn phases_old_and_new() {
    let env = TestEnv::start().await;
    // olga is in phase `old`: OLD exactly as it is, writable.
    let mut c = env.login("olga").await;
    let list = c.cmd("LIST \"\" \"*\"").await;
    let names: Vec<String> = list.list_entries().into_iter().map(|e| e.name).collect();
    assert!(names.contains(&"INBOX.Sent".to_string()), "{names:?}");
    assert!(
        list.list_entries()
            .iter()
            .all(|e| e.delimiter.as_deref() == Some("."))
    );
    c.cmd("CREATE INBOX.Kept").await.assert_ok();
    c.cmd("STARTTLS").await.assert_bad();
    let caps = c.cmd("CAPABILITY").await;
    // OLD's own COMPRESS is not shown: the one there is Ferry's
    // (tests/compress.rs).
    assert!(
        caps.text().matches("COMPRESS=").count() == 1 && !caps.text().contains("AUTH="),
        "{}",
        caps.text()
    );
    assert!(env.old.snapshot("olga").await.contains("INBOX.Kept"));
    // nils is in phase `new`: NEW only, no Old/.
    let mut c = env.login("nils").await;
    let list = c.cmd("LIST \"\" \"*\"").await;
    let names: Vec<String> = list.list_entries().into_iter().map(|e| e.name).collect();
    assert!(
        names.contains(&"Sent".to_string()) && !names.iter().any(|n| n.starts_with("Old")),
        "{names:?}"
    );
}

#[tokio::test]
async fn stores_over_implicit_tls_and_starttls() {
    let env = TestEnv::builder()
        .old_tls(BackendTls::Starttls)
        .new_tls(BackendTls::Implicit)
        .start()
        .await;
    let mut c = env.login("alice").await;
    let st = c.cmd("STATUS Old/INBOX (MESSAGES)").await;
    st.assert_ok();
    assert!(
        st.text().contains("* STATUS Old/INBOX (MESSAGES 3)"),
        "{}",
        st.text()
    );
    c.cmd("SELECT INBOX").await.assert_ok();
}

#[tokio::test]
async fn python_imaplib_witness() {
    let env = TestEnv::start().await;
    let ca = env.dir().join("ferry-ca.pem");
    std::fs::write(&ca, pem_of(&env.ca)).unwrap();
    let addr = env.ferry.imaps_addr().unwrap();
    // The witness blocks; Ferry runs on this test's runtime, so run it aside.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/witness.py"))
            .args([addr.ip().to_string(), addr.port().to_string()])
            .arg(&ca)
            .args(["alice", PASSWORD, "--server-name", "localhost"])
            .output()
            .expect("python3 (apt-get install -y python3)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Old/INBOX") && stdout.contains("\"ok\": true"),
        "{stdout}"
    );
}

/// Ferry's ID to the store goes with the login, without waiting for its
/// answer; a client's ID value that needs a synchronizing literal at the
/// store (8-bit) makes it run on its own first. Either way the login after
/// it goes through, its own literal included.
#[tokio::test]
async fn an_id_passed_on_that_needs_a_literal_still_precedes_the_login() {
    let env = TestEnv::start().await;
    let mut c = env.imaps_client().await;
    with_literal(&mut c, "ID (\"name\" ", "Thünderbird".as_bytes(), ")")
        .await
        .assert_ok();
    c.login("dave", WEIRD_PASSWORD.as_bytes()).await.assert_ok();
    let r = c.cmd("SELECT INBOX").await;
    r.assert_ok();
    c.logout().await;
}
