//! Logging: `tracing-subscriber` with a reloadable filter. `RUST_LOG`, when set, wins and is
//! never overridden; otherwise `general.log_level` (debug/verbose/normal/silent) selects the
//! level and follows config reloads.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// Handle to change the level after a config reload.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    from_env: bool,
}

impl LogControl {
    /// Applies `general.log_level` unless `RUST_LOG` is in charge.
    pub fn set_level(&self, level: config::LogLevel) {
        if self.from_env {
            return;
        }
        let _ = self.handle.reload(EnvFilter::new(level.to_filter_str()));
    }
}

/// Installs the global subscriber (once per process) starting at `info` (or `RUST_LOG`).
pub fn init() -> LogControl {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let from_env = env.is_some();
    let filter = match env {
        Some(spec) => EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::new("info"),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
        )
        .try_init();
    LogControl { handle, from_env }
}
