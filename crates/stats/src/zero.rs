//! Every process-wide counter, declared once. The snapshot structs are the API's
//! `ZeroUpstreamData`, `ZeroMiddleProxyData`, `ZeroPoolData`, `ZeroDesyncData` plus the core
//! counters; the histogram helpers keep bucket boundaries in one place.
//!
//! Must not: know about HTTP, config or sockets.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

crate::counter_block! {
    /// Core connection counters. `current_connections_*` are gauges (see [`crate::RouteGuard`]).
    counters CoreCounters => snapshot CoreSnapshot {
        /// Total accepted client connections.
        connections_total,
        /// Failed/invalid client connections.
        connections_bad_total,
        /// Client handshake timeouts.
        handshake_timeouts_total,
        /// Connections dropped because no `server.max_connections` slot freed in time.
        accept_permit_timeout_total,
        /// Live connections routed through the middle proxy.
        current_connections_me,
        /// Live connections routed directly to a DC.
        current_connections_direct,
    }
    extra {
        /// `current_connections_me + current_connections_direct`.
        current_connections: u64,
    }
}

impl CoreCounters {
    /// Snapshot with the derived total.
    pub fn snapshot(&self) -> CoreSnapshot {
        let me = self.current_connections_me.get();
        let direct = self.current_connections_direct.get();
        self.snapshot_with(me.saturating_add(direct))
    }
}

crate::counter_block! {
    /// Upstream connect counters and histograms.
    counters UpstreamCounters => snapshot ZeroUpstreamData {
        connect_attempt_total,
        connect_success_total,
        connect_fail_total,
        connect_failfast_hard_error_total,
        connect_attempts_bucket_1,
        connect_attempts_bucket_2,
        connect_attempts_bucket_3_4,
        connect_attempts_bucket_gt_4,
        connect_duration_success_bucket_le_100ms,
        connect_duration_success_bucket_101_500ms,
        connect_duration_success_bucket_501_1000ms,
        connect_duration_success_bucket_gt_1000ms,
        connect_duration_fail_bucket_le_100ms,
        connect_duration_fail_bucket_101_500ms,
        connect_duration_fail_bucket_501_1000ms,
        connect_duration_fail_bucket_gt_1000ms,
    }
}

impl UpstreamCounters {
    /// Snapshot (no extra fields).
    pub fn snapshot(&self) -> ZeroUpstreamData {
        self.snapshot_with()
    }

    /// Records one finished connect operation: how many tries it took (`attempts >= 1`),
    /// its outcome and wall time. Bumps the success/fail totals and both histograms.
    pub fn observe_connect(&self, success: bool, attempts: u32, elapsed: Duration) {
        if success {
            self.connect_success_total.inc();
        } else {
            self.connect_fail_total.inc();
        }
        match attempts {
            0 | 1 => self.connect_attempts_bucket_1.inc(),
            2 => self.connect_attempts_bucket_2.inc(),
            3 | 4 => self.connect_attempts_bucket_3_4.inc(),
            _ => self.connect_attempts_bucket_gt_4.inc(),
        }
        let ms = elapsed.as_millis();
        let bucket = match (success, ms) {
            (true, 0..=100) => &self.connect_duration_success_bucket_le_100ms,
            (true, 101..=500) => &self.connect_duration_success_bucket_101_500ms,
            (true, 501..=1000) => &self.connect_duration_success_bucket_501_1000ms,
            (true, _) => &self.connect_duration_success_bucket_gt_1000ms,
            (false, 0..=100) => &self.connect_duration_fail_bucket_le_100ms,
            (false, 101..=500) => &self.connect_duration_fail_bucket_101_500ms,
            (false, 501..=1000) => &self.connect_duration_fail_bucket_501_1000ms,
            (false, _) => &self.connect_duration_fail_bucket_gt_1000ms,
        };
        bucket.inc();
    }
}

/// One row of `ZeroMiddleProxyData.handshake_error_codes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ZeroCodeCount {
    /// Handshake error code.
    pub code: i32,
    /// Events with this code.
    pub total: u64,
}

crate::counter_block! {
    /// Middle-proxy protocol/health counters.
    counters MiddleProxyCounters => snapshot ZeroMiddleProxyData {
        keepalive_sent_total,
        keepalive_failed_total,
        keepalive_pong_total,
        keepalive_timeout_total,
        rpc_proxy_req_signal_sent_total,
        rpc_proxy_req_signal_failed_total,
        rpc_proxy_req_signal_skipped_no_meta_total,
        rpc_proxy_req_signal_response_total,
        rpc_proxy_req_signal_close_sent_total,
        reconnect_attempt_total,
        reconnect_success_total,
        handshake_reject_total,
        reader_eof_total,
        idle_close_by_peer_total,
        route_drop_no_conn_total,
        route_drop_channel_closed_total,
        route_drop_queue_full_total,
        route_drop_queue_full_base_total,
        route_drop_queue_full_high_total,
        socks_kdf_strict_reject_total,
        socks_kdf_compat_fallback_total,
        endpoint_quarantine_total,
        kdf_drift_total,
        kdf_port_only_drift_total,
        hardswap_pending_reuse_total,
        hardswap_pending_ttl_expired_total,
        single_endpoint_outage_enter_total,
        single_endpoint_outage_exit_total,
        single_endpoint_outage_reconnect_attempt_total,
        single_endpoint_outage_reconnect_success_total,
        single_endpoint_quarantine_bypass_total,
        single_endpoint_shadow_rotate_total,
        single_endpoint_shadow_rotate_skipped_quarantine_total,
        floor_mode_switch_total,
        floor_mode_switch_static_to_adaptive_total,
        floor_mode_switch_adaptive_to_static_total,
    }
    extra {
        /// Handshake rejects grouped by code, ascending by code.
        handshake_error_codes: Vec<ZeroCodeCount>,
    }
}

/// Handshake rejects by code. Rejects are rare control-plane events (never per packet), so a
/// small mutex-protected ordered map is cheaper to reason about than a lock-free table.
#[derive(Debug, Default)]
pub struct HandshakeCodes(Mutex<BTreeMap<i32, u64>>);

impl HandshakeCodes {
    /// Counts one reject with `code`.
    pub fn record(&self, code: i32) {
        let mut map = self.0.lock();
        let slot = map.entry(code).or_insert(0);
        *slot = slot.saturating_add(1);
    }

    /// Rows ascending by code.
    pub fn rows(&self) -> Vec<ZeroCodeCount> {
        self.0
            .lock()
            .iter()
            .map(|(&code, &total)| ZeroCodeCount { code, total })
            .collect()
    }
}

crate::counter_block! {
    /// Middle-proxy pool lifecycle counters (`pool_drain_active` is a gauge).
    counters PoolCounters => snapshot ZeroPoolData {
        pool_swap_total,
        pool_drain_active,
        pool_force_close_total,
        pool_stale_pick_total,
        writer_removed_total,
        writer_removed_unexpected_total,
        refill_triggered_total,
        refill_skipped_inflight_total,
        refill_failed_total,
        writer_restored_same_endpoint_total,
        writer_restored_fallback_total,
    }
}

impl PoolCounters {
    /// Snapshot (no extra fields).
    pub fn snapshot(&self) -> ZeroPoolData {
        self.snapshot_with()
    }
}

crate::counter_block! {
    /// Frame desync counters.
    counters DesyncCounters => snapshot ZeroDesyncData {
        secure_padding_invalid_total,
        desync_total,
        desync_full_logged_total,
        desync_suppressed_total,
        desync_frames_bucket_0,
        desync_frames_bucket_1_2,
        desync_frames_bucket_3_10,
        desync_frames_bucket_gt_10,
    }
}

impl DesyncCounters {
    /// Snapshot (no extra fields).
    pub fn snapshot(&self) -> ZeroDesyncData {
        self.snapshot_with()
    }

    /// Records one desync after `frames` good frames; `full_logged` says whether the full
    /// diagnostic was logged (else it was rate-limited away).
    pub fn observe_desync(&self, frames: u64, full_logged: bool) {
        self.desync_total.inc();
        if full_logged {
            self.desync_full_logged_total.inc();
        } else {
            self.desync_suppressed_total.inc();
        }
        match frames {
            0 => self.desync_frames_bucket_0.inc(),
            1..=2 => self.desync_frames_bucket_1_2.inc(),
            3..=10 => self.desync_frames_bucket_3_10.inc(),
            _ => self.desync_frames_bucket_gt_10.inc(),
        }
    }
}
