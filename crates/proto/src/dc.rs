//! Telegram DC addresses for direct mode (PROTOCOL.md §6.1, §6.2).
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

#[cfg(test)]
mod tests {
    use super::*;

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
