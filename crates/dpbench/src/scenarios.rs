//! The measurements. Each one runs against a [`Target`]: the proxy, or the TestDcs directly
//! (the no-proxy ceiling: the same client code, obfuscated2 without a secret).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::client::{ClientError, Mode, Tag, TestClient, TestConn, TlsOptions};
use testkit::dc::TestDc;

use crate::proxy::{rss_kib, ProxyHandle, DC_ECHO, DC_SINK};

/// Client transport measured through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// Classic secret, abridged tag.
    Classic,
    /// `dd` secret.
    Secure,
    /// `ee` secret (fake-TLS, ~1.8 KB hello, init merged with data).
    Tls,
}

impl BenchMode {
    /// All modes.
    pub const ALL: [BenchMode; 3] = [Self::Classic, Self::Secure, Self::Tls];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Secure => "secure",
            Self::Tls => "tls",
        }
    }

    /// Parses a short name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    fn client_mode(self) -> Mode {
        match self {
            Self::Classic => Mode::Abridged,
            Self::Secure => Mode::Secure,
            Self::Tls => {
                let mut o = TlsOptions::new("example.com");
                // Large records, as a bulk transfer would use.
                o.record_payload = 16384;
                Mode::Tls(o)
            }
        }
    }
}

/// The two TestDcs every scenario uses.
#[derive(Debug)]
pub struct Dcs {
    /// DC 1: counts bytes.
    pub sink: TestDc,
    /// DC 2: echoes.
    pub echo: TestDc,
}

/// Where clients connect.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Straight to the TestDcs (ceiling).
    Direct(&'a Dcs),
    /// Through the proxy.
    Proxy(&'a ProxyHandle),
}

impl Target<'_> {
    /// Opens one session to DC `dc` as user number `user`.
    pub async fn open(
        &self,
        mode: BenchMode,
        dc: i16,
        user: usize,
    ) -> Result<TestConn, ClientError> {
        match self {
            Target::Direct(dcs) => {
                let addr = if dc == DC_SINK {
                    dcs.sink.addr()
                } else {
                    dcs.echo.addr()
                };
                let tag = match mode {
                    BenchMode::Classic => Tag::Abridged,
                    _ => Tag::Padded,
                };
                TestClient::connect_dc(addr, tag, dc).await
            }
            Target::Proxy(p) => {
                let secret = p.secrets[user % p.secrets.len()];
                TestClient::connect(p.addr, mode.client_mode(), secret, dc).await
            }
        }
    }
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(1e-9)
}

/// One full round trip (32 bytes) through the echo DC.
async fn round_trip(c: &mut TestConn) -> Result<(), ClientError> {
    let probe: [u8; 32] = rand::random();
    c.send(&probe).await?;
    let back = c.recv_exact(probe.len()).await?;
    if back == probe {
        Ok(())
    } else {
        Err(ClientError::Protocol("echo mismatch".into()))
    }
}

/// How a session talks to the echo DC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// A raw byte stream: fine on the direct route, which relays bytes as they come.
    Bytes,
    /// Whole transport packets (`send_packet` / `recv_packet`): the middle-proxy route cuts
    /// the client stream into frames and sends one RPC per frame, so a raw stream is not a
    /// valid client there.
    Packets,
}

/// One round trip (a 32-byte payload) through the echo DC, as `ex` says.
async fn round_trip_as(c: &mut TestConn, ex: Exchange) -> Result<(), ClientError> {
    match ex {
        Exchange::Bytes => round_trip(c).await,
        Exchange::Packets => {
            let probe: [u8; 32] = rand::random();
            c.send_packet(&probe).await?;
            if c.recv_packet().await? == probe {
                Ok(())
            } else {
                Err(ClientError::Protocol("echo mismatch".into()))
            }
        }
    }
}

/// A writer task and a reader task per echo session.
type EchoTasks<W> = Vec<(
    tokio::task::JoinHandle<Result<W, ClientError>>,
    tokio::task::JoinHandle<Result<(), ClientError>>,
)>;

/// Waits for every echo session's reader, then its writer; the first failure, named.
async fn join_echo_tasks<W>(tasks: EchoTasks<W>) -> Result<(), String> {
    for (w, r) in tasks {
        r.await
            .map_err(|e| format!("reader task: {e}"))?
            .map_err(|e| format!("recv: {e}"))?;
        w.await
            .map_err(|e| format!("writer task: {e}"))?
            .map_err(|e| format!("send: {e}"))?;
    }
    Ok(())
}

/// Checks that a session through `target` reaches the echo DC with whole packets (the
/// middle-proxy route's preflight).
pub async fn preflight_packets(target: Target<'_>, mode: BenchMode) -> Result<(), String> {
    let mut c = target
        .open(mode, DC_ECHO, 0)
        .await
        .map_err(|e| format!("{} handshake: {e}", mode.name()))?;
    c.set_timeout(Duration::from_secs(5));
    round_trip_as(&mut c, Exchange::Packets)
        .await
        .map_err(|e| format!("{} packet round trip: {e}", mode.name()))
}

/// Packet echo throughput: every session sends `total / conns` bytes as `packet`-byte
/// transport packets (a multiple of 4) and reads the echoed packets back concurrently;
/// reported as payload MiB/s in one direction. Works on both routes, so the direct and
/// middle-proxy figures measure the same client traffic.
pub async fn packet_echo(
    target: Target<'_>,
    mode: BenchMode,
    conns: usize,
    total: u64,
    packet: usize,
) -> Result<f64, String> {
    let packets = (total / conns as u64 / packet as u64).max(1);
    let mut halves = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut c = target
            .open(mode, DC_ECHO, i)
            .await
            .map_err(|e| format!("open: {e}"))?;
        round_trip_as(&mut c, Exchange::Packets)
            .await
            .map_err(|e| format!("warmup: {e}"))?;
        halves.push(c.into_split());
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (mut r, mut w) in halves {
        let writer = tokio::spawn(async move {
            let p = vec![0xa5u8; packet];
            for _ in 0..packets {
                w.send_packet(&p).await?;
            }
            Ok::<_, ClientError>(w)
        });
        // A slow route must read as a low number, not as a timeout.
        r.timeout = Duration::from_secs(120);
        let reader = tokio::spawn(async move {
            for _ in 0..packets {
                let got = r.recv_packet().await?;
                if got.len() != packet {
                    return Err(ClientError::Protocol(format!(
                        "echoed packet of {} bytes, sent {packet}",
                        got.len()
                    )));
                }
            }
            Ok::<_, ClientError>(())
        });
        tasks.push((writer, reader));
    }
    join_echo_tasks(tasks).await?;
    Ok(mib_per_s(
        packets * packet as u64 * conns as u64,
        start.elapsed(),
    ))
}

/// Checks that a session through `target` reaches the echo DC (fails fast with a clear error
/// when the proxy does not relay yet).
pub async fn preflight(target: Target<'_>, mode: BenchMode) -> Result<(), String> {
    let mut c = target
        .open(mode, DC_ECHO, 0)
        .await
        .map_err(|e| format!("{} handshake: {e}", mode.name()))?;
    c.set_timeout(Duration::from_secs(5));
    round_trip(&mut c)
        .await
        .map_err(|e| format!("{} round trip: {e}", mode.name()))
}

/// Upload throughput into the sink DC with `conns` parallel sessions, `total` bytes overall.
pub async fn upload(
    target: Target<'_>,
    dcs: &Dcs,
    mode: BenchMode,
    conns: usize,
    total: u64,
) -> Result<f64, String> {
    let per = total / conns as u64;
    let sessions_before = dcs.sink.counters().sessions;
    let mut writers = Vec::with_capacity(conns);
    for i in 0..conns {
        let c = target
            .open(mode, DC_SINK, i)
            .await
            .map_err(|e| format!("open: {e}"))?;
        let (r, mut w) = c.into_split();
        w.flush_init().await.map_err(|e| format!("init: {e}"))?;
        writers.push((r, w));
    }
    // Let every session reach the DC before the clock starts (a proxy that dials the DC only
    // on first data just has that dial inside the measurement).
    let want_sessions = sessions_before + conns as u64;
    let _ = dcs
        .sink
        .wait_until(Duration::from_secs(5), |d| {
            d.counters().sessions >= want_sessions
        })
        .await;
    let base = dcs.sink.counters().bytes_in;
    let chunk = Arc::new(vec![0x5au8; 256 * 1024]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (r, mut w) in writers {
        let chunk = Arc::clone(&chunk);
        tasks.push(tokio::spawn(async move {
            let mut left = per;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                w.send(&chunk[..n]).await?;
                left -= n as u64;
            }
            Ok::<_, ClientError>((r, w))
        }));
    }
    let target_bytes = base + per * conns as u64;
    let done = dcs
        .sink
        .wait_until(Duration::from_secs(300), |d| {
            d.counters().bytes_in >= target_bytes
        })
        .await;
    let elapsed = start.elapsed();
    for t in tasks {
        match t.await {
            Ok(Ok((_r, mut w))) => {
                let _ = w.shutdown().await;
            }
            Ok(Err(e)) => return Err(format!("send: {e}")),
            Err(e) => return Err(format!("writer task: {e}")),
        }
    }
    if !done {
        return Err(format!(
            "sink got {} of {} bytes",
            dcs.sink.counters().bytes_in - base,
            per * conns as u64
        ));
    }
    Ok(mib_per_s(per * conns as u64, elapsed))
}

/// Echo throughput: every session sends `total / conns` bytes and reads them back
/// concurrently; reported as payload MiB/s in one direction.
pub async fn echo(
    target: Target<'_>,
    mode: BenchMode,
    conns: usize,
    total: u64,
) -> Result<f64, String> {
    let per = total / conns as u64;
    let mut halves = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut c = target
            .open(mode, DC_ECHO, i)
            .await
            .map_err(|e| format!("open: {e}"))?;
        round_trip(&mut c)
            .await
            .map_err(|e| format!("warmup: {e}"))?;
        halves.push(c.into_split());
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (mut r, mut w) in halves {
        let writer = tokio::spawn(async move {
            let chunk = vec![0xa5u8; 256 * 1024];
            let mut left = per;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                w.send(&chunk[..n]).await?;
                left -= n as u64;
            }
            Ok::<_, ClientError>(w)
        });
        // A slow proxy build must read as a low number, not as a timeout.
        r.timeout = Duration::from_secs(120);
        let reader = tokio::spawn(async move {
            let mut got = 0u64;
            while got < per {
                got += r.recv_some().await?.len() as u64;
            }
            Ok::<_, ClientError>(())
        });
        tasks.push((writer, reader));
    }
    join_echo_tasks(tasks).await?;
    Ok(mib_per_s(per * conns as u64, start.elapsed()))
}

/// Handshakes per second: `n` sessions (connect, handshake, DC link, one round trip, close),
/// `concurrency` at a time; session `i` uses user `i` when `distinct_users`, else user 0.
pub async fn handshakes(
    target: Target<'_>,
    mode: BenchMode,
    n: usize,
    concurrency: usize,
    distinct_users: bool,
) -> Result<f64, String> {
    handshakes_as(
        target,
        mode,
        n,
        concurrency,
        distinct_users,
        Exchange::Bytes,
    )
    .await
}

/// [`handshakes`] with the round trip made as `ex` says.
pub async fn handshakes_as(
    target: Target<'_>,
    mode: BenchMode,
    n: usize,
    concurrency: usize,
    distinct_users: bool,
    ex: Exchange,
) -> Result<f64, String> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let worker = |next: Arc<std::sync::atomic::AtomicUsize>| async move {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= n {
                return Ok::<(), String>(());
            }
            let user = if distinct_users { i } else { 0 };
            let mut c = target
                .open(mode, DC_ECHO, user)
                .await
                .map_err(|e| format!("handshake {i}: {e}"))?;
            round_trip_as(&mut c, ex)
                .await
                .map_err(|e| format!("round trip {i}: {e}"))?;
        }
    };
    let mut futs = Vec::new();
    for _ in 0..concurrency.max(1) {
        futs.push(worker(Arc::clone(&next)));
    }
    // Run on this task (the target borrows the caller's data), all workers interleaved.
    let results = join_all(futs).await;
    for r in results {
        r?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::with_capacity(futs.len());
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// RSS growth of the proxy per idle session.
#[derive(Debug, Clone, Copy)]
pub struct IdleRss {
    /// Sessions held open.
    pub sessions: usize,
    /// VmRSS before opening them (KiB).
    pub before_kib: u64,
    /// VmRSS with all of them open (KiB).
    pub after_kib: u64,
}

impl IdleRss {
    /// Bytes of RSS per session.
    pub fn per_session_bytes(&self) -> f64 {
        (self.after_kib.saturating_sub(self.before_kib) * 1024) as f64 / self.sessions as f64
    }
}

/// Opens `sessions` sessions (each with one round trip, so the DC link exists), holds them
/// idle, and reads the proxy's VmRSS before and after.
pub async fn idle_rss(
    proxy: &ProxyHandle,
    mode: BenchMode,
    sessions: usize,
) -> Result<IdleRss, String> {
    idle_rss_as(proxy, mode, sessions, Exchange::Bytes, || ())
        .await
        .map(|(r, ())| r)
}

/// [`idle_rss`] with the round trips made as `ex` says; `during` runs while the sessions are
/// still held (e.g. to count the middle-proxy links they share).
pub async fn idle_rss_as<T>(
    proxy: &ProxyHandle,
    mode: BenchMode,
    sessions: usize,
    ex: Exchange,
    during: impl FnOnce() -> T,
) -> Result<(IdleRss, T), String> {
    let pid = proxy.pid.ok_or("proxy pid unknown (pass --pid)")?;
    let target = Target::Proxy(proxy);
    // Warm-up: let allocator pools and worker threads settle.
    handshakes_as(target, mode, 64, 8, true, ex).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kib = rss_kib(pid).ok_or("cannot read proxy VmRSS")?;
    let mut held = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let mut c = target
            .open(mode, DC_ECHO, i)
            .await
            .map_err(|e| format!("session {i}: {e}"))?;
        round_trip_as(&mut c, ex)
            .await
            .map_err(|e| format!("session {i} round trip: {e}"))?;
        held.push(c);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_kib = rss_kib(pid).ok_or("cannot read proxy VmRSS")?;
    let seen = during();
    drop(held);
    Ok((
        IdleRss {
            sessions,
            before_kib,
            after_kib,
        },
        seen,
    ))
}

/// Starts the sink and echo DCs on the given ports (0 = any).
pub async fn start_dcs(sink_port: u16, echo_port: u16) -> std::io::Result<Dcs> {
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    Ok(Dcs {
        sink: TestDc::start_on(at(sink_port), testkit::dc::DcMode::Sink).await?,
        echo: TestDc::start_on(at(echo_port), testkit::dc::DcMode::Echo).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ceiling_paths_measure_real_traffic() {
        let dcs = start_dcs(0, 0).await.unwrap();
        let t = Target::Direct(&dcs);
        preflight(t, BenchMode::Secure).await.unwrap();
        for conns in [1, 8] {
            let before = dcs.sink.counters().bytes_in;
            let up = upload(t, &dcs, BenchMode::Classic, conns, 1 << 20)
                .await
                .unwrap();
            assert!(up > 0.0);
            assert_eq!(dcs.sink.counters().bytes_in - before, 1 << 20);
            let before = dcs.echo.counters().bytes_out;
            let ec = echo(t, BenchMode::Secure, conns, 512 << 10).await.unwrap();
            assert!(ec > 0.0);
            // 512 KiB echoed plus one 32-byte warm-up round trip per connection.
            assert_eq!(
                dcs.echo.counters().bytes_out - before,
                (512 << 10) + 32 * conns as u64
            );
        }
        // The packet paths (what the `me` scenario measures on both routes): the echo DC
        // echoes the framed bytes, so the client gets its packets back whole. Abridged frames
        // a 32-byte probe with 1 header byte and a 64 KiB packet with 4.
        for conns in [1, 8] {
            let before = dcs.echo.counters().bytes_out;
            let ec = packet_echo(t, BenchMode::Classic, conns, 512 << 10, 64 << 10)
                .await
                .unwrap();
            assert!(ec > 0.0);
            let packets = (512 / 64 / conns) as u64;
            assert_eq!(
                dcs.echo.counters().bytes_out - before,
                conns as u64 * (33 + packets * ((64 << 10) + 4))
            );
        }
        preflight_packets(t, BenchMode::Tls).await.unwrap();
        let n0 = dcs.echo.counters().sessions;
        let rate = handshakes_as(t, BenchMode::Secure, 50, 4, false, Exchange::Packets)
            .await
            .unwrap();
        assert!(rate > 0.0);
        assert_eq!(dcs.echo.counters().sessions - n0, 50);
        let n0 = dcs.echo.counters().sessions;
        let rate = handshakes(t, BenchMode::Classic, 200, 8, false)
            .await
            .unwrap();
        assert!(rate > 0.0);
        assert_eq!(dcs.echo.counters().sessions - n0, 200);
    }

    #[tokio::test]
    async fn unreachable_proxy_is_an_error_not_a_number() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let p = ProxyHandle::external(addr, [0; 16], None);
        assert!(preflight(Target::Proxy(&p), BenchMode::Tls).await.is_err());
        assert!(idle_rss(&p, BenchMode::Tls, 1).await.is_err());
    }
}
