//! STUN binding (RFC 5389) as the NAT probe uses it (docs/PROTOCOL.md §7.5).
//!
//! Owns: the 20-byte binding request, the parse of a binding success response down to the
//! reflected transport address (XOR-MAPPED-ADDRESS preferred over MAPPED-ADDRESS, IPv4 and
//! IPv6), the size of one message on a TCP stream, and the encoding of a success response
//! (used by the round-trip tests and the fuzz target). Must not: send anything, keep
//! timers, choose servers or verify MESSAGE-INTEGRITY / FINGERPRINT (no credentials are
//! used by a binding probe; those attributes are walked past like any other).
//!
//! ```text
//!  0       2       4               8                              20
//!  +-------+-------+---------------+------------------------------+
//!  | type  |  len  | 21 12 a4 42   | transaction id (12, random)  |   len = attribute bytes
//!  +-------+-------+---------------+------------------------------+   (a multiple of 4)
//!  type 00 01 binding request, 01 01 success response, 01 11 error response;
//!  the top two bits of the type are 0 (they tell STUN from other traffic on a port).
//!
//!  attribute:  | BE16 type | BE16 len | value (len bytes) | pad to a multiple of 4 |
//!  00 01 MAPPED-ADDRESS / 00 20 XOR-MAPPED-ADDRESS value:
//!     | 00 | family (01 v4, 02 v6) | BE16 port | address (4 or 16) |
//!     XOR-MAPPED: port ^ 21 12; v4 address ^ 21 12 a4 42;
//!                 v6 address ^ (21 12 a4 42 || transaction id)
//!  UDP: one message per datagram. TCP (RFC 5389 §7.2.2): messages back to back with no extra
//!  framing, one message = 20 + len bytes ([`message_len`]).
//! ```
//!
//! Checked against the RFC 5769 §2.2 (IPv4) and §2.3 (IPv6) sample responses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed magic cookie (RFC 5389 §6).
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// Header length.
pub const HEADER_LEN: usize = 20;
/// Binding request message type.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Binding success response message type.
pub const BINDING_SUCCESS: u16 = 0x0101;
/// Binding error response message type.
pub const BINDING_ERROR: u16 = 0x0111;
/// MAPPED-ADDRESS attribute (RFC 3489 servers send only this one).
pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// XOR-MAPPED-ADDRESS attribute.
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// Longest message: the length field is 16 bits.
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + u16::MAX as usize;

/// A 96-bit transaction id (random per request, echoed by the server).
pub type TransactionId = [u8; 12];

/// Why bytes are not a usable STUN message or binding answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Fewer than the 20 header bytes.
    #[error("STUN message of {0} bytes is shorter than the 20-byte header")]
    TooShort(usize),
    /// One of the top two bits of the type is set: not STUN.
    #[error("first byte {0:#04x} has a top bit set: not a STUN message")]
    NotStun(u8),
    /// The magic cookie is missing (an RFC 3489 server or another protocol).
    #[error("magic cookie {0:02x?} is not 21 12 a4 42")]
    BadCookie([u8; 4]),
    /// The length field is not a multiple of 4.
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// The length field promises more bytes than were received.
    #[error("message length {declared} but {available} attribute bytes received")]
    Truncated {
        /// Length field.
        declared: usize,
        /// Bytes after the header.
        available: usize,
    },
    /// Bytes after the message in a datagram.
    #[error("{0} bytes after the end of the message")]
    TrailingBytes(usize),
    /// A binding error response (the server refused).
    #[error("binding error response")]
    ErrorResponse,
    /// Another message type where a binding request / success response was expected.
    #[error("unexpected message type {0:#06x}")]
    UnexpectedType(u16),
    /// The answer is for another request.
    #[error("transaction id does not match the request")]
    TransactionMismatch,
    /// An attribute header or value (with its padding) runs past the message end.
    #[error("attribute at offset {0} runs past the end of the message")]
    AttributeTruncated(usize),
    /// An address attribute with an unknown family byte.
    #[error("address attribute {attr:#06x} has unknown family {family:#04x}")]
    BadFamily {
        /// Attribute type.
        attr: u16,
        /// Family byte.
        family: u8,
    },
    /// An address attribute whose length does not fit its family.
    #[error("address attribute {attr:#06x} has length {len}, wrong for its family")]
    BadAddressLength {
        /// Attribute type.
        attr: u16,
        /// Attribute length.
        len: u16,
    },
    /// A success response with neither address attribute.
    #[error("binding response carries no (XOR-)MAPPED-ADDRESS")]
    NoMappedAddress,
}

impl StunError {
    /// Stable label (logs, counters).
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooShort(_) => "stun_too_short",
            Self::NotStun(_) => "stun_not_stun",
            Self::BadCookie(_) => "stun_bad_cookie",
            Self::UnalignedLength(_) => "stun_unaligned_length",
            Self::Truncated { .. } => "stun_truncated",
            Self::TrailingBytes(_) => "stun_trailing_bytes",
            Self::ErrorResponse => "stun_error_response",
            Self::UnexpectedType(_) => "stun_unexpected_type",
            Self::TransactionMismatch => "stun_transaction_mismatch",
            Self::AttributeTruncated(_) => "stun_attribute_truncated",
            Self::BadFamily { .. } => "stun_bad_family",
            Self::BadAddressLength { .. } => "stun_bad_address_length",
            Self::NoMappedAddress => "stun_no_mapped_address",
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The 20-byte binding request with transaction id `txid` (no attributes).
pub fn binding_request(txid: &TransactionId) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // out[2..4]: length 0.
    out[4..8].copy_from_slice(&MAGIC_COOKIE);
    out[8..20].copy_from_slice(txid);
    out
}

/// How many bytes the message starting at `buf[0]` occupies on a TCP stream: `Ok(None)`
/// until the 20 header bytes are there, then `20 + length`. Rejects what cannot be a
/// STUN message (top bits, cookie, unaligned length) without waiting for the body.
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, StunError> {
    if buf.len() < HEADER_LEN {
        // The first byte alone already tells STUN from not-STUN.
        if let Some(&b) = buf.first() {
            if b & 0xc0 != 0 {
                return Err(StunError::NotStun(b));
            }
        }
        return Ok(None);
    }
    let header = Header::parse_fixed(buf)?;
    Ok(Some(HEADER_LEN + header.len))
}

/// The fixed header, validated.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: u16,
    len: usize,
    txid: TransactionId,
}

impl Header {
    /// Checks the 20 header bytes only (`buf.len() >= 20`).
    fn parse_fixed(buf: &[u8]) -> Result<Self, StunError> {
        if buf.len() < HEADER_LEN {
            return Err(StunError::TooShort(buf.len()));
        }
        if buf[0] & 0xc0 != 0 {
            return Err(StunError::NotStun(buf[0]));
        }
        let cookie = [buf[4], buf[5], buf[6], buf[7]];
        if cookie != MAGIC_COOKIE {
            return Err(StunError::BadCookie(cookie));
        }
        let len = be16(buf, 2);
        if len % 4 != 0 {
            return Err(StunError::UnalignedLength(len));
        }
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&buf[8..20]);
        Ok(Self {
            kind: be16(buf, 0),
            len: usize::from(len),
            txid,
        })
    }

    /// Checks that `buf` is exactly one message (a datagram, or a slice cut with
    /// [`message_len`]).
    fn parse_whole(buf: &[u8]) -> Result<Self, StunError> {
        let h = Self::parse_fixed(buf)?;
        let available = buf.len() - HEADER_LEN;
        if available < h.len {
            return Err(StunError::Truncated {
                declared: h.len,
                available,
            });
        }
        if available > h.len {
            return Err(StunError::TrailingBytes(available - h.len));
        }
        Ok(h)
    }
}

/// The transaction id of a binding request (`buf` is exactly one message). Attributes a
/// client may add (SOFTWARE, FINGERPRINT, ...) are walked for well-formedness and ignored.
pub fn parse_binding_request(buf: &[u8]) -> Result<TransactionId, StunError> {
    let h = Header::parse_whole(buf)?;
    if h.kind != BINDING_REQUEST {
        return Err(StunError::UnexpectedType(h.kind));
    }
    for attr in Attributes::new(&buf[HEADER_LEN..]) {
        attr?;
    }
    Ok(h.txid)
}

/// The reflected transport address in a binding success response to the request with
/// `expected` transaction id (`buf` is exactly one message). The first XOR-MAPPED-ADDRESS
/// wins; the first MAPPED-ADDRESS is used only when there is none (RFC 3489 servers).
/// A malformed address attribute fails the whole answer: a server that garbles one is not
/// trusted for the other.
pub fn parse_binding_response(
    buf: &[u8],
    expected: &TransactionId,
) -> Result<SocketAddr, StunError> {
    let h = Header::parse_whole(buf)?;
    match h.kind {
        BINDING_SUCCESS => {}
        BINDING_ERROR => return Err(StunError::ErrorResponse),
        other => return Err(StunError::UnexpectedType(other)),
    }
    if &h.txid != expected {
        return Err(StunError::TransactionMismatch);
    }
    let mut xor = None;
    let mut plain = None;
    for attr in Attributes::new(&buf[HEADER_LEN..]) {
        let (kind, value) = attr?;
        match kind {
            ATTR_XOR_MAPPED_ADDRESS => {
                let a = decode_address(kind, value, Some(&h.txid))?;
                xor.get_or_insert(a);
            }
            ATTR_MAPPED_ADDRESS => {
                let a = decode_address(kind, value, None)?;
                plain.get_or_insert(a);
            }
            _ => {}
        }
    }
    xor.or(plain).ok_or(StunError::NoMappedAddress)
}

/// Walks `type, len, value, padding` records; yields `(type, value)`.
struct Attributes<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Attributes<'a> {
    fn new(body: &'a [u8]) -> Self {
        Self { body, at: 0 }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), StunError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.body.len() {
            return None;
        }
        let start = self.at;
        let rest = &self.body[start..];
        if rest.len() < 4 {
            self.at = self.body.len();
            return Some(Err(StunError::AttributeTruncated(HEADER_LEN + start)));
        }
        let kind = be16(rest, 0);
        let len = usize::from(be16(rest, 2));
        let padded = (len + 3) & !3;
        if rest.len() - 4 < padded {
            self.at = self.body.len();
            return Some(Err(StunError::AttributeTruncated(HEADER_LEN + start)));
        }
        self.at = start + 4 + padded;
        Some(Ok((kind, &rest[4..4 + len])))
    }
}

fn decode_address(
    attr: u16,
    value: &[u8],
    xor_txid: Option<&TransactionId>,
) -> Result<SocketAddr, StunError> {
    let bad_len = || StunError::BadAddressLength {
        attr,
        len: u16::try_from(value.len()).unwrap_or(u16::MAX),
    };
    if value.len() < 4 {
        return Err(bad_len());
    }
    let mut port = be16(value, 2);
    if xor_txid.is_some() {
        port ^= u16::from_be_bytes([MAGIC_COOKIE[0], MAGIC_COOKIE[1]]);
    }
    let raw = &value[4..];
    let ip = match value[1] {
        0x01 => {
            let mut o: [u8; 4] = raw.try_into().map_err(|_| bad_len())?;
            if xor_txid.is_some() {
                for (b, k) in o.iter_mut().zip(MAGIC_COOKIE) {
                    *b ^= k;
                }
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        0x02 => {
            let mut o: [u8; 16] = raw.try_into().map_err(|_| bad_len())?;
            if let Some(txid) = xor_txid {
                for (b, k) in o.iter_mut().zip(MAGIC_COOKIE.iter().chain(txid.iter())) {
                    *b ^= k;
                }
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        family => return Err(StunError::BadFamily { attr, family }),
    };
    Ok(SocketAddr::new(ip, port))
}

fn encode_address(out: &mut Vec<u8>, attr: u16, addr: SocketAddr, txid: &TransactionId) {
    let xor = attr == ATTR_XOR_MAPPED_ADDRESS;
    let (family, mut ip): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(v4) => (1, v4.octets().to_vec()),
        IpAddr::V6(v6) => (2, v6.octets().to_vec()),
    };
    let mut port = addr.port();
    if xor {
        port ^= u16::from_be_bytes([MAGIC_COOKIE[0], MAGIC_COOKIE[1]]);
        for (b, k) in ip.iter_mut().zip(MAGIC_COOKIE.iter().chain(txid.iter())) {
            *b ^= k;
        }
    }
    out.extend_from_slice(&attr.to_be_bytes());
    // 4 + 4 or 4 + 16: always aligned, no padding.
    out.extend_from_slice(&(4 + ip.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&ip);
}

/// Which address attributes a success response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappedEncoding {
    /// XOR-MAPPED-ADDRESS only (RFC 5389 servers).
    Xor,
    /// MAPPED-ADDRESS only (RFC 3489 servers).
    Plain,
    /// Both, XOR first.
    Both,
}

/// A binding success response for `txid` reflecting `mapped`.
pub fn binding_success(
    txid: &TransactionId,
    mapped: SocketAddr,
    encoding: MappedEncoding,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(48);
    if matches!(encoding, MappedEncoding::Xor | MappedEncoding::Both) {
        encode_address(&mut body, ATTR_XOR_MAPPED_ADDRESS, mapped, txid);
    }
    if matches!(encoding, MappedEncoding::Plain | MappedEncoding::Both) {
        encode_address(&mut body, ATTR_MAPPED_ADDRESS, mapped, txid);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(txid);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
#[path = "stun_tests.rs"]
mod tests;
