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

use std::collections::VecDeque;

use crate::{
    identity::{Secret, StoreAuth},
    oauth::Mechanism,
};

use super::{
    Action, BackendInfo, Credentials, End, IdFields, Input, LoginFailure, Mode, PipeState, Report,
    Session, Shared, failure_label, reply,
};
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
                self.ending.get_or_insert(End::Logout);
                self.close();
            }
            CommandBody::Id { parameters } => {
                self.client_id = client_id(parameters.unwrap_or_default());
                self.send_client(reply::id());
                self.send_client(reply::ok(&tag, "ID completed"));
            }
            CommandBody::StartTLS => self.starttls(&tag),
            CommandBody::Login { username, password } => {
                let credentials = Credentials {
                    user: username.as_ref().to_vec(),
                    password: password.declassify().as_ref().to_vec(),
                    bearer: None,
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
                    None => self.challenge(tag, None),
                }
            }
            CommandBody::Authenticate {
                mechanism: m @ (AuthMechanism::XOAuth2 | AuthMechanism::OAuthBearer),
                initial_response,
            } if self.cfg.config.auth.oauth.is_some() => {
                if !self.may_authenticate(&tag) {
                    return;
                }
                let bearer = match m {
                    AuthMechanism::XOAuth2 => Mechanism::XOAuth2,
                    _ => Mechanism::OAuthBearer,
                };
                match initial_response {
                    Some(ir) => self.sasl_bearer(mode, tag, bearer, ir.declassify()),
                    None => self.challenge(tag, Some(bearer)),
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
            self.ending.get_or_insert(End::ProtocolError);
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

    /// RFC 4959: an empty challenge, for a client that sent no initial response.
    fn challenge(&mut self, tag: Vec<u8>, bearer: Option<Mechanism>) {
        self.send_client(Bytes::from_static(b"+ \r\n"));
        self.input = Input::AuthData {
            tag: Bytes::from(tag),
            bearer,
        };
    }

    pub(super) fn auth_data(
        &mut self,
        mode: &mut Mode,
        tag: Bytes,
        bearer: Option<Mechanism>,
        frame: Frame,
    ) {
        let Frame::Line { bytes, .. } = frame else {
            return;
        };
        self.input = Input::Command;
        match AuthenticateDataCodec::new().decode(&bytes) {
            Ok((_, AuthenticateData::Continue(data))) => match bearer {
                None => self.sasl_plain(mode, tag.to_vec(), data.declassify()),
                Some(b) => self.sasl_bearer(mode, tag.to_vec(), b, data.declassify()),
            },
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
            self.log_failed_login(plain.authcid, "authzid", None);
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
            bearer: None,
        };
        self.login(mode, tag, credentials);
    }

    /// An OAuth2 message for the store named by `auth.oauth`: the name in it
    /// picks the phase; the store that takes the token decides.
    fn sasl_bearer(&mut self, mode: &mut Mode, tag: Vec<u8>, bearer: Mechanism, data: &[u8]) {
        let Some(user) = bearer.user(data) else {
            self.send_client(reply::bad(
                &tag,
                &format!("Malformed SASL {} message", bearer.as_str()),
            ));
            return;
        };
        let credentials = Credentials {
            user,
            password: data.to_vec(),
            bearer: Some(bearer),
        };
        self.login(mode, tag, credentials);
    }

    fn login(&mut self, mode: &mut Mode, tag: Vec<u8>, credentials: Credentials) {
        if !self.may_authenticate(&tag) {
            return;
        }
        let user = String::from_utf8_lossy(&credentials.user).into_owned();
        let phase = self.cfg.config.migration.phase_for(&user);
        // A token is checked by the store it is for.
        let verifier = match (credentials.bearer, self.cfg.config.auth.oauth) {
            (Some(_), Some(store)) => store,
            _ => self.cfg.config.verifier(phase),
        };
        let verdict = self.cfg.throttle.check(
            self.clock.now,
            self.cfg.client.ip(),
            &credentials.user,
            &credentials.password,
        );
        if !verdict.delay.is_zero() {
            self.report(Report::Throttled("delayed"));
        }
        if verdict.known_failure {
            self.report(Report::Throttled("known_failure"));
        }
        let held = (verdict.known_failure || !verdict.delay.is_zero()).then(|| Held {
            until: self.clock.now + verdict.delay,
            known_failure: verdict.known_failure,
        });
        let credentials = Arc::new(credentials);
        if held.is_none() {
            self.store_login(verifier, &credentials, phase);
        }
        self.input = Input::Waiting;
        *mode = Mode::LoggingIn(Box::new(LoggingIn {
            tag: Bytes::from(tag),
            phase,
            verifier,
            credentials,
            held,
            verified: None,
            repeated: false,
        }));
    }

    /// Asks the driver to log in to `store` for this client, as that
    /// store's `[backends.*.login]` says.
    pub(super) fn store_login(&mut self, store: Store, credentials: &Credentials, phase: Phase) {
        let auth = self.store_auth(store, credentials);
        self.send_login(store, auth, phase);
    }

    /// [`Shared::store_login`] once the password was checked elsewhere;
    /// `false` (and nothing sent) when this store just refused this very
    /// login: it is not asked again, so its lockout does not count it.
    pub(super) fn login_on_behalf(
        &mut self,
        store: Store,
        credentials: &Credentials,
        phase: Phase,
    ) -> bool {
        let auth = self.store_auth(store, credentials);
        if self
            .cfg
            .throttle
            .store_known_failure(self.clock.now, store, &auth)
        {
            self.report(Report::Throttled("known_failure"));
            return false;
        }
        self.send_login(store, auth, phase);
        true
    }

    /// A store refused a login on the user's behalf: remember it.
    pub(super) fn refused_on_behalf(&mut self, store: Store, credentials: &Credentials) {
        let auth = self.store_auth(store, credentials);
        self.cfg.throttle.store_failed(self.clock.now, store, &auth);
    }

    fn store_auth(&self, store: Store, credentials: &Credentials) -> StoreAuth {
        match credentials.bearer {
            Some(mechanism) if self.cfg.config.auth.oauth == Some(store) => StoreAuth::Client {
                user: credentials.user.clone(),
                mechanism,
                message: Secret::new(&credentials.password),
            },
            _ => self
                .cfg
                .config
                .backend(store)
                .login
                .auth_for(credentials)
                .unwrap_or(StoreAuth::Unusable),
        }
    }

    fn send_login(&mut self, store: Store, auth: StoreAuth, phase: Phase) {
        let id = self
            .cfg
            .config
            .backend(store)
            .forward_id
            .then(|| Arc::new(self.store_id()));
        self.actions.push_back(Action::Login {
            store,
            auth: Arc::new(auth),
            id,
            layout: phase == Phase::Merged,
        });
    }

    /// ID for a store: where the client really is (Dovecot takes these
    /// from its `login_trusted_networks`, for its logs and lockouts), then
    /// what the client said of itself.
    fn store_id(&self) -> IdFields {
        let field =
            |name: &str, value: String| (name.as_bytes().to_vec(), Some(value.into_bytes()));
        let mut id = vec![
            field("x-originating-ip", self.cfg.client.ip().to_string()),
            field("x-originating-port", self.cfg.client.port().to_string()),
            field("x-connected-ip", self.cfg.local.ip().to_string()),
            field("x-connected-port", self.cfg.local.port().to_string()),
            field("x-session-ext-id", format!("ferry-{}", self.cfg.id)),
        ];
        id.extend(self.client_id.iter().cloned());
        id
    }

    /// A login of the client's answered: the session's phase state, the
    /// same state waiting for the phase's own store (after the verifier
    /// accepted the client), or `None` when it failed.
    pub(super) fn primary_login_done(
        &mut self,
        mode: &mut Mode,
        store: Store,
        result: Result<BackendInfo, LoginFailure>,
    ) -> Option<Mode> {
        let Mode::LoggingIn(mut l) = std::mem::replace(mode, Mode::PreAuth) else {
            return None;
        };
        let verifying = l.verified.is_none();
        if verifying {
            let (now, peer, c) = (self.clock.now, self.cfg.client.ip(), &l.credentials);
            match &result {
                Ok(_) => self.cfg.throttle.succeeded(&c.user),
                Err(LoginFailure::Rejected) => {
                    self.cfg.throttle.failed(now, peer, &c.user, &c.password)
                }
                Err(LoginFailure::Unavailable { .. }) => {}
            }
        }
        let info = match result {
            Ok(info) => info,
            Err(failure) => {
                if !verifying && failure == LoginFailure::Rejected {
                    self.refused_on_behalf(store, &l.credentials);
                }
                self.login_failed(&l, store, failure, verifying);
                return None;
            }
        };
        let own = l.phase.store();
        if store == own {
            return Some(self.logged_in(*l, store, info));
        }
        // The verifier accepted the client. The merged view keeps it as its
        // OLD connection; otherwise it has done its part.
        self.attach_store(store, info.clone());
        if l.phase != Phase::Merged {
            self.logout_store(store);
        }
        l.verified = Some(info);
        if !self.login_on_behalf(own, &l.credentials, l.phase) {
            self.login_failed(&l, own, LoginFailure::Rejected, false);
            return None;
        }
        Some(Mode::LoggingIn(l))
    }

    fn login_failed(
        &mut self,
        l: &LoggingIn,
        store: Store,
        failure: LoginFailure,
        verifying: bool,
    ) {
        self.report(Report::Login {
            phase: l.phase,
            result: failure_label(&failure),
        });
        // The client's password was right when a store refuses Ferry's own
        // identity for this user (not provisioned, or a wrong master secret);
        // the client is told no more than for a wrong password.
        let reason = match (&failure, verifying, l.repeated) {
            (LoginFailure::Rejected, true, true) => "repeated",
            (LoginFailure::Rejected, true, false) => "password",
            (LoginFailure::Rejected, false, _) => "store_identity",
            (LoginFailure::Unavailable { .. }, ..) => "unavailable",
        };
        self.log_failed_login(&l.credentials.user, reason, Some(store));
        let reply = match failure {
            LoginFailure::Rejected => reply::no(
                &l.tag,
                reply::Rfc5530::AuthenticationFailed,
                "Authentication failed.",
            ),
            LoginFailure::Unavailable { .. } => reply::no(
                &l.tag,
                reply::Rfc5530::Unavailable,
                "Mail store temporarily unavailable, try again later.",
            ),
        };
        self.input = Input::Command;
        self.send_client(reply);
        self.logout_stores();
        if verifying && failure == LoginFailure::Rejected {
            self.failures += 1;
            if self.failures >= self.cfg.config.auth.max_failures_per_connection {
                self.report(Report::LimitHit("login_failures"));
                self.bye_and_close("Too many failed logins", End::LoginFailures);
            }
        }
    }

    /// One line per failed login, stable for fail2ban (`deploy/fail2ban/`):
    /// `login failed client=ADDRESS user="NAME" reason=…`. The name is
    /// quoted and escaped, so it cannot forge a line; no secret is logged.
    /// Reasons: `password` (the verifying store said no), `repeated` (the
    /// same wrong password again, refused by Ferry), `authzid`,
    /// `store_identity` (a store refused Ferry's own login for the user) and
    /// `unavailable` — only the first three are the client's doing.
    fn log_failed_login(&self, user: &[u8], reason: &'static str, store: Option<Store>) {
        let user = String::from_utf8_lossy(user);
        let client = self.cfg.client.ip();
        let store = store.map(Store::as_str);
        match reason {
            "store_identity" | "unavailable" => {
                tracing::warn!(%client, user = ?user, reason, store, "login failed")
            }
            _ => tracing::info!(%client, user = ?user, reason, "login failed"),
        }
    }

    /// The phase's own store accepted: the client is logged in.
    fn logged_in(&mut self, l: LoggingIn, store: Store, info: BackendInfo) -> Mode {
        let LoggingIn {
            tag,
            phase,
            credentials,
            verified,
            ..
        } = l;
        self.input = Input::Command;
        self.report(Report::Login {
            phase,
            result: "ok",
        });
        tracing::info!(phase = phase.as_str(), "logged in");
        // The span's user: the name the client logged in with, once.
        self.report(Report::User(
            String::from_utf8_lossy(&credentials.user).into_owned(),
        ));
        self.login = Some((
            String::from_utf8_lossy(&credentials.user).into_owned(),
            phase,
        ));
        let caps = match phase {
            Phase::Merged => crate::extensions::merged_capabilities(&info.capabilities),
            Phase::Old | Phase::New => crate::merge::passthrough_capabilities(&info.capabilities),
        };
        self.attach_store(store, info.clone());
        self.send_client(reply::logged_in(&tag, &caps));
        match phase {
            Phase::Merged => {
                let mut m = Box::new(super::merged::Merged::new(
                    &self.cfg.config,
                    info.layout,
                    caps,
                    credentials,
                ));
                if let Some(old) = verified {
                    // OLD checked the password: its connection serves `Old/`.
                    self.old_login_done(&mut m, Ok(old));
                }
                Mode::Merged(m)
            }
            Phase::Old | Phase::New => Mode::Pipe(Box::new(PipeState {
                store,
                inflight: VecDeque::new(),
                idle: None,
                literal: None,
                compress: None,
            })),
        }
    }
}

/// What a client's ID may pass on: at most RFC 2971's 30 fields, each
/// within its limits (30-byte names, 1024-byte values), and never an `x-`
/// field, which the stores would trust as Ferry's own.
pub(super) fn client_id(
    parameters: Vec<(
        imap_codec::imap_types::core::IString<'_>,
        imap_codec::imap_types::core::NString<'_>,
    )>,
) -> IdFields {
    parameters
        .into_iter()
        .map(|(name, value)| (name.as_ref().to_vec(), value.0.map(|v| v.as_ref().to_vec())))
        .filter(|(name, value)| {
            name.len() <= 30
                && value.as_ref().is_none_or(|v| v.len() <= 1024)
                && !name.to_ascii_lowercase().starts_with(b"x-")
        })
        .take(30)
        .collect()
}

/// A client's login in progress.
pub(super) struct LoggingIn {
    tag: Bytes,
    phase: Phase,
    /// The store that checks the client's password (`auth.verify`).
    verifier: Store,
    credentials: Arc<Credentials>,
    /// The throttle holds the login back until then.
    held: Option<Held>,
    /// The verifier accepted the client, and it is not the phase's own
    /// store: what it told Ferry at login.
    verified: Option<BackendInfo>,
    /// Refused by Ferry as the same wrong password again.
    repeated: bool,
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
            Mode::LoggingIn(l) => l.held.map(|h| h.until),
            _ => None,
        }
    }

    /// A held login is due: to the verifying store, or refused as the same
    /// failure.
    pub(super) fn release_login(&mut self) {
        let Session { shared, mode } = self;
        let Mode::LoggingIn(l) = mode else {
            return;
        };
        let Some(h) = l.held.take() else {
            return;
        };
        if h.known_failure {
            l.repeated = true;
            let verifier = l.verifier;
            self.login_done(verifier, Err(LoginFailure::Rejected));
        } else {
            shared.store_login(l.verifier, &l.credentials, l.phase);
        }
    }
}
