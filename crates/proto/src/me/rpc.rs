//! ME RPC packet framing and messages (docs/PROTOCOL.md §7.2, §7.3, §7.6, §7.7).
//!
//! Owns: the length/seq/checksum envelope (plaintext view: the caller applies
//! AES-256-CBC to whole 16-byte blocks, see [`super::CbcStream`]), the nonce and
//! handshake payloads, RPC_PROXY_REQ headers and the ME → proxy messages.
//! Must not: do I/O or keep link state beyond the expected sequence number.
//!
//! ```text
//!  packet:  LE32 total_len (= 12 + n) | LE32 seq_no | payload (n) | LE32 crc(0..8+n)
//!           seq: −2 nonce, −1 handshake, then 0, 1, 2 … per direction
//!           encrypted links pad each write to 16 bytes with words 04 00 00 00
//!  nonce:   aa87cb7a | key_select(4) | LE32 schema=1 | LE32 ts | nonce(16)
//!  handshake: f5ee8276 | LE32 flags | sender pid(12) | peer pid(12)
//!  PROXY_REQ: eef1ce36 | LE32 flags | LE64 conn_id | client ip16 | LE32 port
//!             | our ip16 | LE32 port | [LE32 24 | ae261edb | 10 | tag16 | 000000] | packet
//! ```

use std::net::{IpAddr, SocketAddr};

use super::crc::Checksum;

/// RPC_NONCE.
pub const RPC_NONCE: u32 = 0x7acb_87aa;
/// RPC_HANDSHAKE.
pub const RPC_HANDSHAKE: u32 = 0x7682_eef5;
/// RPC_HANDSHAKE_ERROR.
pub const RPC_HANDSHAKE_ERROR: u32 = 0x6a27_beda;
/// RPC_PROXY_REQ.
pub const RPC_PROXY_REQ: u32 = 0x36ce_f1ee;
/// RPC_PROXY_ANS.
pub const RPC_PROXY_ANS: u32 = 0x4403_da0d;
/// RPC_SIMPLE_ACK.
pub const RPC_SIMPLE_ACK: u32 = 0x3bac_409b;
/// RPC_CLOSE_EXT.
pub const RPC_CLOSE_EXT: u32 = 0x5eb6_34a2;
/// RPC_CLOSE_CONN.
pub const RPC_CLOSE_CONN: u32 = 0x1fcf_425d;
/// RPC_PING.
pub const RPC_PING: u32 = 0x5730_a2df;
/// RPC_PONG.
pub const RPC_PONG: u32 = 0x8430_eaa7;
/// TL_PROXY_TAG.
pub const TL_PROXY_TAG: u32 = 0xdb1e_26ae;
/// Handshake flag asking for CRC-32C.
pub const HANDSHAKE_FLAG_CRC32C: u32 = 0x800;
/// Largest `total_len`.
pub const MAX_PACKET_LEN: usize = 1 << 24;
/// Longest RPC_PROXY_REQ header: type, flags, conn_id, two 16-byte addresses with ports,
/// and the ad-tag extra block.
pub const PROXY_REQ_MAX_HEADER: usize = 4 + 4 + 8 + 20 + 20 + 4 + 24;
/// Longest client packet one RPC_PROXY_REQ can carry: a longer client frame would make a
/// packet no middle proxy accepts (§7.2), so the ME route refuses it as too large.
pub const MAX_PROXY_REQ_DATA: usize = MAX_PACKET_LEN - 12 - PROXY_REQ_MAX_HEADER;

/// PROXY_REQ flag bits (§7.7).
pub mod flags {
    /// Packet's auth_key_id is zero.
    pub const NOT_ENCRYPTED: u32 = 0x2;
    /// Ad tag block present.
    pub const HAS_AD_TAG: u32 = 0x8;
    /// Always set.
    pub const MAGIC: u32 = 0x1000;
    /// Always set.
    pub const EXTMODE2: u32 = 0x20000;
    /// Client uses padded intermediate.
    pub const PAD: u32 = 0x0800_0000;
    /// Client uses intermediate or padded.
    pub const INTERMEDIATE: u32 = 0x2000_0000;
    /// Client uses abridged.
    pub const ABRIDGED: u32 = 0x4000_0000;
    /// Client asked for a quick ack on this packet.
    pub const QUICKACK: u32 = 0x8000_0000;
}

/// ME RPC violations (each variant doubles as a link-failure label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// `total_len` outside 12..=2^24 or not a multiple of 4.
    #[error("RPC packet length {0} out of range")]
    BadLength(u32),
    /// Checksum mismatch.
    #[error("RPC packet checksum mismatch")]
    BadChecksum,
    /// Unexpected sequence number.
    #[error("RPC seq_no {got}, expected {want}")]
    BadSeq {
        /// Received.
        got: i32,
        /// Expected.
        want: i32,
    },
    /// Payload too short for its message type.
    #[error("RPC message {0:#010x} truncated")]
    Truncated(u32),
    /// Unexpected constructor.
    #[error("unexpected RPC message {0:#010x}")]
    UnexpectedType(u32),
    /// Nonce reply with another key selector or crypto schema.
    #[error("RPC nonce reply does not match ours: {0}")]
    NonceMismatch(&'static str),
    /// The ME refused the handshake.
    #[error("ME handshake error {0}")]
    HandshakeRejected(i32),
}

impl RpcError {
    /// Stable label for link-failure statistics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::BadLength(_) => "me_rpc_bad_length",
            Self::BadChecksum => "me_rpc_bad_checksum",
            Self::BadSeq { .. } => "me_rpc_bad_seq",
            Self::Truncated(_) => "me_rpc_truncated",
            Self::UnexpectedType(_) => "me_rpc_unexpected_type",
            Self::NonceMismatch(_) => "me_rpc_nonce_mismatch",
            Self::HandshakeRejected(_) => "me_rpc_handshake_rejected",
        }
    }
}

/// Appends one packet (plaintext) to `out`.
pub fn encode_packet(seq: i32, payload: &[u8], checksum: Checksum, out: &mut Vec<u8>) {
    let start = out.len();
    let total = (payload.len() + 12) as u32;
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = checksum.compute(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Pads `out` to a multiple of 16 bytes with `04 00 00 00` words (the length
/// of a packet is always a multiple of 4 on encrypted links).
pub fn pad_to_block(out: &mut Vec<u8>) {
    pad_tail_to_block(out, 0);
}

/// As [`pad_to_block`] for the bytes from `start` on only.
pub fn pad_tail_to_block(out: &mut Vec<u8>, start: usize) {
    while (out.len() - start) % 16 != 0 {
        out.extend_from_slice(&4u32.to_le_bytes());
    }
}

/// One decoded packet; `payload` indexes the buffer given to `decode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcPacket {
    /// Sequence number.
    pub seq: i32,
    /// Payload range.
    pub payload: std::ops::Range<usize>,
    /// Bytes consumed (padding words before the packet included).
    pub consumed: usize,
}

/// Incremental packet decoder for one direction (plaintext view).
#[derive(Clone, Debug)]
pub struct RpcPacketDecoder {
    checksum: Checksum,
    next_seq: i32,
}

impl RpcPacketDecoder {
    /// Expects the nonce packet (`seq = −2`) first.
    pub fn new() -> Self {
        Self {
            checksum: Checksum::Crc32,
            next_seq: -2,
        }
    }

    /// Switches the checksum (after the handshake negotiated CRC-32C).
    pub fn set_checksum(&mut self, c: Checksum) {
        self.checksum = c;
    }

    /// Decodes the next packet; `Ok(None)` = need more bytes.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<RpcPacket>, RpcError> {
        let mut off = 0;
        loop {
            let Some(h) = buf.get(off..off + 4) else {
                return Ok(None);
            };
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            if len == 4 {
                off += 4; // padding word
                continue;
            }
            // Payloads are TL (whole words); a length that is not a multiple
            // of 4 would also desynchronise the padding-word skip.
            if !(12..=MAX_PACKET_LEN as u32).contains(&len) || len % 4 != 0 {
                return Err(RpcError::BadLength(len));
            }
            let end = off + len as usize;
            let Some(pkt) = buf.get(off..end) else {
                return Ok(None);
            };
            let body = &pkt[..pkt.len() - 4];
            let c = &pkt[pkt.len() - 4..];
            if self.checksum.compute(body) != u32::from_le_bytes([c[0], c[1], c[2], c[3]]) {
                return Err(RpcError::BadChecksum);
            }
            let seq = i32::from_le_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
            if seq != self.next_seq {
                return Err(RpcError::BadSeq {
                    got: seq,
                    want: self.next_seq,
                });
            }
            self.next_seq = self.next_seq.wrapping_add(1);
            return Ok(Some(RpcPacket {
                seq,
                payload: off + 8..end - 4,
                consumed: end,
            }));
        }
    }
}

impl Default for RpcPacketDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The RPC_NONCE payload (§7.3 step 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcNonce {
    /// `proxy_secret[0..4]`.
    pub key_select: [u8; 4],
    /// Crypto schema (1 = AES).
    pub schema: u32,
    /// Sender's unix time.
    pub ts: u32,
    /// Sender's nonce.
    pub nonce: [u8; 16],
}

impl RpcNonce {
    /// 32-byte payload.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&RPC_NONCE.to_le_bytes());
        b[4..8].copy_from_slice(&self.key_select);
        b[8..12].copy_from_slice(&self.schema.to_le_bytes());
        b[12..16].copy_from_slice(&self.ts.to_le_bytes());
        b[16..].copy_from_slice(&self.nonce);
        b
    }

    /// Parses a nonce payload.
    pub fn parse(p: &[u8]) -> Result<Self, RpcError> {
        let ty = read_u32(p, 0).ok_or(RpcError::Truncated(0))?;
        if ty != RPC_NONCE {
            return Err(RpcError::UnexpectedType(ty));
        }
        let p: &[u8; 32] = p
            .get(..32)
            .and_then(|s| s.try_into().ok())
            .ok_or(RpcError::Truncated(ty))?;
        let mut key_select = [0u8; 4];
        key_select.copy_from_slice(&p[4..8]);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&p[16..]);
        Ok(Self {
            key_select,
            schema: u32::from_le_bytes([p[8], p[9], p[10], p[11]]),
            ts: u32::from_le_bytes([p[12], p[13], p[14], p[15]]),
            nonce,
        })
    }

    /// Checks the ME's reply against ours (§7.3 step 3, without the clock check).
    pub fn check_reply(&self, reply: &RpcNonce) -> Result<(), RpcError> {
        if reply.key_select != self.key_select {
            return Err(RpcError::NonceMismatch("key_select"));
        }
        if reply.schema != 1 {
            return Err(RpcError::NonceMismatch("crypto schema"));
        }
        Ok(())
    }
}

/// RPC_HANDSHAKE payload: `flags`, sender PID, peer PID (12 bytes each).
pub fn handshake_payload(flags: u32, sender_pid: &[u8; 12], peer_pid: &[u8; 12]) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&RPC_HANDSHAKE.to_le_bytes());
    b[4..8].copy_from_slice(&flags.to_le_bytes());
    b[8..20].copy_from_slice(sender_pid);
    b[20..].copy_from_slice(peer_pid);
    b
}

/// Parses the ME's handshake answer: `Ok(flags)` or the rejection.
pub fn parse_handshake_answer(p: &[u8]) -> Result<u32, RpcError> {
    let ty = read_u32(p, 0).ok_or(RpcError::Truncated(0))?;
    match ty {
        RPC_HANDSHAKE => {
            if p.len() < 32 {
                return Err(RpcError::Truncated(ty));
            }
            read_u32(p, 4).ok_or(RpcError::Truncated(ty))
        }
        RPC_HANDSHAKE_ERROR => {
            let code = read_u32(p, 4).ok_or(RpcError::Truncated(ty))?;
            Err(RpcError::HandshakeRejected(code as i32))
        }
        other => Err(RpcError::UnexpectedType(other)),
    }
}

fn read_u32(p: &[u8], off: usize) -> Option<u32> {
    let b = p.get(off..off + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(p: &[u8], off: usize) -> Option<u64> {
    let b = p.get(off..off + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Appends the RPC_PROXY_REQ header (84 bytes with a tag, 56 without) to
/// `out`; the client packet follows. `flags` gets `HAS_AD_TAG` set or cleared
/// to match `ad_tag`.
pub fn write_proxy_req_header(
    flags: u32,
    conn_id: u64,
    client: SocketAddr,
    ours: SocketAddr,
    ad_tag: Option<&[u8; 16]>,
    out: &mut Vec<u8>,
) {
    let flags = match ad_tag {
        Some(_) => flags | self::flags::HAS_AD_TAG,
        None => flags & !self::flags::HAS_AD_TAG,
    };
    out.extend_from_slice(&RPC_PROXY_REQ.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&conn_id.to_le_bytes());
    out.extend_from_slice(&ip16(client.ip()));
    out.extend_from_slice(&u32::from(client.port()).to_le_bytes());
    out.extend_from_slice(&ip16(ours.ip()));
    out.extend_from_slice(&u32::from(ours.port()).to_le_bytes());
    if let Some(tag) = ad_tag {
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&TL_PROXY_TAG.to_le_bytes());
        out.push(16);
        out.extend_from_slice(tag);
        out.extend_from_slice(&[0, 0, 0]);
    }
}

/// Messages an ME sends on an established link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeMessage {
    /// Data for a client; `data` indexes the payload.
    ProxyAns {
        /// Flags (bit 31: quick ack, telemt).
        flags: u32,
        /// Connection.
        conn_id: u64,
        /// Data range in the payload.
        data: std::ops::Range<usize>,
    },
    /// Quick-ack confirmation for a client.
    SimpleAck {
        /// Connection.
        conn_id: u64,
        /// Confirm bytes as received.
        confirm: [u8; 4],
    },
    /// Close a client (RPC_CLOSE_EXT or RPC_CLOSE_CONN).
    Close {
        /// Connection.
        conn_id: u64,
    },
    /// Ping to answer with a pong.
    Ping {
        /// Ping id.
        ping_id: u64,
    },
    /// Answer to our ping.
    Pong {
        /// Ping id.
        ping_id: u64,
    },
}

impl MeMessage {
    /// Parses one packet payload.
    pub fn parse(p: &[u8]) -> Result<Self, RpcError> {
        let ty = read_u32(p, 0).ok_or(RpcError::Truncated(0))?;
        let t = RpcError::Truncated(ty);
        match ty {
            RPC_PROXY_ANS => {
                let flags = read_u32(p, 4).ok_or(t.clone())?;
                let conn_id = read_u64(p, 8).ok_or(t)?;
                Ok(Self::ProxyAns {
                    flags,
                    conn_id,
                    data: 16..p.len(),
                })
            }
            RPC_SIMPLE_ACK => {
                let conn_id = read_u64(p, 4).ok_or(t.clone())?;
                let c = p.get(12..16).ok_or(t)?;
                Ok(Self::SimpleAck {
                    conn_id,
                    confirm: [c[0], c[1], c[2], c[3]],
                })
            }
            RPC_CLOSE_EXT | RPC_CLOSE_CONN => Ok(Self::Close {
                conn_id: read_u64(p, 4).ok_or(t)?,
            }),
            RPC_PING => Ok(Self::Ping {
                ping_id: read_u64(p, 4).ok_or(t)?,
            }),
            RPC_PONG => Ok(Self::Pong {
                ping_id: read_u64(p, 4).ok_or(t)?,
            }),
            other => Err(RpcError::UnexpectedType(other)),
        }
    }
}

/// A 12-byte payload `id || u64` (RPC_PING, RPC_PONG, RPC_CLOSE_*).
pub fn id_u64_payload(id: u32, v: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&id.to_le_bytes());
    b[4..].copy_from_slice(&v.to_le_bytes());
    b
}
