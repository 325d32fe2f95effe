//! Who copies which user: a lease per user, taken before a pass and renewed
//! while it runs, so that of the instances sharing a state store (and any
//! `ferry migrate` beside them) one copies a given user at a time. A holder
//! that dies stops renewing; once its lease has expired another takes the
//! user over, and the ledger makes its pass resume where the dead one
//! stopped.
//!
//! Expiry is by the holders' clocks (milliseconds since the epoch): clocks
//! of a fleet agree far better than the lease's length.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;

use super::{State, StateError};

pub(super) const SCHEMA: [&str; 1] = ["CREATE TABLE IF NOT EXISTS ferry_leases (
        user_name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_ms BIGINT NOT NULL
    )"];

/// A live lease someone holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    pub user: String,
    pub holder: String,
    /// When it lapses unless renewed (milliseconds since the epoch).
    pub expires_ms: i64,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl State {
    /// Takes the lease on copying `user` for `ttl`, or renews it when
    /// `holder` has it already; `Err(lease)` names who holds it instead.
    /// One statement, so two takers cannot both win.
    pub async fn take_lease(
        &self,
        user: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Result<(), Lease>, StateError> {
        const TAKE: &str = "INSERT INTO ferry_leases (user_name, holder, expires_ms)
            VALUES ($1, $2, $3)
            ON CONFLICT (user_name) DO UPDATE
                SET holder = excluded.holder, expires_ms = excluded.expires_ms
                WHERE ferry_leases.holder = excluded.holder OR ferry_leases.expires_ms < $4
            RETURNING holder";
        const WHO: &str = "SELECT holder, expires_ms FROM ferry_leases WHERE user_name = $1";
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        let taken = with_pool!(self, p => sqlx::query(TAKE)
            .bind(user)
            .bind(holder)
            .bind(expires)
            .bind(now)
            .fetch_optional(p)
            .await?
            .is_some());
        if taken {
            return Ok(Ok(()));
        }
        let held = with_pool!(self, p => sqlx::query(WHO)
            .bind(user)
            .fetch_optional(p)
            .await?
            .map(|r| (r.get(0), r.get(1))));
        // Released between the two statements: as good as held, briefly.
        let (holder, expires_ms) = held.unwrap_or((String::new(), now));
        Ok(Err(Lease {
            user: user.to_string(),
            holder,
            expires_ms,
        }))
    }

    /// Gives the lease back (only `holder`'s: a lease taken over since is
    /// the new holder's).
    pub async fn release_lease(&self, user: &str, holder: &str) -> Result<(), StateError> {
        const Q: &str = "DELETE FROM ferry_leases WHERE user_name = $1 AND holder = $2";
        with_pool!(self, p => sqlx::query(Q).bind(user).bind(holder).execute(p).await.map(drop)?);
        Ok(())
    }

    /// The leases not expired.
    pub async fn leases(&self) -> Result<Vec<Lease>, StateError> {
        const Q: &str = "SELECT user_name, holder, expires_ms FROM ferry_leases
            WHERE expires_ms >= $1 ORDER BY user_name";
        let leases = with_pool!(self, p => sqlx::query(Q)
            .bind(now_ms())
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| Lease {
                user: r.get(0),
                holder: r.get(1),
                expires_ms: r.get(2),
            })
            .collect());
        Ok(leases)
    }
}
