//! Unit tests of the views against a fake `Runtime`.

mod cache;
mod fields;
mod fingerprints;
mod matrix;
mod schema;
mod shapes;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{render, ReadRoute, ViewCaches, ViewContext};
use crate::runtime::*;

pub(super) const REVISION: &str =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A fixed wall clock: 2023-11-14T22:13:20Z.
pub(super) fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub(super) fn at(secs_after_t0: u64) -> SystemTime {
    t0() + Duration::from_secs(secs_after_t0)
}

pub(super) fn ms(ms_after_t0: u64) -> SystemTime {
    t0() + Duration::from_millis(ms_after_t0)
}

/// Fake runtime: every port method returns what the test put in.
pub(super) struct Fake {
    pub stats: Arc<stats::Stats>,
    pub tracker: StartupTracker,
    pub gates: GatesSnapshot,
    pub me_pool: Option<MePoolSnapshot>,
    pub upstreams: Option<UpstreamsSnapshot>,
    pub nat: Option<NatStunSnapshot>,
    pub started: SystemTime,
    pub reload: ReloadStats,
    pub me_calls: AtomicUsize,
}

impl Fake {
    pub fn new() -> Self {
        let started = t0();
        Self {
            stats: stats::Stats::new(started),
            tracker: StartupTracker::new(started, TransportMode::MiddleProxy),
            gates: GatesSnapshot {
                accepting_new_connections: true,
                me_runtime_ready: false,
            },
            me_pool: None,
            upstreams: None,
            nat: None,
            started,
            reload: ReloadStats::default(),
            me_calls: AtomicUsize::new(0),
        }
    }

    /// A fake with every source available.
    pub fn full() -> Self {
        let mut f = Self::new();
        f.me_pool = Some(sample_pool());
        f.upstreams = Some(sample_upstreams());
        f.nat = Some(sample_nat());
        f
    }

    pub fn me_calls(&self) -> usize {
        self.me_calls.load(Ordering::SeqCst)
    }
}

impl Runtime for Fake {
    fn stats(&self) -> &stats::Stats {
        &self.stats
    }
    fn startup(&self) -> StartupSnapshot {
        self.tracker.snapshot()
    }
    fn gates(&self) -> GatesSnapshot {
        self.gates
    }
    fn me_pool(&self) -> Option<MePoolSnapshot> {
        self.me_calls.fetch_add(1, Ordering::SeqCst);
        self.me_pool.clone()
    }
    fn upstreams(&self) -> Option<UpstreamsSnapshot> {
        self.upstreams.clone()
    }
    fn nat_stun(&self) -> Option<NatStunSnapshot> {
        self.nat.clone()
    }
    fn detected_ips(&self) -> (Option<Ipv4Addr>, Option<std::net::Ipv6Addr>) {
        (None, None)
    }
    fn process_started_at(&self) -> SystemTime {
        self.started
    }
    fn config_reload_stats(&self) -> ReloadStats {
        self.reload
    }
    fn reset_user_quota(&self, username: &str) -> u64 {
        self.stats.users().handle(username).reset_quota(1);
        1
    }
}

/// Default config with both runtime features on (tests switch them off as needed).
pub(super) fn cfg_enabled() -> config::Config {
    let mut cfg = config::Config::default();
    cfg.server.api.minimal_runtime_enabled = true;
    cfg.server.api.runtime_edge_enabled = true;
    cfg.general.use_middle_proxy = true;
    cfg
}

pub(super) fn snapshot_of(cfg: &config::Config) -> config::ConfigSnapshot {
    config::ConfigSnapshot {
        config: Arc::new(cfg.clone()),
        revision: REVISION.to_string(),
        path: PathBuf::from("/etc/mtproxyd/config.toml"),
    }
}

pub(super) fn render_q(
    route: ReadRoute,
    cfg: &config::Config,
    rt: &Fake,
    caches: &ViewCaches,
    query: Option<&str>,
    now: SystemTime,
) -> Value {
    let snapshot = snapshot_of(cfg);
    let ctx = ViewContext {
        snapshot: &snapshot,
        revision: &snapshot.revision,
        runtime: rt,
        caches,
        query,
        now,
    };
    render(route, &ctx)
}

/// Renders with fresh caches at `t0 + 100 s`.
pub(super) fn render_once(route: ReadRoute, cfg: &config::Config, rt: &Fake) -> Value {
    render_q(route, cfg, rt, &ViewCaches::default(), None, at(100))
}

pub(super) fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

#[track_caller]
pub(super) fn assert_keys(v: &Value, expected: &[&str]) {
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(keys(v), want, "key set mismatch in {v}");
}

fn ep(last: u8) -> SocketAddr {
    SocketAddr::from(([149, 154, 175, last], 8888))
}

pub(super) fn sample_pool() -> MePoolSnapshot {
    let writer =
        |id, dc, endpoint, generation, contour, draining, degraded, rtt| MeWriterSnapshot {
            writer_id: id,
            dc,
            endpoint,
            generation,
            contour,
            draining,
            degraded,
            bound_clients: id as usize,
            idle_for_secs: if id == 4 { Some(30) } else { None },
            rtt_ema_ms: rtt,
        };
    MePoolSnapshot {
        taken_at: at(90),
        active_generation: 5,
        warm_generation: 6,
        pending_hardswap_generation: 0,
        pending_hardswap_age_secs: None,
        hardswap_enabled: true,
        writers: vec![
            writer(
                1,
                Some(1),
                ep(50),
                5,
                WriterContour::Active,
                false,
                false,
                Some(10.0),
            ),
            writer(
                2,
                Some(1),
                ep(50),
                5,
                WriterContour::Active,
                false,
                true,
                Some(20.0),
            ),
            writer(
                3,
                Some(1),
                ep(51),
                4,
                WriterContour::Draining,
                true,
                false,
                Some(99.0),
            ),
            writer(
                4,
                Some(-2),
                ep(60),
                6,
                WriterContour::Warm,
                false,
                false,
                None,
            ),
        ],
        dcs: vec![
            MeDcSnapshot {
                dc: 1,
                endpoints: vec![ep(50), ep(51)],
                floor_min: 1,
                floor_target: 2,
                floor_max: 4,
                floor_capped: false,
                load: 7,
            },
            MeDcSnapshot {
                dc: -2,
                endpoints: vec![ep(60)],
                floor_min: 1,
                floor_target: 1,
                floor_max: 2,
                floor_capped: true,
                load: 0,
            },
        ],
        refill: vec![
            MeRefillInflight {
                dc: 1,
                family: AddrFamily::V4,
                inflight: 2,
            },
            MeRefillInflight {
                dc: 1,
                family: AddrFamily::V6,
                inflight: 0,
            },
            MeRefillInflight {
                dc: -2,
                family: AddrFamily::V4,
                inflight: 1,
            },
        ],
        quarantine: vec![MeQuarantineEntry {
            endpoint: ep(51),
            remaining_ms: 1500,
        }],
        network_path: vec![MeDcPath {
            dc: 1,
            ip_preference: Some("prefer_v4".into()),
            selected_addr_v4: Some(ep(50)),
            selected_addr_v6: None,
        }],
        adaptive: MeAdaptiveFloorRuntime {
            cpu_cores_detected: 2,
            cpu_cores_effective: 2,
            ..Default::default()
        },
        selftest: MeSelftestInputs {
            timeskew: MeTimeskewSnapshot {
                max_skew_secs_15m: Some(3),
                samples_15m: 4,
                last_skew_secs: Some(1),
                last_source: Some("proxy_config".into()),
                last_seen_age_secs: Some(12),
            },
            interface_v4: Some(Ipv4Addr::new(10, 0, 0, 5)),
            interface_v6: None,
            bnd: MeBndSnapshot::default(),
        },
    }
}

pub(super) fn sample_upstreams() -> UpstreamsSnapshot {
    UpstreamsSnapshot {
        upstreams: vec![
            UpstreamSnapshot {
                upstream_id: 0,
                route_kind: UpstreamRouteKind::Direct,
                address: "direct".into(),
                weight: 1,
                scopes: String::new(),
                healthy: true,
                fails: 0,
                last_check_at: at(95),
                effective_latency_ms: Some(12.5),
                dc: vec![UpstreamDcSnapshot {
                    dc: 2,
                    latency_ema_ms: Some(12.5),
                    ip_preference: IpPreference::PreferV4,
                }],
            },
            UpstreamSnapshot {
                upstream_id: 1,
                route_kind: UpstreamRouteKind::Socks5,
                address: "10.1.1.1:1080".into(),
                weight: 3,
                scopes: "eu".into(),
                healthy: false,
                fails: 4,
                last_check_at: at(40),
                effective_latency_ms: None,
                dc: Vec::new(),
            },
        ],
    }
}

pub(super) fn sample_nat() -> NatStunSnapshot {
    NatStunSnapshot {
        nat_probe_enabled: true,
        nat_probe_disabled_runtime: false,
        nat_probe_attempts: 3,
        configured_servers: vec!["stun.l.google.com:19302".into()],
        live_servers: vec!["stun.l.google.com:19302".into()],
        reflection_v4: Some(StunReflection {
            addr: SocketAddr::from(([203, 0, 113, 7], 40000)),
            observed_at: at(70),
        }),
        reflection_v6: None,
        stun_backoff_remaining_ms: None,
    }
}
