//! A test middle proxy (Telegram's side of docs/PROTOCOL.md §7), a client
//! driver for it, and the proxy-secret / proxy-config files that point a
//! proxy at it.
//!
//! Owns: [`TestMe`] (server), [`MeClient`] (the proxy's side of one link, for
//! tests), [`MeFiles`] and the config text generator, and [`MeHttpFiles`] (a
//! loopback stand-in for the download URLs of those files). Must not: ship in the
//! binary or implement the data plane's writer pool.
//!
//! Unlike `client` and `dc`, this module builds on `proto::me` (both
//! handshake roles live there, pinned to the test vectors of
//! docs/PROTOCOL.md §7.3, §7.4 and §7.6), see docs/DECISIONS.md #37.

mod driver;
mod files;
mod http_files;
mod relay;
mod server;

pub use driver::{MeClient, MeClientError, MeClientOptions, Received, DEFAULT_TIMEOUT};
pub use files::{proxy_config_text, random_proxy_secret, MeFiles, PROXY_SECRET_LEN};
pub use http_files::{http_date, MeHttpFiles, Reply, CONFIG_V4_PATH, CONFIG_V6_PATH, SECRET_PATH};
pub use server::{
    MeConnRecord, MeCounters, MeLinkRecord, MeOptions, Misbehave, TestMe, HANDSHAKE_TIMEOUT,
    QUICK_ACK_CONFIRM,
};

#[cfg(test)]
mod tests;
