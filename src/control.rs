//! Changing the running configuration, from wherever the change comes: a
//! reload (SIGHUP, `ferry reload` through the admin API, or the file
//! watcher seeing the configuration or users file change) or a phase set
//! through the admin API (here or, by a note, on another instance). Every
//! change builds the next [`Live`] completely, then publishes it; sessions
//! whose user's phase changed end at a safe point.
//!
//! Precedence of phases: the admin API's (kept in the state store), then
//! `[migration.users]`, the users file, `[migration.domains]`, the default
//! (`config::Migration::phase_and_source`). A reload keeps the admin API's.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::{Config, Phase},
    context::Live,
    server::ReloadError,
    tls::CertResolver,
};

/// How often the files are compared even without a change event (file
/// systems that do not report changes, e.g. some network mounts).
const POLL: Duration = Duration::from_secs(5);

/// Change events arriving within this are one change (an editor's
/// write-then-rename, a ConfigMap's symlink swap).
const SETTLE: Duration = Duration::from_millis(300);

pub struct Control {
    live: watch::Sender<Arc<Live>>,
    resolver: Option<Arc<CertResolver>>,
    /// The admin API's phases (lower-case names); the lock also makes one
    /// change at a time.
    api_phases: Mutex<HashMap<String, Phase>>,
}

impl Control {
    pub fn new(
        live: watch::Sender<Arc<Live>>,
        resolver: Option<Arc<CertResolver>>,
        api_phases: HashMap<String, Phase>,
    ) -> Control {
        Control {
            live,
            resolver,
            api_phases: Mutex::new(api_phases),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Phase>> {
        self.api_phases.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.live.borrow().generation
    }

    pub fn config(&self) -> Arc<Config> {
        self.live.borrow().config.clone()
    }

    /// Re-reads the file the running configuration came from.
    pub fn reload_source(&self) -> Result<u64, ReloadError> {
        match self.config().source.clone() {
            Some(path) => self.reload_file(&path),
            None => Err(ReloadError::NoFile),
        }
    }

    /// Re-reads `path` and applies it (see [`Control::reload`]).
    pub fn reload_file(&self, path: &Path) -> Result<u64, ReloadError> {
        let result = crate::config::load(path)
            .map_err(ReloadError::from)
            .and_then(|config| self.apply(config));
        count(path, result)
    }

    /// Replaces the running configuration with `config` once all of it has
    /// been checked and built: the TLS certificate and key are re-read, new
    /// logins get the new phases at once, and sessions whose user's phase
    /// changed are ended at a safe point. On any error nothing changes.
    /// Returns the new generation.
    pub fn reload(&self, config: Config) -> Result<u64, ReloadError> {
        let path = config.source.clone().unwrap_or_default();
        count(&path, self.apply(config))
    }

    fn apply(&self, mut config: Config) -> Result<u64, ReloadError> {
        let api = self.lock();
        let current = self.config();
        let unchanged = |a: bool, key| {
            if a {
                Ok(())
            } else {
                Err(ReloadError::NeedsRestart(key))
            }
        };
        unchanged(
            config.listen.imaps == current.listen.imaps
                && config.listen.imap == current.listen.imap,
            "listen",
        )?;
        unchanged(
            config.metrics.listen == current.metrics.listen,
            "metrics.listen",
        )?;
        unchanged(config.tls.is_some() == current.tls.is_some(), "tls")?;
        unchanged(
            config.admin.as_ref().map(|a| a.listen) == current.admin.as_ref().map(|a| a.listen),
            "admin.listen",
        )?;
        unchanged(config.state.url == current.state.url, "state.url")?;
        unchanged(
            config.namespace.subscriptions_dir == current.namespace.subscriptions_dir,
            "namespace.subscriptions_dir",
        )?;
        config.migration.api_users = api.clone();
        let next = crate::server::live(config, self.generation() + 1)?;
        // The certificate last: everything before it can still fail without effect.
        if let (Some(t), Some(resolver)) = (&next.config.tls, &self.resolver) {
            resolver.reload(&t.cert, &t.key)?;
        }
        Ok(self.publish(next))
    }

    fn publish(&self, next: Live) -> u64 {
        let generation = next.generation;
        crate::server::publish(&next);
        self.live.send_replace(Arc::new(next));
        generation
    }

    /// The admin API set (`Some`) or cleared (`None`) `user`'s phase, here
    /// or on another instance. Returns the new generation.
    pub fn set_api_phase(&self, user: &str, phase: Option<Phase>) -> u64 {
        let mut api = self.lock();
        let user = user.to_lowercase();
        if api.get(&user).copied() == phase {
            return self.generation();
        }
        match phase {
            Some(p) => api.insert(user.clone(), p),
            None => api.remove(&user),
        };
        info!(
            user,
            phase = phase.map_or("(the files')", Phase::as_str),
            "phase set by the admin API"
        );
        self.republish(api.clone())
    }

    /// Every phase the admin API set, as the state store has them (after
    /// notes may have been missed).
    pub fn replace_api_phases(&self, phases: HashMap<String, Phase>) {
        let mut api = self.lock();
        if *api != phases {
            *api = phases.clone();
            self.republish(phases);
        }
    }

    /// The running configuration with other admin API phases.
    fn republish(&self, phases: HashMap<String, Phase>) -> u64 {
        let live = self.live.borrow().clone();
        let mut config = (*live.config).clone();
        config.migration.api_users = phases;
        self.publish(Live {
            config: Arc::new(config),
            generation: live.generation + 1,
            old: live.old.clone(),
            new: live.new.clone(),
        })
    }

    /// Reloads whenever the configuration file or the users file changes,
    /// until `shutdown`: on a change event in their directories (a
    /// Kubernetes ConfigMap update swaps a symlink there) and, as a
    /// fallback, when a look every few seconds finds another size, time or file.
    /// A refused file is logged once, not again until it changes.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(path) = self.config().source.clone() else {
            return;
        };
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut watcher = match notify::recommended_watcher(
            move |_: notify::Result<notify::Event>| {
                let _ = tx.send(());
            },
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch the configuration for changes; looking at it every {} s", POLL.as_secs());
                None
            }
        };
        let mut watched: Vec<PathBuf> = Vec::new();
        let mut seen = fingerprint(&path, &self.config());
        loop {
            // Watch the directories of the files in force now (the users
            // file may have moved with a reload).
            let dirs = directories(&path, &self.config());
            if let Some(w) = &mut watcher
                && dirs != watched
            {
                use notify::Watcher;
                for d in &watched {
                    let _ = w.unwatch(d);
                }
                for d in &dirs {
                    if let Err(e) = w.watch(d, notify::RecursiveMode::NonRecursive) {
                        warn!(dir = %d.display(), error = %e, "cannot watch for configuration changes");
                    }
                }
                watched = dirs;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(()) = events.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while events.try_recv().is_ok() {}
                }
                () = tokio::time::sleep(POLL) => {}
            }
            if fingerprint(&path, &self.config()) != seen {
                let control = self.clone();
                let file = path.clone();
                // Reading a large users file takes a moment.
                let _ = tokio::task::spawn_blocking(move || control.reload_file(&file)).await;
                // As read now: with the users file the reload names.
                seen = fingerprint(&path, &self.config());
            }
        }
    }
}

/// Logs and counts how a reload went: one line, naming the file.
fn count(path: &Path, result: Result<u64, ReloadError>) -> Result<u64, ReloadError> {
    match &result {
        Ok(generation) => {
            crate::metrics::config_reload("ok");
            info!(generation, file = %path.display(), "configuration reloaded");
        }
        Err(e) => {
            crate::metrics::config_reload("error");
            warn!(file = %path.display(), error = %e, "configuration reload refused; the running configuration stays");
        }
    }
    result
}

/// The configuration file's and the users file's directories.
fn directories(path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [Some(path), config.migration.users_file.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|p| p.parent().map(|d| d.to_path_buf()))
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            }
        })
        .collect();
    dirs.dedup();
    dirs
}

/// Which version of the configuration and users files is there now: each
/// file's identity, size and modification time (following symlinks, so a
/// ConfigMap's swap shows as another inode). Read every few seconds, so only
/// metadata: a 100,000-user file is not read until it changed.
fn fingerprint(path: &Path, config: &Config) -> Vec<Option<(u64, u64, u64, SystemTime)>> {
    use std::os::unix::fs::MetadataExt;
    [Some(path), config.migration.users_file.as_deref()]
        .into_iter()
        .flatten()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))
        })
        .collect()
}
