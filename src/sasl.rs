//! SASL PLAIN (RFC 4616) message parsing.

/// The parts of a SASL PLAIN message.
pub struct Plain<'a> {
    pub authzid: Option<&'a [u8]>,
    pub authcid: &'a [u8],
    pub password: &'a [u8],
}

/// Splits `authzid NUL authcid NUL passwd`; `None` when malformed.
pub fn parse_plain(raw: &[u8]) -> Option<Plain<'_>> {
    let _ = raw;
    todo!()
}
