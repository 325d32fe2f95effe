//! One running Ferry instance: built from a configuration, it binds the
//! listeners, starts the session workers and the metrics listener, applies
//! reloads (all or nothing) and shuts down within a grace period.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use thiserror::Error;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::info;

use crate::{
    backend,
    config::{BackendTls, Config},
    context::{Ctx, Live},
    listener::{Kind, accept_loop},
    namespace::Store,
    tls::{self, CertResolver},
};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
    #[error("{0}")]
    Admin(#[from] crate::admin::AdminError),
    #[error("state.url: {0}")]
    State(#[from] crate::state::StateError),
    #[error("subscriptions: {0}")]
    Subscriptions(#[from] crate::subscriptions::OpenError),
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(
        "{0} changed: listeners are bound at start, restart Ferry to apply it (nothing was reloaded)"
    )]
    NeedsRestart(&'static str),
    #[error("Ferry was not started from a file: nothing to read again")]
    NoFile,
}

/// A running Ferry instance.
pub struct Ferry {
    imaps: Option<SocketAddr>,
    imap: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    resolver: Option<Arc<CertResolver>>,
    control: Arc<crate::control::Control>,
    /// Logged-in sessions by user.
    sessions: Arc<crate::sessions::Sessions>,
    /// Flushed last at shutdown: its writer may still hold sessions' changes.
    subscriptions: Arc<crate::subscriptions::Subscriptions>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

pub fn backend_target(b: &crate::config::Backend) -> Result<backend::Target, tls::TlsError> {
    let tls = match b.tls {
        BackendTls::None => None,
        BackendTls::Implicit | BackendTls::Starttls => Some(tls::client_config(b.ca.as_deref())?),
    };
    Ok(backend::Target {
        backend: b.clone(),
        tls,
    })
}

/// Everything derived from one configuration, built completely before it is used.
pub(crate) fn live(config: Config, generation: u64) -> Result<Live, tls::TlsError> {
    Ok(Live {
        old: backend_target(&config.backends.old)?,
        new: backend_target(&config.backends.new)?,
        config: Arc::new(config),
        generation,
    })
}

pub(crate) fn publish(live: &Live) {
    crate::metrics::config_generation(live.generation);
    crate::metrics::configured_users(live.config.configured_users());
}

/// `/readyz`: listeners are bound once Ferry runs; each store that logins
/// need in the configured phases must accept a connection (NEW down leaves
/// a Ferry whose users are all in phase `old` ready).
struct Ready {
    live: watch::Receiver<Arc<Live>>,
}

impl crate::metrics::Readiness for Ready {
    async fn ready(&self) -> Result<(), String> {
        let config = self.live.borrow().config.clone();
        let needed = config.stores_in_use();
        let reach = |store: Store| {
            let address = config.backend(store).address.clone();
            let needed = needed[store.index()];
            async move {
                if !needed {
                    return Ok(());
                }
                let name = store.as_str().to_uppercase();
                match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&address))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("{name} store {address}: {e}")),
                    Err(_) => Err(format!("{name} store {address}: connect timed out")),
                }
            }
        };
        match tokio::join!(reach(Store::Old), reach(Store::New)) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Err(old), Err(new)) => Err(format!("{old}; {new}")),
        }
    }
}

impl Ferry {
    /// Binds the configured listeners (port 0 picks a free port) and serves in
    /// the background, with one session worker per CPU.
    pub async fn start(config: Config) -> Result<Ferry, StartError> {
        Ferry::start_with_workers(config, crate::workers::default_count()).await
    }

    /// [`Ferry::start`] with `workers` session threads.
    pub async fn start_with_workers(config: Config, workers: usize) -> Result<Ferry, StartError> {
        let workers = crate::workers::Workers::new(workers).map_err(StartError::Workers)?;
        tls::install_provider();
        crate::metrics::install();
        let (acceptor, resolver) = match &config.tls {
            Some(t) => {
                let (server, resolver) = tls::server_config(&t.cert, &t.key)?;
                (Some(TlsAcceptor::from(server)), Some(resolver))
            }
            None => (None, None),
        };
        let state = Arc::new(crate::state::State::open(&config.state.url).await?);
        let fleet = crate::fleet::Fleet::join(state.clone());
        let activity = Arc::new(crate::copier::activity::Activity::default());
        let subscriptions = Arc::new(
            crate::subscriptions::Subscriptions::open(
                state.clone(),
                config.namespace.subscriptions_dir.as_deref(),
                fleet.clone(),
            )
            .await?,
        );
        let mut config = config;
        config.migration.api_users = state.phases().await?.into_iter().collect();
        let api_phases = config.migration.api_users.clone();
        let first = live(config, 1)?;
        publish(&first);
        let (live_tx, live_rx) = watch::channel(Arc::new(first));
        let throttle = Arc::new(crate::throttle::Throttle::shared(
            &live_rx.borrow().config.auth,
            state.secret("throttle").await?,
            fleet.clone(),
        ));
        let tokens = Arc::new(crate::oauth::Tokens::default());
        let ctx = Arc::new(Ctx {
            live: live_rx.clone(),
            acceptor,
            subscriptions: subscriptions.clone(),
            state: state.clone(),
            activity: activity.clone(),
            sessions: Arc::default(),
            served: Arc::default(),
            throttle,
            tokens: tokens.clone(),
            connections: Arc::default(),
            next_id: Default::default(),
            workers,
        });
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let config = live_rx.borrow().config.clone();
        let control = Arc::new(crate::control::Control::new(
            live_tx,
            resolver.clone(),
            api_phases,
        ));
        tracker.spawn(control.clone().watch(shutdown.clone()));
        tracker.spawn(crate::fleet::listen(
            state.clone(),
            fleet.clone(),
            crate::fleet::Recipients {
                subscriptions: subscriptions.clone(),
                throttle: ctx.throttle.clone(),
                sessions: ctx.sessions.clone(),
                control: control.clone(),
                state: state.clone(),
                connections: ctx.connections.clone(),
            },
            shutdown.clone(),
        ));
        tracker.spawn(crate::fleet::tell_connections(
            fleet.clone(),
            ctx.connections.clone(),
            live_rx.clone(),
            shutdown.clone(),
        ));
        let mut ferry = Ferry {
            imaps: None,
            imap: None,
            metrics: None,
            admin: None,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            resolver: resolver.clone(),
            control: control.clone(),
            sessions: ctx.sessions.clone(),
            subscriptions,
        };
        for (kind, addr) in [
            (Kind::Imaps, config.listen.imaps),
            (Kind::Imap, config.listen.imap),
        ] {
            let Some(addr) = addr else { continue };
            let listener = bind(addr).await?;
            let local = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            info!(listener = kind.name(), addr = %local, "listening");
            match kind {
                Kind::Imaps => ferry.imaps = Some(local),
                Kind::Imap => ferry.imap = Some(local),
            }
            tracker.spawn(accept_loop(
                listener,
                kind,
                ctx.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        if let Some(admin) = &config.admin {
            let api = crate::admin::Admin {
                live: ctx.live.clone(),
                state: state.clone(),
                sessions: ctx.sessions.clone(),
                activity: activity.clone(),
                fleet,
                control: control.clone(),
            };
            let local = crate::admin::serve(admin.listen, api, shutdown.clone()).await?;
            info!(addr = %local, "admin API on http://{local}/");
            ferry.admin = Some(local);
        }
        // The copier idles while `[copier] enabled` is off (a reload turns it on).
        tracker.spawn(
            crate::copier::background::Background {
                live: ctx.live.clone(),
                state,
                tokens,
                activity,
                served: ctx.served.clone(),
            }
            .run(shutdown.clone()),
        );
        if let Some(addr) = config.metrics.listen {
            let ready = Arc::new(Ready { live: live_rx });
            let local = crate::metrics::serve(addr, ready, shutdown.clone()).await?;
            info!(addr = %local, "metrics on http://{local}/metrics");
            ferry.metrics = Some(local);
        }
        Ok(ferry)
    }

    /// Where the implicit-TLS listener is bound.
    pub fn imaps_addr(&self) -> Option<SocketAddr> {
        self.imaps
    }

    /// Where the plaintext/STARTTLS listener is bound.
    pub fn imap_addr(&self) -> Option<SocketAddr> {
        self.imap
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Where the admin API is served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The server certificate, swappable for new handshakes.
    pub fn cert_resolver(&self) -> Option<&Arc<CertResolver>> {
        self.resolver.as_ref()
    }

    /// How many sessions `user` has logged in on this instance.
    pub fn sessions_of(&self, user: &str) -> usize {
        self.sessions.count(user)
    }

    /// The configuration generation in force (1 at start).
    pub fn generation(&self) -> u64 {
        self.control.generation()
    }

    /// Re-reads `path` and applies it (see [`Ferry::reload`]).
    pub fn reload_file(&self, path: &std::path::Path) -> Result<u64, ReloadError> {
        self.control.reload_file(path)
    }

    /// Replaces the running configuration (see [`crate::control::Control::reload`]).
    pub fn reload(&self, config: Config) -> Result<u64, ReloadError> {
        self.control.reload(config)
    }

    /// Stops accepting, ends idle sessions with `* BYE`, waits up to `grace`
    /// for the others (a copy in flight included), then until every
    /// subscription change is in the state store.
    pub async fn shutdown_within(self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
        self.subscriptions.flush().await;
    }

    /// [`Ferry::shutdown_within`] with the configured grace period.
    pub async fn shutdown(self) {
        let grace = self.control.config().limits.shutdown_grace_secs;
        self.shutdown_within(Duration::from_secs(grace)).await;
    }

    /// Resolves when shutdown has been requested.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }
}

/// Every session needs up to three sockets: lifts the soft open-files limit to
/// the hard one (as nginx's `worker_rlimit_nofile` does), so 1024 is not the
/// cap. Returns the soft limit now in force.
pub fn raise_open_files_limit() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0
            && lim.rlim_cur < lim.rlim_max
            && libc::setrlimit(
                libc::RLIMIT_NOFILE,
                &libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                },
            ) == 0
        {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}
