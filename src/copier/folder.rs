//! One pass over one OLD folder: what the ledger does not list is streamed
//! into its NEW folder, message by message, and recorded under the UID NEW
//! gave it (APPENDUID). A pass that is interrupted and run again appends
//! nothing twice: the ledger is written every [`RECORD_EVERY`] messages and
//! at the end, in one transaction each.

use imap_codec::{
    ResponseCodec,
    decode::Decoder,
    imap_types::{
        command::CommandBody,
        fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
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
    let listed = old
        .run(CommandBody::Fetch {
            sequence_set: SequenceSet::try_from("1:*").expect("valid set"),
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(vec![
                MessageDataItemName::Uid,
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
            ]),
            uid: true,
        })
        .await?;
    let mut pass = Pass::default();
    let mut since_record = 0;
    for m in &listed.untagged {
        let Ok((_, Response::Data(Data::Fetch { items, .. }))) = ResponseCodec::new().decode(m)
        else {
            continue;
        };
        let items: Vec<MessageDataItem<'_>> = items.into_inner().into_iter().collect();
        let Some(uid) = items.iter().find_map(|i| match i {
            MessageDataItem::Uid(u) => Some(u.get()),
            _ => None,
        }) else {
            continue;
        };
        pass.messages += 1;
        if ledger.contains(uid) {
            pass.skipped += 1;
            continue;
        }
        let args = reply::append_args(&items);
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
