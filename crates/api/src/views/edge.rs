//! Runtime-edge views: `/v1/runtime/connections/summary` (cached leaderboard) and
//! `/v1/runtime/events/recent`.

use serde::Serialize;
use stats::{EventRecord, UserTopEntry};

use super::cache::EdgeLookup;
use super::{ViewContext, FEATURE_DISABLED, SOURCE_UNAVAILABLE};

/// Default `limit` of `/v1/runtime/events/recent`.
pub(crate) const EVENTS_DEFAULT_LIMIT: usize = 50;
/// Upper clamp of `limit`.
pub(crate) const EVENTS_MAX_LIMIT: usize = 1000;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeEdgeConnectionCacheData {
    pub ttl_ms: u64,
    pub served_from_cache: bool,
    pub stale_cache_used: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeEdgeConnectionTotalsData {
    pub current_connections: u64,
    pub current_connections_me: u64,
    pub current_connections_direct: u64,
    pub active_users: usize,
}

/// Rows are the stats crate's `UserTopEntry` (`username`, `current_connections`,
/// `total_octets` — the API's `RuntimeEdgeConnectionUserData`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeEdgeConnectionTopData {
    pub limit: usize,
    pub by_connections: Vec<UserTopEntry>,
    pub by_throughput: Vec<UserTopEntry>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeEdgeConnectionTelemetryData {
    pub user_enabled: bool,
    pub throughput_is_cumulative: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeEdgeConnectionsSummaryPayload {
    pub cache: RuntimeEdgeConnectionCacheData,
    pub totals: RuntimeEdgeConnectionTotalsData,
    pub top: RuntimeEdgeConnectionTopData,
    pub telemetry: RuntimeEdgeConnectionTelemetryData,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeEdgeConnectionsSummaryData {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_any)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    #[schema(required = true)]
    pub data: Option<RuntimeEdgeConnectionsSummaryPayload>,
}

fn recompute(
    ctx: &ViewContext<'_>,
    ttl_ms: u64,
    top_n: usize,
) -> RuntimeEdgeConnectionsSummaryPayload {
    let stats = ctx.runtime.stats();
    let core = stats.core();
    let users = stats.users();
    let limit = top_n.max(1);
    RuntimeEdgeConnectionsSummaryPayload {
        cache: RuntimeEdgeConnectionCacheData {
            ttl_ms,
            served_from_cache: false,
            stale_cache_used: false,
        },
        totals: RuntimeEdgeConnectionTotalsData {
            current_connections: core.current_connections,
            current_connections_me: core.current_connections_me,
            current_connections_direct: core.current_connections_direct,
            active_users: users.active_users(),
        },
        top: RuntimeEdgeConnectionTopData {
            limit,
            by_connections: users.top_by_connections(limit),
            by_throughput: users.top_by_octets(limit),
        },
        telemetry: RuntimeEdgeConnectionTelemetryData {
            user_enabled: ctx.cfg().general.telemetry.user_enabled,
            throughput_is_cumulative: true,
        },
    }
}

pub(super) fn connections_summary(ctx: &ViewContext<'_>) -> RuntimeEdgeConnectionsSummaryData {
    let now = ctx.now_epoch_secs();
    let api = &ctx.cfg().server.api;
    if !api.runtime_edge_enabled {
        return RuntimeEdgeConnectionsSummaryData {
            enabled: false,
            reason: Some(FEATURE_DISABLED),
            generated_at_epoch_secs: now,
            data: None,
        };
    }
    let ttl_ms = api.runtime_edge_cache_ttl_ms;
    let top_n = api.runtime_edge_top_n;
    match ctx
        .caches
        .edge(ctx.now, ttl_ms, || (now, recompute(ctx, ttl_ms, top_n)))
    {
        EdgeLookup::Payload(generated, payload) => RuntimeEdgeConnectionsSummaryData {
            enabled: true,
            reason: None,
            generated_at_epoch_secs: generated,
            data: Some(payload),
        },
        EdgeLookup::Unavailable => RuntimeEdgeConnectionsSummaryData {
            enabled: true,
            reason: Some(SOURCE_UNAVAILABLE),
            generated_at_epoch_secs: now,
            data: None,
        },
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeEdgeEventsPayload {
    pub capacity: usize,
    pub dropped_total: u64,
    /// The stats crate's `EventRecord` is the API's `ApiEventRecord`.
    pub events: Vec<EventRecord>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeEdgeEventsData {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_disabled)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    #[schema(required = true)]
    pub data: Option<RuntimeEdgeEventsPayload>,
}

/// `limit=<usize>` from a query string: missing or invalid → `default`; then clamped to
/// `[1, max]` (the runtime-edge endpoints share this rule).
pub(crate) fn query_limit(query: Option<&str>, default: usize, max: usize) -> usize {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == "limit").then(|| value.parse::<usize>().ok())?
        })
        .unwrap_or(default)
        .clamp(1, max)
}

/// `limit=<usize>` from the query: missing/invalid → 50; then clamped to `[1, 1000]`.
pub(crate) fn parse_events_limit(query: Option<&str>) -> usize {
    query_limit(query, EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT)
}

pub(super) fn events_recent(ctx: &ViewContext<'_>) -> RuntimeEdgeEventsData {
    let now = ctx.now_epoch_secs();
    if !ctx.cfg().server.api.runtime_edge_enabled {
        return RuntimeEdgeEventsData {
            enabled: false,
            reason: Some(FEATURE_DISABLED),
            generated_at_epoch_secs: now,
            data: None,
        };
    }
    let ring = ctx.runtime.stats().events();
    let capacity = ring.capacity();
    let limit = parse_events_limit(ctx.query).min(capacity);
    RuntimeEdgeEventsData {
        enabled: true,
        reason: None,
        generated_at_epoch_secs: now,
        data: Some(RuntimeEdgeEventsPayload {
            capacity,
            dropped_total: ring.dropped_total(),
            events: ring.recent(limit),
        }),
    }
}
