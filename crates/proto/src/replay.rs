//! Replay protection primitive (docs/PROTOCOL.md §5).
//!
//! Owns: a bounded, time-windowed set of recently seen handshake keys —
//! `I[8..56]` (48 bytes) for obfuscated2 inits, `D[0..16]` for fake-TLS
//! digests — and a sharded `&self` wrapper for concurrent use. Must not: read
//! the clock (`now` is passed in) or decide policy (the caller inserts an
//! obfuscated2 key only after a secret matched, and a TLS key just before the
//! ServerHello, so garbage can't evict real entries).
//!
//! ```text
//!  map: key → inserted_at          O(1) membership
//!  fifo: (key, inserted_at) …      oldest first; since the window is fixed,
//!                                  insertion order = expiry order
//!  expired  ⇔ now − inserted_at ≥ window    full ⇒ evict the oldest
//! ```

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Key length for obfuscated2 inits (`I[8..56]`).
pub const OBFS_REPLAY_KEY_LEN: usize = 48;
/// Key length for fake-TLS digests (`D[0..16]`).
pub const TLS_REPLAY_KEY_LEN: usize = 16;

/// Outcome of [`ReplayCache::check_and_insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Not seen within the window; now remembered.
    Fresh,
    /// Seen within the window: treat like a wrong secret (masking).
    Replay,
}

/// A bounded replay cache (single-threaded; see [`ShardedReplayCache`]).
#[derive(Debug)]
pub struct ReplayCache<const N: usize> {
    map: HashMap<[u8; N], Instant>,
    fifo: VecDeque<([u8; N], Instant)>,
    capacity: usize,
    window: Duration,
}

impl<const N: usize> ReplayCache<N> {
    /// At most `capacity` keys (min 1), each remembered for `window`.
    pub fn new(capacity: usize, window: Duration) -> Self {
        Self {
            map: HashMap::new(),
            fifo: VecDeque::new(),
            capacity,
            window,
        }
    }

    /// Changes the limits (config reload); extra entries go on the next insert.
    pub fn set_limits(&mut self, capacity: usize, window: Duration) {
        self.capacity = capacity;
        self.window = window;
        if capacity == 0 {
            self.map.clear();
            self.fifo.clear();
        }
    }

    /// Live entries (expired ones may linger until the next mutation).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn expired(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) >= self.window
    }

    /// Drops expired entries.
    pub fn purge(&mut self, now: Instant) {
        while let Some(&(key, at)) = self.fifo.front() {
            if !self.expired(at, now) {
                break;
            }
            self.fifo.pop_front();
            self.forget(&key, at);
        }
    }

    fn forget(&mut self, key: &[u8; N], at: Instant) {
        // Only remove the map entry this fifo slot belongs to.
        if self.map.get(key) == Some(&at) {
            self.map.remove(key);
        }
    }

    /// Whether `key` was seen within the window (no insertion).
    pub fn contains(&self, key: &[u8; N], now: Instant) -> bool {
        self.map.get(key).is_some_and(|&at| !self.expired(at, now))
    }

    /// Remembers `key` as seen at `now`.
    pub fn insert(&mut self, key: [u8; N], now: Instant) {
        // Capacity 0 is `replay_check_len = 0`: replay protection switched off.
        if self.capacity == 0 {
            return;
        }
        self.purge(now);
        self.map.insert(key, now);
        self.fifo.push_back((key, now));
        while self.map.len() > self.capacity {
            let Some((old, at)) = self.fifo.pop_front() else {
                break;
            };
            self.forget(&old, at);
        }
        // Re-inserted keys leave stale fifo slots behind; keep the fifo bounded.
        if self.fifo.len() > self.capacity.saturating_mul(2) {
            let map = &self.map;
            self.fifo.retain(|(k, at)| map.get(k) == Some(at));
        }
    }

    /// Atomic check-and-insert.
    pub fn check_and_insert(&mut self, key: [u8; N], now: Instant) -> ReplayVerdict {
        if self.contains(&key, now) {
            return ReplayVerdict::Replay;
        }
        self.insert(key, now);
        ReplayVerdict::Fresh
    }
}

/// Entries per shard for `capacity` in total: at least one each, unless `capacity` is 0
/// (disabled).
fn per_shard(capacity: usize, shards: usize) -> usize {
    match capacity {
        0 => 0,
        c => c.div_ceil(shards.max(1)).max(1),
    }
}

/// A `Send + Sync` replay cache split into independently locked shards.
#[derive(Debug)]
pub struct ShardedReplayCache<const N: usize> {
    shards: Vec<Mutex<ReplayCache<N>>>,
    hasher: RandomState,
}

impl<const N: usize> ShardedReplayCache<N> {
    /// `capacity` entries in total over `shards` shards (telemt: 65536 / 64).
    pub fn new(capacity: usize, window: Duration, shards: usize) -> Self {
        let shards = shards.max(1);
        let per = per_shard(capacity, shards);
        Self {
            shards: (0..shards)
                .map(|_| Mutex::new(ReplayCache::new(per, window)))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8; N]) -> std::sync::MutexGuard<'_, ReplayCache<N>> {
        let i = (self.hasher.hash_one(key) % self.shards.len() as u64) as usize;
        // A panic while holding a shard can't leave it logically inconsistent
        // for our purposes (worst case a key is missing): ignore poisoning.
        match self.shards[i % self.shards.len()].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// See [`ReplayCache::check_and_insert`].
    pub fn check_and_insert(&self, key: [u8; N], now: Instant) -> ReplayVerdict {
        self.shard(&key).check_and_insert(key, now)
    }

    /// See [`ReplayCache::contains`].
    pub fn contains(&self, key: &[u8; N], now: Instant) -> bool {
        self.shard(key).contains(key, now)
    }

    /// See [`ReplayCache::insert`].
    pub fn insert(&self, key: [u8; N], now: Instant) {
        self.shard(&key).insert(key, now)
    }

    /// New limits for every shard.
    pub fn set_limits(&self, capacity: usize, window: Duration) {
        let per = per_shard(capacity, self.shards.len());
        for s in &self.shards {
            match s.lock() {
                Ok(mut g) => g.set_limits(per, window),
                Err(p) => p.into_inner().set_limits(per, window),
            }
        }
    }

    /// Total live entries.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| match s.lock() {
                Ok(g) => g.len(),
                Err(p) => p.into_inner().len(),
            })
            .sum()
    }

    /// True when no shard holds an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const W: Duration = Duration::from_secs(120);

    #[test]
    fn window_and_capacity() {
        let t0 = Instant::now();
        let mut c = ReplayCache::<16>::new(2, W);
        assert_eq!(c.check_and_insert([1; 16], t0), ReplayVerdict::Fresh);
        assert_eq!(
            c.check_and_insert([1; 16], t0 + Duration::from_secs(119)),
            ReplayVerdict::Replay
        );
        assert_eq!(
            c.check_and_insert([1; 16], t0 + W),
            ReplayVerdict::Fresh,
            "expired"
        );
        let t1 = t0 + W;
        assert_eq!(c.check_and_insert([2; 16], t1), ReplayVerdict::Fresh);
        assert_eq!(c.check_and_insert([3; 16], t1), ReplayVerdict::Fresh);
        assert_eq!(c.len(), 2);
        assert!(!c.contains(&[1; 16], t1), "oldest evicted at capacity");
        assert!(c.contains(&[3; 16], t1));
        c.purge(t1 + W);
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_zero_disables_and_can_be_switched_back() {
        let t0 = Instant::now();
        let c = ShardedReplayCache::<16>::new(0, W, 4);
        assert_eq!(c.check_and_insert([7; 16], t0), ReplayVerdict::Fresh);
        assert_eq!(c.check_and_insert([7; 16], t0), ReplayVerdict::Fresh);
        assert_eq!(c.len(), 0);
        c.set_limits(8, W);
        assert_eq!(c.check_and_insert([7; 16], t0), ReplayVerdict::Fresh);
        assert_eq!(c.check_and_insert([7; 16], t0), ReplayVerdict::Replay);
        c.set_limits(0, W);
        assert_eq!(c.len(), 0, "switching off forgets");
        assert_eq!(c.check_and_insert([7; 16], t0), ReplayVerdict::Fresh);
    }

    #[test]
    fn o1_replay_self_check() {
        // §5 self-check: the same init key twice within the window.
        let t0 = Instant::now();
        let cache = ShardedReplayCache::<OBFS_REPLAY_KEY_LEN>::new(65536, W, 64);
        let mut key = [0u8; 48];
        for (i, b) in key.iter_mut().enumerate() {
            *b = (i + 8) as u8;
        }
        assert_eq!(cache.check_and_insert(key, t0), ReplayVerdict::Fresh);
        assert_eq!(
            cache.check_and_insert(key, t0 + Duration::from_secs(1)),
            ReplayVerdict::Replay
        );
        assert_eq!(cache.len(), 1);
        cache.set_limits(10, Duration::from_secs(1));
        assert!(!cache.contains(&key, t0 + Duration::from_secs(1)));
    }

    proptest! {
        #[test]
        fn bounded_and_consistent(ops in proptest::collection::vec((0u8..20, 0u64..400), 0..300), cap in 1usize..10) {
            let t0 = Instant::now();
            let mut c = ReplayCache::<16>::new(cap, W);
            let mut now = t0;
            for (k, dt) in ops {
                now += Duration::from_secs(dt % 50);
                let key = [k; 16];
                let was = c.contains(&key, now);
                let v = c.check_and_insert(key, now);
                prop_assert_eq!(v == ReplayVerdict::Replay, was);
                prop_assert!(c.len() <= cap);
                prop_assert!(c.fifo.len() <= 2 * cap + 1);
                prop_assert!(c.contains(&key, now));
            }
        }
    }
}
