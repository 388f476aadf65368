//! The relay of an admitted session: what every route shares (PROTOCOL.md §6.4; the
//! middle-proxy route of §7 reuses it). Route modules own the copy loops.
//!
//! Owns: why a relay ends ([`RelayEnd`]), per-direction activity and the idle policy, the
//! client side of the wire (fake-TLS de-framing of client bytes, TLS record wrapping of bytes
//! to the client), octet and quota accounting, and the lazily allocated per-direction
//! buffers. Must not: know what is on the other side of the proxy (a DC byte stream, or RPC
//! messages to a middle proxy), parse MTProto framing, allocate per chunk, or hold a lock
//! across `.await`.
//!
//! ```text
//!              shared (this module)                      route (direct.rs; later an ME module)
//!  client ─► ClientIn: de-frame TLS ─► Meter ───────────► decrypt client ─► encrypt DC ─► DC
//!  client ◄─ ClientOut: 17 03 03 LL LL ◄─ Meter ◄──────── encrypt client ◄─ decrypt DC ◄─ DC
//!            Activity (both directions) ─► idle_watch ─► RelayEnd::Idle
//! ```

pub(crate) mod direct;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use stats::UserStats;

use crate::policy::{IdlePolicy, UserRuntime};
use crate::tls_stream::{Deframed, Deframer};

/// First buffer size of a direction; grows ×4 on full reads up to the maximum, so a session
/// that only ever sends small messages keeps a small buffer.
const BUF_INITIAL: usize = 4 * 1024;
/// Largest buffer of a direction. Bulk transfers move up to 256 KiB per read / write syscall:
/// measured with dpbench against 64 KiB, about 10–15% less proxy CPU per GB relayed (the
/// kernel's per-call and per-wakeup costs, not the copy, are what shrinks). Only sessions
/// whose reads fill the buffer grow it this far; idle and chatty sessions stay at 4–16 KiB.
const BUF_MAX: usize = 256 * 1024;
/// Largest record payload sent to a fake-TLS client.
const TLS_RECORD_MAX: usize = 16 * 1024;
const TLS_HEADER: usize = 5;

/// Why a relay ended.
#[derive(Debug)]
pub(crate) enum RelayEnd {
    /// Both directions reached end of stream.
    Closed,
    /// The user's data quota was crossed.
    Quota,
    /// Idle policy.
    Idle,
    /// Socket error.
    Io(io::Error),
    /// The client broke the TLS record layer.
    Protocol(&'static str),
    /// The user was closed (deleted, rotated, expired) or the data plane shuts down.
    Cancelled(&'static str),
}

impl std::fmt::Display for RelayEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("closed"),
            Self::Quota => f.write_str("data quota reached"),
            Self::Idle => f.write_str("idle"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Protocol(label) => write!(f, "protocol error: {label}"),
            Self::Cancelled(why) => write!(f, "cancelled: {why}"),
        }
    }
}

impl From<io::Error> for RelayEnd {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Last activity per direction, in ms since the session start. Atomics (not a lock) so both
/// directions and the idle watcher share it by reference within one task.
pub(crate) struct Activity {
    start: Instant,
    up_ms: AtomicU64,
    down_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            up_ms: AtomicU64::new(0),
            down_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Records activity client → proxy (`up`) or towards the client.
    pub(crate) fn touch(&self, up: bool) {
        let at = if up { &self.up_ms } else { &self.down_ms };
        at.store(self.now_ms(), Ordering::Relaxed);
    }
}

/// Resolves when the idle policy says the session is dead.
pub(crate) async fn idle_watch(activity: &Activity, idle: IdlePolicy) -> RelayEnd {
    let ms = |d: Duration| d.as_millis() as u64;
    loop {
        let now = activity.now_ms();
        let up_idle = now.saturating_sub(activity.up_ms.load(Ordering::Relaxed));
        let down_idle = now.saturating_sub(activity.down_ms.load(Ordering::Relaxed));
        let wait_ms = if idle.v2 {
            // Client silent for `hard`, or for `soft` with no downstream activity within
            // `grace`.
            if up_idle >= ms(idle.hard) || (up_idle >= ms(idle.soft) && down_idle >= ms(idle.grace))
            {
                return RelayEnd::Idle;
            }
            let to_hard = ms(idle.hard) - up_idle;
            let to_soft = ms(idle.soft).saturating_sub(up_idle);
            let to_grace = ms(idle.grace).saturating_sub(down_idle);
            to_hard.min(to_soft.max(to_grace))
        } else {
            let both = up_idle.min(down_idle);
            if both >= ms(idle.hard) {
                return RelayEnd::Idle;
            }
            ms(idle.hard) - both
        };
        tokio::time::sleep(Duration::from_millis(wait_ms.max(50))).await;
    }
}

/// Octet and quota accounting of one session (per user, on the wire as the client sees it).
#[derive(Clone, Copy)]
pub(crate) struct Meter<'a> {
    pub(crate) user: &'a UserRuntime,
    pub(crate) stats: &'a UserStats,
}

impl Meter<'_> {
    /// Counts `n` bytes read from the client.
    pub(crate) fn count_from_client(&self, n: usize) {
        self.stats.add_octets_from_client(n as u64);
    }

    /// Counts `n` bytes written to the client.
    pub(crate) fn count_to_client(&self, n: usize) {
        self.stats.add_octets_to_client(n as u64);
    }

    /// `Err(Quota)` once the user's data quota is used up (checked after each chunk, so a
    /// session overshoots by at most one buffer).
    pub(crate) fn check_quota(&self) -> Result<(), RelayEnd> {
        if self.stats.quota_used_bytes() >= self.user.quota_bytes.load(Ordering::Relaxed) {
            Err(RelayEnd::Quota)
        } else {
            Ok(())
        }
    }
}

/// Client → proxy: removes the fake-TLS record layer (ee clients) in place; other clients'
/// bytes pass as read.
pub(crate) struct ClientIn {
    deframer: Option<Deframer>,
}

impl ClientIn {
    pub(crate) fn new(deframer: Option<Deframer>) -> Self {
        Self { deframer }
    }

    /// Turns the bytes of one read into obfuscated2 bytes at the front of `read`.
    pub(crate) fn deframe(&mut self, read: &mut [u8]) -> Result<Deframed, RelayEnd> {
        match self.deframer.as_mut() {
            Some(d) => d.deframe(read).map_err(|e| RelayEnd::Protocol(e.label())),
            None => Ok(Deframed {
                len: read.len(),
                closed: false,
            }),
        }
    }
}

/// Proxy → client: wraps each write in one TLS application-data record (ee clients).
///
/// ```text
///  buffer: [ headroom: 17 03 03 LL LL ][ payload ≤ 16 KiB ]   (ee)
///          [ payload ≤ 256 KiB ]                              (others: no headroom)
/// ```
#[derive(Clone, Copy)]
pub(crate) struct ClientOut {
    tls: bool,
}

impl ClientOut {
    pub(crate) fn new(tls: bool) -> Self {
        Self { tls }
    }

    /// Bytes kept free before the payload for the record header.
    pub(crate) fn headroom(&self) -> usize {
        if self.tls {
            TLS_HEADER
        } else {
            0
        }
    }

    /// A direction buffer for this client: headroom plus the largest payload of one write.
    pub(crate) fn buffer(&self) -> ChunkBuf {
        let max = if self.tls {
            TLS_HEADER + TLS_RECORD_MAX
        } else {
            BUF_MAX
        };
        ChunkBuf::new(self.headroom() + BUF_INITIAL, max)
    }

    /// Writes the record header for the `n` payload bytes after the headroom of `buf`;
    /// returns how many bytes of `buf` go on the wire.
    pub(crate) fn seal(&self, buf: &mut [u8], n: usize) -> usize {
        if !self.tls {
            return n;
        }
        // n ≤ TLS_RECORD_MAX by the buffer bound, so it fits the 16-bit length.
        let len = (n as u16).to_be_bytes();
        buf[..TLS_HEADER].copy_from_slice(&[0x17, 0x03, 0x03, len[0], len[1]]);
        TLS_HEADER + n
    }
}

/// A direction buffer: allocated on first use (idle sessions hold none), grown ×4 when a read
/// fills it, up to `max`; never shrunk or reallocated per chunk.
pub(crate) struct ChunkBuf {
    buf: Vec<u8>,
    first: usize,
    max: usize,
}

impl ChunkBuf {
    pub(crate) fn new(first: usize, max: usize) -> Self {
        Self {
            buf: Vec::new(),
            first,
            max,
        }
    }

    /// A buffer for the client → proxy direction.
    pub(crate) fn upstream() -> Self {
        Self::new(BUF_INITIAL, BUF_MAX)
    }

    /// The buffer, allocated if this is its first use.
    pub(crate) fn get(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0u8; self.first];
        }
        &mut self.buf
    }

    /// Grows the buffer when `filled` bytes filled it.
    pub(crate) fn grow_if_full(&mut self, filled: usize) {
        if filled == self.buf.len() && self.buf.len() < self.max {
            let new = (self.buf.len() * 4).min(self.max);
            self.buf.resize(new, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_on_full_reads_only_up_to_the_bound() {
        let mut b = ChunkBuf::upstream();
        assert_eq!(b.get().len(), BUF_INITIAL);
        b.grow_if_full(BUF_INITIAL - 1);
        assert_eq!(b.get().len(), BUF_INITIAL);
        for _ in 0..5 {
            let n = b.get().len();
            b.grow_if_full(n);
        }
        assert_eq!(b.get().len(), BUF_MAX);
        let out = ClientOut::new(true);
        let mut b = out.buffer();
        for _ in 0..5 {
            let n = b.get().len();
            b.grow_if_full(n);
        }
        assert_eq!(b.get().len(), TLS_HEADER + TLS_RECORD_MAX);
    }

    #[test]
    fn tls_records_wrap_the_payload() {
        let out = ClientOut::new(true);
        let mut b = vec![0u8; 5 + 300];
        assert_eq!(out.seal(&mut b, 300), 305);
        assert_eq!(&b[..5], &[0x17, 3, 3, 0x01, 0x2c]);
        let plain = ClientOut::new(false);
        assert_eq!(plain.headroom(), 0);
        assert_eq!(plain.seal(&mut b, 7), 7);
    }
}
