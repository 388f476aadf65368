//! Which authenticated ee handshakes get the certificate-sized flight and which the compact
//! one (`censorship.tls_full_cert_ttl_secs`, docs/PROTOCOL.md §4.9, docs/DECISIONS.md #46).
//!
//! Owns: a bounded, sharded, time-windowed memory of the `(SNI, client IP)` tuples that were
//! sent the full flight. Must not: read the clock (`now` is passed in), decide what the
//! compact flight looks like (that is the [`FlightPlan`](super::emulate::FlightPlan)'s), or be
//! consulted before a secret matched (garbage must not spend a real client's budget).
//!
//! ```text
//!  key = IPv6 form of the client IP (16) ‖ FNV-1a-64 of the lower-case SNI (8)
//!  take_full(key): not sent within the TTL ─► remember now, answer full
//!                  sent within the TTL      ─► compact (the time is not refreshed: a client
//!                                              reconnecting all day still gets a full flight
//!                                              once per TTL)
//!  64 shards, 65 536 tuples in total; when full, the oldest tuple is forgotten (its next
//!  handshake is full again: harmless)
//! ```

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::replay::{ReplayVerdict, ShardedReplayCache};

/// Key length: 16 bytes of address, 8 of domain hash.
const KEY_LEN: usize = 24;
/// Tuples remembered at most (about 6 MiB when full).
pub const FULL_FLIGHT_CAPACITY: usize = 65_536;
/// Independently locked shards: handshakes from different clients rarely meet on a lock.
const SHARDS: usize = 64;

/// The per-`(domain, client IP)` full-flight budget; `&self` methods, `Send + Sync`.
#[derive(Debug)]
pub struct FullFlightBudget {
    sent: ShardedReplayCache<KEY_LEN>,
    capacity: usize,
    /// TTL in seconds currently applied (to skip no-op updates on every config publish).
    ttl_secs: AtomicU64,
}

impl FullFlightBudget {
    /// A budget with a TTL of `ttl_secs` (0: every handshake gets the full flight).
    pub fn new(ttl_secs: u64) -> Self {
        Self::with_limits(FULL_FLIGHT_CAPACITY, ttl_secs, SHARDS)
    }

    /// [`new`](Self::new) with another capacity and shard count (tests).
    pub fn with_limits(capacity: usize, ttl_secs: u64, shards: usize) -> Self {
        let (cap, window) = Self::limits(capacity, ttl_secs);
        Self {
            sent: ShardedReplayCache::new(cap, window, shards),
            capacity,
            ttl_secs: AtomicU64::new(ttl_secs),
        }
    }

    /// TTL 0 switches the memory off rather than keeping entries that expire at once.
    fn limits(capacity: usize, ttl_secs: u64) -> (usize, Duration) {
        let cap = if ttl_secs == 0 { 0 } else { capacity };
        (cap, Duration::from_secs(ttl_secs))
    }

    /// Applies a new TTL (config reload); remembered tuples keep their time.
    pub fn set_ttl(&self, ttl_secs: u64) {
        if self.ttl_secs.swap(ttl_secs, Ordering::Relaxed) != ttl_secs {
            let (cap, window) = Self::limits(self.capacity, ttl_secs);
            self.sent.set_limits(cap, window);
        }
    }

    /// Whether the client at `ip` asking for `sni` gets the full flight now: true when no
    /// full flight went to this tuple within the TTL (and that one is remembered), false for
    /// a repeat within it.
    pub fn take_full(&self, sni: Option<&str>, ip: IpAddr, now: Instant) -> bool {
        // TTL 0 keeps nothing: skip the hashing and the shard lock.
        if self.ttl_secs.load(Ordering::Relaxed) == 0 {
            return true;
        }
        self.sent.check_and_insert(key(sni, ip), now) == ReplayVerdict::Fresh
    }

    /// Tuples remembered (expired ones may linger until their shard is next written).
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

/// The tuple's key. An IPv4 client and its IPv4-mapped IPv6 form are the same client; the
/// SNI is compared case-insensitively, like the domain match (§4.4).
fn key(sni: Option<&str>, ip: IpAddr) -> [u8; KEY_LEN] {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    // FNV-1a: the shards hash the whole key with a per-process random key, so this only has
    // to tell a handful of configured domains apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sni.unwrap_or("").bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut k = [0u8; KEY_LEN];
    k[..16].copy_from_slice(&v6.octets());
    k[16..].copy_from_slice(&h.to_le_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "example.com";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn first_full_then_compact_per_tuple() {
        let b = FullFlightBudget::new(90);
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        assert!(b.take_full(Some(A), c, t0), "first handshake: full");
        assert!(!b.take_full(Some(A), c, t0 + Duration::from_secs(1)));
        assert!(
            !b.take_full(Some("EXAMPLE.com"), c, t0),
            "SNI case does not matter"
        );
        assert!(
            !b.take_full(Some(A), ip("::ffff:192.0.2.1"), t0),
            "mapped IPv6 is the same client"
        );
        assert!(b.take_full(Some("other.test"), c, t0), "other domain");
        assert!(b.take_full(None, c, t0), "no SNI is its own tuple");
        assert!(b.take_full(Some(A), ip("192.0.2.2"), t0), "other client");
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn full_again_once_the_ttl_passed_and_repeats_do_not_extend_it() {
        let b = FullFlightBudget::new(90);
        let t0 = Instant::now();
        let c = ip("2001:db8::1");
        assert!(b.take_full(Some(A), c, t0));
        assert!(!b.take_full(Some(A), c, t0 + Duration::from_secs(89)));
        assert!(b.take_full(Some(A), c, t0 + Duration::from_secs(90)));
        assert!(!b.take_full(Some(A), c, t0 + Duration::from_secs(91)));
    }

    #[test]
    fn ttl_zero_is_always_full_and_keeps_nothing() {
        let b = FullFlightBudget::new(0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take_full(Some(A), ip("192.0.2.1"), t0));
        }
        assert!(b.is_empty());
        // Switched on and off again by reloads.
        b.set_ttl(60);
        assert!(b.take_full(Some(A), ip("192.0.2.1"), t0));
        assert!(!b.take_full(Some(A), ip("192.0.2.1"), t0));
        b.set_ttl(0);
        assert!(b.take_full(Some(A), ip("192.0.2.1"), t0));
        assert!(b.is_empty());
    }

    #[test]
    fn memory_is_capped_and_the_oldest_tuple_goes_first() {
        let b = FullFlightBudget::with_limits(4, 90, 1);
        let t0 = Instant::now();
        for i in 0..10u8 {
            let at = t0 + Duration::from_millis(u64::from(i));
            assert!(b.take_full(Some(A), IpAddr::from([10, 0, 0, i]), at));
            assert!(b.len() <= 4, "{}", b.len());
        }
        let later = t0 + Duration::from_secs(1);
        // The four newest are remembered, the first ones were forgotten.
        assert!(!b.take_full(Some(A), IpAddr::from([10, 0, 0, 9]), later));
        assert!(b.take_full(Some(A), IpAddr::from([10, 0, 0, 0]), later));
    }

    #[test]
    fn the_default_cap_holds_under_many_clients() {
        let b = FullFlightBudget::new(90);
        let t0 = Instant::now();
        for i in 0..(FULL_FLIGHT_CAPACITY as u32 + 5000) {
            b.take_full(Some(A), IpAddr::from(i.to_be_bytes()), t0);
        }
        // Per-shard caps round up: never more than one extra entry per shard.
        assert!(b.len() <= FULL_FLIGHT_CAPACITY + SHARDS, "{}", b.len());
    }
}
