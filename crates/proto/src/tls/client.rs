//! Client side of fake TLS, for test clients and self-tests (docs/PROTOCOL.md §4.3).
//!
//! Owns: building a well-formed ClientHello carrying the secret's digest (the
//! shapes real clients send: variable length via the padding extension,
//! optional SNI/ALPN). Must not: be used by the proxy's data path.
//!
//! ```text
//!  16 03 01 LL LL | 01 BE24 | 03 03 | D(32) | n sid | 00 06 13 01 13 02 13 03 | 01 00
//!  | BE16 ext_len | [SNI 00 00] [ALPN 00 10] key_share 00 33 | supported_versions 00 2b
//!  | [padding 00 15 up to the requested record size]
//!  D = HMAC(S, record with D zeroed); D[28..32] ^= LE32(unix time)
//! ```

use super::hello::{DIGEST_LEN, DIGEST_OFFSET, MAX_SESSION_ID_LEN};
use super::{MAX_HELLO_RECORD_LEN, MIN_HELLO_RECORD_LEN, RECORD_HEADER_LEN};
use crate::obfs2::Secret;
use crate::sha::{HmacKeyState, HmacMessage};

/// ClientHello building errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientHelloError {
    /// Session id longer than 32 bytes.
    #[error("session id longer than 32 bytes")]
    SessionIdTooLong,
    /// SNI or ALPN entry too long for its length field.
    #[error("extension value too long")]
    ExtensionTooLong,
    /// Requested size cannot hold the hello, or the record is outside 100..=16384.
    #[error("cannot build a ClientHello record of {0} bytes")]
    BadSize(usize),
}

/// Inputs of a test ClientHello.
#[derive(Clone, Copy, Debug)]
pub struct ClientHelloParams<'a> {
    /// Unix time to embed.
    pub timestamp: u32,
    /// Session id (tdlib: 32 random bytes).
    pub session_id: &'a [u8],
    /// SNI host name.
    pub sni: Option<&'a str>,
    /// ALPN protocols offered (empty = no ALPN extension).
    pub alpn: &'a [&'a [u8]],
    /// X25519 key share.
    pub key_share: &'a [u8; 32],
    /// Total record size including the 5-byte header (e.g. 517 or 1800), or
    /// `None` for the natural size.
    pub total_len: Option<usize>,
}

fn push16(out: &mut Vec<u8>, v: usize) -> Result<(), ClientHelloError> {
    let v = u16::try_from(v).map_err(|_| ClientHelloError::ExtensionTooLong)?;
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Builds a complete ClientHello record with a valid digest for `secret`.
pub fn build_client_hello(
    secret: &Secret,
    p: &ClientHelloParams<'_>,
) -> Result<Vec<u8>, ClientHelloError> {
    if p.session_id.len() > MAX_SESSION_ID_LEN {
        return Err(ClientHelloError::SessionIdTooLong);
    }
    let mut ext = Vec::new();
    if let Some(host) = p.sni {
        ext.extend_from_slice(&[0x00, 0x00]);
        push16(&mut ext, host.len() + 5)?;
        push16(&mut ext, host.len() + 3)?;
        ext.push(0);
        push16(&mut ext, host.len())?;
        ext.extend_from_slice(host.as_bytes());
    }
    if !p.alpn.is_empty() {
        let list: usize = p.alpn.iter().map(|a| a.len() + 1).sum();
        ext.extend_from_slice(&[0x00, 0x10]);
        push16(&mut ext, list + 2)?;
        push16(&mut ext, list)?;
        for a in p.alpn {
            ext.push(u8::try_from(a.len()).map_err(|_| ClientHelloError::ExtensionTooLong)?);
            ext.extend_from_slice(a);
        }
    }
    ext.extend_from_slice(&[0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    ext.extend_from_slice(p.key_share);
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);

    // header(5) + hs header(4) + version(2) + random(32) + sid + suites(8) + compression(2) + ext len(2)
    let base = RECORD_HEADER_LEN + 4 + 2 + DIGEST_LEN + 1 + p.session_id.len() + 8 + 2 + 2;
    let natural = base + ext.len();
    let total = match p.total_len {
        None => natural,
        Some(t) if t >= natural + 4 => {
            let pad = t - natural - 4;
            ext.extend_from_slice(&[0x00, 0x15]);
            push16(&mut ext, pad)?;
            ext.resize(ext.len() + pad, 0);
            t
        }
        Some(t) if t == natural => t,
        Some(t) => return Err(ClientHelloError::BadSize(t)),
    };
    let rec_len = total - RECORD_HEADER_LEN;
    if !(MIN_HELLO_RECORD_LEN..=MAX_HELLO_RECORD_LEN).contains(&rec_len) {
        return Err(ClientHelloError::BadSize(total));
    }
    let mut rec = Vec::with_capacity(total);
    rec.extend_from_slice(&[0x16, 0x03, 0x01]);
    push16(&mut rec, rec_len)?;
    rec.push(0x01);
    rec.extend_from_slice(&((rec_len - 4) as u32).to_be_bytes()[1..]);
    rec.extend_from_slice(&[0x03, 0x03]);
    rec.extend_from_slice(&[0u8; DIGEST_LEN]);
    rec.push(p.session_id.len() as u8);
    rec.extend_from_slice(p.session_id);
    rec.extend_from_slice(&[0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0x01, 0x00]);
    push16(&mut rec, ext.len())?;
    rec.extend_from_slice(&ext);
    let d = client_digest(secret, &rec, p.timestamp);
    rec[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN].copy_from_slice(&d);
    Ok(rec)
}

/// `D` for a record whose bytes 11..43 are ignored (treated as zero).
pub fn client_digest(secret: &Secret, record: &[u8], timestamp: u32) -> [u8; DIGEST_LEN] {
    let zeros = [0u8; DIGEST_LEN];
    let head = record.get(..DIGEST_OFFSET).unwrap_or(record);
    let tail = record.get(DIGEST_OFFSET + DIGEST_LEN..).unwrap_or(&[]);
    let mut d = HmacKeyState::new(secret).mac(&HmacMessage::new(&[head, &zeros, tail]));
    for (x, t) in d[28..].iter_mut().zip(timestamp.to_le_bytes()) {
        *x ^= t;
    }
    d
}
