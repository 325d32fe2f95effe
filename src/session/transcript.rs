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
//! - `! end TEXT`: the driver ends the session (shutdown, phase change)
//!
//! Expected outputs:
//! - `S: text`  to the client; `O: text`, `N: text`  to OLD / NEW
//! - `-> login old|new`, `-> close old|new`, `-> close`, `-> starttls`
//!
//! An expected line ending in `...` matches any line that starts with the
//! rest. In `text`, `\r`, `\n` and `\\` are escapes. `#` starts a comment
//! line; `@plaintext off` and `@tls` set up the session before it starts.

use std::{fmt::Write as _, path::Path, sync::Arc};

use super::tests::{CONFIG, caps_of, layout_of, lossy};
use super::*;
use crate::config;

/// The capabilities a store reports by default: what Dovecot 2.3 says,
/// trimmed to what the session looks at.
const DEFAULT_CAPS: &str = "IMAP4rev1 LITERAL+ IDLE UNSELECT UIDPLUS MOVE SPECIAL-USE NAMESPACE";

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('\\') => out.push(b'\\'),
            other => panic!("unknown escape \\{other:?}"),
        }
    }
    out
}

/// The session's actions as transcript lines.
fn drain(s: &mut Session) -> Vec<String> {
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
            Action::Login { store, .. } => v.push(format!("-> login {}", store.as_str())),
            Action::CloseBackend(store) => v.push(format!("-> close {}", store.as_str())),
            Action::Close => v.push("-> close".into()),
        }
    }
    v
}

fn store_of(c: char) -> Store {
    if c == 'O' { Store::Old } else { Store::New }
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
                capabilities: caps_of(&format!("* CAPABILITY {caps}\r\n")).into(),
                layout: layout_of(store),
            })
        }
        Some("rejected") => Err(LoginFailure::Rejected),
        Some("unavailable") => Err(LoginFailure::Unavailable),
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
            _ => {}
        }
        let s = session.get_or_insert_with(|| {
            let mut config = config::parse(CONFIG).unwrap();
            config.auth.allow_plaintext = plaintext;
            Session::new(SessionConfig {
                config: Arc::new(config),
                tls,
                starttls: !tls,
                subscriptions: Default::default(),
            })
        });
        let (head, rest) = line.split_at(line.find(' ').unwrap_or(line.len()));
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let is_output = matches!(head, "S:" | "O:" | "N:" | "->");
        if is_output {
            expected.push((n, line.to_string()));
            continue;
        }
        // An input: what came before it must have been what was expected.
        pending.extend(drain(s));
        check(n, &mut pending, &mut expected, &mut errors);
        let with_crlf = |mut b: Vec<u8>| {
            b.extend_from_slice(b"\r\n");
            b
        };
        match head {
            "C:" => s.client_input(&with_crlf(unescape(rest))),
            "C~" => s.client_input(&unescape(rest)),
            "O<" | "N<" => s.backend_input(
                store_of(head.chars().next().unwrap()),
                &with_crlf(unescape(rest)),
            ),
            "O~" | "N~" => s.backend_input(store_of(head.chars().next().unwrap()), &unescape(rest)),
            "O!" | "N!" => {
                let store = store_of(head.chars().next().unwrap());
                match rest {
                    "closed" => s.backend_closed(store),
                    _ => {
                        let r = rest
                            .strip_prefix("login ")
                            .unwrap_or_else(|| panic!("{name}:{n}: {line}"));
                        s.login_done(store, login_result(store, r));
                    }
                }
            }
            "C!" => match rest {
                "closed" => s.client_closed(),
                "tls" => s.tls_established(),
                _ => panic!("{name}:{n}: unknown client event {rest}"),
            },
            "!" => match rest.split_once(' ') {
                Some(("end", text)) => s.end(text),
                _ => panic!("{name}:{n}: unknown event {rest}"),
            },
            _ => panic!("{name}:{n}: cannot read `{line}`"),
        }
        // Its outputs are compared with the lines after it at the next
        // input (or the end).
        pending.extend(drain(s));
    }
    if let Some(s) = session.as_mut() {
        pending.extend(drain(s));
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
