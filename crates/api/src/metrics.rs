//! The Prometheus endpoint (`server.metrics_port` / `metrics_listen`, `GET /metrics` behind
//! `server.metrics_whitelist`): the stats counters (`stats::prom::StatsCollector`) plus the
//! series that come from the config (build info, telemetry switches, per-user unique-IP
//! limits and their utilization), encoded by `prometheus-client` at scrape time.
//!
//! Must not: keep its own counters (everything is read from `stats` and the config snapshot
//! on each scrape), or serve anything but `/metrics`.

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

/// Renders the whole exposition once.
pub fn render(store: &Arc<ConfigStore>, stats: &Arc<Stats>, version: &'static str) -> String {
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
        let (store, stats) = (Arc::clone(&store), Arc::clone(&stats));
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let resp = answer(
                    &store,
                    &stats,
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
    let mut r = text(StatusCode::OK, render(store, stats, version));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}
