//! TTL caches for the minimal-runtime and runtime-edge payloads, plus the KDF EWMA state of
//! the self-test. All locks are std mutexes taken with `try_lock` only and released before any
//! recompute, so a render never waits for another request.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, SystemTime};

use super::edge::RuntimeEdgeConnectionsSummaryPayload;
use super::me::MinimalAllPayload;
use super::selftest::KDF_EWMA_TAU_SECS;

#[derive(Debug, Clone)]
struct Entry<T> {
    expires_at: SystemTime,
    generated_at_epoch_secs: u64,
    payload: T,
}

#[derive(Debug, Default)]
struct KdfEwma {
    last_epoch_secs: Option<u64>,
    last_total: u64,
    rate_per_min: f64,
}

/// Outcome of a runtime-edge lookup.
#[derive(Debug, Clone)]
pub(crate) enum EdgeLookup {
    /// Payload (its `cache` block already filled) and its generation time.
    Payload(u64, RuntimeEdgeConnectionsSummaryPayload),
    /// A recompute is running elsewhere and there is nothing cached to fall back on.
    Unavailable,
}

/// Per-process view caches (share one instance between requests).
#[derive(Debug, Default)]
pub struct ViewCaches {
    minimal: Mutex<Option<Entry<MinimalAllPayload>>>,
    edge: Mutex<Option<Entry<RuntimeEdgeConnectionsSummaryPayload>>>,
    /// Held while a runtime-edge payload is being recomputed (single flight).
    edge_recompute: Mutex<()>,
    kdf: Mutex<KdfEwma>,
}

/// `try_lock` that treats a poisoned mutex as usable (the guarded data is plain cache state)
/// and a busy one as `None`.
fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

fn expiry(now: SystemTime, ttl_ms: u64) -> SystemTime {
    now.checked_add(Duration::from_millis(ttl_ms))
        .unwrap_or(now)
}

impl ViewCaches {
    pub fn new() -> Self {
        Self::default()
    }

    /// The minimal-runtime payload: a fresh cache entry when `ttl_ms > 0`, else `compute()`
    /// (stored for `ttl_ms`). `None` when `compute` has no source (no ME pool).
    pub(crate) fn minimal(
        &self,
        now: SystemTime,
        ttl_ms: u64,
        compute: impl FnOnce() -> Option<(u64, MinimalAllPayload)>,
    ) -> Option<(u64, MinimalAllPayload)> {
        if ttl_ms > 0 {
            if let Some(guard) = try_lock(&self.minimal) {
                if let Some(e) = guard.as_ref().filter(|e| now < e.expires_at) {
                    return Some((e.generated_at_epoch_secs, e.payload.clone()));
                }
            }
        }
        let (generated, payload) = compute()?;
        if ttl_ms > 0 {
            if let Some(mut guard) = try_lock(&self.minimal) {
                *guard = Some(Entry {
                    expires_at: expiry(now, ttl_ms),
                    generated_at_epoch_secs: generated,
                    payload: payload.clone(),
                });
            }
        }
        Some((generated, payload))
    }

    /// The runtime-edge connections payload with single-flight recompute:
    /// fresh entry → served from cache; otherwise recompute under `edge_recompute`; when that
    /// is busy, serve any (stale) entry, or report unavailable.
    pub(crate) fn edge(
        &self,
        now: SystemTime,
        ttl_ms: u64,
        compute: impl FnOnce() -> (u64, RuntimeEdgeConnectionsSummaryPayload),
    ) -> EdgeLookup {
        if ttl_ms > 0 {
            if let Some(guard) = try_lock(&self.edge) {
                if let Some(e) = guard.as_ref().filter(|e| now < e.expires_at) {
                    let mut payload = e.payload.clone();
                    payload.cache.served_from_cache = true;
                    payload.cache.stale_cache_used = false;
                    return EdgeLookup::Payload(e.generated_at_epoch_secs, payload);
                }
            }
        }
        let Some(_single_flight) = try_lock(&self.edge_recompute) else {
            let stale = try_lock(&self.edge).and_then(|g| g.clone());
            return match stale {
                Some(e) => {
                    let mut payload = e.payload;
                    payload.cache.served_from_cache = true;
                    payload.cache.stale_cache_used = true;
                    EdgeLookup::Payload(e.generated_at_epoch_secs, payload)
                }
                None => EdgeLookup::Unavailable,
            };
        };
        let (generated, mut payload) = compute();
        payload.cache.served_from_cache = false;
        payload.cache.stale_cache_used = false;
        if ttl_ms > 0 {
            if let Some(mut guard) = try_lock(&self.edge) {
                *guard = Some(Entry {
                    expires_at: expiry(now, ttl_ms),
                    generated_at_epoch_secs: generated,
                    payload: payload.clone(),
                });
            }
        }
        EdgeLookup::Payload(generated, payload)
    }

    /// Feeds the cumulative KDF error total observed at `now_secs` and returns the EWMA of the
    /// error rate per minute. The first observation only sets the baseline (rate 0).
    pub(crate) fn kdf_ewma(&self, now_secs: u64, total: u64) -> f64 {
        let Some(mut st) = try_lock(&self.kdf) else {
            return 0.0;
        };
        let Some(last) = st.last_epoch_secs else {
            st.last_epoch_secs = Some(now_secs);
            st.last_total = total;
            return st.rate_per_min;
        };
        let dt = now_secs.saturating_sub(last);
        if dt == 0 {
            return st.rate_per_min;
        }
        let delta = total.saturating_sub(st.last_total) as f64;
        let instant = delta * 60.0 / dt as f64;
        let alpha = 1.0 - (-(dt as f64) / KDF_EWMA_TAU_SECS).exp();
        st.rate_per_min += alpha * (instant - st.rate_per_min);
        st.last_epoch_secs = Some(now_secs);
        st.last_total = total;
        st.rate_per_min
    }

    #[cfg(test)]
    pub(crate) fn hold_edge_recompute(&self) -> MutexGuard<'_, ()> {
        self.edge_recompute
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
