//! `/v1/runtime/me-selftest`: KDF error-rate EWMA, clock skew, interface IP class, PID marker,
//! SOCKS BND health (see docs/ME-MODEL.md "Self-test").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{ViewContext, SOURCE_UNAVAILABLE};

/// KDF errors per minute (EWMA) at or above which the state is `error`.
pub(crate) const KDF_THRESHOLD_ERRORS_PER_MIN: f64 = 0.30;
/// EWMA time constant: the rate forgets a burst over roughly ten minutes.
pub(crate) const KDF_EWMA_TAU_SECS: f64 = 600.0;
/// Skew above this (seconds) in the last 15 minutes is an error.
const TIMESKEW_THRESHOLD_SECS: u64 = 60;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeSelftestKdfData {
    #[schema(schema_with = crate::views::schema::ok_or_error)]
    pub state: &'static str,
    pub ewma_errors_per_min: f64,
    pub threshold_errors_per_min: f64,
    pub errors_total: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeSelftestTimeskewData {
    #[schema(schema_with = crate::views::schema::ok_or_error)]
    pub state: &'static str,
    #[schema(required = true)]
    pub max_skew_secs_15m: Option<u64>,
    pub samples_15m: usize,
    #[schema(required = true)]
    pub last_skew_secs: Option<u64>,
    #[schema(required = true)]
    pub last_source: Option<String>,
    #[schema(required = true)]
    pub last_seen_age_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeSelftestIpFamilyData {
    pub addr: String,
    #[schema(schema_with = crate::views::schema::ip_class)]
    pub state: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeSelftestIpData {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub v4: Option<RuntimeMeSelftestIpFamilyData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub v6: Option<RuntimeMeSelftestIpFamilyData>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeSelftestPidData {
    pub pid: u32,
    #[schema(schema_with = crate::views::schema::pid_state)]
    pub state: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeSelftestBndData {
    #[schema(schema_with = crate::views::schema::bnd_addr_state)]
    pub addr_state: &'static str,
    #[schema(schema_with = crate::views::schema::bnd_port_state)]
    pub port_state: &'static str,
    #[schema(required = true)]
    pub last_addr: Option<String>,
    #[schema(required = true)]
    pub last_seen_age_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeSelftestPayload {
    pub kdf: RuntimeMeSelftestKdfData,
    pub timeskew: RuntimeMeSelftestTimeskewData,
    pub ip: RuntimeMeSelftestIpData,
    pub pid: RuntimeMeSelftestPidData,
    pub bnd: RuntimeMeSelftestBndData,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeSelftestData {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_unavailable)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    #[schema(required = true)]
    pub data: Option<RuntimeMeSelftestPayload>,
}

const OK: &str = "ok";
const ERROR: &str = "error";
/// `state` of a threshold check (KDF error rate, clock skew).
pub(super) const CHECK_STATES: [&str; 2] = [OK, ERROR];
const LOOPBACK: &str = "loopback";
const BOGON: &str = "bogon";
const GOOD: &str = "good";
/// What [`classify_ip`] answers.
pub(super) const IP_CLASSES: [&str; 3] = [GOOD, BOGON, LOOPBACK];
const PID_ONE: &str = "one";
const PID_NOT_ONE: &str = "non-one";
/// `pid.state`.
pub(super) const PID_STATES: [&str; 2] = [PID_ONE, PID_NOT_ONE];

/// `loopback`, `bogon` (not publicly routable) or `good`.
pub(crate) fn classify_ip(ip: IpAddr) -> &'static str {
    if ip.is_loopback() {
        return LOOPBACK;
    }
    let bogon = match ip {
        IpAddr::V4(v4) => is_bogon_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_loopback() || is_bogon_v4(v4),
            None => is_bogon_v6(v6),
        },
    };
    if bogon {
        BOGON
    } else {
        GOOD
    }
}

fn is_bogon_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_unspecified()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_bogon_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only
}

pub(super) fn me_selftest(ctx: &ViewContext<'_>) -> RuntimeMeSelftestData {
    let now = ctx.now_epoch_secs();
    let Some(snap) = ctx.runtime.me_pool() else {
        return RuntimeMeSelftestData {
            enabled: false,
            reason: Some(SOURCE_UNAVAILABLE),
            generated_at_epoch_secs: now,
            data: None,
        };
    };
    let mp = ctx.runtime.stats().middle_proxy();
    let errors_total = mp
        .kdf_drift_total
        .saturating_add(mp.socks_kdf_strict_reject_total);
    let ewma = ctx.caches.kdf_ewma(now, errors_total);
    let inputs = snap.selftest;
    let skew = inputs.timeskew;
    let pid = std::process::id();
    RuntimeMeSelftestData {
        enabled: true,
        reason: None,
        generated_at_epoch_secs: now,
        data: Some(RuntimeMeSelftestPayload {
            kdf: RuntimeMeSelftestKdfData {
                state: if ewma >= KDF_THRESHOLD_ERRORS_PER_MIN {
                    ERROR
                } else {
                    OK
                },
                ewma_errors_per_min: (ewma * 1000.0).round() / 1000.0,
                threshold_errors_per_min: KDF_THRESHOLD_ERRORS_PER_MIN,
                errors_total,
            },
            timeskew: RuntimeMeSelftestTimeskewData {
                state: if skew.max_skew_secs_15m.unwrap_or(0) > TIMESKEW_THRESHOLD_SECS {
                    ERROR
                } else {
                    OK
                },
                max_skew_secs_15m: skew.max_skew_secs_15m,
                samples_15m: skew.samples_15m,
                last_skew_secs: skew.last_skew_secs,
                last_source: skew.last_source,
                last_seen_age_secs: skew.last_seen_age_secs,
            },
            ip: RuntimeMeSelftestIpData {
                v4: inputs.interface_v4.map(|ip| RuntimeMeSelftestIpFamilyData {
                    addr: ip.to_string(),
                    state: classify_ip(IpAddr::V4(ip)),
                }),
                v6: inputs.interface_v6.map(|ip| RuntimeMeSelftestIpFamilyData {
                    addr: ip.to_string(),
                    state: classify_ip(IpAddr::V6(ip)),
                }),
            },
            pid: RuntimeMeSelftestPidData {
                pid,
                state: if pid == 1 { PID_ONE } else { PID_NOT_ONE },
            },
            bnd: RuntimeMeSelftestBndData {
                addr_state: inputs.bnd.addr_state.as_str(),
                port_state: inputs.bnd.port_state.as_str(),
                last_addr: inputs.bnd.last_addr.map(|a| a.to_string()),
                last_seen_age_secs: inputs.bnd.last_seen_age_secs,
            },
        }),
    }
}
