//! Where each user's migration stands, and each of their OLD folders: what
//! `ferry migration status`, the admin API and the metrics read, and what
//! the background copier picks its next user from.

use sqlx::Row;

use super::{State, StateError};

pub(super) const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS ferry_migration_users (
        user_name TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        paused BIGINT NOT NULL DEFAULT 0,
        folders BIGINT NOT NULL DEFAULT 0,
        folders_done BIGINT NOT NULL DEFAULT 0,
        messages BIGINT NOT NULL DEFAULT 0,
        messages_done BIGINT NOT NULL DEFAULT 0,
        bytes BIGINT NOT NULL DEFAULT 0,
        bytes_done BIGINT NOT NULL DEFAULT 0,
        differences BIGINT NOT NULL DEFAULT 0,
        expunged_on_old BIGINT NOT NULL DEFAULT 0,
        error TEXT,
        last_pass BIGINT,
        updated BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS ferry_migration_folders (
        user_name TEXT NOT NULL,
        old_name TEXT NOT NULL,
        uidvalidity BIGINT NOT NULL,
        new_name TEXT NOT NULL,
        highest_modseq BIGINT NOT NULL DEFAULT 0,
        messages BIGINT NOT NULL DEFAULT 0,
        bytes BIGINT NOT NULL DEFAULT 0,
        copied BIGINT NOT NULL DEFAULT 0,
        differences BIGINT NOT NULL DEFAULT 0,
        verified BIGINT NOT NULL DEFAULT 0,
        served BIGINT NOT NULL DEFAULT 0,
        checked BIGINT NOT NULL,
        PRIMARY KEY (user_name, old_name)
    )",
];

/// A user's migration, as the admin sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// Waiting for a first pass.
    Pending,
    /// A pass is running.
    Copying,
    /// The last pass finished: everything on OLD is on NEW.
    Synced,
    /// …and a verification found nothing that differs.
    Verified,
    /// The last pass stopped on an error (`error` says which).
    Failed,
}

impl UserState {
    pub const ALL: [UserState; 5] = [
        UserState::Pending,
        UserState::Copying,
        UserState::Synced,
        UserState::Verified,
        UserState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Pending => "pending",
            UserState::Copying => "copying",
            UserState::Synced => "synced",
            UserState::Verified => "verified",
            UserState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> UserState {
        UserState::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .unwrap_or(UserState::Pending)
    }
}

/// One user's migration: totals over their folders as of the last pass.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRecord {
    pub user: String,
    pub state: UserState,
    /// Paused by an admin: the background copier leaves the user alone.
    pub paused: bool,
    pub folders: u64,
    pub folders_done: u64,
    pub messages: u64,
    pub messages_done: u64,
    pub bytes: u64,
    pub bytes_done: u64,
    /// Messages that differ between OLD and their copy (last verification).
    pub differences: u64,
    /// Copied messages since expunged on OLD (kept on NEW unless removal
    /// was asked for).
    pub expunged_on_old: u64,
    pub error: Option<String>,
    /// When the last pass finished (Unix seconds).
    pub last_pass: Option<i64>,
    pub updated: i64,
}

impl UserRecord {
    pub fn new(user: &str) -> UserRecord {
        UserRecord {
            user: user.to_string(),
            state: UserState::Pending,
            paused: false,
            folders: 0,
            folders_done: 0,
            messages: 0,
            messages_done: 0,
            bytes: 0,
            bytes_done: 0,
            differences: 0,
            expunged_on_old: 0,
            error: None,
            last_pass: None,
            updated: now(),
        }
    }
}

/// One OLD folder of a user and its copy on NEW.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FolderRecord {
    pub user: String,
    /// OLD's name on the wire (modified UTF-7).
    pub old_name: String,
    pub uidvalidity: u32,
    /// NEW's name on the wire.
    pub new_name: String,
    /// OLD's highest MODSEQ seen by the last pass (0 without CONDSTORE):
    /// flag changes above it are carried by the next.
    pub highest_modseq: u64,
    pub messages: u64,
    pub bytes: u64,
    /// Of `messages`, how many are on NEW.
    pub copied: u64,
    pub differences: u64,
    pub verified: bool,
    /// The merged view serves the user's `Old/` folder from this copy
    /// (set once verified; never unset, so the folder changes hands once).
    pub served: bool,
    /// When the folder was last passed over (Unix seconds).
    pub checked: i64,
}

/// Unix seconds now.
pub fn now() -> i64 {
    super::lease::now_ms() / 1000
}

const USER_COLUMNS: &str = "user_name, state, paused, folders, folders_done, messages,
    messages_done, bytes, bytes_done, differences, expunged_on_old, error, last_pass, updated";

const FOLDER_COLUMNS: &str = "user_name, old_name, uidvalidity, new_name, highest_modseq,
    messages, bytes, copied, differences, verified, served, checked";

fn user_from(r: &impl UserRow) -> UserRecord {
    let n = |i| r.int(i) as u64;
    UserRecord {
        user: r.text(0),
        state: UserState::parse(&r.text(1)),
        paused: r.int(2) != 0,
        folders: n(3),
        folders_done: n(4),
        messages: n(5),
        messages_done: n(6),
        bytes: n(7),
        bytes_done: n(8),
        differences: n(9),
        expunged_on_old: n(10),
        error: r.opt_text(11),
        last_pass: r.opt_int(12),
        updated: r.int(13),
    }
}

fn folder_from(r: &impl UserRow) -> FolderRecord {
    let n = |i| r.int(i) as u64;
    FolderRecord {
        user: r.text(0),
        old_name: r.text(1),
        uidvalidity: r.int(2) as u32,
        new_name: r.text(3),
        highest_modseq: n(4),
        messages: n(5),
        bytes: n(6),
        copied: n(7),
        differences: n(8),
        verified: r.int(9) != 0,
        served: r.int(10) != 0,
        checked: r.int(11),
    }
}

/// The columns both databases' rows give the same way.
trait UserRow {
    fn int(&self, i: usize) -> i64;
    fn opt_int(&self, i: usize) -> Option<i64>;
    fn text(&self, i: usize) -> String;
    fn opt_text(&self, i: usize) -> Option<String>;
}

macro_rules! user_row {
    ($row:ty) => {
        impl UserRow for $row {
            fn int(&self, i: usize) -> i64 {
                self.get(i)
            }
            fn opt_int(&self, i: usize) -> Option<i64> {
                self.get(i)
            }
            fn text(&self, i: usize) -> String {
                self.get(i)
            }
            fn opt_text(&self, i: usize) -> Option<String> {
                self.get(i)
            }
        }
    };
}
user_row!(sqlx::sqlite::SqliteRow);
user_row!(sqlx::postgres::PgRow);

impl State {
    /// The user's migration, if it was ever started.
    pub async fn migration(&self, user: &str) -> Result<Option<UserRecord>, StateError> {
        let q = format!("SELECT {USER_COLUMNS} FROM ferry_migration_users WHERE user_name = $1");
        Ok(with_pool!(self, p => sqlx::query(&q)
            .bind(user)
            .fetch_optional(p)
            .await?
            .map(|r| user_from(&r))))
    }

    /// Every user's migration, by name.
    pub async fn migrations(&self) -> Result<Vec<UserRecord>, StateError> {
        let q = format!("SELECT {USER_COLUMNS} FROM ferry_migration_users ORDER BY user_name");
        Ok(with_pool!(self, p => sqlx::query(&q)
            .fetch_all(p)
            .await?
            .iter()
            .map(user_from)
            .collect()))
    }

    /// Writes the user's record, all but `paused` (which only
    /// [`State::set_paused`] changes, so a pass never undoes an admin's pause).
    pub async fn put_migration(&self, u: &UserRecord) -> Result<(), StateError> {
        let q = format!(
            "INSERT INTO ferry_migration_users ({USER_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (user_name) DO UPDATE SET state = excluded.state,
               folders = excluded.folders,
               folders_done = excluded.folders_done, messages = excluded.messages,
               messages_done = excluded.messages_done, bytes = excluded.bytes,
               bytes_done = excluded.bytes_done, differences = excluded.differences,
               expunged_on_old = excluded.expunged_on_old, error = excluded.error,
               last_pass = excluded.last_pass, updated = excluded.updated"
        );
        let i = |n: u64| n as i64;
        with_pool!(self, p => sqlx::query(&q)
            .bind(&u.user)
            .bind(u.state.as_str())
            .bind(i64::from(u.paused))
            .bind(i(u.folders))
            .bind(i(u.folders_done))
            .bind(i(u.messages))
            .bind(i(u.messages_done))
            .bind(i(u.bytes))
            .bind(i(u.bytes_done))
            .bind(i(u.differences))
            .bind(i(u.expunged_on_old))
            .bind(&u.error)
            .bind(u.last_pass)
            .bind(now())
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    /// Makes `user` known to the copier (state `pending`) unless it is.
    pub async fn enqueue(&self, user: &str) -> Result<(), StateError> {
        const Q: &str = "INSERT INTO ferry_migration_users (user_name, state, updated)
                         VALUES ($1, 'pending', $2) ON CONFLICT (user_name) DO NOTHING";
        with_pool!(self, p => sqlx::query(Q).bind(user).bind(now()).execute(p).await.map(drop)?);
        Ok(())
    }

    /// Pauses or resumes the background copier for `user`; `false` if the
    /// user has no migration.
    pub async fn set_paused(&self, user: &str, paused: bool) -> Result<bool, StateError> {
        const Q: &str =
            "UPDATE ferry_migration_users SET paused = $2, updated = $3 WHERE user_name = $1";
        let done = with_pool!(self, p => sqlx::query(Q)
            .bind(user)
            .bind(i64::from(paused))
            .bind(now())
            .execute(p)
            .await?
            .rows_affected());
        Ok(done > 0)
    }

    /// The user's folders as the last pass left them, by OLD name.
    pub async fn migration_folders(&self, user: &str) -> Result<Vec<FolderRecord>, StateError> {
        let q = format!(
            "SELECT {FOLDER_COLUMNS} FROM ferry_migration_folders
             WHERE user_name = $1 ORDER BY old_name"
        );
        Ok(with_pool!(self, p => sqlx::query(&q)
            .bind(user)
            .fetch_all(p)
            .await?
            .iter()
            .map(folder_from)
            .collect()))
    }

    /// Every user's folders served from their copy.
    pub async fn served_folders(&self) -> Result<Vec<FolderRecord>, StateError> {
        let q = format!(
            "SELECT {FOLDER_COLUMNS} FROM ferry_migration_folders
             WHERE served = 1 ORDER BY user_name, old_name"
        );
        Ok(with_pool!(self, p => sqlx::query(&q)
            .fetch_all(p)
            .await?
            .iter()
            .map(folder_from)
            .collect()))
    }

    /// Writes the folder's record whole (`served` only ever goes on).
    pub async fn put_migration_folder(&self, f: &FolderRecord) -> Result<(), StateError> {
        let q = format!(
            "INSERT INTO ferry_migration_folders ({FOLDER_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (user_name, old_name) DO UPDATE SET
               served = CASE WHEN ferry_migration_folders.served = 1 THEN 1
                        ELSE excluded.served END,
               uidvalidity = excluded.uidvalidity, new_name = excluded.new_name,
               highest_modseq = excluded.highest_modseq, messages = excluded.messages,
               bytes = excluded.bytes, copied = excluded.copied,
               differences = excluded.differences, verified = excluded.verified,
               checked = excluded.checked"
        );
        let i = |n: u64| n as i64;
        with_pool!(self, p => sqlx::query(&q)
            .bind(&f.user)
            .bind(&f.old_name)
            .bind(i64::from(f.uidvalidity))
            .bind(&f.new_name)
            .bind(i(f.highest_modseq))
            .bind(i(f.messages))
            .bind(i(f.bytes))
            .bind(i(f.copied))
            .bind(i(f.differences))
            .bind(i64::from(f.verified))
            .bind(i64::from(f.served))
            .bind(f.checked)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let state = State::open(&url).await.unwrap();
        assert_eq!(state.migration("alice").await.unwrap(), None);
        state.enqueue("alice").await.unwrap();
        let mut alice = state.migration("alice").await.unwrap().unwrap();
        assert_eq!(alice.state, UserState::Pending);
        alice.state = UserState::Failed;
        alice.error = Some("OLD refused: NO [UNAVAILABLE]".into());
        alice.messages = 10;
        alice.last_pass = Some(1_700_000_000);
        state.put_migration(&alice).await.unwrap();
        // Enqueueing again leaves the record as it is.
        state.enqueue("alice").await.unwrap();
        let read = state.migration("alice").await.unwrap().unwrap();
        assert_eq!(
            (read.state, read.error.as_deref(), read.messages),
            (UserState::Failed, alice.error.as_deref(), 10)
        );
        assert!(state.set_paused("alice", true).await.unwrap());
        assert!(!state.set_paused("bob", true).await.unwrap());
        assert!(state.migrations().await.unwrap()[0].paused);
        let folder = FolderRecord {
            user: "alice".into(),
            old_name: "INBOX.&ZeVnLIqe-".into(),
            uidvalidity: u32::MAX,
            new_name: "Old/&ZeVnLIqe-".into(),
            highest_modseq: 42,
            messages: 3,
            bytes: 300,
            copied: 3,
            differences: 0,
            verified: true,
            served: true,
            checked: 1,
        };
        state.put_migration_folder(&folder).await.unwrap();
        assert_eq!(
            state.migration_folders("alice").await.unwrap(),
            std::slice::from_ref(&folder)
        );
        // Served stays served: the folder never changes hands back.
        let later = FolderRecord {
            served: false,
            verified: false,
            ..folder.clone()
        };
        state.put_migration_folder(&later).await.unwrap();
        let read = &state.migration_folders("alice").await.unwrap()[0];
        assert!(read.served && !read.verified);
        assert_eq!(
            state.served_folders().await.unwrap(),
            [FolderRecord {
                verified: false,
                ..folder
            }]
        );
    }
}
