//! Replays the session transcripts in `src/session/transcripts/*.txt`.
//!
//! A transcript is one line per event, in the order they happen; after each
//! input the session's actions are drained and must be exactly the expected
//! lines that follow it (a burst of lines sent as one write is shown line by
//! line, so tests do not depend on how output is batched).
//!
//! Inputs:
//! - `C: text`  the client sends `text` and CRLF; `C~ text` sends it without CRLF
//! - `O< text`, `N< text`  OLD / NEW send `text` and CRLF (`O~`, `N~`: without)
//! - `O! login ok [CAPS…]`, `… login rejected`, `… login unavailable`: the
//!   driver's login to that store finished (CAPS replace the default list)
//! - `O! closed`, `N! closed`, `C! closed`: that peer closed its connection
//! - `C! tls`: the client's TLS handshake completed
//! - `T: +30s` (or `+500ms`, `+2m`): time passes; every deadline of the
//!   session on the way fires in turn, as the driver's timer would
//! - `! shutdown`: Ferry is shutting down
//! - `! reload USER=PHASE`: a reload moves USER to PHASE
//!
//! Expected outputs:
//! - `S: text`  to the client; `O: text`, `N: text`  to OLD / NEW
//! - `-> login old|new USER` (LOGIN as USER), `-> login old|new USER by
//!   MASTER` (a master user's SASL PLAIN), `-> close old|new`, `-> close`,
//!   `-> starttls`, `-> compress` (`, N bytes read ahead`: what the client
//!   sent after COMPRESS, handed over to be inflated)
//! - `M: …` a report for metrics (not for commands), with `@reports` only;
//!   an event's reports follow its actions
//!
//! An expected line ending in `...` matches any line that starts with the
//! rest. In `text`, `\r` and `\n` stand for CR and LF. `#` starts a comment
//! line; `@plaintext off`, `@tls` and `@config a.b.c = TOML value` (e.g.
//! `@config auth.verify = "old"`) set up the session before it starts.

use std::{
    fmt::Write as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use super::tests::{CONFIG, Kept, caps_of, layout_of, lossy};
use super::*;
use crate::{config, throttle::Throttle};

/// Every transcript's client comes from this address, to this one.
const CLIENT: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(192, 0, 2, 7),
    50000,
));
const LOCAL: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(10, 0, 0, 1),
    993,
));

/// The capabilities a store reports by default: what Dovecot 2.3 says,
/// trimmed to what the session looks at.
const DEFAULT_CAPS: &str = "IMAP4rev1 LITERAL+ IDLE UNSELECT UIDPLUS MOVE SPECIAL-USE NAMESPACE";

/// `text` with `\r` and `\n` turned into CR and LF (IMAP flags keep their
/// backslash: `\Seen` is `\Seen`).
fn unescape(text: &str) -> Vec<u8> {
    text.replace("\\r", "\r").replace("\\n", "\n").into_bytes()
}

/// The session's actions as transcript lines (and its reports, when kept).
fn drain(s: &mut Session, reports: Option<&Kept>) -> Vec<String> {
    fn lines(v: &mut Vec<String>, prefix: &str, b: &[u8]) {
        for l in b.split_inclusive(|c| *c == b'\n') {
            v.push(format!("{prefix} {}", lossy(l)));
        }
    }
    let mut v = vec![];
    while let Some(a) = s.poll_action() {
        match a {
            Action::ToClient(b) => lines(&mut v, "S:", &b),
            Action::ToBackend(Store::New, b) => lines(&mut v, "N:", &b),
            Action::ToBackend(Store::Old, b) => lines(&mut v, "O:", &b),
            Action::StartTls => v.push("-> starttls".into()),
            Action::Compress { read_ahead } if read_ahead.is_empty() => {
                v.push("-> compress".into())
            }
            // What the client sent after COMPRESS, to be inflated first.
            Action::Compress { read_ahead } => v.push(format!(
                "-> compress, {} bytes read ahead",
                read_ahead.len()
            )),
            // The ID sent first: `tests::stores_are_told_where_the_client_is`.
            Action::Login { store, auth, .. } => v.push(login_line(store, &auth)),
            Action::CloseBackend(store) => v.push(format!("-> close {}", store.as_str())),
            Action::Close => v.push("-> close".into()),
        }
    }
    if let Some(kept) = reports {
        for r in kept.0.lock().unwrap().drain(..) {
            let line = match r {
                Report::Command { .. } => continue,
                Report::LimitHit(what) => format!("M: limit_hit {what}"),
                Report::Login { phase, result } => format!("M: login {} {result}", phase.as_str()),
                Report::CopyStarted => "M: copy started".into(),
                Report::Copy {
                    result,
                    messages,
                    bytes,
                } => format!("M: copy {result} {messages} messages {bytes} bytes"),
                Report::BackendError(store, kind) => {
                    format!("M: backend_error {} {kind}", store.as_str())
                }
                Report::StoreLogin(store, result) => {
                    format!("M: store_login {} {result}", store.as_str())
                }
                Report::Throttled(kind) => format!("M: throttled {kind}"),
                // Counted per event; `tests::sessions_are_counted_under_their_phase`.
                Report::Phase { .. } => continue,
                Report::User(user) => format!("M: user {user}"),
                Report::SessionEnd(why) => format!("M: session_end {}", why.as_str()),
                Report::PhaseDisconnect => "M: phase_disconnect".into(),
            };
            v.push(line);
        }
    }
    v
}

/// `-> login new alice` (LOGIN), `-> login new alice@new.test by ferry`
/// (a master user's SASL PLAIN), `… with a XOAUTH2 token` (from the token
/// command), `… with the client's OAUTHBEARER` (the client's own message).
fn login_line(store: Store, auth: &crate::identity::StoreAuth) -> String {
    use crate::identity::StoreAuth;
    let name = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let how = match auth {
        StoreAuth::Login { user, .. } => name(user),
        StoreAuth::Plain { user, master, .. } => format!("{} by {}", name(user), name(master)),
        StoreAuth::Token {
            user, mechanism, ..
        } => format!("{} with a {} token", name(user), mechanism.as_str()),
        StoreAuth::Client {
            user, mechanism, ..
        } => format!("{} with the client's {}", name(user), mechanism.as_str()),
        StoreAuth::Unusable => "without credentials".into(),
    };
    format!("-> login {} {how}", store.as_str())
}

/// The test configuration with `@config a.b.c = VALUE` settings applied;
/// `{secret_file}` in a value names a file whose first line is
/// `master-secret`.
fn config_text(overrides: &[String]) -> String {
    let mut root: toml::Table = CONFIG.parse().unwrap();
    for setting in overrides {
        let secret = std::env::temp_dir().join("ferry-transcript-master.secret");
        std::fs::write(&secret, "master-secret\n").unwrap();
        let setting = setting.replace("{secret_file}", &secret.display().to_string());
        let (path, value) = setting.split_once(" = ").expect("@config a.b = value");
        let value: toml::Table = format!("v = {value}").parse().expect("a TOML value");
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().unwrap();
        let mut table = &mut root;
        for key in keys {
            table = table
                .entry(key)
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .expect("a table");
        }
        table.insert(last.into(), value["v"].clone());
    }
    toml::to_string(&root).unwrap()
}

/// `+30s`, `+500ms`, `+2m`.
fn duration(text: &str) -> Option<Duration> {
    let text = text.strip_prefix('+')?;
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(60 * n)),
        _ => None,
    }
}

fn login_result(store: Store, rest: &str) -> Result<BackendInfo, LoginFailure> {
    let mut words = rest.split_whitespace();
    match words.next() {
        Some("ok") => {
            let listed: Vec<&str> = words.collect();
            let caps = if listed.is_empty() {
                DEFAULT_CAPS.to_string()
            } else {
                listed.join(" ")
            };
            Ok(BackendInfo {
                capabilities: caps_of(&format!("* CAPABILITY {caps}\r\n")),
                layout: layout_of(store),
            })
        }
        Some("rejected") => Err(LoginFailure::Rejected),
        Some("unavailable") => Err(LoginFailure::Unavailable {
            kind: "connect",
            detail: "connection refused (transcript)".into(),
        }),
        other => panic!("login result {other:?}"),
    }
}

fn matches(expected: &str, actual: &str) -> bool {
    let actual = actual.trim_end();
    match expected.strip_suffix("...") {
        Some(prefix) => actual.starts_with(prefix),
        None => expected == actual,
    }
}

/// Runs one transcript; the failures, one per line, name the file and line.
fn run(name: &str, text: &str) -> String {
    let mut errors = String::new();
    let mut tls = false;
    let mut plaintext = true;
    let mut keep_reports = false;
    let kept = Kept::default();
    let start = Instant::now();
    let mut now = start;
    let mut session: Option<Session> = None;
    let mut pending: Vec<String> = vec![];
    let mut expected: Vec<(usize, String)> = vec![];
    let check = |at: usize,
                 pending: &mut Vec<String>,
                 expected: &mut Vec<(usize, String)>,
                 errors: &mut String| {
        let n = pending.len().max(expected.len());
        for i in 0..n {
            match (expected.get(i), pending.get(i)) {
                (Some((_, e)), Some(a)) if matches(e, a) => {}
                (Some((line, e)), a) => {
                    let _ = writeln!(
                        errors,
                        "{name}:{line}: expected `{e}`, got {a:?}; all of it: {pending:#?}"
                    );
                    break;
                }
                (None, Some(a)) => {
                    let _ = writeln!(
                        errors,
                        "{name}:{at}: unexpected `{a}` before this line; all of it: {pending:#?}"
                    );
                    break;
                }
                (None, None) => {}
            }
        }
        pending.clear();
        expected.clear();
    };
    let mut overrides = Vec::new();
    let served = Arc::new(crate::copier::served::Served::default());
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line {
            "@tls" => {
                tls = true;
                continue;
            }
            "@plaintext off" => {
                plaintext = false;
                continue;
            }
            "@reports" => {
                keep_reports = true;
                continue;
            }
            _ => {}
        }
        if let Some(setting) = line.strip_prefix("@config ") {
            overrides.push(setting.to_string());
            continue;
        }
        // `@served USER NAME…`: the user's `Old/` folders served from NEW's
        // copies (`@served USER all NAME…`: every one of them).
        if let Some(setting) = line.strip_prefix("@served ") {
            let mut words = setting.split(' ');
            let user = words.next().expect("@served USER NAME…");
            let mut folders: Vec<&str> = words.collect();
            let complete = folders.first() == Some(&"all");
            if complete {
                folders.remove(0);
            }
            served.set(
                user,
                crate::copier::served::UserServed {
                    folders: folders.iter().map(|f| f.as_bytes().to_vec()).collect(),
                    complete,
                },
            );
            continue;
        }
        let s = session.get_or_insert_with(|| {
            let mut config = config::parse(&config_text(&overrides)).unwrap();
            config.auth.allow_plaintext = plaintext;
            Session::new(
                SessionConfig {
                    throttle: Arc::new(Throttle::new(&config.auth)),
                    config: Arc::new(config),
                    tls,
                    starttls: !tls,
                    subscriptions: Default::default(),
                    served: served.clone(),
                    id: 1,
                    client: CLIENT,
                    local: LOCAL,
                },
                start,
                Box::new(kept.clone()),
            )
        });
        let reports = keep_reports.then_some(&kept);
        let (head, rest) = line.split_at(line.find(' ').unwrap_or(line.len()));
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let is_output = matches!(head, "S:" | "O:" | "N:" | "->" | "M:");
        if is_output {
            expected.push((n, line.to_string()));
            continue;
        }
        // An input: what came before it must have been what was expected.
        pending.extend(drain(s, reports));
        check(n, &mut pending, &mut expected, &mut errors);
        let with_crlf = |mut b: Vec<u8>| {
            b.extend_from_slice(b"\r\n");
            b
        };
        let store = |h: &str| {
            if h.starts_with('O') {
                Store::Old
            } else {
                Store::New
            }
        };
        match head {
            "C:" => s.handle(
                now,
                Event::ClientBytes(with_crlf(unescape(rest))[..].into()),
            ),
            "C~" => s.handle(now, Event::ClientBytes(unescape(rest)[..].into())),
            "O<" | "N<" => s.handle(
                now,
                Event::StoreBytes(store(head), with_crlf(unescape(rest))[..].into()),
            ),
            "O~" | "N~" => s.handle(
                now,
                Event::StoreBytes(store(head), unescape(rest)[..].into()),
            ),
            "O!" | "N!" => match rest {
                "closed" => s.handle(now, Event::StoreClosed(store(head))),
                _ => {
                    let r = rest
                        .strip_prefix("login ")
                        .unwrap_or_else(|| panic!("{name}:{n}: {line}"));
                    let result = login_result(store(head), r);
                    s.handle(now, Event::LoggedIn(store(head), result));
                }
            },
            "C!" => match rest {
                "closed" => s.handle(now, Event::ClientClosed),
                "tls" => s.handle(now, Event::TlsEstablished),
                _ => panic!("{name}:{n}: unknown client event {rest}"),
            },
            "T:" => {
                let by =
                    duration(rest).unwrap_or_else(|| panic!("{name}:{n}: a time such as +30s"));
                let target = now + by;
                while let Some(at) = s.poll_timeout().filter(|at| *at <= target) {
                    now = now.max(at);
                    s.handle(now, Event::Timeout);
                    pending.extend(drain(s, reports));
                }
                now = target;
            }
            "!" => match rest.split_once(' ') {
                None if rest == "shutdown" => s.handle(now, Event::Shutdown),
                Some(("reload", moved)) => {
                    let (user, phase) = moved.split_once('=').expect("reload USER=PHASE");
                    let mut text: String = CONFIG
                        .lines()
                        .filter(|l| !l.starts_with(&format!("\"{user}\" =")))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    text.push_str(&format!("\"{user}\" = \"{phase}\"\n"));
                    let mut config = config::parse(&text).unwrap();
                    config.auth.allow_plaintext = plaintext;
                    s.handle(now, Event::Reload(Arc::new(config)));
                }
                _ => panic!("{name}:{n}: unknown event {rest}"),
            },
            _ => panic!("{name}:{n}: cannot read `{line}`"),
        }
        // Its outputs are compared with the lines after it at the next
        // input (or the end).
        pending.extend(drain(s, reports));
    }
    if let Some(s) = session.as_mut() {
        pending.extend(drain(s, keep_reports.then_some(&kept)));
    }
    check(
        text.lines().count(),
        &mut pending,
        &mut expected,
        &mut errors,
    );
    errors
}

#[test]
fn transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/session/transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no transcripts in {}", dir.display());
    let mut errors = String::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        errors.push_str(&run(&name, &std::fs::read_to_string(path).unwrap()));
    }
    assert!(
        errors.is_empty(),
        "{} transcripts, failures:\n{errors}",
        files.len()
    );
}
