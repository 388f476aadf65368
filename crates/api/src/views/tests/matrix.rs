//! Every cell of docs/API.md's "Runtime State Matrix" and "Additional runtime endpoint behavior".

use serde_json::{json, Value};

use super::*;

fn cfg_minimal(enabled: bool) -> config::Config {
    let mut cfg = cfg_enabled();
    cfg.server.api.minimal_runtime_enabled = enabled;
    cfg
}

fn no_sources() -> Fake {
    Fake::new()
}

#[track_caller]
fn assert_reason(v: &Value, reason: Option<&str>) {
    match reason {
        Some(r) => assert_eq!(v["reason"], json!(r), "{v}"),
        None => assert!(v.get("reason").is_none(), "reason must be omitted: {v}"),
    }
}

// ---- /v1/stats/minimal/all ----

#[test]
fn minimal_all_feature_disabled() {
    let v = render_once(
        ReadRoute::StatsMinimalAll,
        &cfg_minimal(false),
        &Fake::full(),
    );
    assert_eq!(v["enabled"], json!(false));
    assert_reason(&v, Some("feature_disabled"));
    assert_eq!(
        v.get("data"),
        Some(&Value::Null),
        "data must be explicit null"
    );
    assert_eq!(v["generated_at_epoch_secs"], json!(1_700_000_100u64));
}

#[test]
fn minimal_all_source_unavailable_has_fallback_payload() {
    let v = render_once(
        ReadRoute::StatsMinimalAll,
        &cfg_minimal(true),
        &no_sources(),
    );
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, Some("source_unavailable"));
    let data = &v["data"];
    assert_eq!(data["me_writers"]["middle_proxy_enabled"], json!(false));
    assert_eq!(data["me_writers"]["reason"], json!("source_unavailable"));
    assert_eq!(data["me_writers"]["writers"], json!([]));
    assert_eq!(
        data["me_writers"]["summary"]["configured_endpoints"],
        json!(0)
    );
    assert_eq!(data["dcs"]["middle_proxy_enabled"], json!(false));
    assert_eq!(data["dcs"]["reason"], json!("source_unavailable"));
    assert_eq!(data["dcs"]["dcs"], json!([]));
    assert_eq!(data.get("me_runtime"), Some(&Value::Null));
    assert_eq!(data["network_path"], json!([]));
}

#[test]
fn minimal_all_full_payload() {
    let v = render_once(
        ReadRoute::StatsMinimalAll,
        &cfg_minimal(true),
        &Fake::full(),
    );
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, None);
    assert_eq!(v["generated_at_epoch_secs"], json!(1_700_000_090u64));
    let data = &v["data"];
    assert_eq!(data["me_writers"]["middle_proxy_enabled"], json!(true));
    assert_reason(&data["me_writers"], None);
    assert_eq!(data["me_runtime"]["quarantined_endpoints_total"], json!(1));
    assert_eq!(
        data["me_runtime"]["quarantined_endpoints"][0],
        json!({"endpoint": "149.154.175.51:8888", "remaining_ms": 1500})
    );
    assert_eq!(data["me_runtime"]["hardswap_enabled"], json!(true));
    assert_eq!(
        data["me_runtime"]["adaptive_floor_cpu_cores_detected"],
        json!(2)
    );
    assert_eq!(
        data["network_path"],
        json!([{"dc": 1, "ip_preference": "prefer_v4",
                "selected_addr_v4": "149.154.175.50:8888", "selected_addr_v6": null}])
    );
}

// ---- /v1/stats/me-writers and /v1/stats/dcs ----

#[test]
fn me_writers_and_dcs_feature_disabled() {
    for route in [ReadRoute::StatsMeWriters, ReadRoute::StatsDcs] {
        let v = render_once(route, &cfg_minimal(false), &Fake::full());
        assert_eq!(v["middle_proxy_enabled"], json!(false), "{route:?}");
        assert_reason(&v, Some("feature_disabled"));
    }
}

#[test]
fn me_writers_and_dcs_source_unavailable() {
    for route in [ReadRoute::StatsMeWriters, ReadRoute::StatsDcs] {
        let v = render_once(route, &cfg_minimal(true), &no_sources());
        assert_eq!(v["middle_proxy_enabled"], json!(false), "{route:?}");
        assert_reason(&v, Some("source_unavailable"));
    }
}

#[test]
fn me_writers_runtime_snapshot() {
    let v = render_once(ReadRoute::StatsMeWriters, &cfg_minimal(true), &Fake::full());
    assert_eq!(v["middle_proxy_enabled"], json!(true));
    assert_reason(&v, None);
    let s = &v["summary"];
    assert_eq!(s["configured_dc_groups"], json!(2));
    assert_eq!(s["configured_endpoints"], json!(3));
    assert_eq!(s["available_endpoints"], json!(2));
    assert_eq!(s["required_writers"], json!(3));
    assert_eq!(s["alive_writers"], json!(3));
    assert_eq!(s["coverage_pct"], json!(100.0));
    let avail = s["available_pct"].as_f64().unwrap_or_default();
    assert!((avail - 200.0 / 3.0).abs() < 1e-9, "{avail}");
    let writers = v["writers"].as_array().cloned().unwrap_or_default();
    assert_eq!(writers.len(), 4);
    assert_eq!(writers[2]["state"], json!("draining"));
    assert_eq!(writers[3]["idle_for_secs"], json!(30));
    assert_eq!(writers[3]["rtt_ema_ms"], Value::Null);
    assert_eq!(writers[3]["dc"], json!(-2));
}

#[test]
fn dcs_runtime_snapshot() {
    let v = render_once(ReadRoute::StatsDcs, &cfg_minimal(true), &Fake::full());
    assert_eq!(v["middle_proxy_enabled"], json!(true));
    assert_reason(&v, None);
    let dc1 = &v["dcs"][0];
    assert_eq!(dc1["dc"], json!(1));
    assert_eq!(
        dc1["endpoint_writers"],
        json!([{"endpoint": "149.154.175.50:8888", "active_writers": 2},
               {"endpoint": "149.154.175.51:8888", "active_writers": 0}])
    );
    assert_eq!(dc1["available_endpoints"], json!(1));
    assert_eq!(dc1["available_pct"], json!(50.0));
    assert_eq!(dc1["alive_writers"], json!(2));
    assert_eq!(dc1["required_writers"], json!(2));
    assert_eq!(dc1["coverage_pct"], json!(100.0));
    assert_eq!(dc1["rtt_ms"], json!(15.0));
    assert_eq!(dc1["load"], json!(7));
    let media = &v["dcs"][1];
    assert_eq!(media["dc"], json!(-2));
    assert_eq!(media["rtt_ms"], Value::Null);
    assert_eq!(media["floor_capped"], json!(true));
}

// ---- /v1/stats/upstreams ----

#[test]
fn upstreams_feature_disabled_keeps_zero() {
    let rt = Fake::full();
    rt.stats.upstream_counters().connect_attempt_total.add(7);
    let v = render_once(ReadRoute::StatsUpstreams, &cfg_minimal(false), &rt);
    assert_eq!(v["enabled"], json!(false));
    assert_reason(&v, Some("feature_disabled"));
    assert!(
        v.get("summary").is_none() && v.get("upstreams").is_none(),
        "{v}"
    );
    assert_eq!(v["zero"]["connect_attempt_total"], json!(7));
}

#[test]
fn upstreams_source_unavailable() {
    let v = render_once(ReadRoute::StatsUpstreams, &cfg_minimal(true), &no_sources());
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, Some("source_unavailable"));
    assert!(
        v.get("summary").is_none() && v.get("upstreams").is_none(),
        "{v}"
    );
    assert!(v["zero"].is_object());
}

#[test]
fn upstreams_full() {
    let v = render_once(ReadRoute::StatsUpstreams, &cfg_minimal(true), &Fake::full());
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, None);
    assert!(v["zero"].is_object());
    assert_eq!(
        v["summary"],
        json!({"configured_total": 2, "healthy_total": 1, "unhealthy_total": 1,
               "direct_total": 1, "socks4_total": 0, "socks5_total": 1, "shadowsocks_total": 0})
    );
    let socks = &v["upstreams"][1];
    assert_eq!(socks["address"], json!("10.1.1.1:1080"));
    assert_eq!(socks["last_check_age_secs"], json!(60));
    assert_eq!(socks["effective_latency_ms"], Value::Null);
    assert_eq!(
        v["upstreams"][0]["dc"][0]["ip_preference"],
        json!("prefer_v4")
    );
    assert_eq!(v["upstreams"][0]["last_check_age_secs"], json!(5));
}

// ---- additional runtime endpoints: never feature-gated ----

fn all_features_off() -> config::Config {
    let mut cfg = cfg_enabled();
    cfg.server.api.minimal_runtime_enabled = false;
    cfg.server.api.runtime_edge_enabled = false;
    cfg
}

#[test]
fn me_pool_state_quality_selftest_unavailable() {
    for route in [
        ReadRoute::RuntimeMePoolState,
        ReadRoute::RuntimeMeQuality,
        ReadRoute::RuntimeMeSelftest,
    ] {
        let v = render_once(route, &all_features_off(), &no_sources());
        assert_eq!(v["enabled"], json!(false), "{route:?}");
        assert_reason(&v, Some("source_unavailable"));
        assert_eq!(v.get("data"), Some(&Value::Null), "{route:?}");
    }
}

#[test]
fn me_pool_state_full_even_with_features_off() {
    let v = render_once(
        ReadRoute::RuntimeMePoolState,
        &all_features_off(),
        &Fake::full(),
    );
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, None);
    let d = &v["data"];
    assert_eq!(d["generations"]["draining_generations"], json!([4]));
    assert_eq!(d["generations"]["pending_hardswap_age_secs"], Value::Null);
    assert_eq!(d["hardswap"], json!({"enabled": true, "pending": false}));
    assert_eq!(
        d["writers"],
        json!({"total": 4, "alive_non_draining": 3, "draining": 1, "degraded": 1,
               "contour": {"warm": 1, "active": 2, "draining": 1},
               "health": {"healthy": 2, "degraded": 1, "draining": 1}})
    );
    assert_eq!(d["refill"]["inflight_endpoints_total"], json!(3));
    assert_eq!(d["refill"]["inflight_dc_total"], json!(2));
    assert_eq!(
        d["refill"]["by_dc"][1],
        json!({"dc": 1, "family": "V6", "inflight": 0})
    );
}

#[test]
fn me_quality_full_even_with_features_off() {
    let rt = Fake::full();
    rt.stats
        .middle_proxy_counters()
        .route_drop_queue_full_total
        .add(5);
    rt.stats.middle_proxy_counters().kdf_drift_total.add(2);
    let v = render_once(ReadRoute::RuntimeMeQuality, &all_features_off(), &rt);
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, None);
    assert_eq!(v["data"]["route_drops"]["queue_full_total"], json!(5));
    assert_eq!(v["data"]["counters"]["kdf_drift_total"], json!(2));
    assert_eq!(
        v["data"]["dc_rtt"][0],
        json!({"dc": 1, "rtt_ema_ms": 15.0, "alive_writers": 2, "required_writers": 2,
               "coverage_pct": 100.0})
    );
}

#[test]
fn upstream_quality_cells() {
    let v = render_once(
        ReadRoute::RuntimeUpstreamQuality,
        &all_features_off(),
        &no_sources(),
    );
    assert_eq!(v["enabled"], json!(false));
    assert_reason(&v, Some("source_unavailable"));
    assert!(v["policy"].is_object() && v["counters"].is_object());
    assert!(
        v.get("summary").is_none() && v.get("upstreams").is_none(),
        "{v}"
    );

    let v = render_once(
        ReadRoute::RuntimeUpstreamQuality,
        &all_features_off(),
        &Fake::full(),
    );
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, None);
    assert_eq!(v["summary"]["configured_total"], json!(2));
    assert_eq!(v["upstreams"][1]["route_kind"], json!("socks5"));
}

#[test]
fn nat_stun_cells() {
    let v = render_once(
        ReadRoute::RuntimeNatStun,
        &all_features_off(),
        &no_sources(),
    );
    assert_eq!(v["enabled"], json!(false));
    assert_reason(&v, Some("source_unavailable"));
    assert_eq!(v.get("data"), Some(&Value::Null));

    let v = render_once(
        ReadRoute::RuntimeNatStun,
        &all_features_off(),
        &Fake::full(),
    );
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, None);
    let d = &v["data"];
    assert_eq!(d["servers"]["live_total"], json!(1));
    assert_eq!(
        d["reflection"],
        json!({"v4": {"addr": "203.0.113.7:40000", "age_secs": 30}, "v6": null})
    );
    assert_eq!(d["flags"]["nat_probe_attempts"], json!(3));
}

#[test]
fn me_selftest_full() {
    let rt = Fake::full();
    let v = render_once(ReadRoute::RuntimeMeSelftest, &all_features_off(), &rt);
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, None);
    let d = &v["data"];
    assert_eq!(d["kdf"]["state"], json!("ok"));
    assert_eq!(d["timeskew"]["state"], json!("ok"));
    assert_eq!(
        d["ip"],
        json!({"v4": {"addr": "10.0.0.5", "state": "bogon"}})
    );
    assert_eq!(d["pid"]["state"], json!("non-one"));
    assert_eq!(d["bnd"]["addr_state"], json!("ok"));
}

#[test]
fn connections_summary_feature_disabled() {
    let v = render_once(
        ReadRoute::RuntimeConnectionsSummary,
        &all_features_off(),
        &Fake::full(),
    );
    assert_eq!(v["enabled"], json!(false));
    assert_reason(&v, Some("feature_disabled"));
    assert_eq!(v.get("data"), Some(&Value::Null));
}

#[test]
fn connections_summary_source_unavailable_when_recompute_busy_and_no_cache() {
    let caches = ViewCaches::default();
    let _busy = caches.hold_edge_recompute();
    let v = render_q(
        ReadRoute::RuntimeConnectionsSummary,
        &cfg_enabled(),
        &Fake::full(),
        &caches,
        None,
        at(100),
    );
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, Some("source_unavailable"));
    assert_eq!(v.get("data"), Some(&Value::Null));
}

#[test]
fn connections_summary_full() {
    let rt = Fake::full();
    let alice = rt.stats.users().handle("alice");
    let _s1 = alice.open_session();
    let _s2 = alice.open_session();
    alice.add_octets_from_client(10);
    let bob = rt.stats.users().handle("bob");
    bob.add_octets_to_client(500);
    let _route = rt.stats.open_route(stats::Route::MiddleProxy);
    let mut cfg = cfg_enabled();
    cfg.server.api.runtime_edge_top_n = 1;
    let v = render_once(ReadRoute::RuntimeConnectionsSummary, &cfg, &rt);
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, None);
    let d = &v["data"];
    assert_eq!(d["totals"]["active_users"], json!(1));
    assert_eq!(d["totals"]["current_connections"], json!(1));
    assert_eq!(d["totals"]["current_connections_me"], json!(1));
    assert_eq!(d["top"]["limit"], json!(1));
    assert_eq!(
        d["top"]["by_connections"],
        json!([{"username": "alice", "current_connections": 2, "total_octets": 10}])
    );
    assert_eq!(
        d["top"]["by_throughput"],
        json!([{"username": "bob", "current_connections": 0, "total_octets": 500}])
    );
    assert_eq!(d["telemetry"]["throughput_is_cumulative"], json!(true));
}

#[test]
fn events_recent_cells() {
    let rt = Fake::full();
    rt.stats
        .events()
        .push_at("config.reload.applied", "", at(50));
    let v = render_once(ReadRoute::RuntimeEventsRecent, &all_features_off(), &rt);
    assert_eq!(v["enabled"], json!(false));
    assert_reason(&v, Some("feature_disabled"));
    assert_eq!(v.get("data"), Some(&Value::Null));

    let v = render_once(ReadRoute::RuntimeEventsRecent, &cfg_enabled(), &rt);
    assert_eq!(v["enabled"], json!(true));
    assert_reason(&v, None);
    assert_eq!(
        v["data"]["events"],
        json!([{"seq": 1, "ts_epoch_secs": 1_700_000_050u64,
                "event_type": "config.reload.applied", "context": ""}])
    );
    assert_eq!(v["data"]["capacity"], json!(256));
    assert_eq!(v["data"]["dropped_total"], json!(0));
}
