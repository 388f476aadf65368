//! Counter views: `/v1/stats/summary` and `/v1/stats/zero/all`.

use serde::Serialize;
use stats::{ClassCount, ZeroDesyncData, ZeroMiddleProxyData, ZeroPoolData, ZeroUpstreamData};

use super::ViewContext;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SummaryData {
    pub uptime_seconds: f64,
    pub connections_total: u64,
    pub connections_bad_total: u64,
    /// Bad connections by class (telemt `ClassCount[]`: `{"class", "total"}`), sorted by
    /// class; classes with a zero total are omitted, so an idle proxy reports `[]`. Totals
    /// add up to `connections_bad_total` (handshake timeouts included, class
    /// `handshake_timeout`).
    pub connections_bad_by_class: Vec<ClassCount>,
    pub handshake_timeouts_total: u64,
    pub configured_users: usize,
}

pub(super) fn summary(ctx: &ViewContext<'_>) -> SummaryData {
    let core = ctx.runtime.stats().core();
    SummaryData {
        uptime_seconds: ctx.uptime_seconds(),
        connections_total: core.connections_total,
        connections_bad_total: core.connections_bad_total,
        connections_bad_by_class: ctx.runtime.stats().bad_by_class(),
        handshake_timeouts_total: core.handshake_timeouts_total,
        configured_users: ctx.cfg().access.users.len(),
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ZeroCoreData {
    pub uptime_seconds: f64,
    pub connections_total: u64,
    pub connections_bad_total: u64,
    /// Same rows as [`SummaryData::connections_bad_by_class`].
    pub connections_bad_by_class: Vec<ClassCount>,
    pub handshake_timeouts_total: u64,
    /// Connections dropped at `server.max_connections` (telemt 3.4, additive).
    pub accept_permit_timeout_total: u64,
    pub configured_users: usize,
    pub telemetry_core_enabled: bool,
    pub telemetry_user_enabled: bool,
    #[schema(schema_with = crate::views::schema::zero_me_level)]
    pub telemetry_me_level: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ZeroAllData {
    pub generated_at_epoch_secs: u64,
    pub core: ZeroCoreData,
    pub upstream: ZeroUpstreamData,
    pub middle_proxy: ZeroMiddleProxyData,
    pub pool: ZeroPoolData,
    pub desync: ZeroDesyncData,
}

/// docs/API.md names the ME telemetry levels of `ZeroCoreData` `off|normal|verbose`, while the config
/// (and `/v1/security/posture`, docs/DECISIONS.md #24) uses `silent|normal|debug`; the contract wins here.
pub(super) fn zero_me_level(level: config::MeTelemetryLevel) -> &'static str {
    match level {
        config::MeTelemetryLevel::Silent => "off",
        config::MeTelemetryLevel::Normal => "normal",
        config::MeTelemetryLevel::Debug => "verbose",
    }
}

pub(super) fn zero_all(ctx: &ViewContext<'_>) -> ZeroAllData {
    let stats = ctx.runtime.stats();
    let core = stats.core();
    let telemetry = &ctx.cfg().general.telemetry;
    ZeroAllData {
        generated_at_epoch_secs: ctx.now_epoch_secs(),
        core: ZeroCoreData {
            uptime_seconds: ctx.uptime_seconds(),
            connections_total: core.connections_total,
            connections_bad_total: core.connections_bad_total,
            connections_bad_by_class: stats.bad_by_class(),
            handshake_timeouts_total: core.handshake_timeouts_total,
            accept_permit_timeout_total: core.accept_permit_timeout_total,
            configured_users: ctx.cfg().access.users.len(),
            telemetry_core_enabled: telemetry.core_enabled,
            telemetry_user_enabled: telemetry.user_enabled,
            telemetry_me_level: zero_me_level(telemetry.me_level),
        },
        upstream: stats.upstream(),
        middle_proxy: stats.middle_proxy(),
        pool: stats.pool(),
        desync: stats.desync(),
    }
}

/// `UserActiveIps` (telemt 3.4): a user with at least one active source IP.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserActiveIps {
    pub username: String,
    #[schema(value_type = Vec<String>)]
    pub active_ips: Vec<std::net::IpAddr>,
}

/// Configured users that have live source IPs, sorted by username.
pub(super) fn users_active_ips(ctx: &ViewContext<'_>) -> Vec<UserActiveIps> {
    let ips = ctx.runtime.stats().ips();
    ctx.cfg()
        .access
        .users
        .keys()
        .filter_map(|u| {
            let active_ips = ips.active_ips(u);
            (!active_ips.is_empty()).then(|| UserActiveIps {
                username: u.clone(),
                active_ips,
            })
        })
        .collect()
}
