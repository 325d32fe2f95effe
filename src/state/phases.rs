//! Phases set through the admin API: one row per user, read by every
//! instance sharing the store (a note tells them which user changed) and
//! at start. They win over the configuration files until cleared.

use sqlx::Row;

use super::{State, StateError};
use crate::config::Phase;

pub(super) const SCHEMA: [&str; 1] = ["CREATE TABLE IF NOT EXISTS ferry_phases (
        user_name TEXT PRIMARY KEY,
        phase TEXT NOT NULL
    )"];

fn parse(user: &str, phase: &str) -> Result<Phase, StateError> {
    match phase {
        "old" => Ok(Phase::Old),
        "merged" => Ok(Phase::Merged),
        "new" => Ok(Phase::New),
        _ => Err(StateError::Corrupt(format!("ferry_phases {user}"))),
    }
}

impl State {
    /// Sets (`Some`) or clears (`None`) the admin API's phase for `user`
    /// (lower-case).
    pub async fn set_phase(&self, user: &str, phase: Option<Phase>) -> Result<(), StateError> {
        const PUT: &str = "INSERT INTO ferry_phases (user_name, phase) VALUES ($1, $2)
            ON CONFLICT (user_name) DO UPDATE SET phase = excluded.phase";
        const CLEAR: &str = "DELETE FROM ferry_phases WHERE user_name = $1";
        let user = user.to_lowercase();
        match phase {
            Some(p) => with_pool!(self, db => sqlx::query(PUT)
                .bind(&user)
                .bind(p.as_str())
                .execute(db)
                .await
                .map(drop)?),
            None => {
                with_pool!(self, db => sqlx::query(CLEAR).bind(&user).execute(db).await.map(drop)?)
            }
        }
        Ok(())
    }

    /// The admin API's phase for `user`, if it set one.
    pub async fn phase(&self, user: &str) -> Result<Option<Phase>, StateError> {
        const Q: &str = "SELECT phase FROM ferry_phases WHERE user_name = $1";
        let user = user.to_lowercase();
        let phase: Option<String> = with_pool!(self, db => sqlx::query(Q).bind(&user).fetch_optional(db).await?.map(|r| r.get(0)));
        phase.map(|p| parse(&user, &p)).transpose()
    }

    /// Every phase the admin API set.
    pub async fn phases(&self) -> Result<Vec<(String, Phase)>, StateError> {
        const Q: &str = "SELECT user_name, phase FROM ferry_phases";
        let rows: Vec<(String, String)> = with_pool!(self, db => sqlx::query(Q)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect());
        rows.into_iter()
            .map(|(u, p)| parse(&u, &p).map(|p| (u, p)))
            .collect()
    }
}
