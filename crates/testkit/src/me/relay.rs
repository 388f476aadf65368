//! The relaying half of a `TestMe` link, after the handshake: decoding the
//! proxy's RPC frames, one obfuscated2 session to the DC per `conn_id`, and
//! the answers (docs/PROTOCOL.md §7.6, §7.8 seen from the middle proxy).
//!
//! Owns: the per-link session map and the frame counters. Must not: touch
//! the handshake or the listener (`server.rs`).
//!
//! ```text
//!  RPC_PROXY_REQ(conn_id, packet) ─► intermediate frame ─► DC session(conn_id)
//!  DC packet ─► RPC_PROXY_ANS(0, conn_id, packet)     DC EOF ─► RPC_CLOSE_EXT(conn_id)
//!  RPC_CLOSE_CONN(conn_id) ─► session dropped          RPC_PING ─► RPC_PONG
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use aes::cipher::StreamCipher;
use proto::me::{
    close_ext_payload, ping_payload, pong_payload, proxy_ans_payload, simple_ack_payload,
    ProxyMessage, ProxyReq, RpcError, RpcReceiver, RpcSender,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::server::{lock, MeConnRecord, MeOptions, Shared};
use crate::client::obfs::{self, Tag};

/// What a DC session reports to its link.
enum DcEvent {
    Packet(u64, Vec<u8>),
    Closed(u64),
}

/// One conn_id's obfuscated2 session to the DC; dropping it ends both tasks.
struct DcSession {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    tasks: [AbortHandle; 2],
}

impl Drop for DcSession {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub(super) struct Link<'a> {
    id: u64,
    dc_addr: SocketAddr,
    opts: &'a MeOptions,
    sh: &'a Shared,
    /// Payloads for the write task, each with "corrupt its checksum".
    out: mpsc::Sender<(Vec<u8>, bool)>,
    write_task: tokio::task::JoinHandle<io::Result<()>>,
    sessions: HashMap<u64, DcSession>,
    frames_in: u64,
    frames_out: u64,
}

impl<'a> Link<'a> {
    pub(super) fn new(
        id: u64,
        dc_addr: SocketAddr,
        opts: &'a MeOptions,
        sh: &'a Shared,
        wr: OwnedWriteHalf,
        sender: RpcSender,
    ) -> Self {
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        Self {
            id,
            dc_addr,
            opts,
            sh,
            out,
            write_task: tokio::spawn(write_loop(wr, sender, out_rx)),
            sessions: HashMap::new(),
            frames_in: 0,
            frames_out: 0,
        }
    }

    /// Serves the link until EOF, an error or a misbehaviour ends it.
    pub(super) async fn run(
        &mut self,
        mut rd: OwnedReadHalf,
        mut receiver: RpcReceiver,
    ) -> Result<(), String> {
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let mut buf = vec![0u8; 64 * 1024];
        let ping_every = self.opts.misbehave.ping_every;
        let mut next_ping = ping_every.map(|d| tokio::time::Instant::now() + d);
        loop {
            // Packets already buffered (they may have followed the handshake).
            loop {
                let pkt = match receiver.next_packet() {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        if e == RpcError::BadChecksum {
                            self.sh.bad_crc.fetch_add(1, Ordering::Relaxed);
                        }
                        return Err(format!("rpc: {e}"));
                    }
                };
                self.frames_in += 1;
                self.sh.frames_in.fetch_add(1, Ordering::Relaxed);
                let n = self.frames_in;
                self.sh.link(self.id, |l| l.frames_in = n);
                if self
                    .opts
                    .misbehave
                    .drop_after_frames
                    .is_some_and(|max| n >= max)
                {
                    return Ok(());
                }
                self.on_packet(&pkt, &ev_tx).await?;
            }
            tokio::select! {
                r = rd.read(&mut buf) => {
                    let n = r.map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Ok(());
                    }
                    receiver.feed(&buf[..n]);
                }
                Some(ev) = ev_rx.recv() => self.on_dc_event(ev).await?,
                _ = tokio::time::sleep_until(next_ping.unwrap_or_else(tokio::time::Instant::now)), if next_ping.is_some() => {
                    next_ping = ping_every.map(|d| tokio::time::Instant::now() + d);
                    self.sh.pings_out.fetch_add(1, Ordering::Relaxed);
                    self.send(ping_payload(PING_ID_BASE + self.id).to_vec()).await?;
                }
                r = &mut self.write_task => {
                    return match r {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(e) => Err(format!("write task: {e}")),
                    };
                }
            }
        }
    }

    async fn send(&mut self, payload: Vec<u8>) -> Result<(), String> {
        let corrupt = self.opts.misbehave.corrupt_crc_at == Some(self.frames_out);
        // Record before writing: a test that has the frame may read the records.
        self.frames_out += 1;
        self.sh.frames_out.fetch_add(1, Ordering::Relaxed);
        let n = self.frames_out;
        self.sh.link(self.id, |l| l.frames_out = n);
        self.out
            .send((payload, corrupt))
            .await
            .map_err(|_| "write task ended".to_owned())
    }

    async fn on_packet(
        &mut self,
        pkt: &[u8],
        ev_tx: &mpsc::UnboundedSender<DcEvent>,
    ) -> Result<(), String> {
        match ProxyMessage::parse(pkt).map_err(|e| format!("message: {e}"))? {
            ProxyMessage::ProxyReq(req) => self.on_proxy_req(pkt, req, ev_tx).await,
            ProxyMessage::Close { conn_id } => {
                self.sh.conn(self.id, conn_id, |c| c.closed_by_proxy = true);
                self.sessions.remove(&conn_id);
                Ok(())
            }
            ProxyMessage::Ping { .. } if self.opts.misbehave.ignore_pings => {
                self.sh.pings_ignored.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            ProxyMessage::Ping { ping_id } => self.send(pong_payload(ping_id).to_vec()).await,
            ProxyMessage::Pong { ping_id } => {
                if ping_id == PING_ID_BASE + self.id {
                    self.sh.pongs_in.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        }
    }

    async fn on_proxy_req(
        &mut self,
        pkt: &[u8],
        req: ProxyReq,
        ev_tx: &mpsc::UnboundedSender<DcEvent>,
    ) -> Result<(), String> {
        let data = pkt.get(req.data.clone()).unwrap_or(&[]);
        let conn_id = req.conn_id;
        {
            let mut conns = lock(&self.sh.conns);
            match conns
                .iter_mut()
                .find(|c| c.link == self.id && c.conn_id == conn_id)
            {
                Some(c) => {
                    c.flags = req.flags;
                    c.ad_tag = req.ad_tag;
                    c.requests += 1;
                    c.bytes_to_dc += data.len() as u64;
                }
                None => conns.push(MeConnRecord {
                    link: self.id,
                    conn_id,
                    flags: req.flags,
                    client: req.client,
                    ours: req.ours,
                    ad_tag: req.ad_tag,
                    requests: 1,
                    bytes_to_dc: data.len() as u64,
                    answers: 0,
                    closed_by_proxy: false,
                    closed_by_dc: false,
                }),
            }
        }
        if !self.sessions.contains_key(&conn_id) {
            let s = open_dc_session(self.dc_addr, self.opts.dc, conn_id, ev_tx.clone())
                .await
                .map_err(|e| format!("DC connect: {e}"))?;
            self.sh.dc_sessions.fetch_add(1, Ordering::Relaxed);
            self.sessions.insert(conn_id, s);
        }
        if self.opts.misbehave.ack_quick_requests
            && req.flags & proto::me::rpc::flags::QUICKACK != 0
        {
            let ack = simple_ack_payload(conn_id, super::server::QUICK_ACK_CONFIRM);
            self.send(ack.to_vec()).await?;
        }
        if let Some(s) = self.sessions.get(&conn_id) {
            // A send error means the DC side already ended; its Closed event follows.
            let _ = s.tx.send(obfs::frame(Tag::Intermediate, data));
        }
        Ok(())
    }

    async fn on_dc_event(&mut self, ev: DcEvent) -> Result<(), String> {
        match ev {
            DcEvent::Packet(conn_id, data) => {
                if self.opts.misbehave.unknown_before_answers {
                    // A type no proxy knows, with a body: the proxy must skip it.
                    let mut odd = 0x7e57_0001u32.to_le_bytes().to_vec();
                    odd.extend_from_slice(&conn_id.to_le_bytes());
                    self.send(odd).await?;
                }
                let mut ans = Vec::with_capacity(16 + data.len());
                proxy_ans_payload(0, conn_id, &data, &mut ans);
                self.sh.conn(self.id, conn_id, |c| c.answers += 1);
                self.send(ans).await?;
            }
            DcEvent::Closed(conn_id) => {
                if self.sessions.remove(&conn_id).is_some() {
                    self.sh.conn(self.id, conn_id, |c| c.closed_by_dc = true);
                    self.send(close_ext_payload(conn_id).to_vec()).await?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for Link<'_> {
    fn drop(&mut self) {
        self.write_task.abort();
    }
}

/// Our RPC_PING ids: this plus the link id.
const PING_ID_BASE: u64 = 0x5157_0000_0000_0000;

/// Payloads queued for the write task; a full queue holds the link's reader, as a blocked
/// socket write would.
const OUT_QUEUE: usize = 64;
/// Bytes batched into one socket write.
const WRITE_BATCH: usize = 256 * 1024;

/// Encrypts and writes what the link queues, batching what is already waiting: encryption
/// and writing then overlap with the link's reading on another core.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut sender: RpcSender,
    mut rx: mpsc::Receiver<(Vec<u8>, bool)>,
) -> io::Result<()> {
    let mut out = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some((payload, corrupt)) = next.take() {
            sender.send_tampered(&payload, &mut out, |p| {
                if corrupt {
                    if let Some(b) = p.last_mut() {
                        *b ^= 0x5a;
                    }
                }
            });
            if out.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        wr.write_all(&out).await?;
        out.clear();
    }
    Ok(())
}

async fn open_dc_session(
    dc_addr: SocketAddr,
    dc: i16,
    conn_id: u64,
    events: mpsc::UnboundedSender<DcEvent>,
) -> io::Result<DcSession> {
    let mut stream = TcpStream::connect(dc_addr).await?;
    stream.set_nodelay(true)?;
    let init = obfs::new_init(Tag::Intermediate, dc, None);
    stream.write_all(&init.wire).await?;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let mut enc = init.enc;
    let writer = tokio::spawn(async move {
        while let Some(mut frame) = rx.recv().await {
            enc.apply_keystream(&mut frame);
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut dec = init.dec;
    let reader = tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match obfs::deframe(Tag::Intermediate, &pending) {
                obfs::Deframed::Packet {
                    consumed, payload, ..
                } => {
                    pending.drain(..consumed);
                    if events.send(DcEvent::Packet(conn_id, payload)).is_err() {
                        return;
                    }
                }
                obfs::Deframed::Invalid(_) => break,
                obfs::Deframed::Incomplete => match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        dec.apply_keystream(&mut buf[..n]);
                        pending.extend_from_slice(&buf[..n]);
                    }
                },
            }
        }
        let _ = events.send(DcEvent::Closed(conn_id));
    });
    Ok(DcSession {
        tx,
        tasks: [writer.abort_handle(), reader.abort_handle()],
    })
}
