//! The admin API: HTTP on its own listener (`[admin] listen`, loopback by
//! default), every request carrying the bearer token from
//! `[admin] token_file`. JSON in the shapes `ferry admin …` prints.
//!
//! - `GET  /users`: every user's migration record;
//! - `GET  /users/NAME`: the user's phase, sessions on this instance,
//!   migration record and folders;
//! - `POST /users/NAME/migration/start`: copy now (whatever the pass
//!   interval; users in phase `old` too), unpausing;
//! - `POST /users/NAME/migration/pause`, `…/resume`;
//! - `POST /users/NAME/sessions/end`: end the user's sessions at their next
//!   safe point (`* BYE`), on every instance of a fleet;
//! - `PUT /users/NAME/phase/PHASE`, `DELETE /users/NAME/phase`: set the
//!   user's phase (it wins over the configuration files), or leave it to
//!   the files again; every instance of a fleet follows;
//! - `POST /reload`: read the configuration file again; 422 with the
//!   reason when it is refused (`ferry reload`).
//!
//! Built on hyper (HTTP/1.1 only: nothing here needs more).

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Phase,
    context::Live,
    control::Control,
    copier::activity::Activity,
    fleet::{Fleet, Note},
    sessions::Sessions,
    state::State,
};

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("cannot bind admin.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin API at {0}: {1}")]
    Request(String, String),
}

/// What the admin API reads and steers.
#[derive(Clone)]
pub struct Admin {
    pub live: watch::Receiver<Arc<Live>>,
    pub state: Arc<State>,
    pub sessions: Arc<Sessions>,
    /// Ending sessions reaches every instance.
    pub fleet: Arc<Fleet>,
    pub activity: Arc<Activity>,
    /// Phases and reloads.
    pub control: Arc<Control>,
}

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    admin: Admin,
    shutdown: CancellationToken,
) -> Result<SocketAddr, AdminError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .expect("a valid response")
}

fn error(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": text }))
}

/// Equal tokens, compared in constant time.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// `%40` and friends in a path segment.
fn percent_decoded(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A path segment with the characters a user name may hold escaped.
pub fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let config = self.live.borrow().config.clone();
        let Some(admin) = &config.admin else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the admin API is off");
        };
        let token = match std::fs::read_to_string(&admin.token_file) {
            Ok(t) => t.trim().to_string(),
            Err(e) => {
                tracing::warn!(file = %admin.token_file.display(), error = %e, "cannot read the admin token");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the admin token is unreadable",
                );
            }
        };
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if token.is_empty() || !same(given.trim().as_bytes(), token.as_bytes()) {
            return error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        }
        let path: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
        let method = req.method().clone();
        let user = match path.get(1).map(|u| percent_decoded(u)) {
            Some(Some(u)) if !u.is_empty() => Some(u),
            Some(_) => return error(StatusCode::BAD_REQUEST, "a bad user name"),
            None => None,
        };
        let result = match (&method, path.as_slice(), user) {
            (&Method::GET, ["users"], _) => self.users().await,
            (&Method::GET, ["users", _], Some(u)) => self.user(&config, &u).await,
            (&Method::POST, ["users", _, "migration", what], Some(u)) => self.steer(&u, what).await,
            (&Method::POST, ["users", _, "sessions", "end"], Some(u)) => {
                let ended = self.sessions.end(&u);
                // Every other instance ends the user's sessions too.
                self.fleet.send(Note::EndSessions { user: u.clone() });
                tracing::info!(user = %u, ended, "sessions ended by the admin API");
                Ok(json!({ "user": u, "ended": ended, "fleet": self.fleet.is_shared() }))
            }
            (&Method::PUT, ["users", _, "phase", phase], Some(u)) => {
                let phase = match *phase {
                    "old" => Phase::Old,
                    "merged" => Phase::Merged,
                    "new" => Phase::New,
                    _ => return error(StatusCode::BAD_REQUEST, "a phase is old, merged or new"),
                };
                self.set_phase(&u, Some(phase)).await
            }
            (&Method::DELETE, ["users", _, "phase"], Some(u)) => self.set_phase(&u, None).await,
            (&Method::POST, ["reload"], None) => {
                let control = self.control.clone();
                return match tokio::task::spawn_blocking(move || control.reload_source()).await {
                    Ok(Ok(generation)) => {
                        reply(StatusCode::OK, json!({ "generation": generation }))
                    }
                    Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                };
            }
            _ => return error(StatusCode::NOT_FOUND, "no such resource"),
        };
        match result {
            Ok(v) => reply(StatusCode::OK, v),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    async fn users(&self) -> Result<Value, crate::state::StateError> {
        Ok(json!({ "users": self.state.migrations().await? }))
    }

    async fn user(
        &self,
        config: &crate::config::Config,
        user: &str,
    ) -> Result<Value, crate::state::StateError> {
        let (phase, source) = config.migration.phase_and_source(user);
        Ok(json!({
            "user": user,
            "phase": phase.as_str(),
            "phase_source": source,
            "sessions": self.sessions.count(user),
            "migration": self.state.migration(user).await?,
            "folders": self.state.migration_folders(user).await?,
        }))
    }

    /// Sets or clears the user's phase: kept in the state store, applied
    /// here at once and on every other instance by a note.
    async fn set_phase(
        &self,
        user: &str,
        phase: Option<Phase>,
    ) -> Result<Value, crate::state::StateError> {
        self.state.set_phase(user, phase).await?;
        let generation = self.control.set_api_phase(user, phase);
        self.fleet.send(Note::Phase {
            user: user.to_lowercase(),
        });
        let (phase, source) = self.control.config().migration.phase_and_source(user);
        Ok(json!({
            "user": user,
            "phase": phase.as_str(),
            "phase_source": source,
            "generation": generation,
            "fleet": self.fleet.is_shared(),
        }))
    }

    async fn steer(&self, user: &str, what: &str) -> Result<Value, crate::state::StateError> {
        self.state.enqueue(user).await?;
        match what {
            "start" => {
                self.state.set_paused(user, false).await?;
                self.activity.want(user);
            }
            "pause" => {
                self.state.set_paused(user, true).await?;
            }
            "resume" => {
                self.state.set_paused(user, false).await?;
            }
            _ => return Ok(json!({ "error": format!("no such action: {what}") })),
        }
        tracing::info!(user, action = what, "migration steered by the admin API");
        Ok(json!({ "user": user, "migration": self.state.migration(user).await? }))
    }
}

/// One request to an admin API at `addr` with `token`: the status and the
/// JSON answer (for `ferry admin …`).
pub async fn request(
    addr: &str,
    token: &str,
    method: Method,
    path: &str,
) -> Result<(StatusCode, Value), AdminError> {
    let fail = |e: &dyn std::fmt::Display| AdminError::Request(addr.to_string(), e.to_string());
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| fail(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(&e))?;
    let response = sender.send_request(req).await.map_err(|e| fail(&e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(&e))?
        .to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&body).trim().to_string() }));
    Ok((status, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_survive_the_path() {
        for name in ["alice", "bob@example.edu", "名前", "a b/c%d"] {
            assert_eq!(
                percent_decoded(&percent_encoded(name)).as_deref(),
                Some(name)
            );
        }
        assert_eq!(percent_decoded("%zz"), None);
        assert!(same(b"token", b"token") && !same(b"token", b"tokem") && !same(b"t", b"to"));
    }
}
