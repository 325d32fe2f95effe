//! Who Ferry is at each store: the store-side user name (a template, with a
//! map of exceptions) and how Ferry proves it — the client's own password, a
//! master user logging in on the user's behalf, or an OAuth2 token Ferry
//! obtains.
//!
//! `[backends.old.login]` and `[backends.new.login]` configure it; the
//! session turns a client's [`Credentials`] into one [`StoreAuth`] per store
//! with [`StoreLogin::auth_for`], and `backend::connect` performs it.

use std::{collections::HashMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;

use crate::{
    config::{ConfigError, invalid},
    oauth::{Mechanism, TokenSource},
    session::Credentials,
};

/// How Ferry logs in to one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginMode {
    /// The client's own credentials (under the mapped name).
    #[default]
    Client,
    /// A master user, on the user's behalf: the client's password never
    /// reaches this store.
    Master,
    /// XOAUTH2/OAUTHBEARER with a token from `token_command`.
    #[serde(rename = "oauth2")]
    OAuth2,
}

/// How a master user names the user it acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MasterStyle {
    /// SASL PLAIN with the user as authorization identity (RFC 4616).
    #[default]
    Authzid,
    /// `LOGIN "user<separator>master" password` (Dovecot's
    /// `auth_master_user_separator`).
    Separator,
}

/// `[backends.*.login]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreLogin {
    #[serde(default)]
    pub mode: LoginMode,
    /// The store-side user name: `{user}` (as typed), `{local}` (before the
    /// last `@`), `{domain}` (after it).
    #[serde(default = "default_template")]
    pub user: String,
    /// Exceptions to `user`: `"client name" = "store name"` lines.
    pub user_map_file: Option<PathBuf>,
    pub master_user: Option<String>,
    /// The master user's password: the file's first line.
    pub master_password_file: Option<PathBuf>,
    #[serde(default)]
    pub master_style: MasterStyle,
    #[serde(default = "default_separator")]
    pub master_separator: String,
    /// argv of a helper that prints a token for `{user}` (the store-side
    /// name): the token alone, or an OAuth2 token response with `expires_in`.
    pub token_command: Option<Vec<String>>,
    #[serde(default)]
    pub mechanism: Mechanism,
    /// A token command that has not answered by then fails the login.
    #[serde(default = "default_token_timeout")]
    pub token_timeout_secs: u64,
    /// How long a token without `expires_in` is used.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
    /// Read from `user_map_file` at load; client names lower-cased.
    #[serde(skip)]
    pub user_map: Arc<HashMap<String, String>>,
    /// Read from `master_password_file` at load.
    #[serde(skip)]
    pub master_password: Option<Secret>,
}

fn default_template() -> String {
    "{user}".into()
}

fn default_separator() -> String {
    "*".into()
}

fn default_token_timeout() -> u64 {
    10
}

fn default_token_lifetime() -> u64 {
    300
}

impl Default for StoreLogin {
    fn default() -> Self {
        Self {
            mode: LoginMode::Client,
            user: default_template(),
            user_map_file: None,
            master_user: None,
            master_password_file: None,
            master_style: MasterStyle::default(),
            master_separator: default_separator(),
            token_command: None,
            mechanism: Mechanism::default(),
            token_timeout_secs: default_token_timeout(),
            token_lifetime_secs: default_token_lifetime(),
            user_map: Arc::default(),
            master_password: None,
        }
    }
}

/// Bytes that never print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn new(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What Ferry sends one store to log in.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreAuth {
    /// `LOGIN user password`.
    Login { user: Vec<u8>, password: Secret },
    /// `AUTHENTICATE PLAIN` with `user` as authorization identity and the
    /// master user's name and password (RFC 4616).
    Plain {
        user: Vec<u8>,
        master: Vec<u8>,
        password: Secret,
    },
    /// `AUTHENTICATE mechanism` with a token the driver obtains from `source`.
    Token {
        user: Vec<u8>,
        mechanism: Mechanism,
        source: TokenSource,
    },
    /// `AUTHENTICATE mechanism` with the client's own message, unchanged.
    Client {
        user: Vec<u8>,
        mechanism: Mechanism,
        message: Secret,
    },
    /// Nothing to log in with: the store takes the client's password, and
    /// the client signed in with a token for the other store (the
    /// configuration check refuses this; it fails as unavailable).
    Unusable,
}

impl fmt::Debug for StoreAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreAuth::Login { user, .. } => f
                .debug_struct("Login")
                .field("user", &String::from_utf8_lossy(user))
                .finish_non_exhaustive(),
            StoreAuth::Plain { user, master, .. } => f
                .debug_struct("Plain")
                .field("user", &String::from_utf8_lossy(user))
                .field("master", &String::from_utf8_lossy(master))
                .finish_non_exhaustive(),
            StoreAuth::Token {
                user,
                mechanism,
                source,
            } => f
                .debug_struct("Token")
                .field("user", &String::from_utf8_lossy(user))
                .field("mechanism", mechanism)
                .field("command", &source.command)
                .finish(),
            StoreAuth::Client {
                user, mechanism, ..
            } => f
                .debug_struct("Client")
                .field("user", &String::from_utf8_lossy(user))
                .field("mechanism", mechanism)
                .finish_non_exhaustive(),
            StoreAuth::Unusable => f.write_str("Unusable"),
        }
    }
}

impl StoreLogin {
    /// How Ferry logs in to this store for `client`; `None` when it cannot
    /// (the store takes the client's password, and the client signed in
    /// with a token meant for the other store).
    pub fn auth_for(&self, client: &Credentials) -> Option<StoreAuth> {
        let user = self.store_user(&client.user);
        Some(match (self.mode, self.master_style) {
            (LoginMode::Client, _) if client.bearer.is_some() => return None,
            (LoginMode::Client, _) => StoreAuth::Login {
                user,
                password: Secret::new(&client.password),
            },
            (LoginMode::OAuth2, _) => {
                let name = String::from_utf8_lossy(&user).into_owned();
                let command = self.token_command.iter().flatten();
                StoreAuth::Token {
                    source: TokenSource {
                        command: command.map(|arg| arg.replace("{user}", &name)).collect(),
                        timeout: Duration::from_secs(self.token_timeout_secs),
                        lifetime: Duration::from_secs(self.token_lifetime_secs),
                    },
                    user,
                    mechanism: self.mechanism,
                }
            }
            (LoginMode::Master, style) => {
                // Validated at load: master mode has both.
                let master = self.master_user.clone().unwrap_or_default().into_bytes();
                let password = self
                    .master_password
                    .clone()
                    .unwrap_or_else(|| Secret::new(b""));
                match style {
                    MasterStyle::Authzid => StoreAuth::Plain {
                        user,
                        master,
                        password,
                    },
                    MasterStyle::Separator => {
                        let mut login = user;
                        login.extend_from_slice(self.master_separator.as_bytes());
                        login.extend_from_slice(&master);
                        StoreAuth::Login {
                            user: login,
                            password,
                        }
                    }
                }
            }
        })
    }

    /// The store-side name: an exception from the map, else the template.
    /// With the default template the client's bytes pass unchanged.
    pub fn store_user(&self, client: &[u8]) -> Vec<u8> {
        let typed = String::from_utf8_lossy(client);
        if let Some(mapped) = self.user_map.get(&typed.to_lowercase()) {
            return mapped.clone().into_bytes();
        }
        if self.user == "{user}" {
            return client.to_vec();
        }
        let (local, domain) = typed.rsplit_once('@').unwrap_or((&typed, ""));
        expand(&self.user, |name| match name {
            "user" => &typed,
            "local" => local,
            _ => domain,
        })
        .into_bytes()
    }

    /// Checks the table; `table` is its key (`backends.old.login`), for
    /// the keys errors name.
    pub fn validate(&self, table: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{table}.{k}");
        check_template(&self.user).map_err(|reason| invalid(key("user"), reason))?;
        let master_keys = [
            ("master_user", self.master_user.is_some()),
            ("master_password_file", self.master_password_file.is_some()),
        ];
        let oauth_keys = [("token_command", self.token_command.is_some())];
        let unused = |keys: &[(&str, bool)], mode: &str| match keys.iter().find(|(_, set)| *set) {
            Some((k, _)) => Err(invalid(
                key(k),
                format!("is only used with mode = \"{mode}\""),
            )),
            None => Ok(()),
        };
        if self.mode != LoginMode::Master {
            unused(&master_keys, "master")?;
        }
        if self.mode != LoginMode::OAuth2 {
            unused(&oauth_keys, "oauth2")?;
        }
        match self.mode {
            LoginMode::Client => {}
            LoginMode::OAuth2 => {
                if self
                    .token_command
                    .as_ref()
                    .is_none_or(|c| c.is_empty() || c[0].is_empty())
                {
                    return Err(invalid(
                        key("token_command"),
                        "is required with mode = \"oauth2\": a program and its arguments, e.g. [\"/usr/local/libexec/ferry-token\", \"{user}\"]",
                    ));
                }
                if self.token_timeout_secs == 0 {
                    return Err(invalid(key("token_timeout_secs"), "must be at least 1"));
                }
            }
            LoginMode::Master => {
                if let Some((k, _)) = master_keys.iter().find(|(_, set)| !*set) {
                    return Err(invalid(key(k), "is required with mode = \"master\""));
                }
                if self.master_user.as_deref().is_some_and(str::is_empty) {
                    return Err(invalid(key("master_user"), "must not be empty"));
                }
                if self.master_style == MasterStyle::Separator && self.master_separator.is_empty() {
                    return Err(invalid(key("master_separator"), "must not be empty"));
                }
            }
        }
        Ok(())
    }

    /// Reads the map and the master password (paths already anchored).
    pub fn read_files(&mut self, table: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{table}.{k}");
        if let Some(path) = &self.user_map_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(key("user_map_file"), format!("{}: {e}", path.display())))?;
            self.user_map = Arc::new(parse_user_map(&text).map_err(|reason| {
                invalid(
                    key("user_map_file"),
                    format!("{}: {reason}", path.display()),
                )
            })?);
        }
        if let Some(path) = &self.master_password_file {
            let text = std::fs::read(path).map_err(|e| {
                invalid(
                    key("master_password_file"),
                    format!("{}: {e}", path.display()),
                )
            })?;
            let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return Err(invalid(
                    key("master_password_file"),
                    format!("{}: the first line is empty", path.display()),
                ));
            }
            self.master_password = Some(Secret::new(line));
        }
        Ok(())
    }
}

/// `"client name" = "store name"` lines (TOML), client names lower-cased.
fn parse_user_map(text: &str) -> Result<HashMap<String, String>, String> {
    let map: HashMap<String, String> = toml::from_str(text).map_err(|e| e.to_string())?;
    Ok(map
        .into_iter()
        .map(|(client, store)| (client.to_lowercase(), store))
        .collect())
}

/// Replaces each `{name}` in `template` with `value(name)`.
fn expand<'a>(template: &str, value: impl Fn(&str) -> &'a str) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        // Validated: every `{` starts a known placeholder that is closed.
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        out.push_str(value(&rest[open + 1..close]));
        rest = rest.get(close + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("{template:?}: a lone '}}'"));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("{template:?}: '{{' is never closed"));
        };
        let name = &rest[open + 1..open + close];
        if !matches!(name, "user" | "local" | "domain") {
            return Err(format!(
                "{template:?}: unknown placeholder {{{name}}}; use {{user}}, {{local}} or {{domain}}"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    if template.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.as_bytes().to_vec(),
            password: password.as_bytes().to_vec(),
            bearer: None,
        }
    }

    fn login(toml_text: &str) -> StoreLogin {
        let l: StoreLogin = toml::from_str(toml_text).unwrap();
        l.validate("backends.new.login").unwrap();
        l
    }

    #[test]
    fn templates_name_the_store_side_user() {
        let l = login(r#"user = "{local}@g.ecc.u-tokyo.ac.jp""#);
        assert_eq!(
            l.store_user(b"kt1234@mail.ecc.u-tokyo.ac.jp"),
            b"kt1234@g.ecc.u-tokyo.ac.jp"
        );
        // No domain typed: {local} is the whole name.
        assert_eq!(l.store_user(b"kt1234"), b"kt1234@g.ecc.u-tokyo.ac.jp");
        let l = login(r#"user = "{domain}\\{local}""#);
        assert_eq!(l.store_user(b"bob@corp.example"), b"corp.example\\bob");
        // The default passes any bytes, even invalid UTF-8, unchanged.
        let l = login("");
        assert_eq!(l.store_user(b"J\xf6rg"), b"J\xf6rg");
    }

    #[test]
    fn the_map_takes_exceptions_case_insensitively() {
        let mut l = login(r#"user = "{local}@new.test""#);
        l.user_map =
            Arc::new(parse_user_map("\"Carol@Old.Test\" = \"c.jones@new.test\"\n").unwrap());
        assert_eq!(l.store_user(b"carol@old.test"), b"c.jones@new.test");
        assert_eq!(l.store_user(b"dave@old.test"), b"dave@new.test");
    }

    #[test]
    fn master_styles() {
        let mut l = login(
            r#"mode = "master"
               user = "{local}@new.test"
               master_user = "ferry"
               master_password_file = "/x""#,
        );
        l.master_password = Some(Secret::new(b"m-secret"));
        let alice = creds("alice", "client-pw");
        assert_eq!(
            l.auth_for(&alice),
            Some(StoreAuth::Plain {
                user: b"alice@new.test".to_vec(),
                master: b"ferry".to_vec(),
                password: Secret::new(b"m-secret"),
            })
        );
        l.master_style = MasterStyle::Separator;
        assert_eq!(
            l.auth_for(&alice),
            Some(StoreAuth::Login {
                user: b"alice@new.test*ferry".to_vec(),
                password: Secret::new(b"m-secret"),
            })
        );
        // The client's own password never appears, nor the master's in Debug.
        let shown = format!("{:?}", l.auth_for(&alice));
        assert!(
            !shown.contains("client-pw") && !shown.contains("m-secret"),
            "{shown}"
        );
        let client = login("").auth_for(&alice);
        assert!(!format!("{client:?}").contains("client-pw"));
    }

    #[test]
    fn oauth2_tokens_are_asked_for_under_the_store_side_name() {
        let l = login(
            r#"mode = "oauth2"
               user = "{local}@g.example.edu"
               token_command = ["/usr/local/libexec/ferry-token", "--user", "{user}"]
               mechanism = "OAUTHBEARER""#,
        );
        let Some(StoreAuth::Token {
            user,
            mechanism,
            source,
        }) = l.auth_for(&creds("kt1@mail.example.edu", "pw"))
        else {
            panic!("not a token login");
        };
        assert_eq!(user, b"kt1@g.example.edu");
        assert_eq!(mechanism, Mechanism::OAuthBearer);
        assert_eq!(
            source.command,
            [
                "/usr/local/libexec/ferry-token",
                "--user",
                "kt1@g.example.edu"
            ]
        );
        // A client mode store has nothing to offer a client that signed in
        // with a token for the other store.
        let mut bearer = creds("alice", "user=alice\x01auth=Bearer t\x01\x01");
        bearer.bearer = Some(Mechanism::XOAuth2);
        assert_eq!(login("").auth_for(&bearer), None);
    }

    #[test]
    fn validation_names_the_key() {
        let err = |text: &str| {
            let l: StoreLogin = toml::from_str(text).unwrap();
            l.validate("backends.old.login").unwrap_err().to_string()
        };
        assert_eq!(
            err(r#"mode = "master""#),
            "backends.old.login.master_user: is required with mode = \"master\""
        );
        assert!(err(r#"master_user = "x""#).starts_with("backends.old.login.master_user: is only"));
        assert!(err(r#"user = "{name}@x""#).contains("unknown placeholder {name}"));
        assert!(err(r#"user = "{local""#).contains("never closed"));
        assert!(err(r#"user = "a}""#).contains("lone"));
        assert_eq!(
            err(r#"mode = "oauth2""#),
            "backends.old.login.token_command: is required with mode = \"oauth2\": a program and its arguments, e.g. [\"/usr/local/libexec/ferry-token\", \"{user}\"]"
        );
        assert!(err(r#"token_command = ["x"]"#).contains("only used with mode = \"oauth2\""));
    }
}
