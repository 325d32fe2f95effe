//! End-to-end: the same workload straight against Dovecot and through Ferry,
//! in one run on one machine, with the ratios. `cargo bench --bench e2e`
//! (about three minutes on two cores). Under `cargo test` it runs a tiny
//! version as a smoke test. Figures, never assertions.
//!
//! Ferry runs as its own process (release build) so that its CPU time
//! (/proc/PID/stat) and memory (VmRSS, VmHWM) are its own. Both paths are
//! plaintext on loopback, so the comparison is the proxy itself; TLS is
//! measured separately for idle memory and the login rate.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

struct Scale {
    seconds: f64,
    sessions: Vec<usize>,
    idle_sessions: usize,
    big_bytes: usize,
    logins_for: Duration,
}

/// For profiling, a run can be narrowed: `FERRY_BENCH_SESSIONS=1,10`,
/// `FERRY_BENCH_SECONDS=20`, `FERRY_BENCH_ONLY=load,fetch,idle,login` (the
/// parts to run), `FERRY_BENCH_WRAP="valgrind --tool=massif"` (a command
/// Ferry runs under).
fn scale(bench: bool) -> Scale {
    let mut s = full_scale(bench);
    if let Ok(v) = std::env::var("FERRY_BENCH_SESSIONS") {
        s.sessions = v.split(',').filter_map(|n| n.trim().parse().ok()).collect();
    }
    if let Some(secs) = std::env::var("FERRY_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        s.seconds = secs;
    }
    s
}

fn part(name: &str) -> bool {
    std::env::var("FERRY_BENCH_ONLY").map_or(true, |v| v.split(',').any(|p| p.trim() == name))
}

fn full_scale(bench: bool) -> Scale {
    if bench {
        Scale {
            seconds: 6.0,
            sessions: vec![1, 10, 100],
            idle_sessions: 2000,
            big_bytes: 20 * 1024 * 1024,
            logins_for: Duration::from_secs(5),
        }
    } else {
        Scale {
            seconds: 0.3,
            sessions: vec![1, 3],
            idle_sessions: 10,
            big_bytes: 256 * 1024,
            logins_for: Duration::from_millis(300),
        }
    }
}

/// Ferry as a child process with plaintext and TLS listeners.
struct FerryProc {
    child: Child,
    plain: String,
    tls: String,
}

impl FerryProc {
    async fn start(env: &TestEnv) -> FerryProc {
        let (plain, tls) = (free_addr(), free_addr());
        let toml = env
            .config_toml
            .replacen("imaps = \"127.0.0.1:0\"", &format!("imaps = \"{tls}\""), 1)
            .replacen("imap  = \"127.0.0.1:0\"", &format!("imap = \"{plain}\""), 1);
        let conf = write_file(env.dir(), "ferry-bench.toml", toml.as_bytes());
        let wrap = std::env::var("FERRY_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(env!("CARGO_BIN_EXE_ferry"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_ferry")),
        };
        let mut child = command
            .arg("--config")
            .arg(conf)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ferry");
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(&plain).await.is_ok() {
                return FerryProc { child, plain, tls };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("ferry did not start");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (user, system) CPU time so far.
    fn cpu(&self) -> (Duration, Duration) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Fields 14 and 15 (utime, stime) in clock ticks; 100 per second on Linux.
        (
            Duration::from_millis(f[11] * 10),
            Duration::from_millis(f[12] * 10),
        )
    }

    fn status_kib(&self, key: &str) -> u64 {
        proc_status_kib(self.pid(), key)
    }
}

impl Drop for FerryProc {
    fn drop(&mut self) {
        // SIGTERM first, so a profiler Ferry runs under writes its report.
        send_signal(&self.pid().to_string(), "-TERM");
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

async fn plain_login(addr: &str) -> TestClient {
    let mut c = TestClient::plain(addr).await;
    c.patient(Duration::from_secs(60));
    c.greeting().await;
    c.login("alice", PASSWORD).await.assert_ok();
    c
}

/// One round of the mixed workload: its command latencies.
async fn round(c: &mut TestClient, i: usize, lat: &mut Vec<Duration>) {
    let uid = 1 + i % 50;
    for cmd in [
        "SELECT INBOX".to_string(),
        "FETCH 1:* (FLAGS)".to_string(),
        format!("UID FETCH {uid} (BODY.PEEK[])"),
        "SEARCH UNSEEN".to_string(),
        format!("UID STORE {uid} FLAGS (\\Seen)"),
        "NOOP".to_string(),
    ] {
        let t = Instant::now();
        c.cmd(&cmd).await.assert_ok();
        lat.push(t.elapsed());
    }
    let t = Instant::now();
    let tag = c.next_tag();
    c.send(format!("{tag} IDLE\r\n").as_bytes()).await;
    let plus = c.response().await;
    assert!(plus.starts_with(b"+"), "{}", lossy(&plus));
    c.send(b"DONE\r\n").await;
    c.read_until_tagged(&tag).await.assert_ok();
    lat.push(t.elapsed());
}

struct Load {
    commands: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

async fn load(addr: &str, sessions: usize, seconds: f64) -> Load {
    let mut clients = Vec::new();
    for _ in 0..sessions {
        clients.push(plain_login(addr).await);
    }
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for (n, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = n;
            while Instant::now() < stop {
                round(&mut c, i, &mut lat).await;
                i += 1;
            }
            c.logout().await;
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Load {
        commands: all.len(),
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn rate(l: &Load) -> f64 {
    l.commands as f64 / l.elapsed.as_secs_f64()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn big_fetch(addr: &str, bytes: usize) -> f64 {
    let mut c = plain_login(addr).await;
    c.cmd("SELECT Big").await.assert_ok();
    let t = Instant::now();
    let r = c.cmd("FETCH 1 (BODY.PEEK[])").await;
    r.assert_ok();
    let secs = t.elapsed().as_secs_f64();
    assert!(r.untagged[0].len() >= bytes);
    c.logout().await;
    bytes as f64 / 1e6 / secs
}

/// Logs in `n` sessions (8 at a time) and leaves them open.
async fn idle_sessions(
    addr: &str,
    n: usize,
    tls: Option<&rustls_pki_types::CertificateDer<'static>>,
) -> Vec<TestClient> {
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..8 {
        let (addr, tls) = (addr.to_string(), tls.cloned());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for _ in (k..n).step_by(8) {
                let mut c = match &tls {
                    Some(ca) => TestClient::tls(addr.as_str(), ca).await,
                    None => TestClient::plain(addr.as_str()).await,
                };
                c.patient(Duration::from_secs(60));
                c.greeting().await;
                c.login("alice", PASSWORD).await.assert_ok();
                c.cmd("SELECT INBOX").await.assert_ok();
                out.push(c);
            }
            out
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}

/// TLS handshakes + LOGIN + LOGOUT per second, 4 clients in parallel.
async fn login_rate(
    addr: &str,
    ca: &rustls_pki_types::CertificateDer<'static>,
    for_: Duration,
) -> f64 {
    let stop = Instant::now() + for_;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let addr = addr.to_string();
        let ca = ca.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < stop {
                let mut c = TestClient::tls(addr.as_str(), &ca).await;
                c.greeting().await;
                c.login("alice", PASSWORD).await.assert_ok();
                c.logout().await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn run(s: Scale) {
    // Only NEW matters for this workload (alice's INBOX and a big folder);
    // Ferry's merged phase is what users get.
    // Thousands of idle sessions: NEW serves 50 connections per imap process
    // (the test setup's default is one), and neither NEW nor Ferry caps one
    // address at fewer.
    let env = TestEnv::builder()
        .allow_plaintext(true)
        .seed(false)
        .new_conf(
            "mail_max_userip_connections = 10000\n\
             service imap {\n  client_limit = 50\n  service_count = 0\n  process_limit = 200\n}\n",
        )
        .extra_toml("[limits]\nmax_connections_per_ip = 10000\n")
        .start()
        .await;
    let inbox: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| {
            let text = "Some text of a typical mail.\r\n".repeat(30 + i * 5);
            ("()".to_string(), message(&format!("Bench {i}"), &text))
        })
        .collect();
    env.new.append_many("alice", "INBOX", &inbox).await;
    let mut seed = env.new.client("alice").await;
    seed.patient(Duration::from_secs(300));
    seed.cmd("CREATE Big").await.assert_ok();
    seed.append("Big", "", &big_message(s.big_bytes))
        .await
        .assert_ok();
    seed.logout().await;

    let ferry = FerryProc::start(&env).await;
    println!("ferry pid {}", ferry.pid());
    let direct = env.new.addr();
    println!("Ferry vs direct Dovecot (plaintext, loopback; Ferry in phase merged)");
    println!(
        "{:>9} {:>12} {:>12} {:>6} {:>9} {:>9} {:>9} {:>9} {:>24}",
        "sessions",
        "direct c/s",
        "ferry c/s",
        "ratio",
        "p50 dir",
        "p50 fer",
        "p99 dir",
        "p99 fer",
        "ferry CPU/cmd (user+sys)"
    );
    for &n in s.sessions.iter().filter(|_| part("load")) {
        let d = load(&direct, n, s.seconds).await;
        let (u0, s0) = ferry.cpu();
        let f = load(&ferry.plain, n, s.seconds).await;
        let (u1, s1) = ferry.cpu();
        let per = |d: Duration| us(d) / f.commands as f64;
        println!(
            "{:>9} {:>12.0} {:>12.0} {:>6.2} {:>7.0}µs {:>7.0}µs {:>7.0}µs {:>7.0}µs {:>6.1}+{:>5.1}={:>6.1}µs",
            n,
            rate(&d),
            rate(&f),
            rate(&f) / rate(&d),
            us(d.p50),
            us(f.p50),
            us(d.p99),
            us(f.p99),
            per(u1 - u0),
            per(s1 - s0),
            per(u1 - u0 + s1 - s0),
        );
    }

    if part("fetch") {
        let hwm0 = ferry.status_kib("VmHWM:");
        let direct_mbs = big_fetch(&direct, s.big_bytes).await;
        let ferry_mbs = big_fetch(&ferry.plain, s.big_bytes).await;
        let growth = ferry.status_kib("VmHWM:").saturating_sub(hwm0);
        println!(
            "{} MB FETCH: direct {direct_mbs:.0} MB/s, Ferry {ferry_mbs:.0} MB/s, ratio {:.2}; Ferry peak RSS growth {growth} KiB",
            s.big_bytes / (1024 * 1024),
            ferry_mbs / direct_mbs
        );
    }

    let ca = env.ca.clone();
    drop(ferry);
    // Each idle measurement in a fresh Ferry, so no freed memory is reused.
    for tls in [false, true].into_iter().filter(|_| part("idle")) {
        let ferry = FerryProc::start(&env).await;
        // A first session warms up lazily built state (TLS config, metrics).
        let warm = idle_sessions(&ferry.tls, 1, Some(&ca)).await;
        let (label, addr, tls) = if tls {
            ("TLS", ferry.tls.clone(), Some(&ca))
        } else {
            ("plaintext", ferry.plain.clone(), None)
        };
        let before = ferry.status_kib("VmRSS:");
        let held = idle_sessions(&addr, s.idle_sessions, tls).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = ferry.status_kib("VmRSS:");
        let per = (after.saturating_sub(before)) as f64 * 1024.0 / s.idle_sessions as f64;
        println!(
            "idle {label} sessions: {} logged in, Ferry RSS {before} -> {after} KiB, {:.1} KiB per session",
            s.idle_sessions,
            per / 1024.0
        );
        drop(held);
        drop(warm);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    if part("login") {
        let ferry = FerryProc::start(&env).await;
        let logins = login_rate(&ferry.tls, &ca, s.logins_for).await;
        println!(
            "login rate through Ferry (TLS handshake + LOGIN + LOGOUT, 4 clients): {logins:.0}/s"
        );
    }
}

fn main() {
    ferry::listener::raise_open_files_limit();
    let bench = std::env::args().any(|a| a == "--bench");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run(scale(bench)));
}
