//! `[[upstreams]]`: how the proxy reaches Telegram (docs/PROTOCOL.md §9) — direct (optionally bound
//! to an interface / source addresses), SOCKS4, SOCKS5 (username/password) or Shadowsocks.
//!
//! Owns: the runtime upstream set (rebuilt on every config publish; an entry whose connection
//! settings are unchanged keeps its health, latency and IP-family state), weighted selection
//! among healthy unscoped upstreams (latency-scaled), the connect cycle (retries, backoff,
//! budget, fail-fast on hard errors), health bookkeeping and recovery probes, the upstream
//! counters of `stats`, the API snapshot and the SOCKS BND observations of §9.3.
//! Must not: write the obfuscated2 init or relay bytes (see `dc` and `relay`).
//!
//! ```text
//!  session ─► select (healthy ∧ unscoped, weight × 1000/latency_ms) ─► attempt 1..=N
//!                  each attempt: connect(proxy | DC) ─► [SOCKS / SS handshake] ─► OutboundStream
//!  cycle failed ─► fails += 1 ─► fails ≥ threshold ⇒ unhealthy ─► probes every tick until ok
//! ```

mod connect;
mod health;
mod snapshot;
mod socks;
mod ss;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use config::{Config, UpstreamConfig, UpstreamKind};
use parking_lot::Mutex;
use proto::socks::SocksError;
use rand::Rng;
use stats::startup::{ComponentStatus, StartupTracker};
use stats::Stats;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::outbound::OutboundStream;
use connect::{connect_via, Route};
use snapshot::classify_bnd;
pub use snapshot::{
    BndAddrStatus, BndObservation, BndPortStatus, IpPreference, UpstreamDcRow, UpstreamRouteKind,
    UpstreamRow,
};

/// DC rows kept per upstream (DC 1..=5; media DCs share their main DC's row).
const NUM_DCS: usize = 5;
/// Weight of a new latency sample in the EMA.
const EMA_ALPHA: f64 = 0.3;

/// Why an upstream connect attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("no enabled unscoped upstream is configured")]
    NoUpstream,
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connect to {0} timed out")]
    Timeout(String),
    #[error("proxy I/O error: {0}")]
    ProxyIo(std::io::Error),
    #[error("{0}")]
    Socks(#[from] SocksError),
    #[error("malformed proxy reply: {0}")]
    Malformed(&'static str),
    #[error("SOCKS4 cannot reach the IPv6 target {0}")]
    Socks4Ipv6(SocketAddr),
    #[error("no usable bind address for {0}")]
    NoBindAddress(SocketAddr),
    #[error("connect budget exhausted")]
    Budget,
    #[error("no DC address of a family this upstream can reach")]
    NoTarget,
}

impl UpstreamError {
    /// Errors retrying cannot fix soon (`general.upstream_connect_failfast_hard_errors`).
    fn is_hard(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            Self::Connect { source, .. } => matches!(
                source.kind(),
                K::ConnectionRefused
                    | K::NetworkUnreachable
                    | K::HostUnreachable
                    | K::AddrNotAvailable
                    | K::PermissionDenied
            ),
            Self::Socks(e) => matches!(
                e,
                SocksError::AuthFailed(_)
                    | SocksError::NoAcceptableMethod(_)
                    | SocksError::CredentialTooLong
            ),
            Self::Socks4Ipv6(_) | Self::NoBindAddress(_) | Self::NoUpstream | Self::NoTarget => {
                true
            }
            _ => false,
        }
    }
}

/// Learned per-DC state of one upstream.
#[derive(Clone, Copy, Default)]
struct DcState {
    ema_ms: Option<f64>,
    v4_ok: Option<bool>,
    v6_ok: Option<bool>,
}

impl DcState {
    fn preference(&self) -> IpPreference {
        match (self.v4_ok, self.v6_ok) {
            (None, None) => IpPreference::Unknown,
            (Some(true), Some(true)) => IpPreference::BothWork,
            (Some(true), _) => IpPreference::PreferV4,
            (_, Some(true)) => IpPreference::PreferV6,
            _ => IpPreference::Unavailable,
        }
    }

    fn observe(&mut self, target: SocketAddr, ok: bool, rtt: Option<Duration>) {
        if target.is_ipv6() {
            self.v6_ok = Some(ok);
        } else {
            self.v4_ok = Some(ok);
        }
        if let Some(rtt) = rtt {
            let ms = rtt.as_secs_f64() * 1000.0;
            self.ema_ms = Some(match self.ema_ms {
                Some(old) => old * (1.0 - EMA_ALPHA) + ms * EMA_ALPHA,
                None => ms,
            });
        }
    }
}

struct Health {
    healthy: bool,
    fails: u32,
    last_check_at: SystemTime,
    dc: [DcState; NUM_DCS],
}

impl Health {
    fn effective_latency(&self, dc: Option<usize>) -> Option<f64> {
        if let Some(ms) = dc.and_then(|i| self.dc[i].ema_ms) {
            return Some(ms);
        }
        let known: Vec<f64> = self.dc.iter().filter_map(|d| d.ema_ms).collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
    }
}

/// One runtime upstream; survives publishes while its connection settings are unchanged.
pub(crate) struct Entry {
    kind: UpstreamKind,
    route: Route,
    health: Mutex<Health>,
}

impl Entry {
    fn new(kind: &UpstreamKind, route: Route) -> Self {
        Self {
            kind: kind.clone(),
            route,
            health: Mutex::new(Health {
                healthy: true,
                fails: 0,
                last_check_at: SystemTime::now(),
                dc: [DcState::default(); NUM_DCS],
            }),
        }
    }
}

struct Slot {
    entry: Arc<Entry>,
    weight: u16,
    scopes: String,
    address: String,
}

impl Slot {
    fn unscoped(&self) -> bool {
        self.scopes.trim().is_empty()
    }
}

/// Connect policy from `[general]` and `[timeouts]`.
#[derive(Clone, Copy)]
struct ConnectPolicy {
    attempts: u32,
    backoff: Duration,
    budget: Duration,
    threshold: u32,
    failfast: bool,
    attempt_timeout: Duration,
}

impl ConnectPolicy {
    fn from_config(cfg: &Config) -> Self {
        let g = &cfg.general;
        Self {
            attempts: g.upstream_connect_retry_attempts.max(1),
            backoff: Duration::from_millis(g.upstream_connect_retry_backoff_ms),
            budget: Duration::from_millis(g.upstream_connect_budget_ms.max(1)),
            threshold: g.upstream_unhealthy_fail_threshold.max(1),
            failfast: g.upstream_connect_failfast_hard_errors,
            attempt_timeout: Duration::from_secs(cfg.timeouts.tg_connect.max(1)),
        }
    }
}

struct UpstreamSet {
    slots: Vec<Slot>,
    policy: ConnectPolicy,
    /// Where health probes connect (the probe DC under this config's routing).
    probe_targets: Vec<SocketAddr>,
}

/// DC index → row (media DCs share the main DC's row; unknown DCs have none).
fn dc_row(dc: i16) -> Option<usize> {
    let i = usize::from(dc.unsigned_abs());
    (1..=NUM_DCS).contains(&i).then(|| i - 1)
}

/// The data plane's upstream manager.
pub(crate) struct Upstreams {
    set: ArcSwap<UpstreamSet>,
    stats: Arc<Stats>,
    bnd: Mutex<Option<BndObservation>>,
}

impl Upstreams {
    pub(crate) fn new(cfg: &Config, stats: Arc<Stats>) -> Self {
        let set = build_set(cfg, &[]);
        Self {
            set: ArcSwap::from_pointee(set),
            stats,
            bnd: Mutex::new(None),
        }
    }

    /// Starts the background health checks (until `cancel` fires) and reports the manager's
    /// startup stage.
    pub(crate) fn start(
        self: &Arc<Self>,
        startup: &StartupTracker,
        cancel: CancellationToken,
        interval: Duration,
        recovery: Duration,
    ) -> JoinHandle<()> {
        startup.register("upstreams", "Upstream manager", false);
        startup.begin("upstreams", SystemTime::now());
        let set = self.set.load();
        let kinds: Vec<&str> = set
            .slots
            .iter()
            .map(|s| s.entry.route.kind().as_str())
            .collect();
        let details = match kinds.as_slice() {
            [] => "no enabled upstream".to_owned(),
            k => format!("{} enabled: {}", k.len(), k.join(", ")),
        };
        startup.finish(
            "upstreams",
            ComponentStatus::Ready,
            Some(details),
            SystemTime::now(),
        );
        health::spawn_health_task(Arc::downgrade(self), cancel, interval, recovery)
    }

    /// Applies a published config to new connections (live sessions keep their stream).
    pub(crate) fn apply(&self, cfg: &Config) {
        let prev = self.set.load_full();
        let old: Vec<Arc<Entry>> = prev.slots.iter().map(|s| Arc::clone(&s.entry)).collect();
        self.set.store(Arc::new(build_set(cfg, &old)));
    }

    /// Weighted choice among healthy unscoped upstreams (all unscoped ones if none is
    /// healthy), each weight scaled by 1000 / latency-EMA-ms for `dc` (or the upstream's mean
    /// over DCs; the mean factor of the others when it has no sample yet).
    fn select(set: &UpstreamSet, dc: Option<usize>) -> Option<usize> {
        let candidates: Vec<usize> = (0..set.slots.len())
            .filter(|&i| set.slots[i].unscoped())
            .collect();
        match candidates.as_slice() {
            [] => return None,
            // The common single-upstream case: nothing to weigh.
            [only] => return Some(*only),
            _ => {}
        }
        // (index, weight, latency factor if known)
        let mut healthy: Vec<(usize, f64, Option<f64>)> = Vec::with_capacity(candidates.len());
        for &i in &candidates {
            let slot = &set.slots[i];
            let h = slot.entry.health.lock();
            if h.healthy {
                let factor =
                    h.effective_latency(dc)
                        .map(|ms| if ms > 1.0 { 1000.0 / ms } else { 1000.0 });
                healthy.push((i, f64::from(slot.weight), factor));
            }
        }
        // An upstream without a latency sample yet gets the mean factor of the measured ones,
        // so a new or never-used upstream is neither starved nor favoured.
        let known: Vec<f64> = healthy.iter().filter_map(|(_, _, f)| *f).collect();
        let neutral = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let weighted: Vec<(usize, f64)> = healthy
            .iter()
            .map(|&(i, w, f)| (i, w * f.unwrap_or(neutral)))
            .collect();
        let mut rng = rand::thread_rng();
        if weighted.is_empty() {
            return Some(candidates[rng.gen_range(0..candidates.len())]);
        }
        let total: f64 = weighted.iter().map(|(_, w)| w).sum();
        if total <= 0.0 {
            return Some(weighted[rng.gen_range(0..weighted.len())].0);
        }
        let mut pick = rng.gen_range(0.0..total);
        for &(i, w) in &weighted {
            if pick < w {
                return Some(i);
            }
            pick -= w;
        }
        weighted.last().map(|(i, _)| *i)
    }

    /// Opens a stream to the DC `dc` (candidate addresses `targets`, best first) through one
    /// selected upstream: up to `upstream_connect_retry_attempts` attempts within
    /// `upstream_connect_budget_ms`. Feeds the upstream counters once per call.
    pub(crate) async fn connect(
        &self,
        dc: i16,
        targets: &[SocketAddr],
    ) -> Result<OutboundStream, UpstreamError> {
        self.connect_detailed(dc, targets).await.map(|(s, _)| s)
    }

    /// [`Self::connect`], also saying which kind of upstream carried it and, for SOCKS, what
    /// the server reported as its bound address (the middle-proxy KDF needs both, §9.3).
    pub(crate) async fn connect_detailed(
        &self,
        dc: i16,
        targets: &[SocketAddr],
    ) -> Result<(OutboundStream, ConnectedVia), UpstreamError> {
        let set = self.set.load_full();
        let row = dc_row(dc);
        let Some(idx) = Self::select(&set, row) else {
            tracing::warn!(dc, "no enabled unscoped upstream: cannot reach the DC");
            return Err(UpstreamError::NoUpstream);
        };
        let slot = &set.slots[idx];
        let entry = &slot.entry;
        let pol = set.policy;
        let ordered = order_targets(entry, row, targets);
        let up = self.stats.upstream_counters();
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut last = if ordered.is_empty() {
            UpstreamError::NoTarget
        } else {
            UpstreamError::Budget
        };
        while attempts < pol.attempts && !ordered.is_empty() {
            let elapsed = started.elapsed();
            let timeout = pol.attempt_timeout.min(pol.budget.saturating_sub(elapsed));
            if timeout.is_zero() {
                last = UpstreamError::Budget;
                break;
            }
            let target = ordered[attempts as usize % ordered.len()];
            attempts += 1;
            up.connect_attempt_total.inc();
            let t0 = Instant::now();
            let res = match tokio::time::timeout(timeout, connect_via(&entry.route, target)).await {
                Ok(r) => r,
                Err(_) => Err(UpstreamError::Timeout(target.to_string())),
            };
            match res {
                Ok((stream, bound)) => {
                    let rtt = t0.elapsed();
                    up.observe_connect(true, attempts, started.elapsed());
                    let mut h = entry.health.lock();
                    if !h.healthy {
                        tracing::info!(upstream = idx, kind = entry.route.kind().as_str(),
                            address = %slot.address, "upstream recovered");
                    }
                    h.healthy = true;
                    h.fails = 0;
                    h.last_check_at = SystemTime::now();
                    if let Some(r) = row {
                        h.dc[r].observe(target, true, Some(rtt));
                    }
                    drop(h);
                    let bnd = bound.map(|b| classify_bnd(idx, &b, target, SystemTime::now()));
                    if let Some(b) = &bnd {
                        *self.bnd.lock() = Some(b.clone());
                    }
                    tracing::debug!(upstream = idx, dc, %target, attempts, "DC stream open");
                    let via = ConnectedVia {
                        kind: entry.route.kind(),
                        bnd,
                    };
                    return Ok((stream, via));
                }
                Err(e) => {
                    if let Some(r) = row {
                        entry.health.lock().dc[r].observe(target, false, None);
                    }
                    let hard = pol.failfast && e.is_hard();
                    tracing::debug!(upstream = idx, attempt = attempts, %target, error = %e,
                        hard, "upstream connect attempt failed");
                    last = e;
                    if hard {
                        up.connect_failfast_hard_error_total.inc();
                        break;
                    }
                    if attempts < pol.attempts && !pol.backoff.is_zero() {
                        let jitter = rand::thread_rng().gen_range(0..=pol.backoff.as_millis() / 2);
                        let wait = pol.backoff + Duration::from_millis(jitter as u64);
                        let left = pol.budget.saturating_sub(started.elapsed());
                        tokio::time::sleep(wait.min(left)).await;
                    }
                }
            }
        }
        up.observe_connect(false, attempts.max(1), started.elapsed());
        self.record_failure(idx, slot, pol.threshold, &last);
        Err(last)
    }

    fn record_failure(&self, idx: usize, slot: &Slot, threshold: u32, err: &UpstreamError) {
        let mut h = slot.entry.health.lock();
        h.fails = h.fails.saturating_add(1);
        h.last_check_at = SystemTime::now();
        let newly = h.healthy && h.fails >= threshold;
        if newly {
            h.healthy = false;
        }
        let fails = h.fails;
        drop(h);
        tracing::warn!(upstream = idx, kind = slot.entry.route.kind().as_str(),
            address = %slot.address, fails, error = %err, "upstream connect failed");
        if newly {
            tracing::warn!(upstream = idx, address = %slot.address, fails, threshold,
                "upstream marked unhealthy");
            self.stats.events().push(
                "upstream.unhealthy",
                &format!(
                    "upstream={idx} kind={} address={}",
                    slot.entry.route.kind().as_str(),
                    slot.address
                ),
            );
        }
    }

    /// Copy of every runtime upstream; `None` when some entry's state is locked right now
    /// (never blocks).
    pub(crate) fn try_snapshot(&self) -> Option<Vec<UpstreamRow>> {
        let set = self.set.load_full();
        let mut rows = Vec::with_capacity(set.slots.len());
        for (i, slot) in set.slots.iter().enumerate() {
            let h = slot.entry.health.try_lock()?;
            rows.push(UpstreamRow {
                upstream_id: i,
                route_kind: slot.entry.route.kind(),
                address: slot.address.clone(),
                weight: slot.weight,
                scopes: slot.scopes.clone(),
                healthy: h.healthy,
                fails: h.fails,
                last_check_at: h.last_check_at,
                effective_latency_ms: h.effective_latency(None),
                dc: (0..NUM_DCS)
                    .map(|d| UpstreamDcRow {
                        dc: d as i16 + 1,
                        latency_ema_ms: h.dc[d].ema_ms,
                        ip_preference: h.dc[d].preference(),
                    })
                    .collect(),
            });
        }
        Some(rows)
    }

    /// The latest SOCKS BND observation.
    pub(crate) fn bnd(&self) -> Option<BndObservation> {
        self.bnd.lock().clone()
    }
}

/// How an outbound stream was opened.
#[derive(Debug, Clone)]
pub(crate) struct ConnectedVia {
    pub(crate) kind: UpstreamRouteKind,
    /// The SOCKS server's BND.ADDR / BND.PORT for this connection.
    pub(crate) bnd: Option<BndObservation>,
}

fn build_set(cfg: &Config, old: &[Arc<Entry>]) -> UpstreamSet {
    let mut slots = Vec::new();
    let mut reused = vec![false; old.len()];
    for (i, u) in cfg.upstreams.iter().enumerate().filter(|(_, u)| u.enabled) {
        let found = old
            .iter()
            .enumerate()
            .find(|(j, e)| !reused[*j] && e.kind == u.kind)
            .map(|(j, e)| {
                reused[j] = true;
                Arc::clone(e)
            });
        let entry = match found {
            Some(e) => e,
            None => match Route::from_kind(&u.kind) {
                Ok(route) => Arc::new(Entry::new(&u.kind, route)),
                Err(e) => {
                    // Validation refuses these; a stale entry must not break the data plane.
                    tracing::error!(upstream = i, error = %e, "upstream skipped");
                    continue;
                }
            },
        };
        slots.push(slot_for(u, entry));
    }
    UpstreamSet {
        slots,
        policy: ConnectPolicy::from_config(cfg),
        probe_targets: crate::dc::DcRouting::from_config(cfg).targets(health::PROBE_DC),
    }
}

fn slot_for(u: &UpstreamConfig, entry: Arc<Entry>) -> Slot {
    Slot {
        entry,
        weight: u.weight,
        scopes: u.scopes.clone(),
        address: u.address_display(),
    }
}

/// Targets reordered by the upstream's learned family preference for this DC; SOCKS4
/// keeps IPv4 only.
fn order_targets(entry: &Entry, row: Option<usize>, targets: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = targets.to_vec();
    if matches!(entry.route, Route::Socks4 { .. }) {
        v.retain(SocketAddr::is_ipv4);
    }
    let pref = row.map_or(IpPreference::Unknown, |r| {
        entry.health.lock().dc[r].preference()
    });
    match pref {
        IpPreference::PreferV4 => v.sort_by_key(SocketAddr::is_ipv6),
        IpPreference::PreferV6 => v.sort_by_key(SocketAddr::is_ipv4),
        _ => {}
    }
    v
}

#[cfg(test)]
mod tests;
