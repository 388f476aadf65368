//! Fake TLS ("ee" secrets, docs/PROTOCOL.md §4).
//!
//! Owns: ClientHello detection, parsing and validation ([`hello`]), the
//! ServerHello + ChangeCipherSpec + application-data response ([`server_hello`]),
//! the record layer after the handshake ([`record`]), the streaming de-framer
//! that turns client records into the obfuscated2 stream ([`deframe`]), the emulated
//! flight plans ([`emulate`]) and the per-(domain, client IP) full-flight budget
//! ([`full_flight`]). Must
//! not: read clocks (`now` is a parameter), draw randomness (random bytes are
//! parameters) or do I/O.
//!
//! ```text
//!  client                                   proxy
//!  16 03 01 LL LL  ClientHello ───────────► detect (first 5 bytes) + validate
//!                                           (HMAC digest at 11..43, SNI/ALPN policy)
//!                 ◄─────────── 16 03 03 … ServerHello | 14 03 03 00 01 01 | 17 03 03 LL LL flight
//!  [14 03 03 00 01 01]  optional CCS ─────► skipped
//!  17 03 03 LL LL <payload> … ─────────────► concatenated payloads = obfuscated2 stream:
//!                                           64-byte init (§4.7: match_init with the TLS
//!                                           user as hint, Transport::InsideTls), then data
//! ```
//! The inner init may share a record with the first packet or come alone:
//! parse the de-framed stream, never record boundaries.

pub mod client;
pub mod deframe;
pub mod emulate;
pub mod fingerprint;
pub mod full_flight;
pub mod hello;
pub mod origin;
pub mod record;
pub mod server_hello;

/// TLS record content types.
pub const CONTENT_CCS: u8 = 0x14;
/// Alert record type.
pub const CONTENT_ALERT: u8 = 0x15;
/// Handshake record type.
pub const CONTENT_HANDSHAKE: u8 = 0x16;
/// Application-data record type.
pub const CONTENT_APP_DATA: u8 = 0x17;
/// Record header length.
pub const RECORD_HEADER_LEN: usize = 5;
/// Smallest ClientHello record payload accepted (telemt).
pub const MIN_HELLO_RECORD_LEN: usize = 100;
/// Largest ClientHello record payload accepted (telemt, 2^14).
pub const MAX_HELLO_RECORD_LEN: usize = 16384;

/// The fatal `unrecognized_name` alert (RFC 6066 §3, description 112) sent for an unknown SNI
/// under `unknown_sni_action = "reject_handshake"` (PROTOCOL.md §4.4). Byte-identical to what
/// OpenSSL (hence nginx's `ssl_reject_handshake on`) writes after a TLS 1.2 or 1.3
/// ClientHello: the record version is `03 03` in both cases.
///
/// ```text
///  15      03 03     00 02    02      70
///  alert   TLS 1.2   length   fatal   unrecognized_name
/// ```
pub const ALERT_UNRECOGNIZED_NAME: [u8; 7] = [CONTENT_ALERT, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// What the first bytes of a connection are (§4.1, telemt's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// Fewer than 5 bytes and still possibly TLS.
    NeedMore,
    /// A TLS handshake record of `record_len` payload bytes (read `5 + record_len`).
    ClientHello {
        /// Payload length from the record header.
        record_len: usize,
    },
    /// Not TLS: an obfuscated2 init (or garbage).
    NotTls,
    /// Looks like TLS but the record length is outside 100..=16384: mask.
    BadRecordLength(usize),
}

/// Classifies the first bytes: `16 03 01|03 LL LL` is a ClientHello.
pub fn detect(first: &[u8]) -> Detection {
    let prefix_ok = |i: usize, ok: &dyn Fn(u8) -> bool| first.get(i).is_none_or(|&b| ok(b));
    if !(prefix_ok(0, &|b| b == CONTENT_HANDSHAKE)
        && prefix_ok(1, &|b| b == 0x03)
        && prefix_ok(2, &|b| b == 0x01 || b == 0x03))
    {
        return Detection::NotTls;
    }
    let Some(len) = first.get(3..5) else {
        return Detection::NeedMore;
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if (MIN_HELLO_RECORD_LEN..=MAX_HELLO_RECORD_LEN).contains(&len) {
        Detection::ClientHello { record_len: len }
    } else {
        Detection::BadRecordLength(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection() {
        assert_eq!(detect(&[]), Detection::NeedMore);
        assert_eq!(detect(&[0x16, 0x03]), Detection::NeedMore);
        assert_eq!(
            detect(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            Detection::ClientHello { record_len: 512 }
        );
        assert_eq!(
            detect(&[0x16, 0x03, 0x03, 0x07, 0x00]),
            Detection::ClientHello { record_len: 1792 }
        );
        assert_eq!(detect(&[0x16, 0x03, 0x02]), Detection::NotTls);
        assert_eq!(detect(&[0xef]), Detection::NotTls);
        assert_eq!(
            detect(&[0x16, 0x03, 0x01, 0x00, 0x10]),
            Detection::BadRecordLength(16)
        );
        assert_eq!(
            detect(&[0x16, 0x03, 0x01, 0x40, 0x01]),
            Detection::BadRecordLength(16385)
        );
    }
}
