//! Relay under pressure: many sessions echoing at full rate in both directions at once (the
//! client writes and reads concurrently), in every client mode, through each upstream kind
//! (direct, SOCKS5 via `danted`, Shadowsocks via `ss-server`), then a drain and a half-close.
//!
//! A progress watchdog, not a throughput assertion: the test fails when a direction of a
//! session makes no progress for `MTP_SOAK_STALL_SECS` (default 5 s; 20 s in debug builds)
//! that back-pressure cannot explain (see [`Progress::stuck`]), and prints every stuck
//! session's two directions (bytes, last progress, what each side is doing).
//!
//! ```text
//!  writer task ─► send(pattern @ offset) ─► proxy ─► upstream ─► echo DC ─┐
//!  reader task ◄─ recv, verify pattern   ◄─ proxy ◄─ upstream ◄───────────┘
//!  watchdog: every 200 ms, per session: now − last progress (up, down) > stall ⇒ fail
//!  at the deadline: writer stops, waits for the whole echo, FINs; reader reads until EOF
//!  (the FIN travels client → proxy → upstream → DC, the DC closes, EOF comes back)
//! ```
//!
//! Knobs: `MTP_SOAK_SECS` (full-rate phase per upstream kind: default 2 s in the suite, 120 s
//! in the ignored `soak_full_duplex_long`), `MTP_SOAK_CONNS` (default 32).
//! `cargo test -p dataplane --test upstreams -- --ignored soak --nocapture` runs the long one.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::client::{ClientError, Mode};

use crate::kinds::with_upstreams;
use crate::servers::*;
use crate::support::*;

/// Payload per send: several TLS records, more than one proxy read at the initial buffer size.
const CHUNK: usize = 24 * 1024 + 7;
/// Period of the byte pattern (prime, so chunks never line up with it).
const PERIOD: usize = 65_521;

/// No progress for this long is a stall. A debug build (AES unoptimised in the client, the
/// proxy and the DC) relays about 1 MiB/s over 32 sessions on a loaded 2-core machine, so a
/// session may legitimately wait several seconds for its first echo there.
const DEFAULT_STALL_SECS: u64 = if cfg!(debug_assertions) { 20 } else { 5 };

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The byte stream every session sends: `table[(seed + offset) % PERIOD]`, so the reader
/// checks the echo without keeping what was sent.
struct Pattern {
    table: Vec<u8>,
}

impl Pattern {
    fn new() -> Self {
        let mut x = 0x2545_f491_u32;
        let mut table: Vec<u8> = (0..PERIOD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        // One period plus a chunk, so any chunk is one slice: table[i + PERIOD] == table[i].
        table.extend_from_within(..CHUNK);
        Self { table }
    }

    /// `len ≤ CHUNK` pattern bytes at stream offset `off` of session `seed`.
    fn at(&self, seed: u64, off: u64, len: usize) -> &[u8] {
        let start = ((seed + off) % PERIOD as u64) as usize;
        &self.table[start..start + len]
    }
}

const WRITING: u8 = 0;
const WRITER_DRAIN: u8 = 1;
const WRITER_FIN: u8 = 2;
const READING: u8 = 0;
const READ_EOF: u8 = 1;

/// What the watchdog sees of one session; ms values are since the soak start.
struct Progress {
    id: usize,
    mode: &'static str,
    sent: AtomicU64,
    received: AtomicU64,
    sent_at_ms: AtomicU64,
    received_at_ms: AtomicU64,
    writer: AtomicU8,
    reader: AtomicU8,
}

impl Progress {
    fn new(id: usize, mode: &'static str) -> Self {
        Self {
            id,
            mode,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent_at_ms: AtomicU64::new(0),
            received_at_ms: AtomicU64::new(0),
            writer: AtomicU8::new(WRITING),
            reader: AtomicU8::new(READING),
        }
    }

    fn done(&self) -> bool {
        self.reader.load(Ordering::Acquire) == READ_EOF
    }

    /// Which directions are stalled: without progress for longer than `stall` where
    /// back-pressure cannot explain it.
    ///
    /// A writer blocked while its echo still comes back is back-pressure (the path holds
    /// megabytes of socket buffers, and a slow tunnel server drains them slowly), not a stall:
    /// up is stalled only when nothing comes back either. Down is stalled when something is
    /// owed to the reader (bytes in flight, or the EOF after the writer's FIN) and nothing
    /// arrives. A relay direction that stops shows as one of the two once the bytes in
    /// flight have drained.
    fn stuck(&self, now_ms: u64, stall_ms: u64) -> (bool, bool) {
        let writing = self.writer.load(Ordering::Acquire) == WRITING;
        let quiet = |at: &AtomicU64| now_ms.saturating_sub(at.load(Ordering::Acquire)) > stall_ms;
        let down_quiet = !self.done() && quiet(&self.received_at_ms);
        let up = writing && quiet(&self.sent_at_ms) && down_quiet;
        let owed = self.sent.load(Ordering::Acquire) > self.received.load(Ordering::Acquire);
        let down = down_quiet && (owed || !writing);
        (up, down)
    }

    fn describe(&self, now_ms: u64, out: &mut String) {
        let sent = self.sent.load(Ordering::Acquire);
        let received = self.received.load(Ordering::Acquire);
        let writer = match self.writer.load(Ordering::Acquire) {
            WRITING => "writing",
            WRITER_DRAIN => "done, waiting for the echo before FIN",
            _ => "FIN sent",
        };
        let reader = match self.reader.load(Ordering::Acquire) {
            READING => "reading",
            _ => "EOF seen",
        };
        let _ = writeln!(
            out,
            "  session {:>3} {:<7} up (client→proxy→DC): {sent:>11} B sent, last progress {:>6} ms ago, {writer}\n\
             \x20                     down (DC→proxy→client): {received:>11} B received, last progress {:>6} ms ago, {reader}; \
             in flight (sent − echoed) {} B",
            self.id,
            self.mode,
            now_ms.saturating_sub(self.sent_at_ms.load(Ordering::Acquire)),
            now_ms.saturating_sub(self.received_at_ms.load(Ordering::Acquire)),
            sent.saturating_sub(received),
        );
    }
}

#[derive(Debug, thiserror::Error)]
enum SoakError {
    #[error("session {0}: send: {1}")]
    Send(usize, ClientError),
    #[error("session {0}: recv: {1}")]
    Recv(usize, ClientError),
    #[error("session {id}: echo differs at offset {offset}")]
    Mismatch { id: usize, offset: u64 },
    #[error("session {id}: EOF after {received} of {sent} bytes")]
    Short { id: usize, sent: u64, received: u64 },
}

fn modes() -> [(&'static str, Mode); 3] {
    [
        ("classic", Mode::Abridged),
        ("dd", Mode::Secure),
        ("ee", tls_mode()),
    ]
}

/// Runs the soak through one upstream configuration (`tail`: its `[[upstreams]]` table).
async fn soak(kind: &str, tail: &str, secs: u64) {
    let conns = env_u64("MTP_SOAK_CONNS", 32) as usize;
    let stall_ms = env_u64("MTP_SOAK_STALL_SECS", DEFAULT_STALL_SECS) * 1000;
    let h = Harness::start(with_upstreams(tail, "")).await;
    let pattern = Arc::new(Pattern::new());
    // Every session is up before the clock starts (handshakes of a debug build are slow).
    let mut conns_open = Vec::with_capacity(conns);
    for id in 0..conns {
        let (mode_name, mode) = modes()[id % 3].clone();
        let (mut rd, wr) = h.connect(mode, id % 2).await.into_split();
        // The watchdog decides what is too slow, not a per-receive timeout.
        rd.timeout = Duration::from_secs(24 * 3600);
        conns_open.push((id, mode_name, rd, wr));
    }
    let start = Instant::now();
    let now_ms = move || start.elapsed().as_millis() as u64;
    let deadline = start + Duration::from_secs(secs);
    let mut sessions = Vec::with_capacity(conns);
    let mut tasks = tokio::task::JoinSet::new();
    for (id, mode_name, mut rd, mut wr) in conns_open {
        let p = Arc::new(Progress::new(id, mode_name));
        sessions.push(Arc::clone(&p));
        let seed = id as u64 * 7919;
        {
            let (p, pattern) = (Arc::clone(&p), Arc::clone(&pattern));
            tasks.spawn(async move {
                let mut off = 0u64;
                while Instant::now() < deadline {
                    let data = pattern.at(seed, off, CHUNK);
                    wr.send(data).await.map_err(|e| SoakError::Send(id, e))?;
                    off += CHUNK as u64;
                    p.sent.store(off, Ordering::Release);
                    p.sent_at_ms.store(now_ms(), Ordering::Release);
                    // A send that finds room in the socket never yields by itself, and the
                    // client encrypts every chunk: without this, 32 writers starve the
                    // readers, the proxy and the DC sharing the test runtime (a stall of the
                    // test, not of the relay).
                    tokio::task::yield_now().await;
                }
                // FIN only once everything came back: ss-server (shadowsocks-libev) closes
                // both directions on a FIN, dropping the echo still in flight, so a FIN sent
                // earlier would test the tunnel server rather than the proxy's half-close.
                p.writer.store(WRITER_DRAIN, Ordering::Release);
                while p.received.load(Ordering::Acquire) < off {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                wr.shutdown().await.map_err(|e| SoakError::Send(id, e))?;
                p.writer.store(WRITER_FIN, Ordering::Release);
                Ok(())
            });
        }
        let pattern = Arc::clone(&pattern);
        tasks.spawn(async move {
            let mut got = 0u64;
            loop {
                let data = match rd.recv_some().await {
                    Ok(d) => d,
                    Err(ClientError::Eof) => break,
                    Err(e) => return Err(SoakError::Recv(id, e)),
                };
                for (i, piece) in data.chunks(CHUNK).enumerate() {
                    let off = got + (i * CHUNK) as u64;
                    if piece != pattern.at(seed, off, piece.len()) {
                        return Err(SoakError::Mismatch { id, offset: off });
                    }
                }
                got += data.len() as u64;
                p.received.store(got, Ordering::Release);
                p.received_at_ms.store(now_ms(), Ordering::Release);
            }
            p.reader.store(READ_EOF, Ordering::Release);
            let sent = p.sent.load(Ordering::Acquire);
            if got != sent || p.writer.load(Ordering::Acquire) != WRITER_FIN {
                return Err(SoakError::Short {
                    id,
                    sent,
                    received: got,
                });
            }
            Ok(())
        });
    }

    let mut failure: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    failure = Some(format!("{e}"));
                    break;
                }
                Some(Err(e)) => {
                    failure = Some(format!("task failed: {e}"));
                    break;
                }
            },
            _ = tick.tick() => {
                let now = now_ms();
                let stuck: Vec<_> = sessions
                    .iter()
                    .filter(|p| {
                        let (up, down) = p.stuck(now, stall_ms);
                        up || down
                    })
                    .collect();
                if !stuck.is_empty() {
                    let mut msg = format!(
                        "{} of {conns} sessions stalled (no progress for {} s in a direction):\n",
                        stuck.len(),
                        stall_ms / 1000
                    );
                    for p in stuck {
                        p.describe(now, &mut msg);
                    }
                    failure = Some(msg);
                    break;
                }
            }
        }
    }
    let now = now_ms();
    let (mut up, mut down) = (0u64, 0u64);
    let mut report = String::new();
    for p in &sessions {
        up += p.sent.load(Ordering::Acquire);
        down += p.received.load(Ordering::Acquire);
        p.describe(now, &mut report);
    }
    println!(
        "SOAK upstream={kind:<22} conns={conns} {secs}s: {:.1} MiB up, {:.1} MiB echoed, live direct sessions {}",
        up as f64 / 1048576.0,
        down as f64 / 1048576.0,
        h.dp.current_by_route().direct
    );
    if let Some(f) = failure {
        tasks.abort_all();
        panic!("soak through {kind} failed at {now} ms: {f}\nall sessions:\n{report}");
    }
}

/// The upstream kinds to soak through: (name, `[[upstreams]]` table, server guard). A missing
/// server binary skips its kind (with a notice; a failure under CI).
async fn each_upstream(secs: u64) {
    soak("direct", "", secs).await;
    let port = free_port();
    if let Some(_srv) = dante(port).await {
        let t = format!("[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:{port}\"\n");
        soak("socks5 (danted)", &t, secs).await;
    }
    let port = free_port();
    if let Some(_srv) = ss_server(port, "soak-key", "chacha20-ietf-poly1305").await {
        let t = format!(
            "[[upstreams]]\ntype = \"shadowsocks\"\n\
             url = \"ss://chacha20-ietf-poly1305:soak-key@127.0.0.1:{port}\"\n"
        );
        soak("shadowsocks (ss-server)", &t, secs).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_full_duplex_short() {
    each_upstream(env_u64("MTP_SOAK_SECS", 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long soak: minutes per upstream kind"]
async fn soak_full_duplex_long() {
    each_upstream(env_u64("MTP_SOAK_SECS", 120)).await;
}

#[test]
fn watchdog_tells_stalls_from_back_pressure() {
    let at = |sent: u64, sent_at: u64, received: u64, received_at: u64, writer: u8| {
        let p = Progress::new(0, "classic");
        p.sent.store(sent, Ordering::Release);
        p.sent_at_ms.store(sent_at, Ordering::Release);
        p.received.store(received, Ordering::Release);
        p.received_at_ms.store(received_at, Ordering::Release);
        p.writer.store(writer, Ordering::Release);
        p.stuck(10_000, 5_000)
    };
    // Writer blocked, echo still flowing: back-pressure.
    assert_eq!(at(100, 1_000, 50, 9_900, WRITING), (false, false));
    // Writer blocked and nothing comes back: both directions stalled.
    assert_eq!(at(100, 1_000, 50, 1_000, WRITING), (true, true));
    // Everything echoed, writer cannot send any more: the proxy stopped reading the client.
    assert_eq!(at(100, 1_000, 100, 1_000, WRITING), (true, false));
    // Writer busy, bytes owed and nothing arrives: the way back stalled.
    assert_eq!(at(100, 9_900, 50, 1_000, WRITING), (false, true));
    // After the FIN: the echo or the EOF is owed.
    assert_eq!(at(100, 1_000, 100, 1_000, WRITER_FIN), (false, true));
    assert_eq!(at(100, 1_000, 100, 9_000, WRITER_FIN), (false, false));
}
