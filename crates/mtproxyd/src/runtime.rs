//! `RuntimeHandle`: the binary's implementation of the API's `Runtime` port.
//!
//! What is real today: counters/users/IPs/events (`stats`), the startup tracker, config reload
//! counters, local interface addresses as detected IPs (replaced by the NAT probe's public
//! address when it knows one), and from the data plane admission state, the upstream rows
//! with health/latency, the middle-proxy pool and the NAT/STUN probe (`me_pool()` and
//! `nat_stun()` are `None` in direct mode).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::SystemTime;

use api::runtime::{
    GatesSnapshot, IpPreference, MePoolSnapshot, NatStunSnapshot, ReloadStats, Runtime,
    StartupSnapshot, StartupTracker, StunReflection, UpstreamDcSnapshot, UpstreamRouteKind,
    UpstreamSnapshot, UpstreamsSnapshot,
};
use config::ConfigStore;
use dataplane::DataplaneHandle;
use stats::Stats;

/// The running proxy as the control plane sees it.
pub struct RuntimeHandle {
    store: Arc<ConfigStore>,
    stats: Arc<Stats>,
    startup: Arc<StartupTracker>,
    started_at: SystemTime,
    detected: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    dataplane: Arc<DataplaneHandle>,
}

impl RuntimeHandle {
    /// Wires the port over the shared pieces.
    pub fn new(
        store: Arc<ConfigStore>,
        stats: Arc<Stats>,
        startup: Arc<StartupTracker>,
        detected: (Option<Ipv4Addr>, Option<Ipv6Addr>),
        dataplane: Arc<DataplaneHandle>,
    ) -> Self {
        Self {
            started_at: stats.started_at(),
            store,
            stats,
            startup,
            detected,
            dataplane,
        }
    }
}

fn route_kind(kind: dataplane::UpstreamRouteKind) -> UpstreamRouteKind {
    match kind {
        dataplane::UpstreamRouteKind::Direct => UpstreamRouteKind::Direct,
        dataplane::UpstreamRouteKind::Socks4 => UpstreamRouteKind::Socks4,
        dataplane::UpstreamRouteKind::Socks5 => UpstreamRouteKind::Socks5,
        dataplane::UpstreamRouteKind::Shadowsocks => UpstreamRouteKind::Shadowsocks,
    }
}

fn ip_preference(p: dataplane::IpPreference) -> IpPreference {
    match p {
        dataplane::IpPreference::Unknown => IpPreference::Unknown,
        dataplane::IpPreference::PreferV4 => IpPreference::PreferV4,
        dataplane::IpPreference::PreferV6 => IpPreference::PreferV6,
        dataplane::IpPreference::BothWork => IpPreference::BothWork,
        dataplane::IpPreference::Unavailable => IpPreference::Unavailable,
    }
}

fn from_dataplane(row: dataplane::UpstreamRow) -> UpstreamSnapshot {
    UpstreamSnapshot {
        upstream_id: row.upstream_id,
        route_kind: route_kind(row.route_kind),
        address: row.address,
        weight: row.weight,
        scopes: row.scopes,
        healthy: row.healthy,
        fails: row.fails,
        last_check_at: row.last_check_at,
        effective_latency_ms: row.effective_latency_ms,
        dc: row
            .dc
            .into_iter()
            .map(|d| UpstreamDcSnapshot {
                dc: d.dc,
                latency_ema_ms: d.latency_ema_ms,
                ip_preference: ip_preference(d.ip_preference),
            })
            .collect(),
    }
}

/// The API's view of the ME pool: the pool's rows, plus what the views derive from config
/// (adaptive-floor budgets) and the process (interfaces, SOCKS BND).
fn me_snapshot(
    pool: dataplane::PoolSnapshot,
    g: &config::General,
    detected: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    bnd: Option<dataplane::BndObservation>,
) -> MePoolSnapshot {
    use api::runtime::{
        AddrFamily, BndAddrState, BndPortState, MeAdaptiveFloorRuntime, MeBndSnapshot, MeDcPath,
        MeDcSnapshot, MeQuarantineEntry, MeRefillInflight, MeSelftestInputs, MeWriterSnapshot,
        WriterContour,
    };
    let contour = |c: &str| match c {
        "active" => WriterContour::Active,
        "draining" => WriterContour::Draining,
        _ => WriterContour::Warm,
    };
    let writers: Vec<MeWriterSnapshot> = pool
        .writers
        .iter()
        .map(|w| MeWriterSnapshot {
            writer_id: w.id,
            dc: Some(w.dc),
            endpoint: w.endpoint,
            generation: w.generation,
            contour: contour(w.contour),
            draining: w.draining,
            degraded: w.degraded,
            bound_clients: w.bound_clients,
            idle_for_secs: w.idle_for_secs,
            rtt_ema_ms: w.rtt_ema_ms,
        })
        .collect();
    let detected_cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let cores = match g.me_adaptive_floor_cpu_cores_override {
        0 => detected_cores,
        n => u32::from(n),
    };
    let per_core = |n: u16| u64::from(n) * u64::from(cores);
    let raw = per_core(g.me_adaptive_floor_writers_per_core_total);
    let active_cfg = u64::from(g.me_adaptive_floor_max_active_writers_global);
    let warm_cfg = u64::from(g.me_adaptive_floor_max_warm_writers_global);
    let count = |c: WriterContour| writers.iter().filter(|w| w.contour == c).count() as u64;
    let adaptive = MeAdaptiveFloorRuntime {
        cpu_cores_detected: detected_cores,
        cpu_cores_effective: cores,
        global_cap_raw: raw,
        global_cap_effective: raw.min(active_cfg),
        target_writers_total: pool.dcs.iter().map(|d| d.floor.target as u64).sum(),
        active_cap_configured: active_cfg,
        active_cap_effective: per_core(g.me_adaptive_floor_max_active_writers_per_core)
            .min(active_cfg),
        warm_cap_configured: warm_cfg,
        warm_cap_effective: per_core(g.me_adaptive_floor_max_warm_writers_per_core).min(warm_cfg),
        active_writers_current: count(WriterContour::Active),
        warm_writers_current: count(WriterContour::Warm),
    };
    let bnd = bnd.map_or_else(MeBndSnapshot::default, |b| MeBndSnapshot {
        addr_state: match b.addr_state {
            dataplane::BndAddrStatus::Ok => BndAddrState::Ok,
            dataplane::BndAddrStatus::Bogon => BndAddrState::Bogon,
            dataplane::BndAddrStatus::Error => BndAddrState::Error,
        },
        port_state: match b.port_state {
            dataplane::BndPortStatus::Ok => BndPortState::Ok,
            dataplane::BndPortStatus::Zero => BndPortState::Zero,
            dataplane::BndPortStatus::Error => BndPortState::Error,
        },
        last_addr: b.addr,
        last_seen_age_secs: b.observed_at.elapsed().ok().map(|d| d.as_secs()),
    });
    MePoolSnapshot {
        taken_at: pool.taken_at,
        active_generation: pool.active_generation,
        warm_generation: pool.warm_generation,
        pending_hardswap_generation: pool.pending_generation.map_or(0, |(g, _)| g),
        pending_hardswap_age_secs: pool.pending_generation.map(|(_, age)| age),
        hardswap_enabled: pool.hardswap,
        network_path: pool
            .dcs
            .iter()
            .map(|d| MeDcPath {
                dc: d.dc,
                ip_preference: None,
                selected_addr_v4: d.endpoints.iter().copied().find(|a| a.is_ipv4()),
                selected_addr_v6: d.endpoints.iter().copied().find(|a| a.is_ipv6()),
            })
            .collect(),
        dcs: pool
            .dcs
            .into_iter()
            .map(|d| MeDcSnapshot {
                dc: d.dc,
                endpoints: d.endpoints,
                floor_min: d.floor.min,
                floor_target: d.floor.target,
                floor_max: d.floor.max,
                floor_capped: d.floor.capped,
                load: d.load,
            })
            .collect(),
        refill: pool
            .refill
            .into_iter()
            .map(|r| MeRefillInflight {
                dc: r.dc,
                family: if r.ipv6 {
                    AddrFamily::V6
                } else {
                    AddrFamily::V4
                },
                inflight: r.inflight,
            })
            .collect(),
        quarantine: pool
            .quarantine
            .into_iter()
            .map(|(endpoint, remaining_ms)| MeQuarantineEntry {
                endpoint,
                remaining_ms,
            })
            .collect(),
        writers,
        adaptive,
        selftest: MeSelftestInputs {
            timeskew: api::runtime::MeTimeskewSnapshot {
                max_skew_secs_15m: pool.timeskew.max_skew_secs_15m,
                samples_15m: pool.timeskew.samples_15m,
                last_skew_secs: pool.timeskew.last_skew_secs,
                last_source: pool.timeskew.last_source.clone(),
                last_seen_age_secs: pool.timeskew.last_seen_age_secs,
            },
            interface_v4: detected.0,
            interface_v6: detected.1,
            bnd,
        },
    }
}

fn nat_stun_snapshot(s: dataplane::nat::NatSnapshot) -> NatStunSnapshot {
    let refl = |r: Option<dataplane::nat::NatReflection>| {
        r.map(|r| StunReflection {
            addr: r.addr,
            observed_at: r.observed_at,
        })
    };
    NatStunSnapshot {
        nat_probe_enabled: s.nat_probe_enabled,
        nat_probe_disabled_runtime: s.nat_probe_disabled_runtime,
        nat_probe_attempts: s.nat_probe_attempts,
        configured_servers: s.configured_servers,
        live_servers: s.live_servers,
        reflection_v4: refl(s.reflection_v4),
        reflection_v6: refl(s.reflection_v6),
        stun_backoff_remaining_ms: s.stun_backoff_remaining_ms,
    }
}

impl Runtime for RuntimeHandle {
    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn startup(&self) -> StartupSnapshot {
        self.startup.snapshot()
    }

    fn gates(&self) -> GatesSnapshot {
        GatesSnapshot {
            accepting_new_connections: self.dataplane.accepting_new_connections(),
            me_runtime_ready: self.dataplane.me_ready(),
        }
    }

    fn me_pool(&self) -> Option<MePoolSnapshot> {
        let pool = self.dataplane.me_pool_snapshot()?;
        let cfg = self.store.current();
        let bnd = self.dataplane.upstream_bnd();
        Some(me_snapshot(pool, &cfg.config.general, self.detected, bnd))
    }

    fn upstreams(&self) -> Option<UpstreamsSnapshot> {
        // `None` while a row is being updated (a try-lock): `source_unavailable`.
        let rows = self.dataplane.upstreams_snapshot()?;
        Some(UpstreamsSnapshot {
            upstreams: rows.into_iter().map(from_dataplane).collect(),
        })
    }

    fn nat_stun(&self) -> Option<NatStunSnapshot> {
        // `None` in direct mode: the probe serves the middle-proxy route only.
        self.dataplane.nat_snapshot().map(nat_stun_snapshot)
    }

    /// The local interface addresses, each replaced by the NAT probe's public address when
    /// the probe knows one for it (docs/DECISIONS.md #21, docs/PROTOCOL.md §7.5).
    fn detected_ips(&self) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let (v4, v6) = self.detected;
        let Some(nat) = self.dataplane.nat_probe() else {
            return self.detected;
        };
        let v4 = v4.map(|l| match nat.public_ip_for(IpAddr::V4(l)) {
            Some(IpAddr::V4(p)) => p,
            _ => l,
        });
        let v6 = v6.map(|l| match nat.public_ip_for(IpAddr::V6(l)) {
            Some(IpAddr::V6(p)) => p,
            _ => l,
        });
        (v4, v6)
    }

    fn process_started_at(&self) -> SystemTime {
        self.started_at
    }

    fn config_reload_stats(&self) -> ReloadStats {
        let r = self.store.reload_stats();
        ReloadStats {
            reload_count: r.reload_count,
            last_reload_epoch_secs: r.last_reload_epoch_secs,
        }
    }

    fn reset_user_quota(&self, username: &str) -> u64 {
        self.dataplane.reset_user_quota(username)
    }

    fn build_info(&self) -> api::runtime::BuildInfo {
        crate::BUILD_INFO
    }
}
