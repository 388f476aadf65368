//! The validated configuration model. Field names are exactly telemt's TOML key names, nested like
//! the TOML sections, so `cfg.server.api.read_only` is `[server.api] read_only`.
//!
//! Serde produces an *unvalidated* `Config` (see `crate::load`); only `load::validate` turns it
//! into the value the store publishes (`Arc<Config>`), after range checks and telemt's
//! normalisations (synthesised listeners, default upstream, merged STUN list, ...).

mod general;
mod sections;

pub use general::{
    relative_to_config, General, Links, Modes, ShowLink, Telemetry, DEFAULT_PROXY_CONFIG_V4_URL,
    DEFAULT_PROXY_CONFIG_V6_URL, DEFAULT_PROXY_SECRET_URL, ME_HANDSHAKE_SECRET_LEN_MAX,
};
pub(crate) use sections::default_stun_servers;
pub use sections::{
    effective_cap, Access, ApiSettings, Censorship, CidrRateKey, Listener, Network, RateLimitBps,
    Server, Timeouts, UpstreamConfig, UpstreamKind,
};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::de;

/// The whole configuration (main file with its `include`d files merged).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub general: General,
    pub network: Network,
    pub server: Server,
    pub timeouts: Timeouts,
    pub censorship: Censorship,
    pub access: Access,
    pub upstreams: Vec<UpstreamConfig>,
    /// Legacy top-level `show_link`; migrated into `general.links.show` at load.
    pub show_link: Option<ShowLink>,
    /// DC id (as a string, e.g. `"203"`) → one or more `ip:port` addresses.
    #[serde(deserialize_with = "de::dc_overrides")]
    pub dc_overrides: BTreeMap<String, Vec<String>>,
    /// Default DC for unmapped non-standard DCs (telemt: `None` means 2).
    pub default_dc: Option<u8>,
    /// Files pulled in by `include = "..."` lines (resolved paths, in inclusion order). Read-only:
    /// API edits always go to the main file. Not a TOML key of its own.
    #[serde(skip)]
    pub includes: Vec<PathBuf>,
}
