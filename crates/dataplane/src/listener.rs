//! Client listeners: binding `server.port` on every `[[server.listeners]]` address (IPv4 and
//! IPv6, `reuse_allow` → SO_REUSEPORT) and the accept loop.
//!
//! Owns: socket options, the `server.max_connections` semaphore with
//! `accept_permit_timeout_ms`, and an accept loop that never dies on accept errors (fd
//! exhaustion is logged at most once per interval and backed off briefly). Must not: read
//! client bytes (sessions do).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Inner;

/// Binds one listener.
pub(crate) fn bind(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `0.0.0.0` and `::` listeners coexist on one port.
        socket.set_only_v6(true)?;
    }
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_codes::EMFILE | libc_codes::ENFILE | libc_codes::ENOBUFS | libc_codes::ENOMEM)
    )
}

/// Linux errno values (stable ABI) for resource exhaustion on accept.
mod libc_codes {
    pub(super) const ENOMEM: i32 = 12;
    pub(super) const ENFILE: i32 = 23;
    pub(super) const EMFILE: i32 = 24;
    pub(super) const ENOBUFS: i32 = 105;
}

const EXHAUSTION_BACKOFF: Duration = Duration::from_millis(100);
const EXHAUSTION_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts until shutdown; each connection runs in its own task.
pub(crate) async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    permits: Option<Arc<Semaphore>>,
    permit_timeout: Duration,
) {
    let mut cut = inner.stop_accepting.subscribe();
    let mut last_log: Option<Instant> = None;
    let mut suppressed = 0u64;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = cut.wait_for(|c| *c) => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                if is_resource_exhaustion(&e) {
                    let now = Instant::now();
                    if last_log.is_none_or(|t| now.duration_since(t) >= EXHAUSTION_LOG_EVERY) {
                        tracing::warn!(error = %e, suppressed, "accept failed: out of resources; backing off");
                        last_log = Some(now);
                        suppressed = 0;
                    } else {
                        suppressed += 1;
                    }
                    tokio::time::sleep(EXHAUSTION_BACKOFF).await;
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                continue;
            }
        };
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let permit = match &permits {
            None => None,
            Some(sem) => match Arc::clone(sem).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    match tokio::time::timeout(permit_timeout, Arc::clone(sem).acquire_owned())
                        .await
                    {
                        Ok(Ok(p)) => Some(p),
                        _ => {
                            tracing::debug!(%peer, "max_connections reached; connection dropped");
                            inner.stats.inc_connections_total();
                            inner.stats.inc_connections_bad_class(
                                proto::RejectReason::MaxConnections.label(),
                            );
                            continue;
                        }
                    }
                }
            },
        };
        let inner2 = Arc::clone(&inner);
        tokio::spawn(async move {
            let _live = inner2.live.enter();
            crate::session::handle(Arc::clone(&inner2), stream, peer, local).await;
            drop(permit);
        });
    }
}
