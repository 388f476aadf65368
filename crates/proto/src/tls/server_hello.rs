//! The fake-TLS server response (docs/PROTOCOL.md §4.5).
//!
//! Owns: building the ServerHello + ChangeCipherSpec + one application-data
//! record and its HMAC digest. Must not: draw randomness (the X25519 public
//! key and the fake flight bytes, or a closure filling them in place, are
//! parameters) or send anything else: tdlib
//! rejects any byte buffered after the single application-data record.
//!
//! ```text
//!  16 03 03 BE16(90+n)                      handshake record
//!    02 BE24(86+n) 03 03                    ServerHello, legacy version
//!    <32: digest SR>                        server random (zero while hashing)
//!    n <n: session id echo>
//!    CS CS  00                              cipher suite (default 13 01), compression
//!    00 2e                                  extensions (46 bytes), in either order
//!      00 33 00 24 00 1d 00 20 <32: x25519>   key_share           (§4.9: the origin's
//!      00 2b 00 02 03 04                      supported_versions   order and suite)
//!  14 03 03 00 01 01                        ChangeCipherSpec
//!  17 03 03 BE16(L) <L: fake flight>        [ALPN block 00 10 BE16(3+k) BE16(1+k) k proto]
//!  SR = HMAC(S, D_client || all of the above with SR zeroed)
//! ```

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::hello::{Alpn, DIGEST_LEN, DIGEST_OFFSET, MAX_SESSION_ID_LEN};
use super::record::MAX_RECORD_PAYLOAD_OUT;
use crate::obfs2::Secret;

/// Fake flight length bounds accepted here (telemt clamps to 64..16640; one
/// record must stay ≤ 16384 for every client).
pub const MIN_FAKE_FLIGHT: usize = 64;

/// Response building errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerHelloError {
    /// Session id longer than 32 bytes.
    #[error("session id of {0} bytes is longer than 32")]
    SessionIdTooLong(usize),
    /// Fake flight outside 64..=16384 bytes.
    #[error("fake flight of {0} bytes outside 64..=16384")]
    BadFlightLength(usize),
}

/// Inputs of the response; every random value is supplied by the caller.
#[derive(Clone, Copy, Debug)]
pub struct ServerHelloParams<'a> {
    /// Client digest `D` as received (timestamp bits included).
    pub client_digest: &'a [u8; DIGEST_LEN],
    /// Session id to echo.
    pub session_id: &'a [u8],
    /// X25519 public key (a real curve point looks most genuine).
    pub key_share: &'a [u8; 32],
    /// Random bytes forming the application-data payload (its length = flight
    /// length, telemt `censorship.fake_cert_len`).
    pub fake_flight: &'a [u8],
    /// ALPN to echo at the start of the flight.
    pub alpn: Option<Alpn>,
    /// Cipher suite (a TLS 1.3 suite the client offered; tdlib reads none of it).
    pub cipher: u16,
    /// supported_versions before key_share (nginx/OpenSSL order) instead of after.
    pub versions_first: bool,
}

/// The suite sent when nothing better is known.
pub const DEFAULT_CIPHER: u16 = 0x1301;

/// Total response length for a session id of `sid_len` and a flight of `flight_len`.
pub const fn server_hello_len(sid_len: usize, flight_len: usize) -> usize {
    5 + 90 + sid_len + 6 + 5 + flight_len
}

/// Appends the response to `out`, digest included.
pub fn write_server_hello(
    secret: &Secret,
    p: &ServerHelloParams<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ServerHelloError> {
    let flight = p.fake_flight;
    write_server_hello_with(
        secret,
        p,
        flight.len(),
        |dst| dst.copy_from_slice(flight),
        out,
    )
}

/// [`write_server_hello`] with the `flight_len` flight bytes written by `fill` straight into
/// `out` (no buffer of its own per handshake); `p.fake_flight` is not read.
pub fn write_server_hello_with(
    secret: &Secret,
    p: &ServerHelloParams<'_>,
    flight_len: usize,
    fill: impl FnOnce(&mut [u8]),
    out: &mut Vec<u8>,
) -> Result<(), ServerHelloError> {
    let n = p.session_id.len();
    if n > MAX_SESSION_ID_LEN {
        return Err(ServerHelloError::SessionIdTooLong(n));
    }
    let fl = flight_len;
    if !(MIN_FAKE_FLIGHT..=MAX_RECORD_PAYLOAD_OUT).contains(&fl) {
        return Err(ServerHelloError::BadFlightLength(fl));
    }
    let start = out.len();
    out.reserve(server_hello_len(n, fl));
    // Both lengths are bounded above (n ≤ 32, fl ≤ 16384): the casts are exact.
    let rec_len = (90 + n) as u16;
    let hs_len = (86 + n) as u32;
    out.extend_from_slice(&[0x16, 0x03, 0x03]);
    out.extend_from_slice(&rec_len.to_be_bytes());
    out.push(0x02);
    out.extend_from_slice(&hs_len.to_be_bytes()[1..]);
    out.extend_from_slice(&[0x03, 0x03]);
    out.extend_from_slice(&[0u8; DIGEST_LEN]);
    out.push(n as u8);
    out.extend_from_slice(p.session_id);
    out.extend_from_slice(&p.cipher.to_be_bytes());
    out.extend_from_slice(&[0x00, 0x00, 0x2e]);
    const VERSIONS: [u8; 6] = [0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];
    if p.versions_first {
        out.extend_from_slice(&VERSIONS);
    }
    out.extend_from_slice(&[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    out.extend_from_slice(p.key_share);
    if !p.versions_first {
        out.extend_from_slice(&VERSIONS);
    }
    out.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
    out.extend_from_slice(&[0x17, 0x03, 0x03]);
    out.extend_from_slice(&(fl as u16).to_be_bytes());
    let flight_start = out.len();
    out.resize(flight_start + fl, 0);
    fill(&mut out[flight_start..]);
    if let Some(alpn) = p.alpn {
        let proto = alpn.as_bytes();
        let k = proto.len() as u16; // 2 or 8
        let mut block = [0u8; 7 + 8];
        block[..2].copy_from_slice(&[0x00, 0x10]);
        block[2..4].copy_from_slice(&(3 + k).to_be_bytes());
        block[4..6].copy_from_slice(&(1 + k).to_be_bytes());
        block[6] = k as u8;
        block[7..7 + proto.len()].copy_from_slice(proto);
        let block = &block[..7 + proto.len()];
        // The flight is ≥ 64 bytes, longer than any ALPN block.
        if let Some(dst) = out.get_mut(flight_start..flight_start + block.len()) {
            dst.copy_from_slice(block);
        }
    }
    let digest = response_digest(secret, p.client_digest, &out[start..]);
    out[start + DIGEST_OFFSET..start + DIGEST_OFFSET + DIGEST_LEN].copy_from_slice(&digest);
    Ok(())
}

/// Builds the response into a fresh buffer.
pub fn build_server_hello(
    secret: &Secret,
    p: &ServerHelloParams<'_>,
) -> Result<Vec<u8>, ServerHelloError> {
    let mut out = Vec::new();
    write_server_hello(secret, p, &mut out)?;
    Ok(out)
}

/// `HMAC(S, D || response)` with the response's digest bytes as given
/// (callers pass them zeroed).
fn response_digest(secret: &Secret, client_digest: &[u8; 32], response: &[u8]) -> [u8; 32] {
    // A key shorter than the block is zero-padded by HMAC: padding it here
    // gives the same MAC through the infallible fixed-size constructor.
    let mut key = [0u8; 64];
    key[..secret.len()].copy_from_slice(secret);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&key.into());
    mac.update(client_digest);
    mac.update(response);
    mac.finalize().into_bytes().into()
}

/// Client-side check of a received response (test clients): recomputes the
/// digest over `response` with bytes 11..43 zeroed.
pub fn verify_server_hello(secret: &Secret, client_digest: &[u8; 32], response: &[u8]) -> bool {
    let Some(got) = response.get(DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN) else {
        return false;
    };
    let mut zeroed = response.to_vec();
    zeroed[DIGEST_OFFSET..DIGEST_OFFSET + DIGEST_LEN].fill(0);
    let want = response_digest(secret, client_digest, &zeroed);
    subtle::ConstantTimeEq::ct_eq(&want[..], got).into()
}
