//! `dataplane`: the client-facing data plane of mtproxyd (issue #3).
//!
//! Owns: client listeners, the handshake (fake TLS / obfuscated2, per-user matching through a
//! table rebuilt on every config publish, replay cache), masking of bad clients, admission
//! (expiration, quota, connection and unique-IP limits), the direct route to Telegram DCs and
//! the relay, plus the registry that closes a user's live sessions when the user is deleted,
//! rotated or expires. Feeds `stats` from real traffic.
//! Must not: parse HTTP, write the config file, or know wire formats beyond calling `proto`.
//!
//! DC links go through `[[upstreams]]` (direct, SOCKS4, SOCKS5, Shadowsocks; see `upstream`).
//! Not here yet: the middle-proxy route (`current_by_route().me` stays 0).
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
mod io_util;
mod listener;
mod masking;
mod outbound;
mod policy;
mod relay;
mod rng;
mod session;
mod tls_stream;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use config::{Config, ConfigEvent, ConfigStore};
use parking_lot::Mutex;
use stats::Stats;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::policy::{Policy, Rebuilt};
use crate::upstream::Upstreams;
pub use crate::upstream::{
    BndAddrStatus, BndObservation, BndPortStatus, IpPreference, UpstreamDcRow, UpstreamRow,
};

/// Start-up knobs that are not config keys (tests, the binary).
#[derive(Debug, Clone)]
pub struct DataplaneOptions {
    /// Bind this port instead of `server.port` (0 = ephemeral, see
    /// [`DataplaneHandle::local_addrs`]).
    pub port_override: Option<u16>,
    /// Bind these addresses instead of `[[server.listeners]]`.
    pub listen_override: Option<Vec<IpAddr>>,
    /// Listen backlog.
    pub backlog: u32,
    /// How often expirations are checked for live sessions.
    pub expiry_check_interval: Duration,
    /// Healthy upstreams are re-probed when their last check is older than this.
    pub upstream_health_interval: Duration,
    /// How often the health checker runs (unhealthy upstreams are probed on every run).
    pub upstream_recovery_interval: Duration,
}

impl Default for DataplaneOptions {
    fn default() -> Self {
        Self {
            port_override: None,
            listen_override: None,
            backlog: 1024,
            expiry_check_interval: Duration::from_secs(1),
            upstream_health_interval: Duration::from_secs(30),
            upstream_recovery_interval: Duration::from_secs(5),
        }
    }
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// No listener address is configured.
    #[error("no client listener configured (server.listeners is empty)")]
    NoListeners,
    /// No listener could be bound.
    #[error("could not bind any client listener: {0}")]
    Bind(String),
    /// Called outside a tokio runtime.
    #[error("the data plane must be started inside a tokio runtime")]
    NoRuntime,
}

/// Live connections on each route (for `/v1/runtime/connections/summary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteCounts {
    /// Direct-to-DC sessions.
    pub direct: u64,
    /// Middle-proxy sessions (always 0: the ME route is not built yet).
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
    live: Live,
    local_addrs: Vec<SocketAddr>,
}

impl Inner {
    /// Rebuilds the policy for a newly published config; closes the sessions of users that
    /// were deleted, rotated, expired, or are now over quota.
    fn apply_config(&self, cfg: &Config) {
        let _serial = self.rebuild.lock();
        let prev = self.policy.load_full();
        let Rebuilt { policy, to_close } = Policy::build(cfg, Some(&prev), prev.generation + 1);
        let policy = Arc::new(policy);
        // The old policy holds a reference to every user: free it off the write path.
        self.retirer.retire(self.policy.swap(Arc::clone(&policy)));
        self.upstreams.apply(cfg);
        for user in to_close {
            tracing::info!(user = %user.name, "user deleted or secret rotated: closing its sessions");
            user.close_sessions();
        }
        self.close_expired_or_over_quota(&policy);
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

    fn close_user(&self, username: &str) {
        if let Some(user) = self.policy.load().user(username) {
            user.close_sessions();
        }
    }
}

/// Entry point.
pub struct Dataplane;

impl Dataplane {
    /// Binds every configured listener and starts serving clients. Must be called inside a
    /// tokio runtime. Config publishes (API writes, hand edits) apply to new connections at
    /// once through a store listener.
    pub fn start(
        store: Arc<ConfigStore>,
        stats: Arc<Stats>,
        opts: DataplaneOptions,
    ) -> Result<DataplaneHandle, DataplaneError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| DataplaneError::NoRuntime)?;
        let snap = store.current();
        let cfg = &snap.config;
        let port = opts.port_override.unwrap_or(cfg.server.port);
        let addrs: Vec<(SocketAddr, bool)> = match &opts.listen_override {
            Some(ips) => ips
                .iter()
                .map(|ip| (SocketAddr::new(*ip, port), false))
                .collect(),
            None => cfg
                .server
                .listeners
                .iter()
                .map(|l| (SocketAddr::new(l.ip, port), l.reuse_allow))
                .collect(),
        };
        if addrs.is_empty() {
            return Err(DataplaneError::NoListeners);
        }
        let mut listeners = Vec::new();
        let mut errors = Vec::new();
        {
            let _enter = rt.enter();
            for (addr, reuse) in addrs {
                match listener::bind(addr, opts.backlog, reuse) {
                    Ok(l) => listeners.push(l),
                    Err(e) => {
                        tracing::error!(%addr, error = %e, "cannot bind client listener");
                        errors.push(format!("{addr}: {e}"));
                    }
                }
            }
        }
        if listeners.is_empty() {
            return Err(DataplaneError::Bind(errors.join("; ")));
        }
        let local_addrs: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();

        let Rebuilt { policy, .. } = Policy::build(cfg, None, 1);
        let inner = Arc::new(Inner {
            stats: Arc::clone(&stats),
            policy: ArcSwap::from_pointee(policy),
            upstreams: Arc::new(Upstreams::new(cfg, Arc::clone(&stats))),
            rebuild: Mutex::new(()),
            retirer: config::Retirer::new("policy-retire"),
            hints: handshake::IpHints::new(),
            accepting: AtomicBool::new(true),
            stop_accepting: watch::Sender::new(false),
            cut: watch::Sender::new(false),
            live: Live(AtomicUsize::new(0)),
            local_addrs,
        });
        let weak = Arc::downgrade(&inner);
        store.add_listener(Box::new(move |ev| {
            if let ConfigEvent::Applied { snapshot, .. } = ev {
                if let Some(inner) = weak.upgrade() {
                    inner.apply_config(&snapshot.config);
                }
            }
        }));
        // A publish between `current()` above and the listener registration would be missed.
        let latest = store.current();
        if !Arc::ptr_eq(&latest, &snap) {
            inner.apply_config(&latest.config);
        }

        let max = cfg.server.max_connections as usize;
        let permits = (max > 0).then(|| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))));
        let permit_timeout = Duration::from_millis(cfg.server.accept_permit_timeout_ms);
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(rt.spawn(listener::accept_loop(
                Arc::clone(&inner),
                l,
                permits.clone(),
                permit_timeout,
            )));
        }
        tasks.push(rt.spawn(expiry_ticker(
            Arc::downgrade(&inner),
            opts.expiry_check_interval,
        )));
        {
            let _enter = rt.enter();
            tasks.push(upstream::spawn_health_task(
                Arc::downgrade(&inner),
                opts.upstream_health_interval,
                opts.upstream_recovery_interval,
            ));
        }
        stats.events().push("admission.state", "accepting=true");
        tracing::info!(addrs = ?inner.local_addrs, "client listeners started");
        Ok(DataplaneHandle {
            inner,
            tasks: Mutex::new(tasks),
        })
    }
}

async fn expiry_ticker(inner: std::sync::Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if *inner.cut.borrow() {
            return;
        }
        let policy = inner.policy.load_full();
        inner.close_expired_or_over_quota(&policy);
    }
}

/// The running data plane.
pub struct DataplaneHandle {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl DataplaneHandle {
    /// Bound listener addresses (actual ports when port 0 was requested).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.inner.local_addrs
    }

    /// Closes every live session of `username` (user deleted or secret rotated). New
    /// connections are unaffected.
    pub fn close_user_sessions(&self, username: &str) {
        self.inner.close_user(username);
    }

    /// A cloneable closure doing [`Self::close_user_sessions`] (for the API's `Runtime` port).
    pub fn session_closer(&self) -> Arc<dyn Fn(&str) + Send + Sync> {
        let weak = Arc::downgrade(&self.inner);
        Arc::new(move |user: &str| {
            if let Some(inner) = weak.upgrade() {
                inner.close_user(user);
            }
        })
    }

    /// Whether listeners admit new connections.
    pub fn accepting_new_connections(&self) -> bool {
        self.inner.accepting.load(Ordering::Relaxed)
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

    /// The latest SOCKS BND.ADDR/BND.PORT observation (PROTOCOL.md §9.3), for the ME
    /// self-test block.
    pub fn upstream_bnd(&self) -> Option<BndObservation> {
        self.inner.upstreams.bnd()
    }

    /// Connection tasks alive (handshaking, masked or relaying).
    pub fn live_connections(&self) -> usize {
        self.inner.live.get()
    }

    /// Stops accepting, lets sessions end for up to `grace`, then cuts the rest.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop_accepting();
        let deadline = Instant::now() + grace;
        while self.inner.live.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.inner.cut.send(true);
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.inner.live.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }

    fn stop_accepting(&self) {
        if self.inner.accepting.swap(false, Ordering::Relaxed) {
            self.inner
                .stats
                .events()
                .push("admission.state", "accepting=false reason=shutdown");
            tracing::info!("client listeners stopped accepting");
        }
        let _ = self.inner.stop_accepting.send(true);
    }
}

impl Drop for DataplaneHandle {
    fn drop(&mut self) {
        self.stop_accepting();
        let _ = self.inner.cut.send(true);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner_for(cfg: &Config) -> Arc<Inner> {
        let Rebuilt { policy, .. } = Policy::build(cfg, None, 1);
        let stats = Stats::new(std::time::SystemTime::now());
        Arc::new(Inner {
            upstreams: Arc::new(Upstreams::new(cfg, Arc::clone(&stats))),
            stats,
            policy: ArcSwap::from_pointee(policy),
            rebuild: Mutex::new(()),
            retirer: config::Retirer::new("policy-retire"),
            hints: handshake::IpHints::new(),
            accepting: AtomicBool::new(true),
            stop_accepting: watch::Sender::new(false),
            cut: watch::Sender::new(false),
            live: Live(AtomicUsize::new(0)),
            local_addrs: Vec::new(),
        })
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
        } = Policy::build(&c2, Some(&p1), 2);
        let closed: Vec<&str> = to_close.iter().map(|u| &*u.name).collect();
        assert_eq!(closed, vec!["bob", "carol"]);
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
}
