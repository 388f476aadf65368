//! The data plane's view of one published config: precomputed per-user matching state and
//! every knob a session reads, rebuilt on each publish and swapped in atomically.
//!
//! Owns: [`Policy`] (what new connections use), [`UserRuntime`] (per user, stable across
//! publishes while the secret is unchanged: limits are atomics updated in place, and a close
//! generation that live sessions watch). Must not: do I/O or block (built inside the store's
//! synchronous publish hook).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use config::{Config, IpPolicyMode};
use ipnet::IpNet;
use proto::{
    FlightPlan, FlightTable, FullFlightBudget, ShardedReplayCache, TagSet, TlsPolicy, Transport,
    UserKey, UserTable, OBFS_REPLAY_KEY_LEN, TLS_REPLAY_KEY_LEN,
};
use stats::UniqueIpMode;
use tokio::sync::watch;

use crate::dc::DcRouting;

/// Sentinel for "no limit" in the atomics below.
pub(crate) const NO_LIMIT: u64 = u64::MAX;
/// Sentinel for "never expires".
pub(crate) const NEVER: i64 = i64::MAX;

/// One configured user as live sessions see it.
pub(crate) struct UserRuntime {
    pub(crate) name: Arc<str>,
    pub(crate) secret: [u8; 16],
    /// Matching state precomputed once per user (reused across config publishes).
    key: UserKey,
    /// Bumped to close every session started before the bump.
    pub(crate) close_gen: watch::Sender<u64>,
    pub(crate) quota_bytes: AtomicU64,
    pub(crate) expires_at_unix: AtomicI64,
    /// 0 = unlimited.
    pub(crate) max_tcp_conns: AtomicUsize,
    /// 0 = unlimited.
    pub(crate) max_unique_ips: AtomicUsize,
    /// `access.user_rate_limits` (shared by every session of the user).
    pub(crate) rate: crate::ratelimit::Pair,
    /// Unix seconds this entry appeared: a scheduled quota reset is due only for boundaries
    /// after it (or after the last reset), so adding a schedule does not reset at once.
    pub(crate) reset_baseline: AtomicI64,
}

impl UserRuntime {
    fn new(name: &str, secret: [u8; 16]) -> Self {
        Self {
            name: Arc::from(name),
            secret,
            key: UserKey::new(secret),
            close_gen: watch::Sender::new(0),
            quota_bytes: AtomicU64::new(NO_LIMIT),
            expires_at_unix: AtomicI64::new(NEVER),
            max_tcp_conns: AtomicUsize::new(0),
            max_unique_ips: AtomicUsize::new(0),
            rate: crate::ratelimit::Pair::new(config::RateLimitBps::default()),
            reset_baseline: AtomicI64::new(crate::admission::unix_now()),
        }
    }

    /// Closes every live session of this user (new sessions are unaffected).
    pub(crate) fn close_sessions(&self) {
        self.close_gen.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Whether the user is expired at `now_unix`.
    pub(crate) fn expired(&self, now_unix: i64) -> bool {
        self.expires_at_unix.load(Ordering::Relaxed) <= now_unix
    }

    /// Stores this user's limits. `limits` holds the per-user table entries found for it (the
    /// effective-value rules are config's, docs/DECISIONS.md #20).
    fn set_limits(&self, a: &config::Access, limits: &UserLimits<'_>) {
        self.quota_bytes
            .store(limits.quota.copied().unwrap_or(NO_LIMIT), Ordering::Relaxed);
        self.expires_at_unix.store(
            limits.expiration.map_or(NEVER, |t| t.unix_timestamp()),
            Ordering::Relaxed,
        );
        let cap = |per_user: Option<&usize>, global_each: usize| {
            config::effective_cap(per_user.copied(), global_each).unwrap_or(0)
        };
        self.max_tcp_conns.store(
            cap(limits.max_tcp_conns, a.user_max_tcp_conns_global_each),
            Ordering::Relaxed,
        );
        self.max_unique_ips.store(
            cap(limits.max_unique_ips, a.user_max_unique_ips_global_each),
            Ordering::Relaxed,
        );
        self.rate.set(limits.rate.copied().unwrap_or_default());
    }
}

/// One user's entries in the per-user access tables.
struct UserLimits<'a> {
    quota: Option<&'a u64>,
    expiration: Option<&'a time::OffsetDateTime>,
    max_tcp_conns: Option<&'a usize>,
    max_unique_ips: Option<&'a usize>,
    rate: Option<&'a config::RateLimitBps>,
}

/// Walks a name-sorted map alongside the (equally sorted) user list, so a rebuild over N users
/// costs O(N) string comparisons instead of N tree lookups per table.
struct SortedCursor<'a, V> {
    it: std::iter::Peekable<std::collections::btree_map::Iter<'a, String, V>>,
}

impl<'a, V> SortedCursor<'a, V> {
    fn new(map: &'a std::collections::BTreeMap<String, V>) -> Self {
        Self {
            it: map.iter().peekable(),
        }
    }

    /// The value for `name`; names must be asked for in ascending order.
    fn seek(&mut self, name: &str) -> Option<&'a V> {
        while self.it.next_if(|(k, _)| k.as_str() < name).is_some() {}
        self.it.next_if(|(k, _)| k.as_str() == name).map(|(_, v)| v)
    }
}

/// Where bad clients are sent (docs/PROTOCOL.md §4.8).
#[derive(Clone, Debug)]
pub(crate) enum MaskTarget {
    /// `censorship.mask = false`: read and discard, then close.
    Discard,
    /// TCP host and port.
    Tcp { host: String, port: u16 },
    /// Unix socket path.
    Unix(String),
}

/// `[server]` PROXY-protocol settings.
#[derive(Clone, Debug)]
pub(crate) struct ProxyProtocolPolicy {
    pub(crate) enabled_default: bool,
    pub(crate) per_listener: HashMap<IpAddr, bool>,
    pub(crate) trusted: Vec<IpNet>,
    pub(crate) header_timeout: Duration,
}

impl ProxyProtocolPolicy {
    /// Whether connections accepted on `local` must start with a PROXY header.
    pub(crate) fn enabled_for(&self, local: &SocketAddr) -> bool {
        self.per_listener
            .get(&local.ip())
            .copied()
            .unwrap_or(self.enabled_default)
    }

    /// Whether `peer` may send a PROXY header.
    pub(crate) fn trusts(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.trusted.iter().any(|n| n.contains(&peer))
    }
}

/// Relay idle policy (`[timeouts]`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdlePolicy {
    pub(crate) v2: bool,
    pub(crate) soft: Duration,
    pub(crate) hard: Duration,
    pub(crate) grace: Duration,
}

/// Everything a new connection needs, for one config publish.
pub(crate) struct Policy {
    pub(crate) generation: u64,
    /// Sorted by name (the order of `access.users`); indices match `table`.
    pub(crate) users: Vec<Arc<UserRuntime>>,
    pub(crate) table: UserTable,
    pub(crate) tls: TlsPolicy,
    pub(crate) tls_enabled: bool,
    pub(crate) plain_enabled: bool,
    pub(crate) plain_tags: TagSet,
    pub(crate) tls_tags: TagSet,
    pub(crate) replay: Arc<ReplayCaches>,
    pub(crate) mask: MaskTarget,
    pub(crate) mask_proxy_protocol: u8,
    /// `censorship.tls_emulation`: flights follow the learned origin (docs/PROTOCOL.md §4.9).
    pub(crate) tls_emulation: bool,
    /// The flight when emulation is off: `fake_cert_len` random bytes, 13 01.
    pub(crate) legacy_flights: FlightTable,
    /// Who had the full emulated flight recently (`tls_full_cert_ttl_secs`, kept across
    /// publishes; docs/PROTOCOL.md §4.9). Consulted only with `tls_emulation`.
    pub(crate) full_flight: Arc<FullFlightBudget>,
    /// `censorship.tls_record_shaping`: small records first to ee clients.
    pub(crate) tls_record_shaping: bool,
    /// Ad tags for the middle-proxy route: `access.user_ad_tags`, else `general.ad_tag`.
    pub(crate) ad_tags: AdTags,
    /// `general.max_client_frame` (middle-proxy route, docs/PROTOCOL.md §3.4).
    pub(crate) max_client_frame: usize,
    /// `server_hello_delay_*` when set.
    pub(crate) hello_delay_ms: Option<(u64, u64)>,
    pub(crate) client_handshake: Duration,
    pub(crate) accept_permit_timeout: Duration,
    pub(crate) idle: IdlePolicy,
    pub(crate) dc: DcRouting,
    pub(crate) fast_mode: bool,
    pub(crate) ip_mode: UniqueIpMode,
    pub(crate) ip_window: Duration,
    pub(crate) proxy_protocol: ProxyProtocolPolicy,
    /// `access.cidr_rate_limits`.
    pub(crate) cidr_rates: crate::ratelimit::CidrLimits,
    /// Users with a scheduled quota reset (`access.user_quota_reset`).
    pub(crate) quota_resets: Vec<(Arc<UserRuntime>, config::QuotaResetSchedule)>,
}

/// Ad tags sent in RPC_PROXY_REQ (hot-reloaded with the policy).
#[derive(Debug, Clone, Default)]
pub(crate) struct AdTags {
    pub(crate) global: Option<[u8; 16]>,
    pub(crate) per_user: std::collections::HashMap<String, [u8; 16]>,
}

impl AdTags {
    /// The tag for `user`: their own, else the global one.
    pub(crate) fn for_user(&self, user: &str) -> Option<[u8; 16]> {
        self.per_user.get(user).copied().or(self.global)
    }
}

/// The replay caches (docs/PROTOCOL.md §5), kept across publishes; resized in place when
/// `replay_check_len` / `replay_window_secs` change.
pub(crate) struct ReplayCaches {
    pub(crate) obfs: ShardedReplayCache<OBFS_REPLAY_KEY_LEN>,
    pub(crate) tls: ShardedReplayCache<TLS_REPLAY_KEY_LEN>,
    params: parking_lot::Mutex<(usize, u64)>,
}

/// telemt shards its replay table 64 ways.
const REPLAY_SHARDS: usize = 64;

impl ReplayCaches {
    fn windows(window_secs: u64) -> (Duration, Duration) {
        let window = Duration::from_secs(window_secs);
        // The TLS table must outlive the accepted clock skew (±120 s), or a captured hello
        // could be replayed once its entry expired.
        (window, window.max(Duration::from_secs(240)))
    }

    fn new(capacity: usize, window_secs: u64) -> Self {
        let (obfs, tls) = Self::windows(window_secs);
        Self {
            obfs: ShardedReplayCache::new(capacity, obfs, REPLAY_SHARDS),
            tls: ShardedReplayCache::new(capacity, tls, REPLAY_SHARDS),
            params: parking_lot::Mutex::new((capacity, window_secs)),
        }
    }

    fn update(&self, capacity: usize, window_secs: u64) {
        let mut p = self.params.lock();
        if *p != (capacity, window_secs) {
            let (obfs, tls) = Self::windows(window_secs);
            self.obfs.set_limits(capacity, obfs);
            self.tls.set_limits(capacity, tls);
            *p = (capacity, window_secs);
        }
    }
}

/// Result of a rebuild: the new policy, the users whose live sessions must end (deleted or
/// secret changed: the entry is compared by secret, so a user re-created under the same name
/// with a new secret is a different entry) and the names that left the config.
pub(crate) struct Rebuilt {
    pub(crate) policy: Policy,
    pub(crate) to_close: Vec<Arc<UserRuntime>>,
    pub(crate) removed: Vec<Arc<str>>,
}

impl Policy {
    /// Builds the policy for `cfg`, reusing `prev`'s per-user state where the secret is
    /// unchanged. Users that disappeared or whose secret changed are returned in `to_close`.
    pub(crate) fn build(cfg: &Config, prev: Option<&Policy>, generation: u64) -> Rebuilt {
        // `access.users` is a BTreeMap and `prev.users` was built from one, so both lists are
        // sorted by name: a merge-join pairs them without hashing (this runs on every API
        // write, under the store lock, with up to tens of thousands of users).
        let a = &cfg.access;
        let mut users = Vec::with_capacity(a.users.len());
        let mut to_close = Vec::new();
        let mut removed = Vec::new();
        let mut old = prev
            .map(|p| p.users.iter())
            .into_iter()
            .flatten()
            .peekable();
        let (mut quota, mut expiration) = (
            SortedCursor::new(&a.user_data_quota),
            SortedCursor::new(&a.user_expirations),
        );
        let (mut tcp, mut ips, mut rates) = (
            SortedCursor::new(&a.user_max_tcp_conns),
            SortedCursor::new(&a.user_max_unique_ips),
            SortedCursor::new(&a.user_rate_limits),
        );
        for (name, secret) in &a.users {
            while let Some(gone) = old.next_if(|u| &*u.name < name.as_str()) {
                if !a.users.contains_key(&*gone.name) {
                    removed.push(Arc::clone(&gone.name));
                }
                to_close.push(Arc::clone(gone));
            }
            if !a.user_enabled(name) {
                // A disabled user is not matched at all: its clients take the mask path like
                // any unknown client, and its live sessions are closed (the entry is gone
                // from the policy). Its secret, limits and counters stay.
                if let Some(was) = old.next_if(|u| &*u.name == name.as_str()) {
                    to_close.push(Arc::clone(was));
                }
                continue;
            }
            let user = match old.next_if(|u| &*u.name == name.as_str()) {
                Some(u) if u.secret == secret.0 => Arc::clone(u),
                Some(rotated) => {
                    to_close.push(Arc::clone(rotated));
                    Arc::new(UserRuntime::new(name, secret.0))
                }
                None => Arc::new(UserRuntime::new(name, secret.0)),
            };
            let limits = UserLimits {
                quota: quota.seek(name),
                expiration: expiration.seek(name),
                max_tcp_conns: tcp.seek(name),
                max_unique_ips: ips.seek(name),
                rate: rates.seek(name),
            };
            user.set_limits(a, &limits);
            users.push(user);
        }
        for gone in old {
            if !a.users.contains_key(&*gone.name) {
                removed.push(Arc::clone(&gone.name));
            }
            to_close.push(Arc::clone(gone));
        }
        let table = UserTable::from_keys(users.iter().map(|u| u.key));

        let g = &cfg.general;
        let c = &cfg.censorship;
        let a = &cfg.access;
        let t = &cfg.timeouts;
        let replay = match prev {
            Some(p) => {
                p.replay.update(a.replay_check_len, a.replay_window_secs);
                Arc::clone(&p.replay)
            }
            None => Arc::new(ReplayCaches::new(a.replay_check_len, a.replay_window_secs)),
        };
        let full_flight = match prev {
            Some(p) => {
                p.full_flight.set_ttl(c.tls_full_cert_ttl_secs);
                Arc::clone(&p.full_flight)
            }
            None => Arc::new(FullFlightBudget::new(c.tls_full_cert_ttl_secs)),
        };
        let allowed_domains = c.all_tls_domains().map(str::to_owned).collect();
        let tls = TlsPolicy {
            allowed_domains,
            unknown_sni: match c.unknown_sni_action {
                config::UnknownSniAction::Drop => proto::UnknownSniAction::Drop,
                config::UnknownSniAction::Mask => proto::UnknownSniAction::Mask,
                config::UnknownSniAction::Accept => proto::UnknownSniAction::Accept,
                config::UnknownSniAction::RejectHandshake => {
                    proto::UnknownSniAction::RejectHandshake
                }
            },
            alpn_enforce: c.alpn_enforce,
            time: proto::TimeWindow {
                ignore: a.ignore_time_skew,
                max_skew_secs: 120,
                boot_ts_max: a.replay_window_secs.min(120) as u32,
            },
        };
        let mask = if !c.mask {
            MaskTarget::Discard
        } else if let Some(sock) = &c.mask_unix_sock {
            MaskTarget::Unix(sock.clone())
        } else {
            MaskTarget::Tcp {
                host: c.mask_host.clone().unwrap_or_else(|| c.tls_domain.clone()),
                port: c.mask_port,
            }
        };
        let modes = &g.modes;
        let quota_resets = a
            .user_quota_reset
            .iter()
            .filter_map(|(name, sched)| {
                let i = users
                    .binary_search_by(|u| (*u.name).cmp(name.as_str()))
                    .ok()?;
                Some((Arc::clone(&users[i]), *sched))
            })
            .collect();
        let policy = Policy {
            generation,
            users,
            table,
            tls,
            tls_enabled: modes.tls || modes.classic,
            plain_enabled: modes.classic || modes.secure,
            plain_tags: TagSet::for_modes(
                modes.classic,
                modes.secure,
                modes.tls,
                Transport::PlainTcp,
            ),
            tls_tags: TagSet::for_modes(
                modes.classic,
                modes.secure,
                modes.tls,
                Transport::InsideTls,
            ),
            replay,
            mask,
            mask_proxy_protocol: c.mask_proxy_protocol,
            tls_emulation: c.tls_emulation,
            full_flight,
            tls_record_shaping: c.tls_record_shaping,
            ad_tags: AdTags {
                global: cfg.general.ad_tag.map(|t| t.0),
                per_user: cfg
                    .access
                    .user_ad_tags
                    .iter()
                    .map(|(u, t)| (u.clone(), t.0))
                    .collect(),
            },
            max_client_frame: cfg.general.max_client_frame.max(4),
            legacy_flights: FlightTable {
                plans: Vec::new(),
                fallback: FlightPlan {
                    cipher: proto::DEFAULT_CIPHER,
                    versions_first: false,
                    app_data_len: c.fake_cert_len.clamp(64, 16384),
                    jitter: 0,
                    // Without emulation there is no learned flight to shorten: every client
                    // gets `fake_cert_len` (the budget is not consulted either).
                    compact_len: c.fake_cert_len.clamp(64, 16384),
                    delay_ms: (8, 24),
                },
            },
            hello_delay_ms: c.hello_delay_override_ms().map(|(lo, hi)| (lo, hi.max(lo))),
            client_handshake: Duration::from_secs(t.client_handshake.max(1)),
            accept_permit_timeout: Duration::from_millis(cfg.server.accept_permit_timeout_ms),
            idle: IdlePolicy {
                v2: t.relay_idle_policy_v2_enabled,
                soft: Duration::from_secs(t.relay_client_idle_soft_secs.max(1)),
                hard: Duration::from_secs(t.relay_client_idle_hard_secs.max(1)),
                grace: Duration::from_secs(t.relay_idle_grace_after_downstream_activity_secs),
            },
            dc: DcRouting::from_config(cfg),
            fast_mode: g.fast_mode,
            ip_mode: match a.user_max_unique_ips_mode {
                IpPolicyMode::ActiveWindow => UniqueIpMode::ActiveWindow,
                IpPolicyMode::TimeWindow => UniqueIpMode::TimeWindow,
                IpPolicyMode::Combined => UniqueIpMode::Combined,
            },
            ip_window: Duration::from_secs(a.user_max_unique_ips_window_secs),
            proxy_protocol: ProxyProtocolPolicy {
                enabled_default: cfg.server.proxy_protocol,
                per_listener: cfg
                    .server
                    .listeners
                    .iter()
                    .filter_map(|l| l.proxy_protocol.map(|p| (l.ip, p)))
                    .collect(),
                trusted: cfg.server.proxy_protocol_trusted_cidrs.clone(),
                header_timeout: Duration::from_millis(
                    cfg.server.proxy_protocol_header_timeout_ms.max(1),
                ),
            },
            quota_resets,
            cidr_rates: crate::ratelimit::CidrLimits::build(
                &a.cidr_rate_limits,
                prev.map(|p| &p.cidr_rates),
            ),
        };
        Rebuilt {
            policy,
            to_close,
            removed,
        }
    }

    /// The user called `name`.
    #[cfg(test)]
    pub(crate) fn user(&self, name: &str) -> Option<&Arc<UserRuntime>> {
        self.user_index(name).and_then(|i| self.users.get(i))
    }

    /// Index of `name` in `users` / `table` (binary search: the list is sorted by name).
    #[cfg(test)]
    pub(crate) fn user_index(&self, name: &str) -> Option<usize> {
        self.users.binary_search_by(|u| (*u.name).cmp(name)).ok()
    }
}
