//! Passwords and AUTHENTICATE data never reach the logs, even at TRACE.

mod common;

use base64::Engine;
use common::*;

#[tokio::test]
async fn secrets_never_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let env = TestEnv::start().await;
    let mut c = env.imaps_client().await;
    c.login("dave", WEIRD_PASSWORD).await.assert_ok();
    c.cmd("SELECT Old/INBOX").await.assert_ok();
    let plain = [&b"\0alice\0"[..], PASSWORD.as_bytes()].concat();
    let ir = base64::engine::general_purpose::STANDARD.encode(&plain);
    let mut c = env.imaps_client().await;
    c.cmd(&format!("AUTHENTICATE PLAIN {ir}")).await.assert_ok();
    let mut c = env.imaps_client().await;
    c.login("alice", "wrong-Passw0rd").await.assert_no();
    drop(env);
    let dir = tempfile::tempdir().unwrap();
    let secrets = identities(&dir).await;
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("logged in"), "logs were captured: {logs}");
    assert!(
        logs.contains("login failed"),
        "a failed login was logged: {logs}"
    );
    let fixed = [WEIRD_PASSWORD, "p(a)s*s", "wrong-Passw0rd", ir.as_str()].map(String::from);
    for secret in fixed.iter().chain(&secrets) {
        assert!(
            !logs.contains(secret.as_str()),
            "{secret:?} appears in the logs"
        );
    }
}

/// Logins of every identity kind, at TRACE: a master user for NEW, a
/// client's own XOAUTH2 token, and tokens from a token command. Returns the
/// secrets that went by.
async fn identities(dir: &tempfile::TempDir) -> Vec<String> {
    let master = write_file(
        dir.path(),
        "master.secret",
        format!("{MASTER_PASSWORD}\n").as_bytes(),
    );
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    // OLD checks the password; NEW by its master user.
    let env = TestEnv::builder()
        .new_naming(Naming::Renamed)
        .auth_toml("verify = \"old\"\n")
        .extra_toml(&format!(
            "[backends.new.login]\nmode = \"master\"\nuser = \"{{user}}@new.test\"\n\
             master_user = \"{MASTER_USER}\"\nmaster_password_file = {:?}\n",
            master.display().to_string()
        ))
        .start()
        .await;
    let mut c = env.login("alice").await;
    c.cmd("SELECT Old/INBOX").await.assert_ok();
    c.logout().await;
    drop(env);
    // A client's own token for NEW; OLD by its master user.
    let idp = Introspection::start().await;
    idp.grant("tok-client-secret", "alice");
    let env = TestEnv::builder()
        .new_conf(&idp.dovecot_conf())
        .auth_toml("oauth = \"new\"\nverify = \"new\"\n")
        .extra_toml(&format!(
            "[backends.old.login]\nmode = \"master\"\nmaster_user = \"{MASTER_USER}\"\n\
             master_password_file = {:?}\n",
            master.display().to_string()
        ))
        .start()
        .await;
    let message = b64("user=alice\x01auth=Bearer tok-client-secret\x01\x01".into());
    let mut c = env.imaps_client().await;
    c.cmd(&format!("AUTHENTICATE XOAUTH2 {message}"))
        .await
        .assert_ok();
    c.cmd("SELECT Old/INBOX").await.assert_ok();
    c.logout().await;
    drop(env);
    // Tokens Ferry obtains for NEW.
    idp.grant("tok-command-secret", "alice");
    let script = write_file(dir.path(), "token", b"#!/bin/sh\necho tok-command-secret\n");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let env = TestEnv::builder()
        .new_conf(&idp.dovecot_conf())
        .auth_toml("verify = \"old\"\n")
        .extra_toml(&format!(
            "[backends.new.login]\nmode = \"oauth2\"\ntoken_command = [{:?}]\n",
            script.display().to_string()
        ))
        .start()
        .await;
    let mut c = env.login("alice").await;
    c.cmd("SELECT INBOX").await.assert_ok();
    c.logout().await;
    vec![
        MASTER_PASSWORD.into(),
        "tok-client-secret".into(),
        message,
        "tok-command-secret".into(),
        Naming::Renamed.password("alice"),
    ]
}
