//! Passwords and AUTHENTICATE data never reach the logs, even at TRACE.

mod common;

use std::sync::{Arc, Mutex};

use base64::Engine;
use common::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("logged in"), "logs were captured: {logs}");
    for secret in [WEIRD_PASSWORD, "p(a)s*s", "wrong-Passw0rd", ir.as_str()] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}
