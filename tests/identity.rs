//! Per-store identities against real Dovecot stores: OLD knows the users as
//! they log in; NEW knows them as `user@new.test`, with other passwords, and
//! admits the master user `ferry` (Dovecot `master = yes`). Users log in
//! through Ferry with their OLD password and get the whole merged view.

mod common;

use common::*;

/// `[backends.new.login]` for a NEW reached by the master user, and the
/// secret file it names (kept alive by the caller).
fn master_toml(style: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = write_file(
        dir.path(),
        "new-master.secret",
        format!("{MASTER_PASSWORD}\n").as_bytes(),
    );
    let toml = format!(
        "[auth]\n\
         verify = \"old\"\n\
         [backends.new.login]\n\
         mode = \"master\"\n\
         user = \"{{user}}@new.test\"\n\
         master_user = \"{MASTER_USER}\"\n\
         master_password_file = {:?}\n\
         master_style = \"{style}\"\n",
        secret.display().to_string()
    );
    (dir, toml)
}

/// The `[auth]` table of the generated configuration, with `verify` added.
fn with_verify(builder: TestEnvBuilder, extra: &str) -> TestEnvBuilder {
    // The generated configuration has its own [auth]; `verify` joins it.
    let (auth, rest) = extra.split_once("[backends.new.login]").unwrap();
    let verify = auth.trim_start_matches("[auth]\n").to_string();
    builder
        .auth_toml(&verify)
        .extra_toml(&format!("[backends.new.login]{rest}"))
}

async fn renamed_env(style: &str) -> (tempfile::TempDir, TestEnv) {
    let (dir, toml) = master_toml(style);
    let env = with_verify(TestEnv::builder().new_naming(Naming::Renamed), &toml)
        .start()
        .await;
    (dir, env)
}

#[tokio::test]
async fn old_password_opens_the_merged_view_of_a_renamed_new_store() {
    let (_secret, env) = renamed_env("authzid").await;
    let mut c = env.login("alice").await;
    // NEW's folders, reached as alice@new.test by the master user.
    let list = c.cmd("LIST \"\" \"*\"").await;
    list.assert_ok();
    let names: Vec<String> = list.list_entries().into_iter().map(|e| e.name).collect();
    for name in ["INBOX", "Work", "Old/INBOX", "Old/Sent", "Old/Archive/2019"] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    let r = c.cmd("SELECT INBOX").await;
    r.assert_ok();
    assert!(r.text().contains("* 2 EXISTS"), "{}", r.text());
    let r = c
        .cmd("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    r.assert_ok();
    for subject in NEW_INBOX_SUBJECTS {
        assert!(r.text().contains(subject), "{}", r.text());
    }
    // Old/ is served by the connection that checked the password.
    let r = c.cmd("SELECT Old/INBOX").await;
    r.assert_ok();
    assert!(r.text().contains("* 3 EXISTS"), "{}", r.text());
    // A copy from Old/ lands in the renamed user's NEW folder.
    c.cmd("UID COPY 1:* Work").await.assert_ok();
    c.logout().await;
    let (messages, _, _) = env.new.status("alice", "Work").await;
    assert_eq!(messages, 1 + OLD_INBOX_SUBJECTS.len() as u32);
    // NEW saw a master login for the mapped name, never the client's password.
    let log = env.new.log();
    assert!(
        !log.contains("user=<alice>,"),
        "NEW was asked about the client's own name:\n{log}"
    );
}

#[tokio::test]
async fn separator_style_master_login_in_phase_new() {
    let (_secret, env) = renamed_env("separator").await;
    // nils is in phase new: OLD checks the password and is let go; NEW is
    // reached with LOGIN "nils@new.test*ferry".
    let mut c = env.login("nils").await;
    let r = c.cmd("SELECT INBOX").await;
    r.assert_ok();
    let r = c.cmd("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])").await;
    assert!(r.text().contains("New hello nils"), "{}", r.text());
    c.logout().await;
}

#[tokio::test]
async fn wrong_passwords_and_refused_master_logins_answer_alike() {
    let (_secret, env) = renamed_env("authzid").await;
    let before = env.new.log();
    // A wrong OLD password: NEW is never asked.
    let mut c = env.imaps_client().await;
    let wrong = c.login("alice", "not-the-password").await;
    wrong.assert_no();
    // NEW's own password for the NEW name is no use through Ferry: OLD
    // checks, and OLD does not know it.
    let renamed = c
        .login(
            &Naming::Renamed.user("alice"),
            Naming::Renamed.password("alice"),
        )
        .await;
    renamed.assert_no();
    assert_eq!(wrong.code(), renamed.code());
    assert_eq!(
        wrong
            .tagged_line()
            .split_once(' ')
            .map(|(_, r)| r.to_string()),
        renamed
            .tagged_line()
            .split_once(' ')
            .map(|(_, r)| r.to_string())
    );
    // The seeding's own logins are all NEW's log holds.
    let new_log = env.new.log();
    let added = new_log.strip_prefix(before.as_str()).unwrap_or(&new_log);
    assert!(
        !added.contains("user=<alice") && !added.contains("auth"),
        "NEW was asked about a login it should not have been:\n{added}"
    );
}

/// A store whose master secret is wrong refuses Ferry; the client gets the
/// answer of a wrong password, and the session can try again.
#[tokio::test]
async fn a_wrong_master_secret_is_a_failed_login_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_file(dir.path(), "bad.secret", b"not-the-master-secret\n");
    let toml = format!(
        "[auth]\nverify = \"old\"\n[backends.new.login]\nmode = \"master\"\n\
         user = \"{{user}}@new.test\"\nmaster_user = \"{MASTER_USER}\"\n\
         master_password_file = {:?}\n",
        secret.display().to_string()
    );
    let env = with_verify(TestEnv::builder().new_naming(Naming::Renamed), &toml)
        .start()
        .await;
    let mut c = env.imaps_client().await;
    let r = c.login("alice", password_for("alice")).await;
    r.assert_no_with("AUTHENTICATIONFAILED");
    c.cmd("NOOP").await.assert_ok();
}

#[test]
fn check_config_refuses_a_configuration_where_nothing_checks_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_file(dir.path(), "m.secret", b"x\n");
    let base = format!(
        "[listen]\nimap = \"127.0.0.1:1430\"\n[auth]\nallow_plaintext = true\n\
         [backends.old]\naddress = \"127.0.0.1:1\"\ntls = \"none\"\n\
         [backends.new]\naddress = \"127.0.0.1:2\"\ntls = \"none\"\n\
         [backends.new.login]\nmode = \"master\"\nmaster_user = \"ferry\"\n\
         master_password_file = {:?}\n",
        secret.display().to_string()
    );
    let path = write_file(dir.path(), "ferry.toml", base.as_bytes());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run ferry check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted:\n{stderr}");
    assert!(
        stderr.contains("auth.verify") && stderr.contains("nothing would check"),
        "{stderr}"
    );
    // With OLD checking, the same stores are fine.
    let fixed = base.replace(
        "allow_plaintext = true\n",
        "allow_plaintext = true\nverify = \"old\"\n",
    );
    let path = write_file(dir.path(), "ferry.toml", fixed.as_bytes());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run ferry check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The user changed the password on NEW only: NEW lets the client in, OLD
/// refuses the lazy login for `Old/`. Later sessions do not ask OLD again
/// with that password, so OLD's lockout (JAIST locks an account after a few
/// failures) never counts a client that reconnects all day.
#[tokio::test]
async fn old_is_not_asked_again_with_a_password_it_refused() {
    let env = TestEnv::builder()
        .new_naming(Naming::Renamed)
        .extra_toml("[backends.new.login]\nuser = \"{user}@new.test\"\n")
        .start()
        .await;
    let new_password = Naming::Renamed.password("alice");
    let refusals = |log: &str| log.matches("auth failed").count();
    for _ in 0..3 {
        let mut c = env.imaps_client().await;
        c.login("alice", &new_password).await.assert_ok();
        let r = c.cmd("EXAMINE Old/INBOX").await;
        r.assert_no_with("UNAVAILABLE");
        c.cmd("SELECT INBOX").await.assert_ok();
        c.logout().await;
    }
    // Dovecot logs a refused login when the connection closes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while refusals(&env.old.log()) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = env.old.log();
    assert_eq!(refusals(&log), 1, "OLD was asked more than once:\n{log}");
}
