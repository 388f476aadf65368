//! `[general]` and its sub-tables (`modes`, `links`, `telemetry`). Field names are telemt's TOML
//! keys; defaults are telemt's.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::de;
use crate::types::{
    AdTag, LogLevel, MeBindStaleMode, MeFloorMode, MeRouteNoWriterMode, MeSocksKdfPolicy,
    MeTelemetryLevel, MeWriterPickMode,
};

/// `[general.modes]`: which link/handshake flavours are enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Modes {
    pub classic: bool,
    pub secure: bool,
    pub tls: bool,
}

impl Default for Modes {
    fn default() -> Self {
        Modes {
            classic: false,
            secure: false,
            tls: true,
        }
    }
}

/// `general.links.show`: `"*"` or a list of usernames whose links are printed at startup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ShowLink {
    /// Empty list: show nothing.
    None,
    /// `"*"`: every user (telemt's default for `general.links.show`).
    #[default]
    All,
    /// Named users.
    Specific(Vec<String>),
}

impl Serialize for ShowLink {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ShowLink::None => Vec::<String>::new().serialize(s),
            ShowLink::All => s.serialize_str("*"),
            ShowLink::Specific(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ShowLink {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::One(s) if s == "*" => Ok(ShowLink::All),
            Raw::One(s) => Err(serde::de::Error::custom(format!(
                "general.links.show must be \"*\" or a list of usernames, got {s:?}"
            ))),
            Raw::Many(v) if v.is_empty() => Ok(ShowLink::None),
            Raw::Many(v) => Ok(ShowLink::Specific(v)),
        }
    }
}

/// `[general.links]`: link generation overrides.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Links {
    pub show: ShowLink,
    /// Single host override for links (empty string = not set).
    pub public_host: Option<String>,
    /// Port override for links (else `server.port`).
    pub public_port: Option<u16>,
}

/// `[general.telemetry]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Telemetry {
    pub core_enabled: bool,
    pub user_enabled: bool,
    pub me_level: MeTelemetryLevel,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            core_enabled: true,
            user_enabled: true,
            me_level: MeTelemetryLevel::Normal,
        }
    }
}

/// telemt's default for `general.proxy_secret_url`.
pub const DEFAULT_PROXY_SECRET_URL: &str = "https://core.telegram.org/getProxySecret";
/// telemt's default for `general.proxy_config_v4_url`.
pub const DEFAULT_PROXY_CONFIG_V4_URL: &str = "https://core.telegram.org/getProxyConfig";
/// telemt's default for `general.proxy_config_v6_url`.
pub const DEFAULT_PROXY_CONFIG_V6_URL: &str = "https://core.telegram.org/getProxyConfigV6";
const DEFAULT_PROXY_SECRET_PATH: &str = "proxy-secret";
const DEFAULT_PROXY_CONFIG_V4_CACHE_PATH: &str = "cache/proxy-config-v4.txt";
const DEFAULT_PROXY_CONFIG_V6_CACHE_PATH: &str = "cache/proxy-config-v6.txt";
/// The longest proxy secret the ME handshake takes (`proto::me::handshake::SECRET_LEN`; a
/// dataplane test keeps the two equal). `general.proxy_secret_len_max` accepts telemt's range
/// [32, 4096], but no secret longer than this is ever accepted.
pub const ME_HANDSHAKE_SECRET_LEN_MAX: usize = 256;

/// `[general]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct General {
    pub data_path: Option<PathBuf>,
    /// Per-user quota and octet counters (JSON). Relative to the config file's directory;
    /// default `mtproxyd.quota.json` there (docs/DECISIONS.md #32).
    pub quota_state_path: Option<PathBuf>,
    /// How often that file is written (a crash loses at most this much accounting).
    pub quota_state_flush_secs: u64,
    pub modes: Modes,
    pub prefer_ipv6: bool,
    pub fast_mode: bool,
    pub use_middle_proxy: bool,
    /// Cache of the downloaded proxy secret; relative to the config file's directory.
    pub proxy_secret_path: Option<String>,
    /// Where the proxy secret is downloaded from; `None` = [`DEFAULT_PROXY_SECRET_URL`].
    pub proxy_secret_url: Option<String>,
    pub proxy_config_v4_cache_path: Option<String>,
    /// `None` = [`DEFAULT_PROXY_CONFIG_V4_URL`].
    pub proxy_config_v4_url: Option<String>,
    pub proxy_config_v6_cache_path: Option<String>,
    /// `None` = [`DEFAULT_PROXY_CONFIG_V6_URL`].
    pub proxy_config_v6_url: Option<String>,
    /// Global ad tag; an invalid value is dropped with a warning (telemt behaviour).
    #[serde(deserialize_with = "de::lenient_ad_tag")]
    pub ad_tag: Option<AdTag>,
    pub middle_proxy_nat_ip: Option<IpAddr>,
    pub middle_proxy_nat_probe: bool,
    /// Deprecated: merged into `network.stun_servers` at load.
    pub middle_proxy_nat_stun: Option<String>,
    /// Deprecated: merged into `network.stun_servers` at load.
    pub middle_proxy_nat_stun_servers: Vec<String>,
    pub stun_nat_probe_concurrency: usize,
    pub stun_iface_mismatch_ignore: bool,
    pub middle_proxy_pool_size: usize,
    pub middle_proxy_warm_standby: usize,
    pub me_init_retry_attempts: u32,
    pub me2dc_fallback: bool,
    pub me2dc_fast: bool,
    pub me_keepalive_enabled: bool,
    pub me_keepalive_interval_secs: u64,
    pub me_keepalive_jitter_secs: u64,
    pub me_keepalive_payload_random: bool,
    /// Seconds between RPC_PROXY_REQ activity signals; 0 disables.
    pub rpc_proxy_req_every: u64,
    pub me_warmup_stagger_enabled: bool,
    pub me_warmup_step_delay_ms: u64,
    pub me_warmup_step_jitter_ms: u64,
    pub me_reconnect_max_concurrent_per_dc: u32,
    pub me_reconnect_backoff_base_ms: u64,
    pub me_reconnect_backoff_cap_ms: u64,
    pub me_reconnect_fast_retry_count: u32,
    pub me_single_endpoint_shadow_writers: u8,
    pub me_single_endpoint_outage_mode_enabled: bool,
    pub me_single_endpoint_outage_disable_quarantine: bool,
    pub me_single_endpoint_outage_backoff_min_ms: u64,
    pub me_single_endpoint_outage_backoff_max_ms: u64,
    pub me_single_endpoint_shadow_rotate_every_secs: u64,
    pub me_floor_mode: MeFloorMode,
    pub me_adaptive_floor_idle_secs: u64,
    pub me_adaptive_floor_min_writers_single_endpoint: u8,
    pub me_adaptive_floor_min_writers_multi_endpoint: u8,
    pub me_adaptive_floor_recover_grace_secs: u64,
    pub me_adaptive_floor_writers_per_core_total: u16,
    pub me_adaptive_floor_cpu_cores_override: u16,
    pub me_adaptive_floor_max_extra_writers_single_per_core: u16,
    pub me_adaptive_floor_max_extra_writers_multi_per_core: u16,
    pub me_adaptive_floor_max_active_writers_per_core: u16,
    pub me_adaptive_floor_max_warm_writers_per_core: u16,
    pub me_adaptive_floor_max_active_writers_global: u32,
    pub me_adaptive_floor_max_warm_writers_global: u32,
    pub upstream_connect_retry_attempts: u32,
    pub upstream_connect_retry_backoff_ms: u64,
    pub upstream_connect_budget_ms: u64,
    pub upstream_unhealthy_fail_threshold: u32,
    pub upstream_connect_failfast_hard_errors: bool,
    pub unknown_dc_log_path: Option<String>,
    pub unknown_dc_file_log_enabled: bool,
    pub log_level: LogLevel,
    pub disable_colors: bool,
    pub telemetry: Telemetry,
    pub me_socks_kdf_policy: MeSocksKdfPolicy,
    pub me_route_no_writer_mode: MeRouteNoWriterMode,
    pub me_route_no_writer_wait_ms: u64,
    pub me_route_hybrid_max_wait_ms: u64,
    /// Answers queued towards one ME session (frames; also bounded to 1 MiB).
    pub me_route_channel_capacity: usize,
    /// How long a writer's reader waits for room in a full session queue before closing
    /// that session; 0 = no bound.
    pub me_route_blocking_send_timeout_ms: u64,
    /// RPC packets queued towards one ME link.
    pub me_writer_cmd_channel_capacity: usize,
    /// How long a session waits to queue a packet towards its link before it closes;
    /// 0 = no bound.
    pub me_c2me_send_timeout_ms: u64,
    /// Answer bytes coalesced into one client write at most.
    pub me_d2c_flush_batch_max_bytes: usize,
    /// Answers coalesced into one client write at most.
    pub me_d2c_flush_batch_max_frames: usize,
    pub links: Links,
    /// Unified ME updater interval; `None` when only the legacy `proxy_*_auto_reload_secs`
    /// keys are set (see [`General::effective_update_every_secs`]).
    pub update_every: Option<u64>,
    pub proxy_secret_auto_reload_secs: u64,
    pub proxy_config_auto_reload_secs: u64,
    /// Identical proxy-config downloads in a row before a changed config is applied.
    pub me_config_stable_snapshots: u8,
    /// Least seconds between two applied proxy-config changes; 0 = no cooldown.
    pub me_config_apply_cooldown_secs: u64,
    /// A downloaded proxy config counts only with a 2xx status.
    pub me_snapshot_require_http_2xx: bool,
    /// A proxy config without endpoints is rejected (see docs/DECISIONS.md #41 for how it
    /// meets `me_snapshot_min_proxy_for_lines`).
    pub me_snapshot_reject_empty_map: bool,
    /// Least `proxy_for` rows a proxy config must list to be accepted.
    pub me_snapshot_min_proxy_for_lines: u32,
    /// Identical proxy-secret downloads in a row before a changed secret is applied.
    pub proxy_secret_stable_snapshots: u8,
    /// Whether a changed proxy secret is applied while running (false: only at start).
    pub proxy_secret_rotate_runtime: bool,
    /// Accepted for telemt configs; the secret and the endpoint map are always replaced
    /// together, whatever its value (docs/DECISIONS.md #41).
    pub me_secret_atomic_snapshot: bool,
    /// Longest proxy secret accepted, at start and at refresh; see
    /// [`General::effective_proxy_secret_len_max`].
    pub proxy_secret_len_max: usize,
    pub me_reinit_every_secs: u64,
    pub hardswap: bool,
    /// Spacing between the dials of one warm-up pass of a new generation (uniform in
    /// [min, max]).
    pub me_hardswap_warmup_delay_min_ms: u64,
    pub me_hardswap_warmup_delay_max_ms: u64,
    /// Passes after the first while the new generation is still incomplete, the n-th after
    /// `me_hardswap_warmup_pass_backoff_base_ms` × 2^(n−1).
    pub me_hardswap_warmup_extra_passes: u8,
    pub me_hardswap_warmup_pass_backoff_base_ms: u64,
    pub me_pool_drain_ttl_secs: u64,
    pub me_pool_min_fresh_ratio: f32,
    /// Force-close timeout for draining writers; 0 = runtime fallback of 300 s.
    pub me_reinit_drain_timeout_secs: u64,
    pub me_bind_stale_mode: MeBindStaleMode,
    pub me_bind_stale_ttl_secs: u64,
    pub me_deterministic_writer_sort: bool,
    pub me_writer_pick_mode: MeWriterPickMode,
    pub me_writer_pick_sample_size: u8,
    pub max_client_frame: usize,
    pub crypto_pending_buffer: usize,
    pub desync_all_full: bool,
    pub beobachten: bool,
    pub beobachten_minutes: u64,
    pub beobachten_flush_secs: u64,
    pub beobachten_file: String,
    pub ntp_check: bool,
    pub ntp_servers: Vec<String>,
    pub auto_degradation_enabled: bool,
    pub degradation_min_unavailable_dc_groups: u8,
}

impl Default for General {
    fn default() -> Self {
        General {
            data_path: None,
            quota_state_path: None,
            quota_state_flush_secs: 30,
            modes: Modes::default(),
            prefer_ipv6: false,
            fast_mode: true,
            use_middle_proxy: true,
            proxy_secret_path: Some(DEFAULT_PROXY_SECRET_PATH.into()),
            proxy_secret_url: None,
            proxy_config_v4_cache_path: Some(DEFAULT_PROXY_CONFIG_V4_CACHE_PATH.into()),
            proxy_config_v4_url: None,
            proxy_config_v6_cache_path: Some(DEFAULT_PROXY_CONFIG_V6_CACHE_PATH.into()),
            proxy_config_v6_url: None,
            ad_tag: None,
            middle_proxy_nat_ip: None,
            middle_proxy_nat_probe: true,
            middle_proxy_nat_stun: None,
            middle_proxy_nat_stun_servers: Vec::new(),
            stun_nat_probe_concurrency: 8,
            stun_iface_mismatch_ignore: false,
            middle_proxy_pool_size: 8,
            middle_proxy_warm_standby: 16,
            me_init_retry_attempts: 0,
            me2dc_fallback: true,
            me2dc_fast: false,
            me_keepalive_enabled: true,
            me_keepalive_interval_secs: 8,
            me_keepalive_jitter_secs: 2,
            me_keepalive_payload_random: true,
            rpc_proxy_req_every: 0,
            me_warmup_stagger_enabled: true,
            me_warmup_step_delay_ms: 500,
            me_warmup_step_jitter_ms: 300,
            me_reconnect_max_concurrent_per_dc: 8,
            me_reconnect_backoff_base_ms: 500,
            me_reconnect_backoff_cap_ms: 30_000,
            me_reconnect_fast_retry_count: 16,
            me_single_endpoint_shadow_writers: 2,
            me_single_endpoint_outage_mode_enabled: true,
            me_single_endpoint_outage_disable_quarantine: true,
            me_single_endpoint_outage_backoff_min_ms: 250,
            me_single_endpoint_outage_backoff_max_ms: 3000,
            me_single_endpoint_shadow_rotate_every_secs: 900,
            me_floor_mode: MeFloorMode::Adaptive,
            me_adaptive_floor_idle_secs: 90,
            me_adaptive_floor_min_writers_single_endpoint: 1,
            me_adaptive_floor_min_writers_multi_endpoint: 1,
            me_adaptive_floor_recover_grace_secs: 180,
            me_adaptive_floor_writers_per_core_total: 48,
            me_adaptive_floor_cpu_cores_override: 0,
            me_adaptive_floor_max_extra_writers_single_per_core: 1,
            me_adaptive_floor_max_extra_writers_multi_per_core: 2,
            me_adaptive_floor_max_active_writers_per_core: 64,
            me_adaptive_floor_max_warm_writers_per_core: 64,
            me_adaptive_floor_max_active_writers_global: 256,
            me_adaptive_floor_max_warm_writers_global: 256,
            upstream_connect_retry_attempts: 2,
            upstream_connect_retry_backoff_ms: 100,
            upstream_connect_budget_ms: 3000,
            upstream_unhealthy_fail_threshold: 5,
            upstream_connect_failfast_hard_errors: false,
            unknown_dc_log_path: Some("unknown-dc.txt".into()),
            unknown_dc_file_log_enabled: false,
            log_level: LogLevel::Normal,
            disable_colors: false,
            telemetry: Telemetry::default(),
            me_socks_kdf_policy: MeSocksKdfPolicy::Strict,
            me_route_no_writer_mode: MeRouteNoWriterMode::HybridAsyncPersistent,
            me_route_no_writer_wait_ms: 250,
            me_route_hybrid_max_wait_ms: 3000,
            // Ours, not telemt's 768 / 4096 / 131072: see DECISIONS.md #43.
            me_route_channel_capacity: 256,
            me_route_blocking_send_timeout_ms: 250,
            me_writer_cmd_channel_capacity: 128,
            me_c2me_send_timeout_ms: 4000,
            me_d2c_flush_batch_max_bytes: 256 * 1024,
            me_d2c_flush_batch_max_frames: 32,
            links: Links::default(),
            update_every: Some(300),
            proxy_secret_auto_reload_secs: 3600,
            proxy_config_auto_reload_secs: 3600,
            me_config_stable_snapshots: 2,
            me_config_apply_cooldown_secs: 300,
            me_snapshot_require_http_2xx: true,
            me_snapshot_reject_empty_map: true,
            me_snapshot_min_proxy_for_lines: 1,
            proxy_secret_stable_snapshots: 2,
            proxy_secret_rotate_runtime: true,
            me_secret_atomic_snapshot: true,
            proxy_secret_len_max: ME_HANDSHAKE_SECRET_LEN_MAX,
            me_reinit_every_secs: 900,
            hardswap: true,
            me_hardswap_warmup_delay_min_ms: 1000,
            me_hardswap_warmup_delay_max_ms: 2000,
            me_hardswap_warmup_extra_passes: 3,
            me_hardswap_warmup_pass_backoff_base_ms: 500,
            me_pool_drain_ttl_secs: 90,
            me_pool_min_fresh_ratio: 0.8,
            me_reinit_drain_timeout_secs: 90,
            me_bind_stale_mode: MeBindStaleMode::Never,
            me_bind_stale_ttl_secs: 90,
            me_deterministic_writer_sort: true,
            me_writer_pick_mode: MeWriterPickMode::P2c,
            me_writer_pick_sample_size: 3,
            max_client_frame: 16 * 1024 * 1024,
            crypto_pending_buffer: 256 * 1024,
            desync_all_full: false,
            beobachten: true,
            beobachten_minutes: 10,
            beobachten_flush_secs: 15,
            beobachten_file: "cache/beobachten.txt".into(),
            ntp_check: true,
            ntp_servers: vec!["pool.ntp.org".into()],
            auto_degradation_enabled: true,
            degradation_min_unavailable_dc_groups: 2,
        }
    }
}

impl General {
    /// `update_every` if set, else the smaller legacy `proxy_*_auto_reload_secs` (telemt rule).
    pub fn effective_update_every_secs(&self) -> u64 {
        self.update_every.unwrap_or(
            self.proxy_secret_auto_reload_secs
                .min(self.proxy_config_auto_reload_secs),
        )
    }

    /// `general.proxy_secret_url`, or telemt's default.
    pub fn effective_proxy_secret_url(&self) -> &str {
        self.proxy_secret_url
            .as_deref()
            .unwrap_or(DEFAULT_PROXY_SECRET_URL)
    }

    /// `general.proxy_config_v4_url`, or telemt's default.
    pub fn effective_proxy_config_v4_url(&self) -> &str {
        self.proxy_config_v4_url
            .as_deref()
            .unwrap_or(DEFAULT_PROXY_CONFIG_V4_URL)
    }

    /// `general.proxy_config_v6_url`, or telemt's default.
    pub fn effective_proxy_config_v6_url(&self) -> &str {
        self.proxy_config_v6_url
            .as_deref()
            .unwrap_or(DEFAULT_PROXY_CONFIG_V6_URL)
    }

    /// The proxy-secret cache file for a config file at `config_path` (relative paths are
    /// taken from the config file's directory, like every other file the config names).
    pub fn proxy_secret_file(&self, config_path: &std::path::Path) -> PathBuf {
        let p = self
            .proxy_secret_path
            .as_deref()
            .unwrap_or(DEFAULT_PROXY_SECRET_PATH);
        relative_to_config(config_path, p)
    }

    /// The IPv4 proxy-config cache file (see [`General::proxy_secret_file`]).
    pub fn proxy_config_v4_file(&self, config_path: &std::path::Path) -> PathBuf {
        let p = self
            .proxy_config_v4_cache_path
            .as_deref()
            .unwrap_or(DEFAULT_PROXY_CONFIG_V4_CACHE_PATH);
        relative_to_config(config_path, p)
    }

    /// The IPv6 proxy-config cache file (see [`General::proxy_secret_file`]).
    pub fn proxy_config_v6_file(&self, config_path: &std::path::Path) -> PathBuf {
        let p = self
            .proxy_config_v6_cache_path
            .as_deref()
            .unwrap_or(DEFAULT_PROXY_CONFIG_V6_CACHE_PATH);
        relative_to_config(config_path, p)
    }

    /// `proxy_secret_len_max`, capped at what the ME handshake takes
    /// ([`ME_HANDSHAKE_SECRET_LEN_MAX`]): a longer secret would be accepted only to make every
    /// handshake fail.
    pub fn effective_proxy_secret_len_max(&self) -> usize {
        self.proxy_secret_len_max.min(ME_HANDSHAKE_SECRET_LEN_MAX)
    }

    /// Periodic ME reinit interval.
    pub fn effective_me_reinit_every_secs(&self) -> u64 {
        self.me_reinit_every_secs
    }

    /// Stale-writer force-close timeout: `me_reinit_drain_timeout_secs`, with 0 meaning 300 s.
    pub fn effective_me_pool_force_close_secs(&self) -> u64 {
        if self.me_reinit_drain_timeout_secs == 0 {
            300
        } else {
            self.me_reinit_drain_timeout_secs
        }
    }

    /// Where the quota state lives for a config file at `config_path` (see
    /// [`General::quota_state_path`]).
    pub fn quota_state_file(&self, config_path: &std::path::Path) -> PathBuf {
        match &self.quota_state_path {
            Some(p) => relative_to_config(config_path, p),
            None => relative_to_config(config_path, "mtproxyd.quota.json"),
        }
    }

    /// `general.links.public_host` when set and non-empty.
    pub fn public_host(&self) -> Option<&str> {
        self.links
            .public_host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
    }
}

/// `p` as is when absolute, else joined to `config_path`'s directory (docs/DECISIONS.md #32:
/// a service's working directory is rarely the operator's choice).
/// A path the config names, for a config file at `config_path`: relative paths are taken from
/// the config file's directory (every file the config names is resolved this way).
pub fn relative_to_config(
    config_path: &std::path::Path,
    p: impl AsRef<std::path::Path>,
) -> PathBuf {
    let p = p.as_ref();
    if p.is_absolute() {
        return p.to_path_buf();
    }
    config_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .join(p)
}
