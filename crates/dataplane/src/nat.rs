//! NAT public-address discovery for the middle-proxy route (docs/PROTOCOL.md §7.5,
//! docs/ME-MODEL.md "NAT / STUN").
//!
//! Owns: the [`NatProbe`] handle — the `general.middle_proxy_nat_ip` override, STUN binding
//! probes (UDP, then TCP with `network.stun_tcp_fallback`) to `network.stun_servers` with
//! `general.stun_nat_probe_concurrency` in flight, the per-family reflection cache (10 min),
//! the exponential backoff after a round where no server answered, the HTTP "what is my IP"
//! fallback (`network.http_ip_detect_urls`), the periodic refresh task and the snapshot
//! behind `/v1/runtime/nat_stun`. Must not: know the STUN wire format (that is
//! `proto::stun`), decide which connections need the public address (the ME route asks
//! through [`NatProbe::public_ip_for`]) or depend on the API crate.
//!
//! ```text
//!  probe_now ─► nat_ip set / probing off ─► nothing
//!            ─► last success < TTL ────────► cached
//!            ─► in backoff ────────────────► backoff (remaining)
//!            ─► round: live servers (else all) × {v4, v6}, ≤ concurrency at once,
//!                each: resolve ─► UDP binding ─(no answer, tcp_fallback)─► TCP binding
//!               per family the most reported IP wins; nothing from STUN for v4 ─► HTTP URLs
//!               ─► answered: cache, attempts = 0, live = who answered
//!               ─► none:     attempts += 1, backoff 60 s × 2^min(attempts − 1, 6), live = []
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use config::Config;
use parking_lot::Mutex;
use proto::stun;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How long a reflection is trusted before a new round (telemt: 10 min).
pub const REFLECTION_TTL: Duration = Duration::from_secs(600);
/// First backoff after a failed round (telemt: 60 s, doubled per further failure up to ×64).
pub const BACKOFF_BASE: Duration = Duration::from_secs(60);
/// One STUN request (per transport) or HTTP fetch (telemt's per-server batch timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The backoff stops doubling after this many failures (telemt: 2^6).
const BACKOFF_MAX_SHIFT: u32 = 6;
/// A body longer than this is not an IP address.
const HTTP_BODY_LIMIT: usize = 256;

/// Timing knobs that are not config keys (tests shorten them).
#[derive(Debug, Clone)]
pub struct NatProbeOptions {
    /// Per request and transport.
    pub request_timeout: Duration,
    /// Reflection lifetime.
    pub cache_ttl: Duration,
    /// First backoff after a failed round.
    pub backoff_base: Duration,
}

impl Default for NatProbeOptions {
    fn default() -> Self {
        Self {
            request_timeout: REQUEST_TIMEOUT,
            cache_ttl: REFLECTION_TTL,
            backoff_base: BACKOFF_BASE,
        }
    }
}

/// The config keys the probe reads (fixed at start: they are restart-only in telemt).
#[derive(Debug, Clone)]
struct Settings {
    nat_ip: Option<IpAddr>,
    /// `middle_proxy_nat_probe && network.stun_use`.
    probe: bool,
    servers: Vec<String>,
    concurrency: usize,
    tcp_fallback: bool,
    http_urls: Vec<String>,
    ipv4: bool,
    ipv6: bool,
}

impl Settings {
    fn from_config(cfg: &Config) -> Self {
        let mut servers: Vec<String> = Vec::new();
        for s in &cfg.network.stun_servers {
            let s = s.trim();
            if !s.is_empty() && !servers.iter().any(|x| x == s) {
                servers.push(s.to_owned());
            }
        }
        Self {
            nat_ip: cfg.general.middle_proxy_nat_ip,
            probe: cfg.general.middle_proxy_nat_probe && cfg.network.stun_use,
            servers,
            concurrency: cfg.general.stun_nat_probe_concurrency.max(1),
            tcp_fallback: cfg.network.stun_tcp_fallback,
            http_urls: cfg
                .network
                .http_ip_detect_urls
                .iter()
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            ipv4: cfg.network.ipv4,
            // `None` = auto: probe, a host without IPv6 simply gets no answer.
            ipv6: cfg.network.ipv6 != Some(false),
        }
    }

    /// Whether rounds run at all: an operator-given address replaces probing (telemt never
    /// uses a reflection when `middle_proxy_nat_ip` is set).
    fn probing(&self) -> bool {
        self.probe && self.nat_ip.is_none()
    }
}

/// A reflected public endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatReflection {
    /// The address as the STUN server saw us (port 0 when it came from an HTTP URL).
    pub addr: SocketAddr,
    /// When it was observed.
    pub observed_at: SystemTime,
}

/// The probe's state for `/v1/runtime/nat_stun` (same fields as the API's
/// `NatStunSnapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatSnapshot {
    /// Probing runs (`middle_proxy_nat_probe`, `stun_use`, no `middle_proxy_nat_ip`).
    pub nat_probe_enabled: bool,
    /// Probing is on but was switched off at runtime (no STUN server configured).
    pub nat_probe_disabled_runtime: bool,
    /// Consecutive failed rounds (0 after a success), as telemt counts them.
    pub nat_probe_attempts: u8,
    /// `network.stun_servers`, trimmed and deduplicated.
    pub configured_servers: Vec<String>,
    /// Servers that answered in the last round.
    pub live_servers: Vec<String>,
    /// IPv4 reflection.
    pub reflection_v4: Option<NatReflection>,
    /// IPv6 reflection.
    pub reflection_v6: Option<NatReflection>,
    /// Remaining backoff after a failed round.
    pub stun_backoff_remaining_ms: Option<u64>,
}

/// What one [`NatProbe::probe_now`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Nothing to do: `middle_proxy_nat_ip` is set or probing is off / disabled.
    Skipped,
    /// The last success is younger than the cache TTL; no request was sent.
    Cached,
    /// A previous round failed and its backoff is still running; no request was sent.
    Backoff(Duration),
    /// A round ran and found at least one address.
    Found,
    /// A round ran and nobody answered; backoff started.
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    addr: SocketAddr,
    observed_at: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    v4: Option<Cached>,
    v6: Option<Cached>,
    last_success: Option<Instant>,
    live: Vec<String>,
    attempts: u8,
    backoff_until: Option<Instant>,
    disabled_runtime: bool,
}

struct Inner {
    settings: Settings,
    opts: NatProbeOptions,
    state: Mutex<State>,
    /// One round at a time: concurrent callers wait and then see its result in the cache.
    round: tokio::sync::Mutex<()>,
}

/// Public-address discovery; cheap to clone (one shared state).
#[derive(Clone)]
pub struct NatProbe {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatProbe")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// Addresses NAT hides: the ones a peer cannot reach us at. IPv4 private, loopback,
/// unspecified, link-local and shared (100.64/10, carrier NAT); IPv6 loopback, unspecified,
/// unique-local (fc00::/7) and link-local (fe80::/10).
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

impl NatProbe {
    /// A probe over `cfg`'s NAT keys; nothing is sent until [`probe_now`](Self::probe_now)
    /// or [`spawn_refresh`](Self::spawn_refresh).
    pub fn new(cfg: &Config, opts: NatProbeOptions) -> Self {
        let settings = Settings::from_config(cfg);
        let state = State {
            // Nothing to ask: telemt's `nat_probe_disabled` flag, set (docs/DECISIONS.md #42).
            disabled_runtime: settings.probing()
                && settings.servers.is_empty()
                && settings.http_urls.is_empty(),
            ..State::default()
        };
        Self {
            inner: Arc::new(Inner {
                settings,
                opts,
                state: Mutex::new(state),
                round: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The public IP to put in place of `local` (docs/PROTOCOL.md §7.5): the configured
    /// `middle_proxy_nat_ip` when it has `local`'s family; else, when `local` is not public
    /// and probing is on, the cached reflection of that family (kept past its TTL while a
    /// refresh fails: an old public address beats a private one). `None` = use `local`.
    /// Only the IP is replaced; the caller keeps its port.
    pub fn public_ip_for(&self, local: IpAddr) -> Option<IpAddr> {
        let s = &self.inner.settings;
        if let Some(nat) = s.nat_ip {
            return (nat.is_ipv4() == local.is_ipv4()).then_some(nat);
        }
        if !s.probing() || !is_non_public(local) {
            return None;
        }
        let st = self.inner.state.lock();
        let slot = if local.is_ipv4() { st.v4 } else { st.v6 };
        slot.map(|c| c.addr.ip())
    }

    /// The public IPv4 address if one is known (override or reflection), for link hosts.
    pub fn public_v4(&self) -> Option<Ipv4Addr> {
        match self.public_ip_for(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) {
            Some(IpAddr::V4(v4)) => Some(v4),
            _ => None,
        }
    }

    /// The public IPv6 address if one is known (override or reflection), for link hosts.
    pub fn public_v6(&self) -> Option<Ipv6Addr> {
        match self.public_ip_for(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) {
            Some(IpAddr::V6(v6)) => Some(v6),
            _ => None,
        }
    }

    /// Runs one discovery round unless the cache is fresh, a backoff runs or there is
    /// nothing to do. Concurrent calls share one round.
    pub async fn probe_now(&self) -> ProbeOutcome {
        if !self.inner.settings.probing() || self.inner.state.lock().disabled_runtime {
            return ProbeOutcome::Skipped;
        }
        let _round = self.inner.round.lock().await;
        if let Some(quiet) = self.quiet_reason(Instant::now()) {
            return quiet;
        }
        self.run_round().await
    }

    /// `Cached` / `Backoff` when no round is due.
    fn quiet_reason(&self, now: Instant) -> Option<ProbeOutcome> {
        let st = self.inner.state.lock();
        if st
            .last_success
            .is_some_and(|t| now.duration_since(t) < self.inner.opts.cache_ttl)
        {
            return Some(ProbeOutcome::Cached);
        }
        match st.backoff_until {
            Some(until) if until > now => Some(ProbeOutcome::Backoff(until - now)),
            _ => None,
        }
    }

    async fn run_round(&self) -> ProbeOutcome {
        let s = &self.inner.settings;
        let live = self.inner.state.lock().live.clone();
        // telemt asks the servers that answered last time first, and everyone only when
        // none of them answers any more.
        let mut result = if live.is_empty() {
            None
        } else {
            Some(self.stun_batch(&live).await)
        };
        if result.as_ref().is_none_or(|r| r.is_empty()) && live != s.servers {
            result = Some(self.stun_batch(&s.servers).await);
        }
        let stun = result.unwrap_or_default();
        let mut v4 = stun.pick(false);
        let v6 = stun.pick(true);
        if v4.is_none() && s.ipv4 && !s.http_urls.is_empty() {
            v4 = http_fallback(&s.http_urls, self.inner.opts.request_timeout)
                .await
                .map(|ip| SocketAddr::new(IpAddr::V4(ip), 0));
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut st = self.inner.state.lock();
        st.live = stun.live;
        let stun_answered = !st.live.is_empty();
        if stun_answered {
            st.attempts = 0;
            st.backoff_until = None;
        } else if !s.servers.is_empty() {
            let shift = u32::from(st.attempts).min(BACKOFF_MAX_SHIFT);
            st.attempts = st.attempts.saturating_add(1);
            st.backoff_until = Some(now + self.inner.opts.backoff_base * (1u32 << shift));
        }
        let cache = |addr| Cached {
            addr,
            observed_at: wall,
        };
        if let Some(a) = v4 {
            st.v4 = Some(cache(a));
        }
        if let Some(a) = v6 {
            st.v6 = Some(cache(a));
        }
        if v4.is_some() || v6.is_some() {
            st.last_success = Some(now);
            tracing::info!(v4 = ?v4, v6 = ?v6, live = st.live.len(), "NAT probe: public address");
            ProbeOutcome::Found
        } else {
            tracing::warn!(
                attempts = st.attempts,
                "NAT probe: no STUN server answered; backing off"
            );
            ProbeOutcome::Failed
        }
    }

    /// Every server × enabled family, at most `concurrency` in flight.
    async fn stun_batch(&self, servers: &[String]) -> Batch {
        let s = &self.inner.settings;
        let timeout = self.inner.opts.request_timeout;
        let sem = Arc::new(tokio::sync::Semaphore::new(s.concurrency));
        let mut set = JoinSet::new();
        let families = [(false, s.ipv4), (true, s.ipv6)];
        for server in servers {
            for (v6, _) in families.iter().filter(|(_, on)| *on) {
                let (server, v6, sem) = (server.clone(), *v6, Arc::clone(&sem));
                let tcp = s.tcp_fallback;
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await.ok();
                    let got = probe_server(&server, v6, tcp, timeout).await;
                    (server, v6, got)
                });
            }
        }
        let mut batch = Batch::default();
        while let Some(joined) = set.join_next().await {
            let Ok((server, v6, got)) = joined else {
                continue;
            };
            match got {
                Ok(addr) => {
                    if !batch.live.contains(&server) {
                        batch.live.push(server.clone());
                    }
                    // A v4 server may answer a v6 socket with a mapped address and the
                    // reverse: file the answer under the family it carries.
                    if addr.is_ipv6() == v6 {
                        batch.found.push(addr);
                    }
                }
                Err(e) => tracing::debug!(%server, v6, error = %e, "NAT probe: no answer"),
            }
        }
        // Config order, whatever order the answers came in.
        batch
            .live
            .sort_by_key(|x| servers.iter().position(|s| s == x));
        batch
    }

    /// The periodic refresh: a round now, then again when the reflection expires or the
    /// backoff ends, until `cancel`. Ends at once when there is nothing to probe.
    pub fn spawn_refresh(&self, cancel: CancellationToken) -> JoinHandle<()> {
        let probe = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = match probe.probe_now().await {
                    ProbeOutcome::Skipped => return,
                    ProbeOutcome::Backoff(left) => left,
                    ProbeOutcome::Failed => probe
                        .snapshot()
                        .stun_backoff_remaining_ms
                        .map_or(probe.inner.opts.backoff_base, Duration::from_millis),
                    ProbeOutcome::Cached | ProbeOutcome::Found => {
                        let age = probe
                            .inner
                            .state
                            .lock()
                            .last_success
                            .map_or(Duration::ZERO, |t| t.elapsed());
                        probe.inner.opts.cache_ttl.saturating_sub(age)
                    }
                };
                // Never spin: a zero wait would re-run the loop at once.
                let wait = wait.max(Duration::from_millis(100));
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }

    /// The state for `/v1/runtime/nat_stun`.
    pub fn snapshot(&self) -> NatSnapshot {
        let s = &self.inner.settings;
        let st = self.inner.state.lock();
        let now = Instant::now();
        let refl = |c: Option<Cached>| {
            c.map(|c| NatReflection {
                addr: c.addr,
                observed_at: c.observed_at,
            })
        };
        NatSnapshot {
            nat_probe_enabled: s.probing(),
            nat_probe_disabled_runtime: st.disabled_runtime,
            nat_probe_attempts: st.attempts,
            configured_servers: s.servers.clone(),
            live_servers: st.live.clone(),
            reflection_v4: refl(st.v4),
            reflection_v6: refl(st.v6),
            stun_backoff_remaining_ms: st
                .backoff_until
                .filter(|u| *u > now)
                .map(|u| u64::try_from((u - now).as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

#[derive(Debug, Default)]
struct Batch {
    live: Vec<String>,
    found: Vec<SocketAddr>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The IP most servers reported for the family (first reported on a tie), with the
    /// port of its first report.
    fn pick(&self, v6: bool) -> Option<SocketAddr> {
        let mut votes: HashMap<IpAddr, (usize, usize)> = HashMap::new();
        for (i, a) in self.found.iter().enumerate() {
            if a.is_ipv6() == v6 {
                votes.entry(a.ip()).or_insert((0, i)).0 += 1;
            }
        }
        votes
            .into_values()
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, i)| self.found[i])
    }
}

/// Why one server gave no reflection.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("cannot resolve: {0}")]
    Resolve(std::io::Error),
    #[error("no address of the wanted family")]
    NoAddress,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within the timeout")]
    Timeout,
    #[error("bad answer: {0}")]
    Stun(#[from] stun::StunError),
}

async fn probe_server(
    server: &str,
    v6: bool,
    tcp_fallback: bool,
    timeout: Duration,
) -> Result<SocketAddr, ProbeError> {
    let target = tokio::time::timeout(timeout, tokio::net::lookup_host(server))
        .await
        .map_err(|_| ProbeError::Timeout)?
        .map_err(ProbeError::Resolve)?
        .find(|a| a.is_ipv6() == v6)
        .ok_or(ProbeError::NoAddress)?;
    let udp = probe_udp(target, timeout).await;
    match udp {
        Err(e) if tcp_fallback => {
            tracing::debug!(%server, error = %e, "NAT probe: UDP failed, trying TCP");
            probe_tcp(target, timeout).await
        }
        other => other,
    }
}

fn new_txid() -> stun::TransactionId {
    rand::random()
}

async fn probe_udp(target: SocketAddr, timeout: Duration) -> Result<SocketAddr, ProbeError> {
    let bind: SocketAddr = if target.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(target).await?;
    let txid = new_txid();
    let req = stun::binding_request(&txid);
    let deadline = tokio::time::Instant::now() + timeout;
    // One retransmission half-way: a single lost datagram should not cost a whole backoff.
    let resend_at = tokio::time::Instant::now() + timeout / 2;
    let mut resent = false;
    sock.send(&req).await?;
    let mut buf = vec![0u8; 1024];
    loop {
        let wake = if resent { deadline } else { resend_at };
        match tokio::time::timeout_at(wake, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => match stun::parse_binding_response(&buf[..n], &txid) {
                Ok(addr) => return Ok(addr),
                // A stray or late datagram for an older request: keep waiting.
                Err(stun::StunError::TransactionMismatch) => continue,
                Err(e) => return Err(e.into()),
            },
            // ICMP port unreachable shows up as a receive error on a connected socket.
            Ok(Err(e)) => return Err(e.into()),
            Err(_) if !resent => {
                resent = true;
                sock.send(&req).await?;
            }
            Err(_) => return Err(ProbeError::Timeout),
        }
    }
}

async fn probe_tcp(target: SocketAddr, timeout: Duration) -> Result<SocketAddr, ProbeError> {
    let fut = async {
        let mut stream = TcpStream::connect(target).await?;
        let txid = new_txid();
        stream.write_all(&stun::binding_request(&txid)).await?;
        let mut buf = Vec::with_capacity(128);
        let mut chunk = [0u8; 512];
        loop {
            if let Some(len) = stun::message_len(&buf)? {
                if buf.len() >= len {
                    return Ok(stun::parse_binding_response(&buf[..len], &txid)?);
                }
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ProbeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ProbeError::Timeout)?
}

/// The first URL whose body (trimmed) is an IPv4 address. System proxies are not used: a
/// proxy would report its own address.
async fn http_fallback(urls: &[String], timeout: Duration) -> Option<Ipv4Addr> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .ok()?;
    for url in urls {
        let body = async {
            let mut resp = client.get(url).send().await.ok()?.error_for_status().ok()?;
            // Read by chunks: a misbehaving URL must not make us buffer a large body.
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.ok()? {
                body.extend_from_slice(&chunk);
                if body.len() > HTTP_BODY_LIMIT {
                    return None;
                }
            }
            Some(body)
        }
        .await;
        let ip = body
            .and_then(|b| std::str::from_utf8(&b).ok().map(|t| t.trim().parse().ok()))
            .flatten();
        match ip {
            Some(ip) => return Some(ip),
            None => tracing::debug!(%url, "NAT probe: HTTP IP detection gave no IPv4 address"),
        }
    }
    None
}

#[cfg(test)]
#[path = "nat_tests.rs"]
mod tests;
