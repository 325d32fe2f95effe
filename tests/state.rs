//! The state store against the real thing: an SQLite file, and a PostgreSQL
//! server started for the test (initdb, pg_ctl), like the Dovecot stores.

mod common;

use common::*;
use ferry::state::{FolderKey, State, UidMap};

async fn ledger_survives_reopening(url: &str) {
    let folder = FolderKey {
        user: "alice",
        old_name: "INBOX.&U9dP4Xux-.&eBR6dluk-",
        uidvalidity: 1_700_000_000,
    };
    let state = State::open(url).await.unwrap();
    assert!(state.copied(&folder).await.unwrap().is_empty());
    // 5,000 messages with a few expunged on OLD: a handful of runs.
    let mut map = UidMap::default();
    let mut new = 1;
    for old in (1..=5_000u32).filter(|u| u % 1000 != 0) {
        map.insert(old, new);
        new += 1;
    }
    state.record(&folder, &map).await.unwrap();
    drop(state);
    let state = State::open(url).await.unwrap();
    let back = state.copied(&folder).await.unwrap();
    assert_eq!(back, map);
    assert_eq!(back.len(), 4_995);
    assert_eq!(back.runs().count(), 5);
    // Another UIDVALIDITY of the same name is another folder.
    let renewed = FolderKey {
        uidvalidity: 1_800_000_000,
        ..folder.clone()
    };
    assert!(state.copied(&renewed).await.unwrap().is_empty());
    // A later pass replaces the runs as one.
    map.insert(5_001, new);
    state.record(&folder, &map).await.unwrap();
    assert_eq!(state.copied(&folder).await.unwrap().len(), 4_996);
}

#[tokio::test]
async fn sqlite_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    ledger_survives_reopening(&url).await;
}

#[tokio::test]
async fn postgres_ledger() {
    let pg = Postgres::start().await;
    ledger_survives_reopening(&pg.url()).await;
}

/// A fleet's instances start together: each makes the schema on a fresh
/// PostgreSQL at once, and every one of them opens.
#[tokio::test]
async fn instances_opening_a_fresh_postgres_at_once_all_open() {
    let pg = Postgres::start().await;
    let url = pg.url();
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let url = url.clone();
        opening.spawn(async move { State::open(&url).await.map(drop) });
    }
    for opened in opening.join_all().await {
        opened.expect("opened");
    }
}

#[tokio::test]
async fn a_bad_url_names_the_forms_it_takes() {
    let Err(e) = State::open("mysql://x").await else {
        panic!("accepted");
    };
    assert!(e.to_string().contains("sqlite:///"), "{e}");
}

/// One holder at a time; the holder renews; a lease that ran out goes to
/// whoever asks; a holder gives back only its own.
async fn leases_hand_users_over(url: &str) {
    use std::time::Duration;
    let state = State::open(url).await.unwrap();
    let (a, b) = ("instance a", "instance b");
    let short = Duration::from_millis(300);
    assert_eq!(state.take_lease("alice", a, short).await.unwrap(), Ok(()));
    let refused = state
        .take_lease("alice", b, short)
        .await
        .unwrap()
        .expect_err("a holds alice");
    assert_eq!(refused.holder, a);
    // Renewed by its holder; other users are free.
    assert_eq!(state.take_lease("alice", a, short).await.unwrap(), Ok(()));
    assert_eq!(state.take_lease("bob", b, short).await.unwrap(), Ok(()));
    let live = state.leases().await.unwrap();
    let held: Vec<_> = live
        .iter()
        .map(|l| (l.user.as_str(), l.holder.as_str()))
        .collect();
    assert_eq!(held, [("alice", a), ("bob", b)]);
    // a stops renewing (it died): once the lease ran out, b takes alice,
    // and a's late release leaves b's lease alone.
    tokio::time::sleep(short + Duration::from_millis(50)).await;
    assert!(state.leases().await.unwrap().is_empty(), "both ran out");
    assert_eq!(state.take_lease("alice", b, short).await.unwrap(), Ok(()));
    state.release_lease("alice", a).await.unwrap();
    assert!(state.take_lease("alice", a, short).await.unwrap().is_err());
    state.release_lease("alice", b).await.unwrap();
    assert_eq!(state.take_lease("alice", a, short).await.unwrap(), Ok(()));
}

#[tokio::test]
async fn sqlite_leases() {
    let dir = tempfile::tempdir().unwrap();
    leases_hand_users_over(&format!("sqlite://{}", dir.path().join("s.db").display())).await;
}

#[tokio::test]
async fn postgres_leases() {
    let pg = Postgres::start().await;
    leases_hand_users_over(&pg.url()).await;
}
