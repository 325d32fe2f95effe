//! Integration-test harness: real Dovecot instances (no mocks), a raw literal-aware
//! IMAP test client, the standard mail fixture, and a Ferry test environment.
//!
//! Included by each integration test file with `mod common;`. Not every test uses
//! every item, hence the module-wide `dead_code` allowance.
//!
//! Dovecot quirks this harness relies on (found by experiment with 2.3.19):
//! * `passwd-file` lines are `user:password` (further `:`-separated fields are
//!   optional); with `scheme=PLAIN` any bytes but `:` and newline work, including
//!   spaces, quotes, backslashes and UTF-8.
//! * A failed login is delayed 2 s by default (`auth_failure_delay`), and anvil adds
//!   a growing per-IP penalty (up to 15 s). Both are turned off here so that tests
//!   of wrong passwords stay fast.
//! * `mail_max_userip_connections` defaults to 10 per user and IP; every test
//!   connection comes from 127.0.0.1, so it is raised.
//! * On SIGTERM the master sleeps about 1 s waiting for its log process, so
//!   `Drop` only sends SIGTERM and reaps in a background thread.
//! * After the master is gone, each `imap` session process only says
//!   `* BYE Server shutting down.` once it has been idle for 10 s; `stop()` and
//!   `Drop` therefore SIGTERM the session processes too, which ends them at once.
//! * Dovecot cannot bind port 0, and a port can be taken between our probe and
//!   Dovecot's bind; start-up retries with fresh ports on "Address already in use".
#![allow(dead_code)]

use std::{
    collections::HashSet,
    fs,
    io::Write as _,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, Once},
    time::Duration,
};

use ferry::config::BackendTls;
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, ToSocketAddrs},
    time::Instant,
};
use tokio_rustls::{TlsConnector, client::TlsStream, rustls};

// ───────────────────────────── users and passwords ─────────────────────────────

/// The password of every test user except `dave`.
pub const PASSWORD: &str = "secret";
/// `dave`'s password: parens, star, percent, double quote, backslash, spaces, UTF-8.
pub const WEIRD_PASSWORD: &str = "p(a)s*s%w\"o\\rd ü 日本";
/// Every test user and password; identical on OLD and NEW.
pub const USERS: &[(&str, &str)] = &[
    ("alice", PASSWORD),
    ("bob", PASSWORD),
    ("carol", PASSWORD),
    ("olga", PASSWORD),
    ("nils", PASSWORD),
    ("dave", WEIRD_PASSWORD),
];

/// How many bulk users ([`bulk_user`]) every test Dovecot knows besides
/// [`USERS`]: room for benchmarks that copy many mailboxes (10 users in
/// `benches/migrate.rs`), with some to spare.
pub const BULK_USERS: usize = 50;

/// The `n`-th bulk user (`bulk1` … `bulk50`): password [`PASSWORD`], no
/// fixture mail. Not in [`USERS`], so tests that go through every user do not
/// meet them.
pub fn bulk_user(n: usize) -> String {
    assert!(
        (1..=BULK_USERS).contains(&n),
        "bulk users are bulk1 … bulk{BULK_USERS}"
    );
    format!("bulk{n}")
}

fn is_bulk_user(user: &str) -> bool {
    user.strip_prefix("bulk")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| (1..=BULK_USERS).contains(&n) && user == format!("bulk{n}"))
}

/// Every test Dovecot admits this master user (Dovecot `master = yes`,
/// separator `*`) with this password.
pub const MASTER_USER: &str = "ferry";
pub const MASTER_PASSWORD: &str = "master-secret";

/// How a Dovecot knows the test users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// As in [`USERS`]: the same name and password as on the other store.
    Same,
    /// As `user@new.test` with the password `new-` + the usual one, plus the
    /// master user [`MASTER_USER`]: a NEW store that does not know OLD's
    /// credentials.
    Renamed,
}

impl Naming {
    /// The store-side name of test user `user`.
    pub fn user(self, user: &str) -> String {
        match self {
            Naming::Same => user.to_string(),
            Naming::Renamed => format!("{user}@new.test"),
        }
    }

    /// The store-side password of test user `user`.
    pub fn password(self, user: &str) -> String {
        match self {
            Naming::Same => password_for(user).to_string(),
            Naming::Renamed => format!("new-{}", password_for(user)),
        }
    }
}

/// The password of a test user or bulk user (panics for unknown users).
pub fn password_for(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .or_else(|| is_bulk_user(user).then_some(PASSWORD))
        .unwrap_or_else(|| panic!("{user:?} is not a test user (see common::USERS)"))
}

// ───────────────────────────── fixture names ─────────────────────────────

/// The two levels of the Japanese folder under OLD's INBOX.
pub const JP_LEVELS: [&str; 2] = ["受信箱", "研究室"];
/// OLD's wire name (modified UTF-7) of `INBOX.受信箱.研究室`.
pub const OLD_JP_WIRE: &str = "INBOX.&U9dP4Xux-.&eBR6dluk-";
/// OLD's wire name of the (non-existent, \Noselect) parent `INBOX.受信箱`.
pub const OLD_JP_PARENT_WIRE: &str = "INBOX.&U9dP4Xux-";
/// What a Ferry client is expected to see for the Japanese folder: `Old/受信箱/研究室`.
pub const CLIENT_JP_WIRE: &str = "Old/&U9dP4Xux-/&eBR6dluk-";
/// Subject (decoded) of the ISO-2022-JP message in the Japanese folder.
pub const JP_SUBJECT: &str = "研究室からのお知らせ";

/// Subjects seeded into alice's OLD INBOX, in order (\Seen, \Flagged, plain).
pub const OLD_INBOX_SUBJECTS: [&str; 3] =
    ["Old inbox seen", "Old inbox flagged", "Old inbox plain"];
/// Subjects seeded into alice's OLD `INBOX.Sent`.
pub const OLD_SENT_SUBJECTS: [&str; 2] = ["Old sent one", "Old sent two"];
/// Subject seeded into alice's OLD `INBOX.Archive.2019`.
pub const OLD_ARCHIVE_SUBJECT: &str = "Old archive 2019";
/// Mailboxes alice is subscribed to on OLD (wire names).
pub const OLD_SUBSCRIBED: [&str; 4] = ["INBOX", "INBOX.Sent", "INBOX.Archive.2019", OLD_JP_WIRE];
/// Subjects seeded into alice's NEW INBOX, in order (\Seen, plain).
pub const NEW_INBOX_SUBJECTS: [&str; 2] = ["New inbox one", "New inbox two"];
/// Subject seeded into alice's NEW `Work`.
pub const NEW_WORK_SUBJECT: &str = "New work item";

// ───────────────────────────── process-wide set-up ─────────────────────────────

/// Installs the rustls crypto provider and a test tracing subscriber (once).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        sweep_stale_dovecot_dirs();
    });
}

/// Removes `/tmp/ferry-dovecot-*` directories left behind by earlier test processes
/// (a process that exits while a dropped Dovecot is still shutting down cannot
/// remove its directory): only those at least 10 minutes old whose master is gone.
fn sweep_stale_dovecot_dirs() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("ferry-dovecot-")
        {
            continue;
        }
        let dir = entry.path();
        let old_enough = fs::metadata(dir.join("dovecot.conf"))
            .or_else(|_| fs::metadata(&dir))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(600));
        let master_alive = fs::read_to_string(dir.join("run/master.pid"))
            .ok()
            .is_some_and(|pid| Path::new(&format!("/proc/{}", pid.trim())).exists());
        if old_enough && !master_alive {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

fn dovecot_binary() -> PathBuf {
    let packaged = Path::new("/usr/sbin/dovecot");
    if packaged.is_file() {
        return packaged.to_path_buf();
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("dovecot");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("dovecot not installed: apt-get install -y dovecot-imapd");
}

/// A free 127.0.0.1 port, never handed out twice in this process.
pub fn free_port() -> u16 {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a port");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if taken.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1` (IP SAN): (cert PEM, key PEM, DER).
pub fn self_signed_cert() -> (String, String, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen self-signed certificate");
    (
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        ck.cert.der().clone(),
    )
}

// ───────────────────────────── Dovecot ─────────────────────────────

/// Which namespace layout a Dovecot instance has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Courier/Cyrus style: personal namespace `INBOX.`, delimiter `.`,
    /// `INBOX.Sent` is `\Sent` (`auto = create`).
    Old,
    /// Dovecot style: empty prefix, delimiter `/`, Sent/Drafts/Trash/Junk with
    /// special-use, auto-subscribed.
    New,
}

impl Layout {
    /// The hierarchy delimiter of this layout.
    pub fn delimiter(self) -> char {
        match self {
            Layout::Old => '.',
            Layout::New => '/',
        }
    }
}

struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

struct Running {
    master: Child,
    /// `sh` that SIGTERMs the master when our end of its stdin closes, i.e. when the
    /// test process dies without running `Drop` (killed by a timeout, aborted).
    watchdog: Option<Child>,
}

impl Running {
    fn disarm_watchdog(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

enum StartFailure {
    AddrInUse,
    Other(String),
}

/// One real Dovecot master process in its own temporary directory.
pub struct Dovecot {
    layout: Layout,
    root: PathBuf,
    dir: Option<TempDir>,
    binary: PathBuf,
    port: u16,
    imaps_port: Option<u16>,
    tls: Option<TlsFiles>,
    running: Option<Running>,
    /// Appended to the generated dovecot.conf.
    extra_conf: String,
    naming: Naming,
}

const START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

impl Dovecot {
    /// Makes this Dovecot a proxy to `store` for every user, as Dovecot
    /// proxies (director-less) are run: its passwd-file entries get
    /// `proxy=y host= port=` (Dovecot re-reads the file when it changes), and
    /// the client's own password is passed on.
    pub fn proxy_to(&self, store: SocketAddr) {
        let path = self.root.join("passwd");
        let passwd = fs::read_to_string(&path).expect("read passwd file");
        let proxied: String = passwd
            .lines()
            .map(|line| {
                format!(
                    "{line}::::::proxy=y host={} port={}\n",
                    store.ip(),
                    store.port()
                )
            })
            .collect();
        fs::write(&path, proxied).expect("write passwd file");
    }

    /// Starts a fresh Dovecot (own temp dir, own free ports) and waits for its greeting.
    /// With `tls`, a self-signed certificate is generated, STARTTLS is offered on the
    /// plain port and an implicit-TLS port is opened too.
    pub async fn start(layout: Layout, tls: bool) -> Dovecot {
        Self::start_with(layout, tls, "").await
    }

    /// [`Dovecot::start`] with `extra_conf` appended to dovecot.conf (e.g. an
    /// `imap_capability` that hides an extension).
    pub async fn start_with(layout: Layout, tls: bool, extra_conf: &str) -> Dovecot {
        Self::start_named(layout, tls, extra_conf, Naming::Same).await
    }

    /// [`Dovecot::start_with`] knowing the test users as `naming` says.
    pub async fn start_named(
        layout: Layout,
        tls: bool,
        extra_conf: &str,
        naming: Naming,
    ) -> Dovecot {
        init();
        let binary = dovecot_binary();
        // /tmp explicitly: unix socket paths under base_dir must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ferry-dovecot-")
            .tempdir_in("/tmp")
            .expect("create Dovecot temp dir");
        let root = dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod 755 temp dir");
        fs::create_dir(root.join("mail")).expect("create mail dir");
        let mut passwd = String::new();
        let bulk = (1..=BULK_USERS).map(bulk_user);
        for user in USERS.iter().map(|(u, _)| u.to_string()).chain(bulk) {
            let user = user.as_str();
            let pass = naming.password(user);
            assert!(
                !pass.contains([':', '\n']),
                "passwd-file cannot hold {pass:?}"
            );
            passwd.push_str(&format!("{}:{pass}\n", naming.user(user)));
        }
        fs::write(root.join("passwd"), passwd).expect("write passwd file");
        fs::write(
            root.join("master-passwd"),
            format!("{MASTER_USER}:{MASTER_PASSWORD}\n"),
        )
        .expect("write master-passwd file");
        let status = Command::new("chown")
            .arg("-R")
            .arg("dovecot:dovecot")
            .arg(root.join("mail"))
            .status()
            .expect("run chown");
        assert!(
            status.success(),
            "chown -R dovecot:dovecot failed (is the dovecot user there? apt-get install -y dovecot-imapd)"
        );
        let tls = tls.then(|| {
            let (cert_pem, key_pem, der) = self_signed_cert();
            let cert = root.join("dovecot.crt");
            let key = root.join("dovecot.key");
            fs::write(&cert, cert_pem).expect("write cert");
            fs::write(&key, key_pem).expect("write key");
            TlsFiles { cert, key, der }
        });
        let mut d = Dovecot {
            layout,
            root,
            dir: Some(dir),
            binary,
            port: 0,
            imaps_port: None,
            tls,
            running: None,
            extra_conf: extra_conf.to_string(),
            naming,
        };
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            d.port = free_port();
            d.imaps_port = d.tls.is_some().then(free_port);
            fs::write(d.root.join("dovecot.conf"), d.config_text()).expect("write dovecot.conf");
            match d.spawn_and_wait().await {
                Ok(()) => return d,
                Err(StartFailure::AddrInUse) if attempt < ATTEMPTS => continue,
                Err(StartFailure::AddrInUse) => d.start_panic("ports stayed in use"),
                Err(StartFailure::Other(why)) => d.start_panic(&why),
            }
        }
        unreachable!()
    }

    fn config_text(&self) -> String {
        let root = self.root.display();
        let mut c = format!(
            "# Generated by tests/common/mod.rs\n\
             base_dir = {root}/run\n\
             state_dir = {root}/state\n\
             log_path = {root}/dovecot.log\n\
             protocols = imap\n\
             listen = 127.0.0.1\n\
             mail_location = maildir:{root}/mail/%u\n\
             auth_mechanisms = plain login\n\
             disable_plaintext_auth = no\n\
             auth_verbose = yes\n\
             auth_failure_delay = 0\n\
             first_valid_uid = 1\n\
             mail_max_userip_connections = 1000\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {root}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={root}/mail/%u\n}}\n\
             service anvil {{\n  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n"
        );
        {
            // Master logins: SASL PLAIN with an authzid, or LOGIN "user*ferry";
            // `pass = yes` then checks that the user exists.
            c.push_str(&format!(
                "auth_master_user_separator = *\n\
                 passdb {{\n  driver = passwd-file\n  master = yes\n  pass = yes\n  \
                 args = scheme=PLAIN {root}/master-passwd\n}}\n"
            ));
        }
        match &self.tls {
            Some(t) => c.push_str(&format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}\n",
                t.cert.display(),
                t.key.display()
            )),
            None => c.push_str("ssl = no\n"),
        }
        match self.layout {
            Layout::Old => c.push_str(
                "namespace inbox {\n  inbox = yes\n  prefix = INBOX.\n  separator = .\n\
                 \x20 mailbox Sent {\n    special_use = \\Sent\n    auto = create\n  }\n}\n",
            ),
            Layout::New => {
                c.push_str("namespace inbox {\n  inbox = yes\n  prefix =\n  separator = /\n");
                for name in ["Sent", "Drafts", "Trash", "Junk"] {
                    c.push_str(&format!(
                        "  mailbox {name} {{\n    special_use = \\{name}\n    auto = subscribe\n  }}\n"
                    ));
                }
                c.push_str("}\n");
            }
        }
        c.push_str(&format!(
            "service imap-login {{\n  process_limit = 500\n  inet_listener imap {{\n    port = {}\n  }}\n  \
             inet_listener imaps {{\n    port = {}\n    ssl = yes\n  }}\n}}\n\
             service imap {{\n  process_limit = 500\n}}\n",
            self.port,
            self.imaps_port.unwrap_or(0)
        ));
        c.push_str(&self.extra_conf);
        c.push('\n');
        c
    }

    fn spawn(&mut self) {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("dovecot.stderr"))
            .expect("open dovecot.stderr");
        let err = out.try_clone().expect("dup dovecot.stderr");
        let master = Command::new(&self.binary)
            .arg("-F")
            .arg("-c")
            .arg(self.root.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", self.binary.display()));
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg("read line; kill -TERM \"$1\" 2>/dev/null")
            .arg("ferry-dovecot-watchdog")
            .arg(master.id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        self.running = Some(Running { master, watchdog });
    }

    async fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        self.spawn();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self
                .running
                .as_mut()
                .expect("running")
                .master
                .try_wait()
                .expect("try_wait dovecot");
            if let Some(status) = exited {
                let mut r = self.running.take().expect("running");
                r.disarm_watchdog();
                let text = format!("{}{}", self.log(), self.stderr_text());
                if text.contains("Address already in use") {
                    return Err(StartFailure::AddrInUse);
                }
                return Err(StartFailure::Other(format!(
                    "dovecot exited during start-up with {status} (is dovecot-imapd installed?)"
                )));
            }
            if greeting_probe(self.port).await {
                if let Some(p) = self.imaps_port {
                    // Master binds every listener before it forks; a connect suffices.
                    let ok = tokio::time::timeout(
                        Duration::from_secs(1),
                        TcpStream::connect(("127.0.0.1", p)),
                    )
                    .await;
                    if !matches!(ok, Ok(Ok(_))) {
                        return Err(StartFailure::Other(format!(
                            "imaps port {p} does not accept"
                        )));
                    }
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Other(format!(
                    "no `* OK` greeting on 127.0.0.1:{} within {START_TIMEOUT:?}",
                    self.port
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn start_panic(&mut self, why: &str) -> ! {
        if let Some(mut r) = self.running.take() {
            let _ = r.master.kill();
            let _ = r.master.wait();
            r.disarm_watchdog();
        }
        panic!(
            "Dovecot ({:?}) did not start: {why}\n--- {}/dovecot.log ---\n{}\n--- stderr ---\n{}\n--- dovecot.conf ---\n{}",
            self.layout,
            self.root.display(),
            self.log(),
            self.stderr_text(),
            fs::read_to_string(self.root.join("dovecot.conf")).unwrap_or_default()
        );
    }

    /// Ends every client session (SIGTERM to the master's `imap` and `imap-login`
    /// children: each client gets `* BYE Server shutting down.` and EOF at once) while
    /// Dovecot itself keeps running and accepting.
    pub fn kill_sessions(&self) {
        if let Some(r) = &self.running {
            kill_session_processes(r.master.id());
        }
    }

    /// Ends all sessions at once (see [`Dovecot::kill_sessions`]; a bare master
    /// shutdown lets each session linger until it has been idle for 10 s), then
    /// SIGTERMs the master and waits for it to exit (about 1 s: Dovecot waits for its
    /// log process). Ports and mail stay reserved for [`Dovecot::restart`].
    pub async fn stop(&mut self) {
        let Some(mut r) = self.running.take() else {
            return;
        };
        kill_session_processes(r.master.id());
        sigterm(r.master.id());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match r.master.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                _ => {
                    let _ = r.master.kill();
                    let _ = r.master.wait();
                    break;
                }
            }
        }
        r.disarm_watchdog();
    }

    /// Stops (if running) and starts again on the same ports and directories, so
    /// mail, UIDVALIDITY and subscriptions persist.
    pub async fn restart(&mut self) {
        self.stop().await;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                // Children of the previous master may still hold the listeners briefly.
                Err(StartFailure::AddrInUse) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(StartFailure::AddrInUse) => self.start_panic("ports stayed in use on restart"),
                Err(StartFailure::Other(why)) => self.start_panic(&why),
            }
        }
    }

    /// Whether the master process is (still) running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.running {
            Some(r) => matches!(r.master.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// The master process (its children are the login, auth and imap processes).
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.master.id())
    }
    /// `127.0.0.1:PORT` of the plain (STARTTLS when `tls`) listener.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    /// `127.0.0.1:PORT` of the implicit-TLS listener (only with `tls`).
    pub fn imaps_addr(&self) -> Option<String> {
        self.imaps_port.map(|p| format!("127.0.0.1:{p}"))
    }
    /// The self-signed certificate (its own CA) as a PEM file (only with `tls`).
    pub fn ca_pem_path(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|t| t.cert.clone())
    }
    pub fn ca_der(&self) -> Option<CertificateDer<'static>> {
        self.tls.as_ref().map(|t| t.der.clone())
    }
    /// Dovecot's log file so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.root.join("dovecot.log")).unwrap_or_default())
            .into_owned()
    }
    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.root.join("dovecot.stderr")).unwrap_or_default())
            .into_owned()
    }
    /// The instance's temporary directory (config, log, `mail/<user>` maildirs).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    // ── store helpers: talk to the store directly over the plain port ──

    /// A plain-TCP client, greeting consumed, logged in as `user`.
    pub async fn client(&self, user: &str) -> TestClient {
        let mut c = TestClient::plain(self.addr()).await;
        let g = c.greeting().await;
        assert!(g.starts_with(b"* OK"), "Dovecot greeting: {}", lossy(&g));
        let r = c
            .login(&self.naming.user(user), self.naming.password(user))
            .await;
        if !r.is_ok() {
            panic!(
                "direct login of {user} to Dovecot failed:\n{}\n--- log ---\n{}",
                r.text(),
                self.log()
            );
        }
        c
    }

    /// CREATE `mailbox` (wire name) for `user`.
    pub async fn create(&self, user: &str, mailbox: &str) {
        let mut c = self.client(user).await;
        c.cmd(&format!("CREATE {}", quoted(mailbox)))
            .await
            .assert_ok();
        c.logout().await;
    }

    /// APPEND `message` to `mailbox` (wire name) with `flags` (`"(\\Seen)"` or `""`).
    pub async fn append(&self, user: &str, mailbox: &str, flags: &str, message: &[u8]) {
        let mut c = self.client(user).await;
        c.append(mailbox, flags, message).await.assert_ok();
        c.logout().await;
    }

    /// APPENDs `messages` — (`"(flags) \"date\""` arguments, bytes) — to `mailbox`
    /// (wire name) in one pipelined MULTIAPPEND: fast seeding of bulk mail.
    pub async fn append_many(&self, user: &str, mailbox: &str, messages: &[(String, Vec<u8>)]) {
        let mut c = self.client(user).await;
        c.patient(Duration::from_secs(600));
        let tag = c.next_tag();
        let mut cmd = format!("{tag} APPEND {}", quoted(mailbox)).into_bytes();
        for (args, body) in messages {
            cmd.extend_from_slice(format!(" {args} {{{}+}}\r\n", body.len()).as_bytes());
            cmd.extend_from_slice(body);
        }
        cmd.extend_from_slice(b"\r\n");
        c.send(&cmd).await;
        c.read_until_tagged(&tag).await.assert_ok();
        c.logout().await;
    }

    /// SUBSCRIBE `mailbox` (wire name).
    pub async fn subscribe(&self, user: &str, mailbox: &str) {
        let mut c = self.client(user).await;
        c.cmd(&format!("SUBSCRIBE {}", quoted(mailbox)))
            .await
            .assert_ok();
        c.logout().await;
    }

    /// How many messages `mailbox` holds; 0 while it does not exist (a
    /// copy not started yet).
    pub async fn messages_or_none(&self, user: &str, mailbox: &str) -> u32 {
        let mut c = self.client(user).await;
        let r = c
            .cmd(&format!("STATUS {} (MESSAGES)", quoted(mailbox)))
            .await;
        c.logout().await;
        r.text()
            .split("MESSAGES ")
            .nth(1)
            .and_then(|t| t.split(')').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }

    /// STATUS counts of one mailbox: (MESSAGES, UIDNEXT, UIDVALIDITY).
    pub async fn status(&self, user: &str, mailbox: &str) -> (u32, u32, u32) {
        let mut c = self.client(user).await;
        let r = c
            .cmd(&format!(
                "STATUS {} (MESSAGES UIDNEXT UIDVALIDITY)",
                quoted(mailbox)
            ))
            .await;
        r.assert_ok();
        c.logout().await;
        let text = r.lines().join(" ");
        let num = |key: &str| -> u32 {
            let at = text
                .find(&format!("{key} "))
                .unwrap_or_else(|| panic!("no {key} in {text}"));
            text[at + key.len() + 1..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad {key} in {text}"))
        };
        (num("MESSAGES"), num("UIDNEXT"), num("UIDVALIDITY"))
    }

    /// A deterministic text of `user`'s whole store: LIST (sorted), per mailbox
    /// STATUS + EXAMINE + `UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE)` (sorted),
    /// then LSUB (sorted). Uses EXAMINE only, so taking it changes nothing
    /// (not even \Recent). Compare before/after to prove a store was not modified.
    pub async fn snapshot(&self, user: &str) -> String {
        let mut c = self.client(user).await;
        let mut out = String::new();
        let list = c.cmd(r#"LIST "" "*""#).await;
        list.assert_ok();
        let mut entries: Vec<ListEntry> = list
            .untagged
            .iter()
            .map(|l| parse_list(l).unwrap_or_else(|| panic!("unparsable LIST: {}", lossy(l))))
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        out.push_str("== LIST\n");
        for line in sorted_lines(&list) {
            out.push_str(&line);
            out.push('\n');
        }
        for e in &entries {
            out.push_str(&format!("== MAILBOX {}\n", e.name));
            if !e.is_selectable() {
                out.push_str("(not selectable)\n");
                continue;
            }
            let name = quoted(&e.name);
            let status = c
                .cmd(&format!(
                    "STATUS {name} (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"
                ))
                .await;
            status.assert_ok();
            for line in sorted_lines(&status) {
                out.push_str(&line);
                out.push('\n');
            }
            let examine = c.cmd(&format!("EXAMINE {name}")).await;
            examine.assert_ok();
            for line in sorted_lines(&examine) {
                // `[CLOSED]` only says that the previous mailbox was deselected.
                if !line.contains("[CLOSED]") {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
            let fetch = c
                .cmd("UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE)")
                .await;
            fetch.assert_ok();
            for line in sorted_lines(&fetch) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        let lsub = c.cmd(r#"LSUB "" "*""#).await;
        lsub.assert_ok();
        out.push_str("== LSUB\n");
        for line in sorted_lines(&lsub) {
            out.push_str(&line);
            out.push('\n');
        }
        c.logout().await;
        out
    }
}

fn sorted_lines(r: &Reply) -> Vec<String> {
    let mut v = r.lines();
    v.sort();
    v
}

/// Connects, reads one line, and says whether it is a `* OK` greeting.
async fn greeting_probe(port: u16) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let _ = s.write_all(b"z LOGOUT\r\n").await;
        Some(buf.starts_with(b"* OK"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), probe).await,
        Ok(Some(true))
    )
}

/// SIGTERM to the `imap` and `imap-login` children of our Dovecot master.
fn kill_session_processes(master: u32) {
    let children =
        fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
    for pid in children.split_whitespace() {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if matches!(comm.trim(), "imap" | "imap-login")
            && let Ok(pid) = pid.parse()
        {
            sigterm(pid);
        }
    }
}

fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let running = self.running.take();
        let dir = self.dir.take();
        let Some(mut r) = running else {
            return; // the TempDir is removed right here
        };
        kill_session_processes(r.master.id());
        sigterm(r.master.id());
        r.disarm_watchdog();
        // The master takes ~1 s to exit; reap it (and then remove the directory) in
        // the background so that test teardown does not wait.
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + START_TIMEOUT;
            loop {
                match r.master.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(POLL),
                    _ => {
                        let _ = r.master.kill();
                        let _ = r.master.wait();
                        break;
                    }
                }
            }
            drop(dir);
        });
    }
}

// ───────────────────────────── TestClient ─────────────────────────────

/// How long `response()` waits before failing the test.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
        }
    }
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }
}

enum Fill {
    Data,
    Timeout,
    Eof,
    Error(std::io::Error),
}

/// A raw, literal-aware IMAP client used as the test driver.
pub struct TestClient {
    stream: Stream,
    buf: Vec<u8>,
    tag: u32,
    peer: String,
    /// How long one response (or one write) may take.
    timeout: Duration,
    /// COMPRESS=DEFLATE, once on: this side's compressor and decompressor.
    deflate: Option<Box<(flate2::Compress, flate2::Decompress)>>,
    /// Bytes read from the connection (compressed ones as they came).
    wire_read: u64,
}

/// `input` deflated and sync-flushed.
fn deflate_all(c: &mut flate2::Compress, mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 1024);
    let mut filled = false;
    loop {
        // After a call that filled `out`, the next may only hand over what
        // was held back (miniz_oxide): only a later one completes the flush.
        let settled = !filled;
        let before = c.total_in();
        c.compress_vec(input, &mut out, flate2::FlushCompress::Sync)
            .expect("deflate");
        input = &input[(c.total_in() - before) as usize..];
        filled = out.len() == out.capacity();
        if input.is_empty() && !filled && settled {
            return out;
        }
        out.reserve(input.len() + 1024);
    }
}

/// Inflates `input` onto the end of `out`.
fn inflate_onto(d: &mut flate2::Decompress, mut input: &[u8], out: &mut Vec<u8>) {
    // Not `decompress_vec`: it zeroes all of `out`'s spare capacity per call.
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let (in0, out0) = (d.total_in(), d.total_out());
        d.decompress(input, &mut chunk, flate2::FlushDecompress::None)
            .expect("server's deflate stream");
        input = &input[(d.total_in() - in0) as usize..];
        let made = (d.total_out() - out0) as usize;
        out.extend_from_slice(&chunk[..made]);
        // Output that filled the chunk may have more behind it.
        if input.is_empty() && made < chunk.len() {
            return;
        }
    }
}

/// A TLS connector trusting only `ca`, with session resumption disabled.
pub fn tls_connector(ca: &CertificateDer<'static>) -> TlsConnector {
    init();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .expect("add CA certificate to root store");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

async fn tls_handshake(
    tcp: TcpStream,
    ca: &CertificateDer<'static>,
    peer: &str,
) -> TlsStream<TcpStream> {
    let name = ServerName::try_from("localhost").expect("server name");
    match tokio::time::timeout(RESPONSE_TIMEOUT, tls_connector(ca).connect(name, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => panic!("TLS handshake with {peer} failed: {e}"),
        Err(_) => panic!("TLS handshake with {peer} timed out after {RESPONSE_TIMEOUT:?}"),
    }
}

async fn tcp_connect(addr: impl ToSocketAddrs) -> TcpStream {
    match tokio::time::timeout(RESPONSE_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => panic!("TCP connect failed: {e}"),
        Err(_) => panic!("TCP connect timed out after {RESPONSE_TIMEOUT:?}"),
    }
}

impl TestClient {
    /// Connects over plain TCP (the greeting is not read yet).
    pub async fn plain(addr: impl ToSocketAddrs) -> Self {
        Self::plain_over(tcp_connect(addr).await)
    }

    /// A client on a connection the caller made (e.g. [`connect_from`]).
    pub fn plain_over(tcp: TcpStream) -> Self {
        init();
        let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        TestClient {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            tag: 0,
            peer,
            timeout: RESPONSE_TIMEOUT,
            deflate: None,
            wire_read: 0,
        }
    }

    /// Connects with implicit TLS, trusting only `ca`, server name `localhost`
    /// (the greeting is not read yet).
    pub async fn tls(addr: impl ToSocketAddrs, ca: &CertificateDer<'static>) -> Self {
        Self::tls_over(tcp_connect(addr).await, ca).await
    }

    /// Implicit TLS on a connection the caller made.
    pub async fn tls_over(tcp: TcpStream, ca: &CertificateDer<'static>) -> Self {
        init();
        let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let tls = tls_handshake(tcp, ca, &peer).await;
        TestClient {
            stream: Stream::Tls(Box::new(tls)),
            buf: Vec::new(),
            tag: 0,
            peer,
            timeout: RESPONSE_TIMEOUT,
            deflate: None,
            wire_read: 0,
        }
    }

    /// Upgrades to TLS after the caller got the tagged OK of STARTTLS. Panics if any
    /// bytes are buffered (they would be a STARTTLS response injection).
    pub async fn starttls(self, ca: &CertificateDer<'static>) -> Self {
        assert!(
            self.buf.is_empty(),
            "bytes buffered before the TLS handshake with {}: {:?}",
            self.peer,
            lossy(&self.buf)
        );
        let Stream::Plain(tcp) = self.stream else {
            panic!("starttls on a connection that is already TLS");
        };
        let tls = tls_handshake(tcp, ca, &self.peer).await;
        TestClient {
            stream: Stream::Tls(Box::new(tls)),
            buf: Vec::new(),
            tag: self.tag,
            timeout: self.timeout,
            peer: self.peer,
            deflate: None,
            wire_read: self.wire_read,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// The greeting (one response).
    pub async fn greeting(&mut self) -> Vec<u8> {
        self.response().await
    }

    /// Raw write + flush; panics on error.
    pub async fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes).await {
            panic!("send to {} failed: {e}", self.peer);
        }
    }

    /// Raw write + flush.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let compressed;
        let bytes = match self.deflate.as_mut() {
            Some(d) => {
                compressed = deflate_all(&mut d.0, bytes);
                &compressed[..]
            }
            None => bytes,
        };
        match tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out (peer not reading)",
            )),
        }
    }

    /// Reads more into `buf` (directly into its spare capacity: a stack buffer here
    /// would make every future built on top of it huge in debug builds).
    async fn fill(&mut self, deadline: Instant) -> Fill {
        if self.deflate.is_some() {
            return self.fill_compressed(deadline).await;
        }
        self.buf.reserve(16 * 1024);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Fill::Timeout,
            Ok(Ok(0)) => Fill::Eof,
            Ok(Ok(n)) => {
                self.wire_read += n as u64;
                Fill::Data
            }
            Ok(Err(e)) => Fill::Error(e),
        }
    }

    async fn fill_compressed(&mut self, deadline: Instant) -> Fill {
        let mut raw = Vec::with_capacity(64 * 1024);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut raw)).await {
            Err(_) => Fill::Timeout,
            Ok(Ok(0)) => Fill::Eof,
            Ok(Ok(n)) => {
                self.wire_read += n as u64;
                let d = self.deflate.as_mut().expect("compressed");
                inflate_onto(&mut d.1, &raw, &mut self.buf);
                Fill::Data
            }
            Ok(Err(e)) => Fill::Error(e),
        }
    }

    /// `COMPRESS DEFLATE` (RFC 4978); once it is answered OK, both ways
    /// are raw deflate, each write sync-flushed.
    pub async fn compress(&mut self) -> Reply {
        let r = self.cmd("COMPRESS DEFLATE").await;
        if r.is_ok() {
            let mut d = Box::new((
                flate2::Compress::new(flate2::Compression::fast(), false),
                flate2::Decompress::new(false),
            ));
            // What came after the OK's CRLF is compressed already.
            let after = std::mem::take(&mut self.buf);
            inflate_onto(&mut d.1, &after, &mut self.buf);
            self.deflate = Some(d);
        }
        r
    }

    /// Bytes read from the connection so far, as they came (compressed
    /// after [`compress`](Self::compress)).
    pub fn wire_read(&self) -> u64 {
        self.wire_read
    }

    /// One full response, or why there is none before `deadline`.
    async fn next_response(&mut self, deadline: Instant) -> Result<Vec<u8>, Fill> {
        loop {
            if let Some(n) = complete_response_len(&self.buf) {
                return Ok(self.buf.drain(..n).collect());
            }
            match self.fill(deadline).await {
                Fill::Data => {}
                other => return Err(other),
            }
        }
    }

    /// One full response (line, plus literals and their continuation lines). Panics
    /// on EOF, error, or after [`RESPONSE_TIMEOUT`].
    pub async fn response(&mut self) -> Vec<u8> {
        match self.next_response(Instant::now() + self.timeout).await {
            Ok(r) => r,
            Err(Fill::Timeout) => panic!(
                "no complete response from {} within {:?}; buffered: {:?}",
                self.peer,
                self.timeout,
                lossy(&self.buf)
            ),
            Err(Fill::Eof) => panic!(
                "connection to {} closed while waiting for a response; buffered: {:?}",
                self.peer,
                lossy(&self.buf)
            ),
            Err(Fill::Error(e)) => panic!(
                "read from {} failed while waiting for a response: {e}; buffered: {:?}",
                self.peer,
                lossy(&self.buf)
            ),
            Err(Fill::Data) => unreachable!(),
        }
    }

    /// A response if one arrives within `d`, `None` if nothing (complete) does.
    /// Panics if the connection closes.
    pub async fn try_response_within(&mut self, d: Duration) -> Option<Vec<u8>> {
        match self.next_response(Instant::now() + d).await {
            Ok(r) => Some(r),
            Err(Fill::Timeout) => None,
            Err(Fill::Eof) => panic!(
                "connection to {} closed (expected a response or silence); buffered: {:?}",
                self.peer,
                lossy(&self.buf)
            ),
            Err(Fill::Error(e)) => panic!("read from {} failed: {e}", self.peer),
            Err(Fill::Data) => unreachable!(),
        }
    }

    /// Whether the peer closes the connection within ~2 s (anything it sends before
    /// closing, e.g. `* BYE`, is consumed). A reset counts as closed.
    pub async fn is_closed(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.fill(deadline).await {
                Fill::Data => continue,
                Fill::Eof | Fill::Error(_) => return true,
                Fill::Timeout => return false,
            }
        }
    }

    /// Bytes received but not yet returned as a response.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Collects responses until one starts with `tag ` (case-sensitive).
    pub async fn read_until_tagged(&mut self, tag: &str) -> Reply {
        let prefix = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let r = self.response().await;
            if r.starts_with(prefix.as_bytes()) {
                return Reply {
                    untagged,
                    tagged: r,
                };
            }
            untagged.push(r);
        }
    }

    /// Allows `timeout` per response and write from now on (bulk operations on
    /// a machine busy with other tests).
    pub fn patient(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The next tag: `t1`, `t2`, …
    pub fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("t{}", self.tag)
    }

    /// Sends `<tag> command\r\n` and reads up to the tagged response.
    pub async fn cmd(&mut self, command: &str) -> Reply {
        let tag = self.next_tag();
        self.send(format!("{tag} {command}\r\n").as_bytes()).await;
        self.read_until_tagged(&tag).await
    }

    /// Waits for a `+` continuation. `Err(reply)` if the command was completed
    /// (refused) instead; untagged responses meanwhile are collected into `untagged`.
    async fn wait_continuation(
        &mut self,
        tag: &str,
        untagged: &mut Vec<Vec<u8>>,
    ) -> Result<(), Reply> {
        let prefix = format!("{tag} ");
        loop {
            let r = self.response().await;
            if r.starts_with(b"+") {
                return Ok(());
            }
            if r.starts_with(prefix.as_bytes()) {
                return Err(Reply {
                    untagged: std::mem::take(untagged),
                    tagged: r,
                });
            }
            untagged.push(r);
        }
    }

    /// Sends `head` (a command line ending in a synchronizing literal announcement
    /// for `payload`), waits for `+`, sends the payload, and reads the reply.
    async fn with_literal(&mut self, tag: &str, head: String, payload: &[u8]) -> Reply {
        self.send(head.as_bytes()).await;
        let mut untagged = Vec::new();
        if let Err(reply) = self.wait_continuation(tag, &mut untagged).await {
            return reply;
        }
        let mut bytes = payload.to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.send(&bytes).await;
        let mut reply = self.read_until_tagged(tag).await;
        untagged.append(&mut reply.untagged);
        reply.untagged = untagged;
        reply
    }

    /// LOGIN with `user` as a quoted string and `pass` as a synchronizing literal.
    pub async fn login(&mut self, user: &str, pass: impl AsRef<[u8]>) -> Reply {
        let pass = pass.as_ref();
        let tag = self.next_tag();
        let head = format!("{tag} LOGIN {} {{{}}}\r\n", quoted(user), pass.len());
        self.with_literal(&tag, head, pass).await
    }

    /// APPEND with a synchronizing literal. `flags` is e.g. `"(\\Seen)"` or `""`.
    pub async fn append(&mut self, mailbox: &str, flags: &str, message: &[u8]) -> Reply {
        let tag = self.next_tag();
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" {flags}")
        };
        let head = format!(
            "{tag} APPEND {}{flags} {{{}}}\r\n",
            quoted(mailbox),
            message.len()
        );
        self.with_literal(&tag, head, message).await
    }

    /// LOGOUT and expect OK (the `* BYE` is among the untagged responses).
    pub async fn logout(&mut self) -> Reply {
        let r = self.cmd("LOGOUT").await;
        r.assert_ok();
        r
    }
}

/// The length of the first complete response in `buf`, if it holds one.
///
/// A response is a CRLF-terminated line; if the line ends with `{N}`, `{N+}` (or
/// `~{N}`), N literal bytes and the next line belong to it too, repeatedly. A status
/// or continuation line (`tag OK|NO|BAD`, `* OK|NO|BAD|BYE|PREAUTH`, `+`) never
/// carries literals, whatever its text ends with.
pub fn complete_response_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    let mut first = true;
    loop {
        let rel = buf[pos..].windows(2).position(|w| w == b"\r\n")?;
        let line = &buf[pos..pos + rel];
        let end = pos + rel + 2;
        if first && is_status_line(line) {
            return Some(end);
        }
        first = false;
        match literal_len(line) {
            Some(n) => {
                pos = end.checked_add(n)?;
                if pos > buf.len() {
                    return None;
                }
            }
            None => return Some(end),
        }
    }
}

fn is_status_line(line: &[u8]) -> bool {
    let mut words = line.splitn(3, |&b| b == b' ');
    let first = words.next().unwrap_or_default();
    if first == b"+" {
        return true;
    }
    let second = words.next().unwrap_or_default().to_ascii_uppercase();
    let is = |w: &[u8]| second == w;
    if first == b"*" {
        is(b"OK") || is(b"NO") || is(b"BAD") || is(b"BYE") || is(b"PREAUTH")
    } else {
        !first.is_empty() && (is(b"OK") || is(b"NO") || is(b"BAD"))
    }
}

/// `N` if `line` (without CRLF) ends with `{N}` or `{N+}`.
fn literal_len(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

// ───────────────────────────── Reply ─────────────────────────────

/// The responses to one command: untagged (and continuation) responses, then the
/// tagged completion, all raw bytes including CRLFs and literal payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub untagged: Vec<Vec<u8>>,
    pub tagged: Vec<u8>,
}

impl Reply {
    /// The status word after the tag, upper-cased (`OK`, `NO`, `BAD`).
    pub fn status(&self) -> String {
        lossy(&self.tagged)
            .trim_end()
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_ascii_uppercase()
    }
    pub fn is_ok(&self) -> bool {
        self.status() == "OK"
    }
    pub fn is_no(&self) -> bool {
        self.status() == "NO"
    }
    pub fn is_bad(&self) -> bool {
        self.status() == "BAD"
    }
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        if !self.is_ok() {
            panic!("expected OK, got:\n{}", self.text());
        }
        self
    }
    #[track_caller]
    pub fn assert_no(&self) -> &Self {
        if !self.is_no() {
            panic!("expected NO, got:\n{}", self.text());
        }
        self
    }
    /// A NO with this response code (`AUTHENTICATIONFAILED`, …).
    #[track_caller]
    pub fn assert_no_with(&self, code: &str) -> &Self {
        self.assert_no();
        assert_eq!(self.code().as_deref(), Some(code), "{}", self.text());
        self
    }
    #[track_caller]
    pub fn assert_bad(&self) -> &Self {
        if !self.is_bad() {
            panic!("expected BAD, got:\n{}", self.text());
        }
        self
    }
    /// Everything, lossy UTF-8, for `contains` checks.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for u in &self.untagged {
            s.push_str(&lossy(u));
        }
        s.push_str(&lossy(&self.tagged));
        s
    }
    /// The untagged responses as lossy strings, trailing CRLF removed.
    pub fn lines(&self) -> Vec<String> {
        self.untagged
            .iter()
            .map(|u| lossy(u).trim_end_matches("\r\n").to_string())
            .collect()
    }
    /// The tagged line as a lossy string without CRLF.
    pub fn tagged_line(&self) -> String {
        lossy(&self.tagged).trim_end_matches("\r\n").to_string()
    }
    /// The text inside `[...]` of the tagged line, e.g. `READ-ONLY`, `TRYCREATE`.
    pub fn code(&self) -> Option<String> {
        let line = self.tagged_line();
        let rest = line.splitn(3, ' ').nth(2)?;
        let rest = rest.strip_prefix('[')?;
        let end = rest.find(']')?;
        Some(rest[..end].to_string())
    }
    /// The LIST/LSUB entries among the untagged responses.
    pub fn list_entries(&self) -> Vec<ListEntry> {
        self.untagged.iter().filter_map(|u| parse_list(u)).collect()
    }
}

pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `"s"` with `\` and `"` escaped.
pub fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

// ───────────────────────────── LIST parsing ─────────────────────────────

/// One `* LIST` / `* LSUB` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Attributes as sent, e.g. `\HasNoChildren`, `\Sent`.
    pub attrs: Vec<String>,
    /// The hierarchy delimiter, `None` for NIL.
    pub delimiter: Option<String>,
    /// The mailbox name as on the wire (modified UTF-7), unquoted.
    pub name: String,
}

impl ListEntry {
    pub fn has_attr(&self, attr: &str) -> bool {
        self.attrs.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }
    pub fn is_selectable(&self) -> bool {
        !self.has_attr("\\Noselect") && !self.has_attr("\\NonExistent")
    }
}

/// Parses a `* LIST (attrs) "d" name` or `* LSUB ...` response (name quoted, atom
/// or literal).
pub fn parse_list(resp: &[u8]) -> Option<ListEntry> {
    let upper = resp.get(..7)?.to_ascii_uppercase();
    if upper != b"* LIST " && upper != b"* LSUB " {
        return None;
    }
    let rest = resp[7..].strip_prefix(b"(")?;
    let close = rest.iter().position(|&b| b == b')')?;
    let attrs = lossy(&rest[..close])
        .split_whitespace()
        .map(String::from)
        .collect();
    let rest = rest[close + 1..].strip_prefix(b" ")?;
    let (delimiter, rest) = if rest.get(..3).map(|b| b.eq_ignore_ascii_case(b"NIL")) == Some(true) {
        (None, &rest[3..])
    } else {
        let (d, r) = parse_quoted(rest)?;
        (Some(lossy(&d)), r)
    };
    let rest = rest.strip_prefix(b" ")?;
    let (name, _) = parse_astring(rest)?;
    Some(ListEntry {
        attrs,
        delimiter,
        name: lossy(&name),
    })
}

fn parse_quoted(b: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let b = b.strip_prefix(b"\"")?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                out.push(*b.get(i + 1)?);
                i += 2;
            }
            b'"' => return Some((out, &b[i + 1..])),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

fn parse_astring(b: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    match b.first()? {
        b'"' => parse_quoted(b),
        b'{' => {
            let close = b.iter().position(|&c| c == b'}')?;
            let n = literal_len(&b[..=close])?;
            let data = b.get(close + 1..)?.strip_prefix(b"\r\n")?;
            Some((data.get(..n)?.to_vec(), &data[n..]))
        }
        _ => {
            let end = b
                .iter()
                .position(|&c| c == b' ' || c == b'\r' || c == b'\n')
                .unwrap_or(b.len());
            Some((b[..end].to_vec(), &b[end..]))
        }
    }
}

// ───────────────────────────── modified UTF-7 ─────────────────────────────

/// RFC 3501 §5.1.3 modified UTF-7 (independent of Ferry's implementation).
pub fn mutf7_encode(s: &str) -> String {
    fn flush(out: &mut String, pending: &mut Vec<u16>) {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&b64_mutf7(&bytes));
        out.push('-');
        pending.clear();
    }
    let mut out = String::new();
    let mut pending = Vec::new();
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut pending);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut out, &mut pending);
    out
}

fn b64_mutf7(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

// ───────────────────────────── messages ─────────────────────────────

fn message_id(seed: &[u8]) -> String {
    let digest = Sha256::digest(seed);
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@ferry.test>")
}

/// `n` messages to seed a folder with, as [`Dovecot::append_many`] takes them:
/// flags cycling through `\Seen`, `\Flagged $Work` and none, each its own
/// INTERNALDATE; `message(i)` is the i-th message itself.
pub fn bulk_with(n: usize, message: impl Fn(usize) -> Vec<u8>) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let flags = ["(\\Seen)", "(\\Flagged $Work)", "()"][i % 3];
            let date = format!(
                "\"{:02}-Mar-2019 08:{:02}:{:02} +0100\"",
                i % 28 + 1,
                i % 60,
                i % 59
            );
            (format!("{flags} {date}"), message(i))
        })
        .collect()
}

/// A small valid RFC 5322 message (CRLF line endings) with a Message-ID derived
/// from subject and body; use distinct subjects for distinct messages.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    let mut seed = subject.as_bytes().to_vec();
    seed.push(0);
    seed.extend_from_slice(body.as_bytes());
    let mut m = format!(
        "From: Ferry Test <sender@ferry.test>\r\n\
         To: Recipient <recipient@ferry.test>\r\n\
         Subject: {subject}\r\n\
         Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n\
         Message-ID: {}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n",
        message_id(&seed)
    );
    for line in body.lines() {
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// A valid message of exactly `bytes` bytes: headers plus a body of base64-looking
/// lines of at most 76 characters (CRLF). Deterministic.
pub fn big_message(bytes: usize) -> Vec<u8> {
    let header = |filler: &str| {
        format!(
            "From: Ferry Test <sender@ferry.test>\r\n\
             To: Recipient <recipient@ferry.test>\r\n\
             Subject: Big message of {bytes} bytes\r\n\
             Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n\
             Message-ID: {}\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             Content-Transfer-Encoding: 7bit\r\n\
             X-Ferry-Filler: x{filler}\r\n\
             \r\n",
            message_id(format!("big-{bytes}").as_bytes())
        )
    };
    let mut m = header("");
    if bytes.checked_sub(m.len()) == Some(1) {
        m = header("x"); // a body cannot be exactly one byte of whole CRLF lines
    }
    assert!(
        bytes >= m.len(),
        "big_message({bytes}) is smaller than its {}-byte header",
        m.len()
    );
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = m.into_bytes();
    out.reserve(bytes - out.len());
    let mut state: u32 = 0x2545_f491;
    let mut remaining = bytes - out.len();
    while remaining > 0 {
        let mut n = remaining.saturating_sub(2).min(76);
        if remaining - (n + 2) == 1 {
            n -= 1; // never leave a single byte over
        }
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            out.push(B64[(state % 64) as usize]);
        }
        out.extend_from_slice(b"\r\n");
        remaining -= n + 2;
    }
    debug_assert_eq!(out.len(), bytes);
    out
}

/// The message in alice's Japanese folder: ISO-2022-JP body and encoded Subject.
pub fn jp_message() -> Vec<u8> {
    let mut m = format!(
        "From: Lab <lab@ferry.test>\r\n\
         To: Alice <alice@ferry.test>\r\n\
         Subject: =?ISO-2022-JP?B?GyRCOCY1Zjw8JCskaSROJCpDTiRpJDsbKEI=?=\r\n\
         Date: Tue, 02 Jan 2024 09:30:00 +0900\r\n\
         Message-ID: {}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=ISO-2022-JP\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n",
        message_id(b"jp-lab-notice")
    )
    .into_bytes();
    // "研究室のお知らせです。" / "来週のゼミは休講です。" in ISO-2022-JP.
    m.extend_from_slice(b"\x1b$B8&5f<<$N$*CN$i$;$G$9!#\x1b(B\r\n");
    m.extend_from_slice(b"\x1b$BMh=5$N%<%_$O5Y9V$G$9!#\x1b(B\r\n");
    m
}

// ───────────────────────────── standard fixture ─────────────────────────────

async fn append_ok(c: &mut TestClient, mailbox: &str, flags: &str, msg: &[u8]) {
    let r = c.append(mailbox, flags, msg).await;
    if !r.is_ok() {
        panic!("seeding APPEND to {mailbox} failed:\n{}", r.text());
    }
}

async fn seed_old_alice(old: &Dovecot) {
    let mut c = old.client("alice").await;
    let flags = ["(\\Seen)", "(\\Flagged)", ""];
    for (subject, flags) in OLD_INBOX_SUBJECTS.iter().zip(flags) {
        append_ok(
            &mut c,
            "INBOX",
            flags,
            &message(subject, &format!("Body of {subject}.")),
        )
        .await;
    }
    for subject in OLD_SENT_SUBJECTS {
        append_ok(
            &mut c,
            "INBOX.Sent",
            "(\\Seen)",
            &message(subject, "Sent long ago."),
        )
        .await;
    }
    for mailbox in ["INBOX.Archive", "INBOX.Archive.2019", OLD_JP_WIRE] {
        c.cmd(&format!("CREATE {}", quoted(mailbox)))
            .await
            .assert_ok();
    }
    append_ok(
        &mut c,
        "INBOX.Archive.2019",
        "(\\Seen)",
        &message(OLD_ARCHIVE_SUBJECT, "Archived."),
    )
    .await;
    append_ok(&mut c, OLD_JP_WIRE, "", &jp_message()).await;
    for mailbox in OLD_SUBSCRIBED {
        c.cmd(&format!("SUBSCRIBE {}", quoted(mailbox)))
            .await
            .assert_ok();
    }
    c.logout().await;
}

async fn seed_new_alice(new: &Dovecot) {
    let mut c = new.client("alice").await;
    let flags = ["(\\Seen)", ""];
    for (subject, flags) in NEW_INBOX_SUBJECTS.iter().zip(flags) {
        append_ok(
            &mut c,
            "INBOX",
            flags,
            &message(subject, &format!("Body of {subject}.")),
        )
        .await;
    }
    c.cmd("CREATE Work").await.assert_ok();
    c.cmd("SUBSCRIBE Work").await.assert_ok();
    append_ok(
        &mut c,
        "Work",
        "",
        &message(NEW_WORK_SUBJECT, "Do the work."),
    )
    .await;
    c.logout().await;
}

/// Users besides alice get one message in each INBOX: "Old hello <user>" on OLD,
/// "New hello <user>" on NEW.
pub const SMALL_FIXTURE_USERS: [&str; 3] = ["dave", "olga", "nils"];

async fn seed_small(store: &Dovecot, user: &str, which: &str) {
    let mut c = store.client(user).await;
    let subject = format!("{which} hello {user}");
    append_ok(&mut c, "INBOX", "", &message(&subject, "Hello.")).await;
    c.logout().await;
}

/// The standard fixture. alice: OLD `INBOX` 3 (\Seen, \Flagged, plain), `INBOX.Sent`
/// 2, `INBOX.Archive` 0, `INBOX.Archive.2019` 1, [`OLD_JP_WIRE`] 1 (ISO-2022-JP),
/// subscriptions [`OLD_SUBSCRIBED`]; NEW `INBOX` 2 (\Seen, plain), `Work` 1 (subscribed)
/// plus the auto Sent/Drafts/Trash/Junk. dave, olga, nils: one message in each INBOX.
pub async fn seed_standard(old: &Dovecot, new: &Dovecot) {
    assert_eq!(
        old.layout(),
        Layout::Old,
        "seed_standard: first store must be OLD"
    );
    assert_eq!(
        new.layout(),
        Layout::New,
        "seed_standard: second store must be NEW"
    );
    let small = async {
        for user in SMALL_FIXTURE_USERS {
            tokio::join!(seed_small(old, user, "Old"), seed_small(new, user, "New"));
        }
    };
    tokio::join!(seed_old_alice(old), seed_new_alice(new), small);
}

// ───────────────────────────── Ferry test environment ─────────────────────────────

/// OLD and NEW Dovecot plus a running Ferry in front of them.
pub struct TestEnv {
    pub old: Dovecot,
    pub new: Dovecot,
    pub ferry: ferry::Ferry,
    /// Ferry's (self-signed) server certificate, to trust in clients.
    pub ca: CertificateDer<'static>,
    pub config_toml: String,
    dir: TempDir,
}

/// Options for [`TestEnv`]; defaults: no plaintext auth, backends without TLS, seeded.
pub struct TestEnvBuilder {
    allow_plaintext: bool,
    extra_toml: String,
    old_tls: BackendTls,
    new_tls: BackendTls,
    seed: bool,
    new_conf: String,
    old_conf: String,
    new_naming: Naming,
    auth_toml: String,
    listen_toml: String,
}

impl TestEnvBuilder {
    pub fn allow_plaintext(mut self, yes: bool) -> Self {
        self.allow_plaintext = yes;
        self
    }
    /// Appended verbatim to the generated TOML (after `[migration.users]`).
    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self
    }
    pub fn old_tls(mut self, mode: BackendTls) -> Self {
        self.old_tls = mode;
        self
    }
    pub fn new_tls(mut self, mode: BackendTls) -> Self {
        self.new_tls = mode;
        self
    }
    /// Appended to the NEW Dovecot's configuration.
    pub fn new_conf(mut self, conf: &str) -> Self {
        self.new_conf.push_str(conf);
        self
    }
    /// Appended to the OLD Dovecot's configuration (e.g. a shorter
    /// `imap_capability`).
    pub fn old_conf(mut self, conf: &str) -> Self {
        self.old_conf.push_str(conf);
        self
    }
    pub fn seed(mut self, yes: bool) -> Self {
        self.seed = yes;
        self
    }
    /// Added to the generated `[listen]` table (e.g. `proxy_protocol = true`).
    pub fn listen_toml(mut self, toml: &str) -> Self {
        self.listen_toml.push_str(toml);
        self
    }
    /// Added to the generated `[auth]` table (e.g. `verify = "old"`).
    pub fn auth_toml(mut self, toml: &str) -> Self {
        self.auth_toml.push_str(toml);
        self
    }
    /// How the NEW store knows the test users (see [`Naming`]).
    pub fn new_naming(mut self, naming: Naming) -> Self {
        self.new_naming = naming;
        self
    }

    /// The Ferry configuration [`TestEnvBuilder::start`] uses, for these stores and
    /// server certificate/key files.
    pub fn toml(&self, old: &Dovecot, new: &Dovecot, cert: &Path, key: &Path) -> String {
        let mut toml = format!(
            "[listen]\n\
             imaps = \"127.0.0.1:0\"\n\
             imap  = \"127.0.0.1:0\"\n\
             {}\
             [tls]\n\
             cert = {}\n\
             key  = {}\n\
             [auth]\n\
             allow_plaintext = {}\n\
             throttle_base_ms = 100\n\
             throttle_max_ms = 400\n\
             {}",
            self.listen_toml,
            toml_str(&cert.display().to_string()),
            toml_str(&key.display().to_string()),
            self.allow_plaintext,
            self.auth_toml,
        );
        toml.push_str(&backend_toml("old", old, self.old_tls));
        toml.push_str(&backend_toml("new", new, self.new_tls));
        toml.push_str(
            "[namespace]\n\
             old_prefix = \"Old/\"\n\
             delimiter = \"/\"\n\
             [migration]\n\
             default_phase = \"merged\"\n\
             [migration.users]\n\
             \"olga\" = \"old\"\n\
             \"nils\" = \"new\"\n",
        );
        // Under the env's temp dir, next to the certificate.
        let subs = cert.with_file_name("subscriptions");
        toml = toml.replacen(
            "[migration]\n",
            &format!(
                "subscriptions_dir = {}\n[migration]\n",
                toml_str(&subs.display().to_string())
            ),
            1,
        );
        if !self.extra_toml.contains("[state]") {
            let db = cert.with_file_name("state.db");
            toml.push_str(&format!(
                "[state]\nurl = {}\n",
                toml_str(&format!("sqlite://{}", db.display()))
            ));
        }
        toml.push_str(&self.extra_toml);
        if !toml.ends_with('\n') {
            toml.push('\n');
        }
        toml
    }

    pub async fn start(self) -> TestEnv {
        init();
        let (old, new) = tokio::join!(
            Dovecot::start_with(
                Layout::Old,
                self.old_tls != BackendTls::None,
                &self.old_conf
            ),
            Dovecot::start_named(
                Layout::New,
                self.new_tls != BackendTls::None,
                &self.new_conf,
                self.new_naming
            )
        );
        if self.seed {
            seed_standard(&old, &new).await;
        }
        let dir = tempfile::Builder::new()
            .prefix("ferry-env-")
            .tempdir()
            .expect("create Ferry temp dir");
        let (cert_pem, key_pem, ca) = self_signed_cert();
        let cert = dir.path().join("ferry.crt");
        let key = dir.path().join("ferry.key");
        fs::write(&cert, cert_pem).expect("write ferry.crt");
        fs::write(&key, key_pem).expect("write ferry.key");
        let toml = self.toml(&old, &new, &cert, &key);
        let ferry = start_ferry(&toml).await;
        TestEnv {
            old,
            new,
            ferry,
            ca,
            config_toml: toml,
            dir,
        }
    }
}

async fn start_ferry(toml: &str) -> ferry::Ferry {
    let config = ferry::config::parse(toml)
        .unwrap_or_else(|e| panic!("test config rejected: {e}\n--- config ---\n{toml}"));
    ferry::Ferry::start(config)
        .await
        .unwrap_or_else(|e| panic!("Ferry::start failed: {e}\n--- config ---\n{toml}"))
}

fn backend_toml(name: &str, d: &Dovecot, mode: BackendTls) -> String {
    let tls_lines = |addr: String, tls: &str| {
        let ca = d.ca_pem_path().expect("TLS backend has a CA");
        format!(
            "[backends.{name}]\naddress = \"{addr}\"\ntls = \"{tls}\"\nca = {}\nserver_name = \"localhost\"\n",
            toml_str(&ca.display().to_string())
        )
    };
    match mode {
        BackendTls::None => format!(
            "[backends.{name}]\naddress = \"{}\"\ntls = \"none\"\n",
            d.addr()
        ),
        BackendTls::Implicit => tls_lines(d.imaps_addr().expect("imaps port"), "implicit"),
        BackendTls::Starttls => tls_lines(d.addr(), "starttls"),
    }
}

/// `s` as a TOML string (written by the toml crate, so it reads back exactly).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

impl TestEnv {
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder {
            allow_plaintext: false,
            extra_toml: String::new(),
            old_tls: BackendTls::None,
            new_tls: BackendTls::None,
            seed: true,
            new_conf: String::new(),
            old_conf: String::new(),
            new_naming: Naming::Same,
            auth_toml: String::new(),
            listen_toml: String::new(),
        }
    }

    /// Defaults: seeded, no plaintext auth, backends without TLS.
    pub async fn start() -> TestEnv {
        Self::builder().start().await
    }

    /// Where Ferry's temporary files (cert, key) live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A TLS client to Ferry's imaps listener, greeting consumed (asserted `* OK`).
    pub async fn imaps_client(&self) -> TestClient {
        let addr = self
            .ferry
            .imaps_addr()
            .expect("Ferry has no imaps listener");
        let mut c = TestClient::tls(addr, &self.ca).await;
        let g = c.greeting().await;
        assert!(
            g.starts_with(b"* OK"),
            "Ferry imaps greeting: {}",
            lossy(&g)
        );
        c
    }

    /// A plain client to Ferry's imap listener, greeting consumed (asserted `* OK`).
    pub async fn plain_client(&self) -> TestClient {
        let addr = self.ferry.imap_addr().expect("Ferry has no imap listener");
        let mut c = TestClient::plain(addr).await;
        let g = c.greeting().await;
        assert!(g.starts_with(b"* OK"), "Ferry imap greeting: {}", lossy(&g));
        c
    }

    /// A TLS client logged in through Ferry as `user` (asserted OK).
    pub async fn login(&self, user: &str) -> TestClient {
        let mut c = self.imaps_client().await;
        let r = c.login(user, password_for(user)).await;
        if !r.is_ok() {
            panic!(
                "login of {user} through Ferry failed:\n{}\n--- OLD log ---\n{}\n--- NEW log ---\n{}",
                r.text(),
                self.old.log(),
                self.new.log()
            );
        }
        c
    }

    /// Shuts Ferry down; the Dovecots stop when dropped.
    pub async fn shutdown(self) {
        self.ferry.shutdown().await;
    }

    /// Shuts Ferry down (waiting for its state-store writes) and starts a new
    /// instance with the same configuration: same stores, same state store.
    pub async fn restart_ferry(self) -> TestEnv {
        let TestEnv {
            old,
            new,
            ferry,
            ca,
            config_toml,
            dir,
        } = self;
        ferry.shutdown_within(Duration::from_secs(5)).await;
        let ferry = start_ferry(&config_toml).await;
        TestEnv {
            old,
            new,
            ferry,
            ca,
            config_toml,
            dir,
        }
    }

    /// Another Ferry instance on the same configuration (its own ports).
    pub async fn another_ferry(&self) -> ferry::Ferry {
        start_ferry(&self.config_toml).await
    }

    /// A TLS client to `ferry`'s imaps listener, logged in as `user` (asserted OK).
    pub async fn login_to(&self, ferry: &ferry::Ferry, user: &str) -> TestClient {
        let mut c = TestClient::tls(ferry.imaps_addr().expect("imaps listener"), &self.ca).await;
        c.greeting().await;
        c.login(user, password_for(user)).await.assert_ok();
        c
    }
}

/// The `Old/` names LSUB says are subscribed (not `\Noselect`: LSUB lists
/// the parents of subscribed names that way).
pub async fn lsub_old(c: &mut TestClient) -> Vec<String> {
    let r = c.cmd("LSUB \"\" \"Old/*\"").await;
    r.assert_ok();
    r.list_entries()
        .into_iter()
        .filter(|e| !e.has_attr("\\Noselect"))
        .map(|e| e.name)
        .collect()
}

/// What `folder` holds, from Python's imaplib straight at the store (see
/// `tests/witness_digest.py`): SHA-256, flags, INTERNALDATE per message.
pub async fn contents(store: &Dovecot, folder: &str) -> Vec<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/witness_digest.py");
    let addr = store.socket_addr();
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("alice")
        .arg(password_for("alice"))
        .arg(folder)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Runs the Python imaplib witness `script` (in `tests/`) against Ferry's
/// implicit-TLS listener as `user`, with `args` after the usual
/// `HOST PORT CAFILE USER PASSWORD`; panics with its output unless it exits 0.
pub async fn run_witness(env: &TestEnv, script: &str, user: &str, args: &[&str]) -> String {
    let addr = env.ferry.imaps_addr().expect("imaps listener");
    let ca = write_file(env.dir(), "witness-ca.pem", pem_of(&env.ca).as_bytes());
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(ca)
        .arg(user)
        .arg(password_for(user))
        .args(args);
    python(command)
        .await
        .unwrap_or_else(|e| panic!("witness failed:\n{e}"))
}

/// Runs a prepared `python3` command off the test's runtime (Ferry may run
/// on it): its stdout, or, if it failed, its stdout and stderr.
pub async fn python(mut command: std::process::Command) -> Result<String, String> {
    let out = tokio::task::spawn_blocking(move || {
        command
            .output()
            .expect("run python3 (apt-get install -y python3)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.success() {
        true => Ok(stdout),
        false => Err(format!(
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// Writes `bytes` to a file in `dir` and returns its path (handy for configs).
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut f = fs::File::create(&path).expect("create file");
    f.write_all(bytes).expect("write file");
    path
}

/// A `/proc/PID/status` figure in KiB, e.g. `proc_status_kib(pid, "VmRSS:")`.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Peak resident memory (VmHWM) of process `pid`, in KiB.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// The configuration file of the `ferry` process [`ferry_process`] started
/// on `addr` (each has its own: Ferry watches it).
pub fn ferry_process_config(env: &TestEnv, addr: &str) -> PathBuf {
    let port = addr.rsplit(':').next().expect("host:port");
    env.dir().join(format!("ferry-process-{port}.toml"))
}

/// Runs `env`'s configuration in a separate `ferry` process (imaps only, on a
/// fresh port), so its memory is Ferry's alone. Returns the child and the
/// imaps address once it accepts connections.
pub async fn ferry_process(env: &TestEnv) -> (std::process::Child, String) {
    ferry_process_with(env, "", Stdio::null()).await
}

/// [`ferry_process`] with `extra_toml` appended to the configuration and its
/// log (standard output) written to the returned file.
pub async fn ferry_process_logged(
    env: &TestEnv,
    extra_toml: &str,
) -> (std::process::Child, String, PathBuf) {
    // One log per process: a test may run several.
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = env.dir().join(format!("ferry-process-{n}.log"));
    let file = fs::File::create(&log).expect("create the log file");
    let (child, addr) = ferry_process_with(env, extra_toml, Stdio::from(file)).await;
    (child, addr, log)
}

async fn ferry_process_with(
    env: &TestEnv,
    extra_toml: &str,
    log: Stdio,
) -> (std::process::Child, String) {
    let port = free_port();
    let toml = env
        .config_toml
        .replacen(
            "imaps = \"127.0.0.1:0\"",
            &format!("imaps = \"127.0.0.1:{port}\""),
            1,
        )
        .replacen("imap  = \"127.0.0.1:0\"", "", 1)
        + extra_toml;
    // Its own file: Ferry watches its configuration file.
    let conf = write_file(
        env.dir(),
        &format!("ferry-process-{port}.toml"),
        toml.as_bytes(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(&conf)
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the ferry binary");
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("ferry process did not start on {addr}");
}

/// A certificate in PEM form, for clients outside Rust (Python's ssl).
pub fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// `kill SIGNAL PID` (e.g. `"-HUP"`); true when it was delivered.
pub fn send_signal(pid: &str, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, pid])
        .status()
        .is_ok_and(|s| s.success())
}

// ───────────────────────────── OAuth2 token introspection ─────────────────────────────

/// The tests' token-introspection endpoint (`tests/oauth_introspect.py`),
/// for a Dovecot whose oauth2 passdb asks it whether a token is good.
pub struct Introspection {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl Introspection {
    pub async fn start() -> Introspection {
        let dir = tempfile::Builder::new()
            .prefix("ferry-oauth-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        // Dovecot's auth process reads the passdb file in here.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let tokens = dir.path().join("tokens.json");
        fs::write(&tokens, "{}").unwrap();
        let port_file = dir.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth_introspect.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(&tokens)
            .arg(&port_file)
            .stdin(Stdio::null())
            .spawn()
            .expect(
                "python3 is needed for the introspection endpoint (apt-get install -y python3)",
            );
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            if let Ok(p) = fs::read_to_string(&port_file) {
                break p.trim().parse().expect("port number");
            }
            assert!(
                Instant::now() < deadline,
                "introspection endpoint did not start"
            );
            tokio::time::sleep(POLL).await;
        };
        Introspection { child, dir, port }
    }

    /// Makes `token` good for `user` (Dovecot's name for the user).
    pub fn grant(&self, token: &str, user: &str) {
        self.edit(|t| {
            t.insert(token.into(), user.into());
        });
    }

    /// Makes `token` no good any more (expired or revoked).
    pub fn revoke(&self, token: &str) {
        self.edit(|t| {
            t.remove(token);
        });
    }

    fn edit(&self, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
        let path = self.dir.path().join("tokens.json");
        let mut tokens: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        f(&mut tokens);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_string(&tokens).unwrap()).unwrap();
        fs::rename(tmp, path).unwrap();
    }

    /// Configuration for a Dovecot that takes XOAUTH2 and OAUTHBEARER
    /// tokens this endpoint vouches for (passwords still work as before).
    pub fn dovecot_conf(&self) -> String {
        let ext = self.dir.path().join("dovecot-oauth2.conf.ext");
        fs::write(
            &ext,
            format!(
                "introspection_mode = post\n\
                 introspection_url = http://127.0.0.1:{}/introspect\n\
                 username_attribute = username\n\
                 active_attribute = active\n\
                 active_value = true\n",
                self.port
            ),
        )
        .unwrap();
        fs::set_permissions(&ext, fs::Permissions::from_mode(0o644)).unwrap();
        format!(
            "auth_mechanisms = plain login xoauth2 oauthbearer\n\
             passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n",
            ext.display()
        )
    }
}

impl Drop for Introspection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ───────────────────────────── HAProxy ─────────────────────────────

/// A real HAProxy (TCP mode) in front of one address, as admins run it in
/// front of Ferry.
pub struct Haproxy {
    child: Child,
    _dir: TempDir,
    port: u16,
}

impl Haproxy {
    /// Listens on 127.0.0.1 and forwards to `server` with `server_options`
    /// (`"send-proxy"`, `"send-proxy-v2"`, or `""` for none).
    pub async fn start(server: SocketAddr, server_options: &str) -> Haproxy {
        Haproxy::with_backend(&format!("  server ferry {server} {server_options}\n")).await
    }

    /// In front of a fleet, as deploy/haproxy/haproxy.cfg is: `balance`
    /// (e.g. `roundrobin`; `first` fills the first server first) over
    /// `servers` (each an IMAP address and its metrics address) with PROXY
    /// v2, an instance taken out once its `/readyz` fails (checked every
    /// 300 ms) and a connection it refuses sent to another.
    pub async fn fleet(balance: &str, servers: &[(SocketAddr, SocketAddr)]) -> Haproxy {
        let mut backend = format!(
            "  balance {balance}\n  option httpchk GET /readyz\n  retries 3\n  option redispatch\n"
        );
        for (i, (imap, metrics)) in servers.iter().enumerate() {
            backend.push_str(&format!(
                "  server ferry{i} {imap} send-proxy-v2 check port {} inter 300 fall 1 rise 2\n",
                metrics.port()
            ));
        }
        Haproxy::with_backend(&backend).await
    }

    async fn with_backend(backend: &str) -> Haproxy {
        let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("haproxy is needed for these tests (apt-get install -y haproxy)");
        let dir = tempfile::Builder::new()
            .prefix("ferry-haproxy-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let config = format!(
            "global\n  maxconn 1000\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend imap\n  bind 127.0.0.1:{port}\n  default_backend ferry\n\
             backend ferry\n{backend}"
        );
        let path = dir.path().join("haproxy.cfg");
        fs::write(&path, config).expect("write haproxy.cfg");
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start listening");
            tokio::time::sleep(POLL).await;
        }
        Haproxy {
            child,
            _dir: dir,
            port,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ───────────────────────────── nginx ─────────────────────────────

/// nginx's mail proxy (Debian `nginx-light` + `libnginx-mod-mail`) in front
/// of one IMAP store, as the admins Ferry competes with run it: plaintext,
/// `proxy_buffer 64k`. Its `auth_http` is answered by the same nginx (an
/// `http` server that names the store), so nothing else runs.
pub struct Nginx {
    child: Child,
    _dir: TempDir,
    port: u16,
    tls_port: Option<u16>,
}

impl Nginx {
    pub async fn start(store: SocketAddr) -> Nginx {
        Self::start_with_tls(store, None).await
    }

    /// With `tls` (certificate and key PEM files), also an implicit-TLS
    /// listener (`listen … ssl`), [`Nginx::tls_addr`].
    pub async fn start_with_tls(store: SocketAddr, tls: Option<(&Path, &Path)>) -> Nginx {
        let binary = "/usr/sbin/nginx";
        let module = "/usr/lib/nginx/modules/ngx_mail_module.so";
        assert!(
            Path::new(binary).exists() && Path::new(module).exists(),
            "nginx's mail proxy is needed (apt-get install -y nginx-light libnginx-mod-mail)"
        );
        let dir = tempfile::Builder::new()
            .prefix("ferry-nginx-")
            .tempdir()
            .expect("temp dir");
        let (port, auth) = (free_port(), free_port());
        let tls_port = tls.map(|_| free_port());
        let tls_server = match (tls, tls_port) {
            (Some((cert, key)), Some(p)) => format!(
                "  server {{\n    listen 127.0.0.1:{p} ssl;\n    protocol imap;\n    proxy on;\n\
                     ssl_certificate {};\n    ssl_certificate_key {};\n  }}\n",
                cert.display(),
                key.display()
            ),
            _ => String::new(),
        };
        let d = dir.path().display();
        let config = format!(
            "load_module {module};\n\
             daemon off;\nmaster_process off;\nworker_processes 1;\n\
             pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             worker_rlimit_nofile 20000;\n\
             events {{ worker_connections 9000; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
               fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
               server {{\n    listen 127.0.0.1:{auth};\n    location /auth {{\n\
                 add_header Auth-Status OK;\n      add_header Auth-Server {ip};\n\
                 add_header Auth-Port {store_port};\n      return 200;\n    }}\n  }}\n}}\n\
             mail {{\n  server_name localhost;\n  auth_http 127.0.0.1:{auth}/auth;\n\
               proxy_pass_error_message on;\n  proxy_buffer 64k;\n\
               imap_auth login plain;\n\
               server {{\n    listen 127.0.0.1:{port};\n    protocol imap;\n    proxy on;\n  }}\n{tls_server}}}\n",
            ip = store.ip(),
            store_port = store.port(),
        );
        let path = dir.path().join("nginx.conf");
        fs::write(&path, config).expect("write nginx.conf");
        // `FERRY_BENCH_NGINX_WRAP="valgrind --tool=callgrind"`: the bench
        // profiles nginx as it profiles Ferry.
        let child = wrapped("FERRY_BENCH_NGINX_WRAP", binary)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start listening: {}",
                fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            tokio::time::sleep(POLL).await;
        }
        Nginx {
            child,
            _dir: dir,
            port,
            tls_port,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // nginx's fast shutdown.
        stop_gently(&mut self.child);
    }
}

/// SIGTERM, up to 5 s to exit, then SIGKILL: a profiler the child runs
/// under (`FERRY_BENCH_WRAP`, `FERRY_BENCH_NGINX_WRAP`) writes its report.
pub fn stop_gently(child: &mut Child) {
    send_signal(&child.id().to_string(), "-TERM");
    for _ in 0..200 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// up-imapproxy (Debian `imapproxy`): keeps store connections open after
/// LOGOUT and reuses them for the next LOGIN of the same user, a peer in
/// `benches/e2e.rs`. One process, a thread per client.
pub struct Imapproxy {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl Imapproxy {
    pub async fn start(store: SocketAddr) -> Imapproxy {
        let binary = "/usr/sbin/imapproxyd";
        assert!(
            Path::new(binary).exists(),
            "up-imapproxy is needed (apt-get install -y imapproxy)"
        );
        let dir = tempfile::Builder::new()
            .prefix("ferry-imapproxy-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let d = dir.path().display();
        // It logs only to syslog; the protocol log must name a file even
        // when nothing is logged to it.
        let config = format!(
            "server_hostname {ip}\nserver_port {store_port}\n\
             listen_address 127.0.0.1\nlisten_port {port}\n\
             connect_retries 3\nconnect_delay 1\n\
             cache_size 3072\ncache_expiration_time 300\n\
             proc_username nobody\nproc_groupname nogroup\n\
             stat_filename {d}/pimpstats\nprotocol_log_filename {d}/protocol.log\n\
             syslog_facility LOG_MAIL\nsend_tcp_keepalives no\n\
             enable_select_cache no\nforeground_mode yes\nforce_tls no\n\
             enable_admin_commands no\n",
            ip = store.ip(),
            store_port = store.port(),
        );
        let path = dir.path().join("imapproxy.conf");
        fs::write(&path, config).expect("write imapproxy.conf");
        let mut child = Command::new(binary)
            .arg("-f")
            .arg(&path)
            .arg("-p")
            .arg(dir.path().join("imapproxy.pid"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start imapproxyd");
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("imapproxyd exited: {status} (it logs to syslog only)");
            }
            assert!(
                Instant::now() < deadline,
                "imapproxyd did not start listening"
            );
            tokio::time::sleep(POLL).await;
        }
        Imapproxy { child, dir, port }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Imapproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain TCP connection to `to` from the loopback address `from` (e.g.
/// 127.0.0.5), so a test can be many clients on one machine.
pub async fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

// ───────────────────────────── metrics over HTTP ─────────────────────────────

/// `GET path` over HTTP/1.1: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: ferry\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The sum of every sample of `name` whose labels include all of `labels`
/// (Prometheus text format).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

pub async fn scrape(env: &TestEnv) -> String {
    let addr = env.ferry.metrics_addr().expect("metrics listener");
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

// ───────────────────────────── captured logs ─────────────────────────────

/// A log writer that keeps what Ferry logs in this test process, for a test
/// that installs it as the subscriber's writer.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ───────────────────────────── PostgreSQL ─────────────────────────────

/// A real PostgreSQL server in its own temporary directory (initdb, then
/// pg_ctl), on a free loopback port, run as the `postgres` user when the
/// tests run as root (initdb refuses root). Stopped when dropped.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    pub async fn start() -> Postgres {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .flatten()
                    .map(|v| v.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            })
            .expect("PostgreSQL is needed for these tests (apt-get install -y postgresql)");
        let dir = tempfile::Builder::new()
            .prefix("ferry-postgres-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "chown postgres (is the postgres user there? apt-get install -y postgresql)"
            );
        }
        let run = |program: &str, args: &[&str]| {
            let mut c = if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            };
            let out = c.args(args).output().expect("run a PostgreSQL program");
            assert!(
                out.status.success(),
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        run(
            "initdb",
            &[
                "-D",
                data,
                "-U",
                "ferry",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        let log = dir.path().join("postgres.log");
        run(
            "pg_ctl",
            &[
                "-D",
                data,
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Postgres { dir, bin, port }
    }

    /// `postgres://…` for the server's default database.
    pub fn url(&self) -> String {
        format!("postgres://ferry@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let mut c = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = c
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// OLD's INBOX.Bulk for alice: 3,000 messages of up to 500 bytes, to be
/// copied while a test kills the copier.
pub async fn seed_bulk(env: &TestEnv) {
    let bulk = bulk_with(3_000, |i| {
        message(&format!("Bulk {i}"), &"y".repeat(i % 500))
    });
    env.old.create("alice", "INBOX.Bulk").await;
    env.old.append_many("alice", "INBOX.Bulk", &bulk).await;
}

/// The copier's own master-user logins and an SQLite state file in `dir`,
/// as TOML, and the `login` table of one store (to leave it out).
pub fn copier_toml(dir: &std::path::Path) -> (String, impl Fn(&str) -> String) {
    let secret = write_file(
        dir,
        "master.secret",
        format!("{MASTER_PASSWORD}\n").as_bytes(),
    );
    let login = move |store: &str| {
        format!(
            "[copier.{store}_login]\nmode = \"master\"\nmaster_user = \"{MASTER_USER}\"\n\
             master_password_file = {:?}\n",
            secret.display().to_string()
        )
    };
    let toml = format!(
        "[state]\nurl = \"sqlite://{}\"\n{}{}",
        dir.join("state.db").display(),
        login("old"),
        login("new")
    );
    (toml, login)
}

/// Polls `check` every 200 ms for up to `secs`; panics with `what` then.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `ferry` binary ([`ferry_command`]) on `conf`, logging warnings to
/// `stderr`, once it accepts connections on `addr` (a bench's Ferry).
pub async fn bench_ferry(conf: &Path, addr: &str, stderr: Stdio) -> Child {
    let mut child = ferry_command()
        .arg("--config")
        .arg(conf)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn ferry");
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("ferry did not start");
}

/// The release `ferry` binary as a command, run under `FERRY_BENCH_WRAP`
/// (e.g. `valgrind --tool=callgrind …`) when that is set: for the benches.
pub fn ferry_command() -> std::process::Command {
    wrapped("FERRY_BENCH_WRAP", env!("CARGO_BIN_EXE_ferry"))
}

/// `binary` as a command, run under the command in the environment
/// variable `wrap` when that is set.
pub fn wrapped(wrap: &str, binary: &str) -> std::process::Command {
    let wrap = std::env::var(wrap).unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = std::process::Command::new(program);
            c.args(words).arg(binary);
            c
        }
        None => std::process::Command::new(binary),
    }
}
