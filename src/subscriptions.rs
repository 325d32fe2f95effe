//! Subscriptions to `Old/` folders, which neither store can keep: OLD is never
//! written and NEW refuses to subscribe names it does not hold.
//!
//! Each user's choices are a small map `client name → subscribed`; `false`
//! hides one of OLD's own subscriptions from LSUB. They live in the state store
//! (`crate::state::subscriptions`). The session core is synchronous and must
//! never wait for a database, so every choice is loaded into memory at start
//! (one query); SUBSCRIBE and UNSUBSCRIBE update that copy and queue the row
//! for one writer task, which writes rows in the order they were made.
//! Shutdown waits until the queue is written.
//!
//! Instances sharing PostgreSQL write only the rows that changed, so none
//! loses another's; each row keeps the latest choice by when it was made.
//! After a write the writer tells the fleet (`crate::fleet`), and every
//! instance reads that user's rows again: a SUBSCRIBE on one instance shows
//! in LSUB on the others a moment later. Choices of this instance not
//! written yet stay on top of what is read back.
//!
//! Before the state store, choices were one file per user in
//! `namespace.subscriptions_dir`; those files are imported once.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use thiserror::Error;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    fleet::{Fleet, Note},
    state::{State, StateError, subscriptions::Subscription},
};

/// A user's `Old/` subscription choices, by client-visible name.
pub type Choices = BTreeMap<Vec<u8>, bool>;

/// The marker in `ferry_imports` once `subscriptions_dir` has been imported.
const IMPORT: &str = "subscriptions_dir";

#[derive(Debug, Error)]
pub enum SubscriptionError {
    /// The store keeps TEXT; the session only passes names that decode as
    /// modified UTF-7, so this is a client's odd user name at most.
    #[error("the {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("Ferry is shutting down: subscriptions are no longer written")]
    Closed,
}

#[derive(Debug, Error)]
pub enum OpenError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error("cannot import namespace.subscriptions_dir {}: {source}", dir.display())]
    Import { dir: PathBuf, source: io::Error },
}

/// Where changes go.
#[derive(Debug, Default)]
enum Queue {
    /// No store behind the cache: benches, fuzzing, the session's own tests.
    #[default]
    Memory,
    /// To the writer task.
    Open(mpsc::UnboundedSender<Subscription>),
    /// Flushed at shutdown: further changes are refused.
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    cache: HashMap<Vec<u8>, Choices>,
    queue: Queue,
    /// Choices queued and not written yet, by user and name: how many, and
    /// the latest.
    pending: HashMap<Vec<u8>, Pending>,
}

/// One user's unwritten choices, by name: how many are queued, the latest.
type Pending = BTreeMap<Vec<u8>, (u32, bool)>;

impl Inner {
    /// The user's choices as read from the store, with this instance's
    /// unwritten ones on top.
    fn replace(&mut self, user: &[u8], mut choices: Choices) {
        if let Some(pending) = self.pending.get(user) {
            for (name, (_, subscribed)) in pending {
                choices.insert(name.clone(), *subscribed);
            }
        }
        if choices.is_empty() {
            self.cache.remove(user);
        } else {
            self.cache.insert(user.to_vec(), choices);
        }
    }

    /// One queued choice was written.
    fn written(&mut self, user: &[u8], name: &[u8]) {
        if let Some(names) = self.pending.get_mut(user) {
            if let Some((n, _)) = names.get_mut(name) {
                *n -= 1;
                if *n == 0 {
                    names.remove(name);
                }
            }
            if names.is_empty() {
                self.pending.remove(user);
            }
        }
    }
}

/// Every user's choices, shared by all sessions of one instance.
#[derive(Debug, Default)]
pub struct Subscriptions {
    // One lock for the cache and the queue, so rows are queued in the order
    // the cache changed.
    inner: Arc<Mutex<Inner>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Where every user's choices are read again from (`None`: memory only).
    state: Option<Arc<State>>,
}

impl Subscriptions {
    /// Imports `subscriptions_dir` if it was never imported, loads every
    /// choice and starts the writer task (on the current runtime).
    pub async fn open(
        state: Arc<State>,
        import_from: Option<&Path>,
        fleet: Arc<Fleet>,
    ) -> Result<Self, OpenError> {
        if let Some(dir) = import_from {
            import(&state, dir).await?;
        }
        let mut cache: HashMap<Vec<u8>, Choices> = HashMap::new();
        for s in state.subscriptions().await? {
            cache
                .entry(s.user.into_bytes())
                .or_default()
                .insert(s.name.into_bytes(), s.subscribed);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Mutex::new(Inner {
            cache,
            queue: Queue::Open(tx),
            pending: HashMap::new(),
        }));
        let writer = tokio::spawn(write_behind(state.clone(), rx, inner.clone(), fleet));
        Ok(Self {
            inner,
            writer: Mutex::new(Some(writer)),
            state: Some(state),
        })
    }

    /// Reads the user's choices again (another instance changed them).
    pub async fn refresh(&self, user: &str) {
        let Some(state) = &self.state else { return };
        match state.user_subscriptions(user).await {
            Ok(rows) => {
                let choices = rows
                    .into_iter()
                    .map(|r| (r.name.into_bytes(), r.subscribed))
                    .collect();
                lock(&self.inner).replace(user.as_bytes(), choices);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read a user's Old/ subscriptions again"),
        }
    }

    /// Reads every user's choices again; false if the store could not be read.
    pub async fn refresh_all(&self) -> bool {
        let Some(state) = &self.state else {
            return true;
        };
        let rows = match state.subscriptions().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Old/ subscriptions again");
                return false;
            }
        };
        let mut all: HashMap<Vec<u8>, Choices> = HashMap::new();
        for r in rows {
            all.entry(r.user.into_bytes())
                .or_default()
                .insert(r.name.into_bytes(), r.subscribed);
        }
        let mut inner = lock(&self.inner);
        let users: Vec<Vec<u8>> = inner.cache.keys().chain(all.keys()).cloned().collect();
        for user in users {
            let choices = all.remove(&user).unwrap_or_default();
            inner.replace(&user, choices);
        }
        true
    }

    /// The user's choices.
    pub fn get(&self, user: &[u8]) -> Choices {
        self.lock().cache.get(user).cloned().unwrap_or_default()
    }

    /// Records that `name` is (un)subscribed for `user`: at once for this
    /// instance's sessions, in the store shortly after.
    pub fn set(&self, user: &[u8], name: &[u8], subscribed: bool) -> Result<(), SubscriptionError> {
        let text = |b: &[u8], what| {
            String::from_utf8(b.to_vec()).map_err(|_| SubscriptionError::NotUtf8(what))
        };
        let row = Subscription {
            user: text(user, "user name")?,
            name: text(name, "mailbox name")?,
            subscribed,
            at: now_us(),
        };
        let mut inner = self.lock();
        match &inner.queue {
            Queue::Memory => {}
            Queue::Open(tx) => {
                tx.send(row).map_err(|_| SubscriptionError::Closed)?;
                let slot = inner
                    .pending
                    .entry(user.to_vec())
                    .or_default()
                    .entry(name.to_vec())
                    .or_insert((0, subscribed));
                *slot = (slot.0 + 1, subscribed);
            }
            Queue::Closed => return Err(SubscriptionError::Closed),
        }
        inner
            .cache
            .entry(user.to_vec())
            .or_default()
            .insert(name.to_vec(), subscribed);
        Ok(())
    }

    /// Refuses further changes and waits until every queued one is written.
    pub async fn flush(&self) {
        {
            let mut inner = self.lock();
            if matches!(inner.queue, Queue::Open(_)) {
                // Dropping the sender ends the writer once the queue is empty.
                inner.queue = Queue::Closed;
            }
        }
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A panic elsewhere while holding the lock leaves plain data behind.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// Now, in microseconds since the Unix epoch: when a choice was made.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Writes queued rows one at a time, in order, and tells the fleet after
/// each. A failed row is logged and dropped: this instance shows it until
/// the user's choices are next read again.
async fn write_behind(
    state: Arc<State>,
    mut rx: mpsc::UnboundedReceiver<Subscription>,
    inner: Arc<Mutex<Inner>>,
    fleet: Arc<Fleet>,
) {
    while let Some(row) = rx.recv().await {
        match state.set_subscription(&row).await {
            Ok(()) => fleet.send(Note::Subscriptions {
                user: row.user.clone(),
            }),
            Err(e) => tracing::warn!(
                user = %row.user,
                mailbox = %row.name,
                error = %e,
                "cannot store an Old/ subscription; kept in memory for now"
            ),
        }
        lock(&inner).written(row.user.as_bytes(), row.name.as_bytes());
    }
}

/// Imports the per-user files of `dir` into the store, unless done before.
/// A missing directory imports nothing and is looked at again next start.
async fn import(state: &State, dir: &Path) -> Result<(), OpenError> {
    if state.imported(IMPORT).await? {
        tracing::debug!(dir = %dir.display(), "subscriptions_dir already imported; not read");
        return Ok(());
    }
    let path = dir.to_path_buf();
    let read = tokio::task::spawn_blocking(move || read_files(&path))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
    let files = match read {
        Ok(Some(files)) => files,
        Ok(None) => {
            tracing::info!(dir = %dir.display(), "subscriptions_dir does not exist: nothing to import");
            return Ok(());
        }
        Err(source) => {
            return Err(OpenError::Import {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if state.import_subscriptions(IMPORT, at, &files.rows).await? {
        tracing::info!(
            dir = %dir.display(),
            users = files.users,
            subscriptions = files.rows.len(),
            "imported Old/ subscriptions into the state store; subscriptions_dir is no longer used"
        );
    } else {
        tracing::info!(dir = %dir.display(), "subscriptions_dir was imported by another instance");
    }
    Ok(())
}

/// What a `subscriptions_dir` holds.
struct Files {
    rows: Vec<Subscription>,
    users: usize,
}

/// Reads every `<hex user>.subscriptions` file; `None` if `dir` is missing.
fn read_files(dir: &Path) -> io::Result<Option<Files>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut files = Files {
        rows: Vec::new(),
        users: 0,
    };
    for entry in entries {
        let path = entry?.path();
        // Anything else (a temporary file left by a crash) is not a user's.
        let Some(user) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".subscriptions"))
            .and_then(unhex)
        else {
            continue;
        };
        let Ok(user) = String::from_utf8(user) else {
            tracing::warn!(file = %path.display(), "user name is not UTF-8: not imported");
            continue;
        };
        for (name, subscribed) in parse(&std::fs::read(&path)?) {
            match String::from_utf8(name) {
                Ok(name) => files.rows.push(Subscription {
                    user: user.clone(),
                    name,
                    subscribed,
                    at: 0,
                }),
                Err(_) => {
                    tracing::warn!(file = %path.display(), "mailbox name is not UTF-8: not imported")
                }
            }
        }
        files.users += 1;
    }
    Ok(Some(files))
}

/// The file name's user: hex-encoded, so no user name could reach outside
/// the directory or collide with another after case folding.
fn unhex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One choice per line: `+name` or `-name` (names are modified UTF-7, never
/// CR or LF).
fn parse(text: &[u8]) -> Choices {
    text.split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter_map(|line| match line.split_first() {
            Some((b'+', name)) if !name.is_empty() => Some((name.to_vec(), true)),
            Some((b'-', name)) if !name.is_empty() => Some((name.to_vec(), false)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_choices_are_per_user() {
        let s = Subscriptions::default();
        s.set(b"alice", b"Old/Sent", true).unwrap();
        s.set(b"alice", b"Old/INBOX", false).unwrap();
        let a = s.get(b"alice");
        assert_eq!(a.get(&b"Old/Sent"[..]), Some(&true));
        assert_eq!(a.get(&b"Old/INBOX"[..]), Some(&false));
        assert!(s.get(b"bob").is_empty());
    }

    #[test]
    fn garbage_files_read_as_nothing_harmful() {
        let c = parse(b"+\n-\nnot a line\n\n+Old/A\r\n+Old/B");
        assert_eq!(c.len(), 2);
        assert!(c.contains_key(&b"Old/A"[..]) && c.contains_key(&b"Old/B"[..]));
        assert_eq!(unhex("616c696365"), Some(b"alice".to_vec()));
        assert_eq!(unhex("2e2E2f"), Some(b"../".to_vec()));
        for bad in ["", "616", "zz", "61 6"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }

    async fn state(dir: &Path) -> Arc<State> {
        let url = format!("sqlite://{}", dir.join("state.db").display());
        Arc::new(State::open(&url).await.unwrap())
    }

    /// A user's file as Ferry wrote it before the state store.
    fn write_user_file(dir: &Path, user: &[u8], text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let hex: String = user.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(dir.join(format!("{hex}.subscriptions")), text).unwrap();
    }

    #[tokio::test]
    async fn changes_reach_the_store_by_shutdown() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Subscriptions::open(state(tmp.path()).await, None, Fleet::alone())
            .await
            .unwrap();
        s.set(b"alice", b"Old/&U9dP4Xux-", true).unwrap();
        s.set(b"alice", b"Old/Sent", true).unwrap();
        s.set(b"alice", b"Old/Sent", false).unwrap();
        s.set(b"bob", b"Old/Sent", true).unwrap();
        s.flush().await;
        assert!(matches!(
            s.set(b"alice", b"Old/X", true),
            Err(SubscriptionError::Closed)
        ));
        let again = Subscriptions::open(state(tmp.path()).await, None, Fleet::alone())
            .await
            .unwrap();
        let c = again.get(b"alice");
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&b"Old/&U9dP4Xux-"[..]), Some(&true));
        assert_eq!(
            c.get(&b"Old/Sent"[..]),
            Some(&false),
            "the last change wins"
        );
        assert_eq!(again.get(b"bob").len(), 1);
        assert!(matches!(
            again.set(b"\xff", b"Old/X", true),
            Err(SubscriptionError::NotUtf8(_))
        ));
    }

    #[tokio::test]
    async fn the_directory_is_imported_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("subscriptions");
        // Missing: nothing imported, and looked at again next time.
        let s = Subscriptions::open(state(tmp.path()).await, Some(&dir), Fleet::alone())
            .await
            .unwrap();
        s.flush().await;
        write_user_file(&dir, b"../../etc/passwd", "+Old/A\n-Old/Sent\n");
        write_user_file(&dir, b"bob", "+Old/B\n");
        std::fs::write(dir.join("626f62.tmp"), "+Old/Leftover\n").unwrap();
        let s = Subscriptions::open(state(tmp.path()).await, Some(&dir), Fleet::alone())
            .await
            .unwrap();
        let c = s.get(b"../../etc/passwd");
        assert_eq!(c.get(&b"Old/A"[..]), Some(&true));
        assert_eq!(c.get(&b"Old/Sent"[..]), Some(&false));
        assert_eq!(
            s.get(b"bob").into_keys().collect::<Vec<_>>(),
            [b"Old/B".to_vec()]
        );
        s.set(b"bob", b"Old/C", true).unwrap();
        s.flush().await;
        // Changed files are not read again; choices made since stay.
        write_user_file(&dir, b"bob", "-Old/B\n-Old/C\n+Old/D\n");
        let s = Subscriptions::open(state(tmp.path()).await, Some(&dir), Fleet::alone())
            .await
            .unwrap();
        let bob = s.get(b"bob");
        assert_eq!(bob.len(), 2);
        assert!(bob[&b"Old/B"[..]] && bob[&b"Old/C"[..]]);
    }
}
