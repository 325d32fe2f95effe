//! Accept loops for the imaps (implicit TLS) and imap (STARTTLS) listeners.
//! Each connection gets its own task and tracing span; an error in one session
//! never reaches the accept loop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, info, info_span, warn};

use crate::{
    backend,
    config::{BackendTls, Config},
    driver::{self, Ctx},
    tls::{self, CertResolver, MaybeTls},
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
}

/// A running Ferry instance.
pub struct Ferry {
    imaps: Option<SocketAddr>,
    imap: Option<SocketAddr>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    resolver: Option<Arc<CertResolver>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Imaps,
    Imap,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Imaps => "imaps",
            Kind::Imap => "imap",
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn backend_target(b: &crate::config::Backend) -> Result<backend::Target, StartError> {
    let tls = match b.tls {
        BackendTls::None => None,
        BackendTls::Implicit | BackendTls::Starttls => Some(tls::client_config(b.ca.as_deref())?),
    };
    Ok(backend::Target {
        backend: b.clone(),
        tls,
    })
}

impl Ferry {
    /// Binds the configured listeners (port 0 picks a free port) and serves in the background.
    pub async fn start(config: Config) -> Result<Ferry, StartError> {
        tls::install_provider();
        let (acceptor, resolver) = match &config.tls {
            Some(t) => {
                let (server, resolver) = tls::server_config(&t.cert, &t.key)?;
                (Some(TlsAcceptor::from(server)), Some(resolver))
            }
            None => (None, None),
        };
        let ctx = Arc::new(Ctx {
            old: backend_target(&config.backends.old)?,
            new: backend_target(&config.backends.new)?,
            subscriptions: Arc::new(crate::subscriptions::Subscriptions::new(
                config.namespace.subscriptions_dir.clone(),
            )),
            config: Arc::new(config),
            acceptor,
        });
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut ferry = Ferry {
            imaps: None,
            imap: None,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            resolver,
        };
        for (kind, addr) in [
            (Kind::Imaps, ctx.config.listen.imaps),
            (Kind::Imap, ctx.config.listen.imap),
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

    /// The server certificate, swappable for new handshakes.
    pub fn cert_resolver(&self) -> Option<&Arc<CertResolver>> {
        self.resolver.as_ref()
    }

    /// Stops accepting, ends idle sessions with `* BYE`, and waits up to
    /// `grace` for the others.
    pub async fn shutdown_within(self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
    }

    /// [`Ferry::shutdown_within`] with a 10 s grace period.
    pub async fn shutdown(self) {
        self.shutdown_within(Duration::from_secs(10)).await;
    }

    /// Resolves when shutdown has been requested.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }
}

async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut next_id: u64 = 0;
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        next_id += 1;
        let span = info_span!("session", id = next_id, listener = kind.name(), client.addr = %peer, user = tracing::field::Empty);
        tracker.spawn(handle(tcp, kind, ctx.clone(), shutdown.clone()).instrument(span));
    }
}

async fn handle(tcp: TcpStream, kind: Kind, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let _ = tcp.set_nodelay(true);
    crate::metrics::session_started(kind.name());
    let stream = match (kind, &ctx.acceptor) {
        (Kind::Imaps, Some(acceptor)) => {
            match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => MaybeTls::Tls(Box::new(tls.into())),
                _ => {
                    crate::metrics::tls_handshake_failed(kind.name());
                    crate::metrics::session_ended();
                    return;
                }
            }
        }
        _ => MaybeTls::Plain(tcp),
    };
    let tls = matches!(stream, MaybeTls::Tls(_));
    driver::serve(stream, tls, ctx, shutdown).await;
    crate::metrics::session_ended();
}
