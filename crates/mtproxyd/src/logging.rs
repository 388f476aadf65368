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
        let _ = self.handle.reload(EnvFilter::new(filter_for(level)));
    }
}

/// The crates whose logs `general.log_level` controls.
const OUR_CRATES: [&str; 6] = ["mtproxyd", "dataplane", "api", "config", "stats", "proto"];

/// The filter for `general.log_level` (telemt's mapping: debug → trace, verbose → debug,
/// normal → info, silent → warn), applied to our crates only. Dependencies stay at `warn`:
/// their trace output is not what an operator asks for with `debug`, and with the log file in
/// the config's directory the file watcher's own trace lines would feed themselves.
fn filter_for(level: config::LogLevel) -> String {
    let ours = match level {
        config::LogLevel::Debug => "trace",
        config::LogLevel::Verbose => "debug",
        config::LogLevel::Normal => "info",
        config::LogLevel::Silent => "warn",
    };
    let mut spec = String::from("warn");
    for c in OUR_CRATES {
        spec.push_str(&format!(",{c}={ours}"));
    }
    spec
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_for_our_crates_only() {
        let f = filter_for(config::LogLevel::Debug);
        assert!(f.starts_with("warn,"), "{f}");
        assert!(
            f.contains("dataplane=trace") && f.contains("config=trace"),
            "{f}"
        );
        assert!(!f.contains("notify") && !f.contains("hyper"), "{f}");
        assert!(EnvFilter::try_new(&f).is_ok());
        assert_eq!(
            filter_for(config::LogLevel::Silent)
                .matches("=warn")
                .count(),
            6
        );
    }
}
