//! The outbound byte stream of one session: what an upstream connect returns, whichever route
//! the session takes (the direct route's DC link today; a middle-proxy link uses the same
//! type). Chosen once per session: a plain TCP socket (direct and SOCKS upstreams: after the
//! SOCKS reply the socket is the tunnel) or a boxed encrypting stream (Shadowsocks).
//!
//! Owns: the two shapes and the poll-based read / write traits relay loops are generic over.
//! Must not: know about routes, obfuscated2 or framing (the relay modules do), or allocate.
//!
//! Why two shapes: the TCP shape keeps readiness-based I/O on `&TcpStream` (no split, no lock,
//! lazy buffers); only Shadowsocks sessions pay for a boxed `AsyncRead + AsyncWrite` split in
//! two halves. Relay loops are generic over [`OutboundRead`] / [`OutboundWrite`], so each shape
//! is monomorphised and the per-chunk path has no extra indirection.
//!
//! ```text
//!  upstream::connect ─► OutboundStream ─┬─ Tcp(TcpStream)      ─► &TcpStream as read + write
//!                                       └─ Tunnel(Box<dyn ..>) ─► split: ReadHalf / WriteHalf
//! ```

use std::future::poll_fn;
use std::io::{self, IoSliceMut};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::io_util;

/// A boxed encrypted tunnel (Shadowsocks).
pub(crate) trait Tunnel: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Tunnel for T {}

/// An open outbound stream (to a DC or a middle proxy), before any route-specific bytes.
pub(crate) enum OutboundStream {
    Tcp(TcpStream),
    Tunnel(Box<dyn Tunnel>),
}

impl OutboundStream {
    /// Writes all of `buf`.
    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => io_util::write_all(s, buf).await,
            Self::Tunnel(t) => {
                t.write_all(buf).await?;
                t.flush().await
            }
        }
    }
}

/// Read side of an outbound stream as a relay loop sees it (poll-based, so generic relay futures
/// stay `Send` without higher-ranked trait bounds).
pub(crate) trait OutboundRead: Send {
    /// Ready once a read may make progress (lets the caller allocate lazily).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads some bytes (0 = end of stream); `WouldBlock` means "wait for ready again".
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Reads into `bufs` in order, like [`Self::poll_read`]. A socket fills them with one
    /// syscall; the default fills only the first non-empty one.
    fn poll_read_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        match bufs.iter_mut().find(|b| !b.is_empty()) {
            Some(b) => self.poll_read(cx, b),
            None => Poll::Ready(Ok(0)),
        }
    }
}

/// Write side of an outbound stream as a relay loop sees it.
pub(crate) trait OutboundWrite: Send {
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Half-close (FIN after pending data).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl OutboundRead for &TcpStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn poll_read(&mut self, _cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(self.try_read(buf))
    }
    fn poll_read_vectored(
        &mut self,
        _cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.try_read_vectored(bufs))
    }
}

impl OutboundWrite for &TcpStream {
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_write_ready(cx))?;
            match self.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io_util::shutdown_write(self);
        Poll::Ready(Ok(()))
    }
}

impl OutboundRead for ReadHalf<Box<dyn Tunnel>> {
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        ready!(AsyncRead::poll_read(Pin::new(self), cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    }
}

impl OutboundWrite for WriteHalf<Box<dyn Tunnel>> {
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(self), cx, buf)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(self), cx)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(self), cx)
    }
}

/// Waits until `r` may be read.
pub(crate) async fn ready<R: OutboundRead>(r: &mut R) -> io::Result<()> {
    poll_fn(|cx| r.poll_ready(cx)).await
}

/// Writes all of `buf` and flushes.
pub(crate) async fn write_all<W: OutboundWrite>(w: &mut W, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = poll_fn(|cx| w.poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    poll_fn(|cx| w.poll_flush(cx)).await
}

/// Half-closes the write side.
pub(crate) async fn shutdown<W: OutboundWrite>(w: &mut W) {
    let _ = poll_fn(|cx| w.poll_shutdown(cx)).await;
}
