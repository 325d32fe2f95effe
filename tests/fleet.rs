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
    let token_file = write_file(dir, "admin.token", format!("{TOKEN}\n").as_bytes());
    let env = TestEnv::builder()
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
    for (i, client) in on.iter_mut().enumerate().skip(1) {
        let start = Instant::now();
        while !lsub_old(client).await.contains(&"Old/Archive".into()) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "instance {i} never showed Old/Archive"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
