//! Local interface addresses used as the "detected" addresses for links (docs/DECISIONS.md #21:
//! the NAT/STUN public address when the data plane's probe knows one — `RuntimeHandle`
//! substitutes it at read time, only with `use_middle_proxy = true` — else the local interface
//! address). Found without sending a packet: connecting a UDP socket only selects the route
//! and therefore the source address the kernel would use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

fn outbound_source(bind: SocketAddr, probe: SocketAddr) -> Option<IpAddr> {
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect(probe).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The primary IPv4 and IPv6 source addresses of this host (`None` when that family has no
/// route).
pub fn local_interface_addrs() -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let v4 = outbound_source(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 443)),
    )
    .and_then(|ip| match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    });
    let v6 = outbound_source(
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 443)),
    )
    .and_then(|ip| match ip {
        IpAddr::V6(v6) => Some(v6),
        IpAddr::V4(_) => None,
    });
    (v4, v6)
}
