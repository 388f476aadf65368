//! SOCKS4 / SOCKS5 CONNECT over an already connected TCP socket (docs/PROTOCOL.md §9.1–§9.2),
//! using the `proto::socks` codecs. Reads exactly the reply bytes, so nothing that follows
//! the reply is consumed.

use std::net::SocketAddr;

use proto::socks::{self, BoundAddr, SocksError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::UpstreamError;

async fn send(s: &mut TcpStream, buf: &[u8]) -> Result<(), UpstreamError> {
    s.write_all(buf).await.map_err(UpstreamError::ProxyIo)
}

async fn recv(s: &mut TcpStream, buf: &mut [u8]) -> Result<(), UpstreamError> {
    s.read_exact(buf).await.map(|_| ()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            UpstreamError::Malformed("proxy closed the connection mid-reply")
        } else {
            UpstreamError::ProxyIo(e)
        }
    })
}

/// SOCKS4 CONNECT; returns the reply's bound address.
pub(super) async fn socks4(
    s: &mut TcpStream,
    target: SocketAddr,
    user_id: &[u8],
) -> Result<BoundAddr, UpstreamError> {
    let SocketAddr::V4(v4) = target else {
        return Err(UpstreamError::Socks4Ipv6(target));
    };
    send(s, &socks::socks4_connect(v4, user_id)).await?;
    let mut reply = [0u8; 8];
    recv(s, &mut reply).await?;
    match socks::parse_socks4_reply(&reply)? {
        Some((bound, _)) => Ok(BoundAddr::Ip(SocketAddr::V4(bound))),
        None => Err(UpstreamError::Malformed("short SOCKS4 reply")),
    }
}

/// SOCKS5 (RFC 1928) with optional username/password (RFC 1929); returns BND.ADDR/PORT.
pub(super) async fn socks5(
    s: &mut TcpStream,
    target: SocketAddr,
    creds: Option<(&[u8], &[u8])>,
) -> Result<BoundAddr, UpstreamError> {
    let with_auth = creds.is_some();
    send(s, &socks::socks5_greeting(with_auth)).await?;
    let mut m = [0u8; 2];
    recv(s, &mut m).await?;
    let method = match socks::parse_socks5_method(&m, with_auth)? {
        Some((method, _)) => method,
        None => return Err(UpstreamError::Malformed("short SOCKS5 method reply")),
    };
    if method == socks::Socks5Method::UserPass {
        let (user, pass) = creds.unwrap_or((b"", b""));
        send(s, &socks::socks5_auth(user, pass)?).await?;
        let mut a = [0u8; 2];
        recv(s, &mut a).await?;
        socks::parse_socks5_auth_reply(&a)?;
    }
    send(s, &socks::socks5_connect(target)).await?;
    // VER REP RSV ATYP, then the address by ATYP, then the port.
    let mut reply = vec![0u8; 4];
    recv(s, &mut reply).await?;
    if reply[0] != 0x05 {
        return Err(SocksError::BadVersion(reply[0]).into());
    }
    if reply[1] != 0x00 {
        return Err(SocksError::ConnectFailed(reply[1]).into());
    }
    let rest = match reply[3] {
        0x01 => 4 + 2,
        0x04 => 16 + 2,
        0x03 => {
            let mut n = [0u8; 1];
            recv(s, &mut n).await?;
            reply.push(n[0]);
            usize::from(n[0]) + 2
        }
        t => return Err(SocksError::BadAddressType(t).into()),
    };
    let at = reply.len();
    reply.resize(at + rest, 0);
    recv(s, &mut reply[at..]).await?;
    match socks::parse_socks5_reply(&reply)? {
        Some((bound, used)) if used == reply.len() => Ok(bound),
        _ => Err(UpstreamError::Malformed("inconsistent SOCKS5 reply")),
    }
}
