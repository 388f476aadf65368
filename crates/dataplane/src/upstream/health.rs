//! Background health checks: every `recovery` tick, each unhealthy upstream (and each healthy
//! one whose last check is older than `interval`) is probed with one connect to the default
//! DC through it. A success marks it healthy again (recovery); a failure counts towards the
//! unhealthy threshold. Probes do not feed the `stats` connect counters (those count client
//! connects only).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{connect_via, dc_row, order_targets, Entry, Upstreams};
use crate::housekeeping::Ticker;

/// DC probed by health checks.
pub(super) const PROBE_DC: i16 = 2;

impl Upstreams {
    /// Probes every due upstream once, concurrently; returns when all probes finished.
    pub(crate) async fn probe_round(&self, interval: Duration) {
        let set = self.set.load_full();
        let targets = &set.probe_targets;
        let timeout = set.policy.attempt_timeout;
        let threshold = set.policy.threshold;
        let mut probes = tokio::task::JoinSet::new();
        for (idx, slot) in set.slots.iter().enumerate() {
            let due = {
                let h = slot.entry.health.lock();
                !h.healthy
                    || SystemTime::now()
                        .duration_since(h.last_check_at)
                        .is_ok_and(|age| age >= interval)
            };
            if !due {
                continue;
            }
            let entry = Arc::clone(&slot.entry);
            let address = slot.address.clone();
            let row = dc_row(PROBE_DC);
            let ordered = order_targets(&entry, row, targets);
            probes.spawn(async move {
                let Some(&target) = ordered.first() else {
                    return;
                };
                let t0 = Instant::now();
                let res = tokio::time::timeout(timeout, connect_via(&entry.route, target)).await;
                let ok = matches!(res, Ok(Ok(_)));
                record_probe(&entry, idx, &address, target, ok, t0.elapsed(), threshold);
            });
        }
        while probes.join_next().await.is_some() {}
    }
}

fn record_probe(
    entry: &Entry,
    idx: usize,
    address: &str,
    target: std::net::SocketAddr,
    ok: bool,
    rtt: Duration,
    threshold: u32,
) {
    let mut h = entry.health.lock();
    h.last_check_at = SystemTime::now();
    if let Some(r) = dc_row(PROBE_DC) {
        h.dc[r].observe(target, ok, ok.then_some(rtt));
    }
    if ok {
        if !h.healthy {
            tracing::info!(upstream = idx, %address, "upstream recovered (health check)");
        }
        h.healthy = true;
        h.fails = 0;
    } else {
        h.fails = h.fails.saturating_add(1);
        if h.healthy && h.fails >= threshold {
            h.healthy = false;
            tracing::warn!(upstream = idx, %address, fails = h.fails,
                "upstream marked unhealthy (health check)");
        } else {
            tracing::debug!(upstream = idx, %address, fails = h.fails, "upstream health check failed");
        }
    }
}

/// Spawns the checker; it stops when `cancel` fires or the manager is dropped.
pub(crate) fn spawn_health_task(
    upstreams: Weak<Upstreams>,
    cancel: CancellationToken,
    interval: Duration,
    recovery: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = Ticker::new(recovery, cancel.clone(), true);
        while tick.next().await {
            let Some(upstreams) = upstreams.upgrade() else {
                return;
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = upstreams.probe_round(interval) => {}
            }
        }
    })
}
