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
    process::{Child, Stdio},
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
            seconds: 9.0,
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
        let child = bench_ferry(&conf, &plain, Stdio::null()).await;
        FerryProc { child, plain, tls }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (user, system) CPU time so far.
    fn cpu(&self) -> (Duration, Duration) {
        cpu_of(&format!("/proc/{}/stat", self.pid()))
    }

    fn status_kib(&self, key: &str) -> u64 {
        proc_status_kib(self.pid(), key)
    }

    /// Context switches of all its threads so far.
    fn switches(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .flatten()
            .map(|task| switches_of(&task.path().join("status")))
            .sum()
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

/// (user, system) CPU time from a `/proc/.../stat` file.
fn cpu_of(stat: &str) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(stat).unwrap();
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

/// Voluntary and involuntary context switches from a task's `status` file:
/// each is a sleep and a wake-up, the kernel's largest cost per command here.
fn switches_of(status: &std::path::Path) -> u64 {
    std::fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
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

/// Command latencies and time spent, summed over the slices of a run.
#[derive(Default)]
struct Load {
    lat: Vec<Duration>,
    elapsed: Duration,
}

impl Load {
    fn add(&mut self, other: Load) {
        self.lat.extend(other.lat);
        self.elapsed += other.elapsed;
    }

    fn commands(&self) -> usize {
        self.lat.len()
    }

    fn rate(&self) -> f64 {
        self.commands() as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&mut self, p: f64) -> Duration {
        self.lat.sort_unstable();
        self.lat[((self.lat.len() as f64 * p) as usize).min(self.lat.len() - 1)]
    }
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
    Load {
        lat: all,
        elapsed: start.elapsed(),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A proxy that does nothing but copy bytes both ways, on one thread of its
/// own (so its CPU time can be read): what any proxy costs on this machine.
struct NullProxy {
    addr: String,
    tid: i32,
}

impl NullProxy {
    fn start(upstream: &str) -> NullProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let upstream = upstream.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: gettid only returns the calling thread's id.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        let Ok(mut store) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = store.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut store).await;
                    });
                }
            });
        });
        NullProxy {
            addr,
            tid: rx.recv().unwrap(),
        }
    }

    /// Its thread's CPU time (user, system) so far.
    fn cpu(&self) -> (Duration, Duration) {
        cpu_of(&format!("/proc/self/task/{}/stat", self.tid))
    }

    fn switches(&self) -> u64 {
        switches_of(std::path::Path::new(&format!(
            "/proc/self/task/{}/status",
            self.tid
        )))
    }
}

/// How the big FETCH reaches the server.
#[derive(Clone, Copy)]
struct FetchPath<'a> {
    tls: Option<&'a rustls_pki_types::CertificateDer<'static>>,
    compress: bool,
}

/// `reps` FETCHes of the big message over one connection: MB/s over all of
/// them, bytes on the wire per FETCH, and `ferry`'s CPU time (user + system)
/// during them.
async fn big_fetch(
    addr: &str,
    bytes: usize,
    path: FetchPath<'_>,
    reps: usize,
    ferry: Option<&FerryProc>,
) -> (f64, u64, Duration) {
    let mut c = match path.tls {
        Some(ca) => TestClient::tls(addr, ca).await,
        None => TestClient::plain(addr).await,
    };
    c.patient(Duration::from_secs(60));
    c.greeting().await;
    c.login("alice", PASSWORD).await.assert_ok();
    c.cmd("SELECT Big").await.assert_ok();
    if path.compress {
        c.compress().await.assert_ok();
    }
    let cpu = || {
        ferry.map_or(Duration::ZERO, |f| {
            let (u, s) = f.cpu();
            u + s
        })
    };
    let (cpu0, wire0) = (cpu(), c.wire_read());
    let t = Instant::now();
    for _ in 0..reps {
        let r = c.cmd("FETCH 1 (BODY.PEEK[])").await;
        r.assert_ok();
        assert!(r.untagged[0].len() >= bytes);
    }
    let secs = t.elapsed().as_secs_f64();
    let (cpu, wire) = (cpu() - cpu0, c.wire_read() - wire0);
    c.logout().await;
    (
        (reps * bytes) as f64 / 1e6 / secs,
        wire / reps as u64,
        cpu / reps as u32,
    )
}

/// Logs in `n` sessions (8 at a time) and leaves them open.
async fn idle_sessions(
    addr: &str,
    n: usize,
    tls: Option<&rustls_pki_types::CertificateDer<'static>>,
    compress: bool,
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
                if compress {
                    c.compress().await.assert_ok();
                }
                c.cmd("SELECT INBOX").await.assert_ok();
                out.push(c);
            }
            out
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}

/// Connections (TLS when `ca` is given) + LOGIN + LOGOUT per second, 4
/// clients in parallel.
async fn login_rate(
    addr: &str,
    ca: Option<&rustls_pki_types::CertificateDer<'static>>,
    for_: Duration,
) -> f64 {
    let stop = Instant::now() + for_;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let addr = addr.to_string();
        let ca = ca.cloned();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < stop {
                let mut c = match &ca {
                    Some(ca) => TestClient::tls(addr.as_str(), ca).await,
                    None => TestClient::plain(addr.as_str()).await,
                };
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

async fn run(s: Scale, bench: bool) {
    // Only NEW matters for this workload (alice's INBOX and a big folder);
    // Ferry's merged phase is what users get. NEW runs as Dovecot usually
    // does: one imap process per connection.
    let env = TestEnv::builder()
        .allow_plaintext(true)
        .seed(false)
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
    let null = NullProxy::start(&direct);
    println!(
        "Ferry vs direct Dovecot (plaintext, loopback; Ferry in phase merged). \
         \"null\": a proxy that only copies bytes (tokio copy_bidirectional, \
         one thread), the floor for any proxy on this machine."
    );
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} {:>8} {:>22} {:>22}",
        "sessions",
        "dir c/s",
        "fer c/s",
        "null c/s",
        "ratio",
        "null",
        "p50 dir",
        "p50 fer",
        "p50 null",
        "ferry CPU (user+sys)",
        "null CPU (user+sys)",
    );
    for &n in s.sessions.iter().filter(|_| part("load")) {
        // Three rounds of direct, Ferry, null in turn, summed: a machine
        // whose load drifts then disturbs all three alike.
        let (mut d, mut f, mut z) = (Load::default(), Load::default(), Load::default());
        let (mut ferry_user, mut ferry_sys) = (Duration::ZERO, Duration::ZERO);
        let (mut null_user, mut null_sys) = (Duration::ZERO, Duration::ZERO);
        let (mut ferry_switches, mut null_switches) = (0, 0);
        let slice = s.seconds / 3.0;
        for _ in 0..3 {
            d.add(load(&direct, n, slice).await);
            let ((u0, s0), c0) = (ferry.cpu(), ferry.switches());
            f.add(load(&ferry.plain, n, slice).await);
            let (u1, s1) = ferry.cpu();
            (ferry_user, ferry_sys) = (ferry_user + (u1 - u0), ferry_sys + (s1 - s0));
            ferry_switches += ferry.switches() - c0;
            let ((u0, s0), c0) = (null.cpu(), null.switches());
            z.add(load(&null.addr, n, slice).await);
            let (u1, s1) = null.cpu();
            (null_user, null_sys) = (null_user + (u1 - u0), null_sys + (s1 - s0));
            null_switches += null.switches() - c0;
        }
        let per = |cpu: Duration, l: &Load| us(cpu) / l.commands() as f64;
        println!(
            "{:>8} {:>8.0} {:>8.0} {:>8.0} {:>6.2} {:>6.2} {:>6.0}µs {:>6.0}µs {:>6.0}µs {:>5.1}+{:>5.1}={:>6.1}µs {:>5.1}+{:>5.1}={:>6.1}µs",
            n,
            d.rate(),
            f.rate(),
            z.rate(),
            f.rate() / d.rate(),
            z.rate() / d.rate(),
            us(d.pct(0.5)),
            us(f.pct(0.5)),
            us(z.pct(0.5)),
            per(ferry_user, &f),
            per(ferry_sys, &f),
            per(ferry_user + ferry_sys, &f),
            per(null_user, &z),
            per(null_sys, &z),
            per(null_user + null_sys, &z),
        );
        println!(
            "{:>8} p99: direct {:.0}µs, Ferry {:.0}µs, null {:.0}µs; context switches per command: Ferry {:.2}, null {:.2}",
            "",
            us(d.pct(0.99)),
            us(f.pct(0.99)),
            us(z.pct(0.99)),
            ferry_switches as f64 / f.commands() as f64,
            null_switches as f64 / z.commands() as f64,
        );
    }

    if part("fetch") {
        let mb = s.big_bytes as f64 / 1e6;
        let reps = if bench { 5 } else { 1 };
        println!(
            "{} MB FETCH, {reps} times over one connection (COMPRESS: Ferry's \
             COMPRESS=DEFLATE toward the client, level 1; the bench's client inflates)",
            s.big_bytes / (1024 * 1024)
        );
        println!(
            "{:<32} {:>8} {:>16} {:>14} {:>17}",
            "", "MB/s", "Ferry CPU / MB", "on the wire", "Ferry VmHWM +KiB"
        );
        let hwm0 = ferry.status_kib("VmHWM:");
        let plain = FetchPath {
            tls: None,
            compress: false,
        };
        let (direct_mbs, wire, _) = big_fetch(&direct, s.big_bytes, plain, reps, None).await;
        println!(
            "{:<32} {direct_mbs:>8.0} {:>16} {:>11.1} MB",
            "direct, plaintext",
            "-",
            wire as f64 / 1e6
        );
        let ca = env.ca.clone();
        for (label, addr, path) in [
            ("Ferry, plaintext", &ferry.plain, plain),
            (
                "Ferry, plaintext, COMPRESS",
                &ferry.plain,
                FetchPath {
                    tls: None,
                    compress: true,
                },
            ),
            (
                "Ferry, TLS",
                &ferry.tls,
                FetchPath {
                    tls: Some(&ca),
                    compress: false,
                },
            ),
            (
                "Ferry, TLS, COMPRESS",
                &ferry.tls,
                FetchPath {
                    tls: Some(&ca),
                    compress: true,
                },
            ),
        ] {
            let hwm = ferry.status_kib("VmHWM:");
            let (mbs, wire, cpu) = big_fetch(addr, s.big_bytes, path, reps, Some(&ferry)).await;
            println!(
                "{label:<32} {mbs:>8.0} {:>13.2} ms {:>11.1} MB {:>17}  ({:.2}x direct)",
                cpu.as_secs_f64() * 1e3 / mb,
                wire as f64 / 1e6,
                ferry.status_kib("VmHWM:").saturating_sub(hwm),
                mbs / direct_mbs
            );
        }
        let growth = ferry.status_kib("VmHWM:").saturating_sub(hwm0);
        println!("Ferry peak RSS growth over these FETCHes: {growth} KiB");
    }

    let ca = env.ca.clone();
    drop(ferry);
    // Thousands of idle sessions: a second NEW that serves 50 connections
    // per imap process, and neither it nor Ferry caps one address at fewer.
    let idle_env = match part("idle") {
        true => Some(
            TestEnv::builder()
                .allow_plaintext(true)
                .new_conf(
                    "mail_max_userip_connections = 10000\n\
                     service imap {\n  client_limit = 50\n  service_count = 0\n  process_limit = 200\n}\n",
                )
                .extra_toml("[limits]\nmax_connections_per_ip = 10000\n")
                .start()
                .await,
        ),
        false => None,
    };
    // Each idle measurement in a fresh Ferry, so no freed memory is reused.
    let kinds = [(false, false), (true, false), (false, true)];
    for ((tls, compress), env) in kinds.into_iter().zip(idle_env.iter().cycle()) {
        let ca = env.ca.clone();
        let ca = &ca;
        let ferry = FerryProc::start(env).await;
        // A first session warms up lazily built state (TLS config, metrics,
        // the worker's compressor).
        let warm = idle_sessions(&ferry.tls, 1, Some(ca), compress).await;
        let (label, addr, tls) = match (tls, compress) {
            (true, _) => ("TLS", ferry.tls.clone(), Some(ca)),
            (false, true) => ("plaintext COMPRESS", ferry.plain.clone(), None),
            (false, false) => ("plaintext", ferry.plain.clone(), None),
        };
        let before = ferry.status_kib("VmRSS:");
        let held = idle_sessions(&addr, s.idle_sessions, tls, compress).await;
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
        let tls = login_rate(&ferry.tls, Some(&ca), s.logins_for).await;
        let plain = login_rate(&ferry.plain, None, s.logins_for).await;
        let direct = login_rate(&env.new.addr(), None, s.logins_for).await;
        println!(
            "login rate (connect + LOGIN + LOGOUT, 4 clients): through Ferry with TLS {tls:.0}/s, \
             through Ferry plaintext {plain:.0}/s, straight to NEW plaintext {direct:.0}/s"
        );
    }
}

fn main() {
    ferry::server::raise_open_files_limit();
    let bench = std::env::args().any(|a| a == "--bench");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run(scale(bench), bench));
}
