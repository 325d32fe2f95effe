//! One pass over all of one user's OLD folders, as `ferry migrate` runs it:
//! both stores logged in to as the configuration says (a master user or a
//! token: the copier never has a user's password), OLD's folders mapped,
//! each copied.

use std::time::Duration;

use super::{
    conn::{Conn, CopyError},
    folder::{FolderError, Pass, copy_folder},
    mapping::{Listed, plan},
};
use crate::{
    config::Config,
    identity::LoginMode,
    namespace::{NameMap, Store},
    oauth::Tokens,
    session::Credentials,
    state::State,
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
}

/// What happened to one folder.
pub struct FolderDone {
    /// The client's name on NEW, for people.
    pub name: String,
    pub pass: Pass,
}

/// Copies what of `user`'s OLD mail is not on NEW yet; `progress` hears of
/// each folder as it is done.
pub async fn migrate_user(
    config: &Config,
    state: &State,
    tokens: &Tokens,
    user: &str,
    mut progress: impl FnMut(&FolderDone),
) -> Result<Pass, UserError> {
    let mut conns = Vec::new();
    for store in [Store::Old, Store::New] {
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
        conns.push(Conn::open(&target, store, &auth, tokens, timeout).await?);
    }
    let [mut old, mut new]: [Conn; 2] = conns.try_into().ok().expect("two stores");
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
    let mut total = Pass::default();
    for route in &routes {
        let pass = copy_folder(&mut old, &mut new, state, user, route).await?;
        progress(&FolderDone {
            name: crate::mutf7::decode(&route.new).unwrap_or_default(),
            pass,
        });
        total.messages += pass.messages;
        total.appended += pass.appended;
        total.skipped += pass.skipped;
        total.adopted += pass.adopted;
    }
    for c in [&mut old, &mut new] {
        let _ = c
            .run(imap_codec::imap_types::command::CommandBody::Logout)
            .await;
    }
    Ok(total)
}

/// A store's folders: LIST "" "*".
async fn listed(c: &mut Conn) -> Result<Vec<Listed>, CopyError> {
    use imap_codec::{
        ResponseCodec,
        decode::Decoder,
        imap_types::{
            command::CommandBody,
            mailbox::{ListMailbox, Mailbox},
            response::{Data, Response},
        },
    };
    let answer = c
        .run(CommandBody::List {
            reference: "".try_into().expect("empty reference"),
            mailbox_wildcard: ListMailbox::try_from("*").expect("a wildcard"),
        })
        .await?;
    Ok(answer
        .untagged
        .iter()
        .filter_map(|m| match ResponseCodec::new().decode(m).ok()?.1 {
            Response::Data(Data::List { items, mailbox, .. }) => Some(Listed {
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
