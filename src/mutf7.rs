//! Modified UTF-7 (RFC 3501 §5.1.3) mailbox-name encoding.

/// Encodes a UTF-8 mailbox name as modified UTF-7.
pub fn encode(name: &str) -> String {
    let _ = name;
    todo!()
}

/// Decodes modified UTF-7; `None` when the input is not valid modified UTF-7.
pub fn decode(wire: &[u8]) -> Option<String> {
    let _ = wire;
    todo!()
}
