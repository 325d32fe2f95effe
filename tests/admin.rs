//! The admin API and `ferry admin` against a running Ferry with real
//! Dovecot stores: a bearer token from a file, a user's phase, sessions and
//! migration as JSON; start (a phase-`old` user too), pause, resume; ending a
//! user's sessions with `* BYE`.

mod common;

use common::*;
use ferry::state::{State, UserState};
use hyper::{Method, StatusCode};
use serde_json::Value;

const TOKEN: &str = "s3cret-admin-token";

async fn api(env: &TestEnv, token: &str, method: Method, path: &str) -> (StatusCode, Value) {
    let addr = env.ferry.admin_addr().expect("the admin API").to_string();
    ferry::admin::request(&addr, token, method, path)
        .await
        .expect("an answer")
}

/// `ferry --config FILE admin ARGS…` against this env's admin API (awaited:
/// the API is served on this test's runtime).
async fn ferry_admin(env: &TestEnv, dir: &std::path::Path, args: &[&str]) -> (bool, Value) {
    let addr = env.ferry.admin_addr().unwrap().to_string();
    let toml = env.config_toml.replace(
        "127.0.0.1:0\"\ntoken_file",
        &format!("{addr}\"\ntoken_file"),
    );
    let config = write_file(dir, "admin-cli.toml", toml.as_bytes());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(&config)
        .arg("admin")
        .args(args)
        .output()
        .await
        .expect("run ferry admin");
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), value)
}

#[tokio::test]
async fn the_admin_api_shows_and_steers_users() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_file(dir.path(), "admin.token", format!("{TOKEN}\n").as_bytes());
    let (copier, _) = copier_toml(dir.path());
    let env = TestEnv::builder()
        .extra_toml(&copier)
        .extra_toml(&format!(
            "[copier]\nenabled = true\nverify = \"quick\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
            token_file.display().to_string()
        ))
        .start()
        .await;
    let state = State::open(&format!(
        "sqlite://{}",
        dir.path().join("state.db").display()
    ))
    .await
    .unwrap();
    // No token, a wrong one: refused.
    assert_eq!(
        api(&env, "", Method::GET, "/users").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api(&env, "guess", Method::GET, "/users/alice").await.0,
        StatusCode::UNAUTHORIZED
    );
    // alice, logged in twice: phase and sessions.
    let mut a1 = env.login("alice").await;
    let mut a2 = env.login("alice").await;
    let (status, alice) = api(&env, TOKEN, Method::GET, "/users/alice").await;
    assert_eq!(status, StatusCode::OK, "{alice}");
    assert_eq!(
        (&alice["phase"], &alice["sessions"]),
        (&"merged".into(), &2.into()),
        "{alice}"
    );
    // olga is in phase old: copied only when an admin starts her.
    let (ok, started) = ferry_admin(&env, dir.path(), &["start", "olga"]).await;
    assert!(ok, "{started}");
    eventually(60, "olga verified", || async {
        state.migration("olga").await.unwrap().map(|r| r.state) == Some(UserState::Verified)
    })
    .await;
    assert_eq!(env.new.status("olga", "Old/INBOX").await.0, 1);
    let (ok, olga) = ferry_admin(&env, dir.path(), &["status", "olga"]).await;
    assert!(ok, "{olga}");
    assert_eq!(
        (
            &olga["phase"],
            &olga["migration"]["state"],
            &olga["migration"]["messages"]
        ),
        (&"old".into(), &"verified".into(), &1.into()),
        "{olga}"
    );
    // Pause and resume.
    let (_, paused) = api(&env, TOKEN, Method::POST, "/users/olga/migration/pause").await;
    assert_eq!(paused["migration"]["paused"], true, "{paused}");
    let (_, resumed) = api(&env, TOKEN, Method::POST, "/users/olga/migration/resume").await;
    assert_eq!(resumed["migration"]["paused"], false, "{resumed}");
    let (_, all) = api(&env, TOKEN, Method::GET, "/users").await;
    let names: Vec<&str> = all["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["user"].as_str())
        .collect();
    assert!(names.contains(&"olga") && names.contains(&"alice"), "{all}");
    // End alice's sessions: both get * BYE and are closed.
    let (ok, ended) = ferry_admin(&env, dir.path(), &["end-sessions", "alice"]).await;
    assert!(ok, "{ended}");
    assert_eq!(ended["ended"], 2, "{ended}");
    for c in [&mut a1, &mut a2] {
        let bye = lossy(&c.response().await);
        assert!(
            bye.starts_with("* BYE") && bye.contains("administrator"),
            "{bye}"
        );
        assert!(c.is_closed().await);
    }
    eventually(10, "alice's sessions gone", || async {
        api(&env, TOKEN, Method::GET, "/users/alice").await.1["sessions"] == 0
    })
    .await;
    // An unknown route.
    assert_eq!(
        api(&env, TOKEN, Method::POST, "/users/alice/nothing")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

/// `ferry FILE reload` (the systemd unit's ExecReload) exits 0 once the
/// running Ferry applied the file, and non-zero with Ferry's reason when
/// Ferry refused it; `ferry admin phase` sets and clears a user's phase.
#[tokio::test]
async fn ferry_reload_tells_whether_the_running_ferry_took_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_file(dir.path(), "admin.token", format!("{TOKEN}\n").as_bytes());
    let admin = format!("127.0.0.1:{}", free_port());
    let env = TestEnv::builder().start().await;
    // Its own instance, from a file (the test env's is not).
    let toml = format!(
        "{}[admin]\nlisten = \"{admin}\"\ntoken_file = {:?}\n",
        env.config_toml,
        token_file.display().to_string()
    );
    let conf = write_file(dir.path(), "ferry.toml", toml.as_bytes());
    let ferry = ferry::Ferry::start(ferry::config::load(&conf).unwrap())
        .await
        .unwrap();
    let run = |args: &'static [&'static str]| {
        let conf = conf.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
                .env("RUST_BACKTRACE", "1")
                .arg("--config")
                .arg(&conf)
                .args(args)
                .output()
                .await
                .expect("run ferry");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (ok, out, err) = run(&["reload"]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "reloaded: configuration generation 2");
    // A listener moved: only a restart can apply that; Ferry says so.
    let moved = toml.replacen(
        "imap  = \"127.0.0.1:0\"",
        &format!("imap  = \"127.0.0.1:{}\"", free_port()),
        1,
    );
    write_file(dir.path(), "ferry.toml", moved.as_bytes());
    let (ok, out, err) = run(&["reload"]).await;
    assert!(!ok, "{out}");
    assert!(
        err.starts_with("ferry: reload refused: listen changed") && err.contains("restart"),
        "{err}"
    );
    assert!(
        !err.contains("backtrace") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(ferry.generation(), 2);
    write_file(dir.path(), "ferry.toml", toml.as_bytes());
    // Phases through `ferry admin phase`.
    let (ok, out, err) = run(&["admin", "phase", "alice", "new"]).await;
    assert!(ok, "{out}{err}");
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (body["phase"].as_str(), body["phase_source"].as_str()),
        (Some("new"), Some("api"))
    );
    let (ok, out, _) = run(&["admin", "phase", "alice", "--clear"]).await;
    assert!(ok);
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body["phase_source"], "default", "{body}");
    let (ok, _, err) = run(&["admin", "phase", "alice", "sideways"]).await;
    assert!(!ok && err.contains("sideways"), "{err}");
    ferry
        .shutdown_within(std::time::Duration::from_secs(5))
        .await;
}
