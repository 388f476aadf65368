//! Masking bad clients (docs/PROTOCOL.md §4.8): relay them, with every byte already read, to
//! `censorship.mask_host:mask_port` (or `mask_unix_sock`), so an active prober sees the real
//! web site; with `mask = false`, read and discard until EOF or a cap, then close.
//!
//! Owns: the mask connection (optional outbound PROXY header, §8.3), the refusal to mask onto
//! our own listener, and the time/byte bounds of a masked session. Must not: parse anything
//! the client sends.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::policy::MaskTarget;

/// Byte cap per direction of a masked session (telemt `mask_relay_max_bytes`).
const MASK_MAX_BYTES: u64 = 5 * 1024 * 1024;
/// Wall-clock cap of a masked session.
const MASK_MAX_DURATION: Duration = Duration::from_secs(300);
/// Connect timeout towards the mask host.
const MASK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a discarded client may keep sending.
const DISCARD_MAX_DURATION: Duration = Duration::from_secs(60);

/// What the masking step needs besides the client socket.
pub(crate) struct MaskJob<'a> {
    pub(crate) target: &'a MaskTarget,
    pub(crate) proxy_protocol: u8,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    /// Our listener addresses (masking onto them would loop).
    pub(crate) own_listeners: &'a [SocketAddr],
}

/// Masks `client`, first forwarding `already_read`.
pub(crate) async fn run(client: TcpStream, already_read: Vec<u8>, job: MaskJob<'_>) {
    match job.target {
        MaskTarget::Discard => discard(client).await,
        MaskTarget::Tcp { host, port } => match connect_tcp(host, *port, job.own_listeners).await {
            Some(upstream) => relay(client, upstream, already_read, &job).await,
            None => discard(client).await,
        },
        MaskTarget::Unix(path) => {
            match tokio::time::timeout(MASK_CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path))
                .await
            {
                Ok(Ok(upstream)) => relay(client, upstream, already_read, &job).await,
                _ => {
                    tracing::debug!(path = %path, "mask unix socket unreachable; discarding");
                    discard(client).await
                }
            }
        }
    }
}

fn is_own(addr: &SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter().any(|l| {
        l.port() == addr.port()
            && (l.ip() == addr.ip()
                || (l.ip().is_unspecified()
                    && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
    })
}

async fn connect_tcp(host: &str, port: u16, own: &[SocketAddr]) -> Option<TcpStream> {
    let lookup = tokio::time::timeout(MASK_CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)));
    let addrs: Vec<SocketAddr> = match lookup.await {
        Ok(Ok(it)) => it.collect(),
        _ => {
            tracing::debug!(host, port, "mask host does not resolve; discarding");
            return None;
        }
    };
    for addr in addrs {
        if is_own(&addr, own) {
            tracing::warn!(%addr, "mask target is this proxy's own listener; refusing to loop");
            continue;
        }
        if let Ok(Ok(s)) =
            tokio::time::timeout(MASK_CONNECT_TIMEOUT, TcpStream::connect(addr)).await
        {
            let _ = s.set_nodelay(true);
            return Some(s);
        }
    }
    tracing::debug!(host, port, "mask host unreachable; discarding");
    None
}

async fn relay<U>(client: TcpStream, upstream: U, already_read: Vec<u8>, job: &MaskJob<'_>)
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let mut client = client;
    let (mut cr, mut cw) = client.split();
    let addrs = Some((job.peer, job.local));
    let header = match job.proxy_protocol {
        1 => proto::ProxyHeader::v1_bytes(addrs),
        2 => proto::ProxyHeader::v2_bytes(addrs),
        _ => Vec::new(),
    };
    let up = async {
        if !header.is_empty() {
            uw.write_all(&header).await?;
        }
        uw.write_all(&already_read).await?;
        let r = tokio::io::copy(&mut (&mut cr).take(MASK_MAX_BYTES), &mut uw).await;
        let _ = uw.shutdown().await;
        r
    };
    let down = async {
        let r = tokio::io::copy(&mut (&mut ur).take(MASK_MAX_BYTES), &mut cw).await;
        let _ = cw.shutdown().await;
        r
    };
    let _ = tokio::time::timeout(MASK_MAX_DURATION, async { tokio::join!(up, down) }).await;
}

/// Reads and drops client bytes until EOF, the byte cap or the time cap — never an
/// immediate reset, which would betray a proxy.
async fn discard(mut client: TcpStream) {
    let mut sink = tokio::io::sink();
    let _ = tokio::time::timeout(
        DISCARD_MAX_DURATION,
        tokio::io::copy(&mut (&mut client).take(MASK_MAX_BYTES), &mut sink),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listener_detection() {
        let own: Vec<SocketAddr> = vec![
            "0.0.0.0:443".parse().unwrap(),
            "[::1]:8443".parse().unwrap(),
        ];
        assert!(is_own(&"127.0.0.1:443".parse().unwrap(), &own));
        assert!(is_own(&"[::1]:8443".parse().unwrap(), &own));
        assert!(!is_own(&"93.184.216.34:443".parse().unwrap(), &own));
        assert!(!is_own(&"127.0.0.1:444".parse().unwrap(), &own));
    }
}
