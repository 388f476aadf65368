//! Caches, query parsing, whitelist rendering, initialization, posture and system info.

use serde_json::{json, Value};

use super::*;
use crate::views::edge::parse_events_limit;
use crate::views::selftest::classify_ip;

fn edge_cfg(ttl_ms: u64) -> config::Config {
    let mut cfg = cfg_enabled();
    cfg.server.api.runtime_edge_cache_ttl_ms = ttl_ms;
    cfg
}

fn summary_at(cfg: &config::Config, rt: &Fake, caches: &ViewCaches, now: SystemTime) -> Value {
    render_q(
        ReadRoute::RuntimeConnectionsSummary,
        cfg,
        rt,
        caches,
        None,
        now,
    )
}

#[test]
fn edge_cache_miss_then_hit_then_expiry() {
    let cfg = edge_cfg(1000);
    let rt = Fake::full();
    let caches = ViewCaches::default();
    let v = summary_at(&cfg, &rt, &caches, ms(0));
    assert_eq!(
        v["data"]["cache"],
        json!({"ttl_ms": 1000, "served_from_cache": false, "stale_cache_used": false})
    );
    assert_eq!(v["data"]["totals"]["current_connections"], json!(0));

    // Counters change, but within the TTL the cached payload is served.
    let _route = rt.stats.open_route(stats::Route::Direct);
    let v = summary_at(&cfg, &rt, &caches, ms(999));
    assert_eq!(v["data"]["cache"]["served_from_cache"], json!(true));
    assert_eq!(v["data"]["cache"]["stale_cache_used"], json!(false));
    assert_eq!(v["data"]["totals"]["current_connections"], json!(0));
    assert_eq!(v["generated_at_epoch_secs"], json!(1_700_000_000u64));

    // At the TTL boundary the entry is expired and recomputed.
    let v = summary_at(&cfg, &rt, &caches, ms(1000));
    assert_eq!(v["data"]["cache"]["served_from_cache"], json!(false));
    assert_eq!(v["data"]["totals"]["current_connections"], json!(1));
    assert_eq!(v["data"]["totals"]["current_connections_direct"], json!(1));
    assert_eq!(v["generated_at_epoch_secs"], json!(1_700_000_001u64));
}

#[test]
fn edge_cache_disabled_with_zero_ttl() {
    let cfg = edge_cfg(0);
    let rt = Fake::full();
    let caches = ViewCaches::default();
    let v = summary_at(&cfg, &rt, &caches, ms(0));
    assert_eq!(v["data"]["cache"]["ttl_ms"], json!(0));
    let _route = rt.stats.open_route(stats::Route::Direct);
    let v = summary_at(&cfg, &rt, &caches, ms(1));
    assert_eq!(v["data"]["cache"]["served_from_cache"], json!(false));
    assert_eq!(v["data"]["totals"]["current_connections"], json!(1));
    // Nothing was stored, so a busy recompute has nothing to fall back on.
    let _busy = caches.hold_edge_recompute();
    let v = summary_at(&cfg, &rt, &caches, ms(2));
    assert_eq!(v["reason"], json!("source_unavailable"));
    assert_eq!(v["enabled"], json!(true));
}

#[test]
fn edge_stale_entry_served_while_recompute_busy() {
    let cfg = edge_cfg(1000);
    let rt = Fake::full();
    let caches = ViewCaches::default();
    summary_at(&cfg, &rt, &caches, ms(0));
    let _busy = caches.hold_edge_recompute();
    // Fresh entry: a normal cache hit even while busy.
    let v = summary_at(&cfg, &rt, &caches, ms(500));
    assert_eq!(v["data"]["cache"]["stale_cache_used"], json!(false));
    assert_eq!(v["data"]["cache"]["served_from_cache"], json!(true));
    // Expired entry + busy recompute: the stale entry is served.
    let v = summary_at(&cfg, &rt, &caches, ms(5000));
    assert!(v.get("reason").is_none(), "{v}");
    assert_eq!(v["data"]["cache"]["served_from_cache"], json!(true));
    assert_eq!(v["data"]["cache"]["stale_cache_used"], json!(true));
    assert_eq!(v["generated_at_epoch_secs"], json!(1_700_000_000u64));
}

#[test]
fn minimal_cache_ttl_hit_miss_and_disabled() {
    let mut cfg = cfg_enabled();
    cfg.server.api.minimal_runtime_cache_ttl_ms = 1000;
    let rt = Fake::full();
    let caches = ViewCaches::default();
    let render = |route, now| render_q(route, &cfg, &rt, &caches, None, now);
    render(ReadRoute::StatsMinimalAll, ms(0));
    assert_eq!(rt.me_calls(), 1);
    // me-writers and dcs share the cached payload.
    render(ReadRoute::StatsMeWriters, ms(300));
    render(ReadRoute::StatsDcs, ms(999));
    assert_eq!(rt.me_calls(), 1);
    render(ReadRoute::StatsDcs, ms(1000));
    assert_eq!(rt.me_calls(), 2);

    cfg.server.api.minimal_runtime_cache_ttl_ms = 0;
    let caches = ViewCaches::default();
    for i in 0..3 {
        render_q(ReadRoute::StatsMinimalAll, &cfg, &rt, &caches, None, ms(i));
    }
    assert_eq!(rt.me_calls(), 5);
}

#[test]
fn minimal_cache_does_not_store_unavailable() {
    let cfg = cfg_enabled();
    let rt = Fake::new();
    let caches = ViewCaches::default();
    let v = render_q(ReadRoute::StatsMinimalAll, &cfg, &rt, &caches, None, ms(0));
    assert_eq!(v["reason"], json!("source_unavailable"));
    let v = render_q(ReadRoute::StatsMinimalAll, &cfg, &rt, &caches, None, ms(1));
    assert_eq!(v["reason"], json!("source_unavailable"));
    assert_eq!(rt.me_calls(), 2);
}

#[test]
fn events_limit_parsing_and_clamping() {
    assert_eq!(parse_events_limit(None), 50);
    assert_eq!(parse_events_limit(Some("")), 50);
    assert_eq!(parse_events_limit(Some("limit=abc")), 50);
    assert_eq!(parse_events_limit(Some("limit=-3")), 50);
    assert_eq!(parse_events_limit(Some("limit=")), 50);
    assert_eq!(parse_events_limit(Some("limit=0")), 1);
    assert_eq!(parse_events_limit(Some("limit=7")), 7);
    assert_eq!(parse_events_limit(Some("x=1&limit=9")), 9);
    assert_eq!(parse_events_limit(Some("limit=5000")), 1000);
    assert_eq!(parse_events_limit(Some("limits=3")), 50);
}

#[test]
fn events_limit_bounded_by_capacity() {
    let mut rt = Fake::full();
    rt.stats = stats::Stats::with_event_capacity(t0(), 16);
    for i in 0..40 {
        rt.stats
            .events()
            .push_at("admission.state", &format!("n={i}"), at(i));
    }
    let cfg = cfg_enabled();
    let caches = ViewCaches::default();
    let get = |q: Option<&str>| {
        render_q(
            ReadRoute::RuntimeEventsRecent,
            &cfg,
            &rt,
            &caches,
            q,
            at(100),
        )["data"]
            .clone()
    };
    let d = get(Some("limit=1000"));
    assert_eq!(d["capacity"], json!(16));
    assert_eq!(d["dropped_total"], json!(24));
    let events = d["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 16);
    assert_eq!(events[0]["seq"], json!(25));
    assert_eq!(events[15]["seq"], json!(40));
    let d = get(Some("limit=0"));
    assert_eq!(d["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(d["events"][0]["context"], json!("n=39"));
    let d = get(Some("limit=3"));
    assert_eq!(d["events"].as_array().map(Vec::len), Some(3));
    let d = get(None);
    assert_eq!(d["events"].as_array().map(Vec::len), Some(16));
}

#[test]
fn whitelist_entries_render_as_cidr() {
    let mut cfg = cfg_enabled();
    cfg.server.api.whitelist = vec![
        "127.0.0.1/32".parse().expect("net"),
        "10.0.0.0/8".parse().expect("net"),
        "::1/128".parse().expect("net"),
    ];
    let v = render_once(ReadRoute::SecurityWhitelist, &cfg, &Fake::new());
    assert_eq!(
        v,
        json!({"generated_at_epoch_secs": 1_700_000_100u64, "enabled": true, "entries_total": 3,
               "entries": ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]})
    );
    cfg.server.api.whitelist.clear();
    let v = render_once(ReadRoute::SecurityWhitelist, &cfg, &Fake::new());
    assert_eq!(v["enabled"], json!(false));
    assert_eq!(v["entries"], json!([]));
    let p = render_once(ReadRoute::SecurityPosture, &cfg, &Fake::new());
    assert_eq!(p["api_whitelist_enabled"], json!(false));
    assert_eq!(p["api_whitelist_entries"], json!(0));
}

#[test]
fn initialization_direct_only_mode() {
    let mut cfg = cfg_enabled();
    cfg.general.use_middle_proxy = false;
    let mut rt = Fake::new();
    rt.tracker = StartupTracker::new(t0(), TransportMode::Direct);
    rt.tracker.register("config_load", "Config load", false);
    rt.tracker.register("listeners", "Listeners", false);
    rt.tracker.begin("config_load", ms(0));
    rt.tracker
        .finish("config_load", ComponentStatus::Ready, None, ms(40));
    rt.tracker.begin("listeners", ms(50));
    rt.tracker.finish(
        "listeners",
        ComponentStatus::Ready,
        Some("2 bound".into()),
        ms(80),
    );
    rt.tracker.set_degraded(true);
    rt.tracker.set_status(StartupStatus::Ready, ms(1500));
    let v = render_once(ReadRoute::RuntimeInitialization, &cfg, &rt);
    assert_eq!(v["status"], json!("ready"));
    assert_eq!(v["degraded"], json!(false));
    assert_eq!(v["transport_mode"], json!("direct"));
    assert_eq!(v["progress_pct"], json!(100.0));
    assert_eq!(v["started_at_epoch_secs"], json!(1_700_000_000u64));
    assert_eq!(v["ready_at_epoch_secs"], json!(1_700_000_001u64));
    assert_eq!(v["total_elapsed_ms"], json!(1500));
    assert_eq!(v["me"]["status"], json!("skipped"));
    assert_eq!(v["me"]["progress_pct"], json!(100.0));
    assert_eq!(v["me"]["retry_limit"], json!("unlimited"));
    assert!(v["me"].get("last_error").is_none());
    let c = &v["components"][1];
    assert_eq!(c["id"], json!("listeners"));
    assert_eq!(c["duration_ms"], json!(30));
    assert_eq!(c["details"], json!("2 bound"));
    assert!(v["components"][0].get("details").is_none());

    // Even a tracker that started in middle-proxy mode reports a skipped ME block once the
    // config is direct-only.
    let rt = Fake::new();
    rt.tracker.set_me_status(StartupStatus::Failed);
    rt.tracker.set_degraded(true);
    let v = render_once(ReadRoute::RuntimeInitialization, &cfg, &rt);
    assert_eq!(v["me"]["status"], json!("skipped"));
    assert_eq!(v["me"]["current_stage"], json!("skipped"));
    assert_eq!(v["degraded"], json!(false));
}

#[test]
fn initialization_middle_proxy_in_progress() {
    let cfg = cfg_enabled();
    let rt = Fake::new();
    rt.tracker.register("me_pool", "ME pool", true);
    rt.tracker.begin("me_pool", ms(0));
    rt.tracker.set_me_stage("background_init");
    rt.tracker.set_me_retry_limit(Some(5));
    rt.tracker.begin_me_attempt();
    rt.tracker.set_me_error(Some("timeout".into()));
    rt.tracker.set_degraded(true);
    let v = render_once(ReadRoute::RuntimeInitialization, &cfg, &rt);
    assert_eq!(v["status"], json!("initializing"));
    assert_eq!(v["degraded"], json!(true));
    assert!(v.get("ready_at_epoch_secs").is_none());
    assert_eq!(v["total_elapsed_ms"], json!(100_000));
    assert_eq!(v["me"]["status"], json!("initializing"));
    assert_eq!(v["me"]["current_stage"], json!("background_init"));
    assert_eq!(v["me"]["retry_limit"], json!("5"));
    assert_eq!(v["me"]["init_attempt"], json!(1));
    assert_eq!(v["me"]["last_error"], json!("timeout"));
    assert_eq!(v["components"][0]["finished_at_epoch_ms"], Value::Null);
}

#[test]
fn gates_reflect_config_and_runtime() {
    let mut cfg = cfg_enabled();
    let rt = Fake::new();
    let v = render_once(ReadRoute::RuntimeGates, &cfg, &rt);
    assert_eq!(v["me_runtime_ready"], json!(false));
    assert_eq!(v["conditional_cast_enabled"], json!(true));
    assert_eq!(v["startup_status"], json!("pending"));
    cfg.general.use_middle_proxy = false;
    let v = render_once(ReadRoute::RuntimeGates, &cfg, &rt);
    assert_eq!(v["me_runtime_ready"], json!(true));
    assert_eq!(v["use_middle_proxy"], json!(false));
}

#[test]
fn telemetry_level_spelling_per_endpoint() {
    // Posture uses the config spelling (docs/DECISIONS.md #24); ZeroCoreData uses docs/API.md's off|normal|verbose.
    let mut cfg = cfg_enabled();
    let rt = Fake::new();
    for (level, posture, zero) in [
        (config::MeTelemetryLevel::Debug, "debug", "verbose"),
        (config::MeTelemetryLevel::Normal, "normal", "normal"),
        (config::MeTelemetryLevel::Silent, "silent", "off"),
    ] {
        cfg.general.telemetry.me_level = level;
        let p = render_once(ReadRoute::SecurityPosture, &cfg, &rt);
        assert_eq!(p["telemetry_me_level"], json!(posture));
        let z = render_once(ReadRoute::StatsZeroAll, &cfg, &rt);
        assert_eq!(z["core"]["telemetry_me_level"], json!(zero));
    }
}

#[test]
fn system_info_reports_config_and_reloads() {
    let cfg = cfg_enabled();
    let mut rt = Fake::new();
    let v = render_once(ReadRoute::SystemInfo, &cfg, &rt);
    assert_eq!(v["config_hash"], json!(REVISION));
    assert_eq!(v["config_path"], json!("/etc/mtproxyd/config.toml"));
    assert_eq!(v["config_reload_count"], json!(0));
    assert!(v.get("last_config_reload_epoch_secs").is_none());
    assert_eq!(v["uptime_seconds"], json!(100.0));
    assert_eq!(v["version"], json!(env!("CARGO_PKG_VERSION")));
    rt.reload = ReloadStats {
        reload_count: 3,
        last_reload_epoch_secs: Some(1_700_000_050),
    };
    let v = render_once(ReadRoute::SystemInfo, &cfg, &rt);
    assert_eq!(v["config_reload_count"], json!(3));
    assert_eq!(v["last_config_reload_epoch_secs"], json!(1_700_000_050u64));
}

#[test]
fn summary_counts_users_and_counters() {
    let mut cfg = cfg_enabled();
    let rt = Fake::new();
    rt.stats.inc_connections_total();
    rt.stats.inc_connections_total();
    rt.stats.inc_connections_bad_class("tls_stale_timestamp");
    rt.stats.inc_connections_bad_class("eof_before_detection");
    rt.stats.inc_connections_bad_class("tls_stale_timestamp");
    let base = cfg.access.users.len();
    let v = render_once(ReadRoute::StatsSummary, &cfg, &rt);
    assert_eq!(v["connections_total"], json!(2));
    assert_eq!(v["connections_bad_total"], json!(3));
    assert_eq!(
        v["connections_bad_by_class"],
        json!([
            {"class": "eof_before_detection", "total": 1},
            {"class": "tls_stale_timestamp", "total": 2}
        ])
    );
    assert_eq!(v["configured_users"], json!(base));
    let secret: config::UserSecret = "00112233445566778899aabbccddeeff".parse().expect("secret");
    cfg.access.users.insert("zed".into(), secret);
    let v = render_once(ReadRoute::StatsSummary, &cfg, &rt);
    assert_eq!(v["configured_users"], json!(base + 1));
}

#[test]
fn selftest_kdf_ewma_and_timeskew_error() {
    let mut rt = Fake::full();
    if let Some(pool) = rt.me_pool.as_mut() {
        pool.selftest.timeskew.max_skew_secs_15m = Some(61);
    }
    let cfg = cfg_enabled();
    let caches = ViewCaches::default();
    let v = render_q(
        ReadRoute::RuntimeMeSelftest,
        &cfg,
        &rt,
        &caches,
        None,
        at(0),
    );
    assert_eq!(v["data"]["kdf"]["ewma_errors_per_min"], json!(0.0));
    assert_eq!(v["data"]["timeskew"]["state"], json!("error"));
    rt.stats.middle_proxy_counters().kdf_drift_total.add(30);
    rt.stats
        .middle_proxy_counters()
        .socks_kdf_strict_reject_total
        .add(10);
    let v = render_q(
        ReadRoute::RuntimeMeSelftest,
        &cfg,
        &rt,
        &caches,
        None,
        at(60),
    );
    let k = &v["data"]["kdf"];
    assert_eq!(k["errors_total"], json!(40));
    assert_eq!(k["state"], json!("error"));
    let ewma = k["ewma_errors_per_min"].as_f64().unwrap_or_default();
    // 40 errors in one minute, alpha = 1 - e^(-60/600).
    let expected = 40.0 * (1.0 - (-0.1f64).exp());
    assert!(
        (ewma - (expected * 1000.0).round() / 1000.0).abs() < 1e-9,
        "{ewma}"
    );
}

#[test]
fn ip_classification() {
    use std::net::IpAddr;
    let c = |s: &str| classify_ip(s.parse::<IpAddr>().expect("ip"));
    assert_eq!(c("127.0.0.1"), "loopback");
    assert_eq!(c("::1"), "loopback");
    assert_eq!(c("10.1.2.3"), "bogon");
    assert_eq!(c("192.168.0.1"), "bogon");
    assert_eq!(c("100.64.0.1"), "bogon");
    assert_eq!(c("169.254.1.1"), "bogon");
    assert_eq!(c("fd00::1"), "bogon");
    assert_eq!(c("fe80::1"), "bogon");
    assert_eq!(c("8.8.8.8"), "good");
    assert_eq!(c("2a00:1450::1"), "good");
}

#[test]
fn read_route_exact_match() {
    for r in ReadRoute::ALL {
        assert_eq!(crate::views::read_route(r.path()), Some(r));
    }
    assert_eq!(crate::views::read_route("/v1/health/"), None);
    assert_eq!(crate::views::read_route("/v1/Health"), None);
    assert_eq!(crate::views::read_route("/v1/users"), None);
    assert_eq!(crate::views::read_route("/v1/stats/users"), None);
    assert_eq!(
        crate::views::read_route("/v1/runtime/events/recent?limit=1"),
        None
    );
}
