//! Transcript tests of the sans-IO session: `C:` client bytes in, `S:` to the
//! client, `N:`/`O:` to the NEW/OLD store, no sockets.

use std::sync::Arc;

use imap_codec::{
    ResponseCodec,
    decode::Decoder,
    imap_types::response::{Capability, Data, Response},
};

use super::*;
use crate::config;

pub(super) const CONFIG: &str = r#"
[listen]
imap = "127.0.0.1:0"
[auth]
allow_plaintext = true
[backends.old]
address = "127.0.0.1:1"
tls = "none"
[backends.new]
address = "127.0.0.1:2"
tls = "none"
[migration.users]
"olga" = "old"
"nina" = "new"
"#;

fn session(allow_plaintext: bool) -> Session {
    session_reporting(allow_plaintext, Kept::default())
}

fn session_reporting(allow_plaintext: bool, kept: Kept) -> Session {
    let throttle = Arc::new(crate::throttle::Throttle::new(&Default::default()));
    session_sharing(allow_plaintext, kept, throttle)
}

/// A session whose failed-login tables are `throttle`'s, like every session
/// of one Ferry.
fn session_sharing(
    allow_plaintext: bool,
    kept: Kept,
    throttle: Arc<crate::throttle::Throttle>,
) -> Session {
    let mut config = config::parse(CONFIG).unwrap();
    config.auth.allow_plaintext = allow_plaintext;
    Session::new(
        SessionConfig {
            throttle,
            config: Arc::new(config),
            tls: false,
            starttls: true,
            subscriptions: Default::default(),
            served: Default::default(),
            id: 1,
            client: "192.0.2.7:50000".parse().unwrap(),
            local: "127.0.0.1:993".parse().unwrap(),
        },
        std::time::Instant::now(),
        Box::new(kept),
    )
}

/// Keeps the session's reports for a test to look at.
#[derive(Default, Clone)]
pub(super) struct Kept(pub(super) Arc<std::sync::Mutex<Vec<Report>>>);

impl Reporter for Kept {
    fn report(&mut self, report: Report) {
        self.0.lock().unwrap().push(report);
    }
}

pub(super) fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.strip_suffix("\r\n").unwrap_or(&s).to_string()
}

/// Drains the actions as transcript lines.
fn out(s: &mut Session) -> Vec<String> {
    let mut v = vec![];
    while let Some(a) = s.poll_action() {
        let line = match a {
            // A burst of lines may leave as one piece: shown line by line.
            Action::ToClient(b) => {
                let mut lines: Vec<_> = b
                    .split_inclusive(|c| *c == b'\n')
                    .map(|l| format!("S: {}", lossy(l)))
                    .collect();
                let last = lines.pop().unwrap_or_else(|| "S: ".into());
                v.append(&mut lines);
                last
            }
            Action::ToBackend(Store::New, b) => format!("N: {}", lossy(&b)),
            Action::ToBackend(Store::Old, b) => format!("O: {}", lossy(&b)),
            Action::StartTls => "STARTTLS".into(),
            Action::Compress { read_ahead } if read_ahead.is_empty() => "COMPRESS".into(),
            Action::Compress { read_ahead } => format!("COMPRESS then {read_ahead:?}"),
            Action::Login { store, .. } => format!("LOGIN {}", store.as_str()),
            Action::CloseBackend(store) => format!("CLOSE {}", store.as_str()),
            Action::Close => "CLOSE".into(),
        };
        v.push(line);
    }
    v
}

pub(super) fn caps_of(line: &str) -> Caps {
    Caps::from_decoded(&caps(line))
}

pub(super) fn layout_of(store: Store) -> Layout {
    match store {
        Store::New => Layout::slash(),
        Store::Old => Layout::legacy(),
    }
}

fn caps(line: &str) -> Vec<Capability<'static>> {
    let Ok((_, Response::Data(Data::Capability(c)))) = ResponseCodec::new().decode(line.as_bytes())
    else {
        panic!("caps")
    };
    c.into_iter().map(|c| c.into_static()).collect()
}

use imap_codec::imap_types::IntoStatic;

const CAPS: &str = "* CAPABILITY IMAP4rev1 LITERAL+ IDLE UNSELECT UIDPLUS MOVE SPECIAL-USE NAMESPACE NOTIFY COMPRESS=DEFLATE\r\n";

fn info(store: Store) -> BackendInfo {
    info_with(store, CAPS)
}

fn info_with(store: Store, capabilities: &str) -> BackendInfo {
    BackendInfo {
        capabilities: caps_of(capabilities),
        layout: match store {
            Store::New => Layout::slash(),
            Store::Old => Layout::legacy(),
        },
    }
}

/// A merged session, logged in as alice.
fn merged() -> Session {
    merged_with(CAPS)
}

/// A merged session whose NEW store has `new_caps`.
fn merged_with(new_caps: &str) -> Session {
    let mut s = session(true);
    out(&mut s);
    s.client_input(b"a1 LOGIN alice {6}\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: + Ready for literal data"]);
    s.client_input(b"p(w)*%\r\n"[..].into());
    assert_eq!(out(&mut s), ["LOGIN new"]);
    s.login_done(Store::New, Ok(info_with(Store::New, new_caps)));
    let o = out(&mut s);
    assert_eq!(o.len(), 1);
    assert!(
        o[0].starts_with("S: a1 OK [CAPABILITY IMAP4rev1 ID NAMESPACE CHILDREN LITERAL+ IDLE"),
        "{o:?}"
    );
    // NEW's ESEARCH is not shown; COMPRESS=DEFLATE is Ferry's own.
    assert!(
        !o[0].contains("NOTIFY") && o[0].ends_with("COMPRESS=DEFLATE] Logged in"),
        "{o:?}"
    );
    s
}

/// Logs OLD in after the session asked for it.
fn old_up(s: &mut Session) {
    s.login_done(Store::Old, Ok(info(Store::Old)));
}

#[test]
fn greeting_and_preauth() {
    let mut s = session(false);
    let o = out(&mut s);
    assert_eq!(
        o,
        ["S: * OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID STARTTLS LOGINDISABLED] Ferry ready."]
    );
    s.client_input(b"a1 LOGIN alice secret\r\na2 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\na3 SELECT INBOX\r\na4 ID NIL\r\n"[..].into());
    let o = out(&mut s);
    assert_eq!(
        o[0],
        "S: a1 NO [PRIVACYREQUIRED] Use STARTTLS or port 993 before logging in"
    );
    assert_eq!(
        o[1],
        "S: a2 NO [PRIVACYREQUIRED] Use STARTTLS or port 993 before logging in"
    );
    assert_eq!(o[2], "S: a3 BAD Log in first");
    assert!(o[3].starts_with("S: * ID (\"name\" \"Ferry\""));
}

#[test]
fn starttls_rejects_pipelined_plaintext() {
    let mut s = session(false);
    out(&mut s);
    s.client_input(b"a STARTTLS\r\nb LOGIN evil injected\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        [
            "S: a BAD Nothing may follow STARTTLS before the handshake",
            "S: * BYE Closing connection",
            "CLOSE"
        ]
    );
    let mut s = session(false);
    out(&mut s);
    s.client_input(b"a STARTTLS\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        ["S: a OK Begin TLS negotiation now", "STARTTLS"]
    );
    assert!(!s.wants_client_input() || s.client.buffered() == 0);
}

#[test]
fn authenticate_plain_with_and_without_ir() {
    let mut s = session(true);
    out(&mut s);
    s.client_input(b"a AUTHENTICATE PLAIN\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: + "]);
    s.client_input(b"AGFsaWNlAHNlY3JldA==\r\n"[..].into());
    assert_eq!(out(&mut s), ["LOGIN new"]);
    s.login_done(Store::New, Err(LoginFailure::Rejected));
    assert_eq!(
        out(&mut s),
        ["S: a NO [AUTHENTICATIONFAILED] Authentication failed."]
    );
    s.client_input(b"b AUTHENTICATE PLAIN *\r\n"[..].into());
    let o = out(&mut s);
    assert!(o[0].starts_with("S: b BAD"), "{o:?}");
    s.client_input(b"c AUTHENTICATE PLAIN\r\n*\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: + ", "S: c BAD AUTHENTICATE cancelled"]);
}

/// The client writes as queued, not split into lines.
fn writes(s: &mut Session) -> Vec<String> {
    std::iter::from_fn(|| s.poll_action())
        .map(|a| match a {
            Action::ToClient(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("not a client write: {other:?}"),
        })
        .collect()
}

#[test]
fn a_burst_of_untagged_lines_is_one_write() {
    let mut s = merged();
    s.client_input(b"a NOOP\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: a NOOP"]);
    s.backend_input(
        Store::New,
        b"* 1 EXISTS\r\n* 1 FETCH (FLAGS ())\r\n* 2 FETCH (BODY[] {2}\r\nhi)\r\n* 3 FETCH (FLAGS ())\r\n* 4 FETCH (FLAGS ())\r\n* BYE going\r\n* 5 EXPUNGE\r\na OK done\r\n"[..].into(),
    );
    assert_eq!(
        writes(&mut s),
        [
            "* 1 EXISTS\r\n* 1 FETCH (FLAGS ())\r\n",
            "* 2 FETCH (BODY[] {2}\r\n",
            "hi",
            ")\r\n",
            "* 3 FETCH (FLAGS ())\r\n* 4 FETCH (FLAGS ())\r\n",
            // The store's BYE is Ferry's to handle, never the client's.
            "* 5 EXPUNGE\r\n",
            "a OK done\r\n",
        ]
    );

    // Phase old: a CAPABILITY line in the burst is still filtered.
    let mut s = session(true);
    out(&mut s);
    s.client_input(b"a LOGIN olga secret\r\n"[..].into());
    out(&mut s);
    s.login_done(Store::Old, Ok(info(Store::Old)));
    out(&mut s);
    s.client_input(b"b NOOP\r\n"[..].into());
    assert_eq!(out(&mut s), ["O: b NOOP"]);
    s.backend_input(
        Store::Old,
        b"* 2 EXISTS\r\n* 1 RECENT\r\n* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE\r\n* 3 EXISTS\r\nb OK done\r\n"[..].into(),
    );
    assert_eq!(
        writes(&mut s),
        [
            "* 2 EXISTS\r\n* 1 RECENT\r\n",
            "* CAPABILITY IMAP4REV1 COMPRESS=DEFLATE\r\n",
            "* 3 EXISTS\r\n",
            "b OK done\r\n"
        ]
    );
}

#[test]
fn old_phase_is_a_pass_through() {
    let mut s = session(true);
    out(&mut s);
    s.client_input(b"a LOGIN olga secret\r\n"[..].into());
    assert_eq!(out(&mut s), ["LOGIN old"]);
    s.login_done(Store::Old, Ok(info(Store::Old)));
    let o = out(&mut s);
    // OLD's COMPRESS=DEFLATE is not passed on: the one shown is Ferry's.
    assert!(
        o[0].contains("NOTIFY") && o[0].matches("COMPRESS").count() == 1,
        "{o:?}"
    );
    s.client_input(b"b SELECT INBOX.Sent\r\nc STARTTLS\r\nd X-ANYTHING\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        [
            "O: b SELECT INBOX.Sent",
            "S: c BAD Command not available in this session",
            "O: d X-ANYTHING"
        ]
    );
    s.backend_input(
        Store::Old,
        b"* 2 EXISTS\r\nb OK done\r\n* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        [
            "S: * 2 EXISTS",
            "S: b OK done",
            "S: * CAPABILITY IMAP4REV1 IDLE COMPRESS=DEFLATE"
        ]
    );
}

#[test]
fn merged_list_fans_out_and_logs_in_to_old_lazily() {
    let mut s = merged();
    s.client_input(b"b LIST \"\" \"%\"\r\n"[..].into());
    // `%` cannot reach below Old/: OLD is not needed.
    assert_eq!(out(&mut s), ["N: ferry.1 LIST \"\" %"]);
    s.backend_input(Store::New, b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n* LIST (\\HasChildren) \"/\" Old\r\nferry.1 OK done\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        [
            "S: * LIST (\\HasNoChildren) \"/\" INBOX",
            "S: * LIST (\\HasNoChildren \\Sent) \"/\" Sent",
            "S: * LIST (\\Noselect \\HasChildren) \"/\" Old",
            "S: b OK LIST completed"
        ]
    );
    s.client_input(b"c LIST \"\" \"Old/*\"\r\n"[..].into());
    assert_eq!(out(&mut s), ["LOGIN old"]);
    old_up(&mut s);
    assert_eq!(out(&mut s), ["O: ferry.2 LIST \"\" *"]);
    s.backend_input(
        Store::Old,
        b"* LIST (\\HasChildren) \".\" INBOX\r\n* LIST (\\HasNoChildren \\Sent) \".\" INBOX.Sent\r\n* LIST (\\HasNoChildren) \".\" {27}\r\nINBOX.&U9dP4Xux-.&eBR6dluk-\r\nferry.2 OK done\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        [
            "S: * LIST (\\Noselect \\HasChildren) \"/\" Old/&U9dP4Xux-",
            "S: * LIST (\\HasNoChildren) \"/\" Old/&U9dP4Xux-/&eBR6dluk-",
            "S: * LIST (\\HasNoChildren) \"/\" Old/INBOX",
            "S: * LIST (\\HasNoChildren) \"/\" Old/Sent",
            "S: c OK LIST completed"
        ]
    );
}

fn select_old_inbox(s: &mut Session) {
    s.client_input(b"d SELECT Old/INBOX\r\n"[..].into());
    assert_eq!(out(s), ["LOGIN old"]);
    old_up(s);
    assert_eq!(out(s), ["O: d EXAMINE INBOX"]);
    s.backend_input(
        Store::Old,
        b"* 3 EXISTS\r\n* OK [PERMANENTFLAGS ()] x\r\nd OK [READ-ONLY] Examine completed\r\n"[..]
            .into(),
    );
    assert_eq!(
        out(s),
        [
            "S: * 3 EXISTS",
            "S: * OK [PERMANENTFLAGS ()] x",
            "S: d OK [READ-ONLY] Examine completed"
        ]
    );
}

#[test]
fn old_folders_are_read_only() {
    let mut s = merged();
    select_old_inbox(&mut s);
    s.client_input(b"e UID STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\n"[..].into());
    assert_eq!(out(&mut s), ["O: ferry.1 UID FETCH 1:2 FLAGS"]);
    s.backend_input(
        Store::Old,
        b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\nferry.1 OK Fetch completed\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        [
            "S: * 1 FETCH (UID 1 FLAGS (\\Seen))",
            "S: e OK Flags unchanged: Old/ folders are read-only"
        ]
    );
    s.client_input(b"f EXPUNGE\r\ng UID EXPUNGE 1\r\nh COPY 1 Old/Sent\r\ni MOVE 1 INBOX\r\nk APPEND Old/Sent {3}\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        [
            "S: f OK Nothing expunged: Old/ folders are read-only",
            "S: g OK Nothing expunged: Old/ folders are read-only",
            "S: h NO [NOPERM] Old/ folders are read-only",
            "S: i NO [READ-ONLY] Old/ folders are read-only: copy the messages instead",
            "S: k NO [NOPERM] Old/ folders are read-only",
        ]
    );
    s.client_input(b"l CREATE Old/x\r\nm DELETE Old/Sent\r\nn RENAME Work Old/Work\r\no SUBSCRIBE Old/Sent\r\n"[..].into());
    let o = out(&mut s);
    assert_eq!(
        o[..3],
        [
            "S: l NO [NOPERM] Old/ folders are read-only",
            "S: m NO [NOPERM] Old/ folders are read-only",
            "S: n NO [NOPERM] Old/ folders are read-only"
        ]
    );
    // Kept by Ferry: neither store hears of it.
    assert_eq!(o[3], "S: o OK SUBSCRIBE completed");
    assert_eq!(o.len(), 4);
}

#[test]
fn switching_stores_unselects_without_stray_responses() {
    let mut s = merged();
    select_old_inbox(&mut s);
    s.client_input(b"e SELECT INBOX\r\n"[..].into());
    assert_eq!(out(&mut s), ["O: ferry.1 UNSELECT"]);
    // OLD's news about the mailbox being left never reaches the client.
    s.backend_input(
        Store::Old,
        b"* 4 EXISTS\r\nferry.1 OK Unselect completed\r\n"[..].into(),
    );
    assert_eq!(out(&mut s), ["N: e SELECT INBOX"]);
    s.backend_input(
        Store::New,
        b"* 2 EXISTS\r\ne OK [READ-WRITE] Select completed\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        ["S: * 2 EXISTS", "S: e OK [READ-WRITE] Select completed"]
    );
    s.backend_input(Store::Old, b"* 5 EXISTS\r\n"[..].into());
    assert_eq!(out(&mut s), Vec::<String>::new());
    s.client_input(b"f UID FETCH 1:* (FLAGS)\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: f UID FETCH 1:* (FLAGS)"]);
}

#[test]
fn commands_on_a_selected_new_mailbox_go_as_sent() {
    let mut s = merged();
    // Nothing selected: NOOP keeps NEW's connection alive.
    s.client_input(b"a NOOP\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: a NOOP"]);
    s.backend_input(Store::New, b"a OK NOOP completed\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: a OK NOOP completed"]);
    s.client_input(b"b FETCH 1 FLAGS\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: b BAD No mailbox selected"]);
    s.client_input(b"c SELECT INBOX\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: c SELECT INBOX"]);
    s.backend_input(
        Store::New,
        b"* 2 EXISTS\r\nc OK [READ-WRITE] Select completed\r\n"[..].into(),
    );
    out(&mut s);
    // Known by name, not decoded: NEW judges the arguments, even those of
    // extensions Ferry does not announce (imap-codec cannot parse this one).
    s.client_input(b"d uid fetch 1:* (FLAGS) (CHANGEDSINCE 7)\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: d uid fetch 1:* (FLAGS) (CHANGEDSINCE 7)"]);
    s.backend_input(
        Store::New,
        b"* 1 FETCH (UID 4 FLAGS () MODSEQ (9))\r\nd OK Fetch completed\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        [
            "S: * 1 FETCH (UID 4 FLAGS () MODSEQ (9))",
            "S: d OK Fetch completed"
        ]
    );
    s.client_input(b"e STORE 2 +FLAGS (\\Seen)\r\nf SEARCH UNSEEN\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: e STORE 2 +FLAGS (\\Seen)"]);
    s.backend_input(Store::New, b"e OK Store completed\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        ["S: e OK Store completed", "N: f SEARCH UNSEEN"]
    );
}

#[test]
fn idle_waits_for_the_store_and_takes_pipelined_done() {
    let mut s = merged();
    s.client_input(b"b IDLE\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: b IDLE"]);
    assert!(!s.wants_client_input());
    s.backend_input(Store::New, b"+ idling\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: + idling"]);
    s.client_input(b"DONE\r\nc NOOP\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: DONE"]);
    s.backend_input(
        Store::New,
        b"* 3 EXISTS\r\nb OK Idle completed\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        ["S: * 3 EXISTS", "S: b OK Idle completed", "N: c NOOP"]
    );
}

#[test]
fn append_streams_its_literal() {
    let mut s = merged();
    s.client_input(b"b APPEND Work (\\Seen) {11}\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: b APPEND Work (\\Seen) {11}"]);
    s.backend_input(Store::New, b"+ OK\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: + OK"]);
    s.client_input(b"hello "[..].into());
    assert_eq!(out(&mut s), ["N: hello "]);
    s.client_input(b"world\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: world", "N: "]);
    s.backend_input(
        Store::New,
        b"b OK [APPENDUID 1 7] Append completed.\r\n"[..].into(),
    );
    assert_eq!(out(&mut s), ["S: b OK [APPENDUID 1 7] Append completed."]);
    // LITERAL+: no continuation round trip.
    s.client_input(b"c APPEND INBOX {2+}\r\nhi\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: c APPEND INBOX {2+}", "N: hi", "N: "]);
}

#[test]
fn unknown_and_unadvertised_commands_get_bad_and_never_reach_old() {
    let mut s = merged();
    select_old_inbox(&mut s);
    s.client_input(b"x1 GETACL INBOX\r\nx2 UID SEARCH RETURN (ALL) ALL\r\nx3 ENABLE QRESYNC\r\nx4 XLIST \"\" *\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        [
            "S: x1 BAD Unknown command or invalid syntax",
            // OLD lacks ESEARCH: the extension NEW offers is not sent there.
            "S: x2 NO [CANNOT] ESEARCH is not available in Old/ folders",
            // Neither store offers QRESYNC: nothing is enabled.
            "S: * ENABLED",
            "S: x3 OK ENABLE completed",
            "S: x4 BAD Unknown command or invalid syntax",
        ]
    );
}

/// `ferry_sessions_active{phase}` follows each session: preauth from its
/// start, its phase once logged in, nothing once over — also when the driver
/// drops a session that never closed (its task was cancelled).
#[test]
fn sessions_are_counted_under_their_phase() {
    let phases = |kept: &Kept| -> Vec<(Option<&str>, Option<&str>)> {
        let mut r = kept.0.lock().unwrap();
        let v = r
            .iter()
            .filter_map(|r| match r {
                Report::Phase { from, to } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        r.clear();
        v
    };
    let now = std::time::Instant::now();
    let kept = Kept::default();
    let mut s = session_reporting(true, kept.clone());
    assert_eq!(phases(&kept), [(None, Some("preauth"))]);
    s.handle(now, Event::ClientBytes(b"a1 LOGIN nina pw\r\n"[..].into()));
    assert_eq!(phases(&kept), []);
    s.handle(now, Event::LoggedIn(Store::New, Ok(info(Store::New))));
    assert_eq!(phases(&kept), [(Some("preauth"), Some("new"))]);
    s.handle(now, Event::ClientBytes(b"a2 LOGOUT\r\n"[..].into()));
    s.handle(
        now,
        Event::StoreBytes(Store::New, b"* BYE\r\na2 OK bye\r\n"[..].into()),
    );
    assert_eq!(phases(&kept), [(Some("new"), None)]);
    drop(s);
    assert_eq!(phases(&kept), []);

    let kept = Kept::default();
    let s = session_reporting(true, kept.clone());
    drop(s);
    assert_eq!(
        phases(&kept),
        [(None, Some("preauth")), (Some("preauth"), None)]
    );
}

/// Before logging in, a store that offers ID is told where the client is
/// (for its logs and lockouts), then what the client said of itself — but
/// never an `x-` field from the client, which the store would trust.
#[test]
fn stores_are_told_where_the_client_is() {
    let mut s = session(true);
    out(&mut s);
    s.client_input(
        b"a0 ID (\"name\" \"Thunderbird\" \"version\" \"128.0\" \"x-originating-ip\" \"6.6.6.6\")\r\n\
          a1 LOGIN alice pw\r\n"[..].into(),
    );
    let id = std::iter::from_fn(|| s.poll_action())
        .find_map(|a| match a {
            Action::Login { id, .. } => id,
            _ => None,
        })
        .expect("a login with ID fields");
    let shown: Vec<String> = id
        .iter()
        .map(|(k, v)| format!("{}={}", lossy(k), lossy(v.as_deref().unwrap_or(b"NIL"))))
        .collect();
    assert_eq!(
        shown,
        [
            "x-originating-ip=192.0.2.7",
            "x-originating-port=50000",
            "x-connected-ip=127.0.0.1",
            "x-connected-port=993",
            "x-session-ext-id=ferry-1",
            "name=Thunderbird",
            "version=128.0",
        ]
    );
}

/// An ID sent after login (Thunderbird, iOS) reaches a store logged in to
/// later: OLD, when `Old/` is first opened.
#[test]
fn a_client_id_after_login_reaches_the_old_store() {
    let mut s = merged();
    s.client_input(b"x ID (\"name\" \"iOS Mail\")\r\n"[..].into());
    out(&mut s);
    s.client_input(b"b EXAMINE Old/INBOX\r\n"[..].into());
    let id = std::iter::from_fn(|| s.poll_action())
        .find_map(|a| match a {
            Action::Login {
                store: Store::Old,
                id,
                ..
            } => id,
            _ => None,
        })
        .expect("OLD's login, with ID fields");
    assert!(
        id.iter()
            .any(|(k, v)| k == b"name" && v.as_deref() == Some(&b"iOS Mail"[..])),
        "{id:?}"
    );
}

/// NEW took the password, OLD refused it (the user changed it on NEW
/// only): the next session does not ask OLD again with the same password,
/// so OLD's lockout never counts a phone that reconnects all day.
#[test]
fn a_refused_lazy_old_login_is_not_repeated() {
    let throttle = Arc::new(crate::throttle::Throttle::new(&Default::default()));
    let logged_in = |throttle: &Arc<crate::throttle::Throttle>| {
        let mut s = session_sharing(true, Kept::default(), throttle.clone());
        out(&mut s);
        s.client_input(b"a1 LOGIN alice new-password\r\n"[..].into());
        assert_eq!(out(&mut s), ["LOGIN new"]);
        s.login_done(Store::New, Ok(info(Store::New)));
        out(&mut s);
        s
    };
    let mut first = logged_in(&throttle);
    first.client_input(b"b EXAMINE Old/INBOX\r\n"[..].into());
    assert_eq!(out(&mut first), ["LOGIN old"]);
    first.login_done(Store::Old, Err(LoginFailure::Rejected));
    let o = out(&mut first);
    assert!(o[0].starts_with("S: b NO [UNAVAILABLE]"), "{o:?}");
    let mut second = logged_in(&throttle);
    second.client_input(b"b EXAMINE Old/INBOX\r\n"[..].into());
    let o = out(&mut second);
    assert_eq!(o.len(), 1, "OLD was asked again: {o:?}");
    assert!(o[0].starts_with("S: b NO [UNAVAILABLE]"), "{o:?}");
}

#[test]
fn credentials_never_print() {
    let c = Credentials {
        user: b"alice".to_vec(),
        password: b"p(w)*%".to_vec(),
        bearer: None,
    };
    assert!(!format!("{c:?}").contains("p(w)"));
}

const MULTI: &str = "* CAPABILITY IMAP4rev1 LITERAL+ IDLE UNSELECT UIDPLUS MULTIAPPEND\r\n";

/// Starts `c UID COPY 1:* Work` from Old/INBOX and answers the metadata stage:
/// two messages, UIDs 7 and 9.
fn copy_two(s: &mut Session) {
    select_old_inbox(s);
    s.client_input(b"c UID COPY 1:* Work\r\n"[..].into());
    assert_eq!(
        out(s),
        [
            "O: ferry.1 UID FETCH 1:* (UID FLAGS INTERNALDATE)",
            "N: ferry.2 STATUS Work (UIDVALIDITY)"
        ]
    );
    s.backend_input(
        Store::Old,
        b"* 1 FETCH (UID 7 FLAGS (\\Seen \\Recent $Label) INTERNALDATE \"01-Feb-2020 10:00:00 +0100\")\r\n\
          * 2 FETCH (UID 9 FLAGS () INTERNALDATE \"02-Feb-2020 11:00:00 +0000\")\r\n\
          * 3 FETCH (FLAGS (\\Seen))\r\nferry.1 OK Fetch completed.\r\n"[..].into(),
    );
    // Somebody else's flag change on OLD still reaches the client.
    assert_eq!(out(s), ["S: * 3 FETCH (FLAGS (\\Seen))"]);
    s.backend_input(
        Store::New,
        b"* STATUS Work (UIDVALIDITY 55)\r\nferry.2 OK Status completed.\r\n"[..].into(),
    );
    assert_eq!(out(s), ["O: ferry.3 UID FETCH 7,9 BODY.PEEK[]"]);
}

#[test]
fn copy_from_old_is_one_multiappend_streamed_body_by_body() {
    let mut s = merged_with(MULTI);
    copy_two(&mut s);
    s.backend_input(Store::Old, b"* 1 FETCH (UID 7 BODY[] {5}\r\nhel"[..].into());
    assert_eq!(
        out(&mut s),
        [
            "N: ferry.4 APPEND Work (\\Seen $Label) \"01-Feb-2020 10:00:00 +0100\" {5+}",
            "N: hel"
        ]
    );
    s.backend_input(
        Store::Old,
        b"lo)\r\n* 2 FETCH (UID 9 BODY[] {3}\r\nabc)\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        ["N: lo", "N:  \"02-Feb-2020 11:00:00 +0000\" {3+}", "N: abc"]
    );
    s.backend_input(Store::Old, b"ferry.3 OK Fetch completed.\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: "]);
    s.backend_input(
        Store::New,
        b"ferry.4 OK [APPENDUID 55 20:21] Append completed.\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        ["S: c OK [COPYUID 55 7,9 20:21] UID COPY completed"]
    );
    assert!(s.is_idle());
}

#[test]
fn copy_failing_part_way_makes_the_multiappend_fail() {
    let mut s = merged_with(MULTI);
    copy_two(&mut s);
    s.backend_input(
        Store::Old,
        b"* 1 FETCH (UID 7 BODY[] {5}\r\nhello)\r\n"[..].into(),
    );
    out(&mut s);
    // OLD refuses the second message: the open APPEND is made invalid.
    s.backend_input(
        Store::Old,
        b"ferry.3 NO Some messages were expunged\r\n"[..].into(),
    );
    assert_eq!(out(&mut s), ["N:  FERRY-ABORT"]);
    s.backend_input(Store::New, b"ferry.4 BAD Invalid arguments.\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        ["S: c NO [CANNOT] Nothing was copied: the old store said: Some messages were expunged"]
    );
    assert!(s.is_idle());
}

#[test]
fn old_lost_in_the_middle_of_a_body_fills_the_literal_and_aborts() {
    let mut s = merged_with(MULTI);
    copy_two(&mut s);
    s.backend_input(
        Store::Old,
        b"* 1 FETCH (UID 7 BODY[] {10}\r\nhel"[..].into(),
    );
    out(&mut s);
    s.backend_closed(Store::Old);
    let o = out(&mut s);
    assert_eq!(
        o,
        ["CLOSE old", "N:        ", "N:  FERRY-ABORT"],
        "the literal is filled up, then made invalid"
    );
    s.backend_input(Store::New, b"ferry.4 BAD Invalid arguments.\r\n"[..].into());
    let o = out(&mut s);
    assert!(
        o[0].starts_with("S: c NO [UNAVAILABLE] Nothing was copied"),
        "{o:?}"
    );
    assert!(o[1].starts_with("S: * BYE"), "{o:?}");
    assert_eq!(o.last().map(String::as_str), Some("CLOSE"));
}

#[test]
fn copy_without_multiappend_rolls_back_by_appenduid() {
    let mut s = merged();
    copy_two(&mut s);
    s.backend_input(
        Store::Old,
        b"* 1 FETCH (UID 7 BODY[] {5}\r\nhello)\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        [
            "N: ferry.4 APPEND Work (\\Seen $Label) \"01-Feb-2020 10:00:00 +0100\" {5+}",
            "N: hello",
            "N: "
        ]
    );
    s.backend_input(
        Store::New,
        b"ferry.4 OK [APPENDUID 55 20] Append completed.\r\n"[..].into(),
    );
    s.backend_input(
        Store::Old,
        b"* 2 FETCH (UID 9 BODY[] {3}\r\nabc)\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        [
            "N: ferry.5 APPEND Work \"02-Feb-2020 11:00:00 +0000\" {3+}",
            "N: abc",
            "N: "
        ]
    );
    s.backend_input(
        Store::New,
        b"ferry.5 NO [OVERQUOTA] Quota exceeded\r\n"[..].into(),
    );
    s.backend_input(Store::Old, b"ferry.3 OK Fetch completed.\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        [
            "N: ferry.6 SELECT Work",
            "N: ferry.7 UID STORE 20 +FLAGS.SILENT (\\Deleted)",
            "N: ferry.8 UID EXPUNGE 20",
            "N: ferry.9 UNSELECT"
        ]
    );
    s.backend_input(
        Store::New,
        b"* 3 EXISTS\r\nferry.6 OK [READ-WRITE] Select completed.\r\nferry.7 OK Store completed.\r\n\
          * 3 EXPUNGE\r\nferry.8 OK Expunge completed.\r\nferry.9 OK Unselect completed.\r\n"[..].into(),
    );
    let o = out(&mut s);
    assert_eq!(o.len(), 1, "NEW's own chatter stays inside Ferry: {o:?}");
    assert!(
        o[0].starts_with("S: c NO [CANNOT] Nothing was copied: the new store said: Quota exceeded"),
        "{o:?}"
    );
}

#[test]
fn copy_to_a_missing_folder_is_trycreate() {
    let mut s = merged_with(MULTI);
    select_old_inbox(&mut s);
    s.client_input(b"c COPY 1 Nope\r\n"[..].into());
    out(&mut s);
    s.backend_input(
        Store::Old,
        b"* 1 FETCH (UID 7 FLAGS () INTERNALDATE \"01-Feb-2020 10:00:00 +0100\")\r\nferry.1 OK done\r\n"[..].into(),
    );
    s.backend_input(
        Store::New,
        b"ferry.2 NO [NONEXISTENT] Mailbox doesn't exist: Nope\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        ["S: c NO [TRYCREATE] Destination folder does not exist"]
    );
}

#[test]
fn client_gone_during_a_copy_without_multiappend_still_rolls_back() {
    let mut s = merged();
    copy_two(&mut s);
    s.backend_input(
        Store::Old,
        b"* 1 FETCH (UID 7 BODY[] {5}\r\nhello)\r\n"[..].into(),
    );
    out(&mut s);
    s.backend_input(
        Store::New,
        b"ferry.4 OK [APPENDUID 55 20] Append completed.\r\n"[..].into(),
    );
    s.client_closed();
    // The session lives on until OLD's FETCH is over and the append is undone.
    assert!(out(&mut s).is_empty());
    s.backend_input(
        Store::Old,
        b"* 2 FETCH (UID 9 BODY[] {3}\r\nabc)\r\nferry.3 OK done\r\n"[..].into(),
    );
    assert_eq!(
        out(&mut s),
        [
            "N: ferry.5 SELECT Work",
            "N: ferry.6 UID STORE 20 +FLAGS.SILENT (\\Deleted)",
            "N: ferry.7 UID EXPUNGE 20",
            "N: ferry.8 UNSELECT"
        ]
    );
    s.backend_input(
        Store::New,
        b"ferry.5 OK s\r\nferry.6 OK s\r\nferry.7 OK e\r\nferry.8 OK u\r\n"[..].into(),
    );
    let o = out(&mut s);
    assert!(o.contains(&"CLOSE".to_string()), "{o:?}");
    assert!(o.iter().any(|l| l.ends_with("LOGOUT")), "{o:?}");
}

#[test]
fn a_long_idle_is_renewed_toward_the_store_unseen() {
    let mut s = merged();
    s.client_input(b"i1 IDLE\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: i1 IDLE"]);
    s.backend_input(Store::New, b"+ idling\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: + idling"]);
    assert_eq!(s.idle_store(), Some(Store::New));
    s.refresh_idle();
    assert_eq!(out(&mut s), ["N: DONE"]);
    // The client's DONE waits while Ferry renews.
    s.client_input(b"DONE\r\n"[..].into());
    assert!(out(&mut s).is_empty());
    s.backend_input(Store::New, b"i1 OK Idle completed.\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: i1 IDLE"]);
    s.backend_input(Store::New, b"+ idling\r\n"[..].into());
    // The renewed IDLE runs; now the client's DONE goes through.
    assert_eq!(out(&mut s), ["N: DONE"]);
    s.backend_input(Store::New, b"i1 OK Idle completed.\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: i1 OK Idle completed."]);
    assert!(s.is_idle());
}

#[test]
fn old_gone_before_the_bodies_are_asked_for_fails_the_copy() {
    // Found by the store_session fuzz target: OLD closing between the
    // metadata FETCH and NEW's STATUS answer made Ferry ask a gone OLD.
    let mut s = merged_with(MULTI);
    select_old_inbox(&mut s);
    s.client_input(b"c UID COPY 1:* Work\r\n"[..].into());
    out(&mut s);
    s.backend_input(
        Store::Old,
        b"* 1 FETCH (UID 7 FLAGS () INTERNALDATE \"01-Feb-2020 10:00:00 +0100\")\r\nferry.1 OK done\r\n"[..].into(),
    );
    s.backend_closed(Store::Old);
    out(&mut s);
    s.backend_input(Store::New, b"ferry.2 OK Status completed.\r\n"[..].into());
    let o = out(&mut s);
    assert!(!o.iter().any(|l| l.starts_with("O: ")), "{o:?}");
    assert!(o[0].starts_with("S: c NO [UNAVAILABLE]"), "{o:?}");
    assert!(o.iter().any(|l| l.starts_with("S: * BYE")), "{o:?}");
}

#[test]
fn compress_is_refused_before_login() {
    let mut s = session(true);
    out(&mut s);
    s.client_input(b"a COMPRESS DEFLATE\r\nb NOOP\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        ["S: a BAD Log in first", "S: b OK NOOP completed"]
    );
}

#[test]
fn merged_compress_is_ferrys_and_only_once() {
    let kept = Kept::default();
    let mut s = session_reporting(true, kept.clone());
    out(&mut s);
    s.client_input(b"a1 LOGIN alice secret\r\n"[..].into());
    assert_eq!(out(&mut s), ["LOGIN new"]);
    s.login_done(Store::New, Ok(info(Store::New)));
    out(&mut s);
    s.client_input(b"b COMPRESS DEFLATE\r\n"[..].into());
    // The OK goes out as it is; then the driver compresses both ways.
    assert_eq!(out(&mut s), ["S: b OK DEFLATE active", "COMPRESS"]);
    s.client_input(b"c COMPRESS DEFLATE\r\nd COMPRESS GZIP\r\ne NOOP\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        [
            "S: c NO [COMPRESSIONACTIVE] DEFLATE is active already",
            "S: d BAD Unknown command or invalid syntax",
            "N: e NOOP"
        ]
    );
    let reports = kept.0.lock().unwrap();
    let compress: Vec<_> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Command {
                name: "COMPRESS",
                store,
                result,
                ..
            } => Some((*store, *result)),
            _ => None,
        })
        .collect();
    assert_eq!(compress, [("ferry", "ok"), ("ferry", "no")]);
}

/// RFC 4978: the client compresses from the first byte after its COMPRESS
/// command. What it sent before it saw the OK is in the framer then: it is
/// handed to the driver to be inflated, never read as commands.
#[test]
fn bytes_after_compress_are_handed_over_compressed() {
    let mut s = merged();
    s.client_input(b"b COMPRESS DEFLATE\r\n\x4a\x4c\x54\xf0\xf3\xf7"[..].into());
    assert_eq!(
        out(&mut s),
        [
            "S: b OK DEFLATE active",
            "COMPRESS then b\"JLT\\xf0\\xf3\\xf7\"",
        ]
    );
    assert_eq!(s.client_buffered(), 0);
    assert!(s.is_idle());
    // Inflated by the driver, the next command arrives as any other.
    s.client_input(b"c NOOP\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: c NOOP"]);

    // The same in a pass-through phase.
    let mut s = session(true);
    out(&mut s);
    s.client_input(b"a LOGIN olga secret\r\n"[..].into());
    out(&mut s);
    s.login_done(Store::Old, Ok(info(Store::Old)));
    out(&mut s);
    s.client_input(b"b COMPRESS DEFLATE\r\nc NOOP\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        ["S: b OK DEFLATE active", "COMPRESS then b\"c NOOP\\r\\n\""]
    );
    s.client_input(b"c NOOP\r\n"[..].into());
    assert_eq!(out(&mut s), ["O: c NOOP"]);
}

#[test]
fn pass_through_compress_waits_for_the_commands_before_it() {
    let mut s = session(true);
    out(&mut s);
    s.client_input(b"a LOGIN nina secret\r\n"[..].into());
    assert_eq!(out(&mut s), ["LOGIN new"]);
    s.login_done(Store::New, Ok(info(Store::New)));
    let o = out(&mut s);
    // NEW's COMPRESS=DEFLATE is not passed on: the one shown is Ferry's.
    assert_eq!(o[0].matches("COMPRESS=DEFLATE").count(), 1, "{o:?}");
    s.client_input(b"b COMPRESS BZIP\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: b BAD Unknown command or invalid syntax"]);
    // A FETCH is streaming: Ferry's OK must not land inside its literal.
    s.client_input(b"c FETCH 1 BODY[]\r\nd COMPRESS DEFLATE\r\nx"[..].into());
    assert_eq!(out(&mut s), ["N: c FETCH 1 BODY[]"]);
    assert!(!s.wants_client_input());
    s.backend_input(Store::New, b"* 1 FETCH (BODY[] {5}\r\nhel"[..].into());
    assert_eq!(out(&mut s), ["S: * 1 FETCH (BODY[] {5}", "S: hel"]);
    s.backend_input(Store::New, b"lo)\r\nc OK done\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        [
            "S: lo",
            "S: )",
            "S: c OK done",
            "S: d OK DEFLATE active",
            "COMPRESS then b\"x\""
        ]
    );
    assert!(s.wants_client_input());
    s.client_input(b"e COMPRESS DEFLATE\r\n"[..].into());
    assert_eq!(
        out(&mut s),
        ["S: e NO [COMPRESSIONACTIVE] DEFLATE is active already"]
    );
    // Inside an IDLE only DONE is valid.
    let mut s = session(true);
    out(&mut s);
    s.client_input(b"a LOGIN nina secret\r\n"[..].into());
    out(&mut s);
    s.login_done(Store::New, Ok(info(Store::New)));
    out(&mut s);
    s.client_input(b"b IDLE\r\n"[..].into());
    assert_eq!(out(&mut s), ["N: b IDLE"]);
    s.backend_input(Store::New, b"+ idling\r\n"[..].into());
    out(&mut s);
    s.client_input(b"c COMPRESS DEFLATE\r\n"[..].into());
    assert_eq!(out(&mut s), ["S: c BAD Expected DONE"]);
}

/// Only the merged phase maps names, so only its logins ask the store for
/// its layout (NAMESPACE); phases old and new spare the exchange.
#[test]
fn only_merged_logins_ask_for_the_stores_layout() {
    let layout_of = |s: &mut Session| {
        std::iter::from_fn(|| s.poll_action())
            .find_map(|a| match a {
                Action::Login { store, layout, .. } => Some((store, layout)),
                _ => None,
            })
            .expect("a store login")
    };
    for (user, store, layout) in [
        ("nina", Store::New, false),
        ("olga", Store::Old, false),
        ("alice", Store::New, true),
    ] {
        let mut s = session(true);
        out(&mut s);
        s.client_input(format!("a1 LOGIN {user} pw\r\n").as_bytes().into());
        assert_eq!(layout_of(&mut s), (store, layout), "{user}");
    }
    // The merged view's OLD, logged in when `Old/` is first used.
    let mut s = merged();
    s.client_input(b"b EXAMINE Old/INBOX\r\n"[..].into());
    assert_eq!(layout_of(&mut s), (Store::Old, true));
}
