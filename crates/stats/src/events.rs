//! `EventRing`: the bounded ring of recent control-plane events behind
//! `/v1/runtime/events/recent` (`ApiEventRecord`). Sequence numbers start at 1 and never repeat
//! within a process; the oldest events are dropped (and counted) under capacity pressure.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Maximum stored context length in bytes (docs/DECISIONS.md #26).
pub const MAX_CONTEXT_BYTES: usize = 256;

/// Default ring capacity (`server.api.runtime_edge_events_capacity` default).
pub const DEFAULT_EVENT_CAPACITY: usize = 256;

/// One event; serializes as the API's `ApiEventRecord`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventRecord {
    /// Monotonic sequence number, from 1.
    pub seq: u64,
    /// Event timestamp (Unix seconds).
    pub ts_epoch_secs: u64,
    /// Event kind, e.g. `config.reload.applied`.
    pub event_type: String,
    /// Context text, at most [`MAX_CONTEXT_BYTES`] bytes.
    pub context: String,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    next_seq: u64,
    dropped_total: u64,
    events: VecDeque<EventRecord>,
}

/// Bounded, resizable event ring. Pushes take a short mutex (events are rare: reloads, API
/// writes, admission flips), never held across I/O.
#[derive(Debug)]
pub struct EventRing {
    inner: Mutex<Inner>,
}

impl Default for EventRing {
    fn default() -> Self {
        Self::new(DEFAULT_EVENT_CAPACITY)
    }
}

/// Truncates `s` to at most `max` bytes without splitting a UTF-8 character.
pub fn truncate_on_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl EventRing {
    /// A ring holding at most `capacity` events (a capacity of 0 is raised to 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Mutex::new(Inner {
                capacity,
                next_seq: 1,
                dropped_total: 0,
                events: VecDeque::with_capacity(capacity.min(4096)),
            }),
        }
    }

    /// Current capacity.
    pub fn capacity(&self) -> usize {
        self.inner.lock().capacity
    }

    /// Events dropped (oldest first) because the ring was full or shrunk.
    pub fn dropped_total(&self) -> u64 {
        self.inner.lock().dropped_total
    }

    /// Number of stored events.
    pub fn len(&self) -> usize {
        self.inner.lock().events.len()
    }

    /// True when no event is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes the capacity (config reload). Shrinking drops the oldest events and counts them.
    pub fn set_capacity(&self, capacity: usize) {
        let capacity = capacity.max(1);
        let mut inner = self.inner.lock();
        inner.capacity = capacity;
        while inner.events.len() > capacity {
            inner.events.pop_front();
            inner.dropped_total = inner.dropped_total.saturating_add(1);
        }
    }

    /// Appends an event stamped with the current wall clock; returns its sequence number.
    pub fn push(&self, event_type: &str, context: &str) -> u64 {
        self.push_at(event_type, context, SystemTime::now())
    }

    /// Appends an event stamped with `now`; returns its sequence number.
    pub fn push_at(&self, event_type: &str, context: &str, now: SystemTime) -> u64 {
        let ts_epoch_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let context = truncate_on_char_boundary(context, MAX_CONTEXT_BYTES).to_owned();
        let event_type = event_type.to_owned();
        let mut inner = self.inner.lock();
        let seq = inner.next_seq;
        inner.next_seq = inner.next_seq.saturating_add(1);
        if inner.events.len() >= inner.capacity {
            inner.events.pop_front();
            inner.dropped_total = inner.dropped_total.saturating_add(1);
        }
        inner.events.push_back(EventRecord {
            seq,
            ts_epoch_secs,
            event_type,
            context,
        });
        seq
    }

    /// The newest `limit` events in chronological order (oldest first).
    pub fn recent(&self, limit: usize) -> Vec<EventRecord> {
        let inner = self.inner.lock();
        let skip = inner.events.len().saturating_sub(limit);
        inner.events.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seq_starts_at_one_and_recent_is_chronological() {
        let ring = EventRing::new(16);
        assert!(ring.is_empty());
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(ring.push_at("a", "x=1", t), 1);
        assert_eq!(ring.push_at("b", "x=2", t), 2);
        assert_eq!(ring.push_at("c", "x=3", t), 3);
        let recent = ring.recent(2);
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].seq, 2);
        assert_eq!(recent[1].seq, 3);
        assert_eq!(recent[1].event_type, "c");
        assert_eq!(recent[1].ts_epoch_secs, 1_700_000_000);
        assert_eq!(ring.recent(100).len(), 3);
        assert_eq!(ring.recent(0).len(), 0);
    }

    #[test]
    fn overflow_drops_oldest_and_counts() {
        let ring = EventRing::new(3);
        for i in 0..5 {
            ring.push("e", &i.to_string());
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.dropped_total(), 2);
        let seqs: Vec<u64> = ring.recent(10).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
    }

    #[test]
    fn resize_shrinks_and_grows() {
        let ring = EventRing::new(5);
        for _ in 0..5 {
            ring.push("e", "");
        }
        ring.set_capacity(2);
        assert_eq!(ring.capacity(), 2);
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.dropped_total(), 3);
        ring.set_capacity(10);
        for _ in 0..5 {
            ring.push("e", "");
        }
        assert_eq!(ring.len(), 7);
        assert_eq!(ring.dropped_total(), 3);
        assert_eq!(ring.recent(1)[0].seq, 10);
    }

    #[test]
    fn context_truncated_on_char_boundary() {
        let ring = EventRing::new(4);
        // 255 ASCII bytes followed by a 2-byte char: byte 256 falls inside the char.
        let ctx = format!("{}é tail", "a".repeat(255));
        ring.push("e", &ctx);
        let got = &ring.recent(1)[0].context;
        assert_eq!(got.len(), 255);
        assert!(got.chars().all(|c| c == 'a'));
        let exact = "b".repeat(256);
        ring.push("e", &exact);
        assert_eq!(ring.recent(1)[0].context, exact);
        let long = "€".repeat(200); // 600 bytes, 3-byte chars
        ring.push("e", &long);
        let got = &ring.recent(1)[0].context;
        assert_eq!(got.len(), 255);
        assert_eq!(got.chars().count(), 85);
    }

    #[test]
    fn zero_capacity_is_clamped() {
        let ring = EventRing::new(0);
        ring.push("a", "");
        ring.push("b", "");
        assert_eq!(ring.capacity(), 1);
        assert_eq!(ring.recent(5)[0].event_type, "b");
    }
}
