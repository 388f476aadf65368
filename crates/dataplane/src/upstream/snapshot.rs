//! What the upstream manager exposes: per-upstream rows for the API and the SOCKS
//! BND.ADDR/BND.PORT observations of docs/PROTOCOL.md §9.3 (with their classification).

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use proto::socks::BoundAddr;

/// IP family preference (`/v1/stats/upstreams` `ip_preference`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpPreference {
    #[default]
    Unknown,
    PreferV4,
    PreferV6,
    BothWork,
    Unavailable,
}

/// Per-DC row of an upstream snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamDcRow {
    pub dc: i16,
    pub latency_ema_ms: Option<f64>,
    pub ip_preference: IpPreference,
}

/// How an upstream reaches Telegram (`/v1/stats/upstreams` `route_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamRouteKind {
    Direct,
    Socks4,
    Socks5,
    Shadowsocks,
}

impl UpstreamRouteKind {
    /// The config / API spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Socks4 => "socks4",
            Self::Socks5 => "socks5",
            Self::Shadowsocks => "shadowsocks",
        }
    }
}

/// One runtime upstream (credentials never included).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRow {
    pub upstream_id: usize,
    pub route_kind: UpstreamRouteKind,
    /// `direct`, or the proxy's `host:port`.
    pub address: String,
    pub weight: u16,
    pub scopes: String,
    pub healthy: bool,
    pub fails: u32,
    pub last_check_at: SystemTime,
    pub effective_latency_ms: Option<f64>,
    pub dc: Vec<UpstreamDcRow>,
}

/// Status of a SOCKS BND.ADDR (docs/PROTOCOL.md §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BndAddrStatus {
    Ok,
    Bogon,
    Error,
}

/// Status of a SOCKS BND.PORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BndPortStatus {
    Ok,
    Zero,
    Error,
}

/// The latest SOCKS bound-address observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BndObservation {
    pub upstream_id: usize,
    pub addr_state: BndAddrStatus,
    pub port_state: BndPortStatus,
    /// The address as received (`None` for a domain reply).
    pub addr: Option<SocketAddr>,
    pub observed_at: SystemTime,
}

fn bogon(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8
        }
    }
}

pub(super) fn classify_bnd(
    upstream_id: usize,
    bound: &BoundAddr,
    target: SocketAddr,
    now: SystemTime,
) -> BndObservation {
    let (addr, addr_state, port_state) = match bound {
        BoundAddr::Ip(a) => {
            let same_family = a.is_ipv4() == target.is_ipv4();
            let st = if same_family && !bogon(a.ip()) {
                BndAddrStatus::Ok
            } else {
                BndAddrStatus::Bogon
            };
            let port = if a.port() == 0 {
                BndPortStatus::Zero
            } else {
                BndPortStatus::Ok
            };
            (Some(*a), st, port)
        }
        BoundAddr::Domain(_, port) => (
            None,
            BndAddrStatus::Bogon,
            if *port == 0 {
                BndPortStatus::Zero
            } else {
                BndPortStatus::Ok
            },
        ),
    };
    BndObservation {
        upstream_id,
        addr_state,
        port_state,
        addr,
        observed_at: now,
    }
}
