//! The `Runtime` port: everything the control plane may ask of the running proxy.
//!
//! The API never reaches into the data plane directly; it asks this trait for plain-data
//! snapshots. Its one verb is a counter reset (runtime state, not config). What a config write
//! does to the running proxy (closing sessions of a deleted, disabled or re-keyed user,
//! forgetting its counters) is done by the data plane's config-publish hook, before the write
//! returns to the handler. The snapshot types here carry raw runtime facts (writer rows, floor
//! bounds, health flags, timestamps); derived figures (coverage, percentages, ages, summaries)
//! are computed by `crate::views`, so an implementation only has to copy its state out.
//! This module must not depend on hyper or on the views.

mod me;
mod upstream;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

pub use me::{
    BndAddrState, BndPortState, MeAdaptiveFloorRuntime, MeBndSnapshot, MeDcPath, MeDcSnapshot,
    MePoolSnapshot, MeQuarantineEntry, MeRefillInflight, MeSelftestInputs, MeTimeskewSnapshot,
    MeWriterSnapshot, WriterContour,
};
pub use stats::startup::{
    ComponentStatus, MeStartupSnapshot, StartupComponentSnapshot, StartupSnapshot, StartupStatus,
    StartupTracker, TransportMode,
};
pub use upstream::{
    AddrFamily, IpPreference, NatStunSnapshot, StunReflection, UpstreamDcSnapshot,
    UpstreamRouteKind, UpstreamSnapshot, UpstreamsSnapshot,
};

/// Admission gate state as seen by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GatesSnapshot {
    /// Whether the listener currently admits new client connections.
    pub accepting_new_connections: bool,
    /// Whether the ME pool has minimal coverage (only meaningful with `use_middle_proxy`).
    pub me_runtime_ready: bool,
}

/// Config reload counters, as kept by `config::ConfigStore::reload_stats`.
pub use config::ReloadStats;

/// Build metadata of the running binary. Only the binary's own build script knows it (the `api`
/// crate is compiled separately), so it travels through the port; absent values are omitted
/// from `/v1/system/info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildInfo {
    /// Cargo profile the binary was built with (`debug`, `release`, ...).
    pub profile: Option<&'static str>,
    pub git_commit: Option<&'static str>,
    pub build_time_utc: Option<&'static str>,
    pub rustc_version: Option<&'static str>,
}

/// What the control plane needs from the running proxy. Implemented by the binary (and by
/// fakes in tests). Every method must be cheap and non-blocking: a snapshot that would need to
/// wait for a busy lock returns `None` instead (reported as `source_unavailable`).
pub trait Runtime: Send + Sync + 'static {
    /// Shared counters, per-user stats and the event ring.
    fn stats(&self) -> &stats::Stats;
    /// Startup progress (status, stage, components, ME substate).
    fn startup(&self) -> StartupSnapshot;
    /// Admission gates.
    fn gates(&self) -> GatesSnapshot;
    /// ME pool state; `None` when there is no pool (direct-only mode, failed ME init).
    fn me_pool(&self) -> Option<MePoolSnapshot>;
    /// Upstream manager state; `None` when its lock could not be taken without waiting.
    fn upstreams(&self) -> Option<UpstreamsSnapshot>;
    /// NAT/STUN probe state; `None` when the shared STUN state is unavailable.
    fn nat_stun(&self) -> Option<NatStunSnapshot>;
    /// External addresses detected at startup (used for links).
    fn detected_ips(&self) -> (Option<Ipv4Addr>, Option<Ipv6Addr>);
    /// Wall-clock time the process started.
    fn process_started_at(&self) -> SystemTime;
    /// Config reload counters (from `config::ConfigStore::reload_stats`).
    fn config_reload_stats(&self) -> ReloadStats;
    /// Resets a configured user's quota counter to zero and persists it; returns the reset time
    /// in Unix seconds. Not a config change: counters are runtime state.
    fn reset_user_quota(&self, username: &str) -> u64;
    /// Build metadata of the binary (none by default, e.g. in tests).
    fn build_info(&self) -> BuildInfo {
        BuildInfo::default()
    }
}
