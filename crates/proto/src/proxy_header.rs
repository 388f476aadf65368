//! PROXY protocol v1 and v2 headers (docs/PROTOCOL.md §8).
//!
//! Owns: incremental parsing of an inbound header (needs-more / done /
//! invalid) and building v1/v2 headers for the mask host (§8.3). Must not:
//! decide trust (the caller checks `proxy_protocol_trusted_cidrs`) or apply
//! timeouts.
//!
//! ```text
//!  v1:  "PROXY " ("TCP4" | "TCP6") ' ' src ' ' dst ' ' sport ' ' dport "\r\n"   ≤ 107 bytes
//!       "PROXY UNKNOWN" [anything] "\r\n"                  → keep the socket peer
//!  v2:  0        12       13        14        16
//!       +--------+--------+---------+---------+-----------------------------+
//!       | sig 12 | ver|cmd| fam|prot| BE16 len| addresses + TLVs (len bytes)|
//!       +--------+--------+---------+---------+-----------------------------+
//!       sig = 0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a; ver = 2; cmd 0 LOCAL, 1 PROXY
//!       fam 1 INET: src4 dst4 sport dport (12); fam 2 INET6: src16 dst16 sport dport (36)
//!       LOCAL / UNSPEC / UNIX / DGRAM → keep the socket peer; consume 16 + len
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// v2 signature.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];
/// v1 prefix.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Longest v1 header, CRLF included (HAProxy specification).
pub const V1_MAX_LEN: usize = 107;

/// PROXY header violations (each variant doubles as a bad-connection label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Neither the v1 prefix nor the v2 signature.
    #[error("connection does not start with a PROXY protocol header")]
    NotProxyProtocol,
    /// v1 line without CRLF within 107 bytes.
    #[error("PROXY v1 header longer than 107 bytes")]
    V1TooLong,
    /// v1 line not ASCII / malformed fields.
    #[error("malformed PROXY v1 header: {0}")]
    V1Malformed(&'static str),
    /// v2 version nibble is not 2.
    #[error("PROXY v2 version {0} is not 2")]
    V2BadVersion(u8),
    /// v2 command other than LOCAL/PROXY.
    #[error("PROXY v2 command {0} is unknown")]
    V2BadCommand(u8),
    /// v2 address block shorter than the family requires.
    #[error("PROXY v2 length {len} too short for family {family}")]
    V2TooShort {
        /// Declared length.
        len: usize,
        /// Family nibble.
        family: u8,
    },
}

impl ProxyError {
    /// Stable label for bad-connection statistics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::NotProxyProtocol => "proxy_protocol_missing",
            Self::V1TooLong => "proxy_v1_too_long",
            Self::V1Malformed(_) => "proxy_v1_malformed",
            Self::V2BadVersion(_) => "proxy_v2_bad_version",
            Self::V2BadCommand(_) => "proxy_v2_bad_command",
            Self::V2TooShort { .. } => "proxy_v2_too_short",
        }
    }
}

/// Protocol version of a parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyVersion {
    /// Text.
    V1,
    /// Binary.
    V2,
}

/// A parsed PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Version it arrived in.
    pub version: ProxyVersion,
    /// `Some((source, destination))` for TCP4/TCP6 (v2: PROXY over INET/INET6
    /// STREAM); `None` = keep the socket peer (UNKNOWN, LOCAL, UNSPEC, UNIX,
    /// DGRAM).
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

impl ProxyHeader {
    /// The client address to use instead of the socket peer, if any.
    pub fn source(&self) -> Option<SocketAddr> {
        self.addresses.map(|a| a.0)
    }

    /// Parses a header at the start of `buf`: `Ok(None)` = need more bytes;
    /// `Ok(Some((header, consumed)))` = done, the rest of `buf` is client data.
    pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
        let n6 = buf.len().min(V1_PREFIX.len());
        let n12 = buf.len().min(V2_SIGNATURE.len());
        if buf[..n6] == V1_PREFIX[..n6] {
            if buf.len() < V1_PREFIX.len() {
                // Still a prefix of both? "PROXY " and the v2 signature differ
                // from byte 0, so only v1 remains.
                return Ok(None);
            }
            return parse_v1(buf);
        }
        if buf[..n12] == V2_SIGNATURE[..n12] {
            if buf.len() < 16 {
                return Ok(None);
            }
            return parse_v2(buf);
        }
        Err(ProxyError::NotProxyProtocol)
    }

    /// v1 text for `src → dst`; mixed families give `PROXY UNKNOWN` (§8.3).
    pub fn v1_bytes(addresses: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
        let line = match addresses {
            Some((SocketAddr::V4(s), SocketAddr::V4(d))) => format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            ),
            Some((SocketAddr::V6(s), SocketAddr::V6(d))) => format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            ),
            _ => "PROXY UNKNOWN\r\n".to_owned(),
        };
        line.into_bytes()
    }

    /// v2 binary for `src → dst` (command PROXY, STREAM), or LOCAL with
    /// family UNSPEC and length 0 when there are no same-family addresses.
    pub fn v2_bytes(addresses: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        match addresses {
            Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
                out.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
                out.extend_from_slice(&s.ip().octets());
                out.extend_from_slice(&d.ip().octets());
                out.extend_from_slice(&s.port().to_be_bytes());
                out.extend_from_slice(&d.port().to_be_bytes());
            }
            Some((SocketAddr::V6(s), SocketAddr::V6(d))) => {
                out.extend_from_slice(&[0x21, 0x21, 0x00, 36]);
                out.extend_from_slice(&s.ip().octets());
                out.extend_from_slice(&d.ip().octets());
                out.extend_from_slice(&s.port().to_be_bytes());
                out.extend_from_slice(&d.port().to_be_bytes());
            }
            _ => out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]),
        }
        out
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX_LEN {
            return Err(ProxyError::V1TooLong);
        }
        // A lone '\n' (or '\r' not followed by '\n') can never become valid.
        if window
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' || (b == b'\r' && i + 1 < window.len()))
        {
            return Err(ProxyError::V1Malformed("stray CR or LF"));
        }
        return Ok(None);
    };
    let consumed = cr + 2;
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..cr])
        .map_err(|_| ProxyError::V1Malformed("not ASCII"))?;
    let mut parts = line.split(' ');
    let proto = parts.next().unwrap_or("");
    if proto == "UNKNOWN" {
        return Ok(Some((
            ProxyHeader {
                version: ProxyVersion::V1,
                addresses: None,
            },
            consumed,
        )));
    }
    let want_v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(ProxyError::V1Malformed("protocol")),
    };
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::V1Malformed("field count"));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        let ip = if want_v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| ProxyError::V1Malformed("address"))
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        let digits_ok = !s.is_empty()
            && s.len() <= 5
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        if !digits_ok {
            return Err(ProxyError::V1Malformed("port"));
        }
        s.parse().map_err(|_| ProxyError::V1Malformed("port"))
    };
    let src = SocketAddr::new(ip(src)?, port(sport)?);
    let dst = SocketAddr::new(ip(dst)?, port(dport)?);
    Ok(Some((
        ProxyHeader {
            version: ProxyVersion::V1,
            addresses: Some((src, dst)),
        },
        consumed,
    )))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let ver = buf[12] >> 4;
    let cmd = buf[12] & 0x0f;
    if ver != 2 {
        return Err(ProxyError::V2BadVersion(ver));
    }
    if cmd > 1 {
        return Err(ProxyError::V2BadCommand(cmd));
    }
    let family = buf[13] >> 4;
    let stream = buf[13] & 0x0f == 1;
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let need = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if cmd == 1 && len < need {
        return Err(ProxyError::V2TooShort { len, family });
    }
    let total = 16 + len;
    let Some(body) = buf.get(16..total) else {
        return Ok(None);
    };
    let addresses = if cmd == 1 && stream {
        match family {
            1 => {
                let ip4 = |o: usize| Ipv4Addr::new(body[o], body[o + 1], body[o + 2], body[o + 3]);
                let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
                Some((
                    SocketAddr::new(IpAddr::V4(ip4(0)), port(8)),
                    SocketAddr::new(IpAddr::V4(ip4(4)), port(10)),
                ))
            }
            2 => {
                let ip6 = |o: usize| {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&body[o..o + 16]);
                    Ipv6Addr::from(a)
                };
                let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
                Some((
                    SocketAddr::new(IpAddr::V6(ip6(0)), port(32)),
                    SocketAddr::new(IpAddr::V6(ip6(16)), port(34)),
                ))
            }
            _ => None,
        }
    } else {
        None
    };
    Ok(Some((
        ProxyHeader {
            version: ProxyVersion::V2,
            addresses,
        },
        total,
    )))
}

#[cfg(test)]
#[path = "proxy_header_tests.rs"]
mod tests;
