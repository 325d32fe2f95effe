//! One pass over all of one user's OLD folders: both stores logged in to as
//! the configuration says (a master user or a token: the copier never has a
//! user's password), OLD's folders mapped, each copied, and the user's
//! migration record in the state store kept current for `ferry migration
//! status`, the admin API and the metrics.

use std::time::{Duration, Instant};

use imap_codec::imap_types::command::CommandBody;

use super::{
    Job,
    conn::{Conn, CopyError},
    folder::{FolderError, Pass, Verify, copy_folder},
    mapping::{Listed, Route, plan},
};
use crate::{
    identity::LoginMode,
    namespace::{NameMap, Store},
    session::Credentials,
    state::{StateError, UserRecord, UserState, lease::Lease, migration::now},
};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(
        "the copier logs in on the user's behalf: give it a master user or a token in [copier.{0}_login] (or backends.{0}.login)"
    )]
    NeedsIdentity(&'static str),
    #[error("backends.{0}: {1}")]
    Target(&'static str, String),
    #[error("{0}")]
    Copy(#[from] CopyError),
    #[error("{0}")]
    Folder(#[from] FolderError),
    #[error("{0}")]
    State(#[from] StateError),
    /// Another instance (or `ferry migrate`) is copying the user.
    #[error("{} is copying this user (its lease runs until {} ms after the epoch unless renewed)", .0.holder, .0.expires_ms)]
    Leased(Lease),
    /// The lease lapsed under a running pass (the state store was out of
    /// reach for longer than the lease, or another took the user over):
    /// the pass stopped, and whoever holds the lease now goes on.
    #[error("the lease on copying this user was lost ({0}); the pass stopped")]
    LeaseLost(String),
}

impl UserError {
    /// The kind of failure, for metrics (a closed set).
    pub fn kind(&self) -> &'static str {
        let copy = match self {
            UserError::NeedsIdentity(_) | UserError::Target(..) => return "config",
            UserError::State(_) | UserError::Folder(FolderError::State(_)) => return "state",
            UserError::Leased(_) => return "leased",
            UserError::LeaseLost(_) => return "lease_lost",
            UserError::Copy(c) | UserError::Folder(FolderError::Copy(c)) => c,
        };
        match copy {
            CopyError::Login(_) => "login",
            CopyError::Io(_) => "io",
            CopyError::Protocol(_) => "protocol",
            CopyError::Refused(t) if super::pace::is_throttling(t) => "throttled",
            CopyError::Refused(_) => "refused",
        }
    }
}

/// What a pass tells whoever watches it.
pub enum Event<'a> {
    /// The folders to copy and how many messages OLD has in them.
    Planned { folders: usize, messages: u64 },
    /// One of OLD's messages is done (copied or found on NEW), of this size.
    Message { bytes: u64 },
    /// A folder is done.
    Folder(&'a FolderDone),
}

/// What happened to one folder.
pub struct FolderDone {
    /// The client's name on NEW, for people.
    pub name: String,
    pub pass: Pass,
}

/// Copies what of `user`'s OLD mail is not on NEW yet (see
/// [`super::folder::copy_folder`]), recording the user's migration state as
/// it goes: `copying`, then `synced` or `verified`, or `failed` with the
/// error. Only while holding the user's lease (`state::lease`): a user
/// another holds is `Leased`, untouched.
pub async fn migrate_user(
    job: &Job<'_>,
    user: &str,
    progress: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Pass, UserError> {
    let ttl = Duration::from_secs(job.config.copier.lease_secs.max(1));
    if let Err(lease) = job.state.take_lease(user, job.holder, ttl).await? {
        return Err(UserError::Leased(lease));
    }
    let result = tokio::select! {
        done = copy_user(job, user, progress) => done,
        lost = keep_lease(job, user, ttl) => Err(lost),
    };
    // A lost lease is someone else's now.
    if !matches!(result, Err(UserError::LeaseLost(_)))
        && let Err(e) = job.state.release_lease(user, job.holder).await
    {
        tracing::warn!(user, error = %e, "cannot give back the lease on copying a user (it lapses by itself)");
    }
    result
}

/// Renews the lease every third of `ttl`; returns once it is lost.
async fn keep_lease(job: &Job<'_>, user: &str, ttl: Duration) -> UserError {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        match job.state.take_lease(user, job.holder, ttl).await {
            Ok(Ok(())) => renewed = Instant::now(),
            Ok(Err(lease)) => return UserError::LeaseLost(format!("{} holds it", lease.holder)),
            // Past the lease another may have taken the user: stop.
            Err(e) if renewed.elapsed() >= ttl => {
                return UserError::LeaseLost(format!("cannot renew: {e}"));
            }
            Err(e) => tracing::warn!(user, error = %e, "cannot renew the lease on copying a user"),
        }
    }
}

/// One pass over `user`, recorded, under the lease.
async fn copy_user(
    job: &Job<'_>,
    user: &str,
    progress: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Pass, UserError> {
    let mut record = job
        .state
        .migration(user)
        .await?
        .unwrap_or_else(|| UserRecord::new(user));
    let result = pass(job, user, &mut record, progress).await;
    match &result {
        Ok(p) => {
            let folders = job.state.migration_folders(user).await?;
            record.state = if !folders.is_empty() && folders.iter().all(|f| f.verified) {
                UserState::Verified
            } else {
                UserState::Synced
            };
            record.differences = p.differences.len() as u64;
            record.expunged_on_old = p.expunged_on_old;
            record.last_pass = Some(now());
        }
        Err(e) => {
            record.state = UserState::Failed;
            record.error = Some(e.to_string());
        }
    }
    job.state.put_migration(&record).await?;
    result
}

async fn pass(
    job: &Job<'_>,
    user: &str,
    record: &mut UserRecord,
    progress: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Pass, UserError> {
    let config = job.config;
    let (mut old, mut new) = (
        log_in(job, user, Store::Old).await?,
        log_in(job, user, Store::New).await?,
    );
    let ns = &config.namespace;
    let names = NameMap::new(
        &ns.old_prefix,
        ns.delimiter,
        old.layout.clone(),
        new.layout.clone(),
    );
    let old_listed = listed(&mut old).await?;
    let new_listed = listed(&mut new).await?;
    let routes = plan(
        config.copier.mode,
        &names,
        &config.copier.map,
        &old_listed,
        &new_listed,
    );
    let mut messages = 0;
    for route in &routes {
        messages += status_messages(&mut old, route).await?;
    }
    progress(Event::Planned {
        folders: routes.len(),
        messages,
    });
    // `copying` once both stores let the copier in and OLD's folders are
    // counted: a pass that cannot log in never looks like it runs.
    *record = UserRecord {
        state: UserState::Copying,
        error: None,
        folders: routes.len() as u64,
        folders_done: 0,
        messages,
        messages_done: 0,
        bytes_done: 0,
        ..record.clone()
    };
    job.state.put_migration(record).await?;
    let priors = job.state.migration_folders(user).await?;
    let mut total = Pass {
        verified: job.options.verify != Verify::No,
        ..Pass::default()
    };
    let mut estimate: u64 = routes
        .iter()
        .filter_map(|r| {
            let name = String::from_utf8_lossy(&r.old);
            priors.iter().find(|p| p.old_name == name).map(|p| p.bytes)
        })
        .sum();
    for route in &routes {
        let old_name = String::from_utf8_lossy(&route.old);
        let prior = priors.iter().find(|p| p.old_name == old_name);
        let pass = copy_folder(&mut old, &mut new, job, record, route, prior, &mut |b| {
            progress(Event::Message { bytes: b })
        })
        .await?;
        total.add(&pass);
        total.verified &= pass.verified;
        record.folders_done += 1;
        // The folders still to do count with what the last pass saw.
        estimate -= prior.map_or(0, |p| p.bytes);
        record.bytes = record.bytes_done + estimate;
        job.state.put_migration(record).await?;
        progress(Event::Folder(&FolderDone {
            name: crate::mutf7::decode(&route.new).unwrap_or_default(),
            pass,
        }));
    }
    record.messages = record.messages_done;
    record.bytes = record.bytes_done;
    mirror_subscriptions(&mut old, &mut new, &routes).await?;
    for c in [&mut old, &mut new] {
        let _ = c.run(CommandBody::Logout).await;
    }
    Ok(total)
}

/// A connection to `store` as the copier logs in there.
async fn log_in(job: &Job<'_>, user: &str, store: Store) -> Result<Conn, UserError> {
    let config = job.config;
    let backend = config.backend(store);
    let login = config.copier.login(store, &config.backends);
    if login.mode == LoginMode::Client {
        return Err(UserError::NeedsIdentity(store.as_str()));
    }
    let target = crate::server::backend_target(backend)
        .map_err(|e| UserError::Target(store.as_str(), e.to_string()))?;
    let who = Credentials {
        user: user.as_bytes().to_vec(),
        password: Vec::new(),
        bearer: None,
    };
    let auth = login
        .auth_for(&who)
        .ok_or(UserError::NeedsIdentity(store.as_str()))?;
    let timeout = Duration::from_secs(config.limits.backend_connect_timeout_secs);
    Ok(Conn::open(&target, store, &auth, job.tokens, timeout).await?)
}

/// Subscribes on NEW the copies (under the merged view's own names) of
/// OLD's subscribed folders: what LSUB shows once the merged view serves
/// `Old/` from the copies, and what the user keeps at cutover to `new`.
async fn mirror_subscriptions(
    old: &mut Conn,
    new: &mut Conn,
    routes: &[Route],
) -> Result<(), CopyError> {
    use imap_codec::imap_types::mailbox::Mailbox;
    let subscribed = listed_by(old, true).await?;
    for route in routes.iter().filter(|r| r.servable) {
        if subscribed.iter().any(|s| s.name == route.old) {
            let mailbox = Mailbox::try_from(route.new.clone())
                .map_err(|_| CopyError::Protocol("a folder name that is no mailbox"))?;
            // Refusals do not fail the pass: a subscription is a nicety.
            let _ = new.run(CommandBody::Subscribe { mailbox }).await?;
        }
    }
    Ok(())
}

/// How many messages OLD's folder holds (STATUS MESSAGES), for progress.
async fn status_messages(old: &mut Conn, route: &Route) -> Result<u64, CopyError> {
    use imap_codec::{
        ResponseCodec,
        decode::Decoder,
        imap_types::{
            mailbox::Mailbox,
            response::{Data, Response},
            status::{StatusDataItem, StatusDataItemName},
        },
    };
    let mailbox = Mailbox::try_from(route.old.clone())
        .map_err(|_| CopyError::Protocol("a folder name that is no mailbox"))?;
    let answer = old
        .run(CommandBody::Status {
            mailbox,
            item_names: vec![StatusDataItemName::Messages].into(),
        })
        .await?;
    Ok(answer
        .untagged
        .iter()
        .find_map(|m| match ResponseCodec::new().decode(m).ok()?.1 {
            Response::Data(Data::Status { items, .. }) => items.iter().find_map(|i| match i {
                StatusDataItem::Messages(n) => Some(u64::from(*n)),
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or(0))
}

/// A store's folders: LIST "" "*" (or LSUB: the subscribed ones).
async fn listed(c: &mut Conn) -> Result<Vec<Listed>, CopyError> {
    listed_by(c, false).await
}

async fn listed_by(c: &mut Conn, lsub: bool) -> Result<Vec<Listed>, CopyError> {
    use imap_codec::{
        ResponseCodec,
        decode::Decoder,
        imap_types::{
            mailbox::{ListMailbox, Mailbox},
            response::{Data, Response},
        },
    };
    let (reference, mailbox_wildcard) = (
        Mailbox::try_from("").expect("empty reference"),
        ListMailbox::try_from("*").expect("a wildcard"),
    );
    let answer = c
        .run(if lsub {
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            }
        } else {
            CommandBody::List {
                reference,
                mailbox_wildcard,
            }
        })
        .await?;
    Ok(answer
        .untagged
        .iter()
        .filter_map(|m| match ResponseCodec::new().decode(m).ok()?.1 {
            Response::Data(
                Data::List { items, mailbox, .. } | Data::Lsub { items, mailbox, .. },
            ) => Some(Listed {
                name: match mailbox {
                    Mailbox::Inbox => b"INBOX".to_vec(),
                    Mailbox::Other(o) => o.as_ref().to_vec(),
                },
                attributes: items.iter().map(ToString::to_string).collect(),
            }),
            _ => None,
        })
        .collect())
}
