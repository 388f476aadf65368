//! Upstream manager and NAT/STUN snapshots.

use std::net::SocketAddr;
use std::time::SystemTime;

/// IP address family label used by refill rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddrFamily {
    V4,
    V6,
}

impl AddrFamily {
    /// Every variant, in declaration order (the schema's value list).
    pub const ALL: &'static [Self] = &[AddrFamily::V4, AddrFamily::V6];

    /// API label (`V4`, `V6`).
    pub fn as_str(self) -> &'static str {
        match self {
            AddrFamily::V4 => "V4",
            AddrFamily::V6 => "V6",
        }
    }
}

/// How an upstream reaches Telegram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamRouteKind {
    Direct,
    Socks4,
    Socks5,
    Shadowsocks,
}

impl UpstreamRouteKind {
    /// Every variant, in declaration order (the schema's value list).
    pub const ALL: &'static [Self] = &[
        UpstreamRouteKind::Direct,
        UpstreamRouteKind::Socks4,
        UpstreamRouteKind::Socks5,
        UpstreamRouteKind::Shadowsocks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamRouteKind::Direct => "direct",
            UpstreamRouteKind::Socks4 => "socks4",
            UpstreamRouteKind::Socks5 => "socks5",
            UpstreamRouteKind::Shadowsocks => "shadowsocks",
        }
    }
}

/// Per-DC IP family preference learned by an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpPreference {
    #[default]
    Unknown,
    PreferV4,
    PreferV6,
    BothWork,
    Unavailable,
}

impl IpPreference {
    /// Every variant, in declaration order (the schema's value list).
    pub const ALL: &'static [Self] = &[
        IpPreference::Unknown,
        IpPreference::PreferV4,
        IpPreference::PreferV6,
        IpPreference::BothWork,
        IpPreference::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IpPreference::Unknown => "unknown",
            IpPreference::PreferV4 => "prefer_v4",
            IpPreference::PreferV6 => "prefer_v6",
            IpPreference::BothWork => "both_work",
            IpPreference::Unavailable => "unavailable",
        }
    }
}

/// Per-DC latency row of one upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamDcSnapshot {
    pub dc: i16,
    pub latency_ema_ms: Option<f64>,
    pub ip_preference: IpPreference,
}

/// One configured upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSnapshot {
    pub upstream_id: usize,
    pub route_kind: UpstreamRouteKind,
    /// `direct` for direct upstreams, else `host:port`. Never carries credentials.
    pub address: String,
    pub weight: u16,
    pub scopes: String,
    pub healthy: bool,
    /// Consecutive failures.
    pub fails: u32,
    /// Time of the last health update.
    pub last_check_at: SystemTime,
    pub effective_latency_ms: Option<f64>,
    pub dc: Vec<UpstreamDcSnapshot>,
}

/// All configured upstreams, in runtime index order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamsSnapshot {
    pub upstreams: Vec<UpstreamSnapshot>,
}

/// A STUN reflection (our public endpoint as seen by a STUN server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunReflection {
    pub addr: SocketAddr,
    pub observed_at: SystemTime,
}

/// NAT probe / STUN shared state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatStunSnapshot {
    pub nat_probe_enabled: bool,
    pub nat_probe_disabled_runtime: bool,
    pub nat_probe_attempts: u8,
    pub configured_servers: Vec<String>,
    pub live_servers: Vec<String>,
    pub reflection_v4: Option<StunReflection>,
    pub reflection_v6: Option<StunReflection>,
    pub stun_backoff_remaining_ms: Option<u64>,
}
