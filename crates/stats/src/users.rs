//! Per-user accounting: live connections, octets in each direction, quota usage.
//!
//! Lookup is a `RwLock<HashMap<String, Arc<UserStats>>>`: a session resolves its user once and
//! caches the `Arc`, so the relay's per-chunk accounting is two relaxed atomic adds with no
//! lock and no allocation. The map lock is only taken at session start, by API reads, and by
//! `forget` (user deleted).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::Counter;

/// Live counters of one user. Shared (`Arc`) between the registry and that user's sessions.
#[derive(Debug, Default)]
pub struct UserStats {
    current_connections: Counter,
    octets_from_client: Counter,
    octets_to_client: Counter,
    quota_used_bytes: Counter,
    /// Unix seconds of the last quota reset; 0 = never.
    last_quota_reset: Counter,
}

impl UserStats {
    /// Sets the quota counter back to zero (an operator's reset), remembering when.
    pub fn reset_quota(&self, now_epoch_secs: u64) {
        self.quota_used_bytes.set(0);
        self.last_quota_reset.set(now_epoch_secs);
    }

    /// Unix seconds of the last quota reset (0 = never).
    pub fn last_quota_reset_epoch_secs(&self) -> u64 {
        self.last_quota_reset.get()
    }

    /// Counts `n` octets read from the client (client → proxy). Also counts towards the quota.
    #[inline]
    pub fn add_octets_from_client(&self, n: u64) {
        self.octets_from_client.add(n);
        self.quota_used_bytes.add(n);
    }

    /// Counts `n` octets written to the client (proxy → client). Also counts towards the quota.
    #[inline]
    pub fn add_octets_to_client(&self, n: u64) {
        self.octets_to_client.add(n);
        self.quota_used_bytes.add(n);
    }

    /// Live connections of this user.
    #[inline]
    pub fn current_connections(&self) -> u64 {
        self.current_connections.get()
    }

    /// Bytes counted against the data quota.
    #[inline]
    pub fn quota_used_bytes(&self) -> u64 {
        self.quota_used_bytes.get()
    }

    /// Cumulative octets in both directions.
    #[inline]
    pub fn total_octets(&self) -> u64 {
        self.octets_from_client
            .get()
            .saturating_add(self.octets_to_client.get())
    }

    /// Registers one live connection; it ends when the guard drops.
    pub fn open_session(self: &Arc<Self>) -> UserSessionGuard {
        self.current_connections.inc();
        UserSessionGuard {
            stats: Arc::clone(self),
        }
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> UserStatsSnapshot {
        let octets_from_client = self.octets_from_client.get();
        let octets_to_client = self.octets_to_client.get();
        UserStatsSnapshot {
            current_connections: self.current_connections.get(),
            octets_from_client,
            octets_to_client,
            total_octets: octets_from_client.saturating_add(octets_to_client),
            quota_used_bytes: self.quota_used_bytes.get(),
        }
    }

    fn restore(&self, saved: &PersistedUser) {
        self.octets_from_client.set(saved.octets_from_client);
        self.octets_to_client.set(saved.octets_to_client);
        self.quota_used_bytes.set(saved.quota_used_bytes);
        self.last_quota_reset.set(saved.last_quota_reset_epoch_secs);
    }
}

/// Holds one live connection of a user; decrements `current_connections` on drop.
#[derive(Debug)]
pub struct UserSessionGuard {
    stats: Arc<UserStats>,
}

impl UserSessionGuard {
    /// The user's counters (for per-chunk octet accounting).
    pub fn stats(&self) -> &Arc<UserStats> {
        &self.stats
    }
}

impl Drop for UserSessionGuard {
    fn drop(&mut self) {
        self.stats.current_connections.dec();
    }
}

/// Point-in-time copy of one user's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatsSnapshot {
    /// Live connections.
    pub current_connections: u64,
    /// Octets client → proxy.
    pub octets_from_client: u64,
    /// Octets proxy → client.
    pub octets_to_client: u64,
    /// `octets_from_client + octets_to_client`.
    pub total_octets: u64,
    /// Bytes counted against the data quota.
    pub quota_used_bytes: u64,
}

/// One leaderboard row (`RuntimeEdgeConnectionUserData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserTopEntry {
    /// Username.
    pub username: String,
    /// Live connections.
    pub current_connections: u64,
    /// Cumulative octets in both directions.
    pub total_octets: u64,
}

/// What the state file keeps for one user (live connections are not persisted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PersistedUser {
    #[serde(default)]
    pub octets_from_client: u64,
    #[serde(default)]
    pub octets_to_client: u64,
    #[serde(default)]
    pub quota_used_bytes: u64,
    #[serde(default)]
    pub last_quota_reset_epoch_secs: u64,
}

/// All users' counters.
#[derive(Debug, Default)]
pub struct UserRegistry {
    users: RwLock<HashMap<String, Arc<UserStats>>>,
}

impl UserRegistry {
    /// Empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The user's counters, created on first use. Sessions call this once and cache the `Arc`.
    pub fn handle(&self, username: &str) -> Arc<UserStats> {
        if let Some(found) = self.users.read().get(username) {
            return Arc::clone(found);
        }
        let mut users = self.users.write();
        Arc::clone(users.entry(username.to_owned()).or_default())
    }

    /// The user's counters if that user has any.
    pub fn existing(&self, username: &str) -> Option<Arc<UserStats>> {
        self.users.read().get(username).cloned()
    }

    /// Snapshot of one user (O(1) lookup); `None` when nothing was ever counted for the user.
    pub fn get(&self, username: &str) -> Option<UserStatsSnapshot> {
        self.users.read().get(username).map(|u| u.snapshot())
    }

    /// Snapshot of one user, zeros when unknown.
    pub fn get_or_zero(&self, username: &str) -> UserStatsSnapshot {
        self.get(username).unwrap_or_default()
    }

    /// Drops a user's counters (user deleted). Live sessions keep their `Arc` until they close.
    pub fn forget(&self, username: &str) -> bool {
        self.users.write().remove(username).is_some()
    }

    /// Keeps only users for which `keep` returns true (prune users no longer configured).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.users.write().retain(|name, _| keep(name));
    }

    /// Number of users with counters.
    pub fn len(&self) -> usize {
        self.users.read().len()
    }

    /// True when no user has counters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Users with `current_connections > 0`.
    pub fn active_users(&self) -> usize {
        self.users
            .read()
            .values()
            .filter(|u| u.current_connections() > 0)
            .count()
    }

    /// Every user's snapshot, sorted by username (byte order).
    pub fn snapshot_all(&self) -> Vec<(String, UserStatsSnapshot)> {
        let mut rows: Vec<_> = self
            .users
            .read()
            .iter()
            .map(|(name, u)| (name.clone(), u.snapshot()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    /// Up to `n` users with live connections, most connections first (ties: username asc).
    pub fn top_by_connections(&self, n: usize) -> Vec<UserTopEntry> {
        self.top(n, |e| e.current_connections)
    }

    /// Up to `n` users with traffic, most cumulative octets first (ties: username asc).
    pub fn top_by_octets(&self, n: usize) -> Vec<UserTopEntry> {
        self.top(n, |e| e.total_octets)
    }

    fn top(&self, n: usize, key: impl Fn(&UserTopEntry) -> u64) -> Vec<UserTopEntry> {
        if n == 0 {
            return Vec::new();
        }
        let mut rows: Vec<UserTopEntry> = self
            .users
            .read()
            .iter()
            .map(|(name, u)| UserTopEntry {
                username: name.clone(),
                current_connections: u.current_connections(),
                total_octets: u.total_octets(),
            })
            .filter(|e| key(e) > 0)
            .collect();
        rows.sort_by(|a, b| {
            key(b)
                .cmp(&key(a))
                .then_with(|| a.username.cmp(&b.username))
        });
        rows.truncate(n);
        rows
    }

    /// Counters worth persisting (users with any traffic).
    pub(crate) fn persisted(&self) -> HashMap<String, PersistedUser> {
        self.users
            .read()
            .iter()
            .filter_map(|(name, u)| {
                let s = u.snapshot();
                let row = PersistedUser {
                    octets_from_client: s.octets_from_client,
                    octets_to_client: s.octets_to_client,
                    quota_used_bytes: s.quota_used_bytes,
                    last_quota_reset_epoch_secs: u.last_quota_reset_epoch_secs(),
                };
                (row != PersistedUser::default()).then(|| (name.clone(), row))
            })
            .collect()
    }

    /// Restores saved counters (overwrites octets and quota; live connections untouched).
    pub(crate) fn restore(&self, saved: &HashMap<String, PersistedUser>) {
        for (name, row) in saved {
            self.handle(name).restore(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_shared_and_counts() {
        let reg = UserRegistry::new();
        let a = reg.handle("alice");
        let a2 = reg.handle("alice");
        assert!(Arc::ptr_eq(&a, &a2));
        a.add_octets_from_client(100);
        a2.add_octets_to_client(50);
        let s = reg.get("alice").unwrap();
        assert_eq!(s.octets_from_client, 100);
        assert_eq!(s.octets_to_client, 50);
        assert_eq!(s.total_octets, 150);
        assert_eq!(s.quota_used_bytes, 150);
        assert!(reg.get("bob").is_none());
        assert_eq!(reg.get_or_zero("bob"), UserStatsSnapshot::default());
    }

    #[test]
    fn session_guard_tracks_connections() {
        let reg = UserRegistry::new();
        let h = reg.handle("u");
        let g1 = h.open_session();
        let g2 = h.open_session();
        assert_eq!(reg.get("u").unwrap().current_connections, 2);
        assert_eq!(reg.active_users(), 1);
        drop(g1);
        assert_eq!(g2.stats().current_connections(), 1);
        drop(g2);
        assert_eq!(reg.get("u").unwrap().current_connections, 0);
        assert_eq!(reg.active_users(), 0);
    }

    #[test]
    fn forget_and_retain() {
        let reg = UserRegistry::new();
        reg.handle("a").add_octets_to_client(1);
        reg.handle("b").add_octets_to_client(1);
        reg.handle("c").add_octets_to_client(1);
        assert!(reg.forget("a"));
        assert!(!reg.forget("a"));
        assert!(reg.get("a").is_none());
        reg.retain(|n| n != "b");
        let names: Vec<String> = reg.snapshot_all().into_iter().map(|r| r.0).collect();
        assert_eq!(names, vec!["c".to_owned()]);
        // A forgotten user starts again from zero.
        assert_eq!(reg.handle("a").total_octets(), 0);
    }

    #[test]
    fn leaderboards_sorted_and_limited() {
        let reg = UserRegistry::new();
        let a = reg.handle("a");
        let b = reg.handle("b");
        let c = reg.handle("c");
        reg.handle("idle");
        let _ga = a.open_session();
        let _gb1 = b.open_session();
        let _gb2 = b.open_session();
        let _gc = c.open_session();
        a.add_octets_from_client(10);
        c.add_octets_to_client(500);
        b.add_octets_to_client(20);

        let by_conn = reg.top_by_connections(10);
        let names: Vec<&str> = by_conn.iter().map(|e| e.username.as_str()).collect();
        assert_eq!(names, vec!["b", "a", "c"]);
        assert_eq!(by_conn[0].current_connections, 2);

        let by_oct = reg.top_by_octets(2);
        let names: Vec<&str> = by_oct.iter().map(|e| e.username.as_str()).collect();
        assert_eq!(names, vec!["c", "b"]);
        assert_eq!(by_oct[0].total_octets, 500);
        assert!(reg.top_by_octets(0).is_empty());
    }
}
