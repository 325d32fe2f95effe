//! The only async glue: moves bytes between the client, the stores and the
//! sans-IO [`Session`], and performs its actions.

use std::{future::Future, io, pin::Pin, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    backend::{self, BackendError, Connected},
    config::Config,
    session::{Action, Session, SessionConfig, Store},
    tls::MaybeTls,
};

/// What every session of one Ferry instance shares.
pub struct Ctx {
    pub config: Arc<Config>,
    pub acceptor: Option<TlsAcceptor>,
    pub old: backend::Target,
    pub new: backend::Target,
    pub subscriptions: Arc<crate::subscriptions::Subscriptions>,
}

type Login = Pin<Box<dyn Future<Output = Result<Connected, BackendError>> + Send>>;

/// Reads from an optional stream; pends forever when there is none.
async fn read_opt(stream: &mut Option<MaybeTls>, buf: &mut [u8]) -> io::Result<usize> {
    match stream {
        Some(s) => s.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn login_opt(login: &mut Option<Login>) -> Result<Connected, BackendError> {
    match login {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// 16 KiB: one TLS record, so a read never splits less than a record.
const READ_BUF: usize = 16 * 1024;

/// Runs one client session to its end.
pub async fn serve(client: MaybeTls, tls: bool, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let cfg = SessionConfig {
        config: ctx.config.clone(),
        tls,
        starttls: !tls && ctx.acceptor.is_some(),
        subscriptions: ctx.subscriptions.clone(),
    };
    let mut session = Session::new(cfg);
    let mut client = Some(client);
    let mut stores: [Option<MaybeTls>; 2] = [None, None];
    let mut logins: [Option<Login>; 2] = [None, None];
    let mut cbuf = vec![0u8; READ_BUF];
    let mut obuf = vec![0u8; READ_BUF];
    let mut nbuf = vec![0u8; READ_BUF];
    let limits = ctx.config.limits.clone();
    let mut deadline = Instant::now() + Duration::from_secs(limits.preauth_timeout_secs);
    let mut shutting_down = false;

    loop {
        // Perform everything the session asked for.
        while let Some(action) = session.poll_action() {
            let result = perform(
                action,
                &mut session,
                &mut client,
                &mut stores,
                &mut logins,
                &ctx,
            )
            .await;
            match result {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    debug!(error = %e, "client connection failed");
                    client = None;
                    session.client_closed();
                }
            }
        }
        if shutting_down && session.is_idle() {
            session.end("Server shutting down, please reconnect.");
            continue;
        }
        let waiting_for_client = client.is_some() && session.wants_client_input();
        // While a command runs, keep reading a little: a client that hangs up
        // must be noticed (a copy in flight is then undone), and pipelined
        // commands wait in the session's buffer, which this bounds.
        let read_client =
            client.is_some() && (waiting_for_client || session.client_buffered() < READ_BUF);
        let timeout = if session.is_authenticated() {
            limits.idle_timeout_secs
        } else {
            limits.preauth_timeout_secs
        };
        let [old, new] = &mut stores;
        let [old_login, new_login] = &mut logins;
        tokio::select! {
            r = read_opt(&mut client, &mut cbuf), if read_client => match r {
                Ok(0) | Err(_) => {
                    client = None;
                    session.client_closed();
                }
                Ok(n) => {
                    deadline = Instant::now() + Duration::from_secs(timeout);
                    session.client_input(&cbuf[..n]);
                }
            },
            r = read_opt(old, &mut obuf) => {
                // A store at work is not an idle client.
                deadline = Instant::now() + Duration::from_secs(timeout);
                match r {
                    Ok(0) | Err(_) => { stores[0] = None; session.backend_closed(Store::Old); }
                    Ok(n) => session.backend_input(Store::Old, &obuf[..n]),
                }
            },
            r = read_opt(new, &mut nbuf) => {
                deadline = Instant::now() + Duration::from_secs(timeout);
                match r {
                    Ok(0) | Err(_) => { stores[1] = None; session.backend_closed(Store::New); }
                    Ok(n) => session.backend_input(Store::New, &nbuf[..n]),
                }
            },
            r = login_opt(old_login) => { logins[0] = None; login_result(&mut session, &mut stores, Store::Old, r); }
            r = login_opt(new_login) => { logins[1] = None; login_result(&mut session, &mut stores, Store::New, r); }
            _ = tokio::time::sleep_until(deadline) => {
                debug!("client timed out");
                session.end("Autologout; idle for too long");
            }
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
            }
        }
    }
}

fn login_result(
    session: &mut Session,
    stores: &mut [Option<MaybeTls>; 2],
    store: Store,
    result: Result<Connected, BackendError>,
) {
    match result {
        Ok(connected) => {
            stores[store_idx(store)] = Some(connected.stream);
            session.login_done(store, Ok(connected.info));
            if !connected.rest.is_empty() {
                session.backend_input(store, &connected.rest);
            }
        }
        Err(e) => {
            if !matches!(e, BackendError::Rejected) {
                warn!(store = store.as_str(), error = %e, "store login failed");
                crate::metrics::backend_connect_error(store.as_str(), e.kind());
            }
            session.login_done(store, Err(e.failure()));
        }
    }
}

fn store_idx(store: Store) -> usize {
    match store {
        Store::Old => 0,
        Store::New => 1,
    }
}

/// Performs one action; `Ok(false)` ends the session.
async fn perform(
    action: Action,
    session: &mut Session,
    client: &mut Option<MaybeTls>,
    stores: &mut [Option<MaybeTls>; 2],
    logins: &mut [Option<Login>; 2],
    ctx: &Arc<Ctx>,
) -> io::Result<bool> {
    match action {
        Action::ToClient(bytes) => {
            if let Some(c) = client.as_mut() {
                c.write_all(&bytes).await?;
                c.flush().await?;
            }
        }
        Action::ToBackend(store, bytes) => {
            if let Some(s) = stores[store_idx(store)].as_mut()
                && (s.write_all(&bytes).await.is_err() || s.flush().await.is_err())
            {
                stores[store_idx(store)] = None;
                session.backend_closed(store);
            }
        }
        Action::StartTls => {
            let (Some(MaybeTls::Plain(tcp)), Some(acceptor)) =
                (client.take(), ctx.acceptor.as_ref())
            else {
                return Ok(false);
            };
            match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    *client = Some(MaybeTls::Tls(Box::new(tls.into())));
                    session.tls_established();
                }
                _ => {
                    crate::metrics::tls_handshake_failed("imap");
                    session.client_closed();
                    return Ok(false);
                }
            }
        }
        Action::Login { store, credentials } => {
            let target = match store {
                Store::Old => ctx.old.clone(),
                Store::New => ctx.new.clone(),
            };
            let timeout = Duration::from_secs(ctx.config.limits.backend_connect_timeout_secs);
            logins[store_idx(store)] = Some(Box::pin(async move {
                backend::connect(&target, &credentials, timeout).await
            }));
        }
        Action::CloseBackend(store) => {
            if let Some(mut s) = stores[store_idx(store)].take() {
                // Let the store see our LOGOUT, but never wait long for it.
                let _ = tokio::time::timeout(Duration::from_millis(200), s.shutdown()).await;
            }
        }
        Action::Close => {
            if let Some(mut c) = client.take() {
                let _ = tokio::time::timeout(Duration::from_secs(1), c.shutdown()).await;
            }
            return Ok(false);
        }
    }
    Ok(true)
}
