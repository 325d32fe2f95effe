//! End-to-end: one workload straight against Dovecot, through Ferry, and
//! through the proxies admins deploy instead — Dovecot as a proxy, nginx's
//! mail proxy, up-imapproxy — and a copy-only null proxy, all in front of
//! the same store, interleaved in slices within one run on one machine.
//! `cargo bench --bench e2e` (about ten minutes on two cores). Under `cargo
//! test` it runs a tiny version as a smoke test. Figures, never assertions.
//!
//! Every proxy runs as its own process tree, so its CPU time, context
//! switches and memory are read from /proc (the null proxy is a thread of
//! this process). A peer missing on the machine is printed as missing.
//!
//! For profiling a run can be narrowed: `FERRY_BENCH_SESSIONS=1,10`,
//! `FERRY_BENCH_SECONDS=20` (per slice), `FERRY_BENCH_LOGIN_SECONDS=5` (per
//! login row), `FERRY_BENCH_REPS=1`,
//! `FERRY_BENCH_ONLY=load,tls,fetch,idle,login` (the parts to run),
//! `FERRY_BENCH_PATHS=direct,ferry-new` (the paths to run),
//! `FERRY_BENCH_WRAP="valgrind --tool=callgrind"` (a command Ferry runs under).

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::HashMap,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::*;
use rustls_pki_types::CertificateDer;

struct Scale {
    /// Length of one slice: one path, one session count, one repetition.
    seconds: f64,
    reps: usize,
    sessions: Vec<usize>,
    tls_sessions: usize,
    idle_sessions: usize,
    big_bytes: usize,
    fetches: usize,
    logins_for: Duration,
}

fn scale(bench: bool) -> Scale {
    let mut s = if bench {
        Scale {
            seconds: 3.0,
            reps: 3,
            sessions: vec![1, 10, 100],
            tls_sessions: 10,
            idle_sessions: 2000,
            big_bytes: 20 * 1024 * 1024,
            fetches: 3,
            logins_for: Duration::from_millis(1500),
        }
    } else {
        Scale {
            seconds: 0.2,
            reps: 1,
            sessions: vec![1, 3],
            tls_sessions: 2,
            idle_sessions: 10,
            big_bytes: 256 * 1024,
            fetches: 1,
            logins_for: Duration::from_millis(200),
        }
    };
    let var = |name: &str| std::env::var(name).ok();
    if let Some(v) = var("FERRY_BENCH_SESSIONS") {
        s.sessions = v.split(',').filter_map(|n| n.trim().parse().ok()).collect();
    }
    if let Some(secs) = var("FERRY_BENCH_SECONDS").and_then(|v| v.parse().ok()) {
        s.seconds = secs;
    }
    if let Some(reps) = var("FERRY_BENCH_REPS").and_then(|v| v.parse().ok()) {
        s.reps = reps;
    }
    if let Some(secs) = var("FERRY_BENCH_LOGIN_SECONDS").and_then(|v| v.parse().ok()) {
        s.logins_for = Duration::from_secs_f64(secs);
    }
    s
}

fn listed(var: &str, name: &str) -> bool {
    std::env::var(var).map_or(true, |v| v.split(',').any(|p| p.trim() == name))
}

fn part(name: &str) -> bool {
    listed("FERRY_BENCH_ONLY", name)
}

// ───────────────────────────── measuring a proxy ─────────────────────────────

/// CPU time (all, and the part spent in the kernel) and context switches
/// (each a sleep and a wake-up) so far.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    cpu: Duration,
    sys: Duration,
    switches: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, o: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(o.cpu),
            sys: self.sys.saturating_sub(o.sys),
            switches: self.switches.saturating_sub(o.switches),
        }
    }
}

/// Where a path's usage is read.
#[derive(Debug, Clone, Copy)]
enum Meter {
    /// Nothing between client and store.
    None,
    /// A thread of this process (the null proxy).
    Thread(i32),
    /// A process and all its descendants (Dovecot's login and auth
    /// processes, nginx, imapproxyd's threads, Ferry's workers).
    Tree(u32),
}

impl Meter {
    fn usage(self) -> Usage {
        match self {
            Meter::None => Usage::default(),
            Meter::Thread(tid) => {
                let (cpu, sys) = stat_cpu(&format!("/proc/self/task/{tid}/stat"));
                Usage {
                    cpu,
                    sys,
                    switches: switches_of(Path::new(&format!("/proc/self/task/{tid}/status"))),
                }
            }
            Meter::Tree(root) => {
                let mut u = Usage::default();
                for pid in tree(root) {
                    let (cpu, sys) = stat_cpu(&format!("/proc/{pid}/stat"));
                    u.cpu += cpu;
                    u.sys += sys;
                    u.switches += std::fs::read_dir(format!("/proc/{pid}/task"))
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|task| switches_of(&task.path().join("status")))
                        .sum::<u64>();
                }
                u
            }
        }
    }

    /// Resident memory of the whole tree, KiB.
    fn rss_kib(self) -> u64 {
        match self {
            Meter::Tree(root) => tree(root)
                .into_iter()
                .map(|pid| proc_status_kib(pid, "VmRSS:"))
                .sum(),
            _ => 0,
        }
    }
}

/// Fields after the command name in a `/proc/.../stat` file.
fn stat_fields(path: &str) -> Vec<u64> {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return Vec::new();
    };
    stat[close + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect()
}

/// (utime + stime, stime), each with the same of reaped children (a
/// Dovecot login process that exited still counts), at 100 ticks a second.
fn stat_cpu(path: &str) -> (Duration, Duration) {
    let f = stat_fields(path);
    if f.len() < 15 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let ms = |ticks: u64| Duration::from_millis(ticks * 10);
    (ms(f[11] + f[12] + f[13] + f[14]), ms(f[12] + f[14]))
}

/// Voluntary and involuntary context switches from a task's `status` file.
fn switches_of(status: &Path) -> u64 {
    std::fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// `root` and every process below it.
fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(&ppid) = stat_fields(&format!("/proc/{pid}/stat")).get(1) {
            children.entry(ppid as u32).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        out.extend(children.get(&out[i]).into_iter().flatten());
        i += 1;
    }
    out
}

// ───────────────────────────── the paths ─────────────────────────────

/// Ferry as a child process with plaintext and TLS listeners.
struct FerryProc {
    child: Child,
    plain: String,
    tls: String,
}

impl FerryProc {
    async fn start(env: &TestEnv, phase: &str) -> FerryProc {
        let (plain, tls) = (free_addr(), free_addr());
        let toml = env
            .config_toml
            .replacen("imaps = \"127.0.0.1:0\"", &format!("imaps = \"{tls}\""), 1)
            .replacen("imap  = \"127.0.0.1:0\"", &format!("imap = \"{plain}\""), 1)
            .replacen(
                "default_phase = \"merged\"",
                &format!("default_phase = \"{phase}\""),
                1,
            );
        let conf = write_file(
            env.dir(),
            &format!("ferry-bench-{phase}.toml"),
            toml.as_bytes(),
        );
        let child = bench_ferry(&conf, &plain, Stdio::null()).await;
        FerryProc { child, plain, tls }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for FerryProc {
    fn drop(&mut self) {
        stop_gently(&mut self.child);
    }
}

fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A proxy that does nothing but copy bytes both ways, on one thread of its
/// own (so its CPU time can be read): what any proxy costs on this machine.
fn null_proxy(upstream: &str) -> (String, i32) {
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
    (addr, rx.recv().unwrap())
}

/// How a client reaches a path.
#[derive(Clone)]
enum Conn {
    Plain(String),
    /// Implicit TLS, and the certificate the path's certificate is.
    Tls(String, CertificateDer<'static>),
}

impl Conn {
    async fn open(&self) -> TestClient {
        let mut c = match self {
            Conn::Plain(addr) => TestClient::plain(addr.as_str()).await,
            Conn::Tls(addr, ca) => TestClient::tls(addr.as_str(), ca).await,
        };
        c.patient(Duration::from_secs(60));
        c.greeting().await;
        c
    }

    async fn login(&self) -> TestClient {
        let mut c = self.open().await;
        c.login("alice", PASSWORD).await.assert_ok();
        c
    }
}

/// One way to the store, and whether it is one of the proxies Ferry is
/// ranked against.
struct Route {
    name: &'static str,
    plain: Conn,
    tls: Option<Conn>,
    meter: Meter,
    peer: bool,
}

impl Route {
    /// How a client reaches it, over TLS or not (None: no TLS listener).
    fn conn(&self, tls: bool) -> Option<&Conn> {
        if tls {
            self.tls.as_ref()
        } else {
            Some(&self.plain)
        }
    }

    /// A path in front of which nothing is measured or ranked.
    fn baseline(name: &'static str, addr: String, meter: Meter) -> Route {
        Route {
            name,
            plain: Conn::Plain(addr),
            tls: None,
            meter,
            peer: false,
        }
    }
}

/// Whatever a path needs kept alive.
#[allow(dead_code)]
enum Keep {
    Ferry(FerryProc),
    Dovecot(Dovecot),
    Nginx(Nginx),
    Imapproxy(Imapproxy),
}

const FERRY_NEW: &str = "ferry-new";
const FERRY_MERGED: &str = "ferry-merged";

/// Dovecot as a proxy the way its documentation tunes one: login processes
/// that serve many connections each ("high-performance mode"), one per core.
const DOVECOT_PROXY_CONF: &str = "service imap-login {\n  service_count = 0\n  \
     process_min_avail = 2\n  client_limit = 5000\n}\ndefault_client_limit = 12000\n";

fn nginx_available() -> bool {
    Path::new("/usr/sbin/nginx").exists()
        && Path::new("/usr/lib/nginx/modules/ngx_mail_module.so").exists()
}

fn imapproxy_available() -> bool {
    Path::new("/usr/sbin/imapproxyd").exists()
}

/// Every route, in the order the slices take them.
const ROUTES: &[&str] = &[FERRY_NEW, FERRY_MERGED, "dovecot", "nginx", "imapproxy"];

/// Starts route `name` in front of `env`'s NEW store, or says why it cannot
/// (its software is not installed).
async fn start_route(env: &TestEnv, name: &'static str) -> Result<(Route, Keep), String> {
    let store = env.new.socket_addr();
    match name {
        FERRY_NEW | FERRY_MERGED => {
            let phase = if name == FERRY_NEW { "new" } else { "merged" };
            let ferry = FerryProc::start(env, phase).await;
            let route = Route {
                name,
                plain: Conn::Plain(ferry.plain.clone()),
                tls: Some(Conn::Tls(ferry.tls.clone(), env.ca.clone())),
                meter: Meter::Tree(ferry.pid()),
                peer: false,
            };
            Ok((route, Keep::Ferry(ferry)))
        }
        "dovecot" => {
            let d = Dovecot::start_with(Layout::New, true, DOVECOT_PROXY_CONF).await;
            d.proxy_to(store);
            let route = Route {
                name,
                plain: Conn::Plain(d.addr()),
                tls: Some(Conn::Tls(d.imaps_addr().unwrap(), d.ca_der().unwrap())),
                meter: Meter::Tree(d.pid().unwrap()),
                peer: true,
            };
            Ok((route, Keep::Dovecot(d)))
        }
        "nginx" if nginx_available() => {
            let (cert, key) = (env.dir().join("ferry.crt"), env.dir().join("ferry.key"));
            let n = Nginx::start_with_tls(store, Some((&cert, &key))).await;
            let route = Route {
                name,
                plain: Conn::Plain(n.addr().to_string()),
                tls: Some(Conn::Tls(n.tls_addr().unwrap().to_string(), env.ca.clone())),
                meter: Meter::Tree(n.pid()),
                peer: true,
            };
            Ok((route, Keep::Nginx(n)))
        }
        "nginx" => Err("not installed (apt-get install nginx-light libnginx-mod-mail)".into()),
        "imapproxy" if imapproxy_available() => {
            let p = Imapproxy::start(store).await;
            let route = Route {
                name,
                plain: Conn::Plain(p.addr().to_string()),
                // It speaks TLS only towards the server.
                tls: None,
                meter: Meter::Tree(p.pid()),
                peer: true,
            };
            Ok((route, Keep::Imapproxy(p)))
        }
        "imapproxy" => Err("not installed (apt-get install imapproxy)".into()),
        _ => unreachable!("unknown route {name}"),
    }
}

// ───────────────────────────── the workload ─────────────────────────────

/// The mixed workload, 20 commands in a fixed order: NOOP 8, UID FETCH of a
/// body 6, UID STORE 3, UID SEARCH 2, FETCH 1:* FLAGS 1 — 40/30/15/10/5 %.
const MIX: &[u8; 20] = b"NFSNFNQNFSLNFNQNFSNF";

/// Messages in the bench INBOX: bodies of 20 to 41 KB, 30 KB on average,
/// so the mix moves about 10 KB per command.
const MESSAGES: usize = 50;

fn command(session: usize, i: usize) -> String {
    let uid = 1 + (i * 7 + session * 13) % MESSAGES;
    match MIX[i % MIX.len()] {
        b'N' => "NOOP".into(),
        b'F' => format!("UID FETCH {uid} (BODY.PEEK[])"),
        b'S' if (i / MIX.len()).is_multiple_of(2) => format!("UID STORE {uid} +FLAGS (\\Flagged)"),
        b'S' => format!("UID STORE {uid} -FLAGS (\\Flagged)"),
        b'Q' => "UID SEARCH UNSEEN".into(),
        _ => "FETCH 1:* (FLAGS)".into(),
    }
}

/// One slice: commands done, seconds, the proxy's usage meanwhile.
#[derive(Debug, Clone, Copy)]
struct Slice {
    commands: usize,
    secs: f64,
    usage: Usage,
}

impl Slice {
    fn rate(&self) -> f64 {
        self.commands as f64 / self.secs
    }
    fn cpu_us(&self) -> f64 {
        self.usage.cpu.as_secs_f64() * 1e6 / self.commands as f64
    }
    fn sys_us(&self) -> f64 {
        self.usage.sys.as_secs_f64() * 1e6 / self.commands as f64
    }
    fn switches(&self) -> f64 {
        self.usage.switches as f64 / self.commands as f64
    }
}

/// `sessions` clients log in and SELECT, then run the mix for `seconds`
/// (usage is read around that part only); latencies go to `lat`.
async fn load(
    conn: &Conn,
    sessions: usize,
    seconds: f64,
    meter: Meter,
    lat: &mut Vec<Duration>,
) -> Slice {
    let mut clients = Vec::new();
    for _ in 0..sessions {
        let mut c = conn.login().await;
        c.cmd("SELECT INBOX").await.assert_ok();
        clients.push(c);
    }
    let u0 = meter.usage();
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for (n, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = n;
            while Instant::now() < stop {
                let cmd = command(n, i);
                let t = Instant::now();
                c.cmd(&cmd).await.assert_ok();
                lat.push(t.elapsed());
                i += 1;
            }
            (c, lat)
        }));
    }
    let mut clients = Vec::new();
    let mut commands = 0;
    for t in tasks {
        let (c, l) = t.await.unwrap();
        commands += l.len();
        lat.extend(l);
        clients.push(c);
    }
    let secs = start.elapsed().as_secs_f64();
    let usage = meter.usage() - u0;
    let mut bye = tokio::task::JoinSet::new();
    for mut c in clients {
        bye.spawn(async move { c.logout().await });
    }
    bye.join_all().await;
    Slice {
        commands,
        secs,
        usage,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn pct(lat: &mut [Duration], p: f64) -> f64 {
    lat.sort_unstable();
    lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}

/// Ferry's place among the peers by `key` (higher is better when `high`).
fn rank<S: AsRef<str>>(rows: &[(S, bool, f64)], ferry: &str, high: bool) -> String {
    let Some(&(_, _, mine)) = rows.iter().find(|r| r.0.as_ref() == ferry) else {
        return String::new();
    };
    let contenders: Vec<f64> = rows.iter().filter(|r| r.1).map(|r| r.2).collect();
    let better = contenders
        .iter()
        .filter(|&&v| if high { v > mine } else { v < mine })
        .count();
    format!("{ferry} {} of {}", better + 1, contenders.len() + 1)
}

/// The mix through every route (plaintext, or TLS where `tls`; ratios to
/// `direct` when it is among them) at each session count, `reps` times in
/// turn; medians per route.
async fn load_table(s: &Scale, routes: &[&Route], sessions: &[usize], tls: bool) {
    println!(
        "{:>8} {:<13} {:>8} {:>7} {:>8} {:>8} {:>13} {:>9}",
        "sessions", "path", "c/s", "÷direct", "p50 µs", "p99 µs", "CPU µs/cmd", "cs/cmd"
    );
    println!("{:>67}", "(of it sys)");
    let paths: Vec<(&Route, &Conn)> = routes
        .iter()
        .filter_map(|r| Some((*r, r.conn(tls)?)))
        .collect();
    let direct = paths.iter().position(|(r, _)| r.name == "direct");
    for &n in sessions {
        let mut slices: Vec<Vec<Slice>> = vec![Vec::new(); paths.len()];
        let mut lats: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
        for _ in 0..s.reps {
            for (k, (r, conn)) in paths.iter().enumerate() {
                slices[k].push(load(conn, n, s.seconds, r.meter, &mut lats[k]).await);
            }
        }
        let base: Option<Vec<f64>> = direct.map(|d| slices[d].iter().map(Slice::rate).collect());
        let mut rows = Vec::new();
        let mut cpu_rows = Vec::new();
        for (k, (r, _)) in paths.iter().enumerate() {
            let (name, peer, meter) = (r.name, r.peer, r.meter);
            let rate = median(slices[k].iter().map(Slice::rate).collect());
            let ratio = base.as_ref().map_or(f64::NAN, |b| {
                median(slices[k].iter().zip(b).map(|(x, d)| x.rate() / d).collect())
            });
            let metered = !matches!(meter, Meter::None);
            let cpu = median(slices[k].iter().map(Slice::cpu_us).collect());
            let sys = median(slices[k].iter().map(Slice::sys_us).collect());
            let cs = median(slices[k].iter().map(Slice::switches).collect());
            println!(
                "{n:>8} {name:<13} {rate:>8.0} {:>7} {:>8.0} {:>8.0} {:>13} {:>9}",
                if ratio.is_nan() {
                    "-".to_string()
                } else {
                    format!("{ratio:.2}")
                },
                pct(&mut lats[k], 0.5),
                pct(&mut lats[k], 0.99),
                if metered {
                    format!("{cpu:.1} ({sys:.1})")
                } else {
                    "-".into()
                },
                if metered {
                    format!("{cs:.2}")
                } else {
                    "-".into()
                },
            );
            rows.push((name, peer, rate));
            cpu_rows.push((name, peer, cpu));
        }
        for ferry in [FERRY_NEW, FERRY_MERGED] {
            let t = rank(&rows, ferry, true);
            if !t.is_empty() {
                println!(
                    "{:>8} rank by throughput: {t}; by CPU per command: {}",
                    "",
                    rank(&cpu_rows, ferry, false)
                );
            }
        }
    }
}

// ───────────────────────────── the other parts ─────────────────────────────

/// `reps` FETCHes of the big message over one connection: MB/s over all of
/// them, bytes on the wire per FETCH, and the path's CPU time per FETCH.
async fn big_fetch(
    conn: &Conn,
    compress: bool,
    bytes: usize,
    reps: usize,
    meter: Meter,
) -> (f64, u64, Duration) {
    let mut c = conn.login().await;
    c.cmd("SELECT Big").await.assert_ok();
    if compress {
        c.compress().await.assert_ok();
    }
    let (u0, wire0) = (meter.usage(), c.wire_read());
    let t = Instant::now();
    for _ in 0..reps {
        let r = c.cmd("FETCH 1 (BODY.PEEK[])").await;
        r.assert_ok();
        assert!(r.untagged[0].len() >= bytes);
    }
    let secs = t.elapsed().as_secs_f64();
    let (usage, wire) = (meter.usage() - u0, c.wire_read() - wire0);
    c.logout().await;
    (
        (reps * bytes) as f64 / 1e6 / secs,
        wire / reps as u64,
        usage.cpu / reps as u32,
    )
}

/// Logs in `n` sessions (8 at a time), each SELECTs INBOX, and leaves them open.
async fn idle_sessions(conn: &Conn, n: usize, compress: bool) -> Vec<TestClient> {
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..8 {
        let conn = conn.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for _ in (k..n).step_by(8) {
                let mut c = conn.login().await;
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

/// Logins per second through `conn`, and the proxy's CPU per login (ms):
/// 10 clients in parallel, each connecting, logging in, SELECTing INBOX and
/// logging out in a loop.
async fn login_rate(conn: &Conn, for_: Duration, meter: Meter) -> (f64, f64) {
    let start = Instant::now();
    let stop = start + for_;
    let u0 = meter.usage();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let conn = conn.clone();
        tasks.spawn(async move {
            let mut n = 0usize;
            while Instant::now() < stop {
                let mut c = conn.login().await;
                c.cmd("SELECT INBOX").await.assert_ok();
                c.logout().await;
                n += 1;
            }
            n
        });
    }
    let total: usize = tasks.join_all().await.into_iter().sum();
    let cpu = (meter.usage() - u0).cpu.as_secs_f64() * 1e3 / total.max(1) as f64;
    (total as f64 / start.elapsed().as_secs_f64(), cpu)
}

async fn run(s: Scale) {
    // Only NEW matters for this workload; OLD is there for Ferry's merged
    // phase, where INBOX is NEW's as well.
    let env = TestEnv::builder()
        .allow_plaintext(true)
        .seed(false)
        .start()
        .await;
    let inbox: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|i| {
            let text = "Some text of a typical mail.\r\n".repeat(650 + i * 15);
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

    let (mut routes, mut keep) = (Vec::new(), Vec::new());
    for &name in ROUTES.iter().filter(|n| listed("FERRY_BENCH_PATHS", n)) {
        match start_route(&env, name).await {
            Ok((route, k)) => {
                if let Meter::Tree(pid) = route.meter {
                    println!("{name}: pid {pid}");
                }
                routes.push(route);
                keep.push(k);
            }
            Err(why) => println!("MISSING peer {name}: {why}; its rows are absent"),
        }
    }
    let (null_addr, null_tid) = null_proxy(&env.new.addr());
    let direct = Route::baseline("direct", env.new.addr(), Meter::None);
    let null = Route::baseline("null", null_addr, Meter::Thread(null_tid));
    let all: Vec<&Route> = [&direct, &null].into_iter().chain(&routes).collect();

    if part("load") {
        println!(
            "\nThe mix (NOOP 40 %, UID FETCH body 30 %, UID STORE 15 %, UID SEARCH 10 %, \
             FETCH 1:* FLAGS 5 %; about 10 KB per command; no pipelining), plaintext on \
             loopback, {} × {:.0} s per path and session count, paths in turn; medians; \
             ÷direct within each repetition; CPU = the proxy's user + system time; \
             cs = its context switches",
            s.reps, s.seconds
        );
        load_table(&s, &all, &s.sessions, false).await;
    }
    if part("tls") {
        println!("\nThe same mix over TLS (implicit, each proxy's own listener)");
        load_table(&s, &all, &[s.tls_sessions], true).await;
    }
    if part("fetch") {
        fetch_table(&s, &all).await;
    }
    if part("login") {
        let with_direct: Vec<&Route> = all.iter().copied().filter(|r| r.name != "null").collect();
        login_table(&s, &with_direct).await;
    }
    drop(keep);

    if part("idle") {
        idle(&s).await;
    }
}

/// One row of the FETCH table.
struct FetchPath<'a> {
    label: String,
    peer: bool,
    conn: &'a Conn,
    compress: bool,
    meter: Meter,
}

/// The big FETCH through every route in plaintext, then over TLS, then
/// Ferry's COMPRESS; ratios to the null proxy; Ferry's peak RSS growth.
async fn fetch_table(s: &Scale, routes: &[&Route]) {
    let mb = s.big_bytes as f64 / 1e6;
    println!(
        "\n{} MB FETCH, {} times over one connection, {} repetitions; medians \
         (COMPRESS: Ferry's COMPRESS=DEFLATE toward the client)",
        s.big_bytes / (1024 * 1024),
        s.fetches,
        s.reps
    );
    println!(
        "{:<24} {:>8} {:>7} {:>14} {:>12}",
        "path", "MB/s", "÷null", "CPU ms / MB", "on the wire"
    );
    let row = |r: &Route, conn, suffix: &str, compress| FetchPath {
        label: format!("{}{suffix}", r.name),
        // Peers are ranked by their plaintext rows.
        peer: r.peer && suffix.is_empty(),
        conn,
        compress,
        meter: r.meter,
    };
    let mut paths: Vec<FetchPath> = routes.iter().map(|r| row(r, &r.plain, "", false)).collect();
    for r in routes {
        if let Some(tls) = &r.tls {
            paths.push(row(r, tls, " TLS", false));
        }
    }
    let ferry = routes.iter().find(|r| r.name == FERRY_NEW);
    if let Some(r) = ferry {
        paths.push(row(r, &r.plain, " COMPRESS", true));
        if let Some(tls) = &r.tls {
            paths.push(row(r, tls, " TLS+COMPRESS", true));
        }
    }
    let ferry_pid = ferry.and_then(|r| match r.meter {
        Meter::Tree(pid) => Some(pid),
        _ => None,
    });
    let hwm0 = ferry_pid.map(|p| proc_status_kib(p, "VmHWM:"));
    let mut got: Vec<Vec<(f64, u64, Duration)>> = vec![Vec::new(); paths.len()];
    for _ in 0..s.reps {
        for (k, p) in paths.iter().enumerate() {
            got[k].push(big_fetch(p.conn, p.compress, s.big_bytes, s.fetches, p.meter).await);
        }
    }
    let null = paths.iter().position(|p| p.label == "null");
    let null_rates: Option<Vec<f64>> = null.map(|z| got[z].iter().map(|g| g.0).collect());
    let mut rows = Vec::new();
    for (k, p) in paths.iter().enumerate() {
        let rate = median(got[k].iter().map(|g| g.0).collect());
        let ratio = null_rates.as_ref().map_or(f64::NAN, |z| {
            median(got[k].iter().zip(z).map(|(g, z)| g.0 / z).collect())
        });
        let cpu = median(
            got[k]
                .iter()
                .map(|g| g.2.as_secs_f64() * 1e3 / mb)
                .collect(),
        );
        let wire = median(got[k].iter().map(|g| g.1 as f64).collect());
        println!(
            "{:<24} {rate:>8.0} {ratio:>7.2} {:>14} {:>9.1} MB",
            p.label,
            if matches!(p.meter, Meter::None) {
                "-".into()
            } else {
                format!("{cpu:.2}")
            },
            wire / 1e6
        );
        rows.push((p.label.as_str(), p.peer, rate));
    }
    println!("rank by MB/s (plaintext): {}", rank(&rows, FERRY_NEW, true));
    if let (Some(pid), Some(hwm0)) = (ferry_pid, hwm0) {
        println!(
            "{FERRY_NEW} peak RSS growth over all these FETCHes: {} KiB",
            proc_status_kib(pid, "VmHWM:").saturating_sub(hwm0)
        );
    }
}

/// Logins per second through every route, plaintext and TLS, `reps` times
/// in turn; medians.
async fn login_table(s: &Scale, routes: &[&Route]) {
    println!(
        "\nLogins per second (10 clients in parallel: connect, LOGIN, SELECT, LOGOUT), \
         {} × {:.1} s per path; medians; CPU = the proxy's per login",
        s.reps,
        s.logins_for.as_secs_f64()
    );
    // Per route, per plaintext/TLS: the rate and CPU of each repetition.
    let mut got = vec![[Vec::new(), Vec::new()]; routes.len()];
    for _ in 0..s.reps {
        for (k, r) in routes.iter().enumerate() {
            for tls in [false, true] {
                if let Some(conn) = r.conn(tls) {
                    got[k][tls as usize].push(login_rate(conn, s.logins_for, r.meter).await);
                }
            }
        }
    }
    println!(
        "{:<14} {:>12} {:>12} {:>12} {:>12}",
        "path", "plaintext/s", "CPU ms", "TLS/s", "CPU ms"
    );
    let mut rows: [Vec<(&str, bool, f64)>; 2] = [Vec::new(), Vec::new()];
    for (r, runs) in routes.iter().zip(got) {
        let cells = runs.map(|v: Vec<(f64, f64)>| {
            (!v.is_empty()).then(|| {
                (
                    median(v.iter().map(|x| x.0).collect()),
                    median(v.iter().map(|x| x.1).collect()),
                )
            })
        });
        for (tls, cell) in cells.iter().enumerate() {
            if let Some((rate, _)) = cell {
                rows[tls].push((r.name, r.peer, *rate));
            }
        }
        let rate = |c: Option<(f64, f64)>| c.map_or("-".to_string(), |c| format!("{:.0}", c.0));
        let cpu = |c: Option<(f64, f64)>| match (c, r.meter) {
            (None, _) | (_, Meter::None) => "-".to_string(),
            (Some(c), _) => format!("{:.2}", c.1),
        };
        println!(
            "{:<14} {:>12} {:>12} {:>12} {:>12}",
            r.name,
            rate(cells[0]),
            cpu(cells[0]),
            rate(cells[1]),
            cpu(cells[1])
        );
    }
    println!(
        "rank: plaintext {}; TLS {}",
        rank(&rows[0], FERRY_NEW, true),
        rank(&rows[1], FERRY_NEW, true)
    );
}

/// Memory per idle session: each path freshly started (no memory freed by
/// earlier sessions to reuse), a first session to warm it up, then
/// `idle_sessions` logged in and SELECTed; the growth of the whole tree's RSS.
async fn idle(s: &Scale) {
    // A NEW that takes thousands of connections from one address, 50 per
    // imap process; Ferry's per-address limit raised to match.
    let env = TestEnv::builder()
        .allow_plaintext(true)
        .new_conf(
            "mail_max_userip_connections = 10000\n\
             service imap {\n  client_limit = 50\n  service_count = 0\n  process_limit = 200\n}\n",
        )
        .extra_toml("[limits]\nmax_connections_per_ip = 10000\n")
        .start()
        .await;
    println!(
        "\nIdle sessions: {} logged in and SELECTed per path, each path freshly started",
        s.idle_sessions
    );
    println!(
        "{:<24} {:>14} {:>14}",
        "path", "RSS growth KiB", "KiB/session"
    );
    let mut rows: [Vec<(String, bool, f64)>; 2] = [Vec::new(), Vec::new()];
    let variants: &[(&str, bool, bool)] = &[
        (FERRY_NEW, false, false),
        (FERRY_NEW, true, false),
        (FERRY_NEW, false, true),
        ("dovecot", false, false),
        ("dovecot", true, false),
        ("nginx", false, false),
        ("nginx", true, false),
        ("imapproxy", false, false),
    ];
    for &(name, tls, compress) in variants {
        if !listed("FERRY_BENCH_PATHS", name) {
            continue;
        }
        let (r, keep) = match start_route(&env, name).await {
            Ok(x) => x,
            Err(why) => {
                println!("{name:<24} MISSING: {why}");
                continue;
            }
        };
        let Some(conn) = r.conn(tls).cloned() else {
            continue;
        };
        let warm = idle_sessions(&conn, 1, compress).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = r.meter.rss_kib();
        let held = idle_sessions(&conn, s.idle_sessions, compress).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = r.meter.rss_kib();
        let per = after.saturating_sub(before) as f64 / s.idle_sessions as f64;
        let label = format!(
            "{name}{}{}",
            if tls { " TLS" } else { "" },
            if compress { " COMPRESS" } else { "" }
        );
        println!(
            "{label:<24} {:>14} {per:>14.1}",
            after.saturating_sub(before)
        );
        if !compress {
            rows[tls as usize].push((name.to_string(), r.peer, per));
        }
        drop(held);
        drop(warm);
        drop(keep);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "rank by memory per session: plaintext {}; TLS {}",
        rank(&rows[0], FERRY_NEW, false),
        rank(&rows[1], FERRY_NEW, false)
    );
}

fn main() {
    ferry::server::raise_open_files_limit();
    let bench = std::env::args().any(|a| a == "--bench");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run(scale(bench)));
}
