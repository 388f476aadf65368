//! `/v1/runtime/tls-fingerprints` (telemt 3.4 `RuntimeEdgeTlsFingerprintsData`): the JA3/JA4
//! leaderboards of client ClientHellos kept by `stats::TlsFingerprints`.
//!
//! Owns: the DTOs, the `limit` query (1..=1000) and the retention window derived from
//! `general.beobachten_minutes`. Must not: compute fingerprints or hold the board's lock
//! beyond one snapshot. Like `/v1/runtime/events/recent` it is behind
//! `server.api.runtime_edge_enabled` and not cached (a snapshot is one short lock; telemt
//! never answers `source_unavailable` here).

use serde::Serialize;
use stats::TlsFingerprintRow;

use super::{ViewContext, FEATURE_DISABLED};

/// Upper clamp of `limit`.
pub(crate) const FINGERPRINTS_MAX_LIMIT: usize = 1000;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeEdgeTlsFingerprintsPayload {
    pub limit: usize,
    pub retention_secs: u64,
    pub capacity: usize,
    pub dropped_total: u64,
    pub parse_error_total: u64,
    /// Rows are the stats crate's `TlsFingerprintRow` (the API's
    /// `RuntimeEdgeTlsFingerprintRow`).
    pub by_fingerprint: Vec<TlsFingerprintRow>,
    pub by_ip: Vec<TlsFingerprintRow>,
    pub by_cidr: Vec<TlsFingerprintRow>,
    pub by_user: Vec<TlsFingerprintRow>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeEdgeTlsFingerprintsData {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::views::schema::reason_disabled)]
    pub reason: Option<&'static str>,
    pub generated_at_epoch_secs: u64,
    #[schema(required = true)]
    pub data: Option<RuntimeEdgeTlsFingerprintsPayload>,
}

/// `limit=<usize>` from the query; missing or invalid → `default`; clamped to `[1, 1000]`.
pub(crate) fn parse_limit(query: Option<&str>, default: usize) -> usize {
    super::edge::query_limit(query, default, FINGERPRINTS_MAX_LIMIT)
}

pub(super) fn tls_fingerprints(ctx: &ViewContext<'_>) -> RuntimeEdgeTlsFingerprintsData {
    let now = ctx.now_epoch_secs();
    let cfg = ctx.cfg();
    if !cfg.server.api.runtime_edge_enabled {
        return RuntimeEdgeTlsFingerprintsData {
            enabled: false,
            reason: Some(FEATURE_DISABLED),
            generated_at_epoch_secs: now,
            data: None,
        };
    }
    let limit = parse_limit(ctx.query, cfg.server.api.runtime_edge_top_n);
    let retention_secs = cfg.general.beobachten_minutes.saturating_mul(60);
    let snap = ctx
        .runtime
        .stats()
        .tls_fingerprints()
        .snapshot(limit, now, retention_secs);
    RuntimeEdgeTlsFingerprintsData {
        enabled: true,
        reason: None,
        generated_at_epoch_secs: now,
        data: Some(RuntimeEdgeTlsFingerprintsPayload {
            limit,
            retention_secs,
            capacity: snap.capacity,
            dropped_total: snap.dropped_total,
            parse_error_total: snap.parse_error_total,
            by_fingerprint: snap.by_fingerprint,
            by_ip: snap.by_ip,
            by_cidr: snap.by_cidr,
            by_user: snap.by_user,
        }),
    }
}
