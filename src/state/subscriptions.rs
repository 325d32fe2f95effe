//! Subscriptions to `Old/` folders, which Ferry keeps for its users (see
//! `crate::subscriptions`), and markers for one-time imports into the store.
//!
//! One row per (user, client-visible name): `subscribed = false` hides one of
//! OLD's own subscriptions. Rows are written one by one with an upsert, so
//! instances sharing PostgreSQL never lose one another's choices, and a row
//! carries when the choice was made (`at_us`): a write never replaces a
//! later choice, so whichever order instances' writes land in, the row ends
//! as the user last chose. Names are TEXT: the session passes only names
//! that decode as modified UTF-7, which is printable ASCII.

use sqlx::Row;

use super::{Pool, State, StateError};

pub(super) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS ferry_subscriptions (
        user_name TEXT NOT NULL,
        name TEXT NOT NULL,
        subscribed BOOLEAN NOT NULL,
        at_us BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (user_name, name)
    )",
    // What was imported once from outside the store (e.g. `subscriptions_dir`),
    // and when (Unix seconds).
    "CREATE TABLE IF NOT EXISTS ferry_imports (
        what TEXT PRIMARY KEY,
        at BIGINT NOT NULL
    )",
];

/// Tables made before `at_us` get it (SQLite has no `ADD COLUMN IF NOT
/// EXISTS`: its "duplicate column" error is the answer there).
pub(super) const ADD_AT: &str =
    "ALTER TABLE ferry_subscriptions ADD COLUMN at_us BIGINT NOT NULL DEFAULT 0";

/// One user's choice for one `Old/` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub user: String,
    /// The client-visible name (`Old/…`, modified UTF-7).
    pub name: String,
    pub subscribed: bool,
    /// When the user chose, in microseconds since the Unix epoch (0: imported).
    pub at: i64,
}

/// A row of `SELECT user_name, name, subscribed, at_us` (either backend).
macro_rules! subscription {
    () => {
        |r| Subscription {
            user: r.get(0),
            name: r.get(1),
            subscribed: r.get(2),
            at: r.get(3),
        }
    };
}

impl State {
    /// Every user's choices, for the cache sessions read.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, StateError> {
        const Q: &str = "SELECT user_name, name, subscribed, at_us FROM ferry_subscriptions";
        Ok(with_pool!(self, p => sqlx::query(Q)
            .fetch_all(p)
            .await?
            .iter()
            .map(subscription!())
            .collect()))
    }

    /// One user's choices (another instance changed them).
    pub async fn user_subscriptions(&self, user: &str) -> Result<Vec<Subscription>, StateError> {
        const Q: &str = "SELECT user_name, name, subscribed, at_us FROM ferry_subscriptions
                         WHERE user_name = $1";
        Ok(with_pool!(self, p => sqlx::query(Q)
            .bind(user)
            .fetch_all(p)
            .await?
            .iter()
            .map(subscription!())
            .collect()))
    }

    /// Records one choice, unless the row holds a later one; other rows are
    /// untouched.
    pub async fn set_subscription(&self, s: &Subscription) -> Result<(), StateError> {
        const Q: &str = "INSERT INTO ferry_subscriptions (user_name, name, subscribed, at_us)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (user_name, name) DO UPDATE
            SET subscribed = excluded.subscribed, at_us = excluded.at_us
            WHERE ferry_subscriptions.at_us <= excluded.at_us";
        with_pool!(self, p => sqlx::query(Q)
            .bind(&s.user)
            .bind(&s.name)
            .bind(s.subscribed)
            .bind(s.at)
            .execute(p)
            .await
            .map(drop)?);
        Ok(())
    }

    /// Whether the import named `what` has been done.
    pub async fn imported(&self, what: &str) -> Result<bool, StateError> {
        const Q: &str = "SELECT COUNT(*) FROM ferry_imports WHERE what = $1";
        let n: i64 = match &self.pool {
            Pool::Sqlite(p) => sqlx::query(Q).bind(what).fetch_one(p).await?.get(0),
            Pool::Postgres(p) => sqlx::query(Q).bind(what).fetch_one(p).await?.get(0),
        };
        Ok(n > 0)
    }

    /// Writes `rows` and the marker `what` (at `at`, Unix seconds) in one
    /// transaction. A row the store already holds keeps its value: it was
    /// written by a session after the files stopped being used, so it is newer.
    /// Returns false, writing nothing, if the marker was already there (another
    /// instance imported first).
    pub async fn import_subscriptions(
        &self,
        what: &str,
        at: i64,
        rows: &[Subscription],
    ) -> Result<bool, StateError> {
        const MARK: &str =
            "INSERT INTO ferry_imports (what, at) VALUES ($1, $2) ON CONFLICT (what) DO NOTHING";
        const ROW: &str = "INSERT INTO ferry_subscriptions (user_name, name, subscribed, at_us)
            VALUES ($1, $2, $3, $4) ON CONFLICT (user_name, name) DO NOTHING";
        macro_rules! import {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await?;
                let marked = sqlx::query(MARK)
                    .bind(what)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if marked == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                for s in rows {
                    sqlx::query(ROW)
                        .bind(&s.user)
                        .bind(&s.name)
                        .bind(s.subscribed)
                        .bind(s.at)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }};
        }
        match &self.pool {
            Pool::Sqlite(p) => import!(p),
            Pool::Postgres(p) => import!(p),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, name: &str, subscribed: bool) -> Subscription {
        Subscription {
            user: user.into(),
            name: name.into(),
            subscribed,
            at: 0,
        }
    }

    async fn open(dir: &tempfile::TempDir) -> State {
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        State::open(&url).await.unwrap()
    }

    fn sorted(mut rows: Vec<Subscription>) -> Vec<Subscription> {
        rows.sort_by(|a, b| (&a.user, &a.name).cmp(&(&b.user, &b.name)));
        rows
    }

    #[tokio::test]
    async fn upserts_replace_one_row_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let state = open(&dir).await;
        assert!(state.subscriptions().await.unwrap().is_empty());
        state
            .set_subscription(&row("alice", "Old/Sent", true))
            .await
            .unwrap();
        state
            .set_subscription(&row("alice", "Old/&U9dP4Xux-", true))
            .await
            .unwrap();
        state
            .set_subscription(&row("bob", "Old/Sent", true))
            .await
            .unwrap();
        state
            .set_subscription(&row("alice", "Old/Sent", false))
            .await
            .unwrap();
        drop(state);
        let state = open(&dir).await;
        assert_eq!(
            sorted(state.subscriptions().await.unwrap()),
            vec![
                row("alice", "Old/&U9dP4Xux-", true),
                row("alice", "Old/Sent", false),
                row("bob", "Old/Sent", true),
            ]
        );
    }

    #[tokio::test]
    async fn an_import_happens_once_and_never_overwrites_newer_rows() {
        let dir = tempfile::tempdir().unwrap();
        let state = open(&dir).await;
        assert!(!state.imported("subscriptions_dir").await.unwrap());
        // A session's choice made before the import: newer than any file.
        state
            .set_subscription(&row("alice", "Old/Sent", false))
            .await
            .unwrap();
        let files = [row("alice", "Old/Sent", true), row("alice", "Old/A", true)];
        assert!(
            state
                .import_subscriptions("subscriptions_dir", 1_700_000_000, &files)
                .await
                .unwrap()
        );
        assert!(state.imported("subscriptions_dir").await.unwrap());
        assert!(!state.imported("something_else").await.unwrap());
        // A second import (another instance that looked before the first
        // committed) writes nothing.
        let again = [row("alice", "Old/B", true)];
        assert!(
            !state
                .import_subscriptions("subscriptions_dir", 1_700_000_001, &again)
                .await
                .unwrap()
        );
        assert_eq!(
            sorted(state.subscriptions().await.unwrap()),
            vec![row("alice", "Old/A", true), row("alice", "Old/Sent", false)]
        );
    }
}
