//! `TestMe`: a stand-in Telegram middle proxy on 127.0.0.1 (docs/PROTOCOL.md §7).
//!
//! Owns: accepting proxy links, the middle proxy's side of the handshake
//! (`proto::me::ServerHandshake`), the options, counters and records; the
//! relaying after the handshake (one obfuscated2 session to a
//! [`crate::dc::TestDc`] per `conn_id`, RPC_PROXY_ANS back, pongs) is in
//! `relay.rs`. Must not: listen beyond loopback unless told to, or outlive
//! its handle.
//!
//! ```text
//!  proxy ══ RPC link (CBC) ══► TestMe ── conn_id 1: obfs2 intermediate ──► TestDc
//!                                     └─ conn_id 2: obfs2 intermediate ──► TestDc
//!  PROXY_REQ(conn_id, packet) → frame(packet) to that conn's DC session
//!  DC packet                  → PROXY_ANS(flags 0, conn_id, packet)
//!  DC closed                  → CLOSE_EXT(conn_id)      CLOSE_CONN(conn_id) → DC session dropped
//! ```
//!
//! How a real middle proxy talks to its DC is internal to Telegram; this one
//! always uses the intermediate framing towards the DC, whatever the client's
//! framing flags say (they are recorded, not acted on).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::me::{pid_bytes, HandshakeError, HandshakeParams, RpcError, RpcLink, ServerHandshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::relay::Link;

/// How long the handshake may take (the proxy side allows 10 s too).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Ways to misbehave, all off by default.
#[derive(Debug, Clone, Default)]
pub struct Misbehave {
    /// Accept and close at once, before any byte.
    pub refuse: bool,
    /// Complete the handshake, then read and ignore everything.
    pub stall_after_handshake: bool,
    /// Close the link when this many data frames have arrived (the last one
    /// is not acted on).
    pub drop_after_frames: Option<u64>,
    /// Send the data frame with this index (0-based, per link) with a bad CRC.
    pub corrupt_crc_at: Option<u64>,
    /// Derive keys from a secret that differs after the key selector, so
    /// the nonce exchange succeeds and the first encrypted packet fails.
    pub wrong_kdf: bool,
    /// Answer the proxy's handshake with RPC_HANDSHAKE_ERROR and this code.
    pub reject_handshake: Option<i32>,
    /// Our clock is off by this many seconds (and the proxy's crypto_ts is
    /// then not checked, so the proxy is the one to notice).
    pub clock_offset_secs: i64,
    /// Send RPC_PING on every link at this interval (as Telegram's middle proxies do);
    /// the proxy's RPC_PONGs are counted in [`MeCounters::pongs_in`].
    pub ping_every: Option<std::time::Duration>,
    /// Send a message of a type no proxy knows before every answer.
    pub unknown_before_answers: bool,
    /// Never answer the proxy's RPC_PINGs (count them in [`MeCounters::pings_ignored`]).
    pub ignore_pings: bool,
    /// Answer every RPC_PROXY_REQ that asks for a quick ack with RPC_SIMPLE_ACK carrying
    /// [`QUICK_ACK_CONFIRM`], before its data goes to the DC (a DC's quick ack, relayed).
    pub ack_quick_requests: bool,
}

/// The confirm bytes of [`Misbehave::ack_quick_requests`] as sent on the link (bit 31 of
/// their little-endian value set, as a DC's quick-ack token has).
pub const QUICK_ACK_CONFIRM: [u8; 4] = [0x11, 0x22, 0x33, 0xc4];

/// Test middle proxy configuration.
#[derive(Debug, Clone)]
pub struct MeOptions {
    /// The proxy secret shared with the proxy.
    pub proxy_secret: Vec<u8>,
    /// DC index put in the obfuscated2 inits towards the DC.
    pub dc: i16,
    /// Accept CRC-32C when the proxy offers it.
    pub crc32c: bool,
    /// Misbehaviour.
    pub misbehave: Misbehave,
}

impl MeOptions {
    /// Well-behaved, CRC-32C accepted, DC index 2.
    pub fn new(proxy_secret: Vec<u8>) -> Self {
        Self {
            proxy_secret,
            dc: 2,
            crc32c: true,
            misbehave: Misbehave::default(),
        }
    }
}

/// Global counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeCounters {
    /// TCP connections accepted.
    pub accepted: u64,
    /// Connections closed at once because of [`Misbehave::refuse`].
    pub refused: u64,
    /// Completed handshakes.
    pub handshakes_ok: u64,
    /// Failed handshakes (bad nonce, wrong keys, timeout, EOF).
    pub handshake_failures: u64,
    /// Packets that failed their checksum (handshake or data).
    pub bad_crc: u64,
    /// Data frames received after the handshake (all links).
    pub frames_in: u64,
    /// Data frames sent after the handshake (all links).
    pub frames_out: u64,
    /// DC sessions opened.
    pub dc_sessions: u64,
    /// Links currently open.
    pub active: u64,
    /// RPC_PING sent by us ([`Misbehave::ping_every`]).
    pub pings_out: u64,
    /// RPC_PONG received with the id of one of our pings.
    pub pongs_in: u64,
    /// The proxy's RPC_PINGs left unanswered ([`Misbehave::ignore_pings`]).
    pub pings_ignored: u64,
}

/// One proxy link as seen by the middle proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeLinkRecord {
    /// Sequence number (from 1, in accept order).
    pub id: u64,
    /// The proxy's address (what the KDF used as "clt").
    pub peer: SocketAddr,
    /// Whether the handshake completed, and with CRC-32C.
    pub established: bool,
    /// CRC-32C negotiated.
    pub crc32c: bool,
    /// Data frames received.
    pub frames_in: u64,
    /// Data frames sent.
    pub frames_out: u64,
    /// Why the link ended, if it ended on an error.
    pub error: Option<String>,
    /// The link has ended.
    pub closed: bool,
}

/// One `conn_id` as seen by the middle proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeConnRecord {
    /// Link id ([`MeLinkRecord::id`]).
    pub link: u64,
    /// The proxy's connection id.
    pub conn_id: u64,
    /// Flags of the last RPC_PROXY_REQ.
    pub flags: u32,
    /// Client address from the first request.
    pub client: SocketAddr,
    /// "Our address" from the first request.
    pub ours: SocketAddr,
    /// Ad tag of the last request.
    pub ad_tag: Option<[u8; 16]>,
    /// RPC_PROXY_REQ frames.
    pub requests: u64,
    /// Client payload bytes forwarded to the DC.
    pub bytes_to_dc: u64,
    /// RPC_PROXY_ANS frames sent.
    pub answers: u64,
    /// The proxy sent RPC_CLOSE_CONN / RPC_CLOSE_EXT.
    pub closed_by_proxy: bool,
    /// The DC side ended and RPC_CLOSE_EXT was sent.
    pub closed_by_dc: bool,
}

#[derive(Default)]
pub(super) struct Shared {
    pub(super) accepted: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) handshakes_ok: AtomicU64,
    pub(super) handshake_failures: AtomicU64,
    pub(super) bad_crc: AtomicU64,
    pub(super) frames_in: AtomicU64,
    pub(super) frames_out: AtomicU64,
    pub(super) dc_sessions: AtomicU64,
    pub(super) active: AtomicU64,
    pub(super) pings_out: AtomicU64,
    pub(super) pongs_in: AtomicU64,
    pub(super) pings_ignored: AtomicU64,
    pub(super) links: Mutex<Vec<MeLinkRecord>>,
    pub(super) conns: Mutex<Vec<MeConnRecord>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the records from the others.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(super) fn link(&self, id: u64, f: impl FnOnce(&mut MeLinkRecord)) {
        if let Some(l) = lock(&self.links).iter_mut().find(|l| l.id == id) {
            f(l);
        }
    }

    pub(super) fn conn(&self, link: u64, conn_id: u64, f: impl FnOnce(&mut MeConnRecord)) {
        if let Some(c) = lock(&self.conns)
            .iter_mut()
            .find(|c| c.link == link && c.conn_id == conn_id)
        {
            f(c);
        }
    }
}

/// A running test middle proxy. Dropping it stops the listener, every link
/// and every DC session.
pub struct TestMe {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TestMe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestMe").field("addr", &self.addr).finish()
    }
}

impl TestMe {
    /// Binds 127.0.0.1:0 and relays to the DC at `dc_addr` (inside a tokio runtime).
    pub async fn start(dc_addr: SocketAddr, opts: MeOptions) -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), dc_addr, opts).await
    }

    /// Binds `addr` and relays to the DC at `dc_addr`.
    pub async fn start_on(
        addr: SocketAddr,
        dc_addr: SocketAddr,
        opts: MeOptions,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let sh = Arc::clone(&shared);
        let opts = Arc::new(opts);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                sh.accepted.fetch_add(1, Ordering::Relaxed);
                if opts.misbehave.refuse {
                    sh.refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
                let id = {
                    let mut links = lock(&sh.links);
                    let id = links.len() as u64 + 1;
                    links.push(MeLinkRecord {
                        id,
                        peer,
                        established: false,
                        crc32c: false,
                        frames_in: 0,
                        frames_out: 0,
                        error: None,
                        closed: false,
                    });
                    id
                };
                sh.active.fetch_add(1, Ordering::Relaxed);
                let (sh2, opts2) = (Arc::clone(&sh), Arc::clone(&opts));
                let task = tokio::spawn(async move {
                    let res = serve(stream, peer, id, dc_addr, &opts2, &sh2).await;
                    sh2.link(id, |l| {
                        l.closed = true;
                        l.error = res.err();
                    });
                    sh2.active.fetch_sub(1, Ordering::Relaxed);
                });
                let mut tasks = lock(&sh.tasks);
                tasks.retain(|t| !t.is_finished());
                tasks.push(task.abort_handle());
            }
        });
        lock(&shared.tasks).push(accept.abort_handle());
        Ok(Self { addr, shared })
    }

    /// Bound address (what a proxy config lists).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counter snapshot.
    pub fn counters(&self) -> MeCounters {
        let s = &self.shared;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MeCounters {
            accepted: l(&s.accepted),
            refused: l(&s.refused),
            handshakes_ok: l(&s.handshakes_ok),
            handshake_failures: l(&s.handshake_failures),
            bad_crc: l(&s.bad_crc),
            frames_in: l(&s.frames_in),
            frames_out: l(&s.frames_out),
            dc_sessions: l(&s.dc_sessions),
            active: l(&s.active),
            pings_out: l(&s.pings_out),
            pongs_in: l(&s.pongs_in),
            pings_ignored: l(&s.pings_ignored),
        }
    }

    /// All links so far, in accept order.
    pub fn links(&self) -> Vec<MeLinkRecord> {
        lock(&self.shared.links).clone()
    }

    /// All connection ids so far, in first-request order.
    pub fn conns(&self) -> Vec<MeConnRecord> {
        lock(&self.shared.conns).clone()
    }

    /// Polls until `cond(self)` holds or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        crate::poll_until(timeout, Duration::from_millis(2), || cond(self)).await
    }
}

impl Drop for TestMe {
    fn drop(&mut self) {
        for t in lock(&self.shared.tasks).drain(..) {
            t.abort();
        }
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

fn count_error(sh: &Shared, e: &HandshakeError) {
    if matches!(e, HandshakeError::Rpc(RpcError::BadChecksum)) {
        sh.bad_crc.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the server handshake; `Err` carries the text recorded on the link.
async fn handshake(
    stream: &mut TcpStream,
    peer: SocketAddr,
    opts: &MeOptions,
    sh: &Shared,
) -> Result<RpcLink, String> {
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let mut secret = opts.proxy_secret.clone();
    if opts.misbehave.wrong_kdf {
        if let Some(last) = secret.last_mut() {
            *last ^= 0xff;
        }
    }
    let skewed = i64::from(unix_now()).saturating_add(opts.misbehave.clock_offset_secs);
    let now = u32::try_from(skewed.max(0)).unwrap_or(u32::MAX);
    let max_skew_secs = (opts.misbehave.clock_offset_secs == 0)
        .then_some(proto::me::handshake::MAX_CLOCK_SKEW_SECS);
    let params = HandshakeParams {
        proxy_secret: secret,
        proxy_addr: peer,
        me_addr: local,
        now,
        nonce: rand::random(),
        crc32c: opts.crc32c,
        pid: pid_bytes(local, std::process::id() as u16, now),
        max_skew_secs,
    };
    let mut hs = ServerHandshake::new(params).map_err(|e| e.to_string())?;
    if let Some(code) = opts.misbehave.reject_handshake {
        hs.reject_with(code);
    }
    let mut buf = vec![0u8; 4096];
    let run = async {
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("EOF during handshake".to_owned());
            }
            let mut out = Vec::new();
            let done = hs.feed(&buf[..n], &mut out);
            if !out.is_empty() {
                stream.write_all(&out).await.map_err(|e| e.to_string())?;
            }
            match done {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    count_error(sh, &e);
                    return Err(format!("handshake: {e}"));
                }
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| "handshake timeout".to_owned())??;
    hs.into_link()
        .ok_or_else(|| "handshake incomplete".to_owned())
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    dc_addr: SocketAddr,
    opts: &MeOptions,
    sh: &Shared,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let link = match handshake(&mut stream, peer, opts, sh).await {
        Ok(l) => l,
        Err(e) => {
            sh.handshake_failures.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    sh.handshakes_ok.fetch_add(1, Ordering::Relaxed);
    let crc32c = link.checksum == proto::me::Checksum::Crc32c;
    sh.link(id, |l| {
        l.established = true;
        l.crc32c = crc32c;
    });
    if opts.misbehave.stall_after_handshake {
        let mut buf = vec![0u8; 4096];
        while stream.read(&mut buf).await.map_err(|e| e.to_string())? > 0 {}
        return Ok(());
    }
    let (rd, wr) = stream.into_split();
    let mut l = Link::new(id, dc_addr, opts, sh, wr, link.sender);
    l.run(rd, link.receiver).await
}
