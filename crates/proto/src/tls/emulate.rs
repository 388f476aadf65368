//! What the emulated ServerHello flight looks like per TLS domain (docs/PROTOCOL.md §4.9).
//!
//! Owns: the per-domain [`FlightPlan`] (suite, extension order, application-data lengths and
//! answer delay, learned from the origin by the data plane), the size of a resumed TLS 1.3
//! flight, and the choice of one concrete flight for a client. Must not: do I/O or draw
//! randomness (draws are parameters).
//!
//! ```text
//!  plan (per SNI)                       flight sent to an authenticated client
//!  cipher 13 0x  ──(client offered)──►  ServerHello suite, else 13 01
//!  versions_first ──────────────────►  00 2b … before / after 00 33 …
//!  app_data_len L, jitter J  ───────►  ONE 17 03 03 record of L ± J random bytes (first
//!                                      handshake of a (domain, client IP) within the TTL)
//!  compact_len C  ──────────────────►  ONE 17 03 03 record of C bytes (repeats within it)
//!  delay_ms (lo, hi) ───────────────►  wait before writing (server_hello_delay_* override)
//! ```

use super::hello::tls13_suite_bit;
use super::record::MAX_RECORD_PAYLOAD_OUT;
use super::server_hello::{DEFAULT_CIPHER, MIN_FAKE_FLIGHT};

/// How one TLS domain's flight is emulated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightPlan {
    /// The origin's TLS 1.3 suite.
    pub cipher: u16,
    /// The origin sends supported_versions before key_share.
    pub versions_first: bool,
    /// Total of the origin's encrypted records (one record here carries all of it).
    pub app_data_len: usize,
    /// Bound of the per-session length jitter (certificates do not change between
    /// connections, so this stays small).
    pub jitter: usize,
    /// The record for a client that had the full flight within `tls_full_cert_ttl_secs`:
    /// what the origin sends encrypted when it resumes (EncryptedExtensions + Finished, no
    /// certificate; see [`resumed_flight_len`]). Deterministic for a site, so no jitter.
    pub compact_len: usize,
    /// Answer delay range in ms.
    pub delay_ms: (u64, u64),
}

impl FlightPlan {
    /// The suite for a client that offered `tls13_suites` (bits of
    /// [`crate::ClientHelloInfo::tls13_suites`]): the origin's when offered, else 13 01.
    pub fn cipher_for(&self, tls13_suites: u8) -> u16 {
        match tls13_suite_bit(self.cipher) {
            Some(bit) if tls13_suites & bit != 0 => self.cipher,
            _ => DEFAULT_CIPHER,
        }
    }

    /// The application-data length for a draw `r`: `app_data_len ± jitter`, kept inside
    /// what one record may carry.
    pub fn flight_len(&self, r: u64) -> usize {
        let span = self.jitter.saturating_mul(2).saturating_add(1) as u64;
        let off = (r % span) as usize;
        self.app_data_len
            .saturating_add(off)
            .saturating_sub(self.jitter)
            .clamp(MIN_FAKE_FLIGHT, MAX_RECORD_PAYLOAD_OUT)
    }

    /// The compact record's length, kept inside what one record may carry.
    pub fn compact_flight_len(&self) -> usize {
        self.compact_len
            .clamp(MIN_FAKE_FLIGHT, MAX_RECORD_PAYLOAD_OUT)
    }
}

/// Payload of one TLS 1.3 record sealing a handshake message with a `body`-byte body: the
/// 4-byte message header, the inner content type and the 16-byte AEAD tag (every TLS 1.3
/// suite's tag is 16 bytes).
const fn sealed(body: usize) -> usize {
    4 + body + 1 + 16
}

/// Bytes a TLS 1.3 server sends encrypted when it resumes a session (RFC 8446 §2.2): the
/// EncryptedExtensions message (`ee_body` bytes: its 2-byte list length and the extensions,
/// e.g. 11 for ALPN `h2` alone) and Finished (the suite's hash length: 48 for 13 02, else
/// 32), each in its own record, no Certificate or CertificateVerify.
pub const fn resumed_flight_len(cipher: u16, ee_body: usize) -> usize {
    let hash = if cipher == 0x1302 { 48 } else { 32 };
    sealed(ee_body) + sealed(hash)
}

/// Plans by TLS domain, with the one used for a client without a known SNI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightTable {
    /// `(domain, plan)`, the first being `tls_domain`'s.
    pub plans: Vec<(String, FlightPlan)>,
    /// Used when no domain matches.
    pub fallback: FlightPlan,
}

impl FlightTable {
    /// The plan for `sni` (case-insensitive); the first domain's without an SNI or for an
    /// unknown one (an accepted unknown SNI still gets a plausible flight).
    pub fn plan(&self, sni: Option<&str>) -> &FlightPlan {
        sni.and_then(|s| {
            self.plans
                .iter()
                .find(|(d, _)| d.eq_ignore_ascii_case(s))
                .map(|(_, p)| p)
        })
        .or_else(|| self.plans.first().map(|(_, p)| p))
        .unwrap_or(&self.fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cipher: u16) -> FlightPlan {
        FlightPlan {
            cipher,
            versions_first: true,
            app_data_len: 3000,
            jitter: 16,
            compact_len: 85,
            delay_ms: (1, 2),
        }
    }

    #[test]
    fn suite_only_when_offered() {
        let p = plan(0x1302);
        assert_eq!(p.cipher_for(0b111), 0x1302);
        assert_eq!(p.cipher_for(0b001), 0x1301);
        assert_eq!(plan(0xc02f).cipher_for(0xff), 0x1301);
    }

    #[test]
    fn length_stays_within_jitter_and_record() {
        let p = plan(0x1301);
        for r in 0..100u64 {
            let l = p.flight_len(r);
            assert!((2984..=3016).contains(&l), "{l}");
        }
        let big = FlightPlan {
            app_data_len: 20_000,
            ..plan(0x1301)
        };
        assert_eq!(big.flight_len(7), MAX_RECORD_PAYLOAD_OUT);
    }

    #[test]
    fn compact_record_is_fixed_and_bounded() {
        let p = plan(0x1301);
        assert_eq!(p.compact_flight_len(), 85);
        let tiny = FlightPlan {
            compact_len: 10,
            ..plan(0x1301)
        };
        assert_eq!(tiny.compact_flight_len(), MIN_FAKE_FLIGHT);
    }

    #[test]
    fn resumed_flight_sizes() {
        // EncryptedExtensions with ALPN h2 (2 + 9 bytes) and a SHA-256 Finished:
        // (4 + 11 + 1 + 16) + (4 + 32 + 1 + 16).
        assert_eq!(resumed_flight_len(0x1301, 11), 32 + 53);
        assert_eq!(resumed_flight_len(0x1302, 2), 23 + 69);
        assert!(resumed_flight_len(0x1303, 2) >= MIN_FAKE_FLIGHT);
    }

    #[test]
    fn lookup_by_sni() {
        let t = FlightTable {
            plans: vec![
                ("a.test".into(), plan(0x1301)),
                ("b.test".into(), plan(0x1302)),
            ],
            fallback: plan(0x1303),
        };
        assert_eq!(t.plan(Some("B.TEST")).cipher, 0x1302);
        assert_eq!(t.plan(None).cipher, 0x1301);
        assert_eq!(t.plan(Some("c.test")).cipher, 0x1301);
        let empty = FlightTable {
            plans: vec![],
            fallback: plan(0x1303),
        };
        assert_eq!(empty.plan(None).cipher, 0x1303);
    }
}
