//! Read-only views: the `data` member of every GET endpoint except the users ones.
//!
//! Pure rendering: config snapshot + `Runtime` port + caches in,
//! `serde_json::Value` out. The router (API core) matches the path with [`read_route`] and wraps
//! [`render`]'s value in the success envelope. Nothing here blocks: locks are only try-locked and
//! never held while another is awaited; time comes from [`ViewContext::now`].
//! Must not: parse HTTP, touch the config store, or mutate runtime state.

mod cache;
mod counters;
mod edge;
mod fingerprints;
mod me;
mod network;
mod pool;
pub(crate) mod schema;
mod selftest;
mod system;

#[cfg(test)]
mod tests;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::runtime::Runtime;

pub use cache::ViewCaches;
pub use counters::{SummaryData, ZeroAllData, ZeroCoreData};
pub use edge::{
    RuntimeEdgeConnectionCacheData, RuntimeEdgeConnectionTelemetryData,
    RuntimeEdgeConnectionTopData, RuntimeEdgeConnectionTotalsData,
    RuntimeEdgeConnectionsSummaryData, RuntimeEdgeConnectionsSummaryPayload, RuntimeEdgeEventsData,
    RuntimeEdgeEventsPayload,
};
pub use fingerprints::{RuntimeEdgeTlsFingerprintsData, RuntimeEdgeTlsFingerprintsPayload};
/// Per-DC coverage rows, shared with the Prometheus endpoint (one derivation for both).
pub(crate) use me::dc_rows;
pub use me::{
    DcEndpointWriters, DcStatus, DcStatusData, MeWriterStatus, MeWritersData, MeWritersSummary,
    MinimalAllData, MinimalAllPayload, MinimalDcPathData, MinimalMeRuntimeData,
    MinimalQuarantineData,
};
pub use network::{
    RuntimeNatStunData, RuntimeUpstreamQualityData, RuntimeUpstreamQualityDcData,
    RuntimeUpstreamQualitySummaryData, RuntimeUpstreamQualityUpstreamData, UpstreamDcStatus,
    UpstreamStatus, UpstreamSummaryData, UpstreamsData,
};
pub use pool::{RuntimeMePoolStateData, RuntimeMeQualityData};
pub use selftest::RuntimeMeSelftestData;
pub use system::{
    EffectiveLimitsData, HealthData, RuntimeGatesData, RuntimeInitializationData,
    SecurityPostureData, SecurityWhitelistData, SystemInfoData,
};

/// `reason` when the endpoint is switched off in `[server.api]`.
pub(crate) const FEATURE_DISABLED: &str = "feature_disabled";
/// `reason` when the runtime could not provide the data right now.
pub(crate) const SOURCE_UNAVAILABLE: &str = "source_unavailable";

/// One GET endpoint rendered by this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadRoute {
    Health,
    HealthReady,
    SystemInfo,
    RuntimeGates,
    RuntimeInitialization,
    LimitsEffective,
    SecurityPosture,
    SecurityWhitelist,
    StatsSummary,
    StatsZeroAll,
    StatsUpstreams,
    StatsMinimalAll,
    StatsMeWriters,
    StatsDcs,
    RuntimeMePoolState,
    RuntimeMeQuality,
    RuntimeUpstreamQuality,
    RuntimeNatStun,
    RuntimeMeSelftest,
    RuntimeConnectionsSummary,
    RuntimeEventsRecent,
    StatsUsersActiveIps,
    RuntimeTlsFingerprints,
}

impl ReadRoute {
    /// Every route, in docs/API.md's endpoint-matrix order (then telemt 3.4's additions).
    pub const ALL: [ReadRoute; 23] = [
        ReadRoute::Health,
        ReadRoute::SystemInfo,
        ReadRoute::RuntimeGates,
        ReadRoute::RuntimeInitialization,
        ReadRoute::LimitsEffective,
        ReadRoute::SecurityPosture,
        ReadRoute::SecurityWhitelist,
        ReadRoute::StatsSummary,
        ReadRoute::StatsZeroAll,
        ReadRoute::StatsUpstreams,
        ReadRoute::StatsMinimalAll,
        ReadRoute::StatsMeWriters,
        ReadRoute::StatsDcs,
        ReadRoute::RuntimeMePoolState,
        ReadRoute::RuntimeMeQuality,
        ReadRoute::RuntimeUpstreamQuality,
        ReadRoute::RuntimeNatStun,
        ReadRoute::RuntimeMeSelftest,
        ReadRoute::RuntimeConnectionsSummary,
        ReadRoute::RuntimeEventsRecent,
        ReadRoute::HealthReady,
        ReadRoute::StatsUsersActiveIps,
        ReadRoute::RuntimeTlsFingerprints,
    ];

    /// The exact path of this route.
    pub fn path(self) -> &'static str {
        match self {
            ReadRoute::Health => "/v1/health",
            ReadRoute::HealthReady => "/v1/health/ready",
            ReadRoute::StatsUsersActiveIps => "/v1/stats/users/active-ips",
            ReadRoute::SystemInfo => "/v1/system/info",
            ReadRoute::RuntimeGates => "/v1/runtime/gates",
            ReadRoute::RuntimeInitialization => "/v1/runtime/initialization",
            ReadRoute::LimitsEffective => "/v1/limits/effective",
            ReadRoute::SecurityPosture => "/v1/security/posture",
            ReadRoute::SecurityWhitelist => "/v1/security/whitelist",
            ReadRoute::StatsSummary => "/v1/stats/summary",
            ReadRoute::StatsZeroAll => "/v1/stats/zero/all",
            ReadRoute::StatsUpstreams => "/v1/stats/upstreams",
            ReadRoute::StatsMinimalAll => "/v1/stats/minimal/all",
            ReadRoute::StatsMeWriters => "/v1/stats/me-writers",
            ReadRoute::StatsDcs => "/v1/stats/dcs",
            ReadRoute::RuntimeMePoolState => "/v1/runtime/me_pool_state",
            ReadRoute::RuntimeMeQuality => "/v1/runtime/me_quality",
            ReadRoute::RuntimeUpstreamQuality => "/v1/runtime/upstream_quality",
            ReadRoute::RuntimeNatStun => "/v1/runtime/nat_stun",
            ReadRoute::RuntimeMeSelftest => "/v1/runtime/me-selftest",
            ReadRoute::RuntimeConnectionsSummary => "/v1/runtime/connections/summary",
            ReadRoute::RuntimeEventsRecent => "/v1/runtime/events/recent",
            ReadRoute::RuntimeTlsFingerprints => "/v1/runtime/tls-fingerprints",
        }
    }
}

/// Exact match of the raw request path (no trailing-slash trimming, no decoding; the query
/// string must already be stripped).
pub fn read_route(path: &str) -> Option<ReadRoute> {
    ReadRoute::ALL.into_iter().find(|r| r.path() == path)
}

/// Everything a view may read.
pub struct ViewContext<'a> {
    pub snapshot: &'a config::ConfigSnapshot,
    /// The revision of the file on disk (differs from `snapshot.revision` while a hand edit
    /// does not load: docs/DECISIONS.md #13).
    pub revision: &'a str,
    pub runtime: &'a dyn Runtime,
    pub caches: &'a ViewCaches,
    /// Raw query string (without `?`), if any.
    pub query: Option<&'a str>,
    pub now: SystemTime,
}

impl ViewContext<'_> {
    fn cfg(&self) -> &config::Config {
        &self.snapshot.config
    }

    fn now_epoch_secs(&self) -> u64 {
        epoch_secs(self.now)
    }

    /// Seconds since the process started, as a float.
    fn uptime_seconds(&self) -> f64 {
        self.now
            .duration_since(self.runtime.process_started_at())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// Renders `route` to the JSON value placed in the envelope's `data` member.
pub fn render(route: ReadRoute, ctx: &ViewContext<'_>) -> Value {
    match route {
        ReadRoute::Health => to_json(&system::health(ctx)),
        ReadRoute::HealthReady => to_json(&system::health_ready(ctx)),
        ReadRoute::StatsUsersActiveIps => to_json(&counters::users_active_ips(ctx)),
        ReadRoute::SystemInfo => to_json(&system::system_info(ctx)),
        ReadRoute::RuntimeGates => to_json(&system::gates(ctx)),
        ReadRoute::RuntimeInitialization => to_json(&system::initialization(ctx)),
        ReadRoute::LimitsEffective => to_json(&system::limits_effective(ctx)),
        ReadRoute::SecurityPosture => to_json(&system::security_posture(ctx)),
        ReadRoute::SecurityWhitelist => to_json(&system::security_whitelist(ctx)),
        ReadRoute::StatsSummary => to_json(&counters::summary(ctx)),
        ReadRoute::StatsZeroAll => to_json(&counters::zero_all(ctx)),
        ReadRoute::StatsUpstreams => to_json(&network::upstreams(ctx)),
        ReadRoute::StatsMinimalAll => to_json(&me::minimal_all(ctx)),
        ReadRoute::StatsMeWriters => to_json(&me::me_writers(ctx)),
        ReadRoute::StatsDcs => to_json(&me::dcs(ctx)),
        ReadRoute::RuntimeMePoolState => to_json(&pool::me_pool_state(ctx)),
        ReadRoute::RuntimeMeQuality => to_json(&pool::me_quality(ctx)),
        ReadRoute::RuntimeUpstreamQuality => to_json(&network::upstream_quality(ctx)),
        ReadRoute::RuntimeNatStun => to_json(&network::nat_stun(ctx)),
        ReadRoute::RuntimeMeSelftest => to_json(&selftest::me_selftest(ctx)),
        ReadRoute::RuntimeConnectionsSummary => to_json(&edge::connections_summary(ctx)),
        ReadRoute::RuntimeEventsRecent => to_json(&edge::events_recent(ctx)),
        ReadRoute::RuntimeTlsFingerprints => to_json(&fingerprints::tls_fingerprints(ctx)),
    }
}

/// The HTTP status of a rendered view: `/v1/health/ready` answers 503 while not ready (its
/// body is the same success envelope, so probes and panels both get the reasons).
pub fn status_of(route: ReadRoute, data: &Value) -> http::StatusCode {
    if route == ReadRoute::HealthReady && data.get("ready") == Some(&Value::Bool(false)) {
        http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        http::StatusCode::OK
    }
}

fn to_json<T: Serialize>(value: &T) -> Value {
    // The DTOs only hold strings, numbers, bools, options and vectors, so serialization cannot
    // fail; a failure would be a programming error, reported instead of panicking.
    serde_json::to_value(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "view serialization failed");
        Value::Null
    })
}

/// Unix seconds of `t` (0 before the epoch).
pub(crate) fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `part / whole * 100`, 0 when `whole` is 0, clamped to `[0, 100]`.
pub(crate) fn pct(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64 * 100.0).clamp(0.0, 100.0)
}
