//! Active-probe helpers: raw byte sequences a censor might send, and a one-shot sender that
//! reports what came back. Replays use [`super::TestConn::init_wire`] /
//! [`super::TestConn::client_hello`] from an earlier, successful connection.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::faketls::{self, HelloShape};

/// A correctly signed ClientHello record for `secret` with timestamp `ts`.
pub fn signed_hello(secret: &[u8; 16], sni: Option<&str>, shape: HelloShape, ts: u32) -> Vec<u8> {
    let mut rec = faketls::client_hello_template(sni, &["h2", "http/1.1"], shape);
    faketls::sign_client_hello(secret, &mut rec, ts);
    rec
}

/// A ClientHello whose digest is wrong (signed, then one byte of the HMAC part flipped): what a
/// prober without the secret produces.
pub fn bad_digest_hello(secret: &[u8; 16], sni: Option<&str>) -> Vec<u8> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let mut rec = signed_hello(secret, sni, HelloShape::Small517, ts);
    rec[20] ^= 0x01;
    rec
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// All bytes received before EOF or the wait ran out.
    pub received: Vec<u8>,
    /// The peer closed (FIN or RST) within the wait.
    pub closed: bool,
}

/// Connects, writes `bytes`, then reads until the peer closes or `wait` passes.
/// With `half_close`, sends FIN after writing (some mask servers answer only then).
pub async fn send_probe(
    addr: SocketAddr,
    bytes: &[u8],
    wait: Duration,
    half_close: bool,
) -> io::Result<ProbeOutcome> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(bytes).await?;
    if half_close {
        s.shutdown().await?;
    }
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => {
                return Ok(ProbeOutcome {
                    received,
                    closed: false,
                })
            }
            Ok(Ok(0)) => {
                return Ok(ProbeOutcome {
                    received,
                    closed: true,
                })
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(ProbeOutcome {
                    received,
                    closed: true,
                })
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_digest_fails_check_and_signed_passes() {
        let s = [3u8; 16];
        let good = signed_hello(&s, Some("example.com"), HelloShape::Large, 77);
        assert_eq!(faketls::check_client_hello(&s, &good), Some(77));
        let bad = bad_digest_hello(&s, Some("example.com"));
        assert_eq!(bad.len(), 517);
        assert_eq!(faketls::check_client_hello(&s, &bad), None);
    }
}
