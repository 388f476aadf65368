//! The hyper 1 HTTP/1.1 server: connection cap, header read timeout, idle timeout and graceful
//! shutdown (docs/DECISIONS.md #7). Each connection feeds requests into [`ApiService`], with the TCP peer
//! address attached as a [`PeerAddr`] extension for the whitelist gate.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::service::ApiService;
use crate::state::ApiState;

/// The TCP peer of a request, inserted as a request extension by [`serve`]. Requests without it
/// (e.g. built by hand in tests) are only admitted by an empty whitelist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Server limits. The defaults suit a loopback admin API.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time allowed to receive a complete request head (also bounds keep-alive idling between
    /// requests, since hyper re-arms it when it starts waiting for the next head).
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving in either direction for this long while no request
    /// is being handled is dropped (slow body uploads, clients that stop reading responses).
    pub idle_timeout: Duration,
    /// How long in-flight connections may take to finish after shutdown is requested.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves the API on `listener` with default limits until `shutdown` completes.
pub async fn serve<F>(listener: TcpListener, state: ApiState, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    serve_with(listener, state, shutdown, ServeOptions::default()).await
}

/// Serves the API with explicit limits until `shutdown` completes, then lets in-flight
/// connections finish for up to `shutdown_grace`.
pub async fn serve_with<F>(
    listener: TcpListener,
    state: ApiState,
    shutdown: F,
    opts: ServeOptions,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let service = ApiService::new(state);
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Per-connection accept errors (EMFILE, ECONNABORTED) must not kill the API;
                    // back off briefly so a persistent error does not spin.
                    tracing::warn!(error = %e, "api accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        let opts = opts.clone();
        let stop_rx = stop_rx.clone();
        conns.spawn(async move {
            serve_connection(stream, peer, service, &opts, stop_rx).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(opts.shutdown_grace, drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
    Ok(())
}

/// Last-activity clock and in-flight request count of one connection.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.started.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Decrements the in-flight count when a request finishes (or is dropped mid-way).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A TCP stream that records when bytes last moved, and closes gently (see [`linger`]).
struct TrackedStream {
    /// Always `Some` until dropped.
    inner: Option<TcpStream>,
    activity: Arc<Activity>,
}

impl TrackedStream {
    fn stream(&mut self) -> std::io::Result<Pin<&mut TcpStream>> {
        self.inner
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

/// Bytes and time a closing connection may still drain (see [`linger`]).
const LINGER_BYTES: usize = 16 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Closing a socket with unread input makes the kernel send RST, and a client that is still
/// writing its body (a 413 sent mid-upload, a rejected chunked stream) then loses the response
/// we just sent. So when input is pending at close, the write side is shut (FIN after the
/// response) and the input drained for a bounded time and size before the socket is closed,
/// like a web server's lingering close.
async fn linger(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 16 * 1024];
    let mut drained = 0usize;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while drained < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        let Some(stream) = self.inner.take() else {
            return;
        };
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        // Only a socket with input still queued needs the lingering close. Ask the kernel
        // (tokio's readiness cache may not have seen the latest bytes yet); the socket is
        // non-blocking, so this never waits.
        let pending = socket2::SockRef::from(&stream).peek(&mut probe);
        if matches!(pending, Ok(n) if n > 0) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(linger(stream));
            }
        }
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = self.stream()?.poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = self.stream()?.poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    // Vectored writes let hyper send large bodies without first copying them into its buffer.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = self.stream()?.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream()?.poll_shutdown(cx)
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    service: ApiService,
    opts: &ServeOptions,
    mut stop_rx: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let io = TokioIo::new(TrackedStream {
        inner: Some(stream),
        activity: activity.clone(),
    });
    let req_activity = activity.clone();
    let svc = service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        req_activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(req_activity.clone());
        let service = service.clone();
        async move {
            let resp = service.handle(req).await;
            drop(guard);
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true)
        // A client that half-closes after its request (`shutdown(SHUT_WR)`, `nc -N`) still
        // gets the response: the write may already be applied.
        .half_close(true)
        .serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let tick = (opts.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = *stop_rx.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "api connection ended with error");
                }
                return;
            }
            changed = stop_rx.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = ticker.tick() => {
                if activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.idle_for() >= opts.idle_timeout
                {
                    tracing::debug!(%peer, "api connection idle, dropping");
                    return;
                }
            }
        }
    }
}
