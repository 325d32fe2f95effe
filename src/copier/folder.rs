//! One pass over one OLD folder: what the ledger does not list is streamed
//! into its NEW folder, in batches of one FETCH and one MULTIAPPEND where NEW
//! can (else message by message), and recorded under the UID NEW gave it
//! (APPENDUID); flag changes made on OLD since the last pass are
//! carried to the copies; messages expunged on OLD are reported (and removed
//! from NEW only when asked); a verification compares both sides.
//!
//! A pass that is interrupted and run again appends nothing twice: the
//! ledger is written after every batch (at most [`RECORD_EVERY`] messages)
//! and at the end, in one transaction each, and what NEW holds that the ledger misses is found by
//! fingerprint before anything is appended.

use std::collections::{BTreeMap, HashMap, HashSet};

use imap_codec::{
    ResponseCodec,
    decode::Decoder,
    imap_types::{
        IntoStatic,
        command::CommandBody,
        core::{AString, Vec1},
        fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section},
        flag::{Flag, FlagFetch, StoreResponse, StoreType},
        mailbox::Mailbox,
        response::{Code, Data, Response},
        sequence::SequenceSet,
    },
};

use super::{
    Job,
    conn::{Batch, Conn, CopyError, uid_ranges},
    mapping::Route,
    pace::Pace,
};
use crate::{
    caps::Cap,
    session::reply,
    state::{FolderKey, FolderRecord, StateError, UidMap, UserRecord, migration::now},
};

/// Messages between two ledger writes: what a crash can make a pass redo
/// (never append twice: see the module docs).
const RECORD_EVERY: u64 = 100;

/// A batch's size on OLD at most (a message larger than this is a batch of
/// its own): what a refused batch costs to fetch again, one message at a
/// time.
const BATCH_BYTES: u64 = 32 << 20;

/// UIDs per STORE or EXPUNGE command, to keep lines short.
const UIDS_PER_COMMAND: usize = 500;

/// How a pass checks its work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// Copy only.
    #[default]
    No,
    /// Counts, and per message size, Message-ID, INTERNALDATE and flags.
    Quick,
    /// …and the SHA-256 of both bodies.
    Full,
}

/// What a pass does beyond copying.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options {
    pub verify: Verify,
    /// Remove from NEW the copies of messages expunged on OLD.
    pub remove_expunged: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Messages on OLD, and their bytes.
    pub messages: u64,
    pub bytes: u64,
    /// Appended to NEW in this pass, and their bytes.
    pub appended: u64,
    pub appended_bytes: u64,
    /// Already on NEW (the ledger says so).
    pub skipped: u64,
    /// Found on NEW though the ledger did not list them (the ledger was
    /// lost, or a crash came between an APPEND and its record): recorded,
    /// not appended again.
    pub adopted: u64,
    /// Copies whose flags were set to OLD's again.
    pub flags_carried: u64,
    /// Copied messages since expunged on OLD…
    pub expunged_on_old: u64,
    /// …and of those, removed from NEW now.
    pub removed: u64,
    /// What a verification found different (never fixed by it).
    pub differences: Vec<Difference>,
    /// A verification ran and found nothing different.
    pub verified: bool,
}

impl Pass {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Pass) {
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.appended += other.appended;
        self.appended_bytes += other.appended_bytes;
        self.skipped += other.skipped;
        self.adopted += other.adopted;
        self.flags_carried += other.flags_carried;
        self.expunged_on_old += other.expunged_on_old;
        self.removed += other.removed;
        self.differences.extend(other.differences.iter().cloned());
    }
}

/// One message that differs between OLD and NEW.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// OLD's folder (wire name).
    pub folder: String,
    pub old_uid: u32,
    pub new_uid: Option<u32>,
    pub what: &'static str,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let folder = crate::mutf7::decode(self.folder.as_bytes()).unwrap_or_default();
        match self.new_uid {
            Some(n) => write!(
                f,
                "{folder} UID {} (NEW UID {n}): {}",
                self.old_uid, self.what
            ),
            None => write!(f, "{folder} UID {}: {}", self.old_uid, self.what),
        }
    }
}

/// What identifies a message across stores when the ledger cannot say, as
/// imapsync does: Message-ID, INTERNALDATE and size.
type Fingerprint = (Vec<u8>, String, u32);

/// One message as a listing shows it.
struct Msg {
    uid: u32,
    items: Vec<MessageDataItem<'static>>,
    size: u32,
    modseq: u64,
}

impl Msg {
    fn fingerprint(&self) -> Option<Fingerprint> {
        let mut id = None;
        let mut date = None;
        for item in &self.items {
            match item {
                MessageDataItem::BodyExt { data, .. } => {
                    id = data.0.as_ref().map(|h| message_id(h.as_ref()));
                }
                MessageDataItem::InternalDate(d) => date = Some(format!("{d:?}")),
                _ => {}
            }
        }
        Some((id?, date?, self.size))
    }

    /// The flags a copy carries: all but `\Recent`, which no APPEND or
    /// STORE may set.
    fn flags(&self) -> Vec<Flag<'static>> {
        self.items
            .iter()
            .find_map(|i| match i {
                MessageDataItem::Flags(f) => Some(
                    f.iter()
                        .filter_map(|f| match f {
                            FlagFetch::Flag(f) => Some(f.clone()),
                            FlagFetch::Recent => None,
                        })
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The flags as a set to compare (case does not tell flags apart).
    fn flag_set(&self) -> std::collections::BTreeSet<String> {
        self.flags()
            .iter()
            .map(|f| f.to_string().to_ascii_lowercase())
            .collect()
    }
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

/// UID, FLAGS, INTERNALDATE, RFC822.SIZE, the Message-ID header and, where
/// the store has CONDSTORE, MODSEQ.
fn described(modseq: bool) -> MacroOrMessageDataItemNames<'static> {
    let mut names = vec![
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
    ];
    if modseq {
        names.push(MessageDataItemName::ModSeq);
    }
    MacroOrMessageDataItemNames::MessageDataItemNames(names)
}

/// The messages of the selected folder, by UID.
async fn list(c: &mut Conn) -> Result<BTreeMap<u32, Msg>, CopyError> {
    let modseq = c.caps.has(Cap::Condstore);
    let listed = c
        .run(CommandBody::Fetch {
            sequence_set: SequenceSet::try_from("1:*").expect("valid set"),
            macro_or_item_names: described(modseq),
            uid: true,
            modifiers: Vec::new(),
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
                let mut msg = Msg {
                    uid: 0,
                    items: Vec::new(),
                    size: 0,
                    modseq: 0,
                };
                for item in &items {
                    match item {
                        MessageDataItem::Uid(u) => msg.uid = u.get(),
                        MessageDataItem::Rfc822Size(n) => msg.size = *n,
                        MessageDataItem::ModSeq(n) => msg.modseq = n.get(),
                        _ => {}
                    }
                }
                msg.items = items;
                (msg.uid != 0).then_some((msg.uid, msg))
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

/// `uids` as sequence sets of at most [`UIDS_PER_COMMAND`] UIDs, in ranges.
fn uid_sets(mut uids: Vec<u32>) -> Vec<SequenceSet> {
    uids.sort_unstable();
    uids.dedup();
    uids.chunks(UIDS_PER_COMMAND)
        .map(|chunk| {
            SequenceSet::try_from(uid_ranges(chunk).as_str()).expect("UIDs are a sequence set")
        })
        .collect()
}

/// Opens `name` on `c` read-only (EXAMINE) or read-write (SELECT) and
/// returns its UIDVALIDITY.
async fn open(c: &mut Conn, name: &[u8], write: bool) -> Result<u32, CopyError> {
    let mailbox = mailbox(name)?;
    let body = if write {
        CommandBody::Select {
            mailbox,
            parameters: Vec::new(),
        }
    } else {
        CommandBody::Examine {
            mailbox,
            parameters: Vec::new(),
        }
    };
    let opened = c.run(body).await?;
    if !opened.is_ok() {
        return Err(CopyError::Refused(opened.text()));
    }
    opened
        .untagged
        .iter()
        .find_map(|m| match ResponseCodec::new().decode(m).ok()?.1 {
            Response::Status(s) => match s.code() {
                Some(Code::UidValidity(v)) => Some(v.get()),
                _ => None,
            },
            _ => None,
        })
        .ok_or(CopyError::Protocol("SELECT or EXAMINE without UIDVALIDITY"))
}

/// Runs a command that must succeed.
async fn must(c: &mut Conn, body: CommandBody<'_>) -> Result<(), CopyError> {
    let answer = c.run(body).await?;
    if answer.is_ok() {
        Ok(())
    } else {
        Err(CopyError::Refused(answer.text()))
    }
}

/// NEW's side of a folder pass: its listing when one was needed, and
/// whether it is open for writing.
struct NewSide<'a> {
    conn: &'a mut Conn,
    name: &'a [u8],
    writable: bool,
}

impl NewSide<'_> {
    async fn listing(&mut self) -> Result<BTreeMap<u32, Msg>, CopyError> {
        if !self.writable {
            open(self.conn, self.name, false).await?;
        }
        list(self.conn).await
    }

    async fn writable(&mut self) -> Result<&mut Conn, CopyError> {
        if !self.writable {
            open(self.conn, self.name, true).await?;
            self.writable = true;
        }
        Ok(self.conn)
    }

    /// Sets each copy's flags: `(flags, NEW UIDs)`.
    async fn set_flags(
        &mut self,
        by_flags: Vec<(Vec<Flag<'static>>, Vec<u32>)>,
    ) -> Result<(), CopyError> {
        let c = self.writable().await?;
        for (flags, uids) in by_flags {
            for set in uid_sets(uids) {
                must(
                    c,
                    CommandBody::Store {
                        sequence_set: set,
                        kind: StoreType::Replace,
                        response: StoreResponse::Silent,
                        flags: flags.clone(),
                        uid: true,
                        modifiers: Vec::new(),
                    },
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Removes these copies (UIDPLUS' UID EXPUNGE: nothing else is expunged).
    async fn remove(&mut self, uids: Vec<u32>) -> Result<(), CopyError> {
        let c = self.writable().await?;
        if !c.caps.has(Cap::UidPlus) {
            return Err(CopyError::Protocol("removing copies needs UIDPLUS on NEW"));
        }
        for set in uid_sets(uids) {
            must(c, reply::mark_deleted(set.clone())).await?;
            must(c, CommandBody::ExpungeUid { sequence_set: set }).await?;
        }
        Ok(())
    }
}

/// Copies what of `route.old` is not on NEW yet into `route.new`, carries
/// OLD's flag changes since `prior` (the folder's record from the last
/// pass), and verifies if asked. `progress` hears of each OLD message done,
/// with its size; the user's `record` counts them too, written with the
/// ledger so `ferry migration status` moves while a large folder copies.
#[allow(clippy::too_many_arguments)]
pub async fn copy_folder(
    old: &mut Conn,
    new: &mut Conn,
    job: &Job<'_>,
    record: &mut UserRecord,
    route: &Route,
    prior: Option<&FolderRecord>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Pass, FolderError> {
    let (state, options, pace) = (job.state, job.options, job.pace);
    let user = record.user.clone();
    let user = user.as_str();
    let uidvalidity = open(old, &route.old, false).await?;
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
    // Flag changes on OLD since the last pass: by MODSEQ where OLD has
    // CONDSTORE, else every copy is compared with its original.
    let since = prior
        .filter(|p| p.uidvalidity == uidvalidity && old.caps.has(Cap::Condstore))
        .map_or(0, |p| p.highest_modseq);
    let mut compare: Vec<(u32, u32)> = messages
        .values()
        .filter(|m| since == 0 || m.modseq > since)
        .filter_map(|m| Some((m.uid, ledger.new_uid(m.uid)?)))
        .collect();
    let expunged: Vec<(u32, u32)> = ledger
        .runs()
        .flat_map(|r| (r.first..=r.last).map(move |o| (o, r.new_first + (o - r.first))))
        .filter(|(o, _)| !messages.contains_key(o))
        .collect();
    let mut side = NewSide {
        conn: new,
        name: &route.new,
        writable: false,
    };
    let unlisted = messages.keys().any(|uid| !ledger.contains(*uid));
    let news = if unlisted || !compare.is_empty() {
        side.listing().await?
    } else {
        BTreeMap::new()
    };
    // What NEW's folder already holds that the ledger does not account for,
    // by fingerprint: found again rather than appended twice.
    let mut unaccounted: HashMap<Fingerprint, Vec<u32>> = HashMap::new();
    if unlisted {
        let recorded = recorded_new_uids(&ledger);
        for msg in news.values().filter(|m| !recorded.contains(&m.uid)) {
            if let Some(f) = msg.fingerprint() {
                unaccounted.entry(f).or_default().push(msg.uid);
            }
        }
    }
    let mut pass = Pass::default();
    let mut since_record = 0;
    // What is to append, in UID order.
    let mut todo: Vec<&Msg> = Vec::new();
    for msg in messages.values() {
        let uid = msg.uid;
        pass.messages += 1;
        pass.bytes += u64::from(msg.size);
        if ledger.contains(uid) {
            pass.skipped += 1;
        } else if let Some(found) = msg
            .fingerprint()
            .and_then(|f| unaccounted.get_mut(&f))
            .and_then(Vec::pop)
        {
            ledger.insert(uid, found);
            compare.push((uid, found));
            pass.adopted += 1;
            since_record += 1;
        } else {
            todo.push(msg);
            continue;
        }
        progress(u64::from(msg.size));
        record.messages_done += 1;
        record.bytes_done += u64::from(msg.size);
        if since_record >= RECORD_EVERY {
            state.record(&key, &ledger).await?;
            state.put_migration(record).await?;
            since_record = 0;
        }
    }
    for batch in batches(&todo) {
        let mut appended = Vec::new();
        let result = append(old, side.conn, job, user, &route.new, batch, &mut appended).await;
        for (uid, new_uid) in appended {
            let size = messages.get(&uid).map_or(0, |m| u64::from(m.size));
            ledger.insert(uid, new_uid);
            pass.appended += 1;
            pass.appended_bytes += size;
            crate::metrics::migration_copied(1, size);
        }
        if let Err(e) = result {
            // What was appended before the error is recorded all the same.
            state.record(&key, &ledger).await?;
            return Err(e.into());
        }
        // Messages gone from OLD since the listing count as done too.
        for msg in batch {
            progress(u64::from(msg.size));
            record.messages_done += 1;
            record.bytes_done += u64::from(msg.size);
        }
        state.record(&key, &ledger).await?;
        state.put_migration(record).await?;
        since_record = 0;
    }
    if since_record > 0 {
        state.record(&key, &ledger).await?;
    }
    // OLD's flags onto the copies that lost step, grouped by flag set.
    let mut by_flags: BTreeMap<Vec<String>, (Vec<Flag<'static>>, Vec<u32>)> = BTreeMap::new();
    for (old_uid, new_uid) in compare {
        let (Some(o), Some(n)) = (messages.get(&old_uid), news.get(&new_uid)) else {
            continue;
        };
        if o.flag_set() != n.flag_set() {
            let entry = by_flags
                .entry(o.flag_set().into_iter().collect())
                .or_insert_with(|| (o.flags(), Vec::new()));
            entry.1.push(new_uid);
            pass.flags_carried += 1;
        }
    }
    if !by_flags.is_empty() {
        side.set_flags(by_flags.into_values().collect()).await?;
    }
    pass.expunged_on_old = expunged.len() as u64;
    if options.remove_expunged && !expunged.is_empty() {
        side.remove(expunged.iter().map(|(_, n)| *n).collect())
            .await?;
        for (o, _) in &expunged {
            ledger.remove(*o);
        }
        state.record(&key, &ledger).await?;
        pass.removed = expunged.len() as u64;
        pass.expunged_on_old = 0;
    }
    if options.verify != Verify::No {
        pass.differences = verify(old, &mut side, &old_name, &ledger, options.verify, pace).await?;
        pass.verified = pass.differences.is_empty();
    }
    let prior_verified = prior.is_some_and(|p| p.verified && p.uidvalidity == uidvalidity);
    let verified = if options.verify == Verify::No {
        // A pass that changed nothing keeps a verification's word.
        prior_verified && pass.appended == 0 && pass.adopted == 0 && pass.flags_carried == 0
    } else {
        pass.verified
    };
    state
        .put_migration_folder(&FolderRecord {
            user: user.to_string(),
            old_name,
            uidvalidity,
            new_name: String::from_utf8_lossy(&route.new).into_owned(),
            highest_modseq: messages
                .values()
                .map(|m| m.modseq)
                .max()
                .unwrap_or(0)
                .max(since),
            messages: pass.messages,
            bytes: pass.bytes,
            copied: messages.keys().filter(|u| ledger.contains(**u)).count() as u64,
            differences: pass.differences.len() as u64,
            verified,
            // Verified and just brought up to date: the merged view may
            // serve the folder from here on.
            served: route.servable && verified,
            checked: now(),
        })
        .await?;
    Ok(pass)
}

/// `todo` in runs of at most [`RECORD_EVERY`] messages and [`BATCH_BYTES`]
/// bytes, one message at least.
fn batches<'a>(todo: &'a [&'a Msg]) -> Vec<&'a [&'a Msg]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, msg) in todo.iter().enumerate() {
        let size = u64::from(msg.size);
        if i > start && (i - start >= RECORD_EVERY as usize || bytes + size > BATCH_BYTES) {
            out.push(&todo[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < todo.len() {
        out.push(&todo[start..]);
    }
    out
}

/// Appends `batch` to `dest` on `new`, adding to `appended` the `(OLD UID,
/// NEW UID)` of each message appended (one gone from OLD since the listing
/// is not), also when an error ends it part way. One
/// MULTIAPPEND where NEW takes it; one APPEND per message otherwise, or when
/// NEW refused the batch, so that one bad message does not hold up the
/// folder, and its own error is the pass's.
async fn append(
    old: &mut Conn,
    new: &mut Conn,
    job: &Job<'_>,
    user: &str,
    dest: &[u8],
    batch: &[&Msg],
    appended: &mut Vec<(u32, u32)>,
) -> Result<(), CopyError> {
    if new.takes_batches() {
        if let Some(activity) = job.activity {
            activity.copies_done(user).await;
        }
        job.pace
            .take(
                batch.len() as u64,
                batch.iter().map(|m| u64::from(m.size)).sum(),
            )
            .await;
        let args: Vec<_> = batch
            .iter()
            .map(|m| (m.uid, reply::append_args(&m.items)))
            .collect();
        match old.copy_batch(new, &args, dest).await? {
            Batch::Appended(pairs) => {
                appended.extend(pairs.into_iter().map(|(o, n)| (o, n.get())));
                return Ok(());
            }
            Batch::Refused(why) => tracing::warn!(
                user,
                messages = batch.len(),
                reason = %why,
                "a batch was refused; copying it one message at a time"
            ),
        }
    }
    for msg in batch {
        if let Some(activity) = job.activity {
            activity.copies_done(user).await;
        }
        job.pace.take(1, u64::from(msg.size)).await;
        let args = reply::append_args(&msg.items);
        // `None`: expunged on OLD since the listing, nothing to copy.
        if let Some(new_uid) = old.copy_to(new, msg.uid, dest, &args).await? {
            appended.push((msg.uid, new_uid.get()));
        }
    }
    Ok(())
}

/// NEW UIDs the ledger accounts for.
fn recorded_new_uids(ledger: &UidMap) -> HashSet<u32> {
    ledger
        .runs()
        .flat_map(|r| r.new_first..=r.new_first + (r.last - r.first))
        .collect()
}

/// Compares OLD's folder (selected on `old`) with its copy, message by
/// message, from fresh listings of both.
async fn verify(
    old: &mut Conn,
    side: &mut NewSide<'_>,
    folder: &str,
    ledger: &UidMap,
    how: Verify,
    pace: &Pace,
) -> Result<Vec<Difference>, CopyError> {
    let olds = list(old).await?;
    let news = side.listing().await?;
    let mut found = Vec::new();
    for o in olds.values() {
        let differ = |new_uid, what| Difference {
            folder: folder.to_string(),
            old_uid: o.uid,
            new_uid,
            what,
        };
        let Some(new_uid) = ledger.new_uid(o.uid) else {
            found.push(differ(None, "not copied"));
            continue;
        };
        let Some(n) = news.get(&new_uid) else {
            found.push(differ(Some(new_uid), "its copy is gone from NEW"));
            continue;
        };
        let (of, nf) = (o.fingerprint(), n.fingerprint());
        let what = if o.size != n.size {
            Some("size")
        } else if of.as_ref().map(|f| &f.0) != nf.as_ref().map(|f| &f.0) {
            Some("Message-ID")
        } else if of.as_ref().map(|f| &f.1) != nf.as_ref().map(|f| &f.1) {
            Some("INTERNALDATE")
        } else if o.flag_set() != n.flag_set() {
            Some("flags")
        } else {
            None
        };
        if let Some(what) = what {
            found.push(differ(Some(new_uid), what));
            continue;
        }
        if how == Verify::Full {
            pace.take(1, u64::from(o.size)).await;
            let a = old.body_digest(o.uid).await?;
            let b = side.conn.body_digest(new_uid).await?;
            if a.is_none() || a != b {
                found.push(differ(Some(new_uid), "body (SHA-256)"));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::{BATCH_BYTES, Msg, RECORD_EVERY, batches, message_id, uid_sets};

    fn msg(uid: u32, size: u32) -> Msg {
        Msg {
            uid,
            items: Vec::new(),
            size,
            modseq: 0,
        }
    }

    /// Batch sizes in messages.
    fn cut(msgs: &[Msg]) -> Vec<usize> {
        let todo: Vec<&Msg> = msgs.iter().collect();
        batches(&todo).iter().map(|b| b.len()).collect()
    }

    #[test]
    fn batches_hold_a_record_s_worth_of_messages_and_bounded_bytes() {
        let small: Vec<Msg> = (1..=250).map(|u| msg(u, 1000)).collect();
        assert_eq!(cut(&small), [100, 100, 50]);
        const { assert!(RECORD_EVERY == 100) };
        assert_eq!(cut(&[]), Vec::<usize>::new());
        // 12 MiB each: two fit, the third starts a batch; one over the
        // limit is a batch of its own.
        let mib = 1 << 20;
        let big = [
            msg(1, 12 * mib),
            msg(2, 12 * mib),
            msg(3, 12 * mib),
            msg(4, 40 * mib),
            msg(5, 10),
        ];
        const { assert!(BATCH_BYTES == 32 << 20) };
        assert_eq!(cut(&big), [2, 1, 1, 1]);
    }

    #[test]
    fn uid_sets_are_ranges() {
        let sets: Vec<String> = uid_sets(vec![7, 1, 2, 3, 5, 3])
            .iter()
            .map(|s| {
                let line = crate::session::reply::command(
                    b"t",
                    imap_codec::imap_types::command::CommandBody::ExpungeUid {
                        sequence_set: s.clone(),
                    },
                );
                String::from_utf8_lossy(&line).into_owned()
            })
            .collect();
        assert_eq!(sets, ["t UID EXPUNGE 1:3,5,7\r\n"]);
    }

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
