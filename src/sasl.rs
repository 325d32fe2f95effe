//! SASL PLAIN (RFC 4616) messages: parsing the client's, building Ferry's.

use std::fmt;

/// The parts of a SASL PLAIN message.
///
/// `Debug` never prints the password, only its length.
pub struct Plain<'a> {
    pub authzid: Option<&'a [u8]>,
    pub authcid: &'a [u8],
    pub password: &'a [u8],
}

impl fmt::Debug for Plain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted(usize);
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "<redacted, {} bytes>", self.0)
            }
        }
        f.debug_struct("Plain")
            .field("authzid", &self.authzid.map(String::from_utf8_lossy))
            .field("authcid", &String::from_utf8_lossy(self.authcid))
            .field("password", &Redacted(self.password.len()))
            .finish()
    }
}

/// Splits `authzid NUL authcid NUL passwd`; `None` when malformed.
///
/// The message must contain exactly two NULs, and authcid and password must be
/// non-empty. An empty authzid (the usual case) is returned as `None`. The
/// parts are otherwise opaque bytes, returned byte-exact.
pub fn parse_plain(raw: &[u8]) -> Option<Plain<'_>> {
    let mut parts = raw.splitn(3, |&b| b == 0);
    let authzid = parts.next()?;
    let authcid = parts.next()?;
    let password = parts.next()?;
    if authcid.is_empty() || password.is_empty() || password.contains(&0) {
        return None;
    }
    Some(Plain {
        authzid: (!authzid.is_empty()).then_some(authzid),
        authcid,
        password,
    })
}

/// `authzid NUL authcid NUL passwd`: `authcid` logs in, acting as `authzid`
/// (a master user for a user). The result holds a secret: never log it.
pub fn plain_message(authzid: &[u8], authcid: &[u8], password: &[u8]) -> Vec<u8> {
    [authzid, authcid, password].join(&0u8)
}

/// The assertions of the `sasl_plain` fuzz target, shared with the
/// stable-toolchain corpus replay test. Panics when a property is violated.
#[doc(hidden)]
pub fn check_parse(data: &[u8]) {
    let nuls = data.iter().filter(|&&b| b == 0).count();
    let Some(plain) = parse_plain(data) else {
        return;
    };
    assert_eq!(nuls, 2, "accepted a message with {nuls} NULs");
    assert!(!plain.authcid.is_empty() && !plain.password.is_empty());
    assert_ne!(plain.authzid, Some(&b""[..]), "empty authzid must be None");
    let mut joined = plain.authzid.unwrap_or_default().to_vec();
    joined.push(0);
    joined.extend_from_slice(plain.authcid);
    joined.push(0);
    joined.extend_from_slice(plain.password);
    assert_eq!(
        joined, data,
        "re-joining the parts does not reproduce the input"
    );
    let shown = format!("{plain:?}");
    assert!(
        shown.contains(&format!("<redacted, {} bytes>", plain.password.len())),
        "{shown}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_authzid() {
        let p = parse_plain(b"\0tim\0tanstaaftanstaaf").unwrap();
        assert_eq!(p.authzid, None);
        assert_eq!(p.authcid, b"tim");
        assert_eq!(p.password, b"tanstaaftanstaaf");
    }

    #[test]
    fn with_authzid() {
        let p = parse_plain(b"Ursel\0Kurt\0xipj3plmq").unwrap();
        assert_eq!(p.authzid, Some(&b"Ursel"[..]));
        assert_eq!(p.authcid, b"Kurt");
        assert_eq!(p.password, b"xipj3plmq");
    }

    #[test]
    fn utf8_and_odd_bytes_pass_byte_exact() {
        let raw = "\0jörg@example.edu\0pässwörd 🔑 \r\n".as_bytes();
        let p = parse_plain(raw).unwrap();
        assert_eq!(p.authcid, "jörg@example.edu".as_bytes());
        assert_eq!(p.password, "pässwörd 🔑 \r\n".as_bytes());
        let p = parse_plain(b"\0u\0\xff\xfe \x01").unwrap();
        assert_eq!(p.password, b"\xff\xfe \x01");
    }

    #[test]
    fn malformed_is_none() {
        for bad in [
            &b""[..],
            b"\0",
            b"\0\0",
            b"\0\0\0",
            b"tim",
            b"\0tim",
            b"tim\0secret",
            b"\0tim\0",         // empty password
            b"\0\0secret",      // empty authcid
            b"a\0\0secret",     // empty authcid
            b"\0tim\0sec\0",    // three NULs
            b"\0tim\0\0sec",    // three NULs
            b"\0\0tim\0secret", // three NULs
            b"a\0b\0c\0d",      // three NULs
        ] {
            assert!(parse_plain(bad).is_none(), "{bad:?}");
            check_parse(bad);
        }
    }

    #[test]
    fn debug_redacts_the_password() {
        let p = parse_plain(b"admin\0alice\0hunter2-s3cret").unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted, 14 bytes>"), "{shown}");
        assert!(
            shown.contains("alice") && shown.contains("admin"),
            "{shown}"
        );
        let pretty = format!("{p:#?}");
        assert!(!pretty.contains("hunter2"), "{pretty}");
        assert!(
            pretty.contains("password: <redacted, 14 bytes>"),
            "{pretty}"
        );
    }

    /// Replays `fuzz/corpus/sasl_plain/` on the stable toolchain with the fuzz
    /// target's assertions.
    #[test]
    fn fuzz_corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sasl_plain");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_file() {
                check_parse(&std::fs::read(&path).unwrap());
                seen += 1;
            }
        }
        assert!(seen > 0, "empty corpus at {}", dir.display());
    }
}
