//! `IpTracker`: per-user unique source IPs for `access.user_max_unique_ips` and the
//! `UserInfo.active_unique_ips*` / `recent_unique_ips*` views.
//!
//! Each user keeps, per IP, a live-connection refcount and the last time the IP was seen
//! (admitted or released). Policy modes (`access.user_max_unique_ips_mode`):
//! - `active_window`: a new IP is refused when the user already has `limit` IPs connected now;
//! - `time_window`: a new IP is refused when `limit` distinct IPs were seen within the window;
//! - `combined`: refused when either holds.
//!
//! An IP that is connected now, or was seen within the window, is not a new IP. Time is injected
//! (`now: Instant`) so tests drive a fake clock. Per-connection work only (never per packet);
//! state is sharded by username to keep lock hold times short.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

const SHARDS: usize = 16;

/// Unique-IP policy mode (mirrors the config's `user_max_unique_ips_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UniqueIpMode {
    /// Count only currently connected IPs.
    #[default]
    ActiveWindow,
    /// Count IPs seen within the window.
    TimeWindow,
    /// Refuse when either count reaches the limit.
    Combined,
}

impl UniqueIpMode {
    /// The config/API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ActiveWindow => "active_window",
            Self::TimeWindow => "time_window",
            Self::Combined => "combined",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct IpEntry {
    active: u32,
    last_seen: Instant,
}

type UserIps = HashMap<IpAddr, IpEntry>;

fn within(entry: &IpEntry, window: Duration, now: Instant) -> bool {
    entry.active > 0 || now.saturating_duration_since(entry.last_seen) <= window
}

/// Unique-IP state of all users.
#[derive(Debug)]
pub struct IpTracker {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<String, UserIps>>>,
}

impl Default for IpTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl IpTracker {
    /// Empty tracker.
    pub fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, user: &str) -> &Mutex<HashMap<String, UserIps>> {
        let idx = (self.hasher.hash_one(user) as usize) % SHARDS;
        &self.shards[idx]
    }

    /// Admits a connection of `user` from `ip` unless the unique-IP limit forbids it.
    /// `limit` of `None` or `Some(0)` means unlimited. On success the IP's live refcount is
    /// incremented; pair every `true` with one [`IpTracker::release`].
    pub fn try_admit(
        &self,
        user: &str,
        ip: IpAddr,
        limit: Option<usize>,
        mode: UniqueIpMode,
        window: Duration,
        now: Instant,
    ) -> bool {
        let mut shard = self.shard(user).lock();
        let ips = match shard.get_mut(user) {
            Some(ips) => ips,
            None => shard.entry(user.to_owned()).or_default(),
        };
        ips.retain(|_, e| within(e, window, now));

        if let Some(entry) = ips.get_mut(&ip) {
            if entry.active > 0 {
                entry.active = entry.active.saturating_add(1);
                entry.last_seen = now;
                return true;
            }
        }
        let is_new = !ips.contains_key(&ip);
        if let Some(limit) = limit.filter(|l| *l > 0) {
            let active_len = ips.values().filter(|e| e.active > 0).count();
            let recent_len = ips.len();
            let active_reached = active_len >= limit;
            let recent_reached = is_new && recent_len >= limit;
            let deny = match mode {
                UniqueIpMode::ActiveWindow => active_reached,
                UniqueIpMode::TimeWindow => recent_reached,
                UniqueIpMode::Combined => active_reached || recent_reached,
            };
            if deny {
                return false;
            }
        }
        ips.insert(
            ip,
            IpEntry {
                active: 1,
                last_seen: now,
            },
        );
        true
    }

    /// Ends one admitted connection of `user` from `ip`; the IP stays "recent" from `now`.
    pub fn release(&self, user: &str, ip: IpAddr, now: Instant) {
        let mut shard = self.shard(user).lock();
        if let Some(entry) = shard.get_mut(user).and_then(|ips| ips.get_mut(&ip)) {
            entry.active = entry.active.saturating_sub(1);
            entry.last_seen = now;
        }
    }

    /// Drops all IP state of `user` (user deleted).
    pub fn forget(&self, user: &str) {
        self.shard(user).lock().remove(user);
    }

    /// IPs of `user` with live connections, sorted (v4 before v6).
    pub fn active_ips(&self, user: &str) -> Vec<IpAddr> {
        let shard = self.shard(user).lock();
        let mut out: Vec<IpAddr> = shard
            .get(user)
            .map(|ips| {
                ips.iter()
                    .filter(|(_, e)| e.active > 0)
                    .map(|(ip, _)| *ip)
                    .collect()
            })
            .unwrap_or_default();
        out.sort_unstable();
        out
    }

    /// IPs of `user` connected now or seen within `window` before `now`, sorted (v4 before v6).
    pub fn recent_ips(&self, user: &str, window: Duration, now: Instant) -> Vec<IpAddr> {
        let shard = self.shard(user).lock();
        let mut out: Vec<IpAddr> = shard
            .get(user)
            .map(|ips| {
                ips.iter()
                    .filter(|(_, e)| within(e, window, now))
                    .map(|(ip, _)| *ip)
                    .collect()
            })
            .unwrap_or_default();
        out.sort_unstable();
        out
    }

    /// `(users, entries)` with live connections, and `(users, entries)` connected or seen
    /// within `window` (for metrics; walks every shard once).
    pub fn counts(&self, window: Duration, now: Instant) -> ((usize, usize), (usize, usize)) {
        let (mut active, mut recent) = ((0, 0), (0, 0));
        for shard in &self.shards {
            for ips in shard.lock().values() {
                let a = ips.values().filter(|e| e.active > 0).count();
                let r = ips.values().filter(|e| within(e, window, now)).count();
                active.0 += usize::from(a > 0);
                active.1 += a;
                recent.0 += usize::from(r > 0);
                recent.1 += r;
            }
        }
        (active, recent)
    }

    /// Drops entries that are neither connected nor seen within `window`, and users left with
    /// no entries. Call periodically to bound memory.
    pub fn prune(&self, window: Duration, now: Instant) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            shard.retain(|_, ips| {
                ips.retain(|_, e| within(e, window, now));
                !ips.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn active_window_counts_only_live_ips() {
        let t = IpTracker::new();
        let t0 = Instant::now();
        let m = UniqueIpMode::ActiveWindow;
        assert!(t.try_admit("u", ip("10.0.0.1"), Some(2), m, W, t0));
        assert!(t.try_admit("u", ip("10.0.0.2"), Some(2), m, W, t0));
        assert!(!t.try_admit("u", ip("10.0.0.3"), Some(2), m, W, t0));
        // A second connection from an active IP is not a new IP.
        assert!(t.try_admit("u", ip("10.0.0.1"), Some(2), m, W, t0));
        // Releasing one of two connections keeps the IP active.
        t.release("u", ip("10.0.0.1"), t0);
        assert!(!t.try_admit("u", ip("10.0.0.3"), Some(2), m, W, t0));
        t.release("u", ip("10.0.0.1"), t0);
        // Now only 10.0.0.2 is live: a new IP fits immediately, the window is irrelevant.
        assert!(t.try_admit("u", ip("10.0.0.3"), Some(2), m, W, t0));
        assert_eq!(t.active_ips("u"), vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        // Other users are independent.
        assert!(t.try_admit("v", ip("10.0.0.9"), Some(1), m, W, t0));
    }

    #[test]
    fn time_window_remembers_recent_ips() {
        let t = IpTracker::new();
        let t0 = Instant::now();
        let m = UniqueIpMode::TimeWindow;
        assert!(t.try_admit("u", ip("10.0.0.1"), Some(1), m, W, t0));
        t.release("u", ip("10.0.0.1"), t0);
        // Disconnected, but seen within the window: a new IP is still refused...
        assert!(!t.try_admit(
            "u",
            ip("10.0.0.2"),
            Some(1),
            m,
            W,
            t0 + Duration::from_secs(10)
        ));
        // ...while the same IP coming back is not new.
        assert!(t.try_admit(
            "u",
            ip("10.0.0.1"),
            Some(1),
            m,
            W,
            t0 + Duration::from_secs(20)
        ));
        t.release("u", ip("10.0.0.1"), t0 + Duration::from_secs(20));
        assert!(!t.try_admit(
            "u",
            ip("10.0.0.2"),
            Some(1),
            m,
            W,
            t0 + Duration::from_secs(50)
        ));
        // After the window has passed since it was last seen, the slot frees up.
        let later = t0 + Duration::from_secs(51);
        assert!(t.try_admit("u", ip("10.0.0.2"), Some(1), m, W, later));
        assert_eq!(t.recent_ips("u", W, later), vec![ip("10.0.0.2")]);
    }

    #[test]
    fn time_window_ignores_active_count_when_ips_are_recent() {
        // limit 2, time_window: two recent IPs (one disconnected) block a third even though
        // only one is live — the active count alone would have allowed it.
        let t = IpTracker::new();
        let t0 = Instant::now();
        let m = UniqueIpMode::TimeWindow;
        assert!(t.try_admit("u", ip("10.0.0.1"), Some(2), m, W, t0));
        assert!(t.try_admit("u", ip("10.0.0.2"), Some(2), m, W, t0));
        t.release("u", ip("10.0.0.2"), t0);
        assert!(!t.try_admit("u", ip("10.0.0.3"), Some(2), m, W, t0));
        assert!(t.try_admit(
            "u",
            ip("10.0.0.3"),
            Some(2),
            UniqueIpMode::ActiveWindow,
            W,
            t0
        ));
    }

    #[test]
    fn combined_refuses_when_either_limit_holds() {
        let t = IpTracker::new();
        let t0 = Instant::now();
        let m = UniqueIpMode::Combined;
        assert!(t.try_admit("u", ip("10.0.0.1"), Some(1), m, W, t0));
        // Active limit reached.
        assert!(!t.try_admit("u", ip("10.0.0.2"), Some(1), m, W, t0));
        t.release("u", ip("10.0.0.1"), t0 + Duration::from_secs(1));
        // Not active any more, but recent limit reached.
        assert!(!t.try_admit(
            "u",
            ip("10.0.0.2"),
            Some(1),
            m,
            W,
            t0 + Duration::from_secs(5)
        ));
        // Both clear after the window.
        assert!(t.try_admit(
            "u",
            ip("10.0.0.2"),
            Some(1),
            m,
            W,
            t0 + Duration::from_secs(40)
        ));
    }

    #[test]
    fn unlimited_and_zero_limit_admit_everything() {
        let t = IpTracker::new();
        let t0 = Instant::now();
        for i in 0..50u8 {
            let a = IpAddr::from([10, 0, 0, i]);
            assert!(t.try_admit("u", a, None, UniqueIpMode::Combined, W, t0));
            assert!(t.try_admit("w", a, Some(0), UniqueIpMode::Combined, W, t0));
        }
        assert_eq!(t.active_ips("u").len(), 50);
    }

    #[test]
    fn lists_sorted_v4_before_v6_and_forget() {
        let t = IpTracker::new();
        let t0 = Instant::now();
        let m = UniqueIpMode::ActiveWindow;
        for s in ["2001:db8::2", "192.168.1.1", "2001:db8::1", "10.0.0.5"] {
            assert!(t.try_admit("u", ip(s), None, m, W, t0));
        }
        t.release("u", ip("192.168.1.1"), t0);
        assert_eq!(
            t.active_ips("u"),
            vec![ip("10.0.0.5"), ip("2001:db8::1"), ip("2001:db8::2")]
        );
        assert_eq!(
            t.recent_ips("u", W, t0),
            vec![
                ip("10.0.0.5"),
                ip("192.168.1.1"),
                ip("2001:db8::1"),
                ip("2001:db8::2")
            ]
        );
        t.forget("u");
        assert!(t.active_ips("u").is_empty());
        assert!(t.recent_ips("u", W, t0).is_empty());
        assert!(t.active_ips("nobody").is_empty());
    }

    #[test]
    fn prune_drops_stale_entries_only() {
        let t = IpTracker::new();
        let t0 = Instant::now();
        let m = UniqueIpMode::TimeWindow;
        assert!(t.try_admit("u", ip("10.0.0.1"), None, m, W, t0));
        assert!(t.try_admit("u", ip("10.0.0.2"), None, m, W, t0));
        t.release("u", ip("10.0.0.2"), t0);
        let later = t0 + Duration::from_secs(120);
        t.prune(W, later);
        // The live IP survives regardless of age; the stale one is gone.
        assert_eq!(t.recent_ips("u", W, later), vec![ip("10.0.0.1")]);
        t.release("u", ip("10.0.0.1"), later);
        t.prune(W, later + Duration::from_secs(31));
        assert!(t.recent_ips("u", W, later).is_empty());
    }

    #[test]
    fn mode_names() {
        assert_eq!(UniqueIpMode::ActiveWindow.as_str(), "active_window");
        assert_eq!(UniqueIpMode::TimeWindow.as_str(), "time_window");
        assert_eq!(UniqueIpMode::Combined.as_str(), "combined");
    }
}
