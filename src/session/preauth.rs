//! Not-authenticated state: CAPABILITY, NOOP, LOGOUT, STARTTLS, ID, LOGIN,
//! AUTHENTICATE PLAIN. Ferry answers all of these itself; the stores only see a
//! login once the client has proven it has TLS (or plaintext is allowed).

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use imap_codec::{
    AuthenticateDataCodec,
    decode::Decoder,
    imap_types::{
        auth::{AuthMechanism, AuthenticateData},
        command::{Command, CommandBody},
    },
};

use super::{Action, Credentials, Input, LoginFailure, Mode, Report, Session, Shared, reply};
use crate::{config::Phase, frame::Frame, namespace::Store};

impl Shared {
    pub(super) fn preauth_command(&mut self, mode: &mut Mode, cmd: Command<'_>) {
        let tag = cmd.tag.inner().as_bytes().to_vec();
        match cmd.body {
            CommandBody::Capability => {
                let caps = self.preauth_capabilities();
                self.send_client(reply::capability_line(&caps));
                self.send_client(reply::ok(&tag, "CAPABILITY completed"));
            }
            CommandBody::Noop => self.send_client(reply::ok(&tag, "NOOP completed")),
            CommandBody::Logout => {
                self.send_client(reply::bye("Logging out"));
                self.send_client(reply::ok(&tag, "LOGOUT completed"));
                self.close();
            }
            CommandBody::Id { .. } => {
                self.send_client(reply::id());
                self.send_client(reply::ok(&tag, "ID completed"));
            }
            CommandBody::StartTLS => self.starttls(&tag),
            CommandBody::Login { username, password } => {
                let credentials = Credentials {
                    user: username.as_ref().to_vec(),
                    password: password.declassify().as_ref().to_vec(),
                };
                self.login(mode, tag, credentials);
            }
            CommandBody::Authenticate {
                mechanism: AuthMechanism::Plain,
                initial_response,
            } => {
                if !self.may_authenticate(&tag) {
                    return;
                }
                match initial_response {
                    Some(ir) => self.sasl_plain(mode, tag, ir.declassify()),
                    None => {
                        // RFC 4959: an empty challenge.
                        self.send_client(Bytes::from_static(b"+ \r\n"));
                        self.input = Input::AuthData {
                            tag: Bytes::from(tag),
                        };
                    }
                }
            }
            CommandBody::Authenticate { .. } => self.send_client(reply::no(
                &tag,
                reply::Rfc5530::Cannot,
                "Unsupported authentication mechanism",
            )),
            _ => self.send_client(reply::bad(&tag, "Log in first")),
        }
    }

    fn starttls(&mut self, tag: &[u8]) {
        if self.cfg.tls || !self.cfg.starttls {
            self.send_client(reply::bad(tag, "TLS is already active or not available"));
            return;
        }
        if self.client.buffered() > 0 {
            // CVE-2011-0411: bytes sent after STARTTLS in plaintext must never be
            // read as if they had come over TLS.
            tracing::warn!("plaintext pipelined after STARTTLS; closing");
            self.send_client(reply::bad(
                tag,
                "Nothing may follow STARTTLS before the handshake",
            ));
            self.send_client(reply::bye("Closing connection"));
            self.close();
            return;
        }
        self.send_client(reply::ok(tag, "Begin TLS negotiation now"));
        self.actions.push_back(Action::StartTls);
    }

    fn may_authenticate(&mut self, tag: &[u8]) -> bool {
        if self.cfg.tls || self.cfg.config.auth.allow_plaintext {
            return true;
        }
        self.send_client(reply::no(
            tag,
            reply::Rfc5530::PrivacyRequired,
            "Use STARTTLS or port 993 before logging in",
        ));
        false
    }

    pub(super) fn auth_data(&mut self, mode: &mut Mode, tag: Bytes, frame: Frame) {
        let Frame::Line { bytes, .. } = frame else {
            return;
        };
        self.input = Input::Command;
        match AuthenticateDataCodec::new().decode(&bytes) {
            Ok((_, AuthenticateData::Continue(data))) => {
                self.sasl_plain(mode, tag.to_vec(), data.declassify())
            }
            Ok((_, AuthenticateData::Cancel)) => {
                self.send_client(reply::bad(&tag, "AUTHENTICATE cancelled"))
            }
            Err(_) => self.send_client(reply::bad(&tag, "Invalid base64 in AUTHENTICATE")),
        }
    }

    fn sasl_plain(&mut self, mode: &mut Mode, tag: Vec<u8>, data: &[u8]) {
        let Some(plain) = crate::sasl::parse_plain(data) else {
            self.send_client(reply::bad(&tag, "Malformed SASL PLAIN message"));
            return;
        };
        if plain.authzid.is_some_and(|z| z != plain.authcid) {
            self.send_client(reply::no(
                &tag,
                reply::Rfc5530::AuthenticationFailed,
                "Authorization identity not permitted",
            ));
            return;
        }
        let credentials = Credentials {
            user: plain.authcid.to_vec(),
            password: plain.password.to_vec(),
        };
        self.login(mode, tag, credentials);
    }

    fn login(&mut self, mode: &mut Mode, tag: Vec<u8>, credentials: Credentials) {
        if !self.may_authenticate(&tag) {
            return;
        }
        let user = String::from_utf8_lossy(&credentials.user).into_owned();
        let phase = self.cfg.config.migration.phase_for(&user);
        let store = primary_store(phase);
        self.report(Report::User(user));
        let verdict = self.cfg.throttle.check(
            self.clock.now,
            self.cfg.peer,
            &credentials.user,
            &credentials.password,
        );
        if !verdict.delay.is_zero() {
            self.report(Report::Throttled("delayed"));
        }
        if verdict.known_failure {
            self.report(Report::Throttled("known_failure"));
        }
        let credentials = Arc::new(credentials);
        let held = (verdict.known_failure || !verdict.delay.is_zero()).then(|| Held {
            until: self.clock.now + verdict.delay,
            known_failure: verdict.known_failure,
        });
        if held.is_none() {
            self.actions.push_back(Action::Login {
                store,
                credentials: credentials.clone(),
            });
        }
        self.input = Input::Waiting;
        *mode = Mode::LoggingIn {
            tag: Bytes::from(tag),
            phase,
            credentials,
            held,
        };
    }
}

/// The store that checks the user's password in `phase`.
fn primary_store(phase: Phase) -> Store {
    match phase {
        Phase::Old => Store::Old,
        Phase::Merged | Phase::New => Store::New,
    }
}

/// A login the throttle holds back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    until: Instant,
    /// This user and password just failed: at `until` the answer is NO
    /// without asking the stores.
    known_failure: bool,
}

impl Session {
    /// When a held login is due.
    pub(super) fn held_login(&self) -> Option<Instant> {
        match &self.mode {
            Mode::LoggingIn { held: Some(h), .. } => Some(h.until),
            _ => None,
        }
    }

    /// A held login is due: to the store, or refused as the same failure.
    pub(super) fn release_login(&mut self) {
        let Mode::LoggingIn {
            phase,
            credentials,
            held,
            ..
        } = &mut self.mode
        else {
            return;
        };
        let Some(h) = held.take() else {
            return;
        };
        let store = primary_store(*phase);
        if h.known_failure {
            self.login_done(store, Err(LoginFailure::Rejected));
        } else {
            let credentials = credentials.clone();
            self.actions.push_back(Action::Login { store, credentials });
        }
    }
}
