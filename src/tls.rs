//! TLS: the server side toward clients (certificate swappable at run time) and
//! the client side toward the stores. PEM is read with rustls-pki-types.

use std::{fmt, path::Path, sync::Arc};

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use thiserror::Error;
use tokio_rustls::rustls::{
    self, ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    /// A file of the `[tls]` table, named by its key (`tls.cert`).
    #[error("{key} ({path}): {reason}")]
    Server {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("tls.cert and tls.key do not belong together: {0}")]
    KeyMismatch(rustls::Error),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs the process-wide crypto provider (aws-lc-rs) once.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn pem_err(path: &Path, e: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Loads a PEM chain (`tls.cert`) and key (`tls.key`) and checks that they
/// belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    install_provider();
    let server_err = |name: &'static str, path: &Path, e: &dyn fmt::Display| TlsError::Server {
        key: name,
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let cert_err = |e: &dyn fmt::Display| server_err("tls.cert", cert, e);
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(&e))?;
    if chain.is_empty() {
        return Err(cert_err(&"no certificate found"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| server_err("tls.key", key, &e))?;
    // Invariant: install_provider() ran above.
    let provider = CryptoProvider::get_default().expect("crypto provider installed");
    CertifiedKey::from_der(chain, key_der, provider).map_err(TlsError::KeyMismatch)
}

/// The server certificate; `reload` swaps it for new handshakes.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertResolver")
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertResolver {
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        self.current.store(Arc::new(load_certified_key(cert, key)?));
        Ok(())
    }
}

/// A server config whose certificate can be reloaded through the resolver.
pub fn server_config(
    cert: &Path,
    key: &Path,
) -> Result<(Arc<ServerConfig>, Arc<CertResolver>), TlsError> {
    let resolver = Arc::new(CertResolver {
        current: ArcSwap::from_pointee(load_certified_key(cert, key)?),
    });
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"imap".to_vec()];
    Ok((Arc::new(config), resolver))
}

/// A client config for one store: its CA file, or the Mozilla roots.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    install_provider();
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| pem_err(path, e))? {
                roots.add(cert.map_err(|e| pem_err(path, e))?)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Why a client's TLS handshake did not complete.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// The connection closed (or was reset) before its first byte: a
    /// balancer's or monitor's TCP probe, not a failed handshake.
    #[error("closed before its first byte")]
    Closed,
    #[error("no handshake within {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Failed(std::io::Error),
}

/// Completes a server-side handshake on `tcp` within `limit`.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    limit: std::time::Duration,
) -> Result<MaybeTls, HandshakeError> {
    let deadline = tokio::time::Instant::now() + limit;
    // Whether the peer sends anything at all: only then can a handshake fail.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(0) | Err(_)) => return Err(HandshakeError::Closed),
        Ok(Ok(_)) => {}
        Err(_) => return Err(HandshakeError::Timeout(limit)),
    }
    // Boxed: a handshake's state is large and needed once per session.
    let handshake = Box::pin(acceptor.accept(tcp));
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(tls)) => Ok(MaybeTls::Tls(Box::new(tls.into()))),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        Err(_) => Err(HandshakeError::Timeout(limit)),
    }
}

/// A TCP connection, before or after its TLS handshake.
pub enum MaybeTls {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for MaybeTls {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for MaybeTls {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
