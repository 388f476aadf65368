//! Process/config views: health, system info, gates, initialization, effective limits,
//! security posture and whitelist.

use serde::Serialize;

use super::{epoch_secs, ViewContext};
use crate::runtime::StartupStatus;

/// `/v1/health`'s only `status`.
pub(super) const HEALTH_STATUSES: [&str; 1] = ["ok"];
const READY: &str = "ready";
const NOT_READY: &str = "not_ready";
/// `/v1/health/ready`'s `status`.
pub(super) const READY_STATUSES: [&str; 2] = [READY, NOT_READY];
const ADMISSION_CLOSED: &str = "admission_closed";
const NO_HEALTHY_UPSTREAMS: &str = "no_healthy_upstreams";
/// `/v1/health/ready`'s `reason` when not ready.
pub(super) const NOT_READY_REASONS: [&str; 2] = [ADMISSION_CLOSED, NO_HEALTHY_UPSTREAMS];

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HealthData {
    #[schema(schema_with = crate::views::schema::health_status)]
    pub status: &'static str,
    pub read_only: bool,
}

pub(super) fn health(ctx: &ViewContext<'_>) -> HealthData {
    HealthData {
        status: HEALTH_STATUSES[0],
        read_only: ctx.cfg().server.api.read_only,
    }
}

/// `HealthReadyData` (telemt 3.4): ready = admission open and at least one healthy upstream.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HealthReadyData {
    pub ready: bool,
    #[schema(schema_with = crate::views::schema::ready_status)]
    pub status: &'static str,
    /// `admission_closed` or `no_healthy_upstreams` when not ready.
    #[schema(required = true, schema_with = crate::views::schema::ready_reason)]
    pub reason: Option<&'static str>,
    pub admission_open: bool,
    pub healthy_upstreams: usize,
    pub total_upstreams: usize,
}

pub(super) fn health_ready(ctx: &ViewContext<'_>) -> HealthReadyData {
    let admission_open = ctx.runtime.gates().accepting_new_connections;
    // The upstream snapshot is a try-lock; a probe must not flap on a momentary contention.
    let rows = (0..3).find_map(|_| ctx.runtime.upstreams());
    let (healthy, total) = rows.map_or((0, 0), |s| {
        let healthy = s.upstreams.iter().filter(|u| u.healthy).count();
        (healthy, s.upstreams.len())
    });
    let reason = if !admission_open {
        Some(ADMISSION_CLOSED)
    } else if healthy == 0 {
        Some(NO_HEALTHY_UPSTREAMS)
    } else {
        None
    };
    HealthReadyData {
        ready: reason.is_none(),
        status: if reason.is_none() { READY } else { NOT_READY },
        reason,
        admission_open,
        healthy_upstreams: healthy,
        total_upstreams: total,
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SystemInfoData {
    pub version: &'static str,
    pub target_arch: &'static str,
    pub target_os: &'static str,
    pub build_profile: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub git_commit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub build_time_utc: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rustc_version: Option<&'static str>,
    pub process_started_at_epoch_secs: u64,
    pub uptime_seconds: f64,
    pub config_path: String,
    pub config_hash: String,
    pub config_reload_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_config_reload_epoch_secs: Option<u64>,
}

/// Build metadata comes from the binary through the runtime port; absent values are omitted.
pub(super) fn system_info(ctx: &ViewContext<'_>) -> SystemInfoData {
    let reload = ctx.runtime.config_reload_stats();
    let build = ctx.runtime.build_info();
    let build_profile = build.profile.unwrap_or(if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    });
    SystemInfoData {
        version: env!("CARGO_PKG_VERSION"),
        target_arch: std::env::consts::ARCH,
        target_os: std::env::consts::OS,
        build_profile,
        git_commit: build.git_commit,
        build_time_utc: build.build_time_utc,
        rustc_version: build.rustc_version,
        process_started_at_epoch_secs: epoch_secs(ctx.runtime.process_started_at()),
        uptime_seconds: ctx.uptime_seconds(),
        config_path: ctx.snapshot.path.display().to_string(),
        config_hash: ctx.revision.to_owned(),
        config_reload_count: reload.reload_count,
        last_config_reload_epoch_secs: reload.last_reload_epoch_secs,
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeGatesData {
    pub accepting_new_connections: bool,
    pub conditional_cast_enabled: bool,
    pub me_runtime_ready: bool,
    pub me2dc_fallback_enabled: bool,
    pub use_middle_proxy: bool,
    #[schema(schema_with = crate::views::schema::startup_status)]
    pub startup_status: &'static str,
    pub startup_stage: String,
    pub startup_progress_pct: f64,
}

pub(super) fn gates(ctx: &ViewContext<'_>) -> RuntimeGatesData {
    let general = &ctx.cfg().general;
    let gates = ctx.runtime.gates();
    let startup = ctx.runtime.startup();
    RuntimeGatesData {
        accepting_new_connections: gates.accepting_new_connections,
        conditional_cast_enabled: general.use_middle_proxy,
        // Without the middle proxy nothing waits for ME readiness, so the gate is open.
        me_runtime_ready: !general.use_middle_proxy || gates.me_runtime_ready,
        me2dc_fallback_enabled: general.me2dc_fallback,
        use_middle_proxy: general.use_middle_proxy,
        startup_status: startup.status.as_str(),
        startup_stage: startup.current_stage,
        startup_progress_pct: startup.progress_pct,
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeInitializationMeData {
    #[schema(schema_with = crate::views::schema::startup_status)]
    pub status: &'static str,
    pub current_stage: String,
    pub progress_pct: f64,
    pub init_attempt: u32,
    pub retry_limit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeInitializationComponentData {
    pub id: String,
    pub title: String,
    #[schema(schema_with = crate::views::schema::component_status)]
    pub status: &'static str,
    #[schema(required = true)]
    pub started_at_epoch_ms: Option<u64>,
    #[schema(required = true)]
    pub finished_at_epoch_ms: Option<u64>,
    #[schema(required = true)]
    pub duration_ms: Option<u64>,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub details: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeInitializationData {
    #[schema(schema_with = crate::views::schema::startup_status)]
    pub status: &'static str,
    pub degraded: bool,
    pub current_stage: String,
    pub progress_pct: f64,
    pub started_at_epoch_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ready_at_epoch_secs: Option<u64>,
    pub total_elapsed_ms: u64,
    #[schema(schema_with = crate::views::schema::transport_mode)]
    pub transport_mode: &'static str,
    pub me: RuntimeInitializationMeData,
    pub components: Vec<RuntimeInitializationComponentData>,
}

pub(super) fn initialization(ctx: &ViewContext<'_>) -> RuntimeInitializationData {
    let s = ctx.runtime.startup();
    let end = s.ready_at.unwrap_or(ctx.now);
    let total_elapsed_ms = end
        .duration_since(s.started_at)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    // docs/DECISIONS.md #23: without the middle proxy the ME block is `skipped` and never degraded.
    let direct_only = !ctx.cfg().general.use_middle_proxy;
    let (me_status, me_progress) = if direct_only {
        (StartupStatus::Skipped, 100.0)
    } else {
        (s.me.status, s.me.progress_pct)
    };
    RuntimeInitializationData {
        status: s.status.as_str(),
        degraded: s.degraded && !direct_only,
        current_stage: s.current_stage,
        progress_pct: s.progress_pct,
        started_at_epoch_secs: epoch_secs(s.started_at),
        ready_at_epoch_secs: s.ready_at.map(epoch_secs),
        total_elapsed_ms,
        transport_mode: s.transport_mode.as_str(),
        me: RuntimeInitializationMeData {
            status: me_status.as_str(),
            current_stage: if direct_only && s.me.status != StartupStatus::Skipped {
                StartupStatus::Skipped.as_str().to_string()
            } else {
                s.me.current_stage
            },
            progress_pct: me_progress,
            init_attempt: s.me.init_attempt,
            retry_limit: s
                .me
                .retry_limit
                .map_or_else(|| "unlimited".to_string(), |n| n.to_string()),
            last_error: s.me.last_error,
        },
        components: s
            .components
            .into_iter()
            .map(|c| RuntimeInitializationComponentData {
                id: c.id,
                title: c.title,
                status: c.status.as_str(),
                started_at_epoch_ms: c.started_at_epoch_ms,
                finished_at_epoch_ms: c.finished_at_epoch_ms,
                duration_ms: c.duration_ms,
                attempts: c.attempts,
                details: c.details,
            })
            .collect(),
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EffectiveTimeoutLimits {
    pub client_handshake_secs: u64,
    pub tg_connect_secs: u64,
    pub client_keepalive_secs: u64,
    pub client_ack_secs: u64,
    pub me_one_retry: u8,
    pub me_one_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EffectiveUpstreamLimits {
    pub connect_retry_attempts: u32,
    pub connect_retry_backoff_ms: u64,
    pub connect_budget_ms: u64,
    pub unhealthy_fail_threshold: u32,
    pub connect_failfast_hard_errors: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EffectiveMiddleProxyLimits {
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
    pub reconnect_max_concurrent_per_dc: u32,
    pub reconnect_backoff_base_ms: u64,
    pub reconnect_backoff_cap_ms: u64,
    pub reconnect_fast_retry_count: u32,
    #[schema(schema_with = crate::views::schema::writer_pick_mode)]
    pub writer_pick_mode: &'static str,
    pub writer_pick_sample_size: u8,
    pub me2dc_fallback: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EffectiveUserIpPolicyLimits {
    #[schema(schema_with = crate::views::schema::ip_policy_mode)]
    pub mode: &'static str,
    pub window_secs: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EffectiveLimitsData {
    pub update_every_secs: u64,
    pub me_reinit_every_secs: u64,
    pub me_pool_force_close_secs: u64,
    pub timeouts: EffectiveTimeoutLimits,
    pub upstream: EffectiveUpstreamLimits,
    pub middle_proxy: EffectiveMiddleProxyLimits,
    pub user_ip_policy: EffectiveUserIpPolicyLimits,
}

pub(super) fn limits_effective(ctx: &ViewContext<'_>) -> EffectiveLimitsData {
    let cfg = ctx.cfg();
    let g = &cfg.general;
    let t = &cfg.timeouts;
    EffectiveLimitsData {
        update_every_secs: g.effective_update_every_secs(),
        me_reinit_every_secs: g.me_reinit_every_secs,
        me_pool_force_close_secs: g.effective_me_pool_force_close_secs(),
        timeouts: EffectiveTimeoutLimits {
            client_handshake_secs: t.client_handshake,
            tg_connect_secs: t.tg_connect,
            client_keepalive_secs: t.client_keepalive,
            client_ack_secs: t.client_ack,
            me_one_retry: t.me_one_retry,
            me_one_timeout_ms: t.me_one_timeout_ms,
        },
        upstream: EffectiveUpstreamLimits {
            connect_retry_attempts: g.upstream_connect_retry_attempts,
            connect_retry_backoff_ms: g.upstream_connect_retry_backoff_ms,
            connect_budget_ms: g.upstream_connect_budget_ms,
            unhealthy_fail_threshold: g.upstream_unhealthy_fail_threshold,
            connect_failfast_hard_errors: g.upstream_connect_failfast_hard_errors,
        },
        middle_proxy: EffectiveMiddleProxyLimits {
            floor_mode: g.me_floor_mode.as_str(),
            adaptive_floor_idle_secs: g.me_adaptive_floor_idle_secs,
            adaptive_floor_min_writers_single_endpoint: g
                .me_adaptive_floor_min_writers_single_endpoint,
            adaptive_floor_min_writers_multi_endpoint: g
                .me_adaptive_floor_min_writers_multi_endpoint,
            adaptive_floor_recover_grace_secs: g.me_adaptive_floor_recover_grace_secs,
            adaptive_floor_writers_per_core_total: g.me_adaptive_floor_writers_per_core_total,
            adaptive_floor_cpu_cores_override: g.me_adaptive_floor_cpu_cores_override,
            adaptive_floor_max_extra_writers_single_per_core: g
                .me_adaptive_floor_max_extra_writers_single_per_core,
            adaptive_floor_max_extra_writers_multi_per_core: g
                .me_adaptive_floor_max_extra_writers_multi_per_core,
            adaptive_floor_max_active_writers_per_core: g
                .me_adaptive_floor_max_active_writers_per_core,
            adaptive_floor_max_warm_writers_per_core: g.me_adaptive_floor_max_warm_writers_per_core,
            adaptive_floor_max_active_writers_global: g.me_adaptive_floor_max_active_writers_global,
            adaptive_floor_max_warm_writers_global: g.me_adaptive_floor_max_warm_writers_global,
            reconnect_max_concurrent_per_dc: g.me_reconnect_max_concurrent_per_dc,
            reconnect_backoff_base_ms: g.me_reconnect_backoff_base_ms,
            reconnect_backoff_cap_ms: g.me_reconnect_backoff_cap_ms,
            reconnect_fast_retry_count: g.me_reconnect_fast_retry_count,
            writer_pick_mode: g.me_writer_pick_mode.as_str(),
            writer_pick_sample_size: g.me_writer_pick_sample_size,
            me2dc_fallback: g.me2dc_fallback,
        },
        user_ip_policy: EffectiveUserIpPolicyLimits {
            mode: cfg.access.user_max_unique_ips_mode.as_str(),
            window_secs: cfg.access.user_max_unique_ips_window_secs,
        },
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SecurityPostureData {
    pub api_read_only: bool,
    pub api_whitelist_enabled: bool,
    pub api_whitelist_entries: usize,
    pub api_auth_header_enabled: bool,
    pub proxy_protocol_enabled: bool,
    #[schema(schema_with = crate::views::schema::log_level)]
    pub log_level: &'static str,
    pub telemetry_core_enabled: bool,
    pub telemetry_user_enabled: bool,
    #[schema(schema_with = crate::views::schema::me_level)]
    pub telemetry_me_level: &'static str,
}

pub(super) fn security_posture(ctx: &ViewContext<'_>) -> SecurityPostureData {
    let cfg = ctx.cfg();
    let api = &cfg.server.api;
    SecurityPostureData {
        api_read_only: api.read_only,
        api_whitelist_enabled: !api.whitelist.is_empty(),
        api_whitelist_entries: api.whitelist.len(),
        api_auth_header_enabled: !api.auth_header.is_empty(),
        proxy_protocol_enabled: cfg.server.proxy_protocol,
        log_level: cfg.general.log_level.as_str(),
        telemetry_core_enabled: cfg.general.telemetry.core_enabled,
        telemetry_user_enabled: cfg.general.telemetry.user_enabled,
        // docs/DECISIONS.md #24: `silent | normal | debug`, the config spelling.
        telemetry_me_level: cfg.general.telemetry.me_level.as_str(),
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SecurityWhitelistData {
    pub generated_at_epoch_secs: u64,
    pub enabled: bool,
    pub entries_total: usize,
    pub entries: Vec<String>,
}

pub(super) fn security_whitelist(ctx: &ViewContext<'_>) -> SecurityWhitelistData {
    // `IpNet` displays as `ip/prefix`; bare IPs were normalized to /32 or /128 on load.
    let entries: Vec<String> = ctx
        .cfg()
        .server
        .api
        .whitelist
        .iter()
        .map(|net| net.to_string())
        .collect();
    SecurityWhitelistData {
        generated_at_epoch_secs: ctx.now_epoch_secs(),
        enabled: !entries.is_empty(),
        entries_total: entries.len(),
        entries,
    }
}
