//! The Prometheus endpoint (`server.metrics_port` / `metrics_listen`, `GET /metrics` behind
//! `server.metrics_whitelist`): the stats counters (`stats::prom::StatsCollector`), the
//! series that come from the config (build info, telemetry switches, floor mode, per-user
//! unique-IP limits and their utilization) and the middle-proxy pool's live gauges, read from
//! the `Runtime` port's pool snapshot (the same one `/v1/runtime/me_pool_state` and
//! `/v1/stats/dcs` render), encoded by `prometheus-client` at scrape time.
//!
//! Pool gauges telemt has keep telemt's names (`telemt_me_writers_active_current`,
//! `telemt_me_adaptive_floor_*`); the ones telemt lacks are named after the API fields they
//! repeat: `telemt_me_pool_writers{contour}`, `telemt_me_pool_generation{kind}`,
//! `telemt_me_runtime_ready`, `telemt_me_dc_writers_alive{dc}`, `..._required{dc}`,
//! `telemt_me_dc_coverage_pct{dc}`. They are absent in direct mode and on a scrape that
//! finds the pool busy (`source_unavailable` in the API).
//!
//! Must not: keep its own counters (everything is read from `stats`, the config snapshot and
//! the runtime port on each scrape), or serve anything but `/metrics`.

use std::convert::Infallible;
use std::fmt::Error as FmtError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use config::ConfigStore;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use stats::prom::{encode_text, StatsCollector};
use stats::Stats;
use tokio::net::TcpListener;

use crate::runtime::{MePoolSnapshot, Runtime, WriterContour};

/// Config-derived series.
struct ConfigCollector {
    store: Arc<ConfigStore>,
    stats: Arc<Stats>,
    version: &'static str,
}

impl std::fmt::Debug for ConfigCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigCollector")
    }
}

impl Collector for ConfigCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let snap = self.store.current();
        let cfg = &snap.config;
        let mut m = enc.encode_descriptor("telemt_build_info", "build", None, MetricType::Gauge)?;
        ConstGauge::new(1i64).encode(m.encode_family(&[("version", self.version)])?)?;
        let t = &cfg.general.telemetry;
        for (name, on) in [
            ("telemt_telemetry_core_enabled", t.core_enabled),
            ("telemt_telemetry_user_enabled", t.user_enabled),
        ] {
            let g = ConstGauge::new(i64::from(on));
            g.encode(enc.encode_descriptor(name, "telemetry switch", None, g.metric_type())?)?;
        }
        let mut m = enc.encode_descriptor(
            "telemt_telemetry_me_level",
            "middle-proxy telemetry level (one-hot)",
            None,
            MetricType::Gauge,
        )?;
        let level = t.me_level.as_str();
        for l in ["silent", "normal", "debug"] {
            ConstGauge::new(i64::from(l == level)).encode(m.encode_family(&[("level", l)])?)?;
        }
        let mut m = enc.encode_descriptor(
            "telemt_me_floor_mode",
            "middle-proxy writer floor mode (one-hot)",
            None,
            MetricType::Gauge,
        )?;
        let mode = cfg.general.me_floor_mode.as_str();
        for l in ["static", "adaptive"] {
            ConstGauge::new(i64::from(l == mode)).encode(m.encode_family(&[("mode", l)])?)?;
        }
        let a = &cfg.access;
        let limits: Vec<(&String, usize)> = a
            .users
            .keys()
            .filter_map(|u| {
                a.effective_max_unique_ips(u)
                    .filter(|n| *n > 0)
                    .map(|n| (u, n))
            })
            .take(stats::prom::MAX_USER_SERIES)
            .collect();
        let mut m = enc.encode_descriptor(
            "telemt_user_unique_ips_limit",
            "effective unique-IP cap",
            None,
            MetricType::Gauge,
        )?;
        for (u, n) in &limits {
            let g = ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX));
            g.encode(m.encode_family(&[("user", u.as_str())])?)?;
        }
        let mut m = enc.encode_descriptor(
            "telemt_user_unique_ips_utilization",
            "live source IPs / cap",
            None,
            MetricType::Gauge,
        )?;
        let ips = self.stats.ips();
        for (u, n) in &limits {
            let used = ips.active_ips(u).len() as f64 / *n as f64;
            ConstGauge::new(used).encode(m.encode_family(&[("user", u.as_str())])?)?;
        }
        Ok(())
    }
}

/// The pool's live gauges, from one snapshot taken for this scrape.
#[derive(Debug)]
struct MePoolCollector {
    pool: MePoolSnapshot,
    ready: bool,
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> Result<(), FmtError> {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for MePoolCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let p = &self.pool;
        let contours = [
            WriterContour::Warm,
            WriterContour::Active,
            WriterContour::Draining,
        ];
        let count = |c: WriterContour, draining: bool| {
            p.writers
                .iter()
                .filter(|w| w.contour == c && (draining || !w.draining))
                .count() as u64
        };
        // telemt counts non-draining writers of each contour.
        gauge(
            &mut enc,
            "telemt_me_writers_active_current",
            "non-draining active writers",
            count(WriterContour::Active, false),
        )?;
        gauge(
            &mut enc,
            "telemt_me_writers_warm_current",
            "non-draining warm writers",
            count(WriterContour::Warm, false),
        )?;
        let mut m = enc.encode_descriptor(
            "telemt_me_pool_writers",
            "writers by contour",
            None,
            MetricType::Gauge,
        )?;
        for c in contours {
            let g = ConstGauge::new(i64::try_from(count(c, true)).unwrap_or(i64::MAX));
            g.encode(m.encode_family(&[("contour", c.as_str())])?)?;
        }
        let mut m = enc.encode_descriptor(
            "telemt_me_pool_generation",
            "pool generations (0 = none pending)",
            None,
            MetricType::Gauge,
        )?;
        for (kind, g) in [
            ("active", p.active_generation),
            ("warm", p.warm_generation),
            ("pending_hardswap", p.pending_hardswap_generation),
        ] {
            let g = ConstGauge::new(i64::try_from(g).unwrap_or(i64::MAX));
            g.encode(m.encode_family(&[("kind", kind)])?)?;
        }
        gauge(
            &mut enc,
            "telemt_me_runtime_ready",
            "1 when the pool has minimal coverage (gates.me_runtime_ready)",
            u64::from(self.ready),
        )?;
        let a = &p.adaptive;
        for (name, v) in [
            ("cpu_cores_detected", u64::from(a.cpu_cores_detected)),
            ("cpu_cores_effective", u64::from(a.cpu_cores_effective)),
            ("global_cap_raw", a.global_cap_raw),
            ("global_cap_effective", a.global_cap_effective),
            ("target_writers_total", a.target_writers_total),
            ("active_cap_configured", a.active_cap_configured),
            ("active_cap_effective", a.active_cap_effective),
            ("warm_cap_configured", a.warm_cap_configured),
            ("warm_cap_effective", a.warm_cap_effective),
        ] {
            let series = format!("telemt_me_adaptive_floor_{name}");
            gauge(&mut enc, &series, "adaptive writer floor", v)?;
        }
        let dcs = crate::views::dc_rows(p);
        let labels: Vec<String> = dcs.iter().map(|d| d.dc.to_string()).collect();
        for (name, help, f) in [
            (
                "telemt_me_dc_writers_alive",
                "non-draining writers of the DC",
                (|d: &crate::views::DcStatus| d.alive_writers) as fn(&_) -> usize,
            ),
            (
                "telemt_me_dc_writers_required",
                "writers the DC's floor requires now",
                |d| d.required_writers,
            ),
        ] {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (d, l) in dcs.iter().zip(&labels) {
                let g = ConstGauge::new(i64::try_from(f(d)).unwrap_or(i64::MAX));
                g.encode(m.encode_family(&[("dc", l.as_str())])?)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "telemt_me_dc_coverage_pct",
            "alive / required writers of the DC, percent",
            None,
            MetricType::Gauge,
        )?;
        for (d, l) in dcs.iter().zip(&labels) {
            ConstGauge::new(d.coverage_pct).encode(m.encode_family(&[("dc", l.as_str())])?)?;
        }
        Ok(())
    }
}

/// Renders the whole exposition once.
pub fn render(
    store: &Arc<ConfigStore>,
    stats: &Arc<Stats>,
    runtime: &dyn Runtime,
    version: &'static str,
) -> String {
    let snap = store.current();
    let access = &snap.config.access;
    let window = Duration::from_secs(access.user_max_unique_ips_window_secs);
    let users = access.users.keys().cloned().collect();
    let mut reg = Registry::default();
    reg.register_collector(Box::new(StatsCollector::new(
        Arc::clone(stats),
        window,
        users,
    )));
    reg.register_collector(Box::new(ConfigCollector {
        store: Arc::clone(store),
        stats: Arc::clone(stats),
        version,
    }));
    if snap.config.general.use_middle_proxy {
        if let Some(pool) = runtime.me_pool() {
            let ready = runtime.gates().me_runtime_ready;
            reg.register_collector(Box::new(MePoolCollector { pool, ready }));
        }
    }
    encode_text(&reg).unwrap_or_else(|e| {
        tracing::error!(error = %e, "metrics encoding failed");
        String::new()
    })
}

/// The address to bind: `metrics_listen` (IP:PORT) wins over `metrics_port` (all IPv4
/// interfaces; the whitelist guards it). `None` = metrics off.
pub fn bind_addr(server: &config::Server) -> Option<SocketAddr> {
    if let Some(l) = server
        .metrics_listen
        .as_deref()
        .filter(|l| !l.trim().is_empty())
    {
        return l.trim().parse().ok();
    }
    server
        .metrics_port
        .filter(|p| *p != 0)
        .map(|p| SocketAddr::from(([0, 0, 0, 0], p)))
}

/// Serves `GET /metrics` until `stop` resolves. The whitelist is read from the live config on
/// every request.
pub async fn serve(
    listener: TcpListener,
    store: Arc<ConfigStore>,
    stats: Arc<Stats>,
    runtime: Arc<dyn Runtime>,
    version: &'static str,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (store, stats, runtime) =
            (Arc::clone(&store), Arc::clone(&stats), Arc::clone(&runtime));
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let resp = answer(
                    &store,
                    &stats,
                    runtime.as_ref(),
                    version,
                    peer,
                    req.method(),
                    req.uri().path(),
                );
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}

fn answer(
    store: &Arc<ConfigStore>,
    stats: &Arc<Stats>,
    runtime: &dyn Runtime,
    version: &'static str,
    peer: SocketAddr,
    method: &Method,
    path: &str,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    let allowed = {
        let wl = &store.current().config.server.metrics_whitelist;
        let ip = match peer.ip() {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer.ip(), Into::into),
            v4 => v4,
        };
        wl.is_empty() || wl.iter().any(|n| n.contains(&ip))
    };
    if !allowed {
        return text(StatusCode::FORBIDDEN, "forbidden\n".into());
    }
    if path != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    }
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    let mut r = text(StatusCode::OK, render(store, stats, runtime, version));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}
