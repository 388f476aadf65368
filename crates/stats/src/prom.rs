//! Prometheus exposition of the counters, with telemt's series names and labels so that
//! telemt's Grafana dashboards read us. Encoded by `prometheus-client` at scrape time from the
//! same atomics the API reads (a [`Collector`], nothing registered twice, no hand-built text).
//! Serving it over HTTP and the config-derived series are the API crate's.
//!
//! Naming: a counter whose API name ends in `_total` is a Prometheus counter of the same
//! name; others keep their name as an untyped series. Middle-proxy and pool counters take
//! telemt's `telemt_me_` prefix (`reconnect_attempt_total` is telemt's
//! `telemt_me_reconnect_attempts_total`). Histogram buckets become a `bucket` label
//! (`telemt_upstream_connect_attempts_per_request{bucket="3_4"}`,
//! `telemt_desync_frames_bucket_total{bucket="1_2"}`); queue-full drops by profile and floor
//! mode switches become labels as telemt has them. The pool's live gauges (writers by contour,
//! adaptive floor) are not counters: the API crate adds them from the runtime snapshot.

use std::fmt::Error as FmtError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::zero::{MiddleProxyCounters, PoolCounters};
use crate::Stats;

/// Per-user series are emitted for at most this many users (largest traffic first); the rest
/// are summarized in `telemt_telemetry_user_series_*`.
pub const MAX_USER_SERIES: usize = 1000;

/// Counters that are gauges (may go down).
const GAUGES: &[&str] = &[
    "current_connections_me",
    "current_connections_direct",
    "pool_drain_active",
];

/// Label pairs of one family row.
type Labels = Vec<(&'static str, &'static str)>;

/// Where one stats counter lands in telemt's exposition.
enum Placement {
    /// A series of its own.
    Plain(String),
    /// One row of a labelled family (telemt folds buckets, profiles and mode switches into
    /// labels of one series).
    Row {
        family: &'static str,
        labels: Labels,
    },
}

/// telemt's name (and labels) for an API counter. The API names drop telemt's `me_` prefix
/// (the `ZeroMiddleProxyData` block says it), so the middle-proxy and pool blocks get it back
/// here; the pool's own `pool_*` counters and the desync block keep their names.
fn placement(name: &'static str) -> Placement {
    let row = |family, labels| Placement::Row { family, labels };
    for (prefix, family) in [
        (
            "connect_attempts_bucket_",
            "telemt_upstream_connect_attempts_per_request",
        ),
        (
            "connect_duration_success_bucket_",
            "telemt_upstream_connect_duration_success_total",
        ),
        (
            "connect_duration_fail_bucket_",
            "telemt_upstream_connect_duration_fail_total",
        ),
        ("desync_frames_bucket_", "telemt_desync_frames_bucket_total"),
    ] {
        if let Some(b) = name.strip_prefix(prefix) {
            return row(family, vec![("bucket", b)]);
        }
    }
    let switch = "telemt_me_floor_mode_switch_total";
    let queue_full = "telemt_me_route_drop_queue_full_profile_total";
    match name {
        "route_drop_queue_full_base_total" => return row(queue_full, vec![("profile", "base")]),
        "route_drop_queue_full_high_total" => return row(queue_full, vec![("profile", "high")]),
        "floor_mode_switch_static_to_adaptive_total" => {
            return row(switch, vec![("from", "static"), ("to", "adaptive")])
        }
        "floor_mode_switch_adaptive_to_static_total" => {
            return row(switch, vec![("from", "adaptive"), ("to", "static")])
        }
        "floor_mode_switch_total" => {
            return Placement::Plain("telemt_me_floor_mode_switch_all_total".into())
        }
        "reconnect_attempt_total" => {
            return Placement::Plain("telemt_me_reconnect_attempts_total".into())
        }
        _ => {}
    }
    let me = MiddleProxyCounters::FIELD_NAMES.contains(&name)
        || (PoolCounters::FIELD_NAMES.contains(&name) && !name.starts_with("pool_"));
    Placement::Plain(if name.starts_with("connect_") {
        format!("telemt_upstream_{name}")
    } else if me {
        format!("telemt_me_{name}")
    } else {
        format!("telemt_{name}")
    })
}

/// Escapes a label value for the text format (the encoder writes values as given): a
/// username from a hand-written config may hold `\`, `"` or a newline.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Scrape-time view of a [`Stats`].
#[derive(Debug)]
pub struct StatsCollector {
    stats: Arc<Stats>,
    /// `access.user_max_unique_ips_window_secs`, for the recent-IP series.
    ip_window: Duration,
    /// Configured users: each gets per-user series, with zeros before its first connection.
    users: Vec<String>,
}

impl StatsCollector {
    pub fn new(stats: Arc<Stats>, ip_window: Duration, users: Vec<String>) -> Self {
        Self {
            stats,
            ip_window,
            users,
        }
    }
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), FmtError> {
    let name = name.strip_suffix("_total").unwrap_or(name);
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> Result<(), FmtError> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One labelled family: `(label values, value)` rows under `name` with label `key`.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    key: &str,
    rows: &[(String, u64)],
) -> Result<(), FmtError> {
    let name = match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (label, v) in rows {
        let labels = [(key, label.as_str())];
        let row = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(row)?,
            _ => ConstGauge::new(clamp(*v)).encode(row)?,
        }
    }
    Ok(())
}

impl Collector for StatsCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let s = &self.stats;
        let mut rows: Vec<(&'static str, Labels, u64)> = Vec::new();
        let mut plain: Vec<(&'static str, String, u64)> = Vec::new();
        s.visit_counters(&mut |name, v| match placement(name) {
            Placement::Plain(series) => plain.push((name, series, v)),
            Placement::Row { family, labels } => rows.push((family, labels, v)),
        });
        for (name, series, v) in plain {
            if GAUGES.contains(&name) {
                gauge(&mut enc, &series, "live value", clamp(v))?;
            } else if name.ends_with("_total") {
                counter(&mut enc, &series, "counter", v)?;
            } else {
                let g = ConstGauge::new(clamp(v));
                g.encode(enc.encode_descriptor(&series, "counter", None, MetricType::Unknown)?)?;
            }
        }
        let mut families: Vec<&'static str> = Vec::new();
        for (family, _, _) in &rows {
            if !families.contains(family) {
                families.push(family);
            }
        }
        for series in families {
            let (kind, name) = match series.strip_suffix("_total") {
                Some(base) => (MetricType::Counter, base),
                None => (MetricType::Unknown, series),
            };
            let mut m = enc.encode_descriptor(name, "counter by label", None, kind)?;
            for (_, labels, v) in rows.iter().filter(|r| r.0 == series) {
                let row = m.encode_family(labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(*v).encode(row)?,
                    _ => ConstGauge::new(clamp(*v)).encode(row)?,
                }
            }
        }
        // telemt's "writers lost and not yet restored" figure, derived from the same counters.
        let p = s.pool();
        let restored = p
            .writer_restored_same_endpoint_total
            .saturating_add(p.writer_restored_fallback_total);
        gauge(
            &mut enc,
            "telemt_me_writer_removed_unexpected_minus_restored_total",
            "unexpected writer removals not yet compensated by a restore",
            clamp(p.writer_removed_unexpected_total.saturating_sub(restored)),
        )?;
        let classes: Vec<(String, u64)> = s
            .bad_by_class()
            .into_iter()
            .map(|c| (c.class.to_owned(), c.total))
            .collect();
        for series in [
            "telemt_connections_bad_by_class_total",
            "telemt_handshake_failures_by_class_total",
        ] {
            family(
                &mut enc,
                series,
                "rejected connections by reason",
                MetricType::Counter,
                "class",
                &classes,
            )?;
        }
        let codes: Vec<(String, u64)> = s
            .middle_proxy()
            .handshake_error_codes
            .into_iter()
            .map(|c| (c.code.to_string(), c.total))
            .collect();
        family(
            &mut enc,
            "telemt_me_handshake_error_code_total",
            "middle-proxy handshake errors by code",
            MetricType::Counter,
            "error_code",
            &codes,
        )?;
        let uptime = s.started_at().elapsed().map_or(0, |d| d.as_secs());
        gauge(
            &mut enc,
            "telemt_uptime_seconds",
            "seconds since start",
            clamp(uptime),
        )?;
        self.encode_users(&mut enc)
    }
}

impl StatsCollector {
    fn encode_users(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let s = &self.stats;
        let now = Instant::now();
        let registry = s.users();
        let mut users: Vec<(String, crate::UserStatsSnapshot)> = self
            .users
            .iter()
            .map(|u| (u.clone(), registry.get_or_zero(u)))
            .collect();
        let total = users.len();
        // Bounded: the busiest users keep their series.
        users.sort_by(|a, b| b.1.total_octets.cmp(&a.1.total_octets).then(a.0.cmp(&b.0)));
        users.truncate(MAX_USER_SERIES);
        let rows = |f: &dyn Fn(&crate::UserStatsSnapshot) -> u64| -> Vec<(String, u64)> {
            users
                .iter()
                .map(|(u, snap)| (escape_label(u), f(snap)))
                .collect()
        };
        family(
            enc,
            "telemt_user_connections_current",
            "live connections",
            MetricType::Gauge,
            "user",
            &rows(&|x| x.current_connections),
        )?;
        family(
            enc,
            "telemt_user_octets_from_client",
            "octets read from clients",
            MetricType::Unknown,
            "user",
            &rows(&|x| x.octets_from_client),
        )?;
        family(
            enc,
            "telemt_user_octets_to_client",
            "octets written to clients",
            MetricType::Unknown,
            "user",
            &rows(&|x| x.octets_to_client),
        )?;
        family(
            enc,
            "telemt_user_quota_used_bytes",
            "quota used",
            MetricType::Gauge,
            "user",
            &rows(&|x| x.quota_used_bytes),
        )?;
        let ips = s.ips();
        let active: Vec<(String, u64)> = users
            .iter()
            .map(|(u, _)| (escape_label(u), ips.active_ips(u).len() as u64))
            .collect();
        let recent: Vec<(String, u64)> = users
            .iter()
            .map(|(u, _)| {
                (
                    escape_label(u),
                    ips.recent_ips(u, self.ip_window, now).len() as u64,
                )
            })
            .collect();
        family(
            enc,
            "telemt_user_unique_ips_current",
            "source IPs with live connections",
            MetricType::Gauge,
            "user",
            &active,
        )?;
        family(
            enc,
            "telemt_user_unique_ips_recent_window",
            "source IPs seen in the window",
            MetricType::Gauge,
            "user",
            &recent,
        )?;
        gauge(
            enc,
            "telemt_stats_user_entries",
            "users with counters",
            clamp(registry.len() as u64),
        )?;
        let suppressed = total.saturating_sub(users.len());
        gauge(
            enc,
            "telemt_telemetry_user_series_suppressed",
            "1 when some users' series are left out",
            i64::from(suppressed > 0),
        )?;
        let mut m = enc.encode_descriptor(
            "telemt_telemetry_user_series_users",
            "users with and without per-user series",
            None,
            MetricType::Gauge,
        )?;
        for (family_name, status, v) in [
            ("stats", "emitted", users.len()),
            ("stats", "suppressed", suppressed),
            ("unique_ip", "emitted", users.len()),
            ("unique_ip", "suppressed", suppressed),
        ] {
            let labels = [("family", family_name), ("status", status)];
            ConstGauge::new(clamp(v as u64)).encode(m.encode_family(&labels)?)?;
        }
        let ((au, ae), (ru, re)) = ips.counts(self.ip_window, now);
        for (name, a, r) in [
            ("telemt_ip_tracker_users", au, ru),
            ("telemt_ip_tracker_entries", ae, re),
        ] {
            let rows = [
                ("active".to_owned(), a as u64),
                ("recent".to_owned(), r as u64),
            ];
            family(
                enc,
                name,
                "unique-IP tracker size",
                MetricType::Gauge,
                "scope",
                &rows,
            )?;
        }
        Ok(())
    }
}

/// Encodes `collector` (and whatever else `registry` holds) as Prometheus/OpenMetrics text.
pub fn encode_text(registry: &prometheus_client::registry::Registry) -> Result<String, FmtError> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Route;
    use std::time::SystemTime;

    #[test]
    fn telemt_names_labels_and_types() {
        let s = Stats::new(SystemTime::now());
        s.inc_connections_total();
        let _g = s.open_route(Route::Direct);
        s.record_me_handshake_reject(-3);
        s.inc_connections_bad_class("tls_replay");
        s.users().handle("a\"b").add_octets_to_client(9);
        s.middle_proxy_counters().reconnect_attempt_total.inc();
        s.desync_counters().observe_desync(4, true);
        s.pool_counters().writer_removed_unexpected_total.add(3);
        s.pool_counters().writer_restored_fallback_total.inc();
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register_collector(Box::new(StatsCollector::new(
            Arc::clone(&s),
            Duration::from_secs(30),
            vec!["a\"b".to_owned()],
        )));
        let text = encode_text(&reg).expect("encode");
        for gone in ["telemt_keepalive_sent", "telemt_reconnect_attempt_total"] {
            assert!(!text.contains(gone), "{gone} in\n{text}");
        }
        for want in [
            "# TYPE telemt_connections counter\n",
            "telemt_connections_total 1\n",
            "telemt_current_connections_direct 1\n",
            "telemt_me_handshake_error_code_total{error_code=\"-3\"} 1\n",
            "telemt_connections_bad_by_class_total{class=\"tls_replay\"} 1\n",
            "telemt_handshake_failures_by_class_total{class=\"tls_replay\"} 1\n",
            "telemt_user_octets_to_client{user=\"a\\\"b\"} 9\n",
            "telemt_upstream_connect_attempts_per_request{bucket=\"3_4\"} 0\n",
            "telemt_upstream_connect_duration_success_total{bucket=\"gt_1000ms\"} 0\n",
            "telemt_ip_tracker_users{scope=\"active\"} 0\n",
            "telemt_telemetry_user_series_users{family=\"stats\",status=\"emitted\"} 1\n",
            "telemt_me_reconnect_attempts_total 1\n",
            "telemt_me_keepalive_sent_total 0\n",
            "telemt_me_refill_triggered_total 0\n",
            "telemt_pool_swap_total 0\n",
            "# TYPE telemt_pool_drain_active gauge\n",
            "telemt_desync_total 1\n",
            "telemt_desync_frames_bucket_total{bucket=\"3_10\"} 1\n",
            "telemt_me_route_drop_queue_full_profile_total{profile=\"high\"} 0\n",
            "telemt_me_floor_mode_switch_total{from=\"static\",to=\"adaptive\"} 0\n",
            "telemt_me_floor_mode_switch_all_total 0\n",
            "telemt_me_writer_removed_unexpected_minus_restored_total 2\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
