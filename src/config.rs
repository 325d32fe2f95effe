//! Configuration: TOML with `deny_unknown_fields`, parsed and validated by a pure
//! [`parse`] so that `ferry check-config`, start-up and tests share one path.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use thiserror::Error;

use crate::{identity::StoreLogin, namespace::Store};

mod explain;

/// Why a configuration was rejected. The text always names the offending key.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this configuration was read from (reloads and the file
    /// watcher read it again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    pub listen: Listen,
    #[serde(default)]
    pub tls: Option<ServerTls>,
    #[serde(default)]
    pub auth: Auth,
    pub backends: Backends,
    #[serde(default)]
    pub namespace: Namespace,
    #[serde(default)]
    pub migration: Migration,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub copier: Copier,
    /// The admin API (off unless configured).
    pub admin: Option<Admin>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where the admin API listens (HTTP): loopback unless you say otherwise.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// A file holding the bearer token every request must carry
    /// (`Authorization: Bearer …`); read on each request, so it can be
    /// rotated in place.
    pub token_file: PathBuf,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9156))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `sqlite:///path/state.db` (a file, created) or `postgres://…`.
    #[serde(default = "default_state_url")]
    pub url: String,
}

fn default_state_url() -> String {
    "sqlite:///var/lib/ferry/state.db".into()
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            url: default_state_url(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copier {
    /// Copy every user whose phase is `merged` in the background.
    #[serde(default)]
    pub enabled: bool,
    /// Users copied at once by the background copier (one connection to
    /// each store per user).
    #[serde(default = "default_users_at_once")]
    pub users_at_once: usize,
    /// Seconds between two passes over one user (delta passes carry new
    /// mail and flag changes from OLD).
    #[serde(default = "default_pass_interval")]
    pub pass_interval_secs: u64,
    /// After each pass: `no`, `quick` (counts, size, Message-ID, date,
    /// flags) or `full` (and SHA-256 of both bodies).
    #[serde(default = "default_verify")]
    pub verify: crate::copier::folder::Verify,
    /// Remove from NEW the copies of messages expunged on OLD (else they
    /// are only reported).
    #[serde(default)]
    pub remove_expunged: bool,
    /// First wait after a failed pass, doubled per failure up to
    /// `retry_max_secs`.
    #[serde(default = "default_retry_base")]
    pub retry_base_secs: u64,
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// How long a user stays with the instance copying it after that
    /// instance stops renewing (renewed every third of it): another
    /// instance sharing the state store takes the user over then.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
    /// Messages and bytes per second, per store (0: no cap).
    #[serde(default)]
    pub pace: CopierPace,
    /// `archive` (OLD's folders under the `Old/` prefix on NEW) or `merge`.
    #[serde(default)]
    pub mode: crate::copier::mapping::Mode,
    /// Renames: OLD path below its prefix = NEW name, both as a client
    /// sees them (`"Sent Items" = "Sent"`).
    #[serde(default)]
    pub map: HashMap<String, String>,
    /// How the copier logs in to each store, when not as
    /// `[backends.*.login]` says (that store checks users' passwords, which
    /// the copier never has): a master user or a token.
    pub old_login: Option<StoreLogin>,
    pub new_login: Option<StoreLogin>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopierPace {
    #[serde(default)]
    pub old: crate::copier::pace::Caps,
    #[serde(default)]
    pub new: crate::copier::pace::Caps,
}

fn default_users_at_once() -> usize {
    4
}
fn default_pass_interval() -> u64 {
    3600
}
fn default_verify() -> crate::copier::folder::Verify {
    crate::copier::folder::Verify::Quick
}
fn default_lease() -> u64 {
    60
}
fn default_retry_base() -> u64 {
    30
}
fn default_retry_max() -> u64 {
    3600
}

impl Default for Copier {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

impl Copier {
    /// How the copier logs in to `store`.
    pub fn login<'a>(&'a self, store: Store, backends: &'a Backends) -> &'a StoreLogin {
        let own = match store {
            Store::Old => &self.old_login,
            Store::New => &self.new_login,
        };
        own.as_ref().unwrap_or(match store {
            Store::Old => &backends.old.login,
            Store::New => &backends.new.login,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `text` (the default) or `json`: one JSON object a line, with the
    /// session's fields (`client.addr`, `user`, …) in `spans`. Read at start.
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (HTTP); off when unset.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Implicit TLS (RFC 8314), usually port 993.
    pub imaps: Option<SocketAddr>,
    /// Plaintext with STARTTLS, usually port 143.
    pub imap: Option<SocketAddr>,
    /// Every connection starts with a PROXY protocol header (v1 or v2, as
    /// HAProxy's `send-proxy`/`send-proxy-v2` write it) giving the client's
    /// address; a connection without one is closed before any IMAP byte.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Who may send those headers (`"10.0.0.0/8"`, `"192.0.2.7/32"`); any
    /// other sender is closed at once.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Allow LOGIN/AUTHENTICATE before TLS. Off by default: passwords must not cross
    /// the network in clear text.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Delay after the first failed login from a client address or for a user
    /// name, doubling with each further failure (Dovecot's curve: 2, 4, 8, 15 s).
    #[serde(default = "default_throttle_base")]
    pub throttle_base_ms: u64,
    /// The longest such delay.
    #[serde(default = "default_throttle_max")]
    pub throttle_max_ms: u64,
    /// Seconds a failed user/password pair is remembered: the same wrong
    /// password again is refused without reaching the stores (a phone with a
    /// stale password must not lock the real account).
    #[serde(default = "default_failure_cache")]
    pub failure_cache_secs: u64,
    /// Failed logins after which a connection is closed.
    #[serde(default = "default_max_failures")]
    pub max_failures_per_connection: u32,
    /// The store that checks the client's password (it must log in with the
    /// client's credentials); by default the phase's own store: OLD in phase
    /// `old`, NEW in `merged` and `new`.
    #[serde(default)]
    pub verify: Option<Store>,
    /// Offer AUTH=XOAUTH2 and AUTH=OAUTHBEARER and pass the client's token
    /// to this store, which checks it; the other store is reached with its
    /// own login mode.
    #[serde(default)]
    pub oauth: Option<Store>,
}

fn default_throttle_base() -> u64 {
    2000
}
fn default_throttle_max() -> u64 {
    15000
}
fn default_failure_cache() -> u64 {
    300
}
fn default_max_failures() -> u32 {
    3
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            allow_plaintext: false,
            throttle_base_ms: default_throttle_base(),
            throttle_max_ms: default_throttle_max(),
            failure_cache_secs: default_failure_cache(),
            max_failures_per_connection: default_max_failures(),
            verify: None,
            oauth: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backends {
    pub old: Backend,
    pub new: Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendTls {
    Implicit,
    Starttls,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `host:port`.
    pub address: String,
    pub tls: BackendTls,
    /// PEM CA bundle to verify the backend with; default: the Mozilla roots.
    pub ca: Option<PathBuf>,
    /// Name used for SNI and certificate verification; default: the host of `address`.
    pub server_name: Option<String>,
    /// Who Ferry is at this store (`[backends.*.login]`).
    #[serde(default)]
    pub login: StoreLogin,
    /// Send IMAP ID with the client's address (`x-originating-ip`, …) and
    /// the client's own ID fields before logging in, when the store offers ID.
    #[serde(default = "yes")]
    pub forward_id: bool,
}

fn yes() -> bool {
    true
}

impl Backend {
    /// The host part of `address` (brackets of an IPv6 literal removed).
    pub fn host(&self) -> &str {
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// Where OLD's folders appear, in UTF-8; ends with `delimiter`.
    #[serde(default = "default_prefix")]
    pub old_prefix: String,
    /// The hierarchy delimiter clients see.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Where earlier Ferry versions kept subscriptions to `Old/` folders (one
    /// small file per user). They now live in the state store (`[state]`):
    /// this directory is imported into it once, at the first start that finds
    /// it, and never read or written again.
    #[serde(default)]
    pub subscriptions_dir: Option<PathBuf>,
}

fn default_prefix() -> String {
    "Old/".into()
}
fn default_delimiter() -> char {
    '/'
}

impl Default for Namespace {
    fn default() -> Self {
        Self {
            old_prefix: default_prefix(),
            delimiter: default_delimiter(),
            subscriptions_dir: None,
        }
    }
}

/// A user's migration phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The OLD store exactly as it is.
    Old,
    /// NEW as it is, OLD read-only under the prefix.
    Merged,
    /// The NEW store only.
    New,
}

impl Phase {
    /// The store a session in this phase is served by.
    pub fn store(self) -> Store {
        match self {
            Phase::Old => Store::Old,
            Phase::Merged | Phase::New => Store::New,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Old => "old",
            Phase::Merged => "merged",
            Phase::New => "new",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    #[serde(default = "default_phase")]
    pub default_phase: Phase,
    /// Per-domain overrides (`"example.edu" = "new"`), matched on the part after `@`.
    #[serde(default)]
    pub domains: HashMap<String, Phase>,
    /// Per-user overrides; they win over the users file and domains.
    #[serde(default)]
    pub users: HashMap<String, Phase>,
    /// A TOML file of `"user" = "phase"` lines (the same syntax as
    /// `[migration.users]`), for long lists; re-read with the configuration.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// Seconds over which sessions whose phase changed on reload are ended,
    /// spread evenly, so thousands of clients do not reconnect at once.
    #[serde(default)]
    pub drain_secs: u64,
    /// The users file's entries (lower-case names).
    #[serde(skip)]
    pub file_users: HashMap<String, Phase>,
    /// Phases set through the admin API (lower-case names), kept in the
    /// state store: they win over the files until cleared.
    #[serde(skip)]
    pub api_users: HashMap<String, Phase>,
}

fn default_phase() -> Phase {
    Phase::Merged
}

impl Default for Migration {
    fn default() -> Self {
        Self {
            default_phase: default_phase(),
            domains: HashMap::new(),
            users: HashMap::new(),
            users_file: None,
            drain_secs: 0,
            file_users: HashMap::new(),
            api_users: HashMap::new(),
        }
    }
}

impl Migration {
    /// The phase of `user`: see [`Migration::phase_and_source`].
    pub fn phase_for(&self, user: &str) -> Phase {
        self.phase_and_source(user).0
    }

    /// The phase of `user` and what set it, first match winning: the admin
    /// API, `[migration.users]`, the users file, the user's domain, the
    /// default. User names compare case-insensitively, like most IMAP
    /// servers' logins.
    pub fn phase_and_source(&self, user: &str) -> (Phase, &'static str) {
        let lower = user.to_lowercase();
        if let Some(p) = self.api_users.get(&lower) {
            return (*p, "api");
        }
        if let Some(p) = self.users.get(user).or_else(|| self.users.get(&lower)) {
            return (*p, "config");
        }
        if let Some(p) = self.file_users.get(&lower) {
            return (*p, "users_file");
        }
        if let Some((_, domain)) = lower.rsplit_once('@')
            && let Some(p) = self.domains.get(domain)
        {
            return (*p, "domain");
        }
        (self.default_phase, "default")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest command or response line. 64 KiB is what Dovecot accepts.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    /// Largest literal Ferry holds in memory (mailbox names, passwords, search
    /// strings). APPEND literals are streamed and not bound by this.
    #[serde(default = "default_max_inline_literal")]
    pub max_inline_literal_bytes: usize,
    /// Largest APPEND message accepted; larger ones are refused before `+`.
    #[serde(default = "default_max_append")]
    pub max_append_bytes: u64,
    /// Seconds a client may take to log in.
    #[serde(default = "default_preauth_timeout")]
    pub preauth_timeout_secs: u64,
    /// Seconds an authenticated client may stay silent (RFC 9051: at least 30 min).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds to connect (and log in) to a backend.
    #[serde(default = "default_connect_timeout")]
    pub backend_connect_timeout_secs: u64,
    /// Seconds a shutdown waits for commands in flight (a copy included).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Seconds a store may stay silent while it owes an answer (IDLE
    /// excepted) before its connection is given up.
    #[serde(default = "default_command_timeout")]
    pub backend_command_timeout_secs: u64,
    /// Seconds after which a long IDLE is renewed toward the store (DONE and
    /// IDLE again, unseen by the client), before servers' 30-minute timers.
    #[serde(default = "default_idle_refresh")]
    pub idle_refresh_secs: u64,
    /// Client connections at once, in total and per client address.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Client connections per address over every instance sharing the
    /// PostgreSQL state store (0: no such limit). Instances tell each other
    /// their busiest addresses every second, so it holds within about a
    /// second and `limit / 16` connections per instance.
    #[serde(default)]
    pub fleet_max_connections_per_ip: usize,
}

fn default_command_timeout() -> u64 {
    300
}
fn default_idle_refresh() -> u64 {
    25 * 60
}
fn default_max_connections() -> usize {
    20_000
}
fn default_max_connections_per_ip() -> usize {
    // Generous: a campus NAT puts many users behind one address.
    500
}

fn default_shutdown_grace() -> u64 {
    30
}

fn default_max_line() -> usize {
    64 * 1024
}
fn default_max_inline_literal() -> usize {
    64 * 1024
}
fn default_max_append() -> u64 {
    // Typical provider message size caps are 25–50 MB; leave room for base64 overhead.
    100 * 1024 * 1024
}
fn default_preauth_timeout() -> u64 {
    60
}
fn default_idle_timeout() -> u64 {
    31 * 60
}
fn default_connect_timeout() -> u64 {
    10
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_bytes: default_max_line(),
            max_inline_literal_bytes: default_max_inline_literal(),
            max_append_bytes: default_max_append(),
            preauth_timeout_secs: default_preauth_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            backend_connect_timeout_secs: default_connect_timeout(),
            shutdown_grace_secs: default_shutdown_grace(),
            backend_command_timeout_secs: default_command_timeout(),
            idle_refresh_secs: default_idle_refresh(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            fleet_max_connections_per_ip: 0,
        }
    }
}

/// Parses and validates a configuration (and reads its users file). Relative
/// paths stay relative; [`load`] anchors them at the file's directory.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let mut config = parse_text(text)?;
    config.read_files()?;
    Ok(config)
}

fn parse_text(text: &str) -> Result<Config, ConfigError> {
    let document =
        toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    let config: Config =
        serde_path_to_error::deserialize(document).map_err(|e| explain::type_error(text, e))?;
    config.validate()?;
    Ok(config)
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read(path)?;
    let mut config = parse_text(&text)?;
    if let Some(dir) = path.parent() {
        config.anchor_paths(dir);
    }
    config.read_files()?;
    config.source = Some(path.to_owned());
    Ok(config)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A users file: `"user" = "phase"` lines.
fn parse_users(text: &str) -> Result<HashMap<String, Phase>, ConfigError> {
    let users: HashMap<String, Phase> =
        toml::from_str(text).map_err(|e| invalid("migration.users_file", e.to_string()))?;
    Ok(users
        .into_iter()
        .map(|(user, phase)| (user.to_lowercase(), phase))
        .collect())
}

impl Config {
    /// Reads the files the configuration names (users, user maps, master
    /// passwords), then checks what needs them.
    fn read_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.migration.users_file {
            let text = read(path).map_err(|e| invalid("migration.users_file", e.to_string()))?;
            self.migration.file_users = parse_users(&text)?;
        }
        self.backends.old.login.read_files("backends.old.login")?;
        self.backends.new.login.read_files("backends.new.login")?;
        if let Some(l) = &mut self.copier.old_login {
            l.read_files("copier.old_login")?;
        }
        if let Some(l) = &mut self.copier.new_login {
            l.read_files("copier.new_login")?;
        }
        self.check_verifier()
    }

    pub fn backend(&self, store: Store) -> &Backend {
        match store {
            Store::Old => &self.backends.old,
            Store::New => &self.backends.new,
        }
    }

    /// The store that checks the password of a client in `phase`.
    pub fn verifier(&self, phase: Phase) -> Store {
        self.auth.verify.unwrap_or(phase.store())
    }

    /// Every phase a user may be in: the default, and those given to a
    /// domain or a user.
    fn phases_in_use(&self) -> impl Iterator<Item = Phase> + '_ {
        let m = &self.migration;
        std::iter::once(m.default_phase)
            .chain(m.domains.values().copied())
            .chain(m.users.values().copied())
            .chain(m.file_users.values().copied())
            .chain(m.api_users.values().copied())
    }

    /// The stores logins need in the phases in use (`[old, new]`): each
    /// phase's own (both in `merged`, whose `Old/` is OLD's), the store
    /// that checks its passwords (`auth.verify`), and the one that checks
    /// tokens (`auth.oauth`).
    pub fn stores_in_use(&self) -> [bool; 2] {
        let mut needed = [false; 2];
        if let Some(store) = self.auth.oauth {
            needed[store.index()] = true;
        }
        for phase in self.phases_in_use() {
            match phase {
                Phase::Merged => needed = [true; 2],
                Phase::Old | Phase::New => needed[phase.store().index()] = true,
            }
            needed[self.verifier(phase).index()] = true;
            if needed == [true; 2] {
                break;
            }
        }
        needed
    }

    /// Something must check every client's password: the verifying store of
    /// each phase in use logs in with the client's credentials.
    fn check_verifier(&self) -> Result<(), ConfigError> {
        for phase in self.phases_in_use() {
            let store = self.verifier(phase);
            if self.backend(store).login.mode != crate::identity::LoginMode::Client {
                let by = match self.auth.verify {
                    Some(_) => String::new(),
                    None => format!(
                        "unset, so phase {} is verified by its own store; ",
                        phase.as_str()
                    ),
                };
                return Err(invalid(
                    "auth.verify",
                    format!(
                        "{by}the {s} store does not log in with the client's credentials \
                         (backends.{s}.login.mode), so nothing would check the client's \
                         password; set auth.verify to a store whose login mode is \"client\"",
                        s = store.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Users with an explicit phase (table and file; the table wins), by phase.
    pub fn configured_users(&self) -> [(Phase, usize); 3] {
        let mut counts = [(Phase::Old, 0), (Phase::Merged, 0), (Phase::New, 0)];
        let m = &self.migration;
        let table = m.users.iter().map(|(u, p)| (u.to_lowercase(), *p));
        let mut all: HashMap<String, Phase> = m.file_users.clone();
        all.extend(table);
        for phase in all.values() {
            if let Some(c) = counts.iter_mut().find(|(p, _)| p == phase) {
                c.1 += 1;
            }
        }
        counts
    }

    fn anchor_paths(&mut self, dir: &Path) {
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if let Some(tls) = &mut self.tls {
            anchor(&mut tls.cert);
            anchor(&mut tls.key);
        }
        for b in [&mut self.backends.old, &mut self.backends.new] {
            if let Some(ca) = &mut b.ca {
                anchor(ca);
            }
            let login = &mut b.login;
            [&mut login.user_map_file, &mut login.master_password_file]
                .into_iter()
                .flatten()
                .for_each(anchor);
        }
        for login in [&mut self.copier.old_login, &mut self.copier.new_login]
            .into_iter()
            .flatten()
        {
            [&mut login.user_map_file, &mut login.master_password_file]
                .into_iter()
                .flatten()
                .for_each(anchor);
        }
        if let Some(dir) = &mut self.namespace.subscriptions_dir {
            anchor(dir);
        }
        if let Some(file) = &mut self.migration.users_file {
            anchor(file);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.imaps.is_none() && self.listen.imap.is_none() {
            return Err(invalid("listen", "set at least one of imaps, imap"));
        }
        if self.listen.imaps.is_some() && self.tls.is_none() {
            return Err(invalid("tls", "listen.imaps needs [tls] cert and key"));
        }
        if self.listen.imap.is_some() && self.tls.is_none() && !self.auth.allow_plaintext {
            return Err(invalid(
                "tls",
                "listen.imap without [tls] offers no STARTTLS; add [tls] or set auth.allow_plaintext = true",
            ));
        }
        match (
            self.listen.proxy_protocol,
            self.listen.trusted_proxies.is_empty(),
        ) {
            (true, true) => {
                return Err(invalid(
                    "listen.trusted_proxies",
                    "is required with listen.proxy_protocol = true: the load balancers' addresses, e.g. [\"10.0.0.0/8\"]",
                ));
            }
            (false, false) => {
                return Err(invalid(
                    "listen.trusted_proxies",
                    "is only used with listen.proxy_protocol = true",
                ));
            }
            _ => {}
        }
        let d = self.namespace.delimiter;
        if !d.is_ascii_graphic() || matches!(d, '%' | '*' | '"' | '\\' | '&' | '(' | ')' | '{') {
            return Err(invalid(
                "namespace.delimiter",
                format!("{d:?} cannot be an IMAP hierarchy delimiter"),
            ));
        }
        let p = &self.namespace.old_prefix;
        if p.len() < 2 || !p.ends_with(d) {
            return Err(invalid(
                "namespace.old_prefix",
                format!("must be a name followed by the delimiter {d:?}, e.g. \"Old{d}\""),
            ));
        }
        if p.starts_with(d) || p.contains(&format!("{d}{d}")) {
            return Err(invalid(
                "namespace.old_prefix",
                "must not start with the delimiter or contain an empty level",
            ));
        }
        if p.chars().any(|c| matches!(c, '%' | '*') || c.is_control()) {
            return Err(invalid(
                "namespace.old_prefix",
                "must not contain wildcards or control characters",
            ));
        }
        if p.trim_end_matches(d).eq_ignore_ascii_case("inbox") {
            return Err(invalid("namespace.old_prefix", "must not be INBOX"));
        }
        for (key, b) in [
            ("backends.old.address", &self.backends.old),
            ("backends.new.address", &self.backends.new),
        ] {
            match b.address.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(invalid(key, format!("{:?} is not host:port", b.address))),
            }
        }
        self.backends.old.login.validate("backends.old.login")?;
        self.backends.new.login.validate("backends.new.login")?;
        for (table, l) in [
            ("copier.old_login", &self.copier.old_login),
            ("copier.new_login", &self.copier.new_login),
        ] {
            if let Some(l) = l {
                l.validate(table)?;
            }
        }
        if let Some(store) = self.auth.oauth {
            let other = match store {
                Store::Old => Store::New,
                Store::New => Store::Old,
            };
            if self.backend(other).login.mode == crate::identity::LoginMode::Client {
                return Err(invalid(
                    "auth.oauth",
                    format!(
                        "a client that signs in with a token has no password for the {o} store: \
                         set backends.{o}.login.mode to \"master\" or \"oauth2\"",
                        o = other.as_str()
                    ),
                ));
            }
        }
        let l = &self.limits;
        if l.max_line_bytes < 1024 {
            return Err(invalid("limits.max_line_bytes", "must be at least 1024"));
        }
        if l.idle_timeout_secs < 30 * 60 {
            return Err(invalid(
                "limits.idle_timeout_secs",
                "must be at least 1800 (RFC 9051 §5.4: 30 minutes)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Also the base of `explain`'s tests.
    pub(super) const SAMPLE: &str = r#"
[listen]
imaps = "0.0.0.0:993"
imap  = "0.0.0.0:143"
[tls]
cert = "/etc/ferry/cert.pem"
key  = "/etc/ferry/key.pem"
[auth]
allow_plaintext = false
[backends.old]
address = "old-mail.example.edu:993"
tls = "implicit"
ca = "/etc/ferry/old-ca.pem"
[backends.new]
address = "imap.example.edu:993"
tls = "implicit"
[namespace]
old_prefix = "Old/"
delimiter  = "/"
[migration]
default_phase = "merged"
[migration.users]
"carol" = "new"
[migration.domains]
"legacy.example.edu" = "old"
"#;

    #[test]
    fn sample_from_the_issue_parses() {
        let c = parse(SAMPLE).unwrap();
        assert_eq!(c.backends.old.tls, BackendTls::Implicit);
        assert_eq!(c.backends.old.host(), "old-mail.example.edu");
        assert_eq!(c.migration.phase_for("carol"), Phase::New);
        assert_eq!(c.migration.phase_for("Carol"), Phase::New);
        assert_eq!(c.migration.phase_for("dave@legacy.example.edu"), Phase::Old);
        assert_eq!(c.migration.phase_for("alice"), Phase::Merged);
        assert_eq!(c.limits.max_line_bytes, 65536);
    }

    /// The shipped example shows every key, so it must stay valid.
    #[test]
    fn the_deploy_example_parses() {
        let text = include_str!("../deploy/ferry.example.toml");
        let c = parse_text(text).unwrap_or_else(|e| panic!("deploy/ferry.example.toml: {e}"));
        assert_eq!(
            c.backends.new.login.mode,
            crate::identity::LoginMode::Client
        );
        assert!(c.backends.old.forward_id);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn unknown_key_is_named() {
        let bad = SAMPLE.replace("allow_plaintext", "allow_plain");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("auth.allow_plain: unknown key"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (from, to, key) in [
            (
                "old_prefix = \"Old/\"",
                "old_prefix = \"Old\"",
                "namespace.old_prefix",
            ),
            (
                "delimiter  = \"/\"",
                "delimiter  = \"*\"",
                "namespace.delimiter",
            ),
            (
                "\"old-mail.example.edu:993\"",
                "\"nohost\"",
                "backends.old.address",
            ),
            (
                "tls = \"implicit\"\nca",
                "tls = \"sometimes\"\nca",
                "backends.old.tls",
            ),
            (
                "default_phase = \"merged\"",
                "default_phase = \"later\"",
                "migration.default_phase",
            ),
        ] {
            let e = parse(&SAMPLE.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(key), "{to}: {e}");
        }
    }

    #[test]
    fn stores_in_use_follow_the_phases() {
        // `users` and `domains` lines go under the sample's tables.
        let with = |phase: &str, users: &str, domains: &str, auth: &str| {
            let text = SAMPLE
                .replace("\"carol\" = \"new\"\n", users)
                .replace("\"legacy.example.edu\" = \"old\"\n", domains)
                .replace(
                    "allow_plaintext = false",
                    &format!("allow_plaintext = false\n{auth}"),
                )
                .replace(
                    "default_phase = \"merged\"",
                    &format!("default_phase = \"{phase}\""),
                );
            parse(&text).unwrap().stores_in_use()
        };
        assert_eq!(with("merged", "", "", ""), [true, true]);
        assert_eq!(with("old", "", "", ""), [true, false]);
        assert_eq!(with("new", "", "", ""), [false, true]);
        // One user or domain elsewhere is enough.
        assert_eq!(with("old", "\"carol\" = \"new\"\n", "", ""), [true, true]);
        assert_eq!(with("new", "", "\"x.edu\" = \"old\"\n", ""), [true, true]);
        // The store that checks passwords is needed in every phase.
        assert_eq!(with("old", "", "", "verify = \"new\""), [true, true]);
        assert_eq!(with("new", "", "", "verify = \"new\""), [false, true]);
    }

    #[test]
    fn garbage_never_panics() {
        for text in ["", "[[", "listen = 5", "\u{0}", "[listen]\nimaps = \"x\""] {
            assert!(parse(text).is_err());
        }
    }
}
