//! Cross-store copy against the naive alternative, in one run on one machine.
//!
//! Seeds OLD with N messages (default 5,000; `FERRY_BENCH_MESSAGES`), then
//! (a) copies them through Ferry with one `UID COPY 1:*` from `Old/Bulk` and
//! (b) APPENDs the same messages one by one directly to NEW, each waiting for
//! its OK (what a client or a migration script does), and prints both rates
//! and their ratio; (c) NEW's own limit, one pipelined MULTIAPPEND straight
//! to NEW, shows what is left between Ferry and the store. Run with `cargo bench --bench copy`; under `cargo test` it
//! runs a 50-message smoke so the benchmark itself cannot rot.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

fn bulk(n: usize) -> Vec<(String, Vec<u8>)> {
    // Typical small mail: 1–4 KB.
    bulk_with(n, |i| {
        message(
            &format!("Bench message {i}"),
            &"All work and no play makes a dull message.\r\n".repeat(20 + i % 70),
        )
    })
}

async fn seed(store: &Dovecot, mailbox: &str, messages: &[(String, Vec<u8>)]) {
    store.create("alice", mailbox).await;
    store.append_many("alice", mailbox, messages).await;
}

async fn run(n: usize) {
    let env = TestEnv::builder().seed(false).start().await;
    let messages = bulk(n);
    let bytes: usize = messages.iter().map(|(_, b)| b.len()).sum();
    seed(&env.old, "INBOX.Bulk", &messages).await;

    // (a) Through Ferry: one UID COPY.
    let mut c = env.login("alice").await;
    c.patient(Duration::from_secs(600));
    c.cmd("CREATE ViaFerry").await.assert_ok();
    c.cmd("SELECT Old/Bulk").await.assert_ok();
    let t = Instant::now();
    c.cmd("UID COPY 1:* ViaFerry").await.assert_ok();
    let ferry = t.elapsed();
    c.logout().await;
    assert_eq!(env.new.status("alice", "ViaFerry").await.0 as usize, n);

    // (b) Directly to NEW: one APPEND per message, each waiting for its OK.
    let mut d = env.new.client("alice").await;
    d.patient(Duration::from_secs(600));
    d.cmd("CREATE Direct").await.assert_ok();
    let t = Instant::now();
    for (args, body) in &messages {
        let tag = d.next_tag();
        let mut cmd = format!("{tag} APPEND Direct {args} {{{}+}}\r\n", body.len()).into_bytes();
        cmd.extend_from_slice(body);
        cmd.extend_from_slice(b"\r\n");
        d.send(&cmd).await;
        d.read_until_tagged(&tag).await.assert_ok();
    }
    let direct = t.elapsed();
    d.logout().await;

    // (c) NEW's own limit: the same messages in one pipelined MULTIAPPEND.
    let t = Instant::now();
    seed(&env.new, "DirectMulti", &messages).await;
    let limit = t.elapsed();

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mb = bytes as f64 / 1e6;
    println!("copy of {n} messages ({mb:.1} MB) from OLD to NEW");
    println!(
        "  Ferry, one UID COPY:        {:8.3} s  {:8.0} msg/s  {:6.1} MB/s",
        ferry.as_secs_f64(),
        rate(ferry),
        mb / ferry.as_secs_f64()
    );
    println!(
        "  direct APPEND loop to NEW:  {:8.3} s  {:8.0} msg/s  {:6.1} MB/s",
        direct.as_secs_f64(),
        rate(direct),
        mb / direct.as_secs_f64()
    );
    println!(
        "  direct MULTIAPPEND to NEW:  {:8.3} s  {:8.0} msg/s  {:6.1} MB/s  (NEW's own limit)",
        limit.as_secs_f64(),
        rate(limit),
        mb / limit.as_secs_f64()
    );
    println!(
        "  ratio Ferry / direct APPEND loop (throughput): {:.2}x",
        direct.as_secs_f64() / ferry.as_secs_f64()
    );
    println!(
        "  ratio Ferry / NEW's own MULTIAPPEND limit:     {:.2}x",
        limit.as_secs_f64() / ferry.as_secs_f64()
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = if bench {
        std::env::var("FERRY_BENCH_MESSAGES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000)
    } else {
        50
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run(n));
}
