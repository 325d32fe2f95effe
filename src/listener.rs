//! Accept loops for the imaps (implicit TLS) and imap (STARTTLS) listeners.

use std::net::SocketAddr;

use thiserror::Error;

use crate::config::Config;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
}

/// A running Ferry instance.
pub struct Ferry {
    imaps: Option<SocketAddr>,
    imap: Option<SocketAddr>,
}

impl Ferry {
    /// Binds the configured listeners (port 0 picks a free port) and serves in the background.
    pub async fn start(config: Config) -> Result<Ferry, StartError> {
        let _ = config;
        todo!()
    }
    /// Where the implicit-TLS listener is bound.
    pub fn imaps_addr(&self) -> Option<SocketAddr> {
        self.imaps
    }
    /// Where the plaintext/STARTTLS listener is bound.
    pub fn imap_addr(&self) -> Option<SocketAddr> {
        self.imap
    }
    /// Stops accepting and ends all sessions.
    pub async fn shutdown(self) {}
}
