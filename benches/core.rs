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
            ))
        })
    });
}

criterion_group!(benches, framing, commands, names);
criterion_main!(benches);
