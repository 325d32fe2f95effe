//! Accept loops for the imaps (implicit TLS) and imap (STARTTLS) listeners:
//! a connection gets its own task on a worker and its tracing span, its
//! PROXY header is read (behind a load balancer), it is admitted by the
//! client's address (connection limits), and handed to the driver. An error
//! in one session never reaches the accept loop.

use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info_span, warn};

use crate::{
    config::Config,
    context::Ctx,
    driver,
    proxy::{self, Addresses},
    tls::{HandshakeError, MaybeTls},
};

#[derive(Clone, Copy)]
pub enum Kind {
    Imaps,
    Imap,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Imaps, Kind::Imap];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Imaps => "imaps",
            Kind::Imap => "imap",
        }
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
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
        let id = ctx.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        // The socket moves to the worker's own I/O driver.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                warn!(error = %e, "cannot hand the connection to a worker");
                continue;
            }
        };
        // Behind a load balancer the client's address is known only once the
        // PROXY header is read (`client.addr`); `peer.addr` is who connected.
        let span = info_span!(
            "session",
            id,
            listener = kind.name(),
            client.addr = tracing::field::Empty,
            peer.addr = %peer,
            user = tracing::field::Empty
        );
        ctx.workers.spawn(tracker.track_future(
            handle(tcp, peer, kind, id, ctx.clone(), shutdown.clone()).instrument(span),
        ));
    }
}

/// Over a connection limit: a plaintext client is told why, then closed.
async fn refuse(mut tcp: TcpStream, kind: Kind) {
    if let Kind::Imap = kind {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            tcp.write_all(b"* BYE Too many connections, try again later\r\n"),
        )
        .await;
    }
}

async fn handle(
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    kind: Kind,
    id: u64,
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
) {
    let Ok(mut tcp) = TcpStream::from_std(tcp) else {
        return;
    };
    let config = ctx.live.borrow().config.clone();
    let Some(addrs) = addresses(&mut tcp, peer, &config).await else {
        return;
    };
    tracing::Span::current().record("client.addr", tracing::field::display(addrs.client));
    let Some(_slot) = ctx.connections.admit(addrs.client.ip(), &config.limits) else {
        return refuse(tcp, kind).await;
    };
    let _ = tcp.set_nodelay(true);
    crate::metrics::session_started(kind.name());
    let handshake = Duration::from_secs(config.limits.preauth_timeout_secs.min(30));
    let stream = match (kind, &ctx.acceptor) {
        (Kind::Imaps, Some(acceptor)) => match crate::tls::accept(acceptor, tcp, handshake).await {
            Ok(tls) => tls,
            // HAProxy's check (after its PROXY LOCAL header, if any) or a
            // monitor's connect: not a client's failure.
            Err(e @ HandshakeError::Closed) => return debug!(error = %e, "TLS connection closed"),
            Err(e) => {
                debug!(error = %e, "TLS handshake failed");
                crate::metrics::tls_handshake_failed(kind.name());
                return;
            }
        },
        _ => MaybeTls::Plain(tcp),
    };
    driver::serve(stream, addrs, kind.name(), id, ctx, shutdown).await;
}

/// Who the client is: the peer itself, or (`listen.proxy_protocol`) what
/// the PROXY header says. `None`: the connection is to be closed.
async fn addresses(tcp: &mut TcpStream, peer: SocketAddr, config: &Config) -> Option<Addresses> {
    let local = tcp.local_addr().ok()?;
    if !config.listen.proxy_protocol {
        return Some(Addresses {
            client: peer,
            local,
        });
    }
    let timeout = Duration::from_secs(config.limits.preauth_timeout_secs.min(10));
    match proxy::read_header(tcp, peer, &config.listen.trusted_proxies, timeout).await {
        Ok(Some(addrs)) => {
            crate::metrics::proxy_header("ok");
            Some(addrs)
        }
        Ok(None) => {
            // The load balancer's own check: served as itself.
            crate::metrics::proxy_header("local");
            Some(Addresses {
                client: peer,
                local,
            })
        }
        Err(e) => {
            crate::metrics::proxy_header(e.kind());
            match e {
                // A health check that connects and goes (or resets) is not news.
                proxy::ProxyError::Closed | proxy::ProxyError::Io(_) => {
                    debug!(error = %e, "connection refused")
                }
                _ => warn!(error = %e, "connection refused"),
            }
            None
        }
    }
}
