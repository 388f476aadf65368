//! `RuntimeHandle`: the binary's implementation of the API's `Runtime` port.
//!
//! What is real today: counters/users/IPs/events (`stats`), the startup tracker, config reload
//! counters, local interface addresses as detected IPs (replaced by the NAT probe's public
//! address when it knows one), and from the data plane admission state, the upstream rows
//! with health/latency and the NAT/STUN probe (`nat_stun()`, `None` in direct mode). Not
//! built yet, reported as unavailable: the middle-proxy pool (`me_pool() == None`).

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
            // No middle-proxy pool exists in this build.
            me_runtime_ready: false,
        }
    }

    fn me_pool(&self) -> Option<MePoolSnapshot> {
        None
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
