//! Client listeners: binding `server.port` on every `[[server.listeners]]` address (IPv4 and
//! IPv6, `reuse_allow` → SO_REUSEPORT), keeping that set in step with the config, and the
//! accept loop.
//!
//! Owns: socket options, the live listener set (on a config publish, new addresses are bound
//! before removed ones stop accepting; sessions accepted on a removed listener keep running;
//! a changed `listen_backlog` is applied to the listening sockets in place), the
//! `server.max_connections` semaphore with `accept_permit_timeout_ms` (a new limit gets a new
//! semaphore: live sessions keep their permits), and an accept loop that never dies on accept
//! errors (fd exhaustion is logged at most once per interval and backed off briefly). Must
//! not: read client bytes (sessions do).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use config::Config;
use parking_lot::Mutex;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::Inner;

/// `listen(2)` backlog for `server.listen_backlog` (0 = the system maximum, which the kernel
/// caps at `net.core.somaxconn`).
fn backlog_arg(backlog: u32) -> i32 {
    match backlog {
        0 => i32::MAX,
        b => b.min(i32::MAX as u32) as i32,
    }
}

/// One accepting listener.
struct Running {
    /// The configured address (port 0 = ephemeral) and `reuse_allow`.
    want: (SocketAddr, bool),
    local: SocketAddr,
    /// A second handle on the listening socket, to change its backlog in place. Dropped with
    /// this entry, so a stopped listener's socket really closes.
    socket: Socket,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The live listener set and the connection-limit state the accept loops read.
pub(crate) struct Listeners {
    rt: tokio::runtime::Handle,
    port_override: Option<u16>,
    listen_override: Option<Vec<IpAddr>>,
    running: Mutex<(u32, Vec<Running>)>,
    /// Bound addresses (for the handle and for the mask-loop guard).
    local: ArcSwap<Vec<SocketAddr>>,
    /// `None` = no `max_connections` limit.
    pub(crate) permits: ArcSwapOption<Semaphore>,
    permit_limit: Mutex<u32>,
}

impl Listeners {
    pub(crate) fn new(
        rt: tokio::runtime::Handle,
        port_override: Option<u16>,
        listen_override: Option<Vec<IpAddr>>,
    ) -> Self {
        Self {
            rt,
            port_override,
            listen_override,
            running: Mutex::new((0, Vec::new())),
            local: ArcSwap::from_pointee(Vec::new()),
            permits: ArcSwapOption::empty(),
            permit_limit: Mutex::new(u32::MAX),
        }
    }

    /// Addresses currently accepting.
    pub(crate) fn local_addrs(&self) -> Arc<Vec<SocketAddr>> {
        self.local.load_full()
    }

    fn wanted(&self, cfg: &Config) -> Vec<(SocketAddr, bool)> {
        let port = self.port_override.unwrap_or(cfg.server.port);
        match &self.listen_override {
            Some(ips) => ips
                .iter()
                .map(|ip| (SocketAddr::new(*ip, port), false))
                .collect(),
            None => cfg
                .server
                .listeners
                .iter()
                .map(|l| (SocketAddr::new(l.ip, port), l.reuse_allow))
                .collect(),
        }
    }

    /// Brings the listener set and the connection limit in line with `cfg`: binds what is
    /// new first, then stops what is gone. Returns the bind errors (the listeners that were
    /// running stay up when their replacement cannot be bound).
    pub(crate) fn reconcile(&self, inner: &Arc<Inner>, cfg: &Config) -> Vec<String> {
        self.set_limit(cfg.server.max_connections);
        let wanted = self.wanted(cfg);
        let backlog = cfg.server.listen_backlog;
        let mut guard = self.running.lock();
        let (cur_backlog, running) = &mut *guard;
        let mut errors = Vec::new();
        if wanted.is_empty() {
            errors.push("no client listener configured (server.listeners is empty)".to_owned());
        }
        let _enter = self.rt.enter();
        for want in &wanted {
            if running.iter().any(|r| r.want == *want) {
                continue;
            }
            let bound =
                bind(want.0, backlog, want.1).and_then(|l| Ok((SockRef::from(&l).try_clone()?, l)));
            match bound {
                Ok((socket, l)) => {
                    let local = l.local_addr().unwrap_or(want.0);
                    let (stop, stop_rx) = watch::channel(false);
                    let task = self.rt.spawn(accept_loop(Arc::clone(inner), l, stop_rx));
                    tracing::info!(addr = %local, "client listener started");
                    running.push(Running {
                        want: *want,
                        local,
                        socket,
                        stop,
                        task,
                    });
                }
                Err(e) => {
                    tracing::error!(addr = %want.0, error = %e, "cannot bind client listener");
                    errors.push(format!("{}: {e}", want.0));
                }
            }
        }
        // Stop what is no longer configured, once its replacement (if any) is accepting.
        let failed_new = !errors.is_empty() && !wanted.is_empty();
        running.retain(|r| {
            let keep = wanted.contains(&r.want) || failed_new;
            if !keep {
                tracing::info!(addr = %r.local, "client listener stopped (sessions continue)");
                let _ = r.stop.send(true);
                r.task.abort();
            }
            keep
        });
        if *cur_backlog != backlog {
            for r in running.iter() {
                if let Err(e) = r.socket.listen(backlog_arg(backlog)) {
                    tracing::warn!(addr = %r.local, error = %e, "cannot change the listen backlog");
                }
            }
            *cur_backlog = backlog;
        }
        self.local
            .store(Arc::new(running.iter().map(|r| r.local).collect()));
        errors
    }

    fn set_limit(&self, max: u32) {
        let mut cur = self.permit_limit.lock();
        if *cur == max {
            return;
        }
        *cur = max;
        let sem =
            (max > 0).then(|| Arc::new(Semaphore::new((max as usize).min(Semaphore::MAX_PERMITS))));
        self.permits.store(sem);
    }

    /// Stops every accept loop (sessions continue until the data plane cuts them).
    pub(crate) fn stop_all(&self) {
        let mut guard = self.running.lock();
        for r in guard.1.drain(..) {
            let _ = r.stop.send(true);
            r.task.abort();
        }
    }
}

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
    socket.listen(backlog_arg(backlog))?;
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
async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut cut = inner.stop_accepting.subscribe();
    let mut last_log: Option<Instant> = None;
    let mut suppressed = 0u64;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = cut.wait_for(|c| *c) => return,
            _ = stop.wait_for(|s| *s) => return,
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
        let permits = inner.listeners.permits.load_full();
        let permit_timeout = inner.policy.load().accept_permit_timeout;
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
                            inner.stats.inc_accept_permit_timeouts();
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
