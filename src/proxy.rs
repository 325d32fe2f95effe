//! The PROXY protocol (HAProxy's v1 text and v2 binary headers, parsed by
//! the `ppp` crate): behind a load balancer, the client's real address comes
//! first on the connection, before any IMAP or TLS byte.
//!
//! The header is peeked and only its own bytes are consumed, so a TLS
//! ClientHello that arrives in the same packet is left for the handshake.

use std::{net::SocketAddr, time::Duration};

use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult, v1, v2};
use thiserror::Error;
use tokio::{io::AsyncReadExt, net::TcpStream};

/// The longest header accepted: v1 is at most 107 bytes; v2 carries TLVs,
/// which HAProxy keeps small.
const MAX_HEADER: usize = 4096;

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("PROXY header from {0}, which is not in listen.trusted_proxies")]
    Untrusted(std::net::IpAddr),
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("not a PROXY protocol header")]
    Malformed,
    #[error("closed before its PROXY header")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyError {
    /// A closed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Untrusted(_) => "untrusted",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::Malformed => "malformed",
            ProxyError::Closed | ProxyError::Io(_) => "closed",
        }
    }
}

/// Where a proxied connection comes from and goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client.
    pub client: SocketAddr,
    /// The address the client connected to (the load balancer's).
    pub local: SocketAddr,
}

/// Reads the PROXY header of a connection from `peer`, which must be one of
/// `trusted`. `Ok(None)`: a LOCAL (v2) or UNKNOWN (v1) header — the proxy's
/// own health check, with no client behind it.
pub async fn read_header(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    trusted: &[IpNet],
    timeout: Duration,
) -> Result<Option<Addresses>, ProxyError> {
    if !trusted.iter().any(|net| net.contains(&peer.ip())) {
        return Err(ProxyError::Untrusted(peer.ip()));
    }
    tokio::time::timeout(timeout, read(tcp))
        .await
        .map_err(|_| ProxyError::Timeout(timeout))?
}

async fn read(tcp: &mut TcpStream) -> Result<Option<Addresses>, ProxyError> {
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let header = HeaderResult::parse(&buf[..n]);
        if header.is_incomplete() {
            if n == buf.len() {
                return Err(ProxyError::Malformed);
            }
            // The rest is on its way; peek would return at once with the
            // same bytes, so wait a moment first.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let (len, addresses) = match header {
            HeaderResult::V1(Ok(h)) => (h.header.len(), from_v1(h.addresses)),
            HeaderResult::V2(Ok(h)) => (
                h.len(),
                match h.command {
                    v2::Command::Local => None,
                    v2::Command::Proxy => from_v2(h.addresses),
                },
            ),
            _ => return Err(ProxyError::Malformed),
        };
        // Consume the header, and only the header.
        let mut header = vec![0u8; len];
        tcp.read_exact(&mut header).await?;
        return Ok(addresses);
    }
}

/// Where a proxied TCP connection comes from and goes to.
fn tcp(
    client: impl Into<std::net::IpAddr>,
    client_port: u16,
    local: impl Into<std::net::IpAddr>,
    local_port: u16,
) -> Option<Addresses> {
    Some(Addresses {
        client: (client.into(), client_port).into(),
        local: (local.into(), local_port).into(),
    })
}

fn from_v1(a: v1::Addresses) -> Option<Addresses> {
    match a {
        v1::Addresses::Tcp4(a) => tcp(
            a.source_address,
            a.source_port,
            a.destination_address,
            a.destination_port,
        ),
        v1::Addresses::Tcp6(a) => tcp(
            a.source_address,
            a.source_port,
            a.destination_address,
            a.destination_port,
        ),
        v1::Addresses::Unknown => None,
    }
}

fn from_v2(a: v2::Addresses) -> Option<Addresses> {
    match a {
        v2::Addresses::IPv4(a) => tcp(
            a.source_address,
            a.source_port,
            a.destination_address,
            a.destination_port,
        ),
        v2::Addresses::IPv6(a) => tcp(
            a.source_address,
            a.source_port,
            a.destination_address,
            a.destination_port,
        ),
        // A proxied UNIX socket has no address a store or a limit can use.
        v2::Addresses::Unix(_) | v2::Addresses::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{io::AsyncWriteExt, net::TcpListener};

    async fn through(
        bytes: &'static [u8],
        trusted: &[IpNet],
    ) -> (Result<Option<Addresses>, ProxyError>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sender = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // In two pieces, as a slow proxy might send it.
            let (a, b) = bytes.split_at(bytes.len().min(10));
            c.write_all(a).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(b).await.unwrap();
            c.shutdown().await.unwrap();
        });
        let (mut tcp, peer) = listener.accept().await.unwrap();
        let r = read_header(&mut tcp, peer, trusted, Duration::from_secs(5)).await;
        let mut rest = Vec::new();
        if r.is_ok() {
            tcp.read_to_end(&mut rest).await.unwrap();
        }
        sender.await.unwrap();
        (r, rest)
    }

    fn loopback() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().unwrap()]
    }

    #[tokio::test]
    async fn v1_gives_the_client_and_leaves_what_follows() {
        let (r, rest) = through(
            b"PROXY TCP4 192.0.2.5 10.0.0.1 51234 993\r\n\x16\x03\x01hello",
            &loopback(),
        )
        .await;
        let a = r.unwrap().unwrap();
        assert_eq!(a.client, "192.0.2.5:51234".parse().unwrap());
        assert_eq!(a.local, "10.0.0.1:993".parse().unwrap());
        assert_eq!(rest, b"\x16\x03\x01hello");
    }

    #[tokio::test]
    async fn v2_proxy_and_local() {
        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "[2001:db8::7]:40000".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:143".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let bytes: &'static [u8] = Box::leak(
            [header, b"a1 NOOP\r\n".to_vec()]
                .concat()
                .into_boxed_slice(),
        );
        let (r, rest) = through(bytes, &loopback()).await;
        assert_eq!(
            r.unwrap().unwrap().client,
            "[2001:db8::7]:40000".parse().unwrap()
        );
        assert_eq!(rest, b"a1 NOOP\r\n");
        let local = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        let bytes: &'static [u8] = Box::leak(local.into_boxed_slice());
        assert_eq!(through(bytes, &loopback()).await.0.unwrap(), None);
    }

    #[tokio::test]
    async fn untrusted_senders_and_garbage_are_refused() {
        let other: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let (r, _) = through(b"PROXY TCP4 192.0.2.5 10.0.0.1 1 2\r\n", &other).await;
        assert!(matches!(r, Err(ProxyError::Untrusted(_))), "{r:?}");
        let (r, _) = through(b"a1 LOGIN alice secret\r\n", &loopback()).await;
        assert!(matches!(r, Err(ProxyError::Malformed)), "{r:?}");
        let (r, _) = through(b"", &loopback()).await;
        assert!(matches!(r, Err(ProxyError::Closed)), "{r:?}");
    }
}
