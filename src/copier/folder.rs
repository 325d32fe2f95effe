//! One pass over one OLD folder: what the ledger does not list is streamed
//! into its NEW folder, message by message, and recorded under the UID NEW
//! gave it (APPENDUID). A pass that is interrupted and run again appends
//! nothing twice: the ledger is written every [`RECORD_EVERY`] messages and
//! at the end, in one transaction each.

use std::collections::HashMap;

use imap_codec::{
    ResponseCodec,
    decode::Decoder,
    imap_types::{
        IntoStatic,
        command::CommandBody,
        core::{AString, Vec1},
        fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section},
        mailbox::Mailbox,
        response::{Code, Data, Response},
        sequence::SequenceSet,
    },
};

use super::{
    conn::{Conn, CopyError},
    mapping::Route,
};
use crate::{
    session::reply,
    state::{FolderKey, State, StateError},
};

/// Messages between two ledger writes: what a crash can make a pass redo
/// (never append twice: see the module docs).
const RECORD_EVERY: u64 = 100;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Messages on OLD.
    pub messages: u64,
    /// Appended to NEW in this pass.
    pub appended: u64,
    /// Already on NEW (the ledger says so).
    pub skipped: u64,
    /// Found on NEW though the ledger did not list them (the ledger was
    /// lost, or a crash came between an APPEND and its record): recorded,
    /// not appended again.
    pub adopted: u64,
}

/// What identifies a message across stores when the ledger cannot say, as
/// imapsync does: Message-ID, INTERNALDATE and size.
type Fingerprint = (Vec<u8>, String, u32);

fn fingerprint(items: &[MessageDataItem<'_>]) -> Option<Fingerprint> {
    let mut id = None;
    let mut date = None;
    let mut size = None;
    for item in items {
        match item {
            MessageDataItem::BodyExt { data, .. } => {
                id = data.0.as_ref().map(|h| message_id(h.as_ref()));
            }
            MessageDataItem::InternalDate(d) => date = Some(format!("{d:?}")),
            MessageDataItem::Rfc822Size(n) => size = Some(*n),
            _ => {}
        }
    }
    Some((id?, date?, size?))
}

/// The Message-ID of a `Message-ID:` header block (unfolded, trimmed);
/// empty when there is none, which still pairs with date and size.
fn message_id(header: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(header);
    let unfolded = text.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("message-id")
                .then(|| value.trim().as_bytes().to_vec())
        })
        .unwrap_or_default()
}

/// UID, FLAGS, INTERNALDATE, RFC822.SIZE and the Message-ID header.
fn described() -> MacroOrMessageDataItemNames<'static> {
    MacroOrMessageDataItemNames::MessageDataItemNames(vec![
        MessageDataItemName::Uid,
        MessageDataItemName::Flags,
        MessageDataItemName::InternalDate,
        MessageDataItemName::Rfc822Size,
        MessageDataItemName::BodyExt {
            section: Some(Section::HeaderFields(
                None,
                Vec1::from(AString::try_from("MESSAGE-ID").expect("an atom")),
            )),
            partial: None,
            peek: true,
        },
    ])
}

/// The messages of the selected folder: (UID, their FETCH items).
async fn list(c: &mut Conn) -> Result<Vec<(u32, Vec<MessageDataItem<'static>>)>, CopyError> {
    let listed = c
        .run(CommandBody::Fetch {
            sequence_set: SequenceSet::try_from("1:*").expect("valid set"),
            macro_or_item_names: described(),
            uid: true,
        })
        .await?;
    Ok(listed
        .untagged
        .iter()
        .filter_map(|m| match ResponseCodec::new().decode(m).ok()?.1 {
            Response::Data(Data::Fetch { items, .. }) => {
                let items: Vec<MessageDataItem<'static>> = items
                    .into_inner()
                    .into_iter()
                    .map(IntoStatic::into_static)
                    .collect();
                let uid = items.iter().find_map(|i| match i {
                    MessageDataItem::Uid(u) => Some(u.get()),
                    _ => None,
                })?;
                Some((uid, items))
            }
            _ => None,
        })
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    State(#[from] StateError),
}

fn mailbox(name: &[u8]) -> Result<Mailbox<'static>, CopyError> {
    Mailbox::try_from(name.to_vec())
        .map_err(|_| CopyError::Protocol("a folder name that is no mailbox"))
}

/// Copies what of `route.old` is not on NEW yet into `route.new`.
pub async fn copy_folder(
    old: &mut Conn,
    new: &mut Conn,
    state: &State,
    user: &str,
    route: &Route,
) -> Result<Pass, FolderError> {
    let examined = old
        .run(CommandBody::Examine {
            mailbox: mailbox(&route.old)?,
        })
        .await?;
    if !examined.is_ok() {
        return Err(CopyError::Refused(examined.text()).into());
    }
    let uidvalidity = examined
        .untagged
        .iter()
        .find_map(|m| match ResponseCodec::new().decode(m).ok()?.1 {
            Response::Status(s) => match s.code() {
                Some(Code::UidValidity(v)) => Some(v.get()),
                _ => None,
            },
            _ => None,
        })
        .ok_or(CopyError::Protocol("EXAMINE without UIDVALIDITY"))?;
    // NEW's folder: reused when it exists, never renamed or emptied.
    let created = new
        .run(CommandBody::Create {
            mailbox: mailbox(&route.new)?,
        })
        .await?;
    if !created.is_ok() && !created.text().contains("[ALREADYEXISTS]") {
        return Err(CopyError::Refused(created.text()).into());
    }
    let old_name = String::from_utf8_lossy(&route.old).into_owned();
    let key = FolderKey {
        user,
        old_name: &old_name,
        uidvalidity,
    };
    let mut ledger = state.copied(&key).await?;
    let messages = list(old).await?;
    // What NEW's folder already holds that the ledger does not account for,
    // by fingerprint: found again rather than appended twice.
    let mut unaccounted: HashMap<Fingerprint, Vec<u32>> = HashMap::new();
    if messages.iter().any(|(uid, _)| !ledger.contains(*uid)) {
        let examined = new
            .run(CommandBody::Examine {
                mailbox: mailbox(&route.new)?,
            })
            .await?;
        if !examined.is_ok() {
            return Err(CopyError::Refused(examined.text()).into());
        }
        // NEW UIDs the ledger accounts for, as runs (never one per message).
        let mut recorded: Vec<(u32, u32)> = ledger
            .runs()
            .map(|r| (r.new_first, r.new_first + (r.last - r.first)))
            .collect();
        recorded.sort_unstable();
        let is_recorded = |uid: u32| {
            let i = recorded.partition_point(|(first, _)| *first <= uid);
            i > 0 && uid <= recorded[i - 1].1
        };
        for (uid, items) in list(new).await? {
            if let Some(f) = fingerprint(&items).filter(|_| !is_recorded(uid)) {
                unaccounted.entry(f).or_default().push(uid);
            }
        }
    }
    let mut pass = Pass::default();
    let mut since_record = 0;
    for (uid, items) in &messages {
        let uid = *uid;
        pass.messages += 1;
        if ledger.contains(uid) {
            pass.skipped += 1;
            continue;
        }
        if let Some(found) = fingerprint(items)
            .and_then(|f| unaccounted.get_mut(&f))
            .and_then(Vec::pop)
        {
            ledger.insert(uid, found);
            pass.adopted += 1;
            since_record += 1;
            continue;
        }
        let args = reply::append_args(items);
        match old.copy_to(new, uid, &route.new, &args).await? {
            Some(new_uid) => {
                ledger.insert(uid, new_uid.get());
                pass.appended += 1;
                since_record += 1;
            }
            // Expunged on OLD since the listing: nothing to copy.
            None => continue,
        }
        if since_record >= RECORD_EVERY {
            state.record(&key, &ledger).await?;
            since_record = 0;
        }
    }
    if since_record > 0 {
        state.record(&key, &ledger).await?;
    }
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::message_id;

    #[test]
    fn message_ids_are_found_folded_or_not() {
        assert_eq!(message_id(b"Message-ID: <a@b>\r\n\r\n"), b"<a@b>");
        assert_eq!(
            message_id(b"message-id:\r\n <folded@x>\r\n\r\n"),
            b"<folded@x>"
        );
        assert_eq!(message_id(b"\r\n"), b"");
    }
}
