//! Store answers Ferry reads beyond what imap-codec parses whole: the UID
//! set of a MULTIAPPEND's `[APPENDUID]`, and the `* n FETCH (UID u BODY[]
//! {len}` line in front of a body that streams. Shared by the session's
//! cross-store COPY and the copier.

use std::num::NonZeroU32;

use imap_codec::{
    ResponseCodec,
    decode::Decoder,
    imap_types::{
        extensions::uidplus::{UidElement, UidSet},
        fetch::MessageDataItem,
        response::{Code, Data, Response},
    },
};

/// The UIDs of a UID set, in its order.
fn uid_elements(set: &UidSet) -> Vec<NonZeroU32> {
    let mut out = Vec::new();
    for e in set.0.as_ref() {
        match *e {
            UidElement::Single(u) => out.push(u),
            UidElement::Range(a, b) => {
                let (lo, hi) = if a <= b {
                    (a.get(), b.get())
                } else {
                    (b.get(), a.get())
                };
                out.extend((lo..=hi).filter_map(NonZeroU32::new));
            }
        }
    }
    out
}

/// `[APPENDUID v uid-set]` of a tagged OK. imap-codec parses the single-UID
/// form only, so a MULTIAPPEND's set is read through its COPYUID parser.
pub fn append_uids(msg: &[u8]) -> Option<(NonZeroU32, Vec<NonZeroU32>)> {
    let text = std::str::from_utf8(msg).ok()?;
    let start = text.find("[APPENDUID ")? + "[APPENDUID ".len();
    let end = start + text[start..].find(']')?;
    let (validity, set) = text[start..end].split_once(' ')?;
    let probe = format!("* OK [COPYUID {validity} 1 {set}] x\r\n");
    match ResponseCodec::new().decode(probe.as_bytes()).ok()?.1 {
        Response::Status(s) => match s.code() {
            Some(Code::CopyUid {
                uid_validity,
                destination,
                ..
            }) => Some((*uid_validity, uid_elements(destination))),
            _ => None,
        },
        _ => None,
    }
}

/// The sequence number and UID a `* n FETCH (… BODY[] {len}` line names.
pub fn body_line(line: &[u8]) -> Option<(NonZeroU32, Option<NonZeroU32>)> {
    let open = line.iter().rposition(|b| *b == b'{')?;
    let mut probe = line[..open].to_vec();
    probe.extend_from_slice(b"NIL)\r\n");
    let (_, Response::Data(Data::Fetch { seq, items })) =
        ResponseCodec::new().decode(&probe).ok()?
    else {
        return None;
    };
    let uid = items.as_ref().iter().find_map(|i| match i {
        MessageDataItem::Uid(u) => Some(*u),
        _ => None,
    });
    Some((seq, uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn appenduid_sets_are_read_in_order() {
        let (v, uids) =
            append_uids(b"ferry.4 OK [APPENDUID 38505 3955:3957,3960] done\r\n").unwrap();
        assert_eq!(v.get(), 38505);
        assert_eq!(uids, [nz(3955), nz(3956), nz(3957), nz(3960)]);
        let (_, one) = append_uids(b"t OK [APPENDUID 1 7] APPEND completed\r\n").unwrap();
        assert_eq!(one, [nz(7)]);
        assert!(append_uids(b"t OK APPEND completed\r\n").is_none());
    }

    #[test]
    fn body_lines_name_their_message() {
        assert_eq!(
            body_line(b"* 12 FETCH (UID 40 BODY[] {310}\r\n"),
            Some((nz(12), Some(nz(40))))
        );
        assert_eq!(
            body_line(b"* 3 FETCH (BODY[] {310}\r\n"),
            Some((nz(3), None))
        );
        assert_eq!(body_line(b"* x FETCH (BODY[] {3}\r\n"), None);
    }
}
