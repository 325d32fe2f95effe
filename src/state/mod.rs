//! Ferry's durable state, shared by everything that must survive a restart:
//! first the migration ledger (which OLD messages are on NEW, under which
//! NEW UIDs). SQLite by default (a file, nothing to install); PostgreSQL
//! when several Ferry instances share it (`[state] url`).
//!
//! Both speak the same SQL (`$n` parameters, `ON CONFLICT`), through sqlx.
//! A folder's runs are written in one transaction with the folder's record,
//! so a run is either wholly recorded or not at all, whatever kills Ferry.

/// Runs `$body` with `$p` bound to whichever pool the store has: the same
/// SQL serves SQLite and PostgreSQL, compiled once for each.
macro_rules! with_pool {
    ($state:expr, $p:ident => $body:expr) => {
        match &$state.pool {
            $crate::state::Pool::Sqlite($p) => $body,
            $crate::state::Pool::Postgres($p) => $body,
        }
    };
}

pub mod fleet;
pub mod lease;
pub mod migration;
pub mod phases;
pub mod subscriptions;
pub mod uidmap;

use sqlx::{
    Row,
    postgres::{PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions},
};
use thiserror::Error;

pub use migration::{FolderRecord, UserRecord, UserState};
pub use uidmap::{Run, UidMap};

#[derive(Debug, Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("state store url {0:?}: use sqlite:///path/to/state.db or postgres://…")]
    Url(String),
    #[error("state store: {0} is not as Ferry wrote it")]
    Corrupt(String),
}

/// One OLD folder of one user, as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderKey<'a> {
    pub user: &'a str,
    /// OLD's name on the wire (modified UTF-7).
    pub old_name: &'a str,
    pub uidvalidity: u32,
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub struct State {
    pool: Pool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        };
        f.debug_struct("State").field("pool", &kind).finish()
    }
}

const SCHEMA: [&str; 2] = [
    // Runs of OLD UIDs copied to NEW: OLD first..=last are NEW new_first..
    "CREATE TABLE IF NOT EXISTS ferry_copied (
        user_name TEXT NOT NULL,
        old_name TEXT NOT NULL,
        uidvalidity BIGINT NOT NULL,
        first_uid BIGINT NOT NULL,
        last_uid BIGINT NOT NULL,
        new_first BIGINT NOT NULL,
        PRIMARY KEY (user_name, old_name, uidvalidity, first_uid)
    )",
    "CREATE INDEX IF NOT EXISTS ferry_copied_user ON ferry_copied (user_name)",
];

/// The advisory lock held while the schema is made ("Ferry" in ASCII).
const SCHEMA_LOCK: i64 = 0x0046_6572_7279;

impl State {
    /// Opens (and creates, for SQLite) the store at `url` and its tables.
    pub async fn open(url: &str) -> Result<State, StateError> {
        let pool = if let Some(path) = url.strip_prefix("sqlite://") {
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                // Concurrent readers while a copier writes; durable commits.
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(PgPoolOptions::new().max_connections(8).connect(url).await?)
        } else {
            return Err(StateError::Url(url.to_string()));
        };
        let state = State { pool };
        let schema = SCHEMA
            .iter()
            .chain(&migration::SCHEMA)
            .chain(subscriptions::SCHEMA)
            .chain(&fleet::SCHEMA)
            .chain(&lease::SCHEMA)
            .chain(&phases::SCHEMA);
        match &state.pool {
            Pool::Sqlite(_) => {
                for statement in schema {
                    state.execute(statement).await?;
                }
                // Present already (made so before): fine.
                let _ = state.execute(subscriptions::ADD_AT).await;
            }
            // Instances of a fleet start together: `IF NOT EXISTS` alone
            // races in PostgreSQL (two creators, one unique violation), so
            // one instance at a time makes the schema.
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(SCHEMA_LOCK)
                    .execute(&mut *tx)
                    .await?;
                for statement in schema {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
                let add_at =
                    subscriptions::ADD_AT.replace("ADD COLUMN", "ADD COLUMN IF NOT EXISTS");
                sqlx::query(&add_at).execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        Ok(state)
    }

    /// Whether instances sharing this store hear one another (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    async fn execute(&self, statement: &str) -> Result<(), StateError> {
        with_pool!(self, p => sqlx::query(statement).execute(p).await.map(drop)?);
        Ok(())
    }

    /// What of this folder is on NEW.
    pub async fn copied(&self, folder: &FolderKey<'_>) -> Result<UidMap, StateError> {
        const Q: &str = "SELECT first_uid, last_uid, new_first FROM ferry_copied
                         WHERE user_name = $1 AND old_name = $2 AND uidvalidity = $3";
        let run = |first: i64, last: i64, new_first: i64| Run {
            first: first as u32,
            last: last as u32,
            new_first: new_first as u32,
        };
        let uv = i64::from(folder.uidvalidity);
        let runs: Vec<Run> = with_pool!(self, p => sqlx::query(Q)
            .bind(folder.user)
            .bind(folder.old_name)
            .bind(uv)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| run(r.get(0), r.get(1), r.get(2)))
            .collect());
        Ok(UidMap::from_runs(runs))
    }

    /// Replaces the folder's runs with `map`'s, in one transaction: after a
    /// crash the ledger holds either the old runs or the new ones.
    pub async fn record(&self, folder: &FolderKey<'_>, map: &UidMap) -> Result<(), StateError> {
        const DELETE: &str =
            "DELETE FROM ferry_copied WHERE user_name = $1 AND old_name = $2 AND uidvalidity = $3";
        const INSERT: &str = "INSERT INTO ferry_copied
            (user_name, old_name, uidvalidity, first_uid, last_uid, new_first)
            VALUES ($1, $2, $3, $4, $5, $6)";
        let uv = i64::from(folder.uidvalidity);
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(DELETE)
                .bind(folder.user)
                .bind(folder.old_name)
                .bind(uv)
                .execute(&mut *tx)
                .await?;
            for r in map.runs() {
                sqlx::query(INSERT)
                    .bind(folder.user)
                    .bind(folder.old_name)
                    .bind(uv)
                    .bind(i64::from(r.first))
                    .bind(i64::from(r.last))
                    .bind(i64::from(r.new_first))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
