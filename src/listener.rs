//! Accept loops for the imaps (implicit TLS) and imap (STARTTLS) listeners:
//! a connection is admitted (connection limits), gets its own task on a
//! worker and its tracing span, and is handed to the driver. An error in one
//! session never reaches the accept loop.

use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, info_span, warn};

use crate::{
    context::{ConnSlot, Ctx},
    driver,
    tls::MaybeTls,
};

#[derive(Clone, Copy)]
pub enum Kind {
    Imaps,
    Imap,
}

impl Kind {
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
        let Some(slot) = ctx
            .connections
            .admit(peer.ip(), &ctx.live.borrow().config.limits)
        else {
            tracker.spawn(refuse(tcp, kind));
            continue;
        };
        // The socket moves to the worker's own I/O driver.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                warn!(error = %e, "cannot hand the connection to a worker");
                continue;
            }
        };
        let span = info_span!("session", id, listener = kind.name(), client.addr = %peer, user = tracing::field::Empty);
        ctx.workers.spawn(tracker.track_future(
            handle(tcp, peer, kind, id, ctx.clone(), shutdown.clone(), slot).instrument(span),
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
    _slot: ConnSlot,
) {
    let Ok(tcp) = TcpStream::from_std(tcp) else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    crate::metrics::session_started(kind.name());
    let handshake =
        Duration::from_secs(ctx.live.borrow().config.limits.preauth_timeout_secs.min(30));
    let stream = match (kind, &ctx.acceptor) {
        (Kind::Imaps, Some(acceptor)) => match crate::tls::accept(acceptor, tcp, handshake).await {
            Some(tls) => tls,
            None => {
                crate::metrics::tls_handshake_failed(kind.name());
                return;
            }
        },
        _ => MaybeTls::Plain(tcp),
    };
    driver::serve(stream, peer.ip(), kind.name(), id, ctx, shutdown).await;
}
