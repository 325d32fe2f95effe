//! The proxies Ferry is measured against (`benches/e2e.rs`) work in front
//! of the test store before their figures mean anything: a login, a SELECT
//! and a FETCH through each.

mod common;

use common::*;

/// Greeting, LOGIN, SELECT, a FETCH of a header field and LOGOUT through `c`.
async fn carries_a_session(mut c: TestClient) {
    let greeting = lossy(&c.greeting().await);
    assert!(greeting.starts_with("* OK"), "{greeting}");
    c.login("alice", password_for("alice")).await.assert_ok();
    c.cmd("SELECT INBOX").await.assert_ok();
    let fetch = c.cmd("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])").await;
    fetch.assert_ok();
    assert!(fetch.text().contains("Subject:"), "{}", fetch.text());
    c.logout().await;
}

#[tokio::test]
async fn nginx_mail_proxy_carries_an_imap_session_over_tls_to_the_store() {
    let env = TestEnv::builder().allow_plaintext(true).start().await;
    let (cert, key) = (env.dir().join("ferry.crt"), env.dir().join("ferry.key"));
    let nginx = Nginx::start_with_tls(env.new.socket_addr(), Some((&cert, &key))).await;
    carries_a_session(TestClient::tls(nginx.tls_addr().unwrap(), &env.ca).await).await;
}

#[tokio::test]
async fn dovecot_as_a_proxy_carries_an_imap_session_over_tls_to_the_store() {
    let env = TestEnv::builder().allow_plaintext(true).start().await;
    let proxy = Dovecot::start(Layout::New, true).await;
    proxy.proxy_to(env.new.socket_addr());
    let ca = proxy.ca_der().unwrap();
    carries_a_session(TestClient::tls(proxy.imaps_addr().unwrap(), &ca).await).await;
    // The session was NEW's: the proxy's own store has no mail for alice.
    assert!(
        !proxy.dir().join("mail/alice").exists(),
        "the proxy served alice itself"
    );
    assert!(env.new.dir().join("mail/alice").exists());
}

#[tokio::test]
async fn up_imapproxy_carries_an_imap_session_to_the_store() {
    let env = TestEnv::builder().allow_plaintext(true).start().await;
    let proxy = Imapproxy::start(env.new.socket_addr()).await;
    carries_a_session(TestClient::plain(proxy.addr()).await).await;
}
