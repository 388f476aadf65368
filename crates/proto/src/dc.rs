//! Telegram DC addresses for direct mode (docs/PROTOCOL.md §6.1, §6.2).
//!
//! Owns: the built-in DC table and the index → table-row rule. Must not: know
//! `dc_overrides`, `default_dc` or the preferred family (the caller applies
//! them: override first, then [`dc_table_addr`], then the default DC).
//!
//! ```text
//!  DC  IPv4              IPv6                     port 443
//!  1   149.154.175.50    2001:b28:f23d:f001::a
//!  2   149.154.167.51    2001:67c:4e8:f002::a
//!  3   149.154.175.100   2001:b28:f23d:f003::a
//!  4   149.154.167.91    2001:67c:4e8:f004::a
//!  5   149.154.171.5     2001:b28:f23f:f005::a
//!  −N (media) shares row N; 203 (CDN) comes from dc_overrides
//! ```
//!
//! Also owns [`DcSet`], the DC indexes an obfuscated2 init may carry for the
//! multi-user matcher to accept it: a wrong secret decrypts `plain[56..64]` to
//! noise, so requiring a routable index besides a valid tag cuts chance
//! acceptances by the set's share of the 2^16 index space.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// Port of every DC in the table.
pub const DC_PORT: u16 = 443;

/// IPv4 addresses of DCs 1..=5.
pub const DC_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(149, 154, 175, 50),
    Ipv4Addr::new(149, 154, 167, 51),
    Ipv4Addr::new(149, 154, 175, 100),
    Ipv4Addr::new(149, 154, 167, 91),
    Ipv4Addr::new(149, 154, 171, 5),
];

/// IPv6 addresses of DCs 1..=5.
pub const DC_V6: [Ipv6Addr; 5] = [
    Ipv6Addr::new(0x2001, 0xb28, 0xf23d, 0xf001, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0xb28, 0xf23d, 0xf003, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf004, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0xb28, 0xf23f, 0xf005, 0, 0, 0, 0xa),
];

/// The table address for `dc` (`|dc|` in 1..=5), `None` otherwise.
pub fn dc_table_addr(dc: i16, ipv6: bool) -> Option<SocketAddr> {
    let row = usize::from(dc.unsigned_abs()).checked_sub(1)?;
    if ipv6 {
        DC_V6
            .get(row)
            .map(|ip| SocketAddr::new((*ip).into(), DC_PORT))
    } else {
        DC_V4
            .get(row)
            .map(|ip| SocketAddr::new((*ip).into(), DC_PORT))
    }
}

/// Offset tdlib adds to the index of a test-server DC (docs/PROTOCOL.md §2.4, unverified).
pub const TEST_DC_OFFSET: i16 = 10_000;

/// The CDN DC real clients ask for (§6.1).
pub const CDN_DC: i16 = 203;

/// DC indexes a client init may name (sorted, deduplicated; membership is a binary search).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcSet {
    sorted: Vec<i16>,
}

impl Default for DcSet {
    fn default() -> Self {
        Self::standard()
    }
}

impl DcSet {
    /// What real clients send: `±1..=5`, `±203`, and the same plus [`TEST_DC_OFFSET`]
    /// for test servers.
    pub fn standard() -> Self {
        let base = (1..=5).chain([CDN_DC]);
        let with_test = base.flat_map(|d| [d, d + TEST_DC_OFFSET]);
        Self::from_indexes(with_test.flat_map(|d| [d, -d]))
    }

    /// Exactly `indexes`.
    pub fn from_indexes<I: IntoIterator<Item = i16>>(indexes: I) -> Self {
        let mut sorted: Vec<i16> = indexes.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        Self { sorted }
    }

    /// This set plus `indexes`.
    pub fn with<I: IntoIterator<Item = i16>>(mut self, indexes: I) -> Self {
        self.sorted.extend(indexes);
        self.sorted.sort_unstable();
        self.sorted.dedup();
        self
    }

    /// Whether an init naming `dc` is acceptable.
    pub fn contains(&self, dc: i16) -> bool {
        self.sorted.binary_search(&dc).is_ok()
    }

    /// Number of indexes.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when no index is acceptable.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_set_covers_what_clients_send() {
        let s = DcSet::standard();
        for dc in [1, -1, 5, -5, 203, -203, 10_001, -10_005, 10_203] {
            assert!(s.contains(dc), "{dc}");
        }
        for dc in [0, 6, -6, 999, 10_000, i16::MIN, i16::MAX] {
            assert!(!s.contains(dc), "{dc}");
        }
        assert_eq!(s.len(), 24);
        let s = s.with([42, 42, 7]);
        assert!(s.contains(42) && s.contains(7) && s.len() == 26);
    }

    #[test]
    fn table_rows() {
        assert_eq!(
            dc_table_addr(2, false),
            Some("149.154.167.51:443".parse().expect("lit"))
        );
        assert_eq!(
            dc_table_addr(-4, false),
            Some("149.154.167.91:443".parse().expect("lit"))
        );
        assert_eq!(
            dc_table_addr(5, true),
            Some("[2001:b28:f23f:f005::a]:443".parse().expect("lit"))
        );
        assert_eq!(dc_table_addr(0, false), None);
        assert_eq!(dc_table_addr(203, false), None);
        assert_eq!(dc_table_addr(i16::MIN, true), None);
    }
}
