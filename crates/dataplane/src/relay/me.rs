//! Middle-proxy route relay (docs/PROTOCOL.md §7.8): one client session multiplexed on a
//! shared ME writer under its `conn_id`.
//!
//! Owns: cutting the client's decrypted stream into frames (§3, limits of §3.4) and sending
//! each as one RPC_PROXY_REQ with the user's ad tag and both addresses, and turning what the
//! writer delivers (answers, quick acks, closes) back into the client's framing. Must not:
//! touch the ME socket (the writer owns it) or wait on another session.
//!
//! ```text
//!  client ─► ClientIn ─► client_dec ─► FrameDecoder ─► PROXY_REQ(conn_id, tag, addrs, frame) ─► writer
//!  client ◄─ ClientOut ◄─ client_enc ◄─ frame header (+ padding) ◄─ Down::Data / Ack / Close ◄─ writer
//! ```

use std::io;
use std::net::SocketAddr;

use proto::framing::{
    encode_header, proxy_padding_len, quick_ack_answer, Decoded, FrameDecoder, FrameError, Framing,
    StreamSide,
};
use proto::me::rpc::flags;
use proto::me::write_proxy_req_header;
use proto::{AesCtr, CipherPair, Deframer};
use stats::{Stats, UserStats};
use tokio::net::TcpStream;

use super::{idle_watch, Activity, ChunkBuf, ClientIn, ClientOut, Meter, RelayEnd};
use crate::io_util::write_all;
use crate::me::writer::{Down, FlowLimits, SendError, SessionRx, Writer};
use crate::policy::{IdlePolicy, UserRuntime};

/// Everything one ME session needs.
pub(crate) struct MeRelay<'a> {
    pub(crate) client: &'a TcpStream,
    pub(crate) client_ciphers: Box<CipherPair>,
    pub(crate) deframer: Option<Deframer>,
    pub(crate) framing: Framing,
    /// Client bytes already decrypted by the handshake (the start of the framed stream).
    pub(crate) pending: Vec<u8>,
    pub(crate) user: &'a UserRuntime,
    pub(crate) user_stats: &'a UserStats,
    pub(crate) stats: &'a Stats,
    pub(crate) idle: IdlePolicy,
    pub(crate) throttle: &'a crate::ratelimit::Throttle,
    pub(crate) shaping: bool,
    pub(crate) max_frame: usize,
    pub(crate) writer: Writer,
    pub(crate) conn_id: u64,
    pub(crate) down: SessionRx,
    pub(crate) flow: FlowLimits,
    /// The client's address and the address it reached (RPC_PROXY_REQ, §7.6).
    pub(crate) client_addr: SocketAddr,
    pub(crate) our_addr: SocketAddr,
    pub(crate) ad_tag: Option<[u8; 16]>,
}

impl MeRelay<'_> {
    pub(crate) async fn run(self) -> RelayEnd {
        let activity = Activity::new();
        let MeRelay {
            client,
            mut client_ciphers,
            deframer,
            framing,
            pending,
            user,
            user_stats,
            stats,
            idle,
            throttle,
            shaping,
            max_frame,
            writer,
            conn_id,
            down,
            flow,
            client_addr,
            our_addr,
            ad_tag,
        } = self;
        let meter = Meter {
            user,
            stats: user_stats,
            throttle,
        };
        let client_out = ClientOut::new(deframer.is_some(), shaping);
        let CipherPair {
            decrypt: client_dec,
            encrypt: client_enc,
        } = &mut *client_ciphers;
        let up = Upstream {
            writer: &writer,
            conn_id,
            framing,
            max_frame,
            client_addr,
            our_addr,
            ad_tag,
            stats,
            enqueue_wait: flow.enqueue_wait,
        };
        let up = up.run(
            client,
            client_dec,
            ClientIn::new(deframer),
            pending,
            meter,
            &activity,
        );
        let down = Downstream {
            framing,
            flow,
            client_out,
        }
        .run(down, client, client_enc, meter, &activity);
        let both = async { tokio::try_join!(up, down) };
        let end = tokio::select! {
            r = both => match r {
                Ok(_) => RelayEnd::Closed,
                Err(e) => e,
            },
            end = idle_watch(&activity, idle) => end,
            _ = writer.shared.closed.cancelled() => RelayEnd::Cancelled("middle-proxy link lost"),
        };
        if !writer.release(conn_id) {
            stats
                .middle_proxy_counters()
                .rpc_proxy_req_signal_skipped_no_meta_total
                .inc();
        }
        end
    }
}

/// Client → middle proxy: one RPC_PROXY_REQ per client frame.
struct Upstream<'a> {
    writer: &'a Writer,
    conn_id: u64,
    framing: Framing,
    max_frame: usize,
    client_addr: SocketAddr,
    our_addr: SocketAddr,
    ad_tag: Option<[u8; 16]>,
    stats: &'a Stats,
    enqueue_wait: Option<std::time::Duration>,
}

impl Upstream<'_> {
    async fn run(
        self,
        client: &TcpStream,
        dec: &mut AesCtr,
        mut client_in: ClientIn,
        pending: Vec<u8>,
        meter: Meter<'_>,
        activity: &Activity,
    ) -> Result<(), RelayEnd> {
        let mut frames = FrameDecoder::new(self.framing, StreamSide::FromClient)
            .with_max_payload(self.max_frame);
        // Decrypted client bytes not yet cut into frames (at most one partial frame).
        let mut acc = pending;
        let mut buf = ChunkBuf::upstream();
        let base = match self.framing {
            Framing::Abridged => flags::ABRIDGED,
            Framing::Intermediate => flags::INTERMEDIATE,
            Framing::Padded => flags::INTERMEDIATE | flags::PAD,
        } | flags::MAGIC
            | flags::EXTMODE2;
        let mut good_frames = 0u64;
        let share = std::sync::Arc::new(tokio::sync::Semaphore::new(crate::me::writer::UP_SHARE));
        loop {
            let mut off = 0;
            loop {
                let frame = match frames.decode(&acc[off..]) {
                    Ok(Some(Decoded::Frame(f))) => f,
                    Ok(Some(Decoded::QuickAck { consumed, .. })) => {
                        off += consumed;
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let desync = self.stats.desync_counters();
                        desync.observe_desync(good_frames, true);
                        // A padded (secure) frame shorter than one word holds no 4-aligned
                        // payload: its length is all padding (docs/PROTOCOL.md §3.3).
                        if self.framing == Framing::Padded && matches!(e, FrameError::TooShort(_)) {
                            desync.secure_padding_invalid_total.inc();
                        }
                        tracing::debug!(conn_id = self.conn_id, error = %e, "client framing broken");
                        return Err(RelayEnd::Protocol(e.label()));
                    }
                };
                let payload = &acc[off + frame.payload.start..off + frame.payload.end];
                off += frame.consumed;
                if payload.is_empty() {
                    continue;
                }
                good_frames += 1;
                let mut f = base;
                if frame.quick_ack {
                    f |= flags::QUICKACK;
                }
                if payload.len() >= 8 && payload[..8] == [0u8; 8] {
                    f |= flags::NOT_ENCRYPTED;
                }
                let mut req = Vec::with_capacity(84 + payload.len());
                write_proxy_req_header(
                    f,
                    self.conn_id,
                    self.client_addr,
                    self.our_addr,
                    self.ad_tag.as_ref(),
                    &mut req,
                );
                req.extend_from_slice(payload);
                if let Err(e) = self.writer.send(req, &share, self.enqueue_wait).await {
                    self.stats
                        .middle_proxy_counters()
                        .rpc_proxy_req_signal_failed_total
                        .inc();
                    return Err(RelayEnd::Cancelled(match e {
                        SendError::Gone => "middle-proxy link lost",
                        SendError::Stalled => "middle-proxy link not draining",
                    }));
                }
                self.stats
                    .middle_proxy_counters()
                    .rpc_proxy_req_signal_sent_total
                    .inc();
            }
            acc.drain(..off);
            let n = loop {
                client.readable().await?;
                match client.try_read(buf.get()) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if n == 0 {
                // The client is gone; releasing the conn_id tells the middle proxy.
                return Err(RelayEnd::Closed);
            }
            activity.touch(true);
            meter.count_from_client(n);
            let b = buf.get();
            let chunk = client_in.deframe(&mut b[..n])?;
            let data = &mut b[..chunk.len];
            dec.apply_in_place(data);
            acc.extend_from_slice(data);
            meter.check_quota()?;
            meter.pace(true, n).await;
            if chunk.closed {
                return Err(RelayEnd::Closed);
            }
            buf.grow_if_full(n);
        }
    }
}

/// Middle proxy → client: answers framed in the client's framing, several per write.
struct Downstream {
    framing: Framing,
    flow: FlowLimits,
    client_out: ClientOut,
}

impl Downstream {
    async fn run(
        self,
        mut down: SessionRx,
        client: &TcpStream,
        enc: &mut AesCtr,
        meter: Meter<'_>,
        activity: &Activity,
    ) -> Result<(), RelayEnd> {
        let Downstream {
            framing,
            flow,
            mut client_out,
        } = self;
        let mut plain = Vec::new();
        let mut wire = Vec::new();
        loop {
            let Some(first) = down.recv().await else {
                return Err(RelayEnd::Cancelled("middle-proxy link lost"));
            };
            let mut closed = frame_down(first, framing, &mut plain)?;
            let mut frames = 1;
            while !closed && plain.len() < flow.batch_bytes && frames < flow.batch_frames {
                match down.try_recv() {
                    Some(d) => closed = frame_down(d, framing, &mut plain)?,
                    None => break,
                }
                frames += 1;
            }
            if !plain.is_empty() {
                activity.touch(false);
                enc.apply_in_place(&mut plain);
                // Plain clients get the buffer as it is; ee clients need record headers around it.
                let out = if client_out.is_tls() {
                    client_out.begin();
                    client_out.wrap(&plain, &mut wire);
                    &wire
                } else {
                    &plain
                };
                write_all(client, out).await?;
                let n = out.len();
                meter.count_to_client(n);
                plain.clear();
                wire.clear();
                meter.check_quota()?;
                meter.pace(false, n).await;
            }
            if closed {
                // The middle proxy closed this connection: the session ends.
                return Err(RelayEnd::Closed);
            }
        }
    }
}

/// Appends one delivery in the client's framing; `Ok(true)` = the middle proxy closed.
fn frame_down(d: Down, framing: Framing, out: &mut Vec<u8>) -> Result<bool, RelayEnd> {
    match d {
        Down::Data(packet, start) => {
            let data = packet.get(start..).unwrap_or_default();
            // The answer's quick-ack flag is not copied: a set top bit in a server → client
            // length means a quick-ack answer to the client (§3), not a frame.
            let pad = match framing {
                Framing::Padded => proxy_padding_len(rand::random()),
                _ => 0,
            };
            let h = encode_header(framing, data.len(), false, pad)
                .map_err(|e| RelayEnd::Protocol(e.label()))?;
            out.extend_from_slice(h.as_slice());
            out.extend_from_slice(data);
            let pad_at = out.len();
            out.resize(pad_at + pad, 0);
            rand::Rng::fill(&mut rand::thread_rng(), &mut out[pad_at..]);
            Ok(false)
        }
        Down::Ack(confirm) => {
            // As received for (padded) intermediate, byte-swapped for abridged (§7.8).
            out.extend_from_slice(&quick_ack_answer(framing, u32::from_le_bytes(confirm)));
            Ok(false)
        }
        Down::Close => Ok(true),
    }
}
