//! The relay of an admitted session: what every route shares (docs/PROTOCOL.md §6.4; the
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
//!
//! A route module takes the client socket, the client's cipher pair, a [`ClientIn`] /
//! [`ClientOut`], a [`Meter`] and an [`Activity`], and its outbound link as an
//! `outbound::OutboundStream`. The direct route re-encrypts a byte stream; a middle-proxy
//! route would decrypt client bytes, cut them into the client's frames (§3) and send each as
//! an RPC message on its link, and frame the answers back through the same `ClientOut`.

pub(crate) mod direct;
pub(crate) mod me;

use std::io::{self, IoSliceMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use stats::UserStats;

use crate::policy::{IdlePolicy, UserRuntime};
use proto::{Deframed, Deframer};

/// First buffer size of a direction; grows ×4 on full reads up to the maximum, so a session
/// that only ever sends small messages keeps a small buffer.
const BUF_INITIAL: usize = 4 * 1024;
/// Largest buffer of a direction. Bulk transfers move up to 256 KiB per read / write syscall:
/// measured with dpbench against 64 KiB, about 10–15% less proxy CPU per GB relayed (fewer
/// syscalls and wakeups per byte; the AES work and the kernel's copies stay the same). Only
/// sessions whose reads fill the buffer grow it this far; idle and chatty sessions stay at
/// 4–16 KiB.
const BUF_MAX: usize = 256 * 1024;
/// Largest record payload sent to a fake-TLS client.
const TLS_RECORD_MAX: usize = 16 * 1024;
const TLS_HEADER: usize = 5;
const TLS_RECORD_WIRE: usize = TLS_HEADER + TLS_RECORD_MAX;
/// Records per downstream write to a fake-TLS client at most (the same 256 KiB of payload).
const TLS_RECORDS_MAX: usize = BUF_MAX / TLS_RECORD_MAX;
/// Record payload while ramping up: one record per TCP segment of a 1500-byte path
/// (1369 = nginx's `ssl_dyn_rec_size_lo`), what a web server shaping for latency sends first.
const TLS_RECORD_SMALL: usize = 1369;
/// Payload sent in small records at the start and after an idle pause, before full 16 KiB
/// records (docs/DECISIONS.md #40).
const TLS_SMALL_BUDGET: usize = 512 * 1024;
/// Downstream silence after which the ramp starts again (the congestion window a server
/// sizes for has decayed by then).
const TLS_RAMP_IDLE: Duration = Duration::from_secs(1);

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
    pub(crate) throttle: &'a crate::ratelimit::Throttle,
}

impl Meter<'_> {
    /// Waits out what the user's and the source's bandwidth caps owe for `n` bytes just
    /// moved (`up`: client → DC). Nothing is awaited when no cap applies.
    pub(crate) async fn pace(&self, up: bool, n: usize) {
        if let Some(wait) = self.throttle.charge(&self.user.rate, up, n) {
            tokio::time::sleep(wait).await;
        }
    }

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

/// Proxy → client: wraps the payload in TLS application-data records (ee clients), several
/// records per write. A vectored read places the payload straight into the record bodies, so
/// a bulk write carries up to 16 records with one read and one write syscall.
///
/// With shaping on, records are sized like a web server's dynamic record sizing: 1369-byte
/// payloads for the first 512 KiB and again after a second of downstream silence, then 16 KiB
/// (docs/PROTOCOL.md §4.6, docs/DECISIONS.md #40). The record size is fixed from
/// [`Self::begin`] to [`Self::seal`], so one read's layout never changes midway.
///
/// ```text
///  buffer: [17 03 03 LL LL][payload 16 KiB][17 03 03 LL LL][payload 16 KiB]..[hdr][tail]   (ee)
///          [17 03 03 05 59][payload 1369]..                              (ee, ramping up)
///          [payload ≤ 256 KiB]                                                    (others)
/// ```
pub(crate) struct ClientOut {
    tls: bool,
    ramp: Option<Ramp>,
}

/// Small-record budget left and when the last write happened.
struct Ramp {
    small_left: usize,
    last_write: Option<Instant>,
}

/// Read targets of one downstream read: at most one per record of the largest buffer.
pub(crate) type ReadSlices<'a> = [IoSliceMut<'a>; TLS_RECORDS_MAX];

impl ClientOut {
    /// `tls`: ee client; `shaping`: small records first (`censorship.tls_record_shaping`).
    pub(crate) fn new(tls: bool, shaping: bool) -> Self {
        let ramp = (tls && shaping).then_some(Ramp {
            small_left: TLS_SMALL_BUDGET,
            last_write: None,
        });
        Self { tls, ramp }
    }

    /// Wire bytes per record of the current read, or `None` for a plain byte stream.
    fn record(&self) -> Option<usize> {
        match &self.ramp {
            _ if !self.tls => None,
            Some(r) if r.small_left > 0 => Some(TLS_HEADER + TLS_RECORD_SMALL),
            _ => Some(TLS_RECORD_WIRE),
        }
    }

    /// Called once data is ready to be read for the client: restarts the small-record ramp
    /// after an idle pause.
    pub(crate) fn begin(&mut self) {
        if let Some(r) = self.ramp.as_mut() {
            if r.small_left == 0 && r.last_write.is_some_and(|t| t.elapsed() >= TLS_RAMP_IDLE) {
                r.small_left = TLS_SMALL_BUDGET;
            }
        }
    }

    /// A direction buffer for this client (whole records once it grows).
    pub(crate) fn buffer(&self) -> ChunkBuf {
        match self.tls.then_some(TLS_RECORD_WIRE) {
            Some(unit) => ChunkBuf {
                buf: Vec::new(),
                first: TLS_HEADER + BUF_INITIAL,
                max: TLS_RECORDS_MAX * unit,
                unit,
            },
            None => ChunkBuf::upstream(),
        }
    }

    /// The payload areas of `buf` in stream order, as targets of one vectored read; returns
    /// them and how many there are. Every area but the last is a full record body, so the
    /// `n` bytes a read returns are records `0..` of [`Self::seal`]'s layout.
    pub(crate) fn read_slices<'a>(&self, buf: &'a mut [u8]) -> (ReadSlices<'a>, usize) {
        let (unit, head) = match self.record() {
            Some(unit) => (unit, TLS_HEADER),
            None => (buf.len().max(1), 0),
        };
        let count = buf.len().div_ceil(unit).min(TLS_RECORDS_MAX);
        let mut areas = buf.chunks_mut(unit).map(|c| {
            let skip = head.min(c.len());
            IoSliceMut::new(&mut c[skip..])
        });
        let slices = std::array::from_fn(|_| areas.next().unwrap_or(IoSliceMut::new(&mut [])));
        (slices, count)
    }

    /// Calls `f` on each payload area holding the `n` bytes a read of [`Self::read_slices`]
    /// placed in `buf`, in stream order (for the keystreams, which run across records).
    pub(crate) fn for_each_payload(&self, buf: &mut [u8], n: usize, mut f: impl FnMut(&mut [u8])) {
        let Some(unit) = self.record() else {
            f(&mut buf[..n]);
            return;
        };
        let mut left = n;
        for rec in buf.chunks_mut(unit) {
            if left == 0 {
                break;
            }
            let len = left.min(rec.len() - TLS_HEADER);
            f(&mut rec[TLS_HEADER..TLS_HEADER + len]);
            left -= len;
        }
    }

    /// Whether bytes to this client are wrapped in TLS records (ee clients).
    pub(crate) fn is_tls(&self) -> bool {
        self.tls
    }

    /// Appends `payload` (already encrypted for the client) to `out` as the client sees it:
    /// records of the current size for ee clients, the bytes as they are otherwise. For
    /// routes that hold the payload in their own buffer (the middle-proxy route).
    pub(crate) fn wrap(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let Some(unit) = self.record() else {
            out.extend_from_slice(payload);
            return;
        };
        for body in payload.chunks(unit - TLS_HEADER) {
            // ≤ TLS_RECORD_MAX by the chunking, so it fits the 16-bit length.
            let be = (body.len() as u16).to_be_bytes();
            out.extend_from_slice(&[0x17, 0x03, 0x03, be[0], be[1]]);
            out.extend_from_slice(body);
        }
        if let Some(r) = self.ramp.as_mut() {
            r.small_left = r.small_left.saturating_sub(payload.len());
            r.last_write = Some(Instant::now());
        }
    }

    /// Writes the record headers for `n` payload bytes laid out by [`Self::read_slices`];
    /// returns how many bytes of `buf` go on the wire. Ends the read: the next one may use
    /// another record size.
    pub(crate) fn seal(&mut self, buf: &mut [u8], n: usize) -> usize {
        let Some(unit) = self.record() else {
            return n;
        };
        if let Some(r) = self.ramp.as_mut() {
            r.small_left = r.small_left.saturating_sub(n);
            r.last_write = Some(Instant::now());
        }
        let mut left = n;
        let mut wire = 0;
        for rec in buf.chunks_mut(unit) {
            if left == 0 {
                break;
            }
            // ≤ TLS_RECORD_MAX by the chunking, so it fits the 16-bit length.
            let len = left.min(rec.len() - TLS_HEADER);
            let be = (len as u16).to_be_bytes();
            rec[..TLS_HEADER].copy_from_slice(&[0x17, 0x03, 0x03, be[0], be[1]]);
            wire += TLS_HEADER + len;
            left -= len;
        }
        wire
    }
}

/// A direction buffer: allocated on first use (idle sessions hold none), grown ×4 (rounded up
/// to whole `unit`s) when a read fills it, up to `max`; never shrunk or reallocated per chunk.
pub(crate) struct ChunkBuf {
    buf: Vec<u8>,
    first: usize,
    max: usize,
    unit: usize,
}

impl ChunkBuf {
    /// A buffer for the client → proxy direction.
    pub(crate) fn upstream() -> Self {
        Self {
            buf: Vec::new(),
            first: BUF_INITIAL,
            max: BUF_MAX,
            unit: 1,
        }
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
            let new = (self.buf.len() * 4)
                .next_multiple_of(self.unit)
                .min(self.max);
            self.buf.resize(new, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grow_to_max(b: &mut ChunkBuf) -> Vec<usize> {
        let mut sizes = vec![b.get().len()];
        for _ in 0..6 {
            let n = b.get().len();
            b.grow_if_full(n);
            sizes.push(b.get().len());
        }
        sizes.dedup();
        sizes
    }

    #[test]
    fn buffers_grow_on_full_reads_only_up_to_the_bound() {
        let mut b = ChunkBuf::upstream();
        assert_eq!(b.get().len(), BUF_INITIAL);
        b.grow_if_full(BUF_INITIAL - 1);
        assert_eq!(b.get().len(), BUF_INITIAL);
        assert_eq!(grow_to_max(&mut b), [4096, 16384, 65536, 262144]);
        // ee: whole records once past the first small buffer.
        let w = TLS_RECORD_WIRE;
        let mut b = ClientOut::new(true, false).buffer();
        assert_eq!(grow_to_max(&mut b), [5 + 4096, 2 * w, 8 * w, 16 * w]);
    }

    /// What a vectored read does: fills the areas in order.
    fn fill(slices: &mut [IoSliceMut<'_>], data: &[u8]) -> usize {
        let mut at = 0;
        for s in slices.iter_mut() {
            let take = s.len().min(data.len() - at);
            s[..take].copy_from_slice(&data[at..at + take]);
            at += take;
        }
        at
    }

    #[test]
    fn tls_records_wrap_a_vectored_read() {
        let mut out = ClientOut::new(true, false);
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let mut buf = vec![0u8; 8 * TLS_RECORD_WIRE];
        let n = {
            let (mut slices, count) = out.read_slices(&mut buf);
            assert_eq!(count, 8);
            fill(&mut slices[..count], &data)
        };
        assert_eq!(n, data.len());
        let mut seen = Vec::new();
        out.for_each_payload(&mut buf, n, |p| seen.extend_from_slice(p));
        assert_eq!(seen, data);
        let wire = out.seal(&mut buf, n);
        assert_eq!(wire, 3 * TLS_HEADER + n);
        // The client's record reader sees the original stream.
        let mut parsed = Vec::new();
        let mut rest = &buf[..wire];
        while !rest.is_empty() {
            assert_eq!(&rest[..3], &[0x17, 3, 3]);
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            assert!(len <= TLS_RECORD_MAX);
            parsed.extend_from_slice(&rest[5..5 + len]);
            rest = &rest[5 + len..];
        }
        assert_eq!(parsed, data);
        // The first, small buffer holds one short record.
        let mut small = vec![0u8; TLS_HEADER + BUF_INITIAL];
        let (slices, count) = out.read_slices(&mut small);
        assert_eq!((count, slices[0].len()), (1, BUF_INITIAL));
    }

    #[test]
    fn plain_clients_get_the_bytes_as_read() {
        let mut out = ClientOut::new(false, true);
        let mut buf = vec![0u8; 1000];
        let (slices, count) = out.read_slices(&mut buf);
        assert_eq!((count, slices[0].len()), (1, 1000));
        let mut calls = 0;
        out.for_each_payload(&mut buf, 7, |p| {
            calls += 1;
            assert_eq!(p.len(), 7);
        });
        assert_eq!(calls, 1);
        assert_eq!(out.seal(&mut buf, 7), 7);
    }

    /// Sizes of the records one sealed read of `n` bytes produces.
    fn sealed_sizes(out: &mut ClientOut, buf: &mut [u8], n: usize) -> Vec<usize> {
        let data = vec![0x5au8; n];
        let got = {
            let (mut slices, count) = out.read_slices(buf);
            fill(&mut slices[..count], &data)
        };
        let wire = out.seal(buf, got);
        let mut sizes = Vec::new();
        let mut rest = &buf[..wire];
        while rest.len() >= TLS_HEADER {
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            sizes.push(len);
            rest = &rest[TLS_HEADER + len..];
        }
        sizes
    }

    #[test]
    fn shaping_sends_small_records_first_then_full_ones_and_again_after_idle() {
        let mut out = ClientOut::new(true, true);
        let mut buf = vec![0u8; 16 * TLS_RECORD_WIRE];
        let mut moved = 0;
        while moved < TLS_SMALL_BUDGET {
            out.begin();
            let sizes = sealed_sizes(&mut out, &mut buf, 100_000);
            assert!(sizes.iter().all(|&s| s <= TLS_RECORD_SMALL), "{sizes:?}");
            moved += sizes.iter().sum::<usize>();
        }
        out.begin();
        let sizes = sealed_sizes(&mut out, &mut buf, 100_000);
        assert!(
            sizes[..sizes.len() - 1]
                .iter()
                .all(|&s| s == TLS_RECORD_MAX),
            "{sizes:?}"
        );
        // A pause restarts the ramp.
        if let Some(r) = out.ramp.as_mut() {
            r.last_write = Instant::now().checked_sub(TLS_RAMP_IDLE);
        }
        out.begin();
        let sizes = sealed_sizes(&mut out, &mut buf, 10_000);
        assert_eq!(sizes[0], TLS_RECORD_SMALL);
        // Without shaping: full records from the first byte.
        let mut plain = ClientOut::new(true, false);
        assert_eq!(sealed_sizes(&mut plain, &mut buf, 20_000), [16384, 3616]);
    }
}
