//! Periodic upkeep the data plane owns because it is the one feeding the state involved:
//! sweeping live sessions of users that expired or crossed their quota, the per-user counters
//! state file (restored at start, flushed on an interval and at shutdown) and pruning of stale
//! unique-IP entries.
//!
//! Must not: decide limits (that is `policy` / `admission`) or know the state file's format
//! (that is `stats`).

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use config::Config;
use parking_lot::Mutex;
use stats::startup::{ComponentStatus, StartupTracker};
use stats::Stats;
use tokio_util::sync::CancellationToken;

use crate::Inner;

/// The per-user counters state file; saves are serialized (periodic flush vs shutdown flush).
pub(crate) struct CounterState {
    path: PathBuf,
    stats: Arc<Stats>,
    lock: Mutex<()>,
}

impl CounterState {
    pub(crate) fn new(path: PathBuf, stats: Arc<Stats>) -> Self {
        Self {
            path,
            stats,
            lock: Mutex::new(()),
        }
    }

    /// Restores the counters of users still configured and reports the outcome as the
    /// `stats_state` startup component. A broken file is reported, never fatal. When the
    /// state file does not exist yet but `legacy` (the older `<config>.stats.json`) does, that
    /// one is read once and migrated: written to the new path, then renamed `*.migrated`.
    pub(crate) fn restore(&self, cfg: &Config, legacy: &std::path::Path, startup: &StartupTracker) {
        startup.register("stats_state", "Restore per-user counters", false);
        startup.begin("stats_state", SystemTime::now());
        let migrate = !self.path.exists() && legacy.exists() && legacy != self.path;
        let from = if migrate { legacy } else { self.path.as_path() };
        let (status, details) = match self.stats.users().load_state(from) {
            Ok(n) => {
                self.stats
                    .users()
                    .retain(|u| cfg.access.users.contains_key(u));
                if migrate {
                    self.migrate(legacy);
                }
                let how = if migrate {
                    format!(" (migrated from {})", legacy.display())
                } else {
                    String::new()
                };
                (ComponentStatus::Ready, format!("{n} users restored{how}"))
            }
            Err(e) => {
                tracing::warn!(error = %e, "per-user counters not restored; starting from zero");
                (ComponentStatus::Failed, e.to_string())
            }
        };
        startup.finish("stats_state", status, Some(details), SystemTime::now());
    }

    /// Writes the restored counters to the new path and retires the legacy file, so the
    /// migration happens once.
    fn migrate(&self, legacy: &std::path::Path) {
        self.flush();
        if self.path.exists() {
            let mut done = legacy.as_os_str().to_owned();
            done.push(".migrated");
            if let Err(e) = std::fs::rename(legacy, &done) {
                tracing::warn!(error = %e, file = %legacy.display(), "cannot retire the migrated counters file");
            }
            tracing::info!(from = %legacy.display(), to = %self.path.display(), "per-user counters migrated");
        }
    }

    /// Writes the state file now (blocking I/O: call from a blocking context).
    pub(crate) fn flush(&self) {
        let _serial = self.lock.lock();
        if let Err(e) = self.stats.users().save_state(&self.path, SystemTime::now()) {
            tracing::warn!(error = %e, "cannot write per-user counters");
        }
    }

    /// [`Self::flush`] on the blocking pool.
    pub(crate) async fn flush_async(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || me.flush()).await;
    }
}

/// A periodic tick for background tasks that ends when their cancellation token fires.
pub(crate) struct Ticker {
    tick: tokio::time::Interval,
    cancel: CancellationToken,
}

impl Ticker {
    /// Ticks every `every` (at least 10 ms); the first tick is immediate unless `delay_first`.
    pub(crate) fn new(every: Duration, cancel: CancellationToken, delay_first: bool) -> Self {
        let every = every.max(Duration::from_millis(10));
        let mut tick = if delay_first {
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        } else {
            tokio::time::interval(every)
        };
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { tick, cancel }
    }

    /// Waits for the next tick; `false` once cancelled.
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = self.tick.tick() => true,
        }
    }
}

/// Applies due scheduled quota resets, then closes sessions of users that expired or went
/// over quota while connected.
pub(crate) async fn expiry_sweeper(inner: Weak<Inner>, every: Duration, cancel: CancellationToken) {
    let mut tick = Ticker::new(every, cancel, false);
    while tick.next().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let policy = inner.policy.load_full();
        inner.run_scheduled_resets(&policy);
        inner.close_expired_or_over_quota(&policy);
    }
}

/// Flushes the counters and prunes unique-IP entries older than the configured window.
pub(crate) async fn flusher(
    inner: Weak<Inner>,
    state: Arc<CounterState>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = Ticker::new(every, cancel, true);
    while tick.next().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let window = inner.policy.load().ip_window;
        inner.stats.ips().prune(window, Instant::now());
        drop(inner);
        state.flush_async().await;
    }
}
