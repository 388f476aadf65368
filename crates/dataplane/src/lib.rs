//! `dataplane`: the client-facing data plane of mtproxyd.
//!
//! Owns: client listeners, the handshake (fake TLS / obfuscated2, per-user matching through a
//! table rebuilt on every config publish, replay cache), masking of bad clients, admission
//! (expiration, quota, connection and unique-IP limits), the routes to Telegram (direct to the
//! DCs, or through the middle-proxy pool of `me`; both through `[[upstreams]]`) and the
//! relay. It is the single owner of what a config publish
//! does to the running proxy: one hook compares the old and new user entries (by secret, not
//! by name) and closes, keeps or drops sessions and per-user state; nobody else closes
//! sessions. It also owns its housekeeping (expiry sweeps, the counters state file, IP
//! pruning) and reports its startup stages to the shared [`StartupTracker`].
//! Must not: parse HTTP, write the config file, or know wire formats beyond calling `proto`.
//!
//! The middle-proxy route and its public-address probe ([`nat`]) run only when
//! `general.use_middle_proxy = true` was set at start (docs/ME-MODEL.md).
//!
//! ```text
//!  accept ─► [PROXY hdr] ─► handshake ──bad──► masking (mask_host, every byte read)
//!                              │ ok
//!                              ▼
//!                          admission ──refused──► masking
//!                              │ ok
//!                              ▼
//!                    DC link (obfuscated2 init) ─► relay (until close / quota / idle /
//!                                                  user closed / shutdown)
//! ```

#![forbid(unsafe_code)]

mod admission;
mod dc;
mod handshake;
mod housekeeping;
mod io_util;
mod listener;
mod masking;
mod me;
pub mod nat;
mod outbound;
mod policy;
mod ratelimit;
mod relay;
mod rng;
mod session;
mod tls_front;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use config::{Config, ConfigEvent, ConfigStore};
use parking_lot::Mutex;
use stats::startup::{ComponentStatus, StartupTracker};
use stats::Stats;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::housekeeping::CounterState;
pub use crate::me::{DcRow, Floor, PoolSnapshot, RefillRow, Timeskew, WriterRow};
use crate::policy::{Policy, Rebuilt};
use crate::upstream::Upstreams;
pub use crate::upstream::{
    BndAddrStatus, BndObservation, BndPortStatus, IpPreference, UpstreamDcRow, UpstreamRouteKind,
    UpstreamRow,
};

/// Start-up knobs that are not config keys (tests, the binary).
#[derive(Debug, Clone)]
pub struct DataplaneOptions {
    /// Bind this port instead of `server.port` (0 = ephemeral, see
    /// [`DataplaneHandle::local_addrs`]).
    pub port_override: Option<u16>,
    /// Bind these addresses instead of `[[server.listeners]]`.
    pub listen_override: Option<Vec<IpAddr>>,
    /// How often expirations are checked for live sessions.
    pub expiry_check_interval: Duration,
    /// Healthy upstreams are re-probed when their last check is older than this.
    pub upstream_health_interval: Duration,
    /// How often the health checker runs (unhealthy upstreams are probed on every run).
    pub upstream_recovery_interval: Duration,
    /// How often per-user counters are flushed to the state file (docs/DECISIONS.md #27)
    /// and stale unique-IP entries pruned; `None` = `general.quota_state_flush_secs`.
    pub state_flush_interval: Option<Duration>,
}

impl Default for DataplaneOptions {
    fn default() -> Self {
        Self {
            port_override: None,
            listen_override: None,
            expiry_check_interval: Duration::from_secs(1),
            upstream_health_interval: Duration::from_secs(30),
            upstream_recovery_interval: Duration::from_secs(5),
            state_flush_interval: None,
        }
    }
}

/// Start-up failures. Listener bind failures are not among them: they are reported to the
/// startup tracker (and the data plane runs without listeners, so config publishes still
/// apply and the API can show what went wrong).
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// Called outside a tokio runtime.
    #[error("the data plane must be started inside a tokio runtime")]
    NoRuntime,
}

/// Live connections on each route (for `/v1/runtime/connections/summary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteCounts {
    /// Direct-to-DC sessions.
    pub direct: u64,
    /// Middle-proxy sessions.
    pub me: u64,
}

/// Counts live connection tasks.
struct Live(AtomicUsize);

struct LiveGuard<'a>(&'a Live);

impl Live {
    fn enter(&self) -> LiveGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        LiveGuard(self)
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// State shared by listeners, sessions and the handle.
pub(crate) struct Inner {
    stats: Arc<Stats>,
    policy: ArcSwap<Policy>,
    upstreams: Arc<Upstreams>,
    rebuild: Mutex<()>,
    /// Frees replaced policies off the config-publish path.
    retirer: config::Retirer,
    hints: handshake::IpHints,
    accepting: AtomicBool,
    /// Set: listeners stop accepting.
    stop_accepting: watch::Sender<bool>,
    /// Set: every live session is cut.
    cut: watch::Sender<bool>,
    /// Cancelled at shutdown: background tasks (upstream health, housekeeping) end.
    cancel: CancellationToken,
    live: Live,
    listeners: listener::Listeners,
    /// TLS front profiles and the emulated flights (docs/PROTOCOL.md §4.9).
    fronts: tls_front::Fronts,
    /// ServerHello key shares computed ahead of the ee handshakes.
    key_shares: Arc<rng::KeyShares>,
    /// The middle-proxy pool when `general.use_middle_proxy` was set at start.
    me: Option<me::MePool>,
}

impl Inner {
    fn new(cfg: &Config, stats: Arc<Stats>, listeners: listener::Listeners) -> Self {
        let Rebuilt { policy, .. } = Policy::build(cfg, None, 1);
        let fronts = tls_front::Fronts::new();
        fronts.set_domains(policy.tls.allowed_domains.clone());
        let upstreams = Arc::new(Upstreams::new(cfg, Arc::clone(&stats)));
        let cancel = CancellationToken::new();
        let me = cfg.general.use_middle_proxy.then(|| {
            me::MePool::new(
                cfg,
                Arc::clone(&stats),
                Arc::clone(&upstreams),
                cancel.child_token(),
            )
        });
        Self {
            fronts,
            key_shares: rng::KeyShares::new(),
            me,
            upstreams,
            stats,
            policy: ArcSwap::from_pointee(policy),
            rebuild: Mutex::new(()),
            retirer: config::Retirer::new("policy-retire"),
            hints: handshake::IpHints::new(),
            accepting: AtomicBool::new(false),
            stop_accepting: watch::Sender::new(false),
            cut: watch::Sender::new(false),
            cancel,
            live: Live(AtomicUsize::new(0)),
            listeners,
        }
    }

    /// Keeps the listener set in step with `cfg` (not once shutdown began) and reports a
    /// change of the admission state.
    fn reconcile_listeners(self: &Arc<Self>, cfg: &Config) -> Vec<String> {
        if *self.stop_accepting.borrow() {
            return Vec::new();
        }
        let errors = self.listeners.reconcile(self, cfg);
        let open = !self.listeners.local_addrs().is_empty();
        if self.accepting.swap(open, Ordering::Relaxed) != open {
            let ctx = if open {
                "accepting=true"
            } else {
                "accepting=false reason=listener_bind_failed"
            };
            self.stats.events().push("admission.state", ctx);
        }
        if !errors.is_empty() {
            tracing::error!(errors = %errors.join("; "), "some client listeners could not be bound");
        }
        errors
    }

    /// The one place where a published config (API write, hand edit, SIGHUP) changes the
    /// running proxy: rebuilds the policy, closes the sessions of users that were deleted,
    /// re-keyed, expired or are now over quota, and drops the per-user state of users that
    /// left the config. Users are matched by entry (secret), so a client that already
    /// reconnected under a new secret is never cut by the close of the old one.
    fn apply_config(self: &Arc<Self>, cfg: &Config) {
        let _serial = self.rebuild.lock();
        let prev = self.policy.load_full();
        let Rebuilt {
            policy,
            to_close,
            removed,
        } = Policy::build(cfg, Some(&prev), prev.generation + 1);
        let policy = Arc::new(policy);
        let domains_changed = self.fronts.set_domains(policy.tls.allowed_domains.clone());
        if let Some(pool) = &self.me {
            pool.apply_config(cfg);
        }
        if cfg.general.use_middle_proxy != self.me.is_some() {
            tracing::warn!(
                use_middle_proxy = cfg.general.use_middle_proxy,
                "general.use_middle_proxy changed: the route changes at the next restart"
            );
        }
        // The old policy holds a reference to every user: free it off the write path.
        self.retirer.retire(self.policy.swap(Arc::clone(&policy)));
        // After the swap: the refresh task reads what it fetches from the published policy.
        if domains_changed || prev.tls_emulation != policy.tls_emulation {
            self.fronts.wake();
        }
        self.upstreams.apply(cfg);
        self.reconcile_listeners(cfg);
        for user in to_close {
            tracing::info!(user = %user.name, "user deleted or secret changed: closing its sessions");
            user.close_sessions();
        }
        for name in removed {
            self.stats.forget_user(&name);
        }
        self.close_expired_or_over_quota(&policy);
    }

    /// Applies due scheduled quota resets (`access.user_quota_reset`): a user whose schedule
    /// passed a boundary since its last reset (or since its entry appeared) starts from zero.
    fn run_scheduled_resets(&self, policy: &Policy) {
        if policy.quota_resets.is_empty() {
            return;
        }
        let now = time::OffsetDateTime::now_utc();
        let now_secs = now.unix_timestamp();
        for (user, schedule) in &policy.quota_resets {
            let stats = self.stats.users().handle(&user.name);
            let last = i64::try_from(stats.last_quota_reset_epoch_secs()).unwrap_or(i64::MAX);
            let since = last.max(user.reset_baseline.load(Ordering::Relaxed));
            if schedule.last_boundary(now).unix_timestamp() > since {
                stats.reset_quota(u64::try_from(now_secs).unwrap_or(0));
                tracing::info!(user = %user.name, %schedule, "scheduled quota reset");
            }
        }
    }

    fn close_expired_or_over_quota(&self, policy: &Policy) {
        let now = admission::unix_now();
        for user in &policy.users {
            if user.close_gen.receiver_count() == 0 {
                continue;
            }
            let over_quota =
                self.stats.users().existing(&user.name).is_some_and(|s| {
                    s.quota_used_bytes() >= user.quota_bytes.load(Ordering::Relaxed)
                });
            if user.expired(now) || over_quota {
                tracing::info!(user = %user.name, "user expired or over quota: closing its sessions");
                user.close_sessions();
            }
        }
    }
}

/// Entry point.
pub struct Dataplane;

/// Registers the middle-proxy stage: skipped in direct mode; otherwise the pool comes up in
/// the background (`me::supervise`) and the stage finishes when it is ready.
fn report_me_route(cfg: &Config, startup: &StartupTracker) {
    startup.register("me_pool", "Middle-proxy pool", true);
    if !cfg.general.use_middle_proxy {
        let why = "direct mode (general.use_middle_proxy = false)".to_owned();
        startup.finish(
            "me_pool",
            ComponentStatus::Skipped,
            Some(why),
            SystemTime::now(),
        );
    }
}

impl Dataplane {
    /// Restores the per-user counters, starts the upstream manager, binds every configured
    /// listener and starts serving clients; each stage is reported to `startup`. Must be
    /// called inside a tokio runtime. A listener that cannot be bound is reported (component
    /// failed, process degraded, `admission.state` event) and the data plane keeps running
    /// without it. Config publishes apply at once through a store listener.
    pub fn start(
        store: Arc<ConfigStore>,
        stats: Arc<Stats>,
        startup: Arc<StartupTracker>,
        opts: DataplaneOptions,
    ) -> Result<DataplaneHandle, DataplaneError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| DataplaneError::NoRuntime)?;
        let _enter = rt.enter();
        let snap = store.current();
        let cfg = &snap.config;

        let counters = Arc::new(CounterState::new(
            cfg.general.quota_state_file(&snap.path),
            Arc::clone(&stats),
        ));
        counters.restore(cfg, &stats::state_path_for(&snap.path), &startup);

        let listeners =
            listener::Listeners::new(rt.clone(), opts.port_override, opts.listen_override.clone());
        let inner = Arc::new(Inner::new(cfg, Arc::clone(&stats), listeners));
        let weak = Arc::downgrade(&inner);
        store.add_listener(Box::new(move |ev| {
            if let ConfigEvent::Applied { snapshot, .. } = ev {
                if let Some(inner) = weak.upgrade() {
                    inner.apply_config(&snapshot.config);
                }
            }
        }));

        let mut tasks = vec![
            inner.upstreams.start(
                &startup,
                inner.cancel.child_token(),
                opts.upstream_health_interval,
                opts.upstream_recovery_interval,
            ),
            rt.spawn(housekeeping::expiry_sweeper(
                Arc::downgrade(&inner),
                opts.expiry_check_interval,
                inner.cancel.child_token(),
            )),
            rt.spawn(housekeeping::flusher(
                Arc::downgrade(&inner),
                Arc::clone(&counters),
                opts.state_flush_interval
                    .unwrap_or(Duration::from_secs(cfg.general.quota_state_flush_secs)),
                inner.cancel.child_token(),
            )),
            rt.spawn(tls_front::fetch::refresher(
                Arc::downgrade(&inner),
                Arc::clone(&startup),
                tls_front::front_dir(&snap.path, &cfg.censorship.tls_front_dir),
                inner.cancel.child_token(),
            )),
        ];

        startup.register("listeners", "Client listeners", false);
        startup.begin("listeners", SystemTime::now());
        // A publish between `current()` above and the hook registration would be missed.
        let latest = store.current();
        if !Arc::ptr_eq(&latest, &snap) {
            inner.apply_config(&latest.config);
        }
        let errors = inner.reconcile_listeners(&latest.config);
        let bound = inner.listeners.local_addrs();
        if bound.is_empty() {
            tracing::error!("client listeners not started; serving the API only");
            let why = errors.join("; ");
            startup.finish(
                "listeners",
                ComponentStatus::Failed,
                Some(why),
                SystemTime::now(),
            );
            startup.set_degraded(true);
            stats.events().push(
                "admission.state",
                "accepting=false reason=listener_bind_failed",
            );
        } else {
            let list: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
            startup.finish(
                "listeners",
                ComponentStatus::Ready,
                Some(list.join(", ")),
                SystemTime::now(),
            );
            tracing::info!(addrs = ?bound, "client listeners started");
        }
        report_me_route(cfg, &startup);
        // The public-address probe serves the middle-proxy route only: direct mode never
        // contacts STUN servers (docs/DECISIONS.md #42).
        let nat = cfg.general.use_middle_proxy.then(|| {
            let probe = nat::NatProbe::new(cfg, nat::NatProbeOptions::default());
            tasks.push(probe.spawn_refresh(inner.cancel.child_token()));
            probe
        });
        if let Some(pool) = &inner.me {
            if let Some(probe) = nat.clone() {
                pool.set_public_ip(Arc::new(move |ip| probe.public_ip_for(ip)));
            }
            pool.start();
            tasks.push(rt.spawn(me::supervise(
                pool.clone(),
                Arc::clone(&store),
                Arc::clone(&startup),
                inner.cancel.child_token(),
            )));
        }
        Ok(DataplaneHandle {
            inner,
            counters,
            tasks: Mutex::new(tasks),
            nat,
        })
    }
}

/// The running data plane.
pub struct DataplaneHandle {
    inner: Arc<Inner>,
    counters: Arc<CounterState>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// NAT / STUN public-address discovery; `None` in direct mode.
    nat: Option<nat::NatProbe>,
}

impl DataplaneHandle {
    /// Bound listener addresses (actual ports when port 0 was requested); empty when none
    /// could be bound. Follows the config: listeners change on reload.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.listeners.local_addrs().to_vec()
    }

    /// Whether listeners admit new connections.
    pub fn accepting_new_connections(&self) -> bool {
        self.inner.accepting.load(Ordering::Relaxed)
    }

    /// The middle-proxy pool, when the ME route is configured.
    pub fn me_pool_snapshot(&self) -> Option<PoolSnapshot> {
        self.inner.me.as_ref().map(|p| p.snapshot())
    }

    /// Whether the middle-proxy pool covers every DC (false in direct mode).
    pub fn me_ready(&self) -> bool {
        self.inner.me.as_ref().is_some_and(|p| p.ready())
    }

    /// Live relayed sessions per route.
    pub fn current_by_route(&self) -> RouteCounts {
        let c = self.inner.stats.core();
        RouteCounts {
            direct: c.current_connections_direct,
            me: c.current_connections_me,
        }
    }

    /// The runtime upstreams (config order of the enabled entries) with health, failures and
    /// per-DC latency / IP-family state; `None` only when a row is being updated right now
    /// (never blocks: the API then reports `source_unavailable`).
    pub fn upstreams_snapshot(&self) -> Option<Vec<UpstreamRow>> {
        self.inner.upstreams.try_snapshot()
    }

    /// The latest SOCKS BND.ADDR/BND.PORT observation (docs/PROTOCOL.md §9.3), for the ME
    /// self-test block.
    pub fn upstream_bnd(&self) -> Option<BndObservation> {
        self.inner.upstreams.bnd()
    }

    /// Resets `username`'s quota counter to zero and persists it at once (the state file is
    /// flushed in the background). Returns the reset time in Unix seconds.
    pub fn reset_user_quota(&self, username: &str) -> u64 {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.inner.stats.users().handle(username).reset_quota(now);
        let counters = Arc::clone(&self.counters);
        tokio::spawn(async move { counters.flush_async().await });
        tracing::info!(user = username, "quota counter reset");
        now
    }

    /// The public-address probe (`None` in direct mode: `/v1/runtime/nat_stun` is then
    /// `source_unavailable`, as in telemt without a middle-proxy pool).
    pub fn nat_probe(&self) -> Option<&nat::NatProbe> {
        self.nat.as_ref()
    }

    /// [`nat::NatProbe::snapshot`] when the probe exists.
    pub fn nat_snapshot(&self) -> Option<nat::NatSnapshot> {
        self.nat.as_ref().map(nat::NatProbe::snapshot)
    }

    /// Connection tasks alive (handshaking, masked or relaying).
    pub fn live_connections(&self) -> usize {
        self.inner.live.get()
    }

    /// Stops accepting, lets sessions end for up to `grace`, cuts the rest, stops the
    /// background tasks and flushes the per-user counters.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop_accepting();
        let deadline = Instant::now() + grace;
        while self.inner.live.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.inner.cut.send(true);
        self.inner.cancel.cancel();
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.inner.live.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        self.counters.flush_async().await;
    }

    fn stop_accepting(&self) {
        let _ = self.inner.stop_accepting.send(true);
        self.inner.listeners.stop_all();
        if self.inner.accepting.swap(false, Ordering::Relaxed) {
            self.inner
                .stats
                .events()
                .push("admission.state", "accepting=false reason=shutdown");
            tracing::info!("client listeners stopped accepting");
        }
    }
}

impl Drop for DataplaneHandle {
    fn drop(&mut self) {
        self.stop_accepting();
        let _ = self.inner.cut.send(true);
        self.inner.cancel.cancel();
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner_for(cfg: &Config) -> Arc<Inner> {
        let stats = Stats::new(std::time::SystemTime::now());
        let rt = tokio::runtime::Handle::current();
        Arc::new(Inner::new(
            cfg,
            stats,
            listener::Listeners::new(rt, None, None),
        ))
    }

    /// Idle sessions must stay small: the whole per-connection future (handshake, relay and
    /// their state) is one allocation of this size; relay buffers come lazily on top.
    #[tokio::test]
    async fn session_future_is_small() {
        let cfg = config::parse_str("[access.users]\nu = \"00112233445566778899aabbccddeeff\"\n")
            .expect("config")
            .config;
        let inner = inner_for(&cfg);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, peer) = l.accept().await.expect("accept");
        let fut = session::handle(Arc::clone(&inner), server, peer, addr);
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 6 * 1024, "session future is {size} bytes");
        drop(fut);
    }

    #[test]
    fn rebuild_keeps_unchanged_users_and_closes_changed_ones() {
        let text = |bob: &str| {
            format!(
                "[access.users]\nalice = \"00112233445566778899aabbccddeeff\"\nbob = \"{bob}\"\ncarol = \"22112233445566778899aabbccddeeff\"\n"
            )
        };
        let c1 = config::parse_str(&text("11112233445566778899aabbccddeeff"))
            .expect("c1")
            .config;
        let p1 = Policy::build(&c1, None, 1).policy;
        let mut c2 = config::parse_str(&text("33112233445566778899aabbccddeeff"))
            .expect("c2")
            .config;
        c2.access.users.remove("carol");
        let Rebuilt {
            policy: p2,
            to_close,
            removed,
        } = Policy::build(&c2, Some(&p1), 2);
        let closed: Vec<&str> = to_close.iter().map(|u| &*u.name).collect();
        assert_eq!(closed, vec!["bob", "carol"]);
        // Rotated bob keeps his per-user state; deleted carol does not.
        let removed: Vec<&str> = removed.iter().map(|n| &**n).collect();
        assert_eq!(removed, vec!["carol"]);
        assert!(Arc::ptr_eq(
            p1.user("alice").expect("a"),
            p2.user("alice").expect("a")
        ));
        assert!(p2.user("carol").is_none());
        assert_eq!(p2.table.len(), 2);
    }

    #[test]
    fn rebuild_pairs_each_user_with_its_own_limits() {
        let text = |first: &str| {
            format!(
                "[access]\nuser_max_tcp_conns_global_each = 7\n\
                 [access.users]\n{first} = \"00112233445566778899aabbccddeeff\"\n\
                 b = \"11112233445566778899aabbccddeeff\"\n\
                 c = \"22112233445566778899aabbccddeeff\"\n\
                 d = \"33112233445566778899aabbccddeeff\"\n\
                 [access.user_max_tcp_conns]\nb = 2\n\
                 [access.user_data_quota]\na = 100\naa = 50\nd = 400\n\
                 [access.user_expirations]\nc = \"2030-01-01T00:00:00Z\"\n\
                 [access.user_max_unique_ips]\nd = 3\n"
            )
        };
        let limits = |p: &Policy, name: &str| {
            let u = p.user(name).expect(name);
            (
                u.quota_bytes.load(Ordering::Relaxed),
                u.expires_at_unix.load(Ordering::Relaxed),
                u.max_tcp_conns.load(Ordering::Relaxed),
                u.max_unique_ips.load(Ordering::Relaxed),
            )
        };
        let never = i64::MAX;
        let c1 = config::parse_str(&text("a")).expect("c1").config;
        let p1 = Policy::build(&c1, None, 1).policy;
        assert_eq!(limits(&p1, "a"), (100, never, 7, 0));
        assert_eq!(limits(&p1, "b"), (u64::MAX, never, 2, 0));
        assert_eq!(limits(&p1, "c"), (u64::MAX, 1_893_456_000, 7, 0));
        assert_eq!(limits(&p1, "d"), (400, never, 7, 3));
        // "a" replaced by "aa" (sorts between "a" and "b"): the others keep their entries.
        let c2 = config::parse_str(&text("aa")).expect("c2").config;
        let r = Policy::build(&c2, Some(&p1), 2);
        let closed: Vec<&str> = r.to_close.iter().map(|u| &*u.name).collect();
        assert_eq!(closed, vec!["a"]);
        assert_eq!(limits(&r.policy, "aa"), (50, never, 7, 0));
        assert_eq!(limits(&r.policy, "b"), (u64::MAX, never, 2, 0));
        assert_eq!(limits(&r.policy, "d"), (400, never, 7, 3));
        assert_eq!(r.policy.user_index("c"), Some(2));
    }

    #[tokio::test]
    async fn scheduled_quota_resets_fire_once_per_boundary() {
        let cfg = config::parse_str(
            "[access.users]\nu = \"00112233445566778899aabbccddeeff\"\n\
             v = \"11112233445566778899aabbccddeeff\"\n\
             [access.user_quota_reset]\nu = \"daily\"\nv = \"daily\"\n",
        )
        .expect("config")
        .config;
        let inner = inner_for(&cfg);
        let policy = inner.policy.load_full();
        let u = inner.stats.users().handle("u");
        let v = inner.stats.users().handle("v");
        u.add_octets_to_client(500);
        v.add_octets_to_client(500);
        // u's entry predates today's 00:00 boundary; v's appeared just now.
        let day_ago = admission::unix_now() - 86_400;
        policy.users[0]
            .reset_baseline
            .store(day_ago, Ordering::Relaxed);
        inner.run_scheduled_resets(&policy);
        assert_eq!(u.quota_used_bytes(), 0);
        assert!(u.last_quota_reset_epoch_secs() > 0);
        assert_eq!(
            v.quota_used_bytes(),
            500,
            "a new schedule does not reset at once"
        );
        // Once per boundary.
        u.add_octets_to_client(7);
        inner.run_scheduled_resets(&policy);
        assert_eq!(u.quota_used_bytes(), 7);
    }
}
