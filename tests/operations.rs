//! Operating Ferry: metrics over HTTP, reloads (phases, certificates, bad
//! configs), the cutover switch ending exactly the right sessions, and a
//! graceful shutdown that lets a copy finish.

mod common;

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use common::*;

/// Whether a LIST answer shows the `Old` tree.
fn has_old(list: &Reply) -> bool {
    list.list_entries()
        .iter()
        .any(|e| e.name == "Old" || e.name.starts_with("Old/"))
}

fn with_metrics() -> TestEnvBuilder {
    TestEnv::builder().extra_toml("[metrics]\nlisten = \"127.0.0.1:0\"\n")
}

#[tokio::test]
async fn metrics_move_as_traffic_flows() {
    let mut env = with_metrics().start().await;
    let addr = env.ferry.metrics_addr().unwrap();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    let before = scrape(&env).await;
    assert_eq!(sample(&before, "ferry_build_info", &[]), 1.0);
    assert!(sample(&before, "ferry_config_generation", &[]) >= 1.0);

    env.old.create("alice", "INBOX.Copysrc").await;
    env.old
        .append(
            "alice",
            "INBOX.Copysrc",
            "(\\Seen)",
            &message("m", "copy me"),
        )
        .await;
    let mut c = env.login("alice").await;
    c.cmd("SELECT INBOX").await.assert_ok();
    c.cmd("FETCH 1:* (FLAGS)").await.assert_ok();
    c.cmd("SELECT Old/Copysrc").await.assert_ok();
    c.cmd("UID COPY 1:* Work").await.assert_ok();
    // A copy into a folder the client has yet to create is not a failure.
    let r = c.cmd("UID COPY 1:* Notyet").await;
    assert_eq!(r.code().as_deref(), Some("TRYCREATE"), "{}", r.text());
    c.cmd("STATUS Old/Copysrc (MESSAGES)").await.assert_ok();
    c.cmd("LIST \"\" \"*\"").await.assert_ok();
    let after = scrape(&env).await;
    c.logout().await;

    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert!(
        delta(
            "ferry_logins_total",
            &[("phase", "merged"), ("result", "ok")]
        ) >= 1.0,
        "{after}"
    );
    assert!(
        delta(
            "ferry_commands_total",
            &[("command", "FETCH"), ("store", "new"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(
        delta(
            "ferry_commands_total",
            &[("command", "STATUS"), ("store", "old"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(
        delta(
            "ferry_commands_total",
            &[("command", "LIST"), ("store", "both")]
        ) >= 1.0
    );
    assert!(
        delta(
            "ferry_commands_total",
            &[("command", "UID COPY"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(delta("ferry_command_duration_seconds_count", &[("store", "new")]) >= 1.0);
    assert!(delta("ferry_copies_total", &[("result", "ok")]) >= 1.0);
    assert_eq!(delta("ferry_copies_total", &[("result", "trycreate")]), 1.0);
    assert_eq!(delta("ferry_copies_total", &[("result", "failed")]), 0.0);
    assert!(delta("ferry_copy_messages_total", &[]) >= 1.0);
    assert!(delta("ferry_copy_bytes_total", &[]) > 0.0);
    assert!(
        delta(
            "ferry_bytes_total",
            &[("direction", "in"), ("peer", "client")]
        ) > 0.0
    );
    assert!(
        delta(
            "ferry_bytes_total",
            &[("direction", "out"), ("peer", "new")]
        ) > 0.0
    );
    assert!(
        delta(
            "ferry_backend_connects_total",
            &[("store", "old"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(sample(&after, "ferry_sessions_active", &[("phase", "merged")]) >= 1.0);
    // Histogram buckets are explicit, so instances aggregate.
    assert!(after.contains("ferry_command_duration_seconds_bucket{store=\"new\",le=\"0.005\"}"));
    // No user or mailbox names in any label.
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("alice") && !line.contains("Copysrc"),
            "{line}"
        );
    }
    // NEW gone: not ready.
    env.new.stop().await;
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
}

/// The environment's config with `carol` moved to `phase`.
fn carol_moved(env: &TestEnv, phase: &str) -> ferry::config::Config {
    let toml = env.config_toml.replacen(
        "\"nils\" = \"new\"\n",
        &format!("\"nils\" = \"new\"\n\"carol\" = \"{phase}\"\n"),
        1,
    );
    ferry::config::parse(&toml).expect("valid config")
}

#[tokio::test]
async fn phase_change_ends_exactly_that_users_sessions_at_safe_points() {
    let env = with_metrics().start().await;
    let mut others = Vec::new();
    for i in 0..150 {
        let user = ["alice", "bob", "dave"][i % 3];
        others.push(env.login(user).await);
    }
    let mut carols = Vec::new();
    for _ in 0..48 {
        carols.push(env.login("carol").await);
    }
    // One of carol's sessions is in IDLE, one is in the middle of an APPEND.
    let mut idle = env.login("carol").await;
    idle.cmd("SELECT INBOX").await.assert_ok();
    idle.send(b"i1 IDLE\r\n").await;
    assert!(lossy(&idle.response().await).starts_with("+"));
    // olga is passed through to OLD (phase old); her IDLE is on OLD itself.
    let mut olga = env.login("olga").await;
    olga.cmd("SELECT INBOX").await.assert_ok();
    olga.send(b"o1 IDLE\r\n").await;
    assert!(lossy(&olga.response().await).starts_with("+"));
    let mut append = env.login("carol").await;
    let msg = message("During reload", "must not be lost");
    let (first, rest) = msg.split_at(msg.len() / 2);
    append
        .send(format!("a1 APPEND INBOX {{{}}}\r\n", msg.len()).as_bytes())
        .await;
    assert!(lossy(&append.response().await).starts_with("+"));
    append.send(first).await;

    let before = scrape(&env).await;
    let mut config = carol_moved(&env, "new");
    config
        .migration
        .users
        .insert("olga".into(), ferry::config::Phase::Merged);
    let generation = env.ferry.reload(config.clone()).expect("reload");
    assert_eq!(generation, env.ferry.generation());

    for c in carols.iter_mut() {
        let bye = lossy(&c.response().await);
        assert!(
            bye.starts_with("* BYE") && bye.contains("reconnect"),
            "{bye}"
        );
        assert!(c.is_closed().await);
    }
    // IDLE: ended with the store first (tagged OK), then BYE.
    let done = lossy(&idle.response().await);
    assert!(done.starts_with("i1 OK"), "{done}");
    assert!(lossy(&idle.response().await).starts_with("* BYE"));
    let done = lossy(&olga.response().await);
    assert!(done.starts_with("o1 OK"), "{done}");
    assert!(lossy(&olga.response().await).starts_with("* BYE"));
    // The APPEND is not cut: it completes, then the session ends.
    assert!(
        append
            .try_response_within(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing may interrupt the literal"
    );
    append.send(rest).await;
    append.send(b"\r\n").await;
    assert!(lossy(&append.response().await).starts_with("a1 OK"));
    assert!(lossy(&append.response().await).starts_with("* BYE"));
    let mut direct = env.new.client("carol").await;
    direct.cmd("EXAMINE INBOX").await.assert_ok();
    let found = direct.cmd("SEARCH SUBJECT \"During reload\"").await;
    assert!(found.text().contains("* SEARCH "), "{}", found.text());
    assert_ne!(found.untagged[0].len(), b"* SEARCH\r\n".len(), "appended");

    // Everyone else is untouched and keeps working.
    for c in others.iter_mut() {
        assert!(
            c.try_response_within(Duration::from_millis(5))
                .await
                .is_none()
        );
    }
    for c in others.iter_mut().step_by(10) {
        c.cmd("NOOP").await.assert_ok();
    }
    // New logins get the new phase at once: carol sees no Old/ now.
    let mut c = env.login("carol").await;
    let list = c.cmd("LIST \"\" \"*\"").await;
    assert!(!has_old(&list), "{}", list.text());
    let after = scrape(&env).await;
    let ended = sample(&after, "ferry_phase_disconnects_total", &[])
        - sample(&before, "ferry_phase_disconnects_total", &[]);
    // Other tests in this process end sessions too: at least carol's 50 + olga's.
    assert!(ended >= 51.0, "{ended}");
    // The gauge is the test process's, and other tests' Ferrys starting
    // meanwhile set it to their own counts: read it right after a reload of
    // this one (the same configuration again ends nobody).
    let mut configured = 0.0;
    for _ in 0..5 {
        env.ferry.reload(config.clone()).expect("reload");
        configured = sample(
            &scrape(&env).await,
            "ferry_configured_users",
            &[("phase", "new")],
        );
        if configured >= 2.0 {
            break;
        }
    }
    assert!(configured >= 2.0, "{configured}");
}

#[tokio::test]
async fn drain_window_spreads_the_disconnects() {
    let env = with_metrics().start().await;
    let mut carols = Vec::new();
    for _ in 0..20 {
        carols.push(env.login("carol").await);
    }
    let mut config = carol_moved(&env, "old");
    config.migration.drain_secs = 2;
    let start = Instant::now();
    env.ferry.reload(config).unwrap();
    let mut at = Vec::new();
    for c in carols.iter_mut() {
        c.patient(Duration::from_secs(10));
        assert!(lossy(&c.response().await).starts_with("* BYE"));
        at.push(start.elapsed());
    }
    at.sort();
    let spread = at[at.len() - 1] - at[0];
    assert!(spread >= Duration::from_millis(500), "all at once: {at:?}");
    assert!(
        at[at.len() - 1] < Duration::from_secs(8),
        "far beyond the 2 s window: {at:?}"
    );
}

#[tokio::test]
async fn invalid_reload_changes_nothing_and_is_counted() {
    let env = with_metrics().start().await;
    let mut c = env.login("alice").await;
    let before = scrape(&env).await;
    let generation = env.ferry.generation();
    let bad = write_file(env.dir(), "bad.toml", b"[listen]\nimaps = 42\n");
    let err = env.ferry.reload_file(&bad).unwrap_err();
    assert!(err.to_string().contains("imaps"), "{err}");
    // A listener change cannot be applied live: refused as a whole.
    let moved = env
        .config_toml
        .replacen("imap  = \"127.0.0.1:0\"", "imap = \"127.0.0.1:1\"", 1);
    let moved = write_file(env.dir(), "moved.toml", moved.as_bytes());
    let err = env.ferry.reload_file(&moved).unwrap_err();
    assert!(err.to_string().contains("restart"), "{err}");
    assert_eq!(env.ferry.generation(), generation);
    let after = scrape(&env).await;
    let errors = sample(&after, "ferry_config_reloads_total", &[("result", "error")])
        - sample(
            &before,
            "ferry_config_reloads_total",
            &[("result", "error")],
        );
    assert!(errors >= 2.0, "{after}");
    c.cmd("NOOP").await.assert_ok();
    env.login("bob")
        .await
        .cmd("LIST \"\" \"Old\"")
        .await
        .assert_ok();
}

#[tokio::test]
async fn reloaded_certificate_is_served_to_new_handshakes() {
    let env = TestEnv::start().await;
    let (cert, key, new_ca) = self_signed_cert();
    std::fs::write(env.dir().join("ferry.crt"), cert).unwrap();
    std::fs::write(env.dir().join("ferry.key"), key).unwrap();
    let config = ferry::config::parse(&env.config_toml).unwrap();
    env.ferry.reload(config).expect("reload");
    let addr = env.ferry.imaps_addr().unwrap();
    let mut c = TestClient::tls(addr, &new_ca).await;
    assert!(lossy(&c.greeting().await).starts_with("* OK"));
    // The old certificate is no longer offered.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    assert!(
        tls_connector(&env.ca).connect(name, tcp).await.is_err(),
        "old certificate still served"
    );
}

#[tokio::test]
async fn a_users_file_of_100k_users_sets_phases_and_reloads() {
    let env = with_metrics().start().await;
    let mut file = String::with_capacity(3_000_000);
    for i in 0..100_000 {
        let phase = ["old", "merged", "new"][i % 3];
        writeln!(file, "\"user{i}@example.edu\" = \"{phase}\"").unwrap();
    }
    file.push_str("\"Carol\" = \"new\"\n");
    let path = write_file(env.dir(), "phases.toml", file.as_bytes());
    let toml = env.config_toml.replacen(
        "default_phase = \"merged\"\n",
        &format!(
            "default_phase = \"merged\"\nusers_file = \"{}\"\n",
            path.display()
        ),
        1,
    );

    let conf = write_file(env.dir(), "with-file.toml", toml.as_bytes());
    let t = Instant::now();
    env.ferry
        .reload_file(&conf)
        .expect("reload with users file");
    println!("reload with 100,001 users took {:?}", t.elapsed());
    // The gauge is the process's (see `phase_change_ends_…`): if
    // another test's Ferry set it meanwhile, this one's reload sets it again.
    let mut configured = sample(
        &scrape(&env).await,
        "ferry_configured_users",
        &[("phase", "old")],
    );
    for _ in 0..3 {
        if configured >= 33_333.0 {
            break;
        }
        env.ferry.reload_file(&conf).expect("reload again");
        configured = sample(
            &scrape(&env).await,
            "ferry_configured_users",
            &[("phase", "old")],
        );
    }
    assert!(configured >= 33_333.0, "{configured}");
    // carol is "new" from the file (names match case-insensitively).
    let mut c = env.login("carol").await;
    let list = c.cmd("LIST \"\" \"*\"").await;
    assert!(!has_old(&list), "{}", list.text());
}

#[tokio::test]
async fn sigterm_during_a_copy_lets_it_finish_then_exits_cleanly() {
    let env = TestEnv::builder().seed(false).start().await;
    env.old.create("alice", "INBOX.Bulk").await;
    let bulk: Vec<(String, Vec<u8>)> = (0..3000)
        .map(|i| {
            (
                "()".to_string(),
                message(&format!("m{i}"), &"x".repeat(2000)),
            )
        })
        .collect();
    env.old.append_many("alice", "INBOX.Bulk", &bulk).await;

    let (mut child, addr) = ferry_process(&env).await;
    let mut c = TestClient::tls(addr.as_str(), &env.ca).await;
    c.patient(Duration::from_secs(120));
    c.greeting().await;
    c.login("alice", PASSWORD).await.assert_ok();
    c.cmd("SELECT Old/Bulk").await.assert_ok();
    c.send(b"c1 UID COPY 1:* INBOX\r\n").await;
    // Once the copy is under way on NEW, ask Ferry to stop.
    let tmp = env.new.dir().join("mail/alice/tmp");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&tmp)
        .map(|d| d.count() == 0)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the copy never reached NEW");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let pid = child.id().to_string();
    assert!(send_signal(&pid, "-TERM"));
    let done = c.read_until_tagged("c1").await;
    done.assert_ok();
    let bye = lossy(&c.response().await);
    assert!(bye.starts_with("* BYE"), "{bye}");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "ferry exited with {status}");
    assert_eq!(env.new.status("alice", "INBOX").await.0, 3000);
}

#[tokio::test]
async fn sighup_rereads_the_config_file() {
    let env = TestEnv::start().await;
    let (mut child, addr) = ferry_process(&env).await;
    let conf = ferry_process_config(&env, &addr);
    let login_sees_old = |addr: String, ca| async move {
        let mut c = TestClient::tls(addr.as_str(), &ca).await;
        c.greeting().await;
        c.login("carol", PASSWORD).await.assert_ok();
        has_old(&c.cmd("LIST \"\" \"*\"").await)
    };
    assert!(login_sees_old(addr.clone(), env.ca.clone()).await);
    let text = std::fs::read_to_string(&conf).unwrap();
    let moved = text.replacen(
        "\"nils\" = \"new\"\n",
        "\"nils\" = \"new\"\n\"carol\" = \"new\"\n",
        1,
    );
    assert_ne!(text, moved);
    std::fs::write(&conf, moved).unwrap();
    let pid = child.id().to_string();
    assert!(send_signal(&pid, "-HUP"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while login_sees_old(addr.clone(), env.ca.clone()).await {
        assert!(Instant::now() < deadline, "carol still merged after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken file on the next HUP leaves Ferry running as it was.
    std::fs::write(&conf, "not toml [").unwrap();
    assert!(send_signal(&pid, "-HUP"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!login_sees_old(addr.clone(), env.ca.clone()).await);
    assert!(child.try_wait().unwrap().is_none(), "ferry exited");
    let _ = child.kill();
    let _ = child.wait();
}

/// `ferry check-config FILE`'s stderr and whether it accepted the file.
fn check_config(dir: &std::path::Path, toml: &str) -> (bool, String) {
    let path = write_file(dir, "ferry.toml", toml.as_bytes());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("check-config")
        .arg(&path)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run ferry check-config");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_the_full_key_and_the_type_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (cert, key, _) = self_signed_cert();
    let (_, other_key, _) = self_signed_cert();
    let cert = write_file(dir, "cert.pem", cert.as_bytes());
    let key = write_file(dir, "key.pem", key.as_bytes());
    let other_key = write_file(dir, "other-key.pem", other_key.as_bytes());
    let empty = write_file(dir, "empty.pem", b"");
    let good = format!(
        "[listen]\nimaps = \"127.0.0.1:9993\"\n[tls]\ncert = {:?}\nkey = {:?}\n\
         [backends.old]\naddress = \"127.0.0.1:1\"\ntls = \"none\"\n\
         [backends.new]\naddress = \"127.0.0.1:2\"\ntls = \"none\"\n",
        cert.display().to_string(),
        key.display().to_string(),
    );
    let (ok, stderr) = check_config(dir, &good);
    assert!(ok, "{stderr}");
    let cert_line = format!("cert = {:?}", cert.display().to_string());
    let key_line = format!("key = {:?}", key.display().to_string());
    for (from, to, said) in [
        (
            cert_line.clone(),
            "cert = 5".to_string(),
            "tls.cert: expected a string (a file path), found an integer",
        ),
        (
            "tls = \"none\"\n[backends.new]".to_string(),
            "tls = \"off\"\n[backends.new]".to_string(),
            "backends.old.tls: expected one of `implicit`, `starttls`, `none`, found `off`",
        ),
        (
            "[backends.old]".to_string(),
            "[backends.old]\nforward_ids = false".to_string(),
            "backends.old.forward_ids: unknown key",
        ),
        (
            cert_line.clone(),
            format!("cert = {:?}", empty.display().to_string()),
            "tls.cert (",
        ),
        (
            key_line,
            format!("key = {:?}", other_key.display().to_string()),
            "tls.cert and tls.key do not belong together",
        ),
    ] {
        assert!(good.contains(&from), "{from}");
        let (ok, stderr) = check_config(dir, &good.replace(&from, &to));
        assert!(!ok, "accepted {to}");
        assert!(stderr.contains(said), "{to}: {stderr}");
        // One line, no backtrace (RUST_BACKTRACE=1 is set).
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    let usage = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run ferry");
    assert!(!usage.status.success());
    assert_eq!(
        String::from_utf8_lossy(&usage.stderr),
        "ferry: --config FILE is required (or: ferry check-config FILE)\n"
    );
}

/// systemd's Type=notify: the ferry binary says READY=1 on $NOTIFY_SOCKET once
/// it listens, and STOPPING=1 when SIGTERM starts its drain.
#[tokio::test(flavor = "multi_thread")]
async fn the_binary_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let env = TestEnv::builder().start().await;
    let socket_path = env.dir().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let conf = write_file(env.dir(), "notify.toml", env.config_toml.as_bytes());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(&conf)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let said = |socket: &std::os::unix::net::UnixDatagram| {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = tokio::task::block_in_place(|| said(&socket));
    assert_eq!(ready.trim(), "READY=1");
    assert!(send_signal(&child.id().to_string(), "-TERM"));
    let stopping = tokio::task::block_in_place(|| said(&socket));
    assert_eq!(stopping.trim(), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

/// A configuration file Ferry refuses, seen by its file watcher: one log
/// line naming the file and the reason, not repeated while the file stays
/// as it is; the running configuration stays.
#[tokio::test]
async fn a_refused_file_is_one_log_line_naming_it() {
    let env = TestEnv::builder().start().await;
    let (mut child, addr, log) = ferry_process_logged(&env, "").await;
    let conf = ferry_process_config(&env, &addr);
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        good.replacen(
            "default_phase = \"merged\"",
            "default_phase = \"sideways\"",
            1,
        ),
    )
    .unwrap();
    // The watcher's event, and then two of its five-second comparisons.
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("configuration reload refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{text}");
    assert!(
        refused[0].contains(&conf.display().to_string()) && refused[0].contains("sideways"),
        "{}",
        refused[0]
    );
    // Still serving.
    let mut c = TestClient::tls(addr.as_str(), &env.ca).await;
    c.greeting().await;
    c.login("alice", password_for("alice")).await.assert_ok();
    c.logout().await;
    child.kill().unwrap();
    child.wait().unwrap();
}
