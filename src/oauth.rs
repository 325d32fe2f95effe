//! OAuth2 bearer tokens: the SASL messages that carry them — XOAUTH2 (what
//! Google and Microsoft speak) and OAUTHBEARER (RFC 7628) — and the tokens
//! Ferry obtains for a store from an admin's helper command, cached until
//! they expire.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;
use thiserror::Error;
use tokio::io::AsyncReadExt;

use crate::{identity::Secret, namespace::Store};

/// A SASL mechanism that carries a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Mechanism {
    #[default]
    #[serde(rename = "XOAUTH2")]
    XOAuth2,
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The client's first message, logging in as `user` with `token`.
    pub fn message(self, user: &[u8], token: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(user.len() + token.len() + 32);
        match self {
            Mechanism::XOAuth2 => {
                m.extend_from_slice(b"user=");
                m.extend_from_slice(user);
            }
            Mechanism::OAuthBearer => {
                // GS2 header: no channel binding, authzid as a saslname
                // (`,` and `=` escaped, RFC 5801).
                m.extend_from_slice(b"n,a=");
                for &b in user {
                    match b {
                        b',' => m.extend_from_slice(b"=2C"),
                        b'=' => m.extend_from_slice(b"=3D"),
                        b => m.push(b),
                    }
                }
                m.push(b',');
            }
        }
        m.extend_from_slice(b"\x01auth=Bearer ");
        m.extend_from_slice(token);
        m.extend_from_slice(b"\x01\x01");
        m
    }

    /// The user a client's message names (to choose the phase; trusted only
    /// once the store accepted the token). `None` when malformed.
    pub fn user(self, message: &[u8]) -> Option<Vec<u8>> {
        let (head, fields) = match self {
            Mechanism::XOAuth2 => (None, message),
            Mechanism::OAuthBearer => {
                let at = message.iter().position(|b| *b == 0x01)?;
                (Some(&message[..at]), &message[at..])
            }
        };
        let mut fields = fields.split(|b| *b == 0x01);
        let user = match head {
            None => fields.next()?.strip_prefix(b"user=")?.to_vec(),
            Some(gs2) => {
                // `n,a=saslname,` (or `y,…`; `p=…` asks for channel binding).
                let mut parts = gs2.split(|b| *b == b',');
                if !matches!(parts.next()?, b"n" | b"y") {
                    return None;
                }
                unescape_saslname(parts.next()?.strip_prefix(b"a=")?)?
            }
        };
        let has_token =
            fields.any(|f| f.starts_with(b"auth=Bearer ") || f.starts_with(b"auth=bearer "));
        (has_token && !user.is_empty()).then_some(user)
    }
}

fn unescape_saslname(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'=' => {
                match s.get(i + 1..i + 3)? {
                    b"2C" => out.push(b','),
                    b"3D" => out.push(b'='),
                    _ => return None,
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("token command could not start: {0}")]
    Spawn(std::io::Error),
    #[error("token command did not finish within {0:?}")]
    Timeout(Duration),
    #[error("token command failed ({0})")]
    Failed(std::process::ExitStatus),
    #[error("token command printed no token")]
    Empty,
}

/// What a token command may print: the token alone (first line), or an
/// OAuth2 token response (`{"access_token": …, "expires_in": …}`, as a
/// token endpoint answers).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

/// A token is used until this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Token and when to stop using it, by store and store-side user.
type Cache = HashMap<(Store, Vec<u8>), (Secret, Instant)>;

/// Tokens Ferry obtained, shared by all sessions.
#[derive(Default)]
pub struct Tokens {
    cache: Mutex<Cache>,
}

/// How to get a token for one login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource {
    /// argv, `{user}` already replaced.
    pub command: Vec<String>,
    pub timeout: Duration,
    /// How long a token without `expires_in` is used.
    pub lifetime: Duration,
}

impl Tokens {
    /// A cached token, or a new one from `source`; `true` when new.
    pub async fn get(
        &self,
        store: Store,
        user: &[u8],
        source: &TokenSource,
    ) -> Result<(Secret, bool), TokenError> {
        let now = Instant::now();
        if let Some((token, until)) = self.lock().get(&(store, user.to_vec()))
            && *until > now
        {
            return Ok((token.clone(), false));
        }
        let (token, lifetime) = run(source).await?;
        let until = now
            + lifetime
                .unwrap_or(source.lifetime)
                .saturating_sub(EXPIRY_MARGIN);
        let mut cache = self.lock();
        cache.retain(|_, (_, until)| *until > now);
        cache.insert((store, user.to_vec()), (token.clone(), until));
        Ok((token, true))
    }

    /// The store refused this user's cached token: never use it again.
    pub fn forget(&self, store: Store, user: &[u8]) {
        self.lock().remove(&(store, user.to_vec()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs a token command: killed when it overruns `timeout`; its stderr
/// is not logged (it may hold secrets).
async fn run(source: &TokenSource) -> Result<(Secret, Option<Duration>), TokenError> {
    let (program, args) = source.command.split_first().ok_or(TokenError::Empty)?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(TokenError::Spawn)?;
    let mut stdout = child.stdout.take().ok_or(TokenError::Empty)?;
    let work = async {
        let mut out = Vec::new();
        // 64 KiB is far more than any token; a runaway helper is cut off.
        (&mut stdout).take(64 * 1024).read_to_end(&mut out).await?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((out, status))
    };
    let (out, status) = tokio::time::timeout(source.timeout, work)
        .await
        .map_err(|_| TokenError::Timeout(source.timeout))?
        .map_err(TokenError::Spawn)?;
    if !status.success() {
        return Err(TokenError::Failed(status));
    }
    parse_output(&out).ok_or(TokenError::Empty)
}

fn parse_output(out: &[u8]) -> Option<(Secret, Option<Duration>)> {
    let text = std::str::from_utf8(out).ok()?.trim();
    if text.starts_with('{') {
        let r: TokenResponse = serde_json::from_str(text).ok()?;
        let token = r.access_token.trim();
        return (!token.is_empty()).then(|| {
            (
                Secret::new(token.as_bytes()),
                r.expires_in.map(Duration::from_secs),
            )
        });
    }
    let token = text.lines().next()?.trim();
    (!token.is_empty() && !token.contains(|c: char| c.is_whitespace() || c.is_control()))
        .then(|| (Secret::new(token.as_bytes()), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for mech in [Mechanism::XOAuth2, Mechanism::OAuthBearer] {
            for user in [&b"alice@new.test"[..], b"we,ird=name"] {
                let m = mech.message(user, b"ya29.token");
                assert_eq!(mech.user(&m).as_deref(), Some(user), "{mech:?}");
            }
        }
        assert_eq!(
            Mechanism::XOAuth2.message(b"u@x", b"t"),
            b"user=u@x\x01auth=Bearer t\x01\x01"
        );
        assert_eq!(
            Mechanism::OAuthBearer.message(b"a,b", b"t"),
            b"n,a=a=2Cb,\x01auth=Bearer t\x01\x01"
        );
        // RFC 7628 §4.1's example, with host and port fields.
        let rfc = b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        assert_eq!(
            Mechanism::OAuthBearer.user(rfc).as_deref(),
            Some(&b"user@example.com"[..])
        );
    }

    #[test]
    fn malformed_messages_name_nobody() {
        for bad in [
            &b""[..],
            b"user=\x01auth=Bearer t\x01\x01",
            b"user=alice\x01\x01",
            b"alice\x01auth=Bearer t\x01\x01",
        ] {
            assert_eq!(Mechanism::XOAuth2.user(bad), None, "{bad:?}");
        }
        for bad in [
            &b"p=tls-unique,a=alice,\x01auth=Bearer t\x01\x01"[..],
            b"n,a=al=ZZice,\x01auth=Bearer t\x01\x01",
            b"n,,\x01auth=Bearer t\x01\x01",
        ] {
            assert_eq!(Mechanism::OAuthBearer.user(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn token_output_forms() {
        let (t, life) = parse_output(b"ya29.abc\n").unwrap();
        assert_eq!((t.expose(), life), (&b"ya29.abc"[..], None));
        let (t, life) =
            parse_output(br#"{"access_token":"tok","token_type":"Bearer","expires_in":3599}"#)
                .unwrap();
        assert_eq!(
            (t.expose(), life),
            (&b"tok"[..], Some(Duration::from_secs(3599)))
        );
        assert!(parse_output(b"").is_none());
        assert!(parse_output(b"two words\n").is_none());
        assert!(parse_output(b"{\"error\":\"invalid_grant\"}").is_none());
    }

    fn source(script: &str, timeout_ms: u64) -> TokenSource {
        TokenSource {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_millis(timeout_ms),
            lifetime: Duration::from_secs(300),
        }
    }

    #[tokio::test]
    async fn commands_are_cached_bounded_and_forgotten() {
        let tokens = Tokens::default();
        let ok = source("echo tok-1", 5000);
        let (t, fresh) = tokens.get(Store::New, b"alice", &ok).await.unwrap();
        assert!(fresh && t.expose() == b"tok-1");
        let (_, fresh) = tokens.get(Store::New, b"alice", &ok).await.unwrap();
        assert!(!fresh, "cached");
        tokens.forget(Store::New, b"alice");
        let (_, fresh) = tokens.get(Store::New, b"alice", &ok).await.unwrap();
        assert!(fresh, "fetched again after forget");
        // A hanging helper is killed at the timeout; a failing one is an error.
        let hang = source("sleep 30", 200);
        let started = Instant::now();
        let err = tokens.get(Store::Old, b"bob", &hang).await.unwrap_err();
        assert!(matches!(err, TokenError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let fail = source("echo nope >&2; exit 3", 5000);
        assert!(matches!(
            tokens.get(Store::Old, b"bob", &fail).await,
            Err(TokenError::Failed(_))
        ));
    }
}
