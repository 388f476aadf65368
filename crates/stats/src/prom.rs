//! Prometheus text exposition (format 0.0.4) of every counter, read from the same declarations
//! as the API snapshots, plus per-user connection/octet series. Serving it over HTTP is the
//! API's or the binary's business; this only renders.

use std::fmt::Write as _;

use crate::Stats;

/// Counters that are gauges (may go down); everything else is a monotonic counter.
const GAUGES: &[&str] = &[
    "current_connections_me",
    "current_connections_direct",
    "pool_drain_active",
];

/// One per-user series: metric name, type, value getter.
type UserSeries = (
    &'static str,
    &'static str,
    fn(&crate::UserStatsSnapshot) -> u64,
);

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

impl Stats {
    /// Renders all metrics, names prefixed `mtproxyd_`.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.visit_counters(&mut |name, value| {
            let kind = if GAUGES.contains(&name) {
                "gauge"
            } else {
                "counter"
            };
            let _ = writeln!(out, "# TYPE mtproxyd_{name} {kind}");
            let _ = writeln!(out, "mtproxyd_{name} {value}");
        });
        let classes = self.bad_by_class();
        if !classes.is_empty() {
            let _ = writeln!(
                out,
                "# TYPE mtproxyd_connections_bad_by_class_total counter"
            );
            for c in classes {
                let _ = writeln!(
                    out,
                    "mtproxyd_connections_bad_by_class_total{{class=\"{}\"}} {}",
                    c.class, c.total
                );
            }
        }
        let codes = self.middle_proxy().handshake_error_codes;
        if !codes.is_empty() {
            let _ = writeln!(out, "# TYPE mtproxyd_me_handshake_error_code_total counter");
            for c in codes {
                let _ = writeln!(
                    out,
                    "mtproxyd_me_handshake_error_code_total{{code=\"{}\"}} {}",
                    c.code, c.total
                );
            }
        }
        let users = self.users().snapshot_all();
        let series: [UserSeries; 4] = [
            ("user_current_connections", "gauge", |s| {
                s.current_connections
            }),
            ("user_octets_from_client_total", "counter", |s| {
                s.octets_from_client
            }),
            ("user_octets_to_client_total", "counter", |s| {
                s.octets_to_client
            }),
            ("user_quota_used_bytes", "gauge", |s| s.quota_used_bytes),
        ];
        for (name, kind, get) in series {
            let _ = writeln!(out, "# TYPE mtproxyd_{name} {kind}");
            for (user, snap) in &users {
                let _ = writeln!(
                    out,
                    "mtproxyd_{name}{{user=\"{}\"}} {}",
                    escape_label(user),
                    get(snap)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::{Route, Stats};
    use std::time::SystemTime;

    #[test]
    fn renders_counters_gauges_and_users() {
        let s = Stats::new(SystemTime::now());
        s.inc_connections_total();
        let _g = s.open_route(Route::Direct);
        s.record_me_handshake_reject(-3);
        s.inc_connections_bad_class("tls_replay");
        s.users().handle("a\"b").add_octets_to_client(9);
        let text = s.prometheus_text();
        assert!(text
            .contains("# TYPE mtproxyd_connections_total counter\nmtproxyd_connections_total 1\n"));
        assert!(text.contains("# TYPE mtproxyd_current_connections_direct gauge\nmtproxyd_current_connections_direct 1\n"));
        assert!(text.contains("mtproxyd_me_handshake_error_code_total{code=\"-3\"} 1\n"));
        assert!(text.contains("mtproxyd_connections_bad_by_class_total{class=\"tls_replay\"} 1\n"));
        assert!(text.contains("mtproxyd_user_octets_to_client_total{user=\"a\\\"b\"} 9\n"));
        // Every sample line is `name[{labels}] value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            v.parse::<u64>().unwrap();
        }
    }
}
