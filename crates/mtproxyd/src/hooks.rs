//! The binary's own reactions to config publishes: the recent-events ring (capacity and the
//! `config.reload.*` events), the log level, and a warning when API listener settings that
//! only apply on restart changed. Runtime effects on clients are not here: the data plane's
//! publish hook owns them.

use std::net::SocketAddr;
use std::sync::Arc;

use config::{ChangeSource, ConfigEvent, ConfigStore};
use stats::Stats;

use crate::logging::LogControl;

/// Registers the hook (it runs synchronously inside every publish).
pub fn install(
    store: &ConfigStore,
    stats: &Arc<Stats>,
    log: LogControl,
    api_bind: (bool, SocketAddr),
) {
    let stats = Arc::downgrade(stats);
    store.add_listener(Box::new(move |ev: &ConfigEvent<'_>| {
        let Some(stats) = stats.upgrade() else {
            return;
        };
        match ev {
            ConfigEvent::Applied { snapshot, source } => {
                let cfg = &snapshot.config;
                stats
                    .events()
                    .set_capacity(cfg.server.api.runtime_edge_events_capacity);
                let source = match source {
                    ChangeSource::Api => "api",
                    ChangeSource::File => "file",
                };
                let short = snapshot.revision.get(..12).unwrap_or(&snapshot.revision);
                stats.events().push(
                    "config.reload.applied",
                    &format!("source={source} revision={short}"),
                );
                log.set_level(cfg.general.log_level);
                let api = &cfg.server.api;
                if (api.enabled, api.listen) != api_bind {
                    tracing::warn!(
                        "server.api.enabled/listen changed; the API listener changes on restart"
                    );
                }
            }
            // The store itself logs the failure with the file name.
            ConfigEvent::ReloadFailed { error } => {
                stats
                    .events()
                    .push("config.reload.failed", &format!("error={error}"));
            }
        }
    }));
}
