//! Prometheus endpoint of the real binary, checked against telemt's own Grafana dashboards:
//! every metric their queries use is either served by us or listed here with the reason we do
//! not have it. The dashboards are test inputs kept unchanged in `tests/data/telemt-3.4.25`
//! (`$MTPROXYD_TELEMT_DASHBOARDS` = another directory holding them).
//!
//! The binary runs on the middle-proxy route (a `testkit::me::TestMe` in front of a test DC,
//! configured offline from `MeFiles`), so the pool's series are there and carry the traffic
//! this test sends.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::start_on;
use testkit::client::{Mode, TestClient, TlsOptions};
use testkit::dc::{mtproto, DcMode, TestDc};
use testkit::me::{random_proxy_secret, MeFiles, MeOptions, TestMe};
use testkit::{free_port, ConfigFixture, HttpClient};

/// Dashboard metrics we do not serve, and why.
const NOT_OURS: &[(&str, &str)] = &[
    ("telemt_me_d2c_", "DC->client flushes are not histogrammed"),
    (
        "telemt_me_fair_",
        "no fair scheduler: each session has its own bounded queue (DECISIONS #43)",
    ),
    (
        "telemt_me_handshake_error_code_total",
        "a row per code after the first reject; none here (rows: stats::prom's unit test)",
    ),
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
        "desync closes are counted as telemt_desync_total",
    ),
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
        "TLS front profile fetches are reported by the API, not exported as metrics",
    ),
    (
        "telemt_tls_front_",
        "TLS front profile state is reported by the API, not exported as metrics",
    ),
    ("telemt_user_msgs_", "messages are not counted per user"),
];

/// Middle-proxy series the dashboards query, which must be served (with the value this test's
/// traffic gives them where it gives one: `Some(min)`).
const ME_SERIES: &[(&str, Option<f64>)] = &[
    ("telemt_me_writers_active_current", Some(1.0)),
    ("telemt_me_writers_warm_current", None),
    ("telemt_me_reconnect_attempts_total", Some(1.0)),
    ("telemt_me_reconnect_success_total", Some(1.0)),
    ("telemt_me_adaptive_floor_target_writers_total", Some(1.0)),
    ("telemt_me_handshake_reject_total", None),
    ("telemt_me_reader_eof_total", None),
    ("telemt_me_route_drop_no_conn_total", None),
    ("telemt_me_route_drop_channel_closed_total", None),
    ("telemt_me_route_drop_queue_full_total", None),
    ("telemt_me_keepalive_sent_total", None),
    ("telemt_me_keepalive_pong_total", None),
    ("telemt_me_keepalive_failed_total", None),
    ("telemt_me_keepalive_timeout_total", None),
    ("telemt_me_refill_triggered_total", None),
    ("telemt_me_refill_failed_total", None),
    ("telemt_pool_force_close_total", None),
    ("telemt_desync_total", None),
    ("telemt_secure_padding_invalid_total", None),
    // Ours, beside telemt's (see api::metrics).
    ("telemt_me_runtime_ready", Some(1.0)),
    ("telemt_current_connections_me", Some(1.0)),
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

/// The sum of `name`'s samples (every label set) in `body`.
fn value(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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
    let proxy_secret = random_proxy_secret();
    let dc = TestDc::start(DcMode::MtProto).await.expect("test DC");
    let me = TestMe::start(dc.addr(), MeOptions::new(proxy_secret.clone()))
        .await
        .expect("test middle proxy");
    let files = MeFiles::write(&proxy_secret, Some(2), &[(2, me.addr()), (-2, me.addr())])
        .expect("ME files");
    let metrics_port = free_port();
    let mut fixture = ConfigFixture::new(0);
    fixture.extra = "[access]\nuser_max_unique_ips_global_each = 3\n".into();
    let client_port = fixture.server_port;
    let alice: [u8; 16] = hex::decode(&fixture.users[0].1)
        .expect("hex")
        .try_into()
        .expect("16 bytes");
    let text = fixture
        .render()
        .replace(
            "[server]\n",
            &format!("[server]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
        )
        .replace(
            "use_middle_proxy = false\n",
            &format!("use_middle_proxy = true\n{}", files.general_keys()),
        );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write");
    let running = start_on(dir.path(), &path, None).await;
    let mut api = running.client();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let g = api.get("/v1/runtime/gates").await.expect("gates");
        if g.json().expect("json")["data"]["me_runtime_ready"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ME pool never ready\n{}",
            running.daemon.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // One client through the middle proxy, kept open so the ME route gauge counts it.
    let mut client = TestClient::connect(
        ([127, 0, 0, 1], client_port).into(),
        Mode::Tls(TlsOptions::new("example.com")),
        alice,
        2,
    )
    .await
    .expect("client over ME");
    let nonce: [u8; 16] = rand::random();
    client
        .send_packet(&mtproto::req_pq_multi_message(&nonce))
        .await
        .expect("send");
    let reply = client.recv_packet().await.expect("resPQ over ME");
    let res =
        mtproto::parse_res_pq(&mtproto::parse_plain(&reply).expect("plain").body).expect("resPQ");
    assert_eq!(res.nonce, nonce);
    assert!(me.conns().iter().any(|r| r.requests >= 1), "not via ME");
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
    for (name, min) in ME_SERIES {
        assert!(served.contains(name), "{name} not served\n{body}");
        if let Some(min) = min {
            let v = value(&body, name);
            assert!(v >= *min, "{name} = {v}, want >= {min}\n{body}");
        }
    }
    // Ready = minimal coverage: writers beyond the first may still be connecting.
    for (sample, min) in [
        ("telemt_me_pool_writers{contour=\"active\"}", 1.0),
        ("telemt_me_pool_generation{kind=\"active\"}", 1.0),
        ("telemt_me_dc_writers_alive{dc=\"2\"}", 1.0),
        ("telemt_me_dc_writers_required{dc=\"2\"}", 1.0),
        ("telemt_me_dc_coverage_pct{dc=\"2\"}", 1.0),
        ("telemt_me_floor_mode{mode=\"adaptive\"}", 1.0),
    ] {
        let v = body
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse::<f64>().ok());
        assert!(v >= Some(min), "{sample} = {v:?}, want >= {min}\n{body}");
    }
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
