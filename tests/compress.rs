//! COMPRESS=DEFLATE (RFC 4978) through Ferry, with Python's imaplib over
//! zlib as the independent client (`tests/witness_compress.py`): in the
//! merged phase and both pass-through phases, over plaintext and TLS, a
//! 20 MB message fetched byte for byte, with a command pipelined right
//! behind COMPRESS.

mod common;

use common::*;
use sha2::{Digest, Sha256};

const BIG: usize = 20 * 1024 * 1024;

/// Runs the witness against `addr` (`ca`: over TLS trusting it) as `user`;
/// it fetches message 1 of `folder` and compares it with `sha256`.
async fn witness(
    addr: std::net::SocketAddr,
    ca: Option<&std::path::Path>,
    user: &str,
    folder: &str,
    sha256: &str,
    list: &[&str],
) -> String {
    witness_run(addr, ca, user, folder, sha256, list)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`witness`], with its failure as an error.
async fn witness_run(
    addr: std::net::SocketAddr,
    ca: Option<&std::path::Path>,
    user: &str,
    folder: &str,
    sha256: &str,
    list: &[&str],
) -> Result<String, String> {
    let mut command = std::process::Command::new("python3");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/witness_compress.py"
        ))
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    match ca {
        Some(ca) => command.arg("--tls").arg(ca),
        None => command.arg("--plain"),
    };
    command
        .args([user, password_for(user), folder, sha256])
        .arg("--list")
        .args(list);
    python(command)
        .await
        .map_err(|e| format!("witness ({user}, {folder}) failed:\n{e}"))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn deflate_in_every_phase_over_plaintext_and_tls() {
    // NEW offers COMPRESS itself: never shown, never asked for.
    let env = TestEnv::builder()
        .allow_plaintext(true)
        .new_conf("protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n")
        .extra_toml("[metrics]\nlisten = \"127.0.0.1:0\"\n")
        .start()
        .await;
    let mut direct = env.new.client("nils").await;
    let caps = direct.cmd("CAPABILITY").await;
    assert!(caps.text().contains("COMPRESS=DEFLATE"), "{}", caps.text());
    direct.logout().await;
    let msg = big_message(BIG);
    let sha = hex(&Sha256::digest(&msg));
    // alice (merged) has it on NEW and in an Old/ folder; olga (phase old)
    // on OLD, nils (phase new) on NEW.
    env.new.create("alice", "Big").await;
    env.new.append("alice", "Big", "", &msg).await;
    env.old.create("alice", "INBOX.Big").await;
    env.old.append("alice", "INBOX.Big", "", &msg).await;
    env.old.create("olga", "INBOX.Big").await;
    env.old.append("olga", "INBOX.Big", "", &msg).await;
    env.new.create("nils", "Big").await;
    env.new.append("nils", "Big", "", &msg).await;
    let ca = write_file(env.dir(), "ferry-ca.pem", pem_of(&env.ca).as_bytes());
    let plain = env.ferry.imap_addr().unwrap();
    let tls = env.ferry.imaps_addr().unwrap();

    let runs = [
        (plain, None, "alice", "Big", &["Old/INBOX", "Big"][..]),
        (tls, Some(ca.as_path()), "alice", "Old/Big", &["Old/Big"]),
        (
            tls,
            Some(ca.as_path()),
            "olga",
            "INBOX.Big",
            &["INBOX.Sent"],
        ),
        (plain, None, "nils", "Big", &["Sent"]),
    ];
    for (addr, ca, user, folder, list) in runs {
        let out = witness(addr, ca, user, folder, &sha, list).await;
        let last = out.lines().last().unwrap_or_default();
        println!("{user} {folder} {}: {last}", ca.map_or("plain", |_| "TLS"));
        // The message is base64-like text: deflate takes off about a fifth.
        let wire_in: u64 = last
            .split("\"wire_in\": ")
            .nth(1)
            .and_then(|v| v.split([',', '}']).next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no wire_in: {last}"));
        assert!(
            wire_in < (BIG as u64) * 9 / 10,
            "{user}: {wire_in} bytes on the wire for a {BIG}-byte message"
        );
    }
    // The recorder is the process's: other tests here count too.
    let metrics = scrape(&env).await;
    assert!(sample(&metrics, "ferry_compress_sessions_total", &[]) >= runs.len() as f64);
    env.shutdown().await;
}

/// Memory stays bounded by buffers with compression on: the per-thread
/// compressor and the session's inflater, never the message.
#[tokio::test]
async fn a_compressed_twenty_megabyte_fetch_in_bounded_memory() {
    let env = TestEnv::builder().seed(false).start().await;
    let msg = big_message(BIG);
    let sha = hex(&Sha256::digest(&msg));
    env.new.create("alice", "Big").await;
    env.new.append("alice", "Big", "", &msg).await;
    let (mut child, addr, log) = ferry_process_logged(&env, "").await;
    let pid = child.id();
    // A first session: lazily built state (TLS, metrics) is not growth.
    let mut c = TestClient::tls(addr.as_str(), &env.ca).await;
    c.greeting().await;
    c.login("alice", PASSWORD).await.assert_ok();
    c.cmd("LIST \"\" \"*\"").await.assert_ok();
    c.logout().await;
    let baseline = vm_hwm_kib(pid);
    let ca = write_file(env.dir(), "ferry-ca.pem", pem_of(&env.ca).as_bytes());
    let run = witness_run(addr.parse().unwrap(), Some(&ca), "alice", "Big", &sha, &[]).await;
    let peak = vm_hwm_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = run {
        panic!(
            "{e}\n--- Ferry's log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let growth = peak.saturating_sub(baseline);
    println!("ferry peak RSS {peak} KiB, growth during a compressed 20 MB FETCH: {growth} KiB");
    assert!(
        growth < 4 * 1024,
        "Ferry buffered the message: grew {growth} KiB"
    );
}

/// `responses` without what depends on which session saw a message first.
fn unrecent(responses: &[Vec<u8>]) -> Vec<Vec<u8>> {
    responses
        .iter()
        .filter(|r| !lossy(r).trim_end().ends_with(" RECENT"))
        .map(|r| {
            lossy(r)
                .replace(" \\Recent", "")
                .replace("\\Recent", "")
                .into_bytes()
        })
        .collect()
}

/// Sessions on the same workers take turns with the worker's compressor:
/// every burst of every session must still inflate on its own client, to
/// the same bytes an uncompressed session gets.
#[tokio::test]
async fn concurrent_compressed_sessions_each_get_their_own_stream() {
    let env = TestEnv::builder().allow_plaintext(true).start().await;
    let addr = env.ferry.imap_addr().unwrap();
    let commands = [
        "SELECT INBOX",
        "FETCH 1:* (FLAGS BODY.PEEK[])",
        "SELECT Old/INBOX",
        "FETCH 1:* (FLAGS BODY.PEEK[])",
        "LIST \"\" \"*\"",
        "NOOP",
    ];
    let mut expected = Vec::new();
    let mut c = TestClient::plain(addr).await;
    c.greeting().await;
    c.login("alice", PASSWORD).await.assert_ok();
    for command in commands {
        let r = c.cmd(command).await;
        r.assert_ok();
        expected.push(r.untagged);
    }
    c.logout().await;
    let expected = std::sync::Arc::new(expected);
    let mut sessions = tokio::task::JoinSet::new();
    for n in 0..8 {
        let expected = expected.clone();
        sessions.spawn(async move {
            let mut c = TestClient::plain(addr).await;
            c.greeting().await;
            c.login("alice", PASSWORD).await.assert_ok();
            c.compress().await.assert_ok();
            for round in 0..10 {
                for (i, command) in commands.iter().enumerate() {
                    let r = c.cmd(command).await;
                    r.assert_ok();
                    // \Recent goes to one session only, and LIST's order
                    // is the stores'; the rest is exact.
                    let (mut got, mut want) = (unrecent(&r.untagged), unrecent(&expected[i]));
                    if command.starts_with("LIST") {
                        got.sort();
                        want.sort();
                    }
                    assert_eq!(got, want, "session {n}, round {round}: {command}");
                }
            }
            c.logout().await;
        });
    }
    while let Some(done) = sessions.join_next().await {
        done.unwrap();
    }
    env.shutdown().await;
}
