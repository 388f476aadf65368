//! Prometheus endpoint of the real binary, checked against telemt's own Grafana dashboards:
//! every metric their queries use is either served by us or listed here with the reason we do
//! not have it. The dashboards are test inputs kept unchanged in `tests/data/telemt-3.4.25`
//! (`$MTPROXYD_TELEMT_DASHBOARDS` = another directory holding them).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::start_on;
use testkit::{free_port, ConfigFixture, HttpClient};

/// Dashboard metrics we do not serve, and why.
const NOT_OURS: &[(&str, &str)] = &[
    ("telemt_me_", "middle-proxy pool not built yet"),
    ("telemt_pool_", "middle-proxy pool not built yet"),
    ("telemt_conntrack_", "no conntrack control"),
    (
        "telemt_buffer_pool_",
        "buffers are per connection, no shared pool",
    ),
    (
        "telemt_auth_",
        "no auth budget (matching is per connection)",
    ),
    (
        "telemt_rate_limiter_",
        "rate limits are lock-free buckets without leases",
    ),
    (
        "telemt_relay_pressure_",
        "no relay memory-pressure eviction",
    ),
    ("telemt_relay_idle_", "idle closes are not counted yet"),
    (
        "telemt_relay_protocol_desync_",
        "direct route does not parse frames",
    ),
    (
        "telemt_secure_padding_",
        "direct route does not parse frames",
    ),
    ("telemt_desync_total", "direct route does not parse frames"),
    (
        "telemt_ip_tracker_cap_rejects",
        "cap rejects are counted per reject class instead",
    ),
    (
        "telemt_ip_tracker_cleanup",
        "pruning is periodic, not queued",
    ),
    ("telemt_ip_reservation_", "no IP reservation rollback"),
    (
        "telemt_tls_fetch_profile_",
        "TLS front profile cache not built yet",
    ),
    ("telemt_tls_front_", "TLS front profile cache not built yet"),
    ("telemt_user_msgs_", "direct route does not count messages"),
];

fn dashboards() -> Option<Vec<PathBuf>> {
    let dir = std::env::var_os("MTPROXYD_TELEMT_DASHBOARDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/telemt-3.4.25")
        });
    let files: Vec<PathBuf> = ["grafana-dashboard.json", "grafana-dashboard-by-user.json"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    files.iter().all(|f| f.is_file()).then_some(files)
}

fn metric_names(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(e)) = m.get("expr") {
                let bytes = e.as_bytes();
                let mut i = 0;
                while let Some(pos) = e[i..].find("telemt_") {
                    let start = i + pos;
                    let end = bytes[start..]
                        .iter()
                        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                        .map_or(e.len(), |p| start + p);
                    out.insert(e[start..end].to_owned());
                    i = end;
                }
            }
            m.values().for_each(|x| metric_names(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| metric_names(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn telemt_dashboards_find_our_series() {
    let Some(files) = dashboards() else {
        testkit::external::missing(
            "telemt's Grafana dashboards (3.4.25)",
            "restore crates/mtproxyd/tests/data/telemt-3.4.25 or set MTPROXYD_TELEMT_DASHBOARDS",
        );
        return;
    };
    let mut wanted = BTreeSet::new();
    for f in &files {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f).expect("read dashboard")).expect("json");
        metric_names(&v, &mut wanted);
    }
    assert!(wanted.len() > 50, "{wanted:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let metrics_port = free_port();
    let mut fixture = ConfigFixture::new(0);
    fixture.extra = "[access]\nuser_max_unique_ips_global_each = 3\n".into();
    let client_port = fixture.server_port;
    let text = fixture.render().replace(
        "[server]\n",
        &format!("[server]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write");
    let _running = start_on(dir.path(), &path, None).await;
    // One bad connection, so the per-class family has a row.
    let _ = testkit::client::probe::send_probe(
        ([127, 0, 0, 1], client_port).into(),
        b"\x01\x02\x03 not a handshake at all",
        std::time::Duration::from_secs(3),
        true,
    )
    .await;
    let mut c = HttpClient::new(([127, 0, 0, 1], metrics_port).into());
    let resp = c.get("/metrics").await.expect("scrape");
    assert_eq!(resp.status, 200);
    let body = resp.text();
    assert!(body.ends_with("# EOF\n"), "{body}");
    let served: BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let (mut missing, mut unexplained) = (Vec::new(), Vec::new());
    for name in &wanted {
        if served.contains(name.as_str()) {
            continue;
        }
        match NOT_OURS.iter().find(|(p, _)| name.starts_with(p)) {
            Some((_, why)) => missing.push(format!("{name}: {why}")),
            None => unexplained.push(name.as_str()),
        }
    }
    assert!(
        unexplained.is_empty(),
        "dashboard metrics neither served nor explained: {unexplained:?}\n{body}"
    );
    eprintln!(
        "{} of {} dashboard metrics served; not served:\n  {}",
        wanted.len() - missing.len(),
        wanted.len(),
        missing.join("\n  ")
    );
    for must in [
        "telemt_connections_total",
        "telemt_connections_bad_by_class_total",
        "telemt_build_info",
        "telemt_uptime_seconds",
        "telemt_user_connections_current",
        "telemt_upstream_connect_attempts_per_request",
    ] {
        assert!(served.contains(must), "{must} not served\n{body}");
    }
    assert!(
        body.contains("telemt_connections_bad_by_class_total{class="),
        "{body}"
    );
    // Our own dashboard (contrib/grafana) uses only what we serve.
    let ours = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib/grafana/mtproxyd-dashboard.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ours).expect("contrib dashboard")).expect("json");
    let mut own = BTreeSet::new();
    metric_names(&v, &mut own);
    let unserved: Vec<&String> = own
        .iter()
        .filter(|n| !served.contains(n.as_str()))
        .collect();
    assert!(own.len() >= 10 && unserved.is_empty(), "{unserved:?}");
    // Only /metrics is served.
    assert_eq!(c.get("/other").await.expect("get").status, 404);
}
