//! CATENATE (RFC 4469): an APPEND that NEW builds from text parts and IMAP
//! URLs. The command is assembled whole (its TEXT parts are literals within
//! the inline limit) so every URL is read before NEW sees one: a URL into an
//! `Old/` folder would name, on NEW, a folder NEW does not hold (or a copy
//! with other UIDs), so it is refused with `[BADURL]`.

use super::*;

impl Shared {
    pub(in crate::session) fn merged_catenate(&mut self, m: &mut Merged, raw: &Bytes, verb: Verb) {
        let Some(tag) = self.begin(m, raw, verb) else {
            return;
        };
        let Some(at) = crate::extensions::atom_at(raw, b"CATENATE") else {
            return self.send_client(reply::bad(&tag, "Unknown command or invalid syntax"));
        };
        // The APPEND up to its parts, with an empty message in their place.
        let mut probe = raw[..at].to_vec();
        probe.extend_from_slice(b"{0+}\r\n\r\n");
        let Ok((_, mut cmd)) = CommandCodec::new().decode(&probe) else {
            return self.send_client(reply::bad(&tag, "Unknown command or invalid syntax"));
        };
        let Some(name) = mailbox_mut(&mut cmd.body).map(|mb| m.client_name(mb)) else {
            return self.send_client(reply::bad(&tag, "Unknown command or invalid syntax"));
        };
        let target = match new_destination(&m.map, &name, &tag) {
            Ok(n) => n,
            Err(refusal) => return self.send_client(refusal),
        };
        if !self.store_has(Store::New, Cap::Catenate) {
            return self.send_client(reply::bad(&tag, "CATENATE is not supported"));
        }
        for url in crate::extensions::urls(&raw[at..]) {
            let passes = match crate::url::mailbox(&url) {
                // Relative to the selected mailbox: NEW's own, or none.
                Ok(None) => true,
                Ok(Some(client)) => matches!(
                    m.map.to_backend(&client),
                    Ok(Target::New(n)) if n == client
                ),
                Err(crate::url::BadUrl) => false,
            };
            if !passes {
                return self.send_client(reply::bad_url(
                    &tag,
                    &url,
                    "URLs into Old/ folders cannot be used here: fetch the part instead",
                ));
            }
        }
        let bytes = if target == name && !m.utf8() {
            raw.clone()
        } else {
            set_mailbox(&mut cmd.body, mailbox(target));
            let line = reply::command(&tag, cmd.body);
            let open = line.iter().rposition(|b| *b == b'{').unwrap_or(line.len());
            let mut bytes = BytesMut::from(&line[..open]);
            bytes.extend_from_slice(&raw[at..]);
            bytes.freeze()
        };
        self.send_or_refuse(m, Store::New, &bytes, tag, None, After::Nothing);
    }
}
