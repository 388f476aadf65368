//! The ME writer pool: which writers exist per DC, opening and replacing them, and choosing one
//! for a new client (docs/ME-MODEL.md).
//!
//! Owns: the endpoint registry (per-endpoint failures, backoff and quarantine), the writer
//! list with generations and contours, the per-DC floors, the refill task, readiness and the
//! ME → direct fallback clock, writer choice (`sorted_rr`, `p2c`) and the pool snapshot.
//! Must not: move client bytes (the writers and the ME relay do), fetch the proxy config
//! (the inputs module does), or hold its lock across `.await`.
//!
//! ```text
//!  inputs (secret, proxy_for table) ─► set_inputs ─► generation N+1 (warm)
//!  refill tick (500 ms, or woken) ──► per DC: alive < required ─► connect (upstreams) ─► writer
//!  warm generation covers every DC ─► swap: N+1 active, N draining ─► closed when empty / TTL
//!  session ─► route(dc) ─► Me(writer, conn_id) | Direct (fallback windows) | Unavailable
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use config::{Config, MeFloorMode, MeRouteNoWriterMode, MeWriterPickMode};
use parking_lot::Mutex;
use stats::Stats;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::writer::{self, Keepalive, Open, Writer};
use crate::upstream::Upstreams;

/// How often the refill task looks at the pool when nothing woke it.
const TICK: Duration = Duration::from_millis(500);
/// Consecutive connect failures after which an endpoint is listed as quarantined.
const QUARANTINE_AFTER: u32 = 3;
/// Fallback window before the pool was ever ready (docs/spec: ME fallback behaviour).
pub(crate) const STARTUP_GRACE: Duration = Duration::from_secs(80);
/// Fallback window once readiness was lost after having been reached.
pub(crate) const RUNTIME_GRACE: Duration = Duration::from_secs(6);

/// What the pool needs from the ME inputs: the proxy secret and the `proxy_for` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolInputs {
    pub(crate) secret: Arc<[u8]>,
    /// Endpoints per DC (signed: negative = media), in the config's order.
    pub(crate) endpoints: BTreeMap<i16, Vec<SocketAddr>>,
    /// Cluster for DC indexes without `proxy_for` lines (docs/PROTOCOL.md §7.9).
    pub(crate) default_dc: i16,
}

impl PoolInputs {
    /// The DC whose endpoints serve client DC index `dc` (§7.9).
    pub(crate) fn cluster_for(&self, dc: i16) -> i16 {
        if dc != 0 && self.endpoints.contains_key(&dc) {
            dc
        } else {
            self.default_dc
        }
    }
}

/// Pool settings from `[general]` (re-read on every config publish).
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    pub(crate) keepalive: Keepalive,
    pub(crate) pick: MeWriterPickMode,
    pub(crate) sample: usize,
    pub(crate) floor_mode: MeFloorMode,
    pub(crate) min_single: usize,
    pub(crate) min_multi: usize,
    pub(crate) shadow_single: usize,
    pub(crate) idle_shrink_after: Duration,
    pub(crate) active_cap: usize,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) fast_retries: u32,
    pub(crate) max_concurrent_per_dc: usize,
    pub(crate) drain_ttl: Duration,
    pub(crate) force_close: Duration,
    pub(crate) fallback: bool,
    pub(crate) no_writer_wait: Duration,
    pub(crate) hardswap: bool,
    /// `unknown_dc_log_path` when `unknown_dc_file_log_enabled` (relative to the config's
    /// directory, resolved by the pool).
    pub(crate) unknown_dc_log: Option<String>,
    /// `me_socks_kdf_policy = "strict"`.
    pub(crate) socks_kdf_strict: bool,
    /// Single-endpoint outage mode (`me_single_endpoint_outage_*`).
    pub(crate) outage_enabled: bool,
    pub(crate) outage_ignore_quarantine: bool,
    pub(crate) outage_backoff_min: Duration,
    pub(crate) outage_backoff_max: Duration,
    /// `me_bind_stale_mode` / `me_bind_stale_ttl_secs`: may a new session use a draining
    /// writer when its DC has no active one?
    pub(crate) stale_mode: config::MeBindStaleMode,
    pub(crate) stale_ttl: Duration,
    /// `me_warmup_stagger_*`: the k-th writer opened for one DC in one refill pass waits
    /// k × step + jitter, so a (re)started pool does not open all its links at once.
    pub(crate) stagger: Option<(Duration, Duration)>,
    /// `me_single_endpoint_shadow_rotate_every_secs` (0 = never).
    pub(crate) shadow_rotate_every: Duration,
    /// `me_hardswap_warmup_*`: how a new generation's writers are dialled.
    pub(crate) warmup: HardswapWarmup,
    /// Queue sizes and waits; a link keeps those it was opened with, a session those of
    /// its start.
    pub(crate) flow: writer::FlowLimits,
}

impl PoolSettings {
    pub(crate) fn from_config(cfg: &Config) -> Self {
        let g = &cfg.general;
        let no_writer_wait = match g.me_route_no_writer_mode {
            MeRouteNoWriterMode::AsyncRecoveryFailfast => g.me_route_no_writer_wait_ms,
            MeRouteNoWriterMode::InlineRecoveryLegacy => g.me_route_no_writer_wait_ms,
            MeRouteNoWriterMode::HybridAsyncPersistent => g.me_route_hybrid_max_wait_ms,
        };
        Self {
            keepalive: Keepalive {
                enabled: g.me_keepalive_enabled,
                interval: Duration::from_secs(g.me_keepalive_interval_secs.max(1)),
                jitter: Duration::from_secs(g.me_keepalive_jitter_secs),
            },
            pick: g.me_writer_pick_mode,
            sample: usize::from(g.me_writer_pick_sample_size).max(2),
            floor_mode: g.me_floor_mode,
            min_single: usize::from(g.me_adaptive_floor_min_writers_single_endpoint).max(1),
            min_multi: usize::from(g.me_adaptive_floor_min_writers_multi_endpoint).max(1),
            shadow_single: usize::from(g.me_single_endpoint_shadow_writers),
            idle_shrink_after: Duration::from_secs(g.me_adaptive_floor_idle_secs),
            active_cap: (g.me_adaptive_floor_max_active_writers_global as usize).max(1),
            backoff_base: Duration::from_millis(g.me_reconnect_backoff_base_ms.max(1)),
            backoff_cap: Duration::from_millis(
                g.me_reconnect_backoff_cap_ms
                    .max(g.me_reconnect_backoff_base_ms),
            ),
            fast_retries: g.me_reconnect_fast_retry_count,
            max_concurrent_per_dc: (g.me_reconnect_max_concurrent_per_dc as usize).max(1),
            drain_ttl: Duration::from_secs(g.me_pool_drain_ttl_secs),
            force_close: Duration::from_secs(g.effective_me_pool_force_close_secs()),
            fallback: g.me2dc_fallback,
            no_writer_wait: Duration::from_millis(no_writer_wait),
            hardswap: g.hardswap,
            unknown_dc_log: g
                .unknown_dc_log_path
                .clone()
                .filter(|_| g.unknown_dc_file_log_enabled),
            socks_kdf_strict: g.me_socks_kdf_policy == config::MeSocksKdfPolicy::Strict,
            stagger: g.me_warmup_stagger_enabled.then(|| {
                (
                    Duration::from_millis(g.me_warmup_step_delay_ms),
                    Duration::from_millis(g.me_warmup_step_jitter_ms),
                )
            }),
            stale_mode: g.me_bind_stale_mode,
            stale_ttl: Duration::from_secs(g.me_bind_stale_ttl_secs),
            outage_enabled: g.me_single_endpoint_outage_mode_enabled,
            outage_ignore_quarantine: g.me_single_endpoint_outage_disable_quarantine,
            outage_backoff_min: Duration::from_millis(
                g.me_single_endpoint_outage_backoff_min_ms.max(1),
            ),
            outage_backoff_max: Duration::from_millis(
                g.me_single_endpoint_outage_backoff_max_ms
                    .max(g.me_single_endpoint_outage_backoff_min_ms.max(1)),
            ),
            shadow_rotate_every: Duration::from_secs(g.me_single_endpoint_shadow_rotate_every_secs),
            warmup: HardswapWarmup {
                delay_min: Duration::from_millis(g.me_hardswap_warmup_delay_min_ms),
                delay_max: Duration::from_millis(
                    g.me_hardswap_warmup_delay_max_ms
                        .max(g.me_hardswap_warmup_delay_min_ms),
                ),
                extra_passes: u32::from(g.me_hardswap_warmup_extra_passes),
                backoff_base: Duration::from_millis(
                    g.me_hardswap_warmup_pass_backoff_base_ms.max(1),
                ),
                slow_gap: Duration::from_millis(g.me_reconnect_backoff_cap_ms.max(1)),
            },
            flow: writer::FlowLimits::from_config(g),
        }
    }

    /// Backoff before the next connect to an endpoint that failed `fails` times in a row:
    /// the base for the fast retries, then doubling up to the cap.
    /// Backoff in a single-endpoint outage: short and growing slowly, since the DC has no
    /// other way to its clients.
    fn outage_backoff(&self, fails: u32) -> Duration {
        self.outage_backoff_min
            .saturating_mul(1u32 << fails.min(8))
            .min(self.outage_backoff_max)
    }

    fn backoff(&self, fails: u32) -> Duration {
        if fails <= self.fast_retries {
            return self.backoff_base;
        }
        let exp = (fails - self.fast_retries).min(16);
        self.backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.backoff_cap)
    }
}

/// Per-endpoint connect history.
#[derive(Debug, Default, Clone)]
struct EndpointHealth {
    fails: u32,
    next_try: Option<Instant>,
}

/// Floor figures of one DC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Floor {
    pub min: usize,
    pub target: usize,
    pub max: usize,
    pub capped: bool,
}

struct State {
    inputs: Option<Arc<PoolInputs>>,
    /// Newest generation (writers are opened for it).
    generation: u64,
    /// Generation new clients are bound to (0 = none yet).
    active: u64,
    writers: Vec<Writer>,
    /// Draining writers with their force-close deadline.
    draining: Vec<(Writer, Instant, Instant)>,
    /// When the newest generation was opened (pending hardswap age).
    generation_opened: Instant,
    health: HashMap<SocketAddr, EndpointHealth>,
    inflight: HashMap<i16, usize>,
    /// The part of `inflight` towards IPv6 endpoints (refill rows are per DC and family).
    inflight_v6: HashMap<i16, usize>,
    rr: HashMap<i16, usize>,
    /// Last time a client was routed to each DC (adaptive floors).
    last_used: HashMap<i16, Instant>,
    first_ready: Option<Instant>,
    /// Since when the pool has not been ready.
    unready_since: Instant,
    ready: bool,
    next_writer_id: u64,
    /// Single-endpoint DCs without a live writer (outage mode).
    outage: std::collections::HashSet<i16>,
    /// Last shadow rotation per single-endpoint DC.
    rotated: HashMap<i16, Instant>,
    /// Writers that were lost (not retired), oldest first: DC, endpoint, and the first
    /// writer id opened after the loss. The next such writer of that DC restores one (same
    /// endpoint or a fallback one); opens already under way when it was lost do not.
    lost: std::collections::VecDeque<(i16, SocketAddr, u64)>,
    /// Warm-up passes made for the newest generation while it is pending, and when the
    /// next may start.
    warm_passes: u32,
    next_warm_pass: Instant,
}

/// Lost writers remembered for restore accounting at most (older ones are forgotten).
const LOST_MEMORY: usize = 1024;

/// Dialling a new generation while the previous one still serves (a hardswap): the dials
/// of one pass are spaced by a random gap in [`delay_min`, `delay_max`]; while the
/// generation is incomplete, `extra_passes` more passes follow after `backoff_base` × 2^(n−1),
/// then passes continue every `slow_gap` (the reconnect backoff cap) until it is complete.
///
/// [`delay_min`]: Self::delay_min
/// [`delay_max`]: Self::delay_max
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HardswapWarmup {
    pub(crate) delay_min: Duration,
    pub(crate) delay_max: Duration,
    pub(crate) extra_passes: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) slow_gap: Duration,
}

impl HardswapWarmup {
    /// Start delay of the `k`-th dial of a pass (0 for the first).
    fn dial_delay(&self, k: usize) -> Duration {
        let span = self.delay_max.saturating_sub(self.delay_min).as_millis() as u64;
        (0..k)
            .map(|_| self.delay_min + Duration::from_millis(rand::random::<u64>() % (span + 1)))
            .sum()
    }

    /// Wait after the `n`-th pass (1 = the first) before the next one.
    fn pass_gap(&self, n: u32) -> Duration {
        if n <= self.extra_passes {
            self.backoff_base
                .saturating_mul(1u32 << (n.saturating_sub(1)).min(20))
        } else {
            self.slow_gap
        }
    }
}

/// Maps a local address to the public one the middle proxy sees, when known.
pub(crate) type PublicIp = Arc<dyn Fn(IpAddr) -> Option<IpAddr> + Send + Sync>;

/// The pool handle (cheap to clone).
#[derive(Clone)]
pub(crate) struct MePool {
    inner: Arc<Inner>,
}

struct Inner {
    stats: Arc<Stats>,
    upstreams: Arc<Upstreams>,
    settings: Mutex<Arc<PoolSettings>>,
    state: Mutex<State>,
    conn_ids: AtomicU64,
    wake: Notify,
    ready_tx: watch::Sender<bool>,
    cancel: CancellationToken,
    /// DC indexes clients asked for that the proxy config does not list (logged once each).
    unknown_dcs: Mutex<std::collections::HashSet<i16>>,
    /// The config file (relative log paths are taken from its directory).
    config_path: Mutex<Option<std::path::PathBuf>>,
    /// Clock skew seen in the proxy-config downloads (the self-test's `timeskew`).
    skew: super::inputs::SkewLog,
    /// Our public address per family, when known (NAT / STUN), for the KDF.
    public_ip: Mutex<Option<PublicIp>>,
}

/// Where a new client session goes.
pub(crate) enum Route {
    /// Through this writer with this connection id (already bound to `down`).
    Me {
        writer: Writer,
        conn_id: u64,
        cluster: i16,
    },
    /// Directly to the DC (fallback).
    Direct,
    /// Neither: no writer and fallback not allowed.
    Unavailable,
}

impl MePool {
    pub(crate) fn new(
        cfg: &Config,
        stats: Arc<Stats>,
        upstreams: Arc<Upstreams>,
        cancel: CancellationToken,
    ) -> Self {
        let (ready_tx, _) = watch::channel(false);
        let inner = Inner {
            stats,
            upstreams,
            settings: Mutex::new(Arc::new(PoolSettings::from_config(cfg))),
            state: Mutex::new(State {
                inputs: None,
                generation: 0,
                active: 0,
                writers: Vec::new(),
                draining: Vec::new(),
                health: HashMap::new(),
                inflight: HashMap::new(),
                inflight_v6: HashMap::new(),
                rr: HashMap::new(),
                last_used: HashMap::new(),
                first_ready: None,
                unready_since: Instant::now(),
                ready: false,
                next_writer_id: 1,
                generation_opened: Instant::now(),
                outage: Default::default(),
                rotated: HashMap::new(),
                lost: std::collections::VecDeque::new(),
                warm_passes: 0,
                next_warm_pass: Instant::now(),
            }),
            conn_ids: AtomicU64::new(rand::random::<u64>() >> 1),
            wake: Notify::new(),
            ready_tx,
            cancel,
            skew: Default::default(),
            unknown_dcs: Mutex::new(Default::default()),
            config_path: Mutex::new(None),
            public_ip: Mutex::new(None),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Installs the public-address lookup used in the KDF (NAT / STUN).
    pub(crate) fn set_public_ip(&self, f: PublicIp) {
        *self.inner.public_ip.lock() = Some(f);
    }

    /// The address a client reached as the middle proxy should see it (NAT-translated).
    pub(crate) fn our_addr(&self, local: SocketAddr) -> SocketAddr {
        let lookup = self.inner.public_ip.lock().clone();
        public_addr(lookup.as_deref(), local)
    }

    /// Where relative paths of the config (the unknown-DC log) are resolved.
    pub(crate) fn set_config_path(&self, path: &std::path::Path) {
        *self.inner.config_path.lock() = Some(path.to_path_buf());
    }

    /// Notes a client DC index the proxy config does not list (served by the default
    /// cluster, §7.9): logged once per index, and appended to `unknown_dc_log_path` when
    /// `unknown_dc_file_log_enabled`.
    fn note_unknown_dc(&self, dc: i16, s: &PoolSettings) {
        if !self.inner.unknown_dcs.lock().insert(dc) {
            return;
        }
        tracing::warn!(
            dc,
            "client asked for a DC the proxy config does not list; using the default cluster"
        );
        let Some(configured) = s.unknown_dc_log.clone() else {
            return;
        };
        let rel = std::path::Path::new(&configured);
        if rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            tracing::warn!(path = %configured, "unknown_dc_log_path contains '..': not written");
            return;
        }
        let path = match self.inner.config_path.lock().as_deref() {
            Some(config_path) => config::relative_to_config(config_path, rel),
            None => rel.to_path_buf(),
        };
        let line = format!(
            "{} dc={dc}\n",
            SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        );
        // Off the session's path: a slow disk never delays a client.
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let r = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = r {
                tracing::warn!(path = %path.display(), error = %e, "unknown-DC log not written");
            }
        });
    }

    /// The skew log the inputs downloads feed.
    pub(crate) fn skew_log(&self) -> super::inputs::SkewLog {
        self.inner.skew.clone()
    }

    /// Re-reads `[general]` (a config publish).
    pub(crate) fn apply_config(&self, cfg: &Config) {
        let next = PoolSettings::from_config(cfg);
        let mut cur = self.inner.settings.lock();
        if cur.floor_mode != next.floor_mode {
            let mp = self.inner.stats.middle_proxy_counters();
            mp.floor_mode_switch_total.inc();
            match next.floor_mode {
                MeFloorMode::Adaptive => mp.floor_mode_switch_static_to_adaptive_total.inc(),
                MeFloorMode::Static => mp.floor_mode_switch_adaptive_to_static_total.inc(),
            }
            tracing::info!(mode = next.floor_mode.as_str(), "ME floor mode switched");
        }
        *cur = Arc::new(next);
        drop(cur);
        self.inner.wake.notify_one();
    }

    fn settings(&self) -> Arc<PoolSettings> {
        Arc::clone(&self.inner.settings.lock())
    }

    /// The current queue sizes and waits (for a session starting now).
    pub(crate) fn flow(&self) -> writer::FlowLimits {
        self.inner.settings.lock().flow
    }

    /// New inputs: when the secret or the endpoint table changed, a new generation is opened
    /// and swapped in once it covers every DC (the old one drains).
    pub(crate) fn set_inputs(&self, inputs: PoolInputs) {
        let mut st = self.inner.state.lock();
        if st.inputs.as_deref() == Some(&inputs) {
            return;
        }
        st.inputs = Some(Arc::new(inputs));
        st.generation += 1;
        st.generation_opened = Instant::now();
        st.warm_passes = 0;
        st.next_warm_pass = st.generation_opened;
        tracing::info!(
            generation = st.generation,
            "ME inputs changed: opening a new writer generation"
        );
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Whether every DC has a live writer in the active generation.
    pub(crate) fn ready(&self) -> bool {
        self.inner.state.lock().ready
    }

    /// A receiver that changes when readiness does.
    pub(crate) fn ready_watch(&self) -> watch::Receiver<bool> {
        self.inner.ready_tx.subscribe()
    }

    /// Spawns the refill task.
    pub(crate) fn start(&self) {
        let pool = self.clone();
        tokio::spawn(async move { pool.refill_loop().await });
    }

    async fn refill_loop(self) {
        loop {
            self.tick();
            tokio::select! {
                _ = self.inner.cancel.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
        let mut st = self.inner.state.lock();
        for w in st.writers.drain(..) {
            w.close();
        }
        for (w, _, _) in st.draining.drain(..) {
            w.close();
        }
    }

    /// Required writers for one DC with `n` endpoints, before the global cap.
    fn floor(s: &PoolSettings, n: usize, idle: bool) -> Floor {
        let (min, target) = if n <= 1 {
            (s.min_single, s.min_single + s.shadow_single)
        } else {
            (s.min_multi, n.max(s.min_multi))
        };
        let target = if idle && s.floor_mode == MeFloorMode::Adaptive {
            min
        } else {
            target
        };
        Floor {
            min,
            target,
            max: target.max(min),
            capped: false,
        }
    }

    /// Floors of every DC, with the global active cap applied.
    fn floors(s: &PoolSettings, st: &State, inputs: &PoolInputs) -> BTreeMap<i16, Floor> {
        let now = Instant::now();
        let mut floors: BTreeMap<i16, Floor> = inputs
            .endpoints
            .iter()
            .map(|(&dc, eps)| {
                let idle = st
                    .last_used
                    .get(&dc)
                    .is_none_or(|t| now.duration_since(*t) >= s.idle_shrink_after)
                    && st.first_ready.is_some();
                (dc, Self::floor(s, eps.len(), idle))
            })
            .collect();
        let total: usize = floors.values().map(|f| f.target).sum();
        if total > s.active_cap {
            // Scale every DC down proportionally, never below its minimum.
            for f in floors.values_mut() {
                let scaled = (f.target * s.active_cap / total).max(f.min);
                if scaled < f.target {
                    f.target = scaled;
                    f.capped = true;
                }
            }
        }
        floors
    }

    /// One refill pass: prune dead writers, retire drained ones, open what is missing, swap
    /// generations, update readiness.
    fn tick(&self) {
        let s = self.settings();
        let now = Instant::now();
        let pool_c = self.inner.stats.pool_counters();
        let mut st = self.inner.state.lock();
        let lost: Vec<_> = st
            .writers
            .iter()
            .filter(|w| !w.shared.alive() && w.shared.lost.load(Ordering::Relaxed))
            .map(|w| (w.shared.dc, w.shared.endpoint, st.next_writer_id))
            .collect();
        for l in lost {
            if st.lost.len() == LOST_MEMORY {
                st.lost.pop_front();
            }
            st.lost.push_back(l);
        }
        st.writers.retain(|w| w.shared.alive());
        st.draining.retain(|(w, deadline, _)| {
            let done = !w.shared.alive() || w.shared.bound() == 0;
            if !done && now >= *deadline {
                pool_c.pool_force_close_total.inc();
                w.close();
                return false;
            }
            if done {
                w.close();
            }
            !done
        });
        pool_c.pool_drain_active.set(st.draining.len() as u64);
        let Some(inputs) = st.inputs.clone() else {
            return;
        };
        let gen = st.generation;
        let floors = Self::floors(&s, &st, &inputs);
        // The first generation serves at once (DCs with writers work while others are still
        // failing); a later one replaces it only once it covers every DC's minimum.
        if st.active == 0 {
            st.active = gen;
        } else if st.active != gen {
            let covered = floors.iter().all(|(dc, f)| {
                st.writers
                    .iter()
                    .filter(|w| w.shared.dc == *dc && w.generation() == gen)
                    .count()
                    >= f.min
            });
            if covered {
                st.active = gen;
                pool_c.pool_swap_total.inc();
                let deadline = now + s.drain_ttl.min(s.force_close).max(Duration::from_secs(1));
                let (keep, drain): (Vec<_>, Vec<_>) = std::mem::take(&mut st.writers)
                    .into_iter()
                    .partition(|w| w.generation() == gen);
                st.writers = keep;
                for w in drain {
                    w.shared.draining.store(true, Ordering::Relaxed);
                    st.draining.push((w, deadline, now));
                }
                tracing::info!(
                    generation = gen,
                    "ME generation swapped in; the previous one drains"
                );
            }
        }
        // Refill. A generation warming up beside the active one (a hardswap) is dialled in
        // passes paced by `me_hardswap_warmup_*` instead.
        let warming = st.active != 0 && st.active != gen;
        let pass_due = !warming || now >= st.next_warm_pass;
        let mut dials = 0;
        for (&dc, floor) in floors.iter().filter(|_| pass_due) {
            let alive = st
                .writers
                .iter()
                .filter(|w| w.shared.dc == dc && w.generation() == gen)
                .count();
            let inflight = st.inflight.get(&dc).copied().unwrap_or(0);
            let missing = floor.target.saturating_sub(alive + inflight);
            let room = s.max_concurrent_per_dc.saturating_sub(inflight);
            if missing > 0 && room == 0 {
                pool_c.refill_skipped_inflight_total.inc();
            }
            for k in 0..missing.min(room) {
                let Some(ep) = Self::pick_endpoint(&st, &inputs, dc, now) else {
                    break;
                };
                // Reserve the slot so the next pass does not double it.
                st.health.entry(ep).or_default().next_try = Some(now + s.backoff_base);
                *st.inflight.entry(dc).or_default() += 1;
                if ep.is_ipv6() {
                    *st.inflight_v6.entry(dc).or_default() += 1;
                }
                let id = st.next_writer_id;
                st.next_writer_id += 1;
                pool_c.refill_triggered_total.inc();
                let delay = match s.stagger {
                    _ if warming => s.warmup.dial_delay(dials),
                    Some((step, jitter)) if k > 0 => {
                        let j = jitter.as_millis() as u64;
                        let extra = if j == 0 {
                            0
                        } else {
                            rand::random::<u64>() % (j + 1)
                        };
                        step * k as u32 + Duration::from_millis(extra)
                    }
                    _ => Duration::ZERO,
                };
                dials += 1;
                self.spawn_connect(Opening {
                    id,
                    dc,
                    generation: gen,
                    endpoint: ep,
                    secret: Arc::clone(&inputs.secret),
                    settings: Arc::clone(&s),
                    delay,
                });
            }
        }
        if warming && dials > 0 {
            st.warm_passes += 1;
            st.next_warm_pass = now + s.warmup.pass_gap(st.warm_passes);
        }
        // Adaptive floors shrink: writers above a DC's target that carry no session close.
        for (&dc, floor) in &floors {
            let mut idle: Vec<&Writer> = st
                .writers
                .iter()
                .filter(|w| w.shared.dc == dc && w.generation() == gen)
                .collect();
            let alive = idle.len();
            if alive <= floor.target {
                continue;
            }
            idle.retain(|w| w.shared.bound() == 0);
            idle.sort_by_key(|w| std::cmp::Reverse(w.shared.id));
            for w in idle.into_iter().take(alive - floor.target) {
                tracing::debug!(
                    writer = w.shared.id,
                    dc,
                    "ME writer above the adaptive floor closed"
                );
                w.close();
            }
        }
        st.writers.retain(|w| w.shared.alive());
        self.single_endpoint_care(&s, &mut st, &inputs, gen, now);
        // Readiness: a live writer of the active generation for every DC.
        let ready = st.active == gen
            && floors.keys().all(|dc| {
                st.writers
                    .iter()
                    .any(|w| w.shared.dc == *dc && w.generation() == gen)
            });
        if ready != st.ready {
            st.ready = ready;
            if ready {
                st.first_ready.get_or_insert(now);
                tracing::info!("ME pool ready: every DC has a writer");
            } else {
                st.unready_since = now;
                tracing::warn!("ME pool not ready: some DC has no writer");
            }
            self.inner.ready_tx.send_replace(ready);
        }
    }

    /// Single-endpoint DCs: outage mode when the only endpoint has no live writer (faster
    /// retries, optionally past quarantine), and periodic rotation of an idle shadow writer
    /// so a half-dead link is not kept for ever (docs/ME-MODEL.md "Refill and reconnect").
    fn single_endpoint_care(
        &self,
        s: &PoolSettings,
        st: &mut State,
        inputs: &PoolInputs,
        gen: u64,
        now: Instant,
    ) {
        let mp = self.inner.stats.middle_proxy_counters();
        for (&dc, eps) in &inputs.endpoints {
            if eps.len() != 1 {
                continue;
            }
            let alive: Vec<&Writer> = st
                .writers
                .iter()
                .filter(|w| w.shared.dc == dc && w.generation() == gen)
                .collect();
            let in_outage = st.outage.contains(&dc);
            if alive.is_empty() && s.outage_enabled && !in_outage && st.first_ready.is_some() {
                st.outage.insert(dc);
                mp.single_endpoint_outage_enter_total.inc();
                tracing::warn!(dc, endpoint = %eps[0], "single-endpoint DC lost its last writer: outage mode");
                // Retry soon rather than after the regular backoff.
                if let Some(h) = st.health.get_mut(&eps[0]) {
                    let soon = now + s.outage_backoff_min;
                    if h.next_try.is_some_and(|t| t > soon) {
                        if h.fails >= QUARANTINE_AFTER {
                            if !s.outage_ignore_quarantine {
                                continue;
                            }
                            mp.single_endpoint_quarantine_bypass_total.inc();
                        }
                        h.next_try = Some(soon);
                    }
                }
                continue;
            }
            if !alive.is_empty() && in_outage {
                st.outage.remove(&dc);
                mp.single_endpoint_outage_exit_total.inc();
                tracing::info!(dc, "single-endpoint DC has a writer again: outage over");
            }
            if s.shadow_rotate_every.is_zero() || alive.len() < 2 {
                continue;
            }
            let last = *st.rotated.entry(dc).or_insert(now);
            if now.duration_since(last) < s.shadow_rotate_every {
                continue;
            }
            st.rotated.insert(dc, now);
            let quarantined = st
                .health
                .get(&eps[0])
                .is_some_and(|h| h.fails >= QUARANTINE_AFTER);
            if quarantined {
                // A replacement could not be opened: keep the shadow.
                mp.single_endpoint_shadow_rotate_skipped_quarantine_total
                    .inc();
                continue;
            }
            if let Some(oldest) = alive
                .iter()
                .filter(|w| w.shared.bound() == 0)
                .min_by_key(|w| w.shared.id)
            {
                mp.single_endpoint_shadow_rotate_total.inc();
                tracing::debug!(dc, writer = oldest.shared.id, "rotating a shadow writer");
                oldest.close();
            }
        }
    }

    /// The endpoint of `dc` to connect next: not in backoff, fewest live writers.
    fn pick_endpoint(st: &State, inputs: &PoolInputs, dc: i16, now: Instant) -> Option<SocketAddr> {
        let eps = inputs.endpoints.get(&dc)?;
        eps.iter()
            .copied()
            .filter(|ep| {
                st.health
                    .get(ep)
                    .and_then(|h| h.next_try)
                    .is_none_or(|t| now >= t)
            })
            .min_by_key(|ep| {
                st.writers
                    .iter()
                    .filter(|w| w.shared.endpoint == *ep)
                    .count()
            })
    }

    fn spawn_connect(&self, o: Opening) {
        let Opening {
            id,
            dc,
            generation,
            endpoint,
            secret,
            settings: s,
            delay,
        } = o;
        let pool = self.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = pool.inner.cancel.cancelled() => return,
                }
            }
            let stats = Arc::clone(&pool.inner.stats);
            let mp = stats.middle_proxy_counters();
            mp.reconnect_attempt_total.inc();
            let lookup = pool.inner.public_ip.lock().clone();
            let open = async {
                let (stream, via) = pool
                    .inner
                    .upstreams
                    .connect_detailed(dc, &[endpoint])
                    .await
                    .map_err(|e| writer::OpenError::Connect(e.to_string()))?;
                let local = match &stream {
                    crate::outbound::OutboundStream::Tcp(t) => t.local_addr().ok(),
                    crate::outbound::OutboundStream::Tunnel(_) => None,
                };
                let kdf_addr = kdf_address(&s, &via, local, lookup.as_deref(), &stats)?;
                let o = Open {
                    id,
                    dc,
                    generation,
                    endpoint,
                    secret: &secret,
                    kdf_addr,
                    keepalive: s.keepalive,
                    flow: s.flow,
                };
                writer::start(o, stream, Arc::clone(&stats)).await
            };
            let result = tokio::select! {
                r = open => Some(r),
                _ = pool.inner.cancel.cancelled() => None,
            };
            let mut st = pool.inner.state.lock();
            if let Some(n) = st.inflight.get_mut(&dc) {
                *n = n.saturating_sub(1);
            }
            if endpoint.is_ipv6() {
                if let Some(n) = st.inflight_v6.get_mut(&dc) {
                    *n = n.saturating_sub(1);
                }
            }
            if st.outage.contains(&dc) {
                mp.single_endpoint_outage_reconnect_attempt_total.inc();
                if matches!(result, Some(Ok(_))) {
                    mp.single_endpoint_outage_reconnect_success_total.inc();
                }
            }
            let Some(result) = result else { return };
            let pool_c = stats.pool_counters();
            match result {
                Ok(w) => {
                    st.health.insert(endpoint, EndpointHealth::default());
                    mp.reconnect_success_total.inc();
                    let restores = st
                        .lost
                        .iter()
                        .position(|&(d, _, after)| d == dc && id >= after);
                    if let Some(i) = restores {
                        if st.lost.remove(i).is_some_and(|(_, was, _)| was == endpoint) {
                            pool_c.writer_restored_same_endpoint_total.inc();
                        } else {
                            pool_c.writer_restored_fallback_total.inc();
                        }
                    }
                    if st.generation != generation {
                        // Opened for a generation that is already outdated.
                        w.close();
                    } else {
                        tracing::debug!(writer = id, %endpoint, dc, generation, "ME writer up");
                        st.writers.push(w);
                    }
                }
                Err(e) => {
                    pool_c.refill_failed_total.inc();
                    if matches!(e, writer::OpenError::KeysRejected) {
                        mp.kdf_drift_total.inc();
                    }
                    if let writer::OpenError::Handshake(he) = &e {
                        use proto::me::RpcError;
                        match he {
                            proto::me::HandshakeError::Rpc(RpcError::HandshakeRejected(code)) => {
                                stats.record_me_handshake_reject(*code);
                            }
                            // The first encrypted packet decrypting to garbage: the middle
                            // proxy derived other keys, i.e. saw another address (NAT).
                            proto::me::HandshakeError::Rpc(
                                RpcError::BadChecksum
                                | RpcError::BadLength(_)
                                | RpcError::BadSeq { .. },
                            ) => mp.kdf_drift_total.inc(),
                            _ => {}
                        }
                    }
                    let outage = st.outage.contains(&dc);
                    let h = st.health.entry(endpoint).or_default();
                    h.fails = h.fails.saturating_add(1);
                    let wait = if outage {
                        if h.fails >= QUARANTINE_AFTER && s.outage_ignore_quarantine {
                            mp.single_endpoint_quarantine_bypass_total.inc();
                        }
                        if s.outage_ignore_quarantine || h.fails < QUARANTINE_AFTER {
                            s.outage_backoff(h.fails)
                        } else {
                            s.backoff(h.fails)
                        }
                    } else {
                        s.backoff(h.fails)
                    };
                    h.next_try = Some(Instant::now() + wait);
                    if h.fails == QUARANTINE_AFTER {
                        mp.endpoint_quarantine_total.inc();
                    }
                    tracing::warn!(%endpoint, dc, fails = h.fails, retry_in_ms = wait.as_millis() as u64, error = %e, "ME writer connect failed");
                }
            }
            drop(st);
            pool.inner.wake.notify_one();
        });
    }

    /// Chooses where a new session for client DC index `dc` goes, binding it to a writer when
    /// the ME route is taken. Waits up to the no-writer budget for a writer while the pool is
    /// inside its readiness grace window.
    pub(crate) async fn route(&self, dc: i16, down: &writer::SessionTx) -> Route {
        let s = self.settings();
        let deadline = tokio::time::Instant::now() + s.no_writer_wait;
        let mut ready = self.ready_watch();
        loop {
            if let Some(r) = self.try_bind(dc, &s, down) {
                return r;
            }
            if s.fallback && self.fallback_now() {
                return Route::Direct;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = ready.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        if s.fallback {
            Route::Direct
        } else {
            Route::Unavailable
        }
    }

    /// Whether the grace windows have run out (new sessions go direct).
    pub(crate) fn fallback_now(&self) -> bool {
        let st = self.inner.state.lock();
        if st.ready {
            return false;
        }
        let grace = if st.first_ready.is_some() {
            RUNTIME_GRACE
        } else {
            STARTUP_GRACE
        };
        st.unready_since.elapsed() >= grace
    }

    fn try_bind(&self, dc: i16, s: &PoolSettings, down: &writer::SessionTx) -> Option<Route> {
        let mut st = self.inner.state.lock();
        let inputs = st.inputs.clone()?;
        let cluster = inputs.cluster_for(dc);
        if cluster != dc && dc != 0 {
            self.note_unknown_dc(dc, s);
        }
        let active = st.active;
        let candidates: Vec<&Writer> = st
            .writers
            .iter()
            .filter(|w| {
                w.shared.dc == cluster
                    && w.generation() == active
                    && w.shared.alive()
                    && !w.shared.draining.load(Ordering::Relaxed)
            })
            .collect();
        // Writers whose keepalive is late only when nothing healthier is there.
        let healthy: Vec<&Writer> = candidates
            .iter()
            .copied()
            .filter(|w| !w.shared.degraded.load(Ordering::Relaxed))
            .collect();
        let candidates = if healthy.is_empty() {
            candidates
        } else {
            healthy
        };
        let stale: Vec<&Writer>;
        let candidates = if candidates.is_empty() {
            // No active writer: a draining one may do, per `me_bind_stale_mode`.
            let now = Instant::now();
            stale = st
                .draining
                .iter()
                .filter(|(w, _, since)| {
                    w.shared.dc == cluster
                        && w.shared.alive()
                        && match s.stale_mode {
                            config::MeBindStaleMode::Never => false,
                            config::MeBindStaleMode::Always => true,
                            config::MeBindStaleMode::Ttl => {
                                now.duration_since(*since) < s.stale_ttl
                            }
                        }
                })
                .map(|(w, _, _)| w)
                .collect();
            if stale.is_empty() {
                return None;
            }
            self.inner.stats.pool_counters().pool_stale_pick_total.inc();
            stale
        } else {
            candidates
        };
        let chosen = match s.pick {
            MeWriterPickMode::SortedRr => {
                let mut sorted = candidates;
                sorted.sort_by_key(|w| w.shared.id);
                let n = sorted.len();
                let turn = st.rr.get(&cluster).copied().unwrap_or(0);
                sorted[turn % n].clone()
            }
            MeWriterPickMode::P2c => {
                let n = candidates.len();
                let mut best: Option<&Writer> = None;
                for _ in 0..s.sample.min(n) {
                    let w = candidates[rand::random::<u32>() as usize % n];
                    if best.is_none_or(|b| w.shared.bound() < b.shared.bound()) {
                        best = Some(w);
                    }
                }
                best.cloned()?
            }
        };
        *st.rr.entry(cluster).or_default() += 1;
        st.last_used.insert(cluster, Instant::now());
        drop(st);
        let conn_id = self.inner.conn_ids.fetch_add(1, Ordering::Relaxed);
        if !chosen.shared.bind(conn_id, down.clone()) {
            return None;
        }
        Some(Route::Me {
            writer: chosen,
            conn_id,
            cluster,
        })
    }

    /// A coherent copy of the pool for the API.
    pub(crate) fn snapshot(&self) -> PoolSnapshot {
        let s = self.settings();
        let st = self.inner.state.lock();
        let now = Instant::now();
        let inputs = st.inputs.clone();
        let floors = inputs
            .as_deref()
            .map(|i| Self::floors(&s, &st, i))
            .unwrap_or_default();
        let mut writers: Vec<WriterRow> = st
            .writers
            .iter()
            .map(|w| WriterRow::of(w, st.active))
            .chain(
                st.draining
                    .iter()
                    .map(|(w, _, _)| WriterRow::of(w, st.active)),
            )
            .collect();
        writers.sort_by_key(|w| w.id);
        let dcs = inputs
            .as_deref()
            .map(|i| {
                i.endpoints
                    .iter()
                    .map(|(&dc, eps)| DcRow {
                        dc,
                        endpoints: eps.clone(),
                        floor: floors.get(&dc).copied().unwrap_or_default(),
                        load: st
                            .writers
                            .iter()
                            .filter(|w| w.shared.dc == dc)
                            .map(|w| w.shared.bound())
                            .sum(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let quarantine = st
            .health
            .iter()
            .filter(|(_, h)| h.fails >= QUARANTINE_AFTER)
            .filter_map(|(ep, h)| {
                let until = h.next_try?;
                (until > now).then(|| (*ep, (until - now).as_millis() as u64))
            })
            .collect();
        let refill = st
            .inflight
            .iter()
            .flat_map(|(&dc, &n)| {
                let v6 = st.inflight_v6.get(&dc).copied().unwrap_or(0).min(n);
                [
                    RefillRow {
                        dc,
                        ipv6: false,
                        inflight: n - v6,
                    },
                    RefillRow {
                        dc,
                        ipv6: true,
                        inflight: v6,
                    },
                ]
            })
            .filter(|r| r.inflight > 0)
            .collect();
        PoolSnapshot {
            taken_at: SystemTime::now(),
            active_generation: st.active,
            warm_generation: st.generation,
            hardswap: s.hardswap,
            pending_generation: (st.active != 0 && st.active != st.generation)
                .then_some((st.generation, st.generation_opened.elapsed().as_secs())),
            ready: st.ready,
            writers,
            dcs,
            quarantine,
            refill,
            timeskew: self.inner.skew.snapshot().into(),
        }
    }
}

/// One writer to open (a refill decision).
struct Opening {
    id: u64,
    dc: i16,
    generation: u64,
    endpoint: SocketAddr,
    secret: Arc<[u8]>,
    settings: Arc<PoolSettings>,
    /// Warm-up stagger before connecting.
    delay: Duration,
}

/// Our address as the middle proxy will see it, for the KDF (docs/PROTOCOL.md §7.4, §7.5,
/// §9.3): behind a SOCKS upstream the server's BND.ADDR / BND.PORT when usable, else per
/// `me_socks_kdf_policy` (strict: refuse; compat: as without SOCKS); otherwise our local
/// address with the public IP. `None` = the socket's local address as is.
fn kdf_address(
    s: &PoolSettings,
    via: &crate::upstream::ConnectedVia,
    local: Option<SocketAddr>,
    lookup: Option<&(dyn Fn(IpAddr) -> Option<IpAddr> + Send + Sync)>,
    stats: &Stats,
) -> Result<Option<SocketAddr>, writer::OpenError> {
    use crate::upstream::{BndAddrStatus, BndPortStatus, UpstreamRouteKind};
    let socks = matches!(
        via.kind,
        UpstreamRouteKind::Socks4 | UpstreamRouteKind::Socks5
    );
    if socks {
        let usable = via
            .bnd
            .as_ref()
            .filter(|b| b.addr_state == BndAddrStatus::Ok)
            .and_then(|b| b.addr.map(|a| (a, b.port_state)));
        match usable {
            Some((bnd, port)) => {
                let port = if port == BndPortStatus::Ok {
                    bnd.port()
                } else {
                    local.map_or(0, |l| l.port())
                };
                return Ok(Some(SocketAddr::new(bnd.ip(), port)));
            }
            None if s.socks_kdf_strict => {
                stats
                    .middle_proxy_counters()
                    .socks_kdf_strict_reject_total
                    .inc();
                return Err(writer::OpenError::SocksKdf);
            }
            None => stats
                .middle_proxy_counters()
                .socks_kdf_compat_fallback_total
                .inc(),
        }
    }
    Ok(local.map(|l| public_addr(lookup, l)))
}

/// `local` with the IP the world sees (`middle_proxy_nat_ip` or STUN, through the NAT probe's
/// lookup); the port stays, so NAT must keep source ports (docs/PROTOCOL.md §7.5).
fn public_addr(
    lookup: Option<&(dyn Fn(IpAddr) -> Option<IpAddr> + Send + Sync)>,
    local: SocketAddr,
) -> SocketAddr {
    let ip = lookup.and_then(|f| f(local.ip())).unwrap_or(local.ip());
    SocketAddr::new(ip, local.port())
}

impl Writer {
    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Relaxed)
    }
}

/// One writer as the snapshot lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterRow {
    pub id: u64,
    pub dc: i16,
    pub endpoint: SocketAddr,
    pub generation: u64,
    /// `warm`, `active` or `draining`.
    pub contour: &'static str,
    pub draining: bool,
    pub degraded: bool,
    pub bound_clients: usize,
    pub idle_for_secs: Option<u64>,
    pub rtt_ema_ms: Option<f64>,
}

impl WriterRow {
    fn of(w: &Writer, active: u64) -> Self {
        let gen = w.generation();
        let draining = w.shared.draining.load(Ordering::Relaxed);
        let contour = if draining {
            "draining"
        } else if gen == active {
            "active"
        } else {
            "warm"
        };
        Self {
            id: w.shared.id,
            dc: w.shared.dc,
            endpoint: w.shared.endpoint,
            generation: gen,
            contour,
            draining,
            degraded: !w.shared.alive() || w.shared.degraded.load(Ordering::Relaxed),
            bound_clients: w.shared.bound(),
            idle_for_secs: w.shared.idle_secs(),
            rtt_ema_ms: w.shared.rtt_ms(),
        }
    }
}

/// One DC as the snapshot lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct DcRow {
    pub dc: i16,
    pub endpoints: Vec<SocketAddr>,
    pub floor: Floor,
    pub load: usize,
}

/// Writer opens in flight for one DC and address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefillRow {
    pub dc: i16,
    /// Towards IPv6 endpoints (else IPv4).
    pub ipv6: bool,
    pub inflight: usize,
}

/// A coherent copy of the pool (mapped to the API's types by the binary).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSnapshot {
    pub taken_at: SystemTime,
    pub active_generation: u64,
    pub warm_generation: u64,
    pub hardswap: bool,
    /// A newer generation waiting for coverage before it is swapped in, with its age (s).
    pub pending_generation: Option<(u64, u64)>,
    pub ready: bool,
    pub writers: Vec<WriterRow>,
    pub dcs: Vec<DcRow>,
    /// Quarantined endpoints with the remaining milliseconds.
    pub quarantine: Vec<(SocketAddr, u64)>,
    /// Connects in flight per DC and address family.
    pub refill: Vec<RefillRow>,
    /// Clock skew against the proxy-config servers' `Date` headers.
    pub timeskew: Timeskew,
}

/// Clock-skew samples (the API's `timeskew` block).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timeskew {
    pub max_skew_secs_15m: Option<u64>,
    pub samples_15m: usize,
    pub last_skew_secs: Option<u64>,
    pub last_source: Option<String>,
    pub last_seen_age_secs: Option<u64>,
}

impl From<super::inputs::SkewSnapshot> for Timeskew {
    fn from(s: super::inputs::SkewSnapshot) -> Self {
        Self {
            max_skew_secs_15m: s.max_skew_secs_15m,
            samples_15m: s.samples_15m,
            last_skew_secs: s.last_skew_secs,
            last_source: s.last_source,
            last_seen_age_secs: s.last_seen_age_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool with inputs for DC 2 and `n` detached writers of generation 1 on it.
    fn pool_with_writers(extra: &str, n: u64) -> (MePool, Vec<Writer>) {
        let cfg = config::parse_str(&format!(
            "[general]\nuse_middle_proxy = true\n{extra}\n[access.users]\nu = \"00112233445566778899aabbccddeeff\"\n"
        ))
        .expect("config")
        .config;
        let stats = Stats::new(SystemTime::now());
        let upstreams = Arc::new(Upstreams::new(&cfg, Arc::clone(&stats)));
        let pool = MePool::new(&cfg, stats, upstreams, CancellationToken::new());
        pool.set_inputs(PoolInputs {
            secret: Arc::from(vec![1u8; 32]),
            endpoints: BTreeMap::from([(2, vec![SocketAddr::from(([127, 0, 0, 1], 8888))])]),
            default_dc: 2,
        });
        let writers: Vec<Writer> = (1..=n).map(|id| Writer::detached(id, 2, 1).0).collect();
        {
            let mut st = pool.inner.state.lock();
            st.active = 1;
            st.writers = writers.clone();
        }
        (pool, writers)
    }

    fn pick(pool: &MePool) -> u64 {
        let (tx, _rx) = writer::session_queue(writer::FlowLimits::default().session_queue);
        let s = pool.settings();
        match pool.try_bind(2, &s, &tx) {
            // Released at once, so the loads the test set up stay as they are.
            Some(Route::Me {
                writer, conn_id, ..
            }) => {
                let _ = writer.release(conn_id);
                writer.shared.id
            }
            _ => panic!("no writer picked"),
        }
    }

    #[test]
    fn sorted_rr_takes_writers_in_turn_by_id() {
        let (pool, _w) = pool_with_writers("me_writer_pick_mode = \"sorted_rr\"", 3);
        let picks: Vec<u64> = (0..7).map(|_| pick(&pool)).collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn p2c_prefers_the_less_loaded_and_skips_degraded_writers() {
        let (pool, w) = pool_with_writers(
            "me_writer_pick_mode = \"p2c\"\nme_writer_pick_sample_size = 2",
            2,
        );
        // Writer 1 carries 50 sessions: of two samples (with replacement) the idle writer is
        // picked unless both samples are writer 1, i.e. about 3 picks in 4.
        for c in 0..50 {
            let (tx, _rx) = writer::session_queue(writer::FlowLimits::default().session_queue);
            assert!(w[0].shared.bind(1_000_000 + c, tx));
        }
        let to_idle = (0..200).filter(|_| pick(&pool) == 2).count();
        assert!(
            to_idle > 120,
            "{to_idle} of 200 picks went to the idle writer"
        );
        // A degraded writer is left out while a healthy one exists.
        w[1].shared.degraded.store(true, Ordering::Relaxed);
        assert!((0..20).all(|_| pick(&pool) == 1));
    }

    #[tokio::test]
    async fn refill_rows_are_per_dc_and_address_family() {
        let (pool, _w) = pool_with_writers("", 0);
        let v4 = SocketAddr::from(([127, 0, 0, 1], 8888));
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 8888));
        pool.set_inputs(PoolInputs {
            secret: Arc::from(vec![1u8; 32]),
            endpoints: BTreeMap::from([
                (2, vec![v4, v6]),
                (
                    3,
                    vec![SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 8889))],
                ),
            ]),
            default_dc: 2,
        });
        // One pass reserves the opens; on this single-threaded runtime the connect tasks
        // have not run yet, so the rows show exactly what was started.
        pool.tick();
        let mut rows = pool.snapshot().refill;
        rows.sort_by_key(|r| (r.dc, r.ipv6));
        let rows: Vec<(i16, bool, usize)> =
            rows.iter().map(|r| (r.dc, r.ipv6, r.inflight)).collect();
        // DC 2: a writer per endpoint (one v4, one v6); DC 3: its only endpoint, v6 (one open
        // per endpoint and pass).
        assert_eq!(rows, vec![(2, false, 1), (2, true, 1), (3, true, 1)]);
    }

    #[test]
    fn hardswap_passes_are_spaced_then_back_off() {
        let w = HardswapWarmup {
            delay_min: Duration::from_millis(1000),
            delay_max: Duration::from_millis(2000),
            extra_passes: 3,
            backoff_base: Duration::from_millis(500),
            slow_gap: Duration::from_secs(30),
        };
        assert_eq!(w.dial_delay(0), Duration::ZERO);
        for k in 1..5 {
            let d = w.dial_delay(k);
            assert!(
                d >= w.delay_min * k as u32 && d <= w.delay_max * k as u32,
                "{k}: {d:?}"
            );
        }
        let gaps: Vec<u64> = (1..=5).map(|n| w.pass_gap(n).as_millis() as u64).collect();
        assert_eq!(gaps, vec![500, 1000, 2000, 30_000, 30_000]);
        let none = HardswapWarmup {
            extra_passes: 0,
            ..w
        };
        assert_eq!(none.pass_gap(1), w.slow_gap);
    }

    #[tokio::test]
    async fn a_pending_generation_is_dialled_in_paced_passes() {
        let (pool, _w) = pool_with_writers("", 1);
        let triggered = || {
            pool.inner
                .stats
                .pool_counters()
                .snapshot()
                .refill_triggered_total
        };
        // New inputs while generation 1 serves: generation 2 warms up beside it.
        pool.set_inputs(PoolInputs {
            secret: Arc::from(vec![1u8; 32]),
            endpoints: BTreeMap::from([(2, vec![SocketAddr::from(([127, 0, 0, 1], 8889))])]),
            default_dc: 2,
        });
        pool.tick();
        let first = triggered();
        assert!(first >= 1);
        assert_eq!(pool.inner.state.lock().warm_passes, 1);
        // The dials did not connect (the tasks have not run), yet the next pass waits for
        // its gap, however often the refill ticks.
        {
            let mut st = pool.inner.state.lock();
            st.inflight.clear();
            st.health.clear();
        }
        pool.tick();
        assert_eq!(triggered(), first);
        // Gap over: the next pass dials again.
        pool.inner.state.lock().next_warm_pass = Instant::now();
        pool.tick();
        assert!(triggered() > first);
        assert_eq!(pool.inner.state.lock().warm_passes, 2);
    }

    #[test]
    fn unknown_dc_indexes_use_the_default_cluster() {
        let (pool, _w) = pool_with_writers("", 1);
        let (tx, _rx) = writer::session_queue(writer::FlowLimits::default().session_queue);
        let s = pool.settings();
        for dc in [0i16, 4, -4, 203] {
            match pool.try_bind(dc, &s, &tx) {
                Some(Route::Me { cluster, .. }) => assert_eq!(cluster, 2, "dc {dc}"),
                _ => panic!("dc {dc}: not routed"),
            }
        }
    }
}
