//! The copier inside a running Ferry (`[copier] enabled = true`): every
//! user whose phase is `merged` is copied, `users_at_once` at a time, and
//! passed over again every `pass_interval_secs` (delta passes). A failed
//! pass is retried after an exponential backoff; a store that says it is
//! throttling us holds every user's copying for that long.
//!
//! Users come from the state store's migration records: the configuration's
//! merged users are entered at start and on reload, users the configuration
//! does not list when they first log in, and admins start users (in phase
//! `old` too) through the admin API or `ferry migrate`; every recorded user
//! not yet in phase `new` is kept in step. The configuration is read afresh on every round, so a reload
//! that turns the copier off or moves a user out of `merged` takes effect at
//! the next user.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    Job,
    activity::Activity,
    folder::{Options, Pass},
    pace::{Pace, backoff},
    user::{UserError, migrate_user},
};
use crate::{
    config::{Config, Phase},
    context::Live,
    oauth::Tokens,
    state::{State, UserRecord, UserState, migration::now},
};

/// How often the copier looks for work when nothing finishes.
const TICK: Duration = Duration::from_secs(2);

/// How often the migration gauges are read from the state store.
const PUBLISH_EVERY: Duration = Duration::from_secs(10);

/// Everything the background copier shares with the rest of Ferry.
pub struct Background {
    pub live: watch::Receiver<Arc<Live>>,
    pub state: Arc<State>,
    pub tokens: Arc<Tokens>,
    pub activity: Arc<Activity>,
    /// What the merged view serves from NEW's copies, kept current here.
    pub served: Arc<super::served::Served>,
}

/// A finished pass: the user, and how it went.
type Done = (String, Result<Pass, UserError>);

impl Background {
    /// Runs until `shutdown`; a pass cut short by it resumes at the next
    /// start (the ledger makes that safe).
    pub async fn run(self, shutdown: CancellationToken) {
        let holder: Arc<str> = super::holder("ferry").into();
        let mut running: JoinSet<Done> = JoinSet::new();
        let mut busy: HashSet<String> = HashSet::new();
        // Per user: failures in a row, and when to try again.
        let mut failures: HashMap<String, (u32, Instant)> = HashMap::new();
        let mut hold_until = Instant::now();
        let mut generation = 0;
        let mut pace: Option<(Arc<Pace>, (super::pace::Caps, super::pace::Caps))> = None;
        let mut published = Instant::now() - PUBLISH_EVERY;
        loop {
            let live = self.live.borrow().clone();
            let config = live.config.clone();
            if config.copier.enabled {
                if generation != live.generation {
                    generation = live.generation;
                    self.enter_configured(&config).await;
                }
                for user in self.activity.take_logins() {
                    self.enter(&user).await;
                }
                let caps = (config.copier.pace.old, config.copier.pace.new);
                let pace = match &pace {
                    Some((p, c)) if *c == caps => p.clone(),
                    _ => {
                        let p = Arc::new(Pace::new(caps.0, caps.1));
                        pace = Some((p.clone(), caps));
                        p
                    }
                };
                let free = config.copier.users_at_once.saturating_sub(running.len());
                if free > 0 && Instant::now() >= hold_until {
                    for user in self.due(&config, &busy, &failures, &holder, free).await {
                        busy.insert(user.clone());
                        running.spawn(self.pass(
                            config.clone(),
                            pace.clone(),
                            holder.clone(),
                            user,
                        ));
                    }
                }
            }
            if published.elapsed() >= PUBLISH_EVERY {
                published = Instant::now();
                if config.copier.enabled {
                    self.publish().await;
                }
                self.refresh_served().await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = running.join_next() => {
                    let Ok((user, result)) = done else { continue };
                    busy.remove(&user);
                    let (base, max) = {
                        let copier = &self.live.borrow().config.copier;
                        (
                            Duration::from_secs(copier.retry_base_secs),
                            Duration::from_secs(copier.retry_max_secs),
                        )
                    };
                    match result {
                        Ok(p) => {
                            self.refresh_served().await;
                            failures.remove(&user);
                            crate::metrics::migration_pass("ok");
                            info!(user, messages = p.messages, copied = p.appended,
                                  differences = p.differences.len(), "migration pass done");
                        }
                        // Another instance copies the user: not a failure.
                        Err(e @ (UserError::Leased(_) | UserError::LeaseLost(_))) => {
                            info!(user, reason = %e, "left to another instance");
                        }
                        Err(e) => {
                            let n = failures.get(&user).map_or(0, |f| f.0);
                            let wait = backoff(base, max, n);
                            failures.insert(user.clone(), (n + 1, Instant::now() + wait));
                            crate::metrics::migration_pass("failed");
                            crate::metrics::migration_error(e.kind());
                            if e.kind() == "throttled" {
                                hold_until = Instant::now() + wait;
                            }
                            warn!(user, error = %e, retry_in_secs = wait.as_secs(),
                                  "migration pass failed");
                        }
                    }
                }
                _ = tokio::time::sleep(TICK) => {}
            }
        }
        running.shutdown().await;
    }

    /// One pass over `user`, as its own task.
    fn pass(
        &self,
        config: Arc<Config>,
        pace: Arc<Pace>,
        holder: Arc<str>,
        user: String,
    ) -> impl Future<Output = Done> + Send + 'static {
        let state = self.state.clone();
        let tokens = self.tokens.clone();
        let activity = self.activity.clone();
        async move {
            let options = Options {
                verify: config.copier.verify,
                remove_expunged: config.copier.remove_expunged,
            };
            let job = Job {
                config: &config,
                state: &state,
                tokens: &tokens,
                pace: &pace,
                activity: Some(&activity),
                options,
                holder: &holder,
            };
            let result = migrate_user(&job, &user, &mut |_| {}).await;
            (user, result)
        }
    }

    /// Enters the configuration's merged users (the users file included).
    async fn enter_configured(&self, config: &Config) {
        let m = &config.migration;
        for (user, phase) in m.users.iter().chain(&m.file_users) {
            if *phase == Phase::Merged {
                self.enter(user).await;
            }
        }
    }

    async fn enter(&self, user: &str) {
        if let Err(e) = self.state.enqueue(user).await {
            warn!(user, error = %e, "cannot record a user to copy");
        }
    }

    /// Up to `free` users to pass over now, longest waiting first.
    async fn due(
        &self,
        config: &Config,
        busy: &HashSet<String>,
        failures: &HashMap<String, (u32, Instant)>,
        holder: &str,
        free: usize,
    ) -> Vec<String> {
        let (records, leases) = match (self.state.migrations().await, self.state.leases().await) {
            (Ok(r), Ok(l)) => (r, l),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot read migration records");
                return Vec::new();
            }
        };
        // Users another instance copies now.
        let elsewhere: HashSet<&str> = leases
            .iter()
            .filter(|l| l.holder != holder)
            .map(|l| l.user.as_str())
            .collect();
        let interval = config.copier.pass_interval_secs as i64;
        let now_unix = now();
        let mut due: Vec<&UserRecord> = records
            .iter()
            .filter(|r| {
                !r.paused && !busy.contains(&r.user) && !elsewhere.contains(r.user.as_str())
            })
            .filter(|r| {
                // Merged users enter by themselves; users in phase `old`
                // only when an admin started them, and are then kept in
                // step. At `new` OLD may be gone: only on request.
                self.activity.is_wanted(&r.user)
                    || config.migration.phase_for(&r.user) != Phase::New
            })
            .filter(|r| {
                self.activity.is_wanted(&r.user)
                    || match failures.get(&r.user) {
                        Some((_, at)) => Instant::now() >= *at,
                        None => match r.state {
                            // `copying` with nothing running: a pass cut short.
                            UserState::Pending | UserState::Copying | UserState::Failed => true,
                            UserState::Synced | UserState::Verified => {
                                r.last_pass.is_none_or(|t| now_unix - t >= interval)
                            }
                        },
                    }
            })
            .collect();
        due.sort_by_key(|r| r.last_pass.unwrap_or(i64::MIN));
        due.sort_by_key(|r| !self.activity.is_wanted(&r.user));
        due.into_iter()
            .take(free)
            .map(|r| {
                self.activity.take_wanted(&r.user);
                r.user.clone()
            })
            .collect()
    }

    async fn refresh_served(&self) {
        if let Err(e) = self.served.refresh(&self.state).await {
            warn!(error = %e, "cannot read which folders are served from NEW");
        }
    }

    /// Users by state, what is left to copy and when a pass last finished.
    async fn publish(&self) {
        if let Ok(records) = self.state.migrations().await {
            crate::metrics::migration_users(&records);
        }
    }
}
