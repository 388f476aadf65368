//! `dpbench`: data-plane benchmarks for mtproxyd, driven from outside like a real client.
//!
//! Owns: the bench binary (`cargo run --release -p dpbench -- <scenario>`), the
//! `cargo bench -p dpbench` entry (all scenarios), proxy spawning on a generated config, and the
//! measurements. Must not: depend on the crates under test (it talks to the `mtproxyd` binary
//! over TCP only, with testkit's independent client and DC peers).
//!
//! Scenarios:
//! * `ceiling` — no proxy: client straight to the TestDcs (upload into a sink, echo), 1 and 8
//!   connections. Works without a proxy.
//! * `throughput` — the same through the proxy for each mode (classic, secure, tls), with the
//!   ratio to the ceiling and the proxy's CPU cost: CPU seconds (user + system, all threads,
//!   from /proc) per 10^9 bytes relayed, where an upload of N bytes relays N and an echo of N
//!   bytes relays 2N. `--baseline BIN` measures a second binary back to back on every line and
//!   prints candidate / baseline ratios (same run, same load).
//! * `handshakes` — sessions per second (connect, handshake, DC link, one round trip, close)
//!   with 1 user, and with N users (default 10,000) where every session uses another user.
//! * `idle` — proxy VmRSS growth per idle session with 2,000 sessions held open.
//! * `ratelimit` — the cost of `access.user_rate_limits` set but never reached (same run,
//!   proxies with and without, measured alternately: MiB/s and CPU-s/GB ratios), and how
//!   closely a capped session holds its cap.
//! * `me` — the middle-proxy route beside the direct one, same run: two proxies with the same
//!   config but the route (direct: `dc_overrides` to the echo TestDc; ME: `use_middle_proxy`
//!   with a testkit `TestMe` relaying to that same echo TestDc), measured back to back per line.
//!   Packet echo MiB/s (64 KiB transport packets — the ME route carries whole frames, not a
//!   byte stream) at 1 and 8 connections with ME / direct ratios (target: ME ≥ 0.8× direct)
//!   and both proxies' CPU-s/GB; handshakes/s (packet round trip); with `--idle` sessions held
//!   over ME, RSS per session and how many middle-proxy links (writers) carry them. Every ME
//!   figure is checked against TestMe's own records (frames and connection ids it saw), so
//!   traffic that fell back to direct is an error, not a number. TestMe runs in dpbench's
//!   process: its CPU is not in the proxy's CPU figures. A `ciphers` line first times the
//!   transforms each route must apply on one core ([`cipher`]); each echo line then shows the
//!   best ratio a CPU-bound proxy could reach given direct's measured CPU-s/GB.
//! * `all` — everything.
//!
//! By default the proxy is the real `mtproxyd` release binary (see [`proxy::locate_binary`]),
//! spawned twice on generated configs (1 user; N users) with `dc_overrides` sending DC 1 to
//! the sink and DC 2 to the echo TestDc. `--proxy ADDR --secret HEX [--pid PID]` measures an
//! already running proxy instead; then start the DCs on fixed ports with `--sink-port` /
//! `--echo-port` and route DC 1 / DC 2 there in its config.

pub mod cipher;
pub mod proxy;
pub mod scenarios;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use proxy::ProxyHandle;
use scenarios::{BenchMode, Dcs, Exchange, Target};

/// Which measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// No-proxy baselines only.
    Ceiling,
    /// Relay throughput (includes the ceiling).
    Throughput,
    /// Handshakes per second.
    Handshakes,
    /// RSS per idle session.
    Idle,
    /// Rate-limit cost and accuracy.
    RateLimit,
    /// Middle-proxy route beside the direct one.
    Me,
    /// All of the above.
    All,
}

impl Scenario {
    /// Parses a scenario name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ceiling" => Self::Ceiling,
            "throughput" => Self::Throughput,
            "handshakes" => Self::Handshakes,
            "idle" => Self::Idle,
            "ratelimit" => Self::RateLimit,
            "me" => Self::Me,
            "all" => Self::All,
            _ => return None,
        })
    }
}

/// An already running proxy.
#[derive(Debug, Clone, Copy)]
pub struct External {
    /// Client listener.
    pub addr: SocketAddr,
    /// One user's secret.
    pub secret: [u8; 16],
    /// Its pid (for the idle scenario).
    pub pid: Option<u32>,
}

/// Bench options (CLI flags map 1:1).
#[derive(Debug, Clone)]
pub struct Options {
    /// What to run.
    pub scenario: Scenario,
    /// Measure this proxy instead of spawning one.
    pub external: Option<External>,
    /// Sink DC port (0 = any).
    pub sink_port: u16,
    /// Echo DC port (0 = any).
    pub echo_port: u16,
    /// Users of the many-users proxy.
    pub users: usize,
    /// MiB moved per throughput measurement.
    pub mib: u64,
    /// Sessions per handshake measurement.
    pub handshakes: usize,
    /// Concurrent handshakes.
    pub concurrency: usize,
    /// Idle sessions for the RSS measurement.
    pub idle: usize,
    /// Modes measured through the proxy.
    pub modes: Vec<BenchMode>,
    /// Build the mtproxyd release binary if it is missing.
    pub build: bool,
    /// Another mtproxyd binary measured beside the candidate in the throughput scenario
    /// (each line back to back, plus a candidate / baseline ratio line).
    pub baseline: Option<std::path::PathBuf>,
    /// Extra `[censorship]` lines of the baseline's config: the same binary with one knob
    /// flipped measures that knob's cost in one run.
    pub baseline_censorship: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scenario: Scenario::All,
            external: None,
            sink_port: 0,
            echo_port: 0,
            users: 10_000,
            mib: 128,
            handshakes: 2_000,
            concurrency: 16,
            idle: 2_000,
            modes: BenchMode::ALL.to_vec(),
            build: true,
            baseline: None,
            baseline_censorship: String::new(),
        }
    }
}

/// Collected results; `errors` non-empty means some measurement could not run.
#[derive(Debug, Default)]
pub struct Report {
    /// Result objects, one per measurement.
    pub results: Vec<Value>,
    /// Human-readable failures.
    pub errors: Vec<String>,
}

impl Report {
    fn ok(&mut self, line: String, v: Value) {
        println!("{line}");
        self.results.push(v);
    }

    fn err(&mut self, what: &str, e: String) {
        println!("{what}: ERROR {e}");
        self.errors.push(format!("{what}: {e}"));
    }

    /// Machine-readable summary (`DPBENCH {json}` line).
    pub fn summary(&self) -> String {
        format!(
            "DPBENCH {}",
            json!({"results": self.results, "errors": self.errors})
        )
    }
}

const CONNS: [usize; 2] = [1, 8];

async fn ceiling(dcs: &Dcs, o: &Options, rep: &mut Report) -> Vec<(usize, f64, f64)> {
    let mut out = Vec::new();
    let total = o.mib << 20;
    for conns in CONNS {
        let t = Target::Direct(dcs);
        let up = scenarios::upload(t, dcs, BenchMode::Classic, conns, total).await;
        let ec = scenarios::echo(t, BenchMode::Classic, conns, total).await;
        match (up, ec) {
            (Ok(up), Ok(ec)) => {
                rep.ok(
                    format!("ceiling    conns={conns}  upload={up:9.1} MiB/s  echo={ec:9.1} MiB/s"),
                    json!({"kind": "ceiling", "conns": conns, "upload_mib_s": up, "echo_mib_s": ec}),
                );
                out.push((conns, up, ec));
            }
            (a, b) => rep.err(
                &format!("ceiling conns={conns}"),
                format!("{:?} / {:?}", a.err(), b.err()),
            ),
        }
    }
    out
}

async fn proxies(o: &Options, dcs: &Dcs) -> Result<(ProxyHandle, Option<ProxyHandle>), String> {
    if let Some(e) = o.external {
        return Ok((ProxyHandle::external(e.addr, e.secret, e.pid), None));
    }
    let bin = proxy::locate_binary();
    if !bin.exists() {
        if !o.build {
            return Err(format!(
                "{} not found (build it or set MTPROXYD_BIN)",
                bin.display()
            ));
        }
        proxy::build_binary()?;
    }
    let dc = (dcs.sink.addr(), dcs.echo.addr());
    let one = proxy::spawn(&bin, 1, dc, "").await?;
    let many = proxy::spawn(&bin, o.users, dc, "").await?;
    Ok((one, Some(many)))
}

/// Runs the selected scenarios, printing one line per measurement.
pub async fn run(o: &Options) -> Report {
    let mut rep = Report::default();
    let dcs = match scenarios::start_dcs(o.sink_port, o.echo_port).await {
        Ok(d) => d,
        Err(e) => {
            rep.err("start test DCs", e.to_string());
            return rep;
        }
    };
    println!(
        "dpbench: sink DC {} (DC {}), echo DC {} (DC {})",
        dcs.sink.addr(),
        proxy::DC_SINK,
        dcs.echo.addr(),
        proxy::DC_ECHO
    );
    let want_ceiling = matches!(
        o.scenario,
        Scenario::Ceiling | Scenario::Throughput | Scenario::All
    );
    let ceil = if want_ceiling {
        ceiling(&dcs, o, &mut rep).await
    } else {
        Vec::new()
    };
    if o.scenario == Scenario::Ceiling {
        return rep;
    }
    // The ME scenario spawns its own pair of proxies: skip the shared ones (one of them has
    // 10,000 users) when it runs alone.
    if o.scenario == Scenario::Me {
        if o.external.is_some() {
            rep.err(
                "me",
                "needs spawned proxies (it points one at its own test middle proxy)".into(),
            );
        } else {
            me_route(&dcs, o, &mut rep).await;
        }
        return rep;
    }
    let (one, many) = match proxies(o, &dcs).await {
        Ok(p) => p,
        Err(e) => {
            rep.err("proxy", e);
            return rep;
        }
    };
    let many_ref = many.as_ref().unwrap_or(&one);
    let mut modes = Vec::new();
    for &m in &o.modes {
        match scenarios::preflight(Target::Proxy(&one), m).await {
            Ok(()) => modes.push(m),
            Err(e) => rep.err(&format!("preflight {}", m.name()), e),
        }
    }
    if matches!(o.scenario, Scenario::Throughput | Scenario::All) {
        let baseline = match &o.baseline {
            Some(bin) => match proxy::spawn(
                bin,
                1,
                (dcs.sink.addr(), dcs.echo.addr()),
                &o.baseline_censorship,
            )
            .await
            {
                Ok(p) => Some(p),
                Err(e) => {
                    rep.err("baseline proxy", e);
                    None
                }
            },
            None => None,
        };
        let mut measured = vec![("candidate", &one)];
        if let Some(b) = &baseline {
            measured.push(("baseline", b));
        }
        throughput(&measured, &dcs, &modes, &ceil, o, &mut rep).await;
    }
    if matches!(o.scenario, Scenario::Handshakes | Scenario::All) {
        handshake_rates(&dcs, &one, many_ref, &modes, o, &mut rep).await;
    }
    if matches!(o.scenario, Scenario::Idle | Scenario::All) {
        let mode = if modes.contains(&BenchMode::Tls) {
            Some(BenchMode::Tls)
        } else {
            modes.first().copied()
        };
        if let Some(mode) = mode {
            match scenarios::idle_rss(many_ref, mode, o.idle).await {
                Ok(r) => rep.ok(
                    format!(
                        "idle       mode={} sessions={}  rss {} -> {} KiB  = {:.0} B/session",
                        mode.name(),
                        r.sessions,
                        r.before_kib,
                        r.after_kib,
                        r.per_session_bytes()
                    ),
                    json!({"kind": "idle_rss", "mode": mode.name(), "sessions": r.sessions,
                           "before_kib": r.before_kib, "after_kib": r.after_kib,
                           "bytes_per_session": r.per_session_bytes()}),
                ),
                Err(e) => rep.err("idle", e),
            }
        }
    }
    if matches!(o.scenario, Scenario::RateLimit | Scenario::All) && o.external.is_none() {
        rate_limits(&dcs, o, &mut rep).await;
    }
    if o.scenario == Scenario::All && o.external.is_none() {
        me_route(&dcs, o, &mut rep).await;
    }
    if !rep.errors.is_empty() {
        let logs = one.logs();
        if !logs.is_empty() {
            let tail: String = logs
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            println!("--- proxy log tail ---\n{tail}");
        }
    }
    rep
}

/// One throughput measurement: payload rate and the proxy's CPU cost.
#[derive(Debug, Clone, Copy)]
struct Rate {
    mib_s: f64,
    /// Proxy CPU seconds (user + system, all threads) per 10^9 bytes it relayed; `None` when
    /// the proxy's pid is unknown.
    cpu_s_per_gb: Option<f64>,
}

/// Runs `f` and charges the proxy CPU time it took to `relayed` bytes (client → DC plus
/// DC → client payload: an echo of N bytes relays 2N).
async fn measured(
    p: &ProxyHandle,
    relayed: u64,
    f: impl std::future::Future<Output = Result<f64, String>>,
) -> Result<Rate, String> {
    let before = p.pid.and_then(proxy::cpu_time);
    let mib_s = f.await?;
    let after = p.pid.and_then(proxy::cpu_time);
    let cpu_s_per_gb = before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b).as_secs_f64() / (relayed as f64 / 1e9));
    Ok(Rate {
        mib_s,
        cpu_s_per_gb,
    })
}

fn cpu_text(r: &Rate) -> String {
    r.cpu_s_per_gb
        .map_or_else(|| "   n/a".into(), |c| format!("{c:6.3}"))
}

async fn throughput(
    proxies: &[(&str, &ProxyHandle)],
    dcs: &Dcs,
    modes: &[BenchMode],
    ceil: &[(usize, f64, f64)],
    o: &Options,
    rep: &mut Report,
) {
    let total = o.mib << 20;
    for &mode in modes {
        for conns in CONNS {
            let (cu, ce) = ceil
                .iter()
                .find(|c| c.0 == conns)
                .map(|c| (c.1, c.2))
                .unwrap_or((f64::NAN, f64::NAN));
            // With a baseline, both proxies are measured back to back per line, so their
            // ratio shares the machine's load of the moment.
            let mut rates: Vec<(Rate, Rate)> = Vec::new();
            for &(label, p) in proxies {
                let t = Target::Proxy(p);
                let up = measured(p, total, scenarios::upload(t, dcs, mode, conns, total)).await;
                let ec = measured(p, 2 * total, scenarios::echo(t, mode, conns, total)).await;
                match (up, ec) {
                    (Ok(up), Ok(ec)) => {
                        rep.ok(
                            format!(
                                "throughput {label:9} mode={:7} conns={conns}  upload={:9.1} MiB/s (x{:.2} of ceiling) cpu={} s/GB  echo={:9.1} MiB/s (x{:.2}) cpu={} s/GB",
                                mode.name(),
                                up.mib_s,
                                up.mib_s / cu,
                                cpu_text(&up),
                                ec.mib_s,
                                ec.mib_s / ce,
                                cpu_text(&ec),
                            ),
                            json!({"kind": "throughput", "proxy": label, "mode": mode.name(),
                                   "conns": conns, "upload_mib_s": up.mib_s, "echo_mib_s": ec.mib_s,
                                   "upload_ratio": up.mib_s / cu, "echo_ratio": ec.mib_s / ce,
                                   "upload_cpu_s_per_gb": up.cpu_s_per_gb,
                                   "echo_cpu_s_per_gb": ec.cpu_s_per_gb}),
                        );
                        rates.push((up, ec));
                    }
                    (a, b) => rep.err(
                        &format!("throughput {label} {} conns={conns}", mode.name()),
                        format!("{:?} / {:?}", a.err(), b.err()),
                    ),
                }
            }
            if let [(cu, ce), (bu, be)] = rates[..] {
                let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
                let (ucpu, ecpu) = (
                    ratio(cu.cpu_s_per_gb, bu.cpu_s_per_gb),
                    ratio(ce.cpu_s_per_gb, be.cpu_s_per_gb),
                );
                let f = |r: Option<f64>| r.map_or_else(|| "n/a".into(), |r| format!("{r:.2}"));
                rep.ok(
                    format!(
                        "throughput ratio     mode={:7} conns={conns}  upload MiB/s x{:.2} cpu/GB x{}  echo MiB/s x{:.2} cpu/GB x{}  (candidate / baseline)",
                        mode.name(),
                        cu.mib_s / bu.mib_s,
                        f(ucpu),
                        ce.mib_s / be.mib_s,
                        f(ecpu),
                    ),
                    json!({"kind": "throughput_ratio", "mode": mode.name(), "conns": conns,
                           "upload_mib_s": cu.mib_s / bu.mib_s, "echo_mib_s": ce.mib_s / be.mib_s,
                           "upload_cpu_per_gb": ucpu, "echo_cpu_per_gb": ecpu}),
                );
            }
        }
    }
}

async fn handshake_rates(
    dcs: &Dcs,
    one: &ProxyHandle,
    many: &ProxyHandle,
    modes: &[BenchMode],
    o: &Options,
    rep: &mut Report,
) {
    match scenarios::handshakes(
        Target::Direct(dcs),
        BenchMode::Classic,
        o.handshakes,
        o.concurrency,
        false,
    )
    .await
    {
        Ok(r) => rep.ok(
            format!("handshakes ceiling (no proxy)        {r:9.0} /s"),
            json!({"kind": "handshakes", "mode": "ceiling", "users": 0, "per_s": r}),
        ),
        Err(e) => rep.err("handshakes ceiling", e),
    }
    for &mode in modes {
        for (p, distinct) in [(one, false), (many, true)] {
            let users = p.secrets.len();
            match scenarios::handshakes(
                Target::Proxy(p),
                mode,
                o.handshakes,
                o.concurrency,
                distinct,
            )
            .await
            {
                Ok(r) => rep.ok(
                    format!(
                        "handshakes mode={:7} users={users:<6} {r:9.0} /s",
                        mode.name()
                    ),
                    json!({"kind": "handshakes", "mode": mode.name(), "users": users,
                           "distinct_users": distinct, "per_s": r}),
                ),
                Err(e) => rep.err(&format!("handshakes {} users={users}", mode.name()), e),
            }
        }
    }
    // ee handshakes above pay the emulated ServerHello delay (the origin's think time, or a
    // plausible random one without a profile: a few ms per session, which bounds the rate at
    // this concurrency). The CPU cost shows with the delay forced off
    // (`server_hello_delay_* = 0`), against classic on the same proxy.
    if o.external.is_none() && modes.contains(&BenchMode::Tls) {
        match proxy::spawn(
            &proxy::locate_binary(),
            1,
            (dcs.sink.addr(), dcs.echo.addr()),
            "server_hello_delay_min_ms = 0\nserver_hello_delay_max_ms = 0\n",
        )
        .await
        {
            Ok(p) => {
                let mut rates = Vec::new();
                for mode in [BenchMode::Classic, BenchMode::Tls] {
                    let r = scenarios::handshakes(
                        Target::Proxy(&p),
                        mode,
                        o.handshakes,
                        o.concurrency,
                        false,
                    )
                    .await;
                    match r {
                        Ok(r) => {
                            rep.ok(
                                format!(
                                    "handshakes mode={:7} users=1      {r:9.0} /s  (ServerHello delay off)",
                                    mode.name()
                                ),
                                json!({"kind": "handshakes", "mode": mode.name(), "users": 1,
                                       "hello_delay": "off", "per_s": r}),
                            );
                            rates.push(r);
                        }
                        Err(e) => rep.err(&format!("handshakes {} delay off", mode.name()), e),
                    }
                }
                if let [c, t] = rates[..] {
                    rep.ok(
                        format!("handshakes tls / classic, delay off    x{:.2}", t / c),
                        json!({"kind": "handshakes_ratio", "hello_delay": "off",
                               "tls_over_classic": t / c}),
                    );
                }
            }
            Err(e) => rep.err("proxy with the ServerHello delay off", e),
        }
    }
}

/// Transport packet of the ME / direct echo: large enough that the per-frame cost (one RPC
/// per client frame on the ME route) does not dominate, as in a bulk media download.
const ME_PACKET: usize = 64 * 1024;
/// The target for the ME route's relay rate, as a fraction of the direct route's.
const ME_TARGET_RATIO: f64 = 0.8;

/// Waits until the ME proxy's API reports its pool ready (`/v1/runtime/gates`), then lets the
/// shadow writers come up: before that, a session would wait (`me_route_hybrid_max_wait_ms`)
/// and go direct, measuring the wrong route.
async fn wait_me_ready(p: &ProxyHandle, me: &testkit::me::TestMe) -> Result<(), String> {
    let api = p.api.ok_or("ME proxy has no API address")?;
    let mut c = testkit::HttpClient::new(api).with_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = c.get("/v1/runtime/gates").await {
            if r.json()
                .ok()
                .and_then(|v| v["data"]["me_runtime_ready"].as_bool())
                == Some(true)
            {
                break;
            }
        }
        if Instant::now() >= deadline {
            return Err("ME pool not ready after 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ready needs one writer per DC; the rest of the pool (shadows) follows within a moment.
    // Wait until the established link count holds still for two seconds (the pool refills
    // on a 500 ms tick, so one second can fall between two writers).
    let live = || live_links(me);
    let (mut last, mut since) = (live(), Instant::now());
    while since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if live() != last {
            (last, since) = (live(), Instant::now());
        }
    }
    Ok(())
}

/// Middle-proxy links (the proxy's writers) established and still open, as TestMe sees them.
fn live_links(me: &testkit::me::TestMe) -> usize {
    me.links()
        .iter()
        .filter(|l| l.established && !l.closed)
        .count()
}

fn log_tail(p: &ProxyHandle) -> String {
    let logs = p.logs();
    let start = logs.char_indices().rev().nth(2000).map_or(0, |(i, _)| i);
    logs[start..].to_string()
}

/// The `me` scenario (see the crate docs).
async fn me_route(dcs: &Dcs, o: &Options, rep: &mut Report) {
    use testkit::me::{random_proxy_secret, MeFiles, MeOptions, TestMe};
    let secret = random_proxy_secret();
    let me = match TestMe::start(dcs.echo.addr(), MeOptions::new(secret.clone())).await {
        Ok(m) => m,
        Err(e) => return rep.err("me: start TestMe", e.to_string()),
    };
    // Both DC indexes the bench uses go to the one middle proxy, which relays to the echo DC.
    let files = match MeFiles::write(
        &secret,
        Some(proxy::DC_ECHO),
        &[(proxy::DC_ECHO, me.addr()), (proxy::DC_SINK, me.addr())],
    ) {
        Ok(f) => f,
        Err(e) => return rep.err("me: proxy secret / config files", e.to_string()),
    };
    let bin = proxy::locate_binary();
    if !bin.exists() {
        if let Err(e) = proxy::build_binary() {
            return rep.err("me: proxy", e);
        }
    }
    let dc = (dcs.sink.addr(), dcs.echo.addr());
    let (direct, via_me) = match (
        proxy::spawn(&bin, 1, dc, "").await,
        proxy::spawn_me(&bin, dc, &files.general_keys()).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => return rep.err("me: proxies", format!("{:?} / {:?}", a.err(), b.err())),
    };
    let errors_before = rep.errors.len();
    if let Err(e) = wait_me_ready(&via_me, &me).await {
        rep.err("me: readiness", e);
        println!("--- ME proxy log tail ---\n{}", log_tail(&via_me));
        return;
    }
    println!(
        "me         middle proxy {} (TestMe, in dpbench's process: its CPU is not in the proxy's cpu figures), {} writers up",
        me.addr(),
        live_links(&me)
    );
    let mut modes = Vec::new();
    for &m in &o.modes {
        let frames = me.counters().frames_in;
        let direct_ok = scenarios::preflight_packets(Target::Proxy(&direct), m).await;
        let me_ok = scenarios::preflight_packets(Target::Proxy(&via_me), m).await;
        match (direct_ok, me_ok) {
            (Ok(()), Ok(())) if me.counters().frames_in > frames => modes.push(m),
            (Ok(()), Ok(())) => rep.err(
                &format!("me preflight {}", m.name()),
                "the ME proxy answered but TestMe saw no frame (went direct)".into(),
            ),
            (a, b) => rep.err(
                &format!("me preflight {}", m.name()),
                format!("direct {:?} / me {:?}", a.err(), b.err()),
            ),
        }
    }
    let costs = tokio::task::spawn_blocking(|| cipher::measure(256 << 20))
        .await
        .ok();
    if let Some(c) = costs {
        rep.ok(
            format!(
                "me         ciphers on one core: AES-256-CBC encrypt {:.3} s/GB, decrypt {:.3} s/GB, AES-256-CTR {:.3} s/GB: the ME route needs >= {:.3} CPU-s/GB more than direct",
                c.cbc_encrypt,
                c.cbc_decrypt,
                c.ctr,
                c.me_extra_per_gb()
            ),
            json!({"kind": "me_ciphers", "cbc_encrypt_s_per_gb": c.cbc_encrypt,
                   "cbc_decrypt_s_per_gb": c.cbc_decrypt, "ctr_s_per_gb": c.ctr,
                   "me_extra_cpu_s_per_gb": c.me_extra_per_gb()}),
        );
    }
    let rig = MeRig {
        direct: &direct,
        via_me: &via_me,
        me: &me,
        costs,
    };
    let total = o.mib << 20;
    for &mode in &modes {
        for conns in CONNS {
            me_echo_line(&rig, mode, conns, total, rep).await;
        }
        me_handshakes_line(&rig, mode, o, rep).await;
    }
    let idle_mode = if modes.contains(&BenchMode::Tls) {
        Some(BenchMode::Tls)
    } else {
        modes.first().copied()
    };
    if let Some(mode) = idle_mode {
        let conns_before = me.conns().len();
        let r =
            scenarios::idle_rss_as(&via_me, mode, o.idle, Exchange::Packets, || live_links(&me))
                .await;
        // Warm-up sessions (64) and the held ones must all have reached TestMe.
        let via = me.conns().len() - conns_before;
        match r {
            Ok((r, writers)) if via >= r.sessions => rep.ok(
                format!(
                    "me         idle mode={} sessions={}  rss {} -> {} KiB  = {:.0} B/session  over {writers} writers",
                    mode.name(),
                    r.sessions,
                    r.before_kib,
                    r.after_kib,
                    r.per_session_bytes()
                ),
                json!({"kind": "me_idle_rss", "mode": mode.name(), "sessions": r.sessions,
                       "before_kib": r.before_kib, "after_kib": r.after_kib,
                       "bytes_per_session": r.per_session_bytes(), "writers": writers}),
            ),
            Ok((r, _)) => rep.err(
                "me idle",
                format!("TestMe saw {via} of {} sessions (the rest went direct)", r.sessions),
            ),
            Err(e) => rep.err("me idle", e),
        }
    }
    if rep.errors.len() > errors_before {
        println!("--- ME proxy log tail ---\n{}", log_tail(&via_me));
    }
}

/// What every `me` line measures against: both proxies, the middle proxy, the cipher costs.
struct MeRig<'a> {
    direct: &'a ProxyHandle,
    via_me: &'a ProxyHandle,
    me: &'a testkit::me::TestMe,
    costs: Option<cipher::CipherCosts>,
}

/// One `me` echo line: direct then ME back to back (same load), ME checked against TestMe.
async fn me_echo_line(
    rig: &MeRig<'_>,
    mode: BenchMode,
    conns: usize,
    total: u64,
    rep: &mut Report,
) {
    let &MeRig {
        direct,
        via_me,
        me,
        costs,
    } = rig;
    let what = format!("me echo {} conns={conns}", mode.name());
    let echo = |p| scenarios::packet_echo(Target::Proxy(p), mode, conns, total, ME_PACKET);
    let packets = (total / conns as u64 / ME_PACKET as u64).max(1);
    let relayed = 2 * packets * ME_PACKET as u64 * conns as u64;
    let d = match measured(direct, relayed, echo(direct)).await {
        Ok(d) => d,
        Err(e) => return rep.err(&what, format!("direct: {e}")),
    };
    let frames = me.counters().frames_in;
    let m = match measured(via_me, relayed, echo(via_me)).await {
        Ok(m) => m,
        Err(e) => return rep.err(&what, format!("me: {e}")),
    };
    // One RPC per client packet (plus the warm-up round trips): fewer means some sessions
    // did not use the middle proxy.
    let seen = me.counters().frames_in - frames;
    if seen < packets * conns as u64 {
        return rep.err(
            &what,
            format!(
                "TestMe saw {seen} frames of {} packets",
                packets * conns as u64
            ),
        );
    }
    let cpu_ratio = m.cpu_s_per_gb.zip(d.cpu_s_per_gb).map(|(m, d)| m / d);
    let bound = costs.zip(d.cpu_s_per_gb).map(|(c, d)| c.me_ratio_bound(d));
    rep.ok(
        format!(
            "me         mode={:7} conns={conns}  direct={:8.1} MiB/s cpu={} s/GB  me={:8.1} MiB/s cpu={} s/GB  me/direct x{:.2} (target >= x{ME_TARGET_RATIO:.1}, cipher bound x{}) cpu x{}",
            mode.name(),
            d.mib_s,
            cpu_text(&d),
            m.mib_s,
            cpu_text(&m),
            m.mib_s / d.mib_s,
            bound.map_or_else(|| "n/a".into(), |r| format!("{r:.2}")),
            cpu_ratio.map_or_else(|| "n/a".into(), |r| format!("{r:.2}")),
        ),
        json!({"kind": "me_echo", "mode": mode.name(), "conns": conns, "packet": ME_PACKET,
               "direct_mib_s": d.mib_s, "me_mib_s": m.mib_s, "ratio": m.mib_s / d.mib_s,
               "target_ratio": ME_TARGET_RATIO, "cipher_bound_ratio": bound,
               "direct_cpu_s_per_gb": d.cpu_s_per_gb, "me_cpu_s_per_gb": m.cpu_s_per_gb,
               "me_in_bench_process": true}),
    );
}

/// One `me` handshakes line: direct then ME, each session with one packet round trip.
async fn me_handshakes_line(rig: &MeRig<'_>, mode: BenchMode, o: &Options, rep: &mut Report) {
    let &MeRig {
        direct, via_me, me, ..
    } = rig;
    let what = format!("me handshakes {}", mode.name());
    let rate = |p| {
        scenarios::handshakes_as(
            Target::Proxy(p),
            mode,
            o.handshakes,
            o.concurrency,
            false,
            Exchange::Packets,
        )
    };
    let d = match rate(direct).await {
        Ok(d) => d,
        Err(e) => return rep.err(&what, format!("direct: {e}")),
    };
    let conns_before = me.conns().len();
    let m = match rate(via_me).await {
        Ok(m) => m,
        Err(e) => return rep.err(&what, format!("me: {e}")),
    };
    // Each ME session shows up at TestMe as a connection id with its first request.
    let via = me.conns().len() - conns_before;
    if via < o.handshakes {
        return rep.err(
            &what,
            format!("TestMe saw {via} of {} sessions", o.handshakes),
        );
    }
    rep.ok(
        format!(
            "me         mode={:7} handshakes  direct={d:8.0} /s  me={m:8.0} /s  me/direct x{:.2}",
            mode.name(),
            m / d
        ),
        json!({"kind": "me_handshakes", "mode": mode.name(), "direct_per_s": d,
               "me_per_s": m, "ratio": m / d}),
    );
}

/// Cap (bits/s) of the accuracy measurement: low enough for any machine to reach.
const CAPPED_BPS: u64 = 80_000_000;

/// Rate limits: configured-but-not-reached cost, and the accuracy of a cap.
async fn rate_limits(dcs: &Dcs, o: &Options, rep: &mut Report) {
    let bin = proxy::locate_binary();
    let cap_all = |bps: u64| {
        move |users: usize| {
            let mut s = String::from("\n[access.user_rate_limits]\n");
            for i in 0..users {
                s.push_str(&format!(
                    "user{i:05} = {{ up_bps = {bps}, down_bps = {bps} }}\n"
                ));
            }
            s
        }
    };
    let (sink, echo) = (dcs.sink.addr(), dcs.echo.addr());
    let plain = proxy::spawn(&bin, 1, (sink, echo), "").await;
    let limited = proxy::spawn_with(&bin, 1, (sink, echo), "", cap_all(1_000_000_000_000)).await;
    let (plain, limited) = match (plain, limited) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            rep.err(
                "ratelimit proxies",
                format!("{:?} / {:?}", a.err(), b.err()),
            );
            return;
        }
    };
    let total = o.mib << 20;
    let mode = BenchMode::Classic;
    // Alternate, so both see the same load; keep the sums.
    let mut sums = [[0.0f64; 2]; 2];
    let mut cpu = [[0.0f64; 2]; 2];
    for _ in 0..3 {
        for (k, p) in [&plain, &limited].into_iter().enumerate() {
            let t = Target::Proxy(p);
            let up = measured(p, total, scenarios::upload(t, dcs, mode, 1, total)).await;
            let ec = measured(p, 2 * total, scenarios::echo(t, mode, 1, total)).await;
            match (up, ec) {
                (Ok(up), Ok(ec)) => {
                    sums[k][0] += up.mib_s;
                    sums[k][1] += ec.mib_s;
                    cpu[k][0] += up.cpu_s_per_gb.unwrap_or(f64::NAN);
                    cpu[k][1] += ec.cpu_s_per_gb.unwrap_or(f64::NAN);
                }
                (a, b) => {
                    rep.err("ratelimit cost", format!("{:?} / {:?}", a.err(), b.err()));
                    return;
                }
            }
        }
    }
    let r = |a: f64, b: f64| a / b;
    rep.ok(
        format!(
            "ratelimit  cost (limits set, not reached / none) conns=1  upload MiB/s x{:.3} cpu/GB x{:.3}  echo MiB/s x{:.3} cpu/GB x{:.3}",
            r(sums[1][0], sums[0][0]),
            r(cpu[1][0], cpu[0][0]),
            r(sums[1][1], sums[0][1]),
            r(cpu[1][1], cpu[0][1]),
        ),
        json!({"kind": "ratelimit_cost", "upload_mib_s": r(sums[1][0], sums[0][0]),
               "upload_cpu_per_gb": r(cpu[1][0], cpu[0][0]),
               "echo_mib_s": r(sums[1][1], sums[0][1]),
               "echo_cpu_per_gb": r(cpu[1][1], cpu[0][1])}),
    );
    drop((plain, limited));
    let capped = match proxy::spawn_with(&bin, 1, (sink, echo), "", cap_all(CAPPED_BPS)).await {
        Ok(p) => p,
        Err(e) => {
            rep.err("ratelimit capped proxy", e);
            return;
        }
    };
    // About four seconds at the cap.
    let bytes = CAPPED_BPS / 8 * 4;
    let cap_mib_s = CAPPED_BPS as f64 / 8.0 / f64::from(1u32 << 20);
    match scenarios::upload(Target::Proxy(&capped), dcs, mode, 1, bytes).await {
        Ok(mib_s) => rep.ok(
            format!(
                "ratelimit  accuracy cap={:.1} MiB/s  measured={mib_s:.2} MiB/s  (x{:.3} of the cap)",
                cap_mib_s,
                mib_s / cap_mib_s
            ),
            json!({"kind": "ratelimit_accuracy", "cap_mib_s": cap_mib_s, "mib_s": mib_s,
                   "ratio": mib_s / cap_mib_s}),
        ),
        Err(e) => rep.err("ratelimit accuracy", e),
    }
}
