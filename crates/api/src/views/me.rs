//! ME minimal-runtime views: `/v1/stats/minimal/all`, `/v1/stats/me-writers`, `/v1/stats/dcs`
//! (pool state/quality live in `pool`, self-test in `selftest`).

use serde::Serialize;

use super::{epoch_secs, pct, ViewContext, FEATURE_DISABLED, SOURCE_UNAVAILABLE};
use crate::runtime::MePoolSnapshot;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeWritersSummary {
    pub configured_dc_groups: usize,
    pub configured_endpoints: usize,
    pub available_endpoints: usize,
    pub available_pct: f64,
    pub required_writers: usize,
    pub alive_writers: usize,
    pub coverage_pct: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeWriterStatus {
    pub writer_id: u64,
    #[schema(required = true)]
    pub dc: Option<i16>,
    pub endpoint: String,
    pub generation: u64,
    #[schema(schema_with = crate::views::schema::writer_contour)]
    pub state: &'static str,
    pub draining: bool,
    pub degraded: bool,
    pub bound_clients: usize,
    #[schema(required = true)]
    pub idle_for_secs: Option<u64>,
    #[schema(required = true)]
    pub rtt_ema_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeWritersData {
    pub middle_proxy_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_any)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    pub summary: MeWritersSummary,
    pub writers: Vec<MeWriterStatus>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DcEndpointWriters {
    pub endpoint: String,
    pub active_writers: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DcStatus {
    pub dc: i16,
    pub endpoints: Vec<String>,
    pub endpoint_writers: Vec<DcEndpointWriters>,
    pub available_endpoints: usize,
    pub available_pct: f64,
    pub required_writers: usize,
    pub floor_min: usize,
    pub floor_target: usize,
    pub floor_max: usize,
    pub floor_capped: bool,
    pub alive_writers: usize,
    pub coverage_pct: f64,
    #[schema(required = true)]
    pub rtt_ms: Option<f64>,
    pub load: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DcStatusData {
    pub middle_proxy_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_any)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    pub dcs: Vec<DcStatus>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MinimalQuarantineData {
    pub endpoint: String,
    pub remaining_ms: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MinimalDcPathData {
    pub dc: i16,
    #[schema(required = true, schema_with = crate::views::schema::ip_preference_or_null)]
    pub ip_preference: Option<String>,
    #[schema(required = true)]
    pub selected_addr_v4: Option<String>,
    #[schema(required = true)]
    pub selected_addr_v6: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MinimalMeRuntimeData {
    pub active_generation: u64,
    pub warm_generation: u64,
    pub pending_hardswap_generation: u64,
    #[schema(required = true)]
    pub pending_hardswap_age_secs: Option<u64>,
    pub hardswap_enabled: bool,
    #[schema(schema_with = crate::views::schema::floor_mode)]
    pub floor_mode: &'static str,
    pub adaptive_floor_idle_secs: u64,
    pub adaptive_floor_min_writers_single_endpoint: u8,
    pub adaptive_floor_min_writers_multi_endpoint: u8,
    pub adaptive_floor_recover_grace_secs: u64,
    pub adaptive_floor_writers_per_core_total: u16,
    pub adaptive_floor_cpu_cores_override: u16,
    pub adaptive_floor_max_extra_writers_single_per_core: u16,
    pub adaptive_floor_max_extra_writers_multi_per_core: u16,
    pub adaptive_floor_max_active_writers_per_core: u16,
    pub adaptive_floor_max_warm_writers_per_core: u16,
    pub adaptive_floor_max_active_writers_global: u32,
    pub adaptive_floor_max_warm_writers_global: u32,
    pub adaptive_floor_cpu_cores_detected: u32,
    pub adaptive_floor_cpu_cores_effective: u32,
    pub adaptive_floor_global_cap_raw: u64,
    pub adaptive_floor_global_cap_effective: u64,
    pub adaptive_floor_target_writers_total: u64,
    pub adaptive_floor_active_cap_configured: u64,
    pub adaptive_floor_active_cap_effective: u64,
    pub adaptive_floor_warm_cap_configured: u64,
    pub adaptive_floor_warm_cap_effective: u64,
    pub adaptive_floor_active_writers_current: u64,
    pub adaptive_floor_warm_writers_current: u64,
    pub me_keepalive_enabled: bool,
    pub me_keepalive_interval_secs: u64,
    pub me_keepalive_jitter_secs: u64,
    pub me_keepalive_payload_random: bool,
    pub rpc_proxy_req_every_secs: u64,
    pub me_reconnect_max_concurrent_per_dc: u32,
    pub me_reconnect_backoff_base_ms: u64,
    pub me_reconnect_backoff_cap_ms: u64,
    pub me_reconnect_fast_retry_count: u32,
    pub me_pool_drain_ttl_secs: u64,
    pub me_pool_force_close_secs: u64,
    pub me_pool_min_fresh_ratio: f32,
    #[schema(schema_with = crate::views::schema::bind_stale_mode)]
    pub me_bind_stale_mode: &'static str,
    pub me_bind_stale_ttl_secs: u64,
    pub me_single_endpoint_shadow_writers: u8,
    pub me_single_endpoint_outage_mode_enabled: bool,
    pub me_single_endpoint_outage_disable_quarantine: bool,
    pub me_single_endpoint_outage_backoff_min_ms: u64,
    pub me_single_endpoint_outage_backoff_max_ms: u64,
    pub me_single_endpoint_shadow_rotate_every_secs: u64,
    pub me_deterministic_writer_sort: bool,
    #[schema(schema_with = crate::views::schema::writer_pick_mode)]
    pub me_writer_pick_mode: &'static str,
    pub me_writer_pick_sample_size: u8,
    #[schema(schema_with = crate::views::schema::socks_kdf_policy)]
    pub me_socks_kdf_policy: &'static str,
    pub quarantined_endpoints_total: usize,
    pub quarantined_endpoints: Vec<MinimalQuarantineData>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MinimalAllPayload {
    pub me_writers: MeWritersData,
    pub dcs: DcStatusData,
    #[schema(required = true)]
    pub me_runtime: Option<MinimalMeRuntimeData>,
    pub network_path: Vec<MinimalDcPathData>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MinimalAllData {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_any)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    /// `null` when disabled; fallback payload when the source is unavailable.
    #[schema(required = true)]
    pub data: Option<MinimalAllPayload>,
}

fn disabled_me_writers(now: u64, reason: &'static str) -> MeWritersData {
    MeWritersData {
        middle_proxy_enabled: false,
        reason: Some(reason),
        generated_at_epoch_secs: now,
        summary: MeWritersSummary {
            configured_dc_groups: 0,
            configured_endpoints: 0,
            available_endpoints: 0,
            available_pct: 0.0,
            required_writers: 0,
            alive_writers: 0,
            coverage_pct: 0.0,
        },
        writers: Vec::new(),
    }
}

fn disabled_dcs(now: u64, reason: &'static str) -> DcStatusData {
    DcStatusData {
        middle_proxy_enabled: false,
        reason: Some(reason),
        generated_at_epoch_secs: now,
        dcs: Vec::new(),
    }
}

/// Per-DC rows derived from the raw pool snapshot. A writer is *alive* when it is not
/// draining; an endpoint is *available* when at least one alive writer uses it.
pub(crate) fn dc_rows(snap: &MePoolSnapshot) -> Vec<DcStatus> {
    snap.dcs
        .iter()
        .map(|dc| {
            let alive: Vec<_> = snap
                .writers
                .iter()
                .filter(|w| w.dc == Some(dc.dc) && !w.draining)
                .collect();
            let endpoint_writers: Vec<DcEndpointWriters> = dc
                .endpoints
                .iter()
                .map(|ep| DcEndpointWriters {
                    endpoint: ep.to_string(),
                    active_writers: alive.iter().filter(|w| w.endpoint == *ep).count(),
                })
                .collect();
            let available_endpoints = endpoint_writers
                .iter()
                .filter(|e| e.active_writers > 0)
                .count();
            let rtts: Vec<f64> = alive.iter().filter_map(|w| w.rtt_ema_ms).collect();
            let rtt_ms = (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64);
            DcStatus {
                dc: dc.dc,
                endpoints: dc.endpoints.iter().map(ToString::to_string).collect(),
                endpoint_writers,
                available_endpoints,
                available_pct: pct(available_endpoints, dc.endpoints.len()),
                required_writers: dc.floor_target,
                floor_min: dc.floor_min,
                floor_target: dc.floor_target,
                floor_max: dc.floor_max,
                floor_capped: dc.floor_capped,
                alive_writers: alive.len(),
                coverage_pct: pct(alive.len(), dc.floor_target),
                rtt_ms,
                load: dc.load,
            }
        })
        .collect()
}

fn build_payload(ctx: &ViewContext<'_>, snap: MePoolSnapshot) -> (u64, MinimalAllPayload) {
    let generated = epoch_secs(snap.taken_at);
    let dcs = dc_rows(&snap);
    let configured_endpoints: usize = dcs.iter().map(|d| d.endpoints.len()).sum();
    let available_endpoints: usize = dcs.iter().map(|d| d.available_endpoints).sum();
    let required_writers: usize = dcs.iter().map(|d| d.required_writers).sum();
    let alive_writers: usize = dcs.iter().map(|d| d.alive_writers).sum();
    let me_writers = MeWritersData {
        middle_proxy_enabled: true,
        reason: None,
        generated_at_epoch_secs: generated,
        summary: MeWritersSummary {
            configured_dc_groups: dcs.len(),
            configured_endpoints,
            available_endpoints,
            available_pct: pct(available_endpoints, configured_endpoints),
            required_writers,
            alive_writers,
            coverage_pct: pct(alive_writers, required_writers),
        },
        writers: snap
            .writers
            .iter()
            .map(|w| MeWriterStatus {
                writer_id: w.writer_id,
                dc: w.dc,
                endpoint: w.endpoint.to_string(),
                generation: w.generation,
                state: w.contour.as_str(),
                draining: w.draining,
                degraded: w.degraded,
                bound_clients: w.bound_clients,
                idle_for_secs: w.idle_for_secs,
                rtt_ema_ms: w.rtt_ema_ms,
            })
            .collect(),
    };
    let g = &ctx.cfg().general;
    let a = snap.adaptive;
    let me_runtime = MinimalMeRuntimeData {
        active_generation: snap.active_generation,
        warm_generation: snap.warm_generation,
        pending_hardswap_generation: snap.pending_hardswap_generation,
        pending_hardswap_age_secs: snap.pending_hardswap_age_secs,
        hardswap_enabled: snap.hardswap_enabled,
        floor_mode: g.me_floor_mode.as_str(),
        adaptive_floor_idle_secs: g.me_adaptive_floor_idle_secs,
        adaptive_floor_min_writers_single_endpoint: g.me_adaptive_floor_min_writers_single_endpoint,
        adaptive_floor_min_writers_multi_endpoint: g.me_adaptive_floor_min_writers_multi_endpoint,
        adaptive_floor_recover_grace_secs: g.me_adaptive_floor_recover_grace_secs,
        adaptive_floor_writers_per_core_total: g.me_adaptive_floor_writers_per_core_total,
        adaptive_floor_cpu_cores_override: g.me_adaptive_floor_cpu_cores_override,
        adaptive_floor_max_extra_writers_single_per_core: g
            .me_adaptive_floor_max_extra_writers_single_per_core,
        adaptive_floor_max_extra_writers_multi_per_core: g
            .me_adaptive_floor_max_extra_writers_multi_per_core,
        adaptive_floor_max_active_writers_per_core: g.me_adaptive_floor_max_active_writers_per_core,
        adaptive_floor_max_warm_writers_per_core: g.me_adaptive_floor_max_warm_writers_per_core,
        adaptive_floor_max_active_writers_global: g.me_adaptive_floor_max_active_writers_global,
        adaptive_floor_max_warm_writers_global: g.me_adaptive_floor_max_warm_writers_global,
        adaptive_floor_cpu_cores_detected: a.cpu_cores_detected,
        adaptive_floor_cpu_cores_effective: a.cpu_cores_effective,
        adaptive_floor_global_cap_raw: a.global_cap_raw,
        adaptive_floor_global_cap_effective: a.global_cap_effective,
        adaptive_floor_target_writers_total: a.target_writers_total,
        adaptive_floor_active_cap_configured: a.active_cap_configured,
        adaptive_floor_active_cap_effective: a.active_cap_effective,
        adaptive_floor_warm_cap_configured: a.warm_cap_configured,
        adaptive_floor_warm_cap_effective: a.warm_cap_effective,
        adaptive_floor_active_writers_current: a.active_writers_current,
        adaptive_floor_warm_writers_current: a.warm_writers_current,
        me_keepalive_enabled: g.me_keepalive_enabled,
        me_keepalive_interval_secs: g.me_keepalive_interval_secs,
        me_keepalive_jitter_secs: g.me_keepalive_jitter_secs,
        me_keepalive_payload_random: g.me_keepalive_payload_random,
        rpc_proxy_req_every_secs: g.rpc_proxy_req_every,
        me_reconnect_max_concurrent_per_dc: g.me_reconnect_max_concurrent_per_dc,
        me_reconnect_backoff_base_ms: g.me_reconnect_backoff_base_ms,
        me_reconnect_backoff_cap_ms: g.me_reconnect_backoff_cap_ms,
        me_reconnect_fast_retry_count: g.me_reconnect_fast_retry_count,
        me_pool_drain_ttl_secs: g.me_pool_drain_ttl_secs,
        me_pool_force_close_secs: g.effective_me_pool_force_close_secs(),
        me_pool_min_fresh_ratio: g.me_pool_min_fresh_ratio,
        me_bind_stale_mode: g.me_bind_stale_mode.as_str(),
        me_bind_stale_ttl_secs: g.me_bind_stale_ttl_secs,
        me_single_endpoint_shadow_writers: g.me_single_endpoint_shadow_writers,
        me_single_endpoint_outage_mode_enabled: g.me_single_endpoint_outage_mode_enabled,
        me_single_endpoint_outage_disable_quarantine: g
            .me_single_endpoint_outage_disable_quarantine,
        me_single_endpoint_outage_backoff_min_ms: g.me_single_endpoint_outage_backoff_min_ms,
        me_single_endpoint_outage_backoff_max_ms: g.me_single_endpoint_outage_backoff_max_ms,
        me_single_endpoint_shadow_rotate_every_secs: g.me_single_endpoint_shadow_rotate_every_secs,
        me_deterministic_writer_sort: g.me_deterministic_writer_sort,
        me_writer_pick_mode: g.me_writer_pick_mode.as_str(),
        me_writer_pick_sample_size: g.me_writer_pick_sample_size,
        me_socks_kdf_policy: g.me_socks_kdf_policy.as_str(),
        quarantined_endpoints_total: snap.quarantine.len(),
        quarantined_endpoints: snap
            .quarantine
            .iter()
            .map(|q| MinimalQuarantineData {
                endpoint: q.endpoint.to_string(),
                remaining_ms: q.remaining_ms,
            })
            .collect(),
    };
    let network_path = snap
        .network_path
        .into_iter()
        .map(|p| MinimalDcPathData {
            dc: p.dc,
            ip_preference: p.ip_preference,
            selected_addr_v4: p.selected_addr_v4.map(|a| a.to_string()),
            selected_addr_v6: p.selected_addr_v6.map(|a| a.to_string()),
        })
        .collect();
    let payload = MinimalAllPayload {
        me_writers,
        dcs: DcStatusData {
            middle_proxy_enabled: true,
            reason: None,
            generated_at_epoch_secs: generated,
            dcs,
        },
        me_runtime: Some(me_runtime),
        network_path,
    };
    (generated, payload)
}

/// The minimal payload, from the TTL cache or freshly built; `None` when there is no pool.
fn minimal_payload(ctx: &ViewContext<'_>) -> Option<(u64, MinimalAllPayload)> {
    let ttl_ms = ctx.cfg().server.api.minimal_runtime_cache_ttl_ms;
    ctx.caches.minimal(ctx.now, ttl_ms, || {
        ctx.runtime.me_pool().map(|snap| build_payload(ctx, snap))
    })
}

pub(super) fn minimal_all(ctx: &ViewContext<'_>) -> MinimalAllData {
    let now = ctx.now_epoch_secs();
    if !ctx.cfg().server.api.minimal_runtime_enabled {
        return MinimalAllData {
            enabled: false,
            reason: Some(FEATURE_DISABLED),
            generated_at_epoch_secs: now,
            data: None,
        };
    }
    match minimal_payload(ctx) {
        Some((generated, payload)) => MinimalAllData {
            enabled: true,
            reason: None,
            generated_at_epoch_secs: generated,
            data: Some(payload),
        },
        None => MinimalAllData {
            enabled: true,
            reason: Some(SOURCE_UNAVAILABLE),
            generated_at_epoch_secs: now,
            data: Some(MinimalAllPayload {
                me_writers: disabled_me_writers(now, SOURCE_UNAVAILABLE),
                dcs: disabled_dcs(now, SOURCE_UNAVAILABLE),
                me_runtime: None,
                network_path: Vec::new(),
            }),
        },
    }
}

pub(super) fn me_writers(ctx: &ViewContext<'_>) -> MeWritersData {
    let now = ctx.now_epoch_secs();
    if !ctx.cfg().server.api.minimal_runtime_enabled {
        return disabled_me_writers(now, FEATURE_DISABLED);
    }
    minimal_payload(ctx).map_or_else(
        || disabled_me_writers(now, SOURCE_UNAVAILABLE),
        |(_, p)| p.me_writers,
    )
}

pub(super) fn dcs(ctx: &ViewContext<'_>) -> DcStatusData {
    let now = ctx.now_epoch_secs();
    if !ctx.cfg().server.api.minimal_runtime_enabled {
        return disabled_dcs(now, FEATURE_DISABLED);
    }
    minimal_payload(ctx).map_or_else(|| disabled_dcs(now, SOURCE_UNAVAILABLE), |(_, p)| p.dcs)
}
