//! A fleet on loopback: three Ferry processes (release build) sharing one
//! PostgreSQL, in front of one NEW. `cargo bench --bench fleet` (a few
//! minutes on two cores); under `cargo test` a tiny version runs as a smoke
//! test. Figures, never assertions (but for the storm's failed logins,
//! which must be none).
//!
//! - idle TLS sessions spread over the three, and each instance's memory per
//!   session;
//! - PostgreSQL transactions per login and per SUBSCRIBE (from
//!   `pg_stat_database`, less what the fleet does on its own meanwhile);
//! - the reconnect storm after a cutover: the user of 10,000 of the sessions
//!   (fewer in a smaller run: half) is moved to phase `new` through the
//!   admin API of one instance, every instance
//!   ends that user's sessions spread over `drain_secs`, and every client
//!   logs in again at once: logins per second (each is a login at NEW).
//!
//! `FERRY_FLEET_SESSIONS=N` changes the number of idle sessions (18,000:
//! this process holds every client's socket, and where the open-files limit
//! cannot be raised past 20,000, 20,000 clients do not fit in one process).

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    process::{Child, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::*;
use tokio::sync::Mutex;

const INSTANCES: usize = 3;
const DRAIN_SECS: u64 = 10;
const TOKEN: &str = "fleet-bench-token";

/// One Ferry process of the fleet.
struct Instance {
    child: Child,
    tls: String,
    admin: String,
}

impl Instance {
    async fn start(env: &TestEnv, n: usize) -> Instance {
        let (tls, plain, admin) = (free_addr(), free_addr(), free_addr());
        let toml = env
            .config_toml
            .replacen("imaps = \"127.0.0.1:0\"", &format!("imaps = \"{tls}\""), 1)
            .replacen("imap  = \"127.0.0.1:0\"", &format!("imap = \"{plain}\""), 1)
            .replacen(
                "listen = \"127.0.0.1:0\"\ntoken_file",
                &format!("listen = \"{admin}\"\ntoken_file"),
                1,
            )
            // The cutover's sessions are spread over drain_secs.
            .replacen(
                "default_phase = \"merged\"\n",
                &format!("default_phase = \"merged\"\ndrain_secs = {DRAIN_SECS}\n"),
                1,
            );
        let conf = write_file(env.dir(), &format!("ferry-{n}.toml"), toml.as_bytes());
        let child = bench_ferry(&conf, &tls, Stdio::inherit()).await;
        Instance { child, tls, admin }
    }

    fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        send_signal(&self.child.id().to_string(), "-KILL");
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// Lifts this process's open-files limit (root may raise the hard one);
/// the Ferry processes inherit it.
fn raise_files_limit(to: u64) {
    let lim = libc::rlimit {
        rlim_cur: to,
        rlim_max: to,
    };
    // SAFETY: setrlimit reads the struct passed in.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        ferry::server::raise_open_files_limit();
    }
}

/// Transactions the database has seen so far.
async fn transactions(db: &sqlx::PgPool) -> i64 {
    // An idle backend reports its statistics within 10 s
    // (PGSTAT_IDLE_INTERVAL); a busy one at least every second.
    tokio::time::sleep(Duration::from_secs(11)).await;
    sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

async fn login(
    addr: &str,
    ca: &rustls_pki_types::CertificateDer<'static>,
    user: &str,
) -> TestClient {
    let mut c = TestClient::tls(addr, ca).await;
    c.patient(Duration::from_secs(120));
    c.greeting().await;
    c.login(user, password_for(user)).await.assert_ok();
    c
}

async fn run(sessions: usize) {
    raise_files_limit(400_000);
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = write_file(dir.path(), "admin.token", format!("{TOKEN}\n").as_bytes());
    let env = TestEnv::builder()
        .seed(false)
        .new_conf(
            "mail_max_userip_connections = 100000\n\
             service imap {\n  client_limit = 50\n  service_count = 0\n  process_limit = 1000\n}\n\
             service imap-login {\n  service_count = 0\n  client_limit = 2000\n  process_min_avail = 2\n}\n",
        )
        .extra_toml(&format!(
            "[state]\nurl = \"{}\"\n\
             [limits]\nmax_connections = 100000\nmax_connections_per_ip = 100000\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
            pg.url(),
            token.display().to_string()
        ))
        .start()
        .await;
    let mut fleet = Vec::new();
    for n in 0..INSTANCES {
        fleet.push(Instance::start(&env, n).await);
    }
    let db = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let ca = env.ca.clone();

    // Warm each instance (TLS, pools), then measure what the fleet does
    // alone for as long as the logins will take.
    for f in &fleet {
        login(&f.tls, &ca, "bob").await.logout().await;
    }
    let rss0: Vec<u64> = fleet.iter().map(Instance::rss_kib).collect();

    // Idle TLS sessions, round robin: the first `moved` alice's (the
    // cutover's user), the rest bob's.
    let moved = if sessions >= 18_000 {
        10_000
    } else {
        sessions / 2
    };
    let t0 = transactions(&db).await;
    let start = Instant::now();
    let addrs: Vec<String> = fleet.iter().map(|f| f.tls.clone()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    const AT_ONCE: usize = 32;
    for k in 0..AT_ONCE {
        let (addrs, ca) = (addrs.clone(), ca.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in (k..sessions).step_by(AT_ONCE) {
                let user = if i < moved { "alice" } else { "bob" };
                let mut c = login(&addrs[i % INSTANCES], &ca, user).await;
                c.cmd("SELECT INBOX").await.assert_ok();
                out.push((i, c));
            }
            out
        });
    }
    let held: Vec<(usize, TestClient)> = tasks.join_all().await.into_iter().flatten().collect();
    let took = start.elapsed();
    let t1 = transactions(&db).await;
    // The fleet alone, as long again.
    tokio::time::sleep(took).await;
    let t2 = transactions(&db).await;
    let per_login = ((t1 - t0) - (t2 - t1)).max(0) as f64 / sessions as f64;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "{sessions} idle TLS sessions over {INSTANCES} instances ({} each), logged in in {:.1} s ({:.0}/s)",
        sessions / INSTANCES,
        took.as_secs_f64(),
        sessions as f64 / took.as_secs_f64()
    );
    for (n, f) in fleet.iter().enumerate() {
        let rss = f.rss_kib();
        println!(
            "  instance {n}: RSS {} -> {rss} KiB, {:.1} KiB per session",
            rss0[n],
            (rss.saturating_sub(rss0[n])) as f64 / (sessions / INSTANCES) as f64
        );
    }
    println!("PostgreSQL transactions per login: {per_login:.3}");

    // SUBSCRIBE: each a write of the choice and a note.
    let subscribes = 200;
    let mut c = login(&fleet[0].tls, &ca, "bob").await;
    let t3 = transactions(&db).await;
    for i in 0..subscribes {
        let verb = if i % 2 == 0 {
            "SUBSCRIBE"
        } else {
            "UNSUBSCRIBE"
        };
        c.cmd(&format!("{verb} Old/Sub{}", i % 7)).await.assert_ok();
    }
    let t4 = transactions(&db).await;
    c.logout().await;
    println!(
        "PostgreSQL transactions per SUBSCRIBE/UNSUBSCRIBE: {:.2} (the fleet's own meanwhile not deducted: under {:.2})",
        (t4 - t3) as f64 / subscribes as f64,
        (t2 - t1) as f64 / took.as_secs_f64() * 1.5 / subscribes as f64
    );

    // The cutover: alice to phase new on every instance, through one.
    let logins = Arc::new(Mutex::new(BTreeMap::<u64, u32>::new()));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut storm = tokio::task::JoinSet::new();
    let cut = Instant::now();
    // bob's sessions stay open through the storm.
    let (moving, staying): (Vec<_>, Vec<_>) = held.into_iter().partition(|(i, _)| *i < moved);
    for (i, mut c) in moving {
        let (addr, ca) = (addrs[(i + 1) % INSTANCES].clone(), ca.clone());
        let (logins, failed) = (logins.clone(), failed.clone());
        storm.spawn(async move {
            let bye = lossy(&c.response().await);
            assert!(bye.starts_with("* BYE"), "{bye}");
            drop(c);
            let mut again = TestClient::tls(addr.as_str(), &ca).await;
            again.patient(Duration::from_secs(120));
            again.greeting().await;
            let answer = again.login("alice", password_for("alice")).await;
            if answer.is_ok() {
                let second = cut.elapsed().as_secs();
                *logins.lock().await.entry(second).or_default() += 1;
            } else if failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                eprintln!("the first failed login: {}", answer.text());
            }
            again
        });
    }
    let (status, body) = ferry::admin::request(
        &fleet[0].admin,
        TOKEN,
        hyper::Method::PUT,
        "/users/alice/phase/new",
    )
    .await
    .expect("the admin API");
    assert!(status.is_success(), "{body}");
    let again = storm.join_all().await;
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    let per_second = logins.lock().await.clone();
    let peak = per_second.values().max().copied().unwrap_or(0);
    println!(
        "cutover of {moved} sessions with drain_secs = {DRAIN_SECS}: all back in {:.1} s, peak {peak} logins/s at NEW \
         (mean {:.0}/s), {failed} failed logins",
        cut.elapsed().as_secs_f64(),
        moved as f64 / DRAIN_SECS as f64
    );
    println!(
        "  logins per second: {:?}",
        per_second.values().collect::<Vec<_>>()
    );
    assert_eq!(failed, 0, "logins failed in the storm");
    drop(again);
    drop(staying);
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sessions = std::env::var("FERRY_FLEET_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 18_000 } else { 30 });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run(sessions));
}
