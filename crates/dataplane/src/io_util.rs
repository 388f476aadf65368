//! Readiness-based socket I/O on `&TcpStream`.
//!
//! Why: both relay directions share one `TcpStream` by reference (no split, no `Arc`), and a
//! direction only needs its buffer once the socket is readable, so idle sessions hold no relay
//! buffers at all. Must not: allocate.

use std::io;

use tokio::net::TcpStream;

/// Waits until `s` is readable, then reads into `buf` (0 = end of stream).
pub(crate) async fn read_some(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `buf`.
pub(crate) async fn write_all(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Half-closes the write side (FIN), keeping the read side open.
pub(crate) fn shutdown_write(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write);
}
