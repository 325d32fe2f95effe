//! IMAP URLs (RFC 5092) in CATENATE (RFC 4469): which mailbox a URL points
//! into, so that one naming an `Old/` folder never reaches NEW as if NEW
//! held it.

/// A URL whose mailbox cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the URL's mailbox is not percent-encoded UTF-8")]
pub struct BadUrl;

/// The mailbox an IMAP URL names, in the client's modified UTF-7 form, or
/// `None` when it names none (a URL relative to the selected mailbox:
/// `;UID=…`). `Err` when the URL cannot be read (bad percent-encoding or
/// UTF-8): such a URL is refused rather than passed on.
pub fn mailbox(url: &[u8]) -> Result<Option<Vec<u8>>, BadUrl> {
    // `imap://user;AUTH=*@host:port/mailbox;…`: the path after the host.
    let path = match url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"imap://"))
    {
        true => {
            let rest = &url[7..];
            match rest.iter().position(|b| *b == b'/') {
                Some(i) => &rest[i..],
                None => return Ok(None),
            }
        }
        false => url,
    };
    let Some(path) = path.strip_prefix(b"/") else {
        return Ok(None);
    };
    // The mailbox ends where the first `;` parameter or `/;` part starts,
    // and before an optional `?search`.
    let end = path
        .iter()
        .position(|b| matches!(b, b';' | b'?'))
        .unwrap_or(path.len());
    let name = path[..end].strip_suffix(b"/").unwrap_or(&path[..end]);
    if name.is_empty() {
        return Ok(None);
    }
    let decoded = percent_decode(name).ok_or(BadUrl)?;
    let utf8 = String::from_utf8(decoded).map_err(|_| BadUrl)?;
    Ok(Some(crate::mutf7::encode(&utf8).into_bytes()))
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(url: &str) -> Option<String> {
        mailbox(url.as_bytes())
            .unwrap()
            .map(|n| String::from_utf8(n).unwrap())
    }

    #[test]
    fn the_mailbox_of_each_url_form() {
        assert_eq!(
            name("/INBOX;UIDVALIDITY=385759045/;UID=20").as_deref(),
            Some("INBOX")
        );
        assert_eq!(
            name("/Old%2FArchive%2F2019;UIDVALIDITY=5/;UID=1/;SECTION=1.2;PARTIAL=0.100")
                .as_deref(),
            Some("Old/Archive/2019")
        );
        assert_eq!(
            name("imap://alice@mail.example.org/Old/INBOX;UIDVALIDITY=5/;UID=3").as_deref(),
            Some("Old/INBOX")
        );
        assert_eq!(
            name("/%E5%8F%97%E4%BF%A1%E7%AE%B1;UIDVALIDITY=1/;UID=1").as_deref(),
            Some("&U9dP4Xux-")
        );
        assert_eq!(name(";UID=20/;SECTION=1"), None);
        assert_eq!(name("imap://host"), None);
        assert!(mailbox(b"/a%zz;UID=1").is_err());
        assert!(mailbox(b"/a%ff;UID=1").is_err());
    }
}
