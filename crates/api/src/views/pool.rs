//! ME pool views: `/v1/runtime/me_pool_state` and `/v1/runtime/me_quality`. Not gated by
//! `minimal_runtime_enabled`; `source_unavailable` when there is no ME pool.

use std::collections::BTreeSet;

use serde::Serialize;

use super::me::dc_rows;
use super::{epoch_secs, ViewContext, SOURCE_UNAVAILABLE};
use crate::runtime::WriterContour;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMePoolStateGenerationData {
    pub active_generation: u64,
    pub warm_generation: u64,
    pub pending_hardswap_generation: u64,
    #[schema(required = true)]
    pub pending_hardswap_age_secs: Option<u64>,
    pub draining_generations: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMePoolStateHardswapData {
    pub enabled: bool,
    pub pending: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMePoolStateWriterContourData {
    pub warm: usize,
    pub active: usize,
    pub draining: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMePoolStateWriterHealthData {
    pub healthy: usize,
    pub degraded: usize,
    pub draining: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMePoolStateWriterData {
    pub total: usize,
    pub alive_non_draining: usize,
    pub draining: usize,
    pub degraded: usize,
    pub contour: RuntimeMePoolStateWriterContourData,
    pub health: RuntimeMePoolStateWriterHealthData,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMePoolStateRefillDcData {
    pub dc: i16,
    #[schema(schema_with = crate::views::schema::addr_family)]
    pub family: &'static str,
    pub inflight: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMePoolStateRefillData {
    pub inflight_endpoints_total: usize,
    pub inflight_dc_total: usize,
    pub by_dc: Vec<RuntimeMePoolStateRefillDcData>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMePoolStatePayload {
    pub generations: RuntimeMePoolStateGenerationData,
    pub hardswap: RuntimeMePoolStateHardswapData,
    pub writers: RuntimeMePoolStateWriterData,
    pub refill: RuntimeMePoolStateRefillData,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMePoolStateData {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_unavailable)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    #[schema(required = true)]
    pub data: Option<RuntimeMePoolStatePayload>,
}

pub(super) fn me_pool_state(ctx: &ViewContext<'_>) -> RuntimeMePoolStateData {
    let Some(snap) = ctx.runtime.me_pool() else {
        return RuntimeMePoolStateData {
            enabled: false,
            reason: Some(SOURCE_UNAVAILABLE),
            generated_at_epoch_secs: ctx.now_epoch_secs(),
            data: None,
        };
    };
    let w = &snap.writers;
    let draining = w.iter().filter(|x| x.draining).count();
    let degraded = w.iter().filter(|x| x.degraded && !x.draining).count();
    let healthy = w.iter().filter(|x| !x.degraded && !x.draining).count();
    let contour = |c: WriterContour| w.iter().filter(|x| x.contour == c).count();
    let draining_generations: BTreeSet<u64> = w
        .iter()
        .filter(|x| x.draining)
        .map(|x| x.generation)
        .collect();
    let refill_keys: BTreeSet<(i16, &'static str)> = snap
        .refill
        .iter()
        .filter(|r| r.inflight > 0)
        .map(|r| (r.dc, r.family.as_str()))
        .collect();
    RuntimeMePoolStateData {
        enabled: true,
        reason: None,
        generated_at_epoch_secs: epoch_secs(snap.taken_at),
        data: Some(RuntimeMePoolStatePayload {
            generations: RuntimeMePoolStateGenerationData {
                active_generation: snap.active_generation,
                warm_generation: snap.warm_generation,
                pending_hardswap_generation: snap.pending_hardswap_generation,
                pending_hardswap_age_secs: snap.pending_hardswap_age_secs,
                draining_generations: draining_generations.into_iter().collect(),
            },
            hardswap: RuntimeMePoolStateHardswapData {
                enabled: snap.hardswap_enabled,
                pending: snap.pending_hardswap_generation != 0,
            },
            writers: RuntimeMePoolStateWriterData {
                total: w.len(),
                alive_non_draining: w.len() - draining,
                draining,
                degraded,
                contour: RuntimeMePoolStateWriterContourData {
                    warm: contour(WriterContour::Warm),
                    active: contour(WriterContour::Active),
                    draining: contour(WriterContour::Draining),
                },
                health: RuntimeMePoolStateWriterHealthData {
                    healthy,
                    degraded,
                    draining,
                },
            },
            refill: RuntimeMePoolStateRefillData {
                inflight_endpoints_total: snap.refill.iter().map(|r| r.inflight).sum(),
                inflight_dc_total: refill_keys.len(),
                by_dc: snap
                    .refill
                    .iter()
                    .map(|r| RuntimeMePoolStateRefillDcData {
                        dc: r.dc,
                        family: r.family.as_str(),
                        inflight: r.inflight,
                    })
                    .collect(),
            },
        }),
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeQualityCountersData {
    pub idle_close_by_peer_total: u64,
    pub reader_eof_total: u64,
    pub kdf_drift_total: u64,
    pub kdf_port_only_drift_total: u64,
    pub reconnect_attempt_total: u64,
    pub reconnect_success_total: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeQualityRouteDropData {
    pub no_conn_total: u64,
    pub channel_closed_total: u64,
    pub queue_full_total: u64,
    pub queue_full_base_total: u64,
    pub queue_full_high_total: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeQualityDcRttData {
    pub dc: i16,
    #[schema(required = true)]
    pub rtt_ema_ms: Option<f64>,
    pub alive_writers: usize,
    pub required_writers: usize,
    pub coverage_pct: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeQualityPayload {
    pub counters: RuntimeMeQualityCountersData,
    pub route_drops: RuntimeMeQualityRouteDropData,
    pub dc_rtt: Vec<RuntimeMeQualityDcRttData>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeMeQualityData {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_unavailable)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    #[schema(required = true)]
    pub data: Option<RuntimeMeQualityPayload>,
}

pub(super) fn me_quality(ctx: &ViewContext<'_>) -> RuntimeMeQualityData {
    let Some(snap) = ctx.runtime.me_pool() else {
        return RuntimeMeQualityData {
            enabled: false,
            reason: Some(SOURCE_UNAVAILABLE),
            generated_at_epoch_secs: ctx.now_epoch_secs(),
            data: None,
        };
    };
    let mp = ctx.runtime.stats().middle_proxy();
    RuntimeMeQualityData {
        enabled: true,
        reason: None,
        generated_at_epoch_secs: epoch_secs(snap.taken_at),
        data: Some(RuntimeMeQualityPayload {
            counters: RuntimeMeQualityCountersData {
                idle_close_by_peer_total: mp.idle_close_by_peer_total,
                reader_eof_total: mp.reader_eof_total,
                kdf_drift_total: mp.kdf_drift_total,
                kdf_port_only_drift_total: mp.kdf_port_only_drift_total,
                reconnect_attempt_total: mp.reconnect_attempt_total,
                reconnect_success_total: mp.reconnect_success_total,
            },
            route_drops: RuntimeMeQualityRouteDropData {
                no_conn_total: mp.route_drop_no_conn_total,
                channel_closed_total: mp.route_drop_channel_closed_total,
                queue_full_total: mp.route_drop_queue_full_total,
                queue_full_base_total: mp.route_drop_queue_full_base_total,
                queue_full_high_total: mp.route_drop_queue_full_high_total,
            },
            dc_rtt: dc_rows(&snap)
                .into_iter()
                .map(|d| RuntimeMeQualityDcRttData {
                    dc: d.dc,
                    rtt_ema_ms: d.rtt_ms,
                    alive_writers: d.alive_writers,
                    required_writers: d.required_writers,
                    coverage_pct: d.coverage_pct,
                })
                .collect(),
        }),
    }
}
