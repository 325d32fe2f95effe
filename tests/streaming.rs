//! A 20 MB message passes through Ferry (APPEND and FETCH) with Ferry's memory
//! bounded by its buffers. Ferry runs as its own process here, so its peak RSS
//! (VmHWM) is Ferry's alone.

mod common;

use common::*;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn twenty_megabytes_stream_in_bounded_memory() {
    let env = TestEnv::builder().seed(false).start().await;
    let (mut child, addr) = ferry_process(&env).await;
    let pid = child.id();
    let mut c = TestClient::tls(addr.as_str(), &env.ca).await;
    c.greeting().await;
    c.login("alice", PASSWORD).await.assert_ok();
    c.cmd("LIST \"\" \"*\"").await.assert_ok();
    let baseline = vm_hwm_kib(pid);

    let msg = big_message(20 * 1024 * 1024);
    let digest = Sha256::digest(&msg);
    c.append("INBOX", "", &msg).await.assert_ok();
    c.cmd("SELECT INBOX").await.assert_ok();
    let tag = c.next_tag();
    c.send(format!("{tag} FETCH 1 (BODY.PEEK[])\r\n").as_bytes())
        .await;
    let r = c.read_until_tagged(&tag).await;
    r.assert_ok();
    let fetched = &r.untagged[0];
    let start = fetched.windows(3).position(|w| w == b"}\r\n").unwrap() + 3;
    assert_eq!(
        Sha256::digest(&fetched[start..start + msg.len()]),
        digest,
        "bytes changed in transit"
    );

    let peak = vm_hwm_kib(pid);
    let growth = peak.saturating_sub(baseline);
    println!("ferry peak RSS {peak} KiB, growth during 20 MB APPEND+FETCH: {growth} KiB");
    let _ = child.kill();
    let _ = child.wait();
    // Buffers are 16 KiB reads plus framer chunks; 4 MiB leaves room for the
    // allocator and TLS, and is far below the 20 MiB message.
    assert!(
        growth < 4 * 1024,
        "Ferry buffered the message: grew {growth} KiB"
    );
}

#[tokio::test]
async fn twenty_megabyte_copy_from_old_streams_in_bounded_memory() {
    let env = TestEnv::builder().seed(false).start().await;
    env.old.create("alice", "INBOX.Big").await;
    let msg = big_message(20 * 1024 * 1024);
    env.old.append("alice", "INBOX.Big", "(\\Seen)", &msg).await;
    let (mut child, addr) = ferry_process(&env).await;
    let pid = child.id();
    let mut c = TestClient::tls(addr.as_str(), &env.ca).await;
    c.greeting().await;
    c.login("alice", PASSWORD).await.assert_ok();
    c.cmd("SELECT Old/Big").await.assert_ok();
    let baseline = vm_hwm_kib(pid);
    c.cmd("COPY 1 INBOX").await.assert_ok();
    let peak = vm_hwm_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    let growth = peak.saturating_sub(baseline);
    println!("ferry peak RSS {peak} KiB, growth during a 20 MB cross-store COPY: {growth} KiB");

    let mut direct = env.new.client("alice").await;
    direct.cmd("EXAMINE INBOX").await.assert_ok();
    let r = direct.cmd("FETCH 1 (FLAGS BODY.PEEK[])").await;
    r.assert_ok();
    let fetched = &r.untagged[0];
    assert!(lossy(&fetched[..200]).contains("\\Seen"), "flags kept");
    let start = fetched.windows(3).position(|w| w == b"}\r\n").unwrap() + 3;
    assert_eq!(
        Sha256::digest(&fetched[start..start + msg.len()]),
        Sha256::digest(&msg),
        "bytes changed in the copy"
    );
    assert!(
        growth < 4 * 1024,
        "Ferry buffered the message: grew {growth} KiB"
    );
}
