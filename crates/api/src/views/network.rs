//! Upstream and NAT/STUN views: `/v1/stats/upstreams`, `/v1/runtime/upstream_quality`,
//! `/v1/runtime/nat_stun`.

use serde::Serialize;
use stats::ZeroUpstreamData;

use super::{ViewContext, FEATURE_DISABLED, SOURCE_UNAVAILABLE};
use crate::runtime::{StunReflection, UpstreamRouteKind, UpstreamsSnapshot};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UpstreamSummaryData {
    pub configured_total: usize,
    pub healthy_total: usize,
    pub unhealthy_total: usize,
    pub direct_total: usize,
    pub socks4_total: usize,
    pub socks5_total: usize,
    pub shadowsocks_total: usize,
}

/// `RuntimeUpstreamQualitySummaryData` has exactly the same shape.
pub type RuntimeUpstreamQualitySummaryData = UpstreamSummaryData;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UpstreamDcStatus {
    pub dc: i16,
    #[schema(required = true)]
    pub latency_ema_ms: Option<f64>,
    #[schema(schema_with = crate::views::schema::ip_preference)]
    pub ip_preference: &'static str,
}

/// `RuntimeUpstreamQualityDcData` has exactly the same shape.
pub type RuntimeUpstreamQualityDcData = UpstreamDcStatus;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UpstreamStatus {
    pub upstream_id: usize,
    #[schema(schema_with = crate::views::schema::route_kind)]
    pub route_kind: &'static str,
    pub address: String,
    pub weight: u16,
    pub scopes: String,
    pub healthy: bool,
    pub fails: u32,
    pub last_check_age_secs: u64,
    #[schema(required = true)]
    pub effective_latency_ms: Option<f64>,
    pub dc: Vec<UpstreamDcStatus>,
}

/// `RuntimeUpstreamQualityUpstreamData` has exactly the same shape.
pub type RuntimeUpstreamQualityUpstreamData = UpstreamStatus;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UpstreamsData {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_any)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    pub zero: ZeroUpstreamData,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub summary: Option<UpstreamSummaryData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub upstreams: Option<Vec<UpstreamStatus>>,
}

fn summarize(snap: &UpstreamsSnapshot) -> UpstreamSummaryData {
    let rows = &snap.upstreams;
    let kind = |k: UpstreamRouteKind| rows.iter().filter(|u| u.route_kind == k).count();
    let healthy_total = rows.iter().filter(|u| u.healthy).count();
    UpstreamSummaryData {
        configured_total: rows.len(),
        healthy_total,
        unhealthy_total: rows.len() - healthy_total,
        direct_total: kind(UpstreamRouteKind::Direct),
        socks4_total: kind(UpstreamRouteKind::Socks4),
        socks5_total: kind(UpstreamRouteKind::Socks5),
        shadowsocks_total: kind(UpstreamRouteKind::Shadowsocks),
    }
}

fn rows(snap: UpstreamsSnapshot, ctx: &ViewContext<'_>) -> Vec<UpstreamStatus> {
    snap.upstreams
        .into_iter()
        .map(|u| UpstreamStatus {
            upstream_id: u.upstream_id,
            route_kind: u.route_kind.as_str(),
            address: u.address,
            weight: u.weight,
            scopes: u.scopes,
            healthy: u.healthy,
            fails: u.fails,
            last_check_age_secs: ctx
                .now
                .duration_since(u.last_check_at)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            effective_latency_ms: u.effective_latency_ms,
            dc: u
                .dc
                .into_iter()
                .map(|d| UpstreamDcStatus {
                    dc: d.dc,
                    latency_ema_ms: d.latency_ema_ms,
                    ip_preference: d.ip_preference.as_str(),
                })
                .collect(),
        })
        .collect()
}

pub(super) fn upstreams(ctx: &ViewContext<'_>) -> UpstreamsData {
    let generated_at_epoch_secs = ctx.now_epoch_secs();
    let zero = ctx.runtime.stats().upstream();
    if !ctx.cfg().server.api.minimal_runtime_enabled {
        return UpstreamsData {
            enabled: false,
            reason: Some(FEATURE_DISABLED),
            generated_at_epoch_secs,
            zero,
            summary: None,
            upstreams: None,
        };
    }
    let Some(snap) = ctx.runtime.upstreams() else {
        return UpstreamsData {
            enabled: true,
            reason: Some(SOURCE_UNAVAILABLE),
            generated_at_epoch_secs,
            zero,
            summary: None,
            upstreams: None,
        };
    };
    UpstreamsData {
        enabled: true,
        reason: None,
        generated_at_epoch_secs,
        zero,
        summary: Some(summarize(&snap)),
        upstreams: Some(rows(snap, ctx)),
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeUpstreamQualityPolicyData {
    pub connect_retry_attempts: u32,
    pub connect_retry_backoff_ms: u64,
    pub connect_budget_ms: u64,
    pub unhealthy_fail_threshold: u32,
    pub connect_failfast_hard_errors: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeUpstreamQualityCountersData {
    pub connect_attempt_total: u64,
    pub connect_success_total: u64,
    pub connect_fail_total: u64,
    pub connect_failfast_hard_error_total: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeUpstreamQualityData {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_unavailable)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    pub policy: RuntimeUpstreamQualityPolicyData,
    pub counters: RuntimeUpstreamQualityCountersData,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub summary: Option<RuntimeUpstreamQualitySummaryData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub upstreams: Option<Vec<RuntimeUpstreamQualityUpstreamData>>,
}

pub(super) fn upstream_quality(ctx: &ViewContext<'_>) -> RuntimeUpstreamQualityData {
    let g = &ctx.cfg().general;
    let zero = ctx.runtime.stats().upstream();
    let policy = RuntimeUpstreamQualityPolicyData {
        connect_retry_attempts: g.upstream_connect_retry_attempts,
        connect_retry_backoff_ms: g.upstream_connect_retry_backoff_ms,
        connect_budget_ms: g.upstream_connect_budget_ms,
        unhealthy_fail_threshold: g.upstream_unhealthy_fail_threshold,
        connect_failfast_hard_errors: g.upstream_connect_failfast_hard_errors,
    };
    let counters = RuntimeUpstreamQualityCountersData {
        connect_attempt_total: zero.connect_attempt_total,
        connect_success_total: zero.connect_success_total,
        connect_fail_total: zero.connect_fail_total,
        connect_failfast_hard_error_total: zero.connect_failfast_hard_error_total,
    };
    let generated_at_epoch_secs = ctx.now_epoch_secs();
    match ctx.runtime.upstreams() {
        None => RuntimeUpstreamQualityData {
            enabled: false,
            reason: Some(SOURCE_UNAVAILABLE),
            generated_at_epoch_secs,
            policy,
            counters,
            summary: None,
            upstreams: None,
        },
        Some(snap) => RuntimeUpstreamQualityData {
            enabled: true,
            reason: None,
            generated_at_epoch_secs,
            policy,
            counters,
            summary: Some(summarize(&snap)),
            upstreams: Some(rows(snap, ctx)),
        },
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeNatStunFlagsData {
    pub nat_probe_enabled: bool,
    pub nat_probe_disabled_runtime: bool,
    pub nat_probe_attempts: u8,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeNatStunServersData {
    pub configured: Vec<String>,
    pub live: Vec<String>,
    pub live_total: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeNatStunReflectionData {
    pub addr: String,
    pub age_secs: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeNatStunReflectionBlockData {
    #[schema(required = true)]
    pub v4: Option<RuntimeNatStunReflectionData>,
    #[schema(required = true)]
    pub v6: Option<RuntimeNatStunReflectionData>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeNatStunPayload {
    pub flags: RuntimeNatStunFlagsData,
    pub servers: RuntimeNatStunServersData,
    pub reflection: RuntimeNatStunReflectionBlockData,
    #[schema(required = true)]
    pub stun_backoff_remaining_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeNatStunData {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_unavailable)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    #[schema(required = true)]
    pub data: Option<RuntimeNatStunPayload>,
}

pub(super) fn nat_stun(ctx: &ViewContext<'_>) -> RuntimeNatStunData {
    let generated_at_epoch_secs = ctx.now_epoch_secs();
    let Some(s) = ctx.runtime.nat_stun() else {
        return RuntimeNatStunData {
            enabled: false,
            reason: Some(SOURCE_UNAVAILABLE),
            generated_at_epoch_secs,
            data: None,
        };
    };
    let reflection = |r: StunReflection| RuntimeNatStunReflectionData {
        addr: r.addr.to_string(),
        age_secs: ctx
            .now
            .duration_since(r.observed_at)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    RuntimeNatStunData {
        enabled: true,
        reason: None,
        generated_at_epoch_secs,
        data: Some(RuntimeNatStunPayload {
            flags: RuntimeNatStunFlagsData {
                nat_probe_enabled: s.nat_probe_enabled,
                nat_probe_disabled_runtime: s.nat_probe_disabled_runtime,
                nat_probe_attempts: s.nat_probe_attempts,
            },
            servers: RuntimeNatStunServersData {
                live_total: s.live_servers.len(),
                configured: s.configured_servers,
                live: s.live_servers,
            },
            reflection: RuntimeNatStunReflectionBlockData {
                v4: s.reflection_v4.map(reflection),
                v6: s.reflection_v6.map(reflection),
            },
            stun_backoff_remaining_ms: s.stun_backoff_remaining_ms,
        }),
    }
}
