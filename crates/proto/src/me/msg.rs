//! ME RPC messages seen from both ends of a link (docs/PROTOCOL.md §7.3, §7.6).
//!
//! Owns: parsing what the proxy sends (RPC_PROXY_REQ, RPC_CLOSE_CONN, …) —
//! the middle proxy's view — and building what the middle proxy sends
//! (RPC_PROXY_ANS, RPC_SIMPLE_ACK, RPC_CLOSE_EXT, RPC_HANDSHAKE_ERROR), plus
//! the full RPC_HANDSHAKE parse. Must not: hold link or session state.
//!
//! ```text
//!  PROXY_REQ: eef1ce36 | LE32 flags | LE64 conn_id | client ip16 | LE32 port
//!             | our ip16 | LE32 port | [LE32 extra_size | extra] | packet
//!  extra:     ae261edb | TL string (len byte < 254 | bytes | pad to 4) | …
//!  PROXY_ANS: 0dda0344 | LE32 flags | LE64 conn_id | data
//!  SIMPLE_ACK: 9b40ac3b | LE64 conn_id | confirm(4)
//!  CLOSE_EXT / CLOSE_CONN / PING / PONG: id | LE64
//!  HANDSHAKE: f5ee8276 | LE32 flags | sender pid(12) | peer pid(12)
//!  HANDSHAKE_ERROR: dabe276a | LE32 error | sender pid(12)
//! ```

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use super::rpc::{
    id_u64_payload, RpcError, RPC_CLOSE_CONN, RPC_CLOSE_EXT, RPC_HANDSHAKE, RPC_HANDSHAKE_ERROR,
    RPC_PING, RPC_PONG, RPC_PROXY_ANS, RPC_PROXY_REQ, RPC_SIMPLE_ACK, TL_PROXY_TAG,
};

/// Fixed RPC_PROXY_REQ header length (without the extra block).
pub const PROXY_REQ_FIXED: usize = 56;

/// Why an RPC_PROXY_REQ is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyReqError {
    /// Shorter than its fixed fields.
    #[error("RPC_PROXY_REQ truncated at offset {0}")]
    Truncated(usize),
    /// Not an RPC_PROXY_REQ.
    #[error("not an RPC_PROXY_REQ: {0:#010x}")]
    NotProxyReq(u32),
    /// A port field above 65535.
    #[error("RPC_PROXY_REQ port field {0} out of range")]
    BadPort(u32),
    /// `extra_size` not a multiple of 4 or past the end.
    #[error("RPC_PROXY_REQ extra_size {0} invalid")]
    BadExtraSize(u32),
    /// Flag 0x8 set but the extra block has no 16-byte TL_PROXY_TAG string.
    #[error("RPC_PROXY_REQ ad tag block malformed: {0}")]
    BadAdTag(&'static str),
}

/// A parsed RPC_PROXY_REQ; `data` indexes the payload given to [`ProxyReq::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyReq {
    /// Flags (docs/PROTOCOL.md §7.7).
    pub flags: u32,
    /// Connection id chosen by the proxy.
    pub conn_id: u64,
    /// The client's address (IPv4-mapped addresses come back as IPv4).
    pub client: SocketAddr,
    /// The address the client reached.
    pub ours: SocketAddr,
    /// Ad tag, when flag 0x8 carried one.
    pub ad_tag: Option<[u8; 16]>,
    /// The client packet.
    pub data: Range<usize>,
}

fn u32_at(p: &[u8], off: usize) -> Result<u32, ProxyReqError> {
    let b = p.get(off..off + 4).ok_or(ProxyReqError::Truncated(off))?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn addr_at(p: &[u8], off: usize) -> Result<SocketAddr, ProxyReqError> {
    let b: [u8; 16] = p
        .get(off..off + 16)
        .and_then(|s| s.try_into().ok())
        .ok_or(ProxyReqError::Truncated(off))?;
    let port = u32_at(p, off + 16)?;
    let port = u16::try_from(port).map_err(|_| ProxyReqError::BadPort(port))?;
    let v6 = Ipv6Addr::from(b);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Reads the TL_PROXY_TAG entry of an extra block.
fn parse_tag(extra: &[u8]) -> Result<[u8; 16], ProxyReqError> {
    let id = extra
        .get(..4)
        .ok_or(ProxyReqError::BadAdTag("extra block shorter than an id"))?;
    if id != TL_PROXY_TAG.to_le_bytes() {
        return Err(ProxyReqError::BadAdTag("first entry is not TL_PROXY_TAG"));
    }
    match extra.get(4) {
        Some(16) => {}
        Some(_) => return Err(ProxyReqError::BadAdTag("tag length is not 16")),
        None => return Err(ProxyReqError::BadAdTag("no tag length")),
    }
    extra
        .get(5..21)
        .and_then(|s| s.try_into().ok())
        .ok_or(ProxyReqError::BadAdTag("tag bytes truncated"))
}

impl ProxyReq {
    /// Parses one RPC_PROXY_REQ payload.
    pub fn parse(p: &[u8]) -> Result<Self, ProxyReqError> {
        let ty = u32_at(p, 0)?;
        if ty != RPC_PROXY_REQ {
            return Err(ProxyReqError::NotProxyReq(ty));
        }
        let flags = u32_at(p, 4)?;
        let conn_id = p
            .get(8..16)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_le_bytes)
            .ok_or(ProxyReqError::Truncated(8))?;
        let client = addr_at(p, 16)?;
        let ours = addr_at(p, 36)?;
        let (ad_tag, start) = if flags & super::rpc::flags::HAS_AD_TAG != 0 {
            let size = u32_at(p, PROXY_REQ_FIXED)?;
            let end = (PROXY_REQ_FIXED + 4).checked_add(size as usize);
            let extra = match end {
                Some(end) if size % 4 == 0 => p.get(PROXY_REQ_FIXED + 4..end),
                _ => None,
            }
            .ok_or(ProxyReqError::BadExtraSize(size))?;
            (Some(parse_tag(extra)?), PROXY_REQ_FIXED + 4 + extra.len())
        } else {
            (None, PROXY_REQ_FIXED)
        };
        Ok(Self {
            flags,
            conn_id,
            client,
            ours,
            ad_tag,
            data: start..p.len(),
        })
    }
}

/// Messages a proxy sends on an established link (the middle proxy's view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyMessage {
    /// Client data.
    ProxyReq(ProxyReq),
    /// The proxy's client is gone (RPC_CLOSE_CONN; RPC_CLOSE_EXT is accepted too).
    Close {
        /// Connection.
        conn_id: u64,
    },
    /// Ping to answer with a pong.
    Ping {
        /// Ping id.
        ping_id: u64,
    },
    /// Answer to a ping.
    Pong {
        /// Ping id.
        ping_id: u64,
    },
}

/// Why a proxy → ME message did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyMessageError {
    /// Envelope-level problem (truncated, unknown id).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// Malformed RPC_PROXY_REQ.
    #[error(transparent)]
    ProxyReq(#[from] ProxyReqError),
}

fn id_u64(p: &[u8], ty: u32) -> Result<u64, RpcError> {
    p.get(4..12)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
        .ok_or(RpcError::Truncated(ty))
}

impl ProxyMessage {
    /// Parses one packet payload.
    pub fn parse(p: &[u8]) -> Result<Self, ProxyMessageError> {
        let ty = p
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(RpcError::Truncated(0))?;
        Ok(match ty {
            RPC_PROXY_REQ => Self::ProxyReq(ProxyReq::parse(p)?),
            RPC_CLOSE_CONN | RPC_CLOSE_EXT => Self::Close {
                conn_id: id_u64(p, ty)?,
            },
            RPC_PING => Self::Ping {
                ping_id: id_u64(p, ty)?,
            },
            RPC_PONG => Self::Pong {
                ping_id: id_u64(p, ty)?,
            },
            other => return Err(RpcError::UnexpectedType(other).into()),
        })
    }
}

/// Appends an RPC_PROXY_ANS payload.
pub fn proxy_ans_payload(flags: u32, conn_id: u64, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&RPC_PROXY_ANS.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&conn_id.to_le_bytes());
    out.extend_from_slice(data);
}

/// RPC_SIMPLE_ACK payload.
pub fn simple_ack_payload(conn_id: u64, confirm: [u8; 4]) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&RPC_SIMPLE_ACK.to_le_bytes());
    b[4..12].copy_from_slice(&conn_id.to_le_bytes());
    b[12..].copy_from_slice(&confirm);
    b
}

/// RPC_CLOSE_EXT payload (middle proxy → proxy).
pub fn close_ext_payload(conn_id: u64) -> [u8; 12] {
    id_u64_payload(RPC_CLOSE_EXT, conn_id)
}

/// RPC_CLOSE_CONN payload (proxy → middle proxy).
pub fn close_conn_payload(conn_id: u64) -> [u8; 12] {
    id_u64_payload(RPC_CLOSE_CONN, conn_id)
}

/// RPC_PING payload.
pub fn ping_payload(ping_id: u64) -> [u8; 12] {
    id_u64_payload(RPC_PING, ping_id)
}

/// RPC_PONG payload.
pub fn pong_payload(ping_id: u64) -> [u8; 12] {
    id_u64_payload(RPC_PONG, ping_id)
}

/// RPC_HANDSHAKE_ERROR payload.
pub fn handshake_error_payload(code: i32, sender_pid: &[u8; 12]) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&RPC_HANDSHAKE_ERROR.to_le_bytes());
    b[4..8].copy_from_slice(&code.to_le_bytes());
    b[8..].copy_from_slice(sender_pid);
    b
}

/// A parsed RPC_HANDSHAKE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Flags (0x800: CRC-32C).
    pub flags: u32,
    /// Sender's PID.
    pub sender_pid: [u8; 12],
    /// The PID the sender believes its peer has.
    pub peer_pid: [u8; 12],
}

impl Handshake {
    /// Parses an RPC_HANDSHAKE payload; RPC_HANDSHAKE_ERROR becomes
    /// [`RpcError::HandshakeRejected`].
    pub fn parse(p: &[u8]) -> Result<Self, RpcError> {
        let ty = p
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(RpcError::Truncated(0))?;
        match ty {
            RPC_HANDSHAKE => {
                let b: &[u8; 32] = p
                    .get(..32)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(RpcError::Truncated(ty))?;
                let mut sender_pid = [0u8; 12];
                sender_pid.copy_from_slice(&b[8..20]);
                let mut peer_pid = [0u8; 12];
                peer_pid.copy_from_slice(&b[20..32]);
                Ok(Self {
                    flags: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                    sender_pid,
                    peer_pid,
                })
            }
            RPC_HANDSHAKE_ERROR => {
                let c = p.get(4..8).ok_or(RpcError::Truncated(ty))?;
                Err(RpcError::HandshakeRejected(i32::from_le_bytes([
                    c[0], c[1], c[2], c[3],
                ])))
            }
            other => Err(RpcError::UnexpectedType(other)),
        }
    }
}
