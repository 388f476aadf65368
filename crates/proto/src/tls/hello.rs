//! Fake-TLS ClientHello parsing and validation (docs/PROTOCOL.md §4.2–§4.4).
//!
//! Owns: the structural parse of one ClientHello record, SNI/ALPN extraction
//! and policy, the digest check against every user (pre-keyed HMAC midstates
//! from the [`UserTable`]) and the timestamp window. Must not: read the clock
//! or touch the replay cache (the caller checks [`FakeTlsHello::replay_key`]).
//!
//! ```text
//!  off  len
//!   0    5   16 03 01 LL LL          record header (LL = BE16 payload length)
//!   5    1   01                      handshake type ClientHello
//!   6    3   BE24                    handshake length
//!   9    2   03 03                   legacy version
//!  11   32   D = client digest       HMAC(S, record with 11..43 zeroed), last 4
//!                                    bytes XOR LE32(unix time)
//!  43    1   n ≤ 32, then n bytes    session id (echoed by the server)
//!   …  2+x   cipher suites   1+y compression   2+z extensions:
//!            repeated type(BE16) len(BE16) data
//!            SNI  0x0000: BE16 list len, { type(1)=0, BE16 len, host }…
//!            ALPN 0x0010: BE16 list len, { len(1), proto }…
//! ```

use subtle::ConstantTimeEq;

use super::{CONTENT_HANDSHAKE, MAX_HELLO_RECORD_LEN, MIN_HELLO_RECORD_LEN, RECORD_HEADER_LEN};
use crate::sha::HmacMessage;
use crate::users::UserTable;

/// Offset of the client digest in the record.
pub const DIGEST_OFFSET: usize = 11;
/// Digest length.
pub const DIGEST_LEN: usize = 32;
/// Maximum session id length.
pub const MAX_SESSION_ID_LEN: usize = 32;
const EXT_SNI: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;

/// ClientHello rejections (each variant doubles as a bad-connection label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// First byte is not a handshake record.
    #[error("not a TLS handshake record")]
    NotHandshakeRecord,
    /// Record version is not 03 01 / 03 03.
    #[error("unexpected TLS record version {0:02x}{1:02x}")]
    BadRecordVersion(u8, u8),
    /// Record payload length outside 100..=16384.
    #[error("ClientHello record length {0} out of range")]
    RecordLengthOutOfRange(usize),
    /// Buffer is not exactly one record (`have` bytes, header says `want`).
    #[error("ClientHello record is {have} bytes, header says {want}")]
    RecordSizeMismatch {
        /// Bytes supplied.
        have: usize,
        /// `5 + record length`.
        want: usize,
    },
    /// Handshake type is not ClientHello (1).
    #[error("handshake type {0} is not ClientHello")]
    NotClientHello(u8),
    /// Handshake length does not fit the record.
    #[error("handshake length {0} does not fit the record")]
    HandshakeLengthMismatch(usize),
    /// A field runs past its enclosing structure.
    #[error("ClientHello truncated in {0}")]
    Truncated(&'static str),
    /// Session id longer than 32 bytes.
    #[error("session id of {0} bytes is longer than 32")]
    SessionIdTooLong(usize),
    /// Two SNI extensions.
    #[error("duplicate SNI extension")]
    DuplicateSni,
    /// SNI that is not a plausible DNS host name.
    #[error("SNI is not a plausible host name")]
    InvalidSni,
    /// SNI not among the allowed domains, policy `drop`.
    #[error("unknown SNI (drop)")]
    UnknownSniDrop,
    /// SNI not among the allowed domains, policy `mask`.
    #[error("unknown SNI (mask)")]
    UnknownSniMask,
    /// SNI not among the allowed domains, policy `reject_handshake`.
    #[error("unknown SNI (reject_handshake)")]
    UnknownSniReject,
    /// ALPN offered without `h2` or `http/1.1` while enforced.
    #[error("ALPN offered without h2 or http/1.1")]
    AlpnNotAllowed,
    /// Empty user table.
    #[error("no users configured")]
    NoUsers,
    /// No user secret reproduces the digest.
    #[error("no secret matches the ClientHello digest")]
    NoMatchingSecret,
    /// Digest matched but the timestamp is outside the accepted window.
    #[error("ClientHello timestamp {ts} outside the window around {now}")]
    TimestampOutOfWindow {
        /// Client timestamp.
        ts: u32,
        /// Proxy time.
        now: u64,
    },
}

impl HelloError {
    /// Stable label for bad-connection statistics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::NotHandshakeRecord => "tls_not_handshake",
            Self::BadRecordVersion(..) => "tls_bad_record_version",
            Self::RecordLengthOutOfRange(_) => "tls_record_length_out_of_range",
            Self::RecordSizeMismatch { .. } => "tls_record_size_mismatch",
            Self::NotClientHello(_) => "tls_not_client_hello",
            Self::HandshakeLengthMismatch(_) => "tls_handshake_length_mismatch",
            Self::Truncated(_) => "tls_hello_truncated",
            Self::SessionIdTooLong(_) => "tls_session_id_too_long",
            Self::DuplicateSni => "tls_duplicate_sni",
            Self::InvalidSni => "tls_invalid_sni",
            Self::UnknownSniDrop | Self::UnknownSniMask | Self::UnknownSniReject => {
                "tls_unknown_sni"
            }
            Self::AlpnNotAllowed => "tls_alpn_not_allowed",
            Self::NoUsers => "tls_no_users",
            Self::NoMatchingSecret => "tls_no_matching_secret",
            Self::TimestampOutOfWindow { .. } => "tls_timestamp_out_of_window",
        }
    }

    /// Whether the connection should be closed instead of masked
    /// (`unknown_sni_action = drop`); every other rejection is masked (§4.8).
    pub const fn is_drop(&self) -> bool {
        matches!(self, Self::UnknownSniDrop)
    }
}

/// telemt `censorship.unknown_sni_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UnknownSniAction {
    /// Close the connection (default).
    #[default]
    Drop,
    /// Relay to the mask host.
    Mask,
    /// Continue with the digest check.
    Accept,
    /// Answer with the fatal `unrecognized_name` alert and close, at once (§4.4).
    RejectHandshake,
}

/// Timestamp acceptance (§4.3, telemt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWindow {
    /// `access.ignore_time_skew`: skip the check.
    pub ignore: bool,
    /// Accept `|now - ts| ≤ max_skew_secs` (telemt 120).
    pub max_skew_secs: u32,
    /// Also accept `ts < boot_ts_max` (clients sending uptime instead of wall
    /// clock): telemt uses `min(7 days, replay_window_secs, 120)`; 0 disables.
    pub boot_ts_max: u32,
}

impl Default for TimeWindow {
    fn default() -> Self {
        Self {
            ignore: false,
            max_skew_secs: 120,
            boot_ts_max: 120,
        }
    }
}

impl TimeWindow {
    /// Whether `ts` is acceptable at `now` (unix seconds).
    pub fn accepts(&self, ts: u32, now: u64) -> bool {
        self.ignore
            || now.abs_diff(u64::from(ts)) <= u64::from(self.max_skew_secs)
            || ts < self.boot_ts_max
    }
}

/// Fake-TLS policy (telemt `censorship.*`, `access.ignore_time_skew`).
#[derive(Clone, Debug, Default)]
pub struct TlsPolicy {
    /// `tls_domain` + `tls_domains`; compared case-insensitively.
    pub allowed_domains: Vec<String>,
    /// What to do with an SNI not in `allowed_domains`.
    pub unknown_sni: UnknownSniAction,
    /// `alpn_enforce`.
    pub alpn_enforce: bool,
    /// Timestamp window.
    pub time: TimeWindow,
}

/// ALPN value selected for the fake flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `h2`.
    H2,
    /// `http/1.1`.
    Http11,
}

impl Alpn {
    /// Protocol id bytes.
    pub const fn as_bytes(self) -> &'static [u8] {
        match self {
            Self::H2 => b"h2",
            Self::Http11 => b"http/1.1",
        }
    }
}

/// Structural view of a ClientHello record (no secret involved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHelloInfo<'a> {
    /// Client digest `D` (record bytes 11..43).
    pub digest: [u8; DIGEST_LEN],
    /// Session id (0..=32 bytes).
    pub session_id: &'a [u8],
    /// First host name of the SNI extension, if any.
    pub sni: Option<&'a str>,
    /// The client offered ALPN at all.
    pub alpn_offered: bool,
    /// The client offered `h2`.
    pub alpn_h2: bool,
    /// The client offered `http/1.1`.
    pub alpn_http11: bool,
    /// TLS 1.3 suites offered: bit `k` set for `13 0(k+1)` (1301..1305).
    pub tls13_suites: u8,
}

/// Bit of [`ClientHelloInfo::tls13_suites`] for `suite`, if it is a TLS 1.3 one.
pub const fn tls13_suite_bit(suite: u16) -> Option<u8> {
    match suite {
        0x1301..=0x1305 => Some(1 << (suite - 0x1301)),
        _ => None,
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        let end = self.pos.checked_add(n).ok_or(HelloError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(HelloError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Parses one complete ClientHello record (`5 + len` bytes, nothing more).
pub fn parse_client_hello(rec: &[u8]) -> Result<ClientHelloInfo<'_>, HelloError> {
    let hdr = rec
        .get(..RECORD_HEADER_LEN)
        .ok_or(HelloError::Truncated("record header"))?;
    if hdr[0] != CONTENT_HANDSHAKE {
        return Err(HelloError::NotHandshakeRecord);
    }
    if hdr[1] != 0x03 || !(hdr[2] == 0x01 || hdr[2] == 0x03) {
        return Err(HelloError::BadRecordVersion(hdr[1], hdr[2]));
    }
    let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
    if !(MIN_HELLO_RECORD_LEN..=MAX_HELLO_RECORD_LEN).contains(&len) {
        return Err(HelloError::RecordLengthOutOfRange(len));
    }
    if rec.len() != RECORD_HEADER_LEN + len {
        return Err(HelloError::RecordSizeMismatch {
            have: rec.len(),
            want: RECORD_HEADER_LEN + len,
        });
    }
    let mut c = Cursor {
        buf: rec,
        pos: RECORD_HEADER_LEN,
    };
    let ht = c.u8("handshake type")?;
    if ht != 0x01 {
        return Err(HelloError::NotClientHello(ht));
    }
    let hl = c.take(3, "handshake length")?;
    let hs_len = usize::from(hl[0]) << 16 | usize::from(hl[1]) << 8 | usize::from(hl[2]);
    if hs_len + 4 > len {
        return Err(HelloError::HandshakeLengthMismatch(hs_len));
    }
    // Parse inside the handshake body only.
    let mut c = Cursor {
        buf: &rec[..RECORD_HEADER_LEN + 4 + hs_len],
        pos: c.pos,
    };
    c.take(2, "client version")?;
    let mut digest = [0u8; DIGEST_LEN];
    digest.copy_from_slice(c.take(DIGEST_LEN, "random")?);
    let sid_len = usize::from(c.u8("session id")?);
    if sid_len > MAX_SESSION_ID_LEN {
        return Err(HelloError::SessionIdTooLong(sid_len));
    }
    let session_id = c.take(sid_len, "session id")?;
    let suites = c.vec16("cipher suites")?;
    let tls13_suites = suites
        .chunks_exact(2)
        .filter_map(|s| tls13_suite_bit(u16::from_be_bytes([s[0], s[1]])))
        .fold(0, |a, b| a | b);
    c.vec8("compression methods")?;
    let mut info = ClientHelloInfo {
        digest,
        session_id,
        sni: None,
        alpn_offered: false,
        alpn_h2: false,
        alpn_http11: false,
        tls13_suites,
    };
    if c.done() {
        return Ok(info);
    }
    let exts = c.vec16("extensions")?;
    let mut e = Cursor { buf: exts, pos: 0 };
    let mut seen_sni = false;
    while !e.done() {
        let ty = e.u16("extension type")?;
        let data = e.vec16("extension data")?;
        match ty {
            EXT_SNI => {
                if seen_sni {
                    return Err(HelloError::DuplicateSni);
                }
                seen_sni = true;
                info.sni = parse_sni(data)?;
            }
            EXT_ALPN => {
                info.alpn_offered = true;
                let mut a = Cursor { buf: data, pos: 0 };
                let list = a.vec16("alpn list")?;
                let mut l = Cursor { buf: list, pos: 0 };
                while !l.done() {
                    match l.vec8("alpn protocol")? {
                        b"h2" => info.alpn_h2 = true,
                        b"http/1.1" => info.alpn_http11 = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

fn parse_sni(data: &[u8]) -> Result<Option<&str>, HelloError> {
    let mut c = Cursor { buf: data, pos: 0 };
    let list = c.vec16("sni list")?;
    let mut l = Cursor { buf: list, pos: 0 };
    while !l.done() {
        let ty = l.u8("sni name type")?;
        let name = l.vec16("sni name")?;
        if ty == 0 {
            let host = std::str::from_utf8(name).map_err(|_| HelloError::InvalidSni)?;
            if !is_plausible_host(host) {
                return Err(HelloError::InvalidSni);
            }
            return Ok(Some(host));
        }
    }
    Ok(None)
}

/// ≤ 253 chars, labels 1..63 of `[A-Za-z0-9-]` not starting/ending with `-`,
/// no leading/trailing dot, not an IPv4 literal (IPv6 has `:`, rejected).
pub fn is_plausible_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && h.parse::<std::net::Ipv4Addr>().is_err()
}

/// A validated fake-TLS ClientHello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeTlsHello {
    /// Index of the authenticated user.
    pub user_index: usize,
    /// Client digest `D` as received (input of the response digest).
    pub digest: [u8; DIGEST_LEN],
    /// Session id to echo.
    pub session_id: Vec<u8>,
    /// SNI host name, if any.
    pub sni: Option<String>,
    /// SNI present and among the allowed domains.
    pub sni_known: bool,
    /// Client timestamp.
    pub timestamp: u32,
    /// ALPN to echo in the fake flight.
    pub alpn: Option<Alpn>,
    /// Secrets tried.
    pub tries: usize,
    /// TLS 1.3 suites offered (see [`ClientHelloInfo::tls13_suites`]).
    pub tls13_suites: u8,
}

impl FakeTlsHello {
    /// Replay-cache key `D[0..16]` (§5); insert just before the ServerHello.
    pub fn replay_key(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k.copy_from_slice(&self.digest[..16]);
        k
    }

    /// Validates a complete ClientHello record: structure, SNI/ALPN policy,
    /// then the digest for each user, then the time window.
    pub fn validate(
        rec: &[u8],
        table: &UserTable,
        now: u64,
        policy: &TlsPolicy,
    ) -> Result<Self, HelloError> {
        Self::validate_with_hint(rec, table, now, policy, None)
    }

    /// [`validate`](Self::validate) trying user `hint` first.
    pub fn validate_with_hint(
        rec: &[u8],
        table: &UserTable,
        now: u64,
        policy: &TlsPolicy,
        hint: Option<usize>,
    ) -> Result<Self, HelloError> {
        let info = parse_client_hello(rec)?;
        let sni_known = info.sni.is_some_and(|s| {
            policy
                .allowed_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(s))
        });
        if info.sni.is_some() && !sni_known {
            match policy.unknown_sni {
                UnknownSniAction::Drop => return Err(HelloError::UnknownSniDrop),
                UnknownSniAction::Mask => return Err(HelloError::UnknownSniMask),
                UnknownSniAction::RejectHandshake => return Err(HelloError::UnknownSniReject),
                UnknownSniAction::Accept => {}
            }
        }
        let alpn = if info.alpn_h2 && policy.alpn_enforce {
            Some(Alpn::H2)
        } else if info.alpn_http11 {
            Some(Alpn::Http11)
        } else if info.alpn_h2 {
            Some(Alpn::H2)
        } else if info.alpn_offered && policy.alpn_enforce {
            return Err(HelloError::AlpnNotAllowed);
        } else {
            None
        };
        if table.is_empty() {
            return Err(HelloError::NoUsers);
        }
        let zeros = [0u8; DIGEST_LEN];
        let msg = HmacMessage::new(&[
            &rec[..DIGEST_OFFSET],
            &zeros,
            &rec[DIGEST_OFFSET + DIGEST_LEN..],
        ]);
        let d = &info.digest;
        for (n, idx) in table.candidates(hint).enumerate() {
            let tries = n + 1;
            let Some(state) = table.hmac_state(idx) else {
                continue;
            };
            let mac = state.mac(&msg);
            if !bool::from(mac[..28].ct_eq(&d[..28])) {
                continue;
            }
            let ts = u32::from_le_bytes([
                d[28] ^ mac[28],
                d[29] ^ mac[29],
                d[30] ^ mac[30],
                d[31] ^ mac[31],
            ]);
            if !policy.time.accepts(ts, now) {
                return Err(HelloError::TimestampOutOfWindow { ts, now });
            }
            return Ok(Self {
                user_index: idx,
                digest: info.digest,
                session_id: info.session_id.to_vec(),
                sni: info.sni.map(str::to_owned),
                sni_known,
                timestamp: ts,
                alpn,
                tries,
                tls13_suites: info.tls13_suites,
            });
        }
        Err(HelloError::NoMatchingSecret)
    }
}

#[cfg(test)]
#[path = "hello_tests.rs"]
mod tests;
