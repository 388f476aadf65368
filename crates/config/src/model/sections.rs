//! `[network]`, `[server]` (+ `[server.api]`, `[[server.listeners]]`), `[timeouts]`,
//! `[censorship]`, `[access]` and `[[upstreams]]`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::de;
use crate::types::{AdTag, IpPolicyMode, UnknownSniAction, UserSecret};

/// `[network]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Network {
    pub ipv4: bool,
    /// `None` = auto-detect.
    pub ipv6: Option<bool>,
    /// 4 or 6.
    pub prefer: u8,
    pub multipath: bool,
    pub stun_use: bool,
    /// Effective STUN list (legacy `general.middle_proxy_nat_stun*` merged in at load).
    pub stun_servers: Vec<String>,
    pub stun_tcp_fallback: bool,
    pub http_ip_detect_urls: Vec<String>,
    pub cache_public_ip_path: String,
    pub dns_overrides: Vec<String>,
}

/// telemt's default STUN pool.
pub(crate) fn default_stun_servers() -> Vec<String> {
    [
        "stun.l.google.com:5349",
        "stun1.l.google.com:3478",
        "stun.gmx.net:3478",
        "stun.l.google.com:19302",
        "stun.1und1.de:3478",
        "stun1.l.google.com:19302",
        "stun2.l.google.com:19302",
        "stun3.l.google.com:19302",
        "stun4.l.google.com:19302",
        "stun.services.mozilla.com:3478",
        "stun.stunprotocol.org:3478",
        "stun.nextcloud.com:3478",
        "stun.voip.eutelia.it:3478",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Default for Network {
    fn default() -> Self {
        Network {
            ipv4: true,
            ipv6: Some(false),
            prefer: 4,
            multipath: false,
            stun_use: true,
            stun_servers: default_stun_servers(),
            stun_tcp_fallback: true,
            http_ip_detect_urls: vec![
                "https://ifconfig.me/ip".into(),
                "https://api.ipify.org".into(),
            ],
            cache_public_ip_path: "cache/public_ip.txt".into(),
            dns_overrides: Vec::new(),
        }
    }
}

/// `[server.api]` (alias `[server.admin_api]`). Defaults follow docs/API.md. `Debug` redacts
/// `auth_header`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    pub enabled: bool,
    #[serde(deserialize_with = "de::api_listen")]
    pub listen: SocketAddr,
    /// Bare IPs are read as /32 or /128. Empty = allow all.
    #[serde(deserialize_with = "de::api_whitelist")]
    pub whitelist: Vec<IpNet>,
    pub auth_header: String,
    pub request_body_limit_bytes: usize,
    pub minimal_runtime_enabled: bool,
    pub minimal_runtime_cache_ttl_ms: u64,
    pub runtime_edge_enabled: bool,
    pub runtime_edge_cache_ttl_ms: u64,
    pub runtime_edge_top_n: usize,
    pub runtime_edge_events_capacity: usize,
    pub read_only: bool,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = if self.auth_header.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("ApiSettings")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("whitelist", &self.whitelist)
            .field("auth_header", &auth)
            .field("request_body_limit_bytes", &self.request_body_limit_bytes)
            .field("minimal_runtime_enabled", &self.minimal_runtime_enabled)
            .field(
                "minimal_runtime_cache_ttl_ms",
                &self.minimal_runtime_cache_ttl_ms,
            )
            .field("runtime_edge_enabled", &self.runtime_edge_enabled)
            .field("runtime_edge_cache_ttl_ms", &self.runtime_edge_cache_ttl_ms)
            .field("runtime_edge_top_n", &self.runtime_edge_top_n)
            .field(
                "runtime_edge_events_capacity",
                &self.runtime_edge_events_capacity,
            )
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            whitelist: vec![
                IpNet::from(IpAddr::from([127, 0, 0, 1])),
                IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            auth_header: String::new(),
            request_body_limit_bytes: 64 * 1024,
            minimal_runtime_enabled: false,
            minimal_runtime_cache_ttl_ms: 1000,
            runtime_edge_enabled: false,
            runtime_edge_cache_ttl_ms: 1000,
            runtime_edge_top_n: 10,
            runtime_edge_events_capacity: 256,
            read_only: false,
        }
    }
}

/// One `[[server.listeners]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Listener {
    pub ip: IpAddr,
    /// Host or IP announced in links (after load, `announce_ip` is migrated here when unset).
    #[serde(default)]
    pub announce: Option<String>,
    /// Deprecated spelling of `announce`.
    #[serde(default)]
    pub announce_ip: Option<IpAddr>,
    /// Overrides `server.proxy_protocol` for this listener.
    #[serde(default)]
    pub proxy_protocol: Option<bool>,
    #[serde(default)]
    pub reuse_allow: bool,
}

impl Listener {
    /// A plain listener on `ip` (used when `listeners` is synthesised from `listen_addr_*`).
    pub fn on(ip: IpAddr) -> Self {
        Listener {
            ip,
            announce: None,
            announce_ip: None,
            proxy_protocol: None,
            reuse_allow: false,
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Server {
    pub port: u16,
    pub listen_addr_ipv4: Option<String>,
    pub listen_addr_ipv6: Option<String>,
    pub listen_unix_sock: Option<String>,
    pub listen_unix_sock_perm: Option<String>,
    pub listen_tcp: Option<bool>,
    pub proxy_protocol: bool,
    pub proxy_protocol_header_timeout_ms: u64,
    /// Peers allowed to send PROXY headers. Omitted = trust all; explicit `[]` = reject all.
    #[serde(deserialize_with = "de::trusted_cidrs")]
    pub proxy_protocol_trusted_cidrs: Vec<IpNet>,
    pub metrics_port: Option<u16>,
    pub metrics_listen: Option<String>,
    #[serde(deserialize_with = "de::metrics_whitelist")]
    pub metrics_whitelist: Vec<IpNet>,
    #[serde(alias = "admin_api")]
    pub api: ApiSettings,
    /// After load: never empty when TCP listening is on (synthesised from `listen_addr_*`).
    pub listeners: Vec<Listener>,
    /// 0 = unlimited.
    pub max_connections: u32,
    pub accept_permit_timeout_ms: u64,
    /// `listen(2)` backlog of client listeners; 0 = the system maximum.
    pub listen_backlog: u32,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            port: 443,
            listen_addr_ipv4: Some("0.0.0.0".into()),
            listen_addr_ipv6: Some("::".into()),
            listen_unix_sock: None,
            listen_unix_sock_perm: None,
            listen_tcp: None,
            proxy_protocol: false,
            proxy_protocol_header_timeout_ms: 500,
            proxy_protocol_trusted_cidrs: vec![
                "0.0.0.0/0".parse().expect("static CIDR"),
                "::/0".parse().expect("static CIDR"),
            ],
            metrics_port: None,
            metrics_listen: None,
            metrics_whitelist: vec![
                "127.0.0.1/32".parse().expect("static CIDR"),
                "::1/128".parse().expect("static CIDR"),
            ],
            api: ApiSettings::default(),
            listeners: Vec::new(),
            max_connections: 10_000,
            accept_permit_timeout_ms: 250,
            listen_backlog: 1024,
        }
    }
}

/// `[timeouts]` (seconds unless the key says otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    pub client_handshake: u64,
    pub relay_idle_policy_v2_enabled: bool,
    pub relay_client_idle_soft_secs: u64,
    pub relay_client_idle_hard_secs: u64,
    pub relay_idle_grace_after_downstream_activity_secs: u64,
    pub tg_connect: u64,
    pub client_keepalive: u64,
    pub client_ack: u64,
    pub me_one_retry: u8,
    pub me_one_timeout_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_handshake: 30,
            relay_idle_policy_v2_enabled: true,
            relay_client_idle_soft_secs: 120,
            relay_client_idle_hard_secs: 360,
            relay_idle_grace_after_downstream_activity_secs: 30,
            tg_connect: 10,
            client_keepalive: 15,
            client_ack: 90,
            me_one_retry: 12,
            me_one_timeout_ms: 1200,
        }
    }
}

/// `[censorship]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Censorship {
    pub tls_domain: String,
    /// Extra TLS domains (deduplicated at load, never containing `tls_domain`).
    pub tls_domains: Vec<String>,
    pub unknown_sni_action: UnknownSniAction,
    pub tls_fetch_scope: String,
    pub mask: bool,
    /// After load: defaults to `tls_domain` when neither it nor `mask_unix_sock` is set.
    pub mask_host: Option<String>,
    pub mask_port: u16,
    pub mask_unix_sock: Option<String>,
    pub fake_cert_len: usize,
    pub tls_emulation: bool,
    pub tls_front_dir: String,
    /// Records to ee clients sized like a web server's: 1369-byte payloads for the first 512 KiB
    /// and after a second of silence, then 16 KiB (docs/DECISIONS.md #40).
    pub tls_record_shaping: bool,
    /// Unset (both): answer as fast as the learned origin did (docs/PROTOCOL.md §4.9). Set:
    /// a fixed uniform range overriding it; a missing bound takes 8 / 24 ms.
    pub server_hello_delay_min_ms: Option<u64>,
    pub server_hello_delay_max_ms: Option<u64>,
    pub tls_new_session_tickets: u8,
    pub tls_full_cert_ttl_secs: u64,
    pub alpn_enforce: bool,
    /// PROXY header towards the mask host: 0 off, 1 v1, 2 v2.
    pub mask_proxy_protocol: u8,
}

impl Default for Censorship {
    fn default() -> Self {
        Censorship {
            tls_domain: "petrovich.ru".into(),
            tls_domains: Vec::new(),
            unknown_sni_action: UnknownSniAction::Drop,
            tls_fetch_scope: String::new(),
            mask: true,
            mask_host: None,
            mask_port: 443,
            mask_unix_sock: None,
            fake_cert_len: 2048,
            tls_emulation: true,
            tls_front_dir: "tlsfront".into(),
            tls_record_shaping: true,
            server_hello_delay_min_ms: None,
            server_hello_delay_max_ms: None,
            tls_new_session_tickets: 0,
            tls_full_cert_ttl_secs: 90,
            alpn_enforce: true,
            mask_proxy_protocol: 0,
        }
    }
}

impl Censorship {
    /// The `server_hello_delay_*` range when either bound is set.
    pub fn hello_delay_override_ms(&self) -> Option<(u64, u64)> {
        if self.server_hello_delay_min_ms.is_none() && self.server_hello_delay_max_ms.is_none() {
            return None;
        }
        Some((
            self.server_hello_delay_min_ms.unwrap_or(8),
            self.server_hello_delay_max_ms.unwrap_or(24),
        ))
    }

    /// `tls_domain` followed by the extra `tls_domains` (what TLS links are generated for).
    pub fn all_tls_domains(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.tls_domain.as_str()).chain(self.tls_domains.iter().map(String::as_str))
    }
}

/// `[access]`: users and the per-user / global limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Access {
    /// username → secret. A secret that is not 32 hex makes the config invalid.
    #[serde(deserialize_with = "de::users")]
    pub users: BTreeMap<String, UserSecret>,
    #[serde(deserialize_with = "de::user_ad_tags")]
    pub user_ad_tags: BTreeMap<String, AdTag>,
    pub user_max_tcp_conns: BTreeMap<String, usize>,
    #[serde(deserialize_with = "de::user_expirations")]
    pub user_expirations: BTreeMap<String, OffsetDateTime>,
    pub user_data_quota: BTreeMap<String, u64>,
    pub user_max_unique_ips: BTreeMap<String, usize>,
    /// `false` disables a user (secret and limits kept; new clients are masked). Missing = on.
    pub user_enabled: BTreeMap<String, bool>,
    /// Per-user bandwidth caps (bits per second; 0 = that direction unlimited).
    pub user_rate_limits: BTreeMap<String, RateLimitBps>,
    /// Per-source caps: an explicit CIDR (longest prefix wins) or an auto-template `*4/N`,
    /// `*6/N`, `*/N` (one bucket per matching subnet). Validated by [`CidrRateKey::parse`].
    pub cidr_rate_limits: BTreeMap<String, RateLimitBps>,
    /// Scheduled quota resets (ours): `daily[@HH:MM]`, `weekly:<mon..sun>[@HH:MM]`,
    /// `monthly:<1..28>[@HH:MM]`, UTC.
    #[serde(deserialize_with = "de::quota_resets")]
    pub user_quota_reset: BTreeMap<String, crate::schedule::QuotaResetSchedule>,
    /// Default per-user TCP connection cap; 0 = none.
    pub user_max_tcp_conns_global_each: usize,
    /// Default per-user unique-IP cap; 0 = none.
    pub user_max_unique_ips_global_each: usize,
    pub user_max_unique_ips_mode: IpPolicyMode,
    pub user_max_unique_ips_window_secs: u64,
    /// Replay-cache entries; 0 switches replay protection off.
    pub replay_check_len: usize,
    pub replay_window_secs: u64,
    pub ignore_time_skew: bool,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            users: BTreeMap::new(),
            user_ad_tags: BTreeMap::new(),
            user_max_tcp_conns: BTreeMap::new(),
            user_expirations: BTreeMap::new(),
            user_data_quota: BTreeMap::new(),
            user_max_unique_ips: BTreeMap::new(),
            user_enabled: BTreeMap::new(),
            user_rate_limits: BTreeMap::new(),
            cidr_rate_limits: BTreeMap::new(),
            user_quota_reset: BTreeMap::new(),
            user_max_tcp_conns_global_each: 0,
            user_max_unique_ips_global_each: 0,
            user_max_unique_ips_mode: IpPolicyMode::ActiveWindow,
            user_max_unique_ips_window_secs: 30,
            replay_check_len: 65_536,
            replay_window_secs: 120,
            ignore_time_skew: false,
        }
    }
}

/// The effective value of a per-user cap (docs/DECISIONS.md #20): the user's own entry when set,
/// else the `*_global_each` value when > 0, else `None`. A per-user `0` stays `Some(0)`,
/// which (as in telemt) means "no limit" to the data plane. Callers that already hold the
/// user's entry (the data plane walks the tables in order) use this directly.
pub fn effective_cap(per_user: Option<usize>, global_each: usize) -> Option<usize> {
    per_user.or((global_each > 0).then_some(global_each))
}

impl Access {
    /// Whether `user` is enabled (an entry `false` in `access.user_enabled` disables it).
    pub fn user_enabled(&self, user: &str) -> bool {
        self.user_enabled.get(user).copied().unwrap_or(true)
    }

    /// Effective per-user TCP cap, see [`effective_cap`].
    pub fn effective_max_tcp_conns(&self, user: &str) -> Option<usize> {
        effective_cap(
            self.user_max_tcp_conns.get(user).copied(),
            self.user_max_tcp_conns_global_each,
        )
    }

    /// Effective per-user unique-IP cap, see [`effective_cap`].
    pub fn effective_max_unique_ips(&self, user: &str) -> Option<usize> {
        effective_cap(
            self.user_max_unique_ips.get(user).copied(),
            self.user_max_unique_ips_global_each,
        )
    }
}

/// A bandwidth cap in bits per second per direction (telemt's `RateLimitBps`); 0 = none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBps {
    #[serde(default)]
    pub up_bps: u64,
    #[serde(default)]
    pub down_bps: u64,
}

/// A key of `access.cidr_rate_limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidrRateKey {
    /// One shared bucket for every source inside the network.
    Net(IpNet),
    /// One bucket per source subnet of this prefix length: (IPv4 prefix, IPv6 prefix);
    /// `None` = the template does not apply to that family.
    Template(Option<u8>, Option<u8>),
}

impl CidrRateKey {
    /// Parses a CIDR (`203.0.113.0/24`, a bare IP is a /32 or /128) or a template (`*4/N`,
    /// `*6/N`, `*/N` where IPv6 uses `/(N*4)`).
    pub fn parse(key: &str) -> Result<Self, String> {
        let k = key.trim();
        let len = |s: &str, max: u8| -> Result<u8, String> {
            s.parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("prefix length must be 0..={max}"))
        };
        if let Some(n) = k.strip_prefix("*4/") {
            return Ok(Self::Template(Some(len(n, 32)?), None));
        }
        if let Some(n) = k.strip_prefix("*6/") {
            return Ok(Self::Template(None, Some(len(n, 128)?)));
        }
        if let Some(n) = k.strip_prefix("*/") {
            let n = len(n, 32)?;
            return Ok(Self::Template(Some(n), Some(n * 4)));
        }
        if let Ok(net) = k.parse::<IpNet>() {
            return Ok(Self::Net(net.trunc()));
        }
        k.parse::<IpAddr>()
            .map(|ip| Self::Net(IpNet::from(ip)))
            .map_err(|_| "must be a CIDR, an IP, or a template *4/N, *6/N, */N".to_owned())
    }
}

/// How an upstream reaches Telegram. `Debug` redacts SOCKS passwords and shadowsocks URLs.
#[derive(Clone, PartialEq, Eq)]
pub enum UpstreamKind {
    Direct {
        interface: Option<String>,
        bind_addresses: Option<Vec<String>>,
    },
    Socks4 {
        address: String,
        interface: Option<String>,
        user_id: Option<String>,
    },
    Socks5 {
        address: String,
        interface: Option<String>,
        username: Option<String>,
        password: Option<String>,
    },
    Shadowsocks {
        url: String,
        interface: Option<String>,
    },
}

impl std::fmt::Debug for UpstreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamKind::Direct {
                interface,
                bind_addresses,
            } => f
                .debug_struct("Direct")
                .field("interface", interface)
                .field("bind_addresses", bind_addresses)
                .finish(),
            UpstreamKind::Socks4 {
                address,
                interface,
                user_id,
            } => f
                .debug_struct("Socks4")
                .field("address", address)
                .field("interface", interface)
                .field("user_id", user_id)
                .finish(),
            UpstreamKind::Socks5 {
                address,
                interface,
                username,
                password,
            } => f
                .debug_struct("Socks5")
                .field("address", address)
                .field("interface", interface)
                .field("username", username)
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .finish(),
            UpstreamKind::Shadowsocks { interface, .. } => f
                .debug_struct("Shadowsocks")
                .field("url", &"<redacted>")
                .field("interface", interface)
                .finish(),
        }
    }
}

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "de::RawUpstream")]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    pub weight: u16,
    pub enabled: bool,
    pub scopes: String,
}

impl UpstreamConfig {
    /// The implicit upstream used when none is configured.
    pub fn direct() -> Self {
        UpstreamConfig {
            kind: UpstreamKind::Direct {
                interface: None,
                bind_addresses: None,
            },
            weight: 1,
            enabled: true,
            scopes: String::new(),
        }
    }

    /// `direct`, `socks4`, `socks5` or `shadowsocks` (the TOML `type`).
    pub fn route_kind(&self) -> &'static str {
        match self.kind {
            UpstreamKind::Direct { .. } => "direct",
            UpstreamKind::Socks4 { .. } => "socks4",
            UpstreamKind::Socks5 { .. } => "socks5",
            UpstreamKind::Shadowsocks { .. } => "shadowsocks",
        }
    }

    /// Address without credentials: `"direct"`, the SOCKS `host:port`, or the shadowsocks
    /// server `host:port` (the URL's userinfo is never returned).
    pub fn address_display(&self) -> String {
        match &self.kind {
            UpstreamKind::Direct { .. } => "direct".to_string(),
            UpstreamKind::Socks4 { address, .. } | UpstreamKind::Socks5 { address, .. } => {
                address.clone()
            }
            UpstreamKind::Shadowsocks { url, .. } => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
                rest.split(['/', '?', '#']).next().unwrap_or("").to_string()
            }
        }
    }
}
