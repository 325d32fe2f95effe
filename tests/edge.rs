//! Ferry behind a real HAProxy speaking the PROXY protocol (v1 and v2):
//! clients on other loopback addresses (127.0.0.5, 127.0.0.6) keep their
//! own address in Ferry's connection limits and at the stores, which log
//! them (`rip=`) because Ferry passes it on with IMAP ID.

mod common;

use std::net::Ipv4Addr;

use common::*;

fn captured_logs() -> Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

async fn behind_proxy(trusted: &str) -> TestEnv {
    TestEnv::builder()
        .extra_toml("[metrics]\nlisten = \"127.0.0.1:0\"\n")
        .listen_toml(&format!(
            "proxy_protocol = true\ntrusted_proxies = [\"{trusted}\"]\n"
        ))
        // Dovecot takes x-originating-ip only from networks it trusts.
        .new_conf("login_trusted_networks = 127.0.0.1/32\n")
        .extra_toml("[limits]\nmax_connections_per_ip = 1\n")
        .start()
        .await
}

#[tokio::test]
async fn clients_behind_haproxy_keep_their_own_addresses() {
    let logs = captured_logs();
    let env = behind_proxy("127.0.0.1/32").await;
    for option in ["send-proxy", "send-proxy-v2"] {
        let imaps = Haproxy::start(env.ferry.imaps_addr().unwrap(), option).await;
        let imap = Haproxy::start(env.ferry.imap_addr().unwrap(), option).await;
        // TLS right after the header: the handshake finds its ClientHello.
        let mut a = TestClient::tls_over(connect_from(A, imaps.addr()).await, &env.ca).await;
        assert!(a.greeting().await.starts_with(b"* OK"));
        a.login("alice", password_for("alice")).await.assert_ok();
        a.cmd("SELECT INBOX").await.assert_ok();
        // The per-address limit counts 127.0.0.5, not HAProxy's 127.0.0.1:
        // a second connection from .5 is turned away, one from .6 is not.
        let mut again = TestClient::plain_over(connect_from(A, imap.addr()).await);
        let refused = again.greeting().await;
        assert!(
            refused.starts_with(b"* BYE Too many connections"),
            "{option}: {}",
            lossy(&refused)
        );
        let mut b = TestClient::plain_over(connect_from(B, imap.addr()).await);
        assert!(b.greeting().await.starts_with(b"* OK"), "{option}");
        b.logout().await;
        a.logout().await;
    }
    // The login throttle counts 127.0.0.5's failure against 127.0.0.5 only:
    // its next login waits, 127.0.0.6's does not.
    let imaps = Haproxy::start(env.ferry.imaps_addr().unwrap(), "send-proxy-v2").await;
    let delayed = |m: &str| sample(m, "ferry_auth_throttled_total", &[("kind", "delayed")]);
    let before = delayed(&scrape(&env).await);
    let mut a = TestClient::tls_over(connect_from(A, imaps.addr()).await, &env.ca).await;
    a.greeting().await;
    a.login("bob", "not-bobs-password").await.assert_no();
    let mut b = TestClient::tls_over(connect_from(B, imaps.addr()).await, &env.ca).await;
    b.greeting().await;
    b.login("carol", password_for("carol")).await.assert_ok();
    assert_eq!(
        delayed(&scrape(&env).await),
        before,
        "127.0.0.6 was slowed down"
    );
    a.login("carol", password_for("carol")).await.assert_ok();
    assert_eq!(
        delayed(&scrape(&env).await),
        before + 1.0,
        "127.0.0.5 was not"
    );
    let headers = sample(
        &scrape(&env).await,
        "ferry_proxy_headers_total",
        &[("result", "ok")],
    );
    assert!(headers >= 5.0, "{headers}");
    // Ferry's own log names the client, not HAProxy.
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains(r#"login failed client=127.0.0.5 user="bob" reason="password""#),
        "{text}"
    );
    assert!(text.contains("client.addr=127.0.0.5:"), "{text}");
    assert!(text.contains("peer.addr=127.0.0.1:"), "{text}");
    // NEW logged the client's address, which Ferry sent with ID.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = env.new.log();
        if log.contains("user=<alice>") && log.contains("rip=127.0.0.5") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "NEW did not log the client's address:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn proxy_headers_from_untrusted_senders_and_connections_without_one_are_closed() {
    captured_logs();
    // HAProxy (127.0.0.1) is not among the trusted proxies.
    let env = behind_proxy("10.0.0.0/8").await;
    let imap = Haproxy::start(env.ferry.imap_addr().unwrap(), "send-proxy-v2").await;
    let mut c = TestClient::plain_over(connect_from(A, imap.addr()).await);
    assert!(
        c.is_closed().await,
        "an untrusted PROXY header was accepted"
    );
    assert!(c.buffered().is_empty(), "{}", lossy(c.buffered()));
    // A client that talks IMAP to a listener that wants a header first.
    let env = behind_proxy("127.0.0.1/32").await;
    let mut c = TestClient::plain(env.ferry.imap_addr().unwrap()).await;
    c.send(b"a1 LOGIN alice secret\r\n").await;
    assert!(c.is_closed().await, "IMAP without a PROXY header was read");
    assert!(c.buffered().is_empty(), "{}", lossy(c.buffered()));
}
