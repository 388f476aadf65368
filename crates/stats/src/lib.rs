//! `stats`: every runtime counter of mtproxyd, per-user accounting, the unique-IP tracker and
//! the recent-events ring.
//!
//! Owns: counter declarations (once, via [`counter_block!`]; the snapshot field names are the
//! API's), [`UserRegistry`] (+ its state file), [`IpTracker`], [`EventRing`].
//! Must not: hold a lock across `.await`, allocate per packet, know about HTTP, sockets or the
//! config file format. Hot-path updates are relaxed atomics on cached handles.

mod bad;
mod counter;
mod events;
mod ip;
pub mod prom;
pub mod startup;
mod state;
mod tls_fp;
mod users;
mod zero;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use bad::{BadClassCounters, ClassCount, BAD_CLASSES, OTHER_CLASS};
pub use counter::Counter;
pub use events::{
    truncate_on_char_boundary, EventRecord, EventRing, DEFAULT_EVENT_CAPACITY, MAX_CONTEXT_BYTES,
};
pub use ip::{IpTracker, UniqueIpMode};
pub use state::{state_path_for, StateError};
pub use tls_fp::{
    source_cidr, FingerprintRef, TlsFingerprintRow, TlsFingerprintSnapshot, TlsFingerprints,
    TLS_FINGERPRINT_CAPACITY,
};
pub use users::{UserRegistry, UserSessionGuard, UserStats, UserStatsSnapshot, UserTopEntry};
pub use zero::{
    CoreCounters, CoreSnapshot, DesyncCounters, HandshakeCodes, MiddleProxyCounters, PoolCounters,
    UpstreamCounters, ZeroCodeCount, ZeroDesyncData, ZeroMiddleProxyData, ZeroPoolData,
    ZeroUpstreamData,
};

/// How a client connection is carried to Telegram (selects the `current_connections_*` gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through the middle proxy.
    MiddleProxy,
    /// Directly to a DC.
    Direct,
}

/// The process-wide statistics hub. `Send + Sync`, shared as `Arc<Stats>`.
#[derive(Debug)]
pub struct Stats {
    started_at: SystemTime,
    core: CoreCounters,
    bad_classes: BadClassCounters,
    upstream: UpstreamCounters,
    middle_proxy: MiddleProxyCounters,
    handshake_codes: HandshakeCodes,
    pool: PoolCounters,
    desync: DesyncCounters,
    users: UserRegistry,
    ips: IpTracker,
    events: EventRing,
    tls_fingerprints: TlsFingerprints,
}

impl Stats {
    /// A fresh hub; `started_at` is the process start time reported by the API.
    pub fn new(started_at: SystemTime) -> Arc<Self> {
        Self::with_event_capacity(started_at, DEFAULT_EVENT_CAPACITY)
    }

    /// A fresh hub whose event ring holds `capacity` events.
    pub fn with_event_capacity(started_at: SystemTime, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            started_at,
            core: CoreCounters::default(),
            bad_classes: BadClassCounters::default(),
            upstream: UpstreamCounters::default(),
            middle_proxy: MiddleProxyCounters::default(),
            handshake_codes: HandshakeCodes::default(),
            pool: PoolCounters::default(),
            desync: DesyncCounters::default(),
            users: UserRegistry::new(),
            ips: IpTracker::new(),
            events: EventRing::new(capacity),
            tls_fingerprints: TlsFingerprints::default(),
        })
    }

    /// Process start time.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Process start as Unix seconds.
    pub fn started_at_epoch_secs(&self) -> u64 {
        self.started_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// Uptime at `now` in seconds (0 if the clock went backwards).
    pub fn uptime_seconds(&self, now: SystemTime) -> f64 {
        now.duration_since(self.started_at)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    }

    // ---- snapshots (API) ----

    /// Core counters and live connection gauges.
    pub fn core(&self) -> CoreSnapshot {
        self.core.snapshot()
    }

    /// `connections_bad_by_class`: non-zero classes sorted by class. Their totals add up to
    /// `connections_bad_total`.
    pub fn bad_by_class(&self) -> Vec<ClassCount> {
        self.bad_classes.rows()
    }

    /// `ZeroUpstreamData`.
    pub fn upstream(&self) -> ZeroUpstreamData {
        self.upstream.snapshot()
    }

    /// `ZeroMiddleProxyData` (with `handshake_error_codes`).
    pub fn middle_proxy(&self) -> ZeroMiddleProxyData {
        self.middle_proxy.snapshot_with(self.handshake_codes.rows())
    }

    /// `ZeroPoolData`.
    pub fn pool(&self) -> ZeroPoolData {
        self.pool.snapshot()
    }

    /// `ZeroDesyncData`.
    pub fn desync(&self) -> ZeroDesyncData {
        self.desync.snapshot()
    }

    /// Per-user counters.
    pub fn users(&self) -> &UserRegistry {
        &self.users
    }

    /// Unique-IP tracker.
    pub fn ips(&self) -> &IpTracker {
        &self.ips
    }

    /// Recent events ring.
    pub fn events(&self) -> &EventRing {
        &self.events
    }

    /// Client TLS fingerprint leaderboards.
    pub fn tls_fingerprints(&self) -> &TlsFingerprints {
        &self.tls_fingerprints
    }

    /// Drops everything kept for a deleted user (counters and IP state).
    pub fn forget_user(&self, username: &str) {
        self.users.forget(username);
        self.ips.forget(username);
    }

    // ---- counter groups (data plane) ----

    /// Core counters (`connections_total`, ...).
    pub fn core_counters(&self) -> &CoreCounters {
        &self.core
    }

    /// Upstream counters.
    pub fn upstream_counters(&self) -> &UpstreamCounters {
        &self.upstream
    }

    /// Middle-proxy counters.
    pub fn middle_proxy_counters(&self) -> &MiddleProxyCounters {
        &self.middle_proxy
    }

    /// Pool counters.
    pub fn pool_counters(&self) -> &PoolCounters {
        &self.pool
    }

    /// Desync counters.
    pub fn desync_counters(&self) -> &DesyncCounters {
        &self.desync
    }

    // ---- convenience increments ----

    /// One accepted client connection.
    #[inline]
    pub fn inc_connections_total(&self) {
        self.core.connections_total.inc();
    }

    /// One failed/invalid client connection of an unnamed class (counted as
    /// [`OTHER_CLASS`]); the data plane uses [`Stats::inc_connections_bad_class`].
    #[inline]
    pub fn inc_connections_bad(&self) {
        self.inc_connections_bad_class(OTHER_CLASS);
    }

    /// One failed/invalid client connection of `class` (a [`BAD_CLASSES`] label; anything
    /// else is counted as [`OTHER_CLASS`]). Bumps `connections_bad_total` too.
    #[inline]
    pub fn inc_connections_bad_class(&self, class: &str) {
        self.core.connections_bad_total.inc();
        self.bad_classes.inc(class);
    }

    /// One client handshake timeout.
    #[inline]
    pub fn inc_handshake_timeouts(&self) {
        self.core.handshake_timeouts_total.inc();
    }

    /// One connection dropped at `server.max_connections`.
    pub fn inc_accept_permit_timeouts(&self) {
        self.core.accept_permit_timeout_total.inc();
    }

    /// One middle-proxy handshake reject with `code` (bumps `handshake_reject_total` and the
    /// per-code table).
    pub fn record_me_handshake_reject(&self, code: i32) {
        self.middle_proxy.handshake_reject_total.inc();
        self.handshake_codes.record(code);
    }

    /// Marks a connection as live on `route` until the guard drops.
    pub fn open_route(self: &Arc<Self>, route: Route) -> RouteGuard {
        self.route_gauge(route).inc();
        RouteGuard {
            stats: Arc::clone(self),
            route,
        }
    }

    fn route_gauge(&self, route: Route) -> &Counter {
        match route {
            Route::MiddleProxy => &self.core.current_connections_me,
            Route::Direct => &self.core.current_connections_direct,
        }
    }

    /// Calls `f(name, value)` for every process-wide counter (for exposition). Names are the
    /// API's field names, unique across groups (a test checks it), so no group prefix is added.
    pub fn visit_counters(&self, f: &mut dyn FnMut(&'static str, u64)) {
        self.core.visit(f);
        self.upstream.visit(f);
        self.middle_proxy.visit(f);
        self.pool.visit(f);
        self.desync.visit(f);
    }
}

/// A live connection on a route; decrements the route gauge on drop.
#[derive(Debug)]
pub struct RouteGuard {
    stats: Arc<Stats>,
    route: Route,
}

impl RouteGuard {
    /// The route this connection is counted on.
    pub fn route(&self) -> Route {
        self.route
    }
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.stats.route_gauge(self.route).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn core_counters_and_route_gauges() {
        let s = Stats::new(SystemTime::now());
        s.inc_connections_total();
        s.inc_connections_total();
        s.inc_connections_bad();
        s.inc_handshake_timeouts();
        let me = s.open_route(Route::MiddleProxy);
        let d1 = s.open_route(Route::Direct);
        let d2 = s.open_route(Route::Direct);
        let c = s.core();
        assert_eq!(c.connections_total, 2);
        assert_eq!(c.connections_bad_total, 1);
        assert_eq!(c.handshake_timeouts_total, 1);
        s.inc_connections_bad_class("tls_replay");
        assert_eq!(s.core().connections_bad_total, 2);
        let rows = s.bad_by_class();
        assert_eq!(
            rows.iter().map(|r| (r.class, r.total)).collect::<Vec<_>>(),
            [(OTHER_CLASS, 1), ("tls_replay", 1)]
        );
        assert_eq!(c.current_connections_me, 1);
        assert_eq!(c.current_connections_direct, 2);
        assert_eq!(c.current_connections, 3);
        drop((me, d1));
        let c = s.core();
        assert_eq!(c.current_connections, 1);
        assert_eq!(d2.route(), Route::Direct);
        drop(d2);
        assert_eq!(s.core().current_connections, 0);
    }

    #[test]
    fn gauge_never_wraps() {
        let c = Counter::new(1);
        c.dec();
        c.dec();
        assert_eq!(c.get(), 0);
        c.set(5);
        c.sub(3);
        assert_eq!(c.get(), 2);
    }

    #[test]
    fn zero_snapshots_serialize_with_api_field_names() {
        let s = Stats::new(SystemTime::now());
        s.upstream_counters().connect_attempt_total.add(3);
        s.upstream_counters()
            .observe_connect(true, 1, Duration::from_millis(40));
        s.upstream_counters()
            .observe_connect(false, 3, Duration::from_millis(700));
        s.upstream_counters()
            .observe_connect(true, 9, Duration::from_millis(1500));
        let up = serde_json::to_value(s.upstream()).unwrap();
        assert_eq!(up["connect_attempt_total"], 3);
        assert_eq!(up["connect_success_total"], 2);
        assert_eq!(up["connect_fail_total"], 1);
        assert_eq!(up["connect_attempts_bucket_1"], 1);
        assert_eq!(up["connect_attempts_bucket_3_4"], 1);
        assert_eq!(up["connect_attempts_bucket_gt_4"], 1);
        assert_eq!(up["connect_duration_success_bucket_le_100ms"], 1);
        assert_eq!(up["connect_duration_fail_bucket_501_1000ms"], 1);
        assert_eq!(up["connect_duration_success_bucket_gt_1000ms"], 1);
        assert_eq!(up.as_object().unwrap().len(), 16);

        s.record_me_handshake_reject(-404);
        s.record_me_handshake_reject(7);
        s.record_me_handshake_reject(-404);
        s.middle_proxy_counters().keepalive_sent_total.inc();
        let mp = serde_json::to_value(s.middle_proxy()).unwrap();
        assert_eq!(mp["handshake_reject_total"], 3);
        assert_eq!(mp["keepalive_sent_total"], 1);
        assert_eq!(
            mp["handshake_error_codes"],
            serde_json::json!([{"code": -404, "total": 2}, {"code": 7, "total": 1}])
        );
        assert_eq!(mp.as_object().unwrap().len(), 37);

        s.pool_counters().pool_drain_active.set(2);
        let pool = serde_json::to_value(s.pool()).unwrap();
        assert_eq!(pool["pool_drain_active"], 2);
        assert_eq!(pool.as_object().unwrap().len(), 11);

        s.desync_counters().observe_desync(0, true);
        s.desync_counters().observe_desync(5, false);
        s.desync_counters().observe_desync(11, false);
        let ds = serde_json::to_value(s.desync()).unwrap();
        assert_eq!(ds["desync_total"], 3);
        assert_eq!(ds["desync_full_logged_total"], 1);
        assert_eq!(ds["desync_suppressed_total"], 2);
        assert_eq!(ds["desync_frames_bucket_0"], 1);
        assert_eq!(ds["desync_frames_bucket_3_10"], 1);
        assert_eq!(ds["desync_frames_bucket_gt_10"], 1);
        assert_eq!(ds.as_object().unwrap().len(), 8);
    }

    #[test]
    fn counter_names_unique_across_groups() {
        let s = Stats::new(SystemTime::now());
        let mut names = Vec::new();
        s.visit_counters(&mut |n, _| names.push(n));
        let set: HashSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len());
        assert_eq!(names.len(), 6 + 16 + 36 + 11 + 8);
        assert_eq!(UpstreamCounters::FIELD_NAMES.len(), 16);
    }

    #[test]
    fn forget_user_clears_counters_and_ips() {
        let s = Stats::new(SystemTime::now());
        let now = std::time::Instant::now();
        s.users().handle("u").add_octets_to_client(5);
        assert!(s.ips().try_admit(
            "u",
            "1.2.3.4".parse().unwrap(),
            None,
            UniqueIpMode::ActiveWindow,
            Duration::from_secs(1),
            now
        ));
        s.forget_user("u");
        assert!(s.users().get("u").is_none());
        assert!(s.ips().active_ips("u").is_empty());
    }

    #[test]
    fn uptime_and_start() {
        let start = UNIX_EPOCH + Duration::from_secs(1000);
        let s = Stats::new(start);
        assert_eq!(s.started_at_epoch_secs(), 1000);
        assert_eq!(s.uptime_seconds(start + Duration::from_millis(2500)), 2.5);
        assert_eq!(s.uptime_seconds(UNIX_EPOCH), 0.0);
    }
}
