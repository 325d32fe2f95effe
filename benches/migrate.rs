//! The copier's throughput against NEW's own limit, in one run on one
//! machine: `cargo bench --bench migrate`, 10 users × 5,000 messages on OLD
//! (535 MB), copied to NEW by two rows, three repetitions (about nine
//! minutes on two quiet cores). Under `cargo test` it runs a tiny version (2 users × 50
//! messages, two repetitions) as a smoke test. Figures, never assertions —
//! except that a copy that is not complete makes its figure meaningless, and
//! panics.
//!
//! - **engine**: `ferry --config F migrate USER…` as its own release-built
//!   process, users one after another as it runs them. Its peak RSS is
//!   VmHWM from /proc (polled), its CPU time `wait4`'s rusage.
//! - **baseline**: the same messages, read from OLD beforehand (not timed),
//!   appended straight to NEW by this process: per user one plaintext
//!   connection, one pipelined MULTIAPPEND (RFC 3502) per folder with
//!   LITERAL+ literals, flags and dates, all folders' commands written at
//!   once. No copier can write to NEW faster than NEW takes it this way.
//!
//! Each repetition starts from empty targets: NEW's copies are deleted and
//! the state file removed. The two rows take turns going first.
//!
//! Knobs: `FERRY_BENCH_USERS`, `FERRY_BENCH_MESSAGES` (per user),
//! `FERRY_BENCH_REPS`; `FERRY_BENCH_WRAP="heaptrack -o /tmp/ht"` runs Ferry
//! under a profiler (whose own process the figures then include);
//! `FERRY_BENCH_NEW_CONF="mail_fsync = never"` is added to NEW's
//! dovecot.conf, to see what NEW's disk costs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::*;

#[derive(Clone, Copy)]
struct Scale {
    users: usize,
    messages: usize,
    reps: usize,
}

fn scale(bench: bool) -> Scale {
    let knob = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(default)
    };
    if bench {
        Scale {
            users: knob("FERRY_BENCH_USERS", 10).min(BULK_USERS),
            messages: knob("FERRY_BENCH_MESSAGES", 5_000),
            // A repetition of the full run takes under three minutes on a
            // quiet machine here (the engine two, the baseline half of
            // one, checks and clean-up), twice that when the host is busy.
            reps: knob("FERRY_BENCH_REPS", 3),
        }
    } else {
        Scale {
            users: 2,
            messages: 50,
            reps: 2,
        }
    }
}

/// One OLD folder of each user: its wire name on OLD, its name below the
/// copies' prefix on NEW, and its share of the user's messages (tenths).
const FOLDERS: [(&str, &str, usize); 3] = [
    ("INBOX", "INBOX", 6),
    ("INBOX.Archive", "Archive", 3),
    ("INBOX.Sent", "Sent", 1),
];

/// Where the engine puts OLD's folders on NEW (archive mode, `Old/`), and
/// where the baseline puts the same messages.
const ENGINE_PREFIX: &str = "Old";
const BASELINE_PREFIX: &str = "Base";

/// How many of a user's `n` messages folder `f` holds.
fn share(n: usize, f: usize) -> usize {
    let first: usize = FOLDERS[..f].iter().map(|(_, _, t)| n * t / 10).sum();
    if f + 1 == FOLDERS.len() {
        n - first
    } else {
        n * FOLDERS[f].2 / 10
    }
}

// ───────────────────────────── the mail ─────────────────────────────

/// splitmix64: a deterministic stream per message.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A message size from 1 KB to 100 KB: 1 KB × 100^(v^1.4), v the mean of
/// two uniforms. Mean ≈ 10.4 KB, median ≈ 5.7 KB, p90 ≈ 25 KB, p99 ≈ 64 KB:
/// mostly short mail, a tail of attachments.
fn size(rng: &mut Rng) -> usize {
    let v = (rng.unit() + rng.unit()) / 2.0;
    (1024.0 * 100f64.powf(v.powf(1.4))) as usize
}

/// `dd-Mon-yyyy hh:mm:ss +0000` of a Unix time (civil date after Howard
/// Hinnant's `civil_from_days`).
fn imap_date(t: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, secs) = ((t / 86_400) as i64, t % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}-{}-{year} {:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The `i`-th message of `user`'s folder `f`, as [`Dovecot::append_many`]
/// takes it: mostly \Seen, some answered, flagged or with a keyword, each
/// its own INTERNALDATE, sizes from [`size`], text of pseudo-random words.
fn mail(user: usize, f: usize, i: usize) -> (String, Vec<u8>) {
    let mut rng = Rng(((user as u64) << 40) ^ ((f as u64) << 32) ^ i as u64);
    let flags = [
        "(\\Seen)",
        "(\\Seen)",
        "(\\Seen \\Answered)",
        "()",
        "(\\Seen \\Flagged)",
        "(\\Seen $Work)",
        "(\\Seen)",
    ][i % 7];
    // From 2019 on, an hour or so apart, distinct within each user.
    let date = imap_date(1_546_300_800 + ((f * 100_000 + i) as u64) * 3_607 + user as u64 * 61);
    let total = size(&mut rng);
    let mut m = format!(
        "From: Sender {i} <sender{}@ferry.test>\r\n\
         To: bulk{user} <bulk{user}@ferry.test>\r\n\
         Subject: Migration bench {user}/{f}/{i}\r\n\
         Date: {}\r\n\
         Message-ID: <bench.{user}.{f}.{i}@ferry.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n",
        rng.next() % 100,
        date.replace('-', " ")
    )
    .into_bytes();
    const WORDS: [&str; 16] = [
        "the",
        "mail",
        "store",
        "migration",
        "of",
        "a",
        "message",
        "folder",
        "and",
        "is",
        "to",
        "copied",
        "server",
        "new",
        "old",
        "user",
    ];
    // Lines of words up to 72 characters, until the size is reached.
    while m.len() + 2 < total {
        let room = (total - m.len() - 2).min(72);
        let mut line = Vec::with_capacity(room);
        while line.len() < room {
            let w = WORDS[(rng.next() % 16) as usize].as_bytes();
            let take = w.len().min(room - line.len());
            line.extend_from_slice(&w[..take]);
            if line.len() < room {
                line.push(b' ');
            }
        }
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
    }
    (format!("{flags} \"{date}\""), m)
}

async fn seed(old: &Dovecot, s: &Scale) {
    for u in 1..=s.users {
        let user = bulk_user(u);
        old.create(&user, "INBOX.Archive").await;
        for (f, (name, _, _)) in FOLDERS.iter().enumerate() {
            let messages: Vec<_> = (0..share(s.messages, f)).map(|i| mail(u, f, i)).collect();
            old.append_many(&user, name, &messages).await;
        }
    }
}

// ───────────────────────────── the baseline ─────────────────────────────

/// What the baseline sends for one user: its CREATEs and MULTIAPPENDs in
/// one piece, and the tags to wait for.
struct Pipeline {
    user: String,
    bytes: Vec<u8>,
    tags: Vec<String>,
}

/// One FETCH answer's (flags, INTERNALDATE, RFC822.SIZE, message).
fn parse_fetch(r: &[u8]) -> Option<(String, String, u64, &[u8])> {
    let eol = r.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&r[..eol]).ok()?;
    let after = |key: &str| Some(&head[head.find(key)? + key.len()..]);
    let flags = after("FLAGS (")?;
    let flags: Vec<&str> = flags[..flags.find(')')?]
        .split_whitespace()
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .collect();
    let date = after("INTERNALDATE \"")?;
    let date = &date[..date.find('"')?];
    let digits =
        |s: &str| -> Option<u64> { s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok() };
    let size = digits(after("RFC822.SIZE ")?)?;
    let len = usize::try_from(digits(after("BODY[] {")?)?).ok()?;
    let body = r.get(eol + 2..eol + 2 + len)?;
    Some((
        format!("({})", flags.join(" ")),
        date.to_string(),
        size,
        body,
    ))
}

/// Reads every user's messages from OLD: the baseline's pipelines, and the
/// number of messages and their RFC822.SIZE sum.
async fn read_old(old: &Dovecot, s: &Scale) -> (Vec<Pipeline>, usize, u64) {
    let (mut messages, mut bytes) = (0, 0);
    let mut pipelines = Vec::new();
    for u in 1..=s.users {
        let user = bulk_user(u);
        let mut c = old.client(&user).await;
        c.patient(Duration::from_secs(600));
        let mut p = Pipeline {
            user: user.clone(),
            bytes: Vec::new(),
            tags: Vec::new(),
        };
        for (old_name, name, _) in FOLDERS {
            let dest = quoted(&format!("{BASELINE_PREFIX}/{name}"));
            c.cmd(&format!("EXAMINE {}", quoted(old_name)))
                .await
                .assert_ok();
            let r = c
                .cmd("UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
                .await;
            r.assert_ok();
            let tag = format!("c{}", p.tags.len());
            p.bytes
                .extend_from_slice(format!("{tag} CREATE {dest}\r\n").as_bytes());
            p.tags.push(tag);
            let tag = format!("a{}", p.tags.len());
            p.bytes
                .extend_from_slice(format!("{tag} APPEND {dest}").as_bytes());
            p.tags.push(tag);
            for answer in &r.untagged {
                let (flags, date, size, body) = parse_fetch(answer)
                    .unwrap_or_else(|| panic!("unexpected FETCH answer: {}", lossy(answer)));
                assert_eq!(size, body.len() as u64, "RFC822.SIZE of {}", lossy(answer));
                p.bytes.extend_from_slice(
                    format!(" {flags} \"{date}\" {{{}+}}\r\n", body.len()).as_bytes(),
                );
                p.bytes.extend_from_slice(body);
                messages += 1;
                bytes += size;
            }
            p.bytes.extend_from_slice(b"\r\n");
        }
        c.logout().await;
        pipelines.push(p);
    }
    (pipelines, messages, bytes)
}

/// The baseline: users one after another, each over one plaintext
/// connection with all of its commands written at once.
async fn baseline(new: &Dovecot, pipelines: &[Pipeline]) -> Duration {
    let start = Instant::now();
    for p in pipelines {
        let mut c = TestClient::plain(new.addr()).await;
        c.patient(Duration::from_secs(600));
        c.greeting().await;
        c.login(&p.user, PASSWORD).await.assert_ok();
        c.send(&p.bytes).await;
        for tag in &p.tags {
            let r = c.read_until_tagged(tag).await;
            assert!(r.is_ok(), "{}: {}", p.user, r.text());
        }
        c.logout().await;
    }
    start.elapsed()
}

// ───────────────────────────── the engine ─────────────────────────────

/// Whether child `pid` has exited, leaving it to be reaped (WNOWAIT).
fn exited(pid: libc::pid_t) -> bool {
    // SAFETY: siginfo_t is plain old data; zeroed, si_pid stays 0 when no
    // child changed state (WNOHANG).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: info is valid for writes; WNOWAIT leaves the child unreaped.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: waitid filled in (or left zeroed) a SIGCHLD siginfo.
    r != 0 || unsafe { info.si_pid() } != 0
}

/// VmHWM of a live process, in KiB (None once it is a zombie).
fn vm_hwm(pid: libc::pid_t) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One `ferry migrate` run: wall time, Ferry's peak RSS (VmHWM, KiB,
/// polled every 20 ms) and CPU time.
struct EngineRun {
    wall: Duration,
    max_rss_kib: u64,
    cpu: Duration,
}

fn engine(config: &Path, s: &Scale, log: &Path) -> EngineRun {
    let out = std::fs::File::create(log).expect("create the migrate log");
    let err = out.try_clone().expect("dup the migrate log");
    let start = Instant::now();
    let mut command = ferry_command();
    // Reaped by wait4 below, which std's Child cannot do: it gives rusage.
    #[allow(clippy::zombie_processes)]
    let child = command
        .arg("--config")
        .arg(config)
        .arg("migrate")
        .args((1..=s.users).map(bulk_user))
        .env("RUST_LOG", "warn")
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn ferry migrate");
    let pid = child.id() as libc::pid_t;
    // Peak RSS is polled from /proc: wait4's ru_maxrss would be this bench's
    // own, which the child inherits at the exec (and which holds the
    // baseline's messages).
    let mut peak_kib = 0;
    while !exited(pid) {
        peak_kib = peak_kib.max(vm_hwm(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut status = 0;
    // SAFETY: rusage is plain old data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not reaped yet (std's Child never waits
    // unless asked); status and usage are valid for writes.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(
        ok,
        "ferry migrate failed (wait status {status}):\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    EngineRun {
        wall,
        max_rss_kib: peak_kib,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
    }
}

// ───────────────────────────── checks and clean-up ─────────────────────────────

/// Messages and bytes (RFC822.SIZE sum) NEW holds under `prefix` for all
/// users.
async fn held(new: &Dovecot, s: &Scale, prefix: &str) -> (usize, u64) {
    let (mut messages, mut bytes) = (0, 0);
    for u in 1..=s.users {
        let mut c = new.client(&bulk_user(u)).await;
        c.patient(Duration::from_secs(600));
        for (_, name, _) in FOLDERS {
            let r = c
                .cmd(&format!("EXAMINE {}", quoted(&format!("{prefix}/{name}"))))
                .await;
            if !r.is_ok() {
                continue;
            }
            let r = c.cmd("FETCH 1:* (RFC822.SIZE)").await;
            for line in &r.untagged {
                let line = lossy(line);
                if let Some(size) = line
                    .split("RFC822.SIZE ")
                    .nth(1)
                    .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    messages += 1;
                    bytes += size;
                }
            }
        }
        c.logout().await;
    }
    (messages, bytes)
}

/// Panics unless NEW holds exactly the messages and bytes read from OLD
/// under `prefix`: a copy that is not complete has no throughput.
async fn check(new: &Dovecot, s: &Scale, row: &str, prefix: &str, want: (usize, u64)) {
    let got = held(new, s, prefix).await;
    assert_eq!(
        got, want,
        "{row}: NEW holds (messages, bytes) {got:?} under {prefix}/, OLD {want:?}"
    );
    println!(
        "        {row}: NEW holds {} messages, {} bytes under {prefix}/, as OLD does",
        got.0, got.1
    );
}

/// Deletes both rows' copies on NEW, for the next repetition.
async fn clear(new: &Dovecot, s: &Scale) {
    for u in 1..=s.users {
        let mut c = new.client(&bulk_user(u)).await;
        c.patient(Duration::from_secs(600));
        for prefix in [ENGINE_PREFIX, BASELINE_PREFIX] {
            for (_, name, _) in FOLDERS {
                c.cmd(&format!("DELETE {}", quoted(&format!("{prefix}/{name}"))))
                    .await;
            }
            // The parent, where the store made one.
            c.cmd(&format!("DELETE {}", quoted(prefix))).await;
        }
        c.logout().await;
    }
}

/// Writes out what the last row and the clean-up left dirty (NEW's
/// deleted and written maildirs), so that the next row does not pay for it.
fn settle() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn remove_state(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

// ───────────────────────────── the run ─────────────────────────────

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

async fn run(s: Scale) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("state.db");
    let secret = write_file(
        dir.path(),
        "master.secret",
        format!("{MASTER_PASSWORD}\n").as_bytes(),
    );
    let login = |store: &str| {
        format!(
            "[copier.{store}_login]\nmode = \"master\"\nmaster_user = \"{MASTER_USER}\"\n\
             master_password_file = {:?}\n",
            secret.display().to_string()
        )
    };
    let copier = format!(
        "[state]\nurl = \"sqlite://{}\"\n{}{}",
        db.display(),
        login("old"),
        login("new")
    );
    // For experiments on what limits the copy, e.g. "mail_fsync = never".
    let new_conf = std::env::var("FERRY_BENCH_NEW_CONF").unwrap_or_default();
    let mut env = TestEnv::builder()
        .seed(false)
        .extra_toml(&copier)
        .new_conf(&new_conf)
        .start()
        .await;
    let config = write_file(dir.path(), "ferry.toml", env.config_toml.as_bytes());
    let log = dir.path().join("migrate.log");

    let t = Instant::now();
    seed(&env.old, &s).await;
    let (pipelines, messages, bytes) = read_old(&env.old, &s).await;
    assert_eq!(messages, s.users * s.messages, "seeded on OLD");
    println!(
        "{} users × {} messages = {messages} messages, {:.1} MB (RFC822.SIZE on OLD; \
         mean {:.1} KB), seeded and read in {:.0} s",
        s.users,
        s.messages,
        bytes as f64 / 1e6,
        bytes as f64 / messages as f64 / 1e3,
        t.elapsed().as_secs_f64()
    );
    println!(
        "engine: ferry migrate in its own process; baseline: one pipelined LITERAL+ \
         MULTIAPPEND per folder straight to NEW (NEW's own limit)"
    );
    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let (mut engine_rates, mut baseline_rates, mut ratios, mut rss) =
        (vec![], vec![], vec![], vec![]);
    let (mut engine_mbs, mut baseline_mbs) = (vec![], vec![]);
    for rep in 1..=s.reps {
        if rep > 1 {
            clear(&env.new, &s).await;
        }
        remove_state(&db);
        let mut e = None;
        let mut b = None;
        // The rows take turns going first.
        for engine_turn in [rep % 2 == 1, rep % 2 == 0] {
            settle();
            if engine_turn {
                let (config, log) = (config.clone(), log.clone());
                let r = tokio::task::spawn_blocking(move || engine(&config, &s, &log))
                    .await
                    .expect("engine run");
                println!(
                    "rep {rep}  engine   {:7.1} s {:7.0} msg/s {:6.1} MB/s  Ferry peak RSS {} KiB, \
                     CPU {:.1} s ({:.0} µs per message)",
                    r.wall.as_secs_f64(),
                    rate(r.wall),
                    mbs(r.wall),
                    r.max_rss_kib,
                    r.cpu.as_secs_f64(),
                    r.cpu.as_secs_f64() * 1e6 / messages as f64
                );
                check(&env.new, &s, "engine", ENGINE_PREFIX, (messages, bytes)).await;
                e = Some(r);
            } else {
                let d = baseline(&env.new, &pipelines).await;
                println!(
                    "rep {rep}  baseline {:7.1} s {:7.0} msg/s {:6.1} MB/s",
                    d.as_secs_f64(),
                    rate(d),
                    mbs(d)
                );
                check(&env.new, &s, "baseline", BASELINE_PREFIX, (messages, bytes)).await;
                b = Some(d);
            }
        }
        let (e, b) = (e.expect("engine ran"), b.expect("baseline ran"));
        let ratio = b.as_secs_f64() / e.wall.as_secs_f64();
        println!("rep {rep}  ratio engine ÷ baseline {ratio:.2}");
        engine_rates.push(rate(e.wall));
        engine_mbs.push(mbs(e.wall));
        baseline_rates.push(rate(b));
        baseline_mbs.push(mbs(b));
        ratios.push(ratio);
        rss.push(e.max_rss_kib);
    }
    println!("median of {} reps:", s.reps);
    println!(
        "  engine   {:7.0} msg/s {:6.1} MB/s   Ferry peak RSS {} KiB (max over reps)",
        median(engine_rates),
        median(engine_mbs),
        rss.iter().max().expect("one rep")
    );
    println!(
        "  baseline {:7.0} msg/s {:6.1} MB/s",
        median(baseline_rates),
        median(baseline_mbs)
    );
    println!(
        "  ratio engine ÷ baseline {:.2} (target ≥ 0.8)",
        median(ratios)
    );
    // Stopped here, so that dropping them removes their gigabyte of mail
    // before this process exits (a running store is reaped in the
    // background, which an exiting process does not wait for).
    env.old.stop().await;
    env.new.stop().await;
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
