//! ME (middle-proxy) pool snapshot: raw facts copied out of the pool (see docs/ME-MODEL.md).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::SystemTime;

use super::upstream::AddrFamily;

/// Contour (lifecycle phase) of a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterContour {
    Warm,
    Active,
    Draining,
}

impl WriterContour {
    /// Every variant, in declaration order (the schema's value list).
    pub const ALL: &'static [Self] = &[
        WriterContour::Warm,
        WriterContour::Active,
        WriterContour::Draining,
    ];

    /// API label (`warm`, `active`, `draining`).
    pub fn as_str(self) -> &'static str {
        match self {
            WriterContour::Warm => "warm",
            WriterContour::Active => "active",
            WriterContour::Draining => "draining",
        }
    }
}

/// One ME writer (an encrypted RPC connection to one endpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct MeWriterSnapshot {
    pub writer_id: u64,
    /// DC the writer serves, when mapped.
    pub dc: Option<i16>,
    pub endpoint: SocketAddr,
    pub generation: u64,
    pub contour: WriterContour,
    pub draining: bool,
    pub degraded: bool,
    pub bound_clients: usize,
    /// Seconds without traffic, when idle.
    pub idle_for_secs: Option<u64>,
    /// EMA of keepalive round trips.
    pub rtt_ema_ms: Option<f64>,
}

/// One configured DC group with its endpoints and floor policy.
#[derive(Debug, Clone, PartialEq)]
pub struct MeDcSnapshot {
    pub dc: i16,
    pub endpoints: Vec<SocketAddr>,
    pub floor_min: usize,
    /// The number of writers this DC requires right now (`required_writers`).
    pub floor_target: usize,
    pub floor_max: usize,
    /// The computed target was cut by a global cap.
    pub floor_capped: bool,
    /// Client sessions currently bound to this DC.
    pub load: usize,
}

/// Refill operations in flight for one DC + address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeRefillInflight {
    pub dc: i16,
    pub family: AddrFamily,
    pub inflight: usize,
}

/// A quarantined endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeQuarantineEntry {
    pub endpoint: SocketAddr,
    pub remaining_ms: u64,
}

/// Selected IP path for one DC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeDcPath {
    pub dc: i16,
    /// Runtime IP family preference label (`prefer_v4`, ...), when known.
    pub ip_preference: Option<String>,
    pub selected_addr_v4: Option<SocketAddr>,
    pub selected_addr_v6: Option<SocketAddr>,
}

/// Values the adaptive floor computed at runtime (the configured inputs come from config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MeAdaptiveFloorRuntime {
    pub cpu_cores_detected: u32,
    pub cpu_cores_effective: u32,
    pub global_cap_raw: u64,
    pub global_cap_effective: u64,
    pub target_writers_total: u64,
    pub active_cap_configured: u64,
    pub active_cap_effective: u64,
    pub warm_cap_configured: u64,
    pub warm_cap_effective: u64,
    pub active_writers_current: u64,
    pub warm_writers_current: u64,
}

/// Clock-skew samples from proxy-config fetches (Date header).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeTimeskewSnapshot {
    pub max_skew_secs_15m: Option<u64>,
    pub samples_15m: usize,
    pub last_skew_secs: Option<u64>,
    pub last_source: Option<String>,
    pub last_seen_age_secs: Option<u64>,
}

/// Health of the SOCKS BND.ADDR seen by upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BndAddrState {
    #[default]
    Ok,
    Bogon,
    Error,
}

impl BndAddrState {
    /// Every variant, in declaration order (the schema's value list).
    pub const ALL: &'static [Self] = &[BndAddrState::Ok, BndAddrState::Bogon, BndAddrState::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            BndAddrState::Ok => "ok",
            BndAddrState::Bogon => "bogon",
            BndAddrState::Error => "error",
        }
    }
}

/// Health of the SOCKS BND.PORT seen by upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BndPortState {
    #[default]
    Ok,
    Zero,
    Error,
}

impl BndPortState {
    /// Every variant, in declaration order (the schema's value list).
    pub const ALL: &'static [Self] = &[BndPortState::Ok, BndPortState::Zero, BndPortState::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            BndPortState::Ok => "ok",
            BndPortState::Zero => "zero",
            BndPortState::Error => "error",
        }
    }
}

/// Latest SOCKS BND observation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeBndSnapshot {
    pub addr_state: BndAddrState,
    pub port_state: BndPortState,
    pub last_addr: Option<SocketAddr>,
    pub last_seen_age_secs: Option<u64>,
}

/// Inputs of `/v1/runtime/me-selftest` that only the runtime knows. The KDF error rate is
/// derived by the views from the `stats` counters; the PID is read from the process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeSelftestInputs {
    pub timeskew: MeTimeskewSnapshot,
    /// Detected interface addresses (classified good/bogon/loopback by the views).
    pub interface_v4: Option<Ipv4Addr>,
    pub interface_v6: Option<Ipv6Addr>,
    pub bnd: MeBndSnapshot,
}

/// Coherent copy of the ME pool state at `taken_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct MePoolSnapshot {
    pub taken_at: SystemTime,
    pub active_generation: u64,
    pub warm_generation: u64,
    /// `0` when no generation waits for a forced swap.
    pub pending_hardswap_generation: u64,
    pub pending_hardswap_age_secs: Option<u64>,
    pub hardswap_enabled: bool,
    pub writers: Vec<MeWriterSnapshot>,
    pub dcs: Vec<MeDcSnapshot>,
    pub refill: Vec<MeRefillInflight>,
    pub quarantine: Vec<MeQuarantineEntry>,
    pub network_path: Vec<MeDcPath>,
    pub adaptive: MeAdaptiveFloorRuntime,
    pub selftest: MeSelftestInputs,
}
