//! Three Ferry instances sharing one PostgreSQL (started by the test, like
//! the Dovecot stores) act as one: a SUBSCRIBE on one shows in LSUB on the
//! others, concurrent choices end as the latest one everywhere, wrong
//! passwords count wherever they were tried, and the admin API of one ends a
//! user's sessions on all.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferry::state::State;
use hyper::Method;

const TOKEN: &str = "fleet-admin-token";

/// Waits (10 s at most) until the client's LSUB shows `name`.
async fn until_lsub_shows(client: &mut TestClient, name: &str) {
    let start = Instant::now();
    while !lsub_old(client).await.iter().any(|n| n == name) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} never shown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether each client's LSUB shows Old/Sent.
async fn shown(on: &mut [TestClient; 3]) -> [bool; 3] {
    let mut out = [false; 3];
    for (client, shown) in on.iter_mut().zip(&mut out) {
        *shown = lsub_old(client).await.contains(&"Old/Sent".into());
    }
    out
}

/// Three instances on one PostgreSQL, the first with an admin API.
async fn fleet(pg: &Postgres, dir: &std::path::Path) -> (TestEnv, [ferry::Ferry; 2]) {
    fleet_with(pg, dir, "").await
}

/// [`fleet`] with `extra` TOML.
async fn fleet_with(
    pg: &Postgres,
    dir: &std::path::Path,
    extra: &str,
) -> (TestEnv, [ferry::Ferry; 2]) {
    let token_file = write_file(dir, "admin.token", format!("{TOKEN}\n").as_bytes());
    let env = TestEnv::builder()
        .extra_toml(extra)
        .extra_toml(&format!(
            "[state]\nurl = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
            pg.url(),
            token_file.display().to_string()
        ))
        .start()
        .await;
    let others = [env.another_ferry().await, env.another_ferry().await];
    (env, others)
}

#[tokio::test]
async fn subscriptions_reach_every_instance_and_the_latest_choice_wins() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (env, [b, c]) = fleet(&pg, dir.path()).await;
    let mut on = [
        env.login_to(&env.ferry, "alice").await,
        env.login_to(&b, "alice").await,
        env.login_to(&c, "alice").await,
    ];
    // Old/Archive is not subscribed on OLD (only its child).
    for client in &mut on {
        assert!(!lsub_old(client).await.contains(&"Old/Archive".into()));
    }
    on[0].cmd("SUBSCRIBE Old/Archive").await.assert_ok();
    for client in &mut on[1..] {
        until_lsub_shows(client, "Old/Archive").await;
    }
    // Ten choices at once from the three instances (connections of their
    // own, so they really overlap), then one more, after all were answered.
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..10 {
        let ferry = [&env.ferry, &b, &c][k % 3];
        let mut client = env.login_to(ferry, "alice").await;
        tasks.spawn(async move {
            let verb = if k % 2 == 0 {
                "SUBSCRIBE"
            } else {
                "UNSUBSCRIBE"
            };
            client.cmd(&format!("{verb} Old/Sent")).await.assert_ok();
            client.logout().await;
        });
    }
    tasks.join_all().await;
    let state = State::open(&pg.url()).await.unwrap();
    let stored = || async {
        state
            .user_subscriptions("alice")
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.name == "Old/Sent")
            .map(|r| r.subscribed)
    };
    // Every instance comes to show what the store holds.
    let start = Instant::now();
    loop {
        let want = stored().await.expect("a row for Old/Sent");
        if shown(&mut on).await == [want; 3] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the instances never agreed with the store ({want})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last word: UNSUBSCRIBE on the third, then SUBSCRIBE on the first
    // right after its OK (before the first write may have landed).
    on[2].cmd("UNSUBSCRIBE Old/Sent").await.assert_ok();
    on[0].cmd("SUBSCRIBE Old/Sent").await.assert_ok();
    let start = Instant::now();
    while stored().await != Some(true) || shown(&mut on).await != [true; 3] {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "Old/Sent never subscribed everywhere"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for client in &mut on {
        client.logout().await;
    }
    b.shutdown_within(Duration::from_secs(5)).await;
    c.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn wrong_passwords_count_on_every_instance() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (env, [b, c]) = fleet(&pg, dir.path()).await;
    let known = |text: &str| {
        sample(
            text,
            "ferry_auth_throttled_total",
            &[("kind", "known_failure")],
        )
    };
    let before = known(&scrape(&env).await);
    // A stale password, refused by the stores on the first instance...
    let mut first = env.imaps_client().await;
    assert!(!first.login("carol", "stale-password").await.is_ok());
    // ... is answered on the third without reaching a store once it heard.
    eventually(
        10,
        "the third instance knows the stale password",
        || async {
            let mut third = TestClient::tls(c.imaps_addr().unwrap(), &env.ca).await;
            third.greeting().await;
            assert!(!third.login("carol", "stale-password").await.is_ok());
            // Counters are the test process's: only the third answers from
            // its cache (the first asked the stores).
            known(&scrape(&env).await) > before
        },
    )
    .await;
    // Failures made anywhere delay the next login everywhere (the test's
    // curve: 100 ms doubling to at most 400 ms), the right password too.
    for ferry in [&env.ferry, &b] {
        let mut client = TestClient::tls(ferry.imaps_addr().unwrap(), &env.ca).await;
        client.greeting().await;
        assert!(!client.login("carol", "wrong-1").await.is_ok());
    }
    // The last failure's notification travels after its NO (see below).
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut third = TestClient::tls(c.imaps_addr().unwrap(), &env.ca).await;
    third.greeting().await;
    let start = Instant::now();
    third
        .login("carol", password_for("carol"))
        .await
        .assert_ok();
    assert!(
        start.elapsed() >= Duration::from_millis(380),
        "the third instance did not hold the login: {:?}",
        start.elapsed()
    );
    b.shutdown_within(Duration::from_secs(5)).await;
    c.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn ending_sessions_on_one_admin_api_ends_them_on_every_instance() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (env, [b, c]) = fleet(&pg, dir.path()).await;
    let mut on_b = env.login_to(&b, "alice").await;
    let mut on_c = env.login_to(&c, "alice").await;
    let mut dave = env.login_to(&c, "dave").await;
    let addr = env.ferry.admin_addr().unwrap().to_string();
    let (status, body) =
        ferry::admin::request(&addr, TOKEN, Method::POST, "/users/alice/sessions/end")
            .await
            .expect("an answer");
    assert!(status.is_success(), "{body}");
    assert_eq!(body["ended"], 0, "none on the first instance: {body}");
    assert_eq!(body["fleet"], true, "{body}");
    for client in [&mut on_b, &mut on_c] {
        let bye = lossy(&client.response().await);
        assert!(
            bye.starts_with("* BYE") && bye.contains("administrator"),
            "{bye}"
        );
        assert!(client.is_closed().await);
    }
    // Only alice's.
    dave.cmd("NOOP").await.assert_ok();
    dave.logout().await;
    b.shutdown_within(Duration::from_secs(5)).await;
    c.shutdown_within(Duration::from_secs(5)).await;
}

/// Two instances with the copier on, a user being copied by the first:
/// the second leaves the user alone while the first holds the lease, then
/// SIGKILL of the first, and the second takes the user over once the lease
/// ran out and finishes the copy, every message on NEW exactly once.
#[tokio::test]
async fn a_killed_instances_user_is_taken_over_and_copied_once() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, login) = copier_toml(dir.path());
    let env = TestEnv::builder()
        .extra_toml(&format!(
            "[state]\nurl = \"{}\"\n{}{}",
            pg.url(),
            login("old"),
            login("new")
        ))
        .start()
        .await;
    seed_bulk(&env).await;
    let state = State::open(&pg.url()).await.unwrap();
    state.enqueue("alice").await.unwrap();
    // The copier runs in separate processes (SIGKILL); this test's own
    // instance has it off.
    // Paced, so that the kill lands in the middle of the folder.
    let copier = "[copier]\nenabled = true\nlease_secs = 3\nverify = \"quick\"\n\
                  [copier.pace.new]\nmessages_per_second = 400\n";
    let (mut first, _, first_log) = ferry_process_logged(&env, copier).await;
    eventually(60, "the first instance copying alice", || async {
        env.new.messages_or_none("alice", "Old/Bulk").await > 250
    })
    .await;
    let holder = |leases: Vec<ferry::state::lease::Lease>| {
        leases
            .into_iter()
            .find(|l| l.user == "alice")
            .map(|l| l.holder)
    };
    let first_holder = holder(state.leases().await.unwrap()).expect("a lease on alice");
    let (mut second, _, second_log) = ferry_process_logged(&env, copier).await;
    // The second sees the lease (its copier looks every 2 s) and keeps off.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        holder(state.leases().await.unwrap()).as_deref(),
        Some(first_holder.as_str()),
        "{}",
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let (partial, _, _) = env.new.status("alice", "Old/Bulk").await;
    assert!(partial < 3_000, "killed too late to tell: {partial}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !state
        .migration("alice")
        .await
        .unwrap()
        .is_some_and(|r| r.state == ferry::state::UserState::Verified)
    {
        assert!(
            Instant::now() < deadline,
            "the second instance never finished alice:\n{}",
            std::fs::read_to_string(&second_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    second.kill().unwrap();
    second.wait().unwrap();
    let (messages, _, _) = env.new.status("alice", "Old/Bulk").await;
    assert_eq!(messages, 3_000, "after the kill at {partial}");
    assert_eq!(
        contents(&env.old, "INBOX.Bulk").await,
        contents(&env.new, "Old/Bulk").await
    );
}

/// Replaces `path` the way a ConfigMap update or an editor does: a new file
/// renamed over the old one.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Whether the client was sent `* BYE` for a phase change and closed.
async fn moved(client: &mut TestClient) -> bool {
    let bye = lossy(&client.response().await);
    bye.starts_with("* BYE") && bye.contains("migration phase") && client.is_closed().await
}

/// Three instances reading one configuration file and users file (three
/// pods mounting one ConfigMap), sharing PostgreSQL. A change of the users
/// file reaches every instance without a signal and ends exactly the
/// changed users' sessions; a phase set through one instance's admin API
/// reaches all and wins over the files until cleared.
#[tokio::test]
async fn phases_follow_the_users_file_and_the_admin_api_on_every_instance() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (env, others) = fleet(&pg, dir.path()).await;
    drop(others);
    let users = write_file(dir.path(), "users.toml", b"\"dave\" = \"merged\"\n");
    let toml = env.config_toml.replacen(
        "default_phase = \"merged\"\n",
        &format!(
            "default_phase = \"merged\"\nusers_file = {:?}\n",
            users.display().to_string()
        ),
        1,
    );
    let conf = write_file(dir.path(), "ferry.toml", toml.as_bytes());
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let config = ferry::config::load(&conf).unwrap();
        fleet.push(ferry::Ferry::start(config).await.unwrap());
    }
    let login_all = |user: &'static str| {
        let (env, fleet) = (&env, &fleet);
        async move {
            let mut out = Vec::new();
            for f in fleet {
                out.push(env.login_to(f, user).await);
            }
            out
        }
    };
    let mut alice = login_all("alice").await;
    let mut dave = login_all("dave").await;
    // dave moves to phase new in the users file: his sessions end on every
    // instance, alice's stay.
    replace_file(&users, "\"dave\" = \"new\"\n");
    for client in &mut dave {
        assert!(moved(client).await, "dave's session was not ended");
    }
    for client in &mut alice {
        client.cmd("NOOP").await.assert_ok();
    }
    let generation = fleet[1].generation();
    // The admin API of the first instance puts alice in phase old.
    let admin = fleet[0].admin_addr().unwrap().to_string();
    let ask = |method: Method, path: String| {
        let admin = admin.clone();
        async move {
            let (status, body) = ferry::admin::request(&admin, TOKEN, method, &path)
                .await
                .expect("an answer");
            assert!(status.is_success(), "{path}: {body}");
            body
        }
    };
    let body = ask(Method::PUT, "/users/alice/phase/old".into()).await;
    assert_eq!(
        (body["phase"].as_str(), body["phase_source"].as_str()),
        (Some("old"), Some("api"))
    );
    for client in &mut alice {
        assert!(moved(client).await, "alice's session was not ended");
    }
    let mut alice = login_all("alice").await;
    // The files cannot move her while the admin API's phase stands...
    replace_file(&users, "\"dave\" = \"new\"\n\"alice\" = \"new\"\n");
    eventually(10, "every instance read the users file again", || async {
        fleet.iter().all(|f| f.generation() > generation + 1)
    })
    .await;
    for client in &mut alice {
        client.cmd("NOOP").await.assert_ok();
    }
    let body = ask(Method::GET, "/users/alice".into()).await;
    assert_eq!(body["phase_source"], "api", "{body}");
    // ... and once it is cleared, the users file's phase applies everywhere.
    let body = ask(Method::DELETE, "/users/alice/phase".into()).await;
    assert_eq!(
        (body["phase"].as_str(), body["phase_source"].as_str()),
        (Some("new"), Some("users_file"))
    );
    for client in &mut alice {
        assert!(moved(client).await, "alice's session was not ended");
    }
    // A users file Ferry refuses changes nothing anywhere.
    let before: Vec<u64> = fleet.iter().map(|f| f.generation()).collect();
    replace_file(&users, "\"dave\" = \"sideways\"\n");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        before,
        fleet.iter().map(|f| f.generation()).collect::<Vec<_>>()
    );
    for f in fleet {
        f.shutdown_within(Duration::from_secs(5)).await;
    }
}

/// Three instances on one PostgreSQL behind a real HAProxy (PROXY v2,
/// `/readyz` checks), `balance` over (b, c, the env's own) in that order.
async fn behind_haproxy(pg: &Postgres, balance: &str) -> (TestEnv, [ferry::Ferry; 2], Haproxy) {
    let env = TestEnv::builder()
        .listen_toml("proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n")
        .extra_toml(&format!(
            "[state]\nurl = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            pg.url()
        ))
        .start()
        .await;
    let (b, c) = (env.another_ferry().await, env.another_ferry().await);
    let server = |f: &ferry::Ferry| (f.imaps_addr().unwrap(), f.metrics_addr().unwrap());
    let haproxy = Haproxy::fleet(balance, &[server(&b), server(&c), server(&env.ferry)]).await;
    (env, [b, c], haproxy)
}

/// Behind one HAProxy that deals connections round robin, so that a
/// client's connections land on the three instances in turn: a SUBSCRIBE
/// made through one shows in LSUB through the next two, and wrong passwords
/// tried through three connections hold the next login as one count.
#[tokio::test]
async fn behind_haproxy_the_instances_are_one_ferry() {
    let pg = Postgres::start().await;
    let (env, [b, c], haproxy) = behind_haproxy(&pg, "roundrobin").await;
    let connect = || async {
        let mut client = TestClient::tls(haproxy.addr(), &env.ca).await;
        client.greeting().await;
        client
    };
    // Connections until there is one on each instance (HAProxy may skip one
    // still being checked), each known by whose count it raised.
    let instances = [&env.ferry, &b, &c];
    let mut on: [Option<TestClient>; 3] = [None, None, None];
    let start = Instant::now();
    while on.iter().any(Option::is_none) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "HAProxy never used all three"
        );
        let before: Vec<usize> = instances.iter().map(|f| f.sessions_of("alice")).collect();
        let mut client = connect().await;
        client
            .login("alice", password_for("alice"))
            .await
            .assert_ok();
        let landed = (0..3)
            .find(|&i| instances[i].sessions_of("alice") > before[i])
            .expect("the session is on one of the three");
        if on[landed].is_none() {
            on[landed] = Some(client);
        }
    }
    let mut on = on.map(|c| c.expect("one on each"));
    on[0].cmd("SUBSCRIBE Old/Archive").await.assert_ok();
    for client in &mut on[1..] {
        until_lsub_shows(client, "Old/Archive").await;
    }
    // Three wrong passwords, one per instance: the next login (wherever it
    // lands) waits as after three failures (100 ms doubling, at most 400).
    for _ in 0..3 {
        let mut client = connect().await;
        assert!(!client.login("carol", "wrong").await.is_ok());
    }
    // A failure reaches the other instances as a PostgreSQL notification,
    // after the NO; a client quicker than that (a fast machine reconnects
    // in a few milliseconds) meets an instance that has not heard yet.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut next = connect().await;
    let start = Instant::now();
    next.login("carol", password_for("carol")).await.assert_ok();
    assert!(
        start.elapsed() >= Duration::from_millis(380),
        "the login was not held: {:?}",
        start.elapsed()
    );
    b.shutdown_within(Duration::from_secs(5)).await;
    c.shutdown_within(Duration::from_secs(5)).await;
}

/// A rolling restart behind HAProxy: the instance a client IDLEs on drains
/// (SIGTERM's path); the client is told at once, reconnects through HAProxy,
/// lands on another instance and finds its subscriptions as it left them.
#[tokio::test]
async fn draining_an_instance_under_idle_loses_nothing() {
    let pg = Postgres::start().await;
    // `first`: every client goes to b while b is up.
    let (env, [b, c], haproxy) = behind_haproxy(&pg, "first").await;
    let mut client = TestClient::tls(haproxy.addr(), &env.ca).await;
    client.greeting().await;
    client
        .login("alice", password_for("alice"))
        .await
        .assert_ok();
    client.cmd("SUBSCRIBE Old/Archive").await.assert_ok();
    client.cmd("SELECT INBOX").await.assert_ok();
    client.send(b"i1 IDLE\r\n").await;
    assert!(lossy(&client.response().await).starts_with("+"));
    let start = Instant::now();
    let drained = tokio::spawn(b.shutdown_within(Duration::from_secs(30)));
    // IDLE is ended with the store first (tagged OK), then BYE, then close.
    let done = lossy(&client.response().await);
    assert!(done.starts_with("i1 OK"), "{done}");
    let bye = lossy(&client.response().await);
    assert!(bye.starts_with("* BYE"), "{bye}");
    assert!(client.is_closed().await);
    // At once, not after the grace period.
    drained.await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the drain waited for the IDLE: {:?}",
        start.elapsed()
    );
    let mut again = TestClient::tls(haproxy.addr(), &env.ca).await;
    again.greeting().await;
    again
        .login("alice", password_for("alice"))
        .await
        .assert_ok();
    assert!(lsub_old(&mut again).await.contains(&"Old/Archive".into()));
    again.logout().await;
    c.shutdown_within(Duration::from_secs(5)).await;
}

/// The fleet-wide per-address limit: connections from one address count on
/// every instance (within about a second), and a slot freed on one instance
/// is free on all.
#[tokio::test]
async fn connections_per_address_are_limited_across_the_fleet() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (env, [b, c]) = fleet_with(
        &pg,
        dir.path(),
        "[limits]\nfleet_max_connections_per_ip = 4\n",
    )
    .await;
    let plain = |f: &ferry::Ferry| f.imap_addr().unwrap();
    let mut open = Vec::new();
    for f in [&env.ferry, &env.ferry, &b, &b] {
        let mut client = TestClient::plain(plain(f)).await;
        assert!(lossy(&client.greeting().await).starts_with("* OK"));
        open.push(client);
    }
    eventually(
        10,
        "the third instance refusing a fifth connection",
        || async {
            let mut fifth = TestClient::plain(plain(&c)).await;
            let greeting = lossy(&fifth.greeting().await);
            greeting.starts_with("* BYE Too many connections")
        },
    )
    .await;
    // One of the second instance's closes: the third admits one again.
    open.pop().unwrap().logout().await;
    eventually(10, "the third instance admitting again", || async {
        let mut again = TestClient::plain(plain(&c)).await;
        lossy(&again.greeting().await).starts_with("* OK")
    })
    .await;
    b.shutdown_within(Duration::from_secs(5)).await;
    c.shutdown_within(Duration::from_secs(5)).await;
}
