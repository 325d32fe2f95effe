//! Modified UTF-7 (RFC 3501 §5.1.3) mailbox-name encoding.
//!
//! Printable US-ASCII (0x20..=0x7e) other than `&` represents itself, `&` is
//! written `&-`, and every other character goes into a run of UTF-16BE
//! encoded with modified base64 (`+` and `,`, no padding) between `&` and `-`.
//!
//! Decoding is strict: it accepts only the canonical form that [`encode`]
//! produces, so that for every `w` with `decode(w) == Some(s)`,
//! `encode(&s).as_bytes() == w`, and for every string `s`,
//! `decode(encode(s).as_bytes()) == Some(s)`. Ferry relies on these byte-exact
//! round trips when it rewrites mailbox names.

use base64::Engine as _;
use base64::alphabet::IMAP_MUTF7;
use base64::engine::general_purpose::{GeneralPurpose, NO_PAD};

/// Modified base64: IMAP alphabet, no padding, non-zero trailing bits rejected.
const B64: GeneralPurpose = GeneralPurpose::new(&IMAP_MUTF7, NO_PAD);

/// Whether `c` represents itself (`&` is printable but must be escaped as `&-`).
fn is_direct(c: u32) -> bool {
    (0x20..=0x7e).contains(&c)
}

/// Encodes a UTF-8 mailbox name as modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut run: Vec<u8> = Vec::new();
    for c in name.chars() {
        if is_direct(c as u32) {
            flush_run(&mut out, &mut run);
            out.push(c);
            if c == '&' {
                out.push('-');
            }
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                run.extend_from_slice(&unit.to_be_bytes());
            }
        }
    }
    flush_run(&mut out, &mut run);
    out
}

fn flush_run(out: &mut String, run: &mut Vec<u8>) {
    if run.is_empty() {
        return;
    }
    out.push('&');
    B64.encode_string(&run[..], out);
    out.push('-');
    run.clear();
}

/// Decodes modified UTF-7; `None` when the input is not valid modified UTF-7.
///
/// Only the canonical encoding is accepted: bytes outside 0x20..=0x7e, an
/// unterminated `&`, non-canonical base64, an odd number of UTF-16 bytes,
/// unpaired surrogates, encoded printable ASCII, and two adjacent encoded runs
/// are all rejected.
pub fn decode(wire: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(wire.len());
    let mut i = 0;
    // Whether the previous token was a (non-empty) encoded run.
    let mut after_run = false;
    while i < wire.len() {
        let b = wire[i];
        if !is_direct(u32::from(b)) {
            return None;
        }
        if b != b'&' {
            out.push(char::from(b));
            i += 1;
            after_run = false;
            continue;
        }
        let len = wire[i + 1..].iter().position(|&b| b == b'-')?;
        let body = &wire[i + 1..i + 1 + len];
        i += len + 2;
        if body.is_empty() {
            out.push('&');
            after_run = false;
            continue;
        }
        if after_run {
            // `&...-&...-` must have been a single run.
            return None;
        }
        decode_run(body, &mut out)?;
        after_run = true;
    }
    Some(out)
}

/// Decodes the base64 between `&` and `-` (non-empty) and appends it to `out`.
fn decode_run(body: &[u8], out: &mut String) -> Option<()> {
    // The engine rejects bytes outside the alphabet (including `&` and `=`),
    // impossible lengths and non-zero trailing bits, so the base64 is canonical.
    let bytes = B64.decode(body).ok()?;
    if bytes.len() % 2 != 0 {
        return None;
    }
    let units = bytes
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]));
    for c in char::decode_utf16(units) {
        let c = c.ok()?;
        if is_direct(c as u32) {
            // Printable ASCII (including `&`) must not be base64-encoded.
            return None;
        }
        out.push(c);
    }
    Some(())
}

/// Whether `wire` is valid (canonical) modified UTF-7.
pub fn is_valid(wire: &[u8]) -> bool {
    decode(wire).is_some()
}

/// The round-trip assertions of the `mutf7` fuzz target, shared with the
/// stable-toolchain corpus replay test. Panics when a property is violated.
#[doc(hidden)]
pub fn check_round_trips(data: &[u8]) {
    if let Some(name) = decode(data) {
        let again = encode(&name);
        assert_eq!(
            again.as_bytes(),
            data,
            "decode then encode is not byte-exact for {name:?}"
        );
    }
    if let Ok(name) = std::str::from_utf8(data) {
        let wire = encode(name);
        assert!(
            wire.bytes().all(|b| is_direct(u32::from(b))),
            "encode produced non-printable bytes: {wire:?}"
        );
        assert_eq!(
            decode(wire.as_bytes()).as_deref(),
            Some(name),
            "encode then decode lost {name:?} (wire {wire:?})"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both_ways(utf8: &str, wire: &str) {
        assert_eq!(encode(utf8), wire, "encode({utf8:?})");
        assert_eq!(
            decode(wire.as_bytes()).as_deref(),
            Some(utf8),
            "decode({wire:?})"
        );
    }

    #[test]
    fn rfc3501_example() {
        both_ways("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    }

    #[test]
    fn known_names() {
        both_ways("Entwürfe", "Entw&APw-rfe");
        both_ways("R&D", "R&-D");
        both_ways("&", "&-");
        both_ways("&&", "&-&-");
        both_ways("", "");
        both_ways("INBOX", "INBOX");
        both_ways("a-b", "a-b");
        both_ways("Отправленные", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-");
        // Cross-checked with python3: base64 of str.encode('utf-16-be'), '/' -> ','.
        both_ways("受信箱", "&U9dP4Xux-");
        both_ways("研究室", "&eBR6dluk-");
        both_ways("é&", "&AOk-&-");
        both_ways("&é", "&-&AOk-");
    }

    #[test]
    fn surrogate_pairs() {
        both_ways("😀", "&2D3eAA-");
        both_ways("a😀b", "a&2D3eAA-b");
        both_ways("😀受信箱", "&2D3eAFPXT+F7sQ-");
    }

    #[test]
    fn controls_and_del_are_encoded() {
        both_ways("\0", "&AAA-");
        both_ways("\u{7f}", "&AH8-");
        both_ways("a\tb", "a&AAk-b");
        both_ways("\r\n", "&AA0ACg-");
    }

    #[test]
    fn rejects_non_canonical_and_malformed() {
        for bad in [
            &b"&"[..],            // unterminated
            b"abc&U,BTFw",        // unterminated run
            b"&U,BTFw",           // unterminated run
            b"caf\xc3\xa9",       // raw UTF-8
            b"a\tb",              // control byte
            b"a\x7fb",            // DEL
            b"a\x00",             // NUL
            b"&U,BTFw=-",         // padding
            b"&U,BTFx-",          // non-zero trailing bits
            b"&APx-",             // non-zero trailing bits
            b"&A-",               // impossible base64 length
            b"&AAAAA-",           // impossible base64 length
            b"&AP-",              // one byte: odd count
            b"&AOkA-",            // three bytes: odd count
            b"&U/BTFw-",          // standard alphabet `/`
            b"&U,B TFw-",         // space in base64
            b"&2D0-",             // lone high surrogate
            b"&3gA-",             // lone low surrogate
            b"&3gDYPQ-",          // surrogates in the wrong order
            b"&AGE-",             // "a" encoded
            b"&ACY-",             // "&" encoded instead of "&-"
            b"&AGEAYg-",          // "ab" encoded
            b"&AOkAYQ-",          // printable ASCII inside a run
            b"&AH4-",             // "~" encoded
            b"&ACA-",             // " " encoded
            b"&AGE-&AGE-",        // adjacent runs
            b"&AOk-&AOk-",        // adjacent runs (valid content each)
            b"&AOk-&-&-&AOk-x&&", // bare `&` at the end
            b"&&-",               // `&` inside base64
            b"&-&",               // trailing lone `&`
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
            assert!(!is_valid(bad));
        }
    }

    #[test]
    fn accepts_runs_separated_by_escapes_or_text() {
        for good in ["&AOk-&-&AOk-", "&AOk-x&AOk-", "&AOk--", "-&-", "&-&-&-"] {
            assert!(is_valid(good.as_bytes()), "{good}");
            assert_eq!(encode(&decode(good.as_bytes()).unwrap()), good);
        }
    }

    /// A small deterministic PRNG (SplitMix64), so the property test needs no deps.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Printable ASCII (including the special `&`, `-`, `,`, `+`), controls,
    /// BMP edges around the surrogate range, and astral characters.
    const PALETTE: &str = concat!(
        "aZ0 &-+,/~.\0\t\u{7f}\u{80}éüßЖ台北受",
        "\u{ffff}\u{fffd}\u{d7ff}\u{e000}😀\u{10000}\u{10ffff}",
    );

    fn random_char(rng: &mut Rng) -> char {
        if rng.below(4) == 0 {
            // Anywhere in the code space (skipping surrogates, which `char` excludes).
            loop {
                if let Some(c) = char::from_u32(rng.next() as u32 % 0x11_0000) {
                    return c;
                }
            }
        }
        let n = PALETTE.chars().count();
        PALETTE.chars().nth(rng.below(n)).unwrap()
    }

    #[test]
    fn generated_strings_round_trip() {
        let mut rng = Rng(0x5eed);
        for _ in 0..20_000 {
            let len = rng.below(12);
            let s: String = (0..len).map(|_| random_char(&mut rng)).collect();
            let wire = encode(&s);
            assert!(wire.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{wire:?}");
            assert_eq!(
                decode(wire.as_bytes()).as_deref(),
                Some(s.as_str()),
                "{wire:?}"
            );
            check_round_trips(wire.as_bytes());
            check_round_trips(s.as_bytes());
        }
    }

    #[test]
    fn generated_wire_bytes_are_canonical_or_rejected() {
        // Random strings over the wire alphabet: every accepted one must re-encode
        // byte-exactly (this exercises the strictness checks much more densely
        // than random UTF-8 would).
        const WIRE: &[u8] = b"&&&---AAAAgE,+/9zZ DU3eOkPwRsQ";
        let mut rng = Rng(42);
        let mut accepted = 0;
        for _ in 0..200_000 {
            let len = rng.below(14);
            let w: Vec<u8> = (0..len).map(|_| WIRE[rng.below(WIRE.len())]).collect();
            if is_valid(&w) {
                accepted += 1;
            }
            check_round_trips(&w);
        }
        assert!(accepted > 1000, "only {accepted} accepted");
    }

    /// Replays `fuzz/corpus/mutf7/` on the stable toolchain with the fuzz
    /// target's assertions.
    #[test]
    fn fuzz_corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/mutf7");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_file() {
                check_round_trips(&std::fs::read(&path).unwrap());
                seen += 1;
            }
        }
        assert!(seen > 0, "empty corpus at {}", dir.display());
    }
}
