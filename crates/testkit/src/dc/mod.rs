//! `TestDc`: a stand-in Telegram DC on 127.0.0.1. It accepts an obfuscated2 link the way a
//! real DC does (no secret, keys straight from the init, docs/PROTOCOL.md §6.3 seen from the
//! receiving side), records the tag and DC index, then echoes, sinks, or answers
//! `req_pq_multi` with a `resPQ`.

pub mod mtproto;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aes::cipher::StreamCipher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::client::obfs::{self, Tag};

/// What the DC does after the init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DcMode {
    /// Decrypt, re-encrypt with the answer stream, send back.
    Echo,
    /// Decrypt and count.
    Sink,
    /// Parse client framing and answer `req_pq_multi` with `resPQ`.
    MtProto,
}

/// Per-connection facts.
#[derive(Debug, Clone)]
pub struct DcSession {
    /// Sequence number (from 1, in accept order of completed inits).
    pub id: u64,
    /// Peer address (the proxy's outgoing socket).
    pub peer: SocketAddr,
    /// Raw decrypted tag bytes.
    pub raw_tag: [u8; 4],
    /// Parsed tag (`None`: garbage, the DC closed the link).
    pub tag: Option<Tag>,
    /// DC index from the init.
    pub dc: i16,
    /// Decrypted bytes received after the init.
    pub bytes_in: u64,
    /// Bytes sent back.
    pub bytes_out: u64,
    /// The connection has ended.
    pub closed: bool,
}

/// A message the DC saw in MtProto mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcMessage {
    /// `req_pq_multi` (or `req_pq`), answered with a `resPQ`.
    ReqPq {
        /// Session id.
        session: u64,
        /// Client message id.
        msg_id: i64,
        /// Client nonce.
        nonce: [u8; 16],
        /// Server nonce sent back in the `resPQ`.
        server_nonce: [u8; 16],
    },
    /// Any other packet (not answered).
    Other {
        /// Session id.
        session: u64,
        /// `auth_key_id` (non-zero: an encrypted message).
        auth_key_id: u64,
        /// Body constructor, if unencrypted.
        constructor: Option<u32>,
        /// Packet length.
        len: usize,
    },
    /// A framing or message error (the DC closed the connection).
    Malformed {
        /// Session id.
        session: u64,
        /// What was wrong.
        reason: String,
    },
}

/// Global counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DcCounters {
    /// TCP connections accepted.
    pub accepted: u64,
    /// Inits with a valid tag.
    pub sessions: u64,
    /// Inits whose tag was not one of the three (closed).
    pub bad_inits: u64,
    /// Decrypted bytes received after inits, all sessions.
    pub bytes_in: u64,
    /// Bytes sent, all sessions.
    pub bytes_out: u64,
    /// Connections currently open.
    pub active: u64,
}

struct SessionSlot {
    info: DcSession,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
}

#[derive(Default)]
struct Shared {
    accepted: AtomicU64,
    sessions_n: AtomicU64,
    bad_inits: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    active: AtomicU64,
    sessions: Mutex<Vec<SessionSlot>>,
    messages: Mutex<Vec<DcMessage>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the log from the others.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running test DC. Dropping it stops the listener and all its connections.
pub struct TestDc {
    addr: SocketAddr,
    mode: DcMode,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TestDc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDc")
            .field("addr", &self.addr)
            .field("mode", &self.mode)
            .finish()
    }
}

/// How long the DC waits for the 64-byte init.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

impl TestDc {
    /// Binds 127.0.0.1:0 and starts accepting (must be called inside a tokio runtime).
    pub async fn start(mode: DcMode) -> io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(io::Error::other)?, mode).await
    }

    /// Binds `addr` and starts accepting.
    pub async fn start_on(addr: SocketAddr, mode: DcMode) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let sh = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                sh.accepted.fetch_add(1, Ordering::Relaxed);
                sh.active.fetch_add(1, Ordering::Relaxed);
                let sh2 = Arc::clone(&sh);
                let task = tokio::spawn(async move {
                    let _ = serve(stream, peer, mode, &sh2).await;
                    sh2.active.fetch_sub(1, Ordering::Relaxed);
                });
                let mut tasks = lock(&sh.tasks);
                tasks.retain(|t| !t.is_finished());
                tasks.push(task.abort_handle());
            }
        });
        lock(&shared.tasks).push(accept.abort_handle());
        Ok(Self { addr, mode, shared })
    }

    /// Bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Mode.
    pub fn mode(&self) -> DcMode {
        self.mode
    }

    /// Counter snapshot.
    pub fn counters(&self) -> DcCounters {
        let s = &self.shared;
        DcCounters {
            accepted: s.accepted.load(Ordering::Relaxed),
            sessions: s.sessions_n.load(Ordering::Relaxed),
            bad_inits: s.bad_inits.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
            active: s.active.load(Ordering::Relaxed),
        }
    }

    /// Snapshot of all sessions (including ones with a bad init), in order.
    pub fn sessions(&self) -> Vec<DcSession> {
        lock(&self.shared.sessions)
            .iter()
            .map(|s| {
                let mut i = s.info.clone();
                i.bytes_in = s.bytes_in.load(Ordering::Relaxed);
                i.bytes_out = s.bytes_out.load(Ordering::Relaxed);
                i.closed = s.closed.load(Ordering::Relaxed);
                i
            })
            .collect()
    }

    /// Received-message log (MtProto mode).
    pub fn messages(&self) -> Vec<DcMessage> {
        lock(&self.shared.messages).clone()
    }

    /// Polls until `cond(self)` holds or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        crate::poll_until(timeout, Duration::from_millis(2), || cond(self)).await
    }
}

impl Drop for TestDc {
    fn drop(&mut self) {
        for t in lock(&self.shared.tasks).drain(..) {
            t.abort();
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    mode: DcMode,
    sh: &Shared,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut init = [0u8; obfs::INIT_LEN];
    tokio::time::timeout(INIT_TIMEOUT, stream.read_exact(&mut init))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no init"))??;
    let r = obfs::open_init(&init, None);
    let bytes_in = Arc::new(AtomicU64::new(0));
    let bytes_out = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let id = {
        let mut sessions = lock(&sh.sessions);
        let id = sessions.len() as u64 + 1;
        sessions.push(SessionSlot {
            info: DcSession {
                id,
                peer,
                raw_tag: r.raw_tag,
                tag: r.tag,
                dc: r.dc,
                bytes_in: 0,
                bytes_out: 0,
                closed: false,
            },
            bytes_in: Arc::clone(&bytes_in),
            bytes_out: Arc::clone(&bytes_out),
            closed: Arc::clone(&closed),
        });
        id
    };
    let Some(tag) = r.tag else {
        sh.bad_inits.fetch_add(1, Ordering::Relaxed);
        closed.store(true, Ordering::Relaxed);
        return Ok(());
    };
    sh.sessions_n.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        stream,
        dec: r.dec,
        enc: r.enc,
        bytes_in,
        bytes_out,
        sh,
    };
    let res = match mode {
        DcMode::Echo | DcMode::Sink => conn.pump(mode == DcMode::Echo).await,
        DcMode::MtProto => conn.mtproto(id, tag).await,
    };
    closed.store(true, Ordering::Relaxed);
    res
}

struct Conn<'a> {
    stream: TcpStream,
    dec: obfs::Ctr,
    enc: obfs::Ctr,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    sh: &'a Shared,
}

impl Conn<'_> {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf).await?;
        self.dec.apply_keystream(&mut buf[..n]);
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        self.sh.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    async fn write(&mut self, data: &mut [u8]) -> io::Result<()> {
        self.enc.apply_keystream(data);
        self.stream.write_all(data).await?;
        self.bytes_out
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.sh
            .bytes_out
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn pump(&mut self, echo: bool) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.read_some(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            if echo {
                self.write(&mut buf[..n]).await?;
            }
        }
    }

    async fn mtproto(&mut self, session: u64, tag: Tag) -> io::Result<()> {
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match obfs::deframe(tag, &pending) {
                obfs::Deframed::Incomplete => {
                    let n = self.read_some(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    pending.extend_from_slice(&buf[..n]);
                }
                obfs::Deframed::Invalid(reason) => {
                    lock(&self.sh.messages).push(DcMessage::Malformed { session, reason });
                    return Ok(());
                }
                obfs::Deframed::Packet {
                    consumed, payload, ..
                } => {
                    pending.drain(..consumed);
                    self.answer(session, tag, &payload).await?;
                }
            }
        }
    }

    async fn answer(&mut self, session: u64, tag: Tag, packet: &[u8]) -> io::Result<()> {
        let msg = match mtproto::parse_plain(packet) {
            Ok(m) => m,
            Err(reason) => {
                lock(&self.sh.messages).push(DcMessage::Malformed { session, reason });
                return Ok(());
            }
        };
        let Some(nonce) = mtproto::req_pq_nonce(&msg) else {
            lock(&self.sh.messages).push(DcMessage::Other {
                session,
                auth_key_id: msg.auth_key_id,
                constructor: msg.constructor,
                len: packet.len(),
            });
            return Ok(());
        };
        let server_nonce: [u8; 16] = rand::random();
        // Log before answering so a client that has the answer can rely on the log entry.
        lock(&self.sh.messages).push(DcMessage::ReqPq {
            session,
            msg_id: msg.msg_id,
            nonce,
            server_nonce,
        });
        let reply = mtproto::plain_message(&mtproto::res_pq_body(&nonce, &server_nonce));
        let mut framed = obfs::frame(tag, &reply);
        self.write(&mut framed).await
    }
}

#[cfg(test)]
mod tests;
