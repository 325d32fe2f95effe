//! Limits, brute-force protection, failing and slow stores, hostile input —
//! against real Dovecot stores.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A plaintext client (allow_plaintext) past the greeting.
async fn plain(env: &TestEnv) -> TestClient {
    let mut c = env.plain_client().await;
    c.patient(Duration::from_secs(20));
    c
}

fn limits(extra: &str) -> TestEnvBuilder {
    TestEnv::builder()
        .allow_plaintext(true)
        .extra_toml(&format!("[limits]\n{extra}\n"))
}

#[tokio::test]
async fn hostile_input_gets_bad_and_the_session_goes_on() {
    let env = limits("max_append_bytes = 1000000").start().await;
    let mut c = plain(&env).await;
    // Commands in the wrong state.
    for cmd in [
        "SELECT INBOX",
        "FETCH 1 (FLAGS)",
        "IDLE",
        "APPEND INBOX {3+}\r\nabc",
    ] {
        let r = c.cmd(cmd).await;
        assert!(r.is_bad() || r.is_no(), "{cmd}: {}", r.text());
    }
    // Garbage, NUL bytes, a 1 MB line, unbalanced parentheses.
    c.send(b"\x00\x01\x02 garbage \xff\xfe\r\n").await;
    assert!(lossy(&c.response().await).contains("BAD"));
    let mut huge = vec![b'a'; 1024 * 1024];
    huge.extend_from_slice(b"\r\n");
    c.send(&huge).await;
    let r = lossy(&c.response().await);
    assert!(r.contains("BAD"), "{r}");
    // A synchronizing literal of 4 GiB is refused before `+`.
    let r = c.cmd("LOGIN alice {4294967295}").await;
    r.assert_bad();
    c.login("alice", PASSWORD).await.assert_ok();
    let r = c.cmd("FETCH 1 (FLAGS").await;
    r.assert_bad();
    c.cmd("SELECT INBOX").await.assert_ok();
    let r = c.cmd("FETCH 1 (FLAGS))").await;
    assert!(r.is_bad(), "{}", r.text());
    // Invalid modified UTF-7 in a mailbox name.
    for cmd in [
        "SELECT \"&Jjo\"",
        "CREATE \"&AGE-&AGE-\"",
        "SELECT \"Old/&Jjo!\"",
    ] {
        let r = c.cmd(cmd).await;
        assert!(r.is_no() || r.is_bad(), "{cmd}: {}", r.text());
    }
    // An APPEND over the limit: a synchronizing literal gets NO [TOOBIG] and no `+`.
    let r = c.cmd("APPEND INBOX {2000000}").await;
    r.assert_no();
    assert_eq!(r.code().as_deref(), Some("TOOBIG"));
    c.cmd("NOOP").await.assert_ok();
    // A non-synchronizing one is already on its way: tagged NO, then the
    // connection is closed rather than read.
    c.send(b"big APPEND INBOX {2000000+}\r\n").await;
    c.send(&vec![b'x'; 64 * 1024]).await;
    let r = c.read_until_tagged("big").await;
    r.assert_no();
    assert!(lossy(&c.response().await).starts_with("* BYE"));
    assert!(c.is_closed().await);
    // Nothing of it reached NEW.
    assert_eq!(
        env.new.status("alice", "INBOX").await.0,
        NEW_INBOX_SUBJECTS.len() as u32
    );
}

#[tokio::test]
async fn connection_limits_per_address_and_preauth_timeout() {
    let env = limits("max_connections_per_ip = 5\npreauth_timeout_secs = 1")
        .start()
        .await;
    let addr = env.ferry.imap_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(plain(&env).await);
    }
    let mut sixth = TestClient::plain(addr).await;
    let bye = lossy(&sixth.greeting().await);
    assert!(
        bye.starts_with("* BYE") && bye.contains("Too many"),
        "{bye}"
    );
    assert!(sixth.is_closed().await);
    // The pre-auth timeout frees the places again.
    for c in held.iter_mut() {
        let r = lossy(&c.response().await);
        assert!(r.starts_with("* BYE"), "{r}");
        assert!(c.is_closed().await);
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = plain(&env).await;
    c.login("alice", PASSWORD).await.assert_ok();
}

/// Lines of the store's log reporting a wrong password for `user`.
fn mismatches(store: &Dovecot, user: &str) -> usize {
    let log = std::fs::read_to_string(store.dir().join("dovecot.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(&format!("({user},")) && l.contains("mismatch"))
        .count()
}

#[tokio::test]
async fn a_stale_password_reaches_the_store_once_and_logins_slow_down() {
    let env = TestEnv::builder()
        .allow_plaintext(true)
        .extra_toml("")
        .start()
        .await;
    let mut c = plain(&env).await;
    let mut texts = Vec::new();
    let mut times = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let r = c.login("carol", "stale-password").await;
        r.assert_no();
        assert_eq!(r.code().as_deref(), Some("AUTHENTICATIONFAILED"));
        texts.push(r.tagged_line().split_once(' ').unwrap().1.to_string());
        times.push(t.elapsed());
    }
    // The phone retries on new connections, as phones do.
    for _ in 0..3 {
        let mut again = plain(&env).await;
        let t = Instant::now();
        let r = again.login("carol", "stale-password").await;
        r.assert_no();
        times.push(t.elapsed());
        texts.push(r.tagged_line().split_once(' ').unwrap().1.to_string());
    }
    // Doubling delays (100, 200, 400, 400 ms in this test's configuration).
    assert!(times[1] >= Duration::from_millis(100), "{times:?}");
    assert!(times[3] >= Duration::from_millis(400), "{times:?}");
    // NEW saw the stale password once; OLD never (NEW is carol's primary store).
    assert_eq!(mismatches(&env.new, "carol"), 1, "{}", env.new.log());
    assert_eq!(mismatches(&env.old, "carol"), 0);
    // A user who does not exist gets the very same answer.
    let mut ghost = plain(&env).await;
    let r = ghost.login("nobody-here", "whatever").await;
    assert_eq!(r.tagged_line().split_once(' ').unwrap().1, texts[0]);
    assert!(texts.iter().all(|t| *t == texts[0]), "{texts:?}");
    // The right password still works, and resets carol's delay.
    let mut ok = plain(&env).await;
    ok.login("carol", PASSWORD).await.assert_ok();
}

#[tokio::test]
async fn too_many_failed_logins_close_the_connection() {
    let env = TestEnv::builder().allow_plaintext(true).start().await;
    let mut c = plain(&env).await;
    for i in 0..3 {
        c.login("bob", format!("wrong-{i}")).await.assert_no();
    }
    assert!(lossy(&c.response().await).starts_with("* BYE"));
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn old_restarting_under_an_open_folder_is_invisible_unless_it_changed() {
    let env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    c.cmd("SELECT Old/INBOX").await.assert_ok();
    let before = c.cmd("FETCH 1:* (FLAGS)").await;
    before.assert_ok();
    // OLD's session processes die (a nightly restart); Dovecot takes new ones.
    env.old.kill_sessions();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = c.cmd("FETCH 1:* (FLAGS)").await;
    after.assert_ok();
    assert_eq!(
        before.untagged, after.untagged,
        "the client notices nothing"
    );
    c.cmd("UID SEARCH ALL").await.assert_ok();
    // Now the folder changes while OLD is away: the client is told to reconnect.
    env.old.kill_sessions();
    env.old
        .append("alice", "INBOX", "", &message("Arrived meanwhile", "x"))
        .await;
    let tag = c.next_tag();
    c.send(format!("{tag} FETCH 1 (FLAGS)\r\n").as_bytes())
        .await;
    let bye = lossy(&c.response().await);
    assert!(
        bye.starts_with("* BYE") && bye.contains("reconnect"),
        "{bye}"
    );
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn new_dying_mid_session_says_bye_and_new_down_at_login_is_unavailable() {
    let mut env = TestEnv::start().await;
    let mut c = env.login("alice").await;
    c.cmd("SELECT INBOX").await.assert_ok();
    env.new.kill_sessions();
    let bye = lossy(&c.response().await);
    assert!(bye.starts_with("* BYE"), "{bye}");
    env.new.stop().await;
    let mut c = env.imaps_client().await;
    let r = c.login("alice", PASSWORD).await;
    r.assert_no();
    assert_eq!(r.code().as_deref(), Some("UNAVAILABLE"));
}

/// Sends SIGSTOP or SIGCONT to every process of `store` (master and children).
fn signal_store(store: &Dovecot, signal: &str) {
    let root = store.dir().display().to_string();
    let out = std::process::Command::new("pgrep")
        .args(["-f", &root])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&out.stdout);
    let mut all: Vec<String> = pids.split_whitespace().map(String::from).collect();
    // Session processes do not carry the path: take every child of those.
    for pid in all.clone() {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .unwrap();
        all.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from),
        );
    }
    for pid in all {
        send_signal(&pid, signal);
    }
}

#[tokio::test]
async fn a_hung_old_store_times_out_and_never_blocks_new() {
    let env = limits("backend_command_timeout_secs = 1\nbackend_connect_timeout_secs = 1")
        .start()
        .await;
    let mut c = env.login("alice").await;
    c.patient(Duration::from_secs(40));
    c.cmd("SELECT Old/INBOX").await.assert_ok();
    let mut other = env.login("bob").await;
    signal_store(&env.old, "-STOP");
    let t = Instant::now();
    let tag = c.next_tag();
    c.send(format!("{tag} FETCH 1:* (FLAGS)\r\n").as_bytes())
        .await;
    // Meanwhile NEW serves everyone as usual.
    other.cmd("SELECT INBOX").await.assert_ok();
    other.cmd("LIST \"\" \"%\"").await.assert_ok();
    other.cmd("NOOP").await.assert_ok();
    let answer = lossy(&c.response().await);
    signal_store(&env.old, "-CONT");
    assert!(
        answer.starts_with("* BYE") || answer.contains("UNAVAILABLE"),
        "{answer}"
    );
    // Timeout (1 s), then reconnect attempts with backoff, each bounded.
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_silent_new_store_fails_login_after_the_connect_timeout() {
    // A "store" that accepts and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let env = TestEnv::builder().seed(false).start().await;
    let toml = env
        .config_toml
        .replacen(&env.new.addr(), &addr.to_string(), 1)
        + "[limits]\nbackend_connect_timeout_secs = 1\n";
    let config = ferry::config::parse(&toml).unwrap();
    let ferry = ferry::Ferry::start(config).await.unwrap();
    let mut c = TestClient::tls(ferry.imaps_addr().unwrap(), &env.ca).await;
    c.greeting().await;
    let t = Instant::now();
    let r = c.login("alice", PASSWORD).await;
    r.assert_no();
    assert_eq!(r.code().as_deref(), Some("UNAVAILABLE"));
    assert!(t.elapsed() < Duration::from_secs(5));
    keep.abort();
}

#[tokio::test]
async fn idle_is_renewed_toward_the_store_unseen_by_the_client() {
    let env = with_idle_refresh().start().await;
    let mut c = env.login("alice").await;
    c.cmd("SELECT INBOX").await.assert_ok();
    c.send(b"i1 IDLE\r\n").await;
    assert!(lossy(&c.response().await).starts_with("+"));
    // Long enough for two renewals; the client sees nothing of them: no
    // `+`, no tagged line. Dovecot's own keepalive (`* OK Still here`, at a
    // moment aligned per user, so now and then inside this window) is the
    // store's and reaches a directly connected client too.
    let until = Instant::now() + Duration::from_millis(2500);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Some(seen) = c.try_response_within(left).await else {
            break;
        };
        assert!(
            seen.starts_with(b"* OK "),
            "stray output: {:?}",
            lossy(&seen)
        );
    }
    // The renewed IDLE still reports new mail.
    env.new
        .append("alice", "INBOX", "", &message("During IDLE", "x"))
        .await;
    let news = lossy(&c.response().await);
    assert!(news.contains("EXISTS") || news.contains("RECENT"), "{news}");
    c.send(b"DONE\r\n").await;
    let done = c.read_until_tagged("i1").await;
    done.assert_ok();
    c.cmd("NOOP").await.assert_ok();
}

fn with_idle_refresh() -> TestEnvBuilder {
    TestEnv::builder().extra_toml("[limits]\nidle_refresh_secs = 1\n")
}

#[tokio::test]
async fn slowloris_connections_do_not_stop_a_real_user() {
    let env = TestEnv::builder()
        .allow_plaintext(true)
        .extra_toml("[limits]\nmax_connections_per_ip = 5000\n")
        .start()
        .await;
    raise_open_files_limit();
    let (mut child, addr) = ferry_process(&env).await;
    let pid = child.id();
    let rss = |pid: u32| proc_status_kib(pid, "VmRSS:");
    let before = rss(pid);
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = rss(pid);
    let mut c = TestClient::tls(addr.as_str(), &env.ca).await;
    c.patient(Duration::from_secs(20));
    c.greeting().await;
    c.login("alice", PASSWORD).await.assert_ok();
    c.cmd("SELECT INBOX").await.assert_ok();
    c.cmd("FETCH 1:* (BODY.PEEK[])").await.assert_ok();
    let per = (during.saturating_sub(before)) * 1024 / 2000;
    println!("2,000 silent connections: RSS {before} KiB -> {during} KiB, {per} bytes each");
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
    assert!(per < 64 * 1024, "{per} bytes per silent connection");
}

/// 2,000 client sockets here (and as many in Ferry, which inherits the limit
/// and raises its own): lift the soft open-files limit to the hard one.
fn raise_open_files_limit() {
    let limit = ferry::server::raise_open_files_limit();
    assert!(
        limit >= 4200,
        "open-files limit {limit} is too low for this test (ulimit -Hn)"
    );
}
