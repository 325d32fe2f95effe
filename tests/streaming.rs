//! A 20 MB message passes through Ferry (APPEND and FETCH) with Ferry's memory
//! bounded by its buffers. Ferry runs as its own process here, so its peak RSS
//! (VmHWM) is Ferry's alone.

mod common;

use std::{process::Stdio, time::Duration};

use common::*;
use sha2::{Digest, Sha256};

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn twenty_megabytes_stream_in_bounded_memory() {
    let env = TestEnv::builder().seed(false).start().await;
    let port = free_port();
    let toml = env
        .config_toml
        .replacen(
            "imaps = \"127.0.0.1:0\"",
            &format!("imaps = \"127.0.0.1:{port}\""),
            1,
        )
        .replacen("imap  = \"127.0.0.1:0\"", "", 1);
    let conf = write_file(env.dir(), "ferry-process.toml", toml.as_bytes());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let addr = format!("127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "ferry process did not start");

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
