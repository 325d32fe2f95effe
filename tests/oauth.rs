//! OAuth2 against real stores: a NEW Dovecot whose oauth2 passdb asks the
//! tests' token-introspection endpoint (`tests/oauth_introspect.py`).
//! Clients sign in through Ferry with their own XOAUTH2/OAUTHBEARER token,
//! and Ferry logs in to NEW with tokens its token command prints.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn xoauth2(user: &str, token: &str) -> String {
    b64(format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes())
}

fn oauthbearer(user: &str, token: &str) -> String {
    b64(format!("n,a={user},\x01auth=Bearer {token}\x01\x01").as_bytes())
}

/// `[backends.old.login]` by the master user, with its secret file.
fn old_by_master(dir: &std::path::Path) -> String {
    let secret = write_file(
        dir,
        "old-master.secret",
        format!("{MASTER_PASSWORD}\n").as_bytes(),
    );
    format!(
        "[backends.old.login]\nmode = \"master\"\nmaster_user = \"{MASTER_USER}\"\n\
         master_password_file = {:?}\n",
        secret.display().to_string()
    )
}

#[tokio::test]
async fn clients_sign_in_with_their_own_tokens() {
    let idp = Introspection::start().await;
    idp.grant("tok-alice", "alice");
    let dir = tempfile::tempdir().unwrap();
    let env = TestEnv::builder()
        .new_conf(&idp.dovecot_conf())
        .auth_toml("oauth = \"new\"\nverify = \"new\"\n")
        .extra_toml(&old_by_master(dir.path()))
        .start()
        .await;

    // XOAUTH2 with an initial response (Thunderbird, Outlook).
    let mut c = env.imaps_client().await;
    let caps = c.cmd("CAPABILITY").await;
    assert!(
        caps.text().contains("AUTH=XOAUTH2") && caps.text().contains("AUTH=OAUTHBEARER"),
        "{}",
        caps.text()
    );
    let r = c
        .cmd(&format!(
            "AUTHENTICATE XOAUTH2 {}",
            xoauth2("alice", "tok-alice")
        ))
        .await;
    r.assert_ok();
    // NEW's folders by the token; Old/ by OLD's master login.
    let r = c.cmd("SELECT INBOX").await;
    assert!(r.text().contains("* 2 EXISTS"), "{}", r.text());
    let r = c.cmd("SELECT Old/INBOX").await;
    r.assert_ok();
    assert!(r.text().contains("* 3 EXISTS"), "{}", r.text());
    c.logout().await;

    // OAUTHBEARER after an empty challenge (RFC 7628 without SASL-IR).
    let mut c = env.imaps_client().await;
    c.send(b"b1 AUTHENTICATE OAUTHBEARER\r\n").await;
    let challenge = c.response().await;
    assert!(challenge.starts_with(b"+"), "{}", lossy(&challenge));
    c.send(format!("{}\r\n", oauthbearer("alice", "tok-alice")).as_bytes())
        .await;
    c.read_until_tagged("b1").await.assert_ok();
    c.cmd("STATUS Work (MESSAGES)").await.assert_ok();
    c.logout().await;

    // A token NEW does not take: a failed login, nothing else.
    let mut c = env.imaps_client().await;
    let r = c
        .cmd(&format!(
            "AUTHENTICATE XOAUTH2 {}",
            xoauth2("alice", "stolen")
        ))
        .await;
    r.assert_no_with("AUTHENTICATIONFAILED");
    // Password clients still log in (NEW checks, OLD by its master user).
    env.login("olga").await.logout().await;
}

/// A token command that counts its runs in `dir/runs` and prints an OAuth2
/// token response for `tok-USER-N`.
fn token_script(dir: &std::path::Path) -> std::path::PathBuf {
    let script = write_file(
        dir,
        "ferry-token",
        format!(
            "#!/bin/sh\nn=$(( $(cat {runs} 2>/dev/null || echo 0) + 1 ))\necho $n > {runs}\n\
             printf '{{\"access_token\":\"tok-%s-%s\",\"token_type\":\"Bearer\",\"expires_in\":3600}}\\n' \"$1\" \"$n\"\n",
            runs = dir.join("runs").display()
        )
        .as_bytes(),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

fn runs(dir: &std::path::Path) -> u32 {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn ferry_logs_in_to_new_with_tokens_it_obtains_and_refreshes() {
    // NEW knows alice as alice@new.test: the token command is asked for
    // that name, and the token is good for it.
    let idp = Introspection::start().await;
    idp.grant("tok-alice@new.test-1", "alice@new.test");
    idp.grant("tok-alice@new.test-2", "alice@new.test");
    let dir = tempfile::tempdir().unwrap();
    let script = token_script(dir.path());
    let env = TestEnv::builder()
        .new_naming(Naming::Renamed)
        .new_conf(&idp.dovecot_conf())
        .auth_toml("verify = \"old\"\n")
        .extra_toml(&format!(
            "[backends.new.login]\nmode = \"oauth2\"\nmechanism = \"OAUTHBEARER\"\n\
             user = \"{{user}}@new.test\"\ntoken_command = [{:?}, \"{{user}}\"]\n",
            script.display().to_string()
        ))
        .start()
        .await;
    // The OLD password opens NEW by a token.
    let mut c = env.login("alice").await;
    let r = c.cmd("SELECT INBOX").await;
    assert!(r.text().contains("* 2 EXISTS"), "{}", r.text());
    c.logout().await;
    assert_eq!(runs(dir.path()), 1);
    // The token is cached until it expires.
    env.login("alice").await.logout().await;
    assert_eq!(runs(dir.path()), 1, "the cached token was not used");
    // Revoked (or expired early): NEW refuses it, Ferry asks for a new one
    // and the client never notices.
    idp.revoke("tok-alice@new.test-1");
    let mut c = env.login("alice").await;
    c.cmd("SELECT Work").await.assert_ok();
    c.logout().await;
    assert_eq!(runs(dir.path()), 2);
}

#[tokio::test]
async fn a_hanging_token_command_is_unavailable_not_a_hung_session() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_file(dir.path(), "hang", b"#!/bin/sh\nsleep 60\n");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let env = TestEnv::builder()
        .auth_toml("verify = \"old\"\n")
        .extra_toml(&format!(
            "[backends.new.login]\nmode = \"oauth2\"\ntoken_timeout_secs = 1\n\
             token_command = [{:?}]\n",
            script.display().to_string()
        ))
        .start()
        .await;
    let mut c = env.imaps_client().await;
    let started = Instant::now();
    let r = c.login("alice", password_for("alice")).await;
    r.assert_no_with("UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(10));
    c.cmd("NOOP").await.assert_ok();
}
