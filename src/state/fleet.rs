//! What instances sharing one PostgreSQL state store need from it to act as
//! one Ferry: a secret they all hold (made by the first, read by the rest)
//! and one notification channel (LISTEN/NOTIFY). With SQLite an instance is
//! alone: notes go nowhere and nothing is heard.

use std::io::Read;

use sqlx::{Row, postgres::PgListener};

use super::{Pool, State, StateError};

pub(super) const SCHEMA: [&str; 1] =
    ["CREATE TABLE IF NOT EXISTS ferry_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)"];

/// The one channel every instance listens on.
pub const CHANNEL: &str = "ferry_fleet";

/// `n` random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes
}

impl State {
    /// The fleet's secret `name`: made by the first instance that asks,
    /// the same for every instance after (kept as 64 hex digits).
    pub async fn secret(&self, name: &str) -> Result<[u8; 32], StateError> {
        const PUT: &str =
            "INSERT INTO ferry_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        const GET: &str = "SELECT value FROM ferry_secrets WHERE name = $1";
        let fresh: String = random_bytes::<32>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let hex: String = with_pool!(self, p => {
            sqlx::query(PUT).bind(name).bind(&fresh).execute(p).await?;
            sqlx::query(GET).bind(name).fetch_one(p).await?.get(0)
        });
        let mut secret = [0; 32];
        for (i, byte) in secret.iter_mut().enumerate() {
            *byte = hex
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StateError::Corrupt(format!("ferry_secrets {name}")))?;
        }
        Ok(secret)
    }

    /// Tells every instance listening (this one too) `payload`.
    pub async fn notify(&self, payload: &str) -> Result<(), StateError> {
        if let Pool::Postgres(p) = &self.pool {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(p)
                .await?;
        }
        Ok(())
    }

    /// A connection listening on [`CHANNEL`]; `None` for SQLite.
    pub async fn listener(&self) -> Result<Option<PgListener>, StateError> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(p).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(listener))
    }
}
