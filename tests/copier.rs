//! The copier against real Dovecot stores and a real state store: alice's
//! OLD folders (Japanese names, an ISO-2022-JP message, a 20 MB message)
//! land on NEW under `Old/` byte for byte, with their flags and dates, logged
//! in as the master user; a second pass appends nothing.

mod common;

use std::time::Duration;

use common::*;
use ferry::{
    copier::{
        Job,
        folder::{Options, Pass, Verify},
        pace::Pace,
        user::{Event, UserError, migrate_user},
    },
    oauth::Tokens,
    state::{State, UserState},
};

/// A state store in an SQLite file `name` under `dir`.
async fn sqlite_state(dir: &std::path::Path, name: &str) -> State {
    State::open(&format!("sqlite://{}", dir.join(name).display()))
        .await
        .unwrap()
}

/// One pass over all of alice's OLD folders, archive mode: the totals.
async fn pass_over_alice(env: &TestEnv, state: &State) -> Pass {
    pass_over(env, state, 5, Options::default()).await
}

/// [`pass_over_alice`] when alice has `folders` folders to copy, with
/// `options`: the engine's own pass over a user, logged in as the master
/// user.
async fn pass_over(env: &TestEnv, state: &State, folders: usize, options: Options) -> Pass {
    let (planned, pass) = try_pass_over(env, state, options).await;
    let pass = pass.unwrap_or_else(|e| panic!("pass over alice: {e}"));
    assert_eq!(planned, Some(folders));
    pass
}

/// [`pass_over`], its error kept: the folders planned, and the pass.
async fn try_pass_over(
    env: &TestEnv,
    state: &State,
    options: Options,
) -> (Option<usize>, Result<Pass, UserError>) {
    let dir = tempfile::tempdir().unwrap();
    let (_, login) = copier_toml(dir.path());
    let toml = if env.config_toml.contains("[copier.old_login]") {
        env.config_toml.clone()
    } else {
        format!("{}{}{}", env.config_toml, login("old"), login("new"))
    };
    let config = ferry::config::parse(&toml).unwrap();
    let (tokens, pace) = (Tokens::default(), Pace::default());
    let job = Job {
        config: &config,
        state,
        tokens: &tokens,
        pace: &pace,
        activity: None,
        options,
        holder: "the test",
    };
    let mut planned = None;
    let pass = migrate_user(&job, "alice", &mut |e| {
        if let Event::Planned { folders, .. } = e {
            planned = Some(folders);
        }
    })
    .await;
    (planned, pass)
}

#[tokio::test]
async fn alices_old_folders_land_on_new_byte_for_byte_once() {
    let env = TestEnv::start().await;
    env.old
        .append(
            "alice",
            "INBOX.Archive",
            "(\\Seen $Big)",
            &big_message(20 << 20),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite_state(dir.path(), "state.db").await;
    let mut totals = Vec::new();
    for _ in 0..2 {
        totals.push(pass_over_alice(&env, &state).await);
    }
    // The ledger is lost (a new state store): NEW is searched by
    // Message-ID, date and size, and nothing is appended twice.
    let lost = sqlite_state(dir.path(), "lost.db").await;
    let again = pass_over_alice(&env, &lost).await;
    assert_eq!((again.appended, again.adopted), (0, 8));
    // 3 + 2 + 1 + 1 (Japanese) + 1 (20 MB) messages; the second pass appends none.
    let summary: Vec<(u64, u64)> = totals.iter().map(|p| (p.messages, p.appended)).collect();
    assert_eq!(summary, [(8, 8), (8, 0)]);
    for (old, new) in [
        ("INBOX", "Old/INBOX"),
        ("INBOX.Sent", "Old/Sent"),
        ("INBOX.Archive", "Old/Archive"),
        ("INBOX.Archive.2019", "Old/Archive/2019"),
        (OLD_JP_WIRE, CLIENT_JP_WIRE),
    ] {
        let (o, n) = (contents(&env.old, old).await, contents(&env.new, new).await);
        assert!(!o.is_empty(), "{old} is empty on OLD");
        assert_eq!(o, n, "{old} → {new}");
    }
}

fn migrate(config: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(config)
        .args(["migrate", "alice"])
        .output()
        .expect("run ferry migrate")
}

/// SIGKILL in the middle of a 3,000-message folder, then again: every
/// message is on NEW exactly once (the ledger, and the fingerprints for the
/// copies made after its last write).
#[tokio::test]
async fn killed_in_the_middle_of_a_folder_then_resumed_copies_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let (toml, _) = copier_toml(dir.path());
    // The killed copier's lease lapses in 2 s (the rerun waits for it).
    let env = TestEnv::builder()
        .extra_toml(&toml)
        .extra_toml("[copier]\nlease_secs = 2\n")
        .start()
        .await;
    seed_bulk(&env).await;
    let config = write_file(dir.path(), "ferry.toml", env.config_toml.as_bytes());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(&config)
        .args(["migrate", "alice"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once NEW holds part of the folder.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if env.new.messages_or_none("alice", "Old/Bulk").await > 250 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (partial, _, _) = env.new.status("alice", "Old/Bulk").await;
    assert!(partial < 3_000, "killed too late to tell: {partial}");
    let resumed = migrate(&config);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let (messages, _, _) = env.new.status("alice", "Old/Bulk").await;
    assert_eq!(messages, 3_000, "after the kill at {partial}");
    assert_eq!(
        contents(&env.old, "INBOX.Bulk").await,
        contents(&env.new, "Old/Bulk").await
    );
}

/// NEW's quota: 400 KB for alice (Dovecot's maildir quota).
const QUOTA: &str = "mail_plugins = $mail_plugins quota\n\
     plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=400K\n}\n";

/// NEW refuses a batch (its quota; a MULTIAPPEND is all or nothing): the
/// copier copies that batch one message at a time, so what fits lands and
/// is recorded, and the first message over quota fails the pass. Another
/// pass appends nothing twice.
#[tokio::test]
async fn a_batch_new_refuses_is_copied_one_message_at_a_time() {
    let env = TestEnv::builder().new_conf(QUOTA).start().await;
    let heavy = bulk_with(10, |i| message(&format!("Heavy {i}"), &"z".repeat(100_000)));
    env.old.create("alice", "INBOX.Heavy").await;
    env.old.append_many("alice", "INBOX.Heavy", &heavy).await;
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite_state(dir.path(), "state.db").await;
    let (_, failed) = try_pass_over(&env, &state, Options::default()).await;
    let err = failed
        .expect_err("10 × 100 KB do not fit in 400 KB")
        .to_string();
    assert!(err.contains("OVERQUOTA"), "{err}");
    let (copied, _, _) = env.new.status("alice", "Old/Heavy").await;
    assert!((1..10).contains(&copied), "{copied} of 10 on NEW");
    // Byte for byte, with flags and dates (the witness sorts its lines).
    let old = contents(&env.old, "INBOX.Heavy").await;
    let new = contents(&env.new, "Old/Heavy").await;
    assert_eq!(new.len(), copied as usize);
    assert!(new.iter().all(|m| old.contains(m)), "{new:?} ⊄ {old:?}");
    let (_, again) = try_pass_over(&env, &state, Options::default()).await;
    assert!(again.is_err());
    let (still, _, _) = env.new.status("alice", "Old/Heavy").await;
    assert_eq!(still, copied);
}

/// `ferry migrate alice`, twice, with the copier's own master-user logins
/// (the stores' own logins take users' passwords) and an SQLite state file.
#[tokio::test]
async fn ferry_migrate_copies_a_user_and_then_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (toml, login) = copier_toml(dir.path());
    let env = TestEnv::builder().extra_toml(&toml).start().await;
    let config = write_file(dir.path(), "ferry.toml", env.config_toml.as_bytes());
    let first = migrate(&config);
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        out.contains("alice: done, 7 messages, 7 copied now"),
        "{out}"
    );
    assert!(
        out.contains("alice  Old/Archive/2019  1 messages: 1 copied"),
        "{out}"
    );
    let second = migrate(&config);
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        out.contains("alice: done, 7 messages, 0 copied now"),
        "{out}"
    );
    // Without a login of its own for OLD the copier says what to set.
    let bare = env.config_toml.replace(&login("old"), "");
    let config = write_file(dir.path(), "bare.toml", bare.as_bytes());
    let refused = migrate(&config);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("[copier.old_login]"), "{err}");
}

/// The same passes with the ledger in a real PostgreSQL (a fleet's store).
#[tokio::test]
async fn the_ledger_in_postgres_keeps_passes_from_copying_twice() {
    let pg = Postgres::start().await;
    let env = TestEnv::start().await;
    let state = State::open(&pg.url()).await.unwrap();
    let first = pass_over_alice(&env, &state).await;
    let second = pass_over_alice(&env, &state).await;
    assert_eq!(
        [
            (first.messages, first.appended),
            (second.messages, second.appended)
        ],
        [(7, 7), (7, 0)]
    );
}

/// OLD's folder is recreated (a restore, a rebuilt index): its UIDVALIDITY
/// changes and the ledger knows none of its UIDs. The pass checks message by
/// message on NEW and copies nothing again.
#[tokio::test]
async fn a_new_uidvalidity_on_old_is_rechecked_not_recopied() {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite_state(dir.path(), "state.db").await;
    let bulk = bulk_with(3, |i| message(&format!("Restored {i}"), "Kept."));
    env.old.create("alice", "INBOX.Restored").await;
    env.old.append_many("alice", "INBOX.Restored", &bulk).await;
    let (_, _, before) = env.old.status("alice", "INBOX.Restored").await;
    let routes = 6; // alice's five folders and this one
    let first = pass_over(&env, &state, routes, Options::default()).await;
    assert_eq!(first.appended, 10);
    // Recreated with the same messages a second later: a new UIDVALIDITY.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = env.old.client("alice").await;
    c.cmd("DELETE INBOX.Restored").await.assert_ok();
    c.logout().await;
    env.old.create("alice", "INBOX.Restored").await;
    env.old.append_many("alice", "INBOX.Restored", &bulk).await;
    let (_, _, after) = env.old.status("alice", "INBOX.Restored").await;
    assert_ne!(before, after, "Dovecot kept the UIDVALIDITY");
    let again = pass_over(&env, &state, routes, Options::default()).await;
    assert_eq!((again.appended, again.adopted), (0, 3));
    assert_eq!(
        contents(&env.old, "INBOX.Restored").await,
        contents(&env.new, "Old/Restored").await
    );
}

/// A session straight at `store` as alice, with `folder` selected.
async fn selected(store: &Dovecot, folder: &str) -> TestClient {
    let mut c = store.client("alice").await;
    c.cmd(&format!("SELECT {}", quoted(folder)))
        .await
        .assert_ok();
    c
}

/// Delta passes, then verification, with the ledger in `state`: new mail
/// and flag changes on OLD reach NEW; a message expunged on OLD is reported
/// and its copy kept until removal is asked for; a copy changed on NEW is
/// listed as a difference and left as it is.
async fn delta_passes_then_verification(state: State) {
    let env = TestEnv::start().await;
    let first = pass_over_alice(&env, &state).await;
    assert_eq!((first.messages, first.appended), (7, 7));
    // alice keeps working on OLD (phase old): new mail, a flag change, an
    // expunge.
    env.old
        .append(
            "alice",
            "INBOX",
            "(\\Seen)",
            &message("Late news", "Arrived after."),
        )
        .await;
    let mut c = selected(&env.old, "INBOX").await;
    c.cmd("STORE 1 +FLAGS (\\Flagged $Work)").await.assert_ok();
    c.cmd("STORE 2 -FLAGS (\\Flagged)").await.assert_ok();
    c.logout().await;
    let mut c = selected(&env.old, "INBOX.Archive.2019").await;
    c.cmd("STORE 1 +FLAGS (\\Deleted)").await.assert_ok();
    c.cmd("EXPUNGE").await.assert_ok();
    c.logout().await;
    let delta = pass_over_alice(&env, &state).await;
    assert_eq!(
        (
            delta.messages,
            delta.appended,
            delta.flags_carried,
            delta.expunged_on_old,
            delta.removed
        ),
        (7, 1, 2, 1, 0),
        "{delta:?}"
    );
    assert_eq!(
        contents(&env.old, "INBOX").await,
        contents(&env.new, "Old/INBOX").await
    );
    assert_eq!(env.new.status("alice", "Old/Archive/2019").await.0, 1);
    // Removal only when asked for.
    let removing = Options {
        remove_expunged: true,
        ..Options::default()
    };
    let removed = pass_over(&env, &state, 5, removing).await;
    assert_eq!((removed.appended, removed.removed), (0, 1), "{removed:?}");
    assert_eq!(env.new.status("alice", "Old/Archive/2019").await.0, 0);
    // Nothing differs: alice is verified.
    let quick = Options {
        verify: Verify::Quick,
        ..Options::default()
    };
    let checked = pass_over(&env, &state, 5, quick).await;
    assert!(
        checked.verified && checked.differences.is_empty(),
        "{checked:?}"
    );
    let record = state.migration("alice").await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.messages, record.folders),
        (UserState::Verified, 7, 5)
    );
    // A copy changed on NEW: listed, never fixed.
    let mut c = selected(&env.new, "Old/INBOX").await;
    c.cmd("STORE 3 +FLAGS (\\Answered)").await.assert_ok();
    c.logout().await;
    let checked = pass_over(&env, &state, 5, quick).await;
    assert_eq!(
        checked
            .differences
            .iter()
            .map(|d| (d.folder.as_str(), d.what))
            .collect::<Vec<_>>(),
        [("INBOX", "flags")]
    );
    let record = state.migration("alice").await.unwrap().unwrap();
    assert_eq!((record.state, record.differences), (UserState::Synced, 1));
    let mut c = selected(&env.new, "Old/INBOX").await;
    let r = c.cmd("FETCH 3 (FLAGS)").await;
    assert!(r.text().contains("\\Answered"), "{}", r.text());
    c.logout().await;
}

#[tokio::test]
async fn delta_passes_and_verification_with_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    delta_passes_then_verification(sqlite_state(dir.path(), "state.db").await).await;
}

#[tokio::test]
async fn delta_passes_and_verification_with_postgres() {
    let pg = Postgres::start().await;
    delta_passes_then_verification(State::open(&pg.url()).await.unwrap()).await;
}

/// The file under `dir` whose bytes contain `needle`.
fn file_containing(dir: &std::path::Path, needle: &[u8]) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = file_containing(&path, needle) {
                return Some(found);
            }
        } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            return Some(path);
        }
    }
    None
}

/// `ferry migrate --verify full` compares bodies: a copy whose bytes were
/// changed on disk (same size, same headers) is found only by it; `ferry
/// migration status` shows the user and their folders.
#[tokio::test]
async fn full_verification_finds_a_changed_body_and_status_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (toml, _) = copier_toml(dir.path());
    let env = TestEnv::builder().extra_toml(&toml).start().await;
    let config = write_file(dir.path(), "ferry.toml", env.config_toml.as_bytes());
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("run ferry")
    };
    let out = run(&["migrate", "--verify=full", "alice"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("alice: done, 7 messages, 7 copied now, verified"),
        "{text}"
    );
    // One byte of the archived copy's body, changed in NEW's maildir.
    let file = file_containing(&env.new.dir().join("mail"), b"Archived.").expect("the copy");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(
        &file,
        String::from_utf8_lossy(&bytes).replace("Archived.", "Archived!"),
    )
    .unwrap();
    let quick = run(&["migrate", "--verify", "alice"]);
    assert!(
        quick.status.success(),
        "{}",
        String::from_utf8_lossy(&quick.stdout)
    );
    let full = run(&["migrate", "--verify=full", "alice"]);
    let text = String::from_utf8_lossy(&full.stdout);
    assert!(!full.status.success(), "{text}");
    assert!(
        text.contains("alice  differs: INBOX.Archive.2019 UID 1 (NEW UID 1): body (SHA-256)"),
        "{text}"
    );
    assert!(
        text.contains("alice: done, 7 messages, 0 copied now, 1 differences"),
        "{text}"
    );
    let status = run(&["migration", "status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    let alice = table
        .lines()
        .find(|l| l.starts_with("alice"))
        .expect(&table);
    let columns: Vec<&str> = alice.split_whitespace().collect();
    assert_eq!(&columns[1..4], ["synced", "5/5", "7/7"], "{table}");
    let json = run(&["migration", "status", "--json", "alice"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(value["user"]["state"], "synced", "{value}");
    assert_eq!(value["user"]["differences"], 1, "{value}");
    let archive = value["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["old_name"] == "INBOX.Archive.2019")
        .expect("the archive folder");
    assert_eq!(
        (
            &archive["new_name"],
            &archive["verified"],
            &archive["differences"]
        ),
        (
            &serde_json::json!("Old/Archive/2019"),
            &serde_json::json!(false),
            &serde_json::json!(1)
        )
    );
}

async fn user_state(state: &State, user: &str) -> Option<UserState> {
    state.migration(user).await.unwrap().map(|r| r.state)
}

/// `[copier] enabled`: a merged user is copied once Ferry knows them (a
/// login, or the configuration after a reload), verified, and kept in step
/// by delta passes; a paused user is left alone; the metrics show it.
#[tokio::test]
async fn the_background_copier_copies_merged_users_and_keeps_them_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let (toml, _) = copier_toml(dir.path());
    let env = TestEnv::builder()
        .extra_toml(&toml)
        .extra_toml(
            "[copier]\nenabled = true\npass_interval_secs = 1\nverify = \"quick\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n",
        )
        .start()
        .await;
    let state = sqlite_state(dir.path(), "state.db").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        state.migrations().await.unwrap().is_empty(),
        "nobody is copied before Ferry knows them"
    );
    let mut c = env.login("alice").await;
    c.logout().await;
    eventually(60, "alice verified", || async {
        user_state(&state, "alice").await == Some(UserState::Verified)
    })
    .await;
    assert_eq!(
        contents(&env.old, "INBOX").await,
        contents(&env.new, "Old/INBOX").await
    );
    // New mail on OLD reaches NEW in a delta pass.
    env.old
        .append("alice", "INBOX", "", &message("Later", "Came in later."))
        .await;
    eventually(30, "the new message copied", || async {
        env.new.status("alice", "Old/INBOX").await.0 == 4
    })
    .await;
    // dave is named merged by a reload.
    let toml = env.config_toml.replacen(
        "\"nils\" = \"new\"\n",
        "\"nils\" = \"new\"\n\"dave\" = \"merged\"\n",
        1,
    );
    env.ferry
        .reload(ferry::config::parse(&toml).unwrap())
        .unwrap();
    eventually(60, "dave verified", || async {
        user_state(&state, "dave").await == Some(UserState::Verified)
    })
    .await;
    assert_eq!(env.new.status("dave", "Old/INBOX").await.0, 1);
    // Paused: new mail stays on OLD.
    assert!(state.set_paused("alice", true).await.unwrap());
    env.old
        .append("alice", "INBOX", "", &message("Paused", "Waits."))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(env.new.status("alice", "Old/INBOX").await.0, 4);
    eventually(30, "the metrics", || async {
        let text = scrape(&env).await;
        sample(&text, "ferry_migration_users", &[("state", "verified")]) == 2.0
            && sample(&text, "ferry_migration_users_paused", &[]) == 1.0
    })
    .await;
    let text = scrape(&env).await;
    assert!(
        sample(&text, "ferry_migration_messages_copied_total", &[]) >= 9.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "ferry_migration_passes_total",
            &[("result", "failed")]
        ),
        0.0
    );
}

/// The UIDVALIDITY a SELECT or EXAMINE answer names.
fn uidvalidity(r: &Reply) -> u32 {
    let text = r.text();
    text.split("[UIDVALIDITY ")
        .nth(1)
        .and_then(|t| t.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {text}"))
}

/// Once verified, an `Old/` folder is served from its NEW copy: a client
/// with it open on OLD goes on undisturbed and sees the new UIDVALIDITY
/// once, at its next SELECT; the copy is read-only as OLD's folder was;
/// and with OLD gone the folder still opens.
#[tokio::test]
async fn a_verified_folder_is_served_from_its_copy_from_the_next_select() {
    let dir = tempfile::tempdir().unwrap();
    let (toml, _) = copier_toml(dir.path());
    let mut env = TestEnv::builder().extra_toml(&toml).start().await;
    let state = sqlite_state(dir.path(), "state.db").await;
    let mut open = env.login("alice").await;
    let on_old = open.cmd("SELECT Old/Archive/2019").await;
    on_old.assert_ok();
    let old_validity = uidvalidity(&on_old);
    assert_eq!(
        old_validity,
        env.old.status("alice", "INBOX.Archive.2019").await.2
    );
    let quick = Options {
        verify: Verify::Quick,
        ..Options::default()
    };
    let pass = pass_over(&env, &state, 5, quick).await;
    assert!(pass.verified, "{pass:?}");
    let copy_validity = env.new.status("alice", "Old/Archive/2019").await.2;
    assert_ne!(copy_validity, old_validity);
    // Another session finds the folder served from NEW (within a refresh).
    let mut other = env.login("alice").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = other.cmd("EXAMINE Old/Archive/2019").await;
        if r.is_ok() && uidvalidity(&r) == copy_validity {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never served from NEW"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The open session is not disturbed: still OLD's folder, no stray data.
    let r = open.cmd("FETCH 1 (FLAGS)").await;
    r.assert_ok();
    assert!(
        !r.text().contains("EXISTS") && !r.text().contains("BYE"),
        "{}",
        r.text()
    );
    // Its next SELECT sees the copy, once and for good.
    let first = open.cmd("SELECT Old/Archive/2019").await;
    first.assert_ok();
    assert_eq!(uidvalidity(&first), copy_validity);
    let again = open.cmd("SELECT Old/Archive/2019").await;
    assert_eq!(uidvalidity(&again), copy_validity);
    // Read-only as on OLD: flags are not changed, nothing is expunged,
    // nothing is moved out; copying out works (within NEW).
    let r = open.cmd("STORE 1 +FLAGS (\\Deleted)").await;
    r.assert_ok();
    assert!(
        r.text().contains("FETCH") && !r.text().contains("\\Deleted"),
        "{}",
        r.text()
    );
    open.cmd("EXPUNGE").await.assert_ok();
    let moved = open.cmd("MOVE 1 INBOX").await;
    assert!(
        moved.text().contains("NO") && moved.text().contains("READ-ONLY"),
        "{}",
        moved.text()
    );
    let inbox = env.new.status("alice", "INBOX").await.0;
    open.cmd("COPY 1 INBOX").await.assert_ok();
    assert_eq!(env.new.status("alice", "INBOX").await.0, inbox + 1);
    assert_eq!(env.new.status("alice", "Old/Archive/2019").await.0, 1);
    let mut c = selected(&env.new, "Old/Archive/2019").await;
    let r = c.cmd("FETCH 1 (FLAGS)").await;
    assert!(!r.text().contains("\\Deleted"), "{}", r.text());
    c.logout().await;
    let status = open
        .cmd("STATUS Old/Archive/2019 (MESSAGES UIDVALIDITY)")
        .await;
    status.assert_ok();
    assert!(
        status
            .text()
            .contains(&format!("UIDVALIDITY {copy_validity}")),
        "{}",
        status.text()
    );
    open.logout().await;
    other.logout().await;
    // OLD switched off: the served folder still opens, in a new session.
    env.old.stop().await;
    let mut late = env.login("alice").await;
    let r = late.cmd("SELECT Old/Archive/2019").await;
    r.assert_ok();
    assert_eq!(uidvalidity(&r), copy_validity);
    late.cmd("FETCH 1 (BODY.PEEK[])").await.assert_ok();
    // Every folder is served: LIST and LSUB show the Old/ tree from the
    // copies, OLD's subscriptions included, with no error.
    let list = late.cmd("LIST \"\" \"*\"").await;
    list.assert_ok();
    let text = list.text();
    for name in ["Old/INBOX", "Old/Sent", "Old/Archive/2019", "INBOX", "Work"] {
        assert!(
            text.contains(&format!("\"/\" {name}\r\n"))
                || text.contains(&format!("\"/\" \"{name}\"\r\n")),
            "{name} missing: {text}"
        );
    }
    assert!(
        !text.contains("UNAVAILABLE") && !text.contains(" NO "),
        "{text}"
    );
    let lsub = late.cmd("LSUB \"\" \"Old/*\"").await;
    lsub.assert_ok();
    for name in ["Old/INBOX", "Old/Sent", "Old/Archive/2019"] {
        assert!(
            lsub.text().contains(name),
            "{name} not subscribed: {}",
            lsub.text()
        );
    }
    late.cmd("STATUS Old/INBOX (MESSAGES)").await.assert_ok();
    late.logout().await;
}

/// Merge mode (imapsync's `--automap`): OLD's INBOX into NEW's INBOX, its
/// `\Sent` folder into NEW's `\Sent` one whatever their names, other
/// folders by path; NEW's own mail stays; a second pass adds nothing.
#[tokio::test]
async fn merge_mode_puts_old_mail_into_news_own_folders() {
    let env = TestEnv::builder()
        .extra_toml("[copier]\nmode = \"merge\"\n")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite_state(dir.path(), "state.db").await;
    let (inbox, sent) = (
        env.new.status("alice", "INBOX").await.0,
        env.new.status("alice", "Sent").await.0,
    );
    let first = pass_over(&env, &state, 5, Options::default()).await;
    assert_eq!((first.messages, first.appended), (7, 7), "{first:?}");
    assert_eq!(env.new.status("alice", "INBOX").await.0, inbox + 3);
    assert_eq!(env.new.status("alice", "Sent").await.0, sent + 2);
    assert_eq!(env.new.status("alice", "Archive/2019").await.0, 1);
    assert_eq!(
        contents(&env.old, "INBOX.Archive.2019").await,
        contents(&env.new, "Archive/2019").await
    );
    let again = pass_over(&env, &state, 5, Options::default()).await;
    assert_eq!((again.appended, again.adopted), (0, 0), "{again:?}");
}
