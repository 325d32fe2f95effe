//! Connecting and logging in to a store: TCP, TLS (implicit or STARTTLS),
//! greeting, CAPABILITY, LOGIN, and the store's namespace layout. After this the
//! connection belongs to the session driver.

use std::{sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use imap_codec::{
    AuthenticateDataCodec, CommandCodec, ResponseCodec,
    decode::Decoder,
    encode::{Encoder, Fragment},
    imap_types::{
        IntoStatic,
        auth::{AuthMechanism, AuthenticateData},
        command::{Command, CommandBody},
        core::{AString, IString, LiteralMode, NString, Tag},
        mailbox::Mailbox,
        response::{Code, Data, Response, Status, StatusKind},
        secret::Secret,
    },
};
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, rustls::ClientConfig};

use crate::{
    caps::{Cap, Caps},
    config::{Backend, BackendTls},
    frame::{Frame, Framer, Peer},
    identity::{Secret as StoreSecret, StoreAuth},
    namespace::Layout,
    namespace::Store,
    oauth::{Mechanism, TokenError, Tokens},
    session::{BackendInfo, IdFields, LoginFailure},
    tls::MaybeTls,
};

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(&'static str),
    #[error("login rejected")]
    Rejected,
    #[error("{0}")]
    Token(#[from] TokenError),
}

impl BackendError {
    pub fn failure(&self) -> LoginFailure {
        match self {
            BackendError::Rejected => LoginFailure::Rejected,
            e => LoginFailure::Unavailable {
                kind: e.kind(),
                detail: e.to_string(),
            },
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Connect(_) => "connect",
            BackendError::Tls(_) => "tls",
            BackendError::Io(_) => "io",
            BackendError::Timeout => "timeout",
            BackendError::Protocol(_) => "protocol",
            BackendError::Rejected => "rejected",
            BackendError::Token(_) => "token",
        }
    }
}

/// A store's address and how to reach it.
#[derive(Clone)]
pub struct Target {
    pub backend: Backend,
    pub tls: Option<Arc<ClientConfig>>,
}

/// A store connection, logged in.
pub struct Connected {
    pub stream: MaybeTls,
    pub info: BackendInfo,
    /// Bytes read past the login exchange; they belong to the session.
    pub rest: Bytes,
}

/// Responses of a store before the session takes over, message by message.
struct Client {
    stream: MaybeTls,
    framer: Framer,
    next: u32,
    /// A command sent ahead of the next one without waiting (ID before
    /// the login): its tagged answer is skipped wherever it arrives.
    ahead: Option<Tag<'static>>,
}

/// 64 KiB, the line length Dovecot accepts, bounds store lines during login too.
const MAX_LINE: usize = 64 * 1024;

impl Client {
    async fn message(&mut self) -> Result<Bytes, BackendError> {
        let mut msg = BytesMut::new();
        loop {
            match self.framer.next_frame() {
                Ok(Some(Frame::Line { bytes, literal, .. })) => {
                    msg.extend_from_slice(&bytes);
                    if literal.is_none() {
                        return Ok(msg.freeze());
                    }
                }
                Ok(Some(Frame::LiteralData { bytes, .. })) => {
                    if msg.len() + bytes.len() > MAX_LINE {
                        return Err(BackendError::Protocol("oversized response during login"));
                    }
                    msg.extend_from_slice(&bytes);
                }
                Ok(None) => {
                    let mut buf = [0u8; 8192];
                    let n = self.stream.read(&mut buf).await?;
                    if n == 0 {
                        return Err(BackendError::Protocol("connection closed"));
                    }
                    self.framer.push(&buf[..n]);
                }
                Err(_) => return Err(BackendError::Protocol("over-long line")),
            }
        }
    }

    fn tag(&mut self) -> Tag<'static> {
        self.next += 1;
        // Invariant: "ferry.login.N" is a valid tag.
        Tag::try_from(format!("ferry.login.{}", self.next)).expect("valid tag")
    }

    /// Sends `body`, waiting for `+` before synchronizing literals, and returns
    /// the untagged responses and the tagged status.
    async fn run(
        &mut self,
        body: CommandBody<'_>,
    ) -> Result<(Vec<Bytes>, Status<'static>), BackendError> {
        let tag = self.tag();
        let cmd = Command {
            tag: tag.clone(),
            body,
        };
        let mut untagged = vec![];
        for fragment in CommandCodec::new().encode(&cmd) {
            match fragment {
                Fragment::Line { data } => self.stream.write_all(&data).await?,
                Fragment::Literal { data, mode } => {
                    if mode == LiteralMode::Sync {
                        loop {
                            let m = self.message().await?;
                            if m.starts_with(b"+") {
                                break;
                            }
                            if self.answers_ahead(&m) {
                                continue;
                            }
                            if !m.starts_with(b"*") {
                                // Tagged answer instead of `+`: the command is over.
                                return Ok((untagged, parse_status(&m)?));
                            }
                            untagged.push(m);
                        }
                    }
                    self.stream.write_all(&data).await?;
                }
            }
        }
        self.stream.flush().await?;
        loop {
            let m = self.message().await?;
            if is_tagged(&m, &tag) {
                return Ok((untagged, parse_status(&m)?));
            }
            if !self.answers_ahead(&m) {
                untagged.push(m);
            }
        }
    }

    /// Sends `body` without waiting for its answer, which
    /// [`answers_ahead`](Self::answers_ahead) skips later; the next
    /// command's write flushes both. A command with a synchronizing literal
    /// cannot go ahead (the store's `+` comes first): it is run instead.
    async fn send_ahead(&mut self, body: CommandBody<'_>) -> Result<(), BackendError> {
        let tag = self.tag();
        let cmd = Command {
            tag: tag.clone(),
            body,
        };
        let fragments: Vec<Fragment> = CommandCodec::new().encode(&cmd).collect();
        let sync = |f: &Fragment| {
            matches!(
                f,
                Fragment::Literal {
                    mode: LiteralMode::Sync,
                    ..
                }
            )
        };
        if fragments.iter().any(sync) {
            return self.run(cmd.body).await.map(drop);
        }
        for fragment in fragments {
            let (Fragment::Line { data } | Fragment::Literal { data, .. }) = fragment;
            self.stream.write_all(&data).await?;
        }
        self.ahead = Some(tag);
        Ok(())
    }

    /// `listed` (a list the store gave unasked), else what CAPABILITY says.
    async fn capabilities_unless(&mut self, listed: Option<Caps>) -> Result<Caps, BackendError> {
        if let Some(caps) = listed {
            return Ok(caps);
        }
        let (untagged, status) = self.run(CommandBody::Capability).await?;
        Ok(capabilities(&untagged, &status).unwrap_or_else(|| Caps::from_names([])))
    }

    /// True (and forgotten) when `m` is the tagged answer to the command
    /// sent ahead.
    fn answers_ahead(&mut self, m: &[u8]) -> bool {
        let answered = self.ahead.as_ref().is_some_and(|t| is_tagged(m, t));
        if answered {
            self.ahead = None;
        }
        answered
    }
}

/// True when `m` is the tagged answer to `tag`.
fn is_tagged(m: &[u8], tag: &Tag<'_>) -> bool {
    m.starts_with(tag.inner().as_bytes()) && m.get(tag.inner().len()) == Some(&b' ')
}

impl Client {
    /// AUTHENTICATE with a one-message mechanism: the message goes as the
    /// initial response (SASL-IR) or after the first `+`; a further `+`
    /// (an error report, RFC 7628) is answered empty so the store can say NO.
    async fn authenticate(
        &mut self,
        mechanism: AuthMechanism<'static>,
        message: &[u8],
        sasl_ir: bool,
    ) -> Result<(Vec<Bytes>, Status<'static>), BackendError> {
        let tag = self.tag();
        let body = CommandBody::Authenticate {
            mechanism,
            initial_response: sasl_ir.then(|| Secret::new(message.to_vec().into())),
        };
        let line = CommandCodec::new()
            .encode(&Command {
                tag: tag.clone(),
                body,
            })
            .dump();
        self.stream.write_all(&line).await?;
        self.stream.flush().await?;
        let mut sent = sasl_ir;
        let mut untagged = vec![];
        loop {
            let m = self.message().await?;
            if m.starts_with(b"+") {
                let reply = if sent {
                    b"\r\n".to_vec()
                } else {
                    let data = AuthenticateData::Continue(Secret::new(message.to_vec().into()));
                    AuthenticateDataCodec::new().encode(&data).dump()
                };
                sent = true;
                self.stream.write_all(&reply).await?;
                self.stream.flush().await?;
            } else if is_tagged(&m, &tag) {
                return Ok((untagged, parse_status(&m)?));
            } else if !self.answers_ahead(&m) {
                untagged.push(m);
            }
        }
    }
}

fn parse_status(m: &[u8]) -> Result<Status<'static>, BackendError> {
    match ResponseCodec::new().decode(m) {
        Ok((_, Response::Status(s))) => Ok(s.into_static()),
        _ => Err(BackendError::Protocol("unparseable status response")),
    }
}

fn capabilities(untagged: &[Bytes], status: &Status<'_>) -> Option<Caps> {
    if let Status::Tagged(t) = status
        && let Some(Code::Capability(caps)) = &t.body.code
    {
        return Some(Caps::from_decoded(caps.as_ref()));
    }
    untagged
        .iter()
        .find_map(|m| match ResponseCodec::new().decode(m) {
            Ok((_, Response::Data(Data::Capability(caps)))) => {
                Some(Caps::from_decoded(caps.as_ref()))
            }
            _ => None,
        })
}

/// What a greeting's `[CAPABILITY …]` code lists (Dovecot's, Cyrus's and
/// most stores' greetings have one): a CAPABILITY round trip less per login.
fn greeting_capabilities(greeting: &[u8]) -> Option<Caps> {
    match ResponseCodec::new().decode(greeting) {
        Ok((_, Response::Status(Status::Untagged(body)))) => match body.code {
            Some(Code::Capability(caps)) => Some(Caps::from_decoded(caps.as_ref())),
            _ => None,
        },
        _ => None,
    }
}

fn ok(status: &Status<'_>) -> bool {
    matches!(status, Status::Tagged(t) if t.body.kind == StatusKind::Ok)
}

async fn tls(target: &Target, tcp: TcpStream) -> Result<MaybeTls, BackendError> {
    let config = target
        .tls
        .clone()
        .ok_or(BackendError::Protocol("no TLS configuration"))?;
    let name = target
        .backend
        .server_name
        .clone()
        .unwrap_or_else(|| target.backend.host().to_string());
    let name =
        ServerName::try_from(name).map_err(|_| BackendError::Protocol("invalid server name"))?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(BackendError::Tls)?;
    Ok(MaybeTls::Tls(Box::new(tls.into())))
}

/// Connects to a store and logs in as `auth` says, first obtaining the
/// token it names, if any. A cached token the store refuses is forgotten,
/// and the login is tried once more with a new one (it may have been
/// revoked, or expired before its time).
pub async fn log_in(
    target: &Target,
    store: Store,
    auth: &StoreAuth,
    id: Option<&IdFields>,
    layout: bool,
    tokens: &Tokens,
    timeout: Duration,
) -> Result<Connected, BackendError> {
    let StoreAuth::Token {
        user,
        mechanism,
        source,
    } = auth
    else {
        if *auth == StoreAuth::Unusable {
            return Err(BackendError::Protocol("no credentials for this store"));
        }
        return connect(target, auth, id, layout, timeout).await;
    };
    let with = |token: &StoreSecret| StoreAuth::Client {
        user: user.clone(),
        mechanism: *mechanism,
        message: StoreSecret::new(&mechanism.message(user, token.expose())),
    };
    let (token, fresh) = tokens.get(store, user, source).await?;
    match connect(target, &with(&token), id, layout, timeout).await {
        Err(BackendError::Rejected) => {
            tokens.forget(store, user);
            if fresh {
                return Err(BackendError::Rejected);
            }
            let (token, _) = tokens.get(store, user, source).await?;
            connect(target, &with(&token), id, layout, timeout).await
        }
        other => other,
    }
}

/// Connects to a store and logs in as `auth` says (names and passwords byte
/// for byte).
pub async fn connect(
    target: &Target,
    auth: &StoreAuth,
    id: Option<&IdFields>,
    layout: bool,
    timeout: Duration,
) -> Result<Connected, BackendError> {
    tokio::time::timeout(timeout, connect_inner(target, auth, id, layout))
        .await
        .map_err(|_| BackendError::Timeout)?
}

async fn connect_inner(
    target: &Target,
    auth: &StoreAuth,
    id: Option<&IdFields>,
    with_layout: bool,
) -> Result<Connected, BackendError> {
    let tcp = TcpStream::connect(&target.backend.address)
        .await
        .map_err(BackendError::Connect)?;
    tcp.set_nodelay(true)?;
    let stream = match target.backend.tls {
        BackendTls::Implicit => tls(target, tcp).await?,
        BackendTls::Starttls | BackendTls::None => MaybeTls::Plain(tcp),
    };
    let mut c = Client {
        stream,
        framer: Framer::new(Peer::Server, MAX_LINE),
        next: 0,
        ahead: None,
    };
    let greeting = c.message().await?;
    if !greeting.starts_with(b"* OK") {
        return Err(BackendError::Protocol("store did not greet with OK"));
    }
    if target.backend.tls == BackendTls::Starttls {
        let (_, status) = c.run(CommandBody::StartTLS).await?;
        if !ok(&status) {
            return Err(BackendError::Protocol("STARTTLS refused"));
        }
        if c.framer.buffered() > 0 {
            // Anything sent before the handshake could be an injected response.
            return Err(BackendError::Protocol("data after STARTTLS response"));
        }
        let MaybeTls::Plain(tcp) = c.stream else {
            return Err(BackendError::Protocol("STARTTLS on a TLS connection"));
        };
        c.stream = tls(target, tcp).await?;
        c.framer = Framer::new(Peer::Server, MAX_LINE);
    }
    // After STARTTLS the greeting's list is stale (RFC 9051 6.2.1).
    let listed = match target.backend.tls {
        BackendTls::Starttls => None,
        _ => greeting_capabilities(&greeting),
    };
    let caps = c.capabilities_unless(listed).await?;
    if let Some(fields) = id
        && caps.has(Cap::Id)
    {
        // The store's own ID answer, and even a NO, change nothing: it goes
        // with the login, one exchange instead of two.
        let parameters = fields
            .iter()
            .map(|(name, value)| (istring(name), NString(value.as_deref().map(istring))))
            .collect();
        c.send_ahead(CommandBody::Id {
            parameters: Some(parameters),
        })
        .await?;
    }
    let (untagged, status) = match auth {
        StoreAuth::Login { user, password } => {
            if caps.has(Cap::LoginDisabled) {
                return Err(BackendError::Protocol(
                    "store disables LOGIN on this connection",
                ));
            }
            let login = CommandBody::Login {
                username: astring(user),
                password: Secret::new(astring(password.expose())),
            };
            c.run(login).await?
        }
        StoreAuth::Plain {
            user,
            master,
            password,
        } => {
            let message = crate::sasl::plain_message(user, master, password.expose());
            c.authenticate(AuthMechanism::Plain, &message, caps.has(Cap::SaslIr))
                .await?
        }
        StoreAuth::Client {
            mechanism, message, ..
        } => {
            let mechanism = match mechanism {
                Mechanism::XOAuth2 => AuthMechanism::XOAuth2,
                Mechanism::OAuthBearer => AuthMechanism::OAuthBearer,
            };
            c.authenticate(mechanism, message.expose(), caps.has(Cap::SaslIr))
                .await?
        }
        StoreAuth::Token { .. } => return Err(BackendError::Protocol("no token obtained")),
        StoreAuth::Unusable => return Err(BackendError::Protocol("no credentials for this store")),
    };
    match &status {
        Status::Tagged(t) if t.body.kind == StatusKind::Ok => {}
        Status::Tagged(t) if t.body.kind == StatusKind::No => return Err(BackendError::Rejected),
        _ => return Err(BackendError::Protocol("LOGIN failed")),
    }
    let capabilities = c
        .capabilities_unless(capabilities(&untagged, &status))
        .await?;
    // Phases old and new pass names through: no NAMESPACE exchange.
    let layout = if with_layout {
        layout(&mut c, &capabilities).await?
    } else {
        Layout::unknown()
    };
    let rest = c.framer.take_rest();
    Ok(Connected {
        stream: c.stream,
        info: BackendInfo {
            capabilities,
            layout,
        },
        rest,
    })
}

/// ID field names and values as strings: quoted, or literals for bytes a
/// quoted string cannot hold.
fn istring(bytes: &[u8]) -> IString<'static> {
    IString::try_from(bytes.to_vec()).unwrap_or_else(|_| {
        IString::from(imap_codec::imap_types::core::Literal::unvalidated(
            bytes.to_vec(),
        ))
    })
}

/// User names and passwords as astrings: atoms, quoted strings or (for 8-bit
/// and CR/LF) literals, so every byte reaches the store unchanged.
fn astring(bytes: &[u8]) -> AString<'static> {
    match AString::try_from(bytes.to_vec()) {
        Ok(a) => a,
        // Only NUL cannot be represented in IMAP4rev1 at all; send it as a literal
        // and let the store refuse it.
        Err(_) => AString::from(imap_codec::imap_types::core::Literal::unvalidated(
            bytes.to_vec(),
        )),
    }
}

/// The personal namespace: NAMESPACE when offered, else the delimiter of `LIST "" ""`.
async fn layout(c: &mut Client, caps: &Caps) -> Result<Layout, BackendError> {
    if caps.has(Cap::Namespace) {
        let (untagged, _) = c.run(CommandBody::Namespace).await?;
        for m in &untagged {
            if let Ok((_, Response::Data(Data::Namespace { personal, .. }))) =
                ResponseCodec::new().decode(m)
                && let Some(ns) = personal.first()
            {
                return Ok(Layout {
                    prefix: ns.prefix.as_ref().to_vec(),
                    delimiter: ns.delimiter.map(|d| d.inner() as u8),
                });
            }
        }
    }
    let list = CommandBody::List {
        reference: Mailbox::try_from("").map_err(|_| BackendError::Protocol("reference"))?,
        mailbox_wildcard: ""
            .try_into()
            .map_err(|_| BackendError::Protocol("pattern"))?,
    };
    let (untagged, _) = c.run(list).await?;
    for m in &untagged {
        if let Ok((_, Response::Data(Data::List { delimiter, .. }))) =
            ResponseCodec::new().decode(m)
        {
            return Ok(Layout {
                prefix: Vec::new(),
                delimiter: delimiter.map(|d| d.inner() as u8),
            });
        }
    }
    Ok(Layout::flat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_greeting_with_a_capability_code_saves_the_capability_command() {
        let dovecot = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE \
                        LITERAL+ AUTH=PLAIN AUTH=LOGIN] Dovecot (Debian) ready.\r\n";
        let caps = greeting_capabilities(dovecot).expect("listed");
        assert!(caps.has(Cap::Id) && caps.has(Cap::SaslIr) && !caps.has(Cap::LoginDisabled));
        for plain in [
            &b"* OK IMAP4rev1 server ready\r\n"[..],
            b"* OK [ALERT] maintenance tonight\r\n",
            b"* PREAUTH [CAPABILITY IMAP4rev1] welcome\r\n",
            b"* BYE too busy\r\n",
        ] {
            assert_eq!(
                greeting_capabilities(plain),
                None,
                "{}",
                String::from_utf8_lossy(plain)
            );
        }
    }
}
