//! One ME writer: a long-lived encrypted RPC link to one middle-proxy endpoint, carrying many
//! client sessions, each known by its `conn_id` (docs/PROTOCOL.md §7.2–§7.8,
//! docs/ME-MODEL.md).
//!
//! Owns: the link's handshake, its two loops (commands → RPC packets → socket; socket → RPC
//! packets → the bound sessions' queues), keepalive pings with the RTT they measure, the
//! `conn_id` → session table of this link, and noticing a dead or stalled link within a
//! bounded time. Must not: choose endpoints or count writers per DC (the pool does), parse
//! client framing (the ME relay does), or block its reader on one slow session.
//!
//! ```text
//!   sessions ──Cmd::Packet/Close──► cmd queue ─► write loop ─► RpcSender ─► socket ─► ME
//!   sessions ◄── Down (bounded, one per session) ◄── read loop ◄─ RpcReceiver ◄─ socket ◄─ ME
//!                     full queue: that session is closed, never the reader blocked
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use proto::me::{
    close_conn_payload, ping_payload, pong_payload, ClientHandshake, HandshakeError,
    HandshakeParams, MeMessage, RpcLink, RpcReceiver, RpcSender,
};
use stats::Stats;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::outbound::OutboundStream;

/// Connect + handshake must finish within this (a silent endpoint is not a writer).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A socket write that makes no progress for this long marks the link stalled: its sessions
/// are closed and the pool replaces it (docs/ME-MODEL.md "Flow control").
pub(crate) const WRITE_STALL: Duration = Duration::from_secs(10);
/// Answer bytes queued towards one client session at most (a frame larger than this waits
/// for an empty queue): bounds what a client that stops reading can pin in memory.
const SESSION_BYTES: usize = 1024 * 1024;
/// Bytes one session may have queued towards its link: a client uploading fast waits for its
/// own packets to leave instead of filling the queue ahead of every other session.
pub(crate) const UP_SHARE: usize = 256 * 1024;
/// Control packets (pongs, closes) queued towards one link, ahead of its data: a link busy
/// with uploads still answers pings and forgets ids at once.
const CTRL_QUEUE: usize = 1024;
/// Bytes batched into one socket write by the write loop.
const WRITE_BATCH: usize = 256 * 1024;

/// The queue sizes and waits of the ME route (`general.me_route_*`, `me_writer_*`, `me_c2me_*`,
/// `me_d2c_*`; defaults and reasons in docs/DECISIONS.md #43).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowLimits {
    /// Frames queued towards one client session before the session counts as too slow and
    /// is closed (its client reconnects) instead of holding up the link's reader.
    pub(crate) session_queue: usize,
    /// How long the link's reader waits for room in a full session queue before closing
    /// that session; `None` = as long as it takes.
    pub(crate) blocking_send: Option<Duration>,
    /// Packets queued towards one link; senders wait when it is full (backpressure per
    /// link). Small on purpose: entries can be 64 KiB client frames, and at 1024 a dpbench
    /// run kept ~200 MiB of RSS after 1 GiB relayed, at 128 ~55 MiB, at the same throughput.
    pub(crate) cmd_queue: usize,
    /// How long a session waits to queue a packet towards its link (link queue or its own
    /// share full) before it gives up and closes; `None` = as long as it takes.
    pub(crate) enqueue_wait: Option<Duration>,
    /// Answer bytes and answers coalesced into one client write at most.
    pub(crate) batch_bytes: usize,
    pub(crate) batch_frames: usize,
}

impl FlowLimits {
    pub(crate) fn from_config(g: &config::General) -> Self {
        let bound = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        Self {
            session_queue: g.me_route_channel_capacity.max(1),
            blocking_send: bound(g.me_route_blocking_send_timeout_ms),
            cmd_queue: g.me_writer_cmd_channel_capacity.max(1),
            enqueue_wait: bound(g.me_c2me_send_timeout_ms),
            batch_bytes: g.me_d2c_flush_batch_max_bytes.max(1),
            batch_frames: g.me_d2c_flush_batch_max_frames.max(1),
        }
    }
}

impl Default for FlowLimits {
    fn default() -> Self {
        Self::from_config(&config::General::default())
    }
}

/// Awaits `f`, for at most `wait` when it is set.
async fn bounded<F: std::future::Future>(wait: Option<Duration>, f: F) -> Option<F::Output> {
    match wait {
        Some(w) => tokio::time::timeout(w, f).await.ok(),
        None => Some(f.await),
    }
}

/// What a writer delivers to one bound session.
#[derive(Debug)]
pub(crate) enum Down {
    /// An RPC_PROXY_ANS for the client: the packet and where its data starts in it.
    Data(Vec<u8>, usize),
    /// An RPC_SIMPLE_ACK's confirm bytes, as received.
    Ack([u8; 4]),
    /// The middle proxy closed the connection.
    Close,
}

/// The writer's end of one session's queue: frames and a byte budget.
#[derive(Debug, Clone)]
pub(crate) struct SessionTx {
    tx: mpsc::Sender<Down>,
    budget: Arc<tokio::sync::Semaphore>,
}

/// The session's end of its queue; returns budget as answers are taken.
#[derive(Debug)]
pub(crate) struct SessionRx {
    rx: mpsc::Receiver<Down>,
    budget: Arc<tokio::sync::Semaphore>,
}

/// A new session queue of `frames` entries (and [`SESSION_BYTES`]).
pub(crate) fn session_queue(frames: usize) -> (SessionTx, SessionRx) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let budget = Arc::new(tokio::sync::Semaphore::new(SESSION_BYTES));
    (
        SessionTx {
            tx,
            budget: Arc::clone(&budget),
        },
        SessionRx { rx, budget },
    )
}

fn cost(d: &Down) -> u32 {
    match d {
        Down::Data(v, start) => v.len().saturating_sub(*start).min(SESSION_BYTES) as u32,
        _ => 0,
    }
}

/// Why a delivery failed.
enum Undelivered {
    /// Still no room after the wait.
    Full,
    /// The session is gone.
    Closed,
}

impl SessionTx {
    /// Queues `d`, waiting up to `wait` for room (frames and bytes; `None`: no bound).
    async fn deliver(&self, d: Down, wait: Option<Duration>) -> Result<bool, Undelivered> {
        let n = cost(&d);
        let mut waited = false;
        let permit = match self.budget.try_acquire_many(n) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Undelivered::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                waited = true;
                match bounded(wait, self.budget.acquire_many(n)).await {
                    Some(Ok(p)) => p,
                    Some(Err(_)) => return Err(Undelivered::Closed),
                    None => return Err(Undelivered::Full),
                }
            }
        };
        let sent = match self.tx.try_send(d) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Undelivered::Closed),
            Err(mpsc::error::TrySendError::Full(d)) => {
                waited = true;
                match bounded(wait, self.tx.send(d)).await {
                    Some(Ok(())) => Ok(()),
                    Some(Err(_)) => Err(Undelivered::Closed),
                    None => Err(Undelivered::Full),
                }
            }
        };
        // On success the permits travel with the frame; the receiver returns them.
        if sent.is_ok() {
            permit.forget();
        }
        sent.map(|()| waited)
    }

    fn close(&self) {
        let _ = self.tx.try_send(Down::Close);
    }
}

impl SessionRx {
    fn taken(&self, d: &Down) {
        let n = cost(d) as usize;
        if n > 0 {
            self.budget.add_permits(n);
        }
    }

    /// The next delivery; `None` when the writer is gone.
    pub(crate) async fn recv(&mut self) -> Option<Down> {
        let d = self.rx.recv().await?;
        self.taken(&d);
        Some(d)
    }

    /// A delivery already queued, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Down> {
        let d = self.rx.try_recv().ok()?;
        self.taken(&d);
        Some(d)
    }
}

/// A command to a writer.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// A complete RPC payload (an RPC_PROXY_REQ with its client packet), with the sending
    /// session's share of the link queue, returned once the packet is encoded.
    Packet(Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>),
    /// The client went away: tell the middle proxy and forget the id.
    Close(u64),
}

/// Keepalive settings (`general.me_keepalive_*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    pub(crate) enabled: bool,
    pub(crate) interval: Duration,
    pub(crate) jitter: Duration,
}

impl Keepalive {
    /// A ping unanswered for this long means the link is dead.
    pub(crate) fn timeout(&self) -> Duration {
        (self.interval + self.jitter) * 2 + Duration::from_secs(2)
    }
}

/// State the pool, the sessions and the writer's own task share.
#[derive(Debug)]
pub(crate) struct WriterShared {
    pub(crate) id: u64,
    pub(crate) endpoint: SocketAddr,
    pub(crate) dc: i16,
    pub(crate) generation: AtomicU64,
    /// Takes no new sessions (an older generation, or the pool drops it).
    pub(crate) draining: AtomicBool,
    /// A keepalive pong is later than one interval: the link may be dying; new sessions
    /// prefer other writers until the pong arrives (or the link is declared dead).
    pub(crate) degraded: AtomicBool,
    /// Set once the link is gone; the sessions watch it.
    pub(crate) closed: CancellationToken,
    /// The link ended on its own (peer, socket, keepalive), not retired by the pool: the
    /// pool counts the writer that replaces it as a restore.
    pub(crate) lost: AtomicBool,
    pub(crate) started: Instant,
    conns: Mutex<HashMap<u64, SessionTx>>,
    bound: AtomicUsize,
    /// Keepalive RTT EMA in microseconds, 0 = no sample yet.
    rtt_ema_us: AtomicU64,
    /// Milliseconds since `started` of the last packet either way.
    last_activity_ms: AtomicU64,
    /// Milliseconds since `started` of the last packet from the middle proxy.
    last_in_ms: AtomicU64,
}

impl WriterShared {
    fn new(id: u64, endpoint: SocketAddr, dc: i16, generation: u64) -> Self {
        Self {
            id,
            endpoint,
            dc,
            generation: AtomicU64::new(generation),
            draining: AtomicBool::new(false),
            degraded: AtomicBool::new(false),
            closed: CancellationToken::new(),
            lost: AtomicBool::new(false),
            started: Instant::now(),
            conns: Mutex::new(HashMap::new()),
            bound: AtomicUsize::new(0),
            rtt_ema_us: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(0),
            last_in_ms: AtomicU64::new(0),
        }
    }

    /// Sessions currently bound.
    pub(crate) fn bound(&self) -> usize {
        self.bound.load(Ordering::Relaxed)
    }

    pub(crate) fn alive(&self) -> bool {
        !self.closed.is_cancelled()
    }

    /// Keepalive RTT EMA in milliseconds.
    pub(crate) fn rtt_ms(&self) -> Option<f64> {
        match self.rtt_ema_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1000.0),
        }
    }

    /// Seconds since the last packet, when no session is bound (an idle writer).
    pub(crate) fn idle_secs(&self) -> Option<u64> {
        if self.bound() > 0 {
            return None;
        }
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        Some(now.saturating_sub(last) / 1000)
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_activity_ms.store(now, Ordering::Relaxed);
    }

    /// A packet from the middle proxy arrived.
    fn heard(&self) {
        self.touch();
        let now = self.last_activity_ms.load(Ordering::Relaxed);
        self.last_in_ms.store(now, Ordering::Relaxed);
    }

    /// Whether a packet from the middle proxy arrived after `t`.
    fn heard_since(&self, t: Instant) -> bool {
        let t_ms = t.saturating_duration_since(self.started).as_millis() as u64;
        self.last_in_ms.load(Ordering::Relaxed) > t_ms
    }

    /// Binds a session; `false` when the link is already gone.
    pub(crate) fn bind(&self, conn_id: u64, tx: SessionTx) -> bool {
        let mut conns = self.conns.lock();
        if !self.alive() {
            return false;
        }
        if conns.insert(conn_id, tx).is_none() {
            self.bound.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Forgets a session; idempotent. Returns whether it was bound.
    fn unbind(&self, conn_id: u64) -> bool {
        let removed = self.conns.lock().remove(&conn_id).is_some();
        if removed {
            self.bound.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    fn route(&self, conn_id: u64) -> Option<SessionTx> {
        self.conns.lock().get(&conn_id).cloned()
    }

    /// Marks the link gone and closes every bound session.
    fn shut(&self) {
        self.closed.cancel();
        let conns: Vec<_> = self.conns.lock().drain().collect();
        self.bound.store(0, Ordering::Relaxed);
        for (_, tx) in conns {
            // A full queue cannot take the close; that session sees `closed` instead.
            tx.close();
        }
    }

    fn observe_rtt(&self, rtt: Duration) {
        let sample = (rtt.as_micros() as u64).max(1);
        let old = self.rtt_ema_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 7 + sample) / 8
        };
        self.rtt_ema_us.store(new.max(1), Ordering::Relaxed);
    }
}

/// Why a session's packet did not reach its link's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The link is gone.
    Gone,
    /// No room within the session's enqueue bound (`me_c2me_send_timeout_ms`).
    Stalled,
}

/// A live writer as the pool and sessions hold it.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub(crate) shared: Arc<WriterShared>,
    cmd: mpsc::Sender<Cmd>,
    ctrl: mpsc::Sender<Cmd>,
}

impl Writer {
    /// Queues one RPC payload; waits while the session's share of the link queue
    /// (`share`, [`UP_SHARE`] bytes) or the link's queue is full. `Err` = link gone.
    pub(crate) async fn send(
        &self,
        payload: Vec<u8>,
        share: &Arc<tokio::sync::Semaphore>,
        wait: Option<Duration>,
    ) -> Result<(), SendError> {
        let n = payload.len().min(UP_SHARE) as u32;
        // Room in both the session's share and the link's queue: no timer, no allocation.
        let (payload, permit) = match Arc::clone(share).try_acquire_many_owned(n) {
            Ok(permit) => match self.cmd.try_send(Cmd::Packet(payload, Some(permit))) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(SendError::Gone),
                Err(mpsc::error::TrySendError::Full(Cmd::Packet(p, permit))) => (p, permit),
                Err(mpsc::error::TrySendError::Full(Cmd::Close(_))) => return Err(SendError::Gone),
            },
            Err(_) => (payload, None),
        };
        // Boxed: the waiting (with its timer) stays out of every session's future and is
        // allocated only when a queue is full.
        Box::pin(self.send_waiting(payload, permit, share, n, wait)).await
    }

    async fn send_waiting(
        &self,
        payload: Vec<u8>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        share: &Arc<tokio::sync::Semaphore>,
        n: u32,
        wait: Option<Duration>,
    ) -> Result<(), SendError> {
        let queued = async {
            let permit = match permit {
                Some(p) => Some(p),
                None => Arc::clone(share).acquire_many_owned(n).await.ok(),
            };
            self.cmd.send(Cmd::Packet(payload, permit)).await
        };
        tokio::select! {
            r = bounded(wait, queued) => match r {
                Some(Ok(())) => Ok(()),
                Some(Err(_)) => Err(SendError::Gone),
                None => Err(SendError::Stalled),
            },
            _ = self.shared.closed.cancelled() => Err(SendError::Gone),
        }
    }

    /// Unbinds a session and tells the middle proxy (best effort). `false`: the id was no
    /// longer bound (the middle proxy closed it first), so there was nothing to tell.
    pub(crate) fn release(&self, conn_id: u64) -> bool {
        if !self.shared.unbind(conn_id) {
            return false;
        }
        if self.shared.alive() {
            // A full queue means the link is stalled; the ME forgets the id with the link.
            let _ = self.ctrl.try_send(Cmd::Close(conn_id));
        }
        true
    }

    /// Closes the link (the pool retires it): its sessions end.
    pub(crate) fn close(&self) {
        self.shared.shut();
    }
}

/// Everything needed to open one writer.
pub(crate) struct Open<'a> {
    pub(crate) id: u64,
    pub(crate) dc: i16,
    pub(crate) generation: u64,
    pub(crate) endpoint: SocketAddr,
    pub(crate) secret: &'a [u8],
    /// Our address as the middle proxy sees it (KDF): `None` = the socket's local address.
    pub(crate) kdf_addr: Option<SocketAddr>,
    pub(crate) keepalive: Keepalive,
    pub(crate) flow: FlowLimits,
}

/// Why a writer could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("connect: {0}")]
    Connect(String),
    /// Over SOCKS without a usable BND.ADDR, `me_socks_kdf_policy = "strict"` refuses.
    #[error("SOCKS upstream reported no usable bound address (me_socks_kdf_policy = strict)")]
    SocksKdf,
    #[error("handshake timed out")]
    Timeout,
    #[error("closed during the handshake")]
    Closed,
    /// The middle proxy closed right after the nonce exchange: it could not decrypt our
    /// first encrypted packet, i.e. it derived other keys (usually another address for us:
    /// NAT, docs/PROTOCOL.md §7.4–§7.5).
    #[error("closed after the nonce exchange (key derivation mismatch?)")]
    KeysRejected,
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// Runs the handshake on a connected stream and spawns the link's task.
pub(crate) async fn start(
    o: Open<'_>,
    stream: OutboundStream,
    stats: Arc<Stats>,
) -> Result<Writer, OpenError> {
    let local = match &stream {
        OutboundStream::Tcp(s) => {
            let _ = s.set_nodelay(true);
            s.local_addr()?
        }
        // Behind a tunnel our address is the relay's; the ME checks it only in the KDF, which
        // then fails loudly (counted as a handshake error).
        OutboundStream::Tunnel(_) => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
    };
    let proxy_addr = o.kdf_addr.unwrap_or(local);
    // A dual-stack socket reports an IPv4 peer's side as ::ffff:a.b.c.d; the PID and the
    // KDF want the IPv4 address.
    let proxy_addr = SocketAddr::new(proxy_addr.ip().to_canonical(), proxy_addr.port());
    let now = unix_now();
    let params = HandshakeParams {
        proxy_secret: o.secret.to_vec(),
        proxy_addr,
        me_addr: o.endpoint,
        now,
        nonce: rand::random(),
        crc32c: false,
        pid: proto::me::pid_bytes(proxy_addr, std::process::id() as u16, now),
        max_skew_secs: Some(proto::me::handshake::MAX_CLOCK_SKEW_SECS),
    };
    let (read, write): (BoxRead, BoxWrite) = match stream {
        OutboundStream::Tcp(s) => {
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w))
        }
        OutboundStream::Tunnel(t) => {
            let (r, w) = tokio::io::split(t);
            (Box::new(r), Box::new(w))
        }
    };
    let (mut read, mut write) = (read, write);
    let link = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(params, &mut read, &mut write))
        .await
        .map_err(|_| OpenError::Timeout)??;
    let shared = Arc::new(WriterShared::new(o.id, o.endpoint, o.dc, o.generation));
    let (cmd, cmd_rx) = mpsc::channel(o.flow.cmd_queue);
    let (ctrl, ctrl_rx) = mpsc::channel(CTRL_QUEUE);
    let writer = Writer {
        shared: Arc::clone(&shared),
        cmd,
        ctrl: ctrl.clone(),
    };
    let task = LinkTask {
        shared,
        stats,
        keepalive: o.keepalive,
        flow: o.flow,
        ctrl,
    };
    tokio::spawn(task.run(link, read, write, (cmd_rx, ctrl_rx)));
    Ok(writer)
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write loop's receivers: data packets, and control packets that go first.
type CmdQueues = (mpsc::Receiver<Cmd>, mpsc::Receiver<Cmd>);
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

async fn handshake(
    params: HandshakeParams,
    read: &mut BoxRead,
    write: &mut BoxWrite,
) -> Result<RpcLink, OpenError> {
    let mut out = Vec::new();
    let mut hs = ClientHandshake::start(params, &mut out)?;
    let mut buf = vec![0u8; 4096];
    // Writes so far: the nonce, then (once the peer's nonce arrived) our encrypted handshake.
    let mut writes = 0;
    loop {
        if !out.is_empty() {
            write.write_all(&out).await?;
            out.clear();
            writes += 1;
        }
        let n = read.read(&mut buf).await?;
        if n == 0 {
            return Err(if writes >= 2 {
                OpenError::KeysRejected
            } else {
                OpenError::Closed
            });
        }
        if hs.feed(&buf[..n], &mut out)? {
            if !out.is_empty() {
                write.write_all(&out).await?;
            }
            return hs.into_link().ok_or(OpenError::Closed);
        }
    }
}

struct LinkTask {
    shared: Arc<WriterShared>,
    stats: Arc<Stats>,
    keepalive: Keepalive,
    flow: FlowLimits,
    /// For pongs and closes the reader asks the write loop to send.
    ctrl: mpsc::Sender<Cmd>,
}

/// Why a link ended (logged and counted).
enum LinkEnd {
    Retired,
    Eof,
    Io(io::Error),
    Protocol(String),
    WriteStall,
    KeepaliveTimeout,
}

impl std::fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retired => f.write_str("retired"),
            Self::Eof => f.write_str("closed by the middle proxy"),
            Self::Io(e) => write!(f, "io: {e}"),
            Self::Protocol(e) => write!(f, "protocol: {e}"),
            Self::WriteStall => write!(f, "socket write stalled for {WRITE_STALL:?}"),
            Self::KeepaliveTimeout => f.write_str("keepalive pong overdue"),
        }
    }
}

impl LinkTask {
    /// `queues`: the data and control receivers of the write loop.
    async fn run(self, link: RpcLink, read: BoxRead, write: BoxWrite, queues: CmdQueues) {
        let RpcLink {
            sender, receiver, ..
        } = link;
        let this = Arc::new(self);
        let pings: Arc<Mutex<Option<(u64, Instant)>>> = Arc::new(Mutex::new(None));
        // The write loop is a task of its own: encrypting towards the ME (AES-CBC, sequential)
        // and decrypting its answers then run on two cores instead of taking turns on one.
        let mut write_task = tokio::spawn({
            let this = Arc::clone(&this);
            let pings = Arc::clone(&pings);
            async move { this.write_loop(sender, write, queues, &pings).await }
        });
        let end = tokio::select! {
            e = &mut write_task => e.unwrap_or_else(|e| LinkEnd::Protocol(format!("write loop: {e}"))),
            e = this.read_loop(receiver, read, &pings) => e,
            _ = this.shared.closed.cancelled() => LinkEnd::Retired,
        };
        write_task.abort();
        let this = &*this;
        let mp = this.stats.middle_proxy_counters();
        let pool = this.stats.pool_counters();
        pool.writer_removed_total.inc();
        let unexpected = match &end {
            LinkEnd::Retired => false,
            LinkEnd::Eof => {
                mp.reader_eof_total.inc();
                if this.shared.bound() == 0 {
                    mp.idle_close_by_peer_total.inc();
                }
                this.shared.bound() > 0
            }
            LinkEnd::KeepaliveTimeout => {
                mp.keepalive_timeout_total.inc();
                mp.keepalive_failed_total.inc();
                true
            }
            _ => true,
        };
        if unexpected {
            pool.writer_removed_unexpected_total.inc();
            this.shared.lost.store(true, Ordering::Relaxed);
        }
        if !matches!(end, LinkEnd::Retired) {
            tracing::warn!(
                writer = this.shared.id,
                endpoint = %this.shared.endpoint,
                dc = this.shared.dc,
                sessions = this.shared.bound(),
                reason = %end,
                "ME link lost; its sessions are closed"
            );
        }
        this.shared.shut();
    }

    async fn write_loop(
        &self,
        mut sender: RpcSender,
        mut write: BoxWrite,
        (mut rx, mut ctrl): CmdQueues,
        pings: &Mutex<Option<(u64, Instant)>>,
    ) -> LinkEnd {
        let mut out = Vec::with_capacity(16 * 1024);
        let mp = self.stats.middle_proxy_counters();
        let ka = self.keepalive;
        let mut next_ping = tokio::time::Instant::now() + jittered(ka);
        loop {
            let ping_at = next_ping;
            let cmd = tokio::select! {
                biased;
                // Never closed while the read loop (which holds a sender) runs.
                Some(c) = ctrl.recv() => Some(c),
                c = rx.recv() => match c {
                    Some(c) => Some(c),
                    None => return LinkEnd::Retired,
                },
                _ = tokio::time::sleep_until(ping_at), if ka.enabled => {
                    let mut p = pings.lock();
                    let late = p.map(|(_, sent)| sent.elapsed());
                    // Packets from the middle proxy since the ping prove the link alive too
                    // (a middle proxy that does not answer pings): only silence degrades or
                    // kills it.
                    let heard = p.is_some_and(|(_, sent)| self.shared.heard_since(sent));
                    if late.is_some_and(|d| d > ka.interval) {
                        self.shared.degraded.store(!heard, Ordering::Relaxed);
                    }
                    if late.is_some_and(|d| d > ka.timeout()) {
                        if !heard {
                            return LinkEnd::KeepaliveTimeout;
                        }
                        // That ping will not be answered: ask again.
                        *p = None;
                    }
                    if p.is_none() {
                        let id: u64 = rand::random();
                        *p = Some((id, Instant::now()));
                        drop(p);
                        sender.send(&ping_payload(id), &mut out);
                        mp.keepalive_sent_total.inc();
                    }
                    next_ping = tokio::time::Instant::now() + jittered(ka);
                    None
                }
            };
            if let Some(c) = cmd {
                self.encode(c, &mut sender, &mut out);
            }
            // Batch whatever else is already queued into the same write, control first.
            while out.len() < WRITE_BATCH {
                match ctrl.try_recv().or_else(|_| rx.try_recv()) {
                    Ok(c) => self.encode(c, &mut sender, &mut out),
                    Err(_) => break,
                }
            }
            if out.is_empty() {
                continue;
            }
            match tokio::time::timeout(WRITE_STALL, write.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return LinkEnd::Io(e),
                Err(_) => return LinkEnd::WriteStall,
            }
            out.clear();
            self.shared.touch();
        }
    }

    fn encode(&self, c: Cmd, sender: &mut RpcSender, out: &mut Vec<u8>) {
        match c {
            Cmd::Packet(p, _share) => {
                sender.send(&p, out);
            }
            Cmd::Close(conn_id) => {
                sender.send(&close_conn_payload(conn_id), out);
                self.stats
                    .middle_proxy_counters()
                    .rpc_proxy_req_signal_close_sent_total
                    .inc();
            }
        }
    }

    async fn read_loop(
        &self,
        mut receiver: RpcReceiver,
        mut read: BoxRead,
        pings: &Mutex<Option<(u64, Instant)>>,
    ) -> LinkEnd {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            loop {
                let packet = match receiver.next_packet() {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => return LinkEnd::Protocol(e.to_string()),
                };
                self.shared.heard();
                if let Err(e) = self.dispatch(packet, pings).await {
                    return LinkEnd::Protocol(e);
                }
            }
            match read.read(&mut buf).await {
                Ok(0) => return LinkEnd::Eof,
                Ok(n) => receiver.feed(&buf[..n]),
                Err(e) => return LinkEnd::Io(e),
            }
        }
    }

    async fn dispatch(
        &self,
        mut packet: Vec<u8>,
        pings: &Mutex<Option<(u64, Instant)>>,
    ) -> Result<(), String> {
        let mp = self.stats.middle_proxy_counters();
        let msg = match MeMessage::parse(&packet) {
            Ok(m) => m,
            // A message type we do not know (a newer middle proxy): skipped, the link and its
            // other sessions carry on. A known type with a broken body still ends the link.
            Err(proto::me::RpcError::UnexpectedType(t)) => {
                tracing::debug!(writer = self.shared.id, message_type = %format_args!("{t:#010x}"), "unknown ME message skipped");
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        let (conn_id, down) = match msg {
            MeMessage::ProxyAns {
                flags,
                conn_id,
                data,
            } => {
                // Reuse the packet's allocation for the data; the header stays in front
                // (moving the data down would copy every answer once more).
                packet.truncate(data.end);
                // ANS flags are not passed on (see the ME relay).
                let _ = flags;
                (conn_id, Down::Data(packet, data.start))
            }
            MeMessage::SimpleAck { conn_id, confirm } => (conn_id, Down::Ack(confirm)),
            MeMessage::Close { conn_id } => {
                if let Some(tx) = self.route_removing(conn_id) {
                    tx.close();
                }
                return Ok(());
            }
            MeMessage::Ping { ping_id } => {
                let _ = self
                    .ctrl
                    .try_send(Cmd::Packet(pong_payload(ping_id).to_vec(), None));
                return Ok(());
            }
            MeMessage::Pong { ping_id } => {
                let mut p = pings.lock();
                if let Some((id, sent)) = *p {
                    if id == ping_id {
                        self.shared.observe_rtt(sent.elapsed());
                        self.shared.degraded.store(false, Ordering::Relaxed);
                        *p = None;
                        mp.keepalive_pong_total.inc();
                    }
                }
                return Ok(());
            }
        };
        let Some(tx) = self.shared.route(conn_id) else {
            // An answer for a session we no longer know: tell the ME to forget it (§7.8).
            mp.route_drop_no_conn_total.inc();
            let _ = self.ctrl.try_send(Cmd::Close(conn_id));
            return Ok(());
        };
        mp.rpc_proxy_req_signal_response_total.inc();
        match tx.deliver(down, self.flow.blocking_send).await {
            // The client reads slower than its answers arrive (a bulk download): the link's
            // reader was held for a moment, like TCP would.
            Ok(waited) => {
                if waited {
                    mp.route_drop_queue_full_base_total.inc();
                }
            }
            Err(Undelivered::Full) => {
                // Still full: close that session rather than stall the link's other ones
                // (docs/DECISIONS.md #43).
                mp.route_drop_queue_full_base_total.inc();
                mp.route_drop_queue_full_total.inc();
                mp.route_drop_queue_full_high_total.inc();
                if self.shared.unbind(conn_id) {
                    let _ = self.ctrl.try_send(Cmd::Close(conn_id));
                }
                tx.close();
            }
            Err(Undelivered::Closed) => {
                mp.route_drop_channel_closed_total.inc();
                if self.shared.unbind(conn_id) {
                    let _ = self.ctrl.try_send(Cmd::Close(conn_id));
                }
            }
        }
        Ok(())
    }

    fn route_removing(&self, conn_id: u64) -> Option<SessionTx> {
        let tx = self.shared.route(conn_id);
        self.shared.unbind(conn_id);
        tx
    }
}

fn jittered(ka: Keepalive) -> Duration {
    let j = ka.jitter.as_millis() as u64;
    let extra = if j == 0 {
        0
    } else {
        rand::random::<u64>() % (j + 1)
    };
    ka.interval + Duration::from_millis(extra)
}

#[cfg(test)]
impl Writer {
    /// A writer with no link behind it (pool tests): its commands land in the receiver.
    pub(crate) fn detached(id: u64, dc: i16, generation: u64) -> (Self, mpsc::Receiver<Cmd>) {
        let endpoint = SocketAddr::from(([127, 0, 0, 1], 8888));
        let shared = Arc::new(WriterShared::new(id, endpoint, dc, generation));
        let (cmd, rx) = mpsc::channel(FlowLimits::default().cmd_queue);
        let ctrl = cmd.clone();
        (Self { shared, cmd, ctrl }, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default reader wait for a full session queue.
    const WAIT: Option<Duration> = Some(Duration::from_millis(250));

    fn session_queue() -> (SessionTx, SessionRx) {
        super::session_queue(FlowLimits::default().session_queue)
    }

    #[tokio::test]
    async fn releasing_a_conn_the_middle_proxy_closed_sends_nothing() {
        let (w, mut rx) = Writer::detached(1, 2, 1);
        let (tx, _rx) = session_queue();
        assert!(w.shared.bind(7, tx.clone()));
        assert!(w.shared.bind(8, tx));
        assert!(w.release(7), "bound: released with RPC_CLOSE_CONN");
        assert!(matches!(rx.try_recv(), Ok(Cmd::Close(7))));
        // The middle proxy closed 8 (the reader unbinds it): the session's release finds
        // nothing to signal.
        assert!(w.shared.unbind(8));
        assert!(!w.release(8));
        assert!(rx.try_recv().is_err());
        assert_eq!(w.shared.bound(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_session_queue_holds_the_sender_briefly_then_refuses() {
        let (tx, mut rx) = session_queue();
        // A frame as large as the whole byte budget fits an empty queue.
        assert!(matches!(
            tx.deliver(Down::Data(vec![0; SESSION_BYTES + 10], 0), WAIT)
                .await,
            Ok(false)
        ));
        // The next one waits for budget: none comes back, so it is refused after the wait.
        let t = tokio::time::Instant::now();
        let r = tx.deliver(Down::Data(vec![1; 100], 0), WAIT).await;
        assert!(matches!(r, Err(Undelivered::Full)));
        assert_eq!(Some(t.elapsed()), WAIT);
        // Once the session takes its answer the budget is back.
        assert!(matches!(rx.try_recv(), Some(Down::Data(d, 0)) if d.len() == SESSION_BYTES + 10));
        assert!(matches!(
            tx.deliver(Down::Data(vec![2; 100], 0), WAIT).await,
            Ok(false)
        ));
        // A reader draining while the sender waits lets it through (counted as a wait).
        let big = tx.deliver(Down::Data(vec![3; SESSION_BYTES], 0), WAIT);
        let drain = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            rx.recv().await
        };
        let (sent, got) = tokio::join!(big, drain);
        assert!(matches!(sent, Ok(true)));
        assert!(matches!(got, Some(Down::Data(d, 0)) if d == vec![2; 100]));
        // Control messages cost no budget; a dropped receiver is reported as closed.
        assert!(matches!(
            tx.deliver(Down::Ack([1, 2, 3, 4]), WAIT).await,
            Ok(false)
        ));
        drop(rx);
        assert!(matches!(
            tx.deliver(Down::Ack([0; 4]), WAIT).await,
            Err(Undelivered::Closed)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn frame_count_bounds_the_queue_too() {
        let (tx, _rx) = session_queue();
        for _ in 0..FlowLimits::default().session_queue {
            assert!(matches!(
                tx.deliver(Down::Ack([0; 4]), WAIT).await,
                Ok(false)
            ));
        }
        assert!(matches!(
            tx.deliver(Down::Ack([0; 4]), WAIT).await,
            Err(Undelivered::Full)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_bound_the_reader_waits_for_room() {
        let (tx, mut rx) = super::session_queue(1);
        assert!(matches!(
            tx.deliver(Down::Ack([0; 4]), None).await,
            Ok(false)
        ));
        // Full: an hour later the delivery still waits.
        let mut second = std::pin::pin!(tx.deliver(Down::Ack([1; 4]), None));
        assert!(tokio::time::timeout(Duration::from_secs(3600), &mut second)
            .await
            .is_err());
        assert!(matches!(rx.try_recv(), Some(Down::Ack([0, 0, 0, 0]))));
        assert!(matches!(second.await, Ok(true)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_gives_up_on_a_link_queue_that_does_not_drain() {
        let (w, mut rx) = Writer::detached(1, 2, 1);
        let share = Arc::new(tokio::sync::Semaphore::new(UP_SHARE));
        let wait = Some(Duration::from_secs(4));
        for _ in 0..FlowLimits::default().cmd_queue {
            assert_eq!(w.send(vec![0; 16], &share, wait).await, Ok(()));
        }
        let t = tokio::time::Instant::now();
        assert_eq!(
            w.send(vec![0; 16], &share, wait).await,
            Err(SendError::Stalled)
        );
        assert_eq!(Some(t.elapsed()), wait);
        // Room again: the packet goes through; a closed link refuses at once.
        assert!(rx.try_recv().is_ok());
        assert_eq!(w.send(vec![0; 16], &share, wait).await, Ok(()));
        w.close();
        assert_eq!(
            w.send(vec![0; 16], &share, None).await,
            Err(SendError::Gone)
        );
    }
}
