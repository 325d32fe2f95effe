//! `Old/` subscriptions Ferry keeps, in the state store: they survive a restart
//! (SQLite and PostgreSQL), the files of `subscriptions_dir` are imported once,
//! and two instances sharing PostgreSQL never lose one another's.

mod common;

use std::time::Duration;

use common::*;
use ferry::state::State;

fn postgres_toml(pg: &Postgres) -> String {
    format!("[state]\nurl = \"{}\"\n", pg.url())
}

/// Old/Archive is not subscribed on OLD (only its child), Old/Sent is (see
/// `OLD_SUBSCRIBED`).
async fn choices_survive_a_restart(env: TestEnv) {
    let mut c = env.login("alice").await;
    let before = lsub_old(&mut c).await;
    assert!(before.contains(&"Old/Sent".into()), "{before:?}");
    assert!(!before.contains(&"Old/Archive".into()), "{before:?}");
    c.cmd("SUBSCRIBE Old/Archive").await.assert_ok();
    c.cmd("UNSUBSCRIBE Old/Sent").await.assert_ok();
    c.logout().await;
    let env = env.restart_ferry().await;
    let mut c = env.login("alice").await;
    let after = lsub_old(&mut c).await;
    assert!(after.contains(&"Old/Archive".into()), "{after:?}");
    assert!(!after.contains(&"Old/Sent".into()), "{after:?}");
    // OLD's other subscriptions are untouched.
    assert!(after.contains(&"Old/Archive/2019".into()), "{after:?}");
    assert!(after.contains(&"Old/INBOX".into()), "{after:?}");
    // Another user's view is their own.
    let mut d = env.login("dave").await;
    let dave = lsub_old(&mut d).await;
    assert!(!dave.contains(&"Old/Archive".into()), "{dave:?}");
}

#[tokio::test]
async fn sqlite_choices_survive_a_restart() {
    choices_survive_a_restart(TestEnv::start().await).await;
}

#[tokio::test]
async fn postgres_choices_survive_a_restart() {
    let pg = Postgres::start().await;
    let env = TestEnv::builder()
        .extra_toml(&postgres_toml(&pg))
        .start()
        .await;
    choices_survive_a_restart(env).await;
}

/// `subscriptions_dir` as an earlier Ferry left it: `<hex user>.subscriptions`.
fn write_old_file(env: &TestEnv, user: &str, text: &str) {
    let dir = env.dir().join("subscriptions");
    std::fs::create_dir_all(&dir).unwrap();
    let hex: String = user.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join(format!("{hex}.subscriptions")), text).unwrap();
}

#[tokio::test]
async fn old_files_are_imported_once() {
    // The harness names a subscriptions_dir that does not exist yet: nothing
    // is imported, and it is looked for again at the next start.
    let env = TestEnv::start().await;
    write_old_file(&env, "alice", "+Old/Archive\n-Old/Sent\n");
    let env = env.restart_ferry().await;
    let mut c = env.login("alice").await;
    let lsub = lsub_old(&mut c).await;
    assert!(lsub.contains(&"Old/Archive".into()), "{lsub:?}");
    assert!(!lsub.contains(&"Old/Sent".into()), "{lsub:?}");
    c.logout().await;
    // Imported once: a changed file is not read again.
    write_old_file(&env, "alice", "-Old/Archive\n+Old/Sent\n+Old/Nope\n");
    let env = env.restart_ferry().await;
    let mut c = env.login("alice").await;
    let lsub = lsub_old(&mut c).await;
    assert!(lsub.contains(&"Old/Archive".into()), "{lsub:?}");
    assert!(!lsub.contains(&"Old/Sent".into()), "{lsub:?}");
    assert!(!lsub.contains(&"Old/Nope".into()), "{lsub:?}");
}

async fn subscribe(c: &mut TestClient, prefix: &str, n: usize) {
    for i in 0..n {
        c.cmd(&format!("SUBSCRIBE Old/{prefix}{i}"))
            .await
            .assert_ok();
    }
}

#[tokio::test]
async fn two_instances_on_one_postgres_keep_both_users_rows() {
    const EACH: usize = 20;
    let pg = Postgres::start().await;
    let env = TestEnv::builder()
        .extra_toml(&postgres_toml(&pg))
        .start()
        .await;
    let second = env.another_ferry().await;
    let mut a = env.login_to(&env.ferry, "alice").await;
    let mut b = env.login_to(&second, "alice").await;
    tokio::join!(subscribe(&mut a, "A", EACH), subscribe(&mut b, "B", EACH));
    a.logout().await;
    b.logout().await;
    second.shutdown_within(Duration::from_secs(5)).await;
    let env = env.restart_ferry().await;
    // Every row of both instances is in the store...
    let state = State::open(&pg.url()).await.unwrap();
    let mut rows: Vec<String> = state
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.user == "alice" && s.subscribed)
        .map(|s| s.name)
        .collect();
    rows.sort();
    let mut want: Vec<String> = (0..EACH)
        .flat_map(|i| [format!("Old/A{i}"), format!("Old/B{i}")])
        .collect();
    want.sort();
    assert_eq!(rows, want);
    // ...and a fresh instance shows them.
    let mut c = env.login("alice").await;
    let lsub = lsub_old(&mut c).await;
    for name in &want {
        assert!(lsub.contains(name), "{name} missing: {lsub:?}");
    }
}
