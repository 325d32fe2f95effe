//! Micro-benchmarks of the per-byte and per-command paths:
//! `cargo bench --bench core`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::{
    frame::{Framer, Peer},
    merge::{self, RawEntry},
    mutf7,
    namespace::{Layout, NameMap},
    route,
};
use imap_codec::{CommandCodec, decode::Decoder, imap_types::flag::FlagNameAttribute};

fn fetch_stream() -> Vec<u8> {
    let body = vec![b'x'; 64 * 1024];
    let mut s = Vec::new();
    for i in 1..=16 {
        s.extend_from_slice(
            format!("* {i} FETCH (UID {i} BODY[] {{{}}}\r\n", body.len()).as_bytes(),
        );
        s.extend_from_slice(&body);
        s.extend_from_slice(b")\r\n");
    }
    s
}

fn framing(c: &mut Criterion) {
    let stream = fetch_stream();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("fetch_stream_16x64KiB", |b| {
        b.iter(|| {
            let mut f = Framer::new(Peer::Server, 64 * 1024);
            let mut n = 0usize;
            for chunk in stream.chunks(16 * 1024) {
                f.push(chunk);
                while let Ok(Some(frame)) = f.next_frame() {
                    n += black_box(&frame) as *const _ as usize & 1;
                }
            }
            n
        })
    });
    g.finish();
}

fn commands(c: &mut Criterion) {
    let line = b"a42 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])\r\n";
    c.bench_function("command/frame+decode+route", |b| {
        b.iter(|| {
            let mut f = Framer::new(Peer::Client, 64 * 1024);
            f.push(line);
            let Ok(Some(ferry::frame::Frame::Line { bytes, .. })) = f.next_frame() else {
                unreachable!()
            };
            let (_, cmd) = CommandCodec::new().decode(&bytes).unwrap();
            black_box(route::route(&cmd.body))
        })
    });
}

fn names(c: &mut Criterion) {
    c.bench_function("mutf7/decode+encode", |b| {
        b.iter(|| {
            let s = mutf7::decode(black_box(b"INBOX.&U9dP4Xux-.&eBR6dluk-")).unwrap();
            black_box(mutf7::encode(&s))
        })
    });
    let map = NameMap::new("Old/", '/', Layout::legacy(), Layout::slash());
    let old: Vec<RawEntry> = (0..200)
        .map(|i| RawEntry {
            attrs: vec![FlagNameAttribute::Noinferiors],
            name: format!("INBOX.Archive.{i}").into_bytes(),
        })
        .collect();
    let mut g = c.benchmark_group("list");
    g.throughput(Throughput::Elements(old.len() as u64));
    g.bench_function("merge_200_old_entries", |b| {
        b.iter(|| {
            black_box(merge::list(
                &map,
                b"*",
                false,
                merge::Sources {
                    new: &[],
                    old: Some(&old),
                    old_reachable: true,
                    kept: &Default::default(),
                    copies: false,
                },
            ))
        })
    });
    g.finish();
    // One STATUS answer from OLD, renamed into the client's view: decode,
    // map the name, encode.
    let line = b"* STATUS INBOX.Archive.2019 (MESSAGES 231 UIDNEXT 232 UNSEEN 0)\r\n";
    c.bench_function("status/rename_one_old_entry", |b| {
        b.iter(|| {
            black_box(ferry::session::rename_data(
                &map,
                ferry::session::Store::Old,
                black_box(line),
                false,
            ))
        })
    });
}

/// A logged-in merged session with INBOX (on NEW) selected, and a way to
/// play one command through it: what Ferry's own logic costs per forwarded
/// command, without sockets, kernel or runtime.
mod session_bench {
    use std::{sync::Arc, time::Instant};

    use bytes::Bytes;
    use ferry::{
        namespace::Layout,
        session::{Action, BackendInfo, Event, Session, SessionConfig, Store},
    };
    use imap_codec::{
        ResponseCodec,
        decode::Decoder,
        imap_types::{
            IntoStatic,
            response::{Data, Response},
        },
    };

    const CONFIG: &str = "[listen]\nimap = \"127.0.0.1:0\"\n[auth]\nallow_plaintext = true\n\
        [backends.old]\naddress = \"127.0.0.1:1\"\ntls = \"none\"\n\
        [backends.new]\naddress = \"127.0.0.1:2\"\ntls = \"none\"\n";
    const CAPS: &[u8] = b"* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE \
        SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND \
        URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 \
        CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY \
        MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY \
        SPECIAL-USE\r\n";

    /// Runs the session's actions: logins succeed at once, store traffic is
    /// returned (the last command sent to each store).
    fn drain(s: &mut Session) -> Option<Bytes> {
        let mut to_store = None;
        while let Some(action) = s.poll_action() {
            match action {
                Action::Login { store, .. } => {
                    let Ok((_, Response::Data(Data::Capability(caps)))) =
                        ResponseCodec::new().decode(CAPS)
                    else {
                        unreachable!()
                    };
                    let caps: Vec<_> = caps.into_iter().map(|c| c.into_static()).collect();
                    let info = BackendInfo {
                        capabilities: ferry::caps::Caps::from_decoded(&caps),
                        layout: Layout::slash(),
                    };
                    s.handle(Instant::now(), Event::LoggedIn(store, Ok(info)));
                }
                Action::ToBackend(_, bytes) => to_store = Some(bytes),
                _ => {}
            }
        }
        to_store
    }

    fn tag(line: &[u8]) -> &[u8] {
        &line[..line.iter().position(|&b| b == b' ').unwrap()]
    }

    /// Plays `command` and the store's `answer` (its tagged line follows).
    pub fn round_trip(s: &mut Session, command: &[u8], answer: &[u8]) {
        s.handle(Instant::now(), Event::ClientBytes(command.into()));
        let sent = drain(s).expect("forwarded to the store");
        let mut response = answer.to_vec();
        response.extend_from_slice(tag(&sent));
        response.extend_from_slice(b" OK done\r\n");
        s.handle(
            Instant::now(),
            Event::StoreBytes(Store::New, response[..].into()),
        );
        drain(s);
    }

    pub fn selected() -> Session {
        let mut s = Session::new(
            SessionConfig {
                config: Arc::new(ferry::config::parse(CONFIG).unwrap()),
                tls: true,
                starttls: false,
                subscriptions: Default::default(),
                served: Default::default(),
                id: 1,
                client: "192.0.2.7:50000".parse().unwrap(),
                local: "127.0.0.1:993".parse().unwrap(),
                throttle: Arc::new(ferry::throttle::Throttle::new(&Default::default())),
            },
            Instant::now(),
            Box::new(ferry::metrics::Recorder::new("imaps", Default::default())),
        );
        drain(&mut s);
        s.handle(
            Instant::now(),
            Event::ClientBytes(b"a LOGIN alice secret\r\n"[..].into()),
        );
        drain(&mut s);
        round_trip(
            &mut s,
            b"b SELECT INBOX\r\n",
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n* 50 EXISTS\r\n\
              * 0 RECENT\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\n* OK [UIDNEXT 51] Predicted next UID\r\n",
        );
        s
    }
}

fn session(c: &mut Criterion) {
    let mut s = session_bench::selected();
    let flags: Vec<u8> = (1..=50)
        .flat_map(|i| format!("* {i} FETCH (FLAGS (\\Seen))\r\n").into_bytes())
        .collect();
    let mut g = c.benchmark_group("session");
    g.bench_function("merged_noop_round_trip", |b| {
        b.iter(|| session_bench::round_trip(&mut s, b"c NOOP\r\n", b""))
    });
    g.bench_function("merged_uid_fetch_body_round_trip", |b| {
        let body = "Some text of a typical mail.\r\n".repeat(100);
        let answer = format!("* 7 FETCH (UID 7 BODY[] {{{}}}\r\n{body})\r\n", body.len());
        b.iter(|| {
            session_bench::round_trip(
                &mut s,
                b"c UID FETCH 7 (BODY.PEEK[])\r\n",
                answer.as_bytes(),
            )
        })
    });
    g.bench_function("merged_fetch_flags_50_round_trip", |b| {
        b.iter(|| session_bench::round_trip(&mut s, b"c FETCH 1:* (FLAGS)\r\n", &flags))
    });
    g.finish();
}

criterion_group!(benches, framing, commands, names, session);
criterion_main!(benches);
