//! The log lines an operator acts on, from the real binary: one line per
//! failed login with the client's address, the user and a reason (matched
//! by the shipped fail2ban filter), one line per session end, no secret,
//! and the same as JSON with `[log] format = "json"`.

mod common;

use std::net::Ipv4Addr;

use common::*;

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const WRONG: &str = "Wr0ng-pass(word)";

/// Logs in once with a wrong password and once rightly, from 127.0.0.5,
/// then stops Ferry and returns its log.
async fn scenario(extra_toml: &str) -> String {
    let env = TestEnv::start().await;
    let (mut child, addr, log) = ferry_process_logged(&env, extra_toml).await;
    let tcp = connect_from(CLIENT, addr.parse().unwrap()).await;
    let mut c = TestClient::tls_over(tcp, &env.ca).await;
    c.greeting().await;
    c.login("alice", WRONG).await.assert_no();
    c.login("alice", password_for("alice")).await.assert_ok();
    c.cmd("SELECT INBOX").await.assert_ok();
    c.logout().await;
    // The session's end is logged as the connection closes.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(send_signal(&child.id().to_string(), "-TERM"));
    let _ = child.wait();
    let text = std::fs::read_to_string(log).unwrap();
    for secret in [WRONG, PASSWORD] {
        assert!(!text.contains(secret), "{secret:?} is in the log:\n{text}");
    }
    text
}

/// The shipped filter's failregex, as fail2ban turns `<HOST>` into a group.
fn fail2ban_regex() -> String {
    let filter = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/fail2ban/filter.d/ferry.conf"),
    )
    .unwrap();
    let line = filter
        .lines()
        .find_map(|l| l.strip_prefix("failregex = "))
        .expect("a failregex");
    line.replace("<HOST>", r"(?P<host>\S+)")
}

#[tokio::test]
async fn failed_logins_and_session_ends_are_one_line_each() {
    let text = scenario("").await;
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("login failed"))
        .collect();
    assert_eq!(failed.len(), 1, "log:\n{text}");
    assert!(
        failed[0].contains(r#"login failed client=127.0.0.5 user="alice" reason="password""#),
        "{}",
        failed[0]
    );
    // fail2ban's own regex engine is Python's: the shipped filter finds the
    // client's address in the line.
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg("import re,sys; m=re.search(sys.argv[1], sys.argv[2]); print(m.group('host') if m else '')")
        .arg(fail2ban_regex())
        .arg(failed[0])
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.5");
    let ended: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("session ended") && l.contains("127.0.0.5"))
        .collect();
    assert_eq!(ended.len(), 1, "{text}");
    for field in [
        "reason=\"logout\"",
        "duration_ms=",
        "commands=4",
        "bytes_in=",
        "bytes_out=",
    ] {
        assert!(ended[0].contains(field), "{field} missing: {}", ended[0]);
    }
}

#[tokio::test]
async fn json_logs_carry_the_same_fields() {
    let text = scenario("[log]\nformat = \"json\"\n").await;
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let failed = events
        .iter()
        .find(|e| e["fields"]["message"] == "login failed")
        .expect("a failed-login event");
    assert_eq!(failed["fields"]["client"], "127.0.0.5");
    assert_eq!(failed["fields"]["reason"], "password");
    let ended = events
        .iter()
        .find(|e| e["fields"]["message"] == "session ended" && e["fields"]["reason"] == "logout")
        .expect("a session-end event");
    assert!(ended["fields"]["commands"].as_u64().unwrap() >= 3);
    let spans = ended["spans"].as_array().expect("the session's span");
    assert!(
        spans.iter().any(|s| s["client.addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.5:"))),
        "{ended}"
    );
}

/// A client that connects by IP address and sends that address as its SNI
/// name (RFC 6066 forbids it; OpenSSL-based clients do it when told the
/// address as the server's name) is served without a WARN line.
#[tokio::test]
async fn an_ip_address_as_sni_is_not_a_warning() {
    let env = TestEnv::start().await;
    let (mut child, addr, log) = ferry_process_logged(&env, "").await;
    let said = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut openssl = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr, "-servername", "127.0.0.1"])
            // -quiet waits for Ferry to close after LOGOUT.
            .args(["-quiet", "-crlf"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl");
        let mut stdin = openssl.stdin.take().unwrap();
        stdin.write_all(b"a LOGOUT\n").unwrap();
        drop(stdin);
        let out = openssl.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    assert!(said.contains("a OK"), "openssl s_client got: {said}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(send_signal(&child.id().to_string(), "-TERM"));
    let _ = child.wait();
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("session ended"), "{text}");
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}
