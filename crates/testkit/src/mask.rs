//! `MaskServer`: a local stand-in for the "real site" behind a proxy's masking (docs/PROTOCOL.md
//! §4.8). It records every byte received per connection and answers with its own recognisable
//! bytes, so a test can check that a prober's bytes reached it unchanged and that the prober saw
//! its reply.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Marker contained in every HTTP reply (body and `Server` header).
pub const MASK_MARKER: &str = "testkit-mask-server";

/// The HTTP reply sent in [`MaskReply::Http`] mode.
pub fn http_reply() -> Vec<u8> {
    let body = format!("<html><body>{MASK_MARKER}</body></html>\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\nServer: {MASK_MARKER}\r\nContent-Type: text/html\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A TLS `handshake_failure` alert (what a real HTTPS site answers to a hello it dislikes).
pub const TLS_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// How the mask server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskReply {
    /// After the first bytes arrive: [`http_reply`], then keep reading until EOF.
    Http,
    /// After the first bytes arrive: [`TLS_ALERT`], then keep reading until EOF.
    TlsAlert,
    /// These exact bytes after the first read.
    Custom(Vec<u8>),
    /// Never answer; just record.
    Silent,
}

impl MaskReply {
    fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Self::Http => Some(http_reply()),
            Self::TlsAlert => Some(TLS_ALERT.to_vec()),
            Self::Custom(b) => Some(b.clone()),
            Self::Silent => None,
        }
    }
}

/// One accepted connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskConn {
    /// Peer address (the proxy's outgoing socket).
    pub peer: Option<SocketAddr>,
    /// Every byte received, in order.
    pub received: Vec<u8>,
    /// Bytes sent back.
    pub replied: usize,
    /// The peer closed (EOF/reset) and the server closed too.
    pub closed: bool,
}

#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<MaskConn>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running mask server; dropping it stops everything.
pub struct MaskServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MaskServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MaskServer {
    /// Binds 127.0.0.1:0 and starts serving.
    pub async fn start(reply: MaskReply) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let sh = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let idx = {
                    let mut conns = lock(&sh.conns);
                    conns.push(MaskConn {
                        peer: Some(peer),
                        ..MaskConn::default()
                    });
                    conns.len() - 1
                };
                let sh2 = Arc::clone(&sh);
                let reply = reply.bytes();
                let t = tokio::spawn(async move {
                    let _ = serve(stream, idx, reply, &sh2).await;
                    if let Some(c) = lock(&sh2.conns).get_mut(idx) {
                        c.closed = true;
                    }
                });
                lock(&sh.tasks).push(t.abort_handle());
            }
        });
        lock(&shared.tasks).push(accept.abort_handle());
        Ok(Self { addr, shared })
    }

    /// Bound address (use as `censorship.mask_host`/`mask_port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Snapshot of all connections so far, in accept order.
    pub fn connections(&self) -> Vec<MaskConn> {
        lock(&self.shared.conns).clone()
    }

    /// Polls until `cond(&connections)` holds or `timeout`; returns the last snapshot and
    /// whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        cond: impl Fn(&[MaskConn]) -> bool,
    ) -> (bool, Vec<MaskConn>) {
        let mut snap = Vec::new();
        let held = crate::poll_until(timeout, Duration::from_millis(5), || {
            snap = self.connections();
            cond(&snap)
        })
        .await;
        (held, snap)
    }

    /// Waits until connection `idx` has received at least `n` bytes; returns its bytes.
    pub async fn wait_received(&self, idx: usize, n: usize, timeout: Duration) -> Option<Vec<u8>> {
        let (ok, snap) = self
            .wait_until(timeout, |c| {
                c.get(idx).is_some_and(|c| c.received.len() >= n)
            })
            .await;
        if ok {
            snap.get(idx).map(|c| c.received.clone())
        } else {
            None
        }
    }
}

impl Drop for MaskServer {
    fn drop(&mut self) {
        for t in lock(&self.shared.tasks).drain(..) {
            t.abort();
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    idx: usize,
    mut reply: Option<Vec<u8>>,
    sh: &Shared,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        };
        if let Some(c) = lock(&sh.conns).get_mut(idx) {
            c.received.extend_from_slice(&buf[..n]);
        }
        if let Some(r) = reply.take() {
            stream.write_all(&r).await?;
            if let Some(c) = lock(&sh.conns).get_mut(idx) {
                c.replied += r.len();
            }
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_bytes_and_replies() {
        let m = MaskServer::start(MaskReply::Http).await.unwrap();
        let out = crate::client::probe::send_probe(
            m.addr(),
            b"GET / HTTP/1.1\r\n\r\n",
            Duration::from_secs(5),
            true,
        )
        .await
        .unwrap();
        assert!(out.closed);
        assert_eq!(out.received, http_reply());
        let (ok, conns) = m
            .wait_until(Duration::from_secs(5), |c| c.len() == 1 && c[0].closed)
            .await;
        assert!(ok, "{conns:?}");
        assert_eq!(conns[0].received, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(conns[0].replied, http_reply().len());

        let alert = MaskServer::start(MaskReply::TlsAlert).await.unwrap();
        let out = crate::client::probe::send_probe(
            alert.addr(),
            &[0x16, 3, 1],
            Duration::from_secs(5),
            true,
        )
        .await
        .unwrap();
        assert_eq!(out.received, TLS_ALERT);
        assert_eq!(
            alert.wait_received(0, 3, Duration::from_secs(5)).await,
            Some(vec![0x16, 3, 1])
        );
    }
}
