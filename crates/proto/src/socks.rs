//! SOCKS4 and SOCKS5 client codecs for upstream connections (docs/PROTOCOL.md §9.1–§9.3).
//!
//! Owns: building the client's requests and incrementally parsing the server's
//! replies (`Ok(None)` = need more bytes). Must not: do I/O or decide the
//! KDF policy of §9.3 (the bound address is returned as received).
//!
//! ```text
//!  SOCKS4 CONNECT:  04 01 BE16(port) IPv4(4) userid 00
//!         reply:    00 CD BE16(port) IPv4(4)         CD = 5a granted, 5b..5d rejected
//!  SOCKS5 greeting: 05 n methods…  (05 01 00 | 05 02 00 02)  → reply 05 method
//!         auth:     01 ulen user plen pass           → reply 01 status (00 = ok)
//!         CONNECT:  05 01 00 ATYP addr BE16(port)    ATYP 01 v4(4), 04 v6(16)
//!         reply:    05 REP 00 ATYP addr BE16(port)   ATYP 03 = len + name
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

/// SOCKS violations and refusals (each variant doubles as an upstream label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocksError {
    /// Reply version byte is wrong.
    #[error("SOCKS reply version {0:#04x}")]
    BadVersion(u8),
    /// SOCKS4 request rejected (CD).
    #[error("SOCKS4 request rejected with code {0:#04x}")]
    Socks4Rejected(u8),
    /// SOCKS5 server accepted none of our methods, or chose one we did not offer.
    #[error("SOCKS5 method {0:#04x} not acceptable")]
    NoAcceptableMethod(u8),
    /// SOCKS5 username/password refused.
    #[error("SOCKS5 authentication failed with status {0}")]
    AuthFailed(u8),
    /// SOCKS5 CONNECT failed (REP).
    #[error("SOCKS5 CONNECT failed with reply {0}")]
    ConnectFailed(u8),
    /// Unknown address type in a reply.
    #[error("SOCKS5 reply address type {0} unknown")]
    BadAddressType(u8),
    /// Credential longer than 255 bytes.
    #[error("SOCKS5 username or password longer than 255 bytes")]
    CredentialTooLong,
}

impl SocksError {
    /// Stable label for upstream statistics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::BadVersion(_) => "socks_bad_version",
            Self::Socks4Rejected(_) => "socks4_rejected",
            Self::NoAcceptableMethod(_) => "socks5_no_acceptable_method",
            Self::AuthFailed(_) => "socks5_auth_failed",
            Self::ConnectFailed(_) => "socks5_connect_failed",
            Self::BadAddressType(_) => "socks5_bad_address_type",
            Self::CredentialTooLong => "socks5_credential_too_long",
        }
    }
}

/// SOCKS4 CONNECT request.
pub fn socks4_connect(target: SocketAddrV4, user_id: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04, 0x01];
    out.extend_from_slice(&target.port().to_be_bytes());
    out.extend_from_slice(&target.ip().octets());
    out.extend_from_slice(user_id);
    out.push(0);
    out
}

/// Parses the 8-byte SOCKS4 reply; `Ok` only when granted.
pub fn parse_socks4_reply(buf: &[u8]) -> Result<Option<(SocketAddrV4, usize)>, SocksError> {
    let Some(b) = buf.get(..8) else {
        return Ok(None);
    };
    if b[0] != 0x00 {
        return Err(SocksError::BadVersion(b[0]));
    }
    if b[1] != 0x5a {
        return Err(SocksError::Socks4Rejected(b[1]));
    }
    let port = u16::from_be_bytes([b[2], b[3]]);
    let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
    Ok(Some((SocketAddrV4::new(ip, port), 8)))
}

/// SOCKS5 authentication method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socks5Method {
    /// `00`.
    NoAuth,
    /// `02` username/password.
    UserPass,
}

/// SOCKS5 greeting offering no-auth, plus username/password when `with_auth`.
pub fn socks5_greeting(with_auth: bool) -> Vec<u8> {
    if with_auth {
        vec![0x05, 0x02, 0x00, 0x02]
    } else {
        vec![0x05, 0x01, 0x00]
    }
}

/// Parses the method selection; `offered_auth` = the greeting offered `02`.
pub fn parse_socks5_method(
    buf: &[u8],
    offered_auth: bool,
) -> Result<Option<(Socks5Method, usize)>, SocksError> {
    let Some(b) = buf.get(..2) else {
        return Ok(None);
    };
    if b[0] != 0x05 {
        return Err(SocksError::BadVersion(b[0]));
    }
    match b[1] {
        0x00 => Ok(Some((Socks5Method::NoAuth, 2))),
        0x02 if offered_auth => Ok(Some((Socks5Method::UserPass, 2))),
        m => Err(SocksError::NoAcceptableMethod(m)),
    }
}

/// RFC 1929 username/password request.
pub fn socks5_auth(user: &[u8], pass: &[u8]) -> Result<Vec<u8>, SocksError> {
    let ul = u8::try_from(user.len()).map_err(|_| SocksError::CredentialTooLong)?;
    let pl = u8::try_from(pass.len()).map_err(|_| SocksError::CredentialTooLong)?;
    let mut out = vec![0x01, ul];
    out.extend_from_slice(user);
    out.push(pl);
    out.extend_from_slice(pass);
    Ok(out)
}

/// Parses the RFC 1929 reply.
pub fn parse_socks5_auth_reply(buf: &[u8]) -> Result<Option<usize>, SocksError> {
    let Some(b) = buf.get(..2) else {
        return Ok(None);
    };
    if b[0] != 0x01 {
        return Err(SocksError::BadVersion(b[0]));
    }
    if b[1] != 0 {
        return Err(SocksError::AuthFailed(b[1]));
    }
    Ok(Some(2))
}

/// SOCKS5 CONNECT to an IP target.
pub fn socks5_connect(target: SocketAddr) -> Vec<u8> {
    let mut out = vec![0x05, 0x01, 0x00];
    match target {
        SocketAddr::V4(a) => {
            out.push(0x01);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(0x04);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
    out
}

/// BND.ADDR/BND.PORT of a SOCKS5 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoundAddr {
    /// An IP address (ATYP 01 / 04).
    Ip(SocketAddr),
    /// A domain name (ATYP 03): treated as "bogon" by §9.3.
    Domain(Vec<u8>, u16),
}

/// Parses the CONNECT reply; `Ok` only on success (REP = 00).
pub fn parse_socks5_reply(buf: &[u8]) -> Result<Option<(BoundAddr, usize)>, SocksError> {
    let Some(b) = buf.get(..4) else {
        return Ok(None);
    };
    if b[0] != 0x05 {
        return Err(SocksError::BadVersion(b[0]));
    }
    if b[1] != 0 {
        return Err(SocksError::ConnectFailed(b[1]));
    }
    let (addr_len, start) = match b[3] {
        0x01 => (4, 4),
        0x04 => (16, 4),
        0x03 => match buf.get(4) {
            Some(&n) => (usize::from(n), 5),
            None => return Ok(None),
        },
        t => return Err(SocksError::BadAddressType(t)),
    };
    let end = start + addr_len + 2;
    let Some(rest) = buf.get(start..end) else {
        return Ok(None);
    };
    let (a, p) = rest.split_at(addr_len);
    let port = u16::from_be_bytes([p[0], p[1]]);
    let bound = match b[3] {
        0x01 => BoundAddr::Ip(SocketAddr::from((
            Ipv4Addr::new(a[0], a[1], a[2], a[3]),
            port,
        ))),
        0x04 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            BoundAddr::Ip(SocketAddr::from((Ipv6Addr::from(o), port)))
        }
        _ => BoundAddr::Domain(a.to_vec(), port),
    };
    Ok(Some((bound, end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn self_checks_9_2() {
        let dc2: SocketAddr = "149.154.167.51:443".parse().expect("literal");
        assert_eq!(socks5_greeting(false), [0x05, 0x01, 0x00]);
        assert_eq!(
            parse_socks5_method(&[0x05, 0x00], false),
            Ok(Some((Socks5Method::NoAuth, 2)))
        );
        assert_eq!(
            socks5_connect(dc2),
            [0x05, 0x01, 0x00, 0x01, 0x95, 0x9a, 0xa7, 0x33, 0x01, 0xbb]
        );
        let reply = [0x05, 0x00, 0x00, 0x01, 10, 0, 0, 1, 0x1f, 0x90, 0xee];
        assert_eq!(
            parse_socks5_reply(&reply),
            Ok(Some((
                BoundAddr::Ip("10.0.0.1:8080".parse().expect("literal")),
                10
            )))
        );
        let SocketAddr::V4(v4) = dc2 else {
            panic!("v4 literal")
        };
        assert_eq!(
            socks4_connect(v4, b""),
            [0x04, 0x01, 0x01, 0xbb, 0x95, 0x9a, 0xa7, 0x33, 0x00]
        );
        assert_eq!(
            parse_socks4_reply(&[0, 0x5a, 0, 0, 0, 0, 0, 0]),
            Ok(Some((SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), 8)))
        );
    }

    #[test]
    fn refusals_and_partial_input() {
        assert_eq!(
            parse_socks4_reply(&[0, 0x5b, 0, 0, 0, 0, 0, 0]),
            Err(SocksError::Socks4Rejected(0x5b))
        );
        assert_eq!(parse_socks4_reply(&[0, 0x5a]), Ok(None));
        assert_eq!(
            parse_socks5_method(&[0x05, 0xff], true),
            Err(SocksError::NoAcceptableMethod(0xff))
        );
        assert_eq!(
            parse_socks5_method(&[0x05, 0x02], false),
            Err(SocksError::NoAcceptableMethod(2))
        );
        assert_eq!(
            parse_socks5_method(&[0x05, 0x02], true),
            Ok(Some((Socks5Method::UserPass, 2)))
        );
        assert_eq!(
            socks5_auth(b"u", b"pw"),
            Ok(vec![1, 1, b'u', 2, b'p', b'w'])
        );
        assert_eq!(
            socks5_auth(&[0; 256], b""),
            Err(SocksError::CredentialTooLong)
        );
        assert_eq!(
            parse_socks5_auth_reply(&[1, 1]),
            Err(SocksError::AuthFailed(1))
        );
        assert_eq!(
            parse_socks5_reply(&[5, 4, 0, 1]),
            Err(SocksError::ConnectFailed(4))
        );
        assert_eq!(
            parse_socks5_reply(&[5, 0, 0, 7]),
            Err(SocksError::BadAddressType(7))
        );
        assert_eq!(parse_socks5_reply(&[5, 0, 0, 3, 3, b'a', b'b']), Ok(None));
        assert_eq!(
            parse_socks5_reply(&[5, 0, 0, 3, 2, b'a', b'b', 0, 80]),
            Ok(Some((BoundAddr::Domain(b"ab".to_vec(), 80), 9)))
        );
        let mut v6 = vec![5, 0, 0, 4];
        v6.extend_from_slice(&[0; 15]);
        assert_eq!(parse_socks5_reply(&v6), Ok(None));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_socks4_reply(&bytes);
            let _ = parse_socks5_method(&bytes, true);
            let _ = parse_socks5_auth_reply(&bytes);
            if let Ok(Some((_, n))) = parse_socks5_reply(&bytes) {
                prop_assert!(n <= bytes.len());
            }
        }

        #[test]
        fn connect_reply_round_trip(ip in any::<[u8; 16]>(), port in any::<u16>(), v4 in any::<bool>()) {
            let target = if v4 {
                SocketAddr::from(([ip[0], ip[1], ip[2], ip[3]], port))
            } else {
                SocketAddr::from((ip, port))
            };
            // A server echoing our CONNECT as its reply is well-formed.
            let mut reply = socks5_connect(target);
            reply[1] = 0;
            prop_assert_eq!(parse_socks5_reply(&reply), Ok(Some((BoundAddr::Ip(target), reply.len()))));
        }
    }
}
